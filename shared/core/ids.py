"""Run identifiers and where a run's record lives: shared by the handlers, the CLI, the HTTP API and
telemetry, so they sit below all of them.

Pure code: the clock and a random suffix are the only inputs. ``new_run_id`` gives
``YYYYmmddTHHMMSSZ-<8 hex>`` (sortable by creation time, unique across instances); ``upload_id`` names
one upload of a blob (its ETag: a second upload of the same bytes is a new upload); ``record_name``
checks any run id taken from outside (``RUN_ID``: what an HTTP path, a CLI argument or a queue
message may name) and returns the record's blob name, ``runs/<id>.json``.
"""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Optional

from ..errors import Problem, ValidationError

__all__ = ["RUN_ID", "new_run_id", "record_name", "upload_id"]

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def new_run_id(now: Optional[datetime] = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def record_name(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id or ""):  # fullmatch: "$" alone would let a trailing newline through
        raise ValidationError("invalid run id", [Problem("must be 1-100 letters, digits, '.', '_' or '-'",
                                                         field="run_id")])
    return f"runs/{run_id}.json"


def upload_id(etag: Optional[str], sha256: str) -> str:
    """One upload of a blob: ``etag-<ETag>`` (a re-upload of the same bytes has a new ETag, so it is a new
    upload), or ``sha256-<hex>`` when the ETag is not known (then equal bytes count as one upload)."""
    if etag:
        return "etag-" + etag.strip().strip('"').replace("W/", "")
    return "sha256-" + sha256
