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
        "5514", parse_listen_address,
        "Syslog over UDP (RFC 5426), one message a datagram. With several workers they share the port "
        "(`SO_REUSEPORT`), each datagram going to one of them at random.")
    tcp: ListenAddress | None = _setting(
        "5514", parse_listen_address,
        "Syslog over TCP (RFC 6587), each frame read on its own: octet-counted when it begins with a count "
        "without a leading zero, a space and the message's PRI (`<`); any other frame is read up to its LF "
        "(or NUL). A frame over `listen.max_frame_bytes` is cut to it and the rest skipped, by its count or "
        "up to its LF, so that no frame costs the frames after it. With several workers the supervisor "
        "listens and hands each connection to the worker with the fewest.")
    metrics: ListenAddress | None = _setting(
        "9514", parse_listen_address,
        "HTTP: `/metrics` for Prometheus and `/healthz` for probes, held to limits of their own "
        "(`limits.max_http_connections`). With several workers the supervisor serves it, summed over them.")
    max_frame_bytes: int = _setting(
        65536, _positive_int,
        "A longer message (a TCP or TLS frame, or a datagram) is cut to this many bytes, counted in "
        "`syslog_collector_truncated_frames_total`, and the bytes left out in "
        "`syslog_collector_skipped_bytes_total`. An archive line is then at most four times this (every byte "
        "escaped) plus its prefix.")
    udp_receive_buffer_bytes: int = _setting(
        8 * 1024 * 1024, _positive_int,
        "`SO_RCVBUF` of the UDP socket: room for the datagrams that arrive while the collector is busy (a "
        "scrape, a flush), rests between reads, or waits for the archive. Beyond the sysctl "
        "`net.core.rmem_max` it takes `CAP_NET_ADMIN` (root has it); otherwise the kernel grants less, which "
        "is logged at start-up and shown in `syslog_collector_udp_receive_buffer_bytes`.")
    udp_read_interval_seconds: float = _setting(
        0.01, _non_negative_seconds,
        "A UDP socket whose reads give a little at a time is read at most this often: every read costs a "
        "wakeup and the pipeline's work per call however little it brings, so the datagrams that arrive "
        "meanwhile are read in one go, at less CPU per message. A read of 64 KiB or more is followed by the "
        "next at once. The datagrams wait in the kernel meanwhile: `listen.udp_receive_buffer_bytes` must "
        "hold this long's worth at the peak rate. `0` reads them as soon as they arrive.")
    tcp_receive_buffer_bytes: int = _setting(
        0, _non_negative_int,
        "`SO_RCVBUF` of each TCP connection (not TLS). `0` leaves it to the kernel, which starts small "
        "(`net.ipv4.tcp_rmem`) and grows it as the collector reads. A fixed size holds from the first read, "
        "and each connection whose reading is paused (the archive behind, a sender over its rate) may then "
        "hold that much kernel memory.")
    drain_seconds: float = _setting(
        5.0, _positive_seconds,
        "On a graceful stop (SIGTERM, SIGINT), how long open TCP and TLS connections may go on sending. Each "
        "is read dry and closed once found quiet for 0.2 s at two checks in a row, and every one still open "
        "(one paused while the archive catches up, say) at this deadline.")


def _optional_path(value: object) -> Path | None:
    text: str = _typed(str, "a file path")(value)
    return Path(text) if text else None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    enabled: bool = _setting(
        False, _typed(bool, "true or false"),
        "Listen for syslog over TLS (RFC 5425) on `tls.listen`; needs `tls.certificate` and `tls.key`.")
    listen: ListenAddress | None = _setting(
        "6514", parse_listen_address,
        "Address of the TLS listener, written as those of `[listen]`. With several workers the supervisor "
        "listens and the workers do the handshakes.")
    certificate: Path | None = _setting(
        "", _optional_path,
        "The server's certificate, PEM, the rest of its chain after it in the same file. Required when "
        "`tls.enabled`.")
    key: Path | None = _setting(
        "", _optional_path,
        "The certificate's private key, PEM; may be the certificate's file. Required when `tls.enabled`.")
    ca: Path | None = _setting(
        "", _optional_path,
        "CA certificates, PEM, that sign the firewalls' client certificates. Required when "
        "`tls.verify_clients`.")
    verify_clients: bool = _setting(
        False, _typed(bool, "true or false"),
        "Require a client certificate signed by `tls.ca` (mutual TLS). A `[[firewall]]` entry's "
        "`tls_subject` then binds a certificate to that firewall.")
    crl: Path | None = _setting(
        "", _optional_path,
        "Certificate revocation lists, PEM (one file may hold several), each signed by a CA of `tls.ca`; "
        "needs `tls.verify_clients`. A client whose certificate, or a CA certificate above it, is revoked "
        "fails the handshake, and is logged as revoked. A list past its next update is still used, and "
        'logged. Re-read on SIGHUP; a file that no longer loads leaves the lists in use. `""` checks no '
        "revocation.")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = _setting(
        2000, _positive_int,
        "Open TCP and TLS connections in all. One more is closed as soon as it is accepted "
        "(`too_many_connections`), except that a registered firewall still gets a place, and so does a "
        "newcomer while an unregistered sender holds at least two more than the newcomer would: that "
        "sender's longest-idle connection is closed (`evicted`).")
    max_connections_per_sender: int = _setting(
        32, _positive_int,
        "Open TCP and TLS connections from one sender; one more is closed as soon as it is accepted "
        "(`too_many_from_sender`).")
    sender_prefix_ipv4: int = _setting(
        24, _prefix(32),
        "An unregistered IPv4 sender is its network of this prefix length: a host on a network can take any "
        "of its addresses.")
    sender_prefix_ipv6: int = _setting(
        64, _prefix(128),
        "An unregistered IPv6 sender is its network of this prefix length: a /64 is an endless supply of "
        "addresses for one host.")
    handshake_timeout_seconds: float = _setting(
        10.0, _positive_seconds,
        "A TLS connection whose handshake is not done in this time is closed (`handshake_timeout`).")
    idle_timeout_seconds: float = _setting(
        600.0, _positive_seconds,
        "A connection that sends nothing for this long is closed (`idle`); trailers and blank lines alone "
        "count as silence. What it had sent is kept.")
    frame_timeout_seconds: float = _setting(
        30.0, _positive_seconds,
        "A message begun must be complete within this time, or the connection is closed (`frame_timeout`): a "
        "sender trickling bytes holds no place for long. A connection the collector paused is neither idle "
        "nor slow: both times start again when it is resumed.")
    max_messages_per_second_per_sender: int = _setting(
        200000, _non_negative_int,
        "Messages a second from one sender address: a token bucket with a burst of one second, shared by its "
        "datagrams and all its connections. Over TCP and TLS the sender is held back, not dropped: what was "
        "read is archived and charged, and its connections are not read again until the debt is paid "
        "(`syslog_collector_throttled_seconds_total`). Over UDP the excess is dropped, counted in "
        "`syslog_collector_rate_limited_messages_total` and "
        '`syslog_collector_dropped_messages_total{reason="rate_limited"}`. Each worker applies it on its '
        "own. `0`: no limit. Set it above what your busiest UDP sender sends in an attack: dropped security "
        "lines are lost for good.")
    max_http_connections: int = _setting(
        64, _positive_int,
        "Open HTTP connections to `listen.metrics`. One more is closed as soon as it is accepted, counted in "
        "`syslog_collector_http_refused_connections_total`, so that no number of HTTP clients takes the file "
        "descriptors that syslog connections and archive files need. Prometheus needs one or two; the rest "
        "is room for probes and people.")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    count: int = _setting(
        1, _positive_int,
        "Worker processes. Above 1, the twistd process supervises that many: it takes the TCP and TLS "
        "connections and hands each to the worker with the fewest open, the workers share the UDP port "
        "(`SO_REUSEPORT`, each datagram to one at random), and it serves `/metrics` summed over them. Size "
        "it by the CPU seconds per million messages that `bench/compare.py` prints on your hardware.")


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    dir: Path = _setting(
        "archive", lambda v: Path(_typed(str, "a directory path")(v)),
        "Root of the per-host archives, relative to the working directory unless absolute. It is created at "
        "start-up if missing; one that cannot be written stops the collector.")
    timezone: tzinfo = _setting(
        "UTC", parse_timezone,
        "Zone of the archive files' day boundaries: `UTC` or an IANA name such as `Europe/Prague`.")
    flush_interval_seconds: float = _setting(
        1.0, _positive_seconds,
        "Received lines are buffered and written at least this often, and at shutdown: a crash (kill -9) "
        "loses at most this much. More than 8 MiB of buffered lines are written at once.")
    fsync: bool = _setting(
        False, _typed(bool, "true or false"),
        "fsync each archive file after each flush: the lines survive a power cut, at a cost in disk IOPS.")
    max_open_files: int = _setting(
        1024, _positive_int,
        "Archive files held open at once; the least recently written is closed first. At least the number of "
        "firewalls, or files are opened again at every flush. At start-up the collector raises its "
        "open-files limit to `limits.max_connections` plus `limits.max_http_connections` plus this plus 128, "
        "as far as the hard limit allows.")
    compress: bool = _setting(
        True, _typed(bool, "true or false"),
        "Compress each closed day's file to `<YYYY-MM-DD>.log.gz`, in a background thread, so that a crash "
        "at any point loses and doubles no line. With several workers, worker 0 does it, once nobody has "
        "written to the file for two minutes.")
    retention_days: int = _setting(
        0, _non_negative_int,
        "Days kept before today; older files are removed at start-up, after each change of day and every "
        "hour. `0` keeps everything.")
    max_host_bytes: int = _setting(
        0, _non_negative_int,
        "Bound on each host's archive files in bytes, oldest removed first; today's file is never removed. "
        "`0` sets no bound.")


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    timezone: tzinfo = _setting(
        "UTC", parse_timezone,
        "Zone of RFC 3164 timestamps, which carry none; a `[[firewall]]` entry may set its own. It serves "
        "the clock skew metric: messages are archived as received.")


@dataclass(frozen=True, slots=True)
class HostSettings:
    unregistered: UnregisteredPolicy = _setting(
        "accept", _enum(UnregisteredPolicy),
        'Senders not listed under `[[firewall]]`: `"accept"` tags them by their syslog HOSTNAME, or their '
        'address when it has no usable one; `"refuse"` drops their datagrams and closes their TCP and TLS '
        "connections, counted in `syslog_collector_refused_messages_total` and "
        "`syslog_collector_refused_connections_total`.")
    max_unregistered: int = _setting(
        1000, _non_negative_int,
        "Distinct host tags of unregistered senders (and of HOSTNAMEs a relay passes on that name no "
        'registered firewall). The messages of further ones are archived under the one tag `"unregistered"`, '
        "each line with its sender's address as always, and counted in "
        "`syslog_collector_unregistered_overflow_total`: archive directories and `host` label values stay "
        "bounded. Counted from the start of the process, across reloads; each worker counts its own. `0` "
        'tags every unregistered sender `"unregistered"`.')


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    max_hosts: int = _setting(
        1000, _positive_int,
        'Distinct values of the `host` label; messages from further hosts are counted under `host="other"` '
        "and in `syslog_collector_host_label_overflow_total`. A registered firewall always keeps a label of "
        "its own.")
    max_interfaces_per_host: int = _setting(
        20, _positive_int,
        "Distinct anti-spoofing interface names of a host used as label values (they are free text from the "
        "firewall's configuration); further ones, names over 64 bytes and names holding control or format "
        'characters count as `"other"`.')


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


# The shared tag of unregistered hosts past hosts.max_unregistered, and the
# label of hosts past metrics.max_hosts.
RESERVED_NAMES = ("unregistered", "other")


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
        if name in RESERVED_NAMES or _is_ip(name):
            # Tags the collector gives others: an unregistered sender's
            # address, and the shared tag and label of overflows.
            raise ConfigError(f"{where}.name", f"{name!r} is a tag the collector gives other senders: "
                              "choose another name")
        names.add(name)
        firewalls.append(Firewall(
            name=name,
            networks=_networks(f"{where}.addresses", entry["addresses"]),
            relay=_field(where, "relay", _typed(bool, "true or false"), entry, False),
            timezone=_field(where, "timezone", parse_timezone, entry, None),
            hostnames=tuple(h.casefold().rstrip(".") for h in _field(
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
            network = ipaddress.ip_network(item, strict=True)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}[{index}]", f"not an IP address or CIDR network: {item!r} ({e})") from None
        # Senders' IPv4-mapped IPv6 addresses are read as IPv4 (hosts.normalize_ip): so are these.
        mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
