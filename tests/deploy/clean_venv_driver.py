"""Run inside a venv built from requirements.txt alone (see test_clean_venv.py): import function_app and
call every registered function once, by trigger type, the way the Functions host would, against the
local stand-in whose settings are in the environment.

Only the standard library and requirements.txt may be imported here. Prints one JSON document:
{"python", "module_files", "invoked": {function name: what happened}, "failures": [text]}.
Exit status 0 when every function ran and every check held.

Argument: a JSON object {"fixtures": dir of Event Grid fixtures, "manifest": text, "manifest_name": name}.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTING = re.compile(r"%([A-Za-z0-9_]+)%")
TERMINAL = {"succeeded", "failed", "invalid", "abandoned"}


def resolve(value: str) -> str:
    """What the Functions host does with %NAME% in a binding: the app setting's value, or refuse."""
    def one(match):
        name = match.group(1)
        if not os.environ.get(name):
            raise RuntimeError(f"binding names %{name}% but the setting is not set")
        return os.environ[name]
    return SETTING.sub(one, value)


def trigger_of(function) -> dict:
    [binding] = [b for b in json.loads(function.get_function_json())["bindings"] if b["type"].endswith("Trigger")]
    return binding


def import_every_module() -> list[str]:
    """Every module of the shared package imports (module-level dependencies are all installed)."""
    import shared

    names = []
    for info in pkgutil.walk_packages(shared.__path__, "shared."):
        if info.name.endswith(".__main__"):
            continue  # runs the CLI
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def services():
    from shared import entrypoints

    return entrypoints.services()


def call_http(function, method: str, path: str) -> tuple[int, dict]:
    import azure.functions as func

    request = func.HttpRequest(method=method, url=f"https://example.azurewebsites.net{path}", headers={}, body=b"")
    response = asyncio.run(function.get_user_function()(request, None))
    body = response.get_body()
    return response.status_code, json.loads(body) if body else {}


def run_http(function, failures: list[str]) -> dict:
    seen = {}
    status, document = call_http(function, "GET", "/api/openapi.json")
    seen["GET /api/openapi.json"] = status
    if status != 200 or "/api/health" not in document.get("paths", {}):
        failures.append(f"GET /api/openapi.json answered {status}: {str(document)[:300]}")
    status, document = call_http(function, "GET", "/api/health")
    seen["GET /api/health"] = status
    if status != 200 or document.get("status") != "healthy":
        failures.append(f"GET /api/health answered {status}: {str(document)[:500]}")
    return seen


def run_blob(function, binding: dict, config: dict) -> dict:
    import azure.functions as func

    container, _, pattern = resolve(binding["path"]).partition("/")
    name = config["manifest_name"]
    data = config["manifest"].encode()
    store = services().store
    store.put_bytes(container, name, data)
    function.get_user_function()(func.blob.InputStream(data=data, name=f"{container}/{name}", length=len(data)))
    return {"container": container, "pattern": pattern, "blob": name}


def run_timer(function) -> dict:
    from azure.functions.timer import TimerRequest

    function.get_user_function()(TimerRequest(past_due=False))
    return {"past_due": False}


def run_event_grid(function, config: dict) -> dict:
    import azure.functions as func

    body = json.loads((Path(config["fixtures"]) / "image_pushed.json").read_text())
    event = func.EventGridEvent(id=str(uuid.uuid4()), data=body["data"], topic=body["topic"],
                                subject=body["subject"], event_type=body["eventType"],
                                event_time=datetime.now(timezone.utc), data_version=body["dataVersion"])
    function.get_user_function()(event)
    return {"event_type": body["eventType"], "id": event.id}


def host_message_encoding() -> str:
    host = json.loads((ROOT / "host.json").read_text())
    return host.get("extensions", {}).get("queues", {}).get("messageEncoding", "base64").lower()


class WorkerContext:
    """The ``context`` argument the Python worker passes to a function that declares one."""

    def __init__(self, function_name: str):
        import threading

        self.function_name, self.invocation_id = function_name, str(uuid.uuid4())
        self.thread_local_storage, self.function_directory = threading.local(), str(ROOT)
        self.trace_context = self.retry_context = None


SEEN: dict[str, str] = {}  # queue name -> the raw text of the last message taken from it


def run_queue(function, binding: dict) -> dict:
    """Drain the trigger's queue as the host would: receive, decode as host.json says, call, delete.

    A ``<queue>-poison`` queue holds nothing in a run that went well; the host moves a message there
    after its last failed delivery, so the same is done here with the last message of ``<queue>``."""
    from azure.core.exceptions import ResourceExistsError
    from azure.functions.queue import QueueMessage  # what the Python worker builds for a queue trigger
    from azure.storage.queue import QueueClient

    queue = resolve(binding["queueName"])
    connection = os.environ[binding.get("connection") or "AzureWebJobsStorage"]
    client = QueueClient.from_connection_string(connection, queue)
    encoding = host_message_encoding()
    base = queue[:-len("-poison")] if queue.endswith("-poison") else None
    if base is not None and base in SEEN:
        try:
            client.create_queue()
        except ResourceExistsError:
            pass
        client.send_message(SEEN[base])
    calls = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and calls < 200:
        messages = list(client.receive_messages(messages_per_page=16, visibility_timeout=60))
        if not messages:
            if calls:
                break
            time.sleep(0.2)
            continue
        for message in messages:
            raw = message.content if isinstance(message.content, str) else message.content.decode()
            SEEN[queue] = raw
            body = raw.encode()
            if encoding == "base64":
                try:
                    body = base64.b64decode(raw, validate=True)
                except binascii.Error:
                    pass  # the host would reject it; the function gets the raw text so the failure shows
            user = function.get_user_function()
            kwargs = {"context": WorkerContext(function.get_function_name())} \
                if "context" in inspect.signature(user).parameters else {}
            user(QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                              pop_receipt=message.pop_receipt, insertion_time=message.inserted_on,
                              expiration_time=message.expires_on), **kwargs)
            client.delete_message(message)
            calls += 1
    if not calls:
        raise RuntimeError(f"queue {queue} stayed empty: nothing the other triggers did reached it")
    return {"queue": queue, "messages": calls}


def final_record(name: str) -> dict | None:
    s = services()
    records = [s.store.get_json(s.settings.outcomes_container, n)
               for n in s.store.list_names(s.settings.outcomes_container, "runs/")]
    mine = [r for r in records if r and (r.get("manifest") or {}).get("name") == name]
    return max(mine, key=lambda r: r.get("started_at") or "") if mine else None


def main() -> int:
    config = json.loads(sys.argv[1])
    failures: list[str] = []
    invoked: dict[str, object] = {}
    import function_app

    functions = function_app.app.get_functions()
    modules = import_every_module()
    order = {"httpTrigger": 0, "blobTrigger": 1, "eventGridTrigger": 2, "timerTrigger": 3, "queueTrigger": 4}
    for function in sorted(functions, key=lambda f: order.get(trigger_of(f)["type"], 9)):
        name, binding = function.get_function_name(), trigger_of(function)
        kind = binding["type"]
        try:
            if kind == "httpTrigger":
                invoked[name] = run_http(function, failures)
            elif kind == "blobTrigger":
                invoked[name] = run_blob(function, binding, config)
            elif kind == "timerTrigger":
                resolve(binding["schedule"])
                invoked[name] = run_timer(function)
            elif kind == "eventGridTrigger":
                invoked[name] = run_event_grid(function, config)
            elif kind == "queueTrigger":
                invoked[name] = run_queue(function, binding)
            else:
                failures.append(f"{name}: no way to invoke a {kind} here; teach clean_venv_driver.py")
        except Exception:  # noqa: BLE001 - every failure is reported with its traceback
            failures.append(f"{name} ({kind}) raised:\n{traceback.format_exc()}")
    record = final_record(config["manifest_name"])
    if record is None or record.get("status") not in TERMINAL:
        failures.append(f"no finished run record for {config['manifest_name']}: {record}")
    elif record["status"] != "succeeded":
        failures.append(f"run of {config['manifest_name']} ended {record['status']}: {json.dumps(record)[:800]}")
    import azure.functions
    import starlette

    print(json.dumps({
        "python": sys.executable,
        "module_files": {"azure.functions": azure.functions.__file__, "starlette": starlette.__file__},
        "modules_imported": len(modules),
        "functions": sorted(f.get_function_name() for f in functions),
        "invoked": invoked,
        "record_status": record and record.get("status"),
        "failures": failures,
    }))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
