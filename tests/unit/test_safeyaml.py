"""Hostile rule files end in line-numbered validation errors, quickly and in little memory."""
import time
import tracemalloc

import pytest
import yaml

from shared.core.rules import parse_rules
from shared.core.safeyaml import Limits, SafeLoader, compose_all
from shared.errors import RuleFileError
from tests.unit import yaml_bombs

BOMBS = {
    "1,000 nested brackets": (yaml_bombs.nested_brackets(), 1, "nested more than 32 levels deep"),
    "a NUL byte": (yaml_bombs.nul_byte(), 2, "0x00 is not allowed"),
    "814-byte merge-key bomb": (yaml_bombs.merge_bomb(), 3, "merge keys (<<) are not allowed"),
    "billion laughs": (yaml_bombs.alias_bomb(), 6, "nodes once aliases are expanded"),
    "500 aliases of one anchor": (yaml_bombs.wide_alias_bomb(500), 2, "more than 64 aliases"),
    "1,000 nested block sequences": ("rules:\n" + "- " * 1000 + "x\n", 2, "nested more than 32 levels deep"),
}


def test_the_bombs_are_what_they_claim():
    assert 1900 <= len(BOMBS["1,000 nested brackets"][0]) <= 2100
    assert len(BOMBS["814-byte merge-key bomb"][0].encode()) == 814
    assert b"\x00" in BOMBS["a NUL byte"][0]


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_is_a_validation_error_within_100ms_and_20mb(name):
    text, line, fragment = BOMBS[name]
    tracemalloc.start()
    try:
        with pytest.raises(RuleFileError) as info:
            parse_rules(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = min(_timed(text) for _ in range(3))  # without tracemalloc's overhead; best of 3 on a busy machine
    [problem] = info.value.problems
    assert problem.line == line, str(problem)
    assert fragment in problem.message
    # generous bounds: a naive SafeLoader takes seconds and tens of MB on the merge bomb,
    # and raises RecursionError / ReaderError on the brackets and the NUL
    assert elapsed < 0.1, f"{elapsed:.3f}s"
    assert peak < 20 * 1024 * 1024, f"{peak} bytes"


def _timed(text) -> float:
    started = time.perf_counter()
    with pytest.raises(RuleFileError):
        parse_rules(text)
    return time.perf_counter() - started


def test_merge_bomb_is_costly_to_a_naive_loader_by_construction():
    """Sanity check on the fixture, at a smaller size: each extra level multiplies the work."""
    small, bigger = yaml_bombs.merge_bomb(levels=3, size=0), yaml_bombs.merge_bomb(levels=4, size=0)

    def nodes(text):
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loader = yaml.SafeLoader("")
        loader.flatten_mapping(node.value[-2][1])  # the deepest merge level
        return len(node.value[-2][1].value)
    assert nodes(bigger) >= 5 * nodes(small)


def test_small_anchors_and_aliases_still_work():
    nodes = list(compose_all("a: &x [1, 2]\nb: *x\n---\nc: 3\n"))
    assert len(nodes) == 2 and nodes[0].value[1][1] is nodes[0].value[0][1]


def test_recursive_alias_is_refused():
    with pytest.raises(yaml.MarkedYAMLError) as info:
        list(compose_all("a: &x [1, *x]\n"))
    assert "recursive" in str(info.value)


def test_limits_apply_to_the_whole_stream():
    text = "".join(f"---\na: &x{i} [1]\nb: *x{i}\n" for i in range(5))
    with pytest.raises(yaml.MarkedYAMLError) as info:
        list(compose_all(text, Limits(max_aliases=3)))
    assert "more than 3 aliases" in str(info.value)
    assert info.value.problem_mark.line == 11  # the fourth alias, 0-based line


def test_loader_is_a_safe_loader():
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("!!python/object/apply:os.system [ls]\n", Loader=SafeLoader)


def test_rule_files_are_parsed_once_per_content(monkeypatch):
    from shared.handlers import rules as handler

    calls = []
    real = handler.parse_rules
    monkeypatch.setattr(handler, "parse_rules", lambda data: calls.append(data) or real(data))
    monkeypatch.setattr(handler, "_cache", type(handler._cache)())
    good, bad = b"rules: []\n", yaml_bombs.nested_brackets().encode()
    for _ in range(3):
        assert len(handler.parse_cached(good)) == 0
        with pytest.raises(RuleFileError) as info:
            handler.parse_cached(bad)
        assert info.value.problems[0].line == 1
    assert calls == [good, bad]


@pytest.mark.parametrize("text", [
    yaml_bombs.nested_brackets(), "a: &x [1]\nb: {<<: *x}\n", "a: &x [*x]\n", "a: *y\n", "a: [\n",
    "a: café\nb: 1\n\x00\n", yaml_bombs.merge_bomb(), yaml_bombs.alias_bomb(), "rules:\n" + "- " * 1000 + "x\n",
])
def test_the_libyaml_loader_reports_the_same_lines(text):
    from shared.core.safeyaml import FastSafeLoader, yaml_problem

    def problem(loader):
        with pytest.raises((yaml.YAMLError, RecursionError)) as info:
            list(compose_all(text, loader=loader))
        return yaml_problem(info.value, text)
    slow, fast = problem(SafeLoader), problem(FastSafeLoader)
    assert slow.line == fast.line
    assert slow.message.split(":")[0] == fast.message.split(":")[0]


def test_the_libyaml_loader_composes_the_same_nodes():
    from pathlib import Path

    from shared.core.safeyaml import FastSafeLoader

    text = (Path(__file__).resolve().parents[1] / "fixtures" / "discover" / "shop.yaml").read_text()

    def shape(node):
        if isinstance(node, yaml.ScalarNode):
            return (node.tag, node.value, node.start_mark.line, node.start_mark.column)
        children = node.value if isinstance(node, yaml.SequenceNode) else [c for kv in node.value for c in kv]
        return (node.tag, node.start_mark.line, [shape(c) for c in children])
    assert [shape(n) for n in compose_all(text)] == [shape(n) for n in compose_all(text, loader=FastSafeLoader)]
