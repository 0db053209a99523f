"""``serve``: the HTTP API (``shared.http.app``) under uvicorn, without the Functions host.

    python -m shared serve [--host 127.0.0.1] [--port 7071] [--worker in-process|none] [--grace S]

What the Functions host does around the API, this command does too, so an import it accepts runs:

- ``--worker in-process`` (the default): a queue worker in this process (``shared.handlers.worker.
  RunWorker``) runs ``RUNS_QUEUE`` and its poison queue as the host's queue triggers would (batches,
  leases, redelivery after ``visibilityTimeout``, poison after ``RUN_MAX_DEQUEUE_COUNT`` deliveries), and
  the reaper every 5 minutes. Other workers on the same storage (a Function App, another ``serve``,
  ``python -m devstack runner``) share the queue safely: each delivery is leased.
- ``--worker none``: no worker; ``POST /api/imports`` is refused (503 ``NoQueueWorker``) except
  ``?plan=true``, rather than answering 202 for a run nothing would execute.
- ``SERVE_API_KEY``: every request needs that key where the host wants a function key
  (``x-functions-key`` header or ``?code=``); none is 401, another 403. Binding to an address other
  than loopback without one prints a warning.

uvicorn's access log lines pass ``shared.redact`` (a ``?code=`` key is written ``REDACTED``). SIGTERM stops
uvicorn, then the worker (calls in flight get ``--grace`` seconds; the rest are redelivered), and exits 0;
SIGINT (Ctrl-C) does the same and exits 130, as every command does when interrupted.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
from typing import TextIO

from ..errors import ConfigError
from .args import EXIT_OK, seconds, whole

log = logging.getLogger(__name__)


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="serve the HTTP API locally with uvicorn (no Functions host needed)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=whole(1, 65535), default=7071)
    serve.add_argument("--worker", choices=("in-process", "none"), default="in-process",
                       help="run queued imports in this process (default), or accept none")
    serve.add_argument("--grace", type=seconds(0, 600), default=30.0, metavar="SECONDS",
                       help="on shutdown, time for the imports in flight to finish (default 30)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args, env, out: TextIO, err: TextIO) -> int:
    try:
        import uvicorn

        from ..http.app import create_app
    except ImportError as exc:
        raise ConfigError(f"serve needs {exc.name}: pip install 'acr-airlock[serve]' "
                          "(or the repository's requirements-dev.txt)") from None
    from ..handlers.worker import RunWorker
    from ..redact import install
    from ..services import Services

    services = Services.from_env(env)  # fail fast on bad settings, before the port opens
    key = services.settings.serve_api_key or None
    if key is None and not _loopback(args.host) and not args.quiet:
        err.write(f"warning: serving on {args.host} without SERVE_API_KEY: anyone who reaches the port can "
                  "import images and queue builds\n")
    worker = RunWorker(services) if args.worker == "in-process" else None
    app = create_app(lambda: services, api_key=key, accept_imports=worker is not None, worker=worker)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", lifespan="off")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # configured by Config: redact their lines
        install(logging.getLogger(name))
    if worker is not None:
        worker.start()
        if not args.quiet:
            err.write(f"queue worker: {services.settings.runs_queue} and its poison queue, "
                      f"{worker.worker_threads} at a time\n")
    # uvicorn stops on SIGTERM and then raises it again with the handler it found: make that one ours, so the
    # process ends here, after the worker's calls in flight, and not by the signal's default action
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        if worker is not None:
            worker.stop(args.grace)
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK
