"""The HTTP endpoints, served by the real reactor on a loopback port."""

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry, Counter
from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from collector.web import root_resource


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Counter("syslog_collector_demo_total", "A demo counter", registry=registry).inc(3)
    site = Site(root_resource(registry))
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}"
    pytest_twisted.blockon(port.stopListening())


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
    assert b"syslog_collector_demo_total 3.0" in body


@pytest_twisted.ensureDeferred
async def test_metrics_in_openmetrics_when_asked(server):
    response, body = await get(server + "/metrics", "application/openmetrics-text; version=1.0.0")
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest_twisted.ensureDeferred
async def test_healthz(server):
    response, body = await get(server + "/healthz")
    assert (response.code, body) == (200, b"ok\n")


@pytest_twisted.ensureDeferred
async def test_unknown_path_is_404(server):
    response, _ = await get(server + "/nope")
    assert response.code == 404
