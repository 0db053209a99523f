"""`runs wait`: the merge pipeline's step that follows the run an upload started, as a separate process
against the stand-in, while the registered blob function runs the upload (as the host would). The
pipeline uploads, then waits: the wait follows the run of the upload it finds (the blob's ETag), and
fails at once when there is no such blob or it holds other bytes."""
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


def upload(manifest: Path) -> str:
    """Put the file into the manifests container (the pipeline's upload); the ETag of this upload."""
    services = entrypoints.services()
    container = services.settings.manifests_container
    services.store.put_bytes(container, manifest.name, manifest.read_bytes())
    return services.store.get_bytes_etag(container, manifest.name)[1]


def trigger(registered, manifest: Path, etag: str, delay: float) -> threading.Thread:
    """After ``delay`` seconds, deliver the upload's blob event to the registered function, then run the
    queued run through the queue functions (tests/queue_host.py), as the host would."""
    from tests.queue_host import QueueHost

    def work():
        time.sleep(delay)
        container = entrypoints.services().settings.manifests_container
        data = manifest.read_bytes()
        registered["manifest_uploaded"].get_user_function()(
            func.blob.InputStream(data=data, name=f"{container}/{manifest.name}", length=len(data),
                                  blob_properties={"ETag": etag}))
        QueueHost({name: f.get_user_function() for name, f in registered.items()}).drain()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_wait_follows_the_uploaded_run_to_success(container_env, registered, tmp_path):
    prefix = f"w{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / f"{prefix}.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/busybox\n")
    etag = upload(manifest)
    waiting = start_wait(container_env, manifest, "--timeout", "120")
    trigger(registered, manifest, etag, delay=1.0).join()
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 0, out + err
    assert "succeeded" in out and f"{prefix}/busybox:1.36" in out
    assert f"waiting for the run of {manifest.name}" in err

    # waiting again for the same upload finds its run at once (the blob trigger's claim names it)
    again = start_wait(container_env, manifest, "--timeout", "5", "--json")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert '"status": "succeeded"' in out

    # the same bytes uploaded again (a pipeline re-run) is a new upload: its own run, not the old one
    upload(manifest)
    third = start_wait(container_env, manifest, "--timeout", "2")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 1 and "no finished run of" in err


def test_wait_fails_when_the_run_is_invalid(container_env, registered, tmp_path):
    manifest = tmp_path / f"bad-{uuid.uuid4().hex[:8]}.txt"
    manifest.write_text("nginx:1.27\nNot A Reference\n")
    etag = upload(manifest)
    waiting = start_wait(container_env, manifest, "--timeout", "120")
    trigger(registered, manifest, etag, delay=0.5).join()
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 1, out + err
    assert "line 2" in out and "invalid" in err


def test_wait_fails_at_once_without_the_blob_and_times_out_without_a_run(container_env, tmp_path):
    manifest = tmp_path / "never-uploaded.txt"
    manifest.write_text("nginx:1.27\n")
    waiting = start_wait(container_env, manifest, "--timeout", "600")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert "no blob 'never-uploaded.txt'" in err and "upload the manifest first" in err
    upload(manifest)  # uploaded, but no trigger ever runs it
    started = time.monotonic()
    waiting = start_wait(container_env, manifest, "--timeout", "1")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1
    assert "no finished run of never-uploaded.txt" in err
    assert time.monotonic() - started < 30


def test_wait_ignores_other_content_under_the_same_name(container_env, registered, tmp_path):
    """A record of older bytes of images.txt is not the run of the file: the blob holds other bytes than
    the file (it was not uploaded), which fails at once."""
    prefix = f"o{uuid.uuid4().hex[:8]}"
    manifest = tmp_path / f"{prefix}.txt"
    manifest.write_text(f"library/busybox:1.36 => {prefix}/old\n")
    trigger(registered, manifest, upload(manifest), delay=0).join()
    manifest.write_text(f"library/busybox:1.36 => {prefix}/new\n")
    waiting = start_wait(container_env, manifest, "--timeout", "60")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "holds other bytes than the file" in err
