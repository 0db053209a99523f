"""Keeps SAS signatures out of every log line and every line the command line prints.

A SAS URL is a credential: whoever holds ``...?sv=...&sig=...`` can read (or write) the blob.
``redact`` replaces the value of every ``sig=`` parameter (and of ``code=`` / ``x-functions-key``
function keys) with ``REDACTED``. ``RedactingFilter`` does the same to log records: installed on
the root logger's handlers (``install``), it sees every record that reaches them, from our loggers
and from third-party ones alike (urllib3's DEBUG request lines, azure.core's HTTP logging policy),
because handler filters run for propagated records where logger filters do not.
"""
from __future__ import annotations

import logging
import re
from typing import Optional

REDACTED = "REDACTED"
# sig=..., code=..., x-functions-key: ... (URL-encoded or not), stopped by the usual URL/text delimiters
_SECRET = re.compile(r"(?i)(\bsig=|\bsig%3D|[?&]code=|\bx-functions-key['\"]?\s*[:=]\s*['\"]?)([^&\s'\"<>;,)\]}]+)")


def redact(text: str) -> str:
    """``text`` with every SAS signature (and function key) replaced by ``REDACTED``."""
    if not text:
        return text
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in) and its exception text, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: keep its template, drop the arguments
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message:  # otherwise the record keeps its template and arguments
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install(logger: Optional[logging.Logger] = None) -> RedactingFilter:
    """Add the filter to every handler of ``logger`` (the root logger by default); idempotent."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return _FILTER
