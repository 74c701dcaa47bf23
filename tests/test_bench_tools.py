"""The benchmark's load and its loss accounting, which the figures rest on."""

import socket
import sys
from functools import partial

import pytest_twisted
from twisted.internet import threads

from collector import config
from collector.parsing import syslog
from collector.parsing.framing import StreamDecoder
from collector.parsing.kerio import record_in
from collector.records import RecordType
from collector_process import REPO

sys.path.insert(0, str(REPO / "bench"))
import loadgen  # noqa: E402


def test_messages_are_numbered_rfc5424_with_every_record_type():
    messages = loadgen.build(5000, hosts=7)
    parsed = [syslog.parse(m) for m in messages]
    assert all(p.header_error is None for p in parsed)
    assert [p.msgid for p in parsed[:3]] == ["s0", "s1", "s2"]
    assert len({p.hostname for p in parsed}) == 7
    assert {record_in(p).type for p in parsed} == set(RecordType)


def test_framed_load_decodes_back():
    messages = loadgen.build(300, hosts=3)
    for transport in ("tcp-lf", "tcp-octet"):
        assert StreamDecoder().feed(b"".join(loadgen.frame(messages, transport))) == messages


def test_loss_and_duplicates_are_counted_by_sequence_number():
    messages = loadgen.build(10, hosts=2)
    written = b"\n".join(messages[:4] + messages[6:] + messages[8:9])
    seen = bytearray(10)
    assert loadgen.count_sequences(written, seen) == 1
    assert [i for i, s in enumerate(seen) if not s] == [4, 5]


def test_udp_load_is_dealt_out_to_each_connection_in_turn():
    # More connections than sender threads: some threads send over several.
    connections = loadgen.SENDER_THREADS + 2
    messages = loadgen.build(60, hosts=3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        loadgen.send(loadgen.frame(messages, "udp"), "udp", receiver.getsockname()[1], connections)
        receiver.settimeout(5)
        by_sender: dict[tuple[str, int], list[bytes]] = {}
        for _ in messages:
            datagram, sender = receiver.recvfrom(65536)
            by_sender.setdefault(sender, []).append(datagram)
    assert sorted(by_sender.values()) == sorted(messages[c::connections] for c in range(connections))


def test_tcp_load_is_dealt_out_to_each_connection_in_turn():
    connections = loadgen.SENDER_THREADS + 2
    messages = loadgen.build(60, hosts=3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(connections)
        # Small enough for the kernel's buffers: sent before anything is read.
        loadgen.send(loadgen.frame(messages, "tcp-octet"), "tcp-octet", listener.getsockname()[1], connections)
        listener.settimeout(5)
        streams = []
        for _ in range(connections):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                streams.append(b"".join(iter(partial(conn.recv, 65536), b"")))
    assert (sorted(StreamDecoder().feed(stream) for stream in streams)
            == sorted(messages[c::connections] for c in range(connections)))


def test_compare_writes_the_settings_given_into_the_collectors_config(tmp_path, monkeypatch):
    import compare

    monkeypatch.setattr(compare.Collector, "settings", {"listen": {"udp_read_interval_seconds": "0"},
                                                        "archive": {"flush_interval_seconds": "0.5"}})
    collector = compare.CollectorTwoWorkers(tmp_path, 5514, "udp")
    command = collector.command()
    settings = config.load(command[command.index("--config") + 1])
    assert settings.listen.udp_read_interval_seconds == 0.0
    assert settings.archive.flush_interval_seconds == 0.5
    # The default rate limit: a relay's load from one address must lose nothing.
    assert settings.limits.max_messages_per_second_per_sender == 200000
    assert settings.workers.count == 2


@pytest_twisted.ensureDeferred
async def test_flush_bench_times_each_case_on_a_real_archive():
    import flush
    from twisted.internet import reactor

    times = await flush.flush_times(reactor, hosts=3, lines=2, run_in_thread=threads.deferToThread)
    assert len(times) == len(flush.CASES)
    assert all(written > 0 and held > 0 for written, held in times)
