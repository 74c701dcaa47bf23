"""The HTTP side: ``/metrics`` for Prometheus and ``/healthz`` for probes.

With a thousand firewalls the registry holds tens of thousands of series,
and rendering them takes some tenths of a second, during which a reactor
that rendered them in one go would read no datagram. So a collector renders
``/metrics`` on the reactor's thread one metric family at a time (as many as
fit in 10 ms), and reads what arrived between them. A thread would not do:
the reactor gives the GIL up on every datagram it reads, and then waits for
the rendering thread to give it back (Python's "convoy effect"), so the
collector reads far fewer datagrams while a scrape renders than between
scrapes.

A supervisor of workers reads no datagrams, and merging the workers' files
(``MultiProcessCollector``) is one long step: it renders in the reactor's
thread pool instead, which prometheus_client's metrics allow. What must run
on the reactor's thread before a rendering (publishing the pending counts)
is ``before_render``. ``prometheus_client.twisted`` is not used: importing
it installs the global reactor.

A rendered body is kept for ``CACHE_SECONDS`` and served to every scrape
asking for the same format meanwhile, and a scrape that arrives while one
renders waits for that rendering: however many scrapes arrive at once, a
format is rendered at most once a second. A rendering every scrape has left
stops before its next family, and a scrape that comes within the second
takes it up where it stopped: scrapes that leave as soon as they ask cannot
have it rendered again and again.

The listener has limits of its own (``MetricsSite``), so that HTTP clients
cannot take what syslog and the archive need. Connections past
``limits.max_http_connections`` are closed as soon as they are accepted:
each open one holds a file descriptor, and those are budgeted (see
``allow_descriptors`` in collector.listening). Only GET and HEAD without a body
are answered; any other request is refused as soon as its headers are read,
before twisted.web would spool its body to a temporary file (of any size,
for a chunked one). The request line and headers are bounded in size
(``MAX_HEAD_BYTES``, ``MAX_HEADERS``) and must be complete within
``HEAD_TIMEOUT_SECONDS`` of the connection opening or of the previous
response: an idle timeout alone would let a client that sends a byte every
few seconds hold a connection for ever. The response must then be sent in
full within ``RESPONSE_TIMEOUT_SECONDS`` of the request head: twisted.web
turns its idle timeout off while a request is answered, and a client that
never reads would otherwise hold the connection, and a body of megabytes
in its send buffer, for as long as it likes.

Requests are not logged one by one (twisted.web's access log): a client
could otherwise write to the log as fast as it can send requests. What the
limits refuse or close is logged, at most every 10 s for each kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Cooperator
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from collector.logs import RateLimitedLog
from collector.metrics import PREFIX

# A rendered /metrics body is served again for this long.
CACHE_SECONDS = 1.0
# The request line and headers of a request: at most this many bytes in all
# (and in any one line), at most this many headers, complete within this
# time. Prometheus sends a request line and about five short headers.
MAX_HEAD_BYTES = 8192
MAX_HEADERS = 64
HEAD_TIMEOUT_SECONDS = 10.0
# A response must be sent within this time of its request head: long
# enough for the largest /metrics at the pace of a slow link, too short for
# a client that reads nothing to hold its connection.
RESPONSE_TIMEOUT_SECONDS = 30.0
ALLOWED_METHODS = (b"GET", b"HEAD")

# Reasons a request is refused, with the status line and headers it is answered with.
_REFUSALS = {
    "method_not_allowed": b"405 Method Not Allowed\r\nAllow: GET, HEAD",
    "request_body": b"413 Content Too Large",
    "headers_too_large": b"431 Request Header Fields Too Large",
}
CLOSE_REASONS = ("header_timeout", "idle", "response_timeout")
_log = Logger(namespace=__name__)


class HttpMetrics:
    """What the metrics listener counts: its connections and its limits at work.

    Families of their own rather than reasons of
    ``syslog_collector_refused_connections_total`` and the like: a supervisor
    of workers serves those merged from its workers' files, and counting in
    them itself would make it serve two families of one name.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.connections = Gauge(
            PREFIX + "http_connections", "Open connections to the metrics listener", registry=registry)
        refused_connections = Counter(
            PREFIX + "http_refused_connections",
            "Connections to the metrics listener closed as soon as accepted, by reason",
            ("reason",), registry=registry)
        self.too_many_connections = refused_connections.labels(reason="too_many_http_connections")
        self.refused_requests = Counter(
            PREFIX + "http_refused_requests",
            "HTTP requests refused before their body was read, by reason", ("reason",), registry=registry)
        self.closed_connections = Counter(
            PREFIX + "http_closed_connections",
            "Connections to the metrics listener closed for want of a complete request head, or of a "
            "client taking its response, in time, by reason",
            ("reason",), registry=registry)
        self.renders = Counter(
            PREFIX + "metrics_renders", "Renderings of /metrics", registry=registry)
        self.shared_scrapes = Counter(
            PREFIX + "metrics_shared_scrapes",
            "Scrapes of /metrics answered with a body rendered for another scrape", registry=registry)
        # Known reasons exist at 0 from the start, for rates and alerts.
        for reason in _REFUSALS:
            self.refused_requests.labels(reason=reason)
        for reason in CLOSE_REASONS:
            self.closed_connections.labels(reason=reason)


class _Rendering:
    """One rendering of /metrics, and the scrapes waiting for it."""

    def __init__(self, started: float) -> None:
        self.started = started
        # Each request, with the reason it finished early once it has.
        self.waiting: list[tuple[Request, list[Failure]]] = []
        # While every scrape has left: what a scrape that comes fires.
        self._paused: Deferred[None] | None = None
        self.given_up = False

    def wait(self, request: Request) -> None:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        self.waiting.append((request, gone))
        self._resume()

    def abandoned(self) -> bool:
        return all(gone for _, gone in self.waiting)

    def present(self) -> Iterator[Request]:
        return (request for request, gone in self.waiting if not gone)

    def pause(self) -> Deferred[None]:
        """What fires when a scrape comes to wait, or the rendering is given up."""
        self._paused = Deferred()
        return self._paused

    def paused(self) -> bool:
        return self._paused is not None

    def give_up(self) -> None:
        self.given_up = True
        self._resume()

    def _resume(self) -> None:
        if self._paused is not None:
            paused, self._paused = self._paused, None
            paused.callback(None)


class MetricsResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry, reactor: Any, before_render: Callable[[], None],
                 in_thread: bool, metrics: HttpMetrics | None = None) -> None:
        super().__init__()
        self._registry = registry
        self._reactor = reactor
        self._before_render = before_render
        self._in_thread = in_thread
        self._metrics = metrics if metrics is not None else HttpMetrics(None)
        self._cooperator = Cooperator(scheduler=lambda step: reactor.callLater(0, step))
        # By content type: when the last body was rendered, and the body.
        self._bodies: dict[str, tuple[float, bytes]] = {}
        self._renderings: dict[str, _Rendering] = {}

    def render_GET(self, request: Request) -> int:
        # Content type and body from the same encoder, so they always agree.
        encoder, content_type = choose_encoder(request.getHeader("Accept"))
        now = self._reactor.seconds()
        cached = self._bodies.get(content_type)
        if cached is not None and now < cached[0] + CACHE_SECONDS:
            self._metrics.shared_scrapes.inc()
            _answer(request, content_type, cached[1])
            return NOT_DONE_YET
        rendering = self._renderings.get(content_type)
        if rendering is not None and rendering.paused() and now >= rendering.started + CACHE_SECONDS:
            # Its first families are older than a body is kept: this scrape renders anew.
            del self._renderings[content_type]
            rendering.give_up()
            rendering = None
        if rendering is not None:
            self._metrics.shared_scrapes.inc()
            rendering.wait(request)
            return NOT_DONE_YET
        rendering = self._renderings[content_type] = _Rendering(now)
        rendering.wait(request)
        self._render(encoder, content_type, rendering)
        return NOT_DONE_YET

    def _render(self, encoder: Callable[[Any], bytes], content_type: str, rendering: _Rendering) -> None:
        self._metrics.renders.inc()
        self._before_render()

        def forget() -> None:
            if self._renderings.get(content_type) is rendering:
                del self._renderings[content_type]

        def rendered(body: bytes | None) -> None:
            forget()
            if body is None:
                return  # given up: every scrape had left, and the next came a second later or more
            # Kept even if every scrape left meanwhile: the next ones within the second take it.
            self._bodies[content_type] = (self._reactor.seconds(), body)
            for request in rendering.present():
                _answer(request, content_type, body)

        def failed(failure: Failure) -> None:
            forget()
            self.log.failure("rendering /metrics failed", failure)
            for request in rendering.present():
                request.setResponseCode(500)
                request.finish()

        body: Deferred[Any]
        if self._in_thread:
            body = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), encoder, self._registry)
        else:
            body = self._render_by_family(encoder, rendering)
        body.addCallbacks(rendered, failed)

    def _render_by_family(self, encoder: Callable[[Any], bytes],
                          rendering: _Rendering) -> Deferred[bytes | None]:
        """Render each family alone, a few of them a turn of the reactor,
        until the end (the body) or until ``rendering`` is given up (None)."""
        parts: list[bytes] = []
        cut: list[bool] = []

        def each_family() -> Iterator[Deferred[None] | None]:
            for family in self._registry.collect():
                parts.append(encoder(_Families([family])))
                yield None
                if rendering.abandoned():
                    # Paused before the next family is collected, until a scrape comes for it.
                    yield rendering.pause()
                    if rendering.given_up:
                        cut.append(True)
                        return

        # What the format ends with once (OpenMetrics: "# EOF"), not after each family.
        end = encoder(_Families([]))
        done: Deferred[Any] = self._cooperator.cooperate(each_family()).whenDone()
        return done.addCallback(
            lambda _: None if cut else b"".join(part.removesuffix(end) for part in parts) + end)


def _answer(request: Request, content_type: str, body: bytes) -> None:
    # Written rather than returned by render_GET, which a HEAD request would log.
    request.setHeader("Content-Type", content_type)
    request.setHeader("Content-Length", str(len(body)))
    request.write(body)
    request.finish()


class _Families:
    """A collector of families already collected, for the encoder to render."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
        return b"ok\n"


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def root_resource(registry: CollectorRegistry, reactor: Any,
                  before_render: Callable[[], None] = lambda: None, *, in_thread: bool = False,
                  metrics: HttpMetrics | None = None) -> Resource:
    root = _Root()
    root.putChild(b"metrics", MetricsResource(registry, reactor, before_render, in_thread, metrics))
    root.putChild(b"healthz", HealthResource())
    return root


class LimitedChannel(HTTPChannel):
    """An HTTP connection held to the limits of its ``MetricsSite``."""

    MAX_LENGTH = MAX_HEAD_BYTES
    totalHeadersSize = MAX_HEAD_BYTES
    maxHeaders = MAX_HEADERS
    site: MetricsSite
    # The call that closes the connection if no request head is complete by then.
    _deadline: Any = None
    # The call that aborts the connection if the responses asked for are not all sent by then.
    _response_deadline: Any = None
    transport: Any
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_deadline()

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:  # what follows a refused request is not read
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse("headers_too_large")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse("headers_too_large")

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse("headers_too_large")
            return False
        ok: bool = super().headerReceived(line)
        return ok

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        # Refused here, before the request's gotLength opens a file for the body.
        if self._command not in ALLOWED_METHODS:
            self._refuse("method_not_allowed")
        elif self.length != 0:  # a Content-Length, or chunked (None)
            self._refuse("request_body")
        else:
            # A request pipelined behind a response not yet sent gets no time of its own.
            if self._response_deadline is None:
                self._response_deadline = self.callLater(self.site.response_timeout, self._response_timed_out)
            super().allHeadersReceived()

    def requestDone(self, request: Request) -> None:
        # Not persistent, the connection closes once the response is sent:
        # the deadline runs until then. Persistent, a response larger than
        # the transport buffers is sent once the transport asks for more
        # (resumeProducing); a smaller one is as good as sent.
        if self.persistent:
            if self._waitingForTransport:
                # Nothing more is read until then: a client that reads no
                # response would otherwise have one more held for each
                # request it sends.
                self._networkProducer.pauseProducing()
            else:
                self._responses_sent()
        super().requestDone(request)

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.persistent and not self.requests and self._response_deadline is not None:
            self._responses_sent()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        self._cancel_response_deadline()
        super().connectionLost(reason)
        self.site.connection_closed()

    def _responses_sent(self) -> None:
        self._cancel_response_deadline()
        # Before the requests already received are read, which stops it again.
        self._start_deadline()

    def _refuse(self, reason: str) -> None:
        self._refused = True
        # lineReceived then neither reads a body nor handles the request.
        self.length = None
        self.site.refused_request(reason, self.transport.getPeer())
        self.transport.write(b"HTTP/1.1 " + _REFUSALS[reason] +
                             b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.loseConnection()

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.callLater(self.site.head_timeout, self._head_timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _cancel_response_deadline(self) -> None:
        if self._response_deadline is not None:
            if self._response_deadline.active():
                self._response_deadline.cancel()
            self._response_deadline = None

    def _response_timed_out(self) -> None:
        self._response_deadline = None
        self.site.closed_connection("response_timeout", self.transport.getPeer())
        self._refused = True
        # Aborted, not closed: closing would wait for the client to read
        # what it has not, and the response it holds is dropped at once.
        self.transport.abortConnection()

    def _head_timed_out(self) -> None:
        self._deadline = None
        begun = bool(self._buffer) or self._receivedHeaderSize > 0
        self.site.closed_connection("header_timeout" if begun else "idle", self.transport.getPeer())
        self._refused = True
        # As HTTPChannel's idle timeout closes: at once unless a response is
        # still being sent, and then for good after abortTimeout.
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


class MetricsSite(Site):
    """The site of the metrics listener: at most ``max_connections`` open,
    each held to ``LimitedChannel``'s limits; what they refuse is counted
    in ``metrics`` and logged at most every 10 s."""

    protocol = LimitedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, reactor: Any, metrics: HttpMetrics, max_connections: int,
                 head_timeout: float = HEAD_TIMEOUT_SECONDS,
                 response_timeout: float = RESPONSE_TIMEOUT_SECONDS) -> None:
        super().__init__(resource, reactor=reactor)
        self.noisy = False
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.response_timeout = response_timeout
        self.open_connections = 0
        self._metrics = metrics
        self._refused_connections = RateLimitedLog(_log, reactor)
        self._refused_requests = RateLimitedLog(_log, reactor)
        self._closed = RateLimitedLog(_log, reactor)
        self._aborted = RateLimitedLog(_log, reactor)

    def log(self, request: Request) -> None:
        # No access log: a line for each request would let any client write
        # to the log as fast as it sends requests. Scrapes are counted, and
        # what the limits refuse is logged at a limited rate.
        pass

    def buildProtocol(self, addr: IAddress | None) -> Any:
        # None has the port close the socket at once, before it accepts another.
        if self.open_connections >= self.max_connections:
            self._metrics.too_many_connections.inc()
            self._refused_connections.warn(
                "closed an HTTP connection from {peer}: limits.max_http_connections ({limit}) are open",
                peer=_host(addr), limit=self.max_connections)
            return None
        channel: LimitedChannel = super().buildProtocol(addr)
        self.open_connections += 1
        self._metrics.connections.set(self.open_connections)
        return channel

    def connection_closed(self) -> None:
        self.open_connections -= 1
        self._metrics.connections.set(self.open_connections)

    def refused_request(self, reason: str, peer: IAddress) -> None:
        self._metrics.refused_requests.labels(reason=reason).inc()
        self._refused_requests.warn("refused an HTTP request from {peer}: {reason}",
                                    peer=_host(peer), reason=reason)

    def closed_connection(self, reason: str, peer: IAddress) -> None:
        self._metrics.closed_connections.labels(reason=reason).inc()
        if reason == "response_timeout":
            self._aborted.warn("aborted an HTTP connection from {peer} that did not take its response "
                               "within {seconds} s", peer=_host(peer), seconds=self.response_timeout)
        elif reason != "idle":  # a client keeping a connection for its next scrape is no news
            self._closed.warn("closed an HTTP connection from {peer} that sent no complete request "
                              "head within {seconds} s", peer=_host(peer), seconds=self.head_timeout)


def _host(address: IAddress | None) -> str:
    return str(getattr(address, "host", address))


def metrics_site(registry: CollectorRegistry, reactor: Any, max_connections: int,
                 before_render: Callable[[], None] = lambda: None, *, in_thread: bool = False) -> MetricsSite:
    """The site of ``listen.metrics``, counting what its limits do in ``registry``."""
    metrics = HttpMetrics(registry)
    resource = root_resource(registry, reactor, before_render, in_thread=in_thread, metrics=metrics)
    return MetricsSite(resource, reactor, metrics, max_connections)
