"""``runs show``, ``runs list`` and ``runs wait``.

``runs show``: one run's outcome record, as JSON.

    python -m shared runs show RUN_ID

``runs list``: recent runs from the run index (``handlers.runindex``), newest first. When more runs
match than were listed, the JSON's ``next`` (and, in text, a note on stderr) is the token that lists
the next page with ``--next TOKEN`` (the same filters).

    python -m shared runs list [--status failed] [--since 24h] [--limit N] [--next TOKEN] [--json]

A run id that cannot be one (``RUN_ID``: 1-100 letters, digits, '.', '_', '-') is a usage error (exit
2), and so is a ``--next`` token that is not one ``runs list`` printed.

``runs wait``: follow the run an upload of a manifest started, to its end (pipelines use it).

    python -m shared runs wait --file images.txt [--name BLOB_NAME] [--timeout 3600] [--interval 10] [--json]

A pipeline uploads ``images.lock`` and ``images.txt`` to the manifests container; the blob trigger runs
that upload and writes an outcome record. This reads the blob now (it must hold the file's bytes: a
missing blob, or one with other content, fails at once) and finds the run of exactly that upload
(its ETag, with the lock beside it) through the blob trigger's claim
(``claims/<encoded name>/<upload>+<lock upload>.json``, naming the run id; docs/architecture.md, "Run
lifecycle"), then waits until the record's status is final. Exit 0 when the run succeeded; 1 when it
failed, was invalid or abandoned, or nothing finished within ``--timeout``. A second upload of the same
bytes is a new upload with a run of its own.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, TextIO

from ..core.ids import record_name, upload_id
from ..core.lock import lock_name_for
from ..core.runindex import MAX_LIMIT, STATUSES, decode_token, parse_since
from ..errors import ConflictError, NotFoundError, ValidationError
from .args import EXIT_FAILED, EXIT_OK, run_id_arg
from .output import render_runs, render_summary, write_json


def add_parsers(sub) -> None:
    runs = sub.add_parser("runs", help="read outcome records")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    show_command = rsub.add_parser("show", help="print one run's outcome record")
    show_command.add_argument("run_id", type=run_id_arg)
    add_wait_parser(rsub)  # pipelines: follow the run an upload started
    add_list_parser(rsub)  # the run index


def run(args, env, out: TextIO, err: TextIO) -> int:
    if args.runs_command == "wait":
        return wait(args, env, out, err)
    if args.runs_command == "list":
        return runs_list(args, env, out, err)
    return show(args, env, out)


def show(args, env, out: TextIO) -> int:
    from ..handlers import records
    from ..services import Services

    write_json(out, records.load(Services.for_cli(env, registry=False, storage="runs show"), args.run_id))
    return EXIT_OK


def _since(text: str) -> datetime:
    try:
        return parse_since(text, datetime.now(timezone.utc), field="--since")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0].message) from None


def _limit(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100000, got {text!r}")
    return int(text)


def _token(text: str) -> str:
    try:
        decode_token(text)
    except ValidationError:
        raise argparse.ArgumentTypeError("not a continuation token printed by runs list") from None
    return text


def add_list_parser(runs_subparsers) -> None:
    command = runs_subparsers.add_parser("list", help="recent runs, newest first (from the run index)")
    command.add_argument("--status", choices=STATUSES, help="only runs with this status")
    command.add_argument("--since", type=_since, help="only runs created since: 30m, 24h, 7d or an ISO 8601 time")
    command.add_argument("--limit", type=_limit, default=20, help="at most this many runs (default 20)")
    command.add_argument("--next", type=_token, metavar="TOKEN",
                         help="the next page: the token the previous runs list printed (same filters)")
    command.add_argument("--json", action="store_true")


def runs_list(args, env, out: TextIO, err: TextIO) -> int:
    from ..handlers.runindex import list_runs
    from ..services import Services

    services = Services.for_cli(env, registry=False, storage="runs list")
    runs: list[dict] = []
    token = args.next
    while len(runs) < args.limit:
        page = list_runs(services, status=args.status, since=args.since,
                         limit=min(MAX_LIMIT, args.limit - len(runs)), token=token)
        runs.extend(page["runs"])
        token = page["next"]
        if token is None:
            break
    if args.json:
        write_json(out, {"runs": runs, "next": token})
    else:
        out.write(render_runs(runs))
        if token is not None and not args.quiet:
            err.write(f"more runs: {_next_page(args, token)}\n")
    return EXIT_OK


def _next_page(args, token: str) -> str:
    """The command that lists the next page: this one's filters and ``--next TOKEN``."""
    import shlex

    words = [*shlex.split(args.prog), "runs", "list"]
    if args.status:
        words += ["--status", args.status]
    if args.since:
        words += ["--since", args.since.isoformat()]  # the same instant, not "24h" again from a later now
    if args.limit != 20:
        words += ["--limit", str(args.limit)]
    return shlex.join([*words, "--next", token])


FINAL = ("succeeded", "failed", "invalid", "abandoned")


def add_wait_parser(runs_subparsers) -> None:
    wait = runs_subparsers.add_parser("wait", help="wait for the run an upload of a manifest started; exit 0 "
                                                   "when it succeeded")
    wait.add_argument("--file", required=True, help="the manifest file that was uploaded (its sha256 finds the run)")
    wait.add_argument("--name", help="its blob name in the manifests container (default: the file's name)")
    wait.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most (default 3600)")
    wait.add_argument("--interval", type=float, default=10.0, help="seconds between looks (default 10)")
    wait.add_argument("--json", action="store_true", help="print the final record as JSON")


class RunFinder:
    """Finds the record of the run the blob trigger started for one upload (with its lock's upload)."""

    def __init__(self, services, name: str, upload: str, lock_upload: Optional[str]):
        self.services, self.name, self.upload, self.lock_upload = services, name, upload, lock_upload
        self.container = services.settings.outcomes_container

    def find(self) -> Optional[dict]:
        """The record of the run claimed for this upload, once the trigger has claimed it."""
        from ..handlers.runs.start import claim_blob

        store = self.services.store
        claim = store.get_json(self.container, claim_blob(self.name, self.upload, self.lock_upload))
        if claim and claim.get("run_id"):
            return store.get_json(self.container, record_name(claim["run_id"]))
        return None


def uploaded(services, name: str, data: bytes) -> tuple[str, Optional[str]]:
    """(upload id, lock upload id) of the blob ``name`` as it is now, which must hold ``data``; raises
    ``NotFoundError`` for a missing blob and ``ConflictError`` for one with other bytes (fail fast: no
    run of this file can come)."""
    container = services.settings.manifests_container
    blob, etag = services.store.get_bytes_etag(container, name)
    if blob is None:
        raise NotFoundError(f"no blob {name!r} in container {container!r}: upload the manifest first "
                            "(runs wait follows the run of an upload)")
    if hashlib.sha256(blob).digest() != hashlib.sha256(data).digest():
        raise ConflictError(f"blob {name!r} in container {container!r} holds other bytes than the file "
                            "(another upload since, or the wrong --name)", code="UploadDiffers")
    lock, lock_etag = services.store.get_bytes_etag(container, lock_name_for(name))
    return (upload_id(etag, hashlib.sha256(blob).hexdigest()),
            None if lock is None else upload_id(lock_etag, hashlib.sha256(lock).hexdigest()))


def wait_for_run(services, name: str, upload: str, lock_upload: Optional[str], *, timeout: float, interval: float,
                 report: Callable[[str], None], clock=time.monotonic, sleep=time.sleep) -> Optional[dict]:
    """The final record of the run of this upload, or None if none was final within ``timeout``."""
    finder = RunFinder(services, name, upload, lock_upload)
    deadline = clock() + timeout
    last = None
    while True:
        record = finder.find()
        state = (record or {}).get("status")
        if record is not None and (record.get("run_id"), state) != last:
            last = (record.get("run_id"), state)
            report(f"run {record.get('run_id')}: {state}")
        if state in FINAL:
            return record
        if clock() >= deadline:
            return None
        sleep(max(0.0, min(interval, deadline - clock())))


def wait(args, env, out: TextIO, err: TextIO) -> int:
    from ..services import Services

    data = Path(args.file).read_bytes()
    name = args.name or Path(args.file).name
    services = Services.for_cli(env, registry=False, storage="runs wait")
    upload, lock_upload = uploaded(services, name, data)
    err.write(f"waiting for the run of {name} (upload {upload}{', with its lock' if lock_upload else ''}), "
              f"at most {args.timeout:g}s\n")
    err.flush()

    def report(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    record = wait_for_run(services, name, upload, lock_upload, timeout=args.timeout, interval=args.interval,
                          report=report)
    if record is None:
        err.write(f"error: no finished run of {name} (upload {upload}) within {args.timeout:g}s\n")
        return EXIT_FAILED
    if args.json:
        write_json(out, record)
    elif "entries" in record and "summary" in record:
        out.write(render_summary(record))
    else:
        out.write(f"run {record.get('run_id')}: {record.get('status')}\n")
    return EXIT_OK if record.get("status") == "succeeded" else EXIT_FAILED
