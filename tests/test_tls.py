"""Syslog over TLS (RFC 5425) with real clients: openssl s_client, rsyslog's
gnutls driver, a Twisted client and Python's ssl module (from chosen source
addresses), against a real collector process; and the TLS policy itself."""

import datetime
import signal
import socket
import ssl as stdlib_ssl
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from collector.config import ConfigError, TlsSettings
from collector.net.tls import reload_revocation_lists, server_options
from collector_process import CollectorProcess, free_udp_port, wait_until
from conftest import require_binary


def openssl(*args, cwd):
    subprocess.run([require_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, a server certificate for localhost, and client certificates.

    The server's key is RSA: with it, static RSA key exchange and ECDHE-RSA
    suites could be negotiated, were the policy not to refuse them.
    """
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Test syslog CA", cwd=d)
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "server.ext"]),
                          ("hq", "hq-gw", []), ("branch", "branch-gw", []),
                          ("revoked", "revoked-gw", []), ("late", "late-gw", [])):
        key = ["-newkey", "rsa:2048", "-nodes"] if name == "server" else ec
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext, cwd=d)
    return d


def write_crl(pki, path, *revoked, authority_dir=None):
    """A CRL of the test CA (or the one in ``authority_dir``) revoking the certificates named (by file name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    authority_dir = authority_dir or pki
    authority = x509.load_pem_x509_certificate((authority_dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((authority_dir / "ca.key").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(authority.subject)
               .last_update(now - datetime.timedelta(minutes=1)).next_update(now + datetime.timedelta(days=1)))
    for name in revoked:
        serial = x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def collector(pki, tmp_path_factory, request):
    """A collector taking TLS, in one process or in two workers (the supervisor hands them the connections)."""
    workdir = tmp_path_factory.mktemp("tls-collector")
    # The collector's own: a test revokes more, and each collector starts from this one.
    write_crl(pki, workdir / "crl.pem", "revoked")
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
crl = "{workdir / 'crl.pem'}"

[[firewall]]
name = "hq"
addresses = ["127.0.0.1"]
tls_subject = "hq-gw"

[[firewall]]
name = "branch"
addresses = ["192.0.2.0/24"]
tls_subject = "branch-gw"

[[firewall]]
name = "forwarder"
addresses = ["127.0.5.1"]
relay = true

[[firewall]]
name = "plain"
addresses = ["127.0.5.2"]
""")
    process = CollectorProcess(workdir, config=str(config), listeners=frozenset({"udp", "tcp", "metrics", "tls"}))
    yield process
    process.kill()


def s_client(collector, pki, payload, certificate=None, options=()):
    command = [require_binary("openssl"), "s_client", "-connect", f"127.0.0.1:{collector.ports['tls']}",
               "-CAfile", str(pki / "ca.pem"), "-verify_return_error", "-quiet", "-no_ign_eof", *options]
    if certificate:
        command += ["-cert", str(pki / f"{certificate}.pem"), "-key", str(pki / f"{certificate}.key")]
    return subprocess.run(command, input=payload, capture_output=True, timeout=30)


def tls_send(collector, pki, certificate, payload, source):
    """Send over TLS from the loopback address ``source``; False when the collector cut the connection."""
    context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.load_cert_chain(pki / f"{certificate}.pem", pki / f"{certificate}.key")
    with socket.create_connection(("127.0.0.1", collector.ports["tls"]), timeout=10,
                                  source_address=(source, 0)) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(payload)
                # The collector sends nothing: a read ends with its close,
                # or times out while it keeps the connection.
                sock.settimeout(0.5)
                try:
                    return sock.recv(1) != b""
                except TimeoutError:
                    return True
        except (stdlib_ssl.SSLError, ConnectionError):
            return False


def refused(collector, reason):
    return collector.sample("syslog_collector_refused_connections_total", reason=reason) or 0


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
    used = collector.sample("syslog_collector_impersonations_total", host="branch") or 0
    s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Shutdown."), certificate="branch")
    collector.wait_for("syslog_collector_refused_connections_total", before + 1, reason="tls_subject_mismatch")
    assert count(collector, "branch") == 0
    assert "certificate subject 'branch-gw'" in collector.log()
    assert collector.sample("syslog_collector_impersonations_total", host="branch") == used + 1


def test_a_certificate_tags_messages_from_a_relay(collector, pki):
    # The relay passes HOSTNAMEs on: tagged "hq", the message was tagged by
    # the certificate, not by the address it came from or its HOSTNAME.
    before = count(collector, "hq"), count(collector, "branch")
    message = octet(b"<116>1 - not-hq security - - - Engine: Startup.")
    assert tls_send(collector, pki, "hq", message, source="127.0.5.1")
    assert tls_send(collector, pki, "branch", message, source="127.0.5.1")
    collector.wait_for("syslog_collector_received_messages_total", before[0] + 1, host="hq", transport="tls")
    collector.wait_for("syslog_collector_received_messages_total", before[1] + 1, host="branch", transport="tls")
    assert count(collector, "not-hq") == 0 and count(collector, "forwarder") == 0


@pytest.mark.parametrize("source", ["127.0.5.9", "127.0.5.2"], ids=["unregistered", "another-firewall"])
def test_a_certificate_is_refused_from_elsewhere(collector, pki, source):
    before = refused(collector, "tls_subject_mismatch"), count(collector, "hq")
    used = collector.sample("syslog_collector_impersonations_total", host="hq") or 0
    tls_send(collector, pki, "hq", octet(b"<116>1 - hq-gw security - - - Engine: Startup."), source=source)
    collector.wait_for("syslog_collector_refused_connections_total", before[0] + 1, reason="tls_subject_mismatch")
    collector.wait_for("syslog_collector_impersonations_total", used + 1, host="hq")
    assert count(collector, "hq") == before[1]
    assert count(collector, source) == 0 and count(collector, "plain") == 0


@pytest.mark.parametrize("options", [["-tls1_2", "-cipher", "AES128-SHA"],
                                     ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"],
                                     ["-tls1_1"]],
                         ids=["static-rsa", "cbc-sha1", "tls1.1"])
def test_weak_suites_and_versions_are_refused(collector, pki, options):
    before = refused(collector, "tls_handshake"), count(collector, "hq")
    result = s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Startup."),
                      certificate="hq", options=options)
    assert result.returncode != 0
    collector.wait_for("syslog_collector_refused_connections_total", before[0] + 1, reason="tls_handshake")
    assert count(collector, "hq") == before[1]


@pytest.mark.parametrize("options", [["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
                                     ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"],
                                     ["-tls1_3"]])
def test_strong_suites_are_taken(collector, pki, options):
    before = count(collector, "hq")
    s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Startup."),
             certificate="hq", options=options)
    collector.wait_for("syslog_collector_received_messages_total", before + 1, host="hq", transport="tls")


def test_a_revoked_certificate_fails_the_handshake(collector, pki):
    # From hq's address: were the certificate not revoked, it would be
    # refused as the wrong subject, not in the handshake.
    before = refused(collector, "tls_handshake"), refused(collector, "tls_subject_mismatch")
    s_client(collector, pki, octet(b"<116>1 - hq-gw security - - - Engine: Startup."), certificate="revoked")
    collector.wait_for("syslog_collector_refused_connections_total", before[0] + 1, reason="tls_handshake")
    assert refused(collector, "tls_subject_mismatch") == before[1]
    assert "refused the TLS handshake of 127.0.0.1:" in collector.log()
    assert "certificate revoked by tls.crl: serial 0x" in collector.log()


def test_the_crl_is_read_again_on_sighup(collector, pki):
    message = octet(b"<116>1 - late-gw security - - - Engine: Startup.")
    assert tls_send(collector, pki, "late", message, source="127.0.5.8")
    # Unregistered, and bound to no firewall: tagged by its HOSTNAME.
    collector.wait_for("syslog_collector_received_messages_total", 1, host="late-gw", transport="tls")
    reread = collector.log().count("re-read the certificate revocation list")
    write_crl(pki, collector.workdir / "crl.pem", "revoked", "late")
    collector.process.send_signal(signal.SIGHUP)
    workers = 2 if "count = 2" in (collector.workdir / "collector.toml").read_text() else 1
    assert wait_until(lambda: collector.log().count("re-read the certificate revocation list") >= reread + workers)
    before = refused(collector, "tls_handshake")
    assert not tls_send(collector, pki, "late", message, source="127.0.5.8")
    collector.wait_for("syslog_collector_refused_connections_total", before + 1, reason="tls_handshake")
    assert count(collector, "late-gw") == 1


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


def tls_settings(pki, crl=None, verify_clients=True):
    return TlsSettings(enabled=True, certificate=pki / "server.pem", key=pki / "server.key", ca=pki / "ca.pem",
                       verify_clients=verify_clients, crl=crl)


def test_tls_1_2_takes_only_ecdhe_with_aead_ciphers(pki):
    from OpenSSL import SSL

    ciphers = SSL.Connection(server_options(tls_settings(pki)).getContext(), None).get_cipher_list()
    tls_1_2 = [c for c in ciphers if not c.startswith("TLS_")]
    assert tls_1_2 and all(c.startswith("ECDHE-") and ("-GCM-" in c or "CHACHA20" in c) for c in tls_1_2), ciphers
    assert "TLS_AES_128_GCM_SHA256" in ciphers  # TLS 1.3


def test_a_crl_needs_client_certificates(pki, tmp_path):
    write_crl(pki, tmp_path / "crl.pem")
    with pytest.raises(ConfigError) as error:
        server_options(tls_settings(pki, tmp_path / "crl.pem", verify_clients=False))
    assert error.value.key == "tls.crl" and "verify_clients" in error.value.problem


def test_a_crl_must_be_signed_by_a_ca_of_tls_ca(pki, tmp_path):
    # Another CA of the same name: its CRL names the right issuer, and lies.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test syslog CA", cwd=tmp_path)
    write_crl(pki, tmp_path / "crl.pem", "hq", authority_dir=tmp_path)
    with pytest.raises(ConfigError) as error:
        server_options(tls_settings(pki, tmp_path / "crl.pem"))
    assert error.value.key == "tls.crl" and "not signed by a certificate of tls.ca" in error.value.problem
    (tmp_path / "crl.pem").write_text("not a CRL")
    with pytest.raises(ConfigError, match="no PEM CRL"):
        server_options(tls_settings(pki, tmp_path / "crl.pem"))


def test_a_crl_that_no_longer_loads_leaves_the_one_in_use(pki, tmp_path):
    from cryptography import x509

    from collector.net.tls import RevocationList

    def certificate(name):
        return x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes())

    authorities = [certificate("ca")]
    crl = tmp_path / "crl.pem"
    write_crl(pki, crl, "revoked")
    revocations = RevocationList(crl, authorities)
    assert revocations.revokes(certificate("revoked")) and not revocations.revokes(certificate("hq"))
    write_crl(pki, crl, "revoked", "hq")
    revocations.reload()
    assert revocations.revokes(certificate("hq"))
    crl.write_text("")
    with pytest.raises(ConfigError):
        revocations.reload()
    assert revocations.revokes(certificate("hq"))


def test_sighup_rereads_every_crl_in_use(pki, tmp_path):
    crl = tmp_path / "crl.pem"
    write_crl(pki, crl, "revoked")
    options = server_options(tls_settings(pki, crl))
    assert crl in reload_revocation_lists()
    crl.write_text("")
    with pytest.raises(ConfigError) as error:
        reload_revocation_lists()
    assert error.value.key == "tls.crl"
    del options


def test_an_open_connection_whose_certificate_is_revoked_is_closed_at_sighup(collector, pki):
    # Last in this module: it revokes the branch certificate for good.
    context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.load_cert_chain(pki / "branch.pem", pki / "branch.key")
    before = count(collector, "branch")
    with socket.create_connection(("127.0.0.1", collector.ports["tls"]), timeout=10,
                                  source_address=("127.0.5.1", 0)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            # Through the relay's address: tagged by its certificate.
            sock.sendall(octet(b"<116>1 - branch-gw security - - - Engine: Startup."))
            collector.wait_for("syslog_collector_received_messages_total", before + 1, host="branch",
                               transport="tls")
            write_crl(pki, collector.workdir / "crl.pem", "revoked", "late", "branch")
            collector.process.send_signal(signal.SIGHUP)
            collector.wait_for("syslog_collector_closed_connections_total", 1, reason="tls_revoked")
            sock.settimeout(5)
            try:
                assert sock.recv(1) == b""
            except (stdlib_ssl.SSLError, ConnectionError):
                pass
