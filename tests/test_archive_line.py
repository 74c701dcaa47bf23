import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.archive.line import BadLine, escape, format_batch, format_time, parse_line, unescape

# What a terminal acts on: C0 controls but TAB (and LF, which ends a line), DEL, C1 controls in UTF-8.
ACTIVE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]")


def test_plain_ascii_is_written_unchanged():
    lines = format_batch(b"2026-11-25T21:41:51.123456Z", [("gw", b"192.0.2.1:514", [b"<13>Engine: Startup."])])
    assert lines == [("gw", b"2026-11-25T21:41:51.123456Z 192.0.2.1:514 <13>Engine: Startup.\n")]


def test_valid_utf8_is_written_unchanged():
    message = "Packet from Pobočka Brno".encode()
    assert escape(message) == message


@pytest.mark.parametrize("message, escaped", [
    (b"a\nb", b"a\\nb"), (b"a\rb", b"a\\rb"), (b"a\x00b", b"a\\0b"), (b"a\\b", b"a\\\\b"),
    (b"caf\xe9", b"caf\\xe9"), (b"\\xe9", b"\\\\xe9"), (b"\xff\\n\n", b"\\xff\\\\n\\n"),
    (b"\x1b]0;pwned\x07\x1b[2J", b"\\x1b]0;pwned\\x07\\x1b[2J"),
    (b"a\x7fb\x01\x1f", b"a\\x7fb\\x01\\x1f"),
    (b"tab\tkept", b"tab\tkept"),
    ("\u009b31m".encode(), b"\\xc2\\x9b31m"),
    ("\u0080\u009f\u00a0\u00e9".encode(), b"\\xc2\\x80\\xc2\\x9f" + "\u00a0\u00e9".encode()),
    (b"\xc2\x9b\xff", b"\\xc2\\x9b\\xff"),
    (b"\\xc2\x1b", b"\\\\xc2\\x1b"),
])
def test_escapes(message, escaped):
    assert escape(message) == escaped
    assert parse_line(b"2026-01-01T00:00:00.000000Z 192.0.2.1:1 " + escaped + b"\n").message == message


def test_format_time():
    assert format_time(0) == b"1970-01-01T00:00:00.000000Z"
    assert format_time(1764106911.25) == b"2025-11-25T21:41:51.250000Z"
    assert format_time(1764106911.9999999) == b"2025-11-25T21:41:52.000000Z"


def test_not_an_archive_line():
    with pytest.raises(BadLine):
        parse_line(b"garbage")


@settings(max_examples=1000)
@given(st.binary(max_size=500))
def test_any_bytes_survive_the_round_trip(message):
    [(_, line)] = format_batch(format_time(1764106911.5), [("gw", b"[2001:db8::1]:514", [message])])
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    archived = parse_line(line)
    assert archived.message == message
    assert archived.sender == "[2001:db8::1]:514"
    assert archived.received_at == "2025-11-25T21:41:51.500000Z"


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["gw", "branch"]), st.sampled_from([b"192.0.2.1:1", b"[2001:db8::1]:2"]),
                          st.lists(st.binary(max_size=80), min_size=1, max_size=8)), max_size=6))
def test_a_batch_is_one_line_per_message(batch):
    lines = format_batch(b"2026-01-01T00:00:00.000000Z", batch)
    # Escaping is decided for the whole batch; each line must still read back alone.
    assert [host for host, _ in lines] == [host for host, _, _ in batch]
    for (_, text), (_, sender, messages) in zip(lines, batch, strict=True):
        archived = [parse_line(line) for line in text.splitlines(keepends=True)]
        assert [m.message for m in archived] == messages
        assert {m.sender for m in archived} == {sender.decode()}


def old_escape(message):
    """The escaping of archives written before control bytes other than LF,
    CR and NUL were escaped: they still read back."""
    message = re.sub(rb"[\\\n\r\x00]", lambda m: {b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r",
                                                 b"\x00": b"\\0"}[m.group()], message)
    return message if message.isascii() else message.decode("utf-8", "backslashreplace").encode()


# Bytes that need escaping, or look like escapes, mixed with plain text.
PIECES = st.sampled_from([
    b"\x1b", b"\x07", b"\x7f", b"\x00", b"\t", b"\n", b"\r", b"\\", b"\\x1b", b"\\xc2", b"x", b"[2J",
    b"\xc2", b"\xc2\x9b", b"\xc2\x80", b"\xc2\x9f", b"\xc2\xa0", b"\xe2\x80\xae", b"\xff", b"\x9b",
])
MESSAGES = (st.binary(max_size=300) | st.text(max_size=100).map(str.encode)
            | st.lists(PIECES, max_size=40).map(b"".join))


@settings(max_examples=2000)
@given(MESSAGES)
def test_escaping_is_lossless_and_inert(message):
    escaped = escape(message)
    assert unescape(escaped) == message
    assert ACTIVE.search(escaped) is None
    escaped.decode("utf-8")  # valid UTF-8: nothing else for a terminal to guess at
    if message.isascii() and ACTIVE.search(message) is None and b"\\" not in message:
        assert escaped is message or escaped == message


@settings(max_examples=1000)
@given(MESSAGES)
def test_lines_escaped_the_old_way_still_read_back(message):
    line = b"2026-01-01T00:00:00.000000Z 192.0.2.1:1 " + old_escape(message) + b"\n"
    assert parse_line(line).message == message


def test_a_batch_with_a_control_byte_is_escaped():
    lines = format_batch(b"2026-01-01T00:00:00.000000Z", [("gw", b"192.0.2.1:1", [b"plain", b"\x1b[2J"])])
    assert lines == [("gw", b"2026-01-01T00:00:00.000000Z 192.0.2.1:1 plain\n"
                            b"2026-01-01T00:00:00.000000Z 192.0.2.1:1 \\x1b[2J\n")]


@pytest.mark.parametrize("size", [10, 5000], ids=["small", "large"])
def test_every_control_byte_is_found_in_small_and_large_batches(size):
    # Large batches are scanned another way than single messages.
    plain = b"x" * size
    for byte in [*range(0x09), *range(0x0A, 0x20), 0x5C, 0x7F]:
        message = bytes([byte])
        [(_, text)] = format_batch(b"2026-01-01T00:00:00.000000Z", [("gw", b"192.0.2.1:1", [plain, message])])
        lines = text.splitlines(keepends=True)
        assert [parse_line(line).message for line in lines] == [plain, message]
        assert ACTIVE.search(text[:-1].replace(b"\n", b"")) is None
    [(_, text)] = format_batch(b"2026-01-01T00:00:00.000000Z", [("gw", b"192.0.2.1:1", [plain, b"a\tb"])])
    assert text.endswith(b" a\tb\n")
