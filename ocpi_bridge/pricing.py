"""OCPI 2.2.1 Tariffs: the operator's definition, validated, and the cost of a session.

``TariffDef`` is a Tariff as the operator defines it through our API or configuration: the
OCPI 2.2.1 Tariff without ``country_code``, ``party_id`` and ``last_updated``, which
``TariffDef.to_ocpi`` adds. Unknown fields are refused and every field is checked against
its OCPI type (lengths, formats, enums, 4-decimal numbers), with messages naming the rule.

``price_session`` computes the CDR cost fields of a cleaned series of meter points
(``ocpi_bridge.charging.session_points``); ``tariff_points`` inserts the tariff boundaries
into that series so that the CDR's periods and the cost are built from the same intervals.

Pricing rules (OCPI 2.2.1 Tariffs module and the CDR module's step_size rules):

- Per dimension, the first element (in list order) that has a component of that dimension
  and whose restrictions all match applies; no such element -> that dimension is free.
- Restrictions are evaluated for each interval at its start, on the local wall clock of the
  Location's ``time_zone``: ``start_time`` inclusive / ``end_time`` exclusive (``end_time``
  before ``start_time`` wraps past midnight, ``end_time`` "00:00" is the end of the day);
  ``start_date`` inclusive / ``end_date`` exclusive; ``day_of_week``; ``min_kwh`` inclusive
  / ``max_kwh`` exclusive on the energy delivered since the session start; ``min_power``
  inclusive / ``max_power`` exclusive on the interval's power (its end sample, else its
  average; no interval -> no power -> a power restriction does not match);
  ``min_duration`` inclusive / ``max_duration`` exclusive on the seconds since the session
  start. ``min_current`` / ``max_current`` are ignored (we keep no current per interval):
  do not use them in our tariffs. An element with a ``reservation`` restriction prices
  reservations, never a charging session.
- Every instant where a time, date, weekday, duration or energy restriction changes value
  becomes a period boundary (``tariff_boundaries``), so "evaluated at the interval start"
  is exact for those; power is constant per interval by construction.
- ENERGY: price per kWh of every interval with energy. TIME: price per hour of intervals
  with energy (charging). PARKING_TIME: price per hour of intervals without energy.
  FLAT: once per session, from the element that matches at the session start (duration 0,
  0 kWh, the first interval's power).
- step_size, once per session (never per period or per element switch), on the quantity
  that was priced, with the step of the last component used, the extra billed at that
  component's price: ENERGY rounded up to ``step_size`` Wh (so step 1 bills whole Wh);
  for time, PARKING_TIME's total is rounded up to ``step_size`` seconds when parking was
  priced at all, otherwise TIME's total (the CDR module's worked examples: 21 min charging +
  7 min parking with 5-minute steps bill 21 min of TIME and 10 min of PARKING_TIME).
- Money: computed exactly (decimal arithmetic); each of total_fixed_cost,
  total_energy_cost, total_time_cost, total_parking_cost is rounded half-up to 4 decimals
  (excl_vat and incl_vat separately); total_cost is the sum of those rounded parts, then
  clamped to ``min_price`` / ``max_price`` (excl_vat by excl_vat, incl_vat by incl_vat when
  both are known, as OCPI states; a bound without incl_vat that changes excl_vat leaves
  total_cost without incl_vat, rather than an incl_vat that no longer matches).
  incl_vat is given only when every component that contributed to the amount has a ``vat``
  (an amount nothing contributed to is 0 incl. VAT); total_cost.incl_vat only when every
  part has one. A dimension without any component in the tariff has no cost field at all.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_serializer,
    model_validator,
)

from csms.ports import parse_api_time, to_iso

from .charging import Interval, SessionPoint, intervals, split_points

__all__ = [
    "Costs",
    "DayOfWeek",
    "DisplayText",
    "EnergyMix",
    "EnergySource",
    "EnergySourceCategory",
    "EnvironmentalImpact",
    "EnvironmentalImpactCategory",
    "Price",
    "PriceComponent",
    "ReservationRestrictionType",
    "TariffDef",
    "TariffDimensionType",
    "TariffElement",
    "TariffRestrictions",
    "TariffType",
    "price_session",
    "tariff_boundaries",
    "tariff_points",
]


def _dec(value: float | int | Decimal) -> Decimal:
    """Exact decimal of what a number prints as (0.1 is 0.1)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def _q4(value: Decimal) -> Decimal:
    """4 decimals, half-up: our rounding of money (OCPI has none; see the module docstring)."""
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------------------------- enums


class TariffDimensionType(StrEnum):
    ENERGY = "ENERGY"
    FLAT = "FLAT"
    PARKING_TIME = "PARKING_TIME"
    TIME = "TIME"


class TariffType(StrEnum):
    AD_HOC_PAYMENT = "AD_HOC_PAYMENT"
    PROFILE_CHEAP = "PROFILE_CHEAP"
    PROFILE_FAST = "PROFILE_FAST"
    PROFILE_GREEN = "PROFILE_GREEN"
    REGULAR = "REGULAR"


class DayOfWeek(StrEnum):
    MONDAY = "MONDAY"
    TUESDAY = "TUESDAY"
    WEDNESDAY = "WEDNESDAY"
    THURSDAY = "THURSDAY"
    FRIDAY = "FRIDAY"
    SATURDAY = "SATURDAY"
    SUNDAY = "SUNDAY"


_WEEKDAYS = tuple(DayOfWeek)  # index = date.weekday()


class ReservationRestrictionType(StrEnum):
    RESERVATION = "RESERVATION"
    RESERVATION_EXPIRES = "RESERVATION_EXPIRES"


class EnergySourceCategory(StrEnum):
    NUCLEAR = "NUCLEAR"
    GENERAL_FOSSIL = "GENERAL_FOSSIL"
    COAL = "COAL"
    GAS = "GAS"
    GENERAL_GREEN = "GENERAL_GREEN"
    SOLAR = "SOLAR"
    WIND = "WIND"
    WATER = "WATER"


class EnvironmentalImpactCategory(StrEnum):
    NUCLEAR_WASTE = "NUCLEAR_WASTE"
    CARBON_DIOXIDE = "CARBON_DIOXIDE"


# ---------------------------------------------------------------------------------- field types


def _four_decimals(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    exponent = _dec(value).as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValueError("at most 4 decimals (OCPI number)")
    return value


def _cistring(limit: int) -> Any:
    def check(value: str) -> str:
        if not 1 <= len(value) <= limit:
            raise ValueError(f"must be 1 to {limit} characters")
        if any(not " " <= c <= "~" for c in value):
            raise ValueError("only printable ASCII characters (no tab, CR or LF) are allowed")
        return value

    return AfterValidator(check)


def _text(limit: int) -> Any:
    def check(value: str) -> str:
        if not 1 <= len(value) <= limit:
            raise ValueError(f"must be 1 to {limit} characters")
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ValueError("control characters are not allowed")
        return value

    return AfterValidator(check)


def _pattern(regex: str, message: str) -> Any:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{message}, not {value!r}")
        return value

    return AfterValidator(check)


def _real_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a real calendar date") from None
    return value


def _no_markup(value: str) -> str:
    if re.search(r"<\s*/?\s*[A-Za-z!][^>]*>", value):
        raise ValueError("must be plain text, without markup")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if len(value) > 255 or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL of at most 255 characters")
    if re.search(r"\s", value):
        raise ValueError("must not contain white space")
    return value


def _utc_datetime(value: Any) -> datetime:
    """OCPI DateTime input: a datetime, or ISO 8601 text (`Z`, no zone = UTC, offsets are
    converted to UTC). Kept in UTC to the second, the precision we publish."""
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    elif isinstance(value, str):
        value = parse_api_time(value)
    else:
        raise ValueError("must be a DateTime text such as 2025-01-01T00:00:00Z")
    return value.replace(microsecond=0)


_Strict = Field(strict=True)
Amount = Annotated[float, Field(strict=True, ge=0), AfterValidator(_four_decimals)]
Percent = Annotated[float, Field(strict=True, ge=0, le=100), AfterValidator(_four_decimals)]
Seconds = Annotated[int, Field(strict=True, ge=0)]
CiString36 = Annotated[str, _Strict, _cistring(36)]
HourMinute = Annotated[
    str,
    _Strict,
    _pattern(r"([01][0-9]|2[0-3]):[0-5][0-9]", "must be local time HH:MM, 00:00 to 23:59"),
]
LocalDate = Annotated[
    str,
    _Strict,
    _pattern(r"[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", "must be a date YYYY-MM-DD"),
    AfterValidator(_real_date),
]
UtcDateTime = Annotated[datetime, BeforeValidator(_utc_datetime)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------- models


class Price(_Model):
    """OCPI Price: ``excl_vat`` and optionally ``incl_vat`` (not below ``excl_vat``)."""

    excl_vat: Amount
    incl_vat: Amount | None = None

    @model_validator(mode="after")
    def _incl_not_below_excl(self) -> Price:
        if self.incl_vat is not None and self.incl_vat < self.excl_vat:
            raise ValueError("incl_vat cannot be lower than excl_vat")
        return self


class DisplayText(_Model):
    """OCPI DisplayText: ISO 639-1 language, plain text of at most 512 characters."""

    language: Annotated[
        str, _Strict, _pattern(r"[a-z]{2}", "must be an ISO 639-1 code (2 lowercase letters)")
    ]
    text: Annotated[str, _Strict, _text(512), AfterValidator(_no_markup)]


class PriceComponent(_Model):
    """OCPI PriceComponent: price per unit excl. VAT (kWh, hour, or per session for FLAT),
    optional VAT percentage (absent = no VAT, not 0 %), step_size >= 1 (Wh or seconds)."""

    type: TariffDimensionType
    price: Amount
    vat: Percent | None = None
    step_size: Annotated[int, Field(strict=True, ge=1)]


class TariffRestrictions(_Model):
    """OCPI TariffRestrictions; every field optional, all must match (AND)."""

    start_time: HourMinute | None = None
    end_time: HourMinute | None = None
    start_date: LocalDate | None = None
    end_date: LocalDate | None = None
    min_kwh: Amount | None = None
    max_kwh: Amount | None = None
    min_current: Amount | None = None
    max_current: Amount | None = None
    min_power: Amount | None = None
    max_power: Amount | None = None
    min_duration: Seconds | None = None
    max_duration: Seconds | None = None
    day_of_week: list[DayOfWeek] | None = Field(None, min_length=1)
    reservation: ReservationRestrictionType | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TariffRestrictions:
        for low, high in (
            ("min_kwh", "max_kwh"),
            ("min_current", "max_current"),
            ("min_power", "max_power"),
            ("min_duration", "max_duration"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo >= hi:
                raise ValueError(f"{low} must be below {high} ({high} is exclusive)")
        if self.start_time is not None and self.start_time == self.end_time != "00:00":
            raise ValueError(
                "start_time equals end_time: leave both out for the whole day, or use "
                "00:00 to 00:00"
            )
        if self.start_date is not None and self.end_date is not None:
            if self.start_date >= self.end_date:
                raise ValueError("end_date is exclusive and must be after start_date")
        if self.day_of_week is not None and len(set(self.day_of_week)) != len(self.day_of_week):
            raise ValueError("day_of_week lists a day twice")
        return self


class TariffElement(_Model):
    """OCPI TariffElement: one or more components (one per dimension), optional restrictions.
    A reservation element may only have FLAT and TIME components."""

    price_components: list[PriceComponent] = Field(min_length=1)
    restrictions: TariffRestrictions | None = None

    @model_validator(mode="after")
    def _one_per_dimension(self) -> TariffElement:
        types = [c.type for c in self.price_components]
        if len(set(types)) != len(types):
            raise ValueError("an element has at most one price component per dimension type")
        if self.restrictions is not None and self.restrictions.reservation is not None:
            if set(types) - {TariffDimensionType.FLAT, TariffDimensionType.TIME}:
                raise ValueError("a reservation element may only have FLAT and TIME components")
        return self

    def component(self, kind: TariffDimensionType) -> PriceComponent | None:
        """This element's component of one dimension, if any."""
        for c in self.price_components:
            if c.type == kind:
                return c
        return None


class EnergySource(_Model):
    source: EnergySourceCategory
    percentage: Percent


class EnvironmentalImpact(_Model):
    category: EnvironmentalImpactCategory
    amount: Amount  # g/kWh


class EnergyMix(_Model):
    is_green_energy: Annotated[bool, _Strict]
    energy_sources: list[EnergySource] | None = None
    environ_impact: list[EnvironmentalImpact] | None = None
    supplier_name: Annotated[str, _Strict, _text(64)] | None = None
    energy_product_name: Annotated[str, _Strict, _text(64)] | None = None


class TariffDef(_Model):
    """A Tariff as the operator defines it (OCPI 2.2.1 Tariff minus country_code, party_id
    and last_updated). ``currency`` is ISO 4217 (3 uppercase letters); ``elements`` has at
    least one element; ``min_price`` <= ``max_price``; ``start_date_time`` <
    ``end_date_time`` (both UTC; text with `Z`, without zone, or with an offset that is
    converted to UTC)."""

    id: CiString36
    currency: Annotated[
        str, _Strict, _pattern(r"[A-Z]{3}", "must be an ISO 4217 code (3 uppercase letters)")
    ]
    type: TariffType | None = None
    tariff_alt_text: list[DisplayText] | None = None
    tariff_alt_url: Annotated[str, _Strict, AfterValidator(_url)] | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    elements: list[TariffElement] = Field(min_length=1)
    start_date_time: UtcDateTime | None = None
    end_date_time: UtcDateTime | None = None
    energy_mix: EnergyMix | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TariffDef:
        low, high = self.min_price, self.max_price
        if low is not None and high is not None:
            if low.excl_vat > high.excl_vat:
                raise ValueError("min_price.excl_vat is above max_price.excl_vat")
            if low.incl_vat is not None and high.incl_vat is not None:
                if low.incl_vat > high.incl_vat:
                    raise ValueError("min_price.incl_vat is above max_price.incl_vat")
        start, end = self.start_date_time, self.end_date_time
        if start is not None and end is not None and start >= end:
            raise ValueError("end_date_time must be after start_date_time")
        return self

    @field_serializer("start_date_time", "end_date_time", when_used="json")
    def _iso(self, value: datetime | None) -> str | None:
        return to_iso(value)

    def to_ocpi(self, country_code: str, party_id: str, last_updated: datetime) -> dict[str, Any]:
        """The OCPI 2.2.1 Tariff object: our fields plus the owner and ``last_updated``,
        None fields omitted, DateTimes as `YYYY-MM-DDTHH:MM:SSZ`. Raises ValueError for a
        country_code that is not 2 letters or a party_id that is not 3 letters/digits."""
        if not re.fullmatch(r"[A-Za-z]{2}", country_code):
            raise ValueError(f"country_code must be 2 letters, not {country_code!r}")
        if not re.fullmatch(r"[A-Za-z0-9]{3}", party_id):
            raise ValueError(f"party_id must be 3 letters or digits, not {party_id!r}")
        body = self.model_dump(mode="json", exclude_none=True)
        return {
            "country_code": country_code,
            "party_id": party_id,
            **body,
            "last_updated": to_iso(last_updated),
        }

    def is_active(self, at: datetime) -> bool:
        """Whether the tariff is valid at ``at``: start_date_time inclusive, end exclusive."""
        if self.start_date_time is not None and at < self.start_date_time:
            return False
        return self.end_date_time is None or at < self.end_date_time


# ---------------------------------------------------------------------------------- matching


def _zone(time_zone: str) -> ZoneInfo:
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {time_zone!r}") from None


def _wall_seconds(hhmm: str) -> int:
    return int(hhmm[:2]) * 3600 + int(hhmm[3:]) * 60


def _clock_ok(r: TariffRestrictions, local: datetime, duration_s: int) -> bool:
    """The restrictions that depend only on the instant: time of day, dates, weekday and
    session duration."""
    if r.start_time is not None or r.end_time is not None:
        now = local.hour * 3600 + local.minute * 60 + local.second
        begin = 0 if r.start_time is None else _wall_seconds(r.start_time)
        end = 86400 if r.end_time is None else (_wall_seconds(r.end_time) or 86400)
        inside = begin <= now < end if begin < end else (now >= begin or now < end)
        if not inside:
            return False
    day = local.date()
    if r.start_date is not None and day < date.fromisoformat(r.start_date):
        return False
    if r.end_date is not None and day >= date.fromisoformat(r.end_date):
        return False
    if r.day_of_week is not None and _WEEKDAYS[day.weekday()] not in r.day_of_week:
        return False
    if r.min_duration is not None and duration_s < r.min_duration:
        return False
    return r.max_duration is None or duration_s < r.max_duration


@dataclass(frozen=True, slots=True)
class _Context:
    local: datetime  # wall clock at the Location
    duration_s: int  # since the session start
    wh_so_far: Decimal  # delivered since the session start
    power_kw: Decimal | None


def _matches(r: TariffRestrictions | None, ctx: _Context) -> bool:
    if r is None:
        return True
    if r.reservation is not None:
        return False
    if not _clock_ok(r, ctx.local, ctx.duration_s):
        return False
    kwh = ctx.wh_so_far / 1000
    if r.min_kwh is not None and kwh < _dec(r.min_kwh):
        return False
    if r.max_kwh is not None and kwh >= _dec(r.max_kwh):
        return False
    if r.min_power is not None or r.max_power is not None:
        if ctx.power_kw is None:
            return False
        if r.min_power is not None and ctx.power_kw < _dec(r.min_power):
            return False
        if r.max_power is not None and ctx.power_kw >= _dec(r.max_power):
            return False
    # min_current / max_current: ignored, no current per interval (see the module docstring)
    return True


def _select(tariff: TariffDef, kind: TariffDimensionType, ctx: _Context) -> PriceComponent | None:
    for element in tariff.elements:
        component = element.component(kind)
        if component is not None and _matches(element.restrictions, ctx):
            return component
    return None


# ---------------------------------------------------------------------------------- boundaries


def _offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The instants (to the second) in (start, end] where the zone's UTC offset changes."""
    out: list[datetime] = []
    t, offset = start, start.astimezone(zone).utcoffset()
    while t < end:
        nxt = min(t + timedelta(hours=6), end)
        new = nxt.astimezone(zone).utcoffset()
        if new != offset:
            lo, hi = t, nxt
            while (hi - lo) > timedelta(seconds=1):
                mid = lo + timedelta(seconds=int((hi - lo).total_seconds()) // 2)
                if mid.astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        t, offset = nxt, new
    return out


def tariff_boundaries(
    tariff: TariffDef, points: Sequence[SessionPoint], time_zone: str
) -> list[datetime]:
    """The instants strictly inside the series where some element's restriction changes
    value: a local start_time / end_time, a local midnight for date and weekday restrictions
    (DST transitions included), the session reaching min/max_duration, and the delivered
    energy reaching min/max_kwh (the first whole second at or after the crossing, with the
    energy linear within an interval). Sorted, UTC, whole seconds, deterministic: a boundary
    inside an interval appears once that interval's end point exists."""
    zone = _zone(time_zone)
    if len(points) < 2:
        return []
    start = points[0].time.replace(microsecond=0)
    end = points[-1].time.replace(microsecond=0)
    rules = [
        e.restrictions
        for e in tariff.elements
        if e.restrictions is not None and e.restrictions.reservation is None
    ]
    candidates: set[datetime] = set()
    walls: set[str] = set()
    for r in rules:
        walls.update(v for v in (r.start_time, r.end_time) if v is not None)
        if r.start_date is not None or r.end_date is not None or r.day_of_week is not None:
            walls.add("00:00")
        for seconds in (r.min_duration, r.max_duration):
            if seconds is not None:
                candidates.add(start + timedelta(seconds=seconds))
    if walls:
        day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date() + timedelta(days=1)
        while day <= last_day:
            for wall in walls:
                local = datetime.combine(day, time(int(wall[:2]), int(wall[3:])), tzinfo=zone)
                for fold in (0, 1):
                    candidates.add(local.replace(fold=fold).astimezone(UTC))
            day += timedelta(days=1)
        candidates.update(_offset_changes(zone, start, end))

    def signature(at: datetime) -> tuple[bool, ...]:
        local = at.astimezone(zone)
        duration = int((at - start).total_seconds())
        return tuple(_clock_ok(r, local, duration) for r in rules)

    one = timedelta(seconds=1)
    found = {c for c in candidates if start < c < end and signature(c) != signature(c - one)}

    thresholds = sorted(
        {_dec(v) * 1000 for r in rules for v in (r.min_kwh, r.max_kwh) if v is not None}
    )
    if thresholds:
        for iv in intervals(points):
            for wh in thresholds:
                if iv.wh_before < wh <= iv.wh_before + iv.wh:
                    k = ((wh - iv.wh_before) * iv.seconds / iv.wh).to_integral_value(ROUND_CEILING)
                    if 0 < k < iv.seconds:
                        found.add(iv.start + timedelta(seconds=int(k)))
    return sorted(found)


def tariff_points(
    tariff: TariffDef, points: Sequence[SessionPoint], time_zone: str
) -> list[SessionPoint]:
    """The series with a point at every tariff boundary (see ``tariff_boundaries`` and
    ``charging.split_points``). Build the Session's and the CDR's periods from this, and pass
    the unsplit series to ``price_session``: both then use the same intervals."""
    return split_points(points, tariff_boundaries(tariff, points, time_zone))


# ---------------------------------------------------------------------------------- costs


@dataclass(slots=True)
class _Sum:
    """What one dimension costs: quantity priced (Wh, s or sessions) and money."""

    unit: Decimal  # quantity per priced unit: 1000 Wh per kWh, 3600 s per hour, 1 for FLAT
    quantity: Decimal = Decimal(0)
    excl: Decimal = Decimal(0)
    incl: Decimal = Decimal(0)
    vat_known: bool = True
    last: PriceComponent | None = None

    def add(self, component: PriceComponent, quantity: Decimal) -> None:
        cost = _dec(component.price) * quantity / self.unit
        self.quantity += quantity
        self.excl += cost
        if component.vat is None:
            self.vat_known = False
        else:
            self.incl += cost * (1 + _dec(component.vat) / 100)
        self.last = component

    def apply_step(self) -> None:
        """Round the priced quantity up to the last component's step, billed at its price."""
        if self.last is None:
            return
        step = Decimal(self.last.step_size)
        billed = (self.quantity / step).to_integral_value(ROUND_CEILING) * step
        if billed > self.quantity:
            self.add(self.last, billed - self.quantity)


def _price(excl: Decimal, incl: Decimal | None) -> dict[str, float]:
    out = {"excl_vat": float(excl)}
    if incl is not None:
        out["incl_vat"] = float(incl)
    return out


@dataclass(frozen=True, slots=True)
class Costs:
    """The CDR cost fields as OCPI Price dicts ``{"excl_vat": x, "incl_vat": y}``.

    A part is None when the tariff has no component of that dimension (leave the CDR field
    out). The ``billed_*`` quantities are after step_size: what was charged for. ``notes``
    says when min_price or max_price set total_cost.
    """

    total_cost: dict[str, float]
    total_fixed_cost: dict[str, float] | None
    total_energy_cost: dict[str, float] | None
    total_time_cost: dict[str, float] | None
    total_parking_cost: dict[str, float] | None
    billed_energy_wh: float = 0.0
    billed_time_s: float = 0.0
    billed_parking_s: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def cdr_fields(self) -> dict[str, Any]:
        """The CDR fields, None parts left out."""
        names = (
            "total_cost",
            "total_fixed_cost",
            "total_energy_cost",
            "total_time_cost",
            "total_parking_cost",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _context(iv: Interval | None, at: datetime, start: datetime, zone: ZoneInfo) -> _Context:
    if iv is None:
        return _Context(at.astimezone(zone), 0, Decimal(0), None)
    return _Context(at.astimezone(zone), int((at - start).total_seconds()), iv.wh_before, iv.kw())


def price_session(tariff: TariffDef, points: Sequence[SessionPoint], time_zone: str) -> Costs:
    """The cost of a session under ``tariff`` (rules in the module docstring).

    ``points`` is the cleaned series (``session_points``), unsplit: the tariff boundaries
    are inserted here exactly as ``tariff_points`` does. Works for a running session too
    (cost so far, step_size applied to the totals so far), which is the Session's
    ``total_cost``. ``time_zone`` is the Location's IANA zone (``Europe/Lisbon``,
    ``Atlantic/Azores``, ``Atlantic/Madeira``). Raises ValueError for an empty series or an
    unknown zone.
    """
    if not points:
        raise ValueError("no points: a session has at least its start")
    zone = _zone(time_zone)
    ivs = intervals(tariff_points(tariff, points, time_zone))
    start = points[0].time.replace(microsecond=0)
    D = TariffDimensionType
    sums = {
        D.FLAT: _Sum(Decimal(1)),
        D.ENERGY: _Sum(Decimal(1000)),
        D.TIME: _Sum(Decimal(3600)),
        D.PARKING_TIME: _Sum(Decimal(3600)),
    }

    flat = _select(tariff, D.FLAT, _context(ivs[0] if ivs else None, start, start, zone))
    if flat is not None:
        sums[D.FLAT].add(flat, Decimal(1))
    for iv in ivs:
        ctx = _context(iv, iv.start, start, zone)
        if iv.charging:
            energy = _select(tariff, D.ENERGY, ctx)
            if energy is not None:
                sums[D.ENERGY].add(energy, iv.wh)
            charging = _select(tariff, D.TIME, ctx)
            if charging is not None:
                sums[D.TIME].add(charging, Decimal(iv.seconds))
        else:
            parking = _select(tariff, D.PARKING_TIME, ctx)
            if parking is not None:
                sums[D.PARKING_TIME].add(parking, Decimal(iv.seconds))

    sums[D.ENERGY].apply_step()
    if sums[D.PARKING_TIME].last is not None:
        sums[D.PARKING_TIME].apply_step()
    else:
        sums[D.TIME].apply_step()

    present = {c.type for e in tariff.elements for c in e.price_components}
    parts: dict[TariffDimensionType, tuple[Decimal, Decimal | None] | None] = {}
    for kind, s in sums.items():
        parts[kind] = (
            (_q4(s.excl), _q4(s.incl) if s.vat_known else None) if kind in present else None
        )

    used = [p for p in parts.values() if p is not None]
    excl = sum((p[0] for p in used), Decimal(0))
    incl: Decimal | None = None
    if all(p[1] is not None for p in used):
        incl = sum((p[1] for p in used if p[1] is not None), Decimal(0))
    notes: list[str] = []
    if tariff.min_price is not None:
        excl, incl = _clamp(excl, incl, tariff.min_price, max, notes, "min_price")
    if tariff.max_price is not None:
        excl, incl = _clamp(excl, incl, tariff.max_price, min, notes, "max_price")

    def part(kind: TariffDimensionType) -> dict[str, float] | None:
        p = parts[kind]
        return None if p is None else _price(*p)

    return Costs(
        total_cost=_price(excl, incl),
        total_fixed_cost=part(D.FLAT),
        total_energy_cost=part(D.ENERGY),
        total_time_cost=part(D.TIME),
        total_parking_cost=part(D.PARKING_TIME),
        billed_energy_wh=float(sums[D.ENERGY].quantity),
        billed_time_s=float(sums[D.TIME].quantity),
        billed_parking_s=float(sums[D.PARKING_TIME].quantity),
        notes=tuple(notes),
    )


def _clamp(
    excl: Decimal,
    incl: Decimal | None,
    bound: Price,
    pick: Any,
    notes: list[str],
    name: str,
) -> tuple[Decimal, Decimal | None]:
    new_excl = pick(excl, _dec(bound.excl_vat))
    new_incl = incl
    if incl is not None and bound.incl_vat is not None:
        new_incl = pick(incl, _dec(bound.incl_vat))
    elif new_excl != excl:
        new_incl = None  # the amount now comes from a bound whose VAT we do not know
    if new_excl != excl or new_incl != incl:
        notes.append(f"total_cost set by {name}")
    return new_excl, new_incl
