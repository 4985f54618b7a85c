"""OCPI 2.2.1 Tariffs: validation of our definitions and the cost of sessions (ocpi_bridge.pricing).

Every expected amount is worked out by hand in the comments. Sessions are built the way the
bridge builds them: meter values -> session_points -> (tariff_points for the periods).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ocpi_types.v2_2_1 import ChargingPeriod, Tariff
from pydantic import ValidationError

from ocpi_bridge.charging import MeterPoint, SessionPoint, closed_periods, session_points
from ocpi_bridge.pricing import (
    TariffDef,
    price_session,
    tariff_boundaries,
    tariff_points,
)

START_WH = 2_000_000
LISBON = "Europe/Lisbon"


def comp(kind: str, price: float, step: int = 1, vat: float | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"type": kind, "price": price, "step_size": step}
    if vat is not None:
        c["vat"] = vat
    return c


def element(*components: dict[str, Any], **restrictions: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"price_components": list(components)}
    if restrictions:
        e["restrictions"] = restrictions
    return e


def tariff(*elements: dict[str, Any], **fields: Any) -> TariffDef:
    return TariffDef.model_validate(
        {"id": "PT-TEST-1", "currency": "EUR", "elements": list(elements), **fields}
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def charge(
    start: datetime,
    every_min: float,
    steps: int,
    wh_per_step: float,
    power_w: float | None = None,
    stop_after_min: float | None = None,
) -> list[SessionPoint]:
    """A session charging at a constant rate, sampled every ``every_min`` minutes, stopped at
    ``stop_after_min`` (default: at the last sample) with the last register."""
    samples = [
        MeterPoint(start + timedelta(minutes=every_min * i), START_WH + wh_per_step * i, power_w)
        for i in range(1, steps + 1)
    ]
    stop = start + timedelta(minutes=stop_after_min or every_min * steps)
    return session_points(START_WH, start, samples, START_WH + wh_per_step * steps, stop)


def plain(points: list[tuple[float, float, float | None]], start: datetime) -> list[SessionPoint]:
    """A series from (minutes since start, Wh delivered, power W) rows; the first is the start."""
    samples = [
        MeterPoint(start + timedelta(minutes=m), START_WH + wh, p) for m, wh, p in points[1:]
    ]
    last_min, last_wh, _ = points[-1]
    return session_points(
        START_WH, start, samples, START_WH + last_wh, start + timedelta(minutes=last_min)
    )


def starts(points: list[SessionPoint]) -> list[str]:
    return [p["start_date_time"] for p in closed_periods(points, "cdr")]


# ------------------------------------------------------------------------------ simple tariffs


def test_free_of_charge() -> None:
    free = tariff(element(comp("FLAT", 0)))
    costs = price_session(free, charge(utc("2025-03-03T18:00"), 1, 60, 120), LISBON)
    # no VAT given: "no VAT applicable" is not 0 %, so no incl_vat anywhere
    assert costs.cdr_fields() == {
        "total_cost": {"excl_vat": 0.0},
        "total_fixed_cost": {"excl_vat": 0.0},
    }


def test_energy_with_vat_23() -> None:
    t = tariff(element(comp("ENERGY", 0.2567, vat=23)))
    # only start and stop: 12.345 kWh
    points = session_points(
        START_WH, utc("2025-03-03T18:00"), [], START_WH + 12_345, utc("2025-03-03T19:30")
    )
    costs = price_session(t, points, LISBON)
    # 12.345 kWh x 0.2567 = 3.1689615 -> 3.1690; x 1.23 = 3.897822645 -> 3.8978
    assert costs.total_energy_cost == {"excl_vat": 3.169, "incl_vat": 3.8978}
    assert costs.total_cost == {"excl_vat": 3.169, "incl_vat": 3.8978}
    assert costs.total_fixed_cost is None and costs.total_time_cost is None
    assert costs.billed_energy_wh == 12_345


def test_money_is_rounded_half_up() -> None:
    t = tariff(element(comp("ENERGY", 0.05, vat=0)))
    points = session_points(
        START_WH, utc("2025-03-03T18:00"), [], START_WH + 1, utc("2025-03-03T18:01")
    )
    # 0.001 kWh x 0.05 = 0.00005: half-up gives 0.0001 (half-even would give 0.0000);
    # vat 0 is a known 0 %, so incl_vat is there
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 0.0001, "incl_vat": 0.0001}


def test_flat_fee_without_vat_hides_the_total_incl_vat() -> None:
    t = tariff(element(comp("FLAT", 1.0), comp("ENERGY", 0.25, vat=23)))
    points = charge(utc("2025-03-03T18:00"), 10, 4, 1000)  # 4 kWh
    costs = price_session(t, points, LISBON)
    # energy 4 x 0.25 = 1.00, incl 1.23; the flat fee has no VAT -> total without incl_vat
    assert costs.total_fixed_cost == {"excl_vat": 1.0}
    assert costs.total_energy_cost == {"excl_vat": 1.0, "incl_vat": 1.23}
    assert costs.total_cost == {"excl_vat": 2.0}
    t = tariff(element(comp("FLAT", 1.0, vat=23), comp("ENERGY", 0.25, vat=23)))
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 2.0, "incl_vat": 2.46}


def test_unused_dimension_costs_zero_with_vat_known() -> None:
    t = tariff(element(comp("ENERGY", 0.25, vat=23), comp("PARKING_TIME", 1.0)))
    costs = price_session(t, charge(utc("2025-03-03T18:00"), 10, 4, 1000), LISBON)
    # no parking happened: nothing without VAT contributed, so the total keeps incl_vat
    assert costs.total_parking_cost == {"excl_vat": 0.0, "incl_vat": 0.0}
    assert costs.total_cost == {"excl_vat": 1.0, "incl_vat": 1.23}


# ------------------------------------------------------------------------------ time of day


def test_off_peak_across_midnight_and_the_october_dst_change_in_lisbon() -> None:
    """Off-peak 22:00-08:00 local at 0.15/kWh, otherwise 0.30/kWh, VAT 23 %.

    Session Sat 2024-10-26 20:30 UTC (21:30 WEST) -> Sun 2024-10-27 08:30 UTC (08:30 WET) at
    a steady 6 kW (100 Wh a minute), sampled every 20 minutes (20:50, 21:10, ...). Clocks go
    back at 01:00 UTC (02:00 WEST -> 01:00 WET), so the off-peak night lasts 11 real hours:
    22:00 WEST = 21:00 UTC to 08:00 WET = 08:00 UTC.
    """
    t = tariff(
        element(comp("ENERGY", 0.15, vat=23), start_time="22:00", end_time="08:00"),
        element(comp("ENERGY", 0.30, vat=23)),
    )
    points = charge(utc("2024-10-26T20:30"), 20, 36, 2000, 6000.0)
    assert tariff_boundaries(t, points, LISBON) == [
        utc("2024-10-26T21:00"),
        utc("2024-10-27T08:00"),
    ]
    split = tariff_points(t, points, LISBON)
    # 36 sample intervals, two of them cut at a boundary; the DST change itself is no boundary
    assert len(closed_periods(split, "cdr")) == 38
    assert "2024-10-26T21:00:00Z" in starts(split) and "2024-10-27T08:00:00Z" in starts(split)
    assert "2024-10-27T01:00:00Z" not in starts(split)
    # the cut at 21:00 is interpolated: 20:50 + 10 min -> 2000 + 1000 Wh
    assert SessionPoint(utc("2024-10-26T21:00"), START_WH + 3000.0, 6000.0) in split
    costs = price_session(t, points, LISBON)
    # peak: 20:30-21:00 and 08:00-08:30 = 60 min = 6 kWh x 0.30 = 1.80
    # off-peak: 21:00-08:00 UTC = 11 h = 66 kWh x 0.15 = 9.90
    # total 11.70 excl, x 1.23 = 14.391 incl
    assert costs.total_energy_cost == {"excl_vat": 11.7, "incl_vat": 14.391}
    assert costs.total_cost == {"excl_vat": 11.7, "incl_vat": 14.391}


def test_start_time_inside_the_march_dst_gap() -> None:
    """On 2025-03-30 Lisbon jumps from 00:59:59 WET to 02:00 WEST (01:00 UTC): a start_time
    of 01:30 never shows on the clock; the element becomes active at the jump."""
    t = tariff(
        element(comp("ENERGY", 0.10), start_time="01:30", end_time="07:00"),
        element(comp("ENERGY", 0.20)),
    )
    rows = [(40.0 * i, 4000.0 * i, None) for i in range(5)] + [(180, 18_000, None)]  # 6 kW
    points = plain(rows, utc("2025-03-30T00:00"))
    assert tariff_boundaries(t, points, LISBON) == [utc("2025-03-30T01:00")]
    # 00:00-01:00 UTC: 6 kWh x 0.20 = 1.20; 01:00-03:00 UTC: 12 kWh x 0.10 = 1.20
    # (reading 01:30 as 00:30 UTC would give 2.10, as 01:30 UTC 2.70)
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 2.4}


def test_end_time_midnight_means_end_of_day() -> None:
    t = tariff(
        element(comp("ENERGY", 0.40), start_time="20:00", end_time="00:00"),
        element(comp("ENERGY", 0.20)),
    )
    # January: Lisbon = UTC. 19:00 -> 01:00 at 60 Wh/min, samples every 45 min
    points = charge(utc("2025-01-10T19:00"), 45, 8, 2700)
    assert tariff_boundaries(t, points, LISBON) == [
        utc("2025-01-10T20:00"),
        utc("2025-01-11T00:00"),
    ]
    # 19-20: 3.6 kWh x 0.20 = 0.72; 20-24: 14.4 kWh x 0.40 = 5.76; 00-01: 3.6 x 0.20 = 0.72
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 7.2}


def test_day_of_week_across_local_midnight() -> None:
    """Weekend energy 0.20, weekdays 0.30. Fri 2025-06-13 22:30 UTC (23:30 WEST) -> Sat
    00:30 UTC: Saturday starts at 23:00 UTC. 3.6 kW = 60 Wh a minute, samples every 25 min."""
    t = tariff(
        element(comp("ENERGY", 0.20), day_of_week=["SATURDAY", "SUNDAY"]),
        element(comp("ENERGY", 0.30)),
    )
    rows = [(25.0 * i, 1500.0 * i, None) for i in range(5)] + [(120, 7200, None)]
    points = plain(rows, utc("2025-06-13T22:30"))
    assert tariff_boundaries(t, points, LISBON) == [utc("2025-06-13T23:00")]
    # Friday 22:30-23:00: 30 min = 1.8 kWh x 0.30 = 0.54
    # Saturday 23:00-00:30: 90 min = 5.4 kWh x 0.20 = 1.08; total 1.62
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 1.62}


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        # Azores is UTC-1 in January: the day rate starts at 09:00 UTC.
        # night 07:30-09:00 = 90 min = 5.4 kWh x 0.10 = 0.54; day 09:00-09:30 = 1.8 x 0.30 = 0.54
        ("Atlantic/Azores", 1.08),
        # Lisbon and Madeira are UTC in January: day from 08:00 UTC.
        # night 07:30-08:00 = 1.8 kWh x 0.10 = 0.18; day 08:00-09:30 = 5.4 x 0.30 = 1.62
        ("Europe/Lisbon", 1.8),
        ("Atlantic/Madeira", 1.8),
    ],
)
def test_time_zones_of_portugal(zone: str, expected: float) -> None:
    t = tariff(
        element(comp("ENERGY", 0.30), start_time="08:00", end_time="20:00"),
        element(comp("ENERGY", 0.10)),
    )
    points = charge(utc("2025-01-15T07:30"), 20, 6, 1200)  # 3.6 kW, samples at :50, :10, :30
    assert price_session(t, points, zone).total_cost == {"excl_vat": expected}


def test_dates_are_local_and_end_date_is_exclusive() -> None:
    t = tariff(
        element(comp("ENERGY", 0.10), start_date="2025-07-01", end_date="2025-07-02"),
        element(comp("ENERGY", 0.30)),
    )
    # 2025-06-30 22:00 UTC = 23:00 WEST -> 2025-07-01 23:30 UTC = 2025-07-02 00:30 WEST;
    # samples every 150 min; 1 kWh an hour
    rows = [(150.0 * i, 2500.0 * i, None) for i in range(11)] + [(25.5 * 60, 25_500, None)]
    points = plain(rows, utc("2025-06-30T22:00"))
    assert tariff_boundaries(t, points, LISBON) == [
        utc("2025-06-30T23:00"),
        utc("2025-07-01T23:00"),
    ]
    # 22:00-23:00: 1 kWh x 0.30; 23:00-23:00 next day: 24 kWh x 0.10; last 30 min 0.5 x 0.30
    # = 0.30 + 2.40 + 0.15 = 2.85
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 2.85}


# ------------------------------------------------------------------------- power, energy, duration


def test_power_bands() -> None:
    """The specification's max_power example, plus a band in the middle.

    < 16 kW: 0.20/kWh; 16-32 kW: 0.35/kWh; above (fallback): 0.50/kWh.
    """
    t = tariff(
        element(comp("ENERGY", 0.20), max_power=16),
        element(comp("ENERGY", 0.35), max_power=32),
        element(comp("ENERGY", 0.50)),
    )
    start = utc("2025-03-03T10:00")
    rows = [
        (0, 0, None),
        (10, 1000, 6000.0),  # 1 kWh at 6 kW
        *((10 + 10 * i, 1000 + 8000 * i, 48000.0) for i in range(1, 6)),  # 40 kWh at 48 kW
        (66, 43000, 20000.0),  # 2 kWh in 6 min at 20 kW
        (73.5, 43500, 4000.0),  # 0.5 kWh in 7.5 min at 4 kW
    ]
    points = plain(rows, start)
    costs = price_session(t, points, LISBON)
    # 1 x 0.20 + 40 x 0.50 + 2 x 0.35 + 0.5 x 0.20 = 0.20 + 20.00 + 0.70 + 0.10 = 21.00
    assert costs.total_cost == {"excl_vat": 21.0}
    # max_power is exclusive: exactly 16 kW is in the 0.35 band
    edge = plain([(0, 0, None), (60, 16000, 16000.0)], start)
    assert price_session(t, edge, LISBON).total_cost == {"excl_vat": 5.6}  # 16 x 0.35


def test_power_without_samples_uses_the_average() -> None:
    t = tariff(element(comp("ENERGY", 0.20), max_power=16), element(comp("ENERGY", 0.50)))
    start = utc("2025-03-03T10:00")
    # 11 kWh in 30 min = 22 kW on average, no power sample: fallback 0.50 -> 5.50
    fast = plain([(0, 0, None), (30, 11000, None)], start)
    assert price_session(t, fast, LISBON).total_cost == {"excl_vat": 5.5}


def test_energy_threshold_is_cut_where_it_is_reached() -> None:
    """First 10 kWh at 0.20, then 0.30. 12 kW = 200 Wh a minute, samples every 7 minutes."""
    t = tariff(element(comp("ENERGY", 0.20), max_kwh=10), element(comp("ENERGY", 0.30)))
    start = utc("2025-03-03T10:00")
    points = charge(start, 7, 9, 1400)  # 63 min, 12.6 kWh
    # 10 kWh is reached at 10000 / 200 = 50 min, inside the 49-56 min interval
    assert tariff_boundaries(t, points, LISBON) == [start + timedelta(minutes=50)]
    # 10 x 0.20 + 2.6 x 0.30 = 2.00 + 0.78 = 2.78
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 2.78}
    # a threshold between two seconds: 10000.1 Wh is passed 0.03 s after 50:00 -> cut at 50:01
    t2 = tariff(element(comp("ENERGY", 0.20), max_kwh=10.0001), element(comp("ENERGY", 0.30)))
    assert tariff_boundaries(t2, points, LISBON) == [start + timedelta(minutes=50, seconds=1)]


def test_duration_threshold() -> None:
    """Charging time free for the first 30 minutes, then 2.40/h; samples every 7 minutes."""
    t = tariff(
        element(comp("TIME", 0), max_duration=1800),
        element(comp("TIME", 2.40)),
    )
    start = utc("2025-03-03T10:00")
    points = plain([(7.0 * i, 700.0 * i, None) for i in range(7)] + [(45, 4500, None)], start)
    assert tariff_boundaries(t, points, LISBON) == [start + timedelta(minutes=30)]
    costs = price_session(t, points, LISBON)
    # 15 min x 2.40/h = 0.60; all 45 min are billed TIME (30 of them at 0)
    assert costs.total_time_cost == {"excl_vat": 0.6}
    assert costs.billed_time_s == 2700


# ------------------------------------------------------------------------------ parking and steps


def charge_then_park(charge_min: int, park_min: int) -> list[SessionPoint]:
    """Charging at 6 kW with a sample every minute, then plugged in without energy."""
    start = utc("2025-03-03T10:00")
    rows: list[tuple[float, float, float | None]] = [(0, 0, None)]
    rows += [(m, 100.0 * m, 6000.0) for m in range(1, charge_min + 1)]
    rows += [(charge_min + m, 100.0 * charge_min, 0.0) for m in range(1, park_min + 1)]
    return plain(rows, start)


def test_parking_time_with_steps_like_the_specification() -> None:
    """OCPI 2.2.1 CDR module example: steps of 5 minutes for both, 21 min charging then 7 min
    parking: charging is billed 21 min (not 25), parking 10 min."""
    t = tariff(element(comp("TIME", 1.20, step=300), comp("PARKING_TIME", 2.40, step=300)))
    costs = price_session(t, charge_then_park(21, 7), LISBON)
    assert (costs.billed_time_s, costs.billed_parking_s) == (21 * 60, 10 * 60)
    # TIME 21/60 h x 1.20 = 0.42; PARKING 10/60 h x 2.40 = 0.40; total 0.82
    assert costs.total_time_cost == {"excl_vat": 0.42}
    assert costs.total_parking_cost == {"excl_vat": 0.4}
    assert costs.total_cost == {"excl_vat": 0.82}


def test_parking_step_second_example() -> None:
    """The other example: 10-minute steps, 21 min charging, 16 min parking -> 20 min."""
    t = tariff(element(comp("TIME", 1.00, step=600), comp("PARKING_TIME", 2.00, step=600)))
    costs = price_session(t, charge_then_park(21, 16), LISBON)
    # TIME 21/60 x 1.00 = 0.35; PARKING 20/60 x 2.00 = 0.66666.. -> 0.6667; total 1.0167
    assert costs.total_cost == {"excl_vat": 1.0167}
    assert costs.billed_parking_s == 1200


def test_time_step_applies_when_parking_is_not_priced() -> None:
    t = tariff(element(comp("TIME", 1.20, step=900)))
    costs = price_session(t, charge_then_park(21, 7), LISBON)
    # no PARKING_TIME component: the charging time 21 min is rounded up to 30 min (15-min
    # steps) -> 0.5 h x 1.20 = 0.60; the 7 parking minutes are free
    assert costs.billed_time_s == 1800
    assert costs.total_cost == {"excl_vat": 0.6}
    assert costs.total_parking_cost is None


def test_energy_step_over_two_elements() -> None:
    """CDR module example: 0.20 before 17:00 and 0.27 after, both in 500 Wh steps; 4.3 kWh
    before and 1.1 kWh after = 5.4 kWh, rounded to 5.5 kWh in total (not 1.1 -> 1.5)."""
    t = tariff(
        element(comp("ENERGY", 0.20, step=500), end_time="17:00"),
        element(comp("ENERGY", 0.27, step=500)),
    )
    start = utc("2025-01-20T16:00")  # January: Lisbon = UTC
    points = plain([(0, 0, None), (60, 4300, None), (120, 5400, None)], start)
    costs = price_session(t, points, LISBON)
    # 4.3 x 0.20 = 0.86; (1.1 + 0.1 of step) x 0.27 = 0.324; total 1.184
    assert costs.billed_energy_wh == 5500
    assert costs.total_energy_cost == {"excl_vat": 1.184}


def test_time_step_over_two_elements() -> None:
    """CDR module example: 5 EUR/h before 17:00, 7 EUR/h after, 10-minute steps; 6 min
    before and 22 min after = 28 min -> 30 min: 24 min billed after 17:00."""
    t = tariff(
        element(comp("TIME", 5.00, step=600), end_time="17:00"),
        element(comp("TIME", 7.00, step=600)),
    )
    start = utc("2025-01-20T16:54")
    points = plain([(0, 0, None), (6, 600, None), (28, 2800, None)], start)
    costs = price_session(t, points, LISBON)
    # 6/60 h x 5 = 0.50; 24/60 h x 7 = 2.80; total 3.30
    assert costs.billed_time_s == 1800
    assert costs.total_time_cost == {"excl_vat": 3.3}


@pytest.mark.parametrize(
    ("step", "billed_wh", "excl"),
    [
        (1, 116, 0.029),  # 115.2 Wh -> 116 Wh x 0.25/kWh = 0.029
        (25, 125, 0.0313),  # 125 Wh x 0.25 = 0.03125 -> half-up 0.0313
        (500, 500, 0.125),  # 500 Wh x 0.25 = 0.125
    ],
)
def test_energy_step_sizes_of_the_specification(step: int, billed_wh: int, excl: float) -> None:
    t = tariff(element(comp("ENERGY", 0.25, step=step)))
    points = session_points(
        START_WH, utc("2025-03-03T10:00"), [], START_WH + 115.2, utc("2025-03-03T10:02")
    )
    costs = price_session(t, points, LISBON)
    assert (costs.billed_energy_wh, costs.total_cost) == (billed_wh, {"excl_vat": excl})


# ------------------------------------------------------------------------------ bounds and order


def test_min_and_max_price() -> None:
    energy = element(comp("ENERGY", 0.25, vat=23))
    small = charge(utc("2025-03-03T10:00"), 10, 4, 1000)  # 4 kWh: 1.00 / 1.23
    large = charge(utc("2025-03-03T10:00"), 10, 4, 10_000)  # 40 kWh: 10.00 / 12.30
    bounded = tariff(
        energy,
        min_price={"excl_vat": 2.0, "incl_vat": 2.46},
        max_price={"excl_vat": 5.0, "incl_vat": 6.15},
    )
    low = price_session(bounded, small, LISBON)
    assert low.total_cost == {"excl_vat": 2.0, "incl_vat": 2.46}
    assert low.total_energy_cost == {"excl_vat": 1.0, "incl_vat": 1.23}  # parts unchanged
    assert low.notes == ("total_cost set by min_price",)
    assert price_session(bounded, large, LISBON).total_cost == {"excl_vat": 5.0, "incl_vat": 6.15}
    # in between: untouched
    middle = charge(utc("2025-03-03T10:00"), 10, 4, 3000)  # 12 kWh: 3.00 / 3.69
    assert price_session(bounded, middle, LISBON).total_cost == {"excl_vat": 3.0, "incl_vat": 3.69}
    # a bound without incl_vat that moves excl_vat: incl_vat would no longer match, left out
    no_vat_bound = tariff(energy, min_price={"excl_vat": 2.0})
    assert price_session(no_vat_bound, small, LISBON).total_cost == {"excl_vat": 2.0}


def test_element_order_matters() -> None:
    """A fast-charging price (min_power 22 kW) must come before the unrestricted fallback."""
    fast = element(comp("ENERGY", 0.50), min_power=22)
    normal = element(comp("ENERGY", 0.30))
    start = utc("2025-03-03T10:00")
    # 12 min at 50 kW = 10 kWh, then 30 min at 10 kW = 5 kWh
    points = plain([(0, 0, None), (12, 10_000, 50_000.0), (42, 15_000, 10_000.0)], start)
    # fast first: 10 x 0.50 + 5 x 0.30 = 6.50
    assert price_session(tariff(fast, normal), points, LISBON).total_cost == {"excl_vat": 6.5}
    # fallback first: it always matches, 15 x 0.30 = 4.50
    assert price_session(tariff(normal, fast), points, LISBON).total_cost == {"excl_vat": 4.5}


def test_per_dimension_selection() -> None:
    """An element without an ENERGY component does not stop the search for ENERGY."""
    t = tariff(
        element(comp("TIME", 1.00)),
        element(comp("ENERGY", 0.30)),
    )
    points = charge(utc("2025-03-03T10:00"), 30, 2, 3000)  # 1 h, 6 kWh
    costs = price_session(t, points, LISBON)
    assert (costs.total_time_cost, costs.total_energy_cost) == (
        {"excl_vat": 1.0},
        {"excl_vat": 1.8},
    )


def test_flat_fee_matches_at_the_session_start_only() -> None:
    # a flat fee restricted to the evening: the session starts at 19:50 (January, UTC)
    t = tariff(element(comp("FLAT", 2.0), start_time="20:00"), element(comp("ENERGY", 0.2)))
    before = charge(utc("2025-01-20T19:50"), 20, 3, 1000)
    # nothing contributed: 0, and 0 including VAT whatever the VAT would have been
    assert price_session(t, before, LISBON).total_fixed_cost == {"excl_vat": 0.0, "incl_vat": 0.0}
    after = charge(utc("2025-01-20T20:00"), 20, 3, 1000)
    assert price_session(t, after, LISBON).total_fixed_cost == {"excl_vat": 2.0}


def test_a_session_with_only_its_start() -> None:
    t = tariff(element(comp("FLAT", 1.5, vat=23)), element(comp("ENERGY", 0.3, vat=23)))
    points = session_points(START_WH, utc("2025-03-03T10:00"), [])
    costs = price_session(t, points, LISBON)
    assert costs.total_cost == {"excl_vat": 1.5, "incl_vat": 1.845}  # 1.5 x 1.23
    # a power-restricted flat fee cannot match without an interval
    t = tariff(element(comp("FLAT", 1.5), min_power=1))
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 0.0, "incl_vat": 0.0}


def test_running_session_costs_so_far() -> None:
    t = tariff(element(comp("ENERGY", 0.25, vat=23)))
    samples = [
        MeterPoint(utc("2025-03-03T10:00") + timedelta(minutes=m), START_WH + 120.0 * m, 7200.0)
        for m in range(1, 26)
    ]
    points = session_points(START_WH, utc("2025-03-03T10:00"), samples)
    # 25 min x 120 Wh = 3 kWh x 0.25 = 0.75, incl 0.9225
    assert price_session(t, points, LISBON).total_cost == {"excl_vat": 0.75, "incl_vat": 0.9225}


def test_reservation_elements_and_current_restrictions() -> None:
    t = tariff(
        element(comp("TIME", 9.0), reservation="RESERVATION"),  # reservations only
        element(comp("ENERGY", 0.9), max_current=1),  # ignored: we keep no current
        element(comp("ENERGY", 0.1)),
    )
    points = charge(utc("2025-03-03T10:00"), 30, 2, 3000)  # 6 kWh
    costs = price_session(t, points, LISBON)
    assert costs.total_time_cost == {"excl_vat": 0.0, "incl_vat": 0.0}  # nothing contributed
    assert costs.total_energy_cost == {"excl_vat": 5.4}  # 6 x 0.9


def test_session_periods_with_boundaries_stay_append_only() -> None:
    t = tariff(
        element(comp("ENERGY", 0.15), start_time="22:00", end_time="08:00"),
        element(comp("ENERGY", 0.30)),
    )
    start = utc("2024-10-26T20:30")
    samples = [
        MeterPoint(start + timedelta(minutes=20 * i), START_WH + 2000.0 * i, 6000.0)
        for i in range(1, 37)
    ]
    full = closed_periods(
        tariff_points(t, session_points(START_WH, start, samples), LISBON), "session"
    )
    for k in range(len(samples) + 1):
        series = tariff_points(t, session_points(START_WH, start, samples[:k]), LISBON)
        prefix = closed_periods(series, "session")
        assert full[: len(prefix)] == prefix
    for p in full:
        ChargingPeriod.from_dict(p)


def test_unknown_time_zone_and_empty_series() -> None:
    t = tariff(element(comp("FLAT", 1)))
    with pytest.raises(ValueError, match="unknown time zone"):
        price_session(t, session_points(START_WH, utc("2025-01-01T00:00"), []), "Europe/Porto")
    with pytest.raises(ValueError, match="no points"):
        price_session(t, [], LISBON)


# ------------------------------------------------------------------------------ the model


FULL = {
    "id": "PT-AC-2025",
    "currency": "EUR",
    "type": "REGULAR",
    "tariff_alt_text": [{"language": "pt", "text": "0,25 EUR/kWh + 1 EUR por carregamento"}],
    "tariff_alt_url": "https://example.pt/tarifas",
    "min_price": {"excl_vat": 0.5, "incl_vat": 0.615},
    "max_price": {"excl_vat": 50, "incl_vat": 61.5},
    "elements": [
        {
            "price_components": [
                {"type": "ENERGY", "price": 0.15, "vat": 23, "step_size": 1},
                {"type": "PARKING_TIME", "price": 0, "vat": 23, "step_size": 60},
            ],
            "restrictions": {
                "start_time": "22:00",
                "end_time": "08:00",
                "start_date": "2025-01-01",
                "end_date": "2026-01-01",
                "min_kwh": 0,
                "max_kwh": 200.5,
                "min_current": 0,
                "max_current": 63,
                "min_power": 0,
                "max_power": 22,
                "min_duration": 0,
                "max_duration": 86400,
                "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"],
            },
        },
        {
            "price_components": [
                {"type": "FLAT", "price": 1, "vat": 23, "step_size": 1},
                {"type": "ENERGY", "price": 0.25, "vat": 23, "step_size": 1},
                {"type": "TIME", "price": 0.6, "vat": 23, "step_size": 60},
            ]
        },
        {
            "price_components": [{"type": "TIME", "price": 2, "step_size": 60}],
            "restrictions": {"reservation": "RESERVATION"},
        },
    ],
    "start_date_time": "2025-01-01T00:00:00Z",
    "end_date_time": "2026-01-01T00:00:00.250Z",
    "energy_mix": {
        "is_green_energy": True,
        "energy_sources": [
            {"source": "SOLAR", "percentage": 60},
            {"source": "WIND", "percentage": 40},
        ],
        "environ_impact": [{"category": "CARBON_DIOXIDE", "amount": 0}],
        "supplier_name": "Cooperativa Exemplo",
    },
}


def test_full_tariff_validates_and_serialises() -> None:
    t = TariffDef.model_validate(FULL)
    out = t.to_ocpi("PT", "MOB", datetime(2025, 2, 1, 12, 0, 0, 123456, tzinfo=UTC))
    assert list(out)[:3] == ["country_code", "party_id", "id"]
    assert out["last_updated"] == "2025-02-01T12:00:00Z"
    assert out["start_date_time"] == "2025-01-01T00:00:00Z"
    assert out["end_date_time"] == "2026-01-01T00:00:00Z"  # kept to the second
    assert out["elements"][1]["price_components"][0] == {
        "type": "FLAT",
        "price": 1.0,
        "vat": 23.0,
        "step_size": 1,
    }
    assert "restrictions" not in out["elements"][1]  # None fields are omitted
    # an independent OCPI 2.2.1 model reads it back identically
    assert Tariff.from_dict(out).to_dict() == out
    # what the admin API stores (model_dump as JSON) validates again to the same tariff
    assert TariffDef.model_validate(t.model_dump(mode="json", exclude_none=True)) == t


def test_minimal_tariff_omits_everything_optional() -> None:
    t = tariff(element(comp("FLAT", 0)))
    assert t.to_ocpi("PT", "EDP", utc("2025-01-01T00:00")) == {
        "country_code": "PT",
        "party_id": "EDP",
        "id": "PT-TEST-1",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "FLAT", "price": 0.0, "step_size": 1}]}],
        "last_updated": "2025-01-01T00:00:00Z",
    }
    with pytest.raises(ValueError, match="party_id"):
        t.to_ocpi("PT", "EDPX", utc("2025-01-01T00:00"))
    with pytest.raises(ValueError, match="country_code"):
        t.to_ocpi("PRT", "EDP", utc("2025-01-01T00:00"))


def test_datetimes_are_accepted_in_several_shapes_and_kept_in_utc() -> None:
    base = {"id": "T", "currency": "EUR", "elements": [element(comp("FLAT", 0))]}
    for text in ("2025-06-01T10:00:00Z", "2025-06-01T10:00:00", "2025-06-01T11:00:00+01:00"):
        t = TariffDef.model_validate({**base, "start_date_time": text})
        assert t.start_date_time == utc("2025-06-01T10:00")
    t = TariffDef.model_validate(
        {**base, "start_date_time": "2025-06-01T10:00:00Z", "end_date_time": "2025-07-01T00:00:00Z"}
    )
    assert t.is_active(utc("2025-06-01T10:00"))
    assert not t.is_active(utc("2025-06-01T09:59"))
    assert not t.is_active(utc("2025-07-01T00:00"))  # end exclusive


def errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        TariffDef.model_validate(body)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def with_element(**changes: Any) -> dict[str, Any]:
    return {"id": "T", "currency": "EUR", "elements": [element(comp("ENERGY", 0.2), **changes)]}


def test_field_errors_are_clear() -> None:
    base = {"id": "T", "currency": "EUR", "elements": [element(comp("FLAT", 0))]}
    assert errors({**base, "colour": "red"}) == [("colour", "Extra inputs are not permitted")]
    assert errors({**base, "currency": "eur"}) == [
        ("currency", "Value error, must be an ISO 4217 code (3 uppercase letters), not 'eur'")
    ]
    assert errors({**base, "id": "x" * 37}) == [("id", "Value error, must be 1 to 36 characters")]
    assert errors({**base, "id": "tab\there"})[0][1].endswith("(no tab, CR or LF) are allowed")
    assert errors({**base, "elements": []})[0][0] == "elements"
    assert errors({**base, "tariff_alt_url": "ftp://x"})[0][0] == "tariff_alt_url"
    assert (
        "markup"
        in errors({**base, "tariff_alt_text": [{"language": "pt", "text": "<b>barato</b>"}]})[0][1]
    )
    assert errors({**base, "tariff_alt_text": [{"language": "PT", "text": "x"}]})[0][0] == (
        "tariff_alt_text.0.language"
    )
    assert errors({**base, "start_date_time": "amanhã"})[0][1].startswith("Value error, not an ISO")
    assert (
        "max_price"
        in errors({**base, "min_price": {"excl_vat": 2}, "max_price": {"excl_vat": 1}})[0][1]
    )
    assert "incl_vat" in errors({**base, "min_price": {"excl_vat": 2, "incl_vat": 1}})[0][1]


def test_price_component_errors() -> None:
    def body(**c: Any) -> dict[str, Any]:
        return {"id": "T", "currency": "EUR", "elements": [{"price_components": [c]}]}

    ok = {"type": "ENERGY", "price": 0.25, "step_size": 1}
    assert TariffDef.model_validate(body(**ok))
    loc = "elements.0.price_components.0"
    assert errors(body(**{**ok, "price": -1}))[0][0] == f"{loc}.price"
    assert errors(body(**{**ok, "price": 0.12345}))[0] == (
        f"{loc}.price",
        "Value error, at most 4 decimals (OCPI number)",
    )
    assert errors(body(**{**ok, "price": "0.25"}))[0] == (
        f"{loc}.price",
        "Input should be a valid number",
    )
    assert errors(body(**{**ok, "step_size": 0}))[0][0] == f"{loc}.step_size"
    assert errors(body(**{**ok, "step_size": 1.5}))[0][0] == f"{loc}.step_size"
    assert errors(body(**{**ok, "vat": 123}))[0][0] == f"{loc}.vat"
    assert errors(body(**{**ok, "type": "energy"}))[0][0] == f"{loc}.type"
    assert errors(body(**{k: v for k, v in ok.items() if k != "step_size"}))[0] == (
        f"{loc}.step_size",
        "Field required",
    )
    two = {"id": "T", "currency": "EUR", "elements": [{"price_components": [ok, ok]}]}
    assert "one price component per dimension" in errors(two)[0][1]


def test_restriction_errors() -> None:
    loc = "elements.0.restrictions"
    assert errors(with_element(start_time="24:00"))[0][0] == f"{loc}.start_time"
    assert errors(with_element(end_time="8:00"))[0][0] == f"{loc}.end_time"
    assert errors(with_element(start_date="2025-02-30"))[0] == (
        f"{loc}.start_date",
        "Value error, '2025-02-30' is not a real calendar date",
    )
    assert errors(with_element(day_of_week=["monday"]))[0][0] == f"{loc}.day_of_week.0"
    assert errors(with_element(day_of_week=[]))[0][0] == f"{loc}.day_of_week"
    assert "twice" in errors(with_element(day_of_week=["MONDAY", "MONDAY"]))[0][1]
    assert "min_kwh must be below max_kwh" in errors(with_element(min_kwh=10, max_kwh=10))[0][1]
    assert (
        "start_time equals end_time"
        in errors(with_element(start_time="08:00", end_time="08:00"))[0][1]
    )
    assert TariffDef.model_validate(with_element(start_time="00:00", end_time="00:00"))
    assert "end_date" in errors(with_element(start_date="2025-02-01", end_date="2025-02-01"))[0][1]
    assert errors(with_element(min_duration=-1))[0][0] == f"{loc}.min_duration"
    assert errors(with_element(max_power=True))[0][0] == f"{loc}.max_power"
    assert errors(with_element(weekday="MONDAY"))[0] == (
        f"{loc}.weekday",
        "Extra inputs are not permitted",
    )
    # a reservation element may only price FLAT and TIME
    assert "reservation" in errors(with_element(reservation="RESERVATION"))[0][1]
