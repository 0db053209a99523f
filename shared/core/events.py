"""ACR Event Grid events, in either the Event Grid or the CloudEvents schema. Pure: no I/O."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PREFIX = "Microsoft.ContainerRegistry."
KNOWN = ("ImagePushed", "ImageDeleted", "ChartPushed", "ChartDeleted")


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

    @property
    def short_type(self) -> str:
        return self.type[len(PREFIX):] if self.type.startswith(PREFIX) else self.type

    @property
    def known(self) -> bool:
        return self.type.startswith(PREFIX) and self.short_type in KNOWN

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "schema": self.schema, "subject": self.subject,
                "repository": self.repository, "tag": self.tag, "digest": self.digest,
                "media_type": self.media_type, "time": self.time, "source": self.source}


def _text(value, field: str, *, required: bool = False) -> Optional[str]:
    if value is None or value == "":
        if required:
            raise EventFormatError(f"missing {field}")
        return None
    if not isinstance(value, str):
        raise EventFormatError(f"{field} must be a string")
    return value


def parse_event(body: dict) -> AcrEvent:
    """One event dict -> AcrEvent. Unknown event types parse fine (``known`` is False)."""
    if not isinstance(body, dict):
        raise EventFormatError("an event must be a JSON object")
    if "specversion" in body:
        schema, type_field, source_field, time_field = "cloudevents", "type", "source", "time"
    else:
        schema, type_field, source_field, time_field = "eventgrid", "eventType", "topic", "eventTime"
    event_id = _text(body.get("id"), "id", required=True)
    event_type = _text(body.get(type_field), type_field, required=True)
    data = body.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventFormatError("data must be an object")
    target = data.get("target") or {}
    if not isinstance(target, dict):
        raise EventFormatError("data.target must be an object")
    event = AcrEvent(
        id=event_id, type=event_type, schema=schema, subject=_text(body.get("subject"), "subject"),
        repository=_text(target.get("repository"), "data.target.repository"),
        tag=_text(target.get("tag"), "data.target.tag"),
        digest=_text(target.get("digest"), "data.target.digest"),
        media_type=_text(target.get("mediaType"), "data.target.mediaType"),
        time=str(body.get(time_field)) if body.get(time_field) else None,
        source=_text(body.get(source_field), source_field))
    if event.known and event.short_type.startswith("Image") and not event.repository:
        raise EventFormatError("data.target.repository is required for image events")
    return event
