"""The archive's files on disk: finding them, compressing closed days, retention.

Blocking file I/O without Twisted: the archive service runs ``maintain`` in
a thread. Layout::

    <root>/<host>/<YYYY-MM-DD>.log          the day being written, or not yet compressed
    <root>/<host>/<YYYY-MM-DD>.log.gz       a closed day, compressed
    <root>/<host>/<YYYY-MM-DD>.log.gz.partial   a compression under way

A ``.log`` is removed only after its ``.log.gz`` is complete, fsynced and in
place; a ``.partial`` left by an interrupted compression is thrown away and
the compression redone from the ``.log``, which is still there.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

LOG = ".log"
GZ = ".log.gz"
PARTIAL = ".log.gz.partial"
_DAY_FILE = re.compile(r"(\d{4}-\d\d-\d\d)(\.log(?:\.gz)?)")
_COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DayFile:
    host: str
    day: str
    path: Path
    size: int

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(GZ)


def day_files(root: Path, host: str | None = None) -> list[DayFile]:
    """The archive files of one host or of all, oldest day first; for one day
    the ``.log.gz`` comes before the ``.log`` (lines appended after compression)."""
    files = []
    directories = [root / host] if host is not None else _host_dirs(root)
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _DAY_FILE.fullmatch(entry.name)
            if match is not None and entry.is_file(follow_symlinks=False):
                files.append(DayFile(directory.name, match.group(1), Path(entry.path),
                                     entry.stat(follow_symlinks=False).st_size))
    files.sort(key=lambda f: (f.host, f.day, not f.compressed))
    return files


def _host_dirs(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)
                and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def compress(log: Path) -> Path:
    """Compress a closed day's ``.log`` into its ``.log.gz`` and remove the ``.log``.

    If the ``.log.gz`` already exists (lines arrived for a day already
    compressed), the new lines become a further gzip member after it: gzip
    readers read concatenated members as one stream.
    """
    target = log.with_name(log.name + ".gz")
    partial = log.with_name(log.name + ".gz.partial")
    with open(partial, "wb") as out:
        if target.exists():
            with open(target, "rb") as earlier:
                shutil.copyfileobj(earlier, out, _COPY_BUFFER)
        with open(log, "rb") as source, gzip.GzipFile(filename=log.name, mode="wb", fileobj=out) as packed:
            shutil.copyfileobj(source, packed, _COPY_BUFFER)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, target)
    _fsync_directory(log.parent)
    log.unlink()
    _fsync_directory(log.parent)
    return target


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
        for leftover in directory.glob("*" + PARTIAL):
            _remove(leftover, report, None)
    if compress_closed:
        for day_file in day_files(root):
            if (not day_file.compressed and day_file.day < today
                    and (not quiet_seconds or _idle_for(day_file.path) >= quiet_seconds)):
                try:
                    report.compressed.append(compress(day_file.path))
                except OSError as e:
                    report.errors.append(f"compressing {day_file.path}: {e}")
    if retention_days > 0:
        oldest_kept = (date.fromisoformat(today) - timedelta(days=retention_days)).isoformat()
        for day_file in day_files(root):
            if day_file.day < oldest_kept:
                _remove(day_file.path, report, report.deleted_by_age)
    if max_host_bytes > 0:
        by_host: dict[str, list[DayFile]] = {}
        for day_file in day_files(root):
            by_host.setdefault(day_file.host, []).append(day_file)
        for files in by_host.values():
            total = sum(f.size for f in files)
            for day_file in files:
                if total <= max_host_bytes or day_file.day >= today:
                    break
                if _remove(day_file.path, report, report.deleted_by_size):
                    total -= day_file.size
    return report


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
