"""The one exception tree of acr-airlock.

    AirlockError                      base; ``code`` is a stable machine-readable string
    ├── ValidationError               bad input from a caller; carries ``problems``
    │   ├── ManifestError             images.txt did not validate (problems carry line numbers)
    │   ├── RuleFileError             build rule file did not validate
    │   ├── TrustPolicyError          trust policy file (signatures required per source) did not validate
    │   ├── LockFileError             images.lock did not validate
    │   ├── RequestTooLarge           a request body over the server's limit (HTTP 413)
    │   └── UnsupportedMediaType      a request body of a content type the operation does not take (HTTP 415)
    ├── Unauthenticated               no API key where the server requires one (HTTP 401)
    ├── Forbidden                     a key was presented and it is not the server's (HTTP 403)
    ├── Unavailable                   this server does not do that now (e.g. no queue worker runs imports)
    ├── ConfigError                   a setting is missing or malformed
    ├── NotFoundError                 an id (run, build, pool) that does not exist
    ├── ConflictError                 the operation clashes with current state (e.g. a lease is held)
    └── UpstreamError                 Azure or a registry answered badly
        └── TransientError            worth retrying (429, 5xx, dropped connection, deadline)

``Problem`` is one finding: a message plus the line and/or field it is about. HTTP mapping of
these classes lives in exactly one place, ``shared.http.problems.from_exception``; nothing else chooses
status codes for errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Problem:
    message: str
    line: Optional[int] = None
    field: Optional[str] = None

    def to_dict(self) -> dict:
        d: dict = {"message": self.message}
        if self.line is not None:
            d["line"] = self.line
        if self.field is not None:
            d["field"] = self.field
        return d

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(self.field)
        return f"{', '.join(where)}: {self.message}" if where else self.message


class AirlockError(Exception):
    code = "AirlockError"

    def __init__(self, message: str, *, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class ValidationError(AirlockError):
    code = "ValidationError"

    def __init__(self, message: str, problems: Optional[list[Problem]] = None, *, code: Optional[str] = None):
        super().__init__(message, code=code)
        self.problems = list(problems or [])


class ManifestError(ValidationError):
    code = "InvalidManifest"


class RuleFileError(ValidationError):
    code = "InvalidRuleFile"


class TrustPolicyError(ValidationError):
    code = "InvalidTrustPolicy"


class LockFileError(ValidationError):
    code = "InvalidLockFile"


class RequestTooLarge(ValidationError):
    code = "RequestTooLarge"


class UnsupportedMediaType(ValidationError):
    code = "UnsupportedMediaType"


class Unauthenticated(AirlockError):
    code = "Unauthenticated"


class Forbidden(AirlockError):
    code = "Forbidden"


class Unavailable(AirlockError):
    code = "Unavailable"


class ConfigError(AirlockError):
    code = "ConfigError"


class NotFoundError(AirlockError):
    code = "NotFound"


class ConflictError(AirlockError):
    code = "Conflict"


class UpstreamError(AirlockError):
    code = "UpstreamError"

    def __init__(self, message: str, *, code: Optional[str] = None, status: Optional[int] = None):
        super().__init__(message, code=code)
        self.status = status


class TransientError(UpstreamError):
    code = "Transient"

    def __init__(self, message: str, *, code: Optional[str] = None, status: Optional[int] = None,
                 retry_after: Optional[float] = None):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after
