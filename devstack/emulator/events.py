"""Registry events: backing-registry notifications in, Event Grid (ACR schema) events out.

``to_event_grid`` turns one docker-distribution notification into an ImagePushed / ImageDeleted
event shaped like Event Grid's ContainerRegistry examples (dataVersion 2.0). ``EventBus`` keeps a
bounded history and delivers batches off the request path, on one worker thread: to subscribed
callables (tests) and, when configured, to ``event_sink_url`` as an Event Grid push delivery.
"""
from __future__ import annotations

import collections
import logging
import queue
import ssl
import threading
import uuid
from typing import Any, Callable

import httpx

log = logging.getLogger(__name__)

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
HISTORY_SIZE = 1000
SINK_TIMEOUT_SECONDS = 10.0

Subscriber = Callable[[list[dict[str, Any]]], None]


def to_event_grid(
    note: dict[str, Any],
    *,
    topic: str,
    login_server: str,
    location: str,
    media_type: str | None,
    event_time: str,
) -> dict[str, Any] | None:
    """One notification -> one Event Grid event, or None when ACR would not raise an event.

    ``media_type`` is the manifest media type for a delete notification (distribution does not
    send it); None means the deleted digest is not a known manifest (a blob, or a tag-only event).
    """
    target = note.get("target") or {}
    action = note.get("action")
    if action == "push" and target.get("mediaType") in MANIFEST_MEDIA_TYPES:
        event_type = "Microsoft.ContainerRegistry.ImagePushed"
        data_target = {
            key: target[key] for key in ("mediaType", "size", "digest", "length", "repository", "tag") if key in target
        }
    elif action == "delete" and target.get("digest") and media_type:
        event_type = "Microsoft.ContainerRegistry.ImageDeleted"
        data_target = {"mediaType": media_type, "digest": target["digest"], "repository": target.get("repository")}
    else:
        return None
    request = note.get("request") or {}
    event_id = note.get("id") or str(uuid.uuid4())
    repository = data_target["repository"]
    return {
        "id": event_id,
        "topic": topic,
        "subject": f"{repository}:{data_target['tag']}" if data_target.get("tag") else repository,
        "eventType": event_type,
        "data": {
            "id": event_id,
            "timestamp": note.get("timestamp") or event_time,
            "action": action,
            "location": location,
            "target": data_target,
            "request": {
                "id": request.get("id", ""),
                "host": login_server,
                "method": request.get("method", ""),
                "useragent": request.get("useragent", ""),
            },
        },
        "dataVersion": "2.0",
        "metadataVersion": "1",
        "eventTime": event_time,
    }


class EventBus:
    def __init__(self, config: Any, history_size: int = HISTORY_SIZE) -> None:
        self._config = config
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_size)
        self._subscribers: list[Subscriber] = []
        self._changed = threading.Condition()
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(events)`` for every emitted batch; returns an unsubscribe function."""
        with self._changed:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._changed:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._changed:
            self.history.extend(events)
            self._changed.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(target=self._deliver_forever, name="emulator-events", daemon=True)
                self._worker.start()
        self._queue.put(list(events))

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first event in the history satisfying ``predicate``, waiting up to ``timeout`` seconds."""
        with self._changed:
            found: list[dict[str, Any]] = []

            def seen() -> bool:
                found[:] = [event for event in self.history if predicate(event)][:1]
                return bool(found)

            if not self._changed.wait_for(seen, timeout):
                raise TimeoutError(f"no matching event within {timeout}s")
            return found[0]

    def close(self) -> None:
        with self._changed:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(None)
            worker.join(timeout=SINK_TIMEOUT_SECONDS)

    def _deliver_forever(self) -> None:
        ca = self._config.ca_cert_path
        verify = ssl.create_default_context(cafile=ca) if ca else True
        with httpx.Client(verify=verify, timeout=SINK_TIMEOUT_SECONDS) as client:
            while (batch := self._queue.get()) is not None:
                with self._changed:
                    subscribers = list(self._subscribers)
                for callback in subscribers:
                    try:
                        callback(batch)
                    except Exception:
                        log.exception("event subscriber %r failed", callback)
                if self._config.event_sink_url:
                    self._post(client, self._config.event_sink_url, batch)

    @staticmethod
    def _post(client: httpx.Client, url: str, batch: list[dict[str, Any]]) -> None:
        try:
            response = client.post(url, json=batch, headers={"aeg-event-type": "Notification"})
        except httpx.HTTPError as exc:
            log.warning("event sink %s unreachable: %s", url, exc)
            return
        if response.is_error:
            log.warning("event sink %s answered %d", url, response.status_code)
