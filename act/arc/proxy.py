"""X509 proxies: read a proxy credential, and sign a CE's delegation request with it.

A delegation works like this: the CE makes a key pair and sends a certificate signing request
(CSR); the client issues a proxy certificate for that public key, signed by its own proxy's key,
and sends it back with its chain. The CE then holds a credential it can act with, while the
private key never leaves the CE.

ARC 6.17 writes its CSRs with ``version`` 2 (RFC 2986 says 0; fixed in ARC 6.18), and
``cryptography`` >= 38 refuses to load such a CSR. Rather than pin an old ``cryptography``, this
module reads the CSR itself: a minimal DER walk takes the ``CertificationRequestInfo`` apart,
loads the ``SubjectPublicKeyInfo`` with ``cryptography`` and checks the CSR's self-signature over
the *original* ``CertificationRequestInfo`` bytes (so the CE proved it holds the private key). The
version is read and only values 0 and 2 are accepted; nothing else of the CSR is used (its subject
and attributes are ignored: the proxy's subject is derived from the signing credential, as
RFC 3820 requires).

The proxy issued is an RFC 3820 proxy with the ``inheritAll`` policy: subject = issuer's subject
plus ``CN=<serial>``, a critical ProxyCertInfo extension, and a lifetime that never exceeds the
signing credential's.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from act.common.timeutil import as_utc, utcnow

#: id-pe-proxyCertInfo (RFC 3820) and the inheritAll policy language.
PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
INHERIT_ALL = "1.3.6.1.5.5.7.21.1"
#: DER of ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage inheritAll } }.
_PROXY_CERT_INFO_DER = bytes.fromhex("300c300a06082b06010505071501")

_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC )?PRIVATE KEY)-----[A-Za-z0-9+/=\s]+-----END \1-----"
)
_PEM_CSR = re.compile(
    rb"-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]+)"
    rb"-----END (?:NEW )?CERTIFICATE REQUEST-----"
)

_SIGNATURE_HASHES: dict[str, hashes.HashAlgorithm] = {
    "1.2.840.113549.1.1.4": hashes.MD5(),  # md5WithRSAEncryption (refused below)
    "1.2.840.113549.1.1.5": hashes.SHA1(),
    "1.2.840.113549.1.1.11": hashes.SHA256(),
    "1.2.840.113549.1.1.12": hashes.SHA384(),
    "1.2.840.113549.1.1.13": hashes.SHA512(),
    "1.2.840.10045.4.3.2": hashes.SHA256(),
    "1.2.840.10045.4.3.3": hashes.SHA384(),
    "1.2.840.10045.4.3.4": hashes.SHA512(),
}


class ProxyError(ValueError):
    """A credential or a delegation request that cannot be used; the message says why."""


@dataclass(frozen=True)
class Credential:
    """A proxy file: its certificate, its private key, and the rest of its chain."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def not_after(self) -> datetime:
        return min(as_utc(c.not_valid_after_utc) for c in (self.cert, *self.chain))


def load_credential(path: str) -> Credential:
    """Read a proxy file (certificate, key, chain, in any order of PEM blocks)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ProxyError(f"cannot read credential {path}: {error.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ProxyError(f"credential {path}: no PEM certificate in it") from None
    key = None
    found = _PEM_KEY.search(data)
    if found is not None:
        try:
            loaded = serialization.load_pem_private_key(found.group(0), password=None)
        except (ValueError, TypeError):
            raise ProxyError(f"credential {path}: its private key cannot be read") from None
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ProxyError(f"credential {path}: unsupported key type")
        key = loaded
    if key is None:
        raise ProxyError(f"credential {path}: no private key in it")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ProxyError(f"credential {path}: the first certificate does not match the key")
    return Credential(cert=certs[0], key=key, chain=tuple(certs[1:]))


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """One DER element at ``pos``: (tag, start of its content, end of its content)."""
    if pos + 2 > len(data):
        raise ProxyError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ProxyError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise ProxyError("truncated DER")
    return tag, pos, end


def _oid(content: bytes) -> str:
    if not content:
        raise ProxyError("empty OID")
    parts = [content[0] // 40, content[0] % 40]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


@dataclass(frozen=True)
class DelegationRequest:
    """What act takes from a CE's CSR: the public key to certify (its signature checked)."""

    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    version: int


def parse_csr(pem: bytes | str) -> DelegationRequest:
    """Read a PKCS#10 CSR without ``cryptography``'s version check, verifying its signature."""
    text = pem.encode() if isinstance(pem, str) else pem
    found = _PEM_CSR.search(text)
    if found is None:
        raise ProxyError("the delegation request is not a PEM certificate request")
    try:
        data = base64.b64decode(b"".join(found.group(1).split()), validate=True)
    except ValueError:
        raise ProxyError("the delegation request is not valid base64") from None
    tag, start, end = _read_tlv(data, 0)
    if tag != 0x30 or end != len(data):
        raise ProxyError("the delegation request is not one DER SEQUENCE")
    # CertificationRequestInfo, kept as its exact bytes for the signature check.
    info_tag, info_start, info_end = _read_tlv(data, start)
    if info_tag != 0x30:
        raise ProxyError("bad CertificationRequestInfo")
    info_der = data[start:info_end]
    tag, v_start, v_end = _read_tlv(data, info_start)
    if tag != 0x02 or v_end - v_start != 1:
        raise ProxyError("bad CSR version")
    version = data[v_start]
    if version not in (0, 2):  # 2: what ARC 6.17 writes
        raise ProxyError(f"unexpected CSR version {version}")
    tag, _, name_end = _read_tlv(data, v_end)  # subject Name (ignored)
    if tag != 0x30:
        raise ProxyError("bad CSR subject")
    tag, _, spki_end = _read_tlv(data, name_end)
    if tag != 0x30:
        raise ProxyError("bad CSR public key")
    try:
        public_key = serialization.load_der_public_key(data[name_end:spki_end])
    except (ValueError, TypeError):
        raise ProxyError("the CSR's public key cannot be read") from None
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ProxyError("unsupported public key type in the CSR")
    # signatureAlgorithm AlgorithmIdentifier, then the signature BIT STRING.
    tag, alg_start, alg_end = _read_tlv(data, info_end)
    if tag != 0x30:
        raise ProxyError("bad CSR signature algorithm")
    tag, oid_start, oid_end = _read_tlv(data, alg_start)
    if tag != 0x06:
        raise ProxyError("bad CSR signature algorithm")
    algorithm = _oid(data[oid_start:oid_end])
    tag, sig_start, sig_end = _read_tlv(data, alg_end)
    if tag != 0x03 or sig_end != end or sig_end - sig_start < 2 or data[sig_start] != 0:
        raise ProxyError("bad CSR signature")
    signature = data[sig_start + 1 : sig_end]
    digest = _SIGNATURE_HASHES.get(algorithm)
    if digest is None or isinstance(digest, hashes.MD5):
        raise ProxyError(f"unsupported CSR signature algorithm {algorithm}")
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, info_der, padding.PKCS1v15(), digest)
        else:
            public_key.verify(signature, info_der, ec.ECDSA(digest))
    except InvalidSignature:
        raise ProxyError("the CSR's signature does not match its public key") from None
    return DelegationRequest(public_key=public_key, version=version)


def sign_request(
    csr_pem: bytes | str, credential: Credential, lifetime: timedelta
) -> tuple[bytes, datetime]:
    """Issue an RFC 3820 proxy for the CSR's key; return the PEM chain to upload and its expiry."""
    request = parse_csr(csr_pem)
    now = utcnow()
    not_after = min(now + lifetime, credential.not_after)
    if not_after <= now:
        raise ProxyError("the credential has expired")
    serial = secrets.randbits(63) | 1
    subject = x509.Name(
        [
            *credential.cert.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(credential.cert.subject)
        .public_key(request.public_key)
        .serial_number(serial)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.UnrecognizedExtension(PROXY_CERT_INFO, _PROXY_CERT_INFO_DER), critical=True
        )
    )
    cert = builder.sign(credential.key, hashes.SHA256())
    pem = b"".join(
        c.public_bytes(serialization.Encoding.PEM)
        for c in (cert, credential.cert, *credential.chain)
    )
    return pem, as_utc(cert.not_valid_after_utc)
