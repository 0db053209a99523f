"""Any blob name the storage service accepts is processed once, and its claim stays in claims/.

Through the registered blob function against Azurite: names with ``../``, ``%``, Unicode, a NUL
and 1,024 characters (the service's limit). Before, a ``../`` name could never be processed and
a NUL broke listing the outcomes container.
"""
from __future__ import annotations

import hashlib
import uuid

import azure.functions as func
import pytest

from shared import entrypoints
from shared.core.names import blob_segment

pytestmark = pytest.mark.timeout(300)


def odd_names(prefix: str) -> dict[str, str]:
    return {
        "dot-dot": f"../../{prefix}/../escape.txt",
        "percent": f"{prefix} 100% done %2F%00.txt",
        "unicode": f"{prefix}/naïve café 🚢 ÆØÅ 日本.txt",
        "nul": f"{prefix}/nul\x00byte.txt",
        "1024 characters": f"{prefix}/" + "n" * (1024 - len(prefix) - 5) + ".txt",
    }


@pytest.fixture
def prefix():
    return f"ob{uuid.uuid4().hex[:8]}"


def test_odd_blob_names_are_processed_once_inside_their_prefix(env, stack, seeded, functions, queue_host, prefix):
    s = entrypoints.services()
    manifests, outcomes = s.settings.manifests_container, s.settings.outcomes_container
    text = f"nginx:1.27 => {prefix}/nginx\n"
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    names = odd_names(prefix)
    assert len(names["1024 characters"]) == 1024
    stored = set()
    for label, name in names.items():
        try:
            s.store.put_bytes(manifests, name, data)
            stored.add(label)
        except Exception:  # noqa: BLE001 - Azurite resolves '..' segments and refuses the path
            pass
    assert {"percent", "unicode", "1024 characters"} <= stored, stored

    # the handler reads nothing back from the manifests container: every name goes through,
    # including the '../' one the trigger could deliver from a service that keeps it
    for label, name in names.items():
        functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{manifests}/{name}"))
        [claim_blob] = s.store.list_names(outcomes, f"claims/{blob_segment(name)}/")  # one claim of this upload
        claim = s.store.get_json(outcomes, claim_blob)
        assert claim and claim["run_id"], label
        # a blob the trigger cannot read back is known by its content; one it can, by the upload's ETag
        assert (f"sha256-{digest}" in claim_blob) == (label not in stored), (label, claim_blob)
        queue_host.drain()
        record = s.store.get_json(outcomes, f"runs/{claim['run_id']}.json")
        assert record["manifest"]["name"] == name and record["status"] == "succeeded", label
        # a redelivery does no new work: nothing is queued again
        functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{manifests}/{name}"))
        assert queue_host.pending() == 0, label

    claims = s.store.list_names(outcomes, "claims/")  # listing still works
    mine = {n for n in claims if any(n.startswith(f"claims/{blob_segment(x)}/") for x in names.values())}
    assert len(mine) == len(names)  # one claim per name, each inside its own prefix
    for marker in mine:
        assert marker.count("/") == 2 and len(marker) <= 1024 and "\x00" not in marker


def test_an_odd_event_id_is_recorded_once_inside_events(env, functions, prefix):
    s = entrypoints.services()
    outcomes = s.settings.outcomes_container
    odd = f"../../{prefix}/a_b ünï\x00%2F" + "x" * 300
    similar = odd.replace("_", "/")  # an ad-hoc sanitiser (non-alnum -> "_") would merge these two
    for event_id in (odd, similar, odd):
        body = {"id": event_id, "topic": s.settings.registry_id, "subject": f"{prefix}/app:1",
                "eventType": "Microsoft.ContainerRegistry.ImageDeleted", "eventTime": "2026-12-01T00:00:00Z",
                "dataVersion": "1.0", "data": {"target": {"repository": f"{prefix}/app", "tag": "1",
                                                          "digest": "sha256:" + "cd" * 32}}}
        functions["registry_event"](func.EventGridEvent(
            id=body["id"], data=body["data"], topic=body["topic"], subject=body["subject"],
            event_type=body["eventType"], event_time=None, data_version=body["dataVersion"]))
    names = [n for n in s.store.list_names(outcomes, "events/") if blob_segment(odd, 120)[:60] in n
             or blob_segment(similar, 120)[:60] in n]
    assert len(names) == 2, names  # two distinct events, the redelivery of the first one did nothing
    for name in names:
        assert name.count("/") == 4 and name.startswith("events/")
        assert s.store.get_json(outcomes, name)["event"]["id"] in (odd, similar)
