"""Syslog framing over byte streams (RFC 6587) and datagrams (RFC 5426).

Pure code over ``bytes``: no I/O, no Twisted. A ``StreamDecoder`` is fed the
chunks of one TCP connection in whatever sizes they arrive and returns whole
messages, the same ones whatever the chunk boundaries.

Each frame is framed on its own, as rsyslog does. A frame is octet-counted
(RFC 6587 section 3.4.1) only when it begins with a count that can be one,
a space, and the syslog message's PRI (RFC 5425 section 4.3)::

    syslog-frame = msg-len SP syslog-msg
    msg-len      = NONZERO-DIGIT *DIGIT
    syslog-msg   = "<" ...

Anything else is non-transparent (section 3.4.2), ended by LF: a sender that
writes no PRI (``2026-11-25 10:00:00 ...``, ``60000 is a number``), a count
with a leading zero, digits not followed by a space. CR before the LF and
NUL as a trailer are accepted too, since senders use both. No frame can make
the stream unreadable: a message over ``max_frame`` is cut to it and the rest
skipped (by its count, or up to its LF or NUL) and counted, and framing goes
on after it.
"""

from __future__ import annotations

DEFAULT_MAX_FRAME = 64 * 1024
# Nine digits already exceed any sane count; more are no count.
_MAX_COUNT_DIGITS = 9


class StreamDecoder:
    """Split one connection's byte stream into syslog messages.

    ``feed`` returns the messages completed by a chunk. A message longer than
    ``max_frame`` is cut to ``max_frame`` bytes and the rest of it skipped, so
    the frames after it still come out right; ``truncated`` counts those
    messages, ``skipped`` the bytes left out of them. ``misframed`` counts
    frames that began with digits that were no octet count, read as
    LF-framed.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.truncated = 0
        self.skipped = 0
        self.misframed = 0
        self._buffer = b""
        # Bytes still to skip of an over-long octet-counted frame.
        self._skip_bytes = 0
        # Skipping the rest of an over-long LF-framed message, up to its end.
        self._skip_line = False

    @property
    def pending(self) -> int:
        """Bytes held back as the start of an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buffer + data if self._buffer else data
        frames: list[bytes] = []
        pos = self._resume_skip(buf, 0)
        end = len(buf)
        # 0, not b"\x00": "in" tries a bytes operand as an integer first,
        # at the cost of an exception.
        has_nul = 0 in buf
        max_frame = self.max_frame
        while pos < end:
            first = buf[pos]
            if 0x30 <= first <= 0x39:
                # The count is read digit by digit: compiled, that is a loop
                # over the bytes in place, with no search for the space, no
                # slice and no call to int().
                length = 0
                space = pos
                last_digit = min(end, pos + _MAX_COUNT_DIGITS + 1)
                while space < last_digit and 0x30 <= buf[space] <= 0x39:
                    length = length * 10 + buf[space] - 0x30
                    space += 1
                if space + 1 >= end and space - pos <= _MAX_COUNT_DIGITS:
                    # The count, its space or the "<" after it may come in the next chunk.
                    break
                if (space - pos <= _MAX_COUNT_DIGITS and first != 0x30 and buf[space] == 0x20
                        and buf[space + 1] == 0x3C):
                    start = space + 1
                    if length <= max_frame:
                        if end - start < length:
                            break
                        frames.append(buf[start : start + length])
                        pos = start + length
                        continue
                    # Over max_frame: its start is kept, the rest skipped by
                    # the count, and the frames after it read as ever.
                    if end - start < max_frame:
                        break
                    frames.append(buf[start : start + max_frame])
                    self.truncated += 1
                    self._skip_bytes = length - max_frame
                    pos = self._resume_skip(buf, start + max_frame)
                    continue
                next_pos = self._lf_frame(buf, pos, has_nul, frames)
                if next_pos < 0:
                    break
                self.misframed += 1
                pos = next_pos
            elif first == 0x0A or first == 0x00 or first == 0x0D:
                # Stray trailers between frames (CRLF, double LF, NUL padding).
                pos += 1
            else:
                next_pos = self._lf_frame(buf, pos, has_nul, frames)
                if next_pos < 0:
                    break
                pos = next_pos
        self._buffer = buf[pos:] if pos < end else b""
        return frames

    def _lf_frame(self, buf: bytes, pos: int, has_nul: bool, frames: list[bytes]) -> int:
        """Take the LF-framed message at ``pos``; return where the next frame
        begins, or -1 when the message is not complete yet."""
        max_frame = self.max_frame
        # A message of max_frame bytes may still have its CR and its LF after it.
        limit = pos + max_frame + 2
        stop = buf.find(b"\n", pos, limit)
        if has_nul:
            nul = buf.find(b"\x00", pos, stop if stop >= 0 else limit)
            if nul >= 0:
                stop = nul
        if stop >= 0:
            frame_end = stop - 1 if stop > pos and buf[stop - 1] == 0x0D else stop
            if frame_end - pos <= max_frame:
                frames.append(buf[pos:frame_end])
                return stop + 1
        elif len(buf) - pos < max_frame + 2:
            return -1
        frames.append(buf[pos : pos + max_frame])
        self.truncated += 1
        self._skip_line = True
        return self._resume_skip(buf, pos + max_frame)

    def finish(self) -> list[bytes]:
        """End of stream: what is left still counts as a message.

        An unterminated last frame is returned as it is; an octet-counted
        frame cut short by the end of the stream is returned as far as it
        got, and counted as truncated.
        """
        rest, self._buffer = self._buffer, b""
        if self._skip_bytes or self._skip_line or not rest:
            return []
        space = rest.find(b" ", 0, _MAX_COUNT_DIGITS + 1)
        if (space > 0 and rest[:space].isdigit() and rest[0] != 0x30 and rest[space + 1:space + 2] == b"<"):
            self.truncated += 1
            return [rest[space + 1:space + 1 + self.max_frame]]
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if len(rest) > self.max_frame:
            self.truncated += 1
            self.skipped += len(rest) - self.max_frame
            rest = rest[:self.max_frame]
        return [rest] if rest else []

    def _resume_skip(self, buf: bytes, pos: int) -> int:
        """Skip what is left of an over-long frame; return where framing resumes."""
        if self._skip_bytes:
            available = len(buf) - pos
            if available < self._skip_bytes:
                self._skip_bytes -= available
                self.skipped += available
                return len(buf)
            self.skipped += self._skip_bytes
            pos += self._skip_bytes
            self._skip_bytes = 0
        elif self._skip_line:
            # Up to the message's end: its LF, or the NUL of a NUL-framed stream.
            stop = buf.find(b"\n", pos)
            nul = buf.find(b"\x00", pos, stop if stop >= 0 else len(buf))
            if nul >= 0:
                stop = nul
            if stop < 0:
                self.skipped += len(buf) - pos
                return len(buf)
            self.skipped += stop - pos
            self._skip_line = False
            pos = stop + 1
        return pos


def datagram_message(datagram: bytes) -> bytes:
    """The message in a UDP datagram: one per datagram, trailing LF/CRLF/NUL trimmed."""
    if datagram[-1:] in (b"\n", b"\x00"):
        datagram = datagram[:-1]
        if datagram[-1:] == b"\r":
            datagram = datagram[:-1]
    return datagram
