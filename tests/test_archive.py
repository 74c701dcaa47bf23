import builtins
import fcntl
import gzip
import os
import shutil
import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

import collector.archive.writer
from collector.archive.files import day_files
from collector.archive.line import TORN_MARKER, parse_line
from collector.archive.reader import read_messages
from collector.archive.writer import FileArchive
from collector.metrics import CollectorMetrics
from conftest import REQUIRE_ALL

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
SENDER = b"192.0.2.1:514"


@pytest.fixture
def registry():
    return CollectorRegistry()


def make_archive(tmp_path, registry, clock, **kwargs):
    kwargs.setdefault("zone", UTC)
    kwargs.setdefault("flush_interval", 1.0)
    archive = FileArchive(tmp_path / "archive", metrics=CollectorMetrics(registry, 1000), clock=clock,
                          **kwargs)
    archive.startService()
    return archive


def read(path):
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return [parse_line(line).message for line in data.splitlines(keepends=True)]


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_lines_are_written_at_the_flush_interval(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append(clock.seconds(), [("gw", SENDER, [b"one"])])
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    clock.advance(0.5)
    assert not path.exists()
    clock.advance(0.5)
    assert read(path) == [b"one"]
    assert value(registry, "syslog_collector_archive_written_bytes_total") == path.stat().st_size
    archive.stopService()


def test_each_line_names_its_own_receive_time_and_sender(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    other = b"[2001:db8::1]:40000"
    # One batch of two hosts and two senders, then later batches.
    archive.append(NOON, [("gw", SENDER, [b"one"]), ("branch", SENDER, [b"two"]), ("gw", other, [b"three"])])
    archive.append(NOON + 0.25, [("gw", other, [b"four"])])
    archive.append(NOON + 0.5, [("gw", SENDER, [b"five"])])
    archive.stopService()
    lines = [parse_line(line) for line in (tmp_path / "archive" / "gw" / "2026-11-25.log").read_bytes().splitlines()]
    assert [(m.received_at, m.sender, m.message) for m in lines] == [
        ("2026-11-25T12:00:00.000000Z", "192.0.2.1:514", b"one"),
        ("2026-11-25T12:00:00.000000Z", "[2001:db8::1]:40000", b"three"),
        ("2026-11-25T12:00:00.250000Z", "[2001:db8::1]:40000", b"four"),
        ("2026-11-25T12:00:00.500000Z", "192.0.2.1:514", b"five"),
    ]
    assert [parse_line(line).sender for line in
            (tmp_path / "archive" / "branch" / "2026-11-25.log").read_bytes().splitlines()] == ["192.0.2.1:514"]


def test_stop_flushes_and_closes_everything(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append(clock.seconds(), [("gw", SENDER, [b"last words"])])
    archive.stopService()
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"last words"]
    assert value(registry, "syslog_collector_archive_open_files") == 0
    assert not clock.getDelayedCalls()


def test_a_new_file_each_day_and_yesterdays_file_is_closed(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON + 12 * 3600 - 1.5)  # 23:59:58.5
    archive = make_archive(tmp_path, registry, clock)
    archive.append(clock.seconds(), [("gw", SENDER, [b"before midnight"])])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_open_files") == 1
    clock.advance(1)  # 00:00:00.5
    archive.append(clock.seconds(), [("gw", SENDER, [b"after midnight"])])
    clock.advance(1)
    root = tmp_path / "archive" / "gw"
    assert read(root / "2026-11-25.log.gz") == [b"before midnight"]
    assert not (root / "2026-11-25.log").exists()
    assert read(root / "2026-11-26.log") == [b"after midnight"]
    assert value(registry, "syslog_collector_archive_open_files") == 1
    assert value(registry, "syslog_collector_archive_files_compressed_total") == 1
    archive.stopService()


def test_days_follow_the_configured_zone(tmp_path, registry):
    clock = Clock()
    # 23:30 UTC on Nov 25 is already Nov 26 in Prague.
    clock.advance(NOON + 11.5 * 3600)
    archive = make_archive(tmp_path, registry, clock, zone=ZoneInfo("Europe/Prague"))
    archive.append(clock.seconds(), [("gw", SENDER, [b"x"])])
    archive.stopService()
    assert (tmp_path / "archive" / "gw" / "2026-11-26.log").exists()


def test_open_files_stay_under_the_cap(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, max_open_files=3)
    for round_number in range(2):
        for host in range(10):
            archive.append(clock.seconds(), [(f"host{host}", SENDER, [b"round %d" % round_number])])
        clock.advance(1)
        assert value(registry, "syslog_collector_archive_open_files") <= 3
    archive.stopService()
    for host in range(10):
        assert read(tmp_path / "archive" / f"host{host}" / "2026-11-25.log") == [b"round 0", b"round 1"]


def full_disk(path):
    """Make the archive file at ``path`` a link to /dev/full, whose writes
    fail with ENOSPC (no byte taken); returns what makes room again."""
    if not os.path.exists("/dev/full"):
        message = "/dev/full is missing"
        if REQUIRE_ALL:
            pytest.fail(message + " (COLLECTOR_TESTS_REQUIRE_ALL=1)")
        pytest.skip(message)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/full")
    # A failed write closes the file: the next one opens a plain file by the name.
    return path.unlink


def test_disk_full_keeps_lines_and_writes_them_once_it_recovers(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    make_room = full_disk(path)
    archive.append(clock.seconds(), [("gw", SENDER, [b"kept 1"])])
    clock.advance(1)
    archive.append(clock.seconds(), [("gw", SENDER, [b"kept 2"])])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 2
    make_room()
    archive.append(clock.seconds(), [("gw", SENDER, [b"after recovery"])])
    clock.advance(1)
    assert read(path) == [b"kept 1", b"kept 2", b"after recovery"]
    archive.stopService()


def test_retry_buffer_is_bounded_and_overflow_counted(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    line_size = len(b"2026-11-25T12:00:00.000000Z 192.0.2.1:514 msg 0\n")
    archive = make_archive(tmp_path, registry, clock, retry_buffer_bytes=3 * line_size)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    make_room = full_disk(path)
    for n in range(5):
        archive.append(clock.seconds(), [("gw", SENDER, [b"msg %d" % n])])
    clock.advance(1)
    assert value(registry, "syslog_collector_dropped_messages_total", reason="archive_retry_buffer_full") == 2
    make_room()
    clock.advance(1)
    assert read(path) == [b"msg 2", b"msg 3", b"msg 4"]
    archive.stopService()


def test_lines_still_unwritable_at_stop_are_counted_as_dropped(tmp_path, registry, log_events):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    full_disk(tmp_path / "archive" / "gw" / "2026-11-25.log")
    archive.append(clock.seconds(), [("gw", SENDER, [b"one", b"two"])])
    clock.advance(1)
    archive.append(clock.seconds(), [("gw", SENDER, [b"three"])])
    stopped = []
    archive.stopService().addCallback(stopped.append)
    assert stopped == [None]
    assert value(registry, "syslog_collector_dropped_messages_total", reason="archive_unwritable_at_stop") == 3
    assert value(registry, "syslog_collector_archive_backlog_bytes") == 0
    [event] = log_events("could not be written")
    assert event["count"] == 3 and event["log_level"].name == "error"


def test_removed_directories_are_recreated(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append(clock.seconds(), [("gw", SENDER, [b"first"])])
    clock.advance(1)
    shutil.rmtree(tmp_path / "archive")
    archive.append(clock.seconds(), [("gw", SENDER, [b"second"])])
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"second"]
    archive.stopService()


def write_day(root, host, day, lines):
    directory = root / host
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{day}.log"
    path.write_bytes(b"".join(b"2026-01-01T00:00:00.000000Z 192.0.2.1:1 %s\n" % line for line in lines))
    return path


def test_start_compresses_closed_days_and_redoes_interrupted_compressions(tmp_path, registry):
    root = tmp_path / "archive"
    write_day(root, "gw", "2026-11-20", [b"old"])
    interrupted = write_day(root, "gw", "2026-11-21", [b"interrupted"])
    interrupted.with_name("2026-11-21.log.gz.partial").write_bytes(b"\x1f\x8b half a file")
    write_day(root, "gw", "2026-11-25", [b"today"])
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    names = sorted(p.name for p in (root / "gw").iterdir())
    assert names == ["2026-11-20.log.gz", "2026-11-21.log.gz", "2026-11-25.log"]
    assert read(root / "gw" / "2026-11-21.log.gz") == [b"interrupted"]
    assert value(registry, "syslog_collector_archive_files_compressed_total") == 2
    archive.stopService()


def test_late_lines_for_a_compressed_day_become_a_further_gzip_member(tmp_path, registry):
    root = tmp_path / "archive"
    write_day(root, "gw", "2026-11-20", [b"first"])
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    write_day(root, "gw", "2026-11-20", [b"late"])
    archive.maintain()
    assert read(root / "gw" / "2026-11-20.log.gz") == [b"first", b"late"]
    archive.stopService()


def test_retention_by_age(tmp_path, registry):
    root = tmp_path / "archive"
    for day in ("2026-11-20", "2026-11-21", "2026-11-22", "2026-11-25"):
        write_day(root, "gw", day, [day.encode()])
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, retention_days=3)
    names = sorted(p.name for p in (root / "gw").iterdir())
    assert names == ["2026-11-22.log.gz", "2026-11-25.log"]
    assert value(registry, "syslog_collector_archive_files_deleted_total", reason="age") == 2
    archive.stopService()


def test_retention_by_size_removes_oldest_first_never_today(tmp_path, registry):
    root = tmp_path / "archive"
    for day in ("2026-11-22", "2026-11-23", "2026-11-24"):
        write_day(root, "gw", day, [b"x" * 5000])
    write_day(root, "gw", "2026-11-25", [b"y" * 20000])
    write_day(root, "other", "2026-11-22", [b"small"])
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, compress=False, max_host_bytes=26000)
    assert sorted(p.name for p in (root / "gw").iterdir()) == ["2026-11-24.log", "2026-11-25.log"]
    assert (root / "other" / "2026-11-22.log").exists()
    assert value(registry, "syslog_collector_archive_files_deleted_total", reason="size") == 2
    # Today's file alone over the bound is kept.
    archive.stopService()


def test_maintenance_runs_hourly(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, retention_days=1)
    write_day(tmp_path / "archive", "gw", "2026-11-01", [b"expired"])
    clock.advance(3600)
    assert not (tmp_path / "archive" / "gw" / "2026-11-01.log").exists()
    assert not (tmp_path / "archive" / "gw" / "2026-11-01.log.gz").exists()
    archive.stopService()


class HeldThreads:
    """A ``run_in_thread`` that holds the jobs named (``write``, ``maintain``)
    until told, and runs the others at once."""

    def __init__(self, *held):
        self.jobs = {name: [] for name in held}

    def __call__(self, function, *args, **kwargs):
        if function.__name__ not in self.jobs:
            return succeed(function(*args, **kwargs))
        d = Deferred()
        self.jobs[function.__name__].append((d, function, args, kwargs))
        return d

    def finish(self, name):
        d, function, args, kwargs = self.jobs[name].pop(0)
        d.callback(function(*args, **kwargs))


def test_lines_for_past_days_wait_while_maintenance_runs(tmp_path, registry):
    held = HeldThreads("maintain")
    clock = Clock()
    clock.advance(NOON + 12 * 3600 - 1.5)  # 23:59:58.5
    archive = make_archive(tmp_path, registry, clock, run_in_thread=held)
    held.finish("maintain")
    archive.append(clock.seconds(), [("gw", SENDER, [b"yesterday 1"])])
    clock.advance(2)  # midnight passed: the day's maintenance starts and is still running
    assert len(held.jobs["maintain"]) == 1
    # A line stamped before midnight (a clock stepped back) arrives now.
    archive.append(clock.seconds() - 1.5, [("gw", SENDER, [b"yesterday 2"])])
    clock.advance(1)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    assert read(path) == [b"yesterday 1"]  # held back, not written under the compressor
    held.finish("maintain")
    stopped = []
    archive.stopService().addCallback(stopped.append)
    assert stopped == [None]
    gz = tmp_path / "archive" / "gw" / "2026-11-25.log.gz"
    assert read(gz) == [b"yesterday 1"]
    assert read(path) == [b"yesterday 2"]


def test_stop_waits_for_running_maintenance(tmp_path, registry):
    held = HeldThreads("maintain")
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, run_in_thread=held)
    archive.append(clock.seconds(), [("gw", SENDER, [b"x"])])
    stopped = []
    archive.stopService().addCallback(stopped.append)
    assert stopped == []
    held.finish("maintain")
    assert stopped == [None]
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"x"]


def test_backlog_signals_senders_to_wait_and_drained_after_recovery(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    line_size = len(b"2026-11-25T12:00:00.000000Z 192.0.2.1:514 msg 0\n")
    archive = make_archive(tmp_path, registry, clock, retry_buffer_bytes=10 * line_size)
    drained = []
    archive.when_drained(lambda: drained.append(clock.seconds()))
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    make_room = full_disk(path)
    for n in range(4):
        archive.append(clock.seconds(), [("gw", SENDER, [b"msg %d" % n])])
    clock.advance(1)
    assert not archive.pause_streams  # 4 lines held: under half the retry buffer
    for n in range(4, 8):
        archive.append(clock.seconds(), [("gw", SENDER, [b"msg %d" % n])])
    drained.clear()
    clock.advance(1)
    assert archive.pause_streams and archive.pause_datagrams and drained == []  # UDP waits as well
    assert value(registry, "syslog_collector_archive_backlog_bytes") == 8 * line_size
    make_room()
    clock.advance(1)
    assert not archive.pause_streams and drained == [clock.seconds()]
    assert len(read(path)) == 8
    archive.stopService()


def test_a_large_backlog_of_pending_lines_is_flushed_at_once(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(collector.archive.writer, "PAUSE_STREAMS_BYTES", 1000)
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    for n in range(30):
        archive.append(clock.seconds(), [("gw", SENDER, [b"line %d" % n])])
    # No time has passed, yet most lines are on disk already.
    assert len(read(tmp_path / "archive" / "gw" / "2026-11-25.log")) >= 15
    archive.stopService()


def test_one_flush_is_written_at_a_time_and_lines_keep_their_order(tmp_path, registry):
    held = HeldThreads("write")
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, run_in_thread=held)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    archive.append(clock.seconds(), [("gw", SENDER, [b"one"])])
    first = archive.flush()
    archive.append(clock.seconds(), [("gw", SENDER, [b"two"])])
    second = archive.flush()
    clock.advance(1)  # the timer's flush waits as well
    archive.append(clock.seconds(), [("gw", SENDER, [b"three"])])
    assert len(held.jobs["write"]) == 1 and not first.called
    held.finish("write")
    assert first.called and not second.called
    assert read(path) == [b"one"]
    held.finish("write")  # what came meanwhile, in one write
    assert second.called and not held.jobs["write"]
    assert read(path) == [b"one", b"two", b"three"]
    archive.stopService()
    held.finish("write")


def test_the_archive_is_backlogged_then_full_while_a_slow_write_holds_more(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(collector.archive.writer, "PAUSE_STREAMS_BYTES", 1000)
    monkeypatch.setattr(collector.archive.writer, "PAUSE_DATAGRAMS_BYTES", 4000)
    held = HeldThreads("write")
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, run_in_thread=held)
    drained = []
    archive.when_drained(lambda: drained.append(len(held.jobs["write"])))
    lines = [b"line %d" % n for n in range(200)]  # 41-43 bytes each in the archive
    for line in lines[:30]:
        archive.append(clock.seconds(), [("gw", SENDER, [line])])
    assert len(held.jobs["write"]) == 1  # over the bound: being written
    assert not archive.pause_streams
    for line in lines[30:60]:
        archive.append(clock.seconds(), [("gw", SENDER, [line])])
    assert archive.pause_streams and not archive.pause_datagrams  # as much again gathered meanwhile
    for line in lines[60:]:
        archive.append(clock.seconds(), [("gw", SENDER, [line])])
    assert archive.pause_datagrams
    assert len(held.jobs["write"]) == 1  # still the first: one write at a time
    held.finish("write")
    # The next write starts at once with what gathered, and input may go on.
    assert len(held.jobs["write"]) == 1 and drained == [1]
    assert not archive.pause_streams and not archive.pause_datagrams
    held.finish("write")
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == lines
    archive.stopService()
    held.finish("write")


def test_maintenance_and_reopening_wait_for_the_write_in_progress(tmp_path, registry):
    held = HeldThreads("write", "maintain")
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, run_in_thread=held)
    held.finish("maintain")  # the one at start-up
    archive.append(clock.seconds(), [("gw", SENDER, [b"x"])])
    archive.flush()
    archive.maintain()
    reopened = archive.reopen()
    assert not held.jobs["maintain"]
    held.finish("write")
    assert len(held.jobs["maintain"]) == 1
    assert value(registry, "syslog_collector_archive_open_files") == 1
    held.finish("write")
    assert reopened.called
    assert value(registry, "syslog_collector_archive_open_files") == 0
    held.finish("maintain")
    archive.stopService()
    held.finish("write")


def test_an_unexpected_error_opening_a_file_keeps_its_lines_for_the_next_flush(tmp_path, registry, monkeypatch):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)

    def broken_open(path, mode):
        raise RuntimeError("injected")

    monkeypatch.setattr(collector.archive.writer, "open", broken_open, raising=False)
    archive.append(clock.seconds(), [("gw", SENDER, [b"kept"])])
    archive.append(clock.seconds(), [("other", SENDER, [b"kept too"])])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 2  # one a file
    monkeypatch.undo()
    archive.append(clock.seconds(), [("gw", SENDER, [b"next"])])
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"kept", b"next"]
    assert read(tmp_path / "archive" / "other" / "2026-11-25.log") == [b"kept too"]
    archive.stopService()


def test_an_unexpected_error_midway_through_a_write_keeps_the_rest_from_the_line_it_cut(
        tmp_path, registry, monkeypatch, log_events):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    calls = []

    def half_then_broken(fd, data):
        # The first write takes part of the block, cutting a line, as the
        # kernel may; then a bug.
        calls.append(len(data))
        if len(calls) == 1:
            return os.write(fd, data[:len(data) // 2 + 3])
        raise ValueError("injected")

    monkeypatch.setattr(collector.archive.writer, "_write_some", half_then_broken)
    lines = [b"line %d" % n for n in range(10)]
    archive.append(clock.seconds(), [("gw", SENDER, lines)])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 1
    assert len(log_events("cannot write")) == 1
    on_disk = path.read_bytes()
    assert not on_disk.endswith(b"\n")
    kept = value(registry, "syslog_collector_archive_backlog_bytes")
    assert kept == calls[0] - on_disk.rindex(b"\n") - 1  # from the start of the line cut
    monkeypatch.undo()
    clock.advance(1)
    archive.stopService()
    assert path.read_bytes().count(TORN_MARKER) == 1
    damage = []
    messages = [m.message for m in read_messages(day_files(tmp_path / "archive", "gw"),
                                                 on_damage=lambda path, problem: damage.append(problem))]
    assert messages == lines and len(damage) == 1


def test_an_error_out_of_the_writing_thread_keeps_the_whole_flush(tmp_path, registry, monkeypatch):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)

    def broken_write(batches, current_day, close_all):
        raise ValueError("injected")

    monkeypatch.setattr(archive._files, "write", broken_write)
    archive.append(clock.seconds(), [("gw", SENDER, [b"one"]), ("other", SENDER, [b"two"])])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 1
    assert value(registry, "syslog_collector_archive_backlog_bytes") > 0
    monkeypatch.undo()
    archive.append(clock.seconds(), [("gw", SENDER, [b"three"])])
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"one", b"three"]
    assert read(tmp_path / "archive" / "other" / "2026-11-25.log") == [b"two"]
    archive.stopService()


@pytest_twisted.ensureDeferred
async def test_a_slow_write_does_not_hold_the_reactor(tmp_path, registry, monkeypatch):
    release = threading.Event()
    writers = []

    def slow_open(path, mode):
        writers.append(threading.get_ident())
        release.wait(10)
        return builtins.open(path, mode)

    monkeypatch.setattr(collector.archive.writer, "open", slow_open, raising=False)
    archive = FileArchive(tmp_path / "archive", UTC, 60.0, CollectorMetrics(registry, 1000), reactor,
                          run_in_thread=threads.deferToThread)
    archive.startService()
    try:
        archive.append(reactor.seconds(), [("gw", SENDER, [b"slow"])])
        written = archive.flush()
        ticks = []
        for _ in range(5):
            await task.deferLater(reactor, 0.01, ticks.append, None)
        assert len(ticks) == 5 and writers and not written.called
        assert writers[0] != threading.get_ident()
    finally:
        release.set()
    await written
    assert read(tmp_path / "archive" / "gw" / f"{datetime.now(UTC):%Y-%m-%d}.log") == [b"slow"]
    await archive.stopService()


@pytest_twisted.ensureDeferred
async def test_another_workers_write_in_progress_is_not_taken_for_a_torn_line(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    path.parent.mkdir(parents=True)
    stamp = b"2026-11-25T12:00:00.000000Z 192.0.2.1:1 "
    path.write_bytes(stamp + b"first\n" + stamp + b"sec")  # as the other's write shows it midway
    with open(path, "ab") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_SH)  # held by the other worker while it writes
        archive = make_archive(tmp_path, registry, clock, run_in_thread=threads.deferToThread)
        archive.append(clock.seconds(), [("gw", SENDER, [b"third"])])
        written = archive.flush()
        await task.deferLater(reactor, 0.1)
        assert not written.called  # the end is checked once the other's write is done
        other.write(b"ond\n")
        other.flush()
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    await written
    await archive.stopService()
    assert read(path) == [b"first", b"second", b"third"]
