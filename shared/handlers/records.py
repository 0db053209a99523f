"""Saving and reading outcome records (one JSON blob per run in OUTCOMES_CONTAINER)."""
from __future__ import annotations

import re
from typing import Optional

from ..errors import NotFoundError, Problem, ValidationError
from . import runindex

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def record_name(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id or ""):  # fullmatch: "$" alone would let a trailing newline through
        raise ValidationError("invalid run id", [Problem("must be 1-100 letters, digits, '.', '_' or '-'",
                                                         field="run_id")])
    return f"runs/{run_id}.json"


def save(services, record: dict) -> str:
    """Write the record (and its entry in the run index); returns its blob URL."""
    url = services.store.put_json(services.settings.outcomes_container, record_name(record["run_id"]), record)
    runindex.update(services, record)
    return url


def load(services, run_id: str) -> dict:
    document: Optional[dict] = services.store.get_json(services.settings.outcomes_container, record_name(run_id))
    if document is None:
        raise NotFoundError(f"no run with id {run_id!r}")
    return document
