#!/usr/bin/env python3
"""Render `python -m shared plan FILE --json` as Markdown for a pull request's summary.

    python scripts/plan_summary.py plan.json >> "$GITHUB_STEP_SUMMARY"      (GitHub Actions)
    python scripts/plan_summary.py plan.json > plan.md; echo "##vso[task.uploadsummary]$PWD/plan.md"   (Azure DevOps)

What will be imported (new, update) and what cannot be (error) are listed entry by entry; unchanged
entries are counted. Standard library only: it runs before anything else is installed.
"""
from __future__ import annotations

import json
import sys


def cell(text) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def render(plan: dict) -> str:
    name = (plan.get("manifest") or {}).get("name", "manifest")
    lines = [f"## Import plan for `{cell(name)}`", ""]
    if plan.get("errors"):
        lines.append(f"**{len(plan['errors'])} error(s); nothing would be imported:**")
        lines.append("")
        for error in plan["errors"]:
            where = f"line {error['line']}: " if error.get("line") else ""
            lines.append(f"- {cell(where)}{cell(error.get('message'))}")
        return "\n".join(lines) + "\n"
    s = plan.get("summary", {})
    lines.append(f"{s.get('total', 0)} entries: **{s.get('new', 0)} new**, **{s.get('update', 0)} update**, "
                 f"{s.get('unchanged', 0)} unchanged, **{s.get('error', 0)} error**")
    lines.append("")
    shown = [e for e in plan.get("entries", []) if e.get("action") != "unchanged"]
    if shown:
        lines.append("| Line | Target | Action | Source | Source digest | Current digest | Note |")
        lines.append("|---|---|---|---|---|---|---|")
        for e in shown:
            note = f"{e['error'].get('code')}: {e['error'].get('message')}" if e.get("error") else ""
            lines.append("| " + " | ".join(cell(v) for v in (
                e.get("line"), e.get("target"), e.get("action"), e.get("source"),
                (e.get("source_digest") or "")[:19], (e.get("previous_target_digest") or "")[:19], note)) + " |")
    else:
        lines.append("Nothing to import: every image is already current.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: plan_summary.py PLAN_JSON", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        sys.stdout.write(render(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
