"""Parse one syslog message: RFC 5424, RFC 3164 and what real senders make of them.

Pure code over ``bytes``: no I/O, no Twisted, no clock. ``parse`` never raises
and never loses content: when the header cannot be read, the fields it would
have given are ``None``, ``header_error`` says why, and ``msg`` is everything
that followed the last part that could be read (the whole message when even
the PRI is broken).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import NamedTuple

BOM = b"\xef\xbb\xbf"
_NIL = b"-"


class Facility(enum.IntEnum):
    KERN = 0
    USER = 1
    MAIL = 2
    DAEMON = 3
    AUTH = 4
    SYSLOG = 5
    LPR = 6
    NEWS = 7
    UUCP = 8
    CRON = 9
    AUTHPRIV = 10
    FTP = 11
    NTP = 12
    SECURITY = 13
    CONSOLE = 14
    SOLARIS_CRON = 15
    LOCAL0 = 16
    LOCAL1 = 17
    LOCAL2 = 18
    LOCAL3 = 19
    LOCAL4 = 20
    LOCAL5 = 21
    LOCAL6 = 22
    LOCAL7 = 23


class Severity(enum.IntEnum):
    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


class Dialect(enum.StrEnum):
    RFC5424 = "rfc5424"
    RFC3164 = "rfc3164"
    # No readable header at all: a bare line, or a broken PRI.
    NONE = "none"


_FACILITIES = tuple(Facility)
_SEVERITIES = tuple(Severity)


@dataclass(frozen=True, slots=True)
class BsdTimestamp:
    """An RFC 3164 ``Mmm dd hh:mm:ss``: no year, no zone (see ``resolve_bsd``)."""

    month: int
    day: int
    hour: int
    minute: int
    second: int


@dataclass(frozen=True, slots=True)
class StructuredDataElement:
    id: str
    params: tuple[tuple[str, str], ...]


class SyslogMessage(NamedTuple):
    """One parsed message. A NamedTuple, not a frozen dataclass: it is built
    for every message received, and a tuple is built without a Python call
    per field."""

    dialect: Dialect
    msg: bytes
    facility: Facility | None = None
    severity: Severity | None = None
    timestamp: datetime | None = None
    bsd_timestamp: BsdTimestamp | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: tuple[StructuredDataElement, ...] = ()
    # RFC 3164 only: everything after the HOSTNAME, TAG included, for
    # senders that put no TAG before a message that looks like one.
    content: bytes | None = None
    header_error: str | None = None


# RFC 5424 section 6: PRI = "<" PRIVAL ">", PRIVAL = 1*3DIGIT ; range 0 .. 191.
# Every PRI that can be written, leading zeros included, is looked up whole.
_PRIVALS = {b"<%0*d>" % (width, value): value for width in (1, 2, 3) for value in range(10 ** width)}

# RFC 3164 section 4.1.2: TIMESTAMP = Mmm SP dd SP hh:mm:ss, where a day below
# 10 is padded with a space; some senders pad with 0, or not at all, or add a
# fraction of a second.
_BSD_TIMESTAMP = re.compile(
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) "
    rb"(\d\d):(\d\d):(\d\d)(?:\.\d{1,6})?(?: +|$)"
)
_MONTHS = {m: i for i, m in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
     b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), start=1)}

# An RFC 3339 timestamp where RFC 3164 puts its own (rsyslog's forwarding
# templates do this). Fractions and the offset are optional in practice.
_ISO_TIMESTAMP = re.compile(
    rb"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|z|[+-]\d\d:?\d\d)?)(?: +|$)"
)

# RFC 3164 section 4.1.3: TAG is up to 32 alphanumerics; in practice any
# printable run without blanks, colons or brackets, then "[pid]" and ":".
_TAG = re.compile(rb"([^\s:\[\]]{1,48})(?:\[([^\]\s]{0,128})\])?: ?")


# RFC 5424 section 6.3:
#   STRUCTURED-DATA = 1*SD-ELEMENT
#   SD-ELEMENT = "[" SD-ID *(SP SD-PARAM) "]"
#   SD-PARAM = PARAM-NAME "=" %d34 PARAM-VALUE %d34
#   SD-ID, PARAM-NAME = 1*32PRINTUSASCII except '=', SP, ']' and '"'
# matched in the text ``_masked`` gives, where a PARAM-VALUE is any run
# without '"'. The quantifiers are possessive: a sender can make the
# structured data as long as the message, and each byte is then read once,
# never again for a shorter match.
_SD_NAME = rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}+"
_STRUCTURED_DATA = re.compile(rb"(?:\[" + _SD_NAME + rb'(?: ' + _SD_NAME + rb'="[^"]*+")*+\])++')
_SD_ID = re.compile(rb"\[(" + _SD_NAME + rb")")
_SD_PARAM = re.compile(rb" (" + _SD_NAME + rb')="([^"]*+)"')
# ``parse`` gives the first SD-ELEMENTs in full, as many as keep within
# these bounds: a message of 64 KiB can hold 20,000 of them, and building
# each into objects would cost far more than the rest of the message. Where
# the structured data ends, and so MSG, is found however long it is.
MAX_SD_ELEMENTS = 16
MAX_SD_PARAMS = 64
MAX_SD_BYTES = 8192


class Envelope(NamedTuple):
    """What the collector reads of every message it receives: the fields
    ``parse`` gives of the same bytes, undecoded, with no timestamp or
    structured data converted and no SyslogMessage built: the hot path
    pays for none of what it does not read."""

    hostname: bytes | None
    msg: bytes
    # RFC 3164 only: the TAG's name (``parse`` gives it as app_name), and
    # everything from the TAG on (SyslogMessage.content).
    tag: bytes | None
    content: bytes | None
    header_error: str | None


def parse(data: bytes) -> SyslogMessage:
    """Parse one message; trailing LF/CR/NUL must already be removed by framing."""
    value, pos, error = _read_pri(data)
    if error is not None:
        return SyslogMessage(Dialect.NONE, data, header_error=error)
    facility = _FACILITIES[value >> 3]
    severity = _SEVERITIES[value & 7]
    if data.startswith(b"1 ", pos):
        fields, timestamp, structured_data, msg, error = _read_5424(data, pos + 2, True)
        if not fields:
            return SyslogMessage(Dialect.RFC5424, msg, facility, severity, header_error=error)
        # Positional arguments: the archive reader builds one per message, and keywords cost.
        return SyslogMessage(
            Dialect.RFC5424, msg, facility, severity, timestamp, None, _nil_or_text(fields[1]),
            _nil_or_text(fields[2]), _nil_or_text(fields[3]), _nil_or_text(fields[4]), structured_data,
            None, error)
    timestamp, bsd, hostname, tag, msg, content, error = _read_3164(data, pos)
    if error is not None:
        return SyslogMessage(Dialect.RFC3164, msg, facility, severity, header_error=error)
    app_name = procid = None
    if tag is not None:
        app_name = tag.group(1).decode("utf-8", "replace")
        if tag.group(2) is not None:
            procid = tag.group(2).decode("utf-8", "replace")
    return SyslogMessage(
        Dialect.RFC3164, msg, facility, severity, timestamp, bsd,
        None if hostname is None else hostname.decode("utf-8", "replace"),
        app_name, procid, None, (), content)


def envelope(data: bytes) -> Envelope:
    """What ``parse`` gives the collector's hot path, read the same way."""
    _, pos, error = _read_pri(data)
    if error is not None:
        return Envelope(None, data, None, None, error)
    if data.startswith(b"1 ", pos):
        fields, _, _, msg, error = _read_5424(data, pos + 2, False)
        hostname = fields[1] if fields and fields[1] not in (_NIL, b"") else None
        return Envelope(hostname, msg, None, None, error)
    _, _, hostname, tag, msg, content, error = _read_3164(data, pos)
    return Envelope(hostname, msg, None if tag is None else tag.group(1), content, error)


def _read_pri(data: bytes) -> tuple[int, int, str | None]:
    """The PRIVAL, where the header goes on after it, and why it is not there."""
    close = data.find(b">", 2, 5)
    value = _PRIVALS.get(data[:close + 1]) if close > 0 else None
    if value is None:
        return 0, 0, "missing PRI"
    if value > 191:
        return 0, 0, "PRI out of range"
    return value, close + 1, None


def _read_5424(data: bytes, pos: int, elements: bool) -> tuple[
        list[bytes], datetime | None, tuple[StructuredDataElement, ...], bytes, str | None]:
    """The header fields from TIMESTAMP to MSGID (none when the header is
    incomplete), the timestamp, the structured data (read into elements only
    if ``elements``), MSG and the first error."""
    # HEADER = PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID
    fields = data[pos:].split(b" ", 5)
    if len(fields) < 6 and not (len(fields) == 5 and fields[4]):
        return [], None, (), data[pos:], "RFC 5424 header incomplete"
    rest = fields[5] if len(fields) == 6 else b""
    timestamp = None
    header_error = None
    if fields[0] != _NIL:
        timestamp = _iso_datetime(fields[0])
        if timestamp is None:
            header_error = "bad RFC 5424 timestamp"
    structured_data: tuple[StructuredDataElement, ...] = ()
    if rest[:2] == b"- " or rest == b"-":
        msg = rest[2:]
    elif rest[:1] == b"[":
        masked = _masked(rest)
        match = _STRUCTURED_DATA.match(masked)
        # An element that does not parse, first or after others, makes the whole of it bad.
        if match is None or masked[match.end():match.end() + 1] == b"[":
            header_error = header_error or "bad structured data"
            msg = rest
        else:
            end = match.end()
            if elements:
                structured_data = _elements(rest, masked, end)
            msg = rest[end + 1:] if rest[end:end + 1] == b" " else rest[end:]
    else:
        header_error = header_error or "missing structured data"
        msg = rest
    if msg.startswith(BOM):
        msg = msg[3:]
    return fields, timestamp, structured_data, msg, header_error


def _read_3164(data: bytes, pos: int) -> tuple[
        datetime | None, BsdTimestamp | None, bytes | None, re.Match[bytes] | None, bytes,
        bytes | None, str | None]:
    """The timestamp (RFC 3339 or BSD), HOSTNAME, the TAG's match, MSG,
    everything after the HOSTNAME, and the error that stopped the reading."""
    timestamp = None
    bsd = None
    match = _BSD_TIMESTAMP.match(data, pos)
    if match is not None:
        # The stamp without the run of spaces after it, which a sender can
        # make as long as it likes: the cache's keys stay short.
        bsd = _bsd_timestamp(match.group()[:32])
    else:
        match = _ISO_TIMESTAMP.match(data, pos)
        if match is not None:
            timestamp = _iso_datetime(match.group(1))
    if match is None or (bsd is None and timestamp is None):
        return None, None, None, None, data[pos:], None, "missing or bad RFC 3164 timestamp"
    pos = match.end()
    hostname = None
    space = data.find(b" ", pos)
    token = data[pos:space] if space >= 0 else data[pos:]
    # With no HOSTNAME the first word is the TAG ("sshd[42]:") or the message.
    if token and not token.endswith(b":") and not token.startswith(b"[") and (
        not token.endswith(b"]") or b"[" not in token
    ):
        hostname = token
        pos = space + 1 if space >= 0 else len(data)
    content = data[pos:]
    tag = _TAG.match(data, pos)
    if tag is not None:
        pos = tag.end()
    msg = data[pos:]
    if msg.startswith(BOM):
        msg = msg[3:]
    return timestamp, bsd, hostname, tag, msg, content, None


@functools.lru_cache(maxsize=4096)
def _bsd_timestamp(text: bytes) -> BsdTimestamp | None:
    # Messages arrive many to a second: each distinct stamp is read once.
    match = _BSD_TIMESTAMP.match(text)
    assert match is not None
    month, day, hour, minute, second = match.groups()
    bsd = BsdTimestamp(_MONTHS[month], int(day), int(hour), int(minute), int(second))
    if not (1 <= bsd.day <= 31 and bsd.hour < 24 and bsd.minute < 60 and bsd.second < 61):
        return None
    return bsd


def _nil_or_text(field: bytes) -> str | None:
    if field == _NIL or not field:
        return None
    return field.decode("utf-8", "replace")


def _iso_datetime(field: bytes) -> datetime | None:
    # Timestamps repeat; one with a long fraction (a sender's choice) is read
    # afresh rather than held in the cache.
    if len(field) > _MAX_CACHED_TIMESTAMP:
        return _read_iso_datetime(field)
    return _cached_iso_datetime(field)


_MAX_CACHED_TIMESTAMP = 64


@functools.lru_cache(maxsize=4096)
def _cached_iso_datetime(field: bytes) -> datetime | None:
    return _read_iso_datetime(field)


def _read_iso_datetime(field: bytes) -> datetime | None:
    try:
        text = field.decode("ascii")
        if "." in text:
            # fromisoformat takes at most 6 fraction digits on older Pythons.
            head, _, tail = text.partition(".")
            digits = len(tail) - len(tail.lstrip("0123456789"))
            text = head + "." + tail[:min(digits, 6)].ljust(6, "0") + tail[digits:]
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _masked(rest: bytes) -> bytes:
    """``rest`` with each escape that could hide a '"' from ``_STRUCTURED_DATA``
    made two plain bytes, at the same offsets.

    In a PARAM-VALUE a backslash escapes the byte after it, in pairs from
    the left of a run, so a '"' after an odd run of them is escaped. Each
    pair of backslashes becomes "aa", then each backslash left before a '"'
    becomes "a" and the '"' NUL: the first '"' left in a PARAM-VALUE ends
    it. In an SD-NAME a backslash is a character like any other, and so is
    "a", and NUL ends the name as '"' does: the masked text parses exactly
    as far as the bytes themselves.
    """
    if b"\\" not in rest:
        return rest
    return rest.replace(b"\\\\", b"aa").replace(b'\\"', b"a\0")


def _elements(rest: bytes, masked: bytes, end: int) -> tuple[StructuredDataElement, ...]:
    """The SD-ELEMENTs of ``rest[:end]``, which ``_STRUCTURED_DATA`` matched in
    ``masked``: those of them in full that the bounds leave."""
    elements: list[StructuredDataElement] = []
    params_left = MAX_SD_PARAMS
    limit = min(end, MAX_SD_BYTES)
    pos = 0
    while len(elements) < MAX_SD_ELEMENTS:
        sd_id = _SD_ID.match(masked, pos, limit)
        if sd_id is None:
            break
        pos = sd_id.end()
        params: list[tuple[str, str]] = []
        while (param := _SD_PARAM.match(masked, pos, limit)) is not None:
            if len(params) == params_left:
                return tuple(elements)
            params.append((rest[param.start(1):param.end(1)].decode("utf-8", "replace"),
                           _unescaped(rest[param.start(2):param.end(2)]).decode("utf-8", "replace")))
            pos = param.end()
        if pos >= limit or masked[pos] != 0x5D:  # "]": the element goes on past MAX_SD_BYTES
            break
        pos += 1
        params_left -= len(params)
        elements.append(StructuredDataElement(
            rest[sd_id.start(1):sd_id.end(1)].decode("utf-8", "replace"), tuple(params)))
    return tuple(elements)


def _unescaped(value: bytes) -> bytes:
    """A PARAM-VALUE with its escapes undone: a backslash before '"', '\\'
    or ']' stands for that byte, before any other for itself."""
    if b"\\" not in value:
        return value
    # Escaped backslashes stand as ']"' while the other escapes are undone: a
    # '"' in a PARAM-VALUE follows a backslash, so ']"' is never there before.
    return value.replace(b"\\\\", b']"').replace(b"\\]", b"]").replace(b']"', b"\\").replace(b'\\"', b'"')


def resolve_bsd(stamp: BsdTimestamp, received_at: datetime, zone: tzinfo) -> datetime | None:
    """Give an RFC 3164 timestamp the year that puts it nearest the receive time.

    ``received_at`` must be timezone-aware; ``zone`` is where the sender's
    clock runs. A message stamped Dec 31 23:59:59 that arrives at Jan 1
    00:00:01 belongs to the previous year, and the other way round.
    """
    local_year = received_at.astimezone(zone).year
    best = None
    for year in (local_year - 1, local_year, local_year + 1):
        try:
            candidate = datetime(year, stamp.month, stamp.day, stamp.hour,
                                 stamp.minute, min(stamp.second, 59), tzinfo=zone)
        except ValueError:  # Feb 29 outside a leap year
            continue
        distance = abs(candidate - received_at)
        if best is None or distance < best[0]:
            best = (distance, candidate)
    return None if best is None else best[1]

