"""Roaming without a central hub (issue 19): three peers at once against the real server.

MOBI.E as the hub (MOBI.E mode), eMSP A (PT/EMA, OCPI 2.2.1) and eMSP B (PT/EMB, still on
OCPI 2.1.1): each is
the real, independent OCPI test peer (extrawest-ocpi) in its own process. Asserted per
object: every peer gets the Locations it may see (A has one hidden), Sessions and CDRs go
to the token's owner and to MOBI.E, never to the other eMSP; a peer uses only the modules
the operator opened to it; a suspended peer is refused and gets nothing until resumed,
then what it missed; a peer that is down does not delay the others; hubclientinfo is
taken from the hub only; tariffs reach each peer (a private replacement only its peer,
also on its Locations' connectors; MOBI.E none pushed); real-time authorization accepts,
refuses, times out without waiting for the slow eMSP, caches, and never asks MOBI.E.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

TARIFF = {
    "currency": "EUR",
    "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 23, "step_size": 1}]}
    ],
}


def token_211(party: str, uid: str) -> dict[str, Any]:
    """A 2.1.1 Token: auth_id, no country_code / party_id (the URL's)."""
    return {
        "uid": uid,
        "type": "RFID",
        "auth_id": f"PT-{party}-C-{uid[-8:]}-X",
        "issuer": f"eMSP {party}",
        "valid": True,
        "whitelist": "ALWAYS",
        "last_updated": "2026-01-01T00:00:00Z",
    }


def token(party: str, uid: str) -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": party,
        "uid": uid,
        "type": "RFID",
        "contract_id": f"PT-{party}-C-{uid[-8:]}-X",
        "issuer": f"eMSP {party}",
        "valid": True,
        "whitelist": "ALWAYS",
        "last_updated": "2026-01-01T00:00:00Z",
    }


async def define(cpo: Running, station_id: str) -> None:
    """A station whose connectors have our tariff STD (every public charger shows its price;
    and the 2.1.1 peer's library requires a connector's tariff_id)."""
    await cpo.define_station(station_id)
    body = (await cpo.api.get(f"/api/v1/stations/{station_id}"))[1]
    definition = {"location": body["location"], "evses": body["evses"]}
    for evse in definition["evses"]:
        for connector in evse["connectors"]:
            connector["tariff_ids"] = ["STD"]
    assert (await cpo.api.put(f"/api/v1/stations/{station_id}", definition))[0] == 200


@dataclass
class World:
    cpo: Running
    hub: EmspPeer
    a: EmspPeer
    b: EmspPeer
    ids: dict[str, int]  # peer name -> our peer id


async def connect(cpo: Running, peer: EmspPeer, policy: dict[str, Any] | None = None) -> int:
    body = {**peer.grant, **({"policy": policy} if policy else {})}
    status, made = await cpo.api.post("/api/v1/ocpi/token-a", body)
    assert status == 201, made
    result = await peer.register_with(made["versions_url"], made["token"])
    assert result["ok"], result
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    party = f"{peer.country_code}/{peer.party_id}"
    [ours] = [p for p in peers["items"] if party in p["granted"]["parties"]]
    return int(ours["id"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    system, session, cpo = await start_system(
        tmp_path,
        ocpi={
            "offline_after": 30,
            "session_update_interval": 1,
            "push_timeout": 3,
            "realtime_auth_timeout": 2,
        },
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            hub = await stack.enter_async_context(
                EmspPeer(party_id="MOB", country_code="PT", role="HUB")
            )
            a = await stack.enter_async_context(EmspPeer(party_id="EMA", country_code="PT"))
            b = await stack.enter_async_context(
                EmspPeer(party_id="EMB", country_code="PT", versions=("2.1.1",))
            )
            assert (await cpo.api.put("/api/v1/tariffs/STD", TARIFF))[0] in (200, 201)
            # two stations; the second's Location is hidden from eMSP A
            await define(cpo, "RS1")
            await define(cpo, "RS2")
            ids = {
                "hub": await connect(cpo, hub),
                "a": await connect(cpo, a, {"name": "eMSP A", "hidden": ["LOC-RS2"]}),
                "b": await connect(cpo, b, {"name": "eMSP B"}),
            }
            yield World(cpo, hub, a, b, ids)
    except PeerVenvMissing as e:
        pytest.fail(str(e))
    finally:
        await session.close()
        await system.stop()


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Poll ``check`` (an async callable returning a truthy value when done), bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {check.__name__}")
        await asyncio.sleep(0.1)


async def pushed(peer: EmspPeer, module: str) -> list[dict[str, Any]]:
    return [
        r
        for r in await peer.requests()
        if r["method"] in ("PUT", "PATCH", "POST") and f"/{module}" in r["path"]
    ]


async def session_ids(peer: EmspPeer) -> set[str]:
    return {str(r["path"].rstrip("/").rsplit("/", 1)[1]) for r in await pushed(peer, "sessions")}


async def cdr_sessions(peer: EmspPeer) -> set[str]:
    # (a 2.1.1 CDR has no session_id: our CDR's id is the session's)
    return {str(r["body"].get("session_id", r["body"]["id"])) for r in await pushed(peer, "cdrs")}


async def location_ids(peer: EmspPeer) -> set[str]:
    out = set()
    for r in await pushed(peer, "locations"):
        parts = r["path"].rstrip("/").split("/locations/", 1)[1].split("/")
        out.add(parts[2].upper())
    return out


async def charge(cpo: Running, station_id: str, tag: str) -> int:
    st = Station(
        station_id,
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_charging(1, tag)
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
        tx = int(answer["transactionId"])
        await st.meter_values(1, tx, energy_wh=2500, power_w=7400)
        await st.stop_charging(1)
        return tx
    finally:
        await st.disconnect()


async def test_each_peer_sees_exactly_what_it_should(world: World) -> None:
    cpo, hub, a, b = world.cpo, world.hub, world.a, world.b
    assert (await a.push_token(token("EMA", "A0000001")))["ok"]
    assert (await b.push_token(token_211("EMB", "B0000001")))["ok"]
    await cpo.put_tag("LOCALTAG")
    tx_a = await charge(cpo, "RS1", "A0000001")
    tx_b = await charge(cpo, "RS2", "B0000001")
    tx_local = await charge(cpo, "RS1", "LOCALTAG")
    every = {str(tx_a), str(tx_b), str(tx_local)}

    async def all_cdrs_at_hub() -> bool:
        return await cdr_sessions(hub) == every

    await eventually(all_cdrs_at_hub)

    async def cdrs_at_emsps() -> bool:
        return await cdr_sessions(a) == {str(tx_a)} and await cdr_sessions(b) == {str(tx_b)}

    await eventually(cdrs_at_emsps)
    # sessions: MOBI.E all of them, each eMSP its own only (asserted per object)
    assert await session_ids(hub) == every
    assert await session_ids(a) == {str(tx_a)}
    assert await session_ids(b) == {str(tx_b)}
    # Locations: the hub and B both, A never the hidden one (nor a PATCH of its EVSEs)
    assert await location_ids(hub) == {"LOC-RS1", "LOC-RS2"}
    assert await location_ids(b) == {"LOC-RS1", "LOC-RS2"}
    assert await location_ids(a) == {"LOC-RS1"}
    # MOBI.E's profile for MOBI.E only: its extensions, plain OCPI for the eMSPs
    for peer, mobie in ((hub, True), (a, False), (b, False)):
        puts = [r["body"] for r in await pushed(peer, "locations") if r["method"] == "PUT"]
        assert puts and all(("mobie_voltage_level" in p) == mobie for p in puts), puts
        cdrs = [r["body"] for r in await pushed(peer, "cdrs")]
        places = [c.get("cdr_location", c.get("location")) for c in cdrs]  # (2.1.1: location)
        assert places and all(("mobie_voltage_level" in p) == mobie for p in places), cdrs
    # eMSP B got OCPI 2.1.1 objects: auth_id, a Location type, its Location in the CDR
    [cdr_b] = [r["body"] for r in await pushed(b, "cdrs")]
    assert cdr_b["auth_id"] == "PT-EMB-C-B0000001-X" and "cdr_token" not in cdr_b
    assert all("type" in r["body"] for r in await pushed(b, "locations") if r["method"] == "PUT")
    # pulled: the same, per peer
    for peer, locations, sessions in (
        (hub, {"LOC-RS1", "LOC-RS2"}, every),
        (a, {"LOC-RS1"}, {str(tx_a)}),
        (b, {"LOC-RS1", "LOC-RS2"}, {str(tx_b)}),
    ):
        got = await peer.pull("locations")
        assert got["ok"] and not got["validation_errors"], got
        assert {o["id"].upper() for o in got["objects"]} == locations
        got = await peer.pull("sessions", date_from="2000-01-01T00:00:00Z")
        assert {str(o["id"]) for o in got["objects"]} == sessions
        got = await peer.pull("cdrs")
        assert {str(o.get("session_id", o["id"])) for o in got["objects"]} == sessions
    hidden = await a.call("GET", module="locations", path="LOC-RS2")
    assert hidden["response"]["status"] == 404, hidden
    seen = await b.call("GET", module="locations", path="LOC-RS2")
    assert seen["response"]["status"] == 200, seen


async def test_modules_suspension_and_removal_are_the_operators(world: World) -> None:
    cpo, a, b = world.cpo, world.a, world.b
    # the operator closes commands to eMSP A: refused, B still may
    status, body = await cpo.api.request(
        "PATCH",
        f"/api/v1/ocpi/peers/{world.ids['a']}",
        {"uses": ["locations", "sessions", "cdrs", "tariffs", "tokens"]},
    )
    assert status == 200, body
    start = {
        "response_url": "http://127.0.0.1:9/none",
        "token": token("EMA", "A0000002"),
        "location_id": "LOC-RS1",
        "evse_uid": "LOC-RS1-01",
    }
    refused = await a.call("POST", module="commands", path="START_SESSION", json_body=start)
    assert refused["response"]["status"] == 403, refused
    # suspended: refused, and nothing pushed to it meanwhile
    assert (await cpo.api.post(f"/api/v1/ocpi/peers/{world.ids['b']}/suspend", {}))[0] == 200
    got = await b.call("GET", module="locations")
    assert got["response"]["status"] == 403, got
    await b.clear_requests()
    await define(cpo, "RS3")

    async def at_a() -> bool:
        return "LOC-RS3" in await location_ids(a)

    await eventually(at_a)
    await asyncio.sleep(0.5)
    assert "LOC-RS3" not in await location_ids(b)
    # resumed: it gets what it missed
    assert (await cpo.api.post(f"/api/v1/ocpi/peers/{world.ids['b']}/resume", {}))[0] == 200

    async def at_b() -> bool:
        return "LOC-RS3" in await location_ids(b)

    await eventually(at_b)
    ok = await b.call("GET", module="locations")
    assert ok["response"]["status"] == 200


async def test_a_peer_that_is_down_does_not_delay_the_others(world: World) -> None:
    cpo, hub, a, b = world.cpo, world.hub, world.a, world.b
    await a.stop()  # eMSP A is gone: its pushes fail (connection refused), again and again
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(4, 9):
        await define(cpo, f"RS{n}")
    wanted = {f"LOC-RS{n}" for n in range(4, 9)}

    async def others_have_them() -> bool:
        return wanted <= await location_ids(hub) and wanted <= await location_ids(b)

    await eventually(others_have_them, timeout=10)
    took = loop.time() - began
    # a push to a peer that is down fails at once here; the others never wait for it
    assert took < 5, took
    _, pending = await cpo.api.get("/api/v1/ocpi/pushes")
    mine = [p for p in pending["items"] if p["peer_id"] == world.ids["a"]]
    assert mine and all(p["failing_since"] for p in mine), pending
    # MOBI.E's rules are measured for MOBI.E: A's failures are not MOBI.E's compliance
    stations = {f"RS{n}" for n in range(4, 9)}

    async def measured() -> list[dict[str, Any]]:
        # (the hub has a push a moment before we have its answer, and measure it)
        _, report = await cpo.api.get("/api/v1/ocpi/compliance")
        new = [i for i in report["items"] if i["id"] in stations]
        return new if {i["id"] for i in new if i["rule"] == "R1"} == stations else []

    new = await eventually(measured)
    assert all(i["failed_pushes"] == 0 and i["late"] == 0 for i in new), new


async def test_hubclientinfo_from_the_hub_only(world: World) -> None:
    hub, a = world.hub, world.a
    info = {
        "party_id": "XYZ",
        "country_code": "ES",
        "role": "EMSP",
        "status": "CONNECTED",
        "last_updated": "2026-12-01T10:00:00Z",
    }
    # MOBI.E's profile has no hubclientinfo: the operator opens it to this hub
    status, body = await world.cpo.api.request(
        "PATCH",
        f"/api/v1/ocpi/peers/{world.ids['hub']}",
        {
            "uses": [
                "locations",
                "sessions",
                "cdrs",
                "tariffs",
                "tokens",
                "commands",
                "hubclientinfo",
            ]
        },
    )
    assert status == 200, body
    hub_ids = await _hub_clientinfo_url(world)
    put = await hub.call("PUT", url=f"{hub_ids}/ES/XYZ", json_body=info, routing=False)
    assert put["response"]["status"] == 201, put
    again = await hub.call(
        "PUT", url=f"{hub_ids}/ES/XYZ", json_body={**info, "status": "OFFLINE"}, routing=False
    )
    assert again["response"]["status"] == 200, again
    got = await hub.call("GET", url=f"{hub_ids}/ES/XYZ", routing=False)
    assert got["response"]["json"]["data"]["status"] == "OFFLINE", got
    # an eMSP may not use it; a bad ClientInfo is a clear 2001
    refused = await a.call("PUT", url=f"{hub_ids}/ES/XYZ", json_body=info, routing=False)
    assert refused["response"]["status"] == 403, refused
    for bad in (
        {**info, "status": "HAPPY"},
        {**info, "party_id": "OTHER"},
        {**info, "last_updated": 5},
        [info],
        {k: v for k, v in info.items() if k != "role"},
    ):
        got = await hub.call("PUT", url=f"{hub_ids}/ES/XYZ", json_body=bad, routing=False)
        assert got["response"]["json"]["status_code"] == 2001, (bad, got)
    # nothing of those was kept
    got = await hub.call("GET", url=f"{hub_ids}/ES/XYZ", routing=False)
    assert got["response"]["json"]["data"]["status"] == "OFFLINE", got


async def _hub_clientinfo_url(world: World) -> str:
    """hubclientinfo as our version details list it to the hub (and not to an eMSP)."""
    listed: dict[str, dict[str, str]] = {}
    for name, peer in (("hub", world.hub), ("a", world.a)):
        got = await peer.call("GET", url=f"{world.cpo.http_url}/ocpi/2.2.1", routing=False)
        endpoints = got["response"]["json"]["data"]["endpoints"]
        listed[name] = {e["identifier"]: e["url"] for e in endpoints}
    assert "hubclientinfo" not in listed["a"]
    return listed["hub"]["hubclientinfo"].rstrip("/")


async def tariff_ids_at(peer: EmspPeer) -> set[str]:
    """The ids of our tariffs the peer holds: PUT and not DELETEd since."""
    out: dict[str, str] = {}
    for r in await peer.requests(path="/tariffs/"):
        if r["method"] in ("PUT", "DELETE"):
            out[r["path"].rstrip("/").rsplit("/", 1)[1].upper()] = r["method"]
    return {t for t, m in out.items() if m == "PUT"}


async def test_tariffs_and_real_time_authorization_with_three_peers(world: World) -> None:
    cpo, hub, a, b = world.cpo, world.hub, world.a, world.b
    # eMSP A has its own price: our STD is PARTNER-A for it (private: nobody else sees it;
    # the replacement is named first, so PARTNER-A is private from the moment it exists)
    status, body = await cpo.api.request(
        "PATCH", f"/api/v1/ocpi/peers/{world.ids['a']}", {"tariffs": {"STD": "PARTNER-A"}}
    )
    assert status == 200, body
    assert (await cpo.api.put("/api/v1/tariffs/PARTNER-A", TARIFF))[0] in (200, 201)

    async def tariffs_placed() -> bool:
        return await tariff_ids_at(a) == {"STD", "PARTNER-A"} and await tariff_ids_at(b) == {"STD"}

    await eventually(tariffs_placed)
    assert not [r for r in await b.requests(path="PARTNER-A")]  # never, not even once
    assert await tariff_ids_at(hub) == set()  # MOBI.E's profile: it GETs tariffs, not pushed
    got = await hub.pull("tariffs")
    assert {t["id"].upper() for t in got["objects"]} == {"STD"}
    puts_b = [r["body"] for r in await pushed(b, "tariffs")]
    assert puts_b and all("country_code" not in t for t in puts_b)  # (2.1.1 Tariffs)

    # A's Locations are pushed again with its own tariff on every connector
    async def a_has_its_price() -> bool:
        puts = [r["body"] for r in await pushed(a, "locations") if r["method"] == "PUT"]
        latest = {p["id"]: p for p in puts}
        return latest.get("LOC-RS1") is not None and all(
            c["tariff_ids"] == ["PARTNER-A"]
            for e in latest["LOC-RS1"]["evses"]
            for c in e["connectors"]
        )

    await eventually(a_has_its_price)
    hub_puts = [r["body"] for r in await pushed(hub, "locations") if r["method"] == "PUT"]
    assert all(
        c["tariff_ids"] == ["STD"] for p in hub_puts for e in p["evses"] for c in e["connectors"]
    )

    # a card no eMSP pushed: A answers ALLOWED, B does not know it; MOBI.E is never asked
    await a.control("POST", "authorize", {"CARD0001": {"allowed": "ALLOWED"}})
    await b.control("POST", "authorize", {"CARD0001": {"allowed": "NOT_ALLOWED"}})
    await a.control("POST", "authorize", {"CARD0002": {"allowed": "BLOCKED"}})
    await b.control("POST", "authorize", {"CARD0003": {"allowed": "ALLOWED", "delay_s": 30}})
    st = Station("RS1", cpo.ocpp_url, 2, behaviour=Behaviour(auto_heartbeat=False))
    await st.connect()
    try:
        await st.boot_and_report()
        assert (await st.authorize("CARD0001"))["idTagInfo"]["status"] == "Accepted"
        assert (await st.authorize("CARD0002"))["idTagInfo"]["status"] == "Blocked"
        # B is slower than the timeout (2 s here): refused, without waiting for B
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert (await st.authorize("CARD0003"))["idTagInfo"]["status"] == "Invalid"
        assert loop.time() - began < 10
        asks_a = len(await a.requests(method="POST", path="authorize"))
        # cached: asked again within the cache time, A is not asked again
        assert (await st.authorize("CARD0001"))["idTagInfo"]["status"] == "Accepted"
        assert len(await a.requests(method="POST", path="authorize")) == asks_a
    finally:
        await st.disconnect()
    assert not await hub.requests(method="POST", path="authorize")
