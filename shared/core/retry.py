"""Retry policy arithmetic: when to retry and how long to wait.

Pure code: no I/O, no clock, no random source -- the caller passes ``rand`` and ``now`` in,
which keeps every function deterministic and testable.

Backoff for the wait after attempt ``n`` (1-based count of attempts made so far)::

    ceiling = min(max_delay, base_delay * 2 ** (n - 1))
    delay   = ceiling * (1 - jitter * rand)          rand in [0, 1)

``jitter=1`` is "full jitter" (anywhere in (0, ceiling]), ``jitter=0`` no jitter, the default
``0.5`` keeps the wait in (ceiling/2, ceiling]. A server's ``Retry-After`` is honoured as a
floor -- we never come back sooner than asked -- but the floor is capped at
``max_retry_after`` so a hostile or buggy header cannot park a worker for hours.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Optional

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def delay(self, attempt: int, retry_after: Optional[float], rand: float) -> float:
        """Seconds to wait after ``attempt`` attempts have been made."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        if not 0.0 <= rand < 1.0:
            raise ValueError("rand must be in [0, 1)")
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        wait = ceiling * (1.0 - self.jitter * rand)
        if retry_after is not None and not math.isnan(retry_after):
            wait = max(wait, min(max(retry_after, 0.0), self.max_retry_after))
        return wait

    def should_retry(self, attempt: int, *, status: Optional[int], connection_error: bool) -> bool:
        """Is another attempt allowed after ``attempt`` attempts ended this way?"""
        if attempt >= self.max_attempts:
            return False
        return connection_error or status in RETRYABLE_STATUSES


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds from a ``Retry-After`` header value, or ``None`` when there is no usable hint.

    Accepts delta-seconds (``"120"``; a decimal such as ``"1.5"`` is tolerated) and, when
    ``now`` is given, an HTTP-date (a date in the past gives ``0.0``; a naive ``now`` is taken
    as UTC). Without ``now`` an HTTP-date gives ``None``. Anything unparseable gives ``None``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    if now is None:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())
