"""An httpx transport of keep-alive HTTP/1.1 connections (the standard library's sockets and TLS),
reused across threads from an idle stack per origin, and a client that sends the registry
adapters' bodiless reads past httpx's request machinery.

Why: a plan reads thousands of manifests with one small HEAD each, from 16 threads. Profiled on
the stand-in (bench/plan.py), httpx with its default transport (httpcore) cost ~1.1 ms of CPU per
request: about half in httpx's client layers (request building, cookies, auth flow, response
objects), most of the rest in httpcore's pool bookkeeping and locks; ``http.client`` then spent a
quarter of what was left parsing headers with the ``email`` package. Requests here are written
and their responses read directly (status line, headers, a Content-Length or chunked body).

What it does not do: HTTP/2, proxies (httpx mounts its own transports for proxies taken from the
environment, and those origins go through them), streaming (responses are read whole: the
registry adapters read small JSON bodies and headers). A connection found closed by the server
when reused (an idle keep-alive timeout) is replaced and the request sent once more; errors map to
httpx's transport exceptions, which the retry policy treats as transient.
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
from collections import deque
from typing import Optional
from urllib.parse import urlsplit

import httpx

MAX_IDLE_PER_ORIGIN = 64
MAX_LINE = 65536
MAX_HEADERS = 200


class _Stale(Exception):
    """The server closed the connection before answering."""


_STALE = (_Stale, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Connection:
    __slots__ = ("sock", "reader")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = None


def _read_line(reader) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ValueError("header line too long")
    return line


def _read_response(reader, method: str) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
    """(status, reason, headers, body, whether the server closes the connection) of one response."""
    while True:
        line = _read_line(reader)
        if not line:
            raise _Stale("the server closed the connection")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {line[:80]!r}")
        status = int(code)
        headers: list[tuple[str, str]] = []
        while True:
            line = _read_line(reader)
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or len(headers) >= MAX_HEADERS:
                raise ValueError("malformed response headers")
            headers.append((name.strip(), value.strip()))
        if not 100 <= status < 200:
            break  # 1xx (100 Continue): their headers are read and dropped; the answer follows
    fields = {name.lower(): value for name, value in headers}
    closes = version == "HTTP/1.0" or "close" in fields.get("connection", "").lower()
    if method == "HEAD" or status in (204, 304):
        return status, reason, headers, b"", closes
    if "chunked" in fields.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int(_read_line(reader).split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while _read_line(reader) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunk = reader.read(size)
            if len(chunk) < size or reader.read(2) not in (b"\r\n",):
                raise ValueError("incomplete chunked body")
            chunks.append(chunk)
        return status, reason, headers, b"".join(chunks), closes
    if "content-length" in fields:
        length = int(fields["content-length"])
        body = reader.read(length)
        if len(body) < length:
            raise ValueError(f"incomplete body: {len(body)} of {length} bytes")
        return status, reason, headers, body, closes
    return status, reason, headers, reader.read(), True  # delimited by the end of the connection


class StdlibTransport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, *, max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN):
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], deque] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.connections_opened = 0  # for tests and measurements

    def _idle_for(self, origin: tuple[str, str, int]) -> deque:
        idle = self._idle.get(origin)
        if idle is None:
            with self._lock:
                idle = self._idle.setdefault(origin, deque())
        return idle

    def _connect(self, origin: tuple[str, str, int], timeout: Optional[float]) -> _Connection:
        scheme, host, port = origin
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self.connections_opened += 1
        return _Connection(sock)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        status, reason, items, content = self._exchange(
            origin, request.method, url.raw_path.decode("ascii"), headers, request.read() or None,
            request.extensions.get("timeout") or {}, request)
        return httpx.Response(status, headers=items, stream=httpx.ByteStream(content), request=request,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": reason.encode("ascii", "replace")})

    def quick(self, method: str, url: str, headers: list[tuple[str, str]], timeouts: dict) -> "QuickResponse":
        """One request without httpx's request/response machinery (``QuickClient.quick``)."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        status, _, items, content = self._exchange(origin, method, target, [("Host", host), *headers], None,
                                                   timeouts, None)
        return QuickResponse(status, httpx.Headers(items), content)

    def _exchange(self, origin: tuple[str, str, int], method: str, target: str, headers, body: Optional[bytes],
                  timeouts: dict, request: Optional[httpx.Request]) -> tuple[int, str, list, bytes]:
        """(status, reason, header items, body) of one request on a kept-alive connection."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        payload = _request_bytes(method, target, headers) + (body or b"")
        idle = self._idle_for(origin)
        for attempt in (1, 2):
            try:
                connection, reused = idle.pop(), True
            except IndexError:
                connection, reused = None, False
            phase = "connect"
            try:
                if connection is None:
                    connection = self._connect(origin, timeouts.get("connect"))
                phase = "read"
                connection.sock.settimeout(timeouts.get("read"))
                connection.sock.sendall(payload)
                status, reason, items, content, closes = _read_response(connection.reader, method)
            except _STALE as exc:
                if connection is not None:
                    connection.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection: once more on a fresh one
                raise httpx.RemoteProtocolError(f"connection closed: {exc}", request=request) from exc
            except (socket.timeout, TimeoutError) as exc:
                if connection is not None:
                    connection.close()
                error = httpx.ConnectTimeout if phase == "connect" else httpx.ReadTimeout
                raise error(str(exc) or "timed out", request=request) from exc
            except OSError as exc:
                if connection is not None:
                    connection.close()
                error = httpx.ConnectError if phase == "connect" else httpx.ReadError
                raise error(str(exc) or type(exc).__name__, request=request) from exc
            except ValueError as exc:
                if connection is not None:
                    connection.close()
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if closes or self._closed or len(idle) >= self._max_idle:
                connection.close()
            else:
                idle.append(connection)
            return status, reason, items, content
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for connections in idle:
            while connections:
                connections.pop().close()


def _request_bytes(method: str, target: str, headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise httpx.LocalProtocolError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class QuickResponse:
    """What the registry adapters read of a response: status, headers, body."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self):
        return json.loads(self.content)


class QuickClient(httpx.Client):
    """An httpx client whose ``quick`` sends a bodiless request straight to its StdlibTransport:
    no httpx Request/Response objects, cookies, auth flow or event hooks (a plan's thousands of
    manifest HEADs spent about as much CPU in those as in the request itself). A redirect, a proxy
    from the environment or another transport takes the ordinary ``request`` path."""

    def __init__(self, *, transport: StdlibTransport, **kwargs):
        super().__init__(transport=transport, **kwargs)
        self._stdlib = transport
        self._quick_headers = [(k, v) for k, v in self.headers.items()
                               if k.lower() not in ("accept-encoding", "connection")]
        timeout = self.timeout
        self._timeouts = {"connect": timeout.connect, "read": timeout.read}
        self._direct: dict[str, bool] = {}

    def quick(self, method: str, url: str, headers: dict[str, str]):
        origin = url[:url.find("/", url.find("//") + 2)]
        direct = self._direct.get(origin)
        if direct is None:  # a proxy taken from the environment mounts another transport
            direct = self._direct[origin] = self._transport_for_url(httpx.URL(url)) is self._stdlib
        if not direct:
            return self.request(method, url, headers=headers)
        names = {name.lower() for name in headers}
        sent = [(k, v) for k, v in self._quick_headers if k.lower() not in names] + list(headers.items())
        response = self._stdlib.quick(method, url, sent, self._timeouts)
        if 300 <= response.status_code < 400 and "location" in response.headers:
            return self.request(method, url, headers=headers)  # httpx follows redirects
        return response
