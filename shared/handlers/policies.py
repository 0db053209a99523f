"""Tag policies resolved to concrete entries, for the sync engine (``SyncEngine`` inherits this).

Each policy's source repository is listed (paginated ``tags/list``, at most ``MAX_TAGS_SCANNED`` tags)
and the policy (``shared.core.tagpolicy``) selects the newest matching tags; a tag another line writes
explicitly is left to that line. Under a lock, nothing is listed: the lock's tags are the entries (new
releases reach the ACR through ``airlock lock --update`` and a review). One resolution document per
policy goes into the record.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

from ..core.manifest import Entry, ManifestResult, PolicyEntry
from ..core.outcome import redact
from ..core.tagpolicy import MAX_TAGS_SCANNED
from ..errors import AirlockError, TransientError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor

log = logging.getLogger(__name__)


class PolicyResolution:
    """Needs ``self.services``, ``self.settings`` and ``self._describe`` (``SyncEngine``)."""

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
