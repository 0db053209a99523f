"""Builds through the registered functions: the rule file upload (blob trigger), the idle-pool timer,
and a refreshed base image whose real push events (from an import) rebuild its dependant once."""
from __future__ import annotations

import time
import uuid

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from devstack import oci
from shared import entrypoints
from shared.handlers import builds
from shared.handlers.imports import run_manifest
from tests.agent_pools import create_pool

pytestmark = [pytest.mark.usefixtures("quick_clock"), pytest.mark.timeout(300)]
GIT = "https://git.example.com/team/web.git#main"




@pytest.fixture
def prefix():
    return f"fb{uuid.uuid4().hex[:8]}"


def services():
    return entrypoints.services()


def outcome(name: str):
    s = services()
    return s.store.get_json(s.settings.outcomes_container, name)


def upload_rules(text: str) -> bytes:
    s = services()
    s.store.put_bytes(s.settings.manifests_container, s.settings.build_rules_blob, text.encode())
    return text.encode()


def rule_file(prefix: str, pool: str) -> str:
    return (
        "rules:\n"
        "  - name: web-on-nginx\n"
        f"    when: {{repository: {prefix}/nginx, tag: \"1.27*\"}}\n"
        "    build:\n"
        f"      source_location: {GIT}\n"
        f"      image_names: [\"{prefix}/web:{{{{.Run.ID}}}}\", \"{prefix}/web:latest\"]\n"
        f"      agent_pool: {pool}\n")


def blob_upload(functions, name: str, data: bytes) -> None:
    container = services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{container}/{name}"))


def grid_event(body: dict) -> func.EventGridEvent:
    return func.EventGridEvent(id=body["id"], data=body["data"], topic=body["topic"], subject=body["subject"],
                               event_type=body["eventType"], event_time=None, data_version=body["dataVersion"])


def event_record(event_id: str) -> dict:
    s = services()
    [name] = [n for n in s.store.list_names(s.settings.outcomes_container, "events/") if event_id in n]
    return outcome(name)


def test_rule_file_upload_is_validated_and_recorded(env, stack, functions, prefix):
    s = services()
    good = upload_rules(rule_file(prefix, "vnetpool"))
    blob_upload(functions, s.settings.build_rules_blob, good)
    import hashlib

    record = outcome(f"rules/{hashlib.sha256(good).hexdigest()}.json")
    assert record["status"] == "valid" and [r["name"] for r in record["rules"]] == ["web-on-nginx"]

    bad = b"rules:\n  - name: Bad_Name\n    when: {repository: x}\n    build: {source_location: nope}\n"
    blob_upload(functions, s.settings.build_rules_blob, bad)
    record = outcome(f"rules/{hashlib.sha256(bad).hexdigest()}.json")
    assert record["status"] == "invalid"
    assert {e["line"] for e in record["errors"]} == {2, 4}
    # another .yaml blob is still not a manifest and not the rule file
    blob_upload(functions, f"{prefix}.yaml", b"rules: []\n")


def test_pool_scaler_timer_scales_idle_pools_to_zero(env, stack, functions):
    env.setenv("POOL_IDLE_MINUTES", "0")
    entrypoints.reset()
    pool = create_pool(services(), stack, 1)
    functions["pool_scaler"](TimerRequest(past_due=True))
    assert services().tasks.pool(pool).count == 0
    [status] = builds.pool_status(services(), pool)
    assert status["last_decision"]["action"] == "scale_down"


def test_a_refreshed_base_image_rebuilds_its_dependant_once(env, stack, seeded, functions, prefix):
    """Import nginx:1.27 -> the ACR's real ImagePushed events -> registry_event -> one build on a pool at 0."""
    pool = create_pool(services(), stack, 0)
    upload_rules(rule_file(prefix, pool))
    seen: list[dict] = []
    unsubscribe = stack.emulator.events.subscribe(seen.extend)
    try:
        document = run_manifest(services(), f"nginx:1.27 => {prefix}/nginx\n", name="base.txt", trigger="cli")
        assert document["status"] == "succeeded"
        deadline = time.monotonic() + 20
        while not any(e["data"]["target"].get("tag") == "1.27" and
                      e["data"]["target"].get("repository") == f"{prefix}/nginx" for e in seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
    finally:
        unsubscribe()
    events = [e for e in seen if e["data"]["target"].get("repository") == f"{prefix}/nginx"]
    assert len(events) >= 2  # the per-platform manifests (untagged) and the tagged index
    for event in events + events:  # every event delivered twice
        functions["registry_event"](grid_event(event))

    actions = [a for e in events for a in event_record(e["id"])["actions"]]
    queued = [a for a in actions if a["action"] == "queued"]
    assert [a["action"] for a in actions] == ["queued"]  # the untagged platform manifests match no rule
    assert queued[0]["scaled"] is True
    final = builds.follow_build(services(), queued[0]["run_id"], poll_seconds=0.1, timeout=60)
    assert final["status"] == "Succeeded" and final["trigger"] == "rule"
    assert final["request"]["arguments"]["BASE_IMAGE_DIGEST"] == seeded["library/nginx:1.27"]
    latest = next(i for i in final["output_images"] if i["tag"] == "latest")
    raw = oci.inspect_raw(f"{stack.backing_host}/{prefix}/web:latest", tls_verify=False)
    assert oci.sha256_digest(raw) == latest["digest"]


def test_an_unreadable_rule_file_is_recorded_and_a_push_says_why_nothing_was_queued(env, stack, functions, prefix):
    """1,000 nested brackets: once a RecursionError that wrote no record and silenced every push."""
    import hashlib

    from tests.unit import yaml_bombs

    s = services()
    bomb = upload_rules(yaml_bombs.nested_brackets())
    blob_upload(functions, s.settings.build_rules_blob, bomb)
    sha = hashlib.sha256(bomb).hexdigest()
    record = outcome(f"rules/{sha}.json")
    assert record["status"] == "invalid"
    assert [(e["line"], "nested more than" in e["message"]) for e in record["errors"]] == [(1, True)]

    body = {"id": str(uuid.uuid4()), "topic": s.settings.registry_id,
            "subject": f"{prefix}/nginx:1.27", "eventType": "Microsoft.ContainerRegistry.ImagePushed",
            "eventTime": "2026-12-01T00:00:00Z", "dataVersion": "1.0",
            "data": {"target": {"mediaType": "application/vnd.oci.image.index.v1+json", "size": 100,
                                "digest": "sha256:" + "ab" * 32, "repository": f"{prefix}/nginx", "tag": "1.27"}}}
    functions["registry_event"](grid_event(body))
    pushed = event_record(body["id"])
    assert pushed["actions"] == []
    assert "no build was queued" in pushed["reason"] and s.settings.build_rules_blob in pushed["reason"]
    assert pushed["rule_file"] == {"name": s.settings.build_rules_blob, "sha256": sha, "status": "invalid",
                                   "validation_record": f"rules/{sha}.json"}
    assert pushed["rule_errors"][0]["line"] == 1
