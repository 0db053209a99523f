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


class Reads:
    """The ACR adapter's tag reads, with what each answered (against the emulator)."""

    def __init__(self, read):
        self.read, self.answers = read, []

    def __call__(self, repository: str, tag: str):
        answer = self.read(repository, tag)
        self.answers.append(answer)
        return answer


def import_busybox(stack, **settings) -> tuple[dict, Reads]:
    """Import library/busybox:1.36 into a fresh target with these settings: (its entry, the tag reads)."""
    services = make_services(stack, **settings)
    services.acr.tag_digest = reads = Reads(services.acr.tag_digest)
    target = f"p{uuid.uuid4().hex[:8]}/bb:1"
    [entry] = SyncEngine(services).run(f"library/busybox:1.36 => {target}\n", name="timing",
                                       trigger="cli").to_dict()["entries"]
    return entry, reads


def test_probe_finishes_the_entry_before_the_operation(stack, slow_operations):
    entry, reads = import_busybox(stack, ACR_PROBE_INTERVAL="0.5", ACR_POLLING_INTERVAL="1")
    assert entry["result"] == "imported" and entry["target_digest"] == entry["source_digest"]
    # finished on the probe, well before the operation left InProgress
    assert entry["duration_seconds"] < LATENCY / 2
    # the plan's read and the probes saw no tag until the last probe saw the planned digest; nothing
    # read it back again after that
    assert reads.answers[:-1] == [None] * (len(reads.answers) - 1) and len(reads.answers) >= 2
    assert reads.answers[-1] == entry["source_digest"]


def test_without_the_probe_the_entry_is_read_back_after_the_operation(stack, seeded):
    entry, reads = import_busybox(stack, ACR_PROBE_INTERVAL="0", ACR_POLLING_INTERVAL="0.2")
    assert entry["result"] == "imported" and entry["target_digest"] == entry["source_digest"]
    # the plan's read, and the read-back that checks what the operation wrote
    assert reads.answers == [None, entry["source_digest"]]


def test_a_failed_operation_is_a_failure_even_with_the_probe_on(stack, slow_operations):
    stack.emulator.faults.add(kind="import-fail", times=1)
    entry, _ = import_busybox(stack, ACR_PROBE_INTERVAL="0.5", RETRY_MAX_ATTEMPTS="1")
    assert entry["result"] == "failed" and entry["target_digest"] is None
