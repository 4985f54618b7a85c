"""The transactional outbox (csms/outbox.py): events committed with their state change,
staged events ahead of the next batch, the relay's order, pruning behind the relay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from csms import outbox
from csms.clock import SystemClock
from csms.events import (
    EventBus,
    MeterSample,
    StationBooted,
    StationConnected,
    StationDefined,
    StationDisconnected,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from csms.meter import Sample
from csms.outbox import EventRelay, decode, encode, with_events
from csms.store import Store
from tests import dbs

T = datetime(2026, 12, 5, 12, 0, 1, 250000, tzinfo=UTC)
SAMPLE = Sample("Energy.Active.Import.Register", "1.5", 1500.0, "kWh", "Wh", None, "x", "y", "z")
EVERY_KIND = [
    StationSeen("S1", T, "Heartbeat"),
    StationSeen("S1", T, None),
    StationConnected("S1", T, "127.0.0.1"),
    StationDisconnected("S1", T, "closed"),
    StationBooted("S1", T, "Accepted", "V", "M", None, "1.0", True),
    StationDefined("S1", T, False),
    StatusChanged("S1", 0, "Available", "NoError", None, T, T),
    TransactionStarted(7, "S1", 1, "TAG", "Accepted", 10, T, T, "PT/ABC"),
    MeterSample("S1", 1, None, T, 1500.0, None, (SAMPLE, SAMPLE), T),
    TransactionStopped(7, "S1", 1, 20, T, None, T),
]


def test_every_kind_survives_a_row() -> None:
    assert {type(e).__name__ for e in EVERY_KIND} == set(outbox.EVENT_TYPES)
    for event in EVERY_KIND:
        kind, station_id, body, created_at = encode(event)
        assert station_id == "S1" and created_at.startswith("2026-12-05T12:00:01")
        assert decode(kind, body) == event


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        decode("Nonsense", "{}")


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s: Store = dbs.store_for_test(tmp_path, SystemClock())
    await s.open()
    yield s
    await s.close()


async def _rows(store: Store) -> list[tuple[str, str | None]]:
    rows = await store.read("SELECT kind, station_id FROM events ORDER BY id")
    return [(r["kind"], r["station_id"]) for r in rows]


async def test_events_commit_with_their_job_and_roll_back_with_it(store: Store) -> None:
    async def fine(tx: Any) -> int:
        return 3

    async def broken(tx: Any) -> int:
        raise RuntimeError("refused")

    def events(n: int) -> list[StationSeen]:
        return [StationSeen(f"S{i}", T, None) for i in range(n)]

    assert await store.db.write(with_events(fine, events)) == 3
    with pytest.raises(RuntimeError):
        await store.db.write(with_events(broken, events))
    assert await _rows(store) == [
        ("StationSeen", "S0"),
        ("StationSeen", "S1"),
        ("StationSeen", "S2"),
    ]


async def test_staged_events_go_ahead_of_the_next_write_or_on_their_own(store: Store) -> None:
    store.outbox.stage(StationSeen("A", T, "StatusNotification"))

    async def job(tx: Any) -> None:
        await tx.executemany(outbox.INSERT, [encode(StationDefined("B", T, True))])

    await store.db.write(job)
    assert await _rows(store) == [("StationSeen", "A"), ("StationDefined", "B")]
    # with no write to ride along with, a staged event is written within FLUSH_DELAY
    store.outbox.stage(StationConnected("C", T, None))
    for _ in range(200):  # bounded: 2 s
        if len(await _rows(store)) == 3:
            break
        await asyncio.sleep(0.01)
    assert (await _rows(store))[-1] == ("StationConnected", "C")


async def test_the_relay_publishes_what_is_committed_after_its_start_in_order(
    store: Store,
) -> None:
    await store.db.write(with_events(_nothing, lambda _: [StationSeen("before", T, None)]))
    bus = EventBus()
    sub = bus.subscribe("test")
    relay = EventRelay(store.db, bus)
    store.db.add_commit_hook(relay.wake)
    await relay.start()
    try:
        for i in range(5):
            await store.db.write(
                with_events(_nothing, lambda _, i=i: [StationSeen(f"S{i}", T, None)])
            )
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(5)]
        assert [e.station_id for e in got] == [f"S{i}" for i in range(5)]  # type: ignore[union-attr]
        assert sub.get_nowait() is None  # "before" was committed before the relay started
    finally:
        await relay.stop()


async def test_the_relay_reads_only_the_kinds_its_subscribers_take(store: Store) -> None:
    bus = EventBus()
    few = bus.subscribe("few", kinds=(StationConnected,))
    relay = EventRelay(store.db, bus)
    store.db.add_commit_hook(relay.wake)
    await relay.start()
    try:
        events = [StationSeen("A", T, None), StationConnected("B", T, None)]
        await store.db.write(with_events(_nothing, lambda _: events))
        assert await asyncio.wait_for(few.get(), 5) == events[1]
        await asyncio.sleep(0.05)
        assert few.get_nowait() is None and relay.published == 1
        # the other kinds were passed over, not left behind
        if store.db.engine == "postgresql":
            after = "SELECT COUNT(*) AS n FROM events WHERE (tx, id) > (?, ?)"
        else:
            after = "SELECT COUNT(*) AS n FROM events WHERE ? = 0 AND id > ?"
        assert (await store.read(after, relay.cursor))[0]["n"] == 0
        # a subscriber of every kind gets what comes next, of any kind
        every = bus.subscribe("every")
        await store.db.write(with_events(_nothing, lambda _: [StationSeen("C", T, None)]))
        assert (await asyncio.wait_for(every.get(), 5)).station_id == "C"  # type: ignore[union-attr]
    finally:
        await relay.stop()


async def test_a_relay_in_another_process_finds_the_rows_by_polling(store: Store) -> None:
    bus = EventBus()
    sub = bus.subscribe("test")
    relay = EventRelay(store.db, bus, poll=0.02)  # no commit hook: as in another process
    await relay.start()
    try:
        await store.db.write(with_events(_nothing, lambda _: [StationSeen("P", T, None)]))
        event = await asyncio.wait_for(sub.get(), 5)
        assert event.station_id == "P"  # type: ignore[union-attr]
    finally:
        await relay.stop()


async def test_pruning_keeps_what_the_relay_has_not_published(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        await store.db.write(with_events(_nothing, lambda _, i=i: [StationSeen(f"S{i}", T, None)]))
    monkeypatch.setattr(outbox, "RETENTION", outbox.timedelta(0))
    pg = store.db.engine == "postgresql"
    rows = await store.read(f"SELECT id, {'tx' if pg else '0'} AS tx FROM events ORDER BY id")
    ids = [r["id"] for r in rows]

    def past(i: int) -> tuple[int, int]:
        """A relay's cursor once it has read rows 0..i (on PostgreSQL, by transaction)."""
        return (int(rows[i]["tx"]) + 1, 0) if pg else (0, ids[i])

    # the relay has published the first two only: the others stay, however old
    assert await store.outbox.prune(published=past(1)) == 2
    assert [r for r, _ in await _rows(store)] == ["StationSeen", "StationSeen"]
    assert await store.outbox.prune(published=past(3)) == 2
    assert await _rows(store) == []
    # ids are never given again after a prune (a relay's cursor stays valid)
    await store.db.write(with_events(_nothing, lambda _: [StationSeen("new", T, None)]))
    new = await store.read("SELECT id FROM events")
    assert new[0]["id"] > ids[-1]


async def _nothing(tx: Any) -> None:
    return None


async def test_the_newest_committed_frame_of_each_station(store: Store) -> None:
    later = T + outbox.timedelta(seconds=30)
    events = [
        StationSeen("A", T, None),
        StationSeen("A", later, "Heartbeat"),
        StationSeen("B", T, None),
        StationConnected("C", later, None),  # not a frame
    ]
    await store.db.write(with_events(_nothing, lambda _: events))
    assert await outbox.latest_seen(store.db) == {"A": later, "B": T}


async def test_a_slow_subscriber_makes_the_relay_wait_rather_than_drop(store: Store) -> None:
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=3)
    relay = EventRelay(store.db, bus)
    store.db.add_commit_hook(relay.wake)
    await relay.start()
    try:
        events = [StationSeen(f"S{i}", T, None) for i in range(10)]
        await store.db.write(with_events(_nothing, lambda _: events))
        got = []
        for _ in range(10):
            await asyncio.sleep(0.01)  # (a consumer slower than the relay)
            got.append(await asyncio.wait_for(slow.get(), 5))
        # every event, in order, none dropped: they waited in the table
        assert got == events
        assert slow.get_nowait() is None
    finally:
        await relay.stop()
