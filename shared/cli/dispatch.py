"""Command line: the same handlers as the Function App, from a terminal or a pipeline.

    python -m shared manifest check FILE
    python -m shared plan FILE [--all]
    python -m shared sync FILE [--all] [--concurrency N]
    python -m shared sync --resume RUN_ID      (a killed sync: the same run and record, carried on)
    python -m shared runs show RUN_ID
    python -m shared runs wait --file images.txt [--name BLOB] [--timeout S]   (see cli/runs.py)
    python -m shared runs list [--status failed] [--since 24h] [--limit N]
    python -m shared build --source SRC --image REPO:TAG [--arg N=V] [--secret-arg N[=V]] [--pool P]
                           [--wait [--wait-timeout SECONDS]]
    python -m shared build --task NAME [--arg N=V] [--pool P] [--wait]
    python -m shared build show|cancel RUN_ID
    python -m shared pool status [NAME]
    python -m shared pool scale NAME COUNT
    python -m shared serve [--port 7071]       (the HTTP API without the Functions host)
    python -m shared discover FILE... [--json] [--check images.txt] [--registry-host HOST]

Global flags, accepted before or after the subcommand (``CliParser`` adds them to every parser,
including subcommands registered by other modules): ``--env-file FILE``, ``--json``,
``-q/--quiet``, ``-v/--verbose`` (``-vv``: debug), ``--subscription``, ``--resource-group``,
``--registry``.

Exit codes: 0 success; 1 the work failed (invalid manifest, a failed entry, a bad build request,
a followed build that did not succeed or did not end in time, Azure or storage unreachable);
2 usage or configuration error (bad flags or numbers, unknown subcommand, missing or unreadable
file, bad env file or settings); 130 interrupted (Ctrl-C). No error prints a traceback (``-vv``
logs it at DEBUG). Settings come from the environment (see docs/settings.md); ``--env-file`` loads
KEY=VALUE lines first (e.g. the local stand-in's ``.devstack/env``); flags override the registry
settings. Nothing printed or logged carries a SAS signature (``shared.redact``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from ..errors import AirlockError, ConfigError, ValidationError
from ..redact import redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "python -m shared"
log = logging.getLogger(__name__)


class UsageError(Exception):
    """A command line that does not parse (argparse's complaint, with the usage of the parser at fault)."""

    def __init__(self, usage: str, prog: str, message: str):
        super().__init__(message)
        self.usage, self.prog, self.message = usage, prog, message


_GLOBAL_OPTIONS = ("--env-file", "--json", "-q", "--quiet", "-v", "--verbose", "--subscription",
                   "--resource-group", "--registry")
_GLOBAL_DEFAULTS = {"env_file": None, "json": False, "quiet": False, "verbose": 0, "subscription": None,
                    "resource_group": None, "registry": None}


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser that carries the global flags on itself and on every subparser made from it
    (``add_subparsers`` creates parsers of the same class), so ``--json`` or ``--env-file`` work before
    or after any subcommand, including ones other modules add. Their defaults are SUPPRESS, so a value
    given before the subcommand is not reset by the subparser; ``parse_args`` fills in the defaults.
    A subcommand that declares a global flag itself gets the global one (the declaration is ignored).
    Errors raise ``UsageError`` instead of exiting."""

    def __init__(self, *args, **kwargs):
        self._globals_ready = False
        super().__init__(*args, **kwargs)
        group = self.add_argument_group("global options (before or after the subcommand)")
        g = group.add_argument
        g("--env-file", default=argparse.SUPPRESS, metavar="FILE", help="load KEY=VALUE settings from this file first")
        g("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON on stdout")
        g("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress or notes on stderr")
        g("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log INFO (-vv: DEBUG) on stderr")
        g("--subscription", default=argparse.SUPPRESS, help="overrides AZURE_SUBSCRIPTION_ID")
        g("--resource-group", default=argparse.SUPPRESS, help="overrides ACR_RESOURCE_GROUP")
        g("--registry", default=argparse.SUPPRESS, help="overrides ACR_NAME")
        self._globals_ready = True

    def add_argument(self, *names, **kwargs):
        if self._globals_ready and names and all(n in _GLOBAL_OPTIONS for n in names):
            return self._option_string_actions[names[0]]  # already there, global
        return super().add_argument(*names, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for key, value in _GLOBAL_DEFAULTS.items():
            if not hasattr(parsed, key):
                setattr(parsed, key, value)
        if getattr(parsed, "command", None) == "sync":
            if (parsed.file is None) == (parsed.resume is None):
                self.error("sync: give a manifest FILE, or --resume RUN_ID (not both)")
            if parsed.resume and parsed.no_record:
                self.error("sync: --resume carries on a run's record; it cannot be combined with --no-record")
        return parsed

    def error(self, message: str):
        raise UsageError(self.format_usage(), self.prog, message)


def whole(low: int, high: Optional[int] = None):
    """argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {'from %d to %d' % (low, high) if high is not None else 'at least %d' % low}, got {value}")
        return value
    return parse


def seconds(low: float, high: float):
    """argparse type: a finite number of seconds, low < value <= high."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
        if not math.isfinite(value) or not low < value <= high:
            raise argparse.ArgumentTypeError(f"must be more than {low:g} and at most {high:g} seconds, got {text}")
        return value
    return parse


def load_env_file(path: str, environ) -> None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: {_os_reason(exc)}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or "\0" in line:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        environ[key.strip()] = value.strip()  # the file wins over the inherited environment


def _parser() -> argparse.ArgumentParser:
    p = CliParser(prog=PROG, description="acr-airlock: reviewed images into a private ACR",
                  epilog="exit codes: 0 ok, 1 the work failed, 2 usage or configuration error, 130 interrupted")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    manifest = sub.add_parser("manifest", help="work on an images.txt offline")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("check", help="validate a manifest without touching any registry")
    check.add_argument("file", help="images.txt, or - for stdin")

    plan = sub.add_parser("plan", help="show what a sync would import (imports nothing)")
    plan.add_argument("file", help="images.txt, or - for stdin")
    plan.add_argument("--all", action="store_true", help="list every entry, unchanged ones too")

    sync = sub.add_parser("sync", help="import every new or changed image of a manifest")
    sync.add_argument("file", nargs="?", help="images.txt, or - for stdin")
    sync.add_argument("--resume", metavar="RUN_ID",
                      help="carry on a sync that was killed: the same run and record; finished entries are kept")
    sync.add_argument("--all", action="store_true", help="list every entry, unchanged ones too")
    sync.add_argument("--concurrency", type=whole(1, 64), metavar="N",
                      help="imports at once, 1..64 (overrides SYNC_CONCURRENCY)")
    sync.add_argument("--no-record", action="store_true", help="do not write the outcome record")

    serve = sub.add_parser("serve", help="serve the HTTP API locally with uvicorn (no Functions host needed)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=whole(1, 65535), default=7071)

    runs = sub.add_parser("runs", help="read outcome records")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    show = rsub.add_parser("show", help="print one run's outcome record")
    show.add_argument("run_id")
    from .runs import add_list_parser, add_wait_parser  # runs list (the run index), runs wait (pipelines)

    add_wait_parser(rsub)
    add_list_parser(rsub)
    _build_parser(sub)
    _pool_parser(sub)
    from .discover import add_parser as _discover_parser  # discover FILE... [--check images.txt]
    _discover_parser(sub)
    return p


def _build_parser(sub) -> None:
    from .builds import add_build_arguments

    build = sub.add_parser("build", help="queue a build on an agent pool; build show|cancel RUN_ID")
    add_build_arguments(build)
    bsub = build.add_subparsers(dest="build_command")
    for name, text in (("show", "status, timings, output images and log link of a build"),
                       ("cancel", "cancel a build")):
        command = bsub.add_parser(name, help=text)
        command.add_argument("run_id")


def _pool_parser(sub) -> None:
    pool = sub.add_parser("pool", help="agent pools: status and scaling")
    psub = pool.add_subparsers(dest="pool_command", required=True)
    status = psub.add_parser("status", help="instances, queued and running runs of every pool (or one)")
    status.add_argument("name", nargs="?")
    scale = psub.add_parser("scale", help="set a pool's instance count (recorded)")
    scale.add_argument("name")
    scale.add_argument("count", type=whole(0, 100), help="0..100")


def _read_manifest(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "stdin"
    try:
        return Path(path).read_bytes(), Path(path).name
    except OSError as exc:
        raise ConfigError(f"{path}: {_os_reason(exc)}") from None


def _environment(args) -> dict:
    if args.env_file:
        # into os.environ itself: azure-identity reads IDENTITY_ENDPOINT / IDENTITY_HEADER from there
        load_env_file(args.env_file, os.environ)
    env = dict(os.environ)
    for flag, name in (("subscription", "AZURE_SUBSCRIPTION_ID"), ("resource_group", "ACR_RESOURCE_GROUP"),
                       ("registry", "ACR_NAME")):
        if getattr(args, flag):
            env[name] = getattr(args, flag)
    if getattr(args, "concurrency", None) is not None:
        env["SYNC_CONCURRENCY"] = str(args.concurrency)
    return env


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        err.write(f"{exc.usage}{exc.prog}: error: {exc.message}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    _configure_logging(args, err)
    try:
        env = _environment(args)
        if args.command == "manifest":
            return _manifest_check(args, env, out)
        if args.command in ("plan", "sync"):
            return _plan_or_sync(args, env, out, err)
        if args.command == "runs" and args.runs_command == "wait":
            from . import runs

            return runs.wait(args, env, out, err)
        if args.command == "runs":
            return _runs_show(args, env, out)
        if args.command == "serve":
            return _serve(args, env)
        if args.command == "discover":
            from . import discover

            return discover.run(args, env, out, err)
        if args.command in ("build", "pool"):
            from . import builds

            return builds.run(args, env, out, err)
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        print(f"error: {redact(exc.message)}", file=err)
        return EXIT_USAGE
    except AirlockError as exc:
        print(f"error: {exc.code}: {redact(exc.message)}", file=err)
        if isinstance(exc, ValidationError):
            for problem in exc.problems:
                print(f"  {redact(_describe(problem, args))}", file=err)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - environment errors: one line, no traceback
        return _report_unexpected(exc, err)
    return EXIT_USAGE


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def _report_unexpected(exc: BaseException, err: TextIO) -> int:
    """One line for an error that is not ours: a file, the network, an SDK. The trace goes to DEBUG."""
    log.debug("error details", exc_info=exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        print(f"error: {exc.filename}: {_os_reason(exc)}", file=err)
        return EXIT_USAGE
    reach = _unreachable(exc)
    if reach:
        print(f"error: cannot reach {reach}", file=err)
        return EXIT_FAILED
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    print(f"error: {type(exc).__name__}{': ' + text if text else ''} (-vv shows details)", file=err)
    return EXIT_FAILED


def _unreachable(exc: BaseException) -> Optional[str]:
    """'HOST: REASON' when the error is a connection that could not be made (DNS, refused, TLS)."""
    try:
        from azure.core.exceptions import ServiceRequestError
    except ImportError:  # pragma: no cover - azure-core is a dependency
        ServiceRequestError = ()  # noqa: N806
    import httpx

    if isinstance(exc, (ServiceRequestError, httpx.TransportError, ConnectionError)):
        return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return None


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_HANDLER: Optional[logging.Handler] = None


def _configure_logging(args, err: TextIO) -> None:
    """WARNING on stderr (ERROR with -q; INFO with -v; DEBUG with -vv), SAS signatures redacted in every
    record that reaches the root handlers, whoever logged it."""
    from ..redact import install

    global _HANDLER
    root = logging.getLogger()
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
    _HANDLER = logging.StreamHandler(err)
    _HANDLER.setFormatter(_Redacting("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(_HANDLER)
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO if args.verbose else \
        logging.ERROR if args.quiet else logging.WARNING
    _HANDLER.setLevel(level)
    root.setLevel(min(root.getEffectiveLevel(), level))  # never hides records from handlers others installed
    # -vv: the SDKs' own HTTP logging too (headers and URLs; redacted by shared.redact); else inherit
    logging.getLogger("azure").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.NOTSET)
    install(root)


def _describe(problem, args) -> str:
    if args.command == "build" and problem.field is not None:
        from .builds import flag_for

        return f"{flag_for(problem.field)}: {problem.message}"
    return str(problem)


def _manifest_check(args, env, out) -> int:
    from ..config import Settings
    from ..handlers.sync import check_manifest

    settings = Settings.from_env(env, offline=True)
    data, _ = _read_manifest(args.file)
    result = check_manifest(data, settings)
    if args.json:
        out.write(json.dumps(result.to_dict(), indent=2))
        out.write("\n")
    else:
        for problem in result.errors:
            out.write(f"{args.file}:{problem.line}: {problem.message}\n" if problem.line
                      else f"{args.file}: {problem.message}\n")
        for problem in result.warnings:
            out.write(f"{args.file}:{problem.line}: warning: {problem.message}\n")
        if result.ok:
            policies = f", {len(result.policies)} tag policies" if result.policies else ""
            out.write(f"{args.file}: {len(result.entries)} entries{policies}, valid\n")
        else:
            out.write(f"{args.file}: {len(result.errors)} error(s); nothing would be imported\n")
    return EXIT_OK if result.ok else EXIT_FAILED


def _plan_or_sync(args, env, out, err) -> int:
    from .output import for_stream
    from ..handlers import records
    from ..handlers.sync import SyncEngine
    from ..services import Services

    apply = args.command == "sync"
    resume = getattr(args, "resume", None)
    services = Services.from_env(env)
    if resume:
        from ..handlers.runs import resume_in_process

        document = resume_in_process(services, resume, progress=None if args.quiet else for_stream(err))
        location = services.store.url(services.settings.outcomes_container, records.record_name(resume))
        return _report(args, out, document, location)
    data, name = _read_manifest(args.file)
    progress = None if args.quiet else for_stream(err)
    location = None
    if apply and not args.no_record:
        from ..handlers.runs import run_in_process

        # checkpointed as entries finish: a killed sync leaves a record of what it did (the reaper ends it)
        document = run_in_process(services, data, name=name, trigger="cli", progress=progress)
        location = services.store.url(services.settings.outcomes_container, records.record_name(document["run_id"]))
    else:
        document = SyncEngine(services).run(data, name=name, trigger="cli", apply=apply,
                                            progress=progress).to_dict()
    return _report(args, out, document, location)


def _report(args, out, document: dict, location: Optional[str]) -> int:
    if args.json:
        out.write(json.dumps({**document, "record_url": location} if location else document, indent=2))
        out.write("\n")
    else:
        out.write(render_summary(document, every_row=args.all))
        if location:
            out.write(f"outcome record: {location}\n")
    return EXIT_OK if document["status"] == "succeeded" else EXIT_FAILED


def _runs_show(args, env, out) -> int:
    from ..handlers import records
    from ..services import Services

    if args.runs_command == "list":
        from .runs import runs_list

        return runs_list(args, env, out)
    out.write(json.dumps(records.load(Services.from_env(env), args.run_id), indent=2))
    out.write("\n")
    return EXIT_OK


def _serve(args, env) -> int:
    try:
        import uvicorn

        from ..http.app import create_app
    except ImportError as exc:
        raise ConfigError(f"serve needs {exc.name}: pip install 'acr-airlock[serve]' "
                          "(or the repository's requirements-dev.txt)") from None
    from ..services import Services

    services = Services.from_env(env)  # fail fast on bad settings, before the port opens
    uvicorn.run(create_app(lambda: services), host=args.host, port=args.port, log_level="info")
    return EXIT_OK


def render_summary(document: dict, *, every_row: bool = False) -> str:
    """A fixed-width table of the entries that change or failed (every entry with ``every_row``),
    then the totals."""
    lines = []
    if document["errors"]:
        for error in document["errors"]:
            where = f"line {error['line']}: " if error.get("line") else ""
            lines.append(f"{where}{error['message']}")
        lines.append(f"{len(document['errors'])} error(s) in {document['manifest']['name']}; nothing was imported")
        return "\n".join(lines) + "\n"
    rows = [("LINE", "TARGET", "ACTION", "RESULT", "DIGEST", "NOTE")]
    shown = [e for e in document["entries"] if every_row or e["action"] != "unchanged" or e["error"]
             or e["result"] == "failed"]
    for e in shown:
        digest = (e["source_digest"] or "")[7:19]
        note = f"{e['error']['code']}: {e['error']['message']}" if e["error"] else (
            f"{e['attempts']} attempts" if e["attempts"] > 1 else "")
        rows.append((str(e["line"]), e["target"], e["action"], e["result"], digest, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows if shown else ():
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True))
        lines.append(cells + ("  " + row[5] if row[5] else ""))
    hidden = len(document["entries"]) - len(shown)
    if hidden:
        lines.append(f"({hidden} unchanged entr{'y' if hidden == 1 else 'ies'} not listed; --all lists every entry)")
    for p in document.get("policies", []):  # tag policies: what each resolved to, or why not
        tags = ", ".join(r["tag"] for r in p["resolved"]) or "nothing"
        outcome = f"{p['error']['code']}: {p['error']['message']}" if p["error"] else f"-> {tags}"
        lines.append(f"line {p['line']}: {p['source']}:{p['policy']} {outcome}")
    s = document["summary"]
    lines.append("")
    lines.append(f"{document['kind']} {document['run_id']}: {document['status']} - "
                 f"{s['total']} entries: {s['new']} new, {s['update']} update, {s['unchanged']} unchanged, "
                 f"{s['error']} error; {s['imported']} imported, {s['failed']} failed "
                 f"in {document['duration_seconds']}s")
    return "\n".join(lines) + "\n"
