"""A plan of 1,000 entries against the local registries: wall time and peak memory of the process
(target: under 5 s and under 150 MB), next to the offline check of the same file for scale.

The 1,000 source tags are in the upstream registry; the ACR already holds 900 of them with the
same digest and 100 with another, so the plan reads every digest and finds 900 unchanged and 100
updates."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .common import push_backing, push_base, run_cli, running_stack, tag_many

ENTRIES = 1000


def main() -> None:
    with running_stack(import_latency=0) as stack:
        manifest, media_type = push_base(stack, "bench/plan", seed="p1")
        tags = [f"v{i}" for i in range(ENTRIES)]
        tag_many(stack, "bench/plan", manifest, media_type, tags)
        same, _ = push_backing(stack, "bench/plan", seed="p1")
        other, _ = push_backing(stack, "bench/plan", seed="p2")
        tag_many(stack, "bench/plan", same, media_type, tags[100:], backing=True)
        tag_many(stack, "bench/plan", other, media_type, tags[:100], backing=True)
        text = "".join(f"{stack.upstream_host}/bench/plan:{t} => bench/plan\n" for t in tags)
        env = {"SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "images.txt"
            path.write_text(text)
            wall, peak, result = run_cli(env, "plan", str(path), "--json")
            if result.returncode not in (0, 1):
                raise SystemExit(result.stderr)
            document = json.loads(result.stdout)
            check_wall, _, _ = run_cli(env, "manifest", "check", str(path))
    counts = document["summary"]
    print(f"plan of {ENTRIES} entries (fresh process, CLI, PLAN_CONCURRENCY default)")
    print(f"  plan wall time                  {wall:6.2f} s   (target < 5 s)  -> "
          f"{counts['unchanged']} unchanged, {counts['update']} update, {counts['error']} error")
    print(f"  peak RSS of the plan process    {peak:6.1f} MiB (target < 150 MB)")
    print(f"  offline manifest check alone    {check_wall:6.2f} s   ratio plan/check {wall / check_wall:.1f}x")
