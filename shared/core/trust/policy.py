"""The trust policy: which signatures an image must carry before it is imported (the validated types).

Pure code: no I/O. The file is parsed and validated by ``shared.core.trust.parse`` into a
:class:`TrustPolicy`: scopes, each with its patterns (``shared.core.trust.patterns``), its mode and
the signatures it requires.

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
    notation signature). :class:`CosignKeyRequirement` (a public key), :class:`KeylessRequirement`
    (a certificate identity and OIDC issuer, exact or an anchored RE2 pattern) and
    :class:`NotationRequirement` (a trust store of X.509 certificates and trusted identities,
    ``shared.core.trust.identities``). ``trusted_root`` names a Sigstore trusted-root file the
    operator supplies (used by ``keyless`` and ``cosign-key`` verification); without it the
    public-good root shipped with sigstore-python is used.

API
    :meth:`TrustPolicy.scope_for` picks the scope for a source repository; :meth:`Scope.fingerprint`
    is a stable hash of what a verdict depends on (the signatures, ``require`` and ``trusted_root``;
    not the name, patterns or mode), for a verdict cache keyed by image digest and fingerprint.
    :class:`TrustPolicyResult` is what ``parse_trust_policy`` returns (``ok``, ``policy``,
    ``errors``, ``warnings``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Union

from cryptography import x509

from shared.core.reference import DOCKER_HUB, normalise_registry
from shared.core.trust.identities import TrustedIdentity, format_subject, subject_attributes
from shared.core.trust.keys import _fingerprint
from shared.core.trust.patterns import Pattern
from shared.core.trust.verdict import KIND_COSIGN_KEY, KIND_KEYLESS, KIND_NOTATION, KINDS  # noqa: F401 - the kinds a policy names
from shared.errors import Problem, TrustPolicyError

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

