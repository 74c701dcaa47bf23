"""Which firewall sent a message: the registry of firewalls and host tags.

Pure code. A host tag becomes a directory name under the archive root and a
metric label value, so every tag passes ``sanitize_host`` first.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from collector.config import Firewall, UnregisteredPolicy

MAX_HOST_LENGTH = 253  # a full DNS name; also well under a file name's 255 bytes

# Lower-case ASCII letters, digits, '.', '_', ':' (IPv6 senders) and '-'; no
# leading dot, nor leading '-', which a shell command given the directory
# name would take for an option. '/', '\\', NUL, control characters and
# non-ASCII look-alikes never pass, and ".." is refused below.
_HOST_TAG = re.compile(r"[a-z0-9_:][a-z0-9._:-]*")

# Bound the cache of firewalls by sender address.
_CACHE_LIMIT = 65536


def sanitize_host(name: str) -> str | None:
    """The host tag for a HOSTNAME, or None when it cannot safely be one."""
    # Check ASCII before folding: casefold() turns the Kelvin sign into "k".
    if not name.isascii() or len(name) > MAX_HOST_LENGTH:
        return None
    tag = name.lower()
    if _HOST_TAG.fullmatch(tag) is None or ".." in tag:
        return None
    return tag


def normalize_ip(address: str) -> str:
    """The canonical text of a sender address; IPv4-mapped IPv6 becomes IPv4."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# The one tag of the unregistered hosts past ``hosts.max_unregistered``.
UNREGISTERED = "unregistered"


@dataclass(frozen=True, slots=True)
class SourceHost:
    name: str
    firewall: Firewall | None = None
    # A registered firewall whose messages carry another HOSTNAME: kept as
    # data, and counted, since it hints at spoofing or a misconfiguration.
    hostname_mismatch: bool = False
    # The registered firewall whose name the HOSTNAME used, when the sender
    # is neither that firewall nor a relay: the message is not that firewall's.
    impersonated: Firewall | None = None
    # Tagged UNREGISTERED: the sender's own tag would pass hosts.max_unregistered.
    overflow: bool = False


@dataclass(frozen=True, slots=True)
class TlsBinding:
    """Whom a TLS client speaks for: a refusal reason, or the firewall (None: unregistered)."""

    refusal: str | None
    firewall: Firewall | None = None
    # The firewall whose certificate was offered from an address that may not use it.
    impersonated: Firewall | None = None


class HostRegistry:
    """Tags each message with the firewall that sent it.

    A firewall's names (its name, its ``hostnames``, and any HOSTNAME whose
    first label is its name) are its own: written as HOSTNAME by any other
    sender but a relay, they tag the message with the sender's own tag and
    are reported as an impersonation.

    Unregistered host tags (of unregistered senders, and those a relay
    passes on that name no firewall) are kept to ``max_unregistered``; the
    messages of further ones are tagged ``UNREGISTERED``. The tags seen so
    far are handed on to the registry that replaces this one (``previous``),
    so that reloading the configuration does not make room for more.
    """

    def __init__(self, firewalls: tuple[Firewall, ...], unregistered: UnregisteredPolicy,
                 max_unregistered: int = 1000, previous: HostRegistry | None = None) -> None:
        self._firewalls = firewalls
        self._unregistered = unregistered
        self._by_subject = {f.tls_subject: f for f in firewalls if f.tls_subject is not None}
        self._by_sender: dict[str, Firewall | None] = {}
        self._by_name = {f.name: f for f in firewalls}
        # Whose HOSTNAME each name is; a firewall's name before any's hostnames.
        self._claims: dict[str, Firewall] = {}
        for firewall in firewalls:
            for hostname in firewall.hostnames:
                self._claims.setdefault(hostname, firewall)
        self._claims.update(self._by_name)
        # The first label of each name ("branch" of "branch.example.com").
        self._by_first_label: dict[str, Firewall] = {}
        for firewall in firewalls:
            self._by_first_label.setdefault(_first_label(firewall.name), firewall)
        self.max_unregistered = max_unregistered
        self._unregistered_tags: set[str] = set()
        if previous is not None:
            self._unregistered_tags = {t for t in previous._unregistered_tags if t not in self._by_name}

    @property
    def firewalls(self) -> tuple[Firewall, ...]:
        return self._firewalls

    @property
    def unregistered_tags(self) -> int:
        """How many distinct unregistered host tags have been given out."""
        return len(self._unregistered_tags)

    def is_firewall_name(self, tag: str) -> bool:
        """Whether a host tag is a registered firewall's name."""
        return tag in self._by_name

    def firewall_name(self, sender_ip: str) -> str | None:
        """The name of the registered firewall (or relay) an address is of, if any."""
        firewall = self.firewall_for(sender_ip)
        return None if firewall is None else firewall.name

    def registered(self, sender_ip: str) -> bool:
        """Whether an address is a registered firewall's (relays included)."""
        return self.firewall_for(sender_ip) is not None

    def firewall_for(self, sender_ip: str) -> Firewall | None:
        try:
            return self._by_sender[sender_ip]
        except KeyError:
            pass
        found = None
        ip = ipaddress.ip_address(sender_ip)
        for firewall in self._firewalls:
            if any(ip in network for network in firewall.networks):
                found = firewall
                break
        if len(self._by_sender) >= _CACHE_LIMIT:
            self._by_sender.clear()
        self._by_sender[sender_ip] = found
        return found

    def accepts(self, sender_ip: str) -> bool:
        return (self._unregistered is UnregisteredPolicy.ACCEPT
                or self.firewall_for(sender_ip) is not None)

    def claimed_by(self, hostname: str) -> Firewall | None:
        """The registered firewall a HOSTNAME names (see ``_same_host``), if any."""
        folded = _folded(hostname)
        return self._claims.get(folded) or self._by_first_label.get(_first_label(folded))

    def resolve(self, sender_ip: str, hostname: str | None) -> SourceHost:
        """The host of a message from an accepted sender (see ``accepts``).

        Not cached here: the pipeline keeps what it resolved.
        """
        firewall = self.firewall_for(sender_ip)
        if firewall is not None:
            return self.resolve_bound(firewall, hostname)
        claimed = self.claimed_by(hostname) if hostname else None
        tag = sanitize_host(hostname) if hostname and claimed is None else None
        return self._unregistered_host(tag or sanitize_host(sender_ip) or "unknown", None, claimed)

    def resolve_bound(self, firewall: Firewall, hostname: str | None) -> SourceHost:
        """The host of a message known to come from ``firewall``."""
        if firewall.relay:
            tag = sanitize_host(hostname) if hostname else None
            if tag is None:
                return SourceHost(firewall.name, firewall)
            if tag in self._by_name:
                return SourceHost(tag, firewall)
            return self._unregistered_host(tag, firewall, None)
        if hostname is None or _same_host(firewall, hostname):
            return SourceHost(firewall.name, firewall)
        return SourceHost(firewall.name, firewall, hostname_mismatch=True, impersonated=self.claimed_by(hostname))

    def _unregistered_host(self, tag: str, relay: Firewall | None, impersonated: Firewall | None) -> SourceHost:
        tags = self._unregistered_tags
        if tag not in tags and tag != UNREGISTERED:
            if len(tags) >= self.max_unregistered:
                return SourceHost(UNREGISTERED, relay, impersonated=impersonated, overflow=True)
            tags.add(tag)
        return SourceHost(tag, relay, impersonated=impersonated)

    def tls_binding(self, sender_ip: str, subject: str | None) -> TlsBinding:
        """Which firewall a TLS client speaks for, from its certificate subject CN.

        A certificate bound to a firewall (``tls_subject``) speaks for it
        from its own addresses, or from a relay's; from anywhere else it is
        refused. From the addresses of a firewall that is bound to a
        certificate, only that certificate is taken. A certificate bound to
        none is taken as the sender's address would be without TLS.
        """
        by_subject = self._by_subject.get(subject) if subject is not None else None
        by_address = self.firewall_for(sender_ip)
        if by_address is not None and by_address.tls_subject is not None and by_address is not by_subject:
            return TlsBinding("tls_subject_mismatch", impersonated=by_subject)
        if by_subject is not None and by_address is not by_subject and (by_address is None or not by_address.relay):
            return TlsBinding("tls_subject_mismatch", impersonated=by_subject)
        firewall = by_subject or by_address
        if firewall is None and self._unregistered is UnregisteredPolicy.REFUSE:
            return TlsBinding("unregistered")
        return TlsBinding(None, firewall)


def _same_host(firewall: Firewall, hostname: str) -> bool:
    folded = _folded(hostname)
    return (folded == firewall.name or folded in firewall.hostnames
            or _first_label(folded) == _first_label(firewall.name))


def _folded(hostname: str) -> str:
    """A HOSTNAME as names are compared: case folded, without the root's trailing dot."""
    return hostname.casefold().rstrip(".")


def _first_label(name: str) -> str:
    """The first label of a name; a port or other suffix after ':' is no part of it."""
    return re.split(r"[.:]", name, maxsplit=1)[0]


@dataclass(frozen=True, slots=True)
class Sender:
    """Where a message or connection came from."""

    ip: str
    port: int
    # The archive line's sender field: "192.0.2.1:514" or "[2001:db8::1]:514".
    field: bytes

    @classmethod
    def from_address(cls, host: str, port: int) -> Sender:
        ip = normalize_ip(host)
        text = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return cls(ip, port, text.encode("ascii"))

    def __str__(self) -> str:
        return self.field.decode("ascii")
