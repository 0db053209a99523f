"""The sync engine: manifest -> plan -> imports (and each image's referrers) -> outcome record.

Data flows one way: the core parses and decides (``shared.core``), the adapters act
(``shared.adapters``), and this module orchestrates them and reports progress. It does not read
settings from the environment nor construct clients; ``shared.services.Services`` brings both.

Tag ownership (``shared.core.ownership``): an engine given an ``owner`` (the manifest's name) plans an
update of a tag that manifest does not own as a ``TagConflict`` error (one record read per update),
claims a tag just before importing it (ETag-conditional; refused when another manifest claimed it since
the plan) and adopts unchanged tags that have no record. Without an owner (lock building) none of this
applies; every path that imports passes one. Without storage (the command line may run without it) the
records cannot be read: an update of a tag is then a ``TagConflict`` unless its line says ``(overwrite)``,
new tags are imported (``NoForce`` keeps one that appeared meanwhile) and nothing is claimed or adopted.

With a trust gate (``shared.handlers.trust.TrustGate``: the trust policy in force) the plan verifies
the signatures of each digest it would import, in the same worker as the entry's look-ups, and puts
the verdict on the item (``PlanItem.verification``); an entry an enforce scope rejects is planned as an
error (``SignatureRejected``, one line saying why) and never imported. ``run`` reads the policy in force
from storage; queued runs pass the gate of the policy they were queued under (``handlers.runs.chunk``).
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
from ..core.manifest import ManifestResult, parse_manifest
from ..core.outcome import (RESULT_FAILED, RESULT_IMPORTED, RESULT_PLANNED, RESULT_UNCHANGED, EntryOutcome,
                            RunRecord, redact)
from ..core.ownership import TAG_CONFLICT, adopts, check_update
from ..core.plan import Action, Plan, PlanItem, decide, drift, import_mode
from ..core.trust.verdict import REJECTED_CODE
from ..errors import AirlockError, TransientError, TrustPolicyError, UpstreamError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # pools see the run (log run id, spans)
from ..telemetry import count_referrers, traced_import, traced_plan, traced_run
from .policies import PolicyResolution
from . import ownership

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


_FROM_STORAGE = object()  # SyncEngine(trust=...): read the policy in force when ``run`` starts


class SyncEngine(PolicyResolution):
    def __init__(self, services, *, before_import: Optional[Callable[[PlanItem], None]] = None,
                 owner: Optional[str] = None, run_id: Optional[str] = None, trust=_FROM_STORAGE):
        self.services = services
        self.before_import = before_import  # e.g. a "started" checkpoint (handlers.runs)
        self.owner = owner    # the manifest whose tags this engine writes (tag ownership); None: no checks
        self.run_id = run_id  # named in the ownership records it writes
        self.trust = trust  # a handlers.trust.TrustGate, None (no policy), or read from storage by ``run``
        self.settings = services.settings
        self._records = services.settings.has_storage  # ownership records readable (the CLI may have no storage)
        self._dockerhub_remaining: Optional[int] = None
        self._lock = threading.Lock()
        self._transient_lines: set[int] = set()  # entries whose plan failed on a transient error
        self._carried: dict[tuple, Future] = {}  # referrers carried in this run, by source image and target

    # -- plan -------------------------------------------------------------------------------
    @traced_plan
    def plan(self, manifest: ManifestResult, progress: Optional[Progress] = None,
             on_item: Optional[Callable[[PlanItem], None]] = None) -> Plan:
        """Resolve source and target digests for every entry. Never imports anything. ``on_item`` is
        called with each item as soon as it is planned (a queued chunk sends its imports right away)."""
        if self.trust is _FROM_STORAGE:  # never plan without asking: the policy in force (fails when invalid)
            from .trust import gate_from_storage

            self.trust = gate_from_storage(self.services)
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
        if self.trust is not None:
            self.trust.flush()  # the verdicts this plan cached are readable by the next one, wherever it runs
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
            item = self._check_owner(item)
            item = replace(item, drift=moved) if moved else item
            return self._verify(item)
        except AirlockError as exc:
            if isinstance(exc, TransientError):
                with self._lock:
                    self._transient_lines.add(entry.line)
            return decide(entry, None, None, error=self._describe(exc))

    def _check_owner(self, item: PlanItem) -> PlanItem:
        """An update of a tag this engine's manifest does not own becomes a TagConflict error (one record
        read). A record that cannot be read leaves the update planned: the claim before the import decides."""
        if not self.owner or item.action is not Action.UPDATE or item.entry.overwrite:
            return item
        entry = item.entry
        if not self._records:  # who owns the tag cannot be known: it is not overwritten
            return replace(item, action=Action.ERROR, error=(
                f"{TAG_CONFLICT}: {entry.target} holds another digest and, without storage settings, who owns it "
                "cannot be read (the ownership records are in the outcomes container): not overwritten; set "
                f"AzureWebJobsStorage, or end line {entry.line} with (overwrite)"))
        try:
            record = ownership.record(self.services, entry.target_repository, entry.target_tag)
        except Exception as exc:  # noqa: BLE001 - storage failure: the import-time claim still guards the tag
            log.warning("could not read the owner of %s (%s); the claim before its import decides",
                        entry.target, type(exc).__name__)
            return item
        return check_update(item, record, self.owner)

    def _verify(self, item: PlanItem) -> PlanItem:
        """The trust gate's verdict on what the item would import (an enforce rejection makes it an error)."""
        gate = self.trust
        if gate is None or gate is _FROM_STORAGE or item.source_digest is None or item.action is Action.ERROR:
            return item
        verdict = gate.check(item.entry, item.source_digest) if item.needs_import else gate.unchanged(item.entry)
        if verdict.rejected:
            return replace(item, action=Action.ERROR, error=f"{REJECTED_CODE}: {verdict.line()}",
                           verification=verdict.to_dict())
        return replace(item, verification=verdict.to_dict())

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
        self._adopt([item for item in plan.items if adopts(item)])
        total = len(todo)
        unchanged = [i for i, o in outcomes.items() if o.result == RESULT_UNCHANGED and o.target_digest_after]
        carry_unchanged = self.settings.referrers_enabled and self.settings.referrers_unchanged and unchanged
        if todo or carry_unchanged:
            workers = min(self.settings.concurrency, max(total, len(unchanged) if carry_unchanged else 0))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
                # entries mirrored already: their referrers are compared (new signatures upstream) meanwhile
                carried = {pool.submit(self.with_referrers, outcomes[i]): i for i in unchanged} \
                    if carry_unchanged else {}
                futures = {pool.submit(self._import_one, plan.items[i]): i for i in todo}
                for done, future in enumerate(as_completed(futures), 1):
                    outcome = future.result()
                    outcomes[futures[future]] = outcome
                    if progress:
                        progress("failed" if outcome.failed else "imported", done, total, outcome)
                for future, index in carried.items():
                    outcomes[index] = future.result()
        return [outcomes[i] for i in range(len(plan.items))]

    def _adopt(self, items: list[PlanItem]) -> None:
        """Unchanged tags without an ownership record become this manifest's (one create-once write each, in
        parallel). Best effort: a tag not adopted now is adopted by the next run that finds it unchanged."""
        if not self.owner or not items or not self._records:
            return

        def one(item: PlanItem) -> None:
            try:
                ownership.adopt(self.services, item, self.owner, self.run_id)
            except Exception as exc:  # noqa: BLE001 - logged; the next run adopts it
                log.warning("could not adopt %s for %s (%s)", item.entry.target, self.owner, type(exc).__name__)

        with ThreadPoolExecutor(max_workers=max(1, min(self.settings.plan_concurrency, len(items))),
                                thread_name_prefix="adopt") as pool:
            list(pool.map(one, items))

    def with_referrers(self, outcome: EntryOutcome) -> EntryOutcome:
        """``outcome`` with its entry's referrers carried into the ACR (REFERRERS_ENABLED; an entry whose
        image is in place: imported or unchanged). Never fails the entry (shared.handlers.referrers)."""
        if not self.settings.referrers_enabled or outcome.failed or not outcome.target_digest_after:
            return outcome
        from ..core.referrers import seen_again
        from .referrers import ReferrerCarrier

        entry = outcome.item.entry
        # entries of one run with the same source image and target repository (many tags of one image)
        # carry its referrers once: the others wait for that and report them present
        key = (entry.source.registry, entry.source.repository, outcome.target_digest_after, entry.target_repository)
        with self._lock:
            earlier = self._carried.get(key)
            if earlier is None:
                self._carried[key] = mine = Future()
        if earlier is not None:
            return replace(outcome, referrers=seen_again(earlier.result()))
        report = {"items": [], "missing": [], "skipped": 0,
                  "problems": [{"code": "ReferrersFailed", "message": "interrupted", "retryable": True}]}
        try:
            report = ReferrerCarrier(self.services).carry(entry, outcome.target_digest_after)
        except Exception as exc:  # noqa: BLE001 - the image landed: a bug here must not fail its entry
            log.exception("referrers of %s could not be carried", entry.target)
            report["problems"][0]["message"] = type(exc).__name__
        finally:
            mine.set_result(report)  # whatever happened, entries waiting for it go on
        count_referrers(report)
        return replace(outcome, referrers=report)

    def _import_request(self, item: PlanItem) -> ImportRequest:
        """The importImage call for a planned entry. A source registry that is an ACR
        (SOURCE_ACR_RESOURCE_IDS) is named by resource id, with no address and no credentials: ACR reads
        it with the app's identity. Any other source is named by its address (its mirror, if any), with
        its credentials (SOURCE_REGISTRY_CREDENTIALS, DOCKERHUB_* for docker.io) when it has some."""
        entry = item.entry
        source = entry.source
        targets = dict(target_tags=[f"{entry.target_repository}:{entry.target_tag}"] if entry.target_tag else [],
                       untagged_repositories=[] if entry.target_tag else [entry.target_repository],
                       mode=import_mode(item.action),
                       # import exactly the digest that was planned, even if the source tag moved since
                       source_image=f"{source.repository}@{item.source_digest}")
        resource_id = self.services.acr_source_for(source.registry)
        if resource_id:
            return ImportRequest(registry_uri=None, resource_id=resource_id, **targets)
        creds = self.services.credentials_for(source.registry)
        return ImportRequest(registry_uri=self.settings.endpoint_for(source.registry),
                             username=creds[0] if creds else None, password=creds[1] if creds else None, **targets)

    @traced_import
    def _import_one(self, item: PlanItem) -> EntryOutcome:
        """Claim the tag for this engine's manifest (ETag-conditional; refused when another manifest claimed it
        since the plan: then nothing is imported), import, and give a new tag's claim back when the import
        failed (so a tag pushed by someone else meanwhile, which NoForce kept, is not left owned by us)."""
        started = time.monotonic()
        try:
            claim = ownership.claim(self.services, item, self.owner, self.run_id) \
                if self.owner and self._records else None
        except AirlockError as exc:  # the record kept changing under it: nothing imported, try again
            return EntryOutcome(item, RESULT_FAILED, 0, time.monotonic() - started, exc.code, exc.message,
                                retryable=isinstance(exc, TransientError))
        if claim is not None and claim.refusal is not None:
            log.warning("%s: not imported: %s", item.entry.target, claim.refusal)
            return EntryOutcome(item, RESULT_FAILED, 0, time.monotonic() - started, TAG_CONFLICT, claim.refusal)
        outcome = self._import_claimed(item, started)
        if outcome.failed and claim is not None and item.action is Action.NEW:
            try:
                ownership.release(self.services, item, claim)
            except Exception as exc:  # noqa: BLE001 - the import's own failure is what is reported
                log.warning("could not give back the claim on %s (%s)", item.entry.target, type(exc).__name__)
        return outcome

    def _import_claimed(self, item: PlanItem, started: float) -> EntryOutcome:
        entry = item.entry
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
        outcome = EntryOutcome(item, RESULT_IMPORTED, attempts.count, time.monotonic() - started,
                               target_digest_after=after)
        return self.with_referrers(outcome)  # one more round of imports: its signatures, SBOMs, attestations

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
        trust_error = None
        if self.trust is _FROM_STORAGE:
            from .trust import gate_from_storage, policy_problem

            try:
                self.trust = gate_from_storage(self.services)
            except TrustPolicyError as exc:
                self.trust, trust_error = None, policy_problem(exc)
        record = RunRecord(run_id=run_id or new_run_id(), kind="sync" if apply else "plan", trigger=trigger,
                           manifest_name=name, manifest_sha256=manifest.content_hash,
                           registry=self.settings.registry_name, started_at=_now(),
                           entry_count=len(manifest.entries))
        self.owner = self.owner or name  # the tags it writes are this manifest's
        self.run_id = self.run_id or record.run_id
        record.warnings = [p.to_dict() for p in manifest.warnings]
        if not self.settings.has_storage:
            record.warnings.append({"message": "signatures were not verified: without storage settings the trust "
                                               "policy (TRUST_POLICY_BLOB in MANIFESTS_CONTAINER) cannot be read"})
        record.trust = self.trust.describe() if self.trust is not None else None
        if trust_error is not None:
            record.errors = [trust_error]
            record.finished_at = _now()
            return record
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
