"""A token bucket per sender: pure arithmetic on times the caller supplies."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; one token per message."""

    __slots__ = ("rate", "burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, wanted: int, now: float) -> int:
        """Take up to ``wanted`` tokens; return how many were taken."""
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted
