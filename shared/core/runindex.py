"""The run index, pure: names, entries, filters and page tokens. No I/O.

One small index blob per run, named by its creation time inverted, so that a prefix listing of
``index/runs/`` returns the newest run first and can stop at ``since`` without reading any record::

    index/runs/<9999999999999 - created ms, 13 digits>-<run id>.json

The creation time comes from the run id (``20261201T015130Z-b37de06c``), so every save of the same
run (queued, running, finished) names the same blob and updates it in place; ids without a time
fall back to the record's ``started_at``. The listing carries each blob's metadata (status, kind,
trigger, manifest, counts), so a page of runs costs one list request. A finished status is never
replaced by an unfinished one (a late "running" save cannot hide a failure).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Mapping, Optional
from urllib.parse import quote, unquote

from ..errors import Problem, ValidationError

PREFIX = "index/runs/"
_MAX_MS = 10**13 - 1
_NAME = re.compile(r"^index/runs/(\d{13})-([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.json$")
_ID_TIME = re.compile(r"^(\d{8}T\d{6}Z)-")
STATUSES = ("queued", "running", "succeeded", "failed", "invalid", "abandoned")
TERMINAL = frozenset({"succeeded", "failed", "invalid", "abandoned"})
MAX_LIMIT = 1000
_SINCE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def created_at(record: Mapping) -> Optional[datetime]:
    """When the run was created: the time in its id, else its ``started_at``; None when neither."""
    match = _ID_TIME.match(str(record.get("run_id", "")))
    if match:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    started = record.get("started_at")
    if isinstance(started, str):
        try:
            parsed = datetime.fromisoformat(started)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _inverted(when: datetime) -> int:
    return _MAX_MS - int(when.timestamp() * 1000)


def index_name(created: datetime, run_id: str) -> str:
    return f"{PREFIX}{_inverted(created):013d}-{run_id}.json"


def parse_index_name(name: str) -> Optional[tuple[datetime, str]]:
    match = _NAME.match(name)
    if not match:
        return None
    ms = _MAX_MS - int(match.group(1))
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc), match.group(2)


def entry(record: Mapping) -> dict:
    """The index entry of a record: what ``runs list`` shows."""
    summary = record.get("summary") or {}
    manifest = record.get("manifest") or {}
    return {"run_id": record["run_id"], "kind": record.get("kind"), "trigger": record.get("trigger"),
            "status": record.get("status"), "manifest": manifest.get("name"),
            "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
            "total": summary.get("total"), "imported": summary.get("imported"), "failed": summary.get("failed")}


def to_metadata(item: Mapping) -> dict[str, str]:
    """Blob metadata values must be ASCII: every value is percent-encoded; None is left out."""
    return {key: quote(str(value), safe="") for key, value in item.items() if value is not None}


def from_metadata(name: str, metadata: Mapping[str, str]) -> Optional[dict]:
    parsed = parse_index_name(name)
    if parsed is None:
        return None
    created, run_id = parsed
    out: dict = {"run_id": run_id, "created_at": created.isoformat()}
    for key in ("kind", "trigger", "status", "manifest", "started_at", "finished_at"):
        value = metadata.get(key)
        out[key] = unquote(value) if value is not None else None
    for key in ("total", "imported", "failed"):
        value = metadata.get(key)
        out[key] = int(value) if value is not None and value.isdigit() else None
    return out


def replaces(old_status: Optional[str], new_status: Optional[str]) -> bool:
    """May an index entry with ``old_status`` be overwritten by one with ``new_status``?"""
    return not (old_status in TERMINAL and new_status not in TERMINAL)


def parse_since(text: str, now: datetime, *, field: str = "since") -> datetime:
    """``30m``, ``24h``, ``7d``, ``90s`` before ``now``, or an ISO 8601 time (UTC when no offset)."""
    value = (text or "").strip()
    match = _SINCE.match(value)
    if match:
        try:
            return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError:  # further back than datetime goes: everything
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"invalid {field}", [Problem(
            f"expected a duration like 30m, 24h, 7d or an ISO 8601 time, got {value!r}", field=field)]) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def check_status(status: Optional[str]) -> Optional[str]:
    if status in (None, ""):
        return None
    if status not in STATUSES:
        raise ValidationError("invalid status", [Problem(f"must be one of {', '.join(STATUSES)}", field="status")])
    return status


def check_limit(raw, default: int = 50) -> int:
    if raw in (None, ""):
        return default
    text = str(raw).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise ValidationError("invalid limit", [Problem(f"must be a whole number from 1 to {MAX_LIMIT}",
                                                        field="limit")])
    return int(text)


def encode_token(marker: Optional[str], after: str) -> str:
    """Where the next page starts: the storage page marker it lies on and the last name returned."""
    raw = json.dumps({"m": marker, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    if not token:
        return None, None
    problem = ValidationError("invalid continuation token",
                              [Problem("use the 'next' value of the previous page unchanged", field="next")])
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise problem from None
    if (not isinstance(data, dict) or not isinstance(data.get("a"), str) or not data["a"].startswith(PREFIX)
            or not isinstance(data.get("m"), (str, type(None)))):
        raise problem
    return data["m"], data["a"]
