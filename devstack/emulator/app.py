"""The emulator's ASGI application: all routes of one Emulator behind the fault middleware.

Route order matters: specific ARM routes (registry, then ACR Tasks from tasks.install) come before
the ARM catch-all that answers 404 for any other /subscriptions/... path.
"""
from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import dataplane, identity, registry, tasks, upstream_auth
from .auth import AuthError, check_roles
from .errors import acr_error, arm_error
from .events import MANIFEST_MEDIA_TYPES, to_event_grid
from .faults import DATA_PLANE_PREFIXES, FaultMiddleware
from .profiles import check_retry_after
from .state import Emulator, utc_timestamp

log = logging.getLogger(__name__)

# Settings /_devstack/settings may change while the emulator runs: seconds (numbers >= 0; the pool
# ones may also be null = one run step), import_retry_after ("auto", "none", whole seconds), and
# import_copy_at_end (boolean). See profiles.py.
SECONDS_SETTINGS = ("import_latency", "import_latency_max", "run_step_seconds")
OPTIONAL_SECONDS_SETTINGS = ("pool_scale_seconds", "pool_delete_seconds")
RUNTIME_SETTINGS = (*SECONDS_SETTINGS, *OPTIONAL_SECONDS_SETTINGS, "import_retry_after", "import_copy_at_end")
ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]


def create_app(emu: Emulator) -> Starlette:
    backing = dataplane.BackingRegistry(emu.config.backing_url, emu.config.backing_storage_path)
    importer = registry.Importer(emu, backing)
    emu.importer = importer

    @asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            await importer.aclose()
            await backing.aclose()

    routes = [
        *identity.routes(emu),
        *registry.routes(emu, importer),
        *tasks.install(emu),
        *dataplane.routes(emu, backing),
        *admin_routes(emu),
        *upstream_auth.routes(emu),
        Route("/subscriptions/{rest:path}", _arm_fallback(emu), methods=ALL_METHODS),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(FaultMiddleware, faults=emu.faults)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )


def _arm_fallback(emu: Emulator):
    async def unknown_resource(request: Request) -> Response:
        try:
            emu.auth.check_arm_authorization(request.headers.get("authorization"))
        except AuthError as exc:
            return arm_error(401, exc.code, exc.message)
        return arm_error(404, "ResourceNotFound", f"The resource '{request.url.path}' was not found.")

    return unknown_resource


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = re.sub(r"\W", "", str(exc.detail).title())
    if request.url.path.startswith(DATA_PLANE_PREFIXES):
        return acr_error(exc.status_code, code.upper(), str(exc.detail))
    return arm_error(exc.status_code, code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return arm_error(500, "InternalServerError", "The devstack emulator failed to process the request.")


def admin_routes(emu: Emulator) -> list[Route]:
    """Loopback-only test hooks: faults, runtime settings, data-plane roles of identities, the backing
    registry's notifications."""

    async def add_fault(request: Request) -> Response:
        try:
            rule = emu.faults.add(**await request.json())
        except (ValueError, TypeError, re.error) as exc:
            return arm_error(400, "InvalidFault", str(exc))
        return JSONResponse(rule.to_dict(), status_code=201)

    async def list_faults(request: Request) -> Response:
        return JSONResponse([rule.to_dict() for rule in emu.faults.rules])

    async def clear_faults(request: Request) -> Response:
        emu.faults.clear()
        return Response(status_code=204)

    async def change_settings(request: Request) -> Response:
        try:
            changes = await request.json()
        except ValueError:
            changes = None
        if not isinstance(changes, dict) or not changes or not set(changes) <= set(RUNTIME_SETTINGS):
            return arm_error(400, "InvalidSettings", f"Send a JSON object with some of {', '.join(RUNTIME_SETTINGS)}.")
        try:
            checked = {name: _setting(name, value) for name, value in changes.items()}
        except ValueError as exc:
            return arm_error(400, "InvalidSettings", str(exc))
        for name, value in checked.items():
            setattr(emu.config, name, value)
        log.info("settings changed: %s", changes)
        return JSONResponse({name: getattr(emu.config, name) for name in RUNTIME_SETTINGS})

    async def list_roles(request: Request) -> Response:
        return JSONResponse({"system_client_id": emu.auth.client_id, "identity_roles": emu.auth.identity_roles})

    async def assign_roles(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        client_id = body.get("client_id") if isinstance(body, dict) else None
        if not isinstance(client_id, str) or not client_id or "roles" not in body:
            return arm_error(400, "InvalidRoles", 'Send {"client_id": "...", "roles": [role, ...] or null}.')
        if body["roles"] is None:
            emu.auth.identity_roles.pop(client_id, None)
        else:
            try:
                emu.auth.identity_roles[client_id] = check_roles(body["roles"])
            except ValueError as exc:
                return arm_error(400, "InvalidRoles", str(exc))
        log.info("roles of identity %s: %s", client_id, body["roles"])
        return await list_roles(request)

    async def registry_notifications(request: Request) -> Response:
        try:
            notes = (await request.json()).get("events", [])
        except (ValueError, AttributeError):
            return Response("expected a notification envelope", status_code=400)
        emu.events.emit([event for note in notes if (event := _absorb(emu, note))])
        return Response(status_code=200)

    return [
        Route("/_devstack/faults", add_fault, methods=["POST"]),
        Route("/_devstack/faults", list_faults, methods=["GET"]),
        Route("/_devstack/faults", clear_faults, methods=["DELETE"]),
        Route("/_devstack/settings", change_settings, methods=["POST"]),
        Route("/_devstack/roles", list_roles, methods=["GET"]),
        Route("/_devstack/roles", assign_roles, methods=["POST"]),
        Route("/_devstack/registry-notifications", registry_notifications, methods=["POST"]),
    ]


def _setting(name: str, value):
    """One runtime setting, checked and converted (ValueError names the setting)."""
    if name == "import_retry_after":
        return check_retry_after(value)
    if name == "import_copy_at_end":
        if not isinstance(value, bool):
            raise ValueError("import_copy_at_end is true or false.")
        return value
    if value is None and name in OPTIONAL_SECONDS_SETTINGS:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}: settings are non-negative numbers of seconds.")
    return float(value)


def _absorb(emu: Emulator, note: dict) -> dict | None:
    """Update the ledger from one registry notification; return its Event Grid event, if any."""
    target = note.get("target") or {}
    repository, digest = target.get("repository", ""), target.get("digest", "")
    if note.get("action") == "push" and target.get("mediaType") in MANIFEST_MEDIA_TYPES:
        emu.ledger.record_push(repository, digest, target["mediaType"], target.get("tag"))
    elif note.get("action") == "delete" and target.get("tag"):
        emu.ledger.forget_tag(repository, target["tag"])
    return to_event_grid(
        note,
        topic=emu.registry_id,
        login_server=emu.login_server,
        location=emu.config.location,
        media_type=emu.ledger.media_type(repository, digest),
        event_time=utc_timestamp(),
    )
