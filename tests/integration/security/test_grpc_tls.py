"""The server builder's transport on real sockets: TLS refused to a client trusting another
CA, a client without a certificate refused under mutual TLS, and a certificate rotated on
disk served to the next connection without a restart."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from flywheel.common.grpc.client import health_status
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.settings import GrpcSecuritySettings, ServiceSettings
from flywheel.infra.certificates import LocalCA


async def _serve(security: GrpcSecuritySettings) -> GrpcServer:
    readiness = Readiness([])
    server = GrpcServer(ServiceSettings(grpc_port=0, shutdown_grace_s=0.2), readiness, security)
    await server.start()
    return server


def _served_serial(port: int, ca: Path, cert: Path, key: Path) -> int:
    """The serial number of the certificate the server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.set_alpn_protocols(["h2"])
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          context.wrap_socket(raw, server_hostname="localhost") as tls):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def pki(tmp_path: Path):
    ca = LocalCA.create(tmp_path / "ca")
    other = LocalCA.create(tmp_path / "other")
    return ca, other, ca.issue("server"), ca.issue("client", server=False)


async def test_untrusted_ca_and_missing_client_certificate_are_refused(pki) -> None:
    ca, other, server_pair, client_pair = pki
    server = await _serve(GrpcSecuritySettings(
        tls_cert=server_pair.cert, tls_key=server_pair.key, tls_client_ca=ca.ca_file))
    target = f"127.0.0.1:{server.port}"
    try:
        trusted = GrpcSecuritySettings(tls_ca=ca.ca_file, tls_client_cert=client_pair.cert,
                                       tls_client_key=client_pair.key)
        untrusted = GrpcSecuritySettings(tls_ca=other.ca_file, tls_client_cert=client_pair.cert,
                                         tls_client_key=client_pair.key)
        no_certificate = GrpcSecuritySettings(tls_ca=ca.ca_file)
        foreign = other.issue("intruder", server=False)
        foreign_certificate = GrpcSecuritySettings(tls_ca=ca.ca_file, tls_client_cert=foreign.cert,
                                                   tls_client_key=foreign.key)
        statuses = await asyncio.gather(*(asyncio.to_thread(health_status, target, "", 3.0, s)
                                          for s in (trusted, untrusted, no_certificate,
                                                    foreign_certificate, None)))
        assert statuses == ["SERVING", "UNREACHABLE", "UNREACHABLE", "UNREACHABLE",
                            "UNREACHABLE"]
    finally:
        await server.stop()


async def test_rotated_certificate_is_served_without_restart(pki, tmp_path: Path) -> None:
    ca, _, _, client_pair = pki
    live = tmp_path / "live"
    first = ca.issue("server", folder=live)
    server = await _serve(GrpcSecuritySettings(tls_cert=first.cert, tls_key=first.key,
                                               tls_client_ca=ca.ca_file))
    target = f"127.0.0.1:{server.port}"
    try:
        before = await asyncio.to_thread(
            _served_serial, server.port, ca.ca_file, client_pair.cert, client_pair.key)
        expected = x509.load_pem_x509_certificate(first.cert.read_bytes()).serial_number
        assert before == expected
        rotated = ca.issue("server", folder=live)  # same paths, new key and certificate
        after = await asyncio.to_thread(
            _served_serial, server.port, ca.ca_file, client_pair.cert, client_pair.key)
        assert after == x509.load_pem_x509_certificate(rotated.cert.read_bytes()).serial_number
        assert after != before
        client = GrpcSecuritySettings(tls_ca=ca.ca_file, tls_client_cert=client_pair.cert,
                                      tls_client_key=client_pair.key)
        assert await asyncio.to_thread(health_status, target, "", 3.0, client) == "SERVING"
    finally:
        await server.stop()


def test_token_without_tls_is_refused_by_the_client() -> None:
    from flywheel.common.grpc.client import sync_channel

    with pytest.raises(ValueError, match="FLYWHEEL_GRPC_TLS_CA"):
        sync_channel("127.0.0.1:1", security=GrpcSecuritySettings(token="t"))
