"""What a cosign or Sigstore signature must be made by, and the trusted root it is checked against. Pure.

- :class:`Keyless`: a Sigstore keyless signer: certificate identity (``identity`` exact, or
  ``identity_regexp``, RE2, whole value) and OIDC issuer (``issuer`` or ``issuer_regexp``); exactly one
  of each pair. ``predicate_types`` limits which in-toto statements count (empty: any).
- :class:`CosignKey`: a cosign public key (PEM SubjectPublicKeyInfo): ECDSA P-256/P-384/P-521, RSA
  (2048 bits or more, PKCS#1 v1.5 with SHA-256) or Ed25519; ``require_tlog`` asks a tag-scheme
  signature for a Rekor SET bundle that verifies against the trusted root.

A bad requirement is a ``ValidationError`` naming the field, when it is made. Identity patterns are
compiled once per requirement. :func:`verdict_key` is a stable cache key for a verdict: (digest,
requirements fingerprint, trusted-root fingerprint).

:class:`SigstoreTrust` is a Sigstore trusted root (``trusted_root.json``: Fulcio CAs, Rekor and CT log
keys, TSAs) parsed once, with its sigstore-python ``Verifier`` built once and shared. Offline:
nothing is refreshed or fetched. sigstore, re2 and cryptography are imported when a requirement, a
root or a check needs them, not when this module is imported.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from shared.core.trust.artifacts import load_json
from shared.core.trust.verdict import KIND_COSIGN_KEY, KIND_KEYLESS, one_line
from shared.errors import Problem, ValidationError

MAX_PATTERN = 1024


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

        from shared.core.trust import keys

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
        object.__setattr__(self, "_key_id", keys.key_id(key))

    @property
    def key_id(self) -> str:
        return self._key_id

    def describe(self) -> str:
        return f"key {self.key_id}"

    def fingerprint_data(self) -> dict:
        return {"type": KIND_COSIGN_KEY, "key": self.key_id, "require_tlog": bool(self.require_tlog),
                "predicate_types": sorted(self.predicate_types)}


Requirement = Union[Keyless, CosignKey]


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


class _Refused(Exception):
    """A signature that does not verify (the message is the reason)."""

    def __init__(self, reason: str, rank: int = 1):
        super().__init__(reason)
        self.rank = rank
