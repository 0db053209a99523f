"""The bytes of the Sigstore trusted root the app ships, for publishing it (``shared.handlers.publish``).

``public_good_root()`` is the public-good ``trusted_root.json`` that sigstore-python ships (the one
``shared.adapters.signatures.public_good_trust`` verifies with; no TUF refresh: offline).
"""
from __future__ import annotations

from importlib.resources import files

from .signatures import PUBLIC_GOOD_ROOT


def public_good_root() -> bytes:
    return files("sigstore._store").joinpath(PUBLIC_GOOD_ROOT).read_bytes()

