"""Stuck transactions (issue 16, item 6) end to end over real sockets: the simulator leaves
a transaction open and then reports its connector Available, reboots, or falls silent; the
API and the web interface list it with the evidence; an admin closes it with a reason; the
flaky OCPI hub (as MOBI.E) gets the Session COMPLETED and exactly one CDR, also when the
station's own StopTransaction arrives afterwards (stored as an anomaly)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from csms.stuck import Evidence, Facts, close_values, judge, parse_close
from csms.usecases import Refused
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register

OCPI = {
    "offline_after": 30,
    "session_update_interval": 1,
    "push_timeout": 0.5,
    "retry_max_seconds": 1,
}
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SILENCE = timedelta(hours=12)


def sim(station_id: str, url: str) -> Station:
    return Station(
        station_id,
        url,
        2,
        behaviour=Behaviour(
            auto_heartbeat=False, auto_meter_values=False, auto_reconnect=False, step_delay=0.02
        ),
    )


# ---------------------------------------------------------------------------- pure core


def facts(**kw: Any) -> Facts:
    base: dict[str, Any] = {
        "transaction_id": 1,
        "started_at": T0,
        "start_time": T0,
        "last_message_at": T0 + timedelta(minutes=5),
    }
    return Facts(**{**base, **kw})


def test_judge() -> None:
    now = T0 + timedelta(hours=1)
    assert judge(facts(), now, SILENCE) is None
    free = judge(
        facts(status_after="Available", status_after_at=T0 + timedelta(minutes=30)), now, SILENCE
    )
    assert free is not None and free.kind == "connector_free"
    assert free.at == T0 + timedelta(minutes=30) and "Available" in free.detail
    # a boot before the start is not evidence; one after it is
    assert judge(facts(booted_at=T0 - timedelta(minutes=1)), now, SILENCE) is None
    boot = judge(facts(booted_at=T0 + timedelta(minutes=10)), now, SILENCE)
    assert boot is not None and boot.kind == "rebooted"
    # both: the earliest
    both = judge(
        facts(
            status_after="Preparing",
            status_after_at=T0 + timedelta(minutes=20),
            booted_at=T0 + timedelta(minutes=10),
        ),
        now,
        SILENCE,
    )
    assert both is not None and both.kind == "rebooted"
    # silence: from the last message, exactly at the limit
    last = T0 + timedelta(minutes=5)
    assert judge(facts(), last + SILENCE - timedelta(seconds=1), SILENCE) is None
    silent = judge(facts(), last + SILENCE, SILENCE)
    assert silent is not None and silent.kind == "silent" and silent.at == last


def test_close_values() -> None:
    ev = Evidence("connector_free", T0 + timedelta(hours=1), "x")
    now = T0 + timedelta(hours=2)
    assert close_values(1000, 2500.7, T0, ev, now) == (2500, ev.at)
    assert close_values(1000, None, T0, ev, now) == (1000, ev.at)  # no reading: meter_start
    assert close_values(1000, 10.0, T0, ev, now) == (1000, ev.at)  # never backwards
    assert close_values(1000, float("nan"), T0, None, now) == (1000, now)  # forced: now
    early = Evidence("rebooted", T0 - timedelta(hours=1), "x")  # never before the start
    assert close_values(0, 5.0, T0, early, now) == (5, T0)


def test_parse_close() -> None:
    assert parse_close({"reason": " stuck since the outage "}) == ("stuck since the outage", False)
    assert parse_close({"reason": "x", "force": True}) == ("x", True)
    for bad in (
        None,
        [],
        {},
        {"reason": ""},
        {"reason": "x" * 201},
        {"reason": 5},
        {"reason": "x", "force": "yes"},
        {"reason": "x", "other": 1},
    ):
        with pytest.raises(Refused) as e:
            parse_close(bad)
        assert e.value.status == 422


# ---------------------------------------------------------------------------- end to end


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Running, FlakyHub]]:
    system, session, cpo = await start_system(tmp_path, ocpi=OCPI)
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.put_tag("TAG1")
            yield cpo, hub
    finally:
        await session.close()
        await system.stop()


async def stuck_ids(cpo: Running, query: str = "") -> list[int]:
    status, page = await cpo.api.get(f"/api/v1/transactions/stuck{query}")
    assert status == 200, page
    return [i["id"] for i in page["items"]]


async def test_connector_available_then_manual_close_completes_session_and_one_cdr(
    world: tuple[Running, FlakyHub],
) -> None:
    cpo, hub = world
    await cpo.define_station("SK1", 2)
    st = sim("SK1", cpo.ocpp_url)
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        await st.meter_values(1, tx, energy_wh=4321, power_w=7000)
        await eventually(lambda: any(s.get("status") == "ACTIVE" for s in hub.sessions.values()))
        # charging: not stuck, and a close is refused without force
        assert await stuck_ids(cpo) == []
        status, refused = await cpo.api.post(f"/api/v1/transactions/{tx}/close", {"reason": "x"})
        assert status == 409 and refused["error"] == "not_stuck", refused

        # the station reports the connector Available without a StopTransaction
        await st.status(1, "Available")
        status, page = await cpo.api.get("/api/v1/transactions/stuck")
        assert status == 200 and page["total"] == 1, page
        item = page["items"][0]
        assert item["id"] == tx and item["evidence"]["kind"] == "connector_free"
        assert item["proposed"]["meter_stop_wh"] == 4321
        assert await stuck_ids(cpo, "?station=SK1") == [tx]
        assert await stuck_ids(cpo, "?station=OTHER") == []

        # hostile input
        for path, body, code in [
            (f"/api/v1/transactions/{tx}/close", {}, 422),
            (f"/api/v1/transactions/{tx}/close", {"reason": "x" * 300}, 422),
            (f"/api/v1/transactions/{tx}/close", [1], 422),
            ("/api/v1/transactions/999999/close", {"reason": "x"}, 404),
            ("/api/v1/transactions/abc/close", {"reason": "x"}, 404),
            ("/api/v1/transactions/0/close", {"reason": "x"}, 404),
            ("/api/v1/transactions/99999999999999999999999/close", {"reason": "x"}, 404),
        ]:
            status, answer = await cpo.api.post(path, body)
            assert status == code, (path, body, answer)
            assert answer["status"] == "error"
        for query in ("?limit=0", "?limit=x", "?offset=-1"):
            status, _ = await cpo.api.get(f"/api/v1/transactions/stuck{query}")
            assert status == 400, query

        status, closed = await cpo.api.post(
            f"/api/v1/transactions/{tx}/close", {"reason": "charger lost the stop"}
        )
        assert status == 200, closed
        assert closed["meter_stop_wh"] == 4321 and closed["evidence"]["kind"] == "connector_free"
        status, again = await cpo.api.post(f"/api/v1/transactions/{tx}/close", {"reason": "x"})
        assert status == 409 and again["error"] == "not_open"
        assert await stuck_ids(cpo) == []

        _, view = await cpo.api.get(f"/api/v1/transactions/{tx}")
        assert view["active"] is False and view["stop_reason"] == "Manual"
        assert view["meter_stop_wh"] == 4321 and "manual_close" in view["flags"]
        manual = view["manual_close"]
        assert manual["closed_by"] == "api:admin" and manual["reason"] == "charger lost the stop"
        assert manual["evidence"]["kind"] == "connector_free" and manual["closed_at"]

        # the hub: the Session COMPLETED and its CDR, once
        await eventually(lambda: str(tx) in hub.cdrs)
        session = hub.sessions[str(tx)]
        assert session["status"] == "COMPLETED" and session["kwh"] == pytest.approx(4.321, abs=0.01)
        assert hub.cdrs[str(tx)]["total_energy"] == pytest.approx(4.321, abs=0.01)

        # the station's own stop arrives later: an anomaly, nothing else
        await st.stop_charging(1)

        async def anomaly() -> bool:
            _, found = await cpo.api.get("/api/v1/anomalies?station=SK1")
            return any(a["kind"] == "stop_after_manual_close" for a in found["items"])

        await eventually(anomaly)
        await asyncio.sleep(0.3)  # (a second CDR would have been posted by now)
        cdr_posts = [r for r in hub.requests if r["method"] == "POST" and "/cdrs" in r["path"]]
        assert len([r for r in cdr_posts if r["accepted"]]) == 1
        _, view = await cpo.api.get(f"/api/v1/transactions/{tx}")
        assert view["meter_stop_wh"] == 4321 and view["stop_reason"] == "Manual"
    finally:
        await st.disconnect()


async def test_reboot_evidence_and_forced_close(world: tuple[Running, FlakyHub]) -> None:
    cpo, hub = world
    await cpo.define_station("SK2", 2)
    st = sim("SK2", cpo.ocpp_url)
    await st.connect()
    try:
        await st.boot_and_report()
        first = await st.start_charging(1, "TAG1")
        second = await st.start_charging(2, "TAG1")
        assert first is not None and second is not None
        await st.boot()  # rebooted, and both transactions left open
        _, page = await cpo.api.get("/api/v1/transactions/stuck?limit=1")
        assert page["total"] == 2 and len(page["items"]) == 1
        assert page["items"][0]["evidence"]["kind"] == "rebooted"
        # no meter value: closed at meter_start
        status, closed = await cpo.api.post(
            f"/api/v1/transactions/{first['transactionId']}/close", {"reason": "reboot"}
        )
        assert status == 200 and closed["evidence"]["kind"] == "rebooted", closed
        _, view = await cpo.api.get(f"/api/v1/transactions/{first['transactionId']}")
        assert view["meter_stop_wh"] == view["meter_start_wh"]
        await eventually(lambda: str(first["transactionId"]) in hub.cdrs)
    finally:
        await st.disconnect()

    # a transaction without evidence closes only with force (at now)
    st3 = sim("SK3", cpo.ocpp_url)
    await cpo.define_station("SK3", 1)
    await st3.connect()
    try:
        await st3.boot_and_report()
        answer = await st3.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        status, body = await cpo.api.post(
            f"/api/v1/transactions/{tx}/close", {"reason": "test", "force": True}
        )
        assert status == 200 and body["evidence"] == {"kind": "forced"}, body
    finally:
        await st3.disconnect()


async def test_silence_by_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(datetime.now(UTC))
    system, session, cpo = await start_system(tmp_path, clock=clock, OCPP__STUCK_SILENCE_HOURS="2")
    st = sim("SK4", cpo.ocpp_url)
    try:
        await cpo.define_station("SK4", 1)
        await cpo.put_tag("TAG1")
        await st.connect()
        await st.boot_and_report()
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        await clock.advance(3600)
        await st.meter_values(1, tx, energy_wh=800, power_w=500)
        await clock.advance(3600)
        assert await stuck_ids(cpo) == []  # 1 h since the last meter value
        await clock.advance(3600 + 1)
        _, page = await cpo.api.get("/api/v1/transactions/stuck")
        assert [i["id"] for i in page["items"]] == [tx], page
        assert page["items"][0]["evidence"]["kind"] == "silent" and page["silence_hours"] == 2
        status, closed = await cpo.api.post(f"/api/v1/transactions/{tx}/close", {"reason": "dead"})
        assert status == 200, closed
        assert closed["meter_stop_wh"] == 800
    finally:
        await st.disconnect()
        await session.close()
        await system.stop()


async def test_stuck_page_and_close_from_the_web_interface(tmp_path: Path) -> None:
    from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

    system, session, cpo = await start_system(tmp_path, **web_overrides())
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    st = sim("SKW", cpo.ocpp_url)
    try:
        assert (await admin.login(ADMIN)).status == 303
        assert (await viewer.login(VIEWER)).status == 303
        await cpo.define_station("SKW", 1)
        await cpo.put_tag("TAG1")
        await st.connect()
        await st.boot_and_report()
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        await st.status(1, "Available")

        status, _ = await viewer.get("/transactions/stuck")
        assert status == 403
        status, _, _ = await viewer.post(f"/transactions/{tx}/close", {"reason": "x"})
        assert status == 403
        _, page = await admin.get("/transactions/stuck")
        assert f'data-transaction="{tx}"' in page and 'data-evidence="connector_free"' in page

        # no reason: refused, shown
        status, _, _ = await admin.post(f"/transactions/{tx}/close", {"reason": ""})
        assert status == 303
        _, page = await admin.get("/transactions/stuck")
        assert "reason" in page and f'data-transaction="{tx}"' in page

        await admin.post(f"/transactions/{tx}/close", {"reason": "lost <stop>"})
        _, page = await admin.get("/transactions/stuck")
        assert f'data-transaction="{tx}"' not in page
        _, view = await cpo.api.get(f"/api/v1/transactions/{tx}")
        assert view["manual_close"]["closed_by"].startswith("web:")
        assert view["manual_close"]["reason"] == "lost <stop>"
        # the sessions list shows the manual close, escaped
        _, page = await viewer.get("/sessions")
        assert 'data-manual-close="1"' in page and "lost &lt;stop&gt;" in page
        # and the session's own page
        _, page = await viewer.get(f"/sessions/{tx}")
        assert 'id="session-manual-close"' in page and "lost &lt;stop&gt;" in page
    finally:
        await st.disconnect()
        await admin.close()
        await viewer.close()
        await session.close()
        await system.stop()
