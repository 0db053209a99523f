"""Fault injection: rules that make the next matching requests or imports misbehave.

Rule kinds:
  status        answer with an HTTP error (e.g. 429 + Retry-After, 500) instead of the real response
  drop          start a 200 response with a Content-Length, send part of the body, close the connection
  import-fail   the next accepted import fails as if the source manifest were unknown
  import-stuck  the next accepted import stays InProgress forever

A rule matches a method ("*" = any) and a regular expression searched in the URL path; it fires
``times`` times and is then spent. Admin paths (/_devstack/...) are never faulted.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import acr_error, arm_error

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_devstack/"
REQUEST_KINDS = frozenset({"status", "drop"})
IMPORT_KINDS = frozenset({"import-fail", "import-stuck"})
DATA_PLANE_PREFIXES = ("/v2/", "/acr/", "/oauth2/")
STATUS_CODES = {429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable"}


@dataclass
class FaultRule:
    kind: str
    method: str = "*"
    path: str = ".*"
    times: int = 1
    status: int = 500
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS | IMPORT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if int(self.times) < 1:
            raise ValueError("times must be at least 1")
        if not 400 <= int(self.status) <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        re.compile(self.path)
        self.method = self.method.upper()
        if self.status == 429 and self.retry_after is None:
            self.retry_after = 1

    def matches(self, kinds: frozenset[str], method: str, path: str) -> bool:
        return (
            self.kind in kinds
            and self.method in ("*", method.upper())
            and re.search(self.path, path) is not None
        )

    def error_response(self, path: str) -> Response:
        code = STATUS_CODES.get(self.status, "InjectedFault")
        message = f"devstack fault injection: {self.status} for {path}"
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if path.startswith(DATA_PLANE_PREFIXES):
            return acr_error(self.status, code.upper(), message, headers)
        return arm_error(self.status, code, message, headers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, kind: str, **options: Any) -> FaultRule:
        rule = FaultRule(kind, **options)
        with self._lock:
            self._rules.append(rule)
        log.info("fault added: %s %s %s x%d", rule.kind, rule.method, rule.path, rule.times)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, kinds: frozenset[str], method: str, path: str) -> FaultRule | None:
        """Consume one firing of the first rule of one of ``kinds`` that matches the request."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(kinds, method, path):
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                    return rule
        return None


class FaultMiddleware:
    """ASGI middleware applying ``status`` and ``drop`` rules before the request reaches a route."""

    def __init__(self, app: ASGIApp, faults: FaultInjector) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        rule = self.faults.take(REQUEST_KINDS, scope["method"], scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
        elif rule.kind == "drop":
            log.info("fault: dropping connection for %s %s", scope["method"], scope["path"])
            await _drop_connection(send)
        else:
            log.info("fault: %d for %s %s", rule.status, scope["method"], scope["path"])
            await rule.error_response(scope["path"])(scope, receive, send)


async def _drop_connection(send: Send) -> None:
    # Promise 1 KiB, deliver a few bytes and return: the server closes the transport because the
    # response is incomplete, so the client sees a connection broken mid-body, not a status code.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"status":', "more_body": True})
