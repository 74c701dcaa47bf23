"""A token bucket per sender: pure arithmetic on times the caller supplies."""

from __future__ import annotations

# Buckets kept at once; past this many senders they are forgotten and start
# full again. Keys are addresses, so the memory stays a few MiB.
MAX_BUCKETS = 16384


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
        self._refill(now)
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def give(self, count: int) -> None:
        """Put back tokens taken and not used."""
        self._tokens = min(self.burst, self._tokens + count)

    def charge(self, count: int, now: float) -> float:
        """Take ``count`` tokens, into debt if need be; return the seconds until the debt is paid."""
        self._refill(now)
        self._tokens -= count
        return max(0.0, -self._tokens / self.rate)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now


class RateLimiter:
    """``rate`` messages a second per sender address, with a burst of one second.

    One limiter serves every transport, so that a sender's UDP datagrams and
    all of its TCP connections share its bucket. A rate of 0 limits nothing.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, sender_ip: str, wanted: int, now: float) -> int:
        """How many of ``wanted`` messages the sender may send now (taken from its bucket)."""
        if not self.rate:
            return wanted
        return self._bucket(sender_ip, now).take(wanted, now)

    def give(self, sender_ip: str, count: int) -> None:
        """Put back tokens ``take`` gave and the sender did not use."""
        bucket = self._buckets.get(sender_ip)
        if bucket is not None and count > 0:
            bucket.give(count)

    def charge(self, sender_ip: str, count: int, now: float) -> float:
        """Charge the sender for ``count`` messages already read; return how
        long it must then wait to be back within its rate (0: not at all)."""
        if not self.rate:
            return 0.0
        return self._bucket(sender_ip, now).charge(count, now)

    def _bucket(self, sender_ip: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(sender_ip)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[sender_ip] = TokenBucket(self.rate, self.rate, now)
        return bucket
