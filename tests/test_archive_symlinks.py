"""Symbolic links planted in the archive root are never followed: not by the
writer, nor by compression and retention, nor by ``syslog-collector archive``."""

import os
import signal
import subprocess
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from collector.archive.files import RefusedPath, compress, day_files, maintain
from collector.archive.line import parse_line
from collector.archive.reader import read_messages
from collector.archive.writer import FileArchive, OpenFiles
from collector.metrics import CollectorMetrics
from collector_process import CollectorProcess, collector_environment, syslog_collector, wait_until

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
SENDER = b"192.0.2.1:514"


def today():
    return datetime.now(UTC).strftime("%Y-%m-%d")


def line(text, day="2026-11-25"):
    return b"%sT10:00:00.000000Z 192.0.2.1:514 %s\n" % (day.encode(), text)


def snapshot(directory):
    """Every file under ``directory``: its bytes and modification time."""
    found = {}
    for parent, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as file:
                found[path] = (file.read(), os.stat(path).st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path):
    """A directory outside the archive root, with a file that looks like a day's."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "2026-11-25.log").write_bytes(line(b"outside"))
    (directory / "target").write_bytes(line(b"target"))
    return directory


def read(root, host):
    return [m.message for m in read_messages(day_files(root, host))]


# The writer, in a real twistd.


def test_links_where_a_host_directory_or_day_file_should_be_are_refused_then_written(tmp_path, outside):
    root = tmp_path / "archive"
    root.mkdir()
    (root / "linked").symlink_to(outside)
    (root / "gw").mkdir()
    day = today()
    (root / "gw" / f"{day}.log").symlink_to(outside / "target")
    before = snapshot(outside)
    process = CollectorProcess(tmp_path)
    try:
        process.send_udp([b"<13>1 - linked app - - - into a linked directory",
                          b"<13>1 - gw app - - - into a linked file"])
        # Refused at every flush, not only the first.
        process.wait_for("syslog_collector_archive_refused_paths_total", 4)
        assert process.sample("syslog_collector_archive_write_errors_total") >= 4
        assert process.sample("syslog_collector_archive_backlog_bytes") > 0
        assert snapshot(outside) == before
        assert sorted(os.listdir(root / "gw")) == [f"{day}.log"]
        assert "refused to write 1 lines to the archive of linked" in process.log()
        # Logged at a limited rate, not at every flush.
        assert process.log().count("refused to write") <= 2

        (root / "linked").unlink()
        (root / "gw" / f"{day}.log").unlink()
        assert wait_until(lambda: (root / "linked" / f"{day}.log").exists()
                          and (root / "gw" / f"{day}.log").exists())
        process.send_udp([b"<13>1 - gw app - - - after"])
        process.wait_for("syslog_collector_received_messages_total", 2, host="gw", transport="udp")
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()
    assert snapshot(outside) == before
    assert process.archived("linked") == [b"<13>1 - linked app - - - into a linked directory"]
    assert process.archived("gw") == [b"<13>1 - gw app - - - into a linked file", b"<13>1 - gw app - - - after"]
    assert "dropped" not in process.log() and "are lost" not in process.log()


def test_a_linked_day_file_of_a_past_day_is_neither_compressed_nor_read(tmp_path, outside):
    root = tmp_path / "archive"
    (root / "gw").mkdir(parents=True)
    (root / "gw" / "2020-01-01.log").symlink_to(outside / "target")
    (root / "gw" / "2020-01-02.log").write_bytes(line(b"kept", "2020-01-02"))
    # A .log.gz planted as a link: the day's .log stays as it is.
    (root / "gw" / "2020-01-03.log").write_bytes(line(b"kept too", "2020-01-03"))
    (root / "gw" / "2020-01-03.log.gz").symlink_to(outside / "target")
    before = snapshot(outside)
    process = CollectorProcess(tmp_path)  # compresses closed days at start-up
    try:
        process.wait_for("syslog_collector_archive_files_compressed_total", 1)
        assert wait_until(lambda: "archive maintenance: compressing" in process.log())
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()
    assert snapshot(outside) == before
    assert sorted(os.listdir(root / "gw")) == [
        "2020-01-01.log", "2020-01-02.log.gz", "2020-01-03.log", "2020-01-03.log.gz"]
    assert os.readlink(root / "gw" / "2020-01-01.log") == str(outside / "target")
    assert os.readlink(root / "gw" / "2020-01-03.log.gz") == str(outside / "target")
    result = subprocess.run([syslog_collector(), "archive", "cat", "gw",
                             "--archive-dir", str(root), "--format", "octet"],
                            capture_output=True, env=collector_environment(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"4 kept8 kept too"


# The same, in-process.


def make_archive(tmp_path, registry, clock):
    return FileArchive(tmp_path / "archive", UTC, 1.0, CollectorMetrics(registry, 100), clock)


def value(registry, name):
    return registry.get_sample_value(name)


def test_refusals_are_counted_at_every_flush_and_logged_at_a_limited_rate(tmp_path, outside):
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock = Clock()
        clock.advance(NOON)
        registry = CollectorRegistry()
        archive = make_archive(tmp_path, registry, clock)
        (tmp_path / "archive").mkdir()
        (tmp_path / "archive" / "gw").symlink_to(outside)
        archive.startService()
        for n in range(12):
            archive.append(clock.seconds(), [("gw", SENDER, [b"line %d" % n])])
            clock.advance(1)
        assert value(registry, "syslog_collector_archive_refused_paths_total") == 12
        assert value(registry, "syslog_collector_archive_write_errors_total") == 12
        refusals = [e for e in events if "refused to write" in e.get("log_format", "")]
        assert [e["held_back"] for e in refusals] == [0, 9]
        (tmp_path / "archive" / "gw").unlink()
        clock.advance(1)
        archive.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert read(tmp_path / "archive", "gw") == [b"line %d" % n for n in range(12)]
    assert (outside / "2026-11-25.log").read_bytes() == line(b"outside")


@pytest.mark.parametrize("plant", ["dangling host link", "host link to a file", "file for a host",
                                   "dangling day link", "fifo for a day", "directory for a day"])
def test_what_is_not_a_plain_directory_and_file_is_refused(tmp_path, plant):
    root = tmp_path / "archive"
    (root / "gw").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    day_file = root / "gw" / "2026-11-25.log"
    if plant == "dangling host link":
        os.rmdir(root / "gw")
        (root / "gw").symlink_to(elsewhere)
    elif plant == "host link to a file":
        os.rmdir(root / "gw")
        elsewhere.write_bytes(b"")
        (root / "gw").symlink_to(elsewhere)
    elif plant == "file for a host":
        os.rmdir(root / "gw")
        (root / "gw").write_bytes(b"")
    elif plant == "dangling day link":
        day_file.symlink_to(elsewhere)
    elif plant == "fifo for a day":
        os.mkfifo(day_file)
    else:
        day_file.mkdir()
    files = OpenFiles(root, 10, fsync=False)
    key = ("gw", "2026-11-25")
    report = files.write({key: [line(b"kept")]}, key[1], close_all=True)
    [(failed_key, data, error)] = report.failed
    assert (failed_key, data) == (key, line(b"kept"))
    assert isinstance(error, RefusedPath)
    assert not os.path.lexists(elsewhere) or elsewhere.read_bytes() == b""


def test_the_root_itself_may_be_a_link(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "archive").symlink_to(real)
    clock = Clock()
    clock.advance(NOON)
    registry = CollectorRegistry()
    archive = make_archive(tmp_path, registry, clock)
    archive.startService()
    archive.append(clock.seconds(), [("gw", SENDER, [b"through the root's link"])])
    clock.advance(1)
    archive.stopService()
    assert value(registry, "syslog_collector_archive_refused_paths_total") == 0
    assert [parse_line(raw).message for raw in (real / "gw" / "2026-11-25.log").read_bytes().splitlines()] == [
        b"through the root's link"]


# Compression, retention and reading.


def test_compress_refuses_a_linked_log_or_gz(tmp_path, outside):
    directory = tmp_path / "archive" / "gw"
    directory.mkdir(parents=True)
    (directory / "2026-11-20.log").symlink_to(outside / "target")
    with pytest.raises(RefusedPath):
        compress(directory / "2026-11-20.log")
    (directory / "2026-11-21.log").write_bytes(line(b"day 21"))
    (directory / "2026-11-21.log.gz").symlink_to(outside / "target")
    with pytest.raises(RefusedPath):
        compress(directory / "2026-11-21.log")
    assert sorted(os.listdir(directory)) == ["2026-11-20.log", "2026-11-21.log", "2026-11-21.log.gz"]
    assert (outside / "target").read_bytes() == line(b"target")


def test_a_linked_partial_is_not_written_through(tmp_path, outside):
    # A compression cut short leaves a .compressing; a link planted as its
    # .partial would be truncated and written by the next try if followed.
    directory = tmp_path / "archive" / "gw"
    directory.mkdir(parents=True)
    (directory / "2026-11-20.log.compressing").write_bytes(line(b"day 20", "2026-11-20"))
    (directory / "2026-11-20.log.gz.partial").symlink_to(outside / "target")
    report = maintain(tmp_path / "archive", "2026-11-25", compress_closed=True, retention_days=0,
                      max_host_bytes=0)
    assert report.errors == []
    assert (outside / "target").read_bytes() == line(b"target")
    assert sorted(os.listdir(directory)) == ["2026-11-20.log.gz"]
    assert read(tmp_path / "archive", "gw") == [b"day 20"]


def test_retention_removes_no_link_nor_what_it_points_to(tmp_path, outside):
    root = tmp_path / "archive"
    (root / "gw").mkdir(parents=True)
    (root / "gw" / "2020-01-01.log").symlink_to(outside / "target")
    (root / "gw" / "2020-01-02.log.gz").symlink_to(outside / "target")
    (root / "gw" / "2020-01-03.log").write_bytes(line(b"old", "2020-01-03"))
    (root / "old").symlink_to(outside)
    before = snapshot(outside)
    report = maintain(root, "2026-11-25", compress_closed=True, retention_days=1, max_host_bytes=1)
    assert report.errors == []
    assert [p.name for p in report.deleted_by_age] == ["2020-01-03.log.gz"]
    assert sorted(os.listdir(root / "gw")) == ["2020-01-01.log", "2020-01-02.log.gz"]
    assert snapshot(outside) == before


def test_readers_leave_links_out(tmp_path, outside):
    root = tmp_path / "archive"
    (root / "gw").mkdir(parents=True)
    (root / "gw" / "2026-11-24.log").symlink_to(outside / "target")
    (root / "gw" / "2026-11-25.log").write_bytes(line(b"inside"))
    (root / "gw" / "2026-11-25.log.gz").symlink_to(outside / "target")
    (root / "linked").symlink_to(outside)
    assert [f.path.name for f in day_files(root)] == ["2026-11-25.log"]
    assert day_files(root, "linked") == []
    assert read(root, "gw") == [b"inside"]


def test_a_hard_link_where_a_day_file_should_be_is_never_written(tmp_path):
    root = tmp_path / "archive"
    (root / "gw").mkdir(parents=True)
    script = tmp_path / "job.sh"
    script.write_bytes(b"echo hello\n")
    os.link(script, root / "gw" / "2026-11-25.log")
    files = OpenFiles(root, 10, fsync=False)
    key = ("gw", "2026-11-25")
    report = files.write({key: [line(b"x; echo pwned #")]}, key[1], close_all=True)
    [(_, _, error)] = report.failed
    assert isinstance(error, RefusedPath) and "hard link" in str(error)
    assert script.read_bytes() == b"echo hello\n"
