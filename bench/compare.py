"""The collector against rsyslog and syslog-ng doing the same job, on the same load.

    bash bench/setup.sh          # once: rsyslog, and syslog-ng unpacked beside it
    python bench/compare.py [--transport tcp-octet] [--messages 1000000] [--repeat 3]

Each system receives the same messages (bench/loadgen.py: a realistic Kerio
mix over 50 firewall hostnames, each message numbered), classifies each line
by Kerio record type, counts per host and type where it can, and writes
per-host files:

- collector: a real ``twistd -n syslog-collector`` (framing, syslog and Kerio
  parsing, per-host archive, metrics), from the package as ``pip install .``
  builds it, with its per-message path compiled (setup.py); collector-2 the
  same with two workers; collector-pure the source tree, plain Python;
- rsyslog: imptcp/imudp, a regex per record type, ``dyn_stats`` per host and
  type, per-host files (``dynaFile``);
- rsyslog-plain: per-host files only, no classification: the upper bound of a
  C syslog daemon;
- syslog-ng: a regex per record type in ``if``/``elif`` branches, per-host files.

For each it prints messages/s (from the first message sent to the last one
written), loss and duplicates (counted from the files by sequence number),
CPU seconds per million messages and peak RSS; medians of the runs, and the
collector's throughput ratio to each (for collector-2, two workers' ratio to
one). Since the load generator runs on the
same cores, it also prints the generator's own CPU seconds per million and
how much of the machine was left idle during the run: a system that leaves
no core idle is limited by the machine, not only by its own cost.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import loadgen  # noqa: E402
from collector.archive.files import day_files  # noqa: E402
from collector.archive.reader import read_messages  # noqa: E402

SYSLOG_NG = BENCH / ".tools" / "syslog-ng"
TICKS = os.sysconf("SC_CLK_TCK")

# One regex per record type, as an admin would write them (POSIX ERE; PCRE
# takes them as they are).
TYPE_PATTERNS = [
    ("anti_spoofing",
     r"(Anti-Spoofing: Packet (from|to) .*, proto:|\{pktdrop\} packet dropped: Anti-spoofing \((from|to) )"),
    ("ftp_bounce_attack", r"FTP: Bounce attack attempt: client: [^,]+, server: "),
    ("ftp_malicious_reply", r"FTP: Malicious server reply: client: [^,]+, server: "),
    ("auth_failure", r"Authentication: .+: Client: [^ ]+: ."),
    ("engine_startup", r"Engine: Startup\.?$"),
    ("engine_shutdown", r"Engine: Shutdown\.?$"),
    ("ips", r"IPS: (Packet drop|Alert), severity: "),
]


def free_port() -> int:
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return port


def port_bound(port: int, transport: str) -> bool:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (worker processes count too)."""
    pids = [pid]
    for parent in pids:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except FileNotFoundError:
            continue
        pids += [int(child) for child in children]
    return pids


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds used so far by a process and by each of its descendants."""
    used = {}
    for member in process_tree(pid):
        stat = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        used[member] = (int(stat[11]) + int(stat[12])) / TICKS
    return used


def machine_times() -> tuple[int, int]:
    """Ticks of all cores since boot: idle (with I/O wait) and in all."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def own_cpu_seconds() -> float:
    """CPU seconds used by this process so far, all its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss(pid: int) -> int:
    """Peak RSS, summed over the process and its descendants."""
    total = 0
    for member in process_tree(pid):
        status = Path(f"/proc/{member}/status").read_text()
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    return total


def output_size(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


@dataclass
class Result:
    rate: float
    loss: float
    duplicates: int
    cpu_per_million: float
    peak_rss: int
    # Of the CPU the system used, the share of its busiest process: with
    # workers, how evenly the kernel spread the connections.
    busiest_share: float
    # The load generator's CPU (it shares the cores), and the share of all
    # cores' time that nobody used from the first message sent to the last written.
    sender_cpu_per_million: float
    machine_idle: float


class System:
    name = ""

    def __init__(self, workdir: Path, port: int, transport: str) -> None:
        self.workdir = workdir
        self.out = workdir / "out"
        self.out.mkdir(parents=True)
        self.port = port
        self.transport = transport
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(),
                                        stdout=open(self.workdir / "stdout.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not port_bound(self.port, self.transport):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: "
                                   + (self.workdir / "stdout.log").read_text(errors="replace")[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def written(self) -> bytes:
        """Everything the system wrote, for counting sequence numbers."""
        chunks = []
        for root, _, files in os.walk(self.out):
            for name in files:
                chunks.append(Path(root, name).read_bytes())
        return b"\n".join(chunks)


class Collector(System):
    name = "collector"
    workers = 1
    # Where the package built by build_package() lies, and settings given
    # with --set ({section: {key: TOML value}}); main() sets both.
    package: Path | None = None
    settings: dict[str, dict[str, str]] = {}
    compiled = True

    def command(self) -> list[str]:
        config = self.workdir / "collector.toml"
        # The defaults otherwise, the per-sender rate limit included: every
        # connection comes from one address, as from a relay.
        settings = {"archive": {"flush_interval_seconds": "0.1"},
                    "workers": {"count": str(self.workers)}}
        listen = f"127.0.0.1:{self.port}"
        if self.transport == "tls-octet":
            certificate, key = self_signed(self.workdir)
            settings["tls"] = {"enabled": "true", "listen": f'"{listen}"',
                               "certificate": f'"{certificate}"', "key": f'"{key}"'}
        for section, values in self.settings.items():
            settings.setdefault(section, {}).update(values)
        config.write_text("".join(f"[{section}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())
                                  for section, values in settings.items()))
        return [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=",
                f"--logfile={self.workdir / 'collector.log'}", "syslog-collector", "--config", str(config),
                "--udp", listen if self.transport == "udp" else "",
                "--tcp", listen if self.transport.startswith("tcp") else "",
                "--metrics", "127.0.0.1:0", "--archive-dir", str(self.out)]

    def environment(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(self.package if self.compiled else REPO))

    def start(self) -> None:
        super().start()
        # The collector says at start-up how its per-message path runs.
        expected = "runs compiled" if self.compiled else "runs as plain Python"
        log = (self.workdir / "collector.log").read_text()
        if f"the per-message path {expected}" not in log:
            self.stop()
            raise RuntimeError(f"{self.name}: the per-message path does not {expected.replace('runs', 'run')}: "
                               + (re.findall(r"the per-message path .*", log) or ["nothing said"])[0])

    def written(self) -> bytes:
        return b"\n".join(m.message for m in read_messages(day_files(self.out)))


class CollectorPure(Collector):
    name = "collector-pure"
    compiled = False


class CollectorTwoWorkers(Collector):
    name = "collector-2"
    workers = 2

    def start(self) -> None:
        super().start()
        # Wait until both workers take their share: over UDP each binds the
        # port, over TCP the supervisor hands each one connections.
        ready = {"udp": r"listening udp on", "tls-octet": r"taking tls connections"}.get(
            self.transport, r"taking tcp connections")
        deadline = time.monotonic() + 30
        while len(re.findall(ready, (self.workdir / "collector.log").read_text())) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second worker did not start")
            time.sleep(0.05)



class Rsyslog(System):
    name = "rsyslog"
    classify = True

    def command(self) -> list[str]:
        if self.transport == "udp":
            inputs = (f'module(load="imudp")\n'
                      f'input(type="imudp" address="127.0.0.1" port="{self.port}" ruleset="job")\n')
        elif self.transport == "tls-octet":
            certificate, key = self_signed(self.workdir)
            inputs = (f'global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{certificate}" '
                      f'DefaultNetstreamDriverCertFile="{certificate}" DefaultNetstreamDriverKeyFile="{key}")\n'
                      'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" '
                      'StreamDriver.AuthMode="anon")\n'
                      f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="job")\n')
        else:
            inputs = (f'module(load="imptcp")\n'
                      f'input(type="imptcp" address="127.0.0.1" port="{self.port}" ruleset="job")\n')
        if self.classify:
            branches = "\n  else ".join(
                f'if re_match($msg, "{_rsyslog_string(pattern)}") then {{ set $!type = "{name}"; }}'
                for name, pattern in TYPE_PATTERNS)
            job = (f'  {branches}\n  else {{ set $!type = "unknown"; }}\n'
                   f'  set $.counted = dyn_inc("kerio", $hostname & "/" & $!type);\n')
            template = '%$!type% %rawmsg%\\n'
        else:
            job = ""
            template = '%rawmsg%\\n'
        config = self.workdir / "rsyslog.conf"
        config.write_text(
            f'global(workDirectory="{self.workdir}" maxMessageSize="64k")\n'
            f'main_queue(queue.type="FixedArray" queue.size="200000" queue.dequeueBatchSize="1024")\n'
            f'{inputs}'
            'dyn_stats(name="kerio" resettable="off" maxCardinality="100000")\n'
            f'template(name="perhost" type="string" string="{self.out}/%hostname%.log")\n'
            f'template(name="line" type="string" string="{template}")\n'
            'ruleset(name="job") {\n'
            f'{job}'
            '  action(type="omfile" dynaFile="perhost" template="line" dynaFileCacheSize="1000" '
            'asyncWriting="on" ioBufferSize="256k" flushOnTXEnd="off" flushInterval="1")\n'
            '}\n')
        rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        check = subprocess.run([rsyslogd, "-N1", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"bad rsyslog config: {check.stderr}")
        return [rsyslogd, "-n", "-iNONE", "-f", str(config)]


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate and key for a TLS receiver of the run, made with openssl."""
    certificate, key = workdir / "cert.pem", workdir / "key.pem"
    if not certificate.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key),
                        "-out", str(certificate)], check=True, capture_output=True)
    return certificate, key


def _rsyslog_string(text: str) -> str:
    # RainerScript strings escape backslashes, and "$" too.
    return text.replace("\\", "\\\\").replace("$", "\\$")


class RsyslogPlain(Rsyslog):
    name = "rsyslog-plain"
    classify = False


class SyslogNg(System):
    name = "syslog-ng"

    def command(self) -> list[str]:
        if self.transport == "udp":
            source = (f'network(ip("127.0.0.1") port({self.port}) transport("udp") flags(syslog-protocol) '
                      'so-rcvbuf(8388608))')
        elif self.transport == "tls-octet":
            raise RuntimeError("syslog-ng is compared over UDP and TCP only")
        elif self.transport == "tcp-lf":
            source = (f'network(ip("127.0.0.1") port({self.port}) transport("tcp") flags(syslog-protocol) '
                      f'max-connections(64) log-iw-size(640000))')
        else:
            source = (f'syslog(ip("127.0.0.1") port({self.port}) transport("tcp") '
                      f'max-connections(64) log-iw-size(640000))')
        branches = "\n    elif ".join(
            f'(message("{pattern.replace(chr(92), chr(92) * 2)}")) {{ rewrite {{ set("{name}" value("type")); }}; }}'
            for name, pattern in TYPE_PATTERNS)
        config = self.workdir / "syslog-ng.conf"
        config.write_text(
            "@version: 3.35\n"
            "options { keep-hostname(yes); chain-hostnames(no); use-dns(no); use-fqdn(no); "
            "flush-lines(1000); log-fifo-size(1000000); stats-level(1); };\n"
            f"source s_net {{ {source}; }};\n"
            f'destination d_host {{ file("{self.out}/${{HOST}}.log" template("${{type}} ${{MSGID}} ${{MSG}}\\n") '
            "create-dirs(yes)); };\n"
            "log {\n  source(s_net);\n"
            f"  if {branches}\n    else {{ rewrite {{ set(\"unknown\" value(\"type\")); }}; }};\n"
            "  destination(d_host);\n};\n")
        return [str(SYSLOG_NG / "usr/sbin/syslog-ng"), "-F", "-f", str(config),
                f"--module-path={SYSLOG_NG / 'usr/lib/syslog-ng/3.38'}",
                "-p", str(self.workdir / "syslog-ng.pid"), "-c", str(self.workdir / "syslog-ng.ctl"),
                f"--persist-file={self.workdir / 'syslog-ng.persist'}"]

    def environment(self) -> dict[str, str]:
        return dict(os.environ, LD_LIBRARY_PATH=str(SYSLOG_NG / "usr/lib/syslog-ng"))


SYSTEMS = {s.name: s for s in (Collector, CollectorTwoWorkers, CollectorPure, Rsyslog, RsyslogPlain, SyslogNg)}


def build_package(target: Path) -> None:
    """Install the package into ``target`` as a user's ``pip install .`` builds it."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--root-user-action=ignore", "--no-deps", "--target", str(target), str(REPO)], check=True)


def run_once(system_class: type[System], wire: list[bytes], transport: str, connections: int,
             rate: float | None) -> Result:
    """One run of ``system`` on ``wire``: the messages as ``loadgen.frame`` gives them."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system_class.name}-"))
    try:
        system = system_class(workdir, free_port(), transport)
        system.start()
        assert system.process is not None
        pid = system.process.pid
        time.sleep(0.5)
        cpu_before = cpu_seconds(pid)
        idle_before, all_before = machine_times()
        start = time.monotonic()
        sender_before = own_cpu_seconds()
        loadgen.send(wire, transport, system.port, connections, rate)
        sender_cpu = own_cpu_seconds() - sender_before
        # Done when the output has stopped growing for two seconds. The
        # machine's times are taken at the last growth, so that those two
        # quiet seconds do not count as idle.
        last_size, last_growth = -1, time.monotonic()
        idle_after, all_after = idle_before, all_before
        while time.monotonic() - last_growth < 2.0:
            size = output_size(system.out)
            if size != last_size:
                last_size, last_growth = size, time.monotonic()
                idle_after, all_after = machine_times()
            time.sleep(0.02)
        elapsed = last_growth - start
        machine_idle = (idle_after - idle_before) / max(1, all_after - all_before)
        used = {member: seconds - cpu_before.get(member, 0.0) for member, seconds in cpu_seconds(pid).items()}
        cpu = sum(used.values())
        rss = peak_rss(pid)
        system.stop()
        seen = bytearray(len(wire))
        duplicates = loadgen.count_sequences(system.written(), seen)
        received = sum(seen)
        return Result(rate=received / elapsed, loss=100.0 * (len(wire) - received) / len(wire),
                      duplicates=duplicates, cpu_per_million=cpu / max(received, 1) * 1e6, peak_rss=rss,
                      busiest_share=max(used.values()) / cpu if cpu else 1.0,
                      sender_cpu_per_million=sender_cpu / len(wire) * 1e6, machine_idle=100.0 * machine_idle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=loadgen.TRANSPORTS, default="tcp-octet")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--rate", type=float, help="messages/s in all (default: as fast as possible)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting of the collector systems, VALUE in TOML "
                             "(e.g. listen.udp_read_interval_seconds=0); may be repeated")
    args = parser.parse_args()
    for setting in args.set:
        name, equals, value = setting.partition("=")
        section, dot, key = name.partition(".")
        if not (equals and dot and key):
            parser.error(f"--set {setting!r}: expected SECTION.KEY=VALUE")
        Collector.settings.setdefault(section, {})[key] = value

    wire = loadgen.frame(loadgen.build(args.messages, args.hosts), args.transport)
    names = [n for n in args.systems.split(",") if n]
    if "syslog-ng" in names and not (SYSLOG_NG / "usr/sbin/syslog-ng").exists():
        sys.exit(f"syslog-ng is not unpacked in {SYSLOG_NG}: run bash bench/setup.sh")
    print(f"{args.messages:,} messages over {args.transport}, {args.connections} connection(s), "
          f"{args.hosts} hosts, rate {args.rate or 'max'}; median of {args.repeat} runs (interleaved)")
    if args.set:
        print("collector settings: " + ", ".join(args.set))
    results: dict[str, list[Result]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-package-") as package:
        Collector.package = Path(package)
        if any(getattr(SYSTEMS[name], "compiled", False) for name in names):
            build_package(Collector.package)
        for _ in range(args.repeat):
            for name in names:  # interleaved, so that drifts in machine load hit all alike
                results[name].append(
                    run_once(SYSTEMS[name], wire, args.transport, args.connections, args.rate))
    medians = {name: Result(*(statistics.median(getattr(r, field.name) for r in runs) for field in fields(Result)))
               for name, runs in results.items()}
    print(f"{'system':15s} {'msgs/s':>10s} {'loss %':>8s} {'dups':>6s} {'CPU s/1M':>9s} {'peak RSS MB':>12s} "
          f"{'sender CPU s/1M':>16s} {'idle %':>7s}")
    for name, m in medians.items():
        print(f"{name:15s} {m.rate:10,.0f} {m.loss:8.3f} {m.duplicates:6.0f} {m.cpu_per_million:9.2f} "
              f"{m.peak_rss / 1e6:12.1f} {m.sender_cpu_per_million:16.2f} {m.machine_idle:7.1f}")
    for name, runs in results.items():
        print(f"{name} runs, msgs/s: " + ", ".join(f"{r.rate:,.0f}" for r in runs)
              + "; loss %: " + ", ".join(f"{r.loss:.3f}" for r in runs))
        if getattr(SYSTEMS[name], "workers", 1) > 1:
            print(f"{name} runs, busiest process's share of the CPU: "
                  + ", ".join(f"{r.busiest_share:.0%}" for r in runs))
    if "collector" in medians:
        one = medians["collector"].rate
        for name, m in medians.items():
            if name == "collector" or m.rate <= 0:
                continue
            if name == "collector-2":  # two workers measured against one
                print(f"collector-2 / collector: {m.rate / one:.2f}x messages/s")
            else:
                print(f"collector / {name}: {one / m.rate:.2f}x messages/s")


if __name__ == "__main__":
    main()
