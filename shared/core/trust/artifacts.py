"""Signature artifacts as the adapter reads them: formats, bounds, and the signatures inside. Pure code.

The adapter (``shared.adapters.signatures``) finds the signature artifacts of one image digest in its
source registry and hands them over as :class:`SignatureArtifact` values (manifest bytes and the layer
blobs it fetched, size-bounded and digest-checked). This module parses them: :func:`referrers` reads a
referrers index, :func:`plan_artifact` says which blobs of a signature manifest to fetch, and
:func:`candidates` turns an artifact into the signatures it holds (or ``Unusable`` with why).

Formats read
- cosign's tag scheme (``<repo>:sha256-<hex>.sig``; cosign 2's OCI 1.1 referrer with artifact type
  ``application/vnd.dev.cosign.artifact.sig.v1+json`` has the same layers): an image manifest whose
  ``application/vnd.dev.cosign.simplesigning.v1+json`` layers are simple-signing payloads
  (``critical.image.docker-manifest-digest``), each with annotations ``dev.cosignproject.cosign/signature``
  (base64), ``dev.sigstore.cosign/certificate`` (PEM), ``dev.sigstore.cosign/chain`` and
  ``dev.sigstore.cosign/bundle`` (the Rekor SET bundle: ``SignedEntryTimestamp`` and
  ``Payload{body, integratedTime, logIndex, logID}``).
- Sigstore bundles (``application/vnd.dev.sigstore.bundle.v0.3+json`` and the earlier
  ``application/vnd.dev.sigstore.bundle+json;version=0.1|0.2|0.3``) attached as OCI referrers (the
  single layer of a manifest whose artifact type is the bundle media type; @sigstore/oci, GitHub
  artifact attestations, cosign 3): a DSSE envelope holding an in-toto Statement (v0.1 or v1), or a
  message signature whose ``messageDigest`` is the sha256 of the signed bytes.
- Notary Project signatures (``application/vnd.cncf.notary.signature``) are parsed into
  ``NotationSignature`` and left to the notation verifier; they never verify a Sigstore requirement.

Bounds (a hostile registry must not make one image expensive): :data:`MAX_MANIFEST_BYTES` per
manifest or index, :data:`MAX_BLOB_BYTES` per signature blob, :data:`MAX_ARTIFACTS` signature
artifacts per image and :data:`MAX_SIGNATURE_LAYERS` simple-signing layers per cosign manifest.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from shared.core.trust.verdict import one_line

MEDIA_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ARTIFACT_COSIGN_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
MEDIA_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
MEDIA_BUNDLES = (MEDIA_BUNDLE_V03,
                 "application/vnd.dev.sigstore.bundle+json;version=0.3",
                 "application/vnd.dev.sigstore.bundle+json;version=0.2",
                 "application/vnd.dev.sigstore.bundle+json;version=0.1")
ARTIFACT_NOTATION = "application/vnd.cncf.notary.signature"
MEDIA_NOTATION_ENVELOPES = ("application/jose+json", "application/cose")
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PAYLOAD_IN_TOTO = "application/vnd.in-toto+json"
IN_TOTO_STATEMENTS = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")

ANNOTATION_SIGNATURE = "dev.cosignproject.cosign/signature"
ANNOTATION_CERTIFICATE = "dev.sigstore.cosign/certificate"
ANNOTATION_CHAIN = "dev.sigstore.cosign/chain"
ANNOTATION_BUNDLE = "dev.sigstore.cosign/bundle"

# Bounds (a hostile registry must not make one image expensive). Manifests: the 4 MiB that
# registries commonly accept. A signature blob (simple-signing payload, bundle, notation envelope)
# is a few KB; an in-toto provenance bundle rarely over 100 KB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BLOB_BYTES = 2 * 1024 * 1024
MAX_ARTIFACTS = 32  # signature artifacts (referrers and tags) read per image
MAX_SIGNATURE_LAYERS = 16  # simple-signing layers read per cosign manifest

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


# --- what the adapter hands over ------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: Optional[str] = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SignatureArtifact:
    """One signature artifact as read from the registry: its manifest and the blobs the adapter
    fetched for it (by digest, content checked), or why it or a blob could not be read."""

    location: str
    manifest: bytes = b""
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    problem: Optional[str] = None
    blob_problems: Mapping[str, str] = field(default_factory=dict)


class Unreadable(ValueError):
    """A registry document that is not what it claims to be (the message names what and where)."""


def load_json(raw: bytes, what: str, limit: int) -> Any:
    """JSON from untrusted bytes: bounded in size, UTF-8, and nesting (deep nesting is refused, not a crash)."""
    if len(raw) > limit:
        raise Unreadable(f"{what} is {len(raw)} bytes, over the {limit} byte limit")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise Unreadable(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise Unreadable(f"{what} nests too deeply") from None
    except ValueError as exc:
        raise Unreadable(f"{what} is not JSON: {exc}") from None


def valid_digest(digest: str) -> bool:
    return isinstance(digest, str) and bool(_DIGEST.match(digest))


def descriptor(obj: Any, where: str) -> Descriptor:
    """An OCI descriptor, checked: a sha256 digest, a non-negative integer size, string fields."""
    if not isinstance(obj, dict):
        raise Unreadable(f"{where} is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str):
        raise Unreadable(f"{where} has no mediaType")
    if not valid_digest(digest):
        raise Unreadable(f"{where} has digest {one_line(repr(digest), 90)}; only sha256 digests are read")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Unreadable(f"{where} has size {one_line(repr(size), 40)}")
    artifact_type = obj.get("artifactType")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in annotations.items()):
        raise Unreadable(f"{where} has annotations that are not strings")
    return Descriptor(media_type, digest, size, artifact_type if isinstance(artifact_type, str) else None,
                      dict(annotations))


def is_signature_type(artifact_type: Optional[str]) -> bool:
    return artifact_type in MEDIA_BUNDLES or artifact_type in (ARTIFACT_COSIGN_SIG, ARTIFACT_NOTATION)


def referrers(raw_index: bytes, what: str) -> tuple[list[Descriptor], int]:
    """The signature artifacts an OCI referrers index (referrers API or the ``sha256-<hex>`` tag
    schema) lists: (descriptors, how many other referrers were passed over: SBOMs, attestations
    of other kinds, entries past MAX_ARTIFACTS or unreadable)."""
    doc = load_json(raw_index, what, MAX_MANIFEST_BYTES)
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise Unreadable(f"{what} is not an image index (no manifests list)")
    found: list[Descriptor] = []
    passed = 0
    for n, entry in enumerate(entries):
        try:
            desc = descriptor(entry, f"{what} manifests[{n}]")
        except Unreadable:
            passed += 1
            continue
        if is_signature_type(desc.artifact_type) and len(found) < MAX_ARTIFACTS:
            found.append(desc)
        else:
            passed += 1
    return found, passed


@dataclass(frozen=True)
class ArtifactPlan:
    """What one signature manifest is and which of its blobs to fetch."""

    kind: str  # "cosign" | "bundle" | "notation" | "other"
    fetch: tuple[Descriptor, ...] = ()
    refused: tuple[tuple[Descriptor, str], ...] = ()  # layers not fetched, with why


def plan_artifact(raw_manifest: bytes, what: str) -> ArtifactPlan:
    """Which blobs of a signature manifest are signatures: cosign's simple-signing layers (at most
    MAX_SIGNATURE_LAYERS), a Sigstore bundle layer, a notation envelope. A layer whose declared size
    is over MAX_BLOB_BYTES is refused here, before anything is downloaded."""
    doc = load_json(raw_manifest, what, MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise Unreadable(f"{what} is not an image manifest (no layers list)")
    layers = [descriptor(layer, f"{what} layers[{n}]") for n, layer in enumerate(doc["layers"][:256])]
    artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"), str) else None
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    if any(layer.media_type == MEDIA_SIMPLESIGNING for layer in layers):
        kind, wanted = "cosign", [layer for layer in layers if layer.media_type == MEDIA_SIMPLESIGNING]
        wanted = wanted[:MAX_SIGNATURE_LAYERS]
    elif artifact_type in MEDIA_BUNDLES or any(layer.media_type in MEDIA_BUNDLES for layer in layers):
        kind, wanted = "bundle", [layer for layer in layers if layer.media_type in MEDIA_BUNDLES][:1]
    elif ARTIFACT_NOTATION in (artifact_type, config.get("mediaType")):
        kind, wanted = "notation", [layer for layer in layers if layer.media_type in MEDIA_NOTATION_ENVELOPES][:1]
    else:
        return ArtifactPlan("other")
    fetch, refused = [], []
    for layer in wanted:
        if layer.size > MAX_BLOB_BYTES:
            refused.append((layer, f"layer {layer.digest} declares {layer.size} bytes, over the "
                                   f"{MAX_BLOB_BYTES} byte limit for a signature"))
        else:
            fetch.append(layer)
    return ArtifactPlan(kind, tuple(fetch), tuple(refused))


# --- signatures parsed from the artifacts -----------------------------------------------------------


@dataclass(frozen=True)
class CosignSignature:
    """One simple-signing layer of cosign's tag scheme (or of a cosign 2 OCI 1.1 referrer)."""

    location: str
    payload: bytes
    signature: bytes
    certificate_pem: Optional[str] = None
    chain_pem: Optional[str] = None
    rekor_bundle: Optional[str] = None  # the raw ``dev.sigstore.cosign/bundle`` annotation


@dataclass(frozen=True)
class BundleSignature:
    location: str
    bundle: bytes
    media_type: str


@dataclass(frozen=True)
class NotationSignature:
    """A Notary Project signature envelope, for the notation verifier (not checked here)."""

    location: str
    envelope: bytes
    media_type: str


@dataclass(frozen=True)
class Unusable:
    location: str
    reason: str


Candidate = Union[CosignSignature, BundleSignature, NotationSignature, Unusable]


def candidates(artifact: SignatureArtifact) -> list[Candidate]:
    """The signatures in one artifact, or ``Unusable`` entries saying why a part could not be read."""
    if artifact.problem:
        return [Unusable(artifact.location, artifact.problem)]
    try:
        plan = plan_artifact(artifact.manifest, f"signature manifest at {artifact.location}")
    except Unreadable as exc:
        return [Unusable(artifact.location, str(exc))]
    if plan.kind == "other":
        return [Unusable(artifact.location, "the manifest holds no cosign, Sigstore or Notary Project signature layer")]
    found: list[Candidate] = [Unusable(artifact.location, why) for _, why in plan.refused]
    several = len(plan.fetch) > 1
    for n, layer in enumerate(plan.fetch):
        where = f"{artifact.location}[{n}]" if several else artifact.location
        data = artifact.blobs.get(layer.digest)
        if data is None:
            reason = artifact.blob_problems.get(layer.digest) or f"layer {layer.digest} was not read"
            found.append(Unusable(where, reason))
        elif plan.kind == "cosign":
            found.append(_cosign_signature(where, layer, data))
        elif plan.kind == "bundle":
            found.append(BundleSignature(where, data, layer.media_type))
        else:
            found.append(NotationSignature(where, data, layer.media_type))
    if plan.kind == "bundle" and not plan.fetch and not plan.refused:
        found.append(Unusable(artifact.location, "Sigstore bundle manifest has no bundle layer"))
    return found


def _cosign_signature(where: str, layer: Descriptor, payload: bytes) -> Candidate:
    annotations = layer.annotations
    encoded = annotations.get(ANNOTATION_SIGNATURE)
    if not encoded:
        return Unusable(where, f"simple-signing layer {layer.digest} has no {ANNOTATION_SIGNATURE} annotation")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Unusable(where, f"{ANNOTATION_SIGNATURE} of layer {layer.digest} is not base64")
    return CosignSignature(where, payload, signature, annotations.get(ANNOTATION_CERTIFICATE) or None,
                           annotations.get(ANNOTATION_CHAIN) or None, annotations.get(ANNOTATION_BUNDLE) or None)


def notation_signatures(artifacts: Sequence[SignatureArtifact]) -> list[NotationSignature]:
    """The Notary Project envelopes among the artifacts (for the notation verifier)."""
    return [c for a in artifacts for c in candidates(a) if isinstance(c, NotationSignature)]
