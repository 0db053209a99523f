"""requirements.txt is everything the deployed app imports.

Azure's remote build installs requirements.txt and nothing else. ``test_clean_venv_runs_every_function``
builds a venv from it alone (pip's cache makes that quick) and, in that venv, imports function_app and
calls every registered function once by trigger type (tests/deploy/clean_venv_driver.py), against the
local stand-in. ``test_every_import_is_pinned`` reads every import statement (lazy ones too) and checks
each third-party module comes from a distribution pinned in requirements.txt.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixture_paths import AZURE_FIXTURES

ROOT = Path(__file__).resolve().parents[2]
# Imported only by developer commands that never run in Azure: `serve` (the API without the host).
CLI_ONLY = {"uvicorn": "shared/cli/serve.py runs the API without the Functions host; not deployed use"}
CLI_SERVE = ROOT / "shared" / "cli" / "serve.py"


def pinned(path: Path) -> dict[str, str]:
    """{normalised distribution name: version} of a requirements file (``-r`` lines followed)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found.update(pinned(path.parent / line[3:].strip()))
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        found[normalise(name)] = version.strip()
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def product_sources() -> list[Path]:
    return [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_every_import_is_pinned():
    requirements = pinned(ROOT / "requirements.txt")
    providers = importlib.metadata.packages_distributions()
    missing = []
    for path in product_sources():
        for module in sorted(imported_modules(path)):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("shared", "function_app") or top in CLI_ONLY:
                continue
            # azure.* is a namespace shared by many distributions: find the one holding this module's files
            found = distributions_of(module) if top == "azure" else providers.get(top, [])
            dists = {normalise(d) for d in found}
            if not dists & set(requirements):
                missing.append(f"{path.relative_to(ROOT)}: {module} (from {sorted(dists) or 'nothing installed'})")
    assert not missing, "imported but not pinned in requirements.txt:\n" + "\n".join(missing)


@functools.lru_cache(maxsize=None)
def distributions_of(module: str) -> set[str]:
    """Distributions whose files include the module's package directory (azure.* namespace packages)."""
    relative = module.replace(".", "/")
    found = set()
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            text = str(file)
            if text.startswith(relative + "/") or text == relative + ".py":
                found.add(dist.metadata["Name"])
                break
    return found


def test_cli_only_modules_are_only_imported_by_the_cli():
    for path in product_sources():
        if path.resolve() == CLI_SERVE:
            continue
        assert not imported_modules(path) & set(CLI_ONLY), f"{path} imports a CLI-only module"


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("clean-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(ROOT / "requirements.txt")], capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout + done.stderr
    return python


def test_clean_venv_has_only_requirements(clean_venv):
    listed = subprocess.run([str(clean_venv), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True)
    installed = {normalise(d["name"]) for d in json.loads(listed.stdout)}
    assert "uvicorn" not in installed and "pytest" not in installed  # nothing from requirements-dev.txt
    assert set(pinned(ROOT / "requirements.txt")) <= installed


def test_clean_venv_runs_every_function(clean_venv, stack, seeded, registered):
    prefix = f"cv{uuid.uuid4().hex[:8]}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
           "HOME": os.environ.get("HOME", "/"), **stack.env,
           "MANIFESTS_CONTAINER": f"manifests-{prefix}", "RETRY_BASE_SECONDS": "0.05"}
    # every %SETTING% a binding names, as the host needs it, from the documented defaults
    from shared.config import SPECS

    defaults = {s.name: s.default for s in SPECS if s.default}
    for function in registered.values():
        for setting in re.findall(r"%([A-Za-z0-9_]+)%", function.get_function_json()):
            env.setdefault(setting, defaults.get(setting, ""))
    config = {"fixtures": str(AZURE_FIXTURES / "eventgrid" / "event-grid-schema"),
              "manifest_name": f"{prefix}.txt", "manifest": f"library/busybox:1.36 => {prefix}/busybox\n"}
    done = subprocess.run([str(clean_venv), str(Path(__file__).with_name("clean_venv_driver.py")), json.dumps(config)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=env)
    assert done.stdout.strip(), done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], "\n".join(report["failures"]) + "\n" + done.stderr[-3000:]
    assert done.returncode == 0
    venv = str(clean_venv.parent.parent)
    assert all(path.startswith(venv) for path in report["module_files"].values()), report["module_files"]
    assert set(report["invoked"]) == set(registered), report["invoked"]
    assert report["invoked"]["http_app_func"] == {"GET /api/openapi.json": 200, "GET /api/health": 200}
    assert report["record_status"] == "succeeded"
