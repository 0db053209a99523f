"""Everything the command line prints: tables, JSON, and progress on stderr.

Tables: ``render_summary`` (a run or plan record, with a line per referrer that could not be carried and
the referrer counts), ``render_runs`` (``runs list``), ``render_build`` and
``render_pools``. JSON: ``write_json`` (one document, indented, newline-terminated). Nothing here prints
a SAS signature (``shared.redact``).

Findings of the pull-request checks (``manifest check``, ``lock --check``, ``discover --check``) in the
formats of the systems that show them on the pull request, one ``Annotation`` list in, whichever command
made it (``write_annotations``; ``--format``):

- ``github``: workflow commands, one line each: ``::error file=F,line=L,col=C,title=RULE::message``
  (``::warning`` for warnings); GitHub shows them on the changed lines. Property values and messages are
  escaped as the Actions toolkit does (``%25``, ``%0D``, ``%0A``; and ``%3A``, ``%2C`` in properties).
- ``azure``: Azure Pipelines logging commands: ``##vso[task.logissue type=error;sourcepath=F;
  linenumber=L;columnnumber=C;code=RULE]message``, escaped as azure-pipelines-task-lib does (``%AZP25``,
  ``%0D``, ``%0A``; and ``%3B``, ``%5D`` in properties).
- ``sarif``: one SARIF 2.1.0 log (for GitHub code scanning's ``upload-sarif``): a rule per problem code
  (``RULES``: its id, name and description), a result per annotation with its level, message and
  location (the file as a relative URI reference, line and column; columns count code points).

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
from dataclasses import dataclass
from pathlib import PurePath
from typing import Callable, Iterable, Optional, TextIO
from urllib.parse import quote

from ..core import referrers as carried
from ..core.manifest import problem_total
from ..redact import redact


def write_json(out: TextIO, document) -> None:
    out.write(json.dumps(document, indent=2))
    out.write("\n")


# -- pull-request check formats ---------------------------------------------------------------------

CHECK_FORMATS = ("text", "json", "github", "azure", "sarif")
ANNOTATION_FORMATS = ("github", "azure", "sarif")

# rule id -> (name, description): every code a check can report, for SARIF's rules and the docs
RULES = {
    # manifest check (images.txt)
    "invalid-manifest": ("InvalidManifest", "A line of images.txt is not valid (reference grammar, duplicate or "
                                            "conflicting destination, registry not allowed, limits)."),
    "manifest-warning": ("ManifestWarning", "A line of images.txt is valid but ambiguous (e.g. a source without a "
                                            "tag imports :latest)."),
    # lock --check (images.lock against images.txt)
    "missing": ("LockMissing", "images.lock does not exist; `airlock lock images.txt` writes it."),
    "invalid": ("LockInvalid", "images.lock does not parse."),
    "unlocked": ("Unlocked", "An images.txt entry has no locked digest."),
    "stale": ("StaleLockEntry", "images.lock holds an image no images.txt line writes."),
    "source-changed": ("LockSourceChanged", "An entry's source differs from the one locked for its target."),
    "pinned-digest": ("LockPinnedDigest", "An entry pins a digest other than the locked one."),
    "policy-unlocked": ("PolicyUnlocked", "A tag policy has no locked tags."),
    "fingerprint": ("LockFingerprint", "images.lock was written for another version of images.txt."),
    # discover --check (Kubernetes YAML against images.txt)
    "not-mirrored": ("NotMirrored", "An image the YAML uses is not imported by any images.txt entry."),
    "not-private": ("NotPrivate", "An image reference does not point at the private registry."),
    "invalid-reference": ("InvalidReference", "An image value is not a reference (an unrendered template, empty)."),
    "unreadable-yaml": ("UnreadableYaml", "A file could not be read as YAML."),
}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


@dataclass(frozen=True)
class Annotation:
    """One finding of a check, wherever it came from: the file (None: not about a file), 1-based line and
    column (None: unknown), the rule (a key of ``RULES``), the message, and ``error`` or ``warning``."""

    file: Optional[str]
    line: Optional[int]
    column: Optional[int]
    rule: str
    message: str
    level: str = "error"


def _github_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _github_property(text: str) -> str:
    return _github_data(text).replace(":", "%3A").replace(",", "%2C")


def _azure_data(text: str) -> str:
    return text.replace("%", "%AZP25").replace("\r", "%0D").replace("\n", "%0A")


def _azure_property(text: str) -> str:
    return _azure_data(text).replace("]", "%5D").replace(";", "%3B")


def github_line(a: Annotation) -> str:
    props = [("file", a.file), ("line", a.line), ("col", a.column if a.line else None), ("title", a.rule)]
    text = ",".join(f"{k}={_github_property(str(v))}" for k, v in props if v is not None)
    return f"::{'warning' if a.level == 'warning' else 'error'} {text}::{_github_data(a.message)}"


def azure_line(a: Annotation) -> str:
    props = [("type", "warning" if a.level == "warning" else "error"), ("sourcepath", a.file),
             ("linenumber", a.line), ("columnnumber", a.column if a.line else None), ("code", a.rule)]
    text = ";".join(f"{k}={_azure_property(str(v))}" for k, v in props if v is not None)
    return f"##vso[task.logissue {text}]{_azure_data(a.message)}"


def _artifact_uri(path: str) -> str:
    """A file as a URI reference: relative paths stay relative (to the checkout, where code scanning looks
    for them), absolute ones become file:// URIs; every character outside the URI grammar is escaped."""
    pure = PurePath(path)
    if pure.is_absolute():
        return "file://" + quote(pure.as_posix(), safe="/")
    return quote(pure.as_posix(), safe="/")


def sarif_log(annotations: Iterable[Annotation], *, version: str) -> dict:
    """A SARIF 2.1.0 log with one run: the rules that occur, in ``RULES`` order, and one result each."""
    annotations = list(annotations)
    used = [rule for rule in RULES if any(a.rule == rule for a in annotations)]
    used += sorted({a.rule for a in annotations} - set(used))
    index = {rule: i for i, rule in enumerate(used)}
    rules = []
    for rule in used:
        name, text = RULES.get(rule, (rule, rule))
        rules.append({"id": rule, "name": name, "shortDescription": {"text": text},
                      "defaultConfiguration": {"level": "warning" if rule == "manifest-warning" else "error"}})
    results = []
    for a in annotations:
        result: dict = {"ruleId": a.rule, "ruleIndex": index[a.rule],
                        "level": "warning" if a.level == "warning" else "error", "message": {"text": a.message}}
        if a.file is not None:
            physical: dict = {"artifactLocation": {"uri": _artifact_uri(a.file)}}
            if a.line:
                physical["region"] = {"startLine": a.line, **({"startColumn": a.column} if a.column else {})}
            result["locations"] = [{"physicalLocation": physical}]
        results.append(result)
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "acr-airlock", "version": version, "rules": rules}},
        "columnKind": "unicodeCodePoints", "results": results}]}


def write_annotations(out: TextIO, annotations: Iterable[Annotation], fmt: str, *, version: str) -> None:
    """The annotations in ``fmt`` (``github``, ``azure`` or ``sarif``) on ``out``."""
    if fmt == "sarif":
        write_json(out, sarif_log(annotations, version=version))
        return
    line = github_line if fmt == "github" else azure_line
    for annotation in annotations:
        out.write(redact(line(annotation)) + "\n")


def check_format(args) -> str:
    """The output format of a check command: ``--format``, or ``json`` for the global ``--json``."""
    chosen = getattr(args, "format", None)
    if chosen and args.json and chosen != "json":
        from ..errors import ConfigError

        raise ConfigError(f"--json and --format {chosen} ask for two formats; give one")
    return chosen or ("json" if args.json else "text")


# -- tables ---------------------------------------------------------------------------------------

def render_summary(document: dict, *, every_row: bool = False) -> str:
    """A fixed-width table of the entries that change or failed (every entry with ``every_row``),
    then the totals."""
    lines = []
    if document["errors"]:
        for error in document["errors"]:
            where = f"line {error['line']}: " if error.get("line") else ""
            lines.append(f"{where}{error['message']}")
        lines.append(f"{problem_total(document['errors'])} error(s) in {document['manifest']['name']}; "
                     "nothing was imported")
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
    for warning in carried.warnings(document["entries"]):  # referrers that did not make it: the images did
        lines.append(f"warning: line {warning['line']}: {warning['message']}")
    s = document["summary"]
    lines.append("")
    run = f" {document['run_id']}" if document.get("run_id") else " (not recorded)"  # only ids runs show finds
    lines.append(f"{document['kind']}{run}: {document['status']} - "
                 f"{s['total']} entries: {s['new']} new, {s['update']} update, {s['unchanged']} unchanged, "
                 f"{s['error']} error; {s['imported']} imported, {s['failed']} failed "
                 f"in {document['duration_seconds']}s")
    if s.get("referrers"):
        r = s["referrers"]
        lines.append(f"referrers: {r['imported']} imported, {r['present']} already there, {r['failed']} failed, "
                     f"{r['missing']} not listed by the ACR")
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
