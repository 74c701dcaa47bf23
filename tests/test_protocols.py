import contextlib
import fcntl
import socket
import struct
import termios

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport

from collector.config import ListenAddress, UnregisteredPolicy
from collector.logs import LOG_INTERVAL
from collector.net.protocols import (
    FULL_READ,
    MAX_READ_SIZE,
    SyslogDatagramProtocol,
    SyslogStreamFactory,
    next_read_size,
    rest_before_reading,
    set_receive_buffer,
    socket_transport,
)
from collector.net.slots import ConnectionSlots
from collector.workers.balancing import KIND_TCP, BalancedPort, Balancer, ConnectionReceiver, OneProtocolFactory
from helpers import Harness, until


def udp(harness, max_frame=65536):
    return SyslogDatagramProtocol(harness.pipeline, harness.archive, harness.metrics, 1 << 20, max_frame, harness.clock)


def receive(harness, protocol, *datagrams, sender=("192.0.2.1", 514)):
    for datagram in datagrams:
        protocol.datagramReceived(datagram, sender)
    harness.clock.advance(0)  # the end of the socket read: the batch goes down the pipeline


def stream_factory(harness, max_frame=65536, limits=None, **kwargs):
    return SyslogStreamFactory(harness.pipeline, harness.archive, harness.metrics, harness.clock, max_frame,
                               limits or ConnectionSlots(100, 10), **kwargs)


def connect(factory, host="192.0.2.1", port=40000):
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def tcp(harness, host="192.0.2.1", port=40000, max_frame=65536):
    factory = stream_factory(harness, max_frame)
    return (factory, *connect(factory, host, port))


def test_datagram_trailer_is_trimmed():
    harness = Harness()
    receive(harness, udp(harness), b"<13>1 - gw app - - - Engine: Startup.\r\n")
    assert harness.archived("gw") == [b"<13>1 - gw app - - - Engine: Startup."]
    assert harness.archive.messages[0].sender == b"192.0.2.1:514"


def test_ipv4_mapped_sender_is_written_as_ipv4():
    harness = Harness()
    receive(harness, udp(harness), b"x", sender=("::ffff:192.0.2.9", 514))
    assert harness.archive.messages[0].sender == b"192.0.2.9:514"
    assert harness.archive.messages[0].host == "192.0.2.9"


def test_oversized_datagram_is_truncated_and_counted():
    harness = Harness()
    receive(harness, udp(harness, max_frame=10), b"<13>" + b"x" * 20 + b"\n")
    assert harness.archived() == [b"<13>xxxxxx"]
    assert harness.value("syslog_collector_truncated_frames_total", transport="udp") == 1.0


def test_refused_datagram_is_dropped():
    harness = Harness(unregistered=UnregisteredPolicy.REFUSE)
    receive(harness, udp(harness), b"<13>1 - gw app - - - x")
    assert harness.archive.messages == []
    assert harness.value("syslog_collector_refused_messages_total", reason="unregistered") == 1.0


def test_datagrams_of_one_read_go_down_the_pipeline_together():
    harness = Harness()
    protocol = udp(harness)
    protocol.datagramReceived(b"<13>1 - gw app - - - one", ("192.0.2.1", 514))
    protocol.datagramReceived(b"<13>1 - fw app - - - other", ("192.0.2.2", 514))
    protocol.datagramReceived(b"<13>1 - gw app - - - two", ("192.0.2.1", 514))
    assert harness.archive.messages == []
    harness.clock.advance(0)
    assert harness.archived("gw") == [b"<13>1 - gw app - - - one", b"<13>1 - gw app - - - two"]
    assert harness.archived("fw") == [b"<13>1 - fw app - - - other"]
    assert harness.value("syslog_collector_received_messages_total", host="gw", transport="udp") == 2.0
    receive(harness, protocol, b"<13>1 - gw app - - - three")
    assert harness.archived("gw")[-1] == b"<13>1 - gw app - - - three"


class UnboundDatagramTransport:
    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def test_datagrams_not_yet_delivered_are_delivered_when_the_port_stops():
    harness = Harness()
    protocol = udp(harness)
    transport = UnboundDatagramTransport()
    protocol.makeConnection(transport)
    protocol.datagramReceived(b"<13>1 - gw app - - - last", ("192.0.2.1", 514))
    protocol.doStop()
    transport.socket.close()
    assert harness.archived("gw") == [b"<13>1 - gw app - - - last"]
    assert harness.clock.getDelayedCalls() == []


def test_stream_byte_by_byte():
    harness = Harness()
    factory, protocol, transport = tcp(harness)
    stream = b"<13>1 - gw app - - - one\n24 <13>1 - gw app - - - two"
    for i in range(len(stream)):
        protocol.dataReceived(stream[i:i + 1])
    assert harness.archived("gw") == [b"<13>1 - gw app - - - one", b"<13>1 - gw app - - - two"]
    assert harness.value("syslog_collector_tcp_connections", transport="tcp") == 1.0
    protocol.connectionLost()
    assert harness.value("syslog_collector_tcp_connections", transport="tcp") == 0.0


def test_last_message_without_trailer_is_kept_at_close():
    harness = Harness()
    factory, protocol, transport = tcp(harness, host="2001:db8::5")
    protocol.dataReceived(b"<13>1 - gw app - - - no newline")
    assert harness.archived() == []
    protocol.connectionLost()
    assert harness.archived("gw") == [b"<13>1 - gw app - - - no newline"]
    assert harness.archive.messages[0].sender == b"[2001:db8::5]:40000"


def test_truncated_frames_are_counted():
    harness = Harness()
    factory, protocol, transport = tcp(harness, max_frame=16)
    protocol.dataReceived(b"<13>" + b"x" * 40 + b"\n<13>short\n")
    assert harness.archived() == [b"<13>" + b"x" * 12, b"<13>short"]
    assert harness.value("syslog_collector_truncated_frames_total", transport="tcp") == 1.0


def test_a_line_that_is_no_octet_count_costs_nothing_of_the_stream():
    harness = Harness()
    factory, protocol, transport = tcp(harness)
    protocol.dataReceived(b"<13>1 - gw app - - - before\n12x garbage\n2026-11-25 10:00:00 gw no PRI\n"
                          b"<13>1 - gw app - - - after\n")
    assert not transport.disconnecting
    assert harness.archived("gw") == [b"<13>1 - gw app - - - before", b"<13>1 - gw app - - - after"]
    assert len(harness.archive.messages) == 4
    # Framed by LF, as they are: counted, not lost.
    assert harness.value("syslog_collector_framing_errors_total") == 2.0


def test_the_rest_of_an_over_long_line_is_counted_in_bytes():
    harness = Harness()
    factory, protocol, transport = tcp(harness, max_frame=30)
    protocol.dataReceived(b"<13>1 - gw app - - - " + b"x" * 100 + b"\n<13>1 - gw x - - - ok\n")
    assert harness.value("syslog_collector_truncated_frames_total", transport="tcp") == 1.0
    assert harness.value("syslog_collector_skipped_bytes_total", transport="tcp") == 91.0


def rate_limited(harness, rate):
    from collector.pipeline import Pipeline
    harness.pipeline = Pipeline(hosts=harness.pipeline.hosts, archive=harness.archive, metrics=harness.metrics,
                              clock=harness.clock, syslog_timezone=harness.pipeline._syslog_timezone,
                              max_messages_per_second_per_sender=rate)


def test_datagrams_over_the_rate_are_dropped_and_counted_as_rate_limited_only(log_events):
    harness = Harness()
    rate_limited(harness, 10)
    protocol = udp(harness, max_frame=30)
    receive(harness, protocol, *[b"<13>1 - host-%02d app - - - " % i + b"x" * 40 for i in range(15)])
    assert len(harness.archive.messages) == 10
    # Under the sender's tag: the HOSTNAMEs of what was dropped were never read.
    assert harness.value("syslog_collector_rate_limited_messages_total", host="192.0.2.1") == 5.0
    assert harness.value("syslog_collector_dropped_messages_total", reason="rate_limited") == 5.0
    assert harness.value("syslog_collector_truncated_frames_total", transport="udp") == 10.0
    assert harness.value("syslog_collector_header_parse_errors_total") == 0.0
    assert len(log_events("over its rate limit")) == 1
    # Tokens taken for the read and not used go back: half a second later, five more.
    harness.clock.advance(0.5)
    receive(harness, protocol, *[b"<13>1 - gw app - - - later %d" % i for i in range(10)])
    assert len(harness.archived("gw")) == 5


def test_each_sender_of_a_read_has_its_own_rate():
    harness = Harness()
    rate_limited(harness, 3)
    protocol = udp(harness)
    for i in range(5):
        protocol.datagramReceived(b"<13>1 - gw app - - - a%d" % i, ("192.0.2.1", 514))
        if i < 2:
            protocol.datagramReceived(b"<13>1 - fw app - - - b%d" % i, ("198.51.100.2", 514))
    harness.clock.advance(0)
    assert len(harness.archived("gw")) == 3 and len(harness.archived("fw")) == 2


def test_a_stream_over_its_rate_waits_and_loses_nothing(log_events):
    harness = Harness()
    rate_limited(harness, 10)
    factory, protocol, transport = tcp(harness)
    messages = [b"<13>1 - gw app - - - %d" % i for i in range(25)]
    # What was read is archived: the sender is charged for it, into debt.
    protocol.dataReceived(b"".join(m + b"\n" for m in messages[:5]))
    assert transport.producerState == "producing"
    protocol.dataReceived(b"".join(m + b"\n" for m in messages[5:]))
    assert harness.archived("gw") == messages
    # 15 past its burst of 10, at 10 a second: not read for 1.5 s. TCP makes it wait.
    assert transport.producerState == "paused"
    harness.clock.advance(1.4)
    assert transport.producerState == "paused"
    harness.clock.advance(0.1)
    assert transport.producerState == "producing"
    protocol.dataReceived(b"<13>1 - gw app - - - within\n")
    assert transport.producerState == "paused"  # no tokens yet: another 0.1 s
    assert harness.value("syslog_collector_rate_limited_messages_total", host="gw") == 0.0
    assert harness.value("syslog_collector_dropped_messages_total", reason="rate_limited") == 0.0
    assert harness.value("syslog_collector_throttled_seconds_total", host="192.0.2.1") == pytest.approx(1.5)
    assert len(log_events("over its rate limit")) == 1


def test_a_connection_that_ends_while_held_back_counts_the_time():
    harness = Harness()
    rate_limited(harness, 10)
    factory, protocol, transport = tcp(harness)
    protocol.dataReceived(b"".join(b"<13>1 - gw app - - - %d\n" % i for i in range(20)))
    harness.clock.advance(0.25)
    protocol.connectionLost()
    assert len(harness.archived("gw")) == 20
    assert not harness.clock.getDelayedCalls()
    assert harness.value("syslog_collector_throttled_seconds_total", host="192.0.2.1") == pytest.approx(0.25)


def test_connections_of_one_sender_share_its_rate():
    harness = Harness()
    rate_limited(harness, 10)
    factory = stream_factory(harness)
    first, first_transport = connect(factory, port=1)
    second, second_transport = connect(factory, port=2)
    first.dataReceived(b"".join(b"<13>1 - gw app - - - a%d\n" % i for i in range(8)))
    second.dataReceived(b"".join(b"<13>1 - gw app - - - b%d\n" % i for i in range(8)))
    assert len(harness.archived("gw")) == 16
    assert first_transport.producerState == "producing" and second_transport.producerState == "paused"
    harness.clock.advance(0.6)
    assert second_transport.producerState == "producing"


def test_a_stream_paused_for_the_archive_and_the_rate_waits_for_both():
    harness = Harness()
    rate_limited(harness, 10)
    factory, protocol, transport = tcp(harness)
    harness.archive.pause_streams = True
    protocol.dataReceived(b"".join(b"<13>1 - gw app - - - %d\n" % i for i in range(12)))
    assert transport.producerState == "paused"
    harness.archive.pause_streams = False
    factory.resume()  # the archive caught up; the rate still holds it
    assert transport.producerState == "paused"
    harness.clock.advance(0.2)
    assert transport.producerState == "producing"
    assert len(harness.archived("gw")) == 12


def test_refused_connection_is_closed_at_once():
    harness = Harness(unregistered=UnregisteredPolicy.REFUSE)
    factory, protocol, transport = tcp(harness)
    assert transport.disconnecting
    protocol.dataReceived(b"<13>1 - gw app - - - x\n")
    protocol.connectionLost()
    assert harness.archive.messages == []
    assert harness.value("syslog_collector_tcp_connections", transport="tcp") == 0.0
    assert harness.value("syslog_collector_refused_connections_total", reason="unregistered") == 1.0


def test_connection_limits_in_all_and_per_sender():
    harness = Harness()
    limits = ConnectionSlots(max_total=3, max_per_sender=2)
    tcp_factory = stream_factory(harness, limits=limits)
    tls_factory = stream_factory(harness, limits=limits, tls=True)
    first, first_transport = connect(tcp_factory, "192.0.2.1", 1)
    _, second = connect(tls_factory, "192.0.2.1", 2)
    # Another address of the same /24 is the same sender.
    _, third = connect(tcp_factory, "192.0.2.77", 3)
    assert third.disconnecting and not second.disconnecting
    assert harness.value("syslog_collector_refused_connections_total", reason="too_many_from_sender") == 1.0
    _, fourth = connect(tcp_factory, "198.51.100.2", 4)
    assert not fourth.disconnecting
    # All places taken: a newcomer gets one from the sender holding the most,
    # its longest-idle connection.
    harness.clock.advance(1)
    second_protocol = next(p for p in tls_factory.connections)
    second_protocol.last_data_at = harness.clock.seconds()
    _, fifth = connect(tcp_factory, "203.0.113.3", 5)
    assert not fifth.disconnecting and first_transport.disconnecting and not second.disconnecting
    assert harness.value("syslog_collector_closed_connections_total", reason="evicted") == 1.0
    # No sender holds two more than the next newcomer would: refused.
    _, sixth = connect(tcp_factory, "198.51.100.9", 6)
    assert sixth.disconnecting
    assert harness.value("syslog_collector_refused_connections_total", reason="too_many_connections") == 1.0
    first.connectionLost()
    assert harness.value("syslog_collector_tcp_connections", transport="tcp") == 2.0
    assert harness.value("syslog_collector_tcp_connections", transport="tls") == 1.0


def test_a_registered_firewall_always_gets_a_connection():
    import ipaddress

    from collector.config import Firewall
    gw = Firewall(name="gw", networks=(ipaddress.ip_network("192.0.2.10/32"),))
    harness = Harness(firewalls=(gw,))
    limits = ConnectionSlots(max_total=4, max_per_sender=4, firewall_of=harness.pipeline.hosts.firewall_name)
    factory = stream_factory(harness, limits=limits)
    # One sender holds every place, from addresses of its own /24, the firewall's too.
    flood = [connect(factory, f"192.0.2.{i}", i)[1] for i in range(20, 24)]
    _, firewall = connect(factory, "192.0.2.10", 1)
    assert not firewall.disconnecting
    assert sum(t.disconnecting for t in flood) == 1
    # A registered firewall's address is a sender of its own: the flood's
    # per-sender cap does not count it.
    assert harness.value("syslog_collector_refused_connections_total", reason="too_many_from_sender") == 0.0


def test_ipv6_senders_are_counted_by_64():
    limits = ConnectionSlots(max_total=100, max_per_sender=2)
    assert limits.admit("2001:db8::1").refusal is None
    assert limits.admit("2001:db8::ffff:2").refusal is None
    assert limits.admit("2001:db8::3:3").refusal == "too_many_from_sender"
    assert limits.admit("2001:db8:0:1::1").refusal is None


def test_idle_connections_are_closed():
    harness = Harness()
    factory = stream_factory(harness, idle_timeout=10, frame_timeout=5)
    factory.startFactory()
    protocol, transport = connect(factory)
    harness.clock.advance(9)
    protocol.dataReceived(b"<13>1 - gw app - - - still here\n")
    harness.clock.advance(9)
    assert not transport.disconnecting
    harness.clock.advance(2)
    assert transport.disconnecting
    assert harness.value("syslog_collector_closed_connections_total", reason="idle") == 1.0
    protocol.connectionLost()
    factory.stopFactory()


def test_a_message_that_never_completes_is_cut_off():
    harness = Harness()
    factory = stream_factory(harness, idle_timeout=600, frame_timeout=5)
    factory.startFactory()
    protocol, transport = connect(factory)
    # A byte every two seconds: never idle, but the message is never finished.
    sent = b""
    for byte in b"<13>1 - gw app - - - slowloris":
        protocol.dataReceived(bytes([byte]))
        sent += bytes([byte])
        harness.clock.advance(2)
        if transport.disconnecting:
            break
    assert transport.disconnecting
    assert len(sent) == 3  # cut off 5 s after the message began
    assert harness.value("syslog_collector_closed_connections_total", reason="frame_timeout") == 1.0
    protocol.connectionLost()
    assert harness.archived() == [sent]  # what came is still kept
    factory.stopFactory()


def test_steady_complete_messages_are_never_cut_off():
    harness = Harness()
    factory = stream_factory(harness, idle_timeout=600, frame_timeout=5)
    factory.startFactory()
    protocol, transport = connect(factory)
    for _ in range(20):
        protocol.dataReceived(b"<13>1 - gw app - - - one\n<13>1 - gw app - - - half of")
        harness.clock.advance(2)
        protocol.dataReceived(b" two\n")
        harness.clock.advance(2)
    assert not transport.disconnecting
    protocol.connectionLost()
    factory.stopFactory()


def test_drain_closes_quiet_connections_first_and_all_at_the_deadline():
    harness = Harness()
    factory = stream_factory(harness)
    connections = [connect(factory, port=port) for port in (1, 2)]
    (quiet, quiet_transport), (busy, busy_transport) = connections

    drained = factory.drain(timeout=1.0)
    fired = []
    drained.addCallback(fired.append)
    for _ in range(5):  # the busy one keeps sending every 0.1 s
        harness.clock.advance(0.1)
        busy.dataReceived(b"<13>1 - gw app - - - more\n")
    assert quiet_transport.disconnecting and not busy_transport.disconnecting
    quiet.connectionLost()
    for _ in range(6):
        harness.clock.advance(0.1)
        busy.dataReceived(b"<13>1 - gw app - - - more\n")
    assert busy_transport.disconnecting
    assert not fired
    busy.connectionLost()
    assert fired == [None]
    assert not harness.clock.getDelayedCalls()
    assert len(harness.archived("gw")) == 11


def test_drain_does_not_take_a_held_up_reactor_for_a_quiet_connection():
    harness = Harness()
    factory = stream_factory(harness)
    protocol, transport = connect(factory)
    drained = factory.drain(timeout=5.0)
    harness.clock.advance(0.5)  # one check, after a long wait: the sender's data is not read yet
    protocol.dataReceived(b"<13>1 - gw app - - - sent meanwhile\n")
    harness.clock.advance(0.1)
    assert not transport.disconnecting
    for _ in range(3):
        harness.clock.advance(0.1)
    assert transport.disconnecting  # quiet at two checks in a row
    protocol.connectionLost()
    assert drained.called


def test_drain_keeps_a_paused_connection_until_the_deadline():
    harness = Harness()
    factory = stream_factory(harness)
    protocol, transport = connect(factory)
    harness.archive.pause_streams = True
    protocol.dataReceived(b"<13>1 - gw app - - - disk slow\n")
    assert transport.producerState == "paused"
    drained = factory.drain(timeout=1.0)
    for _ in range(9):
        harness.clock.advance(0.1)
    assert not transport.disconnecting  # silent because it is not read
    harness.clock.advance(0.2)  # past the deadline
    assert transport.disconnecting
    protocol.connectionLost()
    assert drained.called


def test_connections_pause_while_the_archive_is_backlogged():
    harness = Harness()
    factory = stream_factory(harness)
    protocol, transport = connect(factory)
    other, other_transport = connect(factory, port=2)
    protocol.dataReceived(b"<13>1 - gw app - - - fine\n")
    assert transport.producerState == "producing"
    harness.archive.pause_streams = True
    protocol.dataReceived(b"<13>1 - gw app - - - disk full\n")
    assert transport.producerState == "paused"
    assert other_transport.producerState == "paused"  # all at once, not at its next delivery
    assert harness.value("syslog_collector_paused_connections") == 2.0
    assert harness.archived("gw")[-1] == b"<13>1 - gw app - - - disk full"  # kept, not dropped
    harness.archive.drain()
    assert transport.producerState == other_transport.producerState == "producing"
    assert harness.value("syslog_collector_paused_connections") == 0.0


def test_a_paused_connection_is_not_closed_as_idle_or_slow_while_the_archive_catches_up():
    harness = Harness()
    factory = stream_factory(harness, idle_timeout=10, frame_timeout=5)
    factory.startFactory()
    protocol, transport = connect(factory)
    harness.archive.pause_streams = True
    protocol.dataReceived(b"<13>1 - gw app - - - one\n<13>1 - gw app - - - half")
    assert transport.producerState == "paused"
    harness.clock.advance(60)
    assert not transport.disconnecting
    harness.archive.drain()
    harness.clock.advance(4)
    assert not transport.disconnecting  # the timeouts start again at the resume
    harness.clock.advance(2)
    assert transport.disconnecting
    assert harness.value("syslog_collector_closed_connections_total", reason="frame_timeout") == 1.0
    protocol.connectionLost()
    factory.stopFactory()


def test_read_size_grows_while_reads_come_back_full_and_falls_back_after_a_small_one():
    least = 64 * 1024
    assert next_read_size(least, least, least) == 4 * least
    assert next_read_size(4 * least, 4 * least, least) == MAX_READ_SIZE
    assert next_read_size(MAX_READ_SIZE, MAX_READ_SIZE, least) == MAX_READ_SIZE
    # A read that is not full but still large keeps the size: the sender is busy.
    assert next_read_size(MAX_READ_SIZE, 3 * least, least) == MAX_READ_SIZE
    assert next_read_size(MAX_READ_SIZE, least - 1, least) == least
    assert next_read_size(least, 200, least) == least


@contextlib.asynccontextmanager
async def client_of(factory, port):
    """A socket connected to ``port`` on loopback, and the protocol ``factory`` gave its connection."""
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        await until(lambda: factory.connections)
        (protocol,) = factory.connections
        yield protocol, client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def connected(factory):
    """A TCP port on loopback for ``factory``, a socket connected to it, and the connection's protocol."""
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        async with client_of(factory, port) as accepted:
            yield accepted
    finally:
        await port.stopListening()


@contextlib.asynccontextmanager
async def handed_over(factory):
    """As ``connected``, but the connection is accepted by a supervisor's
    port and handed to a worker's receiver, as with ``workers.count`` > 1."""
    balancer = Balancer(reactor, lambda counts: None, ConnectionSlots(100, 10))
    receiver = ConnectionReceiver(reactor, {KIND_TCP: factory}, lambda sender, reason, unread=0: None)
    receiver.start()
    channel = balancer.open_channel(0)
    reactor.adoptStreamConnection(channel.fileno(), socket.AF_UNIX, OneProtocolFactory(receiver))
    channel.close()
    port = BalancedPort(reactor, ListenAddress("127.0.0.1", 0), KIND_TCP, balancer)
    port.startListening()
    try:
        async with client_of(factory, port) as accepted:
            yield accepted
    finally:
        port.stopListening()
        receiver.transport.loseConnection()
        await until(lambda: not factory.connections)
        receiver.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("accepted", [connected, handed_over])
async def test_a_busy_connection_is_read_in_larger_pieces_over_a_real_socket(accepted):
    harness = Harness()
    async with accepted(stream_factory(harness)) as (protocol, client):
        server = socket_transport(protocol.transport)
        least = server.bufferSize
        # Data piles up in the kernel while the connection is not read.
        server.pauseProducing()
        set_receive_buffer(server.getHandle(), 8 << 20)
        messages = [b"<13>1 - gw app - - - %06d %s" % (i, b"x" * 200) for i in range(8000)]
        sending = threads.deferToThread(client.sendall, b"".join(m + b"\n" for m in messages))
        await until(lambda: queued(server.getHandle()) > 3 * least, timeout=10)
        reads = []
        receive = protocol.dataReceived
        protocol.dataReceived = lambda data: (reads.append(len(data)), receive(data))
        server.resumeProducing()
        await sending
        await until(lambda: len(harness.archived("gw")) == len(messages), timeout=10)
        assert harness.archived("gw") == messages
        assert reads[0] == least and reads[1] > least
        client.sendall(b"<13>1 - gw app - - - the last\n")
        await until(lambda: len(harness.archived("gw")) == len(messages) + 1, timeout=10)
        assert server.bufferSize == least


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("accepted", [connected, handed_over])
@pytest.mark.parametrize("receive_buffer", [0, 1 << 20])
async def test_a_tcp_connection_gets_the_receive_buffer_asked_for(receive_buffer, accepted):
    async with accepted(stream_factory(Harness(), receive_buffer=receive_buffer)) as (protocol, _):
        granted = protocol.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # Linux grants twice the size asked for; asked for none, it sizes the
    # buffer itself, from net.ipv4.tcp_rmem (128 KiB at first).
    if receive_buffer:
        assert granted >= receive_buffer
    else:
        assert granted < 1 << 20


def queued(sock):
    """Bytes waiting to be read on ``sock``."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_udp_socket_read_for_a_little_at_a_time_rests_until_an_interval_has_passed():
    assert rest_before_reading(100.0, 100.002, 500, 0.01) == pytest.approx(0.008)
    # Read less often than that anyway, or a lot at once: read again at once.
    assert rest_before_reading(100.0, 100.01, 500, 0.01) == 0.0
    assert rest_before_reading(100.0, 100.5, 500, 0.01) == 0.0
    assert rest_before_reading(100.0, 100.002, FULL_READ, 0.01) == 0.0
    assert rest_before_reading(100.0, 100.002, 500, 0.0) == 0.0


@contextlib.asynccontextmanager
async def listening(protocol):
    """A UDP port on loopback for ``protocol``, and a socket connected to it."""
    port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(("127.0.0.1", port.getHost().port))
    try:
        yield port, sender
    finally:
        sender.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_udp_socket_that_brings_a_little_at_a_time_rests_between_reads():
    harness = Harness()
    protocol = SyslogDatagramProtocol(harness.pipeline, harness.archive, harness.metrics, 1 << 20, 65536, harness.clock,
                                      read_interval=0.01)
    async with listening(protocol) as (port, sender):
        async def read(*datagrams):
            # The reactor reads them; their delivery waits for the test's clock.
            for datagram in datagrams:
                sender.send(datagram)
            await until(lambda: harness.clock.getDelayedCalls())
            harness.clock.advance(0.001)

        await read(b"<13>1 - gw app - - - one")
        assert port in reactor.getReaders()  # the first read in a while: no rest
        await read(b"<13>1 - gw app - - - two")
        assert port not in reactor.getReaders()
        sender.send(b"<13>1 - gw app - - - three")
        sender.send(b"<13>1 - gw app - - - four")
        await task.deferLater(reactor, 0.1)
        assert queued(port.socket) > 0  # the size of the first datagram waiting
        assert harness.archived("gw") == [b"<13>1 - gw app - - - one", b"<13>1 - gw app - - - two"]
        harness.clock.advance(0.009)
        assert port in reactor.getReaders()
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert harness.archived("gw")[2:] == [b"<13>1 - gw app - - - three", b"<13>1 - gw app - - - four"]
        assert port not in reactor.getReaders()
        # A read of FULL_READ bytes or more is followed by the next at once.
        bulk = [b"<13>1 - gw app - - - %04d %s" % (i, b"x" * 500) for i in range(FULL_READ // 500 + 8)]
        for datagram in bulk:
            sender.send(datagram)
        await task.deferLater(reactor, 0.1)
        harness.clock.advance(0.01)
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert harness.archived("gw")[4:] == bulk
        assert port in reactor.getReaders()
        await read(b"<13>1 - gw app - - - five")
        assert port not in reactor.getReaders()
    # The rest ends with the port.
    assert harness.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_udp_socket_is_not_read_while_the_archive_is_full():
    harness = Harness()
    async with listening(udp(harness)) as (port, sender):
        harness.archive.pause_streams = True  # TCP senders wait; UDP is still read
        sender.send(b"<13>1 - gw app - - - read on")
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert port in reactor.getReaders()
        harness.archive.pause_datagrams = True
        sender.send(b"<13>1 - gw app - - - received")
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert harness.archived("gw")[-1] == b"<13>1 - gw app - - - received"  # kept, not dropped
        assert port not in reactor.getReaders()
        sender.send(b"<13>1 - gw app - - - waits")
        await task.deferLater(reactor, 0.05)
        assert queued(port.socket) > 0 and not harness.clock.getDelayedCalls()
        harness.archive.drain()
        assert port in reactor.getReaders()
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert harness.archived("gw")[2:] == [b"<13>1 - gw app - - - waits"]
        assert port in reactor.getReaders()


@pytest_twisted.ensureDeferred
async def test_udp_pauses_are_logged_at_most_every_log_interval(log_events):
    harness = Harness()

    async def pause():
        harness.archive.pause_datagrams = True
        sender.send(b"<13>1 - gw app - - - one more")
        await until(lambda: harness.clock.getDelayedCalls())
        harness.clock.advance(0)
        assert port not in reactor.getReaders()
        harness.archive.drain()

    def said():
        return [event["held_back"] for event in log_events("UDP datagrams wait")]

    async with listening(udp(harness)) as (port, sender):
        await pause()
        await pause()
        assert said() == [0]
        harness.clock.advance(LOG_INTERVAL)
        await pause()
        assert said() == [0, 1]  # the one held back is told of


@pytest_twisted.ensureDeferred
async def test_at_the_drain_deadline_a_paused_connection_is_read_dry():
    harness = Harness()
    factory = stream_factory(harness)
    first = b"<13>1 - gw app - - - first"
    messages = [b"<13>1 - gw app - - - %04d" % i for i in range(2000)]
    async with connected(factory) as (protocol, client):
        harness.archive.pause_streams = True
        client.sendall(first + b"\n")
        await until(lambda: protocol.paused_for)
        # The archive is behind: what the sender goes on sending waits in the kernel.
        client.sendall(b"".join(m + b"\n" for m in messages))
        server = socket_transport(protocol.transport)
        await until(lambda: queued(server.getHandle()) == sum(len(m) + 1 for m in messages))
        drained = factory.drain(timeout=0.5)
        for _ in range(6):
            harness.clock.advance(0.1)
        await until(lambda: drained.called)
    assert harness.archived("gw") == [first] + messages
    assert harness.value("syslog_collector_discarded_bytes_total", reason="unread_at_close") == 0.0


@pytest_twisted.ensureDeferred
async def test_what_a_refused_connection_held_is_counted_in_bytes():
    harness = Harness(unregistered=UnregisteredPolicy.REFUSE)
    factory = stream_factory(harness)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        # Sent before the collector accepts the connection: the kernel holds it.
        with socket.create_connection(("127.0.0.1", port.getHost().port)) as client:
            client.sendall(b"<13>1 - gw app - - - refused\n" * 10)
            await until(lambda: harness.value("syslog_collector_refused_connections_total",
                                             reason="unregistered") == 1.0)
            await until(lambda: not factory.connections)
    finally:
        await port.stopListening()
    assert harness.value("syslog_collector_discarded_bytes_total", reason="refused") == 290.0
    assert harness.archive.messages == []


@pytest_twisted.ensureDeferred
async def test_what_a_sender_pushes_past_the_reads_at_close_is_counted(monkeypatch):
    import collector.net.protocols

    # A sender faster than the reads at close is not produced on demand:
    # one read at close stands for a sender that outpaces them all.
    monkeypatch.setattr(collector.net.protocols, "MAX_READS_AT_CLOSE", 1)
    harness = Harness()
    factory = stream_factory(harness)
    async with connected(factory) as (protocol, client):
        server = socket_transport(protocol.transport)
        server.pauseProducing()
        set_receive_buffer(server.getHandle(), 4 << 20)
        stream = b"".join(b"<13>1 - gw app - - - %06d\n" % i for i in range(20000))
        sending = threads.deferToThread(client.sendall, stream)
        # More than one read's worth waits in the kernel.
        await until(lambda: queued(server.getHandle()) > 4 * server.bufferSize, timeout=10)
        held = queued(server.getHandle())
        protocol.read_dry_and_close()
        await until(lambda: not factory.connections)
        # Whole lines, and the piece of the last one read, archived as it is.
        read = sum(len(m.message) + 1 for m in harness.archive.messages) - 1
        client.close()
        await sending.addErrback(lambda failure: None)  # cut off when the connection closed
    left = harness.value("syslog_collector_discarded_bytes_total", reason="unread_at_close")
    assert read > 0 and left > 0 and read + left >= held


def test_addresses_of_one_registered_network_are_one_sender():
    import ipaddress

    from collector.config import Firewall
    lan = Firewall(name="lan", networks=(ipaddress.ip_network("10.9.0.0/24"),))
    gw = Firewall(name="gw", networks=(ipaddress.ip_network("192.0.2.10/32"),))
    harness = Harness(firewalls=(lan, gw))
    limits = ConnectionSlots(max_total=6, max_per_sender=4, firewall_of=harness.pipeline.hosts.firewall_name)
    factory = stream_factory(harness, limits=limits)
    lan_connections = [connect(factory, f"10.9.0.{i}", i)[1] for i in range(1, 8)]
    # The firewall entry's cap holds for all its addresses together.
    assert sum(not t.disconnecting for t in lan_connections) == 4
    fillers = [connect(factory, f"198.51.{i}.1", i)[1] for i in range(2)]
    assert not any(t.disconnecting for t in fillers)
    # Every place held: a registered firewall gets one, from an unregistered sender first.
    _, firewall = connect(factory, "192.0.2.10", 1)
    assert not firewall.disconnecting
    assert sum(t.disconnecting for t in fillers) == 1

    # When only registered firewalls hold places, the one holding the most gives one up.
    only_registered = ConnectionSlots(max_total=4, max_per_sender=4, firewall_of=harness.pipeline.hosts.firewall_name)
    for i in range(1, 6):
        only_registered.admit(f"10.9.0.{i}")
    admission = only_registered.admit("192.0.2.10")
    assert admission.refusal is None and admission.evict == "firewall lan"
