"""Shared builders for tests below the process level."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from collector.config import Firewall, UnregisteredPolicy
from collector.hosts import HostRegistry
from collector.metrics import CollectorMetrics
from collector.pipeline import Pipeline
from collector.testing import MemoryArchive


class Harness:
    """A pipeline over an in-memory archive, a fresh registry and a fake clock."""

    def __init__(self, firewalls: tuple[Firewall, ...] = (),
                 unregistered: UnregisteredPolicy = UnregisteredPolicy.ACCEPT,
                 max_hosts: int = 1000) -> None:

        self.clock = Clock()
        self.clock.advance(1_764_072_000)  # 2025-11-25T12:00:00Z
        self.registry = CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry, max_hosts)
        self.archive = MemoryArchive()
        self.pipeline = Pipeline(
            hosts=HostRegistry(firewalls, unregistered), archive=self.archive,
            metrics=self.metrics, clock=self.clock, syslog_timezone=UTC)

    def value(self, name: str, **labels: str) -> float | None:
        self.metrics.publish()
        return self.registry.get_sample_value(name, labels)

    def archived(self, host: str | None = None) -> list[bytes]:
        return [m.message for m in self.archive.messages if host is None or m.host == host]


def until(predicate: Callable[[], object], timeout: float = 5.0) -> Deferred[None]:
    """Let the reactor run until ``predicate()`` holds."""
    d: Deferred[None] = Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        if predicate():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError("timed out"))
        else:
            reactor.callLater(0.01, check)

    check()
    return d
