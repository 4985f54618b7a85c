"""Firmware campaigns and diagnostics in the web interface: the Firmware page (fleet
versions at a glance, the firmware images, the campaigns, and for admins the forms to add
an image and start a campaign), a campaign's page (progress per station, cancel), and a
panel on each station's page (its campaigns, its diagnostics: request, list, download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
from aiohttp import web

from .commands import CommandError
from .diagnostics import DiagnosticsService
from .firmware import MAX_CAMPAIGN_STATIONS, CampaignConflict, CsrfRefused, FirmwareService
from .http import ApiError
from .uploads import download_response
from .web.auth import SESSION_COOKIE
from .web.ui import NavEntry, WebBase, WebRoute

log = structlog.get_logger("csms.firmware_web")

TEMPLATES = Path(__file__).parent / "firmware_templates"
ZONES = ("Europe/Lisbon", "Atlantic/Madeira", "Atlantic/Azores", "UTC")
CAMPAIGNS_SHOWN = 50
IMAGES_SHOWN = 50

MESSAGES = {
    "en": {
        "fw.title": "Firmware",
        "fw.versions": "Firmware versions in the fleet",
        "fw.version": "Version",
        "fw.stations": "Stations",
        "fw.unknown": "(unknown)",
        "fw.images": "Firmware images",
        "fw.name": "Name",
        "fw.size": "Size",
        "fw.source": "Source",
        "fw.added": "Added",
        "fw.add_url": "Add a firmware image by URL",
        "fw.upload": "Upload a firmware file",
        "fw.upload_note": "Files up to {size} MB. Larger ones: give a URL.",
        "fw.file": "File",
        "fw.add": "Add",
        "fw.campaigns": "Campaigns",
        "fw.campaign": "Campaign",
        "fw.new_campaign": "New campaign",
        "fw.image": "Firmware image",
        "fw.target": "Target version (empty: the image's)",
        "fw.station_ids": "Station ids (one per line or separated by commas)",
        "fw.all_stations": "All stations not retired",
        "fw.max_concurrent": "At most this many at once",
        "fw.retries": "Retries per station",
        "fw.retry_interval": "Seconds between retries",
        "fw.station_timeout": "Seconds a station may take",
        "fw.window": "Daily window (local time, optional)",
        "fw.time_zone": "Time zone",
        "fw.start": "Start",
        "fw.state": "State",
        "fw.progress": "Progress",
        "fw.attempts": "Attempts",
        "fw.before": "Before",
        "fw.after": "After",
        "fw.last_status": "Last status",
        "fw.downloads": "Downloads",
        "fw.error": "Error",
        "fw.cancel": "Cancel the campaign",
        "fw.none": "None.",
        "fw.created": "Created",
        "fw.done": "done",
        "fw.failed": "failed",
        "fw.diagnostics": "Diagnostics (GetDiagnostics)",
        "fw.request_diagnostics": "Request diagnostics",
        "fw.from": "From (optional)",
        "fw.to": "To (optional)",
        "fw.requested": "Requested",
        "fw.file_name": "File",
        "fw.station_campaigns": "Firmware campaigns",
        "fw.remove": "Remove",
        "fw.removed": "removed",
    },
    "pt": {
        "fw.title": "Firmware",
        "fw.versions": "Versões de firmware na frota",
        "fw.version": "Versão",
        "fw.stations": "Postos",
        "fw.unknown": "(desconhecida)",
        "fw.images": "Imagens de firmware",
        "fw.name": "Nome",
        "fw.size": "Tamanho",
        "fw.source": "Origem",
        "fw.added": "Adicionada",
        "fw.add_url": "Adicionar uma imagem de firmware por URL",
        "fw.upload": "Carregar um ficheiro de firmware",
        "fw.upload_note": "Ficheiros até {size} MB. Maiores: indique um URL.",
        "fw.file": "Ficheiro",
        "fw.add": "Adicionar",
        "fw.campaigns": "Campanhas",
        "fw.campaign": "Campanha",
        "fw.new_campaign": "Nova campanha",
        "fw.image": "Imagem de firmware",
        "fw.target": "Versão alvo (vazio: a da imagem)",
        "fw.station_ids": "Identificadores dos postos (um por linha ou separados por vírgulas)",
        "fw.all_stations": "Todos os postos não retirados",
        "fw.max_concurrent": "No máximo este número em simultâneo",
        "fw.retries": "Novas tentativas por posto",
        "fw.retry_interval": "Segundos entre tentativas",
        "fw.station_timeout": "Segundos que um posto pode demorar",
        "fw.window": "Janela diária (hora local, opcional)",
        "fw.time_zone": "Fuso horário",
        "fw.start": "Iniciar",
        "fw.state": "Estado",
        "fw.progress": "Progresso",
        "fw.attempts": "Tentativas",
        "fw.before": "Antes",
        "fw.after": "Depois",
        "fw.last_status": "Último estado",
        "fw.downloads": "Descargas",
        "fw.error": "Erro",
        "fw.cancel": "Cancelar a campanha",
        "fw.none": "Nenhuma.",
        "fw.created": "Criada",
        "fw.done": "concluídos",
        "fw.failed": "falhados",
        "fw.diagnostics": "Diagnósticos (GetDiagnostics)",
        "fw.request_diagnostics": "Pedir diagnósticos",
        "fw.from": "Desde (opcional)",
        "fw.to": "Até (opcional)",
        "fw.requested": "Pedido",
        "fw.file_name": "Ficheiro",
        "fw.station_campaigns": "Campanhas de firmware",
        "fw.remove": "Remover",
        "fw.removed": "removida",
    },
}


def _text(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _whole(form: Any, name: str, default: int) -> int:
    text = _text(form, name, 20)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: a whole number") from None


def campaign_body_from_form(form: Any) -> dict[str, Any]:
    """The API's campaign body from the web form (checked again by the service)."""
    try:
        image_id = int(_text(form, "firmware_id", 20))
    except ValueError:
        raise ValueError("firmware_id: choose a firmware image") from None
    ids_text = form.get("stations", "")
    ids_text = ids_text[: MAX_CAMPAIGN_STATIONS * 50] if isinstance(ids_text, str) else ""
    ids = [s.strip() for s in ids_text.replace(",", "\n").splitlines() if s.strip()]
    body: dict[str, Any] = {
        "firmware_id": image_id,
        "stations": ids,
        "max_concurrent": _whole(form, "max_concurrent", 10),
        "retries": _whole(form, "retries", 2),
        "retry_interval": _whole(form, "retry_interval", 600),
        "station_timeout": _whole(form, "station_timeout", 3600),
    }
    if _text(form, "target_version"):
        body["target_version"] = _text(form, "target_version", 60)
    start, end = _text(form, "window_start", 10), _text(form, "window_end", 10)
    if start or end:
        body["window"] = {
            "start": start or None,
            "end": end or None,
            "time_zone": _text(form, "time_zone", 64) or "Europe/Lisbon",
        }
    return body


class FirmwareWebProvider:
    """Registered on the web interface by the central system."""

    name = "firmware"
    title: ClassVar[dict[str, str]] = {
        "pt": "Firmware e diagnósticos",
        "en": "Firmware and diagnostics",
    }
    templates = TEMPLATES

    def __init__(
        self, ui: WebBase, firmware: FirmwareService, diagnostics: DiagnosticsService
    ) -> None:
        self.ui = ui
        self.firmware = firmware
        self.diagnostics = diagnostics
        self.messages = MESSAGES
        self.nav = [NavEntry("/firmware", {"pt": "Firmware", "en": "Firmware"})]

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/firmware", self.page),
            WebRoute("GET", "/firmware/campaigns/{campaign_id}", self.campaign_page),
            WebRoute("POST", "/firmware/images", self.add_url, access="admin"),
            WebRoute("POST", "/firmware/images/remove", self.remove_image, access="admin"),
            # (streamed: its own session, admin and CSRF checks, see upload())
            # (under /uploads/: held to a rate, not a deadline, like stations' uploads)
            WebRoute("POST", "/uploads/firmware", self.upload, access="public"),
            WebRoute("POST", "/firmware/campaigns", self.create, access="admin"),
            WebRoute("POST", "/firmware/campaigns/cancel", self.cancel, access="admin"),
            WebRoute(
                "POST",
                "/stations/{station_id}/diagnostics",
                self.request_diagnostics,
                access="admin",
            ),
            WebRoute(
                "GET", "/stations/{station_id}/diagnostics/{name}", self.download, access="admin"
            ),
        ]

    # ------------------------------------------------------------------ pages

    def _flash(self, request: web.Request) -> dict[str, Any] | None:
        return self.ui.pop_flash(self.ui.session_of(request))

    async def page(self, request: web.Request) -> web.StreamResponse:
        fw = self.firmware
        versions = await fw.versions()
        images, _ = await fw.repo.images(IMAGES_SHOWN, 0)
        campaigns, total = await fw.campaigns_page(CAMPAIGNS_SHOWN, 0)
        return self.ui.render(
            request,
            "firmware/firmware.html",
            {
                "title": self.ui.t("fw.title"),
                "versions": versions,
                "images": [fw.image_view(i) for i in images],
                "campaigns": campaigns,
                "campaigns_total": total,
                "zones": ZONES,
                "max_mb": fw.config.max_file_bytes // (1024 * 1024),
                "flash": self._flash(request),
            },
        )

    async def campaign_page(self, request: web.Request) -> web.StreamResponse:
        try:
            cid = int(request.match_info["campaign_id"])
        except ValueError:
            return self.ui.error(request, 404, "error.not_found")
        view = await self.firmware.campaign_view(cid) if 0 < cid < 2**62 else None
        if view is None:
            return self.ui.error(request, 404, "error.not_found")
        return self.ui.render(
            request,
            "firmware/campaign.html",
            {
                "title": f"{self.ui.t('fw.campaign')} {cid}",
                "c": view,
                "flash": self._flash(request),
            },
        )

    async def station(self, request: web.Request, sid: str) -> dict[str, Any]:
        places = await self.firmware.repo.open_for_station(sid)
        return {
            "campaigns": [
                {"id": p["campaign_id"], "state": p["state"], "attempts": p["attempts"]}
                for p in places
            ],
            "diagnostics": await self.diagnostics.requests_of(sid, 20),
        }

    # ------------------------------------------------------------------ actions

    def _done(
        self, request: web.Request, action: str, to: str, error: str | None = None, **extra: Any
    ) -> web.StreamResponse:
        session = self.ui.session_of(request)
        assert session is not None
        flash = {"action": action, "ok": error is None, "error": error, "response": None, **extra}
        log.info("web firmware action", user=session.user, action=action, error=error)
        self.ui.flash(session, flash)
        raise web.HTTPSeeOther(to)

    async def add_url(self, request: web.Request) -> web.StreamResponse:
        form = self.ui.form(request)
        session = self.ui.session_of(request)
        body = {
            "url": _text(form, "url", 600),
            "version": _text(form, "version", 60) or None,
            "name": _text(form, "name", 100) or None,
        }
        try:
            await self.firmware.add_url_image(body, session.user if session else None)
        except ValueError as e:
            return self._done(request, "firmware", "/firmware", str(e))
        return self._done(request, "firmware", "/firmware")

    async def remove_image(self, request: web.Request) -> web.StreamResponse:
        try:
            image_id = int(_text(self.ui.form(request), "image_id", 20))
            if not 0 < image_id < 2**62:
                raise ValueError
            removed = await self.firmware.remove_image(image_id)
        except (ValueError, LookupError):
            return self.ui.error(request, 404, "error.not_found")
        error = None if removed else "a running campaign uses this image"
        return self._done(request, "firmware", "/firmware", error)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """A firmware file from the page's form, streamed (the form parser would hold the
        whole file): the admin's session and the CSRF token (a field before the file) are
        checked here."""
        session = await self.ui.auth.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise web.HTTPSeeOther("/login?next=%2Ffirmware")
        if not session.is_admin:
            log.warning("web: firmware upload refused to a viewer", user=session.user)
            return self.ui.secure(self.ui.error(request, 403, "error.admin_only"))
        try:
            image = await self.firmware.receive_image(request, session.user, csrf=session.csrf)
        except CsrfRefused:
            log.warning("web: CSRF token missing or wrong", path=request.path)
            return self.ui.secure(self.ui.error(request, 403, "error.csrf"))
        except ApiError as e:
            self.ui.flash(session, {"action": "firmware", "ok": False, "error": str(e)})
        else:
            self.ui.flash(
                session,
                {"action": "firmware", "ok": True, "error": None, "response": image["sha256"]},
            )
        raise web.HTTPSeeOther("/firmware")

    async def create(self, request: web.Request) -> web.StreamResponse:
        form = self.ui.form(request)
        session = self.ui.session_of(request)
        try:
            body = campaign_body_from_form(form)
            if form.get("all_stations") == "1" and not body["stations"]:
                body["stations"] = await self._all_stations()
            view = await self.firmware.create_campaign(body, session.user if session else None)
        except LookupError as e:
            return self._done(request, "campaign", "/firmware", str(e.args[0]))
        except CampaignConflict as e:
            return self._done(request, "campaign", "/firmware", str(e))
        except ValueError as e:
            return self._done(request, "campaign", "/firmware", str(e))
        return self._done(request, "campaign", f"/firmware/campaigns/{view['id']}")

    async def _all_stations(self) -> list[str]:
        rows = await self.ui.system.store.read(
            "SELECT id FROM stations WHERE retired_at IS NULL ORDER BY id LIMIT ?",
            (MAX_CAMPAIGN_STATIONS,),
        )
        return [r["id"] for r in rows]

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        try:
            cid = int(_text(self.ui.form(request), "campaign_id", 20))
        except ValueError:
            return self.ui.error(request, 404, "error.not_found")
        to = f"/firmware/campaigns/{cid}"
        if not 0 < cid < 2**62 or await self.firmware.repo.campaign(cid) is None:
            return self.ui.error(request, 404, "error.not_found")
        if not await self.firmware.cancel(cid):
            return self._done(request, "cancel", to, "the campaign is not running")
        return self._done(request, "cancel", to)

    async def request_diagnostics(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        if await self.ui.system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        form = self.ui.form(request)
        session = self.ui.session_of(request)
        assert session is not None
        params = {
            "start_time": _text(form, "start_time", 40),
            "stop_time": _text(form, "stop_time", 40),
        }
        flash: dict[str, Any] = {"action": "GetDiagnostics", "ok": False, "response": None}
        try:
            out = await self.diagnostics.request(sid, params, session.user, "web")
        except CommandError as e:
            flash["error"] = str(e)
        else:
            flash.update(ok=True, response=json.dumps(out, indent=2))
        log.info("web diagnostics request", user=session.user, station_id=sid, ok=flash["ok"])
        self.ui.flash(session, flash)
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#command-result")

    async def download(self, request: web.Request) -> web.StreamResponse:
        sid, name = request.match_info["station_id"], request.match_info["name"]
        path = self.diagnostics.file_path(sid, name)
        if path is None or await self.diagnostics.repo.diagnostics_file(sid, name) is None:
            return self.ui.error(request, 404, "error.not_found")
        return download_response(path)
