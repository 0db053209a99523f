"""cosign / Sigstore verification (shared.core.trust) without signatures that verify: the result type,
requirement checks, cache keys, artifact parsing, and hostile or broken artifacts (a clear ``invalid``,
never a crash)."""
from __future__ import annotations

import json

import pytest

from shared.core import trust as core
from shared.errors import ValidationError
from tests.signing import artifact, bundle_manifest, cosign_manifest, sha256, simple_signing

IMAGE = "sha256:" + "a1" * 32
KEYLESS = core.Keyless(identity="https://github.com/acme/app/.github/workflows/r.yml@refs/tags/v1",
                       issuer="https://token.actions.githubusercontent.com")


def generated_key(kind: str, **options) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa

    key = {"p256": lambda: ec.generate_private_key(ec.SECP256R1()),
           "rsa": lambda: rsa.generate_private_key(65537, options.get("bits", 2048)),
           "dsa": lambda: dsa.generate_private_key(2048),
           "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
           "ed448": lambda: ed448.Ed448PrivateKey.generate()}[kind]()
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


P256 = generated_key("p256")


# --- the result ------------------------------------------------------------------------------------


def test_a_verification_is_a_flat_record_with_a_one_line_reason():
    v = core.Verification(core.INVALID, core.KIND_KEYLESS, location="tag:x", reason="bad\n  things\thappened " * 40)
    d = v.to_dict()
    assert list(d) == ["status", "kind", "signer", "issuer", "location", "reason"]
    assert "\n" not in d["reason"] and len(d["reason"]) == core.MAX_REASON and d["reason"].endswith("…")
    assert core.Verification.skipped("no policy").to_dict()["status"] == "skipped"
    assert core.Verification(core.VERIFIED, core.KIND_NOTATION, signer="CN=acme").verified
    with pytest.raises(ValueError):
        core.Verification("ok")
    with pytest.raises(ValueError):
        core.Verification(core.VERIFIED, "gpg")


# --- requirements ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options, field", [
    ({"issuer": "https://i"}, "identity"),
    ({"identity": "a", "identity_regexp": "a", "issuer": "https://i"}, "identity"),
    ({"identity": "a"}, "issuer"),
    ({"identity": "a", "issuer": "https://i", "issuer_regexp": ".*"}, "issuer"),
    ({"identity": "", "issuer": "https://i"}, "identity"),
    ({"identity_regexp": "(a", "issuer": "https://i"}, "identity_regexp"),
    ({"identity_regexp": r"(a)\1", "issuer": "https://i"}, "identity_regexp"),  # back-references: not RE2
    ({"identity_regexp": r"(?=a)", "issuer": "https://i"}, "identity_regexp"),  # look-ahead: not RE2
    ({"identity": "a", "issuer_regexp": "x" * 1025}, "issuer_regexp"),
])
def test_a_keyless_requirement_is_checked_when_made(options, field):
    with pytest.raises(ValidationError) as caught:
        core.Keyless(**options)
    assert caught.value.problems[0].field == field and caught.value.code == "InvalidSignatureRequirement"


def test_identity_patterns_are_re2_and_match_the_whole_value():
    r = core.Keyless(identity_regexp=r"https://github\.com/acme/[a-z]+/.*", issuer_regexp=r"https://[a-z.]+")
    assert r.identity_matches("https://github.com/acme/app/.github/workflows/x.yml@refs/heads/main")
    assert not r.identity_matches("evil https://github.com/acme/app/x")  # no match in the middle
    assert r.issuer_matches("https://token.actions.githubusercontent.com") and not r.issuer_matches(None)
    nested = core.Keyless(identity_regexp="(a+)+$", issuer="i")  # exponential for a backtracking engine
    assert not nested.identity_matches("a" * 50_000 + "b")


@pytest.mark.parametrize("pem, words", [
    ("not a key", "is not a PEM public key"),
    ("", "must be a PEM public key"),
    (generated_key("rsa", bits=1024), "at least 2048"),
    (generated_key("dsa"), "not supported"),
    (generated_key("secp256k1"), "secp256k1 is not supported"),
    (generated_key("ed448"), "not supported"),
])
def test_a_cosign_key_is_checked_when_made(pem, words):
    with pytest.raises(ValidationError) as caught:
        core.CosignKey(pem)
    assert caught.value.problems[0].field == "public_key" and words in str(caught.value)


def test_a_key_is_named_by_the_sha256_of_its_spki():
    import base64
    import hashlib

    der = base64.b64decode("".join(P256.strip().splitlines()[1:-1]))
    assert core.CosignKey(P256).key_id == "sha256:" + hashlib.sha256(der).hexdigest()


def test_the_cache_key_names_digest_policy_and_root():
    class Root:
        fingerprint = "sha256:" + "0" * 64

    a, b = core.CosignKey(P256), KEYLESS
    key = core.verdict_key(IMAGE, [a, b], Root())
    assert key == core.verdict_key(IMAGE, [b, a], Root())  # order of requirements does not matter
    assert key == core.verdict_key(IMAGE, [core.CosignKey(P256), KEYLESS], Root())  # nor object identity
    assert key != core.verdict_key("sha256:" + "b2" * 32, [a, b], Root())
    assert key != core.verdict_key(IMAGE, [a], Root())
    assert key != core.verdict_key(IMAGE, [core.CosignKey(P256, require_tlog=True), b], Root())
    assert key != core.verdict_key(IMAGE, [a, b], None)
    assert key.startswith(IMAGE + "|sha256:") and key.endswith("|" + Root.fingerprint)


def test_a_trusted_root_that_is_not_one_is_refused_with_its_name():
    for data in (b"{}", b"not json", json.dumps({"mediaType": "application/x"}).encode()):
        with pytest.raises(ValidationError) as caught:
            core.SigstoreTrust(data, source="trusted root /etc/airlock/root.json")
        assert "/etc/airlock/root.json" in str(caught.value) and caught.value.code == "InvalidTrustedRoot"


# --- parsing ---------------------------------------------------------------------------------------


def test_referrers_keeps_signature_types_only_and_counts_the_rest():
    def entry(artifact_type, n):
        return {"mediaType": core.MEDIA_OCI_MANIFEST, "digest": "sha256:" + f"{n:02x}" * 32, "size": 500,
                "artifactType": artifact_type}

    index = {"schemaVersion": 2, "mediaType": core.MEDIA_OCI_INDEX, "manifests": [
        entry(core.MEDIA_BUNDLE_V03, 1), entry("application/spdx+json", 2), entry(core.ARTIFACT_COSIGN_SIG, 3),
        entry(core.ARTIFACT_NOTATION, 4), {"digest": "sha512:abc"}, entry(core.MEDIA_BUNDLES[2], 5)]}
    found, passed = core.referrers(json.dumps(index).encode(), "index")
    assert [d.digest[7:9] for d in found] == ["01", "03", "04", "05"] and passed == 2
    many = {"manifests": [entry(core.MEDIA_BUNDLE_V03, n % 256) for n in range(100)]}
    found, passed = core.referrers(json.dumps(many).encode(), "index")
    assert len(found) == core.MAX_ARTIFACTS and passed == 100 - core.MAX_ARTIFACTS


@pytest.mark.parametrize("raw, words", [
    (b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b'{"manifests": {}}', "not an image index"),
    (b" " * (core.MAX_MANIFEST_BYTES + 1), "over the"),
])
def test_an_unreadable_index_is_a_clear_error(raw, words):
    with pytest.raises(core.Unreadable) as caught:
        core.referrers(raw, "referrers index of x")
    assert words in str(caught.value) and "referrers index of x" in str(caught.value)


def test_a_cosign_manifest_plans_its_signature_layers_within_bounds():
    layers = [(simple_signing(IMAGE) + b" " * n, {core.ANNOTATION_SIGNATURE: "TUVZ"}) for n in range(20)]
    manifest, _ = cosign_manifest(layers)
    plan = core.plan_artifact(manifest, "tag")
    assert plan.kind == "cosign" and len(plan.fetch) == core.MAX_SIGNATURE_LAYERS  # the config is not fetched


def test_a_huge_declared_layer_is_refused_before_download_and_reported_invalid():
    manifest = json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST,
                           "artifactType": core.MEDIA_BUNDLE_V03,
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                      "digest": sha256(b"{}")},
                           "layers": [{"mediaType": core.MEDIA_BUNDLE_V03, "size": 5 * 1024 ** 3,
                                       "digest": "sha256:" + "e5" * 32}]}).encode()
    plan = core.plan_artifact(manifest, "m")
    assert plan.fetch == () and "5368709120 bytes" in plan.refused[0][1]
    verdict = core.verify_image(IMAGE, [core.SignatureArtifact("referrers:sha256:" + "f6" * 32, manifest)],
                                [KEYLESS], None)
    assert verdict.status == core.INVALID and verdict.location == "referrers:sha256:" + "f6" * 32
    assert "declares 5368709120 bytes, over the 2097152 byte limit" in verdict.reason


@pytest.mark.parametrize("blob, words", [
    (b"\xc3\x28" * 32, "not UTF-8"),
    (b"\x00" * 64, "not JSON"),
    (b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}', "unreadable Sigstore bundle"),
    (b"[" * 50_000 + b"]" * 50_000, "nests too deeply"),
    (json.dumps({"mediaType": core.MEDIA_BUNDLE_V03,
                 "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []},
                 "messageSignature": {"signature": "AAAA"}}).encode(), ""),
])
def test_a_broken_bundle_is_invalid_with_a_reason_not_a_crash(blob, words):
    from shared.adapters.signatures import public_good_trust

    manifest, blobs = bundle_manifest(blob)
    verdict = core.verify_image(IMAGE, [artifact("referrers:x", manifest, blobs)], [KEYLESS], public_good_trust())
    assert verdict.status == core.INVALID and words in verdict.reason and verdict.reason, verdict


@pytest.mark.parametrize("annotations, payload, words", [
    ({}, simple_signing(IMAGE), "no dev.cosignproject.cosign/signature annotation"),
    ({core.ANNOTATION_SIGNATURE: "%%%"}, simple_signing(IMAGE), "is not base64"),
    ({core.ANNOTATION_SIGNATURE: "TUVZ"}, b'{"critical": {}}', "does not verify"),
])
def test_a_broken_cosign_layer_is_invalid_with_a_reason(annotations, payload, words):
    manifest, blobs = cosign_manifest([(payload, annotations)])
    verdict = core.verify_image(IMAGE, [artifact("tag:t.sig", manifest, blobs)], [core.CosignKey(P256)], None)
    assert verdict.status == core.INVALID and words in verdict.reason, verdict


def test_a_missing_or_failed_blob_is_reported_with_the_adapters_reason():
    manifest, _ = cosign_manifest([(simple_signing(IMAGE), {core.ANNOTATION_SIGNATURE: "TUVZ"})])
    [layer] = core.plan_artifact(manifest, "m").fetch
    broken = core.SignatureArtifact("tag:t.sig", manifest, {}, None, {layer.digest: "blob x does not match its digest"})
    verdict = core.verify_image(IMAGE, [broken], [core.CosignKey(P256)], None)
    assert verdict.status == core.INVALID and verdict.reason == "blob x does not match its digest"
    problem = core.SignatureArtifact("referrers:x", problem="signature manifest at referrers:x is over the limit")
    assert core.verify_image(IMAGE, [problem], [KEYLESS], None).reason.endswith("is over the limit")


def test_a_signature_location_that_holds_no_signature_is_invalid():
    manifest = json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                                      "digest": sha256(b"{}")},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 9,
                                       "digest": "sha256:" + "9a" * 32}]}).encode()
    verdict = core.verify_image(IMAGE, [core.SignatureArtifact("tag:t.sig", manifest)], [KEYLESS], None)
    assert verdict.status == core.INVALID and "holds no cosign, Sigstore or Notary Project signature" in verdict.reason


def test_the_number_of_signatures_checked_is_bounded():
    layers = [(simple_signing(IMAGE) + b" " * n, {core.ANNOTATION_SIGNATURE: "TUVZ"})
              for n in range(core.MAX_SIGNATURE_LAYERS)]
    manifest, blobs = cosign_manifest(layers)
    many = [artifact(f"tag:{n}", manifest, blobs) for n in range(10)]  # 160 signatures
    verdict = core.verify_image(IMAGE, many, [core.CosignKey(P256)], None)
    assert verdict.status == core.INVALID
    assert verdict.reason.startswith(f"{core.MAX_CANDIDATES} signatures, none verified "
                                     f"({10 * core.MAX_SIGNATURE_LAYERS - core.MAX_CANDIDATES} more not checked)")


def test_unsigned_skipped_and_notation_only():
    assert core.verify_image(IMAGE, [], [KEYLESS], None).status == core.UNSIGNED
    assert core.verify_image(IMAGE, [], [], None).status == core.SKIPPED
    envelope = b'{"payload": "e30", "protected": "e30", "signature": "AA"}'
    manifest = json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST,
                           "artifactType": core.ARTIFACT_NOTATION,
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                      "digest": sha256(b"{}")},
                           "layers": [{"mediaType": "application/jose+json", "size": len(envelope),
                                       "digest": sha256(envelope)}]}).encode()
    notation = artifact("referrers:n", manifest, {sha256(envelope): envelope})
    verdict = core.verify_image(IMAGE, [notation], [KEYLESS], None)
    assert verdict.status == core.UNSIGNED and "1 Notary Project signature" in verdict.reason
    [found] = core.notation_signatures([notation])
    assert (found.envelope, found.media_type, found.location) == (envelope, "application/jose+json", "referrers:n")
    with pytest.raises(ValidationError):
        core.verify_image("latest", [], [KEYLESS], None)


def test_import_is_cheap():
    """sigstore, re2 and cryptography load when a requirement, a root or a check needs them."""
    import subprocess
    import sys

    code = ("import sys, shared.core.trust, shared.core.trust.sigstore, shared.adapters.signatures; "
            "print(sorted(m for m in ('sigstore', 're2', 'cryptography', 'rfc8785') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_operators_trusted_root_file_is_read_with_clear_errors(tmp_path):
    from shared.adapters.signatures import SignatureFinder, public_good_trust, trust_from_file
    from shared.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        trust_from_file(str(tmp_path / "missing.json"))
    assert "missing.json cannot be read" in str(caught.value)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValidationError) as caught:
        trust_from_file(str(tmp_path / "bad.json"))
    assert "bad.json is not a Sigstore trusted root" in str(caught.value)
    copy = tmp_path / "root.json"
    copy.write_bytes(public_good_trust().root._inner.to_json().encode())
    assert trust_from_file(str(copy)).root._inner.tlogs == public_good_trust().root._inner.tlogs
    with pytest.raises(ValidationError):
        SignatureFinder(source=None).find("docker.io", "library/nginx", "latest")
