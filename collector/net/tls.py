"""TLS for syslog (RFC 5425): the server's context from the ``[tls]`` settings.

The policy: TLS 1.3, and TLS 1.2 with ECDHE key exchange and AEAD ciphers
only. With ``tls.crl``, a client certificate that a CRL revokes, or one
issued by a CA that a CRL revokes, fails the handshake; the CRLs are
re-read on SIGHUP (``reload_revocation_lists``).
"""

from __future__ import annotations

import re
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.logger import Logger

from collector.config import ConfigError, TlsSettings
from collector.logs import RateLimitedLog

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)

# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD (AES-GCM, ChaCha20-Poly1305)
# only, so no static RSA key exchange, no CBC and no SHA-1 MAC. TLS 1.3's
# suites are all AEAD and are left as OpenSSL has them.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_ACCEPTABLE_CIPHERS = ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS)

_log = Logger(namespace=__name__)

# The revocation lists of this process's TLS contexts, for SIGHUP to re-read.
_revocation_lists: weakref.WeakSet[RevocationList] = weakref.WeakSet()


class CertificateRevoked(SSL.Error):
    """A client's certificate chain holds a certificate that ``tls.crl`` revokes.

    Raised by the verify callback: pyOpenSSL raises it again from the
    handshake, which then fails like any other, and its text reaches the
    log line of the refusal.
    """


def server_options(settings: TlsSettings) -> ssl.CertificateOptions:
    """Load the certificate, key, CA and CRL; a problem is a ``ConfigError`` naming the key."""
    assert settings.certificate is not None and settings.key is not None
    chain = _certificates("tls.certificate", settings.certificate)
    try:
        key = ssl.KeyPair.load(_read("tls.key", settings.key), crypto.FILETYPE_PEM)
    except SSL.Error as e:
        raise ConfigError("tls.key", f"no private key in {str(settings.key)!r}: {e}") from None
    authorities = _certificates("tls.ca", settings.ca) if settings.ca is not None else []
    revocations = None
    if settings.crl is not None:
        if not settings.verify_clients:
            raise ConfigError("tls.crl", "needs tls.verify_clients = true: without client "
                              "certificates there is nothing to revoke")
        revocations = RevocationList(settings.crl, [c.original.to_cryptography() for c in authorities])
    options = ssl.CertificateOptions(
        privateKey=key.original,
        certificate=chain[0].original,
        extraCertChain=[c.original for c in chain[1:]],
        verify=settings.verify_clients,
        requireCertificate=settings.verify_clients,
        caCerts=[c.original for c in authorities] if settings.verify_clients else None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=_ACCEPTABLE_CIPHERS,
    )
    try:
        context = options.getContext()  # checks that the key matches the certificate
    except SSL.Error as e:
        raise ConfigError("tls.key", f"does not match tls.certificate: {e}") from None
    if revocations is not None:
        # The context is made once and shared by every connection: its
        # callback holds the list, which SIGHUP re-reads in place.
        context.set_verify(context.get_verify_mode(), revocations.verify)
        _revocation_lists.add(revocations)
    return options


def is_revoked(chain: list[crypto.X509]) -> bool:
    """Whether a CRL of this process revokes a certificate of a peer's chain."""
    certificates = [c.to_cryptography() for c in chain]
    return any(revocations.revokes(c) for revocations in list(_revocation_lists) for c in certificates)


def reload_revocation_lists() -> list[Path]:
    """Re-read the ``tls.crl`` of every TLS context of this process; return their paths.

    A file that no longer loads leaves its list as it was, and the first
    such problem is raised as a ``ConfigError`` once the others are read.
    """
    # Each path once: the contexts that start-up made only to check the
    # settings may linger until the garbage collector finds them.
    reloaded: dict[Path, None] = {}
    problems = []
    for revocations in list(_revocation_lists):
        try:
            revocations.reload()
        except ConfigError as e:
            problems.append(e)
        else:
            reloaded[revocations.path] = None
    if problems:
        raise problems[0]
    return list(reloaded)


class RevocationList:
    """The certificates that the CRLs of a file revoke, by issuer and serial number.

    Every CRL must be signed by a certificate of ``tls.ca``: a CRL is only
    believed from the CA whose certificates it revokes.
    """

    def __init__(self, path: Path, authorities: list[x509.Certificate]) -> None:
        self.path = path
        self._authorities = authorities
        self._revoked: frozenset[tuple[x509.Name, int]] = frozenset()
        # The refusal's own log line is shared with every other refusal's.
        self._refusals = RateLimitedLog(_log, _MonotonicClock())
        self.reload()

    def reload(self) -> None:
        revoked: set[tuple[x509.Name, int]] = set()
        blocks = _PEM_CRL.findall(_read("tls.crl", self.path))
        if not blocks:
            raise ConfigError("tls.crl", f"no PEM CRL in {str(self.path)!r}")
        now = datetime.now(UTC)
        for block in blocks:
            try:
                crl = x509.load_pem_x509_crl(block)
            except ValueError as e:
                raise ConfigError("tls.crl", f"bad CRL in {str(self.path)!r}: {e}") from None
            if not any(_signed_by(crl, authority) for authority in self._authorities):
                raise ConfigError("tls.crl", f"the CRL of {crl.issuer.rfc4514_string()!r} in {str(self.path)!r} "
                                  "is not signed by a certificate of tls.ca")
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                # Still used: what it revokes stays revoked.
                _log.warn("the CRL of {issuer} in {path} was due for renewal at {due}: fetch a new "
                          "one and send SIGHUP", issuer=crl.issuer.rfc4514_string(), path=str(self.path),
                          due=crl.next_update_utc.isoformat())
            revoked.update((crl.issuer, entry.serial_number) for entry in crl)
        self._revoked = frozenset(revoked)

    def revokes(self, certificate: x509.Certificate) -> bool:
        return (certificate.issuer, certificate.serial_number) in self._revoked

    def verify(self, connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int,
               ok: int) -> bool:
        """OpenSSL's verify callback, for each certificate of the client's chain."""
        if ok and self._revoked and self.revokes(certificate.to_cryptography()):
            revoked = CertificateRevoked(
                f"certificate revoked by tls.crl: serial {certificate.get_serial_number():#x}, "
                f"subject {certificate.get_subject().commonName!r}")
            self._refusals.warn("refused the TLS handshake of {peer}: {revoked}",
                                peer=_peer(connection), revoked=str(revoked))
            raise revoked
        return bool(ok)


class _MonotonicClock:
    def seconds(self) -> float:
        return time.monotonic()


def _peer(connection: SSL.Connection) -> str:
    """The client's address, from the TLS protocol that Twisted makes the connection's app data."""
    try:
        address = connection.get_app_data().transport.getPeer()
        return f"{address.host}:{address.port}"
    except AttributeError:
        return "a client"


def _signed_by(crl: x509.CertificateRevocationList, authority: x509.Certificate) -> bool:
    if crl.issuer != authority.subject:
        return False
    try:
        return crl.is_signature_valid(authority.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature):
        return False


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(key, f"cannot read {str(path)!r}: {e.strerror}") from None


def _certificates(key: str, path: Path) -> list[ssl.Certificate]:
    blocks = _PEM_CERTIFICATE.findall(_read(key, path))
    if not blocks:
        raise ConfigError(key, f"no PEM certificate in {str(path)!r}")
    try:
        return [ssl.Certificate.loadPEM(block) for block in blocks]
    except SSL.Error as e:
        raise ConfigError(key, f"bad certificate in {str(path)!r}: {e}") from None


def subject_common_name(certificate: object) -> str | None:
    """The subject CN of a peer certificate (pyOpenSSL ``X509``), if any."""
    if certificate is None:
        return None
    name: str | None = certificate.get_subject().commonName  # type: ignore[attr-defined]
    return name
