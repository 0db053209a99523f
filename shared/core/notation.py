"""Verifying Notary Project (notation) signatures of an image, offline.

Pure code: no I/O (the adapter fetches the signature manifests through the referrers API and their
envelope blobs; the caller passes the time). Standard library, ``cryptography`` (X.509 path
validation, signatures), ``joserfc`` (JWS JSON serialization), ``cbor2`` (COSE), ``shared.core``.

What a signature is (Notary Project specifications: signature-specification.md,
signature-envelope-jws.md, signature-envelope-cose.md, trust-store-trust-policy.md)
    An OCI image manifest whose ``artifactType`` (or, in the older form, ``config.mediaType``) is
    ``application/vnd.cncf.notary.signature``, with one layer: the signature envelope, either
    ``application/jose+json`` (JWS, flattened JSON serialization) or ``application/cose``
    (COSE_Sign1_Tagged). The envelope signs the payload ``{"targetArtifact": {mediaType, digest,
    size}}`` plus protected headers: ``alg``, ``crit``, content type
    ``application/vnd.cncf.notary.payload.v1+json``, ``io.cncf.notary.signingScheme``
    (``notary.x509``), ``io.cncf.notary.signingTime`` and the optional ``io.cncf.notary.expiry``.
    The certificate chain (leaf first, root last) is the unprotected ``x5c`` (JWS) or ``x5chain``
    (COSE, label 33).

What :func:`verify_notation` checks, in this order (the first failure is the verdict)
    1. The manifest is a Notary Project signature with one envelope layer, and the envelope blob
       has that layer's digest and size.
    2. The envelope parses (size-bounded; duplicate JSON keys or CBOR map keys are refused), the
       content type and signing scheme are supported, ``crit`` names ``signingScheme`` and every
       critical header is present and understood (an unknown one, or a verification plugin we
       cannot run, fails), ``expiry`` is critical when present, and the signing time is there.
    3. ``alg`` is the one the signing certificate's key dictates (RSA 2048/3072/4096: PS256/384/512;
       EC P-256/384/521: ES256/384/512), and the signature verifies with that key (integrity;
       JWS through joserfc, COSE over its Sig_structure).
    4. The chain is ordered (each certificate issued by the next, ending in a self-signed root),
       meets the specification's certificate requirements (CA: basicConstraints and keyUsage
       keyCertSign, both critical; leaf: critical keyUsage with digitalSignature and none of the
       other usages, no cA, no server/client/e-mail/time-stamping EKU; RSA >= 2048 bits, EC >= 256;
       no SHA-1), every certificate is valid at the signing time and now (timestamp
       countersignatures are not evaluated, so the chain must still be valid), and it leads to a
       certificate of the trust store (cryptography's X.509 path validation at the signing time).
    5. The signing certificate's subject matches a trusted identity (or the identities are ``*``).
    6. The signature has not expired (``expiry`` is after now).
    7. The payload's ``targetArtifact.digest`` is the image's digest; otherwise the verdict is
       "mismatch" (a trusted signature, for other content).
    Everything before 7 that fails is "invalid", with a one-line reason. Revocation (OCSP/CRL) is
    not checked (no network here), and signatures under the ``notary.x509.signingAuthority``
    scheme are refused as unsupported.

:func:`verify_notation_signatures` looks at an image's signatures and returns the first verified
one, else the most telling failure ("mismatch" before "invalid"), else "unsigned".
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.registry import HeaderParameter

from shared.core.reference import ReferenceSyntaxError, validate_digest
from shared.core.trustpolicy import KIND_NOTATION, NotationRequirement, format_subject

__all__ = [
    "ARTIFACT_TYPE",
    "MAX_ENVELOPE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MEDIA_COSE",
    "MEDIA_JWS",
    "SignatureManifest",
    "Verification",
    "is_signature_manifest",
    "parse_signature_manifest",
    "verify_notation",
    "verify_notation_signatures",
]

ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
MEDIA_JWS = "application/jose+json"
MEDIA_COSE = "application/cose"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_CHAIN = 10
MAX_SIGNATURES = 16  # signatures looked at per image

H_SCHEME = "io.cncf.notary.signingScheme"
H_SIGNING_TIME = "io.cncf.notary.signingTime"
H_AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
H_EXPIRY = "io.cncf.notary.expiry"
H_PLUGIN = "io.cncf.notary.verificationPlugin"
H_PLUGIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
H_AGENT = "io.cncf.notary.signingAgent"
H_TIMESTAMP = "io.cncf.notary.timestampSignature"
_UNDERSTOOD_CRITICAL = frozenset({H_SCHEME, H_EXPIRY, H_AUTHENTIC_TIME})
_PLUGIN_HEADERS = (H_PLUGIN, H_PLUGIN_VERSION)
_PROTECTED_ONLY = frozenset({"alg", "cty", "crit", "b64", H_SCHEME, H_SIGNING_TIME, H_AUTHENTIC_TIME, H_EXPIRY,
                             *_PLUGIN_HEADERS})
_JWS_MEMBERS = frozenset({"payload", "protected", "header", "signature"})

# (key type, size or curve) -> (JWS alg, COSE alg, hash)
_ALGORITHMS = {
    ("RSA", 2048): ("PS256", -37, hashes.SHA256),
    ("RSA", 3072): ("PS384", -38, hashes.SHA384),
    ("RSA", 4096): ("PS512", -39, hashes.SHA512),
    ("EC", "secp256r1"): ("ES256", -7, hashes.SHA256),
    ("EC", "secp384r1"): ("ES384", -35, hashes.SHA384),
    ("EC", "secp521r1"): ("ES512", -36, hashes.SHA512),
}
_COSE_ALG_NAMES = {cose: name for name, cose, _ in _ALGORITHMS.values()}
_COSE_CRIT, _COSE_ALG, _COSE_CTY, _COSE_X5CHAIN, _COSE_PAYLOAD_HASH_ALG = 2, 1, 3, 33, 258
_FORBIDDEN_LEAF_EKU = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _refuse_tag(tag: int):
    def refuse(value: Any, immutable: bool) -> Any:
        raise ValueError(f"CBOR tag {tag} is not used by Notary Project envelopes")
    return refuse


# cbor2 turns these tags into Python objects (regular expressions, MIME messages, shared references...);
# an envelope needs none of them, so decoding one is an error rather than work done for an attacker
_CBOR_REFUSED = {tag: _refuse_tag(tag) for tag in (0, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 38, 52, 54, 100,
                                                     256, 258, 260, 261, 1004, 55799)}


@dataclass(frozen=True)
class Verification:
    """One verdict. Mirrors ``shared.core.signatures.Verification`` (to be imported from there on merge)."""

    status: str  # "verified" | "unsigned" | "invalid" | "mismatch" | "skipped"
    kind: Optional[str]  # "cosign-key" | "keyless" | "notation" | None
    signer: Optional[str]  # certificate identity / key id / X.509 subject
    issuer: Optional[str]
    location: Optional[str]  # "referrers:<digest>" ...
    reason: Optional[str]  # one line, when not verified


class _Failed(Exception):
    """Verification stops here; ``status`` is "invalid" or "mismatch"."""

    def __init__(self, reason: str, status: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --- the signature manifest ----------------------------------------------------------------------

@dataclass(frozen=True)
class SignatureManifest:
    """What the adapter needs from a signature manifest to fetch and check its envelope."""

    digest: str  # of the manifest bytes (sha256)
    envelope_type: str  # MEDIA_JWS or MEDIA_COSE
    envelope_digest: str
    envelope_size: int
    subject_digest: Optional[str]
    thumbprints: tuple[str, ...]  # lower-case hex SHA-256 of the chain's certificates, leaf first


def _loads_json(data: bytes, what: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict:
        found: dict = {}
        for key, value in items:
            if key in found:
                raise _Failed(f"{what} has the key {key!r} twice")
            found[key] = value
        return found

    def constant(name: str) -> Any:
        raise _Failed(f"{what} contains {name}, which is not JSON")

    try:
        return json.loads(data, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError) as e:
        raise _Failed(f"{what} is not valid JSON ({_first_line(e)})") from None


def is_signature_manifest(manifest: Mapping) -> bool:
    """Is this (parsed) manifest, or referrers-index descriptor, a Notary Project signature?"""
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    return manifest.get("artifactType") == ARTIFACT_TYPE or config_type == ARTIFACT_TYPE


def parse_signature_manifest(data: bytes) -> SignatureManifest:
    """Read a signature manifest; raise ``ValueError`` with a one-line reason if it is not one."""
    try:
        return _signature_manifest(data)
    except _Failed as e:
        raise ValueError(e.reason) from None


def _signature_manifest(data: bytes) -> SignatureManifest:
    if not isinstance(data, (bytes, bytearray)):
        raise _Failed("signature manifest must be bytes")
    if len(data) > MAX_MANIFEST_BYTES:
        raise _Failed(f"signature manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    manifest = _loads_json(bytes(data), "signature manifest")
    if not isinstance(manifest, dict):
        raise _Failed("signature manifest is not a JSON object")
    if not is_signature_manifest(manifest):
        raise _Failed(f"not a Notary Project signature (artifactType / config.mediaType is not {ARTIFACT_TYPE})")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise _Failed("signature manifest must have exactly one layer (the envelope)")
    layer = layers[0]
    media_type, digest, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
    if media_type not in (MEDIA_JWS, MEDIA_COSE):
        raise _Failed(f"unsupported signature envelope type {media_type!r} ({MEDIA_JWS} or {MEDIA_COSE})")
    _check_digest(digest, "the envelope layer's digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _Failed("the envelope layer's size is not a non-negative integer")
    subject = manifest.get("subject")
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    thumbprints: tuple[str, ...] = ()
    annotations = manifest.get("annotations")
    raw = annotations.get("io.cncf.notary.x509chain.thumbprint#S256") if isinstance(annotations, dict) else None
    if isinstance(raw, str):
        try:
            listed = json.loads(raw)
        except ValueError:
            listed = None
        if isinstance(listed, list) and all(isinstance(t, str) for t in listed):
            thumbprints = tuple(t.lower() for t in listed)
    return SignatureManifest("sha256:" + hashlib.sha256(data).hexdigest(), media_type, digest, size,
                             subject_digest if isinstance(subject_digest, str) else None, thumbprints)


def _check_digest(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Failed(f"{what} is not a string")
    try:
        return validate_digest(value)
    except ReferenceSyntaxError as e:
        raise _Failed(f"{what} is not a valid digest: {e.reason}") from None


# --- envelopes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Envelope:
    """A parsed envelope whose signature verified with its leaf certificate's key."""

    payload: bytes
    certificates: tuple[x509.Certificate, ...]
    signing_time: datetime
    expiry: Optional[datetime]


def _algorithm(certificate: x509.Certificate) -> tuple[str, int, type]:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        found = _ALGORITHMS.get(("RSA", key.key_size))
        if found is None:
            raise _Failed(f"the signing key is RSA-{key.key_size}; Notary Project signatures use RSA 2048, "
                          "3072 or 4096")
        return found
    if isinstance(key, ec.EllipticCurvePublicKey):
        found = _ALGORITHMS.get(("EC", key.curve.name))
        if found is None:
            raise _Failed(f"the signing key is on curve {key.curve.name}; Notary Project signatures use P-256, "
                          "P-384 or P-521")
        return found
    raise _Failed(f"the signing key is {type(key).__name__.lstrip('_')}; Notary Project signatures use RSA or ECDSA")


def _certificates(raw: Any, what: str, decode) -> tuple[x509.Certificate, ...]:
    if isinstance(raw, (bytes, str)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise _Failed(f"{what} (the certificate chain) is missing or empty")
    if len(raw) > MAX_CHAIN:
        raise _Failed(f"{what} has {len(raw)} certificates; the limit is {MAX_CHAIN}")
    out = []
    for n, item in enumerate(raw):
        try:
            certificate = x509.load_der_x509_certificate(decode(item))
            # cryptography reads these lazily; read them now so a damaged certificate fails here, once
            certificate.public_key(), certificate.extensions, certificate.subject, certificate.issuer
        except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm, x509.DuplicateExtension,
                x509.InvalidVersion) as e:  # InvalidVersion: a version field other than v1/v3
            raise _Failed(f"{what}[{n}] is not a readable DER X.509 certificate ({_first_line(e)})") from None
        out.append(certificate)
    return tuple(out)


def _b64_std(item: Any) -> bytes:
    if not isinstance(item, str):
        raise TypeError("not a base64 string")
    return base64.b64decode(item, validate=True)


def _bytes(item: Any) -> bytes:
    if not isinstance(item, bytes):
        raise TypeError("not a byte string")
    return item


def _b64url(segment: Any, what: str) -> bytes:
    if not isinstance(segment, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise _Failed(f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _Failed(f"{what} is not valid base64url") from None


def _rfc3339(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or "T" not in value.upper():
        raise _Failed(f"{name} is not an RFC 3339 date-time")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise _Failed(f"{name} {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise _Failed(f"{name} {value!r} has no time zone")
    return parsed.astimezone(timezone.utc)


def _cose_time(value: Any, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _Failed(f"{name} is not a CBOR epoch date-time (tag 1)")
    return value.astimezone(timezone.utc)


def _check_headers(protected: Mapping, crit: Any, registered: frozenset) -> None:
    """The header rules JWS and COSE share; ``protected`` is keyed by name (text labels)."""
    if not isinstance(crit, (list, tuple)) or not crit:
        raise _Failed("crit is missing or empty; it must list io.cncf.notary.signingScheme")
    for name in crit:
        if name in registered:
            raise _Failed(f"crit lists the registered header {name!r}")
        if name not in protected:
            raise _Failed(f"crit lists {name!r}, which is not in the protected header")
        if name in _PLUGIN_HEADERS:
            raise _Failed(f"the signature requires verification plugin {protected.get(H_PLUGIN)!r}, "
                          "which airlock cannot run")
        if name not in _UNDERSTOOD_CRITICAL:
            raise _Failed(f"unknown critical header {name!r}")
    if H_SCHEME not in crit:
        raise _Failed(f"crit must list {H_SCHEME}")
    for name in _PLUGIN_HEADERS:
        if name in protected:
            raise _Failed(f"the signature requires verification plugin {protected.get(H_PLUGIN)!r}, "
                          "which airlock cannot run")
    for name in (H_EXPIRY, H_AUTHENTIC_TIME):
        if name in protected and name not in crit:
            raise _Failed(f"{name} is present but not listed in crit")
    scheme = protected.get(H_SCHEME)
    if scheme == SCHEME_SIGNING_AUTHORITY:
        raise _Failed(f"signing scheme {SCHEME_SIGNING_AUTHORITY} is not supported (only {SCHEME_X509})")
    if scheme != SCHEME_X509:
        raise _Failed(f"unknown signing scheme {scheme!r}")
    if H_SIGNING_TIME not in protected:
        raise _Failed(f"{H_SIGNING_TIME} is missing (required by {SCHEME_X509})")
    if H_AUTHENTIC_TIME in protected:
        raise _Failed(f"{H_AUTHENTIC_TIME} is only valid under {SCHEME_SIGNING_AUTHORITY}")


class _NotaryRegistry(jws.JWSRegistry):
    """joserfc's registry with the Notary Project headers known (so listing them in crit is accepted)."""

    max_header_length = 16 * 1024
    max_payload_length = 64 * 1024
    max_signature_length = 1024


_NOTARY_HEADERS = {name: HeaderParameter(name, "str") for name in (H_SCHEME, H_SIGNING_TIME, H_EXPIRY, H_AGENT,
                                                                   H_AUTHENTIC_TIME, H_TIMESTAMP)}


def _jws(blob: bytes) -> _Envelope:
    envelope = _loads_json(blob, "JWS envelope")
    if not isinstance(envelope, dict):
        raise _Failed("JWS envelope is not a JSON object")
    if "signatures" in envelope:
        raise _Failed("JWS envelope uses the general serialization; Notary Project signatures are flattened")
    extra = sorted(set(envelope) - _JWS_MEMBERS)
    if extra:
        raise _Failed(f"JWS envelope has unexpected member {extra[0]!r}")
    for member in ("payload", "protected", "signature"):
        if not isinstance(envelope.get(member), str):
            raise _Failed(f"JWS envelope has no {member}")
    protected = _loads_json(_b64url(envelope["protected"], "protected header"), "protected header")
    if not isinstance(protected, dict):
        raise _Failed("protected header is not a JSON object")
    header = envelope.get("header", {})
    if not isinstance(header, dict):
        raise _Failed("unprotected header is not a JSON object")
    both = sorted(set(header) & _PROTECTED_ONLY)
    if both:
        raise _Failed(f"{both[0]!r} must be in the protected header, not the unprotected one")
    if "x5c" in protected:
        raise _Failed("x5c must be in the unprotected header")
    if "b64" in protected:  # RFC 7797 would change what is signed; notation never sets it
        raise _Failed("the b64 header (unencoded payload) is not used by Notary Project signatures")
    if protected.get("cty") != PAYLOAD_TYPE:
        raise _Failed(f"unsupported payload content type {protected.get('cty')!r} (expected {PAYLOAD_TYPE})")
    _check_headers(protected, protected.get("crit"), frozenset({"alg", "cty", "crit", "typ", "b64"}))
    signing_time = _rfc3339(protected[H_SIGNING_TIME], H_SIGNING_TIME)
    expiry = _rfc3339(protected[H_EXPIRY], H_EXPIRY) if H_EXPIRY in protected else None

    certificates = _certificates(header.get("x5c"), "x5c", _b64_std)
    alg, _, _ = _algorithm(certificates[0])
    if protected.get("alg") != alg:
        raise _Failed(f"alg is {protected.get('alg')!r} but the signing certificate's key requires {alg}")
    pem = certificates[0].public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    key = RSAKey.import_key(pem) if alg.startswith("PS") else ECKey.import_key(pem)
    registry = _NotaryRegistry(header_registry=_NOTARY_HEADERS, algorithms=[alg], strict_check_header=False)
    try:
        verified = jws.deserialize_json(envelope, key, registry=registry)
    except JoseError as e:
        if type(e).__name__ == "BadSignatureError":
            raise _Failed("the signature does not verify with the signing certificate's key") from None
        raise _Failed(f"JWS envelope rejected: {_first_line(e) or type(e).__name__}") from None
    except (ValueError, TypeError, binascii.Error) as e:
        raise _Failed(f"JWS envelope rejected: {_first_line(e)}") from None
    return _Envelope(verified.payload, certificates, signing_time, expiry)


def _cbor(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data, max_depth=16, allow_indefinite=False, allow_duplicate_keys=False,
                           semantic_decoders=_CBOR_REFUSED)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise _Failed(f"{what} is not valid CBOR for an envelope ({_first_line(e)})") from None


def _cose(blob: bytes) -> _Envelope:
    message = _cbor(blob, "COSE envelope")
    if not isinstance(message, cbor2.CBORTag) or message.tag != 18:
        raise _Failed("COSE envelope is not a COSE_Sign1_Tagged message (CBOR tag 18)")
    parts = message.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise _Failed("COSE_Sign1 must be an array of 4 items")
    protected_bytes, unprotected, payload, signature = parts
    if not isinstance(protected_bytes, bytes) or not isinstance(signature, bytes):
        raise _Failed("COSE_Sign1 protected header and signature must be byte strings")
    if payload is None:
        raise _Failed("COSE_Sign1 has a detached payload; Notary Project envelopes carry it")
    if not isinstance(payload, bytes):
        raise _Failed("COSE_Sign1 payload must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise _Failed("COSE_Sign1 unprotected header must be a map")
    protected = _cbor(protected_bytes, "COSE protected header") if protected_bytes else {}
    if not isinstance(protected, Mapping):
        raise _Failed("COSE protected header is not a map")
    if _COSE_PAYLOAD_HASH_ALG in protected:
        raise _Failed("COSE hash envelopes (payload hash alg, label 258) are not supported")
    both = sorted(str(k) for k in set(unprotected) & (_PROTECTED_ONLY | {_COSE_ALG, _COSE_CRIT, _COSE_CTY}))
    if both:
        raise _Failed(f"{both[0]!r} must be in the protected header, not the unprotected one")
    if protected.get(_COSE_CTY) != PAYLOAD_TYPE:
        raise _Failed(f"unsupported payload content type {protected.get(_COSE_CTY)!r} (expected {PAYLOAD_TYPE})")
    named = {k: v for k, v in protected.items() if isinstance(k, str)}
    _check_headers(named, protected.get(_COSE_CRIT), frozenset(range(0, 9)))
    signing_time = _cose_time(named[H_SIGNING_TIME], H_SIGNING_TIME)
    expiry = _cose_time(named[H_EXPIRY], H_EXPIRY) if H_EXPIRY in named else None

    chain = protected.get(_COSE_X5CHAIN, unprotected.get(_COSE_X5CHAIN))
    certificates = _certificates(chain, "x5chain", _bytes)
    alg, cose_alg, hash_type = _algorithm(certificates[0])
    if protected.get(_COSE_ALG) != cose_alg:
        shown = _COSE_ALG_NAMES.get(protected.get(_COSE_ALG), protected.get(_COSE_ALG))
        raise _Failed(f"alg is {shown!r} but the signing certificate's key requires {alg}")
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", payload])
    key = certificates[0].public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, to_be_signed, padding.PSS(padding.MGF1(hash_type()), hash_type.digest_size),
                       hash_type())
        else:
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                raise InvalidSignature()
            r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hash_type()))
    except InvalidSignature:
        raise _Failed("the signature does not verify with the signing certificate's key") from None
    return _Envelope(payload, certificates, signing_time, expiry)


# --- certificates --------------------------------------------------------------------------------

def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_usage(certificate: x509.Certificate) -> Optional[x509.Extension]:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return None


def _check_leaf(certificate: x509.Certificate) -> None:
    subject = format_subject(certificate.subject)
    usage = _key_usage(certificate)
    if usage is None or not usage.critical:
        raise _Failed(f"signing certificate {subject} needs a critical keyUsage extension")
    ku = usage.value
    if not ku.digital_signature:
        raise _Failed(f"signing certificate {subject} keyUsage lacks digitalSignature")
    others = [name for name, on in (("keyEncipherment", ku.key_encipherment),
                                    ("dataEncipherment", ku.data_encipherment), ("keyAgreement", ku.key_agreement),
                                    ("keyCertSign", ku.key_cert_sign), ("cRLSign", ku.crl_sign)) if on]
    if others:
        raise _Failed(f"signing certificate {subject} keyUsage must not include {others[0]}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise _Failed(f"signing certificate {subject} is a CA (basicConstraints cA is true)")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        bad = [name for oid, name in _FORBIDDEN_LEAF_EKU.items() if oid in usages]
        if bad:
            raise _Failed(f"signing certificate {subject} extendedKeyUsage must not include {bad[0]}")
    except x509.ExtensionNotFound:
        pass


def _check_ca(certificate: x509.Certificate) -> None:
    subject = format_subject(certificate.subject)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        raise _Failed(f"CA certificate {subject} has no basicConstraints extension") from None
    if not constraints.critical or not constraints.value.ca:
        raise _Failed(f"CA certificate {subject} needs a critical basicConstraints with cA true")
    usage = _key_usage(certificate)
    if usage is None or not usage.critical or not usage.value.key_cert_sign:
        raise _Failed(f"CA certificate {subject} needs a critical keyUsage with keyCertSign")


def _check_common(certificate: x509.Certificate, signing_time: datetime, now: datetime) -> None:
    subject = format_subject(certificate.subject)
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if isinstance(algorithm, hashes.SHA1):
        raise _Failed(f"certificate {subject} is signed with SHA-1")
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise _Failed(f"certificate {subject} has an RSA key of {key.key_size} bits (at least 2048)")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        raise _Failed(f"certificate {subject} has an EC key of {key.curve.key_size} bits (at least 256)")
    for moment, label in ((signing_time, "at the signing time"), (now, "now")):
        if moment < certificate.not_valid_before_utc:
            raise _Failed(f"certificate {subject} is not valid {label} ({_when(moment)}): valid from "
                          f"{_when(certificate.not_valid_before_utc)}")
        if moment > certificate.not_valid_after_utc:
            raise _Failed(f"certificate {subject} is not valid {label} ({_when(moment)}): expired "
                          f"{_when(certificate.not_valid_after_utc)}")


def _check_chain(certificates: Sequence[x509.Certificate], signing_time: datetime, now: datetime) -> None:
    """The specification's rules on the chain in the envelope, before asking whether it is trusted."""
    for certificate in certificates:
        _check_common(certificate, signing_time, now)
    for child, parent in zip(certificates, certificates[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise _Failed(f"the chain is out of order: {format_subject(parent.subject)} did not issue "
                          f"{format_subject(child.subject)}") from None
    root = certificates[-1]
    try:
        root.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise _Failed(f"the chain does not end with a root: {format_subject(root.subject)} is not self-signed") \
            from None
    _check_leaf(certificates[0])
    for certificate in certificates[1:]:
        _check_ca(certificate)


_CA_POLICY = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
_EE_POLICY = ExtensionPolicy.permit_all()
_PROCESSING = re.compile(r"\s*\(encountered processing <Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>\)")


def _trust_anchor(certificates: Sequence[x509.Certificate], store: Sequence[x509.Certificate],
                  signing_time: datetime) -> x509.Certificate:
    """The trust-store certificate the chain leads to (path validation at the signing time)."""
    verifier = (PolicyBuilder().store(Store(list(store))).time(signing_time).max_chain_depth(MAX_CHAIN)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY).build_client_verifier())
    try:
        return verifier.verify(certificates[0], list(certificates[1:])).chain[-1]
    except VerificationError as e:
        detail = _PROCESSING.sub(lambda m: f" (at {m.group(1)})", str(e)).removeprefix("validation failed: ")
        raise _Failed(f"the certificate chain does not lead to the trust store: {_first_line(detail)}") from None


# --- verdicts ------------------------------------------------------------------------------------

def _payload_digest(payload: bytes) -> str:
    document = _loads_json(payload, "payload")
    target = document.get("targetArtifact") if isinstance(document, dict) else None
    if not isinstance(target, dict):
        raise _Failed("payload has no targetArtifact descriptor")
    if not isinstance(target.get("mediaType"), str):
        raise _Failed("targetArtifact has no mediaType")
    size = target.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _Failed("targetArtifact size is not a non-negative integer")
    return _check_digest(target.get("digest"), "targetArtifact digest")


def _verify(manifest: bytes, blob: bytes, digest: str, requirement: NotationRequirement,
            now: datetime) -> tuple[str, str]:
    """(signer, issuer) of a verified signature; raises ``_Failed``."""
    described = _signature_manifest(manifest)
    if not isinstance(blob, (bytes, bytearray)):
        raise _Failed("signature envelope must be bytes")
    blob = bytes(blob)
    if len(blob) > MAX_ENVELOPE_BYTES:
        raise _Failed(f"signature envelope is {len(blob)} bytes; the limit is {MAX_ENVELOPE_BYTES}")
    algorithm, _, expected = described.envelope_digest.partition(":")
    if len(blob) != described.envelope_size or _DIGESTS[algorithm](blob).hexdigest() != expected:
        raise _Failed(f"the envelope blob is not the manifest's layer {described.envelope_digest}")
    envelope = _jws(blob) if described.envelope_type == MEDIA_JWS else _cose(blob)
    certificates = envelope.certificates
    _check_chain(certificates, envelope.signing_time, now)
    anchor = _trust_anchor(certificates, requirement.certificates, envelope.signing_time)
    leaf = certificates[0]
    signer = format_subject(leaf.subject)
    if not requirement.trusts_subject(leaf.subject):
        raise _Failed(f"signer {signer} is not a trusted identity")
    if envelope.expiry is not None and envelope.expiry <= now:
        raise _Failed(f"the signature expired at {_when(envelope.expiry)}")
    signed = _payload_digest(envelope.payload)
    if signed != digest:
        raise _Failed(f"the signature is for {signed}, not this image ({digest})", status="mismatch")
    return signer, format_subject(anchor.subject)


def verify_notation(manifest: bytes, envelope: bytes, *, digest: str, requirement: NotationRequirement,
                    now: datetime, location: Optional[str] = None) -> Verification:
    """The verdict on one Notary Project signature of the image ``digest``. Never raises for bad input.

    ``manifest`` is the signature manifest's bytes, ``envelope`` its layer's blob; ``now`` is a
    timezone-aware datetime. ``location`` defaults to ``referrers:<signature manifest digest>``.
    """
    if now.tzinfo is None:
        raise TypeError("now must be timezone-aware")
    if location is None:
        location = "referrers:sha256:" + hashlib.sha256(manifest).hexdigest() \
            if isinstance(manifest, (bytes, bytearray)) else None
    try:
        signer, issuer = _verify(manifest, envelope, digest, requirement, now.astimezone(timezone.utc))
    except _Failed as failure:
        return Verification(failure.status, KIND_NOTATION, None, None, location, failure.reason)
    return Verification("verified", KIND_NOTATION, signer, issuer, location, None)


def verify_notation_signatures(signatures: Iterable[tuple[bytes, bytes]], *, digest: str,
                               requirement: NotationRequirement, now: datetime,
                               limit: int = MAX_SIGNATURES) -> Verification:
    """The verdict on an image's Notary Project signatures: ``(manifest, envelope)`` pairs.

    The first that verifies wins; otherwise the first "mismatch", else the first "invalid" (its
    reason says how many were looked at); no signature at all is "unsigned". At most ``limit``
    signatures are looked at.
    """
    failures: list[Verification] = []
    for n, (manifest, envelope) in enumerate(signatures):
        if n >= limit:
            break
        verdict = verify_notation(manifest, envelope, digest=digest, requirement=requirement, now=now)
        if verdict.status == "verified":
            return verdict
        failures.append(verdict)
    if not failures:
        return Verification("unsigned", KIND_NOTATION, None, None, None, "no Notary Project signature")
    chosen = next((f for f in failures if f.status == "mismatch"), failures[0])
    if len(failures) > 1:
        chosen = Verification(chosen.status, chosen.kind, chosen.signer, chosen.issuer, chosen.location,
                              f"{len(failures)} signatures, none verified; {chosen.reason}")
    return chosen


def _first_line(error: Any) -> str:
    return (str(error).splitlines() or [""])[0]

