"""What function_app.py calls: one Services per worker process, built on first use.

Kept apart from function_app.py so that the decorators stay declarative and so tests can
reset the cached services (``reset()``) after changing the environment.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

log = logging.getLogger(__name__)
_lock = threading.Lock()
_services = None
_asgi = None


def services():
    global _services
    with _lock:
        if _services is None:
            from .redact import install
            from .services import Services

            install()  # SAS signatures out of every record the worker's root handlers see
            _services = Services.from_env(os.environ)
        return _services


def reset() -> None:
    """Forget the cached services and HTTP app (settings are read again on next use)."""
    global _services, _asgi
    with _lock:
        _services = None
        _asgi = None


async def asgi_app(scope, receive, send):
    """The Starlette API, imported and built on the first request."""
    global _asgi
    from .telemetry import bind_invocation  # log records of threads serving this request reach the host

    bind_invocation(scope.get("azure_functions.thread_local_storage"), scope.get("azure_functions.invocation_id"))
    if _asgi is None:
        from .http.app import create_app

        _asgi = create_app(services)
    await _asgi(scope, receive, send)


def handle_blob(path: str, data: bytes, properties: Optional[dict] = None) -> None:
    """``properties``: the trigger's blob properties (the host's ``Properties`` metadata), for the ETag
    that identifies this upload."""
    from .handlers.triggers import on_manifest_blob

    on_manifest_blob(services(), path, data, _etag(properties))


def _etag(properties) -> Optional[str]:
    if not isinstance(properties, dict):
        return None
    for key in ("ETag", "Etag", "eTag", "etag"):
        if isinstance(properties.get(key), str) and properties[key]:
            return properties[key]
    return None


def handle_resync(*, past_due: bool) -> None:
    from .handlers.triggers import on_resync_timer

    on_resync_timer(services(), past_due=past_due)


def _bind(context) -> None:
    """Log records of the pool threads that work for this invocation reach the host's log stream
    (``shared.telemetry.bind_invocation``; azure-functions-python-worker issues 1158 and 1358)."""
    if context is not None:
        from .telemetry import bind_invocation

        bind_invocation(getattr(context, "thread_local_storage", None), getattr(context, "invocation_id", None))


def handle_run_message(message, context=None) -> None:
    """A run chunk from RUNS_QUEUE (func.QueueMessage): body and dequeue count."""
    from .handlers.runs import on_run_message

    _bind(context)
    on_run_message(services(), message.get_body(), message.dequeue_count or 1)


def handle_poison_message(message, context=None) -> None:
    """A run chunk the host moved to RUNS_QUEUE-poison after its deliveries ran out."""
    from .handlers.runs import on_poison_message

    _bind(context)
    on_poison_message(services(), message.get_body(), message.dequeue_count or 1)


def handle_reaper(*, past_due: bool) -> None:
    from .handlers.triggers import on_reaper_timer

    on_reaper_timer(services(), past_due=past_due)


def handle_pool_timer(*, past_due: bool) -> None:
    from .handlers.triggers import on_pool_timer

    on_pool_timer(services(), past_due=past_due)


def event_body(event) -> dict:
    """func.EventGridEvent or func.CloudEvent -> the dict of its schema."""
    if hasattr(event, "specversion"):
        return {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                "subject": event.subject, "time": event.time.isoformat() if event.time else None,
                "data": event.get_json() if hasattr(event, "get_json") else event.data}
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "eventTime": event.event_time.isoformat() if event.event_time else None,
            "dataVersion": event.data_version, "data": event.get_json()}


def handle_event(event) -> dict:
    from .handlers.triggers import on_registry_event

    return on_registry_event(services(), event_body(event))
