"""``pip install`` of the project: a wheel with the ``shared`` package and the ``airlock`` command only,
installed with its dependencies into a fresh virtual environment, run from outside the repository."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def pip(*args: str, python: Path | None = None) -> subprocess.CompletedProcess:
    target = ["--python", str(python)] if python else []
    return subprocess.run([sys.executable, "-m", "pip", *target, *args, "--disable-pip-version-check",
                           "--no-input"], capture_output=True, text=True, timeout=800)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # built from a copy: the build needs only pyproject.toml, requirements.txt and shared/, and leaves
    # no build/ or *.egg-info behind in the working tree
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "shared", source / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    result = pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source))
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("acr_airlock-*.whl")
    return built


def test_the_wheel_holds_the_package_and_the_command_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"shared", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    packaged = {n for n in names if n.endswith(".py")}
    in_repo = {str(p.relative_to(ROOT)) for p in (ROOT / "shared").rglob("*.py")}
    assert packaged == in_repo  # every module, subpackages without __init__ included
    meta = next(n for n in names if n.endswith("METADATA"))
    requires = {line.split(": ", 1)[1] for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist: ") and "extra ==" not in line}
    pins = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert requires == pins
    points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "airlock = shared.cli:main" in points


def test_installed_airlock_checks_a_manifest_outside_the_repo(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # fresh, empty; the project's pip installs into it
    python = env_dir / "bin" / "python"
    result = pip("install", "--quiet", str(wheel), python=python)
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "images.txt").write_text("nginx:1.27\nquay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cm\n")
    (work / "bad.txt").write_text("nginx:1.27\nNginx:1.27\n")
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = [env_dir / "bin" / "airlock", "manifest", "check"]
    ok = subprocess.run([*run, "images.txt"], cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.endswith("images.txt: 2 entries, valid\n"), ok.stderr
    assert "images.txt: warning: no images.lock" in ok.stdout  # unlocked: valid, with the warning
    bad = subprocess.run([*run, "bad.txt", "--json"], cwd=work, env=clean, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and '"line": 2' in bad.stdout
    module = subprocess.run([python, "-m", "shared", "manifest", "check", str(work)], cwd=work, env=clean,
                            capture_output=True, text=True, timeout=120)
    assert module.returncode == 2 and module.stderr == f"error: {work}: is a directory, not a file\n"
    serve = subprocess.run([env_dir / "bin" / "airlock", "serve"], cwd=work, env=clean, capture_output=True,
                           text=True, timeout=120)
    assert serve.returncode == 2 and "serve needs" in serve.stderr and "acr-airlock[serve]" in serve.stderr
    # the SDK dependencies came along: the commands that talk to Azure import
    imports = subprocess.run([python, "-c", "import shared.services, shared.adapters.azure_clients, "
                              "azure.storage.blob, azure.mgmt.containerregistry, httpx, yaml"],
                             cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert imports.returncode == 0, imports.stderr
    probe = "import importlib.util as u; print([m for m in ('bench', 'devstack', 'tests', 'function_app') " \
            "if u.find_spec(m)])"
    nothing_else = subprocess.run([python, "-c", probe],
                                  cwd=work, env=clean, capture_output=True, text=True, timeout=120)
    assert nothing_else.stdout.strip() == "[]"
