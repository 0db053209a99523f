import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.core.builds import (
    BuildArgument,
    BuildSpec,
    Platform,
    check_build,
    parse_build,
    parse_platform,
    pointer,
    with_argument,
)
from shared.core.pools import ScaleDecision, decide_scale, run_status_is_terminal
from shared.errors import ValidationError
from tests.fixture_paths import AZURE_FIXTURES

REGISTRY_ID = ("/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/rg"
               "/providers/Microsoft.ContainerRegistry/registries/myacr")
GIT = "https://git.example.com/team/web.git#main"
SECRET = "hunter2-very-secret"
FIXTURES = Path(os.environ.get("AIRLOCK_AZURE_FIXTURES", AZURE_FIXTURES)) / "arm" / "schedule_run"


def docker(**fields) -> dict:
    body = {"source_location": GIT, "image_names": ["apps/web:{{.Run.ID}}"]}
    body.update(fields)
    return body


def problems_of(data, **kwargs):
    spec, problems = check_build(data, **kwargs)
    assert spec is None
    return problems


def only_problem(data, **kwargs):
    problems = problems_of(data, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- docker builds: accepted ----------------------------------------------------------------

def test_minimal_docker_build_gets_the_defaults():
    spec = parse_build(docker())
    assert spec == BuildSpec("docker", source_location=GIT, image_names=("apps/web:{{.Run.ID}}",))
    assert (spec.dockerfile, spec.timeout, spec.push, spec.no_cache) == ("Dockerfile", 3600, True, False)
    assert spec.platform == Platform("linux", "amd64", None)
    assert spec.agent_pool is None and spec.target is None and spec.arguments == ()


def test_full_docker_build():
    spec = parse_build({
        "kind": "docker", "source_location": "https://dev.azure.com/org/proj/_git/web#release/1.2:src/app",
        "dockerfile": "build/Dockerfile.prod", "image_names": ["apps/web:{{.Run.ID}}", "apps/web:latest"],
        "arguments": {"VERSION": "1.2", "TOKEN": {"value": SECRET, "secret": True},
                      "PLAIN": {"value": "x"}},
        "platform": "linux/arm64/v8", "target": "runtime", "timeout": 7200, "no_cache": True, "push": True,
        "agent_pool": "vnetpool"})
    assert spec.arguments == (BuildArgument("VERSION", "1.2"), BuildArgument("TOKEN", SECRET, True),
                              BuildArgument("PLAIN", "x"))
    assert str(spec.platform) == "linux/arm64/v8"
    assert spec.outputs == ("apps/web",)
    assert spec.secrets() == (SECRET,)


@pytest.mark.parametrize("location", [
    "https://github.com/Azure-Samples/acr-build-helloworld-node.git",
    "https://github.com/Azure-Samples/acr-build-helloworld-node.git#main",
    "https://git.example.com:8443/team/web.git#v1.2.3:docker/web",
    "https://dev.azure.com/org/project/_git/repo#main",
    "source/202611/abc.tar.gz",
    "source/20261122030159/8c1b5f8e-0f5e-4a8e-9a57-1d2f4b7b2a10.tar.gz",
])
def test_source_locations_accepted(location):
    assert parse_build(docker(source_location=location)).source_location == location


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", {"os": "Linux", "architecture": "amd64"}),
    ("linux/arm64/v8", {"os": "Linux", "architecture": "arm64", "variant": "v8"}),
    ("linux/arm/v7", {"os": "Linux", "architecture": "arm", "variant": "v7"}),
    ("windows/amd64", {"os": "Windows", "architecture": "amd64"}),
])
def test_platform_to_arm(text, expected):
    assert parse_platform(text).to_arm() == expected
    assert str(parse_platform(text)) == text


def test_null_means_not_given():
    spec = parse_build(docker(dockerfile=None, timeout=None, target=None, agent_pool=None, arguments=None,
                              platform=None, push=None, no_cache=None))
    assert spec == parse_build(docker())


def test_push_false_needs_no_image_names_and_has_no_outputs():
    spec = parse_build({"source_location": GIT, "push": False})
    assert spec.image_names == () and spec.outputs == ()


# --- docker builds: refused, one problem each -------------------------------------------------

@pytest.mark.parametrize("fields, where, fragment", [
    ({"source_location": None}, "/source_location", "required"),
    ({"source_location": 42}, "/source_location", "must be a string"),
    ({"source_location": "http://git.example.com/a.git"}, "/source_location", "https"),
    ({"source_location": "https://user:tok@git.example.com/a.git"}, "/source_location", "credentials"),
    ({"source_location": "https://acct.blob.core.windows.net/c/src.tar.gz?sig=abc"}, "/source_location",
     "query string"),
    ({"source_location": "https://git.example.com/team/web"}, "/source_location", "ending in '.git'"),
    ({"source_location": "https://git.example.com/a.git#"}, "/source_location", "no git ref"),
    ({"source_location": "https://git.example.com/a.git#main:../etc"}, "/source_location", "'..'"),
    ({"source_location": "https://git.example.com/a.git#bad..ref"}, "/source_location", "not a valid ref"),
    ({"source_location": "./web"}, "/source_location", "uploaded first"),
    ({"source_location": "source/../../etc/passwd.tar.gz"}, "/source_location", "build-source upload"),
    ({"source_location": "/abs/source/a.tar.gz"}, "/source_location", "build-source upload"),
    ({"source_location": "https://git.example.com/a b.git"}, "/source_location", "whitespace"),
    ({"dockerfile": "/etc/Dockerfile"}, "/dockerfile", "relative"),
    ({"dockerfile": "../Dockerfile"}, "/dockerfile", "'..'"),
    ({"dockerfile": ""}, "/dockerfile", "empty"),
    ({"dockerfile": 3}, "/dockerfile", "must be a string"),
    ({"image_names": "apps/web:1"}, "/image_names", "must be a list"),
    ({"image_names": []}, "/image_names", "at least one"),
    ({"image_names": ["apps/web:1", "apps/web"]}, "/image_names/1", "explicit tag"),
    ({"image_names": ["apps/web:1", "Apps/Web:1"]}, "/image_names/1", "lowercase"),
    ({"image_names": ["myacr.azurecr.io/apps/web:1"]}, "/image_names/0", "registry host"),
    ({"image_names": ["apps/web@sha256:" + "a" * 64]}, "/image_names/0", "digest"),
    ({"image_names": ["apps/{{.Run.ID}}:1"]}, "/image_names/0", "only the tag may use a template"),
    ({"image_names": ["apps/web:{{.Run.Date}}"]}, "/image_names/0", "unsupported template"),
    ({"image_names": ["apps/web:-{{.Run.ID}}"]}, "/image_names/0", "invalid tag"),
    ({"image_names": ["apps/web:1", "apps/web:1"]}, "/image_names/1", "listed twice"),
    ({"image_names": ["apps/web:1", 7]}, "/image_names/1", "must be a string"),
    ({"arguments": ["A=1"]}, "/arguments", "must be an object"),
    ({"arguments": {"1A": "x"}}, "/arguments/1A", "invalid argument name"),
    ({"arguments": {"A-B": "x"}}, "/arguments/A-B", "invalid argument name"),
    ({"arguments": {"A/B": "x"}}, "/arguments/A~1B", "invalid argument name"),
    ({"arguments": {"VERSION": 1.2}}, "/arguments/VERSION", "quote numbers"),
    ({"arguments": {"TOKEN": {"secret": True}}}, "/arguments/TOKEN", "has no value"),
    ({"arguments": {"TOKEN": {"value": 5, "secret": True}}}, "/arguments/TOKEN/value", "must be a string"),
    ({"arguments": {"TOKEN": {"value": "x", "secret": "yes"}}}, "/arguments/TOKEN/secret", "true or false"),
    ({"arguments": {"TOKEN": {"value": "x", "hidden": True}}}, "/arguments/TOKEN/hidden", "unknown field"),
    ({"platform": "linux"}, "/platform", "os/architecture"),
    ({"platform": "linux/amd64/v8"}, "/platform", "takes no variant"),
    ({"platform": "linux/arm64/v7"}, "/platform", "use v8"),
    ({"platform": "darwin/arm64"}, "/platform", "not supported"),
    ({"platform": "linux/riscv64"}, "/platform", "not supported"),
    ({"platform": "windows/arm64"}, "/platform", "amd64 only"),
    ({"platform": {"os": "linux"}}, "/platform", "must be a string"),
    ({"platform": "windows/amd64", "agent_pool": "vnetpool"}, "/agent_pool", "Linux only"),
    ({"target": "-bad"}, "/target", "invalid build stage"),
    ({"target": 1}, "/target", "must be a string"),
    ({"timeout": 60}, "/timeout", "300..28800"),
    ({"timeout": 28801}, "/timeout", "300..28800"),
    ({"timeout": "3600"}, "/timeout", "whole number"),
    ({"timeout": 600.5}, "/timeout", "whole number"),
    ({"timeout": True}, "/timeout", "whole number"),
    ({"no_cache": "false"}, "/no_cache", "true or false"),
    ({"push": 1}, "/push", "true or false"),
    ({"agent_pool": "ab"}, "/agent_pool", "3-20"),
    ({"agent_pool": "pool_with_underscore"}, "/agent_pool", "3-20"),
    ({"agent_pool": "a" * 21}, "/agent_pool", "3-20"),
    ({"agent_pool": 5}, "/agent_pool", "must be a string"),
    ({"colour": "red"}, "/colour", "unknown field 'colour'"),
    ({"kind": "quick"}, "/kind", "unknown kind"),
    ({"kind": 1}, "/kind", "must be a string"),
])
def test_docker_build_refused(fields, where, fragment):
    problem = only_problem(docker(**fields))
    assert problem.field == where
    assert fragment in problem.message
    assert problem.line is None


@pytest.mark.parametrize("body", [None, [], "docker", 3])
def test_request_must_be_an_object(body):
    problem = only_problem(body)
    assert problem.field == ""
    assert "must be an object" in problem.message


def test_every_problem_is_reported_and_nothing_is_accepted():
    with pytest.raises(ValidationError) as info:
        parse_build({"source_location": "ftp://x", "image_names": ["ok/x:1", "BAD:1", "ok/x:1"],
                     "arguments": {"1": "a", "B": 2}, "timeout": 5, "extra": True})
    fields = [p.field for p in info.value.problems]
    assert fields == ["/extra", "/arguments/1", "/arguments/B", "/source_location", "/image_names/1",
                      "/image_names/2", "/timeout"]
    assert info.value.message == "the build request has 7 problems"
    assert info.value.code == "ValidationError"


def test_pointer_escapes_per_rfc6901():
    assert pointer("arguments", "a/b~c") == "/arguments/a~1b~0c"
    assert pointer() == ""


# --- task runs -----------------------------------------------------------------------------

def test_task_run():
    spec = parse_build({"kind": "task", "task": "build-api", "agent_pool": "vnetpool",
                        "arguments": {"VERSION": "2", "TOKEN": {"value": SECRET, "secret": True}}})
    assert (spec.kind, spec.task, spec.agent_pool) == ("task", "build-api", "vnetpool")
    assert spec.outputs == ()
    assert spec.to_run_request("vnetpool", registry_id=REGISTRY_ID) == {
        "type": "TaskRunRequest",
        "taskId": REGISTRY_ID + "/tasks/build-api",
        "overrideTaskStepProperties": {"arguments": [
            {"name": "VERSION", "value": "2", "isSecret": False},
            {"name": "TOKEN", "value": SECRET, "isSecret": True}]},
        "agentPoolName": "vnetpool",
    }


def test_kind_is_inferred_from_a_task_field():
    assert parse_build({"task": "build-api"}).kind == "task"
    assert parse_build(docker()).kind == "docker"


@pytest.mark.parametrize("fields, where, fragment", [
    ({}, "/task", "required"),
    ({"task": "abc"}, "/task", "5-50"),
    ({"task": "has space"}, "/task", "5-50"),
    ({"task": 12345}, "/task", "must be a string"),
    ({"task": "build-api", "values": {"a": "b"}}, "/values", "not supported"),
    ({"task": "build-api", "timeout": 600}, "/timeout", "belongs to a docker build"),
    ({"task": "build-api", "image_names": ["a:1"]}, "/image_names", "belongs to a docker build"),
    ({"task": "build-api", "arguments": {"A": 1}}, "/arguments/A", "must be a string"),
    ({"task": "build-api", "agent_pool": "x"}, "/agent_pool", "3-20"),
])
def test_task_run_refused(fields, where, fragment):
    problem = only_problem({"kind": "task", **fields})
    assert (problem.field, fragment in problem.message) == (where, True)


def test_inferred_task_explains_why_docker_fields_are_refused():
    problem = only_problem({"task": "build-api", "platform": "linux/amd64"})
    assert "has a 'task' field" in problem.message


def test_forced_kind_must_agree_with_the_body():
    assert parse_build({"task": "build-api"}, kind="task").kind == "task"
    problem = only_problem({"kind": "task", "task": "build-api"}, kind="docker")
    assert (problem.field, "does not fit" in problem.message) == ("/kind", True)
    # forced docker: a 'task' field is just a stray docker field
    assert only_problem(docker(task="build-api"), kind="docker").field == "/task"


def test_task_run_request_needs_a_registry_id():
    spec = parse_build({"task": "build-api"})
    with pytest.raises(ValueError, match="registry_id"):
        spec.to_run_request("vnetpool")
    with pytest.raises(ValueError, match="registry_id"):
        spec.to_run_request("vnetpool", registry_id="myacr")


def test_task_id_trailing_slash_is_not_doubled():
    spec = parse_build({"task": "build-api"})
    assert spec.to_run_request(None, registry_id=REGISTRY_ID + "/")["taskId"] == REGISTRY_ID + "/tasks/build-api"


# --- the ARM body --------------------------------------------------------------------------

FULL = {"source_location": GIT, "dockerfile": "Dockerfile.prod", "image_names": ["apps/web:{{.Run.ID}}"],
        "arguments": {"A": "1", "TOKEN": {"value": SECRET, "secret": True}}, "platform": "linux/arm/v7",
        "target": "runtime", "timeout": 900, "no_cache": True, "push": False}


def test_docker_run_request_body():
    assert parse_build(FULL).to_run_request("vnetpool") == {
        "type": "DockerBuildRequest",
        "imageNames": ["apps/web:{{.Run.ID}}"],
        "isPushEnabled": False,
        "noCache": True,
        "dockerFilePath": "Dockerfile.prod",
        "arguments": [{"name": "A", "value": "1", "isSecret": False},
                      {"name": "TOKEN", "value": SECRET, "isSecret": True}],
        "platform": {"os": "Linux", "architecture": "arm", "variant": "v7"},
        "sourceLocation": GIT,
        "target": "runtime",
        "timeout": 900,
        "agentPoolName": "vnetpool",
    }


def test_no_pool_means_no_agent_pool_name():
    assert "agentPoolName" not in parse_build(docker()).to_run_request(None)
    assert "agentPoolName" not in parse_build(docker()).to_run_request("")
    assert "target" not in parse_build(docker()).to_run_request(None)


def test_bad_pool_argument_is_a_caller_bug():
    with pytest.raises(ValueError, match="agent pool name"):
        parse_build(docker()).to_run_request("no")


def test_windows_build_cannot_go_to_a_pool():
    spec = parse_build(docker(platform="windows/amd64"))
    assert spec.to_run_request(None)["platform"] == {"os": "Windows", "architecture": "amd64"}
    with pytest.raises(ValidationError) as info:
        spec.to_run_request("vnetpool")
    assert info.value.problems[0].field == "/platform"


def test_run_request_uses_the_rest_contract_field_names():
    fixture = FIXTURES / "RegistriesScheduleRun.DockerBuildRequest.2025-03-01-preview.json"
    if not fixture.exists():
        pytest.skip("ARM fixtures not available")
    contract = json.loads(fixture.read_text())["parameters"]["runRequest"]
    body = parse_build(FULL).to_run_request("vnetpool")
    # every field we send that the example also uses has the same shape
    for key in set(body) & set(contract):
        assert type(body[key]) is type(contract[key]), key
    assert set(contract["arguments"][0]) == set(body["arguments"][0])
    assert set(body) - set(contract) <= {"target", "timeout", "agentPoolName"}


def test_run_request_deserialises_into_the_sdk_models():
    models = pytest.importorskip("azure.mgmt.containerregistrytasks.models")
    request = models.DockerBuildRequest(parse_build(FULL).to_run_request("vnetpool"))
    assert request.image_names == ["apps/web:{{.Run.ID}}"]
    assert (request.agent_pool_name, request.docker_file_path, request.timeout) == ("vnetpool", "Dockerfile.prod", 900)
    assert (request.is_push_enabled, request.no_cache, request.target) == (False, True, "runtime")
    assert (request.platform.os, request.platform.architecture, request.platform.variant) == ("Linux", "arm", "v7")
    assert [(a.name, a.is_secret) for a in request.arguments] == [("A", False), ("TOKEN", True)]
    task = models.TaskRunRequest(parse_build({"task": "build-api", "arguments": {"A": "1"}})
                                 .to_run_request("vnetpool", registry_id=REGISTRY_ID))
    assert task.task_id.endswith("/tasks/build-api")
    assert task.override_task_step_properties.arguments[0].value == "1"


# --- secrets -------------------------------------------------------------------------------

def test_secret_never_in_redacted_str_or_repr():
    spec = parse_build(FULL)
    assert SECRET not in json.dumps(spec.redacted())
    assert SECRET not in str(spec)
    assert SECRET not in repr(spec)
    assert SECRET not in repr(spec.arguments) and SECRET not in str(spec.arguments[1])
    assert spec.redacted()["arguments"] == {"A": "1", "TOKEN": {"value": "***", "secret": True}}
    assert "'***'" in repr(spec)


def test_secret_never_in_error_messages():
    problems = problems_of(docker(arguments={"TOKEN": {"value": SECRET, "secret": "yes", "x": 1}},
                                  timeout=SECRET))
    assert problems and all(SECRET not in p.message for p in problems)


def test_redacted_validates_again():
    spec = parse_build(FULL)
    again = parse_build(spec.redacted())
    assert again.arguments[1] == BuildArgument("TOKEN", "***", True)
    assert again.redacted() == spec.redacted()
    task = parse_build({"task": "build-api", "agent_pool": "vnetpool", "arguments": {"A": "1"}})
    assert parse_build(task.redacted()) == task


def test_secrets_skips_empty_values():
    spec = parse_build(docker(arguments={"A": {"value": "", "secret": True}, "B": {"value": "b", "secret": True}}))
    assert spec.secrets() == ("b",)


# --- with_argument -------------------------------------------------------------------------

def test_with_argument_returns_a_copy_with_one_more_argument():
    spec = parse_build(docker(arguments={"A": "1"}))
    digest = "sha256:" + "ab" * 32
    newer = with_argument(spec, "BASE_IMAGE_DIGEST", digest)
    assert newer.arguments[-1] == BuildArgument("BASE_IMAGE_DIGEST", digest, False)
    assert spec.arguments == (BuildArgument("A", "1"),)
    assert newer.to_run_request(None)["arguments"][-1] == {"name": "BASE_IMAGE_DIGEST", "value": digest,
                                                           "isSecret": False}


@pytest.mark.parametrize("name, value", [("A", "again"), ("1BAD", "x"), ("OK", 5)])
def test_with_argument_refuses(name, value):
    with pytest.raises(ValueError):
        with_argument(parse_build(docker(arguments={"A": "1"})), name, value)


def test_spec_is_frozen_and_hashable():
    spec = parse_build(FULL)
    with pytest.raises(AttributeError):
        spec.timeout = 5  # type: ignore[misc]
    assert hash(spec) == hash(parse_build(FULL))


# --- run statuses --------------------------------------------------------------------------

@pytest.mark.parametrize("status, terminal", [
    ("Succeeded", True), ("Failed", True), ("Canceled", True), ("Error", True), ("Timeout", True),
    ("succeeded", True), ("Queued", False), ("Started", False), ("Running", False), (None, False), ("", False),
])
def test_run_status_is_terminal(status, terminal):
    assert run_status_is_terminal(status) is terminal


# --- pool scaling --------------------------------------------------------------------------

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def scale(count, queued, running, idle_minutes_ago=None, idle_minutes=30, scale_up_count=2):
    idle_since = None if idle_minutes_ago is None else NOW - timedelta(minutes=idle_minutes_ago)
    return decide_scale(pool="vnetpool", count=count, queued=queued, running=running, idle_since=idle_since,
                        now=NOW, idle_minutes=idle_minutes, scale_up_count=scale_up_count)


@pytest.mark.parametrize("count, queued, running, idle_ago, action, to_count, reason", [
    (0, 1, 0, None, "scale_up", 2, "1 queued run and no instances"),
    (0, 3, 0, 50, "scale_up", 2, "3 queued runs and no instances"),
    (0, 0, 0, None, "none", 0, "already at 0"),
    (0, 0, 0, 90, "none", 0, "already at 0"),
    (2, 0, 2, 90, "none", 2, "busy: 2 running"),
    (1, 4, 1, None, "none", 1, "busy: 4 queued, 1 running"),
    (1, 2, 0, None, "none", 1, "busy: 2 queued"),
    (1, 0, 0, 4, "none", 1, "idle for 4.0 of 30 min"),
    (1, 0, 0, None, "none", 1, "idle for 0.0 of 30 min"),
    (1, 0, 0, 30, "scale_down", 0, "idle for 30.0 of 30 min"),
    (3, 0, 0, 45.5, "scale_down", 0, "idle for 45.5 of 30 min"),
    (1, 0, 0, -5, "none", 1, "idle for 0.0 of 30 min"),  # idle_since in the future: clock skew
])
def test_scale_decision_table(count, queued, running, idle_ago, action, to_count, reason):
    decision = scale(count, queued, running, idle_ago)
    assert decision == ScaleDecision("vnetpool", action, count, to_count, reason, decision.idle_since)


def test_idle_since_to_remember():
    assert scale(1, 0, 0, None).idle_since == NOW  # just found idle: start counting now
    assert scale(1, 0, 0, 4).idle_since == NOW - timedelta(minutes=4)  # still idle: keep the start
    assert scale(1, 0, 1, 4).idle_since is None  # busy: forget it
    assert scale(1, 0, 0, 40).idle_since is None  # scaled down
    assert scale(0, 0, 0, None).idle_since is None


def test_zero_idle_minutes_scales_down_at_once():
    decision = scale(1, 0, 0, None, idle_minutes=0)
    assert (decision.action, decision.reason) == ("scale_down", "idle for 0.0 of 0 min")


@pytest.mark.parametrize("kwargs", [{"count": -1}, {"queued": -1}, {"running": -1}, {"scale_up_count": 0},
                                    {"idle_minutes": -1}])
def test_scale_refuses_nonsense(kwargs):
    args = dict(pool="p", count=1, queued=0, running=0, idle_since=None, now=NOW, idle_minutes=30, scale_up_count=1)
    args.update(kwargs)
    with pytest.raises(ValueError):
        decide_scale(**args)


def test_scale_decision_to_dict():
    assert scale(0, 1, 0).to_dict() == {"pool": "vnetpool", "action": "scale_up", "from_count": 0, "to_count": 2,
                                        "reason": "1 queued run and no instances", "idle_since": None}
