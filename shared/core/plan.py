"""Deciding what to do with each manifest entry, given the digests the adapters looked up.

Pure code: no I/O, standard library only.

``decide`` is the whole rule set:

* an error was given, or the source digest is unknown  -> ``ERROR``
* the target tag does not exist (target digest unknown) -> ``NEW``    (import with ``NoForce``)
* source and target digests are equal                  -> ``UNCHANGED``
* otherwise                                            -> ``UPDATE`` (import with ``Force``)

For a digest-pinned entry (``repo@sha256:...`` or ``repo:tag@sha256:...``) the pinned digest
*is* the source digest: that is what gets imported, whatever the tag points at upstream
today, so the caller need not resolve it (a resolved value passed in is ignored).

For an untagged entry the caller passes as ``target_digest`` the pinned digest if the
target repository already holds that manifest, else ``None``.

A locked entry (``Entry.locked``: its source digest comes from ``images.lock``) is decided on the
locked digest like a pinned one. The caller also looks the source *tag* up; when it no longer points
at the locked digest (or is gone) the item carries ``drift`` (``{"locked", "upstream"}``), which is
reported, never imported: only ``airlock lock --update`` and a review move a lock.

With a trust policy in force the planner also verifies the signatures of what an entry would import
and carries the verdict on the item (``verification``); an entry an enforce scope rejects becomes
``ERROR`` (code ``SignatureRejected``): it is never imported.

Digests are compared case-insensitively (they are lowercase by spec; this only guards
against a needless forced re-import if an adapter ever reports upper case).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from shared.core.manifest import Entry

__all__ = ["Action", "Plan", "PlanItem", "decide", "drift", "import_mode"]


class Action(str, Enum):
    NEW = "new"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    ERROR = "error"


@dataclass(frozen=True)
class PlanItem:
    entry: Entry
    action: Action
    source_digest: Optional[str]
    target_digest: Optional[str]
    error: Optional[str] = None
    drift: Optional[dict] = None  # {"locked": digest, "upstream": digest or None (the tag is gone)}
    # the signature verdict under the trust policy (``ScopeVerdict.to_dict``), when a policy is in force
    verification: Optional[dict] = None

    @property
    def needs_import(self) -> bool:
        return self.action in (Action.NEW, Action.UPDATE)

    def to_dict(self) -> dict:
        return {
            "line": self.entry.line,
            "source": str(self.entry.source),
            "source_digest": self.source_digest,
            "target": self.entry.target,
            "target_digest": self.target_digest,
            "action": self.action.value,
            "error": self.error,
            **({"drift": self.drift} if self.drift else {}),
            **({"verification": self.verification} if self.verification else {}),
        }


def decide(entry: Entry, source_digest: Optional[str], target_digest: Optional[str],
           error: Optional[str] = None) -> PlanItem:
    """Classify one entry. See the module docstring for the rules."""
    if entry.source.digest is not None:
        source_digest = entry.source.digest
    if error is not None:
        return PlanItem(entry, Action.ERROR, source_digest, target_digest, error)
    if source_digest is None:
        return PlanItem(entry, Action.ERROR, None, target_digest,
                        "source digest could not be resolved")
    if target_digest is None:
        return PlanItem(entry, Action.NEW, source_digest, None)
    if source_digest.lower() == target_digest.lower():
        return PlanItem(entry, Action.UNCHANGED, source_digest, target_digest)
    return PlanItem(entry, Action.UPDATE, source_digest, target_digest)


def drift(entry: Entry, upstream_digest: Optional[str]) -> Optional[dict]:
    """``{"locked", "upstream"}`` when a locked entry's source tag no longer points at the locked digest
    (``upstream_digest`` None: the tag is gone); None otherwise."""
    if not entry.locked or entry.source.digest is None:
        return None
    if upstream_digest is not None and upstream_digest.lower() == entry.source.digest.lower():
        return None
    return {"locked": entry.source.digest, "upstream": upstream_digest}


def import_mode(action: Action) -> str:
    """The ACR import ``mode`` for an action that needs an import.

    ``NoForce`` for a new tag, so a tag that appeared since planning is not overwritten
    silently (ACR rejects the import instead); ``Force`` for an update.
    """
    if action is Action.NEW:
        return "NoForce"
    if action is Action.UPDATE:
        return "Force"
    raise ValueError(f"action {Action(action).value!r} does not import anything")


@dataclass
class Plan:
    items: list[PlanItem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {action.value: 0 for action in Action}
        for item in self.items:
            out[item.action.value] += 1
        return out

    @property
    def changed(self) -> list[PlanItem]:
        """Items that need an import (NEW or UPDATE), in manifest order."""
        return [item for item in self.items if item.needs_import]

    @property
    def errors(self) -> list[PlanItem]:
        return [item for item in self.items if item.action is Action.ERROR]

    def to_dict(self) -> dict:
        return {"counts": self.counts(), "items": [item.to_dict() for item in self.items]}
