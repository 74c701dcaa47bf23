"""The supervisor's listener handing connections to workers, on real loopback
sockets: both ends run in this process's reactor."""

import os
import resource
import select
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from collector.balancing import KIND_TCP, KIND_TLS, BalancedPort, Balancer, ConnectionReceiver, OneProtocolFactory
from collector.config import ListenAddress


class Echo(Protocol):
    """Writes back what it receives, prefixed with its worker's name."""

    def dataReceived(self, data):
        self.transport.write(self.factory.name + b":" + data)


class EchoFactory(Factory):
    protocol = Echo

    def __init__(self, name):
        self.name = name
        self.running = False

    def startFactory(self):
        self.running = True

    def stopFactory(self):
        self.running = False


class Worker:
    """A worker's end of a channel, in this process."""

    def __init__(self, index, channel, kinds):
        # The reply names the worker and the factory: "w1-t" is worker 1's TCP factory.
        self.name = b"w%d-t" % index
        self.tls_name = b"w%d-s" % index
        self.receiver = ConnectionReceiver(
            reactor, {kind: EchoFactory(b"w%d-%s" % (index, kind)) for kind in kinds})
        self.receiver.start()
        reactor.adoptStreamConnection(channel.fileno(), socket.AF_UNIX, OneProtocolFactory(self.receiver))
        channel.close()

    def stop(self):
        self.receiver.transport.loseConnection()
        self.receiver.stop()


def until(predicate, timeout=5.0):
    """Let the reactor run until ``predicate()`` holds."""
    d = Deferred()
    deadline = reactor.seconds() + timeout

    def check():
        if predicate():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError("timed out"))
        else:
            reactor.callLater(0.01, check)

    check()
    return d


@inlineCallbacks
def ask(port, message=b"hello"):
    """Connect, send, and return the socket and the name of the worker that answered."""
    sock = socket.create_connection((port.getHost().host, port.getHost().port), timeout=5)
    sock.setblocking(False)
    sock.send(message)
    yield until(lambda: readable(sock))
    return sock, sock.recv(100).split(b":")[0]


def readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


def balanced(kind=KIND_TCP, workers=2, host="127.0.0.1"):
    counts = []
    balancer = Balancer(reactor, counts.append)
    channels = [Worker(index, balancer.open_channel(index), (KIND_TCP, KIND_TLS)) for index in range(workers)]
    port = BalancedPort(reactor, ListenAddress(host, 0), kind, balancer)
    port.startListening()
    return balancer, channels, port, counts


@pytest_twisted.inlineCallbacks
def test_connections_alternate_and_go_where_fewest_are_open():
    balancer, workers, port, counts = balanced()
    try:
        clients = []
        for _ in range(4):
            clients.append((yield ask(port)))
        names = [name for _, name in clients]
        assert sorted(names) == sorted([w.name for w in workers] * 2)
        assert counts[-1] == {0: 2, 1: 2}
        # Two of worker 0's connections close: the next two both go to it.
        for sock, name in clients:
            if name == workers[0].name:
                sock.close()
        yield until(lambda: counts[-1] == {0: 0, 1: 2})
        for _ in range(2):
            sock, name = yield ask(port)
            clients.append((sock, name))
            assert name == workers[0].name
        assert counts[-1] == {0: 2, 1: 2}
    finally:
        for sock, _ in clients:
            sock.close()
        port.stopListening()
        for worker in workers:
            worker.stop()


def test_the_receiver_starts_and_stops_its_factories():
    # As a listening port would: their timers (idle connections) run meanwhile.
    factories = {KIND_TCP: EchoFactory(b"t"), KIND_TLS: EchoFactory(b"s")}
    receiver = ConnectionReceiver(reactor, factories)
    receiver.start()
    assert all(f.running for f in factories.values())
    receiver.stop()
    assert not any(f.running for f in factories.values())


@pytest_twisted.inlineCallbacks
def test_short_connections_one_after_another_alternate():
    balancer, workers, port, counts = balanced()
    try:
        names = []
        for _ in range(4):
            sock, name = yield ask(port)
            names.append(name)
            sock.close()
            yield until(lambda: counts[-1] == {0: 0, 1: 0})
        assert names == [workers[0].name, workers[1].name] * 2
    finally:
        port.stopListening()
        for worker in workers:
            worker.stop()


@pytest_twisted.inlineCallbacks
def test_ipv6_connections_are_handed_over_too():
    balancer, workers, port, counts = balanced(workers=1, host="::1")
    try:
        assert port.getHost().type == "TCP" and port.getHost().host == "::1"
        sock, name = yield ask(port)
        assert name == workers[0].name
        sock.close()
    finally:
        port.stopListening()
        workers[0].stop()


@pytest_twisted.inlineCallbacks
def test_the_kind_byte_picks_the_factory():
    balancer, workers, port, counts = balanced(kind=KIND_TLS, workers=1)
    try:
        sock, name = yield ask(port)
        assert name == workers[0].tls_name
        sock.close()
    finally:
        port.stopListening()
        workers[0].stop()


@pytest_twisted.inlineCallbacks
def test_a_worker_that_is_gone_gets_no_connections():
    balancer, workers, port, counts = balanced()
    clients = []
    try:
        workers[1].stop()
        yield until(lambda: list(balancer.channels) == [0])
        assert counts[-1] == {0: 0}
        for _ in range(3):
            clients.append((yield ask(port)))
        assert {name for _, name in clients} == {workers[0].name}
    finally:
        for sock, _ in clients:
            sock.close()
        port.stopListening()
        workers[0].stop()


@pytest_twisted.inlineCallbacks
def test_with_no_worker_a_connection_is_closed_and_logged():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    balancer, workers, port, counts = balanced(workers=1)
    try:
        workers[0].stop()
        yield until(lambda: not balancer.channels)
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) as sock:
            sock.settimeout(5)
            yield until(lambda: any("no worker could take" in e.get("log_format", "") for e in events))
            assert sock.recv(10) == b""  # closed by the supervisor
    finally:
        globalLogPublisher.removeObserver(events.append)
        port.stopListening()


@pytest_twisted.inlineCallbacks
def test_out_of_descriptors_accepting_pauses_and_resumes():
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    balancer, workers, port, counts = balanced(workers=1)
    client = socket.socket()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # No descriptor left for the supervisor to accept into, for real:
        # a new descriptor must be below the limit, and the lowest free one is not.
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        client.connect(("127.0.0.1", port.getHost().port))
        yield until(lambda: any("cannot accept" in e.get("log_format", "") for e in events))
        yield deferLater(reactor, 0.1, lambda: None)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        # Paused, not spinning on the listening socket.
        assert sum("cannot accept" in e.get("log_format", "") for e in events) == 1
        assert counts[-1] == {0: 0}
        # A second later the connection waiting in the backlog is handed over.
        yield until(lambda: counts[-1] == {0: 1}, timeout=5)
        client.setblocking(False)
        client.send(b"x")
        yield until(lambda: readable(client))
        assert client.recv(10) == workers[0].name + b":x"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        globalLogPublisher.removeObserver(events.append)
        client.close()
        port.stopListening()
        workers[0].stop()
