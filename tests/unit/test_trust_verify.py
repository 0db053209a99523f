"""One image against its trust policy scope (shared.core.trust.verify), offline: require any / all over
cosign-key, keyless and notation signatures made by others (tests/sigstore/sign.js: node:crypto and
@sigstore/sign against @sigstore/mock; tests/unit/notary_signer.py), a copied signature, a missing
trusted root, skip scopes; what a verdict means for the import; cache keys and expiries; the verdict
carried in a queue message and counted in a summary."""
from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from shared.core import runs
from shared.core import trust as core
from shared.core.trust.verdict import counts
from shared.core.trust.verify import (PreparedPolicy, ScopeVerdict, cache_expiry, cache_key, skipped,
                                      verification_from_dict)
from tests.signing import IDENTITY, ISSUER, artifact, bundle_manifest, cosign_manifest, sign, simple_signing
from tests.unit import notary_signer as ns

IMAGE = ns.IMAGE_DIGEST
OTHER = ns.OTHER_DIGEST
NOW = ns.NOW
SUBJECT = "x509.subject: C=US, ST=WA, O=acme-rockets.io"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("scope")
    (out / "image.payload").write_bytes(simple_signing(IMAGE))
    (out / "other.payload").write_bytes(simple_signing(OTHER))
    summary = sign({"bundles": [{"name": "image", "kind": "dsse",
                                 "subjects": [{"name": "registry.example/acme/app", "digest": IMAGE}]}],
                    "keys": [{"name": "release", "type": "ec", "curve": "P-256",
                              "payloads": [str(out / "image.payload"), str(out / "other.payload")]}]}, out)
    summary["trust"] = core.SigstoreTrust(Path(summary["trustedRoot"]).read_bytes(), source="mock trusted root")
    summary["pem"] = Path(summary["keys"]["release"]["publicKey"]).read_text()
    return summary


@pytest.fixture(scope="module")
def chain():
    return ns.make_chain()


def cosign_signature(made, n: int = 0) -> core.SignatureArtifact:
    """cosign's tag scheme: signature ``n`` of the release key (0: over IMAGE, 1: over OTHER)."""
    payload = simple_signing(IMAGE if n == 0 else OTHER)
    signature = Path(made["keys"]["release"]["signatures"][n]).read_text()
    manifest, blobs = cosign_manifest([(payload, {core.ANNOTATION_SIGNATURE: signature})])
    return artifact("tag:" + IMAGE.replace(":", "-") + ".sig", manifest, blobs)


def keyless_bundle(made) -> core.SignatureArtifact:
    manifest, blobs = bundle_manifest(Path(made["bundles"]["image"]).read_bytes(), subject=IMAGE)
    return artifact("referrers-tag:sha256:" + "c3" * 32, manifest, blobs)


def notation_signature(chain, digest: str = IMAGE, **options) -> core.SignatureArtifact:
    envelope = ns.sign_jws(chain, ns.payload(digest), **options)
    manifest = ns.signature_manifest(envelope)
    return core.SignatureArtifact("referrers:sha256:" + "d4" * 32, manifest, {
        "sha256:" + __import__("hashlib").sha256(envelope).hexdigest(): envelope})


def policy(made, chain, *, require: str = "any", kinds=("cosign-key", "notation"), mode: str = "enforce",
           trusted_root: str = "") -> PreparedPolicy:
    signatures = []
    for kind in kinds:
        if kind == "cosign-key":
            signatures.append("      - kind: cosign-key\n        key: |\n" + textwrap.indent(made["pem"], " " * 10))
        elif kind == "keyless":
            signatures.append(f"      - kind: keyless\n        identity: {IDENTITY}\n        issuer: {ISSUER}\n")
        else:
            signatures.append("      - kind: notation\n        trust_store: |\n"
                              + textwrap.indent(chain.root_pem(), " " * 10)
                              + f'        trusted_identities: ["{SUBJECT}"]\n')
    root = f"    trusted_root: {trusted_root}\n" if trusted_root else ""
    text = (f"scopes:\n  - name: acme\n    match: registry.example/acme/**\n    mode: {mode}\n"
            f"    require: {require}\n{root}    signatures:\n" + "".join(signatures)
            + "  - name: legacy\n    match: registry.example/acme/legacy\n    mode: skip\n")
    result = core.parse_trust_policy(text, "policy.yaml")
    assert result.ok, result.errors
    return PreparedPolicy(result.policy)


def verify(prepared, artifacts, trust=None, *, repository="acme/app", **kwargs) -> ScopeVerdict:
    check = prepared.scope_for("registry.example", repository)
    return check.verify(IMAGE, artifacts, trust=trust, now=NOW, **kwargs)


def test_require_any_takes_the_first_signature_that_verifies(made, chain):
    prepared = policy(made, chain)
    by_key = verify(prepared, [cosign_signature(made)])
    assert by_key.status == core.VERIFIED and by_key.verification.kind == "cosign-key" and not by_key.rejected
    assert by_key.to_dict() == {"status": "verified", "kind": "cosign-key", "signer": by_key.verification.signer,
                                "issuer": None, "location": "tag:" + IMAGE.replace(":", "-") + ".sig",
                                "reason": None, "scope": "acme", "mode": "enforce"}
    by_notation = verify(prepared, [notation_signature(chain)])
    assert by_notation.status == core.VERIFIED and by_notation.verification.kind == "notation"
    assert by_notation.verification.location == "referrers:sha256:" + "d4" * 32  # where it was found
    # a notation verdict holds until the chain's first certificate (or the signature) expires
    assert by_notation.verification.valid_until == min(c.not_valid_after_utc for c in chain.certificates)


def test_nothing_found_is_unsigned_and_a_copied_signature_is_a_mismatch(made, chain):
    prepared = policy(made, chain)
    nothing = verify(prepared, [])
    assert nothing.status == core.UNSIGNED and nothing.rejected and nothing.unverified
    assert nothing.line().startswith("scope acme (enforce): unsigned: ")
    copied = verify(prepared, [cosign_signature(made, 1)])  # a valid signature of the release key, over OTHER
    assert copied.status == core.MISMATCH and OTHER in copied.verification.reason and copied.rejected
    # the mismatch is the most telling failure, whatever else fails beside it
    untrusted = notation_signature(ns.make_chain(n=3))
    assert verify(prepared, [untrusted, cosign_signature(made, 1)]).status == core.MISMATCH
    assert verify(prepared, [untrusted]).status == core.INVALID


def test_audit_is_never_rejected_and_skip_looks_at_nothing(made, chain):
    audit = verify(policy(made, chain, mode="audit"), [])
    assert audit.status == core.UNSIGNED and audit.unverified and not audit.rejected
    legacy = verify(policy(made, chain), [cosign_signature(made)], repository="acme/legacy")
    assert legacy.status == core.SKIPPED and legacy.scope == "legacy" and legacy.mode == "skip"
    assert not legacy.rejected and not legacy.unverified
    assert PreparedPolicy(core.parse_trust_policy("scopes: []").policy).scope_for("docker.io", "library/x") is None


def test_require_all_needs_every_signature(made, chain):
    prepared = policy(made, chain, require="all")
    one = verify(prepared, [cosign_signature(made)])
    assert one.status == core.UNSIGNED and one.rejected
    assert one.verification.reason.startswith("require: all: signature 2 of 2 (notation): ")
    both = verify(prepared, [cosign_signature(made), notation_signature(chain)])
    assert both.status == core.VERIFIED and both.verification.kind == "cosign-key"
    assert [p.kind for p in both.parts] == ["cosign-key", "notation"] and both.verification.valid_until is not None
    assert [s["status"] for s in both.to_dict()["signatures"]] == ["verified", "verified"]
    expired = verify(prepared, [cosign_signature(made), notation_signature(chain, expiry=NOW - timedelta(hours=1))])
    assert expired.status == core.INVALID and "expired" in expired.verification.reason


def test_keyless_uses_the_trusted_root_it_is_given_and_says_when_there_is_none(made, chain):
    prepared = policy(made, chain, kinds=("keyless",), trusted_root="mock")
    verdict = verify(prepared, [keyless_bundle(made)], made["trust"])
    assert verdict.status == core.VERIFIED and verdict.verification.signer == IDENTITY
    assert verdict.verification.issuer == ISSUER and verdict.verification.valid_until is None
    missing = verify(prepared, [keyless_bundle(made)], None,
                     trust_problem="trusted root 'mock' is not available: trust/roots/mock.json does not exist")
    assert missing.status == core.INVALID and missing.rejected
    assert missing.verification.reason.startswith("trusted root 'mock' is not available")
    # another kind listed beside keyless can still verify without the root
    mixed = policy(made, chain, kinds=("keyless", "cosign-key"), trusted_root="mock")
    assert verify(mixed, [cosign_signature(made)], None, trust_problem="no root").status == core.VERIFIED


def test_cache_keys_and_expiry():
    verified = core.Verification(core.VERIFIED, "notation", "C=US", valid_until=NOW + timedelta(hours=2))
    assert cache_expiry(verified, NOW, 86400) == NOW + timedelta(hours=2)  # the chain expires first
    assert cache_expiry(verified, NOW, 60) == NOW + timedelta(seconds=60)
    assert cache_expiry(verified, NOW, 0) is None
    assert cache_expiry(core.Verification(core.VERIFIED, "cosign-key", "k"), NOW, 60) == NOW + timedelta(seconds=60)
    for status in (core.UNSIGNED, core.INVALID, core.MISMATCH, core.SKIPPED):
        assert cache_expiry(core.Verification(status), NOW, 86400) is None  # only verified verdicts are kept
    expired = core.Verification(core.VERIFIED, "notation", "C=US", valid_until=NOW - timedelta(seconds=1))
    assert cache_expiry(expired, NOW, 86400) is None
    assert cache_key(IMAGE, "sha256:f", None) == f"{IMAGE}|sha256:f|none"
    assert cache_key(IMAGE, "sha256:f", "sha256:r") != cache_key(OTHER, "sha256:f", "sha256:r")
    assert verification_from_dict(verified.to_dict()) == verified
    with pytest.raises(ValueError):
        verification_from_dict({"status": 3})


def test_the_verdict_travels_in_an_import_message_and_is_counted():
    verdict = ScopeVerdict(core.Verification(core.VERIFIED, "keyless", IDENTITY, ISSUER, "referrers:x"), "a",
                           "enforce").to_dict()
    message = runs.ImportMessage("run-1", 0, 1, 0, 1, "000001", "new", IMAGE, None, None, verification=verdict)
    parsed = runs.parse_message(message.to_json())
    assert parsed.verification == verdict
    for bad in ("not a verdict", {"kind": "keyless"}, {"status": "verified", "reason": "x" * 20_000}):
        data = json.loads(message.to_json())
        data["verification"] = bad
        with pytest.raises(ValueError, match="verification"):
            runs.parse_message(json.dumps(data))
    entries = [{"verification": {"status": "unsigned", "mode": "enforce"}, "error": {"code": "SignatureRejected"}},
               {"verification": {"status": "unsigned", "mode": "audit"}, "error": None},
               {"verification": {"status": "verified"}}, {"verification": skipped("x").to_dict()}, {}]
    assert counts(entries) == {"unverified": 2, "rejected": 1}
    summary = runs.summarise([{**e, "line": 1, "action": "new", "result": "imported"} for e in entries])
    assert (summary["unverified"], summary["rejected"]) == (2, 1)
