"""Hostile YAML documents for the safe-loader tests (each small, each costly to a naive reader)."""
from __future__ import annotations


def nested_brackets(depth: int = 1000) -> str:
    """``rules: [[[[...]]]]``: ~2 KB that recurses past Python's limit in a naive composer."""
    return "rules: " + "[" * depth + "]" * depth + "\n"


def nul_byte() -> bytes:
    return b"rules:\n  - name: a\x00b\n"


def merge_bomb(levels: int = 7, width: int = 6, size: int = 814) -> str:
    """Merge keys referring to merge keys: each level repeats the one below ``width`` times.

    PyYAML flattens merges in place on shared nodes, so the work grows as ``width ** levels``;
    a comment pads the file to ``size`` bytes.
    """
    lines = ["l0: &l0 {a: 1, b: 2, c: 3, d: 4}"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"l{i}: &l{i} {{<<: [{refs}], k{i}: {i}}}")
    body = "\n".join(lines) + "\nrules: []\n"
    pad = size - len(body) - 2
    return "#" + "x" * max(pad, 0) + "\n" + body


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": each level is a list of ``width`` aliases of the level below."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\nrules: []\n"


def wide_alias_bomb(count: int = 5000) -> str:
    """Many aliases of one big anchor: linear in size, but each expands to the whole anchor."""
    anchor = "big: &big [" + ", ".join(str(i) for i in range(200)) + "]\n"
    return anchor + "refs: [" + ", ".join(["*big"] * count) + "]\nrules: []\n"
