"""The shapes most messages take, recognized in one match.

Reading a message in full costs a few regex matches and some dozens of
bytecodes (``syslog.envelope``, then ``kerio.summary_in``). Most messages of
a stream differ only in fields that no metric label is read from:
addresses, ports, sequence numbers, timestamps, rule names.
``COMMON_SHAPE`` matches the shapes that Kerio and the common relays write.
It checks those fields without capturing them, and captures what the
summary is read from.

The contract, held by tests against the full reading:

- a message that matches has no header error, its HOSTNAME is the ``host``
  group (``shape.groups()[HOST_FIELD]``), and its summary is
  ``kerio.summarize(msg_of(shape))``;
- two messages that match with equal keys (``shape.groups()[KEY_START:]``)
  have the same summary.

So the pipeline reads one message of each key in full and reuses its
summary for the others: a shape decides nothing by itself. A message of any
other shape is read in full. Every pattern below accepts only a part of
what the full reading accepts, in printable ASCII wherever the full reading
would treat a character as a blank or not depending on its encoding.
"""

from __future__ import annotations

import re

from collector.parsing.kerio import OCTET_PATTERN, PORT_PATTERN

# sre keeps a point to go back to for each branch and repeat it passes
# until the whole match ends, reallocating its stack as that grows. Where a
# piece can be read one way only, an atomic group drops those points once
# it has matched, and a possessive repeat ("++", "*+") keeps none: it is
# followed by a byte that its class excludes, so giving some back could
# not help. Either matches as its plain form does (tests/test_shapes.py
# checks that).


def _atomic(pattern: bytes) -> bytes:
    return rb"(?>" + pattern + rb")"


def _optional(pattern: bytes) -> bytes:
    # Matches as "(?:pattern)?" does, but sre runs that through its general
    # repeat machinery, and this as a plain branch, in fewer steps.
    return rb"(?:" + pattern + rb"|)"


_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
# Days a month of any year has, so that a date that matches is a date.
_DAY = rb"(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = rb"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"

# <PRI> without leading zeros, 0 to 191.
_PRI = rb"<(?:1[0-8][0-9]|19[01]|[1-9]?[0-9])>"
# RFC 5424: "1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - ", with no
# structured data; the TIMESTAMP is "-" or a valid date and time. The full
# reading splits the header at spaces and reads nothing of APP-NAME, PROCID
# and MSGID: any other bytes will do.
_RFC5424_TIMESTAMP = (
    rb"(?:-|[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-" + _DAY + rb"T" + _TIME
    + _optional(rb"\.[0-9]{1,6}+") + rb"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))")
# RFC 3164: "Mmm dd hh:mm:ss HOSTNAME TAG: " with a TAG that is not a
# record's marker (a marker there starts the record).
_BSD_TIMESTAMP = _MONTH + rb" (?: [1-9]|0[1-9]|[12][0-9]|3[01]) " + _TIME
_TAG = (rb"(?!(?:Anti-Spoofing|Authentication|Engine|FTP|IPS)[:\[])"
        rb"[^\s:\[\]]{1,48}+" + _optional(rb"\[[^\]\s]{0,128}+\]") + rb": ?+")
_HEADER = _atomic(
    _PRI + rb"(?:(1) " + _RFC5424_TIMESTAMP + rb"|" + _BSD_TIMESTAMP + rb") "
    + rb"(?P<host>(?!- )[!-9;-Z\\^-~]++) "  # printable, no ':' '[' ']'
    + rb"(?(1)[^ ]++ [^ ]++ [^ ]++ - |" + _TAG + rb")"
    + _optional(rb"\xef\xbb\xbf") + rb"(?P<msg>)"
)

# [17/Jul/2008 11:46:38], a valid date.
_EVENT_TIME = _atomic(_optional(rb"\[" + _DAY + rb"/" + _MONTH + rb"/[1-9][0-9]{3} " + _TIME + rb"\] ?"))

_OCTET = OCTET_PATTERN.encode()
_PORT = rb"(?::" + PORT_PATTERN.encode() + rb")"
# Written out: a repeated group costs sre more than the same pattern three times.
_ADDRESS = (_OCTET + rb"\.") * 3 + _OCTET
_ENDPOINT = _atomic(_ADDRESS + _optional(_PORT))
_END = rb"(?=[ \t\r\n]|\Z)"

# Anti-spoofing, both wordings. A TCP packet has every TCP field, as Kerio
# writes them; an interface holds no comma, and (as an authentication's
# service) is short: the full reading reads no longer one either. What the summary is read from,
# direction to protocol, is one group: each field of a key costs a hash and
# a comparison per message. A lookbehind on the protocol's last letters then
# picks the rest of a TCP packet, or of a UDP or ICMP one. The empty group
# after the packet marks whether the line ends with the closing parenthesis.
_PACKET = (
    rb"((?:from|to) [^,\n]{1,512}+, proto:(?:TCP|UDP|ICMP))"
    rb"(?:(?<=TCP), len:[0-9]++, {ip}" + _ENDPOINT + rb" -> " + _ENDPOINT
    + rb", flags: ?+[A-Z]++(?: [A-Z]++)*+ ?+, seq:[0-9]++ ack:[0-9]++, win:[0-9]++, tcplen:[0-9]++"
    + rb"|(?<=[DM]P), len:[0-9]++, {ip}" + _ENDPOINT + rb" -?> " + _ENDPOINT + rb"(?=[,) \t\r\n]|\Z))"
)
_ANTI_SPOOFING = (
    rb"Anti-Spoofing: Packet " + _PACKET.replace(b"{ip}", b"ip/port:")
    + rb"|\{pktdrop\} packet dropped: Anti-spoofing \(" + _PACKET.replace(b"{ip}", b"")
    + _optional(rb"[^\n]*[^\n \t\r]") + rb"(?:(?<=(\)))|)[ \t\r]*+\Z"
)
# IPS: action and severity in one group; the rule name holds no comma and
# no "proto:", and is at most 256 characters (a longer one, a sender's
# choice, would cost a lookahead at each "p": it is read in full instead);
# endpoints may carry "(hostname,user:name)".
_IPS_ENDPOINT = _ENDPOINT + _optional(rb"\([!-~]*\)")
_IPS = (
    rb"IPS: ((?:Packet drop|Alert), severity: [^,]*+), Rule ID: [!-+\--~]++ "
    rb"(?=[^,\n]{0,256}+,)[^,p\n]*+(?:p(?!roto:)[^,p\n]*+)*+"
    rb", proto:[!-+\--~]*+, ip/port:" + _IPS_ENDPOINT + rb" -?> " + _IPS_ENDPOINT + _END
)
# The whole reason is captured: its class is read from its words.
_AUTHENTICATION = rb"Authentication: ([^:\n]{1,128}+): Client: " + _ADDRESS + rb": ([^\n]*+)\Z"
_FTP = (rb"FTP: (Bounce attack attempt|Malicious server reply): client: " + _ADDRESS
        + rb", server: " + _ADDRESS + rb", (?:command|response): [!-~]")
_ENGINE = rb"Engine: (Startup|Shutdown)\.?+[ \t\r\n]*+\Z"
# A line that no record's marker starts is of no record type.
_NO_MARKER = rb"(?=[^AFEI{\[ \t\xef]|\{(?!pktdrop\} packet dropped: Anti-spoofing \())"

COMMON_SHAPE = re.compile(
    _HEADER + _EVENT_TIME
    + rb"(?:" + rb"|".join((_ANTI_SPOOFING, _IPS, _AUTHENTICATION, _FTP, _ENGINE, _NO_MARKER)) + rb")"
)
# Where ``shape.groups()``, which returns every field in one call, holds
# the HOSTNAME, and where the key starts: what the summary is read from.
# Indices, not a ``slice``: compiled, ``fields[KEY_START:]`` copies the
# tuple's items directly.
HOST_FIELD = COMMON_SHAPE.groupindex["host"] - 1
KEY_START = COMMON_SHAPE.groupindex["msg"]


def msg_of(shape: re.Match[bytes]) -> bytes:
    """A matching message's MSG, as ``syslog.envelope`` gives it."""
    return shape.string[shape.end("msg"):]
