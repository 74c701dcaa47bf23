import re
import time
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.parsing import kerio, syslog
from collector.parsing.kerio import parse_endpoint, parse_record, record_in, summarize, summary_in
from collector.records import (
    AntiSpoofing,
    AuthFailure,
    AuthService,
    Direction,
    Endpoint,
    FtpAttack,
    FtpKind,
    IpProtocol,
    IpsAction,
    IpsEvent,
    IpsSeverity,
    ReasonClass,
    Record,
    RecordSummary,
    RecordType,
)

CORPUS = Path(__file__).parent / "corpus" / "kerio-security.txt"


def corpus():
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        expected, _, text = line.partition(" | ")
        yield pytest.param(RecordType(expected), text.encode(), id=text[:60] or "empty")


def summary_of(record: Record) -> RecordSummary:
    """The summary a full record implies: what ``summarize`` must give."""
    if isinstance(record, AntiSpoofing):
        labels = (record.interface, record.direction, record.protocol)
    elif isinstance(record, AuthFailure):
        labels = (record.service, record.reason_class)
    elif isinstance(record, IpsEvent):
        labels = (record.action, record.severity)
    elif isinstance(record, FtpAttack):
        labels = (record.kind,)
    else:
        labels = ()
    return RecordSummary(record.type, labels, bool(record.defects))


def assert_summary_agrees(line: bytes) -> None:
    assert summarize(line) == summary_of(parse_record(line)), line


@pytest.mark.parametrize("expected, line", corpus())
def test_corpus_types(expected, line):
    assert parse_record(line).type is expected
    assert_summary_agrees(line)


SYSLOG_ENVELOPES = [
    b"<116>1 2026-11-25T10:00:00+01:00 fw-1 security - - - %s",
    b"<116>1 2026-11-25T10:00:00+01:00 fw-1 security - - - \xef\xbb\xbf%s",
    b"<116>Nov 25 10:00:00 fw-1 security: %s",
    b"<116>Nov 25 10:00:00 fw-1 %s",  # no TAG: the marker looks like one
    b"<116>Nov 25 10:00:00 %s",
    b"%s",
]


@pytest.mark.parametrize("expected, line", corpus())
def test_summary_in_a_message_agrees_with_its_record(expected, line):
    # The collector reads a message through syslog.envelope, the archive
    # reader through syslog.parse: both must count the same record.
    for envelope in SYSLOG_ENVELOPES:
        data = envelope % line
        assert summary_in(syslog.envelope(data)) == summary_of(record_in(syslog.parse(data))), data


def test_manual_anti_spoofing_example():
    record = parse_record(b"[17/Jul/2008 11:46:38] Anti-Spoofing: Packet from LAN, proto:TCP, len:48, "
                          b"ip/port:61.173.81.166:1864 -> 195.39.55.10:445, flags: SYN, "
                          b"seq:3819654104 ack:0, win:16384, tcplen:0")
    assert record == AntiSpoofing(
        event_time=datetime(2008, 7, 17, 11, 46, 38),
        direction=Direction.FROM, interface="LAN", protocol=IpProtocol.TCP, protocol_name="TCP",
        length=48,
        source=Endpoint(address=ip_address("61.173.81.166"), port=1864),
        destination=Endpoint(address=ip_address("195.39.55.10"), port=445),
        tcp_flags=("SYN",), seq=3819654104, ack=0, window=16384, tcp_length=0,
    )


def test_old_blank_before_comma_and_kerio_8_separator():
    a = parse_record(b"Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:61.173.81.166:1864 "
                     b"-> 195.39.55.10:445, flags: SYN , seq:3819654104 ack:0, win:16384, tcplen:0")
    b = parse_record(b"Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:61.173.81.166:1864 "
                     b"> 195.39.55.10:445, flags: SYN, seq:3819654104 ack:0, win:16384, tcplen:0")
    assert a == b
    assert a.tcp_flags == ("SYN",) and not a.defects


def test_kerio_9_udp_form():
    record = parse_record(b"{pktdrop} packet dropped: Anti-spoofing (from Cable, proto:UDP, len:334, "
                          b"10.1.1.5:68 -> 10.1.1.1:67, udplen:306)")
    assert isinstance(record, AntiSpoofing)
    assert (record.direction, record.interface, record.protocol) == (Direction.FROM, "Cable", IpProtocol.UDP)
    assert record.source == Endpoint(address=ip_address("10.1.1.5"), port=68)
    assert record.destination == Endpoint(address=ip_address("10.1.1.1"), port=67)
    assert record.udp_length == 306 and record.length == 334
    assert record.defects == ()


def test_kerio_9_icmp_has_no_ports():
    record = parse_record(b"{pktdrop} packet dropped: Anti-spoofing (to Internet 2 - Backup, proto:ICMP, "
                          b"len:84, 192.0.2.7 > 198.51.100.1, type:8 code:0 id:12380 seq:1 ttl:64)")
    assert record.protocol is IpProtocol.ICMP and record.direction is Direction.TO
    assert record.interface == "Internet 2 - Backup"
    assert record.source.port is None and record.destination.port is None
    assert record.seq is None  # ICMP's seq is not a TCP sequence number


def test_interface_with_commas_and_non_ascii():
    record = parse_record("Anti-Spoofing: Packet from Pobočka, Wi-Fi, proto:UDP, len:76, "
                          "ip/port:172.16.5.9:123 -> 172.16.0.1:123".encode())
    assert record.interface == "Pobočka, Wi-Fi"
    assert record.udp_length is None and record.defects == ()


def test_multiple_flags():
    record = parse_record(b"Anti-Spoofing: Packet to LAN, proto:TCP, len:52, ip/port:10.0.5.20:50312 -> "
                          b"10.9.0.1:443, flags: ACK PSH, seq:1 ack:2, win:3, tcplen:7")
    assert record.tcp_flags == ("ACK", "PSH")
    assert (record.seq, record.ack, record.window, record.tcp_length) == (1, 2, 3, 7)


def test_ipv6_endpoints_are_never_split_at_the_last_colon():
    record = parse_record(b"Anti-Spoofing: Packet from WAN, proto:ICMPv6, len:64, "
                          b"ip/port:2001:db8::1 -> 2001:db8:5::20")
    assert record.source == Endpoint(address=ip_address("2001:db8::1"))
    assert record.destination == Endpoint(address=ip_address("2001:db8:5::20"))
    assert record.protocol is IpProtocol.ICMP
    bracketed = parse_record(b"Anti-Spoofing: Packet from WAN, proto:UDP, len:64, "
                             b"ip/port:[2001:db8::1]:53 -> [2001:db8::2]:5353, udplen:44")
    assert bracketed.source == Endpoint(address=ip_address("2001:db8::1"), port=53)
    assert bracketed.udp_length == 44


def test_truncated_tcp_tail_is_typed_with_defects():
    record = parse_record(b"Anti-Spoofing: Packet from LAN, proto:TCP, len:48, "
                          b"ip/port:61.173.81.166:1864 -> 195.39.55.10:445, flags: SY")
    assert record.type is RecordType.ANTI_SPOOFING
    assert set(record.defects) == {"seq", "ack", "window", "tcp_length"}


def test_truncated_kerio_9_line_is_typed_with_defect():
    record = parse_record(b"{pktdrop} packet dropped: Anti-spoofing (from Cable, proto:UDP, len:334, "
                          b"10.1.1.5:68 -> 10.1.1.1:67, udpl")
    assert record.type is RecordType.ANTI_SPOOFING
    assert "truncated" in record.defects


def test_missing_length_is_a_defect():
    record = parse_record(b"Anti-Spoofing: Packet from LAN, proto:UDP, ip/port:1.2.3.4:1 -> 5.6.7.8:2")
    assert record.type is RecordType.ANTI_SPOOFING and record.defects == ("length",)


@pytest.mark.parametrize("line, kind, record_type, detail", [
    (b"FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, command: PORT 10,11,12,13,14,15",
     FtpKind.BOUNCE_ATTACK, RecordType.FTP_BOUNCE_ATTACK, "PORT 10,11,12,13,14,15"),
    (b"FTP: Malicious server reply: client: 1.2.3.4, server: 5.6.7.8, "
     b"response: 227 Entering Passive Mode (10,11,12,13,14,15)",
     FtpKind.MALICIOUS_REPLY, RecordType.FTP_MALICIOUS_REPLY, "227 Entering Passive Mode (10,11,12,13,14,15)"),
])
def test_ftp(line, kind, record_type, detail):
    record = parse_record(line)
    assert record == FtpAttack(type=record_type, kind=kind, client=ip_address("1.2.3.4"),
                               server=ip_address("5.6.7.8"), detail=detail)


def test_ftp_without_command_is_typed_with_defect():
    record = parse_record(b"FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8")
    assert record.type is RecordType.FTP_BOUNCE_ATTACK and record.defects == ("command",)


@pytest.mark.parametrize("service_name, service", [
    ("Admin", AuthService.ADMIN), ("WebAdmin", AuthService.WEBADMIN),
    ("WebAdmin SSL", AuthService.WEBADMIN_SSL), ("Proxy", AuthService.HTTP_PROXY),
    ("WebInterface", AuthService.WEBINTERFACE), ("HTTP Proxy", AuthService.HTTP_PROXY),
    ("VPN Client", AuthService.VPN_CLIENT), ("Kerio Connect", AuthService.OTHER),
])
def test_auth_services(service_name, service):
    record = parse_record(f"Authentication: {service_name}: Client: 192.0.2.1: wrong password".encode())
    assert isinstance(record, AuthFailure)
    assert (record.service, record.service_name) == (service, service_name)


@pytest.mark.parametrize("reason, reason_class, user", [
    ("wrong password", ReasonClass.WRONG_PASSWORD, None),
    ("nonexistent user", ReasonClass.UNKNOWN_USER, None),
    ("Invalid password for user admin", ReasonClass.WRONG_PASSWORD, "admin"),
    ("User jdoe doesn't exist", ReasonClass.UNKNOWN_USER, "jdoe"),
    ("User Jan Novak does not exist", ReasonClass.UNKNOWN_USER, "Jan Novak"),
    ("Kerberos 5 auth: user x@example.com not authenticated", ReasonClass.DIRECTORY_ERROR, "x@example.com"),
    ("LDAP server is not reachable", ReasonClass.DIRECTORY_ERROR, None),
    ("User guest is disabled", ReasonClass.ACCOUNT_DISABLED, "guest"),
    ("IP address is blocked for 5 minutes", ReasonClass.IP_BLOCKED, None),
    ("Invalid 2-step verification code for user admin", ReasonClass.MFA_FAILED, "admin"),
    ("Invalid password for user DOMAIN\\jnovak.", ReasonClass.WRONG_PASSWORD, "DOMAIN\\jnovak"),
    ("Authentication failed", ReasonClass.OTHER, None),
])
def test_auth_reasons(reason, reason_class, user):
    record = parse_record(f"Authentication: WebAdmin: Client: 192.0.2.1: {reason}".encode())
    assert record.reason == reason.strip()
    assert record.reason_class is reason_class
    assert record.user == user


@pytest.mark.parametrize("client", ["2001:db8::1a", "::ffff:192.0.2.5", "2001:db8::", "192.0.2.1"])
def test_auth_client_addresses(client):
    record = parse_record(f"Authentication: HTTP Proxy: Client: {client}: Kerberos 5 auth: failed".encode())
    assert record.client == ip_address(client)
    assert record.reason == "Kerberos 5 auth: failed"


def test_ips_drop_with_annotations():
    record = parse_record(
        b"IPS: Packet drop, severity: High, Rule ID: 1:2010575 ET TROJAN ASProtect/ASPack Packed Binary, "
        b"proto:TCP, ip/port:198.51.100.71:80(static.example.net) > "
        b"192.168.48.140:50211(pc-14.example.local,user:jdoe)")
    assert record == IpsEvent(
        action=IpsAction.DROP, severity=IpsSeverity.HIGH, severity_name="High",
        rule_id="1:2010575", rule_name="ET TROJAN ASProtect/ASPack Packed Binary",
        protocol=IpProtocol.TCP, protocol_name="TCP",
        source=Endpoint(address=ip_address("198.51.100.71"), port=80, hostname="static.example.net"),
        destination=Endpoint(address=ip_address("192.168.48.140"), port=50211,
                             hostname="pc-14.example.local", user="jdoe"),
    )


def test_ips_alert_without_separator_before_proto():
    record = parse_record(b"IPS: Alert, severity: Medium, Rule ID: 1:2010575 ET TROJAN Packed "
                          b"Binaryproto:TCP, ip/port:95.211.98.71:80 > 192.168.48.131:49960")
    assert record.action is IpsAction.ALERT and record.severity is IpsSeverity.MEDIUM
    assert record.rule_name == "ET TROJAN Packed Binary"
    assert record.destination.port == 49960


@pytest.mark.parametrize("severity, expected", [
    ("High", IpsSeverity.HIGH), ("Medium", IpsSeverity.MEDIUM), ("Low", IpsSeverity.LOW),
    ("Blacklist", IpsSeverity.BLACKLIST), ("Critical", IpsSeverity.OTHER)])
def test_ips_severities(severity, expected):
    record = parse_record(f"IPS: Packet drop, severity: {severity}, Rule ID: 1:1 R, proto:UDP, "
                          f"ip/port:192.0.2.1:1 -> 192.0.2.2:2".encode())
    assert record.severity is expected and record.defects == ()


def test_ips_without_endpoints_is_typed_with_defect():
    record = parse_record(b"IPS: Packet drop, severity: High, Rule ID: 1:2010575 ET TROJAN Something")
    assert record.type is RecordType.IPS and record.defects == ("endpoints",)
    assert record.rule_name == "ET TROJAN Something"


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\xef\xbf\xbd", b"  "])
@pytest.mark.parametrize("suffix", [b"", b"\r", b"  ", b" \r\n"])
def test_envelope_leftovers_are_ignored(prefix, suffix):
    record = parse_record(prefix + b"[17/Dec/2008 12:11:33] Engine: Startup." + suffix)
    assert record.type is RecordType.ENGINE_STARTUP
    assert record.event_time == datetime(2008, 12, 17, 12, 11, 33)


def test_bracket_that_is_no_timestamp_is_unknown():
    assert parse_record(b"[notatime] Engine: Startup.").type is RecordType.UNKNOWN


def test_impossible_date_is_a_defect():
    record = parse_record(b"[31/Feb/2008 12:11:33] Engine: Startup.")
    assert record.type is RecordType.ENGINE_STARTUP
    assert record.event_time is None and record.defects == ("event_time",)


@pytest.mark.parametrize("text, endpoint", [
    ("192.0.2.1:80", Endpoint(address=ip_address("192.0.2.1"), port=80)),
    ("192.0.2.1", Endpoint(address=ip_address("192.0.2.1"))),
    ("[2001:db8::1]:443", Endpoint(address=ip_address("2001:db8::1"), port=443)),
    ("[2001:db8::1]", Endpoint(address=ip_address("2001:db8::1"))),
    ("2001:db8::1", Endpoint(address=ip_address("2001:db8::1"))),
    ("2001:db8::1:443", Endpoint(address=ip_address("2001:db8::1:443"))),
    ("10.0.0.1:5(host)", Endpoint(address=ip_address("10.0.0.1"), port=5, hostname="host")),
    ("10.0.0.1:5(user:bob)", Endpoint(address=ip_address("10.0.0.1"), port=5, user="bob")),
    ("192.0.2.1:99999", None), ("192.0.2:80", None), ("[2001:db8::1]443", None), ("host:80", None),
])
def test_endpoints(text, endpoint):
    assert parse_endpoint(text) == endpoint


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_never_raises_on_arbitrary_text(text):
    assert_summary_agrees(text.encode("utf-8", "surrogatepass"))


markers = st.sampled_from([
    "Anti-Spoofing: Packet from ", "{pktdrop} packet dropped: Anti-spoofing (to ",
    "FTP: Bounce attack attempt: client: ", "Authentication: ", "IPS: Packet drop, severity: ", "Engine: "])


@settings(max_examples=500)
@given(markers, st.text(max_size=150))
def test_never_raises_after_a_marker(marker, rest):
    assert_summary_agrees((marker + rest).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("line", [
    "Anti-Spoofing: Packet from LAN, proto:TCP, len:²8, ip/port:192.0.2.1:5 -> 192.0.2.2:6",
    "Anti-Spoofing: Packet from LAN, proto:UDP, len:8, ip/port:192.0.2.1:5² -> 192.0.2.2:6",
    "Anti-Spoofing: Packet from LAN, proto:UDP, len:8, ip/port:[2001:db8::1]:٣ -> 192.0.2.2:6",
])
def test_digits_that_int_refuses(line):
    # str.isdigit() holds for these, int() raises on them.
    assert_summary_agrees(line.encode())


endpoint_forms = st.one_of(
    st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,3}\.[0-9]{1,3}(:[0-9]{1,6})?(\([a-z,:]{0,12}\)?)?",
                  fullmatch=True),
    st.from_regex(r"\[[0-9a-f:.]{2,12}\](:[0-9]{1,6})?", fullmatch=True),
    st.text(st.sampled_from("0123456789.:[]()abf,-"), max_size=30),
)



@st.composite
def numeric_endpoints(draw):
    """Dotted quads and ports around their limits, some with leading zeros,
    some without a port."""
    def number(low, high, width):
        value = draw(st.integers(low, high))
        return str(value).zfill(draw(st.integers(1, width)))
    quad = ".".join(number(0, 300, 3) for _ in range(4))
    port = draw(st.sampled_from(["", ":" + number(0, 70000, 5)]))
    return f"{quad}{port}{draw(st.sampled_from(['', '(host)', '(h,user:u)']))}"


@settings(max_examples=1000)
@given(st.one_of(numeric_endpoints(), endpoint_forms))
@example("255.255.255.255:65535")
@example("256.0.0.1:1")
@example("1.2.3.4:65536")
@example("1.2.3.4:65539")
@example("1.2.3.4:65599")
@example("1.2.3.4:99999")
@example("001.002.003.004:00080")
@example("1.2.3.4:000000")
@example("1.2.3.259:5(x)")
@example("1.2.3.4(x)")
@example("1.2.3.256")
def test_endpoint_check_agrees_with_the_parser(text):
    # The summary only checks endpoints, with a regex; the record parses them.
    assert kerio._is_endpoint(text) == (parse_endpoint(text) is not None)
    address = text.partition(":")[0]
    assert kerio._is_address(address) == (kerio._address(address) is not None)


@settings(max_examples=500)
@given(numeric_endpoints(), numeric_endpoints())
def test_summary_agrees_on_numeric_endpoints(src, dst):
    assert_summary_agrees(f"Anti-Spoofing: Packet from LAN, proto:UDP, len:5, ip/port:{src} -> {dst}".encode())
    assert_summary_agrees(f"IPS: Alert, severity: Low, Rule ID: 1:2 X, proto:UDP, ip/port:{src} > {dst}".encode())
    client, server = src.partition(":")[0], dst.partition(":")[0]
    assert_summary_agrees(f"FTP: Bounce attack attempt: client: {client}, server: {server}, command: P".encode())


tails = st.sampled_from([
    "", ", flags: SYN, seq:1 ack:0, win:512, tcplen:0", ", flags: SYN ACK , seq:1 ack:2, win:5, tcplen:0",
    ", flags: SYN, seq:1 ack:0, win:512", ", seq:1 ack:0, win:512, tcplen:0", ", flags: SYN",
    ", udplen:306)", ")", ", flags:SYN, seq:1 ack:0, win:5, tcplen:0)"])


@settings(max_examples=500)
@given(st.sampled_from(["Anti-Spoofing: Packet ", "{pktdrop} packet dropped: Anti-spoofing (",
                        "[25/Nov/2026 10:00:00] Anti-Spoofing: Packet ",
                        "[31/Feb/2026 10:00:00] Anti-Spoofing: Packet "]),
       st.sampled_from(["from", "to"]), st.sampled_from(["TCP", "UDP", "ICMP", "", "tcp"]),
       st.sampled_from(["48", "", "x"]), endpoint_forms, endpoint_forms, tails)
def test_summary_agrees_on_generated_anti_spoofing(marker, direction, proto, length, src, dst, tail):
    assert_summary_agrees(
        f"{marker}{direction} LAN, proto:{proto}, len:{length}, ip/port:{src} -> {dst}{tail}".encode())


@settings(max_examples=300)
@given(st.sampled_from(["Packet drop", "Alert"]), st.sampled_from(["High", " low ", "Blacklist", "x"]),
       st.sampled_from(["", ", Rule ID: 1:2 ET X", ", Rule ID: 1:2"]), st.booleans(),
       endpoint_forms, endpoint_forms)
def test_summary_agrees_on_generated_ips(action, severity, rule, with_endpoints, src, dst):
    endpoints = f", proto:TCP, ip/port:{src} > {dst}" if with_endpoints else ""
    assert_summary_agrees(f"IPS: {action}, severity: {severity}{rule}{endpoints}".encode())


@settings(max_examples=300)
@given(endpoint_forms, endpoint_forms, st.sampled_from(["", ", command: PORT 1,2", ", response: 227 x"]),
       st.sampled_from(["Bounce attack attempt", "Malicious server reply"]))
def test_summary_agrees_on_generated_ftp(client, server, detail, kind):
    assert_summary_agrees(f"FTP: {kind}: client: {client}, server: {server}{detail}".encode())


ipv4 = st.ip_addresses(v=4)
any_ip = st.ip_addresses()
port = st.integers(0, 65535)
# Interface names: free text, but never containing the ", proto:" that ends them.
interface = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
                    max_size=30).filter(lambda s: ", proto:" not in s and s == s.strip())


def endpoint_text(address, port_number):
    if port_number is None:
        return str(address)
    return f"[{address}]:{port_number}" if address.version == 6 else f"{address}:{port_number}"


@settings(max_examples=300)
@given(st.sampled_from(["from", "to"]), interface, st.sampled_from(["->", ">"]),
       any_ip, port, any_ip, port, st.integers(20, 65535), st.booleans(),
       st.lists(st.sampled_from(["SYN", "ACK", "PSH", "FIN", "RST"]), min_size=1, max_size=3),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_generated_tcp_anti_spoofing_parses_back(direction, iface, arrow, src, sport, dst, dport,
                                                 length, kerio9, flags, seq, ack):
    body = (f"{direction} {iface}, proto:TCP, len:{length}, "
            f"{'' if kerio9 else 'ip/port:'}{endpoint_text(src, sport)} {arrow} {endpoint_text(dst, dport)}, "
            f"flags: {' '.join(flags)}, seq:{seq} ack:{ack}, win:512, tcplen:0")
    line = (f"{{pktdrop}} packet dropped: Anti-spoofing ({body})" if kerio9
            else f"Anti-Spoofing: Packet {body}")
    assert_summary_agrees(line.encode())
    record = parse_record(line.encode())
    assert isinstance(record, AntiSpoofing), line
    assert record.direction == Direction(direction) and record.interface == iface
    assert (record.source.address, record.source.port) == (src, sport)
    assert (record.destination.address, record.destination.port) == (dst, dport)
    assert record.length == length and record.tcp_flags == tuple(flags)
    assert (record.seq, record.ack, record.window, record.tcp_length) == (seq, ack, 512, 0)
    assert record.defects == ()


service_names = st.sampled_from(["Admin", "WebAdmin", "WebAdmin SSL", "Proxy", "WebInterface",
                                 "HTTP Proxy", "VPN Client"])
# User names without blanks or words that would change the reason's class.
CLASS_WORDS = ("blocked", "disabled", "locked", "expired", "kerberos", "ldap", "authenticated",
               "2-step", "two-step", "totp", "nonexistent", "exist", "unknown user", "verification")
users = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="._@\\-"),
                min_size=1, max_size=20).filter(
    lambda u: not u.endswith(".") and not any(w in u.casefold() for w in CLASS_WORDS))


@settings(max_examples=300)
@given(service_names, any_ip, users, st.sampled_from([
    ("Invalid password for user {}", ReasonClass.WRONG_PASSWORD),
    ("User {} doesn't exist", ReasonClass.UNKNOWN_USER),
    ("User {} does not exist", ReasonClass.UNKNOWN_USER),
    ("Kerberos 5 auth: user {} not authenticated", ReasonClass.DIRECTORY_ERROR),
    ("User {} is disabled", ReasonClass.ACCOUNT_DISABLED),
]))
def test_generated_auth_failure_parses_back(service_name, client, user, reason_template):
    template, reason_class = reason_template
    reason = template.format(user)
    line = f"Authentication: {service_name}: Client: {client}: {reason}".encode()
    assert_summary_agrees(line)
    record = parse_record(line)
    assert isinstance(record, AuthFailure)
    assert (record.service_name, record.client, record.reason) == (service_name, client, reason)
    assert record.reason_class is reason_class
    assert record.user == user


@settings(max_examples=200)
@given(ipv4, ipv4, st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40))
def test_generated_ftp_parses_back(client, server, command):
    command = command.strip()
    record = parse_record(f"FTP: Bounce attack attempt: client: {client}, server: {server}, "
                          f"command: {command}".encode())
    assert isinstance(record, FtpAttack)
    assert (record.client, record.server) == (client, server)
    assert record.detail == (command or None)


# The IPS pattern as first written, with a lazy rule name (and the packet's
# fields bounded as a sender's 64 KiB may not be read): the reading in use
# must read every line the same way.
IPS_AS_FIRST_WRITTEN = re.compile(
    r"IPS: (?P<action>Packet drop|Alert), severity: (?P<severity>[^,]*)"
    r"(?:, Rule ID: (?P<rule_id>\S+)(?: (?P<rule_name>.*?))?,? ?(?=proto:|$))?"
    r"(?:proto:(?P<proto>[^,\s]{0,32}), ?ip/port: ?(?P<src>\S{1,1024}) (?:->|>) (?P<dst>\S{1,1024}))?"
)


@settings(max_examples=2000)
@given(st.sampled_from(["Packet drop", "Alert"]),
       st.lists(st.sampled_from(["ET", " ", ",", "p", "proto:", "prot", "x", "\n", "1:2", ", ", "TCP", "ip/port:",
                                 " > "]),
                max_size=14),
       st.sampled_from(["", ", proto:TCP, ip/port:1.2.3.4:5 > 6.7.8.9:10", "proto:UDP, ip/port:a > b",
                        ",", ", ", "\n"]))
def test_ips_rule_name_is_read_as_a_lazy_pattern_would(action, rule, tail):
    text = f"IPS: {action}, severity: High, Rule ID: {''.join(rule)}{tail}"
    expected = IPS_AS_FIRST_WRITTEN.match(text)
    assert kerio._ips_fields(text) == (expected and expected.groupdict())


@pytest.mark.parametrize("filler", ["a" * 60000, "a p," * 15000, " " * 60000, ", prot" * 10000])
def test_ips_lines_that_do_not_match_fail_in_linear_time(filler):
    # A 64 KiB frame is the most a sender can make us read; nested
    # quantifiers could take exponential time on it.
    start = time.process_time()
    summarize(f"IPS: Alert, severity: High, Rule ID: 1:2 {filler}\nx".encode())
    assert time.process_time() - start < 1.0


@settings(max_examples=500)
@given(tails, st.sampled_from(["", " s=1", ", seq:x", "\nflags: SYN"]))
def test_a_tail_taken_for_complete_lacks_no_tcp_field(tail, more):
    # The quick check must never hide a defect the fields would show.
    text = f"from LAN, proto:TCP, len:5, ip/port:1.2.3.4:5 -> 6.7.8.9:10{tail}{more}"
    match = kerio._ANTI_SPOOFING.match(text)
    missing = kerio._tcp_fields(match["tail"])[1]
    assert match["complete_tcp"] is None or missing == []
    if tail.startswith(", flags: SYN, seq:1 ack:0, win:512, tcplen:0"):
        assert match["complete_tcp"] is not None
