"""What one import costs must not grow with its run (issue 20 item 9).

Runs of 10 and 40 entries (chunks of 10, every entry new) and of 40 entries of which 10 are new go
through the registered queue function, one delivery at a time, against Azurite and the emulator. The
app's blob store is the real one, wrapped to count what each call moves: blob names listed, bytes read
and written, calls. The per-import figure is what the import deliveries moved, divided by the imports:
it includes the once-per-chunk work (the chunk's outcomes, read and written by the delivery that
completes it) and the once-per-run work (every chunk read and the final record written by the one that
finalises), which are as large as the chunk and the run, so their share per import is constant. Before
the fix, every import listed the run's whole ``entries/`` prefix, read the run's snapshot and read and
rewrote a record holding every import so far, so all three grew with the run.
"""
from __future__ import annotations

import json
import threading
import uuid

import pytest
from azure.functions.queue import QueueMessage

from shared import entrypoints
from tests.functions.test_queued_runs import deliver_blob, manifest, records_for, services
from tests.queue_host import call


class CountingStore:
    """The app's BlobStore, counting the blob names it lists, the bytes it reads and writes, its calls."""

    def __init__(self, real):
        self._real = real
        self._lock = threading.Lock()
        self.names = self.read = self.written = self.calls = 0

    def _add(self, names: int = 0, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.names += names
            self.read += read
            self.written += written
            self.calls += 1

    def snapshot(self) -> tuple[int, int, int, int]:
        with self._lock:
            return self.names, self.read, self.written, self.calls

    def list_names(self, container, prefix=None):
        names = self._real.list_names(container, prefix)
        self._add(names=len(names))
        return names

    def get_bytes(self, container, name):
        data = self._real.get_bytes(container, name)
        self._add(read=len(data or b""))
        return data

    def get_json(self, container, name):
        data = self.get_bytes(container, name)
        return None if data is None else json.loads(data)

    def get_bytes_etag(self, container, name):
        data, etag = self._real.get_bytes_etag(container, name)
        self._add(read=len(data or b""))
        return data, etag

    def get_json_etag(self, container, name):
        document, etag = self._real.get_json_etag(container, name)
        self._add(read=len(json.dumps(document, indent=2)) if document is not None else 0)
        return document, etag

    def put_json(self, container, name, document):
        self._add(written=len(json.dumps(document, indent=2)))
        return self._real.put_json(container, name, document)

    def put_json_if(self, container, name, document, etag, **kwargs):
        self._add(written=len(json.dumps(document, indent=2)))
        return self._real.put_json_if(container, name, document, etag, **kwargs)

    def put_bytes(self, container, name, data, **kwargs):
        self._add(written=len(data))
        return self._real.put_bytes(container, name, data, **kwargs)

    def create_once(self, container, name, data=b""):
        self._add(written=len(data))
        return self._real.create_once(container, name, data)

    def __getattr__(self, name):  # lease, delete, get_metadata, ...: counted as calls
        attribute = getattr(self._real, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self._add()
            return attribute(*args, **kwargs)

        return counted


def measure(functions, queue_host, text: str, name: str) -> dict:
    """Run a manifest through the blob trigger and the queue function (one delivery at a time): what the
    import deliveries moved per import (names listed, bytes read, bytes written, calls)."""
    s = services()
    store = CountingStore(s.store)
    s.__dict__["store"] = store  # the cached Services the registered functions use
    costs = []
    try:
        deliver_blob(functions, name, text)
        while True:
            [message] = list(queue_host.queue.receive_messages(max_messages=1, visibility_timeout=60)) or [None]
            if message is None:
                break
            kind = json.loads(message.content).get("kind", "chunk")
            before = store.snapshot()
            call(functions["run_worker"], "run_worker",
                 QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=message.dequeue_count))
            if kind == "import":
                costs.append([after - b for after, b in zip(store.snapshot(), before)])
            queue_host.queue.delete_message(message)
    finally:
        s.__dict__["store"] = store._real
    [record] = records_for(name)
    assert record["status"] == "succeeded", record
    return {"imports": len(costs), **{what: sum(c[i] for c in costs) / len(costs)
                                      for i, what in enumerate(("names", "read", "written", "calls"))}}


@pytest.fixture
def chunks_of_ten(env):
    env.setenv("RUN_CHUNK_ENTRIES", "10")
    env.setenv("OUTCOMES_CONTAINER", f"outcomes-{uuid.uuid4().hex[:10]}")
    entrypoints.reset()


def test_an_import_costs_the_same_in_a_run_four_times_larger_or_with_fewer_changes(env, seeded, functions,
                                                                                   queue_host, chunks_of_ten):
    prefix = f"s{uuid.uuid4().hex[:8]}"
    small = measure(functions, queue_host, manifest(f"{prefix}a", 10), f"{prefix}-10.txt")
    large = measure(functions, queue_host, manifest(f"{prefix}b", 40), f"{prefix}-40.txt")
    # 30 of 40 in place already (imported by a run not measured): a run of 40 entries, 10 of them new
    text = manifest(f"{prefix}c", 40)
    measure(functions, queue_host, "".join(line for i, line in enumerate(text.splitlines(keepends=True))
                                           if i % 4), f"{prefix}-30.txt")
    sparse = measure(functions, queue_host, text, f"{prefix}-40-10.txt")
    assert (small["imports"], large["imports"], sparse["imports"]) == (10, 40, 10)
    report = {n: {k: round(v, 1) for k, v in m.items()} for n, m in
              (("10/10", small), ("40/40", large), ("40/10", sparse))}
    print("per import:", report)
    for what in ("names", "read", "written", "calls"):
        # per import, the run four times larger with four times the changes costs the same (within 20%)
        assert large[what] <= 1.2 * small[what], (what, report)
    # four times the entries with the same 10 changes: per import, no more names listed and calls within
    # 25%; the bytes include each chunk's outcomes (read and written once by the delivery completing it)
    # and the final record, shared by fewer imports: bounded by RUN_CHUNK_ENTRIES, not by the run
    assert sparse["names"] <= 1.2 * small["names"] and sparse["calls"] <= 1.25 * small["calls"], report


def test_a_chunks_plan_reads_tag_pages_for_its_entries_not_for_the_repository(env, stack, seeded):
    """A chunk of 10 entries writing to a repository of 600 tags reads the first page of its tags and
    one page from just before the chunk's first tag, not all 6 pages (a queued run of 10,000 entries in
    one repository listed all 10,000 tags in each of its 200 chunks). Tags found in the pages keep their
    digests; a tag not found in a partial listing is read with a HEAD (new entries stay new). A
    repository that fits in the first page is listed whole, as before: nothing else is read."""
    from urllib.parse import unquote

    import httpx

    from devstack import oci
    from shared.adapters import registry
    from shared.handlers.sync import SyncEngine, check_manifest

    prefix = f"p{uuid.uuid4().hex[:8]}"
    repository, small = f"{prefix}/many", f"{prefix}/few"
    images = {repo: oci.build_image(repo, seed="pages") for repo in (repository, small)}
    digests = {repo: oci.push(image, f"{stack.backing_host}/{repo}:seed", tls_verify=False)
               for repo, image in images.items()}
    with httpx.Client(base_url=stack.backing_url, verify=False, timeout=30) as client:
        for repo, count in ((repository, 600), (small, 5)):
            for i in range(count):
                client.put(f"/v2/{repo}/manifests/t{i:04d}", content=images[repo].raw,
                           headers={"Content-Type": images[repo].media_type}).raise_for_status()
    s = services()
    pages: list[str] = []
    real = registry.ManifestReader._send

    def counting(self, method, path, scope, headers):
        if "/_tags" in path:
            pages.append(unquote(path))  # a next page's link has the repository's name escaped
        return real(self, method, path, scope, headers)

    env.setattr(registry.ManifestReader, "_send", counting)
    source = "library/busybox:1.36"
    # 10 tags in the middle of the 600 (t0300-t0309), and 3 the repository does not have (u0-u2)
    lines = [f"{source} => {repository}:t{i:04d}" for i in range(300, 310)] + \
            [f"{source} => {repository}:u{i}" for i in range(3)] + \
            [f"{source} => {small}:t{i:04d}" for i in range(3)] + [f"{source} => {small}:u0"]
    manifest = check_manifest("\n".join(lines) + "\n", s.settings)
    assert manifest.ok, manifest.errors
    plan = SyncEngine(s).plan(manifest)
    by_target = {item.entry.target: item for item in plan.items}
    assert all(by_target[f"{repository}:t{i:04d}"].target_digest == digests[repository] for i in range(300, 310))
    assert all(by_target[f"{repository}:u{i}"].target_digest is None for i in range(3))
    assert all(by_target[f"{small}:t{i:04d}"].target_digest == digests[small] for i in range(3))
    assert by_target[f"{small}:u0"].target_digest is None
    many = [p for p in pages if f"/{repository}/" in p]
    # the first page, then at most ceil(13 / 10) = 2 from just before t0300 (the repository has 6)
    assert len(many) == 3 and many[1].endswith("&last=t030/~"), many
    assert [p for p in pages if f"/{small}/" in p] == [f"/acr/v1/{small}/_tags?n=100"]
