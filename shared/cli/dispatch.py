"""The command line's frame: the parser made of every command module, logging, and errors to exit codes.

    airlock --version
    airlock manifest check FILE
    airlock plan FILE [--all] --registry NAME      (subscription: az's; resource group: found through ARM)
    airlock sync FILE [--all] [--concurrency N]
    airlock sync --resume RUN_ID      (a killed sync: the same run and record, carried on)
    airlock runs show RUN_ID
    airlock runs wait --file images.txt [--name BLOB] [--timeout S]   (cli/runs.py)
    airlock runs list [--status failed] [--since 24h] [--limit N] [--next TOKEN]
    airlock build --source SRC --image REPO:TAG [--arg N=V] [--secret-arg N[=V]] [--pool P]
                  [--wait [--wait-timeout SECONDS]]
    airlock build --task NAME [--arg N=V] [--pool P] [--wait]
    airlock build show|cancel RUN_ID
    airlock pool status [NAME]
    airlock pool scale NAME COUNT
    airlock serve [--port 7071]       (the HTTP API without the Functions host)
    airlock discover FILE... [--json] [--check images.txt] [--registry-host HOST]
    airlock lock images.txt [--update|--check]
    airlock trust publish POLICY [--trusted-root NAME=PATH]   (cli/trust_publish.py)

``python -m shared`` is the same command; usage lines and hints name whichever was run (``main(prog=)``).

Global flags, accepted before or after the subcommand (``CliParser`` adds them to every parser,
including subcommands registered by other modules): ``--env-file FILE``, ``--json``,
``-q/--quiet``, ``-v/--verbose``, ``--log-format text|json``, ``--subscription``, ``--resource-group``,
``--registry``.

Logging on stderr: WARNING from this app (``shared.*``) and ERROR from libraries; ``-q`` ERROR only;
``-v`` this app's INFO (libraries still ERROR only: the Azure SDK logs every request at INFO); ``-vv``
DEBUG from everything, the SDK's wire logs (redacted) and tracebacks included. ``--log-format json``
writes each record as one JSON object (``time``, ``level``, ``logger``, ``message``, ``run_id`` when in
a run). The run-failed alert line (``AIRLOCK_RUN_FAILED``, shared.telemetry) is for telemetry and is
never written to the terminal: the summary says the same to the person who ran the command.

Exit codes: 0 success; 1 the work failed (invalid manifest, a failed entry, a bad build request,
a followed build that did not succeed or did not end in time, Azure or storage unreachable, no
credential); 2 usage or configuration error (bad flags or numbers, unknown subcommand, missing or
unreadable file, bad env file or settings, an invalid run id); 130 interrupted (Ctrl-C; an interrupted
``sync`` prints its run id and the ``--resume`` command); 141 stdout was closed by its reader (a pipe
into ``head``), silently. No error prints a traceback (``-vv`` logs it at DEBUG). Settings come from
the environment (see docs/settings.md); ``--env-file`` loads KEY=VALUE lines first (e.g. the local
stand-in's ``.devstack/env``); flags override the registry settings. Nothing printed or logged carries
a SAS signature (``shared.redact``).

One module per command group, each with ``add_parsers(sub)`` and ``run(args, env, out, err)``:
``manifest`` (manifest check), ``sync`` (plan, sync), ``lock``, ``runs`` (show, list, wait), ``builds`` (build,
pool), ``discover``, ``serve``, ``trust_publish`` (trust publish). What they share is in ``args`` (exit
codes, the parser class, argument types, settings) and everything they print in ``output``.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Optional, Sequence, TextIO

from ..errors import AirlockError, ConfigError, ValidationError
from ..redact import redact
from . import builds, discover, lock, manifest, runs, serve, sync, trust
from .args import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, CliParser, \
    UsageError, VersionRequested, _VersionAction, environment, os_reason

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)

# the module that runs each command (a group's module declares its commands in add_parsers)
COMMANDS = {"manifest": manifest, "plan": sync, "sync": sync, "lock": lock, "runs": runs, "build": builds,
            "pool": builds, "discover": discover, "serve": serve, "trust": trust}


def build_parser(prog: str = PROG) -> CliParser:
    p = CliParser(prog=prog, description="acr-airlock: reviewed images into a private ACR",
                  epilog="exit codes: 0 ok, 1 the work failed, 2 usage or configuration error, 130 interrupted")
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (manifest, sync, lock, serve, runs, builds, discover, trust):  # the order of --help
        group.add_parsers(sub)
    return p


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
         prog: str = PROG) -> int:
    try:
        return _main(argv, out, err, prog)
    except BrokenPipeError:
        return _closed_pipe(out)


def _main(argv, out: TextIO, err: TextIO, prog: str) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
    except VersionRequested:
        from ..version import DISTRIBUTION, version

        out.write(f"{DISTRIBUTION} {version()}\n")
        return EXIT_OK
    except UsageError as exc:
        err.write(f"{exc.usage}{exc.prog}: error: {exc.message}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    library_levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    _configure_logging(args, err)
    try:
        env = environment(args)
        return COMMANDS[args.command].run(args, env, out, err)
    except KeyboardInterrupt as exc:
        if not exc.args:  # a command that said what was interrupted raises it with a note
            err.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # stdout went away: not a network error (main)
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
    finally:  # main() called in-process (tests, a host program) leaves the libraries' loggers as it found them
        for name, level in library_levels.items():
            logging.getLogger(name).setLevel(level)


def _closed_pipe(out: TextIO) -> int:
    """The reader of stdout is gone (``| head -1``): stop quietly. Further writes (the interpreter's own
    flush at exit) go to /dev/null instead of raising again."""
    try:
        fileno = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (tests pass a StringIO)
        return EXIT_BROKEN_PIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _report_unexpected(exc: BaseException, err: TextIO) -> int:
    """One line for an error that is not ours: a file, the network, an SDK. The trace goes to DEBUG."""
    log.debug("error details", exc_info=exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        print(f"error: {exc.filename}: {os_reason(exc)}", file=err)
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


# -- logging ------------------------------------------------------------------------------------

APP_LOGGER = "shared"
# libraries whose records are created only with -vv (else their INFO/DEBUG wire logs cost time for nothing)
LIBRARY_LOGGERS = ("azure", "urllib3", "msal", "httpx", "httpcore", "opentelemetry")


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, run_id (in a run),
    exception (the traceback text, -vv only). Redacted like the text format."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                    "level": record.levelname, "logger": record.name, "message": redact(record.getMessage())}
        run_id = getattr(record, "run_id", None)
        if run_id:
            document["run_id"] = run_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = redact(record.exc_text)
        return json.dumps(document)


class CliLogFilter(logging.Filter):
    """Which records reach the terminal: this app's at ``app_level``, libraries' at ``library_level``; the
    run-failed alert line (``airlock_alert``) never: it is for telemetry, and the summary says it to the user."""

    def __init__(self, app_level: int, library_level: int):
        super().__init__()
        self.app_level, self.library_level = app_level, library_level

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "airlock_alert", False):
            return False
        ours = record.name == APP_LOGGER or record.name.startswith(APP_LOGGER + ".")
        return record.levelno >= (self.app_level if ours else self.library_level)


_HANDLER: Optional[logging.Handler] = None


def log_levels(verbose: int, quiet: bool) -> tuple[int, int]:
    """(this app's level, the libraries' level) on the terminal."""
    if verbose >= 2:
        return logging.DEBUG, logging.DEBUG
    if verbose:
        return logging.INFO, logging.ERROR
    return (logging.ERROR if quiet else logging.WARNING), logging.ERROR


def _configure_logging(args, err: TextIO) -> None:
    """The stderr handler (levels: ``log_levels``; format: ``--log-format``), SAS signatures redacted in every
    record that reaches the root handlers, whoever logged it."""
    from ..redact import install

    global _HANDLER
    root = logging.getLogger()
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
    app_level, library_level = log_levels(args.verbose, args.quiet)
    _HANDLER = logging.StreamHandler(err)
    _HANDLER.setFormatter(JsonFormatter() if args.log_format == "json"
                          else _Redacting("%(levelname)s %(name)s: %(message)s"))
    _HANDLER.addFilter(CliLogFilter(app_level, library_level))
    root.addHandler(_HANDLER)
    level = min(app_level, library_level)
    _HANDLER.setLevel(level)
    root.setLevel(min(root.getEffectiveLevel(), level))  # never hides records from handlers others installed
    # libraries: their DEBUG/INFO records are made only with -vv (azure.core's HTTP logging policy formats
    # every request's headers at INFO); WARNING and above still reach the filter
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if library_level <= logging.DEBUG else logging.WARNING)
    install(root)


def _describe(problem, args) -> str:
    if args.command == "build" and problem.field is not None:
        return f"{builds.flag_for(problem.field)}: {problem.message}"
    return str(problem)
