"""The ``twistd syslog-collector`` plugin: command-line options and service assembly.

``makeService`` only assembles services; sockets are bound in
``privilegedStartService`` (so twistd's ``--uid``/``--gid`` can drop root
after binding port 514), and the reactor is injected so tests can pass a
fake one.
"""

from __future__ import annotations

import pwd
import resource
import signal
from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, disable_created_metrics
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from collector import config as configuration
from collector.archive import FileArchive
from collector.balancing import KIND_TCP, KIND_TLS, BalancedPort, Balancer, HandedOverConnections
from collector.compiled import plain_python
from collector.config import Config, ConfigError, ListenAddress
from collector.hosts import HostRegistry
from collector.metrics import (
    CollectorMetrics,
    MetricsPublisher,
    ProcessesCollector,
    SupervisorMetrics,
    UdpPortDropsCollector,
    WorkersCollector,
)
from collector.pipeline import Pipeline
from collector.protocols import DescriptorShortage, SyslogDatagramProtocol, SyslogStreamFactory
from collector.slots import ConnectionSlots
from collector.tls import reload_revocation_lists, server_options
from collector.web import metrics_site
from collector.workers import (
    SupervisorLink,
    WorkerRole,
    WorkerSupervisor,
    listen_shared_udp,
    new_metrics_dir,
    worker_role,
)

# Connections the kernel completes before the collector accepts them: after an
# outage every firewall reconnects at once (Twisted's default is 50).
LISTEN_BACKLOG = 1024
# With several workers, a past day's file is compressed once nobody wrote to it for this long.
SHARED_FILE_QUIET_SECONDS = 120.0

# Command-line option -> config key it overrides.
OVERRIDES = {
    "udp": "listen.udp",
    "tcp": "listen.tcp",
    "metrics": "listen.metrics",
    "archive-dir": "archive.dir",
}


class Options(usage.Options):
    synopsis = "[--config FILE] [--udp ADDR] [--tcp ADDR] [--metrics ADDR] [--archive-dir DIR]"
    longdesc = (
        "Receive Kerio security logs over syslog, archive them per firewall and count them "
        "for Prometheus. ADDR is PORT, HOST:PORT or [IPV6]:PORT; port 0 picks a free port; "
        "an empty ADDR disables that listener. Options override the config file."
    )
    optParameters = [
        ["config", "c", None, "TOML config file (default: built-in defaults, see config/collector.toml)"],
        ["udp", None, None, "syslog over UDP (default 5514)"],
        ["tcp", None, None, "syslog over TCP (default 5514)"],
        ["metrics", None, None, "HTTP for /metrics and /healthz (default 9514)"],
        ["archive-dir", None, None, "root directory of the per-host archives (default ./archive)"],
    ]

    config: Config

    def postOptions(self) -> None:  # noqa: N802
        overrides = {key: self[option] for option, key in OVERRIDES.items() if self[option] is not None}
        try:
            self.config = load_checked(self["config"], overrides, user=self._service_user())
        except ConfigError as e:
            raise usage.UsageError(f"configuration error: {describe_error(e)}") from None


    def plugin_args(self) -> list[str]:
        """The options as given, for starting worker processes alike."""
        args = [] if self["config"] is None else ["--config", self["config"]]
        for option in OVERRIDES:
            if self[option] is not None:
                args += [f"--{option}", self[option]]
        return args

    def _service_user(self) -> tuple[int, int] | None:
        """The user twistd's --uid/--gid will switch to after binding, if any."""
        parent = getattr(self, "parent", None)
        if parent is None or parent.get("uid") is None:
            return None
        uid = parent["uid"]
        gid = parent.get("gid")
        return uid, gid if gid is not None else pwd.getpwuid(uid).pw_gid


def load_checked(path: str | None, overrides: dict[str, Any] | None = None,
                 user: tuple[int, int] | None = None) -> Config:
    """Load a config and check the archive root can be written, as start-up does."""
    config = configuration.load(path, overrides)
    configuration.check_archive_dir(config, user)
    if config.tls.enabled:
        server_options(config.tls)
    return config


def describe_error(error: ConfigError) -> str:
    for option, key in OVERRIDES.items():
        if error.key == key:
            return f"--{option} ({key}): {error.problem}"
    return str(error)


class Listener(Service):
    """Binds one listening port at start; logs the address actually bound."""

    log = Logger()

    def __init__(self, kind: str, setting: str, listen: Callable[[], IListeningPort],
                 after_stop: Callable[[], Deferred[None]] | None = None) -> None:
        self.kind = kind
        self.setting = setting
        self._listen = listen
        self._after_stop = after_stop
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:  # noqa: N802
        super().privilegedStartService()
        try:
            self.port = self._listen()
        except CannotListenError as e:
            # An operator's problem, not a bug: one line, no traceback, exit status 1.
            reason = e.socketError.strerror if isinstance(e.socketError, OSError) else e.socketError
            self.log.critical("cannot listen for {kind} on {address} ({setting}): {reason}",
                              kind=self.kind, address=f"{e.interface or '*'}:{e.port}",
                              setting=self.setting, reason=reason)
            raise SystemExit(1) from None
        address = self.port.getHost()
        # One line per listener, stable so that scripts can read the bound port.
        self.log.info("listening {kind} on {host} port {port}",
                      kind=self.kind, host=address.host, port=address.port)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self.port is None:
            return succeed(None)
        d = maybeDeferred(self.port.stopListening)
        if self._after_stop is not None:
            after_stop = self._after_stop
            d.addCallback(lambda _: after_stop())
        return d


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
            return
        try:
            config = configuration.load(config_path)
        except ConfigError as e:
            self.log.error("reload refused, keeping the firewall registry in use: "
                           "configuration error: {error}", error=str(e))
            return
        self.pipeline.hosts = HostRegistry(config.firewalls, config.hosts.unregistered,
                                           config.hosts.max_unregistered, previous=self.pipeline.hosts)
        self.log.info("reloaded {count} firewall(s) from {path}",
                      count=len(config.firewalls), path=config_path)

    def stopService(self) -> Deferred[None]:  # noqa: N802
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

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)
        # A worker starts with SIGHUP blocked (see WorkerSupervisor._spawn);
        # one that came meanwhile is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous)

    def _hangup(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes: do the work in the reactor loop.
        self._reactor.callFromThread(self._collector.reload, self._config_path)


def makeService(options: Options, reactor: Any = None) -> MultiService:  # noqa: N802
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    # No "_created" sample beside each counter: they doubled what Prometheus
    # stores and what a scrape renders, and the workers' multiprocess mode
    # has none anyway.
    disable_created_metrics()
    config = options.config
    allow_descriptors(config)
    role = worker_role()
    if role is None:
        report_message_path()
        if config.workers.count > 1:
            return supervise(config, options.plugin_args(), reactor)
    service = build(config, reactor, role)
    ReloadOnHangup(service, options["config"], reactor).setServiceParent(service)
    return service


# Descriptors besides connections and archive files: listeners, the log, the
# workers' pipes and channels, the thread pool's, /proc reads at scrape time.
SPARE_DESCRIPTORS = 128
_log = Logger()


def allow_descriptors(config: Config) -> None:
    """Raise the soft limit on open files to what the configured limits need,
    as far as the hard limit allows; warn when it does not allow enough.

    Each kind of descriptor has a budget of its own, bounded by its limit:
    syslog connections, HTTP connections (a connection past either limit is
    closed as soon as it is accepted), archive files, and the spare. So no
    number of connections of either kind leaves an archive file unopenable.
    """
    limits = config.limits
    needed = (limits.max_connections + limits.max_http_connections + config.archive.max_open_files
              + SPARE_DESCRIPTORS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    allowed = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if allowed > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    if allowed < needed:
        _log.warn(
            "the hard limit on open files is {hard}, but limits.max_connections, "
            "limits.max_http_connections and archive.max_open_files need {needed}: "
            "raise it (LimitNOFILE= in the systemd unit, "
            "ulimit -Hn) or lower them", hard=hard, needed=needed)


def report_message_path() -> None:
    """Say whether the per-message path runs compiled: it sets how much CPU a message takes."""
    plain = plain_python()
    if plain:
        _log.info("the per-message path runs as plain Python ({modules}): a package built "
                  "with a C compiler takes less CPU per message (README, Benchmarks)",
                  modules=", ".join(plain))
    else:
        _log.info("the per-message path runs compiled (mypyc)")


def supervise(config: Config, plugin_args: list[str], reactor: Any) -> MultiService:
    """The twistd process of several workers: /metrics summed over them, and the workers."""
    metrics_dir = new_metrics_dir()
    registry = CollectorRegistry()
    WorkersCollector(registry, metrics_dir)
    service = MultiService()
    if (metrics_at := config.listen.metrics) is not None:
        site = metrics_site(registry, reactor, config.limits.max_http_connections, in_thread=True)
        Listener("metrics", "listen.metrics", lambda: reactor.listenTCP(
            metrics_at.port, site, interface=metrics_at.host)).setServiceParent(service)
    supervisor_metrics = SupervisorMetrics(registry, config.workers.count)
    limits = config.limits
    balancer = Balancer(reactor, supervisor_metrics.connections,
                        connection_slots(config, HostRegistry(config.firewalls, config.hosts.unregistered).registered))

    def balanced(address: ListenAddress, kind: bytes) -> BalancedPort:
        port = BalancedPort(reactor, address, kind, balancer)
        port.startListening()
        return port

    if (tcp_at := config.listen.tcp) is not None:
        Listener("tcp", "listen.tcp", lambda: balanced(tcp_at, KIND_TCP)).setServiceParent(service)
    if config.tls.enabled and (tls_at := config.tls.listen) is not None:
        # The workers hold the certificates and do the handshakes.
        Listener("tls", "tls.listen", lambda: balanced(tls_at, KIND_TLS)).setServiceParent(service)
    supervisor = WorkerSupervisor(config, plugin_args, reactor, metrics_dir, UdpPortDropsCollector(registry),
                                  balancer, supervisor_metrics.worker_restarted)
    supervisor.setServiceParent(service)
    ProcessesCollector(registry, supervisor.worker_pids)
    reactor.addSystemEventTrigger("after", "shutdown", supervisor.exit_if_failed)
    return service


def connection_slots(config: Config, registered: Callable[[str], bool]) -> ConnectionSlots:
    """The connection limits; ``registered`` says whether an address is a registered firewall's."""
    limits = config.limits
    return ConnectionSlots(limits.max_connections, limits.max_connections_per_sender,
                           prefix_ipv4=limits.sender_prefix_ipv4, prefix_ipv6=limits.sender_prefix_ipv6,
                           registered=registered)


def evict_one(slots: ConnectionSlots, sender: str) -> None:
    """Close a connection of ``sender``, as the supervisor of workers asked."""
    victim = slots.evict_from(sender)
    if victim is not None:
        victim.evict()  # type: ignore[attr-defined]


def build(config: Config, reactor: Any, role: WorkerRole | None = None) -> CollectorService:
    """The collector; ``role`` says which worker it is when it is one of several."""
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
    connection_limits = connection_slots(config, lambda ip: pipeline.hosts.registered(ip))

    def stream_factory(tls: bool) -> SyslogStreamFactory:
        return SyslogStreamFactory(
            pipeline, archive, metrics, reactor, listen.max_frame_bytes, connection_limits, tls=tls,
            idle_timeout=limits.idle_timeout_seconds, frame_timeout=limits.frame_timeout_seconds,
            receive_buffer=0 if tls else listen.tcp_receive_buffer_bytes,
            handshake_timeout=limits.handshake_timeout_seconds)

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

