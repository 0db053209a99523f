"""Image signatures at the border: cosign and Sigstore verification (pure: callers bring the bytes).

The adapter (``shared.adapters.signatures``) finds the signature artifacts of one image digest in its
source registry and hands them over as ``SignatureArtifact`` values (manifest bytes and the layer
blobs it fetched, size-bounded and digest-checked). This module parses them and decides, for a
policy's ``Requirement`` list and a ``SigstoreTrust`` (a trusted-root JSON the caller read), one
``Verification`` per image:

    verified   a signature by a signer the policy names covers exactly this digest
    mismatch   a valid signature by such a signer, over a *different* digest (copied from another image)
    invalid    signatures exist, none verifies: bad signature, untrusted chain, wrong identity or
               issuer, a signer of another kind, an unreadable or oversized artifact
    unsigned   no cosign or Sigstore signature was found
    skipped    no requirement applies (``Verification.skipped``; for callers)

``verify_image`` returns ``verified`` as soon as one (signature, requirement) pair verifies;
otherwise the most telling failure: a mismatch, then a failed check of a signature of the required
kind, then a signature of another kind. Cost per image is bounded (at most MAX_CANDIDATES
signatures, each bounded in size) and independent of the run: trust material is parsed once per
``SigstoreTrust`` and identity patterns once per ``Keyless``. ``verdict_key`` is a stable cache key
for a verdict: (digest, requirements fingerprint, trusted-root fingerprint). Only ``verified`` is
worth caching by it: what a registry holds can change (a signature attached later).

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

What is checked, per kind
- ``Keyless`` + Sigstore bundle: sigstore-python's ``Verifier`` (``verify_dsse`` / ``verify_artifact``)
  against the trusted root, offline: a signed time (the Rekor entry's integrated time behind its
  SET, or RFC 3161 timestamps from an authority the root lists); the certificate chains to a Fulcio CA
  of the root at that time; its embedded SCT verifies against a CT log key of the root; key usage
  digitalSignature and extended key usage codeSigning; the identity policy (below); the Rekor entry:
  Merkle inclusion proof and signed checkpoint, and the SET when present, against the root's log
  keys; the signing time within the certificate's validity; the signature (DSSE PAE, or the message
  digest); the log entry body against the bundle (hashedrekord: digest, signature, certificate; dsse
  0.0.1: payload hash and signatures). Then this module: the DSSE payload type is in-toto, and a
  statement subject has ``sha256`` equal to the image digest; for a message signature,
  ``messageDigest`` is sha256 and equals the image digest (otherwise ``mismatch``).
- ``Keyless`` + cosign tag scheme: this legacy form carries a Rekor SET but no inclusion proof, and
  sigstore-python 4.5.1 accepts no bundle without one (``TransparencyLogEntry`` requires an inclusion
  proof with checkpoint), so it cannot be converted into a ``Bundle``. It is checked step by step with
  sigstore-python's own pieces instead (pinned to 4.5.1; ``tests/unit/test_signatures_production.py``
  checks them on a real signature): the SET over the canonical log entry against the root's Rekor
  keys (``TrustedRoot.rekor_keyring``), which gives the signed time; the chain at that time
  (``Verifier._verify_chain_at_time``); the SCT (``sigstore._internal.sct.verify_sct``); key usage and
  codeSigning; the identity policy; the time within the certificate's validity; the signature over
  the payload with the certificate's key; the log body equals the hashedrekord built from
  (certificate, signature, sha256 of the payload) (``_hashedrekord_from_parts``); then the payload's
  ``docker-manifest-digest``. Not checked: an inclusion proof (there is none; the SET is the log's
  promise), RFC 3161 timestamps in the ``dev.sigstore.cosign/rfc3161timestamp`` annotation (a
  signature without the Rekor bundle is ``invalid``), the ``chain`` annotation (the root's CAs are
  used, as cosign does).
- ``CosignKey``: the signature over the simple-signing payload (cosign tag scheme) or the DSSE PAE
  (a Sigstore bundle whose verification material is a public key, as ``cosign sign --key`` makes in
  its bundle format), with ``cryptography``: ECDSA P-256/P-384/P-521 (the curve's hash, or SHA-256 as
  cosign 1-2 used for every curve), RSA PKCS#1 v1.5 with SHA-256, Ed25519. Then the digest the payload
  names. With ``require_tlog``, a tag-scheme signature must also carry a Rekor SET bundle that
  verifies against the trusted root and whose hashedrekord body names this payload hash, this
  signature and this key. Not supported (``invalid`` with the reason): message-signature bundles
  with a key, and ``require_tlog`` for key-signed bundles.
- Identity policy (``Keyless``): the certificate's SAN (URI, e-mail or Sigstore's otherName) equals
  ``identity`` or fully matches ``identity_regexp``; the OIDC issuer extension (1.3.6.1.4.1.57264.1.8,
  else .1.1) equals ``issuer`` or fully matches ``issuer_regexp``. Patterns are RE2 (linear time,
  no back-references or look-around) and must match the whole value: anchor cosign's
  ``--certificate-identity-regexp`` (which matches anywhere) to get the same meaning here.
- Not checked anywhere: ``critical.identity.docker-reference`` (cosign ignores it too), the
  Statement's predicate beyond its type (``predicate_types`` restricts the type when given).

Multi-platform images: cosign, @sigstore/oci and GitHub attestations sign the digest they are given,
normally the index the tag points to; that index digest is what the airlock imports, so the caller
verifies the index digest. Signatures over one platform's manifest do not cover the index.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from ..errors import Problem, ValidationError

log = logging.getLogger(__name__)

VERIFIED = "verified"
UNSIGNED = "unsigned"
INVALID = "invalid"
MISMATCH = "mismatch"
SKIPPED = "skipped"
STATUSES = (VERIFIED, UNSIGNED, INVALID, MISMATCH, SKIPPED)

KIND_COSIGN_KEY = "cosign-key"
KIND_KEYLESS = "keyless"
KIND_NOTATION = "notation"
KINDS = (KIND_COSIGN_KEY, KIND_KEYLESS, KIND_NOTATION)

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
MAX_CANDIDATES = 64  # signatures checked per image
MAX_PATTERN = 1024
MAX_REASON = 300

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_OTHERNAME = "1.3.6.1.4.1.57264.1.7"


# --- the result -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """One verdict for one image digest. Every verifier (notation's too) returns this."""

    status: str  # "verified" | "unsigned" | "invalid" | "mismatch" | "skipped"
    kind: Optional[str] = None  # "cosign-key" | "keyless" | "notation" | None
    signer: Optional[str] = None  # certificate identity (SAN), key id ("sha256:<hex of SPKI DER>"), or X.509 subject
    issuer: Optional[str] = None  # OIDC issuer for keyless
    location: Optional[str] = None  # "referrers:<digest>" | "referrers-tag:<digest>" | "tag:sha256-<hex>.sig" | ...
    reason: Optional[str] = None  # one line, when not verified

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verification status {self.status!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown signature kind {self.kind!r}")
        if self.reason is not None:
            object.__setattr__(self, "reason", one_line(self.reason))

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    def to_dict(self) -> dict:
        return {"status": self.status, "kind": self.kind, "signer": self.signer, "issuer": self.issuer,
                "location": self.location, "reason": self.reason}

    @classmethod
    def skipped(cls, reason: str) -> "Verification":
        return cls(SKIPPED, reason=reason)


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """Whitespace collapsed to single spaces, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


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


# --- requirements ----------------------------------------------------------------------------------


def _problem(field_name: str, message: str) -> ValidationError:
    return ValidationError(f"{field_name}: {message}", [Problem(message, field=field_name)],
                           code="InvalidSignatureRequirement")


def _compile(pattern: Optional[str], field_name: str):
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise _problem(field_name, "must be a non-empty string")
    if len(pattern) > MAX_PATTERN:
        raise _problem(field_name, f"is {len(pattern)} characters, over {MAX_PATTERN}")
    import re2

    options = re2.Options()
    options.log_errors = False  # the error comes back as an exception; RE2 would also print it
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _problem(field_name, f"is not an RE2 pattern ({one_line(detail, 120)})") from None


@dataclass(frozen=True)
class Keyless:
    """A Sigstore keyless signer: certificate identity (exact or RE2, whole value) and OIDC issuer."""

    identity: Optional[str] = None
    identity_regexp: Optional[str] = None
    issuer: Optional[str] = None
    issuer_regexp: Optional[str] = None
    predicate_types: tuple[str, ...] = ()  # DSSE statements: accepted predicate types (empty: any)
    _identity_re: Any = field(default=None, init=False, repr=False, compare=False)
    _issuer_re: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.identity is None) == (self.identity_regexp is None):
            raise _problem("identity", "give exactly one of identity and identity_regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise _problem("issuer", "give exactly one of issuer and issuer_regexp")
        for name in ("identity", "issuer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise _problem(name, "must be a non-empty string")
        object.__setattr__(self, "predicate_types", tuple(self.predicate_types))
        object.__setattr__(self, "_identity_re", _compile(self.identity_regexp, "identity_regexp"))
        object.__setattr__(self, "_issuer_re", _compile(self.issuer_regexp, "issuer_regexp"))

    def identity_matches(self, value: str) -> bool:
        return value == self.identity if self._identity_re is None else self._identity_re.fullmatch(value) is not None

    def issuer_matches(self, value: Optional[str]) -> bool:
        if value is None:
            return False
        return value == self.issuer if self._issuer_re is None else self._issuer_re.fullmatch(value) is not None

    def describe(self) -> str:
        who = self.identity if self.identity is not None else f"/{self.identity_regexp}/"
        by = self.issuer if self.issuer is not None else f"/{self.issuer_regexp}/"
        return f"{who} (issuer {by})"

    def fingerprint_data(self) -> dict:
        return {"type": KIND_KEYLESS, "identity": self.identity, "identity_regexp": self.identity_regexp,
                "issuer": self.issuer, "issuer_regexp": self.issuer_regexp,
                "predicate_types": sorted(self.predicate_types)}


@dataclass(frozen=True)
class CosignKey:
    """A cosign public key (PEM SubjectPublicKeyInfo): ECDSA P-256/P-384/P-521, RSA (2048 bits or more), Ed25519."""

    public_key: str
    require_tlog: bool = False
    predicate_types: tuple[str, ...] = ()
    _key: Any = field(default=None, init=False, repr=False, compare=False)
    _key_id: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        text = self.public_key.encode() if isinstance(self.public_key, str) else None
        if not text:
            raise _problem("public_key", "must be a PEM public key")
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, TypeError) as exc:
            raise _problem("public_key", f"is not a PEM public key ({one_line(str(exc), 120)})") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise _problem("public_key", f"RSA key of {key.key_size} bits; at least 2048 are required")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
                raise _problem("public_key", f"ECDSA curve {key.curve.name} is not supported")
        elif not isinstance(key, ed25519.Ed25519PublicKey):
            raise _problem("public_key", f"{type(key).__name__} keys are not supported")
        object.__setattr__(self, "predicate_types", tuple(self.predicate_types))
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_key_id", key_id(key))

    @property
    def key_id(self) -> str:
        return self._key_id

    def describe(self) -> str:
        return f"key {self.key_id}"

    def fingerprint_data(self) -> dict:
        return {"type": KIND_COSIGN_KEY, "key": self.key_id, "require_tlog": bool(self.require_tlog),
                "predicate_types": sorted(self.predicate_types)}


Requirement = Union[Keyless, CosignKey]


def key_id(public_key) -> str:
    """``sha256:<hex>`` of the key's SubjectPublicKeyInfo DER (the id a verdict names a key by)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def requirements_fingerprint(requirements: Sequence[Requirement]) -> str:
    """A stable fingerprint of a requirement list (order does not matter)."""
    parts = sorted(json.dumps(r.fingerprint_data(), sort_keys=True, separators=(",", ":")) for r in requirements)
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def verdict_key(digest: str, requirements: Sequence[Requirement], trust: Optional["SigstoreTrust"]) -> str:
    """The cache key of a verdict: (image digest, requirement fingerprint, trusted-root fingerprint)."""
    root = trust.fingerprint if trust is not None else "none"
    return f"{digest}|{requirements_fingerprint(requirements)}|{root}"


# --- trust -----------------------------------------------------------------------------------------


class SigstoreTrust:
    """A Sigstore trusted root (``trusted_root.json``: Fulcio CAs, Rekor and CT log keys, TSAs), parsed
    once; its ``Verifier`` is built once and shared. Offline: nothing is refreshed or fetched."""

    def __init__(self, trusted_root_json: bytes, *, source: str = "trusted root"):
        from sigstore.models import TrustedRoot
        from sigstore_models.trustroot import v1 as trustroot_v1

        self.source = source
        self.fingerprint = "sha256:" + hashlib.sha256(trusted_root_json).hexdigest()
        try:
            load_json(trusted_root_json, source, 16 * 1024 * 1024)
            self.root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(trusted_root_json))
        except Exception as exc:  # pydantic, sigstore and JSON errors alike: the file is not a trusted root
            raise ValidationError(f"{source} is not a Sigstore trusted root: {one_line(str(exc), 200)}",
                                  [Problem(one_line(str(exc), 200), field=source)], code="InvalidTrustedRoot") from None
        if not self.root._inner.tlogs:
            raise ValidationError(f"{source} lists no transparency log; sigstore-python needs one to verify",
                                  [Problem("no tlogs", field=source)], code="InvalidTrustedRoot")
        self._verifier = None
        self._lock = threading.Lock()

    def verifier(self):
        with self._lock:
            if self._verifier is None:
                from sigstore.verify import Verifier

                self._verifier = Verifier(trusted_root=self.root)
            return self._verifier


# --- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    verification: Verification
    rank: int  # 3 verified, 2 mismatch, 1 failed check of the required kind, 0 not of the required kind


class _Refused(Exception):
    """A signature that does not verify (the message is the reason)."""

    def __init__(self, reason: str, rank: int = 1):
        super().__init__(reason)
        self.rank = rank


def verify_image(digest: str, artifacts: Sequence[SignatureArtifact], requirements: Sequence[Requirement],
                 trust: Optional[SigstoreTrust] = None) -> Verification:
    """The verdict for ``digest`` (the digest being imported) from its signature artifacts."""
    if not valid_digest(digest):
        raise ValidationError(f"not a sha256 image digest: {one_line(repr(digest), 90)}", code="InvalidDigest")
    if not requirements:
        return Verification.skipped("no signature requirement applies")
    found = [c for artifact in artifacts for c in candidates(artifact)]
    notation = sum(isinstance(c, NotationSignature) for c in found)
    checked = [c for c in found if not isinstance(c, NotationSignature)]
    extra = max(0, len(checked) - MAX_CANDIDATES)
    checked = checked[:MAX_CANDIDATES]
    if not checked:
        note = f" ({notation} Notary Project signature(s) left to the notation verifier)" if notation else ""
        return Verification(UNSIGNED, reason=f"no cosign or Sigstore signature found for {digest}{note}")
    best: Optional[_Outcome] = None
    for candidate in checked:
        for requirement in requirements:
            outcome = _check(candidate, requirement, digest, trust)
            if outcome.rank == 3:
                return outcome.verification
            if best is None or outcome.rank > best.rank:
                best = outcome
    assert best is not None
    verdict = best.verification
    if len(checked) > 1 or extra:
        more = f" ({extra} more not checked)" if extra else ""
        verdict = Verification(verdict.status, verdict.kind, verdict.signer, verdict.issuer, verdict.location,
                               f"{len(checked)} signatures, none verified{more}; {verdict.reason}")
    return verdict


def _check(candidate: Candidate, requirement: Requirement, digest: str, trust: Optional[SigstoreTrust]) -> _Outcome:
    kind = KIND_KEYLESS if isinstance(requirement, Keyless) else KIND_COSIGN_KEY
    if isinstance(candidate, Unusable):
        return _Outcome(Verification(INVALID, location=candidate.location, reason=candidate.reason), 1)
    try:
        if isinstance(candidate, CosignSignature):
            signer, issuer = (_cosign_keyless(candidate, requirement, trust) if kind == KIND_KEYLESS
                              else _cosign_key(candidate, requirement, trust))
            named = [_simple_signing_digest(candidate.payload)]
        else:
            named, signer, issuer = (_bundle_keyless(candidate, requirement, trust) if kind == KIND_KEYLESS
                                     else _bundle_key(candidate, requirement))
    except _Refused as exc:
        return _Outcome(Verification(INVALID, kind, location=candidate.location, reason=str(exc)), exc.rank)
    except Exception as exc:  # hostile input must not crash the run: any parse or library error is a refusal
        log.debug("signature at %s could not be checked", candidate.location, exc_info=True)
        return _Outcome(Verification(INVALID, kind, location=candidate.location,
                                     reason=f"could not be checked: {type(exc).__name__}: {exc}"), 1)
    if digest in named:
        return _Outcome(Verification(VERIFIED, kind, signer, issuer, candidate.location), 3)
    shown = ", ".join(named) if named else "no sha256 digest"
    return _Outcome(Verification(MISMATCH, kind, signer, issuer, candidate.location,
                                 f"valid signature by {signer} names {shown}, not {digest}"), 2)


def _simple_signing_digest(payload: bytes) -> str:
    """``critical.image.docker-manifest-digest`` of a simple-signing payload (keys matched without
    regard to case, as cosign's Go decoder does)."""
    doc = load_json(payload, "simple-signing payload", MAX_BLOB_BYTES)
    critical = _ci_get(doc, "critical")
    image = _ci_get(critical, "image")
    digest = _ci_get(image, "docker-manifest-digest")
    if not isinstance(digest, str):
        raise _Refused("simple-signing payload has no critical.image.docker-manifest-digest")
    return digest


def _ci_get(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == key), None)


# cosign tag scheme ----------------------------------------------------------------------------------


def _cosign_key(candidate: CosignSignature, requirement: CosignKey, trust: Optional[SigstoreTrust]):
    if candidate.certificate_pem:
        raise _Refused("keyless signature (it carries a certificate); the policy asks for a key", 0)
    if not _key_verifies(requirement._key, candidate.signature, candidate.payload):
        raise _Refused(f"signature does not verify with {requirement.describe()}")
    if requirement.require_tlog:
        if trust is None:
            raise _Refused("transparency log required but no trusted root is configured")
        if not candidate.rekor_bundle:
            raise _Refused("transparency log required; the signature has no Rekor bundle")
        _, body = _verify_rekor_set(trust, candidate.rekor_bundle)
        _check_hashedrekord(body, candidate, requirement._key)
    return requirement.key_id, None


def _cosign_keyless(candidate: CosignSignature, requirement: Keyless, trust: Optional[SigstoreTrust]):
    if not candidate.certificate_pem:
        raise _Refused("key-signed (no certificate); the policy asks for a keyless signer", 0)
    if trust is None:
        raise _Refused("keyless signature but no trusted root is configured")
    if not candidate.rekor_bundle:
        raise _Refused("no Rekor bundle annotation: a keyless tag-scheme signature cannot be verified offline")
    from datetime import datetime, timezone

    from cryptography import x509
    from sigstore._internal.sct import verify_sct
    from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.errors import Error as SigstoreError

    try:
        cert = x509.load_pem_x509_certificate(candidate.certificate_pem.encode())
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion: a version other than v1/v3
        raise _Refused(f"certificate annotation is not a PEM certificate ({exc})") from None
    integrated, body = _verify_rekor_set(trust, candidate.rekor_bundle)
    signed_at = datetime.fromtimestamp(integrated, tz=timezone.utc)
    try:
        chain = trust.verifier()._verify_chain_at_time(
            cert, TimestampVerificationResult(source=TimestampSource.TRANSPARENCY_SERVICE, time=signed_at))
        verify_sct(cert, chain, trust.root.ct_keyring(KeyringPurpose.VERIFY))
    except SigstoreError as exc:
        raise _Refused(f"certificate: {exc}") from None
    _check_code_signing(cert)
    signer, issuer = _identity(cert, requirement)
    if not cert.not_valid_before_utc <= signed_at <= cert.not_valid_after_utc:
        raise _Refused(f"logged at {signed_at.isoformat()}, outside the certificate's validity")
    if not _key_verifies(cert.public_key(), candidate.signature, candidate.payload):
        raise _Refused("signature does not verify with the certificate's key")
    _check_hashedrekord(body, candidate, None, cert)
    return signer, issuer


def _verify_rekor_set(trust: SigstoreTrust, annotation: str) -> tuple[int, bytes]:
    """Verify the SET of a ``dev.sigstore.cosign/bundle`` annotation against the root's Rekor keys;
    returns (integrated time, log entry body)."""
    import rfc8785
    from sigstore._internal.trust import KeyringPurpose
    from sigstore._utils import KeyID
    from sigstore.errors import Error as SigstoreError

    try:
        doc = load_json(annotation.encode(), "Rekor bundle annotation", MAX_BLOB_BYTES)
    except Unreadable as exc:
        raise _Refused(str(exc)) from None
    payload = doc.get("Payload") if isinstance(doc, dict) else None
    set_b64 = doc.get("SignedEntryTimestamp") if isinstance(doc, dict) else None
    if not isinstance(payload, dict) or not isinstance(set_b64, str):
        raise _Refused("Rekor bundle has no SignedEntryTimestamp or Payload")
    body, integrated, index, log_id = (payload.get(k) for k in ("body", "integratedTime", "logIndex", "logID"))
    if not (isinstance(body, str) and _is_int(integrated) and _is_int(index) and isinstance(log_id, str)
            and re.fullmatch(r"[0-9a-f]{64}", log_id)):
        raise _Refused("Rekor bundle payload lacks body, integratedTime, logIndex or logID")
    try:
        canonical = rfc8785.dumps({"body": body, "integratedTime": integrated, "logID": log_id, "logIndex": index})
        trust.root.rekor_keyring(KeyringPurpose.VERIFY).verify(
            key_id=KeyID(bytes.fromhex(log_id)), signature=base64.b64decode(set_b64, validate=True), data=canonical)
        return integrated, base64.b64decode(body, validate=True)
    except (SigstoreError, binascii.Error, ValueError) as exc:
        raise _Refused(f"Rekor SET does not verify against {trust.source}: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_hashedrekord(body: bytes, candidate: CosignSignature, key=None, cert=None) -> None:
    """The logged entry is about this payload, this signature and this key or certificate."""
    if cert is not None:
        import rekor_types
        from sigstore._internal.rekor import _hashedrekord_from_parts
        from sigstore.hashes import Hashed
        from sigstore_models.common.v1 import HashAlgorithm

        expected = _hashedrekord_from_parts(
            cert, candidate.signature, Hashed(algorithm=HashAlgorithm.SHA2_256,
                                              digest=hashlib.sha256(candidate.payload).digest()))
        try:
            actual = rekor_types.Hashedrekord.model_validate_json(body)
        except ValueError as exc:
            raise _Refused(f"Rekor entry is not a hashedrekord: {exc}") from None
        if expected != actual:
            raise _Refused("Rekor entry is about another payload, signature or certificate")
        return
    from cryptography.hazmat.primitives import serialization

    try:
        entry = load_json(body, "Rekor entry", MAX_BLOB_BYTES)
        spec = entry["spec"]
        logged_hash = spec["data"]["hash"]
        logged_sig = base64.b64decode(spec["signature"]["content"], validate=True)
        logged_key = serialization.load_pem_public_key(base64.b64decode(spec["signature"]["publicKey"]["content"]))
    except (Unreadable, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _Refused(f"Rekor entry is not a readable hashedrekord ({type(exc).__name__})") from None
    if entry.get("kind") != "hashedrekord" or logged_hash != {"algorithm": "sha256",
                                                               "value": hashlib.sha256(candidate.payload).hexdigest()}:
        raise _Refused("Rekor entry is about another payload")
    if logged_sig != candidate.signature or key_id(logged_key) != key_id(key):
        raise _Refused("Rekor entry is about another signature or key")


# Sigstore bundles -----------------------------------------------------------------------------------


def _bundle_keyless(candidate: BundleSignature, requirement: Keyless, trust: Optional[SigstoreTrust]):
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore_models.common.v1 import HashAlgorithm

    doc = _bundle_document(candidate)
    material = doc.get("verificationMaterial") if isinstance(doc.get("verificationMaterial"), dict) else {}
    if "publicKey" in material:
        raise _Refused("key-signed bundle; the policy asks for a keyless signer", 0)
    if trust is None:
        raise _Refused("keyless signature but no trusted root is configured")
    try:
        bundle = Bundle.from_json(candidate.bundle)
    except SigstoreError as exc:
        raise _Refused(f"unreadable Sigstore bundle: {exc}") from None
    verifier = trust.verifier()
    policy = _Policy(requirement)
    try:
        if bundle._inner.dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            named = _statement_digests(payload_type, payload, requirement.predicate_types)
        else:
            signature = bundle._inner.message_signature
            message = signature.message_digest if signature is not None else None
            if message is None or message.algorithm != HashAlgorithm.SHA2_256:
                raise _Refused("message signature names no sha256 digest")
            verifier.verify_artifact(Hashed(algorithm=HashAlgorithm.SHA2_256, digest=message.digest), bundle, policy)
            named = ["sha256:" + message.digest.hex()]
    except SigstoreError as exc:
        raise _Refused(str(exc)) from None
    signer, issuer = policy.seen
    return named, signer, issuer


def _bundle_key(candidate: BundleSignature, requirement: CosignKey):
    doc = _bundle_document(candidate)
    material = doc.get("verificationMaterial") if isinstance(doc.get("verificationMaterial"), dict) else {}
    if "publicKey" not in material:
        raise _Refused("keyless bundle (it carries a certificate); the policy asks for a key", 0)
    if requirement.require_tlog:
        raise _Refused("transparency-log checks of key-signed bundles are not supported")
    envelope = doc.get("dsseEnvelope")
    if not isinstance(envelope, dict):
        raise _Refused("key-signed message-signature bundles are not supported; only DSSE envelopes")
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _Refused(f"unreadable DSSE envelope ({type(exc).__name__})") from None
    if not isinstance(payload_type, str) or len(signatures) != 1:
        raise _Refused("DSSE envelope must have a payload type and exactly one signature")
    if not _key_verifies(requirement._key, signatures[0], _pae(payload_type, payload)):
        raise _Refused(f"DSSE signature does not verify with {requirement.describe()}")
    return _statement_digests(payload_type, payload, requirement.predicate_types), requirement.key_id, None


def _bundle_document(candidate: BundleSignature) -> dict:
    try:
        doc = load_json(candidate.bundle, f"Sigstore bundle at {candidate.location}", MAX_BLOB_BYTES)
    except Unreadable as exc:
        raise _Refused(str(exc)) from None
    if not isinstance(doc, dict):
        raise _Refused("Sigstore bundle is not a JSON object")
    return doc


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding (what the signature covers), as the DSSE v1 protocol defines it."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _statement_digests(payload_type: str, payload: bytes, predicate_types: tuple[str, ...]) -> list[str]:
    """The sha256 digests an in-toto Statement's subjects name."""
    if payload_type != PAYLOAD_IN_TOTO:
        raise _Refused(f"DSSE payload type {one_line(payload_type, 80)} is not an in-toto statement")
    try:
        statement = load_json(payload, "in-toto statement", MAX_BLOB_BYTES)
    except Unreadable as exc:
        raise _Refused(str(exc)) from None
    if not isinstance(statement, dict) or statement.get("_type") not in IN_TOTO_STATEMENTS:
        raise _Refused("DSSE payload is not an in-toto Statement")
    if predicate_types and statement.get("predicateType") not in predicate_types:
        raise _Refused(f"predicate type {one_line(str(statement.get('predicateType')), 100)} is not one the "
                       f"policy accepts")
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise _Refused("in-toto statement has no subject list")
    named = []
    for subject in subjects[:1000]:
        value = subject.get("digest", {}).get("sha256") if isinstance(subject, dict) else None
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
            named.append("sha256:" + value)
    return named


# identity -------------------------------------------------------------------------------------------


class _Policy:
    """sigstore-python's ``VerificationPolicy`` protocol for a ``Keyless`` requirement (exact or RE2,
    whole value); it remembers the identity and issuer it saw for the verdict."""

    def __init__(self, requirement: Keyless):
        self.requirement = requirement
        self.seen: tuple[Optional[str], Optional[str]] = (None, None)

    def verify(self, cert) -> None:
        from sigstore.errors import VerificationError

        try:
            self.seen = _identity(cert, self.requirement)
        except _Refused as exc:
            raise VerificationError(str(exc)) from None


def _identity(cert, requirement: Keyless) -> tuple[str, str]:
    """(signer, issuer) when the certificate satisfies the requirement; raises ``_Refused`` otherwise."""
    issuer = _oidc_issuer(cert)
    sans = _sans(cert)
    if not requirement.issuer_matches(issuer):
        raise _Refused(f"issuer {issuer or '(none)'} is not {requirement.describe()}")
    match = next((san for san in sans if requirement.identity_matches(san)), None)
    if match is None:
        shown = ", ".join(sans[:3]) or "(none)"
        raise _Refused(f"certificate identity {shown} is not {requirement.describe()}")
    return match, issuer


def _sans(cert) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    values = [str(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    values += [str(v) for v in ext.get_values_for_type(x509.RFC822Name)]
    for other in ext.get_values_for_type(x509.OtherName):
        if other.type_id.dotted_string == _OID_OTHERNAME:
            values.append(_der_utf8(other.value) or other.value.decode(errors="replace"))
    return values


def _oidc_issuer(cert) -> Optional[str]:
    from cryptography import x509

    for oid, der in ((_OID_ISSUER_V2, True), (_OID_ISSUER_V1, False)):
        try:
            value = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value
        except x509.ExtensionNotFound:
            continue
        text = _der_utf8(value) if der else value.decode(errors="replace")
        if text:
            return text
    return None


def _der_utf8(value: bytes) -> Optional[str]:
    """The text of a DER UTF8String (tag 0x0c, short or long length), else None."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length, start = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 3 or len(value) < 2 + count:
            return None
        length, start = int.from_bytes(value[2:2 + count], "big"), 2 + count
    body = value[start:start + length]
    return body.decode(errors="replace") if len(body) == length else None


def _check_code_signing(cert) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise _Refused("certificate lacks key usage or extended key usage") from None
    if not usage.digital_signature or ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise _Refused("certificate is not for code signing")


# keys -----------------------------------------------------------------------------------------------


def _key_verifies(public_key, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return True
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            curve_hash = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384,
                          "secp521r1": hashes.SHA512}.get(public_key.curve.name, hashes.SHA256)
            for algorithm in dict.fromkeys((curve_hash, hashes.SHA256)):
                try:
                    public_key.verify(signature, data, ec.ECDSA(algorithm()))
                    return True
                except InvalidSignature:
                    continue
            return False
    except (InvalidSignature, ValueError):
        return False
    return False
