"""Telemetry of a run with failures, driven through the registered blob and queue functions against the
stand-in, observed with the OpenTelemetry SDK's in-memory exporters (spans, metrics, logs)."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid

import azure.functions as func
import pytest

from shared import entrypoints, telemetry

_PROVIDERS: dict = {}


@pytest.fixture(scope="session")
def otel():
    """SDK providers with in-memory exporters, installed once as the global providers (as
    configure_azure_monitor would install its own); a LoggingHandler on the app's logger."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if not _PROVIDERS:
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        logs = InMemoryLogRecordExporter()
        logger_provider = LoggerProvider()
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        handler = LoggingHandler(level=logging.INFO, logger_provider=logger_provider)
        logging.getLogger("shared").addHandler(handler)
        _PROVIDERS.update(spans=spans, reader=reader, logs=logs, handler=handler)
    yield _PROVIDERS


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def captured():
    handler = Records()
    logger = logging.getLogger("shared")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old)


def metric_points(data, name):
    return [point for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for point in m.data.data_points]


def test_failed_run_has_spans_metrics_and_one_error_line_with_the_run_id(env, stack, seeded, functions,
                                                                          queue_host, otel, captured):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    name = f"{prefix}.txt"
    text = (f"library/busybox:1.36 => {prefix}/busybox\n"
            f"quay.io/jetstack/cert-manager-controller:v1.15.2 => {prefix}/cm\n")
    s = entrypoints.services()
    container = s.settings.manifests_container
    otel["spans"].clear()
    stack.emulator.faults.add("import-fail", times=1)  # one of the two imports fails, permanently
    try:
        functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
        queue_host.drain()  # the run executes on the queue function; its redelivery finds it final
    finally:
        stack.emulator.faults.clear()
    [record] = [s.store.get_json(s.settings.outcomes_container, n)
                for n in s.store.list_names(s.settings.outcomes_container, "runs/")
                if (s.store.get_json(s.settings.outcomes_container, n) or {}).get("manifest", {}).get("name") == name]
    run_id = record["run_id"]
    assert record["status"] == "failed" and record["summary"]["failed"] == 1 and record["summary"]["imported"] == 1

    assert any(type(e).__name__ == "RunFailed" for e in queue_host.errors)  # a failed invocation, as monitored
    # spans: one airlock.run per delivery (the chunk, then each import message), the plan and both
    # imports, every one with the run id, in one trace (the import messages carry the chunk's traceparent)
    spans = [sp for sp in otel["spans"].get_finished_spans() if sp.attributes.get("airlock.run_id") == run_id]
    by_name = {}
    for sp in spans:
        by_name.setdefault(sp.name, []).append(sp)
    [plan_span] = by_name["airlock.plan"]
    [chunk_span] = [sp for sp in by_name["airlock.run"] if sp.context.span_id == plan_span.parent.span_id]
    deliveries = [sp for sp in by_name["airlock.run"] if sp is not chunk_span]
    assert len(deliveries) == 2 and {sp.attributes["airlock.entry"] for sp in deliveries} == {"000001", "000002"}
    assert {sp.parent.span_id for sp in deliveries} == {chunk_span.context.span_id}
    [run_span] = [sp for sp in by_name["airlock.run"] if "airlock.status" in sp.attributes]  # the finalising one
    imports = by_name["airlock.import"]
    assert len(imports) == 2
    assert run_span.attributes["airlock.manifest"] == name and run_span.attributes["airlock.trigger"] == "blob"
    assert run_span.attributes["airlock.status"] == "failed" and run_span.attributes["airlock.count.failed"] == 1
    assert run_span.status.status_code.name == "ERROR"
    assert {sp.context.trace_id for sp in spans} == {chunk_span.context.trace_id}
    # imports ran on pool threads: the context (and so the parent span) was carried into them
    assert {sp.parent.span_id for sp in imports} == {sp.context.span_id for sp in deliveries}
    assert sorted(sp.attributes["airlock.line"] for sp in imports) == [1, 2]
    assert {sp.attributes["airlock.target"] for sp in imports} == {f"{prefix}/busybox:1.36",
                                                                   f"{prefix}/cm:v1.15.2"}
    assert sorted(sp.attributes["airlock.result"] for sp in imports) == ["failed", "imported"]

    # metrics: imports by result, import and plan durations, runs by status and trigger; the
    # measurements of this run link to its spans (exemplars carry the span and trace ids)
    reader = otel["reader"].get_metrics_data()  # one collection: exemplars are those of one interval
    trace_id = run_span.context.trace_id
    import_points = metric_points(reader, "airlock.imports")
    results = {p.attributes["result"] for p in import_points
               if any(e.trace_id == trace_id for e in p.exemplars)}
    assert results == {"imported", "failed"}
    [run_point] = [p for p in metric_points(reader, "airlock.runs")
                   if p.attributes == {"status": "failed", "trigger": "blob", "kind": "sync"}]
    assert run_point.value >= 1 and any(e.trace_id == trace_id for e in run_point.exemplars)
    assert any(e.trace_id == trace_id for p in metric_points(reader, "airlock.import.duration") for e in p.exemplars)
    assert any(e.trace_id == trace_id for p in metric_points(reader, "airlock.plan.duration") for e in p.exemplars)

    # logs: exactly one ERROR line, naming the run, the counts and the record
    mine = [r for r in captured if getattr(r, "run_id", None) == run_id]
    errors = [r for r in captured if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0] in mine
    line = errors[0].getMessage()
    assert line.startswith(f"AIRLOCK_RUN_FAILED run={run_id} kind=sync trigger=blob manifest={name} ")
    assert "total=2 imported=1 failed=1 unchanged=0" in line
    assert f"record={s.settings.outcomes_container}/runs/{run_id}.json" in line
    # the warning about the failed import came from an import pool thread, and carries the run id
    [warning] = [r for r in captured if r.getMessage().startswith(f"[run {run_id}] import of ")]
    assert warning.threadName.startswith("import") and warning.run_id == run_id
    # every record emitted while the run was running names it (a lines from the plan pool included)
    assert all(run_id in r.getMessage() for r in mine)
    # the OpenTelemetry log export (what Application Insights receives) has run_id as an attribute
    exported = [d.log_record for d in otel["logs"].get_finished_logs()
                if d.log_record.attributes.get("run_id") == run_id]
    assert any(r.severity_text == "ERROR" and str(r.body).startswith("AIRLOCK_RUN_FAILED") for r in exported)
    assert any(r.attributes.get("threadName", "").startswith("import") or "import of" in str(r.body)
               for r in exported)


def test_telemetry_mode():
    assert telemetry.telemetry_mode("", False) == telemetry.MODE_LOGGING
    assert telemetry.telemetry_mode("", True) == telemetry.MODE_LOGGING
    assert telemetry.telemetry_mode("InstrumentationKey=x", False) == telemetry.MODE_AZURE_MONITOR
    assert telemetry.telemetry_mode("InstrumentationKey=x", True) == telemetry.MODE_WORKER


class WorkerContext(func.Context):
    """The invocation context the Python worker passes (azure.functions only declares the interface):
    its thread_local_storage is the thread-local the worker's log handler reads the invocation id from."""

    def __init__(self, invocation_id: str):
        self._invocation_id = invocation_id
        self._tls = threading.local()

    invocation_id = property(lambda self: self._invocation_id)
    thread_local_storage = property(lambda self: self._tls)
    function_name = property(lambda self: "http_app_func")
    function_directory = property(lambda self: ".")
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)


class WorkerLikeHandler(logging.Handler):
    """Reads the invocation id as the worker's handler does when it emits (the thread-local, per thread)."""

    def __init__(self, tls):
        super().__init__(logging.INFO)
        self.tls = tls
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, record):
        self.seen.append((record.threadName, getattr(self.tls, "invocation_id", None), record.getMessage()))


def test_queued_run_log_lines_from_pool_threads_keep_the_invocation(env, stack, seeded, functions, queue_host):
    """The queue function's invocation context reaches log records of the import pool threads (the
    worker attributes records through a thread-local it sets on its own threads only)."""
    from azure.functions.queue import QueueMessage

    prefix = f"t{uuid.uuid4().hex[:8]}"
    context = WorkerContext(f"inv-{prefix}")
    handler = WorkerLikeHandler(context.thread_local_storage)
    logger = logging.getLogger("shared")
    body = (f"library/busybox:1.36 => {prefix}/busybox\n"
            f"quay.io/jetstack/cert-manager-controller:v1.15.2 => {prefix}/cm\n").encode()
    request = func.HttpRequest(method="POST", url="http://localhost/api/imports",
                               headers={"content-type": "text/plain"}, body=body)
    response = asyncio.run(functions["http_app_func"](request, WorkerContext("inv-http")))
    assert response.status_code == 202, response.get_body()
    run_id = json.loads(response.get_body())["run_id"]
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    stack.emulator.faults.add("import-fail", times=1)
    raised = []
    try:  # the chunk message, then the two import messages it queued, all with the one context
        for expected in (1, 2):
            messages = list(queue_host.queue.receive_messages(max_messages=expected, visibility_timeout=60))
            assert len(messages) == expected
            for message in messages:
                try:
                    functions["run_worker"](QueueMessage(id=message.id, body=message.content.encode(),
                                                         dequeue_count=1), context=context)
                except Exception as exc:  # noqa: BLE001 - asserted below
                    raised.append(exc)
                queue_host.queue.delete_message(message)
    finally:
        stack.emulator.faults.clear()
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert [type(e).__name__ for e in raised] == ["RunFailed"]  # recorded as failed, then raised
    record = entrypoints.services().store.get_json(entrypoints.services().settings.outcomes_container,
                                                   f"runs/{run_id}.json")
    assert record["status"] == "failed", record
    mine = [(thread, invocation) for thread, invocation, message in handler.seen if run_id in message]
    threads = {thread.split("_")[0] for thread, _ in mine}
    assert "import" in threads  # lines from an import pool thread...
    assert {invocation for _, invocation in mine} == {context.invocation_id}  # ...attributed to the invocation
