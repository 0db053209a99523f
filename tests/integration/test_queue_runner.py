"""devstack's queue runner does for queue triggers what the Functions host does, against Azurite.

Each test defines its own tiny FunctionApp with a queue-triggered function, so nothing here depends
on the product's functions."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devstack.queue_runner import QueueOptions, QueueRunner, RunnerError
from devstack.stack import REPO_ROOT

pytestmark = pytest.mark.timeout(180)


def host_json(tmp_path: Path, **queues) -> Path:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {
        "maxPollingInterval": "00:00:00.200", **queues}}}))
    return path


def sender(stack, queue: str) -> QueueClient:
    client = QueueClient.from_connection_string(stack.connection_string, queue,
                                                message_encode_policy=TextBase64EncodePolicy())
    client.create_queue()
    return client


def raw_messages(stack, queue: str) -> list:
    client = QueueClient.from_connection_string(stack.connection_string, queue)
    return list(client.peek_messages(max_messages=32))


def app_with(handler) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%RUNNER_TEST_QUEUE%", connection="AzureWebJobsStorage")
    def work(msg: func.QueueMessage) -> None:
        handler(msg)

    return app


@pytest.fixture
def queue(stack, monkeypatch):
    name = f"runner-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("RUNNER_TEST_QUEUE", name)
    monkeypatch.setenv("AzureWebJobsStorage", stack.connection_string)
    return name


def test_the_function_gets_a_real_queue_message_and_success_deletes_it(stack, queue, tmp_path, caplog):
    caplog.set_level("INFO", logger="devstack.queue_runner")
    seen: list[func.QueueMessage] = []
    runner = QueueRunner(app_with(seen.append), host_json=host_json(tmp_path))
    sender(stack, queue).send_message(json.dumps({"run": "r1", "chunk": 0}))
    counters = runner.drain(idle=0.5)
    runner.close()
    [message] = seen
    assert isinstance(message, func.QueueMessage)
    assert message.get_json() == {"run": "r1", "chunk": 0} and message.dequeue_count == 1
    assert message.id and message.pop_receipt
    assert message.insertion_time <= message.time_next_visible and message.expiration_time > message.insertion_time
    assert (counters.succeeded, counters.failed) == (1, 0)
    assert raw_messages(stack, queue) == []
    # logged as the host logs an invocation, with how long the message waited in the queue
    said = [r.getMessage() for r in caplog.records if r.name == "devstack.queue_runner"]
    assert any(m.startswith(f"Executing 'work' (message {message.id}, dequeue count 1, inserted ") for m in said)
    assert any(m.startswith(f"Executed 'work' (Succeeded, message {message.id}, duration ") for m in said)


def test_an_exception_leaves_the_message_for_redelivery(stack, queue, tmp_path, caplog):
    caplog.set_level("INFO", logger="devstack.queue_runner")
    deliveries: list[int] = []

    def flaky(msg: func.QueueMessage) -> None:
        deliveries.append(msg.dequeue_count)
        if msg.dequeue_count == 1:
            raise RuntimeError("instance lost its way")

    runner = QueueRunner(app_with(flaky), host_json=host_json(tmp_path, visibilityTimeout="00:00:01"))
    sender(stack, queue).send_message("once")
    started = time.monotonic()
    counters = runner.drain(idle=1.5)
    runner.close()
    assert deliveries == [1, 2]
    assert (counters.succeeded, counters.failed, counters.poisoned) == (1, 1, 0)
    assert time.monotonic() - started >= 1.0  # came back after the visibility timeout, not before
    assert raw_messages(stack, queue) == []
    outcomes = [r.getMessage().split(" (")[1].split(",")[0] for r in caplog.records
                if r.name == "devstack.queue_runner" and r.getMessage().startswith("Executed 'work'")]
    assert outcomes == ["Failed", "Succeeded"]


def test_a_message_that_keeps_failing_goes_to_the_poison_queue(stack, queue, tmp_path):
    deliveries: list[int] = []

    def broken(msg: func.QueueMessage) -> None:
        deliveries.append(msg.dequeue_count)
        raise ValueError("cannot process " + msg.get_body().decode())

    runner = QueueRunner(app_with(broken), host_json=host_json(tmp_path, maxDequeueCount=3))
    sender(stack, queue).send_message("bad apple")
    counters = runner.drain(idle=1.0)
    runner.close()
    assert deliveries == [1, 2, 3]
    assert (counters.failed, counters.poisoned) == (3, 1)
    assert raw_messages(stack, queue) == []
    poisoned = QueueClient.from_connection_string(stack.connection_string, f"{queue}-poison",
                                                  message_decode_policy=None)
    assert [m.content for m in poisoned.peek_messages()] == [TextBase64EncodePolicy().encode("bad apple")]


def test_unset_settings_refuse_to_start(stack, queue, monkeypatch):
    monkeypatch.delenv("RUNNER_TEST_QUEUE")
    with pytest.raises(RunnerError, match="RUNNER_TEST_QUEUE"):
        QueueRunner(app_with(lambda msg: None))
    monkeypatch.setenv("RUNNER_TEST_QUEUE", queue)
    monkeypatch.delenv("AzureWebJobsStorage")
    runner = QueueRunner(app_with(lambda msg: None))
    with pytest.raises(RunnerError, match="AzureWebJobsStorage"):
        runner.poll_once()


def test_functions_run_on_the_python_workers_threads(stack, queue, tmp_path, monkeypatch):
    """host.json lets 12 messages be in flight; with PYTHON_THREADPOOL_THREAD_COUNT=3 (as the Python
    worker) at most 3 functions run at once, the rest wait for a thread; the default is min(32, CPUs + 4)."""
    from devstack.queue_runner import worker_threads

    assert worker_threads({}) == min(32, (os.cpu_count() or 1) + 4)
    for bad in ("0", "33", "many"):
        with pytest.raises(RunnerError, match="PYTHON_THREADPOOL_THREAD_COUNT"):
            worker_threads({"PYTHON_THREADPOOL_THREAD_COUNT": bad})
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "3")
    running, peak, lock = [0], [0], threading.Lock()

    def slow(msg) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1

    runner = QueueRunner(app_with(slow), host_json=host_json(tmp_path, batchSize=4, newBatchThreshold=8))
    client = sender(stack, queue)
    for i in range(9):
        client.send_message(json.dumps({"n": i}))
    counters = runner.drain(idle=1.0)
    runner.close()
    assert counters.succeeded == 9 and runner.worker_threads == 3
    assert peak[0] == 3


def test_host_json_queue_options(tmp_path):
    assert QueueOptions.from_host_json(tmp_path / "missing.json") == QueueOptions()
    options = QueueOptions.from_host_json(host_json(tmp_path, batchSize=4, maxDequeueCount=2,
                                                    visibilityTimeout="00:00:30", messageEncoding="none"))
    assert (options.batch_size, options.new_batch_threshold, options.max_dequeue_count) == (4, 2, 2)
    assert (options.visibility_timeout, options.max_polling_interval, options.message_encoding) == (30, 0.2, "none")
    for bad in ({"batchSize": 64}, {"visibilityTimeout": "soon"}, {"messageEncoding": "rot13"}):
        with pytest.raises(RunnerError):
            QueueOptions.from_host_json(host_json(tmp_path, **bad))


WORKER_APP = '''
import os, time
import azure.functions as func

app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%RUNNER_TEST_QUEUE%", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    time.sleep(0.3)
    line = f"{msg.get_body().decode()} {os.getpid()} {msg.dequeue_count}\\n"
    with open(os.environ["RUNNER_TEST_LOG"], "a") as log:
        log.write(line)
'''


def test_processes_share_a_queue_and_process_each_message_once(stack, queue, tmp_path):
    (tmp_path / "runner_test_app.py").write_text(textwrap.dedent(WORKER_APP))
    log = tmp_path / "processed.log"
    log.touch()
    messages = [f"m{i:02d}" for i in range(30)]
    client = sender(stack, queue)
    for text in messages:
        client.send_message(text)
    env = {**os.environ, "RUNNER_TEST_LOG": str(log), "RUNNER_TEST_QUEUE": queue,
           "AzureWebJobsStorage": stack.connection_string,
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])}
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "runner", "--processes", "3", "--app", "runner_test_app:app",
         "--host-json", str(host_json(tmp_path, batchSize=2))],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(log.read_text().splitlines()) < len(messages):
            assert process.poll() is None, output
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)  # anything processed twice would show up now
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        reader.join(timeout=5)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted(body for body, _, _ in lines) == messages  # every message once, none twice
    assert all(count == "1" for _, _, count in lines)
    assert len({pid for _, pid, _ in lines}) >= 2, lines  # shared between instances
    assert raw_messages(stack, queue) == []
    assert "".join(output).count("stopped; ") == 3, "".join(output)


def test_bench_runs_discovers_queue_triggers_and_exits_without_them(capsys):
    from bench import runs

    app = app_with(lambda msg: None)
    queue, blob = runs.triggers(app)
    assert (queue, blob) == (["work"], None)
    runs.main(app=app_with(lambda msg: None))  # no blob trigger to start a run with: says so, starts nothing
    assert "Nothing was run" in capsys.readouterr().out
    assert runs.total_concurrency(4, 12) == 48 and runs.total_concurrency(1, 12) == 12
    assert runs.total_concurrency(10, 12) == runs.CHANGED  # never more than the imports there are
    assert runs.floor_seconds(100, [10.0, 20.0]) == 20.0 and runs.floor_seconds(30, [10.0, 20.0]) == 60.0
    assert runs.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
