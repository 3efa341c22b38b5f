"""A local certificate authority for the secured mesh, made with `cryptography`.

`LocalCA.create(folder)` writes ``ca.pem`` (the certificate everyone trusts) and
``ca-key.pem``; `issue` signs a certificate for a name (a server's host names and addresses,
or a client's identity) and writes ``<name>.pem`` / ``<name>-key.pem`` beside them. Keys are
ECDSA P-256; files holding private keys are made readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _alt_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class LocalCA:
    def __init__(self, folder: Path, cert: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.folder = folder
        self._cert = cert
        self._key = key

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @classmethod
    def create(cls, folder: Path, common_name: str = "flywheel local CA",
               days: int = 3650) -> LocalCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(folder / "ca-key.pem", _key_pem(key))
        _write_public(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, cert, key)

    @classmethod
    def load(cls, folder: Path) -> LocalCA:
        cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), None)
        return cls(folder, cert, key)

    @classmethod
    def open(cls, folder: Path) -> LocalCA:
        """The CA kept in `folder`, made there the first time."""
        if (folder / "ca.pem").exists() and (folder / "ca-key.pem").exists():
            return cls.load(folder)
        return cls.create(folder)

    def issue(self, name: str, hosts: tuple[str, ...] = LOCAL_NAMES, *,
              client: bool = True, server: bool = True, days: int = 365,
              folder: Path | None = None) -> Issued:
        """A certificate for `name` (its common name; `hosts` as subject alternative names
        for a server), valid `days`, written as ``<name>.pem`` and ``<name>-key.pem``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if server and hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        out = folder or self.folder
        issued = Issued(out / f"{name}.pem", out / f"{name}-key.pem")
        # The key first: a reader that sees the new certificate finds its key in place.
        _write_private(issued.key, _key_pem(key))
        _write_public(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
        return issued
