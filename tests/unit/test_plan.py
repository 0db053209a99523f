import pytest

from shared.core.manifest import Entry, parse_manifest
from shared.core.plan import Action, Plan, PlanItem, decide, import_mode

SRC = "sha256:" + "11" * 32
DST = "sha256:" + "22" * 32
PINNED = "sha256:" + "33" * 32


def entry(line: str) -> Entry:
    [e] = parse_manifest(line).entries
    return e


TAGGED = entry("quay.io/a/b:1 => x/y")


@pytest.mark.parametrize("source_digest, target_digest, error, action", [
    (SRC, DST, "registry said 404", Action.ERROR),
    (None, DST, None, Action.ERROR),
    (None, None, None, Action.ERROR),
    (SRC, None, None, Action.NEW),
    (SRC, SRC, None, Action.UNCHANGED),
    (SRC, DST, None, Action.UPDATE),
])
def test_decide_rules(source_digest, target_digest, error, action):
    assert decide(TAGGED, source_digest, target_digest, error).action is action


def test_error_message_is_kept():
    item = decide(TAGGED, SRC, None, "upstream timed out")
    assert item.error == "upstream timed out"


def test_unresolved_source_gets_an_error_message():
    item = decide(TAGGED, None, None)
    assert item.action is Action.ERROR
    assert item.error == "source digest could not be resolved"


def test_non_error_items_have_no_error():
    assert decide(TAGGED, SRC, DST).error is None


def test_digest_comparison_ignores_case():
    assert decide(TAGGED, SRC, SRC.upper().replace("SHA256", "sha256")).action is Action.UNCHANGED


@pytest.mark.parametrize("line", [f"quay.io/a/b@{PINNED} => x/y", f"quay.io/a/b:1@{PINNED} => x/y"])
def test_pinned_digest_is_the_source_digest(line):
    pinned = entry(line)
    assert decide(pinned, None, None).action is Action.NEW
    assert decide(pinned, None, None).source_digest == PINNED
    assert decide(pinned, SRC, PINNED).action is Action.UNCHANGED  # resolved value is ignored
    assert decide(pinned, SRC, DST).source_digest == PINNED


def test_pinned_entry_with_error_is_still_an_error():
    assert decide(entry(f"quay.io/a/b@{PINNED}"), None, None, "boom").action is Action.ERROR


def test_plan_item_to_dict():
    item = decide(TAGGED, SRC, DST)
    assert item.to_dict() == {
        "line": 1, "source": "quay.io/a/b:1", "source_digest": SRC, "target": "x/y:1",
        "target_digest": DST, "action": "update", "error": None,
    }


def test_plan_item_to_dict_for_untagged_target():
    item = decide(entry(f"quay.io/a/b@{PINNED} => x/y"), None, None)
    assert item.to_dict()["target"] == f"x/y@{PINNED}"
    assert item.to_dict()["action"] == "new"


def test_plan_item_is_frozen():
    item = decide(TAGGED, SRC, DST)
    with pytest.raises(AttributeError):
        item.action = Action.NEW  # type: ignore[misc]


def test_action_is_a_string_enum():
    assert Action.NEW == "new" and Action("unchanged") is Action.UNCHANGED


@pytest.mark.parametrize("action, mode", [(Action.NEW, "NoForce"), (Action.UPDATE, "Force")])
def test_import_mode(action, mode):
    assert import_mode(action) == mode


@pytest.mark.parametrize("action", [Action.UNCHANGED, Action.ERROR])
def test_import_mode_refuses_actions_without_an_import(action):
    with pytest.raises(ValueError):
        import_mode(action)


def _plan() -> Plan:
    entries = parse_manifest("quay.io/a:1\nquay.io/b:1\nquay.io/c:1\nquay.io/d:1\nquay.io/e:1\n").entries
    return Plan([
        decide(entries[0], SRC, None),         # new
        decide(entries[1], SRC, SRC),          # unchanged
        decide(entries[2], SRC, DST),          # update
        decide(entries[3], None, None),        # error
        decide(entries[4], SRC, None),         # new
    ])


def test_counts():
    assert _plan().counts() == {"new": 2, "update": 1, "unchanged": 1, "error": 1}


def test_counts_of_empty_plan_has_every_key():
    assert Plan().counts() == {"new": 0, "update": 0, "unchanged": 0, "error": 0}


def test_changed_is_new_and_update_in_order():
    assert [(i.entry.line, i.action) for i in _plan().changed] == [
        (1, Action.NEW), (3, Action.UPDATE), (5, Action.NEW)]


def test_errors():
    assert [i.entry.line for i in _plan().errors] == [4]


def test_plan_to_dict():
    plan = _plan()
    d = plan.to_dict()
    assert d["counts"] == plan.counts()
    assert [i["action"] for i in d["items"]] == ["new", "unchanged", "update", "error", "new"]
    assert d["items"][0] == plan.items[0].to_dict()


def test_needs_import():
    assert [i.needs_import for i in _plan().items] == [True, False, True, False, True]
    assert isinstance(_plan().items[0], PlanItem)
