"""The HTTP API as one ASGI app (Starlette).

In Azure it is served through ``func.AsgiFunctionApp`` (function_app.py), where the Functions
host enforces function keys; locally it is served by uvicorn (``python -m shared serve``). Both
run exactly this code. Errors are ``application/problem+json`` via ``shared.http.problems``.

``create_app`` options for a server without the Functions host in front (``airlock serve``):
``api_key`` makes every route, the OpenAPI document included, need that key where the host would
want a function key (``x-functions-key`` header or ``?code=``): none is 401, another is 403.
``accept_imports=False`` refuses to queue imports (503, ``NoQueueWorker``) when nothing runs the
queue; ``worker`` (an object with ``status()``) is reported by ``/api/health``.

Requests are held to the OpenAPI document (``shared.http.openapi``): a body over
``HTTP_MAX_BODY_BYTES`` is 413, a content type an operation does not take is 415, a query parameter
given empty (``?limit=``) is 400 like any other value the document does not allow.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from typing import Callable, Optional

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import problems
from ..errors import (Forbidden, ManifestError, Problem, RequestTooLarge, Unauthenticated, Unavailable,
                      UnsupportedMediaType, ValidationError)
from ..handlers import records
from ..handlers.imports import import_request, run_manifest

log = logging.getLogger(__name__)
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain", "")


def _json(body, status: int = 200, headers: Optional[dict] = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


MAX_JSON_DEPTH = 32  # deeper request bodies are refused (400) before any handler walks them


def parse_json_body(body: bytes):
    """A request body as JSON, or a ValidationError naming what is wrong (field ``body``): empty, not
    UTF-8, not JSON (line and column), NaN/Infinity, or nested deeper than ``MAX_JSON_DEPTH``."""
    if not body.strip():
        raise ValidationError("a request body is required", [Problem("the body is empty", field="body")])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("body is not UTF-8",
                              [Problem(f"invalid byte at offset {exc.start}", field="body")]) from None

    def no_constant(name: str):
        raise ValueError(f"{name} is not JSON")
    try:
        data = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise ValidationError("body is not valid JSON", [Problem(where, field="body")]) from None
    except ValueError as exc:
        raise ValidationError("body is not valid JSON", [Problem(str(exc), field="body")]) from None
    except RecursionError:
        data = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ValidationError("body is nested too deeply",
                              [Problem(f"at most {MAX_JSON_DEPTH} levels of arrays and objects", field="body")])
    return data


def _depth(data) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def _problem_response(exc: BaseException) -> Response:
    status, body, headers = problems.from_exception(exc)
    return Response(json.dumps(body), status_code=status, headers=headers, media_type=problems.PROBLEM_JSON)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _param(request: Request, name: str) -> Optional[str]:
    """A query parameter's value, None when it is not given; given empty (``?limit=``) is a 400: the
    document allows no empty value for any parameter."""
    value = request.query_params.get(name)
    if value is not None and not value.strip():
        raise ValidationError(f"invalid query parameter {name}", [Problem("must not be empty", field=name)])
    return value


class Api:
    def __init__(self, services_factory: Callable[[], object], *, accept_imports: bool = True, worker=None):
        self._services_factory = services_factory
        self._services = None
        self.accept_imports = accept_imports
        self.worker = worker

    @property
    def services(self):
        if self._services is None:
            self._services = self._services_factory()
        return self._services

    # -- helpers ----------------------------------------------------------------------------
    async def _body(self, request: Request) -> bytes:
        limit = self.services.settings.http_max_body
        declared = request.headers.get("content-length")
        too_large = RequestTooLarge("request body too large", [Problem(f"at most {limit} bytes", field="body")])
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def _flag(self, request: Request, name: str) -> bool:
        value = _param(request, name)
        if value is None:
            return False
        if value not in ("true", "false"):
            raise ValidationError(f"invalid query parameter {name}", [Problem("must be true or false", field=name)])
        return value == "true"

    def _wait(self, request: Request) -> float:
        raw = _param(request, "wait") or "0"
        try:
            wait = float(raw)
        except ValueError:
            raise ValidationError("invalid query parameter wait",
                                  [Problem(f"must be a number of seconds, got {raw!r}", field="wait")]) from None
        limit = self.services.settings.http_max_wait
        if not 0 <= wait <= limit:
            raise ValidationError("invalid query parameter wait",
                                  [Problem(f"must be between 0 and {limit:g} seconds", field="wait")])
        return wait

    # -- endpoints --------------------------------------------------------------------------
    async def imports(self, request: Request) -> Response:
        plan_only = self._flag(request, "plan")
        wait = self._wait(request)
        name = _param(request, "name") or "http"
        if not plan_only and not self.accept_imports:
            raise Unavailable("this server runs no queue worker, so it accepts no imports (`airlock serve --worker "
                              "none`); ?plan=true still plans", code="NoQueueWorker")
        content_type = _content_type(request)
        if content_type not in ("application/json", "text/plain", ""):
            raise UnsupportedMediaType("unsupported content type", [Problem(
                "use application/json (entries, or a manifest with its lock) or text/plain", field="content-type")])
        body = await self._body(request)
        from ..core.lock import lock_name_for
        from ..handlers.sync import check_manifest

        lock_name = lock_name_for(name)
        if content_type == "application/json":
            wanted = import_request(parse_json_body(body))
        else:
            if not body.strip():
                raise ValidationError("a request body is required", [Problem("the body is empty", field="body")])
            wanted = None
        text, lock = (body, None) if wanted is None else (wanted.manifest, wanted.lock)
        services = self.services
        manifest = check_manifest(text, services.settings, lock, name=name, lock_name=lock_name)
        if not manifest.ok:
            found = list(manifest.errors) if wanted is None else wanted.problems(list(manifest.errors), lock_name)
            raise ManifestError(f"{len(found)} error(s); nothing was imported", found)
        if plan_only:
            document = await asyncio.to_thread(run_manifest, services, text, name=name, trigger="http",
                                               apply=False, save=False, lock=lock)
            return _json(document)
        from ..handlers.runs import queue_run

        # answered once the run is durably queued (record + message); the work runs on the queue
        record = await asyncio.to_thread(queue_run, services, text, name=name, trigger="http", lock=lock)
        run_id = record["run_id"]
        location = f"/api/runs/{run_id}"
        if wait > 0:
            document = await self._poll_record(run_id, wait)
            if document is not None:
                return _json(document, 200, {"Location": location})
        return _json({"run_id": run_id, "status": record["status"], "location": location}, 202,
                     {"Location": location, "Retry-After": "5"})

    async def runs(self, request: Request) -> Response:
        """GET /api/runs?status=&since=&limit=&next= : the run index, newest first, paged."""
        from datetime import datetime, timezone

        from ..core.runindex import check_limit, parse_since
        from ..handlers.runindex import list_runs

        since, limit = _param(request, "since"), _param(request, "limit")
        status, token = _param(request, "status"), _param(request, "next")
        if limit is not None and limit != limit.strip():
            raise ValidationError("invalid limit", [Problem("must be a whole number, without spaces", field="limit")])
        since_time = parse_since(since, datetime.now(timezone.utc)) if since is not None else None
        page = await asyncio.to_thread(list_runs, self.services, status=status, since=since_time,
                                       limit=check_limit(limit), token=token)
        return _json(page)

    async def _poll_record(self, run_id: str, wait: float) -> Optional[dict]:
        """The record once it is final, polling it for up to ``wait`` seconds (reads only: no work here)."""
        from ..core.runs import is_terminal

        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            document = await asyncio.to_thread(records.load, self.services, run_id)
            if is_terminal(document.get("status")):
                return document
            if loop.time() + 1.0 > deadline:
                return None
            await asyncio.sleep(1.0)

    async def run(self, request: Request) -> Response:
        document = await asyncio.to_thread(records.load, self.services, request.path_params["run_id"])
        return _json(document)

    async def queue_build(self, request: Request) -> Response:
        from ..core.builds import parse_build
        from ..handlers.builds import queue_build

        if _content_type(request) != "application/json":
            raise UnsupportedMediaType("unsupported content type",
                                       [Problem("use application/json", field="content-type")])
        spec = parse_build(parse_json_body(await self._body(request)))
        record = await asyncio.to_thread(queue_build, self.services, spec, trigger="http")
        location = f"/api/builds/{record['run_id']}"
        return _json({**record, "location": location}, 202, {"Location": location, "Retry-After": "5"})

    async def build(self, request: Request) -> Response:
        from ..handlers.builds import get_build

        return _json(await asyncio.to_thread(get_build, self.services, request.path_params["run_id"]))

    async def cancel_build(self, request: Request) -> Response:
        from ..handlers.builds import cancel_build

        document = await asyncio.to_thread(cancel_build, self.services, request.path_params["run_id"])
        return _json(document, 202, {"Location": f"/api/builds/{document['run_id']}"})

    async def health(self, request: Request) -> Response:
        from ..handlers.health import check

        from .openapi import app_version

        report = await asyncio.to_thread(check, lambda: self.services)  # ConfigError is reported
        report["version"] = app_version()
        if self.worker is not None:  # `airlock serve`'s in-process queue worker
            report["worker"] = self.worker.status()
            if not report["worker"]["running"]:
                report["status"] = "unhealthy"
        return _json(report, 200 if report["status"] == "healthy" else 503)

    async def discover(self, request: Request) -> Response:
        from ..handlers.discover import check_yaml

        content_type = _content_type(request)
        manifest, blob, name = None, _param(request, "manifest"), _param(request, "name") or "body"
        if content_type != "application/json" and content_type not in _YAML_TYPES:
            raise UnsupportedMediaType("unsupported content type", [Problem(
                "use application/yaml (the YAML itself) or application/json", field="content-type")])
        body = await self._body(request)
        if content_type == "application/json":
            data = parse_json_body(body)  # empty, not UTF-8, not JSON, too deep: a 400 naming the body
            if not isinstance(data, dict) or not isinstance(data.get("yaml"), str):
                raise ValidationError("invalid request", [Problem("a string: the Kubernetes YAML", field="/yaml")])
            unknown = sorted(set(data) - {"yaml", "manifest", "manifest_blob", "name"})
            if unknown:
                raise ValidationError("invalid request", [Problem(
                    "unknown field; use yaml, manifest, manifest_blob or name", field=f"/{unknown[0]}")])
            for key in ("manifest", "manifest_blob", "name"):
                if data.get(key) is not None and not isinstance(data[key], str):
                    raise ValidationError("invalid request", [Problem("must be a string", field=f"/{key}")])
            body, manifest = data["yaml"], data.get("manifest")
            blob, name = data.get("manifest_blob") or blob, data.get("name") or name
        elif not body.strip():
            raise ValidationError("a request body is required", [Problem("the body is empty", field="body")])
        document = await asyncio.to_thread(check_yaml, self.services, [(name, body)], manifest=manifest,
                                           manifest_blob=blob)
        return _json(document)

    async def openapi(self, request: Request) -> Response:
        from ..errors import ConfigError
        from .openapi import document

        try:
            settings = self.services.settings
        except ConfigError:  # still describe the API; /api/health reports the configuration
            return _json(document())
        return _json(document(max_wait=settings.http_max_wait, max_body=settings.http_max_body))


class ApiKeyMiddleware:
    """Every request needs ``key`` where the Functions host wants a function key: the ``x-functions-key``
    header or the ``code`` query parameter (compared in constant time; never logged). None given: 401;
    another: 403. ``shared.redact`` keeps ``?code=`` out of log lines (uvicorn's access log included)."""

    def __init__(self, app, key: str):
        self.app, self._key = app, key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        given = request.headers.get("x-functions-key")
        if given is None:
            given = request.query_params.get("code")
        if given is None or not given:
            error = Unauthenticated("an API key is required: the x-functions-key header or ?code=")
        elif not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), self._key):
            error = Forbidden("the API key is not valid")
        else:
            return await self.app(scope, receive, send)
        await _problem_response(error)(scope, receive, send)


def create_app(services_factory: Optional[Callable[[], object]] = None, *, api_key: Optional[str] = None,
               accept_imports: bool = True, worker=None) -> Starlette:
    """The API. ``api_key``: required on every request (``airlock serve``; in Azure the Functions host checks
    function keys instead). ``accept_imports=False``: imports are refused (no queue worker runs them);
    ``worker``: the in-process queue worker whose ``status()`` ``/api/health`` reports."""
    if services_factory is None:
        from ..services import Services

        def services_factory():
            return Services.from_env(os.environ)
    api = Api(services_factory, accept_imports=accept_imports, worker=worker)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - mapped to problem+json in one place
                return _problem_response(exc)
        return endpoint

    routes = [
        Route("/api/imports", guarded(api.imports), methods=["POST"]),
        Route("/api/runs", guarded(api.runs), methods=["GET"]),
        Route("/api/runs/{run_id}", guarded(api.run), methods=["GET"]),
        Route("/api/builds", guarded(api.queue_build), methods=["POST"]),
        Route("/api/builds/{run_id}", guarded(api.build), methods=["GET"]),
        Route("/api/builds/{run_id}/cancel", guarded(api.cancel_build), methods=["POST"]),
        Route("/api/discover", guarded(api.discover), methods=["POST"]),
        Route("/api/health", guarded(api.health), methods=["GET"]),
        Route("/api/openapi.json", guarded(api.openapi), methods=["GET"]),
    ]
    middleware = [Middleware(ApiKeyMiddleware, key=api_key)] if api_key else []
    app = Starlette(routes=routes, middleware=middleware)
    app.state.api = api

    async def not_found(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        title = "Not found" if status == 404 else "Method not allowed" if status == 405 else "Error"
        headers = {k: v for k, v in (getattr(exc, "headers", None) or {}).items() if k.lower() == "allow"}
        return Response(json.dumps(problems.problem(status, title, f"{request.method} {request.url.path}")),
                        status_code=status, headers=headers, media_type=problems.PROBLEM_JSON)
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_found)
    return app
