"""Test helper: serve an ASGI app with a real uvicorn server on a free loopback port."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator, Optional

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_asgi(app, *, log_level: str = "warning", certfile: Optional[str] = None,
               keyfile: Optional[str] = None) -> Iterator[str]:
    """Yield the base URL while uvicorn serves ``app`` (over TLS with ``certfile``/``keyfile``); stop it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level,
                                           lifespan="off", ssl_certfile=certfile, ssl_keyfile=keyfile))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
