"""Saving and reading outcome records (one JSON blob per run in OUTCOMES_CONTAINER)."""
from __future__ import annotations

from typing import Optional

from ..core.ids import RUN_ID, record_name  # noqa: F401 - re-exported: the record's name is part of this API
from ..errors import NotFoundError
from . import runindex


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
