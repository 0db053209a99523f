"""GET /api/runs through the registered HTTP function (real func.HttpRequest) against Azurite."""
from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import azure.functions as func
import pytest

from shared import entrypoints
from shared.handlers import records


@pytest.fixture
def outcomes(env):
    env.setenv("OUTCOMES_CONTAINER", f"api{uuid.uuid4().hex[:10]}")
    entrypoints.reset()
    return entrypoints.services()


def get(functions, url: str):
    request = func.HttpRequest(method="GET", url=f"http://localhost{url}", headers={}, body=b"")
    response = asyncio.run(functions["http_app_func"](request, None))
    return response.status_code, response.headers.get("content-type", ""), json.loads(response.get_body())


def test_runs_are_listed_newest_first_with_filters_and_pages(outcomes, functions):
    now = datetime.now(timezone.utc)
    ids = [(now - timedelta(hours=h)).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8] for h in (30, 5, 3, 1)]
    for i, rid in enumerate(ids):
        records.save(outcomes, {"run_id": rid, "kind": "sync", "trigger": "http",
                                "status": "failed" if i % 2 else "succeeded", "manifest": {"name": "m.txt"},
                                "summary": {"total": 2, "imported": 2 - i % 2, "failed": i % 2}})
    status, _, body = get(functions, "/api/runs?since=24h&limit=2")
    assert status == 200
    assert [r["run_id"] for r in body["runs"]] == [ids[3], ids[2]] and body["next"]
    status, _, rest = get(functions, f"/api/runs?since=24h&limit=2&next={body['next']}")
    assert status == 200 and [r["run_id"] for r in rest["runs"]] == [ids[1]] and rest["next"] is None
    status, _, failed = get(functions, "/api/runs?status=failed")
    assert [r["run_id"] for r in failed["runs"]] == [ids[3], ids[1]]
    assert failed["runs"][0]["failed"] == 1 and failed["runs"][0]["trigger"] == "http"


@pytest.mark.parametrize("query,field", [("status=broken", "status"), ("since=soon", "since"),
                                         ("limit=0", "limit"), ("limit=x", "limit"), ("next=%21%21", "next")])
def test_bad_queries_are_problem_json(outcomes, functions, query, field):
    status, content_type, body = get(functions, f"/api/runs?{query}")
    assert status == 400 and content_type.startswith("application/problem+json")
    assert body["errors"][0]["field"] == field


def test_openapi_documents_the_runs_listing(outcomes, functions):
    _, _, document = get(functions, "/api/openapi.json")
    operation = document["paths"]["/api/runs"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"status", "since", "limit", "next"}
    assert "400" in operation["responses"]
