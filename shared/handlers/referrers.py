"""Carrying an entry's referrers into the ACR once its image is there (``ReferrerCarrier.carry``).

``SyncEngine`` calls it after an import lands and, with REFERRERS_UNCHANGED, for entries that were
mirrored already. For one entry and its digest, in rounds:

1. the target's manifest (a bounded GET on the data plane): for an index, its platform manifests are
   subjects too (``shared.core.referrers.subjects``);
2. for every subject at once: its referrers at the source (``shared.adapters.referrers.ReferrerLookup``:
   referrers API or tag schema, cosign's ``.sig`` / ``.att`` / ``.sbom`` tags), then what the target
   has of them (its referrers API for that subject, the HEAD of each cosign tag found);
3. the missing ones, all imported at once (``importImage`` by digest: untagged for API referrers, under
   its own tag for a cosign tag; mode Force, so a moved ``.sig`` tag follows upstream), each retried as
   an image import is (``shared.adapters.retrying``, the probe of ``Acr.import_image``, one deadline);
4. the target's referrers API again for the subjects whose referrers were imported by digest: one it
   does not list is ``missing``.

Rounds 1, 2 and 4 are small reads; round 3 is the one extra round of imports per image. Nothing here
fails the entry: a referrer that could not be imported is recorded with its error (and is a warning of
the run), a look-up that failed is a ``problems`` entry. Importing a digest that is there already is
harmless, so a redelivered import carries again without duplicating anything, and the record lists each
referrer once (``shared.core.referrers.select``).
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from ..adapters.acr import ImportRequest
from ..adapters.referrers import Discovery, ReferrerLookup
from ..core import referrers as core
from ..core.outcome import redact
from ..errors import AirlockError, TransientError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor

log = logging.getLogger(__name__)

WORKERS = 8  # reads and imports of one entry's referrers at once
IMPORT_MODE = "Force"


class ReferrerCarrier:
    def __init__(self, services, *, deadline: Optional[float] = None):
        self.services = services
        self.settings = services.settings
        self.lookup = ReferrerLookup(services.source)
        self.deadline = deadline if deadline is not None else self.settings.import_timeout

    def carry(self, entry, digest: str) -> dict:
        """The report of one entry's referrers (``EntryOutcome.referrers``): {"items", "missing",
        "problems", "skipped"}."""
        report: dict = {"items": [], "missing": [], "problems": [], "skipped": 0}
        end = time.monotonic() + self.deadline
        repository = entry.target_repository
        subjects = self._subjects(repository, digest, report)
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(subjects)), thread_name_prefix="referrers") as pool:
            found_by_subject = list(pool.map(lambda s: self._discover(entry, s, report), subjects))
        found, skipped = core.select((r for d in found_by_subject if d for r in d.referrers),
                                     self.settings.referrer_artifact_types)
        report["skipped"] = skipped + sum(d.skipped for d in found_by_subject if d)
        if not found:
            return report
        listed, tags = self._target_state(repository, found)
        todo = core.to_import(found, listed, tags)
        errors: dict[tuple[str, str], Optional[dict]] = {}
        if todo:
            with ThreadPoolExecutor(max_workers=min(WORKERS, len(todo)), thread_name_prefix="referrer-import") as pool:
                for referrer, error in zip(todo, pool.map(lambda r: self._import(entry, r, end), todo)):
                    errors[referrer.key] = error
        items = []
        for referrer in found:
            if referrer.key not in errors:
                items.append(core.record_item(referrer, core.RESULT_PRESENT))
            elif errors[referrer.key] is None:
                items.append(core.record_item(referrer, core.RESULT_IMPORTED))
            else:
                items.append(core.record_item(referrer, core.RESULT_FAILED, errors[referrer.key]))
        report["items"] = items
        imported_by_digest = {r.subject for r in todo if r.via == core.VIA_REFERRERS and errors.get(r.key) is None}
        if imported_by_digest:
            after = self._listings(repository, sorted(imported_by_digest))
            report["missing"] = core.missing([i for i in items if i["subject"] in after], after)
        counts = {result: sum(i["result"] == result for i in items)
                  for result in (core.RESULT_IMPORTED, core.RESULT_PRESENT, core.RESULT_FAILED)}
        log.info("referrers of %s@%s: %d imported, %d present, %d failed, %d missing", repository, digest,
                 counts[core.RESULT_IMPORTED], counts[core.RESULT_PRESENT], counts[core.RESULT_FAILED],
                 len(report["missing"]))
        return report

    # -- rounds ---------------------------------------------------------------------------------
    def _subjects(self, repository: str, digest: str, report: dict) -> list[str]:
        """The digest and, for an index, its platform manifests (read from the target, which has them)."""
        try:
            answer = self.services.retrier.call(lambda: self.services.acr.manifest(repository, digest),
                                                what=f"ACR manifest {repository}@{digest}")
            return core.subjects(digest, answer[1] if answer else None, f"{repository}@{digest}")
        except (AirlockError, core.Unreadable) as exc:
            report["problems"].append(self._problem(exc))
            return [digest]

    def _discover(self, entry, subject: str, report: dict) -> Optional[Discovery]:
        source = entry.source
        try:
            found = self.services.retrier.call(
                lambda: self.lookup.find(source.registry, source.repository, subject),
                what=f"referrers of {source.repository}@{subject}")
        except AirlockError as exc:
            log.warning("referrers of %s@%s could not be looked up: %s", source.repository, subject, exc.code)
            report["problems"].append(self._problem(exc))  # list.append is atomic: pool threads share it
            return None
        for problem in found.problems:
            report["problems"].append({"code": "UnreadableReferrers", "message": problem[:300], "retryable": False})
        return found

    def _target_state(self, repository: str, found: list[core.Referrer]
                      ) -> tuple[dict[str, list[str]], dict[str, Optional[str]]]:
        """What the target has: its referrers of each subject with API referrers, and each cosign tag's
        digest. A read that fails counts as absent: importing again is harmless."""
        subjects = sorted({r.subject for r in found if r.via == core.VIA_REFERRERS})
        tags = sorted({r.tag for r in found if r.via == core.VIA_TAG and r.tag})

        def tag_digest(tag: str) -> Optional[str]:
            try:
                return self.services.retrier.call(lambda: self.services.acr.tag_digest(repository, tag),
                                                  what=f"ACR tag {repository}:{tag}")
            except AirlockError as exc:
                log.debug("could not read %s:%s (%s); importing it", repository, tag, exc.code)
                return None

        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="referrers-target") as pool:
            listings = pool.submit(self._listings, repository, subjects)
            digests = dict(zip(tags, pool.map(tag_digest, tags)))
            return listings.result(), digests

    def _listings(self, repository: str, subjects: list[str]) -> dict[str, list[str]]:
        def listing(subject: str) -> Optional[list[str]]:
            try:
                listed = self.services.retrier.call(lambda: self.services.acr.referrers(repository, subject),
                                                    what=f"ACR referrers of {repository}@{subject}")
            except AirlockError as exc:
                log.debug("could not list the referrers of %s@%s (%s)", repository, subject, exc.code)
                return None
            return [d.get("digest") for d in listed or [] if isinstance(d.get("digest"), str)]

        if not subjects:
            return {}
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(subjects)), thread_name_prefix="referrers-list") as pool:
            return {s: digests for s, digests in zip(subjects, pool.map(listing, subjects)) if digests is not None}

    def _import(self, entry, referrer: core.Referrer, end: float) -> Optional[dict]:
        """Import one referrer; None when it is in place, else the error document."""
        source = entry.source
        repository = entry.target_repository
        creds = self.services.credentials_for(source.registry)
        request = ImportRequest(
            registry_uri=self.settings.endpoint_for(source.registry),
            source_image=f"{source.repository}@{referrer.digest}",
            target_tags=[f"{repository}:{referrer.tag}"] if referrer.tag else [],
            untagged_repositories=[] if referrer.tag else [repository],
            mode=IMPORT_MODE,
            username=creds[0] if creds else None,
            password=creds[1] if creds else None)
        acr = self.services.acr

        def landed() -> bool:
            if referrer.tag:
                return acr.tag_digest(repository, referrer.tag) == referrer.digest
            return acr.has_manifest(repository, referrer.digest)

        what = f"import referrer {referrer.tag or referrer.digest} of {repository}@{referrer.subject}"
        try:
            self.services.retrier.call(
                lambda: acr.import_image(request, timeout=max(1.0, end - time.monotonic()), landed=landed),
                what=what, deadline=end)
            return None
        except AirlockError as exc:
            try:  # an error with the referrer in place (a dropped poll after it landed) is a success
                if landed():
                    return None
            except AirlockError:
                pass
            log.warning("%s failed: %s: %s", what, exc.code, redact(exc.message, self.settings.secrets()))
            return self._problem(exc)

    def _problem(self, exc: Exception) -> dict:
        if isinstance(exc, AirlockError):
            return {"code": exc.code, "message": redact(exc.message, self.settings.secrets())[:500],
                    "retryable": isinstance(exc, TransientError)}
        return {"code": "UnreadableManifest", "message": str(exc)[:500], "retryable": False}
