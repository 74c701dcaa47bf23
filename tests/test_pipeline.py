import ipaddress

from collector.config import Firewall, UnregisteredPolicy
from collector.pipeline import Sender
from collector.records import RecordType, Transport
from helpers import Bench

SENDER = Sender.from_address("192.0.2.1", 40000)


def test_every_type_is_zero_as_soon_as_a_host_is_seen():
    bench = Bench()
    bench.pipeline.receive([b"<13>1 - gw app - - - Engine: Startup."], SENDER, Transport.UDP)
    for record_type in RecordType:
        expected = 1.0 if record_type is RecordType.ENGINE_STARTUP else 0.0
        assert bench.value("syslog_collector_records_total", host="gw", type=record_type.value) == expected
    assert bench.value("syslog_collector_received_messages_total", host="gw", transport="udp") == 1.0
    assert bench.value("syslog_collector_received_messages_total", host="gw", transport="tcp") == 0.0


def test_unreadable_header_is_counted_and_archived_under_the_sender_address():
    bench = Bench()
    bench.pipeline.receive([b"no header at all"], SENDER, Transport.TCP)
    assert bench.archived("192.0.2.1") == [b"no header at all"]
    assert bench.value("syslog_collector_header_parse_errors_total") == 1.0
    assert bench.value("syslog_collector_records_total", host="192.0.2.1", type="unknown") == 1.0


def test_bare_record_without_envelope_is_still_typed():
    bench = Bench()
    bench.pipeline.receive([b"[17/Dec/2008 12:11:33] Engine: Shutdown."], SENDER, Transport.UDP)
    assert bench.value("syslog_collector_records_total", host="192.0.2.1", type="engine_shutdown") == 1.0


def test_bsd_message_without_tag_is_typed():
    bench = Bench()
    bench.pipeline.receive([b"<134>Nov 25 12:00:00 gw Engine: Startup.",
                            b"<134>Nov 25 12:00:00 gw Authentication: Admin: Client: 1.2.3.4: wrong password"],
                           SENDER, Transport.UDP)
    assert bench.value("syslog_collector_records_total", host="gw", type="engine_startup") == 1.0
    assert bench.value("syslog_collector_records_total", host="gw", type="auth_failure") == 1.0


def test_defects_are_counted_by_type():
    bench = Bench()
    bench.pipeline.receive([b"<13>1 - gw app - - - FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8"],
                           SENDER, Transport.UDP)
    assert bench.value("syslog_collector_record_parse_errors_total", type="ftp_bounce_attack") == 1.0


def test_hostname_mismatch_is_counted_for_registered_firewalls():
    hq = Firewall(name="hq", networks=(ipaddress.ip_network("192.0.2.0/24"),))
    bench = Bench(firewalls=(hq,))
    bench.pipeline.receive([b"<13>1 - hq app - - - x", b"<13>1 - other app - - - y"], SENDER, Transport.UDP)
    assert bench.archived("hq") == [b"<13>1 - hq app - - - x", b"<13>1 - other app - - - y"]
    assert bench.value("syslog_collector_hostname_mismatches_total", host="hq") == 1.0


def test_refused_sender_is_counted():
    bench = Bench(unregistered=UnregisteredPolicy.REFUSE)
    assert not bench.pipeline.accepts(SENDER)
    assert bench.value("syslog_collector_refused_messages_total", reason="unregistered") == 1.0


def test_host_label_cap():
    bench = Bench(max_hosts=2)
    for host in ("a", "b", "c", "d"):
        bench.pipeline.receive([b"<13>1 - %s app - - - x" % host.encode()], SENDER, Transport.UDP)
    assert bench.value("syslog_collector_records_total", host="c", type="unknown") is None
    assert bench.value("syslog_collector_records_total", host="other", type="unknown") == 2.0
    assert bench.value("syslog_collector_host_label_overflow_total") == 2.0
    # The archive keeps the true host.
    assert bench.archived("d") == [b"<13>1 - d app - - - x"]


def test_clock_skew_and_last_message_time():
    bench = Bench()
    now = bench.clock.seconds()
    bench.pipeline.receive([b"<13>1 2025-11-25T11:59:58Z gw app - - - x"], SENDER, Transport.UDP)
    assert bench.value("syslog_collector_clock_skew_seconds", host="gw") == 2.0
    assert bench.value("syslog_collector_last_message_timestamp_seconds", host="gw") == now
    bench.clock.advance(1)
    bench.pipeline.receive([b"<13>Nov 25 12:00:06 gw app: x"], SENDER, Transport.UDP)
    assert bench.value("syslog_collector_clock_skew_seconds", host="gw") == -5.0
