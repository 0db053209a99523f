"""Run requests (scheduleRun bodies: Docker, EncodedTask, FileTask, TaskRun) and image names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml

from .common import (ALIAS_RE, Arg, REPO_RE, RUN_TEMPLATE_RE, STEPS_AFTER_PUSH_ARG, SWITCH_ARGS, SWITCH_FILES,
                     TAG_RE, TIMEOUT_DEFAULT, TRUE_WORDS, VALUES_TEMPLATE_RE, _bad, _decode_b64, _field, _merge_args,
                     _obj, _parse_agent_configuration, _parse_args, _parse_credentials, _parse_platform, _parse_timeout)


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

    def steps_after_push(self) -> float:
        """Steps the run stays Running after its pushes (a later step of a multi-step task): the value
        of ``AIRLOCK_EMULATOR_STEPS_AFTER_PUSH`` (a number; ``inf``: until cancelled or timed out)."""
        for arg in (*self.arguments, *self.values):
            if arg.name.upper() == STEPS_AFTER_PUSH_ARG:
                try:
                    return max(0.0, float(arg.value))
                except ValueError:
                    return 0.0
        return 0.0


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
