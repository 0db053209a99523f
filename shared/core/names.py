"""Blob-name segments derived from outside input (blob names, event ids, repositories, digests).

Pure code: no I/O. A marker such as ``processed/{name}/{digest}.json`` must stay inside its
prefix and be a valid blob name whatever ``name`` is: the storage service accepts names with
``../``, ``%``, NUL, any Unicode and up to 1,024 characters, and an event's id or repository is
whatever the sender wrote.

:func:`blob_segment` turns any string into one path segment that

* uses only ``A-Z a-z 0-9 - _ .`` and ``%XX`` escapes of the UTF-8 bytes of everything else
  (so ``/``, ``\\``, NUL, ``%`` and non-ASCII are escaped, and the result is never ``.`` or
  ``..``: a leading or trailing dot is escaped too, as Azure advises against segments ending in
  a dot);
* is at most ``max_length`` characters: a longer encoding is cut (never inside an escape) and
  ends in ``~`` and 16 hex digits of the SHA-256 of the original, a form the plain encoding
  never produces (``~`` is escaped);
* is distinct for distinct inputs (injective below the cap; above it, up to a 64-bit hash).

It is readable for ordinary names: ``images.txt`` stays ``images.txt``, ``team/images.txt``
becomes ``team%2Fimages.txt``.
"""
from __future__ import annotations

import hashlib

__all__ = ["MAX_SEGMENT", "blob_segment"]

MAX_SEGMENT = 200  # well under the 1,024-character blob name and 254-character segment limits
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_HASH_HEX = 16


def blob_segment(value: str, max_length: int = MAX_SEGMENT) -> str:
    """One safe, prefix-bound blob-name segment for ``value`` (see the module docstring)."""
    if not isinstance(value, str):
        raise TypeError(f"expected str, not {type(value).__name__}")
    if max_length < _HASH_HEX + 4:
        raise ValueError(f"max_length must be at least {_HASH_HEX + 4}")
    raw = value.encode("utf-8", "surrogatepass")
    parts = []
    last = len(raw) - 1
    for i, byte in enumerate(raw):
        edge_dot = byte == 0x2E and (i == 0 or i == last)
        parts.append(chr(byte) if byte in _SAFE and not edge_dot else f"%{byte:02X}")
    encoded = "".join(parts)
    if not encoded:
        return "%"  # the empty string; a lone '%' is never produced otherwise
    if len(encoded) <= max_length:
        return encoded
    keep = max_length - _HASH_HEX - 1
    cut = encoded[:keep]
    escape_at = cut.rfind("%", max(0, keep - 2))
    if escape_at != -1:
        cut = cut[:escape_at]
    if cut.endswith("."):
        cut = cut[:-1] + "%2E" if len(cut) + 2 <= keep else cut[:-1]
    return f"{cut}~{hashlib.sha256(raw).hexdigest()[:_HASH_HEX]}"
