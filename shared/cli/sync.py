"""``plan`` and ``sync``: what a manifest would import, and importing it from this process.

    python -m shared plan FILE [--all]
    python -m shared sync FILE [--all] [--concurrency N] [--no-record]
    python -m shared sync --resume RUN_ID      (a killed sync: the same run and record, carried on)

``sync`` runs through the same chunk code as the queued runs (``handlers.runs.run_in_process``),
checkpointing its record as entries finish, so a killed sync leaves a record of what it did; ``plan``
(and ``sync --no-record``) use the sync engine directly and record nothing. Progress goes to stderr
(``output.for_stream``), the summary table or JSON to stdout. Exit 0 when the run succeeded.
"""
from __future__ import annotations

from typing import Optional, TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest, whole
from .output import for_stream, render_summary, write_json


def add_parsers(sub) -> None:
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


def run(args, env, out: TextIO, err: TextIO) -> int:
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
    data, name = read_manifest(args.file)
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
        write_json(out, {**document, "record_url": location} if location else document)
    else:
        out.write(render_summary(document, every_row=args.all))
        if location:
            out.write(f"outcome record: {location}\n")
    return EXIT_OK if document["status"] == "succeeded" else EXIT_FAILED
