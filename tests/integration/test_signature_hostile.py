"""shared.adapters.signatures against a registry that misbehaves on purpose (a small ASGI registry over
TLS, served by uvicorn on loopback; the stand-in's Debian registry cannot do any of this): endless and
dripping bodies, oversized declarations, wrong digests, redirect loops, huge referrer indexes, errors
and silence. Each ends in a bounded time, as a clear ``invalid`` or a transient error, never a hang,
and the connection pool is still usable afterwards (one client serves every case in turn)."""
from __future__ import annotations

import asyncio
import json
import ssl
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shared.adapters import urllib3_transport
from shared.adapters.registry import SourceRegistry
from shared.adapters.signatures import SignatureFinder
from shared.core import trust as core
from shared.errors import TransientError
from tests.servers import serve_asgi
from tests.signing import bundle_manifest, sha256

pytestmark = pytest.mark.timeout(120)

IMAGE = "sha256:" + "a1" * 32
BUNDLE = json.dumps({"mediaType": core.MEDIA_BUNDLE_V03, "note": "not checked here"}).encode()
MANIFEST, BLOBS = bundle_manifest(BUNDLE, subject=IMAGE)
HUGE_LAYER = json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_MANIFEST,
                         "artifactType": core.MEDIA_BUNDLE_V03,
                         "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                                    "digest": sha256(b"{}")},
                         "layers": [{"mediaType": core.MEDIA_BUNDLE_V03, "size": 10 * 1024 ** 3,
                                     "digest": sha256(b"ten gigabytes")}]}).encode()


def index(*manifests: bytes) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": core.MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": core.MEDIA_OCI_MANIFEST, "digest": sha256(m), "size": len(m),
         "artifactType": core.MEDIA_BUNDLE_V03} for m in manifests]}).encode()


class Hostile:
    """Answers by repository name: ``<case>/app``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def referrers(self, request):
        case = request.path_params["repo"].split("/")[0]
        self.seen.append(request.url.path)
        if case in ("none", "cosign"):
            return Response(status_code=404)
        if case == "broken":
            return JSONResponse({"errors": [{"code": "UNKNOWN"}]}, status_code=503)
        if case == "endless404":  # "no referrers API", with a body that never ends
            async def forever():
                for _ in range(100_000):
                    yield b"x" * 65536
            return StreamingResponse(forever(), status_code=404, media_type="text/plain")
        if case == "silent":
            await asyncio.sleep(6)
            return Response(status_code=404)
        if case == "hugeindex":
            return Response(b'{"manifests": [' + b" " * (5 * 1024 * 1024) + b"]}",
                            media_type=core.MEDIA_OCI_INDEX)
        if case == "paged" and "last" not in request.query_params:
            following = f'</v2/{request.path_params["repo"]}/referrers/{IMAGE}?last=1>; rel="next"'
            return Response(index(), media_type=core.MEDIA_OCI_INDEX, headers={"Link": following})
        listed = HUGE_LAYER if case == "bigdeclared" else MANIFEST
        return Response(index(listed), media_type=core.MEDIA_OCI_INDEX)

    async def manifests(self, request):
        self.seen.append(request.url.path)
        case, ref = request.path_params["repo"].split("/")[0], request.path_params["ref"]
        for document in (MANIFEST, HUGE_LAYER):
            if ref == sha256(document):
                return Response(document, media_type=core.MEDIA_OCI_MANIFEST)
        if case == "cosign" and ref.endswith(".sig"):
            return Response(b"[" * 200_000 + b"]" * 200_000, media_type=core.MEDIA_OCI_MANIFEST)
        return JSONResponse({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status_code=404)

    async def blobs(self, request):
        self.seen.append(request.url.path)
        case, digest = request.path_params["repo"].split("/")[0], request.path_params["digest"]
        if case == "endless":
            async def forever():
                for _ in range(100_000):  # 6.5 GB on offer
                    yield b"x" * 65536
            return StreamingResponse(forever(), media_type="application/octet-stream")
        if case == "drip":
            async def drip():
                for _ in range(len(BUNDLE)):
                    await asyncio.sleep(0.2)
                    yield b" "
            return StreamingResponse(drip(), media_type="application/octet-stream")
        if case == "wrong":
            return Response(BUNDLE + b" ", media_type="application/octet-stream")
        if case == "loop":
            return Response(status_code=307, headers={"Location": request.url.path})
        return Response(BLOBS[digest], media_type="application/octet-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v2/{repo:path}/referrers/{digest}", self.referrers),
                                 Route("/v2/{repo:path}/manifests/{ref}", self.manifests),
                                 Route("/v2/{repo:path}/blobs/{digest}", self.blobs)])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tmp = tmp_path_factory.mktemp("hostile")
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    hostile = Hostile()
    with serve_asgi(hostile.app(), certfile=str(tmp / "cert.pem"), keyfile=str(tmp / "key.pem")) as url:
        host = url.split("://", 1)[1]
        client = urllib3_transport.client(context, max_connections=2, timeout=httpx.Timeout(30.0, connect=5.0),
                                          headers={"User-Agent": "acr-airlock"})
        hostile.source = SourceRegistry(client, endpoint_for=lambda _: host, credentials_for=lambda _: None)
        yield hostile


def find(registry, case: str, deadline: float = 20.0):
    return SignatureFinder(registry.source, deadline=deadline).find("hostile.example", f"{case}/app", IMAGE)


def only_problem(lookup, artifacts: int = 1) -> str:
    """The reason the core gives for the lookup's artifacts (``invalid``: none is usable)."""
    assert len(lookup.artifacts) == artifacts, lookup
    verdict = core.verify_image(IMAGE, lookup.artifacts, [core.Keyless(identity="i", issuer="j")], None)
    assert verdict.status == core.INVALID, verdict
    return verdict.reason


def test_a_well_behaved_referrer_is_read_with_its_bundle(registry):
    lookup = find(registry, "ok")
    assert lookup.referrers_api is True
    [found] = lookup.artifacts
    assert found.location == f"referrers:{sha256(MANIFEST)}" and found.manifest == MANIFEST
    assert found.blobs == {sha256(BUNDLE): BUNDLE} and found.problem is None


def test_referrer_pages_are_followed(registry):
    lookup = find(registry, "paged")
    assert [a.location for a in lookup.artifacts] == [f"referrers:{sha256(MANIFEST)}"]


def test_an_endless_blob_is_abandoned_at_the_limit(registry):
    started = time.monotonic()
    problem = only_problem(find(registry, "endless"))
    assert f"over the {core.MAX_BLOB_BYTES} byte limit" in problem and time.monotonic() - started < 15


def test_a_declared_10_gb_layer_is_never_requested(registry):
    registry.seen.clear()
    problem = only_problem(find(registry, "bigdeclared"))
    assert "declares 10737418240 bytes" in problem
    assert not any("/blobs/" in path for path in registry.seen)


def test_a_dripping_blob_stops_at_the_lookup_deadline(registry):
    started = time.monotonic()
    lookup = find(registry, "drip", deadline=1.5)
    assert time.monotonic() - started < 6
    # the blob, and then the cosign tag that there was no time left to read
    problem = only_problem(lookup, artifacts=2)
    assert "did not arrive within the 1.5 s allowed for an image's signatures" in problem


def test_a_blob_that_is_not_its_digest_is_refused(registry):
    assert "does not match its digest" in only_problem(find(registry, "wrong"))


def test_a_redirect_loop_is_refused(registry):
    assert "too many redirects" in only_problem(find(registry, "loop"))


def test_a_huge_referrers_index_is_refused(registry):
    problem = only_problem(find(registry, "hugeindex"))
    assert f"over the {core.MAX_MANIFEST_BYTES} byte limit" in problem


def test_a_bomb_in_the_cosign_tag_is_unreadable_not_a_crash(registry):
    lookup = find(registry, "cosign")
    assert lookup.referrers_api is False  # 404 from the referrers API: the tag schema was read (404 too)
    assert [a.location for a in lookup.artifacts] == [f"tag:{IMAGE.replace(':', '-')}.sig"]
    assert "nests too deeply" in only_problem(lookup)


def test_nothing_anywhere_is_unsigned(registry):
    registry.seen.clear()
    lookup = find(registry, "none")
    assert lookup.artifacts == () and lookup.referrers_api is False
    assert registry.seen == [f"/v2/none/app/referrers/{IMAGE}", f"/v2/none/app/manifests/{IMAGE.replace(':', '-')}",
                             f"/v2/none/app/manifests/{IMAGE.replace(':', '-')}.sig"]
    assert core.verify_image(IMAGE, lookup.artifacts, [core.Keyless(identity="i", issuer="j")]).status == core.UNSIGNED


def test_server_errors_and_silence_are_transient(registry):
    with pytest.raises(TransientError) as caught:
        find(registry, "broken")
    assert caught.value.status == 503
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        find(registry, "silent", deadline=1.0)
    assert "ReadTimeout" in str(caught.value) and time.monotonic() - started < 5
    assert find(registry, "ok").artifacts  # the pool (2 connections) is still usable


def test_a_host_without_the_referrers_api_is_remembered_only_when_asked(registry):
    """The plan's finder (``remember_missing_api``) asks a host that answered 404 for the tag schema directly;
    a finder without it (and look-ups on other hosts) still ask the API."""
    host = registry.source.reader("hostile.example").host
    SignatureFinder._without_api.discard(host)
    try:
        remembering = SignatureFinder(registry.source, remember_missing_api=True)
        remembering.find("hostile.example", "none/app", IMAGE)  # 404 from the API: remembered
        assert host in SignatureFinder._without_api
        registry.seen.clear()
        lookup = remembering.find("hostile.example", "cosign/app", IMAGE)
        assert lookup.referrers_api is False and not any("/referrers/" in path for path in registry.seen)
        assert registry.seen[0] == f"/v2/cosign/app/manifests/{IMAGE.replace(':', '-')}"  # the tag schema
        registry.seen.clear()
        assert find(registry, "ok").referrers_api is True  # the default finder asks the API every time
        assert registry.seen[0] == f"/v2/ok/app/referrers/{IMAGE}"
    finally:
        SignatureFinder._without_api.discard(host)


def test_an_endless_not_found_body_is_not_read_to_its_end(registry):
    """A 404's body is read (so its connection can be reused) only while it is short."""
    started = time.monotonic()
    lookup = find(registry, "endless404")
    assert lookup.referrers_api is False and lookup.artifacts == () and time.monotonic() - started < 10
    assert find(registry, "ok").artifacts  # the pool is still usable
