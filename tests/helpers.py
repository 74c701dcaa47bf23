"""Shared builders for tests below the process level."""

from __future__ import annotations

from datetime import UTC

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from collector.config import Firewall, UnregisteredPolicy
from collector.hosts import HostRegistry
from collector.metrics import CollectorMetrics
from collector.pipeline import Pipeline
from collector.testing import MemoryArchive


class Bench:
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
