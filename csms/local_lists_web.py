"""Local authorization lists in the web interface: a panel on each station's page (on or
off, the version the station acknowledged, what is pending, what is left out for want of
room, the last sync and its error) with, for admins, the switch and a forced full update."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
from aiohttp import web

from .local_lists import LocalListService
from .web.ui import WebBase, WebRoute

log = structlog.get_logger("csms.local_lists_web")

TEMPLATES = Path(__file__).parent / "local_list_templates"

MESSAGES = {
    "en": {
        "ll.enabled": "Kept in sync by csms",
        "ll.on": "on",
        "ll.off": "off",
        "ll.switch_on": "Switch on",
        "ll.switch_off": "Switch off",
        "ll.sync": "Send the whole list now",
        "ll.state": "State",
        "ll.version": "Version acknowledged",
        "ll.entries": "Entries on the station",
        "ll.desired": "Entries wanted",
        "ll.pending": "Pending",
        "ll.adds": "to add or change",
        "ll.removes": "to remove",
        "ll.left_out": "Left out (no room)",
        "ll.lengths": "LocalAuthListMaxLength / SendLocalListMaxLength",
        "ll.last_sync": "Last sync",
        "ll.error": "Last error",
        "ll.offline_note": "The station is not connected: it is updated when it returns.",
        "ll.state.new": "not sent yet",
        "ll.state.synced": "in sync",
        "ll.state.pending": "being updated",
        "ll.state.error": "failed (retried)",
        "ll.state.unsupported": "not supported by the station",
        "ll.state.disabled_on_station": "disabled on the station",
        "ll.bad_switch": "The switch is on (true) or off (false).",
    },
    "pt": {
        "ll.enabled": "Mantida sincronizada pelo csms",
        "ll.on": "ligada",
        "ll.off": "desligada",
        "ll.switch_on": "Ligar",
        "ll.switch_off": "Desligar",
        "ll.sync": "Enviar já a lista completa",
        "ll.state": "Estado",
        "ll.version": "Versão confirmada",
        "ll.entries": "Entradas no posto",
        "ll.desired": "Entradas pretendidas",
        "ll.pending": "Pendente",
        "ll.adds": "a acrescentar ou alterar",
        "ll.removes": "a retirar",
        "ll.left_out": "De fora (sem espaço)",
        "ll.lengths": "LocalAuthListMaxLength / SendLocalListMaxLength",
        "ll.last_sync": "Última sincronização",
        "ll.error": "Último erro",
        "ll.offline_note": "O posto não está ligado: é atualizado quando voltar.",
        "ll.state.new": "ainda não enviada",
        "ll.state.synced": "sincronizada",
        "ll.state.pending": "a atualizar",
        "ll.state.error": "falhou (nova tentativa)",
        "ll.state.unsupported": "não suportada pelo posto",
        "ll.state.disabled_on_station": "desativada no posto",
        "ll.bad_switch": "O interruptor é ligado (true) ou desligado (false).",
    },
}


class LocalListWebProvider:
    """Registered on the web interface by the central system."""

    name = "local_list"
    title: ClassVar[dict[str, str]] = {
        "pt": "Lista local de autorização",
        "en": "Local authorization list",
    }
    templates = TEMPLATES

    def __init__(self, ui: WebBase, service: LocalListService) -> None:
        self.ui = ui
        self.service = service
        self.messages = MESSAGES

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("POST", "/stations/{station_id}/local-list", self.switch, access="admin"),
            WebRoute("POST", "/stations/{station_id}/local-list/sync", self.sync, access="admin"),
        ]

    async def station(self, request: web.Request, sid: str) -> dict[str, Any]:
        return await self.service.view(sid, await self.service.repo.get(sid))

    async def _station(self, request: web.Request) -> str | None:
        sid = request.match_info["station_id"]
        if len(sid) > 255 or await self.ui.system.store.stations.snapshot_row(sid) is None:
            return None
        return sid

    async def switch(self, request: web.Request) -> web.StreamResponse:
        sid = await self._station(request)
        if sid is None:
            return self.ui.error(
                request, 404, "error.no_station", station=request.match_info["station_id"][:255]
            )
        value = self.ui.form(request).get("enabled")
        if value not in ("true", "false"):
            return self.ui.error(request, 400, "ll.bad_switch")
        session = self.ui.session_of(request)
        await self.service.set_enabled(sid, value == "true")
        log.info(
            "web local list switch",
            user=session.user if session else None,
            station_id=sid,
            enabled=value == "true",
        )
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#local-list")

    async def sync(self, request: web.Request) -> web.StreamResponse:
        sid = await self._station(request)
        if sid is None:
            return self.ui.error(
                request, 404, "error.no_station", station=request.match_info["station_id"][:255]
            )
        if await self.service.enabled(sid):
            await self.service.force(sid)
            session = self.ui.session_of(request)
            log.info("web local list sync", user=session.user if session else None, station_id=sid)
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#local-list")
