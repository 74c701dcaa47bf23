"""Memory under many connections and hosts: RSS of a real collector.

    python bench/memory.py [--connections 1000] [--hosts 5000] [--messages 200000]

Opens the connections, sends messages from that many distinct firewall
hostnames over them, and prints the collector's RSS before, at the peak and
after, and how long a /metrics scrape then takes; then stops it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import peak_rss  # noqa: E402

from collector_process import CollectorProcess  # noqa: E402


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="collector-memory-"))
    config = workdir / "collector.toml"
    config.write_text(f"[limits]\nmax_connections_per_sender = {args.connections}\n"
                      f"max_connections = {args.connections}\nmax_messages_per_second_per_sender = 0\n")
    collector = CollectorProcess(workdir, config=str(config))
    pid = collector.process.pid
    print(f"idle: RSS {rss(pid) / 1e6:.1f} MB")
    sockets = [collector.connect_tcp() for _ in range(args.connections)]
    print(f"{len(sockets)} connections open: RSS {rss(pid) / 1e6:.1f} MB")
    line = (b"Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:61.173.81.166:1864 -> "
            b"195.39.55.10:445, flags: SYN, seq:3819654104 ack:0, win:16384, tcplen:0")
    for seq in range(args.messages):
        host = b"fw-%05d" % (seq % args.hosts)
        sockets[seq % len(sockets)].sendall(b"<116>1 - %s security - s%d - %s\n" % (host, seq, line))
    collector.wait_for("syslog_collector_archive_written_bytes_total", 1, timeout=60)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        total = sum(float(value) for name, value in (
            row.rsplit(" ", 1) for row in collector.scrape().splitlines()
            if row.startswith("syslog_collector_received_messages_total")))
        if total >= args.messages:
            break
        time.sleep(0.5)
    print(f"{args.messages} messages from {args.hosts} hosts: RSS {rss(pid) / 1e6:.1f} MB, "
          f"peak {peak_rss(pid) / 1e6:.1f} MB")
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        body = collector.scrape()
        seconds.append(time.perf_counter() - start)
    series = sum(1 for row in body.splitlines() if row and not row.startswith("#"))
    print(f"a scrape: {series} series, {len(body) / 1e6:.1f} MB, {statistics.median(seconds):.2f} s "
          f"(median of 5)")
    for sock in sockets:
        sock.close()
    collector.terminate()


if __name__ == "__main__":
    main()
