"""Contract tests of the ACR emulator core: managed identity, ARM registry + importImage, the ACR
data plane, registry events and fault injection, checked against the public fixtures in
AIRLOCK_AZURE_FIXTURES (default /work/shared/fixtures/azure) and the unmodified Azure SDKs.

``local_stack`` starts what these tests need (one CA, an upstream TLS docker-registry, the backing
docker-registry, the emulator); it is the one piece to swap for the shared session fixture.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import secrets
import socket
import subprocess
import tarfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import jwt
import pytest
import requests
import trustme
import yaml
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import HttpResponseError, IncompleteReadError, ResourceNotFoundError, ServiceResponseError
from azure.identity import DefaultAzureCredential
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import ImportImageParameters, ImportSource, ImportSourceCredentials

from devstack.emulator.server import ServerHandle, start_in_thread
from devstack.emulator.state import Emulator, EmulatorConfig
from tests.fixture_paths import AZURE_FIXTURES

FIXTURES = Path(os.environ.get("AIRLOCK_AZURE_FIXTURES", AZURE_FIXTURES))
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"  # the fixtures' target registry
RESOURCE_GROUP, REGISTRY, LOCATION = "myResourceGroup", "myRegistry", "westus"
API_VERSION = "2025-11-01"
ARM_SCOPE = "https://management.azure.com/.default"
ACR_AUDIENCE = "https://containerregistry.azure.net"
LATENCY = 0.2
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def fixture(relative: str) -> dict:
    return json.loads((FIXTURES / relative).read_text())


def key_paths(value, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return set()
    paths = set()
    for key, item in value.items():
        paths |= {prefix + key} | key_paths(item, f"{prefix}{key}.")
    return paths


# --- a tiny deterministic OCI layout: one single-platform image and one two-platform index -------


def _blob(root: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def _image(root: Path, arch: str, text: str) -> dict:
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(text), 0
        archive.addfile(info, io.BytesIO(text.encode()))
    layer = gzip.compress(tar.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()
    config = json.dumps(
        {"architecture": arch, "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]}},
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _blob(root, config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _blob(root, layer),
                        "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    return {"mediaType": OCI_MANIFEST, "digest": _blob(root, manifest), "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"}}


def write_oci_layout(root: Path) -> dict[str, str]:
    """Layout with refs 'single' (amd64 image) and 'multi' (amd64+arm64 index); returns ref -> digest."""
    single = _image(root, "amd64", "single")
    platforms = [_image(root, "amd64", "multi amd64"), _image(root, "arm64", "multi arm64")]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms}, sort_keys=True).encode()
    refs = {
        "single": {k: v for k, v in single.items() if k != "platform"},
        "multi": {"mediaType": OCI_INDEX, "digest": _blob(root, index), "size": len(index)},
    }
    for name, descriptor in refs.items():
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": name}
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": list(refs.values())}))
    return {name: d["digest"] for name, d in refs.items()} | {"multi/arm64": platforms[1]["digest"]}


# --- the local stack ------------------------------------------------------------------------------


@dataclass
class LocalStack:
    emu: Emulator
    ca_pem: Path
    ca_dir: Path
    upstream: str  # host:port, TLS
    private: str  # host:port, TLS + basic auth (PRIVATE_USER, private_password)
    private_password: str
    backing: str  # host:port, plain HTTP
    digests: dict[str, str]


PRIVATE_USER = "puller"


def _htpasswd(path: Path, user: str, password: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt; docker-registry accepts only bcrypt

        path.write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _registry(tmp: Path, name: str, port: int, ca_pem: Path, *, tls: tuple[Path, Path] | None = None,
              notify: str | None = None, htpasswd: Path | None = None) -> subprocess.Popen:
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp / name)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if tls:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if htpasswd:
        config["auth"] = {"htpasswd": {"realm": "private", "path": str(htpasswd)}}
    if notify:
        config["notifications"] = {"endpoints": [{"name": "emulator", "url": notify, "timeout": "2s",
                                                  "threshold": 3, "backoff": "250ms"}]}
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "SSL_CERT_FILE": str(ca_pem)})


def _wait_ready(url: str, process: subprocess.Popen, verify: str | bool) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url} exited with {process.returncode}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, verify=verify, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(url)


def skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True).stdout


@contextlib.contextmanager
def local_stack(tmp: Path) -> Iterator[LocalStack]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem, ca_dir = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key", tmp / "ca.d"
    ca.cert_pem.write_to_path(str(ca_pem))
    ca_dir.mkdir()
    ca.cert_pem.write_to_path(str(ca_dir / "ca.crt"))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(cert_pem), append=True)
    cert.private_key_pem.write_to_path(str(key_pem))

    backing_port, upstream_port, private_port = free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(12)
    emu = Emulator(EmulatorConfig(
        subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP, registry_name=REGISTRY, location=LOCATION,
        backing_url=f"http://127.0.0.1:{backing_port}", ca_cert_path=str(ca_pem), import_latency=LATENCY,
    ))
    processes: list[subprocess.Popen] = []
    handle: ServerHandle | None = None
    try:
        handle = start_in_thread(emu, str(cert_pem), str(key_pem))
        processes.append(_registry(tmp, "backing", backing_port, ca_pem,
                                   notify=f"{emu.base_url}/_devstack/registry-notifications"))
        processes.append(_registry(tmp, "upstream", upstream_port, ca_pem, tls=(cert_pem, key_pem)))
        processes.append(_registry(tmp, "private", private_port, ca_pem, tls=(cert_pem, key_pem),
                                   htpasswd=_htpasswd(tmp / "htpasswd", PRIVATE_USER, password)))
        _wait_ready(f"http://127.0.0.1:{backing_port}/v2/", processes[0], False)
        _wait_ready(f"https://127.0.0.1:{upstream_port}/v2/", processes[1], str(ca_pem))
        _wait_ready(f"https://{PRIVATE_USER}:{password}@127.0.0.1:{private_port}/v2/", processes[2], str(ca_pem))

        upstream, private = f"127.0.0.1:{upstream_port}", f"127.0.0.1:{private_port}"
        digests = write_oci_layout(tmp / "layout")
        for ref, repository in (("single", "lib/single:v1"), ("multi", "lib/multi:v1")):
            skopeo("copy", "--all", "--preserve-digests", "--dest-cert-dir", str(ca_dir),
                   f"oci:{tmp / 'layout'}:{ref}", f"docker://{upstream}/{repository}")
        skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(ca_dir),
               "--dest-creds", f"{PRIVATE_USER}:{password}", f"oci:{tmp / 'layout'}:single",
               f"docker://{private}/lib/single:v1")
        yield LocalStack(emu, ca_pem, ca_dir, upstream, private, password, f"127.0.0.1:{backing_port}", digests)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
        if handle is not None:
            handle.stop()


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[LocalStack]:
    with local_stack(tmp_path_factory.mktemp("emulator")) as running, pytest.MonkeyPatch.context() as patch:
        patch.setenv("IDENTITY_ENDPOINT", f"{running.emu.base_url}/msi/token")
        patch.setenv("IDENTITY_HEADER", running.emu.config.identity_header)
        patch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_pem))
        for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "MSI_ENDPOINT"):
            patch.delenv(name, raising=False)
        yield running


@pytest.fixture(autouse=True)
def _reset(env):
    env.emu.faults.clear()
    yield
    env.emu.faults.clear()
    env.emu.config.import_latency = LATENCY


@pytest.fixture(scope="module")
def credential(env):
    return DefaultAzureCredential()


@pytest.fixture(scope="module")
def mgmt(env, credential):
    return ContainerRegistryManagementClient(credential, SUBSCRIPTION, base_url=env.emu.base_url,
                                             credential_scopes=[ARM_SCOPE])


@pytest.fixture(scope="module")
def arm(env, credential) -> requests.Session:
    session = requests.Session()
    session.verify = str(env.ca_pem)
    session.headers["Authorization"] = f"Bearer {credential.get_token(ARM_SCOPE).token}"
    return session


def registry_url(env: LocalStack, suffix: str = "") -> str:
    return env.emu.base_url + env.emu.registry_id + suffix


def import_image(mgmt, source_image: str, *, registry_uri: str | None = None, resource_id: str | None = None,
                 target_tags=None, untagged=None, mode: str = "NoForce", credentials=None) -> None:
    parameters = ImportImageParameters(
        source=ImportSource(registry_uri=registry_uri, resource_id=resource_id, source_image=source_image,
                            credentials=credentials),
        target_tags=target_tags, untagged_target_repositories=untagged, mode=mode,
    )
    assert mgmt.registries.begin_import_image(RESOURCE_GROUP, REGISTRY, parameters).result() is None


def backing_digest(env: LocalStack, reference: str) -> str:
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{env.backing}/{reference}")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def poll(session: requests.Session, location: str, deadline: float = 20.0) -> requests.Response:
    end = time.monotonic() + deadline
    while (response := session.get(location)).status_code == 202 and time.monotonic() < end:
        time.sleep(0.1)
    return response


# --- managed identity ----------------------------------------------------------------------------


def test_managed_identity_endpoint_speaks_app_service_protocol(env):
    url, header = f"{env.emu.base_url}/msi/token", env.emu.config.identity_header
    params = {"resource": "https://management.azure.com", "api-version": "2019-08-01"}
    ok = requests.get(url, params=params, headers={"X-IDENTITY-HEADER": header}, verify=str(env.ca_pem))
    assert ok.status_code == 200
    body = ok.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["token_type"] == "Bearer" and body["resource"] == params["resource"]
    assert int(body["expires_on"]) > time.time() + 3000
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == params["resource"] and claims["exp"] == int(body["expires_on"])

    missing = requests.get(url, params=params, verify=str(env.ca_pem))
    wrong = requests.get(url, params=params, headers={"X-IDENTITY-HEADER": "nope"}, verify=str(env.ca_pem))
    old_api = requests.get(url, params={**params, "api-version": "2017-09-01"}, headers={"X-IDENTITY-HEADER": header},
                           verify=str(env.ca_pem))
    assert (missing.status_code, wrong.status_code, old_api.status_code) == (400, 401, 400)
    assert set(wrong.json()) >= {"statusCode", "message"}


def test_default_azure_credential_gets_tokens_from_the_emulator(credential):
    token = credential.get_token(ARM_SCOPE)
    assert jwt.decode(token.token, options={"verify_signature": False})["aud"] == "https://management.azure.com"
    assert token.expires_on > time.time()


# --- ARM: auth, api-version, resources -------------------------------------------------------------


def test_arm_requires_a_bearer_token_for_the_arm_audience(env, credential):
    url, params = registry_url(env), {"api-version": API_VERSION}
    acr_token = credential.get_token(f"{ACR_AUDIENCE}/.default").token
    cases = {None: "AuthenticationFailed", "Bearer not-a-jwt": "InvalidAuthenticationToken",
             f"Bearer {acr_token}": "InvalidAuthenticationTokenAudience"}
    for authorization, code in cases.items():
        headers = {"Authorization": authorization} if authorization else {}
        response = requests.get(url, params=params, headers=headers, verify=str(env.ca_pem))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_api_version_and_unknown_resources(env, arm):
    assert arm.get(registry_url(env)).json()["error"]["code"] == "MissingApiVersionParameter"
    unsupported = arm.get(registry_url(env), params={"api-version": "2019-05-01"})
    assert (unsupported.status_code, unsupported.json()["error"]["code"]) == (400, "NoRegisteredProviderFound")
    for api in ("2025-04-01", "2025-11-01", "2026-01-01-preview"):
        assert arm.get(registry_url(env), params={"api-version": api}).status_code == 200
    elsewhere = [
        registry_url(env).replace(f"registries/{REGISTRY}", "registries/otherRegistry"),
        registry_url(env).replace(f"resourceGroups/{RESOURCE_GROUP}", "resourceGroups/otherGroup"),
        registry_url(env).replace(SUBSCRIPTION, "11111111-1111-1111-1111-111111111111"),
        registry_url(env, "/replications/eastus"),
    ]
    for url in elsewhere:
        response = arm.get(url, params={"api-version": API_VERSION})
        assert (response.status_code, response.json()["error"]["code"]) == (404, "ResourceNotFound"), url


def test_registry_get_matches_the_fixture(env, arm, mgmt):
    example = fixture("arm/registries/RegistryGet.2025-04-01.json")
    p = example["parameters"]
    url = (f"{env.emu.base_url}/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
           f"/providers/Microsoft.ContainerRegistry/registries/{p['registryName']}")
    response = arm.get(url, params={"api-version": p["api-version"]})
    assert response.status_code == 200
    expected, body = example["responses"]["200"]["body"], response.json()
    assert key_paths(body) == key_paths(expected) - {"tags.key"}
    assert body["id"] == expected["id"] and body["properties"]["loginServer"] == env.emu.login_server
    assert mgmt.registries.get(RESOURCE_GROUP, REGISTRY).login_server == env.emu.login_server


# --- ARM: importImage ------------------------------------------------------------------------------

IMPORT_EXAMPLES = sorted(p.name for p in (FIXTURES / "arm/import_image").glob("*.json"))


# What the public recordings of importImage show (facts, not copies): azure-sdk-for-js
# container-registry recordings (2021): 202, body `null` (Content-Length 4, application/json;
# charset=utf-8), Retry-After: 10, Location
# https://management.azure.com/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/locations/
# CENTRALUS/operationResults/registries-{uuid}?api-version=...; azure-cli
# test_acr_import_with_regional_endpoints.yaml (2026): the same Location shape (WESTUS), no
# Retry-After, and the poll answers 202 {"microsoft:azure-cli":"Pending","status":"Accepted"} with a
# Location, then 200 {"status":"Succeeded"}. The spec examples' Location (under resourceGroups, with
# operationStatuses/) is not what the service sends.
RECORDED_OPERATION = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.ContainerRegistry/locations/(?P<location>[A-Z0-9]+)"
    r"/operationResults/registries-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
JSON_UTF8 = "application/json; charset=utf-8"


def assert_recorded_202(env, response, api_version: str) -> None:
    assert response.status_code == 202
    assert response.content == b"null" and response.headers["Content-Type"] == JSON_UTF8
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc) == ("https", env.emu.login_server)
    match = RECORDED_OPERATION.fullmatch(location.path)
    assert match, location.path
    assert (match["sub"], match["location"]) == (SUBSCRIPTION, LOCATION.upper())
    assert location.query == f"api-version={api_version}"


@pytest.mark.parametrize("name", IMPORT_EXAMPLES)
def test_import_answers_the_fixture_examples_as_recorded(env, arm, name):
    example = fixture(f"arm/import_image/{name}")
    p = example["parameters"]
    url = (f"{env.emu.base_url}/subscriptions/{p['subscriptionId']}/resourceGroups/{p['resourceGroupName']}"
           f"/providers/Microsoft.ContainerRegistry/registries/{p['registryName']}/importImage")
    response = arm.post(url, params={"api-version": p["api-version"]}, json=p["parameters"])
    assert_recorded_202(env, response, p["api-version"])
    assert int(response.headers["Retry-After"]) >= 1  # the fast profile: the seconds left
    # The sources are a foreign registry or the internet: the operation fails, without network access.
    final = poll(arm, response.headers["Location"])
    assert final.status_code in (400, 404)
    assert set(final.json()["error"]) >= {"code", "message"}


BAD_BODIES = {
    "empty": ({}, "InvalidRequestContent"),
    "no-source-image": ({"source": {"registryUri": "127.0.0.1:1"}}, "InvalidRequestContent"),
    "no-registry": ({"source": {"sourceImage": "a:b"}}, "InvalidParameter"),
    "both-registries": ({"source": {"sourceImage": "a:b", "registryUri": "x", "resourceId": "/subscriptions/s"
                                    "/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/r"}},
                        "InvalidParameter"),
    "bad-resource-id": ({"source": {"sourceImage": "a:b", "resourceId": "/subscriptions/s"}}, "InvalidParameter"),
    "bad-mode": ({"source": {"sourceImage": "a:b", "registryUri": "x"}, "mode": "Sometimes"}, "InvalidParameter"),
    "digest-target": ({"source": {"sourceImage": "a:b", "registryUri": "x"}, "targetTags": ["a@sha256:" + "0" * 64]},
                      "InvalidParameter"),
    "target-not-list": ({"source": {"sourceImage": "a:b", "registryUri": "x"}, "targetTags": "a:b"},
                        "InvalidRequestContent"),
    "bad-source-image": ({"source": {"sourceImage": "a b", "registryUri": "x"}}, "InvalidParameter"),
    "bad-untagged": ({"source": {"sourceImage": "a:b", "registryUri": "x"}, "untaggedTargetRepositories": ["a:b"]},
                     "InvalidParameter"),
    "credentials-without-password": ({"source": {"sourceImage": "a:b", "registryUri": "x",
                                                 "credentials": {"username": "u"}}}, "InvalidRequestContent"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_import_bodies_get_400_error_responses(env, arm, name):
    body, code = BAD_BODIES[name]
    response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION}, json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and response.json()["error"]["code"] == code


def test_import_body_that_is_not_json_gets_400(env, arm):
    response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION}, data=b"{nope",
                        headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (400, "InvalidRequestContent")


def test_import_index_by_tag_copies_every_platform(env, mgmt):
    started = time.monotonic()
    import_image(mgmt, "lib/multi:v1", registry_uri=env.upstream, target_tags=["imported/multi:v1"])
    elapsed = time.monotonic() - started
    assert backing_digest(env, "imported/multi:v1") == env.digests["multi"]
    assert backing_digest(env, f"imported/multi@{env.digests['multi/arm64']}") == env.digests["multi/arm64"]
    print(f"\nSDK import of a 2-platform index: {elapsed:.2f}s (import_latency {LATENCY}s)")


def test_import_by_digest_to_tag_and_untagged_repository(env, mgmt):
    digest = env.digests["single"]
    import_image(mgmt, f"lib/single@{digest}", registry_uri=f"https://{env.upstream}",
                 target_tags=["digested/single:v2"], untagged=["untagged/single"])
    assert backing_digest(env, "digested/single:v2") == digest
    assert backing_digest(env, f"untagged/single@{digest}") == digest
    tags = requests.get(f"http://{env.backing}/v2/untagged/single/tags/list")
    assert tags.status_code == 404  # no tag was created


def test_import_without_targets_uses_the_source_name(env, mgmt):
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream)
    assert backing_digest(env, "lib/single:v1") == env.digests["single"]


def test_import_noforce_conflicts_with_an_existing_tag_and_force_overwrites(env, mgmt):
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["conflict/app:v1"])
    with pytest.raises(HttpResponseError) as failure:
        import_image(mgmt, "lib/multi:v1", registry_uri=env.upstream, target_tags=["conflict/app:v1"])
    assert (failure.value.status_code, failure.value.error.code) == (409, "Conflict")
    assert "already exists" in failure.value.error.message
    assert backing_digest(env, "conflict/app:v1") == env.digests["single"]
    import_image(mgmt, "lib/multi:v1", registry_uri=env.upstream, target_tags=["conflict/app:v1"], mode="Force")
    assert backing_digest(env, "conflict/app:v1") == env.digests["multi"]


def test_import_from_this_registry_by_resource_id(env, mgmt):
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["own/source:v1"])
    import_image(mgmt, "own/source:v1", resource_id=env.emu.registry_id, target_tags=["own/copy:v1"])
    assert backing_digest(env, "own/copy:v1") == env.digests["single"]


def test_import_with_source_credentials_never_leaks_them(env, mgmt, caplog):
    caplog.set_level("DEBUG")
    import_image(mgmt, "lib/single:v1", registry_uri=env.private, target_tags=["private/single:v1"],
                 credentials=ImportSourceCredentials(username=PRIVATE_USER, password=env.private_password))
    assert backing_digest(env, "private/single:v1") == env.digests["single"]
    wrong = "not-the-" + env.private_password
    with pytest.raises(HttpResponseError) as failure:
        import_image(mgmt, "lib/single:v1", registry_uri=env.private, target_tags=["private/other:v1"],
                     credentials=ImportSourceCredentials(username=PRIVATE_USER, password=wrong))
    assert failure.value.error.code == "ImportSourceUnauthorized"
    assert wrong not in failure.value.error.message and wrong not in caplog.text
    assert env.private_password not in caplog.text


def test_import_of_an_unknown_source_fails_with_manifest_unknown(env, mgmt):
    with pytest.raises(HttpResponseError) as failure:
        import_image(mgmt, "lib/single:nope", registry_uri=env.upstream, target_tags=["missing/app:v1"])
    assert failure.value.error.code == "ManifestUnknown"
    assert "manifest unknown" in failure.value.error.message


def test_operation_stays_in_progress_for_the_configured_latency(env, arm):
    env.emu.config.import_latency = 1.5
    started = time.monotonic()
    response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION},
                        json={"source": {"registryUri": env.upstream, "sourceImage": "lib/single:v1"},
                              "targetTags": ["slow/app:v1"]})
    assert_recorded_202(env, response, API_VERSION)
    first = arm.get(response.headers["Location"])
    assert first.status_code == 202 and first.json() == {"slow/app:v1": "Pending", "status": "Accepted"}
    assert first.headers["Content-Type"] == JSON_UTF8
    assert first.headers["Retry-After"] == "2"
    assert first.headers["Location"] == response.headers["Location"]
    final = poll(arm, response.headers["Location"])
    assert (final.status_code, final.json()) == (200, {"status": "Succeeded"})
    assert final.headers["Content-Type"] == JSON_UTF8 and "Retry-After" not in final.headers
    assert time.monotonic() - started >= 1.5


@pytest.mark.parametrize("mode", ["none", "10"])
def test_retry_after_is_absent_or_fixed_as_in_the_recordings(env, arm, mode):
    env.emu.config.import_retry_after = mode
    try:
        response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION},
                            json={"source": {"registryUri": env.upstream, "sourceImage": "lib/single:v1"},
                                  "targetTags": [f"retry-{mode}/app:v1", f"retry-{mode}/app:v2"]})
        assert_recorded_202(env, response, API_VERSION)
        status = arm.get(response.headers["Location"])
        assert status.json() == {f"retry-{mode}/app:v1": "Pending", f"retry-{mode}/app:v2": "Pending",
                                 "status": "Accepted"}
        for answer in (response, status):
            assert answer.headers.get("Retry-After") == (None if mode == "none" else "10")
        assert poll(arm, response.headers["Location"]).status_code == 200
    finally:
        env.emu.config.import_retry_after = "auto"


def test_sdk_completes_an_import_without_retry_after(env, credential):
    env.emu.config.import_retry_after = "none"
    try:
        client = ContainerRegistryManagementClient(credential, SUBSCRIPTION, base_url=env.emu.base_url,
                                                   credential_scopes=[ARM_SCOPE], polling_interval=0.2)
        import_image(client, "lib/single:v1", registry_uri=env.upstream, target_tags=["noretry/app:v1"])
        assert backing_digest(env, "noretry/app:v1") == env.digests["single"]
    finally:
        env.emu.config.import_retry_after = "auto"


def test_copy_at_end_shows_the_tag_only_when_the_copy_time_is_up(env, arm, mgmt):
    env.emu.config.import_latency, env.emu.config.import_copy_at_end = 1.5, True
    try:
        started = time.monotonic()
        response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION},
                            json={"source": {"registryUri": env.upstream, "sourceImage": "lib/single:v1"},
                                  "targetTags": ["late/app:v1"]})
        assert response.status_code == 202
        time.sleep(0.7)
        absent = requests.head(f"http://{env.backing}/v2/late/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert absent.status_code == 404 and time.monotonic() - started < 1.5
        assert poll(arm, response.headers["Location"]).status_code == 200
        assert time.monotonic() - started >= 1.5
        assert backing_digest(env, "late/app:v1") == env.digests["single"]
        # the content is in the repository already: only the tag is written, still at the end
        env.emu.config.import_latency = 0.5
        import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["late/app:v2"])
        assert backing_digest(env, "late/app:v2") == env.digests["single"]
    finally:
        env.emu.config.import_copy_at_end = False


def test_copy_times_spread_per_image_and_stay_the_same(env):
    from devstack.emulator.registry import parse_import

    env.emu.config.import_latency, env.emu.config.import_latency_max = 5.0, 30.0
    try:
        importer = env.emu.importer
        times = {}
        for tag in range(40):
            request = parse_import({"source": {"registryUri": "docker.io", "sourceImage": f"library/app:{tag}"}})
            times[tag] = importer.copy_seconds(request)
            assert importer.copy_seconds(request) == times[tag]
            pinned = parse_import({"source": {"registryUri": "docker.io",
                                              "sourceImage": f"library/app:{tag}@sha256:{'1' * 64}"}})
            assert importer.copy_seconds(pinned) == times[tag]  # another version of the same entry
        assert all(5.0 <= t <= 30.0 for t in times.values())
        assert max(times.values()) - min(times.values()) > 10  # spread, not one value
    finally:
        env.emu.config.import_latency_max = 0.0


# --- fault injection ----------------------------------------------------------------------------


def test_import_fail_fault_fails_the_next_import(env, mgmt):
    env.emu.faults.add("import-fail")
    with pytest.raises(HttpResponseError) as failure:
        import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["faulted/app:v1"])
    assert failure.value.error.code == "ManifestUnknown" and failure.value.status_code == 404
    assert env.emu.faults.rules == []
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["faulted/app:v1"])


def test_import_stuck_fault_never_finishes(env, arm):
    env.emu.faults.add("import-stuck")
    response = arm.post(registry_url(env, "/importImage"), params={"api-version": API_VERSION},
                        json={"source": {"registryUri": env.upstream, "sourceImage": "lib/single:v1"},
                              "targetTags": ["stuck/app:v1"]})
    assert response.status_code == 202
    time.sleep(LATENCY + 0.3)
    for _ in range(3):
        status = arm.get(response.headers["Location"])
        assert (status.status_code, status.json()) == (202, {"stuck/app:v1": "Pending", "status": "Accepted"})


def test_429_fault_answers_with_retry_after_and_the_sdk_retries(env, arm, mgmt):
    rule = {"method": "GET", "path": f"/registries/{REGISTRY}$", "status": 429}
    env.emu.faults.add("status", **rule)
    throttled = arm.get(registry_url(env), params={"api-version": API_VERSION})
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert arm.get(registry_url(env), params={"api-version": API_VERSION}).status_code == 200

    env.emu.faults.add("status", **rule)
    assert mgmt.registries.get(RESOURCE_GROUP, REGISTRY).name == REGISTRY
    assert env.emu.faults.rules == []


def test_500_fault_is_an_error_response(env, mgmt):
    env.emu.faults.add("status", method="GET", path=f"/registries/{REGISTRY}$", status=500, times=2)
    with pytest.raises(HttpResponseError) as failure:
        mgmt.registries.get(RESOURCE_GROUP, REGISTRY, retry_total=0)
    assert (failure.value.status_code, failure.value.error.code) == (500, "InternalServerError")
    assert mgmt.registries.get(RESOURCE_GROUP, REGISTRY).name == REGISTRY  # one more 500, then retried


def test_drop_fault_breaks_the_connection(env, arm, mgmt):
    env.emu.faults.add("drop", method="GET", path=f"/registries/{REGISTRY}$", times=2)
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        arm.get(registry_url(env), params={"api-version": API_VERSION})
    with pytest.raises((ServiceResponseError, IncompleteReadError)) as failure:
        mgmt.registries.get(RESOURCE_GROUP, REGISTRY, retry_total=0)
    assert getattr(failure.value, "status_code", None) in (None, 200)  # a broken connection, not an error status
    env.emu.faults.add("drop", method="GET", path=f"/registries/{REGISTRY}$")
    assert mgmt.registries.get(RESOURCE_GROUP, REGISTRY).name == REGISTRY  # azure-core retries the read


def test_admin_endpoints_manage_faults_and_settings(env):
    admin = f"{env.emu.base_url}/_devstack"
    verify = str(env.ca_pem)
    added = requests.post(f"{admin}/faults", json={"kind": "status", "status": 503, "path": "^/nowhere"},
                          verify=verify)
    assert added.status_code == 201 and added.json()["status"] == 503
    assert [r["kind"] for r in requests.get(f"{admin}/faults", verify=verify).json()] == ["status"]
    assert requests.post(f"{admin}/faults", json={"kind": "explode"}, verify=verify).status_code == 400
    assert requests.delete(f"{admin}/faults", verify=verify).status_code == 204
    assert env.emu.faults.rules == []
    changed = requests.post(f"{admin}/settings", json={"import_latency": 0.5}, verify=verify)
    assert changed.status_code == 200 and env.emu.config.import_latency == 0.5
    assert requests.post(f"{admin}/settings", json={"import_latency": -1}, verify=verify).status_code == 400


# --- data plane ---------------------------------------------------------------------------------


def test_data_plane_challenge_and_token_exchange(env, credential):
    base, verify = env.emu.base_url, str(env.ca_pem)
    challenge = requests.get(f"{base}/v2/", verify=verify)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"] == (
        f'Bearer realm="{base}/oauth2/token",service="{env.emu.login_server}"')
    scoped = requests.get(f"{base}/acr/v1/lib/app/_tags/v1", verify=verify)
    assert scoped.headers["WWW-Authenticate"].endswith(',scope="repository:lib/app:metadata_read"')
    assert scoped.json()["errors"][0]["code"] == "UNAUTHORIZED"

    aad = credential.get_token(f"{ACR_AUDIENCE}/.default").token
    exchanged = requests.post(f"{base}/oauth2/exchange", verify=verify, data={
        "grant_type": "access_token", "service": env.emu.login_server, "access_token": aad})
    assert exchanged.status_code == 200
    assert key_paths(exchanged.json()) == key_paths(fixture("dataplane/PostRefreshToken.2021-07-01.json")
                                                    ["responses"]["200"]["body"])
    issued = requests.post(f"{base}/oauth2/token", verify=verify, data={
        "grant_type": "refresh_token", "service": env.emu.login_server, "scope": "repository:lib/app:pull",
        "refresh_token": exchanged.json()["refresh_token"]})
    assert issued.status_code == 200
    assert set(issued.json()) == set(fixture("dataplane/PostAccessToken.2021-07-01.json")["responses"]["200"]["body"])
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert requests.get(f"{base}/v2/", headers=bearer, verify=verify).status_code == 200
    assert requests.get(f"{base}/v2/lib/app/tags/list", headers=bearer, verify=verify).status_code == 404  # proxied
    assert requests.get(f"{base}/v2/lib/other/tags/list", headers=bearer, verify=verify).status_code == 401
    bad = requests.post(f"{base}/oauth2/exchange", verify=verify, data={
        "grant_type": "access_token", "service": env.emu.login_server, "access_token": "forged"})
    assert bad.status_code == 401


def _access_token(env: LocalStack, credential, scope: str) -> dict[str, str]:
    aad = credential.get_token(f"{ACR_AUDIENCE}/.default").token
    refresh = requests.post(f"{env.emu.base_url}/oauth2/exchange", verify=str(env.ca_pem), data={
        "grant_type": "access_token", "service": env.emu.login_server, "access_token": aad}).json()["refresh_token"]
    access = requests.post(f"{env.emu.base_url}/oauth2/token", verify=str(env.ca_pem), data={
        "grant_type": "refresh_token", "service": env.emu.login_server, "scope": scope,
        "refresh_token": refresh}).json()["access_token"]
    return {"Authorization": f"Bearer {access}"}


def test_registry_api_is_proxied_with_headers_and_bodies(env, credential, mgmt):
    import_image(mgmt, "lib/multi:v1", registry_uri=env.upstream, target_tags=["proxy/multi:v1"])
    base, verify = env.emu.base_url, str(env.ca_pem)
    headers = _access_token(env, credential, "repository:proxy/multi:pull,push")
    manifest = requests.get(f"{base}/v2/proxy/multi/manifests/v1", verify=verify,
                            headers={**headers, "Accept": OCI_INDEX})
    assert manifest.status_code == 200 and manifest.headers["Content-Type"] == OCI_INDEX
    assert manifest.headers["Docker-Content-Digest"] == env.digests["multi"]
    assert int(manifest.headers["Content-Length"]) == len(manifest.content)
    assert "sha256:" + hashlib.sha256(manifest.content).hexdigest() == env.digests["multi"]

    upload = requests.post(f"{base}/v2/proxy/multi/blobs/uploads/", headers=headers, verify=verify)
    assert upload.status_code == 202 and upload.headers["Location"].startswith(f"{base}/v2/proxy/multi/blobs/uploads/")
    blob = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    put = requests.put(upload.headers["Location"], params={"digest": digest}, data=blob, verify=verify,
                       headers={**headers, "Content-Type": "application/octet-stream"})
    assert put.status_code == 201 and put.headers["Docker-Content-Digest"] == digest
    fetched = requests.get(f"{base}/v2/proxy/multi/blobs/{digest}", headers=headers, verify=verify)
    assert fetched.content == blob


def test_container_registry_client_reads_and_deletes_tags(env, credential, mgmt):
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["sdk/single:v1", "sdk/single:v2"])
    client = ContainerRegistryClient(endpoint=env.emu.base_url, credential=credential, audience=ACR_AUDIENCE)
    tag = client.get_tag_properties("sdk/single", "v1")
    assert (tag.name, tag.digest) == ("v1", env.digests["single"])  # the SDK drops repository_name
    manifest = client.get_manifest_properties("sdk/single", "v1")
    assert (manifest.digest, manifest.architecture, manifest.operating_system) == (env.digests["single"], "amd64",
                                                                                   "linux")
    assert sorted(manifest.tags) == ["v1", "v2"]
    assert [t.name for t in client.list_tag_properties("sdk/single")] == ["v1", "v2"]
    client.delete_tag("sdk/single", "v2")  # distribution 2.8: deletes the manifest, so v1 goes as well
    with pytest.raises(ResourceNotFoundError):
        client.get_tag_properties("sdk/single", "v1")


def test_tag_attributes_match_the_fixture_and_acr_errors(env, credential, mgmt):
    import_image(mgmt, "lib/single:v1", registry_uri=env.upstream, target_tags=["attrs/single:v1"])
    base, verify = env.emu.base_url, str(env.ca_pem)
    headers = _access_token(env, credential, "repository:attrs/single:metadata_read repository:nothing:metadata_read")
    body = requests.get(f"{base}/acr/v1/attrs/single/_tags/v1", headers=headers, verify=verify).json()
    expected = fixture("dataplane/GetTagAttributes.2021-07-01.json")["responses"]["200"]["body"]
    assert key_paths(body) == key_paths(expected)
    assert (body["registry"], body["tag"]["digest"]) == (env.emu.login_server, env.digests["single"])
    missing_tag = requests.get(f"{base}/acr/v1/attrs/single/_tags/nope", headers=headers, verify=verify)
    missing_repo = requests.get(f"{base}/acr/v1/nothing/_tags/v1", headers=headers, verify=verify)
    assert (missing_tag.status_code, missing_tag.json()["errors"][0]["code"]) == (404, "TAG_UNKNOWN")
    assert (missing_repo.status_code, missing_repo.json()["errors"][0]["code"]) == (404, "NAME_UNKNOWN")


# --- events ---------------------------------------------------------------------------------------


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["aeg-event-type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_import_emits_event_grid_events(env, mgmt, credential):
    seen: list[dict] = []
    unsubscribe = env.emu.events.subscribe(seen.extend)
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    env.emu.config.event_sink_url = f"http://127.0.0.1:{sink.server_address[1]}/events"
    try:
        import_image(mgmt, "lib/multi:v1", registry_uri=env.upstream, target_tags=["events/multi:v1"])
        pushed = env.emu.events.wait_for(lambda e: e["subject"] == "events/multi:v1")
        client = ContainerRegistryClient(endpoint=env.emu.base_url, credential=credential, audience=ACR_AUDIENCE)
        client.delete_tag("events/multi", "v1")
        deleted = env.emu.events.wait_for(lambda e: e["eventType"].endswith("ImageDeleted")
                                          and e["data"]["target"]["repository"] == "events/multi")
        deadline = time.monotonic() + 10
        while not (deleted in seen and any(deleted in batch for _, batch in _Sink.received)):
            assert time.monotonic() < deadline, "events were not delivered"
            time.sleep(0.05)
    finally:
        env.emu.config.event_sink_url = None
        unsubscribe()
        sink.shutdown()

    example = fixture("eventgrid/event-grid-schema/image_pushed.json")
    assert key_paths(pushed) == key_paths(example) - {"data.connectedRegistry", "data.connectedRegistry.name"}
    assert (pushed["eventType"], pushed["topic"]) == ("Microsoft.ContainerRegistry.ImagePushed", env.emu.registry_id)
    assert (pushed["dataVersion"], pushed["metadataVersion"]) == ("2.0", "1")
    assert pushed["data"]["request"]["host"] == env.emu.login_server
    assert pushed["data"]["target"]["digest"] == env.digests["multi"]
    assert pushed["data"]["target"]["mediaType"] == OCI_INDEX

    example = fixture("eventgrid/event-grid-schema/image_deleted.json")
    assert key_paths(deleted) == key_paths(example) - {"data.connectedRegistry", "data.connectedRegistry.name"}
    assert (deleted["subject"], deleted["data"]["target"]["digest"]) == ("events/multi", env.digests["multi"])

    history = [e for e in env.emu.events.history if e["data"]["target"]["repository"] == "events/multi"]
    assert [e["id"] for e in seen if e["data"]["target"]["repository"] == "events/multi"] == [e["id"] for e in history]
    assert [e["subject"] for e in history] == ["events/multi"] * 2 + ["events/multi:v1", "events/multi"], history
    assert all(e["data"]["target"].get("mediaType") in (OCI_INDEX, OCI_MANIFEST) for e in env.emu.events.history)
    assert _Sink.received and all(kind == "Notification" and isinstance(batch, list)
                                  for kind, batch in _Sink.received)
