"""Hostile rule files: PyYAML's plain SafeLoader beside the bounded loader the rule file uses.

    python -m bench yaml

For each document (tests/unit/yaml_bombs.py): wall time and tracemalloc peak of
``yaml.load(text, Loader=yaml.SafeLoader)`` (what the rule file used before) and of
``shared.core.rules.parse_rules`` (which now ends in a line-numbered problem), in one process.
"""
from __future__ import annotations

import time
import tracemalloc


def _measure(fn) -> tuple[float, int, str]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        fn()
        outcome = "parsed"
    except BaseException as exc:  # noqa: BLE001 - what each reader ends in is the figure
        outcome = type(exc).__name__
        problems = getattr(exc, "problems", None)
        if problems:
            outcome += f": {problems[0]}"
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak, outcome


def main() -> None:
    import yaml

    from shared.core.rules import parse_rules
    from tests.unit import yaml_bombs

    documents = {
        "1,000 nested brackets": yaml_bombs.nested_brackets(),
        "a NUL byte": yaml_bombs.nul_byte(),
        "814-byte merge-key bomb": yaml_bombs.merge_bomb(),
        "billion laughs (9x9 aliases)": yaml_bombs.alias_bomb(),
    }
    print("yaml: rule-file bombs, plain SafeLoader vs the bounded loader (tracemalloc peak)")
    for name, text in documents.items():
        size = len(text if isinstance(text, bytes) else text.encode())
        naive = _measure(lambda: yaml.load(text, Loader=yaml.SafeLoader))
        safe = _measure(lambda: parse_rules(text))
        ratio = naive[0] / safe[0] if safe[0] else float("inf")
        print(f"  {name} ({size} B)")
        print(f"    SafeLoader : {naive[0] * 1000:9.1f} ms {naive[1] / 2**20:8.2f} MiB  {naive[2][:90]}")
        print(f"    rules      : {safe[0] * 1000:9.1f} ms {safe[1] / 2**20:8.2f} MiB  {safe[2][:90]}")
        print(f"    time ratio : {ratio:,.0f}x")
    _discover_throughput()


def _discover_throughput() -> None:
    """discover's reader: the bounded loader over libyaml beside the pure-Python one, same input."""
    from pathlib import Path

    from shared.core.safeyaml import FastSafeLoader, SafeLoader, compose_all

    chart = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "discover" / "shop.yaml").read_text()
    text = chart * 300
    timings = {}
    for loader in (SafeLoader, FastSafeLoader):
        started = time.perf_counter()
        documents = sum(1 for _ in compose_all(text, loader=loader))
        timings[loader.__name__] = time.perf_counter() - started
    size = len(text.encode()) / 2**20
    print(f"yaml: discover's reader on {size:.2f} MiB of rendered chart ({documents} documents)")
    for name, seconds in timings.items():
        print(f"  {name:15}: {seconds:6.2f} s  ({size / seconds:5.2f} MiB/s)")
    print(f"  ratio          : {timings['SafeLoader'] / timings['FastSafeLoader']:.1f}x")
