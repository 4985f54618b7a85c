"""Smart charging end to end over real sockets (issue 18): charging profiles through the
API, checked against what the station supports, re-applied after a reboot, a reconnection
and a csms restart; sites that share their connection among their transactions, with a
safe default on every station; the API's refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system, station_body
from tests.test_push_faults import eventually

SMART = {"check_seconds": 3600, "recompute_seconds": 0}


@dataclass
class Net:
    cpo: Running
    system: Any
    session: aiohttp.ClientSession
    stations: dict[str, Station]
    service: Any


def behaviour(**extra: Any) -> Behaviour:
    return Behaviour(auto_heartbeat=False, auto_meter_values=False, charge_power_w=11000.0, **extra)


async def open_net(tmp_path: Path, ids: list[str], connectors: int = 1, **extra: Any) -> Net:
    system, session, cpo = await start_system(tmp_path, smart={**SMART, **extra})
    stations = {}
    for sid in ids:
        status, body = await cpo.api.put(f"/api/v1/stations/{sid}", station_body(sid, connectors))
        assert status in (200, 201), body
        st = Station(sid, cpo.ocpp_url, connectors, behaviour=behaviour())
        await st.connect()
        await st.boot_and_report()
        stations[sid] = st
    ext = next(e for e in system.extensions if e.name == "smart")
    return Net(cpo, system, session, stations, ext.service)


async def close(net: Net) -> None:
    for st in net.stations.values():
        await st.disconnect()
    await net.session.close()
    await net.system.stop()


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    n = await open_net(tmp_path, ["SC1"], connectors=2)
    yield n
    await close(n)


def cpmax(limit: float, pid: int = 1, unit: str = "A", stack: int = 0) -> dict[str, Any]:
    return {
        "id": pid,
        "stack_level": stack,
        "purpose": "ChargePointMaxProfile",
        "kind": "Relative",
        "schedule": {
            "charging_rate_unit": unit,
            "periods": [{"start_period": 0, "limit": limit}],
        },
    }


def held(st: Station) -> dict[int, dict[str, Any]]:
    return dict(st.charging_profiles)


# ------------------------------------------------------------------------ profiles


async def test_profiles_set_checked_cleared(net: Net) -> None:
    api, st = net.cpo.api, net.stations["SC1"]
    status, row = await api.post(
        "/api/v1/smart/stations/SC1/profiles", {"connector_id": 0, "profile": cpmax(16)}
    )
    assert status == 200 and row["state"] == "installed", row
    assert set(held(st)) == {1}
    status, listed = await api.get("/api/v1/smart/stations/SC1/profiles")
    assert status == 200 and [p["profile_id"] for p in listed["items"]] == [1]
    # what the station says it applies matches what csms expects
    status, comp = await api.get("/api/v1/smart/stations/SC1/composite?connector=1&duration=3600")
    assert status == 200, comp
    assert comp["expected"] == [{"start_period": 0, "limit": 16.0}]
    assert comp["matches"] is True, comp
    # refused before anything is sent: what the station would reject
    refusals = [
        ({"connector_id": 1, "profile": cpmax(16, pid=2)}, "connector 0"),  # CPMax on 1
        ({"connector_id": 0, "profile": cpmax(16, pid=2, stack=99)}, "stack level"),
        ({"connector_id": 0, "profile": {**cpmax(16, pid=2), "kind": "Nope"}}, "profile"),
        ({"connector_id": 0, "profile": cpmax(16, pid=800_000)}, "799999"),
        ({"connector_id": 1, "profile": {**cpmax(16, pid=3), "purpose": "TxProfile"}}, "trans"),
        ({"connector_id": 0}, "connector_id"),
        ({"connector_id": "0", "profile": cpmax(16)}, "connector_id"),
    ]
    for body, words in refusals:
        status, answer = await api.post("/api/v1/smart/stations/SC1/profiles", body)
        assert status == 422, (body, answer)
        assert words.lower() in str(answer).lower(), (words, answer)
    status, _ = await api.post(
        "/api/v1/smart/stations/NOPE/profiles", {"connector_id": 0, "profile": cpmax(1)}
    )
    assert status == 404
    assert set(held(st)) == {1}  # nothing else reached the station
    # cleared
    status, answer = await api.request("DELETE", "/api/v1/smart/stations/SC1/profiles/1")
    assert status == 200 and answer["station"] == "Accepted", answer
    assert 1 not in held(st)
    status, _ = await api.request("DELETE", "/api/v1/smart/stations/SC1/profiles/1")
    assert status == 404
    status, _ = await api.request("DELETE", "/api/v1/smart/stations/SC1/profiles/%C2%B2")
    assert status == 404  # a Unicode digit is not a number here
    status, _ = await api.put("/api/v1/smart/sites/abc%0A", {"rules": {"limit": 1, "unit": "A"}})
    assert status == 404  # nor is an id with a line break
    # cleared while the station is away: it is cleared when the station comes back
    status, row = await api.post(
        "/api/v1/smart/stations/SC1/profiles", {"connector_id": 0, "profile": cpmax(10, pid=4)}
    )
    assert status == 200 and 4 in held(st)
    await st.disconnect()
    await eventually(lambda: not net.system.port.is_connected("SC1"))
    status, answer = await api.request("DELETE", "/api/v1/smart/stations/SC1/profiles/4")
    assert status == 200 and answer["station"].startswith("not connected"), answer
    assert 4 in held(st)
    await st.connect()
    await st.boot_and_report()
    await eventually(lambda: 4 not in held(st))
    status, listed = await api.get("/api/v1/smart/stations/SC1/profiles")
    assert listed["items"] == []


async def test_a_station_that_takes_watts_only(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, smart=SMART)
    status, _ = await cpo.api.put("/api/v1/stations/SW1", station_body("SW1", 1))
    assert status == 201
    st = Station(
        "SW1",
        cpo.ocpp_url,
        1,
        behaviour=behaviour(),
        config={
            "ChargingScheduleAllowedChargingRateUnit": "Power",
            "ChargeProfileMaxStackLevel": "3",
        },
    )
    try:
        await st.connect()
        await st.boot_and_report()

        async def known() -> bool:
            snap = await system.port.station("SW1")
            return snap is not None and snap.config_snapshot is not None

        await eventually(known)
        path = "/api/v1/smart/stations/SW1/profiles"
        status, answer = await cpo.api.post(path, {"connector_id": 0, "profile": cpmax(16)})
        assert status == 422 and "unit" in answer["message"].lower(), answer
        status, answer = await cpo.api.post(
            path, {"connector_id": 0, "profile": cpmax(16, stack=4, unit="W")}
        )
        assert status == 422 and "stack level" in answer["message"].lower(), answer
        status, row = await cpo.api.post(
            path, {"connector_id": 0, "profile": cpmax(11000, unit="W")}
        )
        assert status == 200 and row["state"] == "installed", row
    finally:
        await st.disconnect()
        await session.close()
        await system.stop()


async def test_profiles_come_back_after_a_reboot_and_a_restart(tmp_path: Path) -> None:
    net = await open_net(tmp_path, ["SC2"], connectors=1)
    try:
        api, st = net.cpo.api, net.stations["SC2"]
        status, row = await api.post(
            "/api/v1/smart/stations/SC2/profiles", {"connector_id": 0, "profile": cpmax(20)}
        )
        assert status == 200 and row["state"] == "installed"
        # the station forgets its profiles (a hard reboot) and boots again
        st.charging_profiles.clear()
        await st.boot_and_report()
        await eventually(lambda: 1 in held(st), timeout=10)
        # csms restarts on the same database; the station reconnects with nothing
        await st.disconnect()
        await net.session.close()
        await net.system.stop()
    except BaseException:
        await close(net)
        raise
    system, session, cpo = await start_system(tmp_path, smart=SMART)
    st = Station("SC2", cpo.ocpp_url, 1, behaviour=behaviour())
    try:
        await st.connect()
        await st.boot_and_report()
        await eventually(lambda: 1 in held(st), timeout=10)
        assert held(st)[1]["charging_schedule"]["charging_schedule_period"][0]["limit"] == 20
    finally:
        await st.disconnect()
        await session.close()
        await system.stop()


# ------------------------------------------------------------------------ sites


def tx_limit(st: Station, connector: int) -> float | None:
    """The limit of the TxProfile the station holds for its running transaction."""
    for p in st.charging_profiles.values():
        if p.get("charging_profile_purpose") == "TxProfile" and p.get("connector_id") == connector:
            return float(p["charging_schedule"]["charging_schedule_period"][0]["limit"])
    return None


def default_limit(st: Station) -> float | None:
    for p in st.charging_profiles.values():
        if p.get("charging_profile_purpose") == "TxDefaultProfile":
            return float(p["charging_schedule"]["charging_schedule_period"][0]["limit"])
    return None


async def test_a_site_shares_its_connection(tmp_path: Path) -> None:
    ids = ["SA1", "SA2", "SA3"]
    net = await open_net(tmp_path, ids)
    try:
        api = net.cpo.api
        body = {
            "name": "Parque",
            "rules": {"limit": 40, "unit": "A", "min_per_evse": 6},
            "members": [{"station_id": "SA1", "priority": 0}, "SA2", "SA3"],
        }
        status, site = await api.put("/api/v1/smart/sites/P1", body)
        assert status == 201, site
        # every station holds the safe default: 3 EVSEs at 13.3 A stay within 40 A
        for sid in ids:
            await eventually(lambda sid=sid: default_limit(net.stations[sid]) == 13.3)
        # three cars: 40 A shared
        for n, sid in enumerate(ids):
            await net.stations[sid].start_transaction(1, f"TAG{n}")
        for sid in ids:
            await eventually(lambda sid=sid: tx_limit(net.stations[sid], 1) is not None)

        async def shares() -> dict[str, float]:
            _, view = await api.get("/api/v1/smart/sites/P1")
            return {a["station_id"]: a["limit_a"] for a in view["allocations"]}

        # (the station may hold its profile a moment before csms records what it sent)
        async def three() -> bool:
            return len(await shares()) == 3

        await eventually(three)
        got = await shares()
        # (the tenth left over goes to the oldest)
        assert sum(got.values()) <= 40 and sorted(got.values()) == [13.3, 13.3, 13.4], got
        # one leaves: the two others get 20 A each
        sa1 = net.stations["SA1"]
        await sa1.stop_transaction(sa1.connectors[1].transaction_id)

        async def two_at_20() -> bool:
            s = await shares()
            return set(s) == {"SA2", "SA3"} and all(v == 20 for v in s.values())

        await eventually(two_at_20)
        assert tx_limit(net.stations["SA2"], 1) == 20
        # the building needs power: a dynamic limit of 16 A -> 8 A each, at once
        status, view = await api.put("/api/v1/smart/sites/P1/limit", {"limit": 16})
        assert status == 200 and view["limit_a"] == 16, view
        assert all(a["limit_a"] == 8 for a in view["allocations"]), view
        assert tx_limit(net.stations["SA3"], 1) == 8
        status, view = await api.request("DELETE", "/api/v1/smart/sites/P1/limit")
        assert status == 200 and view["limit_a"] == 40
        # a station cannot be in two sites
        status, answer = await api.put(
            "/api/v1/smart/sites/P2", {"rules": {"limit": 10, "unit": "kW"}, "members": ["SA2"]}
        )
        assert status == 409, answer
        # the operator's own Tx profiles stay below the site's stack level
        status, answer = await api.post(
            "/api/v1/smart/stations/SA2/profiles",
            {
                "connector_id": 0,
                "profile": {**cpmax(32, pid=7, stack=6), "purpose": "TxDefaultProfile"},
            },
        )
        assert status == 409, answer
        # removing the site takes its profiles off
        status, _ = await api.request("DELETE", "/api/v1/smart/sites/P1")
        assert status == 204
        await eventually(lambda: default_limit(net.stations["SA2"]) is None)
    finally:
        await close(net)


async def test_site_api_refusals(net: Net) -> None:
    api = net.cpo.api
    bad = [
        {"rules": {"limit": -1, "unit": "A"}},
        {"rules": {"limit": 10, "unit": "V"}},
        {"rules": {"limit": 10, "unit": "A"}, "members": ["NOPE"]},
        {"rules": {"limit": 10, "unit": "A"}, "members": ["SC1", "SC1"]},
        {"rules": {"limit": 10, "unit": "A"}, "extra": 1},
        {"rules": {"limit": 10, "unit": "A", "time_zone": "Mars/Base"}},
        [],
    ]
    for body in bad:
        status, answer = await api.put("/api/v1/smart/sites/X", body)
        assert status == 422, (body, answer)
    for path in ("/api/v1/smart/sites/nope", "/api/v1/smart/sites/nope/power"):
        status, _ = await api.get(path)
        assert status == 404
    status, _ = await api.put("/api/v1/smart/sites/nope/limit", {"limit": 5})
    assert status == 404
    status, _ = await api.put("/api/v1/smart/sites/X", {"rules": {"limit": 10, "unit": "A"}})
    assert status == 201
    for body in ({"limit": "x"}, {"limit": -3}, {"limit": 5, "until": "soon"}, {"nope": 1}):
        status, answer = await api.put("/api/v1/smart/sites/X/limit", body)
        assert status == 422, (body, answer)
    status, _ = await api.get("/api/v1/smart/sites/X/power?from=bad")
    assert status == 400


async def test_a_smart_charging_party_stays_within_the_site(tmp_path: Path) -> None:
    """A session's limit set through the port (as the OCPI ChargingProfiles module does) is
    sent capped, period by period, by the site's share."""
    from decimal import Decimal

    from csms.ports import SessionSchedule

    net = await open_net(tmp_path, ["SP1", "SP2"])
    try:
        api = net.cpo.api
        status, _ = await api.put(
            "/api/v1/smart/sites/SP",
            {"rules": {"limit": 32, "unit": "A"}, "members": ["SP1", "SP2"]},
        )
        assert status == 201
        for sid in ("SP1", "SP2"):
            await net.stations[sid].start_transaction(1, f"T-{sid}")
        st = net.stations["SP1"]
        await eventually(lambda: tx_limit(st, 1) == 16)
        limits = net.system.port.charging_limits
        assert limits is not None
        tx = st.connectors[1].transaction_id
        wanted = SessionSchedule(unit="A", periods=((0, Decimal(32)), (600, Decimal(10))))
        assert await limits.set_session_limit(tx, wanted, "ocpi:PT/SCP") == "ACCEPTED"
        [profile] = [
            p
            for p in st.charging_profiles.values()
            if p.get("charging_profile_purpose") == "TxProfile"
        ]
        periods = profile["charging_schedule"]["charging_schedule_period"]
        assert [(p["start_period"], float(p["limit"])) for p in periods] == [(0, 16.0), (600, 10.0)]
        # the other car leaves: the share grows, the party's own limit still applies
        sp2 = net.stations["SP2"]
        await sp2.stop_transaction(sp2.connectors[1].transaction_id)

        def periods_now() -> list[tuple[int, float]]:
            for p in st.charging_profiles.values():
                if p.get("charging_profile_purpose") == "TxProfile":
                    return [
                        (q["start_period"], float(q["limit"]))
                        for q in p["charging_schedule"]["charging_schedule_period"]
                    ]
            return []

        await eventually(lambda: periods_now() == [(0, 32.0), (600, 10.0)])
        assert await limits.clear_session_limit(tx, "ocpi:PT/SCP") == "ACCEPTED"
        await eventually(lambda: periods_now() == [(0, 32.0)])
        assert await limits.set_session_limit(999_999, wanted, "ocpi:PT/SCP") == "UNKNOWN"
    finally:
        await close(net)
