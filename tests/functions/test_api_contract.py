"""The HTTP API keeps its OpenAPI contract: a bounded schemathesis run (property-based, from the document
the server itself serves) against the app served by uvicorn over the local stand-in, plus the cases
schemathesis found before (500s on bodies that are not UTF-8 or nested deeply, a run id with a newline,
an empty required body, 405 without Allow) as plain regression tests.

Bounded: a few examples per operation and a deadline for the whole run (``BUDGET_SECONDS``), so it
stays well under two minutes. ``ignored_auth`` is not checked: function keys are enforced by the
Functions host in front of this app (the document declares them), not by the app itself.
"""
from __future__ import annotations

import os
import time
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from shared.http.app import MAX_JSON_DEPTH, create_app
from shared.http.openapi import document
from shared.services import Services
from tests.servers import serve_asgi

# a deeper search, off the default path: AIRLOCK_SCHEMATHESIS_EXAMPLES=500 AIRLOCK_SCHEMATHESIS_SECONDS=900
MAX_EXAMPLES = int(os.environ.get("AIRLOCK_SCHEMATHESIS_EXAMPLES", "20"))
BUDGET_SECONDS = float(os.environ.get("AIRLOCK_SCHEMATHESIS_SECONDS", "75"))
_started: list[float] = []


MAX_WAIT, MAX_BODY = 1, 65536


@pytest.fixture(scope="module")
def base_url(stack, seeded):
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_ATTEMPTS": "2",
           "HTTP_MAX_WAIT_SECONDS": str(MAX_WAIT), "HTTP_MAX_BODY_BYTES": str(MAX_BODY),
           "OUTCOMES_CONTAINER": f"outcomes-st{uuid.uuid4().hex[:6]}"}
    app = create_app(lambda: Services.from_env(env))
    with pytest.MonkeyPatch.context() as mp:  # the managed-identity credential reads os.environ
        stack.apply_env(mp)
        with serve_asgi(app) as url:
            yield url


# The document this server serves (test_document_states_what_the_server_enforces checks it is the same);
# built here rather than fetched so the test items exist before the server runs (schemathesis' lazy
# fixture loader does not work with pytest 9).
# A request the schema forbids may be refused as too large (413) before its content is read: an array past
# maxItems is longer than HTTP_MAX_BODY_BYTES here. schemathesis' default list of rejections lacks 413.
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})
schema = schemathesis.openapi.from_dict(document(max_wait=MAX_WAIT, max_body=MAX_BODY), config=CONFIG)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=MAX_EXAMPLES <= 20, database=None,
          suppress_health_check=list(HealthCheck))
@pytest.mark.timeout(BUDGET_SECONDS + 240)
def test_every_operation_keeps_the_contract(case, base_url):
    if not _started:
        _started.append(time.monotonic())
    if time.monotonic() - _started[0] > BUDGET_SECONDS:
        pytest.skip("schemathesis time budget spent")  # bounded: the remaining operations are covered next run
    # positive_data_acceptance: the server validates beyond the schema (allowed registries, existing pools)
    case.call_and_validate(base_url=base_url, excluded_checks=[ignored_auth, positive_data_acceptance],
                           timeout=30)


# -- the 500s and drifts schemathesis found, kept as plain regression tests ---------------------

@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()


@pytest.mark.parametrize("path", ["/api/imports", "/api/builds"])
@pytest.mark.parametrize("body, detail", [
    (b'[{"source": "\xff\xfe"}]', "body is not UTF-8"),
    (b"[" * 20_000 + b"]" * 20_000, "body is nested too deeply"),
    (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "body is nested too deeply"),
    (b'{"timeout": NaN}', "body is not valid JSON"),
    (b"", "a request body is required"),
    (b"  \n", "a request body is required"),
])
def test_bad_json_bodies_are_400(client, path, body, detail):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert problem(response, 400)["detail"] == detail


def test_empty_text_manifest_is_400(client):
    response = client.post("/api/imports", content=b"", headers={"content-type": "text/plain"})
    assert problem(response, 400)["errors"] == [{"message": "the body is empty", "field": "body"}]


@pytest.mark.parametrize("path", ["/api/runs/abc%0A", "/api/runs/-x", "/api/builds/abc%0A",
                                  "/api/runs/" + "a" * 101, "/api/runs/a%20b"])
def test_run_ids_outside_the_documented_pattern_are_400(client, path):
    assert problem(client.get(path), 400)["errors"][0]["field"] == "run_id"


def test_cancel_with_a_bad_run_id_is_400(client):
    assert problem(client.post("/api/builds/abc%0A/cancel"), 400)["errors"][0]["field"] == "run_id"


def test_405_says_what_is_allowed(client):
    response = client.delete("/api/imports")
    problem(response, 405)
    assert response.headers["allow"] == "POST"
    assert set(client.put("/api/runs/abc").headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_document_states_what_the_server_enforces(client):
    served = client.get("/api/openapi.json").json()
    assert served == document(max_wait=MAX_WAIT, max_body=MAX_BODY)  # what schemathesis tested
    document_ = served
    paths = document_["paths"]
    wait = next(p for p in paths["/api/imports"]["post"]["parameters"] if p["name"] == "wait")
    assert wait["schema"]["maximum"] == MAX_WAIT  # HTTP_MAX_WAIT_SECONDS of this server
    assert problem(client.post("/api/imports?wait=1.5", content=b"nginx\n"), 400)["errors"][0]["field"] == "wait"
    assert paths["/api/runs/{run_id}"]["get"]["parameters"][0]["schema"]["pattern"]
    assert all(op["requestBody"]["required"] for path in ("/api/imports", "/api/builds")
               for op in paths[path].values())
    assert document_["security"] == [{"functionKey": []}, {"functionKeyQuery": []}]
    assert document_["components"]["securitySchemes"]["functionKeyQuery"] == {
        "type": "apiKey", "in": "query", "name": "code"}
    assert all("security" not in op for item in paths.values() for op in item.values())  # openapi.json too


def test_every_operation_has_an_id_a_tag_and_its_problem_answers(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    operations = [(path, method, op) for path, item in paths.items() for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids)) == 9
    for path, method, op in operations:
        assert op["tags"], (path, method)
        answers = set(op["responses"])
        assert {"401", "403"} <= answers, (path, method)  # the key is checked on every route
        if "requestBody" in op:
            assert {"400", "413", "415"} <= answers, (path, method)


@pytest.mark.parametrize("path, content_type", [("/api/imports", "application/xml"), ("/api/builds", "text/plain"),
                                                ("/api/discover", "image/png")])
def test_a_content_type_an_operation_does_not_take_is_415(client, path, content_type):
    body = problem(client.post(path, content=b"x", headers={"content-type": content_type}), 415)
    assert body["errors"][0]["field"] == "content-type"


@pytest.mark.parametrize("path", ["/api/imports", "/api/builds", "/api/discover"])
def test_a_body_over_the_limit_is_413(client, path):
    big = b"[" + b'"x",' * (MAX_BODY // 4) + b'"x"]'
    assert problem(client.post(path, content=big, headers={"content-type": "application/json"}), 413)[
        "errors"] == [{"message": f"at most {MAX_BODY} bytes", "field": "body"}]
