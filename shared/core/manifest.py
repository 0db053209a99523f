"""The ``images.txt`` manifest: parsing and whole-file validation.

Pure code: no I/O, standard library only (plus ``shared.errors``).

Format (a superset of the format the old ``sync-script.sh`` read)::

    # comment lines start with '#' (after optional leading whitespace)
    registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/controller  # reviewed in PR 42
    quay.io/jetstack/cert-manager-webhook@sha256:<64 hex> => jetstack/cert-manager-webhook
    quay.io/jetstack/cert-manager-controller:v1.15.2@sha256:<64 hex> => jetstack/cert-manager-controller
    nginx:1.27 => team/nginx:1.27-approved
    bitnami/redis:7.2

* One entry per line: ``SOURCE [=> DESTINATION_REPOSITORY[:TAG]]``. Blank lines and comment
  lines are ignored; surrounding whitespace is trimmed; `` #`` after whitespace starts a
  trailing comment. Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped), so line
  numbers match what editors and ``git diff`` show.
* Destination tag: an explicit ``:TAG`` on the destination wins; otherwise the source tag;
  otherwise ``latest`` when the source has neither tag nor digest. A source with only a digest
  (``repo@sha256:...``) is an *untagged* import (``target_tag`` is ``None``); a source with
  both (``repo:tag@sha256:...``) imports the pinned digest under the source tag.
* Omitted destination (just a source, or ``SOURCE =>`` with nothing after it): the source
  repository path without its registry. For Docker Hub official images this keeps
  ``library/``: ``nginx:1.27`` goes to ``library/nginx:1.27``. That is what ``az acr import``
  does when ``--image`` is not given (it uses the source path after the registry), so
  manifests and hand-run imports agree. Write ``nginx => nginx`` to drop the prefix.

Validation is all-or-nothing: every line is checked and every problem reported, each as a
``Problem`` with its line number; ``ManifestResult.entries`` is empty whenever ``errors`` is
not, so a caller cannot import half of a broken manifest by accident.

Choices worth knowing:

* Duplicates are errors. Two lines that write the same destination tag are an error on the
  later line naming the earlier one, whether the sources differ (a conflict) or are the same
  after normalisation (a redundant line; ``nginx`` and ``docker.io/library/nginx:latest`` are
  the same source). A reviewed file should be clean. Two untagged
  imports into one repository only clash when they import the same digest.
* Size limits: a manifest over ``max_bytes`` (measured in UTF-8) gets a single error with
  ``line=None`` (it is about the whole file, and a made-up line 0 would look like a real
  line) and nothing else is parsed. Going over ``max_entries`` gives a single error on the
  first line beyond the limit and the rest of the file is not read.
* ``bytes`` input is decoded strictly as UTF-8 (a leading BOM is allowed); every line that is
  not valid UTF-8 gets its own error and the other lines are still checked.
* ``allowed_registries``: exact ``host[:port]`` match after normalisation (lower case, Docker
  Hub aliases -> ``docker.io``), plus ``*.example.com`` entries, which match exactly one
  extra label (``a.example.com``, not ``example.com`` or ``a.b.example.com``) and, like exact
  entries, only the port they spell out. ``None`` means no restriction; an *empty*
  collection allows nothing (fail closed). A malformed entry in the allow-list is a
  configuration mistake, not a manifest problem, and raises ``ConfigError``.
* In ``to_dict()`` each error's ``message`` is ``str(problem)``, i.e. prefixed with
  ``line N:``, so the message reads on its own; ``Problem.message`` itself has no prefix.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Collection, Iterator, Optional, Union

from shared.core.reference import (
    ImageReference,
    ReferenceSyntaxError,
    is_registry_component,
    normalise_registry,
    parse_reference,
    parse_repository,
    validate_registry,
    validate_tag,
)
from shared.errors import ConfigError, ManifestError, Problem

__all__ = ["Entry", "ManifestResult", "parse_manifest", "registry_allowed"]

ARROW = "=>"
DEFAULT_TAG = "latest"
_TRAILING_COMMENT = re.compile(r"\s#.*\Z", re.DOTALL)
_BOM = "\ufeff"


@dataclass(frozen=True)
class Entry:
    """One validated manifest line: import ``source`` into ``target_repository``."""

    line: int
    source: ImageReference
    target_repository: str
    target_tag: Optional[str]  # None: untagged import of source.digest

    def __post_init__(self) -> None:
        if self.target_tag is None and self.source.digest is None:
            raise ValueError("an untagged entry needs a source digest")

    @property
    def target(self) -> str:
        """``repo:tag``, or ``repo@digest`` for an untagged import."""
        if self.target_tag is None:
            return f"{self.target_repository}@{self.source.digest}"
        return f"{self.target_repository}:{self.target_tag}"

    def to_dict(self) -> dict:
        return {
            "line": self.line,
            "source": str(self.source),
            "registry": self.source.registry,
            "repository": self.source.repository,
            "tag": self.source.tag,
            "digest": self.source.digest,
            "target_repository": self.target_repository,
            "target_tag": self.target_tag,
        }


@dataclass(frozen=True)
class ManifestResult:
    """The outcome of :func:`parse_manifest`. ``entries`` is empty unless ``ok``."""

    entries: list[Entry] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    content_hash: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def raise_for_errors(self) -> None:
        """Raise ``ManifestError`` carrying every problem, if there are any."""
        if self.errors:
            n = len(self.errors)
            raise ManifestError(f"images.txt has {n} problem{'s' if n != 1 else ''}",
                                list(self.errors))

    def to_dict(self) -> dict:
        return {
            "entries": [e.to_dict() for e in self.entries],
            "errors": [{"line": p.line, "message": str(p)} for p in self.errors],
        }


def _normalise_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"allowed registry entry {pattern!r} is empty or not a string")
    text = pattern.strip()
    bare = text[2:] if text.startswith("*.") else text
    try:
        validate_registry(bare)
    except ReferenceSyntaxError as e:
        raise ConfigError(f"allowed registry entry {pattern!r} is invalid: {e.reason}") from None
    if text.startswith("*."):
        return "*." + bare.lower()
    return normalise_registry(bare)


def registry_allowed(registry: str, patterns: Collection[str]) -> bool:
    """Is a (normalised) registry matched by any allow-list entry?"""
    registry = normalise_registry(registry)
    for raw in patterns:
        pattern = _normalise_pattern(raw)
        if pattern.startswith("*."):
            first, dot, rest = registry.partition(".")
            if dot and first and rest == pattern[2:]:
                return True
        elif registry == pattern:
            return True
    return False


def _as_bytes(data: Union[str, bytes]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    raise TypeError(f"manifest must be str or bytes, not {type(data).__name__}")


def _split_lines(data: Union[str, bytes]) -> list[tuple[int, Optional[str], str]]:
    """Return ``[(line_no, text, "")]``, or ``(line_no, None, reason)`` for undecodable lines."""
    if isinstance(data, str):
        text = data[1:] if data.startswith(_BOM) else data
        return [(n, line, "") for n, line in enumerate(text.split("\n"), start=1)]
    raw_lines = data.split(b"\n")  # 0x0A never occurs inside a multi-byte UTF-8 sequence
    if raw_lines[0].startswith(b"\xef\xbb\xbf"):
        raw_lines[0] = raw_lines[0][3:]
    out: list[tuple[int, Optional[str], str]] = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            out.append((number, raw.decode("utf-8"), ""))
        except UnicodeDecodeError as e:
            out.append((number, None,
                        f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"))
    return out


def _parse_destination(text: str) -> tuple[str, Optional[str]]:
    """``repo[:tag]`` -> (repo, tag or None); raises ReferenceSyntaxError."""
    if "@" in text:
        raise ReferenceSyntaxError(
            f"destination {text!r} must not include a digest; the digest belongs on the source")
    first, slash, _ = text.partition("/")
    if slash and is_registry_component(first):
        raise ReferenceSyntaxError(
            f"destination {text!r} must not include a registry host ({first!r}); "
            "give the repository path inside the registry")
    repository, colon, tag = text.partition(":")
    if colon:
        if ":" in tag:
            raise ReferenceSyntaxError(f"destination {text!r} has more than one ':'")
        validate_tag(tag)
    parse_repository(repository)
    return repository, (tag if colon else None)


def _parse_line(number: int, text: str) -> tuple[Optional[Entry], Optional[str]]:
    """Parse one non-blank, non-comment line; return (entry, None) or (None, message)."""
    text = _TRAILING_COMMENT.sub("", text).strip()
    arrows = text.count(ARROW)
    if arrows > 1:
        return None, f"more than one '{ARROW}' ({arrows} found); expected SOURCE {ARROW} DESTINATION"
    source_text, _, dest_text = text.partition(ARROW)
    source_text, dest_text = source_text.strip(), dest_text.strip()
    if not source_text:
        return None, f"missing source image before '{ARROW}'"
    if any(ch.isspace() for ch in source_text):
        return None, f"source {source_text!r} contains whitespace; expected one image reference"
    if any(ch.isspace() for ch in dest_text):
        return None, f"destination {dest_text!r} contains whitespace; expected one repository"

    try:
        source = parse_reference(source_text)
    except ReferenceSyntaxError as e:
        return None, f"invalid source image {source_text!r}: {e.reason}"

    if dest_text:
        try:
            repository, tag = _parse_destination(dest_text)
        except ReferenceSyntaxError as e:
            return None, f"invalid destination {dest_text!r}: {e.reason}"
    else:
        repository, tag = source.repository, None

    if tag is None:
        tag = source.tag if source.tag is not None else (None if source.digest else DEFAULT_TAG)
    return Entry(number, source, repository, tag), None


def _pull_reference(ref: ImageReference) -> ImageReference:
    """The reference as pulled: no tag and no digest means ``latest``."""
    if ref.tag is None and ref.digest is None:
        return replace(ref, tag=DEFAULT_TAG)
    return ref


def parse_manifest(
    text: Union[str, bytes],
    *,
    allowed_registries: Optional[Collection[str]] = None,
    max_bytes: int = 1_048_576,
    max_entries: int = 5000,
) -> ManifestResult:
    """Parse and validate a whole manifest. Never raises for bad manifest content.

    Raises ``TypeError`` for input that is neither ``str`` nor ``bytes`` and ``ConfigError``
    for a malformed ``allowed_registries`` entry.
    """
    if allowed_registries is not None:
        if isinstance(allowed_registries, str):
            raise ConfigError("allowed_registries must be a collection of hosts, not one string")
        patterns = [_normalise_pattern(p) for p in allowed_registries]
    else:
        patterns = None

    raw = _as_bytes(text)
    content_hash = hashlib.sha256(raw).hexdigest()
    if len(raw) > max_bytes:
        problem = Problem(f"manifest is {len(raw)} bytes; the limit is {max_bytes} bytes")
        return ManifestResult([], [problem], content_hash)

    entries: list[Entry] = []
    errors: list[Problem] = []
    seen: dict[tuple[str, str], Entry] = {}
    count = 0

    for number, line, decode_error in _split_lines(text):
        if line is None:
            errors.append(Problem(decode_error, line=number))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        count += 1
        if count > max_entries:
            errors.append(Problem(
                f"more than {max_entries} entries; the limit is {max_entries} (rest of file not read)",
                line=number))
            break

        entry, message = _parse_line(number, stripped)
        if entry is None:
            errors.append(Problem(message or "invalid line", line=number))
            continue

        if patterns is not None and not registry_allowed(entry.source.registry, patterns):
            errors.append(Problem(
                f"source registry {entry.source.registry!r} is not on the allowed list", line=number))
            continue

        key = (entry.target_repository,
               f":{entry.target_tag}" if entry.target_tag is not None else f"@{entry.source.digest}")
        earlier = seen.get(key)
        if earlier is not None:
            if _pull_reference(earlier.source) == _pull_reference(entry.source):
                errors.append(Problem(
                    f"duplicate of line {earlier.line} ({entry.source} => {entry.target}); "
                    "remove one of them", line=number))
            else:
                errors.append(Problem(
                    f"destination {entry.target} is already written by line {earlier.line} "
                    f"(source {earlier.source}); this line's source is {entry.source}", line=number))
            continue
        seen[key] = entry
        entries.append(entry)

    return ManifestResult([] if errors else entries, errors, content_hash)
