"""Retiring a station or one of its EVSEs (issue 16, item 7), end to end over real sockets:
the simulator as the station, the flaky OCPI hub as MOBI.E. A retired EVSE is REMOVED at the
hub and in our OCPI Locations, its history stays in the API, a retired station is
disconnected and refused at the handshake, and a retirement made while the hub is down
reaches it once it is back."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.exceptions import InvalidStatus

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register

OCPI = {
    "offline_after": 30,
    "session_update_interval": 1,
    "push_timeout": 0.5,
    "retry_max_seconds": 1,
}


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


def sim(station_id: str, url: str) -> Station:
    return Station(
        station_id,
        url,
        2,
        behaviour=Behaviour(
            auto_heartbeat=False, auto_meter_values=False, auto_reconnect=False, step_delay=0.02
        ),
    )


async def our_locations(cpo: Running, hub: FlakyHub) -> dict[str, dict[str, Any]]:
    """Our OCPI Locations, as the hub GETs them."""
    assert hub.token_c is not None
    token = base64.b64encode(hub.token_c.encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.get(
            cpo.http_url + "/ocpi/2.2.1/locations",
            headers={"Authorization": f"Token {token}"},
        ) as r:
            answer = await r.json()
    assert answer["status_code"] == 1000, answer
    return {loc["id"]: loc for loc in answer["data"]}


def statuses(hub: FlakyHub, location_id: str) -> list[str]:
    """The EVSE statuses the hub holds for a Location (none before its first PUT)."""
    loc = hub.locations.get(location_id) or {}
    return [e["status"] for e in loc.get("evses") or []]


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_retire_a_station_end_to_end(world: tuple[Running, FlakyHub]) -> None:
    cpo, hub = world
    await cpo.define_station("RT1", 2)
    st = sim("RT1", cpo.ocpp_url)
    await st.connect()
    try:
        await st.boot_and_report()
        await eventually(lambda: statuses(hub, "LOC-RT1")[:1] == ["AVAILABLE"])
        before = hub.locations["LOC-RT1"]["last_updated"]
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        await st.meter_values(1, tx, energy_wh=1200, power_w=7000)

        # a transaction is open: refused, with or without force
        for body in (None, {"force": True}):
            status, refused = await cpo.api.post("/api/v1/stations/RT1/retire", body)
            assert status == 409, refused
            assert refused["error"] == "open_transaction"
            assert str(tx) in refused["message"]
        assert cpo.system.registry.is_connected("RT1")
        _, view = await cpo.api.get("/api/v1/stations/RT1")
        assert view["retired"] is False

        await st.stop_charging(1)
        status, done = await cpo.api.post(
            "/api/v1/stations/RT1/retire", {"reason": "replaced by RT9"}
        )
        assert status == 200, done
        assert done["station_retired"] is True
        assert done["removed_connector_ids"] == [1, 2]
        assert done["station"]["retired"] is True
        assert done["station"]["retired_reason"] == "replaced by RT9"
        # the station's websocket is closed by csms
        await eventually(lambda: not st.connected and not cpo.system.registry.is_connected("RT1"))
    finally:
        await st.disconnect()

    # and it is refused when it comes back, with the reason, counted
    with pytest.raises(InvalidStatus) as e:
        await st.connect()
    assert e.value.response.status_code == 410
    assert b"retired" in e.value.response.body
    refused = cpo.system.metrics.handshakes_refused.labels("retired")._value.get()
    assert refused == 1
    assert not cpo.system.registry.is_connected("RT1")

    # the hub has every EVSE REMOVED, the Location's last_updated moved
    await eventually(lambda: statuses(hub, "LOC-RT1") == ["REMOVED"] * 2)
    loc = hub.locations["LOC-RT1"]
    # (OCPI times are to the second: the retirement's own time, which is the newest)
    retired_at = _t(done["station"]["retired_at"]).replace(microsecond=0)
    assert _t(loc["last_updated"]) == retired_at >= _t(before)
    assert {_t(e["last_updated"]) for e in loc["evses"]} == {retired_at}
    # our own Locations keep serving it, REMOVED (never dropped)
    ours = (await our_locations(cpo, hub))["LOC-RT1"]
    assert [e["status"] for e in ours["evses"]] == ["REMOVED", "REMOVED"]
    assert ours["last_updated"] == loc["last_updated"]
    # a day of silence later (rule R7's clock, moved by hand): nothing turns UNKNOWN, nothing
    # is owed to the hub for it, and its Location is the same
    bridge = cpo.system.extensions[0].bridge  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(days=1)
    changes = [
        e for e in bridge.pusher.rules.tick(later) if getattr(e, "station_id", None) == "RT1"
    ]
    assert changes == []
    assert bridge.pusher.rules.evse_state("RT1", 1, later) is None
    snapshot = await bridge.csms.defined_station("RT1")
    assert snapshot is not None
    again = bridge.locations.location(snapshot, later)
    assert [e["status"] for e in again["evses"]] == ["REMOVED", "REMOVED"]
    assert again["last_updated"] == loc["last_updated"]

    # its history stays
    status, txs = await cpo.api.get("/api/v1/transactions?station=RT1")
    assert status == 200 and [t["id"] for t in txs["items"]] == [tx]
    status, one = await cpo.api.get(f"/api/v1/transactions/{tx}")
    assert status == 200 and one["meter_values_total"] >= 1 and one["active"] is False
    _, view = await cpo.api.get("/api/v1/stations/RT1")
    assert view["retired"] is True and view["retired_at"]
    assert all(e["removed_at"] for e in view["evses"])
    assert view["connectors"]  # its status log is still there

    # it is not defined again, nor retired twice
    status, body = await cpo.api.put("/api/v1/stations/RT1", {"location": {}})
    assert status == 409 and body["error"] == "retired"
    status, body = await cpo.api.post("/api/v1/stations/RT1/retire")
    assert status == 409 and body["error"] == "already_retired"
    # its Location id and EVSE uids stay its own
    from tests.conftest import station_body

    status, body = await cpo.api.put("/api/v1/stations/RT9", station_body("RT1"))
    assert status == 409 and body["error"] == "conflict"


async def test_retire_one_evse_while_the_hub_is_down(world: tuple[Running, FlakyHub]) -> None:
    cpo, hub = world
    await cpo.define_station("RT2", 2)
    st = sim("RT2", cpo.ocpp_url)
    await st.connect()
    try:
        await st.boot_and_report()
        await eventually(lambda: statuses(hub, "LOC-RT2") == ["AVAILABLE"] * 2)
        # an EVSE charging cannot be retired; the other can
        answer = await st.start_charging(2, "TAG1")
        assert answer is not None
        status, refused = await cpo.api.post("/api/v1/stations/RT2/evses/LOC-RT2-02/retire")
        assert status == 409 and refused["error"] == "open_transaction"
        await st.stop_charging(2)
        status, _ = await cpo.api.post("/api/v1/stations/RT2/evses/NOPE/retire")
        assert status == 404

        hub.mode = "error500"  # the hub goes down
        status, done = await cpo.api.post("/api/v1/stations/RT2/evses/LOC-RT2-02/retire")
        assert status == 200, done
        assert done == {**done, "removed_connector_ids": [2], "station_retired": False}
        retired_at = done["station"]["evses"][1]["removed_at"]
        # retired twice: refused; the station stays connected and usable
        status, body = await cpo.api.post("/api/v1/stations/RT2/evses/2/retire")
        assert status == 409 and body["error"] == "already_retired"
        assert cpo.system.registry.is_connected("RT2")

        # a status of the retired connector is stored, not pushed
        await st.status(2, "Faulted", error_code="GroundFailure")
        assert await st.start_charging(1, "TAG1") is not None
        _, view = await cpo.api.get("/api/v1/stations/RT2")
        by_id = {c["connector_id"]: c["status"] for c in view["connectors"]}
        assert by_id[2] == "Faulted" and by_id[1] == "Charging"

        await eventually(lambda: len(hub.requests) > 0 and not hub.requests[-1]["accepted"])
        hub.mode = "ok"  # and comes back
        await eventually(lambda: statuses(hub, "LOC-RT2") == ["CHARGING", "REMOVED"])
        removed = hub.locations["LOC-RT2"]["evses"][1]
        assert _t(removed["last_updated"]) == _t(retired_at).replace(microsecond=0)
        await st.stop_charging(1)
        await eventually(lambda: statuses(hub, "LOC-RT2")[:1] == ["AVAILABLE"])
        # the session on the other EVSE went on, to its end
        await eventually(
            lambda: any(
                s.get("evse_uid") == "LOC-RT2-01" and s.get("status") == "COMPLETED"
                for s in hub.sessions.values()
            )
        )
        await eventually(lambda: len(hub.cdrs) == 2)  # both sessions' CDRs
    finally:
        await st.disconnect()
    # nothing but REMOVED went out for the retired EVSE after its retirement
    after = [
        r
        for r in hub.requests
        if r["accepted"]
        and r["method"] == "PATCH"
        and r["path"].rstrip("/").endswith("/LOC-RT2/LOC-RT2-02")
        and r["time"] >= _t(retired_at)
    ]
    assert all(r["body"]["status"] == "REMOVED" for r in after), after
    assert statuses(hub, "LOC-RT2")[1:] == ["REMOVED"]
    ours = (await our_locations(cpo, hub))["LOC-RT2"]
    assert [e["status"] for e in ours["evses"]] == ["AVAILABLE", "REMOVED"]
    # a new definition keeps the retired EVSE, and cannot give its connector another uid
    from tests.conftest import station_body

    body = station_body("RT2", 1)
    status, view = await cpo.api.put("/api/v1/stations/RT2", body)
    assert status == 200, view
    assert [(e["connector_id"], bool(e.get("removed_at"))) for e in view["evses"]] == [
        (1, False),
        (2, True),
    ]
    # a body read back from the view is taken; its removed_at changes nothing
    body = station_body("RT2", 2)
    body["evses"][1]["removed_at"] = "2000-01-01T00:00:00.000Z"
    status, view = await cpo.api.put("/api/v1/stations/RT2", body)
    assert status == 200, view
    assert [e.get("removed_at") for e in view["evses"]] == [None, retired_at]
    body = station_body("RT2", 2)
    body["evses"][1]["uid"] = "LOC-RT2-NEW"
    status, refused = await cpo.api.put("/api/v1/stations/RT2", body)
    assert status == 409 and refused["error"] == "evse_retired"


async def test_a_retirement_the_hub_missed_reaches_it_after_a_restart(tmp_path: Path) -> None:
    """The hub is down when the station is retired, and csms stops before it returns: the
    REMOVED is not lost (what is pending is not kept on disk: the start-up resync finds the
    retirement newer than what the hub acknowledged, and PUTs the Location)."""
    async with FlakyHub() as hub:
        system, session, cpo = await start_system(tmp_path, ocpi=OCPI)
        try:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.define_station("RT3", 2)
            st = sim("RT3", cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            await eventually(lambda: statuses(hub, "LOC-RT3") == ["AVAILABLE"] * 2)
            await st.disconnect()
            hub.mode = "error500"
            refused = len(hub.requests)
            status, done = await cpo.api.post("/api/v1/stations/RT3/retire")
            assert status == 200 and done["station_retired"], done
            await eventually(lambda: len(hub.requests) > refused)
        finally:
            await session.close()
            await system.stop()
        assert statuses(hub, "LOC-RT3") == ["AVAILABLE"] * 2  # it never got the REMOVED
        hub.mode = "ok"
        system, session, cpo = await start_system(tmp_path, ocpi=OCPI)
        try:
            await eventually(lambda: statuses(hub, "LOC-RT3") == ["REMOVED"] * 2)
            with pytest.raises(InvalidStatus) as e:
                await sim("RT3", cpo.ocpp_url).connect()  # (the new server's port)
            assert e.value.response.status_code == 410
        finally:
            await session.close()
            await system.stop()


async def test_retire_from_the_web_interface(tmp_path: Path) -> None:
    """The Retire action: admins only, confirmed by typing the station's id, refused with
    the reason while charging; the retired station is listed apart and its page stays
    readable, without the forms that change it."""
    from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

    system, session, cpo = await start_system(tmp_path, **web_overrides())
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    try:
        assert (await admin.login(ADMIN)).status == 303
        assert (await viewer.login(VIEWER)).status == 303
        await cpo.define_station("RTW", 2)
        await cpo.define_station("RTX", 1)
        await cpo.put_tag("TAG1")
        _, page = await viewer.get("/stations/RTW")
        assert 'id="retire"' not in page
        status, _, _ = await viewer.post("/stations/RTW/retire", {"confirm": "RTW"})
        assert status == 403
        _, page = await admin.get("/stations/RTW")
        assert 'id="retire"' in page and 'value="LOC-RTW-02"' in page

        # the confirmation must be the station's id
        status, _, headers = await admin.post("/stations/RTW/retire", {"confirm": "rtw"})
        assert status == 303 and headers["Location"].endswith("#command-result")
        _, page = await admin.get("/stations/RTW")
        assert "does not match" in page or "não coincide" in page
        assert (await cpo.api.get("/api/v1/stations/RTW"))[1]["retired"] is False

        st = sim("RTW", cpo.ocpp_url)
        await st.connect()
        try:
            await st.boot_and_report()
            assert await st.start_charging(1, "TAG1") is not None
            await admin.post("/stations/RTW/retire", {"confirm": "RTW", "what": "LOC-RTW-01"})
            _, page = await admin.get("/stations/RTW")
            assert "open_transaction" not in page and "stop it first" in page
            # the other EVSE can go while the first charges
            await admin.post("/stations/RTW/retire", {"confirm": "RTW", "what": "LOC-RTW-02"})
            _, view = await cpo.api.get("/api/v1/stations/RTW")
            assert [bool(e.get("removed_at")) for e in view["evses"]] == [False, True]
            await st.stop_charging(1)
            await admin.post("/stations/RTW/retire", {"confirm": "RTW", "reason": "site <closed>"})
            await eventually(lambda: not st.connected)
        finally:
            await st.disconnect()
        _, view = await cpo.api.get("/api/v1/stations/RTW")
        assert view["retired"] is True and view["retired_reason"] == "site <closed>"

        _, page = await admin.get("/stations/RTW")
        assert 'id="retired"' in page and "site &lt;closed&gt;" in page
        assert 'id="retire"' not in page and 'id="commands"' not in page
        assert "/stations/RTW/edit" not in page
        assert 'id="station-sessions"' in page  # its history
        # listed apart: "retired" shows it alone, the other states leave it out
        _, listing = await admin.get("/stations?state=retired")
        assert 'data-station="RTW"' in listing and 'data-station="RTX"' not in listing
        _, listing = await admin.get("/stations?state=offline")  # (it was seen: not here)
        assert 'data-station="RTW"' not in listing
        _, listing = await admin.get("/stations?state=never")
        assert 'data-station="RTW"' not in listing and 'data-station="RTX"' in listing
        assert "Retir" in listing  # the filter's choice
        _, listing = await admin.get("/stations")
        assert 'data-station="RTW"' in listing and 'data-station="RTX"' in listing
    finally:
        await admin.close()
        await viewer.close()
        await session.close()
        await system.stop()
