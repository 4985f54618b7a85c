"""Sharing a site's grid connection among its charging cars: a pure core.

A small car park shares one connection (say 100 A per phase) among stations whose sum is far
above it. csms decides, from the site's rules, the time and the cars charging now, what each
EVSE may draw, and sends that as TxProfiles; when csms cannot reach a station, the station's
TxDefaultProfile (:func:`safe_default_a`) must keep the site under its limit on its own.

All amps here are per phase and are rounded DOWN to 0.1 A (OCPP's ``multipleOf 0.1``), so
that rounding can never push the site over its limit. :func:`allocate` works in integer
tenths of an ampere, which makes it exact and deterministic.

How priorities weigh (:func:`allocate`): strictly. Every admitted car first gets the minimum;
then what is left goes to the highest priority, shared equally among the cars of that
priority up to their maxima, and only what they cannot take goes on to the next priority.
A priority is an operator's promise ("the ambulance charges first"), which a weight would
only half keep.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

__all__ = [
    "HEADROOM_A",
    "Demand",
    "SiteRules",
    "Window",
    "allocate",
    "safe_default_a",
    "site_limit_a",
    "worth_sending",
]

TENTH = Decimal("0.1")
# what a car drawing less than its share keeps above its measured draw: enough for it to
# show, at the next meter value, that it wants more
HEADROOM_A = Decimal(2)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _floor(value: Decimal) -> Decimal:
    return value.quantize(TENTH, rounding=ROUND_FLOOR)


def _dec(value: Any, name: str) -> Decimal:
    """A finite Decimal from a Decimal, int or float (through its shortest text), with an
    error naming ``name`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        out = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except ArithmeticError as exc:
        raise ValueError(f"{name} must be a number, not {value!r}") from exc
    if not out.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return out


def _tenths(value: Decimal) -> int:
    """Whole tenths of an ampere, rounded down."""
    return int((value * 10).to_integral_value(rounding=ROUND_FLOOR))


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Amount = Annotated[Decimal, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


def _minute(text: str) -> int:
    match = _HHMM.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00 to 23:59)")
    return int(match.group(1)) * 60 + int(match.group(2))


class Window(BaseModel):
    """A time-of-day limit in the site's time zone and unit (cheaper or scarcer hours). An
    ``end`` before ``start`` runs over midnight; ``start`` is in it, ``end`` is not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str
    end: str
    limit: Annotated[Amount, Field(ge=0)]

    @model_validator(mode="after")
    def _times(self) -> Window:
        if _minute(self.start) == _minute(self.end):
            raise ValueError(f"window {self.start}-{self.end} is empty (start equals end)")
        return self

    def minutes(self) -> list[tuple[int, int]]:
        """The window as half-open minute ranges of one day (two when over midnight)."""
        a, b = _minute(self.start), _minute(self.end)
        return [(a, b)] if a < b else [(a, 1440), (0, b)]

    def covers(self, minute: int) -> bool:
        return any(a <= minute < b for a, b in self.minutes())


class SiteRules(BaseModel):
    """A site's connection: its limit (A per phase, or kW in total) and what lowers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: Annotated[Amount, Field(gt=0)]
    unit: Literal["A", "kW"]
    phases: Literal[1, 3] = 3
    voltage: Annotated[int, Strict(), Field(ge=100, le=1000)] = 230
    min_per_evse: Annotated[Amount, Field(ge=0, le=80)] = Decimal(6)
    windows: list[Window] = Field(default_factory=list, max_length=96)
    time_zone: str = "Europe/Lisbon"

    @model_validator(mode="after")
    def _consistent(self) -> SiteRules:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        if self.min_per_evse % TENTH != 0:
            raise ValueError("min_per_evse must be a multiple of 0.1 A")
        ranges = sorted(
            (a, b, i) for i, window in enumerate(self.windows) for a, b in window.minutes()
        )
        for (_, end1, i), (start2, _, j) in pairwise(ranges):
            if start2 < end1:
                w1, w2 = self.windows[i], self.windows[j]
                raise ValueError(
                    f"windows {w1.start}-{w1.end} and {w2.start}-{w2.end} overlap; "
                    "at any time at most one window may apply"
                )
        return self

    def to_amps(self, value: Decimal) -> Decimal:
        """A value in the site's unit as amps per phase (kW: I = P / (U x phases))."""
        if self.unit == "A":
            return _floor(value)
        return _floor(value * 1000 / (self.voltage * self.phases))


def site_limit_a(rules: SiteRules, now: datetime, dynamic: Decimal | None) -> Decimal:
    """The site's limit in A per phase at ``now``: the lowest of its base limit, the window
    in force (in the site's local time, so it follows daylight saving) and ``dynamic`` (in
    the site's unit; None when no one set one)."""
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    local = now.astimezone(ZoneInfo(rules.time_zone))
    minute = local.hour * 60 + local.minute
    candidates = [rules.limit]
    candidates += [w.limit for w in rules.windows if w.covers(minute)]
    if dynamic is not None:
        value = _dec(dynamic, "dynamic")
        if value < 0:
            raise ValueError(f"the dynamic limit must be >= 0, not {dynamic}")
        candidates.append(value)
    return min(rules.to_amps(c) for c in candidates)


def next_limit_change(rules: SiteRules, now: datetime) -> datetime | None:
    """The next moment after ``now`` at which a time-of-day window starts or ends (in the
    site's local time, so over a daylight saving change too); None without windows. csms
    recomputes the site's shares then, not a check interval later."""
    if not rules.windows:
        return None
    zone = ZoneInfo(rules.time_zone)
    local = now.astimezone(zone)
    edges = sorted({_minute(t) for w in rules.windows for t in (w.start, w.end)})
    for day in range(3):
        date = (local + timedelta(days=day)).date()
        for minute in edges:
            naive = datetime(date.year, date.month, date.day, minute // 60, minute % 60)
            at = naive.replace(tzinfo=zone)
            if at > now:
                return at.astimezone(now.tzinfo)
    return None


@dataclass(frozen=True, kw_only=True)
class Demand:
    """A car charging on an EVSE (station id, connector id), as :func:`allocate` sees it.
    ``drawing_a`` is what the meter values show it takes per phase (None: not measured)."""

    key: tuple[str, int]
    priority: int = 0
    max_a: Decimal = field(default_factory=lambda: Decimal(32))
    drawing_a: Decimal | None = None
    started_at: datetime

    def __post_init__(self) -> None:
        if (
            not isinstance(self.key, tuple)
            or len(self.key) != 2
            or not isinstance(self.key[0], str)
            or isinstance(self.key[1], bool)
            or not isinstance(self.key[1], int)
        ):
            raise ValueError(f"key must be (station id, connector id), not {self.key!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority must be an integer, not {self.priority!r}")
        max_a = _dec(self.max_a, "max_a")
        if max_a < 0:
            raise ValueError(f"max_a must be >= 0, not {self.max_a}")
        object.__setattr__(self, "max_a", max_a)
        if self.drawing_a is not None:
            drawing = _dec(self.drawing_a, "drawing_a")
            if drawing < 0:
                raise ValueError(f"drawing_a must be >= 0, not {self.drawing_a}")
            object.__setattr__(self, "drawing_a", drawing)
        if not isinstance(self.started_at, datetime) or self.started_at.tzinfo is None:
            raise ValueError("started_at must be a timezone-aware datetime")


def _fill(members: list[tuple[int, int]], budget: int) -> tuple[list[int], int]:
    """Water-filling in tenths: raise everyone from their floor, equally, up to their cap,
    spending at most ``budget``; the units left by equal steps go one each to the first
    members still below their cap (members are in allocation order). Returns the
    allocations and what was spent."""
    room = sum(cap - low for low, cap in members)
    if room <= budget:
        return [cap for _, cap in members], room
    # what raising the level costs is piecewise linear: each member adds 1 per unit of level
    # between its floor and its cap; sweep those points in order until the budget runs out
    points = sorted(
        [(low, 1) for low, cap in members if low < cap]
        + [(cap, -1) for low, cap in members if low < cap]
    )
    level, spent, rising = points[0][0], 0, 0
    for x, change in points:
        if x > level:
            cost = rising * (x - level)
            if spent + cost > budget:  # always happens: the whole room exceeds the budget
                steps = (budget - spent) // rising
                level += steps
                spent += rising * steps
                break
            spent += cost
            level = x
        rising += change
    out = [max(low, min(level, cap)) for low, cap in members]
    left = budget - spent
    for i, (low, cap) in enumerate(members):
        if left == 0:
            break
        if low <= level < cap:
            out[i] += 1
            left -= 1
    return out, budget - left


def allocate(
    limit_a: Decimal, demands: Sequence[Demand], min_a: Decimal
) -> dict[tuple[str, int], Decimal]:
    """What each car may draw (A per phase, 0.1 A steps), never more than ``limit_a`` in all.

    1. Each car's cap is its ``max_a``; a car measured drawing clearly less than it could
       (``drawing_a`` + 2 A) is capped at max(min_a, drawing_a + 2 A), so that what it does
       not use goes to the others.
    2. Cars are admitted at ``min_a`` (or their cap, if lower) in order of highest priority,
       then oldest ``started_at``, then key, while the sum fits; a car that does not fit
       gets 0 (paused: an OCPP limit of 0) rather than a share too small to charge with.
    3. What remains is shared by priority, strictly (see the module's docstring), and
       equally among cars of the same priority, up to their caps.

    So: the sum is at most ``limit_a``; each car gets 0 or at least ``min_a`` (less only if
    its ``max_a`` is below ``min_a``); none gets more than its ``max_a``; the same facts
    always give the same answer. ``min_a`` must be a multiple of 0.1 A.
    """
    limit = _dec(limit_a, "limit_a")
    if limit < 0:
        raise ValueError(f"limit_a must be >= 0, not {limit_a}")
    minimum = _dec(min_a, "min_a")
    if minimum < 0 or minimum % TENTH != 0:
        raise ValueError(f"min_a must be a multiple of 0.1 A and >= 0, not {min_a}")
    keys = [d.key for d in demands]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"EVSE {dup} appears twice among the demands")
    budget = _tenths(limit)
    low_all = _tenths(minimum)
    order = sorted(demands, key=lambda d: (-d.priority, d.started_at, d.key))
    result = {d.key: 0 for d in demands}
    admitted: list[tuple[Demand, int, int]] = []
    for d in order:
        cap = _tenths(d.max_a)
        if d.drawing_a is not None:
            cap = min(cap, max(low_all, _tenths(d.drawing_a + HEADROOM_A)))
        low = min(low_all, cap)
        if low <= budget:
            budget -= low
            admitted.append((d, low, cap))
    i = 0
    while i < len(admitted):
        j = i
        while j < len(admitted) and admitted[j][0].priority == admitted[i][0].priority:
            j += 1
        tier = admitted[i:j]
        shares, spent = _fill([(low, cap) for _, low, cap in tier], budget)
        budget -= spent
        for (d, _, _), share in zip(tier, shares, strict=True):
            result[d.key] = share
        i = j
    return {key: Decimal(tenths).scaleb(-1) for key, tenths in result.items()}


def safe_default_a(limit_a: Decimal, evse_count: int, min_a: Decimal) -> Decimal:
    """The per-EVSE limit of a station's TxDefaultProfile when csms cannot steer it: all the
    site's EVSEs at this limit together stay within ``limit_a`` (floor of limit_a /
    evse_count to 0.1 A). Below ``min_a`` it is 0: a site too small for every EVSE at the
    minimum pauses its cars while csms is away, because a share below the minimum would
    not charge them anyway and the connection must hold."""
    limit = _dec(limit_a, "limit_a")
    if limit < 0:
        raise ValueError(f"limit_a must be >= 0, not {limit_a}")
    if isinstance(evse_count, bool) or not isinstance(evse_count, int) or evse_count < 1:
        raise ValueError(f"evse_count must be an integer >= 1, not {evse_count!r}")
    minimum = _dec(min_a, "min_a")
    if minimum < 0:
        raise ValueError(f"min_a must be >= 0, not {min_a}")
    share = _floor(limit / evse_count)
    return share if share >= minimum else Decimal("0.0")


def worth_sending(old: Decimal | None, new: Decimal, step: Decimal = Decimal("1")) -> bool:
    """Whether a new limit is worth a SetChargingProfile: always when there was none, on any
    decrease (the site's safety depends on it), and on an increase of at least ``step`` (a
    car gains little from 0.3 A more, and a station that is sent a profile every few
    seconds may start refusing them)."""
    new_d = _dec(new, "new")
    step_d = _dec(step, "step")
    if step_d <= 0:
        raise ValueError(f"step must be > 0, not {step}")
    if old is None:
        return True
    old_d = _dec(old, "old")
    return new_d < old_d or new_d - old_d >= step_d
