"""The pages of the web interface: login, dashboard, stations, station, sessions, id tags.

Each page has a GET handler; live parts of pages are also served as JSON
(``/live/...``: ``{"html": {element id: markup}}``) that ``static/app.js`` polls and swaps
in. Handlers that change something (POST) are reached only by admins with the session's
CSRF token: :class:`csms.web.ui.WebBase` checks both before calling them.
"""

from __future__ import annotations

import json
import math
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import web

from ..commands import CommandError
from ..exports import FORMATS, MAX_DAYS, ExportError, parse_filter, sessions_response
from ..traffic import judge
from ..usecases import (
    Refused,
    check_station_id,
    define_station,
    put_id_tag,
    retire_station,
    security_profile_raise,
)
from . import fmt
from .auth import LANG_COOKIE, LOGIN_COOKIE, SESSION_COOKIE, same_token
from .chart_pages import ChartPages
from .commands import BY_ACTION, COMMANDS, FormError, payload_from_form
from .i18n import LANGUAGES
from .queries import SESSION_STATES, STATION_SORTS, STATION_STATES, SessionFilter
from .ui import WebBase, WebRoute, current_language, localized, query_string

log = structlog.get_logger("csms.web")

TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
DEFINITION_EXAMPLE: dict[str, Any] = {
    "boot_status": "Accepted",
    "location": {
        "id": "LSB-00001",
        "name": "",
        "address": "",
        "city": "Lisboa",
        "postal_code": "",
        "country": "PRT",
        "coordinates": {"latitude": "38.716670", "longitude": "-9.141670"},
        "time_zone": "Europe/Lisbon",
        "parking_type": "ON_STREET",
        "mobie_voltage_level": "BTN",
    },
    "evses": [
        {
            "connector_id": 1,
            "uid": "LSB-00001-01",
            "evse_id": "PT*MOB*E00001*1",
            "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
            "connectors": [
                {
                    "id": "1",
                    "standard": "IEC_62196_T2",
                    "format": "SOCKET",
                    "power_type": "AC_3_PHASE",
                    "max_voltage": 230,
                    "max_amperage": 32,
                    "max_electric_power": 22000,
                    "tariff_ids": [],
                }
            ],
        }
    ],
}


def safe_next(target: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _page_number(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        return 1


def _page(number: int, size: int, total: int) -> dict[str, int]:
    return {"number": number, "pages": max(1, math.ceil(total / size)), "total": total}


class Pages:
    def __init__(self, ui: WebBase) -> None:
        self.ui = ui
        self.system = ui.system
        self.q = ui.queries
        self.size = ui.settings.page_size
        self.charts = ChartPages(ui)  # session page, status timeline, fleet availability

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/login", self.login_form, access="public"),
            WebRoute("POST", "/login", self.login, access="public"),
            WebRoute("POST", "/logout", self.logout),
            WebRoute("GET", "/lang/{code}", self.set_language, access="public"),
            WebRoute("GET", "/", self.dashboard),
            WebRoute("GET", "/live/dashboard", self.live_dashboard, json=True),
            WebRoute("GET", "/stations", self.stations),
            WebRoute("GET", "/live/stations", self.live_stations, json=True),
            WebRoute("GET", "/new-station", self.new_station_form, access="admin"),
            WebRoute("POST", "/new-station", self.create_station, access="admin"),
            WebRoute("GET", "/stations/{station_id}", self.station),
            WebRoute("GET", "/live/stations/{station_id}", self.live_station, json=True),
            WebRoute("GET", "/stations/{station_id}/edit", self.edit_form, access="admin"),
            WebRoute("POST", "/stations/{station_id}/edit", self.save_station, access="admin"),
            WebRoute(
                "POST",
                "/stations/{station_id}/commands/{action}",
                self.send_command,
                access="admin",
            ),
            WebRoute(
                "POST",
                "/stations/{station_id}/security-profile",
                self.security_profile,
                access="admin",
            ),
            WebRoute("POST", "/stations/{station_id}/retire", self.retire, access="admin"),
            WebRoute("GET", "/sessions", self.sessions),
            WebRoute("GET", "/live/sessions", self.live_sessions, json=True),
            *self.charts.routes(),
            WebRoute("GET", "/id-tags", self.id_tags),
            WebRoute("GET", "/exports", self.exports),
            WebRoute("GET", "/exports/sessions.csv", self.export_sessions),
            WebRoute("POST", "/id-tags", self.save_id_tag, access="admin"),
        ]

    # ------------------------------------------------------------------ login

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self.ui.session_of(request) is not None:
            return see_other(safe_next(request.query.get("next")))
        return self._login_page(request, "", "")

    def _login_page(
        self,
        request: web.Request,
        error: str,
        username: str,
        status: int = 200,
        next_path: str | None = None,
    ) -> web.Response:
        token = request.cookies.get(LOGIN_COOKIE)
        fresh = not token or len(token) > 100
        if fresh:
            token = secrets.token_urlsafe(24)
        response = self.ui.render(
            request,
            "login.html",
            {
                "title": self.ui.t("login.title"),
                "login_csrf": token,
                "next": safe_next(next_path or request.query.get("next")),
                "error": error,
                "username": username,
            },
            status=status,
        )
        if fresh:
            response.set_cookie(LOGIN_COOKIE, token, **self.ui.auth.cookie_options(request))
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not same_token(_text(form, "csrf"), request.cookies.get(LOGIN_COOKIE)):
            return self.ui.error(request, 403, "error.csrf")
        name, password = _text(form, "username").strip(), _text(form, "password")
        next_path = _text(form, "next")
        auth = self.ui.auth
        address = auth.proxies.client_address(request)
        outcome = await auth.login(name, password, address)
        if outcome.busy:
            log.warning("web login refused: too many password checks at once", remote=address)
            response = self._login_page(request, self.ui.t("login.busy"), name, 503, next_path)
            response.headers["Retry-After"] = "1"
            return response
        if outcome.locked_until is not None:
            minutes = max(1, math.ceil((outcome.locked_until - self.ui.now()).total_seconds() / 60))
            log.warning("web login refused: locked out", user=name, remote=address)
            return self._login_page(
                request, self.ui.t("login.locked", minutes=minutes), name, 429, next_path
            )
        if not outcome.ok or outcome.user is None or outcome.role is None:
            log.warning("web login failed", user=name, remote=address)
            return self._login_page(request, self.ui.t("login.failed"), name, 401, next_path)
        value, _ = await auth.create_session(outcome.user, outcome.role, address)
        log.info("web login", user=outcome.user, role=outcome.role, remote=address)
        response = see_other(safe_next(next_path))
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self.ui.settings.session_hours * 3600),
            **auth.cookie_options(request),
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self.ui.session_of(request)
        if session is not None:
            await self.ui.auth.end_session(session.id)
            log.info("web logout", user=session.user)
        response = see_other("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def set_language(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        response = see_other(safe_next(request.query.get("next")))
        if code in LANGUAGES:
            options = self.ui.auth.cookie_options(request)
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, **options)
        return response

    # ------------------------------------------------------------------ dashboard

    async def _dashboard(self, request: web.Request) -> dict[str, Any]:
        system = self.system
        connected = [c.station_id for c in system.registry.all()]
        tz = self.ui.settings.time_zone
        now = self.ui.now()
        counts = await self.q.station_counts(connected)
        status_counts, unreported = await self.q.connector_status_counts()
        active = await self.q.active_sessions()
        energy = await self.q.energy_since(fmt.local_day_start(now, tz))
        lang = current_language()
        return {
            "counts": counts,
            "status_counts": status_counts,
            "unreported": unreported,
            "active_sessions": active,
            "energy_today": fmt.kwh(energy, lang),
            "today_zone": fmt.zone_label(tz, lang, now),
            "today_tz": tz,
            "now": now,
            "fleet": await self.charts.fleet(),
            "ext": await self.ui.provider_data("dashboard", request),
        }

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        data = await self._dashboard(request)
        data["title"] = self.ui.t("dash.title")
        return self.ui.render(request, "dashboard.html", data)

    async def live_dashboard(self, request: web.Request) -> web.StreamResponse:
        data = await self._dashboard(request)
        html = self.ui.render_text(request, "_dashboard_live.html", data)
        return web.json_response({"html": {"live-dashboard": html}})

    # ------------------------------------------------------------------ stations

    async def _stations(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        search = q.get("q", "").strip()[:100]
        state = q.get("state", "all")
        state = state if state in STATION_STATES else "all"
        sort = q.get("sort", "id")
        sort = sort if sort in STATION_SORTS else "id"
        direction = "desc" if q.get("dir") == "desc" else "asc"
        number = _page_number(request)
        registry = self.system.registry
        connected = [c.station_id for c in registry.all()]
        rows, total = await self.q.stations(
            search,
            state,
            sort,
            direction == "desc",
            connected,
            self.size,
            (number - 1) * self.size,
        )
        ids = [r["id"] for r in rows]
        statuses = await self.system.store.status.of_stations(ids)
        traffic = self.system.traffic
        for r in rows:
            r["connectors"] = [c for c in statuses[r["id"]] if c["connector_id"] > 0]
            if r["retired_at"] is not None:
                r["state"] = "retired"
            elif registry.is_connected(r["id"]):
                r["state"] = "connected"
            else:
                r["state"] = "offline" if r["last_seen_at"] else "never"
            snapshot = [
                {"key": "HeartbeatInterval", "value": r["cfg_heartbeat"]},
                {"key": "MeterValueSampleInterval", "value": r["cfg_meter"]},
            ]
            r["verdicts"] = judge(
                [s for s in snapshot if s["value"] is not None], traffic.measured(r["id"])
            )
        filters = [("q", search), ("state", state if state != "all" else "")]
        return {
            "title": self.ui.t("stations.title"),
            "stations": rows,
            "q": search,
            "state": state,
            "states": STATION_STATES,
            "sort": sort,
            "dir": direction,
            "page": _page(number, self.size, total),
            "sort_query": query_string(filters),
            "pager_query": query_string([*filters, ("sort", sort), ("dir", direction)]),
            "live_query": query_string(
                [*filters, ("sort", sort), ("dir", direction), ("page", str(number))]
            ),
            "ext": await self.ui.provider_data("stations", request, ids),
        }

    async def stations(self, request: web.Request) -> web.StreamResponse:
        return self.ui.render(request, "stations.html", await self._stations(request))

    async def live_stations(self, request: web.Request) -> web.StreamResponse:
        data = await self._stations(request)
        html = self.ui.render_text(request, "_stations_rows.html", data)
        pager = self.ui.render_text(request, "_pager.html", data)
        return web.json_response({"html": {"stations-rows": html, "stations-pager": pager}})

    async def _station_live(self, request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
        sid = row["id"]
        definition = row["definition"] or {}
        tz = (definition.get("location") or {}).get("time_zone") or self.ui.settings.time_zone
        connectors = (await self.system.store.status.of_stations([sid]))[sid]
        registry = self.system.registry
        state = (
            "connected"
            if registry.is_connected(sid)
            else ("offline" if row["last_seen_at"] else "never")
        )
        traffic = self.system.traffic
        return {
            "tz": tz,
            "state": state,
            "connected": state == "connected",
            "last_seen": row["last_seen_at"],
            "connectors": connectors,
            "frames": traffic.frames(sid),
            "verdicts": judge(row["config_snapshot"], traffic.measured(sid)),
        }

    async def _station_row(self, request: web.Request) -> dict[str, Any] | None:
        return await self.system.store.stations.get(request.match_info["station_id"])

    async def station(self, request: web.Request) -> web.StreamResponse:
        row = await self._station_row(request)
        if row is None:
            return self.ui.error(
                request, 404, "error.no_station", station=request.match_info["station_id"]
            )
        sid = row["id"]
        data = await self._station_live(request, row)
        definition = row["definition"] or {}
        session = self.ui.session_of(request)
        data.update(
            {
                "title": f"{self.ui.t('station.title')} {sid}",
                "station": row,
                "has_password": bool(row.get("password_hash")),
                "location": definition.get("location"),
                "evses": definition.get("evses", []),
                "zone_name": f"{data['tz']} ({fmt.zone_label(data['tz'], current_language())})",
                "snapshot": row["config_snapshot"] or [],
                "sessions": await self.q.station_sessions(sid, 10),
                "commands": COMMANDS,
                "recent_commands": (
                    await self.q.station_commands(sid, 10) if session and session.is_admin else []
                ),
                "flash": self.ui.pop_flash(session),
                "timeline": await self.charts.station_timeline(
                    request, row, data["tz"], data["connected"]
                ),
                "ext": await self.ui.provider_data("station", request, sid),
            }
        )
        return self.ui.render(request, "station.html", data)

    async def live_station(self, request: web.Request) -> web.StreamResponse:
        row = await self._station_row(request)
        if row is None:
            return web.json_response({"error": "no such station"}, status=404)
        data = await self._station_live(request, row)
        html = self.ui.render_text(request, "_station_live.html", data)
        return web.json_response({"html": {"station-live": html}})

    async def send_command(self, request: web.Request) -> web.StreamResponse:
        sid, action = request.match_info["station_id"], request.match_info["action"]
        if await self.system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        if action not in BY_ACTION:
            return self.ui.error(request, 404, "error.unknown_command", action=action)
        session = self.ui.session_of(request)
        assert session is not None
        flash: dict[str, Any] = {"action": action, "ok": False, "response": None}
        try:
            payload = payload_from_form(action, self.ui.form(request))
            answer = await self.system.commands.send(sid, action, payload, origin="web")
        except FormError as e:
            flash["error"] = str(e)
        except CommandError as e:
            flash["error"] = str(e)
            err = getattr(e, "error", None)
            if err is not None:
                flash["response"] = json.dumps(
                    {"code": err.code, "description": err.description, "details": err.details},
                    indent=2,
                )
        else:
            flash.update(ok=True, response=json.dumps(answer, indent=2, ensure_ascii=False))
        log.info(
            "web command",
            user=session.user,
            station_id=sid,
            action=action,
            ok=flash["ok"],
            error=flash.get("error"),
        )
        self.ui.flash(session, flash)
        return see_other(f"/stations/{_quote(sid)}#command-result")

    async def security_profile(self, request: web.Request) -> web.StreamResponse:
        """Raise the station's security profile (as POST /api/v1/stations/{id}/
        security-profile does), or cancel a pending raise."""
        sid = request.match_info["station_id"]
        if await self.system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        session = self.ui.session_of(request)
        assert session is not None
        choice = _text(self.ui.form(request), "profile").strip()
        flash: dict[str, Any] = {"action": "SecurityProfile", "ok": False, "response": None}
        if choice == "cancel":
            await self.system.store.stations.set_pending_security_profile(sid, None)
            flash["ok"] = True
            log.info("pending security profile cancelled", user=session.user, station_id=sid)
        elif choice in ("2", "3"):
            try:
                await security_profile_raise(
                    self.system.services,
                    self.system.commands,
                    sid,
                    int(choice),
                    user=session.user,
                )
                flash["ok"] = True
            except Refused as e:
                flash["error"] = e.message
        else:
            flash["error"] = "2, 3 or cancel"
        self.ui.flash(session, flash)
        return see_other(f"/stations/{_quote(sid)}#command-result")

    async def retire(self, request: web.Request) -> web.StreamResponse:
        """Retire the station or one of its EVSEs (as POST /api/v1/stations/{id}/retire
        does), once the admin typed the station's id to confirm."""
        sid = request.match_info["station_id"]
        if await self.system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        session = self.ui.session_of(request)
        assert session is not None
        form = self.ui.form(request)
        what = _text(form, "what").strip()[:255]
        flash: dict[str, Any] = {"action": self.ui.t("station.retire"), "ok": False}
        flash["response"] = None
        if _text(form, "confirm").strip() != sid:
            flash["error"] = self.ui.t("station.retire_mismatch")
        else:
            try:
                await retire_station(
                    self.system.services,
                    sid,
                    evse=what or None,
                    reason=_text(form, "reason")[:200] or None,
                    user=session.user,
                )
                flash["ok"] = True
                flash["response"] = self.ui.t(
                    "station.retire_done", what=what or self.ui.t("station.whole")
                )
            except Refused as e:
                flash["error"] = e.message
        self.ui.flash(session, flash)
        return see_other(f"/stations/{_quote(sid)}#command-result")

    # ------------------------------------------------------------------ station definitions

    def _edit_page(
        self,
        request: web.Request,
        station_id: str,
        definition: str,
        creating: bool,
        errors: list[dict[str, str]] | None = None,
        status: int = 200,
    ) -> web.Response:
        return self.ui.render(
            request,
            "station_edit.html",
            {
                "title": self.ui.t("edit.new_title" if creating else "edit.title"),
                "station_id": station_id,
                "definition": definition,
                "creating": creating,
                "errors": errors or [],
                "action": "/new-station" if creating else f"/stations/{_quote(station_id)}/edit",
            },
            status=status,
        )

    async def edit_form(self, request: web.Request) -> web.StreamResponse:
        row = await self._station_row(request)
        if row is None:
            return self.ui.error(
                request, 404, "error.no_station", station=request.match_info["station_id"]
            )
        body = {
            "boot_status": row["boot_status"],
            "security_profile": row["security_profile"] or 1,
            **(row["definition"] or {}),
        }
        if not row["definition"]:
            body = {**DEFINITION_EXAMPLE, "boot_status": row["boot_status"]}
        text = json.dumps(body, indent=2, ensure_ascii=False)
        return self._edit_page(request, row["id"], text, creating=False)

    async def new_station_form(self, request: web.Request) -> web.StreamResponse:
        text = json.dumps(DEFINITION_EXAMPLE, indent=2, ensure_ascii=False)
        return self._edit_page(request, "", text, creating=True)

    async def save_station(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["station_id"]
        if await self.system.store.stations.auth(sid) is None:
            return self.ui.error(request, 404, "error.no_station", station=sid)
        return await self._save(request, sid, creating=False)

    async def create_station(self, request: web.Request) -> web.StreamResponse:
        sid = _text(self.ui.form(request), "station_id").strip()
        return await self._save(request, sid, creating=True)

    async def _save(self, request: web.Request, sid: str, creating: bool) -> web.StreamResponse:
        """Validate and store a definition as PUT /api/v1/stations/{id} does (one use case)."""
        text = _text(self.ui.form(request), "definition")
        session = self.ui.session_of(request)
        try:
            check_station_id(sid)
            try:
                body = json.loads(text)
            except ValueError as e:
                message = self.ui.t("edit.bad_json", error=str(e))
                error = [{"field": "(json)", "message": message}]
                raise Refused(422, "invalid_json", message, error) from None
            await define_station(
                self.system.services, sid, body, new=creating, user=session and session.user
            )
        except Refused as e:
            return self._edit_page(request, sid, text, creating, e.fields, status=e.status)
        return see_other(f"/stations/{_quote(sid)}")

    # ------------------------------------------------------------------ sessions

    async def _sessions(self, request: web.Request) -> dict[str, Any]:
        q = request.query
        tz = self.ui.settings.time_zone
        station = q.get("station", "").strip()[:255]
        state = q.get("state", "all")
        state = state if state in SESSION_STATES else "all"
        date_from, date_to = q.get("from", "").strip(), q.get("to", "").strip()
        error = ""
        since = until = None
        try:
            since = fmt.parse_local_date(date_from, tz)
        except ValueError:
            error, date_from = self.ui.t("sessions.bad_date", value=date_from), ""
        try:
            until = fmt.parse_local_date(date_to, tz, end=True)
        except ValueError:
            error, date_to = self.ui.t("sessions.bad_date", value=date_to), ""
        number = _page_number(request)
        rows, total = await self.q.sessions(
            SessionFilter(station or None, since, until, state),
            self.size,
            (number - 1) * self.size,
        )
        now = self.ui.now()
        for r in rows:
            start = fmt.as_datetime(r["start_time"])
            end = fmt.as_datetime(r["stop_time"]) if not r["active"] else now
            r["duration"] = (end - start).total_seconds() if start and end else None
        filters = [
            ("station", station),
            ("from", date_from),
            ("to", date_to),
            ("state", state if state != "all" else ""),
        ]
        return {
            "title": self.ui.t("sessions.title"),
            "sessions": rows,
            "station": station,
            "date_from": date_from,
            "date_to": date_to,
            "state": state,
            "states": SESSION_STATES,
            "error": error,
            "filter_zone": tz,
            "page": _page(number, self.size, total),
            "pager_query": query_string(filters),
            "live_query": query_string([*filters, ("page", str(number))]),
            "ext": await self.ui.provider_data("sessions", request, [r["id"] for r in rows]),
        }

    async def sessions(self, request: web.Request) -> web.StreamResponse:
        return self.ui.render(request, "sessions.html", await self._sessions(request))

    async def live_sessions(self, request: web.Request) -> web.StreamResponse:
        data = await self._sessions(request)
        html = self.ui.render_text(request, "_sessions_rows.html", data)
        pager = self.ui.render_text(request, "_pager.html", data)
        return web.json_response({"html": {"sessions-rows": html, "sessions-pager": pager}})

    # ------------------------------------------------------------------ exports

    def export_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.StreamResponse:
        """The exports page: the filters (kept from the query) and a button per export
        (csms's sessions, then each provider's ``exports``)."""
        q = request.query
        tz = self.ui.settings.time_zone
        today = self.ui.now().astimezone(fmt.zone(tz)).date()
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        lang = current_language()
        buttons = [{"path": "/exports/sessions.csv", "label": self.ui.t("exports.sessions")}]
        for p in self.ui.providers:
            entries = getattr(p, "exports", None)
            for path, label in (entries() if callable(entries) else entries) or []:
                buttons.append({"path": path, "label": localized(label, lang)})
        fmt_choice = q.get("format", "csv")
        return self.ui.render(
            request,
            "exports.html",
            {
                "title": self.ui.t("exports.title"),
                "error": error,
                "zone": tz,
                "date_from": q.get("from", first.isoformat())[:40],
                "date_to": q.get("to", following.isoformat())[:40],
                "station": q.get("station", "")[:255],
                "token": q.get("token", "")[:64],
                "format": fmt_choice if fmt_choice in FORMATS else "csv",
                "formats": FORMATS,
                "buttons": buttons,
                "max_days": MAX_DAYS,
            },
            status=status,
        )

    async def exports(self, request: web.Request) -> web.StreamResponse:
        return self.export_page(request)

    async def export_sessions(self, request: web.Request) -> web.StreamResponse:
        try:
            f = parse_filter(request.query, self.ui.settings.time_zone)
            return await sessions_response(request, self.system.store, f)
        except ExportError as e:
            return self.export_page(request, e.message, e.status)

    # ------------------------------------------------------------------ id tags

    async def _tags_page(
        self,
        request: web.Request,
        form: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
        status: int = 200,
    ) -> web.Response:
        q = request.query
        prefix = q.get("q", "").strip()[:20]
        number = _page_number(request)
        tz = self.ui.settings.time_zone
        rows, total = await self.q.id_tags(prefix, self.size, (number - 1) * self.size)
        if form is None:
            form = {"id_tag": "", "status": "Accepted", "expiry_date": "", "parent_id_tag": ""}
            editing = q.get("edit")
            if editing:
                row = await self.system.store.id_tags.get(editing)
                if row is not None:
                    form = {
                        "id_tag": row["id_tag"],
                        "status": row["status"],
                        "expiry_date": fmt.local_input(row["expiry_date"], tz),
                        "parent_id_tag": row["parent_id_tag"] or "",
                    }
        return self.ui.render(
            request,
            "id_tags.html",
            {
                "title": self.ui.t("tags.title"),
                "tags": rows,
                "q": prefix,
                "tz": tz,
                "tz_label": tz,
                "form": form,
                "errors": errors or [],
                "tag_statuses": TAG_STATUSES,
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
                "page": _page(number, self.size, total),
                "pager_query": query_string([("q", prefix)]),
            },
            status=status,
        )

    async def id_tags(self, request: web.Request) -> web.StreamResponse:
        return await self._tags_page(request)

    async def save_id_tag(self, request: web.Request) -> web.StreamResponse:
        posted = self.ui.form(request)
        form = {
            k: _text(posted, k).strip()
            for k in ("id_tag", "status", "expiry_date", "parent_id_tag")
        }
        tag = form["id_tag"]
        tz = self.ui.settings.time_zone

        def local_time(text: str) -> datetime | None:
            try:
                return fmt.parse_local_datetime(text, tz)
            except ValueError:
                raise ValueError("not a date and time") from None

        body = {
            "status": form["status"],
            "expiry_date": form["expiry_date"] or None,
            "parent_id_tag": form["parent_id_tag"] or None,
        }
        session = self.ui.session_of(request)
        assert session is not None
        try:
            await put_id_tag(self.system.store, tag, body, local_time, user=session.user)
        except Refused as e:
            return await self._tags_page(request, form, e.fields, status=422)
        self.ui.flash(session, {"ok": True, "message": self.ui.t("tags.saved", tag=tag)})
        return see_other(f"/id-tags?q={_quote(tag)}")


def _text(form: Any, key: str) -> str:
    value = form.get(key, "") if form is not None else ""
    return value if isinstance(value, str) else ""


def _quote(text: str) -> str:
    return quote(text, safe="")
