"""The queued-run core (shared.core.runs): state machine, chunks, messages, deliveries, final records."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.core import runs as core

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)


def test_state_machine_moves_forward_only():
    assert core.transition("queued", "start") == "running"
    assert core.transition("running", "start") == "running"
    assert core.transition("running", "finish") == "succeeded"
    assert core.transition("running", "finish", failed=True) == "failed"
    assert core.transition("queued", "abandon") == "abandoned"
    assert core.transition("running", "abandon") == "abandoned"
    for terminal in ("succeeded", "failed", "abandoned", "invalid"):
        assert core.is_terminal(terminal)
        for event in ("start", "finish", "abandon"):
            with pytest.raises(core.RunStateError):
                core.transition(terminal, event)


@pytest.mark.parametrize("count,size,expected", [
    (0, 50, [(0, 0)]), (1, 50, [(0, 1)]), (50, 50, [(0, 50)]), (51, 50, [(0, 50), (50, 51)]),
    (5, 2, [(0, 2), (2, 4), (4, 5)]),
])
def test_chunks_cover_every_entry_once(count, size, expected):
    ranges = core.chunk_ranges(count, size)
    assert ranges == expected
    assert [i for a, b in ranges for i in range(a, b)] == list(range(count))


def test_message_round_trip_and_malformed_messages():
    message = core.ChunkMessage("r1", 1, 3, 50, 100)
    assert core.ChunkMessage.parse(message.to_json()) == message
    for bad in (b"not json", b"[]", b'{"v": 2, "run_id": "r"}', b'{"v": 1, "run_id": ""}',
                b'{"v": 1, "run_id": "r", "chunk": 3, "chunks": 3, "start": 0, "end": 1}',
                b'{"v": 1, "run_id": "r", "chunk": 0, "chunks": 1, "start": 5, "end": 1}',
                b'{"v": 1, "run_id": "r", "chunk": true, "chunks": 1, "start": 0, "end": 1}'):
        with pytest.raises(ValueError):
            core.ChunkMessage.parse(bad)


DIGEST = "sha256:" + "ab" * 32


def test_import_messages_round_trip_and_are_checked_field_by_field():
    message = core.ImportMessage("r1", 1, 3, 50, 100, "000057", "update", DIGEST, "sha256:" + "cd" * 32)
    assert core.parse_message(message.to_json()) == message
    policy = core.ImportMessage("r1", 0, 1, 0, 9, "000003~v1.2.3", "new", DIGEST, None)
    assert core.parse_message(policy.to_json()) == policy
    chunk = core.ChunkMessage("r1", 1, 3, 50, 100)
    assert core.parse_message(chunk.to_json()) == chunk  # a message without a kind is a chunk
    good = json.loads(message.to_json())
    for field, value, error in (("kind", "export", "kind"), ("key", "57", "key"), ("key", "000057/../x", "key"),
                                ("action", "unchanged", "action"), ("source_digest", "latest", "source_digest"),
                                ("source_digest", None, "source_digest"), ("target_digest", 7, "target_digest"),
                                ("chunk", 3, "chunk must be below"), ("traceparent", "00-xyz", "traceparent")):
        with pytest.raises(ValueError, match=error):
            core.parse_message(json.dumps({**good, field: value}))


def test_delivery_verdicts():
    assert core.delivery_verdict(1, 5) == "work"
    assert core.delivery_verdict(4, 5) == "work"
    assert core.delivery_verdict(5, 5) == "last"
    assert core.delivery_verdict(6, 5) == "poison"


def test_transient_failures_are_final_only_on_the_last_delivery():
    transient = {"result": "failed", "error": {"code": "HTTP429", "retryable": True}}
    permanent = {"result": "failed", "error": {"code": "SourceNotFound", "retryable": False}}
    assert not core.is_final_entry(transient, last_delivery=False)
    assert core.is_final_entry(transient, last_delivery=True)
    assert core.is_final_entry(permanent, last_delivery=False)
    assert core.is_final_entry({"result": "imported", "error": None}, last_delivery=False)


def test_staleness():
    assert not core.is_stale(T0, T0 + timedelta(seconds=60), 60)
    assert core.is_stale(T0, T0 + timedelta(seconds=61), 60)


def test_progress_mark_is_due_only_when_the_last_one_is_old():
    # a quarter of the deadline, at most 30 s
    mark = T0.isoformat()
    assert core.progress_mark_due(None, T0, 3600) and core.progress_mark_due("yesterday", T0, 3600)
    assert not core.progress_mark_due(mark, T0 + timedelta(seconds=29), 3600)
    assert core.progress_mark_due(mark, T0 + timedelta(seconds=30), 3600)
    assert not core.progress_mark_due(mark, T0 + timedelta(seconds=9), 40)
    assert core.progress_mark_due(mark, T0 + timedelta(seconds=10), 40)


def test_a_chunk_start_writes_the_record_only_when_it_changes_something():
    from shared.handlers.runs.chunk import _now, _start

    queued = {"status": "queued", "queued_at": "2026-01-01T00:00:00+00:00"}
    started = _start(dict(queued), deadline=3600)
    assert started["status"] == "running" and started["started_at"] == started["updated_at"]
    # the next chunks, moments later: nothing to write (no ETag race for nothing)
    assert _start(dict(started), deadline=3600) is None
    # a long run: the mark is refreshed once it is old, so the reaper sees progress
    old = {**started, "updated_at": (_now() - timedelta(seconds=31)).isoformat()}
    refreshed = _start(dict(old), deadline=3600)
    assert refreshed["started_at"] == started["started_at"] and refreshed["updated_at"] > old["updated_at"]


def entry(line, action="new", result="imported", retryable=None):
    error = None if retryable is None else {"code": "X", "message": "m", "retryable": retryable}
    return {"line": line, "action": action, "result": result, "error": error}


def test_final_document_lists_every_entry_once_by_line_and_decides_status():
    record = {"run_id": "r", "status": "running", "started_at": T0.isoformat(), "errors": []}
    merged = core.merge_entries([entry(2), entry(1)],
                                [entry(1, result="failed", retryable=True), entry(3, "unchanged", "unchanged")])
    document = core.final_document(record, merged, finished_at=T0 + timedelta(seconds=10))
    assert [e["line"] for e in document["entries"]] == [1, 2, 3]
    assert document["status"] == "succeeded" and document["duration_seconds"] == 10.0
    assert document["summary"] == {"new": 2, "update": 0, "unchanged": 1, "error": 0, "imported": 2, "failed": 0,
                                   "planned": 0, "drift": 0, "unverified": 0, "rejected": 0, "total": 3}
    failed = core.final_document(record, {1: entry(1, result="failed", retryable=True)}, finished_at=T0)
    assert failed["status"] == "failed" and failed["retryable"] is True
    mixed = core.final_document(record, {1: entry(1, result="failed", retryable=True),
                                         2: entry(2, result="failed", retryable=False)}, finished_at=T0)
    assert mixed["retryable"] is False
    abandoned = core.final_document(record, {}, status="abandoned", finished_at=T0)
    assert abandoned["status"] == "abandoned"
    with pytest.raises(core.RunStateError):
        core.final_document({**record, "status": "succeeded"}, {}, finished_at=T0)


def test_entries_a_tag_policy_resolved_share_a_line_but_not_a_key():
    from shared.core.runs import entry_key, in_record_order, merge_entries, outcome_key

    literal = {"line": 2, "target": "team/app:1.0", "result": "imported"}
    newest = {"line": 3, "target": "lib/nginx:1.28.0", "policy": "{semver: ^1, newest: 2}", "result": "imported"}
    older = {"line": 3, "target": "lib/nginx:1.27.2", "policy": "{semver: ^1, newest: 2}", "result": "unchanged"}
    assert entry_key(2) == outcome_key(literal) == "000002"
    assert outcome_key(newest) == entry_key(3, "1.28.0") != outcome_key(older) == entry_key(3, "1.27.2")
    merged = merge_entries([older, newest, literal], [dict(older, result="failed")])  # first source wins
    assert len(merged) == 3 and merged[outcome_key(older)]["result"] == "unchanged"
    record = {"policies": [{"line": 3, "resolved": [{"target": "lib/nginx:1.28.0"}, {"target": "lib/nginx:1.27.2"}]}]}
    assert [e["target"] for e in in_record_order(record, merged.values())] == [
        "team/app:1.0", "lib/nginx:1.28.0", "lib/nginx:1.27.2"]  # by line, then newest first as resolved


def test_an_unresolved_tag_policy_fails_the_run_retryable_only_when_its_listing_failed_transiently():
    from datetime import datetime, timezone

    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    ok = {"line": 1, "target": "team/app:1.0", "action": "unchanged", "result": "unchanged"}
    for error, retryable in (({"code": "ServiceUnavailable", "message": "503", "retryable": True}, True),
                             ({"code": "NoMatchingTag", "message": "none match"}, False)):
        record = {"status": "running", "policies": [{"line": 2, "resolved": [], "error": error}]}
        document = core.final_document(record, {"000001": ok}, finished_at=now)
        assert document["status"] == "failed" and document["retryable"] is retryable
    assert core.final_document({"status": "running", "policies": []}, {"000001": ok},
                               finished_at=now)["status"] == "succeeded"
