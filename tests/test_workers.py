"""Several worker processes sharing the listening ports (workers.count > 1)."""

import ast
import importlib
import json
import os
import pkgutil
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest_twisted
from prometheus_client import ProcessCollector
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

import collector
from collector.compiled import MESSAGE_PATH
from collector.config import ListenAddress
from collector.metrics import kernel_udp_sockets
from collector.net.slots import ConnectionSlots
from collector.workers.balancing import Balancer
from collector.workers.supervisor import WORKER_ENV, listen_shared_udp, spread_at_random
from collector_process import CollectorProcess, collector_environment, open_files, twistd, wait_until
from helpers import until


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [int(child) for child in file.read().split()]


def two_workers(tmp_path, settings=""):
    """A supervisor of two workers that both take connections; the caller kills it."""
    config = tmp_path / "collector.toml"
    config.write_text("[workers]\ncount = 2\n" + settings)
    process = CollectorProcess(tmp_path, config=str(config))
    if not wait_until(lambda: len(re.findall(r"worker \d: .*taking tcp connections from the supervisor",
                                             process.log())) == 2, timeout=30):
        process.kill()
        raise AssertionError(process.log())
    return process


def test_two_workers_share_the_ports_and_the_metrics(tmp_path):
    process = two_workers(tmp_path, "[archive]\nflush_interval_seconds = 0.2\n")
    try:
        assert len(re.findall(r"worker \d: .*listening udp on", process.log())) == 2
        workers = children(process.process.pid)
        assert len(workers) == 2

        connections = [process.connect_tcp() for _ in range(16)]
        assert wait_until(lambda: process.sample("syslog_collector_tcp_connections", transport="tcp") == 16, timeout=30)
        # The supervisor split them exactly, and each worker holds its half.
        assert [process.sample("syslog_collector_worker_connections", worker=str(i)) for i in (0, 1)] == [8, 8]
        tcp_sockets = [sum(1 for held in open_files(pid) if held.startswith("socket:")) for pid in workers]
        assert min(tcp_sockets) >= 8, tcp_sockets
        for index, sock in enumerate(connections):
            sock.sendall(b"".join(b"<13>1 - shared app - n%d - Engine: Startup.\n" % (index * 1000 + i)
                                  for i in range(1000)))
            sock.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(500):
                udp.sendto(b"<13>1 - shared app - n%d - Engine: Startup." % (100000 + i),
                           ("127.0.0.1", process.ports["udp"]))
        process.wait_for("syslog_collector_received_messages_total", 16000, host="shared", transport="tcp")
        process.wait_for("syslog_collector_received_messages_total", 500, host="shared", transport="udp")
        assert process.sample("syslog_collector_records_total", host="shared", type="engine_startup") == 16500
        # The workers told the supervisor as each connection closed.
        assert wait_until(lambda: [process.sample("syslog_collector_worker_connections", worker=str(i))
                                   for i in (0, 1)] == [0, 0], timeout=10)
        udp_address = f"127.0.0.1:{process.ports['udp']}"
        assert process.sample("syslog_collector_udp_receive_drops_total", address=udp_address) == 0
        # Each worker's buffer, set once it bound the port: the largest asked for, the smallest granted.
        assert process.sample("syslog_collector_udp_receive_buffer_requested_bytes", address=udp_address) == 8 << 20
        assert process.sample("syslog_collector_udp_receive_buffer_bytes", address=udp_address) > 0

        assert process.terminate() in (0, -signal.SIGTERM)
        assert all(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
                   for pid in workers)
        archived = process.archived("shared")
        assert len(archived) == len(set(archived)) == 16500
        assert "Traceback" not in process.log()
        metrics_dir = re.search(r"their metrics meet in (\S+)", process.log()).group(1)
        assert not os.path.exists(metrics_dir)
    finally:
        process.kill()


def test_connection_limits_hold_for_all_the_workers_together(tmp_path):
    process = two_workers(tmp_path, "[limits]\nmax_connections = 5\nmax_connections_per_sender = 3\n")
    try:
        from_one = [process.connect_tcp() for _ in range(4)]
        process.wait_for("syslog_collector_refused_connections_total", 1, reason="too_many_from_sender")
        assert closed_by_peer(from_one[3])  # the fourth
        assert [process.sample("syslog_collector_worker_connections", worker=str(i)) for i in (0, 1)] == [2, 1]
        # Three more from another network: two fit under the limit in all;
        # the third would take one from the first sender, who holds only 3.
        others = [process.connect_tcp(source="127.0.5.2") for _ in range(3)]
        process.wait_for("syslog_collector_refused_connections_total", 1, reason="too_many_connections")
        assert sum(process.sample("syslog_collector_worker_connections", worker=str(i)) for i in (0, 1)) == 5
        # A newcomer while the first sender holds 3 and it none: fair share, the
        # first sender's longest-idle connection is closed by its worker.
        for sock in others:
            sock.close()
        assert wait_until(lambda: sum(process.sample("syslog_collector_worker_connections", worker=str(i))
                                      for i in (0, 1)) == 3)
        fillers = [process.connect_tcp(source="127.0.6.2") for _ in range(2)]
        newcomer = process.connect_tcp(source="127.0.7.2")
        process.wait_for("syslog_collector_closed_connections_total", 1, reason="evicted")
        assert closed_by_peer(from_one[0])  # the longest idle of the first sender
        newcomer.sendall(b"<13>1 - newcomer app - - - Engine: Startup.\n")
        process.wait_for("syslog_collector_received_messages_total", 1, host="newcomer", transport="tcp")
        for sock in from_one + fillers + [newcomer]:
            sock.close()
    finally:
        process.kill()


def closed_by_peer(sock) -> bool:
    """Whether the collector closed the connection: at once (a reset), or in order."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


def gone(pid):
    """Whether process ``pid`` has ended (a zombie has, though nobody reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path):
    # Flushed only when they stop: what they received must still reach the disk.
    process = two_workers(tmp_path, "[archive]\nflush_interval_seconds = 600\n")
    workers = []
    try:
        workers = children(process.process.pid)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(200):
                udp.sendto(b"<13>1 - orphan app - n%d - Engine: Startup." % i, ("127.0.0.1", process.ports["udp"]))
        process.wait_for("syslog_collector_received_messages_total", 200, host="orphan", transport="udp")
        process.process.kill()
        process.process.wait(10)
        assert wait_until(lambda: all(gone(pid) for pid in workers), timeout=20), workers
        archived = process.archived("orphan")
        assert len(archived) == len(set(archived)) == 200
    finally:
        process.kill()
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def udp_ports(pid):
    """The local ports of the UDP sockets process ``pid`` holds."""
    inodes = {held[len("socket:["):-1] for held in open_files(pid) if held.startswith("socket:[")}
    return {row.local_port for row in kernel_udp_sockets() if str(row.inode) in inodes}


def command_line(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().decode().split("\0")


def test_the_other_workers_start_on_the_udp_port_worker_0_bound(tmp_path):
    process = two_workers(tmp_path)
    try:
        pids = worker_pids(process)
        # Asked for port 0: worker 0 got one, and worker 1 was given it.
        (port,) = udp_ports(pids[0])
        assert port != 0 and udp_ports(pids[1]) == {port}
        assert process.ports["udp"] == port
        arguments = command_line(pids[1])
        assert arguments[arguments.index("--udp") + 1] == f"127.0.0.1:{port}"
        assert "--udp" not in arguments[arguments.index("--udp") + 1:]
    finally:
        process.kill()


@pytest_twisted.inlineCallbacks
def test_worker_0_reports_the_udp_address_it_bound_over_its_channel(monkeypatch):
    balancer = Balancer(reactor, lambda counts: None, ConnectionSlots(100, 100))
    reported = []
    ports = []
    try:
        for index in (1, 0):
            channel = balancer.open_channel(index, reported.append)
            with channel:
                monkeypatch.setenv(WORKER_ENV, json.dumps({"index": index, "channel": channel.fileno()}))
                ports.append(listen_shared_udp(reactor, ListenAddress("127.0.0.1", 0), DatagramProtocol(), 2))
        yield until(lambda: reported)
        # Only worker 0 tells: the others are started on its port.
        assert reported == [f"127.0.0.1:{ports[1].getHost().port}"]
    finally:
        for port in ports:
            yield port.stopListening()
    yield until(lambda: not balancer.channels)


def test_module_loggers_are_named_after_their_modules():
    # Logger() takes its namespace from the calling frame, which a compiled
    # (mypyc) module has none of: its lines would say importlib._bootstrap.
    named = {}
    for info in pkgutil.walk_packages(collector.__path__, "collector."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, Logger):
                named[module.__name__] = value.namespace
    assert {"collector.pipeline", "collector.workers.supervisor"} <= named.keys()
    assert all(namespace == module for module, namespace in named.items()), named
    # Run from source, a module infers its name all the same: the compiled
    # modules must name it in their code.
    for module in MESSAGE_PATH:
        source = Path(module.__file__).with_name(module.__name__.rpartition(".")[2] + ".py")
        if not source.exists():
            continue  # installed compiled, without its source: checked above
        for statement in ast.parse(source.read_text()).body:
            call = getattr(statement, "value", None)
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Logger":
                assert call.args or any(k.arg == "namespace" for k in call.keywords), (
                    f"{source}:{statement.lineno}: Logger() without a namespace")


def start_time(pid):
    """What prometheus_client reads as the start time of process ``pid``."""
    return next(sample.value for family in ProcessCollector(pid=lambda: pid, registry=None).collect()
                for sample in family.samples if sample.name == "process_start_time_seconds")


def worker_pids(process):
    """Each worker's pid, by index: the last one the supervisor logged."""
    return {int(index): int(pid) for index, pid in re.findall(r"started worker (\d) \(pid (\d+)\)", process.log())}


def assert_process_metrics_are_the_workers(process):
    assert wait_until(lambda: sorted(worker_pids(process).values()) == sorted(children(process.process.pid)))
    pids = worker_pids(process)
    assert sorted(pids) == [0, 1]
    for index, pid in pids.items():
        assert process.sample("process_start_time_seconds", worker=str(index)) == start_time(pid)
        assert process.sample("process_cpu_seconds_total", worker=str(index)) is not None
    assert process.sample("process_start_time_seconds") == start_time(process.process.pid)
    assert process.sample("process_start_time_seconds", worker="2") is None


def test_a_dead_worker_is_started_again(tmp_path):
    config = tmp_path / "collector.toml"
    config.write_text("[workers]\ncount = 2\n[archive]\nflush_interval_seconds = 0.2\n")
    process = CollectorProcess(tmp_path, config=str(config))
    try:
        assert wait_until(lambda: len(children(process.process.pid)) == 2, timeout=30)
        assert_process_metrics_are_the_workers(process)
        assert [process.sample("syslog_collector_worker_restarts_total", worker=str(i)) for i in (0, 1)] == [0, 0]
        victim = worker_pids(process)[1]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: "exited unexpectedly: starting it again" in process.log(), timeout=30)
        assert wait_until(lambda: len(children(process.process.pid)) == 2
                          and victim not in children(process.process.pid), timeout=30)
        # The supervisor's process_* follow the new worker, not the dead one.
        assert_process_metrics_are_the_workers(process)
        assert [process.sample("syslog_collector_worker_restarts_total", worker=str(i)) for i in (0, 1)] == [0, 1]
        # Both listen again: every connection is served.
        for n in range(8):
            with process.connect_tcp() as sock:
                sock.sendall(b"<13>1 - again app - n%d - Engine: Startup.\n" % n)
        process.wait_for("syslog_collector_received_messages_total", 8, host="again", transport="tcp")
        assert process.terminate() in (0, -signal.SIGTERM)
    finally:
        process.kill()


def run_two_workers(tmp_path, *options):
    config = tmp_path / "collector.toml"
    config.write_text("[workers]\ncount = 2\n")
    result = subprocess.run(
        [twistd(), "-n", "--pidfile=", "syslog-collector", "--config", str(config), *options,
         "--metrics", "127.0.0.1:0", "--archive-dir", str(tmp_path / "a")],
        cwd=tmp_path, env=collector_environment(), capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_a_tcp_port_in_use_stops_the_supervisor_with_status_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, output = run_two_workers(tmp_path, "--udp", "", "--tcp", f"127.0.0.1:{port}")
    assert status == 1, output
    assert f"cannot listen for tcp on 127.0.0.1:{port} (listen.tcp)" in output
    assert "started worker" not in output


def test_a_udp_port_in_use_stops_the_collector_with_status_1(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        status, output = run_two_workers(tmp_path, "--udp", f"127.0.0.1:{port}", "--tcp", "127.0.0.1:0")
    assert status == 1, output
    assert f"cannot listen for udp on 127.0.0.1:{port} (listen.udp)" in output
    assert "worker 0 could not start" in output


def received_per_socket(spread):
    """200 datagrams from one sender to a port that two sockets share."""
    group = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", group[0].getsockname()[1] if len(group) > 1 else 0))
            sock.setblocking(False)
        if spread:
            spread_at_random(group[0], 2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(200):
                sender.sendto(b"x", group[0].getsockname())
        counts = []
        for sock in group:
            count = 0
            while True:
                try:
                    sock.recv(16)
                except BlockingIOError:
                    break
                count += 1
            counts.append(count)
        return counts
    finally:
        for sock in group:
            sock.close()


def test_one_senders_datagrams_go_to_the_workers_at_random():
    # The kernel's hash alone puts them all on one socket.
    assert sorted(received_per_socket(spread=False)) == [0, 200]
    spread = received_per_socket(spread=True)
    assert sum(spread) == 200 and min(spread) >= 50, spread


def test_a_sighup_while_workers_start_reloads_them_later_instead_of_killing_them(tmp_path):
    config = tmp_path / "collector.toml"
    config.write_text("[workers]\ncount = 2\n")
    log = tmp_path / "collector.log"
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", f"--logfile={log}", "syslog-collector", "--config", str(config),
         "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
         "--archive-dir", str(tmp_path / "a")],
        cwd=tmp_path, env=collector_environment())
    try:
        assert wait_until(lambda: log.exists() and "started worker 0" in log.read_text(), timeout=30)
        # Log rotation may send SIGHUP at any time, even while a worker starts.
        def both_reloaded():
            return all(re.search(rf"worker {i}: .*reopened the archive files", log.read_text()) for i in (0, 1))

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not both_reloaded() and process.poll() is None:
            process.send_signal(signal.SIGHUP)
            time.sleep(0.02)
        assert both_reloaded(), log.read_text()
        assert "exited unexpectedly" not in log.read_text()
    finally:
        process.terminate()
        process.wait(60)


@pytest_twisted.inlineCallbacks
def test_a_kernel_that_refuses_the_program_leaves_the_port_working(log_events):
    # A modulus of 0 is a program the kernel refuses, for real.
    port = listen_shared_udp(reactor, ListenAddress("127.0.0.1", 0), DatagramProtocol(), workers=0)
    try:
        assert port.getHost().port > 0
        assert log_events("by a hash of their sender")
    finally:
        yield port.stopListening()
