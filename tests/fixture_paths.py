"""Where the public Azure contract fixtures are: a verbatim copy of ../shared/fixtures/azure kept in
the repository (tests/fixtures/azure, sources listed in its README), so a fresh clone tests the same
contracts. tests/contract/test_fixture_copy.py checks the copy against ../shared when it is there."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
AZURE_FIXTURES = FIXTURES / "azure"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "azure"
