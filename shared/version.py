"""The version of acr-airlock: one source of truth for ``airlock --version``, ``/api/health`` and the
OpenAPI document's ``info.version``.

The number is written once, in pyproject.toml (``[project] version``). ``version()`` reads it:

- from the ``pyproject.toml`` beside the ``shared`` package when there is one naming this project (a
  checkout, and the Function App, which deploys from the repository): that file describes exactly
  this code, whatever else is installed in the environment;
- else from the installed distribution's metadata (``pip install acr-airlock``: the wheel carries no
  pyproject.toml, its METADATA has the same number);
- else ``0+unknown`` (neither: a copied source tree).

Read once per process, on first use (``import shared`` does not read any file).
"""
from __future__ import annotations

import functools
from pathlib import Path

DISTRIBUTION = "acr-airlock"
UNKNOWN = "0+unknown"


@functools.lru_cache(maxsize=1)
def version() -> str:
    return _from_pyproject(Path(__file__).resolve().parent.parent / "pyproject.toml") or _from_metadata() or UNKNOWN


def _from_pyproject(path: Path) -> str | None:
    import tomllib

    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DISTRIBUTION or not isinstance(project.get("version"), str):
        return None
    return project["version"]


def _from_metadata() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
