"""A simulated day of a car park (issue 18): 8 stations of 22 kW behind a connection that
cannot feed them all, on one injected clock shared by csms and the simulated stations.
Cars come and go, one car wants less than its share, a station goes offline while it
charges, one reboots and forgets its profiles, the time-of-day window lowers the limit in
the day, and the building's energy manager lowers it further for an hour.

The proof is measured, not assumed: from the meter values csms stored (whatever the
stations' profiles said), the site's average power in every 1-minute window of the day
stays within the limit in force, and the limit is used (the cars want far more)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from csms.ports import ENERGY_IMPORT_REGISTER
from tests.conftest import start_system, station_body

DAY = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday; Lisbon is on UTC in winter
IDS = [f"PK{n}" for n in range(1, 9)]
VOLTS_PHASES = 230 * 3
BASE_A, DAY_A, BUILDING_A = 96, 64, 40  # the connection; 08:00-22:00; 18:00-19:00
CAR_W = 22_000.0


def at(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


# (minute, what happens)
SCRIPT: list[tuple[int, str, str, Any]] = [
    (at("06:30"), "PK1", "arrive", None),
    (at("07:00"), "PK2", "arrive", None),
    (at("07:10"), "PK3", "arrive", None),
    (at("07:20"), "PK4", "arrive", 7_400.0),  # a car that takes 7.4 kW at most
    (at("07:40"), "PK5", "arrive", None),
    (at("09:00"), "PK6", "arrive", None),
    (at("09:30"), "PK7", "arrive", None),
    (at("10:00"), "PK8", "arrive", None),
    (at("11:00"), "PK2", "leave", None),
    (at("12:00"), "PK5", "offline", None),  # charging, csms cannot reach it
    (at("12:40"), "PK5", "online", None),
    (at("13:00"), "PK3", "leave", None),
    (at("13:05"), "PK3", "reboot", None),  # forgets its profiles
    (at("13:20"), "PK3", "arrive", None),
    (at("15:00"), "PK1", "leave", None),
    (at("16:00"), "PK2", "arrive", None),
    (at("18:00"), "site", "limit", BUILDING_A),
    (at("19:00"), "site", "limit", None),
    (at("20:00"), "PK6", "leave", None),
    (at("21:00"), "PK7", "leave", None),
    (at("23:00"), "PK8", "leave", None),
]


def limit_a(minute: int) -> int:
    a = BASE_A
    if at("08:00") <= minute < at("22:00"):
        a = min(a, DAY_A)
    if at("18:00") <= minute < at("19:00"):
        a = min(a, BUILDING_A)
    return a


async def settle(service: Any) -> None:
    """Until csms has done what the last frames and the clock asked (bounded)."""
    deadline = time.monotonic() + 10
    quiet = 0
    while quiet < 3:
        assert time.monotonic() < deadline, "csms did not settle within 10 s"
        await asyncio.sleep(0.002)
        quiet = quiet + 1 if service.settled() else 0


async def test_a_day_of_a_car_park_never_exceeds_its_connection(tmp_path: Path) -> None:
    clock = FakeClock(DAY)
    system, session, cpo = await start_system(
        tmp_path,
        clock=clock,
        smart={"check_seconds": 900, "recompute_seconds": 60},
        ocpp__meter_value_sample_interval="60",
    )
    service = next(e for e in system.extensions if e.name == "smart").service
    stations: dict[str, Station] = {}
    try:
        for sid in IDS:
            assert (await cpo.api.put(f"/api/v1/stations/{sid}", station_body(sid, 1)))[0] == 201
            st = Station(
                sid,
                cpo.ocpp_url,
                1,
                clock=clock.now,
                behaviour=Behaviour(
                    auto_heartbeat=False, charge_power_w=CAR_W, ramp_w_per_s=1000.0
                ),
            )
            await st.connect()
            await st.boot_and_report()
            stations[sid] = st
        rules = {
            "limit": BASE_A,
            "unit": "A",
            "min_per_evse": 6,
            "windows": [{"start": "08:00", "end": "22:00", "limit": DAY_A}],
            "time_zone": "Europe/Lisbon",
        }
        status, site = await cpo.api.put(
            "/api/v1/smart/sites/PARK", {"name": "Car park", "rules": rules, "members": IDS}
        )
        assert status == 201, site
        await settle(service)

        script = defaultdict(list)
        for minute, who, what, arg in SCRIPT:
            script[minute].append((who, what, arg))
        tx_of: dict[str, int] = {}
        for minute in range(24 * 60):
            for who, what, arg in script.get(minute, []):
                st = stations.get(who)
                if what == "arrive":
                    assert st is not None
                    st.connectors[1].wanted_w = arg
                    answer = await st.start_transaction(1, f"CAR-{who}-{minute}")
                    assert answer is not None
                    tx_of[who] = answer["transactionId"]
                elif what == "leave":
                    assert st is not None
                    await st.stop_transaction(tx_of.pop(who))
                elif what == "offline":
                    assert st is not None
                    await st.disconnect()
                elif what == "online":
                    assert st is not None
                    await st.connect()
                    await st.boot_and_report()
                elif what == "reboot":
                    assert st is not None
                    st.charging_profiles.clear()
                    await st.boot_and_report()
                elif what == "limit":
                    if arg is None:
                        status, _ = await cpo.api.request(
                            "DELETE", "/api/v1/smart/sites/PARK/limit"
                        )
                    else:
                        status, _ = await cpo.api.put(
                            "/api/v1/smart/sites/PARK/limit", {"limit": arg}
                        )
                    assert status == 200
                await settle(service)
            await clock.advance(60)
            for st in stations.values():
                await st.catch_up()
            await settle(service)
        # the offline station's queued meter values are all in by now
        await settle(service)

        # ---- the measure: the site's power in every minute, from what csms stored
        txs = await system.port.transactions_started(
            DAY, DAY + timedelta(days=2), station_id=None, id_tag=None, after=None, limit=1000
        )
        assert len(txs) == 10, [t.id for t in txs]
        readings = await system.port.meter_series([t.id for t in txs], [ENERGY_IMPORT_REGISTER])
        points: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
        for t in txs:
            points[t.id].append((t.start_time, float(t.meter_start)))
            if t.stop_time is not None and t.meter_stop is not None:
                points[t.id].append((t.stop_time, float(t.meter_stop)))
        for r in readings:
            points[r.transaction_id].append((r.timestamp, float(r.value)))
        watts: dict[int, float] = defaultdict(float)  # minute of the day -> site W
        minutes_measured = 0
        for series in points.values():
            series.sort()
            for (t1, e1), (t2, e2) in itertools.pairwise(series):
                seconds = (t2 - t1).total_seconds()
                if seconds <= 0:
                    continue
                assert seconds == 60 and t1.second == 0, (t1, t2)  # aligned minutes
                minute = int((t1 - DAY).total_seconds() // 60)
                watts[minute] += (e2 - e1) * 3600 / seconds
                minutes_measured += 1
        assert minutes_measured > 5000, minutes_measured  # 10 sessions, most of a day
        over = []
        for minute, w in sorted(watts.items()):
            allowed = limit_a(minute) * VOLTS_PHASES
            # (the registers are whole Wh: 2 Wh per station and minute is 120 W)
            if w > allowed + 120 * len(IDS):
                over.append((minute, round(w), allowed))
        assert over == [], over[:20]
        # and the connection is used: the cars want far more than it gives
        busy = [m for m in range(at("10:00"), at("11:00"))]
        used = sum(watts[m] for m in busy) / len(busy)
        assert used >= 0.9 * DAY_A * VOLTS_PHASES, used
        hour_18 = sum(watts[m] for m in range(at("18:01"), at("19:00"))) / 59
        assert 0.85 * BUILDING_A * VOLTS_PHASES <= hour_18 <= BUILDING_A * VOLTS_PHASES + 960
    finally:
        for st in stations.values():
            await st.disconnect()
        await session.close()
        await system.stop()
