"""OCPI 2.1.1 for partners still on it (issue 19), against the real, independent test peer
(extrawest-ocpi) started with ``--versions 2.1.1`` only, over real HTTP on loopback.

Both handshakes (the peer registers with us; we register with it), its pulls of every Sender
module checked by the library's 2.1.1 models, our pushes (Location, Session, CDR) that its
2.1.1 Receivers accept, its 2.1.1 Tokens authorizing a charge at a simulated station, and a
2.1.1 START_SESSION with its CommandResponse and result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

V = "2.1.1"
# a 2.1.1 Token: auth_id, no country_code / party_id
TOKEN: dict[str, Any] = {
    "uid": "0411AA22BB33CC",
    "type": "RFID",
    "auth_id": "PT-EM1-C-00000001-A",
    "visual_number": "0001",
    "issuer": "eMSP on 2.1.1",
    "valid": True,
    "whitelist": "ALWAYS",
    "last_updated": "2026-01-01T00:00:00Z",
}
TARIFF = {
    "currency": "EUR",
    "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 23, "step_size": 1}]}
    ],
}
GRANT = {"role": "EMSP", "parties": ["PT/EM1"]}


@pytest.fixture
async def cpo(tmp_path: Path) -> AsyncIterator[Running]:
    system, session, running = await start_system(
        tmp_path, ocpi={"session_update_interval": 1, "push_timeout": 3, "command_timeout": 3}
    )
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


@pytest.fixture
async def peer() -> AsyncIterator[EmspPeer]:
    try:
        async with EmspPeer(party_id="EM1", country_code="PT", versions=(V,)) as p:
            yield p
    except PeerVenvMissing as e:
        pytest.fail(str(e))


async def with_tariff(cpo: Running, station_id: str) -> None:
    """Define a station whose connectors all have tariff T-211 (a 2.1.1 connector names
    one; the library requires it)."""
    if (await cpo.api.get("/api/v1/tariffs/T-211"))[0] != 200:
        assert (await cpo.api.put("/api/v1/tariffs/T-211", TARIFF))[0] == 201
    await cpo.define_station(station_id)
    body = (await cpo.api.get(f"/api/v1/stations/{station_id}"))[1]
    definition = {"location": body["location"], "evses": body["evses"]}
    for evse in definition["evses"]:
        for connector in evse["connectors"]:
            connector["tariff_ids"] = ["T-211"]
    assert (await cpo.api.put(f"/api/v1/stations/{station_id}", definition))[0] == 200


async def registered(cpo: Running, peer: EmspPeer) -> dict[str, Any]:
    status, made = await cpo.api.post("/api/v1/ocpi/token-a", GRANT)
    assert status == 201, made
    result = await peer.register_with(made["versions_url"], made["token"], version=V)
    assert result["ok"], result
    return result


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {check.__name__}")
        await asyncio.sleep(0.1)


def sim(cpo: Running, station_id: str) -> Station:
    return Station(
        station_id,
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )


async def charge(cpo: Running, station_id: str, tag: str) -> int:
    """One finished one-hour session of 9 kWh (times in the recent past)."""
    st = sim(cpo, station_id)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def at(minutes: int) -> str:
        return (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    await st.connect()
    try:
        await st.boot_and_report()
        await st.status(1, "Preparing")
        answer = await st.start_transaction(1, tag, meter_start=0, timestamp=at(0))
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
        tx = int(answer["transactionId"])
        await st.status(1, "Charging")
        for i in (1, 2):
            await st.meter_values(1, tx, energy_wh=i * 3000, power_w=7400, timestamp=at(20 * i))
        await st.stop_transaction(tx, meter_stop=9000, reason="Local", timestamp=at(60))
        await st.status(1, "Available")
        return tx
    finally:
        await st.disconnect()


async def our_peer(cpo: Running) -> dict[str, Any]:
    _, peers = await cpo.api.get("/api/v1/ocpi/peers")
    [p] = peers["items"]
    return p


# ---------------------------------------------------------------------------- handshakes


async def test_a_211_peer_registers_with_us(cpo: Running, peer: EmspPeer) -> None:
    result = await registered(cpo, peer)
    # our answer is a 2.1.1 Credentials object, which the library's model accepts
    assert result["validation"]["cpo_credentials"] == [], result["validation"]
    creds = result["cpo_credentials"]
    assert set(creds) == {"token", "url", "business_details", "party_id", "country_code"}
    assert (creds["party_id"], creds["country_code"]) == ("CPO", "PT")
    # we list 2.1.1 and its details have no roles, each module once
    [versions_step, details_step, _] = result["steps"]
    listed = [v["version"] for v in versions_step["response"]["json"]["data"]]
    assert listed == ["2.2.1", "2.2", "2.1.1"]
    endpoints = details_step["response"]["json"]["data"]["endpoints"]
    assert all(set(e) == {"identifier", "url"} for e in endpoints), endpoints
    ids = [e["identifier"] for e in endpoints]
    assert len(ids) == len(set(ids)) and {"credentials", "locations", "tokens"} <= set(ids)
    assert all(e["url"].split("/ocpi/")[1].startswith("2.1.1/") for e in endpoints)
    # before answering, we called its versions and details with its token B in plain text
    details = [r for r in await peer.requests(method="GET") if "/2.1.1/details" in r["path"]]
    assert [r["headers"]["authorization"] for r in details] == ["Token " + result["token_b"]]
    p = await our_peer(cpo)
    assert p["version"] == V and p["initiated_by"] == "peer"
    [role] = p["roles"]  # its one party, with the role the operator granted
    assert (role["role"], role["country_code"], role["party_id"]) == ("EMSP", "PT", "EM1")
    roles = {e["identifier"]: e["role"] for e in p["endpoints"]}
    assert roles["tokens"] == "SENDER" and roles["locations"] == "RECEIVER"
    assert roles["cdrs"] == "RECEIVER" and roles["sessions"] == "RECEIVER"
    # GET credentials answers 2.1.1 too; a 2.2.1-shaped renewal is refused, naming fields
    got = await peer.get_credentials()
    assert got["ok"] and got["response"]["json"]["data"]["party_id"] == "CPO"
    wrong = await peer.renew_credentials(
        roles=[{"role": "EMSP", "party_id": "EM1", "country_code": "PT"}]
    )
    answer = wrong["response"]["json"]
    assert answer["status_code"] == 2001 and "roles" in answer["status_message"], answer
    renewed = await peer.renew_credentials()
    assert renewed["ok"], renewed
    assert (await peer.pull("locations"))["ok"]


async def test_we_register_with_a_211_peer(cpo: Running, peer: EmspPeer) -> None:
    status, body = await cpo.api.post(
        "/api/v1/ocpi/register", {"versions_url": peer.versions_url, "token": peer.token_a, **GRANT}
    )
    assert status == 201, body
    [conn] = (await peer.state())["connections"]
    assert conn["direction"] == "cpo_registered_with_peer" and conn["version"] == V
    # what we POSTed is 2.1.1 Credentials (the library took it with its 2.1.1 model)
    assert set(conn["cpo_credentials"]) == {
        "token",
        "url",
        "business_details",
        "party_id",
        "country_code",
    }
    # functional calls carry the token in plain text: the peer's calls to us work, ours too
    assert (await peer.pull("locations"))["ok"]
    p = await our_peer(cpo)
    assert p["version"] == V and p["initiated_by"] == "us"
    assert p["roles"][0]["role"] == "EMSP" and p["roles"][0]["party_id"].upper() == "EM1"
    await with_tariff(cpo, "WR1")

    async def location_accepted() -> bool:
        puts = [
            r
            for r in await peer.requests(method="PUT")
            if "/2.1.1/locations/" in r["path"] and r["response"]
        ]
        return any(r["response"]["status"] == 200 for r in puts)

    await eventually(location_accepted)
    put = next(r for r in await peer.requests(method="PUT") if "/locations/" in r["path"])
    assert put["headers"]["authorization"] == "Token " + conn["token_in"]


# ---------------------------------------------------------------------------- modules


async def test_the_peer_pulls_every_module_valid_in_211(cpo: Running, peer: EmspPeer) -> None:
    await with_tariff(cpo, "P1")
    await registered(cpo, peer)
    assert (await peer.push_token(TOKEN))["ok"]
    tx = await charge(cpo, "P1", TOKEN["uid"])

    pulled: dict[str, list[dict[str, Any]]] = {}
    for module, params in (
        ("locations", {}),
        ("sessions", {"date_from": "2000-01-01T00:00:00Z"}),
        ("cdrs", {}),
        ("tariffs", {}),
    ):
        got = await peer.pull(module, **params)
        assert got["ok"] and not got["validation_errors"], (module, got["validation_errors"])
        pulled[module] = got["objects"]
    [location] = pulled["locations"]
    assert location["type"] == "ON_STREET" and "country_code" not in location
    assert "publish" not in location and "mobie_voltage_level" not in location
    connector = location["evses"][0]["connectors"][0]
    assert connector["tariff_id"] == "T-211" and "tariff_ids" not in connector
    assert connector["voltage"] == 230 and "max_voltage" not in connector

    [session] = pulled["sessions"]
    assert session["id"] == str(tx) and session["auth_id"] == TOKEN["auth_id"]
    assert session["status"] == "COMPLETED" and session["kwh"] == 9.0
    assert "start_datetime" in session and "end_datetime" in session
    assert "cdr_token" not in session and "location_id" not in session
    [evse] = session["location"]["evses"]
    assert evse["uid"] == "LOC-P1-01" and [c["id"] for c in evse["connectors"]] == ["1"]

    [cdr] = pulled["cdrs"]
    assert cdr["auth_id"] == TOKEN["auth_id"] and cdr["stop_date_time"] == cdr["end_date_time"]
    assert cdr["total_cost"] == 2.25 and cdr["total_energy"] == 9.0
    assert [t["id"] for t in cdr["tariffs"]] == ["T-211"]
    assert cdr["location"]["id"] == "LOC-P1" and len(cdr["location"]["evses"]) == 1

    [tariff] = pulled["tariffs"]
    assert tariff["id"] == "T-211" and "party_id" not in tariff and "type" not in tariff
    assert tariff["elements"][0]["price_components"] == [
        {"type": "ENERGY", "price": 0.25, "step_size": 1}
    ]
    # one CDR, one Location, one EVSE, one connector by id
    got = await peer.call("GET", module="cdrs", path=str(tx))
    assert got["response"]["json"]["data"]["auth_id"] == TOKEN["auth_id"]
    got = await peer.call("GET", module="locations", path="LOC-P1/LOC-P1-01/1")
    assert got["response"]["json"]["data"]["tariff_id"] == "T-211"
    got = await peer.call("GET", module="locations", path="LOC-P1/LOC-P1-02")
    assert got["response"]["json"]["data"]["connectors"][0]["voltage"] == 230


async def test_pushes_are_211_objects_the_peer_accepts(cpo: Running, peer: EmspPeer) -> None:
    await with_tariff(cpo, "PU1")
    await registered(cpo, peer)
    assert (await peer.push_token(TOKEN))["ok"]
    tx = await charge(cpo, "PU1", TOKEN["uid"])

    async def arrived() -> bool:
        return (
            await peer.object("locations", "LOC-PU1") is not None
            and await peer.object("sessions", str(tx)) is not None
            and await peer.object("cdrs", str(tx)) is not None
        )

    await eventually(arrived, timeout=15)
    sent = [
        r
        for r in await peer.requests()
        if r["method"] in ("PUT", "PATCH", "POST") and r["response"]
    ]
    modules = {r["path"].split("/2.1.1/")[1].split("/")[0] for r in sent if "/2.1.1/" in r["path"]}
    assert {"locations", "sessions", "cdrs"} <= modules
    # every push was taken by the library's 2.1.1 models (no 422) with OCPI 1000
    for r in sent:
        assert r["response"]["status"] in (200, 201), (r["path"], r["response"])
        assert r["response"]["body"]["status_code"] == 1000, (r["path"], r["response"])
    location = await peer.object("locations", "LOC-PU1")
    assert location is not None and location["type"] == "ON_STREET"
    session = await peer.object("sessions", str(tx))
    assert session is not None and session["auth_id"].upper() == TOKEN["auth_id"].upper()
    assert session["location"]["evses"][0]["uid"].upper() == "LOC-PU1-01"
    cdr = await peer.object("cdrs", str(tx))
    assert cdr is not None and cdr["total_cost"] == 2.25
    session_puts = [r for r in sent if "/sessions/" in r["path"] and r["method"] == "PUT"]
    assert all("cdr_token" not in r["body"] and "location" in r["body"] for r in session_puts)
    cdr_post = next(r for r in sent if "/cdrs" in r["path"])
    assert cdr_post["body"]["stop_date_time"] and "cdr_location" not in cdr_post["body"]


# ---------------------------------------------------------------------------- tokens


async def test_211_tokens_authorize_a_charge(cpo: Running, peer: EmspPeer) -> None:
    await with_tariff(cpo, "T1")
    await registered(cpo, peer)
    put = await peer.push_token(TOKEN)
    assert put["ok"] and put["response"]["status"] == 201, put
    # GET (no ?type in 2.1.1) answers the 2.1.1 Token
    got = await peer.call("GET", module="tokens", path="PT/EM1/" + TOKEN["uid"])
    assert got["response"]["json"]["data"] == TOKEN
    blocked = {**TOKEN, "uid": "0411AA22BB33DD", "auth_id": "PT-EM1-C-00000002-B"}
    assert (await peer.push_token(blocked))["ok"]
    st = sim(cpo, "T1")
    await st.connect()
    try:
        await st.boot_and_report()
        status = (await st.authorize(TOKEN["uid"]))["idTagInfo"]["status"]
        assert status == "Accepted"
        # a 2.1.1 PATCH without ?type finds the token and blocks it
        patch = await peer.call(
            "PATCH",
            module="tokens",
            path="PT/EM1/" + blocked["uid"],
            json_body={"valid": False, "last_updated": "2026-02-01T00:00:00Z"},
        )
        assert patch["response"]["json"]["status_code"] == 1000, patch["response"]
        status = (await st.authorize(blocked["uid"]))["idTagInfo"]["status"]
        assert status == "Blocked"
        answer = await st.start_charging(1, TOKEN["uid"])
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"
    finally:
        await st.disconnect()
    _, tx = await cpo.api.get(f"/api/v1/transactions/{answer['transactionId']}")
    assert tx["tag_owner"] == "PT/EM1"


async def test_hostile_211_tokens_get_2001(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    cases = [
        ({**TOKEN, "auth_id": 12345}, "auth_id"),
        ({k: v for k, v in TOKEN.items() if k != "auth_id"}, "auth_id"),
        ({**TOKEN, "contract_id": "X"}, "contract_id"),  # a 2.2.1 field
        ({**TOKEN, "auth_id": "A" * 37}, "auth_id"),
        ({**TOKEN, "type": "APP_USER"}, "type"),
        ({**TOKEN, "last_updated": "yesterday"}, "last_updated"),
    ]
    for body, field in cases:
        result = await peer.push_token(body, validate=False)
        answer = result["response"]["json"]
        assert result["response"]["status"] < 500, (field, result["response"])
        assert answer["status_code"] == 2001 and field in answer["status_message"], (field, answer)
    long_uid = await peer.push_token({**TOKEN, "uid": "U" * 37}, validate=False)
    assert long_uid["response"]["json"]["status_code"] == 2001
    # a 2.2-style party in the body must be the URL's
    other = await peer.call(
        "PUT",
        module="tokens",
        path="PT/EM1/" + TOKEN["uid"],
        json_body={**TOKEN, "country_code": "PT", "party_id": "OTH"},
    )
    answer = other["response"]["json"]
    assert answer["status_code"] == 2001 and "party_id" in answer["status_message"], answer
    for not_an_object in ([TOKEN], "token", None):
        odd = await peer.call(
            "PUT", module="tokens", path="PT/EM1/" + TOKEN["uid"], json_body=not_an_object
        )
        assert odd["response"]["status"] < 500, (not_an_object, odd["response"])
    nothing = await peer.call("GET", module="tokens", path="PT/EM1/" + TOKEN["uid"])
    assert nothing["response"]["json"]["status_code"] == 2004


# ---------------------------------------------------------------------------- commands


async def test_211_start_session_and_its_result(cpo: Running, peer: EmspPeer) -> None:
    await with_tariff(cpo, "C1")
    await registered(cpo, peer)
    assert (await peer.push_token(TOKEN))["ok"]
    st = sim(cpo, "C1")
    await st.connect()
    try:
        await st.boot_and_report()
        body = {"token": TOKEN, "location_id": "LOC-C1", "evse_uid": "LOC-C1-01"}
        sent = await peer.send_command("START_SESSION", body)
        assert sent["ok"] and sent["validation"] == [], sent
        assert sent["command_response"] == {"result": "ACCEPTED"}
        result = await peer.wait_for_command_result(sent["uid"], timeout=10)
        assert result["raw"] == {"result": "ACCEPTED"}
        [start] = [p for name, p in st.calls_received if name == "RemoteStartTransaction"]
        assert start["idTag"] == TOKEN["uid"]
        # a token that is not the stored one: REJECTED; a body of 2.2.1's shape: 2001
        other = {**body, "token": {**TOKEN, "auth_id": "PT-EM1-C-99999999-Z"}}
        refused = await peer.send_command("START_SESSION", other)
        assert refused["command_response"] == {"result": "REJECTED"}
        wrong = await peer.send_command(
            "START_SESSION",
            {**body, "token": {**TOKEN, "country_code": "PT", "party_id": "OTH"}},
            validate=False,
        )
        assert wrong["exchange"]["response"]["json"]["status_code"] == 2001
        cancel = await peer.send_command(
            "CANCEL_RESERVATION", {"reservation_id": "1"}, validate=False
        )
        assert cancel["exchange"]["response"]["status"] == 404
        # STOP_SESSION of an unknown session: UNKNOWN_SESSION, in 2.1.1's shape
        stop = await peer.send_command("STOP_SESSION", {"session_id": "999999"})
        assert stop["command_response"] == {"result": "UNKNOWN_SESSION"}
    finally:
        await st.disconnect()


async def test_an_active_session_is_patched_in_211(cpo: Running, peer: EmspPeer) -> None:
    await with_tariff(cpo, "A1")
    await registered(cpo, peer)
    assert (await peer.push_token(TOKEN))["ok"]
    st = sim(cpo, "A1")
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_charging(1, TOKEN["uid"])
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
        tx = int(answer["transactionId"])

        async def patched() -> list[dict[str, Any]]:
            # (one that carries energy: under load, the first PATCH may precede it)
            return [
                r
                for r in await peer.requests(method="PATCH")
                if f"/2.1.1/sessions/PT/CPO/{tx}" in r["path"]
                and r["response"]
                and (r["body"] or {}).get("kwh", 0) > 0
            ]

        for i in range(1, 40):
            await st.meter_values(1, tx, energy_wh=i * 500, power_w=7400)
            if await patched():
                break
            await asyncio.sleep(0.25)
        [patch, *_] = await eventually(patched)
        await st.stop_charging(1)
    finally:
        await st.disconnect()
    # the library's 2.1.1 SessionPartialUpdate took it: no 2.2.1-only field or dimension
    assert patch["response"]["status"] == 200, patch["response"]
    assert patch["response"]["body"]["status_code"] == 1000
    assert "kwh" in patch["body"] and "cdr_token" not in patch["body"]
    for period in patch["body"].get("charging_periods", []):
        assert {d["type"] for d in period["dimensions"]} <= {"ENERGY", "TIME", "PARKING_TIME"}
    session = await peer.object("sessions", str(tx))
    assert session is not None and session["kwh"] > 0


async def test_hostile_211_command_bodies(cpo: Running, peer: EmspPeer) -> None:
    await registered(cpo, peer)
    bodies: list[Any] = [
        [1, 2],
        "START",
        {"token": "x", "location_id": "L", "response_url": "http://127.0.0.1:9/r"},
        {"token": {**TOKEN, "uid": "U" * 40}, "location_id": "L", "response_url": "http://a/b"},
        {"token": TOKEN, "location_id": "L" * 100, "response_url": "http://a/b"},
    ]
    for body in bodies:
        got = await peer.call("POST", module="commands", path="START_SESSION", json_body=body)
        assert got["response"]["status"] < 500, (body, got["response"])
        assert got["response"]["json"]["status_code"] == 2001, (body, got["response"])
    reserve = {
        "token": TOKEN,
        "location_id": "L",
        "response_url": "http://a/b",
        "expiry_date": "2026-01-01T00:00:00Z",
        "reservation_id": "not a number",
    }
    got = await peer.call("POST", module="commands", path="RESERVE_NOW", json_body=reserve)
    assert got["response"]["json"]["status_code"] == 2001, got["response"]
    assert "reservation_id" in got["response"]["json"]["status_message"]
