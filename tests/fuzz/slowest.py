"""Search for the messages of at most 64 KiB that take longest to classify.

    python tests/fuzz/slowest.py [--seconds 300] [--seed 1]

A message is a prefix (a syslog header and the start of a record), a unit
repeated to fill 64 KiB, and a suffix (the rest of the record). The search
starts from every record's wording with units made of the grammar's own
punctuation, then mutates the slowest it has found (another unit, a token
added to it, another header or record), keeping a mutation when it is
slower: a fuzzer that maximises time rather than coverage. It prints the
slowest, in the form ``tests/worst_cases.py`` keeps them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worst_cases import message  # noqa: E402

from collector.parsing import kerio, syslog  # noqa: E402
from collector.parsing.shapes import COMMON_SHAPE  # noqa: E402

HEADERS = [b"<13>1 - gw app - - - ", b"<13>Nov 25 12:00:00 gw kernel: ", b"[17/Jul/2008 11:46:38] ", b"",
           b"<13>1 2026-11-25T10:00:00Z gw app - - [a b=\"c\"] ", b"<13>Nov 25 12:00:00 gw "]
# Each record's wording, with {} where the filler goes.
RECORDS = [
    "Anti-Spoofing: Packet from {}, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2, flags: SYN, "
    "seq:1 ack:0, win:1, tcplen:0",
    "Anti-Spoofing: Packet from LAN, proto:{}",
    "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:{}",
    "Anti-Spoofing: Packet from LAN, proto:TCP, len:48, ip/port:1.2.3.4:1 -> 5.6.7.8:2{}",
    "{{pktdrop}} packet dropped: Anti-spoofing (from {}",
    "FTP: Bounce attack attempt: client: {}, server: 5.6.7.8, command: PORT 1",
    "FTP: Malicious server reply: client: 1.2.3.4, server: 5.6.7.8, response: {}",
    "Authentication: {}: Client: 1.2.3.4: wrong password",
    "Authentication: WebAdmin: Client: {}",
    "Authentication: WebAdmin: Client: 1.2.3.4: {}",
    "IPS: Alert, severity: {}",
    "IPS: Alert, severity: Low, Rule ID: {}",
    "IPS: Alert, severity: Low, Rule ID: 1:1 {}, proto:TCP, ip/port:1.2.3.4:1 > 5.6.7.8:2",
    "IPS: Alert, severity: Low, Rule ID: 1:1 x, proto:TCP, ip/port:{}",
    "Engine: {}",
    "{}",
]
TOKENS = [", ", ",", " ", ": ", ":", "proto:", ", proto:", "ip/port:", " -> ", " > ", "(", ")", ",user:", "user ",
          "for user ", "Client: ", "client: ", ", server: ", "1", "1.", "1:", "::", "[", "]", "=", "\"", "\\",
          "Rule ID: ", "severity: ", "from ", "to ", "len:", "flags: ", "seq:1 ", "SYN ", "p", "a", "\t", "\n",
          "Anti-Spoofing: ", "IPS: ", "Authentication: ", "FTP: ", "Engine: ", "password", "doesn't exist"]


def cost(data: bytes, repeat: int = 3) -> float:
    """Seconds to read ``data`` as the collector does at most (its shape
    looked for, then a full reading), the least of ``repeat`` tries."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        COMMON_SHAPE.match(data)
        kerio.summary_in(syslog.envelope(data))
        best = min(best, time.perf_counter() - started)
    return best


def search(seconds: float, rng: random.Random) -> list[tuple[float, int, int, str]]:
    found: dict[tuple[int, int, str], float] = {}
    for h in range(len(HEADERS)):
        for r in range(len(RECORDS)):
            for token in TOKENS:
                found[(h, r, token)] = cost(message(HEADERS[h], RECORDS[r], token))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        best = sorted(found.items(), key=lambda item: -item[1])[:20]
        (h, r, unit), _ = rng.choice(best)
        choice = rng.random()
        if choice < 0.4:
            unit = unit + rng.choice(TOKENS)
        elif choice < 0.6:
            unit = rng.choice(TOKENS) + unit
        elif choice < 0.8:
            h = rng.randrange(len(HEADERS))
        else:
            r = rng.randrange(len(RECORDS))
        unit = unit[:24]
        key = (h, r, unit)
        if key not in found:
            found[key] = cost(message(HEADERS[h], RECORDS[r], unit))
    return sorted(((t, h, r, u) for (h, r, u), t in found.items()), reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for seconds, h, r, unit in search(args.seconds, random.Random(args.seed))[:args.top]:
        print(f"{seconds * 1e3:6.3f} ms  ({HEADERS[h]!r}, {RECORDS[r]!r}, {unit!r}),")


if __name__ == "__main__":
    main()
