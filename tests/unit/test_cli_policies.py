"""The CLI's human output for tag policies and manifest warnings."""
import io

from shared.cli import main
from shared.cli.output import render_summary


def test_summary_lists_each_policy_with_its_resolved_tags_or_its_error():
    document = {
        "errors": [], "entries": [], "kind": "plan", "run_id": "r1", "status": "failed",
        "duration_seconds": 0.1,
        "summary": {"total": 0, "new": 0, "update": 0, "unchanged": 0, "error": 0, "imported": 0, "failed": 0},
        "policies": [
            {"line": 2, "source": "docker.io/library/nginx", "policy": "{semver: ~1.27, newest: 2}",
             "resolved": [{"tag": "1.27.3"}, {"tag": "1.27.2"}], "error": None},
            {"line": 5, "source": "quay.io/a/b", "policy": "{semver: >=9, newest: 1}", "resolved": [],
             "error": {"code": "NoMatchingTag", "message": "none of the 4 tags matches"}},
        ],
    }
    text = render_summary(document)
    assert "line 2: docker.io/library/nginx:{semver: ~1.27, newest: 2} -> 1.27.3, 1.27.2" in text
    assert "line 5: quay.io/a/b:{semver: >=9, newest: 1} NoMatchingTag: none of the 4 tags matches" in text


def test_manifest_check_prints_warnings_and_stays_valid(tmp_path):
    path = tmp_path / "images.txt"
    path.write_text("quay.io/a/b\nnginx:{semver: ~1.27, newest: 2}\n")
    out = io.StringIO()
    assert main(["manifest", "check", str(path)], out=out) == 0
    text = out.getvalue()
    assert f"{path}:1: warning: source quay.io/a/b has no tag" in text
    assert "1 entries, 1 tag policies, valid" in text
