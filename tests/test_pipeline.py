import ipaddress
import tempfile
from datetime import UTC
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector import pipeline as pipeline_module
from collector.archive.line import parse_line
from collector.archive.writer import FileArchive
from collector.config import Firewall, UnregisteredPolicy
from collector.hosts import HostRegistry, Sender
from collector.parsing.framing import StreamDecoder
from collector.pipeline import Pipeline
from collector.records import RecordType, Transport
from helpers import Harness

SENDER = Sender.from_address("192.0.2.1", 40000)


def test_every_type_is_zero_as_soon_as_a_host_is_seen():
    harness = Harness()
    harness.pipeline.receive([b"<13>1 - gw app - - - Engine: Startup."], SENDER, Transport.UDP)
    for record_type in RecordType:
        expected = 1.0 if record_type is RecordType.ENGINE_STARTUP else 0.0
        assert harness.value("syslog_collector_records_total", host="gw", type=record_type.value) == expected
    assert harness.value("syslog_collector_received_messages_total", host="gw", transport="udp") == 1.0
    assert harness.value("syslog_collector_received_messages_total", host="gw", transport="tcp") == 0.0


def test_unreadable_header_is_counted_and_archived_under_the_sender_address():
    harness = Harness()
    harness.pipeline.receive([b"no header at all"], SENDER, Transport.TCP)
    assert harness.archived("192.0.2.1") == [b"no header at all"]
    assert harness.value("syslog_collector_header_parse_errors_total") == 1.0
    assert harness.value("syslog_collector_records_total", host="192.0.2.1", type="unknown") == 1.0


def test_bare_record_without_envelope_is_still_typed():
    harness = Harness()
    harness.pipeline.receive([b"[17/Dec/2008 12:11:33] Engine: Shutdown."], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_records_total", host="192.0.2.1", type="engine_shutdown") == 1.0


def test_bsd_message_without_tag_is_typed():
    harness = Harness()
    harness.pipeline.receive([b"<134>Nov 25 12:00:00 gw Engine: Startup.",
                            b"<134>Nov 25 12:00:00 gw Authentication: Admin: Client: 1.2.3.4: wrong password"],
                           SENDER, Transport.UDP)
    assert harness.value("syslog_collector_records_total", host="gw", type="engine_startup") == 1.0
    assert harness.value("syslog_collector_records_total", host="gw", type="auth_failure") == 1.0


def test_defects_are_counted_by_type():
    harness = Harness()
    harness.pipeline.receive([b"<13>1 - gw app - - - FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8"],
                           SENDER, Transport.UDP)
    assert harness.value("syslog_collector_record_parse_errors_total", type="ftp_bounce_attack") == 1.0


def test_hostname_mismatch_is_counted_for_registered_firewalls():
    hq = Firewall(name="hq", networks=(ipaddress.ip_network("192.0.2.0/24"),))
    harness = Harness(firewalls=(hq,))
    harness.pipeline.receive([b"<13>1 - hq app - - - x", b"<13>1 - other app - - - y"], SENDER, Transport.UDP)
    assert harness.archived("hq") == [b"<13>1 - hq app - - - x", b"<13>1 - other app - - - y"]
    assert harness.value("syslog_collector_hostname_mismatches_total", host="hq") == 1.0


def test_refused_sender_is_counted():
    harness = Harness(unregistered=UnregisteredPolicy.REFUSE)
    assert not harness.pipeline.accepts(SENDER)
    assert harness.value("syslog_collector_refused_messages_total", reason="unregistered") == 1.0


def test_host_label_cap():
    harness = Harness(max_hosts=2)
    for host in ("a", "b", "c", "d"):
        harness.pipeline.receive([b"<13>1 - %s app - - - x" % host.encode()], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_records_total", host="c", type="unknown") is None
    assert harness.value("syslog_collector_records_total", host="other", type="unknown") == 2.0
    assert harness.value("syslog_collector_host_label_overflow_total") == 2.0
    # The archive keeps the true host.
    assert harness.archived("d") == [b"<13>1 - d app - - - x"]


def test_clock_skew_and_last_message_time():
    harness = Harness()
    now = harness.clock.seconds()
    harness.pipeline.receive([b"<13>1 2025-11-25T11:59:58Z gw app - - - x"], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_clock_skew_seconds", host="gw") == 2.0
    assert harness.value("syslog_collector_last_message_timestamp_seconds", host="gw") == now
    harness.clock.advance(1)
    harness.pipeline.receive([b"<13>Nov 25 12:00:06 gw app: x"], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_clock_skew_seconds", host="gw") == -5.0


def test_clock_skew_is_sampled_once_a_second_even_without_timestamps():
    # A host is looked at once a second, whatever its messages carry: one
    # whose messages have no timestamp must not cost a header read each.
    harness = Harness()
    harness.pipeline.receive([b"<13>1 - gw app - - - no timestamp",
                            b"<13>1 2025-11-25T11:59:58Z gw app - - - x"], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_clock_skew_seconds", host="gw") == 0.0
    harness.clock.advance(1)
    harness.pipeline.receive([b"<13>1 2025-11-25T11:59:58Z gw app - - - x"], SENDER, Transport.UDP)
    assert harness.value("syslog_collector_clock_skew_seconds", host="gw") == 3.0


def receive(harness, *bodies, host=b"gw"):
    harness.pipeline.receive([b"<13>1 - %s app - - - %s" % (host, body) for body in bodies],
                           SENDER, Transport.UDP)


def test_auth_failures_by_service_and_reason_class():
    harness = Harness()
    receive(harness, b"Authentication: WebAdmin SSL: Client: 192.0.2.9: Invalid password for user admin",
            b"Authentication: HTTP Proxy: Client: 192.0.2.9: User x doesn't exist",
            b"Authentication: Proxy: Client: 192.0.2.9: User y doesn't exist")
    assert harness.value("syslog_collector_auth_failures_total", host="gw", service="webadmin_ssl",
                       reason_class="wrong_password") == 1.0
    assert harness.value("syslog_collector_auth_failures_total", host="gw", service="http_proxy",
                       reason_class="unknown_user") == 2.0


def test_messages_of_a_common_shape_are_each_counted(monkeypatch):
    # The summary of a shape is read once and reused (collector/parsing/shapes.py);
    # a message of the same shape with a defect is another shape.
    monkeypatch.setattr(pipeline_module, "_SHAPE_LIMIT", 2)
    harness = Harness()
    packet = b"Anti-Spoofing: Packet from LAN, proto:UDP, len:%s, ip/port:1.2.3.4:%d -> 5.6.7.8:53"
    receive(harness, *(packet % (b"48", port) for port in range(1, 5)), packet % (b"x", 5))
    for user in range(5):  # more shapes than the limit: summaries are read again
        receive(harness, b"Authentication: Admin: Client: 192.0.2.9: User u%d doesn't exist" % user,
                b"Authentication: Admin: Client: 192.0.2.9: Invalid password for user u%d" % user)
    assert len(harness.pipeline._summaries) <= 2
    assert harness.value("syslog_collector_anti_spoofing_packets_total", host="gw", interface="LAN", direction="from",
                       protocol="udp") == 5.0
    assert harness.value("syslog_collector_record_parse_errors_total", type="anti_spoofing") == 1.0
    for reason_class in ("unknown_user", "wrong_password"):
        assert harness.value("syslog_collector_auth_failures_total", host="gw", service="admin",
                           reason_class=reason_class) == 5.0


def test_anti_spoofing_by_interface_direction_protocol_with_interface_cap():
    harness = Harness()
    harness.metrics.max_interfaces_per_host = 2
    for interface in (b"LAN", b"WAN", b"DMZ", b"LAN"):
        receive(harness, b"Anti-Spoofing: Packet from %s, proto:UDP, len:1, ip/port:1.2.3.4:1 -> 5.6.7.8:2"
                % interface)
    labels = dict(host="gw", direction="from", protocol="udp")
    assert harness.value("syslog_collector_anti_spoofing_packets_total", interface="LAN", **labels) == 2.0
    assert harness.value("syslog_collector_anti_spoofing_packets_total", interface="WAN", **labels) == 1.0
    assert harness.value("syslog_collector_anti_spoofing_packets_total", interface="DMZ", **labels) is None
    assert harness.value("syslog_collector_anti_spoofing_packets_total", interface="other", **labels) == 1.0


def test_ftp_ips_and_engine_events():
    harness = Harness()
    receive(harness, b"FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, command: PORT 1,2,3,4,5,6",
            b"IPS: Alert, severity: Low, Rule ID: 1:1 X, proto:TCP, ip/port:1.2.3.4:1 > 5.6.7.8:2",
            b"Engine: Startup.", b"Engine: Shutdown.", b"Engine: Startup.")
    assert harness.value("syslog_collector_ftp_attacks_total", host="gw", kind="bounce_attack") == 1.0
    assert harness.value("syslog_collector_ftp_attacks_total", host="gw", kind="malicious_reply") == 0.0
    assert harness.value("syslog_collector_ips_events_total", host="gw", action="alert", severity="low") == 1.0
    assert harness.value("syslog_collector_engine_events_total", host="gw", event="startup") == 2.0
    assert harness.value("syslog_collector_engine_events_total", host="gw", event="shutdown") == 1.0
    assert harness.value("syslog_collector_engine_last_start_timestamp_seconds", host="gw") == harness.clock.seconds()


def test_one_read_from_several_senders_resolves_each_senders_hosts():
    hq = Firewall(name="hq", networks=(ipaddress.ip_network("192.0.2.0/30"),))
    harness = Harness(firewalls=(hq,))
    elsewhere = Sender.from_address("198.51.100.7", 514)
    # The same HOSTNAME from two senders: the registered one's messages are
    # its firewall's, the other's are tagged by their HOSTNAME.
    harness.pipeline.receive_batches([
        (SENDER, [b"<13>1 - gw app - - - one", b"<13>1 - gw app - - - two"]),
        (elsewhere, [b"<13>1 - gw app - - - three"]),
    ], Transport.UDP)
    assert [(m.host, m.sender, m.message) for m in harness.archive.messages] == [
        ("hq", SENDER.field, b"<13>1 - gw app - - - one"),
        ("hq", SENDER.field, b"<13>1 - gw app - - - two"),
        ("gw", elsewhere.field, b"<13>1 - gw app - - - three"),
    ]
    assert harness.value("syslog_collector_received_messages_total", host="hq", transport="udp") == 2.0
    assert harness.value("syslog_collector_received_messages_total", host="gw", transport="udp") == 1.0
    assert harness.value("syslog_collector_hostname_mismatches_total", host="hq") == 2.0


def test_tags_are_kept_across_reads_until_the_registry_is_replaced():
    harness = Harness()
    message = b"<13>1 - gw app - - - hello"
    harness.pipeline.receive([message], SENDER, Transport.UDP)
    harness.pipeline.receive([message], SENDER, Transport.UDP)
    assert [m.host for m in harness.archive.messages] == ["gw", "gw"]
    # A reload registers the sender: what it sends next is its firewall's.
    hq = Firewall(name="hq", networks=(ipaddress.ip_network("192.0.2.0/30"),))
    harness.pipeline.hosts = HostRegistry((hq,), UnregisteredPolicy.ACCEPT)
    harness.pipeline.receive([message], SENDER, Transport.UDP)
    assert [m.host for m in harness.archive.messages] == ["gw", "gw", "hq"]
    assert harness.value("syslog_collector_hostname_mismatches_total", host="hq") == 1.0


def test_one_host_from_several_senders_in_one_read_keeps_each_sender():
    harness = Harness()
    other = Sender.from_address("2001:db8::1", 514)
    harness.pipeline.receive_batches([(SENDER, [b"<13>1 - gw app - - - one"]),
                                    (other, [b"<13>1 - gw app - - - two"])], Transport.UDP)
    assert [(m.host, m.sender) for m in harness.archive.messages] == [("gw", SENDER.field), ("gw", other.field)]
    assert harness.value("syslog_collector_received_messages_total", host="gw", transport="udp") == 2.0
    assert harness.value("syslog_collector_received_bytes_total", host="gw", transport="udp") == 48.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300).map(lambda m: b"<" + m), min_size=1, max_size=5))
def test_any_bytes_from_the_wire_come_back_from_the_archive(messages):
    """Octet-counted frames -> decoder -> pipeline -> archive file -> the same bytes."""
    with tempfile.TemporaryDirectory() as root:
        harness = Harness()
        archive = FileArchive(Path(root), UTC, 1.0, harness.metrics, harness.clock)
        pipeline = Pipeline(hosts=harness.pipeline.hosts, archive=archive, metrics=harness.metrics,
                            clock=harness.clock, syslog_timezone=UTC)
        archive.startService()
        decoder = StreamDecoder()
        stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
        pipeline.receive(decoder.feed(stream), SENDER, Transport.TCP)
        archive.stopService()
        archived = [parse_line(line).message
                    for path in sorted(Path(root).glob("*/*.log"))
                    for line in path.read_bytes().splitlines(keepends=True)]
        assert sorted(archived) == sorted(messages)


GW1 = Firewall(name="gw1", networks=(ipaddress.ip_network("127.0.3.2/32"),))
GW2 = Firewall(name="gw2", networks=(ipaddress.ip_network("127.0.3.3/32"),))
IMPERSONATOR = Sender.from_address("127.0.3.9", 40000)


def test_a_firewalls_name_from_another_sender_is_the_senders_and_counted():
    harness = Harness(firewalls=(GW1, GW2))
    # Every registered firewall's count is there from the start, for increase().
    assert harness.value("syslog_collector_impersonations_total", host="gw1") == 0.0
    gw1 = Sender.from_address("127.0.3.2", 514)
    harness.pipeline.receive([b"<13>1 - gw1 app - - - Engine: Startup."], gw1, Transport.UDP)
    harness.pipeline.receive([b"<13>1 - gw1 app - - - Engine: Startup."] * 3, IMPERSONATOR, Transport.UDP)
    harness.pipeline.receive([b"<13>1 - GW1.example.com app - - - Engine: Startup."],
                           Sender.from_address("127.0.3.3", 514), Transport.TCP)
    assert harness.archived("gw1") == [b"<13>1 - gw1 app - - - Engine: Startup."]
    assert len(harness.archived("127.0.3.9")) == 3 and len(harness.archived("gw2")) == 1
    assert harness.value("syslog_collector_engine_events_total", host="gw1", event="startup") == 1.0
    assert harness.value("syslog_collector_engine_events_total", host="127.0.3.9", event="startup") == 3.0
    assert harness.value("syslog_collector_impersonations_total", host="gw1") == 4.0
    assert harness.value("syslog_collector_hostname_mismatches_total", host="gw2") == 1.0
    # The label names registered firewalls only.
    assert harness.value("syslog_collector_impersonations_total", host="127.0.3.9") is None


def test_a_tls_firewall_naming_another_is_counted_too():
    harness = Harness(firewalls=(GW1, GW2))
    harness.pipeline.receive([b"<13>1 - gw1 app - - - x", b"<13>1 - gw2 app - - - y"], IMPERSONATOR,
                           Transport.TLS, firewall=GW2)
    assert len(harness.archived("gw2")) == 2
    assert harness.value("syslog_collector_impersonations_total", host="gw1") == 1.0
    assert harness.value("syslog_collector_hostname_mismatches_total", host="gw2") == 1.0


def test_unregistered_hosts_past_the_bound_share_one_tag():
    harness = Harness()
    harness.pipeline.hosts = HostRegistry((), UnregisteredPolicy.ACCEPT, max_unregistered=2)
    for host in (b"a", b"b", b"c", b"d", b"a"):
        harness.pipeline.receive([b"<13>1 - %s app - - - x" % host], SENDER, Transport.UDP)
    assert [m.host for m in harness.archive.messages] == ["a", "b", "unregistered", "unregistered", "a"]
    assert {m.sender for m in harness.archive.messages} == {SENDER.field}
    assert harness.value("syslog_collector_unregistered_overflow_total") == 2.0
    assert harness.value("syslog_collector_received_messages_total", host="unregistered", transport="udp") == 2.0
    assert harness.value("syslog_collector_received_messages_total", host="c", transport="udp") is None


def test_a_reload_makes_no_room_for_more_unregistered_hosts():
    harness = Harness()
    harness.pipeline.hosts = HostRegistry((), UnregisteredPolicy.ACCEPT, max_unregistered=1)
    harness.pipeline.receive([b"<13>1 - a app - - - x", b"<13>1 - b app - - - x"], SENDER, Transport.UDP)
    harness.pipeline.hosts = HostRegistry((GW1,), UnregisteredPolicy.ACCEPT, 1, previous=harness.pipeline.hosts)
    assert harness.value("syslog_collector_impersonations_total", host="gw1") == 0.0
    harness.pipeline.receive([b"<13>1 - c app - - - x", b"<13>1 - a app - - - x"], SENDER, Transport.UDP)
    assert [m.host for m in harness.archive.messages] == ["a", "unregistered", "unregistered", "a"]
    assert harness.value("syslog_collector_unregistered_overflow_total") == 2.0
