"""ACR run statuses and agent-pool scaling decisions (the pool-scaling timer's policy).

Pure code: no I/O. :func:`decide_scale` decides, for one pool on one timer tick, whether to scale
it up from 0 (runs are queued) or down to 0 (idle for ``POOL_IDLE_MINUTES``); see its docstring.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

__all__ = ["TERMINAL_RUN_STATUSES", "ScaleDecision", "decide_scale", "run_status_is_terminal"]

TERMINAL_RUN_STATUSES = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
_TERMINAL_LOWER = frozenset(s.lower() for s in TERMINAL_RUN_STATUSES)


def run_status_is_terminal(status: Optional[str]) -> bool:
    """True for an ACR run status that will not change again (Succeeded, Failed, Canceled, Error, Timeout).

    Case-insensitive, as the SDK's enums are; ``None`` and unknown statuses are not terminal.
    """
    return isinstance(status, str) and status.lower() in _TERMINAL_LOWER


@dataclass(frozen=True)
class ScaleDecision:
    """What to do with one agent pool on this timer tick.

    ``idle_since`` is the idle start the caller should remember for the next tick: ``now`` when
    the pool has just been found idle, the given value while it stays idle, ``None`` otherwise.
    """

    pool: str
    action: str  # "scale_up" | "scale_down" | "none"
    from_count: int
    to_count: int
    reason: str
    idle_since: Optional[datetime] = None

    def to_dict(self) -> dict:
        return {"pool": self.pool, "action": self.action, "from_count": self.from_count,
                "to_count": self.to_count, "reason": self.reason,
                "idle_since": self.idle_since.isoformat() if self.idle_since else None}


def decide_scale(*, pool: str, count: int, queued: int, running: int, idle_since: Optional[datetime],
                 now: datetime, idle_minutes: float, scale_up_count: int) -> ScaleDecision:
    """Decide whether to scale an agent pool up from 0 or down to 0.

    * ``queued > 0`` and ``count == 0``                -> ``scale_up`` to ``scale_up_count``
    * ``count > 0``, nothing queued or running, idle
      for at least ``idle_minutes``                    -> ``scale_down`` to 0
    * otherwise                                        -> ``none``, with the reason
      ("busy: 1 queued, 2 running", "idle for 4.0 of 30 min", "already at 0")

    ``idle_since=None`` for an idle pool means it was not idle at the last look: idleness is
    counted from ``now``. An ``idle_since`` in the future (clock skew) counts as zero minutes.
    Never scales a busy pool and never scales up a pool that already has instances.
    Raises ``ValueError`` for negative counts, ``scale_up_count < 1`` or ``idle_minutes < 0``.
    """
    for name, value in (("count", count), ("queued", queued), ("running", running)):
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if scale_up_count < 1:
        raise ValueError(f"scale_up_count must be at least 1, got {scale_up_count}")
    if idle_minutes < 0:
        raise ValueError(f"idle_minutes must not be negative, got {idle_minutes}")

    def decision(action: str, to: int, reason: str, idle: Optional[datetime] = None) -> ScaleDecision:
        return ScaleDecision(pool, action, count, to, reason, idle)

    if count == 0:
        if queued > 0:
            runs = "run" if queued == 1 else "runs"
            return decision("scale_up", scale_up_count, f"{queued} queued {runs} and no instances")
        return decision("none", 0, "already at 0")
    if queued or running:
        busy = ", ".join(f"{n} {what}" for n, what in ((queued, "queued"), (running, "running")) if n)
        return decision("none", count, f"busy: {busy}")
    since = idle_since if idle_since is not None else now
    idle_for = max(0.0, (now - since).total_seconds() / 60.0)
    reason = f"idle for {idle_for:.1f} of {idle_minutes:g} min"
    if idle_for >= idle_minutes:
        return decision("scale_down", 0, reason)
    return decision("none", count, reason, since)
