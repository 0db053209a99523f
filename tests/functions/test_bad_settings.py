"""A malformed setting stops every invocation before it writes anything, with the setting named.

The functions run in a process of their own: telemetry is configured once per process, so only a fresh
process shows what the first invocations of a newly started instance do.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .test_queued_runs import records_for

ROOT = Path(__file__).resolve().parents[2]
SECRET_PART = "0f1e2d3c-not-a-guid"

DELIVER = """
import json, os, sys
import azure.functions as func
from tests.queue_host import QueueHost, registered_functions

functions = registered_functions()
name, text = sys.argv[1], sys.argv[2]
seen = {"blob": None, "worker": []}
try:
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(),
                                                         name=os.environ["MANIFESTS_CONTAINER"] + "/" + name))
except Exception as exc:
    seen["blob"] = [type(exc).__name__, str(exc)]
host = QueueHost(functions)
for _ in range(2):
    host.once()
seen["worker"] = [[type(exc).__name__, str(exc)] for exc in host.errors]
print(json.dumps(seen))
"""


@pytest.mark.parametrize("value", [f"InstrumentationKey={SECRET_PART}",
                                   f"InstrumentationKey={SECRET_PART};IngestionEndpoint",
                                   "not a connection string"])
def test_malformed_appinsights_connection_string_is_a_config_error_before_any_record(env, functions, queue_host,
                                                                                    value):
    name = f"ai{uuid.uuid4().hex[:8]}.txt"
    child_env = {**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": value}
    done = subprocess.run([sys.executable, "-c", DELIVER, name, "library/busybox:1.36 => ai/busybox\n"], cwd=ROOT,
                          env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["blob"] is not None, (f"the blob trigger accepted the upload; records {records_for(name)}, "
                                      f"worker {seen['worker']}")
    kind, message = seen["blob"]
    assert kind == "ConfigError" and "APPLICATIONINSIGHTS_CONNECTION_STRING" in message, seen
    assert SECRET_PART not in message and SECRET_PART not in done.stderr  # the setting is a secret
    assert records_for(name) == []  # nothing queued, nothing left behind
    assert queue_host.pending() == 0
