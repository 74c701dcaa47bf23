"""The HTTP endpoints, served by the real reactor on a loopback port."""

import socket
import threading
import time

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from collector.net.web import (
    CACHE_SECONDS,
    HEAD_TIMEOUT_SECONDS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    RESPONSE_TIMEOUT_SECONDS,
    HttpMetrics,
    MetricsSite,
    metrics_site,
    root_resource,
)


@pytest.fixture
def serve():
    """Serve a resource on a loopback port until the test ends; its URL."""
    ports = []

    def start(resource):
        site = Site(resource)
        site.noisy = False
        ports.append(reactor.listenTCP(0, site, interface="127.0.0.1"))
        return f"http://127.0.0.1:{ports[-1].getHost().port}"

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def server(serve):
    registry = CollectorRegistry()
    Counter("syslog_collector_demo_total", "A demo counter", registry=registry).inc(3)
    Counter("syslog_collector_other_total", "Another demo counter", registry=registry).inc(4)
    return serve(root_resource(registry, reactor))


async def get(url, accept=None):
    headers = Headers({b"Accept": [accept.encode()]}) if accept else None
    response = await Agent(reactor).request(b"GET", url.encode(), headers).addTimeout(10, reactor)
    body = await readBody(response).addTimeout(10, reactor)
    return response, body


@pytest_twisted.ensureDeferred
async def test_metrics_in_the_prometheus_text_format(server):
    response, body = await get(server + "/metrics")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    assert b"syslog_collector_demo_total 3.0" in body and b"syslog_collector_other_total 4.0" in body


@pytest_twisted.ensureDeferred
async def test_metrics_in_openmetrics_when_asked(server):
    response, body = await get(server + "/metrics", "application/openmetrics-text; version=1.0.0")
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text")
    # Rendered a family at a time, and ended once.
    assert b"syslog_collector_demo_total 3.0" in body and b"syslog_collector_other_total 4.0" in body
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1


@pytest_twisted.ensureDeferred
async def test_healthz(server):
    response, body = await get(server + "/healthz")
    assert (response.code, body) == (200, b"ok\n")


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404(server):
    response, _ = await get(server + "/nope")
    assert response.code == 404


class WaitsForTheReactor(Collector):
    """Renders only once the reactor has run a timer: it would wait forever
    if the reactor's own thread rendered it."""

    def __init__(self):
        self.timer_ran = threading.Event()
        self.threads = []

    def collect(self):
        self.threads.append(threadable.isInIOThread())
        assert self.timer_ran.wait(10), "the reactor did not run while /metrics rendered"
        yield GaugeMetricFamily("syslog_collector_demo", "A demo gauge", value=1)


class SlowFamily(Collector):
    """Takes longer to collect than the reactor's turn (10 ms), and notes
    what the reactor did meanwhile and on which thread it is collected."""

    def __init__(self, name, timers_run):
        self.name = name
        self.timers_run = timers_run
        self.seen = []

    def collect(self):
        # A timer set now runs before the next family only if the rendering yields to the reactor.
        reactor.callLater(0, self.timers_run.append, self.name)
        self.seen.append((threadable.isInIOThread(), list(self.timers_run)))
        time.sleep(0.02)
        yield GaugeMetricFamily(f"syslog_collector_{self.name}", "A demo gauge", value=1)


@pytest_twisted.ensureDeferred
async def test_a_collector_renders_metrics_on_the_reactor_a_few_families_a_turn(serve):
    registry = CollectorRegistry()
    timers_run = []
    first, second = SlowFamily("first", timers_run), SlowFamily("second", timers_run)
    registry.register(first)
    registry.register(second)
    response, body = await get(serve(root_resource(registry, reactor)) + "/metrics")
    assert response.code == 200
    assert b"syslog_collector_first 1.0" in body and b"syslog_collector_second 1.0" in body
    assert first.seen == [(True, [])]
    assert second.seen == [(True, ["first"])]


@pytest_twisted.ensureDeferred
async def test_a_rendering_stops_when_the_client_is_gone(serve):
    registry = CollectorRegistry()
    families = [SlowFamily(name, []) for name in ("first", "second", "third")]
    for family in families:
        registry.register(family)
    url = serve(root_resource(registry, reactor))
    port = int(url.rpartition(":")[2])
    # A client that asks and leaves at once, as a scrape that timed out would.
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    client.close()
    await deferLater(reactor, 0.5, lambda: None)
    assert [len(family.seen) for family in families] == [1, 0, 0]


@pytest_twisted.ensureDeferred
async def test_a_supervisor_renders_metrics_off_the_reactor_thread_after_before_render(serve):
    registry = CollectorRegistry()
    counter = Counter("syslog_collector_demo_total", "A demo counter", registry=registry)
    slow = WaitsForTheReactor()
    registry.register(slow)
    published = []

    def publish():
        # Runs on the reactor's thread, before the rendering starts.
        published.append(threadable.isInIOThread())
        counter.inc(5)
        reactor.callLater(0.2, slow.timer_ran.set)

    response, body = await get(serve(root_resource(registry, reactor, publish, in_thread=True)) + "/metrics")
    assert response.code == 200
    assert b"syslog_collector_demo_total 5.0" in body and b"syslog_collector_demo 1.0" in body
    assert published == [True] and slow.threads == [False]


class Broken(Collector):
    def collect(self):
        raise RuntimeError("broken collector")


@pytest.mark.parametrize("in_thread", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_failed_rendering_is_a_500(serve, in_thread):
    registry = CollectorRegistry()
    registry.register(Broken())
    response, _ = await get(serve(root_resource(registry, reactor, in_thread=in_thread)) + "/metrics")
    assert response.code == 500


# The limits and the shared rendering, driven by hand on a fake clock: each
# connection is a StringTransport, and the clock runs the rendering's turns.


class CountsCollections(Collector):
    """A family that counts how often the registry is collected, that is rendered."""

    def __init__(self):
        self.collections = 0

    def collect(self):
        self.collections += 1
        yield GaugeMetricFamily("syslog_collector_collections", "Renderings so far", value=self.collections)


class FakeNet:
    """A ``MetricsSite`` on a ``task.Clock``, and its connections."""

    def __init__(self, max_connections=64, collector=None, in_thread=False):
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.counted = CountsCollections()
        self.registry.register(collector or self.counted)
        self.site = metrics_site(self.registry, self.clock, max_connections, in_thread=in_thread)
        self.site.startFactory()
        self.port = 40000

    def connect(self):
        """A new connection: its channel and transport, or None when refused."""
        self.port += 1
        address = IPv4Address("TCP", "192.0.2.7", self.port)
        channel = self.site.buildProtocol(address)
        if channel is None:
            return None
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        return channel, transport

    def run(self, seconds=0.0):
        """Advance the clock, then let the rendering's turns (callLater(0)) run."""
        self.clock.advance(seconds)
        for _ in range(50):
            self.clock.advance(0)

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels)

    def stop(self):
        self.site.stopFactory()


def close(channel):
    channel.connectionLost(Failure(ConnectionDone()))


def scrape_request(accept=None, method=b"GET"):
    head = method + b" /metrics HTTP/1.1\r\nHost: collector\r\n"
    if accept:
        head += b"Accept: " + accept + b"\r\n"
    return head + b"\r\n"


def status(transport):
    return transport.value().split(b"\r\n", 1)[0]


def body(transport):
    """The body of the response in ``transport`` (chunked or not)."""
    head, _, rest = transport.value().partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return rest
    chunks = []
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size, 16)
        chunks.append(rest[:length])
        rest = rest[length + 2:]
    return b"".join(chunks)


@pytest.fixture
def net():
    nets = []

    def make(**kwargs):
        nets.append(FakeNet(**kwargs))
        return nets[-1]

    yield make
    for made in nets:
        made.stop()


def test_scrapes_within_a_second_share_one_rendering(net):
    fake = net()
    scrapes = [fake.connect() for _ in range(3)]
    # All three ask before the first rendering has run a turn: they wait for it.
    for channel, _ in scrapes:
        channel.dataReceived(scrape_request())
    fake.run()
    assert fake.counted.collections == 1
    bodies = {body(transport) for _, transport in scrapes}
    assert len(bodies) == 1 and b"syslog_collector_collections 1.0" in bodies.pop()
    # Within the second after the rendering, its body is served again.
    fake.run(CACHE_SECONDS - 0.1)
    channel, transport = fake.connect()
    channel.dataReceived(scrape_request())
    fake.run()
    assert fake.counted.collections == 1
    assert b"syslog_collector_collections 1.0" in body(transport)
    # A second after it, a scrape renders anew.
    fake.run(0.1)
    channel, transport = fake.connect()
    channel.dataReceived(scrape_request())
    fake.run()
    assert fake.counted.collections == 2
    assert b"syslog_collector_collections 2.0" in body(transport)
    assert fake.value("syslog_collector_metrics_renders_total") == 2
    assert fake.value("syslog_collector_metrics_shared_scrapes_total") == 3


def test_each_format_is_rendered_and_kept_on_its_own(net):
    fake = net()
    (text, text_out), (open_metrics, open_out) = fake.connect(), fake.connect()
    text.dataReceived(scrape_request())
    open_metrics.dataReceived(scrape_request(b"application/openmetrics-text; version=1.0.0"))
    fake.run()
    assert fake.counted.collections == 2
    assert b"# EOF" not in body(text_out) and body(open_out).endswith(b"# EOF\n")
    assert b"content-type: application/openmetrics-text" in open_out.value().lower()


def test_a_failed_rendering_is_not_kept(net):
    class FailsOnce(Collector):
        failed = False

        def collect(self):
            if not self.failed:
                self.failed = True
                raise RuntimeError("broken once")
            yield GaugeMetricFamily("syslog_collector_demo", "A demo gauge", value=1)

    fake = net(collector=FailsOnce())
    first, second = fake.connect(), fake.connect()
    first[0].dataReceived(scrape_request())
    second[0].dataReceived(scrape_request())
    fake.run()
    assert status(first[1]) == status(second[1]) == b"HTTP/1.1 500 Internal Server Error"
    channel, transport = fake.connect()
    channel.dataReceived(scrape_request())
    fake.run()
    assert status(transport) == b"HTTP/1.1 200 OK" and b"syslog_collector_demo 1.0" in body(transport)


class Collected(Collector):
    """A family that counts its collections, and runs ``meanwhile`` during them."""

    def __init__(self, name):
        self.name = name
        self.collections = 0
        self.meanwhile = lambda: None

    def collect(self):
        self.collections += 1
        self.meanwhile()
        yield GaugeMetricFamily(f"syslog_collector_{self.name}", "A demo gauge", value=1)


def test_a_rendering_every_scrape_left_stops_and_a_scrape_within_the_second_takes_it_up(net):
    first, second = Collected("first"), Collected("second")
    fake = net(collector=first)
    fake.registry.register(second)
    (leaving, _), (staying, _) = fake.connect(), fake.connect()
    leaving.dataReceived(scrape_request())
    staying.dataReceived(scrape_request())
    # While the first family renders, one scrape leaves: the other still waits.
    first.meanwhile = lambda: close(leaving)
    fake.run()
    assert (first.collections, second.collections) == (1, 1)
    (leaving, _), (late, late_out) = fake.connect(), fake.connect()
    fake.run(CACHE_SECONDS)
    leaving.dataReceived(scrape_request())
    first.meanwhile = lambda: (close(leaving), late.dataReceived(scrape_request()))
    fake.run()
    # The rendering the late scrape joined goes on for it.
    assert (first.collections, second.collections) == (2, 2)
    assert b"syslog_collector_second 1.0" in body(late_out)
    # Every scrape gone: the rendering stops before the next family...
    fake.run(CACHE_SECONDS)
    (leaving, _), (next_one, next_out) = fake.connect(), fake.connect()
    leaving.dataReceived(scrape_request())
    first.meanwhile = lambda: close(leaving)
    fake.run()
    assert (first.collections, second.collections) == (3, 2)
    # ...and a scrape within the second takes it up where it stopped.
    first.meanwhile = lambda: None
    fake.run(CACHE_SECONDS - 0.1)
    next_one.dataReceived(scrape_request())
    fake.run()
    assert (first.collections, second.collections) == (3, 3)
    assert b"syslog_collector_first 1.0" in body(next_out) and b"syslog_collector_second 1.0" in body(next_out)
    # Stopped for a second or more, it is given up: its first families are stale.
    (leaving, _), (late, late_out) = fake.connect(), fake.connect()
    fake.run(CACHE_SECONDS)
    leaving.dataReceived(scrape_request())
    first.meanwhile = lambda: close(leaving)
    fake.run()
    first.meanwhile = lambda: None
    fake.run(CACHE_SECONDS)
    late.dataReceived(scrape_request())
    fake.run()
    assert (first.collections, second.collections) == (5, 4)
    assert b"syslog_collector_first 1.0" in body(late_out) and b"syslog_collector_second 1.0" in body(late_out)
    assert fake.value("syslog_collector_metrics_renders_total") == 5
    assert fake.site.resource.children[b"metrics"]._renderings == {}


def test_scrapes_that_leave_as_soon_as_they_ask_render_once_a_second(net):
    first, second = Collected("first"), Collected("second")
    fake = net(collector=first)
    fake.registry.register(second)
    resource = fake.site.resource.children[b"metrics"]

    def scrapes_that_leave(count):
        for _ in range(count):
            channel, _ = fake.connect()
            channel.dataReceived(scrape_request())
            close(channel)
            fake.run(0.05)

    # Each takes the rendering up where the one before left it, a family
    # further, until it is done (the registry holds about ten families)...
    scrapes_that_leave(18)
    assert (first.collections, second.collections) == (1, 1)
    # ...and then it is kept for the rest of its second, no scrape having stayed for it.
    assert resource._renderings == {} and len(resource._bodies) == 1
    channel, transport = fake.connect()
    channel.dataReceived(scrape_request())
    fake.run()
    assert (first.collections, second.collections) == (1, 1)
    assert b"syslog_collector_first 1.0" in body(transport) and b"syslog_collector_second 1.0" in body(transport)
    fake.run(CACHE_SECONDS)
    scrapes_that_leave(18)
    assert (first.collections, second.collections) == (2, 2)
    assert fake.value("syslog_collector_metrics_renders_total") == 2


def test_head_is_answered_from_the_same_rendering(net):
    fake = net()
    (get, _), (head, head_out) = fake.connect(), fake.connect()
    get.dataReceived(scrape_request())
    head.dataReceived(scrape_request(method=b"HEAD"))
    fake.run()
    assert status(head_out) == b"HTTP/1.1 200 OK" and body(head_out) == b""
    assert fake.counted.collections == 1


def test_connections_past_the_limit_are_closed_at_once_and_counted(net):
    fake = net(max_connections=2)
    first, second = fake.connect(), fake.connect()
    assert first is not None and second is not None
    assert fake.connect() is None and fake.connect() is None
    assert fake.value("syslog_collector_http_refused_connections_total",
                      reason="too_many_http_connections") == 2
    assert fake.value("syslog_collector_http_connections") == 2
    close(first[0])
    assert fake.value("syslog_collector_http_connections") == 1
    channel, transport = fake.connect()
    channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n")
    assert body(transport) == b"ok\n"


@pytest.mark.parametrize("head", [
    b"POST /metrics HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: c\r\nContent-Length: 52428800\r\n\r\n",
    b"PUT /metrics HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n",
    b"DELETE /metrics HTTP/1.1\r\nHost: c\r\n\r\n",
    b"get /metrics HTTP/1.1\r\nHost: c\r\n\r\n",
], ids=["chunked-post", "large-post", "put", "delete", "lower-case-get"])
def test_methods_but_get_and_head_are_refused_before_any_body(net, head):
    fake = net()
    channel, transport = fake.connect()
    channel.dataReceived(head + b"1000\r\n" + b"x" * 4096)
    assert status(transport) == b"HTTP/1.1 405 Method Not Allowed"
    assert b"Allow: GET, HEAD\r\n" in transport.value() and transport.disconnecting
    # No file was opened for the body: gotLength never ran.
    assert [request.content for request in channel.requests] == [None]
    channel.dataReceived(b"x" * 65536)  # whatever the kernel still hands over is ignored
    assert fake.counted.collections == 0
    assert fake.value("syslog_collector_http_refused_requests_total", reason="method_not_allowed") == 1


@pytest.mark.parametrize("framing", [b"Content-Length: 10", b"Transfer-Encoding: chunked"])
def test_a_get_with_a_body_is_refused(net, framing):
    fake = net()
    channel, transport = fake.connect()
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: c\r\n" + framing + b"\r\n\r\n")
    assert status(transport) == b"HTTP/1.1 413 Content Too Large" and transport.disconnecting
    assert [request.content for request in channel.requests] == [None]
    assert fake.value("syslog_collector_http_refused_requests_total", reason="request_body") == 1


@pytest.mark.parametrize("head", [
    b"GET /" + b"a" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEAD_BYTES,
    b"GET /metrics HTTP/1.1\r\n" + b"X-Header: 0123456789012345678901234567890123456789\r\n" * 200 + b"\r\n",
    b"GET /metrics HTTP/1.1\r\n" + b"X: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n",
], ids=["request-line", "header-line", "headers-in-all", "header-count"])
def test_request_heads_are_bounded(net, head):
    fake = net()
    channel, transport = fake.connect()
    channel.dataReceived(head)
    assert status(transport) == b"HTTP/1.1 431 Request Header Fields Too Large" and transport.disconnecting
    assert fake.counted.collections == 0
    assert fake.value("syslog_collector_http_refused_requests_total", reason="headers_too_large") == 1


def test_a_request_head_trickled_in_is_cut_at_the_deadline(net):
    fake = net()
    channel, transport = fake.connect()
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\n")
    for _ in range(4):
        # A byte every two seconds: an idle timeout would never fire.
        fake.run(2.0)
        channel.dataReceived(b"X")
        assert not transport.disconnecting
    fake.run(HEAD_TIMEOUT_SECONDS - 8.0)
    assert transport.disconnecting and transport.value() == b""
    assert fake.value("syslog_collector_http_closed_connections_total", reason="header_timeout") == 1
    assert fake.value("syslog_collector_http_closed_connections_total", reason="idle") == 0


def test_a_connection_waiting_for_its_next_request_is_closed_as_idle(net):
    fake = net()
    channel, transport = fake.connect()
    fake.run(HEAD_TIMEOUT_SECONDS - 1)
    # A request in time: its answer starts the deadline of the next one.
    channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
    assert body(transport) == b"ok\n"
    fake.run(HEAD_TIMEOUT_SECONDS - 1)
    assert not transport.disconnecting
    fake.run(1)
    assert transport.disconnecting
    assert fake.value("syslog_collector_http_closed_connections_total", reason="idle") == 1
    assert fake.value("syslog_collector_http_closed_connections_total", reason="header_timeout") == 0


def test_a_partial_request_after_an_answer_is_cut_at_its_deadline(net):
    fake = net()
    channel, transport = fake.connect()
    channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\nGET /metr")
    assert body(transport) == b"ok\n"
    fake.run(HEAD_TIMEOUT_SECONDS)
    assert transport.disconnecting
    assert fake.value("syslog_collector_http_closed_connections_total", reason="header_timeout") == 1


class Pending(Resource):
    """Answers when the test says so."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_GET(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


def pending_site():
    """A ``MetricsSite`` on a ``task.Clock`` that answers when the test says
    so; its clock, resource, registry and a connection to it."""
    clock = Clock()
    pending = Pending()
    registry = CollectorRegistry()
    site = MetricsSite(pending, clock, HttpMetrics(registry), 64)
    channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return clock, pending, registry, channel, transport


def closed(registry, reason):
    return registry.get_sample_value("syslog_collector_http_closed_connections_total", {"reason": reason})


def test_a_request_being_answered_has_no_head_deadline():
    clock, pending, registry, channel, transport = pending_site()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
    clock.advance(RESPONSE_TIMEOUT_SECONDS - 1)
    assert not transport.disconnecting
    pending.requests[0].write(b"done")
    pending.requests[0].finish()
    clock.advance(HEAD_TIMEOUT_SECONDS)
    assert transport.disconnecting and not transport.disconnected
    assert (closed(registry, "idle"), closed(registry, "response_timeout")) == (1, 0)


def test_a_response_not_sent_within_its_deadline_is_aborted():
    clock, pending, registry, channel, transport = pending_site()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
    clock.advance(RESPONSE_TIMEOUT_SECONDS - 0.1)
    assert not transport.disconnecting
    clock.advance(0.1)
    # Aborted: closing would wait for the client to read what it has not.
    assert transport.disconnected
    assert (closed(registry, "response_timeout"), closed(registry, "idle")) == (1, 0)
    channel.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_a_response_the_transport_still_holds_keeps_its_deadline():
    clock, pending, registry, channel, transport = pending_site()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
    # The client reads nothing: the transport holds more than its buffer and pauses its producer.
    channel.pauseProducing()
    pending.requests[0].write(b"x" * 100_000)
    pending.requests[0].finish()
    # Nothing more is read meanwhile...
    assert transport.producerState == "paused"
    # ...and a request pipelined behind it gets no deadline of its own, later than the first one's.
    clock.advance(RESPONSE_TIMEOUT_SECONDS - 5)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
    pending.requests[1].write(b"done")
    pending.requests[1].finish()
    clock.advance(5)
    assert transport.disconnected
    assert closed(registry, "response_timeout") == 1


def test_a_response_sent_in_time_ends_its_deadline():
    clock, pending, registry, channel, transport = pending_site()
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
    channel.pauseProducing()
    pending.requests[0].write(b"x" * 100_000)
    pending.requests[0].finish()
    clock.advance(RESPONSE_TIMEOUT_SECONDS - 1)
    # The transport has sent it all: the connection reads, and waits for the next request head.
    assert transport.producerState == "paused"
    channel.resumeProducing()
    assert transport.producerState == "producing"
    clock.advance(HEAD_TIMEOUT_SECONDS - 0.1)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting and not transport.disconnected
    assert (closed(registry, "idle"), closed(registry, "response_timeout")) == (1, 0)


class Large(Resource):
    """A body far larger than what a socket's buffers hold; counts the requests it answers."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.answered = 0

    def render_GET(self, request):
        self.answered += 1
        return b"x" * (16 << 20)


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_its_response_is_cut_off_at_the_deadline(version):
    registry = CollectorRegistry()
    site = MetricsSite(Large(), reactor, HttpMetrics(registry), 64, response_timeout=1.0)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = socket.socket()
    try:
        # A small receive buffer, never read: the collector's side fills up and stays full.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        client.sendall(b"GET /metrics " + version + b"\r\nHost: c\r\n\r\n")
        started = time.monotonic()
        while closed(registry, "response_timeout") == 0 and time.monotonic() - started < 10:
            await deferLater(reactor, 0.05, lambda: None)
        cut_off_after = time.monotonic() - started
        assert closed(registry, "response_timeout") == 1
        assert 0.9 < cut_off_after < 3
        await deferLater(reactor, 0.1, lambda: None)
        assert site.open_connections == 0
        assert closed(registry, "idle") == 0
    finally:
        client.close()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_client_that_reads_no_response_has_no_further_request_read():
    large = Large()
    site = MetricsSite(large, reactor, HttpMetrics(None), 64)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = socket.socket()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port.getHost().port))
        for _ in range(20):
            client.sendall(b"GET / HTTP/1.1\r\nHost: c\r\n\r\n")
            await deferLater(reactor, 0.05, lambda: None)
        # One response held, not one for each request.
        assert large.answered == 1
    finally:
        client.close()
        await port.stopListening()


def test_requests_are_not_logged_one_by_one(net):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        fake = net()
        channel, transport = fake.connect()
        for _ in range(200):
            channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert transport.value().count(b"ok\n") == 200
    assert events == []


def test_closing_cancels_the_deadline(net):
    fake = net()
    channel, _ = fake.connect()
    deadlines = [call for call in fake.clock.getDelayedCalls() if call.func == channel._head_timed_out]
    assert len(deadlines) == 1
    close(channel)
    assert not deadlines[0].active()
    assert fake.value("syslog_collector_http_connections") == 0
