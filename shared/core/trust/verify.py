"""One image against its trust policy: the scope that applies, its signatures (any or all), one verdict. Pure.

The caller (``shared.handlers.trust``) finds the scope's signature artifacts in the source registry and
brings the trusted root; this module decides. :class:`PreparedPolicy` wraps a validated
``TrustPolicy`` and prepares each scope once (:class:`ScopeCheck`: its keyless and cosign-key
signatures as ``shared.core.trust.signers`` requirements, its fingerprint), so a verdict costs the same
whatever the size of the run.

:meth:`ScopeCheck.verify` gives a :class:`ScopeVerdict`:

- ``require: any``: the keyless and cosign-key signatures are checked together
  (``shared.core.trust.sigstore.verify_image``), each notation signature on its own
  (``shared.core.trust.notation.verify_notation_signatures``); the first verified verdict wins,
  otherwise the most telling failure: ``mismatch``, then ``invalid``, then ``unsigned``.
- ``require: all``: each listed signature is checked on its own and every one must verify; the verdict
  is the first one's (kind, signer) with every part listed, or the most telling failure among them,
  its reason saying which signature failed.
- ``mode: skip`` (or no scope): ``skipped``, nothing looked at.

A scope whose keyless signatures need a trusted root the caller could not provide (``trust_problem``)
is ``invalid`` with that reason, without looking at the artifacts.

What a verdict means for the import (:attr:`ScopeVerdict.rejected`): under ``enforce`` anything but
``verified`` (or ``skipped``) keeps the image out; under ``audit`` it is imported and recorded.
:func:`cache_key` and :func:`cache_expiry` are what a verdict cache keys and ages a verified verdict by:
(image digest, scope fingerprint, trusted-root fingerprint), kept no longer than the verdict holds
(``Verification.valid_until``) nor than the caller's time to live.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional, Sequence

from shared.core.trust.artifacts import SignatureArtifact, candidates
from shared.core.trust.policy import MODE_ENFORCE, MODE_SKIP, REQUIRE_ALL, Scope, TrustPolicy
from shared.core.trust.verdict import (FAILED, INVALID, KIND_COSIGN_KEY, KIND_KEYLESS, MISMATCH, SKIPPED, UNSIGNED,
                                       VERIFIED, Verification)

FAILED_STATUSES = FAILED
_RANK = {VERIFIED: 4, MISMATCH: 3, INVALID: 2, UNSIGNED: 1, SKIPPED: 0}
NO_ROOT = "none"  # the trusted-root fingerprint of a scope that needs none (notation only)


@dataclass(frozen=True)
class ScopeVerdict:
    """The verdict on one image digest under one scope (``scope`` None: no scope matches)."""

    verification: Verification
    scope: Optional[str] = None
    mode: Optional[str] = None
    parts: tuple[Verification, ...] = ()  # require: all: each signature's verdict
    cached: Optional[str] = None  # where a cached verdict came from ("memory" | "blob"); None: verified now

    @property
    def status(self) -> str:
        return self.verification.status

    @property
    def unverified(self) -> bool:
        """Signatures were required and they did not verify (enforce or audit)."""
        return self.status in FAILED_STATUSES

    @property
    def rejected(self) -> bool:
        """Not to be imported: an enforce scope that did not verify."""
        return self.mode == MODE_ENFORCE and self.unverified

    def line(self) -> str:
        """One line for a rejection (or an audit note): scope, mode, status and the reason."""
        v = self.verification
        return f"scope {self.scope} ({self.mode}): {v.status}" + (f": {v.reason}" if v.reason else "")

    def to_dict(self) -> dict:
        """The entry record's ``verification`` object."""
        out = {**self.verification.to_dict(), "scope": self.scope, "mode": self.mode}
        if self.parts:
            out["signatures"] = [p.to_dict() for p in self.parts]
        if self.cached:
            out["cached"] = True
        return out


def skipped(reason: str, scope: Optional[Scope] = None) -> ScopeVerdict:
    return ScopeVerdict(Verification.skipped(reason), scope.name if scope else None, scope.mode if scope else None)


def verification_from_dict(data: dict) -> Verification:
    """A ``Verification`` back from its ``to_dict`` (a cached verdict); ValueError when it is not one."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), (str, type(None))) for k in
                                             ("status", "kind", "signer", "issuer", "location", "reason")):
        raise ValueError("not a verification")
    return Verification(data.get("status"), data.get("kind"), data.get("signer"), data.get("issuer"),
                        data.get("location"), data.get("reason"))


class ScopeCheck:
    """A scope prepared for verification: its signatures in the verifiers' form, its fingerprint."""

    def __init__(self, scope: Scope):
        from shared.core.trust.signers import CosignKey, Keyless

        self.scope = scope
        self.fingerprint = scope.fingerprint()
        self.signers: list[tuple[object, object]] = []  # (policy requirement, signers requirement or None)
        for requirement in scope.signatures:
            if requirement.kind == KIND_KEYLESS:
                converted: object = Keyless(identity=requirement.identity, identity_regexp=requirement.identity_regex,
                                            issuer=requirement.issuer, issuer_regexp=requirement.issuer_regex)
            elif requirement.kind == KIND_COSIGN_KEY:
                converted = CosignKey(requirement.pem)
            else:
                converted = None
            self.signers.append((requirement, converted))
        # a keyless signature is checked against a trusted root; a key needs none (the policy file asks for no
        # transparency log), so a key-only scope's verdicts do not depend on the root
        self.needs_root = any(r.kind == KIND_KEYLESS or getattr(c, "require_tlog", False) for r, c in self.signers)
        # cosign's tag scheme holds cosign and Sigstore signatures only: a notation-only scope need not read it
        self.reads_cosign_tag = any(c is not None for _, c in self.signers)

    def verify(self, digest: str, artifacts: Sequence[SignatureArtifact], *, trust=None,
               trust_problem: Optional[str] = None, now: datetime) -> ScopeVerdict:
        """The verdict for ``digest`` from its signature artifacts (``trust``: a ``SigstoreTrust``)."""
        scope = self.scope
        if scope.mode == MODE_SKIP:
            return skipped(f"scope {scope.name} has mode skip", scope)
        if scope.require == REQUIRE_ALL:
            parts = tuple(self._one([pair], digest, artifacts, trust, trust_problem, now) for pair in self.signers)
            failed = [p for p in parts if p.status != VERIFIED]
            if not failed:
                first = parts[0]
                until = [p.valid_until for p in parts if p.valid_until is not None]
                verdict = Verification(VERIFIED, first.kind, first.signer, first.issuer, first.location,
                                       valid_until=min(until) if until else None)
            else:
                worst = max(failed, key=lambda p: _RANK[p.status])
                which = parts.index(worst)
                verdict = Verification(worst.status, worst.kind, worst.signer, worst.issuer, worst.location,
                                       f"require: all: signature {which + 1} of {len(parts)} ({worst.kind}): "
                                       f"{worst.reason}")
            return ScopeVerdict(verdict, scope.name, scope.mode, parts if len(parts) > 1 else ())
        return ScopeVerdict(self._one(self.signers, digest, artifacts, trust, trust_problem, now), scope.name,
                            scope.mode)

    def _one(self, pairs, digest: str, artifacts: Sequence[SignatureArtifact], trust, trust_problem: Optional[str],
             now: datetime) -> Verification:
        """Any of ``pairs`` verifying: the keyless and cosign-key ones together, each notation one alone."""
        from shared.core.trust.notation import verify_notation_signatures
        from shared.core.trust.sigstore import verify_image

        verdicts: list[Verification] = []
        sigstore = [(requirement, converted) for requirement, converted in pairs if converted is not None]
        if trust is None and trust_problem and any(r.kind == KIND_KEYLESS for r, _ in sigstore):
            # keyless needs the root that is missing; a key needs none (the reason says why keyless failed)
            verdicts.append(Verification(INVALID, KIND_KEYLESS, reason=trust_problem))
            sigstore = [(r, c) for r, c in sigstore if r.kind != KIND_KEYLESS]
        if sigstore:
            verdicts.append(verify_image(digest, artifacts, [c for _, c in sigstore], trust))
        notation = [requirement for requirement, converted in pairs if converted is None]
        if notation:
            envelopes = _notation_pairs(artifacts)
            for requirement in notation:
                verdicts.append(verify_notation_signatures(envelopes, digest=digest, requirement=requirement,
                                                           now=now))
        verified = next((v for v in verdicts if v.status == VERIFIED), None)
        if verified is not None:
            return verified
        return max(verdicts, key=lambda v: _RANK[v.status])


def _notation_pairs(artifacts: Sequence[SignatureArtifact]) -> list[tuple[bytes, bytes, str]]:
    """(signature manifest, envelope, where it was found) of each Notary Project signature among the artifacts."""
    from shared.core.trust.artifacts import NotationSignature

    pairs = []
    for artifact in artifacts:
        for candidate in candidates(artifact):
            if isinstance(candidate, NotationSignature):
                pairs.append((artifact.manifest, candidate.envelope, candidate.location))
    return pairs


class PreparedPolicy:
    """A validated policy whose scopes are prepared (``ScopeCheck``) once, on first use, thread-safely."""

    def __init__(self, policy: TrustPolicy):
        self.policy = policy
        self._checks: dict[str, ScopeCheck] = {}
        self._lock = threading.Lock()

    def scope_for(self, registry: str, repository: str) -> Optional[ScopeCheck]:
        scope = self.policy.scope_for(registry, repository)
        if scope is None:
            return None
        with self._lock:
            check = self._checks.get(scope.name)
            if check is None:
                check = self._checks[scope.name] = ScopeCheck(scope)
            return check

    def describe(self) -> dict:
        """The run record's note of the policy it ran under."""
        return {"policy": self.policy.name, "sha256": self.policy.content_hash, "scopes": len(self.policy)}


def cache_key(digest: str, scope_fingerprint: str, root_fingerprint: Optional[str]) -> str:
    """The key a verdict is cached by: what it depends on (the image, the scope's signatures, the root)."""
    return f"{digest}|{scope_fingerprint}|{root_fingerprint or NO_ROOT}"


def cache_name(key: str) -> str:
    """A fixed-length name for a cache key (``sha256`` hex of it)."""
    return hashlib.sha256(key.encode()).hexdigest()


def cache_expiry(verdict: Verification, now: datetime, ttl_seconds: float) -> Optional[datetime]:
    """Until when a verdict may be reused: verified verdicts only, for at most ``ttl_seconds``, and no later
    than the verdict holds (``valid_until``); None: not to be cached."""
    if verdict.status != VERIFIED or ttl_seconds <= 0:
        return None
    until = now + timedelta(seconds=ttl_seconds)
    if verdict.valid_until is not None:
        until = min(until, verdict.valid_until)
    return until if until > now else None

