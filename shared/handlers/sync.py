"""The sync engine: manifest -> plan -> imports -> outcome record.

Data flows one way: the core parses and decides (``shared.core``), the adapters act
(``shared.adapters``), and this module orchestrates them and reports progress. It does not read
settings from the environment nor construct clients; ``shared.services.Services`` brings both.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import Future, as_completed
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Optional

from ..adapters.acr import ImportRequest
from ..adapters.retrying import Attempts
from ..core.ids import new_run_id
from ..core.lock import apply_lock
from ..core.manifest import Entry, ManifestResult, PolicyEntry, parse_manifest
from ..core.tagpolicy import MAX_TAGS_SCANNED
from ..core.outcome import (RESULT_FAILED, RESULT_IMPORTED, RESULT_PLANNED, RESULT_UNCHANGED, EntryOutcome,
                            RunRecord, redact)
from ..core.plan import Action, Plan, PlanItem, decide, drift, import_mode
from ..errors import AirlockError, TransientError, UpstreamError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # pools see the run (log run id, spans)
from ..telemetry import traced_import, traced_plan, traced_run

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
LIST_TAGS_FROM = 3  # entries writing to one repository from which its tags are listed, not HEADed
LISTED_PAGE_TAGS = 10  # a listing reads at most one page (100 tags) per this many of the plan's tags
# Progress callback: (event, done, total, outcome) with event in {"planned", "imported", "failed"}.
Progress = Callable[[str, int, int, Optional[EntryOutcome]], None]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _lexically_before(tag: str) -> str:
    """A string just before ``tag`` in code-point order, for ACR's ``last`` (results after it): the last
    character one lower, then the highest tag character ('~' sorts after [A-Za-z0-9_.-]), so no tag lies
    between it and ``tag``."""
    return tag[:-1] + chr(ord(tag[-1]) - 1) + "~"


def read_manifest(text, settings) -> ManifestResult:
    """The manifest alone, validated with the limits and allow-list from settings (no lock applied)."""
    return parse_manifest(text, allowed_registries=settings.allowed_registries,
                          max_bytes=settings.manifest_max_bytes, max_entries=settings.manifest_max_entries)


def check_manifest(text, settings, lock=None, *, name: str = "images.txt",
                   lock_name: Optional[str] = None) -> ManifestResult:
    """Offline validation with the limits and allow-list from settings, then the manifest's lock
    (``shared.core.lock.apply_lock``: the locked entries, or why not; ``lock=None``: unlocked, which
    LOCK_REQUIRED refuses)."""
    manifest = read_manifest(text, settings)
    return apply_lock(manifest, lock, required=settings.lock_required, manifest_file=name, lock_file=lock_name)


def _plan_failure(item: PlanItem, retryable: bool) -> EntryOutcome:
    """An entry whose digests could not be resolved; ``item.error`` is "Code: message" (``_describe``)."""
    code, _, message = (item.error or "PlanError: digest could not be resolved").partition(": ")
    return EntryOutcome(item, RESULT_FAILED, error_code=code, error_message=message, retryable=retryable)


class SyncEngine:
    def __init__(self, services, *, before_import: Optional[Callable[[PlanItem], None]] = None):
        self.services = services
        self.before_import = before_import  # e.g. a "started" checkpoint (handlers.runs)
        self.settings = services.settings
        self._dockerhub_remaining: Optional[int] = None
        self._lock = threading.Lock()
        self._transient_lines: set[int] = set()  # entries whose plan failed on a transient error

    # -- tag policies -------------------------------------------------------------------------
    def resolve_policies(self, manifest: ManifestResult) -> tuple[ManifestResult, list[dict]]:
        """List each policy's source tags and turn the policy into concrete entries (in line order,
        newest first within a line). A resolved tag that another line already writes is skipped
        (the explicit line wins). Returns the manifest with the entries added, and one resolution
        document per policy for the record (its ``resolved`` digests are filled in after planning)."""
        if not manifest.policies:
            return manifest, []
        if manifest.lock is not None:  # locked: the tags the lock lists, already among the entries
            return manifest, [self._locked_policy(policy, manifest) for policy in manifest.policies]
        workers = max(1, min(self.settings.plan_concurrency, len(manifest.policies)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="policy") as pool:
            listed = list(pool.map(self._list_source_tags, manifest.policies))
        taken = {(e.target_repository, e.target_tag): e.line for e in manifest.entries if e.target_tag}
        added: list[Entry] = []
        resolutions = []
        for policy, (tags, error) in zip(manifest.policies, listed):
            doc = {"line": policy.line, "source": str(policy.source), "policy": policy.policy.text,
                   "target_repository": policy.target_repository,
                   "tags_listed": None if tags is None else len(tags), "resolved": [], "skipped": [],
                   "error": error}
            if tags is not None:
                entries = policy.resolve(tags)
                if not entries:
                    doc["error"] = {"code": "NoMatchingTag",
                                    "message": f"none of the {len(tags)} tags of {policy.source} matches "
                                               f"{policy.policy.text}"}
                for entry in entries:
                    other = taken.get((entry.target_repository, entry.target_tag))
                    if other is not None:
                        doc["skipped"].append({"tag": entry.target_tag, "reason": f"written by line {other}"})
                        continue
                    taken[(entry.target_repository, entry.target_tag)] = entry.line
                    added.append(entry)
                    doc["resolved"].append({"tag": entry.target_tag, "target": entry.target, "digest": None})
            resolutions.append(doc)
        entries = sorted([*manifest.entries, *added], key=lambda e: e.line)  # stable: newest first per line
        return replace(manifest, entries=entries), resolutions

    @staticmethod
    def _locked_policy(policy: PolicyEntry, manifest: ManifestResult) -> dict:
        """A locked policy's record document: the tags the lock selected for review (no listing: new
        releases reach the ACR through `airlock lock --update` and a review, not through a run)."""
        selected = [e for e in manifest.entries if e.line == policy.line and e.policy]
        return {"line": policy.line, "source": str(policy.source), "policy": policy.policy.text,
                "target_repository": policy.target_repository, "tags_listed": None, "locked": True,
                "resolved": [{"tag": e.target_tag, "target": e.target, "digest": e.source.digest} for e in selected],
                "skipped": [], "error": None}

    def _list_source_tags(self, policy: PolicyEntry) -> tuple[Optional[list[str]], Optional[dict]]:
        try:
            tags = self.services.retrier.call(
                lambda: self.services.source.tags(policy.source, limit=MAX_TAGS_SCANNED),
                what=f"tags of {policy.source}")
            return tags, None
        except AirlockError as exc:
            log.warning("could not list the tags of %s: %s", policy.source, self._describe(exc))
            return None, {"code": exc.code, "message": redact(exc.message, self.settings.secrets()),
                          "retryable": isinstance(exc, TransientError)}

    # -- plan -------------------------------------------------------------------------------
    @traced_plan
    def plan(self, manifest: ManifestResult, progress: Optional[Progress] = None,
             on_item: Optional[Callable[[PlanItem], None]] = None) -> Plan:
        """Resolve source and target digests for every entry. Never imports anything. ``on_item`` is
        called with each item as soon as it is planned (a queued chunk sends its imports right away)."""
        entries = manifest.entries
        items: list[Optional[PlanItem]] = [None] * len(entries)
        workers = max(1, min(self.settings.plan_concurrency, len(entries) or 1))
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="list") as lister, \
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix="plan") as pool:
            self._prefetch_tokens(entries, lister)
            listings = self._list_busy_repositories(entries, lister)  # overlaps with the source HEADs
            futures = {pool.submit(self._resolve, e, listings): i for i, e in enumerate(entries)}
            for done, future in enumerate(as_completed(futures), 1):
                items[futures[future]] = item = future.result()
                if on_item is not None:
                    on_item(item)
                if progress:
                    progress("planned", done, len(entries), None)
        return Plan([i for i in items if i is not None])

    def _prefetch_tokens(self, entries, pool) -> None:
        """Tokens for every repository the plan reads, many repositories per token request, before
        the look-ups start (instead of a challenge and a token request per repository). A failure
        here costs nothing but speed: the look-ups then answer their own challenges.
        TOKEN_SCOPES_PER_REQUEST=0 turns it off (one challenge and token per repository)."""
        per_token = self.settings.token_scopes_per_request
        if per_token <= 0:
            return
        counts = Counter(e.target_repository for e in entries if e.target_tag)
        pull = list(dict.fromkeys(e.target_repository for e in entries))
        listed = [repo for repo, n in counts.items() if n >= LIST_TAGS_FROM]
        sources = [e.source for e in entries]

        def acr():
            return self.services.acr.prefetch_tokens(pull, listed, per_token)

        def source():
            return self.services.source.prefetch_tokens(sources, per_token)

        for name, future in (("ACR", pool.submit(acr)), ("source", pool.submit(source))):
            try:
                requests = future.result()
                if requests:
                    log.info("%s: %d token request(s) cover the plan's repositories", name, requests)
            except Exception as exc:  # an optimisation only; never fail the plan for it
                log.warning("could not fetch %s tokens ahead (%s); each repository answers its own challenge",
                            name, type(exc).__name__)

    def _list_busy_repositories(self, entries, pool) -> dict[str, Future]:
        """Tag listings of target repositories that several entries write to: a page per 100 tags instead
        of one HEAD per tag. What a listing reads is bounded by the entries it serves, never by the
        repository (a queued run's chunk of 50 entries once listed all 10,000 tags of their repository):
        the first page (a repository that fits in it is listed whole: a tag not in it is absent), then at
        most one page per LISTED_PAGE_TAGS of the plan's tags, from just before its first tag in the
        repository's order to its last (ACR's ``last``; a tag found there has that digest, one not found
        is read with a HEAD). Each future gives (tags, complete), or None when the listing failed (its
        entries then fall back to HEADs)."""
        wanted: dict[str, list[str]] = {}
        for e in entries:
            if e.target_tag:
                wanted.setdefault(e.target_repository, []).append(e.target_tag)
        acr, retrier = self.services.acr, self.services.retrier

        def listing(repo: str, tags: list[str]) -> Optional[tuple[dict[str, str], bool]]:
            try:
                found, complete = retrier.call(lambda: acr.tag_pages(repo, max_pages=1), what=f"ACR tags of {repo}")
                if not complete:
                    more, _ = retrier.call(
                        lambda: acr.tag_pages(repo, after=_lexically_before(min(tags)), through=max(tags),
                                              max_pages=math.ceil(len(tags) / LISTED_PAGE_TAGS)),
                        what=f"ACR tags of {repo}")
                    found.update(more)
                return found, complete
            except AirlockError as exc:
                log.warning("could not list the tags of %s (%s); reading them one by one", repo, exc.code)
                return None

        return {repo: pool.submit(listing, repo, tags) for repo, tags in wanted.items() if len(tags) >= LIST_TAGS_FROM}

    def _resolve(self, entry, listings: dict[str, Future]) -> PlanItem:
        retrier = self.services.retrier
        try:
            upstream, moved = None, None
            if entry.locked and entry.source.tag:  # where the tag points now: drift from the locked digest?
                upstream = self._upstream_tag(entry)
                moved = drift(entry, upstream.digest if upstream else None)
            source = upstream if upstream is not None and moved is None else retrier.call(
                lambda: self.services.source.head(entry.source), what=f"HEAD {entry.source}")
            self._note_ratelimit(entry, source.ratelimit_remaining)
            listed = listings[entry.target_repository].result() if entry.target_repository in listings else None
            if entry.target_tag and listed is not None and (entry.target_tag in listed[0] or listed[1]):
                target = listed[0].get(entry.target_tag)  # found, or absent from a complete listing
            elif entry.target_tag:
                target = retrier.call(
                    lambda: self.services.acr.tag_digest(entry.target_repository, entry.target_tag),
                    what=f"ACR tag {entry.target}")
            else:
                present = retrier.call(
                    lambda: self.services.acr.has_manifest(entry.target_repository, source.digest),
                    what=f"ACR manifest {entry.target_repository}@{source.digest}")
                target = source.digest if present else None
            item = decide(entry, source.digest, target)
            return replace(item, drift=moved) if moved else item
        except AirlockError as exc:
            if isinstance(exc, TransientError):
                with self._lock:
                    self._transient_lines.add(entry.line)
            return decide(entry, None, None, error=self._describe(exc))

    def _upstream_tag(self, entry):
        """The source tag's digest now (None when the tag is gone upstream: that is drift too)."""
        tag = replace(entry.source, digest=None)
        try:
            return self.services.retrier.call(lambda: self.services.source.head(tag), what=f"HEAD {tag}")
        except UpstreamError as exc:
            if exc.code != "SourceNotFound":
                raise
            return None

    def _note_ratelimit(self, entry, remaining: Optional[int]) -> None:
        if remaining is None or entry.source.registry != DOCKER_HUB:
            return
        with self._lock:
            if self._dockerhub_remaining is None or remaining < self._dockerhub_remaining:
                self._dockerhub_remaining = remaining

    def _describe(self, exc: AirlockError) -> str:
        return redact(f"{exc.code}: {exc.message}", self.settings.secrets())

    # -- apply ------------------------------------------------------------------------------
    def apply(self, plan: Plan, progress: Optional[Progress] = None) -> list[EntryOutcome]:
        """Import every new or updated entry; one failure never stops the others."""
        outcomes: dict[int, EntryOutcome] = {}
        todo = []
        for index, item in enumerate(plan.items):
            if item.action is Action.UNCHANGED:
                outcomes[index] = EntryOutcome(item, RESULT_UNCHANGED, target_digest_after=item.target_digest)
            elif item.action is Action.ERROR:
                outcomes[index] = _plan_failure(item, item.entry.line in self._transient_lines)
            else:
                todo.append(index)
        total = len(todo)
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, total),
                                    thread_name_prefix="import") as pool:
                futures = {pool.submit(self._import_one, plan.items[i]): i for i in todo}
                for done, future in enumerate(as_completed(futures), 1):
                    outcome = future.result()
                    outcomes[futures[future]] = outcome
                    if progress:
                        progress("failed" if outcome.failed else "imported", done, total, outcome)
        return [outcomes[i] for i in range(len(plan.items))]

    def _import_request(self, item: PlanItem) -> ImportRequest:
        entry = item.entry
        source = entry.source
        creds = self.services.credentials_for(source.registry)
        return ImportRequest(
            registry_uri=self.settings.endpoint_for(source.registry),
            # import exactly the digest that was planned, even if the source tag moved since
            source_image=f"{source.repository}@{item.source_digest}",
            target_tags=[f"{entry.target_repository}:{entry.target_tag}"] if entry.target_tag else [],
            untagged_repositories=[] if entry.target_tag else [entry.target_repository],
            mode=import_mode(item.action),
            username=creds[0] if creds else None,
            password=creds[1] if creds else None,
        )

    @traced_import
    def _import_one(self, item: PlanItem) -> EntryOutcome:
        entry = item.entry
        started = time.monotonic()
        deadline = started + self.settings.import_timeout
        attempts = Attempts()
        acr = self.services.acr
        error: Optional[AirlockError] = None
        ended = None  # how the import ended: "probe" (the planned digest was seen at the target) or "lro"
        if entry.source.registry == DOCKER_HUB and self._dockerhub_remaining == 0:
            error = AirlockError("Docker Hub pull limit is exhausted; try again after it resets",
                                 code="DockerHubRateLimited")
        else:
            request = self._import_request(item)
            try:
                if self.before_import is not None:
                    self.before_import(item)
                ended = self.services.retrier.call(
                    lambda: acr.import_image(request, timeout=max(1.0, deadline - time.monotonic()),
                                             landed=lambda: self.landed(item)),
                    what=f"import {entry.target}", attempts=attempts, deadline=deadline)
            except AirlockError as exc:
                error = exc
        # the probe's own read saw the planned digest in place: reading it back again would repeat it
        after, read_error = (item.source_digest, None) if ended == "probe" else self._read_back(item)
        if read_error is not None:
            # the read-back itself failed (throttled, 5xx, no token): it says nothing about the digest, so
            # it is never a DigestMismatch; a permanent import error still wins over a transient read error
            failure = error if error is not None and not isinstance(error, TransientError) else read_error
            return EntryOutcome(item, RESULT_FAILED, attempts.count, time.monotonic() - started,
                                failure.code, redact(failure.message, self.settings.secrets()), None,
                                retryable=isinstance(failure, TransientError))
        if error is not None and after != item.source_digest:
            log.warning("import of %s failed: %s", entry.target, self._describe(error))
            return EntryOutcome(item, RESULT_FAILED, attempts.count, time.monotonic() - started,
                                error.code, redact(error.message, self.settings.secrets()), after,
                                retryable=isinstance(error, TransientError))
        if after != item.source_digest:
            message = f"target digest after import is {after}, expected {item.source_digest}"
            return EntryOutcome(item, RESULT_FAILED, attempts.count, time.monotonic() - started,
                                "DigestMismatch", message, after)
        # An error with the right digest in place (e.g. a dropped poll after the import landed,
        # then a NoForce conflict on retry) is a success: the registry holds what was planned.
        return EntryOutcome(item, RESULT_IMPORTED, attempts.count, time.monotonic() - started,
                            target_digest_after=after)

    def landed(self, item: PlanItem) -> bool:
        """One data-plane read (no retries): is the planned digest at the target already?"""
        entry = item.entry
        if entry.target_tag:
            return self.services.acr.tag_digest(entry.target_repository, entry.target_tag) == item.source_digest
        return self.services.acr.has_manifest(entry.target_repository, item.source_digest)

    def _read_back(self, item: PlanItem) -> tuple[Optional[str], Optional[AirlockError]]:
        """(digest at the target or None, the error when it could not be read)."""
        entry = item.entry
        acr = self.services.acr
        try:
            if entry.target_tag:
                return self.services.retrier.call(
                    lambda: acr.tag_digest(entry.target_repository, entry.target_tag), what="read back"), None
            present = self.services.retrier.call(
                lambda: acr.has_manifest(entry.target_repository, item.source_digest), what="read back")
            return (item.source_digest if present else None), None
        except AirlockError as exc:
            log.warning("could not read back %s: %s", entry.target, self._describe(exc))
            return None, exc

    # -- whole runs -------------------------------------------------------------------------
    @traced_run
    def run(self, text, *, name: str, trigger: str, apply: bool = True,
            progress: Optional[Progress] = None, run_id: Optional[str] = None, lock=None) -> RunRecord:
        """Validate (with the manifest's ``lock``, when it has one), plan and (when ``apply``) import;
        returns the record (not yet saved)."""
        manifest = check_manifest(text, self.settings, lock, name=name)
        record = RunRecord(run_id=run_id or new_run_id(), kind="sync" if apply else "plan", trigger=trigger,
                           manifest_name=name, manifest_sha256=manifest.content_hash,
                           registry=self.settings.registry_name, started_at=_now(),
                           entry_count=len(manifest.entries))
        record.warnings = [p.to_dict() for p in manifest.warnings]
        record.lock = None if manifest.lock is None else {
            "sha256": manifest.lock.content_hash, "fingerprint": manifest.lock.manifest,
            "images": len(manifest.lock.images)}
        if not manifest.ok:
            record.errors = [p.to_dict() for p in manifest.errors]
            record.finished_at = _now()
            return record
        record.entry_count = len({e.line for e in manifest.entries} | {p.line for p in manifest.policies})
        manifest, record.policies = self.resolve_policies(manifest)
        plan = self.plan(manifest, progress)
        digests = {(i.entry.line, i.entry.target_tag): i.source_digest for i in plan.items if i.entry.policy}
        for doc in record.policies:
            for resolved in doc["resolved"]:
                resolved["digest"] = digests.get((doc["line"], resolved["tag"]))
        record.dockerhub_ratelimit_remaining = self._dockerhub_remaining
        if apply:
            record.entries = self.apply(plan, progress)
        else:
            record.entries = [_plan_failure(item, item.entry.line in self._transient_lines)
                              if item.action is Action.ERROR
                              else EntryOutcome(item, RESULT_PLANNED) for item in plan.items]
        record.finished_at = _now()
        return record
