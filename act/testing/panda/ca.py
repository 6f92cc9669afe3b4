"""The test double's throw-away CA (:class:`TestCA`): server certificates for HTTPS and
RFC 3820 proxies for clients."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import random
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
# ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage id-ppl-inheritAll } }
_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


class TestCA:
    """A throw-away CA for tests: server certificates and RFC 3820 client proxies."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "act PanDA test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        *,
        lifetime: dt.timedelta,
        server_names: Sequence[str] = (),
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server_names:
            names: list[x509.GeneralName] = []
            for host in server_names:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self._key, hashes.SHA256())

    def server_cert(self, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
        """(certificate, key) files for a server answering as ``hosts``."""
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        cert = self._issue(subject, key, lifetime=dt.timedelta(days=7), server_names=hosts)
        cert_file, key_file = self.dir / "server.pem", self.dir / "server.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_file, _pem_key(key))
        return cert_file, key_file

    def proxy(
        self,
        path: Path,
        *,
        cn: str = "act-test-pilot",
        lifetime: dt.timedelta = dt.timedelta(hours=96),
        user_lifetime: dt.timedelta = dt.timedelta(days=365),
    ) -> Path:
        """Write an RFC 3820 proxy (proxy cert, its key, the user cert; mode 0600) for the user
        ``/O=act-test/CN=<cn>``. A negative ``lifetime`` gives an expired proxy."""
        user_key = _key()
        user_subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "act-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        user = self._issue(user_subject, user_key, lifetime=user_lifetime)
        proxy_key = _key()
        serial = random.randint(10**8, 10**9)
        now = dt.datetime.now(dt.timezone.utc)
        proxy_subject = x509.Name(
            [*user_subject, x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]
        )
        proxy = (
            x509.CertificateBuilder()
            .subject_name(proxy_subject)
            .issuer_name(user.subject)
            .public_key(proxy_key.public_key())
            .serial_number(serial)
            .not_valid_before(min(now, now + lifetime) - dt.timedelta(hours=1))
            .not_valid_after(now + lifetime)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, _INHERIT_ALL), critical=True)
            .sign(user_key, hashes.SHA256())
        )
        data = (
            proxy.public_bytes(serialization.Encoding.PEM)
            + _pem_key(proxy_key)
            + user.public_bytes(serialization.Encoding.PEM)
        )
        path = Path(path)
        _write_private(path, data)
        return path
