"""Parse Kerio Control / WinRoute Security-log lines into typed records.

Pure code: no I/O, no Twisted, no clock. ``parse_record`` never raises. The
syntaxes come from the WinRoute 6.x manual ("Security Log") and the wording
of Kerio Control 7, 8 and 9. A line is typed only when its marker and its
mandatory fields parse; anything else, including the look-alike lines of the
Filter, Debug and Warning logs, is ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from ipaddress import IPv4Address, ip_address

from collector.records import (
    UNKNOWN,
    AntiSpoofing,
    AuthFailure,
    AuthService,
    Direction,
    Endpoint,
    EngineEvent,
    FtpAttack,
    FtpKind,
    IPAddress,
    IpsAction,
    IpsEvent,
    IpsSeverity,
    Protocol,
    ReasonClass,
    Record,
    RecordType,
)
from collector.syslog import SyslogMessage

# The first word of each record type.
MARKER_TAGS = frozenset({"Anti-Spoofing", "Authentication", "Engine", "FTP", "IPS"})

_LEADING_JUNK = (b"\xef\xbb\xbf", b"\xef\xbf\xbd")  # BOM, or U+FFFD from a relay
_TRAILING_JUNK = b" \t\r\n"
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    start=1)}

# [17/Jul/2008 11:46:38]
_EVENT_TIME = re.compile(r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}) (\d\d):(\d\d):(\d\d)\] ?")

# Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:A:1864 -> B:445, flags: SYN, ...
# {pktdrop} packet dropped: Anti-spoofing (from Cable, proto:UDP, len:334, A:68 -> B:67, udplen:306)
# The interface is free text and may hold commas: it runs up to ", proto:".
_ANTI_SPOOFING = re.compile(
    r"(?P<direction>from|to) (?P<interface>.+?), proto:(?P<proto>[^,\s]*),? ?"
    r"(?:len:(?P<len>[^,]*), ?)?(?:ip/port: ?)?"
    r"(?P<src>\S+) (?:->|>) (?P<dst>[^\s,)]+)(?P<tail>.*)"
)
_TCP_FLAGS = re.compile(r"flags:\s*([A-Z]+(?: [A-Z]+)*)")
_NUMBER_FIELDS = re.compile(r"\b(seq|ack|win|tcplen|udplen):(\d+)")

# FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, command: PORT 10,11,12,13,14,15
_FTP = re.compile(
    r"FTP: (?P<kind>Bounce attack attempt|Malicious server reply): "
    r"client: (?P<client>[^,\s]+), server: (?P<server>[^,\s]+)"
    r"(?:, (?:command|response):? ?(?P<detail>.*))?"
)
_FTP_KINDS = {
    "Bounce attack attempt": (FtpKind.BOUNCE_ATTACK, RecordType.FTP_BOUNCE_ATTACK, "command"),
    "Malicious server reply": (FtpKind.MALICIOUS_REPLY, RecordType.FTP_MALICIOUS_REPLY, "response"),
}

# Authentication: <service>: Client: <address>: <reason>. Service names hold
# blanks, IPv6 clients hold colons, reasons hold ": " -- so the client ends at
# the first colon followed by a blank, and the reason is the rest.
_AUTH = re.compile(r"Authentication: (?P<service>.+?): Client: (?P<client>.+?): (?P<reason>.*)")
_AUTH_SERVICES = {
    "admin": AuthService.ADMIN,
    "webadmin": AuthService.WEBADMIN,
    "webadmin ssl": AuthService.WEBADMIN_SSL,
    "webinterface": AuthService.WEBINTERFACE,
    "proxy": AuthService.HTTP_PROXY,
    "http proxy": AuthService.HTTP_PROXY,
    "vpn client": AuthService.VPN_CLIENT,
}
# Checked in this order: the first class whose words appear wins.
_REASON_CLASSES = (
    (ReasonClass.MFA_FAILED, ("2-step", "two-step", "verification code", "totp")),
    (ReasonClass.IP_BLOCKED, ("blocked",)),
    (ReasonClass.ACCOUNT_DISABLED, ("disabled", "locked", "expired")),
    (ReasonClass.DIRECTORY_ERROR, ("kerberos", "ldap", "not authenticated")),
    (ReasonClass.UNKNOWN_USER, ("doesn't exist", "does not exist", "nonexistent", "unknown user")),
    (ReasonClass.WRONG_PASSWORD, ("password",)),
)
_REASON_USER = (
    re.compile(r"\bfor user (?P<user>.+?)\.?$", re.IGNORECASE),
    re.compile(r"^user (?P<user>.+?) (?:doesn't|does not) exist", re.IGNORECASE),
    re.compile(r"\buser (?P<user>\S+) not authenticated", re.IGNORECASE),
    re.compile(r"^user (?P<user>.+?) is (?:disabled|locked|expired)", re.IGNORECASE),
)

# IPS: Packet drop, severity: High, Rule ID: 1:2010575 ET TROJAN ..., proto:TCP,
#      ip/port:A:80(host) > B:50211(host,user:jdoe)
# Some renderings lose the ", " before "proto:".
_IPS = re.compile(
    r"IPS: (?P<action>Packet drop|Alert), severity: (?P<severity>[^,]*)"
    r"(?:, Rule ID: (?P<rule_id>\S+)(?: (?P<rule_name>.*?))?,? ?(?=proto:|$))?"
    r"(?:proto:(?P<proto>[^,\s]*), ?ip/port: ?(?P<src>\S+) (?:->|>) (?P<dst>\S+))?"
)
_IPS_ACTIONS = {"Packet drop": IpsAction.DROP, "Alert": IpsAction.ALERT}
_IPS_SEVERITIES = {s.value: s for s in IpsSeverity}

_PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "icmp": Protocol.ICMP,
              "icmpv6": Protocol.ICMP, "ipv6-icmp": Protocol.ICMP}


def record_in(message: SyslogMessage) -> Record:
    """The record a syslog message carries.

    An RFC 3164 sender that writes no TAG makes a record's marker look like
    one ("Engine: Startup."): then the record is read from the TAG on.
    """
    if message.app_name in MARKER_TAGS and message.content is not None:
        return parse_record(message.content)
    return parse_record(message.msg)


def parse_record(message: bytes) -> Record:
    """Type one Security-log line (the syslog MSG, or a bare line)."""
    body = message
    while body[:3] in _LEADING_JUNK:
        body = body[3:]
    body = body.lstrip(b" \t").rstrip(_TRAILING_JUNK)
    event_time = None
    bad_stamp = False
    if body[:1] == b"[":
        text = body[:23].decode("ascii", "replace")
        stamp = _EVENT_TIME.match(text)
        if stamp is None:
            return UNKNOWN
        event_time = _event_time(stamp)
        bad_stamp = event_time is None
        body = body[stamp.end():]
    record = _typed_record(body, event_time)
    if bad_stamp and record is not UNKNOWN:
        record = replace(record, defects=record.defects + ("event_time",))
    return record


def _typed_record(body: bytes, event_time: datetime | None) -> Record:
    first = body[:1]
    # One cheap look at the marker before any regex: most unknown lines stop here.
    if first == b"A":
        if body.startswith(b"Anti-Spoofing: Packet "):
            return _anti_spoofing(_text(body[22:]), event_time, closing="")
        if body.startswith(b"Authentication: "):
            return _auth_failure(_text(body), event_time)
    elif first == b"{":
        if body.startswith(b"{pktdrop} packet dropped: Anti-spoofing ("):
            return _anti_spoofing(_text(body[41:]), event_time, closing=")")
    elif first == b"F":
        if body.startswith(b"FTP: "):
            return _ftp(_text(body), event_time)
    elif first == b"E":
        if body in (b"Engine: Startup.", b"Engine: Startup"):
            return EngineEvent(type=RecordType.ENGINE_STARTUP, event_time=event_time)
        if body in (b"Engine: Shutdown.", b"Engine: Shutdown"):
            return EngineEvent(type=RecordType.ENGINE_SHUTDOWN, event_time=event_time)
    elif first == b"I":
        if body.startswith(b"IPS: "):
            return _ips(_text(body), event_time)
    return UNKNOWN


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _event_time(stamp: re.Match[str]) -> datetime | None:
    day, month, year, hour, minute, second = stamp.groups()
    try:
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    except (KeyError, ValueError):
        return None


def _anti_spoofing(text: str, event_time: datetime | None, closing: str) -> Record:
    match = _ANTI_SPOOFING.match(text)
    if match is None:
        return UNKNOWN
    source = parse_endpoint(match["src"])
    destination = parse_endpoint(match["dst"])
    if source is None or destination is None:
        return UNKNOWN
    defects = []
    protocol_name = match["proto"]
    protocol = _PROTOCOLS.get(protocol_name.lower(), Protocol.OTHER)
    if not protocol_name:
        defects.append("protocol")
    length = _int_or_none(match["len"])
    if length is None:
        defects.append("length")
    tail = match["tail"]
    if closing and not tail.endswith(closing):
        defects.append("truncated")
    numbers = dict(_NUMBER_FIELDS.findall(tail))
    fields: dict[str, object] = {}
    if protocol is Protocol.TCP:
        flags = _TCP_FLAGS.search(tail)
        fields["tcp_flags"] = tuple(flags.group(1).split()) if flags else ()
        if flags is None:
            defects.append("tcp_flags")
        for key, name in (("seq", "seq"), ("ack", "ack"), ("win", "window"), ("tcplen", "tcp_length")):
            if key in numbers:
                fields[name] = int(numbers[key])
            else:
                defects.append(name)
    elif protocol is Protocol.UDP and "udplen" in numbers:
        fields["udp_length"] = int(numbers["udplen"])
    return AntiSpoofing(
        event_time=event_time,
        defects=tuple(defects),
        direction=Direction(match["direction"]),
        interface=match["interface"],
        protocol=protocol,
        protocol_name=protocol_name,
        length=length,
        source=source,
        destination=destination,
        **fields,  # type: ignore[arg-type]
    )


def _ftp(text: str, event_time: datetime | None) -> Record:
    match = _FTP.match(text)
    if match is None:
        return UNKNOWN
    client = _address(match["client"])
    server = _address(match["server"])
    if client is None or server is None:
        return UNKNOWN
    kind, record_type, detail_name = _FTP_KINDS[match["kind"]]
    detail = match["detail"] or None
    return FtpAttack(
        type=record_type,
        event_time=event_time,
        defects=() if detail else (detail_name,),
        kind=kind,
        client=client,
        server=server,
        detail=detail,
    )


def _auth_failure(text: str, event_time: datetime | None) -> Record:
    match = _AUTH.match(text)
    if match is None:
        return UNKNOWN
    client = _address(match["client"])
    reason = match["reason"].strip()
    if client is None or not reason:
        return UNKNOWN
    service_name = match["service"]
    return AuthFailure(
        event_time=event_time,
        service=_AUTH_SERVICES.get(service_name.casefold(), AuthService.OTHER),
        service_name=service_name,
        client=client,
        reason=reason,
        reason_class=classify_reason(reason),
        user=_reason_user(reason),
    )


def classify_reason(reason: str) -> ReasonClass:
    folded = reason.casefold()
    for reason_class, words in _REASON_CLASSES:
        if any(word in folded for word in words):
            return reason_class
    return ReasonClass.OTHER


def _reason_user(reason: str) -> str | None:
    for pattern in _REASON_USER:
        match = pattern.search(reason)
        if match is not None:
            return match["user"]
    return None


def _ips(text: str, event_time: datetime | None) -> Record:
    match = _IPS.match(text)
    if match is None:
        return UNKNOWN
    defects = []
    severity_name = match["severity"].strip()
    fields: dict[str, object] = {}
    if match["rule_id"] is None:
        defects.append("rule")
    else:
        fields["rule_id"] = match["rule_id"]
        fields["rule_name"] = match["rule_name"] or None
    if match["proto"] is None:
        defects.append("endpoints")
    else:
        protocol_name = match["proto"]
        fields["protocol_name"] = protocol_name
        fields["protocol"] = _PROTOCOLS.get(protocol_name.lower(), Protocol.OTHER)
        source = parse_endpoint(match["src"])
        destination = parse_endpoint(match["dst"])
        if source is None or destination is None:
            defects.append("endpoints")
        fields["source"] = source
        fields["destination"] = destination
    return IpsEvent(
        event_time=event_time,
        defects=tuple(defects),
        action=_IPS_ACTIONS[match["action"]],
        severity=_IPS_SEVERITIES.get(severity_name.casefold(), IpsSeverity.OTHER),
        severity_name=severity_name,
        **fields,  # type: ignore[arg-type]
    )


def parse_endpoint(text: str) -> Endpoint | None:
    """``[2001:db8::1]:443``, ``192.0.2.1:80``, or a bare address; IPS lines
    may add ``(hostname)`` or ``(hostname,user:name)``.

    A bare IPv6 address is never split at its last colon.
    """
    # Firewalls log the same endpoints over and over; endpoints are immutable.
    try:
        return _ENDPOINTS[text]
    except KeyError:
        pass
    endpoint = _parse_endpoint(text)
    if len(_ENDPOINTS) >= _ENDPOINT_CACHE_SIZE:
        _ENDPOINTS.clear()
    _ENDPOINTS[text] = endpoint
    return endpoint


_ENDPOINT_CACHE_SIZE = 16384
_ENDPOINTS: dict[str, Endpoint | None] = {}


def _parse_endpoint(text: str) -> Endpoint | None:
    quad_port = _QUAD_PORT.fullmatch(text)
    if quad_port is not None:  # the common case, in one match
        a, b, c, d, number = map(int, quad_port.groups())
        if a < 256 and b < 256 and c < 256 and d < 256 and number < 65536:
            return Endpoint(IPv4Address(a << 24 | b << 16 | c << 8 | d), number)
        return None
    hostname = user = None
    if text.endswith(")") and "(" in text:
        text, _, note = text[:-1].partition("(")
        for part in note.split(","):
            if part.startswith("user:"):
                user = part[5:] or None
            elif part:
                hostname = part
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        address = _address(text[1:close])
        rest = text[close + 1:]
        if rest:
            if not rest.startswith(":") or (port := _port(rest[1:])) is None:
                return None
    elif text.count(":") == 1:
        # IPv4 with a port; an IPv6 address has at least two colons.
        host, _, port_text = text.partition(":")
        address = _address(host)
        port = _port(port_text)
        if port is None:
            return None
    else:
        address = _address(text)
    if address is None:
        return None
    return Endpoint(address=address, port=port, hostname=hostname, user=user)


def _address(text: str) -> IPAddress | None:
    # Dotted quads are most addresses: building them from an integer is much
    # cheaper than ip_address(), above all when it fails and raises.
    if ":" not in text:
        quad = _DOTTED_QUAD.fullmatch(text)
        if quad is not None:
            a, b, c, d = map(int, quad.groups())
            if a < 256 and b < 256 and c < 256 and d < 256:
                return IPv4Address(a << 24 | b << 16 | c << 8 | d)
        return None
    try:
        return ip_address(text)
    except ValueError:
        return None


_QUAD_PORT = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3}):([0-9]{1,5})")
_DOTTED_QUAD = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")


def _port(text: str) -> int | None:
    if text.isdigit() and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


def _int_or_none(text: str | None) -> int | None:
    if text is not None and text.isdigit():
        return int(text)
    return None
