"""Reservations and stuck transactions in the web interface (issue 16, items 4 and 6), as a
provider: a panel on each station's page (its held and recent reservations; admins:
reserve a connector, cancel a reservation), the reservations list (``/reservations``),
the stuck transactions list with the manual close (``/transactions/stuck``, admins), and a
column in the sessions list that shows a manual close (who, when, why).

Every change is an admin's POST with the session's CSRF token (csms.web.ui's guard)."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import structlog
from aiohttp import web

from .repositories.reservations import STATES, ReservationQuery
from .reservations import HELD, ReservationService, parse_reserve, view
from .stuck import StuckService, manual_close_view, parse_close
from .timeparse import to_ocpp
from .usecases import Refused
from .web.ui import NavEntry, WebBase, WebRoute, query_string

log = structlog.get_logger("csms.reservations_web")

TEMPLATES = Path(__file__).parent / "reservations_templates"
PER_PAGE = 50
MAX_PAGE = 10_000

MESSAGES = {
    "en": {
        "res.title": "Reservations",
        "res.held": "Held reservations",
        "res.recent": "Recent reservations",
        "res.none": "No reservations.",
        "res.id": "Id",
        "res.connector": "Connector",
        "res.id_tag": "Id tag",
        "res.parent": "Parent id tag",
        "res.expiry": "Expires",
        "res.state": "State",
        "res.answer": "Station answer",
        "res.by": "Requested by",
        "res.transaction": "Transaction",
        "res.reserve": "Reserve",
        "res.minutes": "Minutes",
        "res.cancel": "Cancel",
        "res.any_state": "any state",
        "res.filter": "Filter",
        "res.station": "Station",
        "res.new": "Reserve a connector (ReserveNow)",
        "stuck.title": "Stuck transactions",
        "stuck.intro": "Open transactions whose station has since reported the connector "
        "Available or Preparing, rebooted, or sent no meter or transaction message for "
        "{hours} h. Closing one stores the last meter value, completes the OCPI session and "
        "sends its CDR; it is flagged as a manual close.",
        "stuck.none": "No stuck transactions.",
        "stuck.evidence": "Evidence",
        "stuck.started": "Started",
        "stuck.proposed": "Close with",
        "stuck.reason": "Reason",
        "stuck.close": "Close",
        "stuck.truncated": "Only the first open transactions were examined.",
    },
    "pt": {
        "res.title": "Reservas",
        "res.held": "Reservas ativas",
        "res.recent": "Reservas recentes",
        "res.none": "Sem reservas.",
        "res.id": "Id",
        "res.connector": "Conector",
        "res.id_tag": "Cartão",
        "res.parent": "Cartão pai",
        "res.expiry": "Expira",
        "res.state": "Estado",
        "res.answer": "Resposta do posto",
        "res.by": "Pedida por",
        "res.transaction": "Transação",
        "res.reserve": "Reservar",
        "res.minutes": "Minutos",
        "res.cancel": "Cancelar",
        "res.any_state": "qualquer estado",
        "res.filter": "Filtrar",
        "res.station": "Posto",
        "res.new": "Reservar um conector (ReserveNow)",
        "stuck.title": "Transações presas",
        "stuck.intro": "Transações abertas cujo posto já indicou o conector Available ou "
        "Preparing, reiniciou, ou não enviou valores de contador nem mensagens da transação "
        "há {hours} h. Fechar uma guarda o último valor do contador, conclui a sessão OCPI e "
        "envia o seu CDR; fica assinalada como fecho manual.",
        "stuck.none": "Sem transações presas.",
        "stuck.evidence": "Indício",
        "stuck.started": "Início",
        "stuck.proposed": "Fechar com",
        "stuck.reason": "Motivo",
        "stuck.close": "Fechar",
        "stuck.truncated": "Só as primeiras transações abertas foram examinadas.",
    },
}


def _text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _page(request: web.Request) -> int:
    try:
        return min(MAX_PAGE, max(1, int(request.query.get("page", "1"))))
    except ValueError:
        return 1


class HoldsWebProvider:
    """Registered on the web interface by the central system."""

    name = "holds"
    title: ClassVar[dict[str, str]] = {"pt": "Reservas", "en": "Reservations"}
    templates = TEMPLATES

    def __init__(self, ui: WebBase, reservations: ReservationService, stuck: StuckService):
        self.ui = ui
        self.reservations = reservations
        self.stuck_service = stuck
        self.messages = MESSAGES
        self.nav = [
            NavEntry("/reservations", {"pt": "Reservas", "en": "Reservations"}),
            NavEntry(
                "/transactions/stuck",
                {"pt": "Transações presas", "en": "Stuck transactions"},
                True,
            ),
        ]

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/reservations", self.list_page),
            WebRoute("POST", "/stations/{station_id}/reserve", self.reserve, access="admin"),
            WebRoute("POST", "/reservations/{reservation_id}/cancel", self.cancel, access="admin"),
            WebRoute("GET", "/transactions/stuck", self.stuck_page, access="admin"),
            WebRoute("POST", "/transactions/{transaction_id}/close", self.close, access="admin"),
        ]

    # ------------------------------------------------------------------ hooks

    async def station(self, request: web.Request, sid: str) -> dict[str, Any]:
        rows, _ = await self.reservations.repo.page(ReservationQuery(station_id=sid), 10, 0)
        now = self.reservations.clock.now()
        recent = [view(r, now) for r in rows]
        row = await self.ui.system.store.stations.get(sid)
        evses = ((row or {}).get("definition") or {}).get("evses") or []
        connectors = [int(e["connector_id"]) for e in evses if not e.get("removed_at")]
        return {
            "held": [r for r in recent if r["state"] in HELD],
            "recent": recent,
            "connectors": connectors or [1],
        }

    async def sessions(
        self, request: web.Request, transaction_ids: list[int]
    ) -> dict[int, dict[str, Any]]:
        rows = await self.ui.system.store.transactions.by_ids(transaction_ids[:500])
        out: dict[int, dict[str, Any]] = {}
        for r in rows:
            closed = manual_close_view(r)
            if closed is not None or r.get("reservation_id") is not None:
                out[int(r["id"])] = {
                    "manual_close": closed,
                    "reservation_id": r.get("reservation_id"),
                }
        return out

    # ------------------------------------------------------------------ pages

    async def list_page(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        state = q.get("state", "")
        state = state if state in STATES else ""
        station = q.get("station", "")[:100]
        page = _page(request)
        items, total = await self.reservations.page(
            ReservationQuery(station_id=station or None, state=state or None),
            PER_PAGE,
            (page - 1) * PER_PAGE,
        )
        return self.ui.render(
            request,
            "holds/reservations.html",
            {
                "title": self.ui.t("res.title"),
                "items": items,
                "total": total,
                "states": STATES,
                "state": state,
                "station_filter": station,
                "page": page,
                "pages": max(1, math.ceil(total / PER_PAGE)),
                "pager_query": query_string([("state", state), ("station", station)]),
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
            },
        )

    async def stuck_page(self, request: web.Request) -> web.StreamResponse:
        page = _page(request)
        items, total, truncated = await self.stuck_service.stuck(
            None, PER_PAGE, (page - 1) * PER_PAGE
        )
        return self.ui.render(
            request,
            "holds/stuck.html",
            {
                "title": self.ui.t("stuck.title"),
                "items": items,
                "total": total,
                "truncated": truncated,
                "hours": f"{self.stuck_service.silence.total_seconds() / 3600:g}",
                "page": page,
                "pages": max(1, math.ceil(total / PER_PAGE)),
                "pager_query": "",
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
            },
        )

    # ------------------------------------------------------------------ actions

    def _by(self, request: web.Request) -> str:
        session = self.ui.session_of(request)
        assert session is not None
        return f"web:{session.user}"

    async def reserve(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        if await self.ui.system.store.stations.get(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        form = self.ui.form(request)
        flash: dict[str, Any] = {"action": "ReserveNow", "ok": False, "response": None}
        now = self.reservations.clock.now()
        try:
            minutes = int(_text(form, "minutes") or "0")
            cid = int(_text(form, "connector_id") or "-1")
        except ValueError:
            minutes, cid = 0, -1
        body: dict[str, Any] = {
            "connector_id": cid,
            "id_tag": _text(form, "id_tag"),
            "expiry_date": to_ocpp(now + timedelta(minutes=max(0, min(minutes, 10**6)))),
        }
        if _text(form, "parent_id_tag"):
            body["parent_id_tag"] = _text(form, "parent_id_tag")
        try:
            req = parse_reserve(body, now)
            outcome = await self.reservations.reserve(sid, req, self._by(request))
        except Refused as e:
            flash["error"] = e.message
        else:
            flash["ok"] = outcome.answer == "Accepted"
            flash["response"] = json.dumps(outcome.reservation, indent=2, ensure_ascii=False)
            if not flash["ok"]:
                flash["error"] = f"the station answered {outcome.answer}"
        self.ui.flash(self.ui.session_of(request), flash)  # type: ignore[arg-type]
        raise web.HTTPSeeOther(f"/stations/{quote(sid, safe='')}#command-result")

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info["reservation_id"]
        if not (text.isascii() and text.isdigit() and len(text) < 19):
            return self.ui.error(request, 404, "error.not_found")
        found = await self.reservations.repo.get(int(text))
        if found is None:
            return self.ui.error(request, 404, "error.not_found")
        flash: dict[str, Any] = {"action": "CancelReservation", "ok": False, "response": None}
        try:
            outcome = await self.reservations.cancel(int(text), self._by(request))
        except Refused as e:
            flash["error"] = e.message
        else:
            flash["ok"] = outcome.answer == "Accepted"
            flash["response"] = json.dumps(outcome.reservation, indent=2, ensure_ascii=False)
            if not flash["ok"]:
                flash["error"] = f"the station answered {outcome.answer}"
        self.ui.flash(self.ui.session_of(request), flash)  # type: ignore[arg-type]
        back = _text(self.ui.form(request), "back")
        if back == "list":
            raise web.HTTPSeeOther("/reservations")
        raise web.HTTPSeeOther(f"/stations/{quote(found['station_id'], safe='')}#command-result")

    async def close(self, request: web.Request) -> web.StreamResponse:
        text = request.match_info["transaction_id"]
        if not (text.isascii() and text.isdigit() and len(text) < 19) or int(text) < 1:
            return self.ui.error(request, 404, "error.not_found")
        form = self.ui.form(request)
        flash: dict[str, Any] = {"action": f"Close {text}", "ok": False, "response": None}
        try:
            reason, force = parse_close(
                {"reason": _text(form, "reason"), "force": _text(form, "force") == "1"}
            )
            done = await self.stuck_service.close(int(text), reason, self._by(request), force=force)
        except Refused as e:
            flash["error"] = e.message
        else:
            flash["ok"] = True
            flash["response"] = json.dumps(done, indent=2, ensure_ascii=False)
        self.ui.flash(self.ui.session_of(request), flash)  # type: ignore[arg-type]
        raise web.HTTPSeeOther("/transactions/stuck")
