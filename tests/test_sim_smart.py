"""The simulator obeys charging profiles (issue 18): the limit math of charger_sim.smart,
then a simulated station against the real csms over loopback, its commands sent raw
through the operator API, and time driven by csms's FakeClock shared with the station."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from charger_sim.smart import (
    Capabilities,
    Demand,
    Limit,
    ProfileError,
    SimClock,
    Tx,
    composite,
    connector_limit,
    next_change,
    parse_profile,
    ramp,
    refusal,
    station_caps,
)
from charger_sim.timeutil import iso
from csms.clock import FakeClock
from tests.conftest import Running, start_system

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
V = 230.0


def wire(
    pid: int,
    purpose: str = "TxDefaultProfile",
    periods: list[tuple[int, float]] | None = None,
    *,
    stack: int = 0,
    kind: str = "Absolute",
    unit: str = "A",
    start: datetime | None = T0,
    **extra: Any,
) -> dict[str, Any]:
    """A csChargingProfiles object as on the wire (camelCase)."""
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": s, "limit": limit} for s, limit in (periods or [(0, 16.0)])
        ],
    }
    if start is not None and kind != "Relative":
        schedule["startSchedule"] = iso(start)
    for key in ("duration", "numberPhases"):
        if key in extra:
            value = extra.pop(key)
            if key == "duration":
                schedule["duration"] = value
            else:
                for period in schedule["chargingSchedulePeriod"]:
                    period["numberPhases"] = value
    return {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
        **extra,
    }


def prof(connector_id: int, *args: Any, **kw: Any) -> Any:
    return parse_profile(wire(*args, **kw), connector_id, T0)


def amps(limit: Limit | None) -> float | None:
    return None if limit is None else round(limit.amps, 3)


# ------------------------------------------------------------------------- the pure rules


def test_stacking_purposes_and_connector_zero() -> None:
    base = prof(0, 1, periods=[(0, 16.0)])
    higher = prof(0, 2, periods=[(0, 10.0)], stack=1, validTo=iso(T0 + timedelta(hours=1)))
    mine = prof(1, 3, periods=[(0, 20.0)])
    tx = prof(1, 4, "TxProfile", periods=[(0, 12.0)], transactionId=7)
    cap = prof(0, 5, "ChargePointMaxProfile", periods=[(0, 11.0)])
    at = T0 + timedelta(minutes=5)
    later = T0 + timedelta(hours=2)
    running = Tx(7, T0)
    # per purpose the highest stack level that is valid wins; validTo ends it
    assert amps(connector_limit([base, higher], 2, at, None, V)) == 10.0
    assert amps(connector_limit([base, higher], 2, later, None, V)) == 16.0
    # a connector's own TxDefaultProfile beats connector 0's, whatever the stack levels
    assert amps(connector_limit([base, higher, mine], 1, at, None, V)) == 20.0
    assert amps(connector_limit([base, higher, mine], 2, at, None, V)) == 10.0
    # the running transaction's TxProfile beats TxDefault; another transaction's does not
    assert amps(connector_limit([base, mine, tx], 1, at, running, V)) == 12.0
    assert amps(connector_limit([base, mine, tx], 1, at, Tx(8, T0), V)) == 20.0
    assert amps(connector_limit([base, mine, tx], 1, at, None, V)) == 20.0
    # ChargePointMaxProfile caps everything; connector 0 reports it
    assert amps(connector_limit([base, mine, tx, cap], 1, at, running, V)) == 11.0
    assert amps(connector_limit([base, cap], 0, at, None, V)) == 11.0
    # nothing: no limit; before validFrom: not yet
    assert connector_limit([], 1, at, None, V) is None
    future = prof(1, 6, validFrom=iso(T0 + timedelta(hours=1)))
    assert connector_limit([future], 1, at, None, V) is None
    assert amps(connector_limit([future], 1, later, None, V)) == 16.0


def test_schedule_kinds_units_and_boundaries() -> None:
    # Relative: from the transaction's start; a duration ends it (then the lower stack level)
    rel = prof(1, 1, periods=[(0, 6.0), (600, 32.0)], kind="Relative", stack=2, duration=1800)
    floor = prof(1, 2, periods=[(0, 10.0)])
    start = T0 + timedelta(minutes=7)
    tx = Tx(None, start)
    assert amps(connector_limit([rel, floor], 1, start + timedelta(seconds=599), tx, V)) == 6.0
    assert amps(connector_limit([rel, floor], 1, start + timedelta(seconds=600), tx, V)) == 32.0
    assert amps(connector_limit([rel, floor], 1, start + timedelta(seconds=1800), tx, V)) == 10.0
    assert next_change(rel, start, start) == start + timedelta(seconds=600)
    assert next_change(rel, start + timedelta(seconds=600), start) == start + timedelta(
        seconds=1800
    )
    # Recurring Daily from 22:00: 8 A until 07:00 (over midnight), then 16 A, every day
    night = T0.replace(hour=22)
    daily = prof(
        0,
        3,
        periods=[(0, 8.0), (9 * 3600, 16.0)],
        kind="Recurring",
        start=night,
        recurrencyKind="Daily",
    )
    three_days = night + timedelta(days=3)
    assert amps(connector_limit([daily], 1, three_days + timedelta(hours=2), None, V)) == 8.0
    assert amps(connector_limit([daily], 1, three_days + timedelta(hours=10), None, V)) == 16.0
    assert connector_limit([daily], 1, night - timedelta(minutes=1), None, V) is None
    assert next_change(daily, three_days + timedelta(hours=10), None) == night + timedelta(days=4)
    weekly = prof(
        0,
        4,
        periods=[(0, 0.0), (86400, 20.0)],
        kind="Recurring",
        start=T0,
        recurrencyKind="Weekly",
    )
    assert amps(connector_limit([weekly], 1, T0 + timedelta(days=14, hours=3), None, V)) == 0.0
    assert amps(connector_limit([weekly], 1, T0 + timedelta(days=15, hours=3), None, V)) == 20.0
    # W converts with the period's phases (default 3)
    watts = prof(1, 5, periods=[(0, 4600.0)], unit="W", numberPhases=1)
    limit = connector_limit([watts], 1, T0, None, V)
    assert limit is not None and limit.phases == 1 and amps(limit) == 20.0
    three = connector_limit([prof(1, 6, periods=[(0, 10.0)])], 1, T0, None, V)
    assert three is not None and three.watts == 6900.0


def test_ramp_and_sharing_the_station_maximum() -> None:
    # up at the rate, down at once
    assert ramp(0.0, 4000.0, 2000.0, 1.0) == (pytest.approx(1000 / 3600), 2000.0)
    energy, power = ramp(0.0, 4000.0, 2000.0, 10.0)
    assert power == 4000.0 and energy == pytest.approx((4000 * 2 / 2 + 4000 * 8) / 3600)
    assert ramp(11000.0, 6900.0, 2000.0, 3600.0) == (pytest.approx(6900.0), 6900.0)
    assert ramp(0.0, 5000.0, 0.0, 36.0) == (pytest.approx(50.0), 5000.0)

    def demand(cid: int, wanted: float = 11000.0, held: bool = False) -> Demand:
        return Demand(cid, Tx(cid, T0), wanted, held)

    top = prof(0, 1, "ChargePointMaxProfile", periods=[(0, 20.0)])
    caps = station_caps([top], T0, [demand(1), demand(2)], V, 6.0)
    assert [amps(caps[c].limit) for c in (1, 2)] == [10.0, 10.0]
    assert sum(c.target_w for c in caps.values()) == pytest.approx(20 * V * 3)
    # a car that wants less leaves the rest to the other
    top16 = prof(0, 1, "ChargePointMaxProfile", periods=[(0, 16.0)])
    caps = station_caps([top16], T0, [demand(1, 2000.0), demand(2)], V, 6.0)
    assert caps[1].target_w == 2000.0 and caps[2].target_w == pytest.approx(16 * V * 3 - 2000)
    # one car alone is offered the whole station maximum, whatever it takes
    caps = station_caps([top], T0, [demand(1)], V, 6.0)
    assert amps(caps[1].limit) == 20.0 and caps[1].target_w == 11000.0
    # too little for both at 6 A: the highest connector pauses, the other charges
    small = prof(0, 2, "ChargePointMaxProfile", periods=[(0, 10.0)])
    caps = station_caps([small], T0, [demand(1), demand(2)], V, 6.0)
    assert caps[2].suspended and caps[2].target_w == 0.0
    assert not caps[1].suspended and amps(caps[1].limit) == 10.0
    # its own limit below the minimum suspends; held power is 0; no profile: what it wants
    low = prof(1, 3, periods=[(0, 5.0)])
    caps = station_caps([low], T0, [demand(1), demand(2, held=True), demand(3, 3000.0)], V, 6.0)
    assert caps[1].suspended and caps[2].suspended and caps[2].target_w == 0
    assert caps[3].limit is None and caps[3].target_w == 3000.0


def test_composite_schedule() -> None:
    profiles = [
        prof(0, 1, "ChargePointMaxProfile", periods=[(0, 20.0)]),
        prof(1, 2, periods=[(0, 16.0), (1800, 32.0), (2700, 8.0)], duration=3600),
        prof(0, 3, periods=[(0, 12.0)], stack=1, validFrom=iso(T0 + timedelta(minutes=20))),
    ]
    periods = composite(profiles, 1, T0, 7200, "A", None, V, 32.0)
    assert periods == [(0, 16.0), (1800, 20.0), (2700, 8.0), (3600, 12.0)]
    assert composite(profiles, 2, T0, 7200, "A", None, V, 32.0) == [(0, 20.0), (1200, 12.0)]
    assert composite(profiles, 0, T0, 600, "W", None, V, 32.0) == [(0, 13800.0)]
    assert composite([], 1, T0, 600, "A", None, V, 32.0) == [(0, 32.0)]
    # rounded down to 0.1 in the unit asked
    watts = [prof(1, 4, periods=[(0, 1000.0)], unit="W")]
    assert composite(watts, 1, T0, 60, "A", None, V, 32.0) == [(0, 1.4)]


def test_hostile_profiles_and_refusals() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({**wire(1), "chargingProfilePurpose": "Max"}, "chargingProfilePurpose"),
        ({**wire(1), "chargingProfileKind": "Sometimes"}, "chargingProfileKind"),
        (wire(1, periods=[(5, 16.0)]), "first chargingSchedulePeriod"),
        (wire(1, periods=[(0, 16.0), (0, 8.0)]), "increase strictly"),
        (wire(1, periods=[(0, -1.0)]), "limit"),
        (wire(1, periods=[(0, math.inf)]), "limit"),
        (wire(1, kind="Recurring"), "Recurring"),
        (wire(1, kind="Recurring", recurrencyKind="Hourly"), "recurrencyKind"),
        (wire(1, validFrom=iso(T0), validTo=iso(T0)), "validTo"),
        (wire(1, transactionId=3), "transactionId"),
        (wire(1, numberPhases=4), "numberPhases"),
        ({**wire(1), "chargingSchedule": {"chargingRateUnit": "A"}}, "chargingSchedulePeriod"),
        ({**wire(1), "chargingSchedule": "16A"}, "chargingSchedule"),
        ({**wire(1), "chargingProfileId": "x"}, "chargingProfileId"),
        ({**wire(1), "validFrom": "tomorrow"}, "validFrom"),
        ({**wire(1), "validFrom": "9999-12-31T23:59:59Z"}, "validFrom"),
        (wire(1, periods=[(0, 1e308)]), "limit"),
        (wire(1, periods=[(0, 6.0), (2**40, 8.0)]), "startPeriod"),
        (wire(1, duration=0), "duration"),
    ]
    for raw, words in bad:
        with pytest.raises(ProfileError, match=words):
            parse_profile(raw, 1, T0)

    caps = Capabilities(frozenset({"A"}), 3, 2, 2)
    one = prof(0, 1)
    installed = {1: one}
    ok = (True, 7)
    assert refusal(prof(1, 2), installed, caps, 2, None) is None
    assert "unit" in (refusal(prof(1, 2, unit="W"), installed, caps, 2, None) or "")
    assert "stackLevel" in (refusal(prof(1, 2, stack=4), installed, caps, 2, None) or "")
    three = prof(1, 2, periods=[(0, 6.0), (60, 7.0), (120, 8.0)])
    assert "periods" in (refusal(three, installed, caps, 2, None) or "")
    assert "connector 0" in (
        refusal(prof(1, 2, "ChargePointMaxProfile"), installed, caps, 2, None) or ""
    )
    assert "transaction" in (refusal(prof(1, 2, "TxProfile"), installed, caps, 2, None) or "")
    assert "transaction" in (refusal(prof(0, 2, "TxProfile"), installed, caps, 2, ok) or "")
    other = prof(1, 2, "TxProfile", transactionId=8)
    assert "transactionId" in (refusal(other, installed, caps, 2, ok) or "")
    assert refusal(prof(1, 2, "TxProfile", transactionId=7), installed, caps, 2, ok) is None
    assert "connector" in (refusal(prof(3, 2), installed, caps, 2, None) or "")
    full = {1: one, 2: prof(1, 2)}
    assert "MaxChargingProfilesInstalled" in (refusal(prof(2, 3), full, caps, 2, None) or "")
    # a replacement (same id, or same purpose + stack level + connector) does not count twice
    assert refusal(prof(2, 2), full, caps, 2, None) is None
    assert refusal(prof(1, 9), full, caps, 2, None) is None
    assert Capabilities.from_config(
        {"ChargingScheduleAllowedChargingRateUnit": "Power"}.get
    ).units == {"W"}


def test_behaviour_and_clock_checks() -> None:
    for bad in (
        {"voltage": 0},
        {"voltage": math.nan},
        {"ramp_w_per_s": -1},
        {"min_current_a": math.inf},
        {"max_current_a": -5},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Behaviour(**bad)
    clock = SimClock(T0)
    assert clock() == T0 and clock.advance(90) == T0 + timedelta(seconds=90)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(T0)
    with pytest.raises(ValueError):
        SimClock(datetime(2026, 1, 1))


# ------------------------------------------------------------------ against the real csms

World = tuple[Running, FakeClock]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = FakeClock(T0)
    system, session, cpo = await start_system(
        tmp_path,
        clock=clock,
        ocpp__accept_unknown_stations="true",
        id_tags__accept_unknown="true",
        ocpp__meter_value_sample_interval="60",
    )
    try:
        yield cpo, clock
    finally:
        await session.close()
        await system.stop()


def simulated(cpo: Running, clock: Callable[[], datetime], cp: str = "SC1", **kw: Any) -> Station:
    behaviour = Behaviour(auto_heartbeat=False, reboot_delay=0.05, **kw.pop("behaviour", {}))
    return Station(cp, cpo.ocpp_url, 2, behaviour=behaviour, clock=clock, response_timeout=5, **kw)


async def command(cpo: Running, cp: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    status, body = await cpo.api.post(f"/api/v1/stations/{cp}/commands/{action}", payload)
    assert status == 200, body
    return body["response"]


async def set_profile(cpo: Running, st: Station, connector_id: int, profile: dict[str, Any]) -> str:
    answer = await command(
        cpo,
        st.id,
        "SetChargingProfile",
        {"connectorId": connector_id, "csChargingProfiles": profile},
    )
    await st.wait_idle()
    return answer["status"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def csms_status(cpo: Running, cp: str, connector_id: int) -> str | None:
    _, view = await cpo.api.get(f"/api/v1/stations/{cp}")
    return {c["connector_id"]: c["status"] for c in view["connectors"]}.get(connector_id)


def sent(st: Station, action: str) -> list[dict[str, Any]]:
    return [payload for name, payload in st.calls_sent if name == action]


def readings(payload: dict[str, Any]) -> dict[str, str]:
    return {
        v["measurand"] + (f".{v['phase']}" if "phase" in v else ""): v["value"]
        for v in payload["meterValue"][0]["sampledValue"]
    }


async def started(st: Station, connector_id: int = 1) -> int:
    await st.connect()
    await st.boot_and_report()
    answer = await st.start_charging(connector_id, "TAG1")
    assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"
    await st.wait_idle()
    return int(answer["transactionId"])


async def tick(clock: FakeClock, st: Station, seconds: float) -> None:
    await clock.advance(seconds)
    await st.catch_up()


async def test_power_follows_a_tx_profile_with_the_ramp(world: World) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    try:
        tx_id = await started(st)
        conn = st.connectors[1]
        assert conn.power_w == 11000.0 and st.limit_a(1) is None
        profile = wire(10, "TxProfile", [(0, 10.0)], transactionId=tx_id)
        assert await set_profile(cpo, st, 1, profile) == "Accepted"
        assert st.limit_a(1) == 10.0 and st.limit_w(1) == 6900.0
        assert st.charging_profiles[10]["connector_id"] == 1
        await tick(clock, st, 1)
        assert conn.power_w == 6900.0  # down at once
        # 16 A (11040 W) is above what the car wants: it ramps up at 2000 W/s to 11000 W
        assert await set_profile(cpo, st, 1, wire(10, "TxProfile", [(0, 16.0)])) == "Accepted"
        await tick(clock, st, 1)
        assert conn.power_w == pytest.approx(8900.0)
        await tick(clock, st, 1)
        assert conn.power_w == pytest.approx(10900.0)
        await tick(clock, st, 1)
        assert conn.power_w == 11000.0 and st.offered_a(1) == 16.0 and st.offered_a(2) is None
        sampled = "Energy.Active.Import.Register,Power.Active.Import,Current.Import"
        st.config.set("MeterValuesSampledData", sampled)
        answer = await st.meter_values(1)
        assert answer is not None
        values = readings(sent(st, "MeterValues")[-1])
        assert values["Power.Active.Import"] == "11000" and values["Current.Offered"] == "16"
        # per phase: 11000 W / (230 V x 3)
        assert [values[f"Current.Import.L{n}"] for n in (1, 2, 3)] == ["15.9"] * 3
        # the TxProfile ends with its transaction
        await st.stop_charging(1)
        assert st.charging_profiles == {}
    finally:
        await st.disconnect()


async def test_suspend_at_zero_and_below_minimum_then_resume(world: World) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    try:
        await started(st)
        assert await set_profile(cpo, st, 0, wire(1, periods=[(0, 0.0)])) == "Accepted"
        assert st.connectors[1].status == "SuspendedEVSE" and st.connectors[1].power_w == 0
        await eventually(lambda: _is(csms_status(cpo, "SC1", 1), "SuspendedEVSE"))
        await tick(clock, st, 120)
        mv = sent(st, "MeterValues")
        assert len(mv) == 2 and readings(mv[-1])["Power.Active.Import"] == "0"
        assert readings(mv[-1])["Current.Offered"] == "0"
        assert (
            readings(mv[0])["Energy.Active.Import.Register"]
            == readings(mv[1])["Energy.Active.Import.Register"]
        )
        # 5 A is below the car's 6 A: still suspended; 6 A charges again
        assert await set_profile(cpo, st, 0, wire(1, periods=[(0, 5.0)])) == "Accepted"
        assert st.connectors[1].status == "SuspendedEVSE"
        assert await set_profile(cpo, st, 0, wire(1, periods=[(0, 6.0)])) == "Accepted"
        assert st.connectors[1].status == "Charging"
        await eventually(lambda: _is(csms_status(cpo, "SC1", 1), "Charging"))
        await tick(clock, st, 10)
        assert st.connectors[1].power_w == pytest.approx(6 * V * 3)
        # a schedule reaching a 0 A period suspends at that instant, with its timestamp
        later = clock.now() + timedelta(seconds=30)
        assert (
            await set_profile(cpo, st, 1, wire(2, periods=[(0, 8.0), (30, 0.0)], start=clock.now()))
            == "Accepted"
        )
        await tick(clock, st, 45)
        statuses = [p for p in sent(st, "StatusNotification") if p["connectorId"] == 1]
        assert statuses[-1]["status"] == "SuspendedEVSE"
        assert statuses[-1]["timestamp"] == iso(later)
        # cleared: charging again, no limit
        answer = await command(cpo, "SC1", "ClearChargingProfile", {})
        assert answer["status"] == "Accepted"
        await st.wait_idle()
        assert st.connectors[1].status == "Charging" and st.limit_a(1) is None
        answer = await command(cpo, "SC1", "ClearChargingProfile", {"id": 99})
        assert answer["status"] == "Unknown"
    finally:
        await st.disconnect()


async def _is(value: Awaitable[str | None], wanted: str) -> bool:
    return (await value) == wanted


async def test_get_composite_schedule_reports_what_it_holds(world: World) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    try:
        await st.connect()
        await st.boot_and_report()
        start = clock.now()
        assert (
            await set_profile(
                cpo, st, 1, wire(1, periods=[(0, 16.0), (900, 10.0)], start=start, duration=1800)
            )
            == "Accepted"
        )
        assert (
            await set_profile(
                cpo, st, 0, wire(2, "ChargePointMaxProfile", [(0, 13.0)], start=start)
            )
            == "Accepted"
        )
        answer = await command(
            cpo, "SC1", "GetCompositeSchedule", {"connectorId": 1, "duration": 3600}
        )
        assert answer["status"] == "Accepted" and answer["connectorId"] == 1
        schedule = answer["chargingSchedule"]
        assert schedule["chargingRateUnit"] == "A" and schedule["duration"] == 3600
        assert [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]] == [
            (0, 13.0),
            (900, 10.0),
            (1800, 13.0),
        ]
        answer = await command(
            cpo,
            "SC1",
            "GetCompositeSchedule",
            {"connectorId": 0, "duration": 600, "chargingRateUnit": "W"},
        )
        periods = answer["chargingSchedule"]["chargingSchedulePeriod"]
        assert answer["chargingSchedule"]["chargingRateUnit"] == "W"
        assert [(p["startPeriod"], p["limit"]) for p in periods] == [(0, 8970.0)]
        answer = await command(
            cpo, "SC1", "GetCompositeSchedule", {"connectorId": 9, "duration": 60}
        )
        assert answer["status"] == "Rejected"
    finally:
        await st.disconnect()


async def test_each_rejection(world: World) -> None:
    cpo, clock = world
    st = simulated(
        cpo,
        clock.now,
        config={
            "ChargingScheduleAllowedChargingRateUnit": "Current",
            "ChargeProfileMaxStackLevel": "2",
            "ChargingScheduleMaxPeriods": "2",
            "MaxChargingProfilesInstalled": "2",
        },
    )
    try:
        await st.connect()
        await st.boot_and_report()
        cases = [
            (1, wire(1, unit="W", periods=[(0, 7000.0)])),  # unit not allowed
            (1, wire(1, stack=3)),  # above ChargeProfileMaxStackLevel
            (1, wire(1, periods=[(0, 6.0), (60, 7.0), (120, 8.0)])),  # too many periods
            (1, wire(1, "ChargePointMaxProfile")),  # not on connector 0
            (1, wire(1, "TxProfile")),  # no transaction
            (1, wire(1, periods=[(10, 16.0)])),  # first period not at 0
            (3, wire(1)),  # no connector 3
        ]
        for connector_id, profile in cases:
            assert await set_profile(cpo, st, connector_id, profile) == "Rejected", profile
        assert st.charging_profiles == {}
        assert await set_profile(cpo, st, 1, wire(1)) == "Accepted"
        assert await set_profile(cpo, st, 2, wire(2)) == "Accepted"
        assert await set_profile(cpo, st, 0, wire(3)) == "Rejected"  # one too many
        # replacements do not count twice: same id, or same purpose+stack+connector
        assert await set_profile(cpo, st, 2, wire(2, periods=[(0, 8.0)])) == "Accepted"
        assert await set_profile(cpo, st, 1, wire(4, periods=[(0, 9.0)])) == "Accepted"
        assert sorted(st.charging_profiles) == [2, 4] and st.limit_a(1) == 9.0
        tx_id = await started_again(st)
        other = wire(5, "TxProfile", transactionId=tx_id + 1)
        assert await set_profile(cpo, st, 1, other) == "Rejected"
    finally:
        await st.disconnect()


async def started_again(st: Station) -> int:
    answer = await st.start_charging(1, "TAG1")
    assert answer is not None
    await st.wait_idle()
    return int(answer["transactionId"])


async def test_simulated_hour_in_well_under_a_second(world: World) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    try:
        tx_id = await started(st)
        assert st.config.get_int("MeterValueSampleInterval") == 60
        start = clock.now()
        profile = wire(1, "TxProfile", [(0, 16.0), (1800, 8.0)], start=start, duration=3600)
        assert await set_profile(cpo, st, 1, profile) == "Accepted"
        began = time.perf_counter()
        for _ in range(60):
            await tick(clock, st, 60)
        elapsed = time.perf_counter() - began
        assert elapsed < 1.0, elapsed
        mv = sent(st, "MeterValues")
        assert len(mv) == 60
        stamps = [p["meterValue"][0]["timestamp"] for p in mv]
        assert stamps == [iso(start + timedelta(seconds=60 * k)) for k in range(1, 61)]
        energy = [int(readings(p)["Energy.Active.Import.Register"]) for p in mv]
        meter_start = sent(st, "StartTransaction")[0]["meterStart"]
        # 11000 W (16 A = 11040 W is above the car's 11000 W) for 30 min, then 8 A = 5520 W
        for k, value in enumerate(energy, start=1):
            expected = 11000 * min(k, 30) / 60 + 5520 * max(0, k - 30) / 60
            assert abs(value - meter_start - expected) <= 1, (k, value)
        assert {readings(p)["Current.Offered"] for p in mv[:29]} == {"16"}
        assert {readings(p)["Current.Offered"] for p in mv[30:59]} == {"8"}
        assert readings(mv[-1]).get("Current.Offered") is None  # the duration ended
        # csms stored them all, with the station's timestamps
        path = f"/api/v1/transactions/{tx_id}/meter-values?limit=500"
        status, page = await cpo.api.get(path)
        assert status == 200, page
        assert sorted({item["timestamp"] for item in page["items"]}) == stamps
    finally:
        await st.disconnect()


async def test_reset_soft_keeps_profiles_hard_drops_them(world: World) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    keeper = simulated(cpo, clock.now, "SC2", behaviour={"keep_profiles": True})
    try:
        for station in (st, keeper):
            await station.connect()
            await station.boot_and_report()
            assert await set_profile(cpo, station, 0, wire(1)) == "Accepted"
        assert (await command(cpo, "SC1", "Reset", {"type": "Soft"}))["status"] == "Accepted"
        await st.wait_idle(timeout=10)
        assert st.booted and list(st.charging_profiles) == [1]
        for station in (st, keeper):
            answer = await command(cpo, station.id, "Reset", {"type": "Hard"})
            assert answer["status"] == "Accepted"
            await station.wait_idle(timeout=10)
            assert station.booted
        assert st.charging_profiles == {} and list(keeper.charging_profiles) == [1]
        assert keeper.limit_a(1) == 16.0
        # a test may make the station forget, as a lost memory: it is obeyed
        keeper.charging_profiles.clear()
        assert keeper.limit_a(1) is None
    finally:
        await st.disconnect()
        await keeper.disconnect()


async def test_station_advance_and_real_time_suspension(world: World) -> None:
    cpo, _ = world
    # SimClock: Station.advance moves it and catches up (csms keeps its own clock here);
    # a Relative TxDefaultProfile starts with the transaction: 6 A for 5 min, then 16 A
    sim_clock = SimClock(T0)
    st = simulated(cpo, sim_clock, "SC3")
    try:
        await st.connect()
        await st.boot_and_report()
        relative = wire(1, periods=[(0, 6.0), (300, 16.0)], kind="Relative")
        assert await set_profile(cpo, st, 0, relative) == "Accepted"
        await st.advance(42)  # (no transaction yet: nothing runs)
        await st.start_charging(1, "TAG1")
        await st.wait_idle()
        assert st.connectors[1].power_w == 6 * V * 3
        await st.advance(600)
        mv = sent(st, "MeterValues")
        assert len(mv) == 10
        low, high = 6 * V * 3, 11000.0  # (16 A = 11040 W: the car takes 11000 W)
        climb = (high - low) / 2000.0
        expected = (low * 300 + (low + high) / 2 * climb + high * (300 - climb)) / 3600
        assert readings(mv[-1])["Energy.Active.Import.Register"] == str(math.floor(expected))
        assert readings(mv[3])["Current.Offered"] == "6"  # (at 4 min)
        assert readings(mv[4])["Current.Offered"] == "16"  # (at 5 min: the new period)
    finally:
        await st.disconnect()
    plain = Station("SC4", cpo.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False))
    with pytest.raises(Exception, match="SimClock"):
        await plain.advance(1)
    # real time: the station's own loop suspends it when the schedule reaches 0 A
    try:
        await plain.connect()
        await plain.boot_and_report()
        await plain.start_charging(1, "TAG1")
        now = datetime.now(UTC)
        profile = wire(1, periods=[(0, 10.0), (1, 0.0)], start=now)
        assert await set_profile(cpo, plain, 1, profile) == "Accepted"
        assert plain.connectors[1].status == "Charging"
        await eventually(lambda: _true(plain.connectors[1].status == "SuspendedEVSE"), 4)
        assert plain.connectors[1].power_w == 0.0
    finally:
        await plain.disconnect()


async def _true(value: bool) -> bool:
    return value


async def test_a_profile_received_before_the_catch_up_rules_only_from_its_arrival(
    world: World,
) -> None:
    cpo, clock = world
    st = simulated(cpo, clock.now)
    try:
        await started(st)
        begin = clock.now()
        await clock.advance(150)  # the station has not lived these 150 s yet
        assert await set_profile(cpo, st, 1, wire(1, periods=[(0, 0.0)])) == "Accepted"
        assert st.connectors[1].status == "Charging"  # (not before its time)
        await st.catch_up()
        mv = sent(st, "MeterValues")
        assert [p["meterValue"][0]["timestamp"] for p in mv] == [
            iso(begin + timedelta(seconds=60)),
            iso(begin + timedelta(seconds=120)),
        ]
        # the MeterValues of the time before it still follow the old (no) limit
        assert [readings(p)["Energy.Active.Import.Register"] for p in mv] == [
            str(math.floor(11000 / 60)),
            str(math.floor(11000 / 30)),
        ]
        assert st.connectors[1].status == "SuspendedEVSE"
        status = [p for p in sent(st, "StatusNotification") if p["connectorId"] == 1][-1]
        assert status["timestamp"] == iso(begin + timedelta(seconds=150))
        await tick(clock, st, 60)
        assert math.floor(st.connectors[1].meter_wh) == math.floor(11000 * 150 / 3600)
    finally:
        await st.disconnect()
