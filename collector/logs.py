"""Logging that a sender cannot flood: a warning at most every so often."""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

# Refusals, limits and rate limiting are logged at most this often.
LOG_INTERVAL = 10.0


class Clock(Protocol):
    """What is read of the reactor (``IReactorTime``): the time."""

    def seconds(self) -> float: ...


class RateLimitedLog:
    """A warning at most every ``LOG_INTERVAL`` seconds, with the number held back."""

    def __init__(self, log: Logger, clock: Clock) -> None:
        self._log = log
        self._clock = clock
        self._next = 0.0
        self._held_back = 0

    def warn(self, format: str, **fields: object) -> None:
        now = self._clock.seconds()
        if now < self._next:
            self._held_back += 1
            return
        self._log.warn(format + " ({held_back} similar events since the last report)",
                       held_back=self._held_back, **fields)
        self._held_back = 0
        self._next = now + LOG_INTERVAL
