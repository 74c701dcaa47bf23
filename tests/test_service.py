"""Running as a service: a privileged port with twistd's --uid/--gid, and the systemd unit."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from collector_process import REPO, collector_environment, twistd
from conftest import REQUIRE_ALL, require_binary


def free_privileged_port():
    for port in [514, *range(1023, 900, -1)]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 1024 on 127.0.0.1")


def test_port_514_bound_as_root_then_run_as_nobody():
    if os.geteuid() != 0:
        if REQUIRE_ALL:
            pytest.fail("this test needs root (twistd binds as root, then drops to --uid)")
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    workdir = Path(tempfile.mkdtemp(prefix="collector-uid-"))
    workdir.chmod(0o777)
    port = free_privileged_port()
    log = workdir / "collector.log"
    process = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", f"--logfile={log}", f"--uid={nobody.pw_uid}", f"--gid={nobody.pw_gid}",
         "syslog-collector", "--udp", f"127.0.0.1:{port}", "--tcp", f"127.0.0.1:{port}",
         "--metrics", "127.0.0.1:0", "--archive-dir", str(workdir / "archive")],
        cwd=workdir, env=collector_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "set uid/gid" not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stdout.read().decode(errors="replace") if process.poll() is not None else "timeout")
            time.sleep(0.1)
        status = Path(f"/proc/{process.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(nobody.pw_uid)}
        assert (workdir / "archive").stat().st_uid == nobody.pw_uid
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"<13>1 - gw app - - - Engine: Startup.\n")
        deadline = time.monotonic() + 15
        while not list((workdir / "archive").glob("gw/*.log")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (archived,) = (workdir / "archive").glob("gw/*.log")
        assert archived.stat().st_uid == nobody.pw_uid
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM)
        assert archived.read_bytes().endswith(b"Engine: Startup.\n")
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_systemd_unit_verifies(tmp_path):
    analyze = require_binary("systemd-analyze")
    unit = (REPO / "config" / "syslog-collector.service").read_text()
    # The unit names where a deployment installs things; point it at this machine's.
    installed_twistd = twistd()
    unit = unit.replace("/opt/syslog-collector/venv/bin/twistd", installed_twistd)
    path = tmp_path / "syslog-collector.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for setting in ("DynamicUser=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/syslog-collector",
                    "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure"):
        assert setting in unit
