"""images.lock through the registered functions, against the stand-in: an upload is a run (claimed by its
ETag, with the lock beside it), a locked run imports exactly the locked digests and reports a tag that
moved upstream as drift, the re-sync timer and self-heal keep to the lock, and a lock that does not
agree (or is missing where locks are required) imports nothing.

Upstream images are pushed per test under quay.io/<prefix>/... (the stand-in mirrors quay.io to its
upstream registry), so a test can move a tag upstream without touching anything another test reads.
"""
from __future__ import annotations

import io
import json
import time
import uuid
from contextlib import redirect_stderr
from datetime import datetime, timezone

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devstack import oci
from shared import entrypoints
from tests.records import run_records_of
from shared.cli import main as cli_main
from shared.core.lock import parse_lock


@pytest.fixture
def prefix():
    return f"lk{uuid.uuid4().hex[:8]}"


def services():
    return entrypoints.services()


def push_upstream(stack, repository: str, tag: str, seed: str) -> str:
    """Push a small image to the upstream registry as ``repository:tag``; its digest."""
    return oci.push(oci.build_image(repository, seed=seed, layers=1), f"{stack.upstream_host}/{repository}:{tag}",
                    cert_dir=stack.certs_dir)


def upload(name: str, data: bytes) -> str:
    """Put a blob into the manifests container (as a pipeline does); the ETag of this upload."""
    s = services()
    s.store.put_bytes(s.settings.manifests_container, name, data)
    _, etag = s.store.get_bytes_etag(s.settings.manifests_container, name)
    return etag


def deliver(functions, name: str, data: bytes, etag) -> None:
    """The blob trigger's delivery of one upload, with the properties the host passes (ETag)."""
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{container}/{name}",
                                                         blob_properties={"ETag": etag} if etag else None))


def records_for(name: str) -> list[dict]:
    return run_records_of(services(), name)


def make_lock(manifest: bytes, name: str = "images.txt") -> bytes:
    from shared.handlers.lock import build_lock

    return build_lock(services(), manifest, name=name).lock.to_text().encode()


def acr_digest(repository: str, tag: str):
    return services().acr.tag_digest(repository, tag)


# -- an upload is a run ---------------------------------------------------------------------------

def test_each_upload_is_a_run_and_a_redelivered_event_is_not(env, stack, functions, queue_host, prefix, tmp_path):
    digest = push_upstream(stack, f"{prefix}/app", "1.0", "a")
    manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    first = upload(f"{prefix}.txt", manifest)
    deliver(functions, f"{prefix}.txt", manifest, first)
    deliver(functions, f"{prefix}.txt", manifest, first)  # the same event again: no second run
    queue_host.drain()
    assert [r["status"] for r in records_for(f"{prefix}.txt")] == ["succeeded"]
    second = upload(f"{prefix}.txt", manifest)  # the same bytes again (a pipeline re-run): a new upload
    assert second != first
    deliver(functions, f"{prefix}.txt", manifest, second)
    queue_host.drain()
    runs = records_for(f"{prefix}.txt")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"] and runs[0]["run_id"] != runs[1]["run_id"]
    assert runs[1]["entries"][0]["source_digest"] == digest

    # runs wait --file follows the run of this upload (the second), and fails fast without a blob
    local = tmp_path / f"{prefix}.txt"
    local.write_bytes(manifest)
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["runs", "wait", "--file", str(local), "--timeout", "5", "--json"], out=out, err=err) == 0
    assert json.loads(out.getvalue())["run_id"] == runs[1]["run_id"]
    other = tmp_path / "other.txt"
    other.write_bytes(manifest)
    started = time.monotonic()
    assert cli_main(["runs", "wait", "--file", str(other), "--timeout", "60"], out=out, err=err) == 1
    assert time.monotonic() - started < 10 and "no blob 'other.txt'" in err.getvalue()
    changed = tmp_path / "images2" / f"{prefix}.txt"
    changed.parent.mkdir()
    changed.write_bytes(manifest + b"# edited after the upload\n")
    err = io.StringIO()
    assert cli_main(["runs", "wait", "--file", str(changed), "--timeout", "60"], out=out, err=err) == 1
    assert "holds other bytes" in err.getvalue()


# -- locked runs --------------------------------------------------------------------------------

def test_a_locked_run_imports_the_locked_digest_and_reports_a_moved_tag_as_drift(env, stack, functions, queue_host,
                                                                              prefix):
    locked = push_upstream(stack, f"{prefix}/app", "1.0", "a")
    manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    lock = make_lock(manifest)
    assert [i.digest for i in parse_lock(lock).images] == [locked]
    moved = push_upstream(stack, f"{prefix}/app", "1.0", "b")  # the tag moves upstream after the review
    assert moved != locked
    upload(f"{prefix}.lock", lock)
    deliver(functions, f"{prefix}.txt", manifest, upload(f"{prefix}.txt", manifest))
    queue_host.drain()
    [run] = records_for(f"{prefix}.txt")
    assert run["status"] == "succeeded" and run["manifest"]["lock"]["images"] == 1
    [entry] = run["entries"]
    assert entry["result"] == "imported" and entry["source_digest"] == locked
    assert entry["drift"] == {"locked": locked, "upstream": moved}
    assert run["summary"]["drift"] == 1 and run["warnings"] == []
    assert acr_digest(f"{prefix}/app", "1.0") == locked  # what was reviewed, not what the tag says now

    # the re-sync timer reports the drift again and imports nothing
    functions["resync_timer"](TimerRequest())
    queue_host.drain()
    resync = [r for r in records_for(f"{prefix}.txt") if r["trigger"] == "timer"]
    assert [r["entries"][0]["result"] for r in resync] == ["unchanged"] and resync[0]["summary"]["drift"] == 1
    assert acr_digest(f"{prefix}/app", "1.0") == locked


def test_self_heal_of_a_locked_tag_restores_the_locked_digest(env, stack, functions, queue_host, prefix):
    locked = push_upstream(stack, f"{prefix}/app", "2.0", "a")
    manifest = f"quay.io/{prefix}/app:2.0 => {prefix}/app\n".encode()
    upload(f"{prefix}.lock", make_lock(manifest))
    deliver(functions, f"{prefix}.txt", manifest, upload(f"{prefix}.txt", manifest))
    queue_host.drain()
    push_upstream(stack, f"{prefix}/app", "2.0", "b")
    services().clients.data_plane.delete_tag(f"{prefix}/app", "2.0")
    event = {"id": str(uuid.uuid4()), "topic": services().settings.registry_id, "subject": f"{prefix}/app:2.0",
             "eventType": "Microsoft.ContainerRegistry.ImageDeleted", "dataVersion": "1.0",
             "data": {"id": str(uuid.uuid4()), "timestamp": datetime.now(timezone.utc).isoformat(),
                      "action": "delete", "target": {"repository": f"{prefix}/app", "tag": "2.0",
                                                     "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                     "digest": locked},
                      "request": {"id": str(uuid.uuid4()), "host": services().clients.login_server,
                                  "method": "DELETE"}}}
    functions["registry_event"](func.EventGridEvent(
        id=event["id"], data=event["data"], topic=event["topic"], subject=event["subject"],
        event_type=event["eventType"], event_time=datetime.now(timezone.utc), data_version="1.0"))
    queue_host.drain()
    [heal] = [r for r in _all_records() if r.get("trigger") == "event" and r.get("entries")
              and r["entries"][0]["target"] == f"{prefix}/app:2.0"]
    assert heal["status"] == "succeeded" and heal["manifest"]["lock"] is not None
    assert heal["entries"][0]["source_digest"] == locked and heal["entries"][0]["drift"]["locked"] == locked
    assert acr_digest(f"{prefix}/app", "2.0") == locked


def _all_records() -> list[dict]:
    s = services()
    return [r for r in (s.store.get_json(s.settings.outcomes_container, n)
                        for n in s.store.list_names(s.settings.outcomes_container, "runs/")) if r]


def test_a_lock_uploaded_after_its_manifest_starts_the_run(env, stack, functions, queue_host, prefix):
    """The manifest came first (its run is invalid: the old lock does not agree); the agreeing lock's
    upload runs it; a later redelivery of that lock event does nothing more."""
    push_upstream(stack, f"{prefix}/app", "1.0", "a")
    push_upstream(stack, f"{prefix}/web", "1.0", "a")
    old_manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    upload(f"{prefix}.lock", make_lock(old_manifest))
    manifest = old_manifest + f"quay.io/{prefix}/web:1.0 => {prefix}/web\n".encode()
    deliver(functions, f"{prefix}.txt", manifest, upload(f"{prefix}.txt", manifest))
    [invalid] = records_for(f"{prefix}.txt")
    assert invalid["status"] == "invalid" and invalid["errors"][0]["line"] == 2
    assert f"no entry in {prefix}.lock" in invalid["errors"][0]["message"]
    lock = make_lock(manifest)
    lock_etag = upload(f"{prefix}.lock", lock)
    deliver(functions, f"{prefix}.lock", lock, lock_etag)
    deliver(functions, f"{prefix}.lock", lock, lock_etag)
    queue_host.drain()
    runs = records_for(f"{prefix}.txt")
    assert [r["status"] for r in runs] == ["invalid", "succeeded"]
    assert runs[1]["summary"]["imported"] == 2 and runs[1]["manifest"]["lock"]["images"] == 2


def test_a_lock_that_does_not_agree_imports_nothing_and_names_the_line(env, stack, functions, queue_host, prefix):
    push_upstream(stack, f"{prefix}/app", "1.0", "a")
    manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    lock = make_lock(manifest).replace(b"app:1.0\"", b"app:9.9\"")  # someone edited the lock by hand
    upload(f"{prefix}.lock", lock)
    deliver(functions, f"{prefix}.txt", manifest, upload(f"{prefix}.txt", manifest))
    queue_host.drain()
    [run] = records_for(f"{prefix}.txt")
    assert run["status"] == "invalid" and run["entries"] == []
    assert {(e.get("field"), e["line"]) for e in run["errors"]} == {(None, 1), (f"{prefix}.lock", 7)}, run["errors"]
    assert any(f"no entry in {prefix}.lock" in e["message"] for e in run["errors"])  # the manifest's line 1
    assert any("no line of" in e["message"] for e in run["errors"])  # the lock's stale entry, at its line
    assert acr_digest(f"{prefix}/app", "1.0") is None


def test_locks_required_refuse_an_unlocked_manifest_and_allowed_ones_warn(env, stack, functions, queue_host,
                                                                          prefix):
    push_upstream(stack, f"{prefix}/app", "1.0", "a")
    manifest = f"quay.io/{prefix}/app:1.0 => {prefix}/app\n".encode()
    deliver(functions, f"{prefix}-warned.txt", manifest, upload(f"{prefix}-warned.txt", manifest))
    queue_host.drain()
    [warned] = records_for(f"{prefix}-warned.txt")
    assert warned["status"] == "succeeded" and warned["manifest"]["lock"] is None
    assert f"no {prefix}-warned.lock" in warned["warnings"][0]["message"]
    env.setenv("LOCK_REQUIRED", "true")
    entrypoints.reset()
    deliver(functions, f"{prefix}-required.txt", manifest, upload(f"{prefix}-required.txt", manifest))
    [refused] = records_for(f"{prefix}-required.txt")
    assert refused["status"] == "invalid" and "LOCK_REQUIRED" in refused["errors"][0]["message"]


def test_the_cli_plans_with_the_lock_beside_the_manifest(env, stack, prefix, tmp_path):
    locked = push_upstream(stack, f"{prefix}/app", "1.0", "a")
    path = tmp_path / f"{prefix}.txt"
    path.write_text(f"quay.io/{prefix}/app:1.0 => {prefix}/app\n")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        assert cli_main(["lock", str(path)], out=out, err=err) == 0
    assert (tmp_path / f"{prefix}.lock").exists() and f"+ {prefix}/app:1.0" in out.getvalue()
    moved = push_upstream(stack, f"{prefix}/app", "1.0", "b")
    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["plan", str(path), "--json"], out=out, err=err) == 0
    plan = json.loads(out.getvalue())
    assert "using " in err.getvalue() and plan["entries"][0]["source_digest"] == locked
    assert plan["entries"][0]["drift"] == {"locked": locked, "upstream": moved}
    out = io.StringIO()
    assert cli_main(["plan", str(path), "--no-lock", "--json"], out=out, err=io.StringIO()) == 0
    unlocked = json.loads(out.getvalue())
    assert unlocked["entries"][0]["source_digest"] == moved and unlocked["warnings"]
    # lock --update proposes the new digest; --check then agrees again
    out = io.StringIO()
    assert cli_main(["lock", str(path), "--update"], out=out, err=io.StringIO()) == 0
    assert f"~ {prefix}/app:1.0  {locked} -> {moved}" in out.getvalue()
    out = io.StringIO()
    assert cli_main(["lock", str(path), "--check"], out=out, err=io.StringIO()) == 0
    path.write_text(path.read_text() + f"quay.io/{prefix}/other:1.0 => {prefix}/other\n")
    out = io.StringIO()
    assert cli_main(["lock", str(path), "--check"], out=out, err=io.StringIO()) == 1
    assert f"{path}:2: " in out.getvalue() and "airlock lock" in out.getvalue()
