"""``trust check``: validate a trust policy file offline (no registry, no storage, no Azure).

    python -m shared trust check FILE [--json]

The same checks as an upload of ``TRUST_POLICY_BLOB`` (``shared.core.trust.parse``): every problem
with its line and field (``FILE:LINE: FIELD: message``), warnings likewise (they do not fail it), then
one summary line. ``--json`` prints ``TrustPolicyResult.to_dict()``: ``{"name", "ok", "errors",
"warnings", "policy"}``. Exit 0 when it is valid, 1 when it is not, 2 for a file that cannot be read.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TextIO

from .args import EXIT_FAILED, EXIT_OK, read_manifest
from .output import write_json


def add_parsers(sub) -> None:
    trust = sub.add_parser("trust", help="work on a trust policy file offline (signatures required per source)")
    tsub = trust.add_subparsers(dest="trust_command", required=True)
    check = tsub.add_parser("check", help="validate a trust policy file, every problem with its line")
    check.add_argument("file", help="the trust policy (YAML), or - for stdin")


def _where(name: str, problem) -> str:
    place = f"{name}:{problem.line}" if problem.line else name
    return f"{place}: {problem.field}: {problem.message}" if problem.field else f"{place}: {problem.message}"


def run(args, env, out: TextIO, err: TextIO) -> int:
    from ..core.trust.parse import parse_trust_policy

    data, name = read_manifest(args.file)
    shown = args.file if args.file != "-" else "stdin"
    result = parse_trust_policy(data, name, now=datetime.now(timezone.utc))
    if args.json:
        write_json(out, result.to_dict())
        return EXIT_OK if result.ok else EXIT_FAILED
    for problem in result.errors:
        out.write(_where(shown, problem) + "\n")
    for problem in result.warnings:
        out.write(_where(shown, problem).replace(": ", ": warning: ", 1) + "\n")
    if result.ok:
        scopes = result.policy.scopes
        modes = {mode: sum(s.mode == mode for s in scopes) for mode in ("enforce", "audit", "skip")}
        detail = ", ".join(f"{n} {mode}" for mode, n in modes.items() if n)
        out.write(f"{shown}: {len(scopes)} scope{'s' if len(scopes) != 1 else ''}"
                  f"{f' ({detail})' if detail else ''}, valid\n")
        return EXIT_OK
    n = len(result.errors)
    out.write(f"{shown}: {n} problem{'s' if n != 1 else ''}; uploaded, it would stop every run (nothing is "
              "imported until it is fixed)\n")
    return EXIT_FAILED
