"""The build rule file: which builds run when an image is pushed to the private registry.

Pure code: no I/O. Standard library plus PyYAML (a ``yaml.SafeLoader`` subclass only),
``shared.core`` and ``shared.errors``.

The file lives in the manifests container next to ``images.txt`` and is reviewed the same
way. It is YAML (JSON, being YAML, works too)::

    rules:
      - name: web-on-nginx            # unique, [a-z0-9-]{1,63}
        when:
          repository: library/nginx   # glob (fnmatch, case-sensitive) on the pushed repository
          tag: "1.27*"                # optional glob on the pushed tag
        build:                        # a docker build request, as in shared.core.builds
          source_location: https://git.example.com/team/web.git#main
          image_names: ["apps/web:{{.Run.ID}}", "apps/web:latest"]
          agent_pool: vnetpool
        digest_argument: BASE_IMAGE_DIGEST   # optional (this is the default)
      - name: api-task
        when: {repository: "base/*"}
        task: {task: build-api, agent_pool: vnetpool}
        outputs: ["apps/api"]         # repositories the task pushes to

* Top level: a mapping with one key, ``rules``, a list (``rules: []`` for none). An empty
  file is an error, so a truncated upload is not read as "no rules".
* A rule has ``name``, ``when``, exactly one of ``build`` (a docker build, see
  ``shared.core.builds``; its ``kind`` may be left out) or ``task`` (a task run), and
  optionally ``digest_argument`` and, for task rules, ``outputs``. Unknown keys are errors.
* ``when`` needs ``repository`` and/or ``tag``. Patterns are ``fnmatch`` globs (``*``, ``?``,
  ``[...]``) matched case-sensitively; the repository is the path inside the private registry
  (no host), lower case. A pattern without glob characters must be a valid repository / tag.
  Quote tags that YAML would read as numbers (``"1.27"``).
* Booleans are YAML 1.2 style: only ``true``/``false``. ``yes``, ``no``, ``on`` and ``off``
  are plain strings (so ``secret: yes`` is an error, and a key ``on:`` is the string "on").
* When a rule fires, the pushed image's digest is passed to the build as the argument named
  ``digest_argument`` (default ``BASE_IMAGE_DIGEST``), so the build must not define an
  argument of that name itself.
* Outputs are the repositories a rule pushes to: for ``build`` rules, derived from
  ``image_names`` (none when ``push`` is false; ``outputs`` is then not allowed); for ``task``
  rules, whatever ``outputs`` declares (default none -- the task's definition is not visible
  here, so declare them to get cycle checks; the runtime chain cut still applies).
* Cycles are refused: a rule whose outputs match its own ``when`` (it would trigger itself),
  and rules that trigger each other in a loop (A pushes what B watches, B pushes what A
  watches, through any number of rules). An output tag is compared with ``when.tag`` when it
  is a literal; a templated tag (``{{.Run.ID}}``) or a task output may have any tag.
* At runtime, :func:`chain_cut` cuts whatever the static check cannot see: a rule never fires
  for an image whose chain of producing rules (that of the run whose output images hold it, not
  what rules declare: ``shared.handlers.rules``) contains it; chains stop at ``BUILD_RULE_MAX_CHAIN``.

Validation is all-or-nothing and reports every problem as a ``Problem`` with the 1-based
``line`` (of the key, or of the list item, it is about) and a ``field`` path such as
``rules[1].when.repository`` or ``rules[0].build.image_names[1]``. Duplicate mapping keys
(which YAML would silently collapse) are errors. Anchors and aliases are allowed (up to
:data:`LIMITS`, see ``shared.core.safeyaml``); a problem in an aliased value is reported at the
anchor's line. Merge keys (``<<``) are not. Whatever the YAML library raises (nesting too
deep, a NUL byte, an alias bomb) becomes a line-numbered problem, never an exception.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import yaml

from shared.core.builds import (
    KIND_DOCKER,
    KIND_TASK,
    BuildSpec,
    check_build,
    is_valid_argument_name,
    type_name,
    with_argument,
)
from shared.core.safeyaml import Limits
from shared.core.yamlfile import Problems, Segment, Yaml12Loader, check_keys, check_name, decode, load, locate
from shared.core.reference import ReferenceSyntaxError, is_registry_component, parse_repository, validate_tag
from shared.errors import Problem, RuleFileError

__all__ = [
    "DEFAULT_DIGEST_ARGUMENT",
    "MAX_CHAIN",
    "Rule",
    "RuleSet",
    "chain_allows",
    "chain_cut",
    "parse_rules",
]

DEFAULT_DIGEST_ARGUMENT = "BASE_IMAGE_DIGEST"
MAX_CHAIN = 5
MAX_BYTES = 1_048_576
LIMITS = Limits(max_depth=32, max_aliases=64, max_nodes=50_000)  # a rule file is small and shallow

_RULE_KEYS = ("name", "when", "build", "task", "digest_argument", "outputs")
_WHEN_KEYS = ("repository", "tag")
_GLOB_CHARS = re.compile(r"[*?\[]")
_REPOSITORY_PATTERN = re.compile(r"[a-z0-9._/*?\[\]!-]+")
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
_TEMPLATE = re.compile(r"\{\{.*?\}\}")

# --- the result types --------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One validated rule. ``outputs`` are the repositories it pushes to."""

    name: str
    line: int
    repository: Optional[str]  # glob; None matches any repository
    tag: Optional[str]  # glob; None matches any tag (and untagged pushes)
    spec: BuildSpec
    digest_argument: str = DEFAULT_DIGEST_ARGUMENT
    outputs: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.spec.kind

    def matches(self, repository: str, tag: Optional[str]) -> bool:
        """Does a push of ``repository:tag`` (``tag=None``: pushed by digest only) fire this rule?"""
        if self.repository is not None and not fnmatchcase(repository, self.repository):
            return False
        if self.tag is not None and (tag is None or not fnmatchcase(tag, self.tag)):
            return False
        return True

    def spec_for(self, digest: str) -> BuildSpec:
        """The build to run for a push of ``digest``: the spec plus the digest argument."""
        return with_argument(self.spec, self.digest_argument, digest)

    def to_dict(self) -> dict:
        when = {k: v for k, v in (("repository", self.repository), ("tag", self.tag)) if v is not None}
        body = "build" if self.kind == KIND_DOCKER else "task"
        return {"name": self.name, "line": self.line, "when": when, body: self.spec.redacted(),
                "digest_argument": self.digest_argument, "outputs": list(self.outputs)}


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file, rules in file order."""

    rules: tuple[Rule, ...] = ()
    content_hash: str = ""

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Optional[Rule]:
        return next((r for r in self.rules if r.name == name), None)

    def matching(self, repository: str, tag: Optional[str]) -> list[Rule]:
        """The rules a push of ``repository:tag`` fires, in file order."""
        return [r for r in self.rules if r.matches(repository, tag)]

    def to_dict(self) -> dict:
        """For records and ``--plan`` output; secret argument values are ``***``."""
        return {"content_hash": self.content_hash, "rules": [r.to_dict() for r in self.rules]}


def chain_cut(chain: Sequence[str], rule_name: str, max_chain: int = MAX_CHAIN) -> Optional[str]:
    """Why ``rule_name`` may not fire for an image pushed by a build of the rules in ``chain`` (oldest
    first), None when it may: it is in the chain already (the loop), or the chain holds ``max_chain``."""
    if max_chain < 1:
        raise ValueError(f"max_chain must be at least 1, got {max_chain}")
    shown = " -> ".join(chain)
    if rule_name in chain:
        return f"{rule_name} already produced this image (chain {shown})"
    if len(chain) >= max_chain:
        return f"the chain {shown} reached its limit of {max_chain} rule{'s' if max_chain != 1 else ''}"
    return None


def chain_allows(chain: Sequence[str], rule_name: str, max_chain: int = MAX_CHAIN) -> bool:
    """May ``rule_name`` fire for an image produced by the rules in ``chain``? (see :func:`chain_cut`)"""
    return chain_cut(chain, rule_name, max_chain) is None


# --- locating problems and reading the YAML (shared.core.yamlfile) ----------------------------

def _segments_of(pointer: Optional[str]) -> list[str]:
    if not pointer:
        return []
    return [s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:]]


def _decode(text: Union[str, bytes]) -> str:
    decoded, problem = decode(text, "rule file")
    if problem is not None:
        raise RuleFileError("the rule file is not valid UTF-8", [problem])
    return decoded  # type: ignore[return-value]


class _Loader(Yaml12Loader):
    """The bounded YAML 1.2 loader with the rule file's limits."""

    limits = LIMITS


def _load(text: str) -> tuple[Optional[yaml.Node], Any, list[Problem], bool]:
    """(root node, data, problems, fatal). Duplicate keys are problems but not fatal."""
    return load(text, _Loader)


# --- validation --------------------------------------------------------------------------------

def _check_repository_pattern(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        return f"repository must be a string pattern, not {type_name(value)}"
    if not value:
        return "repository pattern is empty"
    if value != value.lower():
        return f"repository pattern {value!r} must be lowercase, as repositories are"
    if ":" in value or "@" in value:
        return f"repository pattern {value!r} must not include a tag or digest; use when.tag for the tag"
    first, slash, _ = value.partition("/")
    if slash and is_registry_component(first):
        return (f"repository pattern {value!r} must not include a registry host ({first!r}); "
                "it matches repositories inside the private registry")
    if not _REPOSITORY_PATTERN.fullmatch(value):
        return (f"repository pattern {value!r} has characters a repository cannot contain "
                "(allowed: a-z 0-9 . _ - / and the glob characters * ? [ ] !)")
    if not _GLOB_CHARS.search(value):
        try:
            parse_repository(value)
        except ReferenceSyntaxError as e:
            return f"invalid repository {value!r}: {e.reason}"
    return None


def _check_tag_pattern(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        hint = " (quote it, e.g. \"1.27\")" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        return f"tag must be a string pattern, not {type_name(value)}{hint}"
    if not value:
        return "tag pattern is empty"
    if not _TAG_PATTERN.fullmatch(value):
        return (f"tag pattern {value!r} has characters a tag cannot contain "
                "(allowed: letters, digits, _ . - and the glob characters * ? [ ] !)")
    if not _GLOB_CHARS.search(value):
        try:
            validate_tag(value)
        except ReferenceSyntaxError as e:
            return f"invalid tag {value!r}: {e.reason}"
    return None


@dataclass
class _Draft:
    """A rule that validated on its own; kept for the cycle check."""

    index: int
    rule: Rule
    pushes: list[tuple[str, Optional[str]]] = field(default_factory=list)  # (repository, literal tag or None)


def _pushes(rule: Rule) -> list[tuple[str, Optional[str]]]:
    if rule.kind != KIND_DOCKER:
        return [(repo, None) for repo in rule.outputs]
    if not rule.spec.push:
        return []
    out = []
    for name in rule.spec.image_names:
        repo, _, tag = name.rpartition(":")
        out.append((repo, None if _TEMPLATE.search(tag) else tag))
    return out


def _triggers(pushes: list[tuple[str, Optional[str]]], rule: Rule) -> Optional[str]:
    """The first pushed repository (as text) that would fire ``rule``, or None."""
    for repo, tag in pushes:
        if rule.repository is not None and not fnmatchcase(repo, rule.repository):
            continue
        if rule.tag is not None and tag is not None and not fnmatchcase(tag, rule.tag):
            continue
        return f"{repo}:{tag}" if tag is not None else repo
    return None


def _check_rule(i: int, item: Any, problems: Problems, names: dict[str, int]) -> Optional[_Draft]:
    at: tuple[Segment, ...] = ("rules", i)
    if not isinstance(item, Mapping):
        problems.add(at, f"a rule must be a mapping with name, when and build or task, not {type_name(item)}")
        return None
    before = len(problems.items)
    line, _ = locate(problems.root, at)
    check_keys(problems, at, item, _RULE_KEYS, "rule")
    name = check_name(problems, at, item, names, "rule")

    repository = tag = None
    when = item.get("when")
    if "when" not in item:
        problems.add(at, "the rule has no 'when' (which pushes fire it)")
    elif not isinstance(when, Mapping):
        problems.add(at + ("when",), f"when must be a mapping with repository and/or tag, not {type_name(when)}")
    elif not when:
        problems.add(at + ("when",), "when is empty: give repository and/or tag, or the rule would fire on every push")
    else:
        for key in when:
            if key not in _WHEN_KEYS:
                problems.add(at + ("when", key), f"unknown key {str(key)!r} in when; allowed: repository, tag")
        if "repository" in when:
            message = _check_repository_pattern(when["repository"])
            if message:
                problems.add(at + ("when", "repository"), message)
            repository = when["repository"]
        if "tag" in when:
            message = _check_tag_pattern(when["tag"])
            if message:
                problems.add(at + ("when", "tag"), message)
            tag = when["tag"]

    spec = None
    has_build, has_task = "build" in item, "task" in item
    if has_build and has_task:
        problems.add(at + ("task",), "give either build or task, not both")
    elif not has_build and not has_task:
        problems.add(at, "the rule needs a build (a docker build) or a task (a task run)")
    else:
        body_key, kind = ("build", KIND_DOCKER) if has_build else ("task", KIND_TASK)
        spec, build_problems = check_build(item[body_key], kind=kind)
        for p in build_problems:
            problems.add(at + (body_key, *_segments_of(p.field)), p.message)

    outputs: tuple[str, ...] = ()
    if "outputs" in item:
        raw = item["outputs"]
        if has_build and not has_task:
            problems.add(at + ("outputs",), "outputs is only for task rules: a build's outputs come from its "
                                            "image_names")
        elif not isinstance(raw, list):
            problems.add(at + ("outputs",), f"outputs must be a list of repositories, not {type_name(raw)}")
        else:
            seen: dict[str, int] = {}
            for j, repo in enumerate(raw):
                if not isinstance(repo, str):
                    problems.add(at + ("outputs", j), f"an output must be a repository string, not {type_name(repo)}")
                    continue
                try:
                    parse_repository(repo)
                except ReferenceSyntaxError as e:
                    problems.add(at + ("outputs", j), f"invalid output repository {repo!r}: {e.reason}")
                    continue
                if repo in seen:
                    problems.add(at + ("outputs", j), f"output {repo!r} is listed twice (also at index {seen[repo]})")
                    continue
                seen[repo] = j
            outputs = tuple(seen)

    digest_argument = DEFAULT_DIGEST_ARGUMENT
    if "digest_argument" in item:
        value = item["digest_argument"]
        if not is_valid_argument_name(value):
            shown = repr(value) if isinstance(value, str) else type_name(value)
            problems.add(at + ("digest_argument",),
                         f"invalid digest_argument {shown}: a build argument name ([A-Za-z_][A-Za-z0-9_]*)")
        else:
            digest_argument = value
    if spec is not None and spec.argument(digest_argument) is not None:
        body_key = "build" if spec.kind == KIND_DOCKER else "task"
        problems.add(at + (body_key, "arguments", digest_argument),
                     f"argument {digest_argument} clashes with the digest argument: the pushed digest is passed "
                     "under this name; rename the argument or set digest_argument")

    if len(problems.items) != before or spec is None:
        return None
    if spec.kind == KIND_DOCKER:
        outputs = spec.outputs
    rule = Rule(name, line or 0, repository, tag, spec, digest_argument, outputs)
    return _Draft(i, rule, _pushes(rule))


def _strongly_connected(edges: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative; components with members in ascending order."""
    n = len(edges)
    index: list[Optional[int]] = [None] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] is not None:
            continue
        work = [(root, 0)]
        while work:
            v, i = work[-1]
            if i == 0 and index[v] is None:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            if i < len(edges[v]):
                work[-1] = (v, i + 1)
                w = edges[v][i]
                if index[w] is None:
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], index[w])  # type: ignore[arg-type]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    component.append(w)
                    if w == v:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle(start: int, members: set[int], edges: list[list[int]]) -> list[int]:
    """Nodes of a shortest cycle through ``start`` inside ``members`` (start first, not repeated)."""
    parent: dict[int, int] = {start: start}
    queue = [start]
    for v in queue:
        for w in edges[v]:
            if w == start and v == start:
                continue  # a self-loop is reported on its own
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    return [start]  # unreachable for a real component


def _check_cycles(drafts: list[_Draft], problems: Problems) -> None:
    n = len(drafts)
    edges: list[list[int]] = [[] for _ in range(n)]
    via: dict[tuple[int, int], str] = {}
    for a, source in enumerate(drafts):
        for b, target in enumerate(drafts):
            pushed = _triggers(source.pushes, target.rule)
            if pushed is not None:
                edges[a].append(b)
                via[(a, b)] = pushed

    for a, draft in enumerate(drafts):
        if (a, a) in via:
            problems.add(("rules", draft.index),
                         f"rule {draft.rule.name!r} would trigger itself: it pushes {via[(a, a)]}, which its own "
                         f"when ({_describe_when(draft.rule)}) matches")

    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        cycle = _shortest_cycle(component[0], set(component), edges)
        hops = list(zip(cycle, cycle[1:] + cycle[:1]))
        names = " -> ".join(drafts[v].rule.name for v in cycle + cycle[:1])
        detail = "; ".join(f"{drafts[a].rule.name} pushes {via[(a, b)]}, which {drafts[b].rule.name} watches"
                           for a, b in hops)
        message = f"rules trigger each other in a cycle: {names} ({detail})"
        if len(component) > len(cycle):
            message += f"; rules in the loop: {', '.join(drafts[v].rule.name for v in component)}"
        problems.add(("rules", drafts[component[0]].index), message)


def _describe_when(rule: Rule) -> str:
    parts = [f"{k} {v!r}" for k, v in (("repository", rule.repository), ("tag", rule.tag)) if v is not None]
    return ", ".join(parts)


def parse_rules(text: Union[str, bytes], *, max_bytes: int = MAX_BYTES) -> RuleSet:
    """Parse and validate a whole rule file; raise ``RuleFileError`` listing every problem.

    ``bytes`` are decoded strictly as UTF-8 (a BOM is allowed). Raises ``TypeError`` for input
    that is neither ``str`` nor ``bytes``.
    """
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass") \
        if isinstance(text, str) else None
    if raw is None:
        raise TypeError(f"rule file must be str or bytes, not {type(text).__name__}")
    content_hash = hashlib.sha256(raw).hexdigest()
    if len(raw) > max_bytes:
        raise RuleFileError("the rule file is too large", [Problem(
            f"rule file is {len(raw)} bytes; the limit is {max_bytes} bytes")])
    decoded = _decode(text)

    root, data, load_problems, fatal = _load(decoded)
    if fatal:
        _raise(load_problems)
    problems = Problems(root)
    problems.items.extend(load_problems)
    if root is None or data is None:
        problems.items.append(Problem("the rule file is empty; write 'rules: []' for no rules",
                                      line=1 if root is None else root.start_mark.line + 1))
        _raise(problems.items)
    if not isinstance(data, Mapping):
        problems.add((), f"the rule file must be a mapping with a 'rules' list, not {type_name(data)}")
        _raise(problems.items)

    for key in data:
        if key != "rules":
            problems.add((key,), f"unknown top-level key {str(key)!r}; the file has one key, rules")
    rules = data.get("rules")
    drafts: list[_Draft] = []
    if "rules" not in data:
        problems.add((), "the rule file has no 'rules' list (write 'rules: []' for no rules)")
    elif not isinstance(rules, list):
        problems.add(("rules",), f"rules must be a list, not {type_name(rules)} (write 'rules: []' for no rules)")
    else:
        names: dict[str, int] = {}
        for i, item in enumerate(rules):
            draft = _check_rule(i, item, problems, names)
            if draft is not None:
                drafts.append(draft)
    _check_cycles(drafts, problems)

    if problems.items:
        _raise(problems.items)
    return RuleSet(tuple(d.rule for d in drafts), content_hash)


def _raise(problems: list[Problem]) -> None:
    ordered = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
    n = len(ordered)
    raise RuleFileError(f"the rule file has {n} problem{'s' if n != 1 else ''}", ordered)

