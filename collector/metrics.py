"""Every Prometheus metric the collector exports, owned by one object.

The registry is passed in, never the global one, so tests build their own.
Per-host label children are resolved once, when a host is first seen, and
kept in ``HostMetrics``: the hot path never calls ``labels()``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.records import RecordType, Transport

PREFIX = "syslog_collector_"
OTHER_HOST = "other"


class HostMetrics:
    """The label children of one host."""

    __slots__ = ("records", "received_messages", "received_bytes", "last_message",
                 "hostname_mismatches", "clock_skew", "next_skew_check")

    def __init__(self, metrics: CollectorMetrics, host: str) -> None:
        self.records = {t: metrics.records.labels(host=host, type=t.value) for t in RecordType}
        self.received_messages = {
            t: metrics.received_messages.labels(host=host, transport=t.value) for t in Transport}
        self.received_bytes = {
            t: metrics.received_bytes.labels(host=host, transport=t.value) for t in Transport}
        self.last_message = metrics.last_message.labels(host=host)
        self.hostname_mismatches = metrics.hostname_mismatches.labels(host=host)
        self.clock_skew = metrics.clock_skew.labels(host=host)
        self.next_skew_check = 0.0


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry, max_hosts: int) -> None:
        self.max_hosts = max_hosts
        self._hosts: dict[str, HostMetrics] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, labels, registry=registry)

        self.records = counter(
            "records_total", "Kerio security records received, by firewall and record type",
            ("host", "type"))
        self.received_messages = counter(
            "received_messages_total", "Syslog messages received, by firewall and transport",
            ("host", "transport"))
        self.received_bytes = counter(
            "received_bytes_total", "Bytes of syslog messages received, by firewall and transport",
            ("host", "transport"))
        self.last_message = gauge(
            "last_message_timestamp_seconds", "Receive time of the last message from a firewall",
            ("host",))
        self.hostname_mismatches = counter(
            "hostname_mismatches_total",
            "Messages from a registered firewall whose HOSTNAME names another host", ("host",))
        self.clock_skew = gauge(
            "clock_skew_seconds",
            "Receive time minus the firewall's own syslog timestamp, last sampled (once a second)",
            ("host",))
        self.host_overflow = counter(
            "host_label_overflow_total",
            "Messages counted under host=\"other\" because metrics.max_hosts was reached")
        self.header_parse_errors = counter(
            "header_parse_errors_total",
            "Messages whose syslog header could not be read (archived as received)")
        self.record_parse_errors = counter(
            "record_parse_errors_total",
            "Typed records with a missing or garbled optional field", ("type",))
        self.refused = counter(
            "refused_messages_total", "Messages refused, by reason", ("reason",))
        self.truncated_frames = counter(
            "truncated_frames_total", "Messages cut to listen.max_frame_bytes", ("transport",))
        self.framing_errors = counter(
            "framing_errors_total", "TCP connections closed on an invalid octet count")
        self.tcp_connections = gauge("tcp_connections", "Open TCP connections")
        self.archive_written_bytes = counter(
            "archive_written_bytes_total", "Bytes written to archive files")
        self.archive_write_errors = counter(
            "archive_write_errors_total", "Failed writes to archive files (the lines are retried)")
        self.archive_open_files = gauge("archive_open_files", "Archive files held open")
        self.archive_files_compressed = counter(
            "archive_files_compressed_total", "Closed days' archive files compressed with gzip")
        self.archive_files_deleted = counter(
            "archive_files_deleted_total", "Archive files removed by retention, by reason (age, size)",
            ("reason",))
        self.dropped = counter(
            "dropped_messages_total", "Received messages lost, by reason", ("reason",))

    def host(self, name: str) -> HostMetrics:
        try:
            return self._hosts[name]
        except KeyError:
            pass
        if len(self._hosts) >= self.max_hosts:
            self.host_overflow.inc()
            name = OTHER_HOST
            if name in self._hosts:
                return self._hosts[name]
        metrics = self._hosts[name] = HostMetrics(self, name)
        return metrics
