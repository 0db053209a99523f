"""Strict parsing (issue 11 item 3): unfinished arrows, untagged sources, floods of bad lines."""
import json

import pytest

from shared.core.manifest import MAX_ERRORS, parse_manifest


@pytest.mark.parametrize("line", [
    "nginx:1.27 =>",
    "nginx:1.27 =>   ",
    "nginx:1.27 => #team/nginx",
    "nginx:1.27 =>\t# reviewed",
])
def test_arrow_with_nothing_after_it_is_an_error(line):
    result = parse_manifest(f"# header\n{line}\n")
    assert not result.ok and result.entries == []
    [error] = result.errors
    assert error.line == 2 and "nothing after '=>'" in error.message


def test_untagged_source_means_latest_with_a_warning():
    result = parse_manifest("quay.io/a/b => x\nquay.io/c/d:1.0\n")
    assert result.ok
    assert [e.target for e in result] == ["x:latest", "c/d:1.0"]
    [warning] = result.warnings
    assert warning.line == 1 and ":latest" in warning.message
    document = result.to_dict()
    assert document["warnings"] == [{"line": 1, "message": str(warning)}] and document["errors"] == []


def test_digest_only_source_is_not_warned_about():
    sha = "sha256:" + "a" * 64
    assert parse_manifest(f"quay.io/a/b@{sha} => x\n").warnings == []


def test_invalid_utf8_flood_is_refused_at_the_entry_limit_with_a_small_answer():
    flood = b"\xff\n" * 524_288  # 1 MB, the shape of the report
    result = parse_manifest(flood, max_entries=5000, max_bytes=2_000_000)
    assert not result.ok
    assert len(result.errors) == MAX_ERRORS + 2
    assert all("not valid UTF-8" in p.message for p in result.errors[:MAX_ERRORS])
    assert result.errors[MAX_ERRORS].message == f"... and {5000 - MAX_ERRORS} more problems not listed"
    limit = result.errors[-1]
    assert limit.line == 5001 and "the limit is 5000" in limit.message
    assert len(json.dumps(result.to_dict())) < 20_000


def test_invalid_lines_count_toward_the_limit_among_good_ones():
    text = b"quay.io/a:1\n\xff\nquay.io/b:1\n"
    result = parse_manifest(text, max_entries=2)
    assert [(p.line, "limit" in p.message) for p in result.errors] == [(2, False), (3, True)]


def test_error_list_is_capped_with_a_count_of_the_rest():
    text = "".join(f"Bad/Repo{i}:1\n" for i in range(250))
    result = parse_manifest(text)
    assert len(result.errors) == MAX_ERRORS + 1
    assert result.errors[-1].line is None and "150 more problems" in result.errors[-1].message


def test_allowlist_error_names_the_setting():
    result = parse_manifest("quay.io/a:1\n", allowed_registries=["registry.k8s.io"])
    [error] = result.errors
    assert "SOURCE_REGISTRY_ALLOWLIST" in error.message and "'quay.io'" in error.message
