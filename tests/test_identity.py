"""Whose messages are whose, against a real collector: a registered firewall's
names from another sender, and a flood of unregistered host names."""

import signal
import socket

import pytest

from collector import config
from collector_process import CollectorProcess, wait_until

REGISTRY = """
[[firewall]]
name = "gw1"
addresses = ["127.0.3.2"]

[[firewall]]
name = "forwarder"
addresses = ["127.0.3.4"]
relay = true
"""

STARTUP = b"<116>1 - gw1 security - - - Engine: Startup."


def send_udp_from(collector, source, messages):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for message in messages:
            sock.sendto(message, ("127.0.0.1", collector.ports["udp"]))


def send_tcp_from(collector, source, messages):
    with collector.connect_tcp(source) as sock:
        sock.sendall(b"".join(message + b"\n" for message in messages))


@pytest.fixture
def collector(tmp_path):
    path = tmp_path / "collector.toml"
    path.write_text(REGISTRY)
    process = CollectorProcess(tmp_path, config=str(path))
    yield process
    process.kill()


def startups(collector, host):
    return collector.sample("syslog_collector_engine_events_total", host=host, event="startup") or 0


def test_another_sender_cannot_speak_as_a_registered_firewall(collector):
    # Over UDP and over TCP, each from an address of its own.
    send_udp_from(collector, "127.0.3.9", [STARTUP])
    collector.wait_for("syslog_collector_impersonations_total", 1, host="gw1")
    send_tcp_from(collector, "127.0.3.10", [STARTUP])
    collector.wait_for("syslog_collector_impersonations_total", 2, host="gw1")
    assert wait_until(lambda: collector.archived("127.0.3.9") and collector.archived("127.0.3.10"))
    assert collector.archived("127.0.3.9") == [STARTUP]
    assert collector.archived("127.0.3.10") == [STARTUP]
    assert not (collector.archive / "gw1").exists()
    assert startups(collector, "gw1") == 0
    assert startups(collector, "127.0.3.9") == 1 and startups(collector, "127.0.3.10") == 1
    assert collector.sample("syslog_collector_received_messages_total", host="127.0.3.10", transport="tcp") == 1
    assert "sender 127.0.3.9:" in collector.log() and "a name of firewall gw1" in collector.log()

    # The firewall itself, and a relay, speak for it.
    send_udp_from(collector, "127.0.3.2", [STARTUP])
    send_tcp_from(collector, "127.0.3.4", [STARTUP])
    collector.wait_for("syslog_collector_engine_events_total", 2, host="gw1", event="startup")
    assert wait_until(lambda: len(collector.archived("gw1")) == 2)
    assert collector.sample("syslog_collector_impersonations_total", host="gw1") == 2


def test_the_default_bound_on_unregistered_hosts():
    assert config.load().hosts.max_unregistered == 1000


def test_past_a_thousand_unregistered_hosts_they_share_one_tag(collector):
    hosts = [b"host-%04d" % i for i in range(1000)]
    send_udp_from(collector, "127.0.0.1", [b"<116>1 - %s security - - - Engine: Startup." % h for h in hosts])
    assert wait_until(lambda: len(list(collector.archive.iterdir())) >= 1000, timeout=30)
    assert sorted(p.name for p in collector.archive.iterdir()) == [h.decode() for h in hosts]

    late = b"<116>1 - host-1000 security - - - Engine: Startup."
    send_udp_from(collector, "127.0.3.9", [late])
    collector.wait_for("syslog_collector_unregistered_overflow_total", 1)
    assert wait_until(lambda: collector.archived("unregistered"))
    assert collector.archived("unregistered") == [late]
    # Each line keeps its sender's address, as always.
    line = next((collector.archive / "unregistered").glob("*.log")).read_bytes()
    assert b" 127.0.3.9:" in line
    assert not (collector.archive / "host-1000").exists()

    # A reload starts no new count: host-1001 shares the tag too, and the
    # hosts seen keep theirs.
    collector.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reloaded 2 firewall(s)" in collector.log())
    send_udp_from(collector, "127.0.0.1", [b"<116>1 - host-1001 security - - - x",
                                           b"<116>1 - host-0005 security - - - y"])
    collector.wait_for("syslog_collector_unregistered_overflow_total", 2)
    assert wait_until(lambda: len(collector.archived("unregistered")) == 2)
    assert wait_until(lambda: len(collector.archived("host-0005")) == 2)
    assert len(list(collector.archive.iterdir())) == 1001
