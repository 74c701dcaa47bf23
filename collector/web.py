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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred
from twisted.internet.task import Cooperator
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request


class MetricsResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry, reactor: Any, before_render: Callable[[], None],
                 in_thread: bool) -> None:
        super().__init__()
        self._registry = registry
        self._reactor = reactor
        self._before_render = before_render
        self._in_thread = in_thread
        self._cooperator = Cooperator(scheduler=lambda step: reactor.callLater(0, step))

    def render_GET(self, request: Request) -> int:  # noqa: N802
        # Content type and body from the same encoder, so they always agree.
        encoder, content_type = choose_encoder(request.getHeader("Accept"))
        self._before_render()
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def rendered(body: bytes) -> None:
            if not gone:
                request.setHeader("Content-Type", content_type)
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("rendering /metrics failed", failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        if self._in_thread:
            body = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), encoder, self._registry)
        else:
            body = self._render_by_family(encoder, gone)
        body.addCallbacks(rendered, failed)
        return NOT_DONE_YET

    def _render_by_family(self, encoder: Callable[[Any], bytes], gone: list[Failure]) -> Deferred[bytes]:
        """Render each family alone, a few of them a turn of the reactor,
        until the end or until the client is ``gone``."""
        parts: list[bytes] = []

        def each_family() -> Iterator[None]:
            for family in self._registry.collect():
                parts.append(encoder(_Families([family])))
                yield None
                if gone:  # checked before the next family is collected
                    return

        # What the format ends with once (OpenMetrics: "# EOF"), not after each family.
        end = encoder(_Families([]))
        done: Deferred[Any] = self._cooperator.cooperate(each_family()).whenDone()
        return done.addCallback(lambda _: b"".join(part.removesuffix(end) for part in parts) + end)


class _Families:
    """A collector of families already collected, for the encoder to render."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
        return b"ok\n"


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:  # noqa: N802
        return notFound()


def root_resource(registry: CollectorRegistry, reactor: Any,
                  before_render: Callable[[], None] = lambda: None, *, in_thread: bool = False) -> Resource:
    root = _Root()
    root.putChild(b"metrics", MetricsResource(registry, reactor, before_render, in_thread))
    root.putChild(b"healthz", HealthResource())
    return root
