"""Who may hold the collector's TCP and TLS connections: pure bookkeeping.

An attacker who opens connections until ``limits.max_connections`` are
held must not lock out the firewalls the collector is there for, nor every
other sender. So:

- Unregistered senders are counted by network, not by address: an IPv4
  /24 (``limits.sender_prefix_ipv4``) or an IPv6 /64
  (``limits.sender_prefix_ipv6``) is one sender, since a host on it can take
  any of its addresses. A registered firewall (its ``[[firewall]]`` entry,
  all of its addresses) is a sender of its own, whoever shares its network.
  Each sender may hold ``limits.max_connections_per_sender``.
- When every place is taken, a registered firewall gets one all the same:
  the unregistered sender holding the most gives up its longest-idle
  connection, or when no unregistered sender holds any, the registered one
  holding the most, if it holds at least two more. So does an unregistered
  newcomer, from unregistered senders only, as long as that sender holds at
  least two more than the newcomer would (fair share); otherwise the
  newcomer is refused.

What is evicted is left to the caller: this module only names the sender
to take a connection from (and, where it knows them, the connection).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from collector.config import LimitSettings

TOO_MANY_CONNECTIONS = "too_many_connections"
# Before a registered firewall's name, as a sender: no network's text starts so.
REGISTERED = "firewall "
TOO_MANY_FROM_SENDER = "too_many_from_sender"


class Member(Protocol):
    """A connection, as far as the bookkeeping needs it."""

    last_data_at: float


@dataclass(frozen=True, slots=True)
class Admission:
    """A decision on a new connection: refused (``refusal``), or admitted,
    perhaps at the cost of one connection of ``evict`` (a sender), which is
    ``victim`` when the connections are known here."""

    refusal: str | None = None
    evict: str | None = None
    victim: Member | None = None


class ConnectionSlots:
    """Open connections in all and per sender, shared by the TCP and TLS listeners."""

    def __init__(self, max_total: int, max_per_sender: int, *, prefix_ipv4: int = 24, prefix_ipv6: int = 64,
                 firewall_of: Callable[[str], str | None] = lambda ip: None) -> None:
        self.max_total = max_total
        self.max_per_sender = max_per_sender
        self._prefixes = {4: prefix_ipv4, 6: prefix_ipv6}
        self.firewall_of = firewall_of
        self._total = 0
        self._per_sender: dict[str, int] = {}
        # Connections of each sender, where the caller gives them.
        self._members: dict[str, set[Member]] = {}
        # Evictions asked for and not yet ended: those connections are as good as gone.
        self._leaving: dict[str, int] = {}
        self._leaving_total = 0
        # The connections asked to close, where they are known: only their
        # end ends an eviction.
        self._victims: set[Member] = set()

    @classmethod
    def from_settings(cls, limits: LimitSettings, firewall_of: Callable[[str], str | None]) -> ConnectionSlots:
        """The limits of ``[limits]``; ``firewall_of`` names the registered firewall of an address, if any."""
        return cls(limits.max_connections, limits.max_connections_per_sender,
                   prefix_ipv4=limits.sender_prefix_ipv4, prefix_ipv6=limits.sender_prefix_ipv6,
                   firewall_of=firewall_of)

    def sender_of(self, ip: str) -> str:
        """The sender an address counts as: its registered firewall, else its network."""
        firewall = self.firewall_of(ip)
        if firewall is not None:
            return REGISTERED + firewall
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        network = ipaddress.ip_network(f"{address}/{self._prefixes[address.version]}", strict=False)
        return str(network)

    def admit(self, ip: str, member: Member | None = None) -> Admission:
        """Take a place for a new connection from ``ip``, or say why there is none."""
        sender = self.sender_of(ip)
        held = self._held(sender)
        if held >= self.max_per_sender:
            return Admission(refusal=TOO_MANY_FROM_SENDER)
        admission = Admission()
        if self._total - self._leaving_total >= self.max_total:
            registered = sender.startswith(REGISTERED)
            evict = self._largest(exclude=sender, registered=False)
            fair = evict is not None and (registered or self._held(evict) >= held + 2)
            if not fair and registered:
                # Only registered firewalls hold places: the one holding most, if that is fair.
                evict = self._largest(exclude=sender, registered=True)
                fair = evict is not None and self._held(evict) >= held + 2
            if evict is None or not fair:
                return Admission(refusal=TOO_MANY_CONNECTIONS)
            victim = self._longest_idle(evict)
            if victim is not None:
                self._victims.add(victim)
            self._leaving[evict] = self._leaving.get(evict, 0) + 1
            self._leaving_total += 1
            admission = Admission(evict=evict, victim=victim)
        self._total += 1
        self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        if member is not None:
            self._members.setdefault(sender, set()).add(member)
        return admission

    def release(self, ip: str, member: Member | None = None) -> None:
        sender = self.sender_of(ip)
        count = self._per_sender.get(sender, 0)
        if count <= 0:  # the registry changed meanwhile: find it by its network too
            sender = next((s for s, members in self._members.items() if member in members), sender)
            count = self._per_sender.get(sender, 0)
            if count <= 0:
                return
        self._total -= 1
        if count > 1:
            self._per_sender[sender] = count - 1
        else:
            del self._per_sender[sender]
        if member is not None and sender in self._members:
            self._members[sender].discard(member)
            if not self._members[sender]:
                del self._members[sender]
        leaving = self._leaving.get(sender, 0)
        # With the connections known, only a victim's end ends an eviction;
        # without (the supervisor of workers), the sender's next end does.
        if member is not None:
            if member not in self._victims:
                leaving = 0
            self._victims.discard(member)
        if leaving:
            self._leaving_total -= 1
            if leaving > 1:
                self._leaving[sender] = leaving - 1
            else:
                del self._leaving[sender]

    def evict_from(self, sender: str) -> Member | None:
        """The connection of ``sender`` to close for another's sake (the supervisor of
        workers names the sender, and the worker holding one of its connections closes it)."""
        return self._longest_idle(sender)

    def _held(self, sender: str) -> int:
        return self._per_sender.get(sender, 0) - self._leaving.get(sender, 0)

    def _largest(self, exclude: str, registered: bool) -> str | None:
        largest, most = None, 0
        for sender in self._per_sender:
            held = self._held(sender)
            if held > most and sender != exclude and sender.startswith(REGISTERED) == registered:
                largest, most = sender, held
        return largest

    def _longest_idle(self, sender: str) -> Member | None:
        members = [m for m in self._members.get(sender, ()) if m not in self._victims]
        if not members:
            return None
        return min(members, key=lambda m: m.last_data_at)
