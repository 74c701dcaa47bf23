"""Compression interrupted at every step, and readers whose files change under them."""

import gzip
import os

import pytest

from collector.archive import files as archive_files
from collector.archive.files import compress, day_files, finish_compression, maintain
from collector.archive.reader import read_messages

DAY = "2026-11-20"
TODAY = "2026-11-25"


class Crash(BaseException):
    """The process dies: not an OSError, so nothing catches it."""


def line(text):
    return b"2026-11-20T10:00:00.000000Z 192.0.2.1:1 %s\n" % text


def write(path, texts, mode="wb"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as file:
        file.write(b"".join(line(t) for t in texts))
    return path


def messages(files, damage=None):
    def on_damage(path, problem):
        if damage is not None:
            damage.append((path.name, problem))
    return [m.message for m in read_messages(files, on_damage=on_damage)]


def gz_lines(path):
    return [raw.split(b" ", 2)[2] for raw in gzip.decompress(path.read_bytes()).splitlines()]


def run_maintain(root, **kwargs):
    kwargs.setdefault("compress_closed", True)
    kwargs.setdefault("retention_days", 0)
    kwargs.setdefault("max_host_bytes", 0)
    return maintain(root, TODAY, **kwargs)


@pytest.fixture
def crash_at(monkeypatch):
    """``crash_at(n)``: a context in which the n-th step that changes or syncs
    the archive's directory (rename, replace, unlink, fsync) raises Crash
    instead of running; it says how many steps ran."""

    class Steps:
        def __init__(self, crash):
            self.crash = crash
            self.count = 0

        def __enter__(self):
            self._patch = monkeypatch.context()
            patch = self._patch.__enter__()
            for name in ("rename", "replace", "unlink", "fsync"):
                patch.setattr(os, name, self._step(getattr(os, name)))
            return self

        def _step(self, real):
            def step(*args, **kwargs):
                if self.count == self.crash:
                    raise Crash
                self.count += 1
                return real(*args, **kwargs)
            return step

        def __exit__(self, kind, value, traceback):
            self._patch.__exit__(kind, value, traceback)
            return kind is Crash

    return Steps


def make_day(root, earlier):
    """gw's DAY: an earlier .log.gz (if ``earlier``) and a .log of new lines to compress."""
    old = [b"old 1", b"old 2"] if earlier else []
    if earlier:
        compress(write(root / "gw" / f"{DAY}.log", old))
    log = write(root / "gw" / f"{DAY}.log", [b"new 1", b"new 2", b"new 3"])
    write(root / "gw" / f"{TODAY}.log", [b"today"])
    return log, old + [b"new 1", b"new 2", b"new 3"]


def names(root):
    return sorted(p.name for p in (root / "gw").iterdir())


@pytest.mark.parametrize("earlier", [False, True], ids=["first", "after-earlier-gz"])
def test_a_crash_at_any_step_of_a_compression_keeps_each_line_once(tmp_path, crash_at, earlier):
    steps = None
    crash = 0
    while steps is None:
        root = tmp_path / str(crash) / "archive"
        log, day_lines = make_day(root, earlier)
        listed = day_files(root, "gw")
        with crash_at(crash) as run:
            compress(log)
            steps = run.count  # it ran to the end: every step has had its crash
        where = f"crash before step {crash} ({names(root)})"
        # A reader while the collector is down, with a listing from before or after.
        assert messages(listed) == day_lines + [b"today"], where
        assert messages(day_files(root, "gw")) == day_lines + [b"today"], where
        report = run_maintain(root)
        assert not report.errors, where
        assert names(root) == [f"{DAY}.log.gz", f"{TODAY}.log"], where
        assert gz_lines(root / "gw" / f"{DAY}.log.gz") == day_lines, where
        assert messages(day_files(root, "gw")) == day_lines + [b"today"], where
        crash += 1
    assert steps >= 9  # rename, the partial, commit, replace, unlink and their fsyncs


def test_a_crash_while_finishing_an_interrupted_compression(tmp_path, crash_at):
    for first in range(10):
        for second in range(12):
            root = tmp_path / f"{first}-{second}" / "archive"
            log, day_lines = make_day(root, earlier=True)
            with crash_at(first):
                compress(log)
            with crash_at(second):
                run_maintain(root)
            where = f"crashes before steps {first} then {second} ({names(root)})"
            assert messages(day_files(root, "gw")) == day_lines + [b"today"], where
            assert not run_maintain(root).errors, where
            assert names(root) == [f"{DAY}.log.gz", f"{TODAY}.log"], where
            assert gz_lines(root / "gw" / f"{DAY}.log.gz") == day_lines, where


def state(root, earlier, *, compressing=False, partial=None, compressed=False, gz_has_new=False):
    """The files of DAY as a crash leaves them, built by hand. ``partial``:
    None, "torn" or "complete"."""
    directory = root / "gw"
    old = [b"old 1", b"old 2"] if earlier else []
    new = [b"new 1", b"new 2"]
    directory.mkdir(parents=True)
    old_gz = gzip.compress(b"".join(line(t) for t in old)) if earlier else b""
    whole_gz = old_gz + gzip.compress(b"".join(line(t) for t in new))
    if earlier or gz_has_new:
        (directory / f"{DAY}.log.gz").write_bytes(whole_gz if gz_has_new else old_gz)
    if compressing:
        write(directory / f"{DAY}.log.compressing", new)
    if compressed:
        write(directory / f"{DAY}.log.compressed", new)
    if partial == "complete":
        (directory / f"{DAY}.log.gz.partial").write_bytes(whole_gz)
    elif partial == "torn":
        (directory / f"{DAY}.log.gz.partial").write_bytes(whole_gz[:len(old_gz) + 12])
    write(directory / f"{TODAY}.log", [b"today"])
    return old + new


CRASH_STATES = {
    "renamed, before the partial": dict(compressing=True),
    "while writing the partial": dict(compressing=True, partial="torn"),
    "after the partial is written": dict(compressing=True, partial="complete"),
    "after the commit rename": dict(compressed=True, partial="complete"),
    "after the rename into place, before the unlink": dict(compressed=True, gz_has_new=True),
}


@pytest.mark.parametrize("earlier", [False, True], ids=["first", "after-earlier-gz"])
@pytest.mark.parametrize("crash", list(CRASH_STATES))
def test_each_crash_state_is_read_once_and_finished_by_maintain(tmp_path, crash, earlier):
    root = tmp_path / "archive"
    day_lines = state(root, earlier, **CRASH_STATES[crash])
    assert messages(day_files(root, "gw")) == day_lines + [b"today"]
    report = run_maintain(root)
    assert not report.errors
    assert names(root) == [f"{DAY}.log.gz", f"{TODAY}.log"]
    assert gz_lines(root / "gw" / f"{DAY}.log.gz") == day_lines
    assert messages(day_files(root, "gw")) == day_lines + [b"today"]


def test_lines_that_arrived_during_an_interrupted_compression_follow_it(tmp_path):
    root = tmp_path / "archive"
    day_lines = state(root, True, compressed=True, partial="complete")
    write(root / "gw" / f"{DAY}.log", [b"late"])
    assert messages(day_files(root, "gw")) == day_lines + [b"late", b"today"]
    # Compressing the new .log finishes the earlier compression first.
    compress(root / "gw" / f"{DAY}.log")
    assert names(root) == [f"{DAY}.log.gz", f"{TODAY}.log"]
    assert gz_lines(root / "gw" / f"{DAY}.log.gz") == day_lines + [b"late"]


def test_maintain_finishes_interrupted_compressions_even_with_compression_off(tmp_path):
    root = tmp_path / "archive"
    day_lines = state(root, True, compressing=True, partial="torn")
    report = run_maintain(root, compress_closed=False)
    assert report.compressed == [root / "gw" / f"{DAY}.log.gz"]
    assert gz_lines(root / "gw" / f"{DAY}.log.gz") == day_lines


def test_finish_compression_with_nothing_to_finish(tmp_path):
    log = write(tmp_path / "gw" / f"{DAY}.log", [b"x"])
    assert finish_compression(log) is None
    assert log.exists()


def broken_recovery(monkeypatch):
    def fail(log):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(archive_files, "finish_compression", fail)


def test_retention_by_age_removes_a_compression_left_unfinished(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    state(root, True, compressed=True, partial="complete")
    broken_recovery(monkeypatch)
    report = run_maintain(root, compress_closed=False, retention_days=3)
    assert any("finishing the compression" in error for error in report.errors)
    assert names(root) == [f"{TODAY}.log"]
    assert sorted(p.name for p in report.deleted_by_age) == [
        f"{DAY}.log.compressed", f"{DAY}.log.gz", f"{DAY}.log.gz.partial"]


def test_retention_by_size_counts_a_compression_left_unfinished_and_removes_it_whole(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    state(root, True, compressing=True, partial="complete")
    write(root / "gw" / f"{DAY}.log", [b"late"])
    write(root / "gw" / "2026-11-21.log", [b"next day"])
    broken_recovery(monkeypatch)
    sizes = {p.name: p.stat().st_size for p in (root / "gw").iterdir()}
    # Over the bound only if the partial counts.
    bound = sum(sizes.values()) - sizes[f"{DAY}.log.gz.partial"]
    report = run_maintain(root, compress_closed=False, max_host_bytes=bound)
    assert names(root) == [f"{DAY}.log", "2026-11-21.log", f"{TODAY}.log"]
    assert [p.name for p in report.deleted_by_size] == [
        f"{DAY}.log.compressing", f"{DAY}.log.gz.partial", f"{DAY}.log.gz"]


# Readers whose files change between listing and reading, or while reading.


@pytest.mark.parametrize("earlier", [False, True], ids=["first", "after-earlier-gz"])
def test_a_listed_log_compressed_before_it_is_read(tmp_path, earlier):
    root = tmp_path / "archive"
    log, day_lines = make_day(root, earlier)
    listed = day_files(root, "gw")
    compress(log)
    damage = []
    assert messages(listed, damage) == day_lines + [b"today"]
    assert damage == []


def test_a_log_compressed_while_its_days_gz_is_being_read(tmp_path):
    root = tmp_path / "archive"
    log, day_lines = make_day(root, earlier=True)
    reading = read_messages(day_files(root, "gw"))
    first = next(reading).message
    compress(log)
    write(root / "gw" / f"{DAY}.log", [b"after"])  # lines that came later, in a new .log
    # The day as it was opened: the new .log is for a later reading.
    assert [first] + [m.message for m in reading] == day_lines + [b"today"]


@pytest.mark.parametrize("at_call", [0, 1], ids=["before-opening", "after-opening"])
def test_a_compression_step_while_a_day_is_opened_is_seen_and_the_day_opened_again(tmp_path, monkeypatch, at_call):
    root = tmp_path / "archive"
    log, day_lines = make_day(root, earlier=True)
    listed = day_files(root, "gw")
    real = archive_files._day_state
    calls = []

    def day_state(directory, day):
        if day == DAY and len(calls) == at_call:
            calls.append(day)
            if at_call:  # the names are looked at again after opening: the compression comes first
                compress(log)
                return real(directory, day)
            seen = real(directory, day)
            compress(log)
            return seen
        calls.append(day)
        return real(directory, day)

    monkeypatch.setattr(archive_files, "_day_state", day_state)
    assert messages(listed) == day_lines + [b"today"]
    assert len([c for c in calls if c == DAY]) > 2  # opened a second time


def test_a_day_that_keeps_changing_is_reported_not_read_forever(tmp_path, monkeypatch):
    root = tmp_path / "archive"
    make_day(root, earlier=False)
    counter = iter(range(10**6))
    monkeypatch.setattr(archive_files, "_day_state", lambda directory, day: {".log": next(counter)})
    monkeypatch.setattr(archive_files.time, "sleep", lambda seconds: None)
    damage = []
    assert messages(day_files(root, "gw"), damage) == []
    assert damage[0][1] == "changed too often while being opened; skipped"


def test_listed_files_removed_before_reading_are_reported_and_the_rest_read_once(tmp_path):
    root = tmp_path / "archive"
    compress(write(root / "gw" / "2026-11-18.log", [b"removed gz"]))
    write(root / "gw" / "2026-11-19.log", [b"removed log"])
    log, day_lines = make_day(root, earlier=True)
    listed = day_files(root, "gw")
    (root / "gw" / "2026-11-18.log.gz").unlink()
    (root / "gw" / "2026-11-19.log").unlink()
    compress(log)
    damage = []
    assert messages(listed, damage) == day_lines + [b"today"]
    assert damage == [("2026-11-18.log.gz", "removed before it could be read; its lines are not shown"),
                      ("2026-11-19.log", "removed before it could be read; its lines are not shown")]


def test_a_host_directory_removed_before_reading(tmp_path):
    root = tmp_path / "archive"
    make_day(root, earlier=True)
    listed = day_files(root, "gw")
    for path in (root / "gw").iterdir():
        path.unlink()
    (root / "gw").rmdir()
    damage = []
    assert messages(listed, damage) == []
    assert len(damage) == len(listed)


def test_progress_counts_the_listed_sizes_even_when_files_changed(tmp_path):
    root = tmp_path / "archive"
    log, _ = make_day(root, earlier=True)
    listed = day_files(root, "gw")
    compress(log)
    shown = []
    list(read_messages(listed, on_progress=shown.append))
    assert shown[-1] == sum(f.size for f in listed)
