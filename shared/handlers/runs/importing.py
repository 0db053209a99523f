"""The import stage: one entry's import, exactly once, from its own queue message.

Handles import messages (``core.ImportMessage``, ``RUNS_QUEUE``): ``execute_import`` under the entry's
own lease. Nothing happens when the entry is final already; an earlier delivery's import that landed
(its ``started`` marker and the planned digest in place) is reported ``imported`` without a second
one; otherwise exactly the planned digest is imported. Either way the entry's referrers are carried
(``SyncEngine.with_referrers``: what the target has already is not imported again, and the record lists
each referrer once). The delivery that gives a chunk's last entry
its final outcome completes the chunk, and the one completing the last chunk finalises the run.

Writes:
- ``runs-work/<id>/locks/<key>``                 the entry's renewed lease
- ``runs-work/<id>/started/<chunk>/<key>.json``  before the import, created once
and, through ``completion``, ``entries/<chunk>/<key>.json`` (or ``tries/``), a progress mark on the record
when the last one is old, the chunk and the final record. The outcome is not merged into the record
here (it is in its blob; the final record is built from those): an import's cost stays the same
however many entries its run has and however many of them changed.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from ...core import runs as core
from ...core.outcome import RESULT_IMPORTED, EntryOutcome
from ...core.plan import Action, Plan, PlanItem
from ...errors import AirlockError, ConflictError, TransientError
from ...telemetry import chunk_scope
from ..sync import SyncEngine
from .completion import _complete_chunk, _end_now, _mark_progress, _maybe_finalise, _settle
from .reaper import _poison_entries
from .store import (SnapshotInvalid, _entry_blob, _key, _live_record, _run_context, _snapshot_entries,
                    _started_blob, _work, owner_of)

log = logging.getLogger(__name__)


def execute_import(services, message: core.ImportMessage, *, verdict: str,
                   dequeue_count: int = 1) -> Optional[dict]:
    """Import one planned entry (or resume it); returns the final record when this call finalised the run."""
    record = _live_record(services, message.run_id, f"the import of entry {message.key}", dequeue_count)
    if record is None:
        return None
    with chunk_scope(_run_context(record), chunk=message.chunk, chunks=message.chunks, delivery=dequeue_count,
                     settings=services.settings, parent=message.traceparent, entry=message.key):
        try:
            entries = _snapshot_entries(services, message.run_id, record, message.start, message.end)
        except SnapshotInvalid as exc:
            return _end_now(services, message.run_id, core.FAILED, exc.message)
        entry = next((e for e in entries if _key(e) == message.key), None)
        if entry is None:
            log.error("run %s: import message for entry %s, which chunk %d does not hold; dropping it",
                      message.run_id, message.key, message.chunk)
            return None
        item = PlanItem(entry, Action(message.action), message.source_digest, message.target_digest,
                        drift={"locked": message.source_digest, "upstream": message.upstream_digest}
                        if message.drifted else None, verification=message.verification)
        if verdict == "poison":
            [outcome] = _poison_entries(services, message.run_id, message.chunk, [entry], dequeue_count)
            log.error("run %s entry %s: poison import message after %d deliveries; recorded as %s", message.run_id,
                      message.key, dequeue_count, outcome.get("result"))
        else:
            _mark_progress(services, message.run_id, record)
            _import_entry(services, message, item, last=verdict == "last", dequeue_count=dequeue_count,
                          owner=owner_of(record))
        if not _complete_chunk(services, message, entries=entries):
            return None
        return _maybe_finalise(services, message.run_id, message.chunks)


def _import_entry(services, message: core.ImportMessage, item: PlanItem, *, last: bool, dequeue_count: int,
                  owner: Optional[str] = None) -> None:
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
        if services.store.get_json(container, _entry_blob(run_id, message.chunk, key)) is not None:
            return  # final already (a duplicate message, or a redelivered chunk's second send)
        engine = SyncEngine(services, owner=owner, run_id=run_id)
        outcome, kept = None, None
        # the started marker, created once: when it was there, an earlier delivery started this import
        started = _started_blob(run_id, message.chunk, key)
        if not services.store.create_once(container, started, json.dumps(item.to_dict()).encode()):
            try:  # did it land?
                landed = engine.landed(item)
            except AirlockError:
                landed = False  # unknown: import (again); importImage of the same digest is harmless
            if landed:  # its referrers are carried again: importing what is there already is harmless
                outcome = engine.with_referrers(EntryOutcome(item, RESULT_IMPORTED, attempts=1,
                                                             target_digest_after=item.source_digest)).to_dict()
            else:  # importing again: the marker names what this delivery imports (the reaper reads it)
                services.store.put_json(container, started, item.to_dict())
        if outcome is None:
            [result] = engine.apply(Plan(items=[item]))
            outcome = result.to_dict()
        kept = _settle(services, run_id, message.chunk, outcome, last=last)
    finally:
        lease.__exit__(None, None, None)
    if kept is None:
        raise TransientError(f"import of entry {key} of run {run_id} failed on a transient error (delivery "
                             f"{dequeue_count} of {s.run_max_dequeue}); redelivering", code="TransientRunFailure")
