"""An atheris fuzz target for the pure parsers: TCP framing, syslog headers,
Kerio records, the common shapes and the archive line format.

    python tests/fuzz/fuzz_parsers.py {framing|syslog|kerio|shapes|archive} -max_total_time=60

Any exception, or a broken invariant (an assertion), is a crash.
"""

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from collector.archive.line import format_batch, parse_line
    from collector.parsing import kerio, syslog
    from collector.parsing.framing import StreamDecoder
    from collector.parsing.shapes import COMMON_SHAPE, HOST_FIELD, KEY_START, msg_of
    from collector.records import RecordSummary


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
    assert (whole.truncated, whole.skipped, whole.misframed) == (
        pieces.truncated, pieces.skipped, pieces.misframed)


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


# Messages to change: the test corpus in both syslog dialects.
_CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "kerio-security.txt"
_LINES = [line.partition(" | ")[2].encode() for line in _CORPUS.read_text(encoding="utf-8").splitlines()
          if not line.startswith("#")]
_SEEDS = [envelope % line for line in _LINES for envelope in (
    b"<116>1 2026-11-25T10:00:00+01:00 fw-1 security - - - %s", b"<116>Nov 25 10:00:00 fw-1 security: %s")]
# What the shapes tell apart, or must not.
_TOKENS = [b"", b" ", b"  ", b",", b", ", b":", b"-", b"- ", b"(", b")", b"[", b"]", b"\n", b"\r", b"\t", b"\x0b",
           b"0", b"9", b"256", b"65536", b".", b">", b"->", b"p", b"proto:", b"proto:TCP", b"TCP", b"tcp", b"x",
           b"\xef\xbb\xbf", b"\xc2\xa0", b"\xc2\x85", b"\xe2\x80\xa8", b"\xff", b"Engine: ", b"IPS: "]
# The summary first read for each key, across all inputs of the run.
_SUMMARIES: dict[tuple[bytes | None, ...], tuple[RecordSummary, bytes]] = {}


def shapes(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    message = _SEEDS[fdp.ConsumeIntInRange(0, len(_SEEDS) - 1)]
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        at = fdp.ConsumeIntInRange(0, len(message))
        removed = fdp.ConsumeIntInRange(0, 4)
        message = message[:at] + fdp.PickValueInList(_TOKENS) + message[at + removed:]
    shape = COMMON_SHAPE.match(message)
    if shape is None:
        return
    # The contract of collector/parsing/shapes.py.
    envelope = syslog.envelope(message)
    fields = shape.groups()  # as the pipeline reads them
    assert envelope.header_error is None and envelope.hostname == fields[HOST_FIELD], message
    summary = kerio.summary_in(envelope)
    assert kerio.summarize(msg_of(shape)) == summary, message
    first, example = _SUMMARIES.setdefault(fields[KEY_START:], (summary, message))
    assert summary == first, (message, example)


def archive(data: bytes) -> None:
    [(_, line)] = format_batch(b"2026-11-25T10:00:00.000000Z", [("gw", b"192.0.2.1:514", [data])])
    assert line.count(b"\n") == 1
    assert parse_line(line).message == data


TARGETS = {"framing": framing, "syslog": header, "kerio": record, "shapes": shapes, "archive": archive}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
