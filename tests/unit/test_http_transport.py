"""The http.client transport under httpx (shared/adapters/http_transport.py), against a real local
HTTP server: keep-alive reuse, a connection the server dropped while idle, timeouts and refused
connections as httpx's transport errors, and the httpx features above it (redirects, auth, query)."""
from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shared.adapters.http_transport import QuickClient, QuickResponse, StdlibTransport


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    drop_after_response = False  # close the socket without saying so (an idle keep-alive timeout)

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        if type(self).drop_after_response:
            self.close_connection = True

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b'{"tags": ', b'["a", "b"]', b"}"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
            return
        if self.path.startswith("/close"):
            body = b"closing"
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.path.startswith("/redirect"):
            return self._answer(307, b"", [("Location", "/target")])
        auth = self.headers.get("Authorization", "")
        self._answer(200, f"{self.command} {self.path} {auth}".encode(),
                     [("Docker-Content-Digest", "sha256:abc"), ("X-Twice", "a"), ("X-Twice", "b")])

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(200, body, [("Content-Type", "text/plain")])


@pytest.fixture
def server():
    class Local(Handler):
        drop_after_response = False

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Local)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, Local, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client(**kwargs) -> tuple[QuickClient, StdlibTransport]:
    transport = StdlibTransport(ssl.create_default_context())
    return QuickClient(transport=transport, follow_redirects=True, **kwargs), transport


def test_requests_reuse_one_connection_per_concurrent_caller(server):
    _, _, base = server
    client, transport = _client()
    with client:
        for i in range(20):
            response = client.get(f"{base}/v2/r{i}/manifests/1.0", params={"n": "5", "last": "a b"})
            assert response.status_code == 200
            assert response.text == f"GET /v2/r{i}/manifests/1.0?n=5&last=a+b "
        assert transport.connections_opened == 1
        head = client.head(f"{base}/v2/x/manifests/1.0")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Docker-Content-Digest"] == "sha256:abc"
        assert head.headers.get_list("X-Twice") == ["a", "b"]
        assert int(head.headers["Content-Length"]) == len("HEAD /v2/x/manifests/1.0 ")
        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(lambda i: client.get(f"{base}/p{i}").text, range(200)))
        assert texts == [f"GET /p{i} " for i in range(200)]
        assert transport.connections_opened <= 1 + 8


def test_form_posts_auth_and_redirects_go_through_httpx(server):
    _, _, base = server
    client, _ = _client()
    with client:
        posted = client.post(f"{base}/oauth2/token", data={"scope": ["repository:a:pull", "repository:b:pull"],
                                                           "service": "acr"})
        assert posted.text == "scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull&service=acr"
        authed = client.get(f"{base}/token", auth=httpx.BasicAuth("user", "secret"))
        assert authed.text == "GET /token Basic " + base64.b64encode(b"user:secret").decode()
        redirected = client.get(f"{base}/redirect")
        assert redirected.status_code == 200 and redirected.text == "GET /target "
        assert [r.status_code for r in redirected.history] == [307]


def test_a_connection_the_server_dropped_while_idle_is_replaced(server):
    _, handler, base = server
    handler.drop_after_response = True  # every connection dies after one response, unannounced
    client, transport = _client()
    with client:
        for i in range(5):
            assert client.get(f"{base}/r{i}").text == f"GET /r{i} "
        assert transport.connections_opened == 5


def test_timeouts_and_refusals_are_httpx_transport_errors(server):
    _, _, base = server
    client, _ = _client(timeout=httpx.Timeout(0.2))
    with client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"{base}/slow")
        assert client.get(f"{base}/after").text == "GET /after "  # the timed-out connection is not reused
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    client, _ = _client()
    with client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{closed_port}/v2/")


def test_closed_transport_closes_its_idle_connections(server):
    _, _, base = server
    client, transport = _client()
    client.get(f"{base}/one")
    idle = [c for connections in transport._idle.values() for c in connections]
    assert len(idle) == 1 and idle[0].sock is not None
    client.close()
    assert idle[0].sock is None
    with pytest.raises(RuntimeError):
        transport.handle_request(httpx.Request("GET", f"{base}/two"))


def test_quick_requests_answer_as_httpx_does(server):
    _, _, base = server
    transport = StdlibTransport(ssl.create_default_context())
    with QuickClient(transport=transport, headers={"User-Agent": "acr-airlock"}, follow_redirects=True) as client:
        for method in ("HEAD", "GET"):
            quick = client.quick(method, f"{base}/v2/a/manifests/1.0?n=1", {"Accept": "application/json"})
            full = client.request(method, f"{base}/v2/a/manifests/1.0?n=1", headers={"Accept": "application/json"})
            assert type(quick) is QuickResponse
            assert (quick.status_code, quick.content) == (full.status_code, full.content)
            assert quick.headers.get_list("X-Twice") == ["a", "b"]
            assert quick.headers["docker-content-digest"] == "sha256:abc"
        assert transport.connections_opened == 1
        redirected = client.quick("GET", f"{base}/redirect", {})
        assert redirected.status_code == 200 and redirected.text == "GET /target "  # httpx followed it


def test_quick_requests_leave_other_transports_to_httpx(server):
    """An origin httpx would send elsewhere (a proxy from the environment is a mount) is not
    short-cut to the http.client connections."""
    _, _, base = server
    transport = StdlibTransport(ssl.create_default_context())
    with QuickClient(transport=transport, mounts={base: httpx.HTTPTransport()}) as client:
        response = client.quick("GET", f"{base}/mounted", {})
        assert isinstance(response, httpx.Response) and response.text == "GET /mounted "
        assert transport.connections_opened == 0


def test_chunked_bodies_and_announced_closes(server):
    _, _, base = server
    client, transport = _client()
    with client:
        assert client.get(f"{base}/chunked").json() == {"tags": ["a", "b"]}
        assert client.quick("GET", f"{base}/chunked", {}).json() == {"tags": ["a", "b"]}
        assert client.get(f"{base}/after-chunked").text == "GET /after-chunked "  # the connection stayed usable
        assert transport.connections_opened == 1
        assert client.get(f"{base}/close").text == "closing"
        assert client.get(f"{base}/next").text == "GET /next "
        assert transport.connections_opened == 2  # "Connection: close" was honoured


def test_header_injection_is_refused(server):
    _, _, base = server
    client, _ = _client()
    with client, pytest.raises(httpx.LocalProtocolError):
        client.quick("GET", f"{base}/x", {"Accept": "a\r\nX-Evil: 1"})
