"""Manifest digests over the OCI distribution API (httpx): source registries and the ACR data plane.

A HEAD on ``/v2/<repo>/manifests/<ref>`` with the OCI and Docker Accept types gives the digest
without pulling (and does not count against Docker Hub's pull limit). A 401 challenge is answered
by an authenticator, and its token is cached per repository until it expires:

- ``DockerTokenAuth``: the registry token flow (``Bearer realm=...``; Docker Hub credentials sent
  to the realm for docker.io) and ``Basic``;
- ``AcrTokenAuth``: the ACR flow: the managed identity's AAD token is exchanged once for an ACR
  refresh token (``/oauth2/exchange``), then per repository for an access token (``/oauth2/token``).

The ACR is read this way rather than with azure-containerregistry 1.2.0 because that client
re-exchanges its refresh token on every 401 (its expiry test in ``get_refresh_token`` is
inverted) and starts each call with a 401 round trip: four requests per tag where this needs one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional
from urllib.parse import quote, urlsplit

import httpx

from ..core.reference import ImageReference
from ..core.retry import parse_retry_after
from ..errors import TransientError, UpstreamError

MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.artifact.manifest.v1+json",  # OCI artifacts as some registries serve them (1.1-rc)
))
DOCKER_HUB_API = "registry-1.docker.io"
# One token request may carry several ``scope`` parameters (the registry token spec; ACR's
# AAD-OAuth document and its data-plane swagger: "can be specified more than once for multiple
# scope requests", no limit stated). The token lists every granted scope in its ``access`` claim
# and travels in each request's Authorization header, so it grows with each scope: a batch is
# capped at SCOPES_PER_TOKEN scopes and SCOPE_CHARS_PER_TOKEN characters of scope text, which
# keeps the header near 4 KB, under the 8 KB request-header limits common in proxies.
SCOPES_PER_TOKEN = 50
SCOPE_CHARS_PER_TOKEN = 2000
PREFETCH_WORKERS = 4
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


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


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(params))


def jwt_expiry(token: str) -> Optional[float]:
    """The ``exp`` claim of a JWT (unverified: only to know when to refresh), as epoch seconds."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError, TypeError, binascii.Error):
        return None


def scope_batches(scopes: list[str], per_token: int = SCOPES_PER_TOKEN) -> list[list[str]]:
    """Split scopes into token requests of at most ``per_token`` scopes / SCOPE_CHARS_PER_TOKEN chars."""
    batches: list[list[str]] = []
    size = 0
    for scope in scopes:
        if not batches or len(batches[-1]) >= per_token or size + len(scope) > SCOPE_CHARS_PER_TOKEN:
            batches.append([])
            size = 0
        batches[-1].append(scope)
        size += len(scope)
    return batches


def _in_parallel(fn, batches: list) -> None:
    """Run ``fn`` on every batch, a few at a time (token requests are small; one is a round trip)."""
    if len(batches) <= 1:
        for batch in batches:
            fn(batch)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(PREFETCH_WORKERS, len(batches)), thread_name_prefix="token") as pool:
        list(pool.map(fn, batches))


def _status_error(response: httpx.Response, what: str) -> Exception:
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(timezone.utc))
    if status == 429 or status >= 500:
        return TransientError(f"{what} answered {status}", code=f"HTTP{status}", status=status,
                              retry_after=retry_after)
    if status in (401, 403):
        return UpstreamError(f"{what} denied access ({status})", code="Unauthorized", status=status)
    return UpstreamError(f"{what} answered {status}", code=f"HTTP{status}", status=status)


class _TokenCache:
    """Tokens by key, each until shortly before it expires, and one lock per key so that
    concurrent look-ups of one scope fetch one token between them."""

    def __init__(self) -> None:
        self._tokens: dict[object, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._fetching: dict[object, threading.Lock] = {}

    def fetch_lock(self, key) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(key, threading.Lock())

    def get(self, key) -> Optional[str]:
        with self._lock:
            token, until = self._tokens.get(key, ("", 0.0))
        return token if token and until > time.time() else None

    def put(self, key, token: str, expires_at: float) -> None:
        self.put_many([key], token, expires_at)

    def put_many(self, keys, token: str, expires_at: float) -> None:
        # refresh a little early: 60 s before expiry, or a quarter of a short lifetime (the token
        # spec's minimum is 60 s, which a fixed 60 s margin would never reuse)
        margin = min(60.0, max(0.0, expires_at - time.time()) / 4)
        with self._lock:
            for key in keys:
                self._tokens[key] = (token, expires_at - margin)

    def forget(self, key, token: str) -> None:
        """Drop ``token`` for ``key`` (it was refused: e.g. a multi-scope token that did not grant it)."""
        with self._lock:
            if self._tokens.get(key, ("", 0.0))[0] == token:
                del self._tokens[key]


class DockerTokenAuth:
    """Answers ``Bearer`` (token realm) and ``Basic`` challenges; credentials only when configured."""

    def __init__(self, http: httpx.Client, credentials: Optional[tuple[str, str]] = None):
        self._http = http
        self._credentials = credentials
        self._cache = _TokenCache()

    def cached(self, scope: str) -> Optional[str]:
        token = self._cache.get(scope)
        return f"Bearer {token}" if token else None

    def forget(self, scope: str, authorization: str) -> None:
        self._cache.forget(scope, authorization.partition(" ")[2])

    def prefetch(self, challenge: str, scopes: list[str], what: str, per_token: int = SCOPES_PER_TOKEN) -> int:
        """Fetch tokens covering ``scopes`` (several per request) ahead of the requests that need
        them; returns the number of token requests made. Only for a token (``Bearer``) challenge."""
        scheme, params = parse_challenge(challenge)
        if scheme != "bearer" or "realm" not in params:
            return 0
        params = {k: v for k, v in params.items() if k != "scope"}
        batches = scope_batches([s for s in dict.fromkeys(scopes) if not self.cached(s)], per_token)
        _in_parallel(lambda batch: self._fetch_many(params, batch, what), batches)
        return len(batches)

    def answer(self, challenge: str, scope: str, what: str) -> str:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self._credentials:
                raise UpstreamError(f"{what} requires credentials", code="SourceUnauthorized", status=401)
            user, secret = self._credentials
            return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        if scheme != "bearer" or "realm" not in params:
            raise UpstreamError(f"{what} sent an unsupported challenge", code="SourceUnauthorized", status=401)
        with self._cache.fetch_lock(scope):
            cached = self.cached(scope)  # another thread may have fetched it meanwhile
            if cached:
                return cached
            return self._fetch(params, scope, what)

    def _fetch(self, params: dict[str, str], scope: str, what: str) -> str:
        return self._fetch_many(params, [params.get("scope") or scope], what, cache_as=[scope])

    def _fetch_many(self, params: dict[str, str], scopes: list[str], what: str,
                    cache_as: Optional[list[str]] = None) -> str:
        query: list[tuple[str, str]] = [("scope", scope) for scope in scopes]
        if "service" in params:
            query.append(("service", params["service"]))
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        response = self._http.get(params["realm"], params=query, auth=auth)
        if response.status_code in (401, 403):
            reason = "refused the configured credentials" if self._credentials else "requires credentials"
            raise UpstreamError(f"token service of {what} {reason} ({response.status_code})",
                                code="SourceUnauthorized", status=response.status_code)
        if response.status_code != 200:
            raise _status_error(response, f"token service of {what}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise UpstreamError(f"token service of {what} sent no token", code="SourceUnauthorized")
        self._cache.put_many(cache_as or scopes, token, time.time() + float(body.get("expires_in") or 60))
        return f"Bearer {token}"

    def denied(self, what: str, status: int) -> UpstreamError:
        """The error for a request still refused after the challenge was answered."""
        reason = ("the configured credentials do not allow pulling it" if self._credentials
                  else "it needs credentials and none are configured for this registry")
        return UpstreamError(f"{what} denied access ({status}): {reason}", code="SourceUnauthorized",
                             status=status)


class AcrTokenAuth:
    """The ACR data-plane flow: AAD token -> refresh token (once) -> access token per repository."""

    def __init__(self, http: httpx.Client, login_server: Callable[[], str], aad_token: Callable[[], str]):
        self._http = http
        self._login_server = login_server
        self._aad_token = aad_token
        self._cache = _TokenCache()
        self._refresh_lock = threading.Lock()

    def cached(self, scope: str) -> Optional[str]:
        token = self._cache.get(("access", scope))
        return f"Bearer {token}" if token else None

    def forget(self, scope: str, authorization: str) -> None:
        self._cache.forget(("access", scope), authorization.partition(" ")[2])

    def prefetch(self, challenge: str, scopes: list[str], what: str, per_token: int = SCOPES_PER_TOKEN) -> int:
        """Access tokens covering ``scopes``, SCOPES_PER_TOKEN to a token request (ACR honours a
        repeated ``scope`` form field); returns the number of token requests made."""
        scheme, params = parse_challenge(challenge)
        if scheme != "bearer":
            return 0
        service = params.get("service") or self._login_server()
        batches = scope_batches([s for s in dict.fromkeys(scopes) if not self.cached(s)], per_token)
        _in_parallel(lambda batch: self._fetch_access_many(service, batch), batches)
        return len(batches)

    def _fetch_access_many(self, service: str, scopes: list[str]) -> None:
        body = self._post("/oauth2/token", {"grant_type": "refresh_token", "service": service, "scope": scopes,
                                            "refresh_token": self._refresh_token(service)}, "ACR token service")
        token = body["access_token"]
        self._cache.put_many([("access", s) for s in scopes], token, jwt_expiry(token) or time.time() + 300)

    def _post(self, path: str, form: dict, what: str) -> dict:
        response = self._http.post(f"https://{self._login_server()}{path}", data=form)
        if response.status_code != 200:
            raise _status_error(response, what)
        return response.json()

    def _refresh_token(self, service: str) -> str:
        with self._refresh_lock:
            token = self._cache.get("refresh")
            if token:
                return token
            body = self._post("/oauth2/exchange", {"grant_type": "access_token", "service": service,
                                                   "access_token": self._aad_token()}, "ACR token exchange")
            token = body["refresh_token"]
            self._cache.put("refresh", token, jwt_expiry(token) or time.time() + 600)
            return token

    def answer(self, challenge: str, scope: str, what: str) -> str:
        with self._cache.fetch_lock(("access", scope)):
            cached = self.cached(scope)  # another thread may have fetched it meanwhile
            if cached:
                return cached
            return self._fetch_access(challenge, scope)

    def _fetch_access(self, challenge: str, scope: str) -> str:
        _, params = parse_challenge(challenge)
        service = params.get("service") or self._login_server()
        body = self._post("/oauth2/token", {"grant_type": "refresh_token", "service": service,
                                            "scope": params.get("scope") or scope,
                                            "refresh_token": self._refresh_token(service)}, "ACR token service")
        token = body["access_token"]
        self._cache.put(("access", scope), token, jwt_expiry(token) or time.time() + 300)
        return f"Bearer {token}"

    def denied(self, what: str, status: int) -> UpstreamError:
        return UpstreamError(f"{what} denied access ({status}); check the app identity's roles on the registry",
                             code="Unauthorized", status=status)


class ManifestReader:
    """Reads one registry host (manifest HEADs, JSON listings), answering challenges with ``auth``."""

    def __init__(self, http: httpx.Client, host: Callable[[], str], auth, *, name: str):
        self._http = http
        self._host = host
        self._auth = auth
        self.name = name

    def _send(self, method: str, path: str, scope: str, headers: dict) -> httpx.Response:
        url = f"https://{self._host()}{path}"
        cached = self._auth.cached(scope)
        if cached:
            headers["Authorization"] = cached
        send = getattr(self._http, "plain", None) or self._http.request  # plain: urllib3_transport.Client
        response = send(method, url, headers=headers)
        if response.status_code == 401 and cached:
            self._auth.forget(scope, cached)  # e.g. a prefetched token that does not grant this scope
        if response.status_code == 401:
            headers["Authorization"] = self._auth.answer(response.headers.get("WWW-Authenticate", ""), scope,
                                                         self.name)
            response = send(method, url, headers=headers)
        return response

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
    """Source digests. ``endpoint_for`` maps a registry name to the host it is reached at (a mirror)."""

    def __init__(self, http: httpx.Client, *, endpoint_for, credentials_for):
        self._http = http
        self._endpoint_for = endpoint_for
        self._credentials_for = credentials_for
        self._readers: dict[str, ManifestReader] = {}
        self._lock = threading.Lock()

    def host_for(self, registry: str) -> str:
        host = self._endpoint_for(registry)
        return DOCKER_HUB_API if host == "docker.io" else host

    def _reader(self, registry: str) -> ManifestReader:
        with self._lock:
            if registry not in self._readers:
                host = self.host_for(registry)
                auth = DockerTokenAuth(self._http, self._credentials_for(registry))
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
