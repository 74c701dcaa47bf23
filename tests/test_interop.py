"""Real, independently written syslog senders against a running collector:
util-linux ``logger`` and ``rsyslogd`` as a relay."""

import socket
import subprocess
import time

import pytest

from collector.hosts import sanitize_host
from collector_process import CollectorProcess, free_udp_port
from conftest import require_binary

RECORDS = {
    "engine_startup": "Engine: Startup.",
    "auth_failure": "Authentication: WebAdmin: Client: 192.0.2.77: Invalid password for user admin",
    "anti_spoofing": ("Anti-Spoofing: Packet from LAN, proto:UDP, len:334, "
                      "ip/port:10.1.1.5:68 -> 10.1.1.1:67"),
    "unknown": "PERMIT 'Local traffic' packet to LAN, proto:TCP, len:52",
}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = CollectorProcess(tmp_path_factory.mktemp("interop"))
    yield process
    process.kill()


LOCAL_HOST = sanitize_host(socket.gethostname()) or "127.0.0.1"
# Each logger mode gets its own tag (APP-NAME), so its messages can be told apart.
LOGGER_MODES = {
    "udp-rfc3164": ["--udp", "--rfc3164"],
    "udp-rfc5424": ["--udp", "--rfc5424"],
    "tcp-rfc3164": ["--tcp", "--rfc3164"],
    "tcp-rfc5424": ["--tcp", "--rfc5424"],
    "tcp-octet": ["--tcp", "--octet-count", "--rfc5424"],
}


@pytest.mark.parametrize("mode", LOGGER_MODES)
def test_logger(collector, mode):
    logger = require_binary("logger")
    transport = "tcp" if "--tcp" in LOGGER_MODES[mode] else "udp"
    before = {t: collector.sample("syslog_collector_records_total", host=LOCAL_HOST, type=t) or 0
              for t in RECORDS}
    for text in RECORDS.values():
        subprocess.run([logger, *LOGGER_MODES[mode], "-n", "127.0.0.1", "-P", str(collector.ports[transport]),
                        "-t", mode, text], check=True, timeout=30)
    for record_type in RECORDS:
        collector.wait_for("syslog_collector_records_total", before[record_type] + 1,
                           host=LOCAL_HOST, type=record_type)
    time.sleep(1.5)  # one flush interval
    archived = [m for m in collector.archived(LOCAL_HOST) if mode.encode() in m]
    assert len(archived) == len(RECORDS)
    for text in RECORDS.values():
        assert any(m.endswith(text.encode()) for m in archived), text



def udp_port_taken(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


FORWARDS = {
    "relayed-udp": 'protocol="udp"',
    "relayed-lf": 'protocol="tcp" tcp_framing="traditional"',
    "relayed-octet": 'protocol="tcp" tcp_framing="octet-counted"',
}


@pytest.fixture(scope="module")
def rsyslog_relay(collector, tmp_path_factory):
    """rsyslogd with one UDP input per forwarding mode, relaying to the collector."""
    rsyslogd = require_binary("rsyslogd")
    workdir = tmp_path_factory.mktemp("rsyslog")
    inputs = {}
    lines = [f'global(workDirectory="{workdir}")', 'module(load="imudp")']
    for name, forward in FORWARDS.items():
        inputs[name] = free_udp_port()
        port = collector.ports["udp" if "udp" in forward else "tcp"]
        lines += [
            f'input(type="imudp" address="127.0.0.1" port="{inputs[name]}" ruleset="{name}")',
            f'ruleset(name="{name}") {{ action(type="omfwd" target="127.0.0.1" port="{port}" {forward} '
            f'template="RSYSLOG_SyslogProtocol23Format") }}',
        ]
    config = workdir / "rsyslog.conf"
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([rsyslogd, "-n", "-iNONE", "-f", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not all(udp_port_taken(port) for port in inputs.values()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stdout.read().decode(errors="replace")
            pytest.fail(f"rsyslogd did not start: {output}")
        time.sleep(0.1)
    yield inputs
    process.terminate()
    process.wait(20)
    process.stdout.close()


@pytest.mark.parametrize("host", FORWARDS)
def test_rsyslog_relay(collector, rsyslog_relay, host):
    messages = [f"<116>1 2026-11-25T10:00:00+00:00 {host} security - - - {text}".encode()
                for text in RECORDS.values()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for message in messages:
            sock.sendto(message, ("127.0.0.1", rsyslog_relay[host]))
    for record_type in RECORDS:
        collector.wait_for("syslog_collector_records_total", 1, host=host, type=record_type)
    transport = "udp" if host == "relayed-udp" else "tcp"
    assert collector.sample("syslog_collector_received_messages_total",
                            host=host, transport=transport) == len(RECORDS)
    time.sleep(1.5)
    archived = collector.archived(host)
    assert len(archived) == len(RECORDS)
    # rsyslog's RFC 5424 template ends in LF, which octet-counted framing
    # keeps inside the message: the archive keeps it too.
    for text in RECORDS.values():
        assert any(m.rstrip(b"\n").endswith(text.encode()) for m in archived), (text, archived)
