import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.parsing.framing import StreamDecoder, datagram_message


def feed_all(decoder: StreamDecoder, chunks) -> list[bytes]:
    frames = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames


# RFC 6587 section 3.4.1 (octet counting) and 3.4.2 (non-transparent framing).
RFC5424_EXAMPLE = (b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
                   b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8")


@pytest.mark.parametrize("stream, frames", [
    (b"%d %s" % (len(RFC5424_EXAMPLE), RFC5424_EXAMPLE), [RFC5424_EXAMPLE]),
    (RFC5424_EXAMPLE + b"\n", [RFC5424_EXAMPLE]),
    (b"<13>a\n<13>b\n", [b"<13>a", b"<13>b"]),
    (b"<13>a\r\n<13>b\r\n", [b"<13>a", b"<13>b"]),
    (b"<13>a\x00<13>b\x00", [b"<13>a", b"<13>b"]),
    (b"6 <13>a\n<13>b\n", [b"<13>a\n", b"<13>b"]),  # LF inside an octet-counted frame
    (b"<13>a\n5 <13>b6 <13>c\n", [b"<13>a", b"<13>b", b"<13>c\n"]),  # mixed per frame
    (b"\n\n<13>a\n\r\n", [b"<13>a"]),  # stray trailers
    (b"<13>partial", []),
    (b"12 <13>short", []),
])
def test_frames(stream, frames):
    assert StreamDecoder().feed(stream) == frames


def test_same_frames_one_byte_at_a_time():
    stream = b"<13>a\r\n5 <13>b<13>c\x00" + b"%d %s" % (len(RFC5424_EXAMPLE), RFC5424_EXAMPLE)
    whole = StreamDecoder().feed(stream)
    assert feed_all(StreamDecoder(), [stream[i:i + 1] for i in range(len(stream))]) == whole
    assert len(whole) == 4


def test_oversized_lf_frame_is_truncated_and_the_stream_goes_on():
    decoder = StreamDecoder(max_frame=10)
    frames = feed_all(decoder, [b"<13>" + b"x" * 30, b"y" * 30 + b"\n<13>next\n"])
    assert frames == [b"<13>xxxxxx", b"<13>next"]
    assert decoder.truncated == 1


def test_an_over_long_octet_counted_frame_is_cut_and_the_stream_goes_on():
    decoder = StreamDecoder(max_frame=10)
    big = b"<13>" + b"x" * 96
    stream = b"100 " + big + b"9 <13>after"
    frames = feed_all(decoder, [stream[i:i + 7] for i in range(0, len(stream), 7)])
    assert frames == [big[:10], b"<13>after"]
    assert decoder.truncated == 1 and decoder.skipped == 90
    # Nothing of the over-long frame is held in memory past max_frame.
    assert decoder.pending <= 10 + 10


@pytest.mark.parametrize("terminator", [b"\n", b"\x00", b"\r\n"])
def test_an_over_long_line_costs_only_itself(terminator):
    decoder = StreamDecoder(max_frame=10)
    stream = b"<13>" + b"x" * 96 + terminator + b"<13>after" + terminator
    frames = feed_all(decoder, [stream[i:i + 7] for i in range(0, len(stream), 7)])
    assert frames == [b"<13>xxxxxx", b"<13>after"]
    # The CR before the LF is of the message skipped.
    assert decoder.truncated == 1 and decoder.skipped == 90 + terminator.count(b"\r")


def test_a_line_of_max_frame_bytes_and_its_crlf_is_whole():
    decoder = StreamDecoder(max_frame=10)
    assert decoder.feed(b"<13>456789\r\n<13>next\r\n") == [b"<13>456789", b"<13>next"]
    assert decoder.truncated == 0 and decoder.skipped == 0


@pytest.mark.parametrize("line", [
    b"2026-11-25 10:00:00 gw1 Engine: Startup.",  # a sender that writes no PRI
    b"0 <13>a leading zero",
    b"12x <13>digits then no space",
    b"1234567890123 more digits than any count",
    b"99999999999",
    b"60000 is a number: no PRI follows it",
    b"1 2026-12-06T10:00:00Z gw app - - - an RFC 5424 header without its PRI",
])
def test_a_line_that_is_no_octet_count_is_lf_framed_and_the_stream_goes_on(line):
    decoder = StreamDecoder(max_frame=65536)
    stream = b"<13>before\n5 <13>x" + line + b"\n<13>later\n7 <13>end"
    whole = decoder.feed(stream)
    assert whole == [b"<13>before", b"<13>x", line, b"<13>later", b"<13>end"]
    assert decoder.misframed == 1 and decoder.truncated == 0
    # The same one byte at a time.
    one_by_one = StreamDecoder(max_frame=65536)
    assert feed_all(one_by_one, [stream[i:i + 1] for i in range(len(stream))]) == whole
    assert one_by_one.misframed == 1


def test_a_stream_of_lines_without_pri_loses_none():
    lines = [b"2026-11-25 10:00:%02d gw1 Engine: Startup." % i for i in range(60)]
    decoder = StreamDecoder()
    assert decoder.feed(b"\n".join(lines) + b"\n") == lines


def test_digits_at_the_end_of_the_stream_are_a_message():
    decoder = StreamDecoder()
    assert decoder.feed(b"<13>a\n2026") == [b"<13>a"]
    assert decoder.finish() == [b"2026"]


def test_finish_returns_the_unterminated_last_message():
    decoder = StreamDecoder()
    assert decoder.feed(b"<13>a\n<13>last\r") == [b"<13>a"]
    assert decoder.finish() == [b"<13>last"]
    assert decoder.truncated == 0


def test_finish_returns_a_cut_octet_counted_frame_as_truncated():
    decoder = StreamDecoder()
    assert decoder.feed(b"20 <13>only") == []
    assert decoder.finish() == [b"<13>only"]
    assert decoder.truncated == 1


@pytest.mark.parametrize("datagram, message", [
    (b"<13>a", b"<13>a"), (b"<13>a\n", b"<13>a"), (b"<13>a\r\n", b"<13>a"),
    (b"<13>a\x00", b"<13>a"), (b"<13>a\n\n", b"<13>a\n"), (b"", b""),
])
def test_datagram_trailers(datagram, message):
    assert datagram_message(datagram) == message


# A message that LF framing can carry: no LF or NUL, not starting with a digit
# or a trailer, and no CR at its end.
lf_safe = st.binary(min_size=1, max_size=200).filter(
    lambda m: b"\n" not in m and b"\x00" not in m and m[0] not in b"0123456789\r"
    and not m.endswith(b"\r"))
framed = st.one_of(
    st.tuples(st.just("octet"), st.binary(max_size=300).map(lambda m: b"<" + m)),
    st.tuples(st.just("lf"), lf_safe),
)


@settings(max_examples=300)
@given(st.lists(framed, max_size=20), st.data())
def test_any_messages_any_chunking_decode_back(messages, data):
    stream = b"".join(b"%d %s" % (len(m), m) if how == "octet" else m + b"\n" for how, m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)], strict=False)]
    decoder = StreamDecoder()
    assert feed_all(decoder, chunks) == [m for _, m in messages]
    assert decoder.pending == 0


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=100), max_size=10), st.integers(1, 50))
def test_arbitrary_bytes_never_raise(chunks, max_frame):
    decoder = StreamDecoder(max_frame=max_frame)
    for frame in feed_all(decoder, chunks) + decoder.finish():
        assert len(frame) <= max_frame


# Streams made of what framing looks at: counts, spaces, trailers, text.
framing_bytes = st.lists(st.sampled_from([b"0", b"1", b"5", b"9", b" ", b"\n", b"\r", b"\x00", b"<", b"x"]),
                         max_size=60).map(b"".join)


@settings(max_examples=500)
@given(framing_bytes, st.data())
def test_any_stream_decodes_the_same_whatever_the_chunks(stream, data):
    whole = StreamDecoder(max_frame=8)
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunked = StreamDecoder(max_frame=8)
    frames = feed_all(chunked, [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)], strict=False)])
    assert frames == expected
    assert (chunked.truncated, chunked.skipped, chunked.misframed, chunked.pending) == (
        whole.truncated, whole.skipped, whole.misframed, whole.pending)
