"""The command line's frame: the parser made of every command module, logging, and errors to exit codes.

    python -m shared manifest check FILE
    python -m shared plan FILE [--all]
    python -m shared sync FILE [--all] [--concurrency N]
    python -m shared sync --resume RUN_ID      (a killed sync: the same run and record, carried on)
    python -m shared runs show RUN_ID
    python -m shared runs wait --file images.txt [--name BLOB] [--timeout S]   (cli/runs.py)
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

One module per command group, each with ``add_parsers(sub)`` and ``run(args, env, out, err)``:
``manifest`` (manifest check), ``sync`` (plan, sync), ``lock``, ``runs`` (show, list, wait), ``builds`` (build,
pool), ``discover``, ``serve``. What they share is in ``args`` (exit codes, the parser class, argument
types, settings) and everything they print in ``output``.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence, TextIO

from ..errors import AirlockError, ConfigError, ValidationError
from ..redact import redact
from . import builds, discover, lock, manifest, runs, serve, sync, trust
from .args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, PROG, CliParser, UsageError, environment, \
    os_reason

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)

# the module that runs each command (a group's module declares its commands in add_parsers)
COMMANDS = {"manifest": manifest, "plan": sync, "sync": sync, "lock": lock, "runs": runs, "build": builds,
            "pool": builds, "discover": discover, "serve": serve, "trust": trust}


def build_parser() -> CliParser:
    p = CliParser(prog=PROG, description="acr-airlock: reviewed images into a private ACR",
                  epilog="exit codes: 0 ok, 1 the work failed, 2 usage or configuration error, 130 interrupted")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (manifest, sync, lock, serve, runs, builds, discover, trust):  # the order of --help
        group.add_parsers(sub)
    return p


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        err.write(f"{exc.usage}{exc.prog}: error: {exc.message}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    _configure_logging(args, err)
    try:
        env = environment(args)
        return COMMANDS[args.command].run(args, env, out, err)
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
        return f"{builds.flag_for(problem.field)}: {problem.message}"
    return str(problem)
