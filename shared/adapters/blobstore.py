"""Blob storage: outcome records, manifests, once-only markers and leases (azure-storage-blob)."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Iterator, Optional

from ..errors import ConflictError

log = logging.getLogger(__name__)


class BlobStore:
    def __init__(self, service_client):
        self._service = service_client
        self._ready: set[str] = set()
        self._containers: dict = {}  # name -> ContainerClient (Azure SDK clients are thread-safe)

    def _container(self, name: str):
        from azure.core.exceptions import ResourceExistsError

        container = self._containers.get(name)
        if container is None:  # built once per name (one per call cost about a tenth of a read's CPU)
            container = self._containers.setdefault(name, self._service.get_container_client(name))
        if name not in self._ready:
            with contextlib.suppress(ResourceExistsError):
                container.create_container()
            self._ready.add(name)
        return container

    def url(self, container: str, name: str) -> str:
        return self._container(container).get_blob_client(name).url

    def put_json(self, container: str, name: str, document: dict) -> str:
        from azure.storage.blob import ContentSettings

        blob = self._container(container).get_blob_client(name)
        blob.upload_blob(json.dumps(document, indent=2, sort_keys=False).encode(), overwrite=True,
                         content_settings=ContentSettings(content_type="application/json"))
        return blob.url

    def get_bytes(self, container: str, name: str) -> Optional[bytes]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._container(container).get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError:
            return None

    def get_bytes_etag(self, container: str, name: str) -> tuple[Optional[bytes], Optional[str]]:
        """The blob's bytes and the ETag of exactly that version, or (None, None) when absent, including a
        name the service cannot address (400: it cannot hold such a blob, e.g. a name over 1,024
        characters or one Azurite resolves out of its container)."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            downloader = self._container(container).get_blob_client(name).download_blob()
            return downloader.readall(), downloader.properties.etag
        except ResourceNotFoundError:
            return None, None
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
            log.debug("blob name %r cannot be read back (400); treated as absent", name[:80])
            return None, None

    def get_json(self, container: str, name: str) -> Optional[dict]:
        data = self.get_bytes(container, name)
        return None if data is None else json.loads(data)

    def put_bytes(self, container: str, name: str, data: bytes, *, content_type: str = "text/plain") -> str:
        from azure.storage.blob import ContentSettings

        blob = self._container(container).get_blob_client(name)
        blob.upload_blob(data, overwrite=True, content_settings=ContentSettings(content_type=content_type))
        return blob.url

    def create_once(self, container: str, name: str, data: bytes = b"") -> bool:
        """Create ``name`` only if it does not exist; True when this call created it."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._container(container).get_blob_client(name).upload_blob(data, overwrite=False)
            return True
        except ResourceExistsError:
            return False

    def get_json_etag(self, container: str, name: str) -> tuple[Optional[dict], Optional[str]]:
        """The document and its ETag (for ``put_json_if``), or (None, None) when absent."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._container(container).get_blob_client(name).download_blob()
            return json.loads(downloader.readall()), downloader.properties.etag
        except ResourceNotFoundError:
            return None, None

    def put_json_if(self, container: str, name: str, document: dict, etag: Optional[str], *,
                    metadata: Optional[dict] = None) -> bool:
        """Write only if the blob still has ``etag`` (or, with None, does not exist); False when it changed."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        blob = self._container(container).get_blob_client(name)
        data = json.dumps(document, indent=2, sort_keys=False).encode()
        settings = ContentSettings(content_type="application/json")
        try:
            if etag is None:
                blob.upload_blob(data, overwrite=False, metadata=metadata, content_settings=settings)
            else:
                blob.upload_blob(data, overwrite=True, metadata=metadata, etag=etag,
                                 match_condition=MatchConditions.IfNotModified, content_settings=settings)
            return True
        except (ResourceModifiedError, ResourceExistsError):
            return False

    def delete(self, container: str, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._container(container).get_blob_client(name).delete_blob()

    def list_names(self, container: str, prefix: Optional[str] = None) -> list[str]:
        return [b.name for b in self._container(container).list_blobs(name_starts_with=prefix)]

    @contextlib.contextmanager
    def lease(self, container: str, name: str, *, seconds: int = 60, renew: bool = False) -> Iterator[None]:
        """Hold a blob lease for the duration of the block; ConflictError when someone else holds it.

        With ``renew`` the lease is renewed every ``seconds / 2`` while the block runs, so a long
        re-sync keeps it, and a crashed one loses it within ``seconds``.
        """
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        blob = self._container(container).get_blob_client(name)
        with contextlib.suppress(ResourceExistsError):
            blob.upload_blob(b"", overwrite=False)
        try:
            lease = blob.acquire_lease(lease_duration=seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:
                raise ConflictError(f"{container}/{name} is leased by another run") from exc
            raise
        stop = threading.Event()
        renewer = None
        if renew:
            def keep() -> None:
                while not stop.wait(seconds / 2):
                    try:
                        lease.renew()
                    except HttpResponseError:
                        log.warning("could not renew the lease on %s/%s", container, name)
            renewer = threading.Thread(target=keep, name="lease-renew", daemon=True)
            renewer.start()
        try:
            yield
        finally:
            stop.set()
            if renewer:
                renewer.join()
            with contextlib.suppress(HttpResponseError):
                lease.release()

    # -- index blobs (handlers.runindex): metadata in listings, conditional writes ----------
    def list_page(self, container: str, prefix: str, marker: Optional[str], size: int
                  ) -> tuple[list[tuple[str, dict]], Optional[str]]:
        """One listing page in name order: ([(name, metadata)], marker of the next page or None)."""
        pages = self._container(container).list_blobs(name_starts_with=prefix, include=["metadata"],
                                                      results_per_page=size).by_page(continuation_token=marker)
        page = next(pages, None)
        items = [(b.name, dict(b.metadata or {})) for b in page] if page is not None else []
        return items, pages.continuation_token or None

    def get_metadata(self, container: str, name: str) -> Optional[tuple[dict, str]]:
        """(metadata, etag) of a blob, or None when it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._container(container).get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return dict(props.metadata or {}), props.etag
