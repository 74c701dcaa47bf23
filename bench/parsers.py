"""Throughput of the pure parsing steps, and of the whole pipeline in-process.

    python bench/parsers.py [--messages N] [--repeat R] [--installed]

Prints the median of R runs for each step, in messages per second, on a
realistic mix of Kerio lines in both syslog dialects (bench/corpus.py).
It runs the source tree, as plain Python; with --installed, the package as
pip installed it (its per-message path compiled, if it was: see setup.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

if "--installed" not in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prometheus_client import CollectorRegistry  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from collector import compiled  # noqa: E402
from collector.archive.writer import FileArchive  # noqa: E402
from collector.config import UnregisteredPolicy  # noqa: E402
from collector.hosts import (
    HostRegistry,  # noqa: E402
    Sender,  # noqa: E402
)
from collector.metrics import CollectorMetrics  # noqa: E402
from collector.parsing import syslog  # noqa: E402
from collector.parsing.framing import StreamDecoder  # noqa: E402
from collector.parsing.kerio import parse_record, summarize  # noqa: E402
from collector.pipeline import Pipeline  # noqa: E402
from collector.records import Transport  # noqa: E402
from corpus import messages  # noqa: E402

CHUNK = 64 * 1024


def chunks(stream: bytes) -> list[bytes]:
    return [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]


def framing(stream_chunks: list[bytes]) -> int:
    decoder = StreamDecoder()
    return sum(len(decoder.feed(chunk)) for chunk in stream_chunks)


def framing_and_header(stream_chunks: list[bytes]) -> int:
    decoder = StreamDecoder()
    parse = syslog.parse
    count = 0
    for chunk in stream_chunks:
        for frame in decoder.feed(chunk):
            parse(frame)
            count += 1
    return count


def kerio(bodies: list[bytes]) -> int:
    for body in bodies:
        parse_record(body)
    return len(bodies)


def kerio_summary(bodies: list[bytes]) -> int:
    for body in bodies:
        summarize(body)
    return len(bodies)


def pipeline(stream_chunks: list[bytes], root: Path, idle: float = 0.0) -> int:
    """Every chunk through the pipeline; ``idle`` seconds of sleep after each."""
    clock = Clock()
    clock.advance(time.time())
    metrics = CollectorMetrics(CollectorRegistry(), 1000)
    archive = FileArchive(root, UTC, 1.0, metrics, clock)
    archive.startService()
    line = Pipeline(hosts=HostRegistry((), UnregisteredPolicy.ACCEPT), archive=archive,
                    metrics=metrics, clock=clock, syslog_timezone=UTC)
    decoder = StreamDecoder()
    sender = Sender.from_address("127.0.0.1", 40000)
    count = 0
    for chunk in stream_chunks:
        frames = decoder.feed(chunk)
        line.receive(frames, sender, Transport.TCP)
        count += len(frames)
        if idle:
            time.sleep(idle)
    archive.stopService()
    return count


def measure(step, *args, repeat: int, timer=time.perf_counter) -> float:
    rates = []
    for _ in range(repeat):
        start = timer()
        count = step(*args)
        rates.append(count / (timer() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--installed", action="store_true",
                        help="measure the installed package rather than the source tree")
    args = parser.parse_args()
    plain = compiled.plain_python()
    print(f"collector from {Path(compiled.__file__).parent}: "
          + (f"plain Python ({', '.join(plain)})" if plain else "the per-message path compiled"))

    sample = messages(args.messages)
    lf = chunks(b"".join(m + b"\n" for m in sample))
    octet = chunks(b"".join(b"%d %s" % (len(m), m) for m in sample))
    bodies = [syslog.parse(m).msg for m in sample]
    print(f"{args.messages} messages, {args.repeat} runs each, median messages/s")
    rows = [
        ("framing, LF", measure(framing, lf, repeat=args.repeat)),
        ("framing, octet-counted", measure(framing, octet, repeat=args.repeat)),
        ("framing + syslog header, LF", measure(framing_and_header, lf, repeat=args.repeat)),
        ("framing + syslog header, octet-counted", measure(framing_and_header, octet, repeat=args.repeat)),
        ("Kerio record parse", measure(kerio, bodies, repeat=args.repeat)),
        ("Kerio summary (what the pipeline runs)", measure(kerio_summary, bodies, repeat=args.repeat)),
    ]
    # A dictionary attack: every line names a new user, so no line's shape
    # (collector/parsing/shapes.py) has been seen before.
    flood = chunks(b"".join(
        b"<116>1 2026-11-25T10:00:00+01:00 fw-%04d security - - - Authentication: WebAdmin: "
        b"Client: 10.1.%d.%d: User u%07d doesn't exist\n" % (i % 50, i % 256, i % 200, i)
        for i in range(args.messages)))
    with tempfile.TemporaryDirectory() as root:
        rows.append(("whole pipeline in-process, LF, to disk",
                     measure(pipeline, lf, Path(root), repeat=args.repeat)))
        rows.append(("whole pipeline in-process, octet-counted, to disk",
                     measure(pipeline, octet, Path(root), repeat=args.repeat)))
        rows.append(("pipeline, a new user in every login failure",
                     measure(pipeline, flood, Path(root), repeat=args.repeat)))
        # What a collector with headroom sees: small reads with idle time
        # between them. Counted per CPU second, so the sleeps themselves
        # do not count; what they cost is the caches and the CPU waking up.
        small = [b"".join(m + b"\n" for m in sample[i:i + 15]) for i in range(0, len(sample), 15)]
        for idle in (0.0, 0.001):
            rows.append((f"pipeline, 15-message reads, {idle * 1000:g} ms idle between, per CPU s",
                         measure(pipeline, small, Path(root), idle, repeat=args.repeat, timer=time.process_time)))
    for name, rate in rows:
        print(f"{name:62s} {rate:12,.0f}")


if __name__ == "__main__":
    main()
