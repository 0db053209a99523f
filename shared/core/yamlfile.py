"""Reading a reviewed YAML file into data plus line-numbered problems.

Pure code: no I/O. Shared by the files operators review and upload (the build rule file,
``shared.core.rules``; the trust policy, ``shared.core.trust.parse``), so both read YAML the same
way and report problems the same way:

* :func:`decode` turns bytes into text strictly as UTF-8 (a BOM is allowed); a bad byte is one
  ``Problem`` with its line.
* :func:`load` reads one document with :class:`Yaml12Loader` (the bounded ``SafeLoader`` of
  ``shared.core.safeyaml``, YAML 1.2 booleans: only ``true``/``false``; ``yes``, ``no``, ``on`` and
  ``off`` stay strings) and returns the root node (which keeps line numbers), the data, the
  problems and whether they are fatal. Duplicate mapping keys (which YAML would silently collapse)
  are problems but not fatal. Whatever the YAML library raises (nesting too deep, a NUL byte, an
  alias bomb, a date such as 2026-13-01) becomes a line-numbered problem, never an exception.
* :class:`Problems` collects problems about the data; each is located by its path of keys and
  list indexes (:func:`locate`): the 1-based line of the key (or list item) it is about and a
  ``field`` such as ``rules[1].when.repository``. A problem in an aliased value is reported at the
  anchor's line.
* :func:`check_keys` and :func:`check_name` check what every named item of a top-level list (a rule,
  a scope) has in common: only known keys, and a ``name`` that is valid and unique in the list.

A file type subclasses :class:`Yaml12Loader` to set its own ``limits``.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Union

import yaml

from shared.core.builds import type_name
from shared.core.safeyaml import SafeLoader, yaml_problem
from shared.errors import Problem

__all__ = ["ITEM_NAME", "Problems", "Segment", "Yaml12Loader", "check_keys", "check_name", "decode", "format_path",
           "load", "locate"]

Segment = Union[str, int]

ITEM_NAME = re.compile(r"[a-z0-9-]{1,63}")
_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BOM = "\ufeff"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Yaml12Loader(SafeLoader):
    """The bounded SafeLoader with YAML 1.2 booleans: only true/false; ``on``, ``yes``... stay strings."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


# --- locating problems -----------------------------------------------------------------------

def format_path(segments: Sequence[Segment], sequence_at: Sequence[bool]) -> str:
    """``rules[0].when["a b"]``: keys joined with dots (quoted when not simple), indexes in brackets."""
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
    return line, format_path(segments, sequence_at)


class Problems:
    """Problems about a document, each located by the path of the value it is about."""

    def __init__(self, root: Optional[yaml.Node]) -> None:
        self.root = root
        self.items: list[Problem] = []

    def add(self, segments: Sequence[Segment], message: str) -> None:
        line, path = locate(self.root, segments)
        self.items.append(Problem(message, line=line, field=path or None))

    def line_of(self, segments: Sequence[Segment]) -> Optional[int]:
        return locate(self.root, segments)[0]


def check_keys(problems: Problems, at: Sequence[Segment], item: Any, allowed: Sequence[str], noun: str) -> None:
    """Each key of the list item at ``at`` that is not ``allowed`` is a problem on that key, naming the allowed ones."""
    for key in item:
        if key not in allowed:
            problems.add((*at, key), f"unknown key {str(key)!r} in a {noun}; allowed: {', '.join(allowed)}")


def check_name(problems: Problems, at: Sequence[Segment], item: Any, names: dict[str, int],
               noun: str) -> Optional[str]:
    """The ``name`` of the list item at ``at`` (``(list key, index)``), when it is given, a string of
    ``ITEM_NAME`` and not the name of an earlier item (``names``: name -> index, to which it is added);
    otherwise None, and the problem is added."""
    name = item.get("name")
    if name is None:
        problems.add(at, f"the {noun} has no name")
    elif not isinstance(name, str):
        problems.add((*at, "name"), f"name must be a string, not {type_name(name)}")
    elif not ITEM_NAME.fullmatch(name):
        problems.add((*at, "name"), f"invalid {noun} name {name!r}: 1-63 lowercase letters, digits or '-'")
    elif name in names:
        problems.add((*at, "name"), f"duplicate {noun} name {name!r} (first used on line "
                                    f"{problems.line_of((at[0], names[name]))})")
    else:
        names[name] = at[1]
        return name
    return None


# --- reading the YAML ------------------------------------------------------------------------

def decode(data: Union[str, bytes], what: str) -> tuple[Optional[str], Optional[Problem]]:
    """(text, None), or (None, a problem) when ``data`` is not valid UTF-8. A BOM is dropped.

    ``what`` names the file in the problem (``"rule file"``). Raises ``TypeError`` for input that
    is neither ``str`` nor ``bytes``.
    """
    if isinstance(data, str):
        return (data[1:] if data.startswith(_BOM) else data), None
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return None, Problem(f"not valid UTF-8 (byte 0x{data[e.start]:02x})", line=line)


def duplicate_keys(root: Optional[yaml.Node], problems: Problems) -> None:
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
                if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                    work.append((value, where, flags))
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    problems.items.append(Problem(
                        f"duplicate key {key.value!r} (first on line {first[key.value]}); YAML would keep only "
                        "the last one", line=line, field=format_path(where + (key.value,), flags + (False,))))
                else:
                    first[key.value] = line
                work.append((value, where + (key.value,), flags + (False,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                work.append((item, where + (i,), flags + (True,)))


def _failing_scalar_line(root: yaml.Node, loader: type) -> Optional[int]:
    """The line of the first scalar that cannot be constructed on its own (e.g. a bad date)."""
    constructor = loader("")
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


def load(text: str, loader: type = Yaml12Loader) -> tuple[Optional[yaml.Node], Any, list[Problem], bool]:
    """(root node, data, problems, fatal) for one YAML document. Duplicate keys are problems but not fatal."""
    try:
        reader = loader(text)  # the reader checks the characters here (a NUL is a ReaderError)
    except yaml.YAMLError as e:
        return None, None, [yaml_problem(e, text)], True
    try:
        try:
            root = reader.get_single_node()
        except (yaml.YAMLError, RecursionError) as e:
            return None, None, [yaml_problem(e, text)], True
        problems = Problems(root)
        duplicate_keys(root, problems)
        if root is None:
            return None, None, problems.items, False
        try:
            data = reader.construct_document(root)
        except (yaml.YAMLError, RecursionError) as e:
            return root, None, problems.items + [yaml_problem(e, text)], True
        except (ValueError, TypeError, OverflowError) as e:  # e.g. a date such as 2026-13-01
            line = _failing_scalar_line(root, loader)
            return root, None, problems.items + [Problem(f"YAML value could not be read: {e}", line=line)], True
        return root, data, problems.items, False
    finally:
        reader.dispose()
