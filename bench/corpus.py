"""Realistic Kerio traffic for benchmarks and load tests: a mix of every
Security-log record type, look-alike lines of the other logs, in both syslog
dialects."""

from __future__ import annotations

import random

# (weight, template); {a} {b} are addresses, {p} {q} ports, {n} a number.
TEMPLATES = [
    (20, "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:{a}:{p} -> {b}:{q}, "
         "flags: SYN, seq:{n} ack:0, win:16384, tcplen:0"),
    (8, "{{pktdrop}} packet dropped: Anti-spoofing (from Cable, proto:UDP, len:334, {a}:{p} -> {b}:{q}, "
        "udplen:306)"),
    (2, "Anti-Spoofing: Packet to Internet 2 - Backup, proto:ICMP, len:84, ip/port:{a} > {b}"),
    (8, "Authentication: WebAdmin: Client: {a}: Invalid password for user admin"),
    (3, "Authentication: HTTP Proxy: Client: {a}: User jdoe{p} doesn't exist"),
    (1, "Authentication: VPN Client: Client: {a}: Kerberos 5 auth: user x{p}@example.com not authenticated"),
    (6, "IPS: Packet drop, severity: High, Rule ID: 1:2010575 ET TROJAN ASProtect/ASPack Packed Binary, "
        "proto:TCP, ip/port:{a}:{p}(static.example.net) > {b}:{q}(pc-14.example.local,user:jdoe)"),
    (3, "IPS: Alert, severity: Medium, Rule ID: 1:2100366 GPL ICMP_INFO PING, proto:ICMP, ip/port:{a} > {b}"),
    (1, "FTP: Bounce attack attempt: client: {a}, server: {b}, command: PORT 10,11,12,13,14,15"),
    (1, "FTP: Malicious server reply: client: {a}, server: {b}, response: 227 Entering Passive Mode (1,2,3,4,5,6)"),
    (1, "Engine: Startup."),
    (1, "Engine: Shutdown."),
    (25, "PERMIT 'Local traffic' packet to LAN, proto:TCP, len:52, ip/port:{a}:{p} -> {b}:{q}, "
         "flags: ACK PSH, seq:{n} ack:1, win:64036, tcplen:7"),
    (10, "{{pktdrop}} packet dropped: Traffic rule: Block all (to WAN, proto:UDP, len:84, {a}:{p} -> {b}:{q})"),
    (10, "(3004) Authentication subsystem warning: Invalid password for user admin"),
]


def kerio_line(rng: random.Random) -> str:
    template = rng.choices([t for _, t in TEMPLATES], weights=[w for w, _ in TEMPLATES])[0]
    line = template.format(
        a=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        b=f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        p=rng.randrange(1024, 65536), q=rng.choice((22, 80, 443, 445, 3389)),
        n=rng.randrange(2**32))
    if rng.random() < 0.5:
        line = f"[25/Nov/2026 10:{rng.randrange(60):02d}:{rng.randrange(60):02d}] {line}"
    return line


def syslog_message(rng: random.Random, host: str, line: str, seq: int | None = None) -> bytes:
    """One message, RFC 5424 or RFC 3164 at random; ``seq`` is appended for loss counting."""
    if seq is not None:
        line = f"{line} seq={seq}"
    if rng.random() < 0.5:
        return f"<116>1 2026-11-25T10:00:00+01:00 {host} security - - - {line}".encode()
    return f"<116>Nov 25 10:00:00 {host} security: {line}".encode()


def messages(count: int, hosts: int = 50, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    names = [f"fw-{i:04d}" for i in range(hosts)]
    return [syslog_message(rng, rng.choice(names), kerio_line(rng)) for _ in range(count)]
