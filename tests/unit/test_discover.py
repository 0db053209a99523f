"""Images in Kubernetes YAML: where they are, images.txt lines for them, and the pull-request check."""
import io
import json
import time
from pathlib import Path

import pytest

from shared import cli
from shared.core.discover import check, check_report, discover, images, manifest_lines, scan
from shared.core.manifest import parse_manifest
from tests.unit import yaml_bombs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "discover"
SHOP, KINDS, IMAGES_TXT = FIXTURES / "shop.yaml", FIXTURES / "kinds.yaml", FIXTURES / "images.txt"
ACR = "airlockacr.azurecr.io"


def run_cli(*argv, env=None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def no_login_server(monkeypatch):
    for name in ("ACR_LOGIN_SERVER", "ACR_NAME", "AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP",
                 "SOURCE_REGISTRY_ALLOWLIST"):
        monkeypatch.delenv(name, raising=False)


def test_every_workload_kind_and_container_field_is_found_with_its_position():
    found = scan(KINDS.read_bytes(), "kinds.yaml")
    assert found.problems == []
    got = [(u.document, u.line, u.kind, u.name, u.field, u.container, u.image) for u in found.uses]
    assert got == [
        (1, 10, "DaemonSet", "node-agent", "containers", "agent", "quay.io/prometheus/node-exporter:v1.8.2"),
        (2, 18, "ReplicaSet", "rs", "containers", "a", "registry.k8s.io/pause:3.10"),
        (3, 26, "ReplicationController", "rc", "containers", "a",
         "ghcr.io/example/legacy@sha256:" + "0" * 64),
        (4, 34, "Job", "migrate", "containers", "m", "nginx"),
        (5, 41, "PodTemplate", "tmpl", "containers", "t", "mcr.microsoft.com/azure-cli:2.64.0"),
        (6, 50, "Pod", "debug-me", "containers", "app", "nginx:1.27"),
        (6, 51, "Pod", "debug-me", "ephemeralContainers", "debugger", "docker.io/library/busybox:1.36"),
        (6, 58, "Rollout", "canary", "containers", "c", "{{ .Values.image }}"),
    ]
    assert found.uses[-1].reference is None and "not an image reference" in found.uses[-1].error


def test_the_rendered_chart_has_six_images_in_its_workloads_only():
    found = scan(SHOP.read_text(), "shop.yaml")
    assert {(u.kind, u.field) for u in found.uses} == {
        ("Deployment", "initContainers"), ("Deployment", "containers"), ("StatefulSet", "containers"),
        ("CronJob", "containers"), ("Pod", "containers")}
    assert len({u.image for u in found.uses}) == 6  # the ConfigMap's "image:" key is not an image


def test_check_reports_exactly_the_two_unmirrored_images_with_their_positions():
    found = scan(SHOP.read_bytes(), "shop.yaml")
    findings = check(found.uses, parse_manifest(IMAGES_TXT.read_bytes()), ACR)
    assert [(f.code, f.use.file, f.use.document, f.use.line, f.use.column, f.use.owner, f.use.container)
            for f in findings] == [
        ("not-mirrored", "shop.yaml", 4, 57, 18, "Deployment/shop-web", "migrate"),
        ("not-mirrored", "shop.yaml", 6, 106, 22, "CronJob/shop-cleanup", "cleanup")]
    assert "shop/migrate:2.3.0 is not written by any images.txt entry" in str(findings[0])


def test_cli_check_prints_the_findings_and_exits_1():
    code, out, err = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT), "--registry-host", ACR)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{SHOP}:57:18: document 4, Deployment/shop-web initContainer 'migrate': ")
    assert lines[1].startswith(f"{SHOP}:106:22: document 6, CronJob/shop-cleanup container 'cleanup': ")
    assert lines[2].startswith("2 finding(s) in 6 image use(s) of 6 image(s)")
    assert len(lines) == 3


def test_cli_check_json_and_a_clean_check(tmp_path, monkeypatch):
    monkeypatch.setenv("ACR_LOGIN_SERVER", ACR)
    code, out, _ = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT), "--json")
    document = json.loads(out)
    assert code == 1 and document["ok"] is False and document["registry_host"] == ACR
    assert [(f["code"], f["line"], f["document"]) for f in document["findings"]] == [
        ("not-mirrored", 57, 4), ("not-mirrored", 106, 6)]
    complete = tmp_path / "images.txt"
    complete.write_text(IMAGES_TXT.read_text() + "quay.io/shop/migrate:2.3.0\nquay.io/shop/cleanup:2.3.0\n")
    code, out, err = run_cli("discover", str(SHOP), "--check", str(complete))
    assert (code, out.splitlines()[-1].startswith("0 finding(s)")) == (0, True), err


def test_public_references_are_not_private_and_say_how_to_fix():
    found = scan(KINDS.read_bytes(), "kinds.yaml")
    manifest = parse_manifest("nginx:1.27 => web/nginx\nquay.io/prometheus/node-exporter:v1.8.2\n")
    findings = check(found.uses, manifest, ACR)
    by_image = {}
    for f in findings:
        by_image.setdefault(f.use.image, []).append((f.code, f.suggestion))
    assert by_image["nginx:1.27"] == [("not-private", f"use {ACR}/web/nginx:1.27 (images.txt line 1)")]
    assert by_image["nginx"] == [("not-private", None), ("not-mirrored", "add: nginx => library/nginx")]
    assert by_image["{{ .Values.image }}"][0][0] == "invalid-reference"
    assert len(by_image) == 8


def test_listing_prints_images_txt_lines_that_the_manifest_parser_accepts():
    found = discover([("kinds.yaml", KINDS.read_text()), ("shop.yaml", SHOP.read_text())])
    lines = manifest_lines(found.uses, ACR)
    assert lines[:3] == [
        "quay.io/prometheus/node-exporter:v1.8.2 => prometheus/node-exporter  # kinds.yaml:10 DaemonSet/node-agent",
        "registry.k8s.io/pause:3.10 => pause  # kinds.yaml:18 ReplicaSet/rs",
        "ghcr.io/example/legacy@sha256:" + "0" * 64 + " => example/legacy  # kinds.yaml:26 ReplicationController/rc"]
    assert len(lines) == 7  # 8 uses, one invalid; the shop's images are on the private registry
    parsed = parse_manifest("\n".join(lines) + "\n")
    assert parsed.ok, parsed.errors
    assert [e.target for e in parsed.entries][3:5] == ["library/nginx:latest", "azure-cli:2.64.0"]
    # an image used twice is listed once, with both uses
    [busybox] = [i for i in images(found.uses, ACR) if i["image"] == "docker.io/library/busybox:1.36"]
    assert len(busybox["uses"]) == 1


def test_cli_listing_without_a_registry_host_lists_everything(capsys):
    code, out, _ = run_cli("discover", str(KINDS), str(SHOP))
    assert code == 0
    assert len(out.splitlines()) == 13


@pytest.mark.parametrize("text, line, fragment", [
    (yaml_bombs.nested_brackets(), 1, "nested more than 128 levels deep"),
    ("kind: Pod\nspec:\n  containers:\n  - image: a\n   name: x\n", 5, "YAML syntax error"),
    (b"kind: Pod\n\x00\n", 2, "0x00"),
    (b"kind: Pod\nmetadata: {name: caf\xe9}\n", 2, "not valid UTF-8"),
    ("kind: Pod\nmetadata: {name: \"\ud800\"}\n", 2, "lone surrogate"),
    (yaml_bombs.merge_bomb(), 3, "merge keys"),
    (yaml_bombs.alias_bomb(levels=3, width=300), 2, "more than 256 aliases"),
])
def test_unreadable_yaml_is_a_line_numbered_problem_and_quick(text, line, fragment):
    started = time.perf_counter()
    found = scan(text, "bad.yaml")
    assert time.perf_counter() - started < 1
    [(name, problem)] = found.problems
    assert (name, problem.line) == ("bad.yaml", line) and fragment in problem.message, str(problem)


def test_images_before_a_broken_document_are_kept_and_the_cli_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\nspec: {containers: [{name: a, image: nginx:1.27}]}\n---\nkind: [\n")
    found = scan(bad.read_text(), "bad.yaml")
    assert [u.image for u in found.uses] == ["nginx:1.27"] and found.problems[0][1].line == 5
    code, out, err = run_cli("discover", str(bad))
    assert code == 1 and f"{bad}:5: YAML syntax error" in err and out.startswith("nginx:1.27 => library/nginx")


def test_invalid_manifest_and_missing_file(tmp_path):
    broken = tmp_path / "images.txt"
    broken.write_text("nginx:1.27\nnot a reference\n")
    code, _, err = run_cli("discover", str(SHOP), "--check", str(broken), "--registry-host", ACR)
    assert code == 1 and "line 2:" in err
    code, _, err = run_cli("discover", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err


# --- tag policies and a check without the registry's host ---------------------------------------

POLICY_MANIFEST = ("nginx:{semver: ~1.27, newest: 2, exclude: 1\\.27\\.0}   # line 1\n"
                   'quay.io/shop/worker:{regex: "2\\.3\\.\\d+(-debug)?", newest: 3} => shop/worker\n'
                   "quay.io/shop/migrate:2.3.0 => shop/migrate\n")


def pod(*images: str) -> str:
    containers = ", ".join(f"{{name: c{i}, image: '{image}'}}" for i, image in enumerate(images))
    return f"kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{containers}]}}\n"


def test_a_tag_a_policy_admits_is_mirrored_and_listed_as_resting_on_the_policy():
    # the false PR failure of issue 21: nginx:{semver: ~1.27, newest: 2} imports library/nginx:1.27.x
    found = scan(pod(f"{ACR}/library/nginx:1.27.3", f"{ACR}/shop/worker:2.3.7-debug",
                     f"{ACR}/library/nginx:1.27.3@sha256:{'0' * 64}", f"{ACR}/shop/migrate:2.3.0"), "p.yaml")
    report = check_report(found.uses, parse_manifest(POLICY_MANIFEST), ACR)
    assert report.ok and report.findings == [] and report.skipped == []
    assert [(p.use.image, p.policy.line) for p in report.policy_uses] == [
        (f"{ACR}/library/nginx:1.27.3", 1), (f"{ACR}/shop/worker:2.3.7-debug", 2),
        (f"{ACR}/library/nginx:1.27.3@sha256:{'0' * 64}", 1)]  # a pinned tag: the policy follows the tag
    assert "mirrored once a sync finds it among the newest 2" in str(report.policy_uses[0])
    assert check(found.uses, parse_manifest(POLICY_MANIFEST), ACR) == []


@pytest.mark.parametrize("image, fragment", [
    (f"{ACR}/library/nginx:1.26.9", "does not admit tag 1.26.9"),
    (f"{ACR}/library/nginx:1.27.0", "does not admit tag 1.27.0"),  # excluded
    (f"{ACR}/library/nginx:1.28.0-rc.1", "does not admit tag 1.28.0-rc.1"),  # a pre-release
    (f"{ACR}/library/nginx@sha256:{'0' * 64}", "does not admit a digest-only reference"),
    (f"{ACR}/shop/worker:2.4.0", "line 2 {regex: \"2\\.3\\.\\d+(-debug)?\", newest: 3}"),
])
def test_a_tag_the_policy_does_not_admit_is_not_mirrored_and_says_which_policy(image, fragment):
    found = scan(pod(image), "p.yaml")
    [finding] = check(found.uses, parse_manifest(POLICY_MANIFEST), ACR)
    assert finding.code == "not-mirrored" and fragment in finding.message, finding.message


def test_a_public_reference_a_policy_imports_is_told_where_the_private_copy_is():
    found = scan(pod("nginx:1.27.4", "quay.io/shop/worker:2.3.1", "nginx:1.26.0"), "p.yaml")
    findings = check(found.uses, parse_manifest(POLICY_MANIFEST), ACR)
    assert [(f.use.image, f.code, f.suggestion) for f in findings] == [
        ("nginx:1.27.4", "not-private",
         f"use {ACR}/library/nginx:1.27.4 (images.txt line 1, tag policy "
         '{semver: ~1.27, newest: 2, exclude: "1\\.27\\.0"})'),
        ("quay.io/shop/worker:2.3.1", "not-private",
         f"use {ACR}/shop/worker:2.3.1 (images.txt line 2, tag policy " '{regex: "2\\.3\\.\\d+(-debug)?", newest: 3})'),
        ("nginx:1.26.0", "not-private", None),
        ("nginx:1.26.0", "not-mirrored", "add: nginx:1.26.0 => library/nginx")]


def test_without_the_registry_host_what_is_mirrored_is_still_checked_and_the_skip_is_said():
    found = scan(SHOP.read_bytes(), "shop.yaml")
    report = check_report(found.uses, parse_manifest(IMAGES_TXT.read_bytes()), None)
    # the two images no entry writes are still found, by repository path and tag
    assert [(f.code, f.use.line) for f in report.findings] == [("not-mirrored", 57), ("not-mirrored", 106)]
    assert "the private registry's host is not known" in report.findings[0].message
    [skipped] = report.skipped
    assert (skipped.check, skipped.uses) == ("not-private", 6)
    assert str(skipped).startswith("skipped the not-private check for 6 image use(s): the private registry's host")
    assert report.to_dict()["skipped"] == [skipped.to_dict()]


def test_without_the_registry_host_sources_paths_and_policies_all_count_as_mirrored():
    uses = scan(pod("nginx:1.27.4", "elsewhere.example/shop/migrate:2.3.0", "nginx:1.27.0", "ghcr.io/x/y:1",
                    f"{ACR}/shop/worker:2.3.2"), "p.yaml").uses
    report = check_report(uses, parse_manifest(POLICY_MANIFEST), "")
    assert [(f.use.image, f.code, f.suggestion) for f in report.findings] == [
        ("nginx:1.27.0", "not-mirrored", "add: nginx:1.27.0 => library/nginx"),  # excluded by the policy
        ("ghcr.io/x/y:1", "not-mirrored", "add: ghcr.io/x/y:1 => x/y")]
    assert [p.use.image for p in report.policy_uses] == ["nginx:1.27.4", f"{ACR}/shop/worker:2.3.2"]
    assert report.skipped[0].uses == 5


def test_the_handler_checks_policies_and_runs_without_a_configured_registry():
    from shared.config import Settings
    from shared.handlers.discover import check_yaml
    from shared.services import Services

    services = Services(Settings.from_env({}, offline=True))  # no registry, no storage: nothing is reached
    chart = pod(f"{ACR}/library/nginx:1.27.3", f"{ACR}/library/nginx:1.25.0")
    result = check_yaml(services, [("p.yaml", chart)], manifest=POLICY_MANIFEST)
    assert result["registry_host"] is None and result["ok"] is False
    assert [(f["code"], f["image"]) for f in result["findings"]] == [("not-mirrored", f"{ACR}/library/nginx:1.25.0")]
    assert [(p["image"], p["policy_line"]) for p in result["policy_uses"]] == [(f"{ACR}/library/nginx:1.27.3", 1)]
    assert result["skipped"] == [{"check": "not-private", "uses": 2, "reason": result["skipped"][0]["reason"]}]
    result = check_yaml(services, [("p.yaml", chart)], manifest=POLICY_MANIFEST, registry_host=ACR.upper())
    assert result["registry_host"] == ACR and result["skipped"] == []
    assert [f["code"] for f in result["findings"]] == ["not-mirrored"]
