"""The security extension in the web interface: a panel on each station's page (security
events, certificate requests, the station's certificates, GetLog and signed firmware
requests with their statuses and the uploaded logs) with the extension's commands for
admins, and the certificates page (admins)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
from aiohttp import web

from .commands import CommandError
from .security import SecurityService, log_file_response
from .web.ui import NavEntry, WebBase, WebRoute

log = structlog.get_logger("csms.security_web")

TEMPLATES = Path(__file__).parent / "security_templates"
EVENTS_PER_PAGE = 20

ACTIONS = (
    "ExtendedTriggerMessage",
    "GetInstalledCertificateIds",
    "InstallCertificate",
    "DeleteCertificate",
    "GetLog",
    "SignedUpdateFirmware",
)
TRIGGERS = (
    "SignChargePointCertificate",
    "BootNotification",
    "LogStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
)
CERTIFICATE_TYPES = ("CentralSystemRootCertificate", "ManufacturerRootCertificate")

MESSAGES = {
    "en": {
        "sec.events": "Security events",
        "sec.no_events": "No security events.",
        "sec.critical": "critical",
        "sec.type": "Type",
        "sec.time": "Time",
        "sec.info": "Information",
        "sec.sign_requests": "Certificate requests (SignCertificate)",
        "sec.answer": "Answer",
        "sec.state": "State",
        "sec.reason": "Reason",
        "sec.resend": "Send again",
        "sec.certificates": "Certificates",
        "sec.station_certificates": "Station certificates signed by csms",
        "sec.expires": "Expires",
        "sec.logs": "Logs (GetLog)",
        "sec.firmware": "Signed firmware (SignedUpdateFirmware)",
        "sec.latest": "Latest status",
        "sec.request": "Request",
        "sec.file": "File",
        "sec.commands": "Security commands",
        "sec.none": "None.",
        "sec.kind": "Kind",
        "sec.warning": "Expiring within {days} days are marked.",
        "sec.expiring": "expiring",
    },
    "pt": {
        "sec.events": "Eventos de segurança",
        "sec.no_events": "Sem eventos de segurança.",
        "sec.critical": "crítico",
        "sec.type": "Tipo",
        "sec.time": "Hora",
        "sec.info": "Informação",
        "sec.sign_requests": "Pedidos de certificado (SignCertificate)",
        "sec.answer": "Resposta",
        "sec.state": "Estado",
        "sec.reason": "Motivo",
        "sec.resend": "Enviar de novo",
        "sec.certificates": "Certificados",
        "sec.station_certificates": "Certificados do posto assinados pelo csms",
        "sec.expires": "Expira",
        "sec.logs": "Registos (GetLog)",
        "sec.firmware": "Firmware assinado (SignedUpdateFirmware)",
        "sec.latest": "Último estado",
        "sec.request": "Pedido",
        "sec.file": "Ficheiro",
        "sec.commands": "Comandos de segurança",
        "sec.none": "Nenhum.",
        "sec.kind": "Tipo",
        "sec.warning": "Os que expiram em {days} dias estão assinalados.",
        "sec.expiring": "a expirar",
    },
}


def _int(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{field}: must be a whole number") from None


def payload_from_form(action: str, form: Any) -> dict[str, Any]:
    """The payload of one of the extension's commands from the posted form."""

    def text(name: str) -> str:
        value = form.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    def required(name: str) -> str:
        value = text(name)
        if not value:
            raise ValueError(f"{name}: required")
        return value

    if action == "ExtendedTriggerMessage":
        out: dict[str, Any] = {"requestedMessage": required("requestedMessage")}
        if text("connectorId"):
            out["connectorId"] = _int(text("connectorId"), "connectorId")
        return out
    if action == "GetInstalledCertificateIds":
        return {"certificateType": required("certificateType")}
    if action == "InstallCertificate":
        return {
            "certificateType": required("certificateType"),
            "certificate": required("certificate"),
        }
    if action == "DeleteCertificate":
        return {
            "certificateHashData": {
                "hashAlgorithm": text("hashAlgorithm") or "SHA256",
                "issuerNameHash": required("issuerNameHash"),
                "issuerKeyHash": required("issuerKeyHash"),
                "serialNumber": required("serialNumber"),
            }
        }
    if action == "GetLog":
        out = {"logType": required("logType"), "log": {}}
        return out
    if action == "SignedUpdateFirmware":
        fw = {
            "location": required("location"),
            "signingCertificate": required("signingCertificate"),
            "signature": required("signature"),
        }
        if text("retrieveDateTime"):
            fw["retrieveDateTime"] = text("retrieveDateTime")
        return {"firmware": fw}
    raise KeyError(action)


class SecurityWebProvider:
    """Registered on the web interface by the central system."""

    name = "security"
    title: ClassVar[dict[str, str]] = {"pt": "Segurança", "en": "Security"}
    templates = TEMPLATES

    def __init__(self, ui: WebBase, service: SecurityService) -> None:
        self.ui = ui
        self.service = service
        self.messages = MESSAGES
        self.nav = [NavEntry("/certificates", {"pt": "Certificados", "en": "Certificates"}, True)]

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/certificates", self.certificates_page, access="admin"),
            WebRoute("POST", "/stations/{station_id}/security/{action}", self.send, access="admin"),
            WebRoute("POST", "/stations/{station_id}/security-resend", self.resend, access="admin"),
            WebRoute("GET", "/stations/{station_id}/logs/{name}", self.download, access="admin"),
        ]

    async def station(self, request: web.Request, sid: str) -> dict[str, Any]:
        s = self.service
        try:
            page = max(1, int(request.query.get("security_page", "1")))
        except ValueError:
            page = 1
        page = min(page, 10**6)
        events, total = await s.events_page(sid, EVENTS_PER_PAGE, (page - 1) * EVENTS_PER_PAGE)
        return {
            "events": events,
            "events_total": total,
            "events_page": page,
            "events_pages": max(1, math.ceil(total / EVENTS_PER_PAGE)),
            "sign_requests": await s.sign_requests(sid, 10),
            "certificates": await s.station_certificates(sid),
            "requests": await s.requests_of(sid, 10),
            "log_files": s.log_files(sid)[:50],
            "actions": ACTIONS,
            "triggers": TRIGGERS,
            "certificate_types": CERTIFICATE_TYPES,
        }

    async def certificates_page(self, request: web.Request) -> web.StreamResponse:
        inv = self.service
        now = inv.clock.now()
        files = []
        for kind, certs in inv._read_file_certs().items():
            for c in certs:
                files.append({"kind": kind, **c.as_dict(), "days": (c.not_after - now).days})
        rows, _ = await inv.repo.certificates(None, None, 500, 0)
        warn = inv.pki.expiry_warning_days
        return self.ui.render(
            request,
            "security/certificates.html",
            {
                "title": self.ui.t("sec.certificates"),
                "files": files,
                "stations": rows,
                "warn_days": warn,
                "now": now,
            },
        )

    async def send(self, request: web.Request) -> web.StreamResponse:
        sid, action = request.match_info["station_id"], request.match_info["action"]
        system = self.ui.system
        if await system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        if action not in ACTIONS:
            return self.ui.error(request, 404, "error.unknown_command", action=action)
        session = self.ui.session_of(request)
        assert session is not None
        flash: dict[str, Any] = {"action": action, "ok": False, "response": None}
        try:
            payload = payload_from_form(action, self.ui.form(request))
            prepare = system.services.command_preparers.get(action)
            if prepare is not None:
                payload = await prepare(sid, payload)
            answer = await system.commands.send(sid, action, payload, origin="web")
        except ValueError as e:
            flash["error"] = str(e)
        except CommandError as e:
            flash["error"] = str(e)
        else:
            flash.update(ok=True, response=json.dumps(answer, indent=2, ensure_ascii=False))
        log.info(
            "web security command",
            user=session.user,
            station_id=sid,
            action=action,
            ok=flash["ok"],
            error=flash.get("error"),
        )
        self.ui.flash(session, flash)
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#command-result")

    async def resend(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        session = self.ui.session_of(request)
        assert session is not None
        flash: dict[str, Any] = {"action": "CertificateSigned", "ok": False, "response": None}
        try:
            raw = self.ui.form(request).get("request_id")
            answer = await self.service.resend(sid, int(raw if isinstance(raw, str) else ""))
        except ValueError:
            flash["error"] = "no such request"
        except Exception as e:  # ApiError: its message
            flash["error"] = str(e)
        else:
            flash.update(ok=True, response=json.dumps(answer, indent=2))
        self.ui.flash(session, flash)
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#command-result")

    async def download(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        path = self.service.log_file_path(sid, request.match_info["name"])
        if path is None:
            return self.ui.error(request, 404, "error.not_found")
        return log_file_response(path)
