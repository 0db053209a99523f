"""ACR tag listings come in pages of 100 with a Link to the next page, as ACR answers (the
azure-sdk-for-js container-registry recordings: ``</acr/v1/library%2Fhello-world/_tags?last=latest&
n=1&orderby=>; rel="next"``), and the product's listing follows every page."""
from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devstack import oci
from shared.services import Services

TAGS = 250


@pytest.fixture(scope="module")
def many_tags(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    repo = f"pages-{uuid.uuid4().hex[:8]}/app"
    layout = oci.build_image(repo, seed="pages")
    digest = oci.push(layout, f"{stack.backing_host}/{repo}:seed", tls_verify=False)
    tags = [f"t{i:03d}" for i in range(TAGS - 1)]
    with httpx.Client(base_url=stack.backing_url, timeout=30) as client:
        for tag in tags:
            client.put(f"/v2/{repo}/manifests/{tag}", content=layout.raw,
                       headers={"Content-Type": layout.media_type}).raise_for_status()
    return repo, digest, sorted([*tags, "seed"])


def _token(stack, repo: str) -> str:
    emu = stack.emulator
    aad = emu.auth.issue_identity_token("https://containerregistry.azure.net")["access_token"]
    with httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context()) as client:
        refresh = client.post("/oauth2/exchange", data={"grant_type": "access_token", "service": emu.login_server,
                                                        "access_token": aad}).json()["refresh_token"]
        return client.post("/oauth2/token", data={"grant_type": "refresh_token", "service": emu.login_server,
                                                  "scope": f"repository:{repo}:metadata_read",
                                                  "refresh_token": refresh}).json()["access_token"]


def test_tag_listing_pages_at_100_with_link_headers(stack, many_tags):
    repo, digest, names = many_tags
    headers = {"Authorization": f"Bearer {_token(stack, repo)}"}
    pages, url = [], f"/acr/v1/{repo}/_tags"
    with httpx.Client(base_url=stack.arm_endpoint, verify=stack.ssl_context(), headers=headers) as client:
        while url:
            response = client.get(url)
            assert response.status_code == 200, response.text
            pages.append([tag["name"] for tag in response.json()["tags"]])
            assert all(tag["digest"] == digest for tag in response.json()["tags"])
            link = response.headers.get("Link")
            if link is None:
                break
            target, _, rel = link.partition(">; ")
            assert rel == 'rel="next"' and target.startswith("</acr/v1/")
            parts = urlsplit(target[1:])
            assert parts.path == f"/acr/v1/{repo.replace('/', '%2F')}/_tags"
            assert parse_qs(parts.query, keep_blank_values=True) == {
                "last": [pages[-1][-1]], "n": ["100"], "orderby": [""]}
            url = target[1:]
        asked = client.get(f"/acr/v1/{repo}/_tags", params={"n": 7, "last": "t100"})
        assert [t["name"] for t in asked.json()["tags"]] == [f"t{i}" for i in range(101, 108)]
        assert "last=t107&n=7" in asked.headers["Link"]
        assert client.get(f"/acr/v1/{repo}/_tags", params={"n": "x"}).status_code == 400
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [name for page in pages for name in page] == names


def test_the_products_listing_follows_every_page(stack, many_tags, monkeypatch):
    repo, digest, names = many_tags
    stack.apply_env(monkeypatch)
    services = Services.from_env(stack.env)
    assert services.acr.tag_digests(repo) == {name: digest for name in names}
