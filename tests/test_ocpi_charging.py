"""Charging periods, energy and totals from OCPP meter data (ocpi_bridge.charging).

Registers are realistic: a station meter that already shows ~1 250 kWh when the session
starts, in Wh, sampled every minute (MOBI.E asks for at most 5 minutes).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpi_types.v2_2_1 import ChargingPeriod

from csms.meter import energy_register_wh, normalise, power_w
from ocpi_bridge.charging import (
    MeterPoint,
    SessionPoint,
    clean_session,
    closed_periods,
    intervals,
    round4,
    session_kwh,
    session_points,
    split_points,
    totals,
)

T0 = datetime(2025, 3, 3, 18, 0, tzinfo=UTC)
START_WH = 1_250_000  # the meter's register at StartTransaction


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def volumes(period: dict[str, Any]) -> dict[str, float]:
    return {d["type"]: d["volume"] for d in period["dimensions"]}


def total(periods: list[dict[str, Any]], kind: str) -> float:
    return round4(sum(volumes(p).get(kind, 0.0) for p in periods))


def steady_hour(power: float | None = 7200.0) -> list[MeterPoint]:
    """60 one-minute samples at a constant 7.2 kW: 120 Wh a minute."""
    return [MeterPoint(at(i), START_WH + 120.0 * i, power) for i in range(1, 61)]


# ------------------------------------------------------------------------------ a full hour


def test_one_hour_of_one_minute_samples() -> None:
    samples = steady_hour()
    # StopTransaction at the same second as the last sample: merged, no empty last period
    points = session_points(START_WH, T0, samples, START_WH + 7200, at(60))
    assert len(points) == 61
    assert points[0] == SessionPoint(T0, 1_250_000.0, None)
    assert points[-1] == SessionPoint(at(60), 1_257_200.0, 7200.0)  # stop reading, sample power

    session = closed_periods(points, "session")
    assert len(session) == 60
    assert session[0] == {
        "start_date_time": "2025-03-03T18:00:00Z",
        "dimensions": [{"type": "ENERGY", "volume": 0.12}, {"type": "POWER", "volume": 7.2}],
    }
    assert session[-1]["start_date_time"] == "2025-03-03T18:59:00Z"
    assert all(volumes(p) == {"ENERGY": 0.12, "POWER": 7.2} for p in session)

    cdr = closed_periods(points, "cdr")
    # 1 minute = 0.016666.. h. Rounded one by one, 60 x 0.0167 = 1.002 h. As running totals:
    # round(1/60) = 0.0167, round(2/60) - 0.0167 = 0.0333 - 0.0167 = 0.0166, then
    # round(3/60) - 0.0333 = 0.05 - 0.0333 = 0.0167 ... and they add up to exactly 1.0
    assert [volumes(p)["TIME"] for p in cdr[:3]] == [0.0167, 0.0166, 0.0167]
    assert total(cdr, "TIME") == 1.0
    assert total(cdr, "ENERGY") == 7.2
    assert volumes(cdr[0]) == {"ENERGY": 0.12, "TIME": 0.0167, "MAX_POWER": 7.2, "MIN_POWER": 7.2}
    assert "PARKING_TIME" not in {d["type"] for p in cdr for d in p["dimensions"]}

    t = totals(points)
    assert (t.total_energy, t.total_time, t.total_charging_time, t.total_parking_time) == (
        7.2,
        1.0,
        1.0,
        0.0,
    )
    assert session_kwh(START_WH, T0, samples, START_WH + 7200, at(60)) == 7.2


def test_realistic_charging_curve_then_parking() -> None:
    """11 kW for 30 min, tapering 20 min, full at minute 50, then plugged in for 10 min."""
    samples = []
    register = float(START_WH)
    for minute in range(1, 61):
        if minute <= 30:
            kw = 11.0
        elif minute <= 50:
            kw = 11.0 - (minute - 30) * 0.5  # 10.5 ... 1.0
        else:
            kw = 0.0
        register += kw * 1000 / 60  # Wh in that minute
        samples.append(MeterPoint(at(minute), float(round(register)), kw * 1000))  # Wh
    points = session_points(START_WH, T0, samples, round(register), at(60, 20))
    cdr = closed_periods(points, "cdr")
    assert len(cdr) == 61  # 60 sample intervals + 20 s between the last sample and the stop
    # minute 31: 10.5 kW sampled at its end, average (11 + 10.5)/2? No: the register rose by
    # 10.5/60 kWh in that minute -> average 10.5 kW, so MAX = MIN = 10.5
    assert volumes(cdr[30])["MAX_POWER"] == 10.5
    # minutes 51..60 and the last 20 s: no energy -> PARKING_TIME
    assert all("PARKING_TIME" in volumes(p) for p in cdr[50:])
    assert all("TIME" in volumes(p) for p in cdr[:50])
    t = totals(points)
    # energy: 30 min x 11 kW = 5.5 kWh; taper 10.5 + 10 + ... + 1.0 (20 values, mean 5.75)
    # for 1 min each = 115 kW.min = 1.91667 kWh; total 7.41667 kWh, the register shows Wh
    assert t.total_energy == 7.417
    # 50 min charging, 10 min 20 s parking = 0.17222 h; total 60 min 20 s = 1.00556 h;
    # charging = total - parking = 1.0056 - 0.1722 = 0.8334 (OCPI's relation; 50 min is 0.8333)
    assert (t.total_time, t.total_parking_time, t.total_charging_time) == (1.0056, 0.1722, 0.8334)
    assert total(cdr, "PARKING_TIME") == t.total_parking_time
    assert total(cdr, "ENERGY") == t.total_energy


def test_periods_are_append_only_while_the_session_runs() -> None:
    """What the bridge relies on to PATCH only new periods, by index."""
    samples = steady_hour()
    samples.insert(10, MeterPoint(at(5, 30), START_WH + 660, 7200.0))  # late, older: dropped
    full = closed_periods(session_points(START_WH, T0, samples), "session")
    for k in range(len(samples) + 1):
        prefix = closed_periods(session_points(START_WH, T0, samples[:k]), "session")
        assert full[: len(prefix)] == prefix
    # the open tail is never emitted: one period fewer than points
    assert len(full) == len(session_points(START_WH, T0, samples)) - 1


def test_deterministic() -> None:
    samples = steady_hour()
    a = closed_periods(session_points(START_WH, T0, samples, START_WH + 7200, at(61)), "cdr")
    b = closed_periods(session_points(START_WH, T0, samples, START_WH + 7200, at(61)), "cdr")
    assert a == b


# ------------------------------------------------------------------------------ bad samples


def test_gap_makes_one_long_period() -> None:
    """The station was offline from minute 10 to 30: one 20-minute period."""
    samples = [s for i, s in enumerate(steady_hour(), start=1) if not 10 < i < 30]
    points = session_points(START_WH, T0, samples)
    cdr = closed_periods(points, "cdr")
    gap = cdr[10]
    assert gap["start_date_time"] == "2025-03-03T18:10:00Z"
    # 20 min x 120 Wh = 2.4 kWh; 20 min = 0.3333 h (running total 0.5 - 0.1667)
    assert volumes(gap)["ENERGY"] == 2.4
    assert volumes(gap)["TIME"] == 0.3333
    assert cdr[11]["start_date_time"] == "2025-03-03T18:30:00Z"


def test_gap_without_power_uses_the_average() -> None:
    # the sample after the gap has no power: POWER = 2.4 kWh / (20/60 h) = 7.2 kW
    samples = [
        MeterPoint(at(10), START_WH + 1200, 7200.0),
        MeterPoint(at(30), START_WH + 3600, None),
    ]
    session = closed_periods(session_points(START_WH, T0, samples), "session")
    assert volumes(session[1]) == {"ENERGY": 2.4, "POWER": 7.2}
    # and a slower average: 1.0 kWh in 20 min = 3 kW
    samples[1] = MeterPoint(at(30), START_WH + 2200, None)
    session = closed_periods(session_points(START_WH, T0, samples), "session")
    assert volumes(session[1]) == {"ENERGY": 1.0, "POWER": 3.0}


def test_out_of_order_and_backwards_samples_are_dropped() -> None:
    good = steady_hour()[:10]
    late = MeterPoint(at(3, 30), START_WH + 420, 7200.0)  # arrives after minute 10
    glitch = MeterPoint(at(10, 30), START_WH + 100, 7200.0)  # register went backwards
    before = MeterPoint(at(-1), START_WH - 120, 7200.0)  # before the start
    no_energy = MeterPoint(at(10, 40), None, 7200.0)
    cleaned = clean_session(START_WH, T0, [before, *good, late, glitch, no_energy])
    assert [(d.sample, d.reason) for d in cleaned.dropped] == [
        (before, "before_start"),
        (late, "time_backwards"),
        (glitch, "energy_backwards"),
        (no_energy, "no_energy"),
    ]
    assert cleaned.points == session_points(START_WH, T0, good)
    assert cleaned.adjustments == []


def test_samples_in_the_same_second_keep_the_first() -> None:
    first = MeterPoint(at(1, 0.2), START_WH + 120, 7200.0)
    again = MeterPoint(at(1, 0.7), START_WH + 121, 7100.0)  # same second once truncated
    begin = MeterPoint(T0, START_WH, 0.0)  # Transaction.Begin sample at the start second
    cleaned = clean_session(START_WH, T0 + timedelta(milliseconds=450), [begin, first, again])
    assert [d.reason for d in cleaned.dropped] == ["duplicate_time", "duplicate_time"]
    assert cleaned.points == [
        SessionPoint(T0, 1_250_000.0, None),
        SessionPoint(at(1), 1_250_120.0, 7200.0),
    ]
    # the OCPI DateTimes are whole seconds, like the points
    assert closed_periods(cleaned.points, "session")[0]["start_date_time"] == (
        "2025-03-03T18:00:00Z"
    )


def test_kwh_and_wh_stations_give_the_same_periods() -> None:
    """Two stations, one reporting the register in kWh, the other in Wh; power in kW / W."""

    def point(minute: int, sampled: list[dict[str, str]]) -> MeterPoint:
        samples = [normalise(s) for s in sampled]
        return MeterPoint(at(minute), energy_register_wh(samples), power_w(samples))

    in_kwh = [
        point(
            i,
            [
                {"value": f"{1250 + 0.123 * i:.3f}", "unit": "kWh"},
                {"value": "7.38", "unit": "kW", "measurand": "Power.Active.Import"},
            ],
        )
        for i in range(1, 11)
    ]
    in_wh = [
        point(
            i,
            [
                {"value": str(1_250_000 + 123 * i)},  # Wh is the default unit
                {"value": "7380", "measurand": "Power.Active.Import"},
            ],
        )
        for i in range(1, 11)
    ]
    # 1250.123 kWh * 1000 is 1250122.9999999998 in binary floating point: kept to the mWh, so
    # no sample looks like a register going backwards
    assert clean_session(START_WH, T0, in_kwh).dropped == []
    a = closed_periods(session_points(START_WH, T0, in_kwh), "cdr")
    b = closed_periods(session_points(START_WH, T0, in_wh), "cdr")
    assert a == b
    assert volumes(a[0]) == {
        "ENERGY": 0.123,
        "TIME": 0.0167,
        "MAX_POWER": 7.38,
        "MIN_POWER": 7.38,
    }


def test_per_phase_power_is_summed_upstream() -> None:
    samples = [
        normalise({"value": "1250.5", "unit": "kWh"}),
        *(
            normalise(
                {"value": "3.7", "unit": "kW", "measurand": "Power.Active.Import", "phase": p}
            )
            for p in ("L1", "L2", "L3")
        ),
    ]
    mp = MeterPoint(at(5), energy_register_wh(samples), power_w(samples))
    period = closed_periods(session_points(START_WH, T0, [mp]), "session")[0]
    # 500 Wh in 5 min is 6 kW on average, but the sample (3 x 3.7 kW) wins for POWER
    assert volumes(period) == {"ENERGY": 0.5, "POWER": 11.1}


def test_missing_power() -> None:
    samples = steady_hour(power=None)
    points = session_points(START_WH, T0, samples)
    session = closed_periods(points, "session")
    assert volumes(session[0])["POWER"] == 7.2  # 0.12 kWh / (1/60 h)
    cdr = closed_periods(points, "cdr")
    assert volumes(cdr[0]) == {"ENERGY": 0.12, "TIME": 0.0167}  # no MAX/MIN without samples


def test_max_and_min_power_bracket_the_average() -> None:
    # 100 Wh in a minute = 6 kW average, 7.2 kW sampled at the end: MAX 7.2, MIN 6
    points = session_points(START_WH, T0, [MeterPoint(at(1), START_WH + 100, 7200.0)])
    assert volumes(closed_periods(points, "cdr")[0]) == {
        "ENERGY": 0.1,
        "TIME": 0.0167,
        "MAX_POWER": 7.2,
        "MIN_POWER": 6.0,
    }


def test_negative_power_is_clamped() -> None:
    points = session_points(START_WH, T0, [MeterPoint(at(1), START_WH, -3.0)])
    assert volumes(closed_periods(points, "session")[0]) == {"ENERGY": 0.0, "POWER": 0.0}
    assert volumes(closed_periods(points, "cdr")[0]) == {
        "ENERGY": 0.0,
        "PARKING_TIME": 0.0167,
        "MAX_POWER": 0.0,
        "MIN_POWER": 0.0,
    }


# ------------------------------------------------------------------------------ start and stop


def test_no_meter_values_at_all() -> None:
    """Only StartTransaction and StopTransaction: one period."""
    points = session_points(START_WH, T0, [], START_WH + 15_432, at(95))
    assert points == [
        SessionPoint(T0, 1_250_000.0, None),
        SessionPoint(at(95), 1_265_432.0, None),
    ]
    # 15.432 kWh in 95 min: average 15.432 / (95/60) = 9.7465 kW
    assert closed_periods(points, "session") == [
        {
            "start_date_time": "2025-03-03T18:00:00Z",
            "dimensions": [
                {"type": "ENERGY", "volume": 15.432},
                {"type": "POWER", "volume": 9.7465},
            ],
        }
    ]
    # 95 min = 1.58333 h; no power sample -> no MAX/MIN_POWER
    assert closed_periods(points, "cdr")[0]["dimensions"] == [
        {"type": "ENERGY", "volume": 15.432},
        {"type": "TIME", "volume": 1.5833},
    ]
    t = totals(points)
    assert (t.total_energy, t.total_time, t.total_parking_time) == (15.432, 1.5833, 0.0)


def test_no_energy_at_all_is_parking() -> None:
    points = session_points(START_WH, T0, [], START_WH, at(30))
    assert closed_periods(points, "cdr")[0]["dimensions"] == [
        {"type": "ENERGY", "volume": 0.0},
        {"type": "PARKING_TIME", "volume": 0.5},
    ]
    t = totals(points)
    assert (t.total_energy, t.total_time, t.total_charging_time, t.total_parking_time) == (
        0.0,
        0.5,
        0.0,
        0.5,
    )


def test_running_session_has_no_stop_point() -> None:
    samples = steady_hour()[:25]
    points = session_points(START_WH, T0, samples)
    assert points[-1] == SessionPoint(at(25), START_WH + 3000.0, 7200.0)
    assert session_kwh(START_WH, T0, samples) == 3.0
    assert session_kwh(START_WH, T0, []) == 0.0
    assert closed_periods(session_points(START_WH, T0, []), "session") == []


def test_stop_before_the_last_samples() -> None:
    """The station's clock was corrected mid-session: two samples are later than the stop."""
    samples = steady_hour()[:40]
    cleaned = clean_session(START_WH, T0, samples, START_WH + 4680, at(38, 30))
    # samples at 39 and 40 min are after the stop (18:38:30)
    assert [(d.sample.timestamp, d.reason) for d in cleaned.dropped] == [
        (at(40), "after_stop"),
        (at(39), "after_stop"),
    ]
    assert cleaned.points[-2:] == [
        SessionPoint(at(38), START_WH + 4560.0, 7200.0),
        SessionPoint(at(38, 30), START_WH + 4680.0, None),
    ]
    t = totals(cleaned.points)
    # the stop reading is authoritative: 4680 Wh; 38.5 min = 0.64167 h
    assert (t.total_energy, t.total_time) == (4.68, 0.6417)


def test_meter_stop_below_the_last_sample() -> None:
    samples = steady_hour()[:10]  # minute 10 reads START + 1200
    cleaned = clean_session(START_WH, T0, samples, START_WH + 1150, at(11))
    assert [(d.sample.timestamp, d.reason) for d in cleaned.dropped] == [
        (at(10), "above_meter_stop")
    ]
    assert cleaned.points[-1] == SessionPoint(at(11), START_WH + 1150.0, None)
    assert totals(cleaned.points).total_energy == 1.15
    assert total(closed_periods(cleaned.points, "cdr"), "ENERGY") == 1.15


def test_impossible_stops_are_corrected_and_reported() -> None:
    samples = steady_hour()[:10]
    # a station that sends meterStop 0
    cleaned = clean_session(START_WH, T0, samples, 0, at(12))
    assert cleaned.points[-1] == SessionPoint(at(12), START_WH + 1200.0, None)
    assert len(cleaned.adjustments) == 1 and "below meter_start" in cleaned.adjustments[0]
    # a stop time before the start (clock reset)
    cleaned = clean_session(START_WH, T0, samples, START_WH + 1300, T0 - timedelta(days=1))
    assert cleaned.points[-1] == SessionPoint(at(10), START_WH + 1300.0, 7200.0)
    assert "before start_time" in cleaned.adjustments[0]
    # no meter_stop at all
    cleaned = clean_session(START_WH, T0, samples, None, at(12))
    assert cleaned.points[-1] == SessionPoint(at(12), START_WH + 1200.0, None)
    assert cleaned.adjustments == ["no meter_stop: the last register read is used"]


def test_stop_in_the_start_second() -> None:
    points = session_points(START_WH, T0, [], START_WH + 5, T0 + timedelta(milliseconds=300))
    assert closed_periods(points, "cdr") == []  # no duration, no period
    assert totals(points).total_energy == 0.005  # but the energy is not lost
    assert session_points(START_WH, T0, [], START_WH, T0) == [SessionPoint(T0, START_WH, None)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs stop_time"):
        session_points(START_WH, T0, [], START_WH + 1)
    with pytest.raises(ValueError, match="naive"):
        session_points(START_WH, datetime(2025, 1, 1), [])
    with pytest.raises(ValueError, match="kind"):
        closed_periods([], "tariff")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="back in time"):
        closed_periods([(at(1), 0.0, None), (at(0), 0.0, None)], "cdr")


# ------------------------------------------------------------------------------ raw series


def test_same_second_points_given_directly_lose_no_energy() -> None:
    raw = [
        (at(0), 1000.0, None),
        (at(0, 0.5), 1010.0, None),  # same second as the start: its energy goes to period 1
        (at(1), 1100.0, None),
        (at(1, 0.9), 1120.0, 6000.0),  # same second: the last one counts
        (at(2), 1200.0, None),
    ]
    periods = closed_periods(raw, "cdr")
    assert [volumes(p)["ENERGY"] for p in periods] == [0.12, 0.08]
    assert totals(raw).total_energy == 0.2


def test_volumes_never_negative_even_for_unclean_input() -> None:
    raw = [
        (at(0), 1000.0, None),
        (at(1), 1500.0, None),
        (at(2), 1200.0, None),
        (at(3), 1600.0, None),
    ]
    energies = [volumes(p)["ENERGY"] for p in closed_periods(raw, "session")]
    assert energies == [0.5, 0.0, 0.1]  # the dip adds nothing; the rise above 1500 counts
    assert all(d["volume"] >= 0 for p in closed_periods(raw, "cdr") for d in p["dimensions"])


def test_energy_volumes_add_up_to_the_session_kwh() -> None:
    """Sub-Wh volumes (interpolated points, 0.1 Wh meters) do not drift when rounded."""
    raw = [(at(m), START_WH + 0.05 * m, None) for m in range(4)]  # 0.05 Wh a minute
    # each period is 0.00005 kWh: one by one, half-up, that is 3 x 0.0001 = 0.0003 kWh for
    # 0.00015 kWh delivered. As running totals: 0.0001 - 0, 0.0001 - 0.0001, 0.0002 - 0.0001
    energies = [volumes(p)["ENERGY"] for p in closed_periods(raw, "session")]
    assert energies == [0.0001, 0.0, 0.0001]
    assert total(closed_periods(raw, "session"), "ENERGY") == totals(raw).total_energy == 0.0002


def test_split_points_interpolates_linearly() -> None:
    points = session_points(START_WH, T0, [MeterPoint(at(10), START_WH + 1000, 6000.0)])
    split = split_points(points, [at(4), at(4, 0.6), at(10), at(20), at(-5)])
    # 1000 Wh over 600 s; at 240 s: 400 Wh; the inserted point takes the end sample's power
    assert split == [points[0], SessionPoint(at(4), START_WH + 400.0, 6000.0), points[1]]
    # a third of a Wh is kept to the mWh
    thirds = split_points(points, [at(0, 1)])
    assert thirds[1].energy_wh == 1_250_001.667
    assert split_points(points, []) == points


def test_intervals_expose_energy_so_far() -> None:
    points = session_points(START_WH, T0, steady_hour()[:3])
    ivs = intervals(points)
    assert [(iv.seconds, int(iv.wh_before), int(iv.wh)) for iv in ivs] == [
        (60, 0, 120),
        (60, 120, 120),
        (60, 240, 120),
    ]
    assert ivs[0].charging and float(ivs[0].kw()) == 7.2


def test_tariff_id_and_schema() -> None:
    points = session_points(START_WH, T0, steady_hour()[:5], START_WH + 600, at(7))
    for kind in ("session", "cdr"):
        periods = closed_periods(points, kind, tariff_id="PT-AC-1")  # type: ignore[arg-type]
        assert all(p["tariff_id"] == "PT-AC-1" for p in periods)
        for p in periods:  # an independent OCPI 2.2.1 model accepts them
            assert ChargingPeriod.from_dict(p).start_date_time == p["start_date_time"]


def test_round4_is_half_up() -> None:
    assert round4(0.00005) == 0.0001  # banker's rounding would give 0.0
    assert round4(2.675) == 2.675
    assert round4(0.12345) == 0.1235
    assert round4(1.00004999) == 1.0
