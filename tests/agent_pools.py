"""Test helpers for builds: a fast emulator run clock and throw-away agent pools (``itp-*``)."""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

STEP = 0.2


@contextlib.contextmanager
def fast_runs(stack, step: float = STEP) -> Iterator[None]:
    """Emulated runs and pool operations advance every ``step`` seconds inside the block."""
    before = stack.emulator.config.run_step_seconds
    stack.settings(run_step_seconds=step)
    try:
        yield
    finally:
        stack.settings(run_step_seconds=before)


def create_pool(services, stack, count: int) -> str:
    """A new agent pool with ``count`` instances, created through ARM; returns its name."""
    name = f"itp-{uuid.uuid4().hex[:8]}"
    s = services.settings
    body = {"location": stack.location, "properties": {"count": count, "tier": "S1", "os": "Linux"}}
    services.clients.tasks_mgmt.agent_pools.begin_create(s.resource_group, s.registry_name, name, body,
                                                         polling_interval=0.1).result()
    return name
