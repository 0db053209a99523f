"""`runs wait`: the merge pipeline's step that follows the run an upload started, as a separate process
against the stand-in, while the registered blob function runs the upload (as the host would)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest

from shared import entrypoints

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container_env(stack, seeded, airlock_env, monkeypatch, tmp_path):
    container = f"manifests-{uuid.uuid4().hex[:8]}"
    queue = f"runs-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MANIFESTS_CONTAINER", container)
    monkeypatch.setenv("RUNS_QUEUE", queue)
    monkeypatch.setenv("RETRY_BASE_SECONDS", "0.05")
    env_file = tmp_path / "env"
    env_file.write_text(stack.env_text() + f"MANIFESTS_CONTAINER={container}\nRUNS_QUEUE={queue}\n")
    entrypoints.reset()
    yield env_file
    entrypoints.reset()


def start_wait(env_file: Path, manifest: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ACR_", "IDENTITY_"))}
    return subprocess.Popen([sys.executable, "-m", "shared", "--env-file", str(env_file), "runs", "wait",
                             "--file", str(manifest), "--interval", "0.2", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def upload_and_trigger(registered, manifest: Path, delay: float) -> threading.Thread:
    """Upload after ``delay`` seconds, deliver the blob event to the registered function, then run the
    queued run through the queue functions (tests/queue_host.py), as the host would."""
    from tests.queue_host import QueueHost

    def work():
        time.sleep(delay)
        services = entrypoints.services()
        container = services.settings.manifests_container
        data = manifest.read_bytes()
        services.store.put_bytes(container, manifest.name, data)
        registered["manifest_uploaded"].get_user_function()(
            func.blob.InputStream(data=data, name=f"{container}/{manifest.name}", length=len(data)))
        QueueHost({name: f.get_user_function() for name, f in registered.items()}).drain()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_wait_follows_the_uploaded_run_to_success(container_env, registered, tmp_path):
    prefix = f"w{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / f"{prefix}.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/busybox\n")
    waiting = start_wait(container_env, manifest, "--timeout", "120")
    upload_and_trigger(registered, manifest, delay=1.0).join()
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 0, out + err
    assert "succeeded" in out and f"{prefix}/busybox:1.36" in out
    assert f"waiting for the run of {manifest.name}" in err

    # the same bytes again: the earlier run is found at once (the blob trigger's claim names it)
    again = start_wait(container_env, manifest, "--timeout", "5", "--json")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert '"status": "succeeded"' in out


def test_wait_fails_when_the_run_is_invalid(container_env, registered, tmp_path):
    manifest = tmp_path / f"bad-{uuid.uuid4().hex[:8]}.txt"
    manifest.write_text("nginx:1.27\nNot A Reference\n")
    waiting = start_wait(container_env, manifest, "--timeout", "120")
    upload_and_trigger(registered, manifest, delay=0.5).join()
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 1, out + err
    assert "line 2" in out and "invalid" in err


def test_wait_times_out_when_no_run_appears(container_env, tmp_path):
    manifest = tmp_path / "never-uploaded.txt"
    manifest.write_text("nginx:1.27\n")
    started = time.monotonic()
    waiting = start_wait(container_env, manifest, "--timeout", "1")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert "no finished run of never-uploaded.txt" in err
    assert time.monotonic() - started < 30


def test_wait_ignores_other_content_under_the_same_name(container_env, registered, tmp_path):
    """A record of older bytes of images.txt is not the run of the bytes just uploaded."""
    prefix = f"o{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / f"{prefix}.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/old\n")
    upload_and_trigger(registered, manifest, delay=0).join()
    manifest.write_text(f"library/busybox:1.36 => {prefix}/new\n")
    waiting = start_wait(container_env, manifest, "--timeout", "2")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "no finished run" in err
