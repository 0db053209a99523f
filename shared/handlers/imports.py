"""Import requests: JSON bodies as manifests, and ``run_manifest``, a whole run in this process.

A JSON body is either an array of ``{source, target}`` (``manifest_from_json``; entry i is line i + 1) or
an object ``{"manifest": "<images.txt text>", "lock": "<images.lock text>"}`` (``import_request``): a
manifest with its lock, run as the blob trigger runs the pair (the locked digests are imported).

``run_manifest`` serves plans (``?plan=true``, ``plan``) and unrecorded syncs (``sync --no-record``).
Recorded runs go through ``handlers.runs``: queued for every trigger, checkpointed in-process for the
CLI's ``sync``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from ..core.outcome import RunRecord
from ..errors import Problem, ValidationError
from . import records
from .sync import SyncEngine

log = logging.getLogger(__name__)

MAX_JSON_ENTRIES = 5000


def run_manifest(services, text, *, name: str, trigger: str, apply: bool = True,
                 run_id: Optional[str] = None, progress=None, save: bool = True, lock: Optional[bytes] = None) -> dict:
    """One whole run (with the manifest's ``lock``, when it has one); returns the outcome record (saved,
    with ``record_url``, when ``save``)."""
    record: RunRecord = SyncEngine(services).run(text, name=name, trigger=trigger, apply=apply,
                                                 run_id=run_id, progress=progress, lock=lock)
    document = record.to_dict()
    if save:
        document["record_url"] = records.save(services, document)
    log.info("%s run %s of %s: %s %s", document["kind"], document["run_id"], name, document["status"],
             document["summary"])
    return document


def manifest_from_json(items) -> str:
    """``[{"source": ..., "target": ...}, ...]`` -> manifest text (entry i is line i + 1).

    Shape errors are reported with JSON-pointer fields (``/3/source``); reference errors come
    later from the manifest parser as line numbers, which ``problems_for_json`` turns into pointers.
    """
    problems: list[Problem] = []
    if not isinstance(items, list):
        raise ValidationError("body must be a JSON array of {source, target}",
                              [Problem("expected an array", field="/")])
    if len(items) > MAX_JSON_ENTRIES:
        raise ValidationError("too many entries", [Problem(f"at most {MAX_JSON_ENTRIES} entries", field="/")])
    lines = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem("expected an object with source and target", field=f"/{index}"))
            lines.append("")
            continue
        unknown = sorted(set(item) - {"source", "target"})
        if unknown:
            problems.append(Problem(f"unknown field(s): {', '.join(unknown)}", field=f"/{index}"))
        source, target = item.get("source"), item.get("target")
        if not isinstance(source, str) or not source.strip():
            problems.append(Problem("is required and must be a non-empty string", field=f"/{index}/source"))
        if target is not None and (not isinstance(target, str) or not target.strip()):
            problems.append(Problem("must be a non-empty string when given", field=f"/{index}/target"))
        for key in ("source", "target"):
            value = item.get(key)
            if isinstance(value, str) and ("\n" in value or "#" in value or "=>" in value):
                problems.append(Problem("must not contain newlines, '#' or '=>'", field=f"/{index}/{key}"))
        if isinstance(source, str):
            lines.append(f"{source.strip()} => {target.strip()}" if isinstance(target, str) else source.strip())
        else:
            lines.append("")
    if problems:
        raise ValidationError("invalid import request", problems)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ImportRequest:
    """What a JSON body asks to import: the manifest text, its lock (None: unlocked), and the form it came
    in (``items``: an array of entries, whose manifest problems are reported as ``/index`` pointers)."""

    manifest: str
    lock: Optional[bytes] = None
    items: bool = False

    def problems(self, errors: list[Problem], lock_name: str) -> list[Problem]:
        """Manifest and lock problems as JSON pointers into this body (the line stays, for the text)."""
        if self.items:
            return problems_for_json([{"line": p.line, "message": str(p)} for p in errors])
        return [Problem(p.message, line=p.line, field="/lock" if p.field == lock_name else "/manifest")
                for p in errors]


def import_request(data) -> ImportRequest:
    """A parsed JSON body of ``POST /api/imports``: an array of ``{source, target}`` or an object
    ``{"manifest": str, "lock": str | null}``. Shape errors raise ValidationError with JSON-pointer fields."""
    if isinstance(data, list):
        return ImportRequest(manifest_from_json(data), items=True)
    if not isinstance(data, dict):
        raise ValidationError("body must be a JSON array of {source, target} or an object {manifest, lock}",
                              [Problem("expected an array or an object", field="/")])
    problems = [Problem("unknown field; use manifest and lock", field=f"/{key}")
                for key in sorted(set(data) - {"manifest", "lock"})]
    manifest, lock = data.get("manifest"), data.get("lock")
    if not isinstance(manifest, str) or not manifest.strip():
        problems.append(Problem("is required: the images.txt text", field="/manifest"))
    if lock is not None and (not isinstance(lock, str) or not lock.strip()):
        problems.append(Problem("must be the images.lock text when given", field="/lock"))
    if problems:
        raise ValidationError("invalid import request", problems)
    return ImportRequest(manifest, None if lock is None else lock.encode("utf-8", "surrogatepass"))


def problems_for_json(errors: list[dict]) -> list[Problem]:
    """Manifest errors of a JSON request, pointing at ``/index`` instead of line numbers."""
    out = []
    for error in errors:
        line = error.get("line")
        message = error["message"]
        prefix = f"line {line}: "
        if line and message.startswith(prefix):
            message = message[len(prefix):]
        out.append(Problem(message, field=f"/{line - 1}" if line else "/"))
    return out
