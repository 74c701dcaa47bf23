"""The slowest messages of at most 64 KiB found so far, to classify within a millisecond.

Each is a prefix (a syslog header), a record's wording with ``{}`` where a
unit repeated up to 64 KiB goes, and the unit: what ``tests/fuzz/slowest.py``
prints. Add what it finds; the first ones are those that cost most before
the readers were bounded (4 s, 8 ms, 3 ms and 1 ms).
"""

from __future__ import annotations

LIMIT = 64 * 1024

CASES = [
    # An anti-spoofing line with no protocol: its protocol gave back one
    # character at a time to the source address, at each of 64 KiB (4 s).
    (b"<13>1 - gw app - - - ", "Anti-Spoofing: Packet from LAN, proto:{}", "a"),
    (b"<13>Nov 25 12:00:00 gw ", "Anti-Spoofing: Packet from LAN, proto:{}", "ip/port:"),
    # An IPS rule name of ", p": a lookahead at each of its characters (8 ms).
    (b"<13>1 - gw app - - - ", "IPS: Alert, severity: Low, Rule ID: 1:1 {}", ", p"),
    (b"<13>1 - gw app - - - ", "IPS: Alert, severity: Low, Rule ID: {}", ", "),
    (b"<13>1 - gw app - - - ", "IPS: Alert, severity: Low, Rule ID: 1:1 {}, proto:TCP, ip/port:1.2.3.4:1 > 5.6.7.8:2",
     "p"),
    (b"<13>Nov 25 12:00:00 gw kernel: ",
     "IPS: Alert, severity: Low, Rule ID: 1:1 {}, proto:TCP, ip/port:1.2.3.4:1 > 5.6.7.8:2", '[proto:"::'),
    # An interface of ", proto:": the lazy name tried each (3 ms).
    (b"", "Anti-Spoofing: Packet from {}, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2", ", proto:"),
    (b"<13>Nov 25 12:00:00 gw kernel: ",
     "Anti-Spoofing: Packet from {}, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2, flags: SYN, seq:1 ack:0, "
     "win:1, tcplen:0", "1:[: Authentication: fla"),
    (b"<13>Nov 25 12:00:00 gw kernel: ", "{{pktdrop}} packet dropped: Anti-spoofing (from {}",
     "Engine: FTP: client: \tAu"),
    (b"<13>Nov 25 12:00:00 gw kernel: ", "IPS: Alert, severity: Low, Rule ID: {}", "ip/port:1.=="),
    (b"<13>Nov 25 12:00:00 gw kernel: ", "{{pktdrop}} packet dropped: Anti-spoofing (from {}", "]]aIPS: afor user \t "),
    # A tail of commas: every TCP field looked for at each (2 ms).
    (b"<13>1 - gw app - - - ", "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2{}",
     ","),
    (b"<13>1 - gw app - - - ", "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2{}",
     "1"),
    (b"<13>1 - gw app - - - ", "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:{}", "ip/port:"),
    # A service name, a client, a reason of 64 KiB (2.4, 1 and 0.7 ms).
    (b"<13>1 - gw app - - - ", "Authentication: {}: Client: 1.2.3.4: x", " "),
    (b"", "Authentication: WebAdmin: Client: {}", ":1"),
    (b"<13>1 - gw app - - - ", "Authentication: WebAdmin: Client: 1.2.3.4: {}", ")"),
    (b"<13>1 - gw app - - - ", "Authentication: WebAdmin: Client: 1.2.3.4: {}", "for user "),
    (b"<13>1 - gw app - - - ", "FTP: Bounce attack attempt: client: {}, server: 5.6.7.8, command: PORT 1", "user:"),
    (b"<13>Nov 25 12:00:00 gw ", "FTP: Bounce attack attempt: client: {}, server: 5.6.7.8, command: PORT 1", "[("),
    (b"<13>1 - gw app - - - ", "FTP: Malicious server reply: client: 1.2.3.4, server: {}", "user:"),
    # Headers: a HOSTNAME, a timestamp's fraction, a run of spaces.
    (b"<13>1 - ", "{} app - - - Engine: Startup.", "a"),
    (b"<13>1 2026-11-25T10:00:00.", "{}Z gw app - - - Engine: Startup.", "1"),
    (b"<13>Nov 25 12:00:00", "{}gw Engine: Startup.", " "),
    # Structured data of many elements, of many parameters, of a long value
    # and of escapes: read a byte at a time in Python, with each element
    # built, any of them costs many milliseconds.
    (b"<13>1 - gw app - - ", "{} Engine: Startup.", "[a]"),
    (b"<13>1 - gw app - - ", "{} Engine: Startup.", '[a b="\\]"]'),
    (b"<13>1 - gw app - - [a", "{}] Engine: Startup.", ' b=""'),
    (b'<13>1 - gw app - - [a b="', '{}"] Engine: Startup.', "x"),
    (b'<13>1 - gw app - - [a b="', '{}"] Engine: Startup.', '\\"'),
    (b'<13>1 - gw app - - [a b="', '{}"] Engine: Startup.', "\\x"),
    # A MSG that starts with BOMs or U+FFFDs: each stripped by slicing the rest anew.
    (b"<13>1 - gw app - - - ", "{}Engine: Startup.", "\ufeff"),
    (b"<13>1 - gw app - - - ", "{}Engine: Startup.", "\ufffd"),
    (b"", "{}Engine: Startup.", "\ufeff\ufffd"),
]


def message(header: bytes, record: str, unit: str) -> bytes:
    """The case as a message of at most 64 KiB: the unit repeated to fill it."""
    before, _, after = record.partition("{}")
    head = header + before.replace("{{", "{").replace("}}", "}").encode()
    tail = after.encode()
    filler = unit.encode() * ((LIMIT - len(head) - len(tail)) // max(1, len(unit.encode())))
    return (head + filler + tail)[:LIMIT]


WORST_CASES = [message(*case) for case in CASES]
