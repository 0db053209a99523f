"""Helpers for the benchmarks: a running stand-in and many upstream tags made cheaply."""
from __future__ import annotations

import contextlib
import os
import tempfile
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def running_stack(**emulator_options) -> Iterator[object]:
    from devstack.stack import Stack

    with Stack(emulator_options=emulator_options) as stack:
        saved = dict(os.environ)
        os.environ.update(stack.env)  # azure-identity reads the managed-identity endpoint from here
        try:
            yield stack
        finally:
            os.environ.clear()
            os.environ.update(saved)


def push_base(stack, repository: str, seed: str) -> tuple[bytes, str]:
    """Push one small image to the upstream registry; returns (raw manifest, media type)."""
    from devstack import oci

    layout = oci.build_image(repository, seed=seed)
    oci.push(layout, f"{stack.upstream_host}/{repository}:seed-{seed}", cert_dir=stack.certs_dir)
    return layout.raw, layout.media_type


def push_backing(stack, repository: str, seed: str) -> tuple[bytes, str]:
    """Push one small image straight into the emulated ACR's backing registry."""
    from devstack import oci

    layout = oci.build_image(repository, seed=seed)
    oci.push(layout, f"{stack.backing_host}/{repository}:seed-{seed}", tls_verify=False)
    return layout.raw, layout.media_type


def tag_many(stack, repository: str, manifest: bytes, media_type: str, tags: list[str], *,
             backing: bool = False) -> None:
    """PUT one manifest under many tags (the blobs are already there): one request per tag."""
    base, verify = (stack.backing_url, False) if backing else (stack.upstream_url, stack.ssl_context())
    with httpx.Client(base_url=base, verify=verify, timeout=30) as client:
        for tag in tags:
            response = client.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
                                  headers={"Content-Type": media_type})
            response.raise_for_status()


def run_cli(env: dict, *args: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``python -m shared ARGS`` in a fresh process: (wall seconds, peak RSS MiB of *that*
    process, result). The peak comes from ``os.wait4`` on the child's own pid, so neither the
    harness nor any earlier child (skopeo pushes, other runs) is counted."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "shared", *args], cwd=ROOT, env={**os.environ, **env},
                                 stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(child.args, child.returncode, out.read().decode(), err.read().decode())
    result.cpu_seconds = usage.ru_utime + usage.ru_stime  # the child's own CPU time
    return wall, usage.ru_maxrss / 1024, result
