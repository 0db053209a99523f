"""Completion: outcomes kept once, checkpoints of the record, chunks completed, the run finalised once.

No queue messages of its own: the chunk and import stages call it after their work.

Writes:
- ``runs-work/<id>/entries/<chunk>/<key>.json``  ``_settle``: an entry's final outcome, created once (the
                                          first wins)
- ``runs-work/<id>/tries/<key>.json``    ``_settle``: the last transient failure (the poison reason)
- ``runs/<id>.json``                     ``_update_record`` / ``_Checkpointer``: ETag-conditional merges of
                                          a chunk's failures (and, in the CLI's run, its imports) while the
                                          run goes on; ``_mark_progress``: the progress mark an import
                                          delivery leaves when the last one is old; ``_write_final``: the
                                          final record (every entry once, by line)
- ``runs-work/<id>/chunks/<chunk>.json`` ``_complete_chunk``: created once every entry of the chunk is final
- ``runs-work/<id>/final.json``          ``_maybe_finalise`` / ``_end_now``: created once by whoever finalises
- ``active/<id>``                         deleted when the run is final

What a delivery costs here does not grow with the run: an import does not merge its outcome into the
record (a record holding every import so far, rewritten by every import, made each import's cost
grow with the number of changed entries, and its ETag the bottleneck of the run); it checks its own
chunk only (a listing of the chunk's finished entries, the chunk's settled blob), the chunk's outcomes
are read once, by the delivery that completes it, and the run's chunks are listed only then.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Callable, Optional

from ...core import runs as core
from ...core.manifest import Entry
from ...errors import TransientError
from ...telemetry import report_run
from .. import records, runindex
from .store import (ACTIVE, _chunk_done, _chunk_outcomes, _entry_blob, _final_entries, _key, _now, _run_context,
                    _settled_outcomes, _snapshot_entries, _work)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 2.0  # seconds between record merges while a chunk runs


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


def _mark_progress(services, run_id: str, record: dict) -> None:
    """Keep the reaper away from a run whose imports go on: when the record's last progress mark
    (``updated_at``, as ``record`` was read) is older than ``core.progress_mark_due`` allows, mark it now
    (re-checked on the current record, so deliveries that find it due together write it once)."""
    deadline = services.settings.run_deadline
    if not core.progress_mark_due(record.get("updated_at"), _now(), deadline):
        return

    def mark(document: dict) -> Optional[dict]:
        now = _now()
        if not core.progress_mark_due(document.get("updated_at"), now, deadline):
            return None
        return {**document, "updated_at": now.isoformat()}

    try:
        _update_record(services, run_id, mark)
    except TransientError as exc:  # a mark is not worth failing an import for; the next one marks
        log.info("run %s: progress mark skipped (%s)", run_id, exc.code)


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


def _settle(services, run_id: str, chunk: int, outcome: dict, *, last: bool) -> Optional[dict]:
    """Keep an entry's final outcome once (the first one written wins; returns the kept one), or note a
    transient failure for the poison handler's reason (returns None: the entry is not final yet)."""
    container = services.settings.outcomes_container
    key = core.outcome_key(outcome)
    if not core.is_final_entry(outcome, last_delivery=last):
        services.store.put_json(container, _work(run_id, "tries", f"{key}.json"), outcome)
        return None
    blob = _entry_blob(run_id, chunk, key)
    if not services.store.create_once(container, blob, json.dumps(outcome).encode()):
        outcome = services.store.get_json(container, blob) or outcome
    return outcome


def _complete_chunk(services, message, *, known: Optional[dict[str, dict]] = None,
                    entries: Optional[list[Entry]] = None) -> bool:
    """Create the chunk's outcomes blob once every entry of it is final; True when the chunk is complete.
    ``known``: final outcomes this caller holds already (read from storage only when they fall short).

    Whether it is complete costs a listing of the chunk's finished entries (names only) and, when they
    do not cover it, a read of its settled blob; the outcomes are read only once it is complete and its
    blob is not there yet (the last import of the chunk, once)."""
    container = services.settings.outcomes_container
    run_id, chunk = message.run_id, message.chunk
    name = _work(run_id, "chunks", f"{chunk:05d}.json")
    if entries is None:
        entries = _snapshot_entries(services, run_id, None, message.start, message.end)
    keys = {_key(e) for e in entries}
    if known is not None and keys <= known.keys():
        final = known
    else:
        rest = keys - _chunk_done(services, run_id, chunk)
        if rest and not rest <= (_settled_outcomes(services, run_id, chunk) or {}).keys():
            return False
        if services.store.get_metadata(container, name) is not None:
            return True  # completed by another delivery already
        final = _chunk_outcomes(services, run_id, chunk, keys)
        if not keys <= final.keys():
            return False
    services.store.create_once(container, name, json.dumps([final[_key(e)] for e in entries]).encode())
    return True


def _maybe_finalise(services, run_id: str, chunks: int) -> Optional[dict]:
    """When every chunk is complete, the one caller that creates the final marker writes the record.
    Called by a delivery that completed a chunk: the listing of the run's chunks is once per chunk."""
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
                 errors: Optional[list] = None, alert: bool = True) -> dict:
    """Save the final record once, drop the run from ``active/`` and report it (``alert``: a failed run
    logs its own alert line; the reaper reports the runs of one pass together instead)."""
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
    report_run(_run_context(document), document, f"{container}/{records.record_name(run_id)}", alert=alert)
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
