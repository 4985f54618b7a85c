"""How a simulated charger obeys OCPP 1.6 charging profiles (section 3.13): a pure core.

The station (:mod:`charger_sim.station`) feeds this module its installed profiles, its
transactions and ``now``, and gets back decisions: the limit of each connector, whether it is
suspended, how much energy a ramping car draws over an interval, the composite schedule,
and why a SetChargingProfile must be rejected. Nothing here does I/O, so a test can check
the limit math without a websocket, and the station can replay a simulated day quickly.

This is deliberately the charger's own, simpler logic, not csms's (``smartcharge``): a real
charger computes its own limit, and the site tests are only meaningful if the two sides are
written independently.

Rules (OCPP 1.6, 3.13):

* Per purpose, at an instant, the profile that applies is the valid one (validFrom/validTo,
  its schedule started and not past its duration) with the highest stack level.
* On a connector with a transaction, a TxProfile (of that transaction, or without
  transactionId) beats the TxDefaultProfile; a TxDefaultProfile on the connector beats one
  on connector 0.
* The connector's limit is the minimum of that and the ChargePointMaxProfile (connector 0).
* Absolute schedules start at startSchedule (when absent: when the station received the
  profile); Relative ones at the transaction's start (no transaction: "now", i.e. their first
  period); Recurring ones repeat every day or week from startSchedule.
* Limits in A are per phase; W = A x voltage x phases, with the period's numberPhases
  (default 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
KINDS = ("Absolute", "Recurring", "Relative")
_CYCLES = {"Daily": timedelta(days=1), "Weekly": timedelta(days=7)}
_UNITS_BY_KEY = {"Current": "A", "Power": "W"}
DEFAULT_PHASES = 3
_MAX_SECONDS = 2**31 - 1  # (OCPP's integers; keeps every date arithmetic in range)
_MAX_LIMIT = 10_000_000.0  # 10 MW or 10 MA: anything above is nonsense, not a limit
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)


class ProfileError(ValueError):
    """A charging profile the station cannot use (the reason is the message)."""


class SimClock:
    """A clock that moves only when told: pass it as ``Station(..., clock=SimClock(start))``.

    Calling it returns the current (aware, UTC) time. :meth:`advance` and :meth:`set` only
    move the time; :meth:`charger_sim.Station.advance` moves it and lets the station catch up
    (energy, periodic MeterValues, suspensions) for the elapsed time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("SimClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward ``seconds`` (never backwards); return the new time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"SimClock.advance: seconds must be finite and >= 0, not {seconds}")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, moment: datetime) -> datetime:
        """Jump to ``moment`` (aware, not before the current time)."""
        if moment.tzinfo is None:
            raise ValueError("SimClock.set needs an aware datetime")
        if moment < self._now:
            raise ValueError("SimClock cannot go backwards")
        self._now = moment.astimezone(UTC)
        return self._now


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Period:
    start: int  # seconds from the schedule's start
    limit: float  # in the schedule's unit
    phases: int | None


@dataclass(frozen=True)
class Profile:
    """One installed charging profile, as the station understood it.

    ``raw`` is the ``csChargingProfiles`` object as received (snake_case, plus
    ``connector_id``), which is what :attr:`Station.charging_profiles` shows.
    """

    id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str
    recurrency: str | None
    valid_from: datetime | None
    valid_to: datetime | None
    transaction_id: int | None
    start_schedule: datetime | None
    duration: int | None
    unit: str
    periods: tuple[Period, ...]
    received_at: datetime
    raw: dict[str, Any]


def _snake(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the camelCase wire object too (``ocpp``'s handler hands snake_case)."""
    if "chargingProfileId" not in raw and "chargingSchedule" not in raw:
        return dict(raw)
    from ocpp.charge_point import camel_to_snake_case

    return camel_to_snake_case(dict(raw))


def _integer(value: Any, name: str, low: int = 0, high: int = _MAX_SECONDS) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ProfileError(f"{name} must be an integer, not {value!r}")
    if not math.isfinite(value) or value != int(value) or abs(value) > 2**63:
        raise ProfileError(f"{name} must be an integer, not {value!r}")
    if not low <= int(value) <= high:
        raise ProfileError(f"{name} must be between {low} and {high}, not {value!r}")
    return int(value)


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"{name} must be a number, not {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not 0 <= number <= _MAX_LIMIT:
        raise ProfileError(f"{name} must be a number between 0 and {_MAX_LIMIT:g}, not {value!r}")
    return number


def _moment(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ProfileError(f"{name} is not a date-time: {value[:40]!r}") from None
    else:
        raise ProfileError(f"{name} must be a date-time string, not {value!r}")
    if moment.tzinfo is None:  # a charger reads a zone-less time as UTC
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise ProfileError(f"{name} is out of range") from None
    if moment >= _LATEST:
        raise ProfileError(f"{name} is after {_LATEST.year}")
    return moment


def parse_profile(raw: Mapping[str, Any], connector_id: int, received_at: datetime) -> Profile:
    """Read a ``csChargingProfiles`` object; raise :class:`ProfileError` with the reason when
    the station could not apply it (schema-valid frames can still be meaningless: periods
    out of order, a Recurring profile without recurrencyKind, ...)."""
    if not isinstance(raw, Mapping):
        raise ProfileError("csChargingProfiles must be an object")
    data = _snake(raw)
    purpose = data.get("charging_profile_purpose")
    if purpose not in PURPOSES:
        raise ProfileError(f"chargingProfilePurpose {purpose!r} is not one of {PURPOSES}")
    kind = data.get("charging_profile_kind")
    if kind not in KINDS:
        raise ProfileError(f"chargingProfileKind {kind!r} is not one of {KINDS}")
    recurrency = data.get("recurrency_kind")
    if recurrency is not None and recurrency not in _CYCLES:
        raise ProfileError(f"recurrencyKind {recurrency!r} is not Daily or Weekly")
    schedule = data.get("charging_schedule")
    if not isinstance(schedule, Mapping):
        raise ProfileError("chargingSchedule is missing")
    unit = schedule.get("charging_rate_unit")
    if unit not in ("A", "W"):
        raise ProfileError(f"chargingRateUnit {unit!r} is not A or W")
    raw_periods = schedule.get("charging_schedule_period")
    if not isinstance(raw_periods, Sequence) or isinstance(raw_periods, str) or not raw_periods:
        raise ProfileError("chargingSchedulePeriod must be a non-empty list")
    periods: list[Period] = []
    for index, item in enumerate(raw_periods):
        if not isinstance(item, Mapping):
            raise ProfileError(f"chargingSchedulePeriod[{index}] is not an object")
        start = _integer(item.get("start_period"), f"chargingSchedulePeriod[{index}].startPeriod")
        limit = _number(item.get("limit"), f"chargingSchedulePeriod[{index}].limit")
        phases = item.get("number_phases")
        if phases is not None:
            phases = _integer(phases, f"chargingSchedulePeriod[{index}].numberPhases", 1, 3)
        if periods and start <= periods[-1].start:
            raise ProfileError("startPeriod values must increase strictly")
        periods.append(Period(start, limit, phases))
    if periods[0].start != 0:
        raise ProfileError("the first chargingSchedulePeriod must start at 0")
    duration = schedule.get("duration")
    if duration is not None:
        duration = _integer(duration, "chargingSchedule.duration", 1)
    start_schedule = _moment(schedule.get("start_schedule"), "startSchedule")
    valid_from = _moment(data.get("valid_from"), "validFrom")
    valid_to = _moment(data.get("valid_to"), "validTo")
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise ProfileError("validTo must be after validFrom")
    if kind == "Recurring" and (recurrency is None or start_schedule is None):
        raise ProfileError("a Recurring profile needs recurrencyKind and startSchedule")
    if (
        kind == "Recurring"
        and duration is not None
        and duration > _CYCLES[recurrency].total_seconds()
    ):
        raise ProfileError("a Recurring profile's duration cannot exceed its recurrence")
    transaction_id = data.get("transaction_id")
    if transaction_id is not None:
        if purpose != "TxProfile":
            raise ProfileError("transactionId is only allowed in a TxProfile")
        transaction_id = _integer(transaction_id, "transactionId")
    return Profile(
        id=_integer(data.get("charging_profile_id"), "chargingProfileId"),
        connector_id=connector_id,
        stack_level=_integer(data.get("stack_level"), "stackLevel"),
        purpose=purpose,
        kind=kind,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=transaction_id,
        start_schedule=start_schedule,
        duration=duration,
        unit=unit,
        periods=tuple(periods),
        received_at=received_at,
        raw={**dict(raw), "connector_id": connector_id},
    )


@dataclass(frozen=True)
class Capabilities:
    """What the station's configuration keys say it supports."""

    units: frozenset[str]
    max_stack_level: int
    max_periods: int
    max_installed: int

    @classmethod
    def from_config(cls, get: Callable[[str], str | None]) -> Capabilities:
        text = get("ChargingScheduleAllowedChargingRateUnit") or ""
        units = frozenset(
            _UNITS_BY_KEY[item.strip()] for item in text.split(",") if item.strip() in _UNITS_BY_KEY
        )

        def number(key: str) -> int:
            try:
                return max(0, int(get(key) or "0"))
            except ValueError:
                return 0

        return cls(
            units,
            number("ChargeProfileMaxStackLevel"),
            number("ChargingScheduleMaxPeriods"),
            number("MaxChargingProfilesInstalled"),
        )

    @property
    def preferred_unit(self) -> str:
        """The unit the station reports in when asked for none: A when it allows it."""
        return "A" if "A" in self.units or not self.units else "W"


def replaced_by(installed: Mapping[int, Profile], new: Profile) -> list[int]:
    """Ids that ``new`` replaces: the same id, or the same purpose, stack level and connector
    (OCPP 1.6 SetChargingProfile)."""
    return [
        pid
        for pid, old in installed.items()
        if pid == new.id
        or (
            old.purpose == new.purpose
            and old.stack_level == new.stack_level
            and old.connector_id == new.connector_id
        )
    ]


def refusal(
    new: Profile,
    installed: Mapping[int, Profile],
    caps: Capabilities,
    connectors: int,
    transaction: tuple[bool, int | None] | None,
) -> str | None:
    """Why the station answers Rejected (None: it accepts). ``transaction`` is the target
    connector's (active, transactionId known) or None when it has none."""
    if not 0 <= new.connector_id <= connectors:
        return f"no connector {new.connector_id}"
    if new.unit not in caps.units:
        return f"unit {new.unit} is not in ChargingScheduleAllowedChargingRateUnit"
    if new.stack_level > caps.max_stack_level:
        return f"stackLevel {new.stack_level} is above ChargeProfileMaxStackLevel"
    if len(new.periods) > caps.max_periods:
        return f"{len(new.periods)} periods is more than ChargingScheduleMaxPeriods"
    if new.purpose == "ChargePointMaxProfile" and new.connector_id != 0:
        return "a ChargePointMaxProfile must be set on connector 0"
    if new.purpose == "TxProfile":
        if new.connector_id == 0 or transaction is None:
            return "a TxProfile needs a transaction on its connector"
        known = transaction[1]
        if new.transaction_id is not None and known is not None and new.transaction_id != known:
            return f"transactionId {new.transaction_id} is not the connector's ({known})"
    after = len(installed) - len(replaced_by(installed, new)) + 1
    if after > caps.max_installed:
        return "MaxChargingProfilesInstalled would be exceeded"
    return None


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limit:
    """A limit in both units (``amps`` per phase on ``phases`` phases)."""

    amps: float
    watts: float
    phases: int

    @classmethod
    def of(cls, value: float, unit: str, phases: int | None, voltage: float) -> Limit:
        n = phases or DEFAULT_PHASES
        if unit == "A":
            return cls(value, value * voltage * n, n)
        return cls(value / (voltage * n), value, n)

    def in_unit(self, unit: str) -> float:
        return self.amps if unit == "A" else self.watts


@dataclass(frozen=True)
class Tx:
    """A connector's transaction as the limit rules need it."""

    transaction_id: int | None
    started_at: datetime


def _schedule_start(p: Profile, at: datetime, relative_start: datetime) -> datetime | None:
    if p.kind == "Relative":
        return relative_start
    if p.kind == "Absolute":
        return p.start_schedule or p.received_at
    assert p.start_schedule is not None and p.recurrency is not None
    if at < p.start_schedule:
        return None
    cycle = _CYCLES[p.recurrency]
    cycles = (at - p.start_schedule) // cycle
    return p.start_schedule + cycles * cycle


def period_at(p: Profile, at: datetime, relative_start: datetime) -> Period | None:
    """The period of ``p`` in force at ``at`` (None: the profile does not apply then)."""
    if p.valid_from is not None and at < p.valid_from:
        return None
    if p.valid_to is not None and at >= p.valid_to:
        return None
    start = _schedule_start(p, at, relative_start)
    if start is None:
        return None
    offset = (at - start).total_seconds()
    if offset < 0 or (p.duration is not None and offset >= p.duration):
        return None
    current = None
    for period in p.periods:
        if period.start > offset:
            break
        current = period
    return current


def next_change(p: Profile, after: datetime, relative_start: datetime | None) -> datetime | None:
    """The first instant after ``after`` at which what ``p`` says may change (None: never).
    ``relative_start`` None: a Relative profile without transaction (always its first
    period, so no change)."""
    candidates = [m for m in (p.valid_from, p.valid_to) if m is not None and m > after]
    if p.kind == "Relative" and relative_start is None:
        return min(candidates, default=None)
    starts: list[datetime] = []
    if p.kind == "Recurring":
        assert p.start_schedule is not None and p.recurrency is not None
        cycle = _CYCLES[p.recurrency]
        if after < p.start_schedule:
            starts.append(p.start_schedule)
        else:
            base = p.start_schedule + ((after - p.start_schedule) // cycle) * cycle
            starts += [base, base + cycle]
    else:
        start = relative_start if p.kind == "Relative" else p.start_schedule or p.received_at
        assert start is not None
        starts.append(start)
    for start in starts:
        for period in p.periods:
            candidates.append(start + timedelta(seconds=period.start))
        if p.duration is not None:
            candidates.append(start + timedelta(seconds=p.duration))
    return min((m for m in candidates if m > after), default=None)


def _winner(
    profiles: Iterable[Profile], at: datetime, relative_start: datetime, voltage: float
) -> Limit | None:
    best: tuple[int, Limit] | None = None
    for p in profiles:
        period = period_at(p, at, relative_start)
        if period is not None and (best is None or p.stack_level > best[0]):
            best = (p.stack_level, Limit.of(period.limit, p.unit, period.phases, voltage))
    return None if best is None else best[1]


def tx_limit(
    profiles: Iterable[Profile], connector_id: int, at: datetime, tx: Tx | None, voltage: float
) -> Limit | None:
    """The TxProfile / TxDefaultProfile limit of a connector (> 0) at ``at``."""
    relative_start = tx.started_at if tx is not None else at
    mine = [p for p in profiles if p.connector_id == connector_id]
    if tx is not None:
        ours = [
            p
            for p in mine
            if p.purpose == "TxProfile"
            and (p.transaction_id is None or tx.transaction_id in (None, p.transaction_id))
        ]
        limit = _winner(ours, at, relative_start, voltage)
        if limit is not None:
            return limit
    defaults = [p for p in mine if p.purpose == "TxDefaultProfile"]
    limit = _winner(defaults, at, relative_start, voltage)
    if limit is not None:
        return limit
    shared = [p for p in profiles if p.connector_id == 0 and p.purpose == "TxDefaultProfile"]
    return _winner(shared, at, relative_start, voltage)


def station_limit(profiles: Iterable[Profile], at: datetime, voltage: float) -> Limit | None:
    """The ChargePointMaxProfile limit of the whole station at ``at``."""
    ours = [p for p in profiles if p.connector_id == 0 and p.purpose == "ChargePointMaxProfile"]
    return _winner(ours, at, at, voltage)


def connector_limit(
    profiles: Sequence[Profile], connector_id: int, at: datetime, tx: Tx | None, voltage: float
) -> Limit | None:
    """The limit of a connector at ``at`` (connector 0: the station's), None: no limit."""
    top = station_limit(profiles, at, voltage)
    if connector_id == 0:
        return top
    own = tx_limit(profiles, connector_id, at, tx, voltage)
    if own is None or (top is not None and top.watts < own.watts):
        return top
    return own


@dataclass(frozen=True)
class Demand:
    """One connector with a transaction: what the car wants and whether power is withheld."""

    connector_id: int
    tx: Tx
    wanted_w: float
    held: bool = False


@dataclass(frozen=True)
class Cap:
    """What the station gives one connector at an instant."""

    limit: Limit | None  # what it offers (after sharing the station's max); None: no limit
    suspended: bool  # the offer is below the car's minimum (or power is withheld)
    target_w: float  # the power the car draws once it has ramped


def _water_fill(total: float, wants: Mapping[int, float]) -> dict[int, float]:
    given: dict[int, float] = {}
    left = total
    order = sorted(wants, key=lambda cid: (wants[cid], cid))
    for index, cid in enumerate(order):
        share = left / (len(order) - index)
        given[cid] = min(wants[cid], share)
        left -= given[cid]
    return given


def station_caps(
    profiles: Sequence[Profile],
    at: datetime,
    demands: Sequence[Demand],
    voltage: float,
    min_a: float,
) -> dict[int, Cap]:
    """Each charging connector's cap at ``at``.

    A connector below ``min_a`` (its own limit, or its share of the station's
    ChargePointMaxProfile) is suspended: IEC 61851 cars cannot charge below 6 A. The station
    maximum is shared like a real charger's load balancer: equal shares, what a car does
    not take goes to the others, and when the shares fall below the minimum the connector
    with the highest id pauses first until the rest can charge.
    """
    caps: dict[int, Cap] = {}
    own: dict[int, Limit | None] = {}
    wants: dict[int, float] = {}
    for d in demands:
        limit = tx_limit(profiles, d.connector_id, at, d.tx, voltage)
        own[d.connector_id] = limit
        below = limit is not None and limit.amps < min_a
        if d.held or below:
            caps[d.connector_id] = Cap(limit, True, 0.0)
            continue
        wants[d.connector_id] = d.wanted_w if limit is None else min(d.wanted_w, limit.watts)
    top = station_limit(profiles, at, voltage)
    active = dict(wants)
    given = dict(wants)
    if top is not None:
        while True:
            given = _water_fill(top.watts, active)
            floor_w = min_a * voltage * top.phases
            # (a car that wants less than the minimum is not short of it)
            low = [cid for cid in active if given[cid] < min(floor_w, active[cid]) - 1e-6]
            if not low:
                break
            paused = max(low)
            del active[paused]
            caps[paused] = Cap(_offer(own[paused], top, 0.0, voltage), True, 0.0)
    # what the cars leave unused is offered to each of them (it could take it)
    spare = max(0.0, top.watts - sum(given.values())) if top is not None else 0.0
    for cid, want in active.items():
        offer = own[cid]
        if top is not None:
            offer = _offer(own[cid], top, given[cid] + spare, voltage)
        caps[cid] = Cap(offer, False, min(want, given[cid]))
    return caps


def _offer(own: Limit | None, top: Limit, share_w: float, voltage: float) -> Limit:
    share = Limit.of(share_w, "W", top.phases, voltage)
    if own is not None and own.watts <= share.watts:
        return own
    return share


def ramp(
    power_w: float, target_w: float, rate_w_per_s: float, seconds: float
) -> tuple[float, float]:
    """(energy in Wh, power at the end) for a car going from ``power_w`` towards ``target_w``
    for ``seconds``: up at ``rate_w_per_s`` (0: at once), down at once (a car must follow a
    lower offer within seconds; dropping at once keeps the meter under the limit)."""
    if seconds <= 0:
        return 0.0, power_w
    if target_w <= power_w or rate_w_per_s <= 0:
        return target_w * seconds / 3600.0, target_w
    climb = (target_w - power_w) / rate_w_per_s
    if climb >= seconds:
        end = power_w + rate_w_per_s * seconds
        return (power_w + end) / 2 * seconds / 3600.0, end
    energy = (power_w + target_w) / 2 * climb + target_w * (seconds - climb)
    return energy / 3600.0, target_w


def composite(
    profiles: Sequence[Profile],
    connector_id: int,
    start: datetime,
    duration: int,
    unit: str,
    tx: Tx | None,
    voltage: float,
    rated_a: float,
) -> list[tuple[int, float]]:
    """The composite schedule of a connector (0: the station) as (offset, limit) periods,
    merged, limits rounded down to 0.1 in ``unit``; where no profile limits, the station's
    rated current ``rated_a`` (on 3 phases)."""
    end = start + timedelta(seconds=duration)
    rated = Limit.of(rated_a, "A", DEFAULT_PHASES, voltage)
    relative = tx.started_at if tx is not None else start
    relevant = [
        p
        for p in profiles
        if p.connector_id in (0, connector_id)
        and (connector_id != 0 or p.purpose == "ChargePointMaxProfile")
    ]
    out: list[tuple[int, float]] = []
    at = start
    while at < end:
        if connector_id == 0:
            limit = station_limit(relevant, at, voltage)
        else:
            # (no transaction: no TxProfile applies; Relative ones start at ``start``)
            usable = (
                relevant if tx is not None else [p for p in relevant if p.purpose != "TxProfile"]
            )
            own = tx_limit(usable, connector_id, at, tx or Tx(None, relative), voltage)
            top = station_limit(relevant, at, voltage)
            limit = own if top is None or (own is not None and own.watts <= top.watts) else top
        value = math.floor((limit or rated).in_unit(unit) * 10 + 1e-9) / 10
        offset = int((at - start).total_seconds())
        if not out or out[-1][1] != value:
            out.append((offset, value))
        changes = [next_change(p, at, relative if p.kind == "Relative" else None) for p in relevant]
        at = min([m for m in changes if m is not None] + [end])
    return out
