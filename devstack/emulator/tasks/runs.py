"""Runs: the run clock (Queued -> Running -> pushes -> final), agents, logs, and the run's JSON."""
from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from devstack import oci

from .common import (ArmError, BUILD_STEPS, MASK, STEPS_AFTER_PUSH_ARG, TERMINAL, _bad, _base36, _iso, _not_found,
                     _now)
from .requests import (ImageRef, RunSpec, _registry_prefixes, _values_map, encoded_task_pushes, parse_image_name,
                       render_run_template)

if TYPE_CHECKING:
    from .state import TasksState

logger = logging.getLogger(__name__)


@dataclass
class Run:
    run_id: str
    seq: int
    spec: RunSpec
    images: list[ImageRef]
    status: str = "Queued"
    create_time: dt.datetime = field(default_factory=_now)
    last_updated: dt.datetime = field(default_factory=_now)
    start_time: Optional[dt.datetime] = None
    finish_time: Optional[dt.datetime] = None
    output_images: list[dict] = field(default_factory=list)
    error_message: Optional[str] = None
    waiting: bool = False  # reached the agent queue
    holds_agent: bool = False
    wake: threading.Event = field(default_factory=threading.Event)
    log_lines: list[str] = field(default_factory=list)

    @property
    def pool(self) -> Optional[str]:
        return self.spec.agent_pool

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class RunClock:
    """The run methods of ``TasksState`` (its lock, runs, pools and blobs)."""

    # -- scheduling

    def schedule(self, spec: RunSpec) -> Run:
        """Validate what depends on state, create the run (Queued) and start its clock."""
        with self._lock:
            if spec.agent_pool is not None:
                pool = self.pools.get(spec.agent_pool.lower())
                if pool is None:
                    raise _bad(f"The agent pool '{spec.agent_pool}' was not found in the registry.",
                               "AgentPoolNotFound")
                if pool.deleting is not None:
                    raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
                spec.agent_pool = pool.name
            seq = self._last_seq + 1
            run_id = f"cb{_base36(seq)}"
            images = self._resolve_images(spec, run_id)
            self._last_seq = seq
            run = Run(run_id=run_id, seq=seq, spec=spec, images=images)
            self.runs[run_id] = run
        logger.info("run %s scheduled: %s on pool %s", run_id, spec.kind, spec.agent_pool or "(shared)")
        return run

    def start(self, run: Run) -> None:
        if self.blobs.enabled:
            self.blobs.start_log(run.run_id)
        where = f"agent pool '{run.pool}'" if run.pool else "the shared pool"
        self.log(run, f"Queued a run with ID: {run.run_id} ({run.spec.kind}) on {where}")
        threading.Thread(target=self._drive, args=(run,), name=f"acr-run-{run.run_id}", daemon=True).start()

    def run_vars(self, run_id: str, platform: dict) -> dict[str, str]:
        return {"ID": run_id, "Registry": self.login_server, "RegistryName": self.config.registry_name,
                "OS": platform["os"].lower(), "Architecture": platform.get("architecture") or "amd64",
                "Date": _now().strftime("%Y%m%d-%H%M%Sz")}

    def _resolve_images(self, spec: RunSpec, run_id: str) -> list[ImageRef]:
        run_vars = self.run_vars(run_id, spec.platform)
        names = list(spec.image_names)
        if spec.task_text:
            names += encoded_task_pushes(spec.task_text, _values_map(spec), run_vars)
        prefixes = _registry_prefixes(self.login_server, self.config.registry_name)
        refs = [parse_image_name(render_run_template(n, run_vars), prefixes) for n in names]
        return list(dict.fromkeys(refs))

    # -- logs

    def log(self, run: Run, message: str) -> None:
        """Append a line to the run's log (memory and blob), secrets masked."""
        for secret in run.spec.secrets():
            message = message.replace(secret, MASK)
        line = f"{_now().strftime('%Y/%m/%d %H:%M:%S')} {message}\n"
        with self._lock:
            run.log_lines.append(line)
        if self.blobs.enabled:
            self.blobs.append_log(run.run_id, line)

    # -- the clock

    def _pause(self, run: Run, steps: float = 1.0, deadline: Optional[float] = None) -> str:
        """Wait ``steps`` run steps (re-reading the step length). 'ok', 'stopped' or 'deadline'."""
        began = time.monotonic()
        while True:
            if run.done or self._closed.is_set():
                return "stopped"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "deadline"
            end = began + steps * self.step_seconds() if math.isfinite(steps) else math.inf
            if now >= end:
                return "ok"
            limit = min(end, deadline if deadline is not None else math.inf) - now
            run.wake.wait(min(limit, 0.05))

    def _drive(self, run: Run) -> None:
        try:
            if self._pause(run) != "ok" or not self._acquire_agent(run):
                return
            self._execute(run)
        except Exception:  # noqa: BLE001 - the run ends in Error, the emulator keeps going
            logger.exception("run %s: emulator error", run.run_id)
            self.finish(run, "Error", "internal emulator error")
        finally:
            self._release(run)

    def _can_start(self, run: Run) -> bool:
        if run.pool is None:
            return True
        pool = self.pools.get(run.pool.lower())
        if pool is None:
            return False
        busy = sum(1 for r in self.runs.values() if r.holds_agent and r.pool == run.pool)
        if busy >= pool.active:
            return False
        first = min((r for r in self.runs.values() if r.waiting and not r.done and r.pool == run.pool),
                    key=lambda r: r.seq)
        return first is run

    def _try_start(self, run: Run) -> tuple[str, bool]:
        """Under the lock: ('started'|'stopped'|'missing'|'wait', pool has no agents)."""
        run.waiting = True
        if run.done or self._closed.is_set():
            return "stopped", False
        pool = self.pools.get(run.pool.lower()) if run.pool else None
        if run.pool and pool is None:
            return "missing", False
        if not self._can_start(run):
            return "wait", pool is not None and pool.active == 0
        run.waiting, run.holds_agent = False, True
        run.status, run.start_time = "Running", _now()
        run.last_updated = run.start_time
        return "started", False

    def _acquire_agent(self, run: Run) -> bool:
        """Wait (Queued) for an agent of the run's pool; False if the run ended meanwhile."""
        told = False
        while True:
            with self._cond:
                verdict, idle = self._try_start(run)
                if verdict == "wait" and told:
                    self._cond.wait(0.5)
                    continue
            if verdict == "started":
                break
            if verdict == "stopped":
                return False
            if verdict == "missing":
                self.finish(run, "Failed", f"the agent pool '{run.pool}' no longer exists")
                return False
            told = True
            why = "has no agents (count 0)" if idle else "has no free agent"
            self.log(run, f"Waiting for an agent: agent pool '{run.pool}' {why}")
        logger.info("run %s running", run.run_id)
        where = f"agent pool '{run.pool}'" if run.pool else "the shared pool"
        self.log(run, f"Run {run.run_id} started on {where} (platform {_platform_text(run.spec.platform)})")
        return True

    def _release(self, run: Run) -> None:
        with self._cond:
            run.waiting = False
            if run.holds_agent:
                run.holds_agent = False
                self._cond.notify_all()

    def _execute(self, run: Run) -> None:
        deadline = time.monotonic() + run.spec.timeout
        if not self._prepare_source(run):
            return
        outcome = run.spec.outcome()
        for number, text in enumerate(_build_lines(run.spec), start=1):
            self.log(run, f"Step {number}/{BUILD_STEPS}: {text}")
            waited = self._pause(run, 1.0, deadline)
            if waited != "ok":
                self._interrupted(run, waited)
                return
        if outcome == "hang":
            self.log(run, "The build step is not finishing (AIRLOCK_EMULATOR_HANG)")
            self._interrupted(run, self._pause(run, math.inf, deadline))
            return
        if outcome == "fail":
            self.finish(run, "Failed", "the build step failed: exit status 1 (emulated failure)")
            return
        if outcome == "timeout":
            self.finish(run, "Timeout", f"the run exceeded its timeout of {run.spec.timeout} seconds")
            return
        pushed = self._push_all(run)
        if pushed is None:
            return
        after = run.spec.steps_after_push()
        if after > 0:  # a later step of a multi-step task: the pushed images exist, the run goes on
            self.log(run, f"Step: running the steps after the push ({STEPS_AFTER_PUSH_ARG}={after:g})")
            waited = self._pause(run, after, deadline)
            if waited != "ok":
                self._interrupted(run, waited)
                return
        self.finish(run, "Succeeded", None, pushed)

    def _interrupted(self, run: Run, reason: str) -> None:
        if reason == "deadline":
            self.finish(run, "Timeout", f"the run exceeded its timeout of {run.spec.timeout} seconds")

    def _prepare_source(self, run: Run) -> bool:
        location = run.spec.source_location
        if not location:
            self.log(run, "No source location given: using an empty build context")
            return True
        if "://" in location or not self.blobs.enabled or run.spec.kind == "TaskRunRequest":
            self.log(run, f"Downloading source code from {_without_query(location)}")
            return True
        size = self.blobs.source_size(location)
        if size is None:
            self.finish(run, "Failed", f"the build source '{location}' was not found; "
                                       "upload it with the URL from listBuildSourceUploadUrl first")
            return False
        self.log(run, f"Downloaded uploaded source '{location}' ({size} bytes)")
        return True

    def _push_all(self, run: Run) -> Optional[list[dict]]:
        """Push the run's images; their outputImages entries, or None when the run ended meanwhile."""
        pushed: list[dict] = []
        if run.images and not run.spec.push:
            self.log(run, "Push is disabled: built images are not pushed")
        elif run.images:
            for ref in run.images:
                if run.done:
                    return None
                try:
                    digest = self._push_one(run, ref)
                except Exception as exc:  # noqa: BLE001 - any push failure fails the run
                    logger.warning("run %s: push of %s failed: %s", run.run_id, ref, str(exc)[:300])
                    self.finish(run, "Failed", f"failed to push {self.login_server}/{ref}")
                    return None
                pushed.append({"registry": self.login_server, "repository": ref.repository,
                               "tag": ref.tag, "digest": digest})
                self.log(run, f"Pushed {self.login_server}/{ref} digest: {digest}")
        return pushed

    def _push_one(self, run: Run, ref: ImageRef) -> str:
        plat = run.spec.platform
        platform = "/".join(p for p in (plat["os"].lower(), plat.get("architecture") or "amd64",
                                        plat.get("variant")) if p)
        layout = oci.build_image(ref.repository, platforms=(platform,), layers=1,
                                 seed=f"{run.run_id}|{ref}|{run.create_time.isoformat()}")
        host = re.sub(r"^https?://", "", self.config.backing_url).rstrip("/")
        return oci.push(layout, f"{host}/{ref}", tls_verify=False, retries=1, timeout=60)

    def finish(self, run: Run, status: str, message: Optional[str], output: Optional[list] = None) -> bool:
        """Move a run to a final status (once); logs the last line. False if it had already ended."""
        with self._cond:
            if run.done:
                return False
            run.status, run.error_message = status, message
            run.finish_time = run.last_updated = _now()
            run.output_images = output or []
            run.holds_agent = run.waiting = False
            run.wake.set()
            self._cond.notify_all()
        logger.info("run %s %s", run.run_id, status)
        elapsed = (run.finish_time - (run.start_time or run.create_time)).total_seconds()
        tail = f": {message}" if message else ""
        self.log(run, f"Run ID: {run.run_id} {_final_word(status)} after {elapsed:.1f}s{tail}")
        return True

    def cancel(self, run: Run) -> None:
        self.finish(run, "Canceled", None)

    # -- queries

    def get_run(self, run_id: str) -> Run:
        run = self.runs.get(run_id.lower())
        if run is None:
            raise _not_found("runs", run_id)
        return run

    def view(self, run: Run) -> dict:
        """The run's ARM JSON, read consistently (a run thread may be changing it)."""
        with self._lock:
            return run_json(self, run)

    def runs_newest_first(self) -> list[dict]:
        with self._lock:
            return [run_json(self, r) for r in sorted(self.runs.values(), key=lambda r: r.seq, reverse=True)]

    def queued_on(self, pool_name: str) -> int:
        with self._lock:
            return sum(1 for r in self.runs.values() if r.status == "Queued" and r.pool == pool_name)

    def active_runs_on(self, pool_name: str) -> int:
        with self._lock:
            return sum(1 for r in self.runs.values() if not r.done and r.pool == pool_name)


def _platform_text(platform: dict) -> str:
    return "/".join(p for p in (platform["os"].lower(), platform.get("architecture"), platform.get("variant")) if p)


def _without_query(url: str) -> str:
    """A source URL fit for the log: no query (SAS tokens) and no user:password@."""
    base = url.split("?", 1)[0]
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", base)


def _final_word(status: str) -> str:
    return {"Succeeded": "was successful", "Failed": "failed", "Canceled": "was canceled",
            "Timeout": "timed out", "Error": "ended with an error"}.get(status, status)


def _build_lines(spec: RunSpec) -> list[str]:
    if spec.dockerfile:
        args = " ".join(f"--build-arg {a.shown()}" for a in spec.arguments)
        target = f" --target {spec.target}" if spec.target else ""
        cache = " --no-cache" if spec.no_cache else ""
        return [f"docker build -f {spec.dockerfile}{target}{cache} {args}".rstrip(),
                "Successfully built the image layers"]
    what = spec.task_file or "encoded task"
    values = ", ".join(a.shown() for a in spec.values) or "no values"
    return [f"Running task definition {what} ({values})", "Task steps completed"]


# --- JSON shapes --------------------------------------------------------------------------------

def run_json(state: TasksState, run: Run) -> dict:
    spec = run.spec
    props = {
        "runId": run.run_id,
        "status": run.status,
        "lastUpdatedTime": _iso(run.last_updated),
        "runType": spec.run_type,
        "agentPoolName": spec.agent_pool,
        "createTime": _iso(run.create_time),
        "startTime": _iso(run.start_time),
        "finishTime": _iso(run.finish_time),
        "outputImages": list(run.output_images),
        "task": spec.task,
        "imageUpdateTrigger": None,
        "sourceTrigger": None,
        "timerTrigger": None,
        "platform": {k: v for k, v in spec.platform.items() if v is not None},
        "agentConfiguration": spec.agent_configuration,
        "sourceRegistryAuth": spec.source_registry_auth,
        "customRegistries": spec.custom_registries,
        "runErrorMessage": run.error_message,
        "updateTriggerToken": spec.update_trigger_token,
        "logArtifact": None,
        "provisioningState": "Succeeded",
        "isArchiveEnabled": spec.is_archive_enabled,
    }
    return {"id": f"{state.registry_id}/runs/{run.run_id}", "name": run.run_id,
            "type": "Microsoft.ContainerRegistry/registries/runs", "properties": props}


# --- $filter and $top for runs ------------------------------------------------------------------

FILTER_FIELDS = {"runid": "runId", "status": "status", "agentpoolname": "agentPoolName", "task": "task",
                 "taskname": "task", "runtype": "runType"}
CLAUSE_EQ = re.compile(r"^\s*(\w+)\s+(eq|ne)\s+'([^']*)'\s*$", re.I)
CLAUSE_CONTAINS = re.compile(r"^\s*contains\(\s*(\w+)\s*,\s*'([^']*)'\s*\)\s*$", re.I)


def _clause_matches(clause: str, props: dict) -> bool:
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")"):
        clause = clause[1:-1].strip()
    m = CLAUSE_EQ.match(clause)
    if m and m.group(1).lower() in FILTER_FIELDS:
        value = str(props.get(FILTER_FIELDS[m.group(1).lower()]) or "")
        equal = value.lower() == m.group(3).lower()
        return equal if m.group(2).lower() == "eq" else not equal
    m = CLAUSE_CONTAINS.match(clause)
    if m and m.group(1).lower() in FILTER_FIELDS:
        return m.group(2).lower() in str(props.get(FILTER_FIELDS[m.group(1).lower()]) or "").lower()
    logger.debug("runs $filter: clause ignored: %s", clause)
    return True


def filter_matches(expression: Optional[str], props: dict) -> bool:
    """A tolerant OData subset: ``f eq|ne 'v'``, ``contains(f,'v')`` joined by and/or; others ignored."""
    if not expression or not expression.strip():
        return True
    return any(all(_clause_matches(c, props) for c in re.split(r"\s+and\s+", group, flags=re.I))
               for group in re.split(r"\s+or\s+", expression, flags=re.I))


def _parse_top(value: Optional[str]) -> Optional[int]:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None
