"""Test helper: the outcome records of one manifest, read from the outcomes container."""
from __future__ import annotations


def run_records_of(services, name: str) -> list[dict]:
    """Every run record whose manifest is ``name``, oldest first (by ``queued_at``; records without it,
    written by other tests, sort first)."""
    container = services.settings.outcomes_container
    found = [services.store.get_json(container, n) for n in services.store.list_names(container, "runs/")]
    return sorted((r for r in found if r and r.get("manifest", {}).get("name") == name),
                  key=lambda r: r.get("queued_at") or "")
