"""Runs the field left half-done (issue 20 item 8): imports that landed after their worker died, chunk
messages that were never sent, and one outage reported as one alert.

The queue outage is real: the app reaches Azurite's queue endpoint through a TCP proxy on 127.0.0.1
that the test cuts (listener closed, every connection reset) and restores on the same port, so the
storage SDK sees refused connections, exactly as when the queue service is unreachable. Each test has
an outcomes container of its own, so the reaper sees only this test's runs.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from shared import entrypoints
from tests.functions.test_queued_runs import _wait_for, assert_every_entry_once, manifest, records_for, services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix():
    return f"r{uuid.uuid4().hex[:8]}"


@pytest.fixture
def slow_imports(stack):
    """Imports that take 3 s each on the emulator (its operation stays InProgress that long)."""
    stack.settings(import_latency=3)
    yield
    stack.settings(import_latency=1)


class CuttableProxy:
    """A TCP proxy from a free loopback port to ``target_port`` that can be cut and restored."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> "CuttableProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Close the listener and reset every open connection: new connections are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def own_outcomes(env):
    """An outcomes container of this test's own: the reaper's passes see only its runs."""
    env.setenv("OUTCOMES_CONTAINER", f"outcomes-{uuid.uuid4().hex[:10]}")
    entrypoints.reset()


@pytest.fixture
def queue_proxy(env, stack, own_outcomes):
    """The app's queue endpoint behind a CuttableProxy (blobs stay direct)."""
    proxy = CuttableProxy(stack.queue_port).start()
    direct = stack.env["AzureWebJobsStorage"]
    proxied = direct.replace(f":{stack.queue_port}/", f":{proxy.port}/")
    assert proxied != direct
    env.setenv("AzureWebJobsStorage", proxied)
    entrypoints.reset()
    yield proxy
    proxy.cut()


def reap(functions) -> None:
    functions["run_reaper"](TimerRequest())


def sent_count(run_id: str) -> dict | None:
    s = services()
    return s.store.get_json(s.settings.outcomes_container, f"runs-work/{run_id}/sent.json")


# -- a started import that landed is imported, not abandoned ----------------------------------------

def test_the_reaper_counts_a_started_import_that_landed_as_imported(env, stack, seeded, functions, own_outcomes,
                                                                    prefix, tmp_path, slow_imports):
    """A CLI sync killed while an import was in flight: ACR finishes an import it accepted, so when the
    reaper ends the run the target holds the planned digest. That entry is imported; only the entries
    never started end RunAbandoned."""
    env.setenv("SYNC_CONCURRENCY", "1")
    env.setenv("ACR_PROBE_INTERVAL", "0")
    entrypoints.reset()
    count = 3
    path = tmp_path / f"{prefix}.txt"
    path.write_text(manifest(prefix, count))
    cli = subprocess.Popen([sys.executable, "-m", "shared", "sync", str(path), "--json"], cwd=ROOT,
                           env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def in_flight() -> list[str]:  # keys started with no outcome yet, once ACR has accepted the import
        [record] = records_for(path.name) or [None]
        if record is None or not stack.emulator.importer.in_flight():
            return []
        started, done = (set(key_names(record["run_id"], kind)) for kind in ("started", "entries"))
        return sorted(started - done)

    try:
        [key, *_] = _wait_for(in_flight, 90, "an import in flight")
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
    [killed] = records_for(path.name)
    assert killed["status"] == "running"
    s = services()
    [marker] = [n for n in s.store.list_names(s.settings.outcomes_container, f"runs-work/{killed['run_id']}/started/")
                if n.endswith(f"/{key}.json")]
    planned = s.store.get_json(s.settings.outcomes_container, marker)["source_digest"]
    index = int(key) - 1
    _wait_for(lambda: s.acr.tag_digest(f"{prefix}/img{index}", f"t{index}") == planned, 60, "the import to land")

    env.setenv("RUN_DEADLINE_SECONDS", "1")
    entrypoints.reset()
    time.sleep(1.5)
    reap(functions)
    [record] = records_for(path.name)
    assert record["status"] == "abandoned"
    assert_every_entry_once(record, count)
    by_line = {e["line"]: e for e in record["entries"]}
    landed = by_line[int(key)]
    assert landed["result"] == "imported" and landed["target_digest"] == planned, landed
    never = [e for line, e in by_line.items() if line > int(key)]
    assert never and all(e["result"] == "failed" and e["error"]["code"] == "RunAbandoned" for e in never)


def test_a_started_import_that_did_not_land_stays_abandoned(env, stack, seeded, functions, own_outcomes, prefix,
                                                            tmp_path):
    """The check reads the target, it does not trust the marker: an import whose operation keeps failing
    (500 from importImage) has a started marker and no digest at the target, so it ends RunAbandoned."""
    env.setenv("SYNC_CONCURRENCY", "1")
    env.setenv("RETRY_BASE_SECONDS", "2")
    env.setenv("RETRY_MAX_ATTEMPTS", "10")
    entrypoints.reset()
    path = tmp_path / f"{prefix}.txt"
    path.write_text(manifest(prefix, 1))
    stack.emulator.faults.add("status", method="POST", path="/importImage$", status=500, times=1000)
    cli = subprocess.Popen([sys.executable, "-m", "shared", "sync", str(path), "--json"], cwd=ROOT,
                           env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any(key_names(r["run_id"], "started") for r in records_for(path.name)), 60,
                  "the import to start")
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        stack.emulator.faults.clear()
    env.setenv("RUN_DEADLINE_SECONDS", "1")
    entrypoints.reset()
    time.sleep(1.5)
    reap(functions)
    [record] = records_for(path.name)
    [entry] = record["entries"]
    assert record["status"] == "abandoned" and entry["error"]["code"] == "RunAbandoned"


def key_names(run_id: str, kind: str) -> list[str]:
    s = services()
    return [n.rsplit("/", 1)[1][:-len(".json")]
            for n in s.store.list_names(s.settings.outcomes_container, f"runs-work/{run_id}/{kind}/")]


# -- chunk messages that were never sent ------------------------------------------------------------

def test_a_resync_while_the_queue_is_unreachable_records_its_runs_and_the_reaper_sends_them(
        env, stack, seeded, functions, queue_host, queue_proxy, prefix, caplog):
    """The queue is unreachable during the re-sync timer: each manifest's run is recorded (one attempt
    at the queue, not one per manifest), the timer does not fail (a retry would record them all twice),
    one line says so. The reaper's passes send their messages once the queue answers; every run ends
    succeeded with each entry once."""
    s = services()
    names = [f"{prefix}-{i}.txt" for i in range(3)]
    for i, name in enumerate(names):
        s.store.put_bytes(s.settings.manifests_container, name, manifest(f"{prefix}{i}", 2).encode())
    queue_proxy.cut()
    with caplog.at_level(logging.WARNING):
        functions["resync_timer"](TimerRequest())  # does not raise
    queued = [r for name in names for r in records_for(name)]
    assert len(queued) == 3 and {r["status"] for r in queued} == {"queued"}
    assert [sent_count(r["run_id"])["sent"] for r in queued] == [0, 0, 0]
    lines = [r.getMessage() for r in caplog.records if "re-sync" in r.getMessage()]
    assert len(lines) == 1 and "3 run(s) are recorded" in lines[0], lines

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reap(functions)  # the queue is still down: the runs wait, one line
    assert [r["status"] for name in names for r in records_for(name)] == ["queued"] * 3
    waiting = [r.getMessage() for r in caplog.records if "wait for their chunk messages" in r.getMessage()]
    assert len(waiting) == 1 and "3 run(s)" in waiting[0]

    queue_proxy.start()
    reap(functions)
    assert all(sent_count(r["run_id"])["sent"] == 1 for r in queued)
    queue_host.drain(workers=3)
    for name in names:
        [record] = records_for(name)
        assert record["status"] == "succeeded" and record["summary"]["imported"] == 2, record
        assert_every_entry_once(record, 2)
    assert queue_host.by_kind == {"chunk": 3, "import": 6}


def test_a_run_whose_sends_fail_half_way_gets_the_rest_from_the_reaper(env, stack, seeded, functions, queue_host,
                                                                       queue_proxy, prefix):
    """Three chunk messages; the queue goes away after the first was sent (the proxy is cut between two
    sends). The trigger gets RunNotSent naming the run, the count says 1 of 3. The queue comes back and
    the first chunk runs; the reaper's next pass sends chunks 1 and 2 (not 0 again), and the run
    succeeds once."""
    from shared.handlers.runs import queue_run

    env.setenv("RUN_CHUNK_ENTRIES", "1")
    entrypoints.reset()
    s = services()
    real_send = s.runs_queue.send
    sends = []

    def send_then_cut(text: str) -> str:
        message_id = real_send(text)
        sends.append(text)
        queue_proxy.cut()  # the queue is unreachable from the next send on
        return message_id

    s.runs_queue.send = send_then_cut
    name = f"{prefix}.txt"
    with pytest.raises(Exception) as raised:
        queue_run(s, manifest(prefix, 3), name=name, trigger="http")
    del s.runs_queue.send
    [record] = records_for(name)
    run_id = record["run_id"]
    assert len(sends) == 1

    queue_proxy.start()  # the queue is back; only the reaper knows chunks 1 and 2 were never sent
    queue_host.drain()  # chunk 0 and its import: the run cannot finish without the others
    assert queue_host.by_kind == {"chunk": 1, "import": 1}
    assert records_for(name)[0]["status"] == "running"
    reap(functions)
    queue_host.drain(workers=2)
    assert queue_host.by_kind == {"chunk": 3, "import": 3}  # chunk 0 was not sent again
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == 3
    assert_every_entry_once(record, 3)
    # what the trigger was told, and the count the reaper sent from
    assert type(raised.value).__name__ == "RunNotSent" and run_id in str(raised.value)
    assert "2 of its 3 chunk message(s) could not be sent" in str(raised.value)
    assert sent_count(run_id)["sent"] == sent_count(run_id)["chunks"] == 3


def test_a_run_whose_sender_died_before_sending_is_sent_after_RUN_CLAIM_SECONDS(env, seeded, functions, queue_host,
                                                                                own_outcomes, prefix):
    """The record is written and the instance dies before any send (no count at all): within
    RUN_CLAIM_SECONDS the reaper leaves it (its sender may still be sending), after it the reaper sends
    every chunk message, and the run succeeds; a later pass sends nothing again."""
    from shared.handlers.runs import create_run

    env.setenv("RUN_CLAIM_SECONDS", "2")
    entrypoints.reset()
    record = create_run(services(), manifest(prefix, 2), name=f"{prefix}.txt", trigger="http")  # never sent
    reap(functions)
    assert queue_host.pending() == 0
    time.sleep(2.2)
    reap(functions)
    queue_host.drain()
    [done] = records_for(f"{prefix}.txt")
    assert done["status"] == "succeeded" and done["summary"]["imported"] == 2
    assert sent_count(record["run_id"])["sent"] == 1
    reap(functions)
    assert queue_host.pending() == 0


# -- one outage, one alert line ---------------------------------------------------------------------

def test_runs_abandoned_in_one_reaper_pass_make_one_alert_line(env, functions, own_outcomes, prefix, caplog):
    """Five runs whose messages never came are abandoned in one pass: each is counted and logged as a
    WARNING, and ONE ERROR line (the one the alert matches) names them all."""
    from shared.handlers.runs import create_run

    ids = [create_run(services(), manifest(f"{prefix}{i}", 1), name=f"{prefix}-{i}.txt", trigger="timer")["run_id"]
           for i in range(5)]
    env.setenv("RUN_DEADLINE_SECONDS", "1")
    entrypoints.reset()
    time.sleep(1.5)
    with caplog.at_level(logging.WARNING):
        reap(functions)
    alerts = [r for r in caplog.records if r.getMessage().startswith("AIRLOCK_RUN_FAILED") and r.levelno >= 40]
    warnings = [r for r in caplog.records if r.getMessage().startswith("AIRLOCK_RUN_FAILED") and r.levelno == 30]
    assert len(alerts) == 1, [r.getMessage() for r in alerts]
    line = alerts[0].getMessage()
    assert " runs=5 " in line and "status=abandoned" in line and "total=5" in line
    assert all(run_id in line for run_id in ids)
    assert len(warnings) == 5
    assert {r["status"] for i in range(5) for r in records_for(f"{prefix}-{i}.txt")} == {"abandoned"}
