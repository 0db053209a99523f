"""Notary Project signature envelopes: JWS and COSE, parsed and their signature checked. Pure code.

Part of the notation verifier (``shared.core.trust.notation``), steps 2 and 3 of its checks:

2. The envelope parses (size-bounded by the caller; duplicate JSON keys or CBOR map keys are
   refused, as are CBOR tags an envelope never uses), the content type
   (``application/vnd.cncf.notary.payload.v1+json``) and signing scheme (``notary.x509``) are
   supported, ``crit`` names ``signingScheme`` and every critical header is present and understood
   (an unknown one, or a verification plugin we cannot run, fails), ``expiry`` is critical when
   present, and the signing time is there.
3. ``alg`` is the one the signing certificate's key dictates (RSA 2048/3072/4096: PS256/384/512;
   EC P-256/384/521: ES256/384/512), and the signature verifies with that key (integrity; JWS
   through joserfc over ``BASE64URL(protected) '.' BASE64URL(payload)``, COSE over its
   Sig_structure ``["Signature1", protected, h'', payload]``).

JWS is the flattened JSON serialization (the general serialization and unknown top-level members are
refused); COSE is a COSE_Sign1_Tagged message (CBOR tag 18; detached payloads and the COSE hash
envelope are not supported). The certificate chain (leaf first) is the unprotected ``x5c`` (JWS) or
``x5chain`` (COSE, label 33), at most :data:`MAX_CHAIN` certificates. :func:`_jws` and :func:`_cose`
return an :class:`_Envelope` whose signature verified, or raise :class:`_Failed` with a one-line reason.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.registry import HeaderParameter

from shared.core.trust.verdict import INVALID

PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME_X509 = "notary.x509"
SCHEME_SIGNING_AUTHORITY = "notary.x509.signingAuthority"
MAX_CHAIN = 10

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


def _refuse_tag(tag: int):
    def refuse(value: Any, immutable: bool) -> Any:
        raise ValueError(f"CBOR tag {tag} is not used by Notary Project envelopes")
    return refuse


# cbor2 turns these tags into Python objects (regular expressions, MIME messages, shared references...);
# an envelope needs none of them, so decoding one is an error rather than work done for an attacker
_CBOR_REFUSED = {tag: _refuse_tag(tag) for tag in (0, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 38, 52, 54, 100,
                                                     256, 258, 260, 261, 1004, 55799)}


class _Failed(Exception):
    """Verification stops here; ``status`` is "invalid" or "mismatch"."""

    def __init__(self, reason: str, status: str = INVALID) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


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


def _first_line(error: Any) -> str:
    return (str(error).splitlines() or [""])[0]

