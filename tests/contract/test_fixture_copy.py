"""The repository's copy of the contract fixtures is byte-identical to ../shared/fixtures/azure."""
import pytest

from tests.fixture_paths import AZURE_FIXTURES, SHARED_FIXTURES


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared/fixtures/azure is not next to this clone")
def test_copy_matches_shared():
    ours = {p.relative_to(AZURE_FIXTURES): p.read_bytes() for p in AZURE_FIXTURES.rglob("*") if p.is_file()}
    theirs = {p.relative_to(SHARED_FIXTURES): p.read_bytes() for p in SHARED_FIXTURES.rglob("*") if p.is_file()}
    assert ours == theirs
