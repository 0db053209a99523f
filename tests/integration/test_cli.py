"""The command line, run as a separate process (python -m shared) against the local stand-in: with the
stand-in's settings (``--env-file``), and standalone, with a registry name and the current az login only
(``tests.azcli``: a stand-in ``az`` on PATH, a test double of the external Azure CLI)."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import azcli

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


# -- standalone: a registry name and the current az login (tests.azcli: a stand-in az on PATH) --------------

def standalone(stack, tmp_path: Path, *args: str, fake: azcli.FakeAz | None = None,
               extra: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m shared ARGS`` with the stand-in's whereabouts, the fake az on PATH and ``extra``; no
    subscription, resource group, identity endpoint or storage unless ``extra`` adds them."""
    fake = fake or azcli.for_stack(tmp_path / "az", stack.env)
    env = azcli.standalone_env(stack.env, fake, PYTHONPATH=str(ROOT), **(extra or {}))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "shared", *args], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=300)
    return result, time.monotonic() - started


@pytest.fixture
def two_images(tmp_path) -> Path:
    prefix = f"c{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/busybox\n"
                        f"registry.k8s.io/ingress-nginx/controller:v1.11.1 => {prefix}/controller\n")
    return manifest


def test_v_is_the_apps_own_info_and_vv_the_wire(stack, seeded, tmp_path, two_images):
    """A 2-entry sync: -v prints a handful of the app's lines (the issue counted 1,181, 3 of them the app's);
    -vv adds the SDK's request logs."""
    result, _ = standalone(stack, tmp_path, "sync", "images.txt", "--registry", stack.registry_name, "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    logs = [line for line in lines if not line.startswith(("progress: ", "note: "))]
    assert logs and all(line.startswith(("INFO shared.", "WARNING shared.")) for line in logs), logs
    assert len(lines) < 20
    wire, _ = standalone(stack, tmp_path, "plan", "images.txt", "--registry", stack.registry_name, "-vv")
    assert "azure.core.pipeline.policies.http_logging_policy" in wire.stderr and "DEBUG urllib3" in wire.stderr


def test_log_format_json_for_pipelines(stack, seeded, tmp_path, two_images):
    result, _ = standalone(stack, tmp_path, "plan", "images.txt", "--registry", stack.registry_name, "-v",
                           "--log-format", "json")
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert records and {r["logger"].split(".")[0] for r in records} == {"shared"}
    assert any(r.get("run_id") for r in records)  # log lines of the run carry its id as a field


def test_a_failed_sync_keeps_the_alert_line_off_the_terminal(stack, seeded, tmp_path):
    (tmp_path / "images.txt").write_text(f"quay.io/jetstack/missing:v0 => c{uuid.uuid4().hex[:8]}/missing\n")
    result, _ = standalone(stack, tmp_path, "sync", "images.txt", "--registry", stack.registry_name, "-v",
                           extra={"AzureWebJobsStorage": stack.env["AzureWebJobsStorage"]})
    assert result.returncode == 1 and "SourceNotFound" in result.stdout
    assert "AIRLOCK_RUN_FAILED" not in result.stderr and "AIRLOCK_RUN_FAILED" not in result.stdout


def test_a_wrong_registry_name_or_identity_is_one_line(stack, seeded, tmp_path, two_images):
    result, _ = standalone(stack, tmp_path, "plan", "images.txt", "--registry", "nosuchacr")
    assert result.returncode == 1 and result.stderr == (
        f"error: RegistryNotFound: no registry named 'nosuchacr' in subscription {stack.env['AZURE_SUBSCRIPTION_ID']}"
        ": check --registry, or choose the subscription (--subscription, or az account set)\n")
    refused = azcli.for_stack(tmp_path / "az-refused", stack.env, token="refused")  # a token of another tenant
    result, seconds = standalone(stack, tmp_path, "plan", "images.txt", "--registry", stack.registry_name,
                                 fake=refused)
    assert result.returncode == 1 and result.stderr == (
        "error: InvalidAuthenticationToken: The access token is invalid. (ARM refused the identity of "
        "AzureCliCredential)\n")
    assert seconds < 30


def test_a_managed_identity_that_gets_no_token_is_one_line(stack, seeded, tmp_path, two_images):
    """The stand-in's own settings with a wrong identity header: the managed identity is the credential
    (CLI_CREDENTIAL=auto with IDENTITY_ENDPOINT), named, with the endpoint's answer; no retries, no chain."""
    env_file = tmp_path / "wrong.env"
    env_file.write_text(stack.env_text().replace(stack.env["IDENTITY_HEADER"], "not-the-header"))
    result = cli("plan", str(two_images), env_file=env_file)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: CredentialUnavailable: ManagedIdentityCredential could not get a token "
                                    "for https://management.azure.com: ")
    assert "The X-IDENTITY-HEADER header is not valid" in result.stderr


def test_settings_and_flags_still_win(stack, seeded, tmp_path, two_images):
    """--resource-group is used as given (no lookup: ARM says it is not there); --subscription over az's."""
    result, _ = standalone(stack, tmp_path, "plan", "images.txt", "--registry", stack.registry_name,
                           "--resource-group", "other-rg")
    assert result.returncode == 1 and result.stderr.startswith("error: ResourceNotFound: ")
    result, _ = standalone(stack, tmp_path, "plan", "images.txt", "--registry", stack.registry_name,
                           "--subscription", "11111111-1111-1111-1111-111111111111")
    assert result.returncode == 1 and result.stderr.startswith("error: SubscriptionNotFound: ")
    full = cli("plan", str(two_images), "--json", env_file=_env_file(stack, tmp_path))  # every setting given
    assert full.returncode == 0 and json.loads(full.stdout)["run_id"] is None


def _env_file(stack, tmp_path: Path) -> Path:
    path = tmp_path / "stack.env"
    path.write_text(stack.env_text())
    return path


def test_ctrl_c_on_sync_prints_the_run_id_and_the_resume_command(stack, seeded, clean_faults, tmp_path, two_images):
    env_file = _env_file(stack, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACR_", "IDENTITY_"))}
    stack.settings(import_latency=30)  # imports that are still running when Ctrl-C comes
    try:
        process = subprocess.Popen([sys.executable, "-m", "shared", "--env-file", str(env_file), "sync",
                                    str(two_images), "--concurrency", "2"], cwd=ROOT, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("progress: planned"):
                break
        time.sleep(1.5)  # the imports are submitted and checkpointed as started
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        stack.settings(import_latency=1)
    assert process.returncode == 130, "".join(seen) + err
    match = re.search(r"interrupted: run (\S+) is recorded as far as it got; carry it on with:\n  (.+)\n", err)
    assert match, err
    run_id, command = match.group(1), shlex.split(match.group(2))
    assert command[:3] == ["python", "-m", "shared"] and command[3:] == [
        "sync", "--resume", run_id, "--env-file", str(env_file), "--concurrency", "2"]
    # the printed command carries the run on to its end (same run, same record)
    resumed = subprocess.run([sys.executable, *command[1:], "--json"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["run_id"] == run_id and document["status"] == "succeeded"
    assert document["summary"]["total"] == 2 and document["summary"]["failed"] == 0


def test_runs_list_takes_the_next_page_token(stack, seeded, tmp_path):
    env_file = _env_file(stack, tmp_path)
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"library/busybox:1.36 => c{uuid.uuid4().hex[:8]}/busybox\n")
    for _ in range(2):
        assert cli("sync", str(manifest), "-q", env_file=env_file).returncode == 0
    first = cli("runs", "list", "--limit", "1", env_file=env_file)
    assert first.returncode == 0, first.stderr
    note = re.search(r"^more runs: (.+)$", first.stderr, re.M)
    assert note, first.stderr
    command = shlex.split(note.group(1))
    assert command[:3] == ["python", "-m", "shared"] and command[3:7] == ["runs", "list", "--limit", "1"]
    second = cli(*command[3:], env_file=env_file)
    assert second.returncode == 0
    first_id, second_id = (r.stdout.splitlines()[1].split()[0] for r in (first, second))
    assert first_id != second_id
    as_json = json.loads(cli("runs", "list", "--limit", "1", "--json", env_file=env_file).stdout)
    again = json.loads(cli("runs", "list", "--limit", "1", "--json", "--next", as_json["next"],
                           env_file=env_file).stdout)
    assert again["runs"][0]["run_id"] == second_id


def test_without_storage_a_tag_it_cannot_know_the_owner_of_is_not_overwritten(stack, seeded, tmp_path):
    """Tag ownership lives in the outcomes container: without storage a sync imports new tags but does not
    replace an existing tag (TagConflict, saying why), unless the line says (overwrite)."""
    target = f"c{uuid.uuid4().hex[:8]}/tool:1"
    manifest = tmp_path / "images.txt"
    manifest.write_text(f"library/busybox:1.36 => {target}\n")
    first, _ = standalone(stack, tmp_path, "sync", "images.txt", "--registry", stack.registry_name, "--no-lock")
    assert first.returncode == 0 and "1 imported" in first.stdout, first.stdout + first.stderr
    manifest.write_text(f"library/nginx:1.27 => {target}\n")  # the same tag, another image: an update
    refused, _ = standalone(stack, tmp_path, "sync", "images.txt", "--registry", stack.registry_name, "--no-lock")
    assert refused.returncode == 1 and "TagConflict" in refused.stdout
    assert "without storage settings, who owns it cannot be read" in refused.stdout
    manifest.write_text(f"library/nginx:1.27 => {target} (overwrite)\n")
    forced, _ = standalone(stack, tmp_path, "sync", "images.txt", "--registry", stack.registry_name, "--no-lock")
    assert forced.returncode == 0 and "update  imported" in forced.stdout, forced.stdout
