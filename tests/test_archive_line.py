import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.archive_line import BadLine, escape, format_batch, format_time, parse_line


def test_plain_ascii_is_written_unchanged():
    lines = format_batch(b"2026-11-25T21:41:51.123456Z", [("gw", b"192.0.2.1:514", [b"<13>Engine: Startup."])])
    assert lines == [("gw", b"2026-11-25T21:41:51.123456Z 192.0.2.1:514 <13>Engine: Startup.\n")]


def test_valid_utf8_is_written_unchanged():
    message = "Packet from Pobočka Brno".encode()
    assert escape(message) == message


@pytest.mark.parametrize("message, escaped", [
    (b"a\nb", b"a\\nb"), (b"a\rb", b"a\\rb"), (b"a\x00b", b"a\\0b"), (b"a\\b", b"a\\\\b"),
    (b"caf\xe9", b"caf\\xe9"), (b"\\xe9", b"\\\\xe9"), (b"\xff\\n\n", b"\\xff\\\\n\\n"),
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
