"""How long one flush of the archive holds the reactor, with many firewalls.

    python bench/flush.py [--hosts 1000] [--lines 60] [--repeat 3]

The archive writes its buffered lines in the reactor's thread, every
archive.flush_interval_seconds, to one open file per host and day. This
times a flush of ``--lines`` lines per host in four cases: the first one,
which makes each host's directory and file; two with the files open; and
the first of the next day, which opens each host's file for that day.
Meanwhile a UDP socket is not read: its receive buffer must hold that long's
datagrams, or the kernel drops them. Prints the median of the runs, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from collector.archive import FileArchive  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402

CASES = ("new hosts", "files open", "files open again", "the next day")
LINE = b"<116>1 2026-11-25T10:00:00+01:00 fw security - - - " + b"x" * 180


def flush_times(hosts: int, lines: int) -> list[float]:
    """Seconds taken by a flush in each of CASES, in a new archive."""
    clock = Clock()
    clock.advance(1_764_072_000)  # 2025-11-25T12:00:00Z
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-flush-") as root:
        # Compression of the past day is left out: it runs in a thread.
        archive = FileArchive(Path(root), UTC, 1.0, CollectorMetrics(CollectorRegistry(), hosts + 1),
                              clock, compress=False)
        for case in CASES:
            if case == "the next day":
                clock.advance(86400)
            for host in range(hosts):
                archive.append(clock.seconds(), [(f"fw-{host:04d}", b"192.0.2.1:514", [LINE] * lines)])
            start = time.perf_counter()
            archive.flush()
            times.append(time.perf_counter() - start)
        archive.stopService()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=60, help="lines per host and flush")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [flush_times(args.hosts, args.lines) for _ in range(args.repeat)]
    print(f"{args.hosts} hosts, {args.lines} lines each per flush; median of {args.repeat} runs")
    for index, case in enumerate(CASES):
        times = [run[index] for run in runs]
        print(f"{case:18s} {statistics.median(times) * 1000:8.1f} ms  (runs: "
              + ", ".join(f"{t * 1000:.1f}" for t in times) + ")")


if __name__ == "__main__":
    main()
