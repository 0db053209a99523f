"""``runs list``: recent runs from the run index (``handlers.runindex``), newest first.

    python -m shared runs list [--status failed] [--since 24h] [--limit N] [--json]
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from typing import TextIO

from .core.runindex import MAX_LIMIT, STATUSES, parse_since
from .errors import ValidationError


def _since(text: str) -> datetime:
    try:
        return parse_since(text, datetime.now(timezone.utc), field="--since")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.problems[0].message) from None


def _limit(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 100000, got {text!r}")
    return int(text)


def add_list_parser(runs_subparsers) -> None:
    command = runs_subparsers.add_parser("list", help="recent runs, newest first (from the run index)")
    command.add_argument("--status", choices=STATUSES, help="only runs with this status")
    command.add_argument("--since", type=_since, help="only runs created since: 30m, 24h, 7d or an ISO 8601 time")
    command.add_argument("--limit", type=_limit, default=20, help="at most this many runs (default 20)")
    command.add_argument("--json", action="store_true")


def runs_list(args, env, out: TextIO) -> int:
    from .handlers.runindex import list_runs
    from .services import Services

    services = Services.from_env(env)
    runs: list[dict] = []
    token = None
    while len(runs) < args.limit:
        page = list_runs(services, status=args.status, since=args.since,
                         limit=min(MAX_LIMIT, args.limit - len(runs)), token=token)
        runs.extend(page["runs"])
        token = page["next"]
        if token is None:
            break
    if args.json:
        json.dump({"runs": runs, "next": token}, out, indent=2)
        out.write("\n")
    else:
        out.write(render(runs))
    return 0


def render(runs: list[dict]) -> str:
    if not runs:
        return "no runs\n"
    rows = [("RUN", "CREATED", "STATUS", "KIND", "TRIGGER", "FAILED/TOTAL", "MANIFEST")]
    for r in runs:
        counts = f"{r['failed']}/{r['total']}" if r.get("total") is not None else "-"
        rows.append((r["run_id"], r["created_at"][:19].replace("T", " "), r.get("status") or "-",
                     r.get("kind") or "-", r.get("trigger") or "-", counts, r.get("manifest") or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row[:6], widths, strict=True)) + "  " + row[6] + "\n"
                   for row in rows)
