"""The bytes of Sigstore trusted roots, for publishing them (``shared.handlers.publish``).

``public_good_root()`` is the public-good ``trusted_root.json`` that sigstore-python ships (the one
``shared.adapters.signatures.public_good_trust`` verifies with; no TUF refresh: offline).
``read_root_file(path)`` reads one the operator supplies, bounded; errors name the file.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..core.trustmaterial import MAX_ROOT_BYTES
from ..errors import ConfigError
from .signatures import PUBLIC_GOOD_ROOT


def public_good_root() -> bytes:
    return files("sigstore._store").joinpath(PUBLIC_GOOD_ROOT).read_bytes()


def read_root_file(path: str) -> bytes:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_ROOT_BYTES:
            raise ConfigError(f"trusted root {path} is over {MAX_ROOT_BYTES} bytes")
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"trusted root {path} cannot be read: {exc.strerror or exc}") from None
