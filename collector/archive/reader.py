"""Read the archives back: list hosts, and stream one host's messages in order.

Blocking file I/O, no Twisted: this serves ``syslog-collector archive``.
Damage (a truncated or corrupt ``.gz``, a line torn by a crash, a line that
is not in the archive format) is reported through a callback, and reading
goes on with whatever is still readable.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from datetime import UTC, date, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from itertools import groupby
from pathlib import Path
from typing import Any, BinaryIO

from collector.archive.files import DayFile, day_files, open_day
from collector.archive.line import TORN_MARKER, ArchivedMessage, BadLine, parse_line


@dataclasses.dataclass(frozen=True, slots=True)
class HostSummary:
    host: str
    first_day: str
    last_day: str
    size: int
    files: int


def host_summaries(root: Path) -> list[HostSummary]:
    by_host: dict[str, list[DayFile]] = {}
    for day_file in day_files(root):
        by_host.setdefault(day_file.host, []).append(day_file)
    return [
        HostSummary(host, files[0].day, files[-1].day, sum(f.size for f in files), len(files))
        for host, files in sorted(by_host.items())
    ]


def stamp(moment: datetime) -> str:
    """A time in the archive lines' own format, so that strings compare like times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def files_between(root: Path, host: str, since: datetime | None, until: datetime | None) -> list[DayFile]:
    """The host's files that may hold messages received in [since, until).

    File days are in the archive's zone, which may be up to 14 hours from
    UTC: a day of margin on each side keeps every file that matters.
    """
    low = (since.astimezone(UTC).date() - timedelta(days=1)).isoformat() if since else ""
    high = (until.astimezone(UTC).date() + timedelta(days=1)).isoformat() if until else "9999"
    return [f for f in day_files(root, host) if low <= f.day <= high]


Damage = Callable[[Path, str], None]


def read_messages(
    files: list[DayFile],
    since: datetime | None = None,
    until: datetime | None = None,
    on_damage: Damage = lambda path, problem: None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[ArchivedMessage]:
    """Messages received in [since, until), in the order they were received.

    The files are read a day at a time, and a day's files stand for the
    whole day: it is read as it is when the reading gets to it. The
    collector may have compressed a listed ``.log`` since (its lines are then
    read from the ``.log.gz``, or from the compression's files if it is
    under way), or removed a listed file (reported as damage: its lines are
    gone). Each line is read once.
    """
    low = stamp(since) if since else ""
    high = stamp(until) if until else "~"
    done = 0
    for (directory, day), group in groupby(files, key=lambda f: (f.path.parent, f.day)):
        listed = list(group)
        report = None if on_progress is None else (lambda position, base=done: on_progress(base + position))
        for message in _read_day(directory, day, listed, on_damage, report):
            if low <= message.received_at < high:
                yield message
        done += sum(f.size for f in listed)
        if on_progress is not None:
            on_progress(done)


def _read_day(directory: Path, day: str, listed: list[DayFile], on_damage: Damage,
              on_progress: Callable[[int], None] | None) -> Iterator[ArchivedMessage]:
    try:
        opened = open_day(directory, day)
    except OSError as e:
        on_damage(listed[0].path, f"cannot be opened: {e}")
        return
    if opened is None:
        on_damage(listed[0].path, "changed too often while being opened; skipped")
        return
    with ExitStack() as files:
        for _, file in opened:
            files.enter_context(file)
        names = {path.name for path, _ in opened}
        for day_file in listed:
            if not opened or (day_file.compressed and day_file.path.name not in names):
                on_damage(day_file.path, "removed before it could be read; its lines are not shown")
        offset = 0
        for path, file in opened:
            report = None if on_progress is None else (lambda position, base=offset: on_progress(base + position))
            size = os.fstat(file.fileno()).st_size
            yield from _read_file(path, file, on_damage, report)
            offset += size


def _read_file(path: Path, raw: BinaryIO, on_damage: Damage,
               on_progress: Callable[[int], None] | None) -> Iterator[ArchivedMessage]:
    """The messages of one open file, ``raw``: it is left open."""
    previous: bytes | None = None
    number = 0
    unpacked = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else nullcontext(raw)
    with unpacked as lines:
        try:
            for line in lines:
                number += 1
                if on_progress is not None and number % 1024 == 0:
                    on_progress(raw.tell())
                if line.rstrip(b"\n") == TORN_MARKER:
                    on_damage(path, f"line {number - 1}: cut short by a crash; skipped")
                    previous = None
                    continue
                if previous is not None:
                    message = _parse(previous, path, number - 1, on_damage)
                    if message is not None:
                        yield message
                previous = line
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
            on_damage(path, f"unreadable after line {number}: {e}")
        if previous is not None:
            if not previous.endswith(b"\n"):
                on_damage(path, f"line {number}: cut short (no end of line); skipped")
            else:
                message = _parse(previous, path, number, on_damage)
                if message is not None:
                    yield message


def _parse(line: bytes, path: Path, number: int, on_damage: Damage) -> ArchivedMessage | None:
    try:
        return parse_line(line)
    except BadLine:
        on_damage(path, f"line {number}: not an archive line; skipped")
        return None


def jsonable(value: Any) -> Any:
    """Records and their fields as JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        return {name: jsonable(v) for name, v in value._asdict().items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    return value
