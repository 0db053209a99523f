"""Import runs for every trigger: validate, plan, apply, record.

``run_manifest`` is the synchronous whole run (blob trigger, timer, CLI). ``RunLauncher`` starts
the same run on a worker thread for the HTTP API, so that a caller gets a run id at once and can
wait for the result or poll ``GET /api/runs/{id}``; a "running" record is written before the
work starts so the id is never unknown.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Optional

from ..core.outcome import RunRecord
from ..errors import Problem, ValidationError
from ..telemetry import ContextThreadPoolExecutor as ThreadPoolExecutor  # runs keep the request's log context
from . import records
from .sync import SyncEngine, new_run_id

log = logging.getLogger(__name__)

MAX_JSON_ENTRIES = 5000


def run_manifest(services, text, *, name: str, trigger: str, apply: bool = True,
                 run_id: Optional[str] = None, progress=None, save: bool = True) -> dict:
    """One whole run; returns the outcome record (saved, with ``record_url``, when ``save``)."""
    record: RunRecord = SyncEngine(services).run(text, name=name, trigger=trigger, apply=apply,
                                                 run_id=run_id, progress=progress)
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


class RunLauncher:
    """Runs imports on worker threads of this process (at most ``workers`` at once)."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run")
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def start(self, services, text, *, name: str, trigger: str) -> tuple[str, Future]:
        run_id = new_run_id()
        records.save(services, {"run_id": run_id, "kind": "sync", "trigger": trigger, "status": "running",
                                "manifest": {"name": name}})
        future = self._pool.submit(self._run, services, text, name, trigger, run_id)
        with self._lock:
            self._futures[run_id] = future
        return run_id, future

    def _run(self, services, text, name, trigger, run_id) -> dict:
        try:
            return run_manifest(services, text, name=name, trigger=trigger, run_id=run_id)
        except Exception:
            log.exception("run %s failed unexpectedly", run_id)
            records.save(services, {"run_id": run_id, "kind": "sync", "trigger": trigger, "status": "failed",
                                    "manifest": {"name": name},
                                    "errors": [{"message": "internal error; see the function logs"}]})
            raise
        finally:
            with self._lock:
                self._futures.pop(run_id, None)
