import gzip
import json
import os
import pty
import re
import subprocess
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock

import collector.cli
from collector.archive.files import compress
from collector.archive.line import TORN_MARKER
from collector.archive.writer import FileArchive
from collector.cli import main
from collector.metrics import CollectorMetrics
from collector.parsing.framing import StreamDecoder
from collector_process import collector_environment, syslog_collector

DAY1 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
SENDER = b"192.0.2.1:514"
AUTH = b"<116>1 - gw security - - - Authentication: Admin: Client: 192.0.2.9: wrong password"
ENGINE = b"<116>1 - gw security - - - Engine: Startup."
ODD = b"<116>1 - gw security - - - two\nlines and \xff and \\"


@pytest.fixture
def root(tmp_path):
    """gw: Nov 24 (compressed) and Nov 25 (open .log); fw2: Nov 25."""
    clock = Clock()
    clock.advance(DAY1)
    archive = FileArchive(tmp_path / "archive", UTC, 1.0,
                          CollectorMetrics(CollectorRegistry(), 100), clock)
    archive.startService()
    archive.append(clock.seconds(), [("gw", SENDER, [AUTH])])
    archive.append(clock.seconds() + 1, [("gw", SENDER, [ENGINE])])
    clock.advance(86400)
    archive.append(clock.seconds(), [("gw", SENDER, [ODD])])
    archive.append(clock.seconds(), [("fw2", SENDER, [ENGINE])])
    clock.advance(1)
    archive.stopService()
    return tmp_path / "archive"


def run(capsysbinary, *args):
    status = main(list(args))
    out, err = capsysbinary.readouterr()
    return status, out, err.decode()


def test_hosts(root, capsysbinary):
    status, out, _ = run(capsysbinary, "archive", "hosts", "--archive-dir", str(root))
    assert status == 0
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["HOST", "FIRST", "DAY"]
    assert lines[1].split()[:4] == ["fw2", "2026-11-25", "2026-11-25", "1"]
    assert lines[2].split()[:4] == ["gw", "2026-11-24", "2026-11-25", "2"]


def test_cat_text_reads_gz_and_log_in_order(root, capsysbinary):
    assert sorted(p.name for p in (root / "gw").iterdir()) == ["2026-11-24.log.gz", "2026-11-25.log"]
    status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root))
    assert status == 0
    assert out.splitlines() == [AUTH, ENGINE, b"<116>1 - gw security - - - two\\nlines and \\xff and \\\\"]


def test_cat_octet_replays_the_exact_bytes(root, capsysbinary):
    status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root), "--format", "octet")
    assert status == 0
    assert StreamDecoder().feed(out) == [AUTH, ENGINE, ODD]


def test_cat_json_with_type_filter(root, capsysbinary):
    status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root),
                         "--format", "json", "--type", "auth_failure")
    assert status == 0
    (line,) = out.splitlines()
    record = json.loads(line)
    assert record["type"] == "auth_failure"
    assert record["host"] == "gw" and record["sender"] == "192.0.2.1:514"
    assert record["received_at"] == "2026-11-24T10:00:00.000000Z"
    assert record["record"]["service"] == "admin"
    assert record["record"]["client"] == "192.0.2.9"
    assert record["record"]["reason_class"] == "wrong_password"
    assert record["syslog"]["hostname"] == "gw"


def test_cat_time_window(root, capsysbinary):
    status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root),
                         "--since", "2026-11-24T10:00:00.5Z", "--until", "2026-11-25")
    assert (status, out.splitlines()) == (0, [ENGINE])


def test_archive_root_from_config(root, tmp_path, capsysbinary):
    config = tmp_path / "c.toml"
    config.write_text(f'[archive]\ndir = "{root}"\n')
    status, out, _ = run(capsysbinary, "archive", "cat", "fw2", "--config", str(config))
    assert (status, out.splitlines()) == (0, [ENGINE])


def test_unknown_host(root, capsysbinary):
    status, _, err = run(capsysbinary, "archive", "cat", "nope", "--archive-dir", str(root))
    assert status == 1
    assert "no archive for host 'nope'" in err and "fw2, gw" in err


def test_bad_time(root, capsysbinary):
    with pytest.raises(SystemExit) as exit_status:
        main(["archive", "cat", "gw", "--archive-dir", str(root), "--since", "last tuesday"])
    assert exit_status.value.code == 2
    assert "bad time 'last tuesday'" in capsysbinary.readouterr().err.decode()


def test_corrupt_gz_prints_what_is_readable_and_reports(root, capsysbinary):
    gz = root / "gw" / "2026-11-24.log.gz"
    data = gz.read_bytes()
    whole = gzip.decompress(data)
    # A gzip stream cut short: the first line is still recoverable.
    gz.write_bytes(gzip.compress(whole + b"x" * 100000, compresslevel=0)[:len(whole) + 200])
    status, out, err = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root))
    assert status == 1
    assert out.splitlines()[0] == AUTH
    assert out.splitlines()[-1].startswith(b"<116>1 - gw security - - - two")
    assert "damaged archive" in err and "2026-11-24.log.gz" in err


def test_torn_line_is_marked_on_reopen_and_skipped_by_readers(root, capsysbinary):
    log = root / "gw" / "2026-11-25.log"
    with open(log, "ab") as file:
        file.write(b"2026-11-25T10:00:02.000000Z 192.0.2.1:514 <116>1 - gw security - - - cut sh")
    clock = Clock()
    clock.advance(DAY1 + 86400 + 5)
    archive = FileArchive(root, UTC, 1.0, CollectorMetrics(CollectorRegistry(), 100), clock)
    archive.startService()
    archive.append(clock.seconds(), [("gw", SENDER, [ENGINE])])
    archive.stopService()
    assert log.read_bytes().splitlines()[-2] == TORN_MARKER
    status, out, err = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root),
                           "--since", "2026-11-25")
    assert status == 1
    assert out.splitlines()[-1] == ENGINE
    assert b"cut sh" not in out
    assert "cut short by a crash" in err


def test_cat_reads_through_files_compressed_or_removed_after_listing(root, capsysbinary, monkeypatch):
    # Around midnight the collector compresses the day just closed, and
    # retention removes the oldest, between the listing and the reading.
    (root / "gw" / "2026-11-23.log").write_bytes(b"2026-11-23T10:00:00.000000Z 192.0.2.1:514 " + ENGINE + b"\n")
    listing = collector.cli.files_between

    def files_between(*args):
        files = listing(*args)
        assert [f.path.name for f in files] == ["2026-11-23.log", "2026-11-24.log.gz", "2026-11-25.log"]
        (root / "gw" / "2026-11-23.log").unlink()
        compress(root / "gw" / "2026-11-25.log")
        return files

    monkeypatch.setattr(collector.cli, "files_between", files_between)
    status, out, err = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root), "--format", "octet")
    assert StreamDecoder().feed(out) == [AUTH, ENGINE, ODD]
    assert status == 1
    assert err.splitlines() == [f"damaged archive {root / 'gw' / '2026-11-23.log'}: "
                                "removed before it could be read; its lines are not shown"]
    assert sorted(p.name for p in (root / "gw").iterdir()) == ["2026-11-24.log.gz", "2026-11-25.log.gz"]


def test_progress_bar_on_a_terminal(root, tmp_path):
    # Enough data that reading takes a few progress updates.
    big = root / "big"
    big.mkdir()
    line = b"2026-11-25T10:00:00.000000Z 192.0.2.1:514 " + b"x" * 200 + b"\n"
    (big / "2026-11-25.log").write_bytes(line * 60000)
    controller, terminal = pty.openpty()
    env = collector_environment()
    result = subprocess.run([syslog_collector(), "archive", "cat", "big",
                             "--archive-dir", str(root), "--format", "octet"],
                            stdout=subprocess.DEVNULL, stderr=terminal, env=env, timeout=60)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert result.returncode == 0
    assert b"%" in shown and b"MB" in shown


@pytest.mark.parametrize("host", ["../outside", "/etc", "a/b", ".", "..", "-rf", "GW", ""])
def test_cat_takes_only_a_host_tag(root, capsysbinary, host):
    with pytest.raises(SystemExit) as exit_status:
        main(["archive", "cat", "--archive-dir", str(root), "--", host])
    assert exit_status.value.code == 2
    assert f"not a host tag: {host!r}" in capsysbinary.readouterr().err.decode()


def test_the_console_script_reads_nothing_outside_the_root(root, tmp_path):
    # Archive-like files outside the root, where "../outside" and an absolute
    # path would lead.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "2026-11-25.log").write_bytes(b"2026-11-25T10:00:00.000000Z 192.0.2.1:514 secret\n")
    for host in ("../outside", str(outside)):
        result = subprocess.run([syslog_collector(), "archive", "cat", "--archive-dir",
                                 str(root), "--", host], capture_output=True, env=collector_environment(),
                                timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stdout == b""
        assert b"not a host tag" in result.stderr


def test_cat_does_not_follow_a_host_directory_that_is_a_link(root, tmp_path, capsysbinary):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "2026-11-25.log").write_bytes(b"2026-11-25T10:00:00.000000Z 192.0.2.1:514 secret\n")
    (root / "linked").symlink_to(outside)
    status, out, err = run(capsysbinary, "archive", "cat", "linked", "--archive-dir", str(root))
    assert (status, out) == (1, b"")
    assert "symbolic link" in err
    status, out, _ = run(capsysbinary, "archive", "hosts", "--archive-dir", str(root))
    assert b"linked" not in out


HOSTILE = b"<116>1 - gw security - - - \x1b]0;pwned\x07\x1b[2J" + "\u009b31m".encode() + b"\x7f\tend"


def test_cat_prints_nothing_a_terminal_acts_on(tmp_path, capsysbinary):
    clock = Clock()
    clock.advance(DAY1)
    archive = FileArchive(tmp_path / "archive", UTC, 1.0, CollectorMetrics(CollectorRegistry(), 100), clock)
    archive.startService()
    archive.append(clock.seconds(), [("gw", SENDER, [HOSTILE])])
    archive.stopService()
    root = tmp_path / "archive"
    active = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
    for format in ("text", "json"):
        status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root), "--format", format)
        assert status == 0 and out.count(b"\n") == 1
        assert active.search(out) is None, out
    status, out, _ = run(capsysbinary, "archive", "cat", "gw", "--archive-dir", str(root), "--format", "octet")
    assert StreamDecoder().feed(out) == [HOSTILE]


def test_hosts_shows_odd_directory_names_escaped(root, capsysbinary):
    (root / "odd\x1b[2J").mkdir()
    (root / "odd\x1b[2J" / "2026-11-25.log").write_bytes(b"2026-11-25T10:00:00.000000Z 192.0.2.1:514 x\n")
    status, out, _ = run(capsysbinary, "archive", "hosts", "--archive-dir", str(root))
    assert status == 0
    assert b"\x1b" not in out and b"odd\\x1b[2J" in out
