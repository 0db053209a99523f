"""ACR Tasks for the emulator: scheduleRun, runs, agent pools, tasks (api-version 2025-03-01-preview).

``install(emu)`` returns the Starlette routes and sets ``emu.tasks`` to the ``TasksState``. Every
route sits under ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/
registries/{name}``, checks the ARM bearer token (``emu.auth``) and the api-version, and answers
errors as ARM ``ErrorResponse`` bodies (``errors.arm_error``), including 405 for other methods.

Behaviour tests can rely on
---------------------------
Clock. A run is ``Queued`` for one step, then ``Running`` for two steps ("build"), then pushes its
images and ends. A step lasts ``emu.config.run_step_seconds``, re-read while waiting, so changing
it (``/_devstack/settings``) also affects runs already under way.

Agent pools. Pools come from ``emu.config.agent_pools`` (already online). A run with
``agentPoolName`` needs a free agent of that pool: a pool with count N runs at most N runs at once,
the others stay ``Queued`` in arrival order; a pool at count 0 keeps its runs ``Queued``.
``listQueueStatus`` counts the pool's ``Queued`` runs. Creating or scaling a pool (PUT/PATCH that
changes ``count``) answers 201 with ``Azure-AsyncOperation`` (+ ``Retry-After``) and the pool shows
``provisioningState`` ``Creating``/``Updating``; the operation stays ``InProgress`` for
``config.pool_scale_seconds`` (None: one step; the ``azure`` profile: minutes), then the new count
takes effect (queued runs may start) and the operation is ``Succeeded``. DELETE is long-running too:
202 with ``Location`` (``.../agentPools/{pool}/operationResults/{op}``: 202 while running, then
204), ``Azure-AsyncOperation`` and ``Retry-After``; the pool shows ``Deleting`` (and takes no new
runs: 409 ``AgentPoolDeleting``) for ``config.pool_delete_seconds``, then it is gone (404).
A run without ``agentPoolName`` runs on the shared pool (no limit).

Outcome switches (deterministic; checked on build arguments and task values, and on the file name
of ``dockerFilePath`` / a task step's Dockerfile / override ``file``):
  ``AIRLOCK_EMULATOR_FAIL=1``    or ``fail.Dockerfile``    -> ``Failed`` after the build steps
  ``AIRLOCK_EMULATOR_TIMEOUT=1`` or ``timeout.Dockerfile`` -> ``Timeout`` after the build steps
  ``AIRLOCK_EMULATOR_HANG=1``    or ``hang.Dockerfile``    -> stays ``Running`` until cancelled or
                                                              until its real ``timeout`` (seconds)
Any ``Running`` run also ends ``Timeout`` once it has run longer than its ``timeout`` (wall clock).
Values "1", "true", "yes" (any case) switch on. Nothing is pushed by a run that does not succeed.

Pushes. A successful ``DockerBuildRequest`` (or Docker task step) with ``isPushEnabled`` (default
true) pushes a small generated image (``devstack.oci``, one layer, the run's platform, seeded by run
id and name) for every ``imageNames`` entry to the backing registry (``emu.config.backing_url``),
and records ``outputImages`` ``{registry: login server, repository, tag, digest}``. Names are
relative to the registry (a leading login server or ``<name>.azurecr.io/`` is dropped); tag
defaults to ``latest``; ``{{.Run.ID}}``, ``{{.Run.Registry}}``, ``{{.Run.RegistryName}}``,
``{{.Run.OS}}``, ``{{.Run.Architecture}}`` and ``{{.Run.Date}}`` are substituted. An
``EncodedTaskRunRequest`` pushes the images its YAML lists under ``push`` (top level or a step),
after substituting ``{{.Run.*}}``, ``$ID``/``$Registry``/``$RegistryName`` and ``{{.Values.x}}``.

Logs. Each run writes ``logs/{runId}/rawtext.log`` (an append blob in container ``acr-task-logs``
of ``emu.config.storage_connection_string``); ``listLogSasUrl`` returns a read SAS URL for it.
Build arguments and values marked ``isSecret`` never appear in the run log or in Python logs.
``listBuildSourceUploadUrl`` returns a write SAS URL into container ``acr-build-sources``; a run
whose ``sourceLocation`` is that relative path fails if nothing was uploaded there.

Error codes: 400 ``InvalidRequestContent`` (not a JSON object), ``InvalidParameter`` (validation),
``InvalidRunRequestType``, ``AgentPoolNotFound``/``TaskNotFound`` (a run request naming an unknown
pool/task), ``TaskDisabled``, ``LocationRequired``, ``MissingApiVersionParameter``,
``InvalidApiVersionParameter``; 404 ``ResourceNotFound`` (unknown run, pool, task, operation,
registry), ``ResourceGroupNotFound``, ``SubscriptionNotFound``; 405 ``MethodNotAllowed``;
409 ``AgentPoolInUse`` (deleting a pool with queued or running runs), ``StorageNotConfigured`` (log or
upload URL without a storage connection string); 401 from the bearer check (with
``WWW-Authenticate``). Cancelling a finished run is a no-op (200). ``close()`` stops the run threads.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import yaml
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings, generate_blob_sas
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devstack import oci

from ..auth import AuthError
from ..errors import arm_error

logger = logging.getLogger(__name__)

API_VERSION = "2025-03-01-preview"
REGISTRY_PATH = ("/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                 "Microsoft.ContainerRegistry/registries/{registry}")
LOG_CONTAINER = "acr-task-logs"
SOURCE_CONTAINER = "acr-build-sources"
SAS_HOURS = 24
TERMINAL = frozenset({"Succeeded", "Failed", "Canceled", "Error", "Timeout"})
ALL_METHODS = ["GET", "PUT", "POST", "PATCH", "DELETE"]
BUILD_STEPS = 2
MASK = "*****"

SWITCH_ARGS = {"AIRLOCK_EMULATOR_FAIL": "fail", "AIRLOCK_EMULATOR_TIMEOUT": "timeout",
               "AIRLOCK_EMULATOR_HANG": "hang"}
SWITCH_FILES = {"fail.dockerfile": "fail", "timeout.dockerfile": "timeout", "hang.dockerfile": "hang"}
TRUE_WORDS = frozenset({"1", "true", "yes"})

OS_VALUES = {"linux": "Linux", "windows": "Windows"}
ARCH_VALUES = frozenset({"amd64", "x86", "386", "arm", "arm64"})
VARIANT_VALUES = frozenset({"v6", "v7", "v8"})
POOL_TIERS = {"s1": "S1", "s2": "S2", "s3": "S3", "i6": "I6"}
STEP_TYPES = frozenset({"Docker", "FileTask", "EncodedTask"})
TIMEOUT_DEFAULT, TIMEOUT_MIN, TIMEOUT_MAX = 3600, 300, 28800

POOL_NAME_RE = re.compile(r"^[a-zA-Z0-9-]{3,20}$")
TASK_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{5,50}$")
REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
RUN_TEMPLATE_RE = re.compile(r"\{\{\s*\.Run\.(\w+)\s*\}\}")
VALUES_TEMPLATE_RE = re.compile(r"\{\{\s*\.Values\.(\w+)\s*\}\}")
ALIAS_RE = re.compile(r"\$(ID|Registry|RegistryName)\b")


class ArmError(Exception):
    """An error to answer as an ARM ErrorResponse."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str, code: str = "InvalidParameter") -> ArmError:
    return ArmError(400, code, message)


def _not_found(kind: str, name: str) -> ArmError:
    return ArmError(404, "ResourceNotFound",
                    f"The resource 'Microsoft.ContainerRegistry/registries/{kind}/{name}' was not found.")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(value: Optional[dt.datetime]) -> Optional[str]:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


# --- field validation ---------------------------------------------------------------------------

def _field(body: dict, key: str, kind: type | tuple, where: str, required: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        if required:
            raise _bad(f"The property '{where}{key}' is required.")
        return None
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _bad(f"The property '{where}{key}' must be of type {_json_type(names)}.")
    if kind is str and required and not value.strip():
        raise _bad(f"The property '{where}{key}' must not be empty.")
    return value


def _json_type(python_name: str) -> str:
    return {"str": "string", "int": "integer", "bool": "boolean", "dict": "object",
            "list": "array"}.get(python_name, python_name)


def _obj(body: dict, key: str, where: str, required: bool = False) -> Optional[dict]:
    return _field(body, key, dict, where, required)


@dataclass(frozen=True)
class Arg:
    """A build argument or task value; ``secret`` ones are never shown."""

    name: str
    value: str
    secret: bool

    def shown(self) -> str:
        return f"{self.name}={MASK}" if self.secret else f"{self.name}={self.value}"


def _parse_args(items: Any, where: str) -> list[Arg]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise _bad(f"The property '{where}' must be an array.")
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]."
        if not isinstance(item, dict):
            raise _bad(f"The property '{where}[{i}]' must be an object.")
        name = _field(item, "name", str, at, required=True)
        value = item.get("value")
        if value is None:
            raise _bad(f"The property '{at}value' is required.")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _bad(f"The property '{at}value' must be of type string.")
        secret = _field(item, "isSecret", bool, at) or False
        out.append(Arg(name, str(value), secret))
    return out


def _merge_args(base: list[Arg], override: list[Arg]) -> list[Arg]:
    merged = {a.name: a for a in base}
    merged.update({a.name: a for a in override})
    return list(merged.values())


def _parse_platform(body: dict, where: str, required: bool) -> Optional[dict]:
    plat = _obj(body, "platform", where, required)
    if plat is None:
        return None
    at = f"{where}platform."
    os_name = _field(plat, "os", str, at, required=True)
    if os_name.lower() not in OS_VALUES:
        raise _bad(f"The value '{os_name}' of '{at}os' is not valid; allowed: Linux, Windows.")
    arch = _field(plat, "architecture", str, at)
    if arch is not None and arch not in ARCH_VALUES:
        raise _bad(f"The value '{arch}' of '{at}architecture' is not valid; allowed: {', '.join(sorted(ARCH_VALUES))}.")
    variant = _field(plat, "variant", str, at)
    if variant is not None and variant not in VARIANT_VALUES:
        raise _bad(f"The value '{variant}' of '{at}variant' is not valid; allowed: v6, v7, v8.")
    return {"os": OS_VALUES[os_name.lower()], "architecture": arch, "variant": variant}


def _parse_timeout(body: dict, where: str) -> int:
    value = _field(body, "timeout", int, where)
    if value is None:
        return TIMEOUT_DEFAULT
    if not TIMEOUT_MIN <= value <= TIMEOUT_MAX:
        raise _bad(f"The property '{where}timeout' must be between {TIMEOUT_MIN} and {TIMEOUT_MAX} seconds.")
    return value


def _parse_agent_configuration(body: dict, where: str) -> Optional[dict]:
    conf = _obj(body, "agentConfiguration", where)
    if conf is None:
        return None
    cpu = _field(conf, "cpu", int, f"{where}agentConfiguration.")
    if cpu is not None and cpu < 1:
        raise _bad(f"The property '{where}agentConfiguration.cpu' must be at least 1.")
    return {"cpu": cpu}


def _parse_credentials(body: dict, where: str) -> tuple[Optional[str], list[str]]:
    """(sourceRegistryAuth, customRegistries) of a Credentials object; secrets are not kept."""
    creds = _obj(body, "credentials", where)
    if creds is None:
        return None, []
    at = f"{where}credentials."
    source = _obj(creds, "sourceRegistry", at) or {}
    login_mode = _field(source, "loginMode", str, f"{at}sourceRegistry.")
    custom = _obj(creds, "customRegistries", at) or {}
    return login_mode, sorted(custom)


def _decode_b64(value: str, where: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"The property '{where}' must be base64-encoded UTF-8 text.") from exc


# --- run requests -------------------------------------------------------------------------------

@dataclass
class RunSpec:
    """A validated run request, whatever its type."""

    kind: str
    run_type: str
    platform: dict
    timeout: int = TIMEOUT_DEFAULT
    agent_pool: Optional[str] = None
    image_names: list[str] = field(default_factory=list)
    push: bool = True
    dockerfile: Optional[str] = None
    target: Optional[str] = None
    no_cache: bool = False
    arguments: list[Arg] = field(default_factory=list)
    values: list[Arg] = field(default_factory=list)
    source_location: Optional[str] = None
    context_path: Optional[str] = None
    task: Optional[str] = None
    task_file: Optional[str] = None
    task_text: Optional[str] = None
    values_text: Optional[str] = None
    is_archive_enabled: bool = False
    agent_configuration: Optional[dict] = None
    log_template: Optional[str] = None
    update_trigger_token: Optional[str] = None
    source_registry_auth: Optional[str] = None
    custom_registries: list[str] = field(default_factory=list)

    def secrets(self) -> list[str]:
        return [a.value for a in (*self.arguments, *self.values) if a.secret and a.value]

    def outcome(self) -> Optional[str]:
        for arg in (*self.arguments, *self.values):
            kind = SWITCH_ARGS.get(arg.name.upper())
            if kind and arg.value.strip().lower() in TRUE_WORDS:
                return kind
        base = (self.dockerfile or "").replace("\\", "/").rsplit("/", 1)[-1].lower()
        return SWITCH_FILES.get(base)


def _common(body: dict, spec: RunSpec) -> RunSpec:
    spec.is_archive_enabled = _field(body, "isArchiveEnabled", bool, "") or False
    spec.log_template = _field(body, "logTemplate", str, "")
    spec.agent_pool = _field(body, "agentPoolName", str, "") or spec.agent_pool
    return spec


def _parse_docker(body: dict) -> RunSpec:
    spec = RunSpec(kind="DockerBuildRequest", run_type="QuickBuild",
                   platform=_parse_platform(body, "", required=True))
    spec.dockerfile = _field(body, "dockerFilePath", str, "", required=True)
    names = _field(body, "imageNames", list, "") or []
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise _bad("The property 'imageNames' must be an array of non-empty strings.")
    spec.image_names = [n.strip() for n in names]
    push = _field(body, "isPushEnabled", bool, "")
    spec.push = True if push is None else push
    spec.no_cache = _field(body, "noCache", bool, "") or False
    spec.target = _field(body, "target", str, "")
    spec.arguments = _parse_args(body.get("arguments"), "arguments")
    _fill_run_environment(body, spec)
    return _common(body, spec)


def _fill_run_environment(body: dict, spec: RunSpec) -> None:
    spec.timeout = _parse_timeout(body, "")
    spec.agent_configuration = _parse_agent_configuration(body, "")
    spec.source_location = _field(body, "sourceLocation", str, "")
    spec.source_registry_auth, spec.custom_registries = _parse_credentials(body, "")


def _parse_encoded(body: dict) -> RunSpec:
    spec = RunSpec(kind="EncodedTaskRunRequest", run_type="QuickRun",
                   platform=_parse_platform(body, "", required=True))
    content = _field(body, "encodedTaskContent", str, "", required=True)
    spec.task_text = _decode_b64(content, "encodedTaskContent")
    values = _field(body, "encodedValuesContent", str, "")
    spec.values_text = _decode_b64(values, "encodedValuesContent") if values else None
    spec.values = _parse_args(body.get("values"), "values")
    _fill_run_environment(body, spec)
    return _common(body, spec)


def _parse_file(body: dict) -> RunSpec:
    spec = RunSpec(kind="FileTaskRunRequest", run_type="QuickRun",
                   platform=_parse_platform(body, "", required=True))
    spec.task_file = _field(body, "taskFilePath", str, "", required=True)
    _field(body, "valuesFilePath", str, "")
    spec.values = _parse_args(body.get("values"), "values")
    _fill_run_environment(body, spec)
    return _common(body, spec)


def _task_name_from_id(task_id: str) -> str:
    return task_id.rstrip("/").rsplit("/", 1)[-1]


def _parse_task_run(body: dict, tasks: dict[str, dict]) -> RunSpec:
    task_id = _field(body, "taskId", str, "", required=True)
    name = _task_name_from_id(task_id)
    task = tasks.get(name.lower())
    if task is None:
        raise _bad(f"The task '{name}' was not found in the registry.", "TaskNotFound")
    props = task["properties"]
    if props.get("status") == "Disabled":
        raise _bad(f"The task '{task['name']}' is disabled.", "TaskDisabled")
    spec = _spec_from_task(task)
    override = _obj(body, "overrideTaskStepProperties", "") or {}
    _apply_override(spec, override)
    return _common(body, spec)


def _spec_from_task(task: dict) -> RunSpec:
    props, step = task["properties"], task["properties"]["step"]
    docker = step["type"] == "Docker"
    spec = RunSpec(kind="TaskRunRequest", run_type="AutoBuild" if docker else "AutoRun",
                   platform=dict(props["platform"]), timeout=props.get("timeout") or TIMEOUT_DEFAULT,
                   agent_pool=props.get("agentPoolName"), task=task["name"])
    spec.agent_configuration = props.get("agentConfiguration")
    spec.log_template = props.get("logTemplate")
    spec.context_path = step.get("contextPath")
    spec.source_location = step.get("contextPath")
    spec.source_registry_auth, spec.custom_registries = _parse_credentials(props, "properties.")
    if docker:
        spec.dockerfile = step.get("dockerFilePath")
        spec.image_names = list(step.get("imageNames") or [])
        spec.push = step.get("isPushEnabled", True) is not False
        spec.no_cache = bool(step.get("noCache"))
        spec.target = step.get("target")
        spec.arguments = _parse_args(step.get("arguments"), "properties.step.arguments")
    elif step["type"] == "EncodedTask":
        spec.task_text = _decode_b64(step["encodedTaskContent"], "properties.step.encodedTaskContent")
        spec.values = _parse_args(step.get("values"), "properties.step.values")
    else:
        spec.task_file = step.get("taskFilePath")
        spec.values = _parse_args(step.get("values"), "properties.step.values")
    return spec


def _apply_override(spec: RunSpec, override: dict) -> None:
    at = "overrideTaskStepProperties."
    spec.context_path = _field(override, "contextPath", str, at) or spec.context_path
    spec.source_location = spec.context_path
    file = _field(override, "file", str, at)
    if file:
        if spec.kind == "TaskRunRequest" and spec.run_type == "AutoBuild":
            spec.dockerfile = file
        else:
            spec.task_file = file
    spec.target = _field(override, "target", str, at) or spec.target
    spec.arguments = _merge_args(spec.arguments, _parse_args(override.get("arguments"), f"{at}arguments"))
    spec.values = _merge_args(spec.values, _parse_args(override.get("values"), f"{at}values"))
    spec.update_trigger_token = _field(override, "updateTriggerToken", str, at)


PARSERS: dict[str, Callable[[dict], RunSpec]] = {
    "DockerBuildRequest": _parse_docker,
    "EncodedTaskRunRequest": _parse_encoded,
    "FileTaskRunRequest": _parse_file,
}


def parse_run_request(body: Any, tasks: dict[str, dict]) -> RunSpec:
    """Validate a scheduleRun body the way ARM does; raises ArmError (400)."""
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    kind = body.get("type")
    if kind is None:
        raise _bad("The property 'type' is required.", "InvalidRunRequestType")
    if kind == "TaskRunRequest":
        return _parse_task_run(body, tasks)
    parser = PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        allowed = ", ".join(sorted([*PARSERS, "TaskRunRequest"]))
        raise _bad(f"The run request type '{kind}' is not supported; allowed: {allowed}.", "InvalidRunRequestType")
    return parser(body)


# --- image names --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def render_run_template(text: str, run_vars: dict[str, str]) -> str:
    """Substitute ``{{.Run.X}}`` placeholders; an unknown one is left as it is."""
    return RUN_TEMPLATE_RE.sub(lambda m: run_vars.get(m.group(1), m.group(0)), text)


def _registry_prefixes(login_server: str, registry_name: str) -> tuple[str, ...]:
    return (f"{login_server.lower()}/", f"{registry_name.lower()}.azurecr.io/")


def parse_image_name(name: str, prefixes: tuple[str, ...]) -> ImageRef:
    """``repo[:tag]`` relative to the registry (a leading login server is dropped)."""
    text = name.strip()
    for prefix in prefixes:
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            break
    if "@" in text:
        raise _bad(f"The image name '{name}' must name a tag, not a digest.")
    first = text.split("/", 1)[0]
    if "/" in text and ("." in first or ":" in first or first == "localhost"):
        raise _bad(f"The image name '{name}' names another registry; runs push only to this registry.")
    repo, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = text, "latest"
    if not REPO_RE.match(repo):
        raise _bad(f"The image name '{name}' is not a valid repository name of this registry.")
    if not TAG_RE.match(tag):
        raise _bad(f"The image name '{name}' has an invalid tag '{tag}'.")
    return ImageRef(repo, tag)


def encoded_task_pushes(task_text: str, values: dict[str, str], run_vars: dict[str, str]) -> list[str]:
    """Image names an ACR task YAML pushes (top-level ``push`` or ``- push:`` steps); [] if unreadable."""
    text = VALUES_TEMPLATE_RE.sub(lambda m: values.get(m.group(1), m.group(0)), task_text)
    text = ALIAS_RE.sub(lambda m: run_vars.get(m.group(1), m.group(0)), render_run_template(text, run_vars))
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    if not isinstance(doc, dict):
        return []
    names: list[str] = []
    for step in [doc, *(s for s in doc.get("steps") or [] if isinstance(s, dict))]:
        pushes = step.get("push")
        if isinstance(pushes, list):
            names.extend(str(p) for p in pushes if isinstance(p, (str, int)))
    return names


def _values_map(spec: RunSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec.values_text:
        try:
            loaded = yaml.safe_load(spec.values_text)
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict):
            out.update({str(k): str(v) for k, v in loaded.items()})
    out.update({a.name: a.value for a in spec.values})
    return out


# --- domain objects -----------------------------------------------------------------------------

@dataclass
class Pool:
    name: str
    count: int
    tier: str = "S1"
    os: str = "Linux"
    location: str = "westus"
    tags: dict = field(default_factory=dict)
    active: int = 0  # agents online (count takes effect when a scale operation completes)
    provisioning_state: str = "Succeeded"
    subnet: Optional[str] = None
    deleting: Optional["Operation"] = None  # the delete operation under way


@dataclass
class Operation:
    op_id: str
    pool: str
    status: str = "InProgress"
    start: dt.datetime = field(default_factory=_now)
    end: Optional[dt.datetime] = None


@dataclass
class Run:
    run_id: str
    seq: int
    spec: RunSpec
    images: list[ImageRef]
    status: str = "Queued"
    create_time: dt.datetime = field(default_factory=_now)
    last_updated: dt.datetime = field(default_factory=_now)
    start_time: Optional[dt.datetime] = None
    finish_time: Optional[dt.datetime] = None
    output_images: list[dict] = field(default_factory=list)
    error_message: Optional[str] = None
    waiting: bool = False  # reached the agent queue
    holds_agent: bool = False
    wake: threading.Event = field(default_factory=threading.Event)
    log_lines: list[str] = field(default_factory=list)

    @property
    def pool(self) -> Optional[str]:
        return self.spec.agent_pool

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


# --- run log and build source storage (Azurite) -------------------------------------------------

class BlobArea:
    """The run log blobs and build-source uploads in the storage account; failures are logged, not raised."""

    def __init__(self, connection_string: Optional[str]):
        self._conn = connection_string or ""
        self._service = None
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._conn)

    def _client(self) -> BlobServiceClient:
        with self._lock:
            if self._service is None:
                self._service = BlobServiceClient.from_connection_string(self._conn)
            return self._service

    def _container(self, name: str):
        container = self._client().get_container_client(name)
        if name not in self._ready:
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            self._ready.add(name)
        return container

    @staticmethod
    def log_blob(run_id: str) -> str:
        return f"logs/{run_id}/rawtext.log"

    def start_log(self, run_id: str) -> None:
        try:
            self._container(LOG_CONTAINER).get_blob_client(self.log_blob(run_id)).create_append_blob(
                content_settings=_text_settings())
        except Exception as exc:  # noqa: BLE001 - storage trouble must not stop the run
            logger.warning("run %s: cannot create log blob: %s", run_id, type(exc).__name__)

    def append_log(self, run_id: str, text: str) -> None:
        try:
            blob = self._container(LOG_CONTAINER).get_blob_client(self.log_blob(run_id))
            blob.append_block(text.encode("utf-8"))
        except Exception as exc:  # noqa: BLE001
            logger.warning("run %s: cannot append to log blob: %s", run_id, type(exc).__name__)

    def sas_url(self, container: str, blob_name: str, permission: str) -> str:
        service = self._client()
        self._container(container)
        sas = generate_blob_sas(service.account_name, container, blob_name,
                                account_key=service.credential.account_key, permission=permission,
                                expiry=_now() + dt.timedelta(hours=SAS_HOURS))
        return f"{service.get_blob_client(container, blob_name).url}?{sas}"

    def source_size(self, relative_path: str) -> Optional[int]:
        try:
            blob = self._container(SOURCE_CONTAINER).get_blob_client(relative_path)
            return blob.get_blob_properties().size
        except ResourceNotFoundError:
            return None


def _text_settings() -> ContentSettings:
    return ContentSettings(content_type="text/plain; charset=utf-8")


# --- state and the run clock --------------------------------------------------------------------

class TasksState:
    """Runs, agent pools, tasks and pool operations of one emulated registry (``emu.tasks``)."""

    def __init__(self, emu: Any):
        self.emu = emu
        self.config = emu.config
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._closed = threading.Event()
        self._last_seq = 0
        self.runs: dict[str, Run] = {}
        self.pools: dict[str, Pool] = {}
        self.tasks: dict[str, dict] = {}
        self.operations: dict[str, Operation] = {}
        self.blobs = BlobArea(getattr(self.config, "storage_connection_string", None))
        for name, conf in (getattr(self.config, "agent_pools", None) or {}).items():
            self._add_config_pool(name, conf or {})

    def _add_config_pool(self, name: str, conf: dict) -> None:
        count = int(conf.get("count", 1))
        self.pools[name.lower()] = Pool(name=name, count=count, active=count, tier=conf.get("tier", "S1"),
                                        os=conf.get("os", "Linux"), location=self.location)

    # -- identity of the registry

    @property
    def location(self) -> str:
        return getattr(self.config, "location", None) or "westus"

    @property
    def login_server(self) -> str:
        server = getattr(self.emu, "login_server", None)
        if server:
            return server
        return f"{self.config.host}:{self.config.port}"

    @property
    def registry_id(self) -> str:
        c = self.config
        return REGISTRY_PATH.format(subscription=c.subscription_id, group=c.resource_group, registry=c.registry_name)

    def step_seconds(self) -> float:
        try:
            return max(0.0, float(getattr(self.config, "run_step_seconds", 1.0)))
        except (TypeError, ValueError):
            return 1.0

    def close(self) -> None:
        """Stop every run thread (they are daemons; this makes them exit promptly)."""
        self._closed.set()
        with self._cond:
            for run in self.runs.values():
                run.wake.set()
            self._cond.notify_all()

    # -- scheduling

    def schedule(self, spec: RunSpec) -> Run:
        """Validate what depends on state, create the run (Queued) and start its clock."""
        with self._lock:
            if spec.agent_pool is not None:
                pool = self.pools.get(spec.agent_pool.lower())
                if pool is None:
                    raise _bad(f"The agent pool '{spec.agent_pool}' was not found in the registry.",
                               "AgentPoolNotFound")
                if pool.deleting is not None:
                    raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
                spec.agent_pool = pool.name
            seq = self._last_seq + 1
            run_id = f"cb{_base36(seq)}"
            images = self._resolve_images(spec, run_id)
            self._last_seq = seq
            run = Run(run_id=run_id, seq=seq, spec=spec, images=images)
            self.runs[run_id] = run
        logger.info("run %s scheduled: %s on pool %s", run_id, spec.kind, spec.agent_pool or "(shared)")
        return run

    def start(self, run: Run) -> None:
        if self.blobs.enabled:
            self.blobs.start_log(run.run_id)
        where = f"agent pool '{run.pool}'" if run.pool else "the shared pool"
        self.log(run, f"Queued a run with ID: {run.run_id} ({run.spec.kind}) on {where}")
        threading.Thread(target=self._drive, args=(run,), name=f"acr-run-{run.run_id}", daemon=True).start()

    def run_vars(self, run_id: str, platform: dict) -> dict[str, str]:
        return {"ID": run_id, "Registry": self.login_server, "RegistryName": self.config.registry_name,
                "OS": platform["os"].lower(), "Architecture": platform.get("architecture") or "amd64",
                "Date": _now().strftime("%Y%m%d-%H%M%Sz")}

    def _resolve_images(self, spec: RunSpec, run_id: str) -> list[ImageRef]:
        run_vars = self.run_vars(run_id, spec.platform)
        names = list(spec.image_names)
        if spec.task_text:
            names += encoded_task_pushes(spec.task_text, _values_map(spec), run_vars)
        prefixes = _registry_prefixes(self.login_server, self.config.registry_name)
        refs = [parse_image_name(render_run_template(n, run_vars), prefixes) for n in names]
        return list(dict.fromkeys(refs))

    # -- logs

    def log(self, run: Run, message: str) -> None:
        """Append a line to the run's log (memory and blob), secrets masked."""
        for secret in run.spec.secrets():
            message = message.replace(secret, MASK)
        line = f"{_now().strftime('%Y/%m/%d %H:%M:%S')} {message}\n"
        with self._lock:
            run.log_lines.append(line)
        if self.blobs.enabled:
            self.blobs.append_log(run.run_id, line)

    # -- the clock

    def _pause(self, run: Run, steps: float = 1.0, deadline: Optional[float] = None) -> str:
        """Wait ``steps`` run steps (re-reading the step length). 'ok', 'stopped' or 'deadline'."""
        began = time.monotonic()
        while True:
            if run.done or self._closed.is_set():
                return "stopped"
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return "deadline"
            end = began + steps * self.step_seconds() if math.isfinite(steps) else math.inf
            if now >= end:
                return "ok"
            limit = min(end, deadline if deadline is not None else math.inf) - now
            run.wake.wait(min(limit, 0.05))

    def _drive(self, run: Run) -> None:
        try:
            if self._pause(run) != "ok" or not self._acquire_agent(run):
                return
            self._execute(run)
        except Exception:  # noqa: BLE001 - the run ends in Error, the emulator keeps going
            logger.exception("run %s: emulator error", run.run_id)
            self.finish(run, "Error", "internal emulator error")
        finally:
            self._release(run)

    def _can_start(self, run: Run) -> bool:
        if run.pool is None:
            return True
        pool = self.pools.get(run.pool.lower())
        if pool is None:
            return False
        busy = sum(1 for r in self.runs.values() if r.holds_agent and r.pool == run.pool)
        if busy >= pool.active:
            return False
        first = min((r for r in self.runs.values() if r.waiting and not r.done and r.pool == run.pool),
                    key=lambda r: r.seq)
        return first is run

    def _try_start(self, run: Run) -> tuple[str, bool]:
        """Under the lock: ('started'|'stopped'|'missing'|'wait', pool has no agents)."""
        run.waiting = True
        if run.done or self._closed.is_set():
            return "stopped", False
        pool = self.pools.get(run.pool.lower()) if run.pool else None
        if run.pool and pool is None:
            return "missing", False
        if not self._can_start(run):
            return "wait", pool is not None and pool.active == 0
        run.waiting, run.holds_agent = False, True
        run.status, run.start_time = "Running", _now()
        run.last_updated = run.start_time
        return "started", False

    def _acquire_agent(self, run: Run) -> bool:
        """Wait (Queued) for an agent of the run's pool; False if the run ended meanwhile."""
        told = False
        while True:
            with self._cond:
                verdict, idle = self._try_start(run)
                if verdict == "wait" and told:
                    self._cond.wait(0.5)
                    continue
            if verdict == "started":
                break
            if verdict == "stopped":
                return False
            if verdict == "missing":
                self.finish(run, "Failed", f"the agent pool '{run.pool}' no longer exists")
                return False
            told = True
            why = "has no agents (count 0)" if idle else "has no free agent"
            self.log(run, f"Waiting for an agent: agent pool '{run.pool}' {why}")
        logger.info("run %s running", run.run_id)
        where = f"agent pool '{run.pool}'" if run.pool else "the shared pool"
        self.log(run, f"Run {run.run_id} started on {where} (platform {_platform_text(run.spec.platform)})")
        return True

    def _release(self, run: Run) -> None:
        with self._cond:
            run.waiting = False
            if run.holds_agent:
                run.holds_agent = False
                self._cond.notify_all()

    def _execute(self, run: Run) -> None:
        deadline = time.monotonic() + run.spec.timeout
        if not self._prepare_source(run):
            return
        outcome = run.spec.outcome()
        for number, text in enumerate(_build_lines(run.spec), start=1):
            self.log(run, f"Step {number}/{BUILD_STEPS}: {text}")
            waited = self._pause(run, 1.0, deadline)
            if waited != "ok":
                self._interrupted(run, waited)
                return
        if outcome == "hang":
            self.log(run, "The build step is not finishing (AIRLOCK_EMULATOR_HANG)")
            self._interrupted(run, self._pause(run, math.inf, deadline))
            return
        if outcome == "fail":
            self.finish(run, "Failed", "the build step failed: exit status 1 (emulated failure)")
            return
        if outcome == "timeout":
            self.finish(run, "Timeout", f"the run exceeded its timeout of {run.spec.timeout} seconds")
            return
        self._push_all(run)

    def _interrupted(self, run: Run, reason: str) -> None:
        if reason == "deadline":
            self.finish(run, "Timeout", f"the run exceeded its timeout of {run.spec.timeout} seconds")

    def _prepare_source(self, run: Run) -> bool:
        location = run.spec.source_location
        if not location:
            self.log(run, "No source location given: using an empty build context")
            return True
        if "://" in location or not self.blobs.enabled or run.spec.kind == "TaskRunRequest":
            self.log(run, f"Downloading source code from {_without_query(location)}")
            return True
        size = self.blobs.source_size(location)
        if size is None:
            self.finish(run, "Failed", f"the build source '{location}' was not found; "
                                       "upload it with the URL from listBuildSourceUploadUrl first")
            return False
        self.log(run, f"Downloaded uploaded source '{location}' ({size} bytes)")
        return True

    def _push_all(self, run: Run) -> None:
        pushed: list[dict] = []
        if run.images and not run.spec.push:
            self.log(run, "Push is disabled: built images are not pushed")
        elif run.images:
            for ref in run.images:
                if run.done:
                    return
                try:
                    digest = self._push_one(run, ref)
                except Exception as exc:  # noqa: BLE001 - any push failure fails the run
                    logger.warning("run %s: push of %s failed: %s", run.run_id, ref, str(exc)[:300])
                    self.finish(run, "Failed", f"failed to push {self.login_server}/{ref}")
                    return
                pushed.append({"registry": self.login_server, "repository": ref.repository,
                               "tag": ref.tag, "digest": digest})
                self.log(run, f"Pushed {self.login_server}/{ref} digest: {digest}")
        self.finish(run, "Succeeded", None, pushed)

    def _push_one(self, run: Run, ref: ImageRef) -> str:
        plat = run.spec.platform
        platform = "/".join(p for p in (plat["os"].lower(), plat.get("architecture") or "amd64",
                                        plat.get("variant")) if p)
        layout = oci.build_image(ref.repository, platforms=(platform,), layers=1,
                                 seed=f"{run.run_id}|{ref}|{run.create_time.isoformat()}")
        host = re.sub(r"^https?://", "", self.config.backing_url).rstrip("/")
        return oci.push(layout, f"{host}/{ref}", tls_verify=False, retries=1, timeout=60)

    def finish(self, run: Run, status: str, message: Optional[str], output: Optional[list] = None) -> bool:
        """Move a run to a final status (once); logs the last line. False if it had already ended."""
        with self._cond:
            if run.done:
                return False
            run.status, run.error_message = status, message
            run.finish_time = run.last_updated = _now()
            run.output_images = output or []
            run.holds_agent = run.waiting = False
            run.wake.set()
            self._cond.notify_all()
        logger.info("run %s %s", run.run_id, status)
        elapsed = (run.finish_time - (run.start_time or run.create_time)).total_seconds()
        tail = f": {message}" if message else ""
        self.log(run, f"Run ID: {run.run_id} {_final_word(status)} after {elapsed:.1f}s{tail}")
        return True

    def cancel(self, run: Run) -> None:
        self.finish(run, "Canceled", None)

    # -- queries

    def get_run(self, run_id: str) -> Run:
        run = self.runs.get(run_id.lower())
        if run is None:
            raise _not_found("runs", run_id)
        return run

    def view(self, run: Run) -> dict:
        """The run's ARM JSON, read consistently (a run thread may be changing it)."""
        with self._lock:
            return run_json(self, run)

    def runs_newest_first(self) -> list[dict]:
        with self._lock:
            return [run_json(self, r) for r in sorted(self.runs.values(), key=lambda r: r.seq, reverse=True)]

    def pool_list(self) -> list[dict]:
        with self._lock:
            return [pool_json(self, p) for p in self.pools.values()]

    def task_list(self) -> list[dict]:
        with self._lock:
            return [task_json(self, t) for t in self.tasks.values()]

    def delete_task(self, name: str) -> bool:
        with self._lock:
            return self.tasks.pop(name.lower(), None) is not None

    def queued_on(self, pool_name: str) -> int:
        with self._lock:
            return sum(1 for r in self.runs.values() if r.status == "Queued" and r.pool == pool_name)

    def active_runs_on(self, pool_name: str) -> int:
        with self._lock:
            return sum(1 for r in self.runs.values() if not r.done and r.pool == pool_name)

    # -- agent pools

    def get_pool(self, name: str) -> Pool:
        pool = self.pools.get(name.lower())
        if pool is None:
            raise _not_found("agentPools", name)
        return pool

    def put_pool(self, name: str, body: dict) -> tuple[Pool, Optional[Operation], bool]:
        """Create or replace a pool. Returns (pool, operation or None, created)."""
        props, location, tags = _parse_pool_body(body)
        with self._lock:
            pool = self.pools.get(name.lower())
            created = pool is None
            if pool is not None and pool.deleting is not None:
                raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
            if created:
                pool = Pool(name=name, count=0, active=0, provisioning_state="Creating")
                self.pools[name.lower()] = pool
            pool.location, pool.tags = location, tags
            pool.tier = props.get("tier", pool.tier)
            pool.os = props.get("os", pool.os)
            pool.subnet = props.get("virtualNetworkSubnetResourceId", pool.subnet)
            count = props.get("count", 1 if created else pool.count)
            op = self._scale(pool, count) if created or count != pool.active else None
        return pool, op, created

    def patch_pool(self, name: str, body: dict) -> tuple[Pool, Optional[Operation]]:
        count, tags = _parse_pool_patch(body)
        with self._lock:
            pool = self.get_pool(name)
            if pool.deleting is not None:
                raise ArmError(409, "AgentPoolDeleting", f"The agent pool '{pool.name}' is being deleted.")
            if tags is not None:
                pool.tags = tags
            if count is None or (count == pool.active and pool.provisioning_state == "Succeeded"):
                return pool, None
            return pool, self._scale(pool, count)

    def delete_pool(self, name: str) -> Optional[Operation]:
        """Start deleting a pool: its operation (the same one while a delete is under way), or None
        when there is no such pool."""
        with self._lock:
            pool = self.pools.get(name.lower())
            if pool is None:
                return None
            if pool.deleting is not None:
                return pool.deleting
            if self.active_runs_on(pool.name):
                raise ArmError(409, "AgentPoolInUse",
                               f"The agent pool '{pool.name}' has queued or running runs.")
            op = Operation(op_id=str(uuid.uuid4()), pool=pool.name)
            self.operations[op.op_id] = op
            pool.deleting, pool.provisioning_state = op, "Deleting"
        threading.Thread(target=self._complete_delete, args=(pool, op), name=f"acr-pool-{pool.name}-delete",
                         daemon=True).start()
        logger.info("agent pool %s: deleting", pool.name)
        return op

    def _operation_seconds(self, name: str) -> float:
        value = getattr(self.config, name, None)
        return self.step_seconds() if value is None else max(0.0, float(value))

    def _wait_operation(self, name: str) -> None:
        """Sleep for the operation time (re-read while waiting, so a settings change applies)."""
        began = time.monotonic()
        while not self._closed.is_set() and time.monotonic() < began + self._operation_seconds(name):
            self._closed.wait(0.05)

    def _complete_delete(self, pool: Pool, op: Operation) -> None:
        self._wait_operation("pool_delete_seconds")
        with self._cond:
            op.status, op.end = "Succeeded", _now()
            if self.pools.get(pool.name.lower()) is pool:
                del self.pools[pool.name.lower()]
            self._cond.notify_all()
        logger.info("agent pool %s: deleted", pool.name)

    def _scale(self, pool: Pool, count: int) -> Operation:
        op = Operation(op_id=str(uuid.uuid4()), pool=pool.name)
        self.operations[op.op_id] = op
        pool.count = count
        if pool.provisioning_state != "Creating":
            pool.provisioning_state = "Updating"
        threading.Thread(target=self._complete_scale, args=(pool, op, count),
                         name=f"acr-pool-{pool.name}", daemon=True).start()
        logger.info("agent pool %s: scaling to %d", pool.name, count)
        return op

    def _complete_scale(self, pool: Pool, op: Operation, count: int) -> None:
        self._wait_operation("pool_scale_seconds")
        with self._cond:
            op.status, op.end = "Succeeded", _now()
            if self.pools.get(pool.name.lower()) is not pool or pool.count != count or pool.deleting:
                return  # deleted, or a later scale operation owns the pool now
            pool.active, pool.provisioning_state = count, "Succeeded"
            waiting = [r for r in self.runs.values() if r.status == "Queued" and r.pool == pool.name]
            self._cond.notify_all()
        logger.info("agent pool %s: %d agent(s) online", pool.name, count)
        for run in waiting:
            self.log(run, f"Agent pool '{pool.name}' scaled to {count} agent(s)")

    def get_operation(self, pool_name: str, op_id: str) -> Operation:
        op = self.operations.get(op_id)
        if op is None or op.pool.lower() != pool_name.lower():
            raise _not_found(f"agentPools/{pool_name}/operationStatuses", op_id)
        return op

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


def _platform_text(platform: dict) -> str:
    return "/".join(p for p in (platform["os"].lower(), platform.get("architecture"), platform.get("variant")) if p)


def _without_query(url: str) -> str:
    """A source URL fit for the log: no query (SAS tokens) and no user:password@."""
    base = url.split("?", 1)[0]
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", base)


def _final_word(status: str) -> str:
    return {"Succeeded": "was successful", "Failed": "failed", "Canceled": "was canceled",
            "Timeout": "timed out", "Error": "ended with an error"}.get(status, status)


def _build_lines(spec: RunSpec) -> list[str]:
    if spec.dockerfile:
        args = " ".join(f"--build-arg {a.shown()}" for a in spec.arguments)
        target = f" --target {spec.target}" if spec.target else ""
        cache = " --no-cache" if spec.no_cache else ""
        return [f"docker build -f {spec.dockerfile}{target}{cache} {args}".rstrip(),
                "Successfully built the image layers"]
    what = spec.task_file or "encoded task"
    values = ", ".join(a.shown() for a in spec.values) or "no values"
    return [f"Running task definition {what} ({values})", "Task steps completed"]


# --- pools and tasks bodies ---------------------------------------------------------------------

def _parse_pool_body(body: Any) -> tuple[dict, str, dict]:
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    location = _field(body, "location", str, "")
    if not location:
        raise _bad("The property 'location' is required.", "LocationRequired")
    tags = _field(body, "tags", dict, "") or {}
    props = _obj(body, "properties", "") or {}
    out: dict = {}
    count = _field(props, "count", int, "properties.")
    if count is not None:
        out["count"] = _check_count(count)
    tier = _field(props, "tier", str, "properties.")
    if tier is not None:
        if tier.lower() not in POOL_TIERS:
            raise _bad(f"The tier '{tier}' is not valid; allowed: {', '.join(POOL_TIERS.values())}.")
        out["tier"] = POOL_TIERS[tier.lower()]
    os_name = _field(props, "os", str, "properties.")
    if os_name is not None:
        if os_name.lower() != "linux":
            raise _bad("Agent pools support only os 'Linux'.")
        out["os"] = "Linux"
    subnet = _field(props, "virtualNetworkSubnetResourceId", str, "properties.")
    if subnet is not None:
        out["virtualNetworkSubnetResourceId"] = subnet
    return out, location, tags


def _check_count(count: int) -> int:
    if count < 0 or count > 100:
        raise _bad("The property 'properties.count' must be between 0 and 100.")
    return count


def _parse_pool_patch(body: Any) -> tuple[Optional[int], Optional[dict]]:
    if not isinstance(body, dict):
        raise _bad("The request content must be a JSON object.", "InvalidRequestContent")
    props = _obj(body, "properties", "") or {}
    count = _field(props, "count", int, "properties.")
    return (None if count is None else _check_count(count)), _field(body, "tags", dict, "")


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


# --- JSON shapes --------------------------------------------------------------------------------

def run_json(state: TasksState, run: Run) -> dict:
    spec = run.spec
    props = {
        "runId": run.run_id,
        "status": run.status,
        "lastUpdatedTime": _iso(run.last_updated),
        "runType": spec.run_type,
        "agentPoolName": spec.agent_pool,
        "createTime": _iso(run.create_time),
        "startTime": _iso(run.start_time),
        "finishTime": _iso(run.finish_time),
        "outputImages": list(run.output_images),
        "task": spec.task,
        "imageUpdateTrigger": None,
        "sourceTrigger": None,
        "timerTrigger": None,
        "platform": {k: v for k, v in spec.platform.items() if v is not None},
        "agentConfiguration": spec.agent_configuration,
        "sourceRegistryAuth": spec.source_registry_auth,
        "customRegistries": spec.custom_registries,
        "runErrorMessage": run.error_message,
        "updateTriggerToken": spec.update_trigger_token,
        "logArtifact": None,
        "provisioningState": "Succeeded",
        "isArchiveEnabled": spec.is_archive_enabled,
    }
    return {"id": f"{state.registry_id}/runs/{run.run_id}", "name": run.run_id,
            "type": "Microsoft.ContainerRegistry/registries/runs", "properties": props}


def pool_json(state: TasksState, pool: Pool) -> dict:
    props = {"count": pool.count, "tier": pool.tier, "os": pool.os, "provisioningState": pool.provisioning_state}
    if pool.subnet:
        props["virtualNetworkSubnetResourceId"] = pool.subnet
    return {"id": f"{state.registry_id}/agentPools/{pool.name}", "name": pool.name,
            "type": "Microsoft.ContainerRegistry/registries/agentPools", "location": pool.location,
            "tags": pool.tags, "properties": props}


def operation_json(state: TasksState, op: Operation) -> dict:
    return {"id": f"{state.registry_id}/agentPools/{op.pool}/operationStatuses/{op.op_id}", "name": op.op_id,
            "status": op.status, "startTime": _iso(op.start), "endTime": _iso(op.end)}


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


# --- $filter and $top for runs ------------------------------------------------------------------

FILTER_FIELDS = {"runid": "runId", "status": "status", "agentpoolname": "agentPoolName", "task": "task",
                 "taskname": "task", "runtype": "runType"}
CLAUSE_EQ = re.compile(r"^\s*(\w+)\s+(eq|ne)\s+'([^']*)'\s*$", re.I)
CLAUSE_CONTAINS = re.compile(r"^\s*contains\(\s*(\w+)\s*,\s*'([^']*)'\s*\)\s*$", re.I)


def _clause_matches(clause: str, props: dict) -> bool:
    clause = clause.strip()
    while clause.startswith("(") and clause.endswith(")"):
        clause = clause[1:-1].strip()
    m = CLAUSE_EQ.match(clause)
    if m and m.group(1).lower() in FILTER_FIELDS:
        value = str(props.get(FILTER_FIELDS[m.group(1).lower()]) or "")
        equal = value.lower() == m.group(3).lower()
        return equal if m.group(2).lower() == "eq" else not equal
    m = CLAUSE_CONTAINS.match(clause)
    if m and m.group(1).lower() in FILTER_FIELDS:
        return m.group(2).lower() in str(props.get(FILTER_FIELDS[m.group(1).lower()]) or "").lower()
    logger.debug("runs $filter: clause ignored: %s", clause)
    return True


def filter_matches(expression: Optional[str], props: dict) -> bool:
    """A tolerant OData subset: ``f eq|ne 'v'``, ``contains(f,'v')`` joined by and/or; others ignored."""
    if not expression or not expression.strip():
        return True
    return any(all(_clause_matches(c, props) for c in re.split(r"\s+and\s+", group, flags=re.I))
               for group in re.split(r"\s+or\s+", expression, flags=re.I))


def _parse_top(value: Optional[str]) -> Optional[int]:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None


# --- HTTP ---------------------------------------------------------------------------------------

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
