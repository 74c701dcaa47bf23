import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from collector.tap import Options, makeService


class FakeUDPPort:
    def __init__(self, address):
        self.address = address

    def getHost(self):
        return self.address

    def stopListening(self):
        return succeed(None)


class SynchronousThreadPool:
    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        on_result(True, function(*args, **kwargs))


class MemoryReactor(MemoryReactorClock):
    """MemoryReactorClock records listenTCP; this records listenUDP too, and
    runs "threads" synchronously."""

    def __init__(self):
        super().__init__()
        self.udpServers = []

    def getThreadPool(self):
        return SynchronousThreadPool()

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return FakeUDPPort(IPv4Address("UDP", interface or "0.0.0.0", port))


def parse(tmp_path, *args):
    options = Options()
    options.parseOptions(["--archive-dir", str(tmp_path / "archive"), *args])
    return options


def test_defaults(tmp_path):
    config = parse(tmp_path).config
    assert str(config.listen.udp) == "5514" and str(config.listen.tcp) == "5514"
    assert str(config.listen.metrics) == "9514"


def test_overrides_and_disabling(tmp_path):
    config = parse(tmp_path, "--udp", "", "--tcp", "[::1]:0", "--metrics", "127.0.0.1:9").config
    assert config.listen.udp is None
    assert (config.listen.tcp.host, config.listen.tcp.port) == ("::1", 0)
    assert (config.listen.metrics.host, config.listen.metrics.port) == ("127.0.0.1", 9)


def test_bad_option_is_a_usage_error(tmp_path):
    with pytest.raises(usage.UsageError, match=r"--metrics \(listen.metrics\): bad port"):
        parse(tmp_path, "--metrics", "99999")


def test_service_binds_at_privileged_start_and_stops_cleanly(tmp_path):
    reactor = MemoryReactor()
    service = makeService(parse(tmp_path, "--udp", "127.0.0.1:1514", "--tcp", "[::1]:1515"), reactor=reactor)
    assert reactor.tcpServers == [] and reactor.udpServers == []
    service.privilegedStartService()
    service.startService()
    tcp_ports = sorted((port, interface) for port, _, _, interface in reactor.tcpServers)
    assert tcp_ports == [(1515, "::1"), (9514, "")]
    assert [(port, interface, size) for port, _, interface, size in reactor.udpServers] == [
        (1514, "127.0.0.1", 65536)]
    stopped = []
    service.stopService().addCallback(stopped.append)
    assert stopped == [None]
    assert not reactor.getDelayedCalls()


def test_disabled_listeners_are_not_bound(tmp_path):
    reactor = MemoryReactor()
    service = makeService(parse(tmp_path, "--udp", "", "--metrics", ""), reactor=reactor)
    service.privilegedStartService()
    assert [port for port, *_ in reactor.tcpServers] == [5514]
    assert reactor.udpServers == []
