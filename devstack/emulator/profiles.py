"""Timing profiles of the emulator: how long Azure's slow operations take.

``fast`` (the default; tests): an import stays running ``import_latency`` = 1 s and the poll says
when to come back (``Retry-After`` = the seconds left, at least 1); agent-pool operations take one
run step (1 s); the copy is made at once, so the target tag may show before the operation ends.

``azure`` (benchmarks): what the public recordings of ACR show. An import's copy time is 5-30 s,
the same for the same source image every time (spread by a hash of registry and image), and the
target tag appears only when that time is up (the copy is made then, as ACR commits the tag at the
end of an import); ``Retry-After: 10`` on the 202s (``import_retry_after="none"``: no Retry-After
at all, as in the 2026 azure-cli recording, so clients sleep their own polling interval). Agent
pools take minutes: scaling (PUT/PATCH) 180 s, deleting 120 s; a run step lasts 10 s.

Every value is an ``EmulatorConfig`` field, so ``emulator_options`` override a profile's value, and
the ``/_devstack/settings`` admin endpoint changes the runtime ones while the emulator runs.
"""
from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "fast": {
        "import_latency": 1.0,
        "import_latency_max": 0.0,
        "import_retry_after": "auto",
        "import_copy_at_end": False,
        "pool_scale_seconds": None,
        "pool_delete_seconds": None,
        "run_step_seconds": 1.0,
    },
    "azure": {
        "import_latency": 5.0,
        "import_latency_max": 30.0,
        "import_retry_after": "10",
        "import_copy_at_end": True,
        "pool_scale_seconds": 180.0,
        "pool_delete_seconds": 120.0,
        "run_step_seconds": 10.0,
    },
}
DEFAULT_PROFILE = "fast"


def profile_options(name: str) -> dict[str, Any]:
    """The EmulatorConfig fields of profile ``name`` (ValueError names the known ones)."""
    try:
        return {"profile": name, **PROFILES[name]}
    except KeyError:
        raise ValueError(f"unknown emulator profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def check_retry_after(value: Any) -> str:
    """``import_retry_after``: "auto" (seconds left), "none" (no header) or whole seconds >= 1."""
    text = str(value).strip().lower()
    if text in ("auto", "none") or (text.isdigit() and int(text) >= 1):
        return text
    raise ValueError(f"import_retry_after must be 'auto', 'none' or whole seconds >= 1, not {value!r}")
