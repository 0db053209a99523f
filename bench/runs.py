"""Queued runs at scale on Azure-like import timing: 1,000 entries of which 100 changed.

The stand-in runs the ``azure`` timing profile: each image's copy time c is 5-30 s (fixed per image;
BENCH_COPY_SECONDS=S makes every copy S s). A fixed c that is a multiple of a poll interval flatters
LRO polling (a poll lands just as the copy ends), so the default spread is the honest one. Floor:
ceil(100 / total concurrency) x the mean copy time (and never less than the longest copy), where total
concurrency = min(100, runner processes x imports one instance runs at once). A queued chunk plans
and sends each import as a message of its own, so an instance runs min(host.json batchSize +
newBatchThreshold, PYTHON_THREADPOOL_THREAD_COUNT) imports at once. The run is
started as the platform starts it: the manifest is uploaded and the registered blob trigger is called
with a real InputStream; the registered queue-triggered functions then run in ``python -m devstack
runner --processes N`` (N local instances). Scenarios, side by side in one run:

  1 process vs 4 processes (probe on, Retry-After: 10)
  LRO polling only (ACR_PROBE_INTERVAL=0) vs probe, with Retry-After: 10 and with no Retry-After
  LRO polling only with azure-core's own default interval (30 s; ACR_POLLING_INTERVAL=30), no Retry-After
  1 process vs 4 processes at 8 imports per instance (host.json batchSize 4 + newBatchThreshold 4, 8 threads)
  in place of the shipped 24: the other side of the trade-off in docs/architecture.md, "Scale-out"

Per-import overhead = an imported entry's duration in the run record minus its copy time (p50, p90). The
emulator's own count of imports in flight gives the concurrency actually reached, and its clock when
each import was accepted shows where a run's time goes (from the upload: first and last import
accepted, last copy ended, run final). Takes about a quarter of an hour.

For a quick look (not the issue's figures): BENCH_SCENARIOS=1,2 runs only those scenarios,
BENCH_ENTRIES / BENCH_CHANGED shrink the manifest, BENCH_KEEP_RECORDS=<dir> keeps each final record
(entry durations, queued/started/finished times), BENCH_RUNNER_LOG=<file> keeps the runners' logs.
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from .common import ROOT, push_backing, push_base, tag_many

ENTRIES = int(os.environ.get("BENCH_ENTRIES") or 1000)  # smaller for a quick look; the figures use 1000/100
CHANGED = int(os.environ.get("BENCH_CHANGED") or 100)
COPY = float(os.environ.get("BENCH_COPY_SECONDS") or 0)  # 0: the azure profile's 5-30 s per image
SYNC_CONCURRENCY = int(os.environ.get("BENCH_SYNC_CONCURRENCY", "8"))
RUN_TIMEOUT = 900.0
TERMINAL = frozenset({"succeeded", "failed", "abandoned", "invalid"})
REPOSITORY = "bench/runs"


@dataclass(frozen=True)
class Scenario:
    label: str
    processes: int
    probe_interval: float  # ACR_PROBE_INTERVAL; 0 = LRO polling only
    retry_after: str  # the emulator's import_retry_after: "10" or "none"
    polling_interval: str = ""  # ACR_POLLING_INTERVAL ("": the app's default)
    # (batchSize, newBatchThreshold, PYTHON_THREADPOOL_THREAD_COUNT) in place of host.json's and the
    # settings' (None: as shipped), to show another per-instance concurrency beside the shipped one
    queues: Optional[tuple[int, int, int]] = None

    def in_flight(self, shipped: int) -> int:
        """Imports one instance runs at once in this scenario."""
        return shipped if self.queues is None else min(self.queues[0] + self.queues[1], self.queues[2])


SCENARIOS = (
    Scenario("1 process,  probe, Retry-After 10", 1, 3, "10"),
    Scenario("4 processes, probe, Retry-After 10", 4, 3, "10"),
    Scenario("4 processes, LRO polling only, Retry-After 10", 4, 0, "10"),
    Scenario("4 processes, probe, no Retry-After", 4, 3, "none"),
    Scenario("4 processes, LRO polling only, no Retry-After", 4, 0, "none"),
    # what azure-core does when the client sets no polling_interval (a plain SDK loop, `az acr import`)
    Scenario("4 processes, LRO only, no Retry-After, 30 s", 4, 0, "none", "30"),
    # the other side of the per-instance trade-off (docs/architecture.md, "Scale-out"): 8 imports per
    # instance (batchSize 4 + newBatchThreshold 4, 8 threads) scale better in ratio, and are slower at both sizes
    Scenario("1 process,  probe, Retry-After 10, 8/instance", 1, 3, "10", queues=(4, 4, 8)),
    Scenario("4 processes, probe, Retry-After 10, 8/instance", 4, 3, "10", queues=(4, 4, 8)),
)


def _selected(scenarios: tuple, spec: str) -> tuple:
    """BENCH_SCENARIOS=1,2 runs only those (1-based) scenarios; empty runs them all."""
    if not spec.strip():
        return scenarios
    return tuple(scenarios[int(i) - 1] for i in spec.split(",") if i.strip())


@dataclass
class Result:
    scenario: Scenario
    wall: float
    status: str
    imported: int
    failed: int
    overheads: list[float]
    peak_in_flight: int
    copy_times: list[float]
    timeline: list[tuple[float, float]]  # (accepted, copy ended) of each import, seconds after the upload


def triggers(app) -> tuple[list[str], Optional[object]]:
    """(names of queue-triggered functions, the blob-triggered function or None) of a FunctionApp."""
    queue, blob = [], None
    for function in app.get_functions():
        trigger = function.get_trigger()
        kind = getattr(trigger, "type", None)
        if kind == "queueTrigger":
            queue.append(function.get_function_name())
        elif kind == "blobTrigger" and blob is None:
            blob = function
    return queue, blob


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def total_concurrency(processes: int, in_flight_per_process: int) -> int:
    """Imports the whole system runs at once: instances x import messages each (one import per message)."""
    return min(CHANGED, processes * in_flight_per_process)


def floor_seconds(concurrency: int, copy_times: list[float]) -> float:
    mean = statistics.fmean(copy_times) if copy_times else COPY
    return max(math.ceil(CHANGED / concurrency) * mean, max(copy_times, default=COPY))


def main(app=None) -> None:
    if app is None:
        import function_app

        app = function_app.app
    queue_functions, blob_function = triggers(app)
    if not queue_functions or blob_function is None:
        print("runs: the function app registers no queue-triggered function (or no blob trigger to start a run "
              "with); queued runs are not there to measure. Nothing was run.")
        return
    from devstack.queue_runner import QueueOptions, resolve_settings
    from devstack.stack import Stack

    options = QueueOptions.from_host_json(ROOT / "host.json")
    fixed = {"import_latency": COPY, "import_latency_max": 0.0} if COPY else {}
    with Stack(profile="azure", emulator_options=fixed) as stack:
        saved = dict(os.environ)
        try:
            results = _measure(stack, blob_function, saved, resolve_settings)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    chunk_entries = int(os.environ.get("RUN_CHUNK_ENTRIES") or 50)
    from devstack.queue_runner import worker_threads

    sample = json.loads((ROOT / "local.settings.sample.json").read_text()).get("Values", {})
    threads = worker_threads({**sample, **{k: v for k, v in os.environ.items() if k.startswith("PYTHON_")}})
    in_flight = min(options.batch_size + options.new_batch_threshold, threads)
    copies = results[0].copy_times if results else []
    copy_text = (f"every copy {COPY:g} s" if COPY else
                 f"copy times {min(copies, default=0):.1f}-{max(copies, default=0):.1f} s per image, "
                 f"mean {statistics.fmean(copies) if copies else 0:.1f} s")
    print(f"runs: {ENTRIES} entries, {CHANGED} changed, azure profile ({copy_text}), "
          f"RUN_CHUNK_ENTRIES {chunk_entries}, "
          f"{in_flight} imports in flight per instance (host.json batchSize {options.batch_size} + "
          f"newBatchThreshold {options.new_batch_threshold}, {threads} worker threads)")
    by_label = {}
    for r in results:
        concurrency = total_concurrency(r.scenario.processes, r.scenario.in_flight(in_flight))
        by_label[r.scenario.label] = r
        print(f"  {r.scenario.label:<48} {r.wall:7.1f} s  floor {floor_seconds(concurrency, r.copy_times):5.1f} s "
              f"(ceil({CHANGED}/{concurrency}) x copy)  {r.status}, {r.imported} imported, {r.failed} failed; "
              f"overhead over the copy p50 {percentile(r.overheads, 0.5):5.1f} s, "
              f"p90 {percentile(r.overheads, 0.9):5.1f} s; "
              f"peak imports in flight {r.peak_in_flight}")
        if r.timeline:
            accepted = [a for a, _ in r.timeline]
            print(f"  {'':<48} imports accepted from {min(accepted):.1f} s to {max(accepted):.1f} s "
                  f"(half by {statistics.median(accepted):.1f} s), last copy ended at "
                  f"{max(e for _, e in r.timeline):.1f} s, run final at {r.wall:.1f} s")
    for first, second in ((0, 1), (6, 7)):  # 1 vs 4 processes: as shipped, then at 8 per instance
        one, four = by_label.get(SCENARIOS[first].label), by_label.get(SCENARIOS[second].label)
        if one and four and four.wall:
            floors = [floor_seconds(total_concurrency(r.scenario.processes, r.scenario.in_flight(in_flight)),
                                    r.copy_times) for r in (one, four)]
            print(f"  speed-up 4 processes vs 1 at {one.scenario.in_flight(in_flight)} per instance: "
                  f"{one.wall / four.wall:.1f}x (their floors: {floors[0] / floors[1]:.1f}x)")


def _measure(stack, blob_function, saved_env: dict, resolve_settings) -> list[Result]:
    import azure.functions as func
    from azure.storage.blob import BlobServiceClient

    # app settings as `func start` has them: local.settings(.sample).json's Values, then the stand-in's
    sample = json.loads((ROOT / "local.settings.sample.json").read_text()).get("Values", {})
    # (a setting in the caller's environment wins over the sample: e.g. RUN_CHUNK_ENTRIES=63 to try one)
    base_env = {**{k: v for k, v in sample.items() if v and k not in saved_env}, **stack.env,
                "SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host, "SYNC_CONCURRENCY": str(SYNC_CONCURRENCY)}
    old, media_type = push_base(stack, REPOSITORY, seed="r1")
    new, _ = push_base(stack, REPOSITORY, seed="r2")
    backing_old, _ = push_backing(stack, REPOSITORY, seed="r1")
    assert backing_old == old, "the bench needs the same image upstream and in the ACR"
    tags = [f"v{i:04d}" for i in range(ENTRIES)]
    tag_many(stack, REPOSITORY, old, media_type, tags)
    tag_many(stack, REPOSITORY, old, media_type, tags, backing=True)
    changed = tags[::ENTRIES // CHANGED][:CHANGED]  # spread over every chunk
    text = "".join(f"{stack.upstream_host}/{REPOSITORY}:{t} => {REPOSITORY}\n" for t in tags)
    blobs = BlobServiceClient.from_connection_string(stack.connection_string)

    results = []
    for index, scenario in enumerate(_selected(SCENARIOS, os.environ.get("BENCH_SCENARIOS", ""))):
        tag_many(stack, REPOSITORY, new if index % 2 == 0 else old, media_type, changed)  # 100 move upstream
        env = {**base_env, "RUNS_QUEUE": f"bench-runs-{uuid.uuid4().hex[:8]}",
               "ACR_PROBE_INTERVAL": str(scenario.probe_interval)}
        if scenario.polling_interval:
            env["ACR_POLLING_INTERVAL"] = scenario.polling_interval
        if scenario.queues is not None:
            env["PYTHON_THREADPOOL_THREAD_COUNT"] = str(scenario.queues[2])
        os.environ.clear()
        os.environ.update({**saved_env, **env})
        _reset_product()
        stack.settings(import_retry_after=scenario.retry_after)
        path = resolve_settings(blob_function.get_trigger().path, os.environ, "blob trigger path")
        container = path.split("/", 1)[0]
        name = f"bench-{uuid.uuid4().hex[:8]}.txt"
        host_json = _host_json(scenario, index)
        runners = _start_runners(scenario.processes, os.environ, host_json)
        peak = _Peak(stack.emulator.importer)
        try:
            try:
                blobs.create_container(container)
            except Exception:  # noqa: BLE001 - exists already
                pass
            started, since = time.perf_counter(), time.monotonic()
            blobs.get_blob_client(container, name).upload_blob(text.encode(), overwrite=True)
            blob_function.get_user_function()(func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
            record = _wait_record(name)
            wall = time.perf_counter() - started
        finally:
            peak.stop()
            _stop_runners(runners)
            if scenario.queues is not None:
                os.unlink(host_json)
        keep = os.environ.get("BENCH_KEEP_RECORDS")  # a directory: each scenario's final record, to study
        if keep:
            os.makedirs(keep, exist_ok=True)
            with open(os.path.join(keep, f"record-{index + 1}.json"), "w") as out:
                json.dump(record, out, indent=1)
        entries = record.get("entries") or []
        imported = [e for e in entries if e.get("result") == "imported"]
        copy_of = stack.emulator.importer.copy_times()  # target -> the copy time the emulator gave it
        timed = [(e["duration_seconds"], copy_of.get(e.get("target", ""))) for e in imported
                 if e.get("duration_seconds") is not None]
        results.append(Result(scenario, wall, record.get("status", "?"), len(imported),
                              sum(1 for e in entries if e.get("result") == "failed"),
                              [duration - copy for duration, copy in timed if copy is not None],
                              peak.value, [copy for _, copy in timed if copy is not None],
                              stack.emulator.importer.timeline(since)))
        print(f"runs: {scenario.label}: {wall:.1f} s ({record.get('status')})", file=sys.stderr, flush=True)
    return results


def _reset_product() -> None:
    """Drop the product's cached clients/settings so the next run reads the new environment."""
    from shared import entrypoints

    reset = getattr(entrypoints, "reset", None)
    if reset is not None:
        reset()


def _wait_record(manifest_name: str) -> dict:
    from shared import entrypoints

    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        services = entrypoints.services()
        container = services.settings.outcomes_container
        for blob in services.store.list_names(container, "runs/"):
            record = services.store.get_json(container, blob)
            if record and (record.get("manifest") or {}).get("name") == manifest_name \
                    and record.get("status") in TERMINAL:
                return record
        time.sleep(0.5)
    raise TimeoutError(f"no finished run record for {manifest_name} within {RUN_TIMEOUT:g}s")


def _host_json(scenario: Scenario, index: int) -> str:
    """host.json as shipped, or a copy with the scenario's batchSize and newBatchThreshold."""
    if scenario.queues is None:
        return str(ROOT / "host.json")
    document = json.loads((ROOT / "host.json").read_text())
    document["extensions"]["queues"].update(batchSize=scenario.queues[0], newBatchThreshold=scenario.queues[1])
    path = os.path.join(tempfile.gettempdir(), f"bench-runs-host-{os.getpid()}-{index + 1}.json")
    with open(path, "w") as out:
        json.dump(document, out)
    return path


def _start_runners(processes: int, env, host_json: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "runner", "--processes", str(processes), "--app", "function_app:app",
         "--host-json", host_json],
        cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, text=True,
        stderr=open(env["BENCH_RUNNER_LOG"], "a") if env.get("BENCH_RUNNER_LOG") else subprocess.DEVNULL)
    started = 0
    deadline = time.monotonic() + 60
    while started < processes:  # each instance says which queues it reads once it is up
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the queue runner exited ({process.wait()})")
        if line.startswith("runner ") and "<-" in line:
            if not started:  # what the instances run with (host.json queues, worker threads)
                print(f"runs: {line.split('(', 1)[-1].rstrip().rstrip(')')}", file=sys.stderr, flush=True)
            started += 1
        if time.monotonic() > deadline:
            raise RuntimeError("the queue runner did not start in 60 s")
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    return process


def _stop_runners(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


class _Peak:
    """Samples the emulator's imports in flight (the concurrency actually reached)."""

    def __init__(self, importer) -> None:
        self.value = 0
        self._importer = importer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.value = max(self.value, self._importer.in_flight())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

