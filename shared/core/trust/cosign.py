"""cosign's tag scheme: simple-signing signatures, keyless (Fulcio + Rekor SET) or made with a key. Pure.

- ``Keyless`` + cosign tag scheme: this legacy form carries a Rekor SET but no inclusion proof, and
  sigstore-python 4.5.1 accepts no bundle without one (``TransparencyLogEntry`` requires an inclusion
  proof with checkpoint), so it cannot be converted into a ``Bundle``. It is checked step by step with
  sigstore-python's own pieces instead (pinned to 4.5.1; ``tests/unit/test_signatures_production.py``
  checks them on a real signature): the SET over the canonical log entry against the root's Rekor
  keys (``TrustedRoot.rekor_keyring``), which gives the signed time; the chain at that time
  (``Verifier._verify_chain_at_time``); the SCT (``sigstore._internal.sct.verify_sct``); key usage and
  codeSigning; the identity policy (``shared.core.trust.fulcio``); the time within the certificate's
  validity; the signature over the payload with the certificate's key; the log body equals the
  hashedrekord built from (certificate, signature, sha256 of the payload) (``_hashedrekord_from_parts``);
  then the payload's ``docker-manifest-digest``. Not checked: an inclusion proof (there is none; the SET
  is the log's promise), RFC 3161 timestamps in the ``dev.sigstore.cosign/rfc3161timestamp`` annotation
  (a signature without the Rekor bundle is ``invalid``), the ``chain`` annotation (the root's CAs are
  used, as cosign does).
- ``CosignKey``: the signature over the simple-signing payload with ``cryptography``
  (:func:`_key_verifies`: ECDSA P-256/P-384/P-521 with the curve's hash, or SHA-256 as cosign 1-2 used
  for every curve; RSA PKCS#1 v1.5 with SHA-256; Ed25519). Then the digest the payload names. With
  ``require_tlog``, the signature must also carry a Rekor SET bundle that verifies against the trusted
  root and whose hashedrekord body names this payload hash, this signature and this key.
- Not checked: ``critical.identity.docker-reference`` (cosign ignores it too).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Optional

from shared.core.trust.artifacts import MAX_BLOB_BYTES, CosignSignature, Unreadable, load_json
from shared.core.trust.fulcio import _check_code_signing, _identity
from shared.core.trust.signers import CosignKey, Keyless, SigstoreTrust, _Refused

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

    from shared.core.trust.keys import key_id

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
