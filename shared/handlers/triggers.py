"""Blob, timer and Event Grid triggers: the work each one starts, with its record.

Blob: each upload of a ``*.txt`` manifest is claimed once and queued with the ``*.lock`` beside it
(``handlers.runs``); an uploaded lock starts the run its manifest is waiting for; the build rule file
(``BUILD_RULES_BLOB``) is validated (``handlers.rules``), and so are the trust policy (``TRUST_POLICY_BLOB``)
and trusted roots (``TRUST_ROOTS_PREFIX*.json``) (``handlers.trust``). Timers: the re-sync (queues a run per
manifest), the reaper (``handlers.runs.reap``) and the idle-pool scaler (``handlers.builds``). Event
Grid: every event of this app's registry is recorded once; ImageDeleted queues a self-heal run, ImagePushed
fires build rules; another registry's events are ignored (a log line), and an event that cannot be read
raises (Event Grid retries it, then dead-letters it).

function_app.py hands the trigger payload here. Imports run on the queue (``handlers.runs``), never
here. Transient failures (TransientError) are raised so the runtime redelivers; an invalid manifest
is recorded and not raised; a timer that could not do all its work raises after doing the rest.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from typing import Optional

from ..core.events import AcrEvent, EventFormatError, parse_event
from ..core.ids import upload_id
from ..core.lock import lock_name_for
from ..core.manifest import Entry
from ..core.names import blob_segment
from ..errors import ConflictError, TransientError, ValidationError
from .runs import RunNotSent, claim_and_queue, queue_run, reap
from .runs.start import claims_of
from .sync import check_manifest

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".txt",)
LOCK_SUFFIX = ".lock"
RESYNC_LEASE = "locks/resync"


def is_manifest(name: str) -> bool:
    return name.lower().endswith(MANIFEST_SUFFIXES)


def _blob_name(path: str, container: str) -> str:
    """The trigger gives ``container/name``; keep just the name."""
    prefix = container + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def on_manifest_blob(services, path: str, data: bytes, etag: Optional[str] = None) -> Optional[dict]:
    """A blob was uploaded to the manifests container (``etag``: of this upload, when the trigger says).

    A manifest: this upload is validated with the lock beside it and queued, once whatever the
    deliveries (a re-upload of the same bytes is a new run). A lock: when it agrees with the manifest
    beside it and that manifest's current upload has not run with an agreeing lock yet (the manifest
    came first), that run is queued now; otherwise nothing (the manifest's own upload runs it). The build
    rule file, the trust policy and trusted roots are checked and the result recorded. Anything else is
    ignored."""
    s = services.settings
    name = _blob_name(path, s.manifests_container)
    if name == s.build_rules_blob:
        from .rules import check_rule_file

        return check_rule_file(services, name, data)
    if name == s.trust_policy_blob:
        from .trust import check_trust_policy_file

        return check_trust_policy_file(services, name, data)
    if name.startswith(s.trust_roots_prefix) and name.endswith(".json"):
        from .trust import check_trusted_root_file

        return check_trusted_root_file(services, name, data)
    if name.lower().endswith(LOCK_SUFFIX):
        return _on_lock_blob(services, name, data, etag)
    if not is_manifest(name):
        log.info("ignoring %s: not a manifest (*.txt), a lock (*.lock), the build rule file, the trust policy "
                 "nor a trusted root", name)
        return None
    lock, lock_etag = services.store.get_bytes_etag(s.manifests_container, lock_name_for(name))
    return claim_and_queue(services, name, data, _upload(services, name, data, etag), lock=lock,
                           lock_upload=None if lock is None else upload_id(lock_etag, _sha256(lock)))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _upload(services, name: str, data: bytes, etag: Optional[str]) -> str:
    """This upload's id: the trigger's ETag; else the blob's, read now, when it still holds these bytes;
    else the content hash (then equal bytes count as one upload)."""
    if not etag:
        current, current_etag = services.store.get_bytes_etag(services.settings.manifests_container, name)
        etag = current_etag if current == data else None
    return upload_id(etag, _sha256(data))


def _on_lock_blob(services, name: str, data: bytes, etag: Optional[str]) -> Optional[dict]:
    s = services.settings
    manifest_name = name[:-len(LOCK_SUFFIX)] + ".txt"
    manifest, manifest_etag = services.store.get_bytes_etag(s.manifests_container, manifest_name)
    if manifest is None:
        log.info("lock %s uploaded; its manifest %s is not there yet (its upload will run both)", name,
                 manifest_name)
        return None
    result = check_manifest(manifest, s, data, name=manifest_name, lock_name=name)
    if not result.ok:
        log.info("lock %s does not agree with the current %s (%d problem(s)); waiting for the manifest's upload",
                 name, manifest_name, len(result.errors))
        return None
    upload = upload_id(manifest_etag, _sha256(manifest))
    if any(c.get("status") not in (None, "invalid") for c in claims_of(services, manifest_name, upload)):
        log.info("%s (this upload) already ran with an agreeing lock; nothing to do for %s", manifest_name, name)
        return None
    return claim_and_queue(services, manifest_name, manifest, upload, lock=data,
                           lock_upload=upload_id(etag, _sha256(data)))


def current_manifests(services) -> list[tuple[str, bytes]]:
    s = services.settings
    names = [n for n in services.store.list_names(s.manifests_container) if is_manifest(n)]
    return [(n, services.store.get_bytes(s.manifests_container, n) or b"") for n in sorted(names)]


def current_locks(services, names) -> dict[str, Optional[bytes]]:
    """The lock beside each manifest (None: it has none)."""
    s = services.settings
    present = {n for n in services.store.list_names(s.manifests_container) if n.lower().endswith(LOCK_SUFFIX)}
    return {n: services.store.get_bytes(s.manifests_container, lock_name_for(n)) if lock_name_for(n) in present
            else None for n in names}


def on_resync_timer(services, *, past_due: bool = False) -> list[dict]:
    """Queue a re-sync run of every current manifest, one re-sync at a time (a blob lease). Raises
    (after queueing the others) when any manifest could not be queued.

    A run whose chunk messages the queue would not take is recorded all the same (``RunNotSent``): the
    reaper sends its messages once the queue answers. After the first such failure the other runs of
    this pass are recorded without trying the queue (each try would wait out the SDK's retries), one
    line says so, and the timer does not raise for them: a retry of the timer would only record
    a second run of every manifest."""
    s = services.settings
    if past_due:
        log.info("re-sync timer is past due; running once now (missed runs are not replayed)")
    queued, failures = [], []
    unsent: Optional[RunNotSent] = None
    deferred = 0
    try:
        with services.store.lease(s.outcomes_container, RESYNC_LEASE, seconds=60, renew=True):
            manifests = current_manifests(services)
            locks = current_locks(services, [n for n, _ in manifests])
            for name, data in manifests:
                try:
                    record = queue_run(services, data, name=name, trigger="timer", lock=locks[name],
                                       send=unsent is None)
                    deferred += unsent is not None and record["status"] == "queued"
                    queued.append(record)
                except RunNotSent as exc:  # recorded; the reaper sends its messages
                    unsent = unsent or exc
                    deferred += 1
                    queued.append(exc.record)
                except Exception as exc:  # noqa: BLE001 - reported below, after the other manifests
                    log.error("re-sync: could not queue %s: %s", name, type(exc).__name__)
                    failures.append(name)
    except ConflictError:
        log.info("another re-sync holds the lease; skipping this one")
        return []
    if unsent is not None:
        log.warning("re-sync: the runs queue did not take a message (%s); %d run(s) are recorded and the reaper "
                    "sends their messages once it answers", type(unsent.__cause__).__name__, deferred)
    if failures:
        raise TransientError(f"re-sync could not queue {len(failures)} manifest(s): {', '.join(failures[:10])}",
                             code="ResyncFailed")
    return queued


def on_reaper_timer(services, *, past_due: bool = False) -> list[dict]:
    """Abandon runs with no progress past RUN_DEADLINE_SECONDS (raises when one could not be handled)."""
    return reap(services)


def _event_marker(event: AcrEvent) -> str:
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    return f"events/{day}/{blob_segment(event.id, 120)}.json"


def mirrored_entries(services, repository: str, tag: Optional[str]) -> list[tuple[str, Entry]]:
    """Current manifest entries whose target is ``repository`` (and ``tag`` when given)."""
    found = []
    manifests = current_manifests(services)
    locks = current_locks(services, [n for n, _ in manifests])
    for name, data in manifests:  # a locked manifest's entries carry their locked digests: self-heal restores them
        manifest = check_manifest(data, services.settings, locks[name], name=name)
        for entry in manifest.entries:
            if entry.target_repository == repository and (tag is None or entry.target_tag == tag):
                found.append((name, entry))
    return found


def on_registry_event(services, body: dict) -> dict:
    """Record an ACR event; self-heal a deleted mirrored image. Duplicate ids do no work.

    An event this app cannot read raises ValidationError (code ``InvalidEvent``) without recording it,
    so the invocation fails and Event Grid delivers it again, then dead-letters it: it is never
    acknowledged unread. An event about another registry is ignored with a log line."""
    s = services.settings
    try:
        event = parse_event(body)
    except EventFormatError as exc:
        event_id = body.get("id") if isinstance(body, dict) else None
        log.error("cannot understand Event Grid event (id=%r): %s; failing the invocation so Event Grid retries "
                  "and then dead-letters it", event_id, exc)
        raise ValidationError(f"Event Grid event {event_id!r} cannot be understood: {exc}",
                              code="InvalidEvent") from None
    if not event.from_registry(s.registry_id, services.acr.login_server):
        log.warning("ignoring event %s (%s) from %s: not this app's registry (%s)", event.id, event.type,
                    event.source or event.host, s.registry_id)
        return {"status": "ignored", "reason": "another registry", "event": event.to_dict()}
    marker = _event_marker(event)
    record = {"event": event.to_dict(), "received_at": datetime.now(timezone.utc).isoformat(),
              "status": "recorded", "actions": []}
    if not services.store.create_once(s.outcomes_container, marker, json.dumps(record).encode()):
        log.info("event %s was already handled; ignoring the duplicate delivery", event.id)
        return {"status": "duplicate", "event": event.to_dict()}
    if not event.known:
        log.info("recorded event %s of unhandled type %s", event.id, event.type)
        record["status"] = "ignored"
    elif event.short_type == "ImageDeleted" and s.self_heal:
        try:
            record["actions"] = _self_heal(services, event)
        except Exception:
            # not queued (storage or the queue failed): un-record the event so its redelivery heals
            services.store.delete(s.outcomes_container, marker)
            raise
    elif event.short_type == "ImagePushed":
        record.update(_run_rules(services, event, marker))
    services.store.put_json(s.outcomes_container, marker, record)
    return record


def _run_rules(services, event: AcrEvent, marker: str) -> dict:
    """Build rules for a push. On a transient failure the event is un-recorded and the error raised,
    so Event Grid delivers it again (rules that already fired then count as duplicates)."""
    from .rules import on_image_pushed

    try:
        return on_image_pushed(services, event)
    except TransientError:
        services.store.delete(services.settings.outcomes_container, marker)
        raise


def on_pool_timer(services, *, past_due: bool = False) -> list[dict]:
    """Scale idle agent pools to 0 (and pools at 0 with queued runs up)."""
    from .builds import scale_idle_pools

    if past_due:
        log.info("idle-pool timer is past due; running once now")
    decisions = scale_idle_pools(services)
    errors = [d for d in decisions if d.get("action") == "error"]
    if errors:  # recorded per pool; the invocation fails so the platform's monitoring shows it
        raise TransientError(f"idle-pool timer: {len(errors)} pool(s) failed: "
                             + "; ".join(f"{d['pool']}: {d['reason']}" for d in errors[:5]), code="PoolTimerFailed")
    return decisions


def _self_heal(services, event: AcrEvent) -> list[dict]:
    """One re-import run per manifest that mirrors the deleted image: the tags it restores stay that
    manifest's (tag ownership), so the run is queued with the manifest as ``owner``."""
    entries = mirrored_entries(services, event.repository, event.tag)
    if not entries:
        return []
    names = sorted({n for n, _ in entries})
    log.info("%s was deleted; re-importing %d mirrored entr(ies) from %s", event.repository, len(entries),
             ", ".join(names))
    actions = []
    for name in names:
        mine = [e for n, e in entries if n == name]
        lines = "".join(f"{e.source} => {e.target_repository}" + (f":{e.target_tag}" if e.target_tag else "")
                        + "\n" for e in mine)
        document = queue_run(services, lines, name=f"self-heal:{name}", trigger="event", owner=name,
                             lock=_heal_lock(services, lines, mine))
        actions.append({"action": "reimport", "run_id": document["run_id"], "status": document["status"],
                        "manifest": name, "targets": [e.target for e in mine]})
    return actions


def _heal_lock(services, lines: str, entries: list[Entry]) -> Optional[bytes]:
    """A self-heal of locked entries is itself locked: a lock of exactly their locked digests (so it
    restores what was reviewed, and runs where LOCK_REQUIRED is on). None when any entry is unlocked."""
    from ..core.lock import Lock, LockedImage, manifest_fingerprint
    from dataclasses import replace

    if not entries or not all(e.locked for e in entries):
        return None
    manifest = check_manifest(lines, services.settings)  # unlocked: only to fingerprint what it imports
    images = tuple(LockedImage(e.target, str(replace(e.source, digest=None)), e.source.digest) for e in entries)
    return Lock(manifest_fingerprint(manifest), images).to_text().encode()
