"""The OCPI part of the operator API (same /api/v1 prefix, same admin credentials):

- ``GET /api/v1/ocpi/peers``: registered parties, their roles, what they were granted,
  version and endpoints;
- ``POST /api/v1/ocpi/token-a``: ``{"role": "HUB"|"EMSP", "parties": ["PT/ABC", ...]}``, a
  new token A granting that role for those parties, with what to send to MOBI.E;
- ``POST /api/v1/ocpi/register``: ``{"versions_url", "token", "role", "parties"}``,
  register with a peer, which gets that grant;
- ``GET /api/v1/ocpi/security-events``: claims refused, uids another party holds;
- ``PUT/GET/DELETE /api/v1/tariffs/{id}``, ``GET /api/v1/tariffs``: our OCPI tariffs,
  which connectors reference through their ``tariff_ids``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from csms.ports import ApiError, ExportError, api_contract, api_paging, parse_export_filter, to_iso

from .client import OcpiCallFailed
from .credentials import new_token
from .exports import CdrExport
from .pricing import TariffDef
from .store import Grant
from .transport import OcpiError

if TYPE_CHECKING:
    from .bridge import Bridge

log = structlog.get_logger("ocpi.admin")

C = api_contract
operation = C.operation
GRANT_BODY = C.obj(
    {"role": {"type": "string", "enum": ["HUB", "EMSP", "SCSP"]}, "parties": C.array(C.STR)},
    optional=("role", "parties"),
)
TARIFF_BODY = C.obj(
    {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"}, "elements": C.array(C.obj())},
    description="see the README's Tariffs section for every field",
)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {e}") from None


def _iso(value: Any) -> str | None:
    from csms.ports import to_iso

    return to_iso(value)


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": "unknown field" if err["type"] == "extra_forbidden" else err["msg"],
        }
        for err in exc.errors()
    ]


def _grant(body: Any) -> Grant:
    """The ``role`` and ``parties`` of a body: what the operator grants a peer."""
    if not isinstance(body, dict):
        body = {}
    try:
        return Grant.make(body.get("role"), body.get("parties"))
    except ValueError as e:
        field, _, message = str(e).partition(": ")
        raise ApiError(
            422,
            "invalid_body",
            "a token A grants a role (HUB, EMSP or SCSP) for parties, e.g. "
            '{"role": "HUB", "parties": ["PT/MOB"]}',
            fields=[{"field": field if message else "(body)", "message": message or str(e)}],
        ) from None


class OcpiAdminApi:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/ocpi/peers", self.peers),
            web.get(f"{p}/ocpi/pushes", self.pushes),
            web.get(f"{p}/ocpi/notices", self.bridge.notices.list_handler),
            web.get(f"{p}/ocpi/commands", self.commands),
            web.get(f"{p}/ocpi/compliance", self.compliance),
            web.post(f"{p}/ocpi/token-a", self.token_a),
            web.post(f"{p}/ocpi/register", self.register),
            web.get(f"{p}/ocpi/security-events", self.security_events),
            web.get(f"{p}/tariffs", self.list_tariffs),
            web.get(f"{p}/tariffs/{{tariff_id}}", self.get_tariff),
            web.put(f"{p}/tariffs/{{tariff_id}}", self.put_tariff),
            web.delete(f"{p}/tariffs/{{tariff_id}}", self.delete_tariff),
            web.get(f"{p}/exports/cdrs.csv", self.export_cdrs),
        ]

    @operation(
        "CDRs as CSV, streamed",
        tag="exports",
        description=C.EXPORT_NOTE,
        query=C.EXPORT_QUERY,
        responses={
            200: C.file_answer("the CSV file", "text/csv"),
            422: C.fails("a filter is missing or invalid (fields names it)"),
        },
    )
    async def export_cdrs(self, request: web.Request) -> web.StreamResponse:
        """The CDRs of the sessions started in ``[from, to)`` as CSV, streamed
        (ocpi_bridge.exports)."""
        try:
            tz = self.bridge.csms.settings.web.time_zone
            f = parse_export_filter(request.query, tz)
            return await CdrExport(self.bridge).response(request, f)
        except ExportError as e:
            fields = [{"field": e.field, "message": e.message}] if e.field else None
            if e.status == 422 and fields:
                raise ApiError(e.status, e.code, e.message, fields=fields) from None
            raise ApiError(e.status, e.code, e.message) from None

    @operation(
        "OCPI peers: roles, what they were granted, endpoints",
        tag="ocpi",
        responses={200: C.ok("every peer", C.list_of(C.obj()))},
    )
    async def peers(self, request: web.Request) -> web.Response:
        peers = await self.bridge.store.peers()
        items = [
            {
                "id": p.id,
                "status": p.status,
                "initiated_by": p.initiated_by,
                "version": p.version,
                "versions_url": p.versions_url,
                "roles": [
                    {
                        "role": r["role"],
                        "country_code": r["country_code"],
                        "party_id": r["party_id"],
                        "name": r["business_details"]["name"],
                    }
                    for r in p.roles
                ],
                "granted": {
                    "role": p.grant_role,
                    "parties": sorted(f"{cc}/{pid}" for cc, pid in p.parties),
                    "source": p.grant_source,
                },
                "endpoints": p.endpoints,
            }
            for p in peers
        ]
        return web.json_response({"items": items, "total": len(items)})

    @operation(
        "What each peer has not acknowledged yet, and what is failing",
        tag="ocpi",
        responses={200: C.ok("pending pushes", C.list_of(C.obj(), failing=C.INT))},
    )
    async def pushes(self, request: web.Request) -> web.Response:
        """What each peer has not acknowledged yet, per object, and what is failing."""
        items = [
            {
                "peer_id": p.peer_id,
                "object": p.kind,
                "id": p.object_id,
                "pending_since": to_iso(p.dirty_since),
                "in_flight": p.in_flight,
                "attempts": p.attempts,
                "failing_since": to_iso(p.failing_since),
                "next_attempt": to_iso(p.next_attempt),
                "last_error": p.last_error,
            }
            for p in await self.bridge.delivery.pending()
        ]
        failing = sum(1 for i in items if i["failing_since"])
        return web.json_response({"items": items, "total": len(items), "failing": failing})

    @operation(
        "MOBI.E's push rules as measured, per station and session",
        tag="ocpi",
        query=(
            C.Param("since", description="ISO time (default: 24 hours before until)"),
            C.Param("until", description="ISO time (default: now)"),
        ),
        responses={
            200: C.ok(
                "the report",
                C.list_of(C.obj(), since=C.nullable(C.TIME), until=C.nullable(C.TIME)),
            )
        },
    )
    async def compliance(self, request: web.Request) -> web.Response:
        """MOBI.E's push rules as measured, per station and session, over ``since`` to
        ``until`` (ISO times; default: the last 24 hours)."""
        from csms.ports import parse_api_time

        now = self.bridge.clock.now()
        try:
            since = parse_api_time(request.query["since"]) if "since" in request.query else None
            until = parse_api_time(request.query["until"]) if "until" in request.query else None
        except ValueError as e:
            raise ApiError(400, "invalid_query", str(e)) from None
        until = until or now
        since = since or until - timedelta(hours=24)
        await self.bridge.delivery.flush_compliance()
        items = await self.bridge.compliance.report(since, until)
        return web.json_response(
            {"since": _iso(since), "until": _iso(until), "items": items, "total": len(items)}
        )

    @operation(
        "OCPI commands received, what we answered, what the station did",
        tag="ocpi",
        query=C.PAGING,
        responses={200: C.ok("a page of them", C.page_of(C.obj()))},
    )
    async def commands(self, request: web.Request) -> web.Response:
        """OCPI commands received, what we answered, what the station did, the result."""
        limit, offset = api_paging(request)
        items, total = await self.bridge.commands.list(limit, offset)
        return web.json_response(
            {"items": items, "total": total, "limit": limit, "offset": offset},
            headers={"X-Total-Count": str(total)},
        )

    @operation(
        "OCPI security events: claims refused, uids another party holds",
        tag="ocpi",
        responses={200: C.ok("the latest 100", C.list_of(C.obj()))},
    )
    async def security_events(self, request: web.Request) -> web.Response:
        rows = await self.bridge.store.security_events(100)
        items = [{k: r[k] for k in ("id", "at", "kind", "peer_id", "detail")} for r in rows]
        return web.json_response({"items": items, "total": len(items)})

    @operation(
        "Make a token A for a peer to register with, and grant it a role for parties",
        tag="ocpi",
        body=GRANT_BODY,
        body_required=False,
        responses={
            201: C.ok(
                "the token (shown once)",
                C.obj(
                    {
                        "token": C.STR,
                        "versions_url": C.STR,
                        "party_id": C.STR,
                        "country_code": C.STR,
                        "granted": C.obj(),
                    }
                ),
            )
        },
    )
    async def token_a(self, request: web.Request) -> web.Response:
        grant = _grant(await _body(request) if request.can_read_body else None)
        token = new_token()
        await self.bridge.store.add_token_a(token, grant.role, grant.party_texts())
        s = self.bridge.settings
        log.info("token A created", granted=grant.describe())
        return web.json_response(
            {
                "token": token,
                "versions_url": self.bridge.versions_url,
                "party_id": s.party_id,
                "country_code": s.country_code,
                "granted": {"role": grant.role, "parties": grant.party_texts()},
            },
            status=201,
        )

    @operation(
        "Register with a peer using its token A",
        tag="ocpi",
        body=C.obj(
            {
                "versions_url": {"type": "string", "format": "uri"},
                "token": {"type": "string", "minLength": 1},
                "role": {"type": "string", "enum": ["HUB", "EMSP", "SCSP"]},
                "parties": C.array(C.STR),
            },
            optional=("role", "parties"),
        ),
        responses={
            201: C.ok("registered", C.obj()),
            409: C.fails("a granted party is already another peer's"),
            502: C.fails("the peer refused or could not be reached"),
        },
    )
    async def register(self, request: web.Request) -> web.Response:
        body = await _body(request)
        url, token = (
            (body.get("versions_url"), body.get("token"))
            if isinstance(body, dict)
            else (None, None)
        )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(422, "invalid_body", "versions_url: an http(s) URL is required")
        if not isinstance(token, str) or not token:
            raise ApiError(422, "invalid_body", "token: the peer's token A is required")
        grant = _grant(body)
        try:
            peer = await self.bridge.credentials.register_with(url, token, grant)
        except OcpiError as e:
            raise ApiError(
                502, "registration_failed", f"OCPI {e.status_code}: {e.message}"
            ) from None
        except OcpiCallFailed as e:
            raise ApiError(502, "registration_failed", str(e)) from None
        except ValueError as e:  # a granted party is already another peer's
            raise ApiError(409, "conflict", str(e)) from None
        return web.json_response(
            {"status": "ok", "peer_id": peer.id, "version": peer.version, "roles": peer.roles},
            status=201,
        )

    # ------------------------------------------------------------------ tariffs

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.bridge.tariff_object(row)

    @operation(
        "Our OCPI tariffs",
        tag="tariffs",
        responses={200: C.ok("every tariff", C.list_of(C.obj()))},
    )
    async def list_tariffs(self, request: web.Request) -> web.Response:
        items = [self._view(t) for t in await self.bridge.store.tariffs()]
        return web.json_response({"items": items, "total": len(items)})

    @operation("One tariff", tag="tariffs", responses={200: C.ok("the tariff", C.obj())})
    async def get_tariff(self, request: web.Request) -> web.Response:
        rows = await self.bridge.store.tariffs([request.match_info["tariff_id"]])
        if not rows:
            raise ApiError(404, "not_found", "no such tariff")
        return web.json_response(self._view(rows[0]))

    @operation(
        "Define a tariff (OCPI 2.2.1 Tariff without country_code, party_id, last_updated)",
        tag="tariffs",
        body=TARIFF_BODY,
        responses={200: C.ok("replaced", C.obj()), 201: C.ok("created", C.obj())},
    )
    async def put_tariff(self, request: web.Request) -> web.Response:
        tariff_id = request.match_info["tariff_id"]
        body = await _body(request)
        if isinstance(body, dict):
            body = {"id": tariff_id, **body}
        try:
            tariff = TariffDef.model_validate(body)
        except ValidationError as e:
            raise ApiError(
                422, "invalid_body", "the tariff is invalid", fields=_fields(e)
            ) from None
        if tariff.id.upper() != tariff_id.upper():
            raise ApiError(
                422,
                "invalid_body",
                "the tariff is invalid",
                fields=[{"field": "id", "message": "must equal the id in the URL"}],
            )
        created = await self.bridge.store.put_tariff(
            tariff_id, tariff.model_dump(mode="json", exclude_none=True)
        )
        rows = await self.bridge.store.tariffs([tariff_id])
        log.info("tariff defined", tariff_id=tariff_id, created=created)
        return web.json_response(self._view(rows[0]), status=201 if created else 200)

    @operation("Delete a tariff", tag="tariffs", responses={204: C.NO_CONTENT})
    async def delete_tariff(self, request: web.Request) -> web.Response:
        if not await self.bridge.store.delete_tariff(request.match_info["tariff_id"]):
            raise ApiError(404, "not_found", "no such tariff")
        return web.Response(status=204)
