"""The OCPP 1.6 security extension ("Improved security for OCPP 1.6-J") on csms's side.

- Station requests: ``SecurityEventNotification`` (stored, the newest 1,000 per
  station; critical events logged as warnings and counted), ``SignCertificate`` (the CSR
  checked by :mod:`csms.pki`; when Accepted, signed by the operator's CA or the external
  sign command once the answer is out, then sent with ``CertificateSigned`` through the
  command port, again at the station's next boot while it was not connected: pending
  requests are in the database and survive a restart), ``LogStatusNotification`` and
  ``SignedFirmwareStatusNotification`` (stored, linked to the request csms sent).
- Operator commands: the preparers of ``InstallCertificate`` (a CA certificate, checked),
  ``CertificateSigned`` (a chain that parses), ``GetLog`` (csms makes the upload URL: a
  one-time token bound to the station and the requestId) and ``SignedUpdateFirmware``.
- ``PUT``/``POST /uploads/logs/{token}``: where a station uploads the log GetLog asked for,
  streamed to ``<data_dir>/logs/<station>/`` and at most ``pki.max_log_upload_bytes``.
- The certificates csms knows (its CA, its server certificate, the station CA and every
  station certificate it signed), in the API and in /metrics.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import ocppj, pki, uploads
from .api_common import paging
from .commands import CommandError, CommandPort, ConnectionRegistry, InvalidCommand
from .handlers import Services
from .http import INT64_MAX, ApiError, json_response
from .openapi import (
    INT,
    PAGING,
    Param,
    array,
    fails,
    file_answer,
    list_of,
    obj,
    ok,
    operation,
    page_of,
)
from .repositories.security import REQUESTS_KEPT, SIGN_REQUESTS_KEPT
from .tasks import Background
from .timeparse import from_db, parse_charger_time, to_ocpp

if TYPE_CHECKING:
    from .connection import StationConnection

log = structlog.get_logger("csms.security")

RETRY_SECONDS = 60.0
FILE_CACHE_SECONDS = 60.0
# certificate requests signed (and delivered) at once, for all stations
MAX_CONCURRENT_SIGNING = 4

# The whitepaper's security events; those marked critical are the ones a charge point must
# push to the central system.
CRITICAL_EVENTS = frozenset(
    {
        "FirmwareUpdated",
        "SettingSystemTime",
        "StartupOfTheDevice",
        "ResetOrReboot",
        "SecurityLogWasCleared",
        "MemoryExhaustion",
        "TamperDetectionActivated",
    }
)
KNOWN_EVENTS = CRITICAL_EVENTS | {
    "FailedToAuthenticateAtCentralSystem",
    "CentralSystemFailedToAuthenticate",
    "ReconfigurationOfSecurityParameters",
    "InvalidMessages",
    "AttemptedReplayAttacks",
    "InvalidFirmwareSignature",
    "InvalidFirmwareSigningCertificate",
    "InvalidCentralSystemCertificate",
    "InvalidChargePointCertificate",
    "InvalidTLSVersion",
    "InvalidTLSCipherSuite",
}

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


def safe_name(text: str, limit: int = 80) -> str:
    """A file name made of ``[A-Za-z0-9._-]`` only, never starting with a dot."""
    out = _SAFE.sub("_", text)[:limit].lstrip(".")
    return out or "_"


def station_dir_name(station_id: str) -> str:
    """The directory of a station's logs: its id made safe, and a hash (two ids that make
    the same safe name never share a directory)."""
    digest = hashlib.sha256(station_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe_name(station_id, 60)}-{digest}"


def _iso(value: datetime | str | None) -> str | None:
    if isinstance(value, str):
        value = from_db(value)
    return to_ocpp(value) if value else None


def _random_request_id() -> int:
    return secrets.randbelow(2**31 - 2) + 1


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class _CertificateMetrics(Collector):
    """Seconds until expiry per kind of certificate and how many expire soon, at scrape."""

    def __init__(self, service: SecurityService) -> None:
        self.service = service

    def collect(self) -> Any:
        inv = self.service.inventory_for_metrics()
        seconds = GaugeMetricFamily(
            "csms_certificate_expiry_seconds",
            "Seconds until the soonest expiry of each kind of certificate csms knows "
            "(ca, server, station_ca, station: the stations' current certificates)",
            labels=["kind"],
        )
        expiring = GaugeMetricFamily(
            "csms_certificates_expiring",
            "Certificates of each kind expiring within pki.expiry_warning_days (or expired)",
            labels=["kind"],
        )
        total = GaugeMetricFamily(
            "csms_certificates", "Certificates of each kind csms knows", labels=["kind"]
        )
        for kind, (count, soonest, soon) in inv.items():
            total.add_metric([kind], count)
            expiring.add_metric([kind], soon)
            if soonest is not None:
                seconds.add_metric([kind], soonest)
        yield seconds
        yield expiring
        yield total


class SecurityService:
    def __init__(
        self,
        services: Services,
        registry: ConnectionRegistry,
        commands: CommandPort,
        base_url: Callable[[], str],
    ) -> None:
        self.s = services
        self.settings = services.settings
        self.pki = services.settings.pki
        self.store = services.store
        self.repo = services.store.security
        self.clock = services.clock
        self.registry = registry
        self.commands = commands
        self.base_url = base_url
        self.logs_dir = self.settings.data_dir / "logs"
        self.ca: pki.CertificateAuthority | None = None
        self.ca_error: str | None = "the station CA is not loaded yet"
        r = services.metrics.registry
        self.events_counter = Counter(
            "csms_security_events",
            "SecurityEventNotifications received, by type (unknown types as other) and "
            "whether the whitepaper calls the type critical",
            ["type", "critical"],
            registry=r,
        )
        self.sign_counter = Counter(
            "csms_sign_certificate_requests",
            "SignCertificate requests, by our answer (Accepted, Rejected)",
            ["status"],
            registry=r,
        )
        self.signed_counter = Counter(
            "csms_station_certificates_signed",
            "Station certificates signed and sent, by outcome (delivered, refused by the "
            "station, failed to sign)",
            ["outcome"],
            registry=r,
        )
        self._tasks = Background("security")
        self._in_flight: set[int] = set()
        self._signing = asyncio.Semaphore(MAX_CONCURRENT_SIGNING)
        self._uploading: set[str] = set()
        self._file_certs: tuple[float, dict[str, list[pki.CertInfo]]] | None = None
        # station id -> not_after of its newest certificate (for /metrics), from the store
        self._station_expiry: dict[str, datetime] = {}
        # stations with a certificate waiting to be signed or delivered (a boot looks here)
        self._pending_stations: set[str] = set()
        r.register(_CertificateMetrics(self))

    # ------------------------------------------------------------------ wiring

    def handlers(self) -> dict[str, Any]:
        return {
            "SecurityEventNotification": self.security_event,
            "SignCertificate": self.sign_certificate,
            "LogStatusNotification": self.log_status,
            "SignedFirmwareStatusNotification": self.firmware_status,
        }

    def preparers(self) -> dict[str, Any]:
        return {
            "InstallCertificate": self.prepare_install_certificate,
            "CertificateSigned": self.prepare_certificate_signed,
            "GetLog": self.prepare_get_log,
            "SignedUpdateFirmware": self.prepare_signed_update_firmware,
        }

    def api_routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/certificates", self.api_certificates),
            web.get(f"{p}/stations/{{station_id}}/security-events", self.api_events),
            web.get(f"{p}/stations/{{station_id}}/sign-requests", self.api_sign_requests),
            web.post(
                f"{p}/stations/{{station_id}}/sign-requests/{{request_id}}/resend",
                self.api_resend,
            ),
            web.get(f"{p}/stations/{{station_id}}/security-requests", self.api_requests),
            web.get(f"{p}/stations/{{station_id}}/logs", self.api_logs),
            web.get(f"{p}/stations/{{station_id}}/logs/{{name}}", self.api_log_file),
            web.put("/uploads/logs/{token}", self.upload_log),
            web.post("/uploads/logs/{token}", self.upload_log),
        ]

    def on_boot(self, conn: StationConnection) -> None:
        """After an accepted boot: what is waiting for the station is sent."""
        if conn.station_id in self._pending_stations:
            self._tasks.spawn(self.deliver_pending(conn.station_id), "certificate-delivery")

    def load_ca(self) -> None:
        """(Re)load the operator's CA; an unusable one is logged, and SignCertificate is
        then Rejected with that reason."""
        try:
            self.ca, self.ca_error = pki.load_ca(self.pki), None
        except pki.SigningError as e:
            self.ca, self.ca_error = None, str(e)
            log.error("the station CA cannot be used: SignCertificate is Rejected", error=str(e))

    def reload(self) -> None:
        """SIGHUP: the CA that signs station certificates, and the certificate files of the
        inventory, read again."""
        self.load_ca()
        self._file_certs = None
        log.info("station CA and certificate inventory reloaded", ca_usable=self.ca is not None)

    async def start(self) -> None:
        self.load_ca()
        await self.refresh_station_certificates()
        await self._refresh_pending()
        self._tasks.spawn(self._retry_loop(), name="security-retry")

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self._refresh_pending()
                await self.deliver_pending()
                await self.refresh_station_certificates()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("certificate delivery round failed")

    # ------------------------------------------------------------------ station requests

    async def security_event(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        kind = payload["type"]
        critical = kind in CRITICAL_EVENTS
        ts = parse_charger_time(payload.get("timestamp"), received_at)
        tech = payload.get("techInfo")
        sid = conn.station_id

        await self.repo.add_event(
            sid, kind, critical, ts.value, payload.get("timestamp"), tech, received_at
        )
        label = kind if kind in KNOWN_EVENTS else "other"
        self.events_counter.labels(label, "true" if critical else "false").inc()
        (log.warning if critical else log.info)(
            "security event", type=kind, critical=critical, tech_info=tech
        )
        return {}

    async def sign_certificate(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        sid = conn.station_id
        csr_pem = payload["csr"]
        reason = None
        subject = None
        try:
            if self.ca is None and self.pki.sign_command is None:
                raise pki.CsrRefused(
                    self.ca_error
                    or "no CA configured (pki.ca_cert_file, pki.ca_key_file) "
                    "and no pki.sign_command"
                )
            if self.pki.organization is None:
                raise pki.CsrRefused("pki.organization (the O= a CSR must carry) is not set")
            csr = pki.check_csr(csr_pem, sid, self.pki.organization)
            subject = csr.subject.rfc4514_string()
        except pki.CsrRefused as e:
            reason = str(e)
        status = "Rejected" if reason else "Accepted"
        request_id = await self.repo.add_sign_request(
            sid, received_at, status, reason, csr_pem, subject
        )
        self.sign_counter.labels(status).inc()
        if reason:
            log.warning("SignCertificate rejected", reason=reason, sign_request=request_id)
        else:
            log.info("SignCertificate accepted", subject=subject, sign_request=request_id)
            self._pending_stations.add(sid)
            conn.after_answer(
                lambda: self._tasks.spawn(self.process(request_id), f"sign-{request_id}")
            )
        return {"status": status}

    async def _status(
        self, kind: str, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> None:
        sid = conn.station_id
        request_id = payload.get("requestId")
        status = payload["status"]
        await self.repo.add_status(sid, kind, request_id, status, received_at)
        log.info(f"{kind} status", status=status, request_id=request_id)

    async def log_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        await self._status("log", conn, payload, received_at)
        return {}

    async def firmware_status(
        self, conn: StationConnection, payload: dict[str, Any], received_at: datetime
    ) -> dict[str, Any]:
        await self._status("firmware", conn, payload, received_at)
        return {}

    # ------------------------------------------------------------------ signing, delivery

    async def _sign(self, csr_pem: str, station_id: str) -> str:
        if self.pki.sign_command is not None:
            chain = await pki.run_sign_command(
                self.pki.sign_command, csr_pem, station_id, self.pki.sign_timeout
            )
            pki.check_issued_for(chain, csr_pem, station_id)
            return chain
        if self.ca is None:
            raise pki.SigningError(self.ca_error or "no CA configured")
        csr = pki.check_csr(csr_pem, station_id, self.pki.organization)
        return self.ca.sign(csr, self.pki.station_certificate_days, self.clock.now())

    async def process(self, request_id: int) -> None:
        """Sign an accepted request (once) and send the chain when the station is here."""
        if request_id in self._in_flight:
            return
        self._in_flight.add(request_id)
        try:
            await self._process(request_id)
        finally:
            self._in_flight.discard(request_id)

    async def _process(self, request_id: int) -> None:
        row = await self.repo.sign_request(request_id)
        if row is None:
            return
        sid = row["station_id"]
        bound = log.bind(station_id=sid, sign_request=request_id)
        if row["state"] == "signing":
            try:
                async with self._signing:  # (stations cannot start many sign commands at once)
                    chain = await self._sign(row["csr"], sid)
                leaf = pki.leaf_of(chain)
                info = pki.cert_info(leaf)
            except (pki.SigningError, pki.CsrRefused, pki.CertificateError) as e:
                await self._set_state(request_id, "failed", error=str(e))
                self._pending_stations.discard(sid)
                self.signed_counter.labels("failed").inc()
                bound.error("station certificate not signed", error=str(e))
                return
            source = "command" if self.pki.sign_command is not None else "ca"
            kept = await self.repo.signed(request_id, sid, chain, info, source, self.clock.now())
            if not kept:
                bound.info("station certificate not kept: a newer request replaced this one")
                return
            self._station_expiry[sid] = max(
                info.not_after, self._station_expiry.get(sid, info.not_after)
            )
            bound.info(
                "station certificate signed",
                serial=info.serial,
                subject=info.subject,
                not_after=_iso(info.not_after),
            )
            row = await self.repo.sign_request(request_id)
            if row is None:
                return
        if row["state"] != "delivering":
            return
        await self._deliver(row, bound)

    async def _deliver(self, row: dict[str, Any], bound: Any) -> None:
        sid = row["station_id"]
        if not self.registry.is_connected(sid):
            bound.info("station certificate waits for the station to connect")
            return
        try:
            answer = await self.commands.send(
                sid, "CertificateSigned", {"certificateChain": row["chain"]}, origin="csms"
            )
        except CommandError as e:
            await self._set_state(row["id"], "delivering", error=str(e), attempt=True)
            bound.warning("CertificateSigned not delivered; tried again later", error=str(e))
            return
        self._pending_stations.discard(sid)
        if answer.get("status") == "Accepted":
            await self._set_state(row["id"], "delivered", attempt=True)
            self.signed_counter.labels("delivered").inc()
            bound.info("station installed its certificate", serial=row["serial"])
        else:
            await self._set_state(
                row["id"], "refused", error=f"station answered {answer.get('status')}", attempt=True
            )
            self.signed_counter.labels("refused").inc()
            bound.warning("station refused its certificate", serial=row["serial"])

    async def _set_state(
        self, request_id: int, state: str, *, error: str | None = None, attempt: bool = False
    ) -> None:
        await self.repo.set_sign_state(
            request_id, state, self.clock.now(), error=error, attempt=attempt
        )

    async def _refresh_pending(self) -> None:
        self._pending_stations = {r["station_id"] for r in await self.repo.waiting()}

    async def deliver_pending(self, station_id: str | None = None) -> None:
        """Sign what was accepted but not signed (a restart in between), and send what was
        signed but not delivered to stations connected here."""
        for row in await self.repo.waiting(station_id):
            if self.registry.is_connected(row["station_id"]):
                await self.process(int(row["id"]))

    async def resend(self, station_id: str, request_id: int) -> dict[str, Any]:
        """Send the chain signed for a request again (the operator's resend)."""
        row = await self.repo.sign_request(request_id, station_id)
        if row is None or not row["chain"]:
            raise ApiError(404, "not_found", "no signed certificate for this request")
        try:
            answer = await self.commands.send(
                station_id, "CertificateSigned", {"certificateChain": row["chain"]}, origin="api"
            )
        except CommandError as e:
            raise ApiError(e.http_status, e.code, str(e)) from None
        state = "delivered" if answer.get("status") == "Accepted" else "refused"
        await self._set_state(request_id, state, attempt=True)
        return answer

    # ------------------------------------------------------------------ operator commands

    async def prepare_install_certificate(
        self, station_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        pem = payload.get("certificate")
        if not isinstance(pem, str):
            raise InvalidCommand("certificate: a PEM certificate is required")
        try:
            cert = pki.check_root_certificate(pem, self.clock.now())
        except pki.CertificateError as e:
            raise InvalidCommand(f"certificate: {e}") from None
        return {**payload, "certificate": pki.to_pem([cert])}

    async def prepare_certificate_signed(
        self, station_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        chain = payload.get("certificateChain")
        if not isinstance(chain, str):
            raise InvalidCommand("certificateChain: a PEM certificate chain is required")
        try:
            certs = pki.load_pem_certificates(chain)
        except pki.CertificateError as e:
            raise InvalidCommand(f"certificateChain: {e}") from None
        return {**payload, "certificateChain": pki.to_pem(certs)}

    async def _record_request(
        self,
        station_id: str,
        kind: str,
        request_id: int,
        details: dict[str, Any],
        token_hash: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        await self.repo.add_request(
            station_id, kind, request_id, details, self.clock.now(), token_hash, expires_at
        )

    def _request_id(self, payload: dict[str, Any]) -> int:
        value = payload.get("requestId")
        if value is None:
            return _random_request_id()
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
            raise InvalidCommand("requestId: a whole number from 0 to 2147483647")
        return value

    async def prepare_get_log(self, station_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        params = payload.get("log", {})
        if not isinstance(params, dict):
            raise InvalidCommand("log: an object (oldestTimestamp, latestTimestamp)")
        if "remoteLocation" in params:
            raise InvalidCommand(
                "log.remoteLocation: csms gives the upload URL itself; leave it out"
            )
        request_id = self._request_id(payload)
        token = secrets.token_urlsafe(32)
        url = f"{self.upload_base()}/uploads/logs/{token}"
        out = {**payload, "requestId": request_id, "log": {**params, "remoteLocation": url}}
        _check_schema("GetLog", out)
        log_type = payload.get("logType")
        expires = self.clock.now() + timedelta(hours=self.pki.upload_token_hours)
        await self._record_request(
            station_id,
            "log",
            request_id,
            {"logType": log_type, **{k: v for k, v in params.items() if isinstance(v, str)}},
            token_hash=_token_hash(token),
            expires_at=expires,
        )
        return out

    async def prepare_signed_update_firmware(
        self, station_id: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        fw = payload.get("firmware")
        if not isinstance(fw, dict):
            raise InvalidCommand(
                "firmware: an object (location, retrieveDateTime, signingCertificate, signature)"
            )
        location = fw.get("location")
        if not isinstance(location, str) or not _is_download_url(location):
            raise InvalidCommand("firmware.location: an http(s) or ftp URL")
        cert = fw.get("signingCertificate")
        if not isinstance(cert, str):
            raise InvalidCommand("firmware.signingCertificate: a PEM certificate is required")
        try:
            pki.check_signing_certificate(cert)
        except pki.CertificateError as e:
            raise InvalidCommand(f"firmware.signingCertificate: {e}") from None
        signature = fw.get("signature")
        try:
            if not isinstance(signature, str) or not signature:
                raise ValueError
            base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidCommand("firmware.signature: the signature in base64") from None
        fw = dict(fw)
        fw.setdefault("retrieveDateTime", to_ocpp(self.clock.now()))
        request_id = self._request_id(payload)
        out = {**payload, "requestId": request_id, "firmware": fw}
        _check_schema("SignedUpdateFirmware", out)
        await self._record_request(station_id, "firmware", request_id, {"location": location[:512]})
        return out

    def upload_base(self) -> str:
        return self.pki.upload_base_url or self.base_url()

    # ------------------------------------------------------------------ uploads

    async def upload_log(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        if not _TOKEN.match(token):
            raise web.HTTPNotFound(text="no such upload\n")
        digest = _token_hash(token)
        row = await self.repo.upload_request(digest)
        if row is None:
            raise web.HTTPNotFound(text="no such upload\n")
        sid = row["station_id"]
        bound = log.bind(station_id=sid, request_id=row["request_id"])
        expires = from_db(row["expires_at"])
        if row["uploaded_at"] is not None or (expires is not None and expires < self.clock.now()):
            bound.warning("log upload refused: token used or expired", remote=request.remote)
            raise web.HTTPGone(text="this upload URL was used or has expired\n")
        if digest in self._uploading:
            raise web.HTTPConflict(text="an upload to this URL is in progress\n")
        limit = self.pki.max_log_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            bound.warning("log upload refused: too large", size=request.content_length)
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        self._uploading.add(digest)
        try:
            return await self._receive_upload(request, row, limit, bound)
        finally:
            self._uploading.discard(digest)

    async def _receive_upload(
        self, request: web.Request, row: dict[str, Any], limit: int, bound: Any
    ) -> web.StreamResponse:
        sid = row["station_id"]
        directory = self.logs_dir / station_dir_name(sid)
        self.logs_dir.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        # (csms.uploads: the same streaming, limit and temporary file as diagnostics')
        try:
            original, reader, _ = await uploads.open_body(request)
        except uploads.NoFile:
            raise web.HTTPBadRequest(text="no file in the multipart body\n") from None
        details = json.loads(row["details"] or "{}")
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%SZ")
        base = safe_name(original or f"{details.get('logType') or 'log'}.log", 100)
        name = f"{stamp}-{row['request_id']}-{base}"
        try:
            got = await uploads.write_chunks(reader, directory, name, limit, original)
        except uploads.UploadTooLarge as e:
            bound.warning("log upload refused: too large", limit=limit)
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=e.size) from None
        if not await self.repo.uploaded(row["id"], name, got.size, self.clock.now()):
            # (a concurrent upload won)
            with contextlib.suppress(OSError):
                got.path.unlink()
            raise web.HTTPGone(text="this upload URL was used\n")
        bound.info("log uploaded", file=name, size=got.size)
        return web.json_response({"status": "ok", "file": name, "size": got.size}, status=201)

    def log_files(self, station_id: str) -> list[dict[str, Any]]:
        directory = self.logs_dir / station_dir_name(station_id)
        out = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if entry.is_file() and _FILE_NAME.match(entry.name):
                    st = entry.stat()
                    out.append({"name": entry.name, "size": st.st_size, "mtime": st.st_mtime})
        return sorted(out, key=lambda f: f["name"], reverse=True)

    def log_file_path(self, station_id: str, name: str) -> Path | None:
        if not _FILE_NAME.match(name):
            return None
        path = self.logs_dir / station_dir_name(station_id) / name
        return path if path.is_file() else None

    # ------------------------------------------------------------------ inventory

    def _read_file_certs(self) -> dict[str, list[pki.CertInfo]]:
        now = time.monotonic()
        if self._file_certs is not None and now - self._file_certs[0] < FILE_CACHE_SECONDS:
            return self._file_certs[1]
        tls = self.settings.tls
        files = {
            "ca": self.pki.ca_cert_file,
            "server": tls.cert_file,
            "station_ca": tls.station_ca_file,
        }
        out: dict[str, list[pki.CertInfo]] = {}
        for kind, path in files.items():
            if not path:
                continue
            try:
                certs = pki.load_pem_certificates(Path(path).read_bytes())
            except (OSError, pki.CertificateError) as e:
                log.warning("certificate file unreadable", kind=kind, path=str(path), error=str(e))
                continue
            # a server file is the leaf and its chain: the leaf is what expires for clients
            out[kind] = [pki.cert_info(c) for c in (certs[:1] if kind == "server" else certs)]
        self._file_certs = (now, out)
        return out

    async def refresh_station_certificates(self) -> None:
        rows = await self.repo.newest_expiry()
        expiry = {}
        for r in rows:
            value = from_db(r["not_after"])
            if value is not None:
                expiry[r["station_id"]] = value
        self._station_expiry = expiry

    def inventory_for_metrics(self) -> dict[str, tuple[int, float | None, int]]:
        """kind -> (how many, seconds until the soonest expiry, how many expire soon)."""
        now = self.clock.now()
        warn = timedelta(days=self.pki.expiry_warning_days)
        kinds: dict[str, list[datetime]] = {
            kind: [c.not_after for c in certs] for kind, certs in self._read_file_certs().items()
        }
        kinds["station"] = list(self._station_expiry.values())
        out = {}
        for kind, dates in kinds.items():
            soonest = min(dates) if dates else None
            out[kind] = (
                len(dates),
                (soonest - now).total_seconds() if soonest else None,
                sum(1 for d in dates if d - now <= warn),
            )
        return out

    @operation(
        "The certificates csms knows, with their expiry",
        tag="security",
        query=(
            *PAGING,
            Param("station", description="one station's only"),
            Param("expiring_within_days", {"type": "integer", "minimum": 0, "maximum": 36500}),
        ),
        responses={
            200: ok(
                "csms's own certificates (csms) and a page of the stations' (items)",
                page_of(obj(), csms=array(obj()), expiry_warning_days=INT),
            )
        },
    )
    async def api_certificates(self, request: web.Request) -> web.Response:
        q = request.query
        now = self.clock.now()
        within = None
        if "expiring_within_days" in q:
            try:
                within = int(q["expiring_within_days"])
            except ValueError:
                raise ApiError(
                    400, "invalid_query", "expiring_within_days: a whole number"
                ) from None
            if not 0 <= within <= 36500:
                raise ApiError(400, "invalid_query", "expiring_within_days: 0 to 36500")
        limit, offset = paging(request)
        station = q.get("station")
        deadline = now + timedelta(days=within) if within is not None else None
        csms_certs = []
        if station is None:
            for kind, certs in self._read_file_certs().items():
                for c in certs:
                    if deadline is None or c.not_after <= deadline:
                        csms_certs.append(
                            {"kind": kind, **c.as_dict(), **_days_left(c.not_after, now)}
                        )
        rows, total = await self.repo.certificates(station, deadline, limit, offset)
        items = [
            {
                "kind": "station",
                "station_id": r["station_id"],
                "subject": r["subject"],
                "issuer": r["issuer"],
                "serial": r["serial"],
                "not_before": _iso(r["not_before"]),
                "not_after": _iso(r["not_after"]),
                "fingerprint_sha256": r["fingerprint"],
                "source": r["source"],
                "created_at": _iso(r["created_at"]),
                **_days_left(from_db(r["not_after"]), now),
            }
            for r in rows
        ]
        return json_response(
            {
                "csms": csms_certs,
                "items": items,
                "total": total,
                "limit": limit,
                "offset": offset,
                "expiry_warning_days": self.pki.expiry_warning_days,
            }
        )

    # ------------------------------------------------------------------ API: station views

    async def _require_station(self, request: web.Request) -> str:
        sid = request.match_info["station_id"]
        if await self.store.stations.auth(sid) is None:
            raise ApiError(404, "not_found", f"no station {sid!r}")
        return sid

    async def events_page(
        self, sid: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self.repo.events(sid, limit, offset)
        items = [
            {
                "id": r["id"],
                "type": r["type"],
                "critical": bool(r["critical"]),
                "timestamp": _iso(r["timestamp"]),
                "timestamp_original": r["timestamp_raw"],
                "tech_info": r["tech_info"],
                "received_at": _iso(r["received_at"]),
            }
            for r in rows
        ]
        return items, total

    async def sign_requests(self, sid: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.repo.sign_requests(sid, limit)
        for r in rows:
            r["received_at"] = _iso(r["received_at"])
            r["updated_at"] = _iso(r["updated_at"])
        return rows

    async def station_certificates(self, sid: str) -> list[dict[str, Any]]:
        rows = await self.repo.certificates_of(sid)
        for r in rows:
            for k in ("not_before", "not_after", "created_at"):
                r[k] = _iso(r[k])
        return rows

    async def requests_of(self, sid: str, limit: int = 20) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("log", "firmware"):
            rows = await self.repo.requests(sid, kind, limit)
            for r in rows:
                r["details"] = json.loads(r["details"] or "{}")
                for k in ("created_at", "uploaded_at", "last_status_at"):
                    r[k] = _iso(r[k])
            statuses = await self.repo.statuses(sid, kind, limit)
            for r in statuses:
                r["received_at"] = _iso(r["received_at"])
            out[kind] = {
                "latest": statuses[0] if statuses else None,
                "history": statuses,
                "requests": rows,
            }
        return out

    @operation(
        "A station's SecurityEventNotifications",
        tag="security",
        query=PAGING,
        responses={200: ok("a page of them, newest first", page_of(obj()))},
    )
    async def api_events(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        limit, offset = paging(request)
        items, total = await self.events_page(sid, limit, offset)
        return json_response({"items": items, "total": total, "limit": limit, "offset": offset})

    @operation(
        "A station's certificate signing requests (SignCertificate)",
        tag="security",
        responses={200: ok("the latest ones", list_of(obj()))},
    )
    async def api_sign_requests(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        items = await self.sign_requests(sid, SIGN_REQUESTS_KEPT)
        return json_response({"items": items, "total": len(items)})

    @operation(
        "Send a signed certificate again (CertificateSigned)",
        tag="security",
        path={"request_id": {"type": "integer", "minimum": 1}},
        responses={
            200: ok("the station's answer", obj({"status": {"const": "ok"}, "response": obj()})),
            409: fails("not signed yet, or the station is not connected"),
            502: fails("the station answered with a CallError"),
            504: fails("no answer in time"),
        },
    )
    async def api_resend(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        try:
            rid = int(request.match_info["request_id"])
        except ValueError:
            raise ApiError(404, "not_found", "a sign request id is a number") from None
        if not 1 <= rid <= INT64_MAX:
            raise ApiError(404, "not_found", f"no sign request {rid}")
        answer = await self.resend(sid, rid)
        return json_response({"status": "ok", "response": answer})

    @operation(
        "A station's GetLog and SignedUpdateFirmware requests and their statuses",
        tag="security",
        responses={200: ok("per kind (log, firmware): latest status, history, requests", obj())},
    )
    async def api_requests(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        return json_response(await self.requests_of(sid, REQUESTS_KEPT))

    @operation(
        "The log files a station uploaded",
        tag="security",
        responses={200: ok("the files", list_of(obj()))},
    )
    async def api_logs(self, request: web.Request) -> web.Response:
        sid = await self._require_station(request)
        files = self.log_files(sid)
        return json_response({"items": files, "total": len(files)})

    @operation(
        "One uploaded log file",
        tag="security",
        responses={200: file_answer("the file")},
    )
    async def api_log_file(self, request: web.Request) -> web.StreamResponse:
        sid = await self._require_station(request)
        path = self.log_file_path(sid, request.match_info["name"])
        if path is None:
            raise ApiError(404, "not_found", "no such log file")
        return log_file_response(path)


def _is_download_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https", "ftp", "ftps", "sftp") and bool(parts.netloc)


def _check_schema(action: str, payload: dict[str, Any]) -> None:
    """The payload as the command port will check it, before anything is recorded."""
    try:
        ocppj.check_payload(ocppj.CALL, action, payload)
    except ocppj.OcppError as e:
        raise InvalidCommand(f"invalid {action} payload: {e.description}") from None


def log_file_response(path: Path) -> web.FileResponse:
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _days_left(not_after: datetime | None, now: datetime) -> dict[str, Any]:
    if not_after is None:
        return {}
    return {"expires_in_days": round((not_after - now).total_seconds() / 86400, 1)}
