"""What every command shares: exit codes, the parser class with the global flags, argument types,
reading a manifest or an env file, and the settings environment a command runs with.

Nothing here does any work for a command; ``dispatch`` builds the parser from the command modules
and maps errors to exit codes.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Optional

from ..errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (``airlock runs list | head -1``)
PROG = "airlock"  # the installed command; ``python -m shared`` passes its own name (usage and hints follow it)
LOG_FORMATS = ("text", "json")


class VersionRequested(Exception):
    """``--version``: main prints the version on its own stdout (argparse's action would print on sys.stdout)."""


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        raise VersionRequested()


class UsageError(Exception):
    """A command line that does not parse (argparse's complaint, with the usage of the parser at fault)."""

    def __init__(self, usage: str, prog: str, message: str):
        super().__init__(message)
        self.usage, self.prog, self.message = usage, prog, message


_GLOBAL_OPTIONS = ("--env-file", "--json", "-q", "--quiet", "-v", "--verbose", "--log-format", "--subscription",
                   "--resource-group", "--registry")
_GLOBAL_DEFAULTS = {"env_file": None, "json": False, "quiet": False, "verbose": 0, "log_format": "text",
                    "subscription": None, "resource_group": None, "registry": None}


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
        g("-v", "--verbose", action="count", default=argparse.SUPPRESS,
          help="-v: this app's INFO logs on stderr; -vv: DEBUG, with the Azure SDK's and HTTP libraries' wire logs")
        g("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
          help="text (default) or json: one JSON object per log line on stderr, for pipelines")
        g("--subscription", default=argparse.SUPPRESS,
          help="overrides AZURE_SUBSCRIPTION_ID (default: the Azure CLI's current subscription)")
        g("--resource-group", default=argparse.SUPPRESS,
          help="overrides ACR_RESOURCE_GROUP (default: found from the registry name through ARM)")
        g("--registry", default=argparse.SUPPRESS, help="the registry's name; overrides ACR_NAME")
        self._globals_ready = True

    def add_argument(self, *names, **kwargs):
        if self._globals_ready and names and all(n in _GLOBAL_OPTIONS for n in names):
            return self._option_string_actions[names[0]]  # already there, global
        return super().add_argument(*names, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        parsed.prog = self.prog
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


def run_id_arg(text: str) -> str:
    """argparse type: a run id (``core.ids.RUN_ID``); anything else is a usage error, not a lookup."""
    from ..core.ids import RUN_ID

    if not RUN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (1-100 letters, digits, '.', '_' or '-', "
                                         "starting with a letter or digit)")
    return text


def os_reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def load_env_file(path: str, environ) -> None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: {os_reason(exc)}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or "\0" in line:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        environ[key.strip()] = value.strip()  # the file wins over the inherited environment


def read_manifest(path: str) -> tuple[bytes, str]:
    """A manifest's bytes and the name it is recorded under (``-``: stdin)."""
    if path == "-":
        return sys.stdin.buffer.read(), "stdin"
    try:
        return Path(path).read_bytes(), Path(path).name
    except OSError as exc:
        raise ConfigError(f"{path}: {os_reason(exc)}") from None


def environment(args) -> dict:
    """The settings a command runs with: the environment (after ``--env-file``), then the flags."""
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
