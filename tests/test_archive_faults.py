"""Archive writes that a full disk or a file-size limit cuts short, for real:
a small tmpfs, and RLIMIT_FSIZE in a child process."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

from collector.archive.files import day_files
from collector.archive.line import TORN_MARKER
from collector.archive.reader import read_messages
from collector.archive.writer import FileArchive
from collector.metrics import CollectorMetrics
from collector_process import source_environment
from conftest import REQUIRE_ALL, require_binary

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()
SENDER = b"192.0.2.1:514"
MARKER_LINE = b"\n" + TORN_MARKER + b"\n"
PAGE = os.sysconf("SC_PAGE_SIZE")


class Disk:
    """A tmpfs of ``size`` bytes, filled but for ``room`` bytes by a file that ``make_room`` removes."""

    def __init__(self, path, size, room):
        self.path = path
        self.filler = path / "filler"
        self.filler.write_bytes(b"\0" * (size - room))

    def make_room(self):
        self.filler.unlink()


@pytest.fixture
def small_disk(tmp_path):
    mount = require_binary("mount")
    path = tmp_path / "disk"
    path.mkdir()
    size = 64 * PAGE
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs: {done.stderr.strip()}"
        if REQUIRE_ALL:
            pytest.fail(message + " (COLLECTOR_TESTS_REQUIRE_ALL=1)")
        pytest.skip(message)
    try:
        yield lambda room: Disk(path, size, room)
    finally:
        # Lazily: a failed test may leave the archive's files open.
        subprocess.run([require_binary("umount"), "--lazy", str(path)], check=True)


def make_archive(root, registry, clock):
    archive = FileArchive(root, UTC, 1.0, CollectorMetrics(registry, 1000), clock)
    archive.startService()
    return archive


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def lines(count):
    # Of different lengths, so that the disk fills in the middle of one.
    return [b"line %d %s" % (n, b"x" * (n % 7)) for n in range(count)]


def line_of(message):
    """The archive line of ``message``, received at NOON."""
    return b"2026-11-25T12:00:00.000000Z %s %s\n" % (SENDER, message)


def archived(root, host="gw"):
    damage = []
    messages = [m.message for m in read_messages(day_files(root, host),
                                                 on_damage=lambda path, problem: damage.append(problem))]
    return messages, damage


def test_a_write_the_full_disk_cuts_short_is_written_again_from_the_line_it_cut(small_disk):
    disk = small_disk(16 * PAGE)
    registry = CollectorRegistry()
    clock = Clock()
    clock.advance(NOON)
    root = disk.path / "archive"
    archive = make_archive(root, registry, clock)
    path = root / "gw" / "2026-11-25.log"
    sent = lines(2000)
    archive.append(clock.seconds(), [("gw", SENDER, sent)])
    clock.advance(1)
    assert value(registry, "syslog_collector_archive_write_errors_total") == 1
    torn = path.read_bytes()
    assert 0 < len(torn) <= 16 * PAGE and not torn.endswith(b"\n")
    written = torn.count(b"\n")
    assert 500 < written < 1500
    # Kept: the line the disk cut, whole, and those after it.
    kept = value(registry, "syslog_collector_archive_backlog_bytes")
    assert kept == sum(len(line_of(message)) for message in sent[written:])
    assert line_of(sent[written]).startswith(torn[torn.rindex(b"\n") + 1:])
    clock.advance(1)  # still full: nothing more, nothing twice
    assert path.read_bytes() == torn
    assert value(registry, "syslog_collector_archive_write_errors_total") == 2
    assert value(registry, "syslog_collector_archive_backlog_bytes") == kept
    disk.make_room()
    clock.advance(1)
    archive.stopService()
    data = path.read_bytes()
    assert data.startswith(torn + MARKER_LINE) and len(data) == len(torn) + len(MARKER_LINE) + kept
    assert data.count(TORN_MARKER) == 1
    assert value(registry, "syslog_collector_archive_written_bytes_total") == len(data) - len(MARKER_LINE)
    messages, damage = archived(root)
    assert messages == sent
    assert len(damage) == 1 and "cut short" in damage[0]


def test_another_worker_writing_after_the_torn_piece_marks_it_first(small_disk):
    disk = small_disk(16 * PAGE)
    clock = Clock()
    clock.advance(NOON)
    root = disk.path / "archive"
    this = make_archive(root, CollectorRegistry(), clock)
    other = make_archive(root, CollectorRegistry(), clock)
    path = root / "gw" / "2026-11-25.log"
    other.append(clock.seconds(), [("gw", SENDER, [b"other 0"])])
    other.flush()  # its file stays open
    sent = lines(2000)
    this.append(clock.seconds(), [("gw", SENDER, sent)])
    this.flush()
    assert not path.read_bytes().endswith(b"\n")
    disk.make_room()
    other.append(clock.seconds(), [("gw", SENDER, [b"other 1"])])
    other.flush()
    this.flush()
    other.stopService()
    this.stopService()
    data = path.read_bytes()
    assert data.count(TORN_MARKER) == 1
    assert MARKER_LINE + line_of(b"other 1") in data
    messages, damage = archived(root)
    cut = messages.index(b"other 1") - 1
    assert messages == [b"other 0", *sent[:cut], b"other 1", *sent[cut:]]
    assert len(damage) == 1


def test_lines_the_full_disk_still_refuses_at_stop_are_counted_as_dropped(small_disk, log_events):
    disk = small_disk(8 * PAGE)
    registry = CollectorRegistry()
    clock = Clock()
    clock.advance(NOON)
    root = disk.path / "archive"
    archive = make_archive(root, registry, clock)
    sent = lines(2000)
    archive.append(clock.seconds(), [("gw", SENDER, sent)])
    clock.advance(1)
    stopped = []
    archive.stopService().addCallback(stopped.append)
    assert stopped == [None]
    messages, _ = archived(root)
    lost = len(sent) - len(messages)
    assert lost > 1000
    assert value(registry, "syslog_collector_dropped_messages_total", reason="archive_unwritable_at_stop") == lost
    [event] = log_events("could not be written")
    assert event["count"] == lost


# Run in a child: the limit holds for every file the process writes.
LIMITED_WRITER = """
import json, os, resource, sys
from pathlib import Path
from collector.archive.writer import OpenFiles

root, limit = Path(sys.argv[1]), int(sys.argv[2])
key = ("gw", "2026-11-25")
lines = [b"2026-11-25T12:00:00.000000Z 192.0.2.1:514 line %d\\n" % n for n in range(100)]
files = OpenFiles(root, 10, fsync=False)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
report = files.write({key: lines}, key[1], close_all=False)
size = os.path.getsize(root / "gw" / "2026-11-25.log")
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
again = files.write({key: [data for _, data, _ in report.failed]}, key[1], close_all=True)
print(json.dumps({"errors": [str(e) for _, _, e in report.failed], "size": size,
                  "torn": len(again.torn), "failed_again": len(again.failed)}))
"""


def run_limited(root, limit):
    done = subprocess.run([sys.executable, "-c", LIMITED_WRITER, str(root), str(limit)],
                          capture_output=True, text=True, env=source_environment(), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_write_the_file_size_limit_cuts_short_is_written_again_from_the_line_it_cut(tmp_path):
    result = run_limited(tmp_path, 2000)
    assert "File too large" in result["errors"][0]
    assert result["size"] == 2000
    assert result["torn"] == 1 and result["failed_again"] == 0
    messages, damage = archived(tmp_path)
    assert messages == [b"line %d" % n for n in range(100)]
    assert len(damage) == 1


def test_a_torn_marker_the_limit_cuts_short_is_taken_back(tmp_path):
    path = tmp_path / "gw" / "2026-11-25.log"
    path.parent.mkdir()
    torn = b"2026-11-25T12:00:00.000000Z 192.0.2.1:514 before\n2026-11-25T12:00:00.000000Z 192.0"
    path.write_bytes(torn)
    # Room for the marker's newline and a few of its bytes: a newline alone
    # after the torn piece would pass it for a whole line.
    result = run_limited(tmp_path, len(torn) + 5)
    assert "File too large" in result["errors"][0]
    assert result["size"] == len(torn)
    assert result["torn"] == 1 and result["failed_again"] == 0
    assert path.read_bytes().startswith(torn + MARKER_LINE)
    messages, damage = archived(tmp_path)
    assert messages == [b"before", *(b"line %d" % n for n in range(100))]
    assert len(damage) == 1
