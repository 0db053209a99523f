"""``make demo``: the main job, end to end, on the local stand-in.

1. start the stand-in (Azurite, upstream + backing registries, ACR emulator) and seed the upstream;
2. write a sample images.txt (multi-platform images, a digest-pinned entry, a Docker Hub short name)
   and lock it (``airlock lock``: images.lock, the reviewed digests);
3. ``python -m shared sync`` it twice with the CLI: everything new, then everything unchanged;
4. serve the HTTP API with uvicorn (`python -m shared serve`, whose in-process worker runs the queued
   import) and drive a plan and an import through it with httpx;
5. deliver the registry's real push events to the Event Grid function and show what it recorded;
6. builds: upload a build rule file, refresh the upstream base image (nginx:1.27) and sync it; the
   import's push events queue the dependent build on agent pool "vnetpool" (scaled up from 0),
   which is followed to its end; the idle-pool timer then scales the pool back to 0 (the refreshed
   nginx digest crosses through ``lock --update``: a moved tag alone imports nothing);
7. trust at the border (devstack/demo_trust.py): signed images verified and imported with their
   signatures (the ACR's referrers API lists the Notary Project signature), an unsigned image refused
   under enforce, a tag moved upstream reported as drift, ``lock --update`` proposing the new digest;
8. print where the outcome records are, then stop everything.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 76 - len(text)), flush=True)


def sample_manifest(seeded: dict[str, str]) -> str:
    busybox = seeded["library/busybox:1.36"]
    return (
        "# images.txt - reviewed images for the private AKS clusters\n"
        "# SOURCE => DESTINATION_REPOSITORY[:TAG]\n"
        "registry.k8s.io/ingress-nginx/controller:v1.11.1 => ingress-nginx/controller   # multi-platform\n"
        "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.1 => ingress-nginx/kube-webhook-certgen\n"
        "quay.io/jetstack/cert-manager-controller:v1.15.2 => jetstack/cert-manager-controller\n"
        "mcr.microsoft.com/azuredocs/aks-helloworld:v1 => azuredocs/aks-helloworld\n"
        "docker.io/cloudflare/cloudflared:latest => cloudflare/cloudflared\n"
        "nginx:1.27 => library/nginx                          # Docker Hub short name, multi-platform\n"
        f"docker.io/library/busybox@{busybox} => tools/busybox  # pinned by digest\n"
    )


RULES = """\
# build-rules.yaml - reviewed like images.txt
rules:
  - name: web-on-nginx
    when:
      repository: library/nginx
      tag: "1.27*"
    build:
      source_location: https://git.example.com/team/web.git#main
      image_names: ["apps/web:{{.Run.ID}}", "apps/web:latest"]
      agent_pool: vnetpool
"""


def run_cli(env_file: Path, *args: str) -> int:
    command = [sys.executable, "-m", "shared", "--env-file", str(env_file), *args]
    print("$ python -m shared " + " ".join(args), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def main() -> int:
    import httpx

    from devstack.oci import seed_upstream
    from devstack.stack import Stack, free_ports

    workdir = ROOT / ".devstack" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    pushed: list[dict] = []
    banner("starting the local Azure stand-in")
    with Stack() as stack:
        print(f"started in {stack.startup_seconds:.1f}s: Azurite, upstream registry {stack.upstream_host}, "
              f"ACR emulator {stack.arm_endpoint} (login server {stack.login_server})")
        unsubscribe = stack.emulator.events.subscribe(pushed.extend)
        seeded = seed_upstream(stack)
        print(f"seeded {len(seeded)} images into the upstream registry (stands in for docker.io, quay.io, "
              "registry.k8s.io, mcr.microsoft.com)")
        env_file = workdir / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in stack.env.items()))
        manifest = workdir / "images.txt"
        manifest.write_text(sample_manifest(seeded))
        manifest.with_suffix(".lock").unlink(missing_ok=True)  # a lock from an earlier demo locks other digests
        banner(f"the manifest: {manifest.relative_to(ROOT)}")
        print(manifest.read_text(), end="")

        banner("lock: the digests under review (images.lock, committed beside images.txt)")
        locked = run_cli(env_file, "lock", str(manifest))
        print(manifest.with_suffix(".lock").read_text(), end="")
        banner("manifest check (offline; with its lock)")
        run_cli(env_file, "manifest", "check", str(manifest))
        banner("first sync: everything is new (the locked digests)")
        first = run_cli(env_file, "sync", str(manifest))
        banner("second sync: nothing changed, nothing imported")
        second = run_cli(env_file, "sync", str(manifest))

        banner("the HTTP API, served by uvicorn (python -m shared serve)")
        os.environ.update(stack.env)
        port = free_ports(1)[0]
        # runs are queued: serve's in-process queue worker runs them, as the Functions host's queue trigger would
        server = subprocess.Popen([sys.executable, "-m", "shared", "--env-file", str(env_file), "serve",
                                   "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"{base}/api/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            body = [{"source": "library/nginx:latest", "target": "library/nginx"}]
            print(f"POST {base}/api/imports?plan=true  {json.dumps(body)}")
            plan = httpx.post(f"{base}/api/imports", params={"plan": "true"}, json=body, timeout=60).json()
            print(f"  -> plan: {[(e['target'], e['action']) for e in plan['entries']]}")
            print(f"POST {base}/api/imports?wait=60")
            done = httpx.post(f"{base}/api/imports", params={"wait": "60"}, json=body, timeout=90)
            document = done.json()
            print(f"  -> {done.status_code} run {document['run_id']}: {document['status']}, "
                  f"{document['summary']['imported']} imported; Location: {done.headers.get('location')}")
            bad = httpx.post(f"{base}/api/imports", content=b"nginx:1.27\nNOT/Valid:ref\n",
                             headers={"content-type": "text/plain"}, timeout=30)
            print(f"POST a manifest with a bad line -> {bad.status_code} {bad.headers['content-type']}: "
                  f"{bad.json()['errors']}")
        finally:
            server.terminate()  # SIGTERM: uvicorn stops, then the worker's calls in flight end
            server.wait(40)

        banner("registry events, delivered to the Event Grid function")
        unsubscribe()
        from shared import entrypoints

        entrypoints.reset()
        import function_app

        functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
        for event in pushed:
            functions["registry_event"](grid_event(event))
        kinds: dict[str, int] = {}
        for event in pushed:
            kinds[event["eventType"]] = kinds.get(event["eventType"], 0) + 1
        print(f"recorded {len(pushed)} events from the emulated ACR: {kinds}")

        built = builds_demo(stack, env_file, manifest, functions)
        from devstack.demo_trust import trust_demo

        trusted = trust_demo(stack, env_file, workdir, functions)

        banner("outcome records")
        store = entrypoints.services().store
        container = entrypoints.services().settings.outcomes_container
        runs = store.list_names(container, "runs/")
        print(f"{len(runs)} run records in container '{container}' of Azurite:")
        for name in runs:
            print(f"  {store.url(container, name)}")
        for kind in ("builds/", "scaling/", "rules/"):
            names = store.list_names(container, kind)
            print(f"{len(names)} {kind.rstrip('/')} record(s), e.g. {store.url(container, names[0]) if names else '-'}")
        print("read one with: python -m shared --env-file .devstack/demo/env runs show RUN_ID "
              "(while the stand-in runs: python -m devstack up)")
    banner("stand-in stopped")
    ok = locked == 0 and first == 0 and second == 0 and built and trusted
    print("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


def grid_event(event: dict):
    import azure.functions as func

    return func.EventGridEvent(id=event["id"], data=event["data"], topic=event["topic"], subject=event["subject"],
                               event_type=event["eventType"], event_time=None, data_version=event["dataVersion"])


def builds_demo(stack, env_file: Path, manifest: Path, functions: dict) -> bool:
    """A refreshed base image rebuilds its dependant once, on a pool that scales up and back down."""
    import azure.functions as func
    from azure.functions.timer import TimerRequest

    from devstack import oci
    from shared import entrypoints
    from shared.cli.output import render_build
    from shared.handlers.builds import follow_build

    stack.settings(run_step_seconds=0.5)
    services = entrypoints.services()
    s = services.settings
    banner(f"builds: the rule file {s.manifests_container}/{s.build_rules_blob}")
    print(RULES, end="")
    services.store.put_bytes(s.manifests_container, s.build_rules_blob, RULES.encode())
    functions["manifest_uploaded"](func.blob.InputStream(
        data=RULES.encode(), name=f"{s.manifests_container}/{s.build_rules_blob}"))
    checked = services.store.get_json(s.outcomes_container, f"rules/{hashlib.sha256(RULES.encode()).hexdigest()}.json")
    print(f"manifest_uploaded checked it: {checked['status']}, rules {[r['name'] for r in checked['rules']]}")
    run_cli(env_file, "pool", "status", "vnetpool")

    banner("a refreshed base image upstream (nginx:1.27): lock --update proposes it, then it is synced")
    layout = oci.catalogue_image("library/nginx:1.27", seed="2")
    digest = oci.push(layout, f"{stack.upstream_host}/library/nginx:1.27", cert_dir=stack.certs_dir)
    print(f"pushed a new library/nginx:1.27 upstream: {digest}")
    run_cli(env_file, "lock", str(manifest), "--update")  # the reviewed bump (the lock-update job's pull request)
    events: list[dict] = []
    unsubscribe = stack.emulator.events.subscribe(events.extend)
    try:
        run_cli(env_file, "sync", str(manifest))
        stack.emulator.events.wait_for(lambda e: e["data"]["target"].get("digest") == digest, timeout=30)
        time.sleep(0.5)
    finally:
        unsubscribe()

    banner("its ImagePushed events, delivered to registry_event (twice: a redelivery)")
    for event in events + events:
        functions["registry_event"](grid_event(event))
    queued = []
    names = services.store.list_names(s.outcomes_container, "events/")
    for event in events:
        record = next(services.store.get_json(s.outcomes_container, n) for n in names if event["id"] in n)
        for action in record["actions"] or [{"action": "no rule matches"}]:
            scaled = " (pool scaled up from 0)" if action.get("scaled") else ""
            print(f"  {event['subject']}: {action['action']} {action.get('rule') or ''} "
                  f"{action.get('run_id') or ''}{scaled}")
            queued += [action["run_id"]] if action["action"] == "queued" else []
    print(f"{len(events)} push events (per-platform manifests untagged, then the tagged index), each delivered "
          f"twice -> {len(queued)} build queued")
    if len(queued) != 1:
        return False

    banner(f"following build {queued[0]} (its log, then its record)")
    final = follow_build(services, queued[0], on_log=lambda text: print(text, end="", flush=True),
                         poll_seconds=0.5, timeout=120)
    print(render_build({**final, "log_url": None}), end="")
    run_cli(env_file, "pool", "status", "vnetpool")

    banner("the idle-pool timer (POOL_IDLE_MINUTES=0 for the demo) scales vnetpool back to 0")
    os.environ["POOL_IDLE_MINUTES"] = "0"
    entrypoints.reset()
    functions["pool_scaler"](TimerRequest())
    run_cli(env_file, "pool", "status", "vnetpool")
    return final["status"] == "Succeeded"


if __name__ == "__main__":
    sys.exit(main())
