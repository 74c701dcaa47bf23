import socket

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from collector.hosts import Sender
from collector.metrics import (
    PUBLISH_INTERVAL,
    CollectorMetrics,
    MetricsPublisher,
    UdpSocketRow,
    WorkersCollector,
    parse_proc_net_udp,
)
from collector.records import RecordType, Transport
from helpers import Harness

SENDER = Sender.from_address("192.0.2.1", 40000)

PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:158A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 424242 2 0000000000000000 17
  456: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0
"""


def test_parse_proc_net_udp():
    assert parse_proc_net_udp(PROC_NET_UDP) == [UdpSocketRow(424242, 0x158A, 17), UdpSocketRow(99, 0x44, 0)]
    assert parse_proc_net_udp("") == []


def test_udp_socket_metrics_read_at_scrape_time():
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry, 10)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        metrics.udp_sockets.watch(sock, 123456)
        labels = {"address": address}
        assert registry.get_sample_value("syslog_collector_udp_receive_buffer_requested_bytes", labels) == 123456
        assert registry.get_sample_value("syslog_collector_udp_receive_buffer_bytes", labels) == \
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert registry.get_sample_value("syslog_collector_udp_receive_drops_total", labels) == 0
        metrics.udp_sockets.forget(sock)
    assert registry.get_sample_value("syslog_collector_udp_receive_buffer_bytes", labels) is None


def test_every_metric_has_the_prefix_and_conventions():
    registry = CollectorRegistry()
    CollectorMetrics(registry, 10)
    for family in registry.collect():
        assert family.name.startswith("syslog_collector_")
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client adds it to the samples
        assert family.documentation


def child_value(child):
    return child.collect()[0].samples[0].value


def test_counts_are_published_by_the_timer_and_at_stop():
    harness = Harness()
    publisher = MetricsPublisher(harness.metrics, harness.clock)
    publisher.startService()
    startup = b"<13>1 - gw app - - - Engine: Startup."
    harness.pipeline.receive([startup], SENDER, Transport.TCP)
    records = harness.metrics.host("gw").records[RecordType.ENGINE_STARTUP]
    received = harness.metrics.host("gw").received_messages[Transport.TCP]
    assert (child_value(records), child_value(received)) == (0.0, 0.0)  # counted, not yet published
    harness.clock.advance(PUBLISH_INTERVAL)
    assert (child_value(records), child_value(received)) == (1.0, 1.0)
    harness.pipeline.receive([startup], SENDER, Transport.TCP)
    publisher.stopService()
    assert (child_value(records), child_value(received)) == (2.0, 2.0)
    assert child_value(harness.metrics.host("gw").received_bytes[Transport.TCP]) == 2.0 * len(startup)


def test_a_starting_workers_empty_metrics_file_does_not_fail_the_scrape(tmp_path):
    # A worker's file as prometheus_client writes it, and the empty file a
    # starting worker has created but not yet sized.
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("syslog_collector_demo", "syslog_collector_demo_total", [], [], "A demo counter")
    written.write_value(key, 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").touch()
    registry = CollectorRegistry()
    WorkersCollector(registry, str(tmp_path))
    assert b"syslog_collector_demo_total 3.0" in generate_latest(registry)


def test_a_registered_firewall_keeps_its_label_past_max_hosts():
    import ipaddress

    from collector.config import Firewall

    gw = Firewall(name="gw", networks=(ipaddress.ip_network("192.0.2.10/32"),))
    harness = Harness(firewalls=(gw,), max_hosts=3)
    for index in range(5):
        harness.pipeline.receive([b"<13>1 - host-%d app - - - Engine: Startup." % index],
                                 Sender.from_address("198.51.100.1", 1), Transport.UDP)
    harness.pipeline.receive([b"<13>1 - gw app - - - Engine: Startup."], Sender.from_address("192.0.2.10", 1),
                             Transport.UDP)
    harness.metrics.publish()
    assert harness.value("syslog_collector_records_total", host="gw", type="engine_startup") == 1.0
    assert harness.value("syslog_collector_records_total", host="other", type="engine_startup") == 2.0


def test_interfaces_a_terminal_would_act_on_are_other():
    harness = Harness()
    for interface in (b"LAN", b"\x1b]0;pwned\x07\x1b[2J", "\u202eNAL".encode(), "\u009b31m".encode()):
        harness.pipeline.receive([b"<13>1 - gw app - - - Anti-Spoofing: Packet from " + interface
                                  + b", proto:UDP, len:40, ip/port:1.2.3.4:1 -> 5.6.7.8:2"],
                                 Sender.from_address("192.0.2.1", 1), Transport.UDP)
    harness.metrics.publish()
    exposition = generate_latest(harness.registry).decode()
    assert 'interface="LAN"' in exposition and 'interface="other"' in exposition
    assert "\x1b" not in exposition and "\u202e" not in exposition and "\u009b" not in exposition


def test_breakdowns_past_their_budget_are_counted_by_type_only(monkeypatch):
    import collector.metrics

    monkeypatch.setattr(collector.metrics, "MAX_DETAIL_SERIES", 3)
    harness = Harness()
    for index in range(5):
        harness.pipeline.receive([b"<13>1 - host-%d app - - - Anti-Spoofing: Packet from LAN, proto:UDP, len:40, "
                                  b"ip/port:1.2.3.4:1 -> 5.6.7.8:2" % index], Sender.from_address("192.0.2.1", 1),
                                 Transport.UDP)
    harness.metrics.publish()
    assert harness.value("syslog_collector_records_total", host="host-4", type="anti_spoofing") == 1.0
    assert harness.value("syslog_collector_anti_spoofing_packets_total", host="host-4", interface="LAN",
                         direction="from", protocol="udp") is None
    assert harness.value("syslog_collector_breakdown_overflow_total") == 2.0
