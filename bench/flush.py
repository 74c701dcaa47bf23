"""How long one flush of the archive holds the reactor, with many firewalls.

    python bench/flush.py [--hosts 1000] [--lines 30] [--repeat 3]

A flush writes the buffered lines to one file per host and day. This times
a flush of ``--lines`` lines per host in four cases: the first one, which
makes each host's directory and file; two with the files open; and the
first of the next day, which opens each host's file for that day. Each is
run with the writing in a thread, as the collector does, and in the
reactor's thread, for comparison. It prints, in ms, how long the flush took
to be written, and the longest the reactor went without running a 1 ms
timer meanwhile: while the reactor is held no UDP socket is read, and the
receive buffer must hold that long's datagrams, or the kernel drops them.
Medians of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.threads import deferToThread  # noqa: E402

from collector.archive.writer import PAUSE_STREAMS_BYTES, FileArchive, RunInThread, run_synchronously  # noqa: E402
from collector.metrics import CollectorMetrics  # noqa: E402

CASES = ("new hosts", "files open", "files open again", "the next day")
LINE = b"<116>1 2026-11-25T10:00:00+01:00 fw security - - - " + b"x" * 180


class ReactorHold:
    """The longest the reactor goes without running a 1 ms timer."""

    def __init__(self, reactor: Any) -> None:
        self._longest = 0.0
        self._last = time.perf_counter()
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(0.001)

    def _tick(self) -> None:
        now = time.perf_counter()
        self._longest = max(self._longest, now - self._last)
        self._last = now

    def longest(self) -> float:
        self._tick()
        self._ticker.stop()
        return self._longest


async def flush_times(reactor: Any, hosts: int, lines: int, run_in_thread: RunInThread,
                      ) -> list[tuple[float, float]]:
    """(written, reactor held) in seconds for each of CASES, in a new archive."""
    days = task.Clock()  # names the days: the archive's own timers are not started
    days.advance(1_764_072_000)  # 2025-11-25T12:00:00Z
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-flush-") as root:
        archive = FileArchive(Path(root), UTC, 1.0, CollectorMetrics(CollectorRegistry(), hosts + 1),
                              days, run_in_thread=run_in_thread)
        for case in CASES:
            if case == "the next day":
                days.advance(86400)
            for host in range(hosts):
                archive.append(days.seconds(), [(f"fw-{host:04d}", b"192.0.2.1:514", [LINE] * lines)])
            held = ReactorHold(reactor)
            start = time.perf_counter()
            await archive.flush()
            written = time.perf_counter() - start
            times.append((written, held.longest()))
        await archive.reopen()
    return times


async def main(reactor: Any) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=30, help="lines per host and flush")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.hosts * args.lines * len(LINE) > PAUSE_STREAMS_BYTES:
        parser.error(f"more than PAUSE_STREAMS_BYTES ({PAUSE_STREAMS_BYTES}) in all: the archive would "
                     "flush before it is asked to")
    modes: dict[str, RunInThread] = {
        "a thread": deferToThread,  # the reactor's pool, as the collector's archive uses
        "the reactor's thread": run_synchronously,
    }
    runs: dict[str, list[list[tuple[float, float]]]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode, run_in_thread in modes.items():
            runs[mode].append(await flush_times(reactor, args.hosts, args.lines, run_in_thread))
    print(f"{args.hosts} hosts, {args.lines} lines each per flush; medians of {args.repeat} runs, in ms")
    print(f"{'':18s}" + "".join(f"{'written in ' + mode:>36s}" for mode in modes))
    print(f"{'':18s}" + f"{'written':>22s}{'reactor held':>14s}" * len(modes))
    for index, case in enumerate(CASES):
        cells = []
        for mode in modes:
            written = statistics.median(run[index][0] for run in runs[mode]) * 1000
            held = statistics.median(run[index][1] for run in runs[mode]) * 1000
            cells.append(f"{written:22.1f}{held:14.1f}")
        print(f"{case:18s} " + "".join(cells))


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
