"""``airlock trust check FILE``: offline, every problem with its line and field, exit 1 on problems, --json;
and the plan summary's line about signatures."""
import io
import json

from shared.cli import main
from shared.cli.output import render_summary
from tests.fixture_paths import FIXTURES

POLICY = FIXTURES / "trust" / "policy.yaml"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_a_valid_policy_exits_0_with_its_scopes():
    code, out, _ = run("trust", "check", str(POLICY))
    assert code == 0
    assert out.splitlines()[-1] == f"{POLICY}: 6 scopes (3 enforce, 1 audit, 2 skip), valid"


def test_problems_are_listed_with_their_line_and_field_and_exit_1(tmp_path):
    path = tmp_path / "trust-policy.yaml"
    path.write_text("version: 1\nscopes:\n  - name: a\n    match: nginx\n    mode: strict\n"
                    "    signatures:\n      - kind: keyless\n        identity: x@example.com\n"
                    "        identity_regex: '.*'\n        issuer: accounts.google.com\n")
    code, out, _ = run("trust", "check", str(path))
    assert code == 1
    lines = out.splitlines()
    assert f"{path}:4: scopes[0].match: match pattern 'nginx' must start with the registry host" in out
    assert f"{path}:5: scopes[0].mode: invalid mode 'strict'; one of enforce, audit, skip" in lines
    assert any(line.startswith(f"{path}:9: scopes[0].signatures[0].identity_regex: give identity or identity_regex")
               for line in lines)
    assert f"{path}:10: scopes[0].signatures[0].issuer: issuer 'accounts.google.com' is not a URL" in out
    assert lines[-1].startswith(f"{path}: 4 problems; uploaded, it would stop every run")


def test_json_is_the_result_document(tmp_path):
    code, out, _ = run("trust", "check", str(POLICY), "--json")
    document = json.loads(out)
    assert code == 0 and document["ok"] is True and document["errors"] == []
    assert [s["name"] for s in document["policy"]["scopes"]][:2] == ["kubernetes", "kubernetes-legacy"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("scopes:\n  - name: A\n")
    code, out, _ = run("--json", "trust", "check", str(bad))
    document = json.loads(out)
    assert code == 1 and document["ok"] is False and document["policy"] is None
    assert {e["line"] for e in document["errors"]} == {2}


def test_warnings_do_not_fail_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("scopes:\n  - name: a\n    match: quay.io/a/*\n    signatures:\n      - kind: keyless\n"
                    "        identity_regex: '.*'\n        issuer: https://token.actions.githubusercontent.com\n")
    code, out, _ = run("trust", "check", str(path))
    assert code == 0
    assert f"{path}:6: warning: scopes[0].signatures[0].identity_regex: identity_regex '.*' matches any" in out


def test_a_missing_file_is_a_usage_error(tmp_path):
    code, _, err = run("trust", "check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "no such file" in err


def test_the_summary_says_how_many_were_rejected():
    document = {"errors": [], "entries": [], "kind": "sync", "run_id": "r1", "status": "failed",
                "duration_seconds": 1.0, "trust": {"policy": "trust-policy.yaml", "sha256": "sha256:x", "scopes": 2},
                "summary": {"total": 2, "new": 0, "update": 0, "unchanged": 0, "error": 2, "imported": 0,
                            "failed": 2, "rejected": 2, "unverified": 2}}
    assert render_summary(document).splitlines()[-1] == \
        "signatures (trust-policy.yaml): 2 rejected, 2 not verified"
    assert "signatures" not in render_summary({**document, "trust": None})
