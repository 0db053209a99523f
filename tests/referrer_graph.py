"""Upstream referrer graphs for the tests, and a reader of the emulated ACR's data plane that is not the
code under test (an access token from the ACR exchange, as the contract tests get one)."""
from __future__ import annotations

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from devstack import oci

SBOM_TYPE = "application/spdx+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
COSIGN_ATT = "application/vnd.dev.cosign.artifact.att.v1+json"


class Acr:
    """The emulated ACR's data plane, read with an access token from the ACR exchange."""

    def __init__(self, stack):
        self.stack = stack
        self.http = httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), timeout=60)

    def token(self, repository: str) -> str:
        with pytest.MonkeyPatch.context() as patch:
            self.stack.apply_env(patch)
            aad = ManagedIdentityCredential().get_token("https://containerregistry.azure.net/.default").token
        refresh = self.http.post("/oauth2/exchange", data={"grant_type": "access_token", "access_token": aad,
                                                           "service": self.stack.login_server})
        access = self.http.post("/oauth2/token", data={
            "grant_type": "refresh_token", "service": self.stack.login_server,
            "scope": f"repository:{repository}:pull", "refresh_token": refresh.json()["refresh_token"]})
        assert access.status_code == 200, access.text
        return access.json()["access_token"]

    def referrers(self, repository: str, digest: str) -> list[dict]:
        answer = self.http.get(f"/v2/{repository}/referrers/{digest}",
                               headers={"Authorization": f"Bearer {self.token(repository)}"})
        assert answer.status_code == 200, answer.text
        return answer.json()["manifests"]

    def tag_digest(self, repository: str, tag: str):
        answer = self.http.head(f"/v2/{repository}/manifests/{tag}",
                                headers={"Authorization": f"Bearer {self.token(repository)}",
                                         "Accept": oci.MEDIA_OCI_MANIFEST})
        return answer.headers["docker-content-digest"] if answer.status_code == 200 else None


def sbom(subject: dict, text: str) -> oci.Artifact:
    return oci.build_artifact(SBOM_TYPE, [oci.ArtifactLayer.of("application/spdx+json", text.encode())],
                              subject=subject)


def signed_image(stack, repository: str, seed: str) -> tuple[oci.ImageLayout, oci.Artifact, str]:
    """Upstream: an image (tag 1.0), an SBOM referrer (tag schema fallback) and a cosign ``.sig`` tag."""
    up = stack.upstream_host
    image = oci.build_image(repository, seed=seed, layers=1)
    oci.push(image, f"{up}/{repository}:1.0", cert_dir=stack.certs_dir)
    document = sbom(oci.layout_descriptor(image), f"sbom of {seed}")
    assert oci.push_artifact(document, f"{up}/{repository}", cert_dir=stack.certs_dir).referrers_tag
    payload = oci.simple_signing_payload(f"{up}/{repository}", image.digest)
    sig = oci.push_cosign([oci.cosign_signature_layer(payload, "c2lnbmF0dXJl")], f"{up}/{repository}", image.digest,
                          cert_dir=stack.certs_dir)
    return image, document, sig.digest
