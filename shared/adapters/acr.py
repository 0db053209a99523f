"""The private ACR: server-side import (ARM) and reading what a tag points at (data plane)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import AirlockError, TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportRequest:
    registry_uri: str                # host[:port] the ACR pulls from
    source_image: str                # repo:tag | repo@digest | repo:tag@digest
    target_tags: Sequence[str]       # repo:tag
    untagged_repositories: Sequence[str]
    mode: str                        # NoForce | Force
    username: Optional[str] = None
    password: Optional[str] = None   # never logged, never recorded

    def body(self) -> dict:
        source: dict = {"registryUri": self.registry_uri, "sourceImage": self.source_image}
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
        from .registry import AcrTokenAuth, ManifestReader

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
