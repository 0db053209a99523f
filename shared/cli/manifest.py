"""``manifest check``: validate an images.txt offline (no registry, no storage, no Azure).

    python -m shared manifest check FILE [--lock PATH | --no-lock] [--json | --format text|json|github|azure|sarif]

Exit 0 when it is valid (warnings are printed and do not fail it), 1 when it is not. The ``images.lock``
beside FILE (``--lock PATH``, ``--no-lock``) is checked too: a lock that does not agree makes the manifest
invalid, as it would for a run; without one, a warning says the tags are not locked. ``--json`` lists the
lines that validated under ``entries`` / ``policies`` even when other lines did not (nothing is imported
from such a manifest), and ``error_count`` counts every problem (``errors`` lists the first 100; the
summary line's count is ``error_count`` too).

``--format github`` / ``azure`` print each problem as a pipeline annotation on its file and line (then the
summary line); ``sarif`` prints a SARIF 2.1.0 log for code scanning. The rule is ``invalid-manifest`` for
the manifest's own problems, ``manifest-warning`` for its warnings, and the lock's problem code
(``unlocked``, ``stale``, ``invalid``, ``missing``, ... as ``lock --check`` reports them) for a lock that
does not agree.
"""
from __future__ import annotations

from typing import Optional, TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest
from .output import ANNOTATION_FORMATS, CHECK_FORMATS, Annotation, check_format, write_annotations, write_json


def add_parsers(sub) -> None:
    manifest = sub.add_parser("manifest", help="work on an images.txt offline")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("check", help="validate a manifest without touching any registry")
    check.add_argument("file", help="images.txt, or - for stdin")
    check.add_argument("--format", choices=CHECK_FORMATS,
                       help="text (default), json (as --json), github or azure (pipeline annotations), sarif")
    from .sync import _lock_flags

    _lock_flags(check)


def annotations(file: str, lock_file: str, data: bytes, lock: Optional[bytes], settings, result) -> list[Annotation]:
    """The check's problems as annotations, each with its file (None for stdin), line and rule: the manifest's
    own problems, else the lock's (with the codes ``lock --check`` gives them), then the warnings."""
    where = None if file == "-" else file
    marks = [Annotation(where, p.line, None, "manifest-warning", p.message, "warning") for p in result.warnings]
    if result.ok:
        return marks
    from ..handlers.sync import read_manifest as manifest_alone

    if not manifest_alone(data, settings).ok:
        errors = [Annotation(where, p.line, None, "invalid-manifest", p.message) for p in result.errors]
    elif lock is None:  # LOCK_REQUIRED and no lock
        errors = [Annotation(lock_file, None, None, "missing", p.message) for p in result.errors]
    else:
        from ..handlers.lock import lock_check

        errors = [Annotation(where if p.file == file else p.file, p.line, None, p.code, p.message)
                  for p in lock_check(data, lock, settings, name=file, lock_name=lock_file)]
    return errors + marks


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings
    from ..core.lock import lock_name_for
    from ..handlers.sync import check_manifest
    from .sync import read_lock

    fmt = check_format(args)
    settings = Settings.from_env(env, offline=True)
    data, name = read_manifest(args.file)
    lock = read_lock(args, err)
    lock_file = args.lock or lock_name_for(args.file if args.file != "-" else name)
    result = check_manifest(data, settings, lock, name=name, lock_name=lock_file)
    if fmt == "json":
        document = result.to_dict()
        if not result.ok:
            document["entries"] = [e.to_dict() for e in result.valid_entries]
            document["policies"] = [p.to_dict() for p in result.valid_policies]
        write_json(out, {**document, "error_count": result.error_count})
        return EXIT_OK if result.ok else EXIT_FAILED
    if fmt in ANNOTATION_FORMATS:
        from ..version import version

        write_annotations(out, annotations(args.file, lock_file, data, lock, settings, result), fmt,
                          version=version())
        if fmt == "sarif":
            return EXIT_OK if result.ok else EXIT_FAILED
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
