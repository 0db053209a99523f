"""The invalid-UTF-8 flood of issue 11 through the registered HTTP function: refused at the entry
limit with a small answer (it once gave 524,288 errors and a 37.6 MB response)."""
from __future__ import annotations

import asyncio
import json

import azure.functions as func


def test_invalid_utf8_flood_is_refused_at_the_entry_limit_with_a_small_answer(env, functions):
    body = b"\xff\n" * 500_000  # 1 MB, under MANIFEST_MAX_BYTES
    request = func.HttpRequest(method="POST", url="http://localhost/api/imports?plan=true",
                               headers={"content-type": "text/plain"}, body=body)
    response = asyncio.run(functions["http_app_func"](request, None))
    assert response.status_code == 422
    assert len(response.get_body()) < 50_000
    problem = json.loads(response.get_body())
    messages = [e.get("message", "") for e in problem["errors"]]
    assert any("the limit is 5000" in m for m in messages)
    assert any("more problems not listed" in m for m in messages)
    assert len(problem["errors"]) <= 102
