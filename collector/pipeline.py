"""The one path every message takes, after framing:

    syslog message -> source host -> Kerio record -> archive + metrics

Protocols hand it whole messages (already framed) with the sender they came
from. Nothing here raises on bad input: an unreadable header or an unknown
record is counted and archived like anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from collector import syslog
from collector.archive import Archive
from collector.hosts import HostRegistry, normalize_ip
from collector.kerio import record_in
from collector.config import Firewall
from collector.metrics import CollectorMetrics, HostMetrics
from collector.records import RecordType, Transport

# Refusals are logged at most this often, with a count of those not logged.
REFUSAL_LOG_INTERVAL = 10.0
SKEW_SAMPLE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Sender:
    ip: str
    port: int
    # "192.0.2.1:514" or "[2001:db8::1]:514", as written in the archive.
    text: bytes

    @classmethod
    def from_address(cls, host: str, port: int) -> Sender:
        ip = normalize_ip(host)
        text = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return cls(ip, port, text.encode("ascii"))


class Pipeline:
    log = Logger()

    def __init__(
        self,
        *,
        hosts: HostRegistry,
        archive: Archive,
        metrics: CollectorMetrics,
        clock: IReactorTime,
        syslog_timezone: tzinfo,
    ) -> None:
        self.hosts = hosts
        self._archive = archive
        self._metrics = metrics
        self._clock = clock
        self._syslog_timezone = syslog_timezone
        self._record_parse_errors = {t: metrics.record_parse_errors.labels(type=t.value) for t in RecordType}
        self._refused_unregistered = metrics.refused.labels(reason="unregistered")
        self._refusals_not_logged = 0
        self._next_refusal_log = 0.0

    def accepts(self, sender: Sender, count: int = 1) -> bool:
        """Whether messages from ``sender`` are taken; count and log a refusal."""
        if self.hosts.accepts(sender.ip):
            return True
        self._refused_unregistered.inc(count)
        now = self._clock.seconds()
        if now >= self._next_refusal_log:
            self.log.warn(
                "refused {count} message(s) from unregistered sender {sender} "
                "({not_logged} other refusals since the last report)",
                count=count, sender=sender.text.decode(), not_logged=self._refusals_not_logged)
            self._refusals_not_logged = 0
            self._next_refusal_log = now + REFUSAL_LOG_INTERVAL
        else:
            self._refusals_not_logged += count
        return False

    def receive(self, messages: list[bytes], sender: Sender, transport: Transport) -> None:
        """Process messages from a sender that ``accepts`` took."""
        received_at = self._clock.seconds()
        metrics = self._metrics
        resolve = self.hosts.resolve
        append = self._archive.append
        for raw in messages:
            message = syslog.parse(raw)
            if message.header_error is not None:
                metrics.header_parse_errors.inc()
            host = resolve(sender.ip, message.hostname)
            record = record_in(message)
            append(host.name, received_at, sender.text, raw)
            host_metrics = metrics.host(host.name)
            host_metrics.record(record, received_at)
            host_metrics.received_messages[transport].inc()
            host_metrics.received_bytes[transport].inc(len(raw))
            host_metrics.last_message.set(received_at)
            if record.defects:
                self._record_parse_errors[record.type].inc()
            if host.hostname_mismatch:
                host_metrics.hostname_mismatches.inc()
            if received_at >= host_metrics.next_skew_check:
                self._observe_skew(host_metrics, message, received_at, host.firewall)

    def _observe_skew(self, host_metrics: HostMetrics, message: syslog.SyslogMessage,
                      received_at: float, firewall: Firewall | None) -> None:
        """Receive time minus the sender's own timestamp, sampled once a second per host."""
        stamp = message.timestamp
        if stamp is None and message.bsd_timestamp is not None:
            zone = (firewall.timezone if firewall is not None and firewall.timezone is not None
                    else self._syslog_timezone)
            stamp = syslog.resolve_bsd(
                message.bsd_timestamp, datetime.fromtimestamp(received_at, timezone.utc), zone)
        if stamp is None or stamp.tzinfo is None:
            return
        host_metrics.next_skew_check = received_at + SKEW_SAMPLE_INTERVAL
        host_metrics.clock_skew.set(received_at - stamp.timestamp())
