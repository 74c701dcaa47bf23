import errno
import shutil
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

import collector.archive
from collector.archive import FileArchive
from collector.archive_line import parse_line
from collector.metrics import CollectorMetrics

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()
SENDER = b"192.0.2.1:514"


@pytest.fixture
def registry():
    return CollectorRegistry()


def make_archive(tmp_path, registry, clock, **kwargs):
    kwargs.setdefault("zone", timezone.utc)
    kwargs.setdefault("flush_interval", 1.0)
    archive = FileArchive(tmp_path / "archive", metrics=CollectorMetrics(registry, 1000), clock=clock,
                          **kwargs)
    archive.startService()
    return archive


def read(path):
    return [parse_line(line).message for line in path.read_bytes().splitlines(keepends=True)]


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_lines_are_written_at_the_flush_interval(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append("gw", clock.seconds(), SENDER, b"one")
    path = tmp_path / "archive" / "gw" / "2026-11-25.log"
    clock.advance(0.5)
    assert not path.exists()
    clock.advance(0.5)
    assert read(path) == [b"one"]
    assert value(registry, "syslog_collector_archive_written_bytes_total") == path.stat().st_size
    archive.stopService()


def test_stop_flushes_and_closes_everything(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append("gw", clock.seconds(), SENDER, b"last words")
    archive.stopService()
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"last words"]
    assert value(registry, "syslog_collector_archive_open_files") == 0
    assert not clock.getDelayedCalls()


def test_a_new_file_each_day_and_yesterdays_file_is_closed(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON + 12 * 3600 - 1.5)  # 23:59:58.5
    archive = make_archive(tmp_path, registry, clock)
    archive.append("gw", clock.seconds(), SENDER, b"before midnight")
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_open_files") == 1
    clock.advance(1)  # 00:00:00.5
    archive.append("gw", clock.seconds(), SENDER, b"after midnight")
    clock.advance(1)
    root = tmp_path / "archive" / "gw"
    assert read(root / "2026-11-25.log") == [b"before midnight"]
    assert read(root / "2026-11-26.log") == [b"after midnight"]
    assert value(registry, "syslog_collector_archive_open_files") == 1
    archive.stopService()


def test_days_follow_the_configured_zone(tmp_path, registry):
    clock = Clock()
    # 23:30 UTC on Nov 25 is already Nov 26 in Prague.
    clock.advance(NOON + 11.5 * 3600)
    archive = make_archive(tmp_path, registry, clock, zone=ZoneInfo("Europe/Prague"))
    archive.append("gw", clock.seconds(), SENDER, b"x")
    archive.stopService()
    assert (tmp_path / "archive" / "gw" / "2026-11-26.log").exists()


def test_open_files_stay_under_the_cap(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock, max_open_files=3)
    for round_number in range(2):
        for host in range(10):
            archive.append(f"host{host}", clock.seconds(), SENDER, b"round %d" % round_number)
        clock.advance(1)
        assert value(registry, "syslog_collector_archive_open_files") <= 3
    archive.stopService()
    for host in range(10):
        assert read(tmp_path / "archive" / f"host{host}" / "2026-11-25.log") == [b"round 0", b"round 1"]


class FailingFile:
    def __init__(self, error):
        self.error = error

    def write(self, data):
        raise OSError(self.error, "injected")

    def close(self):
        pass


def test_disk_full_keeps_lines_and_writes_them_once_it_recovers(tmp_path, registry, monkeypatch):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    monkeypatch.setattr(collector.archive, "open", lambda *a, **k: FailingFile(errno.ENOSPC), raising=False)
    archive.append("gw", clock.seconds(), SENDER, b"kept 1")
    clock.advance(1)
    archive.append("gw", clock.seconds(), SENDER, b"kept 2")
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 2
    monkeypatch.undo()
    archive.append("gw", clock.seconds(), SENDER, b"after recovery")
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"kept 1", b"kept 2", b"after recovery"]
    archive.stopService()


def test_retry_buffer_is_bounded_and_overflow_counted(tmp_path, registry, monkeypatch):
    clock = Clock()
    clock.advance(NOON)
    line_size = len(b"2026-11-25T12:00:00.000000Z 192.0.2.1:514 msg 0\n")
    archive = make_archive(tmp_path, registry, clock, retry_buffer_bytes=3 * line_size)
    monkeypatch.setattr(collector.archive, "open", lambda *a, **k: FailingFile(errno.EIO), raising=False)
    for n in range(5):
        archive.append("gw", clock.seconds(), SENDER, b"msg %d" % n)
    clock.advance(1)
    assert value(registry, "syslog_collector_dropped_messages_total", reason="archive_retry_buffer_full") == 2
    monkeypatch.undo()
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"msg 2", b"msg 3", b"msg 4"]
    archive.stopService()


def test_removed_directories_are_recreated(tmp_path, registry):
    clock = Clock()
    clock.advance(NOON)
    archive = make_archive(tmp_path, registry, clock)
    archive.append("gw", clock.seconds(), SENDER, b"first")
    clock.advance(1)
    shutil.rmtree(tmp_path / "archive")
    archive.append("gw", clock.seconds(), SENDER, b"second")
    clock.advance(1)
    assert read(tmp_path / "archive" / "gw" / "2026-11-25.log") == [b"second"]
    archive.stopService()
