"""Issue 12, the OCPI peers: what a bad peer could do, shut and proven, against the real OCPI
server on loopback and real peers (extrawest-ocpi through tests/ocpi_peer, and small aiohttp
servers where a peer must misbehave in ways a real implementation will not).

- 1: a peer's powers (hub or not, its parties) are the operator's grant, fixed with its token
  A; a registration or renewal that claims more is refused, logged and shown;
- 2: a token uid held by one party is never re-owned by another;
- 12: registration never echoes what a peer's URL answered, and (unless allowed) never calls
  a loopback, private or link-local address, by IP or by a name that resolves to one;
- 13: the tokens we check (tokens A, each peer's token) are stored as digests.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from charger_sim import Behaviour, Station
from csms.config import ConfigError
from ocpi_bridge.client import PrivateAddressRefused, PublicOnlyConnector, is_public_address
from ocpi_bridge.store import token_digest
from tests import dbs
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing
from tests.test_web import ADMIN, WebClient, web_overrides

EMS = {"role": "EMSP", "parties": ["PT/EMS"]}
OTH = {"role": "EMSP", "parties": ["PT/OTH"]}


def token(party: str, uid: str, **extra: Any) -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": party,
        "uid": uid,
        "type": "RFID",
        "contract_id": f"PT-{party}-C-{uid[-8:]:0>8}-X",
        "issuer": f"eMSP {party}",
        "valid": True,
        "whitelist": "ALWAYS",
        "last_updated": "2026-01-01T00:00:00Z",
        **extra,
    }


@pytest.fixture
async def cpo(tmp_path: Path) -> AsyncIterator[Running]:
    system, session, running = await start_system(tmp_path, ocpi={}, **web_overrides())
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


async def peer(**kw: Any) -> EmspPeer:
    try:
        return await EmspPeer(**kw).start()
    except PeerVenvMissing as e:
        pytest.fail(str(e))


async def token_a(cpo: Running, grant: dict[str, Any]) -> tuple[str, str]:
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    return body["versions_url"], body["token"]


async def register(cpo: Running, p: EmspPeer, grant: dict[str, Any]) -> dict[str, Any]:
    versions_url, a = await token_a(cpo, grant)
    return await p.register_with(versions_url, a, check=False)


def refusal(exchange: dict[str, Any]) -> tuple[int, Any]:
    response = exchange["response"]
    return response["status"], (response.get("json") or {}).get("status_code")


async def charge(cpo: Running, station_id: str, tag: str) -> int:
    """One finished session with ``tag``; returns its transaction id."""
    st = Station(
        station_id,
        cpo.ocpp_url,
        1,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_transaction(1, tag, meter_start=0, timestamp=start.isoformat())
        assert answer is not None
        tx = int(answer["transactionId"])
        await st.stop_transaction(
            tx,
            meter_stop=5000,
            reason="Local",
            timestamp=(start + timedelta(minutes=30)).isoformat(),
        )
        return tx
    finally:
        await st.disconnect()


async def hub_page(cpo: Running) -> str:
    web = WebClient(cpo.http_url)
    try:
        assert (await web.login(ADMIN)).status == 303
        status, page = await web.get("/hub")
        assert status == 200
        return page
    finally:
        await web.close()


# ---------------------------------------------------------------------------- 1: grants


async def test_registration_claiming_more_than_the_token_a_grants_is_refused(
    cpo: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # a token A is made with a role and parties: never without
    status, body = await cpo.api.post("/api/v1/ocpi/token-a")
    assert status == 422 and body["error"] == "invalid_body", body
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", {"role": "CPO", "parties": ["PT/X"]})
    assert status == 422
    versions_url, a = await token_a(cpo, EMS)
    hub = await peer(party_id="EMS", role="HUB")
    other = await peer(party_id="OTH")
    try:
        with caplog.at_level(logging.WARNING):
            # the eMSP's token A, used to register as a HUB: refused, HTTP 403 + OCPI 2001
            result = await hub.register_with(versions_url, a, check=False)
            assert not result["ok"]
            assert refusal(result["steps"][-1]) == (403, 2001)
            # a party it was never given: refused too
            result = await other.register_with(versions_url, a, check=False)
            assert not result["ok"] and refusal(result["steps"][-1]) == (403, 2001)
        # nothing was registered, and we never called the claimant back
        _, peers = await cpo.api.get("/api/v1/ocpi/peers")
        assert peers["items"] == []
        assert not [r for r in await hub.requests() if r["method"] == "GET"]
        # logged as warnings, without any token
        refused = [r for r in caplog.records if "OCPI credentials refused" in r.getMessage()]
        assert len(refused) == 2
        text = " ".join(r.getMessage() for r in caplog.records)
        assert a not in text and result["token_b"] not in text
        assert "HUB PT/EMS" in text and "EMSP PT/OTH" in text
        # recorded for the operator: the API and the hub-link page
        _, events = await cpo.api.get("/api/v1/ocpi/security-events")
        assert [e["kind"] for e in events["items"]] == ["claim_refused", "claim_refused"]
        page = await hub_page(cpo)
        assert page.count('data-event="claim_refused"') == 2 and "HUB PT/EMS" in page
        # the token A is still good for a registration within its grant
        async with EmspPeer(party_id="EMS") as ems:
            result = await ems.register_with(versions_url, a)
            assert result["ok"], result
        _, peers = await cpo.api.get("/api/v1/ocpi/peers")
        [p] = peers["items"]
        assert p["granted"] == {"role": "EMSP", "parties": ["PT/EMS"], "source": "token_a"}
    finally:
        await hub.stop()
        await other.stop()


async def test_renewal_cannot_make_an_emsp_a_hub_or_add_parties(cpo: Running) -> None:
    await cpo.define_station("G1")
    await cpo.put_tag("LOCALTAG")  # a local card: only a hub sees its sessions
    await charge(cpo, "G1", "LOCALTAG")
    ems = await peer(party_id="EMS")
    try:
        assert (await register(cpo, ems, EMS))["ok"]
        business = {"name": "eMSP"}
        as_hub = [
            {"role": "HUB", "party_id": "EMS", "country_code": "PT", "business_details": business}
        ]
        renewed = await ems.renew_credentials(roles=as_hub)
        assert not renewed["ok"] and refusal(renewed) == (403, 2001)
        more = [
            {"role": "EMSP", "party_id": p, "country_code": "PT", "business_details": business}
            for p in ("EMS", "OTH")
        ]
        renewed = await ems.renew_credentials(roles=more)
        assert not renewed["ok"] and refusal(renewed) == (403, 2001)
        # its old token still works, and it is what it was granted: no hub, no PT/OTH
        sessions = await ems.pull("sessions", date_from="2000-01-01T00:00:00Z")
        assert sessions["ok"] and sessions["objects"] == []
        assert (await ems.pull("cdrs"))["objects"] == []
        put = await ems.push_token(token("OTH", "AAAA0001"), validate=False)
        assert put["response"]["status"] == 404
        # an honest renewal still works
        renewed = await ems.renew_credentials()
        assert renewed["ok"], renewed
        _, peers = await cpo.api.get("/api/v1/ocpi/peers")
        [p] = peers["items"]
        assert p["granted"]["role"] == "EMSP" and p["granted"]["parties"] == ["PT/EMS"]
        _, events = await cpo.api.get("/api/v1/ocpi/security-events")
        assert [e["kind"] for e in events["items"]] == ["claim_refused"] * 2
        assert "renewal claims HUB PT/EMS" in events["items"][1]["detail"]
    finally:
        await ems.stop()


async def test_we_register_with_a_peer_only_within_the_operators_grant(cpo: Running) -> None:
    ems = await peer(party_id="EMS", role="HUB")
    try:
        body = {"versions_url": ems.versions_url, "token": ems.token_a}
        status, answer = await cpo.api.post("/api/v1/ocpi/register", body)
        assert status == 422  # the operator says what it is
        status, answer = await cpo.api.post("/api/v1/ocpi/register", {**body, **EMS})
        # it answers as a HUB: more than granted
        assert status == 502 and "HUB PT/EMS" in answer["message"], answer
        _, peers = await cpo.api.get("/api/v1/ocpi/peers")
        assert [p["status"] for p in peers["items"]] == ["unregistered"]
    finally:
        await ems.stop()


async def test_peers_registered_before_grants_keep_what_they_had_flagged(tmp_path: Path) -> None:
    """Migration 0007 on a database of peers from before grants: a hub stays a hub, an eMSP
    keeps its parties, both flagged as legacy; a token A with no grant registers nobody."""
    system, session, cpo = await start_system(tmp_path, ocpi={}, **web_overrides())
    await session.close()
    await system.stop()
    roles = [
        [
            {
                "role": "HUB",
                "party_id": "MOB",
                "country_code": "PT",
                "business_details": {"name": "MOBI.E"},
            }
        ],
        [
            {
                "role": "EMSP",
                "party_id": "EMS",
                "country_code": "PT",
                "business_details": {"name": "E"},
            }
        ],
    ]
    now = "2026-01-01T00:00:00.000000Z"
    async with dbs.database_at(tmp_path / "data" / "csms.sqlite3").connect() as db:
        for n, r in enumerate(roles, 1):
            await db.execute(
                "INSERT INTO ocpi_peers (id, status, token_in, token_out, token_out_base64, "
                "versions_url, version, endpoints, roles, initiated_by, created_at, updated_at) "
                "VALUES (?, 'registered', ?, 'b', 1, 'https://x.invalid/v', '2.2.1', '[]', ?, "
                "'peer', ?, ?)",
                (n, f"legacy-token-c-{n}", json.dumps(r), now, now),
            )
            await db.execute(
                "INSERT INTO ocpi_peer_parties VALUES (?, 'PT', ?, ?)",
                (n, r[0]["party_id"], r[0]["role"]),
            )
        # back to the schema before 0007 (tokens A and peers' tokens in clear)
        await db.execute(
            "INSERT INTO ocpi_tokens_a (token, created_at) VALUES ('legacy-token-a', ?)", (now,)
        )
        await db.execute("DROP TABLE ocpi_peer_grants")
        await db.execute("DROP TABLE ocpi_security_events")
        await db.execute("ALTER TABLE ocpi_tokens_a DROP COLUMN role")
        await db.execute("ALTER TABLE ocpi_tokens_a DROP COLUMN parties")
        await db.execute("DELETE FROM schema_migrations WHERE component = 'ocpi' AND version = 7")

    system, session, cpo = await start_system(tmp_path, ocpi={}, **web_overrides())
    try:
        _, peers = await cpo.api.get("/api/v1/ocpi/peers")
        granted = {p["id"]: p["granted"] for p in peers["items"]}
        assert granted == {
            1: {"role": "HUB", "parties": ["PT/MOB"], "source": "legacy"},
            2: {"role": "EMSP", "parties": ["PT/EMS"], "source": "legacy"},
        }
        page = await hub_page(cpo)
        assert page.count("grant-legacy") == 2
        # their tokens, now digests, still open the door; the hub is still a hub
        auth = {"Authorization": "Token " + base64.b64encode(b"legacy-token-c-1").decode()}
        async with cpo.api.session.get(
            cpo.http_url + "/ocpi/2.2.1/sessions?date_from=2000-01-01T00:00:00Z", headers=auth
        ) as r:
            assert r.status == 200 and (await r.json())["status_code"] == 1000
        rows = await cpo.system.store.read("SELECT token_in FROM ocpi_peers ORDER BY id")
        assert [r["token_in"] for r in rows] == [
            token_digest("legacy-token-c-1"),
            token_digest("legacy-token-c-2"),
        ]
        # the old token A, which grants nothing, registers nobody
        body = {"token": "b", "url": "http://127.0.0.1:9/v", "roles": roles[1]}
        auth = {"Authorization": "Token " + base64.b64encode(b"legacy-token-a").decode()}
        async with cpo.api.session.post(
            cpo.http_url + "/ocpi/2.2.1/credentials", json=body, headers=auth
        ) as r:
            answer = await r.json()
            assert r.status == 403 and answer["status_code"] == 2001, answer
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------------- 2: token uids


async def test_an_emsp_cannot_take_a_uid_another_party_holds(cpo: Running) -> None:
    ems = await peer(party_id="EMS")
    oth = await peer(party_id="OTH")
    try:
        assert (await register(cpo, ems, EMS))["ok"]
        assert (await register(cpo, oth, OTH))["ok"]
        card = "04ABCDEF123456"
        assert (await ems.push_token(token("EMS", card)))["ok"]
        # OTH PUTs the same uid under its own party: refused with the reason, not stored
        put = await oth.push_token(token("OTH", card))
        response = put["response"]
        assert response["status"] == 200 and response["json"]["status_code"] == 2001, response
        assert "already held by another party" in response["json"]["status_message"]
        assert "EMS" not in response["json"]["status_message"]  # whose: not told
        # PATCH cannot take it either (OTH holds no such token)
        patch = await oth.push_token(
            {"valid": True, "last_updated": "2026-01-02T00:00:00Z"},
            method="PATCH",
            uid=card,
            validate=False,
        )
        assert patch["response"]["json"]["status_code"] in (2001, 2004)
        got = await oth.call("GET", module="tokens", path=f"PT/OTH/{card}")
        assert got["response"]["status"] == 404
        # the card's session is EMS's: OTH never sees it
        await cpo.define_station("U1")
        tx = await charge(cpo, "U1", card)
        theirs = await oth.pull("sessions", date_from="2000-01-01T00:00:00Z")
        assert (
            theirs["ok"] and theirs["objects"] == [] and (await oth.pull("cdrs"))["objects"] == []
        )
        mine = await ems.pull("sessions", date_from="2000-01-01T00:00:00Z")
        assert [s["id"] for s in mine["objects"]] == [str(tx)]
        # flagged for the operator
        _, events = await cpo.api.get("/api/v1/ocpi/security-events")
        [event] = events["items"]
        assert event["kind"] == "uid_taken" and card in event["detail"]
        assert "PT/EMS" in event["detail"] and "PT/OTH" in event["detail"]
    finally:
        await ems.stop()
        await oth.stop()


async def test_a_uid_two_parties_hold_already_authorizes_nobody(cpo: Running) -> None:
    """A database from before the rule may hold one uid for two parties: whose card it is
    cannot be told, so it is refused rather than given to either."""
    db = cpo.system.store
    for party in ("EMS", "OTH"):
        body = token(party, "DUPLICATE01")

        async def job(conn: Any, body: dict[str, Any] = body) -> None:
            await conn.execute(
                "INSERT INTO ocpi_tokens VALUES ('PT', ?, 'DUPLICATE01', 'RFID', ?, 1, "
                "'ALWAYS', '2026-01-01T00:00:00Z', NULL)",
                (body["party_id"], json.dumps(body)),
            )

        await db.write(job)
    await cpo.define_station("D1")
    st = Station(
        "D1", cpo.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False)
    )
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.authorize("DUPLICATE01")
        assert answer["idTagInfo"]["status"] == "Invalid", answer
    finally:
        await st.disconnect()


# ---------------------------------------------------------------------------- 12: URLs


class InternalService:
    """What must stay unreachable: a page with a secret on 127.0.0.1."""

    SECRET = "csms_internal_secret_metric 42"

    def __init__(self) -> None:
        self.hits: list[str] = []

    async def __aenter__(self) -> InternalService:
        async def page(request: aiohttp.web.Request) -> aiohttp.web.Response:
            self.hits.append(request.path)
            return aiohttp.web.Response(text=self.SECRET * 20, content_type="text/plain")

        app = aiohttp.web.Application()
        app.router.add_get("/{tail:.*}", page)
        self.runner = aiohttp.web.AppRunner(app)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_registration_never_echoes_what_a_url_answered(cpo: Running) -> None:
    # (the test configuration allows private addresses: the peers here are on 127.0.0.1)
    async with InternalService() as internal:
        for url in (f"http://127.0.0.1:{internal.port}/metrics",):
            status, body = await cpo.api.post(
                "/api/v1/ocpi/register", {"versions_url": url, "token": "x", **EMS}
            )
            assert status == 502 and internal.hits, body
            assert "secret" not in json.dumps(body) and "42" not in body["message"], body
            # a peer registering with such a URL is not told either
            _, a = await token_a(cpo, EMS)
            credentials = {
                "token": "b",
                "url": url,
                "roles": [
                    {
                        "role": "EMSP",
                        "party_id": "EMS",
                        "country_code": "PT",
                        "business_details": {"name": "x"},
                    }
                ],
            }
            async with cpo.api.session.post(
                cpo.http_url + "/ocpi/2.2.1/credentials",
                json=credentials,
                headers={"Authorization": "Token " + base64.b64encode(a.encode()).decode()},
            ) as r:
                text = await r.text()
            assert json.loads(text)["status_code"] == 3001 and "secret" not in text


async def test_private_addresses_are_refused_unless_allowed(tmp_path: Path) -> None:
    system, session, cpo = await start_system(
        tmp_path, ocpi={"allow_private_peer_addresses": False}
    )
    try:
        async with InternalService() as internal:
            for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.0.0.2"):
                url = f"http://{host}:{internal.port}/versions"
                status, body = await cpo.api.post(
                    "/api/v1/ocpi/register", {"versions_url": url, "token": "x", **EMS}
                )
                assert status == 502 and "allow_private_peer_addresses" in body["message"], (
                    host,
                    body,
                )
            _, a = await token_a(cpo, EMS)
            credentials = {
                "token": "b",
                "url": f"http://localhost:{internal.port}/versions",
                "roles": [
                    {
                        "role": "EMSP",
                        "party_id": "EMS",
                        "country_code": "PT",
                        "business_details": {"name": "x"},
                    }
                ],
            }
            async with cpo.api.session.post(
                cpo.http_url + "/ocpi/2.2.1/credentials",
                json=credentials,
                headers={"Authorization": "Token " + base64.b64encode(a.encode()).decode()},
            ) as r:
                answer = await r.json()
            assert answer["status_code"] == 3001, answer
            assert internal.hits == []  # nothing ever reached it
    finally:
        await session.close()
        await system.stop()


async def test_the_connector_checks_every_address_it_connects_to() -> None:
    """Whatever the URL check missed (a redirect to a private address, a name resolving to
    one), the connection itself is refused: no request reaches the service."""
    async with InternalService() as internal:
        async with aiohttp.ClientSession(connector=PublicOnlyConnector()) as s:
            for host in ("127.0.0.1", "localhost", "[::1]"):
                with pytest.raises(aiohttp.ClientConnectorError) as info:
                    await s.get(f"http://{host}:{internal.port}/metrics")
                assert isinstance(info.value.__cause__, PrivateAddressRefused), host
        assert internal.hits == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("224.0.0.1", False),
        ("not-an-address", False),
    ],
)
def test_what_counts_as_a_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# ---------------------------------------------------------------------------- 13: digests


async def test_tokens_we_check_are_stored_as_digests(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, ocpi={})
    ems = await peer(party_id="EMS")
    try:
        versions_url, a = await token_a(cpo, EMS)
        rows = await cpo.system.store.read("SELECT token FROM ocpi_tokens_a")
        assert [r["token"] for r in rows] == [token_digest(a)]
        result = await ems.register_with(versions_url, a)
        c = result["token_c"]
        rows = await cpo.system.store.read("SELECT token_in, token_out FROM ocpi_peers")
        # what it calls us with: a digest; what we call it with: as given (we must send it)
        assert [(r["token_in"], r["token_out"]) for r in rows] == [
            (token_digest(c), result["token_b"])
        ]
        assert (await ems.pull("locations"))["ok"]
        # a database from before: tokens in clear are replaced by their digests at start
        await session.close()
        await system.stop()
        async with dbs.database_at(tmp_path / "data" / "csms.sqlite3").connect() as db:
            await db.execute("UPDATE ocpi_peers SET token_in = ?", (c,))
            await db.execute(
                "INSERT INTO ocpi_tokens_a (token, created_at, role, parties) "
                "VALUES ('clear-token-a-0123456789', '2026-01-01T00:00:00.000000Z', 'EMSP', ?)",
                ('["PT/OTH"]',),
            )
        system, session, cpo = await start_system(tmp_path, ocpi={})
        rows = await cpo.system.store.read("SELECT token_in FROM ocpi_peers")
        assert [r["token_in"] for r in rows] == [token_digest(c)]
        rows = await cpo.system.store.read("SELECT token FROM ocpi_tokens_a ORDER BY token")
        assert sorted(r["token"] for r in rows) == sorted(
            [token_digest(a), token_digest("clear-token-a-0123456789")]
        )
        # C still works (at the restarted server's new port)
        c64 = base64.b64encode(c.encode()).decode()
        async with cpo.api.session.get(
            cpo.http_url + "/ocpi/2.2.1/locations", headers={"Authorization": f"Token {c64}"}
        ) as r:
            assert r.status == 200 and (await r.json())["status_code"] == 1000
        async with cpo.api.session.get(
            cpo.http_url + "/ocpi/versions",
            headers={"Authorization": "Token clear-token-a-0123456789"},
        ) as r:
            assert r.status == 200  # and so does the migrated token A
    finally:
        await ems.stop()
        await session.close()
        await system.stop()


async def test_the_configured_token_a_carries_its_grant(tmp_path: Path) -> None:
    grant = {"token_a": "configured-token-a-0123", "token_a_role": "EMSP"}
    with pytest.raises(ConfigError, match="token_a_parties"):
        await start_system(tmp_path, ocpi=grant)
    system, session, cpo = await start_system(
        tmp_path, ocpi={**grant, "token_a_parties": ["pt/ems"]}
    )
    try:
        rows = await cpo.system.store.read("SELECT token, role, parties FROM ocpi_tokens_a")
        assert rows == [
            {
                "token": token_digest("configured-token-a-0123"),
                "role": "EMSP",
                "parties": '["PT/EMS"]',
            }
        ]
    finally:
        await session.close()
        await system.stop()
