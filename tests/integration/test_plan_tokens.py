"""Plans over many repositories ask for tokens that cover many repositories at once (several
``scope`` parameters per token request), at the ACR and at token-authenticated sources."""
from __future__ import annotations

import math
import time
import uuid

import pytest

from devstack import layout, oci
from shared.adapters.registry_auth import SCOPES_PER_TOKEN
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


def seed_repositories(stack, registry: str, count: int, seed: str, **push) -> tuple[str, oci.ImageLayout]:
    """``count`` repositories ``<prefix>/r<i>:1`` holding one image on the ``registry`` stand-in ("upstream"
    or "upstream-auth"), written straight into its storage; returns the prefix and the image."""
    prefix = f"tok{uuid.uuid4().hex[:8]}"
    host = stack.upstream_host if registry == "upstream" else stack.upstream_auth_host
    image = oci.build_image(f"{prefix}/seed", seed=seed)
    oci.push(image, f"{host}/{prefix}/seed:1", cert_dir=stack.certs_dir, **push)
    root = layout.registry_root(stack, registry)
    for i in range(count):
        layout.link_tags(root, f"{prefix}/r{i}", image.digest, ["1"], blobs=image.blob_digests())
    return prefix, image


def test_acr_tokens_cover_many_repositories_per_request(stack, seeded):
    prefix, image = seed_repositories(stack, "upstream", REPOSITORIES, "t1")
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
    prefix, _ = seed_repositories(stack, "upstream-auth", 10, "t2", creds=stack.upstream_auth_creds)
    services = Services.from_env({**stack.env, "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}",
                                  "DOCKERHUB_USERNAME": stack.upstream_auth_user,
                                  "DOCKERHUB_TOKEN": stack.upstream_auth_password})
    manifest = "".join(f"docker.io/{prefix}/r{i}:1 => {prefix}/r{i}\n" for i in range(10))
    since = time.time()
    plan = run_manifest(services, manifest, name="auth.txt", trigger="cli", apply=False, save=False)

    assert plan["summary"]["new"] == 10 and plan["summary"]["error"] == 0, plan
    product = [r for r in tokens.requests(since=since) if r.user_agent.startswith("acr-airlock")]
    assert len(product) == 1
    assert sorted(product[0].scopes) == sorted(f"repository:{prefix}/r{i}:pull" for i in range(10))


def test_prefetched_tokens_that_grant_nothing_still_end_in_a_clear_error_per_entry(stack, seeded_auth):
    """Without credentials the token service issues tokens that grant only public repositories: each
    refused entry drops the prefetched token, answers its own challenge and gets a clear error."""
    prefix, _ = seed_repositories(stack, "upstream-auth", 3, "t3", creds=stack.upstream_auth_creds)
    services = Services.from_env({**stack.env, "SOURCE_REGISTRY_MIRRORS": f"docker.io={stack.upstream_auth_host}"})
    manifest = "".join(f"docker.io/{prefix}/r{i}:1 => {prefix}/r{i}\n" for i in range(3))
    plan = run_manifest(services, manifest, name="anon.txt", trigger="cli", apply=False, save=False)
    assert plan["summary"]["error"] == 3
    assert all("credentials" in e["error"]["message"] for e in plan["entries"])
