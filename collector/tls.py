"""TLS for syslog (RFC 5425): the server's context from the ``[tls]`` settings."""

from __future__ import annotations

import re
from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.internet import ssl

from collector.config import ConfigError, TlsSettings

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def server_options(settings: TlsSettings) -> ssl.CertificateOptions:
    """Load the certificate, key and CA; a problem is a ``ConfigError`` naming the key."""
    assert settings.certificate is not None and settings.key is not None
    chain = _certificates("tls.certificate", settings.certificate)
    try:
        key = ssl.KeyPair.load(_read("tls.key", settings.key), crypto.FILETYPE_PEM)
    except SSL.Error as e:
        raise ConfigError("tls.key", f"no private key in {str(settings.key)!r}: {e}") from None
    authorities = _certificates("tls.ca", settings.ca) if settings.ca is not None else []
    options = ssl.CertificateOptions(
        privateKey=key.original,
        certificate=chain[0].original,
        extraCertChain=[c.original for c in chain[1:]],
        verify=settings.verify_clients,
        requireCertificate=settings.verify_clients,
        caCerts=[c.original for c in authorities] if settings.verify_clients else None,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    try:
        options.getContext()  # checks that the key matches the certificate
    except SSL.Error as e:
        raise ConfigError("tls.key", f"does not match tls.certificate: {e}") from None
    return options


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
