"""Tag ownership: which manifest a destination tag belongs to, and what that allows. Pure: no I/O.

The airlock overwrites only tags it owns. Without this, any manifest line could replace any tag of the
ACR (an update imports with mode ``Force``), including images built in-house, and two manifests naming
one tag flipped it on every re-sync.

* **The record.** When a manifest's run writes a tag, ``owners/<blob_segment(repository:tag)>.json`` in
  the outcomes container says so (:func:`owner_document`): ``{"manifest", "run_id", "target", "digest",
  "at"}``. The owner is the manifest's name (the blob name; the CLI's file name; the HTTP API's
  ``?name=``). Untagged imports (``repo@digest``) write no tag and have no owner.
* **At plan time** (:func:`check_update`) an ``update`` (the tag exists and holds another digest) of a
  tag whose record is missing (the airlock never wrote it) or names another manifest is not imported:
  it becomes an ``error`` item with code ``TagConflict`` and a one-line message naming the owner (or
  saying the airlock did not write it) and what to do. ``(overwrite)`` on the line lifts this
  (``Entry.overwrite``). A ``new`` tag (absent) may be claimed by anyone: ACR's ``NoForce`` mode keeps a
  tag that appeared since the plan. An ``unchanged`` tag (it holds the planned digest already) is
  *adopted* when it has no record (how tags imported before ownership existed become owned); a
  record naming another manifest is left as it is.
* **At import time** (:func:`import_refusal`) the record is read again just before the import and the
  claim written with its ETag, so a tag another manifest claimed since the plan is not overwritten.
  The claim is written *before* the import: an import whose record is missing would turn into a
  conflict at the next update, while a claim whose import then failed names the manifest that was
  allowed to write the tag anyway.
* **Across manifests** (:func:`peer_conflicts`) a destination tag belongs to one manifest: when an
  upload is validated, a tag it writes that another current manifest writes too is an error on the
  line, naming the other manifest and its line. A tag policy's destination repository counts too: a
  policy that admits a tag another manifest writes explicitly, or two policies (in two manifests) into
  one repository (whether two policies' tag sets overlap cannot be decided in general), are errors.

Each check costs O(1) per entry: one small record read per changed entry, nothing listed.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional

from shared.core.manifest import OVERWRITE, Entry, ManifestResult, PolicyEntry
from shared.core.names import blob_segment
from shared.core.plan import Action, PlanItem
from shared.errors import Problem

__all__ = ["OWNERS_PREFIX", "TAG_CONFLICT", "adopts", "check_update", "claim_needed", "conflict_message",
           "import_refusal", "overlapping_peers", "owner_blob", "owner_document", "peer_conflicts"]

OWNERS_PREFIX = "owners/"
TAG_CONFLICT = "TagConflict"


def owner_blob(repository: str, tag: str) -> str:
    """The ownership record of ``repository:tag`` (any name stays inside ``owners/``)."""
    return f"{OWNERS_PREFIX}{blob_segment(f'{repository}:{tag}')}.json"


def owner_document(manifest: str, run_id: Optional[str], entry: Entry, digest: Optional[str], at: str) -> dict:
    return {"manifest": manifest, "run_id": run_id, "target": entry.target, "digest": digest, "at": at}


def _short(digest: Optional[str]) -> str:
    return (digest or "?")[:19]


def conflict_message(entry: Entry, record: Optional[dict], manifest: str,
                     current_digest: Optional[str]) -> Optional[str]:
    """Why ``manifest`` may not replace the tag ``entry`` writes (one line, with what to do), or None
    when it may: the line says ``(overwrite)``, or the record names this manifest."""
    if entry.overwrite or entry.target_tag is None:
        return None
    owner = (record or {}).get("manifest")
    if owner == manifest:
        return None
    if not owner:
        return (f"{entry.target} holds {_short(current_digest)}, which the airlock did not write (pushed to the "
                f"registry directly?): not overwritten; to replace it, end line {entry.line} with ({OVERWRITE})")
    run = (record or {}).get("run_id")
    return (f"{entry.target} belongs to manifest {owner}" + (f" (run {run})" if run else "")
            + f": not overwritten; a tag belongs to one manifest: remove line {entry.line}, or, if {owner} no "
            f"longer lists it, end line {entry.line} with ({OVERWRITE}) to take it over")


def check_update(item: PlanItem, record: Optional[dict], manifest: str) -> PlanItem:
    """A planned ``update`` of a tag this manifest does not own becomes an ``error`` (``TagConflict``); any
    other item is returned as it is."""
    if item.action is not Action.UPDATE:
        return item
    message = conflict_message(item.entry, record, manifest, item.target_digest)
    if message is None:
        return item
    return replace(item, action=Action.ERROR, error=f"{TAG_CONFLICT}: {message}")


def import_refusal(item: PlanItem, record: Optional[dict], manifest: str) -> Optional[str]:
    """Just before importing: None when ``manifest`` may write the tag and claim it (a ``new`` tag always:
    the import's ``NoForce`` mode guards it), else why not (the record changed since the plan)."""
    if item.action is Action.NEW:
        return None
    return conflict_message(item.entry, record, manifest, item.target_digest)


def claim_needed(record: Optional[dict], manifest: str, digest: Optional[str]) -> bool:
    """Does the record have to be (re)written to say ``manifest`` wrote ``digest``?"""
    return not record or record.get("manifest") != manifest or record.get("digest") != digest


def adopts(item: PlanItem) -> bool:
    """An ``unchanged`` tag without a record is adopted (the caller creates the record only if absent)."""
    return item.action is Action.UNCHANGED and item.entry.target_tag is not None


# -- across manifests ----------------------------------------------------------------------------

def _explicit(entries: Iterable[Entry]) -> Iterable[Entry]:
    """Lines that name one destination tag (not untagged imports, not tags a policy resolved to)."""
    return (e for e in entries if e.target_tag is not None and not e.policy)


def _hits(manifest: ManifestResult, peers: Iterable[tuple[str, ManifestResult]]) -> Iterable[tuple[str, Problem]]:
    """(peer name, problem) for every peer that writes a destination of a line of ``manifest``. Linear in the
    entries of all of them (a policy is checked against the explicit tags of its repository only)."""
    tags: dict[tuple[str, str], list[tuple[str, int]]] = {}
    by_repository: dict[str, list[tuple[str, str, int]]] = {}
    policies: dict[str, list[tuple[str, PolicyEntry]]] = {}
    for name, peer in peers:
        for entry in _explicit(peer.entries):
            tags.setdefault((entry.target_repository, entry.target_tag), []).append((name, entry.line))
            by_repository.setdefault(entry.target_repository, []).append((entry.target_tag, name, entry.line))
        for policy in peer.policies:
            policies.setdefault(policy.target_repository, []).append((name, policy))
    one = "a destination tag belongs to one manifest"
    for entry in _explicit(manifest.entries):
        for name, line in tags.get((entry.target_repository, entry.target_tag), ()):
            yield name, Problem(f"destination {entry.target} is also written by {name} line {line}: {one}; "
                                "remove it from one of them", line=entry.line)
        for name, policy in policies.get(entry.target_repository, ()):
            if policy.policy.admits(entry.target_tag):
                yield name, Problem(f"destination {entry.target} is also written by the tag policy "
                                    f"{policy.policy.text} on {name} line {policy.line}: {one}; remove it here, or "
                                    "exclude the tag there", line=entry.line)
    for policy in manifest.policies:
        repository = policy.target_repository
        for name, other in policies.get(repository, ()):
            yield name, Problem(f"the tag policy into {repository} overlaps the tag policy on {name} line "
                                f"{other.line}: a repository that tag policies write into belongs to one manifest",
                                line=policy.line)
        for tag, name, line in by_repository.get(repository, ()):
            if policy.policy.admits(tag):
                yield name, Problem(f"the tag policy {policy.policy.text} admits {repository}:{tag}, which {name} "
                                    f"line {line} writes: {one}; exclude the tag here, or remove it there",
                                    line=policy.line)


def peer_conflicts(manifest: ManifestResult, peers: Iterable[tuple[str, ManifestResult]]) -> list[Problem]:
    """Every line of ``manifest`` that writes a destination another manifest (``peers``: name and parsed
    manifest, without their locks) writes too: one problem per line (the first peer found), in line order."""
    first: dict[Optional[int], Problem] = {}
    for _, problem in _hits(manifest, peers):
        first.setdefault(problem.line, problem)
    return sorted(first.values(), key=lambda p: p.line or 0)


def overlapping_peers(manifest: ManifestResult, peers: Iterable[tuple[str, ManifestResult]]) -> set[str]:
    """The names of every peer that writes a destination ``manifest`` writes."""
    return {name for name, _ in _hits(manifest, peers)}
