"""Import timing: the data-plane probe finishes an entry as soon as the planned digest is at the target,
while the import's operation is still InProgress; the operation's terminal state still decides failures."""
from __future__ import annotations

import uuid

import pytest

from shared.handlers.sync import SyncEngine
from shared.services import Services

pytestmark = pytest.mark.usefixtures("clean_faults", "airlock_env")
LATENCY = 12  # seconds the emulator keeps an import's operation InProgress (the copy itself takes ~1 s)


@pytest.fixture
def slow_operations(stack, seeded):
    stack.settings(import_latency=LATENCY)
    yield
    stack.settings(import_latency=1)


def make_services(stack, **overrides) -> Services:
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5", **overrides})


def test_probe_finishes_the_entry_before_the_operation(stack, slow_operations):
    target = f"p{uuid.uuid4().hex[:8]}/bb:1"
    services = make_services(stack, ACR_PROBE_INTERVAL="0.5", ACR_POLLING_INTERVAL="1")
    [entry] = SyncEngine(services).run(f"library/busybox:1.36 => {target}\n", name="probe",
                                       trigger="cli").to_dict()["entries"]
    assert entry["result"] == "imported" and entry["target_digest"] == entry["source_digest"]
    # finished on the probe, well before the operation left InProgress
    assert entry["duration_seconds"] < LATENCY / 2


def test_a_failed_operation_is_a_failure_even_with_the_probe_on(stack, slow_operations):
    stack.emulator.faults.add(kind="import-fail", times=1)
    target = f"p{uuid.uuid4().hex[:8]}/bb:1"
    services = make_services(stack, ACR_PROBE_INTERVAL="0.5", RETRY_MAX_ATTEMPTS="1")
    [entry] = SyncEngine(services).run(f"library/busybox:1.36 => {target}\n", name="probe",
                                       trigger="cli").to_dict()["entries"]
    assert entry["result"] == "failed" and entry["target_digest"] is None
