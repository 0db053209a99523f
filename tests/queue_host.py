"""A small stand-in for the Functions host's queue trigger, for tests: dequeue run messages from Azurite
and call the registered functions (``run_worker``, ``run_poison``) with real ``func.QueueMessage`` objects.

What the host does and this does too: a message is invisible while it is processed (``lease``
seconds); success deletes it; a raised error makes it visible again after ``retry_after`` seconds
(host.json ``visibilityTimeout``); after ``max_dequeue`` deliveries (``maxDequeueCount``) a failing
message moves to ``<queue>-poison``, which ``run_poison`` reads. Settings come from os.environ, as the
functions read them. (devstack's queue runner is the fuller, multi-process version of this.)

    python -m tests.queue_host --once     # one delivery, then exit (the SIGKILL test runs this)
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import sys
import threading
import time
from typing import Optional

import inspect
import uuid

import azure.functions as func
from azure.functions.queue import QueueMessage  # what the Python worker builds for a queue trigger

log = logging.getLogger(__name__)


class InvocationContext(func.Context):
    """The ``context`` the Python worker passes to a function that declares one (azure.functions only
    declares the interface): an invocation id, and the thread-local its log handler reads it from."""

    def __init__(self, function_name: str, invocation_id: Optional[str] = None):
        self._name = function_name
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._tls = threading.local()

    invocation_id = property(lambda self: self._invocation_id)
    thread_local_storage = property(lambda self: self._tls)
    function_name = property(lambda self: self._name)
    function_directory = property(lambda self: ".")
    trace_context = property(lambda self: None)
    retry_context = property(lambda self: None)


def call(function, name: str, message: QueueMessage, context: Optional[func.Context] = None):
    """Call a queue function as the worker does: with a ``context`` when its signature asks for one."""
    if "context" in inspect.signature(function).parameters:
        return function(message, context=context or InvocationContext(name))
    return function(message)


def _kind(body: bytes) -> str:
    try:
        data = json.loads(body)
        return data.get("kind", "chunk") if isinstance(data, dict) else "malformed"
    except ValueError:
        return "malformed"


def _queue(name: str):
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    client = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], name,
                                                message_encode_policy=TextBase64EncodePolicy(),
                                                message_decode_policy=TextBase64DecodePolicy())
    try:
        client.create_queue()
    except Exception:  # noqa: BLE001 - exists already
        pass
    return client


class QueueHost:
    def __init__(self, functions: dict, *, lease: float = 20.0, retry_after: float = 0.0,
                 max_dequeue: Optional[int] = None):
        self.functions = functions
        self.lease = lease
        self.retry_after = retry_after
        self.max_dequeue = max_dequeue or int(os.environ.get("RUN_MAX_DEQUEUE_COUNT") or 5)
        name = os.environ.get("RUNS_QUEUE") or "airlock-runs"
        self.queue = _queue(name)
        self.poison = _queue(f"{name}-poison")
        self.errors: list[BaseException] = []
        self.deliveries = 0
        self.by_kind: collections.Counter = collections.Counter()  # deliveries by message kind (chunk, import)
        self._lock = threading.Lock()

    def _deliver(self, queue, function: str, *, poison: bool) -> bool:
        """One message, if one is visible; True when one was handled (whatever the outcome)."""
        messages = queue.receive_messages(max_messages=1, visibility_timeout=max(1, int(self.lease)))
        message = next(iter(messages), None)
        if message is None:
            return False
        body = message.content.encode() if isinstance(message.content, str) else message.content
        qm = QueueMessage(id=message.id, body=body, pop_receipt=message.pop_receipt,
                          dequeue_count=message.dequeue_count, insertion_time=message.inserted_on,
                          expiration_time=message.expires_on, time_next_visible=message.next_visible_on)
        with self._lock:
            self.deliveries += 1
            self.by_kind[_kind(body)] += 1
        try:
            call(self.functions[function], function, qm)
        except Exception as exc:  # noqa: BLE001 - what the host does with a failed invocation
            with self._lock:
                self.errors.append(exc)
            log.info("%s raised %s: %s", function, type(exc).__name__, exc)
            if poison:
                queue.delete_message(message)
            elif message.dequeue_count >= self.max_dequeue:
                self.poison.send_message(message.content)
                queue.delete_message(message)
            else:
                queue.update_message(message, visibility_timeout=int(self.retry_after))
            return True
        queue.delete_message(message)
        return True

    def pending(self) -> int:
        return sum(q.get_queue_properties().approximate_message_count for q in (self.queue, self.poison))

    def drain(self, *, timeout: float = 120.0, workers: int = 1) -> "QueueHost":
        """Deliver until both queues are empty (invisible messages included), with ``workers`` threads."""
        deadline = time.monotonic() + timeout
        done = threading.Event()

        def work() -> None:
            while not done.is_set() and time.monotonic() < deadline:
                if not (self._deliver(self.queue, "run_worker", poison=False)
                        or self._deliver(self.poison, "run_poison", poison=True)):
                    time.sleep(0.1)

        def guarded() -> None:
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 - a bug in the host itself: fail the drain
                self.errors.append(exc)
                done.set()
                raise

        threads = [threading.Thread(target=guarded, name=f"queue-host-{i}") for i in range(workers)]
        for thread in threads:
            thread.start()
        try:
            while self.pending() and time.monotonic() < deadline and not done.is_set():
                time.sleep(0.2)
        finally:
            done.set()
            for thread in threads:
                thread.join()
        if self.pending():
            raise TimeoutError(f"queues not drained within {timeout:g}s ({self.pending()} messages left)")
        return self

    @contextlib.contextmanager
    def serving(self, workers: int = 1):
        """Deliver in the background for the duration of the block (a host that is simply running)."""
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                if not (self._deliver(self.queue, "run_worker", poison=False)
                        or self._deliver(self.poison, "run_poison", poison=True)):
                    stop.wait(0.1)

        threads = [threading.Thread(target=work, name=f"queue-host-{i}", daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def once(self) -> bool:
        return self._deliver(self.queue, "run_worker", poison=False)


def registered_functions() -> dict:
    import function_app

    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}


if __name__ == "__main__":  # pragma: no cover - run as a subprocess by tests
    logging.basicConfig(level=logging.INFO)
    host = QueueHost(registered_functions(), lease=float(os.environ.get("QUEUE_HOST_LEASE", "20")))
    if "--once" in sys.argv:
        sys.exit(0 if host.once() else 3)
    host.drain(timeout=float(os.environ.get("QUEUE_HOST_TIMEOUT", "120")))
