"""Starting runs: validate, store the snapshot and a ``queued`` record, send the chunk messages.

Every trigger that imports calls ``queue_run`` (HTTP, the re-sync timer, self-heal) or, for an
uploaded manifest, ``claim_and_queue`` (once per blob name and content hash, whatever the
deliveries). The CLI runs the same chunk code in its own process (``run_in_process``,
``resume_in_process``).

Sends: one chunk message (``core.ChunkMessage``) per ``RUN_CHUNK_ENTRIES`` entries to ``RUNS_QUEUE``
(``sending``: counted, so a run whose sends failed half-way is sent the rest by the reaper).

Writes:
- ``runs-work/<id>/manifest.txt``            the snapshot every later stage reads
- ``runs-work/<id>/images.lock``             the lock it came with (a locked run imports its digests)
- ``runs-work/<id>/trust-policy.yaml``        the trust policy in force when it was queued (its chunks verify
                                              signatures under it); the record's ``trust`` names it
- ``runs-work/<id>/sent.json``               how many chunk messages were sent (``sending``)
- ``active/<id>``                            the run is not final (for the reaper)
- ``runs/<id>.json``                         the ``queued`` record (or ``invalid``, never queued)
- ``claims/<blob name>/<upload>+<lock upload>.json``  a blob trigger's claim on one upload, naming the run id
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Optional

from ...core import runs as core
from ...core.ids import new_run_id
from ...core.lock import lock_name_for
from ...core.names import blob_segment
from ...errors import AirlockError, TransientError, TrustPolicyError
from .. import ownership, records, runindex
from ..sync import Progress, SyncEngine, check_manifest
from ..trust import POLICY_SNAPSHOT, policy_for_run, policy_problem
from .chunk import execute_chunk
from .sending import send_chunks
from .store import ACTIVE, LOCK_SNAPSHOT, _now, _work, _work_count

log = logging.getLogger(__name__)


def create_run(services, text, *, name: str, trigger: str, run_id: Optional[str] = None,
               fan_out: bool = True, lock: Optional[bytes] = None, owner: Optional[str] = None,
               check_peers: bool = False) -> dict:
    """Validate (the manifest and its ``lock``, when it came with one; with ``check_peers``, against the
    other manifests of the manifests container too: a destination tag belongs to one manifest); store the
    snapshot and a ``queued`` record (or an ``invalid`` one). Returns the record. The tags the run writes
    belong to ``owner`` (default: ``name``). With a ``run_id`` whose record exists already (a taken-over
    claim), that record is returned."""
    s = services.settings
    manifest = check_manifest(text, s, lock, name=name, lock_name=lock_name_for(name))
    if manifest.ok and check_peers:
        overlaps = ownership.peer_problems(services, name, manifest, lambda peer, upload: _refused(services, peer,
                                                                                                   upload))
        if overlaps:
            manifest = replace(manifest, entries=[], errors=overlaps)
    trust_data, trust_note, trust_error = None, None, None
    if manifest.ok:  # the trust policy in force now is the run's (an invalid one: the run is invalid)
        try:
            trust_data, trust_note = policy_for_run(services)
        except TrustPolicyError as exc:
            trust_error = policy_problem(exc)
    lines = len({e.line for e in manifest.entries} | {p.line for p in manifest.policies})
    policies: list[dict] = []
    if manifest.ok and manifest.policies:
        # tag policies are resolved once, here: every chunk expands the snapshot with the same tags
        manifest, policies = SyncEngine(services).resolve_policies(manifest)
    run_id = run_id or new_run_id()
    now = _now().isoformat()
    count = len(manifest.entries)
    size = s.run_chunk_entries if fan_out else max(1, count)
    chunks = len(core.chunk_ranges(count, size))
    record = {"run_id": run_id, "kind": "sync", "trigger": trigger, "status": core.QUEUED,
              "manifest": {"name": name, "sha256": manifest.content_hash, "entries": lines,
                           "lock": _lock_document(name, manifest), **({"owner": owner} if owner else {})},
              "work_entries": count,
              "registry": s.registry_name, "queued_at": now, "started_at": None, "finished_at": None,
              "updated_at": now, "duration_seconds": None, "chunks": chunks, "summary": core.summarise([]),
              "retryable": False, "errors": [], "warnings": [p.to_dict() for p in manifest.warnings],
              "dockerhub_ratelimit_remaining": None, "entries": [], "trust": trust_note}
    if policies:
        record["policies"] = policies
    record["chunk_entries"] = size  # the chunk ranges, for messages sent later (sending)
    if not manifest.ok or trust_error is not None:
        errors = [p.to_dict() for p in manifest.errors] if not manifest.ok else [trust_error]
        record.update(status=core.INVALID, errors=errors, chunks=0, finished_at=now, duration_seconds=0.0)
    data = text.encode() if isinstance(text, str) else bytes(text)
    if record["status"] == core.QUEUED:
        services.store.put_bytes(s.outcomes_container, _work(run_id, "manifest.txt"), data)
        if manifest.lock is not None:
            services.store.put_bytes(s.outcomes_container, _work(run_id, LOCK_SNAPSHOT), bytes(lock))
        if trust_data is not None:
            services.store.put_bytes(s.outcomes_container, _work(run_id, POLICY_SNAPSHOT), trust_data)
        services.store.create_once(s.outcomes_container, ACTIVE + run_id)
    if not services.store.put_json_if(s.outcomes_container, records.record_name(run_id), record, None):
        return records.load(services, run_id)
    runindex.update(services, record)
    return record


def _lock_document(name: str, manifest) -> Optional[dict]:
    """The record's note of the lock a run imports under (None: unlocked)."""
    lock = manifest.lock
    if lock is None:
        return None
    return {"name": lock_name_for(name), "sha256": lock.content_hash, "fingerprint": lock.manifest,
            "images": len(lock.images)}


def enqueue(services, record: dict, *, send: bool = True) -> None:
    """One message per chunk, counted (``sending.send_chunks``); raises ``RunNotSent`` when the queue
    failed half-way (the reaper sends the rest). With ``send`` False nothing is sent: the reaper sends
    them all on its next pass. A repeated send (a retried trigger) only duplicates idempotent work."""
    sent = send_chunks(services, record, send=send)
    log.info("run %s of %s %s: %d entries in %d message(s)", record["run_id"], record["manifest"]["name"],
             "queued" if send else "recorded, its messages left to the reaper", _work_count(record), sent)


def queue_run(services, text, *, name: str, trigger: str, run_id: Optional[str] = None,
              lock: Optional[bytes] = None, owner: Optional[str] = None, check_peers: bool = False,
              send: bool = True) -> dict:
    """What every trigger that starts imports does: validate, store, enqueue; returns the record.
    Raises ``RunNotSent`` (a TransientError naming the run, which the reaper carries on) when the chunk
    messages could not all be sent; ``send`` False records the run and leaves every send to the reaper
    (the re-sync, once the queue failed)."""
    record = create_run(services, text, name=name, trigger=trigger, run_id=run_id, lock=lock, owner=owner,
                        check_peers=check_peers)
    if record["status"] == core.QUEUED:
        enqueue(services, record, send=send)
    elif record["status"] == core.INVALID:
        log.info("manifest %s is invalid (%d error(s)); recorded as run %s", name, len(record["errors"]),
                 record["run_id"])
    return record


def run_in_process(services, text, *, name: str, trigger: str = "cli", progress: Optional[Progress] = None,
                   lock: Optional[bytes] = None, run_id: Optional[str] = None) -> dict:
    """The CLI's sync: the same checkpointed record, executed here as one chunk (pipelines block on it).
    ``run_id``: the caller's (the CLI names it when interrupted); default a new one."""
    record = create_run(services, text, name=name, trigger=trigger, run_id=run_id, fan_out=False, lock=lock)
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


def claim_blob(name: str, upload: str, lock_upload: Optional[str]) -> str:
    """Where the claim of one upload of manifest ``name`` (with its lock's upload) is kept."""
    return f"claims/{blob_segment(name)}/{blob_segment(upload)}+{blob_segment(lock_upload or 'unlocked')}.json"


def _refused(services, name: str, upload: str) -> bool:
    """Was this upload of manifest ``name`` refused (claimed, and every run of it ``invalid``)? A manifest
    whose upload was refused claims no tags (``ownership.peer_problems``); one never run claims its tags."""
    claims = claims_of(services, name, upload)
    return bool(claims) and all(c.get("status") == core.INVALID for c in claims)


def claims_of(services, name: str, upload: str) -> list[dict]:
    """The claims made for one upload of a manifest (one per lock it was run with), oldest first."""
    container = services.settings.outcomes_container
    prefix = f"claims/{blob_segment(name)}/{blob_segment(upload)}+"
    return [c for c in (services.store.get_json(container, n) for n in services.store.list_names(container, prefix))
            if c]


def claim_and_queue(services, name: str, data: bytes, upload: str, *, lock: Optional[bytes] = None,
                    lock_upload: Optional[str] = None, wait: float = 20.0) -> Optional[dict]:
    """Queue the run of one upload of a manifest (``upload``: ``core.ids.upload_id``, its ETag) with the
    lock beside it, once, whatever the deliveries: a re-upload of the same bytes is a new upload and a
    new run; a redelivered event of this upload is not.

    The claim is a create-once blob naming the run id; a claim older than RUN_CLAIM_SECONDS that never
    got as far as "queued" is taken over (ETag) and queued under the same run id. A delivery that finds
    a live claim waits up to ``wait`` seconds for it to be queued, then raises to be redelivered."""
    s = services.settings
    container = s.outcomes_container
    blob = claim_blob(name, upload, lock_upload)  # any blob name stays inside claims/
    me = uuid.uuid4().hex
    claim = {"owner": me, "run_id": new_run_id(), "state": "claimed", "manifest": name, "upload": upload,
             "lock_upload": lock_upload, "expires_at": time.time() + s.run_claim_seconds}
    owned = services.store.put_json_if(container, blob, claim, None)
    give_up = time.monotonic() + wait
    while not owned:
        existing, etag = services.store.get_json_etag(container, blob)
        if existing is None:
            owned = services.store.put_json_if(container, blob, claim, None)
            continue
        if existing.get("state") == "queued":
            log.info("this upload of %s (%s) was already queued as run %s; nothing to do", name, upload[:24],
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
    # an upload is checked against the other manifests: a destination tag belongs to one manifest
    record = queue_run(services, data, name=name, trigger="blob", run_id=claim["run_id"], lock=lock,
                       check_peers=True)
    services.store.put_json(container, blob, {**claim, "state": "queued", "status": record["status"]})
    return record
