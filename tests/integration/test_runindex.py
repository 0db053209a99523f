"""The run index against Azurite: written by records.save, listed newest first without reading records,
paged with tokens, stopping at --since; the CLI's runs list."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.core import runindex as core
from shared.errors import ValidationError
from shared.handlers import records, runindex
from shared.services import Services

ROOT = Path(__file__).resolve().parents[2]
BASE = datetime(2026, 11, 20, 8, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def services(stack, airlock_env):
    env = {**airlock_env, "OUTCOMES_CONTAINER": f"idx{uuid.uuid4().hex[:10]}"}
    return Services.from_env(env)


def run_id(minutes: int) -> str:
    return (BASE + timedelta(minutes=minutes)).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def record(rid: str, status: str, *, trigger: str = "blob", failed: int = 0) -> dict:
    return {"run_id": rid, "kind": "sync", "trigger": trigger, "status": status,
            "manifest": {"name": "images.txt"}, "summary": {"total": 3, "imported": 3 - failed, "failed": failed}}


def index_names(services) -> list[str]:
    return services.store.list_names(services.settings.outcomes_container, core.PREFIX)


def test_saves_of_one_run_update_one_entry_and_never_regress(services):
    rid = run_id(0)
    for status in ("queued", "running", "failed"):
        records.save(services, record(rid, status, failed=1))
    records.save(services, record(rid, "running"))  # a late, stale save
    [name] = index_names(services)
    assert name == core.index_name(BASE, rid)
    [entry] = runindex.list_runs(services)["runs"]
    assert entry["status"] == "failed" and entry["failed"] == 1 and entry["run_id"] == rid
    assert records.load(services, rid)["status"] == "running"  # the record is the record; only the index holds


def test_list_is_newest_first_filtered_and_stops_at_since(services, monkeypatch):
    ids = {m: run_id(m) for m in range(0, 50, 5)}  # ten runs, five minutes apart
    for m, rid in ids.items():
        records.save(services, record(rid, "failed" if m % 10 == 0 else "succeeded", failed=1 if m % 10 == 0 else 0))
    newest_first = [ids[m] for m in sorted(ids, reverse=True)]
    assert [r["run_id"] for r in runindex.list_runs(services, limit=100)["runs"]] == newest_first
    failed = runindex.list_runs(services, status="failed", limit=100)["runs"]
    assert [r["run_id"] for r in failed] == [ids[m] for m in (40, 30, 20, 10, 0)]
    recent = runindex.list_runs(services, since=BASE + timedelta(minutes=30), limit=100)["runs"]
    assert [r["run_id"] for r in recent] == [ids[m] for m in (45, 40, 35, 30)]

    # paging: storage pages of 2, then 3 names, pages of 4 runs; the tokens walk every run exactly once
    monkeypatch.setattr(runindex, "PAGES", (2, 3))
    seen, token, pages = [], None, 0
    while True:
        page = runindex.list_runs(services, limit=4, token=token)
        seen += [r["run_id"] for r in page["runs"]]
        pages += 1
        token = page["next"]
        if token is None:
            break
    assert seen == newest_first and pages in (3, 4)

    # listing reads the index only: with the records gone it still answers
    for rid in ids.values():
        services.store.delete(services.settings.outcomes_container, records.record_name(rid))
    assert len(runindex.list_runs(services, limit=100)["runs"]) == 10


def test_bad_token_and_status_are_validation_errors(services):
    with pytest.raises(ValidationError):
        runindex.list_runs(services, token="garbage")
    with pytest.raises(ValidationError):
        runindex.list_runs(services, status="nope")


def cli(*args, env_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACR_", "IDENTITY_"))}
    return subprocess.run([sys.executable, "-m", "shared", "--env-file", str(env_file), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_runs_list(services, stack, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(stack.env_text() + f"\nOUTCOMES_CONTAINER={services.settings.outcomes_container}\n")
    now = datetime.now(timezone.utc)
    old = (now - timedelta(days=3)).strftime("%Y%m%dT%H%M%SZ-") + "aaaaaaaa"
    fresh = (now - timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ-") + "bbbbbbbb"
    newest = (now - timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ-") + "cccccccc"
    records.save(services, record(old, "failed", failed=2))
    records.save(services, record(fresh, "failed", failed=1, trigger="timer"))
    records.save(services, record(newest, "succeeded"))

    result = cli("runs", "list", "--status", "failed", "--since", "24h", "--json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)["runs"]] == [fresh]

    table = cli("runs", "list", "--limit", "2", env_file=env_file)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN", "CREATED", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == [newest, fresh]
    assert "1/3" in lines[2] and "timer" in lines[2]

    bad = cli("runs", "list", "--since", "yesterday", env_file=env_file)
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
