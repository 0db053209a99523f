"""Run logs and uploaded build sources in the storage account (Azurite locally)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Optional

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings, generate_blob_sas

from .common import LOG_CONTAINER, SAS_HOURS, SOURCE_CONTAINER, _now

logger = logging.getLogger(__name__)


class BlobArea:
    """The run log blobs and build-source uploads in the storage account; failures are logged, not raised."""

    def __init__(self, connection_string: Optional[str]):
        self._conn = connection_string or ""
        self._service = None
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._conn)

    def _client(self) -> BlobServiceClient:
        with self._lock:
            if self._service is None:
                self._service = BlobServiceClient.from_connection_string(self._conn)
            return self._service

    def _container(self, name: str):
        container = self._client().get_container_client(name)
        if name not in self._ready:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            self._ready.add(name)
        return container

    @staticmethod
    def log_blob(run_id: str) -> str:
        return f"logs/{run_id}/rawtext.log"

    def start_log(self, run_id: str) -> None:
        try:
            self._container(LOG_CONTAINER).get_blob_client(self.log_blob(run_id)).create_append_blob(
                content_settings=_text_settings())
        except Exception as exc:  # noqa: BLE001 - storage trouble must not stop the run
            logger.warning("run %s: cannot create log blob: %s", run_id, type(exc).__name__)

    def append_log(self, run_id: str, text: str) -> None:
        try:
            blob = self._container(LOG_CONTAINER).get_blob_client(self.log_blob(run_id))
            blob.append_block(text.encode("utf-8"))
        except Exception as exc:  # noqa: BLE001
            logger.warning("run %s: cannot append to log blob: %s", run_id, type(exc).__name__)

    def sas_url(self, container: str, blob_name: str, permission: str) -> str:
        service = self._client()
        self._container(container)
        sas = generate_blob_sas(service.account_name, container, blob_name,
                                account_key=service.credential.account_key, permission=permission,
                                expiry=_now() + dt.timedelta(hours=SAS_HOURS))
        return f"{service.get_blob_client(container, blob_name).url}?{sas}"

    def source_size(self, relative_path: str) -> Optional[int]:
        try:
            blob = self._container(SOURCE_CONTAINER).get_blob_client(relative_path)
            return blob.get_blob_properties().size
        except ResourceNotFoundError:
            return None


def _text_settings() -> ContentSettings:
    return ContentSettings(content_type="text/plain; charset=utf-8")
