"""Load and validate the collector's TOML configuration into frozen objects.

Every setting has a default, so no file is needed. Each section of the file is
a dataclass below; a field's ``metadata["parse"]`` turns the TOML value into
the typed value or raises ``ValueError`` with the problem. Any error becomes a
``ConfigError`` that names the key, e.g. ``archive.flush_interval_seconds``.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # an IP literal; "" means every IPv4 interface
    port: int  # 0 asks the kernel for a free port

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}" if self.host else str(self.port)


class UnregisteredPolicy(enum.StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"


def parse_listen_address(value: object) -> ListenAddress | None:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; an empty string disables."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected PORT, HOST:PORT or [IPV6]:PORT as a string, got {value!r}")
    if value == "":
        return None
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPV6]:PORT, got {value!r}")
        _ip_literal(host, value, version=6)
    elif ":" in value:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port}")
        _ip_literal(host, value, version=4)
    else:
        host, port = "", value
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad port {port!r} in {value!r}: expected 0 to 65535")
    return ListenAddress(host, int(port))


def _ip_literal(host: str, value: str, version: int) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad address {host!r} in {value!r}: expected an IP address") from None
    if address.version != version:
        raise ValueError(f"bad address {host!r} in {value!r}")


def _typed(kind: type | tuple[type, ...], what: str) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ValueError(f"expected {what}, got {value!r}")
        if not isinstance(value, kind):
            raise ValueError(f"expected {what}, got {value!r}")
        return value
    return parse


def _positive_int(value: object) -> int:
    number: int = _typed(int, "a positive integer")(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {number}")
    return number


def _non_negative_int(value: object) -> int:
    number: int = _typed(int, "an integer, 0 or more")(value)
    if number < 0:
        raise ValueError(f"expected an integer, 0 or more, got {number}")
    return number


def _prefix(bits: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        number: int = _typed(int, f"a prefix length, 0 to {bits}")(value)
        if not 0 <= number <= bits:
            raise ValueError(f"expected a prefix length, 0 to {bits}, got {number}")
        return number
    return parse


def _positive_seconds(value: object) -> float:
    number = _typed((int, float), "a number of seconds")(value)
    if not number > 0:
        raise ValueError(f"expected a positive number of seconds, got {number}")
    return float(number)


def _non_negative_seconds(value: object) -> float:
    number = _typed((int, float), "a number of seconds")(value)
    if not number >= 0:
        raise ValueError(f"expected a number of seconds, 0 or more, got {number}")
    return float(number)


def parse_timezone(value: object) -> tzinfo:
    name: str = _typed(str, "a time zone name such as UTC or Europe/Prague")(value)
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _enum(kind: type[enum.StrEnum]) -> Callable[[object], Any]:
    def parse(value: object) -> Any:
        if isinstance(value, str) and value in kind._value2member_map_:
            return kind(value)
        choices = ", ".join(repr(m.value) for m in kind)
        raise ValueError(f"expected one of {choices}, got {value!r}")
    return parse


def _setting(default: object, parse: Callable[[object], Any], doc: str) -> Any:
    return field(default=parse(default), metadata={"parse": parse, "raw": default, "doc": doc})


@dataclass(frozen=True, slots=True)
class ListenSettings:
    udp: ListenAddress | None = _setting(
        "5514", parse_listen_address, "syslog over UDP")
    tcp: ListenAddress | None = _setting(
        "5514", parse_listen_address, "syslog over TCP, LF or octet-counted framing")
    metrics: ListenAddress | None = _setting(
        "9514", parse_listen_address, "HTTP: /metrics and /healthz")
    max_frame_bytes: int = _setting(
        65536, _positive_int, "longer messages are truncated to this and counted")
    udp_receive_buffer_bytes: int = _setting(
        8 * 1024 * 1024, _positive_int, "SO_RCVBUF of the UDP socket: room for bursts")
    udp_read_interval_seconds: float = _setting(
        0.01, _non_negative_seconds, "a UDP socket giving a little at a time is read at most this often; 0: at once")
    tcp_receive_buffer_bytes: int = _setting(
        0, _non_negative_int, "SO_RCVBUF of each TCP connection; 0: the kernel sizes it")
    drain_seconds: float = _setting(
        5.0, _positive_seconds, "at shutdown, how long open TCP connections may keep sending")


def _optional_path(value: object) -> Path | None:
    text: str = _typed(str, "a file path")(value)
    return Path(text) if text else None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    enabled: bool = _setting(False, _typed(bool, "true or false"), "syslog over TLS (RFC 5425)")
    listen: ListenAddress | None = _setting("6514", parse_listen_address, "address of the TLS listener")
    certificate: Path | None = _setting("", _optional_path, "the server's certificate chain, PEM")
    key: Path | None = _setting("", _optional_path, "its private key, PEM (may be the certificate file)")
    ca: Path | None = _setting("", _optional_path, "CA certificates, PEM, that sign client certificates")
    verify_clients: bool = _setting(
        False, _typed(bool, "true or false"), "require a client certificate signed by ca (mutual TLS)")
    crl: Path | None = _setting(
        "", _optional_path, "certificate revocation lists, PEM, signed by ca; re-read on SIGHUP")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = _setting(2000, _positive_int, "open TCP and TLS connections in all")
    max_connections_per_sender: int = _setting(
        32, _positive_int, "open TCP and TLS connections from one sender (a registered firewall's address, "
        "or the network of sender_prefix_ipv4 / sender_prefix_ipv6 of any other)")
    sender_prefix_ipv4: int = _setting(
        24, _prefix(32), "unregistered IPv4 senders are counted by networks of this prefix length")
    sender_prefix_ipv6: int = _setting(
        64, _prefix(128), "unregistered IPv6 senders are counted by networks of this prefix length")
    handshake_timeout_seconds: float = _setting(
        10.0, _positive_seconds, "a TLS connection that has not finished its handshake by then is closed")
    idle_timeout_seconds: float = _setting(
        600.0, _positive_seconds, "a connection that sends nothing for this long is closed")
    frame_timeout_seconds: float = _setting(
        30.0, _positive_seconds, "a message begun must be complete within this time (slowloris)")
    max_messages_per_second_per_sender: int = _setting(
        200000, _non_negative_int, "token bucket per sender address, burst of one second (0: none)")
    max_http_connections: int = _setting(
        64, _positive_int, "open HTTP connections to listen.metrics; more are closed at once")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    count: int = _setting(
        1, _positive_int, "processes sharing the listening ports (SO_REUSEPORT); more use more cores")


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    dir: Path = _setting("archive", lambda v: Path(_typed(str, "a directory path")(v)),
                         "root of the per-host archives, relative to the working directory")
    timezone: tzinfo = _setting("UTC", parse_timezone, "zone of the day boundaries of archive files")
    flush_interval_seconds: float = _setting(
        1.0, _positive_seconds, "buffered lines are written at least this often")
    fsync: bool = _setting(False, _typed(bool, "true or false"), "fsync archive files after each flush")
    max_open_files: int = _setting(
        1024, _positive_int, "archive files kept open at once (LRU); at least the number of firewalls")
    compress: bool = _setting(True, _typed(bool, "true or false"), "gzip closed days' files")
    retention_days: int = _setting(
        0, _non_negative_int, "days kept before today; older files are removed (0: keep all)")
    max_host_bytes: int = _setting(
        0, _non_negative_int, "bound on each host's files, oldest removed first (0: no bound)")


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    timezone: tzinfo = _setting(
        "UTC", parse_timezone, "zone of RFC 3164 timestamps, unless a firewall sets its own")


@dataclass(frozen=True, slots=True)
class HostSettings:
    unregistered: UnregisteredPolicy = _setting(
        "accept", _enum(UnregisteredPolicy), "what to do with senders not in [[firewall]]")
    max_unregistered: int = _setting(
        1000, _non_negative_int, "distinct host tags of unregistered senders; past it, tagged 'unregistered'")


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    max_hosts: int = _setting(
        1000, _positive_int, "distinct host label values; past it, hosts are counted as 'other'")
    max_interfaces_per_host: int = _setting(
        20, _positive_int, "distinct anti-spoofing interface label values per host; then 'other'")


_HOST_NAME = re.compile(r"[a-z0-9][a-z0-9._:-]{0,62}")


@dataclass(frozen=True, slots=True)
class Firewall:
    name: str
    networks: tuple[Network, ...]
    relay: bool = False
    timezone: tzinfo | None = None
    hostnames: tuple[str, ...] = ()
    # The subject common name of the firewall's TLS client certificate.
    tls_subject: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenSettings = ListenSettings()
    tls: TlsSettings = TlsSettings()
    limits: LimitSettings = LimitSettings()
    workers: WorkerSettings = WorkerSettings()
    archive: ArchiveSettings = ArchiveSettings()
    syslog: SyslogSettings = SyslogSettings()
    hosts: HostSettings = HostSettings()
    metrics: MetricsSettings = MetricsSettings()
    firewalls: tuple[Firewall, ...] = ()


_SECTIONS: dict[str, type] = {
    "listen": ListenSettings,
    "tls": TlsSettings,
    "limits": LimitSettings,
    "workers": WorkerSettings,
    "archive": ArchiveSettings,
    "syslog": SyslogSettings,
    "hosts": HostSettings,
    "metrics": MetricsSettings,
}


def load(path: str | os.PathLike[str] | None = None,
         overrides: Mapping[str, object] | None = None) -> Config:
    """Read ``path`` (or nothing: all defaults), apply ``overrides`` given as
    dotted keys (``{"listen.udp": "0"}``), and validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as file:
                raw = tomllib.load(file)
        except OSError as e:
            raise ConfigError(str(path), f"cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"not valid TOML: {e}") from None
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    return from_dict(raw)


def from_dict(raw: Mapping[str, Any]) -> Config:
    for key in raw:
        if key not in _SECTIONS and key != "firewall":
            raise ConfigError(key, "unknown section" if isinstance(raw[key], dict) else "unknown key")
    sections = {name: _section(name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()}
    tls = sections["tls"]
    if tls.enabled:
        for key in ("listen", "certificate", "key"):
            if getattr(tls, key) is None:
                raise ConfigError(f"tls.{key}", "must be set when tls.enabled is true")
        if tls.verify_clients and tls.ca is None:
            raise ConfigError("tls.ca", "must be set when tls.verify_clients is true")
    return Config(**sections, firewalls=_firewalls(raw.get("firewall", [])))


def _section(name: str, cls: type, raw: object) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(name, "expected a table ([" + name + "])")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{name}.{key}", "unknown key")
    values = {}
    for key, spec in known.items():
        if key in raw:
            try:
                values[key] = spec.metadata["parse"](raw[key])
            except ValueError as e:
                raise ConfigError(f"{name}.{key}", str(e)) from None
    return cls(**values)


_FIREWALL_KEYS = {"name", "addresses", "relay", "timezone", "hostnames", "tls_subject"}


def _firewalls(raw: object) -> tuple[Firewall, ...]:
    if not isinstance(raw, list):
        raise ConfigError("firewall", "expected an array of tables ([[firewall]])")
    firewalls = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"firewall[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "expected a table")
        for key in entry:
            if key not in _FIREWALL_KEYS:
                raise ConfigError(f"{where}.{key}", "unknown key")
        for key in ("name", "addresses"):
            if key not in entry:
                raise ConfigError(f"{where}.{key}", "missing")
        name = entry["name"]
        if not isinstance(name, str) or not _HOST_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name", "expected a lower-case name of letters, digits, "
                              f"'.', '_', ':' or '-', at most 63 characters, got {name!r}")
        if name in names:
            raise ConfigError(f"{where}.name", f"{name!r} is already the name of another firewall")
        names.add(name)
        firewalls.append(Firewall(
            name=name,
            networks=_networks(f"{where}.addresses", entry["addresses"]),
            relay=_field(where, "relay", _typed(bool, "true or false"), entry, False),
            timezone=_field(where, "timezone", parse_timezone, entry, None),
            hostnames=tuple(h.casefold() for h in _field(
                where, "hostnames", _string_list, entry, [])),
            tls_subject=_field(where, "tls_subject", _typed(str, "a certificate subject CN"), entry, None),
        ))
    return tuple(firewalls)


def _field(where: str, key: str, parse: Callable[[object], Any],
           entry: Mapping[str, Any], default: Any) -> Any:
    if key not in entry:
        return default
    try:
        return parse(entry[key])
    except ValueError as e:
        raise ConfigError(f"{where}.{key}", str(e)) from None


def _string_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return value


def _networks(key: str, value: object) -> tuple[Network, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, "expected a non-empty list of IP addresses or CIDR networks")
    networks = []
    for index, item in enumerate(value):
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}[{index}]", f"not an IP address or CIDR network: {item!r} ({e})") from None
    return tuple(networks)


def check_archive_dir(config: Config, user: tuple[int, int] | None = None) -> None:
    """Create the archive root if needed and prove a file can be written in it.

    ``user`` is the (uid, gid) that the server will run as after binding its
    ports as root (twistd's --uid/--gid): a root it creates is given to that
    user, and the write is tried as that user.
    """
    root = config.archive.dir
    try:
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        if created and user is not None and os.geteuid() == 0:
            os.chown(root, *user)
        with _effective_user(user):
            with tempfile.TemporaryFile(dir=root, prefix=".write-test-"):
                pass
    except OSError as e:
        who = "" if user is None else f" as uid {user[0]}"
        raise ConfigError("archive.dir", f"cannot write to {str(root)!r}{who}: {e.strerror}") from None


@contextmanager
def _effective_user(user: tuple[int, int] | None) -> Iterator[None]:
    if user is None or os.geteuid() != 0:
        yield
        return
    uid, gid = user
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def describe(config: Config) -> str:
    """The effective settings, in the same TOML layout as the config file."""
    lines = []
    for name, cls in _SECTIONS.items():
        section = getattr(config, name)
        lines.append(f"[{name}]")
        for spec in fields(cls):
            lines.append(f"{spec.name} = {_toml_value(getattr(section, spec.name))}")
        lines.append("")
    for firewall in config.firewalls:
        lines += [
            "[[firewall]]",
            f"name = {_toml_value(firewall.name)}",
            f"addresses = [{', '.join(_toml_value(str(n)) for n in firewall.networks)}]",
            f"relay = {_toml_value(firewall.relay)}",
        ]
        if firewall.timezone is not None:
            lines.append(f"timezone = {_toml_value(firewall.timezone)}")
        if firewall.hostnames:
            lines.append(f"hostnames = [{', '.join(_toml_value(h) for h in firewall.hostnames)}]")
        if firewall.tls_subject is not None:
            lines.append(f"tls_subject = {_toml_value(firewall.tls_subject)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return '""'
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
