"""``manifest check``: validate an images.txt offline (no registry, no storage, no Azure).

    python -m shared manifest check FILE [--json]

Exit 0 when it is valid (warnings are printed and do not fail it), 1 when it is not. The ``images.lock``
beside FILE (``--lock PATH``, ``--no-lock``) is checked too: a lock that does not agree makes the manifest
invalid, as it would for a run; without one, a warning says the tags are not locked. ``--json`` lists the
lines that validated under ``entries`` / ``policies`` even when other lines did not (nothing is imported
from such a manifest), and ``error_count`` counts every problem (``errors`` lists the first 100).
"""
from __future__ import annotations

from typing import TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest
from .output import write_json


def add_parsers(sub) -> None:
    manifest = sub.add_parser("manifest", help="work on an images.txt offline")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("check", help="validate a manifest without touching any registry")
    check.add_argument("file", help="images.txt, or - for stdin")
    from .sync import _lock_flags

    _lock_flags(check)


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings
    from ..core.lock import lock_name_for
    from ..handlers.sync import check_manifest
    from .sync import read_lock

    settings = Settings.from_env(env, offline=True)
    data, name = read_manifest(args.file)
    lock = read_lock(args, err)
    result = check_manifest(data, settings, lock, name=name,
                            lock_name=args.lock or lock_name_for(args.file if args.file != "-" else name))
    if args.json:
        document = result.to_dict()
        if not result.ok:
            document["entries"] = [e.to_dict() for e in result.valid_entries]
            document["policies"] = [p.to_dict() for p in result.valid_policies]
        write_json(out, {**document, "error_count": result.error_count})
    else:
        for problem in result.errors:
            where = problem.field if problem.field and problem.field.endswith(".lock") else args.file
            out.write(f"{where}:{problem.line}: {problem.message}\n" if problem.line
                      else f"{where}: {problem.message}\n")
        for problem in result.warnings:
            out.write(f"{args.file}:{problem.line}: warning: {problem.message}\n" if problem.line
                      else f"{args.file}: warning: {problem.message}\n")
        if result.ok:
            policies = f", {len(result.policies)} tag policies" if result.policies else ""
            out.write(f"{args.file}: {len(result.entries)} entries{policies}, valid\n")
        else:
            out.write(f"{args.file}: {result.error_count} error(s); nothing would be imported\n")
    return EXIT_OK if result.ok else EXIT_FAILED
