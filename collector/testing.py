"""Test doubles for the collector's own interfaces."""

from __future__ import annotations

from dataclasses import dataclass


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

    def append(self, host: str, received_at: float, sender: bytes, message: bytes) -> None:
        self.messages.append(StoredMessage(host, received_at, sender, message))
