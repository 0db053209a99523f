"""The retry loop: runs a call, classifies failures, sleeps as ``core.retry.RetryPolicy`` says.

The policy (which failures, how long) is pure and lives in ``shared.core.retry``; this module
only owns the loop, the clock and the translation of SDK / HTTP exceptions into the project's
error tree.
"""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from ..core.retry import RetryPolicy, parse_retry_after
from ..errors import AirlockError, TransientError, UpstreamError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Attempts:
    """Counts attempts across the calls made for one piece of work (one manifest entry)."""

    count: int = 0


def translate(exc: BaseException) -> AirlockError:
    """Map an azure-core or httpx exception to TransientError / UpstreamError."""
    if isinstance(exc, AirlockError):
        return exc
    try:
        from azure.core.exceptions import (HttpResponseError, IncompleteReadError, ServiceRequestError,
                                           ServiceResponseError)
    except ImportError:  # pragma: no cover - azure-core is a hard dependency
        HttpResponseError = IncompleteReadError = ServiceRequestError = ServiceResponseError = ()  # type: ignore
    import httpx

    # a body cut short (IncompleteReadError is an HttpResponseError with the status of the cut response)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, IncompleteReadError, httpx.TransportError)):
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return TransientError(f"connection failed: {detail}", code="ConnectionError")
    if isinstance(exc, HttpResponseError) and exc.status_code is None and exc.response is None:
        from azure.core.exceptions import ClientAuthenticationError

        from .credentials import one_line

        if isinstance(exc, ClientAuthenticationError):  # a credential failed, not a service: no "HttpError"
            return UpstreamError(f"no token: {one_line(exc.message)}", code="CredentialUnavailable")
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = getattr(getattr(exc, "error", None), "code", None) or (f"HTTP{status}" if status else "HttpError")
        message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or str(exc)
        retry_after = None
        if exc.response is not None:
            retry_after = parse_retry_after(exc.response.headers.get("Retry-After"), datetime.now(timezone.utc))
        if status in (429, 500, 502, 503, 504):
            return TransientError(message, code=code, status=status, retry_after=retry_after)
        return UpstreamError(message, code=code, status=status)
    return UpstreamError(f"{type(exc).__name__}: {exc}", code="UnexpectedError")


class Retrier:
    def __init__(self, policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random):
        self.policy = policy
        self.sleep = sleep
        self.rand = rand

    def call(self, fn: Callable[[], T], *, what: str, attempts: Optional[Attempts] = None,
             deadline: Optional[float] = None) -> T:
        """Run ``fn`` until it succeeds, fails permanently, or attempts/deadline run out."""
        attempts = attempts if attempts is not None else Attempts()
        tries = 0
        while True:
            tries += 1
            attempts.count += 1
            try:
                return fn()
            except BaseException as raw:  # noqa: BLE001 - translated and re-raised below
                if isinstance(raw, (KeyboardInterrupt, SystemExit)):
                    raise
                err = translate(raw)
                transient = isinstance(err, TransientError)
                status = err.status if isinstance(err, UpstreamError) else None
                if not (transient and self.policy.should_retry(
                        tries, status=status, connection_error=status is None)):
                    raise err from raw
                delay = self.policy.delay(tries, err.retry_after, self.rand())
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise err from raw
                log.warning("%s: %s (%s, attempt %d), retrying in %.1fs", what, err.code, type(raw).__name__, tries,
                            delay)
                self.sleep(delay)
