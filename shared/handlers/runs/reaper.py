"""The reaper and poison messages: runs and entries that cannot finish on their own end failed, retryable.

Handles: the ``run_reaper`` timer (``reap``) and poison deliveries of chunk and import messages
(``RUNS_QUEUE-poison``, or the last delivery: ``_poison_chunk`` / ``_poison_entries``).

On each pass, for every run in ``active/``:

- a run with no progress for ``RUN_DEADLINE_SECONDS`` ends ``abandoned``: its entries without a final
  outcome fail, retryable (``RunAbandoned``), except those whose import was started (a ``started``
  marker) and whose planned digest is at the target now: that import landed, and it is ``imported``;
- a live run whose chunk messages were not all sent (``sending.unsent``: a send failed half-way, or
  its sender died) has the rest sent now, and its progress marked; once the queue fails in a pass,
  the other such runs wait for the next pass (one line says how many).

The runs a pass abandons are reported together: one alert line (``telemetry.report_runs_together``)
for the pass, each run's own line a warning, so one outage is one alert, not one per run.

Writes:
- ``runs-work/<id>/entries/<chunk>/<key>.json``  unfinished entries' final outcomes (failed, retryable),
                                         created once (poison)
- ``runs-work/<id>/chunks/<chunk>.json`` a poisoned chunk's outcomes, created once
- ``runs-work/<id>/final.json``          the reaper's create-once marker (``abandoned``)
- ``runs-work/<id>/sent.json``           the count, when it sent what was missing (``sending``)
- ``runs/<id>.json``                     the final record (through ``completion._write_final``), or a
                                         progress mark after sending
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Optional

from ...core import runs as core
from ...core.manifest import Entry
from ...core.outcome import RESULT_FAILED, RESULT_IMPORTED, EntryOutcome
from ...core.plan import Action, PlanItem, decide
from ...errors import AirlockError, TransientError
from ...telemetry import report_runs_together
from .. import records
from ..sync import SyncEngine
from .completion import _update_record, _write_final
from .sending import RunNotSent, send_chunks, unsent
from .store import (ACTIVE, SnapshotInvalid, _chunk_outcomes, _entry_blob, _final_entries, _key, _name_key, _now,
                    _run_context, _snapshot_entries, _work)

log = logging.getLogger(__name__)


def reap(services, *, now: Optional[datetime] = None) -> list[dict]:
    """Finalise every run with no progress for RUN_DEADLINE_SECONDS as ``abandoned`` (entries not done
    fail, retryable; a started import that landed is imported) and send the chunk messages live runs
    are missing. Returns the runs it finalised. Raises after trying them all when any could not be
    handled (a queue that does not answer is not such a failure: those runs wait for the next pass)."""
    s = services.settings
    container = s.outcomes_container
    now = now or _now()
    reaped, problems, resent, waiting = [], [], 0, 0
    queue_error: Optional[RunNotSent] = None
    for name in services.store.list_names(container, ACTIVE):
        run_id = name[len(ACTIVE):]
        try:
            record = services.store.get_json(container, records.record_name(run_id))
            if record is None or core.is_terminal(record.get("status")):
                services.store.delete(container, ACTIVE + run_id)
                continue
            document = _reap_one(services, run_id, record, now)
            if document is not None:
                reaped.append(document)
                continue
            first = unsent(services, record, now)
            if first is None:
                continue
            if queue_error is not None:
                waiting += 1
                continue
            try:
                _resend(services, record, first)
                resent += 1
            except RunNotSent as exc:
                queue_error = exc
                waiting += 1
        except AirlockError as exc:
            log.error("reaper: run %s: %s: %s", run_id, exc.code, exc.message)
            problems.append(f"{run_id}: {exc.code}")
    if resent:
        log.warning("reaper: sent the missing chunk messages of %d run(s)", resent)
    if waiting:
        log.warning("reaper: the runs queue did not answer (%s); %d run(s) wait for their chunk messages "
                    "(sent on a later pass)", type(queue_error.__cause__).__name__ if queue_error else "?", waiting)
    log.info("reaper: %d run(s) abandoned", len(reaped))
    report_runs_together([(_run_context(d), d, f"{container}/{records.record_name(d['run_id'])}") for d in reaped],
                         cause="reaper")
    if problems:
        raise TransientError(f"reaper could not finalise {len(problems)} run(s): {', '.join(problems[:10])}",
                             code="ReaperFailed")
    return reaped


def _resend(services, record: dict, first: int) -> None:
    """Send a live run the chunk messages it is missing (from ``first``), then mark its progress: the
    run starts its deadline again from now, as it is queued now."""
    run_id = record["run_id"]
    sent = send_chunks(services, record, first=first)
    log.warning("reaper: run %s was missing chunk messages %d-%d of %d; sent them", run_id, first, sent - 1, sent)
    now = _now().isoformat()
    _update_record(services, run_id, lambda d: {**d, "updated_at": now})


def _reap_one(services, run_id: str, record: dict, now: datetime) -> Optional[dict]:
    container = services.settings.outcomes_container
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
    unfinished = {_key(e): e for e in snapshot if _key(e) not in entries}
    entries.update(_landed(services, run_id, unfinished))
    for key, entry in unfinished.items():
        if key not in entries:
            entries[key] = _failed_entry(entry, "RunAbandoned", f"the run made no progress for {idle}s "
                                         "(RUN_DEADLINE_SECONDS); this entry was not finished")
    log.warning("reaper: run %s made no progress for %ds; finalising it as %s", run_id, idle, status or "finished")
    return _write_final(services, run_id, entries, status=status, errors=errors, alert=False)


def _landed(services, run_id: str, unfinished: dict[str, Entry]) -> dict[str, dict]:
    """Outcomes of the ``unfinished`` entries (by key) whose import was started (the ``started`` marker
    names the planned digest) and whose target holds that digest now: the import landed after the
    worker that started it stopped (ACR finishes an import it accepted), so the entry was imported.
    One read of the target each (no retries); a read that fails leaves the entry unfinished."""
    if not unfinished:
        return {}
    container = services.settings.outcomes_container
    engine = SyncEngine(services)
    found: dict[str, dict] = {}
    for name in services.store.list_names(container, _work(run_id, "started") + "/"):
        entry = unfinished.get(_name_key(name))
        prior = services.store.get_json(container, name) if entry is not None else None
        if not prior or not prior.get("source_digest") or prior.get("action") not in core.IMPORT_ACTIONS:
            continue
        item = PlanItem(entry, Action(prior["action"]), prior["source_digest"], prior.get("target_digest"),
                        drift=prior.get("drift"))
        try:
            landed = engine.landed(item)
        except AirlockError as exc:
            log.warning("reaper: run %s: could not read %s back (%s); it counts as not finished", run_id,
                        entry.target, exc.code)
            continue
        if landed:
            log.info("reaper: run %s: the started import of %s landed; it counts as imported", run_id, entry.target)
            found[_key(entry)] = EntryOutcome(item, RESULT_IMPORTED, attempts=1,
                                              target_digest_after=item.source_digest).to_dict()
    return found


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
