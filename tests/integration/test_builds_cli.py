"""``python -m shared build ...`` and ``pool ...`` against the local stand-in (shared.cli.main in-process)."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.cli import main
from shared.services import Services
from tests.agent_pools import create_pool

pytestmark = [pytest.mark.usefixtures("quick_clock", "airlock_env"), pytest.mark.timeout(300)]
GIT = "https://git.example.com/team/web.git#main"
SECRET = "cli-s3cret-4e1f"




@pytest.fixture
def services(stack):
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05"})


@pytest.fixture
def pool(services, stack):
    return create_pool(services, stack, 0)


@pytest.fixture
def prefix():
    return f"c{uuid.uuid4().hex[:8]}"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def newest_run_id(services) -> str:
    s = services.settings
    runs = list(services.clients.tasks_mgmt.runs.list(s.resource_group, s.registry_name, top=1))
    return runs[0].properties.run_id if runs else ""


def uploaded_sources(stack) -> int:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(stack.connection_string).get_container_client(
        "acr-build-sources")
    return sum(1 for _ in container.list_blobs()) if container.exists() else 0


def test_build_wait_streams_the_log_and_exits_0(pool, prefix, monkeypatch):
    monkeypatch.setenv("NPM_TOKEN", SECRET)
    code, out, err = cli("build", "--source", GIT, "--image", f"{prefix}/web:{{{{.Run.ID}}}}",
                         "--arg", "VERSION=1.2", "--secret-arg", "NPM_TOKEN", "--pool", pool, "--wait", "--poll", "0.1")
    assert code == 0, (out, err)
    assert f"on agent pool {pool} (scaled from 0 to 1 instance(s))" in out
    assert "Step 1/2" in out and "VERSION=1.2" in out and "NPM_TOKEN=*****" in out
    assert ": Succeeded in " in out and f"pushed {prefix}/web:" in out and "sha256:" in out
    assert SECRET not in out + err


def test_build_wait_exits_1_when_the_run_fails(pool, prefix):
    code, out, _ = cli("build", "--source", GIT, "--image", f"{prefix}/web:v1", "--dockerfile", "fail.Dockerfile",
                       "--pool", pool, "--wait", "--poll", "0.1")
    assert code == 1 and ": Failed" in out


def test_build_json_wait_keeps_stdout_json(pool, prefix):
    code, out, err = cli("build", "--source", GIT, "--image", f"{prefix}/web:v1", "--pool", pool, "--json",
                         "--wait", "--poll", "0.1")
    assert code == 0, err
    document = json.loads(out)
    assert document["status"] == "Succeeded" and document["trigger"] == "cli"
    assert "queued build" in err and "was successful" in err


def test_a_local_directory_is_uploaded_as_the_build_context(pool, prefix, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app /app\n")
    (tmp_path / "app").write_text("hello\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]\n")
    code, out, err = cli("build", "--source", str(tmp_path), "--image", f"{prefix}/local:v1", "--pool", pool,
                         "--wait", "--poll", "0.1", "-vv")  # -vv: the SDK logs its requests (the SAS URLs)
    assert code == 0, (out, err)
    assert "Downloaded uploaded source 'source/" in out
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "sig=REDACTED" in logged and not re.search(r"sig=(?!REDACTED)", logged)  # SAS URLs are redacted


@pytest.mark.parametrize("flags, expected", [
    (["--arg", "NOEQUALS"], "--arg: 'NOEQUALS': expected NAME=VALUE"),
    (["--secret-arg", "NOT_IN_ENV_7f"], "--secret-arg: NOT_IN_ENV_7f: no '=VALUE'"),
    (["--image", "Bad/Name:1"], "--image #2:"),  # the second --image given
    (["--timeout", "10"], "--timeout: timeout 10 is out of range"),
    (["--platform", "linux/sparc"], "--platform:"),
    (["--pool", "no-such-pool"], "--pool: agent pool 'no-such-pool' does not exist"),
])
def test_bad_flags_name_the_flag_and_queue_nothing(stack, services, pool, prefix, tmp_path, flags, expected):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    before, uploads = newest_run_id(services), uploaded_sources(stack)
    args = ["build", "--source", str(tmp_path), "--image", f"{prefix}/web:v1", "--pool", pool]
    code, out, err = cli(*args[:-2], *(flags if "--pool" in flags else ["--pool", pool, *flags]))
    assert code == 1, (out, err)
    assert expected in err
    assert newest_run_id(services) == before
    assert uploaded_sources(stack) == uploads  # the local context was not uploaded either


def test_build_show_and_cancel(pool, prefix):
    code, out, _ = cli("build", "--source", GIT, "--image", f"{prefix}/web:v1", "--dockerfile", "hang.Dockerfile",
                       "--pool", pool, "--json")
    run_id = json.loads(out)["run_id"]
    code, out, _ = cli("build", "show", run_id)
    assert code == 0 and out.startswith(f"build {run_id}: ")
    code, out, _ = cli("build", "cancel", run_id, "--json")
    assert code == 0 and json.loads(out)["status"] == "Canceled"
    code, _, err = cli("build", "show", "cbzzzzzz")
    assert code == 1 and "NotFound" in err


def test_pool_status_and_scale(pool):
    code, out, _ = cli("pool", "status", pool, "--json")
    assert code == 0 and json.loads(out)[0]["count"] == 0
    code, out, _ = cli("pool", "scale", pool, "2")
    assert code == 0 and out.splitlines()[1].split()[:2] == [pool, "2"]
    code, out, _ = cli("pool", "status")
    assert code == 0 and out.startswith("POOL") and pool in out
    code, _, err = cli("pool", "scale", pool, "500")
    assert code == 2 and "argument count: must be from 0 to 100, got 500" in err  # a usage error


def test_wait_timeout_stops_following_and_says_how_to_cancel(pool, prefix):
    code, out, err = cli("build", "--source", GIT, "--image", f"{prefix}/web:v1", "--dockerfile", "hang.Dockerfile",
                         "--pool", pool, "--wait", "--poll", "0.1", "--wait-timeout", "1")
    run_id = out.split()[2]
    assert code == 1, (out, err)
    assert f"build {run_id} is still Running after 1s; it keeps running." in err
    assert f"cancel it: airlock build cancel {run_id}" in err
    assert cli("build", "cancel", run_id)[0] == 0


def test_ctrl_c_while_following_exits_130_with_the_cancel_command(stack, pool, prefix, tmp_path):
    import time

    env = {**os.environ, **stack.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, "-m", "shared", "build", "--source", GIT, "--image",
                                f"{prefix}/web:v1", "--dockerfile", "hang.Dockerfile", "--pool", pool, "--wait",
                                "--poll", "0.1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # "queued build <id> on agent pool ..."
    assert first.startswith("queued build "), first + process.stderr.read()
    run_id = first.split()[2]
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"interrupted: build {run_id} keeps running on agent pool {pool}." in err
    assert f"cancel it: python -m shared build cancel {run_id}" in err
    assert cli("build", "cancel", run_id)[0] == 0


class InterruptOnWrite(io.StringIO):
    """Standard output that sends this process SIGINT as soon as ``marker`` is written: Ctrl-C pressed
    at exactly that point, whatever the machine's load (CPython runs the handler right after os.kill)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker, self.fired = marker, False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.fired and self.marker in text:
            self.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return written


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "no-wait"])
def test_ctrl_c_right_after_queued_build_prints_the_cancel_hint(pool, prefix, wait):
    """SIGINT between the "queued build" line and the following used to raise KeyboardInterrupt outside
    the try that prints the hint: the run kept going and the user was told only "interrupted"."""
    out, err = InterruptOnWrite("queued build "), io.StringIO()
    handler = signal.getsignal(signal.SIGINT)
    args = ["build", "--source", GIT, "--image", f"{prefix}/web:v1", "--dockerfile", "hang.Dockerfile",
            "--pool", pool, "--poll", "0.1"] + (["--wait", "--wait-timeout", "30"] if wait else [])
    code = main(args, out=out, err=err)
    assert out.fired
    run_id = out.getvalue().split()[2]
    assert code == 130, (out.getvalue(), err.getvalue())
    assert f"interrupted: build {run_id} keeps running on agent pool {pool}." in err.getvalue()
    assert f"cancel it: airlock build cancel {run_id}" in err.getvalue()
    assert signal.getsignal(signal.SIGINT) is handler  # the CLI put back the handler it found
    assert cli("build", "cancel", run_id)[0] == 0


def test_ctrl_c_while_following_works_when_sigint_was_ignored_by_the_parent(stack, pool, prefix, tmp_path):
    """A process started from a non-interactive shell's background job (``make test &``, CI agents) inherits
    SIGINT ignored, and Python then raises no KeyboardInterrupt: the CLI followed a hanging build through
    Ctrl-C until it was killed (the 60 s of the field report). Following installs its own handler."""
    env = {**os.environ, **stack.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, "-m", "shared", "build", "--source", GIT, "--image",
                                f"{prefix}/web:v1", "--dockerfile", "hang.Dockerfile", "--pool", pool, "--wait",
                                "--poll", "0.1", "--wait-timeout", "40"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    first = process.stdout.readline()
    assert first.startswith("queued build "), first + process.stderr.read()
    run_id = first.split()[2]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert f"cancel it: python -m shared build cancel {run_id}" in err
    assert cli("build", "cancel", run_id)[0] == 0


def test_no_sas_signature_printed_or_logged_even_at_debug(pool, prefix):
    code, out, err = cli("build", "--source", GIT, "--image", f"{prefix}/web:v1", "--pool", pool, "--wait",
                         "--poll", "0.1", "-vv")
    assert code == 0, err[-2000:]
    assert "DEBUG urllib3.connectionpool" in err  # DEBUG logging was on, third-party loggers included
    assert "sig=REDACTED" in out + err  # the log SAS URL was used, printed and logged - redacted
    assert not re.search(r"sig(=|%3D)(?!REDACTED)", out + err, re.IGNORECASE)
    code, out, _ = cli("build", "show", out.splitlines()[0].split()[2], "--json")
    assert code == 0 and "sig=REDACTED" in json.loads(out)["log_url"]
