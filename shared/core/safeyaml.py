"""Reading untrusted YAML without letting it cost more than its size.

Pure code: no I/O. PyYAML's ``SafeLoader`` already refuses to build arbitrary objects; what it
does not bound is *work*: 1,000 nested brackets recurse past Python's limit (``RecursionError``),
a few hundred bytes of anchors, aliases and merge keys (``<<``) expand into millions of
entries (a "billion laughs"), and a NUL byte surfaces as a ``ReaderError`` from the
constructor. :class:`SafeLoader` checks, while the node graph is composed and before anything
is constructed:

* nesting depth (``max_depth`` collections inside each other);
* aliases: at most ``max_aliases`` per stream, no alias to an anchor that is still open
  (a recursive structure), and at most ``max_nodes`` nodes once every alias is expanded
  (the size a consumer that walks or serialises the data would see);
* merge keys: ``<<`` is refused outright (write the keys out).

Going over a limit raises :class:`YamlLimitError`, a ``yaml.MarkedYAMLError`` carrying the
line of the offending node, so callers report it like any other YAML error.
:func:`yaml_problem` turns any YAML error into a line-numbered ``Problem``; :func:`compose_all`
reads a multi-document stream into nodes (keeping their marks, i.e. line numbers).
:class:`FastSafeLoader` applies the same checks over libyaml's parser (when PyYAML has it),
about 15 times faster on a large ``helm template`` output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from shared.errors import Problem

__all__ = ["FastSafeLoader", "Limits", "SafeLoader", "YamlLimitError", "compose_all", "yaml_problem"]

MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Limits:
    """What one stream may cost. ``max_nodes`` counts nodes with every alias expanded."""

    max_depth: int = 64
    max_aliases: int = 32
    max_nodes: int = 200_000


class YamlLimitError(ComposerError):
    """The document goes over a :class:`Limits` bound (or uses a merge key)."""


class _Bounded:
    """The limit checks, mixed in before PyYAML's ``Composer`` (and ``Scanner`` when pure Python)."""

    limits: Limits = Limits()

    def _start_budget(self) -> None:
        self._depth = 0
        self._aliases = 0
        self._expanded = 0
        self._weight: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def _over(self, what: str, mark) -> YamlLimitError:
        return YamlLimitError(None, None, what, mark)

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > self.limits.max_aliases:
                raise self._over(f"more than {self.limits.max_aliases} aliases; the limit keeps a small file "
                                 "from expanding into a huge one", event.start_mark)
            node = self.anchors.get(event.anchor)
            if isinstance(node, yaml.CollectionNode) and node.end_mark is None:  # still being composed
                raise self._over(f"alias *{event.anchor} refers to its own enclosing node (a recursive "
                                 "structure)", event.start_mark)
            node = super().compose_node(parent, index)  # the undefined-alias error stays PyYAML's
            self._count(self._weight.get(id(node), 1), event.start_mark)
            return node
        event = self.peek_event()
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if collection:
            self._depth += 1
            if self._depth > self.limits.max_depth:
                raise self._over(f"nested more than {self.limits.max_depth} levels deep", event.start_mark)
        before = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1
        self._count(1, event.start_mark)
        self._weight[id(node)] = self._expanded - before
        return node

    # the scanner looks ahead over every open flow collection for a possible ``key:``, so deep
    # ``[[[[`` costs quadratic time before the composer sees a node: stop it in the scanner
    def fetch_flow_collection_start(self, TokenClass):
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > self.limits.max_depth:
            raise self._over(f"nested more than {self.limits.max_depth} levels deep", self.get_mark())

    def add_indent(self, column):
        added = super().add_indent(column)
        if added and len(self.indents) > self.limits.max_depth:
            raise self._over(f"nested more than {self.limits.max_depth} levels deep", self.get_mark())
        return added

    def compose_document(self):
        self._weight.clear()
        return super().compose_document()

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag == MERGE_TAG:
                raise self._over("merge keys (<<) are not allowed; write the keys out", key.start_mark)
        return node

    def _count(self, n: int, mark) -> None:
        self._expanded += n
        if self._expanded > self.limits.max_nodes:
            raise self._over(f"more than {self.limits.max_nodes} nodes once aliases are expanded", mark)


class SafeLoader(_Bounded, yaml.SafeLoader):
    """``yaml.SafeLoader`` that enforces :class:`Limits` while scanning and composing.

    Set ``limits`` on the instance (or a subclass) before reading; the budget for aliases and
    expanded nodes is for the whole stream, not per document.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._start_budget()


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class FastSafeLoader(_Bounded, Composer, CParser, SafeConstructor, Resolver):
        """The same limits over libyaml's scanner and parser (several times faster on big streams).

        libyaml produces the events; the nodes are composed here, in Python, so every check of
        :class:`SafeLoader` applies. The scanner-level depth hooks are not called by libyaml;
        its look-ahead is bounded (1,024 characters) and in C, and the composer's depth check
        stops a deep document after ``max_depth`` levels.
        """

        def __init__(self, stream) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_budget()
else:  # pragma: no cover - PyYAML built without libyaml
    FastSafeLoader = SafeLoader  # type: ignore[misc,assignment]


def compose_all(text: str, limits: Limits = Limits(), loader: type = SafeLoader) -> Iterator[yaml.Node]:
    """The root node of each document in ``text`` (``None`` documents are skipped)."""
    reader = loader(text)
    reader.limits = limits
    try:
        while reader.check_node():
            node = reader.get_node()
            if node is not None:
                yield node
    finally:
        reader.dispose()


def yaml_problem(error: BaseException, text: str) -> Problem:
    """A line-numbered ``Problem`` for anything reading YAML can raise."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        what = ", ".join(p for p in (error.context, error.problem) if p) or "unreadable YAML"
        label = "YAML too costly" if isinstance(error, YamlLimitError) else "YAML syntax error"
        return Problem(f"{label}: {what}", line=mark.line + 1 if mark else None)
    if isinstance(error, yaml.reader.ReaderError):
        position = error.position if isinstance(error.position, int) else None
        if position is None:
            line = None
        elif error.encoding == "?":  # libyaml reports a byte offset into the UTF-8 text
            line = text.encode("utf-8", "surrogatepass").count(b"\n", 0, position) + 1
        else:
            line = text.count("\n", 0, position) + 1
        character = error.character
        shown = f"0x{character:02x}" if isinstance(character, int) else repr(character)
        return Problem(f"YAML error: character {shown} is not allowed in YAML text ({error.reason})", line=line)
    if isinstance(error, RecursionError):
        return Problem("YAML error: nested too deeply to read")
    reason = getattr(error, "reason", None) or (str(error).splitlines() or ["unreadable YAML"])[0]
    return Problem(f"YAML error: {reason}")
