"""The common shapes keep their contract with the full reading
(collector/parsing/shapes.py): a message that matches has no header error, its
HOSTNAME is the ``host`` group, its summary is that of ``msg_of``, and
messages with equal keys have equal summaries. Their atomic groups change
no match."""

import itertools
import re
import sys
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kerio import SYSLOG_ENVELOPES, corpus

from collector.parsing import syslog
from collector.parsing.kerio import summarize, summary_in
from collector.parsing.shapes import COMMON_SHAPE, HOST_FIELD, KEY_START, msg_of
from collector_process import REPO

sys.path.insert(0, str(REPO / "bench"))
import corpus as bench_corpus  # noqa: E402

# The same pattern with every atomic group a plain one, and every
# possessive repeat a greedy one: sre may then go back into any of them.
BACKTRACKING_SHAPE = re.compile(re.sub(rb"(?<=[+*?}])\+", b"", COMMON_SHAPE.pattern.replace(b"(?>", b"(?:")))


def span_and_groups(shape):
    return shape and (shape.span(), shape.groups())


def assert_contract(messages):
    """Check every matching message; return how many matched."""
    summaries = defaultdict(dict)
    for raw in messages:
        shape = COMMON_SHAPE.match(raw)
        assert span_and_groups(shape) == span_and_groups(BACKTRACKING_SHAPE.match(raw)), raw
        if shape is None:
            continue
        envelope = syslog.envelope(raw)
        assert envelope.header_error is None, raw
        assert envelope.hostname == shape["host"] == shape.groups()[HOST_FIELD], raw
        assert msg_of(shape) == envelope.msg, raw
        summary = summary_in(envelope)
        assert summarize(msg_of(shape)) == summary, raw
        summaries[shape.groups()[KEY_START:]][summary] = raw
    for key, seen in summaries.items():
        assert len(seen) == 1, (key, seen)
    return sum(1 for raw in messages if COMMON_SHAPE.match(raw))


def test_corpus_in_every_envelope():
    lines = [param.values[1] for param in corpus()]
    messages = [envelope % line for line in lines for envelope in SYSLOG_ENVELOPES]
    assert assert_contract(messages) > len(lines)


def test_the_benchmark_mix_takes_the_common_shapes():
    # Kerio's own wording in both dialects: if these stop matching, every
    # message is read in full again, correct but several times slower.
    messages = bench_corpus.messages(5000)
    assert assert_contract(messages) == len(messages)


# Label fields: drawn once per example, so that messages share keys.
TEMPLATES = {
    "packet": "Anti-Spoofing: Packet {direction} {interface}, proto:{proto}, len:{length}, "
              "ip/port:{a} {arrow} {b}{tcp}{tail}",
    "dropped": "{{pktdrop}} packet dropped: Anti-spoofing ({direction} {interface}, proto:{proto}, len:{length}, "
               "{a} {arrow} {b}{tcp}){tail}",
    "ips": "IPS: {action}, severity: {severity}, Rule ID: {rule_id} {rule_name}, proto:{ips_proto}, "
           "ip/port:{a} {arrow} {b}{tail}",
    "auth": "Authentication: {service}: Client: {client}: {reason}{tail}",
    "ftp": "FTP: {kind}: client: {client}, server: {server}, command:{detail}{tail}",
    "engine": "Engine: {event}{tail}",
    "other": "{other}{tail}",
}
LABELS = {
    "direction": ["from", "to"],
    "interface": ["LAN", "Internet 2 - Backup", "a, b", "x, proto:UDP", "é", ""],
    "proto": ["TCP", "UDP", "ICMP", "tcp", "", "GRE"],
    "action": ["Packet drop", "Alert"],
    "severity": ["High", " low ", "Critical", ""],
    "service": ["WebAdmin", "HTTP Proxy", "Admin", "a: b"],
    "reason": ["Invalid password for user admin", "User x doesn't exist", " ", "\u0085", "x: y", ""],
    "kind": ["Bounce attack attempt", "Malicious server reply"],
    "event": ["Startup.", "Startup", "Shutdown", "Startup.x"],
    "other": ["PERMIT 'Local traffic'", "{pktdrop} packet dropped: Traffic rule: x", " Anti-Spoofing: Packet",
              "(3004) Authentication subsystem warning", "Anti-spoofing", "\xef\xbb\xbfIPS: x", ""],
}
# Fields no label is read from: values Kerio writes, and look-alikes that
# the full reading refuses or reads differently. Each message takes one or
# two look-alikes, so that most messages of an example match.
ENDPOINT = ["10.1.2.3:80", "10.1.2.3", "192.168.255.254:65535", "010.001.002.003:0"], [
    "256.1.2.3:80", "10.1.2.3:65536", "10.1.2.3:", "1.2.3", "[2001:db8::1]:80", "10.1.2.3:80é",
    "10.1.2.3:80\u00a0", "10.1.2.3:8O", "10.1.2.3:80,", "10.1.2.3:80)", "10.1.2.3:80(host)"]
UNKEYED = {
    "header": ([
        "<116>1 2026-11-25T10:00:00+01:00 {host} security - - - ",
        "<0>1 2026-11-25T10:00:00.123456Z {host} - - - - \ufeff",
        "<191>1 - {host} a b c - ",
        "<116>1 2026-11-25T10:00:00Z {host} kerio\tcontrol \x85\x00 \xa0 - ",
        "<116>Nov 25 10:00:00 {host} security: ",
        "<116>Nov  5 23:59:59 {host} kerio[12]:",
    ], [
        "<192>1 2026-11-25T10:00:00Z {host} a b c - ",
        "<013>1 2026-11-25T10:00:00Z {host} a b c - ",
        "<116>1 2023-02-29T10:00:00Z {host} a b c - ",
        "<116>1 2026-11-25T10:00:00+24:00 {host} a b c - ",
        "<116>1 0000-11-25T10:00:00Z {host} a b c - ",
        "<116>1 2026-11-25T10:00:00Z {host} a b c [x@1 a=\"b\"] ",
        "<116>1 2026-11-25T10:00:00Z {host} a b c -",
        "<116>Feb 30 10:00:00 {host} x: ",
        "<116>Nov 25 24:00:00 {host} x: ",
        "<116>Nov 25 10:00:00  {host} x: ",
        "<116>Nov 25 10:00:00.5 {host} x: ",
        "<116>Nov 25 10:00:00 {host} Anti-Spoofing: ",
        "<116>Nov 25 10:00:00 {host} IPS[1]: ",
        "<116>Nov 25 10:00:00 {host} Engine: ",
        "<116>Nov 25 10:00:00 {host} ",
        "<116>Nov 25 10:00:00 ",
        "",
    ]),
    "host": (["fw-1", "fw-2"], ["-", "fw:1", "[fw]", "fw\t1", "fwé", "sshd[1]:"]),
    "stamp": (["", "[25/Nov/2026 10:01:02] ", "[01/Jan/1999 00:00:00]"], [
        "[29/Feb/2023 10:01:02] ", "[31/Apr/2026 10:00:00] ", "[28/Feb/0000 10:00:00] ",
        "[25/Xyz/2026 10:00:00] ", "[25/Nov/2026 24:00:00] ", "[not a stamp] ", "[25/Nov/2026 10:01:02]  "]),
    "a": ENDPOINT, "b": ENDPOINT,
    "client": (["10.1.2.3", "255.255.255.255"], ["256.1.2.3", "10.1.2", "::1", "10.1.2.3 ", "10.1.2.3:1"]),
    "server": (["10.1.2.4"], ["10.1.2.3,", "10.1.2.256"]),
    "n": (["0", "48", "4294967295"], ["", "x", "٣", "-1"]),
    "length": (["48", "0"], ["", "x", "٣", "-1"]),
    "arrow": (["->", ">"], ["-->", "=>"]),
    "tail": (["", " seq=5"], [")", ") ", ")\r\n", "\n", "\x0c", " ", "\n)", ")\x0b", "é", "\r"]),
    "tcp": ([", flags: SYN, seq:{n} ack:0, win:16384, tcplen:0", ", flags: ACK PSH, seq:1 ack:{n}, win:1, tcplen:7"], [
        ", flags:SYN , seq:{n} ack:0, win:1, tcplen:0", ", seq:{n} ack:0", "",
        ", flags: SYN, seq:{n} ack:0, win:16384", ", flags: syn, seq:{n} ack:0, win:1, tcplen:0"]),
    "ips_proto": (["TCP", "ICMP"], ["", "a b", "x,y"]),
    "rule_id": (["1:2010575", "1:2100366"], ["1:2,3", "é", "", "1:2\u00a0x", "1:2\tx"]),
    "rule_name": (["ET TROJAN x", "GPL ICMP_INFO PING", "p2p", ""], ["a, b", "x proto:y", "é p", "x\n"]),
    "detail": ([" PORT 1,2", " 227 Entering"], ["", " ", "\tX", "  ", ":x"]),
}


def message(template, labels, fields):
    fields = dict(fields)
    header = fields.pop("header").format(host=fields.pop("host"))
    fields["tcp"] = fields["tcp"].format(n=fields["n"])
    return (header + fields.pop("stamp") + template.format(**labels, **fields)).encode()


def names_in(template, names):
    return sorted(name for name in names if f"{{{name}}}" in template + "{header}{host}{stamp}{n}")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_single_look_alike_keeps_the_contract(name):
    # For each choice of labels, a message of Kerio's own fields, and one
    # message for each other value of each field that no label is read from.
    # All in one check: a key that leaves out a label then pairs messages
    # that differ in that label's value.
    template = TEMPLATES[name]
    label_names = names_in(template, LABELS)
    fields = {field: values[0][0] for field, values in UNKEYED.items()}
    messages = []
    for chosen in itertools.product(*(LABELS[label] for label in label_names)):
        labels = dict(zip(label_names, chosen, strict=True))
        messages.append(message(template, labels, fields))
        for field in names_in(template, UNKEYED):
            good, odd = UNKEYED[field]
            messages += [message(template, labels, {**fields, field: value}) for value in good[1:] + odd]
    assert assert_contract(messages)


@st.composite
def messages_of_one_shape(draw):
    template = TEMPLATES[draw(st.sampled_from(sorted(TEMPLATES)))]
    labels = {name: draw(st.sampled_from(values)) for name, values in LABELS.items()}
    fields_used = names_in(template, UNKEYED)
    messages = []
    for _ in range(draw(st.integers(2, 8))):
        odd = draw(st.sets(st.sampled_from(fields_used), max_size=3))
        fields = {name: draw(st.sampled_from(values[name in odd])) for name, values in UNKEYED.items()}
        messages.append(message(template, labels, fields))
    return messages


@settings(max_examples=1000, deadline=None)
@given(messages_of_one_shape())
def test_messages_with_equal_keys_have_equal_summaries(messages):
    assert_contract(messages)


SIGNIFICANT = b" ,:()[]-.>\n\r\t\x0b0129apP\xef\xc2\xa0"


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(bench_corpus.messages(200, seed=7)), st.data())
def test_one_changed_byte_keeps_the_contract(message, data):
    # A message of a common shape and copies with one byte changed, inserted
    # or removed: where a copy keeps the key, it keeps the summary.
    copies = [message]
    for _ in range(6):
        at = data.draw(st.integers(0, len(message)))
        byte = bytes([data.draw(st.sampled_from(SIGNIFICANT))])
        copies.append(data.draw(st.sampled_from([
            message[:at] + byte + message[at + 1:], message[:at] + byte + message[at:],
            message[:at] + message[at + 1:]])))
    assert_contract(copies)
