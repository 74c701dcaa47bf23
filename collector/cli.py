"""``syslog-collector``: the commands that are not the server itself.

    syslog-collector check-config FILE
    syslog-collector archive hosts [--archive-dir DIR | --config FILE]
    syslog-collector archive cat HOST [--since T] [--until T] [--type TYPE]
                                      [--format text|octet|json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from collector import config as configuration
from collector.archive.files import host_directory
from collector.archive.line import escape
from collector.archive.reader import files_between, host_summaries, jsonable, read_messages
from collector.checks import load_checked
from collector.config import ConfigError
from collector.hosts import sanitize_host
from collector.parsing import syslog
from collector.parsing.kerio import record_in
from collector.records import RecordType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="syslog-collector",
        description="Tools for the syslog collector (the server itself runs as "
                    "'twistd -n syslog-collector').",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective settings")
    check.add_argument("file", metavar="FILE", help="the TOML config file")

    archive = commands.add_parser("archive", help="read the per-host archives")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True, metavar="COMMAND")
    where = argparse.ArgumentParser(add_help=False)
    source = where.add_mutually_exclusive_group()
    source.add_argument("--archive-dir", metavar="DIR", help="the archive root")
    source.add_argument("--config", metavar="FILE", help="take the archive root from this config file")
    archive_commands.add_parser("hosts", parents=[where],
                                help="list the hosts with their first and last day and size")
    cat = archive_commands.add_parser("cat", parents=[where], help="print one host's messages in order")
    cat.add_argument("host", type=host_tag, metavar="HOST")
    cat.add_argument("--since", type=parse_time, metavar="T",
                     help="received at or after T (RFC 3339 or a date; UTC unless it has an offset)")
    cat.add_argument("--until", type=parse_time, metavar="T", help="received before T")
    cat.add_argument("--type", choices=[t.value for t in RecordType], help="only records of this type")
    cat.add_argument("--format", choices=("text", "octet", "json"), default="text",
                     help="text: one message a line, escaped where needed; octet: the exact bytes, "
                          "RFC 6587 octet-counted, for replay; json: one object a line with parsed fields")

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.file)
    try:
        root = archive_root(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 1
    if args.archive_command == "hosts":
        return list_hosts(root, sys.stdout)
    return cat_host(root, args, sys.stdout.buffer, sys.stderr)


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: expected RFC 3339 such as 2026-11-25T10:00:00Z, or a date "
            "such as 2026-11-25") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def host_tag(text: str) -> str:
    """A host as the archive names it: never a path out of its root."""
    tag = sanitize_host(text)
    if tag != text:
        hint = f"; did you mean {tag!r}?" if tag is not None else ""
        raise argparse.ArgumentTypeError(
            f"not a host tag: {text!r} (lower-case letters, digits and '.', '_', ':', '-', "
            f"not beginning with '.' or '-'){hint}")
    return text


def check_config(path: str) -> int:
    try:
        config = load_checked(path)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(configuration.describe(config))
    return 0


def archive_root(args: argparse.Namespace) -> Path:
    if args.archive_dir is not None:
        return Path(args.archive_dir)
    return configuration.load(args.config).archive.dir


def list_hosts(root: Path, out: TextIO) -> int:
    summaries = host_summaries(root)
    if not summaries:
        print(f"no archives under {root}", file=sys.stderr)
        return 1
    hosts = [shown(s.host) for s in summaries]
    width = max(map(len, hosts))
    out.write(f"{'HOST':{width}}  FIRST DAY   LAST DAY    FILES         BYTES\n")
    for host, s in zip(hosts, summaries, strict=True):
        out.write(f"{host:{width}}  {s.first_day}  {s.last_day}  {s.files:5d}  {s.size:12d}\n")
    return 0


def shown(name: str) -> str:
    """A directory name escaped as archive lines are: the collector makes only
    plain ones, but others put in the root must not act on the terminal."""
    return escape(os.fsencode(name)).decode("utf-8")


def cat_host(root: Path, args: argparse.Namespace, out: BinaryIO, err: TextIO) -> int:
    if host_directory(root, args.host) is None:
        if os.path.islink(root / args.host):
            print(f"{root / args.host} is a symbolic link, which the archive never follows", file=err)
            return 1
        known = [shown(s.host) for s in host_summaries(root)]
        listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        print(f"no archive for host {args.host!r} under {root}"
              + (f"; hosts: {listed}" if known else ""), file=err)
        return 1
    files = files_between(root, args.host, args.since, args.until)
    damaged = []

    def on_damage(path: Path, problem: str) -> None:
        damaged.append(path)
        progress.clear()
        print(f"damaged archive {path}: {problem}", file=err)

    progress = Progress(sum(f.size for f in files), err)
    messages = read_messages(files, args.since, args.until, on_damage,
                             progress.show if progress.enabled else None)
    for archived in messages:
        if args.type is None and args.format != "json":
            record = None
        else:
            parsed = syslog.parse(archived.message)
            record = record_in(parsed)
            if args.type is not None and record.type.value != args.type:
                continue
        if args.format == "text":
            out.write(escape(archived.message) + b"\n")
        elif args.format == "octet":
            out.write(b"%d %s" % (len(archived.message), archived.message))
        else:
            out.write(inert_json({
                "received_at": archived.received_at,
                "sender": archived.sender,
                "host": args.host,
                "type": record.type.value,
                "syslog": jsonable(dataclass_without(parsed, "msg", "content")),
                "record": jsonable(record),
                "message": escape(archived.message).decode("utf-8"),
            }).encode("utf-8") + b"\n")
    out.flush()
    progress.clear()
    return 1 if damaged else 0


# JSON escapes C0 controls in strings, but not DEL nor the C1 controls, which
# a terminal acts on too: fields parsed from a message may hold them.
_INERT = {code: f"\\u{code:04x}" for code in (0x7F, *range(0x80, 0xA0))}


def inert_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False).translate(_INERT)


def dataclass_without(value: syslog.SyslogMessage, *names: str) -> dict[str, object]:
    return {k: v for k, v in jsonable(value).items() if k not in names}


class Progress:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self.enabled = stream.isatty() and total > 0
        self._shown_at = 0.0

    def show(self, done: int) -> None:
        now = time.monotonic()
        if now - self._shown_at < 0.1:
            return
        self._shown_at = now
        fraction = min(done / self._total, 1.0)
        bar = "#" * int(fraction * 30)
        self._stream.write(f"\r[{bar:30}] {fraction:4.0%} of {self._total / 1e6:.1f} MB")
        self._stream.flush()

    def clear(self) -> None:
        if self.enabled and self._shown_at:
            self._stream.write("\r" + " " * 60 + "\r")
            self._stream.flush()
            self._shown_at = 0.0


if __name__ == "__main__":
    sys.exit(main())
