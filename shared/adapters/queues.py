"""Azure Storage queues (azure-storage-queue): sending run messages.

Messages are base64 text, the encoding the Functions host's queue trigger expects by default
(``messageEncoding``), so a message sent here is delivered to ``@app.queue_trigger`` unchanged.
Receiving is the Functions host's job (in tests, tests/queue_host.py).
"""
from __future__ import annotations

import contextlib
import logging
import threading

log = logging.getLogger(__name__)


class RunQueue:
    def __init__(self, service_client, name: str):
        self._service = service_client
        self.name = name
        self._ready = False
        self._lock = threading.Lock()

    def client(self):
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

        queue = self._service.get_queue_client(self.name, message_encode_policy=TextBase64EncodePolicy(),
                                               message_decode_policy=TextBase64DecodePolicy())
        with self._lock:
            if not self._ready:
                with contextlib.suppress(ResourceExistsError):
                    queue.create_queue()
                self._ready = True
        return queue

    def send(self, text: str) -> str:
        """Send one message; returns its id. Raises (translated by the caller) when storage fails."""
        message = self.client().send_message(text)
        return message.id
