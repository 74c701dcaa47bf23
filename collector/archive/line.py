"""The archive's line format: one received message per line, lossless.

    2026-11-25T21:41:51.123456Z 192.0.2.1:514 <message>

The receive time (RFC 3339, UTC, microseconds), the sender's address and
port, and the message bytes exactly as received, escaped so that the line
holds no LF, and nothing that a terminal would act on when it is shown:
backslash, LF, CR and NUL become ``\\\\``, ``\\n``, ``\\r``, ``\\0``; the other
C0 control bytes but TAB, and DEL, become ``\\xHH``; a C1 control character
(U+0080-U+009F, the bytes C2 80 to C2 9F in UTF-8) becomes the escapes of
its two bytes, such as ``\\xc2\\x9b``; and each byte that is not part of valid
UTF-8 becomes ``\\xHH``. Every escape reads back to its bytes, so the line is
lossless; a line that holds control bytes raw, as older archives do, reads
back the same. Plain ASCII lines without control bytes, the common case,
are written unchanged.

A line cut short by a crash is followed, when the file is next opened for
writing, by a line holding only ``TORN_MARKER``, which no archive line can
be: readers skip the line before it and report it.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

TORN_MARKER = b"#torn-line-above"

# Bytes escaped wherever they are: backslash, and the C0 controls but TAB, and DEL.
_SPECIAL_BYTES = bytes([*range(0x09), *range(0x0A, 0x20), 0x5C, 0x7F])
_SPECIAL = re.compile(rb"[\x00-\x08\x0a-\x1f\\\x7f]")
_ESCAPES = {bytes([byte]): b"\\x%02x" % byte for byte in _SPECIAL_BYTES}
_ESCAPES.update({b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\x00": b"\\0"})
# C1 controls, once valid UTF-8 is decoded: escaped as the two bytes of each.
_C1 = re.compile("[\x80-\x9f]")
_ESCAPED = re.compile(rb"\\(?:([\\nr0])|x([0-9a-f]{2}))")
_UNESCAPES = {b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"0": b"\x00"}

# Above this many bytes, one memchr scan for each special byte takes less
# time than one pass that looks each byte up, which copies the data.
_SCAN_EACH_FROM = 2048


def _has_special(data: bytes) -> bool:
    # Either way runs in C over the bytes, where a regex scan steps its
    # matcher for each byte.
    if len(data) < _SCAN_EACH_FROM:
        return len(data.translate(None, _SPECIAL_BYTES)) != len(data)
    for byte in _SPECIAL_BYTES:
        if byte in data:
            return True
    return False


def _escape_c1(match: re.Match[str]) -> str:
    return f"\\xc2\\x{ord(match.group()):02x}"  # its second byte is its code point


def escape(message: bytes) -> bytes:
    if _has_special(message):
        message = _SPECIAL.sub(lambda m: _ESCAPES[m.group()], message)
    if message.isascii():
        return message
    # Backslashes are already doubled, so every "\xHH" this adds is ours.
    text = message.decode("utf-8", "backslashreplace")
    if 0xC2 in message:  # the first byte of every C1 control in UTF-8
        text = _C1.sub(_escape_c1, text)
    return text.encode("utf-8")


def unescape(text: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        if match.group(1) is not None:
            return _UNESCAPES[match.group(1)]
        return bytes((int(match.group(2), 16),))
    return _ESCAPED.sub(one, text) if 0x5C in text else text  # a backslash


def format_time(seconds: float) -> bytes:
    whole = int(seconds)
    micros = int(round((seconds - whole) * 1_000_000))
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return _second(whole) + b".%06dZ" % micros


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> bytes:
    # Messages arrive many to a second: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)).encode()


# Messages received together: (host, sender, messages) each, the messages
# (at least one) from one sender, tagged with one host.
Batch = list[tuple[str, bytes, list[bytes]]]


def format_batch(stamp: bytes, batch: Batch) -> list[tuple[str, bytes]]:
    """The archive lines of each part of ``batch``, received at ``stamp``: its host and its lines."""
    together = b"".join([b"".join(messages) for _, _, messages in batch])
    # Checked once for the whole batch: most batches need no escaping at all.
    clean = together.isascii() and not _has_special(together)
    lines = []
    for host, sender, messages in batch:
        prefix = b"%s %s " % (stamp, sender)
        escaped = messages if clean else [escape(message) for message in messages]
        lines.append((host, prefix + (b"\n" + prefix).join(escaped) + b"\n"))
    return lines


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    received_at: str
    sender: str
    message: bytes


class BadLine(ValueError):
    pass


def parse_line(line: bytes) -> ArchivedMessage:
    """Read one archive line (with or without its LF) back into the message."""
    if line.endswith(b"\n"):
        line = line[:-1]
    parts = line.split(b" ", 2)
    if len(parts) < 3 or not parts[0].endswith(b"Z"):
        raise BadLine(f"not an archive line: {line[:80]!r}")
    stamp, sender, escaped = parts
    return ArchivedMessage(stamp.decode("ascii", "replace"), sender.decode("ascii", "replace"),
                           unescape(escaped))
