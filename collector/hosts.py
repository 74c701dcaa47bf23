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


@dataclass(frozen=True, slots=True)
class SourceHost:
    name: str
    firewall: Firewall | None = None
    # A registered firewall whose messages carry another HOSTNAME: kept as
    # data, and counted, since it hints at spoofing or a misconfiguration.
    hostname_mismatch: bool = False


class HostRegistry:
    """Tags each message with the firewall that sent it."""

    def __init__(self, firewalls: tuple[Firewall, ...], unregistered: UnregisteredPolicy) -> None:
        self._firewalls = firewalls
        self._unregistered = unregistered
        self._by_subject = {f.tls_subject: f for f in firewalls if f.tls_subject is not None}
        self._by_sender: dict[str, Firewall | None] = {}

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

    def resolve(self, sender_ip: str, hostname: str | None) -> SourceHost:
        """The host of a message from an accepted sender (see ``accepts``).

        Not cached here: the pipeline keeps what it resolved.
        """
        firewall = self.firewall_for(sender_ip)
        if firewall is None:
            tag = sanitize_host(hostname) if hostname else None
            return SourceHost(tag or sanitize_host(sender_ip) or "unknown")
        return self.resolve_bound(firewall, hostname)

    def resolve_bound(self, firewall: Firewall, hostname: str | None) -> SourceHost:
        """The host of a message known to come from ``firewall``."""
        if firewall.relay:
            tag = sanitize_host(hostname) if hostname else None
            return SourceHost(tag or firewall.name, firewall)
        return SourceHost(firewall.name, firewall,
                          hostname_mismatch=hostname is not None and not _same_host(firewall, hostname))

    def tls_binding(self, sender_ip: str, subject: str | None) -> tuple[str | None, Firewall | None]:
        """Which firewall a TLS client speaks for, from its certificate subject CN.

        Returns a refusal reason, or None and the firewall (None: unregistered,
        tagged as usual). A certificate bound to one firewall cannot speak from
        the address of another firewall that is bound to a certificate.
        """
        by_subject = self._by_subject.get(subject) if subject is not None else None
        by_address = self.firewall_for(sender_ip)
        if by_address is not None and by_address.tls_subject is not None and by_address is not by_subject:
            return "tls_subject_mismatch", None
        firewall = by_subject or by_address
        if firewall is None and self._unregistered is UnregisteredPolicy.REFUSE:
            return "unregistered", None
        return None, firewall


def _same_host(firewall: Firewall, hostname: str) -> bool:
    folded = hostname.casefold()
    return (folded == firewall.name or folded in firewall.hostnames
            or folded.partition(".")[0] == firewall.name)
