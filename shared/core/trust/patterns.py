"""Trust policy scope patterns: ``match`` globs on ``registry/repository``. Pure code.

Patterns are written ``REGISTRY/REPOSITORY`` as the source is written in images.txt, fully
qualified: ``docker.io/library/nginx`` (not ``nginx``). They are lowercase; ``/`` separates segments;
``*`` matches any run of characters inside one segment, ``?`` one character inside one segment, and
a whole segment ``**`` matches zero or more segments: ``registry.k8s.io/**`` is every repository on
that registry, ``quay.io/jetstack/*`` the repositories directly under ``jetstack/``, ``*.gcr.io/**``
every repository on any gcr.io registry, ``**`` everything (a catch-all scope). Character classes
(``[...]``) are not supported. Registry hosts are compared lowercased with Docker Hub's aliases
folded into ``docker.io`` (whose one-word repositories are ``library/NAME``).

:func:`_check_pattern` validates one pattern and gives its regular expression (matched with RE2,
:data:`_RE2_OPTIONS`); :attr:`Pattern.specificity` orders competing matches (an exact pattern, then
more literal characters, then fewer wildcards).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import re2

from shared.core.builds import type_name
from shared.core.reference import DOCKER_HUB, ReferenceSyntaxError, normalise_registry, validate_registry

_REGISTRY_GLOB = re.compile(r"[a-z0-9.:*?-]+")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_COMPONENT_GLOB = re.compile(r"[a-z0-9._*?-]+")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported as a problem, not logged to stderr by RE2
_RE2_OPTIONS.max_mem = 8 << 20


@dataclass(frozen=True)
class Pattern:
    """One ``match`` glob, compiled; ``specificity`` orders competing matches (higher wins)."""

    text: str
    line: int
    regex: Any = field(compare=False, repr=False)

    @property
    def exact(self) -> bool:
        return not any(ch in self.text for ch in "*?")

    @property
    def specificity(self) -> tuple[bool, int, int]:
        wildcards = sum(self.text.count(ch) for ch in "*?")
        return self.exact, len(self.text) - wildcards, -wildcards

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _glob_regex(segments: list[str]) -> str:
    def one(segment: str) -> str:
        return "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment)

    if segments == ["**"]:
        return ".+"
    out = ""
    for i, segment in enumerate(segments):
        if segment == "**":
            if i == 0:
                out += "(?:[^/]+/)*"
            elif i == len(segments) - 1:
                out += "(?:/[^/]+)*"
            else:
                out += "/(?:[^/]+/)*"
            continue
        if i > 0 and segments[i - 1] != "**":
            out += "/"
        out += one(segment)
    return out


def _check_pattern(value: Any) -> tuple[Optional[str], Optional[str]]:
    """(regex, None) for a valid pattern, or (None, the problem)."""
    if not isinstance(value, str):
        return None, f"a match pattern must be a string, not {type_name(value)}"
    if not value:
        return None, "match pattern is empty"
    if value != value.strip() or any(ch.isspace() for ch in value):
        return None, f"match pattern {value!r} contains whitespace"
    if value != value.lower():
        return None, f"match pattern {value!r} must be lowercase, as registry hosts and repositories are"
    if "@" in value:
        return None, f"match pattern {value!r} must not include a digest: a scope matches repositories"
    if "[" in value or "]" in value:
        return None, f"match pattern {value!r}: character classes ([...]) are not supported; use * or ?"
    segments = value.split("/")
    if segments == ["**"]:
        return _glob_regex(segments), None
    if "" in segments:
        return None, f"match pattern {value!r} has an empty segment (a leading, trailing or doubled '/')"
    if ":" in "/".join(segments[1:]):
        return None, f"match pattern {value!r} must not include a tag: a scope matches repositories"
    for i, segment in enumerate(segments):
        if "**" in segment and segment != "**":
            return None, f"match pattern {value!r}: '**' must be a whole segment (a/**/b), not part of one"
        if segment == "**" and i > 0 and segments[i - 1] == "**":
            return None, f"match pattern {value!r}: write '**' once, not '**/**'"
    registry, rest = segments[0], segments[1:]
    if registry != "**":
        wild = any(ch in registry for ch in "*?")
        if not wild and not ("." in registry or ":" in registry or registry == "localhost"):
            return None, (f"match pattern {value!r} must start with the registry host, fully qualified "
                          f"(for Docker Hub: docker.io/library/{value})")
        if not _REGISTRY_GLOB.fullmatch(registry):
            return None, f"registry {registry!r} in match pattern has characters a host cannot contain"
        if not wild:
            try:
                validate_registry(registry)
            except ReferenceSyntaxError as e:
                return None, f"match pattern {value!r}: {e.reason}"
            if normalise_registry(registry) != registry:
                return None, f"match pattern {value!r}: write Docker Hub as docker.io, not {registry}"
    if not rest:
        return None, (f"match pattern {value!r} has no repository part; "
                      f"{value}/** matches every repository on that registry")
    if registry == DOCKER_HUB and len(rest) == 1 and not any(ch in rest[0] for ch in "*?"):
        return None, (f"match pattern {value!r}: Docker Hub's official images are under library/ "
                      f"(docker.io/library/{rest[0]})")
    for segment in rest:
        if segment == "**":
            continue
        if any(ch in segment for ch in "*?"):
            if not _COMPONENT_GLOB.fullmatch(segment):
                return None, (f"match pattern {value!r}: segment {segment!r} has characters a repository "
                              "cannot contain (a-z 0-9 . _ - and the wildcards * ?)")
        elif not _COMPONENT.fullmatch(segment):
            return None, (f"match pattern {value!r}: invalid repository segment {segment!r} (lowercase letters "
                          "and digits, separated by '.', '_', '__' or '-')")
    return _glob_regex(segments), None

