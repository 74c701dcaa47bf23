"""Several worker processes sharing the listening ports (``workers.count`` > 1).

The twistd process becomes a supervisor: it serves ``/metrics`` (aggregated
from the workers by ``prometheus_client``'s multiprocess mode) and runs one
``twistd -n syslog-collector`` per worker. Each worker binds the syslog ports
with ``SO_REUSEPORT``, so the kernel spreads connections and datagrams over
them. Worker 0 starts first; the others get the ports it actually bound (port
0 picks one). Only worker 0 compresses and prunes the archives.

Two workers may write the same host's file: each flush is one ``write`` of
whole lines to a file opened with ``O_APPEND``, which Linux appends
atomically, so lines never interleave; their order across workers follows the
flushes, not the receive times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from collector.config import Config, ListenAddress
from collector.metrics import UdpPortDropsCollector

WORKER_ENV = "SYSLOG_COLLECTOR_WORKER"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LISTENING = re.compile(r"listening (udp|tcp|tls) on (\S+) port (\d+)")
# A worker that does not stop within this time after SIGTERM is killed.
STOP_TIMEOUT = 120.0


def worker_index() -> int | None:
    """This process's worker number, or None when it is not a worker."""
    text = os.environ.get(WORKER_ENV)
    return None if text is None else int(json.loads(text)["index"])


def worker_tls_address() -> str | None:
    text = os.environ.get(WORKER_ENV)
    return None if text is None else json.loads(text).get("tls")


def shared_socket(kind: int, address: ListenAddress) -> socket.socket:
    """A socket bound with SO_REUSEPORT, for the workers to share."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address.host or "0.0.0.0", address.port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def listen_shared_tcp(reactor: Any, address: ListenAddress, factory: Factory,
                      tls_options: Any = None) -> Any:
    sock = shared_socket(socket.SOCK_STREAM, address)
    if tls_options is not None:
        factory = TLSMemoryBIOFactory(tls_options, False, factory)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()  # the port holds its own duplicate


def listen_shared_udp(reactor: Any, address: ListenAddress, protocol: DatagramProtocol) -> Any:
    sock = shared_socket(socket.SOCK_DGRAM, address)
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol, maxPacketSize=65536)
    finally:
        sock.close()


class WorkerProcess(ProcessProtocol):
    """One worker: its output goes to the supervisor's log, line by line."""

    log = Logger()

    def __init__(self, index: int, on_listening: Callable[[str, str], None]) -> None:
        self.index = index
        self.ended: Deferred[None] = Deferred()
        self._on_listening = on_listening
        self._partial = b""

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.log.info("worker {index}: {line}", index=self.index, line=line)
            match = _LISTENING.search(line)
            if match is not None:
                kind, host, port = match.groups()
                self._on_listening(kind, str(ListenAddress(host if host != "0.0.0.0" else "", int(port))))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.log.info("worker {index} ended: {reason}", index=self.index, reason=reason.getErrorMessage())
        self.ended.callback(None)


class WorkerSupervisor(MultiService):
    """Runs ``count`` workers; forwards SIGHUP; stops them on stop."""

    log = Logger()

    def __init__(self, config: Config, plugin_args: list[str], reactor: Any, metrics_dir: str,
                 udp_drops: UdpPortDropsCollector) -> None:
        super().__init__()
        self._config = config
        self._udp_drops = udp_drops
        self._plugin_args = plugin_args
        self._reactor = reactor
        self.metrics_dir = metrics_dir
        self._workers: list[tuple[WorkerProcess, Any]] = []
        self._ports: dict[str, str] = {}
        self._previous_hangup: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.log.info("{count} workers; their metrics meet in {path}",
                      count=self._config.workers.count, path=self.metrics_dir)
        self._spawn(0, self._plugin_args)
        self._previous_hangup = signal.signal(signal.SIGHUP, self._hangup)

    def _listening(self, kind: str, address: str) -> None:
        """Worker 0 bound a port; once it has bound all, start the others on them."""
        if kind == "udp" and kind not in self._ports:
            self._udp_drops.watch(address, int(address.rpartition(":")[2]))
        self._ports[kind] = address
        wanted = {kind for kind, on in (("udp", self._config.listen.udp), ("tcp", self._config.listen.tcp),
                                        ("tls", self._config.tls.enabled and self._config.tls.listen)) if on}
        if len(self._workers) == 1 and wanted <= self._ports.keys():
            args = _without_options(self._plugin_args, ("--udp", "--tcp")) + [
                "--udp", self._ports.get("udp", ""), "--tcp", self._ports.get("tcp", "")]
            for index in range(1, self._config.workers.count):
                self._spawn(index, args, tls=self._ports.get("tls"))

    def _spawn(self, index: int, args: list[str], tls: str | None = None) -> None:
        protocol = WorkerProcess(index, self._listening if index == 0 else lambda kind, address: None)
        env = dict(os.environ, **{MULTIPROC_ENV: self.metrics_dir,
                                  WORKER_ENV: json.dumps({"index": index, "tls": tls})})
        argv = [sys.executable, sys.argv[0], "--nodaemon", "--pidfile=", "--logfile=-", "syslog-collector",
                *_without_options(args, ("--metrics",)), "--metrics", ""]
        process = self._reactor.spawnProcess(protocol, sys.executable, argv, env=env)
        protocol.ended.addCallback(lambda _: _mark_dead(process.pid, self.metrics_dir))
        self._workers.append((protocol, process))
        self.log.info("started worker {index} (pid {pid})", index=index, pid=process.pid)

    def _hangup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._signal_all, signal.SIGHUP)

    def _signal_all(self, signum: int) -> None:
        for protocol, process in self._workers:
            if not protocol.ended.called:
                process.signalProcess(signum)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        signal.signal(signal.SIGHUP, self._previous_hangup)
        self._signal_all(signal.SIGTERM)
        kill = self._reactor.callLater(STOP_TIMEOUT, self._signal_all, signal.SIGKILL)
        ended = DeferredList([p.ended for p, _ in self._workers])

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
