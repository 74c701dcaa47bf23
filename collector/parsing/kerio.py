"""Parse Kerio Control / WinRoute Security-log lines into typed records.

Pure code: no I/O, no Twisted, no clock. ``parse_record`` and ``summarize``
never raise. The syntaxes come from the WinRoute 6.x manual ("Security Log")
and the wording of Kerio Control 7, 8 and 9. A line is typed only when its
marker and its mandatory fields parse; anything else, including the
look-alike lines of the Filter, Debug and Warning logs, is ``unknown``.

Each record type has a reader that gives either the whole typed record
(``parse_record``) or only what the metrics count of it (``summarize``, the
collector's hot path); both come from one match of the same pattern.
"""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import replace
from datetime import datetime
from ipaddress import IPv4Address, ip_address

from collector.parsing.syslog import Envelope, SyslogMessage
from collector.records import (
    UNKNOWN,
    UNKNOWN_SUMMARY,
    AntiSpoofing,
    AuthFailure,
    AuthService,
    Direction,
    Endpoint,
    EngineEvent,
    FtpAttack,
    FtpKind,
    IPAddress,
    IpProtocol,
    IpsAction,
    IpsEvent,
    IpsSeverity,
    ReasonClass,
    Record,
    RecordSummary,
    RecordType,
)

# The first word of each record type.
MARKER_TAGS = frozenset({"Anti-Spoofing", "Authentication", "Engine", "FTP", "IPS"})
_MARKER_TAGS = frozenset(tag.encode() for tag in MARKER_TAGS)

# BOMs, or U+FFFDs from a relay, as many as lead a line: matched in one
# pass, for a sender can put thousands of them before a record.
_LEADING_JUNK = re.compile(rb"(?:\xef\xbb\xbf|\xef\xbf\xbd)*+")
_TRAILING_JUNK = b" \t\r\n"
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    start=1)}

# [17/Jul/2008 11:46:38]
_EVENT_TIME = re.compile(r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}) (\d\d):(\d\d):(\d\d)\] ?")

# Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:A:1864 -> B:445, flags: SYN, ...
# {pktdrop} packet dropped: Anti-spoofing (from Cable, proto:UDP, len:334, A:68 -> B:67, udplen:306)
# The interface is free text and may hold commas: it runs up to ", proto:".
# ``complete_tcp`` is the start of a TCP line's tail as Kerio writes it, with
# every TCP field: such a line has no TCP defect to look for.
# Runs followed by a character they exclude are possessive (``++``): giving
# any back could not help, and a sender's 64 KiB run would be given back one
# character at a time. Interface names are short: at most 512 characters are
# read as one, since a sender that writes ", proto:" thousands of times would
# otherwise make the lazy name try each of them. The protocol may give back
# characters to the source address (a line with no protocol), so both are
# bounded: each is tried at most 33 times over at most 128 characters, not at
# each of 64 KiB. An endpoint is never longer than 128 characters, and the
# tail that holds the TCP fields is read up to 1,024.
_ANTI_SPOOFING = re.compile(
    r"(?P<direction>from|to) (?P<interface>.{1,512}?), proto:(?P<proto>[^,\s]{0,32}),? ?"
    r"(?:len:(?P<len>[^,]*+), ?)?(?:ip/port: ?)?"
    r"(?P<src>\S{1,128}+) (?:->|>) (?P<dst>[^\s,)]{1,128})"
    r"(?P<tail>(?P<complete_tcp>, flags: ?[A-Z]+(?: [A-Z]+)* ?, seq:\d+ ack:\d+, win:\d+, tcplen:\d+)?.{0,1024})"
)
_DIRECTIONS = {"from": Direction.FROM, "to": Direction.TO}
_TCP_FLAGS = re.compile(r"flags:\s*([A-Z]+(?: [A-Z]+)*)")
_NUMBER_FIELDS = re.compile(r"\b(seq|ack|win|tcplen|udplen):(\d+)")

# FTP: Bounce attack attempt: client: 1.2.3.4, server: 5.6.7.8, command: PORT 10,11,12,13,14,15
_FTP = re.compile(
    r"FTP: (?P<kind>Bounce attack attempt|Malicious server reply): "
    r"client: (?P<client>[^,\s]{1,64}+), server: (?P<server>[^,\s]{1,64}+)"
    r"(?:, (?:command|response):? ?(?P<detail>.*))?"
)
_FTP_KINDS = {
    "Bounce attack attempt": (FtpKind.BOUNCE_ATTACK, RecordType.FTP_BOUNCE_ATTACK, "command"),
    "Malicious server reply": (FtpKind.MALICIOUS_REPLY, RecordType.FTP_MALICIOUS_REPLY, "response"),
}

# Authentication: <service>: Client: <address>: <reason>. Service names hold
# blanks, IPv6 clients hold colons, reasons hold ": " -- so the client ends at
# the first colon followed by a blank, and the reason is the rest.
# Service names and client addresses are short: the lazy repeats are bounded,
# so that a sender's long line is not tried at each of its characters.
_AUTH = re.compile(r"Authentication: (?P<service>.{1,128}?): Client: (?P<client>.{1,64}?): (?P<reason>.*)")
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
# Some renderings lose the ", " before "proto:". The rule name runs up to the
# first ", proto:" (or "proto:", or the end), as the lazy pattern
#
#   , Rule ID: (?P<rule_id>\S+)(?: (?P<rule_name>.*?))?,? ?(?=proto:|$)
#
# would find it. A sender chooses the rule name, so it is not matched by a
# regex at all (which tries the ending at each of its characters, at some
# hundred nanoseconds each) but found with str.find: see ``_ips_fields``.
_IPS_HEAD = re.compile(r"IPS: (?P<action>Packet drop|Alert), severity: (?P<severity>[^,]*)")
_IPS_RULE_ID = re.compile(r", Rule ID: (\S+)")
_IPS_PACKET = re.compile(
    r"proto:(?P<proto>[^,\s]{0,32}+), ?ip/port: ?(?P<src>\S{1,1024}+) (?:->|>) (?P<dst>\S{1,1024})")
_IPS_ACTIONS = {"Packet drop": IpsAction.DROP, "Alert": IpsAction.ALERT}
_IPS_SEVERITIES = {s.value: s for s in IpsSeverity}

_PROTOCOLS = {"tcp": IpProtocol.TCP, "udp": IpProtocol.UDP, "icmp": IpProtocol.ICMP,
              "icmpv6": IpProtocol.ICMP, "ipv6-icmp": IpProtocol.ICMP}


def record_in(message: SyslogMessage) -> Record:
    """The record a syslog message carries."""
    return parse_record(_record_text(message))


def summary_in(envelope: Envelope) -> RecordSummary:
    """What ``record_in`` would give the same message, as the metrics count
    it (see ``summarize``)."""
    if envelope.tag in _MARKER_TAGS and envelope.content is not None:
        return summarize(envelope.content)
    return summarize(envelope.msg)


def _record_text(message: SyslogMessage) -> bytes:
    # An RFC 3164 sender that writes no TAG makes a record's marker look like
    # one ("Engine: Startup."): then the record is read from the TAG on.
    if message.app_name in MARKER_TAGS and message.content is not None:
        return message.content
    return message.msg


def parse_record(message: bytes) -> Record:
    """Type one Security-log line (the syslog MSG, or a bare line)."""
    located = _locate(message)
    if located is None:
        return UNKNOWN
    reader, text, event_time, bad_stamp = located
    record = reader.record(text, event_time)
    if bad_stamp and record is not UNKNOWN:
        record = replace(record, defects=record.defects + ("event_time",))
    return record


def summarize(message: bytes) -> RecordSummary:
    """The type, breakdown labels and defectiveness ``parse_record`` would
    give, at a fraction of the cost: the fields that no metric counts are
    only checked, not converted, and no record is built. This is what the
    collector's hot path runs for every line."""
    located = _locate(message)
    if located is None:
        return UNKNOWN_SUMMARY
    reader, text, _, bad_stamp = located
    summary = reader.summary(text)
    if bad_stamp and summary.type is not RecordType.UNKNOWN:
        summary = summary._replace(defective=True)
    return summary


def _locate(message: bytes) -> tuple[_Reader, str, datetime | None, bool] | None:
    """The reader for a line and the text it reads, the line's bracketed
    event time, and whether that was an impossible date; None for a line no
    reader takes, or a bracket that holds no event time.

    What syslog envelopes leave around a line is ignored.
    """
    body = message
    if body[:1] == b"\xef":
        body = _LEADING_JUNK.sub(b"", body, 1)
    body = body.lstrip(b" \t").rstrip(_TRAILING_JUNK)
    event_time = None
    bad_stamp = False
    if body[:1] == b"[":
        stamp = _event_stamp(body[:23])
        if stamp is None:
            return None
        length, event_time = stamp
        body = body[length:]
        bad_stamp = event_time is None
    found = _reader(body)
    if found is None:
        return None
    return found[0], found[1], event_time, bad_stamp


@functools.lru_cache(maxsize=4096)
def _event_stamp(head: bytes) -> tuple[int, datetime | None] | None:
    # Lines arrive many to a second: each distinct stamp is read once.
    stamp = _EVENT_TIME.match(head.decode("ascii", "replace"))
    if stamp is None:
        return None
    return stamp.end(), _event_time(stamp)


def _event_time(stamp: re.Match[str]) -> datetime | None:
    day, month, year, hour, minute, second = stamp.groups()
    try:
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    except (KeyError, ValueError):
        return None


class _Reader(typing.Protocol):
    """Reads one record type: its summary, or the whole record."""

    def summary(self, text: str) -> RecordSummary: ...

    def record(self, text: str, event_time: datetime | None) -> Record: ...


def _reader(body: bytes) -> tuple[_Reader, str] | None:
    """The reader for a line's marker, and the text it reads."""
    first = body[:1]
    # One cheap look at the marker before any regex: most unknown lines stop here.
    if first == b"A":
        if body.startswith(b"Anti-Spoofing: Packet "):
            return _PACKET_ANTI_SPOOFING, _text(body[22:])
        if body.startswith(b"Authentication: "):
            return _AUTH_FAILURE, _text(body)
    elif first == b"{":
        if body.startswith(b"{pktdrop} packet dropped: Anti-spoofing ("):
            return _DROPPED_ANTI_SPOOFING, _text(body[41:])
    elif first == b"F":
        if body.startswith(b"FTP: "):
            return _FTP_ATTACK, _text(body)
    elif first == b"E":
        if body in (b"Engine: Startup.", b"Engine: Startup"):
            return _ENGINE_STARTUP, ""
        if body in (b"Engine: Shutdown.", b"Engine: Shutdown"):
            return _ENGINE_SHUTDOWN, ""
    elif first == b"I":
        if body.startswith(b"IPS: "):
            return _IPS_EVENT, _text(body)
    return None


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


class _AntiSpoofingReader:
    def __init__(self, closing: str) -> None:
        # Kerio 9 wraps the packet in parentheses; a line without the closing
        # one was cut short.
        self._closing = closing

    def _scan(self, text: str) -> tuple[re.Match[str], IpProtocol, list[str]] | None:
        match = _ANTI_SPOOFING.match(text)
        if match is None or not _is_endpoint(match["src"]) or not _is_endpoint(match["dst"]):
            return None
        defects = []
        protocol_name = match["proto"]
        protocol = _PROTOCOLS.get(protocol_name.lower(), IpProtocol.OTHER)
        if not protocol_name:
            defects.append("protocol")
        if _int_or_none(match["len"]) is None:
            defects.append("length")
        if self._closing and not match["tail"].endswith(self._closing):
            defects.append("truncated")
        if protocol is IpProtocol.TCP and match["complete_tcp"] is None:
            defects += _tcp_fields(match["tail"])[1]
        return match, protocol, defects

    def summary(self, text: str) -> RecordSummary:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN_SUMMARY
        match, protocol, defects = scanned
        return RecordSummary(RecordType.ANTI_SPOOFING,
                             (match["interface"], _DIRECTIONS[match["direction"]], protocol),
                             bool(defects))

    def record(self, text: str, event_time: datetime | None) -> Record:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN
        match, protocol, defects = scanned
        fields: dict[str, object] = {}
        if protocol is IpProtocol.TCP:
            fields = _tcp_fields(match["tail"])[0]
        elif protocol is IpProtocol.UDP:
            numbers = dict(_NUMBER_FIELDS.findall(match["tail"]))
            if "udplen" in numbers:
                fields["udp_length"] = int(numbers["udplen"])
        return AntiSpoofing(
            event_time=event_time,
            defects=tuple(defects),
            direction=_DIRECTIONS[match["direction"]],
            interface=match["interface"],
            protocol=protocol,
            protocol_name=match["proto"],
            length=_int_or_none(match["len"]),
            source=parse_endpoint(match["src"]),  # type: ignore[arg-type]  # checked by _scan
            destination=parse_endpoint(match["dst"]),  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )


def _tcp_fields(tail: str) -> tuple[dict[str, object], list[str]]:
    """The TCP fields of an anti-spoofing line's tail, and the names of those missing.

    Kerio writes them in the tail's first hundred characters: the tail is
    read up to 1,024 characters, so that a sender's 64 KiB one is not.
    """
    numbers = dict(_NUMBER_FIELDS.findall(tail))
    fields: dict[str, object] = {}
    missing = []
    flags = _TCP_FLAGS.search(tail)
    fields["tcp_flags"] = tuple(flags.group(1).split()) if flags else ()
    if flags is None:
        missing.append("tcp_flags")
    for key, name in (("seq", "seq"), ("ack", "ack"), ("win", "window"), ("tcplen", "tcp_length")):
        if key in numbers:
            fields[name] = int(numbers[key])
        else:
            missing.append(name)
    return fields, missing


class _FtpReader:
    def _scan(self, text: str) -> re.Match[str] | None:
        match = _FTP.match(text)
        if match is None or not _is_address(match["client"]) or not _is_address(match["server"]):
            return None
        return match

    def summary(self, text: str) -> RecordSummary:
        match = self._scan(text)
        if match is None:
            return UNKNOWN_SUMMARY
        kind, record_type, _ = _FTP_KINDS[match["kind"]]
        return RecordSummary(record_type, (kind,), not match["detail"])

    def record(self, text: str, event_time: datetime | None) -> Record:
        match = self._scan(text)
        if match is None:
            return UNKNOWN
        kind, record_type, detail_name = _FTP_KINDS[match["kind"]]
        detail = match["detail"] or None
        return FtpAttack(
            type=record_type,
            event_time=event_time,
            defects=() if detail else (detail_name,),
            kind=kind,
            client=_address(match["client"]),  # type: ignore[arg-type]  # checked by _scan
            server=_address(match["server"]),  # type: ignore[arg-type]
            detail=detail,
        )


class _AuthFailureReader:
    def _scan(self, text: str) -> tuple[re.Match[str], AuthService, str] | None:
        match = _AUTH.match(text)
        if match is None or not _is_address(match["client"]):
            return None
        reason = match["reason"].strip()
        if not reason:
            return None
        return match, _AUTH_SERVICES.get(match["service"].casefold(), AuthService.OTHER), reason

    def summary(self, text: str) -> RecordSummary:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN_SUMMARY
        _, service, reason = scanned
        return RecordSummary(RecordType.AUTH_FAILURE, (service, classify_reason(reason)))

    def record(self, text: str, event_time: datetime | None) -> Record:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN
        match, service, reason = scanned
        return AuthFailure(
            event_time=event_time,
            service=service,
            service_name=match["service"],
            client=_address(match["client"]),  # type: ignore[arg-type]  # checked by _scan
            reason=reason,
            reason_class=classify_reason(reason),
            user=_reason_user(reason),
        )


def classify_reason(reason: str) -> ReasonClass:
    # Reasons repeat; a long one (a sender's choice) is classified afresh
    # rather than held in the cache, from its two ends only: Kerio's wording
    # is there, around the user name, and a 64 KiB middle is not searched
    # for each class's words.
    if len(reason) > MAX_CACHED_TEXT:
        if len(reason) > 2 * MAX_CACHED_TEXT:
            reason = reason[:MAX_CACHED_TEXT] + " " + reason[-MAX_CACHED_TEXT:]
        return _classify_reason(reason)
    return _classify_reason_cached(reason)


@functools.lru_cache(maxsize=4096)
def _classify_reason_cached(reason: str) -> ReasonClass:
    return _classify_reason(reason)


def _classify_reason(reason: str) -> ReasonClass:
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


def _ips_fields(text: str) -> dict[str, str | None] | None:
    """The fields of an IPS line, as the lazy pattern above reads them, in linear time."""
    head = _IPS_HEAD.match(text)
    if head is None:
        return None
    fields: dict[str, str | None] = {"action": head["action"], "severity": head["severity"],
                                      "rule_id": None, "rule_name": None}
    packet_at = head.end()
    rule = _IPS_RULE_ID.match(text, packet_at)
    if rule is not None:
        read = _rule(text, rule.start(1), rule.end(1))
        if read is not None:
            id_end, name_end, packet_at = read
            fields["rule_id"] = text[rule.start(1):id_end]
            if name_end >= 0:
                fields["rule_name"] = text[id_end + 1:name_end]
    packet = _IPS_PACKET.match(text, packet_at)
    fields.update(proto=None, src=None, dst=None) if packet is None else fields.update(packet.groupdict())
    return fields


def _rule(text: str, id_start: int, run_end: int) -> tuple[int, int, int] | None:
    """Where the rule ID ends, where the rule name ends (-1: none), and where
    the packet part begins; None when no rule can be read.

    The lazy pattern's ID is a run of non-blanks, given back from its end
    until what follows reads; its name, when a space follows the whole run,
    runs to the first ending. Both are found with str.find and str.rfind.
    """
    if text.startswith(" ", run_end):  # a name, if an ending comes
        name_end = _first_ending(text, run_end + 1)
        if name_end >= 0:
            return run_end, name_end, _ending(text, name_end)
    if _ending(text, run_end) >= 0:
        return run_end, -1, _ending(text, run_end)
    # The ID given back to its last "proto:" or to a comma that ends the line.
    last = text.rfind("proto:", id_start + 1, run_end)
    if _at_end(text, run_end) and text[run_end - 1] == "," and run_end - 1 > id_start:
        last = max(last, run_end - 1)
    if last < 0:
        return None
    return last, -1, _ending(text, last)


def _ending(text: str, at: int) -> int:
    """Where ``,? ?(?=proto:|$)`` at ``at`` leads: to "proto:" or the end; -1 when it does not match."""
    end = len(text)
    if at < end and text[at] == ",":
        at += 1
    if at < end and text[at] == " ":
        at += 1
    return at if _at_end(text, at) or text.startswith("proto:", at) else -1


def _at_end(text: str, at: int) -> bool:
    """Whether a regex's ``$`` matches at ``at``: the end, or before a last newline."""
    return at == len(text) or (at == len(text) - 1 and text[at] == "\n")


def _first_ending(text: str, start: int) -> int:
    """The first place from ``start`` on, on the same line, where ``_ending`` matches; -1 if none."""
    newline = text.find("\n", start)
    limit = len(text) if newline < 0 else newline
    candidates = []
    proto = text.find("proto:", start, limit)
    if proto >= 0:
        candidates += [proto - 2, proto - 1, proto]
    if _at_end(text, limit):
        candidates += [limit - 2, limit - 1, limit]
    for at in sorted(candidates):
        if at >= start and _ending(text, at) >= 0:
            return at
    return -1


class _IpsReader:
    def _scan(self, text: str) -> tuple[dict[str, str | None], IpsAction, IpsSeverity, list[str]] | None:
        match = _ips_fields(text)
        if match is None:
            return None
        defects = []
        if match["rule_id"] is None:
            defects.append("rule")
        if match["proto"] is None or not _is_endpoint(match["src"]) or not _is_endpoint(match["dst"]):
            defects.append("endpoints")
        severity = _IPS_SEVERITIES.get(match["severity"].strip().casefold(),  # type: ignore[union-attr]
                                       IpsSeverity.OTHER)
        return match, _IPS_ACTIONS[match["action"]], severity, defects  # type: ignore[index]

    def summary(self, text: str) -> RecordSummary:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN_SUMMARY
        _, action, severity, defects = scanned
        return RecordSummary(RecordType.IPS, (action, severity), bool(defects))

    def record(self, text: str, event_time: datetime | None) -> Record:
        scanned = self._scan(text)
        if scanned is None:
            return UNKNOWN
        match, action, severity, defects = scanned
        fields: dict[str, object] = {}
        if match["rule_id"] is not None:
            fields["rule_id"] = match["rule_id"]
            fields["rule_name"] = match["rule_name"] or None
        if match["proto"] is not None:
            protocol_name = match["proto"]
            fields["protocol_name"] = protocol_name
            fields["protocol"] = _PROTOCOLS.get(protocol_name.lower(), IpProtocol.OTHER)
            fields["source"] = parse_endpoint(match["src"])
            fields["destination"] = parse_endpoint(match["dst"])
        return IpsEvent(
            event_time=event_time,
            defects=tuple(defects),
            action=action,
            severity=severity,
            severity_name=match["severity"].strip(),  # type: ignore[union-attr]
            **fields,  # type: ignore[arg-type]
        )


class _EngineReader:
    def __init__(self, record_type: RecordType) -> None:
        self._summary = RecordSummary(record_type)

    def summary(self, text: str) -> RecordSummary:
        return self._summary

    def record(self, text: str, event_time: datetime | None) -> Record:
        return EngineEvent(type=self._summary.type, event_time=event_time)


_PACKET_ANTI_SPOOFING = _AntiSpoofingReader(closing="")
_DROPPED_ANTI_SPOOFING = _AntiSpoofingReader(closing=")")
_FTP_ATTACK = _FtpReader()
_AUTH_FAILURE = _AuthFailureReader()
_IPS_EVENT = _IpsReader()
_ENGINE_STARTUP = _EngineReader(RecordType.ENGINE_STARTUP)
_ENGINE_SHUTDOWN = _EngineReader(RecordType.ENGINE_SHUTDOWN)


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
    if len(text) <= MAX_CACHED_TEXT:
        if len(_ENDPOINTS) >= _ENDPOINT_CACHE_SIZE:
            _ENDPOINTS.clear()
        _ENDPOINTS[text] = endpoint
    return endpoint


_ENDPOINT_CACHE_SIZE = 16384
MAX_ENDPOINT = 1024
# Longer keys are not cached: the caches' memory is bounded in bytes.
MAX_CACHED_TEXT = 256
_ENDPOINTS: dict[str, Endpoint | None] = {}


def _parse_endpoint(text: str) -> Endpoint | None:
    # An address, a port, a host name and a user name: never longer than this.
    if len(text) > MAX_ENDPOINT:
        return None
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
    # The longest IPv6 text is 45 characters, 64 with a zone ("%eth0");
    # ip_address() would split a sender's 64 KiB at every colon first.
    if len(text) > 64:
        return None
    try:
        return ip_address(text)
    except ValueError:
        return None


_QUAD_PORT = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3}):([0-9]{1,5})")
_DOTTED_QUAD = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")


# The common endpoints, 192.0.2.1:80 or 192.0.2.1 (an IPS line may add a
# note in parentheses), checked without converting anything.
# 0 to 255 and 0 to 65535, zero-padded or not; collector/parsing/shapes.py checks with them too.
# The first alternative that matches is the longest one that can: the
# shapes match them without going back to try another.
OCTET_PATTERN = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|0[0-9][0-9]|[0-9]{1,2})"
PORT_PATTERN = r"(?:[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]|[0-9]{1,4})"
_VALID_QUAD = re.compile(rf"(?:{OCTET_PATTERN}\.){{3}}{OCTET_PATTERN}")
_VALID_QUAD_ENDPOINT = re.compile(_VALID_QUAD.pattern + rf"(?::{PORT_PATTERN})?(?:\(.*\))?")


def _is_endpoint(text: str) -> bool:
    """Whether ``parse_endpoint`` reads ``text``."""
    return _VALID_QUAD_ENDPOINT.fullmatch(text) is not None or parse_endpoint(text) is not None


def _is_address(text: str) -> bool:
    """Whether ``_address`` reads ``text``."""
    return _VALID_QUAD.fullmatch(text) is not None or _address(text) is not None


def _is_ascii_number(text: str) -> bool:
    # str.isdigit() also holds for "²", which int() refuses.
    return text.isascii() and text.isdigit()


def _port(text: str) -> int | None:
    if _is_ascii_number(text) and len(text) <= 5 and int(text) <= 65535:
        return int(text)
    return None


def _int_or_none(text: str | None) -> int | None:
    if text is not None and _is_ascii_number(text):
        return int(text)
    return None
