"""MOBI.E's push rules end to end, over real sockets: the server, the simulator as the
station, and the independent OCPI peer (extrawest-ocpi) as the hub, with intervals of a
second or two. Every pushed body passes our strict checks, and every rule is measured on
every instance."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.events import StationSeen
from tests import ocpi_checks as checks
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

OFFLINE_AFTER = 2
SESSION_INTERVAL = 1
# what one push may take on loopback, at most, in these tests
ROUND_TRIP = timedelta(seconds=0.5)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Running, EmspPeer]]:
    system, session, cpo = await start_system(
        tmp_path,
        ocpi={"offline_after": OFFLINE_AFTER, "session_update_interval": SESSION_INTERVAL},
    )
    try:
        async with EmspPeer(party_id="MOB", country_code="PT", role="HUB") as hub:
            _, body = await cpo.api.post("/api/v1/ocpi/token-a", hub.grant)
            assert (await hub.register_with(body["versions_url"], body["token"]))["ok"]
            yield cpo, hub
    except PeerVenvMissing as e:
        pytest.fail(str(e))
    finally:
        await session.close()
        await system.stop()


async def pushes(hub: EmspPeer) -> list[dict[str, Any]]:
    return [r for r in await hub.requests() if r["method"] in ("PUT", "PATCH", "POST")]


async def wait_for(hub: EmspPeer, predicate: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [r for r in await pushes(hub) if predicate(r)]
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no such push reached the hub")
        await asyncio.sleep(0.05)


def check_push(request: dict[str, Any]) -> None:
    """Our strict checks of one pushed request: URL segments, and the body."""
    path, body, method = request["path"], request["body"], request["method"]
    module = next(m for m in ("locations", "sessions", "cdrs") if f"/{m}" in path)
    if method == "POST":
        checks.check_cdr(body)
        return
    checks.check_push_url(module, path, body, "PT", "CPO")
    if method == "PATCH":
        depth = len(path.rstrip("/").split(f"/{module}/", 1)[1].split("/"))
        kind = {"locations": {3: "locations", 4: "evse", 5: "connector"}, "sessions": {}}
        checks.check_patch(
            kind["locations"].get(depth, module) if module == "locations" else module, body
        )
    elif module == "locations":
        checks.check_location(body)
    else:
        checks.check_session(body)


async def test_every_rule_on_every_instance(setup: tuple[Running, EmspPeer]) -> None:
    cpo, hub = setup
    frames: list[datetime] = []
    sub = cpo.system.bus.subscribe("test-frames")

    # R1: a station defined is PUT with every EVSE PLANNED
    await cpo.define_station("E2E", 2)
    await cpo.put_tag("TAG1")
    [put] = await wait_for(hub, lambda r: r["method"] == "PUT" and "/locations/" in r["path"])
    assert [e["status"] for e in put["body"]["evses"]] == ["PLANNED", "PLANNED"]

    st = Station(
        "E2E",
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.05),
    )
    await st.connect()
    try:
        await st.boot_and_report()
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]
        for i in range(1, 5):  # meter values, but also a gap longer than the session interval
            await asyncio.sleep(0.9 if i != 3 else 1.6)
            await st.meter_values(1, tx, energy_wh=1500 * i, power_w=7400)
        await st.stop_charging(1)
        await asyncio.sleep(0.5)
        # R7: silence longer than offline_after, then the station speaks again
        await asyncio.sleep(OFFLINE_AFTER + 0.5)
        await st.heartbeat()
        await asyncio.sleep(0.8)
    finally:
        await st.disconnect()
    while (e := sub.get_nowait()) is not None:
        if isinstance(e, StationSeen) and e.station_id == "E2E":
            frames.append(e.at)

    received = await pushes(hub)
    for r in received:
        assert r["response"]["status"] in (200, 201), r
        check_push(r)

    # R6: every StatusNotification became an EVSE PATCH (or a Location PUT) soon after
    statuses = [p for a, p in st.calls_sent if a == "StatusNotification" and p["connectorId"] > 0]
    evse_patches = [r for r in received if r["method"] == "PATCH" and r["path"].count("/") > 7]
    assert len(evse_patches) >= len(statuses) - 2  # connector 0 and boot statuses coalesce
    # R8: every frame covered by a Location PATCH (or PUT) carrying last_updated >= its time
    # (to the second, OCPI's precision), sent within one round-trip; or by an EVSE PATCH,
    # whose last_updated the peer gives the Location too (OCPI: a PATCH bumps the parents')
    location_writes = [
        (_t(r["time"]), _t(r["body"]["last_updated"]))
        for r in received
        if "/locations/" in r["path"] and r["path"].count("/") == 7
    ]
    evse_writes = [(_t(r["time"]), _t(r["body"]["last_updated"])) for r in evse_patches]
    assert frames
    for frame in frames:
        covering = [
            t
            for t, last_updated in location_writes + evse_writes
            if last_updated >= frame.replace(microsecond=0) and t >= frame - ROUND_TRIP / 10
        ]
        assert covering, f"frame at {frame} never covered"
        assert min(covering) - frame <= ROUND_TRIP, f"frame at {frame} covered late"
    # no Location PATCH ever carries an older last_updated than one sent before it
    times = [lu for _, lu in location_writes]
    assert times == sorted(times)

    # R5: Session PUT at start, PATCHes at most SESSION_INTERVAL apart, PUT at the end
    session_pushes = [r for r in received if "/sessions/" in r["path"]]
    kinds = [(r["method"], r["body"].get("status")) for r in session_pushes]
    assert kinds[0] == ("PUT", "ACTIVE") and kinds[-1] == ("PUT", "COMPLETED")
    assert all(m == "PATCH" for m, _ in kinds[1:-1]) and len(kinds) >= 6
    sent = [_t(r["time"]) for r in session_pushes]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert max(gaps) <= timedelta(seconds=SESSION_INTERVAL) + ROUND_TRIP, gaps
    periods = [p for r in session_pushes[1:-1] for p in r["body"].get("charging_periods", [])]
    starts = [p["start_date_time"] for p in periods]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # appended, never twice
    final = session_pushes[-1]["body"]
    assert final["kwh"] == 6.0 and final["end_date_time"]
    # then its CDR, once, after the final PUT; its Location header is kept
    [cdr] = [r for r in received if r["method"] == "POST"]
    assert _t(cdr["time"]) >= sent[-1] and cdr["body"]["total_energy"] == 6.0
    ack = await cpo.system.store.read_one(
        "SELECT location_url FROM ocpi_push_acks WHERE kind = 'cdr'"
    )
    assert ack and ack["location_url"] and ack["location_url"].endswith(f"/{cdr['body']['id']}")

    # R7: UNKNOWN pushed offline_after after the last frame, for each EVSE, then back
    unknown = [r for r in evse_patches if r["body"]["status"] == "UNKNOWN"]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in unknown) == ["LOC-E2E-01", "LOC-E2E-02"]
    silence_start = max(f for f in frames if f < _t(unknown[0]["time"]))
    delay = _t(unknown[0]["time"]) - silence_start
    assert (
        timedelta(seconds=OFFLINE_AFTER) <= delay <= timedelta(seconds=OFFLINE_AFTER) + ROUND_TRIP
    )
    after = [r for r in evse_patches if _t(r["time"]) > _t(unknown[-1]["time"])]
    assert {r["body"]["status"] for r in after} == {"AVAILABLE"} and len(after) == 2
    assert all(
        _t(r["body"]["last_updated"]) > _t(unknown[0]["body"]["last_updated"]) for r in after
    )

    # nothing pending: the hub has everything
    _, state = await cpo.api.get("/api/v1/ocpi/pushes")
    assert state["total"] == 0, state

    # and the platform measured itself keeping every rule, as MOBI.E would look at it
    await cpo.system.extensions[0].bridge.pusher.compliance.flush()
    _, report = await cpo.api.get("/api/v1/ocpi/compliance")
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for item in report["items"]:
        by_rule.setdefault(item["rule"], []).append(item)
    assert set(by_rule) >= {"R1", "R5", "R6", "R7", "R8"}, by_rule.keys()
    for rule, items in by_rule.items():
        for item in items:
            assert item["late"] == 0 and item["failed_pushes"] == 0, (rule, item)
    [r5] = by_rule["R5"]
    assert r5["kind"] == "session" and r5["largest_seconds"] <= SESSION_INTERVAL + 0.5
    [r7] = by_rule["R7"]
    assert OFFLINE_AFTER <= r7["largest_seconds"] <= OFFLINE_AFTER + 0.5


async def test_r2_commissioning_notice_on_first_boot(setup: tuple[Running, EmspPeer]) -> None:
    cpo, _ = setup
    await cpo.define_station("R2-ST", 1)
    st = Station(
        "R2-ST",
        cpo.ocpp_url,
        1,
        vendor="Efacec",
        model="QC45",
        behaviour=Behaviour(auto_heartbeat=False),
    )
    await st.connect()
    try:
        await st.boot_and_report()
        await st.boot()  # a second boot is not a second commissioning
    finally:
        await st.disconnect()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        _, notices = await cpo.api.get("/api/v1/ocpi/notices")
        if notices["total"] and notices["items"][0]["delivered_at"]:
            break
        assert asyncio.get_running_loop().time() < deadline, notices
        await asyncio.sleep(0.05)
    [notice] = notices["items"]
    assert notice["station_id"] == "R2-ST" and notice["delivery"] == "file"
    assert notice["subject"] == "Entrada em Operação do Posto R2-ST"
    text = await asyncio.to_thread(Path(notice["file"]).read_text)
    assert "Efacec" in text and "QC45" in text and "mic@mobie.pt" in text


async def test_an_acknowledgement_the_database_refused_is_written_later_not_pushed_again(
    setup: tuple[Running, EmspPeer],
) -> None:
    """A push's slot is free once the hub answered; its acknowledgement is committed with
    the next write. A write that fails keeps it (in memory it is known at once, so nothing
    is pushed again) until a later write, and stopping writes what is left."""
    cpo, hub = setup
    pusher = cpo.system.extensions[0].bridge.pusher
    assert pusher is not None
    db = pusher.bridge.csms.db
    real_write = db.write
    refused: list[str] = []

    async def write(job: Any, *args: Any, **kwargs: Any) -> Any:
        if job.__qualname__.startswith("Pusher._write_acks"):
            refused.append(job.__qualname__)
            raise RuntimeError("disk full (test)")
        return await real_write(job, *args, **kwargs)

    db.write = write  # type: ignore[method-assign]
    try:
        await cpo.define_station("ACK", 1)
        await wait_for(hub, lambda r: r["method"] == "PUT" and "/locations/" in r["path"])
        st = Station("ACK", cpo.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False))
        await st.connect()
        try:
            await st.boot_and_report()
            await wait_for(hub, lambda r: r["method"] == "PATCH" and r["path"].count("/") > 7)
            for _ in range(20):  # a touch each: the rows waiting stay one per object
                await st.heartbeat()
            deadline = asyncio.get_running_loop().time() + 10
            while pusher.outbox.pending() or len(refused) < 2:
                assert asyncio.get_running_loop().time() < deadline, (refused, pusher._ack_rows)
                await asyncio.sleep(0.05)
        finally:
            await st.disconnect()
        assert pusher._ack_rows, "the refused acknowledgements are kept"
        assert len(pusher._ack_rows) <= len(pusher.acks.known)  # bounded by the objects
        assert pusher.acks.has_location(1, "ACK")  # known at once: not pushed again
        puts = [r for r in await pushes(hub) if r["method"] == "PUT"]
        assert len(puts) == 1, puts
    finally:
        db.write = real_write  # type: ignore[method-assign]
    # once the database takes them again, the stop writes them (or the dispatcher, within 5 s)
    await pusher.stop()
    rows = await cpo.system.store.read("SELECT kind, object_id, state FROM ocpi_push_acks")
    stored = {(r["kind"], r["object_id"]): r["state"] for r in rows}
    for (peer, kind, oid), ack in pusher.acks.known.items():
        assert peer == 1 and stored.get((kind, oid)) == ack.state, (kind, oid)
    assert ("location", "ACK") in stored and ("evse", "ACK/1") in stored
    assert pusher._ack_rows == {}
