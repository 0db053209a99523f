"""Starting runs: validate, store the snapshot and a ``queued`` record, send the chunk messages.

Every trigger that imports calls ``queue_run`` (HTTP, the re-sync timer, self-heal) or, for an
uploaded manifest, ``claim_and_queue`` (once per blob name and content hash, whatever the
deliveries). The CLI runs the same chunk code in its own process (``run_in_process``,
``resume_in_process``).

Sends: one chunk message (``core.ChunkMessage``) per ``RUN_CHUNK_ENTRIES`` entries to ``RUNS_QUEUE``.

Writes:
- ``runs-work/<id>/manifest.txt``            the snapshot every later stage reads
- ``active/<id>``                            the run is not final (for the reaper)
- ``runs/<id>.json``                         the ``queued`` record (or ``invalid``, never queued)
- ``claims/<blob name>/<sha256>.json``       a blob trigger's claim, naming the run id
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Optional

from ...core import runs as core
from ...core.ids import new_run_id
from ...core.names import blob_segment
from ...errors import AirlockError, TransientError
from .. import records, runindex
from ..sync import Progress, SyncEngine, check_manifest
from .chunk import execute_chunk
from .store import ACTIVE, _now, _work, _work_count

log = logging.getLogger(__name__)


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
