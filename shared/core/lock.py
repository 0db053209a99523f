"""``images.lock``: the digests reviewed with an ``images.txt``, so that only what was reviewed crosses.

Pure code: no I/O. The lock is written by ``airlock lock`` (``shared.handlers.lock`` resolves the
digests), reviewed in the same pull request as the manifest, and uploaded beside it. Format (YAML
written by :meth:`Lock.to_text`: deterministic, one image per block, sorted by target, so a digest
change is a one-line diff)::

    # images.lock: the image digests reviewed with images.txt. Written by `airlock lock`.
    version: 1
    manifest: "sha256:<hex>"        # fingerprint of the manifest's entries (manifest_fingerprint)
    images:
    - target: "ingress-nginx/controller:v1.11.1"
      source: "registry.k8s.io/ingress-nginx/controller:v1.11.1"
      digest: "sha256:<hex>"        # the index digest for a multi-platform image
    - target: "library/nginx:1.27.3"
      source: "docker.io/library/nginx:1.27.3"
      policy: "{semver: ~1.27, newest: 2}"   # the tag policy of the line it was selected by
      digest: "sha256:<hex>"
      signer: {kind: "keyless", identity: "...", issuer: "..."}   # when a trust policy verified it

Rules:

* The fingerprint covers what a manifest imports (each line's normalised source and target, each tag
  policy's source, policy and destination), not its comments, blank lines or order: a lock stays
  valid across edits that change nothing it locks, and goes stale with any that do. A line's
  ``(overwrite)`` is not in it: it decides whether an existing tag the manifest does not own may be
  replaced, not which digest goes where, so adding or removing it needs no new lock.
* A manifest and a lock *agree* (:func:`check_lock`) when every line has its lock entries (a line's
  target; a tag policy at least one selected tag), every lock entry belongs to a line (same target,
  same source), a digest pinned in the manifest equals the locked one, and the fingerprints match.
  Each disagreement is a :class:`LockProblem` naming the file and line it is about.
* :func:`locked_entries` gives the entries a locked run imports: each line's source with the locked
  digest (``Entry.locked``), a tag policy's line expanded to the tags the lock lists. A tag that
  moved upstream since is *drift*: the planner reports it and still imports only the locked digest.
* :func:`apply_lock` is what every run does with a manifest and the lock that came with it: agreeing,
  the manifest's entries become the locked entries; disagreeing (or a lock that does not parse), the
  manifest is invalid with every problem; without a lock, the manifest is used as it is, with a
  warning (or, when locks are required, an error).
* :func:`parse_lock` reports every problem with its line (``shared.core.yamlfile``), never raises
  anything but ``LockFileError``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence, Union

from shared.core.manifest import Entry, ManifestResult, PolicyEntry
from shared.core.reference import ImageReference, ReferenceSyntaxError, parse_reference, parse_repository, \
    validate_tag
from shared.core.safeyaml import Limits
from shared.core.yamlfile import Problems, Yaml12Loader, decode, load, locate
from shared.errors import LockFileError, Problem

__all__ = ["LOCK_VERSION", "Lock", "LockDiff", "LockProblem", "LockedImage", "apply_lock", "check_lock", "diff_locks",
           "lock_name_for", "locked_entries", "manifest_fingerprint", "parse_lock", "policy_images"]

LOCK_VERSION = 1
MAX_LOCK_BYTES = 8 * 1024 * 1024
LIMITS = Limits(max_depth=8, max_aliases=0, max_nodes=400_000)  # flat, no aliases: written by a program
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_KEYS = ("version", "manifest", "images")
_IMAGE_KEYS = ("target", "source", "digest", "policy", "signer")
_SIGNER_KEYS = ("kind", "identity", "issuer", "key_id", "subject")
class _Loader(Yaml12Loader):
    """The bounded YAML 1.2 loader with a lock file's limits."""

    limits = LIMITS


HEADER = ("# images.lock: the image digests reviewed with images.txt. Written by `airlock lock`;\n"
          "# review digest changes like code. `airlock lock --update` refreshes it, `airlock lock --check`\n"
          "# fails when it does not match images.txt. Not to be edited by hand.\n")


def lock_name_for(manifest_name: str) -> str:
    """``images.txt`` -> ``images.lock``; ``team/a.txt`` -> ``team/a.lock``; other names get ``.lock``."""
    return (manifest_name[:-4] if manifest_name.endswith(".txt") else manifest_name) + ".lock"


@dataclass(frozen=True)
class LockedImage:
    target: str                     # repo:tag, or repo@digest for an untagged import
    source: str                     # the normalised source reference, without digest
    digest: str
    policy: Optional[str] = None    # the tag policy (its text) of the line that selected this tag
    signer: Optional[Mapping[str, str]] = None
    line: Optional[int] = field(default=None, compare=False)  # where it is in the lock file

    def to_dict(self) -> dict:
        out = {"target": self.target, "source": self.source, "digest": self.digest}
        if self.policy:
            out["policy"] = self.policy
        if self.signer:
            out["signer"] = dict(self.signer)
        return out


@dataclass(frozen=True)
class Lock:
    manifest: str                   # "sha256:<hex>": manifest_fingerprint of the manifest it was made for
    images: tuple[LockedImage, ...]
    content_hash: str = ""          # sha256 of the lock file's bytes

    def by_target(self) -> dict[str, LockedImage]:
        return {image.target: image for image in self.images}

    def to_text(self) -> str:
        """The file: deterministic (sorted by target, fixed key order, JSON-quoted strings)."""
        q = json.dumps
        out = [HEADER, f"version: {LOCK_VERSION}\n", f"manifest: {q(self.manifest)}\n"]
        if not self.images:
            out.append("images: []\n")
            return "".join(out)
        out.append("images:\n")
        for image in sorted(self.images, key=lambda i: i.target):
            out.append(f"- target: {q(image.target)}\n  source: {q(image.source)}\n")
            if image.policy:
                out.append(f"  policy: {q(image.policy)}\n")
            out.append(f"  digest: {q(image.digest)}\n")
            if image.signer:
                fields = ", ".join(f"{k}: {q(str(v))}" for k, v in sorted(image.signer.items()))
                out.append(f"  signer: {{{fields}}}\n")
        return "".join(out)

    def to_dict(self) -> dict:
        return {"version": LOCK_VERSION, "manifest": self.manifest,
                "images": [i.to_dict() for i in sorted(self.images, key=lambda i: i.target)]}


@dataclass(frozen=True)
class LockProblem:
    """A disagreement between a manifest and its lock: in ``file`` (the manifest's or the lock's name) at
    ``line``. ``code``: unlocked | stale | source-changed | pinned-digest | policy-unlocked | fingerprint."""

    file: str
    line: Optional[int]
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class LockDiff:
    """What ``lock --update`` changed: targets added and removed, digests that moved (old, new)."""

    added: tuple[LockedImage, ...] = ()
    removed: tuple[LockedImage, ...] = ()
    changed: tuple[tuple[LockedImage, LockedImage], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        out = [f"+ {i.target}  {i.digest}  ({i.source})" for i in self.added]
        out += [f"- {i.target}  {i.digest}" for i in self.removed]
        out += [f"~ {new.target}  {old.digest} -> {new.digest}" for old, new in self.changed]
        return out

    def to_dict(self) -> dict:
        return {"added": [i.to_dict() for i in self.added], "removed": [i.to_dict() for i in self.removed],
                "changed": [{"target": new.target, "from": old.digest, "to": new.digest} for old, new in self.changed]}


# -- fingerprint and agreement -------------------------------------------------------------------

def _source_without_digest(ref: ImageReference) -> str:
    return str(replace(ref, digest=None))


def _line_key(entry: Entry) -> str:
    return f"{entry.source} => {entry.target}"


def _policy_key(policy: PolicyEntry) -> str:
    return f"{policy.source}:{policy.policy.text} => {policy.target_repository}"


def manifest_fingerprint(manifest: ManifestResult) -> str:
    """sha256 over the sorted keys of what the manifest imports (see the module docstring)."""
    keys = sorted([_line_key(e) for e in manifest.entries if not e.policy]
                  + [_policy_key(p) for p in manifest.policies])
    return "sha256:" + hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def policy_images(policy: PolicyEntry, images: Sequence[LockedImage]) -> list[LockedImage]:
    """The lock's images a tag policy line selected (same policy, source repository and destination)."""
    prefix = policy.target_repository + ":"
    return [i for i in images if i.policy == policy.policy.text and i.target.startswith(prefix)
            and i.source.rsplit(":", 1)[0] == policy.source.name]


def check_lock(manifest: ManifestResult, lock: Lock, *, manifest_file: str = "images.txt",
               lock_file: str = "images.lock") -> list[LockProblem]:
    """Every way the two disagree (empty: they agree). The manifest must be valid."""
    problems: list[LockProblem] = []
    by_target = lock.by_target()
    used: set[str] = set()
    for entry in manifest.entries:
        locked = by_target.get(entry.target)
        if locked is None:
            problems.append(LockProblem(manifest_file, entry.line, "unlocked",
                                        f"{entry.source} => {entry.target} has no entry in {lock_file}; "
                                        "run `airlock lock` to add it"))
            continue
        used.add(locked.target)
        if locked.source != _source_without_digest(entry.source):
            problems.append(LockProblem(manifest_file, entry.line, "source-changed",
                                        f"{entry.target} is locked from {locked.source} ({lock_file} line "
                                        f"{locked.line}), but this line imports {entry.source}; run `airlock lock`"))
        elif entry.source.digest and entry.source.digest != locked.digest:
            problems.append(LockProblem(manifest_file, entry.line, "pinned-digest",
                                        f"this line pins {entry.source.digest}, {lock_file} line {locked.line} "
                                        f"locks {locked.digest}"))
    for policy in manifest.policies:
        selected = policy_images(policy, lock.images)
        used.update(i.target for i in selected)
        if not selected:
            problems.append(LockProblem(manifest_file, policy.line, "policy-unlocked",
                                        f"the tag policy {policy.policy.text} of {policy.source} has no locked "
                                        f"tags in {lock_file}; run `airlock lock` to select them"))
    for image in lock.images:
        if image.target not in used:
            problems.append(LockProblem(lock_file, image.line, "stale",
                                        f"{image.target} (from {image.source}) is locked, but no line of "
                                        f"{manifest_file} imports it; run `airlock lock` to drop it"))
    if not problems and lock.manifest != manifest_fingerprint(manifest):
        problems.append(LockProblem(lock_file, None, "fingerprint",
                                    f"{lock_file} was made for another version of {manifest_file} "
                                    f"({lock.manifest[:19]}...); run `airlock lock`"))
    return problems


def locked_entries(manifest: ManifestResult, lock: Lock) -> list[Entry]:
    """The entries a locked run imports, in line order (see the module docstring). The two must agree
    (:func:`check_lock`); an entry without a lock entry raises ``ValueError``."""
    by_target = lock.by_target()
    out: list[Entry] = []
    for entry in manifest.entries:
        locked = by_target.get(entry.target)
        if locked is None:
            raise ValueError(f"line {entry.line}: {entry.target} is not in the lock")
        out.append(replace(entry, source=replace(entry.source, digest=locked.digest), locked=True))
    for policy in manifest.policies:
        for image in sorted(policy_images(policy, lock.images), key=lambda i: i.target):
            tag = image.target.split(":", 1)[1]
            out.append(Entry(policy.line, replace(policy.source, tag=tag, digest=image.digest),
                             policy.target_repository, tag, policy.policy.text, locked=True,
                             overwrite=policy.overwrite))
    return sorted(out, key=lambda e: e.line)


def diff_locks(old: Optional[Lock], new: Lock) -> LockDiff:
    before = old.by_target() if old is not None else {}
    after = new.by_target()
    return LockDiff(
        added=tuple(after[t] for t in sorted(after.keys() - before.keys())),
        removed=tuple(before[t] for t in sorted(before.keys() - after.keys())),
        changed=tuple((before[t], after[t]) for t in sorted(after.keys() & before.keys())
                      if before[t].digest != after[t].digest))


# -- reading a lock file -------------------------------------------------------------------------

def _check_target(text: str) -> Optional[str]:
    repository, sep, rest = text.partition("@") if "@" in text else text.partition(":")
    try:
        parse_repository(repository)
        if not sep:
            return "must be repository:tag or repository@digest"
        if sep == "@":
            if not _DIGEST.fullmatch(rest):
                return "the digest must be sha256:<64 hex>"
        else:
            validate_tag(rest)
    except ReferenceSyntaxError as exc:
        return exc.reason
    return None


def _check_source(text: str) -> Optional[str]:
    try:
        ref = parse_reference(text)
    except ReferenceSyntaxError as exc:
        return exc.reason
    if ref.digest is not None:
        return "the source is written without a digest (the digest has its own key)"
    if str(ref) != text:
        return f"write it normalised: {ref}"
    return None


def _image(i: int, item: Any, problems: Problems) -> Optional[LockedImage]:
    at = ("images", i)
    if not isinstance(item, Mapping):
        problems.add(at, "each image is a mapping with target, source and digest")
        return None
    for key in item:
        if key not in _IMAGE_KEYS:
            problems.add(at + (key,), f"unknown key {str(key)!r}; an image has {', '.join(_IMAGE_KEYS)}")
    values = {}
    for key in ("target", "source", "digest"):
        value = item.get(key)
        if not isinstance(value, str) or not value:
            problems.add(at + (key,) if key in item else at, f"{key} is required (a string)")
            return None
        values[key] = value
    bad = _check_target(values["target"])
    if bad:
        problems.add(at + ("target",), f"invalid target {values['target']!r}: {bad}")
    bad = _check_source(values["source"])
    if bad:
        problems.add(at + ("source",), f"invalid source {values['source']!r}: {bad}")
    if not _DIGEST.fullmatch(values["digest"]):
        problems.add(at + ("digest",), f"invalid digest {values['digest']!r}: expected sha256:<64 lowercase hex>")
    policy = item.get("policy")
    if policy is not None and not isinstance(policy, str):
        problems.add(at + ("policy",), "policy is the tag policy's text (a string)")
        policy = None
    signer = item.get("signer")
    if signer is not None:
        if not isinstance(signer, Mapping) or not all(isinstance(v, str) for v in signer.values()):
            problems.add(at + ("signer",), "signer is a mapping of strings")
            signer = None
        else:
            for key in signer:
                if key not in _SIGNER_KEYS:
                    problems.add(at + ("signer", key), f"unknown signer key {str(key)!r}")
    line, _ = locate(problems.root, at)
    return LockedImage(values["target"], values["source"], values["digest"], policy,
                       dict(signer) if signer else None, line)


def parse_lock(data: Union[str, bytes], *, name: str = "images.lock") -> Lock:
    """Read and validate a lock file; raises ``LockFileError`` with every problem and its line."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if not isinstance(raw, bytes):
        raise TypeError(f"a lock file is str or bytes, not {type(data).__name__}")
    content_hash = hashlib.sha256(raw).hexdigest()
    if len(raw) > MAX_LOCK_BYTES:
        raise LockFileError(f"{name} is too large", [Problem(f"{len(raw)} bytes; the limit is {MAX_LOCK_BYTES}")])
    text, problem = decode(raw, "lock file")
    if problem is not None:
        raise LockFileError(f"{name} is not valid UTF-8", [problem])
    root, document, load_problems, fatal = load(text, _Loader)
    problems = Problems(root)
    problems.items.extend(load_problems)
    if fatal:
        _raise(name, problems.items)
    if not isinstance(document, Mapping):
        problems.add((), "a lock file is a mapping with version, manifest and images (write it with `airlock lock`)")
        _raise(name, problems.items)
    for key in document:
        if key not in _KEYS:
            problems.add((key,), f"unknown key {str(key)!r}; a lock file has {', '.join(_KEYS)}")
    if document.get("version") != LOCK_VERSION:
        problems.add(("version",) if "version" in document else (),
                     f"version must be {LOCK_VERSION} (this airlock reads lock files of version {LOCK_VERSION})")
    fingerprint = document.get("manifest")
    if not isinstance(fingerprint, str) or not _DIGEST.fullmatch(fingerprint):
        problems.add(("manifest",) if "manifest" in document else (), "manifest must be sha256:<64 hex>")
    items = document.get("images")
    images: list[LockedImage] = []
    if not isinstance(items, list):
        problems.add(("images",) if "images" in document else (), "images must be a list ([] for none)")
    else:
        seen: dict[str, LockedImage] = {}
        for i, item in enumerate(items):
            image = _image(i, item, problems)
            if image is None:
                continue
            if image.target in seen:
                problems.add(("images", i, "target"), f"{image.target} is locked twice (first on line "
                                                     f"{seen[image.target].line})")
                continue
            seen[image.target] = image
            images.append(image)
    if problems.items:
        _raise(name, problems.items)
    return Lock(fingerprint, tuple(images), content_hash)


def _raise(name: str, problems: list[Problem]) -> None:
    ordered = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
    n = len(ordered)
    raise LockFileError(f"{name} has {n} problem{'s' if n != 1 else ''}", ordered)


UNLOCKED_WARNING = ("no {lock}: each tag is imported as it points now, a digest nobody reviewed; "
                    "`airlock lock {manifest}` writes one for review")


def apply_lock(manifest: ManifestResult, lock_data: Union[str, bytes, Lock, None], *, required: bool = False,
               manifest_file: str = "images.txt", lock_file: Optional[str] = None) -> ManifestResult:
    """The manifest a run works on (see the module docstring). Never raises for bad lock content."""
    if not manifest.ok:
        return manifest
    lock_file = lock_file or lock_name_for(manifest_file)
    if lock_data is None:
        problem = Problem(UNLOCKED_WARNING.format(lock=lock_file, manifest=manifest_file))
        if required:
            return replace(manifest, entries=[], policies=[], errors=[Problem(
                f"no {lock_file}: locks are required (LOCK_REQUIRED); `airlock lock {manifest_file}` writes one "
                "for review")])
        return replace(manifest, warnings=[*manifest.warnings, problem])
    try:
        lock = lock_data if isinstance(lock_data, Lock) else parse_lock(lock_data, name=lock_file)
    except LockFileError as exc:
        return replace(manifest, entries=[], policies=[],
                       errors=[Problem(p.message, line=p.line, field=lock_file) for p in exc.problems])
    disagreements = check_lock(manifest, lock, manifest_file=manifest_file, lock_file=lock_file)
    if disagreements:
        return replace(manifest, entries=[], policies=[], errors=[
            Problem(p.message, line=p.line, field=None if p.file == manifest_file else p.file)
            for p in disagreements])
    return replace(manifest, entries=locked_entries(manifest, lock), lock=lock)
