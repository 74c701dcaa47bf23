"""Attacks on the collector itself, against a real ``twistd`` with the default configuration."""

import random
import socket
import threading
import time

from collector_process import CollectorProcess, wait_until

# The worst-case memory of a worker documented in docs/operations.md ("Memory"), for
# the default configuration.
RSS_BOUND_MB = 300
FIELD = 60 * 1024


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def unique(rng: random.Random, size: int) -> str:
    """``size`` characters of one text no other call gives."""
    head = f"{rng.getrandbits(64):016x}"
    return head + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=64)) * ((size - 16) // 64)


def hostile(rng: random.Random, kind: int) -> bytes:
    """A message whose variable field is a unique 60 KB text, of one of five kinds."""
    field = unique(rng, FIELD)
    if kind == 0:  # a unique HOSTNAME
        return f"<13>1 - {field} app - - - Engine: Startup.".encode()
    if kind == 1:  # a unique interface name, too long for a label (a 60 KB one is no interface at all)
        name = field if rng.random() < 0.5 else unique(rng, 300)
        return (f"<13>1 - gw app - - - Anti-Spoofing: Packet from {name}, proto:TCP, len:48, "
                "ip/port:61.173.81.166:1864 -> 195.39.55.10:445, flags: SYN, seq:1 ack:0, win:1, tcplen:0").encode()
    if kind == 2:  # a unique authentication reason
        return f"<13>1 - gw app - - - Authentication: WebAdmin SSL: Client: 192.0.2.7: {field}".encode()
    if kind == 3:  # a unique IPS rule name
        return (f"<13>1 - gw app - - - IPS: Alert, severity: Low, Rule ID: 1:{rng.getrandbits(30)} {field}, "
                "proto:TCP, ip/port:1.2.3.4:1 > 5.6.7.8:2").encode()
    # a unique endpoint
    return (f"<13>1 - gw app - - - IPS: Alert, severity: Low, Rule ID: 1:1 rule, proto:TCP, "
            f"ip/port:1.2.3.4:1({field}) > 5.6.7.8:2").encode()


def test_a_flood_of_unique_maximal_fields_keeps_memory_bounded(tmp_path):
    process = CollectorProcess(tmp_path)
    try:
        rng = random.Random(7)
        udp = [hostile(rng, i % 5) for i in range(2500)]
        tcp = [hostile(rng, i % 5) for i in range(2500)]

        def send_tcp() -> None:
            with process.connect_tcp() as sock:
                sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in tcp))

        sender = threading.Thread(target=send_tcp)
        sender.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for index, message in enumerate(udp):
                sock.sendto(message, ("127.0.0.1", process.ports["udp"]))
                if index % 10 == 9:
                    time.sleep(0.01)  # a pace the collector can read, so that the datagrams reach it
        sender.join()

        def received(transport: str) -> float:
            return sum(float(line.rpartition(" ")[2]) for line in process.scrape().splitlines()
                       if line.startswith("syslog_collector_received_messages_total{")
                       and f'transport="{transport}"' in line)

        assert wait_until(lambda: received("tcp") == len(tcp), timeout=60)
        assert wait_until(lambda: received("udp") >= len(udp) * 0.5, timeout=30)
        rss = peak_rss_mb(process.process.pid)
        assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB"
        # Interface names past 64 bytes are one label value, not thousands.
        exposition = process.scrape()
        assert len(exposition) < 2 * 1024 * 1024
        assert 'interface="other"' in exposition
    finally:
        process.kill()


def test_no_message_of_64_kib_takes_more_than_a_millisecond_to_classify():
    from worst_cases import WORST_CASES

    from collector.parsing import kerio, syslog
    from collector.parsing.shapes import COMMON_SHAPE

    def cost(message: bytes) -> float:
        # What the collector does at most with a message: look for its
        # shape, then read it in full. The least of a few tries, so that
        # another process on the machine does not count.
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            COMMON_SHAPE.match(message)
            kerio.summary_in(syslog.envelope(message))
            best = min(best, time.perf_counter() - started)
        return best

    costs = sorted((cost(message), index) for index, message in enumerate(WORST_CASES))
    slowest, index = costs[-1]
    assert all(len(message) <= 64 * 1024 for message in WORST_CASES)
    assert slowest < 0.001, f"case {index} of tests/worst_cases.py: {slowest * 1e3:.2f} ms"


def _self_signed(directory) -> tuple[str, str]:
    import subprocess

    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=collector", "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    return str(certificate), str(key)


def test_silent_and_half_open_connections_lock_out_neither_a_firewall_nor_a_newcomer(tmp_path):
    import resource

    from conftest import require_binary

    require_binary("openssl")
    certificate, key = _self_signed(tmp_path)
    config = tmp_path / "collector.toml"
    # The defaults, but for a TLS listener, a registered firewall, and a
    # handshake timeout short enough for a test.
    config.write_text(f'[tls]\nenabled = true\nlisten = "127.0.0.1:0"\ncertificate = "{certificate}"\n'
                      f'key = "{key}"\n[limits]\nhandshake_timeout_seconds = 2.0\n'
                      '[[firewall]]\nname = "gw1"\naddresses = ["127.0.3.2"]\n')
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    process = CollectorProcess(tmp_path, config=str(config), listeners=frozenset({"udp", "tcp", "tls", "metrics"}))
    held = []
    try:
        # 75 networks of 30 addresses: 1,250 silent TCP connections and 1,000
        # TCP connections to the TLS port that never start their handshake.
        for network in range(10, 85):
            for host in range(1, 31):
                port = process.ports["tcp"] if len(held) < 1250 else process.ports["tls"]
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10,
                                                     source_address=(f"127.0.{network}.{host}", 0)))

        def open_connections() -> float:
            return sum(process.sample("syslog_collector_tcp_connections", transport=t) or 0 for t in ("tcp", "tls"))

        assert wait_until(lambda: open_connections() == 2000, timeout=30)
        assert process.sample("syslog_collector_refused_connections_total", reason="too_many_connections") > 0
        # Every place is held: the registered firewall, and a newcomer, get one all the same.
        for source, host in (("127.0.3.2", "gw1"), ("127.0.99.1", "newcomer")):
            with process.connect_tcp(source=source) as sock:
                sock.sendall(b"<13>1 - %s app - - - Engine: Startup.\n" % host.encode())
                process.wait_for("syslog_collector_received_messages_total", 1, host=host, transport="tcp")
        assert process.sample("syslog_collector_closed_connections_total", reason="evicted") >= 2
        # The half-open TLS connections are closed when their handshake is due.
        assert wait_until(lambda: process.sample("syslog_collector_tcp_connections", transport="tls") == 0, timeout=20)
        assert process.sample("syslog_collector_closed_connections_total", reason="handshake_timeout") >= 700
    finally:
        for sock in held:
            sock.close()
        process.kill()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
