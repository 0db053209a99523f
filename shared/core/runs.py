"""Queued runs: the run state machine, chunking, queue-message shape and final-record assembly.

Pure code: no I/O, no clock (callers pass ``now``), no azure.*. The adapters move messages and blobs;
``shared.handlers.runs`` orchestrates; this module decides.

State machine of a run record (``status``)::

    queued ──start──> running ──finish──> succeeded | failed
       │                 │
       └─────abandon─────┴──────────────> abandoned      (the reaper: no progress past the deadline)

``invalid`` is written directly by a trigger for a manifest that did not validate (never queued).
Terminal states never change again; ``transition`` refuses anything else.

A run of N entries is split into ``ceil(N / chunk_size)`` chunks (at least one, so an empty manifest
still finishes); each chunk is one queue message (``ChunkMessage``) and is planned on its own. A
queued chunk does not import: each entry it plans as new or updated goes back to the queue as an
``ImportMessage`` of its own, so the unit of queued work is the unit of slow work (one import, 10-30 s
on Azure): one slow import never holds other entries' message, instances share the imports evenly,
the platform's scale controller sees the real backlog, and a redelivery redoes one import, not a
chunk. A chunk is complete when each of its entries has a final outcome; the run is final when every
chunk is complete; the record then lists every entry exactly once, by line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Optional

from . import referrers as carried
from .trust.verdict import counts as verification_counts

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
ABANDONED = "abandoned"
INVALID = "invalid"
TERMINAL = frozenset({SUCCEEDED, FAILED, ABANDONED, INVALID})

_TRANSITIONS = {
    (QUEUED, "start"): RUNNING,
    (RUNNING, "start"): RUNNING,      # a redelivered chunk, or a second chunk of a fanned-out run
    (QUEUED, "abandon"): ABANDONED,
    (RUNNING, "abandon"): ABANDONED,
}

MESSAGE_VERSION = 1


class RunStateError(ValueError):
    """A transition the state machine does not allow (e.g. anything out of a terminal state)."""


def transition(status: str, event: str, *, failed: bool = False) -> str:
    """The status after ``event`` ("start", "finish", "abandon"); ``failed`` decides a finish."""
    if event == "finish" and status in (QUEUED, RUNNING):
        return FAILED if failed else SUCCEEDED
    try:
        return _TRANSITIONS[(status, event)]
    except KeyError:
        raise RunStateError(f"a {status} run cannot {event}") from None


def is_terminal(status: Optional[str]) -> bool:
    return status in TERMINAL


def chunk_ranges(entry_count: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` half-open index ranges covering ``entry_count`` entries; at least one."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if entry_count <= 0:
        return [(0, 0)]
    count = math.ceil(entry_count / chunk_size)
    return [(i * chunk_size, min(entry_count, (i + 1) * chunk_size)) for i in range(count)]


@dataclass(frozen=True)
class ChunkMessage:
    """One queue message: a chunk of a run's entries (indexes into the parsed manifest snapshot)."""

    run_id: str
    chunk: int
    chunks: int
    start: int
    end: int

    def to_json(self) -> str:
        return json.dumps({"v": MESSAGE_VERSION, "run_id": self.run_id, "chunk": self.chunk,
                           "chunks": self.chunks, "start": self.start, "end": self.end}, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | bytes) -> "ChunkMessage":
        """The message, or ValueError naming what is wrong (a malformed message never becomes valid)."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if data.get("v") != MESSAGE_VERSION:
            raise ValueError(f"unsupported message version {data.get('v')!r}")
        if not isinstance(data.get("run_id"), str) or not data["run_id"]:
            raise ValueError("run_id: expected a non-empty string")
        for key in ("chunk", "chunks", "start", "end"):
            if not isinstance(data.get(key), int) or isinstance(data.get(key), bool) or data[key] < 0:
                raise ValueError(f"{key}: expected a whole number >= 0")
        if not data["chunk"] < data["chunks"] or data["start"] > data["end"]:
            raise ValueError("chunk must be below chunks, and start at most end")
        return cls(data["run_id"], data["chunk"], data["chunks"], data["start"], data["end"])


_KEY = re.compile(r"\d{6}(~[\w][\w.-]{0,127})?")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
IMPORT_ACTIONS = ("new", "update")
MAX_VERIFICATION_BYTES = 16 * 1024  # a verdict is a few hundred bytes; require: all lists up to 20 parts


@dataclass(frozen=True)
class ImportMessage:
    """One queue message: the import of one planned entry, sent by its chunk. The entry is named by its
    key within the chunk's range of the manifest snapshot (a message cannot name an image the reviewed
    manifest does not list); the digests are those its chunk planned (exactly that digest is imported)."""

    run_id: str
    chunk: int
    chunks: int
    start: int
    end: int
    key: str
    action: str
    source_digest: str
    target_digest: Optional[str] = None
    traceparent: Optional[str] = None  # W3C trace context of the chunk delivery that sent it
    upstream_digest: Optional[str] = None  # a locked entry's tag upstream when it drifted (its record shows it)
    drifted: bool = False  # a locked entry whose tag moved upstream (upstream_digest None: the tag is gone)
    verification: Optional[dict] = None  # the signature verdict its chunk made (trust policy), for the record

    def to_json(self) -> str:
        data = {"v": MESSAGE_VERSION, "kind": "import", "run_id": self.run_id, "chunk": self.chunk,
                "chunks": self.chunks, "start": self.start, "end": self.end, "key": self.key, "action": self.action,
                "source_digest": self.source_digest, "target_digest": self.target_digest}
        if self.traceparent:
            data["traceparent"] = self.traceparent
        if self.drifted:
            data["drift"] = {"upstream": self.upstream_digest}
        if self.verification:
            data["verification"] = self.verification
        return json.dumps(data, separators=(",", ":"))


def parse_message(text: str | bytes) -> ChunkMessage | ImportMessage:
    """A run-queue message of either kind, or ValueError naming what is wrong."""
    chunk = ChunkMessage.parse(text)  # the fields both kinds share, checked the same way
    data = json.loads(text)
    kind = data.get("kind", "chunk")
    if kind == "chunk":
        return chunk
    if kind != "import":
        raise ValueError(f"kind: expected 'chunk' or 'import', not {kind!r}")
    key, action = data.get("key"), data.get("action")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("key: expected an entry key (6 digits, then optionally ~tag)")
    if action not in IMPORT_ACTIONS:
        raise ValueError(f"action: expected one of {', '.join(IMPORT_ACTIONS)}")
    source, target = data.get("source_digest"), data.get("target_digest")
    if not isinstance(source, str) or not _DIGEST.fullmatch(source):
        raise ValueError("source_digest: expected a digest (algorithm:hex)")
    if target is not None and (not isinstance(target, str) or not _DIGEST.fullmatch(target)):
        raise ValueError("target_digest: expected a digest (algorithm:hex) or null")
    parent = data.get("traceparent")
    if parent is not None and (not isinstance(parent, str) or not _TRACEPARENT.fullmatch(parent)):
        raise ValueError("traceparent: expected a W3C traceparent")
    drift = data.get("drift")
    upstream = drift.get("upstream") if isinstance(drift, dict) else None
    if drift is not None and (not isinstance(drift, dict) or (upstream is not None and (
            not isinstance(upstream, str) or not _DIGEST.fullmatch(upstream)))):
        raise ValueError("drift: expected {\"upstream\": a digest or null}")
    verification = data.get("verification")
    if verification is not None and (not isinstance(verification, dict) or not isinstance(
            verification.get("status"), str) or len(json.dumps(verification)) > MAX_VERIFICATION_BYTES):
        raise ValueError(f"verification: expected a verdict object (at most {MAX_VERIFICATION_BYTES} bytes)")
    return ImportMessage(chunk.run_id, chunk.chunk, chunk.chunks, chunk.start, chunk.end, key, action, source,
                         target, parent, upstream, drift is not None, verification)


def delivery_verdict(dequeue_count: int, max_dequeue: int) -> str:
    """"work" (retries remain), "last" (transient failures become final, retryable), or "poison"."""
    if dequeue_count > max_dequeue:
        return "poison"
    if dequeue_count >= max_dequeue:
        return "last"
    return "work"


def is_stale(updated_at: datetime, now: datetime, deadline_seconds: float) -> bool:
    """No progress for longer than the deadline (the reaper abandons such a run)."""
    return (now - updated_at).total_seconds() > deadline_seconds


def progress_mark_due(updated_at: Optional[str], now: datetime, deadline_seconds: float) -> bool:
    """Whether a chunk starting now must mark progress on a running record: only when its last mark
    (``updated_at``, ISO 8601; missing or unreadable counts as old) is older than a quarter of the
    deadline (at most 30 s). Chunks start by the dozen at once; each writing the record made them
    queue on its ETag for nothing, while a mark this recent already keeps the reaper away."""
    try:
        last = datetime.fromisoformat(updated_at) if updated_at else None
    except ValueError:
        last = None
    return last is None or (now - last).total_seconds() >= min(30.0, deadline_seconds / 4)


def is_final_entry(entry: dict, *, last_delivery: bool) -> bool:
    """An entry outcome is final unless it failed on something transient and retries remain."""
    error = entry.get("error") or {}
    return not (entry.get("result") == "failed" and error.get("retryable") and not last_delivery)


def summarise(entries: Iterable[dict]) -> dict:
    """Counts by planned action and by result, as ``RunRecord.summary`` (shared.core.outcome); with
    ``referrers`` counts when entries carried referrers."""
    entries = list(entries)
    counts = {"new": 0, "update": 0, "unchanged": 0, "error": 0, "imported": 0, "failed": 0, "planned": 0,
              "drift": 0}
    total = 0
    entries = list(entries)
    for entry in entries:
        total += 1
        counts["drift"] += bool(entry.get("drift"))
        if entry.get("action") in counts:
            counts[entry["action"]] += 1
        if entry.get("result") in ("imported", "failed", "planned"):
            counts[entry["result"]] += 1
    summary = {**counts, **verification_counts(entries), "total": total}
    referrers = carried.summarise(entries)
    if referrers is not None:
        summary["referrers"] = referrers
    return summary


def entry_key(line: int, policy_tag: Optional[str] = None) -> str:
    """An entry's identity in a run: its line, and for an entry a tag policy resolved (several share the
    policy's line) the resolved tag too. Sorts by line; safe in a blob name (tags are ``[\\w.-]``)."""
    return f"{int(line):06d}" + (f"~{policy_tag}" if policy_tag else "")


def outcome_key(outcome: dict) -> str:
    """``entry_key`` of an entry outcome document (``EntryOutcome.to_dict``)."""
    tag = outcome["target"].rsplit(":", 1)[1] if outcome.get("policy") else None
    return entry_key(outcome["line"], tag)


def in_record_order(record: dict, entries: Iterable[dict]) -> list[dict]:
    """Entry outcomes by line; a tag policy's resolved entries in the order it resolved them (newest
    first), as an in-process run lists them."""
    rank = {(p["line"], r["target"]): i for p in record.get("policies") or [] for i, r in enumerate(p["resolved"])}
    return sorted(entries, key=lambda e: (int(e["line"]), rank.get((int(e["line"]), e.get("target")), 0)))


def merge_entries(*sources: Iterable[dict]) -> dict[str, dict]:
    """Entry outcomes by key; the first source that has a key wins (sources in order of authority)."""
    merged: dict[str, dict] = {}
    for source in sources:
        for entry in source:
            merged.setdefault(outcome_key(entry), entry)
    return merged


def final_document(record: dict, entries: dict[str, dict], *, status: Optional[str] = None,
                   finished_at: datetime, errors: Optional[list] = None) -> dict:
    """The terminal record: every entry once (by key: line, and resolved tag), summary, status (or
    ``status`` when given, e.g. abandoned), ``retryable`` when everything that failed failed on
    something transient. A tag policy that could not be resolved (its ``error``) fails the run."""
    ordered = in_record_order(record, entries.values())
    failed = [e for e in ordered if e.get("result") == "failed"]
    # a policy that could not be resolved fails the run; retryable when its listing failed transiently
    failed += [{"error": {"retryable": bool(p["error"].get("retryable"))}}
               for p in record.get("policies") or [] if p.get("error")]
    if status is None:
        status = transition(record.get("status", RUNNING), "finish", failed=bool(failed))
    started = record.get("started_at") or record.get("queued_at")
    policies = [_with_digests(p, ordered) for p in record.get("policies") or []]
    document = {**record, "status": status, "entries": ordered, "summary": summarise(ordered),
                "retryable": bool(failed) and all((e.get("error") or {}).get("retryable") for e in failed),
                "finished_at": finished_at.isoformat(), "updated_at": finished_at.isoformat()}
    if started:
        document["duration_seconds"] = round((finished_at - datetime.fromisoformat(started)).total_seconds(), 3)
    if errors:
        document["errors"] = list(record.get("errors") or []) + list(errors)
    carried_warnings = carried.warnings(ordered)
    if carried_warnings:  # referrers that could not be carried: the images landed, so the run still succeeds
        document["warnings"] = list(record.get("warnings") or []) + carried_warnings
    if policies:
        document["policies"] = policies
    return document


def _with_digests(policy: dict, entries: list[dict]) -> dict:
    """A tag policy's resolution with each resolved tag's source digest, from the entries' outcomes."""
    digests = {e["target"]: e.get("source_digest") for e in entries if e.get("policy") and e["line"] == policy["line"]}
    return {**policy, "resolved": [{**r, "digest": digests.get(r["target"], r.get("digest"))}
                                   for r in policy.get("resolved", [])]}
