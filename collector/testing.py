"""Test doubles for the collector's own interfaces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from collector.archive.line import Batch


@dataclass(frozen=True, slots=True)
class StoredMessage:
    host: str
    received_at: float
    sender: bytes
    message: bytes


class MemoryArchive:
    """An ``Archive`` that keeps what it is given in a list."""

    def __init__(self) -> None:
        self.messages: list[StoredMessage] = []
        self.pause_streams = False
        self.pause_datagrams = False
        self.drain_listeners: list[Callable[[], None]] = []

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drain_listeners.append(callback)

    def drain(self) -> None:
        """As after a flush that caught up."""
        self.pause_streams = self.pause_datagrams = False
        for listener in self.drain_listeners:
            listener()

    def append(self, received_at: float, batch: Batch) -> None:
        self.messages.extend(StoredMessage(host, received_at, sender, message)
                             for host, sender, messages in batch for message in messages)
