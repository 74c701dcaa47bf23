"""Faults against a real twistd process: shutdown under load, the archive
root removed while running, a file-size limit cutting a write short."""

import resource
import shutil
import signal
import threading
import time

from collector.archive.files import day_files
from collector.archive.line import TORN_MARKER
from collector.archive.reader import read_messages
from collector_process import CollectorProcess, wait_until

TOTAL = 100_000


def test_sigterm_under_sustained_load_archives_everything_received(tmp_path):
    config = tmp_path / "collector.toml"
    # Long enough for the collector to read what the sender had written.
    config.write_text("[listen]\ndrain_seconds = 60.0\n")
    process = CollectorProcess(tmp_path, config=str(config))
    sent = 0
    errors = []
    started = threading.Event()

    def send():
        nonlocal sent
        try:
            with process.connect_tcp() as sock:
                sock.settimeout(60)
                for start in range(0, TOTAL, 500):
                    sock.sendall(b"".join(b"<13>1 - loaded app - - - Engine: Startup. seq=%d\n" % seq
                                          for seq in range(start, start + 500)))
                    sent = start + 500
                    if sent >= 20_000:
                        started.set()
        except OSError as e:
            errors.append(e)
        finally:
            started.set()

    try:
        sender = threading.Thread(target=send)
        sender.start()
        assert started.wait(60)
        process.process.send_signal(signal.SIGTERM)  # mid-stream
        sender.join(120)
        status = process.process.wait(120)
    finally:
        process.kill()
    assert status in (0, -signal.SIGTERM), process.log()
    archived = process.archived("loaded")
    seqs = [int(m.rsplit(b"=", 1)[1]) for m in archived]
    # Reconcile: the archive holds exactly what was sent, in order, once.
    assert not errors, errors
    assert sent == TOTAL
    assert seqs == list(range(TOTAL))


def test_archive_root_removed_while_running_is_recreated(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        process.send_udp([b"<13>1 - gw app - - - before"])
        process.wait_for("syslog_collector_archive_written_bytes_total", 1)
        shutil.rmtree(process.archive)
        process.send_udp([b"<13>1 - gw app - - - after"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (process.archive / "gw").exists():
            time.sleep(0.1)
        time.sleep(1.5)
        assert process.archived("gw") == [b"<13>1 - gw app - - - after"]
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()


def test_a_write_the_file_size_limit_cuts_short_is_archived_once_when_the_limit_goes(tmp_path):
    limit = 64 * 1024  # about half of what is sent
    sent = [b"<13>1 - gw app - - - line %d" % n for n in range(2000)]
    process = CollectorProcess(tmp_path, preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY)))
    damage = []

    def archived():
        return [m.message for m in read_messages(day_files(process.archive, "gw"),
                                                 on_damage=lambda path, problem: damage.append(problem))]

    try:
        with process.connect_tcp() as sock:
            sock.sendall(b"".join(message + b"\n" for message in sent))
        process.wait_for("syslog_collector_archive_write_errors_total", 2)  # retried, in vain
        [path] = (process.archive / "gw").glob("*.log")
        assert path.stat().st_size == limit
        resource.prlimit(process.process.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert wait_until(lambda: len(archived()) >= len(sent)), process.log()
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()
    damage.clear()
    assert archived() == sent
    assert len(damage) == 1 and path.read_bytes().count(TORN_MARKER) == 1
