"""The supervisor's listener handing connections to workers, on real loopback
sockets: both ends run in this process's reactor."""

import os
import resource
import select
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from collector.config import ListenAddress
from collector.hosts import Sender
from collector.net.slots import ConnectionSlots
from collector.workers.balancing import (
    KIND_TCP,
    KIND_TLS,
    BalancedPort,
    Balancer,
    ConnectionReceiver,
    OneProtocolFactory,
    report_udp_bound,
)
from helpers import until


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
        # The connections it was told to refuse: (sender address, reason).
        self.refused = []
        self.receiver = ConnectionReceiver(
            reactor, {kind: EchoFactory(b"w%d-%s" % (index, kind)) for kind in kinds},
            lambda sender, reason, unread=0: self.refused.append((sender.ip, reason)))
        self.receiver.start()
        reactor.adoptStreamConnection(channel.fileno(), socket.AF_UNIX, OneProtocolFactory(self.receiver))
        channel.close()

    def stop(self):
        self.receiver.transport.loseConnection()
        self.receiver.stop()


class Supervisor:
    """A balanced port and its workers in this process; everything opened is closed at the end."""

    def __init__(self):
        self.ports, self.workers, self.clients = [], [], []

    def start(self, kind=KIND_TCP, workers=2, host="127.0.0.1", limits=None):
        self.counts = []
        self.balancer = Balancer(reactor, self.counts.append, limits or ConnectionSlots(100, 100))
        self.workers = [Worker(index, self.balancer.open_channel(index), (KIND_TCP, KIND_TLS))
                        for index in range(workers)]
        self.port = BalancedPort(reactor, ListenAddress(host, 0), kind, self.balancer)
        self.port.startListening()
        self.ports.append(self.port)
        return self

    def connect(self):
        sock = socket.create_connection((self.port.getHost().host, self.port.getHost().port), timeout=5)
        self.clients.append(sock)
        return sock

    @inlineCallbacks
    def ask(self, message=b"hello"):
        """Connect, send, and return the socket and the name of the worker that answered."""
        sock = self.connect()
        sock.setblocking(False)
        sock.send(message)
        yield until(lambda: readable(sock))
        return sock, sock.recv(100).split(b":")[0]

    def close(self):
        for sock in self.clients:
            sock.close()
        for port in self.ports:
            port.stopListening()
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def supervisor():
    supervisor = Supervisor()
    yield supervisor
    supervisor.close()


def readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


@pytest_twisted.inlineCallbacks
def test_connections_alternate_and_go_where_fewest_are_open(supervisor):
    s = supervisor.start()
    clients = []
    for _ in range(4):
        clients.append((yield s.ask()))
    names = [name for _, name in clients]
    assert sorted(names) == sorted([w.name for w in s.workers] * 2)
    assert s.counts[-1] == {0: 2, 1: 2}
    # Two of worker 0's connections close: the next two both go to it.
    for sock, name in clients:
        if name == s.workers[0].name:
            sock.close()
    yield until(lambda: s.counts[-1] == {0: 0, 1: 2})
    for _ in range(2):
        _, name = yield s.ask()
        assert name == s.workers[0].name
    assert s.counts[-1] == {0: 2, 1: 2}


def test_the_receiver_starts_and_stops_its_factories():
    # As a listening port would: their timers (idle connections) run meanwhile.
    factories = {KIND_TCP: EchoFactory(b"t"), KIND_TLS: EchoFactory(b"s")}
    receiver = ConnectionReceiver(reactor, factories, lambda sender, reason, unread=0: None)
    receiver.start()
    assert all(f.running for f in factories.values())
    receiver.stop()
    assert not any(f.running for f in factories.values())


@pytest_twisted.inlineCallbacks
def test_short_connections_one_after_another_alternate(supervisor):
    s = supervisor.start()
    names = []
    for _ in range(4):
        sock, name = yield s.ask()
        names.append(name)
        sock.close()
        yield until(lambda: s.counts[-1] == {0: 0, 1: 0})
    assert names == [s.workers[0].name, s.workers[1].name] * 2


@pytest_twisted.inlineCallbacks
def test_ipv6_connections_are_handed_over_too(supervisor):
    s = supervisor.start(workers=1, host="::1")
    assert s.port.getHost().type == "TCP" and s.port.getHost().host == "::1"
    _, name = yield s.ask()
    assert name == s.workers[0].name


@pytest_twisted.inlineCallbacks
def test_the_kind_byte_picks_the_factory(supervisor):
    s = supervisor.start(kind=KIND_TLS, workers=1)
    _, name = yield s.ask()
    assert name == s.workers[0].tls_name


@pytest_twisted.inlineCallbacks
def test_a_worker_that_is_gone_gets_no_connections(supervisor):
    s = supervisor.start()
    s.workers[1].stop()
    yield until(lambda: list(s.balancer.channels) == [0])
    assert s.counts[-1] == {0: 0}
    names = set()
    for _ in range(3):
        _, name = yield s.ask()
        names.add(name)
    assert names == {s.workers[0].name}


@pytest_twisted.inlineCallbacks
def test_with_no_worker_a_connection_is_closed_and_logged(supervisor, log_events):
    s = supervisor.start(workers=1)
    s.workers[0].stop()
    yield until(lambda: not s.balancer.channels)
    sock = s.connect()
    yield until(lambda: log_events("no worker could take"))
    assert sock.recv(10) == b""  # closed by the supervisor


@pytest_twisted.inlineCallbacks
def test_out_of_descriptors_accepting_pauses_and_resumes(supervisor, log_events):
    s = supervisor.start(workers=1)
    client = socket.socket()
    supervisor.clients.append(client)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # No descriptor left for the supervisor to accept into, for real:
        # a new descriptor must be below the limit, and the lowest free one is not.
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        client.connect(("127.0.0.1", s.port.getHost().port))
        yield until(lambda: log_events("cannot accept"))
        yield deferLater(reactor, 0.1, lambda: None)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # Paused, not spinning on the listening socket.
    assert len(log_events("cannot accept")) == 1
    assert s.counts[-1] == {0: 0}
    # A second later the connection waiting in the backlog is handed over.
    yield until(lambda: s.counts[-1] == {0: 1}, timeout=5)
    client.setblocking(False)
    client.send(b"x")
    yield until(lambda: readable(client))
    assert client.recv(10) == s.workers[0].name + b":x"


def refusals(s):
    return [refusal for worker in s.workers for refusal in worker.refused]


@pytest_twisted.inlineCallbacks
def test_the_limit_per_sender_holds_across_the_workers(supervisor):
    s = supervisor.start(limits=ConnectionSlots(100, 3))
    clients = []
    for _ in range(3):
        clients.append((yield s.ask()))
    assert s.counts[-1] == {0: 2, 1: 1}
    # The fourth would be the second on worker 1: over the limit all the same.
    refused = s.connect()
    yield until(lambda: refusals(s) == [("127.0.0.1", "too_many_from_sender")])
    assert refused.recv(10) == b""  # closed
    assert s.counts[-1] == {0: 2, 1: 1}
    # A connection that closes makes room for another.
    clients[0][0].close()
    yield until(lambda: sum(s.counts[-1].values()) == 2)
    yield s.ask()
    assert len(refusals(s)) == 1


@pytest_twisted.inlineCallbacks
def test_the_limit_in_all_holds_across_the_workers(supervisor):
    s = supervisor.start(limits=ConnectionSlots(2, 100))
    for _ in range(2):
        yield s.ask()
    refused = s.connect()
    yield until(lambda: refusals(s) == [("127.0.0.1", "too_many_connections")])
    assert refused.recv(10) == b""
    assert s.counts[-1] == {0: 1, 1: 1}


@pytest_twisted.inlineCallbacks
def test_a_worker_that_is_gone_frees_its_connections_places(supervisor):
    s = supervisor.start(limits=ConnectionSlots(2, 100))
    for _ in range(2):
        yield s.ask()
    s.workers[1].stop()
    yield until(lambda: list(s.balancer.channels) == [0])
    _, name = yield s.ask()
    assert name == s.workers[0].name and refusals(s) == []


def lowest_free_descriptor():
    lowest = os.dup(0)
    os.close(lowest)
    return lowest


def reset(sock):
    """Close ``sock`` with a reset, as a sender that gives up at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest_twisted.inlineCallbacks
def test_a_sender_gone_before_its_worker_takes_the_connection_frees_its_place(supervisor, log_events):
    s = supervisor.start(workers=1, limits=ConnectionSlots(1, 1))
    # Reset before the reactor runs: the worker finds the connection gone.
    reset(s.connect())
    yield until(lambda: {0: 1} in s.counts and s.counts[-1] == {0: 0})
    # Nothing was refused, and the worker still takes connections: the one place is free.
    assert refusals(s) == []
    _, name = yield s.ask()
    assert name == s.workers[0].name
    assert not [event for event in log_events("") if "log_failure" in event]


@pytest_twisted.inlineCallbacks
def test_a_connection_no_worker_takes_is_counted_by_the_next_worker(supervisor, log_events):
    s = supervisor.start(workers=1, limits=ConnectionSlots(1, 1))
    s.workers[0].stop()
    yield until(lambda: not s.balancer.channels)
    refused = s.connect()
    yield until(lambda: log_events("no worker could take"))
    assert refused.recv(10) == b""  # closed by the supervisor
    # The worker started in its place counts it as refused, the sender's place is free again.
    s.workers.append(Worker(1, s.balancer.open_channel(1), (KIND_TCP,)))
    yield until(lambda: refusals(s) == [("127.0.0.1", "handover_failed")])
    _, name = yield s.ask()
    assert name == s.workers[1].name


@pytest_twisted.inlineCallbacks
def test_a_channel_closed_under_the_supervisor_frees_the_place_and_counts_once(supervisor):
    s = supervisor.start(workers=0, limits=ConnectionSlots(1, 1))
    # A worker that is gone, before the supervisor's reactor has seen its channel close.
    s.balancer.open_channel(1).close()
    a, b = socket.socketpair()
    with a, b:
        assert not s.balancer.hand_over(a, KIND_TCP, Sender.from_address("192.0.2.1", 514))
        assert not s.balancer.hand_over(a, KIND_TCP, Sender.from_address("192.0.2.2", 514))
    assert s.balancer.unhanded == 2
    yield until(lambda: not s.balancer.channels)
    s.workers.append(Worker(2, s.balancer.open_channel(2), (KIND_TCP,)))
    yield until(lambda: len(refusals(s)) == 2)
    # Counted once each; the log names the last sender.
    assert refusals(s) == [("192.0.2.2", "handover_failed")] * 2
    assert s.balancer.unhanded == 0
    _, name = yield s.ask()
    assert name == s.workers[-1].name


@pytest_twisted.inlineCallbacks
def test_a_worker_out_of_descriptors_refuses_the_connection_and_frees_its_place(supervisor, log_events):
    s = supervisor.start(workers=1, limits=ConnectionSlots(1, 1))
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        supervisor.clients.append(client)
        connection, peer = server.accept()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with connection:
            # Sending takes no new descriptor, but receiving it does: the
            # kernel drops it, for real, and the worker gets the line alone.
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_descriptor(), hard))
            assert s.balancer.hand_over(connection, KIND_TCP, Sender.from_address(*peer))
        assert s.counts[-1] == {0: 1}
        yield until(lambda: refusals(s) == [("127.0.0.1", "handover_failed")])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [event["error"] for event in log_events("could not take the connection")] == [
        "it came without its descriptor (out of file descriptors?)"]
    yield until(lambda: s.counts[-1] == {0: 0})
    _, name = yield s.ask()
    assert name == s.workers[0].name


@pytest_twisted.inlineCallbacks
def test_the_udp_address_a_worker_reports_reaches_the_supervisor():
    balancer = Balancer(reactor, lambda counts: None, ConnectionSlots(100, 100))
    reported = []
    with balancer.open_channel(0, reported.append) as channel:
        report_udp_bound(channel.fileno(), "[::1]:5514")
        yield until(lambda: reported)
    assert reported == ["[::1]:5514"]
    yield until(lambda: not balancer.channels)
