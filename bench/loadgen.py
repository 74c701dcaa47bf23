"""Load for benchmarks: realistic Kerio lines with unique sequence numbers.

    python bench/loadgen.py --transport tcp-octet --port 5514 --messages 1000000 \
        --connections 4 --hosts 50 [--rate 150000]

Every message is RFC 5424 and carries its sequence number as its MSGID
(``s<N>``), so that loss and duplicates can be counted exactly from whatever
the receiver wrote. Messages are built and framed before the clock starts:
the sender must not be the bottleneck it measures.
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import kerio_line  # noqa: E402

TRANSPORTS = ("udp", "tcp-lf", "tcp-octet", "tls-octet")
SEQUENCE = re.compile(rb" s(\d+) ")
SENDER_THREADS = 4


def build(count: int, hosts: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    names = [f"fw-{i:04d}".encode() for i in range(hosts)]
    lines = [kerio_line(rng).encode() for _ in range(min(count, 20000))]  # reused, with new numbers
    return [b"<116>1 2026-11-25T10:00:00+01:00 %s security - s%d - %s"
            % (names[seq % hosts], seq, lines[seq % len(lines)]) for seq in range(count)]


def frame(messages: list[bytes], transport: str) -> list[bytes]:
    """The wire form of each message: a datagram, or bytes of a TCP stream."""
    if transport in ("tcp-octet", "tls-octet"):
        return [b"%d %s" % (len(m), m) for m in messages]
    if transport == "tcp-lf":
        return [m + b"\n" for m in messages]
    return messages


def send(wire: list[bytes], transport: str, port: int, connections: int = 4,
         rate: float | None = None, host: str = "127.0.0.1") -> float:
    """Send every message of ``wire`` (``frame(messages, transport)``);
    return the seconds it took. Messages are dealt out to the connections in
    turn; ``rate`` caps messages/s in all.

    At most ``SENDER_THREADS`` threads send, each over its share of the
    connections in turn: a thread per connection would spend the sender's
    CPU on the GIL once there are hundreds of them.
    """
    threads_count = min(connections, SENDER_THREADS)
    sockets = [_connect(transport, host, port) for _ in range(connections)]
    try:
        streams = [(sockets[c], wire[c::connections]) for c in range(connections)]
        # Thread t sends over connections t, t + threads_count, ...
        shares = [streams[t::threads_count] for t in range(threads_count)]
        errors: list[BaseException] = []

        def run(share: list[tuple[socket.socket, list[bytes]]]) -> None:
            share_rate = rate * sum(len(data) for _, data in share) / len(wire) if rate else None
            try:
                (_send_udp if transport == "udp" else _send_tcp)(share, share_rate)
            except BaseException as e:  # reported by the caller
                errors.append(e)

        threads = [threading.Thread(target=run, args=(share,)) for share in shares]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - start
    finally:
        for sock in sockets:
            _close(sock)
    if errors:
        raise errors[0]
    return took


def _connect(transport: str, host: str, port: int) -> socket.socket:
    if transport == "udp":
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, port))
        return sock
    sock = socket.create_connection((host, port), timeout=120)
    if transport == "tls-octet":
        # The receiver's certificate is the bench's own, made for the run.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context.wrap_socket(sock)
    return sock


def _close(sock: socket.socket) -> None:
    """Close a connection without losing what was sent.

    A TLS 1.3 receiver sends session tickets after the handshake; a sender
    that closes with them unread makes its kernel reset the connection, and
    the receiver's kernel then throws away what it had not yet read. The
    TLS close (close_notify both ways) reads them first.
    """
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock = sock.unwrap()
        except (OSError, ValueError):
            pass
    sock.close()


def _paced(share: list[tuple[socket.socket, list[bytes]]], rate: float | None, batch: int):
    """Slices of ``batch`` messages of each connection in turn, ``rate`` messages/s in all."""
    start = time.monotonic()
    longest = max(len(data) for _, data in share)
    for index in range(0, longest, batch):
        if rate:
            delay = start + index * len(share) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield [(sock, data[index:index + batch]) for sock, data in share]


def _send_tcp(share: list[tuple[socket.socket, list[bytes]]], rate: float | None) -> None:
    batch = 1000 if rate is None else max(1, int(rate / len(share) / 1000))
    for step in _paced(share, rate, batch):
        for sock, data in step:
            sock.sendall(b"".join(data))


def _send_udp(share: list[tuple[socket.socket, list[bytes]]], rate: float | None) -> None:
    batch = 200 if rate is None else max(1, int(rate / len(share) / 1000))
    for step in _paced(share, rate, batch):
        for sock, data in step:
            send = sock.send
            for datagram in data:
                send(datagram)


def count_sequences(data: bytes, seen: bytearray) -> int:
    """Mark the sequence numbers found in ``data``; return how many were seen before."""
    duplicates = 0
    for match in SEQUENCE.finditer(data):
        seq = int(match.group(1))
        if seq < len(seen):
            duplicates += seen[seq]
            seen[seq] = 1
    return duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default="tcp-octet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rate", type=float, help="messages/s in all (default: as fast as possible)")
    args = parser.parse_args()
    messages = build(args.messages, args.hosts)
    seconds = send(frame(messages, args.transport), args.transport, args.port, args.connections, args.rate, args.host)
    print(f"sent {len(messages)} messages in {seconds:.2f} s ({len(messages) / seconds:,.0f}/s)")


if __name__ == "__main__":
    main()
