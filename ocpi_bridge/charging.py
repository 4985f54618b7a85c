"""Charging periods, energy and durations of a session, from OCPP 1.6 meter data.

Pure logic: no I/O, no logging, no clock. Everything here is a deterministic function of its
arguments, so the bridge can rebuild a session's periods from the store at any time and send
only the ones it has not sent yet.

The pipeline is::

    MeterPoint*  --session_points()-->  SessionPoint*  --closed_periods()-->  ChargingPeriod*
                                                       --totals()--------->  CDR totals

1. ``session_points`` (or ``clean_session``, which also says what it dropped and why) turns
   a transaction and its meter values into a clean series: strictly increasing times (whole
   seconds), a non-decreasing energy register, the start reading first and the stop reading
   last.
2. ``split_points`` may insert interpolated points where a tariff restriction changes (the
   instants come from ``ocpi_bridge.pricing.tariff_boundaries``): OCPI wants a new period
   at every moment that changes which price component applies.
3. ``closed_periods`` makes one OCPI ChargingPeriod per interval between consecutive points;
   ``totals`` gives the CDR's total_energy / total_time / total_parking_time.

Units: energy in Wh inside, kWh in OCPI; power in W inside, kW in OCPI; times in whole
seconds inside, hours in OCPI. OCPI numbers carry 4 decimals: every emitted volume is rounded
half-up to 4 decimals (see ``closed_periods`` for how sums are kept exact).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any, Literal, NamedTuple

from csms.ports import to_iso

__all__ = [
    "CleanedSession",
    "DroppedSample",
    "Interval",
    "MeterPoint",
    "SessionPoint",
    "Totals",
    "clean_session",
    "closed_periods",
    "intervals",
    "round4",
    "session_kwh",
    "session_points",
    "split_points",
    "totals",
]

PeriodKind = Literal["session", "cdr"]

_Q4 = Decimal("0.0001")
_Q3 = Decimal("0.001")
_ZERO = Decimal(0)
_SECONDS_PER_HOUR = Decimal(3600)


# ---------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class MeterPoint:
    """One meter value of a transaction, reduced to what periods need.

    Group the store's sampled values by meter value (one timestamp) first, then use
    ``csms.meter.energy_register_wh`` and ``csms.meter.power_w``: both are already
    normalised to Wh and W whatever unit the station used (kWh, kW).
    """

    timestamp: datetime  # UTC, aware
    energy_wh: float | None  # Energy.Active.Import.Register, Wh (None if the sample had none)
    power_w: float | None  # Power.Active.Import, W (None if none)


class SessionPoint(NamedTuple):
    """A point of the cleaned series: (time, energy register in Wh, power in W or None)."""

    time: datetime
    energy_wh: float
    power_w: float | None


@dataclass(frozen=True, slots=True)
class DroppedSample:
    """A meter value left out of the series, and why.

    Reasons: ``no_energy`` (no numeric, finite energy register), ``before_start`` (earlier
    than the transaction start), ``time_backwards`` (earlier than the previous kept point),
    ``duplicate_time`` (same second as the previous kept point; the first one is kept),
    ``energy_backwards`` (register below the previous kept point), ``after_stop`` (later than
    the stop, or at the stop second when the stop replaces it) and ``above_meter_stop``
    (register higher than the stop reading).
    """

    sample: MeterPoint
    reason: str


@dataclass(frozen=True, slots=True)
class CleanedSession:
    """The result of ``clean_session``: the series and everything that was left out.

    ``adjustments`` lists, as short sentences, corrections made to the stop itself (an
    impossible ``meter_stop`` or ``stop_time``). Callers log ``dropped`` and
    ``adjustments`` once (for instance when the CDR is made): the functions here never log,
    because the bridge recomputes the series every time it pushes a Session update.
    """

    points: list[SessionPoint]
    dropped: list[DroppedSample]
    adjustments: list[str]


# ---------------------------------------------------------------------------------- numbers


def _dec(value: float | int | Decimal) -> Decimal:
    """Exact decimal of what a number prints as (so 0.1 is 0.1, not 0.1000000000000000055)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def _wh(value: float | int | Decimal) -> Decimal:
    """An energy in Wh, to the mWh: removes the float noise of kWh -> Wh conversions."""
    return _dec(value).quantize(_Q3, rounding=ROUND_HALF_UP)


def _q4(value: Decimal) -> Decimal:
    return value.quantize(_Q4, rounding=ROUND_HALF_UP)


def round4(value: float | int | Decimal) -> float:
    """An OCPI number: 4 decimals, rounded half-up (away from zero on a tie)."""
    return float(_q4(_dec(value)))


def _second(value: datetime) -> datetime:
    """Whole seconds: the precision of every DateTime we emit (``to_iso`` truncates too)."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: times must be timezone-aware (UTC)")
    return value.replace(microsecond=0)


# ---------------------------------------------------------------------------------- cleaning


def clean_session(
    meter_start_wh: float,
    start_time: datetime,
    points: Iterable[MeterPoint],
    meter_stop_wh: float | None = None,
    stop_time: datetime | None = None,
) -> CleanedSession:
    """The cleaned series of a transaction, with what was dropped and why.

    Rules, in this order:

    - Times are truncated to whole seconds (OCPI DateTimes are emitted to the second).
    - The series starts with ``(start_time, meter_start_wh, None)``.
    - Meter values are taken **in the order given**, not re-sorted: a sample is dropped if it
      has no energy, is before the start, is earlier than the previous kept point, falls in
      the same second as it (the first one is kept), or has a lower register. Passing the
      samples in arrival order makes the series append-only while a session runs, which is
      what lets the bridge PATCH only new periods; a late sample with an older timestamp is
      then dropped instead of rewriting periods already sent.
    - When the transaction stopped (``stop_time`` given), the stop reading is authoritative
      (it is what the station reported in StopTransaction and what the meter shows): kept
      samples later than the stop, or with a register above ``meter_stop_wh``, are dropped
      (from the end, so the series stays monotonic), then the series ends with
      ``(stop_time, meter_stop_wh)``. A sample in the same second as the stop is merged with
      it: the stop's time and reading, the sample's power.
    - An impossible stop is corrected and reported in ``adjustments``: no ``meter_stop_wh``
      or one below ``meter_start_wh`` (a register cannot go backwards; some stations send 0)
      -> the last kept register is used; a ``stop_time`` before ``start_time`` -> the last
      kept time is used.
    - Power is kept as given (it may be None); energy is kept to the mWh.

    Raises ValueError for a ``meter_stop_wh`` without ``stop_time`` or for naive datetimes.
    """
    if meter_stop_wh is not None and stop_time is None:
        raise ValueError("meter_stop_wh needs stop_time")
    start = _second(start_time)
    start_wh = _wh(meter_start_wh)
    kept: list[tuple[datetime, Decimal, float | None, MeterPoint | None]] = [
        (start, start_wh, None, None)
    ]
    dropped: list[DroppedSample] = []
    adjustments: list[str] = []

    for sample in points:
        energy = sample.energy_wh
        if energy is None or not math.isfinite(energy):
            dropped.append(DroppedSample(sample, "no_energy"))
            continue
        t = _second(sample.timestamp)
        wh = _wh(energy)
        last_t, last_wh = kept[-1][0], kept[-1][1]
        if t < start:
            reason = "before_start"
        elif t < last_t:
            reason = "time_backwards"
        elif t == last_t:
            reason = "duplicate_time"
        elif wh < last_wh:
            reason = "energy_backwards"
        else:
            power = sample.power_w
            if power is not None and not math.isfinite(power):
                power = None
            kept.append((t, wh, power, sample))
            continue
        dropped.append(DroppedSample(sample, reason))

    if stop_time is not None:
        stop_t = _second(stop_time)
        last_t, last_wh = kept[-1][0], kept[-1][1]
        if meter_stop_wh is None:
            stop_wh = last_wh
            adjustments.append("no meter_stop: the last register read is used")
        elif _wh(meter_stop_wh) < start_wh:
            stop_wh = last_wh
            adjustments.append(
                f"meter_stop {meter_stop_wh} Wh is below meter_start {meter_start_wh} Wh: "
                f"the last register read ({last_wh} Wh) is used"
            )
        else:
            stop_wh = _wh(meter_stop_wh)
        if stop_t < start:
            adjustments.append(
                f"stop_time {to_iso(stop_t)} is before start_time {to_iso(start)}: "
                f"the last sample time ({to_iso(last_t)}) is used"
            )
            stop_t = last_t
        while len(kept) > 1 and (kept[-1][0] > stop_t or kept[-1][1] > stop_wh):
            t, wh, _, sample = kept.pop()
            assert sample is not None
            dropped.append(
                DroppedSample(sample, "after_stop" if t > stop_t else "above_meter_stop")
            )
        if kept[-1][0] == stop_t and len(kept) > 1:
            _, _, power, sample = kept[-1]
            kept[-1] = (stop_t, stop_wh, power, sample)
        elif kept[-1][0] != stop_t or stop_wh != kept[-1][1]:
            # a zero-length stop after the start keeps its energy in the totals (see totals())
            kept.append((stop_t, stop_wh, None, None))

    series = [SessionPoint(t, float(wh), power) for t, wh, power, _ in kept]
    return CleanedSession(series, dropped, adjustments)


def session_points(
    meter_start_wh: float,
    start_time: datetime,
    points: Iterable[MeterPoint],
    meter_stop_wh: float | None = None,
    stop_time: datetime | None = None,
) -> list[SessionPoint]:
    """The cleaned series (time, register Wh, power W) that periods are built from.

    Same rules as ``clean_session``, which also returns what was dropped and why.
    """
    return clean_session(meter_start_wh, start_time, points, meter_stop_wh, stop_time).points


def session_kwh(
    meter_start_wh: float,
    start_time: datetime,
    points: Iterable[MeterPoint],
    meter_stop_wh: float | None = None,
    stop_time: datetime | None = None,
) -> float:
    """Energy so far in kWh, 4 decimals, never negative: the Session's ``kwh``.

    The difference between the last and the first register of the cleaned series; equal to
    ``totals(...).total_energy`` and to the sum of the periods' ENERGY volumes.
    """
    series = session_points(meter_start_wh, start_time, points, meter_stop_wh, stop_time)
    return totals(series).total_energy


# ---------------------------------------------------------------------------------- intervals


@dataclass(frozen=True, slots=True)
class Interval:
    """The span between two consecutive points of a series.

    ``wh_before`` is the energy delivered since the first point, at ``start``; ``wh`` the
    energy delivered in the interval (never negative); ``power_w`` the power sampled at
    ``end`` (clamped at 0), None when that point has none.
    """

    start: datetime
    end: datetime
    seconds: int
    wh_before: Decimal
    wh: Decimal
    power_w: Decimal | None

    @property
    def charging(self) -> bool:
        """Energy flowed: the interval counts as charging time (TIME), else as PARKING_TIME."""
        return self.wh > 0

    def mean_kw(self) -> Decimal:
        """Average power over the interval in kW: Wh / s * 3600 / 1000."""
        return self.wh * Decimal("3.6") / Decimal(self.seconds)

    def kw(self) -> Decimal:
        """The interval's power in kW: the sample at its end, else the average."""
        if self.power_w is not None:
            return self.power_w / 1000
        return self.mean_kw()


def _runs(points: Sequence[Any]) -> list[tuple[datetime, Decimal, float | None]]:
    """Points grouped by second: (time, first energy of the first group / last energy of the
    others, last power). Raises ValueError if times go backwards."""
    runs: list[tuple[datetime, Decimal, float | None]] = []
    for p in points:
        t, energy, power = _second(p[0]), _wh(p[1]), p[2]
        if runs and t < runs[-1][0]:
            raise ValueError(
                f"points go back in time at {to_iso(t)}: clean them with session_points()"
            )
        if runs and t == runs[-1][0]:
            if len(runs) == 1:
                runs[0] = (t, runs[0][1], power)  # the start reading stays the base
            else:
                runs[-1] = (t, energy, power)
        else:
            runs.append((t, energy, power))
    return runs


def intervals(points: Sequence[Any]) -> list[Interval]:
    """The intervals between consecutive points of a series, zero-length ones skipped.

    Accepts ``SessionPoint``s or any (time, energy_wh, power_w) tuples. Points in the same
    second are merged (the last one counts, except that the first point's register stays the
    base), so no interval is zero-length and no energy is lost. Energies are taken as a
    non-decreasing envelope (a lower register adds nothing), so volumes are never negative.
    """
    runs = _runs(points)
    out: list[Interval] = []
    if not runs:
        return out
    base = runs[0][1]
    done = _ZERO
    for (t0, _, _), (t1, e1, p1) in pairwise(runs):
        reached = max(done, e1 - base)
        power = None if p1 is None else max(_ZERO, _dec(p1))
        out.append(Interval(t0, t1, int((t1 - t0).total_seconds()), done, reached - done, power))
        done = reached
    return out


def split_points(points: Sequence[SessionPoint], at: Iterable[datetime]) -> list[SessionPoint]:
    """The series with a point inserted at every instant of ``at`` inside an interval.

    Used to start a new period where a tariff restriction changes (OCPI 2.2.1 CDR rules:
    such a moment "may be calculated by the CPO ... interpolated using the metering
    information before and after"). The register is interpolated linearly (constant power
    within the interval), to the mWh; the inserted point takes the power sampled at the end
    of its interval, so both halves keep the interval's power. Instants outside the series,
    or on an existing point, are ignored. Times are taken to the second.
    """
    instants = sorted({_second(t) for t in at})
    if not instants or len(points) < 2:
        return list(points)
    out: list[SessionPoint] = [points[0]]
    i = 0
    for a, b in pairwise(points):
        ta, tb = _second(a.time), _second(b.time)
        while i < len(instants) and instants[i] <= ta:
            i += 1
        span = (tb - ta).total_seconds()
        ea, eb = _wh(a.energy_wh), _wh(b.energy_wh)
        while i < len(instants) and instants[i] < tb:
            k = Decimal(int((instants[i] - ta).total_seconds()))
            energy = _wh(ea + (eb - ea) * k / Decimal(int(span)))
            out.append(SessionPoint(instants[i], float(energy), b.power_w))
            i += 1
        out.append(b)
    return out


# ---------------------------------------------------------------------------------- periods


def _hours(seconds: int) -> Decimal:
    return Decimal(seconds) / _SECONDS_PER_HOUR


def closed_periods(
    points: Sequence[Any], kind: PeriodKind, tariff_id: str | None = None
) -> list[dict[str, Any]]:
    """OCPI ChargingPeriods, one per interval between consecutive points.

    A period is closed once the point after it exists; the open tail after the last point is
    never emitted, so while a session runs (and the series only grows) the list for an older
    series is a prefix of the list for a newer one, and the bridge can PATCH only
    ``periods[already_sent:]`` (receivers append the periods of a PATCH).

    ``kind="session"``: ENERGY (kWh) and POWER (kW: the power sampled at the period's end,
    else the average over the period).

    ``kind="cdr"``: ENERGY; TIME (hours) when energy flowed in the period, PARKING_TIME
    (hours) when none did; MAX_POWER and MIN_POWER (kW) when the period's end point has a
    power sample: the highest and lowest of that sample and the period's average power (the
    average is itself reached at some moment, so it bounds the extremes).

    Volumes are never negative and have 4 decimals. ENERGY, TIME and PARKING_TIME are rounded
    as running totals (volume = rounded total after the period - rounded total before it),
    so the volumes of a dimension add up exactly to its rounded session total: 60 one-minute
    periods make 1.0000 h, not 60 x 0.0167 = 1.0020 h. Powers are rounded one by one.

    Periods are not merged: each is one metering interval (or a part of one cut at a tariff
    boundary by ``split_points``), so every volume traces back to two readings. Zero-length
    intervals are skipped. ``tariff_id``, when given, is set on every period.
    """
    if kind not in ("session", "cdr"):
        raise ValueError(f"kind must be 'session' or 'cdr', not {kind!r}")
    periods: list[dict[str, Any]] = []
    charging_s = parking_s = 0
    for iv in intervals(points):
        energy = _q4((iv.wh_before + iv.wh) / 1000) - _q4(iv.wh_before / 1000)
        dims: list[dict[str, Any]] = [{"type": "ENERGY", "volume": float(energy)}]
        if kind == "session":
            dims.append({"type": "POWER", "volume": float(_q4(iv.kw()))})
        else:
            if iv.charging:
                before, charging_s = charging_s, charging_s + iv.seconds
                kind_name = "TIME"
            else:
                before, parking_s = parking_s, parking_s + iv.seconds
                kind_name = "PARKING_TIME"
            hours = _q4(_hours(before + iv.seconds)) - _q4(_hours(before))
            dims.append({"type": kind_name, "volume": float(hours)})
            if iv.power_w is not None:
                sample, mean = iv.power_w / 1000, iv.mean_kw()
                dims.append({"type": "MAX_POWER", "volume": float(_q4(max(sample, mean)))})
                dims.append({"type": "MIN_POWER", "volume": float(_q4(min(sample, mean)))})
        period: dict[str, Any] = {"start_date_time": to_iso(iv.start), "dimensions": dims}
        if tariff_id is not None:
            period["tariff_id"] = tariff_id
        periods.append(period)
    return periods


# ---------------------------------------------------------------------------------- totals


@dataclass(frozen=True, slots=True)
class Totals:
    """The CDR totals of a series, 4 decimals.

    ``total_energy`` kWh; ``total_time`` hours from the first to the last point;
    ``total_parking_time`` hours of the intervals without energy; ``total_charging_time`` =
    ``total_time - total_parking_time`` (the relation OCPI states for the CDR).
    """

    total_energy: float
    total_time: float
    total_charging_time: float
    total_parking_time: float


def totals(points: Sequence[Any]) -> Totals:
    """The CDR totals of a series (see ``Totals``). An empty series gives zeros.

    ``total_energy`` equals the sum of the periods' ENERGY volumes and
    ``total_parking_time`` the sum of their PARKING_TIME volumes. The one case where the
    periods do not carry all the energy is a stop in the same second as the start: there is
    no period, but the energy the registers show is still in ``total_energy``.
    """
    ivs = intervals(points)
    if ivs:
        energy_wh = ivs[-1].wh_before + ivs[-1].wh
    else:
        runs = _runs(points)
        energy_wh = max(_ZERO, _wh(points[-1][1]) - runs[0][1]) if runs else _ZERO
    total_s = sum(iv.seconds for iv in ivs)
    parking_s = sum(iv.seconds for iv in ivs if not iv.charging)
    total_h, parking_h = _q4(_hours(total_s)), _q4(_hours(parking_s))
    return Totals(
        total_energy=float(_q4(energy_wh / 1000)),
        total_time=float(total_h),
        total_charging_time=float(total_h - parking_h),
        total_parking_time=float(parking_h),
    )
