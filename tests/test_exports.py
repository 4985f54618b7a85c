"""CSV exports of sessions (csms's transactions): filters, the operator's time zone, the
CSV dialects, the formula guard, streaming by pages, hostile queries, and the web page."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from csms.db import Tx
from csms.exports import COUNTERS, PAGE_ROWS, SESSION_COLUMNS
from csms.repositories.transactions import export_sql
from tests.conftest import Running
from tests.raw_client import RawClient
from tests.test_web import ADMIN, VIEWER, logged_in, site  # noqa: F401 (the fixture)

SESSIONS = "/api/v1/exports/sessions.csv"


async def fetch(
    running: Running, path: str, auth: bool = True
) -> tuple[int, dict[str, str], bytes]:
    headers = dict(running.api.auth) if auth else {}
    async with running.api.session.get(running.http_url + path, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


def rows_of(body: bytes, sep: str = ",") -> list[dict[str, str]]:
    text = body.decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=sep))


async def run_sessions(running: Running) -> dict[str, int]:
    """Three stations' transactions over real websockets; their ids by name."""
    for sid in ("EXP-1", "EXP-2", "-EXP3"):
        await running.define_station(sid, 2)
    for tag in ("TAGA", "tagb", "=2+5", "@SUM(A1)"):
        await running.put_tag(tag)
    ids: dict[str, int] = {}
    c1 = await RawClient.open(f"{running.ocpp_url}/EXP-1")
    c2 = await RawClient.open(f"{running.ocpp_url}/EXP-2")
    c3 = await RawClient.open(f"{running.ocpp_url}/-EXP3")
    try:

        async def session(
            c: RawClient, name: str, connector: int, tag: str, start: str, stop: str | None, wh: int
        ) -> None:
            body = {"connectorId": connector, "idTag": tag, "meterStart": 1000, "timestamp": start}
            ids[name] = (await c.ok("StartTransaction", body))["transactionId"]
            if stop is not None:
                await c.ok(
                    "StopTransaction",
                    {
                        "transactionId": ids[name],
                        "meterStop": 1000 + wh,
                        "timestamp": stop,
                        "reason": "EVDisconnected",
                    },
                )

        # 00:30 UTC = 01:30 WEST (+01:00); 03:10 UTC = 03:10 WET (+00:00): across the change
        await session(c1, "dst", 1, "TAGA", "2026-10-25T00:30:00Z", "2026-10-25T03:10:00Z", 12345)
        # the last minute of September in Lisbon (23:59 UTC+1) belongs to September
        await session(c1, "sep", 2, "tagb", "2026-09-30T22:59:00Z", "2026-09-30T23:30:00Z", 500)
        # local midnight of 1 October: the first minute of October
        await session(c2, "oct1", 1, "TAGA", "2026-09-30T23:00:00Z", "2026-10-01T01:00:00Z", 7)
        await session(c2, "formula", 2, "=2+5", "2026-10-10T10:00:00Z", None, 0)
        await session(c3, "at", 1, "@SUM(A1)", "2026-10-31T23:59:59Z", "2026-11-01T00:10:00Z", 1)
    finally:
        for c in (c1, c2, c3):
            await c.close()
    return ids


async def test_sessions_export_filters_zone_and_columns(csms: Running) -> None:
    ids = await run_sessions(csms)
    status, headers, body = await fetch(csms, f"{SESSIONS}?from=2026-10-01&to=2026-11-01")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"] == (
        'attachment; filename="sessions_2026-10-01_2026-11-01_Europe-Lisbon.csv"'
    )
    assert headers.get("Transfer-Encoding") == "chunked"
    assert not body.startswith(b"\xef\xbb\xbf")  # RFC 4180 by default: no BOM
    assert body.split(b"\r\n")[0].decode() == ",".join(SESSION_COLUMNS)
    rows = rows_of(body)
    # October in Lisbon: from 2026-09-30T23:00Z (UTC+1) to 2026-11-01T00:00Z (UTC+0 since
    # the 25th), by start time
    assert [int(r["transaction_id"]) for r in rows] == [
        ids["oct1"],
        ids["formula"],
        ids["dst"],
        ids["at"],
    ]
    dst = rows[2]
    assert dst["start_time"] == "2026-10-25T01:30:00+01:00"
    assert dst["stop_time"] == "2026-10-25T03:10:00+00:00"
    assert dst["duration_s"] == str(int(timedelta(hours=2, minutes=40).total_seconds()))
    assert dst["energy_kwh"] == "12.345" and dst["meter_start_wh"] == "1000"
    assert dst["meter_stop_wh"] == "13345" and dst["stop_reason"] == "EVDisconnected"
    assert dst["station_id"] == "EXP-1" and dst["connector_id"] == "1" and dst["state"] == "stopped"
    assert rows[0]["start_time"] == "2026-10-01T00:00:00+01:00"
    assert rows[0]["energy_kwh"] == "0.007"  # never 7e-03
    open_one = rows[1]
    assert open_one["state"] == "active" and open_one["stop_time"] == ""
    assert open_one["energy_kwh"] == "" and open_one["duration_s"] == ""
    # the formula guard: a tag a spreadsheet would run is written with a leading '
    assert open_one["id_tag"] == "'=2+5"

    # station
    _, _, body = await fetch(csms, f"{SESSIONS}?from=2026-09-01&to=2026-12-01&station=EXP-1")
    assert [int(r["transaction_id"]) for r in rows_of(body)] == [ids["sep"], ids["dst"]]
    # token, case-insensitive as OCPP compares id tags
    _, _, body = await fetch(csms, f"{SESSIONS}?from=2026-09-01&to=2026-12-01&token=taga")
    assert [int(r["transaction_id"]) for r in rows_of(body)] == [ids["oct1"], ids["dst"]]
    _, _, body = await fetch(
        csms, f"{SESSIONS}?from=2026-09-01&to=2026-12-01&station=EXP-2&token=TAGA"
    )
    assert [int(r["transaction_id"]) for r in rows_of(body)] == [ids["oct1"]]
    # a station id starting with '-' and a tag with '@' are neutralised too
    _, headers, body = await fetch(csms, f"{SESSIONS}?from=2026-10-31&to=2026-11-02&station=-EXP3")
    [at] = rows_of(body)
    assert at["station_id"] == "'-EXP3" and at["id_tag"] == "'@SUM(A1)"
    assert at["start_time"] == "2026-10-31T23:59:59+00:00"
    assert "-EXP3" in headers["Content-Disposition"]
    # date-times in the operator's zone, or with an offset; `to` excluded
    q = "from=2026-10-25T01:30&to=2026-10-25T01:31"
    _, _, body = await fetch(csms, f"{SESSIONS}?{q}")
    assert [int(r["transaction_id"]) for r in rows_of(body)] == [ids["dst"]]
    q = "from=2026-10-25T00:00:00Z&to=2026-10-25T00:30:00%2B00:00"
    _, _, body = await fetch(csms, f"{SESSIONS}?{q}")
    assert rows_of(body) == []
    # nothing in range: the header row alone
    _, _, body = await fetch(csms, f"{SESSIONS}?from=2025-01-01&to=2025-02-01")
    assert body == (",".join(SESSION_COLUMNS) + "\r\n").encode()


async def test_sessions_export_excel_pt(csms: Running) -> None:
    ids = await run_sessions(csms)
    status, _, body = await fetch(csms, f"{SESSIONS}?from=2026-10-25&to=2026-10-26&format=excel-pt")
    assert status == 200
    assert body.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with a BOM
    [row] = rows_of(body[3:], sep=";")
    assert int(row["transaction_id"]) == ids["dst"] and row["energy_kwh"] == "12,345"
    # each option on its own
    _, _, body = await fetch(
        csms, f"{SESSIONS}?from=2026-10-25&to=2026-10-26&sep=;&decimal=comma&bom=0"
    )
    assert not body.startswith(b"\xef\xbb\xbf") and b";12,345;" in body
    _, _, body = await fetch(csms, f"{SESSIONS}?from=2026-10-25&to=2026-10-26&bom=1")
    assert body.startswith(b"\xef\xbb\xbf") and b",12.345," in body


async def test_sessions_export_hostile_queries(csms: Running) -> None:
    await csms.define_station("EXP-1", 1)
    cases = {
        "": ("invalid_query", "from"),
        "from=2026-10-01": ("invalid_query", "to"),
        "from=yesterday&to=2026-10-01": ("invalid_query", "from"),
        "from=2026-02-30&to=2026-03-01": ("invalid_query", "from"),
        "from=2026-10-01&to=2026-13-01": ("invalid_query", "to"),
        "from=2026-10-01&to=2026-10-01": ("invalid_range", "to"),
        "from=2026-10-02&to=2026-10-01": ("invalid_range", "to"),
        "from=2020-01-01&to=2026-01-01": ("range_too_long", "to"),
        "from=2026-01-01&to=2027-01-03": ("range_too_long", "to"),
        "from=0001-01-01&to=0001-01-02": ("invalid_query", "from"),
        "from=0001-01-01T00:00%2B05:00&to=2026-01-02": ("invalid_query", "from"),
        "from=2026-10-01&to=9999-12-31T23:59:59-05:00": ("invalid_query", "to"),
        "from=2026-10-01T25:00&to=2026-10-02": ("invalid_query", "from"),
        "from=%EF%BC%92026-10-01&to=2026-10-02": ("invalid_query", "from"),
        "from=2026-10-01&to=2026-11-01&format=xlsx": ("invalid_query", "format"),
        "from=2026-10-01&to=2026-11-01&sep=|": ("invalid_query", "sep"),
        "from=2026-10-01&to=2026-11-01&decimal=comma": ("invalid_query", "sep"),
        "from=2026-10-01&to=2026-11-01&bom=maybe": ("invalid_query", "bom"),
        "from=2026-10-01&to=2026-11-01&token=" + "A" * 65: ("invalid_query", "token"),
        "from=2026-10-01&to=2026-11-01&token=A%00B": ("invalid_query", "token"),
        "from=2026-10-01&to=2026-11-01&station=" + "S" * 256: ("invalid_query", "station"),
        "from=" + "2" * 5000 + "&to=2026-11-01": ("invalid_query", "from"),
    }
    for query, (code, field) in cases.items():
        status, _, body = await fetch(csms, f"{SESSIONS}?{query}")
        assert status == 422, (query, status, body[:200])
        answer = json.loads(body)
        assert answer["error"] == code and answer["fields"][0]["field"] == field, query
    # unknown station: 404, not an empty file
    status, _, body = await fetch(csms, f"{SESSIONS}?from=2026-10-01&to=2026-11-01&station=NOPE")
    assert status == 404 and json.loads(body)["error"] == "not_found"
    # an injection attempt in a filter is a value like any other: no rows, no error
    for evil in ("x' OR '1'='1", "%' --", "EXP-1; DROP TABLE transactions"):
        status, _, body = await fetch(
            csms, f"{SESSIONS}?from=2026-10-01&to=2026-11-01&token={evil}"
        )
        assert status == 200 and rows_of(body) == []
    assert (await csms.api.get("/api/v1/transactions"))[0] == 200
    # the operator's credentials are required
    status, _, _ = await fetch(csms, f"{SESSIONS}?from=2026-10-01&to=2026-11-01", auth=False)
    assert status == 401


async def test_sessions_export_streams_by_pages(csms: Running) -> None:
    """5,000 transactions: every row exported once, in order, read 500 at a time."""
    await csms.define_station("BULK", 2)
    base = datetime(2026, 3, 28, 12, tzinfo=UTC)
    n = 5000

    async def insert(tx: Tx) -> None:
        await tx.executemany(
            """INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status,
                   meter_start, start_time, start_received_at, start_key, flags, updated_at,
                   meter_stop, stop_time, stop_received_at, stop_reason)
               VALUES (?, ?, ?, 'Accepted', ?, ?, ?, ?, '[]', ?, ?, ?, ?, 'Local')""",
            [
                (
                    "BULK",
                    1 + i % 2,
                    f"T{i % 7}",
                    i,
                    # pairs share a start time: the keyset must break ties by id
                    (base + timedelta(minutes=i // 2)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "2026-03-01T00:00:00.000Z",
                    f"bulk|{i}",
                    "2026-03-01T00:00:00.000Z",
                    i + 1500,
                    (base + timedelta(minutes=i // 2 + 5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "2026-03-01T00:00:00.000Z",
                )
                for i in range(n)
            ],
        )

    await csms.system.store.db.write(insert)
    before = (COUNTERS.pages, COUNTERS.rows)
    async with csms.api.session.get(
        csms.http_url + f"{SESSIONS}?from=2026-03-01&to=2026-04-01&station=BULK",
        headers=csms.api.auth,
    ) as r:
        assert r.status == 200 and r.headers["Transfer-Encoding"] == "chunked"
        chunks: list[bytes] = []
        async for chunk in r.content.iter_any():
            chunks.append(chunk)
    rows = rows_of(b"".join(chunks))
    assert len(rows) == n
    assert [int(r["meter_start_wh"]) for r in rows] == list(range(n))
    assert len({r["transaction_id"] for r in rows}) == n
    assert all(r["energy_kwh"] == "1.500" for r in rows)
    # Lisbon changes to summer time on 29 March at 01:00 UTC: the offset follows
    assert rows[0]["start_time"] == "2026-03-28T12:00:00+00:00"
    assert rows[-1]["start_time"] == "2026-03-30T06:39:00+01:00"
    pages, written = COUNTERS.pages - before[0], COUNTERS.rows - before[1]
    assert written == n
    # 10 full pages and the short (here empty) one that ends the export
    assert pages == n // PAGE_ROWS + 1
    assert len(chunks) > 1  # more than one write reached the client

    # each page is a range search on an index from where the last page ended (SQLite's
    # plan; PostgreSQL's planner may rightly prefer a scan of a 5,000-row table)
    db = csms.system.store.db
    if db.dialect.engine == "sqlite":
        after = ("2026-03-29T12:00:00.000Z", 4000)
        for station in ("BULK", None):
            for tag in ("T1", None):
                sql, params = export_sql(base, base + timedelta(days=3), station, tag, after, 500)
                plan = [r["detail"] for r in await db.read("EXPLAIN QUERY PLAN " + sql, params)]
                assert plan and all(line.startswith("SEARCH") for line in plan[:1]), plan
                assert not any("TEMP B-TREE FOR ORDER BY" in line for line in plan), plan


async def test_exports_page_for_viewer_and_admin(site: Any) -> None:  # noqa: F811
    running, make = site
    await running.define_station("EXP-1", 2)
    await running.put_tag("TAGA")
    c = await RawClient.open(f"{running.ocpp_url}/EXP-1")
    try:
        await c.ok(
            "StartTransaction",
            {"connectorId": 1, "idTag": "TAGA", "meterStart": 0, "timestamp": "2026-10-25T00:30Z"},
        )
    finally:
        await c.close()
    for user in (VIEWER, ADMIN):  # read-only data: MOBI.E's read-only login exports too
        web = await logged_in(make, user)
        status, page = await web.get("/exports")
        assert status == 200
        assert 'action="/exports/sessions.csv"' in page and 'name="token"' in page
        assert 'href="/exports"' in page  # in the navigation bar
        assert "Exportações" in page and "Europe/Lisbon" in page
        async with web.http.get(
            running.http_url + "/exports/sessions.csv?from=2026-10-01&to=2026-11-01&format=excel-pt"
        ) as r:
            assert r.status == 200
            assert "attachment" in r.headers["Content-Disposition"]
            body = await r.read()
        [row] = rows_of(body[3:], sep=";")
        assert row["start_time"] == "2026-10-25T01:30:00+01:00" and row["id_tag"] == "TAGA"
        # a bad filter: the page again, with the reason, and the status
        status, page = await web.get("/exports/sessions.csv?from=2026-10-01&to=2026-09-01")
        assert status == 422 and "to must be after from" in page
        status, page = await web.get(
            "/exports/sessions.csv?from=2026-10-01&to=2026-11-01&station=NO"
        )
        assert status == 404
    # English texts
    web = await logged_in(make, VIEWER)
    await web.get("/lang/en")
    _, page = await web.get("/exports")
    assert "Exports for accounting" in page
    # not logged in: the login page, no data
    anonymous = make()
    status, _ = await anonymous.get("/exports/sessions.csv?from=2026-10-01&to=2026-11-01")
    assert status == 303
