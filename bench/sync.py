"""200 entries of which 20 changed, with the emulator's import latency set to L.

Target for acr-airlock: wall time within ceil(20 / concurrency) * L + 2 s. Side by side in the
same run, the same manifest the seed script's way: every entry imported with --force, one after
the other, no digest skip, and a sleep after each import (the script's 15 s scaled down 100x to
0.15 s, stated in the output).
"""
from __future__ import annotations

import math
import os
import time

from .common import push_base, running_stack, tag_many

ENTRIES = 200
CHANGED = 20
LATENCY = float(os.environ.get("BENCH_IMPORT_LATENCY", "1.0"))
CONCURRENCY = 8
SEED_SLEEP = 15.0 / 100


def main() -> None:
    from shared.adapters.acr import ImportRequest
    from shared.handlers.imports import run_manifest
    from shared.services import Services

    with running_stack(import_latency=0) as stack:
        old, media_type = push_base(stack, "bench/sync", seed="s1")
        new, _ = push_base(stack, "bench/sync", seed="s2")
        tags = [f"v{i}" for i in range(ENTRIES)]
        tag_many(stack, "bench/sync", old, media_type, tags)
        text = "".join(f"{stack.upstream_host}/bench/sync:{t} => bench/sync\n" for t in tags)
        services = Services.from_env({**stack.env, "SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host,
                                      "SYNC_CONCURRENCY": str(CONCURRENCY)})
        first = run_manifest(services, text, name="bench.txt", trigger="cli", save=False)
        assert first["summary"]["imported"] == ENTRIES, first["summary"]

        tag_many(stack, "bench/sync", new, media_type, tags[:CHANGED])  # 20 tags move upstream
        stack.settings(import_latency=LATENCY)
        started = time.perf_counter()
        second = run_manifest(services, text, name="bench.txt", trigger="cli", save=False)
        ours = time.perf_counter() - started
        summary = second["summary"]
        assert summary["update"] == CHANGED and summary["imported"] == CHANGED, summary

        # the seed script's way: sequential, --force for every entry, no skip, a sleep after each
        started = time.perf_counter()
        for tag in tags:
            request = ImportRequest(registry_uri=stack.upstream_host, source_image=f"bench/sync:{tag}",
                                    target_tags=[f"bench/sync:{tag}"], untagged_repositories=[], mode="Force")
            services.acr.import_image(request, timeout=600)
            time.sleep(SEED_SLEEP)
        seed_way = time.perf_counter() - started

    target = math.ceil(CHANGED / CONCURRENCY) * LATENCY + 2
    print(f"sync: {ENTRIES} entries, {CHANGED} changed, import latency L = {LATENCY:g} s, concurrency {CONCURRENCY}")
    print(f"  acr-airlock (plan + {CHANGED} imports)     {ours:7.2f} s   target <= {target:.2f} s "
          f"(ceil({CHANGED}/{CONCURRENCY}) * L + 2)")
    print(f"  seed script's way ({ENTRIES} sequential --force imports, sleep 15 s scaled to {SEED_SLEEP:g} s)"
          f"  {seed_way:7.2f} s")
    print(f"  ratio seed way / acr-airlock            {seed_way / ours:7.1f}x")
