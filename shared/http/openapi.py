"""OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json.

It says exactly what the server does (tests/functions/test_api_contract.py runs schemathesis against
it; tests/functions/test_generated_client.py generates a client from it with openapi-python-client and
calls every operation): the limits come from the same settings the server enforces
(``HTTP_MAX_WAIT_SECONDS``, ``HTTP_MAX_BODY_BYTES``), the run id pattern from ``shared.core.ids``, and
every route, this document included, needs a function key (the Functions host checks it, or
``airlock serve`` with ``SERVE_API_KEY``; ``x-functions-key`` header or ``code`` query parameter).
Every operation has an ``operationId`` and a tag, and lists the problem answers it can give: 400, 401
(no key), 403 (a wrong key), 413 (a body over the limit) and 415 (a content type it does not take)
among them. ``info.version`` is the package's version (``app_version``).
"""
from __future__ import annotations

import functools

from ..core.runindex import MAX_LIMIT as RUNS_MAX_LIMIT
from ..core.runindex import STATUSES as RUN_STATUSES
from ..handlers.imports import MAX_JSON_ENTRIES
from ..core.ids import RUN_ID

PROBLEM = {"$ref": "#/components/schemas/Problem"}
RUN_ID_PARAMETER = {"name": "run_id", "in": "path", "required": True,
                    "description": "A run id: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    "schema": {"type": "string", "pattern": RUN_ID.pattern, "maxLength": 100}}




@functools.lru_cache(maxsize=1)
def app_version() -> str:
    """The version of acr-airlock this code is (``shared.version``: pyproject.toml in a checkout, the package's
    metadata when installed, else ``0+unknown``): the one number ``airlock --version`` prints too."""
    from ..version import version

    return version()


_PROBLEM_TEXT = {
    400: "Invalid request (errors name the field, as a JSON pointer, or the query parameter)",
    401: ("No key: every call needs a function key (x-functions-key header or ?code=). The Functions host answers "
          "it itself, with an empty body, to a missing or a wrong key; airlock serve (SERVE_API_KEY) with this "
          "problem and WWW-Authenticate"),
    403: "The key given is not this server's (airlock serve; the Functions host answers 401)",
    404: "Not found", 409: "Conflict",
    413: "The request body is larger than the server takes (HTTP_MAX_BODY_BYTES)",
    415: "The operation does not take this content type",
    422: "Invalid manifest (or lock): errors name the line",
    502: "Azure or a registry answered with an error", 503: "A dependency is unavailable"}
AUTH = (401, 403)  # every operation: the key is checked before anything else


def _problem_responses(*codes: int) -> dict:
    return {str(c): {"description": _PROBLEM_TEXT[c], "content": {"application/problem+json": {"schema": PROBLEM}}}
            for c in sorted({*codes, *AUTH})}


def _accepted(description: str, schema: str) -> dict:
    """A 202 answer: the body (a ``schema`` component) and the ``Location`` to poll."""
    return {"description": description, "headers": {"Location": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _query(name: str, schema: dict, description: str, **extra) -> dict:
    """A query parameter; a string one must not be empty (the server answers 400 to ``?name=``)."""
    if schema.get("type") == "string":
        schema = {"minLength": 1, **schema}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


def document(*, max_wait: float = 200.0, max_body: int = 1_048_576) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "acr-airlock", "version": app_version(),
                 "description": "Reviewed images into a private Azure Container Registry. "
                                "Every call needs a function key (x-functions-key header or ?code=)."},
        "servers": [{"url": "/"}],
        "tags": [{"name": "imports", "description": "Plan and queue imports of an images.txt"},
                 {"name": "runs", "description": "Runs and their outcome records"},
                 {"name": "builds", "description": "Image builds on ACR Task agent pools"},
                 {"name": "discover", "description": "Kubernetes YAML checked against the mirrored images"},
                 {"name": "service", "description": "Health and this document"}],
        "components": {
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"}},
            "schemas": {
                "Problem": {"type": "object", "required": ["title", "status"], "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}, "code": {"type": "string"},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "message": {"type": "string"}, "line": {"type": "integer"},
                        "field": {"type": "string"}}}}}},
                "ImportItem": {"type": "object", "required": ["source"], "additionalProperties": False,
                               "properties": {"source": {"type": "string", "examples": ["nginx:1.27"]},
                                              "target": {"type": ["string", "null"], "examples": ["library/nginx"],
                                                         "description": "null or left out: the source path"}}},
                "ManifestWithLock": {
                    "type": "object", "required": ["manifest"], "additionalProperties": False,
                    "description": "A manifest with its lock: the run imports the digests the lock holds",
                    "properties": {
                        "manifest": {"type": "string", "minLength": 1, "pattern": r"\S",
                                     "description": "images.txt content"},
                        "lock": {"type": ["string", "null"], "minLength": 1, "pattern": r"\S",
                                 "description": "images.lock content (airlock lock writes it); null or left out: "
                                                "unlocked (refused when LOCK_REQUIRED)"}}},
                "Queued": {"type": "object", "required": ["run_id", "status", "location"], "properties": {
                    "run_id": {"type": "string"}, "status": {"const": "queued"},
                    "location": {"type": "string", "description": "where the record is: /api/runs/{run_id}"}}},
                "DiscoverRequest": {"type": "object", "required": ["yaml"], "additionalProperties": False,
                                    "properties": {
                                        "yaml": {"type": "string"},
                                        "manifest": {"type": ["string", "null"], "description": "images.txt content"},
                                        "manifest_blob": {"type": ["string", "null"]},
                                        "name": {"type": ["string", "null"]}}},
                "ImageUse": {"type": "object", "properties": {
                    "image": {"type": "string"}, "reference": {"type": ["string", "null"]},
                    "file": {"type": "string"}, "document": {"type": "integer"}, "line": {"type": "integer"},
                    "column": {"type": "integer"}, "kind": {"type": "string"}, "name": {"type": "string"},
                    "container": {"type": "string"}, "field": {"type": "string"}, "error": {"type": "string"}}},
                "DiscoverResult": {"type": "object", "required": ["ok", "registry_host", "findings"], "properties": {
                    "ok": {"type": "boolean"},
                    "registry_host": {"type": ["string", "null"],
                                      "description": "null: no registry configured; not-private was skipped"},
                    "manifests": {"type": "array", "items": {"type": "string"}},
                    "images": {"type": "array", "items": {"type": "object"}},
                    "findings": {"type": "array", "items": {"allOf": [
                        {"$ref": "#/components/schemas/ImageUse"},
                        {"type": "object", "properties": {
                            "code": {"enum": ["not-mirrored", "not-private", "invalid-reference"]},
                            "message": {"type": "string"}, "suggestion": {"type": ["string", "null"]}}}]}},
                    "skipped": {"type": "array", "description": "checks not made, and for how many uses",
                                "items": {"type": "object", "properties": {
                                    "check": {"type": "string"}, "reason": {"type": "string"},
                                    "uses": {"type": "integer"}}}},
                    "policy_uses": {"type": "array",
                                    "description": "uses whose tag a tag policy admits (mirrored once a sync finds "
                                                   "it among the policy's newest N)",
                                    "items": {"allOf": [
                                        {"$ref": "#/components/schemas/ImageUse"},
                                        {"type": "object", "properties": {
                                            "policy_line": {"type": "integer"}, "policy": {"type": "string"},
                                            "target_repository": {"type": "string"}}}]}}}},
                "Health": {"type": "object", "required": ["status", "checks"], "properties": {
                    "status": {"enum": ["healthy", "unhealthy"]},
                    "version": {"type": "string", "description": "the acr-airlock version serving"},
                    "configuration": {"type": "array", "items": {"type": "string"}},
                    "checks": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "ok": {"type": "boolean"}, "detail": {"type": "string"},
                        "ms": {"type": "integer"}}}},
                    "worker": {"type": "object", "description": "airlock serve's in-process queue worker",
                               "properties": {"running": {"type": "boolean"}, "queue": {"type": "string"},
                                              "in_flight": {"type": "integer"}, "succeeded": {"type": "integer"},
                                              "failed": {"type": "integer"}, "poisoned": {"type": "integer"}}}}},
                "RunRecord": {"type": "object", "properties": {
                    "run_id": {"type": "string"}, "kind": {"enum": ["sync", "plan"]},
                    "trigger": {"enum": ["blob", "http", "timer", "cli", "event"]},
                    "status": {"enum": ["queued", "running", "succeeded", "failed", "abandoned", "invalid"]},
                    "manifest": {"type": "object"}, "summary": {"type": "object"},
                    "entries": {"type": "array", "items": {"type": "object"}},
                    "errors": {"type": "array", "items": {"type": "object"}}}},
                "RunIndexEntry": {"type": "object", "required": ["run_id", "created_at", "status"], "properties": {
                    "run_id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                    "status": {"type": ["string", "null"]}, "kind": {"type": ["string", "null"]},
                    "trigger": {"type": ["string", "null"]}, "manifest": {"type": ["string", "null"]},
                    "started_at": {"type": ["string", "null"]}, "finished_at": {"type": ["string", "null"]},
                    "total": {"type": ["integer", "null"]}, "imported": {"type": ["integer", "null"]},
                    "failed": {"type": ["integer", "null"]}}},
                "RunPage": {"type": "object", "required": ["runs", "next"], "properties": {
                    "runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunIndexEntry"}},
                    "next": {"type": ["string", "null"], "description": "pass as ?next= for the next page"}}},
                "BuildArgument": {"oneOf": [
                    {"type": "string"},
                    {"type": "object", "required": ["value"], "additionalProperties": False,
                     "properties": {"value": {"type": "string"}, "secret": {"type": "boolean", "default": False,
                                    "description": "never logged, recorded or echoed"}}}]},
                "BuildRequest": {"type": "object", "description": (
                    "A quick build (kind docker) or a run of an existing ACR task (kind task, or any body "
                    "with a task field). Fields of the other kind are errors."), "properties": {
                    "kind": {"enum": ["docker", "task"]},
                    "source_location": {"type": "string", "description": (
                        "https git URL (https://host/repo.git#ref:dir; no credentials, no query) or the "
                        "relative path a build-source upload returned (source/.../name.tar.gz)")},
                    "dockerfile": {"type": "string", "default": "Dockerfile"},
                    "image_names": {"type": "array", "items": {"type": "string"}, "examples": [
                        ["apps/web:{{.Run.ID}}", "apps/web:latest"]]},
                    "arguments": {"type": "object",
                                  "additionalProperties": {"$ref": "#/components/schemas/BuildArgument"}},
                    "platform": {"type": "string", "default": "linux/amd64"},
                    "target": {"type": "string"},
                    "timeout": {"type": "integer", "minimum": 300, "maximum": 28800, "default": 3600},
                    "no_cache": {"type": "boolean", "default": False},
                    "push": {"type": "boolean", "default": True},
                    "agent_pool": {"type": "string", "description": "default: BUILD_DEFAULT_AGENT_POOL"},
                    "task": {"type": "string"}}},
                "Build": {"type": "object", "properties": {
                    "run_id": {"type": "string"}, "kind": {"const": "build"},
                    "build_kind": {"enum": ["docker", "task", None]},
                    "trigger": {"enum": ["http", "cli", "rule", None]},
                    "origin": {"type": ["object", "null"], "description": "the rule and push behind a rule build"},
                    "status": {"type": "string", "examples": ["Queued", "Running", "Succeeded", "Failed", "Canceled"]},
                    "agent_pool": {"type": ["string", "null"]}, "task": {"type": ["string", "null"]},
                    "request": {"type": ["object", "null"], "description": "the request, secret values as ***"},
                    "scaling": {"type": ["object", "null"], "description": "the scale-up this build caused"},
                    "transitions": {"type": "array", "items": {"type": "object", "properties": {
                        "status": {"type": "string"}, "at": {"type": "string", "format": "date-time"}}}},
                    "created_at": {"type": ["string", "null"]}, "started_at": {"type": ["string", "null"]},
                    "finished_at": {"type": ["string", "null"]}, "queued_seconds": {"type": ["number", "null"]},
                    "duration_seconds": {"type": ["number", "null"]},
                    "output_images": {"type": "array", "items": {"type": "object", "properties": {
                        "registry": {"type": "string"}, "repository": {"type": "string"}, "tag": {"type": "string"},
                        "digest": {"type": "string"}}}},
                    "error": {"type": ["string", "null"]},
                    "cancel_requested_at": {"type": ["string", "null"]},
                    "log_url": {"type": ["string", "null"], "description": "read SAS URL of the run log"}}},
            }},
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": {
            "/api/imports": {"post": {
                "operationId": "importImages", "tags": ["imports"],
                "summary": "Import images (or plan an import with ?plan=true)",
                "description": ("The manifest is validated whole first (422 naming every line at fault). With a "
                                "lock (a JSON object with manifest and lock), the run imports the locked digests, "
                                "and a lock that does not match the manifest is a 422 naming its lines. A server "
                                "that runs no queue worker (airlock serve --worker none) answers 503 NoQueueWorker "
                                "to anything but ?plan=true."),
                "parameters": [
                    _query("plan", {"type": "boolean"}, "Return the plan only; imports nothing (pull-request checks)."),
                    _query("wait", {"type": "number", "minimum": 0, "maximum": max_wait},
                           "Seconds to wait for the run to finish before answering 202."),
                    _query("name", {"type": "string"},
                           "Name recorded for the manifest (default http); its lock is named after it (.lock).")],
                "requestBody": {"required": True, "description": f"at most {max_body} bytes", "content": {
                    "application/json": {"schema": {"oneOf": [
                        {"type": "array", "maxItems": MAX_JSON_ENTRIES,
                         "items": {"$ref": "#/components/schemas/ImportItem"}},
                        {"$ref": "#/components/schemas/ManifestWithLock"}]}},
                    "text/plain": {"schema": {"type": "string", "minLength": 1, "pattern": r"\S",
                                              "description": "images.txt content (UTF-8)"}}}},
                "responses": {
                    "200": {"description": "The plan, or the finished run",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRecord"}}}},
                    "202": _accepted("Run queued (durably); poll the Location", "Queued"),
                    **_problem_responses(400, 413, 415, 422, 502, 503)}}},
            "/api/runs": {"get": {
                "operationId": "listRuns", "tags": ["runs"],
                "summary": "Runs, newest first, from the run index (paged)",
                "description": ("Reads the run index (one small blob per run), never the records. Follow "
                                "'next' until it is null; a filtered page may hold fewer than 'limit' runs."),
                "parameters": [
                    _query("status", {"enum": list(RUN_STATUSES)}, "Only runs with this status."),
                    _query("since", {"type": "string"}, "a duration back from now (30m, 24h, 7d) or an ISO 8601 time",
                           examples={"day": {"value": "24h"}}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": RUNS_MAX_LIMIT, "default": 50},
                           "Runs per page."),
                    _query("next", {"type": "string"}, "the 'next' token of the previous page")],
                "responses": {"200": {"description": "A page of runs", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunPage"}}}}, **_problem_responses(400, 502, 503)}}},
            "/api/runs/{run_id}": {"get": {
                "operationId": "getRun", "tags": ["runs"],
                "summary": "A run's outcome record",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"200": {"description": "The record", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunRecord"}}}},
                    **_problem_responses(400, 404, 502, 503)}}},
            "/api/builds": {"post": {
                "operationId": "queueBuild", "tags": ["builds"],
                "summary": "Queue a build (quick build or task run) on an agent pool",
                "description": ("The pool (or task) must exist; a pool at count 0 is scaled up to "
                                "POOL_SCALE_UP_COUNT first. Nothing is queued when the request is refused."),
                "requestBody": {"required": True, "description": f"at most {max_body} bytes", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BuildRequest"}}}},
                "responses": {"202": _accepted("Queued; poll the Location", "Build"),
                              **_problem_responses(400, 413, 415, 502, 503)}}},
            "/api/builds/{run_id}": {"get": {
                "operationId": "getBuild", "tags": ["builds"],
                "summary": "Status, timings, output images and log link of a build",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"200": {"description": "The build", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Build"}}}}, **_problem_responses(400, 404, 502, 503)}}},
            "/api/builds/{run_id}/cancel": {"post": {
                "operationId": "cancelBuild", "tags": ["builds"],
                "summary": "Cancel a build (a finished build stays as it is)",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"202": _accepted("Cancel requested; the build as it is now", "Build"),
                              **_problem_responses(400, 404, 502, 503)}}},
            "/api/discover": {"post": {
                "operationId": "checkKubernetesYaml", "tags": ["discover"],
                "summary": "Check Kubernetes YAML (helm template / kustomize build output) against the mirrored images",
                "description": ("Reports every use of an image that no manifest mirrors (not-mirrored), that does "
                                "not point at the private registry (not-private), or that is not a reference "
                                "(invalid-reference), with file, document, line and column. Checked against the "
                                "manifest blob named by ?manifest=, an inline manifest, or every current manifest. "
                                "Without a configured registry the not-private check is skipped (listed in "
                                "'skipped', registry_host null)."),
                "parameters": [
                    _query("manifest", {"type": "string"},
                           "Blob name of the manifest in MANIFESTS_CONTAINER (default: all *.txt)."),
                    _query("name", {"type": "string"}, "File name shown in positions (default: body).")],
                "requestBody": {"required": True, "description": f"at most {max_body} bytes", "content": {
                    # any YAML stream: documents that are not Kubernetes objects hold no images
                    "application/yaml": {"schema": {"description": "multi-document YAML (Kubernetes objects)"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/DiscoverRequest"}}}},
                "responses": {
                    "200": {"description": "The check; ok is false when there are findings",
                            "content": {"application/json": {"schema": {
                                "$ref": "#/components/schemas/DiscoverResult"}}}},
                    **_problem_responses(400, 404, 413, 415, 422, 502, 503)}}},
            "/api/health": {"get": {
                "operationId": "getHealth", "tags": ["service"],
                "summary": "Configuration and reachability of storage, ARM and the registry",
                "responses": {"200": {"description": "Healthy", "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/Health"}}}},
                              "503": {"description": "Unhealthy: the checks say what failed", "content": {
                                  "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
                              **_problem_responses()}}},
            "/api/openapi.json": {"get": {
                "operationId": "getOpenApiDocument", "tags": ["service"],
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI document", "content": {
                    "application/json": {"schema": {"type": "object"}}}}, **_problem_responses()}}},
        },
    }
