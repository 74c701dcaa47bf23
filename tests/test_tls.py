"""Syslog over TLS (RFC 5425) with real clients: openssl s_client, rsyslog's
gnutls driver and a Twisted client, against a real collector process."""

import socket
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from collector_process import CollectorProcess, free_udp_port
from conftest import require_binary


def openssl(*args, cwd):
    subprocess.run([require_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for localhost, and client certificates."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Test syslog CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "server.ext"]),
                          ("hq", "hq-gw", []), ("branch", "branch-gw", [])):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext, cwd=d)
    return d


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def collector(pki, tmp_path_factory, request):
    """A collector taking TLS, in one process or in two workers (the supervisor hands them the connections)."""
    workdir = tmp_path_factory.mktemp("tls-collector")
    config = workdir / "collector.toml"
    config.write_text(f"""
[workers]
count = {request.param}

[tls]
enabled = true
listen = "127.0.0.1:0"
certificate = "{pki / 'server.pem'}"
key = "{pki / 'server.key'}"
ca = "{pki / 'ca.pem'}"
verify_clients = true

[[firewall]]
name = "hq"
addresses = ["127.0.0.1"]
tls_subject = "hq-gw"

[[firewall]]
name = "branch"
addresses = ["192.0.2.0/24"]
tls_subject = "branch-gw"
""")
    process = CollectorProcess(workdir, config=str(config), listeners=frozenset({"udp", "tcp", "metrics", "tls"}))
    yield process
    process.kill()


def s_client(collector, pki, payload, certificate=None):
    command = [require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{collector.ports['tls']}",
               "-CAfile", str(pki / "ca.pem"), "-verify_return_error", "-quiet", "-no_ign_eof"]
    if certificate:
        command += ["-cert", str(pki / f"{certificate}.pem"), "-key", str(pki / f"{certificate}.key")]
    return subprocess.run(command, input=payload, capture_output=True, timeout=30)


def count(collector, host):
    return collector.sample("syslog_collector_received_messages_total", host=host, transport="tls") or 0


def octet(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


def test_openssl_client_with_its_certificate(collector, pki):
    before = count(collector, "hq")
    messages = [b"<116>1 - hq-gw security - - - Engine: Startup.",
                b"<116>1 - hq-gw security - - - Authentication: Admin: Client: 192.0.2.5: wrong password"]
    # Octet counting as RFC 5425 requires; LF framing tolerated on the same stream.
    s_client(collector, pki, octet(messages[0]) + messages[1] + b"\n", certificate="hq")
    collector.wait_for("syslog_collector_received_messages_total", before + 2, host="hq", transport="tls")
    collector.wait_for("syslog_collector_records_total", 1, host="hq", type="auth_failure")


def test_a_certificate_cannot_speak_for_another_firewall(collector, pki):
    before = collector.sample("syslog_collector_refused_connections_total", reason="tls_subject_mismatch")
    s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Shutdown."), certificate="branch")
    collector.wait_for("syslog_collector_refused_connections_total", before + 1, reason="tls_subject_mismatch")
    assert count(collector, "branch") == 0
    assert "certificate subject 'branch-gw'" in collector.log()


def test_no_client_certificate_no_messages(collector, pki):
    before = count(collector, "hq")
    failed = collector.sample("syslog_collector_refused_connections_total", reason="tls_handshake")
    s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Shutdown."))
    collector.wait_for("syslog_collector_refused_connections_total", failed + 1, reason="tls_handshake")
    assert count(collector, "hq") == before


class Sender(Protocol):
    def __init__(self, payload):
        self.payload = payload

    def connectionMade(self):
        self.transport.write(self.payload)
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_twisted_client(collector, pki):
    before = count(collector, "hq")
    authority = ssl.Certificate.loadPEM((pki / "ca.pem").read_bytes())
    client = ssl.PrivateCertificate.loadPEM((pki / "hq.pem").read_bytes() + (pki / "hq.key").read_bytes())
    options = ssl.optionsForClientTLS("localhost", trustRoot=authority, clientCertificate=client)
    endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", collector.ports["tls"], options)
    payload = b"".join(octet(b"<116>1 - hq-gw security - - - Engine: Startup. %d" % i) for i in range(50))
    protocol = await connectProtocol(endpoint, Sender(payload)).addTimeout(10, reactor)
    assert protocol is not None
    deadline = time.monotonic() + 15
    while count(collector, "hq") < before + 50 and time.monotonic() < deadline:
        await deferLater(reactor, 0.1, lambda: None)
    assert count(collector, "hq") == before + 50



def test_rsyslog_gnutls_forwarding(collector, pki, tmp_path):
    rsyslogd = require_binary("rsyslogd")
    if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists() and not list(
            Path("/usr/lib").glob("**/rsyslog/lmnsd_gtls.so")):
        from conftest import REQUIRE_ALL
        if REQUIRE_ALL:
            pytest.fail("rsyslog-gnutls is not installed")
        pytest.skip("rsyslog-gnutls is not installed")
    udp_in = free_udp_port()
    config = tmp_path / "rsyslog.conf"
    config.write_text(f"""
global(workDirectory="{tmp_path}"
       DefaultNetstreamDriverCAFile="{pki / 'ca.pem'}"
       DefaultNetstreamDriverCertFile="{pki / 'hq.pem'}"
       DefaultNetstreamDriverKeyFile="{pki / 'hq.key'}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_in}" ruleset="tls")
ruleset(name="tls") {{
  action(type="omfwd" target="127.0.0.1" port="{collector.ports['tls']}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" tcp_framing="octet-counted"
         template="RSYSLOG_SyslogProtocol23Format")
}}
""")
    process = subprocess.Popen([rsyslogd, "-n", "-iNONE", "-f", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        before = count(collector, "hq")
        deadline = time.monotonic() + 30
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # rsyslogd needs a moment to bind its input: send until messages arrive.
            while count(collector, "hq") == before and time.monotonic() < deadline:
                sock.sendto(b"<116>1 - hq-gw security - - - Engine: Startup. via rsyslog", ("127.0.0.1", udp_in))
                sent += 1
                time.sleep(0.2)
        time.sleep(1)
        assert count(collector, "hq") > before
        assert count(collector, "hq") <= before + sent
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode(errors="replace")
    assert "error" not in output.lower() or count(collector, "hq") > before, output
