"""Several worker processes (``workers.count`` > 1).

The twistd process becomes a supervisor: it serves ``/metrics`` (aggregated
from the workers by ``prometheus_client``'s multiprocess mode) and runs one
``twistd -n syslog-collector`` per worker. It listens on the TCP and TLS
ports itself and hands each connection to the worker with the fewest open
(collector/workers/balancing.py). The workers bind the UDP port with
``SO_REUSEPORT``, and the kernel gives each datagram to one of them at random
(``spread_at_random``): worker 0 binds first and reports the address it
actually bound (port 0 picks one) over its channel, and the others are
started on it. Only worker 0 compresses and prunes the archives.

Two workers may write the same host's file: each flush is one ``write`` of
whole lines to a file opened with ``O_APPEND``, which Linux appends
atomically, so lines never interleave; their order across workers follows the
flushes, not the receive times.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import fdesc
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from collector.config import Config, ListenAddress
from collector.metrics import UdpPortDropsCollector
from collector.workers.balancing import CHANNEL_FD, Balancer, report_udp_bound

WORKER_ENV = "SYSLOG_COLLECTOR_WORKER"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_log = Logger(namespace=__name__)
# A worker that does not stop within this time after SIGTERM is killed.
STOP_TIMEOUT = 120.0
# A worker that dies is started again after this long.
RESTART_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class WorkerRole:
    index: int
    # The descriptor of its channel to the supervisor (collector.workers.balancing).
    channel: int


def worker_role() -> WorkerRole | None:
    """What the supervisor told this process it is, or None when it is not a worker."""
    text = os.environ.get(WORKER_ENV)
    if text is None:
        return None
    settings = json.loads(text)
    return WorkerRole(int(settings["index"]), int(settings["channel"]))


def listen_shared_udp(reactor: Any, address: ListenAddress, protocol: DatagramProtocol, workers: int) -> Any:
    """A UDP port bound with SO_REUSEPORT, for the workers to share, each
    datagram going to one of them at random.

    Worker 0 reports the address it bound to the supervisor, which then
    starts the other workers on it.
    """
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host or "0.0.0.0", address.port))
    except OSError as e:
        sock.close()
        raise CannotListenError(address.host, address.port, e) from None
    try:
        spread_at_random(sock, workers)
    except OSError as e:
        _log.warn("UDP datagrams go to the workers by a hash of their sender, not at random: {error}",
                  error=e)
    sock.setblocking(False)  # the port's duplicate shares this flag
    try:
        port = reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, maxPacketSize=65536)
    finally:
        sock.close()
    role = worker_role()
    if role is not None and role.index == 0:
        bound = port.getHost()
        try:
            report_udp_bound(role.channel, str(ListenAddress("" if bound.host == "0.0.0.0" else bound.host,
                                                              bound.port)))
        except OSError as e:
            # The supervisor is gone: this worker stops too (SupervisorLink).
            _log.error("cannot tell the supervisor the UDP address bound: {error}", error=e)
    return port


# Linux's SO_ATTACH_REUSEPORT_CBPF, and the classic BPF words of a program
# "A = random(); A %= workers; return A", which picks the socket of the group.
SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_RET_A = 0x20, 0x94, 0x16
_SKF_AD_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM


def spread_at_random(sock: socket.socket, workers: int) -> None:
    """Send each datagram to a random socket of the port's SO_REUSEPORT group.

    The kernel's default, a hash of the sender's address and port, puts all
    of one sender's datagrams on one worker: a relay's flood would load one
    worker only. The program applies to the whole group.
    """
    program = struct.pack("=" + "HBBI" * 3, _BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM,
                          _BPF_ALU_MOD_K, 0, 0, workers, _BPF_RET_A, 0, 0, 0)
    instructions = ctypes.create_string_buffer(program)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(instructions))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


class WorkerProcess(ProcessProtocol):
    """One worker: its output goes to the supervisor's log, line by line."""

    log = Logger()

    def __init__(self, index: int) -> None:
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self.log.info("worker {index}: {line}", index=self.index, line=raw.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.log.info("worker {index} ended: {reason}", index=self.index, reason=reason.getErrorMessage())
        self.ended.callback(None)


class SupervisorLink(Service):
    """Stops a worker whose supervisor is gone, even when it was killed.

    The supervisor holds the write end of each worker's stdin and never
    writes to it: when the supervisor's process ends, however it ends, the
    kernel closes that end and the worker reads end-of-file. Otherwise the
    workers of a supervisor that was killed (by the OOM killer, say) would
    go on holding the UDP port and writing the archives, unsupervised,
    beside a collector started in its place.
    """

    log = Logger()

    def __init__(self, reactor: Any, descriptor: int = 0) -> None:
        self._input = _EndOfInput(reactor, descriptor, self._gone)
        self._reactor = reactor

    def startService(self) -> None:
        super().startService()
        self._input.startReading()

    def stopService(self) -> None:
        super().stopService()
        self._input.stopReading()

    def _gone(self) -> None:
        if not self.running:
            return
        self.log.critical("the supervisor is gone: stopping this worker")
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # already stopping


class _EndOfInput(FileDescriptor):
    """Calls ``on_end`` when a descriptor reaches end-of-file; ignores what it reads."""

    def __init__(self, reactor: Any, descriptor: int, on_end: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._descriptor = descriptor
        self._on_end = on_end
        fdesc.setNonBlocking(descriptor)

    def fileno(self) -> int:
        return self._descriptor

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._descriptor, lambda data: None)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._on_end()


class WorkerSupervisor(MultiService):
    """Runs ``count`` workers; restarts one that dies; forwards SIGHUP; stops them on stop.

    If worker 0 dies before it has bound the UDP port (in use, say), the
    collector cannot run: the supervisor stops, and the process exits with
    status 1 (see ``exit_if_failed``).
    """

    log = Logger()

    def __init__(self, config: Config, plugin_args: list[str], reactor: Any, metrics_dir: str,
                 udp_drops: UdpPortDropsCollector, balancer: Balancer,
                 restarted: Callable[[int], None]) -> None:
        super().__init__()
        self._config = config
        self._udp_drops = udp_drops
        self._restarted = restarted
        self._plugin_args = plugin_args
        self._reactor = reactor
        self.metrics_dir = metrics_dir
        self._balancer = balancer
        self._workers: dict[int, tuple[WorkerProcess, Any]] = {}
        # The UDP address worker 0 bound, once it has.
        self._udp: str | None = None
        self._restarts: dict[int, Any] = {}
        self._previous_hangup: Any = None
        self._stopping = False
        self.failed = False

    def startService(self) -> None:
        super().startService()
        self.log.info("{count} workers; their metrics meet in {path}",
                      count=self._config.workers.count, path=self.metrics_dir)
        self._spawn(0)
        if self._config.listen.udp is None:
            self._spawn_others()
        self._previous_hangup = signal.signal(signal.SIGHUP, self._hangup)

    def _spawn_others(self) -> None:
        for index in range(1, self._config.workers.count):
            self._spawn(index)

    def _udp_bound(self, address: str) -> None:
        """Worker 0 reported, over its channel, the UDP address it bound: start the others on it."""
        if self._udp is None:
            self._udp = address
            self._udp_drops.watch(address, int(address.rpartition(":")[2]))
            self._spawn_others()

    def worker_pids(self) -> dict[int, int]:
        """The process ID of each running worker, by index."""
        # Read from the thread that renders /metrics: list() copies the dict at once.
        return {index: process.pid for index, (protocol, process) in list(self._workers.items())
                if not protocol.ended.called and process.pid is not None}

    def _args(self) -> list[str]:
        """Worker arguments: the UDP port worker 0 bound, once it has."""
        if self._udp is None:
            return self._plugin_args
        return _without_options(self._plugin_args, ("--udp",)) + ["--udp", self._udp]

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        protocol = WorkerProcess(index)
        env = dict(os.environ, **{MULTIPROC_ENV: self.metrics_dir,
                                  WORKER_ENV: json.dumps({"index": index, "channel": CHANNEL_FD})})
        argv = [sys.executable, sys.argv[0], "--nodaemon", "--pidfile=", "--logfile=-", "syslog-collector",
                *_without_options(self._args(), ("--metrics",)), "--metrics", ""]
        # The worker starts with SIGHUP blocked, and unblocks it once it can
        # reload (tap.ReloadOnHangup): a SIGHUP forwarded meanwhile waits
        # instead of killing it. The signal mask survives fork and exec.
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            with self._balancer.open_channel(index, self._udp_bound if index == 0 else None) as channel:
                process = self._reactor.spawnProcess(
                    protocol, sys.executable, argv, env=env,
                    childFDs={0: "w", 1: "r", 2: "r", CHANNEL_FD: channel.fileno()})
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        protocol.ended.addCallback(self._ended, index, process.pid)
        self._workers[index] = (protocol, process)
        self.log.info("started worker {index} (pid {pid})", index=index, pid=process.pid)

    def _ended(self, _: object, index: int, pid: int | None) -> None:
        _mark_dead(pid, self.metrics_dir)
        if self._stopping:
            return
        if self._config.listen.udp is not None and self._udp is None:
            self.log.critical("worker {index} could not start (its log lines are above): stopping",
                              index=index)
            self.failed = True
            self._reactor.stop()
            return
        self.log.error("worker {index} exited unexpectedly: starting it again in {delay} s",
                       index=index, delay=RESTART_DELAY)
        self._restarted(index)
        self._restarts[index] = self._reactor.callLater(RESTART_DELAY, self._spawn, index)

    def exit_if_failed(self) -> None:
        """After shutdown: a collector whose workers could not start exits with status 1."""
        if self.failed:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    def _hangup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._signal_all, signal.SIGHUP)

    def _signal_all(self, signum: int) -> None:
        for protocol, process in self._workers.values():
            if not protocol.ended.called:
                process.signalProcess(signum)

    def stopService(self) -> Deferred[None]:
        self._stopping = True
        for call in self._restarts.values():
            call.cancel()
        if self._previous_hangup is not None:
            signal.signal(signal.SIGHUP, self._previous_hangup)
        self._signal_all(signal.SIGTERM)
        kill = self._reactor.callLater(STOP_TIMEOUT, self._signal_all, signal.SIGKILL)
        ended = DeferredList([p.ended for p, _ in self._workers.values()])

        def stopped(_: object) -> Deferred[None]:
            if kill.active():
                kill.cancel()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            return succeed(None)

        ended.addCallback(stopped)
        ended.addCallback(lambda _: super(WorkerSupervisor, self).stopService())
        return ended  # type: ignore[return-value]


def _without_options(args: list[str], names: tuple[str, ...]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not any(arg.startswith(name + "=") for name in names):
            kept.append(arg)
    return kept


def _mark_dead(pid: int | None, metrics_dir: str) -> None:
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid, metrics_dir)


def new_metrics_dir() -> str:
    return tempfile.mkdtemp(prefix="syslog-collector-metrics-")
