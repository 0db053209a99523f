"""Queued runs against the stand-in: at-least-once deliveries, kills, poison, throttling storms, fan-out.

The registered functions are called as the Functions host would call them: the blob trigger with real
``InputStream`` objects (concurrently, too), the queue functions through tests/queue_host.py with real
``QueueMessage`` objects dequeued from Azurite, and the worker also in a subprocess that is SIGKILLed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared import entrypoints
from tests.records import run_records_of
from tests.queue_host import InvocationContext

ROOT = Path(__file__).resolve().parents[2]


def ctx() -> InvocationContext:
    """The ``context`` the worker passes to the queue functions (they declare one)."""
    return InvocationContext("run_worker")

# the seeded upstream images (devstack.oci.CATALOGUE) that a manifest may list
SOURCES = ["library/busybox:1.36", "quay.io/jetstack/cert-manager-controller:v1.15.2",
           "registry.k8s.io/ingress-nginx/controller:v1.11.1", "library/nginx:1.27", "library/nginx:latest"]


@pytest.fixture
def prefix():
    return f"q{uuid.uuid4().hex[:8]}"


def services():
    return entrypoints.services()


def manifest(prefix: str, count: int) -> str:
    return "".join(f"{SOURCES[i % len(SOURCES)]} => {prefix}/img{i}:t{i}\n" for i in range(count))


def records_for(name: str) -> list[dict]:
    return run_records_of(services(), name)


def claim_name(name: str, digest: str) -> str:
    """The claim of a delivery of ``name`` that carries no ETag, of a blob not in the container (these tests
    deliver without uploading): the upload is known by its content hash, and there is no lock."""
    from shared.core.ids import upload_id
    from shared.handlers.runs.start import claim_blob

    return claim_blob(name, upload_id(None, digest), None)


def deliver_blob(functions, name: str, text: str) -> None:
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))


def assert_every_entry_once(record: dict, count: int) -> None:
    assert [e["line"] for e in record["entries"]] == list(range(1, count + 1))
    assert record["summary"]["total"] == count


def work_names(run_id: str, kind: str) -> list[str]:
    s = services()
    return s.store.list_names(s.settings.outcomes_container, f"runs-work/{run_id}/{kind}/")


def tagged_pushes(stack, prefix: str) -> tuple[list[str], object]:
    """``repository:tag`` of every ImagePushed event under ``prefix`` from now on (an index's child
    manifests are pushed without a tag and are left out), and the call that stops collecting."""
    pushed: list[str] = []
    unsubscribe = stack.emulator.events.subscribe(
        lambda events: pushed.extend(f'{e["data"]["target"]["repository"]}:{e["data"]["target"]["tag"]}'
                                     for e in events if e["eventType"].endswith("ImagePushed")
                                     and e["data"]["target"]["repository"].startswith(prefix)
                                     and e["data"]["target"].get("tag")))
    return pushed, unsubscribe


@pytest.fixture
def slow_imports(stack):
    """Imports that take 3 s each on the emulator (its operation stays InProgress that long)."""
    stack.settings(import_latency=3)
    yield
    stack.settings(import_latency=1)


# -- the blob trigger's claim ---------------------------------------------------------------------

def test_five_concurrent_deliveries_of_one_upload_make_one_run(env, seeded, functions, queue_host, prefix):
    text = manifest(prefix, 3)
    name = f"{prefix}.txt"
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def deliver() -> None:
        barrier.wait()
        try:
            deliver_blob(functions, name, text)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    [queued] = records_for(name)
    assert queued["status"] == "queued"
    queue_host.drain()
    assert queue_host.by_kind == {"chunk": 1, "import": 3}  # one run message, then one per import
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == 3
    assert_every_entry_once(record, 3)


def test_an_expired_claim_is_taken_over_under_the_same_run_id(env, seeded, functions, queue_host, prefix):
    """A delivery that crashed after claiming (claim never 'queued') is taken over once its claim expires."""
    import hashlib

    text = manifest(prefix, 1)
    name = f"{prefix}.txt"
    s = services()
    digest = hashlib.sha256(text.encode()).hexdigest()
    crashed = {"owner": "crashed", "run_id": f"crashed-{prefix}", "state": "claimed", "expires_at": time.time() - 1}
    s.store.put_json(s.settings.outcomes_container, claim_name(name, digest), crashed)
    deliver_blob(functions, name, text)
    queue_host.drain()
    [record] = records_for(name)
    assert record["run_id"] == f"crashed-{prefix}" and record["status"] == "succeeded"


def test_a_live_claim_held_elsewhere_makes_the_delivery_retry(env, functions, prefix):
    import hashlib

    env.setenv("RUN_CLAIM_SECONDS", "600")
    text = manifest(prefix, 1)
    name = f"{prefix}.txt"
    s = services()
    digest = hashlib.sha256(text.encode()).hexdigest()
    live = {"owner": "other", "run_id": f"other-{prefix}", "state": "claimed", "expires_at": time.time() + 600}
    s.store.put_json(s.settings.outcomes_container, claim_name(name, digest), live)
    from shared.core.ids import upload_id
    from shared.handlers.runs import claim_and_queue

    with pytest.raises(Exception, match="claimed by another delivery"):
        claim_and_queue(s, name, text.encode(), upload_id(None, digest), wait=0.5)
    assert records_for(name) == []


# -- kills ------------------------------------------------------------------------------------------

def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_worker_killed_mid_run_is_resumed_by_the_redelivery(env, stack, seeded, functions, queue_host, prefix,
                                                           slow_imports):
    """SIGKILL the process running the queue functions after some entries finished; the redelivered
    messages (visibility timeout) resume: every entry once, no finished entry imported again."""
    env.setenv("RUN_LEASE_SECONDS", "15")
    env.setenv("SYNC_CONCURRENCY", "1")
    env.setenv("ACR_PROBE_INTERVAL", "0")
    entrypoints.reset()
    count = 4
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    [queued] = records_for(name)
    run_id = queued["run_id"]
    worker = subprocess.Popen([sys.executable, "-m", "tests.queue_host"], cwd=ROOT,
                              env={**os.environ, "QUEUE_HOST_LEASE": "20"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: work_names(run_id, "entries"), 90, "a finished entry")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finished_before = {int(n.rsplit("/", 1)[1][:6]) for n in work_names(run_id, "entries")}
    assert 1 <= len(finished_before) < count
    [killed] = records_for(name)
    assert killed["status"] == "running"

    pushed, unsubscribe = tagged_pushes(stack, prefix)
    try:
        queue_host.drain(timeout=180)
    finally:
        unsubscribe()
    [record] = records_for(name)
    assert record["status"] == "succeeded", record
    assert_every_entry_once(record, count)
    assert record["summary"]["imported"] == count
    # entries finished before the kill were not imported again (tags are t<index>, lines index + 1)
    assert not {f"{prefix}/img{line - 1}:t{line - 1}" for line in finished_before} & set(pushed)


def killed_cli_sync(env, prefix: str, tmp_path, count: int) -> tuple:
    """A CLI `sync` of ``count`` entries (one import at a time), SIGKILLed once an entry is checkpointed:
    (its manifest path, its record as the kill left it)."""
    env.setenv("SYNC_CONCURRENCY", "1")
    env.setenv("ACR_PROBE_INTERVAL", "0")
    entrypoints.reset()
    path = tmp_path / f"{prefix}.txt"
    path.write_text(manifest(prefix, count))
    cli = subprocess.Popen([sys.executable, "-m", "shared", "sync", str(path), "--json"], cwd=ROOT,
                           env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any(r["entries"] for r in records_for(path.name)), 90, "a checkpointed entry")
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
    [killed] = records_for(path.name)
    assert killed["status"] == "running" and 1 <= len(killed["entries"]) < count
    return path, killed


def test_cli_sync_killed_mid_run_leaves_a_record_that_the_reaper_completes(env, stack, seeded, functions, prefix,
                                                                          tmp_path, slow_imports):
    count = 4
    path, killed = killed_cli_sync(env, prefix, tmp_path, count)
    assert all(e["result"] == "imported" for e in killed["entries"])

    env.setenv("RUN_DEADLINE_SECONDS", "1")
    entrypoints.reset()
    time.sleep(1.5)
    functions["run_reaper"](TimerRequest())
    [record] = records_for(path.name)
    assert record["status"] == "abandoned"
    assert_every_entry_once(record, count)
    done = [e for e in record["entries"] if e["result"] == "imported"]
    rest = [e for e in record["entries"] if e["result"] != "imported"]
    assert len(done) >= len(killed["entries"])
    assert rest and all(e["error"]["retryable"] and e["error"]["code"] == "RunAbandoned" for e in rest)
    functions["run_reaper"](TimerRequest())  # finalised once: a second pass changes nothing
    assert records_for(path.name) == [record]


def test_a_killed_cli_sync_is_carried_on_by_sync_resume(env, stack, seeded, prefix, tmp_path, slow_imports):
    """`sync --resume RUN_ID` after a SIGKILL: refused while the killed process's lease lasts, then the
    same run and record are completed; entries finished before the kill are not imported again."""
    env.setenv("RUN_LEASE_SECONDS", "15")
    count = 4
    path, killed = killed_cli_sync(env, prefix, tmp_path, count)
    run_id = killed["run_id"]
    done_before = {e["target"] for e in killed["entries"]}
    pushed, unsubscribe = tagged_pushes(stack, prefix)

    def resume() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shared", "sync", "--resume", run_id, "--json"], cwd=ROOT,
                              env=dict(os.environ), capture_output=True, text=True, timeout=120)

    try:
        busy = resume()  # the killed process's lease (renewed every 7.5 s) has not run out yet
        assert busy.returncode == 1 and "held by another sync" in busy.stderr and len(busy.stderr.splitlines()) == 1
        time.sleep(16)
        done = resume()
    finally:
        unsubscribe()
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["run_id"] == run_id and record["status"] == "succeeded"
    assert_every_entry_once(record, count)
    assert record["summary"]["imported"] == count
    assert not done_before & set(pushed)  # finished before the kill: not imported again
    assert records_for(path.name) == [{k: v for k, v in record.items() if k not in ("record_url", "recorded")}]
    again = resume()  # final already: printed as it is
    assert again.returncode == 0 and json.loads(again.stdout)["finished_at"] == record["finished_at"]


# -- poison -----------------------------------------------------------------------------------------

def test_poison_message_ends_as_retryable_failed_entries_with_the_reason(env, stack, seeded, functions, queue_host,
                                                                         prefix):
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 2))
    [queued] = records_for(name)
    assert queue_host.once()  # the chunk: planned, and its 2 imports queued
    # each import's first delivery fails on 503s (transient: the message would be redelivered) ...
    stack.emulator.faults.add("status", method="POST", path="/importImage$", status=503, times=1000)
    try:
        assert queue_host.once() and queue_host.once()
    finally:
        stack.emulator.faults.clear()
    assert queue_host.by_kind == {"chunk": 1, "import": 2} and len(queue_host.errors) == 2
    assert records_for(name)[0]["status"] == "running"
    # ... then the host gives up on them and moves them to the poison queue
    messages = list(queue_host.queue.receive_messages(max_messages=32))
    assert len(messages) == 2
    for message in messages:
        functions["run_poison"](QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=1),
                                context=ctx())
        queue_host.queue.delete_message(message)
    [record] = records_for(name)
    assert record["status"] == "failed" and record["retryable"] is True
    assert_every_entry_once(record, 2)
    for entry in record["entries"]:
        assert entry["error"]["retryable"] is True
        assert "ServiceUnavailable" == entry["error"]["code"] and "gave up after" in entry["error"]["message"]


def test_message_past_max_dequeue_is_poison_without_work(env, seeded, functions, queue_host, prefix):
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 1))
    [queued] = records_for(name)
    body = json.dumps({"v": 1, "run_id": queued["run_id"], "chunk": 0, "chunks": 1, "start": 0, "end": 1})
    with pytest.raises(Exception, match="failed"):  # the run failed: recorded, then raised
        functions["run_worker"](QueueMessage(id="m1", body=body.encode(), dequeue_count=6), context=ctx())
    [record] = records_for(name)
    [entry] = record["entries"]
    assert entry["result"] == "failed" and entry["error"]["code"] == "PoisonMessage"
    assert entry["error"]["retryable"] is True and "worker crashed" in entry["error"]["message"]
    functions["run_worker"](QueueMessage(id="m1", body=body.encode(), dequeue_count=7), context=ctx())  # final


def test_an_import_message_for_an_entry_its_chunk_does_not_hold_is_dropped(env, seeded, functions, prefix,
                                                                           caplog):
    """A message names its entry by key within its chunk's range of the reviewed snapshot: it cannot make
    the worker import anything the manifest does not list."""
    from shared.core.runs import ImportMessage

    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 2))
    [queued] = records_for(name)
    body = ImportMessage(queued["run_id"], 0, 1, 0, 1, "000002", "new", "sha256:" + "ab" * 32).to_json()
    functions["run_worker"](QueueMessage(id="m", body=body.encode(), dequeue_count=1), context=ctx())
    assert "which chunk 0 does not hold" in caplog.text
    assert work_names(queued["run_id"], "entries") == [] and work_names(queued["run_id"], "started") == []


def test_malformed_message_is_dropped(env, functions, caplog):
    functions["run_worker"](QueueMessage(id="x", body=b'{"v": 1, "run_id": 3}', dequeue_count=1), context=ctx())
    assert "malformed run message" in caplog.text


# -- imports as messages of their own -------------------------------------------------------------------

def test_a_redelivered_chunk_sends_its_imports_again_and_each_image_is_imported_once(env, stack, seeded, functions,
                                                                                    queue_host, prefix):
    """The chunk is delivered twice before any import ran (its first invocation's success was lost): every
    import is queued twice, and each image is still imported exactly once."""
    count = 3
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    [queued] = records_for(name)
    body = json.dumps({"v": 1, "run_id": queued["run_id"], "chunk": 0, "chunks": 1, "start": 0, "end": count})
    for delivery in (1, 2):
        functions["run_worker"](QueueMessage(id="c", body=body.encode(), dequeue_count=delivery), context=ctx())
    pushed, unsubscribe = tagged_pushes(stack, prefix)
    try:
        queue_host.drain(workers=3)  # the queued chunk message too, then every import (and its duplicates)
    finally:
        unsubscribe()
    assert queue_host.by_kind["import"] >= 2 * count  # duplicates delivered (some more than once: leased)
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == count
    assert_every_entry_once(record, count)
    assert sorted(pushed) == sorted(f"{prefix}/img{i}:t{i}" for i in range(count))  # once each


def test_a_duplicate_import_message_whose_entry_is_leased_elsewhere_is_done_without_work(env, seeded, functions,
                                                                                        queue_host, prefix):
    """Another delivery holds the entry's lease (it is importing): the duplicate ends at once, without an
    import and without raising, so it never drifts toward the poison queue; the holder's message
    finishes the entry."""
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 1))
    assert queue_host.once()  # the chunk: its import is queued
    [message] = list(queue_host.queue.receive_messages(max_messages=1, visibility_timeout=60))
    run_id = records_for(name)[0]["run_id"]
    s = services()
    with s.store.lease(s.settings.outcomes_container, f"runs-work/{run_id}/locks/000001", seconds=15):
        functions["run_worker"](QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=1),
                                context=ctx())
    assert work_names(run_id, "started") == [] and work_names(run_id, "entries") == []
    assert records_for(name)[0]["status"] == "running"
    queue_host.queue.update_message(message, visibility_timeout=0)  # the holder's delivery, as it were
    queue_host.drain()
    assert records_for(name)[0]["status"] == "succeeded"


def test_the_imports_of_one_chunk_run_at_once_on_several_deliveries(env, stack, seeded, functions, queue_host,
                                                                     prefix, slow_imports):
    """One chunk of 4 imports, 4 deliveries at a time (one instance's worker threads): the imports run
    side by side rather than one chunk holding them all, and the run finishes once."""
    count = 4
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], stack.emulator.importer.in_flight())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        queue_host.drain(workers=4, timeout=120)
    finally:
        stop.set()
        sampler.join()
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == count
    assert_every_entry_once(record, count)
    assert peak[0] >= 3, f"at most {peak[0]} imports ran at once"


# -- throttling storms --------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["data-plane", "managed-identity"])
def test_429_storm_ends_as_a_successful_run_once_it_passes(env, stack, seeded, functions, queue_host, prefix, where):
    env.setenv("RUN_MAX_DEQUEUE_COUNT", "10")
    entrypoints.reset()
    queue_host.max_dequeue = 10
    count = 3
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    path = r"^/(v2|acr|oauth2)/" if where == "data-plane" else r"^/msi/token"
    stack.emulator.faults.add("status", path=path, status=429, times=25, retry_after=0)
    try:
        queue_host.drain(timeout=180)
        left = [r for r in stack.emulator.faults.rules]
    finally:
        stack.emulator.faults.clear()
    assert left == []  # the storm was spent
    [record] = records_for(name)
    assert record["status"] == "succeeded", record
    assert record["summary"]["imported"] == count
    assert_every_entry_once(record, count)


def test_throttled_read_back_is_transient_never_a_digest_mismatch(env, stack, seeded, prefix):
    """The read-back after an import hits 429s past every retry: failed, retryable, with the throttle's code."""
    from shared.handlers.sync import SyncEngine

    s = services()
    target = f"{prefix}/rb"

    def storm(item) -> None:  # right before the import: every HEAD of the target answers 429
        stack.emulator.faults.add("status", method="HEAD", path=f"^/v2/{target}/manifests/", status=429,
                                  times=1000, retry_after=0)

    try:
        record = SyncEngine(s, before_import=storm).run(f"library/busybox:1.36 => {target}:1\n", name="rb",
                                                        trigger="cli")
    finally:
        stack.emulator.faults.clear()
    [entry] = record.to_dict()["entries"]
    assert entry["result"] == "failed" and entry["error"]["code"] != "DigestMismatch"
    assert entry["error"]["retryable"] is True and "429" in entry["error"]["message"]
    again = SyncEngine(s).run(f"library/busybox:1.36 => {target}:1\n", name="rb", trigger="cli").to_dict()
    assert again["entries"][0]["action"] == "unchanged"  # the import had landed: the throttle hid it


# -- timers -------------------------------------------------------------------------------------------

def test_resync_with_the_queue_unreachable_records_the_run_for_the_reaper(env, stack, functions, prefix):
    """The queue is unreachable: the re-sync records its run (the count says none of its messages was
    sent, so the reaper sends them) and does not fail: a retried timer would record a second run.
    tests/functions/test_run_repair.py follows such runs to the end."""
    s = services()
    s.store.put_bytes(s.settings.manifests_container, "r.txt", manifest(prefix, 1).encode())
    broken = stack.env["AzureWebJobsStorage"].replace(f":{stack.queue_port}/", ":1/")
    assert broken != stack.env["AzureWebJobsStorage"]
    env.setenv("AzureWebJobsStorage", broken)
    env.setenv("OUTCOMES_CONTAINER", f"outcomes-{uuid.uuid4().hex[:10]}")  # its run is for no other reaper
    entrypoints.reset()
    functions["resync_timer"](TimerRequest())
    [record] = records_for("r.txt")
    assert record["status"] == "queued"
    s = services()
    assert s.store.get_json(s.settings.outcomes_container, f"runs-work/{record['run_id']}/sent.json")["sent"] == 0


# -- fan-out ------------------------------------------------------------------------------------------

def test_fan_out_over_chunks_finalises_once_with_every_entry_once(env, seeded, functions, queue_host, prefix,
                                                                 caplog):
    env.setenv("RUN_CHUNK_ENTRIES", "2")
    entrypoints.reset()
    count = 5
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    [queued] = records_for(name)
    assert queued["chunks"] == 3
    with caplog.at_level(logging.INFO, logger="shared.handlers.runs"):
        queue_host.drain(workers=3)
    assert queue_host.by_kind == {"chunk": 3, "import": count}
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == count
    assert_every_entry_once(record, count)
    finals = [r for r in caplog.records if r.getMessage().startswith(f"run {queued['run_id']} succeeded")]
    assert len(finals) == 1


def test_entries_that_import_nothing_settle_in_one_blob_per_chunk(env, seeded, functions, queue_host, prefix):
    """A re-run where nothing changed: each chunk settles its unchanged entries in ONE create-once blob
    (no blob per entry), and the final record still lists every entry once. A redelivered chunk finds
    them settled and does not settle them again."""
    env.setenv("RUN_CHUNK_ENTRIES", "2")
    entrypoints.reset()
    count = 5
    text = manifest(prefix, count)
    deliver_blob(functions, f"{prefix}-1.txt", text)
    queue_host.drain(workers=3)
    [first] = records_for(f"{prefix}-1.txt")
    assert first["summary"]["imported"] == count

    deliver_blob(functions, f"{prefix}-2.txt", text)
    [queued] = records_for(f"{prefix}-2.txt")
    run_id = queued["run_id"]
    queue_host.drain(workers=3)
    [record] = records_for(f"{prefix}-2.txt")
    assert record["status"] == "succeeded" and record["summary"]["unchanged"] == count
    assert_every_entry_once(record, count)
    assert work_names(run_id, "entries") == []
    settled = work_names(run_id, "settled")
    assert len(settled) == queued["chunks"] == 3
    s = services()
    first_chunk = s.store.get_json(s.settings.outcomes_container, settled[0])
    assert [e["line"] for e in first_chunk["entries"]] == [1, 2]

    # the same chunk delivered again (after its run was final, and as a chunk of a live run)
    body = json.dumps({"v": 1, "run_id": run_id, "chunk": 0, "chunks": 3, "start": 0, "end": 2})
    functions["run_worker"](QueueMessage(id="m", body=body.encode(), dequeue_count=2), context=ctx())
    assert records_for(f"{prefix}-2.txt") == [record]
    from shared.handlers import runs
    from shared.handlers.runs import chunk as chunk_stage, store

    chunk = runs.core.ChunkMessage(run_id, 0, 3, 0, 2)
    retry, known = chunk_stage._run_chunk(s, chunk, last=False, progress=None, dispatch=True)
    assert retry is False and sorted(known) == ["000001", "000002"]  # both final already: nothing to do
    assert s.store.get_json(s.settings.outcomes_container, settled[0]) == first_chunk
    assert work_names(run_id, "entries") == []

    # a delivery that finds the chunk's blob written by an earlier one (with line 1 only): line 1 keeps
    # the earlier outcome, line 2 is settled on its own, and the record lists each once
    third = runs.create_run(s, text, name=f"{prefix}-3.txt", trigger="http")
    earlier = {**first_chunk["entries"][0], "duration_seconds": 123.0}
    assert s.store.create_once(s.settings.outcomes_container, store._settled_blob(third["run_id"], 0),
                               json.dumps({"chunk": 0, "entries": [earlier]}).encode())
    final = runs.execute_chunk(s, runs.core.ChunkMessage(third["run_id"], 0, 3, 0, 2), verdict="last")
    assert final is None  # the run has 3 chunks; only one ran
    assert [n.rsplit("/", 1)[1] for n in work_names(third["run_id"], "entries")] == ["000002.json"]
    done = store._final_entries(s, third["run_id"])
    assert sorted(done) == ["000001", "000002"] and done["000001"]["duration_seconds"] == 123.0  # by entry key
    assert done["000002"]["result"] == "unchanged"


def test_a_queued_run_whose_message_never_comes_is_abandoned(env, functions, prefix):
    from shared.handlers.runs import create_run

    record = create_run(services(), manifest(prefix, 2), name=f"{prefix}.txt", trigger="http")  # never enqueued
    functions["run_reaper"](TimerRequest())
    assert records_for(f"{prefix}.txt")[0]["status"] == "queued"  # within the deadline: left alone
    env.setenv("RUN_DEADLINE_SECONDS", "1")
    entrypoints.reset()
    time.sleep(1.5)
    functions["run_reaper"](TimerRequest())
    [abandoned] = records_for(f"{prefix}.txt")
    assert abandoned["run_id"] == record["run_id"] and abandoned["status"] == "abandoned"
    assert_every_entry_once(abandoned, 2)
    assert {e["error"]["code"] for e in abandoned["entries"]} == {"RunAbandoned"}


def test_a_snapshot_that_no_longer_validates_ends_the_run_once(env, functions, queue_host, prefix):
    """The allow-list changed between queueing and running: the run fails at once with the reason
    (retrying cannot help), and the invocation raises after recording it."""
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 1))
    env.setenv("SOURCE_REGISTRY_ALLOWLIST", "ghcr.io")
    entrypoints.reset()
    queue_host.drain()
    [record] = records_for(name)
    assert record["status"] == "failed" and "no longer validates" in record["errors"][0]["message"]
    assert queue_host.deliveries == 2  # the raise after recording, then a redelivery that finds it final


def test_concurrent_deliveries_of_one_run_parse_its_snapshot_once(env, monkeypatch, prefix):
    """Every chunk and import message of a run needs the snapshot's entries: deliveries arriving together
    in one process share one parse (the rest wait for it), and other settings validate it afresh."""
    from shared.handlers import runs
    from shared.handlers.runs import store

    calls = []
    real = store.check_manifest

    def counted(data, settings, *args, **kwargs):
        calls.append(settings)
        time.sleep(0.2)  # a parse long enough for every other delivery to arrive meanwhile
        return real(data, settings, *args, **kwargs)

    monkeypatch.setattr(store, "check_manifest", counted)  # the snapshot parse
    record = runs.create_run(services(), manifest(prefix, 3), name=f"{prefix}.txt", trigger="http")
    calls.clear()
    results: list = [None] * 8

    def deliver(i: int) -> None:
        results[i] = store._snapshot_entries(services(), record["run_id"])

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(r == results[0] for r in results) and [e.line for e in results[0]] == [1, 2, 3]
    results[0].clear()  # a caller's copy: changing it changes nothing for the next one
    assert len(store._snapshot_entries(services(), record["run_id"])) == 3 and len(calls) == 1
    env.setenv("SOURCE_REGISTRY_ALLOWLIST", "ghcr.io")
    entrypoints.reset()  # new settings: validated again, and it no longer validates
    with pytest.raises(runs.SnapshotInvalid):
        store._snapshot_entries(services(), record["run_id"])
    assert len(calls) == 2


def test_a_chunk_leased_by_another_worker_is_left_to_it(env, seeded, functions, queue_host, prefix):
    """Two deliveries of one chunk at once (a visibility timeout ran out under a live worker): the second
    finds the chunk's lease held, does nothing and raises so its message comes back later."""
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, 1))
    [queued] = records_for(name)
    s = services()
    body = json.dumps({"v": 1, "run_id": queued["run_id"], "chunk": 0, "chunks": 1, "start": 0, "end": 1})
    with s.store.lease(s.settings.outcomes_container, f"runs-work/{queued['run_id']}/locks/00000", seconds=15):
        with pytest.raises(Exception, match="being worked on elsewhere"):
            functions["run_worker"](QueueMessage(id="m", body=body.encode(), dequeue_count=1), context=ctx())
    assert records_for(name)[0]["status"] == "queued" and work_names(queued["run_id"], "entries") == []
    functions["run_worker"](QueueMessage(id="m", body=body.encode(), dequeue_count=2), context=ctx())
    assert records_for(name)[0]["status"] == "running"  # planned: its import is queued
    queue_host.drain()
    assert records_for(name)[0]["status"] == "succeeded"


def test_storage_calls_of_many_messages_at_once_reuse_pooled_connections(env, caplog):
    """An instance runs up to 24 run messages, each with pool threads of its own: 24 concurrent storage
    calls keep their connections (requests' default pool of 10 discarded most of them, so each such
    call opened a new connection)."""
    from concurrent.futures import ThreadPoolExecutor

    s = services()
    container = s.settings.outcomes_container
    names = [f"pool-test/{uuid.uuid4().hex}/{i}.json" for i in range(24)]
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        with ThreadPoolExecutor(max_workers=24) as pool:
            list(pool.map(lambda n: s.store.put_json(container, n, {"n": n}), names))
            list(pool.map(lambda n: s.store.get_json(container, n), names))
    assert "Connection pool is full" not in caplog.text
