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
    Steps 2 and 3 are ``shared.core.trust.notation_envelopes``. Everything before 7 that fails is
    "invalid", with a one-line reason. Revocation (OCSP/CRL) is
    not checked (no network here), and signatures under the ``notary.x509.signingAuthority``
    scheme are refused as unsupported.

:func:`verify_notation_signatures` looks at an image's signatures and returns the first verified
one, else the most telling failure ("mismatch" before "invalid"), else "unsigned".
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Optional, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from shared.core.reference import ReferenceSyntaxError, validate_digest
from shared.core.trust.identities import format_subject
from shared.core.trust.notation_envelopes import MAX_CHAIN, _cose, _Failed, _first_line, _jws, _loads_json
from shared.core.trust.policy import NotationRequirement
from shared.core.trust.verdict import KIND_NOTATION, MISMATCH, UNSIGNED, VERIFIED, Verification

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
MAX_MANIFEST_BYTES = 64 * 1024
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_SIGNATURES = 16  # signatures looked at per image

_FORBIDDEN_LEAF_EKU = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
_DIGESTS = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


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
            now: datetime) -> tuple[str, str, datetime]:
    """(signer, issuer, valid until) of a verified signature; raises ``_Failed``. It is valid until the
    first certificate of the chain (the trust anchor included) or the signature expires."""
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
        raise _Failed(f"the signature is for {signed}, not this image ({digest})", status=MISMATCH)
    until = min([c.not_valid_after_utc for c in (*certificates, anchor)]
                + ([envelope.expiry] if envelope.expiry is not None else []))
    return signer, format_subject(anchor.subject), until


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
        signer, issuer, until = _verify(manifest, envelope, digest, requirement, now.astimezone(timezone.utc))
    except _Failed as failure:
        return Verification(failure.status, KIND_NOTATION, None, None, location, failure.reason)
    return Verification(VERIFIED, KIND_NOTATION, signer, issuer, location, None, valid_until=until)


def verify_notation_signatures(signatures: Iterable[tuple], *, digest: str,
                               requirement: NotationRequirement, now: datetime,
                               limit: int = MAX_SIGNATURES) -> Verification:
    """The verdict on an image's Notary Project signatures: ``(manifest, envelope)`` pairs, or
    ``(manifest, envelope, location)`` where it was found (default ``referrers:<manifest digest>``).

    The first that verifies wins; otherwise the first "mismatch", else the first "invalid" (its
    reason says how many were looked at); no signature at all is "unsigned". At most ``limit``
    signatures are looked at.
    """
    failures: list[Verification] = []
    for n, (manifest, envelope, *where) in enumerate(signatures):
        if n >= limit:
            break
        verdict = verify_notation(manifest, envelope, digest=digest, requirement=requirement, now=now,
                                  location=where[0] if where else None)
        if verdict.status == VERIFIED:
            return verdict
        failures.append(verdict)
    if not failures:
        return Verification(UNSIGNED, KIND_NOTATION, None, None, None, "no Notary Project signature")
    chosen = next((f for f in failures if f.status == MISMATCH), failures[0])
    if len(failures) > 1:
        chosen = Verification(chosen.status, chosen.kind, chosen.signer, chosen.issuer, chosen.location,
                              f"{len(failures)} signatures, none verified; {chosen.reason}")
    return chosen

