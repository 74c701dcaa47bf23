"""A real ``twistd -n syslog-collector`` process, real sockets, the whole path."""

import resource
import signal
import socket
import threading
import time

import pytest

from collector_process import CollectorProcess, wait_until

# The examples of the vendor manual's "Security Log" section.
MANUAL_EXAMPLES = [
    b"[17/Jul/2008 11:46:38] Anti-Spoofing: Packet from LAN, proto:TCP, len:48, "
    b"ip/port:61.173.81.166:1864 -> 195.39.55.10:445, flags: SYN, seq:3819654104 ack:0, "
    b"win:16384, tcplen:0",
    b"[17/Jul/2008 11:55:14] FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, "
    b"command: PORT 10,11,12,13,14,15",
    b"[17/Jul/2008 11:56:27] FTP: Malicious server reply: client: 1.2.3.4, server: 5.6.7.8, "
    b"response: 227 Entering Passive Mode (10,11,12,13,14,15)",
    b"Authentication: WebAdmin SSL: Client: 192.168.1.34: wrong password",
    b"[17/Dec/2008 12:11:33] Engine: Startup.",
    b"[17/Dec/2008 12:22:43] Engine: Shutdown.",
]
TYPES = ["anti_spoofing", "ftp_bounce_attack", "ftp_malicious_reply", "auth_failure",
         "engine_startup", "engine_shutdown"]


def rfc5424(host: str, msg: bytes) -> bytes:
    return b"<116>1 2026-11-25T10:00:00+00:00 " + host.encode() + b" security - - - " + msg


@pytest.fixture
def collector(tmp_path):
    process = CollectorProcess(tmp_path)
    yield process
    process.kill()


def test_examples_over_udp_and_tcp_reach_archive_and_metrics(collector):
    udp_messages = [rfc5424("fw-udp", line) for line in MANUAL_EXAMPLES]
    tcp_messages = [rfc5424("fw-tcp", line) for line in MANUAL_EXAMPLES]
    collector.send_udp(udp_messages)
    with collector.connect_tcp() as sock:
        # Octet-counted and LF-framed on the same connection, as rsyslog accepts.
        half = len(tcp_messages) // 2
        sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in tcp_messages[:half]))
        sock.sendall(b"".join(m + b"\n" for m in tcp_messages[half:]))

    for host, transport in (("fw-udp", "udp"), ("fw-tcp", "tcp")):
        collector.wait_for("syslog_collector_received_messages_total", len(MANUAL_EXAMPLES),
                           host=host, transport=transport)
        for record_type in TYPES:
            assert collector.sample("syslog_collector_records_total",
                                    host=host, type=record_type) == 1.0
        for record_type in ("ips", "unknown"):
            assert collector.sample("syslog_collector_records_total",
                                    host=host, type=record_type) == 0.0

    # Lines reach the disk within a flush interval.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(collector.archived("fw-tcp")) < len(tcp_messages):
        time.sleep(0.1)
    assert collector.archived("fw-tcp") == tcp_messages
    assert sorted(collector.archived("fw-udp")) == sorted(udp_messages)
    assert collector.terminate() in (0, -signal.SIGTERM)
    # The tests run the package as installed, with a C compiler: compiled.
    assert "the per-message path runs compiled (mypyc)" in collector.log()


def test_sigterm_during_a_tcp_burst_keeps_every_line(collector):
    chunks, per_chunk = 100, 200
    sent = []
    errors = []
    first_chunk_sent = threading.Event()

    def send_burst():
        try:
            with collector.connect_tcp() as sock:
                for chunk in range(chunks):
                    lines = [b"<13>1 - fw-burst app - - - Engine: Startup. seq=%d" % (chunk * per_chunk + i)
                             for i in range(per_chunk)]
                    sock.sendall(b"".join(line + b"\n" for line in lines))
                    sent.extend(lines)
                    first_chunk_sent.set()
                    time.sleep(0.005)
        except OSError as e:
            errors.append(e)
            first_chunk_sent.set()

    sender = threading.Thread(target=send_burst)
    sender.start()
    assert first_chunk_sent.wait(10)
    collector.process.send_signal(signal.SIGTERM)
    sender.join(30)
    status = collector.process.wait(30)

    assert status in (0, -signal.SIGTERM), collector.log()
    assert not errors, "the collector closed the connection before the burst ended"
    assert len(sent) == chunks * per_chunk
    archived = collector.archived("fw-burst")
    assert len(archived) == len(set(archived)), "duplicated lines"
    assert archived == sent
    assert "Traceback" not in collector.log()


def test_ipv6_listeners(tmp_path):
    process = CollectorProcess(tmp_path, "--udp", "[::1]:0", "--tcp", "[::1]:0")
    try:
        assert "listening udp on ::1 port" in process.log()
        message = b"<116>1 - fw-v6 security - - - Engine: Startup."
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, ("::1", process.ports["udp"]))
        with socket.create_connection(("::1", process.ports["tcp"]), timeout=10) as sock:
            sock.sendall(message + b"\n")
        process.wait_for("syslog_collector_records_total", 2, host="fw-v6", type="engine_startup")
        assert process.terminate() in (0, -signal.SIGTERM)
        lines = (tmp_path / "archive" / "fw-v6").glob("*.log")
        senders = {line.split(b" ")[1].rsplit(b":", 1)[0] for path in lines
                   for line in path.read_bytes().splitlines()}
        assert senders == {b"[::1]"}
    finally:
        process.kill()


def test_udp_buffer_and_kernel_drops_are_visible(tmp_path):
    config = tmp_path / "collector.toml"
    config.write_text("[listen]\nudp_receive_buffer_bytes = 4096\n")
    process = CollectorProcess(tmp_path, config=str(config))
    try:
        address = f"127.0.0.1:{process.ports['udp']}"
        assert process.sample("syslog_collector_udp_receive_buffer_requested_bytes", address=address) == 4096
        assert process.sample("syslog_collector_udp_receive_buffer_bytes", address=address) >= 4096
        # A stopped collector reads nothing: the small buffer overflows and the kernel drops.
        process.process.send_signal(signal.SIGSTOP)
        try:
            process.send_udp([b"<13>1 - flood app - - - " + b"x" * 500] * 200)
        finally:
            process.process.send_signal(signal.SIGCONT)

        def counted() -> tuple[float, float]:
            # A scrape within a second of the last one shows what that one rendered.
            drops = process.sample("syslog_collector_udp_receive_drops_total", address=address) or 0
            received = process.sample("syslog_collector_received_messages_total", host="flood", transport="udp")
            return drops, received or 0

        assert wait_until(lambda: counted()[0] > 0 and sum(counted()) == 200)
    finally:
        process.kill()


def test_sigint_stops_gracefully_too(collector):
    with collector.connect_tcp() as sock:
        sock.sendall(b"<13>1 - fw-int app - - - Engine: Shutdown.\n")
        collector.wait_for("syslog_collector_received_messages_total", 1, host="fw-int", transport="tcp")
    collector.process.send_signal(signal.SIGINT)
    assert collector.process.wait(30) in (0, -signal.SIGINT)
    assert collector.archived("fw-int") == [b"<13>1 - fw-int app - - - Engine: Shutdown."]


def open_files_limit(pid):
    """The soft and hard limits on open files of process ``pid``."""
    with open(f"/proc/{pid}/limits") as limits:
        row = next(line for line in limits if line.startswith("Max open files"))
    return tuple(resource.RLIM_INFINITY if value == "unlimited" else int(value) for value in row.split()[3:5])


@pytest.mark.parametrize("lower_hard", [False, True], ids=["hard-limit-enough", "hard-limit-too-low"])
def test_the_open_files_limit_is_raised_for_connections_and_archive_files(tmp_path, lower_hard):
    hard = 1000 if lower_hard else resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    config = tmp_path / "collector.toml"
    config.write_text("[limits]\nmax_connections = 3000\n[archive]\nmax_open_files = 2000\n")
    process = CollectorProcess(tmp_path, config=str(config),
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    try:
        needed = 3000 + 2000 + 64 + 128  # connections, archive files, HTTP, spare
        if not lower_hard:
            assert hard >= needed, "this machine's hard limit on open files is too low for the test"
            assert open_files_limit(process.process.pid) == (needed, hard)
            assert "hard limit on open files" not in process.log()
        else:
            # It runs all the same, as far as the hard limit allows, and says what to raise.
            assert open_files_limit(process.process.pid) == (hard, hard)
            assert (f"the hard limit on open files is {hard}, but limits.max_connections, "
                    f"limits.max_http_connections and archive.max_open_files need {needed}") in process.log()
        with socket.create_connection(("127.0.0.1", process.ports["tcp"]), timeout=10) as sock:
            sock.sendall(b"<13>1 - limits app - - - Engine: Startup.\n")
        process.wait_for("syslog_collector_received_messages_total", 1, host="limits", transport="tcp")
    finally:
        process.kill()
