"""Who signed: the identity and OIDC issuer in a Fulcio certificate, against a ``Keyless`` requirement. Pure.

Identity policy (``Keyless``): the certificate's SAN (URI, e-mail or Sigstore's otherName) equals
``identity`` or fully matches ``identity_regexp``; the OIDC issuer extension (1.3.6.1.4.1.57264.1.8,
else .1.1) equals ``issuer`` or fully matches ``issuer_regexp``. Patterns are RE2 (linear time, no
back-references or look-around) and must match the whole value: anchor cosign's
``--certificate-identity-regexp`` (which matches anywhere) to get the same meaning here.
:class:`_Policy` is sigstore-python's ``VerificationPolicy`` protocol for a ``Keyless`` requirement;
:func:`_check_code_signing` checks key usage digitalSignature and extended key usage codeSigning.
"""
from __future__ import annotations

from typing import Optional

from shared.core.trust.signers import Keyless, _Refused

_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_OTHERNAME = "1.3.6.1.4.1.57264.1.7"


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

