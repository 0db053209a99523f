"""Reviewed YAML files (the build rule file, the trust policy): read with bounded cost, every problem
placed at its line and path.

Pure code: no I/O. PyYAML's node graph keeps line numbers, so a problem about a value is reported at
the line of its key (or list item) with a path such as ``rules[1].when.repository``:

* :func:`decode` takes ``str`` or ``bytes`` (strict UTF-8, a BOM dropped; a bad byte is an error with
  its line);
* :func:`load` reads one document with the bounded :class:`Loader` (``shared.core.safeyaml``: depth,
  aliases, expanded size; no merge keys) and YAML 1.2 booleans (only ``true``/``false``), and reports
  repeated mapping keys (which YAML would silently collapse) as problems;
* :class:`Problems` collects problems for a document: ``add(("rules", 1, "when"), "message")``
  locates the node (the deepest one that exists) and formats its path.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Union

import yaml

from shared.core.safeyaml import Limits, SafeLoader, yaml_problem
from shared.errors import Problem, ValidationError

__all__ = ["Loader", "Problems", "Segment", "decode", "load", "locate", "segments_of"]

Segment = Union[str, int]
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BOM = "\ufeff"


def _format_path(segments: Sequence[Segment], sequence_at: Sequence[bool]) -> str:
    out = ""
    for seg, is_index in zip(segments, sequence_at):
        if is_index:
            out += f"[{seg}]"
        elif isinstance(seg, str) and _SIMPLE_KEY.fullmatch(seg):
            out += f".{seg}" if out else seg
        else:
            text = str(seg).replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{text}"]'
    return out


def locate(root: Optional[yaml.Node], segments: Sequence[Segment]) -> tuple[Optional[int], str]:
    """(line, path) of the node at ``segments``; the line of the deepest node that exists."""
    line = root.start_mark.line + 1 if root is not None else None
    node = root
    sequence_at: list[bool] = []
    for seg in segments:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value
                          if isinstance(k, yaml.ScalarNode) and k.value == str(seg)), None)
            if match is not None:
                line, node = match[0].start_mark.line + 1, match[1]
                sequence_at.append(False)
                continue
        elif isinstance(node, yaml.SequenceNode) and str(seg).isdigit() and int(seg) < len(node.value):
            node = node.value[int(seg)]
            line = node.start_mark.line + 1
            sequence_at.append(True)
            continue
        node = None
        sequence_at.append(isinstance(seg, int))
    return line, _format_path(segments, sequence_at)


def segments_of(pointer: Optional[str]) -> list[str]:
    if not pointer:
        return []
    return [s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:]]


class Problems:
    """Problems of one file, each placed at the line and path of the node it is about (``add``)."""

    def __init__(self, root: Optional[yaml.Node]) -> None:
        self.root = root
        self.items: list[Problem] = []

    def add(self, segments: Sequence[Segment], message: str) -> None:
        line, path = locate(self.root, segments)
        self.items.append(Problem(message, line=line, field=path or None))


# --- reading the YAML ------------------------------------------------------------------------

def decode(text: Union[str, bytes], *, what: str, error: type[ValidationError]) -> str:
    """The file's text (a UTF-8 BOM dropped); bytes that are not UTF-8 raise ``error`` with the line."""
    if isinstance(text, str):
        return text[1:] if text.startswith(_BOM) else text
    if not isinstance(text, bytes):
        raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        line = text.count(b"\n", 0, e.start) + 1
        raise error(f"the {what} is not valid UTF-8", [Problem(
            f"not valid UTF-8 (byte 0x{text[e.start]:02x})", line=line)]) from None


def _duplicate_keys(root: Optional[yaml.Node], problems: Problems) -> None:
    """Report repeated keys in any mapping (YAML would keep only the last)."""
    if root is None:
        return
    seen_nodes: set[int] = set()
    work: list[tuple[yaml.Node, tuple[Segment, ...], tuple[bool, ...]]] = [(root, (), ())]
    while work:
        node, where, flags = work.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    work.append((value, where, flags))
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    problems.items.append(Problem(
                        f"duplicate key {key.value!r} (first on line {first[key.value]}); YAML would keep only "
                        "the last one", line=line, field=_format_path(where + (key.value,), flags + (False,))))
                else:
                    first[key.value] = line
                work.append((value, where + (key.value,), flags + (False,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                work.append((item, where + (i,), flags + (True,)))


def _failing_scalar_line(root: yaml.Node) -> Optional[int]:
    """The line of the first scalar that cannot be constructed on its own (e.g. a bad date)."""
    constructor = Loader("")
    seen: set[int] = set()
    work = [root]
    while work:
        node = work.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                return node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            work.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            work.extend(n for pair in reversed(node.value) for n in reversed(pair))
    return None


class Loader(SafeLoader):
    """The bounded SafeLoader with YAML 1.2 booleans: only true/false; ``on``, ``yes``... stay strings.
    Its ``limits`` are set per instance by :func:`load`."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load(text: str, limits: Limits) -> tuple[Optional[yaml.Node], Any, list[Problem], bool]:
    """(root node, data, problems, fatal). Duplicate keys are problems but not fatal; whatever the YAML
    library raises (nesting too deep, a NUL byte, an alias bomb, a bad date) is a line-numbered problem."""
    try:
        loader = Loader(text)  # the reader checks the characters here (a NUL is a ReaderError)
        loader.limits = limits
    except yaml.YAMLError as e:
        return None, None, [yaml_problem(e, text)], True
    try:
        try:
            root = loader.get_single_node()
        except (yaml.YAMLError, RecursionError) as e:
            return None, None, [yaml_problem(e, text)], True
        problems = Problems(root)
        _duplicate_keys(root, problems)
        if root is None:
            return None, None, problems.items, False
        try:
            data = loader.construct_document(root)
        except (yaml.YAMLError, RecursionError) as e:
            return root, None, problems.items + [yaml_problem(e, text)], True
        except (ValueError, TypeError, OverflowError) as e:  # e.g. a date such as 2026-13-01
            line = _failing_scalar_line(root)
            return root, None, problems.items + [Problem(f"YAML value could not be read: {e}", line=line)], True
        return root, data, problems.items, False
    finally:
        loader.dispose()
