"""Per-host archive files: ``<root>/<host>/<YYYY-MM-DD>.log``, append-only.

Lines are buffered in memory and written every ``flush_interval_seconds``
by a timer on the injected clock, and once more when the service stops. A
failed write is counted and logged, and its lines are kept for the next
flush, up to ``retry_buffer_bytes``; past that the oldest are dropped and
counted, so a full disk cannot exhaust memory.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import BinaryIO, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from collector.archive_line import format_line, format_time
from collector.metrics import CollectorMetrics

RETRY_BUFFER_BYTES = 64 * 1024 * 1024


class Archive(Protocol):
    def append(self, host: str, received_at: float, sender: bytes, message: bytes) -> None: ...


class _DayClock:
    """Maps receive times to day names in a zone, recomputing once a day."""

    def __init__(self, zone: tzinfo) -> None:
        self._zone = zone
        self._start = self._end = 0.0
        self.name = ""

    def day(self, seconds: float) -> str:
        if not self._start <= seconds < self._end:
            local = datetime.fromtimestamp(seconds, self._zone)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            # Wall-clock arithmetic: right on days of 23 or 25 hours too.
            self._start = midnight.timestamp()
            self._end = (midnight + timedelta(days=1)).timestamp()
            self.name = midnight.strftime("%Y-%m-%d")
        return self.name


class FileArchive(Service):
    log = Logger()

    def __init__(
        self,
        root: Path,
        zone: tzinfo,
        flush_interval: float,
        metrics: CollectorMetrics,
        clock: IReactorTime,
        *,
        fsync: bool = False,
        max_open_files: int = 256,
        retry_buffer_bytes: int = RETRY_BUFFER_BYTES,
    ) -> None:
        self.root = root
        self._days = _DayClock(zone)
        self._flush_interval = flush_interval
        self._metrics = metrics
        self._clock = clock
        self._fsync = fsync
        self._max_open_files = max_open_files
        self._retry_buffer_bytes = retry_buffer_bytes
        self._pending: dict[tuple[str, str], list[bytes]] = {}
        self._failed: OrderedDict[tuple[str, str], list[bytes]] = OrderedDict()
        self._failed_bytes = 0
        self._files: OrderedDict[tuple[str, str], BinaryIO] = OrderedDict()
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock

    def startService(self) -> None:
        super().startService()
        self._flusher.start(self._flush_interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._flusher.running:
            self._flusher.stop()
        self.flush()
        self._close_all()

    def append(self, host: str, received_at: float, sender: bytes, message: bytes) -> None:
        key = (host, self._days.day(received_at))
        line = format_line(format_time(received_at), sender, message)
        try:
            self._pending[key].append(line)
        except KeyError:
            self._pending[key] = [line]

    def flush(self) -> None:
        """Write everything buffered; keep what could not be written for the next try."""
        # Lines that failed before go first, in one write with the new ones.
        batches, self._failed, self._failed_bytes = self._failed, OrderedDict(), 0
        for key, lines in self._pending.items():
            batches.setdefault(key, []).extend(lines)
        self._pending = {}
        for key, lines in batches.items():
            self._write(key, lines)
        current_day = self._days.day(self._clock.seconds())
        for key in [k for k in self._files if k[1] != current_day]:
            self._close(key)

    def _write(self, key: tuple[str, str], lines: list[bytes]) -> None:
        data = b"".join(lines)
        try:
            file = self._open(key)
            file.write(data)
            file.flush()
            if self._fsync:
                os.fsync(file.fileno())
        except OSError as e:
            self._metrics.archive_write_errors.inc()
            self.log.error("cannot write {count} lines to the archive of {host} for {day}: {error}",
                           count=len(lines), host=key[0], day=key[1], error=e)
            self._close(key)
            self._keep_for_retry(key, lines, len(data))
        else:
            self._metrics.archive_written_bytes.inc(len(data))

    def _keep_for_retry(self, key: tuple[str, str], lines: list[bytes], size: int) -> None:
        self._failed.setdefault(key, []).extend(lines)
        self._failed_bytes += size
        while self._failed_bytes > self._retry_buffer_bytes and self._failed:
            oldest_key = next(iter(self._failed))
            oldest = self._failed[oldest_key]
            line = oldest.pop(0)
            self._failed_bytes -= len(line)
            self._metrics.dropped.labels(reason="archive_retry_buffer_full").inc()
            if not oldest:
                del self._failed[oldest_key]

    def _open(self, key: tuple[str, str]) -> BinaryIO:
        file = self._files.get(key)
        if file is not None:
            # A file whose directory was removed under us would swallow writes.
            if os.fstat(file.fileno()).st_nlink > 0:
                self._files.move_to_end(key)
                return file
            self._close(key)
        host, day = key
        directory = self.root / host
        directory.mkdir(parents=True, exist_ok=True)
        file = open(directory / f"{day}.log", "ab")
        self._files[key] = file
        while len(self._files) > self._max_open_files:
            self._close(next(iter(self._files)))
        self._metrics.archive_open_files.set(len(self._files))
        return file

    def _close(self, key: tuple[str, str]) -> None:
        file = self._files.pop(key, None)
        if file is not None:
            try:
                file.close()
            except OSError as e:
                self.log.error("closing the archive of {host} for {day} failed: {error}",
                               host=key[0], day=key[1], error=e)
            self._metrics.archive_open_files.set(len(self._files))

    def _close_all(self) -> None:
        for key in list(self._files):
            self._close(key)
