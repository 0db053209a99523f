"""Carrying referrers: one entry's sync without referrers beside the same with N referrers, side by side.

Upstream (the stand-in's docker-registry, no referrers API): an image with no referrers, and images
with N referrers each (N-1 SBOMs and a Sigstore bundle through the referrers tag schema, plus a cosign
``.sig`` tag). Each is synced alone into a fresh target (``SyncEngine.run``: plan, importImage, then
the referrers). The emulator keeps every import's operation InProgress for LATENCY seconds, as ARM's
status lags; with the probe off (ACR_PROBE_INTERVAL=0) an import takes that long, so the wall time
counts import rounds: the image's, then one round for all its referrers at once, however many. With
the probe on (the default 3 s) a referrer imported by digest is seen on the data plane before its
operation ends. Also timed: the same image with REFERRERS_ENABLED=false, and a second run of an
unchanged entry (REFERRERS_UNCHANGED: the referrers are compared, nothing is imported).
"""
from __future__ import annotations

import time
import uuid

from .common import running_stack

LATENCY = 4.0
COUNTS = (1, 8)


def _graph(stack, repository: str, n: int) -> None:
    from devstack import oci

    up = stack.upstream_host
    image = oci.build_image(repository, seed=repository, layers=1)
    oci.push(image, f"{up}/{repository}:1.0", cert_dir=stack.certs_dir)
    if n == 0:
        return
    subject = oci.layout_descriptor(image)
    for i in range(n - 1):
        kind = "application/vnd.dev.sigstore.bundle.v0.3+json" if i == 0 else "application/spdx+json"
        artifact = oci.build_artifact(kind, [oci.ArtifactLayer.of(kind, f"{repository} {i}".encode())],
                                      subject=subject)
        oci.push_artifact(artifact, f"{up}/{repository}", cert_dir=stack.certs_dir)
    payload = oci.simple_signing_payload(f"{up}/{repository}", image.digest)
    oci.push_cosign([oci.cosign_signature_layer(payload, "c2ln")], f"{up}/{repository}", image.digest,
                    cert_dir=stack.certs_dir)


def _sync(stack, repository: str, target: str, **env) -> tuple[float, dict]:
    from shared.handlers.sync import SyncEngine
    from shared.services import Services

    services = Services.from_env({**stack.env, **env})
    services.acr.tag_digest("warm/up", "x")  # tokens and connections, outside the timing
    started = time.perf_counter()
    record = SyncEngine(services).run(f"quay.io/{repository}:1.0 => {target}:1.0\n", name="bench",
                                      trigger="cli").to_dict()
    wall = time.perf_counter() - started
    assert record["status"] == "succeeded", record
    return wall, record


def main() -> None:
    with running_stack(import_latency=LATENCY) as stack:
        prefix = f"br{uuid.uuid4().hex[:6]}"
        _graph(stack, f"{prefix}/none", 0)
        for n in COUNTS:
            _graph(stack, f"{prefix}/n{n}", n)
        rows = []
        for probe in ("0", "3"):
            wall, _ = _sync(stack, f"{prefix}/n{COUNTS[-1]}", f"{prefix}/off{probe}", ACR_PROBE_INTERVAL=probe,
                            REFERRERS_ENABLED="false")
            rows.append((probe, f"{COUNTS[-1]} referrers upstream, REFERRERS_ENABLED=false", wall, 0))
            wall, _ = _sync(stack, f"{prefix}/none", f"{prefix}/none{probe}", ACR_PROBE_INTERVAL=probe)
            rows.append((probe, "no referrers", wall, 0))
            for n in COUNTS:
                wall, record = _sync(stack, f"{prefix}/n{n}", f"{prefix}/t{n}p{probe}", ACR_PROBE_INTERVAL=probe)
                carried = record["summary"]["referrers"]["imported"]
                assert carried == n, record["summary"]
                rows.append((probe, f"{n} referrer(s)", wall, carried))
            wall, record = _sync(stack, f"{prefix}/n{COUNTS[-1]}", f"{prefix}/t{COUNTS[-1]}p{probe}",
                                 ACR_PROBE_INTERVAL=probe)
            assert record["summary"]["referrers"]["present"] == COUNTS[-1]
            rows.append((probe, f"unchanged entry, {COUNTS[-1]} referrers compared", wall, 0))
    print(f"referrers: one entry synced; each import's operation InProgress for {LATENCY:g} s")
    for probe, label, wall, carried in rows:
        mode = "operation alone (probe off)" if probe == "0" else "probe every 3 s"
        print(f"  {mode:28} {label:52} {wall:6.2f} s  ({wall / LATENCY:.1f} import rounds; "
              f"{carried} referrer import(s))")
