"""Soak test: a real collector under steady load with faults, for a long time.

    python bench/soak.py [--minutes 10] [--rate 2000] [--connections 4] [--workers 1]

Sends sequence-numbered messages over TCP (and UDP) at a fixed rate while
injecting faults: SIGHUP reloads, archive files moved away by an "external
tool", TCP senders dropping and reconnecting, a slowloris connection. Every
10 s it samples the collector's RSS and open file descriptors. At the end it
stops the collector with SIGTERM and reconciles: every TCP message sent must
be in the archive (lost must be 0), no received message may be lost
(``syslog_collector_dropped_messages_total``, every reason, must stay 0), and
the UDP datagrams missing from the archive are set against what the kernel
and the rate limit say they dropped.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.archive.files import day_files  # noqa: E402
from collector.archive.reader import read_messages  # noqa: E402
from collector_process import CollectorProcess  # noqa: E402


def rss_and_fds(pid: int) -> tuple[int, int]:
    """Of a process and its children (the workers): RSS in bytes, open descriptors."""
    rss = fds = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in [pid, *map(int, children)]:
        try:
            status = Path(f"/proc/{process}/status").read_text()
            fds += len(os.listdir(f"/proc/{process}/fd"))
        except FileNotFoundError:  # a worker that just ended
            continue
        rss += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) * 1024
    return rss, fds


class TcpSender(threading.Thread):
    """Sends ``rate`` messages/s with sequence numbers; reconnects now and then."""

    def __init__(self, collector: CollectorProcess, name: str, rate: float, stop: threading.Event,
                 first_reconnect: float) -> None:
        super().__init__(daemon=True)
        self.collector, self.name_, self.rate, self.stop = collector, name, rate, stop
        self.first_reconnect = first_reconnect
        self.sent = 0
        self.reconnects = 0

    def run(self) -> None:
        sock = self.collector.connect_tcp()
        start = time.monotonic()
        next_reconnect = start + self.first_reconnect
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            if due > self.sent:
                batch = b"".join(b"<13>1 - %s soak - - - Engine: Startup. seq=%d\n" % (self.name_.encode(), seq)
                                 for seq in range(self.sent, due))
                sock.sendall(batch)
                self.sent = due
            if time.monotonic() > next_reconnect:  # a sender that drops its connection
                sock.close()
                sock = self.collector.connect_tcp()
                self.reconnects += 1
                next_reconnect += 45
            time.sleep(0.01)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="TCP messages/s in all")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="workers.count")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="collector-soak-"))
    config = workdir / "collector.toml"
    config.write_text("[limits]\nmax_connections_per_sender = 8\nframe_timeout_seconds = 10.0\n"
                      f"[workers]\ncount = {args.workers}\n")
    collector = CollectorProcess(workdir, config=str(config))
    pid = collector.process.pid
    stop = threading.Event()
    # Reconnecting a second apart: a connection's place under the per-sender
    # limit is free only once the collector has seen it close.
    senders = [TcpSender(collector, f"soak-{i}", args.rate / args.connections, stop, 45 + i)
               for i in range(args.connections)]
    for sender in senders:
        sender.start()
    udp_sent = 0
    moved = workdir / "moved"
    moved.mkdir()
    samples = []
    slowloris = collector.connect_tcp()
    extra = []
    start = time.monotonic()
    end = start + args.minutes * 60
    next_sample = next_hup = start
    next_move = start + 5
    print(f"soak: {args.minutes} min, {args.rate:.0f} TCP msgs/s over {args.connections} connections, "
          f"{args.workers} worker(s), work dir {workdir}")
    print(f"{'t (s)':>6} {'RSS (MB)':>9} {'fds':>5} {'TCP sent':>10}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        while time.monotonic() < end:
            now = time.monotonic()
            udp.sendto(b"<13>1 - soak-udp soak - - - seq=%d" % udp_sent, ("127.0.0.1", collector.ports["udp"]))
            udp_sent += 1
            try:
                slowloris.send(b"<")  # a byte now and then: cut off by frame_timeout_seconds
            except OSError:
                slowloris = collector.connect_tcp()
            if now >= next_hup:
                collector.process.send_signal(signal.SIGHUP)
                next_hup += 30
            if now >= next_move:  # an external tool moves an archive file away, then SIGHUP
                for day_file in day_files(collector.archive, "soak-0"):
                    if not day_file.compressed:
                        os.rename(day_file.path, moved / f"{day_file.day}-{int(now)}.log")
                collector.process.send_signal(signal.SIGHUP)
                # Connections over the per-sender limit are refused, not piled up;
                # from another network, so that the senders' own stay under it.
                extra = [collector.connect_tcp(source="127.0.9.2") for _ in range(10)]
                next_move += 60
            if now >= next_sample:
                rss, fds = rss_and_fds(pid)
                samples.append((now - start, rss, fds))
                print(f"{now - start:6.0f} {rss / 1e6:9.1f} {fds:5d} {sum(s.sent for s in senders):10d}",
                      flush=True)
                for sock in extra:
                    sock.close()
                extra = []
                next_sample += 10
            time.sleep(0.05)
    stop.set()
    for sender in senders:
        sender.join()
    slowloris.close()
    time.sleep(1)
    # Read just before the stop: the counters of the last flush come with it.
    losses = counted_losses(collector.scrape())
    status = collector.terminate(timeout=120)

    lost = 0
    for sender in senders:
        files = day_files(collector.archive, sender.name_)
        seen = {int(m.message.rsplit(b"=", 1)[1]) for m in read_messages(files)}
        for path in moved.glob("*.log"):
            seen |= {int(line.rsplit(b"=", 1)[1]) for line in path.read_bytes().splitlines()
                     if sender.name_.encode() + b" " in line}
        lost += sender.sent - len(seen & set(range(sender.sent)))
    udp_seen = sum(1 for _ in read_messages(day_files(collector.archive, "soak-udp")))
    rss_growth = samples[-1][1] - samples[1][1] if len(samples) > 1 else 0
    print(f"exit status {status}")
    print(f"TCP: sent {sum(s.sent for s in senders)}, lost {lost}, reconnects {sum(s.reconnects for s in senders)}")
    udp_explained = losses.get(("syslog_collector_udp_receive_drops_total", ""), 0) + sum(
        value for (name, _), value in losses.items() if name == "syslog_collector_rate_limited_messages_total")
    print(f"UDP: sent {udp_sent}, archived {udp_seen}, lost {udp_sent - udp_seen}, "
          f"of which counted as dropped by the kernel or the rate limit {udp_explained:.0f}")
    dropped = {reason: value for (name, reason), value in losses.items()
               if name == "syslog_collector_dropped_messages_total"}
    discarded = {reason: value for (name, reason), value in losses.items()
                 if name == "syslog_collector_discarded_bytes_total"}
    print("dropped messages by reason: " + ", ".join(f"{r} {v:.0f}" for r, v in sorted(dropped.items())))
    print("discarded bytes by reason: " + ", ".join(f"{r} {v:.0f}" for r, v in sorted(discarded.items())))
    # UDP over the rate limit is dropped by design; anything else is a loss.
    unexpected = {r: v for r, v in dropped.items() if v and r != "rate_limited"}
    print(f"RSS: first sample {samples[0][1] / 1e6:.1f} MB, last {samples[-1][1] / 1e6:.1f} MB, "
          f"growth after warm-up {rss_growth / 1e6:+.1f} MB; fds {min(s[2] for s in samples)}"
          f"..{max(s[2] for s in samples)}")
    sys.exit(1 if lost or unexpected else 0)


def counted_losses(exposition: str) -> dict[tuple[str, str], float]:
    """The loss counters of a scrape, by (metric, reason or host), summed over other labels."""
    wanted = ("syslog_collector_dropped_messages_total", "syslog_collector_discarded_bytes_total",
              "syslog_collector_udp_receive_drops_total", "syslog_collector_rate_limited_messages_total")
    losses: dict[tuple[str, str], float] = {}
    for line in exposition.splitlines():
        name, _, rest = line.partition("{")
        if name not in wanted:
            continue
        labels, _, value = rest.rpartition("} ")
        label = ""
        for pair in labels.split(","):
            key, _, quoted = pair.partition("=")
            if key in ("reason", "host"):
                label = quoted.strip('"')
        key = (name, "" if name == "syslog_collector_udp_receive_drops_total" else label)
        losses[key] = losses.get(key, 0.0) + float(value)
    return losses


if __name__ == "__main__":
    main()
