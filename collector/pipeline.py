"""The one path every message takes, after framing:

    syslog message -> source host -> Kerio record -> archive + metrics

Protocols hand it whole messages (already framed) with the sender they came
from. Nothing here raises on bad input: an unreadable header or an unknown
record is counted and archived like anything else. A message of a common
shape (collector/parsing/shapes.py) is counted with the summary of the first
message of its shape, read in full; any other message is read in full.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from prometheus_client import Counter
from twisted.logger import Logger

from collector.archive.writer import Archive
from collector.config import Firewall
from collector.hosts import HostRegistry, Sender, SourceHost
from collector.logs import RateLimitedLog
from collector.metrics import CollectorMetrics, HostMetrics
from collector.net.ratelimit import RateLimiter
from collector.parsing import syslog
from collector.parsing.kerio import summarize, summary_in
from collector.parsing.shapes import COMMON_SHAPE, HOST_FIELD, KEY_START, msg_of
from collector.records import RecordSummary, RecordType, Transport

SKEW_SAMPLE_INTERVAL = 1.0
# Shapes are few (see collector.parsing.shapes) unless authentication reasons name
# many users; beyond this many the summaries are forgotten and read again.
_SHAPE_LIMIT = 16384
# One tag a sender address and HOSTNAME (and TLS firewall): past this many
# they are forgotten and resolved again.
_TAG_LIMIT = 16384
# Caches keyed by what a sender wrote hold only short keys, so that their
# memory is bounded in bytes, not only in entries: a longer HOSTNAME is no
# host tag anyway (collector.hosts.MAX_HOST_LENGTH), and a longer shape key
# is read in full each time.
MAX_CACHED_HOSTNAME = 255
MAX_CACHED_SHAPE_KEY = 512

_log = Logger(namespace=__name__)


def _size(messages: list[bytes]) -> int:
    # A loop, not sum(map(len, ...)): compiled, it reads each length in place.
    size = 0
    for message in messages:
        size += len(message)
    return size


class Clock(Protocol):
    """What the pipeline reads of the reactor (``IReactorTime``): the time."""

    def seconds(self) -> float: ...


class Pipeline:
    def __init__(
        self,
        *,
        hosts: HostRegistry,
        archive: Archive,
        metrics: CollectorMetrics,
        clock: Clock,
        syslog_timezone: tzinfo,
        max_messages_per_second_per_sender: int = 0,
    ) -> None:
        self._hosts = hosts
        # Host, metrics, whether they are "other" (metrics.max_hosts), the
        # host's name (read off the uncompiled host once, not at each call)
        # and the counters each of its messages adds one to (a HOSTNAME
        # mismatch, an impersonation, hosts.max_unregistered passed), by
        # (sender address, TLS firewall, HOSTNAME). Kept across calls: a
        # worker with headroom reads a few dozen KiB at a time, in which each
        # firewall has few messages.
        self._tags: dict[tuple[str, str | None, bytes | None],
                         tuple[SourceHost, HostMetrics, bool, str, tuple[Counter, ...]]] = {}
        self._archive = archive
        self._metrics = metrics
        self._clock = clock
        self._syslog_timezone = syslog_timezone
        # Shared by the protocols, one bucket a sender for its datagrams and
        # all its connections: over TCP it waits, over UDP it is dropped.
        self.rate_limiter = RateLimiter(max_messages_per_second_per_sender)
        self._summaries: dict[tuple[bytes | None, ...], RecordSummary] = {}
        self._refusals = RateLimitedLog(_log, clock)
        self._impersonations = RateLimitedLog(_log, clock)
        self._registered(hosts)

    @property
    def hosts(self) -> HostRegistry:
        return self._hosts

    @hosts.setter
    def hosts(self, hosts: HostRegistry) -> None:
        """A new registry (the configuration was reloaded): every tag is resolved again."""
        self._hosts = hosts
        self._tags = {}
        self._registered(hosts)

    def _registered(self, hosts: HostRegistry) -> None:
        """Each registered firewall's impersonation count exists at 0 from
        the start, so that increase() sees the first use of its name."""
        for firewall in hosts.firewalls:
            self._metrics.impersonations.labels(host=firewall.name)

    def accepts(self, sender: Sender) -> bool:
        """Whether a datagram from ``sender`` is taken; count and log a refusal."""
        if self._hosts.accepts(sender.ip):
            return True
        self._metrics.refused.labels(reason="unregistered").inc()
        self._refusals.warn("refused a message from unregistered sender {sender}",
                            sender=str(sender))
        return False

    def accepts_connection(self, sender: Sender) -> bool:
        """Whether a TCP connection from ``sender`` is taken; count and log a refusal."""
        if self._hosts.accepts(sender.ip):
            return True
        self.refuse_connection(sender, "unregistered")
        return False

    def refuse_connection(self, sender: Sender, reason: str, subject: str | None = None,
                          error: str | None = None, unread: int = 0) -> None:
        self._metrics.refused_connections.labels(reason=reason).inc()
        if unread > 0:
            self._metrics.discarded_bytes.labels(reason="refused").inc(unread)
        detail = "" if subject is None else f" (certificate subject {subject!r})"
        if error is not None:
            detail += f" ({error})"
        self._refusals.warn("refused a connection from {sender}: {reason}{detail}",
                            sender=str(sender), reason=reason, detail=detail)

    def receive(self, messages: list[bytes], sender: Sender, transport: Transport,
                firewall: Firewall | None = None) -> None:
        """Process messages from a sender that was accepted.

        ``firewall`` is the firewall a TLS client certificate names, which
        then stands in for the sender's address.
        """
        self.receive_batches([(sender, messages)], transport, firewall)

    def receive_batches(self, batches: Iterable[tuple[Sender, list[bytes]]], transport: Transport,
                        firewall: Firewall | None = None) -> None:
        """Process messages received together, such as the datagrams of
        one read of a UDP socket: ``(sender, messages)`` each.

        The work done once a call (the receive time, the archive's line
        formatting) is then shared by all of them. The rate limit acts
        before: the protocols hold streams back, and drop datagrams.
        """
        received_at = self._clock.seconds()
        metrics = self._metrics
        # Archived per host and sender: a TCP chunk holds many messages of few hosts.
        archived: dict[tuple[str, bytes], tuple[HostMetrics, list[bytes]]] = {}
        pending_records = metrics.pending_records
        header_errors = overflowed = 0
        # Counted per batch: a sender whose every message names another host
        # must not cost an increment each.
        flagged: dict[tuple[Counter, ...], int] = {}
        summaries = self._summaries
        # Read once a call: compiled or not, a module global is looked up in
        # a dict at each use, and an enum member off its class costs more.
        match_shape = COMMON_SHAPE.match
        host_field, key_start, engine_startup = HOST_FIELD, KEY_START, RecordType.ENGINE_STARTUP
        for sender, messages in batches:
            # Each HOSTNAME is resolved once a sender and call: the host, its
            # metrics, its messages, whether it is counted under "other"
            # (metrics.max_hosts), and the counters each message adds one to.
            hostnames: dict[bytes | None, tuple[SourceHost, HostMetrics, list[bytes], bool, tuple[Counter, ...]]] = {}
            for raw in messages:
                # Most messages take a common shape, whose summary is read once.
                shape = match_shape(raw)
                if shape is not None:
                    # One call for every field: cheaper than asking for each.
                    fields = shape.groups()
                    hostname = fields[host_field]
                else:
                    envelope = syslog.envelope(raw)
                    if envelope.header_error is not None:
                        header_errors += 1
                    hostname = envelope.hostname
                known = hostnames.get(hostname)
                if known is None:
                    known = hostnames[hostname] = self._resolve(hostname, sender, firewall, archived)
                    # Once a second per host the whole header is read, for
                    # the clock skew. The receive time is the same for the
                    # whole call: only a host's first message in it can be due.
                    if received_at >= known[1].next_skew_check:
                        self._observe_skew(known[1], syslog.parse(raw), received_at, known[0].firewall)
                _, host_metrics, raws, overflow, flags = known
                if overflow:
                    overflowed += 1
                raws.append(raw)
                if shape is not None:
                    shape_key = fields[key_start:]
                    summary = summaries.get(shape_key)
                    if summary is None:
                        summary = self._summary_of_shape(shape_key, shape)
                else:
                    summary = summary_in(envelope)
                # A list holds the count: adding one then takes one lookup, not a get and a set.
                tally = pending_records.get((host_metrics, summary))
                if tally is None:
                    pending_records[(host_metrics, summary)] = [1]
                else:
                    tally[0] += 1
                if summary.type is engine_startup:
                    metrics.engine_started(host_metrics, received_at)
                if flags:
                    flagged[flags] = flagged.get(flags, 0) + 1
        if header_errors:
            metrics.header_parse_errors.inc(header_errors)
        if overflowed:
            metrics.host_overflow.inc(overflowed)
        for flags, count in flagged.items():
            for counter in flags:
                counter.inc(count)
        batch = []
        # Counted here, not by a call into the metrics for each part: the
        # metrics are not compiled, and a worker with headroom reads few
        # messages of each firewall at a time.
        received, last_message = metrics.pending_received, metrics.pending_last_message
        for (name, sender_text), (host_metrics, raws) in archived.items():
            batch.append((name, sender_text, raws))
            counts = received.setdefault((host_metrics, transport), [0, 0])
            counts[0] += len(raws)
            counts[1] += _size(raws)
            last_message[host_metrics] = received_at
        if batch:
            self._archive.append(received_at, batch)

    def _summary_of_shape(self, key: tuple[bytes | None, ...], shape: re.Match[bytes]) -> RecordSummary:
        """The summary of every message of a shape, read in full from one of them."""
        summary = summarize(msg_of(shape))
        size = 0
        for field in key:
            if field is not None:
                size += len(field)
        if size <= MAX_CACHED_SHAPE_KEY:
            if len(self._summaries) >= _SHAPE_LIMIT:
                self._summaries.clear()
            self._summaries[key] = summary
        return summary

    def _resolve(self, hostname_field: bytes | None, sender: Sender, firewall: Firewall | None,
                 archived: dict[tuple[str, bytes], tuple[HostMetrics, list[bytes]]],
                 ) -> tuple[SourceHost, HostMetrics, list[bytes], bool, tuple[Counter, ...]]:
        tag_key = (sender.ip, None if firewall is None else firewall.name, hostname_field)
        tag = self._tags.get(tag_key)
        if tag is None:
            tag = self._tag(hostname_field, sender, firewall)
            if hostname_field is None or len(hostname_field) <= MAX_CACHED_HOSTNAME:
                if len(self._tags) >= _TAG_LIMIT:
                    self._tags.clear()
                self._tags[tag_key] = tag
        host, host_metrics, overflow, name, flags = tag
        key = (name, sender.field)
        part = archived.get(key)
        if part is None:
            part = archived[key] = (host_metrics, [])
        return host, host_metrics, part[1], overflow, flags

    def _tag(self, hostname_field: bytes | None, sender: Sender, firewall: Firewall | None,
             ) -> tuple[SourceHost, HostMetrics, bool, str, tuple[Counter, ...]]:
        hostname = None if hostname_field is None else hostname_field.decode("utf-8", "replace")
        if firewall is None:
            host = self._hosts.resolve(sender.ip, hostname)
        else:
            host = self._hosts.resolve_bound(firewall, hostname)
        metrics = self._metrics
        # A registered firewall keeps its own label, however many others came first.
        host_metrics = metrics.host(host.name, reserved=self._hosts.is_firewall_name(host.name))
        flags: list[Counter] = []
        if host.hostname_mismatch:
            flags.append(host_metrics.hostname_mismatches)
        if host.impersonated is not None:
            flags.append(metrics.impersonations.labels(host=host.impersonated.name))
            self._impersonations.warn(
                "sender {sender} wrote HOSTNAME {hostname!r}, a name of firewall {firewall}: "
                "its messages are tagged {tag}", sender=str(sender), hostname=hostname,
                firewall=host.impersonated.name, tag=host.name)
        if host.overflow:
            flags.append(metrics.unregistered_overflow)
        return host, host_metrics, host_metrics.host != host.name, host.name, tuple(flags)

    def host_metrics_of(self, sender: Sender, firewall: Firewall | None = None) -> HostMetrics:
        """The metrics of the host a sender's own address (or certificate) is tagged as."""
        return self._tag(None, sender, firewall)[1]

    def _observe_skew(self, host_metrics: HostMetrics, message: syslog.SyslogMessage,
                      received_at: float, firewall: Firewall | None) -> None:
        """Receive time minus the sender's own timestamp, sampled from one
        message a second per host. A message without a zoned timestamp gives
        no sample, and the host waits for the next second all the same: the
        whole header is read once a second per host, never for every message."""
        host_metrics.next_skew_check = received_at + SKEW_SAMPLE_INTERVAL
        stamp = message.timestamp
        if stamp is None and message.bsd_timestamp is not None:
            zone = (firewall.timezone if firewall is not None and firewall.timezone is not None
                    else self._syslog_timezone)
            stamp = syslog.resolve_bsd(
                message.bsd_timestamp, datetime.fromtimestamp(received_at, UTC), zone)
        if stamp is None or stamp.tzinfo is None:
            return
        host_metrics.clock_skew.set(received_at - stamp.timestamp())
