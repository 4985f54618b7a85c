"""Tests of the OCPI peer harness itself (tests/ocpi_peer): no CPO of ours is needed.

The peer is the extrawest-ocpi eMSP running in .venv-peer; a tiny fake CPO written here (aiohttp,
127.0.0.1, port 0) serves just enough OCPI for the handshakes, a paginated locations Sender, a
tokens Receiver and a commands Receiver.  The assertions on the peer's answers record what the
library really does (including where it is lenient or wrong), so that tests of our CPO know what
"accepted by the peer" proves.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing, peer_python

STAMP = "2024-05-01T10:00:00Z"


def b64(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


def envelope(data: Any = None, status_code: int = 1000) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status_code, "timestamp": "2024-05-01T10:00:00Z"}
    if data is not None:
        body["data"] = data
    return body


def location(location_id: str = "LOC-1", **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "country_code": "PT",
        "party_id": "CPO",
        "id": location_id,
        "publish": True,
        "name": "Estação 1",
        "address": "Avenida da Liberdade 1",
        "city": "Lisboa",
        "postal_code": "1250-096",
        "country": "PRT",
        "coordinates": {"latitude": "38.716670", "longitude": "-9.141670"},
        "time_zone": "Europe/Lisbon",
        "evses": [
            {
                "uid": f"{location_id}-E1",
                "evse_id": "PT*CPO*E1",
                "status": "AVAILABLE",
                "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2",
                        "format": "SOCKET",
                        "power_type": "AC_3_PHASE",
                        "max_voltage": 230,
                        "max_amperage": 32,
                        "last_updated": STAMP,
                    }
                ],
                "last_updated": STAMP,
            }
        ],
        "last_updated": STAMP,
    }
    obj.update(changes)
    return obj


def ocpi_token(uid: str = "AABBCCDD", **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "country_code": "PT",
        "party_id": "EMS",
        "uid": uid,
        "type": "RFID",
        "contract_id": "PT-EMS-C00001-A",
        "issuer": "Test eMSP",
        "valid": True,
        "whitelist": "ALWAYS",
        "last_updated": STAMP,
    }
    obj.update(changes)
    return obj


class FakeCpo:
    """Just enough of an OCPI 2.2.1 CPO to drive the peer in both handshake directions."""

    def __init__(self, page_size: int = 2) -> None:
        self.token_a = "cpo-token-A"
        self.accepted = {self.token_a}  # tokens the peer may call us with
        self.token_c: str | None = None  # what we issued to the peer
        self.peer_token: str | None = None  # what we use to call the peer
        self.page_size = page_size
        self.received: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []  # our calls to the peer during handshakes
        self.locations = [location(f"LOC-{n}") for n in range(1, 6)]
        self.tokens: dict[str, dict[str, Any]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.base = ""

    # ---- plumbing ---------------------------------------------------------------------------
    async def start(self) -> FakeCpo:
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_get("/ocpi/versions", self.versions)
        r.add_get("/ocpi/cpo/2.2.1", self.details)
        r.add_route("*", "/ocpi/cpo/2.2.1/credentials", self.credentials)
        r.add_get("/ocpi/cpo/2.2.1/locations", self.get_locations)
        r.add_route("*", "/ocpi/cpo/2.2.1/tokens/{cc}/{pid}/{uid}", self.tokens_receiver)
        r.add_post("/ocpi/cpo/2.2.1/commands/{command}", self.commands)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self.runner, sock)
        await site.start()
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def versions_url(self) -> str:
        return f"{self.base}/ocpi/versions"

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.received.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        token = self._token(request)
        if token is None or token not in self.accepted:
            return web.json_response(envelope(status_code=2000), status=401)
        return await handler(request)

    @staticmethod
    def _token(request: web.Request) -> str | None:
        value = request.headers.get("Authorization", "")
        if not value.startswith("Token "):
            return None
        try:
            return base64.b64decode(value[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None

    def endpoints(self) -> list[dict[str, str]]:
        base = f"{self.base}/ocpi/cpo/2.2.1"
        return [
            {"identifier": "credentials", "role": "SENDER", "url": f"{base}/credentials"},
            {"identifier": "locations", "role": "SENDER", "url": f"{base}/locations"},
            {"identifier": "tokens", "role": "RECEIVER", "url": f"{base}/tokens"},
            {"identifier": "commands", "role": "RECEIVER", "url": f"{base}/commands"},
        ]

    def credentials_body(self, token: str) -> dict[str, Any]:
        return {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": "CPO",
                    "business_details": {"name": "Fake CPO"},
                    "party_id": "CPO",
                    "country_code": "PT",
                }
            ],
        }

    async def call_peer(self, method: str, url: str, token: str, body: Any = None) -> Any:
        assert self.session is not None
        headers = {
            "Authorization": f"Token {b64(token)}",
            "X-Request-ID": str(uuid.uuid4()),
            "X-Correlation-ID": str(uuid.uuid4()),
        }
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            data = await resp.json()
            self.callbacks.append({"method": method, "url": url, "status": resp.status})
            return resp.status, data

    # ---- OCPI handlers ----------------------------------------------------------------------
    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            envelope([{"version": "2.2.1", "url": f"{self.base}/ocpi/cpo/2.2.1"}])
        )

    async def details(self, request: web.Request) -> web.Response:
        return web.json_response(envelope({"version": "2.2.1", "endpoints": self.endpoints()}))

    async def credentials(self, request: web.Request) -> web.Response:
        token = self._token(request)
        if request.method == "GET":
            return web.json_response(envelope(self.credentials_body(self.token_c or "")))
        if request.method == "DELETE":
            self.accepted.discard(token or "")
            self.token_c = self.peer_token = None
            return web.json_response(envelope())
        body = await request.json()
        if request.method == "POST" and token != self.token_a:
            return web.json_response(envelope(status_code=2000), status=405)
        # Receiver side of the handshake: call the Sender back with its token B.
        status, versions = await self.call_peer("GET", body["url"], body["token"])
        assert status == 200, versions
        details_url = next(v["url"] for v in versions["data"] if v["version"] == "2.2.1")
        status, _details = await self.call_peer("GET", details_url, body["token"])
        assert status == 200
        self.peer_token = body["token"]
        self.accepted.discard(token or "")  # token A (POST) or the old token C (PUT)
        self.token_c = f"cpo-token-C-{uuid.uuid4().hex[:8]}"
        self.accepted.add(self.token_c)
        return web.json_response(envelope(self.credentials_body(self.token_c)))

    async def get_locations(self, request: web.Request) -> web.Response:
        offset = int(request.query.get("offset", 0))
        limit = min(int(request.query.get("limit", self.page_size)), self.page_size)
        page = self.locations[offset : offset + limit]
        headers = {"X-Total-Count": str(len(self.locations)), "X-Limit": str(self.page_size)}
        if offset + limit < len(self.locations):
            url = request.url.update_query({"offset": offset + limit, "limit": limit})
            headers["Link"] = f'<{url}>; rel="next"'
        return web.json_response(envelope(page), headers=headers)

    async def tokens_receiver(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        body = await request.json()
        if request.method == "PATCH":
            self.tokens[uid] = {**self.tokens.get(uid, {}), **body}
        else:
            self.tokens[uid] = body
        return web.json_response(envelope())

    async def commands(self, request: web.Request) -> web.Response:
        body = await request.json()
        task = asyncio.create_task(self._answer_command(body["response_url"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response(envelope({"result": "ACCEPTED", "timeout": 30}))

    async def _answer_command(self, response_url: str) -> None:
        await asyncio.sleep(0.05)
        assert self.peer_token is not None
        await self.call_peer("POST", response_url, self.peer_token, {"result": "ACCEPTED"})

    # ---- the CPO as credentials Sender (registering with the peer) ------------------------
    async def register_with(self, peer: EmspPeer) -> dict[str, Any]:
        status, versions = await self.call_peer("GET", peer.versions_url, peer.token_a)
        assert status == 200 and versions["status_code"] == 1000, versions
        details_url = next(v["url"] for v in versions["data"] if v["version"] == "2.2.1")
        status, details = await self.call_peer("GET", details_url, peer.token_a)
        assert status == 200 and details["status_code"] == 1000, details
        endpoints = details["data"]["endpoints"]
        credentials_url = next(e["url"] for e in endpoints if e["identifier"] == "credentials")
        token_b = f"cpo-token-B-{uuid.uuid4().hex[:8]}"
        self.accepted.add(token_b)
        status, answer = await self.call_peer(
            "POST", credentials_url, peer.token_a, self.credentials_body(token_b)
        )
        assert status == 200 and answer["status_code"] == 1000, answer
        self.peer_token = answer["data"]["token"]
        return {"endpoints": endpoints, "token_b": token_b, "answer": answer}


@pytest.fixture
async def peer() -> AsyncIterator[EmspPeer]:
    try:
        running = await EmspPeer(token_a="peer-token-A").start()
    except PeerVenvMissing as exc:
        pytest.fail(str(exc))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def cpo() -> AsyncIterator[FakeCpo]:
    fake = await FakeCpo().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def fetch(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None, **kw: Any
) -> tuple[int, Any]:
    headers = kw.pop("headers", {})
    if token is not None:
        headers.setdefault("Authorization", f"Token {b64(token)}")
    async with http.request(method, url, headers=headers, allow_redirects=False, **kw) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, await resp.text()


# ================================================================================================


async def test_versions_and_details_with_token_a(peer: EmspPeer, http: aiohttp.ClientSession):
    assert peer.info["library"] == "2025.7.16"
    status, body = await fetch(http, "GET", peer.versions_url, peer.token_a)
    assert status == 200 and body["status_code"] == 1000
    assert body["data"] == [{"version": "2.2.1", "url": peer.details_url}]

    status, body = await fetch(http, "GET", peer.details_url, peer.token_a)
    assert status == 200 and body["status_code"] == 1000
    roles = {e["identifier"]: e["role"] for e in body["data"]["endpoints"]}
    assert roles == {
        "credentials": "RECEIVER",  # the library advertises RECEIVER (role is meaningless here)
        "locations": "RECEIVER",
        "sessions": "RECEIVER",
        "cdrs": "RECEIVER",
        "tariffs": "RECEIVER",
        "tokens": "SENDER",
        "commands": "SENDER",
    }
    # every advertised URL ends with a slash: /ocpi/emsp/2.2.1/<module>/
    for endpoint in body["data"]["endpoints"]:
        assert endpoint["url"].endswith(f"/ocpi/emsp/2.2.1/{endpoint['identifier']}/")

    seen = await peer.requests(path="/ocpi/")
    assert [(r["method"], r["path"]) for r in seen] == [
        ("GET", "/ocpi/versions"),
        ("GET", "/ocpi/2.2.1/details"),
    ]
    assert seen[0]["headers"]["authorization"] == f"Token {b64('peer-token-A')}"
    assert "missing X-Request-ID" in seen[0]["findings"]  # our plain fetch sent none


async def test_authorization_answers(peer: EmspPeer, http: aiohttp.ClientSession):
    locations = f"{peer.base_url}/ocpi/emsp/2.2.1/locations/PT/CPO/LOC-1"
    # unknown token on versions: 401 with FastAPI's {"detail"}, no OCPI envelope
    status, body = await fetch(http, "GET", peer.versions_url, "not-a-token")
    assert (status, body) == (401, {"detail": "Unauthorized"})
    # a raw (not Base64) token makes the library's base64 decoding raise: HTTP 200 + OCPI 3000
    status, body = await fetch(
        http, "GET", peer.versions_url, None, headers={"Authorization": "Token peer-token-A"}
    )
    assert status == 200 and body["status_code"] == 3000
    # token A on a functional module, unknown token, no header: 403 (OCPI says 401)
    status, body = await fetch(http, "GET", locations, peer.token_a)
    assert (status, body) == (403, {"detail": "Your authorization token is invalid."})
    status, body = await fetch(http, "GET", locations, None)
    assert (status, body) == (403, {"detail": "Not authenticated"})


async def test_cpo_registers_with_peer_and_pushes(
    peer: EmspPeer, cpo: FakeCpo, http: aiohttp.ClientSession
):
    """Our side as credentials Sender; the peer (library) is the Receiver."""
    registration = await cpo.register_with(peer)
    answer = registration["answer"]["data"]
    # The library validated its answer with its Credentials model: CiStrings come back lower-case.
    assert answer["roles"][0]["party_id"] == "ems" and answer["roles"][0]["country_code"] == "pt"
    assert answer["url"] == peer.versions_url
    token_c = answer["token"]

    # Before answering, the library called our versions and details with Token base64(B) and
    # nothing else: no X-Request-ID / X-Correlation-ID.
    callbacks = [r for r in cpo.received if r["method"] == "GET"]
    assert [r["path"] for r in callbacks] == ["/ocpi/versions", "/ocpi/cpo/2.2.1"]
    for r in callbacks:
        assert r["headers"]["authorization"] == f"Token {b64(registration['token_b'])}"
        assert "x-request-id" not in r["headers"] and "x-correlation-id" not in r["headers"]
    outgoing = await peer.outgoing()
    assert [o["origin"] for o in outgoing] == ["library", "library"]

    state = await peer.state()
    assert state["current"]["direction"] == "cpo_registered_with_peer"
    assert state["current"]["token_out"] == registration["token_b"]
    assert state["current"]["token_in"] == token_c
    assert state["tokens_a"] == []  # token A is spent
    status, _ = await fetch(http, "GET", peer.versions_url, peer.token_a)
    assert status == 401

    # Push a Location the way a CPO does (PUT with all OCPI headers) and read it back.
    headers = {
        "X-Request-ID": str(uuid.uuid4()),
        "X-Correlation-ID": str(uuid.uuid4()),
        "OCPI-from-country-code": "PT",
        "OCPI-from-party-id": "CPO",
        "OCPI-to-country-code": "PT",
        "OCPI-to-party-id": "EMS",
    }
    url = f"{peer.base_url}/ocpi/emsp/2.2.1/locations/PT/CPO/LOC-1"
    body = location("LOC-1", mobie_voltage_level="BTN")
    status, reply = await fetch(http, "PUT", url, token_c, json=body, headers=dict(headers))
    assert status == 200 and reply["status_code"] == 1000
    assert isinstance(reply["data"], list)  # the library wraps single objects in a list

    stored = await peer.objects("locations")
    assert len(stored) == 1
    record = stored[0]
    assert record["key"] == "pt/cpo/loc-1"
    assert record["object"]["id"] == "loc-1"  # the library lower-cases every CiString
    assert record["object"]["evses"][0]["evse_id"] == "pt*cpo*e1"
    assert "mobie_voltage_level" not in record["object"]  # unknown fields are dropped ...
    assert record["writes"][0]["body"]["mobie_voltage_level"] == "BTN"  # ... the raw body has it
    put = (await peer.requests(method="PUT"))[0]
    assert put["findings"] == []  # well-formed request: nothing to remark
    assert put["response"]["status"] == 200

    evse_url = f"{url}/LOC-1-E1"
    # Leniency: a PATCH without last_updated is accepted (OCPI: 2001) and the peer records it.
    status, reply = await fetch(
        http, "PATCH", evse_url, token_c, json={"status": "CHARGING"}, headers=dict(headers)
    )
    assert status == 200 and reply["status_code"] == 1000
    patch = (await peer.requests(method="PATCH"))[-1]
    assert patch["findings"] == ["PATCH without last_updated"]
    # Leniency: a +01:00 offset is accepted and stored as sent (not converted to UTC).
    status, reply = await fetch(
        http,
        "PATCH",
        evse_url,
        token_c,
        json={"status": "AVAILABLE", "last_updated": "2024-05-01T11:00:00+01:00"},
        headers=dict(headers),
    )
    assert status == 200 and reply["status_code"] == 1000
    obj = await peer.object("locations", "LOC-1")
    assert obj is not None
    assert obj["evses"][0]["last_updated"] == "2024-05-01T11:00:00+01:00"
    assert obj["last_updated"] == STAMP  # the library does not bump the parent's last_updated

    # Schema errors: HTTP 422 with FastAPI's {"detail": [...]} (no OCPI envelope, no 2001).
    status, reply = await fetch(
        http,
        "PATCH",
        evse_url,
        token_c,
        json={"status": "BROKEN", "last_updated": STAMP},
        headers=dict(headers),
    )
    assert status == 422
    assert reply["detail"][0]["loc"] == ["body", "status"]
    assert reply["detail"][0]["type"] == "type_error.enum"
    # Library bug: EVSE.status_schedule is modelled as one object, so the spec's list fails.
    broken = copy.deepcopy(body)
    broken["evses"][0]["status_schedule"] = []
    status, reply = await fetch(http, "PUT", url, token_c, json=broken, headers=dict(headers))
    assert status == 422
    assert reply["detail"][0]["loc"][:4] == ["body", "evses", 0, "status_schedule"]
    # Invalid JSON: 422 too (OCPI says 400).
    status, reply = await fetch(
        http,
        "PATCH",
        evse_url,
        token_c,
        data=b"{not json",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert status == 422
    # Unknown object: 404 {"detail": "Object not found."}
    status, reply = await fetch(
        http, "PATCH", f"{url}/NOPE", token_c, json={"status": "AVAILABLE", "last_updated": STAMP}
    )
    assert (status, reply) == (404, {"detail": "Object not found."})
    # The stored EVSE still has the last accepted status.
    obj = await peer.object("locations", "LOC-1")
    assert obj is not None and obj["evses"][0]["status"] == "AVAILABLE"


async def test_cpo_renews_and_deletes_its_registration_at_peer(
    peer: EmspPeer, cpo: FakeCpo, http: aiohttp.ClientSession
):
    registration = await cpo.register_with(peer)
    credentials_url = next(
        e["url"] for e in registration["endpoints"] if e["identifier"] == "credentials"
    )
    old_c = registration["answer"]["data"]["token"]
    # PUT: the library calls our versions/details again with the NEW token B, then issues a new C
    new_b = "cpo-token-B-renewed"
    cpo.accepted.add(new_b)
    before = len(cpo.received)
    status, answer = await cpo.call_peer("PUT", credentials_url, old_c, cpo.credentials_body(new_b))
    assert status == 200 and answer["status_code"] == 1000
    new_c = answer["data"]["token"]
    assert new_c != old_c
    callbacks = cpo.received[before:]
    assert [r["headers"]["authorization"] for r in callbacks] == [f"Token {b64(new_b)}"] * 2
    state = await peer.state()
    assert state["current"]["token_out"] == new_b and state["current"]["token_in"] == new_c
    status, _ = await fetch(http, "GET", peer.versions_url, old_c)
    assert status == 401  # the old token C is gone at once
    # POST again with a valid token C: 405
    status, reply = await cpo.call_peer("POST", credentials_url, new_c, cpo.credentials_body("x"))
    assert (status, reply) == (405, {"detail": "Client is already registered"})
    # DELETE: 1000, then the token no longer opens anything; a second DELETE is 403
    status, reply = await cpo.call_peer("DELETE", credentials_url, new_c)
    assert status == 200 and reply["status_code"] == 1000
    assert (await peer.state())["connections"] == []
    status, _ = await fetch(http, "GET", peer.versions_url, new_c)
    assert status == 401
    status, _ = await cpo.call_peer("DELETE", credentials_url, new_c)
    assert status == 403


async def test_peer_registers_with_cpo_and_acts_as_client(peer: EmspPeer, cpo: FakeCpo):
    """The peer as credentials Sender, then pulling, pushing tokens, commands, renew, delete."""
    result = await peer.register_with(cpo.versions_url, cpo.token_a)
    assert result["ok"] and result["version"] == "2.2.1"
    assert result["validation"] == {
        "versions": [[]],
        "details": [],
        "own_credentials": [],
        "cpo_credentials": [],
    }
    assert result["token_c"] == cpo.token_c and cpo.peer_token == result["token_b"]

    # What reached the CPO: versions, details, credentials POST; all with Token base64(A)
    get_versions, get_details, post = cpo.received[:3]
    assert [(r["method"], r["path"]) for r in (get_versions, get_details, post)] == [
        ("GET", "/ocpi/versions"),
        ("GET", "/ocpi/cpo/2.2.1"),
        ("POST", "/ocpi/cpo/2.2.1/credentials"),
    ]
    for r in (get_versions, get_details, post):
        assert r["headers"]["authorization"] == f"Token {b64(cpo.token_a)}"
        assert r["headers"]["x-request-id"] != r["headers"]["x-correlation-id"]
        assert "ocpi-to-party-id" not in r["headers"]  # no routing headers on config modules
    assert post["body"]["token"] == result["token_b"]
    assert post["body"]["url"] == peer.versions_url
    assert post["body"]["roles"][0] == {
        "role": "EMSP",
        "business_details": {"name": "Test eMSP peer (extrawest-ocpi)"},
        "party_id": "EMS",
        "country_code": "PT",
    }
    # ... and the CPO's call-backs with token B were accepted by the peer (library routes).
    callbacks = await peer.requests(path="/ocpi/")
    assert [(r["path"], r["response"]["status"]) for r in callbacks] == [
        ("/ocpi/versions", 200),
        ("/ocpi/2.2.1/details", 200),
    ]
    assert cpo.callbacks[0]["status"] == 200 and cpo.callbacks[1]["status"] == 200

    # Pull with pagination: 5 locations in pages of 2, Link headers followed.
    pulled = await peer.pull("locations", limit=2)
    assert pulled["ok"], pulled["error"]
    assert [o["id"] for o in pulled["objects"]] == [f"LOC-{n}" for n in range(1, 6)]
    assert len(pulled["pages"]) == 3
    assert pulled["validation_errors"] == []
    first = pulled["pages"][0]
    assert first["request"]["params"] == {"limit": 2}
    assert first["response"]["headers"]["x-total-count"] == "5"
    assert first["request"]["headers"]["OCPI-to-party-id"] == "CPO"
    assert first["request"]["headers"]["Authorization"] == f"Token {b64(cpo.token_c or '')}"
    # the fake CPO does not echo X-Request-ID or send routing headers: reported as findings
    assert any("x-request-id not echoed" in f for f in pulled["findings"])

    # An object the library model rejects is reported (but still returned).
    cpo.locations[3]["evses"][0]["status"] = "NOT_A_STATUS"
    pulled = await peer.pull("locations")
    assert pulled["ok"]
    assert [(e["id"], e["errors"][0]["loc"]) for e in pulled["validation_errors"]] == [
        ("LOC-4", ["evses", 0, "status"])
    ]

    # Push a token (PUT then PATCH) to the CPO's tokens Receiver.
    pushed = await peer.push_token(ocpi_token())
    assert pushed["ok"], pushed
    request = cpo.received[-1]
    assert (request["method"], request["path"]) == ("PUT", "/ocpi/cpo/2.2.1/tokens/PT/EMS/AABBCCDD")
    assert request["query"] == {"type": "RFID"}
    assert request["headers"]["ocpi-from-party-id"] == "EMS"
    assert request["headers"]["ocpi-to-party-id"] == "CPO"
    assert request["body"]["uid"] == "AABBCCDD"  # sent as given, not lower-cased
    patched = await peer.push_token(
        {"valid": False, "last_updated": "2024-05-02T10:00:00Z"}, method="PATCH", uid="AABBCCDD"
    )
    assert patched["ok"]
    assert cpo.tokens["AABBCCDD"]["valid"] is False
    rejected = await peer.push_token(ocpi_token(whitelist="SOMETIMES"))
    assert rejected["ok"] is False and rejected["errors"][0]["loc"] == ["whitelist"]

    # A command with a response_url back to the peer; the CPO POSTs the CommandResult there.
    sent = await peer.send_command(
        "START_SESSION",
        {"token": ocpi_token(), "location_id": "LOC-1", "evse_uid": "LOC-1-E1"},
    )
    assert sent["ok"] and sent["command_response"] == {"result": "ACCEPTED", "timeout": 30}
    assert sent["response_url"] == f"{peer.base_url}/ocpi/emsp/2.2.1/commands/{sent['uid']}"
    assert cpo.received[-1]["path"] == "/ocpi/cpo/2.2.1/commands/START_SESSION"
    result_entry = await peer.wait_for_command_result(sent["uid"], timeout=10)
    assert result_entry["result"] == {"result": "ACCEPTED", "message": []}
    assert result_entry["raw"] == {"result": "ACCEPTED"}

    # Renew credentials (PUT): the CPO calls back with the new token B and issues a new C.
    old_c = cpo.token_c
    renewed = await peer.renew_credentials()
    assert renewed["ok"], renewed
    assert renewed["token_c"] == cpo.token_c != old_c
    put = cpo.received[-1]
    assert (put["method"], put["path"]) == ("PUT", "/ocpi/cpo/2.2.1/credentials")
    assert put["headers"]["authorization"] == f"Token {b64(old_c or '')}"
    assert put["body"]["token"] == renewed["token_b"] == cpo.peer_token
    state = await peer.state()
    assert state["current"]["token_out"] == cpo.token_c
    assert state["current"]["token_in"] == renewed["token_b"]

    # Unregister (DELETE) with the current token C.
    deleted = await peer.unregister()
    assert deleted["ok"]
    assert cpo.received[-1]["method"] == "DELETE"
    assert (await peer.state())["connections"] == []


async def test_library_push_client_needs_a_trailing_slash(peer: EmspPeer, cpo: FakeCpo):
    """via="library" uses py_ocpi.core.push: it GETs our version details, then PUTs to
    {tokens_url}{COUNTRY_CODE}/{PARTY_ID}/{uid} -- no slash added, CiStrings lower-cased,
    no X-Request-ID, no routing headers, no ?type."""
    await peer.register_with(cpo.versions_url, cpo.token_a)
    pushed = await peer.push_token(ocpi_token(uid="LIBTOK"), via="library")
    assert pushed["ok"] is False
    details, put = pushed["outgoing"]
    assert (details["method"], details["url"]) == ("GET", f"{cpo.base}/ocpi/cpo/2.2.1")
    assert put["url"] == f"{cpo.base}/ocpi/cpo/2.2.1/tokensPT/EMS/libtok"
    assert put["response"]["status"] == 404
    assert put["body"]["uid"] == "libtok" and put["body"]["country_code"] == "pt"
    assert "x-request-id" not in put["headers"] and "ocpi-to-party-id" not in put["headers"]


async def test_peer_validates_commands_with_library_models(peer: EmspPeer, cpo: FakeCpo):
    await peer.register_with(cpo.versions_url, cpo.token_a)
    before = len(cpo.received)
    sent = await peer.send_command("START_SESSION", {"location_id": "LOC-1"})
    assert sent["ok"] is False
    assert [e["loc"] for e in sent["errors"]] == [["token"]]
    assert len(cpo.received) == before  # nothing was sent


async def test_missing_peer_venv_fails_with_a_clear_message(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OCPI_PEER_PYTHON", "/nonexistent/.venv-peer/bin/python")
    with pytest.raises(PeerVenvMissing, match="make test"):
        peer_python()
    with pytest.raises(PeerVenvMissing, match="make test"):
        await EmspPeer().start()


async def test_stop_terminates_the_process(http: aiohttp.ClientSession):
    try:
        running = await EmspPeer().start()
    except PeerVenvMissing as exc:
        pytest.fail(str(exc))
    versions_url = running.versions_url
    await running.stop()
    assert running.returncode is None  # the process handle is released
    await running.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(http, "GET", versions_url, "x")
