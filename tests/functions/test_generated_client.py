"""A client generated from the OpenAPI document by a standard generator (openapi-python-client, pinned in
requirements-dev.txt) calls every operation against the API served by uvicorn over the local stand-in.

The generator runs offline (it reads the document from a file; where ``unshare`` can take the network away,
it runs without one), with its post-generation hooks off (no formatter is needed). Its only complaints are
the two non-JSON request bodies it does not support (``text/plain`` manifests, ``application/yaml``
discover input): every operation is still callable with JSON, and the test holds the list of complaints to
exactly those two, so a change to the document that a generator cannot follow fails here. The generated
client authenticates with the server's API key in ``x-functions-key`` (the document's security scheme), is
told to raise on any status the document does not list, and parses every answer into its models.
"""
from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shared.handlers.worker import QueueOptions, RunWorker
from shared.http.app import create_app
from shared.http.openapi import document
from shared.services import Services
from tests.agent_pools import create_pool, fast_runs
from tests.servers import serve_asgi

pytestmark = pytest.mark.timeout(300)
KEY = "client-key-" + uuid.uuid4().hex
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
DISCOVER = Path(__file__).resolve().parents[1] / "fixtures" / "discover"


def offline(argv: list[str]) -> list[str]:
    """``argv`` without a network when ``unshare --net`` works here (root, or user namespaces)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net", *argv]
    return argv


@pytest.fixture(scope="module")
def client_package(tmp_path_factory):
    """The generated package ``airlock_client``, importable."""
    work = tmp_path_factory.mktemp("generated")
    (work / "openapi.json").write_text(json.dumps(document(max_wait=60, max_body=1_048_576)))
    (work / "config.yaml").write_text("post_hooks: []\nproject_name_override: airlock_client\n"
                                      "package_name_override: airlock_client\n")
    done = subprocess.run(offline([str(GENERATOR), "generate", "--path", str(work / "openapi.json"), "--config",
                                   str(work / "config.yaml"), "--meta", "none", "--output-path",
                                   str(work / "airlock_client")]), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    complaints = set(re.findall(r"WARNING parsing (\w+ \S+) within \w+\.\s+Unsupported content type (\S+)",
                                done.stdout + done.stderr))
    assert complaints == {("POST /api/imports", "text/plain"), ("POST /api/discover", "application/yaml")}, done.stdout
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module("airlock_client")
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == "airlock_client" or m.startswith("airlock_client.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def served(stack, seeded, client_package):
    """The API with an API key and an in-process worker (as ``airlock serve`` runs it), and the generated client."""
    if stack.emulator is None:
        pytest.skip("the builds operations need the ACR emulator")
    env = {**stack.env, "RUNS_QUEUE": f"runs-{uuid.uuid4().hex[:10]}", "RETRY_BASE_SECONDS": "0.05"}
    services = Services.from_env(env)
    worker = RunWorker(services, options=QueueOptions(batch_size=8, new_batch_threshold=16, visibility_timeout=1,
                                                      max_polling_interval=0.2), reaper_interval=None)
    app = create_app(lambda: services, api_key=KEY, worker=worker)
    with pytest.MonkeyPatch.context() as mp, fast_runs(stack):
        stack.apply_env(mp)  # the managed-identity credential reads os.environ
        worker.start()
        try:
            with serve_asgi(app) as base_url:
                client = client_package.AuthenticatedClient(base_url=base_url, token=KEY, prefix="",
                                                            auth_header_name="x-functions-key",
                                                            raise_on_unexpected_status=True, timeout=90)
                yield client, services, client_package
        finally:
            worker.stop(10)


def api(package, module: str):
    return importlib.import_module(f"{package.__name__}.api.{module}")


def model(package, name: str):
    return getattr(importlib.import_module(f"{package.__name__}.models"), name)


def test_every_operation_through_the_generated_client(served, stack, seeded):
    client, services, package = served
    Problem, RunRecord, Queued = model(package, "Problem"), model(package, "RunRecord"), model(package, "Queued")
    ImportItem, ManifestWithLock = model(package, "ImportItem"), model(package, "ManifestWithLock")
    called = set()
    prefix = f"g{uuid.uuid4().hex[:8]}"

    # imports: a plan, a queued import run by the worker, and a manifest with its lock
    import_images = api(package, "imports.import_images")
    items = [ImportItem(source="library/busybox:1.36", target=f"{prefix}/bb")]
    plan = import_images.sync(client=client, body=items, plan=True)
    assert isinstance(plan, RunRecord) and plan.kind.value == "plan" and len(plan.entries) == 1
    queued = import_images.sync_detailed(client=client, body=items)
    assert queued.status_code == 202 and isinstance(queued.parsed, Queued), queued.content
    from shared.handlers.lock import build_lock

    manifest = f"nginx:1.27 => {prefix}/web\n"
    lock = build_lock(services, manifest.encode(), name=f"{prefix}.txt").lock.to_text()
    locked = import_images.sync(client=client, body=ManifestWithLock(manifest=manifest, lock=lock), wait=60,
                                name=f"{prefix}.txt")
    assert isinstance(locked, RunRecord) and locked.status.value == "succeeded", locked
    assert locked.manifest.additional_properties["lock"]["images"] == 1
    called.add("importImages")

    # runs: the queued import, followed to its end, and the index
    get_run = api(package, "runs.get_run")
    deadline = time.monotonic() + 60
    while (record := get_run.sync(queued.parsed.run_id, client=client)).status.value in ("queued", "running"):
        assert time.monotonic() < deadline, record
        time.sleep(0.3)
    assert isinstance(record, RunRecord) and record.status.value == "succeeded"
    missing = get_run.sync("20260101T000000Z-deadbeef", client=client)
    assert isinstance(missing, Problem) and missing.status == 404
    called.add("getRun")
    page = api(package, "runs.list_runs").sync(client=client, limit=5)
    assert len(page.runs) <= 5 and all(r.run_id for r in page.runs)
    called.add("listRuns")

    # builds: queue, read, cancel
    pool = create_pool(services, stack, 1)
    BuildRequest = model(package, "BuildRequest")
    build = api(package, "builds.queue_build").sync(client=client, body=BuildRequest.from_dict({
        "source_location": "https://git.example.com/team/web.git#main", "agent_pool": pool,
        "image_names": [f"{prefix}/built:{{{{.Run.ID}}}}"], "dockerfile": "hang.Dockerfile"}))
    assert build.run_id and build.agent_pool == pool, build
    called.add("queueBuild")
    read = api(package, "builds.get_build").sync(build.run_id, client=client)
    assert read.run_id == build.run_id
    called.add("getBuild")
    cancelled = api(package, "builds.cancel_build").sync(build.run_id, client=client)
    assert cancelled.run_id == build.run_id and cancelled.cancel_requested_at
    called.add("cancelBuild")

    # discover: Kubernetes YAML against an inline manifest
    DiscoverRequest = model(package, "DiscoverRequest")
    chart = (DISCOVER / "shop.yaml").read_text().replace("airlockacr.azurecr.io", services.clients.login_server)
    result = api(package, "discover.check_kubernetes_yaml").sync(client=client, body=DiscoverRequest(
        yaml=chart, manifest=(DISCOVER / "images.txt").read_text(), name="shop.yaml"))
    assert result.ok is False and [(f.code.value, f.line) for f in result.findings] == [
        ("not-mirrored", 57), ("not-mirrored", 106)]
    called.add("checkKubernetesYaml")

    # service: health (with the worker) and the document itself
    health = api(package, "service.get_health").sync(client=client)
    assert health.status.value == "healthy" and health.worker.running is True and health.version
    called.add("getHealth")
    served_document = api(package, "service.get_open_api_document").sync(client=client)
    assert served_document.additional_properties["info"]["version"] == health.version
    called.add("getOpenApiDocument")

    every = {op["operationId"] for item in document()["paths"].values() for op in item.values()}
    assert called == every


def test_the_generated_client_without_the_key_gets_401_as_documented(served):
    client, _, package = served
    anonymous = package.Client(base_url=client._base_url, raise_on_unexpected_status=True)
    answer = api(package, "service.get_health").sync_detailed(client=anonymous)
    assert answer.status_code == 401 and answer.parsed.code == "Unauthenticated"
    wrong = package.AuthenticatedClient(base_url=client._base_url, token="not-the-key-0123456789", prefix="",
                                        auth_header_name="x-functions-key", raise_on_unexpected_status=True)
    answer = api(package, "runs.list_runs").sync_detailed(client=wrong, limit=1)
    assert answer.status_code == 403 and answer.parsed.code == "Forbidden"
