"""OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json.

It says exactly what the server does (tests/functions/test_api_contract.py runs schemathesis against
it): the limits come from the same settings the server enforces (``HTTP_MAX_WAIT_SECONDS``,
``HTTP_MAX_BODY_BYTES``), the run id pattern from ``shared.handlers.records``, and every route,
this document included, needs a function key (the Functions host checks it; ``x-functions-key``
header or ``code`` query parameter).
"""
from __future__ import annotations

from ..core.runindex import MAX_LIMIT as RUNS_MAX_LIMIT
from ..core.runindex import STATUSES as RUN_STATUSES
from ..handlers.imports import MAX_JSON_ENTRIES
from ..core.ids import RUN_ID

PROBLEM = {"$ref": "#/components/schemas/Problem"}
RUN_ID_PARAMETER = {"name": "run_id", "in": "path", "required": True,
                    "description": "A run id: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    "schema": {"type": "string", "pattern": RUN_ID.pattern, "maxLength": 100}}


def _problem_responses(*codes: int) -> dict:
    text = {400: "Invalid request (errors name the field, as a JSON pointer)", 404: "Not found", 409: "Conflict",
            422: "Invalid manifest",
            502: "Azure or a registry answered with an error", 503: "A dependency is unavailable"}
    return {str(c): {"description": text[c], "content": {"application/problem+json": {"schema": PROBLEM}}}
            for c in codes}


def document(*, max_wait: float = 200.0, max_body: int = 1_048_576) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "acr-airlock", "version": "1.0.0",
                 "description": "Reviewed images into a private Azure Container Registry. "
                                "Every call needs a function key (x-functions-key header or ?code=)."},
        "servers": [{"url": "/"}],
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
                "summary": "Import images (or plan an import with ?plan=true)",
                "parameters": [
                    {"name": "plan", "in": "query", "schema": {"type": "boolean"},
                     "description": "Return the plan only; imports nothing (pull-request checks)."},
                    {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": max_wait},
                     "description": "Seconds to wait for the run to finish before answering 202."},
                    {"name": "name", "in": "query", "schema": {"type": "string"},
                     "description": "Name recorded for the manifest."}],
                "requestBody": {"required": True, "description": f"at most {max_body} bytes", "content": {
                    "application/json": {"schema": {"type": "array", "maxItems": MAX_JSON_ENTRIES,
                                                    "items": {"$ref": "#/components/schemas/ImportItem"}}},
                    "text/plain": {"schema": {"type": "string", "minLength": 1,
                                              "description": "images.txt content (UTF-8)"}}}},
                "responses": {
                    "200": {"description": "The plan, or the finished run",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRecord"}}}},
                    "202": {"description": "Run queued (durably); poll the Location",
                            "headers": {"Location": {"schema": {"type": "string"}}}},
                    **_problem_responses(400, 422, 502, 503)}}},
            "/api/runs": {"get": {
                "summary": "Runs, newest first, from the run index (paged)",
                "description": ("Reads the run index (one small blob per run), never the records. Follow "
                                "'next' until it is null; a filtered page may hold fewer than 'limit' runs."),
                "parameters": [
                    {"name": "status", "in": "query", "required": False, "schema": {"enum": list(RUN_STATUSES)}},
                    {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "a duration back from now (30m, 24h, 7d) or an ISO 8601 time",
                     "examples": {"day": {"value": "24h"}}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": RUNS_MAX_LIMIT, "default": 50}},
                    {"name": "next", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "the 'next' token of the previous page"}],
                "responses": {"200": {"description": "A page of runs", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunPage"}}}}, **_problem_responses(400)}}},
            "/api/runs/{run_id}": {"get": {
                "summary": "A run's outcome record",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"200": {"description": "The record", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunRecord"}}}}, **_problem_responses(400, 404)}}},
            "/api/builds": {"post": {
                "summary": "Queue a build (quick build or task run) on an agent pool",
                "description": ("The pool (or task) must exist; a pool at count 0 is scaled up to "
                                "POOL_SCALE_UP_COUNT first. Nothing is queued when the request is refused."),
                "requestBody": {"required": True, "description": f"at most {max_body} bytes", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BuildRequest"}}}},
                "responses": {"202": {"description": "Queued; poll the Location",
                                      "headers": {"Location": {"schema": {"type": "string"}}},
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Build"}}}},
                              **_problem_responses(400, 502, 503)}}},
            "/api/builds/{run_id}": {"get": {
                "summary": "Status, timings, output images and log link of a build",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"200": {"description": "The build", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Build"}}}}, **_problem_responses(400, 404, 502)}}},
            "/api/builds/{run_id}/cancel": {"post": {
                "summary": "Cancel a build (a finished build stays as it is)",
                "parameters": [RUN_ID_PARAMETER],
                "responses": {"202": {"description": "Cancel requested; the build as it is now",
                                      "headers": {"Location": {"schema": {"type": "string"}}},
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Build"}}}},
                              **_problem_responses(400, 404, 502)}}},
            "/api/discover": {"post": {
                "summary": "Check Kubernetes YAML (helm template / kustomize build output) against the mirrored images",
                "description": ("Reports every use of an image that no manifest mirrors (not-mirrored), that does "
                                "not point at the private registry (not-private), or that is not a reference "
                                "(invalid-reference), with file, document, line and column. Checked against the "
                                "manifest blob named by ?manifest=, an inline manifest, or every current manifest."),
                "parameters": [
                    {"name": "manifest", "in": "query", "schema": {"type": "string"},
                     "description": "Blob name of the manifest in MANIFESTS_CONTAINER (default: all *.txt)."},
                    {"name": "name", "in": "query", "schema": {"type": "string"},
                     "description": "File name shown in positions (default: body)."}],
                "requestBody": {"required": True, "content": {
                    # any YAML stream: documents that are not Kubernetes objects hold no images
                    "application/yaml": {"schema": {"description": "multi-document YAML (Kubernetes objects)"}},
                    "application/json": {"schema": {"type": "object", "required": ["yaml"],
                                                    "additionalProperties": False, "properties": {
                        "yaml": {"type": "string"},
                        "manifest": {"type": ["string", "null"], "description": "images.txt content"},
                        "manifest_blob": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]}}}}}},
                "responses": {
                    "200": {"description": "The check; ok is false when there are findings",
                            "content": {"application/json": {"schema": {"type": "object", "properties": {
                                "ok": {"type": "boolean"}, "registry_host": {"type": "string"},
                                "manifests": {"type": "array", "items": {"type": "string"}},
                                "images": {"type": "array", "items": {"type": "object"}},
                                "findings": {"type": "array", "items": {"type": "object", "properties": {
                                    "code": {"enum": ["not-mirrored", "not-private", "invalid-reference"]},
                                    "message": {"type": "string"}, "suggestion": {"type": ["string", "null"]},
                                    "image": {"type": "string"}, "file": {"type": "string"},
                                    "document": {"type": "integer"}, "line": {"type": "integer"},
                                    "column": {"type": "integer"}, "kind": {"type": "string"},
                                    "name": {"type": "string"}, "container": {"type": "string"},
                                    "field": {"type": "string"}}}}}}}}},
                    **_problem_responses(400, 404, 422, 502, 503)}}},
            "/api/health": {"get": {"summary": "Configuration and reachability of storage, ARM and the registry",
                                    "responses": {"200": {"description": "Healthy"},
                                                  "503": {"description": "Unhealthy"}}}},
            "/api/openapi.json": {"get": {"summary": "This document",
                                          "responses": {"200": {"description": "OpenAPI document", "content": {
                                              "application/json": {"schema": {"type": "object"}}}}}}},
        },
    }
