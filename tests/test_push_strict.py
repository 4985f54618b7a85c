"""MOBI.E's rules as a strict hub counts them, over real sockets (issue: a strict stand-in
for MOBI.E found these): every StatusNotification's status reaches the hub in order with its
own time, also through a hub outage and a restart (R6); a silence always ends in UNKNOWN,
however the deadlines fall (R7); nothing older than what the hub has is pushed after a
crash, and R7's clock survives it; a CDR is POSTed once; towards MOBI.E a session started
by a command is WHITELIST, as its profile fixes it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from ocpi_bridge.transport import parse_ocpi_time
from tests.conftest import Api, Running, start_system, station_body
from tests.daemon import Daemon
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register

FAST = {"push_timeout": 0.5, "retry_max_seconds": 1}


def sim(station: str, url: str, connectors: int = 2) -> Station:
    return Station(
        station,
        url,
        connectors,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.0),
    )


def evse_patches(hub: FlakyHub, uid: str, since: int = 0) -> list[tuple[str, str]]:
    """(status, last_updated) of every EVSE write the hub accepted for that EVSE (PATCHes,
    and the EVSE inside a Location PUT), in the order it took them."""
    out = []
    for r in hub.requests[since:]:
        if not r["accepted"] or not isinstance(r["body"], dict):
            continue
        parts = r["path"].split("/2.2.1/", 1)[1].split("/")
        if parts[0] != "locations":
            continue
        if len(parts) == 5 and parts[4] == uid and "status" in r["body"]:
            out.append((r["body"]["status"], r["body"]["last_updated"]))
        elif len(parts) == 4 and r["method"] == "PUT":
            for evse in r["body"].get("evses", []):
                if evse["uid"] == uid:
                    out.append((evse["status"], evse["last_updated"]))
    return out


def merged(statuses: list[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for status, _ in statuses:
        if not out or out[-1] != status:
            out.append(status)
    return out


async def quiet(api: Api) -> None:
    """Until nothing is left to push (twice, 0.3 s apart: the last frames' events may not
    have reached the pusher at the first look)."""

    async def empty() -> bool:
        status, pending = await api.get("/api/v1/ocpi/pushes")
        return status == 200 and pending["total"] == 0

    for _ in range(2):
        await eventually(empty)
        await asyncio.sleep(0.3)
    await eventually(empty)


async def r6_samples(system: Any, api: Api, station: str) -> tuple[int, float]:
    """How many R6 delays the platform measured for a station, and the largest."""
    await system.extensions[0].bridge.pusher.compliance.flush()
    _, report = await api.get("/api/v1/ocpi/compliance")
    r6 = [i for i in report["items"] if i["rule"] == "R6" and i["id"] == station]
    return sum(i["samples"] for i in r6), max((i["largest_seconds"] for i in r6), default=0.0)


async def stations_up(cpo: Running, ids: list[str], connectors: int = 1) -> list[Station]:
    """Define these stations; connect, boot and report each (at once)."""
    for sid in ids:
        await cpo.define_station(sid, connectors)

    async def up(sid: str) -> Station:
        st = sim(sid, cpo.ocpp_url, connectors)
        await st.connect()
        await st.boot_and_report()
        return st

    stations = list(await asyncio.gather(*(up(sid) for sid in ids)))

    # and configured: the provisioning's answers are frames too (they count as the station
    # speaking, R7), so a test that makes stations silent must not start before they are in
    async def configured() -> bool:
        status, body = await cpo.api.get(f"/api/v1/stations?limit={max(len(ids), 1)}")
        done = {i["id"] for i in body["items"] if i["configuration"]["status"] == "compliant"}
        return status == 200 and set(ids) <= done

    await eventually(configured)
    return stations


async def burst(st: Station) -> None:
    """A station back with queued messages: Charging, Finishing, Available within ms."""
    for status in ("Charging", "Finishing", "Available"):
        await st.status(1, status)


# ---------------------------------------------------------------------------- R6


async def test_r6_a_burst_of_status_changes_reaches_the_hub_in_order(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, ocpi={"offline_after": 60, **FAST})
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.define_station("B1", 2)
            st = sim("B1", cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            uid = "LOC-B1-01"
            await quiet(cpo.api)
            before = len(hub.requests)
            # the hub is slow: the EVSE's PATCH is still on its way when the burst comes
            hub.delay = 0.3
            await st.status(1, "Available")
            await asyncio.sleep(0.05)
            await burst(st)
            await eventually(
                lambda: (
                    merged(evse_patches(hub, uid, before)) == ["AVAILABLE", "CHARGING", "AVAILABLE"]
                )
            )
            await st.disconnect()
            got = evse_patches(hub, uid, before)
            # each change with its own time, never going back
            assert [t for _, t in got] == sorted(t for _, t in got)
            assert hub.stale_writes() == []
    finally:
        await session.close()
        await system.stop()


async def test_r6_status_changes_during_a_hub_outage_are_replayed_in_order(
    tmp_path: Path,
) -> None:
    system, session, cpo = await start_system(tmp_path, ocpi={"offline_after": 60, **FAST})
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.define_station("B2", 2)
            st = sim("B2", cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            uid1, uid2 = "LOC-B2-01", "LOC-B2-02"
            await quiet(cpo.api)
            measured_before = await r6_samples(system, cpo.api, "B2")
            hub.mode = "error500"
            await burst(st)
            await st.status(2, "Faulted", error_code="GroundFailure")
            await st.status(2, "Available")
            await asyncio.sleep(1.0)  # retried, refused
            before = len(hub.requests)
            hub.mode = "ok"
            await eventually(
                lambda: (
                    merged(evse_patches(hub, uid1, before)) == ["CHARGING", "AVAILABLE"]
                    and merged(evse_patches(hub, uid2, before)) == ["OUTOFORDER", "AVAILABLE"]
                ),
                timeout=10,
            )
            await st.disconnect()
            assert hub.stale_writes() == []
            # each change is measured for R6, with the time it waited for the hub
            await quiet(cpo.api)
            delivered = len(evse_patches(hub, uid1, before)) + len(evse_patches(hub, uid2, before))
            samples, largest = await r6_samples(system, cpo.api, "B2")
            assert samples - measured_before[0] == delivered
            assert largest >= 1.0  # the outage
    finally:
        await session.close()
        await system.stop()


DAEMON_OCPI = (
    '[ocpi]\nparty_id = "CPO"\nbusiness_name = "Operador"\noffline_after = {offline}\n'
    "session_update_interval = 5\npush_timeout = 0.5\nretry_max_seconds = 1\n"
    "allow_private_peer_addresses = true\n"
)


async def test_r6_changes_the_hub_missed_are_replayed_after_a_crash(tmp_path: Path) -> None:
    """The hub is down; the station goes Charging, Finishing, Available and faults its
    second connector; csms is killed (-9) and started again with the hub back: the hub gets
    every change, in order, from csms's log of StatusNotifications."""
    async with FlakyHub() as hub:
        daemon = Daemon(tmp_path, extra_config=DAEMON_OCPI.format(offline=60))
        await daemon.start()
        async with aiohttp.ClientSession() as s:
            api = Api(daemon.http_url, s)
            await register(hub, daemon.http_url, api)
            assert (await api.put("/api/v1/stations/B3", station_body("B3", 2)))[0] == 201
            st = sim("B3", daemon.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            uid1, uid2 = "LOC-B3-01", "LOC-B3-02"
            await quiet(api)
            hub.mode = "error500"
            await burst(st)
            await st.status(2, "Faulted", error_code="GroundFailure")
            await asyncio.sleep(0.3)
            assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL
            await st.disconnect()
        before = len(hub.requests)
        hub.mode = "ok"
        daemon = Daemon(tmp_path)
        await daemon.start()
        try:
            await eventually(
                lambda: (
                    merged(evse_patches(hub, uid1, before)) == ["CHARGING", "AVAILABLE"]
                    and merged(evse_patches(hub, uid2, before)) == ["OUTOFORDER"]
                ),
                timeout=15,
            )
            assert hub.stale_writes() == []
        finally:
            assert await daemon.signal(signal.SIGTERM) == 0


# ---------------------------------------------------------------------------- R7


async def test_r7_many_stations_falling_silent_within_ms_all_become_unknown(
    tmp_path: Path,
) -> None:
    """Stations whose last frames come milliseconds apart, then nothing at all: every one
    is PATCHed UNKNOWN, whether the clock passes their deadlines one by one or all at once
    (a deadline that fell due while the pusher was busy used to wait for a next event that
    never came)."""
    clock = FakeClock()
    offline = 20
    # the clock stands still between its steps, so a push that failed would never be
    # retried: a push timeout that a loaded machine (two suites at once) cannot exceed
    system, session, cpo = await start_system(
        tmp_path, clock=clock, ocpi={"offline_after": offline, **FAST, "push_timeout": 10}
    )
    stations: list[Station] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            ids = [f"R{i:02d}" for i in range(24)]
            stations = await stations_up(cpo, ids)

            def unknown() -> set[str]:
                return {
                    sid
                    for sid in ids
                    if (evse := hub.locations.get(f"LOC-{sid}", {}).get("evses"))
                    and evse[0]["status"] == "UNKNOWN"
                }

            await eventually(
                lambda: all(
                    merged(evse_patches(hub, f"LOC-{sid}-01"))[-1:] == ["AVAILABLE"] for sid in ids
                )
            )
            # the last frames: a few ms apart
            last = {}
            for st in stations:
                await clock.advance(0.003)
                await st.heartbeat()
                last[st.id] = clock.now()
            # half the stations: the clock moves in one step far past every deadline
            await clock.advance(offline + 15)
            await eventually(lambda: unknown() == set(ids), timeout=10)
            for sid in ids:
                evse = hub.locations[f"LOC-{sid}"]["evses"][0]
                # UNKNOWN as of the end of the silence, to the second
                deadline = last[sid] + timedelta(seconds=offline)
                assert parse_ocpi_time(evse["last_updated"]) == deadline.replace(microsecond=0)
            assert hub.stale_writes() == []
    finally:
        for st in stations:
            await st.disconnect()
        await session.close()
        await system.stop()


async def test_r7_stations_silent_together_on_the_real_clock_all_become_unknown(
    tmp_path: Path,
) -> None:
    """The same on the wall clock: 40 stations whose last frames come together (within
    ms), then nothing else happens at all. Each deadline falls due while the pusher is busy
    with the ones before it; every one must fire, on time."""
    offline = 2
    system, session, cpo = await start_system(tmp_path, ocpi={"offline_after": offline, **FAST})
    stations: list[Station] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            ids = [f"W{i:02d}" for i in range(40)]
            stations = await stations_up(cpo, ids)
            await quiet(cpo.api)
            await asyncio.gather(*(st.heartbeat() for st in stations))
            last = datetime.now(UTC)
            await asyncio.sleep(offline + 2.5)
            unknown = [
                r
                for r in hub.accepted()
                if r["method"] == "PATCH" and (r["body"] or {}).get("status") == "UNKNOWN"
            ]
            assert {r["path"].rsplit("/", 1)[1] for r in unknown} == {
                f"LOC-{sid}-01" for sid in ids
            }
            for r in unknown:  # on time: a second of slack for 40 stations on 2 cores
                assert r["time"] - last <= timedelta(seconds=offline + 1), r
    finally:
        for st in stations:
            await st.disconnect()
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------------- crash


async def test_a_crash_right_after_a_frame_pushes_nothing_stale_and_keeps_r7s_clock(
    tmp_path: Path,
) -> None:
    """kill -9 right after a frame: after the restart the hub gets no Location older than
    the one it has, and the station's EVSEs turn UNKNOWN offline_after after its real last
    frame, not after an older one (the last-frame time used to be written every 15 s)."""
    offline = 6
    async with FlakyHub() as hub:
        daemon = Daemon(tmp_path, extra_config=DAEMON_OCPI.format(offline=offline))
        await daemon.start()
        async with aiohttp.ClientSession() as s:
            api = Api(daemon.http_url, s)
            await register(hub, daemon.http_url, api)
            assert (await api.put("/api/v1/stations/K2", station_body("K2", 1)))[0] == 201
            st = sim("K2", daemon.ocpp_url, 1)
            await st.connect()
            await st.boot_and_report()
            await quiet(api)
            for _ in range(8):  # frames over a few seconds: each is PATCHed (R8)
                await asyncio.sleep(0.3)
                await st.heartbeat()
            await eventually(
                lambda: any(
                    r["accepted"] and r["method"] == "PATCH" and r["path"].endswith("/LOC-K2")
                    for r in hub.requests[-3:]
                )
            )
            last_frame = parse_ocpi_time(hub.locations["LOC-K2"]["last_updated"])
            assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL
            killed_at = asyncio.get_running_loop().time()
            await st.disconnect()
        daemon = Daemon(tmp_path)
        await daemon.start()
        try:
            await eventually(
                lambda: hub.locations["LOC-K2"]["evses"][0]["status"] == "UNKNOWN",
                timeout=offline + 10,
            )
            # not before the real last frame's deadline (to the second, as OCPI writes it)
            waited = asyncio.get_running_loop().time() - killed_at
            evse = hub.locations["LOC-K2"]["evses"][0]
            assert parse_ocpi_time(evse["last_updated"]) >= last_frame + timedelta(seconds=offline)
            assert waited >= offline - 1.5
            assert hub.stale_writes() == []
        finally:
            assert await daemon.signal(signal.SIGTERM) == 0


# ---------------------------------------------------------------------------- CDRs


async def test_many_stops_at_once_post_each_cdr_once(tmp_path: Path) -> None:
    system, session, cpo = await start_system(
        tmp_path, ocpi={"offline_after": 60, "session_update_interval": 60, **FAST}
    )
    stations: list[Station] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.put_tag("TAG1")
            stations = await stations_up(cpo, [f"C{i:02d}" for i in range(16)])
            txs = []
            for st in stations:
                answer = await st.start_charging(1, "TAG1")
                assert answer is not None
                txs.append(str(answer["transactionId"]))
                await st.meter_values(1, answer["transactionId"], energy_wh=1000, power_w=7000)
            await eventually(lambda: all(tx in hub.sessions for tx in txs))
            await asyncio.gather(*(st.stop_charging(1) for st in stations))
            await eventually(lambda: all(tx in hub.cdrs for tx in txs), timeout=15)
            await asyncio.sleep(0.5)  # a second POST would come now
            posts = Counter(r["body"]["id"] for r in hub.accepted() if r["method"] == "POST")
            assert posts == dict.fromkeys(txs, 1)
    finally:
        for st in stations:
            await st.disconnect()
        await session.close()
        await system.stop()


async def test_a_renewal_while_cdrs_are_posted_posts_none_twice(tmp_path: Path) -> None:
    """The hub renews its credentials while CDR POSTs are on their way (a slow hub): the
    resynchronisation that follows must not POST them again."""
    system, session, cpo = await start_system(
        tmp_path, ocpi={"offline_after": 60, "session_update_interval": 60, **FAST}
    )
    stations: list[Station] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.put_tag("TAG1")
            txs = []
            stations = await stations_up(cpo, [f"D{i}" for i in range(4)])
            for st in stations:
                answer = await st.start_charging(1, "TAG1")
                assert answer is not None
                txs.append(str(answer["transactionId"]))
            await quiet(cpo.api)
            hub.delay = 0.4
            await asyncio.gather(*(st.stop_charging(1) for st in stations))
            await eventually(
                lambda: sum(r["method"] == "POST" for r in hub.requests) >= len(txs), timeout=10
            )
            # the POSTs are in flight: the hub renews its credentials now
            token = base64.b64encode((hub.token_c or "").encode()).decode()
            async with aiohttp.ClientSession() as s:
                async with s.put(
                    cpo.http_url + "/ocpi/2.2.1/credentials",
                    json=hub.credentials(),
                    headers={"Authorization": f"Token {token}"},
                ) as r:
                    answer = await r.json()
            assert answer["status_code"] == 1000, answer
            hub.token_c = answer["data"]["token"]
            await eventually(lambda: all(tx in hub.cdrs for tx in txs), timeout=10)
            await quiet(cpo.api)
            posts = Counter(r["body"]["id"] for r in hub.requests if r["method"] == "POST")
            assert posts == dict.fromkeys(txs, 1)
    finally:
        for st in stations:
            await st.disconnect()
        await session.close()
        await system.stop()


async def test_a_non_finite_meter_value_stored_earlier_never_makes_invalid_ocpi_json(
    tmp_path: Path,
) -> None:
    """A database from before non-finite values were refused may hold one: the Session
    pushed to the hub and the one it pulls are still JSON (RFC 8259), the number null."""
    system, session, cpo = await start_system(
        tmp_path, ocpi={"offline_after": 60, "session_update_interval": 1, **FAST}
    )
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.put_tag("TAG1")
            [st] = await stations_up(cpo, ["N1"])
            answer = await st.start_charging(1, "TAG1")
            assert answer is not None
            tx = answer["transactionId"]
            await st.meter_values(1, tx, energy_wh=1000, power_w=7000)

            async def poison(db: Any) -> None:
                await db.execute(
                    "UPDATE meter_values SET value = ? WHERE transaction_id = ?", (float("inf"), tx)
                )

            await system.store.write(poison)
            before = len(hub.requests)
            await eventually(
                lambda: any(
                    "/sessions/" in r["path"] and r["accepted"] for r in hub.requests[before:]
                ),
                timeout=5,
            )
            assert not [r for r in hub.requests if r.get("error")]
            token = base64.b64encode((hub.token_c or "").encode()).decode()
            async with session.get(
                cpo.http_url + "/ocpi/2.2.1/sessions?date_from=2000-01-01T00:00:00Z",
                headers={"Authorization": f"Token {token}"},
            ) as resp:
                text = await resp.text()
            assert resp.status == 200, text
            assert "Infinity" not in text and "NaN" not in text
            pulled = json.loads(text)
            assert [s["id"] for s in pulled["data"]] == [str(tx)]
            await st.disconnect()
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------------- auth_method


def test_towards_mobie_a_command_session_is_whitelist_with_its_reference() -> None:
    from ocpi_bridge.sessions import for_peer

    session: dict[str, Any] = {
        "id": "7",
        "auth_method": "COMMAND",
        "authorization_reference": "REF-1",
        "cdr_token": {
            "uid": "U",
            "type": "RFID",
            "contract_id": "C",
            "country_code": "PT",
            "party_id": "EMS",
        },
    }
    to_mobie = for_peer(session, "2.2.1", mobie=True)
    assert to_mobie["auth_method"] == "WHITELIST"
    assert to_mobie["authorization_reference"] == "REF-1"
    assert session["auth_method"] == "COMMAND"  # the stored object is untouched
    assert for_peer(session, "2.2.1", mobie=False)["auth_method"] == "COMMAND"
    old = for_peer(session, "2.2", mobie=True)
    assert old["auth_method"] == "WHITELIST" and "party_id" not in old["cdr_token"]
