"""Manifest GET and HEAD on the emulator's /v2/ are answered from the backing registry's storage
layout when it can be sure of distribution's answer (devstack.emulator.dataplane
``BackingRegistry.stored_manifest``): the answer must be the one distribution gives, byte for byte
(status, headers but Date/Server, body), request by request, for found and missing tags and
digests of every manifest type, and for the Accept headers distribution treats differently."""
from __future__ import annotations

import json
import uuid

import httpx
import pytest

from devstack import oci
from devstack.emulator.dataplane import MANIFEST_ACCEPT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def stored(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    prefix = f"stored-{uuid.uuid4().hex[:8]}"
    image = oci.build_image(f"{prefix}/app", seed="stored")
    index = oci.build_image(f"{prefix}/multi", seed="stored", platforms=("linux/amd64", "linux/arm64"))
    image_digest = oci.push(image, f"{stack.backing_host}/{prefix}/app:1.0", tls_verify=False)
    index_digest = oci.push(index, f"{stack.backing_host}/{prefix}/multi:1.0", tls_verify=False)
    # the same content as a Docker schema 2 manifest, under another tag
    docker = json.loads(image.raw)
    docker["mediaType"] = DOCKER_MANIFEST
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in docker["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    with httpx.Client(base_url=stack.backing_url, timeout=30) as client:
        put = client.put(f"/v2/{prefix}/app/manifests/docker", content=oci.canonical_json(docker),
                         headers={"Content-Type": DOCKER_MANIFEST})
        put.raise_for_status()
    return prefix, image_digest, index_digest, put.headers["Docker-Content-Digest"]


def _token(stack, repositories: list[str]) -> str:
    emu = stack.emulator
    aad = emu.auth.issue_identity_token("https://containerregistry.azure.net")["access_token"]
    refresh = emu.auth.issue_refresh_token(aad, emu.login_server)
    return emu.auth.issue_access_token(refresh, emu.login_server,
                                       " ".join(f"repository:{r}:pull" for r in repositories))


def _comparable(response: httpx.Response) -> tuple:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in ("date", "server"))
    return response.status_code, headers, response.content


def _kind(comparable: tuple) -> tuple:
    status, headers, _ = comparable
    return status, dict(headers).get("content-type")


def test_manifest_answers_are_distributions_own(stack, stored):
    prefix, image_digest, index_digest, docker_digest = stored
    app, multi, gone = f"{prefix}/app", f"{prefix}/multi", f"{prefix}/never"
    token = _token(stack, [app, multi, gone])
    paths = [
        f"/v2/{app}/manifests/1.0",                       # OCI manifest by tag
        f"/v2/{app}/manifests/{image_digest}",            # ... by digest
        f"/v2/{multi}/manifests/1.0",                     # OCI index
        f"/v2/{multi}/manifests/{index_digest}",
        f"/v2/{app}/manifests/docker",                    # Docker schema 2
        f"/v2/{app}/manifests/{docker_digest}",
        f"/v2/{app}/manifests/2.0",                       # no such tag
        f"/v2/{gone}/manifests/1.0",                      # no such repository
        f"/v2/{app}/manifests/sha256:{'0' * 64}",         # no such digest
    ]
    accepts = [
        MANIFEST_ACCEPT,
        f"{OCI_MANIFEST};q=0.9, {DOCKER_MANIFEST}",      # parameters on a media type
        DOCKER_MANIFEST,                                   # an OCI manifest not accepted: distribution refuses
        "application/vnd.oci.image.manifest.v1+json",     # an index not accepted: distribution picks a platform
        None,                                              # no Accept at all
    ]
    compared = 0
    with httpx.Client(base_url=stack.backing_url, timeout=30) as backing, \
            httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), timeout=30,
                         headers={"Authorization": f"Bearer {token}"}) as emulator:
        for method in ("HEAD", "GET"):
            for path in paths:
                for accept in accepts:
                    headers = {"Accept": accept} if accept else {}
                    expected = _comparable(backing.request(method, path, headers=headers))
                    answered = _comparable(emulator.request(method, path, headers=headers))
                    if expected != _comparable(backing.request(method, path, headers=headers)):
                        # distribution's own answer changes per request (a schema 1 manifest
                        # converted and signed on the fly): the same kind of answer is all to ask
                        expected, answered = _kind(expected), _kind(answered)
                    assert answered == expected, (method, path, accept)
                    compared += 1
    assert compared == 2 * len(paths) * len(accepts)


def test_manifest_answers_from_storage_without_the_backing_registry(stack, stored):
    """The found and missing cases the plan reads are answered from storage: the backing
    registry never sees them (its log records every request it answers)."""
    prefix, image_digest, _, _ = stored
    app = f"{prefix}/app"
    token = _token(stack, [app])
    log = stack.workdir / "logs" / "registry-backing.log"
    before = log.read_text().count(prefix)
    with httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_ACCEPT}) as emulator:
        found = emulator.head(f"/v2/{app}/manifests/1.0")
        missing = emulator.head(f"/v2/{app}/manifests/nope")
        by_digest = emulator.get(f"/v2/{app}/manifests/{image_digest}")
        unauthorised = emulator.head(f"/v2/{app}/manifests/1.0", headers={"Authorization": ""})
    assert (found.status_code, missing.status_code, by_digest.status_code) == (200, 404, 200)
    assert found.headers["Docker-Content-Digest"] == image_digest
    assert oci.sha256_digest(by_digest.content) == image_digest
    assert unauthorised.status_code == 401 and "Bearer realm=" in unauthorised.headers["WWW-Authenticate"]
    assert log.read_text().count(prefix) == before
