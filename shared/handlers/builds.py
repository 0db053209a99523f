"""Builds on ACR agent pools: queue, follow and cancel them; pool status, scaling and the idle-pool timer.

A build request is validated by ``shared.core.builds.parse_build`` before it gets here. Before
anything is queued, ``queue_build`` checks that the agent pool (and, for a task run, the task)
exists; a pool at count 0 is then scaled up to ``POOL_SCALE_UP_COUNT`` so the run never waits
forever, and only then is the run scheduled.

Records in ``OUTCOMES_CONTAINER``:

    builds/<run id>.json                   a build queued through acr-airlock: trigger, pool,
                                           request (secret values as ***), the repositories it
                                           will push to as far as known (``outputs``;
                                           ``outputs_known`` false: a task whose steps are not
                                           visible, which may push anywhere), status transitions
                                           as observed, timings, output images with digests
                                           (the run's ``outputImages``: what it really pushed)
    scaling/<yyyy>/<mm>/<dd>/<time>-<pool>.json   every scale action (for a build, by the timer,
                                           or asked for with ``pool scale``)
    pools/<pool>.json                      the idle timer's memory: idle since, last decision

The log SAS URL is handed to callers but never written to a record or a log.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Optional

from ..adapters.tasks import RUNNING_STATUSES, PoolInfo
from ..core.builds import KIND_TASK
from ..core.pools import ScaleDecision, decide_scale, run_status_is_terminal
from ..core.outcome import redact
from ..errors import AirlockError, NotFoundError, Problem, ValidationError
from . import records

log = logging.getLogger(__name__)

MAX_POOL_COUNT = 100


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value else None


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def build_record_name(run_id: str) -> str:
    records.record_name(run_id)  # the same id rules as import runs (raises ValidationError, field run_id)
    return f"builds/{run_id}.json"


def _pool_state_name(pool: str) -> str:
    return f"pools/{pool.lower()}.json"


def _store(services):
    return services.store, services.settings.outcomes_container


# -- where a build runs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    pool: Optional[PoolInfo]         # the pool the run will use; None: shared compute (a task without one)
    request_pool: Optional[str]      # agentPoolName put into the run request
    outputs: tuple[str, ...]         # repositories the build pushes to, as far as known
    outputs_known: bool = True       # False: a task whose steps are not visible may push anywhere


def resolve_target(services, spec, *, outputs: tuple[str, ...] = ()) -> Target:
    """The pool and outputs of ``spec``; ValidationError naming the field when the pool or task is unknown."""
    tasks = services.tasks
    if spec.kind == KIND_TASK:
        task = _must_exist(lambda: tasks.task(spec.task), "/task", "TaskNotFound")
        pool_name, request_pool = spec.agent_pool or task.agent_pool, spec.agent_pool
        known = tuple(dict.fromkeys(task.repositories + tuple(outputs)))
        complete = task.pushes_known  # declared outputs are a claim; only a Docker step's imageNames are a fact
    else:
        pool_name = request_pool = spec.agent_pool or services.settings.build_default_pool
        if not pool_name:
            raise ValidationError("no agent pool for the build", [Problem(
                "name an agent pool in agent_pool, or set BUILD_DEFAULT_AGENT_POOL", field="/agent_pool")])
        known, complete = spec.outputs, True
    pool = _must_exist(lambda: tasks.pool(pool_name), "/agent_pool", "AgentPoolNotFound") if pool_name else None
    return Target(pool, request_pool, known, complete)


def _must_exist(fetch: Callable, field: str, code: str):
    try:
        return fetch()
    except NotFoundError as exc:
        raise ValidationError(exc.message, [Problem(exc.message, field=field)], code=code) from None


# -- queueing ----------------------------------------------------------------------------------

def queue_build(services, spec, *, trigger: str, origin: Optional[dict] = None,
                outputs: tuple[str, ...] = ()) -> dict:
    """Check, scale the pool up when it is at 0, schedule, record. Returns the build record.

    ``trigger`` is http, cli or rule; ``origin`` says what fired a rule build; ``outputs`` adds
    repositories a task run is declared to push to.
    """
    s = services.settings
    target = resolve_target(services, spec, outputs=outputs)
    body = spec.to_run_request(target.request_pool, registry_id=s.registry_id)
    secrets = spec.secrets()
    scaling = _scale_up_for_build(services, target.pool)
    try:
        run = services.tasks.schedule(body)
    except AirlockError as exc:
        if scaling:
            record_scaling(services, scaling, trigger=trigger, note="the build was then not queued")
        raise _scrubbed(exc, secrets) from None
    record = _new_record(services, spec, run, target, trigger, origin, scaling)
    services.store.put_json(s.outcomes_container, build_record_name(run.run_id), record)
    if scaling:
        record_scaling(services, scaling, trigger=trigger, run_id=run.run_id)
    if target.pool is not None:
        _save_pool_state(services, target.pool.name, idle_since=None,
                         last_build={"run_id": run.run_id, "at": record["created_at"]})
    log.info("queued build %s (%s, trigger %s) on %s", run.run_id, spec.kind, trigger,
             target.pool.name if target.pool else "the shared pool")
    return record


def _scrubbed(exc: AirlockError, secrets: tuple[str, ...]) -> AirlockError:
    """The same error with secret argument values replaced by ***."""
    exc.message = redact(exc.message, secrets)
    exc.args = (exc.message,)
    if isinstance(exc, ValidationError):
        exc.problems = [replace(p, message=redact(p.message, secrets)) for p in exc.problems]
    return exc


def _record(**fields) -> dict:
    """A build record: every key present, so readers never meet a half-shaped document."""
    return {"run_id": None, "kind": "build", "build_kind": None, "trigger": None, "origin": None,
            "registry": None, "agent_pool": None, "task": None, "request": None, "outputs": [],
            "outputs_known": None, "scaling": None,
            "status": None, "transitions": [], "created_at": None, "started_at": None, "finished_at": None,
            "queued_seconds": None, "duration_seconds": None, "output_images": [], "error": None,
            "cancel_requested_at": None, **fields}


def _new_record(services, spec, run, target: Target, trigger: str, origin: Optional[dict],
                scaling: Optional[dict]) -> dict:
    created = _iso(run.created or _now())
    return _record(run_id=run.run_id, build_kind=spec.kind, trigger=trigger, origin=origin,
                   registry=services.settings.registry_name, agent_pool=target.pool.name if target.pool else None,
                   task=spec.task, request=spec.redacted(), outputs=list(target.outputs),
                   outputs_known=target.outputs_known, scaling=scaling,
                   status=run.status, transitions=[{"status": run.status, "at": created}], created_at=created)


def _scale_up_for_build(services, pool) -> Optional[dict]:
    """Scale a pool at 0 up before a run is queued on it; returns the decision, or None."""
    if pool is None or pool.count > 0:
        return None
    s = services.settings
    decision = decide_scale(pool=pool.name, count=0, queued=1, running=0, idle_since=None, now=_now(),
                            idle_minutes=s.pool_idle_minutes, scale_up_count=s.pool_scale_up_count)
    services.tasks.scale(pool.name, decision.to_count)
    log.info("agent pool %s is at 0: scaled to %d for a new build", pool.name, decision.to_count)
    return {**decision.to_dict(), "reason": "a build was queued on a pool with no instances"}


# -- following ---------------------------------------------------------------------------------

def get_build(services, run_id: str, *, log_url: bool = True) -> dict:
    """The build record refreshed from ARM (a new transition when the status changed), plus ``log_url``.

    A run not queued through acr-airlock is shown from ARM alone (``trigger`` null) and not recorded.
    """
    store, container = _store(services)
    name = build_record_name(run_id)
    record = store.get_json(container, name)
    run = services.tasks.run(run_id)
    saved = record is not None
    if record is None:
        record = _foreign_record(services, run)
    if _refresh(record, run) and saved:
        store.put_json(container, name, record)
    view = dict(record)
    if log_url:
        view["log_url"] = _log_url(services, run_id)
    return view


def _foreign_record(services, run) -> dict:
    return _record(run_id=run.run_id, build_kind="task" if run.task else None,
                   registry=services.settings.registry_name, agent_pool=run.agent_pool, task=run.task,
                   created_at=_iso(run.created))


def _refresh(record: dict, run) -> bool:
    """Bring ``record`` up to date with ``run``; True when anything changed."""
    before = dict(record)
    if record.get("status") != run.status:
        at = run.finished if run_status_is_terminal(run.status) else run.started if run.status in RUNNING_STATUSES \
            else None
        record["transitions"] = [*record.get("transitions", []), {"status": run.status, "at": _iso(at or _now())}]
        record["status"] = run.status
    record["started_at"] = _iso(run.started)
    record["finished_at"] = _iso(run.finished)
    if run.started and run.created:
        record["queued_seconds"] = round((run.started - run.created).total_seconds(), 3)
    if run.finished:
        began = run.started or run.created
        record["duration_seconds"] = round((run.finished - began).total_seconds(), 3) if began else None
    record["output_images"] = [o.to_dict() for o in run.outputs]
    record["error"] = run.error
    return record != before


def _log_url(services, run_id: str) -> Optional[str]:
    try:
        return services.tasks.log_url(run_id)
    except AirlockError as exc:
        log.warning("no log link for run %s: %s", run_id, exc.code)
        return None


def cancel_build(services, run_id: str) -> dict:
    """Ask ARM to cancel the run (a finished run stays as it is); returns the refreshed build."""
    store, container = _store(services)
    name = build_record_name(run_id)
    services.tasks.cancel(run_id)
    record = store.get_json(container, name)
    if record is not None:
        record["cancel_requested_at"] = _iso(_now())
        store.put_json(container, name, record)
    log.info("cancel requested for build %s", run_id)
    return get_build(services, run_id)


def follow_build(services, run_id: str, *, on_log: Optional[Callable[[str], None]] = None,
                 poll_seconds: float = 2.0, timeout: Optional[float] = None,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll until the run ends (or ``timeout`` seconds pass); stream new log text to ``on_log``."""
    deadline = time.monotonic() + timeout if timeout else None
    url: Optional[str] = None
    offset = 0
    while True:
        view = get_build(services, run_id, log_url=url is None)
        url = url or view.get("log_url")
        view["log_url"] = url
        if on_log and url:
            text, offset = services.tasks.log_text(url, offset)
            if text:
                on_log(text)
        if run_status_is_terminal(view["status"]) or (deadline and time.monotonic() > deadline):
            if on_log and url:  # the last lines may land just after the status changes
                text, offset = services.tasks.log_text(url, offset)
                if text:
                    on_log(text)
            return view
        sleep(poll_seconds)


# -- pools ---------------------------------------------------------------------------------------

def _pool_state(services, pool: str) -> dict:
    store, container = _store(services)
    return store.get_json(container, _pool_state_name(pool)) or {}


def _save_pool_state(services, pool: str, **changes) -> None:
    store, container = _store(services)
    state = {**_pool_state(services, pool), "pool": pool, **changes, "updated_at": _iso(_now())}
    store.put_json(container, _pool_state_name(pool), state)


def record_scaling(services, decision: dict, *, trigger: str, run_id: Optional[str] = None,
                   note: Optional[str] = None) -> str:
    """Write one scaling record; returns its blob name."""
    store, container = _store(services)
    now = _now()
    name = f"scaling/{now:%Y/%m/%d}/{now:%H%M%S%f}-{decision['pool'].lower()}.json"
    store.put_json(container, name, {**decision, "trigger": trigger, "at": _iso(now), "run_id": run_id,
                                     "note": note})
    return name


def pool_status(services, name: Optional[str] = None) -> list[dict]:
    """Every agent pool (or one): instances, queued and running runs, the idle timer's view."""
    tasks = services.tasks
    pools = [tasks.pool(name)] if name else tasks.pools()
    running = tasks.running_on()
    out = []
    for pool in sorted(pools, key=lambda p: p.name.lower()):
        state = _pool_state(services, pool.name)
        out.append({"name": pool.name, "count": pool.count, "tier": pool.tier, "os": pool.os,
                    "provisioning_state": pool.provisioning_state, "queued": tasks.queued(pool.name),
                    "running": running.get(pool.name.lower(), 0), "idle_since": state.get("idle_since"),
                    "last_decision": state.get("last_decision")})
    return out


def scale_pool(services, name: str, count: int, *, trigger: str = "cli") -> dict:
    """Set a pool's instance count by hand; recorded like every other scaling decision."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_POOL_COUNT:
        raise ValidationError("invalid instance count",
                              [Problem(f"must be a whole number from 0 to {MAX_POOL_COUNT}", field="count")])
    pool = services.tasks.pool(name)
    action = "scale_up" if count > pool.count else "scale_down" if count < pool.count else "none"
    decision = ScaleDecision(pool.name, action, pool.count, count, f"asked for {count} instance(s) ({trigger})")
    if action != "none":
        services.tasks.scale(pool.name, count)
    record_scaling(services, decision.to_dict(), trigger=trigger)
    _save_pool_state(services, pool.name, idle_since=None, last_decision={**decision.to_dict(), "at": _iso(_now())})
    return pool_status(services, pool.name)[0]


def scale_idle_pools(services, *, now: Optional[datetime] = None) -> list[dict]:
    """The timer: scale idle pools to 0 (and pools at 0 with queued runs up). One decision per pool."""
    now = now or _now()
    tasks = services.tasks
    running = tasks.running_on()
    decisions = []
    for pool in tasks.pools():
        try:
            decisions.append(_tick(services, pool, running.get(pool.name.lower(), 0), now))
        except AirlockError as exc:
            log.warning("idle-pool timer: agent pool %s: %s: %s", pool.name, exc.code, exc.message)
            decisions.append({"pool": pool.name, "action": "error", "reason": f"{exc.code}: {exc.message}"})
    acted = sum(1 for d in decisions if d["action"] != "none")
    log.info("idle-pool timer: %d pool(s), %d acted on", len(decisions), acted)
    return decisions


def _tick(services, pool, running: int, now: datetime) -> dict:
    s = services.settings
    state = _pool_state(services, pool.name)
    if pool.provisioning_state not in (None, "Succeeded"):
        decision = ScaleDecision(pool.name, "none", pool.count, pool.count,
                                 f"pool is {pool.provisioning_state}", _parse_time(state.get("idle_since")))
    else:
        decision = decide_scale(pool=pool.name, count=pool.count, queued=services.tasks.queued(pool.name),
                                running=running, idle_since=_parse_time(state.get("idle_since")), now=now,
                                idle_minutes=s.pool_idle_minutes, scale_up_count=s.pool_scale_up_count)
    if decision.action != "none":
        services.tasks.scale(pool.name, decision.to_count)
        record_scaling(services, decision.to_dict(), trigger="timer")
        log.info("agent pool %s: %s %d -> %d (%s)", pool.name, decision.action, decision.from_count,
                 decision.to_count, decision.reason)
    _save_pool_state(services, pool.name, idle_since=_iso(decision.idle_since),
                     last_decision={**decision.to_dict(), "at": _iso(now)})
    return decision.to_dict()
