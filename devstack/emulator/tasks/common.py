"""Shared by every ACR Tasks resource: api-version, limits and patterns, ARM errors, field checks."""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Optional

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
STEPS_AFTER_PUSH_ARG = "AIRLOCK_EMULATOR_STEPS_AFTER_PUSH"  # steps a run keeps Running after its pushes
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
