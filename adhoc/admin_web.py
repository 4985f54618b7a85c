"""Ad hoc charging in the operator's web interface (admins): the payments with their
receipts, and the printable QR code stickers of each Location's EVSEs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from csms.ports import NavEntry, WebRoute, WebUI

from .api import STATES, payment_json
from .receipts import render_page, render_pdf
from .receipts_data import to_receipt
from .service import AdhocService
from .stickers import Sticker, sticker_sheet
from .views import offer_view

TEMPLATES = Path(__file__).parent / "admin_templates"
PER_PAGE = 50
# standalone pages (receipts, stickers) carry their own styles, inline
STANDALONE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'"
)

MESSAGES = {
    "en": {
        "adhoc.title": "Ad hoc payments",
        "adhoc.none": "No payments.",
        "adhoc.created": "Created",
        "adhoc.station": "Station",
        "adhoc.evse": "EVSE",
        "adhoc.state": "State",
        "adhoc.reason": "Reason",
        "adhoc.held": "Held",
        "adhoc.captured": "Captured",
        "adhoc.released": "Released",
        "adhoc.provider": "Provider",
        "adhoc.receipt": "Receipt",
        "adhoc.transaction": "Transaction",
        "adhoc.any_state": "any state",
        "adhoc.filter": "Filter",
        "adhoc.stickers": "QR code stickers",
        "adhoc.stickers_intro": "One printable page per Location: each EVSE's code opens its "
        "public page (price, pay, charge).",
    },
    "pt": {
        "adhoc.title": "Pagamentos no local",
        "adhoc.none": "Sem pagamentos.",
        "adhoc.created": "Criado",
        "adhoc.station": "Posto",
        "adhoc.evse": "EVSE",
        "adhoc.state": "Estado",
        "adhoc.reason": "Motivo",
        "adhoc.held": "Cativado",
        "adhoc.captured": "Cobrado",
        "adhoc.released": "Libertado",
        "adhoc.provider": "Prestador",
        "adhoc.receipt": "Recibo",
        "adhoc.transaction": "Transação",
        "adhoc.any_state": "qualquer estado",
        "adhoc.filter": "Filtrar",
        "adhoc.stickers": "Autocolantes com código QR",
        "adhoc.stickers_intro": "Uma página para imprimir por Localização: o código de cada "
        "EVSE abre a sua página pública (preço, pagamento, carregamento).",
    },
}


class AdhocWebProvider:
    name = "adhoc"
    title: ClassVar[dict[str, str]] = {"pt": "Pagamentos", "en": "Payments"}
    templates = TEMPLATES

    def __init__(self, service: AdhocService) -> None:
        self.service = service
        self.messages = MESSAGES
        self.nav = [NavEntry("/adhoc/payments", {"pt": "Pagamentos", "en": "Payments"}, True)]

    @property
    def ui(self) -> WebUI:
        return self.service.port.web

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/adhoc/payments", self.payments_page, access="admin"),
            WebRoute("GET", "/adhoc/receipts/{number}", self.receipt_page, access="admin"),
            WebRoute("GET", "/adhoc/receipts/{number}/pdf", self.receipt_pdf, access="admin"),
            WebRoute("GET", "/adhoc/stickers/{location_id}", self.stickers_page, access="admin"),
        ]

    async def payments_page(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        state = q.get("state", "")
        state = state if state in STATES else ""
        try:
            page = max(1, min(10_000, int(q.get("page", "1"))))
        except ValueError:
            page = 1
        rows, total = await self.service.store.payments(
            state=state or None, station_id=None, limit=PER_PAGE, offset=(page - 1) * PER_PAGE
        )
        locations = await self._locations()
        return self.ui.render(
            request,
            "adhoc/payments.html",
            {
                "title": self.ui.t("adhoc.title"),
                "items": [payment_json(r) for r in rows],
                "total": total,
                "states": STATES,
                "state": state,
                "page": page,
                "pages": max(1, -(-total // PER_PAGE)),
                "locations": locations,
            },
        )

    async def _locations(self) -> list[dict[str, str]]:
        seen: dict[str, str] = {}
        for s in await self.service.port.defined_stations():
            loc = (s.definition or {}).get("location") or {}
            if loc.get("id"):
                seen[loc["id"]] = loc.get("name") or loc["id"]
        return [{"id": k, "name": v} for k, v in sorted(seen.items())]

    async def _receipt(self, request: web.Request) -> dict[str, Any] | None:
        text = request.match_info["number"]
        if not text.isdigit() or len(text) > 12:
            return None
        return await self.service.store.receipt(int(text))

    async def receipt_page(self, request: web.Request) -> web.StreamResponse:
        r = await self._receipt(request)
        if r is None:
            return self.ui.error(request, 404, "error.not_found")
        resp = web.Response(
            text=render_page(to_receipt(r["body"])), content_type="text/html", charset="utf-8"
        )
        resp.headers["Content-Security-Policy"] = STANDALONE_CSP
        return resp

    async def receipt_pdf(self, request: web.Request) -> web.StreamResponse:
        r = await self._receipt(request)
        if r is None:
            return self.ui.error(request, 404, "error.not_found")
        return web.Response(
            body=render_pdf(to_receipt(r["body"])),
            content_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{r["body"]["number"]}.pdf"'},
        )

    async def stickers_page(self, request: web.Request) -> web.StreamResponse:
        location_id = request.match_info["location_id"]
        stickers: list[Sticker] = []
        name = address = ""
        for s in await self.service.port.defined_stations():
            loc = (s.definition or {}).get("location") or {}
            if loc.get("id") != location_id:
                continue
            name = loc.get("name") or location_id
            address = ", ".join(
                x for x in (loc.get("address"), loc.get("postal_code"), loc.get("city")) if x
            )
            for evse in s.evses:
                if evse.get("removed_at"):
                    continue
                offer = await self.service.pricing.ad_hoc_offer(s.id, int(evse["connector_id"]))
                if offer is None:
                    continue
                view = offer_view(offer)
                stickers.append(
                    Sticker(
                        evse_id=offer.evse_id,
                        url=f"{self.service.public_url}/charge/{offer.evse_uid}",
                        connector=view["connector"],
                        power_kw=view["power_kw"],
                    )
                )
        if not name:
            return self.ui.error(request, 404, "error.not_found")
        lang = "en" if self.ui.language(request) == "en" else "pt"
        html = sticker_sheet(name, address, stickers, lang, self.service.settings.operator_name)
        resp = web.Response(text=html, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = STANDALONE_CSP
        return resp
