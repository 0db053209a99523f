"""The data-plane probe (ACR_PROBE_INTERVAL) next to waiting for the import's operation alone.

The emulator keeps each import's operation InProgress for LATENCY seconds although its copy takes
about a second, as ARM's operation status lags the registry; imports of 8 entries (one sync, 8 at once)
are timed with the probe at 0.5 s and with it off, side by side in one run, on one stand-in.
"""
from __future__ import annotations

import statistics
import time
import uuid

from .common import running_stack

LATENCY = 10
SOURCES = ["library/busybox:1.36", "jetstack/cert-manager-controller:v1.15.2", "library/nginx:1.27",
           "library/nginx:latest", "cloudflare/cloudflared:latest", "azuredocs/aks-helloworld:v1",
           "ingress-nginx/controller:v1.11.1", "ingress-nginx/kube-webhook-certgen:v1.4.1"]


def _sync(stack, probe: str) -> tuple[float, list[float]]:
    from shared.handlers.sync import SyncEngine
    from shared.services import Services

    prefix = f"b{uuid.uuid4().hex[:6]}"
    text = "".join(f"{stack.upstream_host}/{s} => {prefix}/i{i}:t\n" for i, s in enumerate(SOURCES))
    env = {**stack.env, "ACR_PROBE_INTERVAL": probe, "SYNC_CONCURRENCY": "8",
           "SOURCE_REGISTRY_ALLOWLIST": stack.upstream_host}
    services = Services.from_env(env)
    services.acr.tag_digest("warm/up", "x")  # tokens and connections, outside the timing
    started = time.perf_counter()
    record = SyncEngine(services).run(text, name="bench", trigger="cli").to_dict()
    wall = time.perf_counter() - started
    assert record["status"] == "succeeded", record["summary"]
    return wall, [e["duration_seconds"] for e in record["entries"]]


def main() -> None:
    from devstack import oci

    with running_stack(import_latency=LATENCY) as stack:
        oci.seed_upstream(stack)
        on_wall, on = _sync(stack, "0.5")
        off_wall, off = _sync(stack, "0")
    print(f"probe: {len(SOURCES)} imports at once, the operation InProgress for {LATENCY} s per import")
    print(f"  operation alone (ACR_PROBE_INTERVAL=0):  sync {off_wall:.2f} s, per import p50 "
          f"{statistics.median(off):.2f} s")
    print(f"  with the probe (ACR_PROBE_INTERVAL=0.5): sync {on_wall:.2f} s, per import p50 "
          f"{statistics.median(on):.2f} s  (ratio {off_wall / on_wall:.1f}x)")
