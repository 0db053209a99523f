"""Task definitions (``tasks`` resources): create, read, delete; their JSON, secrets masked."""
from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, Optional

from .common import (STEP_TYPES, TASK_NAME_RE, _bad, _decode_b64, _field, _iso, _not_found, _now, _obj,
                     _parse_agent_configuration, _parse_args, _parse_platform, _parse_timeout)

if TYPE_CHECKING:
    from .state import TasksState


class TaskDefinitions:
    """The task methods of ``TasksState`` (its lock and tasks)."""

    def task_list(self) -> list[dict]:
        with self._lock:
            return [task_json(self, t) for t in self.tasks.values()]

    def delete_task(self, name: str) -> bool:
        with self._lock:
            return self.tasks.pop(name.lower(), None) is not None

    # -- tasks

    def put_task(self, name: str, body: Any) -> tuple[dict, bool]:
        task = _parse_task_body(name, body)
        pool = task["properties"].get("agentPoolName")
        with self._lock:
            if pool is not None:
                if pool.lower() not in self.pools:
                    raise _bad(f"The agent pool '{pool}' was not found in the registry.", "AgentPoolNotFound")
                task["properties"]["agentPoolName"] = self.pools[pool.lower()].name
            old = self.tasks.get(name.lower())
            task["properties"]["creationDate"] = old["properties"]["creationDate"] if old else _iso(_now())
            self.tasks[name.lower()] = task
        return task, old is None

    def get_task(self, name: str) -> dict:
        task = self.tasks.get(name.lower())
        if task is None:
            raise _not_found("tasks", name)
        return task


def _check_task_step(step: dict) -> None:
    at = "properties.step."
    kind = _field(step, "type", str, at, required=True)
    if kind not in STEP_TYPES:
        raise _bad(f"The step type '{kind}' is not valid; allowed: {', '.join(sorted(STEP_TYPES))}.")
    if kind == "Docker":
        _field(step, "dockerFilePath", str, at, required=True)
        _parse_args(step.get("arguments"), f"{at}arguments")
        names = _field(step, "imageNames", list, at) or []
        if not all(isinstance(n, str) and n for n in names):
            raise _bad(f"The property '{at}imageNames' must be an array of non-empty strings.")
    elif kind == "EncodedTask":
        _decode_b64(_field(step, "encodedTaskContent", str, at, required=True), f"{at}encodedTaskContent")
        _parse_args(step.get("values"), f"{at}values")
    else:
        _field(step, "taskFilePath", str, at, required=True)
        _parse_args(step.get("values"), f"{at}values")


def _parse_task_body(name: str, body: Any) -> dict:
    if not TASK_NAME_RE.match(name):
        raise _bad(f"The task name '{name}' is invalid: 5-50 letters, digits, '-' or '_'.")
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    location = _field(body, "location", str, "")
    if not location:
        raise _bad("The property 'location' is required.", "LocationRequired")
    props = _obj(body, "properties", "", required=True)
    _parse_platform(props, "properties.", required=True)
    _check_task_step(_obj(props, "step", "properties.", required=True))
    status = _field(props, "status", str, "properties.") or "Enabled"
    if status not in ("Enabled", "Disabled"):
        raise _bad("The property 'properties.status' must be 'Enabled' or 'Disabled'.")
    if props.get("timeout") is not None:
        _parse_timeout(props, "properties.")
    _parse_agent_configuration(props, "properties.")
    _field(props, "agentPoolName", str, "properties.")
    stored = json.loads(json.dumps(body))
    stored["name"] = name
    stored["properties"]["status"] = status
    stored["properties"]["platform"] = _parse_platform(props, "properties.", required=True)
    stored["identity"] = _identity(body.get("identity"))
    return stored


def _identity(identity: Any) -> Optional[dict]:
    if not isinstance(identity, dict) or not identity.get("type"):
        return None
    out = dict(identity)
    if "SystemAssigned" in str(identity["type"]):
        out["principalId"] = str(uuid.uuid4())
        out["tenantId"] = str(uuid.uuid4())
    return out


def _public_args(items: Any) -> Any:
    if not isinstance(items, list):
        return items
    return [a for a in items if not (isinstance(a, dict) and a.get("isSecret"))]


def _public_credentials(creds: Any) -> Any:
    if not isinstance(creds, dict):
        return creds
    out = dict(creds)
    custom = creds.get("customRegistries")
    if isinstance(custom, dict):
        out["customRegistries"] = {
            host: {k: ({"type": v.get("type")} if isinstance(v, dict) else v) for k, v in (c or {}).items()}
            for host, c in custom.items()}
    return out


def _public_trigger(trigger: Any) -> Any:
    if not isinstance(trigger, dict):
        return trigger
    out = json.loads(json.dumps(trigger))
    base = out.get("baseImageTrigger")
    if isinstance(base, dict):
        base.setdefault("status", "Enabled")
        base["updateTriggerEndpoint"] = None
    for key in ("sourceTriggers", "timerTriggers"):
        for item in out.get(key) or []:
            if isinstance(item, dict):
                item.setdefault("status", "Enabled")
                repo = item.get("sourceRepository")
                if isinstance(repo, dict):
                    repo.pop("sourceControlAuthProperties", None)
    return out


def task_json(state: TasksState, task: dict) -> dict:
    """The stored task as ARM shows it: secret arguments/values and credentials left out."""
    out = json.loads(json.dumps(task))
    props = out["properties"]
    step = props["step"]
    for key in ("arguments", "values"):
        if key in step:
            step[key] = _public_args(step[key])
    step.pop("contextAccessToken", None)
    if "credentials" in props:
        props["credentials"] = _public_credentials(props["credentials"])
    if "trigger" in props:
        props["trigger"] = _public_trigger(props["trigger"])
    props["provisioningState"] = "Succeeded"
    props.setdefault("isSystemTask", False)
    out["id"] = f"{state.registry_id}/tasks/{task['name']}"
    out["type"] = "Microsoft.ContainerRegistry/registries/tasks"
    if out.get("identity") is None:
        out.pop("identity", None)
    return out
