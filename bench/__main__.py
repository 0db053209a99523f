"""Benchmarks: figures side by side in one run, printed as ratios. Not pass/fail.

    python -m bench            # everything
    python -m bench coldstart  # import cost of function_app and the first HTTP request
    python -m bench sync       # 200 entries / 20 changed vs the seed script's way
    python -m bench plan       # a 1,000-entry plan: wall time and peak memory
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from . import coldstart, plan, sync

    chosen = argv or ["coldstart", "sync", "plan"]
    for name in chosen:
        {"coldstart": coldstart.main, "sync": sync.main, "plan": plan.main}[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
