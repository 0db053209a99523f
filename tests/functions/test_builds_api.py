"""POST /api/builds, GET /api/builds/{id}, POST /api/builds/{id}/cancel over real HTTP (uvicorn + httpx)."""
from __future__ import annotations

import time
import uuid

import httpx
import pytest

from shared.http.app import create_app
from shared.services import Services
from tests.agent_pools import create_pool, fast_runs
from tests.servers import serve_asgi

pytestmark = pytest.mark.timeout(300)
GIT = "https://git.example.com/team/web.git#main"
SECRET = "http-s3cret-91ad"


@pytest.fixture(scope="module")
def services(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    return Services.from_env({**stack.env, "RETRY_BASE_SECONDS": "0.05"})


@pytest.fixture(scope="module")
def api(stack, services):
    app = create_app(lambda: services)
    with pytest.MonkeyPatch.context() as mp, fast_runs(stack):  # the managed-identity credential reads os.environ
        stack.apply_env(mp)
        with serve_asgi(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
            yield client


@pytest.fixture
def pool(api, services, stack):
    return create_pool(services, stack, 0)


def body(pool: str, **extra) -> dict:
    return {"source_location": GIT, "image_names": [f"h{uuid.uuid4().hex[:6]}/web:{{{{.Run.ID}}}}"],
            "agent_pool": pool, **extra}


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text
    return response.json()


def poll(api, location: str, wanted: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(location)
        assert response.status_code == 200, response.text
        if response.json()["status"] in wanted:
            return response.json()
        assert time.monotonic() < deadline, response.json()
        time.sleep(0.1)


def test_queue_then_follow_a_build(api, pool):
    request = body(pool, arguments={"TOKEN": {"value": SECRET, "secret": True}, "VERSION": "1.2"})
    response = api.post("/api/builds", json=request)
    assert response.status_code == 202, response.text
    queued = response.json()
    run_id = queued["run_id"]
    assert response.headers["location"] == f"/api/builds/{run_id}" == queued["location"]
    assert queued["status"] == "Queued" and queued["trigger"] == "http" and queued["agent_pool"] == pool
    assert queued["scaling"]["action"] == "scale_up"
    assert SECRET not in response.text and queued["request"]["arguments"]["TOKEN"]["value"] == "***"

    done = poll(api, response.headers["location"], {"Succeeded", "Failed"})
    assert done["status"] == "Succeeded", done
    assert done["log_url"].startswith("http") and done["finished_at"] and done["duration_seconds"] is not None
    [image] = done["output_images"]
    assert image["tag"] == run_id and image["digest"].startswith("sha256:")
    log = httpx.get(done["log_url"]).text
    assert "TOKEN=*****" in log and SECRET not in log


def test_cancel_a_build(api, pool):
    response = api.post("/api/builds", json=body(pool, dockerfile="hang.Dockerfile"))
    location = response.headers["location"]
    poll(api, location, {"Running"})
    cancelled = api.post(f"{location}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "Canceled" and cancelled.json()["cancel_requested_at"]
    assert api.get(location).json()["status"] == "Canceled"


@pytest.mark.parametrize("content, headers, status, field", [
    (b"{not json", {"content-type": "application/json"}, 400, "body"),
    (b"source_location: x", {"content-type": "text/yaml"}, 415, "content-type"),
    (b"[]", {"content-type": "application/json"}, 400, ""),
    (b'{"source_location": "https://git.example.com/a.git"}', {"content-type": "application/json"}, 400,
     "/image_names"),
    (b'{"source_location": "https://git.example.com/a.git", "image_names": ["a:1"], "nope": 1}',
     {"content-type": "application/json"}, 400, "/nope"),
    (b'{"task": "build-api", "platform": "linux/amd64"}', {"content-type": "application/json"}, 400, "/platform"),
    (b'{"source_location": "https://user:pw@git.example.com/a.git", "image_names": ["a:1"]}',
     {"content-type": "application/json"}, 400, "/source_location"),
])
def test_bad_requests_get_problem_json_naming_the_field(api, content, headers, status, field):
    problem = assert_problem(api.post("/api/builds", content=content, headers=headers), status)
    assert field in [e.get("field") for e in problem["errors"]]
    assert "pw@" not in problem.get("detail", "")


def test_unknown_pool_is_refused_and_nothing_is_queued(api, services, pool):
    s = services.settings
    client = services.clients.tasks_mgmt
    before = [r.properties.run_id for r in client.runs.list(s.resource_group, s.registry_name, top=1)]
    problem = assert_problem(api.post("/api/builds", json=body("no-such-pool")), 400)
    assert problem["code"] == "AgentPoolNotFound" and problem["errors"][0]["field"] == "/agent_pool"
    assert "no-such-pool" in problem["errors"][0]["message"]
    assert [r.properties.run_id for r in client.runs.list(s.resource_group, s.registry_name, top=1)] == before


def test_unknown_and_malformed_run_ids(api):
    assert_problem(api.get("/api/builds/cbzzzzzz"), 404)
    assert_problem(api.post("/api/builds/cbzzzzzz/cancel"), 404)
    problem = assert_problem(api.get("/api/builds/not*a*run"), 400)
    assert problem["errors"][0]["field"] == "run_id"
    assert_problem(api.get("/api/builds"), 405)


def test_openapi_describes_the_build_routes(api):
    paths = api.get("/api/openapi.json").json()["paths"]
    assert "requestBody" in paths["/api/builds"]["post"]
    assert {"202", "400"} <= set(paths["/api/builds"]["post"]["responses"])
    assert {"200", "400", "404"} <= set(paths["/api/builds/{run_id}"]["get"]["responses"])
    assert {"202", "404"} <= set(paths["/api/builds/{run_id}/cancel"]["post"]["responses"])
