"""Telemetry: a span per run, plan and import; run metrics; the run id on every log line of a run.

Exporting is the platform's way: with ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, the first run
in a process calls ``azure.monitor.opentelemetry.configure_azure_monitor`` (never at import of
function_app, which stays cheap); with ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`` the
Functions worker has configured it already and the app only uses the OpenTelemetry API; with
neither it is plain logging (the OpenTelemetry API is then a no-op). See docs/operations.md.

Run context: ``run_scope`` puts the run into a ``contextvars.ContextVar``; ``ContextThreadPoolExecutor``
copies the caller's context into every task it runs, so worker threads see the run (and the active
span, which OpenTelemetry also keeps in contextvars). A log record factory adds ``run_id`` to every
record created inside a run (an attribute, exported as a custom dimension) and names the run at the
start of the message when the message does not name it already.

The run-failed line (``AIRLOCK_RUN_FAILED``, the one an alert matches) carries the record attribute
``airlock_alert``: it goes to telemetry (the ``shared`` logger's exporter, the Functions host) and the
command line's terminal handler leaves it out.

Instruments (names as exported)::

    airlock.runs             counter    {run}     status, trigger, kind
    airlock.imports          counter    {import}  result (imported|failed), error_code
    airlock.import.duration  histogram  s         result
    airlock.plan.duration    histogram  s         (none)
    airlock.verifications    counter    {image}   status (verified|unsigned|invalid|mismatch|skipped), mode
                                                  (enforce|audit|skip), cache (memory|blob|none: verified now)

A run's span carries its summary counts (``airlock.count.*``, ``unverified`` and ``rejected`` included),
and the ``AIRLOCK_RUN_FAILED`` line counts the entries a trust policy rejected.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Optional

from .core.ids import new_run_id, record_name

log = logging.getLogger(__name__)

SCOPE = "acr-airlock"
MODE_AZURE_MONITOR = "azure-monitor"  # this app configures the Azure Monitor distro
MODE_WORKER = "worker"                # the Functions worker configured it (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY)
MODE_LOGGING = "logging"              # no connection string: plain logging, OpenTelemetry API no-op
ALERT_ATTRIBUTE = "airlock_alert"     # set on the AIRLOCK_RUN_FAILED record (for telemetry, not terminals)


@dataclass(frozen=True)
class RunContext:
    run_id: str
    manifest: str = ""
    trigger: str = ""
    kind: str = ""


_run: contextvars.ContextVar[Optional[RunContext]] = contextvars.ContextVar("airlock_run", default=None)
# (thread_local_storage, invocation_id) of the Functions invocation that started this work, when known
_invocation: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar("airlock_invocation", default=None)
_lock = threading.Lock()
_factory_lock = threading.Lock()
_mode: Optional[str] = None
_factory_installed = False
_instruments = None


def current_run() -> Optional[RunContext]:
    return _run.get()


def bind_invocation(thread_local_storage, invocation_id: Optional[str]) -> None:
    """Remember the Functions invocation (``context.thread_local_storage``, ``context.invocation_id``)
    in this context. The Python worker's log handler attributes a record to an invocation through
    that thread-local, which it sets only on threads it started (azure-functions-python-worker
    issues 1158, 1358); records created on other threads that carry this context set it first."""
    if thread_local_storage is not None and invocation_id:
        _install_log_factory()
        _invocation.set((thread_local_storage, invocation_id))


# -- configuration ---------------------------------------------------------------------------

def telemetry_mode(connection_string: str, worker_telemetry: bool) -> str:
    """Which exporter setup applies (pure)."""
    if not connection_string:
        return MODE_LOGGING
    return MODE_WORKER if worker_telemetry else MODE_AZURE_MONITOR


def configure(settings) -> str:
    """Once per process, at first use: set up exporting as the settings say; returns the mode."""
    global _mode
    with _lock:
        if _mode is not None:
            return _mode
        mode = telemetry_mode(settings.appinsights_connection_string, settings.worker_telemetry)
        if mode == MODE_AZURE_MONITOR:
            from azure.monitor.opentelemetry import configure_azure_monitor

            # logger_name: only this app's loggers are exported as traces (not every library's)
            configure_azure_monitor(connection_string=settings.appinsights_connection_string,
                                    logger_name="shared")
        _install_log_factory()
        _mode = mode
    log.info("telemetry: %s", mode)
    return mode


def _install_log_factory() -> None:
    """Wrap the current LogRecord factory (keeping any other wrapper) so records know their run."""
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_wrap(previous))
        _factory_installed = True


def _wrap(previous):
    """The factory: the invocation's thread-local on this thread, then the run id on the record."""
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        invocation = _invocation.get()
        if invocation is not None and getattr(invocation[0], "invocation_id", None) != invocation[1]:
            invocation[0].invocation_id = invocation[1]  # what `context.thread_local_storage.invocation_id = ...` does
        run = _run.get()
        if run is not None:
            record.run_id = run.run_id
            if isinstance(record.msg, str) and not _names(record, run.run_id):
                prefix = f"[run {run.run_id}] "
                record.msg = (prefix.replace("%", "%%") if record.args else prefix) + record.msg
        return record

    return factory


def _names(record: logging.LogRecord, run_id: str) -> bool:
    if run_id in record.msg:
        return True
    args = record.args if isinstance(record.args, tuple) else (record.args,) if record.args else ()
    return any(isinstance(a, str) and run_id in a for a in args)


# -- propagation into threads ----------------------------------------------------------------

class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose tasks run in a copy of the submitter's contextvars context
    (the run, the active span). One copy per task: a Context cannot be entered twice at once."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


# -- instruments -----------------------------------------------------------------------------

class _Instruments:
    def __init__(self):
        from opentelemetry import metrics, trace

        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.runs = meter.create_counter("airlock.runs", unit="{run}", description="Runs by status and trigger")
        self.imports = meter.create_counter("airlock.imports", unit="{import}", description="Imports by result")
        self.import_duration = meter.create_histogram("airlock.import.duration", unit="s",
                                                      description="Duration of one import, retries included")
        self.plan_duration = meter.create_histogram("airlock.plan.duration", unit="s",
                                                    description="Duration of planning a run (digest look-ups)")
        self.referrers = meter.create_counter("airlock.referrers", unit="{referrer}",
                                              description="Referrers carried into the ACR by result and kind")
        self.verifications = meter.create_counter("airlock.verifications", unit="{image}",
                                                  description="Signature verdicts by status, mode and cache")


def instruments() -> _Instruments:
    """Created on first use: importing opentelemetry is not a cost of importing the app."""
    global _instruments
    if _instruments is None:
        with _lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def _attributes(run: Optional[RunContext]) -> dict:
    if run is None:
        return {}
    return {"airlock.run_id": run.run_id, "airlock.manifest": run.manifest, "airlock.trigger": run.trigger,
            "airlock.kind": run.kind}


# -- scopes ----------------------------------------------------------------------------------

@contextlib.contextmanager
def run_scope(run: RunContext, *, settings=None, record_path: str = "") -> Iterator["RunOutcome"]:
    """The run's span and context. The caller reports the finished document through ``outcome.finish``;
    on exit the run is counted by status and trigger, and a failed run logs ONE error line."""
    if settings is not None:
        configure(settings)
    else:
        _install_log_factory()
    tools = instruments()
    outcome = RunOutcome(run, record_path)
    token = _run.set(run)
    try:
        with tools.tracer.start_as_current_span("airlock.run", attributes=_attributes(run)) as span:
            outcome.span = span
            try:
                yield outcome
            except BaseException as exc:
                outcome.error = exc
                raise
            finally:
                outcome.close(tools)
    finally:
        _run.reset(token)


class RunOutcome:
    def __init__(self, run: RunContext, record_path: str):
        self.run = run
        self.record_path = record_path
        self.document: Optional[dict] = None
        self.error: Optional[BaseException] = None
        self.span = None

    def finish(self, document: dict) -> None:
        self.document = document

    def close(self, tools: _Instruments) -> None:
        report_run(self.run, self.document or {}, self.record_path, error=self.error, span=self.span, tools=tools)


def report_run(run: RunContext, document: dict, record_path: str = "", *, error: Optional[BaseException] = None,
               span=None, tools: Optional[_Instruments] = None, alert: bool = True) -> None:
    """Count a finished run by status and trigger; a failed or abandoned sync logs the ONE error line.
    Called once per run: by ``run_scope`` (in-process runs) or when a queued run is finalised. With
    ``alert`` False the line is a WARNING: the caller reports the run in one line with others
    (``report_runs_together``), so one outage is one alert line, not one per run."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    tools = tools or instruments()
    span = span or trace.get_current_span()
    status = "error" if error is not None else document.get("status", "unknown")
    summary = document.get("summary") or {}
    span.set_attribute("airlock.status", status)
    for key in ("total", "imported", "failed", "unchanged", "error", "drift", "unverified", "rejected"):
        if key in summary:
            span.set_attribute(f"airlock.count.{key}", summary[key])
    for key, value in (summary.get("referrers") or {}).items():
        span.set_attribute(f"airlock.count.referrers_{key}", value)
    tools.runs.add(1, {"status": status, "trigger": run.trigger, "kind": run.kind})
    if status in ("failed", "error", "abandoned"):
        span.set_status(Status(StatusCode.ERROR, f"run {status}"))
        counts = " ".join(f"{k}={summary.get(k, 0)}" for k in ("total", "imported", "failed", "unchanged",
                                                                "rejected"))
        reason = f" error={type(error).__name__}" if error is not None else ""
        # a failed sync is the one ERROR line an alert matches ("AIRLOCK_RUN_FAILED", docs/operations.md);
        # a plan imports nothing, so its failures are a warning for whoever asked for it
        level = logging.ERROR if run.kind == "sync" and alert else logging.WARNING
        # ``airlock_alert``: the command line keeps this line off the terminal (its summary says the same)
        log.log(level, "AIRLOCK_RUN_FAILED run=%s kind=%s trigger=%s manifest=%s status=%s %s%s record=%s",
                run.run_id, run.kind, run.trigger, run.manifest, status, counts, reason, record_path or "-",
                extra={ALERT_ATTRIBUTE: True})


def count_verification(status: str, mode: Optional[str], cache: str) -> None:
    """One signature verdict (``cache``: where it came from, "none" when it was verified now)."""
    instruments().verifications.add(1, {"status": status, "mode": mode or "", "cache": cache})


RUNS_NAMED = 20  # run ids a summary line names after its first


def report_runs_together(reports: list[tuple[RunContext, dict, str]], *, cause: str) -> None:
    """ONE alert line for failed or abandoned syncs ended together by one ``cause`` (a word: "reaper" for
    the reaper's pass), each already counted and logged as a WARNING by ``report_run(..., alert=False)``.
    The line has the single-run line's fields for the first run (so the alert query reads it as it reads
    any), the counts summed over all of them, ``runs=N`` and the other run ids (``also=``, at most
    RUNS_NAMED)."""
    failed = [(run, document, path) for run, document, path in reports
              if run.kind == "sync" and document.get("status") in ("failed", "abandoned")]
    if not failed:
        return
    (run, _, path), others = failed[0], failed[1:]
    counts = " ".join(f"{k}={sum((d.get('summary') or {}).get(k, 0) for _, d, _ in failed)}"
                      for k in ("total", "imported", "failed", "unchanged"))
    also = ",".join(r.run_id for r, _, _ in others[:RUNS_NAMED]) + (
        f",+{len(others) - RUNS_NAMED}" if len(others) > RUNS_NAMED else "")
    statuses = ",".join(sorted({d.get("status") for _, d, _ in failed}))
    log.error("AIRLOCK_RUN_FAILED run=%s kind=sync trigger=%s manifest=%s status=%s %s runs=%d cause=%s%s record=%s",
              run.run_id, run.trigger, run.manifest, statuses, counts, len(failed), cause,
              f" also={also}" if also else "", path or "-")


@contextlib.contextmanager
def chunk_scope(run: RunContext, *, chunk: int, chunks: int, delivery: int, settings=None,
                parent: Optional[str] = None, entry: Optional[str] = None) -> Iterator[None]:
    """One delivery of a queued run's chunk (or of one entry's import, ``entry``): the run's context (run
    id on every log line, pool threads included) and an ``airlock.run`` span with the chunk's attributes.
    ``parent``: the W3C ``traceparent`` of the delivery that sent this message (``traceparent()``), so
    a chunk and the imports it queued make one trace whichever instances run them. The run is counted
    and reported by ``report_run`` when it is finalised, exactly once, whichever delivery finalises it."""
    if settings is not None:
        configure(settings)
    else:
        _install_log_factory()
    token = _run.set(run)
    try:
        attributes = {**_attributes(run), "airlock.chunk": chunk, "airlock.chunks": chunks,
                      "airlock.delivery": delivery}
        if entry is not None:
            attributes["airlock.entry"] = entry
        context = None
        if parent:
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            context = TraceContextTextMapPropagator().extract({"traceparent": parent})
        with instruments().tracer.start_as_current_span("airlock.run", context=context, attributes=attributes):
            yield
    finally:
        _run.reset(token)


def traceparent() -> Optional[str]:
    """The W3C ``traceparent`` of the current span (None without a recording span), for a message sent
    from it: ``chunk_scope(parent=...)`` continues the trace on whichever instance receives it."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def traced_plan(method):
    """Decorator for ``SyncEngine.plan``: a span and the plan-duration histogram."""
    @functools.wraps(method)
    def wrapper(self, manifest, *args, **kwargs):
        tools = instruments()
        started = time.monotonic()
        attributes = {**_attributes(_run.get()), "airlock.entries": len(manifest.entries)}
        with tools.tracer.start_as_current_span("airlock.plan", attributes=attributes):
            try:
                return method(self, manifest, *args, **kwargs)
            finally:
                tools.plan_duration.record(time.monotonic() - started)
    return wrapper


def traced_import(method):
    """Decorator for ``SyncEngine._import_one(item)``: a span per import, its result and duration."""
    @functools.wraps(method)
    def wrapper(self, item, *args, **kwargs):
        from opentelemetry.trace import Status, StatusCode

        tools = instruments()
        entry = item.entry
        attributes = {**_attributes(_run.get()), "airlock.line": entry.line, "airlock.target": entry.target,
                      "airlock.source": str(entry.source), "airlock.action": item.action.value}
        started = time.monotonic()
        with tools.tracer.start_as_current_span("airlock.import", attributes=attributes) as span:
            outcome = method(self, item, *args, **kwargs)
            elapsed = time.monotonic() - started
            span.set_attribute("airlock.result", outcome.result)
            span.set_attribute("airlock.attempts", outcome.attempts)
            labels = {"result": outcome.result}
            if outcome.error_code:
                span.set_attribute("airlock.error_code", outcome.error_code)
                span.set_status(Status(StatusCode.ERROR, outcome.error_code))
            tools.imports.add(1, {**labels, "error_code": outcome.error_code or ""})
            tools.import_duration.record(elapsed, labels)
            return outcome
    return wrapper


def count_referrers(report: dict) -> None:
    """Count one entry's carried referrers (``shared.handlers.referrers``) by result and how they were
    found (``via``: referrers API or cosign tag); failures also by error code."""
    tools = instruments()
    for item in report.get("items") or []:
        tools.referrers.add(1, {"result": item.get("result", ""), "via": item.get("via", ""),
                                "error_code": (item.get("error") or {}).get("code") or ""})
    if report.get("missing"):
        tools.referrers.add(len(report["missing"]), {"result": "missing", "via": "referrers", "error_code": ""})


def traced_run(method):
    """Decorator for ``SyncEngine.run(text, *, name, trigger, apply, run_id, ...)``: the run scope.

    The run id is fixed here (when the caller gave none) so that spans and log lines carry it
    from the start; the record path is where ``handlers.records`` saves it."""
    @functools.wraps(method)
    def wrapper(self, text, *args, **kwargs):
        run_id = kwargs.get("run_id") or new_run_id()
        kwargs["run_id"] = run_id
        apply = kwargs.get("apply", True)
        run = RunContext(run_id, manifest=kwargs.get("name", ""), trigger=kwargs.get("trigger", ""),
                         kind="sync" if apply else "plan")
        settings = self.settings
        path = f"{settings.outcomes_container}/{record_name(run_id)}" if apply else ""
        with run_scope(run, settings=settings, record_path=path) as scope:
            record = method(self, text, *args, **kwargs)
            scope.finish({"status": record.status, "summary": record.summary()})
            return record
    return wrapper
