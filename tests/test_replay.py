"""An archive replayed into a second collector gives the same archive back."""

import random
import signal
import subprocess

from collector_process import CollectorProcess, collector_environment, syslog_collector, wait_until


def messages() -> list[bytes]:
    rng = random.Random(5)
    sent = []
    for index in range(200):
        host = b"fw-%d" % (index % 4)
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        sent.append(b"<13>1 2026-11-25T10:00:00Z " + host + b" app - - - Engine: Startup. " + body)
    return sent


def test_an_archive_replayed_into_another_collector_comes_back_the_same(tmp_path):
    (tmp_path / "first").mkdir()
    first = CollectorProcess(tmp_path / "first")
    try:
        sent = messages()
        with first.connect_tcp() as sock:
            sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in sent))
        first.wait_for("syslog_collector_received_messages_total", 50, host="fw-3", transport="tcp")
        assert first.terminate() in (0, -signal.SIGTERM)
    finally:
        first.kill()
    hosts = sorted(path.name for path in first.archive.iterdir())
    assert hosts == ["fw-0", "fw-1", "fw-2", "fw-3"]

    (tmp_path / "second").mkdir()
    second = CollectorProcess(tmp_path / "second")
    try:
        for host in hosts:
            replay = subprocess.run([syslog_collector(), "archive", "cat", host,
                                     "--archive-dir", str(first.archive), "--format", "octet"],
                                    capture_output=True, env=collector_environment(), timeout=60, check=True)
            with second.connect_tcp() as sock:
                sock.sendall(replay.stdout)
        assert wait_until(lambda: all(len(second.archived(h)) == 50 for h in hosts))
        for host in hosts:
            assert second.archived(host) == first.archived(host)
        assert sorted(m for h in hosts for m in first.archived(h)) == sorted(sent)
    finally:
        second.kill()
