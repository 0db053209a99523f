"""Referrers carried into the ACR stand-in after an image lands (shared.handlers.referrers), through the
product's sync (``run_manifest``: plan, importImage, record).

Upstream is Debian's docker-registry (no referrers API): OCI referrers are pushed with the referrers tag
schema fallback (devstack.oci.push_artifact), cosign's ``.sig`` / ``.att`` tags beside the image. The
target is the ACR emulator: its referrers API (indexed on importImage by the referrer's subject) and its
tags are read here with a token of our own (the exchange the contract tests use), not with the code
under test. Each test uses its own repositories, so the session's stand-in can be shared.
"""
from __future__ import annotations

import json
import uuid

import httpx
import pytest

from devstack import oci
from shared.handlers.imports import run_manifest
from shared.services import Services
from tests.referrer_graph import BUNDLE_TYPE, COSIGN_ATT, COSIGN_SIG, SBOM_TYPE, Acr, sbom, signed_image

pytestmark = [pytest.mark.usefixtures("clean_faults", "airlock_env"), pytest.mark.timeout(300)]


@pytest.fixture
def prefix():
    return f"rc{uuid.uuid4().hex[:8]}"


def services(stack, **env) -> Services:
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05", **env})


@pytest.fixture
def acr(stack):
    reader = Acr(stack)
    yield reader
    reader.http.close()


def referrer_warnings(record: dict) -> list[dict]:
    return [w for w in record["warnings"] if "referrer" in w["message"]]  # not the unlocked-manifest one


def by_via(entry: dict) -> dict:
    return {(i["via"], i.get("tag") or i["artifact_type"]): i for i in entry["referrers"]}


def test_an_image_arrives_with_its_sbom_referrer_and_its_cosign_signature_tag(stack, seeded, prefix, acr):
    repository = f"{prefix}/app"
    image, document, sig_digest = signed_image(stack, repository, prefix)
    target = f"{prefix}/mirror/app"
    sig_tag = f"sha256-{image.digest[7:]}.sig"

    record = run_manifest(services(stack), f"quay.io/{repository}:1.0 => {target}:1.0\n", name="r.txt",
                          trigger="cli")
    assert record["status"] == "succeeded", record
    [entry] = record["entries"]
    assert (entry["action"], entry["result"], entry["target_digest"]) == ("new", "imported", image.digest)
    items = by_via(entry)
    assert set(items) == {("referrers", SBOM_TYPE), ("tag", sig_tag)}
    assert items[("referrers", SBOM_TYPE)] == {"subject": image.digest, "digest": document.digest,
                                               "artifact_type": SBOM_TYPE, "via": "referrers", "imported": True,
                                               "result": "imported"}
    assert items[("tag", sig_tag)] == {"subject": image.digest, "digest": sig_digest, "artifact_type": COSIGN_SIG,
                                       "via": "tag", "tag": sig_tag, "imported": True, "result": "imported"}
    assert entry["referrers_missing"] == [] and "referrers_problems" not in entry
    assert record["summary"]["referrers"] == {"imported": 2, "present": 0, "failed": 0, "missing": 0, "skipped": 0}
    assert referrer_warnings(record) == []

    # in the target: the referrers API lists the SBOM under the image, and the .sig tag is there
    assert acr.referrers(target, image.digest) == [document.referrer_descriptor()]
    assert acr.tag_digest(target, sig_tag) == sig_digest
    assert acr.referrers(target, sig_digest) == []  # a cosign .sig has no subject: a tag, not a referrer

    # again: the image is unchanged and so are its referrers; each is listed once, as present
    again = run_manifest(services(stack), f"quay.io/{repository}:1.0 => {target}:1.0\n", name="r.txt",
                         trigger="cli")
    [entry] = again["entries"]
    assert (entry["action"], entry["result"]) == ("unchanged", "unchanged")
    assert sorted((i["result"], i["imported"]) for i in entry["referrers"]) == [("present", False)] * 2
    assert again["summary"]["referrers"]["present"] == 2 and again["summary"]["referrers"]["imported"] == 0
    assert acr.referrers(target, image.digest) == [document.referrer_descriptor()]

    # a signature attached upstream after the image was mirrored reaches the ACR on the next run
    bundle = oci.build_artifact(BUNDLE_TYPE, [oci.ArtifactLayer.of(BUNDLE_TYPE, b'{"mediaType": "bundle"}')],
                                subject=oci.layout_descriptor(image))
    oci.push_artifact(bundle, f"{stack.upstream_host}/{repository}", cert_dir=stack.certs_dir)
    later = run_manifest(services(stack), f"quay.io/{repository}:1.0 => {target}:1.0\n", name="r.txt",
                         trigger="cli")
    [entry] = later["entries"]
    assert entry["action"] == "unchanged"
    assert by_via(entry)[("referrers", BUNDLE_TYPE)]["result"] == "imported"
    assert {d["digest"] for d in acr.referrers(target, image.digest)} == {document.digest, bundle.digest}


def test_the_platform_manifests_of_an_index_carry_their_own_referrers(stack, seeded, prefix, acr):
    repository = f"{prefix}/multi"
    up = stack.upstream_host
    index = oci.build_image(repository, platforms=("linux/amd64", "linux/arm64"), seed=prefix, layers=1)
    oci.push(index, f"{up}/{repository}:2.0", cert_dir=stack.certs_dir)
    arm64 = next(i for i in index.images if i.platform.architecture == "arm64")
    arm64_subject = {"mediaType": oci.MEDIA_OCI_MANIFEST, "digest": arm64.manifest_digest,
                     "size": arm64.manifest_size}
    platform_sbom = sbom(arm64_subject, "arm64 only")
    bundle = oci.build_artifact(BUNDLE_TYPE, [oci.ArtifactLayer.of(BUNDLE_TYPE, b"{}")],
                                subject=oci.layout_descriptor(index))
    for artifact in (platform_sbom, bundle):
        oci.push_artifact(artifact, f"{up}/{repository}", cert_dir=stack.certs_dir)
    envelope = json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": []})
    oci.push_cosign([oci.cosign_attestation_layer(envelope.encode(), "https://slsa.dev/provenance/v1")],
                    f"{up}/{repository}", arm64.manifest_digest, "att", cert_dir=stack.certs_dir)
    target = f"{prefix}/mirror/multi"

    record = run_manifest(services(stack), f"quay.io/{repository}:2.0 => {target}:2.0\n", name="m.txt",
                          trigger="cli")
    assert record["status"] == "succeeded", record
    [entry] = record["entries"]
    items = by_via(entry)
    att_tag = f"sha256-{arm64.manifest_digest[7:]}.att"
    assert set(items) == {("referrers", SBOM_TYPE), ("referrers", BUNDLE_TYPE), ("tag", att_tag)}
    assert items[("referrers", SBOM_TYPE)]["subject"] == arm64.manifest_digest
    assert items[("referrers", BUNDLE_TYPE)]["subject"] == index.digest
    assert items[("tag", att_tag)]["artifact_type"] == COSIGN_ATT
    assert all(i["imported"] for i in items.values()) and entry["referrers_missing"] == []

    assert acr.referrers(target, arm64.manifest_digest) == [platform_sbom.referrer_descriptor()]
    assert acr.referrers(target, index.digest) == [bundle.referrer_descriptor()]
    amd64 = next(i for i in index.images if i.platform.architecture == "amd64")
    assert acr.referrers(target, amd64.manifest_digest) == []
    assert acr.tag_digest(target, att_tag) is not None


def test_a_referrer_that_cannot_be_imported_is_a_warning_and_the_entry_stays_imported(stack, seeded, prefix, acr):
    """The tag schema's index upstream lists an SBOM whose manifest is gone: importImage fails for it
    (the emulator answers as ACR does for an unknown source manifest), the image and its .sig still land."""
    repository = f"{prefix}/gone"
    image, document, sig_digest = signed_image(stack, repository, prefix)
    deleted = httpx.delete(f"https://{stack.upstream_host}/v2/{repository}/manifests/{document.digest}",
                           verify=stack.ssl_context())
    assert deleted.status_code == 202, deleted.text
    target = f"{prefix}/mirror/gone"

    record = run_manifest(services(stack), f"quay.io/{repository}:1.0 => {target}:1.0\n", name="g.txt",
                          trigger="cli")
    assert record["status"] == "succeeded" and record["retryable"] is False, record
    [entry] = record["entries"]
    assert (entry["result"], entry["target_digest"], entry["error"]) == ("imported", image.digest, None)
    items = by_via(entry)
    failed = items[("referrers", SBOM_TYPE)]
    assert (failed["result"], failed["imported"], failed["digest"]) == ("failed", False, document.digest)
    assert failed["error"]["code"] and failed["error"]["message"]
    assert items[("tag", f"sha256-{image.digest[7:]}.sig")]["result"] == "imported"
    assert record["summary"]["referrers"] == {"imported": 1, "present": 0, "failed": 1, "missing": 0, "skipped": 0}
    [warning] = referrer_warnings(record)
    assert warning["line"] == 1 and document.digest in warning["message"] and failed["error"]["code"] in \
        warning["message"]
    assert acr.referrers(target, image.digest) == []


def test_a_throttled_referrer_import_is_retried(stack, seeded, prefix, acr):
    repository = f"{prefix}/retry"
    image, document, _ = signed_image(stack, repository, prefix)
    target = f"{prefix}/mirror/retry"
    text = f"quay.io/{repository}:1.0 => {target}:1.0\n"
    first = run_manifest(services(stack, REFERRERS_ENABLED="false"), text, name="t.txt", trigger="cli")
    assert "referrers" not in first["entries"][0] and "referrers" not in first["summary"]
    stack.add_fault({"kind": "status", "method": "POST", "path": "/importImage", "status": 429, "times": 1,
                     "retry_after": 0})
    record = run_manifest(services(stack), text, name="t.txt", trigger="cli")
    assert stack.admin("GET", "/_devstack/faults") == []  # the 429 was served (and retried)
    [entry] = record["entries"]
    assert entry["action"] == "unchanged"
    assert sorted(i["result"] for i in entry["referrers"]) == ["imported", "imported"]
    assert acr.referrers(target, image.digest) == [document.referrer_descriptor()]


def test_only_the_artifact_types_asked_for_are_carried(stack, seeded, prefix, acr):
    repository = f"{prefix}/only"
    image, _, sig_digest = signed_image(stack, repository, prefix)
    target = f"{prefix}/mirror/only"
    record = run_manifest(services(stack, REFERRER_ARTIFACT_TYPES=COSIGN_SIG),
                          f"quay.io/{repository}:1.0 => {target}:1.0\n", name="o.txt", trigger="cli")
    [entry] = record["entries"]
    assert [(i["via"], i["digest"]) for i in entry["referrers"]] == [("tag", sig_digest)]
    assert acr.referrers(target, image.digest) == []


def test_entries_of_one_image_into_one_repository_carry_its_referrers_once(stack, seeded, prefix, acr):
    repository = f"{prefix}/twice"
    image, document, _ = signed_image(stack, repository, prefix)
    target = f"{prefix}/mirror/twice"
    imports: list[str] = []
    unsubscribe = stack.emulator.events.subscribe(
        lambda events: imports.extend(e["data"]["target"]["digest"] for e in events
                                      if e["eventType"].endswith("ImagePushed")
                                      and e["data"]["target"]["repository"] == target))
    try:
        record = run_manifest(services(stack), f"quay.io/{repository}:1.0 => {target}:1.0\n"
                              f"quay.io/{repository}:1.0 => {target}:stable\n", name="w.txt", trigger="cli")
    finally:
        unsubscribe()
    assert record["status"] == "succeeded", record
    results = sorted(sorted(i["result"] for i in e["referrers"]) for e in record["entries"])
    assert results == [["imported", "imported"], ["present", "present"]]
    assert record["summary"]["referrers"]["imported"] == 2
    assert imports.count(document.digest) == 1  # the SBOM was imported once, not once per entry
    assert acr.referrers(target, image.digest) == [document.referrer_descriptor()]
