"""The collector assembled from its parts: one process, or one worker of several.

``build`` makes the archive, the metrics, the pipeline and the listeners,
on the injected reactor; ``CollectorService`` holds them, stops them in
order (listeners first, TCP connections drained, then the archive's last
flush) and reloads the firewall registry on SIGHUP.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from collector import config as configuration
from collector.archive.writer import FileArchive
from collector.compiled import plain_python
from collector.config import Config, ConfigError
from collector.hosts import HostRegistry
from collector.listening import LISTEN_BACKLOG, Listener
from collector.metrics import CollectorMetrics, MetricsPublisher
from collector.net.protocols import DescriptorShortage, SyslogDatagramProtocol, SyslogStreamFactory
from collector.net.slots import ConnectionSlots
from collector.net.tls import reload_revocation_lists, server_options
from collector.net.web import metrics_site
from collector.pipeline import Pipeline
from collector.workers.balancing import KIND_TCP, KIND_TLS, HandedOverConnections
from collector.workers.supervisor import SupervisorLink, WorkerRole, listen_shared_udp

# With several workers, a past day's file is compressed once nobody wrote to it for this long.
SHARED_FILE_QUIET_SECONDS = 120.0
_log = Logger(namespace=__name__)


class CollectorService(MultiService):
    """All of the collector; children stop one after another, last added first.

    Listeners are added after the archive, so at shutdown they stop taking
    input (TCP connections draining first) before the archive's final flush.
    """

    log = Logger()

    def __init__(self, registry: CollectorRegistry, metrics: CollectorMetrics,
                 pipeline: Pipeline, archive: FileArchive) -> None:
        super().__init__()
        self.registry = registry
        self.metrics = metrics
        self.pipeline = pipeline
        self.archive = archive
        # The TCP and TLS factories, whose connections a reload looks at again.
        self.stream_factories: list[SyslogStreamFactory] = []

    def reload(self, config_path: str | None) -> None:
        """Reopen the archive files, re-read the CRL (``tls.crl``) and the
        firewall registry (``[[firewall]]`` and ``[hosts]``).

        Listeners and TCP connections stay as they are; other settings take
        effect at the next start. A config that no longer validates is
        refused, and the registry in use is kept; so is a CRL that no longer
        loads. The CRL is re-read whether or not the config validates: a
        revocation must not wait for a config to be fixed. The new registry
        takes over the unregistered host tags given out so far, so that a
        reload makes no room for more than ``hosts.max_unregistered``.
        """
        # Said once done: the files are closed after the flush being written.
        self.archive.reopen().addCallback(lambda _: self.log.info("reopened the archive files"))
        try:
            crls = reload_revocation_lists()
        except ConfigError as e:
            self.log.error("keeping the certificate revocation list in use: {error}", error=str(e))
        else:
            for path in crls:
                self.log.info("re-read the certificate revocation list {path}", path=str(path))
        if config_path is None:
            self.log.info("no config file to re-read")
            self._recheck_certificates()
            return
        try:
            config = configuration.load(config_path)
        except ConfigError as e:
            self.log.error("reload refused, keeping the firewall registry in use: "
                           "configuration error: {error}", error=str(e))
            self._recheck_certificates()
            return
        self.pipeline.hosts = HostRegistry(config.firewalls, config.hosts.unregistered,
                                           config.hosts.max_unregistered, previous=self.pipeline.hosts)
        self.log.info("reloaded {count} firewall(s) from {path}",
                      count=len(config.firewalls), path=config_path)
        self._recheck_certificates()

    def _recheck_certificates(self) -> None:
        """Open TLS connections answer to the CRL and registry now in use."""
        for factory in self.stream_factories:
            for protocol in list(factory.connections):
                protocol.recheck_certificate()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[None] = succeed(None)
        for child in reversed(list(self)):
            d.addCallback(_stop_child, child)
        return d


def _stop_child(_: object, child: IService) -> Deferred[None]:
    return maybeDeferred(child.stopService)


class ReloadOnHangup(Service):
    """SIGHUP reloads the collector (see ``CollectorService.reload``)."""

    def __init__(self, collector: CollectorService, config_path: str | None, reactor: Any) -> None:
        self._collector = collector
        self._config_path = config_path
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)
        # A worker starts with SIGHUP blocked (see WorkerSupervisor._spawn);
        # one that came meanwhile is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def stopService(self) -> None:
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous)

    def _hangup(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes: do the work in the reactor loop.
        self._reactor.callFromThread(self._collector.reload, self._config_path)


def report_message_path() -> None:
    """Say whether the per-message path runs compiled: it sets how much CPU a message takes."""
    plain = plain_python()
    if plain:
        _log.info("the per-message path runs as plain Python ({modules}): a package built "
                  "with a C compiler takes less CPU per message (docs/performance.md)",
                  modules=", ".join(plain))
    else:
        _log.info("the per-message path runs compiled (mypyc)")


def evict_one(slots: ConnectionSlots, sender: str) -> None:
    """Close a connection of ``sender``, as the supervisor of workers asked."""
    victim = slots.evict_from(sender)
    if victim is not None:
        victim.evict()  # type: ignore[attr-defined]


def build(config: Config, reactor: Any, role: WorkerRole | None = None) -> CollectorService:
    """The collector; ``role`` says which worker it is when it is one of several."""
    if role is None or role.index == 0:
        report_message_path()
    shared = role is not None
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    metrics = CollectorMetrics(registry, config.metrics.max_hosts,
                               config.metrics.max_interfaces_per_host)
    archive = FileArchive(
        config.archive.dir, config.archive.timezone, config.archive.flush_interval_seconds,
        metrics, reactor,
        fsync=config.archive.fsync, max_open_files=config.archive.max_open_files,
        compress=config.archive.compress, retention_days=config.archive.retention_days,
        max_host_bytes=config.archive.max_host_bytes,
        run_in_thread=lambda f, *a, **k: deferToThreadPool(reactor, reactor.getThreadPool(), f, *a, **k),
        maintains_files=role is None or role.index == 0,
        quiet_seconds=SHARED_FILE_QUIET_SECONDS if shared else 0.0,
    )
    pipeline = Pipeline(
        hosts=HostRegistry(config.firewalls, config.hosts.unregistered, config.hosts.max_unregistered),
        archive=archive, metrics=metrics, clock=reactor,
        syslog_timezone=config.syslog.timezone,
        max_messages_per_second_per_sender=config.limits.max_messages_per_second_per_sender,
    )
    service = CollectorService(registry, metrics, pipeline, archive)
    archive.setServiceParent(service)
    # Before the listeners: it stops after them, and publishes their last counts.
    MetricsPublisher(metrics, reactor).setServiceParent(service)
    DescriptorShortage(metrics.refused_connections.labels(reason="descriptors")).setServiceParent(service)
    listen = config.listen
    if (metrics_at := listen.metrics) is not None:
        site = metrics_site(registry, reactor, config.limits.max_http_connections, metrics.publish)
        Listener("metrics", "listen.metrics", lambda: reactor.listenTCP(
            metrics_at.port, site, interface=metrics_at.host)).setServiceParent(service)
    if (udp_at := listen.udp) is not None:
        datagrams = SyslogDatagramProtocol(pipeline, archive, metrics, listen.udp_receive_buffer_bytes,
                                           listen.max_frame_bytes, reactor, listen.udp_read_interval_seconds)
        Listener("udp", "listen.udp",
                 lambda: listen_shared_udp(reactor, udp_at, datagrams, config.workers.count) if shared
                 else reactor.listenUDP(udp_at.port, datagrams, interface=udp_at.host, maxPacketSize=65536),
                 ).setServiceParent(service)
    limits = config.limits
    # The registry in use, which a reload replaces.
    connection_limits = ConnectionSlots.from_settings(config.limits, lambda ip: pipeline.hosts.firewall_name(ip))

    def stream_factory(tls: bool) -> SyslogStreamFactory:
        factory = SyslogStreamFactory(
            pipeline, archive, metrics, reactor, listen.max_frame_bytes, connection_limits, tls=tls,
            idle_timeout=limits.idle_timeout_seconds, frame_timeout=limits.frame_timeout_seconds,
            receive_buffer=0 if tls else listen.tcp_receive_buffer_bytes,
            handshake_timeout=limits.handshake_timeout_seconds)
        service.stream_factories.append(factory)
        return factory

    # A worker does not listen: the supervisor hands it its share of the connections.
    handed_over: dict[bytes, Factory] = {}
    drains: list[Callable[[], Deferred[None]]] = []
    if (tcp_at := listen.tcp) is not None:
        streams = stream_factory(tls=False)
        drain = partial(streams.drain, listen.drain_seconds)
        if shared:
            handed_over[KIND_TCP] = streams
            drains.append(drain)
        else:
            Listener("tcp", "listen.tcp", lambda: reactor.listenTCP(tcp_at.port, streams, backlog=LISTEN_BACKLOG,
                                                                    interface=tcp_at.host),
                     after_stop=drain).setServiceParent(service)
    if config.tls.enabled and (tls_at := config.tls.listen) is not None:
        tls_streams = stream_factory(tls=True)
        context = server_options(config.tls)
        tls_drain = partial(tls_streams.drain, listen.drain_seconds)
        if shared:
            handed_over[KIND_TLS] = TLSMemoryBIOFactory(context, False, tls_streams)
            drains.append(tls_drain)
        else:
            Listener("tls", "tls.listen",
                     lambda: reactor.listenSSL(tls_at.port, tls_streams, context, backlog=LISTEN_BACKLOG,
                                               interface=tls_at.host),
                     after_stop=tls_drain).setServiceParent(service)
    if role is not None:
        SupervisorLink(reactor).setServiceParent(service)
        if handed_over:
            HandedOverConnections(reactor, role.channel, handed_over, drains, pipeline.refuse_connection,
                                  partial(evict_one, connection_limits)).setServiceParent(service)
    return service
