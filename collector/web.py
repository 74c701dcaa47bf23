"""The HTTP side: ``/metrics`` for Prometheus and ``/healthz`` for probes.

The exposition is rendered synchronously from our own registry. Importing
``prometheus_client.twisted`` instead would install the global reactor as a
side effect and render in a thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        accept = request.getHeader("Accept")
        # Content type and body from the same call, so they always agree.
        encoder, content_type = choose_encoder(accept)
        request.setHeader("Content-Type", content_type)
        return encoder(self._registry)  # type: ignore[no-any-return]


class HealthResource(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
        return b"ok\n"


class _Root(Resource):
    def getChild(self, path: bytes, request: Request) -> IResource:  # noqa: N802
        return notFound()


def root_resource(registry: CollectorRegistry) -> Resource:
    root = _Root()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"healthz", HealthResource())
    return root
