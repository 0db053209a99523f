"""Tag policies: an ``images.txt`` entry that names a rule instead of one tag. Pure: no I/O.

Syntax (the part after the repository's ``:`` is in braces, which the tag grammar
``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`` never contains, so a policy can never be read as a tag)::

    registry.k8s.io/ingress-nginx/controller:{semver: ~1.11, newest: 2} => ingress-nginx/controller
    nginx:{semver: >=1.25 <2, newest: 3}
    quay.io/jetstack/cert-manager-controller:{regex: "v1\\.15\\.[0-9]+", newest: 2}
    ghcr.io/org/app:{semver: ^2.0.0-0, prerelease: true}

* ``KEY: VALUE`` pairs separated by ``,``. Keys: ``semver`` *or* ``regex`` (exactly one),
  ``newest`` (how many matching tags to keep, 1-``MAX_NEWEST``; default 1), ``prerelease``
  (``true``/``false``; semver only, default false). A value may be double-quoted; a value that
  contains ``,`` or ``}`` must be (a quoted value cannot contain ``"``, which no tag contains).
* ``semver``: npm-style ranges: comparators ``=``, ``>``, ``>=``, ``<``, ``<=`` separated by spaces
  (all must hold), ``~1.27`` (>=1.27.0 <1.28.0), ``^1.2.3`` (>=1.2.3 <2.0.0), partial versions and
  ``x`` wildcards (``1.27``, ``1.27.x``, ``1.x``, ``*``), alternatives joined by ``||``. A tag takes
  part when it is ``[v]MAJOR.MINOR.PATCH[-PRERELEASE]`` (``1.27``, ``latest`` or ``1.27.3_x`` never
  match); a pre-release (``1.28.0-rc.1``; also a suffix such as ``1.27.3-alpine``, which semver
  reads as one) is left out unless ``prerelease: true``. Newest = highest semver precedence.
* ``regex``: the pattern must match the *whole* tag. Newest = highest natural version order
  (runs of digits compared as numbers: ``1.27.10`` after ``1.27.9``; ``20240105`` after ``20231231``).
  The pattern is the whole ask: pre-release suffixes it matches are taken.

Bounded cost (checked offline by ``manifest check``):

* a policy is at most ``MAX_POLICY_CHARS`` characters, a semver range at most ``MAX_COMPARATORS``
  comparators, a pattern at most ``MAX_PATTERN_CHARS`` characters;
* a pattern is a small, backtracking-safe dialect of Python ``re``: literals, ``.``, classes
  ``[...]``, escapes ``\\d \\w \\s \\D \\W \\S`` and escaped punctuation, groups ``(...)``/``(?:...)``,
  ``|``, anchors, and quantifiers ``* + ? {m} {m,} {m,n}`` (n <= 128) on single characters or
  classes. Refused: back-references, look-around, flags and other ``(?`` forms, lazy/possessive
  quantifiers, any quantifier on a group except ``?`` on a group without quantifiers inside (so no
  nested repetition: no exponential backtracking), more than ``MAX_VARIABLE_QUANTIFIERS``
  variable quantifiers in one pattern, and more than ``MAX_CHOICES`` choice points (variable
  quantifiers and ``|`` together: a chain of groups such as ``(a|aa)(a|aa)...`` backtracks
  exponentially without any quantifier). Matching is ``fullmatch`` against tags of at most 128
  characters, so the worst case is polynomial and small (about 1 ms per tag for the worst
  3-quantifier pattern on CPython 3.11, typically microseconds);
* the number of tags a policy scans is capped by the caller (``MAX_TAGS_SCANNED``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

__all__ = ["PolicySyntaxError", "TagPolicy", "parse_policy", "MAX_TAGS_SCANNED"]

MAX_POLICY_CHARS = 512
MAX_PATTERN_CHARS = 256
MAX_COMPARATORS = 16
MAX_NEWEST = 50
MAX_VARIABLE_QUANTIFIERS = 3
MAX_CHOICES = 3  # variable quantifiers plus '|' alternatives: each is a point a backtracker retries
MAX_REPEAT = 128
MAX_TAGS_SCANNED = 10_000
KEYS = ("semver", "regex", "newest", "prerelease")


class PolicySyntaxError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- versions ----------------------------------------------------------------------------------

_VERSION = re.compile(r"v?(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
                      r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")


@dataclass(frozen=True, order=False)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple = ()

    def key(self) -> tuple:
        # semver precedence: a release sorts after its pre-releases; numeric identifiers sort
        # before alphanumeric ones and compare as numbers
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)


def parse_version(tag: str) -> Optional[Version]:
    """``[v]MAJOR.MINOR.PATCH[-PRERELEASE]`` -> Version; anything else -> None."""
    match = _VERSION.fullmatch(tag)
    if not match:
        return None
    pre = tuple(match.group(4).split(".")) if match.group(4) else ()
    return Version(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)


_PARTIAL = re.compile(r"v?(?:([0-9]{1,9}|[xX*])(?:\.([0-9]{1,9}|[xX*])(?:\.([0-9]{1,9}|[xX*])"
                      r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?)?)?)")
_COMPARATOR = re.compile(r"(>=|<=|>|<|=|~|\^)?\s*(\S+)")


def _partial(text: str) -> tuple[list[Optional[int]], tuple]:
    match = _PARTIAL.fullmatch(text)
    if not match or match.group(1) is None:
        raise PolicySyntaxError(f"{text!r} is not a version (MAJOR[.MINOR[.PATCH[-PRERELEASE]]], "
                                "x for any)")
    parts: list[Optional[int]] = []
    for group in match.groups()[:3]:
        if group is None or group in "xX*":
            parts.append(None)
        else:
            parts.append(int(group))
    # once a part is a wildcard, the rest are too (1.x.3 means 1.x)
    for i in range(1, 3):
        if parts[i - 1] is None:
            parts[i] = None
    pre = tuple(match.group(4).split(".")) if match.group(4) else ()
    if pre and None in parts:
        raise PolicySyntaxError(f"{text!r}: a pre-release needs a full MAJOR.MINOR.PATCH")
    return parts, pre


def _v(major: int, minor: int = 0, patch: int = 0, pre: tuple = ()) -> tuple:
    return Version(major, minor, patch, pre).key()


def _lowest_pre(major: int, minor: int, patch: int) -> tuple:
    """The lowest possible version of MAJOR.MINOR.PATCH (below all of its pre-releases): ``X.Y.Z-0``."""
    return _v(major, minor, patch, ("0",))


Bound = tuple  # (op, version key)


def _comparator(op: str, text: str) -> list[Bound]:
    parts, pre = _partial(text)
    major, minor, patch = parts
    if major is None:
        return [] if op in ("", "=", ">=", "<=", "~", "^") else [("<", _v(0, 0, 0, ("0",)))]
    exact = minor is not None and patch is not None
    if op in ("", "="):
        if exact:
            return [("=", _v(major, minor, patch, pre))]
        if minor is None:
            return [(">=", _lowest_pre(major, 0, 0)), ("<", _lowest_pre(major + 1, 0, 0))]
        return [(">=", _lowest_pre(major, minor, 0)), ("<", _lowest_pre(major, minor + 1, 0))]
    if op == "~":
        low = _v(major, minor or 0, patch or 0, pre)
        if minor is None:
            return [(">=", low), ("<", _lowest_pre(major + 1, 0, 0))]
        return [(">=", low), ("<", _lowest_pre(major, minor + 1, 0))]
    if op == "^":
        low = _v(major, minor or 0, patch or 0, pre)
        if major > 0 or minor is None:
            return [(">=", low), ("<", _lowest_pre(major + 1, 0, 0))]
        if minor > 0 or patch is None:
            return [(">=", low), ("<", _lowest_pre(0, minor + 1, 0))]
        return [(">=", low), ("<", _lowest_pre(0, 0, patch + 1))]
    if op == ">=":
        return [(">=", _v(major, minor or 0, patch or 0, pre) if exact else _lowest_pre(major, minor or 0, 0))]
    if op == "<":
        return [("<", _v(major, minor, patch, pre) if exact else _lowest_pre(major, minor or 0, 0))]
    if op == ">":
        if exact:
            return [(">", _v(major, minor, patch, pre))]
        return [(">=", _lowest_pre(major + 1, 0, 0) if minor is None else _lowest_pre(major, minor + 1, 0))]
    if op == "<=":
        if exact:
            return [("<=", _v(major, minor, patch, pre))]
        return [("<", _lowest_pre(major + 1, 0, 0) if minor is None else _lowest_pre(major, minor + 1, 0))]
    raise PolicySyntaxError(f"unknown operator {op!r}")  # pragma: no cover - the regex allows no other


def parse_range(text: str) -> tuple[tuple[Bound, ...], ...]:
    """An npm-style range -> alternatives, each a tuple of bounds that must all hold."""
    text = text.strip()
    if not text:
        raise PolicySyntaxError("semver range is empty")
    alternatives = []
    count = 0
    for alternative in text.split("||"):
        alternative = alternative.strip()
        if not alternative:
            raise PolicySyntaxError(f"semver range {text!r} has an empty alternative around '||'")
        bounds: list[Bound] = []
        position = 0
        while position < len(alternative):
            if alternative[position].isspace():
                position += 1
                continue
            match = _COMPARATOR.match(alternative, position)
            assert match is not None  # \S+ always matches a non-space character
            count += 1
            if count > MAX_COMPARATORS:
                raise PolicySyntaxError(f"semver range has more than {MAX_COMPARATORS} comparators")
            bounds.extend(_comparator(match.group(1) or "", match.group(2)))
            position = match.end()
        alternatives.append(tuple(bounds))
    return tuple(alternatives)


def _holds(bound: Bound, key: tuple) -> bool:
    op, limit = bound
    return {"=": key == limit, ">": key > limit, ">=": key >= limit,
            "<": key < limit, "<=": key <= limit}[op]


# --- the safe regular-expression dialect -------------------------------------------------------

_SIMPLE_ESCAPES = frozenset("dDwWsS")
_QUANTIFIER_BRACES = re.compile(r"\{([0-9]{1,3})(,([0-9]{0,3}))?\}")


def check_pattern(pattern: str) -> re.Pattern:
    """Refuse backtracking-prone constructs (see the module docstring); return the compiled pattern."""
    if not pattern:
        raise PolicySyntaxError("regex is empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PolicySyntaxError(f"regex is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
    # stack of groups: each records whether it contains a quantifier
    stack: list[bool] = [False]
    variable = choices = 0
    last: Optional[str] = None  # "atom", "group:<has quantifier>", "quantifier" or None
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise PolicySyntaxError("regex ends with a lone '\\'")
            nxt = pattern[i + 1]
            if nxt.isalnum() and nxt not in _SIMPLE_ESCAPES:
                raise PolicySyntaxError(
                    f"regex escape '\\{nxt}' is not allowed (back-references and special escapes are "
                    "refused; allowed: \\d \\w \\s \\D \\W \\S and escaped punctuation)")
            last = "atom"
            i += 2
            continue
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    if j + 1 < n and pattern[j + 1].isalnum() and pattern[j + 1] not in _SIMPLE_ESCAPES:
                        raise PolicySyntaxError(f"regex escape '\\{pattern[j + 1]}' is not allowed in a class")
                    j += 1
                elif pattern[j] == "[":
                    raise PolicySyntaxError("regex: nested '[' in a character class is not allowed")
                j += 1
            if j >= n:
                raise PolicySyntaxError("regex has an unclosed '['")
            last = "atom"
            i = j + 1
            continue
        if ch == "(":
            if pattern.startswith("(?", i):
                if not pattern.startswith("(?:", i):
                    raise PolicySyntaxError("regex: only plain groups '(...)' and '(?:...)' are allowed "
                                            "(no look-around, flags or named groups)")
                i += 3
            else:
                i += 1
            stack.append(False)
            last = None
            continue
        if ch == ")":
            if len(stack) == 1:
                raise PolicySyntaxError("regex has an unmatched ')'")
            inner = stack.pop()
            stack[-1] = stack[-1] or inner
            last = "group:quantified" if inner else "group:plain"
            i += 1
            continue
        if ch in "*+?{":
            if ch == "{":
                match = _QUANTIFIER_BRACES.match(pattern, i)
                if not match:
                    last = "atom"  # a literal '{' (Python re reads it so)
                    i += 1
                    continue
                low = int(match.group(1))
                high = match.group(3)
                if match.group(2) and high == "":
                    is_variable, bounded_high = True, None
                else:
                    bounded_high = int(high) if high else low
                    is_variable = bounded_high != low
                    if bounded_high < low:
                        raise PolicySyntaxError(f"regex quantifier {match.group(0)} has max below min")
                if (bounded_high or low) > MAX_REPEAT:
                    raise PolicySyntaxError(f"regex quantifier {match.group(0)}: at most {MAX_REPEAT}")
                end = match.end()
            else:
                is_variable = True
                end = i + 1
            if last is None:
                raise PolicySyntaxError(f"regex quantifier '{pattern[i:end]}' has nothing to repeat")
            if last == "quantifier":
                raise PolicySyntaxError("regex: a quantifier after a quantifier (nested, lazy or possessive "
                                        "repetition) is not allowed")
            if last.startswith("group"):
                if ch != "?" or last == "group:quantified":
                    raise PolicySyntaxError(
                        "regex: repeating a group is not allowed (only '?' on a group without "
                        "quantifiers inside); repeat single characters or classes instead")
            if is_variable:
                variable += 1
                choices += 1
                if choices > MAX_CHOICES:
                    raise PolicySyntaxError(f"regex has more than {MAX_CHOICES} choice points ('|' and variable "
                                            "quantifiers together)")
                if variable > MAX_VARIABLE_QUANTIFIERS:
                    raise PolicySyntaxError(
                        f"regex has more than {MAX_VARIABLE_QUANTIFIERS} variable quantifiers (*, +, ?, {{m,n}})")
            stack[-1] = True
            last = "quantifier"
            i = end
            continue
        if ch == "|":
            choices += 1
            if choices > MAX_CHOICES:
                raise PolicySyntaxError(f"regex has more than {MAX_CHOICES} choice points ('|' and variable "
                                        "quantifiers together); use a character class for single characters")
            last = None
            i += 1
            continue
        last = None if ch in "^$" else "atom"
        i += 1
    if len(stack) != 1:
        raise PolicySyntaxError("regex has an unclosed '('")
    try:
        return re.compile(pattern, re.ASCII)
    except re.error as e:
        raise PolicySyntaxError(f"invalid regex: {e}") from None


_NATURAL = re.compile(r"[0-9]+|[^0-9]+")


def natural_key(tag: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _NATURAL.findall(tag))


# --- the policy --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TagPolicy:
    """A parsed policy; ``text`` is the normalised form shown in records."""

    kind: str                 # "semver" | "regex"
    expression: str
    newest: int = 1
    prerelease: bool = False

    @property
    def text(self) -> str:
        value = f'"{self.expression}"' if any(c in self.expression for c in ',}"') or self.kind == "regex" \
            else self.expression
        out = f"{self.kind}: {value}, newest: {self.newest}"
        if self.prerelease:
            out += ", prerelease: true"
        return "{" + out + "}"

    def _ranges(self):
        return parse_range(self.expression)

    def matches(self, tag: str) -> bool:
        return self.select([tag]) == [tag]

    def select(self, tags: Iterable[str]) -> list[str]:
        """The newest ``newest`` matching tags, newest first."""
        if self.kind == "semver":
            ranges = self._ranges()
            found = []
            for tag in tags:
                version = parse_version(tag)
                if version is None or (version.prerelease and not self.prerelease):
                    continue
                key = version.key()
                if any(all(_holds(b, key) for b in alternative) for alternative in ranges):
                    found.append((key, tag))
        else:
            pattern = check_pattern(self.expression)
            found = [(natural_key(tag), tag) for tag in tags if len(tag) <= 128 and pattern.fullmatch(tag)]
        found.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
        return [tag for _, tag in found[:self.newest]]


def _split_items(body: str) -> list[tuple[str, str]]:
    """``key: value, key: "value"`` -> [(key, value)]; a scanner, no backtracking."""
    items = []
    i, n = 0, len(body)
    while i < n:
        while i < n and body[i].isspace():
            i += 1
        if i >= n:
            break
        colon = body.find(":", i)
        if colon == -1:
            raise PolicySyntaxError(f"expected KEY: VALUE in policy, found {body[i:].strip()!r}")
        key = body[i:colon].strip()
        i = colon + 1
        while i < n and body[i] == " ":
            i += 1
        if i < n and body[i] == '"':
            close = body.find('"', i + 1)
            if close == -1:
                raise PolicySyntaxError(f"unclosed '\"' in the value of {key!r}")
            value = body[i + 1:close]
            i = close + 1
            while i < n and body[i].isspace():
                i += 1
            if i < n and body[i] != ",":
                raise PolicySyntaxError(f"expected ',' after the quoted value of {key!r}")
        else:
            comma = body.find(",", i)
            end = n if comma == -1 else comma
            value = body[i:end].strip()
            i = end
        i += 1  # the comma
        items.append((key, value))
    return items


def parse_policy(body: str) -> TagPolicy:
    """Parse the text between the braces of ``repo:{...}``; raise :class:`PolicySyntaxError`."""
    if len(body) > MAX_POLICY_CHARS:
        raise PolicySyntaxError(f"policy is {len(body)} characters; the limit is {MAX_POLICY_CHARS}")
    values: dict[str, str] = {}
    for key, value in _split_items(body):
        if key not in KEYS:
            raise PolicySyntaxError(f"unknown policy key {key!r}; expected one of {', '.join(KEYS)}")
        if key in values:
            raise PolicySyntaxError(f"policy key {key!r} is given twice")
        values[key] = value
    kinds = [k for k in ("semver", "regex") if k in values]
    if len(kinds) != 1:
        raise PolicySyntaxError("a policy needs exactly one of 'semver: RANGE' or 'regex: PATTERN'")
    kind = kinds[0]
    newest_text = values.get("newest", "1")
    if not newest_text.isdigit() or not 1 <= int(newest_text) <= MAX_NEWEST:
        raise PolicySyntaxError(f"newest must be a whole number from 1 to {MAX_NEWEST}, not {newest_text!r}")
    prerelease_text = values.get("prerelease", "false").lower()
    if prerelease_text not in ("true", "false"):
        raise PolicySyntaxError(f"prerelease must be true or false, not {values['prerelease']!r}")
    if prerelease_text == "true" and kind != "semver":
        raise PolicySyntaxError("prerelease applies to semver policies; a regex takes what it matches")
    expression = values[kind]
    if kind == "semver":
        parse_range(expression)
    else:
        check_pattern(expression)
    return TagPolicy(kind, expression, int(newest_text), prerelease_text == "true")
