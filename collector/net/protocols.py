"""Thin adapters from Twisted's sockets to the pipeline.

They frame bytes into messages and hand them on; they never raise on bad
input. The stream factory also knows its open connections, so that a
graceful stop can let them finish sending (see ``drain``).
"""

from __future__ import annotations

import socket
from typing import Any

from prometheus_client import Counter
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, LogEvent, Logger, globalLogPublisher
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from collector.archive.writer import Archive
from collector.config import Firewall
from collector.hosts import Sender
from collector.logs import RateLimitedLog
from collector.metrics import CollectorMetrics
from collector.net.slots import ConnectionSlots
from collector.net.sockets import unread_bytes
from collector.net.tls import is_revoked, subject_common_name
from collector.parsing.framing import StreamDecoder, datagram_message
from collector.pipeline import Pipeline
from collector.records import Transport

# Why a connection is not being read: each must be lifted before it is read again.
ARCHIVE_BEHIND = "archive"
OVER_RATE = "rate"

# At shutdown a connection that has sent nothing for this long is done.
DRAIN_QUIET_SECONDS = 0.2
# How often idle connections and incomplete frames are looked for.
SWEEP_INTERVAL = 1.0
_SENDER_CACHE_LIMIT = 16384
# Twisted reads a TCP connection in pieces of its transport's ``bufferSize``
# (64 KiB). A connection whose every read comes back full has more waiting,
# and reading it in larger pieces shares the pipeline's work per call (per
# host: its metrics, its archive lines) among more messages. Larger pieces
# are only for such connections: the whole size is allocated for each read,
# and past 128 KiB glibc maps it from the kernel however little arrives.
MAX_READ_SIZE = 1024 * 1024
# A UDP socket that gave at least this much in one read has more waiting: it
# is read again at once (see ``rest_before_reading``).
FULL_READ = 64 * 1024
# Linux's SO_RCVBUFFORCE (33): like SO_RCVBUF, but not capped by net.core.rmem_max.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# Reads of what the kernel holds for a connection being closed: enough for
# any receive buffer at the largest read size; a sender that keeps up with
# them is cut off there, and what is left counted.
MAX_READS_AT_CLOSE = 64
# Tokens of the rate limit a datagram socket takes for a sender at a time.
_TOKENS_A_TAKE = 256
# Datagrams read at stop, at most: a flood that goes on is not chased.
MAX_DATAGRAMS_AT_STOP = 1_000_000
# A sender held back for its rate is read again after at least this long,
# so that a slow rate does not wake the reactor for every message.
MIN_THROTTLE_SECONDS = 0.01


class SyslogDatagramProtocol(DatagramProtocol):
    """One syslog message per datagram (RFC 5426).

    The datagrams that one read of the socket returns (Twisted reads up to
    256 KiB at a time) go down the pipeline together, right after that read,
    as one batch per sender: the per-call work is then shared as it is for a
    TCP chunk, even when every datagram comes from another firewall. A read
    that brought little is followed by a rest (``rest_before_reading``), so
    that the next one brings more.

    While the archive is full the socket is not read at all: datagrams wait
    in the kernel's receive buffer, which drops (and counts) what it cannot
    hold.
    """

    noisy = False
    log = Logger()

    def __init__(self, pipeline: Pipeline, archive: Archive, metrics: CollectorMetrics,
                 receive_buffer: int, max_frame: int, clock: IReactorTime,
                 read_interval: float = 0.0) -> None:
        self._pipeline = pipeline
        self._archive = archive
        self._paused = False
        # A disk slower than the input pauses reading at every flush.
        self._pause_log = RateLimitedLog(self.log, clock)
        archive.when_drained(self._archive_drained)
        self._metrics = metrics
        self._receive_buffer = receive_buffer
        self._max_frame = max_frame
        self._clock = clock
        self._read_interval = read_interval
        # When the socket was last read after a rest (or without one), and
        # the bytes read since: they decide the next rest.
        self._read_from = 0.0
        self._read_bytes = 0
        self._resting: IDelayedCall | None = None
        self._truncated = metrics.truncated_frames.labels(transport=Transport.UDP.value)
        # Tokens of the rate limit taken for this read, by address, and the
        # datagrams each address had dropped for want of them.
        self._budgets: dict[tuple[str, int], int] = {}
        self._limited: dict[tuple[str, int], int] = {}
        self._rate_log = RateLimitedLog(self.log, clock)
        self._skipped = metrics.skipped_bytes.labels(transport=Transport.UDP.value)
        self._senders: dict[tuple[str, int], Sender] = {}
        # Keyed by address: hashing a Sender is a Python call.
        self._batches: dict[tuple[str, int], tuple[Sender, list[bytes]]] = {}
        self._delivery: IDelayedCall | None = None

    def startProtocol(self) -> None:
        sock = self._socket = self.transport.socket
        granted = set_receive_buffer(sock, self._receive_buffer)
        # Linux reports twice the size asked for (the rest is its bookkeeping).
        if granted < self._receive_buffer:
            self.log.warn(
                "the UDP receive buffer is {granted} bytes, not the {requested} asked for: raise "
                "the sysctl net.core.rmem_max, or run with CAP_NET_ADMIN", granted=granted,
                requested=self._receive_buffer)
        self._metrics.udp_sockets.watch(sock, self._receive_buffer)

    def stopProtocol(self) -> None:
        if self._resting is not None:
            self._resting.cancel()
            self._resting = None
        self._paused = False
        self.deliver()
        self._read_dry()
        self._metrics.udp_sockets.forget(self._socket)

    def _read_dry(self) -> None:
        """At stop, read what the kernel holds for the socket: datagrams it took are the collector's to keep.

        The archive takes them past its pause thresholds, as it does the
        last reads of TCP connections. A socket that still gives after
        ``MAX_DATAGRAMS_AT_STOP`` (a flood that goes on) is left, and what
        it held then counted in bytes.
        """
        sock = self._socket
        for count in range(MAX_DATAGRAMS_AT_STOP):
            try:
                datagram, addr = sock.recvfrom(65536, socket.MSG_DONTWAIT)
            except OSError:  # nothing more (EAGAIN), or the socket is gone
                break
            self.datagramReceived(datagram, addr[:2])
            if count % 4096 == 4095:
                self.deliver()
        self.deliver()
        left = unread_bytes(sock)
        if left > 0:
            self._metrics.discarded_bytes.labels(reason="unread_at_close").inc(left)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if not datagram:
            return
        batch = self._batches.get(addr)
        if batch is None:
            # The first datagram of this read from the address: the sender is
            # checked once a read, not once a datagram.
            sender = self._senders.get(addr)
            if sender is None:
                if len(self._senders) >= _SENDER_CACHE_LIMIT:
                    self._senders.clear()
                sender = self._senders[addr] = Sender.from_address(addr[0], addr[1])
            if not self._pipeline.accepts(sender):
                return
            batch = self._batches[addr] = (sender, [])
            if self._delivery is None:
                self._delivery = self._clock.callLater(0, self._deliver_read)
        self._read_bytes += len(datagram)
        limiter = self._pipeline.rate_limiter
        if limiter.rate:
            # Tokens are taken for many datagrams at a time and what is left
            # is put back after the read: one bucket operation a read, not one a datagram.
            budget = self._budgets.get(addr, 0)
            if budget == 0:
                budget = limiter.take(batch[0].ip, _TOKENS_A_TAKE, self._clock.seconds())
                if budget == 0:
                    # Dropped before anything is read of it: counted as rate limited only.
                    self._limited[addr] = self._limited.get(addr, 0) + 1
                    return
            self._budgets[addr] = budget - 1
        message = datagram_message(datagram)
        if len(message) > self._max_frame:
            self._skipped.inc(len(message) - self._max_frame)
            message = message[:self._max_frame]
            self._truncated.inc()
        batch[1].append(message)

    def deliver(self) -> None:
        """Hand the datagrams received so far to the pipeline."""
        # Called before the delivery due at the end of the read: that one has nothing left to do.
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery = None
        batches, self._batches = self._batches, {}
        if self._budgets:
            budgets, self._budgets = self._budgets, {}
            limiter = self._pipeline.rate_limiter
            for addr, left in budgets.items():
                limiter.give(addr[0], left)
        if self._limited:
            self._count_limited()
        if batches:
            self._pipeline.receive_batches([b for b in batches.values() if b[1]], Transport.UDP)

    def _count_limited(self) -> None:
        limited, self._limited = self._limited, {}
        pipeline = self._pipeline
        for addr, count in limited.items():
            sender = self._senders.get(addr) or Sender.from_address(addr[0], addr[1])
            # Under the sender's own tag: the HOSTNAMEs of what is dropped
            # are never read, so a flood of them takes no tag nor label.
            pipeline.host_metrics_of(sender).rate_limited.inc(count)
            self._metrics.dropped_rate_limited.inc(count)
            self._rate_log.warn("sender {sender} is over its rate limit ({rate} messages/s): dropped {count} "
                                "UDP message(s)", sender=str(sender), rate=pipeline.rate_limiter.rate, count=count)

    def _deliver_read(self) -> None:
        self.deliver()
        if self._archive.pause_datagrams:
            self._read_bytes = 0
            self._paused = True
            self.transport.stopReading()
            self._pause_log.warn("the archive is behind: UDP datagrams wait in the kernel until it catches up")
            return
        now = self._clock.seconds()
        rest = rest_before_reading(self._read_from, now, self._read_bytes, self._read_interval)
        self._read_bytes = 0
        if rest:
            self.transport.stopReading()
            self._resting = self._clock.callLater(rest, self._read_again)
        else:
            self._read_from = now

    def _archive_drained(self) -> None:
        if self._paused:
            self._paused = False
            self._read_again()

    def _read_again(self) -> None:
        self._resting = None
        self._read_from = self._clock.seconds()
        self.transport.startReading()


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for an ``SO_RCVBUF`` of ``size``, past net.core.rmem_max when permitted; return the granted size."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except (OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def rest_before_reading(read_from: float, now: float, received: int, interval: float) -> float:
    """How long a UDP socket rests before its next read, having given ``received`` bytes since ``read_from``.

    A socket that keeps giving a little at a time is read at most once an
    ``interval``: every read costs a reactor wakeup and the pipeline's work
    per call, however little it brings, and what arrives meanwhile waits in
    the kernel's receive buffer to be read in one go. One that gave a lot is
    read again at once, and so is one read less often than that anyway.

    Not for TCP: there a rest holds the sender to one receive window per
    interval, which caps a busy connection.
    """
    if received >= FULL_READ:
        return 0.0
    return max(0.0, read_from + interval - now)


def socket_transport(transport: Any) -> Any:
    """The transport under any wrapping factory's: the one that reads the socket.

    A worker's connections come wrapped (collector.workers.balancing reports each
    one's end to the supervisor); the wrapper passes attributes read
    through to the transport it wraps, but keeps those set on itself.
    """
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


def next_read_size(size: int, received: int, least: int) -> int:
    """The size of a connection's next read, after ``received`` bytes came of one of ``size``."""
    if received >= size:
        return min(size * 4, MAX_READ_SIZE)
    if received < least:
        return least
    return size


@implementer(IHandshakeListener)
class SyslogStreamProtocol(Protocol):
    """Syslog over one TCP or TLS connection, framed per RFC 6587 (RFC 5425 for TLS)."""

    log = Logger()
    factory: SyslogStreamFactory
    # Admitted under the connection limits, counted until closed.
    _admitted = False
    # Accepted as a sender: its messages are processed.
    _accepted = False
    _firewall: Firewall | None = None
    handshake_done = False
    # Closed so that a registered firewall or a newcomer could connect.
    evicted = False
    # Closed with more in the kernel: its last message is cut short.
    _cut_short = False
    _handshake_timed_out = False
    # When the connection was last held back for its sender's rate.
    _held_since = 0.0
    _release: IDelayedCall | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        peer = self.transport.getPeer()
        self.sender = Sender.from_address(peer.host, peer.port)
        self.last_data_at = factory.clock.seconds()
        # When the frame being received began, while one is incomplete.
        self.partial_since: float | None = None
        # Why the connection is not being read (ARCHIVE_BEHIND, OVER_RATE).
        self.paused_for: set[str] = set()
        self._decoder = StreamDecoder(factory.max_frame)
        # The transport that reads the socket, and the read size Twisted
        # starts with; None over TLS, whose messages come 32 KiB at most at a
        # time whatever is read from the socket.
        self._reader = None if factory.tls else socket_transport(self.transport)
        self._least_read: int | None = getattr(self._reader, "bufferSize", None)
        if factory.receive_buffer:
            # Fixed from the first read; the kernel's own starts small and
            # grows as the connection is read.
            set_receive_buffer(self.transport.getHandle(), factory.receive_buffer)
        self.opened_at = self.last_data_at
        # Over TLS, a connection's messages begin once its handshake is done.
        self.handshake_done = not factory.tls
        admission = factory.limits.admit(self.sender.ip, self)
        if admission.refusal is not None:
            self._refuse(admission.refusal)
            return
        self._admitted = True
        if admission.victim is not None:
            admission.victim.evict()  # type: ignore[attr-defined]
        factory.connection_opened(self)
        if not factory.tls:
            # Over TLS the client's certificate decides, once the handshake is done.
            self._accepted = factory.pipeline.accepts_connection(self.sender)
            if not self._accepted:
                self._discard_unread()
                self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        subject = subject_common_name(self.transport.getPeerCertificate())
        binding = self.factory.pipeline.hosts.tls_binding(self.sender.ip, subject)
        if binding.refusal is not None:
            if binding.impersonated is not None:
                # A firewall's certificate offered from where it may not speak for it.
                self.factory.metrics.impersonations.labels(host=binding.impersonated.name).inc()
            self.factory.pipeline.refuse_connection(self.sender, binding.refusal, subject=subject)
            self._discard_unread()
            self.transport.abortConnection()
            return
        self._firewall = binding.firewall
        self._accepted = True

    def recheck_certificate(self) -> None:
        """After a reload: a TLS client whose certificate a CRL now revokes, or
        that may no longer speak for the firewall it did, is closed, counted;
        one that now speaks for another is tagged as that one."""
        if not self.factory.tls or not self._accepted or not self.connected:
            return
        handle = self.transport.getHandle()
        chain = handle.get_peer_cert_chain() or []
        peer = self.transport.getPeerCertificate()
        if is_revoked(chain + ([peer] if peer is not None else [])):
            self._close_after_reload("tls_revoked")
            return
        subject = subject_common_name(peer)
        binding = self.factory.pipeline.hosts.tls_binding(self.sender.ip, subject)
        if binding.refusal is not None:
            if binding.impersonated is not None:
                self.factory.metrics.impersonations.labels(host=binding.impersonated.name).inc()
            self._close_after_reload("tls_binding")
            return
        self._firewall = binding.firewall

    def _close_after_reload(self, reason: str) -> None:
        self.factory.metrics.closed_connections.labels(reason=reason).inc()
        self.log.warn("closing connection from {sender}: {reason} (after a reload)", sender=str(self.sender),
                      reason=reason)
        self.read_dry_and_close()

    def dataReceived(self, data: bytes) -> None:
        if not self._accepted:
            # A refused connection's bytes, read before it closes.
            self.factory.discarded_refused.inc(len(data))
            return
        if self._least_read is not None:
            reader = self._reader
            reader.bufferSize = next_read_size(reader.bufferSize, len(data), self._least_read)
        now = self.factory.clock.seconds()
        decoder = self._decoder
        before = (decoder.truncated, decoder.skipped, decoder.misframed)
        frames = decoder.feed(data)
        if (decoder.truncated, decoder.skipped, decoder.misframed) != before:
            self._count_framing(*before)
        if frames or decoder.pending:
            # Trailers and blank lines alone keep no connection from being idle.
            self.last_data_at = now
        if frames:
            self._deliver(frames)
        if decoder.pending == 0:
            self.partial_since = None
        elif frames or self.partial_since is None:
            self.partial_since = now

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
            self._count_held(self.factory.clock.seconds())
        if self._accepted:
            # A last message without its trailer is still a message.
            decoder = self._decoder
            before = (decoder.truncated, decoder.skipped, decoder.misframed)
            if self._cut_short and decoder.pending:
                decoder.truncated += 1
            frames = decoder.finish()
            if (decoder.truncated, decoder.skipped, decoder.misframed) != before:
                self._count_framing(*before)
            if frames:
                self._archive(frames)
        if self._admitted:
            if self.factory.tls and not self.handshake_done and not self._handshake_timed_out:
                # No certificate, an untrusted one, or no TLS at all.
                self.factory.pipeline.refuse_connection(
                    self.sender, "tls_handshake", error=reason.getErrorMessage())
            self.factory.limits.release(self.sender.ip, self)
            self.factory.connection_closed(self)

    def close(self, reason: str) -> None:
        """Close for a limit (idle, frame timeout), counted by reason."""
        self.factory.metrics.closed_connections.labels(reason=reason).inc()
        self.factory.close_log.warn("closing connection from {sender}: {reason}", sender=str(self.sender),
                                    reason=reason)
        self.read_dry_and_close()

    def evict(self) -> None:
        """Close for another sender's sake (see collector.net.slots), once."""
        if not self.evicted:
            self.evicted = True
            self.close("evicted")

    def close_unfinished_handshake(self) -> None:
        """A TLS client that has not finished its handshake in time holds a place for nothing."""
        self._handshake_timed_out = True
        self.factory.metrics.closed_connections.labels(reason="handshake_timeout").inc()
        self.factory.close_log.warn("closing connection from {sender}: {reason}", sender=str(self.sender),
                                    reason="handshake_timeout")
        self.transport.abortConnection()

    def read_dry_and_close(self) -> None:
        """Read and archive what the kernel holds for the connection, then close it."""
        self.read_dry()
        self.close_counting_unread()

    def read_dry(self) -> None:
        """Read and archive what the kernel held for the connection when this was called.

        It is read whether or not it is paused: what a sender has sent and
        the kernel acknowledged is the collector's to keep. A sender that
        goes on sending is not chased: what came after is counted at close.
        """
        reader = socket_transport(self.transport)
        sock = getattr(reader, "socket", None)
        if sock is None or not self._accepted or not self.connected:
            return
        held = unread_bytes(sock)
        for _ in range(MAX_READS_AT_CLOSE):
            before = unread_bytes(sock)
            if before <= 0 or held <= 0 or reader.doRead() is not None or not self.connected:
                break
            held -= before - unread_bytes(sock)

    def close_counting_unread(self) -> None:
        """Close now, counting in bytes what the kernel still holds, and what
        is left of a message the close cuts short as truncated."""
        sock = getattr(socket_transport(self.transport), "socket", None)
        left = unread_bytes(sock) if sock is not None and self.connected else 0
        if left > 0:
            self.factory.metrics.discarded_bytes.labels(reason="unread_at_close").inc(left)
            self._cut_short = True
        # At once, not after a TLS close_notify from a peer that may go on
        # sending: what it sent is read, or counted, by now.
        self.transport.abortConnection()

    def pause(self, why: str) -> None:
        if not self.paused_for:
            self.transport.pauseProducing()
        self.paused_for.add(why)

    def resume(self, why: str) -> None:
        if why in self.paused_for:
            self.paused_for.discard(why)
            if not self.paused_for:
                # The wait was ours: the idle and frame timeouts start again.
                now = self.factory.clock.seconds()
                self.last_data_at = now
                if self.partial_since is not None:
                    self.partial_since = now
                self.transport.resumeProducing()

    def _refuse(self, reason: str) -> None:
        self.factory.pipeline.refuse_connection(self.sender, reason)
        self._discard_unread()
        self.transport.abortConnection()

    def _discard_unread(self) -> None:
        """Count what the kernel holds for a connection closed unread."""
        sock = getattr(socket_transport(self.transport), "socket", None)
        if sock is not None:
            left = unread_bytes(sock)
            if left > 0:
                self.factory.discarded_refused.inc(left)

    def _count_framing(self, truncated: int, skipped: int, misframed: int) -> None:
        decoder = self._decoder
        transport = self.factory.transport_kind.value
        metrics = self.factory.metrics
        if decoder.truncated != truncated:
            metrics.truncated_frames.labels(transport=transport).inc(decoder.truncated - truncated)
        if decoder.skipped != skipped:
            metrics.skipped_bytes.labels(transport=transport).inc(decoder.skipped - skipped)
        if decoder.misframed != misframed:
            metrics.framing_errors.inc(decoder.misframed - misframed)

    def _deliver(self, frames: list[bytes]) -> None:
        """Archive what was read; a sender now over its rate is not read again until it is back within it.

        What was read is never held back: the sender is charged for it, into
        debt if need be, and waits that debt off. So a sender gets at most one
        read past its burst, and nothing piles up in memory while it waits.
        """
        limiter = self.factory.pipeline.rate_limiter
        if limiter.rate:
            now = self.factory.clock.seconds()
            wait = limiter.charge(self.sender.ip, len(frames), now)
            if wait > 0 and OVER_RATE not in self.paused_for:
                self._hold_back(now, wait)
        self._archive(frames)

    def _archive(self, frames: list[bytes]) -> None:
        factory = self.factory
        factory.pipeline.receive(frames, self.sender, factory.transport_kind, self._firewall)
        if factory.archive.pause_streams:
            factory.pause()

    def _hold_back(self, now: float, wait: float) -> None:
        """Stop reading a sender over its rate: TCP makes it wait, nothing is dropped."""
        factory = self.factory
        self._held_since = now
        self.pause(OVER_RATE)
        self._release = factory.clock.callLater(max(MIN_THROTTLE_SECONDS, wait), self._release_held)
        factory.throttle_log.warn(
            "sender {sender} is over its rate limit ({rate} messages/s): its connections are "
            "read only as fast as that", sender=str(self.sender), rate=factory.pipeline.rate_limiter.rate)

    def _release_held(self) -> None:
        self._release = None
        self._count_held(self.factory.clock.seconds())
        self.resume(OVER_RATE)

    def _count_held(self, now: float) -> None:
        host = self.factory.pipeline.host_metrics_of(self.sender, self._firewall)
        host.throttled.inc(max(0.0, now - self._held_since))


class SyslogStreamFactory(Factory):
    protocol = SyslogStreamProtocol
    noisy = False
    log = Logger()

    def __init__(self, pipeline: Pipeline, archive: Archive, metrics: CollectorMetrics,
                 clock: IReactorTime, max_frame: int, limits: ConnectionSlots, *, tls: bool = False,
                 idle_timeout: float = 600.0, frame_timeout: float = 30.0, receive_buffer: int = 0,
                 handshake_timeout: float = 10.0) -> None:
        self.pipeline = pipeline
        self.archive = archive
        # Connections paused until the archive catches up (backpressure).
        self.paused: set[SyslogStreamProtocol] = set()
        archive.when_drained(self.resume)
        self.metrics = metrics
        self.clock = clock
        self.max_frame = max_frame
        self.limits = limits
        self.tls = tls
        self.transport_kind = Transport.TLS if tls else Transport.TCP
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.handshake_timeout = handshake_timeout
        # SO_RCVBUF of each connection (0: the kernel's own sizing).
        self.receive_buffer = receive_buffer
        self.connections: set[SyslogStreamProtocol] = set()
        self._gauge = metrics.tcp_connections.labels(transport=self.transport_kind.value)
        self.discarded_refused = metrics.discarded_bytes.labels(reason="refused")
        self.throttle_log = RateLimitedLog(self.log, clock)
        # Closes for a limit: a thousand at once must not be a thousand lines.
        self.close_log = RateLimitedLog(self.log, clock)
        self._drained: list[Deferred[None]] = []
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def startFactory(self) -> None:
        self._sweeper.start(SWEEP_INTERVAL, now=False)

    def stopFactory(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()

    def buildProtocol(self, addr: IAddress) -> SyslogStreamProtocol:
        protocol = SyslogStreamProtocol()
        protocol.factory = self
        return protocol

    def connection_opened(self, protocol: SyslogStreamProtocol) -> None:
        self.connections.add(protocol)
        self._gauge.set(len(self.connections))

    def pause(self) -> None:
        """Stop reading from every connection: senders wait, nothing is buffered here.

        All of them at once, not each at its next delivery: with a thousand
        connections, one more read from each could hold as much again as
        the archive's whole backlog.
        """
        pausing = self.connections - self.paused
        for protocol in pausing:
            protocol.pause(ARCHIVE_BEHIND)
        self.paused |= pausing
        self.metrics.paused_connections.inc(len(pausing))

    def resume(self) -> None:
        paused, self.paused = self.paused, set()
        for protocol in paused:
            protocol.resume(ARCHIVE_BEHIND)
        self.metrics.paused_connections.dec(len(paused))

    def connection_closed(self, protocol: SyslogStreamProtocol) -> None:
        if protocol in self.paused:
            self.paused.discard(protocol)
            self.metrics.paused_connections.dec()
        self.connections.discard(protocol)
        self._gauge.set(len(self.connections))
        if not self.connections:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def sweep(self) -> None:
        """Close idle connections, those whose message never completes (slowloris), and
        TLS connections whose handshake does not finish."""
        now = self.clock.seconds()
        if self.tls:
            for protocol in [p for p in self.connections if not p.handshake_done]:
                if now - protocol.opened_at >= self.handshake_timeout:
                    protocol.close_unfinished_handshake()
        for protocol in [p for p in self.connections if not p.paused_for and p.handshake_done]:
            if now - protocol.last_data_at >= self.idle_timeout:
                protocol.close("idle")
            elif protocol.partial_since is not None and now - protocol.partial_since >= self.frame_timeout:
                protocol.close("frame_timeout")

    def drain(self, timeout: float) -> Deferred[None]:
        """Close each connection once it goes quiet, all of them after ``timeout``.

        Each is read dry as it is closed, paused or not: a graceful stop
        keeps what senders had sent before it closed their connections.
        Fires when every connection is closed.
        """
        if not self.connections:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        deadline = self.clock.seconds() + timeout
        quiet_before: set[SyslogStreamProtocol] = set()

        def close_quiet() -> None:
            nonlocal quiet_before
            now = self.clock.seconds()
            # A paused connection is silent because we stopped reading it.
            quiet = {protocol for protocol in self.connections
                     if not protocol.paused_for and now - protocol.last_data_at >= DRAIN_QUIET_SECONDS}
            # Quiet at two checks in a row: after the reactor was held up, a
            # check runs before what came meanwhile is read.
            done = quiet & quiet_before
            closing = [p for p in self.connections if now >= deadline or p in done]
            # All read first, then all closed: what a sender sends while the
            # others are read is counted at its close, not lost unseen.
            for protocol in closing:
                protocol.read_dry()
            for protocol in closing:
                protocol.close_counting_unread()
            quiet_before = quiet

        checker = LoopingCall(close_quiet)
        checker.clock = self.clock
        checker.start(DRAIN_QUIET_SECONDS / 2)
        d.addBoth(lambda result: (checker.stop(), result)[1])
        return d


# What Twisted's listening ports log for each connection they accept only to
# close it, having run out of file descriptors (tcp._accept).
_EMFILE_CLOSED = "EMFILE recovery: Closed socket from {address}"


@implementer(ILogObserver)
class DescriptorShortage(Service):
    """Counts the connections Twisted closed for want of a file descriptor.

    On EMFILE a Twisted port frees a reserved descriptor, accepts every
    waiting connection and closes it at once; it says so only in its log.
    """

    def __init__(self, refused: Counter, publisher: Any = globalLogPublisher) -> None:
        self._refused = refused
        self._publisher = publisher

    def startService(self) -> None:
        super().startService()
        self._publisher.addObserver(self)

    def stopService(self) -> None:
        super().stopService()
        self._publisher.removeObserver(self)

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_format") == _EMFILE_CLOSED:
            self._refused.inc()
