"""A paging front for the stand-in's docker-registry: ``tags/list`` with ``n``/``last`` and ``Link``.

Debian's docker-registry is distribution 2.8.2, whose ``GET /v2/<name>/tags/list`` ignores ``n``
and ``last`` and answers every tag at once, unsorted. The registries the product meets in the
world page it: distribution 3 and ACR (``/v2/<name>/tags/list?n=2`` answers the first two tags in
lexical order and ``Link: </v2/<name>/tags/list?last=v1&n=2&orderby=>; rel="next"`` while more
remain, as ACR's AAD-OAuth document shows). This front serves one registry that way: a
``tags/list`` request fetches the full list from the registry behind it (with the client's own
``Authorization`` header, so a token challenge passes through unchanged), sorts it and answers
the page; every other request is forwarded as it is. It counts the ``tags/list`` pages it served
so tests can tell that a client followed them.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Optional
from urllib.parse import quote

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

MAX_PAGE = 1000  # distribution 3's default maximum for n
FORWARDED = ("authorization", "accept", "content-type", "user-agent")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class PagingFront:
    def __init__(self, backend_url: str, *, ca_file: str, certfile: str, keyfile: str, max_page: int = MAX_PAGE):
        self._client = httpx.AsyncClient(base_url=backend_url, verify=ssl.create_default_context(cafile=ca_file),
                                         timeout=60)
        self._certfile, self._keyfile = certfile, keyfile
        self.max_page = max_page
        self.pages_served = 0
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _headers(self, request: Request) -> list[tuple[str, str]]:
        # a list, not a dict: clients send Accept more than once (one media type per header)
        return [(k, v) for k, v in request.headers.items() if k.lower() in FORWARDED]

    async def _tags(self, request: Request) -> Response:
        name = request.path_params["name"]
        upstream = await self._client.get(f"/v2/{name}/tags/list", headers=self._headers(request))
        if upstream.status_code != 200:
            return self._relay(upstream)
        tags = sorted(upstream.json().get("tags") or [])
        try:
            n = min(int(request.query_params.get("n", self.max_page)), self.max_page)
        except ValueError:
            return JSONResponse({"errors": [{"code": "PAGINATION_NUMBER_INVALID",
                                             "message": "invalid number of results requested"}]}, 400)
        last = request.query_params.get("last")
        if last is not None:
            tags = [t for t in tags if t > last]
        page, more = tags[:n], len(tags) > n
        self.pages_served += 1
        headers = {}
        if more and page:
            headers["Link"] = f'</v2/{name}/tags/list?last={quote(page[-1])}&n={n}>; rel="next"'
        return JSONResponse({"name": name, "tags": page}, headers=headers)

    def _relay(self, upstream: httpx.Response) -> Response:
        response = Response(upstream.content, status_code=upstream.status_code)
        for key, value in upstream.headers.multi_items():
            if key.lower() not in HOP_BY_HOP:
                response.headers.append(key, value)
        return response

    async def _forward(self, request: Request) -> Response:
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream = await self._client.request(request.method, url, headers=self._headers(request),
                                              content=await request.body())
        return self._relay(upstream)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v2/{name:path}/tags/list", self._tags, methods=["GET"]),
            Route("/{rest:path}", self._forward, methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
        ])

    def start(self) -> "PagingFront":
        # proto IPPROTO_TCP and TCP_NODELAY: without them each answer whose body goes out in a
        # second write waits for the client's delayed ACK (~40 ms)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), ssl_certfile=self._certfile, ssl_keyfile=self._keyfile, http="h11",
                                lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"paging-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("paging front failed to start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def __enter__(self) -> "PagingFront":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def paging_front(stack, registry: str = "upstream", *, max_page: int = MAX_PAGE) -> PagingFront:
    """A front for one of the stand-in's TLS registries (``upstream`` or ``upstream-auth``)."""
    url = stack.upstream_url if registry == "upstream" else stack.upstream_auth_url
    return PagingFront(url, ca_file=str(stack.ca_pem), certfile=str(stack.server_cert),
                       keyfile=str(stack.server_key), max_page=max_page)
