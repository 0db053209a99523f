"""shared.core.events: both schemas, the ``specVersion`` spelling, what the Functions converter leaves of
it, and which registry an event is about."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.core.events import EventFormatError, parse_event, same_resource_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "eventgrid"
REGISTRY = ("/subscriptions/faa080af-c1d8-40ad-9cce-e1a450ca5b57/resourceGroups/jolov/providers/"
            "Microsoft.ContainerRegistry/registries/jolovcr")


def sample(name: str = "image_deleted.specVersion.json") -> dict:
    return json.loads((FIXTURES / name).read_text())


def never(*_):
    raise AssertionError("the login server was asked for although the event names its resource id")


@pytest.mark.parametrize("name", ["image_deleted.specVersion.json", "image_deleted.json"])
def test_either_spelling_of_specversion_is_a_cloud_event(name):
    event = parse_event(sample(name))
    assert (event.schema, event.type) == ("cloudevents", "Microsoft.ContainerRegistry.ImageDeleted")
    assert event.repository == "samples/nginx" and event.tag is None
    assert event.source == REGISTRY and event.host == "jolovcr.azurecr.io"
    assert event.time == "2021-09-08T06:49:40.5342401Z"


def test_what_the_functions_converter_leaves_of_a_camel_case_cloud_event_is_read_from_its_data():
    body = sample()
    # azure-functions' converter: not "specversion", so an EventGridEvent of id, subject and data only
    decoded = {"id": body["id"], "topic": None, "subject": body["subject"], "eventType": None, "eventTime": None,
               "dataVersion": None, "data": body["data"]}
    event = parse_event(decoded)
    assert (event.schema, event.type, event.source) == ("cloudevents", "Microsoft.ContainerRegistry.ImageDeleted",
                                                        None)
    assert event.time == body["data"]["timestamp"] and event.host == "jolovcr.azurecr.io"
    assert event.from_registry("/subscriptions/other", lambda: "JOLOVCR.azurecr.io")
    assert not event.from_registry(REGISTRY, lambda: "airlockacr.azurecr.io")
    for action, short in (("push", "ImagePushed"), ("chart_push", "ChartPushed"), ("chart_delete", "ChartDeleted")):
        assert parse_event({**decoded, "data": {**body["data"], "action": action}}).short_type == short


@pytest.mark.parametrize("change, message", [
    (lambda d: d["data"].pop("action"), "data.action"),
    (lambda d: d["data"].update(action="quarantine"), "data.action"),
    (lambda d: d["data"].pop("request"), "names no registry"),
    (lambda d: d["data"]["target"].pop("repository"), "data.target.repository"),
])
def test_a_decoded_event_that_does_not_say_enough_is_an_error(change, message):
    body = sample()
    decoded = {"id": body["id"], "subject": body["subject"], "data": body["data"]}
    change(decoded)
    with pytest.raises(EventFormatError, match=message):
        parse_event(decoded)


def test_an_event_grid_event_without_its_type_is_an_error_even_with_an_action():
    body = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "azure" / "eventgrid" /
                       "event-grid-schema" / "image_deleted.json").read_text())
    del body["eventType"]
    with pytest.raises(EventFormatError, match="missing eventType"):
        parse_event(body)


def test_an_attribute_given_twice_in_different_case_is_an_error():
    with pytest.raises(EventFormatError, match="twice"):
        parse_event({**sample(), "Type": "Microsoft.ContainerRegistry.ImagePushed"})


def test_the_resource_id_decides_which_registry_without_regard_to_case():
    event = parse_event(sample())
    assert event.from_registry(REGISTRY.lower() + "/", never)
    assert not event.from_registry(REGISTRY.replace("jolovcr", "jolovcr2"), never)
    assert same_resource_id(REGISTRY, REGISTRY.upper())
