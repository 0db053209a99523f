"""A throttled managed-identity endpoint on a fresh process: transient, redelivered, and the run succeeds.

The worker runs in a process of its own (``python -m tests.queue_host``), so its credential starts with
empty caches, as a newly started Functions instance does: azure-identity's managed-identity credential
(through MSAL) then remembers a 429 / 5xx answer for its ``Retry-After`` and replays it to the next token
requests without a request, so the SDK clients of that process see failures that carry no status.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared import entrypoints

from .test_queued_runs import assert_every_entry_once, deliver_blob, manifest, records_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix():
    return f"mi{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("status", [429, 503])
def test_throttled_identity_endpoint_on_a_fresh_process_ends_in_a_successful_run(env, stack, seeded, functions,
                                                                                  queue_host, prefix, status):
    entrypoints.reset()
    count = 3
    name = f"{prefix}.txt"
    deliver_blob(functions, name, manifest(prefix, count))
    [queued] = records_for(name)
    assert queued["status"] == "queued"
    # the fault, as reported: 10 throttled token requests, Retry-After 1 s
    stack.emulator.faults.add("status", path=r"^/msi/token", status=status, times=10, retry_after=1)
    try:
        worker = subprocess.run([sys.executable, "-m", "tests.queue_host"], cwd=ROOT, env=dict(os.environ),
                                capture_output=True, text=True, timeout=240)
        left = stack.emulator.faults.rules
    finally:
        stack.emulator.faults.clear()
    assert worker.returncode == 0, worker.stderr[-3000:]
    [record] = records_for(name)
    assert record["status"] == "succeeded", [(e.get("result"), e.get("error")) for e in record.get("entries", [])]
    assert left == []  # the throttling did happen, and passed
    assert record["summary"]["imported"] == count
    assert_every_entry_once(record, count)
