"""Bulk commands and alerts in the web interface (admins): the Bulk page (build a selection,
preview it, send, watch the progress and each station's result) and the Alerts page (the
alerts with each channel's delivery state; send a test alert)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

import structlog
from aiohttp import web

from . import ocppj
from .alerts import KINDS, AlertService
from .bulk import MAX_STATIONS, PREVIEW, STATES, BulkService
from .http import ApiError
from .web.ui import NavEntry, WebBase, WebRoute

log = structlog.get_logger("csms.fleet_ops_web")

TEMPLATES = Path(__file__).parent / "fleet_ops_templates"
JOBS_PER_PAGE = 20
ITEMS_PER_PAGE = 100
ALERTS_PER_PAGE = 50
MAX_PAYLOAD_TEXT = 64 * 1024
_SPLIT = re.compile(r"[\s,;]+")

MESSAGES = {
    "en": {
        "bulk.title": "Bulk commands",
        "bulk.new": "New bulk command",
        "bulk.action": "Command",
        "bulk.payload": "Payload (JSON)",
        "bulk.stations": "Stations (ids, one per line)",
        "bulk.location": "Location id",
        "bulk.firmware": "Firmware version",
        "bulk.vendor": "Vendor",
        "bulk.model": "Model",
        "bulk.connected": "Connection",
        "bulk.any": "any",
        "bulk.online": "connected",
        "bulk.offline": "not connected",
        "bulk.offline_minutes": "Offline for more than (minutes)",
        "bulk.profile": "Security profile",
        "bulk.all": "every station (when nothing else is given)",
        "bulk.concurrency": "At once",
        "bulk.preview": "Preview",
        "bulk.send": "Send",
        "bulk.preview_result": "{count} stations selected",
        "bulk.preview_first": "first ones:",
        "bulk.jobs": "Recent bulk commands",
        "bulk.none": "No bulk commands yet.",
        "bulk.state": "State",
        "bulk.progress": "Progress",
        "bulk.created": "Created",
        "bulk.by": "By",
        "bulk.cancel": "Cancel the pending stations",
        "bulk.cancelled": "Cancelled.",
        "bulk.not_running": "It is not running any more.",
        "bulk.station": "Station",
        "bulk.answer": "Answer",
        "bulk.when": "When",
        "bulk.results": "Results per station",
        "bulk.job": "Bulk command {id}",
        "bulk.filter_state": "Only",
        "alerts.title": "Alerts",
        "alerts.none": "No alerts.",
        "alerts.kind": "Kind",
        "alerts.subject": "About",
        "alerts.created": "Raised",
        "alerts.details": "Details",
        "alerts.deliveries": "Deliveries",
        "alerts.test": "Send a test alert",
        "alerts.tested": "Test alert {id} raised.",
        "alerts.no_channel": "No channel is configured ([alerts] webhook_urls, smtp_host).",
        "alerts.all": "all",
        "alerts.filter": "Filter",
        "alerts.prev": "Newer",
        "alerts.next": "Older",
    },
    "pt": {
        "bulk.title": "Comandos em massa",
        "bulk.new": "Novo comando em massa",
        "bulk.action": "Comando",
        "bulk.payload": "Conteúdo (JSON)",
        "bulk.stations": "Postos (ids, um por linha)",
        "bulk.location": "Id da localização",
        "bulk.firmware": "Versão de firmware",
        "bulk.vendor": "Fabricante",
        "bulk.model": "Modelo",
        "bulk.connected": "Ligação",
        "bulk.any": "qualquer",
        "bulk.online": "ligado",
        "bulk.offline": "desligado",
        "bulk.offline_minutes": "Desligado há mais de (minutos)",
        "bulk.profile": "Perfil de segurança",
        "bulk.all": "todos os postos (quando nada mais é indicado)",
        "bulk.concurrency": "Em simultâneo",
        "bulk.preview": "Pré-visualizar",
        "bulk.send": "Enviar",
        "bulk.preview_result": "{count} postos selecionados",
        "bulk.preview_first": "primeiros:",
        "bulk.jobs": "Comandos em massa recentes",
        "bulk.none": "Ainda não há comandos em massa.",
        "bulk.state": "Estado",
        "bulk.progress": "Progresso",
        "bulk.created": "Criado",
        "bulk.by": "Por",
        "bulk.cancel": "Cancelar os postos pendentes",
        "bulk.cancelled": "Cancelado.",
        "bulk.not_running": "Já não está em curso.",
        "bulk.station": "Posto",
        "bulk.answer": "Resposta",
        "bulk.when": "Quando",
        "bulk.results": "Resultados por posto",
        "bulk.job": "Comando em massa {id}",
        "bulk.filter_state": "Só",
        "alerts.title": "Alertas",
        "alerts.none": "Sem alertas.",
        "alerts.kind": "Tipo",
        "alerts.subject": "Sobre",
        "alerts.created": "Emitido",
        "alerts.details": "Detalhes",
        "alerts.deliveries": "Entregas",
        "alerts.test": "Enviar um alerta de teste",
        "alerts.tested": "Alerta de teste {id} emitido.",
        "alerts.no_channel": "Nenhum canal configurado ([alerts] webhook_urls, smtp_host).",
        "alerts.all": "todos",
        "alerts.filter": "Filtrar",
        "alerts.prev": "Mais recentes",
        "alerts.next": "Mais antigos",
    },
}

FORM_FIELDS = (
    "action",
    "payload",
    "stations",
    "location",
    "firmware_version",
    "vendor",
    "model",
    "connected",
    "offline_minutes",
    "security_profile",
    "all",
    "concurrency",
)


def _page_number(request: web.Request, name: str = "page") -> int:
    try:
        return min(max(1, int(request.query.get(name, "1"))), 10**6)
    except ValueError:
        return 1


def body_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The API's request body from the Bulk page's form (checked by BulkService.plan);
    ValueError for what cannot even be read."""
    text = form.get("payload", "").strip() or "{}"
    if len(text) > MAX_PAYLOAD_TEXT:
        raise ValueError("payload: too long")
    try:
        payload = json.loads(text)
    except ValueError:
        raise ValueError("payload: not valid JSON") from None
    selection: dict[str, Any] = {}
    ids = [i for i in _SPLIT.split(form.get("stations", "")) if i]
    if ids:
        if len(ids) > MAX_STATIONS:
            raise ValueError(f"stations: at most {MAX_STATIONS}")
        selection["stations"] = ids
    if form.get("location", "").strip():
        selection["location"] = form["location"].strip()
    if form.get("all") == "on":
        selection["all"] = True
    f: dict[str, Any] = {}
    for key in ("firmware_version", "vendor", "model"):
        if form.get(key, "").strip():
            f[key] = form[key].strip()
    if form.get("connected") in ("yes", "no"):
        f["connected"] = form["connected"] == "yes"
    for key, kind in (("offline_minutes", float), ("security_profile", int)):
        raw = form.get(key, "").strip()
        if raw:
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{key}: a number") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{key}: a number")
            f[key] = value
    if f:
        selection["filter"] = f
    try:
        concurrency = int(form.get("concurrency", "10") or "10")
    except ValueError:
        raise ValueError("concurrency: a whole number") from None
    return {
        "action": form.get("action", ""),
        "payload": payload,
        "selection": selection,
        "concurrency": concurrency,
    }


class FleetOpsWebProvider:
    """Registered on the web interface by the central system."""

    name = "fleet_ops"
    title: ClassVar[dict[str, str]] = {"pt": "Operação da rede", "en": "Fleet operations"}
    templates = TEMPLATES

    def __init__(self, ui: WebBase, bulk: BulkService, alerts: AlertService) -> None:
        self.ui = ui
        self.bulk = bulk
        self.alerts = alerts
        self.messages = MESSAGES
        self.nav = [
            NavEntry("/bulk", {"pt": "Em massa", "en": "Bulk"}, True),
            NavEntry("/alerts", {"pt": "Alertas", "en": "Alerts"}, True),
        ]

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/bulk", self.bulk_page, access="admin"),
            WebRoute("POST", "/bulk", self.bulk_send, access="admin"),
            WebRoute("POST", "/bulk/preview", self.bulk_preview, access="admin"),
            WebRoute("GET", "/bulk/{job_id}", self.job_page, access="admin"),
            WebRoute("POST", "/bulk/{job_id}/cancel", self.job_cancel, access="admin"),
            WebRoute("GET", "/live/bulk/{job_id}", self.job_live, access="admin", json=True),
            WebRoute("GET", "/alerts", self.alerts_page, access="admin"),
            WebRoute("POST", "/alerts/test", self.alerts_test, access="admin"),
        ]

    # ------------------------------------------------------------------ bulk

    def _form(self, request: web.Request) -> dict[str, str]:
        raw = self.ui.form(request)
        out = {}
        for key in FORM_FIELDS:
            value = raw.get(key, "")
            out[key] = value if isinstance(value, str) else ""
        return out

    async def _bulk(
        self,
        request: web.Request,
        form: dict[str, str] | None = None,
        preview: dict[str, Any] | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        page = _page_number(request)
        rows, total = await self.bulk.repo.page(JOBS_PER_PAGE, (page - 1) * JOBS_PER_PAGE)
        return self.ui.render(
            request,
            "fleet_ops/bulk.html",
            {
                "title": self.ui.t("bulk.title"),
                "actions": sorted(ocppj.CS_ACTIONS),
                "form": form
                or {"action": "Reset", "payload": '{"type": "Soft"}', "concurrency": "10"},
                "preview": preview,
                "error": error,
                "jobs": await self.bulk.views(rows),
                "page": page,
                "pages": max(1, math.ceil(total / JOBS_PER_PAGE)),
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
            },
            status=status,
        )

    async def bulk_page(self, request: web.Request) -> web.StreamResponse:
        return await self._bulk(request)

    async def _plan(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            return await self.bulk.plan(body_from_form(form))
        except ValueError as e:
            raise ApiError(422, "invalid_form", str(e)) from None

    async def bulk_preview(self, request: web.Request) -> web.StreamResponse:
        form = self._form(request)
        try:
            plan = await self._plan(form)
        except ApiError as e:
            return await self._bulk(request, form, error=str(e), status=422)
        ids = plan["station_ids"]
        return await self._bulk(request, form, preview={"count": len(ids), "first": ids[:PREVIEW]})

    async def bulk_send(self, request: web.Request) -> web.StreamResponse:
        form = self._form(request)
        session = self.ui.session_of(request)
        assert session is not None
        try:
            plan = await self._plan(form)
            if not plan["station_ids"]:
                raise ApiError(422, "empty_selection", "the selection means no station")
        except ApiError as e:
            return await self._bulk(request, form, error=str(e), status=422)
        ids = plan.pop("station_ids")
        job_id = await self.bulk.create(**plan, station_ids=ids, created_by=f"web:{session.user}")
        raise web.HTTPSeeOther(f"/bulk/{job_id}")

    async def _job(self, request: web.Request) -> dict[str, Any] | None:
        try:
            job_id = int(request.match_info["job_id"])
        except ValueError:
            return None
        return await self.bulk.repo.get(job_id) if 1 <= job_id < 1 << 62 else None

    async def _job_context(self, request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
        page = _page_number(request)
        state = request.query.get("state") or None
        if state not in STATES:
            state = None
        items, total = await self.bulk.repo.items(
            int(row["id"]), state, ITEMS_PER_PAGE, (page - 1) * ITEMS_PER_PAGE
        )
        for i in items:
            i["answer_text"] = json.dumps(i["answer"], ensure_ascii=False) if i["answer"] else ""
        return {
            "job": (await self.bulk.views([row]))[0],
            "items": items,
            "page": page,
            "pages": max(1, math.ceil(total / ITEMS_PER_PAGE)),
            "state": state or "",
            "states": STATES,
        }

    async def job_page(self, request: web.Request) -> web.StreamResponse:
        row = await self._job(request)
        if row is None:
            return self.ui.error(request, 404, "error.not_found")
        ctx = await self._job_context(request, row)
        ctx["title"] = self.ui.t("bulk.job", id=row["id"])
        ctx["flash"] = self.ui.pop_flash(self.ui.session_of(request))
        return self.ui.render(request, "fleet_ops/bulk_job.html", ctx)

    async def job_live(self, request: web.Request) -> web.StreamResponse:
        row = await self._job(request)
        if row is None:
            return web.json_response({"error": "no such bulk command"}, status=404)
        html = self.ui.render_text(
            request, "fleet_ops/_bulk_live.html", await self._job_context(request, row)
        )
        return web.json_response({"html": {"bulk-live": html}})

    async def job_cancel(self, request: web.Request) -> web.StreamResponse:
        row = await self._job(request)
        if row is None:
            return self.ui.error(request, 404, "error.not_found")
        session = self.ui.session_of(request)
        assert session is not None
        done = await self.bulk.cancel(int(row["id"]))
        log.info("web bulk cancel", user=session.user, job_id=row["id"], done=done)
        key = "bulk.cancelled" if done else "bulk.not_running"
        self.ui.flash(session, {"ok": done, "message": self.ui.t(key)})
        raise web.HTTPSeeOther(f"/bulk/{row['id']}")

    # ------------------------------------------------------------------ alerts

    async def alerts_page(self, request: web.Request) -> web.StreamResponse:
        page = _page_number(request)
        kind = request.query.get("kind") or None
        if kind not in KINDS:
            kind = None
        subject = (request.query.get("subject") or "").strip()[:200] or None
        rows, total = await self.alerts.repo.page(
            kind, subject, ALERTS_PER_PAGE, (page - 1) * ALERTS_PER_PAGE
        )
        return self.ui.render(
            request,
            "fleet_ops/alerts.html",
            {
                "title": self.ui.t("alerts.title"),
                "alerts": [AlertService.view(r) for r in rows],
                "kinds": KINDS,
                "kind": kind or "",
                "subject": subject or "",
                "page": page,
                "pages": max(1, math.ceil(total / ALERTS_PER_PAGE)),
                "channels": bool(
                    self.alerts.settings.webhook_urls or self.alerts.settings.smtp_host
                ),
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
            },
        )

    async def alerts_test(self, request: web.Request) -> web.StreamResponse:
        session = self.ui.session_of(request)
        assert session is not None
        alert_id = await self.alerts.raise_alert(
            "test", "csms", {"message": "a test alert, sent on request", "by": session.user}
        )
        self.ui.flash(session, {"ok": True, "message": self.ui.t("alerts.tested", id=alert_id)})
        raise web.HTTPSeeOther("/alerts")
