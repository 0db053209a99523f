"""Plans against the local registries: wall time and peak memory of the plan process itself
(the CLI in a fresh child process; its own ``ru_maxrss`` from ``os.wait4``), three cases:

1. ``one repository``: 1,000 entries writing to one ACR repository (target: under 5 s and under
   150 MB). The ACR already holds 900 of the tags with the same digest and 100 with another, so
   the plan finds 900 unchanged and 100 updates; its ACR side takes the tag-listing shortcut.
   The offline check of the same file is measured beside it for scale.
2. ``distinct repositories``: 5,000 entries, each its own source and ACR repository (target:
   under 10 s); the ACR holds half of them already. Beside it, the same plan with one token per
   repository (TOKEN_SCOPES_PER_REQUEST=0, the way before tokens covered many repositories), and
   skopeo's ``inspect`` of the same source references, 16 processes at a time (the plan's
   default PLAN_CONCURRENCY), on a sample
   (BENCH_SKOPEO_SAMPLE, default 500) extrapolated linearly to all entries; skopeo reads the
   source only, the plan reads the source and the ACR, so the comparison favours skopeo. The CPU
   seconds spent during the plan are printed per process: the plan's own, the ACR emulator's (a
   thread of this process) and the source docker-registry's: all share this machine's cores.
3. ``policies``: 50 tag policies (``{semver: >=1.0 <2, newest: 3}``), each over its own source
   repository of 500 tags: the tags are listed, each policy resolves to 3 tags, and the 150
   resolved entries are planned.

Seeding: one image is pushed once per registry with skopeo; the thousands of repositories and
tags are then written straight into distribution's storage layout (devstack.layout), which the
registries read on every request.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import push_backing, push_base, run_cli, running_stack, tag_many

ENTRIES = 1000
DISTINCT = int(os.environ.get("BENCH_DISTINCT", "5000"))
SKOPEO_SAMPLE = int(os.environ.get("BENCH_SKOPEO_SAMPLE", "500"))
SKOPEO_PARALLEL = 16
POLICIES = 50
TAGS_PER_POLICY = 500


CPU: dict = {}  # of the last plan: the plan process's CPU seconds, and this process's (the emulator's)


def _child_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running child process (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _plan(env: dict, text: str, stack=None) -> tuple[float, float, dict]:
    registry = (stack.children.get("registry-upstream") if stack is not None else None) or 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.txt"
        path.write_text(text)
        before = resource.getrusage(resource.RUSAGE_SELF)
        registry_before = _child_cpu(registry) if registry else 0.0
        wall, peak, result = run_cli(env, "plan", str(path), "--json")
        after = resource.getrusage(resource.RUSAGE_SELF)
        CPU["plan"] = result.cpu_seconds
        CPU["emulator"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        CPU["source registry"] = _child_cpu(registry) - registry_before if registry else None
        CPU["load"] = os.getloadavg()[0]  # right after the plan (skopeo's 16 processes come later)
        if result.returncode not in (0, 1):
            raise SystemExit(result.stderr)
        return wall, peak, json.loads(result.stdout)


def _one_repository(stack) -> None:
    manifest, media_type = push_base(stack, "bench/plan", seed="p1")
    tags = [f"v{i}" for i in range(ENTRIES)]
    tag_many(stack, "bench/plan", manifest, media_type, tags)
    same, _ = push_backing(stack, "bench/plan", seed="p1")
    other, _ = push_backing(stack, "bench/plan", seed="p2")
    tag_many(stack, "bench/plan", same, media_type, tags[100:], backing=True)
    tag_many(stack, "bench/plan", other, media_type, tags[:100], backing=True)
    text = "".join(f"{stack.upstream_host}/bench/plan:{t} => bench/plan\n" for t in tags)
    env = {"SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host}
    wall, peak, document = _plan(env, text)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.txt"
        path.write_text(text)
        check_wall, _, _ = run_cli(env, "manifest", "check", str(path))
    counts = document["summary"]
    print(f"1. plan of {ENTRIES} entries into one repository (fresh process, CLI, PLAN_CONCURRENCY default)")
    print(f"  plan wall time                  {wall:6.2f} s   (target < 5 s)  -> "
          f"{counts['unchanged']} unchanged, {counts['update']} update, {counts['error']} error")
    print(f"  peak RSS of the plan process    {peak:6.1f} MiB (target < 150 MB)")
    print(f"  offline manifest check alone    {check_wall:6.2f} s   ratio plan/check {wall / check_wall:.1f}x")


def _seed_distinct(stack, n: int) -> tuple[list[str], str]:
    from devstack import layout, oci

    image = oci.build_image("bench/distinct", seed="d1")
    oci.push(image, f"{stack.upstream_host}/bench/distinct:seed", cert_dir=stack.certs_dir)
    oci.push(image, f"{stack.backing_host}/bench/distinct:seed", tls_verify=False)
    blobs = image.blob_digests()
    upstream, backing = layout.registry_root(stack, "upstream"), layout.registry_root(stack, "backing")
    repositories = [f"bench/d{i:05d}" for i in range(n)]
    for i, repository in enumerate(repositories):
        layout.link_tags(upstream, repository, image.digest, ["1.0"], blobs=blobs, history=False)
        if i % 2 == 0:
            layout.link_tags(backing, repository, image.digest, ["1.0"], blobs=blobs, history=False)
    return repositories, image.digest


def _skopeo_inspect(stack, refs: list[str]) -> float:
    from devstack import oci

    base = [oci._skopeo(), "--policy", str(oci._policy()), "inspect", "--cert-dir", str(stack.certs_dir),
            "--no-creds"]

    def one(ref: str) -> None:
        subprocess.run([*base, f"docker://{ref}"], check=True, capture_output=True, stdin=subprocess.DEVNULL)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SKOPEO_PARALLEL) as pool:
        list(pool.map(one, refs))
    return time.perf_counter() - started


def _distinct(stack) -> None:
    started = time.perf_counter()
    repositories, _ = _seed_distinct(stack, DISTINCT)
    seeding = time.perf_counter() - started
    refs = [f"{stack.upstream_host}/{r}:1.0" for r in repositories]
    env = {"SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host}
    text = "".join(f"{ref}\n" for ref in refs)
    single, _, _ = _plan({**env, "TOKEN_SCOPES_PER_REQUEST": "0"}, text)  # one token per repository
    wall, peak, document = _plan(env, text, stack)
    cpu = dict(CPU)
    sample = refs[::max(1, len(refs) // SKOPEO_SAMPLE)][:SKOPEO_SAMPLE]
    skopeo = _skopeo_inspect(stack, sample)
    skopeo_all = skopeo * len(refs) / len(sample)
    counts = document["summary"]
    print(f"2. plan of {DISTINCT} entries, each its own repository (seeded in {seeding:.1f} s via the storage layout)")
    print(f"  plan wall time                  {wall:6.2f} s   (target < 10 s) -> "
          f"{counts['new']} new, {counts['unchanged']} unchanged, {counts['error']} error")
    print(f"  peak RSS of the plan process    {peak:6.1f} MiB")
    print(f"  CPU during the plan             {cpu['plan']:6.1f} s plan process, {cpu['emulator']:.1f} s ACR emulator "
          f"(in this process), {cpu['source registry']:.1f} s source registry (docker-registry; "
          f"load average {cpu['load']:.1f} on {os.cpu_count()} CPUs)")
    print(f"  same plan, one token per repo   {single:6.2f} s   (TOKEN_SCOPES_PER_REQUEST=0) "
          f"ratio {single / wall:.1f}x")
    print(f"  skopeo inspect x{SKOPEO_PARALLEL} parallel   {skopeo:6.2f} s for a sample of {len(sample)} "
          f"-> {skopeo_all:.1f} s for {len(refs)} (extrapolated linearly; source side only)")
    print(f"  ratio skopeo/plan               {skopeo_all / wall:6.1f}x (target >= 5x)")


def _policies(stack) -> None:
    from devstack import layout, oci

    image = oci.build_image("bench/policy", seed="q1")
    oci.push(image, f"{stack.upstream_host}/bench/policy:seed", cert_dir=stack.certs_dir)
    upstream = layout.registry_root(stack, "upstream")
    tags = [f"{major}.{minor}.{patch}" for major in (0, 1, 2, 3, 4) for minor in range(10) for patch in range(10)]
    assert len(tags) == TAGS_PER_POLICY
    started = time.perf_counter()
    for i in range(POLICIES):
        layout.link_tags(upstream, f"bench/p{i:02d}", image.digest, tags, blobs=image.blob_digests(), history=False)
    seeding = time.perf_counter() - started
    text = "".join(f"{stack.upstream_host}/bench/p{i:02d}:{{semver: >=1.0 <2, newest: 3}}\n" for i in range(POLICIES))
    wall, peak, document = _plan({"SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host}, text)
    resolved = sum(len(p["resolved"]) for p in document.get("policies", []))
    listed = sum(p["tags_listed"] or 0 for p in document.get("policies", []))
    print(f"3. plan of {POLICIES} tag policies over repositories of {TAGS_PER_POLICY} tags "
          f"(seeded in {seeding:.1f} s via the storage layout)")
    print(f"  plan wall time                  {wall:6.2f} s   -> {listed} tags listed, {resolved} resolved, "
          f"{document['summary']['new']} new, {document['summary']['error']} error")
    print(f"  peak RSS of the plan process    {peak:6.1f} MiB")


def main() -> None:
    with running_stack(import_latency=0) as stack:
        _one_repository(stack)
        _distinct(stack)
        _policies(stack)
