"""UDP loss while Prometheus scrapes: a real collector under a steady UDP load.

    python bench/scrapes.py [--rate 30000] [--hosts 1000] [--messages 600000] [--every 2] [--repeat 3]

Starts a collector, has every firewall hostname seen once (so that all
their series exist), then sends the load of bench/loadgen.py over UDP at a
fixed rate twice: without scrapes, and scraping /metrics every ``--every``
seconds. Prints the datagrams the kernel dropped in each
(``syslog_collector_udp_receive_drops_total``) and how long a scrape took,
for each run and their medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
from collector_process import CollectorProcess  # noqa: E402

SENDERS = 2


def drops(collector: CollectorProcess) -> float:
    address = f"127.0.0.1:{collector.ports['udp']}"
    return collector.sample("syslog_collector_udp_receive_drops_total", address=address) or 0.0


def send(collector: CollectorProcess, messages: list[bytes], rate: float,
         every: float | None) -> tuple[float, list[float]]:
    """Send at ``rate``, scraping every ``every`` seconds if given; the drops and the scrapes' seconds."""
    before = drops(collector)
    scrapes: list[float] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.wait(every):
            start = time.perf_counter()
            collector.scrape()
            scrapes.append(time.perf_counter() - start)

    scraper = threading.Thread(target=scrape) if every else None
    if scraper is not None:
        scraper.start()
    loadgen.send(loadgen.frame(messages, "udp"), "udp", collector.ports["udp"], SENDERS, rate)
    done.set()
    if scraper is not None:
        scraper.join()
    time.sleep(2)  # what is still in the socket buffer is read, or dropped
    return drops(collector) - before, scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=600_000)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between scrapes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    messages = loadgen.build(args.messages, args.hosts)
    quiet, scraped, seconds = [], [], []
    for run in range(args.repeat):
        workdir = Path(tempfile.mkdtemp(prefix="collector-scrapes-"))
        config = workdir / "collector.toml"
        config.write_text("[limits]\nmax_messages_per_second_per_sender = 0\n"
                          f"[metrics]\nmax_hosts = {args.hosts + 100}\n")
        collector = CollectorProcess(workdir, config=str(config))
        try:
            loadgen.send(loadgen.frame(messages[:args.hosts], "udp"), "udp", collector.ports["udp"], 1, 5000)
            time.sleep(2)
            dropped, _ = send(collector, messages, args.rate, None)
            quiet.append(dropped)
            dropped, took = send(collector, messages, args.rate, args.every)
            scraped.append(dropped)
            seconds.append(statistics.median(took))
            print(f"run {run + 1}: {len(took)} scrapes of {statistics.median(took):.2f} s (median); "
                  f"dropped {quiet[-1]:,.0f} without scrapes, {scraped[-1]:,.0f} with them")
        finally:
            collector.kill()
    print(f"{args.messages:,} datagrams at {args.rate:,.0f}/s from {args.hosts} hosts, a scrape every "
          f"{args.every:g} s; medians of {args.repeat} runs: dropped {statistics.median(quiet):,.0f} "
          f"without scrapes, {statistics.median(scraped):,.0f} with them; a scrape took "
          f"{statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
