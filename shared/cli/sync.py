"""``plan`` and ``sync``: what a manifest would import, and importing it from this process.

    airlock plan FILE [--all] --registry NAME
    airlock sync FILE [--all] [--concurrency N] [--no-record] --registry NAME
    airlock sync --resume RUN_ID      (a killed sync: the same run and record, carried on)

The registry's name is enough (``Services.for_cli``): the subscription is the Azure CLI's, the resource
group is found through ARM; settings and ``--subscription`` / ``--resource-group`` win. Without storage
settings a sync imports and says that nothing was recorded (there is then nothing to ``--resume``).

The ``images.lock`` beside FILE (``--lock PATH`` names another; ``--no-lock`` ignores it) makes the run
import exactly its digests (a tag that moved upstream is reported as drift); without one the tags are
imported as they point now, with a warning (refused when LOCK_REQUIRED is true).

``sync`` runs through the same chunk code as the queued runs (``handlers.runs.run_in_process``),
checkpointing its record as entries finish, so a killed sync leaves a record of what it did; ``plan``
(and ``sync --no-record``) use the sync engine directly and record nothing. Progress goes to stderr
(``output.for_stream``), the summary table or JSON to stdout. Exit 0 when the run succeeded.
"""
from __future__ import annotations

from typing import Optional, TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest, run_id_arg, whole
from .output import for_stream, render_summary, write_json


def add_parsers(sub) -> None:
    plan = sub.add_parser("plan", help="show what a sync would import (imports nothing)")
    plan.add_argument("file", help="images.txt, or - for stdin")
    plan.add_argument("--all", action="store_true", help="list every entry, unchanged ones too")
    _lock_flags(plan)

    sync = sub.add_parser("sync", help="import every new or changed image of a manifest")
    sync.add_argument("file", nargs="?", help="images.txt, or - for stdin")
    sync.add_argument("--resume", metavar="RUN_ID", type=run_id_arg,
                      help="carry on a sync that was killed: the same run and record; finished entries are kept")
    sync.add_argument("--all", action="store_true", help="list every entry, unchanged ones too")
    sync.add_argument("--concurrency", type=whole(1, 64), metavar="N",
                      help="imports at once, 1..64 (overrides SYNC_CONCURRENCY)")
    sync.add_argument("--no-record", action="store_true", help="do not write the outcome record")
    _lock_flags(sync)


def _lock_flags(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--lock", metavar="PATH", help="the manifest's lock (default: images.lock beside FILE)")
    group.add_argument("--no-lock", action="store_true", help="ignore the lock: import the tags as they point now")


def read_lock(args, err: TextIO) -> Optional[bytes]:
    """The lock that goes with ``args.file``: ``--lock``, else the one beside it (when it exists)."""
    from .lock import _read, lock_path

    if args.no_lock or (args.file == "-" and not args.lock):
        return None
    path = lock_path(args.file, args.lock)
    data = _read(path, missing_ok=not args.lock)
    if data is not None and not args.quiet:
        err.write(f"using {path}\n")
    return data


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..core.ids import new_run_id
    from ..handlers import records
    from ..handlers.sync import SyncEngine
    from ..services import Services

    apply = args.command == "sync"
    resume = getattr(args, "resume", None)
    services = Services.for_cli(env, storage="sync --resume" if resume else None)
    progress = None if args.quiet else for_stream(err)
    if resume:
        from ..handlers.runs import resume_in_process

        document = _interruptible(args, err, resume, lambda: resume_in_process(services, resume, progress=progress))
        location = services.store.url(services.settings.outcomes_container, records.record_name(resume))
        return _report(args, out, document, location)
    data, name = read_manifest(args.file)
    lock = read_lock(args, err)
    if apply and not args.no_record and services.settings.has_storage:
        from ..handlers.runs import run_in_process

        # checkpointed as entries finish: a killed sync leaves a record of what it did (the reaper ends it)
        run_id = new_run_id()
        document = _interruptible(args, err, run_id, lambda: run_in_process(
            services, data, name=name, trigger="cli", progress=progress, lock=lock, run_id=run_id))
        location = services.store.url(services.settings.outcomes_container, records.record_name(document["run_id"]))
        return _report(args, out, document, location)
    if apply and not args.no_record and not args.quiet:
        from ..services import STORAGE_HINT

        err.write(f"note: nothing will be recorded (no storage settings; to keep outcome records, {STORAGE_HINT})\n")
    document = SyncEngine(services).run(data, name=name, trigger="cli", apply=apply,
                                        progress=progress, lock=lock).to_dict()
    return _report(args, out, {**document, "run_id": None}, None)  # no record: no id that runs show would find


def _interruptible(args, err: TextIO, run_id: str, work):
    """``work()``; on Ctrl-C, the run id and the command that carries the run on, then KeyboardInterrupt."""
    try:
        return work()
    except KeyboardInterrupt:
        err.write(f"\ninterrupted: run {run_id} is recorded as far as it got; carry it on with:\n"
                  f"  {resume_command(args, run_id)}\n")
        err.flush()
        raise KeyboardInterrupt("reported") from None  # dispatch: exit 130, nothing more to say


def resume_command(args, run_id: str) -> str:
    """The command line that resumes ``run_id`` with the same settings as this one (its global flags)."""
    import shlex

    words = [*shlex.split(args.prog), "sync", "--resume", run_id]
    for flag, value in (("--env-file", args.env_file), ("--registry", args.registry),
                        ("--subscription", args.subscription), ("--resource-group", args.resource_group)):
        if value:
            words += [flag, value]
    if getattr(args, "concurrency", None):
        words += ["--concurrency", str(args.concurrency)]
    return shlex.join(words)


def _report(args, out, document: dict, location: Optional[str]) -> int:
    recorded = {"recorded": location is not None, "record_url": location}
    if args.json:
        write_json(out, {**document, **recorded})
    else:
        out.write(render_summary(document, every_row=args.all))
        if location:
            out.write(f"outcome record: {location}\n")
    return EXIT_OK if document["status"] == "succeeded" else EXIT_FAILED
