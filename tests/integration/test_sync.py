"""The sync engine against the local stand-in: real registries, real imports, real blob storage."""
from __future__ import annotations

import json
import logging
import uuid

import pytest

from devstack import oci
from shared.handlers import records
from shared.handlers.imports import run_manifest
from shared.services import Services

# the managed-identity credential reads IDENTITY_ENDPOINT / IDENTITY_HEADER from os.environ
pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")


@pytest.fixture
def services(stack, seeded):
    return make_services(stack)


def make_services(stack, **overrides) -> Services:
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5", **overrides}
    return Services.from_env(env)


@pytest.fixture
def prefix():
    """A fresh destination namespace per test, so tests never see each other's tags."""
    return f"t{uuid.uuid4().hex[:8]}"


def backing_digest(stack, ref: str) -> str:
    raw = oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False)
    return oci.sha256_digest(raw)


def entries_by_target(document) -> dict:
    return {e["target"]: e for e in document["entries"]}


def test_sync_imports_everything_then_nothing(stack, seeded, services, prefix):
    manifest = (
        "# reviewed in PR 42\n"
        f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/ingress-nginx/controller\n"
        f"quay.io/jetstack/cert-manager-controller:v1.15.2 => {prefix}/jetstack/cert-manager-controller  # pinned\n"
        "\n"
        f"nginx:1.27 => {prefix}/nginx\n"
    )
    first = run_manifest(services, manifest, name="images.txt", trigger="cli")
    assert first["status"] == "succeeded", json.dumps(first, indent=1)
    assert first["summary"]["new"] == 3 and first["summary"]["imported"] == 3
    by_target = entries_by_target(first)
    controller = by_target[f"{prefix}/ingress-nginx/controller:v1.11.1"]
    assert controller["line"] == 2
    assert controller["source_digest"] == seeded["ingress-nginx/controller:v1.11.1"]
    # the multi-platform index really landed in the ACR's backing registry, digest for digest
    assert backing_digest(stack, f"{prefix}/ingress-nginx/controller:v1.11.1") == controller["source_digest"]
    assert by_target[f"{prefix}/nginx:1.27"]["source_digest"] == seeded["library/nginx:1.27"]

    second = run_manifest(services, manifest, name="images.txt", trigger="cli")
    assert second["status"] == "succeeded"
    assert second["summary"]["unchanged"] == 3 and second["summary"]["imported"] == 0
    assert all(e["attempts"] == 0 for e in second["entries"])


def test_plan_imports_nothing(stack, seeded, services, prefix):
    manifest = f"registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.1 => {prefix}/certgen\n"
    plan = run_manifest(services, manifest, name="pr.txt", trigger="http", apply=False, save=False)
    assert plan["kind"] == "plan"
    assert [e["action"] for e in plan["entries"]] == ["new"]
    with pytest.raises(oci.OciError):
        backing_digest(stack, f"{prefix}/certgen:v1.4.1")


def test_digest_pinned_entries(stack, seeded, services, prefix):
    digest = seeded["library/busybox:1.36"]
    manifest = (f"docker.io/library/busybox@{digest} => {prefix}/busybox\n"
                f"docker.io/library/busybox:1.36@{digest} => {prefix}/busybox-tagged\n")
    document = run_manifest(services, manifest, name="pinned.txt", trigger="cli")
    assert document["status"] == "succeeded", document
    untagged, tagged = document["entries"]
    assert untagged["target"] == f"{prefix}/busybox@{digest}" and untagged["result"] == "imported"
    assert backing_digest(stack, f"{prefix}/busybox@{digest}") == digest
    assert backing_digest(stack, f"{prefix}/busybox-tagged:1.36") == digest
    again = run_manifest(services, manifest, name="pinned.txt", trigger="cli")
    assert again["summary"]["unchanged"] == 2


def test_moved_source_tag_is_an_update(stack, seeded, services, prefix):
    repo = f"{prefix}-src/app"
    first_layout = oci.build_image(repo, seed="v1")
    second_layout = oci.build_image(repo, seed="v2")
    first = oci.push(first_layout, f"{stack.upstream_host}/{repo}:stable", cert_dir=stack.certs_dir)
    manifest = f"{stack.upstream_host}/{repo}:stable => {prefix}/app\n"
    svc = make_services(stack, SOURCE_REGISTRY_ALLOWLIST=f"docker.io,{stack.upstream_host}")
    assert run_manifest(svc, manifest, name="m.txt", trigger="cli")["entries"][0]["source_digest"] == first
    second = oci.push(second_layout, f"{stack.upstream_host}/{repo}:stable", cert_dir=stack.certs_dir)
    assert second != first
    document = run_manifest(svc, manifest, name="m.txt", trigger="cli")
    entry = document["entries"][0]
    assert (entry["action"], entry["result"]) == ("update", "imported")
    assert entry["previous_target_digest"] == first and entry["target_digest"] == second
    assert backing_digest(stack, f"{prefix}/app:stable") == second


def test_invalid_manifest_imports_nothing(stack, seeded, services, prefix):
    manifest = (f"nginx:1.27 => {prefix}/ok\n"
                "quay.io/Jetstack/Cert-Manager:v1 => x\n"
                f"evil.example.com/app:1 => {prefix}/evil\n")
    document = run_manifest(services, manifest, name="bad.txt", trigger="blob")
    assert document["status"] == "invalid"
    assert [e["line"] for e in document["errors"]] == [2, 3]
    assert document["entries"] == []
    with pytest.raises(oci.OciError):
        backing_digest(stack, f"{prefix}/ok:1.27")
    # the record of an invalid manifest is saved too, listing every error
    saved = records.load(services, document["run_id"])
    assert saved["errors"] == document["errors"]


def test_missing_source_fails_alone(stack, seeded, services, prefix):
    manifest = (f"quay.io/jetstack/does-not-exist:v0 => {prefix}/missing\n"
                f"mcr.microsoft.com/azuredocs/aks-helloworld:v1 => {prefix}/hello\n")
    document = run_manifest(services, manifest, name="m.txt", trigger="cli")
    missing, hello = document["entries"]
    assert missing["result"] == "failed" and missing["error"]["code"] == "SourceNotFound"
    assert hello["result"] == "imported"
    assert document["status"] == "failed"


def test_outcome_record_is_saved_with_digests(stack, seeded, services, prefix):
    document = run_manifest(services, f"cloudflare/cloudflared:latest => {prefix}/cloudflared\n",
                            name="images.txt", trigger="timer")
    saved = records.load(services, document["run_id"])
    assert saved["manifest"]["name"] == "images.txt"
    assert saved["manifest"]["sha256"] == document["manifest"]["sha256"]
    assert saved["trigger"] == "timer"
    entry = saved["entries"][0]
    for key in ("line", "source", "source_digest", "target", "previous_target_digest", "action", "result",
                "attempts", "duration_seconds", "error"):
        assert key in entry
    assert entry["source_digest"] == seeded["cloudflare/cloudflared:latest"]
    assert saved["started_at"] <= saved["finished_at"]


def test_dockerhub_token_never_leaks(stack, seeded, prefix, caplog):
    secret = "dckr_pat_" + uuid.uuid4().hex
    svc = make_services(stack, DOCKERHUB_USERNAME="airlock-bot", DOCKERHUB_TOKEN=secret)
    stack.emulator.faults.add(kind="import-fail", times=1)
    manifest = f"nginx:latest => {prefix}/nginx\ncloudflare/cloudflared:latest => {prefix}/cf\n"
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(svc, manifest, name="images.txt", trigger="cli")
    assert any(e["result"] == "failed" for e in document["entries"])
    saved = records.load(svc, document["run_id"])
    assert secret not in json.dumps(document)
    assert secret not in json.dumps(saved)
    assert secret not in caplog.text


# -- faults: retries, failures that stay alone, deadlines ------------------------------------------

@pytest.mark.parametrize("fault", [
    {"kind": "status", "method": "POST", "path": "/importImage$", "status": 429, "retry_after": 1},
    {"kind": "status", "method": "POST", "path": "/importImage$", "status": 500},
    {"kind": "drop", "method": "GET", "path": "/operationResults/registries-"},
    {"kind": "status", "method": "HEAD", "path": "/manifests/", "status": 503},
    # a HEAD cut off after its status line: 200 without a digest, then the GET of the new tag is a 404
    {"kind": "drop", "method": "HEAD", "path": "/manifests/"},
])
def test_transient_faults_are_retried(stack, seeded, services, prefix, fault):
    stack.emulator.faults.add(**fault, times=1)
    document = run_manifest(services, f"library/busybox:1.36 => {prefix}/bb\n", name="m.txt", trigger="cli")
    [entry] = document["entries"]
    assert entry["result"] == "imported", entry
    if fault["path"] != "/manifests/":  # a plan-time lookup: retried, not an import attempt
        assert entry["attempts"] >= 2
    assert not stack.emulator.faults.rules, "the fault was never hit"


def test_failed_import_does_not_stop_the_others(stack, seeded, services, prefix):
    stack.emulator.faults.add(kind="import-fail", times=1)
    manifest = "".join(f"{src} => {prefix}/{i}\n" for i, src in enumerate(
        ["library/busybox:1.36", "library/nginx:latest", "azuredocs/aks-helloworld:v1"]))
    document = run_manifest(make_services(stack, SYNC_CONCURRENCY="1"), manifest, name="m.txt", trigger="cli")
    results = [e["result"] for e in document["entries"]]
    assert results.count("failed") == 1 and results.count("imported") == 2
    failed = next(e for e in document["entries"] if e["result"] == "failed")
    assert failed["error"]["code"] and failed["error"]["message"]
    assert document["status"] == "failed"


def test_stuck_import_hits_the_deadline(stack, seeded, prefix):
    stack.emulator.faults.add(kind="import-stuck", times=1)
    svc = make_services(stack, IMPORT_TIMEOUT_SECONDS="3")
    document = run_manifest(svc, f"library/busybox:1.36 => {prefix}/bb\n", name="m.txt", trigger="cli")
    [entry] = document["entries"]
    assert entry["result"] == "failed" and entry["error"]["code"] == "DeadlineExceeded"
    assert entry["duration_seconds"] < 10


def test_tag_listing_matches_heads_after_overwrite_and_delete(stack, services, prefix):
    """The ACR's tag listing (used by plans with several entries per repository) agrees with
    per-tag HEADs after a tag is moved and a manifest is deleted."""
    repo = f"{prefix}/listed"
    one = oci.push(oci.build_image(repo, seed="one"), f"{stack.backing_host}/{repo}:a", tls_verify=False)
    two = oci.push(oci.build_image(repo, seed="two"), f"{stack.backing_host}/{repo}:b", tls_verify=False)
    oci.push(oci.build_image(repo, seed="one"), f"{stack.backing_host}/{repo}:c", tls_verify=False)
    oci.push(oci.build_image(repo, seed="two"), f"{stack.backing_host}/{repo}:c", tls_verify=False)  # c moves
    assert services.acr.tag_digests(repo) == {"a": one, "b": two, "c": two}
    services.clients.data_plane.delete_tag(repo, "b")  # deletes manifest two, and so tags b and c
    listed = services.acr.tag_digests(repo)
    assert listed == {"a": one}
    assert {t: services.acr.tag_digest(repo, t) for t in "abc"} == {"a": one, "b": None, "c": None}
    assert services.acr.tag_digests(f"{prefix}/never-pushed") == {}
