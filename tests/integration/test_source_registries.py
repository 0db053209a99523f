"""Every source registry its own credentials, and another ACR imported by resource id (issue 20, #16).

Against the stand-in: the token-auth upstream (``stack.upstream_auth_host``, a password-protected
registry whose realm is the emulator's /_devstack/upstream-token) named by its own host with
``SOURCE_REGISTRY_CREDENTIALS``, and a second emulated ACR (``stack.source_acr()``) named with
``SOURCE_ACR_RESOURCE_IDS``: read with the app's managed identity, imported by ``source.resourceId``.
"""
from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from devstack import oci
from shared.handlers import records
from shared.handlers.imports import run_manifest
from shared.services import Services

pytestmark = [pytest.mark.usefixtures("clean_faults", "airlock_env"), pytest.mark.timeout(300)]


@pytest.fixture
def prefix():
    return f"s{uuid.uuid4().hex[:8]}"


def make_services(stack, **env) -> Services:
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5", **env})


def private_registry_env(stack, password: str, *, name: str = "PRIVATE") -> dict:
    """The token-auth upstream named by its own host, with credentials of its own."""
    host = stack.upstream_auth_host
    return {"SOURCE_REGISTRY_ALLOWLIST": f"docker.io,{host}", "SOURCE_REGISTRY_CREDENTIALS": f"{host}={name}",
            f"REGISTRY_{name}_USERNAME": stack.upstream_auth_user, f"REGISTRY_{name}_PASSWORD": password}


def imports_since(stack, since: float):
    return [op for op in stack.emulator.importer.accepted() if op.started >= since]


def skopeo_token_requests(stack, since_wall: float):
    return [r for r in stack.emulator.upstream_tokens.requests(since=since_wall) if r.user_agent.startswith("skopeo/")]


def backing_digest(stack, ref: str) -> str:
    return oci.sha256_digest(oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False))


def test_a_private_registry_with_its_own_credentials_is_planned_and_imported(stack, seeded_auth, prefix, caplog):
    host = stack.upstream_auth_host
    services = make_services(stack, **private_registry_env(stack, stack.upstream_auth_password))
    manifest = (f"{host}/private/app:1.0 => {prefix}/app\n"
                f"{host}/library/redis:7 => {prefix}/redis\n")
    since, wall = time.monotonic(), time.time()
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(services, manifest, name="images.txt", trigger="cli")
    assert document["status"] == "succeeded", json.dumps(document, indent=1)
    app, redis = document["entries"]
    assert app["source_digest"] == app["target_digest"] == seeded_auth["private/app:1.0"]
    assert redis["target_digest"] == seeded_auth["library/redis:7"]
    assert backing_digest(stack, f"{prefix}/app:1.0") == seeded_auth["private/app:1.0"]
    # ACR was told where to pull from and with which credentials; its pulls were authenticated
    ops = imports_since(stack, since)
    assert len(ops) == 2 and all(op.source.startswith(f"registryUri {host} ") and op.with_credentials for op in ops)
    pulled = skopeo_token_requests(stack, wall)
    assert pulled and all(r.status == 200 and r.account == stack.upstream_auth_user for r in pulled)
    saved = records.load(services, document["run_id"])
    for text in (json.dumps(document), json.dumps(saved), caplog.text):
        assert stack.upstream_auth_password not in text


def test_each_registry_uses_only_its_own_credentials(stack, seeded_auth, prefix, caplog):
    """docker.io (mirrored to the same private registry) with a wrong password, the registry's own host with
    the right one, in one manifest: each entry is read with its registry's credentials."""
    wrong = "wrong-" + uuid.uuid4().hex
    env = private_registry_env(stack, stack.upstream_auth_password)
    env.update({"SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}",
                "SOURCE_REGISTRY_CREDENTIALS": env["SOURCE_REGISTRY_CREDENTIALS"] + ",docker.io=HUB",
                "REGISTRY_HUB_USERNAME": stack.upstream_auth_user, "REGISTRY_HUB_PASSWORD": wrong})
    services = make_services(stack, **env)
    manifest = (f"{stack.upstream_auth_host}/private/app:1.0 => {prefix}/own\n"
                f"private/app:1.0 => {prefix}/hub\n")
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(services, manifest, name="images.txt", trigger="cli")
    own, hub = document["entries"]
    assert own["result"] == "imported" and own["target_digest"] == seeded_auth["private/app:1.0"]
    assert hub["result"] == "failed" and hub["attempts"] == 0  # refused while planning: nothing imported
    assert hub["error"]["code"] == "SourceUnauthorized"
    assert "token service of docker.io refused the configured credentials (401)" in hub["error"]["message"]
    saved = records.load(services, document["run_id"])
    for text in (json.dumps(document), json.dumps(saved), caplog.text):
        assert wrong not in text and stack.upstream_auth_password not in text


def test_a_wrong_password_is_a_clear_error_without_the_password(stack, seeded_auth, prefix, caplog):
    wrong = "wrong-" + uuid.uuid4().hex
    services = make_services(stack, **private_registry_env(stack, wrong))
    since = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(services, f"{stack.upstream_auth_host}/private/app:1.0 => {prefix}/app\n",
                                name="images.txt", trigger="cli")
    [entry] = document["entries"]
    assert document["status"] == "failed" and entry["result"] == "failed"
    assert entry["error"]["message"] == (f"token service of {stack.upstream_auth_host} refused the configured "
                                         "credentials (401)")
    assert imports_since(stack, since) == []
    saved = records.load(services, document["run_id"])
    for text in (json.dumps(document), json.dumps(saved), caplog.text):
        assert wrong not in text


# --- another ACR, by resource id -----------------------------------------------------------------


@pytest.fixture
def source_acr(stack):
    src = stack.source_acr()
    yield src
    src.emulator.auth.identity_roles.clear()


def acr_source_env(src) -> dict:
    return {"SOURCE_REGISTRY_ALLOWLIST": f"docker.io,{src.login_server}",
            "SOURCE_ACR_RESOURCE_IDS": f"{src.login_server}={src.registry_id}"}


def test_an_acr_source_is_read_with_the_identity_and_imported_by_resource_id(stack, source_acr, prefix):
    layout = oci.build_image(f"{prefix}/team/app", platforms=("linux/amd64", "linux/arm64"), layers=1, seed=prefix)
    digest = oci.push(layout, f"{source_acr.backing_host}/{prefix}/team/app:1.0", tls_verify=False)
    services = make_services(stack, **acr_source_env(source_acr))
    since = time.monotonic()
    document = run_manifest(services, f"{source_acr.login_server}/{prefix}/team/app:1.0 => {prefix}/app\n",
                            name="images.txt", trigger="cli")
    assert document["status"] == "succeeded", json.dumps(document, indent=1)
    [entry] = document["entries"]
    assert entry["source_digest"] == entry["target_digest"] == digest
    assert backing_digest(stack, f"{prefix}/app:1.0") == digest
    [op] = imports_since(stack, since)
    assert op.source == f"resourceId {source_acr.registry_id} {prefix}/team/app@{digest}"
    assert op.with_credentials is False  # the app's identity, no password
    # the source ACR was read on its data plane with the app's identity (an ACR token it issued)
    again = run_manifest(services, f"{source_acr.login_server}/{prefix}/team/app:1.0 => {prefix}/app\n",
                         name="images.txt", trigger="cli")
    assert again["summary"]["unchanged"] == 1


def test_an_acr_source_the_identity_may_not_read_is_a_clear_error(stack, source_acr, prefix):
    layout = oci.build_image(f"{prefix}/team/app", layers=1, seed=prefix)
    oci.push(layout, f"{source_acr.backing_host}/{prefix}/team/app:1.0", tls_verify=False)
    auth = source_acr.emulator.auth
    auth.identity_roles[auth.client_id] = []  # the app's identity has no role on the source ACR
    services = make_services(stack, **acr_source_env(source_acr))
    since = time.monotonic()
    document = run_manifest(services, f"{source_acr.login_server}/{prefix}/team/app:1.0 => {prefix}/app\n",
                            name="images.txt", trigger="cli")
    [entry] = document["entries"]
    assert entry["result"] == "failed" and entry["error"]["code"] == "SourceUnauthorized"
    assert entry["error"]["message"] == (f"{source_acr.login_server} denied access (401); check the app identity's "
                                         "roles on the registry")
    assert imports_since(stack, since) == []


def test_an_unknown_source_acr_fails_the_import_by_resource_id(stack, source_acr, prefix):
    from shared.adapters.acr import ImportRequest
    from shared.errors import UpstreamError

    services = make_services(stack)
    unknown = source_acr.registry_id.replace("airlocksrc", "nosuchacr1")
    request = ImportRequest(registry_uri=None, resource_id=unknown, source_image=f"{prefix}/team/app:1.0",
                            target_tags=[f"{prefix}/app:1.0"], untagged_repositories=[], mode="NoForce")
    with pytest.raises(UpstreamError) as failed:
        services.retrier.call(lambda: services.acr.import_image(request, timeout=60), what="import")
    assert failed.value.code == "ResourceNotFound" and unknown in failed.value.message
