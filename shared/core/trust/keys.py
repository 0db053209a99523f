"""Public keys and PEM text in the trust policy: key ids, PEM blocks, the key types accepted. Pure code.

``cosign-key`` signatures name one PEM public key (``BEGIN PUBLIC KEY``): ECDSA P-256/P-384/P-521,
RSA of at least :data:`MIN_RSA_BITS` bits, or Ed25519 (:func:`_check_public_key` says why another is
refused). Its key id (:func:`key_id`) is ``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo.
PEM bodies whose base64 has non-zero padding bits are accepted, as Go's decoder (cosign's and
notation's) and OpenSSL accept them. A ``PRIVATE`` PEM label is recognised (:func:`_is_private`) so
the checker can refuse it without echoing it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

MIN_RSA_BITS = 2048
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]*)-----")


def key_id(public_key: Any) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _pem_blocks(text: str) -> tuple[list[tuple[str, str]], Optional[str]]:
    """([(label, base64 body)], problem): PEM blocks in order; a BEGIN without its END is a problem."""
    blocks = [(m.group(1), m.group(2)) for m in _PEM_BLOCK.finditer(text)]
    if len(_PEM_BEGIN.findall(text)) != len(blocks):
        return blocks, "a PEM block has no matching '-----END ...-----' line"
    return blocks, None


def _pem_der(body: str) -> bytes:
    """The DER inside a PEM block. Non-zero padding bits are tolerated, as Go's decoder (cosign's and
    notation's) and OpenSSL tolerate them; published keys exist that have them."""
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the PEM body is not base64") from None


def _is_private(label: str) -> bool:
    return "PRIVATE" in label


def _check_public_key(public_key: Any) -> Optional[str]:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            return f"RSA key is {public_key.key_size} bits; at least {MIN_RSA_BITS} are required"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
            return f"EC curve {public_key.curve.name} is not supported (P-256, P-384 or P-521)"
        return None
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return None
    return f"{type(public_key).__name__.lstrip('_')} keys are not supported (ECDSA, RSA or Ed25519)"


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()

