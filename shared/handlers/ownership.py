"""Tag ownership records in the outcomes container, and the check of an upload against the other manifests.

The rules are ``shared.core.ownership``; this module reads and writes what they decide on:

- ``owners/<blob_segment(repository:tag)>.json``  ``{"manifest", "run_id", "target", "digest", "at"}``: the
  manifest a destination tag belongs to. Read once per planned update (``record``); written with its ETag
  just before a manifest's import writes the tag (``claim``), and put back as it was when the import of a
  new tag failed (``release``: ``NoForce`` refused it, so someone else's tag is there); created when
  missing for a tag a run finds unchanged (``adopt``: tags imported before ownership existed).

``peer_problems`` is the upload check: the other current manifests of the manifests container are read (in
parallel, each parsed once per content and settings) and every line of the upload that writes a destination
one of them writes is a problem. A manifest whose current upload was refused (its runs are all ``invalid``)
claims nothing: otherwise the manifest refused for an overlap would in turn block the one it overlapped.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Callable, Optional

from ..core import ownership as core
from ..core.ids import upload_id
from ..core.manifest import ManifestResult, parse_manifest
from ..core.plan import PlanItem
from ..errors import Problem, TransientError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".txt"
CLAIM_ATTEMPTS = 3  # a claim that keeps losing the ETag race is raised (the delivery is retried)
_PARSED: dict[tuple, ManifestResult] = {}  # (sha256, limits, allow-list) -> parsed peer manifest
_PARSED_MAX = 512
_parsed_lock = threading.Lock()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def record(services, repository: str, tag: str) -> Optional[dict]:
    """The ownership record of ``repository:tag`` (None: the airlock never wrote it)."""
    return services.store.get_json(services.settings.outcomes_container, core.owner_blob(repository, tag))


@dataclass(frozen=True)
class Claim:
    """What ``claim`` did: ``refusal`` (why the tag may not be written, or None), the record it replaced and
    the one it wrote (None: it wrote nothing), for ``release``."""

    refusal: Optional[str] = None
    previous: Optional[dict] = None
    written: Optional[dict] = None


def claim(services, item: PlanItem, manifest: str, run_id: Optional[str]) -> Claim:
    """Just before ``item``'s import: make the tag ``manifest``'s (ETag-conditional). ``refusal`` says why it
    may not be imported (another manifest claimed the tag since the plan). Untagged: nothing to claim."""
    entry = item.entry
    if entry.target_tag is None:
        return Claim()
    container = services.settings.outcomes_container
    blob = core.owner_blob(entry.target_repository, entry.target_tag)
    for _ in range(CLAIM_ATTEMPTS):
        current, etag = services.store.get_json_etag(container, blob)
        refusal = core.import_refusal(item, current, manifest)
        if refusal is not None:
            return Claim(refusal, current)
        if not core.claim_needed(current, manifest, item.source_digest):
            return Claim(None, current)
        document = core.owner_document(manifest, run_id, entry, item.source_digest, _now())
        if services.store.put_json_if(container, blob, document, etag):
            if current and current.get("manifest") != manifest:
                log.warning("%s: claimed by %s from %s", entry.target, manifest, current.get("manifest"))
            return Claim(None, current, document)
    raise TransientError(f"the ownership record of {entry.target} kept changing; retrying the delivery",
                         code="OwnerRecordBusy")


def release(services, item: PlanItem, done: Claim) -> None:
    """Undo a claim whose import failed: the record it replaced comes back (or none is left), unless the
    record changed since (another claim stands)."""
    if done.written is None:
        return
    entry = item.entry
    container = services.settings.outcomes_container
    blob = core.owner_blob(entry.target_repository, entry.target_tag)
    current, etag = services.store.get_json_etag(container, blob)
    if current != done.written:
        return
    if done.previous is not None:
        services.store.put_json_if(container, blob, done.previous, etag)
    else:
        services.store.delete(container, blob)
    log.info("%s: claim given back (its import failed)", entry.target)


def adopt(services, item: PlanItem, manifest: str, run_id: Optional[str]) -> bool:
    """An unchanged tag with no record becomes ``manifest``'s (create-once: a record is never replaced here)."""
    if not core.adopts(item):
        return False
    import json

    entry = item.entry
    document = core.owner_document(manifest, run_id, entry, item.target_digest, _now())
    created = services.store.create_once(services.settings.outcomes_container,
                                         core.owner_blob(entry.target_repository, entry.target_tag),
                                         json.dumps(document, indent=2).encode())
    if created:
        log.info("%s: adopted by %s (it already held the planned digest)", entry.target, manifest)
    return created


# -- the upload check ------------------------------------------------------------------------------

def _parse(data: bytes, settings) -> ManifestResult:
    key = (hashlib.sha256(data).hexdigest(), settings.manifest_max_bytes, settings.manifest_max_entries,
           tuple(sorted(settings.allowed_registries)) if settings.allowed_registries is not None else None)
    with _parsed_lock:
        cached = _PARSED.get(key)
    if cached is not None:
        return cached
    parsed = parse_manifest(data, allowed_registries=settings.allowed_registries,
                            max_bytes=settings.manifest_max_bytes, max_entries=settings.manifest_max_entries)
    with _parsed_lock:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def peer_problems(services, name: str, manifest: ManifestResult,
                  refused: Callable[[str, str], bool]) -> list[Problem]:
    """Lines of ``manifest`` (uploaded as ``name``) writing a destination another current manifest writes.
    ``refused(peer, upload)``: that upload of a peer was refused (it claims nothing)."""
    s = services.settings
    names = [n for n in services.store.list_names(s.manifests_container)
             if n.lower().endswith(MANIFEST_SUFFIX) and n != name]
    if not names:
        return []

    def read(peer: str):
        data, etag = services.store.get_bytes_etag(s.manifests_container, peer)
        return peer, data, etag

    with ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="peers") as pool:
        fetched = [(peer, data, etag) for peer, data, etag in pool.map(read, names) if data is not None]
    parsed = [(peer, _parse(data, s), data, etag) for peer, data, etag in fetched]
    hit = core.overlapping_peers(manifest, [(peer, result) for peer, result, _, _ in parsed])
    # only the peers that overlap are asked whether their current upload was refused (one listing each)
    live = [(peer, result) for peer, result, data, etag in parsed
            if peer in hit and not refused(peer, upload_id(etag, hashlib.sha256(data).hexdigest()))]
    return core.peer_conflicts(manifest, live)
