"""TCP and TLS connections spread evenly over the worker processes.

With several workers, the supervisor listens on the TCP and TLS ports
itself and hands each connection it accepts to the worker with the fewest
open, as a file descriptor over a UNIX socket pair, the worker's *channel*
(``SCM_RIGHTS``). With each descriptor goes a line: one byte, ``KIND_TCP`` or
``KIND_TLS``, saying which listener took it, then the sender's address and
port. The worker adopts the connection (``adoptStreamConnection``) and, when
it closes, writes ``CLOSED`` and the sender's address back, a line each, so
the supervisor knows how many each one holds, and from whom. A connection
the worker cannot adopt is reported closed at once: its place is free again.
Worker 0 also writes back the UDP address it bound (``UDP_BOUND``), from
which the supervisor starts the other workers on the same port.

The supervisor applies ``limits.max_connections`` and
``max_connections_per_sender`` to all the workers' connections together. A
connection over a limit goes to a worker all the same, with a byte naming
the limit instead of the listener: the worker counts and logs the refusal
with its other metrics, and closes it. A connection no worker's channel
takes (all full, or gone) is closed by the supervisor, which tells the next
worker it reaches (``UNHANDED``): that worker counts it as refused,
``handover_failed``. The supervisor's own metrics cannot count it: the
workers' ``refused_connections_total`` is the one family of that name.

A hash of the senders' addresses and ports (``SO_REUSEPORT``) would leave a
few busy senders, or one relay's few connections, on one worker about half
of the time; this split is exact.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IFileDescriptorReceiver, IListeningPort, IReadDescriptor
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from collector.config import ListenAddress
from collector.hosts import Sender, normalize_ip
from collector.logs import RateLimitedLog
from collector.net.slots import ConnectionSlots
from collector.net.sockets import unread_bytes

KIND_TCP = b"t"
KIND_TLS = b"s"
CLOSED = b"-"
# From worker 0: the UDP address it bound.
UDP_BOUND = b"u"
# To a worker, without a descriptor: connections the supervisor closed for
# want of a worker to take them, to count as refused.
UNHANDED = b"!"
HANDOVER_FAILED = "handover_failed"
_KIND_NAMES = {KIND_TCP: "tcp", KIND_TLS: "tls"}
# To a worker, without a descriptor: close a connection of this sender (a
# network, see collector.net.slots) so that another may connect.
EVICT = b"x"
# Sent instead of the kind: the connection is over this limit (ConnectionSlots.admit).
_REFUSAL_KINDS = {"too_many_connections": b"0", "too_many_from_sender": b"1"}
_REFUSALS = {kind: reason for reason, kind in _REFUSAL_KINDS.items()}
# A worker finds its end of the channel at this descriptor.
CHANNEL_FD = 3
# Connections accepted in one go before the reactor serves others again.
_ACCEPTS_PER_READ = 64
_BACKLOG = 1024
_ACCEPT_RETRY_SECONDS = 1.0


def _address(sender: Sender) -> bytes:
    return f"{sender.ip} {sender.port}".encode("ascii")


def _sender(address: bytes) -> Sender:
    host, _, port = address.decode("ascii").rpartition(" ")
    return Sender.from_address(host, int(port))


class WorkerChannel(Protocol):
    """The supervisor's end of one worker's channel."""

    def __init__(self, index: int, on_change: Callable[[], None], on_lost: Callable[[WorkerChannel], None],
                 on_closed: Callable[[str], None], on_udp_bound: Callable[[str], None] | None = None) -> None:
        self.index = index
        # Connections handed to the worker and not yet reported closed, in
        # all (the sum of ``senders``, kept for the choice at every hand-over) and by sender.
        self.open = 0
        self.senders: dict[str, int] = {}
        self.handed = 0
        self._on_change = on_change
        self._on_lost = on_lost
        self._on_closed = on_closed
        self._on_udp_bound = on_udp_bound
        self._partial = b""

    def send(self, line: bytes, connection: socket.socket | None = None) -> bool:
        """Send one line to the worker, with ``connection``'s descriptor if
        given; False if its channel is full or gone.

        Sent at once, not queued: a handed-over connection is closed here
        right after. Linux queues a send this short on a UNIX stream socket
        as one buffer, whole or not at all, so lines never mix.
        """
        handle = self.transport.getHandle()
        try:
            if connection is None:
                handle.send(line + b"\n")
            else:
                socket.send_fds(handle, [line + b"\n"], [connection.fileno()])
        except OSError:
            return False
        return True

    def hand_over(self, connection: socket.socket, kind: bytes, sender: Sender, admitted: bool) -> bool:
        """Send a connection to the worker; False if its channel is full or gone.

        A connection not ``admitted`` is handed over only to be refused.
        """
        if not self.send(kind + _address(sender), connection):
            return False
        if admitted:
            self.open += 1
            self.senders[sender.ip] = self.senders.get(sender.ip, 0) + 1
            self.handed += 1
            self._on_change()
        return True

    def dataReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        changed = False
        for line in lines:
            if line.startswith(UDP_BOUND):
                if self._on_udp_bound is not None:
                    self._on_udp_bound(line[len(UDP_BOUND):].decode("ascii"))
                continue
            sender_ip = line.removeprefix(CLOSED).decode("ascii", "replace")
            count = self.senders.get(sender_ip, 0) - 1
            if count < 0:
                continue  # not one it was handed: nothing to release
            if count:
                self.senders[sender_ip] = count
            else:
                del self.senders[sender_ip]
            self.open -= 1
            self._on_closed(sender_ip)
            changed = True
        if changed:
            self._on_change()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._on_lost(self)


class Balancer:
    """The workers' channels; each connection goes to the one with the fewest open.

    ``on_change`` is given each worker's open connections whenever they change.
    """

    def __init__(self, reactor: Any, on_change: Callable[[dict[int, int]], None], limits: ConnectionSlots) -> None:
        self._reactor = reactor
        self.channels: dict[int, WorkerChannel] = {}
        self._on_change = on_change
        self._limits = limits
        # Connections closed for want of a worker and not yet told to one,
        # and the last of them, whose sender the worker's log names.
        self.unhanded = 0
        self._last_unhanded: Sender | None = None

    def open_channel(self, index: int, on_udp_bound: Callable[[str], None] | None = None) -> socket.socket:
        """A new channel for worker ``index``; returns the end the worker gets.

        ``on_udp_bound`` is given the UDP address the worker reports it bound.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = WorkerChannel(index, self._changed, self._lost, self._limits.release, on_udp_bound)
        with ours:
            self._reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, OneProtocolFactory(channel))
        self.channels[index] = channel
        self._changed()
        self._tell_unhanded(channel)
        return theirs

    def hand_over(self, connection: socket.socket, kind: bytes, sender: Sender) -> bool:
        """Give a connection to the worker with the fewest open, or to be
        refused when it is over a limit; False if no worker took it."""
        admission = self._limits.admit(sender.ip)
        refusal = admission.refusal
        if refusal is not None:
            kind = _REFUSAL_KINDS[refusal]
        elif admission.evict is not None:
            self._evict(admission.evict)
        # Ties go to the worker handed fewer so far: short connections alternate too.
        for channel in sorted(self.channels.values(), key=lambda c: (c.open, c.handed)):
            if channel.hand_over(connection, kind, sender, refusal is None):
                self._tell_unhanded(channel)
                return True
        if refusal is None:
            self._limits.release(sender.ip)
        self.unhanded += 1
        self._last_unhanded = sender
        return False

    def _evict(self, sender: str) -> None:
        """Ask a worker that holds a connection of ``sender`` to close one."""
        for channel in self.channels.values():
            if any(self._limits.sender_of(ip) == sender for ip in channel.senders):
                channel.send(EVICT + sender.encode("ascii"))
                return

    def _tell_unhanded(self, channel: WorkerChannel) -> None:
        if self.unhanded and self._last_unhanded is not None:
            line = UNHANDED + b"%d " % self.unhanded + _address(self._last_unhanded)
            if channel.send(line):
                self.unhanded = 0

    def _lost(self, channel: WorkerChannel) -> None:
        # The worker's connections ended with it.
        for sender_ip, count in channel.senders.items():
            for _ in range(count):
                self._limits.release(sender_ip)
        channel.senders.clear()
        if self.channels.get(channel.index) is channel:
            del self.channels[channel.index]
            self._changed()

    def _changed(self) -> None:
        self._on_change({index: channel.open for index, channel in self.channels.items()})


def report_udp_bound(channel: int, address: str) -> None:
    """Tell the supervisor, on a worker's channel, the UDP address it bound.

    Written before the worker reads the channel (``HandedOverConnections``
    takes it over at start, after the ports are bound), and whether it ever
    does: a worker without TCP or TLS has the channel all the same.
    """
    os.write(channel, UDP_BOUND + address.encode("ascii") + b"\n")


class OneProtocolFactory(Factory):
    """Builds the one protocol given, for ``adoptStreamConnection``."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


@implementer(IReadDescriptor, IListeningPort)
class BalancedPort:
    """A TCP listening socket in the supervisor whose connections go to the workers."""

    log = Logger()

    def __init__(self, reactor: Any, address: ListenAddress, kind: bytes, balancer: Balancer) -> None:
        self._reactor = reactor
        self._address = address
        self._kind = kind
        self._balancer = balancer
        self._socket: socket.socket | None = None
        self._resume: Any = None
        self._refusals = RateLimitedLog(self.log, reactor)

    def startListening(self) -> None:
        address = self._address
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host or "0.0.0.0", address.port))
            sock.listen(_BACKLOG)
        except OSError as e:
            sock.close()
            raise CannotListenError(address.host, address.port, e) from None
        sock.setblocking(False)
        self._socket = sock
        self._reactor.addReader(self)

    def stopListening(self) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        if self._socket is not None:
            self._reactor.removeReader(self)
            self._socket.close()
            self._socket = None

    def getHost(self) -> IPv4Address | IPv6Address:
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        if self._socket.family == socket.AF_INET6:
            return IPv6Address("TCP", host, port)
        return IPv4Address("TCP", host, port)

    def fileno(self) -> int:
        return -1 if self._socket is None else self._socket.fileno()

    def doRead(self) -> None:
        for _ in range(_ACCEPTS_PER_READ):
            if self._socket is None:
                return
            try:
                connection, peer = self._socket.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                # Out of descriptors or memory: the connections wait in the
                # backlog, and accepting waits a second rather than spin.
                self.log.error("cannot accept connections for a second: {error}", error=e)
                self._reactor.removeReader(self)
                self._resume = self._reactor.callLater(_ACCEPT_RETRY_SECONDS, self._reactor.addReader, self)
                return
            with connection:
                sender = Sender.from_address(peer[0], peer[1])
                if not self._balancer.hand_over(connection, self._kind, sender):
                    self._refusals.warn("no worker could take the connection from {peer}: closed it ({reason})",
                                        peer=str(sender), reason=HANDOVER_FAILED)

    def connectionLost(self, reason: Failure) -> None:
        self.stopListening()

    def logPrefix(self) -> str:
        return "BalancedPort"


@implementer(IFileDescriptorReceiver)
class ConnectionReceiver(Protocol):
    """A worker's end of its channel: adopts each connection handed over.

    ``factories`` maps a kind byte to the factory its connections go to;
    ``refuse`` counts and logs a refused connection, which is then closed:
    one over a limit, or one that could not be handed over.
    """

    log = Logger()

    def __init__(self, reactor: Any, factories: dict[bytes, Factory],
                 refuse: Callable[..., None], evict: Callable[[str], None] = lambda sender: None) -> None:
        self._reactor = reactor
        self._evict = evict
        self._factories = {kind: _ReportClosed(factory, self) for kind, factory in factories.items()}
        self._refuse = refuse
        self._descriptors: deque[int] = deque()
        self._partial = b""
        self._failures = RateLimitedLog(self.log, reactor)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self._descriptors.append(descriptor)

    def dataReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            kind = line[:1]
            if kind == UNHANDED:
                count, _, address = line[1:].partition(b" ")
                for _ in range(int(count)):
                    self._refuse(_sender(address), HANDOVER_FAILED)
            elif kind == EVICT:
                self._evict(line[1:].decode("ascii"))
            else:
                self._take(kind, _sender(line[1:]))

    def _take(self, kind: bytes, sender: Sender) -> None:
        # A read of the channel stops after a line that came with a
        # descriptor: the line's descriptor, if any, is the one here.
        descriptor = self._descriptors.popleft() if self._descriptors else None
        refusal = _REFUSALS.get(kind)
        if refusal is not None:
            unread = 0
            if descriptor is not None:
                # What the sender had sent is counted, as a worker of its own would.
                with socket.socket(fileno=descriptor) as refused:
                    unread = unread_bytes(refused)
            self._refuse(sender, refusal, unread=unread)
            return
        if descriptor is None:
            # The kernel drops a descriptor that would pass this process's
            # limit on open files (RLIMIT_NOFILE), and the line comes alone.
            self._failed(sender, "it came without its descriptor (out of file descriptors?)")
            return
        with socket.socket(fileno=descriptor) as connection:
            factory = self._factories.get(kind)
            if factory is None:
                self._failed(sender, f"the supervisor sent it as of unknown kind {kind!r}")
                return
            try:
                # Adopting duplicates the descriptor; this one is closed on leaving.
                self._reactor.adoptStreamConnection(connection.fileno(), connection.family, factory)
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    self.closed(sender.ip)  # the sender is gone already: nothing was refused
                else:
                    self._failed(sender, str(e))

    def _failed(self, sender: Sender, error: str) -> None:
        """An admitted connection this worker could not take: refused, and
        its place in the supervisor's limits free again."""
        self._failures.warn("could not take the connection from {sender}: {error}",
                            sender=str(sender), error=error)
        self._refuse(sender, HANDOVER_FAILED)
        self.closed(sender.ip)

    def closed(self, sender_ip: str) -> None:
        if self.transport is not None and self.connected:
            self.transport.write(CLOSED + sender_ip.encode("ascii") + b"\n")

    def start(self) -> None:
        for factory in self._factories.values():
            factory.doStart()

    def stop(self) -> None:
        for factory in self._factories.values():
            factory.doStop()


class _ReportClosed(WrappingFactory):
    """Tells the supervisor, through the channel, when a connection ends."""

    noisy = False

    def __init__(self, factory: Factory, receiver: ConnectionReceiver) -> None:
        super().__init__(factory)
        self._receiver = receiver

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        self._receiver.closed(normalize_ip(p.getPeer().host))


class HandedOverConnections(Service):
    """A worker's TCP and TLS connections, handed over by the supervisor.

    At stop the channel closes first, so no new connection comes, then the
    open ones drain (``drains``) as they would from a listener of its own.
    """

    log = Logger()

    def __init__(self, reactor: Any, channel: int, factories: dict[bytes, Factory],
                 drains: list[Callable[[], Deferred[None]]], refuse: Callable[[Sender, str], None],
                 evict: Callable[[str], None] = lambda sender: None) -> None:
        self._reactor = reactor
        self._channel = channel
        self._receiver = ConnectionReceiver(reactor, factories, refuse, evict)
        self._kinds = ", ".join(_KIND_NAMES[kind] for kind in factories)
        self._drains = drains

    def startService(self) -> None:
        super().startService()
        self._receiver.start()
        self._reactor.adoptStreamConnection(self._channel, socket.AF_UNIX, OneProtocolFactory(self._receiver))
        os.close(self._channel)
        self.log.info("taking {kinds} connections from the supervisor", kinds=self._kinds)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._receiver.transport is not None:
            self._receiver.transport.loseConnection()
        drained: Deferred[None] = gatherResults([drain() for drain in self._drains]).addCallback(
            lambda _: self._receiver.stop())
        return drained
