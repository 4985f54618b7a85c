"""X.509 for the security extension: station CSRs checked, station certificates signed by the
operator's CA (or by an external CA through a command), certificates described.

Everything a station sends is hostile: a CSR that is not PEM, does not parse, carries a
signature that does not verify, a weak key or the wrong names is refused with one line that
says why (:class:`CsrRefused`), never an exception from deeper down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import PkiSettings

log = structlog.get_logger("csms.pki")

MIN_RSA_BITS = 2048
ALLOWED_CURVES = ("secp256r1", "secp384r1")
# SignCertificate.req's csr is at most 5,500 characters (the schema); a chain from a sign
# command at most CertificateSigned.req's 10,000
MAX_CHAIN_CHARS = 10_000
MAX_STDERR_CHARS = 2000

CSR_BEGIN = "-----BEGIN CERTIFICATE REQUEST-----"
CERT_BEGIN = "-----BEGIN CERTIFICATE-----"


class CsrRefused(ValueError):
    """A CSR csms does not sign; the message says why (logged and stored)."""


class SigningError(RuntimeError):
    """The CSR was fine but could not be signed (no CA, CA unusable, sign command failed)."""


class CertificateError(ValueError):
    """A certificate (PEM given by the operator or a command) is unusable."""


def _name_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    out = []
    for attr in name.get_attributes_for_oid(oid):
        value = attr.value
        out.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    return out


def describe_key(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    return type(key).__name__


def check_csr(
    pem: str, station_id: str, organization: str | None
) -> x509.CertificateSigningRequest:
    """The CSR if csms may sign it for ``station_id``; else CsrRefused with the reason.

    Checked: one PEM certificate request that parses, whose self-signature verifies, whose
    key is RSA of at least 2048 bits or EC on P-256 or P-384, whose subject has exactly one
    CN equal to the charge point id and, when ``organization`` is configured, exactly one O
    equal to it."""
    if not isinstance(pem, str) or CSR_BEGIN not in pem:
        raise CsrRefused("not a PEM certificate request")
    if pem.count(CSR_BEGIN) != 1:
        raise CsrRefused("more than one certificate request")
    try:
        csr = x509.load_pem_x509_csr(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CsrRefused("the certificate request does not parse") from None
    try:
        valid = csr.is_signature_valid
        key = csr.public_key()
    except Exception:  # an unsupported algorithm inside: refused, whatever it is
        raise CsrRefused("the certificate request's key or signature is unsupported") from None
    if not valid:
        raise CsrRefused("the certificate request's signature is not valid")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRefused(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} required")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ALLOWED_CURVES:
            raise CsrRefused(f"EC key on {key.curve.name}; P-256 or P-384 required")
    else:
        raise CsrRefused(f"{describe_key(key)} key; RSA (2048 bits or more) or EC required")
    try:
        cns = _name_values(csr.subject, NameOID.COMMON_NAME)
        orgs = _name_values(csr.subject, NameOID.ORGANIZATION_NAME)
    except ValueError:
        raise CsrRefused("the certificate request's subject does not parse") from None
    if len(cns) != 1:
        raise CsrRefused(f"the subject must have one CN (it has {len(cns)})")
    if cns[0] != station_id:
        raise CsrRefused(f"subject CN {cns[0][:80]!r} is not the charge point id {station_id!r}")
    if organization is not None:
        if len(orgs) != 1:
            raise CsrRefused(f"the subject must have one O (it has {len(orgs)})")
        if orgs[0] != organization:
            raise CsrRefused(f"subject O {orgs[0][:80]!r} is not {organization!r}")
    return csr


# ---------------------------------------------------------------------- certificates


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What csms shows of a certificate."""

    subject: str
    issuer: str
    serial: str  # hexadecimal, lower case
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat().replace("+00:00", "Z"),
            "not_after": self.not_after.isoformat().replace("+00:00", "Z"),
            "fingerprint_sha256": self.fingerprint_sha256,
        }


def cert_info(cert: x509.Certificate) -> CertInfo:
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def load_pem_certificates(text: str | bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order; CertificateError if there is none or one
    does not parse."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    if CERT_BEGIN.encode() not in data:
        raise CertificateError("no PEM certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError("a PEM certificate does not parse") from None
    if not certs:
        raise CertificateError("no PEM certificate")
    return certs


def check_root_certificate(pem: str, now: datetime) -> x509.Certificate:
    """A certificate to install on a station as a root (InstallCertificate): one PEM
    certificate that parses, is a CA (basicConstraints cA) and is valid now."""
    certs = load_pem_certificates(pem)
    if len(certs) != 1:
        raise CertificateError(f"one certificate expected, {len(certs)} given")
    cert = certs[0]
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError("not a CA certificate (no basicConstraints)") from None
    except ValueError:
        raise CertificateError("the certificate's extensions do not parse") from None
    if not bc.ca:
        raise CertificateError("not a CA certificate (basicConstraints cA is false)")
    if cert.not_valid_after_utc <= now:
        raise CertificateError("the certificate has expired")
    if cert.not_valid_before_utc > now:
        raise CertificateError("the certificate is not valid yet")
    return cert


def check_signing_certificate(pem: str) -> x509.Certificate:
    """SignedUpdateFirmware's signingCertificate: one PEM certificate that parses."""
    certs = load_pem_certificates(pem)
    if len(certs) != 1:
        raise CertificateError(f"one certificate expected, {len(certs)} given")
    return certs[0]


def to_pem(certs: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


# ---------------------------------------------------------------------- the CA


class CertificateAuthority:
    """The operator's CA, from ``pki.ca_cert_file`` and ``pki.ca_key_file``."""

    def __init__(self, cert: x509.Certificate, key: Any) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def load(cls, cert_file: Path, key_file: Path, password: str | None) -> CertificateAuthority:
        """Raises SigningError with a line for the operator (never the passphrase)."""
        try:
            certs = load_pem_certificates(cert_file.read_bytes())
        except OSError as e:
            raise SigningError(f"pki.ca_cert_file {cert_file}: {e.strerror or e}") from None
        except CertificateError as e:
            raise SigningError(f"pki.ca_cert_file {cert_file}: {e}") from None
        try:
            key_pem = key_file.read_bytes()
        except OSError as e:
            raise SigningError(f"pki.ca_key_file {key_file}: {e.strerror or e}") from None
        try:
            key = serialization.load_pem_private_key(
                key_pem, password.encode("utf-8") if password else None
            )
        except TypeError:
            raise SigningError(
                f"pki.ca_key_file {key_file}: the key is encrypted and no passphrase was given "
                "(CSMS_PKI__CA_KEY_PASSWORD), or a passphrase was given for a clear key"
            ) from None
        except ValueError:
            raise SigningError(
                f"pki.ca_key_file {key_file}: not a PEM private key, or the passphrase is wrong"
            ) from None
        cert = certs[0]
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SigningError(f"pki.ca_key_file {key_file}: an RSA or EC key is required")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise SigningError("pki.ca_key_file does not hold the key of pki.ca_cert_file")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except (x509.ExtensionNotFound, ValueError):
            is_ca = False
        if not is_ca:
            raise SigningError("pki.ca_cert_file is not a CA certificate (basicConstraints cA)")
        return cls(cert, key)

    def sign(self, csr: x509.CertificateSigningRequest, days: int, now: datetime) -> str:
        """A leaf certificate for the CSR (its subject and key; clientAuth), valid ``days``
        but never beyond the CA's own expiry; the chain (leaf, then the CA) in PEM."""
        ca = self.cert
        not_after = min(now + timedelta(days=days), ca.not_valid_after_utc)
        if not_after <= now:
            raise SigningError("the CA certificate has expired")
        try:
            ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        public_key = csr.public_key()
        key_usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
            data_encipherment=False,
            key_agreement=isinstance(public_key, ec.EllipticCurvePublicKey),
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(secrets.randbits(127) | (1 << 126))
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
            .add_extension(aki, critical=False)
        )
        cert = builder.sign(self.key, hashes.SHA256())
        return to_pem([cert, ca])


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_ca(settings: PkiSettings) -> CertificateAuthority | None:
    """The configured CA (None when there is none); SigningError when it is unusable."""
    if settings.ca_cert_file is None or settings.ca_key_file is None:
        return None
    password = settings.ca_key_password.get_secret_value() if settings.ca_key_password else None
    return CertificateAuthority.load(settings.ca_cert_file, settings.ca_key_file, password)


async def run_sign_command(
    command: list[str], csr_pem: str, station_id: str, timeout: float
) -> str:
    """The PEM chain the external CA's command printed for the CSR. The command runs without
    a shell, with the CSR on stdin and CSMS_STATION_ID in its environment. SigningError
    when it fails, times out or prints no certificate (its stderr, bounded, in the message)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSMS_")}
    env["CSMS_STATION_ID"] = station_id
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as e:
        raise SigningError(f"sign command {command[0]!r} cannot run: {e.strerror or e}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(csr_pem.encode("ascii")), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
        raise SigningError(f"sign command gave no answer within {timeout:g} s") from None
    stderr = err.decode("utf-8", "replace")[-MAX_STDERR_CHARS:].strip()
    if proc.returncode != 0:
        raise SigningError(f"sign command exited with {proc.returncode}: {stderr}")
    text = out.decode("ascii", "replace")
    if len(text) > MAX_CHAIN_CHARS * 2:
        raise SigningError("sign command printed too much")
    try:
        certs = load_pem_certificates(text)
    except CertificateError as e:
        raise SigningError(f"sign command output: {e}") from None
    chain = to_pem(certs)
    if len(chain) > MAX_CHAIN_CHARS:
        raise SigningError(f"the chain is longer than {MAX_CHAIN_CHARS} characters")
    return chain


def check_issued_for(chain_pem: str, csr_pem: str, station_id: str) -> None:
    """An external CA's answer must be a certificate for that request: the CSR's key and a
    subject CN that is the charge point id (a station would otherwise get, and present, a
    certificate made for someone else). SigningError naming what differs."""
    leaf = leaf_of(chain_pem)
    csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    if _spki(leaf.public_key()) != _spki(csr.public_key()):
        raise SigningError("the sign command's certificate is not for the request's key")
    names = _name_values(leaf.subject, NameOID.COMMON_NAME)
    if names != [station_id]:
        raise SigningError(
            f"the sign command's certificate names CN {names!r}, not the charge point id"
        )


def leaf_of(chain_pem: str) -> x509.Certificate:
    return load_pem_certificates(chain_pem)[0]


def certificate_hash_data(
    cert: x509.Certificate, issuer: x509.Certificate | None = None
) -> dict[str, str]:
    """OCPP's CertificateHashDataType (SHA256) of a certificate: the hash of its issuer's
    DER name, of its issuer's public key (for a root, its own), and its serial in hex."""
    issuer = issuer or cert
    key_der = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # the hash of the key's BIT STRING contents, as OCSP's issuerKeyHash: the SPKI minus
    # its algorithm identifier
    spki_key = _spki_bit_string(key_der)
    return {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": hashlib.sha256(spki_key).hexdigest(),
        "serialNumber": format(cert.serial_number, "x"),
    }


def _der_length(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 0x80:
        return first, at + 1
    n = first & 0x7F
    return int.from_bytes(data[at + 1 : at + 1 + n], "big"), at + 1 + n


def _spki_bit_string(spki: bytes) -> bytes:
    """The public key bits of a DER SubjectPublicKeyInfo (the BIT STRING's content without
    its unused-bits byte)."""
    _, at = _der_length(spki, 1)  # SEQUENCE
    # AlgorithmIdentifier SEQUENCE
    length, body = _der_length(spki, at + 1)
    at = body + length
    assert spki[at] == 0x03  # BIT STRING
    length, body = _der_length(spki, at + 1)
    return spki[body + 1 : body + length]


def utc_now() -> datetime:
    return datetime.now(UTC)
