"""Source registries that want credentials: the product's token flow against the stand-in's
token-auth upstream (docker-registry with ``auth: token``; realm = the emulator's
/_devstack/upstream-token), with docker.io mirrored to it and the Docker Hub settings holding the
stack's random user and password.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from devstack import oci
from shared.adapters.acr import ImportRequest
from shared.core.reference import parse_reference
from shared.errors import UpstreamError
from shared.handlers import records
from shared.handlers.imports import run_manifest
from shared.services import Services

# the managed-identity credential reads IDENTITY_ENDPOINT / IDENTITY_HEADER from os.environ
pytestmark = [pytest.mark.usefixtures("clean_faults", "airlock_env"), pytest.mark.timeout(300)]

PRODUCT_AGENT = "acr-airlock"  # the User-Agent of Services.http
SKOPEO_AGENT = "skopeo/"  # the emulator's import


@pytest.fixture
def tokens(stack, seeded_auth):
    """The emulator's token service for the authenticated upstream (its request log)."""
    return stack.emulator.upstream_tokens


@pytest.fixture
def prefix():
    return f"a{uuid.uuid4().hex[:8]}"


def make_services(stack, *, password: str | None = "", **overrides) -> Services:
    """Services with docker.io mirrored to the token-auth upstream. ``password``: "" the right one,
    None no credentials at all, anything else a wrong one (with the right user)."""
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5",
           "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}"}
    if password is not None:
        env["DOCKERHUB_USERNAME"] = stack.upstream_auth_user
        env["DOCKERHUB_TOKEN"] = password or stack.upstream_auth_password
    env.update(overrides)
    return Services.from_env(env)


def product_requests(tokens, since: float, scope: str | None = None):
    return [r for r in tokens.requests(since=since, scope=scope) if r.user_agent.startswith(PRODUCT_AGENT)]


def skopeo_requests(tokens, since: float, scope: str | None = None):
    return [r for r in tokens.requests(since=since, scope=scope) if r.user_agent.startswith(SKOPEO_AGENT)]


def backing_has(stack, ref: str) -> bool:
    try:
        oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False)
        return True
    except oci.OciError:
        return False


def assert_no_secret(secrets, **texts) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} characters) leaked into {where}"


# --- digests (HEAD) ----------------------------------------------------------------------------


def test_head_private_image_with_credentials(stack, seeded_auth, tokens):
    services = make_services(stack)
    since = time.time()
    found = services.source.head(parse_reference("docker.io/private/app:1.0"))
    assert found.digest == seeded_auth["private/app:1.0"]
    assert found.media_type == oci.MEDIA_OCI_MANIFEST
    index = services.source.head(parse_reference("redis:7"))  # docker.io/library/redis, multi-platform
    assert index.digest == seeded_auth["library/redis:7"] and index.media_type == oci.MEDIA_OCI_INDEX
    # pinned by digest: the same digest comes back
    pinned = services.source.head(parse_reference(f"private/app@{seeded_auth['private/app:1.0']}"))
    assert pinned.digest == seeded_auth["private/app:1.0"]

    asked = product_requests(tokens, since)
    assert asked and all(r.status == 200 and r.account == stack.upstream_auth_user for r in asked)
    assert {(a["name"], tuple(a["actions"])) for r in asked for a in r.access} == {
        ("private/app", ("pull",)), ("library/redis", ("pull",))}


def test_private_image_without_credentials_is_refused(stack, seeded_auth, tokens, prefix):
    services = make_services(stack, password=None)
    since = time.time()
    with pytest.raises(UpstreamError) as refused:
        services.source.head(parse_reference("docker.io/private/app:1.0"))
    assert refused.value.status == 401
    assert "docker.io" in refused.value.message
    # the token service was asked anonymously and granted nothing on the private repository
    asked = product_requests(tokens, since, "repository:private/app:pull")
    assert asked and all(r.account is None for r in asked)
    assert all(a["actions"] == [] for r in asked for a in r.access)

    since = time.time()
    document = run_manifest(services, f"private/app:1.0 => {prefix}/app\n", name="images.txt", trigger="cli")
    [entry] = document["entries"]
    assert document["status"] == "failed"
    assert entry["result"] == "failed" and entry["attempts"] == 0
    assert entry["error"]["code"] and "401" in entry["error"]["message"]
    assert not skopeo_requests(tokens, since), "no import may be attempted"
    assert not backing_has(stack, f"{prefix}/app:1.0")


def test_private_image_without_credentials_code_is_source_unauthorized(stack, seeded_auth):
    with pytest.raises(UpstreamError) as refused:
        make_services(stack, password=None).source.head(parse_reference("docker.io/private/app:1.0"))
    assert refused.value.code == "SourceUnauthorized"


def test_wrong_password_is_a_clear_error(stack, seeded_auth, tokens, prefix, caplog):
    wrong = "wrong-" + uuid.uuid4().hex
    services = make_services(stack, password=wrong)
    since = time.time()
    with pytest.raises(UpstreamError) as refused:
        services.source.head(parse_reference("docker.io/private/app:1.0"))
    error = refused.value
    assert error.status == 401 and error.code == "SourceUnauthorized"
    assert "token service of docker.io refused the configured credentials" in error.message
    assert_no_secret([wrong, stack.upstream_auth_password], message=str(error))
    [asked] = product_requests(tokens, since)
    assert (asked.status, asked.outcome, asked.account) == (401, "unauthorized", stack.upstream_auth_user)

    since = time.time()
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(services, f"private/app:1.0 => {prefix}/app\n", name="images.txt", trigger="cli")
    [entry] = document["entries"]
    assert entry["result"] == "failed" and "token service of docker.io" in entry["error"]["message"]
    assert not skopeo_requests(tokens, since)
    assert not backing_has(stack, f"{prefix}/app:1.0")
    saved = records.load(services, document["run_id"])
    assert_no_secret([wrong, stack.upstream_auth_password], record=json.dumps(document),
                     saved=json.dumps(saved), logs=caplog.text)


def test_public_image_works_without_credentials(stack, seeded_auth, tokens, prefix):
    services = make_services(stack, password=None)
    since = time.time()
    found = services.source.head(parse_reference("public/hello:latest"))
    assert found.digest == seeded_auth["public/hello:latest"]
    [asked] = product_requests(tokens, since)
    assert asked.account is None and asked.access == ({"type": "repository", "name": "public/hello",
                                                       "actions": ["pull"]},)
    # named by its own host (allow-listed) instead of through the docker.io mirror
    direct = make_services(stack, password=None,
                           SOURCE_REGISTRY_ALLOWLIST=f"docker.io,{stack.upstream_auth_host}")
    ref = parse_reference(f"{stack.upstream_auth_host}/public/hello:latest")
    assert direct.source.head(ref).digest == found.digest
    # and a whole sync imports it anonymously
    since = time.time()
    document = run_manifest(services, f"public/hello:latest => {prefix}/hello\n", name="images.txt", trigger="cli")
    assert document["status"] == "succeeded", document
    assert document["entries"][0]["target_digest"] == found.digest
    imported = skopeo_requests(tokens, since)
    assert imported and all(r.account is None and r.status == 200 for r in imported)


# --- token reuse -------------------------------------------------------------------------------


def test_tokens_are_reused(stack, seeded_auth, tokens):
    services = make_services(stack)
    since = time.time()
    for _ in range(3):
        assert services.source.head(parse_reference("private/app:1.0")).digest == seeded_auth["private/app:1.0"]
    services.source.head(parse_reference(f"private/app@{seeded_auth['private/app:1.0']}"))
    services.source.head(parse_reference("private/app:1.0"))
    assert len(product_requests(tokens, since, "repository:private/app:pull")) == 1
    # another repository is another scope: one more token, and the first is still reused
    for _ in range(3):
        services.source.head(parse_reference("redis:7"))
        services.source.head(parse_reference("private/app:1.0"))
    assert len(product_requests(tokens, since, "repository:library/redis:pull")) == 1
    assert len(product_requests(tokens, since)) == 2


def test_concurrent_heads_of_one_repository_share_a_token(stack, seeded_auth, tokens):
    services = make_services(stack)
    since = time.time()
    with ThreadPoolExecutor(max_workers=6) as pool:
        digests = set(pool.map(lambda _: services.source.head(parse_reference("private/app:1.0")).digest, range(6)))
    assert digests == {seeded_auth["private/app:1.0"]}
    assert len(product_requests(tokens, since, "repository:private/app:pull")) == 1


def test_tokens_with_the_minimum_lifetime_are_reused(stack, seeded_auth, tokens):
    services = make_services(stack)
    tokens.lifetime = 60
    try:
        since = time.time()
        for _ in range(3):
            services.source.head(parse_reference("private/app:1.0"))
    finally:
        tokens.lifetime = 300
    assert len(product_requests(tokens, since, "repository:private/app:pull")) == 1


# --- whole syncs -------------------------------------------------------------------------------


def test_sync_imports_with_source_credentials_and_leaks_nothing(stack, seeded_auth, tokens, prefix, caplog):
    services = make_services(stack)
    manifest = (f"private/app:1.0 => {prefix}/app\n"
                f"docker.io/library/redis:7 => {prefix}/redis\n"
                f"docker.io/private/app@{seeded_auth['private/app:1.0']} => {prefix}/pinned\n")
    since = time.time()
    with caplog.at_level(logging.DEBUG):
        document = run_manifest(services, manifest, name="images.txt", trigger="cli")
    assert document["status"] == "succeeded", json.dumps(document, indent=1)
    app, redis, pinned = document["entries"]
    assert app["source_digest"] == app["target_digest"] == seeded_auth["private/app:1.0"]
    assert redis["source_digest"] == redis["target_digest"] == seeded_auth["library/redis:7"]
    assert pinned["target"] == f"{prefix}/pinned@{seeded_auth['private/app:1.0']}"
    # the images really are in the ACR's backing registry, digest for digest (the index with its children)
    assert oci.sha256_digest(oci.inspect_raw(f"{stack.backing_host}/{prefix}/redis:7", tls_verify=False)) == \
        seeded_auth["library/redis:7"]
    assert backing_has(stack, f"{prefix}/app:1.0")
    # the ACR import (skopeo in the emulator) got the credentials: its token requests were authenticated
    imported = skopeo_requests(tokens, since)
    assert {s for r in imported for s in r.scopes} >= {"repository:private/app:pull", "repository:library/redis:pull"}
    assert all(r.status == 200 and r.account == stack.upstream_auth_user for r in imported)
    # neither the password nor any token issued meanwhile is in the record, the saved record or the logs
    issued = [r.token for r in tokens.requests(since=since) if r.token]
    assert issued
    saved = records.load(services, document["run_id"])
    assert_no_secret([stack.upstream_auth_password, *issued], record=json.dumps(document),
                     saved=json.dumps(saved), logs=caplog.text)
    # a second run finds everything in place
    again = run_manifest(services, manifest, name="images.txt", trigger="cli")
    assert again["summary"]["unchanged"] == 3 and again["summary"]["imported"] == 0


def test_import_with_wrong_source_credentials_fails_cleanly(stack, seeded_auth, prefix, caplog):
    """The ACR import itself (emulator + skopeo --src-creds) refuses a wrong password without echoing it."""
    services = make_services(stack)
    wrong = "wrong-" + uuid.uuid4().hex
    request = ImportRequest(registry_uri=stack.upstream_auth_host,
                            source_image=f"private/app@{seeded_auth['private/app:1.0']}",
                            target_tags=[f"{prefix}/app:1.0"], untagged_repositories=[], mode="NoForce",
                            username=stack.upstream_auth_user, password=wrong)
    with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError) as failed:
        services.retrier.call(lambda: services.acr.import_image(request, timeout=60), what="import")
    assert failed.value.code == "ImportSourceUnauthorized"
    assert_no_secret([wrong, stack.upstream_auth_password], message=str(failed.value), logs=caplog.text)
    assert not backing_has(stack, f"{prefix}/app:1.0")
