"""Everything the command line prints: tables, JSON, and progress on stderr.

Tables: ``render_summary`` (a run or plan record), ``render_runs`` (``runs list``), ``render_build`` and
``render_pools``. JSON: ``write_json`` (one document, indented, newline-terminated). Nothing here prints
a SAS signature (``shared.redact``).

Progress of ``plan`` / ``sync`` on stderr: live on a terminal, periodic single lines elsewhere.
``for_stream`` picks one: ``TerminalProgress`` when the stream is a TTY (a counter while planning,
one line per import as it ends), ``LineProgress`` otherwise (CI logs): one line when planning ends
and then at most one line per ``interval`` seconds or per ``step`` percent of the imports, whichever
comes first, plus the last one. Both are called by ``SyncEngine`` as ``progress(event, done, total,
outcome)`` with event ``planned``, ``imported`` or ``failed``.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional, TextIO

from ..redact import redact


def write_json(out: TextIO, document) -> None:
    out.write(json.dumps(document, indent=2))
    out.write("\n")


# -- tables ---------------------------------------------------------------------------------------

def render_summary(document: dict, *, every_row: bool = False) -> str:
    """A fixed-width table of the entries that change or failed (every entry with ``every_row``),
    then the totals."""
    lines = []
    if document["errors"]:
        for error in document["errors"]:
            where = f"line {error['line']}: " if error.get("line") else ""
            lines.append(f"{where}{error['message']}")
        lines.append(f"{len(document['errors'])} error(s) in {document['manifest']['name']}; nothing was imported")
        return "\n".join(lines) + "\n"
    rows = [("LINE", "TARGET", "ACTION", "RESULT", "DIGEST", "NOTE")]
    shown = [e for e in document["entries"] if every_row or e["action"] != "unchanged" or e["error"]
             or e["result"] == "failed"]
    for e in shown:
        digest = (e["source_digest"] or "")[7:19]
        note = f"{e['error']['code']}: {e['error']['message']}" if e["error"] else (
            f"{e['attempts']} attempts" if e["attempts"] > 1 else "")
        rows.append((str(e["line"]), e["target"], e["action"], e["result"], digest, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows if shown else ():
        cells = "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True))
        lines.append(cells + ("  " + row[5] if row[5] else ""))
    hidden = len(document["entries"]) - len(shown)
    if hidden:
        lines.append(f"({hidden} unchanged entr{'y' if hidden == 1 else 'ies'} not listed; --all lists every entry)")
    for p in document.get("policies", []):  # tag policies: what each resolved to, or why not
        tags = ", ".join(r["tag"] for r in p["resolved"]) or "nothing"
        outcome = f"{p['error']['code']}: {p['error']['message']}" if p["error"] else f"-> {tags}"
        lines.append(f"line {p['line']}: {p['source']}:{p['policy']} {outcome}")
    s = document["summary"]
    lines.append("")
    lines.append(f"{document['kind']} {document['run_id']}: {document['status']} - "
                 f"{s['total']} entries: {s['new']} new, {s['update']} update, {s['unchanged']} unchanged, "
                 f"{s['error']} error; {s['imported']} imported, {s['failed']} failed "
                 f"in {document['duration_seconds']}s")
    if document.get("trust"):  # signatures were verified under a trust policy
        lines.append(f"signatures ({document['trust']['policy']}): {s.get('rejected', 0)} rejected, "
                     f"{s.get('unverified', 0)} not verified")
    return "\n".join(lines) + "\n"


def render_runs(runs: list[dict]) -> str:
    """``runs list``: one row per run, newest first."""
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


def render_build(document: dict) -> str:
    lines = [f"build {document['run_id']}: {document.get('status')}"
             + (f" in {document['duration_seconds']}s" if document.get("duration_seconds") is not None else "")
             + f" on agent pool {document.get('agent_pool')}"
             + (f" (trigger {document['trigger']})" if document.get("trigger") else "")]
    seen = " -> ".join(t["status"] for t in document.get("transitions", []))
    if seen:
        lines.append(f"  statuses seen: {seen}")
    if document.get("error"):
        lines.append(f"  error: {document['error']}")
    for image in document.get("output_images", []):
        lines.append(f"  pushed {image['repository']}:{image['tag']}  {image['digest']}")
    if document.get("log_url"):
        lines.append(f"  log: {redact(document['log_url'])}")  # where, never the signature
    return "\n".join(lines) + "\n"


def render_pools(pools: list[dict]) -> str:
    rows = [("POOL", "COUNT", "STATE", "QUEUED", "RUNNING", "IDLE SINCE", "LAST DECISION")]
    for p in pools:
        last = p.get("last_decision") or {}
        decision = f"{last.get('action')}: {last.get('reason')}" if last else ""
        rows.append((p["name"], str(p["count"]), p.get("provisioning_state") or "", str(p["queued"]),
                     str(p["running"]), p.get("idle_since") or "", decision))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6] + "\n"
                   for r in rows)


# -- progress -------------------------------------------------------------------------------------



class TerminalProgress:
    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, event, done, total, outcome) -> None:
        if event == "planned":
            self.stream.write(f"\rplanning {done}/{total}")
            if done == total:
                self.stream.write("\n")
        else:
            entry = outcome.item.entry
            mark = "ok  " if event == "imported" else "FAIL"
            self.stream.write(f"[{done:>{len(str(total))}}/{total}] {mark} {entry.target} "
                              f"({outcome.duration:.1f}s)\n")
        self.stream.flush()


class LineProgress:
    def __init__(self, stream: TextIO, *, interval: float = 10.0, step: int = 10,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.interval, self.step, self.clock = stream, interval, step, clock
        self._last_time = clock()
        self._last_percent = 0
        self._failed = 0

    def __call__(self, event, done, total, outcome) -> None:
        if event == "planned":
            if done == total:
                self._emit(f"planned {total} entries")
            return
        if event == "failed":
            self._failed += 1
        percent = done * 100 // total if total else 100
        due = (self.clock() - self._last_time >= self.interval
               or percent >= self._last_percent + self.step or done == total)
        if due:
            self._last_percent = percent - percent % self.step if self.step else percent
            self._emit(f"imports {done}/{total} done ({percent}%), {self._failed} failed")

    def _emit(self, text: str) -> None:
        self._last_time = self.clock()
        self.stream.write(f"progress: {text}\n")
        self.stream.flush()


def for_stream(stream: TextIO) -> Optional[Callable]:
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if isatty and isatty() else LineProgress(stream)
