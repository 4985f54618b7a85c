"""The web interface's queries at volume: 1,000 stations and 100,000 transactions in a real
database (SQLite or PostgreSQL). Nothing is timed (tests never assert on the wall clock):
the query plans must use indexes, never a full scan of transactions (SQLite's plans are
checked, and PostgreSQL's for the selective filters), and the results must be right."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from csms.clock import SystemClock
from csms.db import Dialect
from csms.timeparse import to_db
from csms.web.queries import (
    ACTIVE_COUNT_SQL,
    ENERGY_ACTIVE_SQL,
    ENERGY_DONE_SQL,
    LATEST_ENERGY_SQL,
    SessionFilter,
    WebQueries,
)
from tests import dbs
from tests.dbs import DatabaseUnderTest, Direct

STATIONS = 1_000
TRANSACTIONS = 100_000
ACTIVE_EVERY = 100  # one transaction in 100 is still active
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ZONES = ("Europe/Lisbon", "Atlantic/Madeira", "Atlantic/Azores")


async def _fill(db: Direct) -> None:
    now = to_db(T0)
    stations = []
    for n in range(STATIONS):
        sid = f"PT-{n:04d}"
        definition = {
            "location": {
                "id": f"LOC-{n:04d}",
                "name": f"Posto {n}",
                "city": "Lisboa" if n % 2 else "Porto",
                "time_zone": ZONES[n % 3],
            },
            "evses": [{"connector_id": 1, "uid": f"LOC-{n:04d}-01"}],
        }
        snapshot = [
            {"key": "HeartbeatInterval", "value": "120"},
            {"key": "MeterValueSampleInterval", "value": "60"},
        ]
        seen = to_db(T0 + timedelta(minutes=n)) if n % 10 else None
        stations.append(
            (sid, f"LOC-{n:04d}", json.dumps(definition), json.dumps(snapshot), seen, now, now)
        )
    await db.executemany(
        "INSERT INTO stations (id, defined, location_id, definition, config_snapshot, "
        "last_seen_at, created_at, updated_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?)",
        stations,
    )
    await db.executemany(
        "INSERT INTO connector_status VALUES (?, 1, ?, 'NoError', NULL, NULL, NULL, ?, NULL, ?)",
        [(f"PT-{n:04d}", ("Available", "Charging")[n % 2], now, now) for n in range(STATIONS)],
    )

    def transactions():
        for i in range(TRANSACTIONS):
            sid = f"PT-{i % STATIONS:04d}"
            start = T0 + timedelta(minutes=3 * i)
            active = i % ACTIVE_EVERY == 0
            stop = None if active else start + timedelta(minutes=40)
            yield (
                sid,
                1,
                f"TAG{i % 500}",
                "Accepted",
                1000 * i,
                to_db(start),
                to_db(start),
                f"{sid}|1|TAG|{i}",
                None if active else 1000 * i + 7500,
                to_db(stop) if stop else None,
                to_db(stop) if stop else None,
                to_db(stop or start),
            )

    await db.executemany(
        "INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status, "
        "meter_start, start_time, start_received_at, start_key, meter_stop, stop_time, "
        "stop_received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        transactions(),
    )
    # a few meter values (energy register, power) for each active transaction
    rows = await db.fetchall(
        "SELECT id, station_id, meter_start, start_time FROM transactions "
        "WHERE stop_received_at IS NULL ORDER BY id"
    )
    values = []
    for tx, sid, start_wh, start in rows:
        for k in range(5):
            ts = to_db(
                datetime.strptime(start, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                + timedelta(minutes=k)
            )
            for measurand, value, unit in (
                ("Energy.Active.Import.Register", start_wh + 1000 * k, "Wh"),
                ("Power.Active.Import", 7000.0, "W"),
            ):
                values.append((sid, tx, ts, measurand, value, unit))
    await db.executemany(
        "INSERT INTO meter_values (station_id, connector_id, transaction_id, source, timestamp, "
        "measurand, context, location, format, value_raw, value, norm_unit, received_at) "
        "VALUES (?, 1, ?, 'MeterValues', ?, ?, 'Sample.Periodic', 'Outlet', 'Raw', '', ?, ?, ?)",
        [(*v, v[2]) for v in values],
    )
    await db.execute("ANALYZE")


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseUnderTest]:
    with dbs.own_database(tmp_path_factory.mktemp("volume") / "csms.sqlite3") as big:

        async def migrate_and_fill() -> None:
            store = big.store(SystemClock())
            await store.open()
            await store.close()
            async with big.connect() as db:
                await _fill(db)

        asyncio.run(migrate_and_fill())
        yield big


def _plan(db: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


FULL_SCAN = re.compile(r"^SCAN (t|transactions)$")  # no index at all

FILTERS = [
    SessionFilter(),
    SessionFilter(state="active"),
    SessionFilter(state="completed"),
    SessionFilter(station="PT-0042"),
    SessionFilter(station="PT-0042", state="active"),
    SessionFilter(station="PT-0042", state="completed"),
    SessionFilter(since=T0 + timedelta(days=30), until=T0 + timedelta(days=31)),
    SessionFilter(since=T0 + timedelta(days=30)),
    SessionFilter(until=T0 + timedelta(days=30)),
    SessionFilter(since=T0 + timedelta(days=30), until=T0 + timedelta(days=60), state="active"),
    SessionFilter(since=T0 + timedelta(days=30), until=T0 + timedelta(days=60), state="completed"),
    SessionFilter(station="PT-0042", since=T0 + timedelta(days=30), until=T0 + timedelta(days=90)),
    SessionFilter(
        station="PT-0042",
        since=T0 + timedelta(days=30),
        until=T0 + timedelta(days=90),
        state="completed",
    ),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("f", FILTERS, ids=lambda f: f"{f.station}-{f.since}-{f.until}-{f.state}")
def test_sessions_page_queries_use_indexes(big_db: DatabaseUnderTest, f: SessionFilter) -> None:
    page_sql, params, count_sql, count_params = f.sql()
    db = sqlite3.connect(big_db.path)
    try:
        for sql, args in ((page_sql, [*params, 50, 100]), (count_sql, count_params)):
            plan = _plan(db, sql, args)
            print(f, sql.split(" FROM ")[0][:30], plan)
            on_tx = [line for line in plan if re.search(r"\b(t|transactions)\b", line)]
            assert on_tx, plan
            assert not [line for line in on_tx if FULL_SCAN.match(line)], plan
            assert all("USING" in line for line in on_tx), plan
            if f.station or f.since or f.until:
                # a filter is a range or point search on an index, never a walk of all rows
                assert any(line.startswith("SEARCH") for line in on_tx), plan
            if sql is page_sql:
                # the newest-first order comes from the index, not from sorting every match
                sorted_all = any("TEMP B-TREE" in line for line in plan)
                assert not sorted_all or f.station, plan
    finally:
        db.close()


# the filters that select few rows: PostgreSQL's planner rightly walks the whole table for
# the others (two thirds of it and more), which a plan test cannot call wrong
SELECTIVE = [f for f in FILTERS if f.station or (f.since and f.until)]
PG_INDEX_ON_TRANSACTIONS = (
    r"Index (Only )?Scan (Backward )?using \w+ on transactions"
    r"|Bitmap Index Scan on ix_transactions_"
)


@pytest.mark.postgresql_only
@pytest.mark.parametrize("f", SELECTIVE, ids=lambda f: f"{f.station}-{f.since}-{f.until}-{f.state}")
async def test_selective_sessions_queries_use_indexes_on_postgresql(
    big_db: DatabaseUnderTest, f: SessionFilter
) -> None:
    page_sql, params, count_sql, count_params = f.sql(Dialect("postgresql"))
    async with big_db.connect() as db:
        for sql, args in ((page_sql, [*params, 50, 100]), (count_sql, count_params)):
            plan = "\n".join(row[0] for row in await db.fetchall("EXPLAIN " + sql, args))
            print(f, plan)
            assert "Seq Scan on transactions" not in plan, plan
            assert re.search(PG_INDEX_ON_TRANSACTIONS, plan), plan


@pytest.mark.sqlite_only
def test_dashboard_queries_use_indexes(big_db: DatabaseUnderTest) -> None:
    db = sqlite3.connect(big_db.path)
    try:
        for sql, params in (
            (ACTIVE_COUNT_SQL, []),
            (ENERGY_DONE_SQL, [to_db(T0 + timedelta(days=100))]),
            (ENERGY_ACTIVE_SQL, []),
            (LATEST_ENERGY_SQL, ["[1, 101, 201]"]),
        ):
            plan = _plan(db, sql, params)
            on_tx = [line for line in plan if re.search(r"\b(t|transactions)\b", line)]
            assert not [line for line in on_tx if FULL_SCAN.match(line)], (sql, plan)
            meter = [line for line in plan if re.search(r"\b(m|meter_values)\b", line)]
            assert all(line.startswith("SEARCH") for line in meter), (sql, plan)
    finally:
        db.close()


async def test_results_at_volume(big_db: DatabaseUnderTest) -> None:
    store = big_db.store(SystemClock())
    await store.open()
    try:
        q = WebQueries(store)
        active_total = TRANSACTIONS // ACTIVE_EVERY
        assert await q.active_sessions() == active_total

        rows, total = await q.sessions(SessionFilter(), 50, 0)
        assert total == TRANSACTIONS and len(rows) == 50
        starts = [r["start_time"] for r in rows]
        assert starts == sorted(starts, reverse=True)
        assert rows[0]["id"] == TRANSACTIONS  # the newest
        assert rows[0]["time_zone"] in ZONES

        rows, total = await q.sessions(SessionFilter(state="active"), 50, 50)
        assert total == active_total and all(r["active"] for r in rows)
        # energy so far of an active one: its latest register minus its start
        assert all(r["energy_wh"] == 4000 for r in rows)

        rows, total = await q.sessions(SessionFilter(station="PT-0042", state="completed"), 20, 0)
        assert total == TRANSACTIONS // STATIONS and len(rows) == 20
        assert {r["station_id"] for r in rows} == {"PT-0042"}
        assert all(r["energy_wh"] == 7500 for r in rows)

        day = SessionFilter(since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))
        rows, total = await q.sessions(day, 50, 0)
        assert total == 24 * 20  # one start every 3 minutes

        # the last page, deep in the table
        rows, _ = await q.sessions(SessionFilter(), 50, TRANSACTIONS - 50)
        assert rows[-1]["id"] == 1

        since = T0 + timedelta(minutes=3 * (TRANSACTIONS - 1000))
        energy = await q.energy_since(since)
        stopped = sum(1 for i in range(TRANSACTIONS - 1014, TRANSACTIONS) if i % ACTIVE_EVERY)
        assert energy >= stopped * 7500  # plus the active ones' energy so far

        counts = await q.station_counts(["PT-0001", "PT-0002"])
        assert counts["total"] == STATIONS
        assert counts["never"] == STATIONS // 10  # every tenth was never seen
        assert counts["connected"] == 2
        assert counts["offline"] == STATIONS - 2 - STATIONS // 10

        statuses, unreported = await q.connector_status_counts()
        assert dict(statuses) == {"Available": 500, "Charging": 500}
        assert unreported == 0  # no evses rows in this fill

        rows, total = await q.stations("Porto", "all", "seen", True, [], 25, 0)
        assert total == STATIONS // 2 and len(rows) == 25
        seen = [r["last_seen_at"] for r in rows]
        assert seen == sorted(seen, reverse=True)
        assert rows[0]["cfg_heartbeat"] == "120" and rows[0]["cfg_meter"] == "60"
        rows, total = await q.stations("", "never", "id", False, [], 1000, 0)
        assert total == STATIONS // 10 and all(r["last_seen_at"] is None for r in rows)
        rows, total = await q.stations("", "connected", "id", False, ["PT-0007"], 10, 0)
        assert [r["id"] for r in rows] == ["PT-0007"]
    finally:
        await store.close()


async def test_fill_is_the_volume_asked(big_db: DatabaseUnderTest) -> None:
    async with big_db.connect() as db:
        counts = {
            table: (await db.fetchone(f"SELECT COUNT(*) FROM {table}") or (0,))[0]
            for table in ("stations", "transactions")
        }
    assert counts == {"stations": STATIONS, "transactions": TRANSACTIONS}
