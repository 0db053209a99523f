"""ACR Event Grid events, in either the Event Grid or the CloudEvents schema. Pure: no I/O.

CloudEvents attribute names are read without regard to case: ACR's own published CloudEvents sample for
ImageDeleted spells ``specVersion``. azure-functions' Event Grid converter (1.26.0) recognises only
``specversion``; any other spelling reaches the app as an Event Grid event with its id, subject and data
and nothing else (no type, topic, time or data version). Such a body (none of the four envelope
fields) is taken for the CloudEvent it was: the type comes from ``data.action``, which ACR sets for each
of its event types, and the registry from ``data.request.host``. Whatever cannot be read this way is an
``EventFormatError``: the caller must not acknowledge it.

Which registry an event is about: ``topic`` / ``source`` is the registry's resource id (compared without
regard to case, as ARM compares ids); without one, ``data.request.host`` is its login server.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PREFIX = "Microsoft.ContainerRegistry."
KNOWN = ("ImagePushed", "ImageDeleted", "ChartPushed", "ChartDeleted")
# ACR's data.action for each of its event types (the Event Grid ContainerRegistry examples)
ACTIONS = {"push": "ImagePushed", "delete": "ImageDeleted", "chart_push": "ChartPushed",
           "chart_delete": "ChartDeleted"}
_ENVELOPE = ("topic", "eventType", "eventTime", "dataVersion")


class EventFormatError(ValueError):
    """The event is not a well-formed Event Grid / CloudEvents event."""


@dataclass(frozen=True)
class AcrEvent:
    id: str
    type: str                  # full type, e.g. Microsoft.ContainerRegistry.ImagePushed
    schema: str                # "eventgrid" | "cloudevents"
    subject: Optional[str]
    repository: Optional[str]
    tag: Optional[str]
    digest: Optional[str]
    media_type: Optional[str]
    time: Optional[str]
    source: Optional[str]      # topic / source: the registry's resource id
    host: Optional[str] = None  # data.request.host: the registry's login server

    @property
    def short_type(self) -> str:
        return self.type[len(PREFIX):] if self.type.startswith(PREFIX) else self.type

    @property
    def known(self) -> bool:
        return self.type.startswith(PREFIX) and self.short_type in KNOWN

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "schema": self.schema, "subject": self.subject,
                "repository": self.repository, "tag": self.tag, "digest": self.digest,
                "media_type": self.media_type, "time": self.time, "source": self.source, "host": self.host}

    def from_registry(self, registry_id: str, login_server) -> bool:
        """Is this event about the registry with ``registry_id``? ``login_server`` (a callable, asked only
        when the event names no resource id) gives that registry's login server."""
        if self.source:
            return same_resource_id(self.source, registry_id)
        return same_host(self.host or "", login_server())


def same_resource_id(a: str, b: str) -> bool:
    """ARM resource ids are compared without regard to case (and a trailing ``/``)."""
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def same_host(a: str, b: str) -> bool:
    return bool(a) and a.strip().lower() == b.strip().lower()


def _text(value, field: str, *, required: bool = False) -> Optional[str]:
    if value is None or value == "":
        if required:
            raise EventFormatError(f"missing {field}")
        return None
    if not isinstance(value, str):
        raise EventFormatError(f"{field} must be a string")
    return value


def _cloud_attributes(body: dict) -> Optional[dict]:
    """The attributes of a CloudEvent by lower-case name (None: not a CloudEvent)."""
    if not any(isinstance(k, str) and k.lower() == "specversion" for k in body):
        return None
    attributes: dict = {}
    for key, value in body.items():
        name = key.lower() if isinstance(key, str) else key
        if name in attributes:
            raise EventFormatError(f"attribute {name} is given twice (in different case)")
        attributes[name] = value
    return attributes


def _data(body: dict) -> dict:
    data = body.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EventFormatError("data must be an object")
    return data


def parse_event(body: dict) -> AcrEvent:
    """One event dict -> AcrEvent. Unknown event types parse fine (``known`` is False); an event with
    no id, no type (nor an ACR ``data.action``) or that names no registry is an EventFormatError."""
    if not isinstance(body, dict):
        raise EventFormatError("an event must be a JSON object")
    cloud = _cloud_attributes(body)
    data = _data(body)
    if cloud is not None:
        schema, fields, names = "cloudevents", cloud, ("type", "source", "time")
    elif all(body.get(name) is None for name in _ENVELOPE):
        # a CloudEvent the Functions converter did not recognise (see the module's docstring)
        action = data.get("action")
        if action not in ACTIONS:
            raise EventFormatError("no type (no eventType, no type), and data.action "
                                   f"{action!r} is not one of ACR's ({', '.join(ACTIONS)})")
        schema, fields, names = "cloudevents", {**body, "type": PREFIX + ACTIONS[action],
                                                "time": data.get("timestamp")}, ("type", "source", "time")
    else:
        schema, fields, names = "eventgrid", body, ("eventType", "topic", "eventTime")
    type_field, source_field, time_field = names
    event_id = _text(fields.get("id"), "id", required=True)
    event_type = _text(fields.get(type_field), type_field, required=True)
    target = data.get("target") or {}
    if not isinstance(target, dict):
        raise EventFormatError("data.target must be an object")
    request = data.get("request") or {}
    if not isinstance(request, dict):
        raise EventFormatError("data.request must be an object")
    event = AcrEvent(
        id=event_id, type=event_type, schema=schema, subject=_text(fields.get("subject"), "subject"),
        repository=_text(target.get("repository"), "data.target.repository"),
        tag=_text(target.get("tag"), "data.target.tag"),
        digest=_text(target.get("digest"), "data.target.digest"),
        media_type=_text(target.get("mediaType"), "data.target.mediaType"),
        time=str(fields.get(time_field)) if fields.get(time_field) else None,
        source=_text(fields.get(source_field), source_field),
        host=_text(request.get("host"), "data.request.host"))
    if event.known and event.short_type.startswith("Image") and not event.repository:
        raise EventFormatError("data.target.repository is required for image events")
    if not event.source and not event.host:
        raise EventFormatError(f"names no registry (no {source_field}, no data.request.host)")
    return event
