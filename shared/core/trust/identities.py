"""X.509 subjects and the Notary Project's trusted identities (``x509.subject: ...``). Pure code.

``trusted_identities`` in a ``notation`` signature of the trust policy lists ``x509.subject: ...``
distinguished names as in the Notary Project trust policy: comma-separated ``TYPE=value`` with C, ST
and O present; ``\\,`` ``\\;`` ``\\\\`` and a leading or trailing ``\\ `` escaped (or ``\\HH``
hex pairs); types ``C ST L O OU CN STREET POSTALCODE SERIALNUMBER`` or a dotted OID; multi-valued RDNs
(``+``) are not supported. An identity matches a signing certificate's subject when every listed
attribute is present with that value (:meth:`TrustedIdentity.matches`). Identities that could both
match one certificate overlap (:func:`_overlap`) and are refused by the policy checker, as the Notary
Project specification requires. :func:`format_subject` writes a subject in the same syntax (so a
verdict's signer can be pasted into the policy).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from cryptography import x509
from cryptography.x509.oid import NameOID

# X.509 subject attribute types by the short names the Notary Project trust policy (and Go's
# pkix.Name.String, which notation uses) write; any other attribute type is written as a dotted OID
_ATTRIBUTE_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
}
_KNOWN_TYPES = frozenset(_ATTRIBUTE_NAMES.values())
_SHORT_NAMES = {oid.dotted_string: short for oid, short in _ATTRIBUTE_NAMES.items()}
_REQUIRED_TYPES = ("C", "ST", "O")
_DOTTED_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_DN_SPECIAL = ',;\\+"<>=#'

# --- X.509 subjects and trusted identities ---------------------------------------------------

def _attribute_type(oid: x509.ObjectIdentifier) -> str:
    return _ATTRIBUTE_NAMES.get(oid, oid.dotted_string)


def subject_attributes(name: x509.Name) -> dict[str, frozenset[str]]:
    """``{"C": {"US"}, "O": {"acme"}, ...}``: each attribute type's values in a certificate's subject."""
    found: dict[str, set[str]] = {}
    for attribute in name:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        found.setdefault(_attribute_type(attribute.oid), set()).add(value)
    return {k: frozenset(v) for k, v in found.items()}


def _escape_value(value: str) -> str:
    out = "".join("\\" + ch if ch in ",;\\" else ch for ch in value)
    if out.startswith(" "):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def format_subject(name: x509.Name) -> str:
    """A subject in certificate order, ``C=US, ST=WA, O=acme, CN=signer``: the trusted-identity syntax."""
    return ", ".join(f"{_attribute_type(a.oid)}={_escape_value(a.value if isinstance(a.value, str) else a.value.hex())}"
                     for a in name)


@dataclass(frozen=True)
class TrustedIdentity:
    """One ``x509.subject:`` identity: every attribute must be in the signing certificate's subject."""

    text: str
    attributes: tuple[tuple[str, str], ...]  # (type, value), types upper-case, in written order

    def matches(self, subject: Mapping[str, frozenset[str]]) -> bool:
        return all(value in subject.get(kind, ()) for kind, value in self.attributes)

    def canonical(self) -> str:
        return "x509.subject: " + ", ".join(f"{k}={_escape_value(v)}" for k, v in sorted(self.attributes))


def _split_dn(text: str) -> list[str]:
    """Split on unescaped commas; escapes are kept for :func:`_unescape`."""
    parts, current, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i:i + 2]
            i += 2
            continue
        if ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    return parts


def _unescape(text: str) -> str:
    """An RDN value with ``\\X`` escapes and ``\\HH`` hex pairs resolved; unescaped outer spaces dropped."""
    out = bytearray()
    i = len(text) - len(text.lstrip(" "))
    end = len(text)
    while end > i and text[end - 1] == " " and not (end >= 2 and text[end - 2] == "\\"):
        end -= 1
    while i < end:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= end:
                raise ValueError("a value ends with a lone backslash")
            nxt = text[i + 1]
            pair = text[i + 1:i + 3]
            if re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
                out.append(int(pair, 16))
                i += 3
            elif nxt in _DN_SPECIAL or nxt == " ":
                out += nxt.encode()
                i += 2
            else:
                raise ValueError(f"unknown escape \\{nxt}")
            continue
        if ch in ';+"<>':
            kind = "multi-valued RDNs (+)" if ch == "+" else f"an unescaped {ch!r}"
            raise ValueError(f"{kind} is not supported; escape it as \\{ch}")
        out += ch.encode()
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a hex escape is not valid UTF-8") from None


def parse_trusted_identity(text: str) -> TrustedIdentity:
    """Parse ``x509.subject: C=US, ST=WA, O=acme``; raise ``ValueError`` with the reason."""
    prefix, sep, rest = text.partition(":")
    if not sep or prefix.strip() != "x509.subject":
        raise ValueError("a trusted identity is 'x509.subject: C=.., ST=.., O=..' or '*'")
    if not rest.strip():
        raise ValueError("x509.subject: is empty; give at least C, ST and O")
    attributes: list[tuple[str, str]] = []
    seen: set[str] = set()
    for rdn in _split_dn(rest):
        kind, eq, raw = rdn.partition("=")
        kind = kind.strip().upper()
        kind = _SHORT_NAMES.get(kind, kind)  # 2.5.4.3 is CN: compare as the subject is read
        if not eq or not kind:
            raise ValueError(f"{rdn.strip()!r} is not TYPE=value")
        if kind not in _KNOWN_TYPES and not _DOTTED_OID.fullmatch(kind):
            raise ValueError(f"unknown attribute type {kind!r} (use {', '.join(sorted(_KNOWN_TYPES))} "
                             "or a dotted OID)")
        value = _unescape(raw)
        if not value:
            raise ValueError(f"{kind}= has no value")
        if kind in seen:
            raise ValueError(f"{kind} is given twice")
        seen.add(kind)
        attributes.append((kind, value))
    missing = [k for k in _REQUIRED_TYPES if k not in seen]
    if missing:
        raise ValueError(f"an identity must include C, ST and O; missing {', '.join(missing)}")
    return TrustedIdentity(text, tuple(attributes))


def _overlap(a: TrustedIdentity, b: TrustedIdentity) -> bool:
    """Could one certificate match both? Yes unless they disagree on an attribute both give."""
    mine = dict(a.attributes)
    return all(mine.get(kind, value) == value for kind, value in b.attributes)

