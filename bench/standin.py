"""The local stand-in itself: start-up time, the round trip of a small JSON answer over a kept-alive
TLS connection (Nagle off: TCP_NODELAY), and one emulated import of a 3-layer multi-platform image
(azure-mgmt-containerregistry begin_import_image, polled until done) next to the bare
`skopeo copy --all` of the same image, which is the work inside it."""
from __future__ import annotations

import statistics
import subprocess
import time

import httpx

from .common import running_stack

STARTS = 3
ROUND_TRIPS = 50


def main() -> None:
    from devstack import oci
    from devstack.stack import Stack
    from shared.adapters.acr import ImportRequest
    from shared.services import Services

    starts = []
    for _ in range(STARTS):
        with Stack() as stack:
            starts.append(stack.startup_seconds)
    with running_stack(import_latency=0) as stack:
        with httpx.Client(verify=stack.ssl_context()) as client:
            url = f"{stack.arm_endpoint}/_devstack/faults"
            for _ in range(5):
                client.get(url)
            trips = []
            for _ in range(ROUND_TRIPS):
                started = time.perf_counter()
                client.get(url).raise_for_status()
                trips.append(time.perf_counter() - started)
        seeded = oci.seed_upstream(stack)
        services = Services.from_env(stack.env)
        services.acr.tag_digest("warm/up", "x")  # tokens and connections, outside the timing
        ref = "ingress-nginx/controller:v1.11.1"
        request = ImportRequest(registry_uri=stack.upstream_host, source_image=ref, target_tags=["bench/ctl:v1"],
                                untagged_repositories=[], mode="NoForce")
        started = time.perf_counter()
        services.acr.import_image(request, timeout=120)
        imported = time.perf_counter() - started
        assert services.acr.tag_digest("bench/ctl", "v1") == seeded[ref]
        started = time.perf_counter()
        subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--quiet",
                        f"--src-cert-dir={stack.certs_dir}", "--dest-tls-verify=false",
                        f"docker://{stack.upstream_host}/{ref}", f"docker://{stack.backing_host}/bench/raw:v1"],
                       check=True, capture_output=True)
        raw = time.perf_counter() - started
    print(f"stand-in: start-up over {STARTS} starts: median {statistics.median(starts):.2f} s "
          f"(min {min(starts):.2f}, max {max(starts):.2f})")
    print(f"  a small JSON answer over a kept-alive TLS connection: median {statistics.median(trips) * 1000:.1f} ms "
          f"over {ROUND_TRIPS} (was ~44 ms before TCP_NODELAY)")
    print(f"  one import of {ref} (index of 2 platforms x 3 layers) through ARM: {imported:.2f} s")
    print(f"  the same copy with skopeo alone:                                         {raw:.2f} s "
          f"(ratio {imported / raw:.1f}x; the rest is the LRO's 1 s Retry-After poll)")
