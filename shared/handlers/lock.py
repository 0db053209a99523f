"""Writing ``images.lock`` (``airlock lock``): what a manifest names, resolved to digests at the source.

Talks to the source registries only (HEADs and tag listings, the same adapters as a plan): a lock is
made where the internet is reachable, and needs no ACR and no storage. ``build_lock`` returns the new
lock and what changed against the old one; it never returns half a lock: when any line cannot be
resolved, it raises with every line that failed.

* ``airlock lock`` (``update=False``): lines the old lock already holds (same target, same source;
  a tag policy with locked tags) keep their digests; new lines are resolved; stale ones are dropped.
* ``airlock lock --update``: every line is resolved again (tags that moved get their new digest, tag
  policies select their newest tags again): the pull request a scheduled job opens with it is how new
  releases and moved tags are reviewed.

With a trust gate (``airlock lock --trust-policy FILE``: ``shared.handlers.trust.gate_from_file``) every
digest of the new lock, kept ones included, is verified against its scope as a run would verify it,
and a verified one records its ``signer`` (``{kind, identity | key_id | subject, issuer}``); a line an
enforce scope rejects fails the whole lock (nothing is written; the error names the line and why), an
audit scope's failure is locked without a signer and reported as a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Optional

from ..core.lock import Lock, LockDiff, LockedImage, diff_locks, manifest_fingerprint, parse_lock, policy_images
from ..core.manifest import Entry, ManifestResult
from ..core.trust.verdict import REJECTED_CODE
from ..errors import AirlockError, LockFileError, ManifestError, Problem, UpstreamError, ValidationError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor
from .sync import SyncEngine, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockResult:
    lock: Lock
    diff: LockDiff
    resolved: int         # lines looked up at the source this time
    kept: int             # lock entries kept from the old lock
    old_unreadable: bool  # --update over a lock that did not parse (it was rebuilt)


def build_lock(services, text, *, name: str = "images.txt", old: Optional[bytes] = None, update: bool = False,
               progress: Optional[Callable[[int, int], None]] = None, trust=None) -> LockResult:
    """The lock for manifest ``text`` (see the module docstring). Raises ``ManifestError`` for an invalid
    manifest, ``LockFileError`` for an old lock that does not parse (unless ``update``), and
    ``UpstreamError`` naming every line that could not be resolved or (``trust``: a ``TrustGate``) whose
    signatures an enforce scope rejects."""
    manifest = read_manifest(text, services.settings)
    if not manifest.ok:
        raise ManifestError(f"{name} is not valid; fix it first ({len(manifest.errors)} error(s))",
                            list(manifest.errors))
    old_lock, unreadable = None, False
    if old is not None:
        try:
            old_lock = parse_lock(old)
        except LockFileError:
            if not update:
                raise
            unreadable = True
    keep = {} if update or old_lock is None else old_lock.by_target()
    kept: list[LockedImage] = []
    kept_entries: list[Entry] = []  # the manifest entry of each kept image (a tag policy's: see below)
    todo: list[Entry] = []
    for entry in manifest.entries:
        locked = keep.get(entry.target)
        if locked is not None and locked.source == str(replace(entry.source, digest=None)) and \
                (entry.source.digest is None or entry.source.digest == locked.digest):
            kept.append(locked)
            kept_entries.append(entry)
        else:
            todo.append(entry)
    engine = SyncEngine(services)
    fresh_policies = []
    for policy in manifest.policies:
        held = [] if old_lock is None or update else _held(policy, old_lock)
        kept.extend(held)
        kept_entries.extend(Entry(policy.line, replace(policy.source, tag=h.target.rsplit(":", 1)[1]),
                                  policy.target_repository, h.target.rsplit(":", 1)[1], policy.policy.text)
                            for h in held)
        if not held:
            fresh_policies.append(policy)
    failures: list[Problem] = []
    if fresh_policies:  # list the sources' tags and select, as a run would (explicit lines win a tag)
        expanded, docs = engine.resolve_policies(replace(manifest, policies=fresh_policies))
        for doc in docs:
            if doc["error"]:
                failures.append(Problem(f"{doc['source']}:{doc['policy']}: {doc['error']['code']}: "
                                        f"{doc['error']['message']}", line=doc["line"]))
        todo.extend(e for e in expanded.entries if e.policy)
    images = _resolve(services, todo, failures, progress, trust)
    if trust is not None and kept:  # kept digests are verified too: a lock says what may cross, and who signed
        kept = _verify_kept(services, kept, kept_entries, trust, failures)
    if failures:
        n = len(failures)
        what = "resolved or verified" if trust is not None else "resolved"
        raise UpstreamError(f"{name}: {n} line{'s' if n != 1 else ''} could not be {what}; nothing was written: "
                            + "; ".join(str(p) for p in sorted(failures, key=lambda p: p.line or 0)[:10]),
                            code="LockIncomplete")
    lock = Lock(manifest_fingerprint(manifest), tuple(sorted([*kept, *images], key=lambda i: i.target)))
    return LockResult(lock, diff_locks(old_lock, lock), len(todo), len(kept), unreadable)


def _held(policy, lock: Lock) -> list[LockedImage]:
    return policy_images(policy, lock.images)


def _signed(image: LockedImage, entry: Entry, trust, failures: list[Problem]) -> Optional[LockedImage]:
    """``image`` with the signer its scope verified; None (and a failure naming the line) when an enforce
    scope rejects it. Lookup errors propagate (the caller reports them as the line's failure)."""
    from .trust import signer_of

    verdict = trust.check(entry, image.digest)
    if verdict.rejected:
        failures.append(Problem(f"{entry.source}@{image.digest}: {REJECTED_CODE}: {verdict.line()}", line=entry.line))
        return None
    if verdict.unverified:
        log.warning("line %d: %s@%s: %s; locked without a signer (audit)", entry.line, entry.source, image.digest,
                    verdict.line())
    return replace(image, signer=signer_of(verdict))


def _verify_kept(services, kept: list[LockedImage], entries: list[Entry], trust,
                 failures: list[Problem]) -> list[LockedImage]:
    """The kept images, verified (in parallel) and signed anew; a rejected or unreadable one is a failure."""
    rejected: list[Problem] = []

    def one(pair):
        image, entry = pair
        try:
            return _signed(image, entry, trust, rejected)
        except AirlockError as exc:
            rejected.append(Problem(f"{entry.source}: {exc.code}: {exc.message}", line=entry.line))
            return None

    workers = max(1, min(services.settings.plan_concurrency, len(kept)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lock-verify") as pool:
        signed = list(pool.map(one, zip(kept, entries)))
    failures.extend(rejected)
    return [image for image in signed if image is not None]


def _resolve(services, entries: list[Entry], failures: list[Problem],
             progress: Optional[Callable[[int, int], None]], trust=None) -> list[LockedImage]:
    """The digest of each entry's source (a pinned digest is checked to exist), in parallel; with a trust
    gate, verified and signed (an enforce rejection is a failure of that line)."""
    if not entries:
        return []
    settings = services.settings
    if settings.token_scopes_per_request > 0:
        try:
            services.source.prefetch_tokens([e.source for e in entries], settings.token_scopes_per_request)
        except Exception as exc:  # an optimisation only: each HEAD answers its own challenge otherwise
            log.debug("token prefetch failed: %s", type(exc).__name__)

    rejected: list[Problem] = []

    def one(entry: Entry) -> Optional[LockedImage]:
        head = services.retrier.call(lambda: services.source.head(entry.source), what=f"HEAD {entry.source}")
        image = LockedImage(entry.target, str(replace(entry.source, digest=None)), head.digest, entry.policy)
        return image if trust is None else _signed(image, entry, trust, rejected)

    out: list[LockedImage] = []
    workers = max(1, min(settings.plan_concurrency, len(entries)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lock") as pool:
        futures = [(entry, pool.submit(one, entry)) for entry in entries]
        for done, (entry, future) in enumerate(futures, 1):
            try:
                image = future.result()
                if image is not None:
                    out.append(image)
            except AirlockError as exc:
                failures.append(Problem(f"{entry.source}: {exc.code}: {exc.message}", line=entry.line))
            if progress:
                progress(done, len(entries))
    failures.extend(rejected)
    return out


def lock_check(text, lock_data: Optional[bytes], settings, *, name: str, lock_name: str) -> list:
    """Offline: every disagreement between a manifest and its lock (``core.lock.LockProblem``); a missing
    or unreadable lock is one problem. Raises ``ManifestError`` for an invalid manifest."""
    from ..core.lock import LockProblem, check_lock

    manifest: ManifestResult = read_manifest(text, settings)
    if not manifest.ok:
        raise ManifestError(f"{name} is not valid; fix it first ({len(manifest.errors)} error(s))",
                            list(manifest.errors))
    if lock_data is None:
        return [LockProblem(lock_name, None, "missing", f"{lock_name} does not exist; `airlock lock {name}` "
                                                        "writes it")]
    try:
        lock = parse_lock(lock_data, name=lock_name)
    except ValidationError as exc:
        return [LockProblem(lock_name, p.line, "invalid", p.message) for p in exc.problems]
    return check_lock(manifest, lock, manifest_file=name, lock_file=lock_name)
