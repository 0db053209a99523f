"""A local stand-in for what the Functions host does for queue triggers, one process per instance.

    python -m devstack runner [--app function_app:app] [--processes N] [--host-json host.json]
                              [--function NAME ...] [--env-file .devstack/devstack.env]

For every function of the app (``app.get_functions()``) whose trigger is a ``queueTrigger``:

- the binding's ``queue_name`` has its ``%SETTING%`` parts resolved from the environment, as the
  host does; an unset setting (or an unset ``connection``) refuses to start (RunnerError);
- the connection is ``<connection>`` (a connection string, e.g. Azurite's) or identity-based
  ``<connection>__queueServiceUri`` / ``<connection>__accountName`` (DefaultAzureCredential);
- messages are dequeued in batches of ``batchSize`` and a new batch is fetched when no more than
  ``newBatchThreshold`` are in flight (host.json ``extensions.queues``; the host's defaults 16 and
  batchSize / 2); an empty queue is polled with a back-off from 100 ms up to ``maxPollingInterval``;
- the functions run on the Python worker's thread pool: ``PYTHON_THREADPOOL_THREAD_COUNT`` threads,
  by default min(32, CPUs + 4); dispatched messages beyond that wait for a thread;
- a dequeued message is invisible to others for a lease of 10 minutes, renewed at half-time while
  the function runs (as the host does), so N processes never run one delivery twice at once;
- the function is called with a real ``azure.functions.QueueMessage`` (id, body decoded per
  ``messageEncoding``, dequeue_count, insertion/expiration/next-visible times, pop_receipt);
- each invocation is logged as the host logs it: ``Executing '<function>'`` with how long the message
  waited in the queue, then ``Executed '<function>' (Succeeded|Failed, ...)`` with its duration;
- success deletes the message; an exception leaves it for redelivery after ``visibilityTimeout``
  (default 0); a message whose dequeue count reaches ``maxDequeueCount`` (default 5) and fails again,
  or arrives past it, is copied to ``<queue>-poison`` and deleted, as the host does.

The engine (batches, leases, redelivery, poison) is the package's own ``shared.handlers.worker``, the one
``airlock serve`` runs the queued runs with; this module adds what only a stand-in for the host needs:
host.json, the app's queue-triggered functions and their bindings, ``func.QueueMessage`` and the
invocation context, processes, and the command line.

SIGTERM/SIGINT stops dequeuing and waits for the calls in flight (``--grace`` seconds); whatever
is still running then is left for redelivery when its lease runs out, like an instance the
platform stopped. ``--processes N`` starts N such processes: N instances sharing the queues.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from shared.adapters.queues import Delivery, MessageQueue
from shared.handlers import worker as engine
from shared.handlers.worker import LEASE_SECONDS, Counters, QueueWorker, Target

__all__ = ["Counters", "QueueOptions", "QueueRunner", "RunnerError", "queue_targets", "resolve_settings",
           "worker_threads"]

log = logging.getLogger(__name__)

_SETTING = re.compile(r"%([^%]+)%")


class RunnerError(Exception):
    """The runner cannot start: the message says which function, setting or file is at fault."""


# --- host.json ------------------------------------------------------------------------------------

def _timespan(value: Any, what: str) -> float:
    """host.json time: "hh:mm:ss[.fff]" (or "d.hh:mm:ss") or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", str(value).strip())
    if not match:
        raise RunnerError(f"host.json extensions.queues.{what}: {value!r} is not a time span (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueOptions(engine.QueueOptions):
    """host.json ``extensions.queues``, with the host's defaults (the worker's options, read from a file)."""

    @classmethod
    def from_host_json(cls, path: Optional[os.PathLike | str]) -> "QueueOptions":
        if path is None or not Path(path).exists():
            return cls()
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise RunnerError(f"{path}: not readable JSON ({exc})") from exc
        queues = (document.get("extensions") or {}).get("queues") or {}
        batch = int(queues.get("batchSize", 16))
        if not 1 <= batch <= 32:
            raise RunnerError(f"{path}: extensions.queues.batchSize must be 1..32, not {batch}")
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise RunnerError(f"{path}: extensions.queues.messageEncoding must be base64 or none")
        return cls(
            batch_size=batch,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_timespan(queues.get("visibilityTimeout", 0), "visibilityTimeout"),
            max_polling_interval=_timespan(queues.get("maxPollingInterval", 60), "maxPollingInterval"),
            message_encoding=encoding,
        )


def worker_threads(env: Mapping[str, str]) -> int:
    """Threads the Python worker runs synchronous functions on: ``PYTHON_THREADPOOL_THREAD_COUNT``
    (1-32), by default ``min(32, CPUs + 4)`` (the ThreadPoolExecutor default the worker uses). Messages
    the host dispatched beyond that wait inside the worker, still counted as in flight by the host."""
    value = str(env.get("PYTHON_THREADPOOL_THREAD_COUNT") or "").strip()
    if not value:
        return min(32, (os.cpu_count() or 1) + 4)
    if not value.isdigit() or not 1 <= int(value) <= 32:
        raise RunnerError(f"PYTHON_THREADPOOL_THREAD_COUNT must be a whole number 1..32, not {value!r}")
    return int(value)


# --- the functions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueTarget:
    function_name: str
    queue_name: str  # resolved
    connection: str
    arg_name: str
    call: Callable[..., Any] = field(repr=False)


class InvocationContext:
    """The ``context`` the Python worker passes to a function that declares one (``func.Context``): an
    invocation id, and the thread-local its log handler reads the invocation from."""

    def __init__(self, function_name: str):
        self.function_name = function_name
        self.invocation_id = str(uuid.uuid4())
        self.thread_local_storage = threading.local()
        self.function_directory = os.getcwd()
        self.trace_context = self.retry_context = None


def resolve_settings(value: str, env: Mapping[str, str], where: str) -> str:
    """``%NAME%`` parts replaced from ``env``; an unset or empty setting is a RunnerError."""
    def setting(match: re.Match) -> str:
        name = match.group(1)
        if not env.get(name):
            raise RunnerError(f"{where}: app setting {name} (from {value!r}) is not set; "
                              "the Functions host refuses to start without it")
        return env[name]

    return _SETTING.sub(setting, value)


def queue_targets(app, env: Mapping[str, str], only: Optional[set[str]] = None) -> list[QueueTarget]:
    """The queue-triggered functions of ``app`` (a FunctionApp), bindings resolved against ``env``."""
    targets = []
    for function in app.get_functions():
        name = function.get_function_name()
        trigger = function.get_trigger()
        if trigger is None or trigger.type != "queueTrigger" or (only and name not in only):
            continue
        others = [b.name for b in function.get_bindings() if b is not trigger]
        if others:
            raise RunnerError(f"function {name}: bindings other than the queue trigger are not run here "
                              f"({', '.join(others)})")
        where = f"function {name}"
        queue = resolve_settings(trigger.queue_name, env, f"{where} queue_name").lower()
        connection = getattr(trigger, "connection", None) or "AzureWebJobsStorage"
        targets.append(QueueTarget(name, queue, resolve_settings(connection, env, f"{where} connection"),
                                   trigger.name, function.get_user_function()))
    if only and {t.function_name for t in targets} != only:
        missing = only - {t.function_name for t in targets}
        raise RunnerError(f"no queue-triggered function named {', '.join(sorted(missing))} in the app")
    return targets


def queue_service(connection: str, env: Mapping[str, str]):
    """A QueueServiceClient for a binding's ``connection`` setting (string or identity-based)."""
    from azure.storage.queue import QueueServiceClient

    if env.get(connection):
        return QueueServiceClient.from_connection_string(env[connection])
    uri = env.get(f"{connection}__queueServiceUri")
    if not uri and env.get(f"{connection}__accountName"):
        uri = f"https://{env[f'{connection}__accountName']}.queue.core.windows.net"
    if not uri:
        raise RunnerError(f"connection {connection}: set {connection} (a connection string) or "
                          f"{connection}__queueServiceUri; the Functions host refuses to start without it")
    from azure.identity import DefaultAzureCredential

    return QueueServiceClient(uri, credential=DefaultAzureCredential())


def load_app(spec: str):
    """``module:attribute`` (default attribute ``app``) -> the FunctionApp."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RunnerError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise RunnerError(f"{spec!r} is not a FunctionApp")
    return app


# --- the runner: the package's queue worker, calling the app's functions ----------------------------

def invoke(function: QueueTarget, body: bytes, delivery: Delivery) -> None:
    """Call a queue function as the Python worker does: a real ``func.QueueMessage``, and a ``context``
    when its signature asks for one; a coroutine function is run to its end."""
    from azure.functions.queue import QueueMessage

    argument = QueueMessage(id=delivery.id, body=body, dequeue_count=delivery.dequeue_count,
                            expiration_time=delivery.expires_on, insertion_time=delivery.inserted_on,
                            time_next_visible=delivery.next_visible_on, pop_receipt=delivery.pop_receipt)
    arguments = {function.arg_name: argument}
    if "context" in inspect.signature(function.call).parameters:  # as the Python worker does
        arguments["context"] = InvocationContext(function.function_name)
    result = function.call(**arguments)
    if inspect.iscoroutine(result):
        asyncio.run(result)


class QueueRunner(QueueWorker):
    """Runs the queue triggers of one app in this process (one "instance")."""

    fatal = (RunnerError,)  # a connection setting missing: the host would not start either

    def __init__(self, app, *, env: Optional[Mapping[str, str]] = None,
                 host_json: Optional[os.PathLike | str] = None, functions: Optional[set[str]] = None,
                 lease_seconds: float = LEASE_SECONDS):
        self.env = dict(os.environ if env is None else env)
        options = QueueOptions.from_host_json(host_json)
        self.functions = queue_targets(app, self.env, functions)
        if not self.functions:
            raise RunnerError("the app has no queue-triggered function")
        self._services: dict[str, Any] = {}
        self._services_lock = threading.Lock()
        targets = [Target(f.function_name, f.queue_name, functools.partial(self._open, f.connection),
                          functools.partial(invoke, f)) for f in self.functions]
        super().__init__(targets, options=options, threads=worker_threads(self.env), lease_seconds=lease_seconds,
                         logger=log)

    def _open(self, connection: str, queue: str) -> MessageQueue:
        with self._services_lock:
            if connection not in self._services:
                self._services[connection] = queue_service(connection, self.env)
            service = self._services[connection]
        return MessageQueue.open(service, queue)


# --- command line ------------------------------------------------------------------------------------

def read_env_file(path: os.PathLike | str) -> dict[str, str]:
    values = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            values[key.strip()] = value
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--processes", type=int, default=1, help="instances (processes) to run")
    parser.add_argument("--host-json", default="host.json", help="host.json with extensions.queues")
    parser.add_argument("--function", action="append", default=[], help="only this function (repeatable)")
    parser.add_argument("--env-file", help="KEY=VALUE lines added to the environment (e.g. the devstack env)")
    parser.add_argument("--settings", help="a local.settings.json: its Values are app settings, as `func start` "
                                           "has them (the environment and --env-file win)")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to let calls end on SIGTERM")


def run_command(args: argparse.Namespace) -> int:
    if args.env_file:
        os.environ.update(read_env_file(args.env_file))
    if args.settings:
        values = json.loads(Path(args.settings).read_text()).get("Values", {})
        for key, value in values.items():
            if value and not os.environ.get(key):
                os.environ[key] = str(value)
    if args.processes < 1:
        print("runner: --processes must be at least 1", file=sys.stderr)
        return 2
    logging.getLogger("azure").setLevel(logging.WARNING)  # as host.json's "Azure.Core": "Warning"
    if args.processes > 1:
        return _run_children(args)
    sys.path.insert(0, os.getcwd())
    try:
        runner = QueueRunner(load_app(args.app), host_json=args.host_json, functions=set(args.function) or None)
    except RunnerError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    queues = ", ".join(f"{t.function_name} <- {t.queue_name}" for t in runner.targets)
    _say(f"runner {os.getpid()}: {queues} (batch {runner.options.batch_size}, new batch at "
         f"{runner.options.new_batch_threshold}, {runner.worker_threads} worker threads, "
         f"max dequeue {runner.options.max_dequeue_count})")
    counters = runner.run(stop, grace=args.grace)
    _say(f"runner {os.getpid()}: stopped; {counters.succeeded} succeeded, {counters.failed} failed, "
         f"{counters.poisoned} poisoned")
    return 0


def _say(line: str) -> None:
    """One line in one write, so the lines of N processes sharing a pipe do not interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run_children(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "devstack", "runner", "--processes", "1", "--app", args.app,
            "--host-json", args.host_json, "--grace", str(args.grace)]
    if args.settings:
        argv += ["--settings", args.settings]
    for name in args.function:
        argv += ["--function", name]
    children = [subprocess.Popen(argv) for _ in range(args.processes)]

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    return max(child.wait() for child in children)
