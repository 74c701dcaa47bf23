"""Typed, immutable Kerio security records and the bounded values they carry.

Every enum's values double as Prometheus label values, so they are a contract
with dashboards and alert rules: add members, never rename them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

IPAddress = IPv4Address | IPv6Address


class RecordType(enum.StrEnum):
    ANTI_SPOOFING = "anti_spoofing"
    FTP_BOUNCE_ATTACK = "ftp_bounce_attack"
    FTP_MALICIOUS_REPLY = "ftp_malicious_reply"
    AUTH_FAILURE = "auth_failure"
    ENGINE_STARTUP = "engine_startup"
    ENGINE_SHUTDOWN = "engine_shutdown"
    IPS = "ips"
    UNKNOWN = "unknown"


class Direction(enum.StrEnum):
    FROM = "from"
    TO = "to"


class IpProtocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    OTHER = "other"


class AuthService(enum.StrEnum):
    ADMIN = "admin"
    WEBADMIN = "webadmin"
    WEBADMIN_SSL = "webadmin_ssl"
    WEBINTERFACE = "webinterface"
    HTTP_PROXY = "http_proxy"
    VPN_CLIENT = "vpn_client"
    OTHER = "other"


class ReasonClass(enum.StrEnum):
    UNKNOWN_USER = "unknown_user"
    WRONG_PASSWORD = "wrong_password"
    DIRECTORY_ERROR = "directory_error"
    ACCOUNT_DISABLED = "account_disabled"
    IP_BLOCKED = "ip_blocked"
    MFA_FAILED = "mfa_failed"
    OTHER = "other"


class FtpKind(enum.StrEnum):
    BOUNCE_ATTACK = "bounce_attack"
    MALICIOUS_REPLY = "malicious_reply"


class IpsAction(enum.StrEnum):
    DROP = "drop"
    ALERT = "alert"


class IpsSeverity(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    BLACKLIST = "blacklist"
    OTHER = "other"


class Endpoint(NamedTuple):
    """An address and port of a packet; a NamedTuple, as it is built twice a record."""

    address: IPAddress
    port: int | None = None
    # IPS lines annotate endpoints with a resolved host name and a user.
    hostname: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Fields every record has.

    ``event_time`` is the firewall's own bracketed timestamp, naive because
    Kerio writes it in the firewall's local time without a zone. ``defects``
    names optional fields that were missing or garbled: the record is still
    typed, and the defects are counted.
    """

    type: RecordType
    event_time: datetime | None = None
    defects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AntiSpoofing(Record):
    type: RecordType = RecordType.ANTI_SPOOFING
    direction: Direction
    interface: str
    protocol: IpProtocol
    protocol_name: str
    source: Endpoint
    destination: Endpoint
    length: int | None = None
    tcp_flags: tuple[str, ...] = ()
    seq: int | None = None
    ack: int | None = None
    window: int | None = None
    tcp_length: int | None = None
    udp_length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FtpAttack(Record):
    kind: FtpKind
    client: IPAddress
    server: IPAddress
    # The PORT command or the server's reply, as far as the line carries it.
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailure(Record):
    type: RecordType = RecordType.AUTH_FAILURE
    service: AuthService
    service_name: str
    client: IPAddress
    reason: str
    reason_class: ReasonClass
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineEvent(Record):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class IpsEvent(Record):
    type: RecordType = RecordType.IPS
    action: IpsAction
    severity: IpsSeverity
    severity_name: str
    rule_id: str | None = None
    rule_name: str | None = None
    protocol: IpProtocol | None = None
    protocol_name: str | None = None
    source: Endpoint | None = None
    destination: Endpoint | None = None


UNKNOWN = Record(type=RecordType.UNKNOWN)


class RecordSummary(NamedTuple):
    """What the metrics count of a record, without building the record.

    ``labels`` are the values of the type's breakdown: interface, direction
    and protocol of anti-spoofing; service and reason class of an
    authentication failure; action and severity of an IPS event; the kind of
    an FTP attack; nothing for the others. ``defective``: the record has
    defects.
    """

    type: RecordType
    labels: tuple[str, ...] = ()
    defective: bool = False


UNKNOWN_SUMMARY = RecordSummary(RecordType.UNKNOWN)


class Transport(enum.StrEnum):
    """How a message reached the collector (a metric label, not part of a record)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
