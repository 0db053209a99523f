"""Serve an Emulator over TLS with uvicorn on a daemon thread.

The listening socket is bound here, before uvicorn starts, so ``config.port == 0`` can pick a free
port and the real one is known (and written back to ``emu.config.port``) before any route needs it.
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from .app import create_app
from .state import Emulator

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 15.0
# Idle keep-alive clients never answer the TLS close_notify, so a graceful stop would wait for the
# TLS shutdown timeout (30 s); after this many seconds uvicorn gives up on them and shuts down.
GRACEFUL_SHUTDOWN_SECONDS = 1.0



class ServerHandle:
    def __init__(self, emu: Emulator, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.emu = emu
        self._server = server
        self._thread = thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("emulator server on %s did not stop within %.0fs", self.emu.base_url, timeout)
        self.emu.close()


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not the default 0: asyncio switches Nagle off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and accepted sockets inherit it. With proto 0 every response whose body
    # went out in a second write waited for the client's delayed ACK (~40 ms). TCP_NODELAY on the
    # listening socket is inherited by accepted sockets on Linux as well.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def start_in_thread(emu: Emulator, certfile: str, keyfile: str) -> ServerHandle:
    """Start serving ``emu`` and return once the server accepts connections."""
    sock = _bind(emu.config.host, emu.config.port)
    emu.config.port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(emu),
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        # httptools and uvloop (requirements-dev.txt) cost a fraction of h11 and asyncio's own loop
        # per request: with h11 the stand-in, not the product, was the larger CPU cost of a plan
        # over thousands of repositories
        http="httptools",
        loop="uvloop",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{emu.config.port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"emulator server on {emu.base_url} failed to start")
        time.sleep(0.02)
    log.info("emulator serving %s", emu.base_url)
    return ServerHandle(emu, server, thread)
