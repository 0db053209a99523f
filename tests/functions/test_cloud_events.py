"""registry_event with ACR's own CloudEvents sample, decoded as the Python worker decodes it.

Each event goes through azure-functions' Event Grid trigger converter (``EventGridEventInConverter.decode``),
as the worker does for one event of a delivery, then to the registered function. The converter recognises
only a lower-case ``specversion``: ACR's published ImageDeleted sample (tests/fixtures/eventgrid, verbatim)
spells it ``specVersion``, so it becomes an ``EventGridEvent`` with no type, topic or time.
"""
from __future__ import annotations

import copy
import json
import logging
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from shared import entrypoints
from shared.errors import ValidationError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eventgrid"
SAMPLES = ["image_deleted.specVersion.json", "image_deleted.json"]


@pytest.fixture
def prefix():
    return f"ce{uuid.uuid4().hex[:8]}"


def sample(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def delivered(body: dict):
    """What the Python worker passes to the function for this event (a JSON datum through the converter)."""
    return EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})


def ours(body: dict, repository: str) -> dict:
    """The sample as this app's registry would send it: its resource id, its login server, a new id."""
    s = entrypoints.services()
    body = copy.deepcopy(body)
    body["id"] = body["data"]["id"] = str(uuid.uuid4())
    body["source"] = s.settings.registry_id
    body["data"]["request"]["host"] = s.acr.login_server()
    body["data"]["target"]["repository"] = repository
    return body


def event_records(event_id: str) -> list[dict]:
    s = entrypoints.services()
    names = [n for n in s.store.list_names(s.settings.outcomes_container, "events/") if event_id in n]
    return [s.store.get_json(s.settings.outcomes_container, n) for n in names]


def test_the_worker_decodes_the_camel_case_sample_without_type_or_source():
    """What the app has to work with (azure-functions 1.26.0): id, subject and data; no type, source or time."""
    text = (FIXTURES / SAMPLES[0]).read_text()
    assert '"specVersion": "1.0"' in text
    event = delivered(json.loads(text))
    assert isinstance(event, func.EventGridEvent) and not isinstance(event, func.CloudEvent)
    assert (event.event_type, event.topic, event.event_time) == (None, None, None)
    assert event.id == "6fdef14c-2594-41e8-9156-c0376eb0a190" and event.get_json()["action"] == "delete"
    assert isinstance(delivered(sample(SAMPLES[1])), func.CloudEvent)


@pytest.mark.parametrize("fixture", SAMPLES)
def test_acr_image_deleted_sample_self_heals_a_mirrored_repository(env, functions, prefix, fixture):
    s = entrypoints.services()
    s.store.put_bytes(s.settings.manifests_container, "mirror.txt",
                      f"library/busybox:1.36 => {prefix}/bb\n".encode())
    body = ours(sample(fixture), f"{prefix}/bb")
    functions["registry_event"](delivered(body))
    functions["registry_event"](delivered(body))  # Event Grid delivers at least once
    [record] = event_records(body["id"])
    assert record["event"]["type"] == "Microsoft.ContainerRegistry.ImageDeleted"
    assert record["event"]["schema"] == "cloudevents" and record["event"]["repository"] == f"{prefix}/bb"
    assert record["event"]["digest"] == sample(fixture)["data"]["target"]["digest"]
    [action] = record["actions"]
    assert action["action"] == "reimport" and action["status"] == "queued"
    assert action["targets"] == [f"{prefix}/bb:1.36"]


@pytest.mark.parametrize("fixture", SAMPLES)
def test_an_event_of_another_registry_is_ignored_with_a_log_line(env, functions, fixture, caplog):
    body = sample(fixture)  # verbatim: registry jolovcr, not this app's
    body["id"] = str(uuid.uuid4())
    with caplog.at_level(logging.INFO, logger="shared"):
        functions["registry_event"](delivered(body))
    assert event_records(body["id"]) == []
    [line] = [r.getMessage() for r in caplog.records if body["id"] in r.getMessage()]
    assert "not this app's registry" in line and "jolovcr" in line


def undecodable(prefix: str) -> list[dict]:
    """Events that say too little to act on, each from this app's registry."""
    base = ours(sample(SAMPLES[0]), f"{prefix}/bb")
    no_action = copy.deepcopy(base)
    del no_action["data"]["action"]  # camel case: the type is lost in decoding, and data does not say it
    grid = {"id": str(uuid.uuid4()), "topic": entrypoints.services().settings.registry_id, "subject": "x",
            "eventTime": "2026-12-01T00:00:00Z", "dataVersion": "1.0", "data": base["data"]}  # no eventType
    no_repository = {**grid, "id": str(uuid.uuid4()), "eventType": "Microsoft.ContainerRegistry.ImagePushed",
                     "data": {"target": {"digest": "sha256:" + "0" * 64}}}
    return [no_action, grid, no_repository]


def test_an_event_the_app_cannot_understand_is_never_acknowledged(env, functions, prefix, caplog):
    for body in undecodable(prefix):
        with pytest.raises(ValidationError) as raised:
            functions["registry_event"](delivered(body))
        assert raised.value.code == "InvalidEvent" and body["id"] in raised.value.message
        assert event_records(body["id"]) == []  # not recorded: the redelivery is handled afresh
