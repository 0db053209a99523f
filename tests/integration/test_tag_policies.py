"""Tag policies against the stand-in: an upstream repository with more tags than one page of
``tags/list``, the newest N imported, and a later upstream release picked up by the re-sync timer."""
from __future__ import annotations

import json
import uuid

import httpx
import pytest

from devstack import layout, oci
from devstack.paging import paging_front
from shared.handlers import records
from shared.handlers.imports import run_manifest
from shared.handlers.runs import on_run_message
from shared.handlers.triggers import on_resync_timer
from shared.services import Services

pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")

FILLERS = 1200  # more than one page: the source is listed 1,000 tags at a time


def make_services(stack, front, **overrides) -> Services:
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5",
           "SOURCE_REGISTRY_ALLOWLIST": f"{stack.upstream_host},{front.host}",
           "RUNS_QUEUE": f"pol-{uuid.uuid4().hex[:10]}", **overrides}
    return Services.from_env(env)


def resync(services) -> list[dict]:
    """The re-sync timer queues a run per manifest; its chunk messages are then executed as the queue
    function would (the same handler, with these services); returns the final records."""
    queued = on_resync_timer(services)
    queue = services.runs_queue.client()
    for _ in range(100):
        messages = list(queue.receive_messages(max_messages=16, visibility_timeout=120))
        if not messages:
            break
        for message in messages:
            on_run_message(services, message.content, message.dequeue_count)
            queue.delete_message(message)
    return [records.load(services, r["run_id"]) for r in queued]


def push(stack, repository: str, tag: str, seed: str) -> oci.ImageLayout:
    image = oci.build_image(repository, seed=seed)
    oci.push(image, f"{stack.upstream_host}/{repository}:{tag}", cert_dir=stack.certs_dir)
    return image


def many_tags(stack, repository: str, image: oci.ImageLayout, tags: list[str]) -> None:
    layout.link_tags(layout.registry_root(stack, "upstream"), repository, image.digest, tags,
                     blobs=image.blob_digests())


def upstream_tags(stack, repository: str) -> list[str]:
    with httpx.Client(base_url=stack.upstream_url, verify=stack.ssl_context()) as client:
        return client.get(f"/v2/{repository}/tags/list").json()["tags"]


def backing_digest(stack, ref: str) -> str:
    return oci.sha256_digest(oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False))


@pytest.fixture
def front(stack):
    """The upstream registry paging tags/list as distribution 3 and ACR do (devstack.paging)."""
    with paging_front(stack) as running:
        yield running


@pytest.fixture
def names():
    unique = uuid.uuid4().hex[:8]
    return {"repo": f"pol{unique}/app", "dest": f"pol{unique}/mirror", "container": f"manifests-{unique}"}


def test_semver_policy_imports_the_newest_and_the_next_resync_brings_a_new_release(stack, seeded, names, front):
    repo, dest = names["repo"], names["dest"]
    old = push(stack, repo, "1.27.1", seed="a")
    # 1,200 older releases sort before 1.27.x, so a listing that stopped after one page would miss
    # the newest ones
    many_tags(stack, repo, old, [f"1.0.{i}" for i in range(FILLERS)])
    newer = push(stack, repo, "1.27.2", seed="b")
    newest = push(stack, repo, "1.28.0", seed="c")
    push(stack, repo, "1.29.0-rc.1", seed="d")  # a pre-release: left out
    push(stack, repo, "2.0.0", seed="e")        # outside the range
    assert len(upstream_tags(stack, repo)) == FILLERS + 5

    services = make_services(stack, front, MANIFESTS_CONTAINER=names["container"])
    manifest = f"# reviewed\n{front.host}/{repo}:{{semver: >=1.27 <2, newest: 2}} => {dest}\n"
    services.store.put_bytes(names["container"], "images.txt", manifest.encode())

    [first] = resync(services)
    assert first["status"] == "succeeded", json.dumps(first, indent=1)
    assert front.pages_served == 2  # 1,205 tags, 1,000 a page
    [policy] = first["policies"]
    assert (policy["line"], policy["policy"], policy["tags_listed"]) == (
        2, "{semver: >=1.27 <2, newest: 2}", FILLERS + 5)
    assert policy["resolved"] == [
        {"tag": "1.28.0", "target": f"{dest}:1.28.0", "digest": newest.digest},
        {"tag": "1.27.2", "target": f"{dest}:1.27.2", "digest": newer.digest},
    ]
    assert [(e["line"], e["target"], e["result"], e["policy"]) for e in first["entries"]] == [
        (2, f"{dest}:1.28.0", "imported", "{semver: >=1.27 <2, newest: 2}"),
        (2, f"{dest}:1.27.2", "imported", "{semver: >=1.27 <2, newest: 2}"),
    ]
    assert backing_digest(stack, f"{dest}:1.28.0") == newest.digest
    assert backing_digest(stack, f"{dest}:1.27.2") == newer.digest

    release = push(stack, repo, "1.28.1", seed="f")  # upstream publishes a patch release
    [second] = resync(services)
    assert second["status"] == "succeeded", json.dumps(second, indent=1)
    assert [(e["target"], e["action"], e["result"]) for e in second["entries"]] == [
        (f"{dest}:1.28.1", "new", "imported"),
        (f"{dest}:1.28.0", "unchanged", "unchanged"),
    ]
    assert backing_digest(stack, f"{dest}:1.28.1") == release.digest
    assert backing_digest(stack, f"{dest}:1.27.2") == newer.digest  # older imports stay


def test_regex_policy_imports_the_newest_matching_tags_and_picks_up_a_new_one(stack, seeded, names, front):
    repo, dest = names["repo"], names["dest"]
    filler = push(stack, repo, "latest", seed="g")
    many_tags(stack, repo, filler, [f"nightly-2024{i:04d}" for i in range(FILLERS)])
    many_tags(stack, repo, filler, [f"1.2.{i}" for i in range(20)])  # not matched by the pattern
    top = push(stack, repo, "nightly-20250101", seed="h")
    services = make_services(stack, front)
    manifest = f'{front.host}/{repo}:{{regex: "nightly-[0-9]{{8}}", newest: 3}} => {dest}\n'

    first = run_manifest(services, manifest, name="policies.txt", trigger="cli")
    assert first["status"] == "succeeded", json.dumps(first, indent=1)
    [policy] = first["policies"]
    assert policy["tags_listed"] == FILLERS + 22
    assert [r["tag"] for r in policy["resolved"]] == ["nightly-20250101", "nightly-20241199", "nightly-20241198"]
    assert [r["digest"] for r in policy["resolved"]] == [top.digest, filler.digest, filler.digest]
    assert first["summary"]["imported"] == 3
    assert backing_digest(stack, f"{dest}:nightly-20250101") == top.digest

    later = push(stack, repo, "nightly-20250102", seed="i")
    second = run_manifest(services, manifest, name="policies.txt", trigger="timer")
    assert [(e["target"], e["result"]) for e in second["entries"]] == [
        (f"{dest}:nightly-20250102", "imported"),
        (f"{dest}:nightly-20250101", "unchanged"),
        (f"{dest}:nightly-20241199", "unchanged"),
    ]
    assert backing_digest(stack, f"{dest}:nightly-20250102") == later.digest


def test_policy_on_a_missing_repository_fails_the_run_with_the_line(stack, seeded, names, front):
    services = make_services(stack, front)
    manifest = f"{front.host}/{names['repo']}:{{semver: ~1}} => {names['dest']}\n"
    document = run_manifest(services, manifest, name="missing.txt", trigger="cli", save=False)
    assert document["status"] == "failed" and document["entries"] == []
    [policy] = document["policies"]
    assert policy["line"] == 1 and policy["error"]["code"] == "SourceNotFound"


def test_policy_matching_nothing_is_reported(stack, seeded, names, front):
    push(stack, names["repo"], "1.0.0", seed="j")
    services = make_services(stack, front)
    manifest = f"{front.host}/{names['repo']}:{{semver: >=5}} => {names['dest']}\n"
    document = run_manifest(services, manifest, name="nothing.txt", trigger="cli", save=False)
    assert document["status"] == "failed"
    assert document["policies"][0]["error"]["code"] == "NoMatchingTag"


def test_regsync_style_patterns_and_exclude_choose_what_is_imported(stack, seeded, names, front):
    """Patterns the old dialect refused (more than 3 choice points) run on RE2, and exclude: drops
    tags before newest is counted, for a regex and a semver policy over one source."""
    repo, dest = names["repo"], names["dest"]
    image = push(stack, repo, "1.27.1", seed="k")
    many_tags(stack, repo, image, ["1.27.2", "1.28.0", "1.28.0-alpine", "1.28.1-slim", "1.29.0-rc.1", "latest"])
    services = make_services(stack, front)
    manifest = (f'{front.host}/{repo}:{{regex: \\d+\\.\\d+\\.\\d+(-(alpine|slim))?, exclude: ".*-slim", newest: 3}}'
                f" => {dest}\n"
                f"{front.host}/{repo}:{{semver: >=1.27, exclude: 1\\.28\\.0, newest: 2}} => {dest}-releases\n")
    document = run_manifest(services, manifest, name="exclude.txt", trigger="cli")
    assert document["status"] == "succeeded", json.dumps(document, indent=1)
    regex, semver = document["policies"]
    assert regex["policy"] == r'{regex: "\d+\.\d+\.\d+(-(alpine|slim))?", newest: 3, exclude: ".*-slim"}'
    assert [r["tag"] for r in regex["resolved"]] == ["1.28.0-alpine", "1.28.0", "1.27.2"]
    assert [r["tag"] for r in semver["resolved"]] == ["1.27.2", "1.27.1"]
    assert sorted(e["target"] for e in document["entries"]) == sorted([
        f"{dest}:1.28.0-alpine", f"{dest}:1.28.0", f"{dest}:1.27.2", f"{dest}-releases:1.27.2",
        f"{dest}-releases:1.27.1"])
    assert backing_digest(stack, f"{dest}:1.28.0-alpine") == image.digest
