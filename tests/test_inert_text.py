"""What senders put in messages and host names stays inert in a real twistd:
escape sequences never reach the archive files, nor a terminal running
``syslog-collector archive cat``, and a HOSTNAME never becomes a directory
named like a command's option."""

import os
import re
import signal
import subprocess

from collector.parsing.framing import StreamDecoder
from collector_process import CollectorProcess, collector_environment, syslog_collector

# Sets the terminal's title, rings its bell, clears its screen; then a C1 CSI
# (U+009B, C2 9B in UTF-8) that turns text red, and DEL.
HOSTILE = (b"<13>1 - inert app - - - \x1b]0;pwned\x07\x1b[2J" + "\u009b31m red".encode()
           + b" \x7f\x01 tab\tkept \xff \\x1b")
# A byte a terminal acts on: C0 controls but TAB and LF, DEL, or a C1 control in UTF-8.
ACTIVE = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def archive_cat(root, host, *args):
    return subprocess.run([syslog_collector(), "archive", "cat", host,
                           "--archive-dir", str(root), *args],
                          capture_output=True, env=collector_environment(), timeout=60)


def test_escape_sequences_are_archived_and_shown_inert_and_replayed_exactly(tmp_path):
    option_like = [b"<13>1 - -rf app - - - rfc 5424", b"<13>Nov 25 10:00:00 -rf app: bsd"]
    process = CollectorProcess(tmp_path)
    try:
        process.send_udp([HOSTILE, *option_like])
        process.wait_for("syslog_collector_received_messages_total", 1, host="inert", transport="udp")
        process.wait_for("syslog_collector_received_messages_total", 2, host="127.0.0.1", transport="udp")
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()
    root = process.archive

    [day_file] = (root / "inert").iterdir()
    data = day_file.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert ACTIVE.search(data) is None, data
    assert b"\t" in data

    shown = archive_cat(root, "inert")
    assert shown.returncode == 0, shown.stderr
    assert ACTIVE.search(shown.stdout) is None, shown.stdout
    assert shown.stdout.count(b"\n") == 1
    assert ACTIVE.search(shown.stderr) is None
    as_json = archive_cat(root, "inert", "--format", "json")
    assert as_json.returncode == 0 and ACTIVE.search(as_json.stdout) is None, as_json.stdout

    replayed = archive_cat(root, "inert", "--format", "octet")
    assert replayed.returncode == 0, replayed.stderr
    assert StreamDecoder().feed(replayed.stdout) == [HOSTILE]

    # "-rf" is no host tag: its messages are filed under the sender's address.
    assert not any(name.startswith("-") for name in os.listdir(root))
    assert sorted(process.archived("127.0.0.1")) == sorted(option_like)
