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

Nothing in the archive root is followed if it is a symbolic link: a host
directory, or one of these files, that is a link (or not a directory, or
not a regular file) is left out of listings, and opening it raises
``RefusedPath``. So no file outside the root is ever read, compressed,
written or removed through the archive. Each host directory is opened
once, without following a link, and what is done in it is done relative to
that descriptor, whatever its name comes to point to meanwhile. The root
itself may be a link, the administrator's choice.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
import stat
import time
from collections.abc import Container, Iterator
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


class RefusedPath(OSError):
    """A symbolic link, or another kind of file, where the archive keeps a
    host directory or one of its files: never opened through."""


def open_directory(path: Path, parent_fd: int | None = None) -> int:
    """A descriptor of a host directory, never through a symbolic link; by its
    last name relative to ``parent_fd`` when given (``path`` names it in errors)."""
    try:
        return os.open(path.name if parent_fd is not None else path,
                       os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError as e:
        # A link to a directory is "not a directory" with O_NOFOLLOW.
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise RefusedPath(e.errno, "not a directory, or a symbolic link (never followed)",
                              str(path)) from None
        raise


def open_file(path: Path, flags: int = os.O_RDONLY, directory_fd: int | None = None) -> int:
    """A descriptor of an archive file, only a regular file and never through a
    symbolic link; by its name relative to ``directory_fd`` when given."""
    try:
        # Non-blocking until it is known to be a regular file: opening a FIFO
        # planted under the name would wait for a writer forever.
        fd = os.open(path.name if directory_fd is not None else path,
                     flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666, dir_fd=directory_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR):
            raise RefusedPath(e.errno, "not a regular file, or a symbolic link (never followed)",
                              str(path)) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise RefusedPath(errno.EINVAL, "not a regular file", str(path))
        if flags & (os.O_WRONLY | os.O_RDWR) and status.st_nlink > 1:
            # A hard link planted under the name would have the collector
            # append to a file elsewhere (a script, a config): only a file
            # with this one name is written. Back up archives by copying.
            raise RefusedPath(errno.EMLINK, "a file with another name too (a hard link), never written",
                              str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Directory:
    """A host directory, opened once without following a link: a day's files
    are opened, renamed and removed relative to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = open_directory(path)

    def __enter__(self) -> _Directory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self.fd)

    def is_file(self, name: str) -> bool:
        """Whether ``name`` is a regular file: a link under it is as if missing."""
        try:
            return stat.S_ISREG(os.lstat(name, dir_fd=self.fd).st_mode)
        except FileNotFoundError:
            return False

    def check_file(self, name: str, missing_ok: bool = False) -> None:
        """Raise unless ``name`` is a regular file (or, if ``missing_ok``, nothing)."""
        try:
            mode = os.lstat(name, dir_fd=self.fd).st_mode
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        if not stat.S_ISREG(mode):
            raise RefusedPath(errno.EINVAL, "not a regular file, or a symbolic link (never followed)",
                              str(self.path / name))

    def open(self, name: str, flags: int = os.O_RDONLY) -> BinaryIO:
        fd = open_file(self.path / name, flags, self.fd)
        try:
            return open(fd, "rb" if flags == os.O_RDONLY else "wb")
        except BaseException:
            os.close(fd)
            raise

    def rename(self, old: str, new: str) -> None:
        os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def replace(self, old: str, new: str) -> None:
        os.replace(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)


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
    if host is None:
        directories = _host_dirs(root)
    else:
        directory = host_directory(root, host)
        directories = [] if directory is None else [directory]
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


def _scan(directory: Path | int) -> dict[str, dict[str, os.DirEntry[str]]]:
    """A directory's archive files by day, then by suffix; a descriptor's
    entries are by name alone."""
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


def host_directory(root: Path, host: str) -> Path | None:
    """A host's directory, if it is one: not a symbolic link."""
    path = root / host
    try:
        return path if stat.S_ISDIR(os.lstat(path).st_mode) else None
    except (FileNotFoundError, NotADirectoryError):
        return None


def open_day(directory: Path, day: str) -> list[tuple[Path, BinaryIO]] | None:
    """Open the files holding a day's lines, in order, as they were at one moment.

    The open files keep their contents if a compression renames or removes
    them meanwhile. The names are looked at before and after opening: if a
    step of a compression came in between, the files might hold some lines
    twice or miss some, and they are opened again. None if the day kept
    changing. Raises ``RefusedPath`` if ``directory`` is a symbolic link.
    """
    try:
        held = _Directory(directory)
    except FileNotFoundError:
        return []
    with held:
        for attempt in range(_OPEN_TRIES):
            before = _day_state(held, day)
            opened: list[tuple[Path, BinaryIO]] = []
            try:
                for suffix in readable(before):
                    file = held.open(day + suffix)
                    opened.append((directory / (day + suffix), file))
                    if os.fstat(file.fileno()).st_ino != before[suffix]:
                        break
                else:
                    if _day_state(held, day) == before:
                        return opened
            except (FileNotFoundError, RefusedPath):
                # Gone, or a link put in its place, since the names were looked at.
                pass
            except BaseException:
                _close(opened)
                raise
            _close(opened)
            time.sleep(0.001 * attempt)
    return None


def _day_state(directory: _Directory, day: str) -> dict[str, int]:
    """The inode under each of a day's names that is a regular file."""
    state = {}
    for suffix in (GZ, PARTIAL, COMPRESSED, COMPRESSING, LOG):
        try:
            found = os.lstat(day + suffix, dir_fd=directory.fd)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(found.st_mode):
            state[suffix] = found.st_ino
    return state


def _close(opened: list[tuple[Path, BinaryIO]]) -> None:
    for _, file in opened:
        file.close()


@dataclass(frozen=True, slots=True)
class _Names:
    """The names a day's compression goes through, from its ``.log``'s."""

    log: str

    def _with(self, suffix: str) -> str:
        return self.log[:-len(LOG)] + suffix

    @property
    def gz(self) -> str:
        return self._with(GZ)

    @property
    def partial(self) -> str:
        return self._with(PARTIAL)

    @property
    def compressing(self) -> str:
        return self._with(COMPRESSING)

    @property
    def compressed(self) -> str:
        return self._with(COMPRESSED)


def compress(log: Path) -> Path:
    """Compress a closed day's ``.log`` into its ``.log.gz`` and remove the ``.log``.

    If the ``.log.gz`` already exists (lines arrived for a day already
    compressed), the new lines become a further gzip member after it: gzip
    readers read concatenated members as one stream. An unfinished
    compression of the day is finished first. A ``.log`` or ``.log.gz`` that
    is a symbolic link raises ``RefusedPath``: nothing is read through it.
    """
    names = _Names(log.name)
    with _Directory(log.parent) as directory:
        _finish_compression(directory, names)
        directory.check_file(names.log)
        # Checked before the .log is renamed, which it would otherwise hold up.
        directory.check_file(names.gz, missing_ok=True)
        directory.rename(names.log, names.compressing)
        directory.fsync()
        return log.with_name(_compress_renamed(directory, names))


def _compress_renamed(directory: _Directory, names: _Names) -> str:
    """Steps b to e, from the ``.compressing``."""
    # Whatever is left under the .partial's name is incomplete, or not ours:
    # it is removed (a link is not followed), and the .partial made anew.
    _unlink(directory, names.partial)
    with directory.open(names.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL) as out:
        try:
            earlier = directory.open(names.gz)
        except FileNotFoundError:
            pass
        else:
            with earlier:
                shutil.copyfileobj(earlier, out, _COPY_BUFFER)
        with (directory.open(names.compressing) as source,
              gzip.GzipFile(filename=names.log, mode="wb", fileobj=out) as packed):
            shutil.copyfileobj(source, packed, _COPY_BUFFER)
        out.flush()
        os.fsync(out.fileno())
    # The .partial's name must last before the commit says it is complete.
    directory.fsync()
    directory.rename(names.compressing, names.compressed)
    directory.fsync()
    directory.replace(names.partial, names.gz)
    directory.fsync()
    # Not fsynced: a .compressed that comes back after a crash, without its
    # .partial, is removed again.
    directory.unlink(names.compressed)
    return names.gz


def finish_compression(log: Path) -> Path | None:
    """Finish a compression of ``log``'s day interrupted by a crash, or by an
    error; the ``.log.gz`` if it got lines, None if there was nothing to finish."""
    with _Directory(log.parent) as directory:
        finished = _finish_compression(directory, _Names(log.name))
    return None if finished is None else log.with_name(finished)


def _finish_compression(directory: _Directory, names: _Names) -> str | None:
    finished = None
    # A link under one of these names is not the compression's: as if missing.
    if directory.is_file(names.compressed):
        if directory.is_file(names.partial):
            directory.replace(names.partial, names.gz)
            directory.fsync()
            finished = names.gz
        _unlink(directory, names.compressed)
    if directory.is_file(names.compressing):
        # Any .partial is incomplete: it is written again.
        finished = _compress_renamed(directory, names)
    else:
        _unlink(directory, names.partial)
    return finished


def _unlink(directory: _Directory, name: str) -> None:
    try:
        directory.unlink(name)
    except FileNotFoundError:
        pass


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
        for opened in _host_directories(root, report):
            for day, entries in _scan(opened.fd).items():
                if day < oldest_kept:
                    for suffix in _REMOVAL_ORDER:
                        if suffix in entries:
                            _remove(opened, entries[suffix].name, report, report.deleted_by_age)
    if max_host_bytes > 0:
        for opened in _host_directories(root, report):
            _bound_host(opened, today, max_host_bytes, report)
    return report


def _host_directories(root: Path, report: MaintenanceReport) -> Iterator[_Directory]:
    """Each host directory, open (see ``_Directory``) while it is worked on."""
    for path in _host_dirs(root):
        try:
            directory = _Directory(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            report.errors.append(f"opening {path}: {e}")
            continue
        with directory:
            yield directory


def _bound_host(directory: _Directory, today: str, max_host_bytes: int, report: MaintenanceReport) -> None:
    """Remove a host's oldest files until they take at most ``max_host_bytes``.

    Files that only hold a compression's work count too. A day goes in two
    parts, oldest lines first: the ``.log.gz`` together with any compression
    under way, which would otherwise be finished into a new ``.log.gz``;
    then the ``.log``.
    """
    days = sorted(_scan(directory.fd).items())
    sizes = {}
    for _, entries in days:
        for entry in entries.values():
            try:
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    total = sum(sizes.values())
    for day, entries in days:
        for part in (_REMOVAL_ORDER[:-1], _REMOVAL_ORDER[-1:]):
            if total <= max_host_bytes or day >= today:
                return
            for suffix in part:
                if suffix in entries and _remove(directory, entries[suffix].name, report, report.deleted_by_size):
                    total -= sizes.get(entries[suffix].name, 0)


def _idle_for(path: Path) -> float:
    try:
        return time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(directory: _Directory, name: str, report: MaintenanceReport, deleted: list[Path]) -> bool:
    path = directory.path / name
    try:
        directory.unlink(name)
    except FileNotFoundError:
        return False
    except OSError as e:
        report.errors.append(f"removing {path}: {e}")
        return False
    deleted.append(path)
    return True
