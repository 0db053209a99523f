"""Scopes are grouped into token requests of bounded size."""
from shared.adapters.registry_auth import SCOPE_CHARS_PER_TOKEN, SCOPES_PER_TOKEN, scope_batches


def test_batches_hold_at_most_the_scope_count():
    scopes = [f"repository:r{i}:pull" for i in range(120)]
    batches = scope_batches(scopes)
    assert [len(b) for b in batches] == [SCOPES_PER_TOKEN, SCOPES_PER_TOKEN, 20]
    assert [s for b in batches for s in b] == scopes


def test_batches_hold_at_most_the_scope_text():
    long = [f"repository:{'x' * 240}{i}:pull" for i in range(20)]
    batches = scope_batches(long)
    assert all(sum(map(len, b)) <= SCOPE_CHARS_PER_TOKEN for b in batches)
    assert sum(map(len, batches)) == 20 and len(batches) > 1


def test_a_single_oversized_scope_still_gets_a_batch():
    assert scope_batches(["s" * (SCOPE_CHARS_PER_TOKEN + 1)]) == [["s" * (SCOPE_CHARS_PER_TOKEN + 1)]]
