"""Outcome records: what a run did, per entry, as one JSON document. Pure: no I/O.

Shape (snake_case throughout, like ``manifest check --json``)::

    {"run_id", "kind": "sync"|"plan", "trigger": "blob"|"http"|"timer"|"cli"|"event",
     "status": "succeeded"|"failed"|"invalid"|"running",
     "manifest": {"name", "sha256", "entries"}, "registry", "started_at", "finished_at",
     "duration_seconds", "summary": {...counts, "drift"...}, "errors": [{"line", "message"}],
     "warnings": [{"line", "message"}], "manifest": {..., "lock": {"sha256", "fingerprint", "images"} or null},
     "dockerhub_ratelimit_remaining", "entries": [EntryOutcome.to_dict(), ...],
     "policies": [...] (only when the manifest has tag policies; see RunRecord.policies),
     "trust": {"policy", "sha256", "scopes"} or null (the trust policy the run verified signatures under)}

An entry resolved from a tag policy carries ``"policy"`` (the policy's text) next to its line; a locked
entry whose source tag moved upstream carries ``"drift": {"locked", "upstream"}`` (it imports the locked
digest; the drift is for review, ``airlock lock --update``). An entry that would replace a tag its manifest does
not own (``shared.core.ownership``) is ``"action": "error"``, ``"result": "failed"`` with ``error.code``
``TagConflict`` (not retryable), its ``previous_target_digest`` the tag's current digest. Under a trust policy
every entry with a source digest carries ``"verification": {"status", "kind", "signer", "issuer", "location",
"reason", "scope", "mode"}`` (``shared.core.trust.verify.ScopeVerdict``); the summary counts ``unverified`` (signatures
required and not verified, enforce or audit) and ``rejected`` (kept out by an enforce scope).

Entries whose image landed (or was there already) carry ``referrers``, ``referrers_missing`` (and, when
some look-up failed, ``referrers_problems``): see ``shared.core.referrers``. Then ``summary.referrers``
counts them ({"imported", "present", "failed", "missing", "skipped"}) and each referrer that could not be
carried is one of the run's ``warnings`` (the run still succeeds: its images landed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Optional, Sequence

from . import referrers as carried
from .plan import Action, PlanItem
from .trust.verdict import counts as verification_counts

RESULT_IMPORTED = "imported"
RESULT_UNCHANGED = "unchanged"
RESULT_FAILED = "failed"
RESULT_PLANNED = "planned"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` with ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass
class EntryOutcome:
    item: PlanItem
    result: str
    attempts: int = 0
    duration: float = 0.0
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    target_digest_after: Optional[str] = None
    retryable: bool = False  # failed on something transient (429, 5xx, connection, deadline)
    # the referrers carried after the image landed (None: not looked at): {"items": [record_item, ...],
    # "missing": [digest, ...], "problems": [{"code", "message", "retryable"}], "skipped": int}
    referrers: Optional[dict] = None

    @property
    def failed(self) -> bool:
        return self.result == RESULT_FAILED

    def to_dict(self) -> dict:
        entry = self.item.entry
        return {
            "line": entry.line,
            "source": str(entry.source),
            "source_digest": self.item.source_digest,
            "target": entry.target,
            "previous_target_digest": self.item.target_digest,
            "target_digest": self.target_digest_after,
            "action": self.item.action.value,
            "result": self.result,
            "attempts": self.attempts,
            "duration_seconds": round(self.duration, 3),
            "error": ({"code": self.error_code, "message": self.error_message, "retryable": self.retryable}
                      if self.error_code or self.error_message else None),
            **({"policy": entry.policy} if entry.policy else {}),
            **({"drift": self.item.drift} if self.item.drift else {}),
            **(self._referrers() if self.referrers is not None else {}),
            **({"verification": self.item.verification} if self.item.verification else {}),
        }

    def _referrers(self) -> dict:
        report = self.referrers or {}
        out = {"referrers": list(report.get("items") or []), "referrers_missing": list(report.get("missing") or [])}
        if report.get("problems"):
            out["referrers_problems"] = list(report["problems"])
        if report.get("skipped"):
            out["referrers_skipped"] = int(report["skipped"])
        return out


@dataclass
class RunRecord:
    run_id: str
    kind: str
    trigger: str
    manifest_name: str
    manifest_sha256: str
    registry: str
    started_at: datetime
    finished_at: Optional[datetime] = None
    entries: list[EntryOutcome] = field(default_factory=list)
    errors: Sequence[dict] = ()
    dockerhub_ratelimit_remaining: Optional[int] = None
    entry_count: int = 0
    # tag policies resolved at plan time: {"line", "source", "policy", "target_repository",
    # "tags_listed", "resolved": [{"tag", "target", "digest"}], "skipped": [...], "error"}
    policies: list = field(default_factory=list)
    warnings: Sequence[dict] = ()   # e.g. an unlocked manifest's: what it imports was not reviewed as digests
    lock: Optional[dict] = None     # the images.lock it ran under: {"sha256", "fingerprint", "images"}
    trust: Optional[dict] = None    # the trust policy it verified under: {"policy", "sha256", "scopes"}

    @property
    def status(self) -> str:
        if self.errors:
            return "invalid"
        if self.finished_at is None:
            return "running"
        if any(o.failed for o in self.entries) or any(p.get("error") for p in self.policies):
            return "failed"
        return "succeeded"

    @property
    def only_transient_failures(self) -> bool:
        """Something failed, and everything that failed failed on something transient."""
        failed = [o for o in self.entries if o.failed]
        return bool(failed) and all(o.retryable for o in failed)

    def summary(self) -> dict:
        """Counts by planned action (new, update, unchanged, error) and by what happened
        (imported, failed, planned); an unchanged entry is counted once, as an action; and ``unverified`` /
        ``rejected`` (``shared.core.trust.verdict.counts``)."""
        counts = {a.value: 0 for a in Action}
        results = {RESULT_IMPORTED: 0, RESULT_FAILED: 0, RESULT_PLANNED: 0}
        drifted = 0
        for outcome in self.entries:
            counts[outcome.item.action.value] += 1
            if outcome.result in results:
                results[outcome.result] += 1
            drifted += bool(outcome.item.drift)
        summary = {**counts, **results, "drift": drifted,
                   **verification_counts(o.to_dict() for o in self.entries), "total": len(self.entries)}
        referrers = carried.summarise(o.to_dict() for o in self.entries if o.referrers is not None)
        if referrers is not None:
            summary["referrers"] = referrers
        return summary

    def to_dict(self) -> dict:
        duration = ((self.finished_at - self.started_at).total_seconds() if self.finished_at else None)
        entries = [o.to_dict() for o in self.entries]
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "trigger": self.trigger,
            "status": self.status,
            "manifest": {"name": self.manifest_name, "sha256": self.manifest_sha256,
                         "entries": self.entry_count, "lock": self.lock},
            "registry": self.registry,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": round(duration, 3) if duration is not None else None,
            "summary": self.summary(),
            "retryable": self.only_transient_failures,
            "errors": list(self.errors),
            "warnings": list(self.warnings) + carried.warnings(entries),
            "dockerhub_ratelimit_remaining": self.dockerhub_ratelimit_remaining,
            "entries": entries,
            **({"policies": list(self.policies)} if self.policies else {}),
            "trust": self.trust,
        }
