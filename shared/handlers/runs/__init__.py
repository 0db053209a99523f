"""Queued runs: start a run (every trigger), execute its chunks (queue function, CLI), finalise once, reap.

Flow: a trigger calls ``queue_run``: the manifest is validated, its snapshot and a ``queued`` record
are stored, and one message per chunk (``RUN_CHUNK_ENTRIES`` entries) goes to ``RUNS_QUEUE``. The
queue function calls ``on_run_message`` for each delivery. A chunk message plans its entries, settles
those that import nothing, and sends one import message per entry to import (``RUNS_QUEUE`` again);
the import message imports that entry. Whichever delivery gives a chunk's last entry its final
outcome completes the chunk, and the one that completes the last chunk finalises the run. The CLI
calls ``run_in_process``: the same chunk code in this process, importing in place of dispatching.
The decisions (states, chunks, messages, deliveries, final record) are in
``shared.core.runs``; blobs and queues are adapters; this package orchestrates.

The stages, one module each (each docstring says which messages it handles and which blobs it writes):

- ``start``       validate, snapshot, ``queued`` record, chunk messages; blob-trigger claims; the CLI's
                  in-process run
- ``sending``     the chunk messages, counted (``sent.json``): what a failed send left, the reaper sends
- ``chunk``       chunk messages: plan, settle quiet entries, send import messages
- ``importing``   import messages: one entry's import under its lease
- ``completion``  outcomes kept once, record checkpoints, chunk completion, finalising once
- ``reaper``      the reaper timer (stale runs end, landed imports count, unsent messages go out) and
                  poison deliveries
- ``store``       what they share: blob names, the snapshot, reading outcomes back

This module is the queue functions' entry point (``on_run_message``, ``on_poison_message``: parse the
message and hand it to its stage) and the package's public API. Names with a leading underscore are
internal to the package.

Exactly-once effects from at-least-once deliveries: see the blob layout in ``store``.
"""
from __future__ import annotations

import logging
from typing import Optional

from ...core import runs as core
from .chunk import execute_chunk
from .importing import execute_import
from .reaper import reap
from .sending import RunNotSent
from .start import claim_and_queue, create_run, enqueue, queue_run, resume_in_process, run_in_process
from .store import WORK, RunFailed, SnapshotInvalid

__all__ = ["WORK", "RunFailed", "RunNotSent", "SnapshotInvalid", "claim_and_queue", "create_run", "enqueue",
           "execute_chunk", "execute_import", "on_poison_message", "on_run_message", "queue_run", "reap",
           "resume_in_process", "run_in_process"]

log = logging.getLogger(__name__)


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
