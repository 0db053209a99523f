"""Image signatures at the border: cosign and Sigstore verification (pure: callers bring the bytes).

The adapter (``shared.adapters.signatures``) finds the signature artifacts of one image digest in its
source registry and hands them over as ``SignatureArtifact`` values (``shared.core.trust.artifacts``).
:func:`verify_image` decides, for a policy's ``Requirement`` list and a ``SigstoreTrust`` (a
trusted-root JSON the caller read; ``shared.core.trust.signers``), one ``Verification`` per image
(``shared.core.trust.verdict``).

``verify_image`` returns ``verified`` as soon as one (signature, requirement) pair verifies;
otherwise the most telling failure: a mismatch, then a failed check of a signature of the required
kind, then a signature of another kind. Cost per image is bounded (at most MAX_CANDIDATES
signatures, each bounded in size) and independent of the run: trust material is parsed once per
``SigstoreTrust`` and identity patterns once per ``Keyless``. ``verdict_key`` is a stable cache key
for a verdict: (digest, requirements fingerprint, trusted-root fingerprint). Only ``verified`` is
worth caching by it: what a registry holds can change (a signature attached later).

What is checked, per kind (the cosign tag scheme: ``shared.core.trust.cosign``; the identity policy:
``shared.core.trust.fulcio``)
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
- ``CosignKey`` + Sigstore bundle (as ``cosign sign --key`` makes in its bundle format): the signature
  over the DSSE PAE with the key, then the statement's subjects. Not supported (``invalid`` with the
  reason): message-signature bundles with a key, and ``require_tlog`` for key-signed bundles.
- Not checked anywhere: ``critical.identity.docker-reference`` (cosign ignores it too), the
  Statement's predicate beyond its type (``predicate_types`` restricts the type when given).

Multi-platform images: cosign, @sigstore/oci and GitHub attestations sign the digest they are given,
normally the index the tag points to; that index digest is what the airlock imports, so the caller
verifies the index digest. Signatures over one platform's manifest do not cover the index.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from shared.core.trust.artifacts import (IN_TOTO_STATEMENTS, MAX_BLOB_BYTES, PAYLOAD_IN_TOTO, BundleSignature,
                                         Candidate, CosignSignature, NotationSignature, SignatureArtifact, Unreadable,
                                         Unusable, candidates, load_json, valid_digest)
from shared.core.trust.cosign import _cosign_key, _cosign_keyless, _key_verifies, _simple_signing_digest
from shared.core.trust.fulcio import _Policy
from shared.core.trust.signers import CosignKey, Keyless, Requirement, SigstoreTrust, _Refused
from shared.core.trust.verdict import (INVALID, KIND_COSIGN_KEY, KIND_KEYLESS, MISMATCH, UNSIGNED, VERIFIED,
                                      Verification, one_line)
from shared.errors import ValidationError

log = logging.getLogger(__name__)

MAX_CANDIDATES = 64  # signatures checked per image


# --- verification ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    verification: Verification
    rank: int  # 3 verified, 2 mismatch, 1 failed check of the required kind, 0 not of the required kind



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

