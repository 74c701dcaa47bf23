"""The HTTP side: ``/metrics`` for Prometheus and ``/healthz`` for probes.

``/metrics`` is rendered in the reactor's thread pool: with a thousand
firewalls the registry holds tens of thousands of series, and rendering them
takes some tenths of a second, during which a reactor that rendered them
itself would read no datagram. prometheus_client's metrics may be read from
any thread; what must run on the reactor's thread (publishing the pending
counts) is done by ``before_render`` first. ``prometheus_client.twisted`` is
not used: importing it installs the global reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request


class MetricsResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry, reactor: Any, before_render: Callable[[], None]) -> None:
        super().__init__()
        self._registry = registry
        self._reactor = reactor
        self._before_render = before_render

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

        deferToThreadPool(self._reactor, self._reactor.getThreadPool(), encoder,
                          self._registry).addCallbacks(rendered, failed)
        return NOT_DONE_YET


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
        return b"ok\n"


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:  # noqa: N802
        return notFound()


def root_resource(registry: CollectorRegistry, reactor: Any,
                  before_render: Callable[[], None] = lambda: None) -> Resource:
    root = _Root()
    root.putChild(b"metrics", MetricsResource(registry, reactor, before_render))
    root.putChild(b"healthz", HealthResource())
    return root
