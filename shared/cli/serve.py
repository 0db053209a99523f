"""``serve``: the HTTP API (``shared.http.app``) under uvicorn, without the Functions host.

    python -m shared serve [--host 127.0.0.1] [--port 7071]
"""
from __future__ import annotations

from typing import TextIO

from ..errors import ConfigError
from .args import EXIT_OK, whole


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="serve the HTTP API locally with uvicorn (no Functions host needed)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=whole(1, 65535), default=7071)


def run(args, env, out: TextIO, err: TextIO) -> int:
    try:
        import uvicorn

        from ..http.app import create_app
    except ImportError as exc:
        raise ConfigError(f"serve needs {exc.name}: pip install 'acr-airlock[serve]' "
                          "(or the repository's requirements-dev.txt)") from None
    from ..services import Services

    services = Services.from_env(env)  # fail fast on bad settings, before the port opens
    uvicorn.run(create_app(lambda: services), host=args.host, port=args.port, log_level="info")
    return EXIT_OK
