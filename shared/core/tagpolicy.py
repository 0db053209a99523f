"""Tag policies: an ``images.txt`` entry that names a rule instead of one tag. Pure: no I/O.

Syntax (the part after the repository's ``:`` is in braces, which the tag grammar
``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`` never contains, so a policy can never be read as a tag)::

    registry.k8s.io/ingress-nginx/controller:{semver: ~1.11, newest: 2} => ingress-nginx/controller
    nginx:{semver: >=1.25 <2, newest: 3}
    quay.io/jetstack/cert-manager-controller:{regex: v?\\d+\\.\\d+\\.\\d+, newest: 2}
    nginx:{regex: \\d+\\.\\d+\\.\\d+-(alpine|slim), exclude: 1\\.2[0-4]\\..*, newest: 4}
    ghcr.io/org/app:{semver: ^2.0.0-0, prerelease: true}

* ``KEY: VALUE`` pairs separated by ``,``. Keys: ``semver`` *or* ``regex`` (exactly one: which tags
  are included), ``exclude`` (a pattern: included tags that it matches are dropped), ``newest``
  (how many of the remaining tags to keep, 1-``MAX_NEWEST``; default 1), ``prerelease``
  (``true``/``false``; semver only, default false). A value may be double-quoted; a value that
  contains ``,`` or ``}`` must be (a quoted value cannot contain ``"``, which no tag contains).
* ``semver``: npm ranges (the ``semver`` package's grammar and meaning): comparators ``=``, ``>``,
  ``>=``, ``<``, ``<=`` separated by spaces (all must hold), ``~1.27`` (>=1.27.0 <1.28.0-0),
  ``^1.2.3`` (>=1.2.3 <2.0.0-0), partial versions and ``x`` wildcards (``1.27``, ``1.27.x``,
  ``1.x``, ``*``), hyphen ranges (``1.2 - 1.4``: >=1.2.0 <1.5.0-0), alternatives joined by
  ``||``. A tag takes part when it is ``[v]MAJOR.MINOR.PATCH[-PRERELEASE]``
  (semver 2.0.0: no leading zeros; ``1.27``, ``latest`` or ``1.27.3_x`` never match). A
  pre-release (``1.28.0-rc.1``; also a suffix such as ``1.27.3-alpine``, which semver reads as
  one) is left out unless ``prerelease: true``, which then matches as npm's ``includePrerelease``
  does. Newest = highest semver precedence.
* ``regex`` and ``exclude``: RE2 syntax (the syntax of Go's ``regexp``, so regsync's and
  dregsy's patterns carry over unchanged); the pattern must match the *whole* tag. Newest =
  highest natural version order (runs of digits compared as numbers: ``1.27.10`` after
  ``1.27.9``; ``20240105`` after ``20231231``). The pattern is the whole ask: pre-release suffixes
  it matches are taken.

Bounded cost (checked offline by ``manifest check``):

* a policy is at most ``MAX_POLICY_CHARS`` characters, a semver range at most ``MAX_COMPARATORS``
  comparators, a pattern at most ``MAX_PATTERN_CHARS`` characters and at most ``RE2_MAX_MEM``
  bytes compiled;
* patterns are compiled and matched by RE2 (the ``google-re2`` wheel), an automaton: matching
  takes time linear in the tag's length whatever the pattern, so there is no dialect to police
  and no choice-point limit. What RE2 cannot do in linear time it does not parse:
  back-references and look-around are refused, with RE2's reason, at ``manifest check``;
* tags longer than ``MAX_TAG_CHARS`` (the tag grammar's limit) never match, and the number of
  tags a policy scans is capped by the caller (``MAX_TAGS_SCANNED``).

Why the semver ranges are parsed here and not by a library (measured against npm's ``semver``
7.8.6, the reference implementation of this syntax, on 161 ranges x 367 tags, once for releases
only and once with npm's ``includePrerelease``; the table is ``tests/fixtures/semver/npm-ranges.json``
and ``tests/unit/test_tagpolicy.py`` checks every cell of it against this module):

* ``semantic_version`` 2.10.0 (``NpmSpec``): an exact pre-release (``1.2.3-rc.1``) also matches
  the release ``1.2.3``; ``>= 1.2``, ``=v1.2.3``, ``~>1.2``, ``>*`` and 10 more ranges npm reads
  are refused; no include-pre-release mode: 27 cells differ for releases, 14,810 with pre-releases;
* ``node-semver`` 0.9.1 (a port of an older npm ``semver``): agrees on every release cell, but
  its include-pre-release mode compares ``1.2.3-rc.1`` equal to ``1.2.3`` (228 cells), and with
  that worked around it still lets ``1.27`` take ``1.28.0-rc.1`` and ``<2`` take ``2.0.0-rc.1``
  (607 cells): ``prerelease: true`` would import the next major's release candidates;
* ``semver`` (python-semver) has no npm ranges; ``packaging`` is PEP 440, another syntax.

This module agrees with npm on every cell; it refuses three forms npm accepts: an empty range
(npm: any version; write ``*``), an empty ``||`` alternative, and build metadata (``+build``: no
tag has one).
"""
from __future__ import annotations

import functools
import heapq
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import re2

__all__ = ["PolicySyntaxError", "TagPolicy", "parse_policy", "compile_pattern", "MAX_TAGS_SCANNED"]

MAX_POLICY_CHARS = 512
MAX_PATTERN_CHARS = 256
MAX_COMPARATORS = 16
MAX_NEWEST = 50
MAX_TAG_CHARS = 128
MAX_TAGS_SCANNED = 10_000
RE2_MAX_MEM = 1 << 20  # bytes for one compiled pattern (RE2's default is 8 MiB)
KEYS = ("semver", "regex", "exclude", "newest", "prerelease")


class PolicySyntaxError(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- versions ----------------------------------------------------------------------------------

_NUMBER = r"(0|[1-9][0-9]{0,8})"
_IDENTIFIER = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"  # semver 2.0.0: no leading zeros
_PRERELEASE = rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*"
_VERSION = re.compile(rf"v?{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-({_PRERELEASE}))?")


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
    match = _VERSION.fullmatch(tag) if len(tag) <= MAX_TAG_CHARS else None
    if not match:
        return None
    pre = tuple(match.group(4).split(".")) if match.group(4) else ()
    return Version(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)


_PART = r"([0-9]{1,9}|[xX*])"
_PARTIAL = re.compile(rf"v?(?:{_PART}(?:\.{_PART}(?:\.{_PART}(?:-({_PRERELEASE}))?)?)?)")
_COMPARATOR = re.compile(r"\s*(?:(>=|<=|>|<|=|~>?|\^)\s*)?(\S+)")  # ~> is ~ (npm)
_HYPHEN = re.compile(r"(\S+)\s+-\s+(\S+)")


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
    """One comparator -> bounds, as npm desugars it with ``includePrerelease``: a partial version's
    bounds are ``X.Y.Z-0`` (``<2`` leaves out ``2.0.0-rc.1``, ``~1.2`` takes ``1.2.0-rc.1``).
    Without ``prerelease: true`` the caller drops pre-release tags first, and then this is npm's
    default meaning too."""
    parts, pre = _partial(text)
    major, minor, patch = parts
    if major is None:
        return [] if op in ("", "=", ">=", "<=", "~", "^") else [("<", _v(0, 0, 0, ("0",)))]
    exact = minor is not None and patch is not None
    low = _v(major, minor, patch, pre) if exact else _lowest_pre(major, minor or 0, 0)
    # the next minor (1.2.3, 1.2 -> 1.3.0-0), or the next major of a bare major (1 -> 2.0.0-0)
    after = _lowest_pre(major + 1, 0, 0) if minor is None else _lowest_pre(major, minor + 1, 0)
    if op in ("", "="):
        return [("=", low)] if exact else [(">=", low), ("<", after)]
    if op == "~":
        return [(">=", low), ("<", after)]
    if op == "^":  # up to the next change of the left-most non-zero part
        if major > 0 or minor is None:
            return [(">=", low), ("<", _lowest_pre(major + 1, 0, 0))]
        if minor > 0 or patch is None:
            return [(">=", low), ("<", _lowest_pre(0, minor + 1, 0))]
        return [(">=", low), ("<", _lowest_pre(0, 0, patch + 1))]
    if op == ">=":
        return [(">=", low)]
    if op == "<":
        return [("<", low)]
    if op == ">":
        return [(">", low)] if exact else [(">=", after)]
    if op == "<=":
        return [("<=", low)] if exact else [("<", after)]
    raise PolicySyntaxError(f"unknown operator {op!r}")  # pragma: no cover - the regex allows no other


@functools.lru_cache(maxsize=1024)
def parse_range(text: str) -> tuple[tuple[Bound, ...], ...]:
    """An npm-style range -> alternatives, each a tuple of bounds that must all hold."""
    text = text.strip()
    if not text:
        raise PolicySyntaxError("semver range is empty")
    alternatives = []
    count = 0
    for alternative in text.split("||"):
        if not alternative.strip():
            raise PolicySyntaxError(f"semver range {text!r} has an empty alternative around '||'")
        hyphen = _HYPHEN.fullmatch(alternative.strip())
        comparators = [(">=", hyphen.group(1)), ("<=", hyphen.group(2))] if hyphen else \
            [(m.group(1) or "", m.group(2)) for m in _COMPARATOR.finditer(alternative)]
        count += len(comparators)
        if count > MAX_COMPARATORS:
            raise PolicySyntaxError(f"semver range has more than {MAX_COMPARATORS} comparators")
        bounds = [b for op, version in comparators for b in _comparator("~" if op == "~>" else op, version)]
        if hyphen:  # A - B is >=A <=B, where npm takes A's pre-releases too
            (major, minor, patch), pre = _partial(hyphen.group(1))
            if patch is not None and not pre:
                bounds[0] = (">=", _lowest_pre(major, minor, patch))
        alternatives.append(tuple(bounds))
    return tuple(alternatives)


def _holds(bound: Bound, key: tuple) -> bool:
    op, limit = bound
    return {"=": key == limit, ">": key > limit, ">=": key >= limit,
            "<": key < limit, "<=": key <= limit}[op]


# --- patterns: RE2 -----------------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason goes into the error, not to stderr
_RE2_OPTIONS.max_mem = RE2_MAX_MEM

# what RE2's parser says when it meets a Python or PCRE feature -> which feature
_UNSUPPORTED = (
    (re.compile(r"invalid escape sequence: \\[1-9kg]|operator: \(\?P"), "back-references are not supported"),
    (re.compile(r"operator: \(\?<?[=!]"), "look-around is not supported"),
    (re.compile(r"operator: \(\?>"), "atomic groups are not supported"),
    (re.compile(r"repetition operator: .*[+*?}]\+"), "possessive quantifiers are not supported"),
)


def _re2_reason(message: str) -> str:
    for needle, feature in _UNSUPPORTED:
        if needle.search(message):
            return f"{message} ({feature}: RE2 matches in linear time and has none)"
    if "invalid repetition size" in message:
        return f"{message} (a counted repeat is at most 1000, nested repeats multiplied)"
    if "pattern too large" in message:
        return f"{message} (the compiled pattern is over {RE2_MAX_MEM // 1024} KiB)"
    if "\\Z" in message:
        return f"{message} (write \\z, or nothing: a pattern always matches the whole tag)"
    return message


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str, what: str = "regex"):
    """Compile a policy pattern with RE2 (it must match the whole tag: use ``fullmatch``), or
    raise :class:`PolicySyntaxError` saying why not (RE2 matches in linear time, so it has no
    back-references or look-around)."""
    if not pattern:
        raise PolicySyntaxError(f"{what} is empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PolicySyntaxError(f"{what} is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
    if '"' in pattern:  # no tag has one, and the policy's text quotes the pattern
        raise PolicySyntaxError(f"{what} contains '\"', which no tag does")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        message = e.args[0] if e.args else "invalid pattern"
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise PolicySyntaxError(f"{what} is not valid RE2 syntax: {_re2_reason(str(message))}") from None


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
    exclude: Optional[str] = None  # an RE2 pattern: included tags it matches (whole tag) are dropped

    @property
    def text(self) -> str:
        value = f'"{self.expression}"' if any(c in self.expression for c in ',}"') or self.kind == "regex" \
            else self.expression
        out = f"{self.kind}: {value}, newest: {self.newest}"
        if self.prerelease:
            out += ", prerelease: true"
        if self.exclude is not None:
            out += f', exclude: "{self.exclude}"'
        return "{" + out + "}"

    def _keyed(self, tags: Iterable[str]) -> Iterable[tuple[tuple, str]]:
        """(sort key, tag) for every tag the policy includes and does not exclude."""
        excluded = compile_pattern(self.exclude, "exclude") if self.exclude is not None else None
        if self.kind == "semver":
            ranges = parse_range(self.expression)
            for tag in tags:
                version = parse_version(tag)
                if version is None or (version.prerelease and not self.prerelease):
                    continue
                key = version.key()
                if any(all(_holds(b, key) for b in alternative) for alternative in ranges) \
                        and not (excluded is not None and excluded.fullmatch(tag)):
                    yield key, tag
        else:
            pattern = compile_pattern(self.expression)
            for tag in tags:
                if len(tag) <= MAX_TAG_CHARS and pattern.fullmatch(tag) \
                        and not (excluded is not None and excluded.fullmatch(tag)):
                    yield natural_key(tag), tag

    def admits(self, tag: str) -> bool:
        """Would the policy take ``tag`` if it were among the newest ``newest`` of its kind? (A
        check without the source's tag list: ``discover --check``.)"""
        return any(True for _ in self._keyed([tag]))

    matches = admits

    def select(self, tags: Iterable[str]) -> list[str]:
        """The newest ``newest`` included, not excluded tags, newest first."""
        return [tag for _, tag in heapq.nlargest(self.newest, self._keyed(tags))]


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
        compile_pattern(expression)
    exclude = values.get("exclude")
    if exclude is not None:
        compile_pattern(exclude, "exclude")
    return TagPolicy(kind, expression, int(newest_text), prerelease_text == "true", exclude)
