"""``csms pki``: the certificates an operator needs for TLS and security profile 3, made
without openssl.

- ``csms pki init``: the operator's CA (``ca.pem``, ``ca.key``) and a server certificate for
  csms signed by it (``server.pem``: the certificate then the CA; ``server.key``), in one
  directory; prints the configuration lines that use them.
- ``csms pki server-cert``: a new server certificate from the same CA (a renewal, or new host
  names), written in place atomically, for a running csms to pick up on SIGHUP.
- ``csms pki station-cert``: a certificate and key for one station (CN = its charge point id,
  O = the CA's organisation), for chargers that take an uploaded certificate rather than
  asking for one with SignCertificate.

Keys are EC P-256 by default (every charger that implements the security whitepaper must
handle ECDSA), RSA 2048 or larger with ``--rsa`` for chargers that only take RSA; written
0600, never printed. The CA key is never overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
MAX_NAME = 64  # X.520 upper bound of a common name or an organisation name


class CertToolError(Exception):
    """Something the operator must change; the message says what."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key(rsa_bits: int | None) -> Any:
    if rsa_bits:
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) through a temporary file and a rename, so that a
    reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public(path: Path, data: bytes) -> None:
    _write_private(path, data)
    os.chmod(path, 0o644)


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _check_name(what: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME or any(not c.isprintable() for c in value):
        raise CertToolError(f"{what}: 1 to {MAX_NAME} printable characters")
    return value


def _hosts(hosts: list[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise CertToolError("--host: give the name (or address) stations and peers use for csms")
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        label_ok = all(
            0 < len(p) <= 63 and all(c.isalnum() or c == "-" for c in p) for p in host.split(".")
        )
        wildcard = host.startswith("*.") and all(
            0 < len(p) <= 63 and all(c.isalnum() or c == "-" for c in p)
            for p in host[2:].split(".")
        )
        if not (label_ok or wildcard) or len(host) > 253:
            raise CertToolError(f"--host {host!r}: not a DNS name or an IP address")
        names.append(x509.DNSName(host.lower()))
    return names


def load_ca(directory: Path) -> tuple[x509.Certificate, Any]:
    """The CA that ``init`` made in ``directory``."""
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as e:
        raise CertToolError(
            f"{e.filename}: no CA here (run `csms pki init --dir {directory}` first)"
        ) from None
    except (ValueError, TypeError) as e:
        raise CertToolError(f"{directory}: the CA files cannot be read ({e})") from None
    return cert, key


def _organization(ca: x509.Certificate) -> str:
    values = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else ""


def _leaf(
    ca: x509.Certificate,
    ca_key: Any,
    subject: x509.Name,
    key: Any,
    days: int,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    if not_after <= now:
        raise CertToolError("the CA has expired: make a new one (`csms pki init` in a new --dir)")
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def init(
    directory: Path,
    organization: str,
    hosts: list[str],
    *,
    ca_days: int = 3650,
    server_days: int = 397,
    rsa_bits: int | None = None,
) -> tuple[Issued, Issued]:
    """A new CA and a server certificate in ``directory`` (made 0700 when new). Refuses a
    directory that already holds a CA."""
    organization = _check_name("--organization", organization)
    sans = _hosts(hosts)
    if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
        raise CertToolError(
            f"{directory} already holds a CA ({CA_CERT}/{CA_KEY}); it is never overwritten: "
            "use `csms pki server-cert` for a new server certificate, or another --dir"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = _new_key(rsa_bits or None)
    now = _now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} OCPP CA"[:MAX_NAME]),
        ]
    )
    public = key.public_key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / CA_KEY, _key_pem(key))
    _write_public(directory / CA_CERT, _pem(ca))
    ca_issued = Issued(directory / CA_CERT, directory / CA_KEY, ca.not_valid_after_utc)
    return ca_issued, _server(directory, ca, key, sans, server_days, rsa_bits)


def _server(
    directory: Path,
    ca: x509.Certificate,
    ca_key: Any,
    sans: list[x509.GeneralName],
    days: int,
    rsa_bits: int | None,
) -> Issued:
    key = _new_key(rsa_bits)
    first = sans[0]
    cn = str(first.value)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _organization(ca) or "csms"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn[:MAX_NAME]),
        ]
    )
    cert = _leaf(ca, ca_key, subject, key, days, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    # the key first: a csms reloading between the two renames would otherwise pair the new
    # certificate with the old key (and refuse both, keeping the previous ones: still safe)
    _write_private(directory / SERVER_KEY, _key_pem(key))
    _write_public(directory / SERVER_CERT, _pem(cert, ca))
    return Issued(directory / SERVER_CERT, directory / SERVER_KEY, cert.not_valid_after_utc)


def server_cert(
    directory: Path, hosts: list[str], *, days: int = 397, rsa_bits: int | None = None
) -> Issued:
    """A new server certificate from the CA in ``directory``, replacing server.pem/.key."""
    sans = _hosts(hosts)
    ca, ca_key = load_ca(directory)
    return _server(directory, ca, ca_key, sans, days, rsa_bits)


def station_cert(
    directory: Path,
    station_id: str,
    out: Path | None = None,
    *,
    days: int = 365,
    rsa_bits: int | None = None,
) -> Issued:
    """A client certificate for one station (CN = its id, O = the CA's organisation), with
    its key, in ``out`` (default: ``directory/stations``) as ``<id>.pem`` / ``<id>.key``."""
    if not station_id or len(station_id) > MAX_NAME or any(not c.isprintable() for c in station_id):
        raise CertToolError(f"--id: 1 to {MAX_NAME} printable characters (a CN's limit)")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in station_id).lstrip(".")
    ca, ca_key = load_ca(directory)
    out = out or directory / "stations"
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = _new_key(rsa_bits)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _organization(ca) or "csms"),
            x509.NameAttribute(NameOID.COMMON_NAME, station_id),
        ]
    )
    cert = _leaf(ca, ca_key, subject, key, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    _write_private(out / f"{safe}.key", _key_pem(key))
    _write_public(out / f"{safe}.pem", _pem(cert, ca))
    return Issued(out / f"{safe}.pem", out / f"{safe}.key", cert.not_valid_after_utc)


# ---------------------------------------------------------------------- command line


def add_commands(sub: Any) -> None:
    pki = sub.add_parser("pki", help="make the CA, server and station certificates for TLS")
    psub = pki.add_subparsers(dest="pki_command", required=True)
    i = psub.add_parser("init", help="a new CA and a server certificate for csms")
    i.add_argument("--dir", required=True, type=Path, help="where to write them (made 0700)")
    i.add_argument("--organization", required=True, help="your CPO name (pki.organization)")
    i.add_argument("--host", action="append", default=[], help="csms's DNS name or address")
    i.add_argument("--ca-days", type=int, default=3650)
    i.add_argument("--days", type=int, default=397, help="the server certificate's validity")
    s = psub.add_parser("server-cert", help="a new server certificate from the same CA")
    s.add_argument("--dir", required=True, type=Path)
    s.add_argument("--host", action="append", default=[])
    s.add_argument("--days", type=int, default=397)
    st = psub.add_parser("station-cert", help="a client certificate for one station (profile 3)")
    st.add_argument("--dir", required=True, type=Path)
    st.add_argument("--id", required=True, dest="station_id", help="the charge point id")
    st.add_argument("--out", type=Path, help="default: DIR/stations")
    st.add_argument("--days", type=int, default=365)
    for p in (i, s, st):
        p.add_argument(
            "--rsa", type=int, nargs="?", const=2048, default=None, metavar="BITS",
            help="an RSA key (default bits 2048) instead of EC P-256",
        )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    try:
        if args.rsa is not None and args.rsa not in (2048, 3072, 4096):
            raise CertToolError("--rsa: 2048, 3072 or 4096")
        for name in ("days", "ca_days"):
            value = getattr(args, name, None)
            if value is not None and not 1 <= value <= 36500:
                raise CertToolError(f"--{name.replace('_', '-')}: 1 to 36500 days")
        if args.pki_command == "init":
            ca, server = init(
                args.dir,
                args.organization,
                args.host,
                ca_days=args.ca_days,
                server_days=args.days,
                rsa_bits=args.rsa,
            )
            d = args.dir.resolve()
            print(f"CA:     {ca.cert} (key {ca.key}, 0600), valid until {ca.not_after:%Y-%m-%d}")
            print(
                f"server: {server.cert} (key {server.key}), valid until {server.not_after:%Y-%m-%d}"
            )
            print("\nIn csms's configuration:\n")
            print("[tls]")
            print(f'cert_file = "{d / SERVER_CERT}"')
            print(f'key_file = "{d / SERVER_KEY}"')
            print(f'station_ca_file = "{d / CA_CERT}"')
            print("\n[ocpp]\ntls = true\n")
            print("[pki]")
            print(f'organization = "{args.organization.strip()}"')
            print(f'ca_cert_file = "{d / CA_CERT}"')
            print(f'ca_key_file = "{d / CA_KEY}"')
            print(
                f"\nStations verify csms with {d / CA_CERT} (install it on each charger, or"
                " send it with InstallCertificate as CentralSystemRootCertificate)."
            )
        elif args.pki_command == "server-cert":
            server = server_cert(args.dir, args.host, days=args.days, rsa_bits=args.rsa)
            print(
                f"server: {server.cert} (key {server.key}), valid until {server.not_after:%Y-%m-%d}"
            )
            print("a running csms takes it on SIGHUP (systemctl reload csms), connections stay")
        else:
            st = station_cert(
                args.dir, args.station_id, args.out, days=args.days, rsa_bits=args.rsa
            )
            print(f"station: {st.cert} (key {st.key}, 0600), valid until {st.not_after:%Y-%m-%d}")
    except CertToolError as e:
        print(f"csms pki: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"csms pki: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
