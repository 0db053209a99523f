"""shared.adapters.urllib3_transport against a local HTTP server: what httpx did, done on urllib3's pools."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shared.adapters import urllib3_transport


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, body: bytes) -> None:
        Handler.seen.append((self.command, self.path, self.headers.get_all("Accept"), self.client_address[1]))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/pause":
            time.sleep(0.1)
        if self.path == "/endless":  # a body that never ends, sent in pieces
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                for _ in range(100_000):
                    self.wfile.write(b"x" * 16384)
                    self.wfile.flush()
            except OSError:  # the client went away: the point of the test
                Handler.seen.append(("ABANDONED", self.path, None, self.client_address[1]))
            return
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/v2/x/manifests/1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Docker-Content-Digest", "sha256:" + "ab" * 32)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(b'{"schemaVersion": 2}')

    def do_GET(self) -> None:
        self._answer(b'{"schemaVersion": 2}')


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_no_proxy_alone_keeps_the_urllib3_client(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert hasattr(make_client(), "plain")


def make_client(read: float = 5.0) -> urllib3_transport.Client:
    return urllib3_transport.client(ssl.create_default_context(), max_connections=4,
                                    timeout=httpx.Timeout(read, connect=2.0), headers={"User-Agent": "acr-airlock"})


def test_plain_reads_keep_one_connection_and_send_the_callers_accept_only(server):
    Handler.seen.clear()
    client = make_client()
    for _ in range(5):
        response = client.plain("HEAD", f"{server}/v2/x/manifests/1",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert response.status_code == 200 and response.headers["Docker-Content-Digest"] == "sha256:" + "ab" * 32
    got = client.plain("GET", f"{server}/v2/x/manifests/1", headers={"Accept": "application/json"})
    assert got.json() == {"schemaVersion": 2}
    assert [accept for _, _, accept, _ in Handler.seen] == [["application/vnd.oci.image.manifest.v1+json"]] * 5 + [
        ["application/json"]]  # the client's default "*/*" is replaced, not sent beside it
    assert len({port for *_, port in Handler.seen}) == 1  # one kept-alive connection


def test_a_burst_beyond_the_pool_waits_for_its_connections(server):
    """12 reads at once on a pool of 4: they share 4 connections (none opened only to be thrown away)."""
    from concurrent.futures import ThreadPoolExecutor

    Handler.seen.clear()
    client = make_client()
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: client.plain("HEAD", f"{server}/pause", headers={}).status_code, range(12)))
    assert statuses == [200] * 12
    assert len({port for *_, port in Handler.seen}) <= 4


def test_no_free_connection_within_the_connect_timeout_is_a_pool_timeout(server):
    client = urllib3_transport.client(ssl.create_default_context(), max_connections=1,
                                      timeout=httpx.Timeout(5.0, connect=0.2), headers={})
    holder = threading.Thread(target=lambda: client.plain("GET", f"{server}/slow", headers={}))
    holder.start()
    time.sleep(0.2)
    try:
        with pytest.raises(httpx.PoolTimeout):
            client.plain("HEAD", f"{server}/v2/x/manifests/1", headers={})
    finally:
        holder.join()


def test_requests_through_httpx_use_the_same_pools_and_follow_redirects(server):
    Handler.seen.clear()
    client = make_client()
    response = client.get(f"{server}/moved")
    assert response.status_code == 200 and [path for _, path, *_ in Handler.seen] == ["/moved", "/v2/x/manifests/1"]
    assert client.plain("GET", f"{server}/moved", headers={}).status_code == 200  # plain hands redirects to httpx


def test_a_streamed_body_can_be_abandoned_and_its_connection_slot_comes_back(server):
    """client.stream reads as bytes arrive; closing it early drops the connection (the rest is never
    read) and frees the pool slot: with one connection, the next request still gets through."""
    Handler.seen.clear()
    client = urllib3_transport.client(ssl.create_default_context(), max_connections=1,
                                      timeout=httpx.Timeout(5.0, connect=1.0), headers={})
    read = 0
    with client.stream("GET", f"{server}/endless") as response:
        for chunk in response.iter_raw():
            read += len(chunk)
            if read > 100_000:
                break
    assert 100_000 < read < 1_000_000  # 1.6 GB were on offer
    assert client.get(f"{server}/v2/x/manifests/1").json() == {"schemaVersion": 2}
    deadline = time.monotonic() + 5
    while not any(kind == "ABANDONED" for kind, *_ in Handler.seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(kind == "ABANDONED" for kind, *_ in Handler.seen)  # the server saw the connection go


def test_failures_are_httpx_transport_errors(server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    client = make_client(read=0.3)
    with pytest.raises(httpx.ConnectError):
        client.plain("HEAD", f"http://127.0.0.1:{closed}/v2/", headers={})
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{closed}/v2/")
    with pytest.raises(httpx.ReadTimeout):
        client.plain("GET", f"{server}/slow", headers={})
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{server}/slow")


def test_with_a_proxy_in_the_environment_the_client_is_httpx_own(server, monkeypatch):
    """A proxy set in the environment is honoured as httpx honours it (httpx ignores environment
    proxies once it is given a transport, so the urllib3 one is not used then)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_proxy = probe.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead_proxy}")
    monkeypatch.setenv("NO_PROXY", "")
    client = make_client()
    assert not hasattr(client, "plain")
    Handler.seen.clear()
    with pytest.raises((httpx.ProxyError, httpx.ConnectError)):
        client.head(f"{server}/v2/x/manifests/1")
    assert Handler.seen == []  # it went to the (dead) proxy, not straight to the server
