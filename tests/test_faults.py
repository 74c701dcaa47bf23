"""Faults against a real twistd process: shutdown under load, the archive
root removed while running."""

import shutil
import signal
import threading
import time

from collector_process import CollectorProcess

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
