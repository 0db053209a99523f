"""Signatures made by Sigstore's JavaScript tools and node:crypto (tests/sigstore/sign.js, offline:
@sigstore/sign against @sigstore/mock's CA and logs), verified by shared.core.trust with
sigstore-python against the mock's trusted root: keyless DSSE statements and message signatures, and
cosign key signatures (ECDSA P-256/P-384/P-521, RSA, Ed25519) in the tag scheme and in bundles."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.core import trust as core
from tests.signing import IDENTITY, ISSUER, artifact, bundle_manifest, cosign_manifest, sha256, sign, simple_signing

IMAGE = "sha256:" + "a1" * 32
OTHER = "sha256:" + "b2" * 32
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_INDEX, "manifests": []}).encode()
KEYS = {"p256": {"type": "ec", "curve": "P-256"}, "p384": {"type": "ec", "curve": "P-384"},
        "p521": {"type": "ec", "curve": "P-521"}, "rsa": {"type": "rsa", "bits": 3072}, "ed25519": {"type": "ed25519"}}
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("signed")
    (out / "manifest.json").write_bytes(MANIFEST)
    (out / "image.payload").write_bytes(simple_signing(IMAGE))
    subjects = [{"name": "registry.example/acme/app", "digest": IMAGE}]
    summary = sign({
        "bundles": [
            {"name": "image", "kind": "dsse", "subjects": subjects, "predicateType": COSIGN_SIGN},
            {"name": "other", "kind": "dsse", "subjects": [{"name": "registry.example/acme/x", "digest": OTHER}]},
            {"name": "sbom", "kind": "dsse", "subjects": subjects, "predicateType": "https://cyclonedx.org/bom"},
            {"name": "message", "kind": "message", "file": str(out / "manifest.json")},
        ],
        "keys": [{"name": name, **spec, "payloads": [str(out / "image.payload")], "tlog": True,
                  "dsse": [{"subjects": subjects}, {"subjects": [{"name": "x", "digest": OTHER}]}]}
                 for name, spec in KEYS.items()] + [{"name": "stranger", "type": "ec", "curve": "P-256",
                                                     "payloads": [str(out / "image.payload")], "tlog": True}],
        "cosignKeyless": [{"name": "legacy", "payloads": [str(out / "image.payload")]}],
    }, out)
    summary["trust"] = core.SigstoreTrust(Path(summary["trustedRoot"]).read_bytes(), source="mock trusted root")
    return summary


SIGNER = core.Keyless(identity=IDENTITY, issuer=ISSUER)


def bundle(made, name: str) -> bytes:
    return Path(made["bundles"][name]).read_bytes()


def referrer(raw: bytes, location: str = "referrers:sha256:" + "c3" * 32) -> core.SignatureArtifact:
    manifest, blobs = bundle_manifest(raw, subject=IMAGE)
    return artifact(location, manifest, blobs)


def key(made, name: str, **options) -> core.CosignKey:
    return core.CosignKey(Path(made["keys"][name]["publicKey"]).read_text(), **options)


def tag_signature(made, name: str, payload: bytes = None, *, rekor: str = None) -> core.SignatureArtifact:
    """cosign's tag scheme for a key signature; ``rekor``: the SET bundle annotation of key ``rekor``."""
    annotations = {core.ANNOTATION_SIGNATURE: Path(made["keys"][name]["signatures"][0]).read_text()}
    if rekor:
        annotations[core.ANNOTATION_BUNDLE] = Path(made["keys"][rekor]["rekor"][0]).read_text()
    manifest, blobs = cosign_manifest([(payload or simple_signing(IMAGE), annotations)])
    return artifact("tag:" + IMAGE.replace(":", "-") + ".sig", manifest, blobs)


def legacy_keyless(made, **changes) -> core.SignatureArtifact:
    """cosign's legacy keyless tag scheme: signature, Fulcio certificate and Rekor SET bundle."""
    files = made["cosignKeyless"]["legacy"]
    annotations = {core.ANNOTATION_SIGNATURE: Path(files["signatures"][0]).read_text(),
                   core.ANNOTATION_CERTIFICATE: Path(files["certificates"][0]).read_text(),
                   core.ANNOTATION_BUNDLE: Path(files["rekor"][0]).read_text(), **changes}
    manifest, blobs = cosign_manifest([(simple_signing(IMAGE), annotations)])
    return artifact("tag:" + IMAGE.replace(":", "-") + ".sig", manifest, blobs)


def key_bundle(made, name: str, n: int = 0) -> bytes:
    return Path(made["keys"][name]["dsse"][n]).read_bytes()


# --- keyless ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("requirement", [
    SIGNER,
    core.Keyless(identity_regexp=r"https://github\.com/acme/app/\.github/workflows/release\.yml@refs/tags/v.+",
                 issuer=ISSUER),
    core.Keyless(identity=IDENTITY, issuer_regexp=r"https://token\.actions\.githubusercontent\.com"),
    core.Keyless(identity=IDENTITY, issuer=ISSUER, predicate_types=(COSIGN_SIGN,)),
])
def test_a_keyless_dsse_statement_for_the_image_verifies(made, requirement):
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "image"))], [requirement], made["trust"])
    assert verdict == core.Verification(core.VERIFIED, core.KIND_KEYLESS, IDENTITY, ISSUER,
                                        "referrers:sha256:" + "c3" * 32)


def test_a_keyless_message_signature_over_the_manifest_verifies(made):
    verdict = core.verify_image(sha256(MANIFEST), [referrer(bundle(made, "message"))], [SIGNER], made["trust"])
    assert verdict.status == core.VERIFIED and verdict.signer == IDENTITY


@pytest.mark.parametrize("requirement, words", [
    (core.Keyless(identity="https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v9", issuer=ISSUER),
     "certificate identity"),
    (core.Keyless(identity_regexp=r"https://github\.com/acme/app/.*@refs/heads/main", issuer=ISSUER),
     "certificate identity"),
    (core.Keyless(identity_regexp=r"acme/app", issuer=ISSUER), "certificate identity"),  # must match all of it
    (core.Keyless(identity=IDENTITY, issuer="https://accounts.google.com"), "issuer"),
    (core.Keyless(identity=IDENTITY, issuer_regexp=r"https://token\.actions\.githubusercontent\.co"), "issuer"),
])
def test_a_wrong_identity_or_issuer_is_invalid(made, requirement, words):
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "image"))], [requirement], made["trust"])
    assert verdict.status == core.INVALID and words in verdict.reason, verdict
    assert verdict.kind == core.KIND_KEYLESS and verdict.location.startswith("referrers:")


def test_a_tampered_statement_is_invalid(made):
    doc = json.loads(bundle(made, "other"))
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = IMAGE.split(":")[1]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    verdict = core.verify_image(IMAGE, [referrer(json.dumps(doc).encode())], [SIGNER], made["trust"])
    assert verdict.status == core.INVALID, verdict


def test_a_statement_about_another_image_is_a_mismatch(made):
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "other"))], [SIGNER], made["trust"])
    assert verdict.status == core.MISMATCH and OTHER in verdict.reason and verdict.signer == IDENTITY


def test_a_predicate_type_the_policy_does_not_accept_is_invalid(made):
    cosign_only = core.Keyless(identity=IDENTITY, issuer=ISSUER, predicate_types=(COSIGN_SIGN,))
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "sbom"))], [cosign_only], made["trust"])
    assert verdict.status == core.INVALID and "predicate type https://cyclonedx.org/bom" in verdict.reason
    both = [referrer(bundle(made, "sbom")), referrer(bundle(made, "image"), "referrers:sha256:" + "d4" * 32)]
    verdict = core.verify_image(IMAGE, both, [cosign_only], made["trust"])
    assert verdict.status == core.VERIFIED and verdict.location == "referrers:sha256:" + "d4" * 32


def test_keyless_without_a_trusted_root_is_invalid(made):
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "image"))], [SIGNER], None)
    assert verdict.status == core.INVALID and "no trusted root" in verdict.reason


def test_the_mock_bundles_are_not_trusted_by_the_public_good_root(made):
    from shared.adapters.signatures import public_good_trust

    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "image"))], [SIGNER], public_good_trust())
    assert verdict.status == core.INVALID, verdict


# --- cosign keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_cosign_key_signature_verifies(made, name):
    requirement = key(made, name)
    verdict = core.verify_image(IMAGE, [tag_signature(made, name)], [requirement], made["trust"])
    assert verdict == core.Verification(core.VERIFIED, core.KIND_COSIGN_KEY, requirement.key_id, None,
                                        "tag:" + IMAGE.replace(":", "-") + ".sig")
    assert requirement.key_id.startswith("sha256:") and len(requirement.key_id) == 71


@pytest.mark.parametrize("name", sorted(KEYS))
def test_another_key_is_invalid(made, name):
    verdict = core.verify_image(IMAGE, [tag_signature(made, name)], [key(made, "stranger")], made["trust"])
    assert verdict.status == core.INVALID and "does not verify" in verdict.reason


def test_a_tampered_payload_under_a_key_is_invalid(made):
    forged = simple_signing(OTHER)
    verdict = core.verify_image(OTHER, [tag_signature(made, "p256", payload=forged)], [key(made, "p256")],
                                made["trust"])
    assert verdict.status == core.INVALID and "does not verify" in verdict.reason


def test_a_key_signature_copied_to_another_image_is_a_mismatch(made):
    copied = tag_signature(made, "ed25519")  # the payload names IMAGE; served for OTHER
    verdict = core.verify_image(OTHER, [copied], [key(made, "ed25519")], made["trust"])
    assert verdict.status == core.MISMATCH and IMAGE in verdict.reason


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_key_signed_dsse_bundle_verifies_and_one_for_another_image_is_a_mismatch(made, name):
    verdict = core.verify_image(IMAGE, [referrer(key_bundle(made, name))], [key(made, name)], made["trust"])
    assert verdict.status == core.VERIFIED and verdict.kind == core.KIND_COSIGN_KEY
    verdict = core.verify_image(IMAGE, [referrer(key_bundle(made, name, 1))], [key(made, name)], made["trust"])
    assert verdict.status == core.MISMATCH
    verdict = core.verify_image(IMAGE, [referrer(key_bundle(made, name))], [key(made, "stranger")], made["trust"])
    assert verdict.status == core.INVALID


def test_signatures_of_the_other_kind_are_invalid_not_unsigned(made):
    verdict = core.verify_image(IMAGE, [tag_signature(made, "p256")], [SIGNER], made["trust"])
    assert verdict.status == core.INVALID and "key-signed" in verdict.reason
    verdict = core.verify_image(IMAGE, [referrer(bundle(made, "image"))], [key(made, "p256")], made["trust"])
    assert verdict.status == core.INVALID and "keyless bundle" in verdict.reason


def test_a_required_transparency_log_entry_must_be_there(made):
    verdict = core.verify_image(IMAGE, [tag_signature(made, "p256")], [key(made, "p256", require_tlog=True)],
                                made["trust"])
    assert verdict.status == core.INVALID and "no Rekor bundle" in verdict.reason


@pytest.mark.parametrize("name", sorted(KEYS))
def test_a_logged_key_signature_verifies_with_the_transparency_log_required(made, name):
    verdict = core.verify_image(IMAGE, [tag_signature(made, name, rekor=name)], [key(made, name, require_tlog=True)],
                                made["trust"])
    assert verdict.status == core.VERIFIED, verdict


def test_a_log_entry_of_another_signature_or_an_untrusted_log_is_invalid(made):
    # the SET of the stranger's entry is genuine, but the entry is about another key and signature
    verdict = core.verify_image(IMAGE, [tag_signature(made, "p256", rekor="stranger")],
                                [key(made, "p256", require_tlog=True)], made["trust"])
    assert verdict.status == core.INVALID and "another signature or key" in verdict.reason
    from shared.adapters.signatures import public_good_trust

    verdict = core.verify_image(IMAGE, [tag_signature(made, "p256", rekor="p256")],
                                [key(made, "p256", require_tlog=True)], public_good_trust())
    assert verdict.status == core.INVALID and "Rekor SET does not verify" in verdict.reason


# --- cosign's legacy keyless tag scheme -------------------------------------------------------------


def test_a_legacy_keyless_tag_signature_verifies(made):
    verdict = core.verify_image(IMAGE, [legacy_keyless(made)], [SIGNER], made["trust"])
    assert verdict == core.Verification(core.VERIFIED, core.KIND_KEYLESS, IDENTITY, ISSUER,
                                        "tag:" + IMAGE.replace(":", "-") + ".sig")
    assert core.verify_image(OTHER, [legacy_keyless(made)], [SIGNER], made["trust"]).status == core.MISMATCH


def test_a_legacy_keyless_tag_signature_is_refused_when_something_does_not_hold(made):
    wrong = core.Keyless(identity=IDENTITY, issuer="https://accounts.google.com")
    assert "issuer" in core.verify_image(IMAGE, [legacy_keyless(made)], [wrong], made["trust"]).reason
    # a genuine log entry, but of another signature: the log does not vouch for this one
    borrowed = legacy_keyless(made, **{core.ANNOTATION_BUNDLE: Path(made["keys"]["stranger"]["rekor"][0]).read_text()})
    verdict = core.verify_image(IMAGE, [borrowed], [SIGNER], made["trust"])
    assert verdict.status == core.INVALID and "Rekor entry is about another" in verdict.reason
    without = legacy_keyless(made, **{core.ANNOTATION_BUNDLE: ""})  # cosign --tlog-upload=false
    assert "no Rekor bundle" in core.verify_image(IMAGE, [without], [SIGNER], made["trust"]).reason
    from shared.adapters.signatures import public_good_trust

    verdict = core.verify_image(IMAGE, [legacy_keyless(made)], [SIGNER], public_good_trust())
    assert verdict.status == core.INVALID and "Rekor SET does not verify" in verdict.reason
    # another certificate (a key-signing one from the same CA would do; the production one is handy)
    production = (Path(__file__).resolve().parents[1] / "fixtures" / "sigstore" / "production" /
                  "server_image-v0.0.14.sig.manifest.json")
    other_cert = json.loads(production.read_text())["layers"][0]["annotations"][core.ANNOTATION_CERTIFICATE]
    verdict = core.verify_image(IMAGE, [legacy_keyless(made, **{core.ANNOTATION_CERTIFICATE: other_cert})],
                                [core.Keyless(identity_regexp=".*", issuer=ISSUER)], made["trust"])
    assert verdict.status == core.INVALID and "certificate" in verdict.reason


def test_any_requirement_that_verifies_is_enough(made):
    requirements = [key(made, "stranger"), core.Keyless(identity="someone", issuer=ISSUER), key(made, "rsa")]
    artifacts = [referrer(bundle(made, "image")), tag_signature(made, "rsa")]
    verdict = core.verify_image(IMAGE, artifacts, requirements, made["trust"])
    assert verdict.status == core.VERIFIED and verdict.signer == key(made, "rsa").key_id


def test_a_mismatch_is_reported_before_plain_failures(made):
    artifacts = [tag_signature(made, "p256"), referrer(bundle(made, "other"))]
    verdict = core.verify_image(IMAGE, artifacts, [SIGNER], made["trust"])
    assert verdict.status == core.MISMATCH and verdict.reason.startswith("2 signatures, none verified")
