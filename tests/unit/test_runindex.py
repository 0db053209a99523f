"""The run index's pure part: names sort newest first, entries round-trip, filters and tokens."""
from datetime import datetime, timedelta, timezone

import pytest

from shared.core import runindex as core
from shared.errors import ValidationError

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


def test_names_sort_newest_first_and_parse_back():
    times = [NOW - timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400 * 400)]
    names = [core.index_name(t, f"run-{i}") for i, t in enumerate(times)]
    assert sorted(names) == names  # a prefix listing (name order) is newest first
    assert [core.parse_index_name(n) for n in names] == [(t, f"run-{i}") for i, t in enumerate(times)]
    assert core.parse_index_name("index/runs/garbage.json") is None


def test_creation_time_comes_from_the_run_id_so_every_save_names_the_same_blob():
    queued = {"run_id": "20261201T015130Z-b37de06c", "status": "queued"}
    finished = {**queued, "status": "failed", "started_at": "2026-12-01T01:51:33+00:00"}
    assert core.created_at(queued) == core.created_at(finished) == datetime(2026, 12, 1, 1, 51, 30,
                                                                            tzinfo=timezone.utc)
    assert core.created_at({"run_id": "custom", "started_at": "2026-12-01T01:00:00"}) == \
        datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
    assert core.created_at({"run_id": "custom"}) is None


def test_entry_round_trips_through_ascii_metadata():
    record = {"run_id": "20261201T015130Z-b37de06c", "kind": "sync", "trigger": "blob", "status": "failed",
              "manifest": {"name": "équipe/images 1.txt"}, "started_at": "2026-12-01T01:51:30+00:00",
              "finished_at": None, "summary": {"total": 5, "imported": 3, "failed": 2}}
    item = core.entry(record)
    metadata = core.to_metadata(item)
    assert all(v.isascii() for v in metadata.values()) and "finished_at" not in metadata
    name = core.index_name(core.created_at(record), record["run_id"])
    back = core.from_metadata(name, metadata)
    assert back == {**item, "created_at": "2026-12-01T01:51:30+00:00"}


@pytest.mark.parametrize("old,new,allowed", [
    (None, "queued", True), ("queued", "running", True), ("running", "failed", True),
    ("failed", "running", False), ("succeeded", "queued", False), ("abandoned", "succeeded", True),
    ("running", "running", True)])
def test_a_finished_entry_is_never_replaced_by_an_unfinished_one(old, new, allowed):
    assert core.replaces(old, new) is allowed


def test_since_durations_and_times():
    assert core.parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert core.parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert core.parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert core.parse_since("999999d", NOW) == datetime.min.replace(tzinfo=timezone.utc)
    assert core.parse_since("2026-11-30T00:00:00Z", NOW) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    for bad in ("yesterday", "24", "-1h", "1w", ""):
        with pytest.raises(ValidationError) as info:
            core.parse_since(bad, NOW)
        assert info.value.problems[0].field == "since"


def test_status_and_limit_checks():
    assert core.check_status(None) is None and core.check_status("failed") == "failed"
    with pytest.raises(ValidationError, match="status"):
        core.check_status("broken")
    assert core.check_limit(None) == 50 and core.check_limit("7") == 7
    for bad in ("0", "-1", "1001", "ten", "1.5"):
        with pytest.raises(ValidationError) as info:
            core.check_limit(bad)
        assert info.value.problems[0].field == "limit"


def test_tokens_round_trip_and_garbage_is_a_clear_error():
    token = core.encode_token("marker/123", "index/runs/0000000000001-x.json")
    assert core.decode_token(token) == ("marker/123", "index/runs/0000000000001-x.json")
    assert core.decode_token(None) == (None, None)
    for bad in ("!!!", "e30", core.encode_token(None, "runs/elsewhere.json"), "bm90IGpzb24"):
        with pytest.raises(ValidationError) as info:
            core.decode_token(bad)
        assert info.value.problems[0].field == "next"
