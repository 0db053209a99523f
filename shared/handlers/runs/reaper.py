"""The reaper and poison messages: runs and entries that cannot finish on their own end failed, retryable.

Handles: the ``run_reaper`` timer (``reap``: runs in ``active/`` with no progress for
``RUN_DEADLINE_SECONDS`` end ``abandoned``) and poison deliveries of chunk and import messages
(``RUNS_QUEUE-poison``, or the last delivery: ``_poison_chunk`` / ``_poison_entries``).

Writes:
- ``runs-work/<id>/entries/<chunk>/<key>.json``  unfinished entries' final outcomes (failed, retryable),
                                         created once
- ``runs-work/<id>/chunks/<chunk>.json`` a poisoned chunk's outcomes, created once
- ``runs-work/<id>/final.json``          the reaper's create-once marker (``abandoned``)
- ``runs/<id>.json``                     the final record (through ``completion._write_final``)
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Optional

from ...core import runs as core
from ...core.manifest import Entry
from ...core.outcome import RESULT_FAILED, EntryOutcome
from ...core.plan import decide
from ...errors import AirlockError, TransientError
from .. import records
from .completion import _write_final
from .store import (ACTIVE, SnapshotInvalid, _chunk_outcomes, _entry_blob, _final_entries, _key, _now,
                    _snapshot_entries, _work)

log = logging.getLogger(__name__)


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


def _failed_entry(entry: Entry, code: str, message: str) -> dict:
    item = decide(entry, None, None, error=f"{code}: {message}")
    return EntryOutcome(item, RESULT_FAILED, error_code=code, error_message=message, retryable=True).to_dict()


def _poison_chunk(services, message: core.ChunkMessage, dequeue_count: int) -> None:
    """Entries of the chunk without a final outcome end failed (retryable), with the last reason seen."""
    entries = _snapshot_entries(services, message.run_id, None, message.start, message.end)
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
    final = _chunk_outcomes(services, run_id, chunk, {_key(e) for e in entries})
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
        blob = _entry_blob(run_id, chunk, _key(entry))
        if not services.store.create_once(container, blob, json.dumps(outcome).encode()):
            outcome = services.store.get_json(container, blob) or outcome
        ordered.append(outcome)
    return ordered
