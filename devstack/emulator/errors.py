"""Error bodies of the two API families the emulator speaks.

ARM uses the common-types v5 ErrorResponse: ``{"error": {"code", "message", "target"?}}``.
The ACR data plane (and the Docker registry API behind it) uses ``{"errors": [{"code", "message",
"detail"?}]}``.
"""
from __future__ import annotations

from typing import Any, Mapping

from starlette.responses import JSONResponse


def arm_error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    target: str | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if target:
        error["target"] = target
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def acr_error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    detail: Any = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"errors": [error]}, status_code=status, headers=dict(headers or {}))
