"""The private ACR: server-side import (ARM), reading what a tag points at and which referrers a digest
has (data plane), and pushing an OCI artifact (data plane, ``push`` scope: the trust material).

Data-plane reads: ``tag_digest`` / ``has_manifest`` (HEAD), ``tag_digests`` (``/acr/v1/<repo>/_tags``),
``manifest`` (a bounded GET), ``referrers`` (the OCI 1.1 referrers API, ``GET /v2/<repo>/referrers/<digest>``,
``Link`` pages followed, at most REFERRER_PAGES). ``push_artifact`` uploads blobs (POST then a monolithic
PUT, skipped when the repository has the blob) and PUTs the manifest under each tag; a refusal (an
identity whose role cannot push) raises UpstreamError ``PushDenied``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence
from urllib.parse import urlencode, urlsplit

from ..errors import AirlockError, TransientError, UpstreamError

log = logging.getLogger(__name__)

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
REFERRER_PAGES = 8


@dataclass(frozen=True)
class ImportRequest:
    """One ``importImage`` call. The source is either a registry address (``registry_uri``, with
    ``username``/``password`` when it wants them) or another ACR by ``resource_id``: ACR then reads it
    with the caller's identity, so no address and no credentials are sent (ARM's ImportSource)."""

    registry_uri: Optional[str]      # host[:port] the ACR pulls from (None with resource_id)
    source_image: str                # repo:tag | repo@digest | repo:tag@digest
    target_tags: Sequence[str]       # repo:tag
    untagged_repositories: Sequence[str]
    mode: str                        # NoForce | Force
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)  # never logged, never recorded
    resource_id: Optional[str] = None  # a source ACR's ARM resource id

    def body(self) -> dict:
        if self.resource_id:
            source: dict = {"resourceId": self.resource_id, "sourceImage": self.source_image}
        else:
            source = {"registryUri": self.registry_uri, "sourceImage": self.source_image}
            if self.username and self.password:
                source["credentials"] = {"username": self.username, "password": self.password}
        body: dict = {"source": source, "mode": self.mode}
        if self.target_tags:
            body["targetTags"] = list(self.target_tags)
        if self.untagged_repositories:
            body["untaggedTargetRepositories"] = list(self.untagged_repositories)
        return body


class Acr:
    """Import through ARM (azure-mgmt-containerregistry); read digests on the data plane (registry.py)."""

    def __init__(self, clients, http):
        from .registry import ManifestReader
        from .registry_auth import AcrTokenAuth

        self._clients = clients
        self._settings = clients.settings
        audience = f"{self._settings.acr_audience}/.default"
        auth = AcrTokenAuth(http, lambda: clients.login_server,
                            lambda: clients.credential.get_token(audience).token)
        self._reader = ManifestReader(http, lambda: clients.login_server, auth, name="the ACR")

    def import_image(self, request: ImportRequest, *, timeout: float,
                     landed: Optional[Callable[[], bool]] = None) -> str:
        """Start an import and wait for it; raises on failure or when ``timeout`` passes.

        The long-running operation is polled every ``ACR_POLLING_INTERVAL`` seconds when ARM sends no
        ``Retry-After`` (azure-core's own default is 30 s). While it is pending, ``landed`` (a data-plane
        read of the target) is asked every ``ACR_PROBE_INTERVAL`` seconds; the import is finished as soon
        as it says the planned digest is in place ("probe"). Otherwise the operation's terminal state
        decides ("lro"): a failed import raises. A probe that fails (throttled, say) is not an answer.
        """
        s = self._settings
        poller = self._clients.registry_mgmt.registries.begin_import_image(
            s.resource_group, s.registry_name, request.body(), polling_interval=s.acr_polling_interval)
        deadline = time.monotonic() + timeout
        probe = s.acr_probe_interval if landed is not None else 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(f"import did not finish within {timeout:g}s", code="DeadlineExceeded")
            poller.wait(timeout=min(remaining, probe) if probe > 0 else remaining)
            if poller.done():
                poller.result()  # raises the operation's failure
                return "lro"
            if probe > 0:
                try:
                    if landed():
                        log.debug("import of %s seen on the data plane before its operation finished",
                                  request.target_tags or request.untagged_repositories)
                        return "probe"
                except AirlockError as exc:
                    log.debug("probe of an import's target failed (%s); still waiting", exc.code)

    def tag_digest(self, repository: str, tag: str) -> Optional[str]:
        """The digest a tag points at in the ACR, or None when the tag (or repository) is absent."""
        response = self._reader.head(repository, tag)
        return None if response is None else response.headers["Docker-Content-Digest"]

    def tag_digests(self, repository: str) -> dict[str, str]:
        """All tags of a repository with their digests (one listing instead of a HEAD per tag)."""
        return self._reader.acr_tag_digests(repository)

    def tag_pages(self, repository: str, *, after: str = "", through: Optional[str] = None,
                  max_pages: Optional[int] = None) -> tuple[dict[str, str], bool]:
        """Some tags of a repository with their digests, from after ``after`` until ``through`` or
        ``max_pages`` pages (``ManifestReader.acr_tag_pages``); and whether the listing is complete."""
        return self._reader.acr_tag_pages(repository, after=after, through=through, max_pages=max_pages)

    def prefetch_tokens(self, pull: list[str], metadata_read: list[str] = (), per_token: int = 50) -> int:
        """Data-plane tokens for many repositories, several per token request (see registry.py)."""
        scopes = [f"repository:{r}:pull" for r in pull] + [f"repository:{r}:metadata_read" for r in metadata_read]
        return self._reader.prefetch(scopes, per_token)

    def has_manifest(self, repository: str, digest: str) -> bool:
        return self._reader.head(repository, digest) is not None

    def login_server(self) -> str:
        return self._clients.login_server

    def manifest(self, repository: str, reference: str) -> Optional[tuple[str, bytes]]:
        """(content type, bytes) of a manifest (at most MAX_MANIFEST_BYTES), None when it is absent."""
        from .registry import MANIFEST_ACCEPT

        status, body, headers = self._reader.get_bounded(f"/v2/{repository}/manifests/{reference}",
                                                         f"repository:{repository}:pull", MANIFEST_ACCEPT,
                                                         MAX_MANIFEST_BYTES)
        if status == 404:
            return None
        return headers.get("Content-Type", "").split(";", 1)[0].strip(), body

    def referrers(self, repository: str, digest: str) -> Optional[list[dict]]:
        """The descriptors the ACR's referrers API lists for ``digest`` in ``repository`` (every page);
        None when the repository (or the API) is not there (404)."""
        from .registry import _next_link

        listed: list[dict] = []
        path: Optional[str] = f"/v2/{repository}/referrers/{digest}"
        for page in range(REFERRER_PAGES):
            status, body, headers = self._reader.get_bounded(path, f"repository:{repository}:pull", MEDIA_OCI_INDEX,
                                                             MAX_MANIFEST_BYTES)
            if status == 404:
                return None if page == 0 else listed
            try:
                manifests = json.loads(body).get("manifests")
            except (ValueError, AttributeError):
                raise UpstreamError(f"the ACR's referrers of {repository}@{digest} are not an image index",
                                    code="UnreadableReferrers") from None
            listed += [m for m in manifests or [] if isinstance(m, dict)]
            path = _next_link(headers.get("Link"))
            if not path:
                break
        return listed

    def push_artifact(self, repository: str, manifest: bytes, media_type: str, blobs: Sequence[bytes],
                      tags: Sequence[str]) -> str:
        """Upload ``blobs`` and PUT ``manifest`` under each of ``tags``; returns the manifest's digest."""
        scope = f"repository:{repository}:pull,push"
        try:
            for blob in blobs:
                self._push_blob(repository, scope, blob)
            digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            for reference in tags:
                answer = self._reader.send("PUT", f"/v2/{repository}/manifests/{reference}", scope,
                                           {"Content-Type": media_type}, manifest)
                _check(answer, f"PUT {repository}:{reference}")
                served = answer.headers.get("Docker-Content-Digest")
                if served and served != digest:
                    raise UpstreamError(f"the ACR stored {repository}:{reference} as {served}, expected {digest}",
                                        code="DigestMismatch")
            return digest
        except UpstreamError as exc:
            if exc.status in (401, 403):
                raise UpstreamError(f"the app's identity may not push to {repository} in the ACR ({exc.status}); "
                                    "it needs a role that pushes (AcrPush, infra/ROLES.md)", code="PushDenied",
                                    status=exc.status) from None
            raise

    def _push_blob(self, repository: str, scope: str, blob: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        head = self._reader.send("HEAD", f"/v2/{repository}/blobs/{digest}", scope, {})
        if head.status_code == 200:
            return
        started = self._reader.send("POST", f"/v2/{repository}/blobs/uploads/", scope, {}, b"")
        _check(started, f"start an upload to {repository}")
        location = urlsplit(started.headers.get("Location", ""))
        query = (location.query + "&" if location.query else "") + urlencode({"digest": digest})
        put = self._reader.send("PUT", f"{location.path}?{query}", scope,
                                {"Content-Type": "application/octet-stream"}, blob)
        _check(put, f"upload {digest} to {repository}")


def _check(response, what: str) -> None:
    from .registry_auth import _status_error

    if response.status_code >= 400:
        raise _status_error(response, f"the ACR ({what})")
