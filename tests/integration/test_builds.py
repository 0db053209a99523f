"""Builds, pool scaling and build rules against the local stand-in (the ACR emulator's tasks part,
Azurite for records, the backing registry for pushed images). Runs use a fast clock (0.2 s steps).
Each test makes its own agent pools (``itp-*``), so pool counts never leak between tests."""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from devstack import oci
from devstack.stack import DEFAULT_REGISTRY, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from shared.core.builds import parse_build
from shared.errors import ValidationError
from shared.handlers import builds as handler
from shared.handlers.rules import check_rule_file
from shared.handlers.triggers import on_registry_event
from shared.services import Services
from tests.agent_pools import create_pool

pytestmark = [pytest.mark.usefixtures("quick_clock", "clean_faults", "airlock_env"), pytest.mark.timeout(300)]

SECRET = "s3cr3t-token-5b9e2d"
GIT = "https://git.example.com/team/web.git#main"




def make_services(stack, **overrides) -> Services:
    env = {**stack.env, "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.5",
           "MANIFESTS_CONTAINER": f"manifests-{uuid.uuid4().hex[:8]}", **overrides}
    return Services.from_env(env)


@pytest.fixture
def services(stack):
    return make_services(stack)


@pytest.fixture
def prefix():
    return f"b{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool_at_zero(services, stack):
    return create_pool(services, stack, 0)


def docker_spec(prefix: str, pool: str, **extra):
    return parse_build({"source_location": GIT, "image_names": [f"{prefix}/web:{{{{.Run.ID}}}}",
                                                                f"{prefix}/web:latest"],
                        "agent_pool": pool, **extra})


def wait_status(services, run_id: str, wanted: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = handler.get_build(services, run_id, log_url=False)
        if view["status"] in wanted:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)


def backing_digest(stack, ref: str) -> str:
    return oci.sha256_digest(oci.inspect_raw(f"{stack.backing_host}/{ref}", tls_verify=False))


def newest_run_id(services) -> str:
    s = services.settings
    runs = list(services.clients.tasks_mgmt.runs.list(s.resource_group, s.registry_name, top=1))
    return runs[0].properties.run_id if runs else ""


def run_count(services) -> int:
    s = services.settings
    return sum(1 for _ in services.clients.tasks_mgmt.runs.list(s.resource_group, s.registry_name))


def stored(services, name: str) -> dict:
    return services.store.get_json(services.settings.outcomes_container, name)


def scaling_records(services, pool: str) -> list[dict]:
    names = services.store.list_names(services.settings.outcomes_container, "scaling/")
    return [stored(services, n) for n in names if n.endswith(f"-{pool}.json")]


# -- queue, follow, cancel -------------------------------------------------------------------------

def test_build_on_a_pool_at_zero_scales_it_up_and_succeeds(stack, services, pool_at_zero, prefix):
    record = handler.queue_build(services, docker_spec(prefix, pool_at_zero), trigger="http")
    run_id = record["run_id"]
    assert record["status"] == "Queued" and record["agent_pool"] == pool_at_zero
    assert record["scaling"]["action"] == "scale_up" and record["scaling"]["from_count"] == 0
    assert record["scaling"]["to_count"] == services.settings.pool_scale_up_count
    assert services.tasks.pool(pool_at_zero).count == 1
    [scaled] = scaling_records(services, pool_at_zero)
    assert scaled["trigger"] == "http" and scaled["run_id"] == run_id and scaled["action"] == "scale_up"

    logs: list[str] = []
    final = handler.follow_build(services, run_id, on_log=logs.append, poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded", final
    assert final["log_url"].startswith("http")
    statuses = [t["status"] for t in final["transitions"]]
    assert statuses[0] == "Queued" and statuses[-1] == "Succeeded"
    assert final["started_at"] and final["finished_at"] and final["duration_seconds"] >= 0
    images = {(i["repository"], i["tag"]): i["digest"] for i in final["output_images"]}
    assert set(images) == {(f"{prefix}/web", run_id), (f"{prefix}/web", "latest")}
    for (repository, tag), digest in images.items():
        assert backing_digest(stack, f"{repository}:{tag}") == digest
    text = "".join(logs)
    assert f"Run ID: {run_id} was successful" in text and "Downloading source code from" in text

    saved = stored(services, f"builds/{run_id}.json")
    assert saved["status"] == "Succeeded" and saved["trigger"] == "http" and "log_url" not in saved
    assert saved["request"]["image_names"] == [f"{prefix}/web:{{{{.Run.ID}}}}", f"{prefix}/web:latest"]
    assert saved["output_images"] == final["output_images"]


def test_a_pool_with_instances_is_not_scaled(services, stack, prefix):
    pool = create_pool(services, stack, 1)
    record = handler.queue_build(services, docker_spec(prefix, pool), trigger="cli")
    assert record["scaling"] is None and scaling_records(services, pool) == []
    assert wait_status(services, record["run_id"], {"Succeeded", "Failed"})["status"] == "Succeeded"


def test_a_failing_run_is_recorded_as_failed(stack, services, pool_at_zero, prefix):
    spec = docker_spec(prefix, pool_at_zero, arguments={"AIRLOCK_EMULATOR_FAIL": "1"})
    run_id = handler.queue_build(services, spec, trigger="http")["run_id"]
    final = handler.follow_build(services, run_id, poll_seconds=0.1, timeout=60)
    assert final["status"] == "Failed" and final["error"] and final["output_images"] == []
    assert stored(services, f"builds/{run_id}.json")["status"] == "Failed"
    with pytest.raises(oci.OciError):
        backing_digest(stack, f"{prefix}/web:latest")


def test_cancel_a_running_build(services, pool_at_zero, prefix):
    spec = docker_spec(prefix, pool_at_zero, dockerfile="hang.Dockerfile")
    run_id = handler.queue_build(services, spec, trigger="http")["run_id"]
    wait_status(services, run_id, {"Running"})
    cancelled = handler.cancel_build(services, run_id)
    assert cancelled["status"] == "Canceled" and cancelled["cancel_requested_at"]
    assert [t["status"] for t in cancelled["transitions"]][-2:] == ["Running", "Canceled"]
    assert stored(services, f"builds/{run_id}.json")["status"] == "Canceled"
    assert handler.cancel_build(services, run_id)["status"] == "Canceled"  # a finished run stays as it is


def test_unknown_run_and_bad_run_id(services):
    from shared.errors import NotFoundError

    with pytest.raises(NotFoundError):
        handler.get_build(services, "cbzzzzzz")
    with pytest.raises(NotFoundError):
        handler.cancel_build(services, "cbzzzzzz")
    with pytest.raises(ValidationError) as info:
        handler.get_build(services, "../etc")
    assert info.value.problems[0].field == "run_id"


# -- refused before anything is queued ---------------------------------------------------------------

@pytest.mark.parametrize("case", ["unknown pool", "no pool", "windows on a pool", "unknown task"])
def test_bad_requests_queue_nothing_and_scale_nothing(stack, services, pool_at_zero, prefix, case):
    if case == "unknown pool":
        spec, field = docker_spec(prefix, "no-such-pool"), "/agent_pool"
    elif case == "no pool":
        spec, field = parse_build({"source_location": GIT, "image_names": [f"{prefix}/web:v1"]}), "/agent_pool"
    elif case == "windows on a pool":  # the default pool is only known here, not when the request is parsed
        services = make_services(stack, BUILD_DEFAULT_AGENT_POOL=pool_at_zero)
        spec = parse_build({"source_location": GIT, "image_names": [f"{prefix}/web:v1"],
                            "platform": "windows/amd64"})
        field = "/platform"
    else:
        spec, field = parse_build({"task": f"no-such-task-{prefix}", "agent_pool": pool_at_zero}), "/task"
    before = newest_run_id(services)
    with pytest.raises(ValidationError) as info:
        handler.queue_build(services, spec, trigger="http")
    assert [p.field for p in info.value.problems] == [field]
    assert newest_run_id(services) == before
    assert services.tasks.pool(pool_at_zero).count == 0 and services.tasks.queued(pool_at_zero) == 0
    assert scaling_records(services, pool_at_zero) == []


def test_the_default_pool_is_used_when_the_request_names_none(stack, pool_at_zero, prefix):
    services = make_services(stack, BUILD_DEFAULT_AGENT_POOL=pool_at_zero)
    spec = parse_build({"source_location": GIT, "image_names": [f"{prefix}/web:v1"]})
    record = handler.queue_build(services, spec, trigger="cli")
    assert record["agent_pool"] == pool_at_zero and record["scaling"]["action"] == "scale_up"
    assert wait_status(services, record["run_id"], {"Succeeded", "Failed"})["status"] == "Succeeded"


# -- secrets -------------------------------------------------------------------------------------------

def test_secret_arguments_never_reach_records_logs_or_errors(stack, services, pool_at_zero, prefix, caplog):
    caplog.set_level(logging.DEBUG)
    spec = docker_spec(prefix, pool_at_zero, arguments={"TOKEN": {"value": SECRET, "secret": True},
                                                        "PLAIN": "visible"})
    run_id = handler.queue_build(services, spec, trigger="http")["run_id"]
    logs: list[str] = []
    final = handler.follow_build(services, run_id, on_log=logs.append, poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded"
    saved = services.store.get_bytes(services.settings.outcomes_container, f"builds/{run_id}.json").decode()
    assert SECRET not in saved and json.loads(saved)["request"]["arguments"]["TOKEN"] == {"value": "***",
                                                                                            "secret": True}
    assert SECRET not in json.dumps(final)
    assert "TOKEN=*****" in "".join(logs) and SECRET not in "".join(logs)
    # the log SAS is a credential too: not in anything logged at INFO or above (the app's log level;
    # urllib3 writes URLs at DEBUG)
    signature = parse_qs(urlsplit(final["log_url"]).query)["sig"][0]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert signature not in logged and not re.search(r"sig=(?!REDACTED)", logged)

    failing = docker_spec(prefix, "no-such-pool", arguments={"TOKEN": {"value": SECRET, "secret": True}})
    with pytest.raises(ValidationError) as info:
        handler.queue_build(services, failing, trigger="http")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.problems)
    assert SECRET not in caplog.text


# -- task runs -------------------------------------------------------------------------------------------

def create_task(services, stack, pool: str, image: str) -> str:
    s = services.settings
    name = f"itask-{uuid.uuid4().hex[:8]}"
    body = {"location": stack.location, "properties": {
        "platform": {"os": "Linux"}, "agentPoolName": pool,
        "step": {"type": "Docker", "dockerFilePath": "Dockerfile", "imageNames": [image],
                 "arguments": [{"name": "A", "value": "1", "isSecret": False}]}}}
    services.clients.tasks_mgmt.tasks.create(s.resource_group, s.registry_name, name, body)
    return name


def test_task_run_uses_the_tasks_pool_and_overrides(stack, services, pool_at_zero, prefix):
    task = create_task(services, stack, pool_at_zero, f"{prefix}/api:{{{{.Run.ID}}}}")
    record = handler.queue_build(services, parse_build({"task": task, "arguments": {"A": "2"}}), trigger="cli")
    assert record["agent_pool"] == pool_at_zero and record["scaling"]["action"] == "scale_up"
    assert record["outputs"] == [f"{prefix}/api"]
    logs: list[str] = []
    final = handler.follow_build(services, record["run_id"], on_log=logs.append, poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded" and "A=2" in "".join(logs)
    [image] = final["output_images"]
    assert image["repository"] == f"{prefix}/api" and image["tag"] == record["run_id"]


# -- pools and the idle timer ------------------------------------------------------------------------------

def decision_for(decisions: list[dict], pool: str) -> dict:
    return next(d for d in decisions if d["pool"] == pool)


def test_idle_timer_scales_a_pool_to_zero_after_the_idle_time(stack, services):
    pool = create_pool(services, stack, 1)
    now = datetime.now(timezone.utc)
    first = decision_for(handler.scale_idle_pools(services, now=now), pool)
    assert first["action"] == "none" and first["reason"].startswith("idle for 0.0 of 30 min")
    later = decision_for(handler.scale_idle_pools(services, now=now + timedelta(minutes=10)), pool)
    assert later["action"] == "none" and later["reason"].startswith("idle for 10.0")
    last = decision_for(handler.scale_idle_pools(services, now=now + timedelta(minutes=31)), pool)
    assert last["action"] == "scale_down" and last["to_count"] == 0
    assert services.tasks.pool(pool).count == 0
    [recorded] = scaling_records(services, pool)
    assert recorded["trigger"] == "timer" and recorded["action"] == "scale_down" and "idle for 31.0" in \
        recorded["reason"]
    status = handler.pool_status(services, pool)[0]
    assert status["count"] == 0 and status["last_decision"]["action"] == "scale_down"


def test_idle_timer_with_zero_idle_minutes_and_a_busy_pool(stack, prefix):
    services = make_services(stack, POOL_IDLE_MINUTES="0")
    idle, busy = create_pool(services, stack, 1), create_pool(services, stack, 1)
    spec = docker_spec(prefix, busy, dockerfile="hang.Dockerfile")
    run_id = handler.queue_build(services, spec, trigger="cli")["run_id"]
    wait_status(services, run_id, {"Running"})
    decisions = handler.scale_idle_pools(services)
    assert decision_for(decisions, idle)["action"] == "scale_down"
    assert decision_for(decisions, busy)["action"] == "none"
    assert decision_for(decisions, busy)["reason"] == "busy: 1 running"
    assert services.tasks.pool(idle).count == 0 and services.tasks.pool(busy).count == 1
    handler.cancel_build(services, run_id)


def test_idle_timer_scales_up_a_pool_at_zero_with_queued_runs(stack, services):
    pool = create_pool(services, stack, 0)
    s = services.settings
    body = {"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile", "platform": {"os": "Linux"},
            "agentPoolName": pool}  # queued by someone else, straight through ARM
    run = services.clients.tasks_mgmt.registries.schedule_run(s.resource_group, s.registry_name, body)
    decision = decision_for(handler.scale_idle_pools(services), pool)
    assert decision["action"] == "scale_up" and decision["to_count"] == 1
    assert wait_status(services, run.properties.run_id, {"Succeeded"})["trigger"] is None


def test_pool_status_and_manual_scale(stack, services):
    pool = create_pool(services, stack, 0)
    [status] = handler.pool_status(services, pool)
    assert status == {**status, "name": pool, "count": 0, "queued": 0, "running": 0}
    scaled = handler.scale_pool(services, pool, 2, trigger="cli")
    assert scaled["count"] == 2
    [recorded] = scaling_records(services, pool)
    assert (recorded["action"], recorded["from_count"], recorded["to_count"], recorded["trigger"]) == \
        ("scale_up", 0, 2, "cli")
    assert pool in {p["name"] for p in handler.pool_status(services)}
    with pytest.raises(ValidationError):
        handler.scale_pool(services, pool, -1)
    from shared.errors import NotFoundError

    with pytest.raises(NotFoundError):
        handler.scale_pool(services, "no-such-pool", 1)


# -- build rules -----------------------------------------------------------------------------------------------

def upload_rules(services, text: str) -> None:
    s = services.settings
    services.store.put_bytes(s.manifests_container, s.build_rules_blob, text.encode())


def web_rule(prefix: str, pool: str, *, name: str = "web-on-base", when: str = "base/*") -> str:
    return (f"  - name: {name}\n"
            f"    when:\n"
            f"      repository: \"{prefix}/{when}\"\n"
            f"      tag: \"1.*\"\n"
            f"    build:\n"
            f"      source_location: {GIT}\n"
            f"      image_names: [\"{prefix}/web:{{{{.Run.ID}}}}\"]\n"
            f"      agent_pool: {pool}\n")


# the stand-in's ACR (events of another registry are ignored)
REGISTRY_ID = (f"/subscriptions/{DEFAULT_SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}"
               f"/providers/Microsoft.ContainerRegistry/registries/{DEFAULT_REGISTRY}")


def pushed(repository: str, tag, digest: str, event_id=None) -> dict:
    target = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "repository": repository,
              "size": 100}
    if tag:
        target["tag"] = tag
    return {"id": event_id or str(uuid.uuid4()), "topic": REGISTRY_ID,
            "subject": f"{repository}:{tag}", "eventType": "Microsoft.ContainerRegistry.ImagePushed",
            "eventTime": datetime.now(timezone.utc).isoformat(), "dataVersion": "1.0",
            "data": {"target": target}}


def fake_digest() -> str:
    return "sha256:" + uuid.uuid4().hex * 2


def test_a_matching_push_queues_one_build_with_the_digest(stack, services, pool_at_zero, prefix):
    upload_rules(services, "rules:\n" + web_rule(prefix, pool_at_zero))
    digest = fake_digest()
    record = on_registry_event(services, pushed(f"{prefix}/base/nginx", "1.27", digest))
    [action] = record["actions"]
    assert action["action"] == "queued" and action["rule"] == "web-on-base" and action["scaled"] is True
    build = stored(services, f"builds/{action['run_id']}.json")
    assert build["trigger"] == "rule" and build["origin"]["digest"] == digest
    assert build["origin"]["chain"] == ["web-on-base"] and build["origin"]["event_id"] == record["event"]["id"]
    assert build["request"]["arguments"]["BASE_IMAGE_DIGEST"] == digest
    final = handler.follow_build(services, action["run_id"], poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded"

    for event in (pushed(f"{prefix}/other", "1.27", fake_digest()),       # repository does not match
                  pushed(f"{prefix}/base/nginx", "2.0", fake_digest()),   # tag does not match
                  pushed(f"{prefix}/base/nginx", None, fake_digest())):   # untagged: a platform manifest
        assert all(a["action"] == "skipped" for a in on_registry_event(services, event)["actions"])


def test_a_redelivered_event_and_a_burst_queue_one_build_per_rule(services, pool_at_zero, prefix):
    rules = "rules:\n" + web_rule(prefix, pool_at_zero) + web_rule(prefix, pool_at_zero, name="second")
    upload_rules(services, rules)
    digest = fake_digest()
    event = pushed(f"{prefix}/base/nginx", "1.27", digest)
    first = on_registry_event(services, event)
    assert [a["action"] for a in first["actions"]] == ["queued", "queued"]
    assert on_registry_event(services, event)["status"] == "duplicate"
    burst = [pushed(f"{prefix}/base/nginx", tag, digest) for tag in ("1.27.3", "1.28", "1.27")]
    for other in burst:
        actions = on_registry_event(services, other)["actions"]
        assert [a["action"] for a in actions] == ["duplicate", "duplicate"]
        assert [a["run_id"] for a in actions] == [a["run_id"] for a in first["actions"]]
    for action in first["actions"]:
        handler.cancel_build(services, action["run_id"])


CYCLIC = """\
rules:
  - name: a
    when: {{repository: "{p}/one"}}
    build:
      source_location: {git}
      image_names: ["{p}/two:{{{{.Run.ID}}}}"]
      agent_pool: {pool}
  - name: b
    when: {{repository: "{p}/two"}}
    build:
      source_location: {git}
      image_names: ["{p}/one:latest"]
      agent_pool: {pool}
"""


def test_a_cyclic_rule_file_is_rejected_with_lines_and_queues_nothing(services, pool_at_zero, prefix):
    text = CYCLIC.format(p=prefix, git=GIT, pool=pool_at_zero)
    checked = check_rule_file(services, services.settings.build_rules_blob, text.encode())
    assert checked["status"] == "invalid"
    [error] = checked["errors"]
    assert error["line"] == 2 and "cycle: a -> b -> a" in error["message"]
    assert check_rule_file(services, services.settings.build_rules_blob, text.encode()) is None  # once per content

    upload_rules(services, text)
    before = newest_run_id(services)
    record = on_registry_event(services, pushed(f"{prefix}/one", "1.0", fake_digest()))
    assert record["actions"] == [] and record["rule_errors"][0]["line"] == 2
    assert newest_run_id(services) == before and services.tasks.pool(pool_at_zero).count == 0


def test_a_rule_with_an_unknown_pool_fails_and_can_fire_again(services, prefix):
    upload_rules(services, "rules:\n" + web_rule(prefix, "no-such-pool"))
    digest = fake_digest()
    [action] = on_registry_event(services, pushed(f"{prefix}/base/x", "1.0", digest))["actions"]
    assert action["action"] == "failed" and action["error"]["code"] == "AgentPoolNotFound"
    [again] = on_registry_event(services, pushed(f"{prefix}/base/x", "1.1", digest))["actions"]
    assert again["action"] == "failed"  # not "duplicate": the failed attempt left no marker


def test_a_runtime_cycle_is_cut_and_recorded(stack, services, pool_at_zero, prefix):
    """A task rule whose task (not its declared outputs) pushes what the rule watches: the static
    check cannot see it; the build's own push inherits the rule chain and the rule does not fire again."""
    task = create_task(services, stack, pool_at_zero, f"{prefix}/loop:{{{{.Run.ID}}}}")
    upload_rules(services, f"rules:\n  - name: loop\n    when: {{repository: \"{prefix}/loop\"}}\n"
                           f"    task: {{task: {task}}}\n")
    [action] = on_registry_event(services, pushed(f"{prefix}/loop", "seed", fake_digest()))["actions"]
    assert action["action"] == "queued"
    final = handler.follow_build(services, action["run_id"], poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded"
    [image] = final["output_images"]
    event = stack.emulator.events.wait_for(
        lambda e: e["eventType"].endswith("ImagePushed") and e["data"]["target"].get("repository") == image[
            "repository"] and e["data"]["target"].get("tag") == image["tag"], timeout=20)
    record = on_registry_event(services, event)
    [cut] = record["actions"]
    assert cut["action"] == "cut" and cut["rule"] == "loop" and cut["chain"] == ["loop"]
    assert "already produced this image" in cut["reason"]
    stored_record = next(stored(services, n) for n in services.store.list_names(
        services.settings.outcomes_container, "events/") if event["id"] in n)
    assert stored_record["actions"] == record["actions"]

    # the same repository pushed by someone else later (another digest) fires the rule again
    [fresh] = on_registry_event(services, pushed(f"{prefix}/loop", "manual", fake_digest()))["actions"]
    assert fresh["action"] == "queued"
    handler.cancel_build(services, fresh["run_id"])


# -- ARM failures while queueing ---------------------------------------------------------------------------------

def test_schedule_run_throttled_is_retried_and_queues_once(stack, services, pool_at_zero, prefix):
    stack.add_fault({"kind": "status", "method": "POST", "path": "/scheduleRun$", "status": 429, "times": 1})
    before = run_count(services)
    record = handler.queue_build(services, docker_spec(prefix, pool_at_zero), trigger="http")
    assert run_count(services) == before + 1  # retried after the 429, and exactly one run queued
    handler.cancel_build(services, record["run_id"])


def test_schedule_run_server_error_is_not_retried(stack, services, pool_at_zero, prefix):
    """A 500 may come after ARM queued the run: reported, not retried (a retry could queue it twice)."""
    from shared.errors import TransientError, UpstreamError

    stack.add_fault({"kind": "status", "method": "POST", "path": "/scheduleRun$", "status": 500, "times": 1})
    with pytest.raises(UpstreamError) as info:
        handler.queue_build(services, docker_spec(prefix, pool_at_zero), trigger="http")
    assert not isinstance(info.value, TransientError)
    assert "may or may not have been queued" in info.value.message
    assert handler.queue_build(services, docker_spec(prefix, pool_at_zero), trigger="http")["status"] == "Queued"


def test_a_transient_failure_during_a_rule_lets_event_grid_deliver_again(stack, services, pool_at_zero, prefix):
    from shared.errors import TransientError

    upload_rules(services, "rules:\n" + web_rule(prefix, pool_at_zero))
    event = pushed(f"{prefix}/base/nginx", "1.27", fake_digest())
    stack.add_fault({"kind": "status", "method": "POST", "path": "/scheduleRun$", "status": 503, "times": 10})
    with pytest.raises(TransientError):
        on_registry_event(services, event)
    s = services.settings
    assert [n for n in services.store.list_names(s.outcomes_container, "events/") if event["id"] in n] == []
    stack.clear_faults()
    [action] = on_registry_event(services, event)["actions"]  # the redelivery
    assert action["action"] == "queued"
    handler.cancel_build(services, action["run_id"])


# -- the chain follows what builds pushed (issue 20, #15) ------------------------------------------------------

def create_encoded_task(services, stack, pool: str, image: str, **values: str) -> str:
    """A multi-step task (EncodedTask): its steps, and so what it pushes, are not visible to the app."""
    import base64

    s = services.settings
    name = f"itask-{uuid.uuid4().hex[:8]}"
    yaml_text = f"version: v1.1.0\nsteps:\n  - build: -t $Registry/{image} .\n  - push: [\"$Registry/{image}\"]\n"
    body = {"location": stack.location, "properties": {
        "platform": {"os": "Linux"}, "agentPoolName": pool,
        "step": {"type": "EncodedTask", "encodedTaskContent": base64.b64encode(yaml_text.encode()).decode(),
                 "values": [{"name": k, "value": v, "isSecret": False} for k, v in values.items()]}}}
    services.clients.tasks_mgmt.tasks.create(s.resource_group, s.registry_name, name, body)
    return name


def loop_rule(prefix: str, task: str) -> str:
    """The field report's rule: it watches library/nginx 1.27* and declares only another repository."""
    return (f"rules:\n  - name: nginx-loop\n    when: {{repository: \"{prefix}/nginx\", tag: \"1.27*\"}}\n"
            f"    task: {{task: {task}}}\n    outputs: [\"{prefix}/other\"]\n")


def push_event_of(stack, image: dict) -> dict:
    """The emulator's ImagePushed event for an output image of a run."""
    return stack.emulator.events.wait_for(
        lambda e: e["eventType"].endswith("ImagePushed") and e["data"]["target"].get("repository") == image[
            "repository"] and e["data"]["target"].get("tag") == image["tag"]
        and e["data"]["target"].get("digest") == image["digest"], timeout=30)


def rule_builds_of(services, rule: str, prefix: str) -> list[str]:
    """The rule's builds fired by pushes under ``prefix`` (the outcomes container is shared by tests)."""
    names = services.store.list_names(services.settings.outcomes_container, "builds/")
    origins = [(n, stored(services, n).get("origin") or {}) for n in names]
    return [n for n, o in origins if o.get("rule") == rule and o.get("repository", "").startswith(f"{prefix}/")]


def test_a_task_pushing_a_repository_it_does_not_declare_does_not_rebuild_itself(stack, services, pool_at_zero,
                                                                                 prefix):
    """The field defect: a task pushing <p>/nginx:1.27-loop under a rule that watches <p>/nginx 1.27* and
    declares only <p>/other rebuilt itself until cancelled. The chain now follows the run's output images."""
    task = create_encoded_task(services, stack, pool_at_zero, f"{prefix}/nginx:1.27-loop")
    upload_rules(services, loop_rule(prefix, task))
    [first] = on_registry_event(services, pushed(f"{prefix}/nginx", "1.27", fake_digest()))["actions"]
    assert first["action"] == "queued" and first["chain"] == ["nginx-loop"]
    final = handler.follow_build(services, first["run_id"], poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded"
    [image] = final["output_images"]
    assert (image["repository"], image["tag"]) == (f"{prefix}/nginx", "1.27-loop")  # not what the rule declared

    event = push_event_of(stack, image)
    record = on_registry_event(services, event)
    [cut] = record["actions"]
    assert cut["action"] == "cut" and cut["rule"] == "nginx-loop" and cut["chain"] == ["nginx-loop"]
    assert cut["pushed_by"] == first["run_id"]
    assert "nginx-loop already produced this image" in cut["reason"] and first["run_id"] in cut["reason"]
    saved = next(stored(services, n) for n in services.store.list_names(services.settings.outcomes_container,
                                                                        "events/") if event["id"] in n)
    assert saved["actions"] == record["actions"]  # recorded, with the reason
    assert rule_builds_of(services, "nginx-loop", prefix) == [f"builds/{first['run_id']}.json"]  # no second build
    assert stored(services, f"builds/{first['run_id']}.json")["outputs_known"] is False  # its steps are not visible
    # what the build pushed is indexed by digest; the build is no longer tracked as running
    outputs = stored(services, f"rule-outputs/{image['digest'].replace(':', '-')}.json")
    assert outputs["run_id"] == first["run_id"] and outputs["chain"] == ["nginx-loop"]
    assert services.store.get_json(services.settings.outcomes_container, f"rule-builds/{first['run_id']}.json") is None
    # the same event delivered again (Event Grid retries) is a duplicate; another digest pushed by someone else fires
    assert on_registry_event(services, event)["status"] == "duplicate"
    [fresh] = on_registry_event(services, pushed(f"{prefix}/nginx", "1.27.1", fake_digest()))["actions"]
    assert fresh["action"] == "queued" and fresh["chain"] == ["nginx-loop"]
    handler.cancel_build(services, fresh["run_id"])


DEPTH = """\
rules:
  - name: one
    when: {{repository: "{p}/base"}}
    build: {{source_location: "{git}", image_names: ["{p}/one:v1"], agent_pool: {pool}}}
  - name: two
    when: {{repository: "{p}/one"}}
    build: {{source_location: "{git}", image_names: ["{p}/two:v1"], agent_pool: {pool}}}
  - name: three
    when: {{repository: "{p}/two"}}
    build: {{source_location: "{git}", image_names: ["{p}/three:v1"], agent_pool: {pool}}}
"""


def test_a_chain_stops_at_the_configured_depth(stack, prefix):
    services = make_services(stack, BUILD_RULE_MAX_CHAIN="2")
    pool = create_pool(services, stack, 1)
    upload_rules(services, DEPTH.format(p=prefix, git=GIT, pool=pool))
    [one] = on_registry_event(services, pushed(f"{prefix}/base", "v1", fake_digest()))["actions"]
    assert one["action"] == "queued" and one["chain"] == ["one"]
    [image] = handler.follow_build(services, one["run_id"], poll_seconds=0.1, timeout=60)["output_images"]
    [two] = on_registry_event(services, push_event_of(stack, image))["actions"]
    assert two["action"] == "queued" and two["chain"] == ["one", "two"]
    [image] = handler.follow_build(services, two["run_id"], poll_seconds=0.1, timeout=60)["output_images"]
    [three] = on_registry_event(services, push_event_of(stack, image))["actions"]
    assert three["action"] == "cut" and three["rule"] == "three" and three["chain"] == ["one", "two"]
    assert three["reason"].startswith("the chain one -> two reached its limit of 2 rules")
    assert three["pushed_by"] == two["run_id"]
    assert rule_builds_of(services, "three", prefix) == []
    assert stored(services, f"builds/{two['run_id']}.json")["origin"]["pushed_by"] == one["run_id"]


def test_a_push_whose_build_is_still_running_waits_for_the_build_to_end(stack, services, prefix, monkeypatch):
    """ACR lists a run's output images when it ends; a push event may come first. The event then waits for
    the build (BUILD_RULE_PRODUCER_WAIT_SECONDS) or, past that, fails so that Event Grid delivers it again."""
    from shared.errors import TransientError
    from shared.handlers import rules as rules_handler
    from tests.agent_pools import STEP

    pool = create_pool(services, stack, 1)
    # the run pushes, then runs 1000 more steps (200 s): it ends when this test speeds its clock up
    task = create_encoded_task(services, stack, pool, f"{prefix}/nginx:1.27-loop",
                               AIRLOCK_EMULATOR_STEPS_AFTER_PUSH="1000")
    upload_rules(services, loop_rule(prefix, task))
    [first] = on_registry_event(services, pushed(f"{prefix}/nginx", "1.27", fake_digest()))["actions"]
    event = stack.emulator.events.wait_for(
        lambda e: e["eventType"].endswith("ImagePushed") and e["data"]["target"].get("repository") == f"{prefix}/nginx"
        and e["data"]["target"].get("tag") == "1.27-loop", timeout=30)
    assert services.tasks.run(first["run_id"]).status == "Running"

    impatient = make_services(stack, BUILD_RULE_PRODUCER_WAIT_SECONDS="0", MANIFESTS_CONTAINER=services.settings.
                              manifests_container)
    with pytest.raises(TransientError) as info:
        on_registry_event(impatient, event)
    assert info.value.code == "ProducerStillRunning" and first["run_id"] in info.value.message
    s = services.settings
    assert [n for n in services.store.list_names(s.outcomes_container, "events/") if event["id"] in n] == []
    assert rule_builds_of(services, "nginx-loop", prefix) == [f"builds/{first['run_id']}.json"]

    waiting = threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()
        time.sleep(seconds)

    monkeypatch.setattr(rules_handler, "_sleep", sleep)
    monkeypatch.setattr(rules_handler, "PRODUCER_POLL_SECONDS", 0.1)
    result: dict = {}
    delivery = threading.Thread(target=lambda: result.update(on_registry_event(services, event)))  # redelivered
    delivery.start()
    try:
        assert waiting.wait(30), "the redelivery did not wait for the running build"
        assert services.tasks.run(first["run_id"]).status == "Running"
        stack.settings(run_step_seconds=0.001)  # the build's remaining steps pass now
        delivery.join(60)
    finally:
        stack.settings(run_step_seconds=STEP)
    assert not delivery.is_alive()
    [cut] = result["actions"]
    assert cut["action"] == "cut" and cut["pushed_by"] == first["run_id"] and cut["chain"] == ["nginx-loop"]
    assert services.tasks.run(first["run_id"]).status == "Succeeded"
    assert rule_builds_of(services, "nginx-loop", prefix) == [f"builds/{first['run_id']}.json"]
