"""Just enough reading of Bicep text for the template tests (no compiler can be had here).

Blocks are found by balanced braces/brackets, skipping quoted strings and // comments; an object's
entries are its top-level ``key: value`` pairs, values kept as source text. ``literal`` turns
``'text'`` into text (with ``${...}`` kept) and returns None for any other expression. ``evaluate``
computes an expression (a variable, a module parameter) for parameter values a test gives, so that a
test can hold a template's logic to cases (a subset of the language: see FUNCTIONS and _Parser; what it
cannot read raises NotImplementedError). It is not ARM: functions of the deployment (uniqueString(),
subscription(), reference()) are values the test supplies.
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
    loop = re.match(r"\[\s*for\b", inner)
    if loop:
        inner = inner[inner.index(":", loop.end()) + 1:].strip()[:-1].strip()  # a resource loop's body
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


def statement(text: str, start: int) -> str:
    """The expression from ``start`` to the end of its line, continuing over lines while a bracket is open."""
    depth, quote, j = 0, False, start
    while j < len(text):
        c = text[j]
        if quote:
            if c == "\\":
                j += 1
            elif c == "'":
                quote = False
        elif c == "'":
            quote = True
        elif c in "{[(":
            depth += 1
        elif c in "}])":
            depth -= 1
        elif c == "\n" and depth <= 0:
            break
        j += 1
    return text[start:j].strip()


def var(text: str, name: str) -> str:
    for m in VAR.finditer(text):
        if m.group(1) == name:
            return statement(text, m.end())
    raise KeyError(name)


def variables(text: str) -> dict[str, str]:
    return {m.group(1): statement(text, m.end()) for m in VAR.finditer(text)}


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


# -- evaluating expressions --------------------------------------------------------------------------
# Enough of Bicep's expression language to evaluate a variable such as main.bicep's `operators` for
# given parameter values: literals (strings with ${} interpolation), arrays, objects, parameters and
# variables, ! && || ?? == != =~ !~, the ternary, member and index access, lambdas, and the functions in
# FUNCTIONS. Anything else raises NotImplementedError, so a template that outgrows this fails loudly.

TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                   r"|(?P<op>=>|==|!=|=~|!~|&&|\|\||\?\?|\.\?|<=|>=|[()\[\]{},:?.!<>]))")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    text = text.strip()
    while i < len(text):
        m = TOKEN.match(text, i)
        if not m or m.end() == i:
            raise NotImplementedError(f"cannot read {text[i:i + 30]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        i = m.end()
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def _string(raw: str, scope) -> str:
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            out.append({"n": "\n", "t": "\t"}.get(body[i + 1], body[i + 1]))
            i += 2
        elif body.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                depth += {"{": 1, "}": -1}.get(body[j], 0)
                j += 1
            out.append(str(evaluate(body[i + 2:j - 1], scope)))
            i = j
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _union(*values):
    if all(isinstance(v, dict) for v in values):
        merged = {}
        for v in values:
            merged.update(v)
        return merged
    out = []
    for v in values:
        for item in v:
            if item not in out:
                out.append(item)
    return out


FUNCTIONS = {
    "empty": lambda v: v is None or len(v) == 0,
    "toLower": lambda v: v.lower(),
    "toUpper": lambda v: v.upper(),
    "concat": lambda *vs: "".join(vs) if all(isinstance(v, str) for v in vs) else [x for v in vs for x in v],
    "union": _union,
    "contains": lambda c, v: (v.lower() in c.lower()) if isinstance(c, str) else (v in c),
    "length": len,
    "take": lambda v, n: v[:n],
    "split": lambda v, sep: v.split(sep),
    "filter": lambda items, f: [x for x in items if f(x)],
    "map": lambda items, f: [f(x) for x in items],
    "items": lambda obj: [{"key": k, "value": v} for k, v in obj.items()],
    "toObject": lambda items, k, v=None: {k(x): (v(x) if v else x) for x in items},
    "objectKeys": lambda obj: list(obj),
    "trim": lambda v: v.strip(),
    "join": lambda items, sep: sep.join(items),
    "replace": lambda v, old, new: v.replace(old, new),
    "last": lambda v: v[-1],
    "json": lambda v: __import__("json").loads(v),
    "base64ToString": lambda v: __import__("base64").b64decode(v).decode("utf-8"),
}


class Scope:
    """Names an expression can use: parameters given by the test, then the template's variables."""

    def __init__(self, template: str, values: dict):
        self.template, self.values = template, dict(values)

    def get(self, name: str):
        if name in self.values:
            return self.values[name]
        declared = variables(self.template)
        if name in declared:
            self.values[name] = evaluate(declared[name], self)
            return self.values[name]
        default = params(self.template).get(name, (None, None))[1]
        if default is not None:
            return evaluate(default, self)
        raise KeyError(f"{name}: no value given and no variable or parameter default")

    def child(self, name: str, value) -> "Scope":
        scope = Scope(self.template, self.values)
        scope.values[name] = value
        return scope


def evaluate(expression: str, scope: Scope):
    parser = _Parser(_tokens(expression), scope)
    value = parser.expression()
    if parser.i != len(parser.tokens):
        raise NotImplementedError(f"unread: {parser.tokens[parser.i:][:5]}")
    return value


class _Parser:
    """A recursive-descent reader that evaluates as it reads; the branch of a ternary not taken is read
    without being evaluated (``skip``), as ARM evaluates only the branch its condition selects."""

    LEVELS = [("||",), ("&&",), ("==", "!=", "=~", "!~"), ("<", ">", "<=", ">=")]

    def __init__(self, tokens, scope):
        self.tokens, self.i, self.scope, self.skip = tokens, 0, scope, 0

    def peek(self, offset=0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", "")

    def take(self, value=None):
        token = self.peek()
        if value is not None and token[1] != value:
            raise NotImplementedError(f"expected {value!r}, found {token[1]!r}")
        self.i += 1
        return token

    def skipped(self, read):
        self.skip += 1
        try:
            read()
        finally:
            self.skip -= 1

    def expression(self):
        condition = self.coalesce()
        if self.peek()[1] != "?":
            return condition
        self.take("?")
        if condition or self.skip:
            value = self.expression()
            self.take(":")
            self.skipped(self.expression)
        else:
            self.skipped(self.expression)
            self.take(":")
            value = self.expression()
        return value

    def coalesce(self):
        value = self.binary(0)
        while self.peek()[1] == "??":
            self.take()
            other = self.binary(0)
            value = other if value is None else value
        return value

    def binary(self, level):
        if level == len(self.LEVELS):
            return self.unary()
        value = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self.LEVELS[level]:
            op = self.take()[1]
            other = self.binary(level + 1)
            if self.skip:
                continue
            if op == "||":
                value = bool(value) or bool(other)
            elif op == "&&":
                value = bool(value) and bool(other)
            elif op in ("=~", "!~"):
                same = str(value).lower() == str(other).lower()
                value = same if op == "=~" else not same
            else:
                value = {"==": value == other, "!=": value != other, "<": value < other, ">": value > other,
                         "<=": value <= other, ">=": value >= other}[op]
        return value

    def unary(self):
        if self.peek()[1] == "!":
            self.take()
            value = self.unary()
            return None if self.skip else not value
        return self.postfix(self.primary())

    def postfix(self, value):
        while True:
            token = self.peek()[1]
            if token in (".", ".?"):
                self.take()
                name = self.take()[1]
                if not self.skip:
                    value = (value or {}).get(name) if token == ".?" else value[name]
            elif token == "[":
                self.take()
                index = self.expression()
                self.take("]")
                if not self.skip:
                    value = value[index]
            else:
                return value

    def primary(self):
        kind, text = self.take()
        if kind == "string":
            return None if self.skip else _string(text, self.scope)
        if kind == "number":
            return int(text)
        if kind == "name":
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            if self.peek()[1] == "(":
                return self.call(text)
            return None if self.skip else self.scope.get(text)
        if text == "(":
            value = self.expression()
            self.take(")")
            return value
        if text == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.expression())
                if self.peek()[1] == ",":
                    self.take()
            self.take("]")
            return items
        if text == "{":
            obj = {}
            while self.peek()[1] != "}":
                key_kind, key = self.take()
                key = _string(key, self.scope) if key_kind == "string" and not self.skip else key
                self.take(":")
                obj[key] = self.expression()
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
            return obj
        raise NotImplementedError(f"unexpected {text!r}")

    def call(self, name):
        if name not in FUNCTIONS:
            raise NotImplementedError(f"function {name}()")
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            if self.peek()[0] == "name" and self.peek(1)[1] == "=>":
                args.append(self.lambda_())
            else:
                args.append(self.expression())
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return None if self.skip else FUNCTIONS[name](*args)

    def lambda_(self):
        name = self.take()[1]
        self.take("=>")
        start = self.i
        self.skipped(self.expression)  # read now, evaluated per item
        body = self.tokens[start:self.i]

        def apply(value):
            return _Parser(body, self.scope.child(name, value)).expression()
        return apply
