"""The trust policy file: which signatures an image must carry before it is imported.

Pure code: no I/O. Standard library, PyYAML (through ``shared.core.yamlfile``), ``cryptography``
(keys and certificates are parsed, so a bad PEM is caught on upload, not at import time) and
``re2`` (google-re2: identity patterns match in linear time), ``shared.core`` and ``shared.errors``.

The file is reviewed and uploaded like the build rule file (``shared.core.rules``), and checked the
same way (on upload, and by ``airlock trust check FILE``). It is YAML (JSON, being YAML, works too)::

    version: 1                          # optional; 1 is the only version
    scopes:
      - name: kubernetes                # unique, [a-z0-9-]{1,63}
        match: registry.k8s.io/**       # a glob, or a list of globs, on registry/repository
        mode: enforce                   # enforce (default) | audit | skip
        require: any                    # any (default): one signature must verify | all
        trusted_root: corp-sigstore     # optional: an operator-supplied Sigstore trusted root
        signatures:
          - kind: keyless               # Sigstore keyless (Fulcio certificate)
            identity: krel-trust@k8s-releng-prod.iam.gserviceaccount.com   # or identity_regex
            issuer: https://accounts.google.com                           # or issuer_regex
          - kind: cosign-key            # cosign with a public key
            key: |
              -----BEGIN PUBLIC KEY-----
              ...
          - kind: notation              # Notary Project (notation) X.509 signatures
            trust_store: |              # one or more PEM certificates (a string, or a list of them)
              -----BEGIN CERTIFICATE-----
              ...
            trusted_identities:         # the signing certificate's subject, or ["*"]
              - "x509.subject: C=US, ST=WA, O=acme-rockets.io"

Scopes and globs
    ``match`` patterns are written ``REGISTRY/REPOSITORY`` as the source is written in images.txt,
    fully qualified: ``docker.io/library/nginx`` (not ``nginx``). They are lowercase; ``/``
    separates segments; ``*`` matches any run of characters inside one segment, ``?`` one
    character inside one segment, and a whole segment ``**`` matches zero or more segments:
    ``registry.k8s.io/**`` is every repository on that registry, ``quay.io/jetstack/*`` the
    repositories directly under ``jetstack/``, ``*.gcr.io/**`` every repository on any gcr.io
    registry, ``**`` everything (a catch-all scope). Character classes (``[...]``) are not
    supported. Registry hosts are compared lowercased with Docker Hub's aliases folded into
    ``docker.io`` (whose one-word repositories are ``library/NAME``).

Which scope applies
    The most specific matching pattern wins, whatever the order of the scopes: an exact pattern
    (no wildcard) beats any glob; then the pattern with more literal characters; then the one with
    fewer wildcard characters; then the scope that comes first in the file. So a broad scope and
    its exceptions may be written in any order. A pattern may appear in one scope only. An image
    that no scope matches has no signature requirement (add a ``**`` scope to require one for
    everything).

Modes
    ``enforce``: an image whose signatures do not satisfy the scope is not imported.
    ``audit``: it is imported and the verdict is recorded. ``skip``: no verification (the verdict
    is "skipped"); a skip scope has no ``signatures``, ``require`` or ``trusted_root``. Use it to
    carve an unsigned repository out of a broader scope.

Signatures
    ``require: any`` (the default): the scope is satisfied when one listed signature verifies;
    ``all``: every listed signature must verify (e.g. the vendor's keyless signature and your own
    notation signature).

    ``cosign-key``: ``key`` is one PEM public key (``BEGIN PUBLIC KEY``): ECDSA P-256/P-384/P-521,
    RSA of at least 2048 bits, or Ed25519. Its key id is ``sha256:`` + hex SHA-256 of the DER
    SubjectPublicKeyInfo. A private key is refused (and not echoed).

    ``keyless``: exactly one of ``identity`` (the certificate's identity, exact) or
    ``identity_regex``, and exactly one of ``issuer`` (the OIDC issuer URL, exact) or
    ``issuer_regex``. Patterns are RE2 syntax (no look-around or back-references), at most 1,024
    characters, and must match the whole value (they are anchored, unlike cosign's
    ``--certificate-identity-regexp``). A pattern that matches any identity is flagged.

    ``notation``: ``trust_store`` holds the X.509 certificates (PEM) a signature's chain must lead
    to; ``trusted_identities`` lists ``x509.subject: ...`` distinguished names as in the Notary
    Project trust policy (comma-separated ``TYPE=value`` with C, ST and O present; ``\\,`` ``\\;``
    ``\\\\`` and a leading or trailing ``\\ `` escaped), matched against the signing certificate's
    subject (every listed attribute must be present with that value), or the single value ``*``
    (any certificate the trust store issued). Identities that could both match one certificate
    overlap and are refused, as the Notary Project specification requires.

    ``trusted_root`` names a Sigstore trusted-root file the operator supplies (used by ``keyless``
    and ``cosign-key`` verification); without it the public-good root shipped with sigstore-python
    is used.

Errors and limits
    Validation is all-or-nothing and reports every problem as a ``Problem`` with the 1-based
    ``line`` and a ``field`` path such as ``scopes[1].signatures[0].identity_regex`` (at most
    :data:`MAX_ERRORS`, then a count). Unknown keys, wrong types, bad globs, bad PEM, bad patterns,
    empty lists, duplicate scope names, duplicate keys and YAML errors are all problems, never
    exceptions. Limits: :data:`MAX_BYTES` per file, :data:`MAX_SCOPES` scopes,
    :data:`MAX_PATTERNS` patterns and :data:`MAX_SIGNATURES` signatures per scope,
    :data:`MAX_CERTIFICATES` certificates per trust store, :data:`MAX_IDENTITIES` identities.
    Warnings (a pattern that matches any identity, a trust-store certificate that is not
    self-signed or, when ``now`` is given, not valid now) do not make the file invalid.

API
    :func:`parse_trust_policy` returns a :class:`TrustPolicyResult` (``ok``, ``policy``,
    ``errors``, ``warnings``); :meth:`TrustPolicy.scope_for` picks the scope for a source
    repository; :meth:`Scope.fingerprint` is a stable hash of what a verdict depends on (the
    signatures, ``require`` and ``trusted_root``; not the name, patterns or mode), for a verdict
    cache keyed by image digest and fingerprint.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import re2
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from shared.core.builds import type_name
from shared.core.reference import DOCKER_HUB, ReferenceSyntaxError, normalise_registry, validate_registry
from shared.core.safeyaml import Limits
from shared.core.yamlfile import Problems, Segment, Yaml12Loader, decode, load
from shared.errors import Problem, TrustPolicyError

__all__ = [
    "KIND_COSIGN_KEY",
    "KIND_KEYLESS",
    "KIND_NOTATION",
    "MODE_AUDIT",
    "MODE_ENFORCE",
    "MODE_SKIP",
    "CosignKeyRequirement",
    "KeylessRequirement",
    "NotationRequirement",
    "Pattern",
    "Scope",
    "TrustPolicy",
    "TrustPolicyResult",
    "TrustedIdentity",
    "format_subject",
    "key_id",
    "parse_trust_policy",
    "parse_trusted_identity",
    "subject_attributes",
]

KIND_COSIGN_KEY = "cosign-key"
KIND_KEYLESS = "keyless"
KIND_NOTATION = "notation"
KINDS = (KIND_COSIGN_KEY, KIND_KEYLESS, KIND_NOTATION)
MODE_ENFORCE = "enforce"
MODE_AUDIT = "audit"
MODE_SKIP = "skip"
MODES = (MODE_ENFORCE, MODE_AUDIT, MODE_SKIP)
REQUIRE_ANY = "any"
REQUIRE_ALL = "all"

MAX_BYTES = 1_048_576
MAX_SCOPES = 1000
MAX_PATTERNS = 100
MAX_SIGNATURES = 20
MAX_CERTIFICATES = 50
MAX_IDENTITIES = 100
MAX_REGEX = 1024
MAX_ERRORS = 100
MIN_RSA_BITS = 2048
FINGERPRINT_VERSION = 1
LIMITS = Limits(max_depth=16, max_aliases=64, max_nodes=50_000)  # a trust policy is small and shallow

_TOP_KEYS = ("version", "scopes")
_SCOPE_KEYS = ("name", "match", "mode", "require", "trusted_root", "signatures")
_KIND_KEYS = {
    KIND_COSIGN_KEY: ("kind", "key"),
    KIND_KEYLESS: ("kind", "identity", "identity_regex", "issuer", "issuer_regex"),
    KIND_NOTATION: ("kind", "trust_store", "trusted_identities"),
}
_NAME = re.compile(r"[a-z0-9-]{1,63}")
_ROOT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62})")
_REGISTRY_GLOB = re.compile(r"[a-z0-9.:*?-]+")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_COMPONENT_GLOB = re.compile(r"[a-z0-9._*?-]+")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]*)-----")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported as a problem, not logged to stderr by RE2
_RE2_OPTIONS.max_mem = 8 << 20
# identities that an over-broad pattern would let in: a stranger's e-mail and a stranger's workflow
_PROBE_IDENTITIES = ("attacker@example.com",
                     "https://github.com/attacker/repo/.github/workflows/release.yml@refs/heads/main")
_PROBE_ISSUERS = ("https://attacker.example.com", "https://token.actions.githubusercontent.com")

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


# --- keys and certificates -------------------------------------------------------------------

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


# --- scope patterns --------------------------------------------------------------------------

@dataclass(frozen=True)
class Pattern:
    """One ``match`` glob, compiled; ``specificity`` orders competing matches (higher wins)."""

    text: str
    line: int
    regex: Any = field(compare=False, repr=False)

    @property
    def exact(self) -> bool:
        return not any(ch in self.text for ch in "*?")

    @property
    def specificity(self) -> tuple[bool, int, int]:
        wildcards = sum(self.text.count(ch) for ch in "*?")
        return self.exact, len(self.text) - wildcards, -wildcards

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _glob_regex(segments: list[str]) -> str:
    def one(segment: str) -> str:
        return "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment)

    if segments == ["**"]:
        return ".+"
    out = ""
    for i, segment in enumerate(segments):
        if segment == "**":
            if i == 0:
                out += "(?:[^/]+/)*"
            elif i == len(segments) - 1:
                out += "(?:/[^/]+)*"
            else:
                out += "/(?:[^/]+/)*"
            continue
        if i > 0 and segments[i - 1] != "**":
            out += "/"
        out += one(segment)
    return out


def _check_pattern(value: Any) -> tuple[Optional[str], Optional[str]]:
    """(regex, None) for a valid pattern, or (None, the problem)."""
    if not isinstance(value, str):
        return None, f"a match pattern must be a string, not {type_name(value)}"
    if not value:
        return None, "match pattern is empty"
    if value != value.strip() or any(ch.isspace() for ch in value):
        return None, f"match pattern {value!r} contains whitespace"
    if value != value.lower():
        return None, f"match pattern {value!r} must be lowercase, as registry hosts and repositories are"
    if "@" in value:
        return None, f"match pattern {value!r} must not include a digest: a scope matches repositories"
    if "[" in value or "]" in value:
        return None, f"match pattern {value!r}: character classes ([...]) are not supported; use * or ?"
    segments = value.split("/")
    if segments == ["**"]:
        return _glob_regex(segments), None
    if "" in segments:
        return None, f"match pattern {value!r} has an empty segment (a leading, trailing or doubled '/')"
    if ":" in "/".join(segments[1:]):
        return None, f"match pattern {value!r} must not include a tag: a scope matches repositories"
    for i, segment in enumerate(segments):
        if "**" in segment and segment != "**":
            return None, f"match pattern {value!r}: '**' must be a whole segment (a/**/b), not part of one"
        if segment == "**" and i > 0 and segments[i - 1] == "**":
            return None, f"match pattern {value!r}: write '**' once, not '**/**'"
    registry, rest = segments[0], segments[1:]
    if registry != "**":
        wild = any(ch in registry for ch in "*?")
        if not wild and not ("." in registry or ":" in registry or registry == "localhost"):
            return None, (f"match pattern {value!r} must start with the registry host, fully qualified "
                          f"(for Docker Hub: docker.io/library/{value})")
        if not _REGISTRY_GLOB.fullmatch(registry):
            return None, f"registry {registry!r} in match pattern has characters a host cannot contain"
        if not wild:
            try:
                validate_registry(registry)
            except ReferenceSyntaxError as e:
                return None, f"match pattern {value!r}: {e.reason}"
            if normalise_registry(registry) != registry:
                return None, f"match pattern {value!r}: write Docker Hub as docker.io, not {registry}"
    if not rest:
        return None, (f"match pattern {value!r} has no repository part; "
                      f"{value}/** matches every repository on that registry")
    if registry == DOCKER_HUB and len(rest) == 1 and not any(ch in rest[0] for ch in "*?"):
        return None, (f"match pattern {value!r}: Docker Hub's official images are under library/ "
                      f"(docker.io/library/{rest[0]})")
    for segment in rest:
        if segment == "**":
            continue
        if any(ch in segment for ch in "*?"):
            if not _COMPONENT_GLOB.fullmatch(segment):
                return None, (f"match pattern {value!r}: segment {segment!r} has characters a repository "
                              "cannot contain (a-z 0-9 . _ - and the wildcards * ?)")
        elif not _COMPONENT.fullmatch(segment):
            return None, (f"match pattern {value!r}: invalid repository segment {segment!r} (lowercase letters "
                          "and digits, separated by '.', '_', '__' or '-')")
    return _glob_regex(segments), None


# --- the result types --------------------------------------------------------------------------

@dataclass(frozen=True)
class CosignKeyRequirement:
    """A cosign signature made with this public key."""

    line: int
    key_id: str
    pem: str  # the key as a canonical PEM SubjectPublicKeyInfo
    public_key: Any = field(compare=False, repr=False)
    kind: str = KIND_COSIGN_KEY

    def canonical(self) -> dict:
        return {"kind": self.kind, "key_id": self.key_id}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "line": self.line, "key_id": self.key_id}


@dataclass(frozen=True)
class KeylessRequirement:
    """A Sigstore keyless signature whose certificate names this identity and OIDC issuer."""

    line: int
    identity: Optional[str] = None
    identity_regex: Optional[str] = None
    issuer: Optional[str] = None
    issuer_regex: Optional[str] = None
    compiled: tuple[Any, Any] = field(default=(None, None), compare=False, repr=False)
    kind: str = KIND_KEYLESS

    def matches_identity(self, identity: str) -> bool:
        if self.identity is not None:
            return identity == self.identity
        return self.compiled[0].fullmatch(identity) is not None

    def matches_issuer(self, issuer: str) -> bool:
        if self.issuer is not None:
            return issuer == self.issuer
        return self.compiled[1].fullmatch(issuer) is not None

    def canonical(self) -> dict:
        found = {"kind": self.kind}
        for key in ("identity", "identity_regex", "issuer", "issuer_regex"):
            if getattr(self, key) is not None:
                found[key] = getattr(self, key)
        return found

    def to_dict(self) -> dict:
        return {**self.canonical(), "line": self.line}


@dataclass(frozen=True)
class NotationRequirement:
    """A Notary Project signature whose chain leads to ``certificates`` and whose signer is trusted."""

    line: int
    certificates: tuple[x509.Certificate, ...]
    identities: tuple[TrustedIdentity, ...]  # empty when any_identity
    any_identity: bool = False
    kind: str = KIND_NOTATION

    def trusts_subject(self, subject: x509.Name) -> bool:
        if self.any_identity:
            return True
        attributes = subject_attributes(subject)
        return any(identity.matches(attributes) for identity in self.identities)

    def canonical(self) -> dict:
        return {"kind": self.kind,
                "trust_store": sorted(_fingerprint(c) for c in self.certificates),
                "trusted_identities": ["*"] if self.any_identity else sorted(i.canonical() for i in self.identities)}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "line": self.line,
                "trust_store": [{"subject": format_subject(c.subject), "sha256": _fingerprint(c),
                                 "not_after": c.not_valid_after_utc.isoformat()} for c in self.certificates],
                "trusted_identities": ["*"] if self.any_identity else [i.text for i in self.identities]}


Requirement = Union[CosignKeyRequirement, KeylessRequirement, NotationRequirement]


@dataclass(frozen=True)
class Scope:
    """One validated scope: where it applies and which signatures it requires."""

    name: str
    line: int
    patterns: tuple[Pattern, ...]
    mode: str = MODE_ENFORCE
    require: str = REQUIRE_ANY
    trusted_root: Optional[str] = None
    signatures: tuple[Requirement, ...] = ()

    def match(self, path: str) -> Optional[Pattern]:
        """The most specific of this scope's patterns matching ``registry/repository``, or None."""
        found = [p for p in self.patterns if p.matches(path)]
        return max(found, key=lambda p: p.specificity) if found else None

    def fingerprint(self) -> str:
        """``sha256:<hex>`` of what a verdict depends on: signatures (in any order), require, trusted_root."""
        canonical = {"v": FINGERPRINT_VERSION, "skip": self.mode == MODE_SKIP, "require": self.require,
                     "trusted_root": self.trusted_root,
                     "signatures": sorted((r.canonical() for r in self.signatures),
                                          key=lambda d: json.dumps(d, sort_keys=True))}
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict:
        return {"name": self.name, "line": self.line, "match": [p.text for p in self.patterns], "mode": self.mode,
                "require": self.require, "trusted_root": self.trusted_root,
                "signatures": [r.to_dict() for r in self.signatures], "fingerprint": self.fingerprint()}


@dataclass(frozen=True)
class TrustPolicy:
    """A validated trust policy file, scopes in file order."""

    name: str
    scopes: tuple[Scope, ...] = ()
    content_hash: str = ""
    # (scope index, pattern) by the pattern's literal registry host and first repository segment (None when
    # that segment has a wildcard), and those whose host has one: a lookup tries only the patterns that can
    # match its registry and first segment, not every pattern of the policy
    _index: Mapping[tuple[str, Optional[str]], tuple[tuple[int, Pattern], ...]] = field(
        init=False, compare=False, repr=False)
    _any_registry: tuple[tuple[int, Pattern], ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, Optional[str]], list[tuple[int, Pattern]]] = {}
        any_registry: list[tuple[int, Pattern]] = []
        for position, scope in enumerate(self.scopes):
            for pattern in scope.patterns:
                host, _, rest = pattern.text.partition("/")
                first = rest.split("/", 1)[0]
                if any(ch in host for ch in "*?"):
                    any_registry.append((position, pattern))
                else:
                    key = (host, None if any(ch in first for ch in "*?") else first)
                    index.setdefault(key, []).append((position, pattern))
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "_any_registry", tuple(any_registry))

    def __iter__(self) -> Iterator[Scope]:
        return iter(self.scopes)

    def __len__(self) -> int:
        return len(self.scopes)

    def get(self, name: str) -> Optional[Scope]:
        return next((s for s in self.scopes if s.name == name), None)

    def scope_for(self, registry: str, repository: str) -> Optional[Scope]:
        """The scope for a source ``registry`` and ``repository`` (most specific pattern), or None."""
        registry = normalise_registry(registry)
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        path = f"{registry}/{repository}"
        best: Optional[tuple[tuple[bool, int, int], int]] = None
        first = repository.split("/", 1)[0]
        candidates = (*self._index.get((registry, first), ()), *self._index.get((registry, None), ()),
                      *self._any_registry)
        for index, pattern in candidates:
            if not pattern.matches(path):
                continue
            rank = (pattern.specificity, -index)
            if best is None or rank > best:
                best = rank
        return self.scopes[-best[1]] if best else None

    def to_dict(self) -> dict:
        return {"name": self.name, "content_hash": self.content_hash, "scopes": [s.to_dict() for s in self.scopes]}


@dataclass
class TrustPolicyResult:
    """The outcome of :func:`parse_trust_policy`. ``policy`` is None unless ``ok``."""

    name: str
    policy: Optional[TrustPolicy] = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise ``TrustPolicyError`` carrying every problem, if there are any."""
        if self.errors:
            n = len(self.errors)
            raise TrustPolicyError(f"the trust policy {self.name} has {n} problem{'s' if n != 1 else ''}",
                                   list(self.errors))

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "errors": [p.to_dict() for p in self.errors],
                "warnings": [p.to_dict() for p in self.warnings],
                "policy": self.policy.to_dict() if self.policy else None}


# --- validation --------------------------------------------------------------------------------

class _Loader(Yaml12Loader):
    limits = LIMITS


class _Checker:
    def __init__(self, root, now: Optional[datetime]) -> None:
        self.problems = Problems(root)
        self.warnings = Problems(root)
        self.now = now
        self.names: dict[int, str] = {}  # scope index -> its (valid) name

    def error(self, at: Sequence[Segment], message: str) -> None:
        self.problems.add(at, message)

    def warn(self, at: Sequence[Segment], message: str) -> None:
        self.warnings.add(at, message)

    def line(self, at: Sequence[Segment]) -> int:
        return self.problems.line_of(at) or 0

    def scope_label(self, index: int) -> str:
        name = self.names.get(index)
        where = f"line {self.line(('scopes', index))}"
        return f"{name!r} ({where})" if name else f"{index} ({where})"

    # -- the file --

    def policy(self, data: Any, name: str, content_hash: str) -> Optional[TrustPolicy]:
        if not isinstance(data, Mapping):
            self.error((), f"the trust policy must be a mapping with a 'scopes' list, not {type_name(data)}")
            return None
        for key in data:
            if key not in _TOP_KEYS:
                self.error((key,), f"unknown top-level key {str(key)!r}; allowed: {', '.join(_TOP_KEYS)}")
        if "version" in data and (data["version"] != 1 or isinstance(data["version"], bool)):
            self.error(("version",), f"unsupported version {data['version']!r}; the only version is 1")
        raw = data.get("scopes")
        if "scopes" not in data:
            self.error((), "the trust policy has no 'scopes' list (write 'scopes: []' for none)")
            return None
        if not isinstance(raw, list):
            self.error(("scopes",), f"scopes must be a list, not {type_name(raw)} (write 'scopes: []' for none)")
            return None
        if len(raw) > MAX_SCOPES:
            self.error(("scopes",), f"{len(raw)} scopes; the limit is {MAX_SCOPES}")
            raw = raw[:MAX_SCOPES]
        scopes: list[Scope] = []
        names: dict[str, int] = {}
        patterns: dict[str, int] = {}
        for i, item in enumerate(raw):
            scope = self.scope(i, item, names, patterns)
            if scope is not None:
                scopes.append(scope)
        if self.problems.items:
            return None
        return TrustPolicy(name, tuple(scopes), content_hash)

    def scope(self, i: int, item: Any, names: dict[str, int], patterns: dict[str, int]) -> Optional[Scope]:
        at: tuple[Segment, ...] = ("scopes", i)
        if not isinstance(item, Mapping):
            self.error(at, f"a scope must be a mapping with name, match and signatures, not {type_name(item)}")
            return None
        before = len(self.problems.items)
        for key in item:
            if key not in _SCOPE_KEYS:
                self.error(at + (key,), f"unknown key {str(key)!r} in a scope; allowed: {', '.join(_SCOPE_KEYS)}")

        name = item.get("name")
        if "name" not in item:
            self.error(at, "the scope has no name")
        elif not isinstance(name, str):
            self.error(at + ("name",), f"name must be a string, not {type_name(name)}")
        elif not _NAME.fullmatch(name):
            self.error(at + ("name",), f"invalid scope name {name!r}: 1-63 lowercase letters, digits or '-'")
        elif name in names:
            self.error(at + ("name",), f"duplicate scope name {name!r} (first used on line "
                                       f"{self.line(('scopes', names[name]))})")
        else:
            names[name] = i
            self.names[i] = name

        compiled = self.patterns(at, item, i, patterns)

        mode = item.get("mode", MODE_ENFORCE)
        if mode not in MODES or not isinstance(mode, str):
            shown = repr(mode) if isinstance(mode, str) else type_name(mode)
            self.error(at + ("mode",), f"invalid mode {shown}; one of {', '.join(MODES)}")
        require = item.get("require", REQUIRE_ANY)
        if require not in (REQUIRE_ANY, REQUIRE_ALL) or not isinstance(require, str):
            shown = repr(require) if isinstance(require, str) else type_name(require)
            self.error(at + ("require",), f"invalid require {shown}; any (one signature must verify) or all")
        trusted_root = item.get("trusted_root")
        if "trusted_root" in item and (not isinstance(trusted_root, str) or not _ROOT_NAME.fullmatch(trusted_root)):
            shown = repr(trusted_root) if isinstance(trusted_root, str) else type_name(trusted_root)
            self.error(at + ("trusted_root",), f"invalid trusted_root {shown}: the name of a trusted-root file "
                                               "(1-63 of a-z 0-9 . _ -, starting with a letter or digit)")

        signatures: list[Requirement] = []
        if mode == MODE_SKIP:
            for key in ("signatures", "require", "trusted_root"):
                if key in item:
                    self.error(at + (key,), f"a scope with mode skip verifies nothing: remove {key}")
        elif "signatures" not in item:
            self.error(at, "the scope has no signatures (which signatures an image must carry); "
                           "use mode: skip to import without verification")
        else:
            signatures = self.signatures(at, item["signatures"])
            if trusted_root is not None and signatures and all(r.kind == KIND_NOTATION for r in signatures):
                self.warn(at + ("trusted_root",), "trusted_root is only used by keyless and cosign-key signatures; "
                                                  "this scope has notation signatures only")
            if require == REQUIRE_ALL and len(signatures) == 1:
                self.warn(at + ("require",), "require: all with one signature is the same as any")

        if len(self.problems.items) != before:
            return None
        return Scope(name, self.line(at), tuple(compiled), mode, require, trusted_root, tuple(signatures))

    def patterns(self, at: tuple[Segment, ...], item: Mapping, i: int, seen: dict[str, int]) -> list[Pattern]:
        if "match" not in item:
            self.error(at, "the scope has no match (which source repositories it applies to)")
            return []
        raw = item["match"]
        listed = raw if isinstance(raw, list) else [raw]
        where = (lambda j: at + ("match", j)) if isinstance(raw, list) else (lambda j: at + ("match",))
        if isinstance(raw, list) and not raw:
            self.error(at + ("match",), "match is an empty list; give at least one pattern")
        if len(listed) > MAX_PATTERNS:
            self.error(at + ("match",), f"{len(listed)} patterns; the limit is {MAX_PATTERNS}")
            listed = listed[:MAX_PATTERNS]
        out: list[Pattern] = []
        for j, value in enumerate(listed):
            regex, problem = _check_pattern(value)
            if problem:
                self.error(where(j), problem)
                continue
            if value in seen:
                other = seen[value]
                self.error(where(j), f"pattern {value!r} is listed twice" if other == i else
                           f"pattern {value!r} is also in scope {self.scope_label(other)}; a pattern may be in "
                           "one scope only (which would apply?)")
                continue
            seen[value] = i
            out.append(Pattern(value, self.line(where(j)), re2.compile(regex, _RE2_OPTIONS)))
        return out

    # -- signatures --

    def signatures(self, at: tuple[Segment, ...], raw: Any) -> list[Requirement]:
        at = at + ("signatures",)
        if not isinstance(raw, list):
            self.error(at, f"signatures must be a list, not {type_name(raw)}")
            return []
        if not raw:
            self.error(at, "signatures is empty; list at least one (or use mode: skip)")
            return []
        if len(raw) > MAX_SIGNATURES:
            self.error(at, f"{len(raw)} signatures; the limit is {MAX_SIGNATURES}")
            raw = raw[:MAX_SIGNATURES]
        out: list[Requirement] = []
        seen: dict[str, int] = {}
        for j, item in enumerate(raw):
            requirement = self.requirement(at + (j,), item)
            if requirement is None:
                continue
            key = json.dumps(requirement.canonical(), sort_keys=True)
            if key in seen:
                self.error(at + (j,), f"the same signature is listed twice (also at index {seen[key]})")
                continue
            seen[key] = j
            out.append(requirement)
        return out

    def requirement(self, at: tuple[Segment, ...], item: Any) -> Optional[Requirement]:
        if not isinstance(item, Mapping):
            self.error(at, f"a signature must be a mapping with a kind ({', '.join(KINDS)}), not {type_name(item)}")
            return None
        kind = item.get("kind")
        if "kind" not in item:
            self.error(at, f"the signature has no kind ({', '.join(KINDS)})")
            return None
        if kind not in KINDS or not isinstance(kind, str):
            shown = repr(kind) if isinstance(kind, str) else type_name(kind)
            self.error(at + ("kind",), f"unknown signature kind {shown}; one of {', '.join(KINDS)}")
            return None
        before = len(self.problems.items)
        allowed = _KIND_KEYS[kind]
        for key in item:
            if key not in allowed:
                self.error(at + (key,), f"unknown key {str(key)!r} for kind {kind}; allowed: {', '.join(allowed)}")
        check = {KIND_COSIGN_KEY: self.cosign_key, KIND_KEYLESS: self.keyless, KIND_NOTATION: self.notation}[kind]
        requirement = check(at, item)
        return requirement if len(self.problems.items) == before else None

    def cosign_key(self, at: tuple[Segment, ...], item: Mapping) -> Optional[CosignKeyRequirement]:
        if "key" not in item:
            self.error(at, "a cosign-key signature needs key (a PEM public key)")
            return None
        text = item["key"]
        if not isinstance(text, str):
            self.error(at + ("key",), f"key must be a PEM string, not {type_name(text)}")
            return None
        blocks, broken = _pem_blocks(text)
        if any(_is_private(label) for label, _ in blocks) or "PRIVATE KEY" in text:
            self.error(at + ("key",), "key is a private key; give the public key (cosign public-key) and keep "
                                      "the private key out of this file")
            return None
        if broken or len(blocks) != 1:
            self.error(at + ("key",), broken or (f"key must be one PEM public key, found {len(blocks)} PEM blocks"
                                                 if blocks else "key is not PEM (-----BEGIN PUBLIC KEY-----)"))
            return None
        label, block = blocks[0]
        if label not in ("PUBLIC KEY", "RSA PUBLIC KEY"):
            self.error(at + ("key",), f"key is a {label!r} PEM block; expected a PUBLIC KEY")
            return None
        try:
            public_key = serialization.load_der_public_key(_pem_der(block))
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            self.error(at + ("key",), f"key is not a valid public key: {_first_line(e)}")
            return None
        problem = _check_public_key(public_key)
        if problem:
            self.error(at + ("key",), problem)
            return None
        pem = public_key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return CosignKeyRequirement(self.line(at), key_id(public_key), pem, public_key)

    def keyless(self, at: tuple[Segment, ...], item: Mapping) -> Optional[KeylessRequirement]:
        values: dict[str, Optional[str]] = {}
        compiled: list[Any] = []
        for exact, regex, what in (("identity", "identity_regex", "certificate identity"),
                                   ("issuer", "issuer_regex", "OIDC issuer")):
            given = [k for k in (exact, regex) if k in item]
            values[exact] = values[regex] = None
            if len(given) != 1:
                self.error(at + ((given[-1],) if given else ()),
                           f"give exactly one of {exact} or {regex} (the {what})" if not given
                           else f"give {exact} or {regex}, not both")
                compiled.append(None)
                continue
            key = given[0]
            value = item[key]
            if not isinstance(value, str):
                self.error(at + (key,), f"{key} must be a string, not {type_name(value)}")
                compiled.append(None)
                continue
            if not value.strip() or value != value.strip():
                self.error(at + (key,), f"{key} is empty" if not value.strip()
                           else f"{key} has leading or trailing whitespace")
                compiled.append(None)
                continue
            if key == exact:
                if exact == "issuer" and not value.startswith(("https://", "http://")):
                    self.error(at + (key,), f"issuer {value!r} is not a URL; an OIDC issuer is e.g. "
                                            "https://accounts.google.com")
                values[key] = value
                compiled.append(None)
                continue
            pattern = self.regex(at + (key,), key, value)
            compiled.append(pattern)
            if pattern is not None:
                values[key] = value
                probes = _PROBE_IDENTITIES if exact == "identity" else _PROBE_ISSUERS
                if all(pattern.fullmatch(p) for p in probes):
                    self.warn(at + (key,), f"{key} {value!r} matches any {what}: anyone who can get a Sigstore "
                                           "certificate could sign")
        return KeylessRequirement(self.line(at), values["identity"], values["identity_regex"], values["issuer"],
                                  values["issuer_regex"], (compiled[0], compiled[1]))

    def regex(self, at: tuple[Segment, ...], key: str, value: str) -> Any:
        if len(value) > MAX_REGEX:
            self.error(at, f"{key} is {len(value)} characters; the limit is {MAX_REGEX}")
            return None
        try:
            return re2.compile(value, _RE2_OPTIONS)
        except re2.error as e:
            reason = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
            self.error(at, f"{key} is not a valid RE2 pattern: {reason}")
            return None

    def notation(self, at: tuple[Segment, ...], item: Mapping) -> Optional[NotationRequirement]:
        certificates = self.trust_store(at, item)
        identities, any_identity = self.identities(at, item)
        if certificates is None or identities is None:
            return None
        return NotationRequirement(self.line(at), tuple(certificates), tuple(identities), any_identity)

    def trust_store(self, at: tuple[Segment, ...], item: Mapping) -> Optional[list[x509.Certificate]]:
        if "trust_store" not in item:
            self.error(at, "a notation signature needs trust_store (PEM certificates the chain must lead to)")
            return None
        raw = item["trust_store"]
        texts = raw if isinstance(raw, list) else [raw]
        where = (lambda j: at + ("trust_store", j)) if isinstance(raw, list) else (lambda j: at + ("trust_store",))
        if isinstance(raw, list) and not raw:
            self.error(at + ("trust_store",), "trust_store is empty; give at least one PEM certificate")
            return None
        found: list[x509.Certificate] = []
        seen: set[str] = set()
        ok = True
        for j, text in enumerate(texts):
            if not isinstance(text, str):
                self.error(where(j), f"trust_store must be PEM text (or a list of it), not {type_name(text)}")
                ok = False
                continue
            blocks, broken = _pem_blocks(text)
            if broken:
                self.error(where(j), broken)
                ok = False
                continue
            if not blocks:
                self.error(where(j), "no PEM certificate (-----BEGIN CERTIFICATE-----) found")
                ok = False
                continue
            for n, (label, block) in enumerate(blocks, 1):
                which = f"certificate {n} of {len(blocks)}" if len(blocks) > 1 else "the certificate"
                if _is_private(label):
                    self.error(where(j), f"{which} is a private key; remove it from this file")
                    ok = False
                    continue
                if label != "CERTIFICATE":
                    self.error(where(j), f"{which} is a {label!r} PEM block; a trust store holds CERTIFICATE blocks")
                    ok = False
                    continue
                try:
                    certificate = x509.load_der_x509_certificate(_pem_der(block))
                    public_key = certificate.public_key()
                    certificate.extensions  # read lazily by cryptography: a damaged one fails here
                except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension,
                        x509.InvalidVersion) as e:
                    self.error(where(j), f"{which} is not a valid X.509 certificate: {_first_line(e)}")
                    ok = False
                    continue
                problem = _check_public_key(public_key)
                if problem or isinstance(public_key, ed25519.Ed25519PublicKey):
                    self.error(where(j), f"{which} ({format_subject(certificate.subject)}): "
                                         f"{problem or 'Ed25519 is not a Notary Project algorithm'}")
                    ok = False
                    continue
                fingerprint = _fingerprint(certificate)
                if fingerprint in seen:
                    self.error(where(j), f"{which} ({format_subject(certificate.subject)}) is listed twice")
                    ok = False
                    continue
                seen.add(fingerprint)
                found.append(certificate)
                self.certificate_warnings(where(j), which, certificate)
        if len(found) > MAX_CERTIFICATES:
            self.error(at + ("trust_store",), f"{len(found)} certificates; the limit is {MAX_CERTIFICATES}")
            return None
        return found if ok else None

    def certificate_warnings(self, at: tuple[Segment, ...], which: str, certificate: x509.Certificate) -> None:
        subject = format_subject(certificate.subject)
        if certificate.issuer != certificate.subject:
            self.warn(at, f"{which} ({subject}) is not self-signed: pinning an intermediate or signing certificate "
                          "breaks verification when it is rotated; prefer the root")
        if self.now is not None:
            if certificate.not_valid_after_utc < self.now:
                self.warn(at, f"{which} ({subject}) expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
            elif certificate.not_valid_before_utc > self.now:
                self.warn(at, f"{which} ({subject}) is not valid before "
                              f"{certificate.not_valid_before_utc:%Y-%m-%d}")

    def identities(self, at: tuple[Segment, ...], item: Mapping) -> tuple[Optional[list[TrustedIdentity]], bool]:
        if "trusted_identities" not in item:
            self.error(at, "a notation signature needs trusted_identities ('x509.subject: C=.., ST=.., O=..' "
                           "items, or [\"*\"])")
            return None, False
        raw = item["trusted_identities"]
        at = at + ("trusted_identities",)
        if not isinstance(raw, list):
            self.error(at, f"trusted_identities must be a list, not {type_name(raw)}")
            return None, False
        if not raw:
            self.error(at, "trusted_identities is empty; list identities, or [\"*\"] for any the trust store issued")
            return None, False
        if len(raw) > MAX_IDENTITIES:
            self.error(at, f"{len(raw)} trusted identities; the limit is {MAX_IDENTITIES}")
            return None, False
        if "*" in raw:
            if len(raw) != 1:
                self.error(at + (raw.index("*"),), "'*' (any identity) must be the only trusted identity")
                return None, False
            return [], True
        out: list[TrustedIdentity] = []
        ok = True
        for j, value in enumerate(raw):
            if not isinstance(value, str):
                self.error(at + (j,), f"a trusted identity must be a string, not {type_name(value)}")
                ok = False
                continue
            try:
                identity = parse_trusted_identity(value)
            except ValueError as e:
                self.error(at + (j,), f"invalid trusted identity {value!r}: {e}")
                ok = False
                continue
            for k, other in enumerate(out):
                if _overlap(identity, other):
                    self.error(at + (j,), f"trusted identity {value!r} overlaps {other.text!r} (index {k}): one "
                                          "certificate could match both")
                    ok = False
                    break
            else:
                out.append(identity)
        return (out if ok else None), False


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _limited(problems: list[Problem]) -> list[Problem]:
    ordered = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
    if len(ordered) <= MAX_ERRORS:
        return ordered
    hidden = len(ordered) - MAX_ERRORS
    return ordered[:MAX_ERRORS] + [Problem(f"{hidden} more problem{'s' if hidden != 1 else ''} not listed")]


def parse_trust_policy(data: Union[bytes, str], name: str = "trust policy", *,
                       now: Optional[datetime] = None, max_bytes: int = MAX_BYTES) -> TrustPolicyResult:
    """Parse and validate a whole trust policy file; never raises for bad content.

    ``bytes`` are decoded strictly as UTF-8 (a BOM is allowed). ``name`` (the file's name) labels
    the policy and messages. ``now`` (timezone-aware), when given, adds warnings for trust-store
    certificates that are expired or not yet valid. Raises ``TypeError`` for input that is neither
    ``str`` nor ``bytes``.
    """
    if not isinstance(data, (bytes, str)):
        raise TypeError(f"trust policy must be str or bytes, not {type(data).__name__}")
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    result = TrustPolicyResult(name)
    if len(raw) > max_bytes:
        result.errors.append(Problem(f"the trust policy is {len(raw)} bytes; the limit is {max_bytes} bytes"))
        return result
    text, problem = decode(data, "trust policy")
    if problem is not None or text is None:
        result.errors.append(problem or Problem("not valid UTF-8"))
        return result
    root, loaded, load_problems, fatal = load(text, _Loader)
    if fatal:
        result.errors = _limited(load_problems)
        return result
    if root is None or loaded is None:
        result.errors = _limited(load_problems + [Problem(
            "the trust policy is empty; write 'scopes: []' for no scopes",
            line=1 if root is None else root.start_mark.line + 1)])
        return result
    checker = _Checker(root, now)
    policy = checker.policy(loaded, name, "sha256:" + hashlib.sha256(raw).hexdigest())
    result.errors = _limited(load_problems + checker.problems.items)
    result.warnings = sorted(checker.warnings.items, key=lambda p: (p.line is not None, p.line or 0))
    result.policy = policy if not result.errors else None
    return result
