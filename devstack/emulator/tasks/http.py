"""The ARM routes of ACR Tasks: api-version and bearer checks, ARM error bodies, one handler per operation."""
from __future__ import annotations

import json
import logging
import math
import uuid
from typing import Any, Awaitable, Callable, Optional

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import AuthError
from ..errors import arm_error
from .common import (ALL_METHODS, API_VERSION, ArmError, LOG_CONTAINER, POOL_NAME_RE, REGISTRY_PATH, SOURCE_CONTAINER,
                     _bad, _field, _now)
from .definitions import task_json
from .logs import BlobArea
from .pools import Operation, operation_json, pool_json
from .requests import parse_run_request
from .runs import _parse_top, filter_matches
from .state import TasksState

logger = logging.getLogger(__name__)


Handler = Callable[[Request], Awaitable[Response]]


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise _bad("The request content is empty.", "InvalidRequestContent")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad("The request content was invalid and could not be deserialized.",
                   "InvalidRequestContent") from exc


def _check_api_version(request: Request) -> None:
    version = request.query_params.get("api-version")
    if not version:
        raise _bad("The api-version query parameter (?api-version=) is required for all requests.",
                   "MissingApiVersionParameter")
    if version != API_VERSION:
        raise _bad(f"The api-version '{version}' is invalid. The supported version for ACR Tasks in this "
                   f"emulator is '{API_VERSION}'.", "InvalidApiVersionParameter")


def _check_scope(config: Any, params: dict) -> None:
    if params["subscription"].lower() != str(config.subscription_id).lower():
        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{params['subscription']}' could not be found.")
    if params["group"].lower() != str(config.resource_group).lower():
        raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{params['group']}' could not be found.")
    if params["registry"].lower() != str(config.registry_name).lower():
        raise ArmError(404, "ResourceNotFound",
                       f"The Resource 'Microsoft.ContainerRegistry/registries/{params['registry']}' under "
                       f"resource group '{params['group']}' was not found.")


class TasksApi:
    """The HTTP handlers; each gets a request already authorised and checked."""

    def __init__(self, emu: Any, state: TasksState):
        self.emu, self.state = emu, state

    # -- plumbing

    def routes(self) -> list[Route]:
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/scheduleRun", {"POST": self.schedule_run}),
            ("/listBuildSourceUploadUrl", {"POST": self.source_upload_url}),
            ("/runs", {"GET": self.list_runs}),
            ("/runs/{run_id}", {"GET": self.get_run, "PATCH": self.update_run}),
            ("/runs/{run_id}/cancel", {"POST": self.cancel_run}),
            ("/runs/{run_id}/listLogSasUrl", {"POST": self.log_sas_url}),
            ("/agentPools", {"GET": self.list_pools}),
            ("/agentPools/{pool}", {"GET": self.get_pool, "PUT": self.put_pool, "PATCH": self.patch_pool,
                                    "DELETE": self.delete_pool}),
            ("/agentPools/{pool}/listQueueStatus", {"POST": self.queue_status}),
            ("/agentPools/{pool}/operationStatuses/{op_id}", {"GET": self.operation_status}),
            ("/agentPools/{pool}/operationResults/{op_id}", {"GET": self.operation_result}),
            ("/tasks", {"GET": self.list_tasks}),
            ("/tasks/{task}", {"GET": self.get_task, "PUT": self.put_task, "DELETE": self.delete_task}),
        ]
        return [Route(REGISTRY_PATH + suffix, self._endpoint(handlers), methods=ALL_METHODS,
                      name=f"acr-tasks{suffix}") for suffix, handlers in table]

    def _endpoint(self, handlers: dict[str, Handler]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                denied = await _authorize(self.emu, request)
                if denied is not None:
                    return denied
                _check_scope(self.emu.config, request.path_params)
                _check_api_version(request)
                handler = handlers.get(request.method)
                if handler is None:
                    raise ArmError(405, "MethodNotAllowed",
                                   f"The method '{request.method}' is not supported on {request.url.path}.")
                return await handler(request)
            except ArmError as exc:
                logger.info("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.code)
                return _error(exc)
        return endpoint

    def _async_headers(self, request: Request, op: Operation) -> dict[str, str]:
        base = f"{request.url.scheme}://{request.url.netloc}"
        path = f"{self.state.registry_id}/agentPools/{op.pool}/operationStatuses/{op.op_id}"
        url = f"{base}{path}?api-version={API_VERSION}"
        seconds = self.state._operation_seconds("pool_scale_seconds")
        return {"Azure-AsyncOperation": url, "Retry-After": str(max(1, min(60, math.ceil(seconds))))}

    def _delete_headers(self, request: Request, op: Operation) -> dict[str, str]:
        base = f"{request.url.scheme}://{request.url.netloc}{self.state.registry_id}/agentPools/{op.pool}"
        query = f"?api-version={API_VERSION}"
        seconds = self.state._operation_seconds("pool_delete_seconds")
        return {"Location": f"{base}/operationResults/{op.op_id}{query}",
                "Azure-AsyncOperation": f"{base}/operationStatuses/{op.op_id}{query}",
                "Retry-After": str(max(1, min(60, math.ceil(seconds))))}

    # -- runs

    async def schedule_run(self, request: Request) -> Response:
        body = await _json_body(request)
        spec = parse_run_request(body, self.state.tasks)
        run = self.state.schedule(spec)
        await run_in_threadpool(self.state.start, run)
        return JSONResponse(self.state.view(run))

    async def source_upload_url(self, request: Request) -> Response:
        if not self.state.blobs.enabled:
            raise ArmError(409, "StorageNotConfigured", "The emulator has no storage account for build sources.")
        relative = f"source/{_now().strftime('%Y%m%d%H%M%S')}/{uuid.uuid4()}.tar.gz"
        url = await run_in_threadpool(self.state.blobs.sas_url, SOURCE_CONTAINER, relative, "cw")
        return JSONResponse({"uploadUrl": url, "relativePath": relative})

    async def list_runs(self, request: Request) -> Response:
        expression = request.query_params.get("$filter")
        top = _parse_top(request.query_params.get("$top"))
        items = [i for i in self.state.runs_newest_first() if filter_matches(expression, i["properties"])]
        return JSONResponse({"value": items if top is None else items[:top]})

    async def get_run(self, request: Request) -> Response:
        run = self.state.get_run(request.path_params["run_id"])
        return JSONResponse(self.state.view(run))

    async def update_run(self, request: Request) -> Response:
        run = self.state.get_run(request.path_params["run_id"])
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
        archive = _field(body, "isArchiveEnabled", bool, "")
        if archive is not None:
            run.spec.is_archive_enabled = archive
        return JSONResponse(self.state.view(run))

    async def cancel_run(self, request: Request) -> Response:
        run = self.state.get_run(request.path_params["run_id"])
        await run_in_threadpool(self.state.cancel, run)
        return Response(status_code=200)

    async def log_sas_url(self, request: Request) -> Response:
        run = self.state.get_run(request.path_params["run_id"])
        if not self.state.blobs.enabled:
            raise ArmError(409, "StorageNotConfigured", "The emulator has no storage account for run logs.")
        url = await run_in_threadpool(self.state.blobs.sas_url, LOG_CONTAINER,
                                      BlobArea.log_blob(run.run_id), "r")
        return JSONResponse({"logLink": url, "logArtifactLink": None})

    # -- agent pools

    async def list_pools(self, request: Request) -> Response:
        return JSONResponse({"value": self.state.pool_list()})

    async def get_pool(self, request: Request) -> Response:
        return JSONResponse(pool_json(self.state, self.state.get_pool(request.path_params["pool"])))

    async def put_pool(self, request: Request) -> Response:
        name = request.path_params["pool"]
        if not POOL_NAME_RE.match(name):
            raise _bad(f"The agent pool name '{name}' is invalid: 3-20 letters, digits or '-'.")
        pool, op, created = self.state.put_pool(name, await _json_body(request))
        if op is None:
            return JSONResponse(pool_json(self.state, pool), status_code=201 if created else 200)
        return JSONResponse(pool_json(self.state, pool), status_code=201, headers=self._async_headers(request, op))

    async def patch_pool(self, request: Request) -> Response:
        pool, op = self.state.patch_pool(request.path_params["pool"], await _json_body(request))
        if op is None:
            return JSONResponse(pool_json(self.state, pool))
        return JSONResponse(pool_json(self.state, pool), status_code=201, headers=self._async_headers(request, op))

    async def delete_pool(self, request: Request) -> Response:
        op = self.state.delete_pool(request.path_params["pool"])
        if op is None:
            return Response(status_code=204)
        return Response(status_code=202, headers=self._delete_headers(request, op))

    async def queue_status(self, request: Request) -> Response:
        pool = self.state.get_pool(request.path_params["pool"])
        return JSONResponse({"count": self.state.queued_on(pool.name)})

    async def operation_status(self, request: Request) -> Response:
        op = self.state.get_operation(request.path_params["pool"], request.path_params["op_id"])
        return JSONResponse(operation_json(self.state, op))

    async def operation_result(self, request: Request) -> Response:
        """The Location of a delete: 202 while it runs, 204 once the pool is gone."""
        op = self.state.get_operation(request.path_params["pool"], request.path_params["op_id"])
        if op.status == "InProgress":
            return Response(status_code=202, headers=self._delete_headers(request, op))
        return Response(status_code=204)

    # -- tasks

    async def list_tasks(self, request: Request) -> Response:
        return JSONResponse({"value": self.state.task_list()})

    async def get_task(self, request: Request) -> Response:
        return JSONResponse(task_json(self.state, self.state.get_task(request.path_params["task"])))

    async def put_task(self, request: Request) -> Response:
        task, created = self.state.put_task(request.path_params["task"], await _json_body(request))
        return JSONResponse(task_json(self.state, task), status_code=201 if created else 200)

    async def delete_task(self, request: Request) -> Response:
        gone = self.state.delete_task(request.path_params["task"])
        return Response(status_code=200 if gone else 204)


def _error(exc: ArmError) -> Response:
    return arm_error(exc.status, exc.code, exc.message)


async def _authorize(emu: Any, request: Request) -> Optional[Response]:
    """The core's ARM bearer check (``TokenAuthority``): None when the caller may proceed, else a 401."""
    try:
        emu.auth.check_arm_authorization(request.headers.get("authorization"))
    except AuthError as exc:
        challenge = (f'Bearer authorization_uri="{emu.auth.issuer}", error="invalid_token", '
                     f'error_description="{exc.message}"')
        return arm_error(401, exc.code, exc.message, headers={"WWW-Authenticate": challenge})
    return None


def install(emu: Any) -> list[Route]:
    """Create ``emu.tasks`` and return the ACR Tasks routes."""
    state = TasksState(emu)
    emu.tasks = state
    return TasksApi(emu, state).routes()
