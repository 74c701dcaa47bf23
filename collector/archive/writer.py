"""Per-host archive files: ``<root>/<host>/<YYYY-MM-DD>.log``, append-only.

Lines are buffered in memory and written every ``flush_interval_seconds``
by a timer on the injected clock, and once more when the service stops.
The writing itself (opening, writing, closing files) runs in a thread, one
flush at a time, so that a slow disk or the opening of a thousand files at
the first flush of a day does not hold the reactor: meanwhile it goes on
reading sockets. While a flush is being written, lines for the next one
gather: past ``PAUSE_STREAMS_BYTES`` of them TCP and TLS
senders wait (``pause_streams``); past ``PAUSE_DATAGRAMS_BYTES`` UDP waits too
(``pause_datagrams``).

A failed write is counted and logged, and the lines it did not write are
kept for the next flush, up to ``retry_buffer_bytes``; past that the oldest
are dropped and counted, so a full disk cannot exhaust memory. A line the
failure cut short is written again whole, after the torn piece on disk is
marked (see ``archive_line``): each line is in the archive once. What still
cannot be written when the service stops is counted as dropped. A symbolic
link where a host directory or day file should be is never written
through: the write fails the same way, and is counted and logged apart.

When the day changes, the previous day's files are closed; compression and
retention (``archive_files.maintain``) then run in a thread, at start-up,
after each change of day and every ``MAINTENANCE_INTERVAL`` seconds.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from collector.archive.files import MaintenanceReport, RefusedPath, maintain, open_directory, open_file
from collector.archive.line import TORN_MARKER, Batch, format_batch, format_time
from collector.metrics import CollectorMetrics

RETRY_BUFFER_BYTES = 64 * 1024 * 1024
# Lines buffered between flushes; past this, a flush happens at once, or
# when one is being written, TCP and TLS senders wait.
PAUSE_STREAMS_BYTES = 8 * 1024 * 1024
# Lines gathered while a flush is written, past which the archive is full.
# Higher: UDP that is not read is lost, while TCP senders lose nothing by
# waiting; the first flush with many new firewalls makes as many files.
PAUSE_DATAGRAMS_BYTES = 4 * PAUSE_STREAMS_BYTES
MAINTENANCE_INTERVAL = 3600.0
# Refused paths (see archive_files.RefusedPath) are logged at most this often:
# they are refused again at every flush until someone removes them.
REFUSAL_LOG_INTERVAL = 10.0

# Runs a blocking function away from the reactor thread: deferToThreadPool
# in the server, a synchronous call in unit tests.
RunInThread = Callable[..., "Deferred[Any]"]


def run_synchronously(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return maybeDeferred(function, *args, **kwargs)


class Archive(Protocol):
    def append(self, received_at: float, batch: Batch) -> None:
        """Archive messages received together (see ``archive_line.Batch``)."""

    @property
    def pause_streams(self) -> bool:
        """Whether the archive is behind: TCP senders should wait."""

    @property
    def pause_datagrams(self) -> bool:
        """Whether the archive is far behind: all input should wait, UDP too."""

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each flush that lets TCP and TLS senders go on."""


Key = tuple[str, str]  # (host, day)


@dataclass
class WriteReport:
    """What one flush's writing did, for the reactor's thread to count and log."""

    written_bytes: int = 0
    # The lines of a file that were not written, from the start of the one cut short.
    failed: list[tuple[Key, bytes, Exception]] = field(default_factory=list)
    sync_errors: list[tuple[Key, Exception]] = field(default_factory=list)
    torn: list[Key] = field(default_factory=list)
    close_errors: list[tuple[Key, Exception]] = field(default_factory=list)
    open_files: int = 0


def _write_some(fd: int, data: memoryview) -> int:
    """One ``os.write``: a full disk or a file-size limit takes part of it,
    then refuses the rest at the next."""
    taken = os.write(fd, data)
    if taken == 0:  # would loop forever
        raise OSError(errno.EIO, "the file took no bytes")
    return taken


class OpenFiles:
    """The archive's open files, written by one flush at a time in a thread.

    It touches nothing but its files: what happened comes back as a
    ``WriteReport``.

    Other workers append to the same files at once (``O_APPEND``), each
    under a shared lock: the lock is exclusive only to check a file's end for
    a torn line, which another worker's write in progress shows as well.
    """

    def __init__(self, root: Path, max_open_files: int, fsync: bool) -> None:
        self.root = root
        self._max_open_files = max_open_files
        self._fsync = fsync
        self._files: OrderedDict[Key, BinaryIO] = OrderedDict()

    def write(self, batches: dict[Key, list[bytes]], current_day: str, close_all: bool) -> WriteReport:
        """Write each file's blocks of whole lines; close other days' files, or all."""
        report = WriteReport()
        for key, blocks in batches.items():
            data = b"".join(blocks)
            written = 0
            try:
                fd = self._open(key, report).fileno()
                # Before each write, not only at opening: another worker's
                # write may have failed midway while this one kept the file
                # open, and these lines would be glued to its torn piece.
                self._mark_torn_line(fd, key, report)
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    view = memoryview(data)
                    while written < len(data):
                        written += _write_some(fd, view[written:])
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except Exception as e:  # any error: the lines are kept, not lost
                # The torn piece is marked before the next write, and the line
                # it cut is written again whole after the marker.
                start = data.rfind(b"\n", 0, written) + 1
                report.written_bytes += written
                report.failed.append((key, data[start:], e))
                self._close(key, report)
                continue
            report.written_bytes += written
            if self._fsync:
                try:
                    os.fsync(fd)
                except Exception as e:
                    # Not written again: the file holds the lines already, for
                    # all that read it, and would then hold them twice.
                    report.sync_errors.append((key, e))
                    self._close(key, report)
        for key in [k for k in self._files if close_all or k[1] != current_day]:
            self._close(key, report)
        report.open_files = len(self._files)
        return report

    def _open(self, key: Key, report: WriteReport) -> BinaryIO:
        file = self._files.get(key)
        if file is not None:
            # A file whose directory was removed under us would swallow writes.
            if os.fstat(file.fileno()).st_nlink > 0:
                self._files.move_to_end(key)
                return file
            self._close(key, report)
        host, day = key
        directory = self._open_directory(host)
        try:
            # Readable, to check its last byte. A symbolic link under the
            # name is refused, never written through: see RefusedPath.
            fd = open_file(self.root / host / f"{day}.log", os.O_RDWR | os.O_APPEND | os.O_CREAT, directory)
        finally:
            os.close(directory)
        try:
            file = open(fd, "a+b")
        except BaseException:
            os.close(fd)
            raise
        self._files[key] = file
        while len(self._files) > self._max_open_files:
            self._close(next(iter(self._files)), report)
        return file

    def _open_directory(self, host: str) -> int:
        """The host's directory, made if missing, opened relative to the root
        without following a link; the root itself may be one."""
        try:
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Removed while the collector runs: made again.
            self.root.mkdir(parents=True, exist_ok=True)
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                return open_directory(self.root / host, root)
            except FileNotFoundError:
                # A new host, or its directory removed since: only then is it
                # made, since with more hosts than max_open_files files are
                # opened again at every flush.
                try:
                    os.mkdir(host, dir_fd=root)
                except FileExistsError:
                    pass  # made meanwhile by another worker; or a dangling link, refused below
                return open_directory(self.root / host, root)
        finally:
            os.close(root)

    def _mark_torn_line(self, fd: int, key: Key, report: WriteReport) -> None:
        """The file may end in the middle of a line, cut by a crash or a failed
        write: end it and mark it."""
        if not _ends_mid_line(fd):
            return
        # Checked again under an exclusive lock: another worker's write in
        # progress shows its end mid-line too.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if _ends_mid_line(fd, size):
                marker = memoryview(b"\n" + TORN_MARKER + b"\n")
                try:
                    written = 0
                    while written < len(marker):
                        written += _write_some(fd, marker[written:])
                except Exception:
                    # A part of the marker, its newline alone, would pass the
                    # torn piece for a whole line: the next try marks it again.
                    # No other worker writes while the lock is held.
                    os.ftruncate(fd, size)
                    raise
                report.torn.append(key)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _close(self, key: Key, report: WriteReport) -> None:
        file = self._files.pop(key, None)
        if file is not None:
            try:
                file.close()
            except Exception as e:
                report.close_errors.append((key, e))


def _ends_mid_line(fd: int, size: int | None = None) -> bool:
    if size is None:
        size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


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
        max_open_files: int = 1024,
        retry_buffer_bytes: int = RETRY_BUFFER_BYTES,
        compress: bool = True,
        retention_days: int = 0,
        max_host_bytes: int = 0,
        run_in_thread: RunInThread = run_synchronously,
        maintains_files: bool = True,
        quiet_seconds: float = 0.0,
    ) -> None:
        self.root = root
        self._days = _DayClock(zone)
        self._flush_interval = flush_interval
        self._metrics = metrics
        self._clock = clock
        self._files = OpenFiles(root, max_open_files, fsync)
        self._retry_buffer_bytes = retry_buffer_bytes
        self._pending: dict[Key, list[bytes]] = {}
        self._pending_bytes = 0
        # Lines whose write failed; their bytes count until the next write's report.
        self._failed: OrderedDict[Key, list[bytes]] = OrderedDict()
        self._failed_bytes = 0
        self._drain_listeners: list[Callable[[], None]] = []
        # One flush is written at a time; these wait for the next.
        self._writing = False
        self._flush_waiters: list[Deferred[None]] = []
        self._close_requested = False
        self._compress = compress
        self._retention_days = retention_days
        self._max_host_bytes = max_host_bytes
        self._run_in_thread = run_in_thread
        # With several workers, one compresses and prunes, after files go quiet.
        self._maintains_files = maintains_files
        self._quiet_seconds = quiet_seconds
        self._maintenance: Deferred[None] | None = None
        self._maintain_after_write = False
        self._current_day = ""
        self._next_refusal_log = 0.0
        self._refusals_held_back = 0
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock
        self._maintainer = LoopingCall(self.maintain)
        self._maintainer.clock = clock

    def startService(self) -> None:
        super().startService()
        self._current_day = self._days.day(self._clock.seconds())
        self._flusher.start(self._flush_interval, now=False)
        self._maintainer.start(MAINTENANCE_INTERVAL, now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for loop in (self._flusher, self._maintainer):
            if loop.running:
                loop.stop()
        done: Deferred[None] = Deferred()

        def finish(_: object = None) -> None:
            self.reopen().addCallback(self._drop_unwritten).chainDeferred(done)

        if self._maintenance is None:
            finish()
        else:
            self._maintenance.addBoth(finish)
        return done

    def reopen(self) -> Deferred[None]:
        """Write what is buffered, then close every file: the next writes
        open them again by name (for tools that move archive files away)."""
        self._close_requested = True
        return self.flush()

    def maintain(self) -> None:
        """Compress closed days and apply retention, in a thread; one run at a time."""
        if self._maintenance is not None or not self._maintains_files or not self.running:
            return
        if self._writing:
            # The write may hold lines of a past day: compress after it.
            self._maintain_after_write = True
            return
        today = self._days.day(self._clock.seconds())
        job = self._run_in_thread(
            maintain, self.root, today, compress_closed=self._compress,
            retention_days=self._retention_days, max_host_bytes=self._max_host_bytes,
            quiet_seconds=self._quiet_seconds)
        job.addCallbacks(self._maintained, self._maintenance_failed)
        job.addBoth(self._maintenance_ended)
        if not job.called:
            self._maintenance = job

    def _maintenance_ended(self, _: object) -> None:
        self._maintenance = None

    def _maintained(self, report: MaintenanceReport) -> None:
        metrics = self._metrics
        metrics.archive_files_compressed.inc(len(report.compressed))
        metrics.archive_files_deleted.labels(reason="age").inc(len(report.deleted_by_age))
        metrics.archive_files_deleted.labels(reason="size").inc(len(report.deleted_by_size))
        for path in report.deleted_by_age + report.deleted_by_size:
            self.log.info("retention removed {path}", path=str(path))
        for error in report.errors:
            metrics.archive_write_errors.inc()
            self.log.error("archive maintenance: {error}", error=error)

    def _maintenance_failed(self, failure: Any) -> None:
        self._metrics.archive_write_errors.inc()
        self.log.failure("archive maintenance failed", failure)

    @property
    def pause_streams(self) -> bool:
        return self._behind(PAUSE_STREAMS_BYTES)

    @property
    def pause_datagrams(self) -> bool:
        return self._behind(PAUSE_DATAGRAMS_BYTES)

    def _behind(self, gathered_bound: int) -> bool:
        # Half the retry buffer: input waits before anything must be dropped.
        # Or the disk is slower than the input: lines gather while it writes.
        return (self._failed_bytes > self._retry_buffer_bytes // 2
                or self._pending_bytes > gathered_bound)

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._drain_listeners.append(callback)

    def append(self, received_at: float, batch: Batch) -> None:
        day = self._days.day(received_at)
        pending = self._pending
        for host, lines in format_batch(format_time(received_at), batch):
            key = (host, day)
            try:
                pending[key].append(lines)
            except KeyError:
                pending[key] = [lines]
            self._pending_bytes += len(lines)
        if self._pending_bytes > PAUSE_STREAMS_BYTES and not self._writing:
            self.flush()

    def flush(self) -> Deferred[None]:
        """Write everything buffered so far; keep what could not be written for the next try.

        Fires once it is written: at once if no flush is being written,
        otherwise right after that one.
        """
        written: Deferred[None] = Deferred()
        self._flush_waiters.append(written)
        if not self._writing:
            self._write_buffered()
        return written

    def _write_buffered(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        current_day = self._days.day(self._clock.seconds())
        # Lines that failed before go first, in one write with the new ones.
        batches, self._failed = self._failed, OrderedDict()
        for key, blocks in self._pending.items():
            batches.setdefault(key, []).extend(blocks)
        self._pending = {}
        self._pending_bytes = 0
        if self._maintenance is not None:
            # A past day may be being compressed: write its lines after that.
            for key in [k for k in batches if k[1] != current_day]:
                blocks = self._pending[key] = batches.pop(key)
                self._pending_bytes += sum(map(len, blocks))
        close_all, self._close_requested = self._close_requested, False
        self._writing = True
        job = self._run_in_thread(self._files.write, batches, current_day, close_all)
        job.addCallbacks(self._written, self._write_failed, errbackArgs=(batches,))
        job.addBoth(self._write_ended, current_day, waiters)

    def _written(self, report: WriteReport) -> None:
        metrics = self._metrics
        metrics.archive_written_bytes.inc(report.written_bytes)
        self._failed_bytes = 0
        for key, data, error in report.failed:
            metrics.archive_write_errors.inc()
            if isinstance(error, RefusedPath):
                metrics.archive_refused_paths.inc()
                self._log_refusal(key, data, error)
            elif isinstance(error, OSError):
                self.log.error("cannot write {count} lines to the archive of {host} for {day}: {error}",
                               count=data.count(b"\n"), host=key[0], day=key[1], error=error)
            else:  # a bug: its traceback
                self.log.failure("cannot write {count} lines to the archive of {host} for {day}",
                                 Failure(error), count=data.count(b"\n"), host=key[0], day=key[1])
            self._keep_for_retry(key, data)
        for (host, day), error in report.sync_errors:
            metrics.archive_write_errors.inc()
            self.log.error("syncing the archive of {host} for {day} to disk failed: {error}",
                           host=host, day=day, error=error)
        for host, day in report.torn:
            self.log.warn("the archive of {host} for {day} ended in a torn line (a crash, or a write "
                          "that failed midway); marked it", host=host, day=day)
        for (host, day), error in report.close_errors:
            self.log.error("closing the archive of {host} for {day} failed: {error}",
                           host=host, day=day, error=error)
        metrics.archive_open_files.set(report.open_files)

    def _log_refusal(self, key: Key, data: bytes, error: RefusedPath) -> None:
        now = self._clock.seconds()
        if now < self._next_refusal_log:
            self._refusals_held_back += 1
            return
        self.log.error("refused to write {count} lines to the archive of {host} for {day}: {error}; "
                       "they are kept for retry until it is a plain directory and file "
                       "({held_back} similar refusals since the last report)",
                       count=data.count(b"\n"), host=key[0], day=key[1], error=error,
                       held_back=self._refusals_held_back)
        self._refusals_held_back = 0
        self._next_refusal_log = now + REFUSAL_LOG_INTERVAL

    def _write_failed(self, failure: Any, batches: dict[Key, list[bytes]]) -> None:
        self._failed_bytes = 0
        self._metrics.archive_write_errors.inc()
        self.log.failure("writing the archive failed; its lines are kept for the next flush", failure)
        # What was written of it, if anything, is unknown: better twice than lost.
        for key, blocks in batches.items():
            self._keep_for_retry(key, b"".join(blocks))

    def _write_ended(self, _: object, current_day: str, waiters: list[Deferred[None]]) -> None:
        self._writing = False
        self._metrics.archive_backlog_bytes.set(self._failed_bytes)
        if current_day != self._current_day or self._maintain_after_write:
            self._current_day = current_day
            self._maintain_after_write = False
            self.maintain()
        # Unless the lines gathered are a past day's, held back from maintenance.
        if self._flush_waiters or (self._pending_bytes > PAUSE_STREAMS_BYTES and self._maintenance is None):
            self._write_buffered()
        if not self.pause_streams:
            for listener in self._drain_listeners:
                listener()
        for waiter in waiters:
            waiter.callback(None)

    def _drop_unwritten(self, _: object) -> None:
        """Count and log the lines the last flush could not write: they are lost with the process."""
        # With them, any that came while it was being written.
        unwritten = [*self._failed.values(), *self._pending.values()]
        count = sum(block.count(b"\n") for blocks in unwritten for block in blocks)
        self._failed, self._failed_bytes = OrderedDict(), 0
        self._pending, self._pending_bytes = {}, 0
        self._metrics.archive_backlog_bytes.set(0)
        if count:
            self._metrics.dropped.labels(reason="archive_unwritable_at_stop").inc(count)
            self.log.error("stopping: {count} lines could not be written to the archive and are lost",
                           count=count)

    def _keep_for_retry(self, key: Key, data: bytes) -> None:
        if not data:
            return
        self._failed.setdefault(key, []).append(data)
        self._failed_bytes += len(data)
        dropped = 0
        while self._failed_bytes > self._retry_buffer_bytes and self._failed:
            oldest_key = next(iter(self._failed))
            blocks = self._failed[oldest_key]
            # Drop whole lines, oldest first: only as many as it takes.
            block = blocks[0]
            start = 0
            while start < len(block) and self._failed_bytes > self._retry_buffer_bytes:
                end = block.index(b"\n", start) + 1
                self._failed_bytes -= end - start
                start = end
                dropped += 1
            if start < len(block):
                blocks[0] = block[start:]
            else:
                del blocks[0]
                if not blocks:
                    del self._failed[oldest_key]
        if dropped:
            self._metrics.dropped.labels(reason="archive_retry_buffer_full").inc(dropped)
