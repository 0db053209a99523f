"""Finding runs: the run index against reading every record, side by side on one Azurite.

RUNS records over DAYS days (FAILED_EVERY-th one failed) are saved through records.save (which
writes the index entry). Then "failed runs of the last 24 h, newest first, 20 at most" is answered
twice: from the index (handlers.runindex.list_runs: one listing with metadata) and the way it had
to be done before (list runs/, download every record, filter, sort). Also the cost of a save with
its index entry against a bare record write.
"""
from __future__ import annotations

import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone

RUNS = 600
DAYS = 10
FAILED_EVERY = 20
SAVES = 60


def _record(run_id: str, failed: bool) -> dict:
    return {"run_id": run_id, "kind": "sync", "trigger": "timer", "status": "failed" if failed else "succeeded",
            "manifest": {"name": "images.txt"}, "summary": {"total": 10, "imported": 9 if failed else 10,
                                                            "failed": 1 if failed else 0}}


def main() -> None:
    from devstack.stack import Stack
    from shared.core.runindex import PREFIX
    from shared.handlers import records, runindex
    from shared.services import Services

    with Stack(with_emulator=False) as stack:
        services = Services.from_env({**stack.env, "OUTCOMES_CONTAINER": f"bench{uuid.uuid4().hex[:8]}"})
        store, container = services.store, services.settings.outcomes_container
        now = datetime.now(timezone.utc)
        step = timedelta(days=DAYS) / RUNS
        for i in range(RUNS):
            rid = (now - i * step).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
            records.save(services, _record(rid, i % FAILED_EVERY == 0))
        since = now - timedelta(hours=24)

        def by_index() -> list[str]:
            return [r["run_id"] for r in runindex.list_runs(services, status="failed", since=since, limit=20)["runs"]]

        def by_records() -> list[str]:
            found = []
            for name in store.list_names(container, "runs/"):
                document = store.get_json(container, name)
                created = datetime.strptime(document["run_id"][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                if document["status"] == "failed" and created >= since:
                    found.append((created, document["run_id"]))
            return [rid for _, rid in sorted(found, reverse=True)[:20]]

        index_times, record_times = [], []
        for _ in range(3):  # interleaved
            t = time.perf_counter()
            a = by_index()
            index_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            b = by_records()
            record_times.append(time.perf_counter() - t)
            assert a == b, (a, b)
        i, r = statistics.median(index_times), statistics.median(record_times)

        with_index, bare = [], []
        for n in range(SAVES):  # interleaved
            rid = (now + timedelta(seconds=n)).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
            t = time.perf_counter()
            records.save(services, _record(rid, False))
            with_index.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.put_json(container, records.record_name(rid + "x"), _record(rid + "x", False))
            bare.append(time.perf_counter() - t)
        w, s = statistics.median(with_index), statistics.median(bare)
        entries = len(store.list_names(container, PREFIX))

    print(f"runs ({RUNS} runs over {DAYS} days, every {FAILED_EVERY}th failed; Azurite; medians)")
    print(f"  failed in 24 h, newest 20, from the index    {i * 1000:8.1f} ms  ({len(a)} runs)")
    print(f"  the same by reading every record             {r * 1000:8.1f} ms   ratio {r / i:.1f}x slower")
    print(f"  records.save with its index entry            {w * 1000:8.1f} ms")
    print(f"  bare record write                            {s * 1000:8.1f} ms   ratio {w / s:.2f}x "
          f"({entries} index entries)")
