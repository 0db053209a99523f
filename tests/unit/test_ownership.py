"""Tag ownership, offline: the ``(overwrite)`` line option, the conflict decision and overlaps across
manifests (shared.core.ownership, shared.core.manifest)."""
from __future__ import annotations

import pytest

from shared.core.lock import Lock, LockedImage, apply_lock, manifest_fingerprint
from shared.core.manifest import parse_manifest
from shared.core.ownership import (TAG_CONFLICT, adopts, check_update, claim_needed, import_refusal, owner_blob,
                                   peer_conflicts)
from shared.core.plan import Action, decide

SRC = "sha256:" + "11" * 32
DST = "sha256:" + "22" * 32
PIN = "sha256:" + "33" * 32


def entry(line: str):
    result = parse_manifest(line)
    assert result.ok, result.errors
    [e] = result.entries
    return e


def errors(text: str) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in parse_manifest(text).errors]


# -- the line option ------------------------------------------------------------------------------

@pytest.mark.parametrize("line, target", [
    ("nginx:1.27 => team/nginx:1.27 (overwrite)", "team/nginx:1.27"),
    ("nginx:1.27 => team/nginx:1.27  (overwrite)   # taken over from the in-house build", "team/nginx:1.27"),
    ("nginx:1.27 (overwrite)", "library/nginx:1.27"),
    ("host:5000/team/app:1.2 => app ( overwrite )", "app:1.2"),
    (f"quay.io/a/b:1@{PIN} => x/y (overwrite)", "x/y:1"),
])
def test_overwrite_is_a_final_option(line, target):
    e = entry(line)
    assert e.overwrite is True and e.target == target
    assert e.to_dict()["overwrite"] is True


def test_without_the_option_nothing_changes():
    e = entry("nginx:1.27 => team/nginx:1.27  # (overwrite) in a comment is a comment")
    assert e.overwrite is False and "overwrite" not in e.to_dict()


@pytest.mark.parametrize("line, message", [
    ("nginx:1.27 => team/nginx (force)", "unknown option (force); the only line option is (overwrite)"),
    ("nginx:1.27 => team/nginx (Overwrite)", "unknown option (Overwrite)"),
    ("nginx:1.27 => team/nginx ()", "unknown option ()"),
    (f"quay.io/a/b@{PIN} => x/y (overwrite)", "(overwrite) on an untagged import"),
    ("nginx:1.27 => (overwrite)", "nothing after '=>'"),
    ("nginx:1.27 => team/nginx(overwrite)", "invalid destination"),
    ("nginx:1.27 => team/nginx (overwrite) (overwrite)", "contains whitespace"),
])
def test_bad_options_are_errors_on_their_line(line, message):
    [(number, text)] = errors(f"# first\n{line}\n")
    assert number == 2 and message in text


def test_a_parenthesis_inside_an_unclosed_policy_is_left_to_the_policy_parser():
    [(_, text)] = errors("nginx:{regex: (a)\n")
    assert "invalid tag policy" in text and "option" not in text


def test_a_policy_line_passes_overwrite_to_every_resolved_tag():
    result = parse_manifest("nginx:{semver: ~1.27, newest: 2} => web/nginx (overwrite)\n")
    [policy] = result.policies
    assert policy.overwrite and policy.to_dict()["overwrite"] is True
    resolved = policy.resolve(["1.27.1", "1.27.2", "1.26.0"])
    assert [(e.target, e.overwrite) for e in resolved] == [("web/nginx:1.27.2", True), ("web/nginx:1.27.1", True)]


def test_overwrite_is_not_fingerprinted_and_survives_the_lock():
    plain = parse_manifest("nginx:1.27 => team/nginx\nnginx:{semver: ~1.27} => web/nginx\n")
    marked = parse_manifest("nginx:1.27 => team/nginx (overwrite)\nnginx:{semver: ~1.27} => web/nginx (overwrite)\n")
    assert manifest_fingerprint(plain) == manifest_fingerprint(marked)
    lock = Lock(manifest_fingerprint(plain), (
        LockedImage("team/nginx:1.27", "docker.io/library/nginx:1.27", SRC),
        LockedImage("web/nginx:1.27.3", "docker.io/library/nginx:1.27.3", PIN, "{semver: ~1.27, newest: 1}")))
    locked = apply_lock(marked, lock)
    assert locked.ok, locked.errors
    assert [(e.target, e.locked, e.overwrite) for e in locked.entries] == [
        ("team/nginx:1.27", True, True), ("web/nginx:1.27.3", True, True)]
    assert [e.overwrite for e in apply_lock(plain, lock).entries] == [False, False]


# -- the decision -------------------------------------------------------------------------------

TAGGED = entry("quay.io/a/b:1 => x/y")
OVERWRITING = entry("quay.io/a/b:1 => x/y (overwrite)")


def test_an_update_of_a_tag_the_airlock_did_not_write_is_a_conflict():
    item = check_update(decide(TAGGED, SRC, DST), None, "images.txt")
    assert item.action is Action.ERROR and item.error.startswith(f"{TAG_CONFLICT}: ")
    assert item.source_digest == SRC and item.target_digest == DST  # the record still shows both
    message = item.error.partition(": ")[2]
    assert "x/y:1 holds sha256:22222222222" in message and "the airlock did not write" in message
    assert "end line 1 with (overwrite)" in message and "\n" not in message


def test_an_update_of_a_tag_another_manifest_owns_is_a_conflict_naming_it():
    record = {"manifest": "team-a.txt", "run_id": "r-1", "digest": DST}
    item = check_update(decide(TAGGED, SRC, DST), record, "team-b.txt")
    assert item.action is Action.ERROR
    assert "x/y:1 belongs to manifest team-a.txt (run r-1)" in item.error
    assert "if team-a.txt no longer lists it, end line 1 with (overwrite)" in item.error


def test_an_update_of_an_owned_tag_or_with_overwrite_goes_ahead():
    mine = {"manifest": "images.txt", "run_id": "r-1", "digest": DST}
    assert check_update(decide(TAGGED, SRC, DST), mine, "images.txt").action is Action.UPDATE
    assert check_update(decide(OVERWRITING, SRC, DST), None, "images.txt").action is Action.UPDATE
    assert check_update(decide(OVERWRITING, SRC, DST), {"manifest": "x.txt"}, "images.txt").action is Action.UPDATE


@pytest.mark.parametrize("target", [None, SRC])
def test_new_and_unchanged_are_never_conflicts(target):
    item = decide(TAGGED, SRC, target)
    assert check_update(item, {"manifest": "other.txt"}, "images.txt") is item
    assert check_update(item, None, "images.txt") is item


def test_at_import_time_a_new_tag_is_claimed_and_an_update_is_checked_again():
    new = decide(TAGGED, SRC, None)
    assert import_refusal(new, {"manifest": "other.txt"}, "images.txt") is None
    update = decide(TAGGED, SRC, DST)
    assert import_refusal(update, {"manifest": "images.txt"}, "images.txt") is None
    assert "belongs to manifest other.txt" in import_refusal(update, {"manifest": "other.txt"}, "images.txt")
    assert import_refusal(decide(OVERWRITING, SRC, DST), {"manifest": "other.txt"}, "images.txt") is None


def test_claims_and_adoption():
    assert claim_needed(None, "a.txt", SRC)
    assert claim_needed({"manifest": "b.txt", "digest": SRC}, "a.txt", SRC)
    assert claim_needed({"manifest": "a.txt", "digest": DST}, "a.txt", SRC)
    assert not claim_needed({"manifest": "a.txt", "digest": SRC}, "a.txt", SRC)
    assert adopts(decide(TAGGED, SRC, SRC))
    assert not adopts(decide(TAGGED, SRC, DST)) and not adopts(decide(TAGGED, SRC, None))
    assert not adopts(decide(entry(f"quay.io/a/b@{PIN} => x/y"), None, PIN))  # untagged: no owner


def test_owner_blobs_stay_inside_their_prefix():
    assert owner_blob("team/nginx", "1.27") == "owners/team%2Fnginx%3A1.27.json"
    assert owner_blob("../../x", "1").startswith("owners/") and "/" not in owner_blob("../../x", "1")[7:]


# -- across manifests -----------------------------------------------------------------------------

def peers(**texts: str):
    return [(f"{name}.txt", parse_manifest(text)) for name, text in texts.items()]


def test_a_tag_two_manifests_write_is_an_error_naming_the_other_and_its_line():
    mine = parse_manifest("# b\nquay.io/a/b:1 => team/app:1.0\nquay.io/a/c:2 => team/other\n")
    [problem] = peer_conflicts(mine, peers(a="# a\n\nnginx:1.27 => team/app:1.0\n"))
    assert problem.line == 2
    assert problem.message.startswith("destination team/app:1.0 is also written by a.txt line 3: "
                                      "a destination tag belongs to one manifest")


def test_policies_overlap_explicit_tags_they_admit_and_other_policies_into_their_repository():
    mine = parse_manifest("nginx:1.27.3 => web/nginx\nnginx:1.25.0 => web/nginx\n"
                          "nginx:{semver: ~1.26} => web/nginx\n")
    problems = peer_conflicts(mine, peers(a="nginx:{semver: ~1.27, newest: 3} => web/nginx\n",
                                          c="nginx:1.26.1 => web/nginx\n"))
    assert [p.line for p in problems] == [1, 3]
    assert "tag policy {semver: ~1.27, newest: 3} on a.txt line 1" in problems[0].message
    assert "the tag policy into web/nginx overlaps the tag policy on a.txt line 1" in problems[1].message
    only_explicit = peer_conflicts(parse_manifest("nginx:{semver: ~1.26} => web/nginx\n"),
                                   peers(c="nginx:1.26.1 => web/nginx\nnginx:1.27.0 => web/nginx\n"))
    [problem] = only_explicit
    assert "admits web/nginx:1.26.1, which c.txt line 1 writes" in problem.message


def test_manifests_that_do_not_overlap_and_untagged_imports_are_fine():
    mine = parse_manifest(f"quay.io/a/b:1 => team/app:1.0\nquay.io/a/b@{PIN} => team/app\n")
    assert peer_conflicts(mine, peers(a=f"quay.io/a/b:1 => team/app:1.1\nquay.io/a/b@{PIN} => team/app\n",
                                      z="nginx:{semver: ~1.27} => team/app\n")) == []


def test_every_overlapping_peer_is_found_and_one_problem_per_line_is_reported():
    from shared.core.ownership import overlapping_peers

    mine = parse_manifest("nginx:1.27 => team/app:1.0\nnginx:1.26 => team/app:0.9\n")
    others = peers(a="quay.io/x/y:1 => team/app:1.0\n", b="quay.io/x/z:1 => team/app:1.0\n",
                   c="quay.io/x/z:1 => team/app:2.0\n")
    assert overlapping_peers(mine, others) == {"a.txt", "b.txt"}
    [problem] = peer_conflicts(mine, others)
    assert problem.line == 1 and "a.txt line 1" in problem.message
