"""Referrers carried by queued runs (the registered functions, as the Functions host calls them): the
import stage carries an entry's referrers after its image lands; a redelivered import message whose
earlier delivery imported the image (its ``started`` marker, the digest in place) carries them without
importing the image again; a duplicate after that does nothing, and the record lists each referrer once.
"""
from __future__ import annotations

import json
import uuid

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage

from shared import entrypoints
from shared.adapters.acr import ImportRequest
from tests.queue_host import InvocationContext
from tests.referrer_graph import COSIGN_SIG, SBOM_TYPE, Acr, signed_image

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def prefix():
    return f"qr{uuid.uuid4().hex[:8]}"


@pytest.fixture
def acr(stack):
    reader = Acr(stack)
    yield reader
    reader.http.close()


def record_of(name: str) -> dict:
    s = entrypoints.services()
    for blob in s.store.list_names(s.settings.outcomes_container, "runs/"):
        record = s.store.get_json(s.settings.outcomes_container, blob)
        if record and record.get("manifest", {}).get("name") == name:
            return record
    raise AssertionError(f"no record of {name}")


def upload(functions, name: str, text: str) -> None:
    container = entrypoints.services().settings.manifests_container
    functions["manifest_uploaded"](func.blob.InputStream(data=text.encode(), name=f"{container}/{name}"))


def test_a_queued_import_carries_the_referrers(env, stack, functions, queue_host, prefix, acr):
    image, document, sig_digest = signed_image(stack, f"{prefix}/app", prefix)
    name = f"{prefix}.txt"
    upload(functions, name, f"quay.io/{prefix}/app:1.0 => {prefix}/mirror:1.0\n")
    queue_host.drain()
    record = record_of(name)
    assert record["status"] == "succeeded", record
    [entry] = record["entries"]
    assert entry["result"] == "imported"
    assert sorted((i["via"], i["digest"], i["result"]) for i in entry["referrers"]) == sorted(
        [("referrers", document.digest, "imported"), ("tag", sig_digest, "imported")])
    assert record["summary"]["referrers"]["imported"] == 2
    assert acr.referrers(f"{prefix}/mirror", image.digest) == [document.referrer_descriptor()]
    assert acr.tag_digest(f"{prefix}/mirror", f"sha256-{image.digest[7:]}.sig") == sig_digest


def test_a_redelivered_import_carries_the_referrers_once(env, stack, functions, queue_host, prefix, acr):
    image, document, sig_digest = signed_image(stack, f"{prefix}/app", prefix)
    name = f"{prefix}.txt"
    target = f"{prefix}/mirror"
    upload(functions, name, f"quay.io/{prefix}/app:1.0 => {target}:1.0\n")
    assert queue_host.once()  # the chunk: it plans and queues the entry's import message
    [message] = list(queue_host.queue.receive_messages(max_messages=1, visibility_timeout=60))
    body = json.loads(message.content)
    run_id, key = body["run_id"], body["key"]

    # an earlier delivery started the import and the image landed; it died before settling the entry
    s = entrypoints.services()
    s.store.put_json(s.settings.outcomes_container, f"runs-work/{run_id}/started/{key}.json",
                     {"source_digest": image.digest})
    s.acr.import_image(ImportRequest(s.settings.endpoint_for("quay.io"), f"{prefix}/app@{image.digest}",
                                     [f"{target}:1.0"], [], "NoForce"), timeout=60)
    assert acr.referrers(target, image.digest) == []  # the image came alone

    for delivery in (2, 3):  # the redelivery, then a duplicate of it
        functions["run_worker"](QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=delivery),
                                context=InvocationContext("run_worker"))
    queue_host.queue.delete_message(message)
    queue_host.drain()
    record = record_of(name)
    assert record["status"] == "succeeded", record
    [entry] = record["entries"]
    assert (entry["result"], entry["attempts"]) == ("imported", 1)  # found landed: not imported again
    assert sorted((i["artifact_type"], i["result"]) for i in entry["referrers"]) == sorted(
        [(SBOM_TYPE, "imported"), (COSIGN_SIG, "imported")])
    assert acr.referrers(target, image.digest) == [document.referrer_descriptor()]  # listed once
    assert acr.tag_digest(target, f"sha256-{image.digest[7:]}.sig") == sig_digest
