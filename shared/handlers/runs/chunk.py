"""The chunk stage: plan a chunk's entries, settle the ones that import nothing, send the imports.

Handles chunk messages (``core.ChunkMessage``, ``RUNS_QUEUE``): ``execute_chunk`` under the chunk's
lease. A chunk makes the record ``running`` (``_start``), plans its unfinished entries, sends one import
message (``core.ImportMessage``) per entry to import (``dispatch``; the CLI's in-process run imports
them here instead), and settles unchanged entries and plan errors together. A poison delivery ends the
chunk's unfinished entries (``reaper``).

Reads ``runs-work/<id>/trust-policy.yaml`` (the trust policy the run was queued under, when it had one).

Writes:
- ``runs-work/<id>/locks/<chunk>``                 the chunk's renewed lease
- ``runs-work/<id>/started/<chunk>/<key>.json``    before an in-process import
- ``runs-work/<id>/settled/<chunk>.json``          the chunk's quiet outcomes, created once
- ``runs/<id>.json``                               ``running`` and progress marks (``completion._update_record``)
and, through ``completion``, entries, tries, chunks and the final record. What a chunk delivery reads
is its own chunk's blobs (``entries/<chunk>/``, ``started/<chunk>/``, its settled blob), never the run's.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Optional

from ...core import runs as core
from ...core.outcome import RESULT_FAILED, RESULT_IMPORTED, EntryOutcome
from ...core.plan import Action, PlanItem
from ...errors import ConflictError, TransientError, TrustPolicyError
from ...telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # pool threads keep the run id
from ...telemetry import chunk_scope, traceparent
from .. import records
from ..sync import Progress, SyncEngine
from ..trust import gate_for_run
from .completion import _Checkpointer, _complete_chunk, _end_now, _maybe_finalise, _settle, _update_record
from .reaper import _poison_chunk
from .store import (SnapshotInvalid, _chunk_outcomes, _key, _live_record, _now, _run_context, _settled_blob,
                    _snapshot_entries, _started_blob, _work, owner_of)

log = logging.getLogger(__name__)


@dataclass
class _Entries:
    """What ``SyncEngine.plan`` needs of a manifest: its entries (a chunk's)."""

    entries: list


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
        retry, known = _run_chunk(services, message, last=verdict == "last", progress=progress, dispatch=dispatch,
                                  owner=owner_of(record), record=record)
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


def _run_chunk(services, message: core.ChunkMessage, *, last: bool, progress: Optional[Progress],
               dispatch: bool = False, owner: Optional[str] = None,
               record: Optional[dict] = None) -> tuple[bool, dict[str, dict]]:
    """Plan the chunk's unfinished entries (signatures verified under the trust policy the run was queued
    with, ``handlers.trust.gate_for_run``) and import them (``dispatch``: send each as an import message), as
    manifest ``owner`` (tag ownership: ``shared.handlers.ownership``); returns (an entry failed on something
    transient and the chunk must be delivered again, the final outcomes known to this delivery by key)."""
    s = services.settings
    container = s.outcomes_container
    run_id = message.run_id
    entries = _snapshot_entries(services, run_id, record, message.start, message.end)
    final = _chunk_outcomes(services, run_id, message.chunk, {_key(e) for e in entries})
    todo = [e for e in entries if _key(e) not in final]
    checkpoint = _Checkpointer(services, run_id)
    lock = threading.Lock()
    transient: list[str] = []

    def settle(outcome: dict) -> None:
        """Keep a final outcome once (the first one written wins), or note a transient failure."""
        kept = _settle(services, run_id, message.chunk, outcome, last=last)
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
        services.store.put_json(container, _started_blob(run_id, message.chunk, _key(item.entry)), item.to_dict())

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
        try:
            record = record if record is not None else records.load(services, run_id)
            gate = gate_for_run(services, run_id, record, lambda name: _work(run_id, name))
        except TrustPolicyError as exc:  # the snapshot no longer parses (the checker changed): permanent
            raise SnapshotInvalid(f"trust policy snapshot of run {run_id}: {exc.message}") from None
        engine = SyncEngine(services, before_import=before_import, owner=owner, run_id=run_id, trust=gate)
        plan = engine.plan(_Entries(todo), progress, on_item=send if dispatch else None)
        started = set(services.store.list_names(container, _work(run_id, "started", f"{message.chunk:05d}") + "/"))
        resumed = [_resumed(services, run_id, message.chunk, item, engine)
                   if _started_blob(run_id, message.chunk, _key(item.entry)) in started else None
                   for item in plan.items]
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


def _dispatch(services, message: core.ChunkMessage, item: PlanItem, parent: Optional[str]) -> None:
    """The import message of one planned import. A redelivered chunk sends again the ones still
    unfinished: a duplicate finds its entry final (or leased) and does nothing twice. Sent before the
    chunk's quiet entries are settled: safe, as the chunk and each import check completeness after
    their own write, so whichever writes last sees every outcome."""
    services.runs_queue.send(core.ImportMessage(
        message.run_id, message.chunk, message.chunks, message.start, message.end, _key(item.entry),
        item.action.value, item.source_digest, item.target_digest, parent,
        (item.drift or {}).get("upstream"), item.drift is not None, item.verification).to_json())


def _resumed(services, run_id: str, chunk: int, item: PlanItem, engine: SyncEngine) -> Optional[dict]:
    """An entry whose import a previous delivery started: when the planned digest is now in place, it
    was imported (by that delivery), and is reported so without importing it again (its referrers are
    carried, as they are after any import)."""
    if item.action is not Action.UNCHANGED:
        return None
    container = services.settings.outcomes_container
    prior = services.store.get_json(container, _started_blob(run_id, chunk, _key(item.entry)))
    if not prior or prior.get("source_digest") != item.source_digest:
        return None
    planned = PlanItem(item.entry, Action(prior["action"]), item.source_digest, prior.get("target_digest"),
                       verification=prior.get("verification"))
    return engine.with_referrers(EntryOutcome(planned, RESULT_IMPORTED, attempts=1,
                                              target_digest_after=item.target_digest)).to_dict()
