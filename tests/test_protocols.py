from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport

from collector.config import UnregisteredPolicy
from collector.protocols import SyslogDatagramProtocol, SyslogStreamFactory
from helpers import Bench


def udp(bench, max_frame=65536):
    return SyslogDatagramProtocol(bench.pipeline, bench.metrics, 1 << 20, max_frame)


def tcp(bench, host="192.0.2.1", port=40000, max_frame=65536):
    factory = SyslogStreamFactory(bench.pipeline, bench.metrics, bench.clock, max_frame)
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return factory, protocol, transport


def test_datagram_trailer_is_trimmed():
    bench = Bench()
    udp(bench).datagramReceived(b"<13>1 - gw app - - - Engine: Startup.\r\n", ("192.0.2.1", 514))
    assert bench.archived("gw") == [b"<13>1 - gw app - - - Engine: Startup."]
    assert bench.archive.messages[0].sender == b"192.0.2.1:514"


def test_ipv4_mapped_sender_is_written_as_ipv4():
    bench = Bench()
    udp(bench).datagramReceived(b"x", ("::ffff:192.0.2.9", 514))
    assert bench.archive.messages[0].sender == b"192.0.2.9:514"
    assert bench.archive.messages[0].host == "192.0.2.9"


def test_oversized_datagram_is_truncated_and_counted():
    bench = Bench()
    udp(bench, max_frame=10).datagramReceived(b"<13>" + b"x" * 20 + b"\n", ("192.0.2.1", 514))
    assert bench.archived() == [b"<13>xxxxxx"]
    assert bench.value("syslog_collector_truncated_frames_total", transport="udp") == 1.0


def test_refused_datagram_is_dropped():
    bench = Bench(unregistered=UnregisteredPolicy.REFUSE)
    udp(bench).datagramReceived(b"<13>1 - gw app - - - x", ("192.0.2.1", 514))
    assert bench.archive.messages == []
    assert bench.value("syslog_collector_refused_messages_total", reason="unregistered") == 1.0


def test_stream_byte_by_byte():
    bench = Bench()
    factory, protocol, transport = tcp(bench)
    stream = b"<13>1 - gw app - - - one\n24 <13>1 - gw app - - - two"
    for i in range(len(stream)):
        protocol.dataReceived(stream[i:i + 1])
    assert bench.archived("gw") == [b"<13>1 - gw app - - - one", b"<13>1 - gw app - - - two"]
    assert bench.value("syslog_collector_tcp_connections") == 1.0
    protocol.connectionLost()
    assert bench.value("syslog_collector_tcp_connections") == 0.0


def test_last_message_without_trailer_is_kept_at_close():
    bench = Bench()
    factory, protocol, transport = tcp(bench, host="2001:db8::5")
    protocol.dataReceived(b"<13>1 - gw app - - - no newline")
    assert bench.archived() == []
    protocol.connectionLost()
    assert bench.archived("gw") == [b"<13>1 - gw app - - - no newline"]
    assert bench.archive.messages[0].sender == b"[2001:db8::5]:40000"


def test_truncated_frames_are_counted():
    bench = Bench()
    factory, protocol, transport = tcp(bench, max_frame=16)
    protocol.dataReceived(b"<13>" + b"x" * 40 + b"\n<13>short\n")
    assert bench.archived() == [b"<13>" + b"x" * 12, b"<13>short"]
    assert bench.value("syslog_collector_truncated_frames_total", transport="tcp") == 1.0


def test_invalid_octet_count_closes_the_connection_keeping_earlier_frames():
    bench = Bench()
    factory, protocol, transport = tcp(bench)
    protocol.dataReceived(b"<13>1 - gw app - - - before\n12x garbage\n<13>1 - gw app - - - after\n")
    assert transport.disconnecting
    assert bench.archived("gw") == [b"<13>1 - gw app - - - before"]
    assert bench.value("syslog_collector_framing_errors_total") == 1.0


def test_refused_connection_is_closed_at_once():
    bench = Bench(unregistered=UnregisteredPolicy.REFUSE)
    factory, protocol, transport = tcp(bench)
    assert transport.disconnecting
    protocol.dataReceived(b"<13>1 - gw app - - - x\n")
    protocol.connectionLost()
    assert bench.archive.messages == []
    assert bench.value("syslog_collector_tcp_connections") == 0.0


def test_drain_closes_quiet_connections_first_and_all_at_the_deadline():
    bench = Bench()
    factory = SyslogStreamFactory(bench.pipeline, bench.metrics, bench.clock, 65536)
    connections = []
    for port in (1, 2):
        address = IPv4Address("TCP", "192.0.2.1", port)
        protocol = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        connections.append((protocol, transport))
    (quiet, quiet_transport), (busy, busy_transport) = connections

    drained = factory.drain(timeout=1.0)
    fired = []
    drained.addCallback(fired.append)
    for _ in range(5):  # the busy one keeps sending every 0.1 s
        bench.clock.advance(0.1)
        busy.dataReceived(b"<13>1 - gw app - - - more\n")
    assert quiet_transport.disconnecting and not busy_transport.disconnecting
    quiet.connectionLost()
    for _ in range(6):
        bench.clock.advance(0.1)
        busy.dataReceived(b"<13>1 - gw app - - - more\n")
    assert busy_transport.disconnecting
    assert not fired
    busy.connectionLost()
    assert fired == [None]
    assert not bench.clock.getDelayedCalls()
    assert len(bench.archived("gw")) == 11
