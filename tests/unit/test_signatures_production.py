"""Real production signatures (tests/fixtures/sigstore/production/README.md: who signed them, where
they were copied from) verified offline against the public-good trusted root sigstore-python ships,
and refused with a wrong identity, a wrong issuer, a tampered payload and for another digest."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.adapters.signatures import public_good_trust
from shared.core import trust as core
from shared.core.trust.cosign import _simple_signing_digest

from tests.signing import artifact, bundle_manifest, cosign_manifest, sha256

PRODUCTION = Path(__file__).resolve().parents[1] / "fixtures" / "sigstore" / "production"
GITHUB = "https://token.actions.githubusercontent.com"
OTHER = "sha256:" + "0" * 64

# a message signature over a wheel's sha256 (sigstore-python's test assets)
WHEEL_DIGEST = "sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
WHEEL_SIGNER = core.Keyless(identity="https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml"
                                     "@refs/tags/v0.1.2", issuer=GITHUB)
# a DSSE in-toto statement about a conda package (sigstore-rs's test data)
CONDA_DIGEST = "sha256:3862a3677d33a45134a2ce3452b23f8f7459fe581cefbc3818272648cd987cfb"
CONDA_SIGNER = core.Keyless(identity="https://github.com/prefix-dev/sigstore-example/.github/workflows/action.yaml"
                                     "@refs/heads/main", issuer=GITHUB)
# cosign's tag scheme on Docker Hub, keyless, from a GitHub workflow
IMAGE_DIGEST = "sha256:adce22cdd04fa2b012209f2d048c883c66b7ab89eaadf4f596899fde52d3b0bd"
IMAGE_SIGNER = core.Keyless(
    identity_regexp=r"https://github\.com/salrashid123/go-bazel-github-workflow/\.github/workflows/release\.yaml"
                    r"@refs/tags/v[0-9.]+", issuer=GITHUB)


@pytest.fixture(scope="module")
def trust():
    return public_good_trust()


def read(name: str) -> bytes:
    return (PRODUCTION / name).read_bytes()


def bundle_artifact(raw: bytes) -> core.SignatureArtifact:
    media_type = json.loads(raw)["mediaType"]
    manifest, blobs = bundle_manifest(raw, media_type=media_type)
    return artifact("referrers:sha256:" + "1" * 64, manifest, blobs)


def cosign_artifact(manifest_name: str, payload_name: str) -> core.SignatureArtifact:
    manifest = read(manifest_name)
    payload = read(payload_name)
    return core.SignatureArtifact("tag:sha256-x.sig", manifest, {sha256(payload): payload})


def test_the_public_good_root_is_the_one_sigstore_python_ships(trust):
    assert trust.source.startswith("Sigstore public-good")
    assert {tlog.base_url for tlog in trust.root._inner.tlogs} >= {"https://rekor.sigstore.dev"}
    assert public_good_trust() is trust  # parsed once per process


def test_a_github_message_signature_bundle_verifies_offline(trust):
    verdict = core.verify_image(WHEEL_DIGEST, [bundle_artifact(read("rfc8785-0.1.2.whl.sigstore.json"))],
                                [WHEEL_SIGNER], trust)
    assert verdict == core.Verification(core.VERIFIED, core.KIND_KEYLESS, WHEEL_SIGNER.identity, GITHUB,
                                        "referrers:sha256:" + "1" * 64)


def test_a_github_dsse_statement_bundle_verifies_offline(trust):
    verdict = core.verify_image(CONDA_DIGEST, [bundle_artifact(read("signed-package-2.1.0.conda.dsse.sigstore.json"))],
                                [CONDA_SIGNER], trust)
    assert verdict.status == core.VERIFIED and verdict.signer == CONDA_SIGNER.identity


def test_a_keyless_cosign_tag_scheme_signature_verifies_offline(trust):
    """The legacy form: certificate, chain and Rekor SET in annotations, no inclusion proof."""
    signature = cosign_artifact("server_image-v0.0.14.sig.manifest.json", "server_image-v0.0.14.simplesigning.json")
    verdict = core.verify_image(IMAGE_DIGEST, [signature], [IMAGE_SIGNER], trust)
    assert verdict.status == core.VERIFIED, verdict
    assert verdict.signer == ("https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/"
                              "release.yaml@refs/tags/v0.0.14")
    assert (verdict.issuer, verdict.kind, verdict.location) == (GITHUB, core.KIND_KEYLESS, "tag:sha256-x.sig")


@pytest.mark.parametrize("requirement, words", [
    (core.Keyless(identity="https://github.com/someone/else/.github/workflows/release.yml@refs/tags/v0.1.2",
                  issuer=GITHUB), "certificate identity"),
    (core.Keyless(identity=WHEEL_SIGNER.identity, issuer="https://accounts.google.com"), "issuer"),
    (core.Keyless(identity_regexp=r"https://github\.com/trailofbits/", issuer=GITHUB), "certificate identity"),
])
def test_a_wrong_identity_or_issuer_is_invalid(trust, requirement, words):
    """The last pattern matches the start of the identity only: patterns must match all of it."""
    verdict = core.verify_image(WHEEL_DIGEST, [bundle_artifact(read("rfc8785-0.1.2.whl.sigstore.json"))],
                                [requirement], trust)
    assert verdict.status == core.INVALID and words in verdict.reason, verdict


def test_a_wrong_identity_is_invalid_for_the_cosign_tag_scheme_too(trust):
    signature = cosign_artifact("server_image-v0.0.14.sig.manifest.json", "server_image-v0.0.14.simplesigning.json")
    wrong = core.Keyless(identity_regexp=r"https://github\.com/salrashid123/other/.*", issuer=GITHUB)
    verdict = core.verify_image(IMAGE_DIGEST, [signature], [wrong], trust)
    assert verdict.status == core.INVALID and "certificate identity" in verdict.reason


def test_a_tampered_dsse_statement_is_invalid(trust):
    """A registry that swaps the statement's subject for the digest it wants to pass: the DSSE
    signature no longer verifies (a mismatch would need a valid signature)."""
    doc = json.loads(read("signed-package-2.1.0.conda.dsse.sigstore.json"))
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = OTHER.split(":")[1]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    verdict = core.verify_image(OTHER, [bundle_artifact(json.dumps(doc).encode())], [CONDA_SIGNER], trust)
    assert verdict.status == core.INVALID, verdict


def test_a_tampered_message_digest_is_invalid(trust):
    doc = json.loads(read("rfc8785-0.1.2.whl.sigstore.json"))
    doc["messageSignature"]["messageDigest"]["digest"] = base64.b64encode(bytes.fromhex(OTHER[7:])).decode()
    verdict = core.verify_image(OTHER, [bundle_artifact(json.dumps(doc).encode())], [WHEEL_SIGNER], trust)
    assert verdict.status == core.INVALID, verdict


def test_a_tampered_cosign_payload_is_invalid(trust):
    """A hostile registry serving a payload for another digest, with a manifest that names it (so
    the blob's own digest checks out): the signature does not cover it."""
    doc = json.loads(read("server_image-v0.0.14.sig.manifest.json"))
    payload = read("server_image-v0.0.14.simplesigning.json").replace(IMAGE_DIGEST[7:].encode(), OTHER[7:].encode())
    layer = doc["layers"][0]
    layer.update(digest=sha256(payload), size=len(payload))
    manifest, blobs = cosign_manifest([(payload, layer["annotations"])])
    verdict = core.verify_image(OTHER, [artifact("tag:sha256-x.sig", manifest, blobs)], [IMAGE_SIGNER], trust)
    assert verdict.status == core.INVALID, verdict


def test_a_tampered_rekor_set_is_invalid(trust):
    doc = json.loads(read("server_image-v0.0.14.sig.manifest.json"))
    annotations = doc["layers"][0]["annotations"]
    rekor = json.loads(annotations[core.ANNOTATION_BUNDLE])
    rekor["Payload"]["integratedTime"] += 3600  # a later signing time, inside no certificate's life
    annotations[core.ANNOTATION_BUNDLE] = json.dumps(rekor)
    payload = read("server_image-v0.0.14.simplesigning.json")
    manifest, blobs = cosign_manifest([(payload, annotations)])
    verdict = core.verify_image(IMAGE_DIGEST, [artifact("tag:sha256-x.sig", manifest, blobs)], [IMAGE_SIGNER], trust)
    assert verdict.status == core.INVALID and "SET" in verdict.reason, verdict


@pytest.mark.parametrize("name, digest, signer", [
    ("rfc8785-0.1.2.whl.sigstore.json", WHEEL_DIGEST, WHEEL_SIGNER),
    ("signed-package-2.1.0.conda.dsse.sigstore.json", CONDA_DIGEST, CONDA_SIGNER),
])
def test_a_valid_bundle_attached_to_another_digest_is_a_mismatch(trust, name, digest, signer):
    verdict = core.verify_image(OTHER, [bundle_artifact(read(name))], [signer], trust)
    assert verdict.status == core.MISMATCH, verdict
    assert verdict.signer == signer.identity and digest in verdict.reason and OTHER in verdict.reason


def test_a_valid_cosign_signature_copied_to_another_image_is_a_mismatch(trust):
    signature = cosign_artifact("server_image-v0.0.14.sig.manifest.json", "server_image-v0.0.14.simplesigning.json")
    verdict = core.verify_image(OTHER, [signature], [IMAGE_SIGNER], trust)
    assert verdict.status == core.MISMATCH and IMAGE_DIGEST in verdict.reason


def test_a_mock_ca_root_does_not_trust_production_signatures(tmp_path):
    """The same signatures against a root of other CAs and logs: invalid (untrusted), not verified."""
    from tests.signing import sign

    other = core.SigstoreTrust(Path(sign({"bundles": []}, tmp_path)["trustedRoot"]).read_bytes())
    for name, digest, signer in [("rfc8785-0.1.2.whl.sigstore.json", WHEEL_DIGEST, WHEEL_SIGNER),
                                 ("signed-package-2.1.0.conda.dsse.sigstore.json", CONDA_DIGEST, CONDA_SIGNER)]:
        verdict = core.verify_image(digest, [bundle_artifact(read(name))], [signer], other)
        assert verdict.status == core.INVALID, verdict
    signature = cosign_artifact("server_image-v0.0.14.sig.manifest.json", "server_image-v0.0.14.simplesigning.json")
    verdict = core.verify_image(IMAGE_DIGEST, [signature], [IMAGE_SIGNER], other)
    assert verdict.status == core.INVALID and "SET" in verdict.reason


def test_cosign_1_key_signature_layout_as_docker_hub_served_it():
    """cosign 1.13's `.sig` manifest (bytes as served: its digest is the one Docker Hub answered):
    one simple-signing layer with the signature annotation, no certificate, no Rekor bundle."""
    manifest = read("cosign1-t1.sig.manifest.json")
    payload = read("cosign1-t1.simplesigning.json")
    assert sha256(manifest) == "sha256:7ebe8964225fa4619b53aa35416ef0246c037e36ddf81776b21b15e1dda2262b"
    plan = core.plan_artifact(manifest, "tag")
    assert plan.kind == "cosign" and [d.digest for d in plan.fetch] == [sha256(payload)]
    [signature] = core.candidates(core.SignatureArtifact("tag:x", manifest, {sha256(payload): payload}))
    assert isinstance(signature, core.CosignSignature)
    assert signature.certificate_pem is None and signature.rekor_bundle is None and len(signature.signature) > 64
    assert _simple_signing_digest(signature.payload) == (
        "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d")
    # its key was not published: a keyless policy refuses it as key-signed, any other key as not its own
    verdict = core.verify_image("sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d",
                                [core.SignatureArtifact("tag:x", manifest, {sha256(payload): payload})],
                                [IMAGE_SIGNER], None)
    assert verdict.status == core.INVALID and "key-signed" in verdict.reason


def test_the_keyless_tag_scheme_layout_as_docker_hub_served_it():
    manifest = read("server_image-v0.0.14.sig.manifest.json")
    payload = read("server_image-v0.0.14.simplesigning.json")
    [signature] = core.candidates(core.SignatureArtifact("tag:x", manifest, {sha256(payload): payload}))
    assert signature.certificate_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert signature.chain_pem.count("BEGIN CERTIFICATE") == 2
    assert json.loads(signature.rekor_bundle)["Payload"]["logIndex"] == 924321775
    assert _simple_signing_digest(signature.payload) == IMAGE_DIGEST
