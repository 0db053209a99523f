"""``airlock serve`` runs the imports it accepts: its in-process queue worker (``shared.handlers.worker``)
against the local stand-in, as the real command (a subprocess, uvicorn, no other worker anywhere), and the
worker alone for what the Functions host does with failing messages (redelivery after the visibility
timeout, the dequeue count, poison queues) and for the reaper."""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from azure.storage.queue import QueueClient

from devstack import oci
from shared.handlers import records
from shared.handlers.worker import QueueOptions, RunWorker
from shared.services import Services
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "serve-key-" + uuid.uuid4().hex
pytestmark = pytest.mark.timeout(240)


def start_serve(tmp_path, stack, *extra: str, **env) -> tuple[subprocess.Popen, str, Path]:
    values = {**stack.env, "RUNS_QUEUE": f"runs-{uuid.uuid4().hex[:10]}", "RETRY_BASE_SECONDS": "0.05", **env}
    env_file = tmp_path / "serve.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "shared", "--env-file", str(env_file), "serve", "--port",
                                str(port), *extra], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base}/api/openapi.json", timeout=1)
            return process, base, log
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_serve_runs_the_imports_it_accepts_and_needs_its_key(tmp_path, stack, seeded):
    process, base, log = start_serve(tmp_path, stack, SERVE_API_KEY=KEY)
    prefix = f"s{uuid.uuid4().hex[:8]}"
    try:
        with httpx.Client(base_url=base, timeout=90) as api:
            body = [{"source": "library/busybox:1.36", "target": f"{prefix}/bb"}]
            assert api.post("/api/imports", json=body).status_code == 401
            # queued (202), and then run by serve's own worker: nothing else reads this queue
            queued = api.post("/api/imports", json=body, params={"code": KEY})
            assert queued.status_code == 202, queued.text
            location = queued.headers["location"]
            deadline = time.monotonic() + 60
            while (record := api.get(location, headers={"x-functions-key": KEY}).json())["status"] in (
                    "queued", "running"):
                assert time.monotonic() < deadline, record
                time.sleep(0.3)
            assert record["status"] == "succeeded" and record["summary"]["imported"] == 1, record
            health = api.get("/api/health", headers={"x-functions-key": KEY}).json()
            assert health["worker"]["running"] is True and health["worker"]["succeeded"] >= 2  # chunk + import
    finally:
        assert stop(process) == 0
    raw = oci.inspect_raw(f"{stack.backing_host}/{prefix}/bb:1.36", tls_verify=False)
    assert oci.sha256_digest(raw) == seeded["library/busybox:1.36"]
    text = log.read_text()
    assert "/api/imports?code=REDACTED" in text and KEY not in text  # uvicorn's access log, redacted


def test_serve_without_a_worker_refuses_imports(tmp_path, stack, seeded):
    process, base, _ = start_serve(tmp_path, stack, "--worker", "none")
    try:
        body = [{"source": "library/busybox:1.36", "target": "never/bb"}]
        refused = httpx.post(f"{base}/api/imports", json=body, timeout=30)
        assert refused.status_code == 503 and refused.json()["code"] == "NoQueueWorker"
        assert httpx.post(f"{base}/api/imports", params={"plan": "true"}, json=body, timeout=60).status_code == 200
        assert "worker" not in httpx.get(f"{base}/api/health", timeout=30).json()
    finally:
        assert stop(process) == 0


def test_a_bad_api_key_setting_stops_serve_before_the_port_opens(tmp_path, stack):
    env_file = tmp_path / "bad.env"
    env_file.write_text(stack.env_text() + "SERVE_API_KEY=short\n")
    done = subprocess.run([sys.executable, "-m", "shared", "--env-file", str(env_file), "serve", "--port",
                           str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SERVE_API_KEY" in done.stderr and "short" not in done.stderr


# -- the worker alone: what the host does with messages that fail ---------------------------------

@pytest.fixture
def services(stack, monkeypatch):
    stack.apply_env(monkeypatch)  # the managed-identity credential reads os.environ
    monkeypatch.setenv("RUNS_QUEUE", f"runs-{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("RUN_MAX_DEQUEUE_COUNT", "2")
    monkeypatch.setenv("RETRY_BASE_SECONDS", "0.05")
    return Services.from_env(dict(os.environ))


def raw_queue(stack, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(stack.connection_string, name)
    try:
        client.create_queue()
    except Exception:  # noqa: BLE001 - exists
        pass
    return client


def contents(stack, name: str) -> list[str]:
    return [m.content for m in raw_queue(stack, name).peek_messages(max_messages=32)]


def test_failing_messages_are_redelivered_after_the_visibility_timeout_then_poisoned(stack, services):
    name = services.settings.runs_queue
    raw_queue(stack, name).send_message("not base64 at all!")  # fails to decode on every delivery
    worker = RunWorker(services, options=QueueOptions(batch_size=4, new_batch_threshold=4, visibility_timeout=1.0,
                                                      max_polling_interval=0.2), reaper_interval=None)
    started = time.monotonic()
    counters = worker.drain(idle=2.5, timeout=60)
    worker.close()
    # RUN_MAX_DEQUEUE_COUNT=2 deliveries on the queue, 2 on its poison queue (run_poison fails to decode it
    # too), then it rests in the poison queue's own poison queue, as the host names it
    assert (counters.failed, counters.poisoned) == (4, 2)
    assert time.monotonic() - started >= 2.0  # each redelivery waited the visibility timeout
    assert contents(stack, name) == [] and contents(stack, f"{name}-poison") == []
    assert contents(stack, f"{name}-poison-poison") == ["not base64 at all!"]


def test_a_chunk_past_its_deliveries_is_recorded_failed_by_run_poison(stack, services, seeded):
    from shared.handlers.runs import queue_run

    prefix = f"p{uuid.uuid4().hex[:8]}"
    record = queue_run(services, f"library/busybox:1.36 => {prefix}/bb\n".encode(), name="poison.txt",
                       trigger="http")
    # the chunk message arrives with its deliveries spent (dequeue count past RUN_MAX_DEQUEUE_COUNT): the
    # worker moves it to the poison queue unrun, and run_poison records its entries failed, retryable
    queue = raw_queue(stack, services.settings.runs_queue)
    [message] = queue.receive_messages(max_messages=1, visibility_timeout=1)
    for _ in range(2):
        time.sleep(1.1)
        [message] = queue.receive_messages(max_messages=1, visibility_timeout=1)
    assert message.dequeue_count == 3
    time.sleep(1.1)
    worker = RunWorker(services, options=QueueOptions(batch_size=4, new_batch_threshold=4, visibility_timeout=0,
                                                      max_polling_interval=0.2), reaper_interval=None)
    counters = worker.drain(idle=1.5, timeout=60)
    worker.close()
    assert counters.poisoned == 1 and counters.succeeded == 1  # run_poison handled it
    final = records.load(services, record["run_id"])
    assert final["status"] == "failed", final
    [entry] = final["entries"]
    assert entry["result"] == "failed" and entry["error"]["retryable"] is True, entry


def test_valid_base64_that_is_not_a_run_message_is_dropped(stack, services):
    name = services.settings.runs_queue
    raw_queue(stack, name).send_message(base64.b64encode(b"{not a run message").decode())
    worker = RunWorker(services, options=QueueOptions(visibility_timeout=0, max_polling_interval=0.2),
                       reaper_interval=None)
    counters = worker.drain(idle=1.0, timeout=30)
    worker.close()
    assert (counters.succeeded, counters.failed) == (1, 0)  # on_run_message logs it and drops it
    assert contents(stack, name) == []


def test_the_worker_reaps_runs_nothing_executes(stack, services, monkeypatch):
    from shared.handlers.runs import queue_run

    monkeypatch.setenv("RUN_DEADLINE_SECONDS", "1")
    services = Services.from_env(dict(os.environ))
    record = queue_run(services, b"library/busybox:1.36 => reaped/bb\n", name="reap.txt", trigger="http")
    time.sleep(1.5)
    worker = RunWorker(services, reaper_interval=None)
    reaped = worker.reap()
    worker.close(0)
    assert record["run_id"] in [r["run_id"] for r in reaped]
    final = records.load(services, record["run_id"])
    assert final["status"] == "abandoned"
