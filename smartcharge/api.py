"""The operator's API of smart charging (``/api/v1/smart/...``, the API's password):
charging profiles per station, composite schedules, and sites with their limits."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from csms.ports import ApiError, api_contract, dumps, parse_api_time

from .service import Refused, SmartService

C = api_contract
operation = C.operation

ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
PERIOD = C.obj({"start_period": C.INT, "limit": C.NUM}, optional=("number_phases",))
PROFILE_BODY = C.obj(
    {
        "id": C.INT,
        "stack_level": C.INT,
        "purpose": {
            "type": "string",
            "enum": ["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"],
        },
        "kind": {"type": "string", "enum": ["Absolute", "Recurring", "Relative"]},
        "schedule": C.obj(
            {
                "charging_rate_unit": {"type": "string", "enum": ["A", "W"]},
                "periods": C.array(PERIOD),
            },
        ),
    },
    description="an OCPP 1.6 ChargingProfile in snake case (recurrency, valid_from, valid_to, "
    "transaction_id, schedule.duration, schedule.start_schedule, "
    "schedule.min_charging_rate are optional)",
)
PROFILE_ROW = C.obj(
    {
        "station_id": C.STR,
        "profile_id": C.INT,
        "connector_id": C.INT,
        "purpose": C.STR,
        "stack_level": C.INT,
        "origin": C.STR,
        "state": C.STR,
        "last_error": C.nullable(C.STR),
        "body": C.obj(),
    }
)
SITE = C.obj(
    {
        "id": C.STR,
        "name": C.STR,
        "rules": C.obj(),
        "limit_a": C.NUM,
        "limit_kw": C.NUM,
        "members": C.array(C.obj({"station_id": C.STR, "priority": C.INT})),
        "allocations": C.array(C.obj()),
    }
)
SITE_BODY = C.obj(
    {
        "name": C.STR,
        "rules": C.obj(
            {"limit": C.NUM, "unit": {"type": "string", "enum": ["A", "kW"]}},
            description="limit and unit (A per phase or kW); phases (1 or 3), voltage, "
            "min_per_evse (A), windows [{start 'HH:MM', end, limit}], time_zone",
        ),
        "members": C.array(C.obj({"station_id": C.STR}, optional=("priority",))),
    },
    optional=("name", "members"),
)
STATION_PATH = {"station_id": {"type": "string", "pattern": ID_RE.pattern}}
SITE_PATH = {"site_id": {"type": "string", "pattern": ID_RE.pattern}}
_DAY = timedelta(days=1)


def _station(request: web.Request) -> str:
    sid = request.match_info["station_id"]
    if not ID_RE.fullmatch(sid):
        raise ApiError(404, "not_found", "no such station")
    return sid


def _site(request: web.Request) -> str:
    sid = request.match_info["site_id"]
    if not ID_RE.fullmatch(sid):
        raise ApiError(404, "not_found", "no such site")
    return sid


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_body", "the body is not JSON") from None


def _refused(e: Refused) -> ApiError:
    extra = {"details": e.details} if e.details is not None else {}
    return ApiError(e.status, e.code, e.message, **extra)


def _profile_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "station_id": row["station_id"],
        "profile_id": int(row["profile_id"]),
        "connector_id": int(row["connector_id"]),
        "purpose": row["purpose"],
        "stack_level": int(row["stack_level"]),
        "transaction_id": row["transaction_id"],
        "origin": row["origin"],
        "state": row["state"],
        "last_error": row["last_error"],
        "sent_at": row["sent_at"],
        "updated_at": row["updated_at"],
        "body": row["body"],
    }


class SmartApi:
    def __init__(self, service: SmartService) -> None:
        self.service = service

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1/smart"
        return [
            web.get(f"{p}/stations/{{station_id}}/profiles", self.profiles),
            web.post(f"{p}/stations/{{station_id}}/profiles", self.set_profile),
            web.delete(f"{p}/stations/{{station_id}}/profiles/{{profile_id}}", self.clear),
            web.get(f"{p}/stations/{{station_id}}/composite", self.composite),
            web.get(f"{p}/sites", self.sites),
            web.get(f"{p}/sites/{{site_id}}", self.site),
            web.put(f"{p}/sites/{{site_id}}", self.put_site),
            web.delete(f"{p}/sites/{{site_id}}", self.delete_site),
            web.put(f"{p}/sites/{{site_id}}/limit", self.put_limit),
            web.delete(f"{p}/sites/{{site_id}}/limit", self.delete_limit),
            web.get(f"{p}/sites/{{site_id}}/power", self.power),
        ]

    # ------------------------------------------------------------------ profiles

    @operation(
        "The charging profiles csms keeps for a station",
        tag="smart charging",
        description="what csms wants the station to hold (re-applied after a reboot or a "
        "reconnection) and what the station answered: pending, installed, rejected, failed",
        path=STATION_PATH,
        responses={
            200: C.ok("its profiles", C.list_of(PROFILE_ROW)),
            404: C.fails("no such station"),
        },
    )
    async def profiles(self, request: web.Request) -> web.Response:
        sid = _station(request)
        if await self.service.port.station(sid) is None:
            raise ApiError(404, "not_found", "no such station")
        rows = [_profile_json(r) for r in await self.service.store.profiles(sid)]
        return web.json_response({"items": rows, "total": len(rows)}, dumps=dumps)

    @operation(
        "Set a charging profile on a station (SetChargingProfile)",
        tag="smart charging",
        description="checked first against what the station supports (its "
        "ChargingScheduleAllowedChargingRateUnit, ChargeProfileMaxStackLevel, "
        "ChargingScheduleMaxPeriods, MaxChargingProfilesInstalled), then sent; a station "
        "not connected gets it when it connects. Ids above 799999 are csms's own.",
        path=STATION_PATH,
        body=C.obj({"connector_id": C.INT, "profile": PROFILE_BODY}, extra=False),
        responses={
            200: C.ok("kept, and what the station answered", PROFILE_ROW),
            404: C.fails("no such station"),
            409: C.fails("the station's site manages that stack level"),
            422: C.fails("not a valid profile, or one the station would reject"),
        },
    )
    async def set_profile(self, request: web.Request) -> web.Response:
        sid = _station(request)
        body = await _body(request)
        if not isinstance(body, dict) or set(body) != {"connector_id", "profile"}:
            raise ApiError(422, "invalid_body", 'the body is {"connector_id": n, "profile": {...}}')
        conn = body["connector_id"]
        if not isinstance(conn, int) or isinstance(conn, bool) or not 0 <= conn <= 100:
            raise ApiError(422, "invalid_body", "connector_id: 0 (the whole station) to 100")
        try:
            row = await self.service.set_profile(sid, conn, body["profile"])
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(_profile_json(row), dumps=dumps)

    @operation(
        "Clear one of the operator's charging profiles from a station (ClearChargingProfile)",
        tag="smart charging",
        path={**STATION_PATH, "profile_id": {"type": "integer"}},
        responses={
            200: C.ok("what the station answered", C.obj({"station": C.STR})),
            404: C.fails("no such profile"),
            409: C.fails("the profile is a site's, not the operator's"),
        },
    )
    async def clear(self, request: web.Request) -> web.Response:
        sid = _station(request)
        text = request.match_info["profile_id"]
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise ApiError(404, "not_found", "no such profile")
        try:
            out = await self.service.clear_profile(sid, int(text))
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(out)

    @operation(
        "The composite schedule: what csms expects and what the station says",
        tag="smart charging",
        description="csms's expectation from the profiles it keeps, next to the station's "
        "GetCompositeSchedule answer, and whether they agree",
        path=STATION_PATH,
        query=(
            C.Param("connector", {"type": "integer", "minimum": 0}, "the connector (0: station)"),
            C.Param("duration", {"type": "integer", "minimum": 1}, "seconds (default 86400)"),
            C.Param("unit", {"type": "string", "enum": ["A", "W"]}, "A (default) or W"),
        ),
        responses={
            200: C.ok("the two schedules", C.obj()),
            400: C.fails("a bad query parameter"),
            404: C.fails("no such station"),
        },
    )
    async def composite(self, request: web.Request) -> web.Response:
        sid = _station(request)
        q = request.query
        try:
            conn = int(q.get("connector", "0"))
            duration = int(q.get("duration", "86400"))
        except ValueError:
            raise ApiError(400, "invalid_query", "connector and duration are integers") from None
        unit = q.get("unit", "A")
        if not 0 <= conn <= 100 or not 1 <= duration <= 7 * 86400 or unit not in ("A", "W"):
            raise ApiError(
                400, "invalid_query", "connector 0..100, duration 1..604800 s, unit A or W"
            )
        try:
            out = await self.service.composite_schedule(sid, conn, duration, unit)
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(out, dumps=dumps)

    # ------------------------------------------------------------------ sites

    @operation(
        "Sites: stations behind one grid connection",
        tag="smart charging",
        responses={200: C.ok("every site", C.list_of(SITE))},
    )
    async def sites(self, request: web.Request) -> web.Response:
        items = []
        for s in await self.service.store.sites():
            view = await self.service.site_view(s["id"])
            if view is not None:
                items.append(view)
        return web.json_response({"items": items, "total": len(items)}, dumps=dumps)

    @operation(
        "One site: its limit now, its stations and each EVSE's share",
        tag="smart charging",
        path=SITE_PATH,
        responses={200: C.ok("the site", SITE), 404: C.fails("no such site")},
    )
    async def site(self, request: web.Request) -> web.Response:
        view = await self.service.site_view(_site(request))
        if view is None:
            raise ApiError(404, "not_found", "no such site")
        return web.json_response(view, dumps=dumps)

    @operation(
        "Create or replace a site",
        tag="smart charging",
        description="csms then shares the limit among the site's transactions and gives each "
        "station a safe TxDefaultProfile",
        path=SITE_PATH,
        body=SITE_BODY,
        responses={
            200: C.ok("replaced", SITE),
            201: C.ok("created", SITE),
            404: C.fails("a bad site id"),
            409: C.fails("a station is in another site"),
            422: C.fails("invalid rules or members"),
        },
    )
    async def put_site(self, request: web.Request) -> web.Response:
        site_id = _site(request)
        try:
            created, view = await self.service.put_site(site_id, await _body(request))
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(view, status=201 if created else 200, dumps=dumps)

    @operation(
        "Remove a site (its profiles come off its stations)",
        tag="smart charging",
        path=SITE_PATH,
        responses={204: C.NO_CONTENT, 404: C.fails("no such site")},
    )
    async def delete_site(self, request: web.Request) -> web.Response:
        try:
            await self.service.delete_site(_site(request))
        except Refused as e:
            raise _refused(e) from None
        return web.Response(status=204)

    @operation(
        "Set a site's dynamic limit (e.g. from a building's energy manager)",
        tag="smart charging",
        description="in the site's unit; the lowest of it, the base limit and the time-of-day "
        "window applies; until (optional) ends it",
        path=SITE_PATH,
        body=C.obj({"limit": C.NUM}, optional=("until",)),
        responses={
            200: C.ok("the site", SITE),
            404: C.fails("no such site"),
            422: C.fails("not a limit"),
        },
    )
    async def put_limit(self, request: web.Request) -> web.Response:
        site_id = _site(request)
        body = await _body(request)
        if not isinstance(body, dict) or not set(body) <= {"limit", "until"} or "limit" not in body:
            raise ApiError(422, "invalid_body", 'the body is {"limit": n, "until": time?}')
        raw = body["limit"]
        try:
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise InvalidOperation
            limit = Decimal(str(raw))
            if not limit.is_finite() or not 0 <= limit <= 100000:
                raise InvalidOperation
        except InvalidOperation:
            raise ApiError(422, "invalid_body", "limit: a number from 0 to 100000") from None
        until = None
        if body.get("until") is not None:
            try:
                until = parse_api_time(str(body["until"]))
            except ValueError as e:
                raise ApiError(422, "invalid_body", f"until: {e}") from None
        try:
            view = await self.service.set_dynamic_limit(site_id, limit, until)
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(view, dumps=dumps)

    @operation(
        "Remove a site's dynamic limit",
        tag="smart charging",
        path=SITE_PATH,
        responses={200: C.ok("the site", SITE), 404: C.fails("no such site")},
    )
    async def delete_limit(self, request: web.Request) -> web.Response:
        try:
            view = await self.service.set_dynamic_limit(_site(request), None, None)
        except Refused as e:
            raise _refused(e) from None
        return web.json_response(view, dumps=dumps)

    @operation(
        "A site's power per minute against its limit",
        tag="smart charging",
        path=SITE_PATH,
        query=(
            C.Param("from", C.TIME, "since (default: 24 h ago)"),
            C.Param("to", C.TIME, "until (default: now)"),
        ),
        responses={
            200: C.ok("minutes", C.obj({"items": C.array(C.obj())})),
            400: C.fails("a bad query parameter"),
            404: C.fails("no such site"),
        },
    )
    async def power(self, request: web.Request) -> web.Response:
        site_id = _site(request)
        if await self.service.store.site(site_id) is None:
            raise ApiError(404, "not_found", "no such site")
        now = self.service.clock.now()
        try:
            until = parse_api_time(request.query["to"]) if "to" in request.query else now
            since = (
                parse_api_time(request.query["from"]) if "from" in request.query else until - _DAY
            )
        except ValueError as e:
            raise ApiError(400, "invalid_query", str(e)) from None
        if since >= until or (until - since) > 31 * _DAY:
            raise ApiError(400, "invalid_query", "from before to, at most 31 days apart")
        rows = await self.service.store.power(site_id, since, until)
        items = [
            {
                "minute": r["minute"],
                "power_w": float(r["power_w"]),
                "limit_a": None if r["limit_a"] is None else float(r["limit_a"]),
                "evses": int(r["evses"]),
            }
            for r in rows
        ]
        return web.json_response({"items": items}, dumps=dumps)
