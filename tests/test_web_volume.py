"""Every page of the web interface, OCPI bridge included, at the volume the issue names:
1,000 stations and 100,000 sessions in a real database (SQLite or PostgreSQL), with a
registered hub whose acknowledgements (about 200,000) and compliance measurements (eight
days of them) are there too.

The provider's queries must use indexes (on SQLite their plans are checked as in
tests/test_web_queries.py); and every page, served over HTTP by the real central system,
must answer well under a second. That one is a wall-clock bound, kept loose on purpose:
each page is asked twice and the faster answer must take less than a second (they take
a few tens of milliseconds; a second means a query walks a whole table).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from csms.clock import FakeClock, SystemClock
from csms.timeparse import to_db
from ocpi_bridge.web import ACKS_SQL, LAST_ACK_SQL, PROBLEMS_SQL, SUMMARY_SQL, TOKENS_SQL
from tests import dbs
from tests.conftest import start_system, station_body
from tests.dbs import DatabaseUnderTest, Direct
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides
from tests.test_web_queries import STATIONS, T0, TRANSACTIONS, ZONES
from tests.test_web_queries import _fill as fill_csms

END = T0 + timedelta(minutes=3 * TRANSACTIONS)  # the newest transaction starts about then
HUB_ROLES = [
    {
        "role": "HUB",
        "country_code": "PT",
        "party_id": "MOB",
        "business_details": {"name": "MOBI.E"},
    }
]


async def _fill_ocpi(db: Direct) -> None:
    now = to_db(END)
    # full station definitions, as the API stores them
    for n in range(STATIONS):
        sid = f"PT-{n:04d}"
        body = station_body(sid, 1)
        body["location"]["time_zone"] = ZONES[n % 3]
        definition = {"location": body["location"], "evses": body["evses"]}
        await db.execute(
            "UPDATE stations SET definition = ?, location_id = ?, defined_at = created_at "
            "WHERE id = ?",
            (json.dumps(definition), body["location"]["id"], sid),
        )
    # a hub registered a day ago (no receiver endpoints: nothing is pushed during the test)
    await db.execute(
        "INSERT INTO ocpi_peers VALUES (1, 'registered', 'token-c', 'token-b', 1, "
        "'https://hub.invalid/versions', '2.2.1', '[]', ?, 'peer', ?, ?)",
        (json.dumps(HUB_ROLES), to_db(END - timedelta(days=1)), now),
    )
    # eMSP tokens, and the sessions they started
    await db.executemany(
        "INSERT INTO ocpi_tokens VALUES ('PT', 'EDP', ?, 'RFID', ?, 1, 'ALWAYS', ?, 1)",
        [
            (f"TAG{i}", json.dumps({"uid": f"TAG{i}", "contract_id": f"PT-EDP-C-{i:08d}"}), now)
            for i in range(500)
        ],
    )
    await db.execute("UPDATE transactions SET tag_owner = 'PT/EDP'")
    # every stopped transaction has its CDR; what the hub acknowledged of everything
    await db.execute(
        "INSERT INTO ocpi_cdrs SELECT CAST(id AS TEXT), id, tag_owner, '{}', stop_received_at "
        "FROM transactions WHERE stop_received_at IS NOT NULL"
    )
    acks = []
    for n in range(STATIONS):
        sid = f"PT-{n:04d}"
        acks.append((1, "location", sid, "2026-07-28T00:00:00Z", now))
        acks.append((1, "evse", f"{sid}/1", "AVAILABLE|2026-07-28T00:00:00Z", now))
    await db.executemany("INSERT INTO ocpi_push_acks VALUES (?, ?, ?, ?, 0, NULL, ?)", acks)
    await db.execute(
        "INSERT INTO ocpi_push_acks SELECT 1, 'session', CAST(id AS TEXT), "
        "CASE WHEN stop_received_at IS NULL THEN 'ACTIVE|x' ELSE 'COMPLETED|x' END, 3, NULL, "
        "updated_at FROM transactions"
    )
    await db.execute(
        "INSERT INTO ocpi_push_acks SELECT 1, 'cdr', id, 'posted', 0, NULL, created_at "
        "FROM ocpi_cdrs"
    )
    # eight days of hourly measurements: R8 for every station, R6 for a third of them, a
    # few late and failed ones, and R5 for every session
    rows = []
    for h in range(24 * 8):
        bucket = to_db((END - timedelta(hours=h)).replace(minute=0, second=0, microsecond=0))
        for n in range(STATIONS):
            sid = f"PT-{n:04d}"
            rows.append((bucket, "R8", "station", sid, 30, 3.0, 0.4, 0, 0))
            if n % 3 == 0:
                rows.append((bucket, "R6", "station", sid, 2, 0.4, 0.3, int(n == 42 and h == 5), 0))
            if n == 7 and h < 3:
                rows.append((bucket, "R7", "station", sid, 1, 320.0, 320.0, 1, 2))
    await db.executemany("INSERT INTO ocpi_compliance VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    await db.execute(
        "INSERT INTO ocpi_compliance SELECT substr(start_time, 1, 13) || ':00:00.000000Z', 1, "
        "'R5', 'session', CAST(id AS TEXT), 8, 2400.0, 300.0, 0, 0 FROM transactions"
    )
    await db.execute("ANALYZE")


@pytest.fixture(scope="module")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseUnderTest]:
    """The database; its SQLite file (or on PostgreSQL, nothing) in a data directory."""
    data = tmp_path_factory.mktemp("volume-web") / "data"
    with dbs.own_database(data / "csms.sqlite3") as big:

        async def migrate_and_fill() -> None:
            store = big.store(SystemClock())
            store.add_migrations("ocpi", "ocpi_bridge.migrations")
            await store.open()
            await store.close()
            async with big.connect() as db:
                await fill_csms(db)
                await _fill_ocpi(db)

        asyncio.run(migrate_and_fill())
        yield big


def _plan(db: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.sqlite_only
def test_provider_queries_use_indexes(big_data: DatabaseUnderTest) -> None:
    db = sqlite3.connect(big_data.path)
    since, until = to_db(END - timedelta(days=7)), to_db(END)
    try:
        checks = [
            (
                ACKS_SQL,
                [1, "session", json.dumps([str(i) for i in range(1, 51)])],
                "ocpi_push_acks",
            ),
            (ACKS_SQL, [1, "evse", json.dumps(["PT-0001/1", "PT-0002/1"])], "ocpi_push_acks"),
            (LAST_ACK_SQL, [1], "ocpi_push_acks"),
            (SUMMARY_SQL, [since, until], "ocpi_compliance"),
            (PROBLEMS_SQL, [since, until], "ocpi_compliance"),
            (TOKENS_SQL, [json.dumps(list(range(1, 51)))], "transactions|ocpi_tokens|t|k"),
        ]
        for sql, params, tables in checks:
            plan = _plan(db, sql, params)
            on = [line for line in plan if re.search(rf"\b({tables})\b", line)]
            assert on, (sql, plan)
            assert all(line.startswith("SEARCH") for line in on), (sql, plan)
        # the compliance module's own report, per object, on its object index
        plan = _plan(
            db,
            "SELECT object_kind, object_id, rule, SUM(samples) FROM ocpi_compliance "
            "WHERE bucket >= ? AND bucket < ? AND object_kind = ? AND object_id IN (?, ?) "
            "GROUP BY object_kind, object_id, rule",
            [since, until, "station", "PT-0001", "PT-0002"],
        )
        assert any("ix_ocpi_compliance_object" in line for line in plan), plan
    finally:
        db.close()


PAGES = [
    "/",
    "/live/dashboard",
    "/stations",
    "/stations?sort=seen&dir=desc",
    "/stations?q=Porto&sort=city",
    "/stations?state=never&page=2",
    "/stations/PT-0042",
    "/stations/PT-0042?days=30",
    "/live/stations/PT-0042",
    "/sessions",
    "/sessions?state=completed&page=2000",
    "/sessions?state=active",
    "/sessions?station=PT-0042",
    "/sessions?from=2026-03-01&to=2026-03-31",
    "/sessions/1",
    "/sessions/99999",
    "/id-tags",
    "/compliance",
    "/compliance?problems=1",
    "/compliance?page=20",
    "/compliance?view=sessions",
    "/compliance?view=sessions&station=PT-0042&from=2026-07-01&to=2026-07-28",
    "/hub",
]


async def test_every_page_answers_well_under_a_second(
    big_data: DatabaseUnderTest, tmp_path: Path
) -> None:
    clock = FakeClock(END)
    on_big = {"DATABASE__URL": json.dumps(big_data.url)} if big_data.url else {}
    system, session, running = await start_system(
        tmp_path,
        clock=clock,
        ocpi={},
        DATA_DIR=json.dumps(str(big_data.path.parent)),
        **on_big,
        **web_overrides(),
    )
    viewer, admin = WebClient(running.http_url), WebClient(running.http_url)
    try:
        assert (await viewer.login(VIEWER)).status == 303
        assert (await admin.login(ADMIN)).status == 303
        timings = {}
        for path in PAGES:
            best = float("inf")
            for c in (viewer, admin):
                started = time.perf_counter()
                status, page = await c.get(path)
                best = min(best, time.perf_counter() - started)
                assert status == 200, (path, status)
            timings[path] = best
            if path.startswith("/live/"):
                continue
            assert "500: internal error" not in page
        print({p: round(t * 1000) for p, t in timings.items()})
        slow = {p: t for p, t in timings.items() if t >= 1.0}
        assert not slow, slow

        # and they show what the data says
        _, page = await viewer.get("/compliance?problems=1")
        assert 'data-station="PT-0007"' in page and 'data-station="PT-0042"' in page
        assert 'data-station="PT-0001"' not in page
        _, page = await viewer.get("/compliance")
        assert re.search(r'data-rule="R6">.*?class="num late">1</td>', page, re.S)
        _, page = await viewer.get("/sessions?station=PT-0042")
        assert "PT-EDP-C-" in page and "COMPLETED" in page
        _, page = await viewer.get("/")
        assert 'data-ocpi-status="UNKNOWN"' in page  # every station silent for months
    finally:
        await viewer.close()
        await admin.close()
        await session.close()
        await system.stop()
