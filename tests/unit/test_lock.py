"""images.lock: the format, agreement with images.txt, the entries a locked run imports, diffs."""
from __future__ import annotations

import pytest

from shared.core.lock import (Lock, LockedImage, check_lock, diff_locks, lock_name_for, locked_entries,
                              manifest_fingerprint, parse_lock)
from shared.core.manifest import parse_manifest
from shared.errors import LockFileError

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64

MANIFEST = """\
# reviewed in PR 12
registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/controller
nginx:{semver: ~1.27, newest: 2} => library/nginx
quay.io/jetstack/cert-manager-webhook@sha256:%s => jetstack/webhook
""" % ("3" * 64)


def manifest(text: str = MANIFEST):
    result = parse_manifest(text)
    assert result.ok, result.errors
    return result


def lock_for(result, *, nginx=("1.27.3", "1.27.2")) -> Lock:
    images = [LockedImage("ingress-nginx/controller:v1.11.1", "registry.k8s.io/ingress-nginx/controller:v1.11.1", D1),
              LockedImage("jetstack/webhook@" + D3, "quay.io/jetstack/cert-manager-webhook", D3)]
    images += [LockedImage(f"library/nginx:{tag}", f"docker.io/library/nginx:{tag}", D2,
                           policy="{semver: ~1.27, newest: 2}") for tag in nginx]
    return Lock(manifest_fingerprint(result), tuple(images))


def test_a_lock_round_trips_through_its_text_and_is_deterministic():
    result = manifest()
    lock = lock_for(result)
    signed = Lock(lock.manifest, lock.images[:1] + (LockedImage(
        "library/nginx:1.27.3", "docker.io/library/nginx:1.27.3", D2, "{semver: ~1.27, newest: 2}",
        {"kind": "keyless", "identity": "https://github.com/nginx/x/.github/workflows/r.yml@refs/tags/v1",
         "issuer": "https://token.actions.githubusercontent.com"}),))
    for original in (lock, signed):
        text = original.to_text()
        again = parse_lock(text)
        assert again.to_dict() == original.to_dict() and again.to_text() == text
        assert again.manifest == original.manifest and len(again.images) == len(original.images)
    reordered = Lock(lock.manifest, tuple(reversed(lock.images)))
    assert reordered.to_text() == lock.to_text()  # sorted by target: reviewers see stable diffs
    assert lock.to_text().count("\n- target:") == 4 and lock.to_text().startswith("# images.lock")


def test_agreement_ignores_comments_and_order_but_not_what_is_imported():
    result = manifest()
    lock = lock_for(result)
    assert check_lock(result, lock) == []
    shuffled = manifest("\n".join(reversed(MANIFEST.splitlines())) + "\n# a new comment\n")
    assert manifest_fingerprint(shuffled) == lock.manifest and check_lock(shuffled, lock) == []
    moved = manifest(MANIFEST.replace("v1.11.1 =>", "v1.11.2 =>"))
    codes = {(p.file, p.code) for p in check_lock(moved, lock)}
    assert codes == {("images.txt", "unlocked"), ("images.lock", "stale")}


def test_each_disagreement_names_its_file_and_line():
    result = manifest(MANIFEST + "ghcr.io/org/app:2.0 => apps/app\n")
    lock = parse_lock(lock_for(manifest()).to_text())
    [problem] = check_lock(result, lock)
    assert (problem.file, problem.line, problem.code) == ("images.txt", 5, "unlocked")
    assert "apps/app:2.0" in problem.message and "airlock lock" in problem.message

    fewer = manifest(MANIFEST.replace("nginx:{semver: ~1.27, newest: 2} => library/nginx\n", ""))
    stale = check_lock(fewer, lock)
    assert [(p.file, p.code) for p in stale] == [("images.lock", "stale")] * 2
    assert all(p.line is not None and p.line > 5 for p in stale)  # lines of the lock file

    fork = "ghcr.io/fork/controller:v1.11.1 => ingress-nginx/controller"
    other_source = manifest(MANIFEST.replace("registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/"
                                             "controller", fork))
    assert [p.code for p in check_lock(other_source, lock)] == ["source-changed"]

    pinned = manifest(MANIFEST.replace("@sha256:" + "3" * 64, "@sha256:" + "4" * 64))
    assert {p.code for p in check_lock(pinned, lock)} == {"unlocked", "stale"}  # an untagged target names its digest


def test_a_policy_without_locked_tags_and_a_lock_for_another_manifest_disagree():
    result = manifest()
    no_nginx = Lock(manifest_fingerprint(result), lock_for(result, nginx=()).images)
    [problem] = check_lock(result, no_nginx)
    assert (problem.code, problem.line) == ("policy-unlocked", 3)
    other = Lock("sha256:" + "0" * 64, lock_for(result).images)
    assert [p.code for p in check_lock(result, other)] == ["fingerprint"]


def test_locked_entries_import_the_locked_digests_and_the_locked_policy_tags():
    result = manifest()
    entries = locked_entries(result, lock_for(result))
    assert [(e.line, e.target, e.source.digest, e.locked) for e in entries] == [
        (2, "ingress-nginx/controller:v1.11.1", D1, True),
        (3, "library/nginx:1.27.2", D2, True),
        (3, "library/nginx:1.27.3", D2, True),
        (4, "jetstack/webhook@" + D3, D3, True),
    ]
    nginx = entries[1]
    assert nginx.source.tag == "1.27.2" and nginx.policy == "{semver: ~1.27, newest: 2}"
    assert entries[0].source.tag == "v1.11.1"  # the tag stays: drift is measured against it
    with pytest.raises(ValueError):
        locked_entries(manifest(MANIFEST + "alpine:3.20\n"), lock_for(result))


def test_diff_lists_added_removed_and_moved_digests():
    result = manifest()
    old = lock_for(result)
    new = Lock(old.manifest, (LockedImage(old.images[0].target, old.images[0].source, D2),) + old.images[1:3]
               + (LockedImage("library/nginx:1.27.4", "docker.io/library/nginx:1.27.4", D3,
                              "{semver: ~1.27, newest: 2}"),))
    diff = diff_locks(old, new)
    assert [i.target for i in diff.added] == ["library/nginx:1.27.4"]
    assert [i.target for i in diff.removed] == ["library/nginx:1.27.2"]
    assert [(o.digest, n.digest) for o, n in diff.changed] == [(D1, D2)]
    assert diff.lines()[2] == f"~ ingress-nginx/controller:v1.11.1  {D1} -> {D2}"
    assert diff_locks(old, old).empty and not diff_locks(None, old).empty


@pytest.mark.parametrize("text, line, fragment", [
    ("version: 2\nmanifest: \"%s\"\nimages: []\n" % D1, 1, "version must be 1"),
    ("version: 1\nmanifest: nope\nimages: []\n", 2, "manifest must be sha256"),
    ("version: 1\nmanifest: \"%s\"\nimages: {}\n" % D1, 3, "images must be a list"),
    ("version: 1\nmanifest: \"%s\"\nimages:\n- target: a/b:1\n  source: docker.io/a/b:1\n  digest: sha256:12\n" % D1,
     6, "invalid digest"),
    ("version: 1\nmanifest: \"%s\"\nimages:\n- target: a/b:1\n  source: a/b:1\n  digest: \"%s\"\n" % (D1, D1),
     5, "write it normalised: docker.io/a/b:1"),
    ("version: 1\nmanifest: \"%s\"\nimages:\n- target: a/b:1\n  source: docker.io/a/b:1@%s\n  digest: \"%s\"\n"
     % (D1, D1, D1), 5, "without a digest"),
    ("version: 1\nmanifest: \"%s\"\nimages:\n- target: A/b:1\n  source: docker.io/a/b:1\n  digest: \"%s\"\n"
     % (D1, D1), 4, "invalid target"),
    ("version: 1\nmanifest: \"%s\"\nimages:\n- {target: a/b:1, source: docker.io/a/b:1, digest: \"%s\"}\n"
     "- {target: a/b:1, source: docker.io/a/b:1, digest: \"%s\"}\n" % (D1, D1, D2), 5, "locked twice"),
    ("version: 1\nmanifest: \"%s\"\nimages: []\nextra: 1\n" % D1, 4, "unknown key 'extra'"),
    ("version: 1\nversion: 1\nmanifest: \"%s\"\nimages: []\n" % D1, 2, "duplicate key"),
    ("- just\n- a list\n", 1, "a lock file is a mapping"),
    ("version: 1\nmanifest: [\n", 3, ""),
])
def test_a_bad_lock_file_names_the_line_and_never_crashes(text, line, fragment):
    with pytest.raises(LockFileError) as caught:
        parse_lock(text)
    lines = {p.line for p in caught.value.problems}
    assert line in lines, caught.value.problems
    assert any(fragment in p.message for p in caught.value.problems), caught.value.problems


def test_a_lock_that_is_not_utf8_or_too_large_is_refused():
    with pytest.raises(LockFileError) as caught:
        parse_lock(b"version: 1\n\xff\n")
    assert caught.value.problems[0].line == 2
    with pytest.raises(LockFileError):
        parse_lock(b"#" * (8 * 1024 * 1024 + 1))


def test_lock_names_sit_beside_their_manifest():
    assert lock_name_for("images.txt") == "images.lock"
    assert lock_name_for("team/a.txt") == "team/a.lock"
    assert lock_name_for("odd") == "odd.lock"
