"""Our OCPI 2.2.1 (and 2.2) CPO endpoints, an aiohttp sub-application mounted at /ocpi.

Every request is authenticated by its `Authorization: Token ...` (raw or Base64) and bound to
the calling peer; a token A opens only versions, version details and credentials. Every
response is an OCPI envelope and echoes `X-Request-ID` and `X-Correlation-ID`; functional
modules also carry the routing headers. Routes answer with and without a trailing slash.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from . import v211, versions
from .charging_profiles import SCSP, ChargingProfiles
from .hubclientinfo import HubClientInfo
from .peers import PeerPolicy, location_for
from .schemas import Token, TokenPatch, dump, parse
from .store import Peer, UidTaken, token_digest
from .transport import (
    FUNCTIONAL_MODULES,
    INVALID_PARAMETERS,
    SERVER_ERROR,
    UNKNOWN_LOCATION,
    UNKNOWN_TOKEN,
    VERSIONS,
    OcpiError,
    Page,
    envelope,
    json_response,
    paginate_headers,
    parse_ocpi_time,
    token_from_header,
)

if TYPE_CHECKING:
    from .bridge import Bridge

log = structlog.get_logger("ocpi.server")

V = r"{version:2\.2(?:\.1)?|2\.1\.1}"
S = "{_s:/?}"
ID = "[^/]+"
CONFIG_MODULES = frozenset({"versions", "details", "credentials"})
# what a peer granted SCSP (a smart charging party) may not use: it steers sessions, it does
# not see their tokens or owners' data, nor act for an eMSP
NOT_FOR_SCSP = frozenset({"sessions", "cdrs", "tokens", "commands"})
CALLER = web.RequestKey("ocpi_caller", "Caller")
# what we echo of a caller's X-Request-ID / X-Correlation-ID (anything else: a new UUID)
_ECHOABLE = frozenset(map(chr, range(0x21, 0x7F)))
_MAX_ID = 255
MAX_OFFSET = 2**31 - 1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Caller:
    """Who is calling: a registered peer, or someone holding one of our tokens A."""

    token: str
    peer: Peer | None = None
    token_a: str | None = None


class OcpiHttp:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.charging_profiles = ChargingProfiles(bridge)
        self.hub_client_info = HubClientInfo(bridge.store)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_cleanup.append(self._cleanup)
        r = app.router
        r.add_get(f"/versions{S}", self.versions, name="versions")
        r.add_get(f"/{V}{S}", self.details, name="details")
        for method in ("GET", "POST", "PUT", "DELETE"):
            r.add_route(
                method, f"/{V}/credentials{S}", self.credentials, name=f"credentials-{method}"
            )
        r.add_get(f"/{V}/locations{S}", self.locations, name="locations")
        r.add_get(
            f"/{V}/locations/{{location_id:{ID}}}{S}", self.location, name="locations-location"
        )
        r.add_get(
            f"/{V}/locations/{{location_id:{ID}}}/{{evse_uid:{ID}}}{S}",
            self.location,
            name="locations-evse",
        )
        r.add_get(
            f"/{V}/locations/{{location_id:{ID}}}/{{evse_uid:{ID}}}/{{connector_id:{ID}}}{S}",
            self.location,
            name="locations-connector",
        )
        r.add_get(f"/{V}/sessions{S}", self.sessions, name="sessions")
        r.add_put(
            f"/{V}/sessions/{{session_id:{ID}}}/charging_preferences{S}",
            self.charging_preferences,
            name="sessions-preferences",
        )
        r.add_get(f"/{V}/cdrs{S}", self.cdrs, name="cdrs")
        r.add_get(f"/{V}/cdrs/{{cdr_id:{ID}}}{S}", self.cdr, name="cdrs-one")
        r.add_get(f"/{V}/tariffs{S}", self.tariffs, name="tariffs")
        r.add_post(f"/{V}/commands/{{command:{ID}}}{S}", self.command, name="commands")
        tokens = f"/{V}/tokens/{{country_code:{ID}}}/{{party_id:{ID}}}/{{uid:{ID}}}{S}"
        r.add_get(tokens, self.token_get, name="tokens-get")
        r.add_put(tokens, self.token_put, name="tokens-put")
        r.add_patch(tokens, self.token_patch, name="tokens-patch")
        clientinfo = f"/{V}/hubclientinfo/{{country_code:{ID}}}/{{party_id:{ID}}}{S}"
        r.add_get(clientinfo, self.client_info_get, name="hubclientinfo-get")
        r.add_put(clientinfo, self.client_info_put, name="hubclientinfo-put")
        profiles = f"/{V}/chargingprofiles/{{session_id:{ID}}}{S}"
        r.add_get(profiles, self.charging_profile_get, name="chargingprofiles-get")
        r.add_put(profiles, self.charging_profile_put, name="chargingprofiles-put")
        r.add_delete(profiles, self.charging_profile_delete, name="chargingprofiles-delete")
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await self.charging_profiles.stop()

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = _echoable(request.headers.get("X-Request-ID"))
        correlation_id = _echoable(request.headers.get("X-Correlation-ID"))
        echo = {"X-Request-ID": request_id, "X-Correlation-ID": correlation_id}
        route = request.match_info.route.name or ""
        module = route.split("-")[0]
        bound = log.bind(
            method=request.method, path=request.path, request_id=request_id, module=module
        )
        try:
            if request.match_info.http_exception is not None:
                raise OcpiError(2000, "unknown OCPI endpoint", http_status=404)
            request[CALLER] = await self._authenticate(request, module)
            _check_powers(request[CALLER], module)
            response = await handler(request)
        except OcpiError as e:
            if e.status_code >= 3000:
                bound.error("OCPI request failed", status_code=e.status_code, error=e.message)
            else:
                bound.warning("OCPI request refused", status_code=e.status_code, error=e.message)
            response = json_response(
                envelope(None, e.status_code, e.message, self.bridge.clock.now()),
                status=e.http_status,
            )
        except (BodyNotJson, UnicodeDecodeError) as e:
            bound.warning("OCPI request body is not JSON", error=str(e)[:200])
            text = (
                str(e)
                if isinstance(e, BodyNotJson)
                else "the body is not valid JSON: it is not UTF-8"
            )
            response = json_response(
                envelope(None, INVALID_PARAMETERS, text, self.bridge.clock.now()), 400
            )
        except web.HTTPException:
            raise
        except Exception:
            bound.exception("OCPI handler failed")
            response = json_response(
                envelope(None, SERVER_ERROR, "internal error", self.bridge.clock.now()), 500
            )
        response.headers.update(echo)
        caller: Caller | None = request.get(CALLER)
        if caller is not None and caller.peer is not None:
            self.bridge.traffic.request(caller.peer.id, module, response.status)
        if module in FUNCTIONAL_MODULES:
            s = self.bridge.settings
            response.headers["OCPI-from-country-code"] = s.country_code
            response.headers["OCPI-from-party-id"] = s.party_id
            to = _requester_party(request, caller)
            if to is not None:
                response.headers["OCPI-to-country-code"] = to[0]
                response.headers["OCPI-to-party-id"] = to[1]
        return response

    async def _authenticate(self, request: web.Request, module: str) -> Caller:
        candidates = token_from_header(request.headers.get("Authorization"))
        if not candidates:
            raise OcpiError(2000, "missing or malformed Authorization: Token header", 401)
        for token in candidates:
            # tokens we check are stored, and looked up, as digests
            peer = self.bridge.peer_by_token(token_digest(token))
            if peer is not None:
                return Caller(token, peer=peer)
        for token in candidates:
            if await self.bridge.token_a_valid(token):
                if module not in CONFIG_MODULES:
                    raise OcpiError(
                        2000, "a token A opens only versions and credentials; register first", 401
                    )
                return Caller(token, token_a=token)
        raise OcpiError(2000, "unknown token", 401)

    def _ok(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return json_response(envelope(data, now=self.bridge.clock.now()), status, headers)

    @staticmethod
    def _peer(request: web.Request) -> Peer:
        caller: Caller = request[CALLER]
        assert caller.peer is not None  # token A never reaches functional modules
        return caller.peer

    def _page(self, request: web.Request, date_from_required: bool = False) -> Page:
        q = request.query
        max_limit = self.bridge.settings.page_limit
        try:
            offset = int(q.get("offset", 0))
            limit = min(int(q.get("limit", max_limit)), max_limit)
        except ValueError:
            raise OcpiError(INVALID_PARAMETERS, "offset and limit must be integers") from None
        if offset < 0 or limit < 1:
            raise OcpiError(INVALID_PARAMETERS, "offset must be >= 0 and limit >= 1")
        # far beyond any list (and beyond what SQLite's integers hold): an empty page
        offset = min(offset, MAX_OFFSET)
        dates: dict[str, datetime | None] = {}
        for key in ("date_from", "date_to"):
            dates[key] = None
            if key in q:
                try:
                    dates[key] = parse_ocpi_time(q[key])
                except ValueError as e:
                    raise OcpiError(INVALID_PARAMETERS, f"{key}: {e}") from None
        if date_from_required and dates["date_from"] is None:
            raise OcpiError(INVALID_PARAMETERS, "date_from is required")
        return Page(offset, limit, dates["date_from"], dates["date_to"])

    def _list(self, request: web.Request, items: list[Any], total: int, page: Page) -> web.Response:
        headers = paginate_headers(
            request,
            self.bridge.public_url,
            total,
            page.offset,
            page.limit,
            self.bridge.settings.page_limit,
            len(items),
        )
        return self._ok(items, headers=headers)

    # ------------------------------------------------------------------ versions

    async def versions(self, request: web.Request) -> web.Response:
        return self._ok([{"version": v, "url": self.bridge.details_url(v)} for v in VERSIONS])

    async def details(self, request: web.Request) -> web.Response:
        """Our endpoints, as far as the caller may use them (its policy, or its token A's)."""
        version = request.match_info["version"]
        role, policy = await self._grant(request[CALLER])
        modules = [
            (i, r) for i, r in self.bridge.modules if i == "credentials" or policy.may_use(i)
        ]
        if self.charging_profiles.offered_to(role) and policy.may_use("chargingprofiles"):
            modules.append(("chargingprofiles", "RECEIVER"))
        if policy.may_use("hubclientinfo"):
            modules.append(("hubclientinfo", "RECEIVER"))
        endpoints = [
            {"identifier": i, "role": r, "url": self.bridge.module_url(version, i)}
            for i, r in modules
        ]
        return self._ok({"version": version, "endpoints": versions.endpoints(endpoints, version)})

    async def _grant(self, caller: Caller) -> tuple[str | None, PeerPolicy]:
        """The role the operator granted the caller (a peer's, or its token A's), and its
        policy (a token A without one: its role's defaults)."""
        if caller.peer is not None:
            return caller.peer.grant_role, caller.peer.policy
        if caller.token_a is not None:
            grant = await self.bridge.store.token_a_grant(caller.token_a)
            if grant is not None:
                mobie = self.bridge.csms.settings.mobie_mode
                return grant.role, grant.policy or PeerPolicy.default(grant.role, mobie)
        return None, PeerPolicy.default(None)

    # ------------------------------------------------------------------ credentials

    async def credentials(self, request: web.Request) -> web.Response:
        caller: Caller = request[CALLER]
        version = request.match_info["version"]
        service = self.bridge.credentials
        if request.method == "GET":
            ours = self.bridge.our_credentials(caller.token)
            return self._ok(versions.credentials(ours, version))
        if request.method == "POST":
            if caller.peer is not None:
                raise OcpiError(2000, "already registered: use PUT to update", 405)
            assert caller.token_a is not None
            body = await request.json(loads=_loads)
            return self._ok(await service.register(caller.token_a, version, body))
        if caller.peer is None:
            raise OcpiError(2000, "not registered: POST your credentials first", 405)
        if request.method == "PUT":
            body = await request.json(loads=_loads)
            return self._ok(await service.renew(caller.peer, version, body))
        await service.unregister(caller.peer)
        return self._ok(None)

    # ------------------------------------------------------------------ locations

    async def locations(self, request: web.Request) -> web.Response:
        page = self._page(request)
        items, total = await self.bridge.list_locations(page, self._peer(request))
        return self._list(request, await self._versioned(request, "location", items), total, page)

    async def location(self, request: web.Request) -> web.Response:
        m = request.match_info
        location = await self.bridge.get_location(m["location_id"], self._peer(request))
        if location is None:
            raise OcpiError(UNKNOWN_LOCATION, f"unknown location {m['location_id']!r}", 404)
        if "evse_uid" not in m:
            return self._ok(_out(request, "location", location))
        evse = next(
            (e for e in location["evses"] if e["uid"].upper() == m["evse_uid"].upper()), None
        )
        if evse is None:
            raise OcpiError(2000, f"unknown EVSE {m['evse_uid']!r}", 404)
        if "connector_id" not in m:
            return self._ok(_out(request, "evse", evse))
        connector = next(
            (c for c in evse["connectors"] if c["id"].upper() == m["connector_id"].upper()), None
        )
        if connector is None:
            raise OcpiError(2000, f"unknown connector {m['connector_id']!r}", 404)
        return self._ok(_out(request, "connector", connector))

    # ------------------------------------------------------------------ sessions, CDRs, tariffs

    async def sessions(self, request: web.Request) -> web.Response:
        page = self._page(request, date_from_required=True)
        version = request.match_info["version"]
        items, total = await self.bridge.list_sessions(self._peer(request), page, version)
        return self._list(request, await self._versioned(request, "session", items), total, page)

    async def charging_preferences(self, request: web.Request) -> web.Response:
        await request.json(loads=_loads)
        # No EVSE of ours is CHARGING_PREFERENCES_CAPABLE: the spec's answer is 404 + 2001.
        raise OcpiError(
            INVALID_PARAMETERS, "charging preferences are not supported by this CPO's EVSEs", 404
        )

    async def cdrs(self, request: web.Request) -> web.Response:
        page = self._page(request)
        version = request.match_info["version"]
        items, total = await self.bridge.list_cdrs(self._peer(request), page, version)
        return self._list(request, await self._versioned(request, "cdr", items), total, page)

    async def cdr(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        cdr = await self.bridge.get_cdr(self._peer(request), request.match_info["cdr_id"], version)
        if cdr is None:
            raise OcpiError(2000, "unknown CDR", 404)
        return self._ok((await self._versioned(request, "cdr", [cdr]))[0])

    async def tariffs(self, request: web.Request) -> web.Response:
        page = self._page(request)
        items, total = await self.bridge.list_tariffs(page, self._peer(request))
        return self._list(request, await self._versioned(request, "tariff", items), total, page)

    async def _versioned(
        self, request: web.Request, kind: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Objects (2.2.1) as the request's OCPI version has them (ocpi_bridge.versions); a
        2.1.1 Session or CDR carries its Location, as the caller sees it."""
        version = request.match_info["version"]
        places: dict[str, dict[str, Any] | None] = {}
        out = []
        for obj in items:
            location = None
            if versions.needs_location(kind, version):
                location_id = versions.location_id(kind, obj) or ""
                if location_id not in places:
                    found = await self.bridge.get_location(location_id) if location_id else None
                    policy = self._peer(request).policy
                    places[location_id] = location_for(policy, found) if found else None
                location = places[location_id]
            out.append(versions.outgoing(kind, obj, version, location=location))
        return out

    # ------------------------------------------------------------------ commands (we receive)

    async def command(self, request: web.Request) -> web.Response:
        peer = self._peer(request)
        body = await request.json(loads=_loads)
        party = _requester_party(request, request[CALLER]) or peer.primary_party
        if not peer.owns(*party):
            raise OcpiError(
                INVALID_PARAMETERS, f"OCPI-from {party[0]}/{party[1]} is not one of your parties"
            )
        command = request.match_info["command"]
        if request.match_info["version"] == v211.VERSION:  # 2.1.1 bodies (its own Token)
            body = v211.command_in(command, body, *party)
        status, response = await self.bridge.commands.receive(peer, party, command, body)
        if request.match_info["version"] == v211.VERSION:
            response = v211.command_response_out(response)
        return json_response(envelope(response, status, now=self.bridge.clock.now()))

    # ------------------------------------------------------------------ charging profiles

    def _profile_caller(self, request: web.Request) -> tuple[Peer, tuple[str, str], str]:
        """(peer, the party it speaks for, session id) of a chargingprofiles request."""
        peer = self._peer(request)
        party = _requester_party(request, request[CALLER]) or peer.primary_party
        if not peer.owns(*party):
            raise OcpiError(
                INVALID_PARAMETERS, f"OCPI-from {party[0]}/{party[1]} is not one of your parties"
            )
        return peer, (party[0].upper(), party[1].upper()), request.match_info["session_id"]

    async def charging_profile_put(self, request: web.Request) -> web.Response:
        peer, party, session_id = self._profile_caller(request)
        body = await request.json(loads=_loads)
        return self._ok(await self.charging_profiles.set(peer, party, session_id, body))

    async def charging_profile_get(self, request: web.Request) -> web.Response:
        peer, party, session_id = self._profile_caller(request)
        answer = await self.charging_profiles.get(peer, party, session_id, request.query)
        return self._ok(answer)

    async def charging_profile_delete(self, request: web.Request) -> web.Response:
        peer, party, session_id = self._profile_caller(request)
        answer = await self.charging_profiles.clear(peer, party, session_id, request.query)
        return self._ok(answer)

    # ------------------------------------------------------------------ hubclientinfo

    async def client_info_put(self, request: web.Request) -> web.Response:
        m = request.match_info
        body = await request.json(loads=_loads)
        created = await self.hub_client_info.put(
            self._peer(request), m["country_code"], m["party_id"], body
        )
        return self._ok(None, status=201 if created else 200)

    async def client_info_get(self, request: web.Request) -> web.Response:
        m = request.match_info
        peer = self._peer(request)
        found = await self.hub_client_info.get(peer, m["country_code"], m["party_id"])
        if not found:
            raise OcpiError(2000, "unknown party", 404)
        return self._ok(found[0])

    # ------------------------------------------------------------------ tokens (we receive)

    def _token_key(self, request: web.Request) -> tuple[str, str, str, str]:
        m = request.match_info
        cc, pid, uid = m["country_code"], m["party_id"], m["uid"]
        token_type = request.query.get("type", "RFID")
        if token_type not in ("AD_HOC_USER", "APP_USER", "OTHER", "RFID"):
            raise OcpiError(INVALID_PARAMETERS, f"type: unknown TokenType {token_type!r}")
        peer = self._peer(request)
        if not peer.owns(cc, pid):
            raise OcpiError(2000, f"{cc}/{pid} is not one of your parties", 404)
        return cc.upper(), pid.upper(), uid, token_type

    async def _stored_type(self, request: web.Request, key: tuple[str, str, str, str]) -> str:
        """2.1.1 has no ``?type=``: the type of the party's token with that uid (RFID or
        OTHER, 2.1.1's types), RFID when it has none."""
        cc, pid, uid, token_type = key
        if request.match_info["version"] != v211.VERSION or "type" in request.query:
            return token_type
        for candidate in ("RFID", "OTHER"):
            if await self.bridge.store.get_token(cc, pid, uid, candidate) is not None:
                return candidate
        return token_type

    async def token_get(self, request: web.Request) -> web.Response:
        cc, pid, uid, token_type = key = self._token_key(request)
        token_type = await self._stored_type(request, key)
        token = await self.bridge.store.get_token(cc, pid, uid, token_type)
        if token is None:
            raise OcpiError(UNKNOWN_TOKEN, "unknown token", 404)
        if request.match_info["version"] == v211.VERSION:
            return self._ok(v211.token_out(token))
        return self._ok(token)

    async def token_put(self, request: web.Request) -> web.Response:
        cc, pid, uid, token_type = self._token_key(request)
        body = await request.json(loads=_loads)
        if request.match_info["version"] == v211.VERSION:  # auth_id; the URL gives the party
            body = v211.token_in(body, cc, pid)
            token_type = request.query.get("type", body["type"])
        token: Token = parse(Token, body)
        _same(("country_code", cc, token.country_code), ("party_id", pid, token.party_id))
        _same(("uid", uid, token.uid), ("type", token_type, token.type))
        stored = dump(token)
        stored["country_code"], stored["party_id"] = cc, pid
        created = await self._put_token(stored, self._peer(request))
        log.info("token stored", country_code=cc, party_id=pid, uid=uid, type=token_type)
        return self._ok(None, status=201 if created else 200)

    async def _put_token(self, token: dict[str, Any], peer: Peer) -> bool:
        """Store a token, unless another party holds its uid: then OCPI 2001 with the
        reason (not naming the other party), a warning and a row for the hub-link page."""
        try:
            created = await self.bridge.store.put_token(token, peer.id)
            # (valid or whitelist may have changed: the stations' local lists follow)
            self.bridge.csms.offline_list_changed()
            return created
        except UidTaken as e:
            party = f"{token['country_code']}/{token['party_id']}"
            log.warning(
                "token refused: its uid is held by another party",
                peer_id=peer.id,
                party=party,
                uid=token["uid"],
                held_by=e.holders,
            )
            await self.bridge.store.security_event(
                "uid_taken",
                f"{party} tried to take uid {token['uid']!r}, held by {', '.join(e.holders)}",
                peer_id=peer.id,
            )
            raise OcpiError(
                INVALID_PARAMETERS,
                f"uid {token['uid']!r} is already held by another party: refused (the "
                "operator has been told)",
            ) from None

    async def token_patch(self, request: web.Request) -> web.Response:
        cc, pid, uid, token_type = key = self._token_key(request)
        body = await request.json(loads=_loads)
        if request.match_info["version"] == v211.VERSION:  # auth_id; the URL gives the party
            body = v211.token_patch_in(body, cc, pid)
            token_type = await self._stored_type(request, key)
        patch: TokenPatch = parse(TokenPatch, body)
        current = await self.bridge.store.get_token(cc, pid, uid, token_type)
        if current is None:
            raise OcpiError(UNKNOWN_TOKEN, "unknown token: PUT it first", 404)
        changes = dump(patch)
        for field, expected in (
            ("country_code", cc),
            ("party_id", pid),
            ("uid", uid),
            ("type", token_type),
        ):
            if field in changes:
                _same((field, expected, changes[field]))
        updated = parse(Token, {**current, **changes})
        stored = dump(updated)
        stored["country_code"], stored["party_id"] = cc, pid
        await self._put_token(stored, self._peer(request))
        log.info("token patched", country_code=cc, party_id=pid, uid=uid, fields=sorted(changes))
        return self._ok(None)


class BodyNotJson(Exception):
    """A request body we cannot read as JSON: answered HTTP 400 with OCPI 2001."""


def _loads(text: str) -> Any:
    """``json.loads`` for request bodies: whatever it cannot take (bad syntax, an integer of
    thousands of digits, nesting deeper than the parser's recursion) is a BodyNotJson."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BodyNotJson(f"the body is not valid JSON: {e}") from None
    except (ValueError, RecursionError) as e:
        reason = "nested too deep" if isinstance(e, RecursionError) else str(e)[:120]
        raise BodyNotJson(f"the body is not usable JSON: {reason}") from None


def _out(request: web.Request, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """One object (2.2.1) as the request's OCPI version has it."""
    return versions.outgoing(kind, obj, request.match_info["version"])


def _echoable(value: str | None) -> str:
    """A caller's request id, echoed when it is printable ASCII of sane length."""
    if value and len(value) <= _MAX_ID and all(c in _ECHOABLE for c in value):
        return value
    return str(uuid.uuid4())


def _same(*checks: tuple[str, str, str]) -> None:
    """URL segments must equal the body's fields (case-insensitively for CiStrings)."""
    for field, in_url, in_body in checks:
        if str(in_url).upper() != str(in_body).upper():
            raise OcpiError(
                INVALID_PARAMETERS, f"{field}: {in_body!r} in the body, {in_url!r} in the URL"
            )


def _check_powers(caller: Caller, module: str) -> None:
    """A peer uses only the modules the operator let it use (its policy, within what its
    role allows: only SCSP opens chargingprofiles, SCSP opens nothing of an eMSP's), and
    nothing while suspended (HTTP 403, OCPI 2000)."""
    peer = caller.peer
    if peer is None or module in CONFIG_MODULES:
        return
    if peer.suspended_at is not None:
        raise OcpiError(2000, "this connection is suspended by the operator", 403)
    if module == "chargingprofiles":
        ChargingProfiles.check_allowed(peer)
    elif peer.grant_role == SCSP and module in NOT_FOR_SCSP:
        raise OcpiError(2000, f"{module} is not for a smart charging party (SCSP)", 403)
    if not peer.policy.may_use(module):
        raise OcpiError(2000, f"the operator has not opened {module} to you", 403)


def _requester_party(request: web.Request, caller: Caller | None) -> tuple[str, str] | None:
    cc = request.headers.get("OCPI-from-country-code")
    pid = request.headers.get("OCPI-from-party-id")
    if cc and pid:
        return cc, pid
    if caller is not None and caller.peer is not None and caller.peer.roles:
        return caller.peer.primary_party
    return None
