"""TLS and mutual TLS credentials of the gRPC servers and channels, from
`GrpcSecuritySettings`.

A server's certificate, key and client CA are re-read when one of their files changes: gRPC
asks `_ReloadingCertificates.fetch` before each new handshake, and it answers a new
configuration only when a file's modification time or size moved, so a certificate rotated
on disk is served to the next connection without a restart (connections already open keep
the one they were made with).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flywheel.common.settings import GrpcSecuritySettings

log = logging.getLogger("flywheel.tls")


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in paths:
        stat = path.stat()
        stamps.append((stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def _check_pair(cert: bytes, key: bytes) -> None:
    """Raises ValueError unless `key` is the private key of `cert`: a rotation caught
    between its two writes must not be served."""
    public = x509.load_pem_x509_certificate(cert).public_key()
    private = serialization.load_pem_private_key(key, None)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise ValueError("the key does not match the certificate")


class _ReloadingCertificates:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self._paths = (cert, key) + ((client_ca,) if client_ca else ())
        self._lock = threading.Lock()
        self._stamp = _stamp(self._paths)
        self.initial = self._read()

    def _read(self) -> grpc.ServerCertificateConfiguration:
        cert, key = (path.read_bytes() for path in self._paths[:2])
        _check_pair(cert, key)
        client_ca = self._paths[2].read_bytes() if len(self._paths) > 2 else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None keeps the configuration in use (gRPC's contract for the fetcher)."""
        with self._lock:
            try:
                stamp = _stamp(self._paths)
                if stamp == self._stamp:
                    return None
                config = self._read()
            except (OSError, ValueError) as error:
                # Half-written files during a rotation: keep serving the old pair, retry at
                # the next handshake.
                log.warning("TLS files not readable, keeping the current ones: %s", error)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded", extra={"cert": str(self._paths[0])})
            return config


def server_credentials(security: GrpcSecuritySettings) -> grpc.ServerCredentials | None:
    """The credentials a server listens with: None for plain text."""
    if not security.server_tls:
        return None
    certificates = _ReloadingCertificates(
        security.tls_cert, security.tls_key, security.tls_client_ca)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial, certificates.fetch,
        require_client_authentication=security.mutual_tls,
    )


def channel_credentials(security: GrpcSecuritySettings) -> grpc.ChannelCredentials | None:
    """The credentials a client dials with: None for plain text."""
    if not security.client_tls:
        return None
    key = cert = None
    if security.tls_client_cert is not None:
        cert = security.tls_client_cert.read_bytes()
        key = security.tls_client_key.read_bytes()
    return grpc.ssl_channel_credentials(security.tls_ca.read_bytes(), key, cert)


def channel_name_options(security: GrpcSecuritySettings) -> list[tuple[str, str]]:
    if security.client_tls and security.tls_server_name:
        return [("grpc.ssl_target_name_override", security.tls_server_name)]
    return []
