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
* Omitted destination (just a source): the source repository path without its registry. An
  arrow with nothing (or only a comment) after it is an error: it is an unfinished edit.
  For Docker Hub official images this keeps ``library/``: ``nginx:1.27`` goes to
  ``library/nginx:1.27``. That is what ``az acr import`` does when ``--image`` is not given
  (it uses the source path after the registry), so manifests and hand-run imports agree.
  Write ``nginx => nginx`` to drop the prefix.

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
  not valid UTF-8 gets its own error and the other lines are still checked. Such lines count
  toward ``max_entries`` like any other non-blank line, and at most ``MAX_ERRORS`` errors are
  listed, then one more saying how many were left out (so a flood of bad lines gets a small
  answer). ``ManifestResult.error_count`` (and ``problem_total`` for a record's ``errors``) counts
  every problem, the ones left out included. A manifest with errors imports nothing (``entries`` is
  empty); the lines that did validate are kept apart, in ``valid_entries`` / ``valid_policies``.
* Warnings do not make a manifest invalid: a source with neither tag nor digest still means
  ``latest`` but is flagged, since a reviewer cannot see what it will import.
* ``(overwrite)`` at the end of a line (before any comment) lets it replace a destination tag that
  this manifest does not own: one the airlock did not write (an in-house image) or one another
  manifest wrote (``shared.core.ownership``). Parentheses are in neither the reference grammar nor
  the tag grammar, and a tag policy ends with ``}``, so a final ``(...)`` can only be an option;
  any other word in it is an error, and so is ``(overwrite)`` on an untagged (``@digest``) line,
  which writes no tag. It is ``Entry.overwrite`` (and ``PolicyEntry.overwrite``, passed on to each
  resolved tag), and is not part of what a lock fingerprints: it changes whether a tag may be
  replaced, not what is imported.
* Tag policies (``repo:{semver: ~1.27, newest: 3}``, see ``shared.core.tagpolicy``) are parsed
  into ``ManifestResult.policies`` (``PolicyEntry``); each is resolved to concrete entries at plan
  time (``PolicyEntry.resolve``). A policy's destination is a repository without a tag (each
  resolved tag keeps its name). Two policies from different source repositories into one
  destination repository are an error.
* ``allowed_registries``: exact ``host[:port]`` match after normalisation (lower case, Docker
  Hub aliases -> ``docker.io``), plus ``*.example.com`` entries, which match exactly one
  extra label (``a.example.com``, not ``example.com`` or ``a.b.example.com``) and, like exact
  entries, only the port they spell out. ``None`` means no restriction; an *empty*
  collection allows nothing (fail closed). A malformed entry in the allow-list is a
  configuration mistake, not a manifest problem, and raises ``ConfigError``. The list is
  normalised once per manifest into sets (``AllowList``): the check is linear in entries
  (5,000 entries against 5,000 allow-list entries: ``python -m bench policy``).
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
from shared.core.tagpolicy import PolicySyntaxError, TagPolicy, parse_policy
from shared.errors import ConfigError, ManifestError, Problem

__all__ = ["OVERWRITE", "AllowList", "Entry", "ManifestResult", "PolicyEntry", "parse_manifest", "problem_total",
           "registry_allowed"]

ARROW = "=>"
DEFAULT_TAG = "latest"
OVERWRITE = "overwrite"  # the one line option: SOURCE [=> DESTINATION] (overwrite)
MAX_ERRORS = 100  # errors listed; the rest are counted
ALLOWLIST_SETTING = "SOURCE_REGISTRY_ALLOWLIST"
_TRAILING_COMMENT = re.compile(r"\s#.*\Z", re.DOTALL)
_OPTION = re.compile(r"\s\(([^(){}]*)\)\Z")  # a final " (word)", after the comment is removed
_BOM = "\ufeff"
_MORE = re.compile(r"\.\.\. and (\d+) more problems? not listed")


def _more(hidden: int) -> Problem:
    """The problem that stands for ``hidden`` problems left out of the list (``problem_total`` reads it)."""
    return Problem(f"... and {hidden} more problem{'s' if hidden != 1 else ''} not listed")


def problem_total(problems) -> int:
    """How many problems a list stands for: each counts one, and ``... and N more problems not listed``
    counts N. ``problems``: ``Problem`` objects or their dicts (a record's ``errors``)."""
    total = 0
    for problem in problems:
        message = problem.get("message", "") if isinstance(problem, dict) else problem.message
        more = _MORE.fullmatch(message or "")
        total += int(more.group(1)) if more else 1
    return total


@dataclass(frozen=True)
class Entry:
    """One validated manifest line: import ``source`` into ``target_repository``."""

    line: int
    source: ImageReference
    target_repository: str
    target_tag: Optional[str]  # None: untagged import of source.digest
    policy: Optional[str] = None  # the tag policy this entry was resolved from, if any
    locked: bool = False  # source.digest is the digest images.lock locks (shared.core.lock.locked_entries)
    overwrite: bool = False  # "(overwrite)": may replace a tag this manifest does not own (shared.core.ownership)

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
            **({"policy": self.policy} if self.policy else {}),
            **({"locked": True} if self.locked else {}),
            **({"overwrite": True} if self.overwrite else {}),
        }


@dataclass(frozen=True)
class PolicyEntry:
    """A manifest line naming a tag policy: resolved to entries once the source's tags are known."""

    line: int
    source: ImageReference  # no tag, no digest
    target_repository: str
    policy: TagPolicy
    overwrite: bool = False  # "(overwrite)": every resolved tag may replace one this manifest does not own

    def to_dict(self) -> dict:
        return {"line": self.line, "source": str(self.source), "registry": self.source.registry,
                "repository": self.source.repository, "policy": self.policy.text,
                "target_repository": self.target_repository, **({"overwrite": True} if self.overwrite else {})}

    def resolve(self, tags) -> list[Entry]:
        """One entry per selected tag (newest first), each keeping its tag at the destination."""
        return [Entry(self.line, replace(self.source, tag=tag), self.target_repository, tag, self.policy.text,
                      overwrite=self.overwrite)
                for tag in self.policy.select(tags)]


@dataclass(frozen=True)
class ManifestResult:
    """The outcome of :func:`parse_manifest`. ``entries`` is empty unless ``ok``; then the lines that did
    validate are in ``valid_entries`` and ``valid_policies`` (reported, never run)."""

    entries: list[Entry] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    content_hash: str = ""
    policies: list[PolicyEntry] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    # the images.lock it was checked against (shared.core.lock.Lock): then ``entries`` are the locked
    # entries (tag policies expanded to their locked tags) and ``policies`` are for the record only
    lock: Optional[object] = None
    valid_entries: list[Entry] = field(default_factory=list)
    valid_policies: list[PolicyEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def error_count(self) -> int:
        """Every problem, the ones left out of ``errors`` (past ``MAX_ERRORS``) included."""
        return problem_total(self.errors)

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
            "policies": [p.to_dict() for p in self.policies],
            "errors": [{"line": p.line, "message": str(p)} for p in self.errors],
            "warnings": [{"line": p.line, "message": str(p)} for p in self.warnings],
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


@dataclass(frozen=True)
class AllowList:
    """The allow-list, each entry normalised once: exact ``host[:port]`` entries in one set, the
    domains of ``*.domain[:port]`` entries in another. :meth:`allows` is two set probes whatever
    the list's length, so checking a manifest costs O(entries + allow-list), not their product."""

    exact: frozenset = frozenset()
    wildcard_domains: frozenset = frozenset()  # "example.com" for "*.example.com"

    @classmethod
    def parse(cls, patterns: Collection[str]) -> "AllowList":
        """Raise ``ConfigError`` for a malformed entry, or for one string instead of a collection."""
        if isinstance(patterns, str):
            raise ConfigError("allowed_registries must be a collection of hosts, not one string")
        exact, domains = set(), set()
        for raw in patterns:
            pattern = _normalise_pattern(raw)
            if pattern.startswith("*."):
                domains.add(pattern[2:])
            else:
                exact.add(pattern)
        return cls(frozenset(exact), frozenset(domains))

    def allows(self, registry: str) -> bool:
        """Is a registry matched by an entry? ``*.example.com`` matches exactly one more label."""
        registry = normalise_registry(registry)
        if registry in self.exact:
            return True
        first, dot, rest = registry.partition(".")
        return bool(dot and first) and rest in self.wildcard_domains


def registry_allowed(registry: str, patterns: Union[AllowList, Collection[str]]) -> bool:
    """Is a (normalised) registry matched by any allow-list entry? Pass an :class:`AllowList` when
    checking many registries against one list (a collection is parsed on every call)."""
    allow = patterns if isinstance(patterns, AllowList) else AllowList.parse(patterns)
    return allow.allows(registry)


def _as_bytes(data: Union[str, bytes]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    raise TypeError(f"manifest must be str or bytes, not {type(data).__name__}")


def _split_lines(data: Union[str, bytes]) -> Iterator[tuple[int, Optional[str], str]]:
    """Yield ``(line_no, text, "")``, or ``(line_no, None, reason)`` for undecodable lines."""
    if isinstance(data, str):
        text = data[1:] if data.startswith(_BOM) else data
        for n, line in enumerate(text.split("\n"), start=1):
            yield n, line, ""
        return
    raw_lines = data.split(b"\n")  # 0x0A never occurs inside a multi-byte UTF-8 sequence
    if raw_lines[0].startswith(b"\xef\xbb\xbf"):
        raw_lines[0] = raw_lines[0][3:]
    for number, raw in enumerate(raw_lines, start=1):
        try:
            yield number, raw.decode("utf-8"), ""
        except UnicodeDecodeError as e:
            yield number, None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"


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


def _split_policy(text: str, brace: int) -> tuple[str, str, str]:
    """``repo:{body} rest`` -> (``repo``, ``body``, ``rest``); raises PolicySyntaxError."""
    if brace == 0 or text[brace - 1] != ":":
        raise PolicySyntaxError("a tag policy goes after the repository and a ':' (repo:{semver: ...})")
    i, quoted, depth = brace + 1, False, 1
    while i < len(text):  # braces nest (a regex's {8}); quoted text is skipped
        if text[i] == '"':
            quoted = not quoted
        elif text[i] == "{" and not quoted:
            depth += 1
        elif text[i] == "}" and not quoted:
            depth -= 1
            if depth == 0:
                return text[:brace - 1], text[brace + 1:i], text[i + 1:]
        i += 1
    raise PolicySyntaxError("tag policy has no closing '}'" + (" (unclosed '\"')" if quoted else ""))


Parsed = Union[Entry, PolicyEntry]


def _split_option(text: str) -> tuple[str, Optional[str], Optional[str]]:
    """``... (overwrite)`` -> (``...``, ``"overwrite"``, None); (text, None, None) without an option;
    (text, None, message) for an option that is not one. A ``(`` inside an unclosed tag policy's braces
    is left to the policy parser."""
    match = _OPTION.search(text)
    if match is None:
        return text, None, None
    head = text[:match.start()]
    if head.count("{") != head.count("}"):
        return text, None, None
    option = match.group(1).strip()
    if option != OVERWRITE:
        return text, None, f"unknown option ({option}); the only line option is ({OVERWRITE})"
    if not head.strip():
        return text, None, f"missing source image before ({OVERWRITE})"
    return head.rstrip(), option, None


def _parse_line(number: int, text: str) -> tuple[Optional[Parsed], Optional[str]]:
    """Parse one non-blank, non-comment line; return (entry, None) or (None, message)."""
    text = _TRAILING_COMMENT.sub("", text).strip()
    text, option, problem = _split_option(text)
    if problem:
        return None, problem
    overwrite = option == OVERWRITE
    policy: Optional[TagPolicy] = None
    brace = text.find("{")
    if brace != -1 and (text.find(ARROW) == -1 or brace < text.find(ARROW)):
        try:
            head, body, rest = _split_policy(text, brace)
            policy = parse_policy(body)
        except PolicySyntaxError as e:
            return None, f"invalid tag policy: {e.reason}"
        if rest.strip() and not rest.strip().startswith(ARROW):
            return None, f"unexpected {rest.strip()!r} after the tag policy; expected {ARROW} DESTINATION"
        text = head + " " + rest.strip()
    arrows = text.count(ARROW)
    if arrows > 1:
        return None, f"more than one '{ARROW}' ({arrows} found); expected SOURCE {ARROW} DESTINATION"
    source_text, arrow, dest_text = text.partition(ARROW)
    source_text, dest_text = source_text.strip(), dest_text.strip()
    if not source_text:
        return None, f"missing source image before '{ARROW}'"
    if arrow and not dest_text:
        return None, (f"nothing after '{ARROW}': give a destination repository, or remove the "
                      f"arrow to import into the source's path")
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

    if policy is not None:
        if source.tag is not None or source.digest is not None:
            return None, "a tag policy replaces the tag: write repo:{...} without a tag or digest"
        if tag is not None:
            return None, (f"destination {dest_text!r} of a tag policy must not have a tag: each "
                          "resolved tag keeps its name")
        return PolicyEntry(number, source, repository, policy, overwrite), None

    if tag is None:
        tag = source.tag if source.tag is not None else (None if source.digest else DEFAULT_TAG)
    if overwrite and tag is None:
        return None, (f"({OVERWRITE}) on an untagged import: {source} writes no tag at the destination, "
                      "so there is nothing to overwrite")
    return Entry(number, source, repository, tag, overwrite=overwrite), None


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
    allow = AllowList.parse(allowed_registries) if allowed_registries is not None else None

    raw = _as_bytes(text)
    content_hash = hashlib.sha256(raw).hexdigest()
    if len(raw) > max_bytes:
        problem = Problem(f"manifest is {len(raw)} bytes; the limit is {max_bytes} bytes")
        return ManifestResult([], [problem], content_hash)

    entries: list[Entry] = []
    policies: list[PolicyEntry] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    hidden = 0  # errors past MAX_ERRORS, counted but not listed
    seen: dict[tuple[str, str], Entry] = {}
    policy_sources: dict[str, PolicyEntry] = {}
    count = 0

    def error(message: str, number: Optional[int]) -> None:
        nonlocal hidden
        if len(errors) < MAX_ERRORS:
            errors.append(Problem(message, line=number))
        else:
            hidden += 1

    for number, line, decode_error in _split_lines(text):
        if line is not None:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
        count += 1  # an undecodable line counts too: a flood of them stops at the limit
        if count > max_entries:
            if hidden:
                errors.append(_more(hidden))
                hidden = 0
            errors.append(Problem(
                f"more than {max_entries} entries; the limit is {max_entries} (rest of file not read)",
                line=number))
            break
        if line is None:
            error(decode_error, number)
            continue

        entry, message = _parse_line(number, stripped)
        if entry is None:
            error(message or "invalid line", number)
            continue

        if allow is not None and not allow.allows(entry.source.registry):
            error(f"source registry {entry.source.registry!r} is not on the allowed list; add it to "
                  f"{ALLOWLIST_SETTING} to allow it", number)
            continue

        if isinstance(entry, PolicyEntry):
            earlier_policy = policy_sources.get(entry.target_repository)
            if earlier_policy is not None and earlier_policy.source.name != entry.source.name:
                error(f"destination repository {entry.target_repository} is already written by the tag "
                      f"policy on line {earlier_policy.line} (source {earlier_policy.source}); "
                      f"this line's source is {entry.source}", number)
                continue
            policy_sources.setdefault(entry.target_repository, entry)
            policies.append(entry)
            continue

        if entry.source.tag is None and entry.source.digest is None:
            warnings.append(Problem(f"source {entry.source} has no tag: it imports ':{DEFAULT_TAG}', "
                                    f"which can change at any time; write the tag to make it explicit",
                                    line=number))

        key = (entry.target_repository,
               f":{entry.target_tag}" if entry.target_tag is not None else f"@{entry.source.digest}")
        earlier = seen.get(key)
        if earlier is not None:
            if _pull_reference(earlier.source) == _pull_reference(entry.source):
                error(f"duplicate of line {earlier.line} ({entry.source} => {entry.target}); "
                      "remove one of them", number)
            else:
                error(f"destination {entry.target} is already written by line {earlier.line} "
                      f"(source {earlier.source}); this line's source is {entry.source}", number)
            continue
        seen[key] = entry
        entries.append(entry)

    if hidden:
        errors.append(_more(hidden))
    if errors:
        return ManifestResult([], errors, content_hash, [], warnings, valid_entries=entries, valid_policies=policies)
    return ManifestResult(entries, errors, content_hash, policies, warnings)
