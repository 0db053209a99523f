"""The HTTP API served by a real ASGI server (uvicorn) and called with real HTTP requests (httpx)."""
from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

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
    (json.dumps({"source": "nginx"}).encode(), {"content-type": "application/json"}, 400, "/"),
    (json.dumps([{"target": "x"}]).encode(), {"content-type": "application/json"}, 400, "/0/source"),
    (json.dumps([{"source": "nginx", "tag": "x"}]).encode(), {"content-type": "application/json"}, 400, "/0"),
    (json.dumps([{"source": "nginx"}, {"source": "Bad Ref"}]).encode(), {"content-type": "application/json"},
     422, "/1"),
    (b"<xml/>", {"content-type": "application/xml"}, 400, "content-type"),
    (b"x" * 5000, {"content-type": "text/plain"}, 400, "body"),
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
    assert_problem(api.post("/api/discover", content=b"x", headers={"content-type": "image/png"}), 400)
