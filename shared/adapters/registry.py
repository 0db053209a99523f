"""Reads manifest digests from source registries over the OCI distribution API (httpx).

A HEAD on ``/v2/<repo>/manifests/<ref>`` with the OCI and Docker Accept types gives the digest
without pulling (and does not count against Docker Hub's pull limit). A 401 challenge is
answered the way registries expect: ``Bearer`` -> fetch a token from the realm (with Docker Hub
credentials when configured for docker.io), ``Basic`` -> send the credentials.
"""
from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Optional

import httpx

from ..core.reference import ImageReference
from ..core.retry import parse_retry_after
from ..errors import TransientError, UpstreamError

MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
DOCKER_HUB_API = "registry-1.docker.io"
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


class SourceRegistry:
    """Resolves source digests. ``endpoint_for`` maps a registry name to the host it is reached at."""

    def __init__(self, http: httpx.Client, *, endpoint_for, credentials_for):
        self._http = http
        self._endpoint_for = endpoint_for
        self._credentials_for = credentials_for  # registry -> (user, secret) | None
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def host_for(self, registry: str) -> str:
        host = self._endpoint_for(registry)
        return DOCKER_HUB_API if host == "docker.io" else host

    def head(self, ref: ImageReference) -> SourceDigest:
        host = self.host_for(ref.registry)
        reference = ref.digest or ref.tag or "latest"
        url = f"https://{host}/v2/{ref.repository}/manifests/{reference}"
        headers = {"Accept": MANIFEST_ACCEPT}
        auth = self._cached_auth(host, ref.repository)
        if auth:
            headers["Authorization"] = auth
        response = self._send("HEAD", url, headers)
        if response.status_code == 401:
            headers["Authorization"] = self._answer_challenge(response, host, ref)
            response = self._send("HEAD", url, headers)
        self._raise_for_status(response, ref)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:  # some registries omit it on HEAD: fetch and hash the manifest itself
            response = self._send("GET", url, headers)
            self._raise_for_status(response, ref)
            digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if ref.digest and digest != ref.digest:
            raise UpstreamError(f"source answered digest {digest} for pinned {ref.digest}", code="DigestMismatch")
        return SourceDigest(digest=digest, media_type=response.headers.get("Content-Type"),
                            ratelimit_remaining=parse_ratelimit(response.headers.get("ratelimit-remaining")))

    def _send(self, method: str, url: str, headers: dict) -> httpx.Response:
        return self._http.request(method, url, headers=headers)

    @staticmethod
    def _raise_for_status(response: httpx.Response, ref: ImageReference) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 404:
            raise UpstreamError(f"{ref} not found at the source registry", code="SourceNotFound", status=404)
        if status in (401, 403):
            raise UpstreamError(f"access to {ref.registry}/{ref.repository} was denied ({status})",
                                code="SourceUnauthorized", status=status)
        if status == 429 or status >= 500:
            raise TransientError(f"source registry answered {status}", code=f"HTTP{status}", status=status,
                                 retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                                 datetime.now(timezone.utc)))
        raise UpstreamError(f"source registry answered {status}", code=f"HTTP{status}", status=status)

    def _cached_auth(self, host: str, repository: str) -> Optional[str]:
        with self._lock:
            token, expires = self._tokens.get((host, repository), ("", 0.0))
        return f"Bearer {token}" if token and expires > time.monotonic() else None

    def _answer_challenge(self, response: httpx.Response, host: str, ref: ImageReference) -> str:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE.findall(params_text))
        creds = self._credentials_for(ref.registry)
        if scheme.lower() == "basic":
            if not creds:
                raise UpstreamError(f"{ref.registry} requires credentials", code="SourceUnauthorized", status=401)
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if scheme.lower() != "bearer" or "realm" not in params:
            raise UpstreamError(f"{ref.registry} sent an unsupported challenge", code="SourceUnauthorized",
                                status=401)
        query = {"scope": f"repository:{ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        token_response = self._http.get(params["realm"], params=query, auth=httpx.BasicAuth(*creds) if creds else None)
        if token_response.status_code == 429 or token_response.status_code >= 500:
            raise TransientError(f"token service answered {token_response.status_code}",
                                 code=f"HTTP{token_response.status_code}", status=token_response.status_code)
        if token_response.status_code != 200:
            raise UpstreamError(f"token service of {ref.registry} answered {token_response.status_code}",
                                code="SourceUnauthorized", status=token_response.status_code)
        body = token_response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise UpstreamError(f"token service of {ref.registry} sent no token", code="SourceUnauthorized")
        lifetime = float(body.get("expires_in") or 60)
        with self._lock:
            self._tokens[(host, ref.repository)] = (token, time.monotonic() + max(lifetime - 10, 1))
        return f"Bearer {token}"
