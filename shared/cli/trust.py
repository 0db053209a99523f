"""``trust``: the trust policy file. ``trust check`` validates it offline (no registry, no storage, no
Azure); ``trust publish`` pushes its verification material into the ACR (``cli/trust_publish.py``).

    python -m shared trust check FILE [--json]
    python -m shared trust publish FILE [--trusted-root NAME=PATH]

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
    from .trust_publish import add_publish

    trust = sub.add_parser("trust", help="the trust policy file: check it offline, publish its verification "
                                         "material into the ACR")
    tsub = trust.add_subparsers(dest="trust_command", required=True, metavar="SUBCOMMAND")
    check = tsub.add_parser("check", help="validate a trust policy file, every problem with its line")
    check.add_argument("file", help="the trust policy (YAML), or - for stdin")
    add_publish(tsub)


def _where(name: str, problem) -> str:
    place = f"{name}:{problem.line}" if problem.line else name
    return f"{place}: {problem.field}: {problem.message}" if problem.field else f"{place}: {problem.message}"


def run(args, env, out: TextIO, err: TextIO) -> int:
    if args.trust_command == "publish":
        from . import trust_publish

        return trust_publish.run(args, env, out, err)
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
