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
from twisted.internet.task import deferLater
from twisted.python import threadable
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from collector.web import root_resource


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
