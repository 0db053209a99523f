"""Azure Storage queues (azure-storage-queue): sending run messages, and receiving them for a queue worker.

Messages are base64 text, the encoding the Functions host's queue trigger expects by default
(``messageEncoding``), so a message sent here is delivered to ``@app.queue_trigger`` unchanged.
Receiving is the Functions host's job in Azure; ``MessageQueue`` is what a worker of our own needs to
do the same (``shared.handlers.worker``: ``airlock serve``'s in-process worker, devstack's runner):
receive a batch with a visibility timeout, keep a message invisible while it runs, delete it, or send
its text on (to the poison queue) as it came. It hands over each message's text as stored (no decode
policy), so one message that is not base64 fails on its own instead of failing the batch it came in.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

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


@dataclass(frozen=True)
class Delivery:
    """One received message: its text as stored (base64 for our messages), and the host's bookkeeping."""

    id: str
    pop_receipt: str
    dequeue_count: int
    content: str
    inserted_on: Optional[datetime] = None
    expires_on: Optional[datetime] = None
    next_visible_on: Optional[datetime] = None


class MessageQueue:
    """One storage queue as a worker uses it (a ``QueueClient`` without encode or decode policies)."""

    def __init__(self, client):
        self._client = client
        self.name = client.queue_name

    @classmethod
    def open(cls, service_client, name: str, *, create: bool = True) -> "MessageQueue":
        """The queue ``name`` of a ``QueueServiceClient``, created when it does not exist yet."""
        client = service_client.get_queue_client(name)
        if create:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
        return cls(client)

    def receive(self, count: int, visibility_timeout: float) -> list[Delivery]:
        """Up to ``count`` visible messages, each invisible to others for ``visibility_timeout`` seconds."""
        messages = self._client.receive_messages(messages_per_page=count, max_messages=count,
                                                 visibility_timeout=max(1, int(visibility_timeout)))
        return [Delivery(m.id, m.pop_receipt, m.dequeue_count or 1, m.content or "", m.inserted_on, m.expires_on,
                         m.next_visible_on) for m in messages]

    def hide(self, message_id: str, pop_receipt: str, seconds: float) -> str:
        """Make the message visible again in ``seconds`` (0: now); returns the new pop receipt."""
        return self._client.update_message(message_id, pop_receipt=pop_receipt,
                                           visibility_timeout=max(0, int(seconds))).pop_receipt

    def delete(self, message_id: str, pop_receipt: str) -> None:
        self._client.delete_message(message_id, pop_receipt=pop_receipt)

    def send_raw(self, content: str) -> None:
        """Send text as it is (a message moved to the poison queue keeps its encoded text)."""
        self._client.send_message(content)
