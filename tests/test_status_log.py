"""csms's log of StatusNotifications (what rule R6's replay reads) and the last-seen times
made durable before a push carries them: on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from csms.clock import FakeClock
from csms.store import Store
from csms.timeparse import ParsedTime, from_db
from tests import dbs
from tests.conftest import station_body

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SEC = timedelta(seconds=1)


async def open_store(tmp_path: Path) -> Store:
    store = dbs.store_for_test(tmp_path, FakeClock(T0), "FULL")
    await store.open()
    body = station_body("S1", 2)
    uids = {e["connector_id"]: e["uid"] for e in body["evses"]}
    await store.stations.put("S1", body["location"]["id"], body, uids, None, False, "Accepted")
    return store


async def status(store: Store, cid: int, value: str, at: datetime) -> None:
    payload = {"connectorId": cid, "status": value, "errorCode": "NoError"}
    await store.status.record("S1", payload, ParsedTime(at), at)


async def test_the_log_since_a_time_starts_with_each_connectors_state_then(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path)
    try:
        await status(store, 1, "Available", T0)
        await status(store, 2, "Available", T0)
        await status(store, 1, "Preparing", T0 + SEC)
        await status(store, 1, "Charging", T0 + 5 * SEC)  # after
        await status(store, 1, "Finishing", T0 + 6 * SEC)
        await status(store, 2, "Faulted", T0 + 7 * SEC)
        rows = await store.status.log_since(["S1"], T0 + 2 * SEC)
        got = [(r["connector_id"], r["status"], from_db(r["received_at"])) for r in rows]
        assert got == [
            (2, "Available", T0),  # each connector's last report at or before the time
            (1, "Preparing", T0 + SEC),
            (1, "Charging", T0 + 5 * SEC),
            (1, "Finishing", T0 + 6 * SEC),
            (2, "Faulted", T0 + 7 * SEC),
        ]
        assert await store.status.log_since(["NOPE"], T0) == []
    finally:
        await store.close()


async def test_pruning_keeps_each_connectors_latest(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        for i in range(5):
            await status(store, 1, "Charging" if i % 2 else "Available", T0 + i * SEC)
        await status(store, 2, "Available", T0)
        assert await store.status.prune_log(T0 + 100 * SEC) == 4
        rows = await store.read("SELECT connector_id, status FROM status_log ORDER BY id")
        assert rows == [
            {"connector_id": 1, "status": "Available"},
            {"connector_id": 2, "status": "Available"},
        ]
    finally:
        await store.close()


async def test_persist_seen_writes_the_newest_time_at_once(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    try:
        store.stations.touch_seen("S1", T0 + 5 * SEC)
        store.stations.touch_seen("S1", T0 + 3 * SEC)  # older: ignored
        row = await store.read_one("SELECT last_seen_at FROM stations WHERE id = 'S1'")
        assert row is not None and row["last_seen_at"] is None  # not yet written
        await store.stations.persist_seen("S1")
        row = await store.read_one("SELECT last_seen_at FROM stations WHERE id = 'S1'")
        assert row is not None and from_db(row["last_seen_at"]) == T0 + 5 * SEC
        assert store.stations.last_seen("S1") == T0 + 5 * SEC  # still known in memory
        await store.stations.persist_seen("S1")  # nothing pending: no write
    finally:
        await store.close()
