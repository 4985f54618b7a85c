"""The OCPI part of the operator API (same /api/v1 prefix, same admin credentials):

- ``GET /api/v1/ocpi/peers``: registered parties, their roles, what they were granted,
  version and endpoints;
- ``POST /api/v1/ocpi/token-a``: ``{"role": "HUB"|"EMSP", "parties": ["PT/ABC", ...]}``, a
  new token A granting that role for those parties, with what to send to MOBI.E;
- ``POST /api/v1/ocpi/register``: ``{"versions_url", "token", "role", "parties"}``,
  register with a peer, which gets that grant;
- ``GET/PATCH/DELETE /api/v1/ocpi/peers/{id}``, ``POST .../suspend``, ``POST .../resume``:
  one peer, its policy (ocpi_bridge.peers), its traffic and failures; suspend, resume,
  remove (its token stops working; we DELETE our credentials at the peer, best effort);
- ``GET /api/v1/ocpi/security-events``: claims refused, uids another party holds;
- ``PUT/GET/DELETE /api/v1/tariffs/{id}``, ``GET /api/v1/tariffs``: our OCPI tariffs,
  which connectors reference through their ``tariff_ids``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from csms.ports import (
    ApiError,
    ExportError,
    api_contract,
    api_paging,
    from_db,
    parse_export_filter,
    to_iso,
)

from .client import OcpiCallFailed
from .credentials import new_token
from .exports import CdrExport
from .peers import CALLABLE, MAX_HIDDEN, MAX_NAME, MAX_TARIFFS, PUSHED, VERSIONS, PeerPolicy
from .pricing import TariffDef
from .store import Grant, Peer
from .transport import OcpiError

if TYPE_CHECKING:
    from .bridge import Bridge

log = structlog.get_logger("ocpi.admin")

C = api_contract
operation = C.operation
_OCPI_ID = {"type": "string", "pattern": "^[A-Za-z0-9._\\-]{1,36}$"}
POLICY_BODY = C.obj(
    {
        "name": {"type": "string", "maxLength": MAX_NAME},
        "uses": C.array({"type": "string", "enum": list(CALLABLE)}),
        "receives": C.array({"type": "string", "enum": list(PUSHED)}),
        "mobie": C.BOOL,
        "realtime_auth": C.BOOL,
        "hidden": C.array(_OCPI_ID, max_items=MAX_HIDDEN),
        "tariffs": {
            "type": "object",
            "additionalProperties": _OCPI_ID,
            "maxProperties": MAX_TARIFFS,
        },
        "version": C.nullable({"type": "string", "enum": list(VERSIONS)}),
    },
    optional=(
        "name",
        "uses",
        "receives",
        "mobie",
        "realtime_auth",
        "hidden",
        "tariffs",
        "version",
    ),
    extra=False,
    description="what the operator decides about a peer (every field optional: the "
    "role's defaults, or what it has, for those not given); a module its role may not "
    "have is refused (422)",
)
GRANT_BODY = C.obj(
    {
        "role": {"type": "string", "enum": ["HUB", "EMSP", "SCSP"]},
        "parties": C.array(C.STR),
        "policy": POLICY_BODY,
    },
    optional=("role", "parties", "policy"),
)
PEER_PATH = {"peer_id": {"type": "integer", "minimum": 1}}
TRAFFIC_HOURS = 24
# a peer's own security events shown with it
PEER_EVENTS = 20
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


def _grant(body: Any, mobie_mode: bool) -> Grant:
    """The ``role``, ``parties`` and ``policy`` of a body: what the operator grants a peer."""
    if not isinstance(body, dict):
        body = {}
    try:
        return Grant.make(body.get("role"), body.get("parties"), body.get("policy"), mobie_mode)
    except ValueError as e:
        field, _, message = str(e).partition(": ")
        if message and field not in ("role", "parties"):
            field = f"policy.{field}"
        raise ApiError(
            422,
            "invalid_body",
            "a token A grants a role (HUB, EMSP or SCSP) for parties, e.g. "
            '{"role": "HUB", "parties": ["PT/MOB"]}, and optionally a policy',
            fields=[{"field": field if message else "(body)", "message": message or str(e)}],
        ) from None


def _invalid_policy(e: ValueError) -> ApiError:
    field, _, message = str(e).partition(": ")
    return ApiError(
        422,
        "invalid_body",
        "the policy is invalid",
        fields=[{"field": field if message else "(body)", "message": message or str(e)}],
    )


def peer_item(peer: Peer, traffic: dict[str, Any] | None = None) -> dict[str, Any]:
    """A peer as the API and the pages show it (never a token)."""
    return {
        "id": peer.id,
        "name": peer.name,
        "status": peer.status,
        "active": peer.active,
        "suspended_at": _when(peer.suspended_at),
        "initiated_by": peer.initiated_by,
        "version": peer.version,
        "versions_url": peer.versions_url,
        "roles": [
            {
                "role": r.get("role"),
                "country_code": r.get("country_code"),
                "party_id": r.get("party_id"),
                "name": (r.get("business_details") or {}).get("name"),
            }
            for r in peer.roles
        ],
        "granted": {
            "role": peer.grant_role,
            "parties": sorted(f"{cc}/{pid}" for cc, pid in peer.parties),
            "source": peer.grant_source,
        },
        "policy": peer.policy.view(),
        "endpoints": peer.endpoints,
        "traffic_24h": traffic if traffic is not None else _no_traffic(),
    }


def _when(value: Any) -> str | None:
    """A stored time (text or datetime, as the engine gives it) as the API writes it."""
    if value is None or isinstance(value, datetime):
        return _iso(value)
    return _iso(from_db(str(value)))


def _no_traffic() -> dict[str, Any]:
    return {
        "requests": {"ok": 0, "refused": 0, "failed": 0},
        "pushes": {"ok": 0, "failed": 0},
        "last_error": None,
    }


def peer_id_of(request: web.Request) -> int | None:
    """The ``{peer_id}`` of the path as a number; None when it is not one."""
    text = request.match_info.get("peer_id", "")
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


async def find_peer(bridge: Bridge, peer_id: int | None) -> Peer | None:
    if peer_id is None:
        return None
    return next((p for p in await bridge.store.peers() if p.id == peer_id), None)


async def peer_security_events(bridge: Bridge, peer_id: int, limit: int) -> list[dict[str, Any]]:
    return await bridge.csms.db.read(
        "SELECT id, at, kind, peer_id, detail FROM ocpi_security_events WHERE peer_id = ? "
        "ORDER BY id DESC LIMIT ?",
        (peer_id, limit),
    )


async def remove_peer(bridge: Bridge, peer: Peer) -> dict[str, Any]:
    """Remove a peer: its token stops working at once (unregistered here, every process
    told); then, as OCPI 2.2.1 section 7.2.4 has a party end a registration, we DELETE our
    credentials at its credentials endpoint (best effort, a short timeout: a peer that is
    gone must not stop the operator). Returns what happened at the peer."""
    await bridge.store.unregister_peer(peer.id)
    await bridge.peers_changed()
    url = peer.endpoint("credentials")
    notified, answer = False, "the peer has no credentials endpoint"
    if url and peer.token_out:
        try:
            reply = await bridge.client.request(
                "DELETE",
                url,
                peer.token_out,
                base64_token=peer.token_out_base64,
                timeout=min(5.0, bridge.settings.request_timeout),
            )
            notified, answer = reply.ok, reply.describe()
        except OcpiCallFailed as e:
            answer = str(e)[:200]
    log.info("peer removed by the operator", peer_id=peer.id, name=peer.name, at_peer=answer)
    return {"id": peer.id, "status": "unregistered", "peer_notified": notified, "answer": answer}


class OcpiAdminApi:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.get(f"{p}/ocpi/peers", self.peers),
            web.get(f"{p}/ocpi/peers/{{peer_id}}", self.peer),
            web.patch(f"{p}/ocpi/peers/{{peer_id}}", self.patch_peer),
            web.delete(f"{p}/ocpi/peers/{{peer_id}}", self.delete_peer),
            web.post(f"{p}/ocpi/peers/{{peer_id}}/suspend", self.suspend_peer),
            web.post(f"{p}/ocpi/peers/{{peer_id}}/resume", self.resume_peer),
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
        "OCPI peers: roles, what they were granted, their policy, last 24 hours' traffic",
        tag="ocpi",
        responses={200: C.ok("every peer", C.list_of(C.obj()))},
    )
    async def peers(self, request: web.Request) -> web.Response:
        peers = await self.bridge.store.peers()
        since = self.bridge.clock.now() - timedelta(hours=TRAFFIC_HOURS)
        traffic = await self.bridge.traffic.summary(since)
        backlog = await self._backlog()
        items = [{**peer_item(p, traffic.get(p.id)), **backlog(p.id)} for p in peers]
        return web.json_response({"items": items, "total": len(items)})

    async def _backlog(self) -> Any:
        """Per peer: pushes not acknowledged yet, and how many of them are failing now."""
        counts: dict[int, dict[str, int]] = {}
        for f in await self.bridge.delivery.pending():
            c = counts.setdefault(f.peer_id, {"pending_pushes": 0, "failing_pushes_now": 0})
            c["pending_pushes"] += 1
            c["failing_pushes_now"] += f.failing_since is not None
        return lambda peer_id: counts.get(peer_id, {"pending_pushes": 0, "failing_pushes_now": 0})

    async def _peer(self, request: web.Request) -> Peer:
        peer = await find_peer(self.bridge, peer_id_of(request))
        if peer is None:
            raise ApiError(404, "not_found", "no such peer")
        return peer

    async def _registered(self, request: web.Request) -> Peer:
        peer = await self._peer(request)
        if peer.status != "registered":
            raise ApiError(409, "conflict", "this peer is not registered (it was removed)")
        return peer

    @operation(
        "One OCPI peer: its grant, policy, traffic per hour, failing pushes, refusals",
        tag="ocpi",
        path=PEER_PATH,
        responses={200: C.ok("the peer", C.obj())},
    )
    async def peer(self, request: web.Request) -> web.Response:
        """One peer, with its traffic per hour over the last 24 hours, its failing pushes,
        its security events and (a hub) the parties it says it connects (hubclientinfo)."""
        peer = await self._peer(request)
        since = self.bridge.clock.now() - timedelta(hours=TRAFFIC_HOURS)
        traffic = self.bridge.traffic
        item = peer_item(peer, (await traffic.summary(since)).get(peer.id))
        item.update((await self._backlog())(peer.id))
        failures = await traffic.failures(peer.id, since)
        events = await peer_security_events(self.bridge, peer.id, PEER_EVENTS)
        clients = await self.bridge.store.client_info(hub_peer_id=peer.id, limit=1000)
        item.update(
            {
                "traffic_hourly": await traffic.hourly(peer.id, since),
                "failing_pushes": [
                    {**f, "last_error_at": _iso(f["last_error_at"])} for f in failures
                ],
                "security_events": [
                    {k: e[k] for k in ("id", "at", "kind", "detail")} for e in events
                ],
                "hub_client_info": [
                    {
                        k: c[k]
                        for k in (
                            "country_code",
                            "party_id",
                            "role",
                            "status",
                            "last_updated",
                            "received_at",
                        )
                    }
                    for c in clients
                ],
            }
        )
        return web.json_response(item)

    @operation(
        "Change what the operator decides about a peer (its policy)",
        tag="ocpi",
        path=PEER_PATH,
        body=POLICY_BODY,
        responses={200: C.ok("the peer as it is now", C.obj())},
    )
    async def patch_peer(self, request: web.Request) -> web.Response:
        """The fields given replace the peer's; the others stay. Applied at once, in every
        process (its next request, its next push)."""
        peer = await self._peer(request)
        body = await _body(request)
        if not isinstance(body, dict):
            raise ApiError(
                422,
                "invalid_body",
                "the policy is invalid",
                fields=[{"field": "(body)", "message": "an object is expected"}],
            )
        try:
            policy = PeerPolicy.make(peer.grant_role or "EMSP", body, base=peer.policy)
        except ValueError as e:
            raise _invalid_policy(e) from None
        if not await self.bridge.store.set_policy(peer.id, policy):
            raise ApiError(404, "not_found", "no such peer")
        await self.bridge.peers_changed()
        log.info("peer policy changed", peer_id=peer.id, fields=sorted(body))
        changed = await find_peer(self.bridge, peer.id)
        assert changed is not None
        return web.json_response(peer_item(changed))

    @operation(
        "Suspend a peer: refused (HTTP 403) and pushed nothing until resumed",
        tag="ocpi",
        path=PEER_PATH,
        responses={
            200: C.ok("the peer as it is now", C.obj()),
            409: C.fails("the peer is not registered"),
        },
    )
    async def suspend_peer(self, request: web.Request) -> web.Response:
        return await self._suspend(request, True)

    @operation(
        "Resume a suspended peer: what it missed is pushed",
        tag="ocpi",
        path=PEER_PATH,
        responses={
            200: C.ok("the peer as it is now", C.obj()),
            409: C.fails("the peer is not registered"),
        },
    )
    async def resume_peer(self, request: web.Request) -> web.Response:
        return await self._suspend(request, False)

    async def _suspend(self, request: web.Request, suspended: bool) -> web.Response:
        peer = await self._registered(request)
        if (peer.suspended_at is not None) != suspended:
            if not await self.bridge.store.set_suspended(peer.id, suspended):
                raise ApiError(404, "not_found", "no such peer")
            await self.bridge.peers_changed()
            log.info("peer suspended" if suspended else "peer resumed", peer_id=peer.id)
        changed = await find_peer(self.bridge, peer.id)
        assert changed is not None
        return web.json_response(peer_item(changed))

    @operation(
        "Remove a peer: its token stops working; our credentials are deleted at the peer",
        tag="ocpi",
        path=PEER_PATH,
        description="We unregister the peer here first (its token stops working at once), "
        "then DELETE our credentials at its credentials endpoint (OCPI 2.2.1 section "
        "7.2.4), best effort: peer_notified and answer say how that went.",
        responses={
            200: C.ok(
                "removed",
                C.obj(
                    {
                        "id": C.INT,
                        "status": C.STR,
                        "peer_notified": C.BOOL,
                        "answer": C.STR,
                    }
                ),
            ),
            409: C.fails("the peer is not registered"),
        },
    )
    async def delete_peer(self, request: web.Request) -> web.Response:
        peer = await self._registered(request)
        return web.json_response(await remove_peer(self.bridge, peer))

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
        body = await _body(request) if request.can_read_body else None
        grant = _grant(body, self.bridge.store.mobie_mode)
        token = new_token()
        await self.bridge.store.add_token_a(token, grant.role, grant.party_texts(), grant.policy)
        # (no policy given: the role's defaults, as the peer will have them)
        policy = grant.policy or PeerPolicy.default(grant.role, self.bridge.store.mobie_mode)
        s = self.bridge.settings
        log.info("token A created", granted=grant.describe())
        return web.json_response(
            {
                "token": token,
                "versions_url": self.bridge.versions_url,
                "party_id": s.party_id,
                "country_code": s.country_code,
                "granted": {
                    "role": grant.role,
                    "parties": grant.party_texts(),
                    "policy": policy.view(),
                },
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
                "policy": POLICY_BODY,
            },
            optional=("role", "parties", "policy"),
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
        grant = _grant(body, self.bridge.store.mobie_mode)
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
        await self.bridge.tariffs_changed()  # pushed to the peers (ocpi_bridge.tariff_push)
        return web.json_response(self._view(rows[0]), status=201 if created else 200)

    @operation("Delete a tariff", tag="tariffs", responses={204: C.NO_CONTENT})
    async def delete_tariff(self, request: web.Request) -> web.Response:
        if not await self.bridge.store.delete_tariff(request.match_info["tariff_id"]):
            raise ApiError(404, "not_found", "no such tariff")
        await self.bridge.tariffs_changed()
        return web.Response(status=204)
