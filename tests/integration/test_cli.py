"""The command line, run as a separate process (python -m shared) against the local stand-in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env_file: Path | None = None, stdin: str | None = None,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    prefix = ["--env-file", str(env_file)] if env_file else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACR_", "IDENTITY_"))}
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "shared", *prefix, *args], cwd=ROOT, capture_output=True,
                          text=True, input=stdin, env=env, timeout=300)


@pytest.fixture
def env_file(stack, tmp_path) -> Path:
    path = tmp_path / "env"
    path.write_text(stack.env_text())
    return path


def test_manifest_check_json_shape(tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_text("# ok\nnginx:1.27\nquay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cm\n"
                        f"myreg.example.com:5000/team/app@sha256:{'a' * 64} => team/app\n")
    result = cli("manifest", "check", str(manifest), "--json",
                 extra_env={"SOURCE_REGISTRY_ALLOWLIST": "docker.io,quay.io,myreg.example.com:5000"})
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["errors"] == []
    first, second, third = document["entries"]
    assert first == {"line": 2, "source": "docker.io/library/nginx:1.27", "registry": "docker.io",
                     "repository": "library/nginx", "tag": "1.27", "digest": None,
                     "target_repository": "library/nginx", "target_tag": "1.27"}
    assert second["target_repository"] == "jetstack/cm" and second["target_tag"] == "v1.15.2"
    assert third["registry"] == "myreg.example.com:5000" and third["tag"] is None
    assert third["digest"] == "sha256:" + "a" * 64 and third["target_tag"] is None


def test_manifest_check_reports_every_error_with_line_and_exits_1(tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_text("nginx:1.27\nNginx:1.27\n\nnginx:1.27 => a => b\nevil.example.com/x:1\n")
    result = cli("manifest", "check", str(manifest))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(":")[1] for line in lines[:-1]] == ["2", "4", "5"]
    assert "nothing would be imported" in lines[-1]


def test_manifest_check_reads_stdin():
    result = cli("manifest", "check", "-", "--json", stdin="busybox\n")
    assert result.returncode == 0 and json.loads(result.stdout)["entries"][0]["target_tag"] == "latest"


def test_missing_file_and_bad_settings_exit_2(tmp_path, env_file):
    assert cli("manifest", "check", str(tmp_path / "nope.txt")).returncode == 2
    bad = tmp_path / "bad.env"
    bad.write_text(env_file.read_text() + "SYNC_CONCURRENCY=many\n")
    manifest = tmp_path / "images.txt"
    manifest.write_text("nginx\n")
    result = cli("sync", str(manifest), env_file=bad)
    assert result.returncode == 2 and "SYNC_CONCURRENCY" in result.stderr


def test_plan_then_sync_then_nothing_to_do(stack, seeded, env_file, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/controller\n"
                        f"library/busybox:1.36 => {prefix}/busybox\n")
    plan = cli("plan", str(manifest), "--json", env_file=env_file)
    assert plan.returncode == 0, plan.stderr
    assert [e["action"] for e in json.loads(plan.stdout)["entries"]] == ["new", "new"]

    sync = cli("sync", str(manifest), "--concurrency", "2", env_file=env_file)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "2 imported, 0 failed" in sync.stdout and "outcome record:" in sync.stdout

    again = cli("sync", str(manifest), "--json", env_file=env_file)
    document = json.loads(again.stdout)
    assert again.returncode == 0
    assert document["summary"]["unchanged"] == 2 and document["summary"]["imported"] == 0
    shown = cli("runs", "show", document["run_id"], env_file=env_file)
    assert json.loads(shown.stdout)["run_id"] == document["run_id"]


def test_sync_exits_1_when_an_entry_fails(stack, seeded, env_file, tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"quay.io/jetstack/missing:v0 => c{uuid.uuid4().hex[:8]}/missing\n")
    result = cli("sync", str(manifest), env_file=env_file)
    assert result.returncode == 1
    assert "SourceNotFound" in result.stdout


def test_summary_lists_changes_and_failures_only_unless_all(stack, seeded, env_file, tmp_path):
    prefix = f"c{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/busybox\n")
    first = cli("sync", str(manifest), "--env-file", str(env_file), "-q")  # global flags after the subcommand
    assert first.returncode == 0 and first.stderr == "", first.stderr  # -q: no progress
    manifest.write_text(f"library/busybox:1.36 => {prefix}/busybox\n"
                        f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/controller\n"
                        f"quay.io/jetstack/missing:v0 => {prefix}/missing\n")
    result = cli("sync", str(manifest), "--env-file", str(env_file))
    assert result.returncode == 1
    rows = [line.split()[1] for line in result.stdout.splitlines()[1:3]]
    assert rows == [f"{prefix}/controller:v1.11.1", f"{prefix}/missing:v0"]
    assert f"{prefix}/busybox" not in result.stdout
    assert "(1 unchanged entry not listed; --all lists every entry)" in result.stdout
    # stderr is not a terminal: periodic one-line progress, no carriage returns
    assert "progress: planned 3 entries" in result.stderr and "progress: imports 1/1 done (100%), 0 failed" \
        in result.stderr and "\r" not in result.stderr
    every = cli("plan", str(manifest), "--all", "--env-file", str(env_file))
    assert f"{prefix}/busybox:1.36" in every.stdout and "not listed" not in every.stdout
