"""Command line: the same handlers as the Function App, from a terminal or a pipeline.

    python -m shared manifest check FILE [--json]
    python -m shared plan FILE [--json]
    python -m shared sync FILE [--json] [--concurrency N]
    python -m shared runs show RUN_ID
    python -m shared build --source SRC --image REPO:TAG [--arg N=V] [--secret-arg N[=V]] [--pool P] [--wait]
    python -m shared build --task NAME [--arg N=V] [--pool P] [--wait]
    python -m shared build show|cancel RUN_ID [--json]
    python -m shared pool status [NAME] [--json]
    python -m shared pool scale NAME COUNT
    python -m shared serve [--port 7071]       (the HTTP API without the Functions host)

Exit codes: 0 success, 1 invalid manifest, a failed entry, a bad build request or a followed
build that did not succeed, 2 usage or configuration error.
Settings come from the environment (see docs/settings.md); ``--env-file`` loads KEY=VALUE lines
first (e.g. the local stand-in's ``.devstack/env``); flags override the registry settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from .errors import AirlockError, ConfigError, ValidationError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def load_env_file(path: str, environ) -> None:
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        environ[key.strip()] = value.strip()  # the file wins over the inherited environment


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shared", description="acr-airlock: reviewed images into a private ACR")
    p.add_argument("--env-file", help="load KEY=VALUE settings from this file first")
    p.add_argument("--subscription", help="overrides AZURE_SUBSCRIPTION_ID")
    p.add_argument("--resource-group", help="overrides ACR_RESOURCE_GROUP")
    p.add_argument("--registry", help="overrides ACR_NAME")
    sub = p.add_subparsers(dest="command", required=True)

    manifest = sub.add_parser("manifest", help="work on an images.txt offline")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("check", help="validate a manifest without touching any registry")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")

    plan = sub.add_parser("plan", help="show what a sync would import (imports nothing)")
    plan.add_argument("file")
    plan.add_argument("--json", action="store_true")

    sync = sub.add_parser("sync", help="import every new or changed image of a manifest")
    sync.add_argument("file")
    sync.add_argument("--json", action="store_true")
    sync.add_argument("--concurrency", type=int, help="imports at once (overrides SYNC_CONCURRENCY)")
    sync.add_argument("--no-record", action="store_true", help="do not write the outcome record")

    serve = sub.add_parser("serve", help="serve the HTTP API locally with uvicorn (no Functions host needed)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)

    runs = sub.add_parser("runs", help="read outcome records")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    show = rsub.add_parser("show", help="print one run's outcome record")
    show.add_argument("run_id")
    _build_parser(sub)
    _pool_parser(sub)
    return p


def _build_parser(sub) -> None:
    from .cli_builds import add_build_arguments

    build = sub.add_parser("build", help="queue a build on an agent pool; build show|cancel RUN_ID")
    add_build_arguments(build)
    bsub = build.add_subparsers(dest="build_command")
    for name, text in (("show", "status, timings, output images and log link of a build"),
                       ("cancel", "cancel a build")):
        command = bsub.add_parser(name, help=text)
        command.add_argument("run_id")
        command.add_argument("--json", action="store_true")


def _pool_parser(sub) -> None:
    pool = sub.add_parser("pool", help="agent pools: status and scaling")
    psub = pool.add_subparsers(dest="pool_command", required=True)
    status = psub.add_parser("status", help="instances, queued and running runs of every pool (or one)")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true")
    scale = psub.add_parser("scale", help="set a pool's instance count (recorded)")
    scale.add_argument("name")
    scale.add_argument("count", type=int)
    scale.add_argument("--json", action="store_true")


def _read_manifest(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "stdin"
    return Path(path).read_bytes(), Path(path).name


def _environment(args) -> dict:
    if args.env_file:
        # into os.environ itself: azure-identity reads IDENTITY_ENDPOINT / IDENTITY_HEADER from there
        load_env_file(args.env_file, os.environ)
    env = dict(os.environ)
    for flag, name in (("subscription", "AZURE_SUBSCRIPTION_ID"), ("resource_group", "ACR_RESOURCE_GROUP"),
                       ("registry", "ACR_NAME")):
        if getattr(args, flag):
            env[name] = getattr(args, flag)
    if getattr(args, "concurrency", None):
        env["SYNC_CONCURRENCY"] = str(args.concurrency)
    return env


def main(argv: Optional[Sequence[str]] = None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    try:
        env = _environment(args)
        if args.command == "manifest":
            return _manifest_check(args, env, out)
        if args.command in ("plan", "sync"):
            return _plan_or_sync(args, env, out, err)
        if args.command == "runs":
            return _runs_show(args, env, out)
        if args.command == "serve":
            return _serve(args, env)
        if args.command in ("build", "pool"):
            from . import cli_builds

            return cli_builds.run(args, env, out, err)
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: no such file", file=err)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"error: {exc.message}", file=err)
        return EXIT_USAGE
    except AirlockError as exc:
        print(f"error: {exc.code}: {exc.message}", file=err)
        if isinstance(exc, ValidationError):
            for problem in exc.problems:
                print(f"  {_describe(problem, args)}", file=err)
        return EXIT_FAILED
    return EXIT_USAGE


def _describe(problem, args) -> str:
    if args.command == "build" and problem.field is not None:
        from .cli_builds import flag_for

        return f"{flag_for(problem.field)}: {problem.message}"
    return str(problem)


def _manifest_check(args, env, out) -> int:
    from .config import Settings
    from .handlers.sync import check_manifest

    settings = Settings.from_env(env, offline=True)
    data, _ = _read_manifest(args.file)
    result = check_manifest(data, settings)
    if args.json:
        json.dump(result.to_dict(), out, indent=2)
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
    from .handlers import records
    from .handlers.sync import SyncEngine
    from .services import Services

    services = Services.from_env(env)
    data, name = _read_manifest(args.file)
    apply = args.command == "sync"
    progress = _TerminalProgress(err) if (err.isatty() and not args.json) else None
    record = SyncEngine(services).run(data, name=name, trigger="cli", apply=apply, progress=progress)
    if progress:
        progress.finish()
    document = record.to_dict()
    location = None
    if apply and not args.no_record:
        location = records.save(services, document)
    if args.json:
        json.dump({**document, "record_url": location} if location else document, out, indent=2)
        out.write("\n")
    else:
        out.write(render_summary(document))
        if location:
            out.write(f"outcome record: {location}\n")
    return EXIT_OK if document["status"] == "succeeded" else EXIT_FAILED


def _runs_show(args, env, out) -> int:
    from .handlers import records
    from .services import Services

    json.dump(records.load(Services.from_env(env), args.run_id), out, indent=2)
    out.write("\n")
    return EXIT_OK


def _serve(args, env) -> int:
    import uvicorn

    from .api import create_app
    from .services import Services

    services = Services.from_env(env)  # fail fast on bad settings, before the port opens
    uvicorn.run(create_app(lambda: services), host=args.host, port=args.port, log_level="info")
    return EXIT_OK


class _TerminalProgress:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, event, done, total, outcome) -> None:
        if event == "planned":
            self.stream.write(f"\rplanning {done}/{total}")
            if done == total:
                self.stream.write("\n")
        else:
            entry = outcome.item.entry
            mark = "ok  " if event == "imported" else "FAIL"
            self.stream.write(f"[{done:>{len(str(total))}}/{total}] {mark} {entry.target} "
                              f"({outcome.duration:.1f}s)\n")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.flush()


def render_summary(document: dict) -> str:
    """A fixed-width table of every entry, then the totals."""
    lines = []
    if document["errors"]:
        for error in document["errors"]:
            where = f"line {error['line']}: " if error.get("line") else ""
            lines.append(f"{where}{error['message']}")
        lines.append(f"{len(document['errors'])} error(s) in {document['manifest']['name']}; nothing was imported")
        return "\n".join(lines) + "\n"
    rows = [("LINE", "TARGET", "ACTION", "RESULT", "DIGEST", "NOTE")]
    for e in document["entries"]:
        digest = (e["source_digest"] or "")[7:19]
        note = f"{e['error']['code']}: {e['error']['message']}" if e["error"] else (
            f"{e['attempts']} attempts" if e["attempts"] > 1 else "")
        rows.append((str(e["line"]), e["target"], e["action"], e["result"], digest, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True))
        lines.append(cells + ("  " + row[5] if row[5] else ""))
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
