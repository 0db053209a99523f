"""The run index: written whenever a record is saved, read by ``runs list`` and ``GET /api/runs``.

Names, entries, filters and tokens are pure (``shared.core.runindex``); this module does the blob
I/O. Reading never opens a record: a page of runs is one listing with metadata, newest first,
stopping at ``since``. Writing is a compare-and-swap on the entry's ETag, so two saves of the same
run racing each other cannot leave a finished run looking unfinished.
"""
from __future__ import annotations

import itertools
import logging
from datetime import datetime, timezone
from typing import Optional

from ..core import runindex as core

log = logging.getLogger(__name__)

PAGES = (100, 400, 1000)  # names per storage listing page: small first (most calls stop early), then larger
MAX_SCAN = 5000    # index entries looked at per call; a filtered call returns a token to go on


def update(services, record: dict) -> bool:
    """Create or update the run's index entry; False when it was left as it is (already finished).
    A failure is logged, not raised: the record itself is saved, only the listing would miss it."""
    created = core.created_at(record) or datetime.now(timezone.utc)
    name = core.index_name(created, record["run_id"])
    item = core.entry(record)
    container = services.settings.outcomes_container
    store = services.store
    try:
        if store.put_json_if(container, name, item, None, metadata=core.to_metadata(item)):
            return True  # the run's first save: created, one request
        for _ in range(5):
            current = store.get_metadata(container, name)
            if current is not None and not core.replaces(current[0].get("status"), item.get("status")):
                return False
            if store.put_json_if(container, name, item, current[1] if current else None,
                                 metadata=core.to_metadata(item)):
                return True
        log.warning("index entry of run %s kept changing; not updated", record["run_id"])
    except Exception as exc:  # noqa: BLE001 - the record is saved; the index must never fail the run
        log.warning("could not index run %s (%s); runs list will not show it", record["run_id"],
                    type(exc).__name__)
    return False


def list_runs(services, *, status: Optional[str] = None, since: Optional[datetime] = None, limit: int = 50,
              token: Optional[str] = None) -> dict:
    """``{"runs": [entry, ...], "next": token or None}``, newest first."""
    status = core.check_status(status)
    marker, after = core.decode_token(token)
    container = services.settings.outcomes_container
    runs: list[dict] = []
    scanned = 0
    for page_number in itertools.count():
        size = PAGES[min(page_number, len(PAGES) - 1)]
        items, next_marker = services.store.list_page(container, core.PREFIX, marker, size)
        for name, metadata in items:
            if after is not None and name <= after:
                continue
            entry = core.from_metadata(name, metadata)
            if entry is None:
                continue
            scanned += 1
            if since is not None and datetime.fromisoformat(entry["created_at"]) < since:
                return {"runs": runs, "next": None}  # names are newest first: nothing older is wanted
            if status is None or entry["status"] == status:
                runs.append(entry)
            if len(runs) == limit or scanned >= MAX_SCAN:
                return {"runs": runs, "next": core.encode_token(marker, name)}
        if next_marker is None:
            break
        marker = next_marker
    return {"runs": runs, "next": None}
