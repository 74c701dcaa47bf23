"""Every Prometheus metric the collector exports, owned by one object.

The registry is passed in, never the global one, so tests build their own.
Per-host label children are resolved once, when a host (or a new label
combination of it) is first seen, and kept in ``HostMetrics``: the hot path
never calls ``labels()`` for what it has seen before.
"""

from __future__ import annotations

import glob
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from collector.records import FtpKind, RecordSummary, RecordType, Transport

PREFIX = "syslog_collector_"
PUBLISH_INTERVAL = 1.0
OTHER = "other"
# Series of the breakdowns by interface, service, action and the like, in all.
MAX_DETAIL_SERIES = 20000
# Interface names longer than this count as "other": label values stay short.
MAX_INTERFACE_LENGTH = 64
REFUSAL_REASONS = ("unregistered",)
CONNECTION_REFUSAL_REASONS = (
    "unregistered", "too_many_connections", "too_many_from_sender", "tls_subject_mismatch",
    "tls_handshake", "descriptors", "handover_failed")
CLOSE_REASONS = ("idle", "frame_timeout", "handshake_timeout", "evicted", "tls_revoked", "tls_binding")
DROP_REASONS = ("archive_retry_buffer_full", "archive_unwritable_at_stop", "rate_limited")
# Bytes a connection held in the kernel when the collector closed it unread.
DISCARD_REASONS = ("refused", "unread_at_close")


class HostMetrics:
    """The label children of one host."""

    __slots__ = ("host", "records", "received_messages", "received_bytes", "last_message",
                 "hostname_mismatches", "clock_skew", "next_skew_check", "engine_starts", "rate_limited",
                 "engine_shutdowns", "engine_last_start", "ftp_attacks", "throttled", "_metrics", "_details",
                 "_interfaces")

    def __init__(self, metrics: CollectorMetrics, host: str) -> None:
        self.host = host
        self._metrics = metrics
        self.records = {t: metrics.records.labels(host=host, type=t.value) for t in RecordType}
        self.received_messages = {
            t: metrics.received_messages.labels(host=host, transport=t.value) for t in Transport}
        self.received_bytes = {
            t: metrics.received_bytes.labels(host=host, transport=t.value) for t in Transport}
        self.last_message = metrics.last_message.labels(host=host)
        self.hostname_mismatches = metrics.hostname_mismatches.labels(host=host)
        self.clock_skew = metrics.clock_skew.labels(host=host)
        self.next_skew_check = 0.0
        self.rate_limited = metrics.rate_limited.labels(host=host)
        self.throttled = metrics.throttled.labels(host=host)
        self.engine_starts = metrics.engine_events.labels(host=host, event="startup")
        self.engine_shutdowns = metrics.engine_events.labels(host=host, event="shutdown")
        self.engine_last_start = metrics.engine_last_start.labels(host=host)
        self.ftp_attacks = {k: metrics.ftp_attacks.labels(host=host, kind=k.value) for k in FtpKind}
        # Children of the metrics with more labels, made on first use.
        self._details: dict[tuple[Any, ...], Any] = {}
        self._interfaces: set[str] = set()

    def count_records(self, summary: RecordSummary, count: int) -> None:
        """Count ``count`` records alike: their type, and the breakdown of it."""
        record_type = summary.type
        self.records[record_type].inc(count)
        labels = summary.labels
        if record_type is RecordType.ANTI_SPOOFING:
            interface, direction, protocol = labels
            self._child("anti_spoofing", self._interface(interface), direction, protocol).inc(count)
        elif record_type is RecordType.AUTH_FAILURE:
            self._child("auth", *labels).inc(count)
        elif record_type is RecordType.IPS:
            self._child("ips", *labels).inc(count)
        elif record_type is RecordType.ENGINE_STARTUP:
            self.engine_starts.inc(count)
        elif record_type is RecordType.ENGINE_SHUTDOWN:
            self.engine_shutdowns.inc(count)
        elif record_type is not RecordType.UNKNOWN:
            self.ftp_attacks[labels[0]].inc(count)

    def _interface(self, name: str) -> str:
        """Interface names are free text: only the first few of a host, and
        short ones that a terminal shows as they are, become labels."""
        if name in self._interfaces:
            return name
        if len(name) > MAX_INTERFACE_LENGTH or not name.isprintable():
            # isprintable() is false for control characters (C0, DEL, C1)
            # and format ones (bidirectional overrides): a label holding
            # them would act on the terminal of whoever reads /metrics.
            return OTHER
        if len(self._interfaces) < self._metrics.max_interfaces_per_host:
            self._interfaces.add(name)
            return name
        return OTHER

    def _child(self, kind: str, *values: Any) -> Any:
        key = (kind, *values)
        try:
            return self._details[key]
        except KeyError:
            pass
        metrics = self._metrics
        if metrics.detail_series >= MAX_DETAIL_SERIES:
            # Each host may hold many combinations of labels, and a thousand
            # hosts, of a sender's choosing, many times more: past this many in
            # all, a new one is counted by its record type only.
            return metrics.breakdown_overflow
        metrics.detail_series += 1
        if kind == "anti_spoofing":
            interface, direction, protocol = values
            child = metrics.anti_spoofing.labels(
                host=self.host, interface=interface, direction=direction, protocol=protocol)
        elif kind == "auth":
            service, reason_class = values
            child = metrics.auth_failures.labels(host=self.host, service=service, reason_class=reason_class)
        else:
            action, severity = values
            child = metrics.ips_events.labels(host=self.host, action=action, severity=severity)
        self._details[key] = child
        return child


class CollectorMetrics:
    """All the metrics.

    What every message counts (records, messages and bytes received) is
    added up by the pipeline in plain dicts, ``pending_records`` and the
    like, and published to the Prometheus metrics by ``publish``, on the
    reactor's thread: before every scrape (collector.net.web), and every
    ``PUBLISH_INTERVAL`` seconds (``MetricsPublisher``) for the worker
    processes, whose registry is never collected. Incrementing a
    prometheus_client child takes a lock, and in multiprocess mode writes a
    mmap'd file: too much to do for every message.
    """

    def __init__(self, registry: CollectorRegistry, max_hosts: int,
                 max_interfaces_per_host: int = 20) -> None:
        self.max_hosts = max_hosts
        self.max_interfaces_per_host = max_interfaces_per_host
        self._hosts: dict[str, HostMetrics] = {}
        # Records by host and summary: a list of one count.
        self.pending_records: dict[tuple[HostMetrics, RecordSummary], list[int]] = {}
        # Messages and bytes, by host and transport, and each host's last receive time.
        self.pending_received: dict[tuple[HostMetrics, Transport], list[int]] = {}
        self.pending_last_message: dict[HostMetrics, float] = {}
        self._last_engine_start: dict[HostMetrics, float] = {}
        self.udp_sockets = UdpSocketCollector(registry)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Gauge:
            # The mode says how workers' values combine (multiprocess mode only).
            return Gauge(PREFIX + name, doc, labels, registry=registry, multiprocess_mode=mode)

        self.records = counter(
            "records_total", "Kerio security records received, by firewall and record type",
            ("host", "type"))
        self.received_messages = counter(
            "received_messages_total", "Syslog messages received, by firewall and transport",
            ("host", "transport"))
        self.received_bytes = counter(
            "received_bytes_total", "Bytes of syslog messages received, by firewall and transport",
            ("host", "transport"))
        self.auth_failures = counter(
            "auth_failures_total", "Failed authentications, by firewall, service and reason class",
            ("host", "service", "reason_class"))
        self.anti_spoofing = counter(
            "anti_spoofing_packets_total",
            "Packets dropped by anti-spoofing, by firewall, interface, direction and protocol",
            ("host", "interface", "direction", "protocol"))
        self.ftp_attacks = counter(
            "ftp_attacks_total", "FTP bounce attacks and malicious server replies, by firewall and kind",
            ("host", "kind"))
        self.ips_events = counter(
            "ips_events_total", "Intrusion prevention events, by firewall, action and severity",
            ("host", "action", "severity"))
        self.engine_events = counter(
            "engine_events_total", "Firewall engine startups and shutdowns, by firewall",
            ("host", "event"))
        self.engine_last_start = gauge(
            "engine_last_start_timestamp_seconds",
            "Receive time of the last engine startup record of a firewall", ("host",), mode="max")
        self.last_message = gauge(
            "last_message_timestamp_seconds", "Receive time of the last message from a firewall",
            ("host",), mode="max")
        self.hostname_mismatches = counter(
            "hostname_mismatches_total",
            "Messages from a registered firewall whose HOSTNAME names another host", ("host",))
        self.clock_skew = gauge(
            "clock_skew_seconds",
            "Receive time minus the firewall's own syslog timestamp, last sampled (once a second)",
            ("host",), mode="mostrecent")
        self.detail_series = 0
        self.breakdown_overflow = counter(
            "breakdown_overflow_total",
            "Records counted by type only, their breakdown (interface, service, action...) past the "
            "series the collector keeps")
        self.host_overflow = counter(
            "host_label_overflow_total",
            "Messages counted under host=\"other\" because metrics.max_hosts was reached")
        self.impersonations = counter(
            "impersonations_total",
            "Messages whose HOSTNAME names a registered firewall, and TLS connections refused for its "
            "certificate, from a sender that is neither that firewall nor a relay", ("host",))
        self.unregistered_overflow = counter(
            "unregistered_overflow_total",
            "Messages tagged \"unregistered\" because hosts.max_unregistered unregistered hosts were seen")
        self.header_parse_errors = counter(
            "header_parse_errors_total",
            "Messages whose syslog header could not be read (archived as received)")
        self.record_parse_errors = counter(
            "record_parse_errors_total",
            "Typed records with a missing or garbled optional field", ("type",))
        self._record_parse_errors = {t: self.record_parse_errors.labels(type=t.value) for t in RecordType}
        self.refused = counter(
            "refused_messages_total", "UDP datagrams refused, by reason", ("reason",))
        self.truncated_frames = counter(
            "truncated_frames_total", "Messages cut to listen.max_frame_bytes", ("transport",))
        self.framing_errors = counter(
            "framing_errors_total",
            "TCP and TLS frames that began with digits but no valid octet count, read as LF-framed")
        self.tcp_connections = gauge(
            "tcp_connections", "Open TCP and TLS connections, by transport", ("transport",))
        self.refused_connections = counter(
            "refused_connections_total", "TCP and TLS connections refused, by reason", ("reason",))
        self.closed_connections = counter(
            "closed_connections_total",
            "Connections closed by the collector's limits, by reason", ("reason",))
        self.rate_limited = counter(
            "rate_limited_messages_total",
            "UDP messages dropped because their sender exceeded limits.max_messages_per_second_per_sender",
            ("host",))
        self.throttled = counter(
            "throttled_seconds_total",
            "Time TCP and TLS connections were not read because their sender exceeded "
            "limits.max_messages_per_second_per_sender", ("host",))
        self.discarded_bytes = counter(
            "discarded_bytes_total",
            "Bytes a connection held unread when the collector closed it, by reason", ("reason",))
        self.skipped_bytes = counter(
            "skipped_bytes_total",
            "Bytes of messages past listen.max_frame_bytes left out of the archive", ("transport",))
        self.archive_written_bytes = counter(
            "archive_written_bytes_total", "Bytes written to archive files")
        self.archive_write_errors = counter(
            "archive_write_errors_total", "Failed writes to archive files (the lines are retried)")
        self.archive_refused_paths = counter(
            "archive_refused_paths_total",
            "Archive writes refused because a host directory or day file is a symbolic link, or not "
            "a directory or regular file (also failed writes: the lines are retried)")
        self.archive_open_files = gauge("archive_open_files", "Archive files held open")
        self.archive_backlog_bytes = gauge(
            "archive_backlog_bytes", "Lines that failed to be written and wait for a retry, in bytes")
        self.paused_connections = gauge(
            "paused_connections", "TCP and TLS connections paused while the archive is behind")
        self.archive_files_compressed = counter(
            "archive_files_compressed_total", "Closed days' archive files compressed with gzip")
        self.archive_files_deleted = counter(
            "archive_files_deleted_total", "Archive files removed by retention, by reason (age, size)",
            ("reason",))
        self.dropped = counter(
            "dropped_messages_total", "Received messages lost, by reason", ("reason",))
        # Known reasons exist at 0 from the start, for rates and alerts.
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason=reason)
        for reason in CONNECTION_REFUSAL_REASONS:
            self.refused_connections.labels(reason=reason)
        for reason in CLOSE_REASONS:
            self.closed_connections.labels(reason=reason)
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)
        self.dropped_rate_limited = self.dropped.labels(reason="rate_limited")
        for reason in DISCARD_REASONS:
            self.discarded_bytes.labels(reason=reason)

    def engine_started(self, host: HostMetrics, received_at: float) -> None:
        self._last_engine_start[host] = received_at

    def publish(self) -> None:
        """Add what was counted since the last call to the Prometheus metrics."""
        records, self.pending_records = self.pending_records, {}
        for (host, summary), [count] in records.items():
            host.count_records(summary, count)
            if summary.defective:
                self._record_parse_errors[summary.type].inc(count)
        received, self.pending_received = self.pending_received, {}
        for (host, transport), (messages, size) in received.items():
            host.received_messages[transport].inc(messages)
            host.received_bytes[transport].inc(size)
        last_message, self.pending_last_message = self.pending_last_message, {}
        for host, seconds in last_message.items():
            host.last_message.set(seconds)
        last_engine_start, self._last_engine_start = self._last_engine_start, {}
        for host, seconds in last_engine_start.items():
            host.engine_last_start.set(seconds)

    def host(self, name: str, reserved: bool = False) -> HostMetrics:
        """The metrics of a host; past ``max_hosts`` new hosts share those of
        "other", and the caller counts their messages in ``host_overflow``.

        A ``reserved`` host (a registered firewall: the configuration bounds
        them) always gets its own, so that no number of others can hide it.
        """
        try:
            return self._hosts[name]
        except KeyError:
            pass
        if len(self._hosts) >= self.max_hosts and not reserved:
            name = OTHER
            if name in self._hosts:
                return self._hosts[name]
        metrics = self._hosts[name] = HostMetrics(self, name)
        return metrics


class MetricsPublisher(Service):
    """Publishes the pending counts every ``PUBLISH_INTERVAL`` seconds, and when it stops."""

    def __init__(self, metrics: CollectorMetrics, clock: IReactorTime) -> None:
        self._metrics = metrics
        self._loop = LoopingCall(metrics.publish)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(PUBLISH_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        self._metrics.publish()


class UdpSocketCollector(Collector):
    """The UDP sockets: their receive buffers, set when a socket is watched,
    and the kernel's drop counts, read at scrape time.

    The buffer sizes are gauges, so that a supervisor of workers serves them
    too (multiprocess mode): the largest size asked for and the smallest
    granted on an address. The drops are read when this collector is
    scraped, which a worker's never is: a supervisor reads them for the
    whole port (``UdpPortDropsCollector``).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._sockets: list[tuple[socket.socket, str]] = []
        self._requested = Gauge(
            PREFIX + "udp_receive_buffer_requested_bytes",
            "SO_RCVBUF asked for the UDP socket (listen.udp_receive_buffer_bytes)", ("address",),
            registry=registry, multiprocess_mode="livemax")
        self._granted = Gauge(
            PREFIX + "udp_receive_buffer_bytes",
            "SO_RCVBUF the kernel granted the UDP socket (Linux reports twice the usable size); "
            "with workers, the smallest of theirs", ("address",),
            registry=registry, multiprocess_mode="livemin")
        registry.register(self)

    def watch(self, sock: socket.socket, requested: int) -> None:
        address = _address_label(sock.getsockname())
        self._sockets.append((sock, address))
        self._requested.labels(address=address).set(requested)
        self._granted.labels(address=address).set(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def forget(self, sock: socket.socket) -> None:
        for address in [a for s, a in self._sockets if s is sock]:
            self._requested.remove(address)
            self._granted.remove(address)
        self._sockets = [(s, a) for s, a in self._sockets if s is not sock]

    def describe(self) -> list[Any]:
        return []  # nothing until scraped: the sockets come and go

    def collect(self) -> Iterator[Any]:
        drops = _udp_drops_family()
        by_inode = kernel_udp_drops()
        for sock, address in self._sockets:
            try:
                inode = os.fstat(sock.fileno()).st_ino
            except OSError:
                continue  # closed since
            if inode in by_inode:
                drops.add_metric([address], by_inode[inode])
        yield drops


def _address_label(name: Any) -> str:
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class UdpSocketRow:
    inode: int
    local_port: int
    drops: int


def kernel_udp_sockets() -> list[UdpSocketRow]:
    """Every UDP socket of this network namespace, from /proc/net/udp and /proc/net/udp6."""
    rows: list[UdpSocketRow] = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as file:
                rows += parse_proc_net_udp(file.read())
        except OSError:
            continue
    return rows


def kernel_udp_drops() -> dict[int, int]:
    """Drop counts of every UDP socket, by inode."""
    return {row.inode: row.drops for row in kernel_udp_sockets()}


def parse_proc_net_udp(text: str) -> list[UdpSocketRow]:
    """The sockets listed in the text of /proc/net/udp (its header names the columns)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if len(fields) >= 13 and fields[9].isdigit() and fields[-1].isdigit() and ":" in fields[1]:
            port = int(fields[1].rpartition(":")[2], 16)
            rows.append(UdpSocketRow(int(fields[9]), port, int(fields[-1])))
    return rows


def _udp_drops_family() -> CounterMetricFamily:
    # One metric, whether a worker or the supervisor of workers reports it.
    return CounterMetricFamily(
        PREFIX + "udp_receive_drops",
        "Datagrams the kernel dropped for the UDP socket on an address (from /proc/net/udp and udp6)",
        labels=["address"])


class UdpPortDropsCollector(Collector):
    """Kernel drops of all the UDP sockets on a port: the workers' shared sockets."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._addresses: list[tuple[str, int]] = []
        registry.register(self)

    def watch(self, address: str, port: int) -> None:
        self._addresses.append((address, port))

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        drops = _udp_drops_family()
        rows = kernel_udp_sockets()
        for address, port in self._addresses:
            drops.add_metric([address], sum(row.drops for row in rows if row.local_port == port))
        yield drops


class WorkersCollector(MultiProcessCollector):
    """The workers' metric files, merged (multiprocess mode).

    prometheus_client creates a process's file empty and then sizes it: a
    file of a worker that is starting can be empty when a scrape reads it,
    and reading it would fail the whole scrape. Such a file holds no value
    yet, so it is left out until the next scrape.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self._directory = path
        super().__init__(registry, path=path)

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._directory, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:
                continue  # a dead worker's, removed meanwhile
        return self.merge(files, accumulate=True)


class SupervisorMetrics:
    """What a supervisor of workers counts itself: the connections it handed
    to each worker, and the workers it started again."""

    def __init__(self, registry: CollectorRegistry, workers: int) -> None:
        self._workers = workers
        self._connections = Gauge(
            PREFIX + "worker_connections",
            "Open TCP and TLS connections the supervisor handed to a worker", ("worker",), registry=registry)
        self._restarts = Counter(
            PREFIX + "worker_restarts",
            "Workers that exited unexpectedly and were started again", ("worker",), registry=registry)
        for index in range(workers):
            # At 0 from the start, so that increase() sees the first restart.
            self._restarts.labels(worker=str(index))

    def connections(self, open_connections: Mapping[int, int]) -> None:
        """Set each worker's count; a worker not in ``open_connections`` holds none."""
        for index in range(self._workers):
            self._connections.labels(worker=str(index)).set(open_connections.get(index, 0))

    def worker_restarted(self, index: int) -> None:
        self._restarts.labels(worker=str(index)).inc()


class ProcessesCollector(Collector):
    """The ``process_*`` metrics of a supervisor of workers: its own, as one
    process has them, and each worker's, labelled ``worker``.

    prometheus_client's multiprocess mode has no process metrics, so they
    are read from /proc here at scrape time, one ``ProcessCollector`` per
    process, and merged into one family per metric.
    """

    def __init__(self, registry: CollectorRegistry, worker_pids: Callable[[], Mapping[int, int]]) -> None:
        self._worker_pids = worker_pids
        self._own = ProcessCollector(registry=None)
        registry.register(self)

    def describe(self) -> list[Any]:
        return []  # the workers come and go

    def collect(self) -> Iterator[Any]:
        families: dict[str, Metric] = {}

        def add(family: Metric, labels: dict[str, str]) -> None:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            merged.samples += [sample._replace(labels={**sample.labels, **labels}) for sample in family.samples]

        for family in self._own.collect():
            add(family, {})
        for index, pid in sorted(self._worker_pids().items()):
            # A worker that ended since gives nothing (ProcessCollector skips what it cannot read).
            for family in _process_collector(pid).collect():
                add(family, {"worker": str(index)})
        return iter(families.values())


def _process_collector(pid: int) -> ProcessCollector:
    return ProcessCollector(pid=lambda: pid, registry=None)
