"""An httpx transport on the standard library's ``http.client``: keep-alive HTTP/1.1 connections,
reused across threads from an idle stack per origin.

Why: a plan reads thousands of manifests with one small HEAD each, from 16 threads. Measured on
the stand-in (bench/plan.py), httpx's default transport (httpcore) cost ~0.85 ms of CPU per
request, most of it in its connection-pool bookkeeping and locks, against ~0.4 ms for the same
request over ``http.client``; the httpx client above it (URLs, headers, auth, redirects, the
``Response`` the adapters read) stays as it is.

What it does not do: HTTP/2, proxies (httpx mounts its own transports for proxies taken from the
environment, which keep working), streaming (responses are read whole: the registry adapters
read small JSON bodies and headers). A connection found closed by the server when reused (an
idle keep-alive timeout) is replaced and the request sent once more; errors map to httpx's
transport exceptions, which the retry policy treats as transient.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections import deque
from typing import Optional
from urllib.parse import urlsplit

import httpx

MAX_IDLE_PER_ORIGIN = 64
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


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

    def _connect(self, origin: tuple[str, str, int], timeout: Optional[float]) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections_opened += 1
        return connection

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        status, reason, items, content = self._exchange(
            origin, request.method, url.raw_path.decode("ascii"), request.headers.raw, request.read() or None,
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
                connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    connection.putheader(name, value)
                connection.endheaders(body)
                response = connection.getresponse()
                content = response.read()
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
            except (OSError, http.client.HTTPException) as exc:
                if connection is not None:
                    connection.close()
                error = httpx.ConnectError if phase == "connect" else httpx.ReadError
                raise error(str(exc) or type(exc).__name__, request=request) from exc
            if response.will_close or self._closed or len(idle) >= self._max_idle:
                connection.close()
            else:
                idle.append(connection)
            return response.status, response.reason or "", response.msg.items(), content
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for connections in idle:
            while connections:
                connections.pop().close()


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
