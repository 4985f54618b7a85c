"""A rule-R8 touch's last_updated is computed from memory when it can (Bridge.
location_touch_of_station); it must always equal what the full Location computed from the
database says, through boots, status changes, sessions, silence (UNKNOWN), return and
redefinition."""

from __future__ import annotations

import asyncio
from pathlib import Path

from charger_sim import Behaviour, Station
from tests.conftest import start_system

OFFLINE_AFTER = 2


async def test_touch_last_updated_always_equals_the_full_location(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, ocpi={"offline_after": OFFLINE_AFTER})
    bridge = system.extensions[0].bridge  # type: ignore[attr-defined]
    checked = 0

    async def same() -> None:
        nonlocal checked
        touch = await bridge.location_touch_of_station("TB1")
        full = await bridge.location_of_station("TB1")
        assert touch is not None and full is not None
        location, _ = full
        assert touch == (location["id"], location["last_updated"]), (touch, location)
        # and the memory path really was taken on the second ask, with the same answer
        assert await bridge.location_touch_of_station("TB1") == touch
        checked += 1

    try:
        await cpo.define_station("TB1", 2)
        await cpo.put_tag("TAG1")
        st = Station(
            "TB1",
            cpo.ocpp_url,
            2,
            behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.05),
        )
        await st.connect()
        try:
            await st.boot_and_report()
            await same()
            answer = await st.start_charging(1, "TAG1")
            assert answer is not None
            await same()
            await st.meter_values(1, answer["transactionId"], energy_wh=1500, power_w=7400)
            await same()
            await st.stop_charging(1)
            await same()
            await asyncio.sleep(OFFLINE_AFTER + 0.5)  # silent: its EVSEs are UNKNOWN
            await same()
            await st.heartbeat()  # back
            await same()
            await cpo.define_station("TB1", 3)  # redefined: a third EVSE
            await asyncio.sleep(0.2)
            await same()
            await st.heartbeat()
            await same()
        finally:
            await st.disconnect()
    finally:
        await session.close()
        await system.stop()
    assert checked == 8
