"""Carrying an image's referrers (signatures, SBOMs, attestations) into the ACR: the pure decisions.

ACR ``importImage`` copies an image and not its referrers, so a mirrored image would arrive without
what admission controllers verify. After an entry's image lands, ``SyncEngine`` (shared.handlers.sync)
carries them over; this module decides, without I/O:

- which digests are subjects: the imported digest and, for an image index, each platform manifest it
  lists (``subjects``; Docker buildx's attestation manifests inside an index are not subjects), at
  most MAX_SUBJECTS (ACR imports at most 50 manifests of one image);
- what a source's referrers are: the OCI referrers API (or its tag-schema fallback, ``sha256-<hex>``)
  lists descriptors (``parse_index``); cosign's tag scheme keeps ``sha256-<hex>.sig``, ``.att`` and
  ``.sbom`` tags beside the image (``cosign_tag``), recorded with cosign's OCI 1.1 artifact types
  (``application/vnd.dev.cosign.artifact.<sig|att|sbom>.v1+json``, cosign's ``ArtifactType``);
- which of them the target lacks (``to_import``): a referrer from the referrers API is imported by
  digest, untagged (``untaggedTargetRepositories``), so the target's referrers API lists it under its
  subject; a tag-scheme artifact is imported under its own tag name, so cosign (and Ratify's
  ``cosignEnabled`` store, Kyverno) find it by that tag. Only what is missing is imported: a tag whose
  digest already matches, a referrer the target already lists;
- what the record says (``record_item``, ``missing``, ``summarise``, ``warnings``).

Record shape, per entry (``EntryOutcome.to_dict``)::

    "referrers": [{"subject", "digest", "artifact_type", "via": "referrers"|"tag", "tag"?, "imported": bool,
                   "result": "imported"|"present"|"failed", "error"?: {"code", "message", "retryable"}}],
    "referrers_missing": [digest, ...],   # imported by digest, yet the target's referrers API does not list it
    "referrers_problems": [{"code", "message", "retryable"}]   # look-ups that failed (only when some did)

``imported`` is true when this run imported it; ``present`` means the target had it already. Each
referrer is listed once (by ``Referrer.key``). A failed referrer never fails its entry (the image
landed); it is a warning of the run (``warnings``) and is tried again on the next run, since unchanged
entries compare their referrers too (REFERRERS_UNCHANGED).

Only referrers of the image and its platform manifests are carried (one level): a signature of an
SBOM (a referrer of a referrer) is not looked up, which keeps the carrying to one round of imports.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

VIA_REFERRERS = "referrers"
VIA_TAG = "tag"
RESULT_IMPORTED = "imported"
RESULT_PRESENT = "present"
RESULT_FAILED = "failed"

COSIGN_SUFFIXES = ("sig", "att", "sbom")
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"  # buildx: "attestation-manifest" children of an index

MAX_SUBJECTS = 50        # the imported digest and its platform manifests (ACR: at most 50 manifests per import)
MAX_PER_SUBJECT = 32     # referrers read per subject from the referrers API / tag schema
MAX_REFERRERS = 64       # referrers carried per entry; more are counted as skipped, with a warning
MAX_INDEX_BYTES = 4 * 1024 * 1024

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_ATTACHMENT_TAG = re.compile(r"sha256-[0-9a-f]{64}(?:\.(?:sig|att|sbom))?\Z")


class Unreadable(ValueError):
    """A document that is not what it should be (the message says what and why)."""


def valid_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.match(value) is not None


def cosign_tag(digest: str, suffix: str) -> str:
    """cosign's tag for the signatures / attestations / SBOM of ``digest``: ``sha256-<hex>.<suffix>``."""
    if suffix not in COSIGN_SUFFIXES:
        raise ValueError(f"cosign tag suffix must be one of {COSIGN_SUFFIXES}, not {suffix!r}")
    if not valid_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.replace(":", "-", 1) + "." + suffix


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag of ``digest`` (distribution-spec 1.1): ``sha256-<hex>``."""
    if not valid_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.replace(":", "-", 1)


def is_attachment_tag(tag: Optional[str]) -> bool:
    """A tag that holds an image's signatures, attestations or SBOM (cosign's ``sha256-<hex>.sig`` /
    ``.att`` / ``.sbom``) or its referrers (the tag schema's ``sha256-<hex>``), not an image of its own:
    carrying referrers pushes such tags into the ACR, and build rules must not fire on them."""
    return bool(tag) and _ATTACHMENT_TAG.match(tag) is not None


def cosign_artifact_type(suffix: str) -> str:
    """The artifact type cosign gives this kind of attachment in OCI 1.1 mode (cosign's ``ArtifactType``)."""
    return f"application/vnd.dev.cosign.artifact.{suffix}.v1+json"


@dataclass(frozen=True)
class Referrer:
    """One referrer of ``subject`` at the source."""

    subject: str
    digest: str
    via: str                              # VIA_REFERRERS | VIA_TAG
    artifact_type: Optional[str] = None
    tag: Optional[str] = None             # VIA_TAG: the tag it is kept under (and imported as)
    media_type: Optional[str] = None

    @property
    def key(self) -> tuple[str, str]:
        """Its identity in an entry's record: the tag for a tag-scheme artifact, else the digest."""
        return (self.via, self.tag or self.digest)


def _load(raw: bytes, what: str) -> object:
    if len(raw) > MAX_INDEX_BYTES:
        raise Unreadable(f"{what} is {len(raw)} bytes, over the {MAX_INDEX_BYTES} byte limit")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{what} is not JSON ({type(exc).__name__})") from None


def subjects(digest: str, raw_manifest: Optional[bytes], what: str = "the imported manifest") -> list[str]:
    """The digests whose referrers are carried: ``digest`` and, when ``raw_manifest`` is an image index,
    the platform manifests it lists (attestation manifests left out), at most MAX_SUBJECTS in all."""
    found = [digest]
    if raw_manifest is None:
        return found
    doc = _load(raw_manifest, what)
    if not isinstance(doc, dict):
        raise Unreadable(f"{what} is not a JSON object")
    manifests = doc.get("manifests")
    if doc.get("mediaType") not in INDEX_TYPES and not isinstance(manifests, list):
        return found  # an image (or artifact) manifest: no children
    if not isinstance(manifests, list):
        raise Unreadable(f"{what} is an index without a manifests list")
    for n, child in enumerate(manifests):
        if not isinstance(child, dict) or not valid_digest(child.get("digest")):
            raise Unreadable(f"{what} manifests[{n}] has no sha256 digest")
        annotations = child.get("annotations") if isinstance(child.get("annotations"), dict) else {}
        if annotations.get(DOCKER_REFERENCE_TYPE) == "attestation-manifest":
            continue
        if child["digest"] not in found:
            found.append(child["digest"])
    return found[:MAX_SUBJECTS]


def parse_index(raw: bytes, subject: str, what: str) -> tuple[list[Referrer], int]:
    """The referrers an OCI referrers index lists for ``subject`` (the referrers API's answer, or the
    tag schema's index): (referrers, how many entries were left out: unreadable, or past MAX_PER_SUBJECT)."""
    doc = _load(raw, what)
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise Unreadable(f"{what} is not an image index (no manifests list)")
    found: list[Referrer] = []
    skipped = 0
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or not valid_digest(entry.get("digest")) or entry["digest"] == subject:
            skipped += 1
            continue
        if entry["digest"] in seen:
            continue
        if len(found) >= MAX_PER_SUBJECT:
            skipped += 1
            continue
        seen.add(entry["digest"])
        artifact_type = entry.get("artifactType") if isinstance(entry.get("artifactType"), str) else None
        media_type = entry.get("mediaType") if isinstance(entry.get("mediaType"), str) else None
        found.append(Referrer(subject, entry["digest"], VIA_REFERRERS, artifact_type, None, media_type))
    return found, skipped


def tag_referrer(subject: str, suffix: str, digest: str) -> Referrer:
    """The cosign ``.sig`` / ``.att`` / ``.sbom`` artifact of ``subject`` found at ``digest``."""
    return Referrer(subject, digest, VIA_TAG, cosign_artifact_type(suffix), cosign_tag(subject, suffix))


def wanted(referrer: Referrer, artifact_types: Sequence[str]) -> bool:
    """REFERRER_ARTIFACT_TYPES: empty carries every referrer; otherwise only those types."""
    return not artifact_types or (referrer.artifact_type or "") in artifact_types


def select(found: Iterable[Referrer], artifact_types: Sequence[str] = ()) -> tuple[list[Referrer], int]:
    """Each referrer once (by key, first wins), filtered by type, at most MAX_REFERRERS: (kept, skipped)."""
    kept: dict[tuple[str, str], Referrer] = {}
    skipped = 0
    for referrer in found:
        if referrer.key in kept or not wanted(referrer, artifact_types):
            continue
        if len(kept) >= MAX_REFERRERS:
            skipped += 1
            continue
        kept[referrer.key] = referrer
    return list(kept.values()), skipped


def to_import(found: Sequence[Referrer], listed: Mapping[str, Iterable[str]],
              tags: Mapping[str, Optional[str]]) -> list[Referrer]:
    """The referrers the target lacks: an API referrer its referrers API does not list under the subject
    (``listed``: subject -> digests), a tag-scheme artifact whose tag is absent or names another digest
    (``tags``: tag -> digest at the target, None when absent)."""
    present = {subject: set(digests) for subject, digests in listed.items()}
    out = []
    for referrer in found:
        if referrer.via == VIA_TAG:
            if tags.get(referrer.tag or "") != referrer.digest:
                out.append(referrer)
        elif referrer.digest not in present.get(referrer.subject, set()):
            out.append(referrer)
    return out


def record_item(referrer: Referrer, result: str, error: Optional[dict] = None) -> dict:
    """One referrer as the entry's record lists it."""
    item = {"subject": referrer.subject, "digest": referrer.digest, "artifact_type": referrer.artifact_type,
            "via": referrer.via}
    if referrer.tag:
        item["tag"] = referrer.tag
    item["imported"] = result == RESULT_IMPORTED
    item["result"] = result
    if error is not None:
        item["error"] = error
    return item


def seen_again(report: dict) -> dict:
    """The report of another entry of the same run with the same source image and target repository: what
    the first one imported is ``present`` for it (each referrer is imported once per run)."""
    items = [{**i, "imported": False, "result": RESULT_PRESENT} if i.get("result") == RESULT_IMPORTED else dict(i)
             for i in report.get("items") or []]
    return {**report, "items": items}


def missing(items: Iterable[dict], listed: Mapping[str, Iterable[str]]) -> list[str]:
    """Digests imported by digest (via the referrers API) that the target's referrers API does not list
    under their subject afterwards (``listed``: subject -> digests, read after the imports)."""
    after = {subject: set(digests) for subject, digests in listed.items()}
    return [i["digest"] for i in items
            if i["via"] == VIA_REFERRERS and i["result"] != RESULT_FAILED
            and i["digest"] not in after.get(i["subject"], set())]


def summarise(entries: Iterable[dict]) -> Optional[dict]:
    """Referrer counts over entry outcome documents (None when no entry carried referrers)."""
    counts = {RESULT_IMPORTED: 0, RESULT_PRESENT: 0, RESULT_FAILED: 0, "missing": 0, "skipped": 0}
    seen = False
    for entry in entries:
        items = entry.get("referrers")
        if items is None:
            continue
        seen = True
        for item in items:
            if item.get("result") in counts:
                counts[item["result"]] += 1
        counts["missing"] += len(entry.get("referrers_missing") or [])
        counts["skipped"] += int(entry.get("referrers_skipped") or 0)
    return counts if seen else None


def warnings(entries: Iterable[dict]) -> list[dict]:
    """The run's warnings about referrers: each one that could not be imported, each imported one the
    target does not list, each look-up that failed, each entry with more than MAX_REFERRERS."""
    out: list[dict] = []
    for entry in entries:
        line, target = entry.get("line"), entry.get("target")
        for item in entry.get("referrers") or []:
            if item.get("result") == RESULT_FAILED:
                error = item.get("error") or {}
                where = f"tag {item['tag']}" if item.get("tag") else item["digest"]
                out.append({"line": line, "message": f"{target}: referrer {where} ({item.get('artifact_type')}) "
                                                     f"was not imported: {error.get('code')}: {error.get('message')}"})
        for digest in entry.get("referrers_missing") or []:
            out.append({"line": line, "message": f"{target}: referrer {digest} was imported but the target's "
                                                 "referrers API does not list it"})
        for problem in entry.get("referrers_problems") or []:
            out.append({"line": line, "message": f"{target}: referrers could not be looked up: "
                                                 f"{problem.get('code')}: {problem.get('message')}"})
        if entry.get("referrers_skipped"):
            out.append({"line": line, "message": f"{target}: {entry['referrers_skipped']} referrer(s) beyond "
                                                 f"the {MAX_REFERRERS} carried per image were not imported"})
    return out
