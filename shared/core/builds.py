"""Build requests (ACR quick builds and task runs) and agent-pool scaling decisions.

Pure code: no I/O, no Azure SDK, no environment. Standard library plus ``shared.core.reference``
and ``shared.errors``.

A build request is a JSON object -- the body of ``POST /api/builds``, the CLI flags, or the
``build:`` / ``task:`` body of a rule in the build rule file (``shared.core.rules``). It is
validated whole by :func:`parse_build` into a frozen :class:`BuildSpec`; every problem is
reported as a ``Problem`` whose ``field`` is the JSON pointer of the offending value
(``"/image_names/1"``, ``"/arguments/TOKEN"``, ``""`` for the request itself). Nothing is
partially accepted.

Kind ``docker`` (a quick build, ``DockerBuildRequest``)::

    {"kind": "docker",
     "source_location": "https://git.example.com/team/web.git#main:src",
     "dockerfile": "Dockerfile",                          # default "Dockerfile"
     "image_names": ["apps/web:{{.Run.ID}}", "apps/web:latest"],
     "arguments": {"VERSION": "1.2", "TOKEN": {"value": "s3cret", "secret": true}},
     "platform": "linux/amd64",                           # default; os/architecture[/variant]
     "target": "runtime",                                 # optional build stage
     "timeout": 3600,                                     # seconds, 300..28800
     "no_cache": false, "push": true,
     "agent_pool": "vnetpool"}                            # optional

Kind ``task`` (a run of an existing ACR task, ``TaskRunRequest``)::

    {"kind": "task", "task": "build-api", "agent_pool": "vnetpool",
     "arguments": {"VERSION": "1.2"}}                     # become override arguments

Rules worth knowing:

* ``kind`` may be left out: a request with a ``task`` field is a task run, anything else a
  docker build. Fields of the other kind are errors (a task run takes platform, timeout and
  so on from the task definition). Task ``values`` are not supported; use ``arguments``.
* ``null`` for an optional field means "not given" (its default applies).
* ``source_location`` is either an ``https://`` git URL of a repository (path ending ``.git``,
  or an Azure Repos ``/_git/`` path), optionally ``#ref`` or ``#ref:dir``; or the relative path
  the build-source upload returned (``source/<...>/<name>.tar.gz``). URLs with credentials or
  a query string (SAS tokens) are refused: they would leak into logs and records.
* ``image_names`` are ``repository:tag`` inside the private registry (no registry host, no
  digest, an explicit tag). The tag may use ``{{.Run.ID}}``; it is checked with a sample run
  id in its place. No other template is accepted, and the repository part is never templated
  (rules rely on knowing which repositories a build writes). At least one name is needed
  when ``push`` is true.
* ``arguments`` map a name (``[A-Za-z_][A-Za-z0-9_]*``, at most 128 characters) to a string,
  or to ``{"value": str, "secret": bool}``. Values must be strings: quote numbers. Secret
  values never appear in ``repr()``/``str()``, :meth:`BuildSpec.redacted` or error messages;
  only :meth:`BuildSpec.to_run_request` (the ARM body, not for logging) carries them.
* ``timeout`` is 300..28800 seconds: 300 is the minimum ARM accepts for ``scheduleRun``.
* ``platform``: os ``linux`` or ``windows``; architecture ``amd64``, ``arm64``, ``arm``,
  ``386`` or ``x86`` (windows: ``amd64`` only); variant ``v6``/``v7`` for ``arm``, ``v8`` for
  ``arm64``. Agent pools run Linux only, so a windows build cannot name an ``agent_pool``.
* ``agent_pool`` is an ACR agent pool name, ``[A-Za-z0-9-]{3,20}``; ``task`` an ACR task
  name, ``[A-Za-z0-9_-]{5,50}``.

One unit on purpose: the request format (above), its value types and the validation of a whole
request live together so that the documented format, the types and the checks cannot drift apart.
Run statuses and pool-scaling decisions are in ``shared.core.pools``.
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

from shared.core.reference import ReferenceSyntaxError, parse_repository, validate_tag
from shared.errors import Problem, ValidationError

__all__ = [
    "ARGUMENT_NAME_MAX",
    "BuildArgument",
    "BuildSpec",
    "KIND_DOCKER",
    "KIND_TASK",
    "Platform",
    "REDACTED",
    "RUN_ID_PLACEHOLDER",
    "TIMEOUT_DEFAULT",
    "TIMEOUT_MAX",
    "TIMEOUT_MIN",
    "check_build",
    "is_valid_argument_name",
    "is_valid_pool_name",
    "parse_build",
    "parse_platform",
    "pointer",
    "with_argument",
]

KIND_DOCKER = "docker"
KIND_TASK = "task"
REDACTED = "***"
RUN_ID_PLACEHOLDER = "{{.Run.ID}}"
TIMEOUT_DEFAULT, TIMEOUT_MIN, TIMEOUT_MAX = 3600, 300, 28800
DEFAULT_DOCKERFILE = "Dockerfile"
DEFAULT_PLATFORM = "linux/amd64"
ARGUMENT_NAME_MAX = 128
SOURCE_LOCATION_MAX = 2048
PATH_MAX = 1024

_DOCKER_FIELDS = ("kind", "source_location", "dockerfile", "image_names", "arguments", "platform", "target",
                  "timeout", "no_cache", "push", "agent_pool")
_TASK_FIELDS = ("kind", "task", "agent_pool", "arguments")

_POOL_NAME = re.compile(r"[A-Za-z0-9-]{3,20}")
_TASK_NAME = re.compile(r"[A-Za-z0-9_-]{5,50}")
_ARGUMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TEMPLATE = re.compile(r"\{\{.*?\}\}")
_RUN_ID = re.compile(r"\{\{\s*\.Run\.ID\s*\}\}")
_SAMPLE_RUN_ID = "ca1"  # what ACR run ids look like; stands in for {{.Run.ID}} when checking a tag
_UPLOAD_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")
_GIT_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_OS_NAMES = {"linux": "Linux", "windows": "Windows"}
_ARCHITECTURES = ("amd64", "arm64", "arm", "386", "x86")
_VARIANTS = {"arm": ("v6", "v7"), "arm64": ("v8",)}


# --- small helpers ---------------------------------------------------------------------------

def pointer(*segments: Any) -> str:
    """The RFC 6901 JSON pointer of a path: ``pointer("arguments", "A/B")`` -> ``/arguments/A~1B``."""
    return "".join("/" + str(s).replace("~", "~0").replace("/", "~1") for s in segments)


def type_name(value: Any) -> str:
    """How an error message names the JSON/YAML type of a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def is_valid_pool_name(name: Any) -> bool:
    """An ACR agent pool name: 3-20 letters, digits and '-'."""
    return isinstance(name, str) and _POOL_NAME.fullmatch(name) is not None


def is_valid_argument_name(name: Any) -> bool:
    """A build argument name: ``[A-Za-z_][A-Za-z0-9_]*``, at most 128 characters."""
    return (isinstance(name, str) and len(name) <= ARGUMENT_NAME_MAX
            and _ARGUMENT_NAME.fullmatch(name) is not None)


# --- value types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildArgument:
    """One build argument. ``repr()`` never shows a secret value."""

    name: str
    value: str
    secret: bool = False

    def __repr__(self) -> str:
        shown = REDACTED if self.secret else self.value
        return f"BuildArgument(name={self.name!r}, value={shown!r}, secret={self.secret!r})"

    __str__ = __repr__

    def to_arm(self) -> dict:
        """The ARM ``Argument`` object (carries the real value)."""
        return {"name": self.name, "value": self.value, "isSecret": self.secret}

    def redacted(self) -> Any:
        """The request-format value with a secret replaced by ``***``."""
        if self.secret:
            return {"value": REDACTED, "secret": True}
        return self.value


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, lower case as docker writes it."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: Optional[str] = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_arm(self) -> dict:
        """The ARM ``PlatformProperties`` object (``os`` is ``Linux``/``Windows``)."""
        out = {"os": _OS_NAMES[self.os], "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out


def parse_platform(text: Any) -> Platform:
    """Parse ``linux/amd64``, ``linux/arm64/v8``, ``windows/amd64``...; raise ``ValueError``."""
    if not isinstance(text, str):
        raise ValueError(f"platform must be a string such as {DEFAULT_PLATFORM!r}, not {type_name(text)}")
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"platform {text!r} must be os/architecture[/variant], e.g. 'linux/arm64/v8'")
    os_name, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else None
    if os_name not in _OS_NAMES:
        raise ValueError(f"platform os {os_name!r} is not supported; use 'linux' or 'windows'")
    if arch not in _ARCHITECTURES:
        raise ValueError(f"platform architecture {arch!r} is not supported; use one of {', '.join(_ARCHITECTURES)}")
    if os_name == "windows" and arch != "amd64":
        raise ValueError(f"platform {text!r}: windows builds are amd64 only")
    if variant is not None and variant not in _VARIANTS.get(arch, ()):
        allowed = _VARIANTS.get(arch)
        hint = f"use {' or '.join(allowed)}" if allowed else f"{arch} takes no variant"
        raise ValueError(f"platform variant {variant!r} does not fit architecture {arch!r}; {hint}")
    return Platform(os_name, arch, variant)


@dataclass(frozen=True)
class BuildSpec:
    """A validated build request. Build one with :func:`parse_build`.

    ``kind`` is ``"docker"`` or ``"task"``; the fields of the other kind keep their defaults.
    ``repr()``/``str()`` show secret argument values as ``***``.
    """

    kind: str
    source_location: Optional[str] = None
    dockerfile: str = DEFAULT_DOCKERFILE
    image_names: tuple[str, ...] = ()
    arguments: tuple[BuildArgument, ...] = ()
    platform: Platform = field(default_factory=Platform)
    target: Optional[str] = None
    timeout: int = TIMEOUT_DEFAULT
    no_cache: bool = False
    push: bool = True
    agent_pool: Optional[str] = None
    task: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in (KIND_DOCKER, KIND_TASK):
            raise ValueError(f"kind must be {KIND_DOCKER!r} or {KIND_TASK!r}, not {self.kind!r}")
        names = [a.name for a in self.arguments]
        if len(set(names)) != len(names):
            raise ValueError("argument names must be unique")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Repositories this build pushes to (docker builds with push on; a task's are unknown)."""
        if self.kind != KIND_DOCKER or not self.push:
            return ()
        seen: dict[str, None] = {}
        for name in self.image_names:
            seen.setdefault(_split_image_name(name)[0], None)
        return tuple(seen)

    def argument(self, name: str) -> Optional[BuildArgument]:
        return next((a for a in self.arguments if a.name == name), None)

    def secrets(self) -> tuple[str, ...]:
        """The secret argument values (non-empty ones), for scrubbing logs and errors."""
        return tuple(a.value for a in self.arguments if a.secret and a.value)

    def redacted(self) -> dict:
        """The request in its input format, secret values replaced by ``***``; safe to log and record.

        It validates again with :func:`parse_build` (with ``***`` for the secrets).
        """
        arguments = {a.name: a.redacted() for a in self.arguments}
        if self.kind == KIND_TASK:
            out: dict = {"kind": KIND_TASK, "task": self.task}
            if self.agent_pool:
                out["agent_pool"] = self.agent_pool
            out["arguments"] = arguments
            return out
        out = {"kind": KIND_DOCKER, "source_location": self.source_location, "dockerfile": self.dockerfile,
               "image_names": list(self.image_names), "arguments": arguments, "platform": str(self.platform)}
        if self.target:
            out["target"] = self.target
        out.update(timeout=self.timeout, no_cache=self.no_cache, push=self.push)
        if self.agent_pool:
            out["agent_pool"] = self.agent_pool
        return out

    def to_run_request(self, pool: Optional[str], *, registry_id: Optional[str] = None) -> dict:
        """The ARM ``scheduleRun`` body (camelCase). It carries secret values: never log it.

        ``pool`` is the agent pool to run on (normally ``spec.agent_pool`` or the configured
        default); ``None``/``""`` runs on the registry's shared compute. ``registry_id`` (the
        registry's ARM resource id) is required for a task run, whose ``taskId`` is
        ``<registry_id>/tasks/<task>``.

        Raises ``ValueError`` for a malformed ``pool`` or ``registry_id`` (caller bugs) and
        ``ValidationError`` (field ``/platform``) for a windows build sent to an agent pool.
        """
        if pool is not None and pool != "" and not is_valid_pool_name(pool):
            raise ValueError(f"agent pool name {pool!r} is invalid: 3-20 letters, digits or '-'")
        arguments = [a.to_arm() for a in self.arguments]
        if self.kind == KIND_TASK:
            if not isinstance(registry_id, str) or not registry_id.startswith("/subscriptions/"):
                raise ValueError("a task run needs registry_id, the registry's ARM resource id "
                                 "('/subscriptions/.../registries/<name>')")
            body: dict = {"type": "TaskRunRequest",
                          "taskId": f"{registry_id.rstrip('/')}/tasks/{self.task}",
                          "overrideTaskStepProperties": {"arguments": arguments}}
        else:
            if pool and self.platform.os != "linux":
                raise ValidationError("agent pools run Linux only", [Problem(
                    f"a {self.platform} build cannot run on agent pool {pool!r}: agent pools run Linux only",
                    field="/platform")])
            body = {"type": "DockerBuildRequest",
                    "imageNames": list(self.image_names),
                    "isPushEnabled": self.push,
                    "noCache": self.no_cache,
                    "dockerFilePath": self.dockerfile,
                    "arguments": arguments,
                    "platform": self.platform.to_arm(),
                    "sourceLocation": self.source_location,
                    "timeout": self.timeout}
            if self.target:
                body["target"] = self.target
        if pool:
            body["agentPoolName"] = pool
        return body


def with_argument(spec: BuildSpec, name: str, value: str) -> BuildSpec:
    """A copy of ``spec`` with one more, non-secret argument (e.g. a pushed base-image digest).

    Raises ``ValueError`` for an invalid name, a non-string value, or a name already present
    (the rule file check refuses rules where that could happen).
    """
    if not is_valid_argument_name(name):
        raise ValueError(f"invalid argument name {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"argument {name} must be a string, not {type_name(value)}")
    if spec.argument(name) is not None:
        raise ValueError(f"the build already has an argument named {name}")
    return replace(spec, arguments=spec.arguments + (BuildArgument(name, value, False),))


# --- validation ----------------------------------------------------------------------------

class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: tuple, message: str) -> None:
        self.problems.append(Problem(message, field=pointer(*where)))


def _split_image_name(text: str) -> tuple[str, Optional[str]]:
    """``repo:tag`` -> (repo, tag); a ':' that belongs to a registry port is not a tag separator."""
    repo, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:
        return text, None
    return repo, tag


def _check_image_name(text: str) -> Optional[str]:
    if text != text.strip() or not text:
        return f"image name {text!r} is empty or has surrounding whitespace"
    if "@" in text:
        return f"image name {text!r} must not include a digest; give repository:tag"
    repo, tag = _split_image_name(text)
    if _TEMPLATE.search(repo):
        return (f"image name {text!r}: only the tag may use a template; the repository must be fixed "
                "(rules need to know which repositories a build writes)")
    try:
        parse_repository(repo)
    except ReferenceSyntaxError as e:
        return f"invalid image name {text!r}: {e.reason}"
    if tag is None:
        return f"image name {text!r} needs an explicit tag, e.g. '{repo}:{RUN_ID_PLACEHOLDER}'"
    sample = _RUN_ID.sub(_SAMPLE_RUN_ID, tag)
    leftover = _TEMPLATE.search(sample)
    if leftover or "{{" in sample or "}}" in sample:
        return (f"image name {text!r}: unsupported template "
                f"{leftover.group(0) if leftover else sample!r}; only {RUN_ID_PLACEHOLDER} is supported")
    try:
        validate_tag(sample)
    except ReferenceSyntaxError as e:
        return f"invalid tag in image name {text!r}: {e.reason}"
    return None


def _check_git_url(text: str) -> Optional[str]:
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as e:
        return f"source_location is not a valid URL: {e}"
    if parts.scheme != "https":
        return "source_location URLs must use https"
    if "@" in parts.netloc:
        return ("source_location must not contain credentials (user:token@); they would be logged. "
                "Give the agent pool access to the repository instead")
    if not parts.hostname:
        return "source_location URL has no host"
    if parts.query:
        return "source_location must not have a query string (a SAS token would be logged)"
    path = parts.path.rstrip("/")
    if not (path.endswith(".git") or "/_git/" in path):
        return ("source_location must be a git repository URL ending in '.git' (or an Azure Repos "
                "'/_git/' URL), optionally followed by #ref or #ref:dir")
    if "#" in text:
        ref, colon, directory = parts.fragment.partition(":")
        if not ref:
            return "source_location has '#' but no git ref after it (expected #ref or #ref:dir)"
        if _GIT_REF_BAD.search(ref) or ref.endswith((".", "/", ".lock")) or ref.startswith(("/", "-")):
            return f"source_location git ref {ref!r} is not a valid ref name"
        if colon:
            problem = _check_relative_path(directory, "source_location directory", allow_empty=False)
            if problem:
                return problem
    return None


def _check_relative_path(text: str, what: str, *, allow_empty: bool = False) -> Optional[str]:
    if not text:
        return None if allow_empty else f"{what} is empty"
    if len(text) > PATH_MAX:
        return f"{what} is {len(text)} characters; the limit is {PATH_MAX}"
    if _CONTROL.search(text):
        return f"{what} contains control characters"
    normal = text.replace("\\", "/")
    if normal.startswith("/") or re.match(r"[A-Za-z]:", normal):
        return f"{what} {text!r} must be relative to the build context"
    if ".." in normal.split("/"):
        return f"{what} {text!r} must not contain '..'"
    return None


def _check_upload_path(text: str) -> Optional[str]:
    segments = text.split("/")
    if (len(segments) < 2 or segments[0] != "source" or not text.endswith(".tar.gz")
            or not all(_UPLOAD_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)):
        return ("source_location must be an https git URL (https://host/repo.git#ref:dir) or the path the "
                f"build-source upload returned (source/.../name.tar.gz), not {text!r}; "
                "a local directory must be uploaded first")
    return None


def _check_source_location(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        return f"source_location must be a string, not {type_name(value)}"
    if not value:
        return "source_location is empty"
    if len(value) > SOURCE_LOCATION_MAX:
        return f"source_location is {len(value)} characters; the limit is {SOURCE_LOCATION_MAX}"
    if any(ch.isspace() for ch in value):
        return "source_location must not contain whitespace"
    if "://" in value:
        return _check_git_url(value)
    return _check_upload_path(value)


def _parse_arguments(value: Any, out: _Collector) -> tuple[BuildArgument, ...]:
    if not isinstance(value, Mapping):
        out.add(("arguments",), f"arguments must be an object of name -> value, not {type_name(value)}")
        return ()
    result: list[BuildArgument] = []
    for name, item in value.items():
        where = ("arguments", name)
        if not is_valid_argument_name(name):
            out.add(where, f"invalid argument name {str(name)[:ARGUMENT_NAME_MAX]!r}: use letters, digits and '_', "
                           f"not starting with a digit, at most {ARGUMENT_NAME_MAX} characters")
            continue
        if isinstance(item, str):
            result.append(BuildArgument(name, item, False))
            continue
        if not isinstance(item, Mapping):
            out.add(where, f"argument {name} must be a string or {{\"value\": ..., \"secret\": ...}}, "
                           f"not {type_name(item)} (quote numbers and booleans)")
            continue
        ok = True
        for key in item:
            if key not in ("value", "secret"):
                out.add(where + (key,), f"unknown field {str(key)!r} in argument {name}; allowed: value, secret")
                ok = False
        secret = item.get("secret", False)
        if not isinstance(secret, bool):
            out.add(where + ("secret",), f"argument {name}: secret must be true or false, not {type_name(secret)}")
            ok = False
        if "value" not in item:
            out.add(where, f"argument {name} has no value")
            ok = False
        elif not isinstance(item["value"], str):  # never echo the value: it may be a secret
            out.add(where + ("value",),
                    f"argument {name}: value must be a string, not {type_name(item['value'])} (quote it)")
            ok = False
        if ok:
            result.append(BuildArgument(name, item["value"], secret))
    return tuple(result)


def _optional_name(data: Mapping, key: str, regex: re.Pattern, rule: str, out: _Collector) -> Optional[str]:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        out.add((key,), f"{key} must be a string, not {type_name(value)}")
    elif not regex.fullmatch(value):
        out.add((key,), f"invalid {key.replace('_', ' ')} name {value!r}: {rule}")
    else:
        return value
    return None


def _bool(data: Mapping, key: str, default: bool, out: _Collector) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        out.add((key,), f"{key} must be true or false, not {type_name(value)}")
        return default
    return value


def _check_kind(data: Mapping, kind: Optional[str], out: _Collector) -> Optional[str]:
    given = data.get("kind")
    if given is not None and not isinstance(given, str):
        out.add(("kind",), f"kind must be a string, not {type_name(given)}")
        return None
    if given is not None and given not in (KIND_DOCKER, KIND_TASK):
        out.add(("kind",), f"unknown kind {given!r}; use {KIND_DOCKER!r} or {KIND_TASK!r}")
        return None
    if kind is not None:
        if given is not None and given != kind:
            out.add(("kind",), f"kind {given!r} does not fit here: this body is a {kind} build")
            return None
        return kind
    if given is not None:
        return given
    return KIND_TASK if "task" in data else KIND_DOCKER


def check_build(data: Any, *, kind: Optional[str] = None) -> tuple[Optional[BuildSpec], list[Problem]]:
    """Validate a build request; return ``(spec, [])`` or ``(None, problems)``. Never raises for bad input.

    ``kind`` forces the kind (the rule file's ``build:`` is docker, ``task:`` a task run); a
    ``kind`` field in ``data`` must then agree with it.
    """
    if kind is not None and kind not in (KIND_DOCKER, KIND_TASK):
        raise ValueError(f"kind must be {KIND_DOCKER!r}, {KIND_TASK!r} or None")
    out = _Collector()
    if not isinstance(data, Mapping):
        out.add((), f"a build request must be an object, not {type_name(data)}")
        return None, out.problems
    chosen = _check_kind(data, kind, out)
    if chosen is None:
        return None, out.problems
    inferred = kind is None and data.get("kind") is None
    allowed = _DOCKER_FIELDS if chosen == KIND_DOCKER else _TASK_FIELDS
    for key in data:
        if key in allowed:
            continue
        if not isinstance(key, str):
            out.add((key,), f"field names must be strings, not {type_name(key)}")
        elif key == "values" and chosen == KIND_TASK:
            out.add((key,), "task values are not supported; pass them as arguments")
        elif key in _DOCKER_FIELDS or key in _TASK_FIELDS:
            other = KIND_TASK if chosen == KIND_DOCKER else KIND_DOCKER
            reason = " (a task run takes it from the task definition)" if chosen == KIND_TASK else ""
            if inferred and chosen == KIND_TASK:
                reason += "; this request was read as a task run because it has a 'task' field"
            out.add((key,), f"field {key!r} belongs to a {other} build, not a {chosen} build{reason}")
        else:
            out.add((key,), f"unknown field {key!r}; allowed for a {chosen} build: {', '.join(allowed)}")

    agent_pool = _optional_name(data, "agent_pool", _POOL_NAME, "3-20 letters, digits or '-'", out)
    arguments = _parse_arguments(data["arguments"], out) if data.get("arguments") is not None else ()

    if chosen == KIND_TASK:
        task = data.get("task")
        if task is None:
            out.add(("task",), "task is required: the name of the ACR task to run")
        elif not isinstance(task, str):
            out.add(("task",), f"task must be a string, not {type_name(task)}")
        elif not _TASK_NAME.fullmatch(task):
            out.add(("task",), f"invalid task name {task!r}: 5-50 letters, digits, '-' or '_'")
        if out.problems:
            return None, out.problems
        return BuildSpec(KIND_TASK, task=task, agent_pool=agent_pool, arguments=arguments), []

    source = data.get("source_location")
    if source is None:
        out.add(("source_location",), "source_location is required: an https git URL or an uploaded source path")
    else:
        problem = _check_source_location(source)
        if problem:
            out.add(("source_location",), problem)

    dockerfile = data.get("dockerfile")
    if dockerfile is None:
        dockerfile = DEFAULT_DOCKERFILE
    elif not isinstance(dockerfile, str):
        out.add(("dockerfile",), f"dockerfile must be a string, not {type_name(dockerfile)}")
    else:
        problem = _check_relative_path(dockerfile, "dockerfile")
        if problem:
            out.add(("dockerfile",), problem)

    push = _bool(data, "push", True, out)
    push_ok = data.get("push") is None or isinstance(data.get("push"), bool)
    no_cache = _bool(data, "no_cache", False, out)

    image_names: list[str] = []
    names = data.get("image_names")
    if names is None:
        names = []
    if not isinstance(names, list):
        out.add(("image_names",), f"image_names must be a list of 'repository:tag', not {type_name(names)}")
    else:
        first: dict[str, int] = {}
        for i, name in enumerate(names):
            if not isinstance(name, str):
                out.add(("image_names", i), f"image name must be a string, not {type_name(name)}")
                continue
            problem = _check_image_name(name)
            if problem:
                out.add(("image_names", i), problem)
            elif name in first:
                out.add(("image_names", i), f"image name {name!r} is listed twice (also at index {first[name]})")
            else:
                first[name] = i
                image_names.append(name)
        if not names and push and push_ok:
            out.add(("image_names",), "image_names is required when push is true: at least one 'repository:tag'")

    platform = Platform()
    raw_platform = data.get("platform")
    if raw_platform is not None:
        try:
            platform = parse_platform(raw_platform)
        except ValueError as e:
            out.add(("platform",), str(e))
    if platform.os != "linux" and agent_pool:
        out.add(("agent_pool",), f"a {platform} build cannot run on an agent pool: agent pools run Linux only")

    target = data.get("target")
    if target is not None and not isinstance(target, str):
        out.add(("target",), f"target must be a string, not {type_name(target)}")
        target = None
    elif target is not None and not _TARGET.fullmatch(target):
        out.add(("target",), f"invalid build stage name {target!r}: letters, digits, '_', '.', '-'")
        target = None

    timeout = data.get("timeout")
    if timeout is None:
        timeout = TIMEOUT_DEFAULT
    elif isinstance(timeout, bool) or not isinstance(timeout, int):
        out.add(("timeout",), f"timeout must be a whole number of seconds, not {type_name(timeout)}")
    elif not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
        out.add(("timeout",), f"timeout {timeout} is out of range: {TIMEOUT_MIN}..{TIMEOUT_MAX} seconds")

    if out.problems:
        return None, out.problems
    return BuildSpec(KIND_DOCKER, source_location=source, dockerfile=dockerfile, image_names=tuple(image_names),
                     arguments=arguments, platform=platform, target=target or None, timeout=timeout,
                     no_cache=no_cache, push=push, agent_pool=agent_pool), []


def parse_build(data: Any, *, kind: Optional[str] = None) -> BuildSpec:
    """Validate a build request; return the spec or raise ``ValidationError`` with every problem."""
    spec, problems = check_build(data, kind=kind)
    if spec is None:
        n = len(problems)
        raise ValidationError(f"the build request has {n} problem{'s' if n != 1 else ''}", problems)
    return spec
