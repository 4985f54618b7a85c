"""The pure rules of ad hoc payments (adhoc.core) and the public pages' small helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adhoc.config import load_adhoc_settings
from adhoc.core import (
    Capture,
    Facts,
    FixPrice,
    MarkAuthorized,
    MarkCharging,
    MarkStopped,
    Reason,
    Release,
    StartCharge,
    State,
    StopCharge,
    Timing,
    Wait,
    capped,
    next_step,
    retry_delay,
)
from adhoc.providers.base import HoldStatus
from adhoc.web import RateLimiter, money, unit_price
from csms.config import ConfigError

T0 = datetime(2027, 1, 4, 10, 0, tzinfo=UTC)
TIMING = Timing(timedelta(minutes=10), timedelta(minutes=3))


def facts(state: State, **kw: object) -> Facts:
    base = Facts(
        state=state,
        created_at=T0,
        start_requested_at=None,
        stop_requested_at=None,
        hold=None,
        transaction_id=None,
        transaction_stopped=False,
        connected=True,
        cost_minor=None,
        hold_minor=3000,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_pending() -> None:
    assert next_step(facts(State.PENDING), T0, TIMING) == Wait()
    assert next_step(facts(State.PENDING, hold=HoldStatus.PENDING), T0, TIMING) == Wait()
    assert next_step(facts(State.PENDING, hold=HoldStatus.AUTHORIZED), T0, TIMING) == (
        MarkAuthorized()
    )
    assert next_step(facts(State.PENDING, hold=HoldStatus.DECLINED), T0, TIMING) == Release(
        Reason.DECLINED
    )
    late = T0 + timedelta(minutes=10)
    assert next_step(facts(State.PENDING), late, TIMING) == Release(Reason.ABANDONED)
    # authorized at the last moment wins over the window
    assert next_step(facts(State.PENDING, hold=HoldStatus.AUTHORIZED), late, TIMING) == (
        MarkAuthorized()
    )
    # the driver cancelled: released, even if the hold was confirmed meanwhile
    for state in (State.PENDING, State.AUTHORIZED):
        cancelled = facts(state, hold=HoldStatus.AUTHORIZED, stop_requested_at=T0)
        assert next_step(cancelled, T0, TIMING) == Release(Reason.CANCELLED)


def test_start() -> None:
    assert next_step(facts(State.AUTHORIZED), T0, TIMING) == StartCharge()
    # a station away: it has the start timeout to come back
    away = facts(State.AUTHORIZED, connected=False, authorized_at=T0)
    assert next_step(away, T0 + timedelta(minutes=2), TIMING) == Wait()
    assert next_step(away, T0 + timedelta(minutes=3), TIMING) == Release(Reason.STATION_OFFLINE)
    sent = facts(State.STARTING, start_requested_at=T0)
    assert next_step(sent, T0 + timedelta(minutes=2), TIMING) == Wait()
    assert next_step(sent, T0 + timedelta(minutes=3), TIMING) == Release(Reason.START_TIMEOUT)
    # a transaction wins over the timeout, even long after
    started = replace(sent, transaction_id=7)
    assert next_step(started, T0 + timedelta(hours=1), TIMING) == MarkCharging(7)
    assert next_step(facts(State.AUTHORIZED, transaction_id=7), T0, TIMING) == MarkCharging(7)


def test_charging_and_after() -> None:
    running = facts(State.CHARGING, transaction_id=7, cost_minor=1200)
    assert next_step(running, T0, TIMING) == Wait()
    assert next_step(replace(running, cost_minor=3000), T0, TIMING) == StopCharge(7)
    # a terminal's charge holds nothing here: it is never stopped for its cost
    terminal = replace(running, cost_minor=90000, hold_minor=None)
    assert next_step(terminal, T0, TIMING) == Wait()
    asked = replace(running, cost_minor=3100, stop_requested_at=T0, stop_in_flight=True)
    assert next_step(asked, T0, TIMING) == Wait()  # the stop is on its way
    # asked before a restart, or never answered: asked again
    assert next_step(replace(asked, stop_in_flight=False), T0, TIMING) == StopCharge(7)
    assert next_step(replace(running, transaction_stopped=True), T0, TIMING) == MarkStopped(7)
    assert next_step(facts(State.STOPPED, transaction_id=7), T0, TIMING) == FixPrice()
    assert next_step(facts(State.CAPTURING, transaction_id=7), T0, TIMING) == Capture()
    for final in (State.CAPTURED, State.RELEASED):
        assert next_step(facts(final, transaction_id=7), T0, TIMING) == Wait()


def test_capped_and_retry() -> None:
    assert capped(1234, 3000) == 1234
    assert capped(3500, 3000) == 3000
    assert capped(-5, 3000) == 0
    assert retry_delay(1) == timedelta(seconds=5)
    assert retry_delay(2) == timedelta(seconds=10)
    assert retry_delay(50) == timedelta(minutes=10)


def test_money_texts() -> None:
    assert money(Decimal("1234.5"), "EUR", "pt") == "1 234,50 €"
    assert money(Decimal("0.355"), "EUR", "en") == "€0.36"
    assert money(3000, "EUR", "en", minor=True) == "€30.00"
    assert unit_price(Decimal("0.3512"), "EUR", "pt") == "0,3512 €"
    assert unit_price(Decimal("0.3"), "EUR", "en") == "€0.30"


def test_rate_limiter() -> None:
    limiter = RateLimiter(60, max_keys=3)
    assert all(limiter.allow("a", now=0.0) for _ in range(60))
    assert not limiter.allow("a", now=0.0)
    assert limiter.allow("b", now=0.0)  # another address is not affected
    assert limiter.allow("a", now=1.0)  # one a second comes back
    for key in ("c", "d", "e"):
        limiter.allow(key, now=2.0)
    assert len(limiter._buckets) == 3  # bounded


def test_config() -> None:
    ok = {"operator_name": "X", "operator_tax_id": "PT1", "operator_address": "Rua"}
    assert load_adhoc_settings({}) is None
    assert load_adhoc_settings({**ok, "enabled": False}) is None
    s = load_adhoc_settings({**ok, "hold_amount": "25.50"})
    assert s is not None and s.hold_minor() == 2550
    with pytest.raises(ConfigError, match=r"adhoc.operator_tax_id"):
        load_adhoc_settings({"operator_name": "X", "operator_address": "Rua"})
    with pytest.raises(ConfigError, match=r"adhoc.bogus: unknown key"):
        load_adhoc_settings({**ok, "bogus": 1})
    with pytest.raises(ConfigError, match=r"adhoc.terminals.0.id_tag_pattern"):
        load_adhoc_settings({**ok, "terminals": [{"station": "S", "id_tag_pattern": "("}]})
    with pytest.raises(ConfigError, match=r"adhoc.hold_amount"):
        load_adhoc_settings({**ok, "hold_amount": 0})
