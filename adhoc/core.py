"""The life of an ad hoc payment, as a pure function of facts and ``now``.

States (``adhoc_payments.state``)::

    pending ──authorized──▶ authorized ──start sent──▶ starting ──transaction──▶ charging
       │                        │                          │                       │ stopped
       └──────────── released (declined, abandoned, offline, refused, timeout) ◀───┘ │
                                                                                     ▼
                                 captured (receipt) ◀──capture── capturing ◀──price── stopped

- ``pending``: the driver is confirming the hold at the provider. Authorized -> start;
  declined -> released; nothing within the payment window -> released (abandoned).
- ``authorized``: the hold is confirmed; the station must be connected (else released) and
  is asked to start with the payment's one-time id tag.
- ``starting``: a transaction with that tag -> charging; none within the start timeout ->
  released (the tag is refused from then on, so a late start is stopped by the station).
- ``charging``: the transaction stopped -> stopped; its cost reached the hold -> the
  charge is stopped (once).
- ``stopped``: the price is fixed (``final_amount``, at most the hold) before any capture,
  so a capture repeated after a crash asks for the same amount with the same key.
- ``capturing`` -> ``captured`` with a receipt in the same commit; a price of zero releases
  the hold instead and still gives a receipt.

A charge that started is always priced and captured, whatever the driver does. A
transaction found for the payment's tag wins over every timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .providers.base import HoldStatus


class State(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    STARTING = "starting"
    CHARGING = "charging"
    STOPPED = "stopped"
    CAPTURING = "capturing"
    CAPTURED = "captured"
    RELEASED = "released"


FINAL = frozenset({State.CAPTURED, State.RELEASED})
# a payment in these states may start or hold a transaction: its tag is accepted
TAG_ACCEPTED = frozenset(
    {State.AUTHORIZED, State.STARTING, State.CHARGING, State.STOPPED, State.CAPTURING}
)


class Reason(StrEnum):
    DECLINED = "declined"  # the provider refused or the driver gave up
    ABANDONED = "abandoned"  # not confirmed within the payment window
    STATION_OFFLINE = "station_offline"
    STATION_REFUSED = "station_refused"  # RemoteStartTransaction Rejected or a CallError
    START_TIMEOUT = "start_timeout"  # accepted but no transaction in time
    NOTHING_TO_PAY = "nothing_to_pay"  # the charge cost nothing: the hold is let go
    CANCELLED = "cancelled"  # the driver cancelled before paying


@dataclass(frozen=True, slots=True)
class Timing:
    payment_window: timedelta
    start_timeout: timedelta


@dataclass(frozen=True, slots=True)
class Facts:
    """What the shell found out about one payment just now."""

    state: State
    created_at: datetime
    start_requested_at: datetime | None
    stop_requested_at: datetime | None
    hold: HoldStatus | None  # the provider's answer, when it was asked (pending only)
    transaction_id: int | None  # a transaction started with the payment's tag
    transaction_stopped: bool
    connected: bool  # the station is connected to csms now
    cost_minor: int | None  # the cost so far while charging (None: unknown)
    hold_minor: int | None  # the amount held (None: nothing held, a terminal's charge)
    # a RemoteStopTransaction of this payment is on its way (sent by this process, lately):
    # a stop asked before a restart, or never answered, is asked again
    stop_in_flight: bool = False
    authorized_at: datetime | None = None  # when the hold was confirmed


# ------------------------------------------------------------------ what to do next


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do now."""


@dataclass(frozen=True, slots=True)
class MarkAuthorized:
    pass


@dataclass(frozen=True, slots=True)
class Release:
    reason: Reason


@dataclass(frozen=True, slots=True)
class StartCharge:
    pass


@dataclass(frozen=True, slots=True)
class MarkCharging:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class StopCharge:
    """Ask the station to stop (the cost reached the hold)."""

    transaction_id: int


@dataclass(frozen=True, slots=True)
class MarkStopped:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class FixPrice:
    """Price the finished charge (at most the hold) and keep it before capturing."""


@dataclass(frozen=True, slots=True)
class Capture:
    pass


Step = (
    Wait
    | MarkAuthorized
    | Release
    | StartCharge
    | MarkCharging
    | StopCharge
    | MarkStopped
    | FixPrice
    | Capture
)


def next_step(f: Facts, now: datetime, timing: Timing) -> Step:
    """The one thing to do next for a payment (the shell does it, then asks again)."""
    s = f.state
    if s in FINAL:
        return Wait()
    # a transaction with the payment's tag wins over every timeout and refusal
    if s in (State.PENDING, State.AUTHORIZED, State.STARTING) and f.transaction_id is not None:
        if s == State.PENDING:
            return MarkAuthorized()  # (accepted only once authorized: cannot happen before)
        return MarkCharging(f.transaction_id)
    if s in (State.PENDING, State.AUTHORIZED) and f.stop_requested_at is not None:
        return Release(Reason.CANCELLED)  # the driver cancelled before the start
    if s == State.PENDING:
        if f.hold == HoldStatus.AUTHORIZED:
            return MarkAuthorized()
        if f.hold in (HoldStatus.DECLINED, HoldStatus.RELEASED):
            return Release(Reason.DECLINED)
        if now >= f.created_at + timing.payment_window:
            return Release(Reason.ABANDONED)
        return Wait()
    if s == State.AUTHORIZED:
        # a station away for a moment (or csms just restarted) has start_timeout to be
        # back; then the hold is released
        if now >= (f.authorized_at or f.created_at) + timing.start_timeout:
            return Release(Reason.STATION_OFFLINE if not f.connected else Reason.START_TIMEOUT)
        return StartCharge() if f.connected else Wait()
    if s == State.STARTING:
        started = f.start_requested_at or f.created_at
        if now >= started + timing.start_timeout:
            return Release(Reason.START_TIMEOUT)
        return Wait()
    if s == State.CHARGING:
        assert f.transaction_id is not None
        if f.transaction_stopped:
            return MarkStopped(f.transaction_id)
        if f.stop_requested_at is not None and not f.stop_in_flight:
            return StopCharge(f.transaction_id)  # asked, but not (or no longer) on its way
        if (
            f.stop_requested_at is None
            and f.cost_minor is not None
            and f.hold_minor is not None
            and f.cost_minor >= f.hold_minor
        ):
            return StopCharge(f.transaction_id)
        return Wait()
    if s == State.STOPPED:
        return FixPrice()
    if s == State.CAPTURING:
        return Capture()
    return Wait()


def capped(price_minor: int, hold_minor: int) -> int:
    """What is captured of a price: never more than the hold (the charge is stopped when
    its cost reaches the hold; energy measured after that is not charged)."""
    return max(0, min(price_minor, hold_minor))


def retry_delay(attempts: int) -> timedelta:
    """After ``attempts`` failed provider calls in a row: 5 s doubling, at most 10 min."""
    return timedelta(seconds=min(600, 5 * 2 ** max(0, min(attempts - 1, 10))))
