"""Paths that could lose received messages, each made to happen in a real ``twistd``."""

import socket
import time

import pytest

from collector_process import CollectorProcess, wait_until


def rfc5424(host: str, msg: bytes) -> bytes:
    return b"<116>1 2026-11-25T10:00:00+00:00 " + host.encode() + b" security - - - " + msg


def octet_counted(messages: list[bytes]) -> bytes:
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


@pytest.fixture
def rate_limited(tmp_path):
    process = CollectorProcess.configured(tmp_path, "[limits]\nmax_messages_per_second_per_sender = 2000\n")
    yield process
    process.kill()


def test_a_tcp_sender_over_its_rate_waits_and_loses_nothing(rate_limited):
    process = rate_limited
    messages = [rfc5424("gw", b"Engine: Startup. %05d" % i) for i in range(7000)]
    started = time.monotonic()
    with process.connect_tcp() as first, process.connect_tcp() as second:
        first.sendall(octet_counted(messages[:3500]))
        second.sendall(octet_counted(messages[3500:]))
        process.wait_for("syslog_collector_received_messages_total", 7000, timeout=30, host="gw", transport="tcp")
    # A burst of 2,000 (and a read past it), then 2,000 a second: the sender waited.
    assert time.monotonic() - started >= 1.5
    assert wait_until(lambda: len(process.archived("gw")) == 7000)
    assert sorted(process.archived("gw")) == sorted(messages)
    assert process.sample("syslog_collector_throttled_seconds_total", host="127.0.0.1") >= 1.0
    assert process.sample("syslog_collector_rate_limited_messages_total", host="gw") == 0.0
    assert process.sample("syslog_collector_dropped_messages_total", reason="rate_limited") == 0.0
    assert "over its rate limit" in process.log()


def test_udp_over_the_rate_is_dropped_and_counted_as_rate_limited_only(rate_limited):
    process = rate_limited
    # Headerless datagrams: a dropped one must not count as a header error.
    messages = [b"Engine: Startup. %05d" % i for i in range(5000)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for message in messages:
            sock.sendto(message, ("127.0.0.1", process.ports["udp"]))
    host = "127.0.0.1"

    def accounted() -> float:
        received = process.sample("syslog_collector_received_messages_total", host=host, transport="udp") or 0
        return received + (process.sample("syslog_collector_rate_limited_messages_total", host=host) or 0)

    assert wait_until(lambda: accounted() == len(messages))
    limited = process.sample("syslog_collector_rate_limited_messages_total", host=host)
    assert limited > 0
    assert process.sample("syslog_collector_dropped_messages_total", reason="rate_limited") == limited
    assert process.sample("syslog_collector_header_parse_errors_total") == len(messages) - limited
    assert wait_until(lambda: len(process.archived(host)) == len(messages) - limited)


def test_connections_closed_for_want_of_descriptors_are_counted(tmp_path):
    import resource

    process = CollectorProcess(tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)))
    try:
        clients = []
        for index in range(90):
            try:
                clients.append(process.connect_tcp(source=f"127.0.4.{1 + index % 30}"))
            except OSError:
                break
        # Each accepted and closed at once: the client sees its end.
        assert wait_until(lambda: any(_closed(client) for client in clients if _readable(client)))
        for client in clients:
            client.close()
        process.wait_for("syslog_collector_refused_connections_total", 1, reason="descriptors")
    finally:
        process.kill()


def _closed(sock: socket.socket) -> bool:
    """Whether the collector closed the connection, in order or with a reset."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_lines_that_look_like_octet_counts_cost_nothing_of_the_stream(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        lines = []
        for i in range(300):
            lines.append(rfc5424("gw", b"Engine: Startup. %03d" % i))
            # A sender that writes no PRI: the line starts with digits and a dash.
            lines.append(b"2026-11-25 10:00:%02d gw Engine: Startup. %03d" % (i % 60, i))
            lines.append(b"12x not a count %03d" % i)
        with process.connect_tcp() as sock:
            sock.sendall(b"".join(line + b"\n" for line in lines))
        assert wait_until(lambda: len(process.archived("gw")) == 300
                          and len(process.archived("127.0.0.1")) == 600)
        assert process.sample("syslog_collector_framing_errors_total") >= 300
        assert sorted(process.archived("gw") + process.archived("127.0.0.1")) == sorted(lines)
    finally:
        process.kill()
