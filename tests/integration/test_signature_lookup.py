"""Signatures found in the stand-in's upstream registries by shared.adapters.signatures and verified by
shared.core.trust: Sigstore bundles attached by @sigstore/oci (the tool GitHub's attest actions
use) to an image in the token-auth upstream, where Debian's docker-registry has no referrers API and
the referrers tag schema is used; and cosign's ``sha256-<hex>.sig`` tag scheme, pushed with skopeo."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devstack import oci
from shared.adapters.signatures import SignatureFinder
from shared.core import trust as core
from shared.services import Services
from tests.signing import IDENTITY, ISSUER, attach, cosign_manifest, push_manifest, sign, simple_signing

pytestmark = pytest.mark.timeout(300)

SIGNER = core.Keyless(identity=IDENTITY, issuer=ISSUER)


@pytest.fixture
def prefix():
    return f"sg{uuid.uuid4().hex[:8]}"


def auth_services(stack) -> Services:
    """docker.io mirrored to the token-auth upstream, with the stand-in's credentials (as test_source_auth)."""
    return Services.from_env({**stack.env, "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}",
                              "DOCKERHUB_USERNAME": stack.upstream_auth_user,
                              "DOCKERHUB_TOKEN": stack.upstream_auth_password})


def test_bundles_attached_with_sigstore_oci_are_found_and_verified(stack, seeded_auth, prefix, tmp_path):
    repository = f"{prefix}/app"
    image = oci.build_image(repository, platforms=oci.MULTI, seed=prefix)  # an index: what a tag names
    digest = oci.push(image, f"{stack.upstream_auth_host}/{repository}:1.0", cert_dir=stack.certs_dir,
                      creds=stack.upstream_auth_creds)
    (tmp_path / "index.json").write_bytes(image.raw)
    made = sign({"bundles": [
        {"name": "statement", "kind": "dsse", "predicateType": "https://slsa.dev/provenance/v1",
         "subjects": [{"name": f"{stack.upstream_auth_host}/{repository}", "digest": digest}]},
        {"name": "message", "kind": "message", "file": str(tmp_path / "index.json")},
    ]}, tmp_path / "made")
    attached = [attach(stack, repository, digest, made["bundles"][name],
                       annotations={"dev.sigstore.bundle.content": content})
                for name, content in (("statement", "dsse-envelope"), ("message", "message-signature"))]

    finder = SignatureFinder(auth_services(stack).source)
    lookup = finder.find("docker.io", repository, digest)
    assert lookup.referrers_api is False  # Debian's docker-registry: 404, so the tag schema was read
    assert sorted(a.location for a in lookup.artifacts) == sorted(f"referrers-tag:{d['digest']}" for d in attached)
    assert all(a.problem is None and len(a.blobs) == 1 for a in lookup.artifacts)

    trust = core.SigstoreTrust(Path(made["trustedRoot"]).read_bytes(), source="mock trusted root")
    for artifact in lookup.artifacts:
        verdict = core.verify_image(digest, [artifact], [SIGNER], trust)
        assert verdict == core.Verification(core.VERIFIED, core.KIND_KEYLESS, IDENTITY, ISSUER, artifact.location)
    wrong = core.Keyless(identity=IDENTITY.replace("acme", "evil"), issuer=ISSUER)
    assert core.verify_image(digest, lookup.artifacts, [wrong], trust).status == core.INVALID

    # the signatures belong to the index; one platform's manifest inside it has none of its own
    platform = image.images[0].manifest_digest
    platform_lookup = finder.find("docker.io", repository, platform)
    assert platform_lookup.artifacts == ()
    assert core.verify_image(platform, platform_lookup.artifacts, [SIGNER], trust).status == core.UNSIGNED


def test_the_cosign_tag_scheme_is_found_and_a_copied_signature_is_a_mismatch(stack, seeded, prefix, tmp_path):
    repository = f"{prefix}/tool"
    host = stack.upstream_host
    signed, copied_to, unsigned = (
        oci.push(oci.build_image(repository, seed=f"{prefix}-{n}"), f"{host}/{repository}:{n}",
                 cert_dir=stack.certs_dir) for n in ("signed", "copied", "unsigned"))
    payload = simple_signing(signed, f"{host}/{repository}")
    (tmp_path / "payload.json").write_bytes(payload)
    made = sign({"keys": [{"name": "release", "type": "ec", "curve": "P-256",
                           "payloads": [str(tmp_path / "payload.json")]},
                          {"name": "stranger", "type": "ed25519"}]}, tmp_path / "made")
    signature = Path(made["keys"]["release"]["signatures"][0]).read_text()
    manifest, blobs = cosign_manifest([(payload, {core.ANNOTATION_SIGNATURE: signature})])
    for image in (signed, copied_to):  # the second is someone copying a valid signature to another image
        push_manifest(stack, host, repository, image.replace(":", "-") + ".sig", manifest, blobs)

    release = core.CosignKey(Path(made["keys"]["release"]["publicKey"]).read_text())
    finder = SignatureFinder(Services.from_env(dict(stack.env)).source)

    lookup = finder.find(host, repository, signed)
    [artifact] = lookup.artifacts
    assert artifact.location == "tag:" + signed.replace(":", "-") + ".sig" and artifact.manifest == manifest
    assert core.verify_image(signed, lookup.artifacts, [release]) == core.Verification(
        core.VERIFIED, core.KIND_COSIGN_KEY, release.key_id, None, artifact.location)
    stranger = core.CosignKey(Path(made["keys"]["stranger"]["publicKey"]).read_text())
    assert core.verify_image(signed, lookup.artifacts, [stranger]).status == core.INVALID

    copied = core.verify_image(copied_to, finder.find(host, repository, copied_to).artifacts, [release])
    assert copied.status == core.MISMATCH and signed in copied.reason

    nothing = finder.find(host, repository, unsigned)
    assert nothing.artifacts == ()
    assert core.verify_image(unsigned, nothing.artifacts, [release]).status == core.UNSIGNED
