"""A queue worker in this process: what the Functions host does for queue triggers, for ``airlock serve``.

``RunWorker`` runs the queued runs of ``RUNS_QUEUE`` (``on_run_message``) and of ``RUNS_QUEUE-poison``
(``on_poison_message``) where no Functions host does: ``airlock serve`` starts one, so an import the
API accepts (202) is executed by the same process, and ``pip install 'acr-airlock[serve]'`` is all it
takes. It also runs the reaper every ``REAPER_INTERVAL`` seconds, as the ``run_reaper`` timer does, so a
run whose worker was killed ends ``abandoned`` instead of staying ``running``. ``QueueWorker`` is the
engine, for any queues and any calls (devstack's runner drives function_app's queue functions with it).

What the host does and this does too (host.json ``extensions.queues``; ``HOST_JSON_QUEUES`` holds the
shipped host.json's figures and a test keeps them equal):

- messages are received in batches of ``batch_size``, and a new batch is fetched when no more than
  ``new_batch_threshold`` are in flight; an empty queue is polled with a back-off from 100 ms up to
  ``max_polling_interval``;
- a received message is invisible to other workers for a lease (10 minutes, as the host's), renewed at
  half-time while its call runs, so several workers (processes, instances, a Function App on the same
  storage) never run one delivery twice at once;
- success deletes the message; an exception makes it visible again after ``visibility_timeout``; a
  message whose dequeue count has reached ``max_dequeue_count`` and fails again, or that arrives past
  it, is copied as it came to ``<queue>-poison`` and deleted (the poison queue's own failures go to
  ``<queue>-poison-poison``, the name the host gives them). The dequeue count is the storage service's,
  so the run code's own verdicts (``RUN_MAX_DEQUEUE_COUNT``, which the host's ``maxDequeueCount``
  equals) see the same delivery number as under the host;
- the body is base64-decoded (``message_encoding``); a message that is not valid base64 fails like any
  other failed call, and so ends in the poison queue.

Stopping (``stop``/``close``) stops receiving and waits ``grace`` seconds for the calls in flight; a
call still running then is left for redelivery when its lease runs out, like an instance the platform
stopped.
"""
from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from ..adapters.queues import Delivery, MessageQueue

log = logging.getLogger(__name__)

LEASE_SECONDS = 600  # the host's visibility timeout for a message being processed (10 minutes)
FIRST_POLL_DELAY = 0.1
REAPER_INTERVAL = 300.0  # the run_reaper timer's schedule (REAPER_SCHEDULE, every 5 minutes)


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``; the defaults are the Functions host's own."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def in_flight(self) -> int:
        """The most messages one worker has in flight (a batch fetched at the threshold)."""
        return self.batch_size + self.new_batch_threshold


# the shipped host.json's extensions.queues (tests/unit/test_worker_options.py keeps them equal)
HOST_JSON_QUEUES = QueueOptions(batch_size=8, new_batch_threshold=16, max_dequeue_count=5, visibility_timeout=30.0,
                                max_polling_interval=2.0)


@dataclass(frozen=True)
class Target:
    """One queue trigger: the queue, how to open a queue by name (the queue and its poison queue), and the
    call a delivery is handed to (it raises to fail the delivery). ``body`` is the decoded message."""

    function_name: str
    queue_name: str
    open: Callable[[str], MessageQueue] = field(repr=False)
    call: Callable[[bytes, Delivery], object] = field(repr=False)


@dataclass
class Counters:
    succeeded: int = 0
    failed: int = 0
    poisoned: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


def _age(inserted_on: Optional[datetime]) -> Optional[float]:
    """Seconds since a message was inserted (its queue wait when it is received), None if unknown."""
    if inserted_on is None:
        return None
    when = inserted_on if inserted_on.tzinfo else inserted_on.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - when).total_seconds()


class _Lease:
    """Keeps a message invisible while its call runs (the pop receipt changes on each renewal)."""

    def __init__(self, queue: MessageQueue, delivery: Delivery, seconds: float, logger: logging.Logger):
        self._queue, self._id, self._seconds, self._log = queue, delivery.id, seconds, logger
        self.pop_receipt = delivery.pop_receipt
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{delivery.id[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._seconds / 2):
            with self._lock:
                try:
                    self.pop_receipt = self._queue.hide(self._id, self.pop_receipt, self._seconds)
                except Exception as exc:  # noqa: BLE001 - the message may be gone; the call goes on
                    self._log.warning("could not renew the lease of message %s: %s", self._id, exc)

    def end(self) -> str:
        self._stop.set()
        with self._lock:
            return self.pop_receipt


class QueueWorker:
    """Runs the calls of ``targets`` on ``threads`` threads, as one host instance does. An error while
    polling is logged and polling goes on, unless it is one of ``fatal`` (a queue that cannot be opened
    for want of a setting, say), which ends ``run``."""

    fatal: tuple[type[BaseException], ...] = ()

    def __init__(self, targets: list[Target], *, options: QueueOptions = QueueOptions(), threads: int = 8,
                 lease_seconds: float = LEASE_SECONDS, logger: Optional[logging.Logger] = None):
        if not targets:
            raise ValueError("a queue worker needs at least one queue")
        self.targets = list(targets)
        self.options = options
        self.lease_seconds = lease_seconds
        self.worker_threads = threads
        self.counters = Counters()
        self.log = logger or log
        self._queues: dict[tuple[str, str], MessageQueue] = {}
        self._in_flight: dict[str, int] = {t.queue_name: 0 for t in self.targets}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="queue-fn")
        self._stopping = threading.Event()

    # -- queues
    def _queue(self, target: Target, name: str) -> MessageQueue:
        key = (target.function_name, name)
        with self._lock:
            queue = self._queues.get(key)
        if queue is None:
            queue = target.open(name)
            with self._lock:
                queue = self._queues.setdefault(key, queue)
        return queue

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    # -- the loop
    def poll_once(self) -> int:
        """Fetch a batch for every queue that has room; returns how many messages were dispatched."""
        dispatched = 0
        for target in self.targets:
            with self._lock:
                busy = self._in_flight[target.queue_name]
            if busy > self.options.new_batch_threshold or self._stopping.is_set():
                continue
            queue = self._queue(target, target.queue_name)
            batch = queue.receive(self.options.batch_size, self.lease_seconds)
            for delivery in batch:
                with self._lock:
                    self._in_flight[target.queue_name] += 1
                self._pool.submit(self._handle, target, queue, delivery)
            dispatched += len(batch)
        return dispatched

    def tick(self) -> None:
        """Called between polls (the loop's thread); subclasses add periodic work."""

    def run(self, stop: Optional[threading.Event] = None, *, grace: float = 30.0) -> Counters:
        """Poll until ``stop`` is set, then let the calls in flight end (up to ``grace`` seconds). A storage
        error while polling is logged and polled again after the back-off (the host keeps polling too)."""
        stop = stop or threading.Event()
        delay = FIRST_POLL_DELAY
        try:
            while not stop.is_set():
                self.tick()
                try:
                    dispatched = self.poll_once()
                except self.fatal:
                    raise
                except Exception as exc:  # noqa: BLE001 - storage unreachable: try again later
                    self.log.warning("polling the queues failed: %s: %s", type(exc).__name__, exc)
                    dispatched = 0
                if dispatched:
                    delay = FIRST_POLL_DELAY
                    stop.wait(0.02)
                else:
                    stop.wait(delay)
                    delay = min(delay * 2, max(FIRST_POLL_DELAY, self.options.max_polling_interval))
        finally:
            self.close(grace)
        return self.counters

    def drain(self, *, idle: float = 1.0, timeout: float = 60.0) -> Counters:
        """Process until nothing was dispatched or in flight for ``idle`` seconds (tests)."""
        deadline, quiet_since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.poll_once() or self.in_flight():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= idle:
                return self.counters
            time.sleep(0.05)
        raise TimeoutError(f"queues not drained within {timeout:g}s ({self.in_flight()} in flight)")

    def close(self, grace: float = 30.0) -> None:
        self._stopping.set()
        deadline = time.monotonic() + grace
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one message
    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "none":
            return content.encode("utf-8")
        return base64.b64decode(content.encode("ascii"), validate=True)

    def _handle(self, target: Target, queue: MessageQueue, delivery: Delivery) -> None:
        try:
            if delivery.dequeue_count > self.options.max_dequeue_count:
                self._poison(target, queue, delivery, delivery.pop_receipt)
                return
            lease = _Lease(queue, delivery, self.lease_seconds, self.log)
            began = time.monotonic()
            waited = _age(delivery.inserted_on)
            self.log.info("Executing '%s' (message %s, dequeue count %d, inserted %s s ago)", target.function_name,
                          delivery.id, delivery.dequeue_count, "?" if waited is None else f"{waited:.2f}")
            try:
                try:
                    body = self._decode(delivery.content)
                except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
                    raise ValueError(f"message {delivery.id} is not valid {self.options.message_encoding}") from exc
                target.call(body, delivery)
            except Exception as exc:  # noqa: BLE001 - a failed invocation, as the host records it
                receipt = lease.end()
                self.counters.add("failed")
                self.log.info("Executed '%s' (Failed, message %s, duration %d ms)", target.function_name,
                              delivery.id, (time.monotonic() - began) * 1000)
                self.log.warning("function %s failed on message %s (dequeue count %d): %s: %s",
                                 target.function_name, delivery.id, delivery.dequeue_count, type(exc).__name__, exc)
                if delivery.dequeue_count >= self.options.max_dequeue_count:
                    self._poison(target, queue, delivery, receipt)
                else:
                    queue.hide(delivery.id, receipt, self.options.visibility_timeout)
                return
            receipt = lease.end()
            self.log.info("Executed '%s' (Succeeded, message %s, duration %d ms)", target.function_name,
                          delivery.id, (time.monotonic() - began) * 1000)
            queue.delete(delivery.id, receipt)
            self.counters.add("succeeded")
        except Exception:  # noqa: BLE001 - storage trouble: the message comes back after its lease
            self.log.exception("handling message %s of %s failed", delivery.id, target.queue_name)
        finally:
            with self._lock:
                self._in_flight[target.queue_name] -= 1

    def _poison(self, target: Target, queue: MessageQueue, delivery: Delivery, receipt: str) -> None:
        poison = self._queue(target, f"{target.queue_name}-poison")
        poison.send_raw(delivery.content)  # as it came: the same encoded text
        queue.delete(delivery.id, receipt)
        self.counters.add("poisoned")
        self.log.warning("message %s of %s moved to %s-poison after %d deliveries", delivery.id, target.queue_name,
                         target.queue_name, delivery.dequeue_count)


class RunWorker(QueueWorker):
    """``run_worker`` and ``run_poison`` (and the reaper) for one ``Services``, in this process: what the
    Function App's queue functions and reaper timer do, for ``airlock serve``. ``start`` runs it on a
    thread of its own; ``status`` is what ``/api/health`` shows."""

    def __init__(self, services, *, options: QueueOptions = HOST_JSON_QUEUES, threads: Optional[int] = None,
                 reaper_interval: Optional[float] = REAPER_INTERVAL, lease_seconds: float = LEASE_SECONDS):
        from .runs import on_poison_message, on_run_message

        self.services = services
        name = services.settings.runs_queue
        # the host's maxDequeueCount is RUN_MAX_DEQUEUE_COUNT's twin (docs/architecture.md): keep them one
        options = QueueOptions(options.batch_size, options.new_batch_threshold, services.settings.run_max_dequeue,
                               options.visibility_timeout, options.max_polling_interval, options.message_encoding)

        def open_queue(queue_name: str) -> MessageQueue:
            return MessageQueue.open(services.clients.queue_service, queue_name)

        targets = [
            Target("run_worker", name, open_queue, lambda body, d: on_run_message(services, body, d.dequeue_count)),
            Target("run_poison", f"{name}-poison", open_queue,
                   lambda body, d: on_poison_message(services, body, d.dequeue_count)),
        ]
        super().__init__(targets, options=options, threads=threads or options.in_flight, lease_seconds=lease_seconds)
        self.reaper_interval = reaper_interval
        self._next_reap = time.monotonic() + (reaper_interval or 0)
        self._reaping = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_error: Optional[str] = None

    def tick(self) -> None:
        if self.reaper_interval and time.monotonic() >= self._next_reap:
            self._next_reap = time.monotonic() + self.reaper_interval
            threading.Thread(target=self.reap, name="run-reaper", daemon=True).start()

    def reap(self) -> list[dict]:
        """One reaper pass (one at a time); its failures are logged, as a failed timer's would be."""
        from .runs import reap

        if not self._reaping.acquire(blocking=False):
            return []
        try:
            return reap(self.services)
        except Exception as exc:  # noqa: BLE001 - the next pass tries again
            log.warning("the reaper failed: %s: %s", type(exc).__name__, exc)
            return []
        finally:
            self._reaping.release()

    def start(self) -> "RunWorker":
        def loop() -> None:
            try:
                self.run(self._stop)
            except BaseException as exc:  # noqa: BLE001 - reported by status(); the API says unhealthy
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("the queue worker stopped")

        self._thread = threading.Thread(target=loop, name="queue-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stop receiving; wait up to ``grace`` seconds for the calls in flight."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace + 5)

    def status(self) -> dict:
        c = self.counters
        with c.lock:
            counts = {"succeeded": c.succeeded, "failed": c.failed, "poisoned": c.poisoned}
        running = self._thread is not None and self._thread.is_alive() and not self._stop.is_set()
        return {"running": running, "queue": self.targets[0].queue_name, "in_flight": self.in_flight(), **counts,
                **({"error": self.last_error} if self.last_error else {})}
