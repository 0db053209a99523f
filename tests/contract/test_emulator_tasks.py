"""ACR Tasks in the emulator: the ARM examples (contract fixtures) and the unmodified SDK client.

The SDK is azure-mgmt-containerregistrytasks (api-version 2025-03-01-preview). Runs use a fast
clock (run_step_seconds 0.2). Pools used here are created by the tests (names ``ctp-*``).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
from azure.mgmt.containerregistrytasks import models as m

from devstack.emulator import tasks as emulator_tasks
from tests.fixture_paths import AZURE_FIXTURES

pytestmark = pytest.mark.timeout(300)

API_VERSION = "2025-03-01-preview"
STEP = 0.2
FIXTURES = Path(os.environ.get("AIRLOCK_AZURE_FIXTURES", AZURE_FIXTURES)) / "arm"
FINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}
POOL_ONE, POOL_ZERO, POOL_BUSY = "ctp-one", "ctp-zero", "ctp-busy"
SECRET = "s3cr3t-build-value-7f1c"


# --- plumbing -----------------------------------------------------------------------------------

class EmulatorCredential:
    """A TokenCredential that asks the emulator's token authority (as its identity endpoint would)."""

    def __init__(self, emulator):
        self._auth = emulator.auth

    def get_token(self, *scopes, **_kwargs) -> AccessToken:
        resource = scopes[0].removesuffix("/.default")
        issued = self._auth.issue_identity_token(resource)
        return AccessToken(issued["access_token"], int(issued["expires_on"]))


@pytest.fixture(scope="module")
def emu(stack):
    if stack.emulator is None:
        pytest.skip("the stack runs without the ACR emulator")
    before = stack.emulator.config.run_step_seconds
    stack.emulator.config.run_step_seconds = STEP
    yield stack.emulator
    stack.emulator.config.run_step_seconds = before


@pytest.fixture(scope="module")
def token(emu) -> str:
    return EmulatorCredential(emu).get_token("https://management.azure.com/.default").token


@pytest.fixture(scope="module")
def arm(stack, emu, token):
    """Raw HTTP at the registry's ARM path, with bearer token and api-version."""
    with httpx.Client(base_url=stack.arm_endpoint + emu.registry_id, verify=stack.ssl_context(), timeout=30,
                      headers={"Authorization": f"Bearer {token}"}, params={"api-version": API_VERSION}) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(stack, emu):
    client = ContainerRegistryTasksMgmtClient(
        EmulatorCredential(emu), emu.config.subscription_id, base_url=stack.arm_endpoint,
        credential_scopes=["https://management.azure.com/.default"], connection_verify=str(stack.ca_pem),
        polling_interval=0.1)
    yield client
    client.close()


@pytest.fixture(scope="module")
def rg(emu) -> str:
    return emu.config.resource_group


@pytest.fixture(scope="module")
def reg(emu) -> str:
    return emu.config.registry_name


@pytest.fixture(scope="module")
def pools(sdk, rg, reg, emu):
    """Agent pools of this module: count 1, count 0, and a count-1 pool for the capacity test."""
    for name, count in ((POOL_ONE, 1), (POOL_ZERO, 0), (POOL_BUSY, 1)):
        pool = m.AgentPool(location=emu.config.location,
                           properties=m.AgentPoolProperties(count=count, tier="S1", os="Linux"))
        created = sdk.agent_pools.begin_create(rg, reg, name, pool).result()
        assert created.properties.provisioning_state == "Succeeded" and created.properties.count == count
    return {POOL_ONE: 1, POOL_ZERO: 0, POOL_BUSY: 1}


def uid() -> str:
    return uuid.uuid4().hex[:8]


def docker_request(images=(), pool=None, args=(), dockerfile="Dockerfile", **extra) -> m.DockerBuildRequest:
    return m.DockerBuildRequest(
        docker_file_path=dockerfile, platform=m.PlatformProperties(os="Linux", architecture="amd64"),
        image_names=list(images), agent_pool_name=pool,
        arguments=[m.Argument(name=n, value=v, is_secret=s) for n, v, s in args], **extra)


def wait_run(sdk, rg, reg, run_id, until=FINAL, timeout=60.0) -> tuple[m.Run, list[str]]:
    """Poll a run until its status is in ``until``; returns (run, statuses seen in order)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        run = sdk.runs.get(rg, reg, run_id)
        if not seen or seen[-1] != run.properties.status:
            seen.append(run.properties.status)
        if run.properties.status in until:
            return run, seen
        assert time.monotonic() < deadline, f"run {run_id} stuck in {seen}"
        time.sleep(0.05)


def steps(n: float) -> None:
    time.sleep(n * STEP)


def served_digest(stack, repository: str, tag: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{stack.backing_host}/{repository}:{tag}"],
                         capture_output=True, timeout=60, check=True).stdout
    return "sha256:" + hashlib.sha256(out).hexdigest()


def tag_exists(stack, repository: str, tag: str) -> bool:
    r = httpx.head(f"{stack.backing_url}/v2/{repository}/manifests/{tag}",
                   headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    return r.status_code == 200


def log_text(sdk, rg, reg, run_id) -> str:
    link = sdk.runs.get_log_sas_url(rg, reg, run_id).log_link
    response = httpx.get(link, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"contract fixture {path} not available")
    return json.loads(path.read_text())


def fixture_statuses(example: dict) -> set[int]:
    return {int(code) for code in example["responses"]}


def assert_shape(actual: dict, expected: dict) -> None:
    """Every key of the fixture's body is in ours, at the top level and in ``properties``."""
    assert set(expected) <= set(actual), (sorted(expected), sorted(actual))
    if isinstance(expected.get("properties"), dict):
        assert set(expected["properties"]) <= set(actual["properties"]), (
            sorted(set(expected["properties"]) - set(actual["properties"])))


# --- the ARM examples ---------------------------------------------------------------------------

SCHEDULE_FIXTURES = sorted(p.name for p in (FIXTURES / "schedule_run").glob("*.json")) if FIXTURES.exists() else []


@pytest.fixture(scope="module")
def example_task(arm):
    """The TasksCreate example, stored as task 'myTask' (the name RegistriesScheduleRun_Task uses)."""
    body = fixture("tasks/TasksCreate.2025-03-01-preview.json")["parameters"]["taskCreateParameters"]
    response = arm.put("/tasks/myTask", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_example_tasks_create(arm):
    example = fixture("tasks/TasksCreate.2025-03-01-preview.json")
    body = example["parameters"]["taskCreateParameters"]
    name = f"ctask-{uid()}"
    first = arm.put(f"/tasks/{name}", json=body)
    assert first.status_code == 201 and first.status_code in fixture_statuses(example)
    assert_shape(first.json(), example["responses"]["201"]["body"])
    again = arm.put(f"/tasks/{name}", json=body)
    assert again.status_code == 200
    shown = again.json()
    assert_shape(shown, example["responses"]["200"]["body"])
    assert shown["name"] == name and shown["id"].endswith(f"/tasks/{name}")
    assert shown["identity"]["principalId"] and shown["properties"]["provisioningState"] == "Succeeded"
    # Like the example answer: secret arguments and source-control tokens are not echoed.
    assert "mysecrettestvalue" not in again.text and "xxxxx" not in again.text
    assert arm.get(f"/tasks/{name}").json() == shown


@pytest.mark.parametrize("name", SCHEDULE_FIXTURES)
def test_example_schedule_run(arm, example_task, name):
    example = fixture(f"schedule_run/{name}")
    response = arm.post("/scheduleRun", json=example["parameters"]["runRequest"])
    assert response.status_code == 200 and 200 in fixture_statuses(example), response.text
    assert response.headers["content-type"].startswith("application/json")
    run = response.json()
    assert_shape(run, example["responses"]["200"]["body"])
    props = run["properties"]
    assert props["status"] == "Queued" and props["runId"].startswith("cb") and run["name"] == props["runId"]
    assert run["type"] == "Microsoft.ContainerRegistry/registries/runs"
    assert props["runType"] in ("QuickBuild", "QuickRun", "AutoBuild")
    assert props["imageUpdateTrigger"] is None and props["createTime"] and props["agentPoolName"] is None
    assert props["platform"]["os"] == "Linux"
    assert "mysecrettestvalue" not in response.text


def test_example_agent_pools(arm):
    create = fixture("agent_pools/AgentPoolsCreate.2025-03-01-preview.json")
    name = create["parameters"]["agentPoolName"]
    response = arm.put(f"/agentPools/{name}", json=create["parameters"]["agentPool"])
    assert response.status_code in fixture_statuses(create), response.text
    assert_shape(response.json(), create["responses"][str(response.status_code)]["body"])
    if response.status_code == 201:
        operation = response.headers["Azure-AsyncOperation"]
        assert int(response.headers["Retry-After"]) >= 1
        wait_operation(arm, operation)

    get = fixture("agent_pools/AgentPoolsGet.2025-03-01-preview.json")
    response = arm.get(f"/agentPools/{name}")
    assert response.status_code == 200
    assert_shape(response.json(), get["responses"]["200"]["body"])
    assert response.json()["properties"] == {"count": 1, "tier": "S1", "os": "Linux", "provisioningState": "Succeeded"}

    update = fixture("agent_pools/AgentPoolsUpdate.2025-03-01-preview.json")
    response = arm.patch(f"/agentPools/{name}", json={"properties": {"count": 2}})
    assert response.status_code == 201 and response.status_code in fixture_statuses(update)
    assert_shape(response.json(), update["responses"]["201"]["body"])
    assert response.json()["properties"]["provisioningState"] == "Updating"
    wait_operation(arm, response.headers["Azure-AsyncOperation"])
    response = arm.patch(f"/agentPools/{name}", json=update["parameters"]["updateParameters"])
    assert response.status_code == 201
    wait_operation(arm, response.headers["Azure-AsyncOperation"])
    same = arm.patch(f"/agentPools/{name}", json=update["parameters"]["updateParameters"])
    assert same.status_code == 200 and "Azure-AsyncOperation" not in same.headers
    assert same.json()["properties"]["count"] == 1

    queue = fixture("agent_pools/AgentPoolsGetQueueStatus.2025-03-01-preview.json")
    response = arm.post(f"/agentPools/{name}/listQueueStatus")
    assert response.status_code == 200
    assert set(response.json()) == set(queue["responses"]["200"]["body"]) and response.json()["count"] == 0

    listed = arm.get("/agentPools").json()["value"]
    assert name in {p["name"] for p in listed}


def wait_operation(arm, url: str) -> None:
    statuses = []
    deadline = time.monotonic() + 20
    while not statuses or statuses[-1] != "Succeeded":
        assert time.monotonic() < deadline, statuses
        response = arm.get(url, params={})
        assert response.status_code == 200, response.text
        statuses.append(response.json()["status"])
        assert statuses[-1] in ("InProgress", "Succeeded")
        time.sleep(0.05)


def test_example_runs_get_log_cancel(arm):
    request = {"type": "DockerBuildRequest", "dockerFilePath": "hang.Dockerfile", "platform": {"os": "Linux"}}
    run_id = arm.post("/scheduleRun", json=request).json()["properties"]["runId"]

    get = fixture("runs/RunsGet.2025-03-01-preview.json")
    response = arm.get(f"/runs/{run_id}")
    assert response.status_code == 200
    assert_shape(response.json(), get["responses"]["200"]["body"])

    logs = fixture("runs/RunsGetLogSasUrl.2025-03-01-preview.json")
    response = arm.post(f"/runs/{run_id}/listLogSasUrl")
    assert response.status_code == 200
    assert set(logs["responses"]["200"]["body"]) <= set(response.json())

    cancel = fixture("runs/RunsCancel.2025-03-01-preview.json")
    response = arm.post(f"/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.status_code in fixture_statuses(cancel)
    assert response.content == b""
    assert arm.get(f"/runs/{run_id}").json()["properties"]["status"] == "Canceled"


# --- the SDK drives runs ------------------------------------------------------------------------

def test_docker_build_on_a_pool_runs_then_pushes(sdk, rg, reg, stack, emu, pools, caplog):
    caplog.set_level(logging.DEBUG)
    repo = f"tasks-it/app-{uid()}"
    images = [f"{repo}:{{{{.Run.ID}}}}", f"{stack.login_server}/{repo}:stable"]
    args = [("GREETING", "hello-build", False), ("TOKEN", SECRET, True)]
    queued = sdk.registries.schedule_run(rg, reg, docker_request(images, POOL_ONE, args))
    run_id = queued.properties.run_id
    assert queued.properties.status == "Queued" and queued.properties.agent_pool_name == POOL_ONE
    assert queued.properties.run_type == "QuickBuild" and queued.properties.create_time is not None

    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[0] == "Queued" and "Running" in seen and seen[-1] == "Succeeded", seen
    props = run.properties
    assert props.start_time and props.finish_time and props.start_time <= props.finish_time
    assert props.run_error_message is None
    outputs = {(i.repository, i.tag): i for i in props.output_images}
    assert set(outputs) == {(repo, run_id), (repo, "stable")}
    for (repository, tag), image in outputs.items():
        assert image.registry == stack.login_server
        assert image.digest == served_digest(stack, repository, tag)

    event = emu.events.wait_for(lambda e: e["eventType"] == "Microsoft.ContainerRegistry.ImagePushed"
                                and e["data"]["target"].get("repository") == repo
                                and e["data"]["target"].get("tag") == run_id, timeout=15)
    assert event["data"]["target"]["digest"] == outputs[(repo, run_id)].digest

    text = log_text(sdk, rg, reg, run_id)
    for expected in (f"Queued a run with ID: {run_id}", f"agent pool '{POOL_ONE}'", "Step 1/2", "Step 2/2",
                     "GREETING=hello-build", "TOKEN=*****", outputs[(repo, run_id)].digest,
                     f"Run ID: {run_id} was successful"):
        assert expected in text, (expected, text)
    assert SECRET not in text
    assert SECRET not in caplog.text


def test_run_on_a_pool_at_zero_waits_for_scale_up(sdk, rg, reg, pools):
    run_id = sdk.registries.schedule_run(rg, reg, docker_request(pool=POOL_ZERO)).properties.run_id
    steps(5)
    assert sdk.runs.get(rg, reg, run_id).properties.status == "Queued"
    assert sdk.agent_pools.get_queue_status(rg, reg, POOL_ZERO).count == 1
    assert "has no agents (count 0)" in log_text(sdk, rg, reg, run_id)

    scaled = sdk.agent_pools.begin_update(
        rg, reg, POOL_ZERO, m.AgentPoolUpdateParameters(properties=m.AgentPoolPropertiesUpdateParameters(count=1)))
    pool = scaled.result()
    assert pool.properties.count == 1 and pool.properties.provisioning_state == "Succeeded"
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == "Succeeded" and "Running" in seen
    assert sdk.agent_pools.get_queue_status(rg, reg, POOL_ZERO).count == 0
    assert f"Agent pool '{POOL_ZERO}' scaled to 1 agent(s)" in log_text(sdk, rg, reg, run_id)
    sdk.agent_pools.begin_update(
        rg, reg, POOL_ZERO, {"properties": {"count": 0}}).result()
    assert sdk.agent_pools.get(rg, reg, POOL_ZERO).properties.count == 0


def test_a_pool_runs_at_most_count_runs_and_cancel_frees_the_agent(sdk, rg, reg, pools):
    hanging = sdk.registries.schedule_run(
        rg, reg, docker_request(pool=POOL_BUSY, args=[("AIRLOCK_EMULATOR_HANG", "1", False)])).properties.run_id
    wait_run(sdk, rg, reg, hanging, until={"Running"})
    waiting = sdk.registries.schedule_run(rg, reg, docker_request(pool=POOL_BUSY)).properties.run_id
    steps(5)
    assert sdk.runs.get(rg, reg, waiting).properties.status == "Queued"
    assert sdk.runs.get(rg, reg, hanging).properties.status == "Running"
    assert sdk.agent_pools.get_queue_status(rg, reg, POOL_BUSY).count == 1

    assert sdk.runs.cancel(rg, reg, hanging) is None
    canceled = sdk.runs.get(rg, reg, hanging).properties
    assert canceled.status == "Canceled" and canceled.finish_time is not None
    run, seen = wait_run(sdk, rg, reg, waiting)
    assert seen[-1] == "Succeeded"
    assert "was canceled" in log_text(sdk, rg, reg, hanging)


@pytest.mark.parametrize("how, status", [
    ({"args": [("AIRLOCK_EMULATOR_FAIL", "1", False)]}, "Failed"),
    ({"args": [("AIRLOCK_EMULATOR_FAIL", "true", True)]}, "Failed"),
    ({"dockerfile": "build/fail.Dockerfile"}, "Failed"),
    ({"args": [("AIRLOCK_EMULATOR_TIMEOUT", "1", False)]}, "Timeout"),
])
def test_failing_runs(sdk, rg, reg, stack, pools, how, status):
    repo = f"tasks-it/broken-{uid()}"
    run_id = sdk.registries.schedule_run(
        rg, reg, docker_request([f"{repo}:v1"], POOL_ONE, **how)).properties.run_id
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == status and "Running" in seen, seen
    assert run.properties.run_error_message and run.properties.output_images == []
    assert not tag_exists(stack, repo, "v1")
    assert f"Run ID: {run_id}" in log_text(sdk, rg, reg, run_id)


def test_cancel_a_queued_run(sdk, rg, reg, pools):
    run_id = sdk.registries.schedule_run(rg, reg, docker_request(pool=POOL_ZERO)).properties.run_id
    assert sdk.runs.cancel(rg, reg, run_id) is None
    run = sdk.runs.get(rg, reg, run_id)
    assert run.properties.status == "Canceled" and run.properties.start_time is None
    assert sdk.agent_pools.get_queue_status(rg, reg, POOL_ZERO).count == 0
    sdk.runs.cancel(rg, reg, run_id)  # cancelling a finished run changes nothing
    assert sdk.runs.get(rg, reg, run_id).properties.status == "Canceled"


def test_task_run_request(sdk, rg, reg, emu, stack, pools):
    repo = f"tasks-it/task-{uid()}"
    task = m.Task(location=emu.config.location, properties=m.TaskProperties(
        platform=m.PlatformProperties(os="Linux"), agent_pool_name=POOL_ONE,
        step=m.DockerBuildStep(docker_file_path="Dockerfile", image_names=[f"{repo}:{{{{.Run.ID}}}}"],
                               arguments=[m.Argument(name="A", value="1", is_secret=False)])))
    name = f"ctask-{uid()}"
    created = sdk.tasks.create(rg, reg, name, task)
    assert created.name == name and created.properties.provisioning_state == "Succeeded"
    assert sdk.tasks.get(rg, reg, name).properties.step.docker_file_path == "Dockerfile"

    request = m.TaskRunRequest(task_id=created.id, override_task_step_properties=m.OverrideTaskStepProperties(
        arguments=[m.Argument(name="A", value="2", is_secret=False)]))
    run_id = sdk.registries.schedule_run(rg, reg, request).properties.run_id
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == "Succeeded"
    assert run.properties.run_type == "AutoBuild" and run.properties.task == name
    assert run.properties.agent_pool_name == POOL_ONE
    [image] = run.properties.output_images
    assert (image.repository, image.tag) == (repo, run_id)
    assert "A=2" in log_text(sdk, rg, reg, run_id)


def test_encoded_task_run_pushes_its_images(sdk, rg, reg, stack):
    repo = f"tasks-it/encoded-{uid()}"
    yaml_text = f"version: v1.1.0\nsteps:\n  - build: -t $Registry/{repo}:$ID .\n  - push: ['$Registry/{repo}:$ID']\n"
    request = m.EncodedTaskRunRequest(encoded_task_content=base64.b64encode(yaml_text.encode()).decode(),
                                      platform=m.PlatformProperties(os="Linux"))
    run_id = sdk.registries.schedule_run(rg, reg, request).properties.run_id
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == "Succeeded" and run.properties.run_type == "QuickRun"
    [image] = run.properties.output_images
    assert (image.repository, image.tag) == (repo, run_id)
    assert image.digest == served_digest(stack, repo, run_id)


def test_build_source_upload(sdk, rg, reg):
    upload = sdk.registries.get_build_source_upload_url(rg, reg)
    assert upload.relative_path.startswith("source/") and upload.upload_url.startswith("http")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w:gz") as tar:
        data = b"FROM scratch\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    put = httpx.put(upload.upload_url, content=context.getvalue(), headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text

    run_id = sdk.registries.schedule_run(
        rg, reg, docker_request(source_location=upload.relative_path)).properties.run_id
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == "Succeeded"
    assert f"({len(context.getvalue())} bytes)" in log_text(sdk, rg, reg, run_id)

    missing = sdk.registries.get_build_source_upload_url(rg, reg).relative_path
    run_id = sdk.registries.schedule_run(rg, reg, docker_request(source_location=missing)).properties.run_id
    run, seen = wait_run(sdk, rg, reg, run_id)
    assert seen[-1] == "Failed" and "was not found" in run.properties.run_error_message


def test_list_runs_with_filter_and_top(sdk, rg, reg, pools):
    run_id = sdk.registries.schedule_run(rg, reg, docker_request()).properties.run_id
    wait_run(sdk, rg, reg, run_id)
    listed = list(sdk.runs.list(rg, reg, filter="status eq 'Succeeded'", top=2))
    assert 1 <= len(listed) <= 2 and all(r.properties.status == "Succeeded" for r in listed)
    assert [r.properties.run_id for r in sdk.runs.list(rg, reg, filter=f"runId eq '{run_id}'")] == [run_id]
    everything = [r.properties.run_id for r in sdk.runs.list(rg, reg, filter="createTime ge 2019-01-01T00:00:00Z")]
    assert run_id in everything  # clauses the emulator does not understand are ignored
    newest = [int(r.properties.run_id[2:], 36) for r in sdk.runs.list(rg, reg, top=5)]
    assert newest == sorted(newest, reverse=True)


def test_run_step_seconds_is_read_at_runtime(sdk, rg, reg, emu):
    emu.config.run_step_seconds = 30
    try:
        run_id = sdk.registries.schedule_run(rg, reg, docker_request()).properties.run_id
        time.sleep(0.5)
        assert sdk.runs.get(rg, reg, run_id).properties.status == "Queued"
    finally:
        emu.config.run_step_seconds = STEP
    run, _ = wait_run(sdk, rg, reg, run_id, timeout=20)
    assert run.properties.status == "Succeeded"


# --- errors -------------------------------------------------------------------------------------

def test_sdk_errors(sdk, rg, reg, pools):
    with pytest.raises(HttpResponseError) as info:
        sdk.registries.schedule_run(rg, reg, docker_request(pool="no-such-pool"))
    assert info.value.status_code == 400 and info.value.error.code == "AgentPoolNotFound"
    with pytest.raises(ResourceNotFoundError) as info:
        sdk.agent_pools.get(rg, reg, "no-such-pool")
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        sdk.agent_pools.get_queue_status(rg, reg, "no-such-pool")
    with pytest.raises(ResourceNotFoundError):
        sdk.agent_pools.begin_update(rg, reg, "no-such-pool", {"properties": {"count": 1}})
    with pytest.raises(ResourceNotFoundError) as info:
        sdk.runs.get(rg, reg, "cbzzzz")
    assert info.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):
        sdk.runs.cancel(rg, reg, "cbzzzz")
    with pytest.raises(ResourceNotFoundError):
        sdk.runs.get_log_sas_url(rg, reg, "cbzzzz")
    with pytest.raises(ResourceNotFoundError):
        sdk.tasks.get(rg, reg, "no-such-task")
    with pytest.raises(ResourceNotFoundError) as info:
        sdk.runs.get("no-such-group", reg, "cb1")
    assert info.value.error.code == "ResourceGroupNotFound"


DOCKER = {"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile", "platform": {"os": "Linux"}}
BAD_BODIES = [
    ({"type": "NoSuchRequest"}, "InvalidRunRequestType"),
    ({"dockerFilePath": "Dockerfile", "platform": {"os": "Linux"}}, "InvalidRunRequestType"),
    ({"type": "DockerBuildRequest", "platform": {"os": "Linux"}}, "InvalidParameter"),
    ({"type": "DockerBuildRequest", "dockerFilePath": "Dockerfile"}, "InvalidParameter"),
    ({**DOCKER, "platform": {"os": "Solaris"}}, "InvalidParameter"),
    ({**DOCKER, "platform": {"os": "Linux", "architecture": "sparc"}}, "InvalidParameter"),
    ({**DOCKER, "timeout": 10}, "InvalidParameter"),
    ({**DOCKER, "timeout": "long"}, "InvalidParameter"),
    ({**DOCKER, "imageNames": ["UPPER/case:tag"]}, "InvalidParameter"),
    ({**DOCKER, "imageNames": "app:v1"}, "InvalidParameter"),
    ({**DOCKER, "arguments": [{"value": "x"}]}, "InvalidParameter"),
    ({**DOCKER, "isPushEnabled": "yes"}, "InvalidParameter"),
    ({**DOCKER, "agentPoolName": "no-such-pool"}, "AgentPoolNotFound"),
    ({"type": "TaskRunRequest"}, "InvalidParameter"),
    ({"type": "TaskRunRequest", "taskId": "no-such-task"}, "TaskNotFound"),
    ({"type": "EncodedTaskRunRequest", "platform": {"os": "Linux"}}, "InvalidParameter"),
    ({"type": "EncodedTaskRunRequest", "platform": {"os": "Linux"}, "encodedTaskContent": "%%%"}, "InvalidParameter"),
    ({"type": "FileTaskRunRequest", "platform": {"os": "Linux"}}, "InvalidParameter"),
    ([DOCKER], "InvalidRequestContent"),
]


@pytest.mark.parametrize("body, code", BAD_BODIES, ids=[c + str(i) for i, (_, c) in enumerate(BAD_BODIES)])
def test_bad_run_requests(arm, body, code):
    assert_error(arm.post("/scheduleRun", json=body), 400, code)


def test_bad_requests_elsewhere(arm, stack, emu, token):
    assert_error(arm.post("/scheduleRun", content=b"{not json"), 400, "InvalidRequestContent")
    assert_error(arm.post("/scheduleRun"), 400, "InvalidRequestContent")
    assert_error(arm.post("/scheduleRun", json=DOCKER, params={"api-version": "2019-06-01-preview"}),
                 400, "InvalidApiVersionParameter")
    url = f"{stack.arm_endpoint}{emu.registry_id}/runs"
    with httpx.Client(verify=stack.ssl_context(), timeout=10) as plain:
        assert_error(plain.get(url, headers={"Authorization": f"Bearer {token}"}), 400, "MissingApiVersionParameter")
        response = plain.get(url, params={"api-version": API_VERSION})
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert_error(plain.get(url, params={"api-version": API_VERSION}, headers={"Authorization": "Bearer nope"}),
                     401)
    assert_error(arm.delete("/scheduleRun"), 405, "MethodNotAllowed")
    assert_error(arm.get("/runs/cbzzzz"), 404, "ResourceNotFound")
    assert_error(arm.put("/agentPools/x", json={"location": "westus"}), 400, "InvalidParameter")
    assert_error(arm.put("/agentPools/ctp-bad", json={"properties": {"count": 1}}), 400, "LocationRequired")
    assert_error(arm.put("/agentPools/ctp-bad", json={"location": "westus", "properties": {"count": -1}}),
                 400, "InvalidParameter")
    assert_error(arm.put("/agentPools/ctp-bad", json={"location": "westus", "properties": {"tier": "XL"}}),
                 400, "InvalidParameter")
    assert_error(arm.patch("/agentPools/no-such-pool", json={"properties": {"count": 1}}), 404, "ResourceNotFound")
    assert_error(arm.post("/agentPools/no-such-pool/listQueueStatus"), 404, "ResourceNotFound")
    assert_error(arm.put("/tasks/ctask-bad", json={"location": "westus", "properties": {}}), 400, "InvalidParameter")
    assert_error(arm.put("/tasks/x", json={"location": "westus"}), 400, "InvalidParameter")


def test_deleting_a_busy_pool_is_refused(arm, pools):
    name = f"ctp-{uid()}"
    created = arm.put(f"/agentPools/{name}", json={"location": "westus", "properties": {"count": 0}})
    assert created.status_code == 201
    wait_operation(arm, created.headers["Azure-AsyncOperation"])
    run_id = arm.post("/scheduleRun", json={**DOCKER, "agentPoolName": name}).json()["properties"]["runId"]
    assert_error(arm.delete(f"/agentPools/{name}"), 409, "AgentPoolInUse")
    assert arm.post(f"/runs/{run_id}/cancel").status_code == 200
    deleting = arm.delete(f"/agentPools/{name}")
    assert deleting.status_code == 202
    wait_operation(arm, deleting.headers["Azure-AsyncOperation"])
    assert_error(arm.get(f"/agentPools/{name}"), 404, "ResourceNotFound")
    assert arm.delete(f"/agentPools/{name}").status_code == 204  # nothing left to delete


@pytest.fixture
def slow_pools(emu):
    """Agent-pool operations that take a while (the azure profile takes minutes; here 1 s)."""
    emu.config.pool_scale_seconds = emu.config.pool_delete_seconds = 1.0
    yield
    emu.config.pool_scale_seconds = emu.config.pool_delete_seconds = None


def test_pool_patch_and_delete_are_long_running_operations(arm, slow_pools):
    name = f"ctp-{uid()}"
    created = arm.put(f"/agentPools/{name}", json={"location": "westus", "properties": {"count": 0}})
    assert (created.status_code, created.json()["properties"]["provisioningState"]) == (201, "Creating")
    wait_operation(arm, created.headers["Azure-AsyncOperation"])

    patched = arm.patch(f"/agentPools/{name}", json={"properties": {"count": 2}})
    assert patched.status_code == 201 and patched.json()["properties"]["provisioningState"] == "Updating"
    assert patched.headers["Retry-After"] == "1"
    operation = arm.get(patched.headers["Azure-AsyncOperation"], params={}).json()
    assert operation["status"] == "InProgress"
    assert arm.get(f"/agentPools/{name}").json()["properties"]["provisioningState"] == "Updating"
    wait_operation(arm, patched.headers["Azure-AsyncOperation"])
    props = arm.get(f"/agentPools/{name}").json()["properties"]
    assert (props["provisioningState"], props["count"]) == ("Succeeded", 2)

    deleting = arm.delete(f"/agentPools/{name}")
    assert deleting.status_code == 202 and deleting.content == b""
    assert all(key in deleting.headers for key in ("Location", "Azure-AsyncOperation", "Retry-After"))
    assert arm.get(f"/agentPools/{name}").json()["properties"]["provisioningState"] == "Deleting"
    assert_error(arm.post("/scheduleRun", json={**DOCKER, "agentPoolName": name}), 409, "AgentPoolDeleting")
    assert_error(arm.patch(f"/agentPools/{name}", json={"properties": {"count": 1}}), 409, "AgentPoolDeleting")
    again = arm.delete(f"/agentPools/{name}")  # the same operation, not a second one
    assert again.headers["Location"] == deleting.headers["Location"]
    first = arm.get(deleting.headers["Location"], params={})
    assert first.status_code == 202
    deadline = time.monotonic() + 10
    while (result := arm.get(deleting.headers["Location"], params={})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert result.status_code == 204
    assert_error(arm.get(f"/agentPools/{name}"), 404, "ResourceNotFound")


def test_sdk_update_and_delete_pollers_complete(sdk, rg, reg, emu, slow_pools):
    name = f"ctp-{uid()}"
    pool = m.AgentPool(location=emu.config.location, properties=m.AgentPoolProperties(count=0, tier="S1", os="Linux"))
    assert sdk.agent_pools.begin_create(rg, reg, name, pool).result().properties.count == 0
    started = time.monotonic()
    updated = sdk.agent_pools.begin_update(
        rg, reg, name, m.AgentPoolUpdateParameters(properties=m.AgentPoolPropertiesUpdateParameters(count=3))).result()
    assert (updated.properties.count, updated.properties.provisioning_state) == (3, "Succeeded")
    assert time.monotonic() - started >= 1.0
    started = time.monotonic()
    assert sdk.agent_pools.begin_delete(rg, reg, name).result() is None
    assert time.monotonic() - started >= 1.0
    with pytest.raises(ResourceNotFoundError):
        sdk.agent_pools.get(rg, reg, name)


# --- pure helpers -------------------------------------------------------------------------------

def test_filter_expressions():
    props = {"runId": "cb7", "status": "Succeeded", "agentPoolName": "p1", "task": None}
    match = emulator_tasks.filter_matches
    assert match(None, props) and match("", props)
    assert match("status eq 'Succeeded'", props) and not match("status eq 'Failed'", props)
    assert match("status ne 'Failed' and agentPoolName eq 'P1'", props)
    assert match("status eq 'Failed' or runId eq 'cb7'", props)
    assert match("contains(runId, 'b7')", props) and not match("contains(runId, 'zz')", props)
    assert match("finishTime gt 2020-01-01T00:00:00Z", props)


def test_image_names():
    parse = emulator_tasks.parse_image_name
    prefixes = ("127.0.0.1:8443/", "airlockacr.azurecr.io/")
    assert str(parse("app", prefixes)) == "app:latest"
    assert str(parse("127.0.0.1:8443/team/app:v1.2", prefixes)) == "team/app:v1.2"
    assert str(parse("AirlockAcr.azurecr.io/app:1", prefixes)) == "app:1"
    for bad in ("App:1", "app@sha256:" + "0" * 64, "other.io/app:1", "app:-x"):
        with pytest.raises(emulator_tasks.ArmError):
            parse(bad, prefixes)
    assert emulator_tasks.render_run_template("a:{{.Run.ID}}-{{ .Run.OS }}", {"ID": "cb1", "OS": "linux"}) == \
        "a:cb1-linux"
