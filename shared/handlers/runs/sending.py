"""Sending a run's chunk messages, and knowing whether they were all sent.

A run is ``queued`` once its record is written; its chunk messages go out after that. A send can fail
half-way (the queue unreachable, the instance killed during a POST), which would leave a run that no
message ever carries on. So sending is counted: ``send_chunks`` writes ``runs-work/<id>/sent.json``
(``{"chunks": N, "sent": K, ...}``) after the last send, or with K < N as soon as one fails, and raises
``RunNotSent``. The reaper asks ``unsent`` on every pass and sends what is missing (from K, or from 0
for a run with no count at all ``RUN_CLAIM_SECONDS`` after it was queued: its sender died). A chunk
message sent twice only repeats idempotent work (a chunk resumes; its entries are final once), so
sending again from a count that fell short is always safe.

The chunk ranges come from the record's ``chunk_entries`` (``RUN_CHUNK_ENTRIES`` when the run was
queued), so a message sent later covers exactly the entries the first ones would have.

Writes: ``runs-work/<id>/sent.json``. Sends: ``core.ChunkMessage`` to ``RUNS_QUEUE``.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Optional

from ...core import runs as core
from ...errors import TransientError
from .store import _now, _sent_blob, _work_count

log = logging.getLogger(__name__)


class RunNotSent(TransientError):
    """The run is recorded (``record``) but not all of its chunk messages could be sent; the reaper sends
    the rest once the queue answers."""

    code = "RunNotSent"

    def __init__(self, message: str, record: dict, sent: int, chunks: int):
        super().__init__(message, code=self.code)
        self.record = record
        self.sent = sent
        self.chunks = chunks


def chunk_size(services, record: dict) -> int:
    """Entries per chunk of this run: as recorded when it was queued (older records: the setting)."""
    return int(record.get("chunk_entries") or services.settings.run_chunk_entries)


def send_chunks(services, record: dict, *, first: int = 0, send: bool = True) -> int:
    """Send the run's chunk messages from ``first`` on (with ``send`` False: none, the count says 0 sent,
    for the reaper to send); write the count; returns how many are sent. Raises ``RunNotSent`` (after
    writing the count) when a send fails."""
    run_id = record["run_id"]
    ranges = core.chunk_ranges(_work_count(record), chunk_size(services, record))
    sent = first
    failure: Optional[BaseException] = None
    if send:
        for index in range(first, len(ranges)):
            start, end = ranges[index]
            try:
                services.runs_queue.send(core.ChunkMessage(run_id, index, len(ranges), start, end).to_json())
            except Exception as exc:  # noqa: BLE001 - any failure of the queue: counted, then raised below
                failure = exc
                break
            sent = index + 1
    else:
        sent = 0
    _write_count(services, record, sent, len(ranges), failure)
    if failure is not None:
        raise RunNotSent(f"run {run_id} is recorded, but {len(ranges) - sent} of its {len(ranges)} chunk message(s) "
                         f"could not be sent ({type(failure).__name__}); the reaper sends them once the queue "
                         f"answers", record, sent, len(ranges)) from failure
    return sent


def _write_count(services, record: dict, sent: int, chunks: int, failure: Optional[BaseException]) -> None:
    document = {"chunks": chunks, "sent": sent, "chunk_entries": chunk_size(services, record),
                "at": _now().isoformat()}
    if failure is not None:
        document["error"] = type(failure).__name__
    try:
        services.store.put_json(services.settings.outcomes_container, _sent_blob(record["run_id"]), document)
    except Exception as exc:  # noqa: BLE001 - the messages are what matters; without a count the reaper
        # sends them all again RUN_CLAIM_SECONDS after the run was queued, which only repeats idempotent work
        log.warning("run %s: could not record that %d of %d chunk message(s) were sent (%s)", record["run_id"],
                    sent, chunks, type(exc).__name__)


def unsent(services, record: dict, now: datetime) -> Optional[int]:
    """The first chunk message of a live queued run still to send, or None when there is nothing to send:
    every message was sent, the run is not carried by the queue (the CLI runs its own), or it was queued
    less than ``RUN_CLAIM_SECONDS`` ago and has no count yet (its sender may still be sending)."""
    if record.get("trigger") == "cli" or record.get("status") not in (core.QUEUED, core.RUNNING):
        return None
    count = services.store.get_json(services.settings.outcomes_container, _sent_blob(record["run_id"]))
    if count is not None:
        return int(count.get("sent", 0)) if int(count.get("sent", 0)) < int(count.get("chunks", 0)) else None
    queued = datetime.fromisoformat(record.get("queued_at") or record["updated_at"])
    return 0 if (now - queued).total_seconds() >= services.settings.run_claim_seconds else None
