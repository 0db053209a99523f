"""``manifest check``: validate an images.txt offline (no registry, no storage, no Azure).

    python -m shared manifest check FILE [--json | --format text|json|github|azure|sarif]

Exit 0 when it is valid (warnings are printed and do not fail it), 1 when it is not. The manifest alone is
checked (whether its images.lock agrees is ``lock --check``). ``--format github``
/ ``azure`` print each problem as a workflow annotation on its line (then the summary line); ``sarif``
prints a SARIF 2.1.0 log for code scanning (rules ``invalid-manifest``, ``manifest-warning``).
"""
from __future__ import annotations

from typing import TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest
from .output import ANNOTATION_FORMATS, CHECK_FORMATS, Annotation, check_format, write_annotations, write_json


def add_parsers(sub) -> None:
    manifest = sub.add_parser("manifest", help="work on an images.txt offline")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("check", help="validate a manifest without touching any registry")
    check.add_argument("file", help="images.txt, or - for stdin")
    check.add_argument("--format", choices=CHECK_FORMATS,
                       help="text (default), json (as --json), github or azure (pipeline annotations), sarif")


def annotations(file: str, result) -> list[Annotation]:
    """The manifest's errors and warnings as annotations on ``file`` (None for stdin)."""
    where = None if file == "-" else file
    return ([Annotation(where, p.line, None, "invalid-manifest", p.message) for p in result.errors]
            + [Annotation(where, p.line, None, "manifest-warning", p.message, "warning") for p in result.warnings])


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings
    from ..handlers.sync import read_manifest as validate

    fmt = check_format(args)
    settings = Settings.from_env(env, offline=True)
    data, _ = read_manifest(args.file)
    result = validate(data, settings)  # the manifest alone: no "unlocked" warning, LOCK_REQUIRED or not
    if fmt == "json":
        write_json(out, result.to_dict())
        return EXIT_OK if result.ok else EXIT_FAILED
    if fmt in ANNOTATION_FORMATS:
        from ..http.openapi import app_version

        write_annotations(out, annotations(args.file, result), fmt, version=app_version())
        if fmt == "sarif":
            return EXIT_OK if result.ok else EXIT_FAILED
    else:
        for problem in result.errors:
            out.write(f"{args.file}:{problem.line}: {problem.message}\n" if problem.line
                      else f"{args.file}: {problem.message}\n")
        for problem in result.warnings:
            where = f"{args.file}:{problem.line}" if problem.line else args.file
            out.write(f"{where}: warning: {problem.message}\n")
    if result.ok:
        policies = f", {len(result.policies)} tag policies" if result.policies else ""
        out.write(f"{args.file}: {len(result.entries)} entries{policies}, valid\n")
    else:
        out.write(f"{args.file}: {len(result.errors)} error(s); nothing would be imported\n")
    return EXIT_OK if result.ok else EXIT_FAILED
