"""Archive behaviour of a real twistd process: reload on SIGHUP, crash loss
bounded by the flush interval, and host names that try to escape the root."""

import os
import signal
import time
from datetime import UTC, datetime

from collector.archive.line import parse_line
from collector.hosts import sanitize_host
from collector_process import CollectorProcess, open_files, wait_until


def today():
    return datetime.now(UTC).strftime("%Y-%m-%d")


def test_sighup_reloads_the_registry_and_reopens_files_keeping_connections(tmp_path):
    config = tmp_path / "collector.toml"
    config.write_text("[archive]\nflush_interval_seconds = 0.2\n")
    process = CollectorProcess(tmp_path, config=str(config))
    try:
        with process.connect_tcp() as sock:
            sock.sendall(b"<13>1 - claimed app - - - before reload\n")
            process.wait_for("syslog_collector_records_total", 1, host="claimed", type="unknown")

            config.write_text(config.read_text()
                              + '[[firewall]]\nname = "hq"\naddresses = ["127.0.0.0/8"]\n')
            process.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: "reloaded 1 firewall(s)" in process.log()), process.log()
            sock.sendall(b"<13>1 - claimed app - - - after reload\n")
            process.wait_for("syslog_collector_records_total", 1, host="hq", type="unknown")
            assert process.sample("syslog_collector_hostname_mismatches_total", host="hq") == 1.0

            hq_file = process.archive / "hq" / f"{today()}.log"
            assert wait_until(hq_file.exists)
            moved = hq_file.with_name("moved-away")
            os.rename(hq_file, moved)
            process.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: process.log().count("reloaded 1 firewall(s)") == 2)
            # Once it says so, the moved file is closed: a tool may compress it.
            assert wait_until(lambda: process.log().count("reopened the archive files") == 2)
            assert str(moved) not in open_files(process.process.pid)
            sock.sendall(b"<13>1 - hq app - - - after reopen\n")
            assert wait_until(hq_file.exists)
            assert process.sample("syslog_collector_tcp_connections", transport="tcp") == 1.0

        assert process.terminate() in (0, -signal.SIGTERM)
        assert [parse_line(line).message for line in moved.read_bytes().splitlines()] == [
            b"<13>1 - claimed app - - - after reload"]
        assert [parse_line(line).message for line in hq_file.read_bytes().splitlines()] == [
            b"<13>1 - hq app - - - after reopen"]
    finally:
        process.kill()


def test_sighup_with_a_broken_config_keeps_the_registry(tmp_path):
    config = tmp_path / "collector.toml"
    config.write_text('[[firewall]]\nname = "hq"\naddresses = ["127.0.0.0/8"]\n')
    process = CollectorProcess(tmp_path, config=str(config))
    try:
        config.write_text('[[firewall]]\nname = "hq"\naddresses = ["127.0.0.0/33"]\n')
        process.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in process.log()), process.log()
        assert "firewall[0].addresses[0]" in process.log()
        process.send_udp([b"<13>1 - other app - - - still hq"])
        process.wait_for("syslog_collector_records_total", 1, host="hq", type="unknown")
    finally:
        process.kill()


def test_kill_9_loses_at_most_one_flush_interval(tmp_path):
    flush_interval = 0.5
    config = tmp_path / "collector.toml"
    config.write_text(f"[archive]\nflush_interval_seconds = {flush_interval}\n")
    process = CollectorProcess(tmp_path, config=str(config))
    sent_at = []
    try:
        with process.connect_tcp() as sock:
            start = time.monotonic()
            seq = 0
            while time.monotonic() - start < 2.0:
                batch = b"".join(b"<13>1 - crash app - - - seq=%d\n" % (seq + i) for i in range(20))
                sock.sendall(batch)
                now = time.monotonic()
                sent_at += [now] * 20
                seq += 20
                time.sleep(0.01)
            process.wait_for("syslog_collector_received_messages_total", seq, host="crash", transport="tcp")
            time.sleep(0.2)
            # More lines right before the kill: these may be lost, no more.
            sock.sendall(b"".join(b"<13>1 - crash app - - - seq=%d\n" % (seq + i) for i in range(20)))
            sent_at += [time.monotonic()] * 20
            killed_at = time.monotonic()
            process.process.send_signal(signal.SIGKILL)
            process.process.wait(10)
    finally:
        process.kill()

    archived = []
    for path in sorted((process.archive / "crash").glob("*.log")):
        data = path.read_bytes()
        assert data.endswith(b"\n"), "a torn last line"
        archived += [parse_line(line).message for line in data.splitlines()]
    seqs = [int(m.rsplit(b"=", 1)[1]) for m in archived]
    assert seqs == list(range(len(seqs))), "archive is not a gap-free prefix of what was sent"
    # Everything received more than one flush interval before the kill is on disk
    # (the collector had counted all lines up to `seq` well before the kill).
    must_have = sum(1 for t in sent_at if t < killed_at - flush_interval - 0.2)
    assert len(seqs) >= must_have, (len(seqs), must_have, len(sent_at))


CRAFTED = [
    "../../etc", "..", ".", "..%2f..%2fetc", "/etc/passwd", "%2e%2e", ".hidden",
    "a/../../b", "a\\..\\b", "\u212aelvin", "gw\u2215etc", "\u0440\u043e\u0443\u0442\u0435\u0440",
    "x" * 300, "~root", "$(reboot)",
]


def test_crafted_hostnames_never_escape_the_archive_root(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        messages = []
        for name in CRAFTED:
            messages.append(f"<13>1 - {name} app - - - Engine: Startup.".encode())
            messages.append(f"<13>Nov 25 10:00:00 {name} app: Engine: Startup.".encode())
        process.send_udp(messages)
        with process.connect_tcp() as sock:
            sock.sendall(b"".join(m + b"\n" for m in messages))
        process.wait_for("syslog_collector_header_parse_errors_total", 0)
        assert wait_until(lambda: sum(
            process.sample("syslog_collector_received_messages_total", host=h, transport=t) or 0
            for h in os.listdir(process.archive) for t in ("udp", "tcp")) >= 2 * len(messages))
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()

    root = process.archive.resolve()
    outside = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files
               if not os.path.realpath(os.path.join(d, f)).startswith(str(root) + os.sep)
               and f != "collector.log"]
    assert outside == []
    hosts = sorted(os.listdir(root))
    assert all(sanitize_host(h) == h for h in hosts), hosts
    assert all(os.path.isdir(root / h) for h in hosts)
    # No crafted name survived as a host; their messages are filed under the sender.
    assert "127.0.0.1" in hosts
