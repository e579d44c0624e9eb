"""A throwaway certificate authority for trying TLS and mTLS locally (and for tests and
the benchmark): never for production, where certificates come from your own PKI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class DevPki:
    """Where the CA and the server and client certificates and keys were written."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def make_dev_pki(
    directory: Path, *, name: str = "dev", hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 30,
) -> DevPki:  # fmt: skip
    """A CA, a server certificate for `hosts` and a client certificate, all signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} CA"))
        .issuer_name(_name(f"{name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    paths: dict[str, Path] = {}
    for who, san in (("server", sans), ("client", [x509.DNSName(f"{name}-client")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} {who}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths[f"{who}_cert"] = directory / f"{name}-{who}.pem"
        paths[f"{who}_key"] = directory / f"{name}-{who}.key"
        _write(paths[f"{who}_cert"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(
            paths[f"{who}_key"],
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
    ca_path = directory / f"{name}-ca.pem"
    _write(ca_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    return DevPki(ca=ca_path, **paths)
