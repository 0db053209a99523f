"""ACR data plane: token exchange, the /v2/ registry API (proxied) and the /acr/v1/ metadata API.

Clients authenticate the ACR way: an unauthenticated request gets a 401 Bearer challenge naming
realm (/oauth2/token), service (the login server) and scope; the client trades its AAD token for
a refresh token (POST /oauth2/exchange), the refresh token for an access token (POST
/oauth2/token), and retries. Authorised /v2/ requests are streamed to the backing
docker-registry. /acr/v1/ answers are computed from the backing registry plus the
``ManifestLedger`` (distribution keeps no timestamps).

Referrers (OCI distribution-spec 1.1, which distribution 2.8 lacks): ``GET /v2/{name}/referrers/{digest}``
answers an OCI image index of the descriptors of every manifest of ``name`` whose ``subject`` is
``digest`` (``?artifactType=`` filters, with ``OCI-Filters-Applied: artifactType``; no referrers: an
empty index; an unknown repository: 404 NAME_UNKNOWN; a malformed digest: 400), from the emulator's
index (referrers.py). A manifest PUT is read (at most 4 MiB, else 413), stored by the backing
registry and, when it has a ``subject``, indexed before the answer, which then carries
``OCI-Subject: <subject digest>``. A blob mount (``POST .../blobs/uploads/?mount=&from=``) also needs
pull on ``from``. Chunked blob uploads: a PATCH (or final PUT) whose ``Content-Range`` is malformed or
does not start where the session's data ends is refused with 416 (``UploadOffsets``).

Tag listings (``/acr/v1/{name}/_tags``) come in pages of at most 100 tags (``n``), sorted by name,
after ``last``; a page with more to come carries ``Link: </acr/v1/{escaped name}/_tags?last=..&n=..&
orderby=>; rel="next"``, as ACR answers.

Limit: distribution 2.8 cannot delete a tag, so DELETE /acr/v1/{repo}/_tags/{tag} deletes the
manifest the tag points to, which removes every tag of that manifest.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import referrers
from .auth import AuthError
from .errors import acr_error

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
# manifests distribution serves as they are stored, with their mediaType as Content-Type
STORED_MEDIA_TYPES = frozenset(MANIFEST_ACCEPT.split(", "))
FORWARDED_REQUEST_HEADERS = frozenset(
    {"accept", "content-type", "content-length", "content-range", "range", "user-agent", "if-none-match"}
)
DROPPED_RESPONSE_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "date", "server"})
CHANGEABLE_ATTRIBUTES = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
READ_ATTEMPTS = 6  # reads of the backing registry's storage that raced a rewrite (~0.3 s in all)
TAG_PAGE_SIZE = 100  # tags per page of /acr/v1/{name}/_tags (and the most a client may ask for with n=)
UNAUTHORIZED_MESSAGE = "authentication required, visit https://aka.ms/acr/authorization for more information."
_REPOSITORY_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)/")
_UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<session>[A-Za-z0-9_.=-]+)$")
_CONTENT_RANGE = re.compile(r"^([0-9]+)-([0-9]+)$")  # the spec's chunk range, inclusive
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution 2.8 reads of a manifest PUT; the spec asks for >= 4 MiB
# distribution's grammar (reference/regexp.go): a repository name, a tag, a sha256 digest
# ([-]* in Go's linear RE2; as -+ here, the same names, without Python's exponential backtracking
# over the empty separator on a long path that does not match, e.g. a blob upload's session id)
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_MANIFEST_PATH = re.compile(
    rf"^/v2/(?P<name>{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)/manifests/"
    r"(?:(?P<tag>[\w][\w.-]{0,127})|(?P<digest>sha256:[a-f0-9]{64}))$")
# what distribution 2.8 answers manifest requests with, besides the manifest's own three headers
# (X-Content-Type-Options comes from the backing registry's http.headers, devstack/stack.py)
STORED_MANIFEST_HEADERS = {"docker-distribution-api-version": "registry/2.0", "x-content-type-options": "nosniff"}
ERROR_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class ManifestHead:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class StoredAnswer:
    """A manifest GET/HEAD answered from the backing registry's storage, as distribution would."""
    status: int
    headers: dict[str, str]
    body: bytes


class RetryingReads(httpx.AsyncBaseTransport):
    """Retries a GET or HEAD that the backing registry answered 500.

    distribution's filesystem driver rewrites link files in place (truncate, then write), so a
    read racing a push of the same digest (concurrent imports of one image under many tags: every
    copy rewrites ``_manifests/revisions/sha256/<digest>/link``) finds an empty link and answers
    500 "invalid checksum digest format". ACR has no such race; the stand-in must not pass it on.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, attempts: int = READ_ATTEMPTS) -> None:
        self._inner = inner
        self._attempts = attempts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        delay = 0.01
        for attempt in range(1, self._attempts + 1):
            response = await self._inner.handle_async_request(request)
            if response.status_code != 500 or request.method not in ("GET", "HEAD") or attempt == self._attempts:
                return response
            await response.aread()
            await response.aclose()
            log.debug("backing registry answered 500 to %s %s; retrying", request.method, request.url.path)
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._inner.aclose()


class BackingRegistry:
    """Async client of the backing docker-registry (plain HTTP on loopback)."""

    def __init__(self, base_url: str, storage_path: str = "",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.storage = Path(storage_path) if storage_path else None
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(30.0, read=300.0),
                                        transport=RetryingReads(transport or httpx.AsyncHTTPTransport()))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead | None:
        response = await self.client.head(
            f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return ManifestHead(
            response.headers["docker-content-digest"],
            response.headers.get("content-type", ""),
            int(response.headers.get("content-length", 0)),
        )

    async def get_manifest(self, repository: str, reference: str) -> tuple[ManifestHead, dict[str, Any]] | None:
        response = await self.client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        head = ManifestHead(
            response.headers["docker-content-digest"], response.headers.get("content-type", ""), len(response.content)
        )
        return head, response.json()

    async def get_manifest_bytes(self, repository: str, digest: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of the manifest ``digest``, None when ``repository`` lacks it; read from
        the storage when that answer is certain (see stored_manifest), else from the registry."""
        stored = self.stored_manifest(f"/v2/{repository}/manifests/{digest}", MANIFEST_ACCEPT)
        if stored is not None and stored.status == 200:
            return stored.headers["content-type"], stored.body
        response = await self.client.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.headers.get("content-type", ""), response.content

    async def get_blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        response = await self.client.get(f"/v2/{repository}/blobs/{digest}", follow_redirects=True)
        response.raise_for_status()
        return response.json()

    def _repository_dir(self, repository: str) -> Path:
        return self.storage / "docker" / "registry" / "v2" / "repositories" / repository / "_manifests"

    async def has_manifest(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds the manifest ``digest`` (its revision link, or a HEAD)."""
        if self.storage is not None:
            algorithm, _, encoded = digest.partition(":")
            return (self._repository_dir(repository) / "revisions" / algorithm / encoded / "link").exists()
        return await self.head_manifest(repository, digest) is not None

    async def has_repository(self, repository: str) -> bool:
        if self.storage is not None:
            return self._repository_dir(repository).is_dir()
        return await self.tags(repository) is not None

    async def tags(self, repository: str) -> list[str] | None:
        """The repository's tags, or None when the registry does not know the repository."""
        response = await self.client.get(f"/v2/{repository}/tags/list")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    async def tag_digests(self, repository: str, *, after: str = "", limit: int | None = None) -> dict[str, str] | None:
        """Tag -> digest, by tag name; with ``limit`` only the first ``limit`` tags named after ``after``
        (a page: only those tags' links are read, so a page costs the page, as on ACR)."""
        if self.storage is not None:
            return await asyncio.to_thread(self._stored_tag_digests, repository, after, limit)
        tags = await self.tags(repository)
        if tags is None:
            return None
        tags = [tag for tag in tags if tag > after]
        heads = await asyncio.gather(*(self.head_manifest(repository, tag) for tag in tags))
        digests = {tag: head.digest for tag, head in zip(tags, heads) if head is not None}
        return dict(list(digests.items())[:limit]) if limit is not None else digests

    def _stored_tag_digests(self, repository: str, after: str = "", limit: int | None = None) -> dict[str, str] | None:
        """Tag -> digest from distribution's storage layout: ``_manifests/tags/<tag>/current/link``
        holds the digest, and ``_manifests/revisions/<alg>/<hex>/link`` exists while the manifest does."""
        manifests = self.storage / "docker" / "registry" / "v2" / "repositories" / repository / "_manifests"
        if not manifests.is_dir():
            return None
        try:
            names = sorted(name for name in os.listdir(manifests / "tags") if name > after)
        except FileNotFoundError:
            names = []
        digests = {}
        for name in names:
            if limit is not None and len(digests) >= limit:
                break
            digest = _read_link(manifests / "tags" / name / "current" / "link")
            if digest is None:  # untagged meanwhile
                continue
            algorithm, _, hex_digest = digest.partition(":")
            if (manifests / "revisions" / algorithm / hex_digest / "link").exists():
                digests[name] = digest
        return digests

    def stored_manifest(self, path: str, accept: str) -> StoredAnswer | None:
        """The answer distribution 2.8 gives ``GET/HEAD path`` (a manifest by tag or digest), read
        from its storage layout: the tag link (``_manifests/tags/<tag>/current/link``), the
        revision link (``_manifests/revisions/sha256/<hex>/link``) and the manifest blob. None
        whenever this cannot be sure of the same answer (no storage path, a name or reference
        outside the grammar, a link being rewritten, a manifest type distribution would convert,
        one the client did not accept): the caller then asks the registry itself.

        The plan reads thousands of manifests with one HEAD each; a proxied request cost the
        emulator an HTTP round trip to the backing registry and that registry ~2 ms of CPU.
        Same status, headers and body as distribution (a test compares them request by request)."""
        match = _MANIFEST_PATH.match(path) if self.storage is not None else None
        if match is None or len(match["name"]) > 255:
            return None
        manifests = self.storage / "docker" / "registry" / "v2" / "repositories" / match["name"] / "_manifests"
        if match["tag"] is not None:
            digest = _read_stored_link(manifests / "tags" / match["tag"] / "current" / "link")
            if digest is None:
                return _manifest_unknown({"Tag": match["tag"]})
        else:
            digest = match["digest"]
        if not digest or not digest.startswith("sha256:"):
            return None  # empty: the link is being rewritten
        if _read_stored_link(manifests / "revisions" / "sha256" / digest[7:] / "link") is None:
            if match["tag"] is not None:
                return None  # a tag whose manifest is gone: rare, left to the registry
            return _manifest_unknown({"Name": match["name"], "Revision": digest})
        hex_digest = digest[7:]
        try:
            body = (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest
                    / "data").read_bytes()
            manifest = json.loads(body)
            media_type, version = manifest.get("mediaType"), manifest.get("schemaVersion")
        except (OSError, ValueError, AttributeError):
            return None
        accepted = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
        if version != 2 or media_type not in STORED_MEDIA_TYPES or media_type not in accepted:
            return None  # distribution may convert, pick a platform or refuse: let it
        return StoredAnswer(200, {"content-type": media_type, "content-length": str(len(body)),
                                  "docker-content-digest": digest, "etag": f'"{digest}"',
                                  **STORED_MANIFEST_HEADERS}, body)

    async def tag_manifest(self, tags: list[tuple[str, str]], repository: str, digest: str) -> None:
        """PUT the manifest ``repository@digest`` under each (repository, tag); the content must
        already be in each of those repositories."""
        response = await self.client.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": MANIFEST_ACCEPT})
        response.raise_for_status()
        media_type = response.headers.get("content-type", "")
        for target_repository, tag in tags:
            put = await self.client.put(f"/v2/{target_repository}/manifests/{tag}", content=response.content,
                                        headers={"Content-Type": media_type})
            put.raise_for_status()

    async def delete_manifest(self, repository: str, digest: str) -> httpx.Response:
        return await self.client.delete(f"/v2/{repository}/manifests/{digest}")


def _read_link(path: Path) -> str | None:
    """A link file's digest; None when it is gone. A link being rewritten (truncated, then written:
    see RetryingReads) reads empty for a moment, so an empty read is read again."""
    for _ in range(READ_ATTEMPTS):
        try:
            digest = path.read_text().strip()
        except FileNotFoundError:
            return None
        if digest:
            return digest
        time.sleep(0.01)
    return None


def _read_stored_link(path: Path) -> str | None:
    """A link file's content ("" while it is being rewritten), None when it does not exist."""
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _manifest_unknown(detail: dict[str, str]) -> StoredAnswer:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": detail}]},
                      separators=(",", ":")).encode() + b"\n"
    return StoredAnswer(404, {"content-type": ERROR_CONTENT_TYPE, **STORED_MANIFEST_HEADERS,
                              "content-length": str(len(body))}, body)


def _required_access(path: str, method: str) -> tuple[str | None, str | None, str | None]:
    """(resource type, name, action) a /v2/ request needs; (None, None, None) = any access token."""
    if path == "/v2/_catalog":
        return "registry", "catalog", "*"
    match = _REPOSITORY_PATH.match(path)
    if match is None:
        return None, None, None
    action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "push")
    return "repository", match["name"], action


def _scope(kind: str | None, name: str | None, action: str | None) -> str | None:
    if kind is None:
        return None
    return f"{kind}:{name}:{'pull,push' if action == 'push' else action}"


async def _form(request: Request) -> dict[str, str]:
    """application/x-www-form-urlencoded body; repeated keys (scope) are joined with spaces."""
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {key: " ".join(values) for key, values in parsed.items()}


async def _counted(stream, sent: list[int]):
    """``stream`` passed through, its length added up in ``sent[0]``."""
    async for chunk in stream:
        sent[0] += len(chunk)
        yield chunk


class UploadOffsets:
    """How many bytes each blob upload session holds, so that a chunk sent out of order is refused.

    distribution 2.8 ignores ``Content-Range`` on PATCH ("TODO" in its handler) and appends whatever
    comes, where the distribution spec requires ``416 Requested Range Not Satisfiable`` for a chunk
    that does not start right after the last one (and for a malformed range). The emulator counts the
    bytes of every chunk it forwards: a session is known from the POST that opened it until its PUT
    or DELETE; a session it did not see open (another emulator process) is not checked. At most
    ``limit`` sessions are remembered (the oldest are forgotten first).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._sizes: dict[str, int] = {}
        self._limit = limit

    def check(self, session: str, request: Request) -> Response | None:
        """The 416 answer for a chunk that is malformed or out of order, else None."""
        content_range = request.headers.get("content-range")
        size = self._sizes.get(session)
        if content_range is None or (request.method == "PUT" and request.headers.get("content-length") in (None, "0")):
            return None
        match = _CONTENT_RANGE.match(content_range)
        start, end = (int(match[1]), int(match[2])) if match else (-1, -2)
        if match is not None and end >= start and (size is None or start == size):
            return None
        headers = {"Location": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                   "Range": f"0-{max((size or 0) - 1, 0)}", "Docker-Upload-UUID": session}
        return acr_error(416, "RANGE_INVALID", "invalid content range", headers)

    def update(self, method: str, session: str | None, answer: httpx.Response, sent: int) -> None:
        if method == "POST":  # a new session: its id is the last part of the Location path
            opened = _UPLOAD_PATH.match(httpx.URL(answer.headers.get("location", "")).path)
            if opened is not None:
                if len(self._sizes) >= self._limit:
                    self._sizes.pop(next(iter(self._sizes)))
                self._sizes[opened["session"]] = 0
        elif method == "PATCH" and answer.status_code == 202 and session in self._sizes:
            self._sizes[session] += sent
        elif method in ("PUT", "DELETE") and answer.status_code in (201, 204):
            self._sizes.pop(session or "", None)


def routes(emu, backing: BackingRegistry) -> list[Route]:
    uploads = UploadOffsets()

    def challenge(scope: str | None) -> Response:
        header = f'Bearer realm="{emu.base_url}/oauth2/token",service="{emu.login_server}"'
        if scope:
            header += f',scope="{scope}"'
        return acr_error(401, "UNAUTHORIZED", UNAUTHORIZED_MESSAGE, {"WWW-Authenticate": header})

    def denied(request: Request, kind: str | None, name: str | None, action: str | None) -> Response | None:
        if emu.auth.allows(request.headers.get("authorization"), kind, name, action):
            return None
        return challenge(_scope(kind, name, action))

    async def exchange(request: Request) -> Response:
        form = await _form(request)
        if form.get("grant_type") != "access_token":
            return acr_error(400, "UNSUPPORTED", "grant_type must be access_token.")
        if not form.get("service") or not form.get("access_token"):
            return acr_error(400, "BAD_REQUEST", "service and access_token are required.")
        try:
            refresh_token = emu.auth.issue_refresh_token(form["access_token"], form["service"])
        except AuthError as exc:
            return acr_error(401, "UNAUTHORIZED", exc.message)
        return JSONResponse({"refresh_token": refresh_token})

    async def token(request: Request) -> Response:
        form = await _form(request)
        if form.get("grant_type") != "refresh_token":
            return acr_error(400, "UNSUPPORTED", "grant_type must be refresh_token.")
        if not all(form.get(key) for key in ("service", "scope", "refresh_token")):
            return acr_error(400, "BAD_REQUEST", "service, scope and refresh_token are required.")
        try:
            access_token = emu.auth.issue_access_token(form["refresh_token"], form["service"], form["scope"])
        except AuthError as exc:
            return acr_error(401, "UNAUTHORIZED", exc.message)
        return JSONResponse({"access_token": access_token})

    async def registry_api(request: Request) -> Response:
        refusal = denied(request, *_required_access(request.url.path, request.method))
        if refusal:
            return refusal
        if request.method == "POST" and request.query_params.get("mount") and request.query_params.get("from"):
            source = request.query_params["from"]
            if not emu.auth.allows(request.headers.get("authorization"), "repository", source, "pull"):
                kind, name, action = _required_access(request.url.path, request.method)
                return challenge(f"{_scope(kind, name, action)} repository:{source}:pull")
        if request.method == "PUT":
            match = _MANIFEST_PATH.match(request.url.path)
            if match is not None:
                return await put_manifest(request, match["name"])
        if request.method in ("GET", "HEAD") and not request.url.query and "if-none-match" not in request.headers:
            stored = backing.stored_manifest(request.url.path, request.headers.get("accept", ""))
            if stored is not None:
                return Response(stored.body if request.method == "GET" else b"", status_code=stored.status,
                                headers=stored.headers)
        return await _proxy(request)

    async def _proxy(request: Request) -> Response:
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(key, value) for key, value in request.headers.items() if key in FORWARDED_REQUEST_HEADERS]
        body = request.stream() if request.method in ("PUT", "POST", "PATCH") else None
        upload = _UPLOAD_PATH.match(request.url.path) if request.method in ("PUT", "PATCH", "DELETE") else None
        sent = [0]
        if upload is not None:
            if refusal := uploads.check(upload["session"], request):
                return refusal
            if body is not None:
                body = _counted(body, sent)
        try:
            upstream = await backing.client.send(
                backing.client.build_request(request.method, url, headers=headers, content=body), stream=True
            )
        except httpx.HTTPError as exc:
            log.warning("backing registry failed for %s %s: %s", request.method, request.url.path, exc)
            return acr_error(502, "BAD_GATEWAY", "the backing registry is unavailable")
        out = {key: value for key, value in upstream.headers.items() if key not in DROPPED_RESPONSE_HEADERS}
        if out.get("location", "").startswith(backing.base_url):
            out["location"] = emu.base_url + out["location"][len(backing.base_url):]
        if upload is not None or (request.method == "POST" and upstream.status_code == 202):
            uploads.update(request.method, upload["session"] if upload else None, upstream, sent[0])
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=out,
            background=BackgroundTask(upstream.aclose),
        )

    async def put_manifest(request: Request, repository: str) -> Response:
        """Store a manifest through the backing registry; index it when it has a subject."""
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                return acr_error(413, "SIZE_INVALID", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        content_type = request.headers.get("content-type", "")
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            stored = await backing.client.put(request.url.path, content=bytes(body), headers=headers)
        except httpx.HTTPError as exc:
            log.warning("backing registry failed for PUT %s: %s", request.url.path, exc)
            return acr_error(502, "BAD_GATEWAY", "the backing registry is unavailable")
        out = {key: value for key, value in stored.headers.items() if key not in DROPPED_RESPONSE_HEADERS}
        if out.get("location", "").startswith(backing.base_url):
            out["location"] = emu.base_url + out["location"][len(backing.base_url):]
        if stored.status_code == 201:
            digest = stored.headers.get("docker-content-digest") or referrers.sha256(bytes(body))
            found = referrers.referrer(bytes(body), digest, content_type)
            if found is not None:
                subject, descriptor = found
                await asyncio.to_thread(emu.referrers.record, repository, subject, descriptor)
                out["oci-subject"] = subject
        return Response(stored.content, status_code=stored.status_code, headers=out)

    async def list_referrers(request: Request) -> Response:
        repository, digest = request.path_params["repository"], request.path_params["digest"]
        if refusal := denied(request, "repository", repository, "pull"):
            return refusal
        if not referrers.REPOSITORY.match(repository) or len(repository) > 255:
            return acr_error(400, "NAME_INVALID", "invalid repository name", detail={"name": repository})
        if not referrers.valid_digest(digest):
            return acr_error(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                             detail={"digest": digest})
        listed = []
        for descriptor in await asyncio.to_thread(emu.referrers.listing, repository, digest):
            if await backing.has_manifest(repository, descriptor["digest"]):
                listed.append(descriptor)
            else:  # deleted since it was indexed
                await asyncio.to_thread(emu.referrers.forget, repository, digest, descriptor["digest"])
        if not listed and not await backing.has_repository(repository):
            return acr_error(404, "NAME_UNKNOWN", "repository name not known to registry", detail={"name": repository})
        headers = {}
        wanted = request.query_params.getlist("artifactType")
        if wanted:
            listed = [descriptor for descriptor in listed if descriptor.get("artifactType") in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": referrers.OCI_INDEX, "manifests": listed}
        return Response(json.dumps(index, separators=(",", ":")).encode(), media_type=referrers.OCI_INDEX,
                        headers=headers)

    def tag_body(repository: str, tag: str, digest: str) -> dict[str, Any]:
        created, updated = emu.ledger.tag_times(repository, tag)
        return {
            "name": tag,
            "digest": digest,
            "createdTime": created,
            "lastUpdateTime": updated,
            "changeableAttributes": dict(CHANGEABLE_ATTRIBUTES),
        }

    async def unknown(repository: str, tag: str) -> Response:
        if await backing.tags(repository) is None:
            return acr_error(404, "NAME_UNKNOWN", "repository name not known to registry", detail={"name": repository})
        return acr_error(404, "TAG_UNKNOWN", "the specified tag does not exist", detail={"tag": tag})

    async def tag_attributes(request: Request) -> Response:
        repository, tag = request.path_params["repository"], request.path_params["tag"]
        action = "delete" if request.method == "DELETE" else "metadata_read"
        if refusal := denied(request, "repository", repository, action):
            return refusal
        head = await backing.head_manifest(repository, tag)
        if head is None:
            return await unknown(repository, tag)
        if request.method == "GET":
            return JSONResponse(
                {"registry": emu.login_server, "imageName": repository, "tag": tag_body(repository, tag, head.digest)}
            )
        deleted = await backing.delete_manifest(repository, head.digest)
        if deleted.status_code != 202:
            return Response(deleted.content, status_code=deleted.status_code, media_type="application/json")
        log.info("deleted %s:%s (manifest %s)", repository, tag, head.digest)
        return Response(status_code=202)

    async def tag_list(request: Request) -> Response:
        repository = request.path_params["repository"]
        if refusal := denied(request, "repository", repository, "metadata_read"):
            return refusal
        try:
            page_size = int(request.query_params.get("n") or TAG_PAGE_SIZE)
        except ValueError:
            return acr_error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
        if page_size < 1:
            return acr_error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
        page_size = min(page_size, TAG_PAGE_SIZE)
        last, orderby = request.query_params.get("last") or "", request.query_params.get("orderby") or ""
        digests = await backing.tag_digests(repository, after=last, limit=page_size + 1)  # +1: is there more?
        if digests is None:
            return acr_error(404, "NAME_UNKNOWN", "repository name not known to registry", detail={"name": repository})
        names = sorted(tag for tag in digests if tag > last)
        page, more = names[:page_size], len(names) > page_size
        tags = [tag_body(repository, tag, digests[tag]) for tag in page]
        headers = {}
        if more:
            # as recorded (azure-sdk-for-js container-registry recordings): path-escaped name,
            # last / n / orderby, relative to the login server
            query = urlencode({"last": page[-1], "n": page_size, "orderby": orderby})
            headers["Link"] = f'</acr/v1/{quote(repository, safe="")}/_tags?{query}>; rel="next"'
        return JSONResponse({"registry": emu.login_server, "imageName": repository, "tags": tags}, headers=headers)

    async def manifest_attributes(request: Request) -> Response:
        repository, digest = request.path_params["repository"], request.path_params["digest"]
        if refusal := denied(request, "repository", repository, "metadata_read"):
            return refusal
        found = await backing.get_manifest(repository, digest)
        if found is None:
            return acr_error(404, "MANIFEST_UNKNOWN", "manifest unknown", detail={"digest": digest})
        head, manifest = found
        created, updated = emu.ledger.manifest_times(repository, head.digest)
        body: dict[str, Any] = {
            "digest": head.digest,
            "mediaType": head.media_type,
            "createdTime": created,
            "lastUpdateTime": updated,
            "tags": sorted(t for t, d in ((await backing.tag_digests(repository)) or {}).items() if d == head.digest),
            "changeableAttributes": dict(CHANGEABLE_ATTRIBUTES),
        }
        if "manifests" in manifest:
            body["imageSize"] = head.size
            body["references"] = [
                {
                    "digest": child["digest"],
                    "architecture": child.get("platform", {}).get("architecture"),
                    "os": child.get("platform", {}).get("os"),
                }
                for child in manifest["manifests"]
            ]
        else:
            config = manifest.get("config", {})
            layers = manifest.get("layers", [])
            body["imageSize"] = config.get("size", 0) + sum(layer.get("size", 0) for layer in layers)
            body["configMediaType"] = config.get("mediaType")
            is_json = "digest" in config and str(config.get("mediaType", "")).endswith("json")
            image_config = await backing.get_blob_json(repository, config["digest"]) if is_json else {}
            body["architecture"] = image_config.get("architecture")
            body["os"] = image_config.get("os")
        return JSONResponse({"registry": emu.login_server, "imageName": repository, "manifest": body})

    return [
        Route("/oauth2/exchange", exchange, methods=["POST"]),
        Route("/oauth2/token", token, methods=["POST"]),
        Route("/v2/", registry_api, methods=["GET", "HEAD"]),
        Route("/v2/{repository:path}/referrers/{digest}", list_referrers, methods=["GET"]),
        Route("/v2/{rest:path}", registry_api, methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
        Route("/acr/v1/{repository:path}/_tags/{tag}", tag_attributes, methods=["GET", "DELETE"]),
        Route("/acr/v1/{repository:path}/_tags", tag_list, methods=["GET"]),
        Route("/acr/v1/{repository:path}/_manifests/{digest}", manifest_attributes, methods=["GET"]),
    ]
