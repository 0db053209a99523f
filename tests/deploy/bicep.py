"""Just enough reading of Bicep text for the template tests (no compiler can be had here).

Blocks are found by balanced braces/brackets, skipping quoted strings and // comments; an object's
entries are its top-level ``key: value`` pairs, values kept as source text. ``literal`` turns
``'text'`` into text (with ``${...}`` kept) and returns None for any other expression.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RESOURCE = re.compile(r"^resource\s+(\w+)\s+'([A-Za-z0-9./]+)@([0-9a-z-]+)'\s*(existing\s*)?=", re.M)
MODULE = re.compile(r"^module\s+(\w+)\s+'([^']+)'\s*=", re.M)
PARAM = re.compile(r"^param\s+(\w+)\s+(\w+)(?:\s*=\s*(.+))?$", re.M)
VAR = re.compile(r"^var\s+(\w+)\s*=\s*", re.M)
OUTPUT = re.compile(r"^output\s+(\w+)\s+\w+\s*=\s*(.+)$", re.M)


@dataclass
class Block:
    kind: str          # "resource" or "module"
    symbol: str
    target: str        # resource type, or module path
    version: str       # API version ("" for modules)
    existing: bool
    body: str          # the text between the braces (or brackets of a loop), braces included


def strip_comments(text: str) -> str:
    out, i, quote = [], 0, False
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def balanced(text: str, start: int) -> str:
    """The text from the first { or [ at/after ``start`` to its matching close, inclusive."""
    opens = {"{": "}", "[": "]", "(": ")"}
    i = start
    while text[i] not in "{[":
        i += 1
    stack, quote, j = [], False, i
    while j < len(text):
        c = text[j]
        if quote:
            if c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c in opens:
            stack.append(opens[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return text[i:j + 1]
        j += 1
    raise ValueError(f"unbalanced block at {start}")


def read(path: Path) -> str:
    return strip_comments(path.read_text())


def blocks(text: str) -> list[Block]:
    found = []
    for m in RESOURCE.finditer(text):
        found.append(Block("resource", m.group(1), m.group(2), m.group(3), bool(m.group(4)), balanced(text, m.end())))
    for m in MODULE.finditer(text):
        found.append(Block("module", m.group(1), m.group(2), "", False, balanced(text, m.end())))
    return found


def entries(obj: str) -> dict[str, str]:
    """Top-level ``key: value`` pairs of an object literal ``{ ... }`` (values as source text)."""
    inner = obj.strip()
    if inner.startswith("[") and " for " in inner[:200]:
        inner = inner[inner.index(":", inner.index(" for ")) + 1:].strip()  # a resource loop's body
    assert inner.startswith("{"), inner[:80]
    inner = inner[1:-1]
    result, depth, quote = {}, 0, False
    pieces, current = [], []
    for c in inner:
        if quote:
            current.append(c)
            if c == "'":
                quote = False
            continue
        if c == "'":
            quote = True
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        if depth == 0 and c in "\n,":
            pieces.append("".join(current))
            current = []
            continue
        current.append(c)
    pieces.append("".join(current))
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        m = re.match(r"^('[^']*'|[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.*)$", piece, re.S)
        if m:
            key = m.group(1).strip("'")
            result[key] = m.group(2).strip()
    return result


def literal(value: str):
    value = value.strip()
    if len(value) >= 2 and value[0] == "'" and value[-1] == "'" and "'" not in value[1:-1]:
        return value[1:-1]
    return None


def string_list(value: str) -> list[str] | None:
    value = value.strip()
    if not (value.startswith("[") and value.endswith("]")):
        return None
    items = [v for v in re.split(r"[\s,]+", value[1:-1].strip()) if v]
    out = [literal(v) for v in items]
    return None if any(v is None for v in out) else out


def params(text: str) -> dict[str, tuple[str, str | None]]:
    """{name: (type, default source text or None)}."""
    return {m.group(1): (m.group(2), m.group(3).strip() if m.group(3) else None) for m in PARAM.finditer(text)}


def var(text: str, name: str) -> str:
    for m in VAR.finditer(text):
        if m.group(1) == name:
            rest = text[m.end():]
            if rest.lstrip()[:1] in "{[":
                return balanced(text, m.end())
            return rest.split("\n", 1)[0].strip()
    raise KeyError(name)


def variables(text: str) -> dict[str, str]:
    out = {}
    for m in VAR.finditer(text):
        rest = text[m.end():]
        out[m.group(1)] = balanced(text, m.end()) if rest.lstrip()[:1] in "{[" else rest.split("\n", 1)[0].strip()
    return out


def outputs(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip() for m in OUTPUT.finditer(text)}


def find_key(body: str, key: str) -> list[str]:
    """Values of ``key:`` anywhere in a block (source text; objects/arrays balanced)."""
    found = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(key)}\s*:\s*", body):
        rest = body[m.end():]
        if rest[:1] in "{[":
            found.append(balanced(body, m.end()))
        else:
            found.append(rest.split("\n", 1)[0].strip())
    return found


def decorators(text: str, param: str) -> list[str]:
    """The @decorator lines right above ``param <name>``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^param\s+{param}\b", line):
            found = []
            j = i - 1
            while j >= 0 and lines[j].startswith("@"):
                found.append(lines[j].split("(", 1)[0])
                j -= 1
            return found
    raise KeyError(param)
