"""Manifest digests over the OCI distribution API (httpx): source registries and the ACR data plane.

A HEAD on ``/v2/<repo>/manifests/<ref>`` with the OCI and Docker Accept types gives the digest
without pulling (and does not count against Docker Hub's pull limit). A 401 challenge is answered
by an authenticator (``shared.adapters.registry_auth``: the registry token flow and Basic for source
registries, the ACR token exchange for the private ACR and for a source registry that is another ACR,
``SOURCE_ACR_RESOURCE_IDS``: no password, the app's identity), its token cached per repository.

The ACR is read this way rather than with azure-containerregistry 1.2.0 because that client
re-exchanges its refresh token on every 401 (its expiry test in ``get_refresh_token`` is
inverted) and starts each call with a 401 round trip: four requests per tag where this needs one.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Optional
from urllib.parse import quote, urlsplit

import httpx

from ..core.reference import ImageReference
from ..errors import TransientError, UpstreamError
from .registry_auth import (SCOPES_PER_TOKEN, AcrTokenAuth, DockerTokenAuth,
                            _status_error)

MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",  # OCI artifacts as some registries serve them (1.1-rc)
))
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class SourceDigest:
    digest: str
    media_type: Optional[str] = None
    ratelimit_remaining: Optional[int] = None


def parse_ratelimit(value: Optional[str]) -> Optional[int]:
    """``ratelimit-remaining: 76;w=21600`` -> 76."""
    if not value:
        return None
    head = value.split(";", 1)[0].strip()
    return int(head) if head.isdigit() else None


class ManifestReader:
    """Reads one registry host (manifest HEADs, JSON listings), answering challenges with ``auth``."""

    def __init__(self, http: httpx.Client, host: Callable[[], str], auth, *, name: str):
        self._http = http
        self._host = host
        self._auth = auth
        self.name = name

    @property
    def host(self) -> str:
        """The host[:port] this reader talks to (a mirror's, when the registry has one)."""
        return self._host()

    def _send(self, method: str, path: str, scope: str, headers: dict, content: Optional[bytes] = None
              ) -> httpx.Response:
        url = f"https://{self._host()}{path}"
        cached = self._auth.cached(scope)
        if cached:
            headers["Authorization"] = cached
        if content is None:
            send = getattr(self._http, "plain", None) or self._http.request  # plain: urllib3_transport.Client
        else:
            send = functools.partial(self._http.request, content=content)
        response = send(method, url, headers=headers)
        if response.status_code == 401 and cached:
            self._auth.forget(scope, cached)  # e.g. a prefetched token that does not grant this scope
        if response.status_code == 401:
            headers["Authorization"] = self._auth.answer(response.headers.get("WWW-Authenticate", ""), scope,
                                                         self.name)
            response = send(method, url, headers=headers)
        return response

    def send(self, method: str, path: str, scope: str, headers: dict, content: Optional[bytes] = None
             ) -> httpx.Response:
        """One request (a push: POST, PUT with ``content``), the challenge answered for ``scope``; a
        refusal after the challenge raises (``denied``), as does a transport failure (TransientError)."""
        try:
            response = self._send(method, path, scope, headers, content)
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name}: {method} {path.split('?', 1)[0]}: {type(exc).__name__}",
                                 code="ConnectionError") from exc
        if response.status_code in (401, 403):
            raise self._auth.denied(self.name, response.status_code)
        return response

    def get_bounded(self, path: str, scope: str, accept: str, limit: int, *, missing: tuple[int, ...] = (404,),
                    timeout: Optional[httpx.Timeout] = None) -> tuple[int, bytes, httpx.Headers]:
        """(status, body, headers) of a GET read raw and abandoned past ``limit`` bytes (``ResponseTooLarge``);
        ``missing`` statuses come back with an empty body; errors as ``send``, 429 and 5xx transient."""
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        try:
            with self.open(path, scope, headers, timeout=timeout) as response:
                status = response.status_code
                if status in missing:
                    return status, b"", response.headers
                if status in (401, 403):
                    raise self._auth.denied(self.name, status)
                if status != 200:
                    raise _status_error(response, f"{self.name} ({path.split('?', 1)[0]})")
                declared = response.headers.get("Content-Length", "")
                body = bytearray()
                for chunk in ([] if declared.isdigit() and int(declared) > limit else response.iter_raw()):
                    body += chunk
                    if len(body) > limit:
                        break
                if len(body) > limit or (declared.isdigit() and int(declared) > limit):
                    raise UpstreamError(f"{self.name}: {path} is over the {limit} byte limit", code="ResponseTooLarge")
                return status, bytes(body), response.headers
        except httpx.TransportError as exc:
            raise TransientError(f"{self.name}: GET {path.split('?', 1)[0]}: {type(exc).__name__}",
                                 code="ConnectionError") from exc

    @contextlib.contextmanager
    def open(self, path: str, scope: str, headers: dict, *,
             timeout: Optional[httpx.Timeout] = None) -> Iterator[httpx.Response]:
        """A streamed GET of ``path`` (the challenge answered as for ``head``; redirects followed, as
        blob reads need): the body is not read, so the caller can bound what it reads. Closed on exit."""
        url = f"https://{self._host()}{path}"
        cached = self._auth.cached(scope)
        if cached:
            headers["Authorization"] = cached
        kwargs = {"timeout": timeout} if timeout is not None else {}
        response = self._http.send(self._http.build_request("GET", url, headers=headers, **kwargs), stream=True)
        try:
            if response.status_code == 401:
                response.close()
                if cached:
                    self._auth.forget(scope, cached)
                headers["Authorization"] = self._auth.answer(response.headers.get("WWW-Authenticate", ""), scope,
                                                             self.name)
                response = self._http.send(self._http.build_request("GET", url, headers=headers, **kwargs),
                                           stream=True)
            yield response
        finally:
            response.close()

    def denied(self, status: int) -> UpstreamError:
        """The error for a read this registry refused after its challenge was answered."""
        return self._auth.denied(self.name, status)

    def prefetch(self, scopes: list[str], per_token: int = SCOPES_PER_TOKEN) -> int:
        """Tokens for many scopes at once, before the requests that need them: one unauthenticated
        ``GET /v2/`` to learn the token realm and service, then SCOPES_PER_TOKEN scopes per token
        request. Returns the number of token requests (0: the registry asked for no token)."""
        scopes = [s for s in dict.fromkeys(scopes) if not self._auth.cached(s)]
        if len(scopes) < 2:
            return 0  # a single scope costs the same through the ordinary challenge
        response = self._http.get(f"https://{self._host()}/v2/")
        if response.status_code != 401:
            return 0
        return self._auth.prefetch(response.headers.get("WWW-Authenticate", ""), scopes, self.name, per_token)

    def _found(self, response: httpx.Response) -> bool:
        """False for 404 (no such manifest or repository); raises for a refusal or another error."""
        if response.status_code == 404:
            return False
        if response.status_code in (401, 403):
            raise self._auth.denied(self.name, response.status_code)
        if response.status_code >= 400:
            raise _status_error(response, self.name)
        return True

    def head(self, repository: str, reference: str) -> Optional[httpx.Response]:
        """The HEAD response, or None when the manifest (or repository) does not exist."""
        path = f"/v2/{repository}/manifests/{reference}"
        headers = {"Accept": MANIFEST_ACCEPT}
        response = self._send("HEAD", path, f"repository:{repository}:pull", headers)
        if not self._found(response):
            return None
        if not response.headers.get("Docker-Content-Digest"):
            # some registries omit the digest on HEAD: fetch the manifest and hash it
            response = self._send("GET", path, f"repository:{repository}:pull", headers)
            if response.status_code == 404:
                # the HEAD said it exists: a HEAD cut off after its status line (no headers, no digest),
                # or replicas that disagree. Not an answer either way: read again (a real 404 then says so)
                raise TransientError(f"{self.name} answered a HEAD of {path} with 200 but no "
                                     f"digest, then its GET with 404", code="InconsistentManifestRead")
            if response.status_code >= 400:
                raise _status_error(response, self.name)
            response.headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return response

    def tags(self, repository: str, *, page_size: int = 1000, limit: int = 10_000) -> Optional[list[str]]:
        """Every tag of a repository (``/v2/<repo>/tags/list`` with ``n``, following ``Link``, or
        ``last`` when a full page came without one); None when the repository does not exist.
        A registry that ignores ``n`` (distribution 2.8 answers everything at once) is read in one
        request. More than ``limit`` tags is an error rather than a silently partial list."""
        tags: dict[str, None] = {}
        path: Optional[str] = f"/v2/{repository}/tags/list?n={page_size}"
        scope = f"repository:{repository}:pull"
        while path:  # ends: a page that adds no new tag ends it, and tags are capped at limit
            response = self._send("GET", path, scope, {"Accept": "application/json"})
            if not self._found(response):
                return None
            page = response.json().get("tags") or []
            before = len(tags)
            tags.update(dict.fromkeys(page))
            if len(tags) > limit:
                raise UpstreamError(f"{repository} at {self.name} has more than {limit} tags; a tag policy "
                                    f"scans at most {limit}", code="TooManyTags")
            if len(tags) == before:
                break
            path = _next_link(response.headers.get("Link"))
            if path is None and len(page) == page_size:
                path = f"/v2/{repository}/tags/list?n={page_size}&last={quote(page[-1])}"
        return list(tags)

    def acr_tag_digests(self, repository: str, page_size: int = 100) -> dict[str, str]:
        """Every tag of an ACR repository with its digest (``/acr/v1/<repo>/_tags``, following pages)."""
        return self.acr_tag_pages(repository, page_size)[0]

    def acr_tag_pages(self, repository: str, page_size: int = 100, *, after: str = "",
                      through: Optional[str] = None, max_pages: Optional[int] = None) -> tuple[dict[str, str], bool]:
        """Tags of an ACR repository with their digests, from the first tag lexically after ``after``
        (ACR's ``last``), page by page until a page reaches ``through`` or ``max_pages`` pages were read;
        (the tags, whether the listing reached the repository's end). A repository that does not exist
        is an empty, complete listing."""
        digests: dict[str, str] = {}
        path: Optional[str] = f"/acr/v1/{repository}/_tags?n={page_size}" + (
            f"&last={quote(after, safe='')}" if after else "")
        scope = f"repository:{repository}:metadata_read"
        pages = 0
        while path:
            response = self._send("GET", path, scope, {"Accept": "application/json"})
            if response.status_code == 404:
                return digests, True
            if response.status_code >= 400:
                raise _status_error(response, self.name)
            tags = response.json().get("tags") or []
            names = [tag["name"] for tag in tags]
            for tag in tags:
                digests[tag["name"]] = tag["digest"]
            path = _next_link(response.headers.get("Link"))
            pages += 1
            if path and ((through is not None and names and names[-1] >= through)
                         or (max_pages is not None and pages >= max_pages)):
                return digests, False
        return digests, True


def _next_link(header: Optional[str]) -> Optional[str]:
    """``</acr/v1/repo/_tags?last=x&n=100>; rel="next"`` -> the path (an absolute URL -> its path)."""
    if not header or 'rel="next"' not in header:
        return None
    start, end = header.find("<"), header.find(">")
    if not 0 <= start < end:
        return None
    link = header[start + 1:end]
    if link.startswith(("https://", "http://")):
        parts = urlsplit(link)
        link = parts.path + (f"?{parts.query}" if parts.query else "")
    return link if link.startswith("/") else None


class SourceRegistry:
    """Source digests. ``endpoint_for`` maps a registry name to the host it is reached at (a mirror);
    ``credentials_for`` gives a registry's (user, password) or None; ``identity_for`` gives, for a
    registry that is an ACR, a callable returning the app identity's AAD token (the ACR flow,
    ``AcrTokenAuth``: no password), else None."""

    def __init__(self, http: httpx.Client, *, endpoint_for, credentials_for,
                 identity_for: Optional[Callable[[str], Optional[Callable[[], str]]]] = None):
        self._http = http
        self._endpoint_for = endpoint_for
        self._credentials_for = credentials_for
        self._identity_for = identity_for
        self._readers: dict[str, ManifestReader] = {}
        self._lock = threading.Lock()

    def host_for(self, registry: str) -> str:
        host = self._endpoint_for(registry)
        return DOCKER_HUB_API if host == "docker.io" else host

    def reader(self, registry: str) -> ManifestReader:
        """The reader of one source registry (its host after mirrors, its credentials, its token cache)."""
        return self._reader(registry)

    def _reader(self, registry: str) -> ManifestReader:
        with self._lock:
            if registry not in self._readers:
                host = self.host_for(registry)
                aad_token = self._identity_for(registry) if self._identity_for else None
                auth = (AcrTokenAuth(self._http, lambda: host, aad_token, name=registry) if aad_token
                        else DockerTokenAuth(self._http, self._credentials_for(registry)))
                self._readers[registry] = ManifestReader(self._http, lambda: host, auth, name=registry)
            return self._readers[registry]

    def prefetch_tokens(self, refs, per_token: int = SCOPES_PER_TOKEN) -> int:
        """Pull tokens for many source repositories, several repositories per token request."""
        by_registry: dict[str, list[str]] = {}
        for ref in refs:
            by_registry.setdefault(ref.registry, []).append(f"repository:{ref.repository}:pull")
        return sum(self._reader(registry).prefetch(scopes, per_token) for registry, scopes in by_registry.items())

    def tags(self, ref: ImageReference, *, limit: int) -> list[str]:
        """Every tag of the source repository (paginated ``tags/list``, token challenge followed)."""
        tags = self._reader(ref.registry).tags(ref.repository, limit=limit)
        if tags is None:
            raise UpstreamError(f"{ref.name} not found at the source registry", code="SourceNotFound", status=404)
        return tags

    def head(self, ref: ImageReference) -> SourceDigest:
        response = self._reader(ref.registry).head(ref.repository, ref.digest or ref.tag or "latest")
        if response is None:
            raise UpstreamError(f"{ref} not found at the source registry", code="SourceNotFound", status=404)
        digest = response.headers["Docker-Content-Digest"]
        if ref.digest and digest != ref.digest:
            raise UpstreamError(f"source answered digest {digest} for pinned {ref.digest}", code="DigestMismatch")
        return SourceDigest(digest=digest, media_type=response.headers.get("Content-Type"),
                            ratelimit_remaining=parse_ratelimit(response.headers.get("ratelimit-remaining")))
