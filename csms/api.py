"""Operator REST API under ``/api/v1`` (JSON, HTTP Basic with the admin credentials).

Errors always have the shape ``{"status": "error", "error": CODE, "message": TEXT}`` and, for
invalid bodies (422), ``"fields": [{"field": "location.coordinates.latitude", "message":
...}]``. Lists answer ``{"items": [...], "total": N, "limit": L, "offset": O}``.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from aiohttp import web

from . import api_schemas as S
from .api_common import json_body, page_response, paging, refusal
from .commands import CommandError, CommandPort, ConnectionRegistry
from .exports import ExportError, parse_filter, sessions_response
from .handlers import Services
from .http import (
    INT64_MAX,
    ApiError,
    error,
    errors_middleware,
    json_response,
)
from .openapi import (
    BOOL,
    EXPORT_NOTE,
    EXPORT_QUERY,
    INT,
    NO_CONTENT,
    PAGING,
    STR,
    TIME,
    Param,
    array,
    fails,
    file_answer,
    obj,
    ok,
    operation,
    page_of,
)
from .stuck import manual_close_view
from .timeparse import from_db, parse_api_time, to_ocpp
from .usecases import (
    Refused,
    check_station_id,
    define_station,
    put_id_tag,
    retire_station,
    security_profile_raise,
)

log = structlog.get_logger("csms.api")

# the error shape and its middleware are csms.http's (the app is built there), named here too
__all__ = ["Api", "ApiError", "error", "errors_middleware"]

# the meter values shown with one transaction (a page of them; see ?limit= and ?offset=)
DEFAULT_METER_VALUES = 1000


def _iso(db_text: str | None) -> str | None:
    value = from_db(db_text)
    return to_ocpp(value) if value else None


def _transaction_id(request: web.Request) -> int:
    try:
        tx_id = int(request.match_info["transaction_id"])
    except ValueError:
        raise ApiError(404, "not_found", "a transaction id is an integer") from None
    if not 1 <= tx_id <= INT64_MAX:
        raise ApiError(404, "not_found", f"no transaction {tx_id}")
    return tx_id


class Api:
    def __init__(
        self, services: Services, registry: ConnectionRegistry, commands: CommandPort
    ) -> None:
        self.s = services
        self.registry = registry
        self.commands = commands

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/stations", self.list_stations),
            web.get(f"{p}/stations/{{station_id}}", self.get_station),
            web.put(f"{p}/stations/{{station_id}}", self.put_station),
            web.post(f"{p}/stations/{{station_id}}/retire", self.retire),
            web.post(f"{p}/stations/{{station_id}}/evses/{{evse}}/retire", self.retire),
            web.post(f"{p}/stations/{{station_id}}/security-profile", self.raise_profile),
            web.delete(f"{p}/stations/{{station_id}}/security-profile", self.cancel_profile),
            web.post(f"{p}/stations/{{station_id}}/commands/{{action}}", self.send_command),
            web.get(f"{p}/unknown-stations", self.unknown_stations),
            web.get(f"{p}/id-tags", self.list_id_tags),
            web.get(f"{p}/id-tags/{{id_tag}}", self.get_id_tag),
            web.put(f"{p}/id-tags/{{id_tag}}", self.put_id_tag),
            web.delete(f"{p}/id-tags/{{id_tag}}", self.delete_id_tag),
            web.get(f"{p}/transactions", self.list_transactions),
            web.get(f"{p}/transactions/{{transaction_id}}", self.get_transaction),
            web.get(f"{p}/transactions/{{transaction_id}}/meter-values", self.meter_values),
            web.get(f"{p}/commands", self.list_commands),
            web.get(f"{p}/anomalies", self.list_anomalies),
            web.get(f"{p}/exports/sessions.csv", self.export_sessions),
        ]

    # ------------------------------------------------------------------ stations

    async def _station_view(
        self, row: dict[str, Any], connectors: list[dict[str, Any]], with_snapshot: bool
    ) -> dict[str, Any]:
        definition = row["definition"] or {}
        view: dict[str, Any] = {
            "id": row["id"],
            "defined": bool(row["defined"]),
            "location": definition.get("location"),
            "evses": definition.get("evses", []),
            "boot_status": row["boot_status"],
            "has_password": bool(row["password_hash"]),
            "security_profile": row["security_profile"] or 1,
            "pending_security_profile": row["pending_security_profile"],
            "connected": self.registry.is_connected(row["id"]),
            "last_seen": _iso(row["last_seen_at"]),
            "connectors": [
                {
                    "connector_id": c["connector_id"],
                    "status": c["status"],
                    "error_code": c["error_code"],
                    "info": c["info"],
                    "vendor_error_code": c["vendor_error_code"],
                    "timestamp": _iso(c["timestamp"]),
                    "timestamp_original": c["timestamp_raw"],
                    "received_at": _iso(c["received_at"]),
                }
                for c in connectors
            ],
            "boot": {
                "vendor": row["vendor"],
                "model": row["model"],
                "serial_number": row["serial_number"],
                "firmware_version": row["firmware_version"],
                "first_boot_at": _iso(row["first_boot_at"]),
                "last_boot_at": _iso(row["last_boot_at"]),
                "notification": row["boot_info"],
            },
            "configuration": {
                "status": row["config_status"],
                "reasons": row["config_reasons"],
                "checked_at": _iso(row["config_checked_at"]),
            },
            "retired": row["retired_at"] is not None,
            "retired_at": _iso(row["retired_at"]),
            "retired_reason": row["retired_reason"],
            "diagnostics_status": row["diagnostics_status"],
            "firmware_status": row["firmware_status"],
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }
        if with_snapshot:
            view["configuration"]["snapshot"] = row["config_snapshot"]
        return view

    @operation(
        "List stations",
        tag="stations",
        query=PAGING,
        responses={200: ok("a page of stations", page_of(S.STATION))},
    )
    async def list_stations(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.s.store.stations.page(limit, offset)
        statuses = await self.s.store.status.of_stations([r["id"] for r in rows])
        items = [await self._station_view(r, statuses[r["id"]], False) for r in rows]
        return page_response(items, total, limit, offset)

    @operation(
        "One station, with its configuration snapshot",
        tag="stations",
        responses={200: ok("the station", S.STATION)},
    )
    async def get_station(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station_id"]
        row = await self.s.store.stations.get(station_id)
        if row is None:
            raise ApiError(404, "not_found", f"no station {station_id!r}")
        statuses = await self.s.store.status.of_stations([station_id])
        return json_response(await self._station_view(row, statuses[station_id], True))

    @operation(
        "Create or replace a station and its Location",
        tag="stations",
        body=S.STATION_BODY,
        responses={
            200: ok("replaced", S.STATION),
            201: ok("created", S.STATION),
            409: fails("a Location id or EVSE uid belongs to another station"),
        },
    )
    async def put_station(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station_id"]
        try:
            check_station_id(station_id)
            created = await define_station(self.s, station_id, await json_body(request))
        except Refused as e:
            raise refusal(e) from None
        row = await self.s.store.stations.get(station_id)
        assert row is not None
        statuses = await self.s.store.status.of_stations([station_id])
        view = await self._station_view(row, statuses[station_id], True)
        return json_response(view, status=201 if created else 200)

    async def _view(self, station_id: str, status: int = 200) -> web.Response:
        row = await self.s.store.stations.get(station_id)
        if row is None:
            raise ApiError(404, "not_found", f"no station {station_id!r}")
        statuses = await self.s.store.status.of_stations([station_id])
        return json_response(
            await self._station_view(row, statuses[station_id], True), status=status
        )

    @operation(
        "Retire a station (or, under /evses/{evse}, one EVSE)",
        tag="stations",
        description="Its history stays; a retired station is refused at the handshake and its "
        "EVSEs are REMOVED in OCPI.",
        body=S.RETIRE_BODY,
        body_required=False,
        responses={
            200: ok(
                "retired",
                obj(
                    {
                        "station_id": STR,
                        "removed_connector_ids": array(INT),
                        "station_retired": BOOL,
                        "station": S.STATION,
                    }
                ),
            ),
            409: fails("a transaction is open on it, or it is already retired"),
        },
    )
    async def retire(self, request: web.Request) -> web.Response:
        """Retire a station, or (``.../evses/{uid or connector id}/retire``) one EVSE.
        Body (optional): ``{"reason": "...", "force": false}``."""
        station_id = request.match_info["station_id"]
        body = await json_body(request) if request.can_read_body else {}
        if not isinstance(body, dict) or set(body) - {"reason", "force"}:
            raise ApiError(422, "invalid_body", 'the body is {"reason": TEXT, "force": BOOL}')
        reason, force = body.get("reason"), body.get("force", False)
        if not (reason is None or (isinstance(reason, str) and len(reason) <= 200)):
            raise ApiError(
                422,
                "invalid_body",
                "reason is a text of at most 200 characters",
                fields=[{"field": "reason", "message": "a text of at most 200 characters"}],
            )
        if not isinstance(force, bool):
            raise ApiError(
                422,
                "invalid_body",
                "force is true or false",
                fields=[{"field": "force", "message": "true or false"}],
            )
        try:
            done = await retire_station(
                self.s,
                station_id,
                evse=request.match_info.get("evse"),
                reason=reason,
                force=force,
            )
        except Refused as e:
            raise refusal(e) from None
        row = await self.s.store.stations.get(station_id)
        assert row is not None
        statuses = await self.s.store.status.of_stations([station_id])
        view = await self._station_view(row, statuses[station_id], True)
        return json_response({**done, "station": view})

    @operation(
        "Raise a connected station's security profile (2 or 3)",
        tag="stations",
        body=S.PROFILE_BODY,
        responses={
            202: ok("the station accepted; committed at its first connection", S.STATION),
            409: fails("offline, refused, or the station lacks what the profile needs"),
        },
    )
    async def raise_profile(self, request: web.Request) -> web.Response:
        """Raise a station's security profile: ChangeConfiguration SecurityProfile, then
        both profiles are accepted until it connects at the new one (csms.server)."""
        station_id = request.match_info["station_id"]
        body = await json_body(request)
        profile = body.get("profile") if isinstance(body, dict) else None
        if not isinstance(profile, int) or isinstance(profile, bool) or profile not in (2, 3):
            raise ApiError(
                422,
                "invalid_body",
                'the body is {"profile": 2} or {"profile": 3}',
                fields=[{"field": "profile", "message": "2 or 3 (a raise)"}],
            )
        try:
            row = await security_profile_raise(self.s, self.commands, station_id, profile)
        except Refused as e:
            raise refusal(e) from None
        statuses = await self.s.store.status.of_stations([station_id])
        return json_response(await self._station_view(row, statuses[station_id], True), status=202)

    @operation(
        "Cancel a pending security profile raise",
        tag="stations",
        responses={200: ok("the station", S.STATION)},
    )
    async def cancel_profile(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station_id"]
        if not await self.s.store.stations.set_pending_security_profile(station_id, None):
            raise ApiError(404, "not_found", f"no station {station_id!r}")
        log.info("pending security profile cancelled", station_id=station_id)
        return await self._view(station_id)

    @operation(
        "Ids refused because they are not defined",
        tag="stations",
        query=PAGING,
        responses={
            200: ok(
                "a page of them; forgotten counts what the cap dropped",
                page_of(S.UNKNOWN_STATION, forgotten=obj({"ids": INT, "attempts": INT})),
            )
        },
    )
    async def unknown_stations(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.s.store.unknown_stations.page(limit, offset)
        items = [
            {
                "charge_point_id": r["charge_point_id"],
                "first_seen_at": _iso(r["first_seen_at"]),
                "last_seen_at": _iso(r["last_seen_at"]),
                "attempts": r["attempts"],
                "last_remote_address": r["last_remote_address"],
            }
            for r in rows
        ]
        unknown = self.s.store.unknown_stations
        # ids forgotten to keep the list bounded (ocpp.max_unknown_stations), since start
        forgotten = {"ids": unknown.dropped_ids, "attempts": unknown.dropped_attempts}
        return page_response(items, total, limit, offset, forgotten=forgotten)

    @operation(
        "Send an OCPP 1.6 request to a station",
        tag="commands",
        description="The body is the request's payload in camelCase, as on the wire.",
        query=(Param("timeout", {"type": "number", "exclusiveMinimum": 0}, "seconds"),),
        body=obj(),
        body_required=False,
        responses={
            200: ok("the station's answer", S.COMMAND_ANSWER),
            409: fails("the station is not connected"),
            502: fails("the station answered with a CallError (call_error)"),
            504: fails("no answer in time"),
        },
    )
    async def send_command(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station_id"]
        action = request.match_info["action"]
        if await self.s.store.stations.auth(station_id) is None:
            raise ApiError(404, "not_found", f"no station {station_id!r}")
        payload = await json_body(request) if request.can_read_body else {}
        if not isinstance(payload, dict):
            raise ApiError(422, "invalid_payload", "the body must be a JSON object")
        timeout = None
        if "timeout" in request.query:
            highest = self.s.settings.api.max_command_timeout
            try:
                timeout = float(request.query["timeout"])
            except ValueError:
                raise ApiError(400, "invalid_query", "timeout must be a number") from None
            if not (math.isfinite(timeout) and 0 < timeout <= highest):
                raise ApiError(
                    400,
                    "invalid_query",
                    f"timeout must be a number of seconds above 0 and at most {highest:g}",
                )
        try:
            prepare = self.s.command_preparers.get(action)
            if prepare is not None:  # (csms.security: PEM checks, GetLog's upload URL)
                payload = await prepare(station_id, payload)
            response = await self.commands.send(station_id, action, payload, timeout=timeout)
        except CommandError as e:
            extra = {}
            if hasattr(e, "error"):
                err = e.error
                extra["call_error"] = {
                    "code": err.code,
                    "description": err.description,
                    "details": err.details,
                }
            raise ApiError(e.http_status, e.code, str(e), **extra) from None
        return json_response({"status": "ok", "response": response})

    @operation(
        "Every request sent to stations, with its outcome",
        tag="commands",
        query=(*PAGING, Param("station", description="one station's only")),
        responses={200: ok("a page of them, newest first", page_of(S.COMMAND))},
    )
    async def list_commands(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.s.store.commands.page(request.query.get("station"), limit, offset)
        for r in rows:
            r["sent_at"] = _iso(r["sent_at"])
            r["finished_at"] = _iso(r["finished_at"])
        return page_response(rows, total, limit, offset)

    @operation(
        "What could not be attached where it belongs",
        tag="stations",
        query=(*PAGING, Param("station", description="one station's only")),
        responses={200: ok("a page of them, oldest first", page_of(S.ANOMALY))},
    )
    async def list_anomalies(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.s.store.anomalies.page(request.query.get("station"), limit, offset)
        for r in rows:
            r["received_at"] = _iso(r["received_at"])
        return page_response(rows, total, limit, offset)

    # ------------------------------------------------------------------ id tags

    @staticmethod
    def _tag_view(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "id_tag": row["id_tag"],
            "status": row["status"],
            "expiry_date": _iso(row["expiry_date"]),
            "parent_id_tag": row["parent_id_tag"],
            "created_at": _iso(row["created_at"]),
            "updated_at": _iso(row["updated_at"]),
        }

    @operation(
        "Create or replace an id tag",
        tag="id tags",
        body=S.ID_TAG_BODY,
        responses={200: ok("replaced", S.ID_TAG), 201: ok("created", S.ID_TAG)},
    )
    async def put_id_tag(self, request: web.Request) -> web.Response:
        id_tag = request.match_info["id_tag"]
        try:
            created = await put_id_tag(self.s.store, id_tag, await json_body(request))
        except Refused as e:
            raise refusal(e) from None
        row = await self.s.store.id_tags.get(id_tag)
        assert row is not None
        return json_response(self._tag_view(row), status=201 if created else 200)

    @operation("One id tag", tag="id tags", responses={200: ok("the id tag", S.ID_TAG)})
    async def get_id_tag(self, request: web.Request) -> web.Response:
        row = await self.s.store.id_tags.get(request.match_info["id_tag"])
        if row is None:
            raise ApiError(404, "not_found", "no such id tag")
        return json_response(self._tag_view(row))

    @operation("Delete an id tag", tag="id tags", responses={204: NO_CONTENT})
    async def delete_id_tag(self, request: web.Request) -> web.Response:
        if not await self.s.store.id_tags.delete(request.match_info["id_tag"]):
            raise ApiError(404, "not_found", "no such id tag")
        return web.Response(status=204)

    @operation(
        "List id tags",
        tag="id tags",
        query=PAGING,
        responses={200: ok("a page of id tags", page_of(S.ID_TAG))},
    )
    async def list_id_tags(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        rows, total = await self.s.store.id_tags.page(limit, offset)
        return page_response([self._tag_view(r) for r in rows], total, limit, offset)

    # ------------------------------------------------------------------ transactions

    @staticmethod
    def _tx_view(row: dict[str, Any]) -> dict[str, Any]:
        stop = row["meter_stop"]
        return {
            "id": row["id"],
            "station_id": row["station_id"],
            "connector_id": row["connector_id"],
            "id_tag": row["id_tag"],
            "id_tag_status": row["id_tag_status"],
            "reservation_id": row["reservation_id"],
            "active": row["stop_received_at"] is None,
            "meter_start_wh": row["meter_start"],
            "meter_stop_wh": stop,
            "energy_wh": (stop - row["meter_start"]) if stop is not None else None,
            "start_time": _iso(row["start_time"]),
            "start_time_original": row["start_time_raw"],
            "stop_time": _iso(row["stop_time"]),
            "stop_time_original": row["stop_time_raw"],
            "stop_reason": row["stop_reason"],
            "stop_id_tag": row["stop_id_tag"],
            "flags": row["flags"],
            "tag_owner": row["tag_owner"],
            "start_received_at": _iso(row["start_received_at"]),
            "stop_received_at": _iso(row["stop_received_at"]),
            "updated_at": _iso(row["updated_at"]),
            # closed by an admin (csms.stuck): who, when, why, the evidence; else null
            "manual_close": manual_close_view(row),
        }

    @operation(
        "List transactions",
        tag="transactions",
        query=(
            *PAGING,
            Param("station", description="one station's only"),
            Param("active", {"type": "string", "enum": ["true", "false", "1", "0"]}),
            Param("since", TIME, "started at or after this time (ISO 8601)"),
        ),
        responses={200: ok("a page of transactions, newest first", page_of(S.TRANSACTION))},
    )
    async def list_transactions(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        q = request.query
        active = None
        if "active" in q:
            if q["active"].lower() not in ("true", "false", "1", "0"):
                raise ApiError(400, "invalid_query", "active must be true or false")
            active = q["active"].lower() in ("true", "1")
        since = None
        if "since" in q:
            try:
                since = parse_api_time(q["since"])
            except ValueError as e:
                raise ApiError(400, "invalid_query", f"since: {e}") from None
        rows, total = await self.s.store.transactions.page(
            q.get("station"), active, since, limit, offset
        )
        return page_response([self._tx_view(r) for r in rows], total, limit, offset)

    @staticmethod
    def _meter_view(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "timestamp": _iso(m["timestamp"]),
            "timestamp_original": m["timestamp_raw"],
            "source": m["source"],
            "measurand": m["measurand"],
            "phase": m["phase"],
            "unit": m["unit"],
            "context": m["context"],
            "location": m["location"],
            "format": m["format"],
            "value": m["value_raw"],
            "normalised_value": m["value"],
            "normalised_unit": m["norm_unit"],
        }

    @operation(
        "One transaction with a page of its meter values",
        tag="transactions",
        path={"transaction_id": {"type": "integer", "minimum": 1}},
        query=PAGING,
        responses={200: ok("the transaction", S.TRANSACTION_WITH_METER)},
    )
    async def get_transaction(self, request: web.Request) -> web.Response:
        """One transaction with a page of its meter values (``?limit=``, default 1000, and
        ``?offset=``): ``meter_values_total`` says how many there are in all."""
        tx_id = _transaction_id(request)
        limit, offset = paging(request, DEFAULT_METER_VALUES)
        row = await self.s.store.transactions.get(tx_id, count_meter_values=True)
        if row is None:
            raise ApiError(404, "not_found", f"no transaction {tx_id}")
        view = self._tx_view(row)
        rows = await self.s.store.transactions.meter_values_of(tx_id, limit, offset)
        view["meter_values"] = [self._meter_view(m) for m in rows]
        view["meter_values_total"] = row["meter_values_count"]
        view["meter_values_limit"] = limit
        view["meter_values_offset"] = offset
        return json_response(view)

    @operation(
        "A transaction's meter values, in time order",
        tag="transactions",
        path={"transaction_id": {"type": "integer", "minimum": 1}},
        query=PAGING,
        responses={200: ok("a page of meter values", page_of(S.METER_VALUE))},
    )
    async def meter_values(self, request: web.Request) -> web.Response:
        """A transaction's meter values, a page at a time, in time order."""
        tx_id = _transaction_id(request)
        limit, offset = paging(request)
        row = await self.s.store.transactions.get(tx_id, count_meter_values=True)
        if row is None:
            raise ApiError(404, "not_found", f"no transaction {tx_id}")
        rows = await self.s.store.transactions.meter_values_of(tx_id, limit, offset)
        return page_response(
            [self._meter_view(m) for m in rows], row["meter_values_count"], limit, offset
        )

    # ------------------------------------------------------------------ exports

    @operation(
        "Sessions as CSV, streamed",
        tag="exports",
        description=EXPORT_NOTE,
        query=EXPORT_QUERY,
        responses={
            200: file_answer("the CSV file", "text/csv"),
            422: fails("a filter is missing or invalid (fields names it)"),
        },
    )
    async def export_sessions(self, request: web.Request) -> web.StreamResponse:
        """The transactions started in ``[from, to)`` as CSV, streamed (csms.exports)."""
        try:
            f = parse_filter(request.query, self.s.settings.web.time_zone)
            return await sessions_response(request, self.s.store, f)
        except ExportError as e:
            raise export_error(e) from None


def export_error(e: ExportError) -> ApiError:
    """An export's refusal as the API's error (422s name the field)."""
    if e.status == 422 and e.field:
        fields = [{"field": e.field, "message": e.message}]
        return ApiError(e.status, e.code, e.message, fields=fields)
    return ApiError(e.status, e.code, e.message)
