"""The one place that maps errors to HTTP (RFC 9457 application/problem+json).

Nothing else picks status codes for errors. No stack traces or exception reprs reach a
response: unexpected errors become a generic 500 and are logged with their trace.
"""
from __future__ import annotations

import logging
from typing import Optional

from ..errors import (AirlockError, ConfigError, ConflictError, Forbidden, LockFileError, ManifestError, NotFoundError,
                      RequestTooLarge, RuleFileError, TransientError, Unauthenticated, Unavailable,
                      UnsupportedMediaType, UpstreamError, ValidationError)

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
# where the key goes: the Functions host's function key names, which `airlock serve` (SERVE_API_KEY) takes too
AUTHENTICATE = 'ApiKey header="x-functions-key", query="code"'

_STATUS = (
    (ManifestError, 422, "The manifest is not valid"),
    (RuleFileError, 422, "The rule file is not valid"),
    (LockFileError, 422, "The lock file is not valid"),
    (RequestTooLarge, 413, "The request body is too large"),
    (UnsupportedMediaType, 415, "The content type is not supported"),
    (ValidationError, 400, "The request is not valid"),
    (Unauthenticated, 401, "An API key is required"),
    (Forbidden, 403, "The API key is not valid"),
    (Unavailable, 503, "Not available on this server"),
    (NotFoundError, 404, "Not found"),
    (ConflictError, 409, "Conflict"),
    (TransientError, 503, "A dependency is temporarily unavailable"),
    (UpstreamError, 502, "A dependency answered with an error"),
    (ConfigError, 500, "The app is not configured correctly"),
)


def problem(status: int, title: str, detail: str, *, code: Optional[str] = None,
            errors: Optional[list[dict]] = None) -> dict:
    body: dict = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if code:
        body["code"] = code
    if errors:
        body["errors"] = errors
    return body


def from_exception(exc: BaseException) -> tuple[int, dict, dict]:
    """(status, body, extra headers) for any exception."""
    if isinstance(exc, AirlockError):
        for cls, status, title in _STATUS:
            if isinstance(exc, cls):
                errors = [p.to_dict() for p in getattr(exc, "problems", [])] or None
                headers = {}
                if isinstance(exc, Unauthenticated):  # RFC 9110: a 401 names how to authenticate
                    headers["WWW-Authenticate"] = AUTHENTICATE
                if isinstance(exc, TransientError) and exc.retry_after:
                    headers["Retry-After"] = str(int(exc.retry_after))
                return status, problem(status, title, exc.message, code=exc.code, errors=errors), headers
    log.error("unhandled error", exc_info=exc)
    return 500, problem(500, "Internal error", "An unexpected error occurred; see the function logs."), {}
