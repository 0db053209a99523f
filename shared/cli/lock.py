"""``lock``: write, refresh or check the ``images.lock`` beside an ``images.txt``.

    python -m shared lock images.txt              # resolve new lines, keep the rest, drop stale ones
    python -m shared lock images.txt --update     # resolve every line again (moved tags, new releases)
    python -m shared lock images.txt --check      # offline: exit 1 when images.txt and images.lock disagree
    python -m shared lock images.txt --check --format github|azure|sarif   # the same, as pipeline annotations
    python -m shared lock images.txt --trust-policy trust-policy.yaml [--trusted-roots DIR]
                                                  # verify each digest's signatures; record who signed it

The lock is written beside the manifest (``--lock`` names another path), only when it changed, and
only whole: a line that cannot be resolved fails the command and writes nothing. Needs the source
registries only (no ACR, no storage): run it where the internet is reachable, commit the lock with the
manifest, and review its digest changes in the pull request. ``--check`` reads nothing but the two
files; its problems name the file and line (``images.txt:12: ...``, ``images.lock:40: ...``); ``--format``
prints them as GitHub or Azure Pipelines annotations, or a SARIF log, with the problem's code as the rule
(``unlocked``, ``stale``, ``source-changed``, ``pinned-digest``, ``policy-unlocked``, ``fingerprint``,
``missing``, ``invalid``).
With ``--trust-policy FILE`` (the reviewed policy, as uploaded to ``TRUST_POLICY_BLOB``) every digest is
verified as a run would verify it, and each lock entry a scope verified carries its ``signer``; a line an
enforce scope rejects fails the command and writes nothing (the error names the line and why). The lock
runs where there is no storage, so the policy and its trusted roots come from files.
Exit codes: 0 done (or they agree), 1 a line could not be resolved or a trust policy rejected it (or they
disagree), 2 usage.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError, ManifestError
from .args import EXIT_FAILED, EXIT_OK, os_reason
from .output import ANNOTATION_FORMATS, CHECK_FORMATS, Annotation, check_format, write_annotations, write_json


def add_parsers(sub) -> None:
    lock = sub.add_parser("lock", help="write images.lock: the digests of images.txt, for review")
    lock.add_argument("file", help="images.txt")
    lock.add_argument("--lock", metavar="PATH", help="the lock file (default: beside FILE, .txt -> .lock)")
    mode = lock.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="resolve every line again (moved tags, new releases)")
    mode.add_argument("--check", action="store_true", help="offline: exit 1 when the manifest and lock disagree")
    lock.add_argument("--format", choices=CHECK_FORMATS,
                      help="with --check: text (default), json (as --json), github or azure (pipeline annotations), "
                           "sarif")
    lock.add_argument("--trust-policy", metavar="FILE",
                      help="verify every digest against this trust policy and record its signer; a line an enforce "
                           "scope rejects fails the lock (docs/trust.md)")
    lock.add_argument("--trusted-roots", metavar="DIR",
                      help="where the policy's trusted_root files are (DIR/NAME.json); default: the public-good "
                           "root for scopes without one")


def lock_path(manifest: str, explicit: str | None = None) -> Path:
    from ..core.lock import lock_name_for

    return Path(explicit) if explicit else Path(lock_name_for(manifest))


def _read(path: Path, *, missing_ok: bool = False) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {os_reason(exc)}") from None


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..config import Settings

    if args.file == "-":
        raise ConfigError("lock needs the manifest's path (its lock is written beside it), not stdin")
    fmt = check_format(args)
    if fmt not in ("text", "json") and not args.check:
        raise ConfigError(f"--format {fmt} is for --check (the findings of a check as annotations)")
    settings = Settings.from_env(env, offline=True)
    manifest_path, path = Path(args.file), lock_path(args.file, args.lock)
    text = _read(manifest_path)
    old = _read(path, missing_ok=True)
    if args.check:
        if args.trust_policy:
            raise ConfigError("--check only compares the two files; --trust-policy verifies while locking")
        return _check(fmt, text, old, settings, manifest_path, path, out)
    from ..handlers.lock import build_lock
    from ..services import Services

    progress = None if args.quiet else _progress(err)
    services = Services(settings)
    trust = None
    if args.trust_policy:
        from ..handlers.trust import gate_from_file

        trust = gate_from_file(services, args.trust_policy, args.trusted_roots)
    elif args.trusted_roots:
        raise ConfigError("--trusted-roots goes with --trust-policy FILE")
    result = build_lock(services, text, name=manifest_path.name, old=old, update=args.update,
                        progress=progress, trust=trust)
    new_text = result.lock.to_text().encode()
    written = new_text != old
    if written:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(new_text)
        os.replace(tmp, path)  # whole or not at all
    if fmt == "json":
        write_json(out, {"lock": str(path), "written": written, "images": len(result.lock.images),
                         "resolved": result.resolved, "kept": result.kept, "diff": result.diff.to_dict()})
        return EXIT_OK
    if result.old_unreadable:
        err.write(f"note: the old {path} did not parse; it was written anew\n")
    for line in result.diff.lines():
        out.write(line + "\n")
    changes = "no changes" if result.diff.empty else (
        f"{len(result.diff.added)} added, {len(result.diff.changed)} changed, {len(result.diff.removed)} removed")
    out.write(f"{path}: {len(result.lock.images)} images ({result.resolved} resolved, {result.kept} kept); "
              f"{changes}{'' if written else '; not rewritten'}\n")
    return EXIT_OK


def _check(fmt: str, text: bytes, old, settings, manifest_path: Path, path: Path, out: TextIO) -> int:
    from ..handlers.lock import lock_check

    try:
        problems = lock_check(text, old, settings, name=str(manifest_path), lock_name=str(path))
    except ManifestError as exc:
        if fmt not in ANNOTATION_FORMATS:
            raise
        from ..core.lock import LockProblem  # an invalid manifest, annotated on its lines like the rest

        problems = [LockProblem(str(manifest_path), p.line, "invalid-manifest", p.message) for p in exc.problems]
    if fmt == "json":
        write_json(out, {"ok": not problems, "manifest": str(manifest_path), "lock": str(path),
                         "problems": [p.to_dict() for p in problems]})
    elif fmt in ANNOTATION_FORMATS:
        from ..version import version

        write_annotations(out, [Annotation(p.file, p.line, None, p.code, p.message) for p in problems], fmt,
                          version=version())
        if fmt != "sarif":
            out.write(f"{manifest_path} and {path} agree\n" if not problems else
                      f"{len(problems)} problem(s): {path} does not match {manifest_path}\n")
    else:
        for problem in problems:
            out.write(f"{problem}\n")
        out.write(f"{manifest_path} and {path} agree\n" if not problems else
                  f"{len(problems)} problem(s): {path} does not match {manifest_path}\n")
    return EXIT_OK if not problems else EXIT_FAILED


def _progress(stream: TextIO):
    tty = getattr(stream, "isatty", None) and stream.isatty()
    step = {"last": -1}

    def report(done: int, total: int) -> None:
        percent = done * 100 // total
        if tty:
            stream.write(f"\rresolving {done}/{total}" + ("\n" if done == total else ""))
        elif percent // 25 != step["last"] // 25 or done == total:
            stream.write(f"progress: resolved {done}/{total} ({percent}%)\n")
        step["last"] = percent
        stream.flush()
    return report
