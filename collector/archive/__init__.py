"""The archive on disk: per-host, per-day files of lossless lines.

``line`` is the line format (pure, compiled); ``writer`` buffers and writes
lines on the reactor's clock, in a thread; ``files`` finds, compresses and
prunes the day files; ``reader`` reads them back for ``syslog-collector
archive``. Only ``writer`` imports Twisted.
"""
