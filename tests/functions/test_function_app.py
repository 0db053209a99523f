"""Every registered function, called through app.get_functions() with real azure.functions objects,
against the local stand-in (Azurite, the registries, the ACR emulator)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import azure.functions as func
from azure.functions.timer import TimerRequest
import pytest

from devstack import oci
from shared import entrypoints
from shared.errors import ValidationError
from shared.services import Services
from tests.fixture_paths import AZURE_FIXTURES

FIXTURES = AZURE_FIXTURES / "eventgrid"


@pytest.fixture
def prefix():
    return f"f{uuid.uuid4().hex[:8]}"


def services() -> Services:
    return entrypoints.services()


def upload_manifest(name: str, text: str) -> None:
    s = services()
    s.store.put_bytes(s.settings.manifests_container, name, text.encode())


def run_records() -> list[dict]:
    s = services()
    return [s.store.get_json(s.settings.outcomes_container, n)
            for n in s.store.list_names(s.settings.outcomes_container, "runs/")]


def records_for(name: str) -> list[dict]:
    return [r for r in run_records() if r.get("manifest", {}).get("name") == name]


def backing_digest(stack, ref: str) -> str:
    return oci.sha256_digest(oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False))


# -- the function index -----------------------------------------------------------------------

def test_function_index_contract(registered):
    """The index as the Functions host reads it (get_function_json): names, triggers, routes, auth, settings."""
    index = {name: json.loads(f.get_function_json()) for name, f in registered.items()}
    assert set(index) == {"http_app_func", "manifest_uploaded", "resync_timer", "pool_scaler", "registry_event",
                          "run_worker", "run_poison", "run_reaper"}

    def trigger(name):
        [binding] = [b for b in index[name]["bindings"] if b["type"].endswith("Trigger")]
        return binding

    assert trigger("http_app_func") == {"direction": "IN", "type": "httpTrigger", "name": "req",
                                        "methods": ["GET", "POST", "DELETE", "HEAD", "PATCH", "PUT", "OPTIONS"],
                                        "authLevel": "FUNCTION", "route": "/{*route}"}
    assert trigger("manifest_uploaded") == {"direction": "IN", "type": "blobTrigger", "name": "blob",
                                            "path": "%MANIFESTS_CONTAINER%/{name}",
                                            "connection": "AzureWebJobsStorage", "source": "EventGrid"}
    assert trigger("resync_timer") == {"direction": "IN", "type": "timerTrigger", "name": "timer",
                                       "schedule": "%RESYNC_SCHEDULE%", "runOnStartup": False, "useMonitor": True}
    assert trigger("pool_scaler") == {"direction": "IN", "type": "timerTrigger", "name": "timer",
                                      "schedule": "%POOL_SCALE_SCHEDULE%", "runOnStartup": False, "useMonitor": True}
    assert trigger("registry_event") == {"direction": "IN", "type": "eventGridTrigger", "name": "event"}
    assert trigger("run_worker") == {"direction": "IN", "type": "queueTrigger", "name": "msg",
                                     "queueName": "%RUNS_QUEUE%", "connection": "AzureWebJobsStorage"}
    assert trigger("run_poison") == {"direction": "IN", "type": "queueTrigger", "name": "msg",
                                     "queueName": "%RUNS_QUEUE%-poison", "connection": "AzureWebJobsStorage"}
    assert trigger("run_reaper") == {"direction": "IN", "type": "timerTrigger", "name": "timer",
                                     "schedule": "%REAPER_SCHEDULE%", "runOnStartup": False, "useMonitor": True}
    # every %SETTING% a binding names is a documented setting
    from shared.config import SPECS

    names = {s.name for s in SPECS}
    assert {"MANIFESTS_CONTAINER", "RESYNC_SCHEDULE", "POOL_SCALE_SCHEDULE", "RUNS_QUEUE", "REAPER_SCHEDULE"} <= names


def test_retry_policies_only_on_timers_and_host_json_queues(registered):
    """@app.retry is honoured for timers only; host.json has no host-level retry block (no trigger here
    honours it) and its queues extension agrees with RUN_MAX_DEQUEUE_COUNT."""
    from shared.config import Settings

    with_retry = {name for name, f in registered.items()
                  if any(type(x).__name__ == "RetryPolicy" for x in f._settings)}
    assert with_retry == {"resync_timer", "pool_scaler", "run_reaper"}
    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text())
    assert "retry" not in host
    queues = host["extensions"]["queues"]
    defaults = Settings.from_env({"AZURE_SUBSCRIPTION_ID": "s", "ACR_RESOURCE_GROUP": "r", "ACR_NAME": "a",
                                  "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert queues["maxDequeueCount"] == defaults.run_max_dequeue
    assert {"batchSize", "newBatchThreshold", "visibilityTimeout"} <= set(queues)


def test_import_function_app_is_cheap():
    """No Azure SDK client modules, no Starlette, no settings read at import time."""
    import subprocess
    import sys

    code = ("import sys, function_app; heavy = [m for m in sys.modules if m.startswith(("
            "'azure.mgmt', 'azure.identity', 'azure.storage', 'azure.containerregistry', 'starlette', 'httpx'))]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# -- blob trigger -----------------------------------------------------------------------------

def test_blob_trigger_imports_and_redelivery_does_nothing(env, stack, seeded, functions, queue_host, prefix):
    text = f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/controller\n"
    name = f"{prefix}.txt"
    upload_manifest(name, text)
    container = services().settings.manifests_container
    blob = func.blob.InputStream(data=text.encode(), name=f"{container}/{name}")
    functions["manifest_uploaded"](blob)
    [queued] = records_for(name)
    assert queued["status"] == "queued" and queued["entries"] == []  # the trigger only queues
    queue_host.drain()
    [record] = records_for(name)
    assert record["trigger"] == "blob" and record["status"] == "succeeded"
    assert backing_digest(stack, f"{prefix}/controller:v1.11.1") == seeded["ingress-nginx/controller:v1.11.1"]

    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
    assert len(records_for(name)) == 1


def test_blob_trigger_invalid_manifest_is_recorded_not_raised(env, functions, prefix):
    text = "nginx:1.27 => ok\nNot A Reference => x\nfoo:bar:baz\n"
    name = f"{prefix}-bad.txt"
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
    [record] = records_for(name)
    assert record["status"] == "invalid"
    assert [e["line"] for e in record["errors"]] == [2, 3]


def test_blob_trigger_transient_failure_raises_for_retry(env, stack, functions, prefix, monkeypatch):
    """Storage unreachable: the error reaches the runtime so its retry and poison handling apply."""
    monkeypatch.setenv("AzureWebJobsStorage",
                       stack.env["AzureWebJobsStorage"].replace(str(stack.blob_port), "1"))
    monkeypatch.setenv("OUTCOMES_CONTAINER", "outcomes")
    entrypoints.reset()
    with pytest.raises(Exception):  # noqa: B017 - any error: the point is that it is not swallowed
        functions["manifest_uploaded"](func.blob.InputStream(data=b"nginx:1.27\n", name=f"x/{prefix}.txt"))


def test_queued_run_that_failed_only_on_transient_errors_is_redelivered(env, stack, seeded, functions, queue_host,
                                                                     prefix):
    """ARM answering 503 past every retry of a delivery: the chunk raises and is redelivered (no entry is
    final yet); once the faults pass, the redelivery imports it and the run succeeds: one record."""
    text = f"library/busybox:1.36 => {prefix}/bb\n"
    name = f"{prefix}-transient.txt"
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
    stack.emulator.faults.add("status", method="POST", path="/importImage$", status=503, times=4)
    try:
        queue_host.drain()
    finally:
        stack.emulator.faults.clear()
    assert any("transient" in str(e) for e in queue_host.errors), queue_host.errors
    [record] = records_for(name)
    assert record["status"] == "succeeded" and record["summary"]["imported"] == 1
    assert queue_host.deliveries >= 2


def test_transient_failures_on_the_last_delivery_are_recorded_retryable(env, stack, seeded, functions, queue_host,
                                                                       prefix):
    """Still failing on the last allowed delivery: the entry is final, failed, retryable; the run is failed
    and the invocation that recorded it raises (the message then goes to poison, which finds it final)."""
    env.setenv("RUN_MAX_DEQUEUE_COUNT", "2")
    entrypoints.reset()
    queue_host.max_dequeue = 2
    text = f"library/busybox:1.36 => {prefix}/bb2\n"
    name = f"{prefix}-always.txt"
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))
    stack.emulator.faults.add("status", method="POST", path="/importImage$", status=503, times=1000)
    try:
        queue_host.drain()
    finally:
        stack.emulator.faults.clear()
    [record] = records_for(name)
    assert record["status"] == "failed" and record["retryable"] is True
    [entry] = record["entries"]
    assert entry["error"]["retryable"] is True and entry["error"]["code"] == "ServiceUnavailable"
    assert any(type(e).__name__ == "RunFailed" for e in queue_host.errors)


def test_blob_trigger_ignores_non_manifest_blobs(env, functions, prefix):
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=b"rules: []\n", name=f"{container}/{prefix}.yaml"))
    assert records_for(f"{prefix}.yaml") == []


# -- timer --------------------------------------------------------------------------------------

def test_timer_resyncs_current_manifests(env, stack, seeded, functions, queue_host, prefix):
    upload_manifest("a.txt", f"library/busybox:1.36 => {prefix}/busybox\n")
    upload_manifest("b.txt", f"quay.io/jetstack/cert-manager-controller:v1.15.2 => {prefix}/cm\n")
    functions["resync_timer"](TimerRequest(past_due=True))
    assert {r["status"] for r in records_for("a.txt") + records_for("b.txt")} == {"queued"}
    queue_host.drain()
    a, b = records_for("a.txt"), records_for("b.txt")
    assert len(a) == 1 and len(b) == 1 and a[0]["trigger"] == "timer"
    assert a[0]["summary"]["imported"] == 1
    functions["resync_timer"](TimerRequest())
    queue_host.drain()
    latest = sorted(records_for("a.txt"), key=lambda r: r["started_at"])[-1]
    assert latest["summary"]["unchanged"] == 1 and latest["summary"]["imported"] == 0


def test_timer_skips_while_another_resync_holds_the_lease(env, functions, prefix):
    upload_manifest("c.txt", f"library/busybox:1.36 => {prefix}/busybox\n")
    s = services()
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with s.store.lease(s.settings.outcomes_container, "locks/resync", seconds=15):
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        functions["resync_timer"](TimerRequest())
        assert records_for("c.txt") == []
    finally:
        release.set()
        holder.join()


# -- Event Grid ---------------------------------------------------------------------------------

def grid_event(body: dict) -> func.EventGridEvent:
    return func.EventGridEvent(id=body["id"], data=body["data"], topic=body["topic"], subject=body["subject"],
                               event_type=body["eventType"], event_time=datetime.now(timezone.utc),
                               data_version=body["dataVersion"])


def event_records(event_id: str) -> list[dict]:
    s = services()
    names = [n for n in s.store.list_names(s.settings.outcomes_container, "events/") if event_id in n]
    return [s.store.get_json(s.settings.outcomes_container, n) for n in names]


@pytest.mark.parametrize("fixture", ["image_pushed.json", "image_deleted.json", "chart_pushed.json",
                                     "chart_deleted.json"])
def test_event_fixtures_are_recorded_once(env, functions, fixture):
    body = json.loads((FIXTURES / "event-grid-schema" / fixture).read_text())
    body["id"] = f"{uuid.uuid4()}"
    body["topic"] = services().settings.registry_id  # the samples' registry is not this app's
    functions["registry_event"](grid_event(body))
    functions["registry_event"](grid_event(body))  # duplicate delivery
    [record] = event_records(body["id"])
    assert record["event"]["type"] == body["eventType"]
    assert record["status"] == "recorded"


def test_cloud_event_schema_is_accepted(env, functions):
    body = json.loads((FIXTURES / "event-grid-schema" / "image_pushed.json").read_text())
    event = func.CloudEvent(id=str(uuid.uuid4()), source=services().settings.registry_id, type=body["eventType"],
                            specversion="1.0", subject=body["subject"], data=body["data"])
    functions["registry_event"](event)
    [record] = event_records(event.id)
    assert record["event"]["schema"] == "cloudevents"
    assert record["event"]["repository"] == "samples/nginx"


def test_unknown_events_are_recorded_and_malformed_ones_are_not_acknowledged(env, functions, caplog):
    registry = services().settings.registry_id
    unknown = {"id": str(uuid.uuid4()), "topic": registry, "subject": "s", "eventType": "Contoso.Thing.Happened",
               "dataVersion": "1", "data": {}}
    functions["registry_event"](grid_event(unknown))
    assert event_records(unknown["id"])[0]["status"] == "ignored"
    malformed = {"id": str(uuid.uuid4()), "topic": registry, "subject": "s",
                 "eventType": "Microsoft.ContainerRegistry.ImagePushed", "dataVersion": "1",
                 "data": {"target": {"digest": "sha256:" + "0" * 64}}}
    with pytest.raises(ValidationError, match="data.target.repository"):  # Event Grid retries, then dead-letters
        functions["registry_event"](grid_event(malformed))
    assert event_records(malformed["id"]) == []
    assert "cannot understand Event Grid event" in caplog.text


def test_deleted_mirrored_image_is_reimported(env, stack, seeded, functions, queue_host, prefix):
    """ImageDeleted of a mirrored tag (a real delete on the emulated ACR) re-imports it."""
    upload_manifest("mirror.txt", f"library/nginx:1.27 => {prefix}/nginx\n")
    s = services()
    from shared.handlers.runs import run_in_process

    assert run_in_process(s, f"library/nginx:1.27 => {prefix}/nginx\n", name="mirror.txt",
                          trigger="cli")["status"] == "succeeded"
    seen: list[dict] = []
    unsubscribe = stack.emulator.events.subscribe(lambda events: seen.extend(events))
    try:
        s.clients.data_plane.delete_tag(f"{prefix}/nginx", "1.27")
        deadline = time.monotonic() + 20
        while not any(e["eventType"].endswith("ImageDeleted") and e["data"]["target"]["repository"] ==
                      f"{prefix}/nginx" for e in seen):
            assert time.monotonic() < deadline, f"no ImageDeleted event; saw {seen}"
            time.sleep(0.1)
    finally:
        unsubscribe()
    deleted = next(e for e in seen if e["eventType"].endswith("ImageDeleted"))
    functions["registry_event"](grid_event(deleted))
    [record] = event_records(deleted["id"])
    assert record["actions"] and record["actions"][0]["status"] == "queued"
    queue_host.drain()
    run = s.store.get_json(s.settings.outcomes_container, f"runs/{record['actions'][0]['run_id']}.json")
    assert run["status"] == "succeeded" and run["trigger"] == "event" and run["summary"]["imported"] == 1
    assert backing_digest(stack, f"{prefix}/nginx:1.27") == seeded["library/nginx:1.27"]


# -- HTTP through the registered function ----------------------------------------------------

def call_http(functions, method: str, url: str, body: bytes = b"", headers=None) -> func.HttpResponse:
    request = func.HttpRequest(method=method, url=url, headers=headers or {}, body=body)
    return asyncio.run(functions["http_app_func"](request, None))


def test_http_function_plans_through_asgi(env, stack, seeded, functions, prefix):
    response = call_http(functions, "POST", "http://localhost/api/imports?plan=true",
                         f"nginx:1.27 => {prefix}/nginx\n".encode(), {"content-type": "text/plain"})
    assert response.status_code == 200, response.get_body()
    plan = json.loads(response.get_body())
    assert plan["kind"] == "plan" and plan["entries"][0]["action"] == "new"


def test_http_function_problem_json_for_bad_manifest(env, functions):
    response = call_http(functions, "POST", "http://localhost/api/imports", b"ok:1\nBAD REF\n",
                         {"content-type": "text/plain"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = json.loads(response.get_body())
    assert problem["errors"][0]["line"] == 2


def test_self_heal_that_could_not_be_queued_is_healed_by_the_redelivery(env, stack, functions, queue_host, prefix):
    """The queue is unreachable when ImageDeleted arrives: the invocation fails and the event is not
    recorded, so Event Grid's redelivery queues the re-import."""
    upload_manifest("heal.txt", f"library/busybox:1.36 => {prefix}/bb\n")
    body = json.loads((FIXTURES / "event-grid-schema" / "image_deleted.json").read_text())
    body["id"] = str(uuid.uuid4())
    body["topic"] = services().settings.registry_id
    body["data"]["target"]["repository"] = f"{prefix}/bb"
    good = stack.env["AzureWebJobsStorage"]
    env.setenv("AzureWebJobsStorage", good.replace(f":{stack.queue_port}/", ":1/"))
    entrypoints.reset()
    with pytest.raises(Exception):  # noqa: B017 - any error: the point is that it is not swallowed
        functions["registry_event"](grid_event(body))
    assert event_records(body["id"]) == []
    env.setenv("AzureWebJobsStorage", good)
    entrypoints.reset()
    functions["registry_event"](grid_event(body))
    [record] = event_records(body["id"])
    assert record["actions"][0]["status"] == "queued"
