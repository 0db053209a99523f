"""The verdict on an image's signatures: one ``Verification`` record, the same for every verifier. Pure.

    verified   a signature by a signer the policy names covers exactly this digest
    mismatch   a valid signature by such a signer, over a *different* digest (copied from another image)
    invalid    signatures exist, none verifies: bad signature, untrusted chain, wrong identity or
               issuer, a signer of another kind, an unreadable or oversized artifact
    unsigned   no signature was found
    skipped    no requirement applies (``Verification.skipped``; for callers)

``kind`` is ``cosign-key``, ``keyless`` or ``notation``; ``signer`` the certificate identity (SAN), a
key id (``sha256:<hex of the SubjectPublicKeyInfo DER>``) or an X.509 subject; ``issuer`` the OIDC
issuer (keyless); ``location`` where the signature was found (``referrers:<digest>``,
``referrers-tag:<digest>``, ``tag:sha256-<hex>.sig``); ``reason`` one line (:func:`one_line`, at most
:data:`MAX_REASON` characters) when not verified. ``valid_until`` (not part of ``to_dict``) is when a
verified verdict stops holding because it depended on the time: a Notary Project chain is checked now,
so its verdict lasts until the first certificate or the signature expires; a verdict cache keeps it no
longer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

VERIFIED = "verified"
UNSIGNED = "unsigned"
INVALID = "invalid"
MISMATCH = "mismatch"
SKIPPED = "skipped"
STATUSES = (VERIFIED, UNSIGNED, INVALID, MISMATCH, SKIPPED)
FAILED = (UNSIGNED, INVALID, MISMATCH)  # signatures were required and did not verify
REJECTED_CODE = "SignatureRejected"  # the error code of an entry an enforce scope kept out

KIND_COSIGN_KEY = "cosign-key"
KIND_KEYLESS = "keyless"
KIND_NOTATION = "notation"
KINDS = (KIND_COSIGN_KEY, KIND_KEYLESS, KIND_NOTATION)
MAX_REASON = 300


@dataclass(frozen=True)
class Verification:
    """One verdict for one image digest. Every verifier (notation's too) returns this."""

    status: str  # "verified" | "unsigned" | "invalid" | "mismatch" | "skipped"
    kind: Optional[str] = None  # "cosign-key" | "keyless" | "notation" | None
    signer: Optional[str] = None  # certificate identity (SAN), key id ("sha256:<hex of SPKI DER>"), or X.509 subject
    issuer: Optional[str] = None  # OIDC issuer for keyless
    location: Optional[str] = None  # "referrers:<digest>" | "referrers-tag:<digest>" | "tag:sha256-<hex>.sig" | ...
    reason: Optional[str] = None  # one line, when not verified
    # a verified verdict that depends on the time (a certificate that expires, a signature's expiry) holds
    # until then; None: it does not (keyless and cosign-key verdicts are made at the signed time)
    valid_until: Optional[datetime] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown verification status {self.status!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown signature kind {self.kind!r}")
        if self.reason is not None:
            object.__setattr__(self, "reason", one_line(self.reason))

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED

    def to_dict(self) -> dict:
        return {"status": self.status, "kind": self.kind, "signer": self.signer, "issuer": self.issuer,
                "location": self.location, "reason": self.reason}

    @classmethod
    def skipped(cls, reason: str) -> "Verification":
        return cls(SKIPPED, reason=reason)


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """Whitespace collapsed to single spaces, at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def counts(entries) -> dict:
    """``{"unverified", "rejected"}`` over entry outcome documents: entries whose ``verification`` did not
    verify (enforce or audit), and entries kept out by an enforce scope (error ``SignatureRejected``)."""
    unverified = rejected = 0
    for entry in entries:
        verification = entry.get("verification") or {}
        unverified += verification.get("status") in FAILED
        rejected += (entry.get("error") or {}).get("code") == REJECTED_CODE
    return {"unverified": unverified, "rejected": rejected}
