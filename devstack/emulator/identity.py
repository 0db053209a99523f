"""Managed-identity token endpoint, App Service protocol (api-version 2019-08-01).

GET /msi/token?resource=...&api-version=2019-08-01 with header X-IDENTITY-HEADER, as used by
azure-identity's ManagedIdentityCredential when IDENTITY_ENDPOINT and IDENTITY_HEADER are set.
Errors use App Service's body shape ``{"statusCode", "message", "correlationId"}``.
"""
from __future__ import annotations

import hmac
import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

API_VERSION = "2019-08-01"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}, status_code=status
    )


def routes(emu) -> list[Route]:
    async def token(request: Request) -> JSONResponse:
        secret = request.headers.get("x-identity-header")
        if secret is None:
            return _error(400, "The X-IDENTITY-HEADER header is required.")
        if not hmac.compare_digest(secret.encode(), emu.config.identity_header.encode()):
            return _error(401, "The X-IDENTITY-HEADER header is not valid.")
        if request.query_params.get("api-version") != API_VERSION:
            return _error(400, f"The api-version query parameter must be {API_VERSION}.")
        resource = request.query_params.get("resource")
        if not resource:
            return _error(400, "The resource query parameter is required.")
        log.info("managed identity token issued for %s", resource)
        return JSONResponse(emu.auth.issue_identity_token(resource, request.query_params.get("client_id")))

    return [Route("/msi/token", token, methods=["GET"])]
