"""The pull-request checks' formats (``--format github|azure|sarif``) of ``manifest check``, ``lock --check``
and ``discover --check``: GitHub workflow commands, Azure Pipelines logging commands and a SARIF 2.1.0 log,
each with the file, line, column and the problem's code as the rule, escaped so that no file name or message
can end a command early or start another; and ``discover --check`` without a registry host."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from shared import cli
from shared.cli.output import RULES, Annotation, azure_line, github_line, sarif_log
from shared.core.lock import Lock, LockedImage, manifest_fingerprint
from shared.core.manifest import parse_manifest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "discover"
SHOP, IMAGES_TXT = FIXTURES / "shop.yaml", FIXTURES / "images.txt"
ACR = "airlockacr.azurecr.io"
D1 = "sha256:" + "1" * 64


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name in ("ACR_LOGIN_SERVER", "ACR_NAME", "AZURE_SUBSCRIPTION_ID", "ACR_RESOURCE_GROUP",
                 "SOURCE_REGISTRY_ALLOWLIST", "LOCK_REQUIRED"):
        monkeypatch.delenv(name, raising=False)


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


BAD = "nginx:1.27 => web/nginx\nquay.io/Bad/Ref:1\nnginx => web/x\nnginx:1.27 => web/nginx\n"


@pytest.fixture
def bad_manifest(tmp_path):
    path = tmp_path / "images.txt"
    path.write_text(BAD)
    return path


# -- manifest check -----------------------------------------------------------------------------

def test_manifest_check_as_github_annotations(bad_manifest):
    code, out, _ = run_cli("manifest", "check", str(bad_manifest), "--format", "github")
    assert code == 1
    lines = out.splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    assert [re.search(r"line=(\d+)", line).group(1) for line in errors] == ["2", "4"]
    file = str(bad_manifest).replace(":", "%3A").replace(",", "%2C")
    assert errors[0].startswith(f"::error file={file},line=2,title=invalid-manifest::")
    assert "upper case" in errors[0] or "invalid" in errors[0].lower()
    assert lines[-1].endswith("error(s); nothing would be imported")  # the summary, as plain text


def test_manifest_check_as_azure_logging_commands(bad_manifest):
    code, out, _ = run_cli("manifest", "check", str(bad_manifest), "--format", "azure")
    assert code == 1
    issues = [line for line in out.splitlines() if line.startswith("##vso[")]
    assert issues[0].startswith(f"##vso[task.logissue type=error;sourcepath={bad_manifest};linenumber=2;"
                                "code=invalid-manifest]")
    assert [line.split(";", 1)[0] for line in issues] == ["##vso[task.logissue type=error"] * 2 + [
        "##vso[task.logissue type=warning"]  # line 3 has no tag


def test_manifest_warnings_are_warnings(tmp_path):
    path = tmp_path / "images.txt"
    path.write_text("nginx => web/nginx\n")
    code, out, _ = run_cli("manifest", "check", str(path), "--format", "github")
    assert code == 0
    assert any(line.startswith(f"::warning file={path},line=1,title=manifest-warning::") for line in out.splitlines())
    code, out, _ = run_cli("manifest", "check", str(path), "--format", "sarif")
    log = json.loads(out)
    levels = {(r["ruleId"], r["level"]) for r in log["runs"][0]["results"]}
    assert ("manifest-warning", "warning") in levels and code == 0


def test_json_and_another_format_together_is_a_usage_error(bad_manifest):
    code, _, err = run_cli("manifest", "check", str(bad_manifest), "--json", "--format", "github")
    assert code == 2 and "--json and --format github" in err
    assert run_cli("manifest", "check", str(bad_manifest), "--format", "yaml")[0] == 2
    code, out, _ = run_cli("manifest", "check", str(bad_manifest), "--format", "json")
    assert code == 1 and json.loads(out)["errors"][0]["line"] == 2


# -- escaping: no file name or message ends a command early ---------------------------------------

def test_github_escaping_of_properties_and_data():
    line = github_line(Annotation("dir,a:b/images%.txt", 3, 7, "not-mirrored", "100% bad\r\nnext::x, y: z"))
    assert line == ("::error file=dir%2Ca%3Ab/images%25.txt,line=3,col=7,title=not-mirrored::"
                    "100%25 bad%0D%0Anext::x, y: z")
    assert "\n" not in line and "\r" not in line


def test_azure_escaping_of_properties_and_data():
    line = azure_line(Annotation("a;b]c%.txt", 3, None, "stale", "50% done]\n##vso[task.complete result=Failed]",
                                 "warning"))
    assert line == ("##vso[task.logissue type=warning;sourcepath=a%3Bb%5Dc%AZP25.txt;linenumber=3;code=stale]"
                    "50%AZP25 done]%0A##vso[task.complete result=Failed]")
    assert line.count("\n") == 0


def test_a_manifest_file_with_separators_in_its_name(tmp_path):
    path = tmp_path / "team,a;b]images.txt"
    path.write_text(BAD)
    _, out, _ = run_cli("manifest", "check", str(path), "--format", "github")
    assert "file=" + str(path).replace(",", "%2C") + ",line=2," in out
    _, out, _ = run_cli("manifest", "check", str(path), "--format", "azure")
    assert "sourcepath=" + str(path).replace(";", "%3B").replace("]", "%5D") + ";linenumber=2;" in out


# -- SARIF ---------------------------------------------------------------------------------------

def assert_sarif(log: dict) -> list[dict]:
    """What SARIF 2.1.0 (OASIS, §3.13-3.30) and GitHub code scanning's upload need: version, one run whose
    tool.driver names the tool and lists each rule once; each result has a ruleId with the matching ruleIndex,
    a level, a message text, and a physical location with a URI reference and a 1-based region."""
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "acr-airlock" and driver["version"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["defaultConfiguration"]["level"] in ("error", "warning")
    assert run["columnKind"] == "unicodeCodePoints"
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note") and result["message"]["text"]
        for location in result.get("locations", []):
            physical = location["physicalLocation"]
            assert re.fullmatch(r"[A-Za-z0-9._~!$&'()*+,;=:@/%-]+", physical["artifactLocation"]["uri"])
            region = physical.get("region", {})
            assert region.get("startLine", 1) >= 1 and region.get("startColumn", 1) >= 1
    return run["results"]


def test_discover_check_as_sarif_has_rules_lines_and_columns():
    code, out, _ = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT), "--registry-host", ACR,
                           "--format", "sarif")
    assert code == 1
    log = json.loads(out)
    results = assert_sarif(log)
    assert [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]] == ["not-mirrored"]
    regions = [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]) for r in results]
    assert regions == [("not-mirrored", {"startLine": 57, "startColumn": 18}),
                       ("not-mirrored", {"startLine": 106, "startColumn": 22})]
    uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "file://" + str(SHOP)  # an absolute path: a file URI; a relative one stays relative


def test_sarif_uris_are_relative_references_escaped():
    log = sarif_log([Annotation("charts/my chart/out#1.yaml", 2, None, "not-private", "m"),
                     Annotation(None, None, None, "invalid-manifest", "no file")], version="1.2.3")
    results = assert_sarif(log)
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "charts/my%20chart/out%231.yaml"
    assert "locations" not in results[1]
    assert [r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]] == ["invalid-manifest", "not-private"]


def test_every_rule_has_a_name_and_description():
    assert all(name and text for name, text in RULES.values())


# -- discover --check ----------------------------------------------------------------------------

def test_discover_check_as_github_annotations_with_columns():
    code, out, _ = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT), "--registry-host", ACR,
                           "--format", "github")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"::error file={SHOP},line=57,col=18,title=not-mirrored::Deployment/shop-web "
                               "initContainer 'migrate': ")
    assert lines[1].startswith(f"::error file={SHOP},line=106,col=22,title=not-mirrored::")
    assert lines[2].startswith("2 finding(s)")


def test_format_is_for_the_check():
    code, _, err = run_cli("discover", str(SHOP), "--format", "github")
    assert code == 2 and "--check" in err


def test_discover_check_without_a_registry_host_runs_and_says_what_it_skipped():
    code, out, err = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT))
    assert code == 1, err
    assert "skipped the not-private check for" in err
    assert out.splitlines()[-1].endswith("checked against " + str(IMAGES_TXT) + "; no registry host "
                                         "(not-private not checked)")
    code, out, err = run_cli("discover", str(SHOP), "--check", str(IMAGES_TXT), "--json")
    document = json.loads(out)
    assert document["registry_host"] is None and document["skipped"][0]["check"] == "not-private"
    assert document["skipped"][0]["uses"] > 0 and "policy_uses" in document and document["ok"] is False
    assert err == ""  # --json: the notes are in the document


def test_discover_check_lists_policy_uses_on_stderr(tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_text("nginx:{semver: ~1.27, newest: 2} => library/nginx\n")
    pod = tmp_path / "pod.yaml"
    pod.write_text(f"kind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n"
                   f"  - {{name: web, image: {ACR}/library/nginx:1.27.3}}\n")
    code, out, err = run_cli("discover", str(pod), "--check", str(manifest), "--registry-host", ACR)
    assert code == 0, out + err
    assert "admitted by the tag policy on images.txt line 1" in err
    code, out, _ = run_cli("discover", str(pod), "--check", str(manifest), "--registry-host", ACR, "--json")
    [use] = json.loads(out)["policy_uses"]
    assert use["policy_line"] == 1 and use["line"] == 5


# -- lock --check --------------------------------------------------------------------------------

def write_lock(tmp_path, manifest_text: str, images) -> tuple[Path, Path]:
    manifest = tmp_path / "images.txt"
    manifest.write_text(manifest_text)
    lock = tmp_path / "images.lock"
    lock.write_text(Lock(manifest_fingerprint(parse_manifest(manifest_text)), tuple(images)).to_text())
    return manifest, lock


def test_lock_check_as_annotations_with_the_problem_codes(tmp_path):
    manifest, lock = write_lock(tmp_path, "quay.io/a/b:1 => a/b\n", [
        LockedImage("a/b:1", "quay.io/a/b:1", D1), LockedImage("old/x:1", "quay.io/old/x:1", D1)])
    code, out, _ = run_cli("lock", str(manifest), "--check", "--format", "github")
    assert code == 1
    [stale] = [line for line in out.splitlines() if line.startswith("::error ")]
    assert re.match(rf"::error file={re.escape(str(lock))},line=\d+,title=stale::", stale)
    manifest.write_text("quay.io/a/b:1 => a/b\nquay.io/c/d:2 => c/d\nquay.io/old/x:1 => old/x\n")
    code, out, _ = run_cli("lock", str(manifest), "--check", "--format", "sarif")
    results = assert_sarif(json.loads(out))
    assert {(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in results} >= {
        ("unlocked", 2)}
    code, out, _ = run_cli("lock", str(manifest), "--check", "--format", "azure")
    assert code == 1 and f"sourcepath={manifest};linenumber=2;code=unlocked]" in out


def test_lock_check_annotates_a_missing_lock_and_an_invalid_manifest(tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_text("quay.io/a/b:1 => a/b\n")
    code, out, _ = run_cli("lock", str(manifest), "--check", "--format", "github")
    assert code == 1 and out.startswith(f"::error file={tmp_path / 'images.lock'},title=missing::")
    manifest.write_text("quay.io/a/b:1 => a/b\nquay.io/Bad:1\n")
    code, out, _ = run_cli("lock", str(manifest), "--check", "--format", "github")
    assert code == 1 and f"::error file={manifest},line=2,title=invalid-manifest::" in out
    code, _, err = run_cli("lock", str(manifest), "--format", "github")
    assert code == 2 and "--check" in err



def test_manifest_check_annotates_the_lock_beside_it_with_its_codes(tmp_path):
    """manifest check reads the images.lock beside the manifest: a lock that does not agree is annotated
    where the disagreement is, with the code lock --check gives it; no lock is a file-level warning."""
    manifest, lock = write_lock(tmp_path, "quay.io/a/b:1 => a/b\n", [
        LockedImage("a/b:1", "quay.io/a/b:1", D1), LockedImage("old/x:1", "quay.io/old/x:1", D1)])
    code, out, _ = run_cli("manifest", "check", str(manifest), "--format", "github")
    assert code == 1
    [stale] = [line for line in out.splitlines() if line.startswith("::error ")]
    assert re.match(rf"::error file={re.escape(str(lock))},line=\d+,title=stale::", stale)
    manifest.write_text("quay.io/a/b:1 => a/b\nquay.io/c/d:2 => c/d\nquay.io/old/x:1 => old/x\n")
    code, out, _ = run_cli("manifest", "check", str(manifest), "--format", "azure")
    assert code == 1 and f"sourcepath={manifest};linenumber=2;code=unlocked]" in out
    lock.unlink()
    code, out, _ = run_cli("manifest", "check", str(manifest), "--format", "github")
    assert code == 0 and out.startswith(f"::warning file={manifest},title=manifest-warning::no ")
    assert "images.lock" in out.splitlines()[0]
