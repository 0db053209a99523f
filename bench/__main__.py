"""Benchmarks: figures side by side in one run, printed as ratios. Not pass/fail.

    python -m bench            # everything
    python -m bench coldstart  # import cost of function_app and the first HTTP request
    python -m bench sync       # 200 entries / 20 changed vs the seed script's way
    python -m bench plan       # a 1,000-entry plan: wall time and peak memory
    python -m bench standin    # the stand-in's start-up time and one emulated import
    python -m bench yaml       # rule-file bombs: plain SafeLoader vs the bounded loader
    python -m bench policy     # offline: 5,000 entries x 5,000 allowed registries, RE2 on adversarial
                               # patterns beside Python's re, a policy over 10,000 tags
    python -m bench runindex   # finding failed runs: the run index vs reading every record
    python -m bench probe      # imports finished by the data-plane probe vs by their operation
    python -m bench referrers  # one entry without referrers vs with 1 and 8: one extra import round
    python -m bench trust      # 1,000 signed entries (cosign key and keyless) planned with and without
                               # signature verification, cold and warm verdict cache (not in "everything")
    python -m bench runs       # queued runs, 1,000 entries / 100 changed, 1 vs 4 runner processes,
                               # probe vs LRO polling, 24 vs 8 imports per instance (azure timing
                               # profile; about a quarter of an hour; not in "everything"); then
                               # 1,000/500, 1,000/100 and 10,000/1,000 changed with 2 s copies: worker
                               # CPU per import as ratios (BENCH_SCENARIOS=9,10,11 runs only those)
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from . import coldstart, plan, policy, probe, referrers, runindex, runs, standin, sync, trust, yamlbombs

    benches = {"standin": standin.main, "coldstart": coldstart.main, "plan": plan.main, "sync": sync.main,
               "yaml": yamlbombs.main, "runindex": runindex.main, "probe": probe.main,
               "policy": policy.main, "referrers": referrers.main}
    explicit = {"runs": runs.main, "trust": trust.main}  # too long for "everything"
    for name in argv or list(benches):
        if name in explicit:
            explicit[name]()
            continue
        if name not in benches:
            print(f"unknown benchmark {name!r}; choose from {', '.join([*benches, *explicit])}", file=sys.stderr)
            return 2
        benches[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
