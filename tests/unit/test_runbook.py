"""Every error code the app or the command line can print has a row in docs/operations.md's runbook.

The codes are collected from the source, so a new code without a row fails here: ``code="X"`` and
``code = "X"`` (arguments and class attributes of the exception tree), ``"code": "X"`` (documents), the
``"Code: message"`` defaults of plan failures, module constants such as ``TAG_CONFLICT = "TagConflict"``, and
``code=f"HTTP{status}"`` (documented as ``HTTP<status>``).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LITERAL = re.compile(r"""(?:\bcode\s*=\s*|["']code["']\s*:\s*)["']([A-Za-z][A-Za-z0-9]*)["']""")
FORMATTED = re.compile(r"""\bcode\s*=\s*f["']([A-Za-z]*)\{[^}]*\}["']""")
DEFAULTED = re.compile(r"""["']([A-Z][A-Za-z]+Error): [^"']*["']\)\.partition\(""")  # "PlanError: ..." defaults
OTHER = re.compile(r"""else ["']([A-Z][A-Za-z]+)["']\)""")  # `... or (f"HTTP{status}" if status else "HttpError")`
CONSTANT = re.compile(r"""^[A-Z_]+ = ["']([A-Z][a-z]+[A-Z][A-Za-z]*)["']""", re.M)  # TAG_CONFLICT = "TagConflict"


def codes_in_source() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "shared").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found |= set(LITERAL.findall(text)) | set(DEFAULTED.findall(text))
        found |= {f"{prefix}<status>" for prefix in FORMATTED.findall(text)}
        found |= {code for line in text.splitlines() if "code" in line for code in OTHER.findall(line)}
        found |= set(CONSTANT.findall(text))
    return found


def runbook_codes() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    runbook = text[text.index("## Runbook"):]
    rows = [line for line in runbook.splitlines() if line.startswith("| `")]
    return {code for row in rows for code in re.findall(r"`([^`]+)`", row.split(" | ")[0])}


def test_the_collector_sees_every_kind_of_code():
    found = codes_in_source()
    # one of each: an argument, a class attribute, a document, a plan default, a formatted and a fallback code
    assert {"SourceNotFound", "InvalidManifest", "NoMatchingTag", "PlanError", "HTTP<status>", "HttpError",
            "CredentialUnavailable", "Unreachable", "RegistryNotFound", "TagConflict"} <= found


def test_every_code_has_a_runbook_row():
    missing = sorted(codes_in_source() - runbook_codes())
    assert missing == [], f"codes without a row in docs/operations.md's runbook: {missing}"
