"""Tag ownership against the stand-in: the airlock overwrites only tags it owns (shared.core.ownership).

The registered functions are called as the Functions host calls them: the blob trigger with real
``InputStream`` objects for manifests that are really in the manifests container, the re-sync timer with a
real ``TimerRequest``, the queue functions through tests/queue_host.py. "In-house" images are pushed to the
ACR emulator's backing registry directly, as a build would, never through the airlock.
"""
from __future__ import annotations

import uuid

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devstack import oci
from shared import entrypoints
from shared.core.ownership import owner_blob

NGINX, BUSYBOX = "library/nginx:1.27", "library/busybox:1.36"


@pytest.fixture
def prefix():
    return f"own{uuid.uuid4().hex[:8]}"


def services():
    return entrypoints.services()


def upload(functions, name: str, text: str) -> None:
    """What an upload does: the blob lands in the manifests container and its trigger fires."""
    s = services()
    s.store.put_bytes(s.settings.manifests_container, name, text.encode())
    blob = func.blob.InputStream(data=text.encode(), name=f"{s.settings.manifests_container}/{name}")
    functions["manifest_uploaded"](blob)


def runs_of(name: str) -> list[dict]:
    s = services()
    found = [s.store.get_json(s.settings.outcomes_container, n)
             for n in s.store.list_names(s.settings.outcomes_container, "runs/")]
    return sorted((r for r in found if r and r.get("manifest", {}).get("name") == name), key=lambda r: r["queued_at"])


def owner(target: str) -> dict | None:
    repository, _, tag = target.rpartition(":")
    s = services()
    return s.store.get_json(s.settings.outcomes_container, owner_blob(repository, tag))


def digest_at(stack, target: str) -> str | None:
    repository, _, tag = target.rpartition(":")
    return services().acr.tag_digest(repository, tag)


def push_in_house(stack, target: str, seed: str) -> str:
    repository = target.rpartition(":")[0]
    return oci.push(oci.build_image(repository, seed=seed), f"{stack.backing_host}/{target}", tls_verify=False)


def only_entry(record: dict) -> dict:
    [entry] = record["entries"]
    return entry


def test_an_in_house_tag_is_not_overwritten_unless_the_line_says_so(env, stack, seeded, functions, queue_host,
                                                                   prefix):
    target = f"{prefix}/app:1.0"
    in_house = push_in_house(stack, target, "built-here")
    upload(functions, f"{prefix}-team.txt", f"{NGINX} => {target}\n")
    queue_host.drain()
    [record] = runs_of(f"{prefix}-team.txt")
    entry = only_entry(record)
    assert record["status"] == "failed" and (entry["action"], entry["result"]) == ("error", "failed")
    assert entry["error"]["code"] == "TagConflict" and entry["error"]["retryable"] is False
    assert f"{target} holds {in_house[:19]}, which the airlock did not write" in entry["error"]["message"]
    assert "end line 1 with (overwrite)" in entry["error"]["message"]
    assert entry["source_digest"] == seeded[NGINX] and entry["previous_target_digest"] == in_house
    assert queue_host.by_kind["import"] == 0  # nothing was even sent to import
    assert digest_at(stack, target) == in_house and owner(target) is None

    upload(functions, f"{prefix}-team.txt", f"{NGINX} => {target} (overwrite)   # replaces the in-house build\n")
    queue_host.drain()
    entry = only_entry(runs_of(f"{prefix}-team.txt")[-1])
    assert (entry["action"], entry["result"]) == ("update", "imported")
    assert digest_at(stack, target) == seeded[NGINX]
    assert owner(target)["manifest"] == f"{prefix}-team.txt" and owner(target)["digest"] == seeded[NGINX]

    # owned now: the line without (overwrite) updates it (another source into the same tag)
    upload(functions, f"{prefix}-team.txt", f"{BUSYBOX} => {target}\n")
    queue_host.drain()
    entry = only_entry(runs_of(f"{prefix}-team.txt")[-1])
    assert (entry["action"], entry["result"]) == ("update", "imported")
    assert digest_at(stack, target) == seeded[BUSYBOX] and owner(target)["digest"] == seeded[BUSYBOX]


def test_a_tag_two_manifests_name_makes_the_second_upload_invalid(env, stack, seeded, functions, queue_host,
                                                                  prefix):
    target = f"{prefix}/shared:1"
    upload(functions, f"{prefix}-a.txt", f"# team a\n{NGINX} => {target}\n")
    queue_host.drain()
    assert runs_of(f"{prefix}-a.txt")[-1]["status"] == "succeeded"
    upload(functions, f"{prefix}-b.txt", f"{BUSYBOX} => {prefix}/own:1\n{BUSYBOX} => {target}\n")
    [refused] = runs_of(f"{prefix}-b.txt")
    assert refused["status"] == "invalid" and refused["entries"] == []
    [error] = refused["errors"]
    assert error["line"] == 2
    assert f"destination {target} is also written by {prefix}-a.txt line 2" in error["message"]
    queue_host.drain()
    assert digest_at(stack, target) == seeded[NGINX] and digest_at(stack, f"{prefix}/own:1") is None

    # the refused b.txt claims nothing: a.txt's next upload is not blocked by it
    upload(functions, f"{prefix}-a.txt", f"# team a, reviewed again\n{NGINX} => {target}\n")
    assert runs_of(f"{prefix}-a.txt")[-1]["status"] == "queued"
    queue_host.drain()
    assert runs_of(f"{prefix}-a.txt")[-1]["status"] == "succeeded"


def test_a_policy_into_a_repository_overlaps_another_manifests_tag(env, stack, seeded, functions, queue_host, prefix):
    upload(functions, f"{prefix}-pinned.txt", f"{NGINX} => {prefix}/web:1.27\n")
    queue_host.drain()
    upload(functions, f"{prefix}-policy.txt", "nginx:{regex: 1\\.2[67](\\..*)?, newest: 2} => " + f"{prefix}/web\n")
    [refused] = runs_of(f"{prefix}-policy.txt")
    assert refused["status"] == "invalid"
    message = refused["errors"][0]["message"]
    assert "admits" in message and f"{prefix}-pinned.txt line 1" in message


def test_two_manifests_no_longer_flip_a_tag_on_every_resync(env, stack, seeded, functions, queue_host, prefix):
    """Two manifests naming one tag that are both in the container (b.txt put there without its upload being
    checked, e.g. before ownership existed): the re-sync used to import B, A, B, A; the tag now stays a.txt's
    and b.txt's entry is a TagConflict naming a.txt on every re-sync."""
    target = f"{prefix}/flip:1"
    upload(functions, f"{prefix}-a.txt", f"{NGINX} => {target}\n")
    queue_host.drain()
    s = services()
    s.store.put_bytes(s.settings.manifests_container, f"{prefix}-b.txt", f"{BUSYBOX} => {target}\n".encode())
    names = {seeded[NGINX]: "A", seeded[BUSYBOX]: "B"}
    seen, b_results = [], []
    for _ in range(3):
        functions["resync_timer"](TimerRequest())
        queue_host.drain()
        seen.append(names.get(digest_at(stack, target)))
        b_results.append(only_entry(runs_of(f"{prefix}-b.txt")[-1]))
    assert seen == ["A", "A", "A"]  # without ownership: ["B", "A", "B"] (each re-sync's last import wins)
    for b in b_results:
        assert b["error"]["code"] == "TagConflict"
        assert f"{target} belongs to manifest {prefix}-a.txt" in b["error"]["message"]
    assert only_entry(runs_of(f"{prefix}-a.txt")[-1])["result"] == "unchanged"
    assert len(runs_of(f"{prefix}-b.txt")) == 3 and owner(target)["manifest"] == f"{prefix}-a.txt"


def test_an_unchanged_tag_without_a_record_is_adopted_silently(env, stack, seeded, functions, queue_host, prefix):
    """Tags the airlock wrote before ownership existed have no record: the first run that finds them unchanged
    adopts them, so the next update goes ahead."""
    target = f"{prefix}/old:1"
    upload(functions, f"{prefix}-old.txt", f"{NGINX} => {target}\n")
    queue_host.drain()
    s = services()
    repository, _, tag = target.rpartition(":")
    s.store.delete(s.settings.outcomes_container, owner_blob(repository, tag))  # as before this feature
    upload(functions, f"{prefix}-old.txt", f"# unchanged\n{NGINX} => {target}\n")
    queue_host.drain()
    record = runs_of(f"{prefix}-old.txt")[-1]
    assert record["status"] == "succeeded" and only_entry(record)["result"] == "unchanged"
    assert owner(target)["manifest"] == f"{prefix}-old.txt" and owner(target)["digest"] == seeded[NGINX]
    upload(functions, f"{prefix}-old.txt", f"{BUSYBOX} => {target}\n")
    queue_host.drain()
    assert only_entry(runs_of(f"{prefix}-old.txt")[-1])["result"] == "imported"
    assert digest_at(stack, target) == seeded[BUSYBOX]


def test_an_unchanged_tag_another_manifest_owns_is_not_adopted(env, stack, seeded, functions, queue_host, prefix):
    target = f"{prefix}/kept:1"
    upload(functions, f"{prefix}-first.txt", f"{NGINX} => {target}\n")
    queue_host.drain()
    s = services()
    s.store.delete(s.settings.manifests_container, f"{prefix}-first.txt")  # first.txt gone; its record stays
    upload(functions, f"{prefix}-second.txt", f"{NGINX} => {target}\n")
    queue_host.drain()
    assert only_entry(runs_of(f"{prefix}-second.txt")[-1])["result"] == "unchanged"
    assert owner(target)["manifest"] == f"{prefix}-first.txt"
