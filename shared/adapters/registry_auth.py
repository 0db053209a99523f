"""Registry authentication for the OCI distribution API: 401 challenges answered, tokens cached.

- ``DockerTokenAuth``: the registry token flow (``Bearer realm=...``; a source registry's credentials,
  Docker Hub's for docker.io, sent to the realm) and ``Basic``;
- ``AcrTokenAuth``: the ACR flow: the managed identity's AAD token is exchanged once for an ACR refresh
  token (``/oauth2/exchange``), then per repository for an access token (``/oauth2/token``);
- ``_TokenCache``: tokens per scope until they near expiry; ``scope_batches`` many repositories' scopes per
  token request (``prefetch``).

Used by ``shared.adapters.registry.ManifestReader`` (the reads themselves).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Optional

import httpx

from ..core.retry import parse_retry_after
from ..errors import TransientError, UpstreamError

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

    def __init__(self, http: httpx.Client, login_server: Callable[[], str], aad_token: Callable[[], str], *,
                 name: str = "the ACR"):
        self._http = http
        self._login_server = login_server
        self._aad_token = aad_token
        self._name = name
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
                                            "refresh_token": self._refresh_token(service)},
                          f"token service of {self._name}")
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
                                                   "access_token": self._aad_token()},
                              f"token exchange of {self._name} (the app's identity)")
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
                                            "refresh_token": self._refresh_token(service)},
                          f"token service of {self._name}")
        token = body["access_token"]
        self._cache.put(("access", scope), token, jwt_expiry(token) or time.time() + 300)
        return f"Bearer {token}"

    def denied(self, what: str, status: int) -> UpstreamError:
        return UpstreamError(f"{what} denied access ({status}); check the app identity's roles on the registry",
                             code="Unauthorized" if self._name == "the ACR" else "SourceUnauthorized", status=status)
