"""``pip install`` of the project: a wheel with the ``shared`` package and the ``airlock`` command only,
installed with its dependencies (requirements-cli.txt: no Functions runtime) into a fresh virtual
environment and run from outside the repository, as a platform engineer would on their first day:
``airlock --version``, then a plan and a sync against the local stand-in with nothing but a registry name
and an Azure CLI login (``tests.azcli``: a stand-in ``az`` on PATH, a test double of the external CLI)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests import azcli

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
pytestmark = pytest.mark.timeout(900)


def pip(*args: str, python: Path | None = None) -> subprocess.CompletedProcess:
    target = ["--python", str(python)] if python else []
    return subprocess.run([sys.executable, "-m", "pip", *target, *args, "--disable-pip-version-check",
                           "--no-input"], capture_output=True, text=True, timeout=800)


def pins(name: str) -> set[str]:
    """The pins of a requirements file (``-r`` lines are not pins)."""
    return {line.strip() for line in (ROOT / name).read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r"))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: the build needs only pyproject.toml, the requirements files and shared/, and leaves
    # no build/ or *.egg-info behind in the working tree
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "requirements-cli.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "shared", source / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    result = pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source))
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("acr_airlock-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with ``pip install acr-airlock`` (the wheel, no extras); its bin/ directory."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)  # fresh, empty; the project's pip installs into it
    result = pip("install", "--quiet", str(wheel), python=env_dir / "bin" / "python")
    assert result.returncode == 0, result.stderr[-3000:]
    return env_dir / "bin"


def metadata_of(wheel: Path) -> list[str]:
    names = zipfile.ZipFile(wheel).namelist()
    return zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode().splitlines()


def test_the_wheel_holds_the_package_and_the_command_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"shared", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    packaged = {n for n in names if n.endswith(".py")}
    in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / "shared").rglob("*.py")}
    assert packaged == in_repo  # every module, subpackages without __init__ included
    requires = {line.split(": ", 1)[1] for line in metadata_of(wheel)
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    assert requires == pins("requirements-cli.txt")  # the command line's pins, and nothing of the Function App
    assert not any(r.startswith("azure-functions") for r in requires)
    points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "airlock = shared.cli:main" in points


def test_the_extras_are_the_function_apps_and_serves_pins(wheel):
    extras: dict[str, set[str]] = {}
    for line in metadata_of(wheel):
        match = re.fullmatch(r'Requires-Dist: (.+); extra == "(\w+)"', line)
        if match:
            extras.setdefault(match.group(2), set()).add(match.group(1))
    # requirements.txt = requirements-cli.txt + the `functions` extra: Azure installs exactly what pip would
    assert (ROOT / "requirements.txt").read_text().count("-r requirements-cli.txt") == 1
    assert extras["functions"] == pins("requirements.txt")
    dev = pins("requirements-dev.txt") | pins("requirements.txt")
    assert extras["serve"] <= dev and {Requirement(r).name for r in extras["serve"]} == {"starlette", "uvicorn"}


def test_requires_python_agrees_with_what_the_pins_allow():
    """Every base pin admits every Python the project admits (3.11-3.14 checked); at least one needs 3.11.
    The pins' own Requires-Python is read from the distributions installed here (the same versions)."""
    ours = SpecifierSet(PYPROJECT["project"]["requires-python"])
    admitted = [v for v in ("3.10", "3.11", "3.12", "3.13", "3.14") if v in ours]
    assert admitted == ["3.11", "3.12", "3.13", "3.14"]

    def requires_python(pin: str) -> SpecifierSet:
        requirement = Requirement(pin)
        installed = metadata.distribution(requirement.name)
        assert installed.version in requirement.specifier, f"{pin}: {installed.version} installed"
        return SpecifierSet(installed.metadata.get("Requires-Python") or "")

    base = {pin: requires_python(pin) for pin in pins("requirements-cli.txt")}
    too_narrow = {pin: str(spec) for pin, spec in base.items() if any(v not in spec for v in admitted)}
    assert too_narrow == {}
    assert any("3.10" not in spec for spec in base.values())  # so >=3.11 is not looser than needed
    # the Function App's extra: every pin admits 3.11, the version Azure runs (README "Deploy to Azure")
    functions = {pin: requires_python(pin) for pin in PYPROJECT["project"]["optional-dependencies"]["functions"]}
    assert {pin: str(spec) for pin, spec in functions.items() if "3.11" not in spec} == {}


def test_installed_airlock_checks_a_manifest_outside_the_repo(installed, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "images.txt").write_text("nginx:1.27\nquay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cm\n")
    (work / "bad.txt").write_text("nginx:1.27\nNginx:1.27\n")
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    airlock = installed / "airlock"
    version = subprocess.run([airlock, "--version"], cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert (version.returncode, version.stdout) == (0, f"acr-airlock {PYPROJECT['project']['version']}\n")
    ok = subprocess.run([airlock, "manifest", "check", "images.txt"], cwd=work, env=clean, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.endswith("images.txt: 2 entries, valid\n"), ok.stderr
    assert "images.txt: warning: no images.lock" in ok.stdout  # unlocked: valid, with the warning
    bad = subprocess.run([airlock, "manifest", "check", "bad.txt", "--json"], cwd=work, env=clean,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and '"line": 2' in bad.stdout
    usage = subprocess.run([airlock, "runs"], cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: airlock runs")  # the name it was run by
    module = subprocess.run([installed / "python", "-m", "shared", "manifest", "check", str(work)], cwd=work,
                            env=clean, capture_output=True, text=True, timeout=120)
    assert module.returncode == 2 and module.stderr == f"error: {work}: is a directory, not a file\n"
    serve = subprocess.run([airlock, "serve"], cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert serve.returncode == 2 and "serve needs" in serve.stderr and "acr-airlock[serve]" in serve.stderr
    # the SDK dependencies came along: the commands that talk to Azure import; the Functions runtime did not
    imports = subprocess.run([installed / "python", "-c", "import shared.services, shared.adapters.azure_clients, "
                              "shared.cli.sync, azure.storage.blob, azure.mgmt.containerregistry, httpx, yaml"],
                             cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert imports.returncode == 0, imports.stderr
    probe = "import importlib.util as u; print([m for m in ('bench', 'devstack', 'tests', 'function_app', " \
            "'azure.functions', 'azure.storage.queue', 'starlette', 'azure.monitor') if u.find_spec(m.split('.')[0]) " \
            "and (m.count('.') == 0 or u.find_spec(m))])"
    nothing_else = subprocess.run([installed / "python", "-c", probe],
                                  cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert nothing_else.stdout.strip() == "[]", nothing_else.stderr


def test_first_hour_registry_name_and_az_login(installed, stack, seeded, tmp_path):
    """The first-hour path through the installed command: a registry name and the current ``az`` login, no
    subscription, resource group, identity endpoint or storage settings. A plan, then a sync that says
    nothing was recorded, then (storage added) a recorded sync that ``runs show`` finds, then
    ``discover --check`` with the login server read from ARM. Timings are printed (pytest -s) for the record
    and bounded loosely."""
    fake = azcli.for_stack(tmp_path / "az", stack.env)
    env = azcli.standalone_env(stack.env, fake)
    work = tmp_path / "work"
    work.mkdir()
    prefix = f"first{uuid.uuid4().hex[:6]}"
    (work / "images.txt").write_text(f"library/busybox:1.36 => {prefix}/busybox\n"
                                     f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/controller\n")
    airlock = str(installed / "airlock")
    name = stack.registry_name
    timings: dict[str, float] = {}

    def run(label: str, *args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run([airlock, *args], cwd=work, env={**env, **(extra or {})}, capture_output=True,
                                text=True, timeout=300)
        timings[label] = round(time.monotonic() - started, 2)
        return result

    version = run("airlock --version", "--version")
    assert version.returncode == 0 and version.stdout.startswith("acr-airlock ")

    plan = run("airlock plan images.txt --registry NAME --json", "plan", "images.txt", "--registry", name, "--json")
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert [e["action"] for e in document["entries"]] == ["new", "new"]
    assert (document["run_id"], document["recorded"]) == (None, False)  # nothing runs show could find
    calls = fake.calls()
    assert calls[0] == "account show --output json"  # the subscription: the Azure CLI's current one
    assert len([c for c in calls if "get-access-token" in c]) == 2  # ARM and the registry, once each

    sync = run("airlock sync images.txt --registry NAME", "sync", "images.txt", "--registry", name)
    assert sync.returncode == 0, sync.stderr
    assert "2 imported, 0 failed" in sync.stdout and "sync (not recorded): succeeded" in sync.stdout
    assert "note: nothing will be recorded (no storage settings" in sync.stderr
    assert "outcome record:" not in sync.stdout

    storage = {"AzureWebJobsStorage": stack.env["AzureWebJobsStorage"]}
    recorded = run("airlock sync images.txt --registry NAME --json (with storage)", "sync", "images.txt",
                   "--registry", name, "--json", extra=storage)
    assert recorded.returncode == 0, recorded.stderr
    record = json.loads(recorded.stdout)
    assert record["recorded"] is True and record["summary"]["unchanged"] == 2
    shown = run("airlock runs show RUN_ID", "runs", "show", record["run_id"], extra=storage)
    assert shown.returncode == 0 and json.loads(shown.stdout)["run_id"] == record["run_id"]

    (work / "app.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  containers:\n"
                                   f"  - name: app\n    image: {stack.emulator.login_server}/{prefix}/busybox:1.36\n")
    check = run("airlock discover app.yaml --check images.txt --registry NAME", "discover", "app.yaml", "--check",
                "images.txt", "--registry", name)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"checked against images.txt and {stack.emulator.login_server}" in check.stdout

    print("\nfirst-hour path (installed wheel, registry name + az login):")
    for label, seconds in timings.items():
        print(f"  {seconds:6.2f}s  {label}")
    assert max(timings.values()) < 120
