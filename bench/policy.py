"""Offline costs of a manifest's checks: the allow-list, tag-policy patterns, a policy's selection.

    python -m bench policy

1. ``allow-list``: ``parse_manifest`` of 5,000 entries against a 5,000-entry allow-list (every
   entry's registry is the list's last entry, the worst case for a scan), beside the entry-by-entry
   way it was checked before (every entry normalised and walked the whole list: 51.7 s in issue
   20), timed on a sample of entries and extrapolated linearly.
2. ``patterns``: one full match of adversarial patterns (``(a|aa)*b``, ``(a+)+b``) against runs of
   ``a`` of growing length: RE2 (what policies use) beside Python's backtracking ``re``, which is
   stopped once one match takes over a second. Tags are at most 128 characters; the longer inputs
   show RE2's time per character staying bounded (linear in the length; RE2 changes strategy on
   long inputs, hence the lower figure there), while the backtracker's multiplies per character.
3. ``selection``: a policy choosing its newest 3 among 10,000 tags (the most a policy scans).
"""
from __future__ import annotations

import re
import statistics
import time

ENTRIES = 5000
ALLOWED = 5000
SAMPLE = 200
REPEATS = 5


def _best(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _allow_list() -> None:
    from shared.core.manifest import AllowList, parse_manifest, registry_allowed

    allowed = [f"r{i}.example.org" for i in range(ALLOWED - 1)] + ["quay.io"]
    text = "".join(f"quay.io/team/app{i}:1.0\n" for i in range(ENTRIES))
    result = None

    def parse() -> None:
        nonlocal result
        result = parse_manifest(text, allowed_registries=allowed, max_entries=ENTRIES)

    wall = _best(parse, 3)
    assert result is not None and result.ok and len(result.entries) == ENTRIES
    build = _best(lambda: AllowList.parse(allowed), 3)
    sample = [f"quay.io/team/app{i}" for i in range(SAMPLE)]
    # the entry-by-entry way: each check normalises and walks the whole list (registry_allowed with
    # a plain list does exactly that; parse_manifest did it for every entry)
    per_entry = _best(lambda: [registry_allowed("quay.io", allowed) for _ in sample], 1) / SAMPLE
    old = per_entry * ENTRIES
    print(f"1. allow-list: {ENTRIES:,} entries against {ALLOWED:,} allowed registries (offline parse_manifest)")
    print(f"  parse_manifest, whole file      {wall:8.3f} s   (allow-list parsed once: {build * 1000:.1f} ms)")
    print(f"  entry by entry, as before       {old:8.1f} s   ({per_entry * 1000:.2f} ms an entry x {ENTRIES:,}, "
          f"measured on {SAMPLE}) ratio {old / wall:,.0f}x")


def _patterns() -> None:
    from shared.core.tagpolicy import compile_pattern

    print("2. adversarial patterns, one full match of 'a' * n (no match): RE2 beside Python's re")
    for pattern in (r"(a|aa)*b", r"(a+)+b"):
        compiled = compile_pattern(pattern)
        backtracking = re.compile(pattern)
        print(f"  {pattern}")
        for n in (16, 128, 1_000, 10_000, 100_000, 1_000_000):
            text = "a" * n
            assert not compiled.fullmatch(text)
            seconds = _best(lambda: compiled.fullmatch(text), 7 if n <= 10_000 else 3)
            print(f"    RE2       n={n:>9,}  {seconds * 1e6:10.1f} us  {seconds * 1e9 / n:6.1f} ns a character")
        previous = None
        for n in range(12, 64, 2):
            text = "a" * n
            started = time.perf_counter()
            backtracking.fullmatch(text)
            seconds = time.perf_counter() - started
            growth = f"x{seconds / previous:5.1f} for +2 characters" if previous else ""
            print(f"    Python re n={n:>9,}  {seconds * 1e6:10.1f} us  {growth}")
            previous = seconds
            if seconds > 1:
                print(f"    Python re stopped at n={n}: the time multiplies with each character; a 128-character "
                      "tag would not return")
                break


def _selection() -> None:
    from shared.core.tagpolicy import MAX_TAGS_SCANNED, parse_policy

    tags = [f"{major}.{minor}.{patch}{suffix}" for major in range(1, 5) for minor in range(50) for patch in range(25)
            for suffix in ("", "-alpine")][:MAX_TAGS_SCANNED]
    tags += [f"v{t}" for t in tags][:MAX_TAGS_SCANNED - len(tags)]
    print(f"3. a policy choosing its newest 3 among {len(tags):,} tags")
    for body in ("semver: >=1.25 <4, newest: 3", r"regex: v?\d+\.\d+\.\d+, newest: 3",
                 r"regex: \d+\.\d+\.\d+-(alpine|slim), exclude: 4\..*, newest: 3",
                 r"semver: ~2.10, exclude: 2\.10\.(1|2)\d, newest: 3"):
        policy = parse_policy(body)
        chosen = policy.select(tags)
        seconds = statistics.median(_best(lambda: policy.select(tags), 1) for _ in range(REPEATS))
        print(f"  {{{body}}}: {seconds * 1000:7.1f} ms -> {', '.join(chosen)}")


def main() -> None:
    _allow_list()
    _patterns()
    _selection()
