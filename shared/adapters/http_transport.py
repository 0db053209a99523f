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
import socket
import ssl
import threading
from collections import deque
from typing import Optional

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
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        target = url.raw_path.decode("ascii")
        body = request.read() or None
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
                connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in request.headers.raw:
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
            return httpx.Response(response.status, headers=response.msg.items(),
                                  stream=httpx.ByteStream(content), request=request,
                                  extensions={"http_version": b"HTTP/1.1",
                                              "reason_phrase": (response.reason or "").encode("ascii", "replace")})
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for connections in idle:
            while connections:
                connections.pop().close()
