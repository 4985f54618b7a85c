"""Certificates for TLS tests, made with ``cryptography``: a CA, a server certificate for
127.0.0.1 and localhost, station (client) certificates, and another CA nobody trusts.

Use it from a session-scoped fixture::

    @pytest.fixture(scope="session")
    def pki(tmp_path_factory) -> TestPki:
        return TestPki(tmp_path_factory.mktemp("pki"))

then ``pki.station("CP-1")`` (right CN), ``pki.station("CP-1", expired=True)``,
``pki.station("CP-1", other_ca=True)`` (untrusted), ``pki.server_certificate()`` (a new one,
for reloads), ``pki.client_context(...)`` (what a station or a peer connects with). Keys are
EC P-256 (fast to make), written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class TestPki:
    """A directory of test certificates (see the module's docstring)."""

    __test__ = False  # (not a test class)

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._serial = 1
        self.ca = self._ca("csms test CA", "ca")
        self.other_ca = self._ca("someone else's CA", "other-ca")
        self.server = self.server_certificate("server")

    # ------------------------------------------------------------------ making

    def _issue(
        self,
        name: str,
        cn: str,
        issuer: Issued | None,
        *,
        ca: bool = False,
        server: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        org: str | None = None,
        password: bytes | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        subject = x509.Name(attrs)
        self._serial += 1
        start = not_before or _now() - DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.certificate.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after or start + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
                False,
            )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
            builder = builder.add_extension(usage, critical=True)
            eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        signer = issuer.private_key if issuer else key
        cert = builder.sign(signer, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        chain = (cert,) if issuer is None or ca else (cert, issuer.certificate)
        cert_path.write_bytes(_pem(*chain))
        _write_key(key_path, key, password)
        return Issued(cert_path, key_path, cert, key)

    def _ca(self, cn: str, name: str) -> Issued:
        return self._issue(name, cn, None, ca=True, not_after=_now() + 3650 * DAY)

    def server_certificate(
        self, name: str | None = None, password: bytes | None = None, days: int = 365
    ) -> Issued:
        """A new server certificate (chain: leaf, CA) for 127.0.0.1 and localhost, valid
        from a day ago for ``days``."""
        name = name or f"server-{self._serial}"
        start = _now() - DAY
        return self._issue(
            name,
            "localhost",
            self.ca,
            server=True,
            password=password,
            not_before=start,
            not_after=start + days * DAY,
        )

    def station(
        self,
        cn: str,
        *,
        expired: bool = False,
        other_ca: bool = False,
        name: str | None = None,
        org: str | None = "Operador de Teste Lda",
    ) -> Issued:
        """A station's client certificate with subject CN ``cn``: from the CA, or from
        another one; expired yesterday or valid for a year."""
        issuer = self.other_ca if other_ca else self.ca
        name = name or f"station-{cn}-{self._serial}"
        if expired:
            start = _now() - 30 * DAY
            return self._issue(name, cn, issuer, not_before=start, not_after=_now() - DAY, org=org)
        return self._issue(name, cn, issuer, org=org)

    # ------------------------------------------------------------------ using

    def client_context(
        self,
        cert: Issued | None = None,
        *,
        trust: Path | None = None,
        maximum_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client's context: trusting the test CA (or ``trust``), with ``cert`` as its
        client certificate."""
        ctx = ssl.create_default_context(cafile=str(trust or self.ca.cert))
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        if maximum_version is not None:
            ctx.maximum_version = maximum_version
        return ctx
