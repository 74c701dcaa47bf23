"""Run a real ``twistd -n syslog-collector`` for end-to-end tests."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import venv
from dataclasses import dataclass
from pathlib import Path

from conftest import INSTALLED

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening (\w+) on (\S+) port (\d+)")


@dataclass(frozen=True)
class Installation:
    """The package as a user installs it: a wheel built from this tree, in a venv."""

    wheel: Path
    venv: Path

    def script(self, name: str) -> str:
        return str(self.venv / "bin" / name)


_installation: Installation | None = None


def installation() -> Installation:
    """The package built and installed once a test session, as ``pip install .`` would.

    Process tests run what a user runs: the compiled per-message path and
    the console scripts of an installed package, not the source tree. Its
    venv takes the test tools from the environment running the tests
    (a .pth file). Under COLLECTOR_TESTS_INSTALLED the tests themselves run
    in such an installation, which is then the one.
    """
    global _installation
    if _installation is not None:
        return _installation
    if INSTALLED:
        _installation = Installation(Path(), Path(sys.prefix))
        return _installation
    work = Path(tempfile.mkdtemp(prefix="collector-installed-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    source = work / "source"
    source.mkdir()
    # From a copy, so that the build leaves nothing in the working tree.
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("collector", "twisted"):
        shutil.copytree(REPO / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "dropin.cache", "*.so"))
    wheels = work / "wheels"
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(wheels), str(source), cwd=work)
    (wheel,) = wheels.glob("*.whl")
    venv_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    python = str(venv_dir / "bin" / "python")
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work).strip()
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (Path(site) / "test-tools.pth").write_text("".join(path + "\n" for path in ours))
    _run(python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--ignore-installed",
         str(wheel), cwd=work)
    # Twisted's twistd script is the test environment's: one beside this python.
    twistd = venv_dir / "bin" / "twistd"
    twistd.write_text(f"#!{python}\nfrom twisted.scripts.twistd import run\nrun()\n")
    twistd.chmod(0o755)
    _installation = Installation(wheel, venv_dir)
    return _installation


def _run(*command: str, cwd: Path) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def twistd() -> str:
    """The installed package's twistd."""
    return installation().script("twistd")


def syslog_collector() -> str:
    """The installed package's console script."""
    return installation().script("syslog-collector")


def collector_environment() -> dict[str, str]:
    """The environment of a process that runs the installed collector: nothing of the source tree on its path."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return environment


def source_environment() -> dict[str, str]:
    """The environment of a process that runs the source tree (the fuzz targets instrument its Python)."""
    return dict(os.environ) if INSTALLED else dict(os.environ, PYTHONPATH=str(REPO))


def wait_until(predicate, timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; say which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def open_files(pid: int) -> set[str]:
    """What process ``pid`` holds open: paths, and ``socket:[inode]`` for sockets."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            pass
    return held


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CollectorProcess:
    """A collector on free loopback ports, its log in ``workdir/collector.log``."""

    def __init__(self, workdir: Path, *args: str, config: str | None = None,
                 listeners: frozenset[str] = frozenset({"udp", "tcp", "metrics"}),
                 preexec_fn=None) -> None:
        self.workdir = workdir
        self.archive = workdir / "archive"
        self.log_path = workdir / "collector.log"
        command = [twistd(), "-n", "--pidfile=", f"--logfile={self.log_path}", "syslog-collector",
                   "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                   "--archive-dir", str(self.archive)]
        if config is not None:
            command += ["--config", config]
        command += list(args)
        self.process = subprocess.Popen(command, cwd=workdir, env=collector_environment(), preexec_fn=preexec_fn,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.ports = self._wait_for_ports(listeners)

    @classmethod
    def configured(cls, workdir: Path, config: str, **kwargs) -> CollectorProcess:
        """A collector with ``config`` (TOML text) as its config file."""
        path = workdir / "collector.toml"
        path.write_text(config)
        return cls(workdir, config=str(path), **kwargs)

    def _wait_for_ports(self, listeners: frozenset[str], timeout: float = 20.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"collector exited with {self.process.returncode}: {output}\n{self.log()}")
            ports = {kind: int(port) for kind, _, port in _LISTENING.findall(self.log())}
            if listeners <= ports.keys():
                return ports
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"collector did not start listening:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_udp(self, messages: list[bytes]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for message in messages:
                sock.sendto(message, ("127.0.0.1", self.ports["udp"]))

    def connect_tcp(self, source: str | None = None) -> socket.socket:
        """A connection to the TCP listener, from the loopback address ``source`` if given."""
        return socket.create_connection(("127.0.0.1", self.ports["tcp"]), timeout=10,
                                        source_address=None if source is None else (source, 0))

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample's value from /metrics, or None when it is not exported."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.scrape().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric != name:
                continue
            pairs = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if pairs == wanted:
                return float(value)
        return None

    def wait_for(self, name: str, value: float, timeout: float = 15.0, **labels: str) -> None:
        deadline = time.monotonic() + timeout
        current = None
        while time.monotonic() < deadline:
            current = self.sample(name, **labels)
            if current is not None and current >= value:
                return
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} is {current}, expected {value}")

    def archived(self, host: str) -> list[bytes]:
        from collector.archive.line import parse_line

        messages = []
        for path in sorted((self.archive / host).glob("*.log")):
            with open(path, "rb") as file:
                messages += [parse_line(line).message for line in file]
        return messages

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
