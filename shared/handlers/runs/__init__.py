"""Queued runs: start a run (every trigger), execute its chunks (queue function, CLI), finalise once, reap.

Flow: a trigger calls ``queue_run``: the manifest is validated, its snapshot and a ``queued`` record
are stored, and one message per chunk (``RUN_CHUNK_ENTRIES`` entries) goes to ``RUNS_QUEUE``. The
queue function calls ``on_run_message`` for each delivery. A chunk message plans its entries, settles
those that import nothing, and sends one import message per entry to import (``RUNS_QUEUE`` again);
the import message imports that entry. Whichever delivery gives a chunk's last entry its final
outcome completes the chunk, and the one that completes the last chunk finalises the run. The CLI
calls ``run_in_process``: the same chunk code in this process, importing in place of dispatching.
The decisions (states, chunks, messages, deliveries, final record) are in
``shared.core.runs``; blobs and queues are adapters; this module orchestrates.

Exactly-once effects from at-least-once deliveries, all in ``OUTCOMES_CONTAINER``:

- ``runs-work/<id>/locks/<chunk>``       a renewed blob lease: one worker per chunk at a time
- ``runs-work/<id>/locks/<key>``         the same for one entry's import message
- ``runs-work/<id>/started/<line>.json`` written before an import: a resumed chunk that finds the planned
                                          digest in place reports ``imported`` (not ``unchanged``), not twice
- ``runs-work/<id>/entries/<line>.json`` an entry's final outcome, created once: never imported again
- ``runs-work/<id>/settled/<chunk>.json`` the final outcomes of a chunk's entries that import nothing
                                          (unchanged, plan errors), created once: one blob, not one each
- ``runs-work/<id>/tries/<line>.json``   the last transient failure of an entry (the reason if it ends poisoned)
- ``runs-work/<id>/chunks/<chunk>.json`` a chunk's outcomes, created once (by the chunk or by its last
                                          import) when all its entries are final
- ``runs-work/<id>/final.json``          created once by whoever finalises (last chunk, or the reaper)
- ``active/<id>``                         runs not yet final, for the reaper
- ``runs/<id>.json``                      the record: conditional (ETag) merges while running, then final
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from ...telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # pool threads keep the run id
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Optional

from ...core import runs as core
from ...core.manifest import Entry
from ...core.names import blob_segment
from ...core.outcome import RESULT_FAILED, RESULT_IMPORTED, EntryOutcome
from ...core.plan import Action, Plan, PlanItem, decide
from ...errors import AirlockError, ConflictError, TransientError
from ...telemetry import RunContext, chunk_scope, report_run, traceparent
from .. import records, runindex
from ...core.ids import new_run_id
from ..sync import Progress, SyncEngine, check_manifest

log = logging.getLogger(__name__)

WORK = "runs-work"
ACTIVE = "active/"
CHECKPOINT_EVERY = 2.0  # seconds between record merges while a chunk runs


class SnapshotInvalid(AirlockError):
    """The stored manifest no longer validates (settings changed since it was queued)."""

    code = "SnapshotInvalid"


class RunFailed(AirlockError):
    """Raised after a failed run was recorded, so the invocation shows as failed."""

    code = "RunFailed"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _work(run_id: str, *parts: str) -> str:
    return "/".join((WORK, run_id) + parts)


def _key(entry: Entry) -> str:
    return core.entry_key(entry.line, entry.target_tag if entry.policy else None)


def _entry_blob(run_id: str, key: str) -> str:
    return _work(run_id, "entries", f"{key}.json")


def _settled_blob(run_id: str, chunk: int) -> str:
    return _work(run_id, "settled", f"{chunk:05d}.json")


@dataclass
class _Entries:
    """What ``SyncEngine.plan`` needs of a manifest: its entries (a chunk's)."""

    entries: list


# -- records ------------------------------------------------------------------------------------

def _update_record(services, run_id: str, change: Callable[[dict], Optional[dict]]) -> Optional[dict]:
    """Read-modify-write of the record with its ETag (another chunk may write at the same time).
    ``change`` returns the new document, or None to leave it. Terminal records are never changed."""
    container = services.settings.outcomes_container
    name = records.record_name(run_id)
    for attempt in range(50):
        if attempt:  # another writer won the race: back off a little (jittered) before reading again
            time.sleep(random.uniform(0, min(1.0, 0.05 * attempt)))
        document, etag = services.store.get_json_etag(container, name)
        if document is None or core.is_terminal(document.get("status")):
            return document
        updated = change(dict(document))
        if updated is None:
            return document
        if services.store.put_json_if(container, name, updated, etag):
            if updated.get("status") != document.get("status"):
                runindex.update(services, updated)  # the run index follows status changes
            return updated
    raise TransientError(f"record of run {run_id} kept changing; retrying", code="RecordContention")


def _merge_entries(document: dict, outcomes: list[dict]) -> dict:
    merged = core.merge_entries(outcomes, document.get("entries") or [])
    document["entries"] = core.in_record_order(document, merged.values())
    document["summary"] = core.summarise(document["entries"])
    document["updated_at"] = _now().isoformat()
    return document


class _Checkpointer:
    """Merges finished entries into the record at most every CHECKPOINT_EVERY seconds (and on flush).

    Only entries that did something reach the record while the run goes on (imports, failures):
    unchanged entries are settled in one blob per chunk and join the record when it is finalised, so
    a checkpoint stays small however large the manifest. A checkpoint that loses the ETag race many
    times (many chunks merging at once) is kept for the next one: the outcomes are durable in their
    blobs already, and the final record is built from those, never from the checkpoints."""

    def __init__(self, services, run_id: str):
        self._services = services
        self._run_id = run_id
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def add(self, outcome: dict) -> None:
        with self._lock:
            self._pending.append(outcome)
            due = time.monotonic() - self._last >= CHECKPOINT_EVERY
        if due:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._last = time.monotonic()
        if not pending:
            return
        try:
            _update_record(self._services, self._run_id, lambda d: _merge_entries(d, pending))
        except TransientError as exc:
            if not final:
                with self._lock:
                    self._pending[:0] = pending  # try again with the next checkpoint
            log.warning("run %s: checkpoint of %d entries deferred (%s)%s", self._run_id, len(pending), exc.code,
                        "; they are in the final record" if final else "")


# -- starting runs --------------------------------------------------------------------------------

def create_run(services, text, *, name: str, trigger: str, run_id: Optional[str] = None,
               fan_out: bool = True) -> dict:
    """Validate; store the snapshot and a ``queued`` record (or an ``invalid`` one). Returns the record.
    With a ``run_id`` whose record exists already (a taken-over claim), that record is returned."""
    s = services.settings
    manifest = check_manifest(text, s)
    lines = len(manifest.entries) + len(manifest.policies)  # a policy line counts once
    policies: list[dict] = []
    if manifest.ok and manifest.policies:
        # tag policies are resolved once, here: every chunk expands the snapshot with the same tags
        manifest, policies = SyncEngine(services).resolve_policies(manifest)
    run_id = run_id or new_run_id()
    now = _now().isoformat()
    count = len(manifest.entries)
    chunks = len(core.chunk_ranges(count, s.run_chunk_entries if fan_out else max(1, count)))
    record = {"run_id": run_id, "kind": "sync", "trigger": trigger, "status": core.QUEUED,
              "manifest": {"name": name, "sha256": manifest.content_hash, "entries": lines}, "work_entries": count,
              "registry": s.registry_name, "queued_at": now, "started_at": None, "finished_at": None,
              "updated_at": now, "duration_seconds": None, "chunks": chunks, "summary": core.summarise([]),
              "retryable": False, "errors": [], "dockerhub_ratelimit_remaining": None, "entries": []}
    if policies:
        record["policies"] = policies
    if not manifest.ok:
        record.update(status=core.INVALID, errors=[p.to_dict() for p in manifest.errors], chunks=0,
                      finished_at=now, duration_seconds=0.0)
    data = text.encode() if isinstance(text, str) else bytes(text)
    if record["status"] == core.QUEUED:
        services.store.put_bytes(s.outcomes_container, _work(run_id, "manifest.txt"), data)
        services.store.create_once(s.outcomes_container, ACTIVE + run_id)
    if not services.store.put_json_if(s.outcomes_container, records.record_name(run_id), record, None):
        return records.load(services, run_id)
    runindex.update(services, record)
    return record


def _work_count(record: dict) -> int:
    """Entries the run works on: its lines, with each tag policy expanded into its resolved tags."""
    return record.get("work_entries", record["manifest"]["entries"])


def enqueue(services, record: dict) -> None:
    """One message per chunk. A repeated send (a retried trigger) only duplicates idempotent work."""
    s = services.settings
    count = _work_count(record)
    ranges = core.chunk_ranges(count, s.run_chunk_entries)
    for index, (start, end) in enumerate(ranges):
        message = core.ChunkMessage(record["run_id"], index, len(ranges), start, end)
        services.runs_queue.send(message.to_json())
    log.info("run %s of %s queued: %d entries in %d message(s)", record["run_id"], record["manifest"]["name"],
             count, len(ranges))


def queue_run(services, text, *, name: str, trigger: str, run_id: Optional[str] = None) -> dict:
    """What every trigger that starts imports does: validate, store, enqueue; returns the record."""
    record = create_run(services, text, name=name, trigger=trigger, run_id=run_id)
    if record["status"] == core.QUEUED:
        enqueue(services, record)
    elif record["status"] == core.INVALID:
        log.info("manifest %s is invalid (%d error(s)); recorded as run %s", name, len(record["errors"]),
                 record["run_id"])
    return record


def run_in_process(services, text, *, name: str, trigger: str = "cli",
                   progress: Optional[Progress] = None) -> dict:
    """The CLI's sync: the same checkpointed record, executed here as one chunk (pipelines block on it)."""
    record = create_run(services, text, name=name, trigger=trigger, fan_out=False)
    if record["status"] != core.QUEUED:
        return record
    count = _work_count(record)
    message = core.ChunkMessage(record["run_id"], 0, 1, 0, count)
    final = execute_chunk(services, message, verdict="last", progress=progress)
    return final or records.load(services, record["run_id"])


def resume_in_process(services, run_id: str, *, progress: Optional[Progress] = None) -> dict:
    """Carry on a CLI sync that was killed: the same run, snapshot and record; entries with a final
    outcome are kept, an import that was started and landed is reported imported without a second one.
    A run that is final already is returned as it is."""
    record = records.load(services, run_id)
    if core.is_terminal(record.get("status")):
        return record
    if record.get("trigger") != "cli" or record.get("chunks") != 1:
        raise AirlockError(f"run {run_id} was queued by {record.get('trigger')!r}: its queue messages carry it on "
                           "(the CLI resumes only its own syncs)", code="NotResumable")
    message = core.ChunkMessage(run_id, 0, 1, 0, _work_count(record))
    try:
        final = execute_chunk(services, message, verdict="last", progress=progress)
    except TransientError as exc:
        if exc.code != "ChunkLeased":
            raise
        raise AirlockError(f"run {run_id} is held by another sync, or by one killed less than RUN_LEASE_SECONDS="
                           f"{services.settings.run_lease_seconds}s ago; try again then", code="RunBusy") from None
    return final or records.load(services, run_id)


# -- executing chunks ------------------------------------------------------------------------------

def on_run_message(services, body: bytes | str, dequeue_count: int) -> Optional[dict]:
    """One delivery of a chunk message (the queue function). Raises for the runtime to redeliver (a
    transient failure with deliveries left, a chunk leased elsewhere) and after recording a failed run."""
    try:
        message = core.parse_message(body)
    except ValueError as exc:
        log.error("dropping a malformed run message (it can never succeed): %s", exc)
        return None
    verdict = core.delivery_verdict(dequeue_count, services.settings.run_max_dequeue)
    if isinstance(message, core.ImportMessage):
        final = execute_import(services, message, verdict=verdict, dequeue_count=dequeue_count)
    else:
        final = execute_chunk(services, message, verdict=verdict, dequeue_count=dequeue_count, dispatch=True)
    if final is not None and final["status"] == core.FAILED:
        raise RunFailed(f"run {final['run_id']} failed: {final['summary']['failed']} of "
                        f"{final['summary']['total']} entries (recorded)")
    return final


def on_poison_message(services, body: bytes | str, dequeue_count: int) -> Optional[dict]:
    """A message the host gave up on (RUNS_QUEUE-poison): its unfinished entries end failed, retryable."""
    try:
        message = core.parse_message(body)
    except ValueError as exc:
        log.error("dropping a malformed poison message: %s", exc)
        return None
    if isinstance(message, core.ImportMessage):
        return execute_import(services, message, verdict="poison", dequeue_count=dequeue_count)
    return execute_chunk(services, message, verdict="poison", dequeue_count=dequeue_count, dispatch=True)


def _run_context(record: dict) -> RunContext:
    return RunContext(record["run_id"], manifest=(record.get("manifest") or {}).get("name", ""),
                      trigger=record.get("trigger", ""), kind=record.get("kind", "sync"))


def _live_record(services, run_id: str, what: str, dequeue_count: int) -> Optional[dict]:
    """The record of a run a message belongs to, or None (logged) when there is nothing to do: the run
    is unknown (the message is dropped) or final already."""
    try:
        record = records.load(services, run_id)
    except AirlockError:
        log.warning("message of %s for unknown run %s; dropping it", what, run_id)
        return None
    if core.is_terminal(record.get("status")):
        log.info("run %s is already %s; delivery %d of %s has nothing to do", run_id, record["status"],
                 dequeue_count, what)
        return None
    return record


def execute_chunk(services, message: core.ChunkMessage, *, verdict: str, dequeue_count: int = 1,
                  progress: Optional[Progress] = None, dispatch: bool = False) -> Optional[dict]:
    """Run (or resume) one chunk; returns the final record when this call finalised the run. With
    ``dispatch`` (queued runs) each entry to import is sent as an import message; without (the CLI) the
    chunk imports them itself."""
    record = _live_record(services, message.run_id, f"chunk {message.chunk}", dequeue_count)
    if record is None:
        return None
    with chunk_scope(_run_context(record), chunk=message.chunk, chunks=message.chunks, delivery=dequeue_count,
                     settings=services.settings):
        return _execute_chunk(services, message, record, verdict=verdict, dequeue_count=dequeue_count,
                              progress=progress, dispatch=dispatch)


def _execute_chunk(services, message: core.ChunkMessage, record: dict, *, verdict: str, dequeue_count: int,
                   progress: Optional[Progress], dispatch: bool) -> Optional[dict]:
    s = services.settings
    run_id = message.run_id
    if verdict == "poison":
        try:
            _poison_chunk(services, message, dequeue_count)
        except SnapshotInvalid as exc:
            return _end_now(services, run_id, core.FAILED, exc.message)
        return _maybe_finalise(services, run_id, message.chunks)
    try:
        lease = services.store.lease(s.outcomes_container, _work(run_id, "locks", f"{message.chunk:05d}"),
                                     seconds=s.run_lease_seconds, renew=True)
        lease.__enter__()
    except ConflictError:
        raise TransientError(f"chunk {message.chunk} of run {run_id} is being worked on elsewhere; "
                             "redelivering later", code="ChunkLeased") from None
    try:
        if _start(dict(record), deadline=s.run_deadline) is not None:  # the record as just read: no write due
            _update_record(services, run_id, lambda d: _start(d, deadline=s.run_deadline))
        retry, known = _run_chunk(services, message, last=verdict == "last", progress=progress, dispatch=dispatch)
    except SnapshotInvalid as exc:  # permanent: retrying cannot help, so the run ends now
        return _end_now(services, run_id, core.FAILED, exc.message)
    finally:
        lease.__exit__(None, None, None)
    if retry:
        raise TransientError(f"chunk {message.chunk} of run {run_id} has entries that failed on transient "
                             f"errors (delivery {dequeue_count} of {s.run_max_dequeue}); redelivering",
                             code="TransientRunFailure")
    if not _complete_chunk(services, message, known=known):
        return None  # imports of this chunk are queued: the last one to finish completes the chunk
    return _maybe_finalise(services, run_id, message.chunks)


def _start(document: dict, *, deadline: float) -> Optional[dict]:
    """A chunk starts: the record becomes running; None (no write) when it is running already and
    marked progress recently (core.progress_mark_due)."""
    now = _now()
    if document.get("status") == core.RUNNING and document.get("started_at") and not core.progress_mark_due(
            document.get("updated_at"), now, deadline):
        return None
    document["status"] = core.transition(document["status"], "start")
    document["started_at"] = document.get("started_at") or now.isoformat()
    document["updated_at"] = now.isoformat()
    return document


_SNAPSHOTS_KEPT = 8  # runs whose parsed snapshot one process keeps
_snapshots: "OrderedDict[tuple[str, str], tuple[object, list[Entry]]]" = OrderedDict()
_snapshot_locks: dict[tuple[str, str], threading.Lock] = {}
_snapshots_lock = threading.Lock()


def _snapshot_entries(services, run_id: str, record: Optional[dict] = None) -> list[Entry]:
    """The run's work entries: its snapshot, validated against the current settings, with each tag
    policy expanded into the tags it resolved to when the run was queued.

    Every chunk and every import message needs them, so a process parses a snapshot once and keeps
    the result for the settings it was validated against, keyed by the snapshot's content hash (the
    blob is read each time, a parse is not redone): 20 chunk messages of a 1,000-entry run arriving at
    once wait for one parse instead of running 20 at once on one interpreter."""
    data = services.store.get_bytes(services.settings.outcomes_container, _work(run_id, "manifest.txt"))
    if data is None:
        raise TransientError(f"manifest snapshot of run {run_id} is missing", code="SnapshotMissing")
    key = (run_id, hashlib.sha256(data).hexdigest())
    with _snapshots_lock:
        lock = _snapshot_locks.setdefault(key, threading.Lock())
    with lock:
        with _snapshots_lock:
            found = _snapshots.get(key)
            if found is not None and found[0] is services.settings:
                _snapshots.move_to_end(key)
                return list(found[1])
        try:
            entries = _parse_snapshot(services, run_id, data, record)
        except BaseException:
            with _snapshots_lock:
                if key not in _snapshots:
                    _snapshot_locks.pop(key, None)
            raise
        with _snapshots_lock:
            _snapshots[key] = (services.settings, entries)
            while len(_snapshots) > _SNAPSHOTS_KEPT:
                _snapshot_locks.pop(_snapshots.popitem(last=False)[0], None)
    return list(entries)


def _parse_snapshot(services, run_id: str, data: bytes, record: Optional[dict]) -> list[Entry]:
    manifest = check_manifest(data, services.settings)
    if not manifest.ok:  # settings changed since the run was queued (allow-list, limits)
        raise SnapshotInvalid(f"manifest snapshot of run {run_id} no longer validates: "
                              + "; ".join(str(p) for p in manifest.errors[:5]))
    if not manifest.policies:
        return list(manifest.entries)
    # the tags each policy resolved to when the run was queued (the record), in the same order
    record = record if record is not None else records.load(services, run_id)
    resolved = {doc["line"]: doc for doc in record.get("policies") or []}
    added = [Entry(policy.line, replace(policy.source, tag=r["tag"]), policy.target_repository, r["tag"],
                   policy.policy.text)
             for policy in manifest.policies for r in (resolved.get(policy.line) or {}).get("resolved", [])]
    return sorted([*manifest.entries, *added], key=lambda e: e.line)


def _final_entries(services, run_id: str, keys: Optional[set[str]] = None,
                   chunks: Optional[set[int]] = None) -> dict[str, dict]:
    """Final entry outcomes of the run by key (only those of ``keys`` / ``chunks`` when given): the
    per-entry blobs (imports, and anything settled alone), then the chunks' settled blobs (an entry in
    both keeps its per-entry outcome). One listing per kind, then a read each."""
    container = services.settings.outcomes_container
    names = services.store.list_names(container, _work(run_id, "entries") + "/")
    if keys is not None:
        names = [n for n in names if n.rsplit("/", 1)[1][:-len(".json")] in keys]
    settled = services.store.list_names(container, _work(run_id, "settled") + "/")
    if chunks is not None:
        settled = [n for n in settled if int(n.rsplit("/", 1)[1][:5]) in chunks]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="ckpt") as pool:
        documents = list(pool.map(lambda n: services.store.get_json(container, n), names))
        batches = list(pool.map(lambda n: services.store.get_json(container, n), settled))
    found = {core.outcome_key(d): d for d in documents if d}
    for batch in batches:
        for entry in (batch or {}).get("entries") or []:
            if keys is None or core.outcome_key(entry) in keys:
                found.setdefault(core.outcome_key(entry), entry)
    return found


def _run_chunk(services, message: core.ChunkMessage, *, last: bool, progress: Optional[Progress],
               dispatch: bool = False) -> tuple[bool, dict[str, dict]]:
    """Plan the chunk's unfinished entries and import them (``dispatch``: send each as an import message);
    returns (an entry failed on something transient and the chunk must be delivered again, the final
    outcomes known to this delivery by key)."""
    s = services.settings
    container = s.outcomes_container
    run_id = message.run_id
    entries = _snapshot_entries(services, run_id)[message.start:message.end]
    final = _final_entries(services, run_id, {_key(e) for e in entries}, {message.chunk})
    todo = [e for e in entries if _key(e) not in final]
    checkpoint = _Checkpointer(services, run_id)
    lock = threading.Lock()
    transient: list[str] = []

    def settle(outcome: dict) -> None:
        """Keep a final outcome once (the first one written wins), or note a transient failure."""
        kept = _settle(services, run_id, outcome, last=last)
        key = core.outcome_key(outcome)
        with lock:
            if kept is None:
                transient.append(key)
            else:
                final[key] = kept
        if kept is not None:
            checkpoint.add(kept)

    def settle_quiet(outcomes: list[dict]) -> None:
        """Entries that import nothing (unchanged, plan errors): final ones in ONE create-once blob for
        the chunk; only failures go to the record before it is final."""
        finished = [o for o in outcomes if core.is_final_entry(o, last_delivery=last)]
        for outcome in outcomes:
            if not core.is_final_entry(outcome, last_delivery=last):
                settle(outcome)  # a transient plan failure with deliveries left: noted, not final
        if not finished:
            return
        body = json.dumps({"chunk": message.chunk, "entries": finished}).encode()
        if services.store.create_once(container, _settled_blob(run_id, message.chunk), body):
            kept = finished
        else:  # an earlier delivery settled this chunk's quiet entries: its outcomes win
            earlier = {core.outcome_key(o): o for o in
                       (services.store.get_json(container, _settled_blob(run_id, message.chunk)) or {})
                       .get("entries") or []}
            kept = [earlier[core.outcome_key(o)] for o in finished if core.outcome_key(o) in earlier]
            rest = [o for o in finished if core.outcome_key(o) not in earlier]
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="settle") as pool:
                list(pool.map(settle, rest))  # not in it: settled one by one, as any entry
        with lock:
            for outcome in kept:
                final[core.outcome_key(outcome)] = outcome
        for outcome in kept:
            if outcome.get("result") == RESULT_FAILED:
                checkpoint.add(outcome)

    def before_import(item: PlanItem) -> None:
        services.store.put_json(container, _work(run_id, "started", f"{_key(item.entry)}.json"), item.to_dict())

    def on_progress(event, done, total, outcome) -> None:
        if outcome is not None:
            settle(outcome.to_dict())
        if progress:
            progress(event, done, total, outcome)

    dispatched: list[PlanItem] = []
    parent = traceparent() if dispatch else None  # the imports join this delivery's trace

    def send(item: PlanItem) -> None:
        """A planned import goes to the queue at once (dispatch): instances start on it while the rest
        of the chunk is still being planned."""
        if item.needs_import:
            _dispatch(services, message, item, parent)
            dispatched.append(item)

    if todo:
        engine = SyncEngine(services, before_import=before_import)
        plan = engine.plan(_Entries(todo), progress, on_item=send if dispatch else None)
        started = set(services.store.list_names(container, _work(run_id, "started") + "/"))
        resumed = [_resumed(services, run_id, item) if _work(run_id, "started", f"{_key(item.entry)}.json")
                   in started else None for item in plan.items]
        for item, outcome in zip(plan.items, resumed):
            if outcome is not None:
                settle(outcome)
        rest = [item for item, outcome in zip(plan.items, resumed) if outcome is None]
        plan.items = [item for item in rest if not item.needs_import] if dispatch else rest
        outcomes = engine.apply(plan, on_progress)
        # imports were settled as they finished; unchanged entries and plan errors are settled here
        settle_quiet([o.to_dict() for o in outcomes if not o.item.needs_import])
        if dispatched:
            log.info("run %s chunk %d: %d import(s) queued", run_id, message.chunk, len(dispatched))
        if engine._dockerhub_remaining is not None:
            remaining = engine._dockerhub_remaining
            _update_record(services, run_id, lambda d: {**d, "dockerhub_ratelimit_remaining": remaining})
    checkpoint.flush(final=True)
    return bool(transient), final


def _settle(services, run_id: str, outcome: dict, *, last: bool) -> Optional[dict]:
    """Keep an entry's final outcome once (the first one written wins; returns the kept one), or note a
    transient failure for the poison handler's reason (returns None: the entry is not final yet)."""
    container = services.settings.outcomes_container
    key = core.outcome_key(outcome)
    if not core.is_final_entry(outcome, last_delivery=last):
        services.store.put_json(container, _work(run_id, "tries", f"{key}.json"), outcome)
        return None
    if not services.store.create_once(container, _entry_blob(run_id, key), json.dumps(outcome).encode()):
        outcome = services.store.get_json(container, _entry_blob(run_id, key)) or outcome
    return outcome


def _dispatch(services, message: core.ChunkMessage, item: PlanItem, parent: Optional[str]) -> None:
    """The import message of one planned import. A redelivered chunk sends again the ones still
    unfinished: a duplicate finds its entry final (or leased) and does nothing twice. Sent before the
    chunk's quiet entries are settled: safe, as the chunk and each import check completeness after
    their own write, so whichever writes last sees every outcome."""
    services.runs_queue.send(core.ImportMessage(
        message.run_id, message.chunk, message.chunks, message.start, message.end, _key(item.entry),
        item.action.value, item.source_digest, item.target_digest, parent).to_json())


def _complete_chunk(services, message, *, known: Optional[dict[str, dict]] = None,
                    entries: Optional[list[Entry]] = None) -> bool:
    """Create the chunk's outcomes blob once every entry of it is final; True when the chunk is complete.
    ``known``: final outcomes this caller holds already (read from storage only when they fall short)."""
    container = services.settings.outcomes_container
    name = _work(message.run_id, "chunks", f"{message.chunk:05d}.json")
    if entries is None:
        entries = _snapshot_entries(services, message.run_id)[message.start:message.end]
    keys = {_key(e) for e in entries}
    final = known if known is not None and keys <= known.keys() else \
        _final_entries(services, message.run_id, keys, {message.chunk})
    if not keys <= final.keys():
        return False
    services.store.create_once(container, name, json.dumps([final[_key(e)] for e in entries]).encode())
    return True


def _resumed(services, run_id: str, item: PlanItem) -> Optional[dict]:
    """An entry whose import a previous delivery started: when the planned digest is now in place, it
    was imported (by that delivery), and is reported so without importing it again."""
    if item.action is not Action.UNCHANGED:
        return None
    container = services.settings.outcomes_container
    prior = services.store.get_json(container, _work(run_id, "started", f"{_key(item.entry)}.json"))
    if not prior or prior.get("source_digest") != item.source_digest:
        return None
    planned = PlanItem(item.entry, Action(prior["action"]), item.source_digest, prior.get("target_digest"))
    return EntryOutcome(planned, RESULT_IMPORTED, attempts=1, target_digest_after=item.target_digest).to_dict()


# -- executing imports -----------------------------------------------------------------------------

def execute_import(services, message: core.ImportMessage, *, verdict: str,
                   dequeue_count: int = 1) -> Optional[dict]:
    """Import one planned entry (or resume it); returns the final record when this call finalised the run."""
    record = _live_record(services, message.run_id, f"the import of entry {message.key}", dequeue_count)
    if record is None:
        return None
    with chunk_scope(_run_context(record), chunk=message.chunk, chunks=message.chunks, delivery=dequeue_count,
                     settings=services.settings, parent=message.traceparent, entry=message.key):
        try:
            entries = _snapshot_entries(services, message.run_id, record)[message.start:message.end]
        except SnapshotInvalid as exc:
            return _end_now(services, message.run_id, core.FAILED, exc.message)
        entry = next((e for e in entries if _key(e) == message.key), None)
        if entry is None:
            log.error("run %s: import message for entry %s, which chunk %d does not hold; dropping it",
                      message.run_id, message.key, message.chunk)
            return None
        item = PlanItem(entry, Action(message.action), message.source_digest, message.target_digest)
        if verdict == "poison":
            [outcome] = _poison_entries(services, message.run_id, message.chunk, [entry], dequeue_count)
            log.error("run %s entry %s: poison import message after %d deliveries; recorded as %s", message.run_id,
                      message.key, dequeue_count, outcome.get("result"))
        else:
            _import_entry(services, message, item, last=verdict == "last", dequeue_count=dequeue_count)
        if not _complete_chunk(services, message, entries=entries):
            return None
        return _maybe_finalise(services, message.run_id, message.chunks)


def _import_entry(services, message: core.ImportMessage, item: PlanItem, *, last: bool, dequeue_count: int) -> None:
    """Under the entry's lease: nothing when it is final already; the import, or the finding that an
    earlier delivery's import landed (its "started" marker and the planned digest in place). A lease
    held elsewhere means another delivery of this import is running: this duplicate is done (the holder
    settles the entry, or its own message comes back if it dies), so it never counts toward poison."""
    s = services.settings
    container = s.outcomes_container
    run_id, key = message.run_id, message.key
    try:
        lease = services.store.lease(container, _work(run_id, "locks", key), seconds=s.run_lease_seconds, renew=True)
        lease.__enter__()
    except ConflictError:
        log.info("run %s: entry %s is being imported by another delivery; this duplicate is done", run_id, key)
        return
    try:
        if services.store.get_json(container, _entry_blob(run_id, key)) is not None:
            return  # final already (a duplicate message, or a redelivered chunk's second send)
        started = _work(run_id, "started", f"{key}.json")
        engine = SyncEngine(services, before_import=lambda i: services.store.put_json(container, started, i.to_dict()))
        outcome, kept = None, None
        if services.store.get_json(container, started) is not None:
            try:  # an earlier delivery started this import: did it land?
                landed = engine.landed(item)
            except AirlockError:
                landed = False  # unknown: import (again); importImage of the same digest is harmless
            if landed:
                outcome = EntryOutcome(item, RESULT_IMPORTED, attempts=1,
                                       target_digest_after=item.source_digest).to_dict()
        if outcome is None:
            [result] = engine.apply(Plan(items=[item]))
            outcome = result.to_dict()
        kept = _settle(services, run_id, outcome, last=last)
        if kept is not None:
            checkpoint = _Checkpointer(services, run_id)
            checkpoint.add(kept)
            checkpoint.flush(final=True)
    finally:
        lease.__exit__(None, None, None)
    if kept is None:
        raise TransientError(f"import of entry {key} of run {run_id} failed on a transient error (delivery "
                             f"{dequeue_count} of {s.run_max_dequeue}); redelivering", code="TransientRunFailure")


def _failed_entry(entry: Entry, code: str, message: str) -> dict:
    item = decide(entry, None, None, error=f"{code}: {message}")
    return EntryOutcome(item, RESULT_FAILED, error_code=code, error_message=message, retryable=True).to_dict()


def _poison_chunk(services, message: core.ChunkMessage, dequeue_count: int) -> None:
    """Entries of the chunk without a final outcome end failed (retryable), with the last reason seen."""
    entries = _snapshot_entries(services, message.run_id)[message.start:message.end]
    ordered = _poison_entries(services, message.run_id, message.chunk, entries, dequeue_count)
    services.store.create_once(services.settings.outcomes_container,
                               _work(message.run_id, "chunks", f"{message.chunk:05d}.json"),
                               json.dumps(ordered).encode())
    log.error("run %s chunk %d: poison message after %d deliveries; %d entries recorded as failed (retryable)",
              message.run_id, message.chunk, dequeue_count,
              sum(1 for o in ordered if o.get("result") == RESULT_FAILED))


def _poison_entries(services, run_id: str, chunk: int, entries: list[Entry], dequeue_count: int) -> list[dict]:
    """Each of ``entries`` (of ``chunk``) without a final outcome ends failed (retryable) with the last
    transient reason seen; returns their final outcomes in order."""
    s = services.settings
    container = s.outcomes_container
    final = _final_entries(services, run_id, {_key(e) for e in entries}, {chunk})
    ordered = []
    for entry in entries:
        if _key(entry) in final:
            ordered.append(final[_key(entry)])
            continue
        tried = services.store.get_json(container, _work(run_id, "tries", f"{_key(entry)}.json"))
        reason = (f"gave up after {dequeue_count} deliveries of its run message (RUN_MAX_DEQUEUE_COUNT="
                  f"{s.run_max_dequeue})")
        if tried and tried.get("error"):
            outcome = {**tried, "error": {**tried["error"], "retryable": True,
                                          "message": f"{tried['error']['message']}; {reason}"}}
        else:
            outcome = _failed_entry(entry, "PoisonMessage", reason + "; the worker crashed or timed out")
        if not services.store.create_once(container, _entry_blob(run_id, _key(entry)), json.dumps(outcome).encode()):
            outcome = services.store.get_json(container, _entry_blob(run_id, _key(entry))) or outcome
        ordered.append(outcome)
    return ordered


# -- finalising -----------------------------------------------------------------------------------

def _maybe_finalise(services, run_id: str, chunks: int) -> Optional[dict]:
    """When every chunk is complete, the one caller that creates the final marker writes the record."""
    container = services.settings.outcomes_container
    names = services.store.list_names(container, _work(run_id, "chunks") + "/")
    if len(names) < chunks:
        return None
    if not services.store.create_once(container, _work(run_id, "final.json"), b'{"status": "finished"}'):
        return None
    entries: dict[str, dict] = {}
    for name in names:
        for entry in services.store.get_json(container, name) or []:
            entries.setdefault(core.outcome_key(entry), entry)
    return _write_final(services, run_id, entries, status=None)


def _write_final(services, run_id: str, entries: dict[str, dict], *, status: Optional[str],
                 errors: Optional[list] = None) -> dict:
    container = services.settings.outcomes_container
    record = records.load(services, run_id)
    if core.is_terminal(record.get("status")):
        return record
    if record.get("status") == core.QUEUED and status is None:
        record["status"] = core.RUNNING
    document = core.final_document(record, entries, status=status, finished_at=_now(), errors=errors)
    records.save(services, document)
    services.store.delete(container, ACTIVE + run_id)
    log.info("run %s %s: %s", run_id, document["status"], document["summary"])
    report_run(_run_context(document), document, f"{container}/{records.record_name(run_id)}")
    return document


def _end_now(services, run_id: str, status: str, reason: str) -> Optional[dict]:
    """End a run that cannot go on (its snapshot is gone or invalid) with what it did and the reason."""
    container = services.settings.outcomes_container
    body = json.dumps({"status": status, "reason": reason}).encode()
    if not services.store.create_once(container, _work(run_id, "final.json"), body):
        return None
    log.error("run %s cannot go on: %s", run_id, reason)
    return _write_final(services, run_id, _final_entries(services, run_id), status=status,
                        errors=[{"message": reason}])


# -- the reaper -----------------------------------------------------------------------------------

def reap(services, *, now: Optional[datetime] = None) -> list[dict]:
    """Finalise every run with no progress for RUN_DEADLINE_SECONDS as ``abandoned`` (entries not done
    fail, retryable). Raises after trying them all when any could not be handled."""
    s = services.settings
    container = s.outcomes_container
    now = now or _now()
    reaped, problems = [], []
    for name in services.store.list_names(container, ACTIVE):
        run_id = name[len(ACTIVE):]
        try:
            document = _reap_one(services, run_id, now)
            if document is not None:
                reaped.append(document)
        except AirlockError as exc:
            log.error("reaper: run %s: %s: %s", run_id, exc.code, exc.message)
            problems.append(f"{run_id}: {exc.code}")
    log.info("reaper: %d run(s) abandoned", len(reaped))
    if problems:
        raise TransientError(f"reaper could not finalise {len(problems)} run(s): {', '.join(problems[:10])}",
                             code="ReaperFailed")
    return reaped


def _reap_one(services, run_id: str, now: datetime) -> Optional[dict]:
    container = services.settings.outcomes_container
    record = services.store.get_json(container, records.record_name(run_id))
    if record is None or core.is_terminal(record.get("status")):
        services.store.delete(container, ACTIVE + run_id)
        return None
    updated = datetime.fromisoformat(record.get("updated_at") or record.get("queued_at"))
    if not core.is_stale(updated, now, services.settings.run_deadline):
        return None
    marker = services.store.get_json(container, _work(run_id, "final.json"))
    if marker is None:
        body = json.dumps({"status": core.ABANDONED, "at": now.isoformat()}).encode()
        if not services.store.create_once(container, _work(run_id, "final.json"), body):
            return None  # finalised a moment ago
        status = core.ABANDONED
    else:  # a finaliser died between its marker and the record: finish its work
        status = core.ABANDONED if marker.get("status") == core.ABANDONED else None
    chunk_entries = []
    for name in services.store.list_names(container, _work(run_id, "chunks") + "/"):
        chunk_entries.extend(services.store.get_json(container, name) or [])
    entries = core.merge_entries(chunk_entries, _final_entries(services, run_id).values())
    idle = round((now - updated).total_seconds())
    errors = None
    try:
        snapshot = _snapshot_entries(services, run_id)
    except (SnapshotInvalid, TransientError) as exc:  # missing or no longer valid: end with what is known
        snapshot, errors = [], [{"message": exc.message}]
    for entry in snapshot:
        if _key(entry) not in entries:
            entries[_key(entry)] = _failed_entry(entry, "RunAbandoned", f"the run made no progress for {idle}s "
                                                "(RUN_DEADLINE_SECONDS); this entry was not finished")
    log.warning("reaper: run %s made no progress for %ds; finalising it as %s", run_id, idle, status or "finished")
    return _write_final(services, run_id, entries, status=status, errors=errors)


# -- blob trigger claims --------------------------------------------------------------------------

def claim_and_queue(services, name: str, data: bytes, digest: str, *, wait: float = 20.0) -> Optional[dict]:
    """Queue the run of an uploaded manifest once per (blob name, content hash), whatever the deliveries.

    The claim is a create-once blob naming the run id; a claim older than RUN_CLAIM_SECONDS that never
    got as far as "queued" is taken over (ETag) and queued under the same run id. A delivery that finds
    a live claim waits up to ``wait`` seconds for it to be queued, then raises to be redelivered."""
    s = services.settings
    container = s.outcomes_container
    blob = f"claims/{blob_segment(name)}/{digest}.json"  # any blob name stays inside claims/
    me = uuid.uuid4().hex
    claim = {"owner": me, "run_id": new_run_id(), "state": "claimed",
             "expires_at": time.time() + s.run_claim_seconds}
    owned = services.store.put_json_if(container, blob, claim, None)
    give_up = time.monotonic() + wait
    while not owned:
        existing, etag = services.store.get_json_etag(container, blob)
        if existing is None:
            owned = services.store.put_json_if(container, blob, claim, None)
            continue
        if existing.get("state") == "queued":
            log.info("manifest %s (sha256 %s) was already queued as run %s; nothing to do", name, digest[:12],
                     existing.get("run_id"))
            return None
        if float(existing.get("expires_at", 0)) < time.time():
            claim["run_id"] = existing.get("run_id") or claim["run_id"]  # resume the crashed claimant's run
            owned = services.store.put_json_if(container, blob, claim, etag)
            if owned:
                log.warning("took over the expired claim on %s (run %s)", name, claim["run_id"])
            continue
        if time.monotonic() > give_up:
            raise TransientError(f"manifest {name} is claimed by another delivery; retrying later",
                                 code="ClaimHeld")
        time.sleep(0.25)
    record = queue_run(services, data, name=name, trigger="blob", run_id=claim["run_id"])
    services.store.put_json(container, blob, {**claim, "state": "queued", "status": record["status"]})
    return record
