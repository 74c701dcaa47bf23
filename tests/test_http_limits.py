"""The metrics listener's limits, each made to act in a real ``twistd``."""

import http.client
import re
import resource
import select
import socket
import threading
import time

import pytest

from collector.listening import SPARE_DESCRIPTORS
from collector.net.web import CACHE_SECONDS, HEAD_TIMEOUT_SECONDS
from collector_process import CollectorProcess, open_files, wait_until

DEFAULT_MAX_HTTP_CONNECTIONS = 64


def rfc5424(host: str, msg: bytes) -> bytes:
    return b"<116>1 2026-11-25T10:00:00+00:00 " + host.encode() + b" security - - - " + msg


def http_connect(process: CollectorProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", process.ports["metrics"]), timeout=10)


def ended(sock: socket.socket) -> bool:
    """Whether the collector has closed this connection, which asked nothing."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def sockets_held(pid: int) -> int:
    return sum(1 for held in open_files(pid) if held.startswith("socket:"))


def value(text: str, name: str, **labels: str) -> float | None:
    """A sample's value in a /metrics body, or None."""
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    match = re.search(rf"^{re.escape(name + wanted)} (\S+)$", text, re.M)
    return None if match is None else float(match.group(1))


def scrape_once_room_is_made(process: CollectorProcess) -> tuple[str, int]:
    """A /metrics body, once a connection is let in; and how many were turned away first."""
    refused = 0
    deadline = time.monotonic() + 15
    while True:
        try:
            return process.scrape(), refused
        except (OSError, http.client.HTTPException):
            refused += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send_from_hosts(process: CollectorProcess, hosts: list[str], tag: bytes) -> list[bytes]:
    """One message from each host over UDP; the messages."""
    messages = [rfc5424(host, b"Engine: Startup. " + tag) for host in hosts]
    process.send_udp(messages)
    return messages


def all_archived(process: CollectorProcess, hosts: list[str], tag: bytes) -> bool:
    return all(any(message.endswith(tag) for message in process.archived(host)) for host in hosts)


def test_idle_http_connections_past_the_limit_are_closed_and_archive_writes_go_on(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        pid = process.process.pid
        held_before = sockets_held(pid)
        opened = time.monotonic()
        idle = [http_connect(process) for _ in range(100)]
        closed: set[int] = set()

        def the_rest_closed() -> bool:
            closed.update(index for index, sock in enumerate(idle) if index not in closed and ended(sock))
            return len(closed) >= 100 - DEFAULT_MAX_HTTP_CONNECTIONS

        # Each one past the 64th is closed as soon as it is accepted.
        assert wait_until(the_rest_closed, timeout=5)
        time.sleep(0.2)
        the_rest_closed()
        assert time.monotonic() - opened < HEAD_TIMEOUT_SECONDS, "too slow to tell refusals from timeouts"
        assert closed == set(range(DEFAULT_MAX_HTTP_CONNECTIONS, 100))
        assert sockets_held(pid) - held_before == DEFAULT_MAX_HTTP_CONNECTIONS

        # Meanwhile syslog goes on, over UDP and TCP, and is archived.
        hosts = [f"gw{index:02d}" for index in range(20)]
        send_from_hosts(process, hosts, b"udp")
        with process.connect_tcp() as tcp:
            tcp.sendall(b"".join(rfc5424(host, b"Engine: Startup. tcp") + b"\n" for host in hosts))
            assert wait_until(lambda: all_archived(process, hosts, b"udp") and all_archived(process, hosts, b"tcp"))

        # Once some close, /metrics answers again.
        for sock in idle[:10]:
            sock.close()
        text, turned_away = scrape_once_room_is_made(process)
        assert value(text, "syslog_collector_http_refused_connections_total",
                     reason="too_many_http_connections") == 100 - DEFAULT_MAX_HTTP_CONNECTIONS + turned_away
        assert value(text, "syslog_collector_archive_write_errors_total") == 0
        assert "limits.max_http_connections (64) are open" in process.log()
    finally:
        for sock in idle:
            sock.close()
        process.kill()


def test_no_number_of_connections_makes_an_archive_write_fail(tmp_path):
    # Small budgets, and a hard limit on open files of exactly their sum: the
    # connections a client can open far outnumber the descriptors.
    config = tmp_path / "collector.toml"
    config.write_text("[limits]\nmax_connections = 16\nmax_connections_per_sender = 16\n"
                      "[archive]\nmax_open_files = 32\n")
    budget = 16 + DEFAULT_MAX_HTTP_CONNECTIONS + 32 + SPARE_DESCRIPTORS
    process = CollectorProcess(tmp_path, config=str(config),
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (budget, budget)))
    clients: list[socket.socket] = []
    try:
        for _ in range(2 * budget):
            clients.append(http_connect(process))
        tcp = [process.connect_tcp() for _ in range(40)]
        clients += tcp
        hosts = [f"fw{index:02d}" for index in range(40)]
        for sock in tcp:
            sock.sendall(b"".join(rfc5424(host, b"Engine: Startup. tcp") + b"\n" for host in hosts))
        send_from_hosts(process, hosts, b"udp")
        # 40 hosts through 32 open files: some are closed and opened again.
        assert wait_until(lambda: all_archived(process, hosts, b"udp") and all_archived(process, hosts, b"tcp"),
                          timeout=20)
        assert sockets_held(process.process.pid) < budget - 32
        for sock in clients:
            sock.close()
        text, _ = scrape_once_room_is_made(process)
        assert value(text, "syslog_collector_archive_write_errors_total") == 0
        assert value(text, "syslog_collector_refused_connections_total", reason="descriptors") == 0
        assert value(text, "syslog_collector_http_refused_connections_total",
                     reason="too_many_http_connections") >= 2 * budget - DEFAULT_MAX_HTTP_CONNECTIONS
        assert "Too many open files" not in process.log()
    finally:
        for sock in clients:
            sock.close()
        process.kill()


def test_a_chunked_post_is_refused_before_its_body_is_read(tmp_path, monkeypatch):
    spool = tmp_path / "tmp"
    spool.mkdir()
    # Where twisted.web would spool a request body.
    monkeypatch.setenv("TMPDIR", str(spool))
    process = CollectorProcess(tmp_path)
    try:
        pid = process.process.pid
        sock = http_connect(process)
        started = time.monotonic()
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: collector\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
        sent = []
        cut_off = []

        def send_body() -> None:
            try:
                for _ in range(64):
                    sock.sendall(chunk)
                    sent.append(len(chunk))
            except OSError as e:
                cut_off.append(e)

        sender = threading.Thread(target=send_body)
        sender.start()
        held = set()
        response = b""
        try:
            while True:
                held |= open_files(pid)
                data = sock.recv(65536)
                if not data:
                    break
                response += data
        except ConnectionResetError:
            pass
        sender.join(10)
        closed_after = time.monotonic() - started
        assert response.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
        assert b"\r\nAllow: GET, HEAD\r\n" in response
        # The collector stopped reading: the sender was cut off long before 64 MiB.
        assert cut_off and sum(sent) < 16 * len(chunk)
        assert closed_after < 2.0
        held |= open_files(pid)
        assert not [path for path in held if path.startswith(str(spool)) or "(deleted)" in path]
        assert list(spool.iterdir()) == []
        process.wait_for("syslog_collector_http_refused_requests_total", 1, reason="method_not_allowed")
    finally:
        sock.close()
        process.kill()


def test_a_request_head_trickled_in_is_closed_at_the_deadline(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        with http_connect(process) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
            # One byte a second: each resets an idle timeout, none completes the head.
            while time.monotonic() - started < HEAD_TIMEOUT_SECONDS + 5:
                if select.select([sock], [], [], 1.0)[0]:
                    try:
                        assert sock.recv(1) == b""
                    except ConnectionResetError:
                        pass
                    break
                sock.sendall(b"x")
            closed_after = time.monotonic() - started
        assert HEAD_TIMEOUT_SECONDS - 0.5 < closed_after < HEAD_TIMEOUT_SECONDS + 1.5
        process.wait_for("syslog_collector_http_closed_connections_total", 1, reason="header_timeout")
        assert "that sent no complete request head within 10.0 s" in process.log()
    finally:
        process.kill()


def test_concurrent_scrapes_within_a_second_render_once(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        # Many hosts, so that a rendering takes a while and scrapes arrive during it.
        hosts = [f"host{index:03d}" for index in range(300)]
        send_from_hosts(process, hosts, b"many")
        process.wait_for("syslog_collector_received_messages_total", 1, host=hosts[-1], transport="udp")
        time.sleep(CACHE_SECONDS + 0.1)
        first = process.scrape()
        renders = value(first, "syslog_collector_metrics_renders_total")
        shared = value(first, "syslog_collector_metrics_shared_scrapes_total")
        time.sleep(CACHE_SECONDS + 0.1)

        barrier = threading.Barrier(20)
        bodies = []

        def scrape() -> None:
            barrier.wait()
            bodies.append(process.scrape())

        scrapers = [threading.Thread(target=scrape) for _ in range(20)]
        for scraper in scrapers:
            scraper.start()
        for scraper in scrapers:
            scraper.join(30)
        assert len(bodies) == 20 and len(set(bodies)) == 1
        assert value(bodies[0], "syslog_collector_metrics_renders_total") == renders + 1
        time.sleep(CACHE_SECONDS + 0.1)
        last = process.scrape()
        assert value(last, "syslog_collector_metrics_renders_total") == renders + 2
        assert value(last, "syslog_collector_metrics_shared_scrapes_total") == shared + 19
    finally:
        process.kill()


def test_a_flood_of_requests_is_not_logged_request_by_request(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        process.scrape()
        logged_before = len(process.log().splitlines())
        answered = 0
        with http_connect(process) as sock:
            for _ in range(20):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n" * 100)
                received = b""
                while received.count(b"HTTP/1.1 200 OK") < 100 or not received.endswith(b"ok\n"):
                    data = sock.recv(65536)
                    assert data, "closed before every request was answered"
                    received += data
                answered += received.count(b"HTTP/1.1 200 OK")
        assert answered == 2000
        process.scrape()  # by then the log holds whatever the requests wrote
        log = process.log()
        assert "/healthz" not in log
        assert len(log.splitlines()) - logged_before < 10
    finally:
        process.kill()


@pytest.fixture
def supervisor(tmp_path):
    process = CollectorProcess.configured(tmp_path, "[workers]\ncount = 2\n[limits]\nmax_http_connections = 4\n")
    yield process
    process.kill()


def test_the_supervisor_of_workers_has_the_same_limits(supervisor):
    process = supervisor
    idle = [http_connect(process) for _ in range(5)]
    try:
        assert wait_until(lambda: ended(idle[4]), timeout=5)
        assert not any(ended(sock) for sock in idle[:4])
        for sock in idle[:4]:
            sock.close()
        with http_connect(process) as sock:
            sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: c\r\nContent-Length: 100000000\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 405 ")
        text, turned_away = scrape_once_room_is_made(process)
        assert value(text, "syslog_collector_http_refused_connections_total",
                     reason="too_many_http_connections") == 1 + turned_away
        assert value(text, "syslog_collector_http_refused_requests_total", reason="method_not_allowed") == 1
    finally:
        for sock in idle:
            sock.close()
