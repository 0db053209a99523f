"""Plans over many repositories ask for tokens that cover many repositories at once (several
``scope`` parameters per token request), at the ACR and at token-authenticated sources."""
from __future__ import annotations

import math
import uuid

import pytest

from devstack import layout, oci
from shared.adapters.registry import SCOPES_PER_TOKEN
from shared.handlers.imports import run_manifest
from shared.services import Services

pytestmark = [pytest.mark.usefixtures("clean_faults", "airlock_env"), pytest.mark.timeout(300)]

REPOSITORIES = 120


def token_requests(services) -> list:
    """Every token request the product's HTTP client sends (an observer on the real client)."""
    seen = []
    services.http.event_hooks["request"].append(
        lambda request: seen.append(request) if request.url.path.endswith(("/oauth2/token",)) or
        "upstream-token" in request.url.path else None)
    return seen


def test_acr_tokens_cover_many_repositories_per_request(stack, seeded):
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    image = oci.build_image(f"{prefix}/seed", seed="t1")
    oci.push(image, f"{stack.upstream_host}/{prefix}/seed:1", cert_dir=stack.certs_dir)
    root = layout.registry_root(stack, "upstream")
    for i in range(REPOSITORIES):
        layout.link_tags(root, f"{prefix}/r{i}", image.digest, ["1"], blobs=image.blob_digests())
    services = Services.from_env({**stack.env, "SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host})
    seen = token_requests(services)
    manifest = "".join(f"{stack.upstream_host}/{prefix}/r{i}:1\n" for i in range(REPOSITORIES))

    plan = run_manifest(services, manifest, name="many.txt", trigger="cli", apply=False, save=False)

    assert plan["summary"]["new"] == REPOSITORIES and plan["summary"]["error"] == 0
    assert {e["source_digest"] for e in plan["entries"]} == {image.digest}
    acr = [r for r in seen if r.url.path == "/oauth2/token"]
    # one token request per 50 repositories instead of one per repository
    assert len(acr) == math.ceil(REPOSITORIES / SCOPES_PER_TOKEN)
    scopes = [s for r in acr for s in _form_scopes(r)]
    assert sorted(scopes) == sorted(f"repository:{prefix}/r{i}:pull" for i in range(REPOSITORIES))


def _form_scopes(request) -> list[str]:
    from urllib.parse import parse_qs

    return parse_qs(request.content.decode())["scope"]


def test_a_token_source_gets_one_token_request_for_many_repositories(stack, seeded_auth):
    tokens = stack.emulator.upstream_tokens
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    image = oci.build_image(f"{prefix}/seed", seed="t2")
    oci.push(image, f"{stack.upstream_auth_host}/{prefix}/seed:1", cert_dir=stack.certs_dir,
             creds=stack.upstream_auth_creds)
    root = layout.registry_root(stack, "upstream-auth")
    for i in range(10):
        layout.link_tags(root, f"{prefix}/r{i}", image.digest, ["1"], blobs=image.blob_digests())
    services = Services.from_env({**stack.env, "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}",
                                  "DOCKERHUB_USERNAME": stack.upstream_auth_user,
                                  "DOCKERHUB_TOKEN": stack.upstream_auth_password})
    manifest = "".join(f"docker.io/{prefix}/r{i}:1 => {prefix}/r{i}\n" for i in range(10))
    import time

    since = time.time()
    plan = run_manifest(services, manifest, name="auth.txt", trigger="cli", apply=False, save=False)

    assert plan["summary"]["new"] == 10 and plan["summary"]["error"] == 0, plan
    product = [r for r in tokens.requests(since=since) if r.user_agent.startswith("acr-airlock")]
    assert len(product) == 1
    assert sorted(product[0].scopes) == sorted(f"repository:{prefix}/r{i}:pull" for i in range(10))


def test_prefetched_tokens_that_grant_nothing_still_end_in_a_clear_error_per_entry(stack, seeded_auth):
    """Without credentials the token service issues tokens that grant only public repositories: each
    refused entry drops the prefetched token, answers its own challenge and gets a clear error."""
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    image = oci.build_image(f"{prefix}/seed", seed="t3")
    oci.push(image, f"{stack.upstream_auth_host}/{prefix}/seed:1", cert_dir=stack.certs_dir,
             creds=stack.upstream_auth_creds)
    root = layout.registry_root(stack, "upstream-auth")
    for i in range(3):
        layout.link_tags(root, f"{prefix}/r{i}", image.digest, ["1"], blobs=image.blob_digests())
    services = Services.from_env({**stack.env, "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}"})
    manifest = "".join(f"docker.io/{prefix}/r{i}:1 => {prefix}/r{i}\n" for i in range(3))
    plan = run_manifest(services, manifest, name="anon.txt", trigger="cli", apply=False, save=False)
    assert plan["summary"]["error"] == 3
    assert all("credentials" in e["error"]["message"] for e in plan["entries"])
