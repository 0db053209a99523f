"""Any blob name the storage service accepts is processed once, and its marker stays in processed/.

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


def test_odd_blob_names_are_processed_once_inside_their_prefix(env, stack, seeded, functions, prefix):
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
        marker = f"processed/{blob_segment(name)}/{digest}.json"
        done = s.store.get_json(outcomes, marker)
        assert done and done["run_id"], label
        record = s.store.get_json(outcomes, f"runs/{done['run_id']}.json")
        assert record["manifest"]["name"] == name and record["status"] == "succeeded", label
        # a redelivery does no new work
        assert functions["manifest_uploaded"](func.blob.InputStream(data=data, name=f"{manifests}/{name}")) is None

    processed = s.store.list_names(outcomes, "processed/")  # listing still works
    mine = {n for n in processed if n.endswith(f"/{digest}.json")}
    assert mine == {f"processed/{blob_segment(n)}/{digest}.json" for n in names.values()}
    for marker in mine:
        assert marker.count("/") == 2 and len(marker) <= 1024 and "\x00" not in marker
