"""The network side: Twisted adapters between sockets and the pipeline.

``protocols`` frames UDP datagrams and TCP/TLS streams and hands messages
on, holding senders back (TCP flow control) when the archive is behind or a
sender is over its rate; ``slots`` and ``ratelimit`` are the pure
bookkeeping of the connection limits and the per-sender rate; ``tls`` builds
the TLS context and its policy; ``web`` serves ``/metrics`` and ``/healthz``
within limits of its own.
"""
