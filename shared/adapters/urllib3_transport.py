"""An httpx transport on urllib3's connection pools, for the registry reads of a plan.

A plan is thousands of small requests (a manifest HEAD per entry at the source and at the ACR).
Measured against a local TLS registry with 16 threads (the plan's default concurrency), httpx's own
transport (httpcore) spent 1.57 ms of CPU per HEAD and urllib3's pool 0.70 ms, on 2 CPUs shared
with the registries. urllib3 is the pool requests and azure-core use; this module only adapts it to
httpx's transport interface, so the rest of the code keeps httpx's API (auth flows, redirects,
timeouts). With a proxy in the environment (``HTTPS_PROXY`` and the like), ``client`` returns a plain
httpx client instead, which honours it (httpx ignores environment proxies once given a transport).

urllib3 retries and redirects are off: httpx and ``shared.adapters.retrying`` own those. urllib3's
errors become httpx's transport errors, so a dropped connection or a timeout stays transient.

Bodies of requests sent through httpx (``request``, ``send``, ``stream``) are streamed as httpx
transports do: ``client.stream(...)`` reads them chunk by chunk (what arrives, not a fixed amount), so
a caller can stop at a size limit or a deadline and the connection is dropped instead of being read
to its end (the signature lookups of ``shared.adapters.signatures`` do). ``plain`` still reads the
whole (small) body at once.
"""
from __future__ import annotations

import ssl
import urllib.request
from typing import Optional

import httpx
import urllib3
from urllib3 import exceptions as u3


def _timeout(request: httpx.Request) -> urllib3.Timeout:
    """httpx's per-request timeouts (``request.extensions["timeout"]``) as urllib3's."""
    spec = request.extensions.get("timeout") or {}
    return urllib3.Timeout(connect=spec.get("connect"), read=spec.get("read"))


class _Body(httpx.SyncByteStream):
    """A urllib3 response body as httpx's stream: each chunk is what one read returned (``read1``), so
    a slow sender is seen at every arrival; closing before the end drops the connection."""

    def __init__(self, response: urllib3.BaseHTTPResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._done = False

    def __iter__(self):
        try:
            while True:
                chunk = self._response.read1(64 * 1024, decode_content=False)
                if not chunk:
                    self._done = True
                    return
                yield chunk
        except u3.HTTPError as exc:
            raise _translated(exc, self._request) from exc

    def close(self) -> None:
        if not self._done:
            self._response.close()  # unread bytes stay on the wire: the connection cannot be reused
        self._response.release_conn()  # back to the pool (a closed one is replaced on next use)


class Urllib3Transport(httpx.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int = 32) -> None:
        # one pool per origin, at most ``max_connections`` connections each; block=True: a request
        # beyond them waits for a free connection. A worker runs several chunk plans at once, each with
        # PLAN_CONCURRENCY threads: without blocking, every request past the limit opened a TLS
        # connection only to close it after one request (urllib3: "Connection pool is full").
        self._pools = urllib3.PoolManager(num_pools=64, maxsize=max_connections, ssl_context=ssl_context,
                                          retries=False, block=True)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._pools.urlopen(
                request.method, str(request.url), body=request.read() or None,
                headers=dict(request.headers.multi_items()), redirect=False, retries=False,
                timeout=_timeout(request), pool_timeout=_timeout(request).connect_timeout, preload_content=False,
                decode_content=False)
        except u3.HTTPError as exc:
            raise _translated(exc, request) from exc
        return httpx.Response(status_code=response.status, headers=list(response.headers.items()),
                              stream=_Body(response, request), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    def close(self) -> None:
        self._pools.clear()


class Client(httpx.Client):
    """An httpx client whose connections are urllib3's, plus ``plain``: one request straight on the
    urllib3 pool, without httpx's client machinery (request and response models, cookies, auth and
    redirect flows: about half of the CPU of a small HEAD), for the many manifest reads of a plan."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int, timeout: httpx.Timeout,
                 headers: Optional[dict] = None) -> None:
        self._direct = Urllib3Transport(ssl_context, max_connections=max_connections)
        super().__init__(verify=ssl_context, timeout=timeout, headers=headers, follow_redirects=True,
                         transport=self._direct)
        self._plain_timeout = urllib3.Timeout(connect=timeout.connect, read=timeout.read)

    def plain(self, method: str, url: str, *, headers: dict) -> httpx.Response:
        """``request(method, url, headers=headers)`` for a bodiless request, answered as it is (no
        redirect followed: a registry that redirects a manifest read goes through ``request``)."""
        target = httpx.URL(url)
        merged = httpx.Headers(self.headers)
        merged.update(headers)  # case-insensitive: the caller's Accept replaces the client's default
        request = httpx.Request(method, target, headers=merged)
        try:
            response = self._direct._pools.urlopen(method, url, headers=dict(merged.multi_items()), redirect=False,
                                                   retries=False, timeout=self._plain_timeout, preload_content=True,
                                                   pool_timeout=self._plain_timeout.connect_timeout,
                                                   decode_content=False)
        except u3.HTTPError as exc:
            raise _translated(exc, request) from exc
        answer = httpx.Response(status_code=response.status, headers=list(response.headers.items()),
                                content=response.data, request=request)
        if answer.is_redirect:
            return self.request(method, url, headers=headers)
        return answer


def _translated(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    if isinstance(exc, u3.EmptyPoolError):  # no connection came free within the connect timeout
        return httpx.PoolTimeout(str(exc), request=request)
    if isinstance(exc, (u3.NewConnectionError, u3.SSLError)):  # before ConnectTimeoutError: its subclass
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, u3.ConnectTimeoutError):
        return httpx.ConnectTimeout(str(exc), request=request)
    if isinstance(exc, u3.ReadTimeoutError):
        return httpx.ReadTimeout(str(exc), request=request)
    if isinstance(exc, (u3.ProtocolError, u3.DecodeError)):  # reset, closed mid-response, broken framing
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.TransportError(str(exc), request=request)


def client(ssl_context: ssl.SSLContext, *, max_connections: int, timeout: httpx.Timeout,
           headers: Optional[dict] = None) -> httpx.Client:
    """``Client``; or, with a proxy in the environment (``NO_PROXY`` alone is none), httpx's own
    client, which honours it."""
    if any(scheme != "no" for scheme in urllib.request.getproxies()):  # "no": NO_PROXY alone, no proxy
        return httpx.Client(verify=ssl_context, timeout=timeout, headers=headers, follow_redirects=True,
                            limits=httpx.Limits(max_connections=max_connections))
    return Client(ssl_context, max_connections=max_connections, timeout=timeout, headers=headers)
