"""The archive's files on disk: finding them, compressing closed days, retention.

Blocking file I/O without Twisted: the archive service runs ``maintain`` in
a thread. Layout::

    <root>/<host>/<YYYY-MM-DD>.log          the day being written, or not yet compressed
    <root>/<host>/<YYYY-MM-DD>.log.gz       a closed day, compressed
    <root>/<host>/<YYYY-MM-DD>.log.compressing   lines being compressed
    <root>/<host>/<YYYY-MM-DD>.log.gz.partial    the next .log.gz, being written
    <root>/<host>/<YYYY-MM-DD>.log.compressed    lines in the .log.gz.partial, or in
                                                 the .log.gz once the .partial is gone

A compression (``compress``) goes through these steps, each of a to d
followed by an fsync of the directory:

    a. rename ``.log`` to ``.compressing``: lines that arrive later for the
       day go to a new ``.log``, for a later compression;
    b. write ``.log.gz.partial``: a copy of the ``.log.gz``, if any, and a
       gzip member holding the ``.compressing``; fsync it and the directory;
    c. rename ``.compressing`` to ``.compressed``: the commit, after which
       the ``.partial`` is known complete;
    d. rename ``.partial`` over ``.log.gz``;
    e. remove ``.compressed``.

Every line of a day is therefore, at every moment, in exactly one of: the
``.log.gz``; the ``.compressing``, or the ``.compressed`` while the
``.partial`` is there; the ``.log``. A crash leaves one of these states, and
the next ``maintain`` finishes the compression before anything else:

    ``.compressing`` (with or without a ``.partial``)   redo from b
    ``.compressed`` and ``.partial``                    d, e
    ``.compressed`` alone                               e
    ``.partial`` alone                                  remove it (its lines are
                                                        still in the ``.log``)

One compression of a day runs at a time: a new one finishes the previous
first, since its ``.partial`` and ``.compressed`` would take their names.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import time
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

LOG = ".log"
GZ = ".log.gz"
PARTIAL = ".log.gz.partial"
COMPRESSING = ".log.compressing"
COMPRESSED = ".log.compressed"
# What ``maintain`` finishes before anything else.
UNFINISHED = (PARTIAL, COMPRESSING, COMPRESSED)
# A day's files in the order of their lines.
_ORDER = {GZ: 0, COMPRESSED: 1, COMPRESSING: 2, LOG: 3}
_DAY_FILE = re.compile(r"(\d{4}-\d\d-\d\d)(\.log(?:\.gz|\.gz\.partial|\.compressing|\.compressed)?)")
# A compression's work before its .log.gz: a crash halfway through removing
# a day then leaves nothing that the next maintain would make into a .log.gz.
_REMOVAL_ORDER = (COMPRESSING, COMPRESSED, PARTIAL, GZ, LOG)
_COPY_BUFFER = 1024 * 1024
_OPEN_TRIES = 50


@dataclass(frozen=True, slots=True)
class DayFile:
    host: str
    day: str
    path: Path
    size: int

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(GZ)

    @property
    def suffix(self) -> str:
        """``.log``, ``.log.gz``, ``.log.compressing`` or ``.log.compressed``."""
        return self.path.name[len(self.day):]


def readable(suffixes: Container[str]) -> list[str]:
    """Of a day's files, those that hold its lines, each line in one, in order.

    A ``.compressed`` without its ``.partial`` holds lines already in the
    ``.log.gz``; with it, lines not yet there.
    """
    return [suffix for suffix in _ORDER if suffix in suffixes
            and (suffix != COMPRESSED or PARTIAL in suffixes)]


def day_files(root: Path, host: str | None = None) -> list[DayFile]:
    """The archive files of one host or of all, oldest day first, with each
    day's files in the order of their lines: the ``.log.gz`` first, a
    compression under way next, the ``.log`` (lines appended since) last."""
    files = []
    directories = [root / host] if host is not None else _host_dirs(root)
    for directory in directories:
        for day, entries in _scan(directory).items():
            for suffix in readable(entries):
                try:
                    size = entries[suffix].stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    # Compressed or removed meanwhile: listed all the same, as
                    # the only file of its day may be the one being compressed.
                    size = 0
                files.append(DayFile(directory.name, day, Path(entries[suffix].path), size))
    files.sort(key=lambda f: (f.host, f.day, _ORDER[f.suffix]))
    return files


def _scan(directory: Path) -> dict[str, dict[str, os.DirEntry[str]]]:
    """A directory's archive files by day, then by suffix."""
    days: dict[str, dict[str, os.DirEntry[str]]] = {}
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return days
    for entry in entries:
        match = _DAY_FILE.fullmatch(entry.name)
        if match is not None and entry.is_file(follow_symlinks=False):
            days.setdefault(match.group(1), {})[match.group(2)] = entry
    return days


def _host_dirs(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)
                and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def open_day(directory: Path, day: str) -> list[tuple[Path, BinaryIO]] | None:
    """Open the files holding a day's lines, in order, as they were at one moment.

    The open files keep their contents if a compression renames or removes
    them meanwhile. The names are looked at before and after opening: if a
    step of a compression came in between, the files might hold some lines
    twice or miss some, and they are opened again. None if the day kept
    changing.
    """
    for attempt in range(_OPEN_TRIES):
        before = _day_state(directory, day)
        opened: list[tuple[Path, BinaryIO]] = []
        try:
            for suffix in readable(before):
                path = directory / (day + suffix)
                file = open(path, "rb")
                opened.append((path, file))
                if os.fstat(file.fileno()).st_ino != before[suffix]:
                    break
            else:
                if _day_state(directory, day) == before:
                    return opened
        except FileNotFoundError:
            pass
        except BaseException:
            _close(opened)
            raise
        _close(opened)
        time.sleep(0.001 * attempt)
    return None


def _day_state(directory: Path, day: str) -> dict[str, int]:
    """The inode under each of a day's names."""
    state = {}
    for suffix in (GZ, PARTIAL, COMPRESSED, COMPRESSING, LOG):
        try:
            state[suffix] = os.lstat(directory / (day + suffix)).st_ino
        except (FileNotFoundError, NotADirectoryError):
            pass
    return state


def _close(opened: list[tuple[Path, BinaryIO]]) -> None:
    for _, file in opened:
        file.close()


@dataclass(frozen=True, slots=True)
class _Names:
    """The names a day's compression goes through, from its ``.log``."""

    log: Path

    def _with(self, suffix: str) -> Path:
        return self.log.with_name(self.log.name[:-len(LOG)] + suffix)

    @property
    def gz(self) -> Path:
        return self._with(GZ)

    @property
    def partial(self) -> Path:
        return self._with(PARTIAL)

    @property
    def compressing(self) -> Path:
        return self._with(COMPRESSING)

    @property
    def compressed(self) -> Path:
        return self._with(COMPRESSED)


def compress(log: Path) -> Path:
    """Compress a closed day's ``.log`` into its ``.log.gz`` and remove the ``.log``.

    If the ``.log.gz`` already exists (lines arrived for a day already
    compressed), the new lines become a further gzip member after it: gzip
    readers read concatenated members as one stream. An unfinished
    compression of the day is finished first.
    """
    names = _Names(log)
    finish_compression(log)
    os.rename(log, names.compressing)
    _fsync_directory(log.parent)
    return _compress_renamed(names)


def _compress_renamed(names: _Names) -> Path:
    """Steps b to e, from the ``.compressing``."""
    with open(names.partial, "wb") as out:
        try:
            earlier = open(names.gz, "rb")
        except FileNotFoundError:
            pass
        else:
            with earlier:
                shutil.copyfileobj(earlier, out, _COPY_BUFFER)
        with (open(names.compressing, "rb") as source,
              gzip.GzipFile(filename=names.log.name, mode="wb", fileobj=out) as packed):
            shutil.copyfileobj(source, packed, _COPY_BUFFER)
        out.flush()
        os.fsync(out.fileno())
    # The .partial's name must last before the commit says it is complete.
    _fsync_directory(names.log.parent)
    os.rename(names.compressing, names.compressed)
    _fsync_directory(names.log.parent)
    os.replace(names.partial, names.gz)
    _fsync_directory(names.log.parent)
    # Not fsynced: a .compressed that comes back after a crash, without its
    # .partial, is removed again.
    names.compressed.unlink()
    return names.gz


def finish_compression(log: Path) -> Path | None:
    """Finish a compression of ``log``'s day interrupted by a crash, or by an
    error; the ``.log.gz`` if it got lines, None if there was nothing to finish."""
    names = _Names(log)
    finished = None
    if names.compressed.exists():
        if names.partial.exists():
            os.replace(names.partial, names.gz)
            _fsync_directory(log.parent)
            finished = names.gz
        names.compressed.unlink(missing_ok=True)
    if names.compressing.exists():
        # Any .partial is incomplete: it is written again.
        finished = _compress_renamed(names)
    else:
        names.partial.unlink(missing_ok=True)
    return finished


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class MaintenanceReport:
    compressed: list[Path] = field(default_factory=list)
    deleted_by_age: list[Path] = field(default_factory=list)
    deleted_by_size: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def maintain(root: Path, today: str, *, compress_closed: bool, retention_days: int,
             max_host_bytes: int, quiet_seconds: float = 0.0) -> MaintenanceReport:
    """Finish or redo interrupted compressions, compress closed days, apply retention.

    ``today``'s file is never touched. ``retention_days`` keeps that many
    days before today (0: keep all); ``max_host_bytes`` bounds each host's
    files, oldest removed first (0: no bound). A ``.log`` written to in the
    last ``quiet_seconds`` is left for a later run: another worker process may
    still be flushing into it.
    """
    report = MaintenanceReport()
    for directory in _host_dirs(root):
        for day, entries in sorted(_scan(directory).items()):
            if any(suffix in entries for suffix in UNFINISHED):
                log = directory / (day + LOG)
                try:
                    finished = finish_compression(log)
                except OSError as e:
                    report.errors.append(f"finishing the compression of {log}: {e}")
                else:
                    if finished is not None:
                        report.compressed.append(finished)
    if compress_closed:
        for day_file in day_files(root):
            if (day_file.suffix == LOG and day_file.day < today
                    and (not quiet_seconds or _idle_for(day_file.path) >= quiet_seconds)):
                try:
                    report.compressed.append(compress(day_file.path))
                except OSError as e:
                    report.errors.append(f"compressing {day_file.path}: {e}")
    if retention_days > 0:
        oldest_kept = (date.fromisoformat(today) - timedelta(days=retention_days)).isoformat()
        for directory in _host_dirs(root):
            for day, entries in _scan(directory).items():
                if day < oldest_kept:
                    for suffix in _REMOVAL_ORDER:
                        if suffix in entries:
                            _remove(Path(entries[suffix].path), report, report.deleted_by_age)
    if max_host_bytes > 0:
        for directory in _host_dirs(root):
            _bound_host(directory, today, max_host_bytes, report)
    return report


def _bound_host(directory: Path, today: str, max_host_bytes: int, report: MaintenanceReport) -> None:
    """Remove a host's oldest files until they take at most ``max_host_bytes``.

    Files that only hold a compression's work count too. A day goes in two
    parts, oldest lines first: the ``.log.gz`` together with any compression
    under way, which would otherwise be finished into a new ``.log.gz``;
    then the ``.log``.
    """
    days = sorted(_scan(directory).items())
    sizes = {}
    for _, entries in days:
        for entry in entries.values():
            try:
                sizes[entry.path] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    total = sum(sizes.values())
    for day, entries in days:
        for part in (_REMOVAL_ORDER[:-1], _REMOVAL_ORDER[-1:]):
            if total <= max_host_bytes or day >= today:
                return
            for suffix in part:
                if suffix in entries and _remove(Path(entries[suffix].path), report, report.deleted_by_size):
                    total -= sizes.get(entries[suffix].path, 0)


def _idle_for(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path, report: MaintenanceReport, deleted: list[Path] | None) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as e:
        report.errors.append(f"removing {path}: {e}")
        return False
    if deleted is not None:
        deleted.append(path)
    return True
