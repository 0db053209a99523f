"""Trust at the border: what verifying signatures adds to a plan, cold and warm, side by side in one run.

1,000 signed entries, each its own upstream image and ACR repository (every entry is new, so every one
is verified), half signed with a cosign key (node:crypto in tests/sigstore/sign.js, cosign's tag
scheme) and half keyless (Sigstore DSSE bundles made by @sigstore/sign against @sigstore/mock, attached
as OCI referrers through the referrers tag schema: the upstream has no referrers API), the keyless
scope verified against the mock's trusted root uploaded as an operator-supplied root. The same plan
(``SyncEngine.run(apply=False)``, PLAN_CONCURRENCY as shipped) is timed in child processes:

- ``without``: no trust policy in force (what a plan cost before);
- ``cold``: the policy in force, an empty verdict cache (a fresh verdict prefix, a fresh process): every
  entry's signatures looked up at the source and verified;
- ``warm, memory``: the same process planning again (its in-process verdicts);
- ``warm, blob``: a new process (another instance) with the shared verdict blobs of the cold plan.

Each process plans twice; "without" and the policy runs alternate, ROUNDS times, and the medians are
compared (the machine is shared, so single runs are noisy). Targets (issue 19): at most 1.5x cold and
1.05x warm. Figures are printed, not asserted.

Seeding writes 1,000 small images and their signatures through the registry API (devstack.oci's
RegistryClient, several at a time); signing runs sign.js once (500 bundles, 500 key signatures).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import ROOT, running_stack

ENTRIES = int(os.environ.get("BENCH_TRUST_ENTRIES", "1000"))
ROUNDS = int(os.environ.get("BENCH_TRUST_ROUNDS", "3"))
REPO = "bench-trust"
IDENTITY = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.3"
ISSUER = "https://token.actions.githubusercontent.com"


def _images(count: int):
    """``count`` small OCI images (an empty config and one layer of their own): (name, artifact)."""
    from devstack import oci

    config = oci.Blob("application/vnd.oci.image.config.v1+json", b'{"architecture":"amd64","os":"linux"}')
    out = []
    for n in range(count):
        layer = oci.Blob("application/vnd.oci.image.layer.v1.tar", f"bench-trust layer {n}\n".encode() * 8)
        manifest = {"schemaVersion": 2, "mediaType": oci.MEDIA_OCI_MANIFEST, "config": config.descriptor(),
                    "layers": [layer.descriptor()]}
        out.append((f"{'key' if n % 2 else 'keyless'}-{n:04d}",
                    oci.Artifact(oci.Blob(oci.MEDIA_OCI_MANIFEST, oci.canonical_json(manifest)), (config, layer))))
    return out


def _seed(stack, work: Path) -> dict:
    """Push the images, sign them (sign.js), push the signatures; returns what the policy needs."""
    from devstack import oci
    from tests.signing import sign, simple_signing

    images = _images(ENTRIES)
    host = stack.upstream_host
    payloads = {}
    for name, image in images:
        if name.startswith("key-"):
            payloads[name] = work / f"{name}.payload"
            payloads[name].write_bytes(simple_signing(image.digest, f"quay.io/{REPO}/{name}"))
    started = time.perf_counter()
    made = sign({"identity": IDENTITY, "issuer": ISSUER,
                 "keys": [{"name": "release", "type": "ec", "curve": "P-256",
                           "payloads": [str(p) for p in payloads.values()]}],
                 "bundles": [{"name": name, "kind": "dsse",
                              "subjects": [{"name": f"quay.io/{REPO}/{name}", "digest": image.digest}]}
                             for name, image in images if name.startswith("keyless-")]}, work / "made",
                timeout=1800)
    print(f"  signed {len(payloads)} payloads with a key and {ENTRIES - len(payloads)} keyless bundles in "
          f"{time.perf_counter() - started:.0f} s (sign.js)", flush=True)
    signatures = dict(zip(payloads, made["keys"]["release"]["signatures"]))

    def push(item) -> None:
        name, image = item
        with oci.RegistryClient(host, cert_dir=stack.certs_dir) as client:
            client.push(f"{REPO}/{name}", image, "1")
            if name.startswith("key-"):
                layer = oci.cosign_signature_layer(payloads[name].read_bytes(),
                                                   Path(signatures[name]).read_text().strip())
                client.push(f"{REPO}/{name}", oci.build_cosign_manifest([layer]), oci.cosign_tag(image.digest, "sig"))
            else:
                bundle = Path(made["bundles"][name]).read_bytes()
                media = "application/vnd.dev.sigstore.bundle.v0.3+json"
                referrer = oci.build_artifact(media, [oci.ArtifactLayer.of(media, bundle)],
                                              subject=image.manifest.descriptor())
                client.push(f"{REPO}/{name}", referrer)
                oci.add_to_referrers_index(client, f"{REPO}/{name}", image.digest, referrer.referrer_descriptor())

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(push, images))
    print(f"  pushed {ENTRIES} images and their signatures in {time.perf_counter() - started:.0f} s", flush=True)
    return {"names": [n for n, _ in images], "key": Path(made["keys"]["release"]["publicKey"]).read_text(),
            "root": Path(made["trustedRoot"]).read_bytes()}


def _policy(key: str) -> bytes:
    pem = "".join(f"          {line}\n" for line in key.strip().splitlines())
    return (f"version: 1\nscopes:\n"
            f"  - name: keyless\n    match: quay.io/{REPO}/keyless-*\n    trusted_root: bench\n    signatures:\n"
            f"      - kind: keyless\n        identity: {IDENTITY}\n        issuer: {ISSUER}\n"
            f"  - name: key\n    match: quay.io/{REPO}/key-*\n    signatures:\n"
            f"      - kind: cosign-key\n        key: |\n{pem}").encode()


def child() -> None:
    """In a child process: plan the manifest (argv[1]) twice; print JSON of the walls and what was verified."""
    from shared.adapters.signatures import SignatureFinder
    from shared.handlers.sync import SyncEngine
    from shared.services import Services

    text = Path(sys.argv[1]).read_text()
    services = Services.from_env(os.environ)
    out = []
    for _ in range(2):
        lookups = SignatureFinder.lookups
        started, cpu = time.perf_counter(), time.process_time()
        record = SyncEngine(services).run(text, name="bench-trust", trigger="cli", apply=False).to_dict()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        statuses: dict = {}
        for entry in record["entries"]:
            v = entry.get("verification") or {}
            key = f"{v.get('status')}{' (cached)' if v.get('cached') else ''}" if v else entry["action"]
            statuses[key] = statuses.get(key, 0) + 1
        out.append({"wall": wall, "cpu": cpu, "lookups": SignatureFinder.lookups - lookups, "statuses": statuses,
                    "status": record["status"]})
    print(json.dumps(out))


def _plan(env: dict, manifest: Path) -> list[dict]:
    code = "import sys; from bench.trust import child; child()"
    result = subprocess.run([sys.executable, "-c", code, str(manifest)], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from shared.services import Services

    with running_stack() as stack, tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        work = Path(tmp)
        print(f"trust: {ENTRIES} signed entries (cosign key and keyless, half each), each new to the ACR", flush=True)
        seeded = _seed(stack, work)
        manifest = work / "images.txt"
        manifest.write_text("".join(f"quay.io/{REPO}/{name}:1 => {REPO}/{name}\n" for name in seeded["names"]))
        with_policy, without = f"bt-policy-{uuid.uuid4().hex[:6]}", f"bt-none-{uuid.uuid4().hex[:6]}"
        services = Services.from_env({**stack.env, "MANIFESTS_CONTAINER": with_policy})
        services.store.put_bytes(with_policy, "trust-policy.yaml", _policy(seeded["key"]))
        services.store.put_bytes(with_policy, "trust/roots/bench.json", seeded["root"])
        services.store.put_bytes(without, "placeholder", b"")  # the container exists; no policy in it
        names = ("without", "without, again", "cold", "warm, memory", "warm, blob", "warm, blob then memory")
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(ROUNDS):
            base = _plan({"MANIFESTS_CONTAINER": without}, manifest)
            prefix = f"verdicts-{uuid.uuid4().hex[:8]}/"  # an empty shared cache
            env = {"MANIFESTS_CONTAINER": with_policy, "TRUST_VERDICT_PREFIX": prefix}
            cold, memory = _plan(env, manifest)
            blob, blob_memory = _plan(env, manifest)
            for name, info in zip(names, (*base, cold, memory, blob, blob_memory)):
                runs[name].append(info)
            load = os.getloadavg()[0]
    wall = {k: statistics.median(i["wall"] for i in v) for k, v in runs.items()}
    cpu = {k: statistics.median(i["cpu"] for i in v) for k, v in runs.items()}
    print(f"  plans of {ENTRIES} entries, median of {ROUNDS} rounds (each: a fresh process, then the same process "
          f"again; load average {load:.1f} on {os.cpu_count()} CPUs at the end):")
    print(f"    {'':<24} {'wall':>7}   {'plan CPU':>8}   (wall of each round)")
    for name, values in runs.items():
        print(f"    {name:<24} {wall[name]:6.2f} s   {cpu[name]:6.2f} s   "
              f"({', '.join(format(i['wall'], '.2f') for i in values)})")
    for name in ("without", "cold", "warm, memory", "warm, blob"):
        info = runs[name][-1]
        print(f"    {name:<24} signature look-ups {info['lookups']:>5}, verdicts {info['statuses']}")
    for label, name, against, target in (("cold cache", "cold", "without", "<= 1.5x"),
                                         ("warm, same process", "warm, memory", "without, again", "<= 1.05x"),
                                         ("warm, another process", "warm, blob", "without", "")):
        print(f"  {label + ':':<23} {wall[name] / wall[against]:.2f}x wall, {cpu[name] / cpu[against]:.2f}x plan CPU"
              f"{f' (target {target})' if target else ' (a verdict blob read per entry, no look-up)'}")


if __name__ == "__main__":
    main()
