"""The OCPP 1.6 security extension in the simulator: security profiles 1 to 3, the station's
certificates, and the extension's messages, as a charger that implements it behaves.

- Profile 1: ws:// (or wss://) with HTTP Basic; 2: wss:// with Basic, the central system's
  certificate verified against ``ca_file`` and the installed CentralSystemRootCertificates;
  3: wss:// with the station's client certificate (no Basic).
- ``SecurityProfile`` (configuration key): ChangeConfiguration to a higher value is Accepted
  only when the station has what the profile needs (a CA for 2; a CA and its own certificate
  for 3); the station then reconnects with it. When that fails it goes back to the previous
  profile, reconnects and sends a SecurityEventNotification. A lower value is Rejected.
- ExtendedTriggerMessage SignChargePointCertificate (or :meth:`SecurityState.sign_certificate`):
  a new key and a CSR with CN = the station id and O = ``organization``, sent with
  SignCertificate; CertificateSigned's chain is checked (the key is the pending one, the CN
  the station id, each certificate issued by the next, all valid now), installed and used
  from the next connection.
- InstallCertificate / GetInstalledCertificateIds / DeleteCertificate: a small store of root
  certificates, identified by OCPP's certificate hash data (SHA256).
- GetLog: a generated log file uploaded with HTTP PUT to the given URL, with
  LogStatusNotification Uploading, then Uploaded or UploadFailure.
- SignedUpdateFirmware: the signing certificate must be issued by an installed
  ManufacturerRootCertificate (else InvalidCertificate); the firmware is downloaded, its
  signature verified (SignatureVerified or InvalidSignature), then Installing and Installed,
  each with SignedFirmwareStatusNotification.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from charger_sim.errors import SimulatorError
from charger_sim.timeutil import iso

if TYPE_CHECKING:
    from charger_sim.station import Station

MAX_ROOTS_PER_TYPE = 10
MAX_FIRMWARE_BYTES = 16 * 1024 * 1024
ROOT_TYPES = ("CentralSystemRootCertificate", "ManufacturerRootCertificate")


@dataclass
class SecurityOptions:
    """How a simulated station does security (see the module docstring)."""

    profile: int = 1
    # the CA that signed the central system's certificate (profiles 2 and 3)
    ca_file: str | Path | None = None
    # the station's certificate and key (profile 3); also set by CertificateSigned
    client_cert: str | Path | None = None
    client_key: str | Path | None = None
    # O= of the CSRs the station makes (the central system's operator name)
    organization: str = "SimOperator"
    # the URL for profiles 2 and 3 (default: the station's URL with ws:// made wss://)
    tls_url: str | None = None
    key_type: str = "ec"  # ec (P-256) | rsa (2048)
    # SecurityEventNotification at start-up, after a reset and a firmware install (always
    # after a security profile change and a refused certificate or firmware)
    send_events: bool = False
    # bytes of the log file a GetLog uploads
    log_size: int = 4096


def _load_cert(pem: bytes | str) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data)


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None) -> dict[str, str]:
    """OCPP's CertificateHashDataType of ``cert`` (SHA256), as OCSP computes the hashes."""
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer or cert, hashes.SHA256()).build()
    return {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": req.issuer_name_hash.hex(),
        "issuerKeyHash": req.issuer_key_hash.hex(),
        "serialNumber": format(cert.serial_number, "x"),
    }


def _spki(key: Any) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


class SecurityState:
    """One station's security: its profile, certificates and the extension's flows."""

    def __init__(self, station: Station, options: SecurityOptions | None = None) -> None:
        self.station = station
        self.options = options or SecurityOptions()
        if self.options.profile not in (1, 2, 3):
            raise ValueError("security profile must be 1, 2 or 3")
        self.profile = self.options.profile
        self.roots: list[tuple[str, x509.Certificate]] = []
        self.ca_file = Path(self.options.ca_file) if self.options.ca_file else None
        self.client_cert: Path | None = None
        self.client_key: Path | None = None
        if self.options.client_cert and self.options.client_key:
            self.client_cert = Path(self.options.client_cert)
            self.client_key = Path(self.options.client_key)
        self.pending_key: Any = None
        self.certificates_installed = 0
        self.log_status = "Idle"
        self.log_request_id: int | None = None
        self.firmware_status = "Idle"
        self.firmware_request_id: int | None = None
        self.events: list[tuple[str, str, str | None]] = []  # (time, type, techInfo)
        self.fallbacks = 0
        self._dir: Path | None = None
        station.config.set("SecurityProfile", str(self.profile))

    # ------------------------------------------------------------------ connection

    def url(self, url: str) -> str:
        if self.profile < 2:
            return url
        if self.options.tls_url:
            return self.options.tls_url
        return "wss://" + url[len("ws://") :] if url.startswith("ws://") else url

    def sends_password(self) -> bool:
        return self.profile < 3

    def ssl_context(self, url: str) -> ssl.SSLContext | None:
        """The client context for ``url``: None for ws:// URLs."""
        if not url.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None,
            cadata=self._roots_pem("CentralSystemRootCertificate") or None,
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.profile >= 3 and self.client_cert and self.client_key:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx

    def _roots_pem(self, kind: str) -> str:
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for t, c in self.roots if t == kind
        )

    def has_trust(self) -> bool:
        return self.ca_file is not None or any(
            t == "CentralSystemRootCertificate" for t, _ in self.roots
        )

    # ------------------------------------------------------------------ profile changes

    def change_profile(self, value: str) -> tuple[str, int | None]:
        """ChangeConfiguration SecurityProfile: (status, the profile to switch to)."""
        try:
            wanted = int(value.strip())
        except ValueError:
            return "Rejected", None
        if wanted not in (1, 2, 3) or wanted <= self.profile:
            return "Rejected", None
        if not self.has_trust():
            return "Rejected", None
        if wanted == 3 and not (self.client_cert and self.client_key):
            return "Rejected", None
        return "Accepted", wanted

    async def switch_profile(self, wanted: int) -> None:
        """Reconnect with the new profile; fall back to the old one if that fails."""
        st = self.station
        old = self.profile
        await asyncio.sleep(0.05)  # (the answer goes out first)
        self.profile = wanted
        try:
            await st.reconnect_now()
        except Exception as exc:
            st.log.warning("connection at the new security profile failed", error=repr(exc))
            self.profile = old
            self.fallbacks += 1
            st.config.set("SecurityProfile", str(old))
            await st.reconnect_now()
            kind = (
                "InvalidCentralSystemCertificate"
                if isinstance(exc, ssl.SSLCertVerificationError)
                else "FailedToAuthenticateAtCentralSystem"
            )
            await self.event(kind, f"profile {wanted} failed, back to {old}: {exc!r}"[:255])
            return
        st.config.set("SecurityProfile", str(wanted))
        await self.event(
            "ReconfigurationOfSecurityParameters", f"SecurityProfile {old} -> {wanted}"
        )

    # ------------------------------------------------------------------ events

    async def event(self, kind: str, tech_info: str | None = None) -> None:
        """Record a security event and send SecurityEventNotification (when connected)."""
        now = iso()
        self.events.append((now, kind, tech_info))
        del self.events[:-1000]
        st = self.station
        if not st.connected:
            return
        payload: dict[str, Any] = {"type": kind, "timestamp": now}
        if tech_info:
            payload["techInfo"] = tech_info[:255]
        try:
            await st._request("SecurityEventNotification", payload)
        except (SimulatorError, TimeoutError) as exc:
            st.log.warning("security event not delivered", error=repr(exc))

    async def optional_event(self, kind: str, tech_info: str | None = None) -> None:
        if self.options.send_events:
            await self.event(kind, tech_info)

    # ------------------------------------------------------------------ certificates

    async def sign_certificate(self) -> dict[str, Any]:
        """A new key and CSR (CN = station id, O = organization), sent with SignCertificate."""
        st = self.station
        if self.options.key_type == "rsa":
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.options.organization),
                x509.NameAttribute(NameOID.COMMON_NAME, st.id),
            ]
        )
        csr = (
            x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        )
        self.pending_key = key
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        return await st._request("SignCertificate", {"csr": pem})

    def certificate_signed(self, chain_pem: str) -> tuple[str, str | None]:
        """CertificateSigned: (status, why it was refused)."""
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode())
        except ValueError:
            return "Rejected", "the chain does not parse"
        if not chain:
            return "Rejected", "no certificate"
        leaf = chain[0]
        now = datetime.now(UTC)
        if self.pending_key is None:
            return "Rejected", "no certificate was requested"
        if _spki(leaf.public_key()) != _spki(self.pending_key.public_key()):
            return "Rejected", "not the key of the pending request"
        cns = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cns != [self.station.id]:
            return "Rejected", f"CN {cns} is not the station id"
        for cert, issuer in itertools.pairwise(chain):
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                return "Rejected", "the chain does not verify"
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return "Rejected", "a certificate of the chain is not valid now"
        self._install_client(chain, self.pending_key)
        self.pending_key = None
        return "Accepted", None

    def _state_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="charger-sim-"))
        return self._dir

    def _install_client(self, chain: list[x509.Certificate], key: Any) -> None:
        n = self.certificates_installed = self.certificates_installed + 1
        directory = self._state_dir()
        cert_path = directory / f"client-{n}.pem"
        key_path = directory / f"client-{n}.key"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.client_cert, self.client_key = cert_path, key_path
        self.station.log.info(
            "client certificate installed", serial=format(chain[0].serial_number, "x")
        )

    def install_certificate(self, kind: str, pem: str) -> str:
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            return "Rejected"
        if len(certs) != 1 or not _is_ca(certs[0]):
            return "Rejected"
        cert = certs[0]
        if sum(1 for t, _ in self.roots if t == kind) >= MAX_ROOTS_PER_TYPE:
            return "Failed"
        if not any(t == kind and c == cert for t, c in self.roots):
            self.roots.append((kind, cert))
        return "Accepted"

    def installed_ids(self, kind: str) -> list[dict[str, str]]:
        return [hash_data(c) for t, c in self.roots if t == kind]

    def delete_certificate(self, data: dict[str, Any]) -> str:
        wanted = {
            "hashAlgorithm": data.get("hash_algorithm") or data.get("hashAlgorithm"),
            "issuerNameHash": (
                data.get("issuer_name_hash") or data.get("issuerNameHash") or ""
            ).lower(),
            "issuerKeyHash": (
                data.get("issuer_key_hash") or data.get("issuerKeyHash") or ""
            ).lower(),
            "serialNumber": (data.get("serial_number") or data.get("serialNumber") or "")
            .lower()
            .lstrip("0"),
        }
        for index, (_, cert) in enumerate(self.roots):
            have = hash_data(cert)
            have["serialNumber"] = have["serialNumber"].lstrip("0")
            if wanted["hashAlgorithm"] == "SHA256" and have == wanted:
                del self.roots[index]
                return "Accepted"
        return "NotFound"

    # ------------------------------------------------------------------ logs

    def log_text(self, log_type: str) -> bytes:
        lines = [f"# {log_type} of {self.station.id}, made {iso()}\n"]
        for at, kind, info in self.events:
            lines.append(f"{at} {kind} {info or ''}\n")
        text = "".join(lines).encode()
        size = max(self.options.log_size, len(text))
        filler = b"simulated log line: nothing to report\n"
        return text + (filler * (size // len(filler) + 1))[: size - len(text)]

    async def log_status_notification(self, status: str, request_id: int | None) -> None:
        self.log_status = status
        payload: dict[str, Any] = {"status": status}
        if request_id is not None:
            payload["requestId"] = request_id
        st = self.station
        if st.connected:
            try:
                await st._request("LogStatusNotification", payload)
            except (SimulatorError, TimeoutError) as exc:
                st.log.warning("log status not delivered", error=repr(exc))

    async def upload_log(self, url: str, log_type: str, request_id: int) -> None:
        self.log_request_id = request_id
        await self.log_status_notification("Uploading", request_id)
        body = self.log_text(log_type)
        status = "Uploaded"
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.put(
                    url,
                    data=body,
                    ssl=self.ssl_context(url.replace("https://", "wss://", 1))
                    if url.startswith("https://")
                    else None,
                    headers={"Content-Type": "text/plain"},
                ) as resp:
                    if resp.status >= 300:
                        raise SimulatorError(f"upload answered {resp.status}")
        except Exception as exc:  # any failure of the upload is UploadFailure
            self.station.log.warning("log upload failed", error=repr(exc))
            status = "UploadFailure"
        await self.log_status_notification(status, request_id)
        self.log_status = "Idle"

    # ------------------------------------------------------------------ signed firmware

    def check_signing_certificate(self, pem: str) -> bool:
        try:
            cert = _load_cert(pem)
        except ValueError:
            return False
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
        for kind, root in self.roots:
            if kind != "ManufacturerRootCertificate":
                continue
            with contextlib.suppress(ValueError, TypeError, InvalidSignature):
                cert.verify_directly_issued_by(root)
                return True
        return False

    async def firmware_status_notification(self, status: str, request_id: int | None) -> None:
        self.firmware_status = status
        payload: dict[str, Any] = {"status": status}
        if request_id is not None:
            payload["requestId"] = request_id
        st = self.station
        if st.connected:
            try:
                await st._request("SignedFirmwareStatusNotification", payload)
            except (SimulatorError, TimeoutError) as exc:
                st.log.warning("signed firmware status not delivered", error=repr(exc))
        await asyncio.sleep(st.behaviour.step_delay)

    async def signed_firmware(self, firmware: dict[str, Any], request_id: int) -> None:
        self.firmware_request_id = request_id
        step = self.firmware_status_notification
        await step("Downloading", request_id)
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(firmware["location"]) as resp:
                    if resp.status != 200:
                        raise SimulatorError(f"download answered {resp.status}")
                    data = await resp.content.read(MAX_FIRMWARE_BYTES + 1)
                    if len(data) > MAX_FIRMWARE_BYTES:
                        raise SimulatorError("firmware too large")
        except Exception as exc:
            self.station.log.warning("firmware download failed", error=repr(exc))
            await step("DownloadFailed", request_id)
            self.firmware_status = "Idle"
            return
        await step("Downloaded", request_id)
        if not self._signature_valid(firmware, data):
            await step("InvalidSignature", request_id)
            await self.event("InvalidFirmwareSignature", f"request {request_id}")
            self.firmware_status = "Idle"
            return
        await step("SignatureVerified", request_id)
        await step("Installing", request_id)
        await step("Installed", request_id)
        await self.optional_event("FirmwareUpdated", f"request {request_id}")
        self.firmware_status = "Idle"

    @staticmethod
    def _signature_valid(firmware: dict[str, Any], data: bytes) -> bool:
        try:
            signature = base64.b64decode(firmware["signature"], validate=True)
            key = _load_cert(firmware["signing_certificate"]).public_key()
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                return False
        except (ValueError, binascii.Error, InvalidSignature, KeyError, TypeError):
            return False
        return True
