"""The HTTP API served by a real ASGI server (uvicorn) and called with real HTTP requests (httpx)."""
from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError

from devstack import oci
from shared import entrypoints
from shared.http.app import create_app
from shared.services import Services
from tests.queue_host import QueueHost
from tests.servers import serve_asgi


@pytest.fixture(scope="module")
def api(stack, seeded, registered):
    """The API on uvicorn, and a queue host running the queued runs (as the Functions host would)."""
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "HTTP_MAX_BODY_BYTES": "4096",
           "RUNS_QUEUE": f"runs-{uuid.uuid4().hex[:10]}"}
    app = create_app(lambda: Services.from_env(env))
    with pytest.MonkeyPatch.context() as mp:  # the managed-identity credential reads os.environ
        for key, value in env.items():
            mp.setenv(key, value)
        entrypoints.reset()
        host = QueueHost({name: f.get_user_function() for name, f in registered.items()})
        with serve_asgi(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client, host.serving():
            yield client
        entrypoints.reset()


@pytest.fixture
def prefix():
    return f"h{uuid.uuid4().hex[:8]}"


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


def test_plan_for_pull_request_check(api, seeded, prefix):
    response = api.post("/api/imports", params={"plan": "true"},
                        json=[{"source": "registry.k8s.io/ingress-nginx/controller:v1.11.1",
                               "target": f"{prefix}/controller"}])
    assert response.status_code == 200
    plan = response.json()
    assert plan["kind"] == "plan"
    [entry] = plan["entries"]
    assert entry["action"] == "new" and entry["source_digest"] == seeded["ingress-nginx/controller:v1.11.1"]


def test_import_waits_for_result_then_run_is_readable(api, stack, seeded, prefix):
    response = api.post("/api/imports", params={"wait": "60"},
                        json=[{"source": "quay.io/jetstack/cert-manager-controller:v1.15.2",
                               "target": f"{prefix}/cm"}])
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["status"] == "succeeded" and document["trigger"] == "http"
    assert response.headers["location"] == f"/api/runs/{document['run_id']}"
    fetched = api.get(response.headers["location"])
    assert fetched.status_code == 200 and fetched.json()["run_id"] == document["run_id"]
    raw = oci.inspect_raw(f"{stack.backing_host}/{prefix}/cm:v1.15.2", tls_verify=False)
    assert oci.sha256_digest(raw) == seeded["jetstack/cert-manager-controller:v1.15.2"]


def test_import_without_wait_answers_202_and_finishes(api, seeded, prefix):
    response = api.post("/api/imports", content=f"library/busybox:1.36 => {prefix}/bb\n",
                        headers={"content-type": "text/plain"})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.headers["location"] == f"/api/runs/{run_id}"
    assert response.json()["status"] == "queued"
    deadline = time.monotonic() + 60
    while True:
        document = api.get(f"/api/runs/{run_id}").json()
        if document["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert document["status"] == "succeeded"
    assert document["summary"]["imported"] == 1


def test_unknown_run_is_404(api):
    assert_problem(api.get("/api/runs/20260101T000000Z-deadbeef"), 404)
    problem = assert_problem(api.get("/api/runs/not*a*run"), 400)
    assert problem["errors"][0]["field"] == "run_id"


@pytest.mark.parametrize("body, headers, status, field", [
    (b"{not json", {"content-type": "application/json"}, 400, "body"),
    (json.dumps({"source": "nginx"}).encode(), {"content-type": "application/json"}, 400, "/source"),
    (json.dumps({"source": "nginx"}).encode(), {"content-type": "application/json"}, 400, "/manifest"),
    (json.dumps({"manifest": "nginx:1.27\n", "lock": 3}).encode(), {"content-type": "application/json"}, 400,
     "/lock"),
    (json.dumps("nginx:1.27").encode(), {"content-type": "application/json"}, 400, "/"),
    (json.dumps([{"target": "x"}]).encode(), {"content-type": "application/json"}, 400, "/0/source"),
    (json.dumps([{"source": "nginx", "tag": "x"}]).encode(), {"content-type": "application/json"}, 400, "/0"),
    (json.dumps([{"source": "nginx"}, {"source": "Bad Ref"}]).encode(), {"content-type": "application/json"},
     422, "/1"),
    (b"<xml/>", {"content-type": "application/xml"}, 415, "content-type"),
    (b"x" * 5000, {"content-type": "text/plain"}, 413, "body"),
    (json.dumps([{"source": "x" * 5000}]).encode(), {"content-type": "application/json"}, 413, "body"),
])
def test_bad_requests_get_problem_json_with_field(api, body, headers, status, field):
    problem = assert_problem(api.post("/api/imports", content=body, headers=headers), status)
    assert field in [e.get("field") for e in problem["errors"]]


def test_disallowed_registry_names_line(api):
    problem = assert_problem(api.post("/api/imports", content=b"nginx:1.27\nevil.example.com/x:1\n",
                                      headers={"content-type": "text/plain"}), 422)
    assert problem["errors"][0]["line"] == 2
    assert "evil.example.com" in problem["errors"][0]["message"]


def test_wait_out_of_range(api):
    problem = assert_problem(api.post("/api/imports", params={"wait": "999"}, content=b"nginx\n",
                                      headers={"content-type": "text/plain"}), 400)
    assert problem["errors"][0]["field"] == "wait"


def test_health_reports_reachability(api):
    response = api.get("/api/health")
    assert response.status_code == 200, response.text
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert set(checks) == {"storage", "arm", "registry"} and all(c["ok"] for c in checks.values())


def test_health_reports_configuration_problems(stack):
    app = create_app(lambda: Services.from_env({**stack.env, "SYNC_CONCURRENCY": "lots"}))
    with serve_asgi(app) as base_url:
        response = httpx.get(f"{base_url}/api/health")
    assert response.status_code == 503
    assert "SYNC_CONCURRENCY" in response.json()["configuration"][0]


def test_openapi_document(api):
    document = api.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/api/imports", "/api/runs/{run_id}", "/api/health"} <= set(document["paths"])


def test_unknown_route_is_problem_json(api):
    assert_problem(api.get("/api/nope"), 404)
    assert_problem(api.delete("/api/imports"), 405)


DISCOVER_FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "discover"


def test_discover_checks_yaml_against_a_manifest_blob_and_inline(api, stack, prefix):
    services = Services.from_env(stack.env)
    host = services.clients.login_server
    chart = (DISCOVER_FIXTURES / "shop.yaml").read_text().replace("airlockacr.azurecr.io", host)
    services.store.put_bytes(services.settings.manifests_container, f"{prefix}.txt",
                             (DISCOVER_FIXTURES / "images.txt").read_bytes())
    response = api.post("/api/discover", params={"manifest": f"{prefix}.txt", "name": "shop.yaml"},
                        content=chart.encode(), headers={"content-type": "application/yaml"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["ok"] is False and document["registry_host"] == host
    assert [(f["code"], f["file"], f["document"], f["line"], f["container"]) for f in document["findings"]] == [
        ("not-mirrored", "shop.yaml", 4, 57, "migrate"), ("not-mirrored", "shop.yaml", 6, 106, "cleanup")]

    inline = (DISCOVER_FIXTURES / "images.txt").read_text() + "quay.io/shop/migrate:2.3.0\nquay.io/shop/cleanup:2.3.0\n"
    response = api.post("/api/discover", json={"yaml": chart, "manifest": inline})
    assert response.status_code == 200 and response.json()["ok"] is True, response.text


def test_discover_errors_are_problems(api, prefix):
    body = assert_problem(api.post("/api/discover", content=b"kind: Pod\nspec: [\n",
                                   headers={"content-type": "application/yaml"}, params={"manifest": "x.txt"}), 400)
    assert body["errors"][0]["line"] == 3 and body["errors"][0]["field"] == "body"
    bomb = "rules: " + "[" * 1000 + "]" * 1000 + "\n"
    body = assert_problem(api.post("/api/discover", json={"yaml": bomb, "manifest": "nginx:1.27\n"}), 400)
    assert "nested more than" in body["errors"][0]["message"]
    assert_problem(api.post("/api/discover", params={"manifest": f"{prefix}-missing.txt"}, content=b"kind: Pod\n",
                            headers={"content-type": "application/yaml"}), 404)
    body = assert_problem(api.post("/api/discover", json={"yaml": "kind: Pod\n", "manifest": "nginx:1.27 => a b\n"}),
                          422)
    assert body["errors"][0]["line"] == 1
    assert_problem(api.post("/api/discover", json={"manifest": "x"}), 400)
    body = assert_problem(api.post("/api/discover", json={"yaml": "kind: Pod\n", "manifests": "x"}), 400)
    assert body["errors"][0]["field"] == "/manifests"
    assert_problem(api.post("/api/discover", content=b"x", headers={"content-type": "image/png"}), 415)
    assert_problem(api.post("/api/discover", content=b"kind: Pod\n" * 1000, headers={"content-type": "text/yaml"}), 413)


# -- what the OpenAPI document forbids is refused (issue 20, item 13) -------------------------------

@pytest.mark.parametrize("path, params", [
    ("/api/runs", {"limit": ""}), ("/api/runs", {"status": ""}), ("/api/runs", {"since": ""}),
    ("/api/runs", {"next": ""}), ("/api/runs", {"limit": " 5"}),
])
def test_empty_query_values_on_runs_are_400(api, path, params):
    problem = assert_problem(api.get(path, params=params), 400)
    assert problem["errors"][0]["field"] == next(iter(params))


@pytest.mark.parametrize("params", [{"plan": ""}, {"plan": "yes"}, {"plan": "1"}, {"wait": ""}, {"name": ""}])
def test_empty_or_non_boolean_query_values_on_imports_are_400(api, params):
    problem = assert_problem(api.post("/api/imports", params=params, content=b"nginx:1.27\n",
                                      headers={"content-type": "text/plain"}), 400)
    assert problem["errors"][0]["field"] == next(iter(params))


def test_a_bare_plan_is_refused(api):
    """``?plan`` with no value used to mean true; the document says boolean, so it is a 400 now."""
    problem = assert_problem(api.post("/api/imports?plan", content=b"nginx:1.27\n",
                                      headers={"content-type": "text/plain"}), 400)
    assert problem["errors"][0]["field"] == "plan"


# -- a manifest with its lock: the locked digests are imported -------------------------------------

def _lock_for(stack, manifest: str, name: str) -> str:
    from shared.handlers.lock import build_lock

    return build_lock(Services.from_env(stack.env), manifest.encode(), name=name).lock.to_text()


def test_import_with_a_lock_imports_the_locked_digest(api, stack, seeded, prefix):
    manifest = f"nginx:latest => {prefix}/web:pinned\n"
    lock = _lock_for(stack, manifest, f"{prefix}.txt")
    assert seeded["library/nginx:latest"] in lock
    # the lock holds another digest of the same repository (as if the tag moved since it was reviewed)
    older = seeded["library/nginx:1.27"]
    lock = lock.replace(seeded["library/nginx:latest"], older)
    body = {"manifest": manifest, "lock": lock}
    plan = api.post("/api/imports", params={"plan": "true", "name": f"{prefix}.txt"}, json=body)
    assert plan.status_code == 200, plan.text
    [entry] = plan.json()["entries"]
    assert entry["source_digest"] == older and plan.json()["manifest"]["lock"]["images"] == 1
    assert entry["drift"] == {"locked": older, "upstream": seeded["library/nginx:latest"]}
    response = api.post("/api/imports", params={"wait": "60", "name": f"{prefix}.txt"}, json=body)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["status"] == "succeeded" and record["manifest"]["lock"]["images"] == 1, record
    raw = oci.inspect_raw(f"{stack.backing_host}/{prefix}/web:pinned", tls_verify=False)
    assert oci.sha256_digest(raw) == older  # the locked digest, not where the tag points now


def test_a_lock_that_does_not_match_is_422_naming_lock_and_manifest_lines(api, stack, prefix):
    manifest = f"nginx:latest => {prefix}/web:a\nlibrary/busybox:1.36 => {prefix}/bb\n"
    lock = _lock_for(stack, f"nginx:latest => {prefix}/web:a\n", f"{prefix}.txt")
    problem = assert_problem(api.post("/api/imports", params={"plan": "true", "name": f"{prefix}.txt"},
                                      json={"manifest": manifest, "lock": lock}), 422)
    fields = {(e.get("field"), e.get("line")) for e in problem["errors"]}
    assert ("/manifest", 2) in fields, problem  # line 2 has no locked digest
    problem = assert_problem(api.post("/api/imports", params={"plan": "true"},
                                      json={"manifest": manifest, "lock": "images: [oops\n"}), 422)
    assert {e.get("field") for e in problem["errors"]} == {"/lock"}, problem


# -- an API key (airlock serve), and a server that runs no queue worker ---------------------------

API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(stack, seeded):
    env = {**stack.env, "RUNS_QUEUE": f"runs-{uuid.uuid4().hex[:10]}"}
    app = create_app(lambda: Services.from_env(env), api_key=API_KEY, accept_imports=False)
    with pytest.MonkeyPatch.context() as mp:
        stack.apply_env(mp)
        with serve_asgi(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
            client.env = env
            yield client


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/health", "/api/runs", "/api/nope"])
def test_every_route_needs_the_key(keyed, path):
    response = keyed.get(path)
    problem = assert_problem(response, 401)
    assert problem["code"] == "Unauthenticated" and "x-functions-key" in response.headers["www-authenticate"]
    problem = assert_problem(keyed.get(path, headers={"x-functions-key": "wrong-key-0123456789"}), 403)
    assert API_KEY not in json.dumps(problem)
    assert_problem(keyed.get(path, params={"code": API_KEY + "x"}), 403)


def test_the_key_in_the_header_or_in_code_is_let_through(keyed):
    assert keyed.get("/api/openapi.json", headers={"x-functions-key": API_KEY}).status_code == 200
    assert keyed.get("/api/openapi.json", params={"code": API_KEY}).status_code == 200


def test_without_a_worker_imports_are_refused_and_plans_still_answered(keyed, prefix):
    headers = {"x-functions-key": API_KEY}
    body = [{"source": "library/busybox:1.36", "target": f"{prefix}/bb"}]
    problem = assert_problem(keyed.post("/api/imports", json=body, headers=headers), 503)
    assert problem["code"] == "NoQueueWorker"
    assert keyed.post("/api/imports", params={"plan": "true"}, json=body, headers=headers).status_code == 200
    services = Services.from_env(keyed.env)  # nothing was queued: the run queue was never even created
    queue = services.clients.queue_service.get_queue_client(services.settings.runs_queue)
    with pytest.raises(ResourceNotFoundError):
        queue.get_queue_properties()


def test_health_names_the_version(api):
    from shared.http.openapi import app_version

    assert api.get("/api/health").json()["version"] == app_version() == api.get("/api/openapi.json").json()[
        "info"]["version"]
