"""The Azure Monitor path for real: configure_azure_monitor (at the first run) exporting to an
ingestion endpoint on 127.0.0.1 that records what it receives. Runs in a fresh interpreter
(global OpenTelemetry providers are set once per process); anything not for 127.0.0.1 is sent to a
dead proxy, statsbeat is off and only the 'otel' resource detector runs (no IMDS call)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging
from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from shared import telemetry
from shared.config import Settings
import os

settings = Settings.from_env(os.environ, offline=True)
with telemetry.run_scope(telemetry.RunContext("20261201T010203Z-e2e00001", manifest="m.txt", trigger="cli",
                                              kind="sync"), settings=settings,
                         record_path="outcomes/runs/20261201T010203Z-e2e00001.json") as run:
    logging.getLogger("shared.handlers.sync").warning("import of %s failed", "team/app:1")
    run.finish({"status": "failed", "summary": {"total": 2, "imported": 1, "failed": 1, "unchanged": 0}})
for provider in (trace.get_tracer_provider(), get_logger_provider(), metrics.get_meter_provider()):
    provider.force_flush()
print(telemetry.configure(settings))
"""


class Ingestion(BaseHTTPRequestHandler):
    envelopes: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        items = json.loads(body)
        Ingestion.envelopes.extend(items if isinstance(items, list) else [items])
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_connection_string_exports_spans_metrics_and_logs_with_the_run_id(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingestion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS", "OTEL_"))}
        env.update({
            "APPLICATIONINSIGHTS_CONNECTION_STRING":
                f"InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=http://127.0.0.1:{port}/",
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel",
            # the distro's default sampler is rate-limited (5 traces/s) and may drop this one trace
            "OTEL_TRACES_SAMPLER": "always_on",
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1",
            "TMPDIR": str(tmp_path)})
        result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "azure-monitor"
    finally:
        server.shutdown()
    run_id = "20261201T010203Z-e2e00001"
    by_type: dict = {}
    for envelope in Ingestion.envelopes:
        by_type.setdefault(envelope["data"]["baseType"], []).append(envelope["data"]["baseData"])
    [span] = [d for d in by_type["RemoteDependencyData"] if d["name"] == "airlock.run"]
    assert span["properties"]["airlock.run_id"] == run_id and span["success"] is False
    messages = {d["message"]: d for d in by_type["MessageData"]}
    line = next(m for m in messages if m.startswith("AIRLOCK_RUN_FAILED"))
    assert f"run={run_id}" in line and messages[line]["severityLevel"] == 3  # Error
    assert messages[line]["properties"]["run_id"] == run_id
    assert messages[f"[run {run_id}] import of team/app:1 failed"]["properties"]["run_id"] == run_id
    metrics = [m for d in by_type["MetricData"] for m in d["metrics"]]
    assert any(m["name"] == "airlock.runs" for m in metrics)
