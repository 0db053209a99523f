"""The ``build`` and ``pool`` commands of the command line (see ``shared.cli``).

    build [--source SRC] [--dockerfile F] [--image REPO:TAG]... [--arg N=V]... [--secret-arg N[=V]]...
          [--platform P] [--target T] [--timeout S] [--no-cache] [--no-push] [--task NAME] [--pool P]
          [--json] [--wait [--poll S] [--wait-timeout S]]
    build show RUN_ID [--json]
    build cancel RUN_ID [--json]
    pool status [NAME] [--json]
    pool scale NAME COUNT [--json]

The flags make the same JSON request as ``POST /api/builds`` and are validated by the same code
(``shared.core.builds.parse_build``); problems name the flag at fault. ``--source`` takes an https
git URL, a path returned by an earlier upload, or a local directory / ``.tar.gz`` that is uploaded
(``listBuildSourceUploadUrl``) only after the rest of the request has validated.
``--secret-arg NAME`` (no ``=``) reads the value from the environment variable NAME, which keeps
it out of the process list and shell history. Secret values are never printed, and neither is
the log's SAS signature (``log_url`` is shown with ``sig=REDACTED``).

``--wait`` follows the run for at most ``--wait-timeout`` seconds (default: the build's own
``--timeout`` plus 15 minutes for queueing and scale-up); a run still going then exits 1 and keeps
running. Ctrl-C once the build is being queued (while it is queued, right after ``queued build``,
or while following) exits 130 and says how to follow and cancel the run, which keeps running.

Ctrl-C from the moment the run is asked for is taken by a handler of this module (``_CtrlC``) that
only notes it; the code looks at the note between steps. Python's own KeyboardInterrupt is raised
wherever the main thread happens to be: between printing ``queued build`` and entering the code
that prints the hint, or inside ``scheduleRun`` after ARM queued the run, the hint was lost. A
process that inherits SIGINT ignored (a background job of a non-interactive shell, some CI agents)
gets no KeyboardInterrupt at all, so following ignored Ctrl-C; the handler is installed whatever was
inherited. A second Ctrl-C is not waited for: it raises KeyboardInterrupt at once.
"""
from __future__ import annotations

import io
import signal
import tarfile
import threading
from pathlib import Path
from typing import Mapping, Optional, TextIO

from ..errors import Problem, ValidationError
from .args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, seconds, whole
from .output import render_build, render_pools, write_json

QUEUE_ALLOWANCE = 900  # seconds --wait allows on top of the build timeout (queueing, pool scale-up)
_PENDING_UPLOAD = "source/pending/context.tar.gz"  # stands in for a local context while validating
_FLAGS = {"source_location": "--source", "dockerfile": "--dockerfile", "image_names": "--image",
          "arguments": "--arg/--secret-arg", "platform": "--platform", "target": "--target", "timeout": "--timeout",
          "no_cache": "--no-cache", "push": "--no-push", "agent_pool": "--pool", "task": "--task"}


def add_parsers(sub) -> None:
    build = sub.add_parser("build", help="queue a build on an agent pool; build show|cancel RUN_ID")
    add_build_arguments(build)
    bsub = build.add_subparsers(dest="build_command")
    for name, text in (("show", "status, timings, output images and log link of a build"),
                       ("cancel", "cancel a build")):
        command = bsub.add_parser(name, help=text)
        command.add_argument("run_id")
    pool = sub.add_parser("pool", help="agent pools: status and scaling")
    psub = pool.add_subparsers(dest="pool_command", required=True)
    status = psub.add_parser("status", help="instances, queued and running runs of every pool (or one)")
    status.add_argument("name", nargs="?")
    scale = psub.add_parser("scale", help="set a pool's instance count (recorded)")
    scale.add_argument("name")
    scale.add_argument("count", type=whole(0, 100), help="0..100")


def add_build_arguments(parser) -> None:
    a = parser.add_argument
    a("--source", help="https git URL (https://host/repo.git#ref:dir), a local directory or .tar.gz to "
                       "upload, or an uploaded source path")
    a("--dockerfile", help="Dockerfile path in the context (default Dockerfile)")
    a("--image", action="append", default=[], metavar="REPO:TAG",
      help="image to push, repeatable; the tag may use {{.Run.ID}}")
    a("--arg", action="append", default=[], metavar="NAME=VALUE", help="build argument, repeatable")
    a("--secret-arg", action="append", default=[], metavar="NAME[=VALUE]",
      help="secret build argument, never logged; NAME alone reads the environment variable NAME")
    a("--platform", help="os/architecture[/variant] (default linux/amd64)")
    a("--target", help="build stage to stop at")
    a("--timeout", type=int, metavar="SECONDS", help="the build's own time limit, 300..28800 (default 3600)")
    a("--no-cache", action="store_true", default=None, help="build without the layer cache")
    a("--no-push", action="store_true", help="build only; push nothing")
    a("--task", help="run this existing ACR task instead of a quick build")
    a("--pool", help="agent pool (default BUILD_DEFAULT_AGENT_POOL)")
    a("--json", action="store_true", help="print the build record as JSON")
    a("--wait", action="store_true", help="follow the run to its end, streaming its log")
    a("--poll", type=seconds(0, 300), default=2.0, metavar="SECONDS", help="how often --wait looks (default 2)")
    a("--wait-timeout", type=seconds(0, 86400), metavar="SECONDS",
      help="stop following after this long (exit 1; the build keeps running); default: --timeout + 900")


def flag_for(pointer: str) -> str:
    """``/image_names/1`` -> ``--image #2``; ``/arguments/X`` -> ``--arg/--secret-arg X``."""
    parts = pointer.strip("/").split("/") if pointer else []
    if not parts or parts[0] not in _FLAGS:
        return pointer or "request"
    flag = _FLAGS[parts[0]]
    if len(parts) > 1:
        return f"{flag} #{int(parts[1]) + 1}" if parts[1].isdigit() else f"{flag} {parts[1]}"
    return flag


def run(args, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    from ..services import Services

    services = Services.for_cli(env, storage="build" if args.command == "build" else "pool")
    if args.command == "pool":
        return _pool(services, args, out)
    if args.build_command == "show":
        from ..handlers.builds import get_build

        return _print_build(get_build(services, args.run_id), args, out)
    if args.build_command == "cancel":
        from ..handlers.builds import cancel_build

        return _print_build(cancel_build(services, args.run_id), args, out)
    return _queue(services, args, env, out, err)


# -- build ---------------------------------------------------------------------------------------

def request_from_args(args, env: Mapping[str, str]) -> dict:
    """The JSON build request the flags describe (secret values inside, as in an API body)."""
    data: dict = {}
    for key, value in (("task", args.task), ("source_location", args.source), ("dockerfile", args.dockerfile),
                       ("platform", args.platform), ("target", args.target), ("timeout", args.timeout),
                       ("agent_pool", args.pool), ("no_cache", args.no_cache)):
        if value is not None:
            data[key] = value
    if args.image:
        data["image_names"] = list(args.image)
    if args.no_push:
        data["push"] = False
    arguments = _arguments(args.arg, args.secret_arg, env)
    if arguments:
        data["arguments"] = arguments
    return data


def _arguments(plain: list[str], secret: list[str], env: Mapping[str, str]) -> dict:
    arguments: dict = {}
    problems: list[Problem] = []
    for text, is_secret in [(t, False) for t in plain] + [(t, True) for t in secret]:
        name, sep, value = text.partition("=")
        flag = "--secret-arg" if is_secret else "--arg"
        if not sep and is_secret:
            if name not in env:
                problems.append(Problem(f"{name}: no '=VALUE' and no environment variable {name}", field=flag))
                continue
            value = env[name]
        elif not sep:
            problems.append(Problem(f"{text!r}: expected NAME=VALUE", field=flag))
            continue
        if name in arguments:
            problems.append(Problem(f"argument {name} is given twice", field=flag))
            continue
        arguments[name] = {"value": value, "secret": True} if is_secret else value
    if problems:
        raise ValidationError("invalid build arguments", problems)
    return arguments


def _local_context(source: Optional[str]) -> Optional[Path]:
    if not source or "://" in source:
        return None
    path = Path(source)
    if path.is_dir() or (path.is_file() and source.endswith((".tar.gz", ".tgz"))):
        return path
    return None


def pack_context(path: Path) -> bytes:
    """A directory as a gzipped tar (``.git`` left out), or a ``.tar.gz`` file as it is."""
    if path.is_file():
        return path.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for item in sorted(path.rglob("*")):
            relative = item.relative_to(path)
            if ".git" in relative.parts or not (item.is_file() or item.is_dir()):
                continue
            tar.add(item, arcname=str(relative), recursive=False)
    return buffer.getvalue()


class _CtrlC:
    """SIGINT noted, not raised, while a build is queued and followed (see the module's docstring).

    ``sleep`` waits for the next poll or a Ctrl-C, whichever comes first, and raises KeyboardInterrupt
    at that well-defined point. The first Ctrl-C installs the handler that was there before (Python's
    KeyboardInterrupt when SIGINT was ignored), so a second one interrupts even a slow call; leaving
    puts back exactly what was there. Outside the main thread nothing is installed (signals reach the
    main thread only) and Python's behaviour is unchanged."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self._original = None
        self._installed = False

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self._original = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._noted)  # whatever was inherited, SIG_IGN included
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler if self._original is None else self._original)
            self._installed = False

    def _noted(self, signum, frame) -> None:
        self.pressed.set()
        # a second Ctrl-C raises at once
        signal.signal(signal.SIGINT, self._original if callable(self._original) else signal.default_int_handler)

    def check(self) -> None:
        if self.pressed.is_set():
            raise KeyboardInterrupt

    def sleep(self, seconds: float) -> None:
        if self.pressed.wait(seconds):
            raise KeyboardInterrupt


def _queue(services, args, env, out: TextIO, err: TextIO) -> int:
    from ..core.builds import parse_build
    from ..core.pools import run_status_is_terminal
    from ..handlers.builds import follow_build, queue_build, resolve_target

    data = request_from_args(args, env)
    context = _local_context(args.source)
    if context is not None:
        data["source_location"] = _PENDING_UPLOAD
    spec = parse_build(data)  # the whole request validates before anything is uploaded or queued
    if context is not None:
        resolve_target(services, spec)  # and the pool (or task) exists
        data["source_location"] = services.tasks.upload_source(pack_context(context))
        spec = parse_build(data)
    notes = err if args.json else out
    record: Optional[dict] = None
    with _CtrlC() as ctrl_c:
        try:
            record = queue_build(services, spec, trigger="cli")  # a Ctrl-C meanwhile is kept for after
            scaled = record["scaling"]
            extra = f" (scaled from 0 to {scaled['to_count']} instance(s))" if scaled else ""
            if not getattr(args, "quiet", False):
                notes.write(f"queued build {record['run_id']} on agent pool {record['agent_pool']}{extra}\n")
                notes.flush()
            ctrl_c.check()
            if not args.wait:
                return _print_build(record, args, out, summary=False)
            limit = getattr(args, "wait_timeout", None) or spec.timeout + QUEUE_ALLOWANCE
            final = follow_build(services, record["run_id"], on_log=_writer(notes), poll_seconds=args.poll,
                                 timeout=limit, sleep=ctrl_c.sleep)
            ctrl_c.check()
        except KeyboardInterrupt:
            if record is None:
                raise  # a second Ctrl-C inside scheduleRun: whether the run was queued is not known here
            run_id = record["run_id"]
            err.write(f"\ninterrupted: build {run_id} keeps running on agent pool {record['agent_pool']}.\n"
                      f"  follow it: {getattr(args, 'prog', 'airlock')} build show {run_id}\n"
                      f"  cancel it: {getattr(args, 'prog', 'airlock')} build cancel {run_id}\n")
            err.flush()
            return EXIT_INTERRUPTED
    run_id = record["run_id"]
    _print_build(final, args, out)
    if not run_status_is_terminal(final["status"]):
        err.write(f"build {run_id} is still {final['status']} after {limit:g}s; it keeps running.\n"
                  f"  follow it: {getattr(args, 'prog', 'airlock')} build show {run_id}\n"
                  f"  cancel it: {getattr(args, 'prog', 'airlock')} build cancel {run_id}\n")
        return EXIT_FAILED
    return EXIT_OK if final["status"] == "Succeeded" else EXIT_FAILED


def _writer(stream: TextIO):
    from ..redact import redact

    def write(text: str) -> None:
        stream.write(redact(text))
        stream.flush()
    return write


def _print_build(document: dict, args, out: TextIO, *, summary: bool = True) -> int:
    from ..redact import redact

    if document.get("log_url"):  # a read SAS: its signature is never printed
        document = {**document, "log_url": redact(document["log_url"])}
    if args.json:
        write_json(out, document)
    elif summary:
        out.write(render_build(document))
    else:
        out.write(f"follow it with: {getattr(args, 'prog', 'airlock')} build show {document['run_id']}\n")
    return EXIT_OK


# -- pool ----------------------------------------------------------------------------------------

def _pool(services, args, out: TextIO) -> int:
    from ..handlers.builds import pool_status, scale_pool

    if args.pool_command == "scale":
        result = [scale_pool(services, args.name, args.count, trigger="cli")]
    else:
        result = pool_status(services, args.name)
    if args.json:
        write_json(out, result if args.pool_command == "status" else result[0])
    else:
        out.write(render_pools(result))
    return EXIT_OK
