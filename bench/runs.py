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
  runs with many changes, each on a repository of its own with every copy 2 s (issue 20 item 9), 4 processes:
  9: 1,000 entries / 500 changed, 10: 1,000 / 100, 11: 10,000 / 1,000; the worker CPU per import of 9
  and of 11 is printed as a ratio to 10's (the cost of one import must not grow with its run's size nor
  with how many of its entries changed)

Per-import overhead = an imported entry's duration in the run record minus its copy time (p50, p90). The
emulator's own count of imports in flight gives the concurrency actually reached, and its clock when
each import was accepted shows where a run's time goes (from the upload: first and last import
accepted, last copy ended, run final). Worker CPU is the runner processes' user + system time from
the upload to the final record (/proc), divided by the run's imports; worker memory is the largest
peak RSS (VmHWM) of one runner process. Beside them, the stand-in's own CPU over the run (the emulator
runs on a thread of this process; the skopeo processes it starts; Azurite; the registries) and how
late the emulator wrote each import's tag, so a run slower than its floor shows whether the app or the
machine was short. Scenarios 1-8 take about a quarter of an hour; 9-11 about ten minutes more.

For a quick look (not the issue's figures): BENCH_SCENARIOS=1,2 runs only those scenarios (9,10,11 the
item 9 ones, alone), BENCH_ENTRIES / BENCH_CHANGED shrink the manifest of scenarios 1-8,
BENCH_KEEP_RECORDS=<dir> keeps each final record (entry durations, queued/started/finished times),
BENCH_RUNNER_LOG=<file> keeps the runners' logs, BENCH_RUN_TIMEOUT=<s> waits longer than 900 s for a run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
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
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_TIMEOUT") or 900)
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
    # a run of its own size on a repository of its own (0: BENCH_ENTRIES / BENCH_CHANGED on the shared
    # repository, whose changed tags move back and forth between scenarios), every copy ``copy`` s
    entries: int = 0
    changed: int = 0
    copy: float = 0.0

    def in_flight(self, shipped: int) -> int:
        """Imports one instance runs at once in this scenario."""
        return shipped if self.queues is None else min(self.queues[0] + self.queues[1], self.queues[2])

    @property
    def size(self) -> tuple[int, int]:
        """(entries, changed) of this scenario's manifest."""
        return (self.entries or ENTRIES, self.changed or CHANGED)


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
    # runs with many changes (issue 20 item 9): the per-import cost must not grow with the run's size
    # nor with how many of its entries changed; 2 s copies keep the floor low, so overhead shows
    Scenario("4 processes, 1,000 / 500 changed, 2 s copies", 4, 3, "10", entries=1000, changed=500, copy=2),
    Scenario("4 processes, 1,000 / 100 changed, 2 s copies", 4, 3, "10", entries=1000, changed=100, copy=2),
    Scenario("4 processes, 10,000 / 1,000 changed, 2 s copies", 4, 3, "10", entries=10000, changed=1000,
             copy=2),
)
SIZE_COMPARISONS = (  # (scenario, the one its per-import worker CPU is compared with), 1-based
    (9, 10), (11, 10))


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
    worker_cpu: float = 0.0  # CPU seconds of the runner processes from the upload to the final record
    worker_peak_mib: float = 0.0  # the largest peak RSS (VmHWM) of one runner process
    worker_peaks: Optional[list[float]] = None  # every runner process's peak RSS, MiB, smallest first
    standin_cpu: Optional[dict] = None  # CPU seconds of the stand-in's parts over the same time
    tag_delays: Optional[list[float]] = None  # seconds from an import's start to its tag being written

    @property
    def cpu_per_import_ms(self) -> float:
        return 1000 * self.worker_cpu / self.imported if self.imported else float("nan")


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


def total_concurrency(processes: int, in_flight_per_process: int, changed: int = 0) -> int:
    """Imports the whole system runs at once: instances x import messages each (one import per message)."""
    return min(changed or CHANGED, processes * in_flight_per_process)


def floor_seconds(concurrency: int, copy_times: list[float], changed: int = 0) -> float:
    mean = statistics.fmean(copy_times) if copy_times else COPY
    return max(math.ceil((changed or CHANGED) / concurrency) * mean, max(copy_times, default=COPY))


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
        entries, changed = r.scenario.size
        concurrency = total_concurrency(r.scenario.processes, r.scenario.in_flight(in_flight), changed)
        floor = floor_seconds(concurrency, r.copy_times, changed)
        by_label[r.scenario.label] = r
        sized = f" [{entries}/{changed}, copies {r.scenario.copy:g} s]" if r.scenario.entries else ""
        print(f"  {r.scenario.label:<48} {r.wall:7.1f} s  floor {floor:5.1f} s "
              f"(ceil({changed}/{concurrency}) x copy; {r.wall / floor:.1f}x)  {r.status}, {r.imported} imported, "
              f"{r.failed} failed; overhead over the copy p50 {percentile(r.overheads, 0.5):5.1f} s, "
              f"p90 {percentile(r.overheads, 0.9):5.1f} s; "
              f"peak imports in flight {r.peak_in_flight}{sized}")
        print(f"  {'':<48} worker CPU {r.worker_cpu:.1f} s over {r.scenario.processes} process(es), "
              f"{r.cpu_per_import_ms:.0f} ms per import; largest worker peak RSS {r.worker_peak_mib:.0f} MiB "
              f"(each process: {'/'.join(f'{m:.0f}' for m in r.worker_peaks or [])}; the one that finalised the "
              f"run built its record of every entry)")
        if r.standin_cpu:
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in r.standin_cpu.items())
            print(f"  {'':<48} stand-in CPU over the run: {parts} ({os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.1f} after it)")
        if r.tag_delays:
            print(f"  {'':<48} the emulator wrote an import's tag {percentile(r.tag_delays, 0.5):.1f} s (p50), "
                  f"{percentile(r.tag_delays, 0.9):.1f} s (p90) after the import began")
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
    for this, other in SIZE_COMPARISONS:  # the per-import cost must not grow with the run or its changes
        a, b = by_label.get(SCENARIOS[this - 1].label), by_label.get(SCENARIOS[other - 1].label)
        if a and b and a.imported and b.imported:
            print(f"  per-import worker CPU, {'/'.join(map(str, a.scenario.size))} vs "
                  f"{'/'.join(map(str, b.scenario.size))}: {a.cpu_per_import_ms:.0f} ms vs "
                  f"{b.cpu_per_import_ms:.0f} ms ({a.cpu_per_import_ms / b.cpu_per_import_ms:.2f}x); "
                  f"largest worker peak RSS {a.worker_peak_mib:.0f} vs {b.worker_peak_mib:.0f} MiB")


def _measure(stack, blob_function, saved_env: dict, resolve_settings) -> list[Result]:
    import azure.functions as func
    from azure.storage.blob import BlobServiceClient

    # app settings as `func start` has them: local.settings(.sample).json's Values, then the stand-in's
    sample = json.loads((ROOT / "local.settings.sample.json").read_text()).get("Values", {})
    selected = _selected(SCENARIOS, os.environ.get("BENCH_SCENARIOS", ""))
    largest = max([ENTRIES, *(s.size[0] for s in selected)])
    # (a setting in the caller's environment wins over the sample: e.g. RUN_CHUNK_ENTRIES=63 to try one)
    base_env = {**{k: v for k, v in sample.items() if v and k not in saved_env}, **stack.env,
                "SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host, "SYNC_CONCURRENCY": str(SYNC_CONCURRENCY),
                "MANIFEST_MAX_ENTRIES": str(max(largest, 5000))}
    shared_run = None  # (text, changed tags, old, new, media type) of the shared repository, made once
    blobs = BlobServiceClient.from_connection_string(stack.connection_string)
    config = stack.emulator.config  # the copy times the stack started with (the profile's, or BENCH_COPY_SECONDS)
    stack_settings = {"import_latency": config.import_latency, "import_latency_max": config.import_latency_max}

    results = []
    for index, scenario in enumerate(selected):
        if scenario.entries:  # a repository of its own: every tag as in the ACR, then `changed` move upstream
            repository = f"{REPOSITORY}-{index + 1}"
            text, changed, old, new, media_type = _prepare(stack, repository, *scenario.size)
            tag_many_parallel(stack, repository, new, media_type, changed)
            stack.settings(import_latency=scenario.copy, import_latency_max=0.0)
        else:
            if shared_run is None:
                shared_run = _prepare(stack, REPOSITORY, ENTRIES, CHANGED)
            text, changed, old, new, media_type = shared_run
            # the changed tags move upstream: to the new image, then back, so each scenario has them to import
            tag_many(stack, REPOSITORY, new if index % 2 == 0 else old, media_type, changed)
            stack.settings(**stack_settings)
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
        runners, pids = _start_runners(scenario.processes, os.environ, host_json)
        peak = _Peak(stack.emulator.importer)
        copies = _CopyLog()
        try:
            try:
                blobs.create_container(container)
            except Exception:  # noqa: BLE001 - exists already
                pass
            cpu_before = sum(_cpu_seconds(pid) for pid in pids)
            standin_before = _standin_cpu(stack)
            started, since = time.perf_counter(), time.monotonic()
            blobs.get_blob_client(container, name).upload_blob(text.encode(), overwrite=True)
            blob_function.get_user_function()(func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
            record = _wait_record(name)
            wall = time.perf_counter() - started
            worker_cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before
            standin = {k: v - standin_before.get(k, 0.0) for k, v in _standin_cpu(stack).items()}
            worker_peaks = sorted(_peak_rss_mib(pid) for pid in pids)
            worker_peak = worker_peaks[-1]
        finally:
            copies.stop()
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
                              stack.emulator.importer.timeline(since), worker_cpu, worker_peak, worker_peaks,
                              standin, copies.delays))
        print(f"runs: {scenario.label}: {wall:.1f} s ({record.get('status')}); worker CPU {worker_cpu:.1f} s, "
              f"{results[-1].cpu_per_import_ms:.0f} ms per import, largest peak RSS {worker_peak:.0f} MiB",
              file=sys.stderr, flush=True)
    return results


def _prepare(stack, repository: str, entries: int, changed: int) -> tuple[str, list[str], bytes, bytes, str]:
    """``entries`` tags of one image upstream and in the ACR's backing registry (the same image at both),
    and a second image upstream to move ``changed`` of them to: (the manifest's text, the changed tags
    spread over every chunk, the old image, the new one, their media type)."""
    old, media_type = push_base(stack, repository, seed="r1")
    new, _ = push_base(stack, repository, seed="r2")
    backing_old, _ = push_backing(stack, repository, seed="r1")
    assert backing_old == old, "the bench needs the same image upstream and in the ACR"
    tags = [f"v{i:05d}" if entries > 10000 else f"v{i:04d}" for i in range(entries)]
    tag_many_parallel(stack, repository, old, media_type, tags)
    tag_many_parallel(stack, repository, old, media_type, tags, backing=True)
    text = "".join(f"{stack.upstream_host}/{repository}:{t} => {repository}\n" for t in tags)
    return text, tags[::entries // changed][:changed], old, new, media_type


def tag_many_parallel(stack, repository: str, manifest: bytes, media_type: str, tags: list[str], *,
                      backing: bool = False, workers: int = 8) -> None:
    """``tag_many`` over ``workers`` threads (10,000 tags one by one take minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    slices = [tags[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda part: tag_many(stack, repository, manifest, media_type, part, backing=backing),
                      [part for part in slices if part]))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat utime and stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    """A process's peak resident set size so far (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_product() -> None:
    """Drop the product's cached clients/settings so the next run reads the new environment."""
    from shared import entrypoints

    reset = getattr(entrypoints, "reset", None)
    if reset is not None:
        reset()


def _wait_record(manifest_name: str) -> dict:
    """The final record of the run of ``manifest_name``: records of other runs are read once (the bench's
    own reads of large final records would otherwise compete with the workers), this run's until final."""
    from shared import entrypoints

    deadline = time.monotonic() + RUN_TIMEOUT
    others: set[str] = _wait_record.others  # record names of other manifests' runs, from earlier calls
    mine: Optional[str] = None
    while time.monotonic() < deadline:
        services = entrypoints.services()
        container = services.settings.outcomes_container
        names = [mine] if mine else [n for n in services.store.list_names(container, "runs/") if n not in others]
        for blob in names:
            record = services.store.get_json(container, blob)
            if not record:
                continue
            if (record.get("manifest") or {}).get("name") != manifest_name:
                others.add(blob)
                continue
            mine = blob
            if record.get("status") in TERMINAL:
                others.add(blob)
                return record
        time.sleep(0.5)
    raise TimeoutError(f"no finished run record for {manifest_name} within {RUN_TIMEOUT:g}s")


_wait_record.others = set()


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


def _start_runners(processes: int, env, host_json: str) -> tuple[subprocess.Popen, list[int]]:
    """The queue runner with ``processes`` instances, once each is up; (the runner, each instance's pid)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "runner", "--processes", str(processes), "--app", "function_app:app",
         "--host-json", host_json],
        cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, text=True,
        stderr=open(env["BENCH_RUNNER_LOG"], "a") if env.get("BENCH_RUNNER_LOG") else subprocess.DEVNULL)
    pids: list[int] = []
    deadline = time.monotonic() + 60
    while len(pids) < processes:  # each instance says which queues it reads (and its pid) once it is up
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the queue runner exited ({process.wait()})")
        if line.startswith("runner ") and "<-" in line:
            if not pids:  # what the instances run with (host.json queues, worker threads)
                print(f"runs: {line.split('(', 1)[-1].rstrip().rstrip(')')}", file=sys.stderr, flush=True)
            pids.append(int(line.split()[1].rstrip(":")))  # "runner <pid>: ..."
        if time.monotonic() > deadline:
            raise RuntimeError("the queue runner did not start in 60 s")
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
    return process, pids


def _stop_runners(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _standin_cpu(stack) -> dict[str, float]:
    """CPU seconds so far of the stand-in's parts: this process (the ACR emulator runs on a thread of it,
    beside the bench's own polling), the skopeo processes the emulator ran (children it reaped), Azurite
    and the registries."""
    own = os.times()
    found = {"emulator and bench": own.user + own.system, "skopeo": own.children_user + own.children_system}
    for name, pid in stack.children.items():
        try:
            key = "azurite" if name == "azurite" else "registries"
            found[key] = found.get(key, 0.0) + _cpu_seconds(pid)
        except OSError:
            pass
    return found


class _CopyLog(logging.Handler):
    """Collects the emulator's "import ... copied ... in X s" lines: X is how long after an import began
    its tag was written (the copy time when the emulator keeps up; more when it falls behind)."""

    PATTERN = re.compile(r" in ([0-9.]+)s \(copy time")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.delays: list[float] = []
        self._logger = logging.getLogger("devstack.emulator.registry")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.delays.append(float(match.group(1)))

    def stop(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


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

