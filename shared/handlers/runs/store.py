"""The run's work area, shared by every stage: blob names, the snapshot and reading outcomes back.

It only reads: every stage names blobs through ``_work`` and finds an entry's
key with ``_key``; ``_snapshot_entries`` gives a run's work entries (its stored manifest snapshot,
validated against the current settings, tag policies expanded as resolved when it was queued),
parsed once per process; ``_chunk_outcomes`` reads one chunk's final outcomes, ``_final_entries``
the whole run's (the reaper and a run ended early: once per run).

Blob layout (all in ``OUTCOMES_CONTAINER``), and the stage that writes each:

- ``runs-work/<id>/manifest.txt``        the reviewed snapshot                          (start)
- ``runs-work/<id>/images.lock``         the lock it came with, if any                  (start)
- ``runs-work/<id>/trust-policy.yaml``   the trust policy in force when queued, if any  (start)
- ``runs-work/<id>/sent.json``           how many of the chunk messages were sent       (start, reaper)
- ``runs-work/<id>/locks/<chunk>``       a renewed lease: one worker per chunk at a time (chunk)
- ``runs-work/<id>/locks/<key>``         the same for one entry's import message        (importing)
- ``runs-work/<id>/started/<chunk>/<key>.json``  written before an import               (chunk, importing)
- ``runs-work/<id>/entries/<chunk>/<key>.json``  an entry's final outcome, created once  (completion, reaper)
- ``runs-work/<id>/settled/<chunk>.json`` final outcomes of a chunk's entries that import nothing,
                                          created once                                   (chunk)
- ``runs-work/<id>/tries/<key>.json``    the last transient failure of an entry          (completion)
- ``runs-work/<id>/chunks/<chunk>.json`` a chunk's outcomes, created once when all are final (completion, reaper)
- ``runs-work/<id>/final.json``          created once by whoever finalises               (completion, reaper)
- ``active/<id>``                         runs not yet final, for the reaper              (start; completion deletes)
- ``runs/<id>.json``                      the record                                      (start, completion)

Entries and started markers live under their chunk, so whatever one delivery reads is bounded by
``RUN_CHUNK_ENTRIES``, never by the run: an import lists its own chunk's finished entries (names
only) to know whether the chunk is complete, and nothing per import lists or reads the whole run.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime, timezone
from typing import Optional

from ...core import runs as core
from ...core.manifest import Entry
from ...errors import AirlockError, TransientError
from ...telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # pool threads keep the run id
from ...telemetry import RunContext
from .. import records
from ..sync import check_manifest

log = logging.getLogger(__name__)

WORK = "runs-work"
LOCK_SNAPSHOT = "images.lock"
ACTIVE = "active/"


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


def _entry_blob(run_id: str, chunk: int, key: str) -> str:
    return _work(run_id, "entries", f"{chunk:05d}", f"{key}.json")


def _started_blob(run_id: str, chunk: int, key: str) -> str:
    return _work(run_id, "started", f"{chunk:05d}", f"{key}.json")


def _settled_blob(run_id: str, chunk: int) -> str:
    return _work(run_id, "settled", f"{chunk:05d}.json")


def _sent_blob(run_id: str) -> str:
    return _work(run_id, "sent.json")


def _name_key(name: str) -> str:
    """The entry key of a blob named ``.../<key>.json``."""
    return name.rsplit("/", 1)[1][:-len(".json")]


def _work_count(record: dict) -> int:
    """Entries the run works on: its lines, with each tag policy expanded into its resolved tags."""
    return record.get("work_entries", record["manifest"]["entries"])


def owner_of(record: dict) -> str:
    """The manifest a run's tags belong to (tag ownership): the record's ``manifest.owner`` when the run was
    queued for another manifest (a self-heal), else the manifest's name."""
    manifest = record.get("manifest") or {}
    return manifest.get("owner") or manifest.get("name") or ""


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


_SNAPSHOTS_KEPT = 8  # runs whose parsed snapshot one process keeps
_snapshots: "OrderedDict[tuple[str, str], tuple[object, list[Entry]]]" = OrderedDict()
_snapshot_locks: dict[tuple[str, str], threading.Lock] = {}
_snapshots_lock = threading.Lock()


def _snapshot_entries(services, run_id: str, record: Optional[dict] = None, start: int = 0,
                      end: Optional[int] = None) -> list[Entry]:
    """The run's work entries (``[start:end]`` of them): its snapshot, validated against the current
    settings, with each tag policy expanded into the tags it resolved to when the run was queued (or,
    for a locked run, the locked entries: its lock snapshot is read with the manifest's when the parse is
    not cached).

    Every chunk and every import message needs them, so a process parses a snapshot once and keeps
    the result for the settings it was validated against, keyed by the snapshot's content hash: 20
    chunk messages of a 1,000-entry run arriving at once wait for one parse instead of running 20 at
    once on one interpreter. Given the run's ``record``, whose ``manifest.sha256`` is that hash, a
    cached parse is found without reading the snapshot blob (a delivery's cost does not grow with the
    manifest's size); otherwise the blob is read and hashed."""
    cached = None
    if record is not None and (record.get("manifest") or {}).get("sha256"):
        cached = _cached(run_id, record["manifest"]["sha256"], services.settings)
    if cached is None:
        cached = _parse_cached(services, run_id, record)
    return list(cached[start:end])


def _cached(run_id: str, sha256: str, settings) -> Optional[list[Entry]]:
    with _snapshots_lock:
        found = _snapshots.get((run_id, sha256))
        if found is not None and found[0] is settings:
            _snapshots.move_to_end((run_id, sha256))
            return found[1]
    return None


def _parse_cached(services, run_id: str, record: Optional[dict]) -> list[Entry]:
    data = services.store.get_bytes(services.settings.outcomes_container, _work(run_id, "manifest.txt"))
    if data is None:
        raise TransientError(f"manifest snapshot of run {run_id} is missing", code="SnapshotMissing")
    key = (run_id, hashlib.sha256(data).hexdigest())
    with _snapshots_lock:
        lock = _snapshot_locks.setdefault(key, threading.Lock())
    with lock:
        found = _cached(*key, services.settings)
        if found is not None:
            return found
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
    return entries


def _parse_snapshot(services, run_id: str, data: bytes, record: Optional[dict]) -> list[Entry]:
    lock = services.store.get_bytes(services.settings.outcomes_container, _work(run_id, LOCK_SNAPSHOT))
    manifest = check_manifest(data, services.settings, lock)
    if not manifest.ok:  # settings changed since the run was queued (allow-list, limits, LOCK_REQUIRED)
        raise SnapshotInvalid(f"manifest snapshot of run {run_id} no longer validates: "
                              + "; ".join(str(p) for p in manifest.errors[:5]))
    if manifest.lock is not None or not manifest.policies:
        return list(manifest.entries)
    # the tags each policy resolved to when the run was queued (the record), in the same order
    record = record if record is not None else records.load(services, run_id)
    resolved = {doc["line"]: doc for doc in record.get("policies") or []}
    added = [Entry(policy.line, replace(policy.source, tag=r["tag"]), policy.target_repository, r["tag"],
                   policy.policy.text, overwrite=policy.overwrite)
             for policy in manifest.policies for r in (resolved.get(policy.line) or {}).get("resolved", [])]
    return sorted([*manifest.entries, *added], key=lambda e: e.line)


def _chunk_done(services, run_id: str, chunk: int) -> set[str]:
    """Keys of the chunk's entries with a final outcome of their own (``entries/<chunk>/``): one listing
    of names, at most ``RUN_CHUNK_ENTRIES`` of them, nothing read."""
    prefix = _work(run_id, "entries", f"{chunk:05d}") + "/"
    names = services.store.list_names(services.settings.outcomes_container, prefix)
    return {_name_key(n) for n in names}


def _settled_outcomes(services, run_id: str, chunk: int) -> Optional[dict[str, dict]]:
    """The chunk's settled outcomes (entries that import nothing) by key; None before they are settled."""
    batch = services.store.get_json(services.settings.outcomes_container, _settled_blob(run_id, chunk))
    if batch is None:
        return None
    return {core.outcome_key(e): e for e in batch.get("entries") or []}


def _chunk_outcomes(services, run_id: str, chunk: int, keys: set[str]) -> dict[str, dict]:
    """Final outcomes of the chunk's entries ``keys``: their own blobs (imports, and anything settled
    alone), then the chunk's settled blob (an entry in both keeps its own outcome). One listing of the
    chunk's entries, then a read each: bounded by the chunk, whatever the run's size."""
    container = services.settings.outcomes_container
    done = sorted(_chunk_done(services, run_id, chunk) & keys)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="ckpt") as pool:
        documents = list(pool.map(lambda k: services.store.get_json(container, _entry_blob(run_id, chunk, k)), done))
    found = {core.outcome_key(d): d for d in documents if d}
    for key, entry in (_settled_outcomes(services, run_id, chunk) or {}).items():
        if key in keys:
            found.setdefault(key, entry)
    return found


def _final_entries(services, run_id: str) -> dict[str, dict]:
    """Every final entry outcome of the run by key: the per-entry blobs of every chunk, then the chunks'
    settled blobs (an entry in both keeps its per-entry outcome). Lists and reads the whole run: only
    for what happens once per run (the reaper, a run ended early), never per delivery."""
    container = services.settings.outcomes_container
    names = services.store.list_names(container, _work(run_id, "entries") + "/")
    settled = services.store.list_names(container, _work(run_id, "settled") + "/")
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="ckpt") as pool:
        documents = list(pool.map(lambda n: services.store.get_json(container, n), names))
        batches = list(pool.map(lambda n: services.store.get_json(container, n), settled))
    found = {core.outcome_key(d): d for d in documents if d}
    for batch in batches:
        for entry in (batch or {}).get("entries") or []:
            found.setdefault(core.outcome_key(entry), entry)
    return found
