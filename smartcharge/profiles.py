"""OCPP 1.6 charging profiles as a pure core: the models, what a station would reject, and the
composite schedule a station computes from the profiles it holds (OCPP 1.6 section 3.13).

csms needs the same answers in three places: before it sends a profile (would the station
reject it?), when it compares its own expectation with ``GetCompositeSchedule``, and in the
simulator, which must obey what it holds. Keeping the rules here, as functions of the facts
(the installed profiles, the transaction, an instant) and nothing else, lets the three agree
and lets the tests drive the real rules.

Choices where OCPP 1.6 leaves room (each documented where it is made):

- An ``Absolute`` profile without ``startSchedule`` is accepted: the JSON schema makes
  ``startSchedule`` optional for every kind, and the spec's ChargingSchedule says "if absent
  the schedule will be relative to start of charging". It is therefore evaluated exactly like
  a ``Relative`` one (from the transaction's start, or from the start of the question).
- ``Recurring`` profiles repeat every 86,400 s (Daily) or 604,800 s (Weekly) of elapsed time
  from ``startSchedule``, as a station's UTC clock counts, and are not in force before it.
- Limits are multiples of 0.1 (the schema's ``multipleOf: 0.1``); converted limits are
  rounded DOWN to 0.1 so that a converted limit never allows more than the original.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

__all__ = [
    "Capabilities",
    "Period",
    "Profile",
    "Schedule",
    "check",
    "composite",
    "limit_at",
]

INT32_MAX = 2**31 - 1
TENTH = Decimal("0.1")
# 10 MW or 10 MA: far above any charger, low enough that a float of it stays exact in JSON
MAX_LIMIT = Decimal(10_000_000)
# the longest composite schedule we compute: a station is asked for hours or a day, and a
# bound keeps a hostile duration from making millions of periods
MAX_COMPOSITE_SECONDS = 31 * 86_400
RECURRENCE_SECONDS = {"Daily": 86_400, "Weekly": 7 * 86_400}

Unit = Literal["A", "W"]
Purpose = Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
Kind = Literal["Absolute", "Recurring", "Relative"]


def _not_bool(value: Any) -> Any:
    """JSON's true/false are not numbers, though Python counts them as ints."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _one_decimal(value: Decimal) -> Decimal:
    """OCPP 1.6's schema says multipleOf 0.1: a station validating it rejects 7.25."""
    if value % TENTH != 0:
        raise ValueError(
            f"{value} has more than one decimal (OCPP 1.6 limits are multiples of 0.1)"
        )
    return value


Limit = Annotated[
    Decimal,
    BeforeValidator(_not_bool),
    Field(ge=0, le=MAX_LIMIT, allow_inf_nan=False),
    AfterValidator(_one_decimal),
]
Int32 = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]


def floor_tenth(value: Decimal) -> Decimal:
    """Round down to 0.1: a limit we compute must never allow more than the rule it comes from."""
    return value.quantize(TENTH, rounding=ROUND_FLOOR)


def ocpp_time(value: datetime) -> str:
    """OCPP's RFC 3339 time in UTC with a ``Z``; fractions only when there are any, so that
    the common whole-second times look like every other time csms writes."""
    utc = value.astimezone(UTC)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Decimal) -> float | int:
    """A JSON number with at most one decimal (whole numbers stay ints)."""
    q = floor_tenth(value)
    if q == q.to_integral_value():
        return int(q)
    return float(q)


class Period(BaseModel):
    """One ChargingSchedulePeriod: from ``start_period`` seconds after the schedule's start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_period: Int32
    limit: Limit
    number_phases: Annotated[int, Strict(), Field(ge=1, le=3)] | None = None


class Schedule(BaseModel):
    """One ChargingSchedule. ``duration`` None: the last period lasts until the profile ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration: Annotated[int, Strict(), Field(gt=0, le=INT32_MAX)] | None = None
    start_schedule: AwareDatetime | None = None
    charging_rate_unit: Unit
    periods: list[Period] = Field(min_length=1, max_length=1000)
    min_charging_rate: Limit | None = None

    @model_validator(mode="after")
    def _periods_in_order(self) -> Schedule:
        """A station looks periods up by start time: the first must start the schedule, and an
        unordered or repeated start has no meaning."""
        if self.periods[0].start_period != 0:
            raise ValueError(
                f"the first period must start at 0 s, not {self.periods[0].start_period} s"
            )
        for before, after in pairwise(self.periods):
            if after.start_period <= before.start_period:
                raise ValueError(
                    "period start times must increase strictly: "
                    f"{after.start_period} s follows {before.start_period} s"
                )
        return self


class Profile(BaseModel):
    """One ChargingProfile (``csChargingProfiles`` of SetChargingProfile.req), snake_case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[int, Strict(), Field(gt=0, le=INT32_MAX)]
    stack_level: Int32
    purpose: Purpose
    kind: Kind
    recurrency: Literal["Daily", "Weekly"] | None = None
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    transaction_id: Annotated[int, Strict(), Field(le=INT32_MAX)] | None = None
    schedule: Schedule

    @model_validator(mode="after")
    def _kind_rules(self) -> Profile:
        """OCPP 1.6's rules between fields, which the JSON schema cannot say."""
        start = self.schedule.start_schedule
        if self.kind == "Recurring":
            if self.recurrency is None:
                raise ValueError("a Recurring profile needs recurrency (Daily or Weekly)")
            if start is None:
                raise ValueError(
                    "a Recurring profile needs schedule.start_schedule (where recurrence starts)"
                )
        elif self.recurrency is not None:
            raise ValueError(f"recurrency is only for Recurring profiles, not {self.kind}")
        if self.kind == "Relative" and start is not None:
            raise ValueError(
                "a Relative profile has no start_schedule: it starts when the transaction does"
            )
        if self.transaction_id is not None and self.purpose != "TxProfile":
            raise ValueError(f"transaction_id is only for TxProfile, not {self.purpose}")
        if (
            self.valid_from is not None
            and self.valid_to is not None
            and self.valid_from >= self.valid_to
        ):
            raise ValueError("valid_from must be before valid_to")
        return self

    def to_ocpp(self) -> dict[str, Any]:
        """The camelCase ``csChargingProfiles`` object of SetChargingProfile.req: absent
        optional fields are left out (a station's schema validation rejects nulls)."""
        s = self.schedule
        periods: list[dict[str, Any]] = []
        for p in s.periods:
            period: dict[str, Any] = {"startPeriod": p.start_period, "limit": _number(p.limit)}
            if p.number_phases is not None:
                period["numberPhases"] = p.number_phases
            periods.append(period)
        schedule: dict[str, Any] = {"chargingRateUnit": s.charging_rate_unit}
        if s.duration is not None:
            schedule["duration"] = s.duration
        if s.start_schedule is not None:
            schedule["startSchedule"] = ocpp_time(s.start_schedule)
        schedule["chargingSchedulePeriod"] = periods
        if s.min_charging_rate is not None:
            schedule["minChargingRate"] = _number(s.min_charging_rate)
        out: dict[str, Any] = {
            "chargingProfileId": self.id,
            "stackLevel": self.stack_level,
            "chargingProfilePurpose": self.purpose,
            "chargingProfileKind": self.kind,
        }
        if self.transaction_id is not None:
            out["transactionId"] = self.transaction_id
        if self.recurrency is not None:
            out["recurrencyKind"] = self.recurrency
        if self.valid_from is not None:
            out["validFrom"] = ocpp_time(self.valid_from)
        if self.valid_to is not None:
            out["validTo"] = ocpp_time(self.valid_to)
        out["chargingSchedule"] = schedule
        return out

    @classmethod
    def from_ocpp(cls, d: Mapping[str, Any]) -> Profile:
        """A profile from the camelCase object of the wire, or from the snake_case dict the
        ``ocpp`` library hands a handler (``cs_charging_profiles``). Unknown fields are errors,
        as they are for a station validating the schema. Raises ValueError (pydantic's
        ValidationError is one) naming what is wrong."""
        fields = _rename(d, _PROFILE_KEYS, "the charging profile")
        if "schedule" in fields and fields["schedule"] is not None:
            schedule = _rename(fields["schedule"], _SCHEDULE_KEYS, "chargingSchedule")
            periods = schedule.get("periods")
            if isinstance(periods, list):
                schedule["periods"] = [
                    _rename(p, _PERIOD_KEYS, f"chargingSchedulePeriod[{i}]")
                    for i, p in enumerate(periods)
                ]
            fields["schedule"] = schedule
        return cls.model_validate(fields)


def _both(camel: str, snake: str, field: str) -> dict[str, str]:
    return {camel: field, snake: field}


_PROFILE_KEYS = {
    **_both("chargingProfileId", "charging_profile_id", "id"),
    **_both("stackLevel", "stack_level", "stack_level"),
    **_both("chargingProfilePurpose", "charging_profile_purpose", "purpose"),
    **_both("chargingProfileKind", "charging_profile_kind", "kind"),
    **_both("recurrencyKind", "recurrency_kind", "recurrency"),
    **_both("validFrom", "valid_from", "valid_from"),
    **_both("validTo", "valid_to", "valid_to"),
    **_both("transactionId", "transaction_id", "transaction_id"),
    **_both("chargingSchedule", "charging_schedule", "schedule"),
}
_SCHEDULE_KEYS = {
    "duration": "duration",
    **_both("startSchedule", "start_schedule", "start_schedule"),
    **_both("chargingRateUnit", "charging_rate_unit", "charging_rate_unit"),
    **_both("chargingSchedulePeriod", "charging_schedule_period", "periods"),
    **_both("minChargingRate", "min_charging_rate", "min_charging_rate"),
}
_PERIOD_KEYS = {
    **_both("startPeriod", "start_period", "start_period"),
    "limit": "limit",
    **_both("numberPhases", "number_phases", "number_phases"),
}


def _rename(d: Any, table: Mapping[str, str], where: str) -> dict[str, Any]:
    """OCPP names to ours; a None value counts as absent (the ``ocpp`` library's dataclasses
    carry None for optional fields)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be an object, not {type(d).__name__}")
    out: dict[str, Any] = {}
    for key, value in d.items():
        field = table.get(key) if isinstance(key, str) else None
        if field is None:
            raise ValueError(f"unknown field {key!r} in {where}")
        if field in out:
            raise ValueError(f"{where} gives {field!r} twice (camelCase and snake_case)")
        if value is not None:
            out[field] = value
    return out


# ------------------------------------------------------------------------------ capabilities


@dataclass(frozen=True)
class Capabilities:
    """What a station says it supports for smart charging (GetConfiguration)."""

    units: frozenset[str]
    max_stack_level: int
    max_profiles: int
    max_periods: int

    def __post_init__(self) -> None:
        if not self.units or not self.units <= {"A", "W"}:
            raise ValueError(f"units must be a non-empty subset of A and W, not {set(self.units)}")
        for name in ("max_stack_level", "max_profiles", "max_periods"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")

    @classmethod
    def from_configuration(cls, keys: Mapping[str, str]) -> Capabilities:
        """From GetConfiguration's values; never raises.

        A key that is missing or malformed gets a conservative default that still lets csms's
        own load management work on a typical one- or two-connector station:

        - units {"A"}: current is what every AC charger can enforce, because the IEC 61851
          control pilot tells the car a current; a power limit needs the station to convert,
          which a station that does not even report the key may not do.
        - max_stack_level 0: csms's load management uses stack level 0 only.
        - max_profiles 3: a TxDefaultProfile plus a TxProfile on each of two connectors.
        - max_periods 1: csms's shares are flat; a schedule of several periods is then
          reported as a problem before sending rather than rejected by the station.

        Key names are matched without regard to case (some stations change it), and the
        units value may list "Current", "Power" (or "A", "W") in any order and case; names we
        do not know are ignored.
        """
        lowered: dict[str, str] = {}
        if isinstance(keys, Mapping):
            for k, v in keys.items():
                if isinstance(k, str) and isinstance(v, str):
                    lowered[k.strip().lower()] = v
        units: set[str] = set()
        raw_units = lowered.get("chargingscheduleallowedchargingrateunit", "")
        for token in raw_units.replace(";", ",").split(","):
            word = token.strip().lower()
            if word in ("current", "a"):
                units.add("A")
            elif word in ("power", "w"):
                units.add("W")
        return cls(
            units=frozenset(units or {"A"}),
            max_stack_level=_count(lowered.get("chargeprofilemaxstacklevel"), 0),
            max_profiles=_count(lowered.get("maxchargingprofilesinstalled"), 3),
            max_periods=_count(lowered.get("chargingschedulemaxperiods"), 1),
        )


def _count(raw: str | None, default: int) -> int:
    """A non-negative integer configuration value, or the default when it is not one."""
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return default
    return int(text)


# ------------------------------------------------------------------------------------ check


def check(
    profile: Profile,
    connector_id: int,
    caps: Capabilities,
    installed: Sequence[tuple[int, Profile]],
    active_transaction: int | None,
) -> list[str]:
    """The reasons a station would reject SetChargingProfile(connector_id, profile), as
    sentences an operator can act on; empty when it should be accepted.

    ``installed`` is what the station holds, as (connector id, profile). A profile with the
    same id, or the same purpose and stack level on the same connector, replaces the one it
    matches (OCPP 1.6 SetChargingProfile), so it does not count twice against
    MaxChargingProfilesInstalled.
    """
    problems: list[str] = []
    if connector_id < 0:
        problems.append(f"Connector id {connector_id} is negative; use 0 or a connector number.")
    unit = profile.schedule.charging_rate_unit
    if unit not in caps.units:
        allowed = " and ".join(sorted(caps.units))
        problems.append(
            f"The station accepts limits in {allowed} only "
            f"(ChargingScheduleAllowedChargingRateUnit), not in {unit}."
        )
    if profile.stack_level > caps.max_stack_level:
        problems.append(
            f"Stack level {profile.stack_level} is above the station's maximum "
            f"{caps.max_stack_level} (ChargeProfileMaxStackLevel)."
        )
    periods = len(profile.schedule.periods)
    if periods > caps.max_periods:
        problems.append(
            f"The schedule has {periods} periods; the station takes at most "
            f"{caps.max_periods} (ChargingScheduleMaxPeriods)."
        )
    kept = sum(
        1
        for conn, old in installed
        if not (
            old.id == profile.id
            or (
                conn == connector_id
                and old.purpose == profile.purpose
                and old.stack_level == profile.stack_level
            )
        )
    )
    if kept + 1 > caps.max_profiles:
        problems.append(
            f"The station already holds {kept} other profiles and takes at most "
            f"{caps.max_profiles} (MaxChargingProfilesInstalled); clear one first."
        )
    if profile.purpose == "ChargePointMaxProfile" and connector_id != 0:
        problems.append(
            f"A ChargePointMaxProfile limits the whole station and goes on connector 0, "
            f"not connector {connector_id}."
        )
    if profile.purpose == "TxProfile":
        if connector_id == 0:
            problems.append("A TxProfile goes on the connector of its transaction, not on 0.")
        elif active_transaction is None:
            problems.append(
                f"A TxProfile needs a transaction in progress on connector {connector_id}, "
                "and there is none."
            )
        elif profile.transaction_id is not None and profile.transaction_id != active_transaction:
            problems.append(
                f"The TxProfile is for transaction {profile.transaction_id}, but the "
                f"transaction on connector {connector_id} is {active_transaction}."
            )
    return problems


# -------------------------------------------------------------------------------- composite


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A profile prepared for repeated evaluation: period starts for bisection and its limits
    already converted to the unit asked for."""

    rank: tuple[int, int]
    kind: str
    valid_from: datetime | None
    valid_to: datetime | None
    start_schedule: datetime | None
    cycle: timedelta | None
    duration: timedelta | None
    starts: tuple[int, ...]
    limits: tuple[Decimal, ...]


def _convert(limit: Decimal, have: str, want: str, volts: Decimal, phases: int) -> Decimal:
    """W = A x voltage x phases, rounded down to 0.1 in the unit asked for."""
    if have == want:
        return floor_tenth(limit)
    if want == "W":
        return floor_tenth(limit * volts * phases)
    return floor_tenth(limit / (volts * phases))


def _compile(profile: Profile, unit: str, volts: Decimal, phases: int) -> _Compiled:
    s = profile.schedule
    return _Compiled(
        rank=(profile.stack_level, profile.id),
        kind=profile.kind,
        valid_from=profile.valid_from,
        valid_to=profile.valid_to,
        start_schedule=s.start_schedule,
        cycle=(
            timedelta(seconds=RECURRENCE_SECONDS[profile.recurrency])
            if profile.recurrency is not None
            else None
        ),
        duration=timedelta(seconds=s.duration) if s.duration is not None else None,
        starts=tuple(p.start_period for p in s.periods),
        limits=tuple(
            _convert(p.limit, s.charging_rate_unit, unit, volts, p.number_phases or phases)
            for p in s.periods
        ),
    )


def _anchor(c: _Compiled, t: datetime, relative_start: datetime) -> datetime | None:
    """Where the schedule in force at ``t`` started, or None when it is not in force then."""
    if c.valid_from is not None and t < c.valid_from:
        return None
    if c.valid_to is not None and t >= c.valid_to:
        return None
    if c.kind == "Recurring":
        assert c.start_schedule is not None and c.cycle is not None
        if t < c.start_schedule:
            return None
        anchor = c.start_schedule + ((t - c.start_schedule) // c.cycle) * c.cycle
    elif c.kind == "Absolute" and c.start_schedule is not None:
        anchor = c.start_schedule
    else:  # Relative, or Absolute without startSchedule (see the module's docstring)
        anchor = relative_start
    if t < anchor:
        return None
    if c.duration is not None and t - anchor >= c.duration:
        return None
    return anchor


def _value(c: _Compiled, t: datetime, relative_start: datetime) -> Decimal | None:
    anchor = _anchor(c, t, relative_start)
    if anchor is None:
        return None
    offset = (t - anchor).total_seconds()
    return c.limits[bisect.bisect_right(c.starts, offset) - 1]


def _changes(c: _Compiled, start: datetime, end: datetime, relative_start: datetime):
    """Every instant in (start, end) at which this profile's limit may change."""
    if c.valid_from is not None:
        yield c.valid_from
    if c.valid_to is not None:
        yield c.valid_to
    if c.kind == "Recurring":
        assert c.start_schedule is not None and c.cycle is not None
        first = max(0, (start - c.start_schedule) // c.cycle)
        last = (end - c.start_schedule) // c.cycle
        anchors = [c.start_schedule + k * c.cycle for k in range(first, last + 1)]
    elif c.kind == "Absolute" and c.start_schedule is not None:
        anchors = [c.start_schedule]
    else:
        anchors = [relative_start]
    for anchor in anchors:
        if anchor >= end:
            continue
        room = end - anchor  # compared before adding, so that no sum leaves datetime's range
        for s in c.starts:
            if timedelta(seconds=s) >= room:
                break
            yield anchor + timedelta(seconds=s)
        if c.duration is not None and c.duration < room:
            yield anchor + c.duration


class _Stack:
    """The profiles that can apply to one connector, each group in order of precedence."""

    def __init__(
        self,
        installed: Sequence[tuple[int, Profile]],
        connector_id: int,
        unit: str,
        transaction: tuple[int, datetime] | None,
        voltage: float,
        phases: int,
    ) -> None:
        if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
            raise ValueError(f"connector_id must be an integer >= 0, not {connector_id!r}")
        if unit not in ("A", "W"):
            raise ValueError(f"unit must be 'A' or 'W', not {unit!r}")
        if isinstance(phases, bool) or phases not in (1, 2, 3):
            raise ValueError(f"phases must be 1, 2 or 3, not {phases!r}")
        volts = Decimal(str(voltage))
        if not volts.is_finite() or not 0 < volts <= 1000:
            raise ValueError(f"voltage must be above 0 and at most 1000 V, not {voltage!r}")
        if transaction is not None:
            if (
                not isinstance(transaction, tuple)
                or len(transaction) != 2
                or isinstance(transaction[0], bool)
                or not isinstance(transaction[0], int)
            ):
                raise ValueError("transaction must be (transaction id, start)")
            _aware(transaction[1], "the transaction's start")
        self.transaction = transaction
        cpmax: list[_Compiled] = []
        tx: list[_Compiled] = []
        default_here: list[_Compiled] = []
        default_all: list[_Compiled] = []
        for conn, profile in installed:
            if profile.purpose == "ChargePointMaxProfile":
                if conn == 0:
                    cpmax.append(_compile(profile, unit, volts, phases))
            elif connector_id == 0:
                # connector 0 asks for the station's draw from the grid: per-connector defaults
                # cannot be summed without knowing the connectors, so only the maximum applies
                continue
            elif profile.purpose == "TxProfile":
                if (
                    conn == connector_id
                    and transaction is not None
                    and profile.transaction_id in (None, transaction[0])
                ):
                    tx.append(_compile(profile, unit, volts, phases))
            elif conn == connector_id:
                default_here.append(_compile(profile, unit, volts, phases))
            elif conn == 0:
                default_all.append(_compile(profile, unit, volts, phases))
        # the highest stack level wins; the id only makes a tie (which a station would not
        # hold: same purpose and level replace each other) deterministic
        self.groups = [
            sorted(g, key=lambda c: c.rank, reverse=True) for g in (tx, default_here, default_all)
        ]
        self.cpmax = sorted(cpmax, key=lambda c: c.rank, reverse=True)

    def all(self) -> list[_Compiled]:
        return [*self.cpmax, *(c for g in self.groups for c in g)]

    def relative_start(self, start: datetime) -> datetime:
        return self.transaction[1] if self.transaction is not None else start

    def at(self, t: datetime, relative_start: datetime) -> Decimal | None:
        """TxProfile, else TxDefaultProfile of the connector, else of connector 0; capped by
        the ChargePointMaxProfile. The first in force of each group is the highest stack."""
        maximum: Decimal | None = None
        for c in self.cpmax:
            maximum = _value(c, t, relative_start)
            if maximum is not None:
                break
        chosen: Decimal | None = None
        for group in self.groups:
            for c in group:
                chosen = _value(c, t, relative_start)
                if chosen is not None:
                    break
            if chosen is not None:
                break
        if maximum is None:
            return chosen
        if chosen is None:
            return maximum
        return min(maximum, chosen)


def _aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def composite(
    installed: Sequence[tuple[int, Profile]],
    connector_id: int,
    start: datetime,
    duration: int,
    unit: Literal["A", "W"],
    transaction: tuple[int, datetime] | None,
    voltage: float = 230,
    phases: int = 3,
) -> list[tuple[int, Decimal | None]]:
    """The composite schedule of ``connector_id`` from ``start`` for ``duration`` seconds, as
    (offset in seconds, limit) with no two consecutive limits equal; None means that no
    profile limits the connector then. ``transaction`` is (transaction id, start) of the one
    in progress on the connector, if any: its TxProfiles apply and Relative profiles start
    with it (without one, Relative profiles start at ``start``).

    Per OCPP 1.6 3.13.2, at each instant: of each purpose the profile in force with the
    highest stack level applies; a TxProfile beats the TxDefaultProfile, which on the
    connector beats one on connector 0; the result is the lower of that and the station's
    ChargePointMaxProfile. For connector 0 only the ChargePointMaxProfile counts. Changes
    inside a second show from the next whole second.
    """
    _aware(start, "start")
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise ValueError(f"duration must be whole seconds, not {duration!r}")
    if not 0 < duration <= MAX_COMPOSITE_SECONDS:
        raise ValueError(f"duration must be 1 to {MAX_COMPOSITE_SECONDS} s (31 days)")
    try:
        end = start + timedelta(seconds=duration)
    except OverflowError as exc:
        raise ValueError("start + duration is beyond the year 9999") from exc
    stack = _Stack(installed, connector_id, unit, transaction, voltage, phases)
    relative_start = stack.relative_start(start)
    offsets = {0}
    for c in stack.all():
        for at in _changes(c, start, end, relative_start):
            if start < at < end:
                delta = at - start
                offsets.add(delta.days * 86_400 + delta.seconds + (1 if delta.microseconds else 0))
    out: list[tuple[int, Decimal | None]] = []
    for offset in sorted(o for o in offsets if o < duration):
        value = stack.at(start + timedelta(seconds=offset), relative_start)
        if not out or out[-1][1] != value:
            out.append((offset, value))
    return out


def limit_at(
    installed: Sequence[tuple[int, Profile]],
    connector_id: int,
    at: datetime,
    unit: Literal["A", "W"],
    transaction: tuple[int, datetime] | None,
    voltage: float = 230,
    phases: int = 3,
) -> Decimal | None:
    """The limit on ``connector_id`` at one instant (what a station enforces now); the same
    rules as :func:`composite`, which it equals at offset 0 of a schedule from ``at``."""
    _aware(at, "at")
    stack = _Stack(installed, connector_id, unit, transaction, voltage, phases)
    return stack.at(at, stack.relative_start(at))
