"""An atheris fuzz target for the pure parsers: TCP framing, syslog headers,
Kerio records and the archive line format.

    python tests/fuzz/fuzz_parsers.py {framing|syslog|kerio|archive} -max_total_time=60

Any exception, or a broken invariant (an assertion), is a crash.
"""

import sys

import atheris

with atheris.instrument_imports():
    from collector import kerio, syslog
    from collector.archive_line import format_lines, parse_line
    from collector.framing import StreamDecoder


def framing(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_frame = fdp.ConsumeIntInRange(1, 512)
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 8)))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    whole = StreamDecoder(max_frame)
    expected = whole.feed(stream) + whole.finish()
    pieces = StreamDecoder(max_frame)
    frames = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=False):
        frames += pieces.feed(stream[start:end])
    frames += pieces.finish()
    assert frames == expected, (frames, expected)
    assert all(len(frame) <= max_frame for frame in frames)
    assert (whole.error is None) == (pieces.error is None)


def header(data: bytes) -> None:
    message = syslog.parse(data)
    assert message.msg in data
    envelope = syslog.envelope(data)
    # The collector reads the envelope: it must agree with the message.
    assert (envelope.msg, envelope.content, envelope.header_error) == (
        message.msg, message.content, message.header_error), data
    assert kerio.summary_in(envelope).type is kerio.record_in(message).type


def record(data: bytes) -> None:
    record = kerio.parse_record(data)
    # The collector counts the summary: it must agree with the record.
    summary = kerio.summarize(data)
    assert (summary.type, summary.defective) == (record.type, bool(record.defects)), data


def archive(data: bytes) -> None:
    line = format_lines(b"2026-11-25T10:00:00.000000Z", b"192.0.2.1:514", [data])
    assert line.count(b"\n") == 1
    assert parse_line(line).message == data


TARGETS = {"framing": framing, "syslog": header, "kerio": record, "archive": archive}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
