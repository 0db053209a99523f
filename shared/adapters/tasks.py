"""ACR Tasks through azure-mgmt-containerregistrytasks: runs, agent pools, tasks, source uploads.

Every call goes through ``services.retrier``. SDK answers become small frozen values
(``RunInfo``, ``PoolInfo``, ``TaskInfo``) so handlers never touch SDK models, and SDK errors
become the project's error tree: an unknown run, pool or task is ``NotFoundError``; a run
request ARM refuses is ``ValidationError``.

``schedule`` is not idempotent (each call queues a run), so it is retried only when ARM surely
did not act on it: 429, 503, or a connection that failed before the request was sent. After
any other failure the run may or may not exist, and that is reported, not retried.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional, TypeVar

from ..errors import NotFoundError, Problem, UpstreamError, ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNNING_STATUSES = ("Started", "Running")
_SAFE_TO_RETRY = (429, 503)


@dataclass(frozen=True)
class OutputImage:
    registry: Optional[str]
    repository: Optional[str]
    tag: Optional[str]
    digest: Optional[str]

    def to_dict(self) -> dict:
        return {"registry": self.registry, "repository": self.repository, "tag": self.tag, "digest": self.digest}


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    agent_pool: Optional[str]
    task: Optional[str]
    created: Optional[datetime]
    started: Optional[datetime]
    finished: Optional[datetime]
    outputs: tuple[OutputImage, ...]
    error: Optional[str]


@dataclass(frozen=True)
class PoolInfo:
    name: str
    count: int
    tier: Optional[str]
    os: Optional[str]
    provisioning_state: Optional[str]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    agent_pool: Optional[str]
    repositories: tuple[str, ...]  # what its Docker step pushes to, when that is visible
    pushes_known: bool = False     # a Docker step: it pushes exactly its imageNames; other steps push anything


@dataclass(frozen=True)
class SourceUpload:
    upload_url: str  # a write SAS: never log it
    relative_path: str


def _text(value) -> Optional[str]:
    """An SDK string or str-enum as plain text."""
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def _run_info(run) -> RunInfo:
    p = run.properties
    outputs = tuple(OutputImage(i.registry, i.repository, i.tag, i.digest) for i in (p.output_images or ()))
    return RunInfo(run_id=p.run_id or run.name, status=_text(p.status) or "Unknown", agent_pool=p.agent_pool_name,
                   task=p.task, created=p.create_time, started=p.start_time, finished=p.finish_time,
                   outputs=outputs, error=p.run_error_message)


def _pool_info(pool) -> PoolInfo:
    p = pool.properties
    return PoolInfo(name=pool.name, count=int(p.count or 0), tier=p.tier, os=_text(p.os),
                    provisioning_state=_text(p.provisioning_state))


def _repository_of(image_name: str) -> str:
    """``[host/]repo[:tag]`` -> repo; the host may be a login server or ``{{.Run.Registry}}``."""
    first, slash, rest = image_name.partition("/")
    if slash and (any(c in first for c in ".:{$") or first == "localhost"):
        image_name = rest
    repo, colon, tag = image_name.rpartition(":")
    return repo if colon and "/" not in tag else image_name


def _task_info(task) -> TaskInfo:
    p = task.properties
    step = getattr(p, "step", None)
    names = getattr(step, "image_names", None) or []
    repos = tuple(dict.fromkeys(_repository_of(n) for n in names))
    docker = _text(getattr(step, "type", None)) == "Docker"
    return TaskInfo(name=task.name, agent_pool=p.agent_pool_name, repositories=repos, pushes_known=docker)


def _utf8_prefix(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def _error_text(exc) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or f"HTTP{getattr(exc, 'status_code', '')}"
    message = getattr(error, "message", None) or getattr(exc, "reason", None) or "request failed"
    return code, message


class Tasks:
    def __init__(self, clients, retrier):
        self._clients = clients
        self._retrier = retrier
        self._rg = clients.settings.resource_group
        self._registry = clients.settings.registry_name

    @property
    def _sdk(self):
        return self._clients.tasks_mgmt

    def _call(self, fn: Callable[[], T], *, what: str, missing: Optional[str] = None) -> T:
        """Run ``fn`` with retries; a 404 becomes NotFoundError(``missing``)."""
        from azure.core.exceptions import ResourceNotFoundError

        def attempt() -> T:
            try:
                return fn()
            except ResourceNotFoundError as exc:
                raise NotFoundError(missing or _error_text(exc)[1]) from exc
        return self._retrier.call(attempt, what=what)

    # -- runs ---------------------------------------------------------------------------------
    def schedule(self, body: dict) -> RunInfo:
        """Queue a run (``body`` is the ARM scheduleRun request; it may carry secrets: never logged)."""
        return self._retrier.call(lambda: self._schedule_once(body), what="scheduleRun")

    def _schedule_once(self, body: dict) -> RunInfo:
        from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

        try:
            return _run_info(self._sdk.registries.schedule_run(self._rg, self._registry, body))
        except ServiceRequestError:
            raise  # never reached ARM: the retrier may try again
        except HttpResponseError as exc:
            code, message = _error_text(exc)
            if exc.status_code in _SAFE_TO_RETRY:
                raise
            if code in ("AgentPoolNotFound", "TaskNotFound") or exc.status_code == 404:
                raise NotFoundError(message, code=code) from exc
            if exc.status_code == 400:
                raise ValidationError(f"ARM refused the run request: {message}",
                                      [Problem(message, field="")], code=code) from exc
            raise UpstreamError(f"scheduleRun failed ({code}); the run may or may not have been queued: "
                                f"{message}", code=code, status=exc.status_code) from exc
        except AzureError as exc:  # a dropped response: ARM may have queued the run
            raise UpstreamError(f"scheduleRun: no answer ({type(exc).__name__}); the run may or may not have "
                                "been queued", code="ScheduleUncertain") from exc

    def run(self, run_id: str) -> RunInfo:
        return self._call(lambda: _run_info(self._sdk.runs.get(self._rg, self._registry, run_id)),
                          what=f"get run {run_id}", missing=f"no run with id {run_id!r} in the registry")

    def cancel(self, run_id: str) -> None:
        self._call(lambda: self._sdk.runs.cancel(self._rg, self._registry, run_id),
                   what=f"cancel run {run_id}", missing=f"no run with id {run_id!r} in the registry")

    def log_url(self, run_id: str) -> Optional[str]:
        """A read SAS URL of the run's log (a credential: return it, never log it)."""
        result = self._call(lambda: self._sdk.runs.get_log_sas_url(self._rg, self._registry, run_id),
                            what=f"log URL of run {run_id}", missing=f"no run with id {run_id!r} in the registry")
        return result.log_link

    def running_on(self) -> dict[str, int]:
        """Running runs per agent pool (the pool is compared here; $filter only names the status)."""
        expression = " or ".join(f"status eq '{s}'" for s in RUNNING_STATUSES)

        def listing() -> dict[str, int]:
            counts: dict[str, int] = {}
            for run in self._sdk.runs.list(self._rg, self._registry, filter=expression):
                p = run.properties
                if p.agent_pool_name and _text(p.status) in RUNNING_STATUSES:
                    key = p.agent_pool_name.lower()
                    counts[key] = counts.get(key, 0) + 1
            return counts
        return self._call(listing, what="list running runs")

    def log_text(self, url: str, offset: int) -> tuple[str, int]:
        """New log text from ``offset`` (bytes) of a log SAS URL; ("", offset) when there is none yet."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        def fetch() -> tuple[str, int]:
            try:
                data = self._clients.blob_at(url).download_blob(offset=offset).readall()
            except ResourceNotFoundError:
                return "", offset
            except HttpResponseError as exc:
                if exc.status_code == 416:  # nothing after offset yet
                    return "", offset
                raise
            complete = _utf8_prefix(data)  # a character cut at the end is read again next time
            return data[:complete].decode("utf-8", "replace"), offset + complete
        return self._retrier.call(fetch, what="download run log")

    # -- agent pools --------------------------------------------------------------------------
    def pool(self, name: str) -> PoolInfo:
        return self._call(lambda: _pool_info(self._sdk.agent_pools.get(self._rg, self._registry, name)),
                          what=f"get agent pool {name}",
                          missing=f"agent pool {name!r} does not exist in registry {self._registry}")

    def pools(self) -> list[PoolInfo]:
        return self._call(lambda: [_pool_info(p) for p in self._sdk.agent_pools.list(self._rg, self._registry)],
                          what="list agent pools")

    def queued(self, name: str) -> int:
        status = self._call(lambda: self._sdk.agent_pools.get_queue_status(self._rg, self._registry, name),
                            what=f"queue status of {name}",
                            missing=f"agent pool {name!r} does not exist in registry {self._registry}")
        return int(status.count or 0)

    def scale(self, name: str, count: int) -> None:
        """Ask ARM to set the pool's instance count; does not wait for the operation to finish."""
        body = {"properties": {"count": count}}
        self._call(lambda: self._sdk.agent_pools.begin_update(self._rg, self._registry, name, body, polling=False),
                   what=f"scale agent pool {name}",
                   missing=f"agent pool {name!r} does not exist in registry {self._registry}")
        log.info("agent pool %s: asked for %d instance(s)", name, count)

    # -- tasks and sources --------------------------------------------------------------------
    def task(self, name: str) -> TaskInfo:
        return self._call(lambda: _task_info(self._sdk.tasks.get(self._rg, self._registry, name)),
                          what=f"get task {name}", missing=f"task {name!r} does not exist in registry {self._registry}")

    def upload_source(self, data: bytes) -> str:
        """Upload a gzipped tar build context; returns the relative path for ``source_location``."""
        target = self._call(lambda: self._sdk.registries.get_build_source_upload_url(self._rg, self._registry),
                            what="build source upload URL")
        upload = SourceUpload(target.upload_url, target.relative_path)
        self._retrier.call(lambda: self._clients.blob_at(upload.upload_url).upload_blob(data, overwrite=True),
                           what="upload build source")
        log.info("uploaded a build context of %d bytes to %s", len(data), upload.relative_path)
        return upload.relative_path
