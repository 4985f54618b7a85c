"""The pure cores of smart charging: OCPP 1.6 profiles (smartcharge.profiles) and sharing a
site's connection (smartcharge.share)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case
from ocpp.messages import Call, _validate_payload
from pydantic import ValidationError

from smartcharge.profiles import (
    Capabilities,
    Period,
    Profile,
    Schedule,
    check,
    composite,
    limit_at,
)
from smartcharge.share import (
    Demand,
    SiteRules,
    Window,
    allocate,
    safe_default_a,
    site_limit_a,
    worth_sending,
)

T0 = datetime(2027, 3, 2, 12, 0, tzinfo=UTC)
D = Decimal


def prof(
    pid: int = 1,
    *,
    purpose: str = "TxDefaultProfile",
    kind: str = "Absolute",
    stack: int = 0,
    periods: list[tuple[int, float]] | None = None,
    unit: str = "A",
    start: datetime | None = T0,
    duration: int | None = None,
    recurrency: str | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    tx: int | None = None,
    phases: int | None = None,
) -> Profile:
    return Profile(
        id=pid,
        stack_level=stack,
        purpose=purpose,
        kind=kind,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=tx,
        schedule=Schedule(
            duration=duration,
            start_schedule=None if kind == "Relative" else start,
            charging_rate_unit=unit,
            periods=[
                Period(start_period=s, limit=D(str(v)), number_phases=phases)
                for s, v in (periods or [(0, 16)])
            ],
        ),
    )


def lims(schedule: list[tuple[int, Decimal | None]]) -> list[tuple[int, float | None]]:
    return [(o, None if v is None else float(v)) for o, v in schedule]


# ------------------------------------------------------------------------------- the models


def test_a_valid_profile_and_its_fields() -> None:
    p = prof(3, purpose="TxProfile", stack=2, tx=77, periods=[(0, 16), (600, 10.5)])
    assert p.schedule.periods[1].limit == D("10.5")
    assert p.transaction_id == 77


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "Recurring", "recurrency": None}, "needs recurrency"),
        ({"kind": "Recurring", "recurrency": "Daily", "start": None}, "start_schedule"),
        ({"kind": "Absolute", "recurrency": "Daily"}, "only for Recurring"),
        ({"purpose": "TxDefaultProfile", "tx": 5}, "only for TxProfile"),
        ({"purpose": "ChargePointMaxProfile", "tx": 5}, "only for TxProfile"),
        ({"valid_from": T0, "valid_to": T0}, "valid_from must be before valid_to"),
        ({"periods": [(5, 16)]}, "first period must start at 0"),
        ({"periods": [(0, 16), (60, 10), (60, 8)]}, "increase strictly"),
        ({"periods": [(0, 16), (60, 10), (30, 8)]}, "increase strictly"),
        ({"periods": [(0, 7.25)]}, "more than one decimal"),
        ({"periods": [(0, -1)]}, "greater than or equal to 0"),
        ({"periods": [(0, 1e9)]}, "less than or equal to"),
        ({"periods": [(i * 10, 16) for i in range(1001)]}, "at most 1000"),
        ({"periods": [(0, 16)], "phases": 4}, "less than or equal to 3"),
        ({"stack": -1}, "greater than or equal to 0"),
        ({"pid": 0}, "greater than 0"),
        ({"duration": 0}, "greater than 0"),
        ({"start": datetime(2027, 1, 1)}, "timezone"),
    ],
)
def test_invalid_profiles_are_refused_with_a_reason(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        prof(**kw)


def test_relative_with_a_start_schedule_is_refused() -> None:
    good = prof(kind="Relative").model_dump()
    good["schedule"]["start_schedule"] = T0
    with pytest.raises(ValidationError, match="Relative profile has no start_schedule"):
        Profile.model_validate(good)


def test_unknown_fields_booleans_and_empty_periods_are_refused() -> None:
    base = prof().model_dump()
    with pytest.raises(ValidationError, match="Extra inputs"):
        Profile.model_validate({**base, "colour": "red"})
    with pytest.raises(ValidationError, match="valid integer"):
        Profile.model_validate({**base, "stack_level": True})
    with pytest.raises(ValidationError, match="at least 1"):
        Profile.model_validate({**base, "schedule": {**base["schedule"], "periods": []}})
    with pytest.raises(ValidationError, match="not true or false"):
        Period(start_period=0, limit=True)  # type: ignore[arg-type]


def test_absolute_without_start_schedule_is_accepted_and_runs_from_the_start() -> None:
    """OCPP 1.6's ChargingSchedule: "If absent the schedule will be relative to start of
    charging"; the schema makes startSchedule optional for every kind."""
    p = prof(kind="Absolute", start=None, periods=[(0, 10), (600, 20)])
    assert p.schedule.start_schedule is None
    tx_start = T0 - timedelta(seconds=300)
    got = composite([(1, p)], 1, T0, 3600, "A", (9, tx_start))
    assert lims(got) == [(0, 10.0), (300, 20.0)]


# --------------------------------------------------------------------------- to/from OCPP


def full_profile() -> Profile:
    return Profile(
        id=42,
        stack_level=3,
        purpose="TxDefaultProfile",
        kind="Recurring",
        recurrency="Weekly",
        valid_from=T0,
        valid_to=T0 + timedelta(days=30),
        schedule=Schedule(
            duration=86_400,
            start_schedule=datetime(2027, 3, 1, 22, 30, 15, 250_000, tzinfo=UTC),
            charging_rate_unit="W",
            periods=[
                Period(start_period=0, limit=D("11000"), number_phases=3),
                Period(start_period=3600, limit=D("3680.5"), number_phases=1),
            ],
            min_charging_rate=D("1380.0"),
        ),
    )


def test_to_ocpp_is_the_wire_object() -> None:
    p = prof(7, purpose="TxProfile", stack=1, tx=99, periods=[(0, 16), (900, 6.5)])
    assert p.to_ocpp() == {
        "chargingProfileId": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "transactionId": 99,
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "startSchedule": "2027-03-02T12:00:00Z",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16},
                {"startPeriod": 900, "limit": 6.5},
            ],
        },
    }


@pytest.mark.parametrize("p", [full_profile(), prof(), prof(kind="Relative")])
def test_to_ocpp_passes_the_ocpp16_schema_and_round_trips(p: Profile) -> None:
    wire = json.loads(json.dumps(p.to_ocpp()))
    _validate_payload(
        Call(
            unique_id="1",
            action="SetChargingProfile",
            payload={"connectorId": 0, "csChargingProfiles": wire},
        ),
        "1.6",
    )
    assert Profile.from_ocpp(wire) == p
    # what the ocpp library hands a handler: the same object with snake_case keys
    assert Profile.from_ocpp(camel_to_snake_case(wire)) == p


def test_times_are_written_in_utc_with_z() -> None:
    lisbon_summer = datetime.fromisoformat("2027-07-01T10:00:00+01:00")
    p = prof(start=lisbon_summer, valid_to=lisbon_summer + timedelta(hours=1))
    wire = p.to_ocpp()
    assert wire["chargingSchedule"]["startSchedule"] == "2027-07-01T09:00:00Z"
    assert wire["validTo"] == "2027-07-01T10:00:00Z"
    assert full_profile().to_ocpp()["chargingSchedule"]["startSchedule"] == (
        "2027-03-01T22:30:15.250000Z"
    )


def test_from_ocpp_refuses_what_a_station_would() -> None:
    wire = prof().to_ocpp()
    with pytest.raises(ValueError, match="unknown field 'foo' in the charging profile"):
        Profile.from_ocpp({**wire, "foo": 1})
    with pytest.raises(ValueError, match="must be an object"):
        Profile.from_ocpp([wire])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        Profile.from_ocpp({**wire, "stack_level": 0})
    bad = json.loads(json.dumps(wire))
    bad["chargingSchedule"]["chargingSchedulePeriod"][0]["numberphases"] = 3
    with pytest.raises(ValueError, match=r"unknown field 'numberphases' in chargingSchedulePeriod"):
        Profile.from_ocpp(bad)
    naive = json.loads(json.dumps(wire))
    naive["chargingSchedule"]["startSchedule"] = "2027-03-02T12:00:00"
    with pytest.raises(ValueError, match="timezone"):
        Profile.from_ocpp(naive)
    with pytest.raises(ValueError, match="chargingSchedule must be an object"):
        Profile.from_ocpp({**wire, "chargingSchedule": "x"})


def test_from_ocpp_reads_floats_as_their_decimal_text() -> None:
    wire = prof(periods=[(0, 16.1)]).to_ocpp()
    assert wire["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16.1
    assert Profile.from_ocpp(wire).schedule.periods[0].limit == D("16.1")


# --------------------------------------------------------------------------- capabilities


def test_capabilities_from_configuration() -> None:
    caps = Capabilities.from_configuration(
        {
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargeProfileMaxStackLevel": "8",
            "MaxChargingProfilesInstalled": "20",
            "ChargingScheduleMaxPeriods": "24",
        }
    )
    assert caps == Capabilities(frozenset({"A", "W"}), 8, 20, 24)
    assert Capabilities.from_configuration(
        {"ChargingScheduleAllowedChargingRateUnit": "Power"}
    ).units == frozenset({"W"})
    assert Capabilities.from_configuration(
        {"chargingscheduleallowedchargingrateunit": " current ", "CHARGEPROFILEMAXSTACKLEVEL": "2"}
    ) == Capabilities(frozenset({"A"}), 2, 3, 1)


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {
            "ChargingScheduleAllowedChargingRateUnit": "Amps",
            "ChargeProfileMaxStackLevel": "-1",
            "MaxChargingProfilesInstalled": "many",
            "ChargingScheduleMaxPeriods": "",
        },
        {"ChargeProfileMaxStackLevel": "1e3", "MaxChargingProfilesInstalled": "99999999999"},
        {"ChargeProfileMaxStackLevel": None, 5: "x"},
    ],
)
def test_missing_or_malformed_capabilities_get_conservative_defaults(keys: Any) -> None:
    assert Capabilities.from_configuration(keys) == Capabilities(frozenset({"A"}), 0, 3, 1)


def test_capabilities_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="subset of A and W"):
        Capabilities(frozenset({"kW"}), 0, 1, 1)
    with pytest.raises(ValueError, match="max_profiles"):
        Capabilities(frozenset({"A"}), 0, -1, 1)


# ---------------------------------------------------------------------------------- check

CAPS = Capabilities(frozenset({"A"}), 3, 4, 5)


def test_check_accepts_a_good_profile() -> None:
    assert check(prof(), 0, CAPS, [], None) == []
    assert check(prof(purpose="TxProfile", tx=5), 1, CAPS, [], 5) == []
    assert check(prof(purpose="TxProfile"), 1, CAPS, [], 5) == []


def test_check_each_rule() -> None:
    (unit,) = check(prof(unit="W"), 0, CAPS, [], None)
    assert "accepts limits in A only" in unit and "not in W" in unit
    (stack,) = check(prof(stack=4), 0, CAPS, [], None)
    assert "Stack level 4 is above the station's maximum 3" in stack
    (periods,) = check(prof(periods=[(i * 60, 16) for i in range(6)]), 0, CAPS, [], None)
    assert "6 periods" in periods and "at most 5" in periods
    (cpmax,) = check(prof(purpose="ChargePointMaxProfile"), 2, CAPS, [], None)
    assert "connector 0, not connector 2" in cpmax
    (tx0,) = check(prof(purpose="TxProfile"), 0, CAPS, [], 5)
    assert "not on 0" in tx0
    (notx,) = check(prof(purpose="TxProfile"), 1, CAPS, [], None)
    assert "needs a transaction in progress on connector 1" in notx
    (other,) = check(prof(purpose="TxProfile", tx=6), 1, CAPS, [], 5)
    assert "for transaction 6" in other and "is 5" in other
    (neg,) = check(prof(), -1, CAPS, [], None)
    assert "negative" in neg


def test_check_reports_every_problem_at_once() -> None:
    assert (
        len(check(prof(unit="W", stack=9, purpose="ChargePointMaxProfile"), 1, CAPS, [], None)) == 3
    )


def test_check_counts_installed_profiles_with_replacement() -> None:
    full = [(0, prof(i, stack=i - 1)) for i in range(1, 5)]  # 4 = the maximum
    (too_many,) = check(prof(9, stack=3, purpose="ChargePointMaxProfile"), 0, CAPS, full, None)
    assert "already holds 4 other profiles" in too_many and "at most 4" in too_many
    # the same id replaces
    assert check(prof(2, stack=3), 1, CAPS, full, None) == []
    # the same purpose and stack level on the same connector replaces
    assert check(prof(9, stack=1), 0, CAPS, full, None) == []
    # ... but not on another connector
    assert len(check(prof(9, stack=1), 1, CAPS, full, None)) == 1
    # ... nor with another purpose
    assert len(check(prof(9, stack=1, purpose="ChargePointMaxProfile"), 0, CAPS, full, None)) == 1


# ------------------------------------------------------------------------------ composite


def test_no_profile_no_limit() -> None:
    assert composite([], 1, T0, 3600, "A", None) == [(0, None)]
    assert limit_at([], 1, T0, "A", None) is None


def test_stacking_the_highest_level_in_force_wins() -> None:
    base = prof(1, stack=0, periods=[(0, 16)])
    evening = prof(2, stack=1, start=T0 + timedelta(hours=1), duration=3600, periods=[(0, 10)])
    got = composite([(1, base), (1, evening)], 1, T0, 4 * 3600, "A", None)
    assert lims(got) == [(0, 16.0), (3600, 10.0), (7200, 16.0)]
    # a higher level that allows more still wins: stacking is not a minimum
    generous = prof(3, stack=2, duration=1800, periods=[(0, 32)])
    got = composite([(1, base), (1, generous)], 1, T0, 3600, "A", None)
    assert lims(got) == [(0, 32.0), (1800, 16.0)]


def test_txprofile_beats_txdefault_whatever_the_levels() -> None:
    default = prof(1, stack=5, periods=[(0, 16)])
    mine = prof(2, purpose="TxProfile", stack=0, tx=7, periods=[(0, 20)])
    other = prof(3, purpose="TxProfile", stack=9, tx=8, periods=[(0, 6)])
    installed = [(1, default), (1, mine), (1, other)]
    tx = (7, T0 - timedelta(minutes=5))
    assert lims(composite(installed, 1, T0, 600, "A", tx)) == [(0, 20.0)]
    # no transaction: TxProfiles do not apply
    assert lims(composite(installed, 1, T0, 600, "A", None)) == [(0, 16.0)]
    # another transaction: only a TxProfile without transaction_id or of that one
    assert lims(composite(installed, 1, T0, 600, "A", (8, T0))) == [(0, 6.0)]
    assert lims(composite(installed, 1, T0, 600, "A", (9, T0))) == [(0, 16.0)]
    anyone = prof(4, purpose="TxProfile", periods=[(0, 12)])
    assert lims(composite([*installed, (1, anyone)], 1, T0, 600, "A", (9, T0))) == [(0, 12.0)]
    # a TxProfile on another connector does not apply here
    assert lims(composite([(2, mine), (1, default)], 1, T0, 600, "A", tx)) == [(0, 16.0)]


def test_txprofile_ending_falls_back_to_txdefault() -> None:
    default = prof(1, periods=[(0, 16)])
    short = prof(2, purpose="TxProfile", kind="Relative", duration=900, periods=[(0, 8)])
    tx = (1, T0)
    assert lims(composite([(1, default), (1, short)], 1, T0, 3600, "A", tx)) == [
        (0, 8.0),
        (900, 16.0),
    ]


def test_txdefault_on_the_connector_beats_connector_0() -> None:
    everywhere = prof(1, stack=7, periods=[(0, 16)])
    here = prof(2, stack=0, duration=1200, periods=[(0, 10)])
    installed = [(0, everywhere), (1, here)]
    assert lims(composite(installed, 1, T0, 3600, "A", None)) == [(0, 10.0), (1200, 16.0)]
    assert lims(composite(installed, 2, T0, 3600, "A", None)) == [(0, 16.0)]


def test_chargepointmax_caps_the_connector_and_is_all_of_connector_0() -> None:
    cpmax = prof(1, purpose="ChargePointMaxProfile", periods=[(0, 12), (1800, 40)])
    tx = prof(2, purpose="TxProfile", periods=[(0, 20)])
    default = prof(3, periods=[(0, 16)])
    installed = [(0, cpmax), (1, tx), (0, default)]
    got = composite(installed, 1, T0, 3600, "A", (5, T0))
    assert lims(got) == [(0, 12.0), (1800, 20.0)]
    assert lims(composite(installed, 0, T0, 3600, "A", None)) == [(0, 12.0), (1800, 40.0)]
    # a ChargePointMaxProfile put on a connector is not one (a station would refuse it)
    assert lims(composite([(1, cpmax)], 1, T0, 600, "A", None)) == [(0, None)]


def test_relative_starts_at_the_transaction_start() -> None:
    relative = prof(1, purpose="TxProfile", kind="Relative", periods=[(0, 6), (600, 16)])
    tx = (3, T0 - timedelta(minutes=5))
    assert lims(composite([(1, relative)], 1, T0, 3600, "A", tx)) == [(0, 6.0), (300, 16.0)]
    assert limit_at([(1, relative)], 1, T0 + timedelta(seconds=299), "A", tx) == D("6.0")
    assert limit_at([(1, relative)], 1, T0 + timedelta(seconds=300), "A", tx) == D("16.0")
    # without a transaction a Relative default runs from the start of the question
    default = prof(2, kind="Relative", periods=[(0, 6), (600, 16)])
    assert lims(composite([(1, default)], 1, T0, 3600, "A", None)) == [(0, 6.0), (600, 16.0)]


def test_recurring_daily_over_midnight() -> None:
    """Night tariff: from 22:00 UTC, 32 A for eight hours, then 10 A until 22:00 again."""
    night = prof(
        1,
        kind="Recurring",
        recurrency="Daily",
        start=datetime(2027, 3, 1, 22, 0, tzinfo=UTC),
        periods=[(0, 32), (8 * 3600, 10)],
    )
    start = datetime(2027, 3, 5, 20, 0, tzinfo=UTC)
    got = composite([(0, night)], 1, start, 14 * 3600, "A", None)
    assert lims(got) == [(0, 10.0), (7200, 32.0), (36000, 10.0)]
    assert limit_at([(0, night)], 1, datetime(2027, 3, 9, 1, 0, tzinfo=UTC), "A", None) == 32
    assert limit_at([(0, night)], 1, datetime(2027, 3, 9, 6, 0, tzinfo=UTC), "A", None) == 10
    # not in force before its start
    assert limit_at([(0, night)], 1, datetime(2027, 3, 1, 21, 0, tzinfo=UTC), "A", None) is None


def test_recurring_with_a_duration_leaves_the_rest_of_the_day_to_lower_levels() -> None:
    base = prof(1, stack=0, periods=[(0, 16)])
    night = prof(
        2,
        stack=1,
        kind="Recurring",
        recurrency="Daily",
        start=datetime(2027, 3, 1, 22, 0, tzinfo=UTC),
        duration=8 * 3600,
        periods=[(0, 32)],
    )
    start = datetime(2027, 3, 5, 12, 0, tzinfo=UTC)
    got = composite([(0, base), (0, night)], 1, start, 48 * 3600, "A", None)
    assert lims(got) == [
        (0, 16.0),
        (10 * 3600, 32.0),
        (18 * 3600, 16.0),
        (34 * 3600, 32.0),
        (42 * 3600, 16.0),
    ]


def test_recurring_weekly() -> None:
    weekend = prof(
        1,
        kind="Recurring",
        recurrency="Weekly",
        start=datetime(2027, 3, 6, 0, 0, tzinfo=UTC),  # a Saturday
        periods=[(0, 32), (2 * 86_400, 10)],
    )
    assert limit_at([(0, weekend)], 1, datetime(2027, 3, 14, 12, tzinfo=UTC), "A", None) == 32
    assert limit_at([(0, weekend)], 1, datetime(2027, 3, 17, 12, tzinfo=UTC), "A", None) == 10
    assert limit_at([(0, weekend)], 1, datetime(2027, 3, 20, 0, tzinfo=UTC), "A", None) == 32


def test_valid_from_and_valid_to_bound_a_profile() -> None:
    until = prof(1, valid_to=T0 + timedelta(minutes=30), periods=[(0, 10)])
    assert lims(composite([(1, until)], 1, T0, 3600, "A", None)) == [(0, 10.0), (1800, None)]
    later = prof(2, valid_from=T0 + timedelta(minutes=10), periods=[(0, 8)])
    assert lims(composite([(1, later)], 1, T0, 3600, "A", None)) == [(0, None), (600, 8.0)]
    # a future Absolute start: nothing before it
    future = prof(3, start=T0 + timedelta(minutes=20), periods=[(0, 6)])
    assert lims(composite([(1, future)], 1, T0, 3600, "A", None)) == [(0, None), (1200, 6.0)]
    # a change inside a second shows from the next whole second
    odd = prof(4, valid_to=T0 + timedelta(seconds=10, microseconds=500_000), periods=[(0, 6)])
    assert lims(composite([(1, odd)], 1, T0, 60, "A", None)) == [(0, 6.0), (11, None)]


def test_units_convert_with_voltage_and_phases() -> None:
    amps = prof(1, periods=[(0, 16)])
    assert composite([(1, amps)], 1, T0, 60, "W", None) == [(0, D("11040.0"))]
    assert composite([(1, amps)], 1, T0, 60, "W", None, voltage=220, phases=1) == [(0, D("3520"))]
    one_phase = prof(2, periods=[(0, 16)], phases=1)
    assert composite([(1, one_phase)], 1, T0, 60, "W", None) == [(0, D("3680"))]
    watts = prof(3, unit="W", periods=[(0, 11000)])
    # 11000 / 690 = 15.942...: rounded down, never up
    assert composite([(1, watts)], 1, T0, 60, "A", None) == [(0, D("15.9"))]
    # the minimum is taken in the unit asked for
    cpmax = prof(4, purpose="ChargePointMaxProfile", unit="W", periods=[(0, 7360)])
    assert limit_at([(0, cpmax), (1, amps)], 1, T0, "A", None) == D("10.6")
    assert limit_at([(0, cpmax), (1, amps)], 1, T0, "W", None) == D("7360")


def test_equal_neighbours_are_merged() -> None:
    a = prof(1, stack=0, periods=[(0, 16)])
    b = prof(2, stack=1, duration=600, periods=[(0, 16)])
    c = prof(3, stack=2, start=T0 + timedelta(seconds=300), duration=60, periods=[(0, 16)])
    assert composite([(1, a), (1, b), (1, c)], 1, T0, 3600, "A", None) == [(0, D(16))]


def test_composite_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        composite([], 1, datetime(2027, 1, 1), 60, "A", None)
    with pytest.raises(ValueError, match="duration"):
        composite([], 1, T0, 0, "A", None)
    with pytest.raises(ValueError, match="duration"):
        composite([], 1, T0, 40 * 86_400, "A", None)
    with pytest.raises(ValueError, match="unit"):
        composite([], 1, T0, 60, "kW", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="voltage"):
        composite([], 1, T0, 60, "A", None, voltage=0)
    with pytest.raises(ValueError, match="phases"):
        composite([], 1, T0, 60, "A", None, phases=4)
    with pytest.raises(ValueError, match="connector_id"):
        limit_at([], -1, T0, "A", None)
    with pytest.raises(ValueError, match="transaction"):
        limit_at([], 1, T0, "A", (1, datetime(2027, 1, 1)))


def random_profile(rng: random.Random, pid: int) -> tuple[int, Profile]:
    purpose = rng.choice(["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"])
    kind = rng.choice(["Absolute", "Recurring", "Relative"])
    n = rng.randint(1, 4)
    starts = sorted(rng.sample(range(1, 20_000), n - 1))
    periods = [(s, rng.randint(0, 320) / 10) for s in [0, *starts]]
    recurrency = rng.choice(["Daily", "Weekly"]) if kind == "Recurring" else None
    start = T0 + timedelta(seconds=rng.randint(-200_000, 50_000))
    valid_from = T0 + timedelta(seconds=rng.randint(-5000, 40_000)) if rng.random() < 0.3 else None
    valid_to = None
    if rng.random() < 0.3:
        valid_to = (valid_from or T0) + timedelta(seconds=rng.randint(1, 60_000))
    p = prof(
        pid,
        purpose=purpose,
        kind=kind,
        stack=rng.randint(0, 3),
        periods=periods,
        unit=rng.choice(["A", "W"]),
        start=start,
        duration=rng.choice([None, rng.randint(1, 30_000)]),
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        tx=rng.choice([None, 1, 2]) if purpose == "TxProfile" else None,
        phases=rng.choice([None, 1, 3]),
    )
    connector = 0 if purpose == "ChargePointMaxProfile" else rng.choice([0, 1, 1, 2])
    return connector, p


def test_composite_agrees_with_limit_at_everywhere() -> None:
    """The step function of composite() equals limit_at() at random instants, including
    right at and just before each change, for random stacks of every kind of profile."""
    rng = random.Random(18)
    for _ in range(150):
        installed = [random_profile(rng, i + 1) for i in range(rng.randint(0, 6))]
        tx = (1, T0 - timedelta(seconds=rng.randint(0, 5000)))
        unit = rng.choice(["A", "W"])
        duration = rng.randint(60, 2 * 86_400)
        got = composite(installed, 1, T0, duration, unit, tx)
        assert got[0][0] == 0
        assert all(a[1] != b[1] and a[0] < b[0] for a, b in pairwise(got))
        probes = {rng.randrange(duration) for _ in range(40)}
        probes |= {o for o, _ in got} | {o - 1 for o, _ in got if o > 0}
        for probe in probes:
            expected = next(v for o, v in reversed(got) if o <= probe)
            at = T0 + timedelta(seconds=probe)
            assert limit_at(installed, 1, at, unit, tx) == expected, (installed, probe)


# --------------------------------------------------------------------------------- share


def test_windows_are_validated() -> None:
    assert Window(start="22:00", end="06:00", limit=D(50)).covers(23 * 60)
    for bad in ("8:00", "24:00", "12:60", "noon", "12:00:00"):
        with pytest.raises(ValidationError, match="not a time of day"):
            Window(start=bad, end="13:00", limit=D(1))
    with pytest.raises(ValidationError, match="empty"):
        Window(start="10:00", end="10:00", limit=D(1))
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Window(start="10:00", end="11:00", limit=D(-1))


def test_site_rules_are_validated() -> None:
    SiteRules(
        limit=D(100),
        unit="A",
        windows=[
            Window(start="22:00", end="06:00", limit=D(60)),
            Window(start="06:00", end="08:00", limit=D(80)),
        ],
    )
    with pytest.raises(ValidationError, match="overlap"):
        SiteRules(
            limit=D(100),
            unit="A",
            windows=[
                Window(start="22:00", end="06:00", limit=D(60)),
                Window(start="05:00", end="07:00", limit=D(80)),
            ],
        )
    with pytest.raises(ValidationError, match="overlap"):
        SiteRules(
            limit=D(100),
            unit="A",
            windows=[
                Window(start="23:00", end="01:00", limit=D(60)),
                Window(start="23:30", end="23:45", limit=D(80)),
            ],
        )
    with pytest.raises(ValidationError, match="greater than 0"):
        SiteRules(limit=D(0), unit="A")
    with pytest.raises(ValidationError, match="less than or equal to 80"):
        SiteRules(limit=D(100), unit="A", min_per_evse=D(81))
    for zone in ("Mars/Olympus", "../../etc/passwd", "/etc/localtime", ""):
        with pytest.raises(ValidationError, match="unknown time zone"):
            SiteRules(limit=D(100), unit="A", time_zone=zone)
    with pytest.raises(ValidationError, match="phases"):
        SiteRules(limit=D(100), unit="A", phases=2)
    with pytest.raises(ValidationError, match="unit"):
        SiteRules(limit=D(100), unit="MW")


def test_site_limit_follows_windows_in_local_time() -> None:
    rules = SiteRules(
        limit=D(100),
        unit="A",
        windows=[
            Window(start="18:00", end="21:00", limit=D(60)),
            Window(start="23:00", end="02:00", limit=D(80)),
        ],
    )
    # 17:30 UTC is 18:30 in Lisbon in July (WEST) but 17:30 in January (WET)
    assert site_limit_a(rules, datetime(2027, 7, 1, 17, 30, tzinfo=UTC), None) == 60
    assert site_limit_a(rules, datetime(2027, 1, 15, 17, 30, tzinfo=UTC), None) == 100
    assert site_limit_a(rules, datetime(2027, 1, 15, 21, 0, tzinfo=UTC), None) == 100
    assert site_limit_a(rules, datetime(2027, 1, 15, 23, 0, tzinfo=UTC), None) == 80
    assert site_limit_a(rules, datetime(2027, 1, 16, 1, 59, tzinfo=UTC), None) == 80
    assert site_limit_a(rules, datetime(2027, 1, 16, 2, 0, tzinfo=UTC), None) == 100
    # a dynamic limit lowers, never raises
    assert site_limit_a(rules, datetime(2027, 1, 15, 12, tzinfo=UTC), D(45)) == 45
    assert site_limit_a(rules, datetime(2027, 1, 15, 12, tzinfo=UTC), D(500)) == 100
    assert site_limit_a(rules, datetime(2027, 1, 15, 23, tzinfo=UTC), D("79.99")) == D("79.9")
    with pytest.raises(ValueError, match="timezone-aware"):
        site_limit_a(rules, datetime(2027, 1, 15, 12), None)
    with pytest.raises(ValueError, match=">= 0"):
        site_limit_a(rules, T0, D(-1))


def test_site_limit_in_kw() -> None:
    rules = SiteRules(
        limit=D(69), unit="kW", windows=[Window(start="00:00", end="06:00", limit=D(50))]
    )
    assert site_limit_a(rules, datetime(2027, 1, 15, 12, tzinfo=UTC), None) == 100
    # 50 kW / (230 V x 3) = 72.46 A, rounded down
    assert site_limit_a(rules, datetime(2027, 1, 15, 3, tzinfo=UTC), None) == D("72.4")
    assert site_limit_a(rules, datetime(2027, 1, 15, 12, tzinfo=UTC), D("6.9")) == 10
    single = SiteRules(limit=D(23), unit="kW", phases=1)
    assert site_limit_a(single, T0, None) == 100
    assert site_limit_a(SiteRules(limit=D(22), unit="kW", voltage=400, phases=1), T0, None) == 55


def demands(n: int, **kw: Any) -> list[Demand]:
    return [
        Demand(key=(f"CP{i:02d}", 1), started_at=T0 + timedelta(minutes=i), **kw) for i in range(n)
    ]


def test_ten_stations_on_100_a_get_10_a_each() -> None:
    got = allocate(D(100), demands(10), D(6))
    assert set(got.values()) == {D("10.0")}
    assert len(got) == 10


def test_twenty_stations_on_100_a_the_newest_four_pause() -> None:
    got = allocate(D(100), demands(20), D(6))
    paused = [k for k, v in got.items() if v == 0]
    assert paused == [("CP16", 1), ("CP17", 1), ("CP18", 1), ("CP19", 1)]
    charging = [v for v in got.values() if v > 0]
    assert len(charging) == 16
    # 16 x 6 A = 96 A; the 4 A left are shared: 6.2 or 6.3 A each, 100 A in all
    assert all(D(6) <= v <= D("6.3") for v in charging)
    assert sum(got.values()) == 100


def test_a_car_drawing_3_a_gives_its_surplus_away() -> None:
    ds = demands(3)
    ds[0] = Demand(key=ds[0].key, started_at=ds[0].started_at, drawing_a=D(3))
    got = allocate(D(40), ds, D(6))
    assert got[("CP00", 1)] == 6  # max(min 6 A, 3 A + 2 A headroom)
    assert got[("CP01", 1)] == got[("CP02", 1)] == 17
    # drawing 10 A of a 13.3 A share: kept at 12 A, the others get more
    ds[0] = Demand(key=ds[0].key, started_at=ds[0].started_at, drawing_a=D(10))
    got = allocate(D(40), ds, D(6))
    assert got[("CP00", 1)] == 12 and got[("CP01", 1)] == got[("CP02", 1)] == 14
    # drawing close to its share: not capped
    ds[0] = Demand(key=ds[0].key, started_at=ds[0].started_at, drawing_a=D(12))
    got = allocate(D(40), ds, D(6))
    assert sorted(got.values()) == [D("13.3"), D("13.3"), D("13.4")]


def test_priority_is_served_first_up_to_its_maximum() -> None:
    ds = demands(3)
    ds[2] = Demand(key=ds[2].key, started_at=ds[2].started_at, priority=1)
    got = allocate(D(50), ds, D(6))
    assert got == {("CP00", 1): 9, ("CP01", 1): 9, ("CP02", 1): 32}
    # and is admitted first when not everyone fits
    got = allocate(D(12), ds, D(6))
    assert got == {("CP00", 1): 6, ("CP01", 1): 0, ("CP02", 1): 6}


def test_max_a_caps_and_frees_the_rest() -> None:
    ds = demands(3)
    ds[1] = Demand(key=ds[1].key, started_at=ds[1].started_at, max_a=D(10))
    ds[2] = Demand(key=ds[2].key, started_at=ds[2].started_at, max_a=D(4))  # below min_a
    got = allocate(D(100), ds, D(6))
    assert got == {("CP00", 1): 32, ("CP01", 1): 10, ("CP02", 1): 4}


def test_allocate_edges() -> None:
    assert allocate(D(100), [], D(6)) == {}
    assert set(allocate(D(0), demands(3), D(6)).values()) == {0}
    assert set(allocate(D("5.99"), demands(3), D(0)).values()) == {D("2.0"), D("1.9")}
    with pytest.raises(ValueError, match="twice"):
        allocate(D(100), demands(2) + demands(1), D(6))
    with pytest.raises(ValueError, match="min_a"):
        allocate(D(100), demands(2), D("6.05"))
    with pytest.raises(ValueError, match="limit_a"):
        allocate(D(-1), demands(2), D(6))
    with pytest.raises(ValueError, match="limit_a must be a finite"):
        allocate(Decimal("NaN"), demands(2), D(6))


def test_demand_is_validated() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Demand(key=("a", 1), started_at=datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="max_a"):
        Demand(key=("a", 1), started_at=T0, max_a=D(-1))
    with pytest.raises(ValueError, match="drawing_a"):
        Demand(key=("a", 1), started_at=T0, drawing_a=D(-1))
    with pytest.raises(ValueError, match="key"):
        Demand(key=("a", "1"), started_at=T0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        Demand(key=("a", 1), started_at=T0, priority=1.5)  # type: ignore[arg-type]
    assert Demand(key=("a", 1), started_at=T0, max_a=16).max_a == D(16)  # type: ignore[arg-type]


def _order(d: Demand) -> tuple[int, datetime, tuple[str, int]]:
    return (-d.priority, d.started_at, d.key)


def cap(d: Demand, min_a: Decimal) -> Decimal:
    """A car's cap as allocate() should see it: max_a, or its draw plus 2 A headroom."""
    c = d.max_a
    if d.drawing_a is not None:
        c = min(c, max(min_a, d.drawing_a + 2))
    return c.quantize(D("0.1"), rounding="ROUND_FLOOR")


def test_allocate_invariants_over_random_sites() -> None:
    rng = random.Random(2027)
    tenth = D("0.1")
    for case in range(2500):
        n = rng.randint(0, 40)
        min_a = rng.choice([D(0), D(6), D("6.5"), D(10)])
        limit = D(rng.randint(0, 4000)) / 10 + D(rng.randint(0, 9)) / 100
        ds = []
        for i in range(n):
            ds.append(
                Demand(
                    key=(rng.choice("ABCD"), i),
                    priority=rng.choice([0, 0, 0, 1, 2, -1]),
                    max_a=D(rng.choice([32, 16, 80, rng.randint(0, 800) / 10])),
                    drawing_a=rng.choice([None, None, D(rng.randint(0, 400)) / 10]),
                    started_at=T0 + timedelta(seconds=rng.randint(0, 50)),
                )
            )
        got = allocate(limit, ds, min_a)
        assert set(got) == {d.key for d in ds}, case
        total = sum(got.values(), D(0))
        assert total <= limit, case
        for d in ds:
            a = got[d.key]
            assert a % tenth == 0 and a <= d.max_a, (case, d, a)
            assert a == 0 or a >= min_a or d.max_a < min_a, (case, d, a)
        # the same facts in another order give the same answer
        shuffled = ds[:]
        rng.shuffle(shuffled)
        assert allocate(limit, shuffled, min_a) == got, case
        # if everyone can have the minimum, no one is paused
        floors = [min(min_a, d.max_a.quantize(tenth, rounding="ROUND_FLOOR")) for d in ds]
        if sum(floors, D(0)) <= limit:
            assert all(got[d.key] >= f for d, f in zip(ds, floors, strict=True)), case
        # a car paused for room means less than the minimum was left over
        cap_ok = [d for d in ds if d.max_a >= min_a > 0]
        paused = [d for d in cap_ok if got[d.key] == 0]
        if paused:
            assert limit - total < min_a, case
            # and it came after every car of the same standing that was admitted
            first_paused = min(_order(d) for d in paused)
            assert all(_order(d) < first_paused for d in cap_ok if got[d.key] > 0), case

        # nothing is left unused while a car wants more (work conserving)
        if any(0 < got[d.key] < cap(d, min_a) for d in ds):
            assert limit - total < tenth, case
        # equal shares within a priority among cars that are not at their cap
        for prio in {d.priority for d in ds}:
            free = [got[d.key] for d in ds if d.priority == prio and 0 < got[d.key] < cap(d, min_a)]
            if free:
                assert max(free) - min(free) <= tenth, case


def test_safe_default() -> None:
    assert safe_default_a(D(100), 10, D(6)) == 10
    assert safe_default_a(D(100), 3, D(6)) == D("33.3")
    assert safe_default_a(D(100), 16, D(6)) == D("6.2")
    assert safe_default_a(D(100), 20, D(6)) == 0  # 5 A each is below 6 A: paused
    assert safe_default_a(D(100), 100, D(0)) == 1
    with pytest.raises(ValueError, match="evse_count"):
        safe_default_a(D(100), 0, D(6))
    with pytest.raises(ValueError, match="limit_a"):
        safe_default_a(D(-5), 2, D(6))


def test_worth_sending() -> None:
    assert worth_sending(None, D(16))
    assert worth_sending(D(16), D("15.9"))
    assert not worth_sending(D(16), D(16))
    assert not worth_sending(D(16), D("16.9"))
    assert worth_sending(D(16), D(17))
    assert worth_sending(D(16), D("16.5"), step=D("0.5"))
    with pytest.raises(ValueError, match="step"):
        worth_sending(D(16), D(17), step=D(0))


def test_times_at_the_edge_of_the_calendar_are_errors_or_answers_not_crashes() -> None:
    far = datetime(9999, 12, 30, tzinfo=UTC)
    late = prof(1, start=far, duration=2**31 - 1, periods=[(0, 1), (2**31 - 1, 2)])
    assert composite([(1, late)], 1, datetime(9999, 12, 1, tzinfo=UTC), 172_800, "A", None) == [
        (0, None)
    ]
    ancient = prof(2, kind="Recurring", recurrency="Weekly", start=datetime(1, 1, 1, tzinfo=UTC))
    assert composite([(1, ancient)], 1, T0, 3600, "A", None) == [(0, D(16))]
    with pytest.raises(ValueError, match="year 9999"):
        composite([], 1, datetime(9999, 12, 31, tzinfo=UTC), 86_400, "A", None)


@pytest.mark.parametrize("p", [full_profile(), prof(purpose="TxProfile", tx=3)])
def test_a_profile_stored_as_json_reads_back_equal(p: Profile) -> None:
    """csms keeps profiles as ``model_dump(mode="json")`` (decimals as text, times as ISO)."""
    stored = json.loads(json.dumps(p.model_dump(mode="json")))
    assert Profile.model_validate(stored) == p


def test_next_limit_change_follows_the_local_day() -> None:
    from smartcharge.share import next_limit_change

    rules = SiteRules(
        limit=Decimal(100),
        unit="A",
        windows=[Window(start="08:00", end="22:00", limit=Decimal(64))],
        time_zone="Europe/Lisbon",
    )
    winter = datetime(2026, 12, 6, 7, 59, tzinfo=UTC)  # Lisbon = UTC in winter
    assert next_limit_change(rules, winter) == datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 6, 7, 30, tzinfo=UTC)  # 08:30 in Lisbon (UTC+1)
    assert next_limit_change(rules, summer) == datetime(2026, 7, 6, 21, 0, tzinfo=UTC)
    late = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)  # the end itself is not "after"
    assert next_limit_change(rules, late) == datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert next_limit_change(SiteRules(limit=Decimal(10), unit="A"), winter) is None
