"""The web interface's reads: one query per need, paginated in SQL, on indexed columns.

Every page stays fast with thousands of stations and hundreds of thousands of
transactions: lists are cut with LIMIT/OFFSET in SQL, the transactions' filters (station,
start date range, active or completed) and their newest-first order use indexes
(``tests/test_web_queries.py`` checks the plans), and what a page shows for its rows
(connector statuses, energy so far) comes from one query for the whole page, never one
per row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..db import Dialect
from ..meter import ENERGY_IMPORT_REGISTER
from ..store import Store
from ..timeparse import to_db

# the module's SQL constants are SQLite's (tests read their plans); WebQueries writes each
# query in its store's own dialect
SQLITE = Dialect("sqlite")

STATION_SORTS = ("id", "seen", "vendor", "model", "firmware", "city")
STATION_STATES = ("all", "connected", "offline", "never", "retired")
SESSION_STATES = ("all", "active", "completed")


def station_sort_column(dialect: Dialect, sort: str) -> str:
    """The ORDER BY expression of a stations list sort key (``STATION_SORTS``)."""
    columns = {
        "seen": "s.last_seen_at",
        "vendor": "s.vendor",
        "model": "s.model",
        "firmware": "s.firmware_version",
        "city": dialect.json_text("s.definition", "location", "city"),
    }
    return columns.get(sort, "s.id")


def _configured(dialect: Dialect, key: str) -> str:
    """A subquery: the value of configuration key ``key`` in the station's last snapshot
    (a JSON array of ``{"key", "value"}`` objects). ``key`` is one of our constants."""
    if dialect.engine == "sqlite":
        rows = "json_each(s.config_snapshot) j"
    else:
        rows = "jsonb_array_elements(CAST(s.config_snapshot AS jsonb)) AS j(value)"
    return (
        f"(SELECT {dialect.json_text('j.value', 'value')} FROM {rows} "
        f"WHERE {dialect.json_text('j.value', 'key')} = '{key}')"
    )


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class SessionFilter:
    station: str | None = None
    since: datetime | None = None  # start_time >= since
    until: datetime | None = None  # start_time < until
    state: str = "all"

    def where(self, state: str | None = None) -> tuple[str, list[Any]]:
        state = self.state if state is None else state
        clauses: list[str] = []
        params: list[Any] = []
        if self.station:
            clauses.append("t.station_id = ?")
            params.append(self.station)
        if self.since is not None:
            clauses.append("t.start_time >= ?")
            params.append(to_db(self.since))
        if self.until is not None:
            clauses.append("t.start_time < ?")
            params.append(to_db(self.until))
        if state == "active":
            clauses.append("t.stop_received_at IS NULL")
        elif state == "completed":
            clauses.append("t.stop_received_at IS NOT NULL")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def sql(self, dialect: Dialect = SQLITE) -> tuple[str, list[Any], str, list[Any]]:
        """The page query and its parameters (LIMIT and OFFSET to append), the count query and
        its parameters. Newest first: the start-time indexes give that order. Completed
        ones are counted as all minus active ones: both counts walk small or covering
        indexes, where counting "stop_received_at IS NOT NULL" would read every row."""
        where, params = self.where()
        time_zone = dialect.json_text("s.definition", "location", "time_zone")
        # the page is chosen first, so that the station's time zone is read from its JSON
        # definition for the page's rows only, never for the rows a deep OFFSET skips; the
        # join keeps no order for certain: WebQueries.sessions puts the page's rows back in it
        page = (
            "SELECT p.id, p.station_id, p.connector_id, p.id_tag, p.id_tag_status, p.tag_owner, "
            "p.meter_start, p.meter_stop, p.start_time, p.stop_time, p.stop_reason, "
            "p.stop_received_at, p.flags, "
            f"{time_zone} AS time_zone "
            f"FROM (SELECT * FROM transactions t {where} "
            "ORDER BY t.start_time DESC, t.id DESC LIMIT ? OFFSET ?) AS p "
            "LEFT JOIN stations s ON s.id = p.station_id"
        )
        if self.state == "completed":
            all_where, all_params = self.where("all")
            active_where, active_params = self.where("active")
            count = (
                f"SELECT (SELECT COUNT(*) FROM transactions t {all_where}) - "
                f"(SELECT COUNT(*) FROM transactions t {active_where}) AS n"
            )
            return page, params, count, [*all_params, *active_params]
        return page, params, f"SELECT COUNT(*) AS n FROM transactions t {where}", params


class WebQueries:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.dialect
        self._latest_energy_sql = latest_energy_sql(self.dialect)

    # ------------------------------------------------------------------ dashboard

    async def station_counts(self, connected: list[str]) -> dict[str, int]:
        row = await self.store.read_one(
            "SELECT COUNT(*) AS total, "
            "COALESCE(SUM(CASE WHEN last_seen_at IS NULL AND id NOT IN "
            f"({self.dialect.json_values()}) THEN 1 ELSE 0 END), 0) AS never FROM stations",
            (json.dumps(connected),),
        )
        total = int(row["total"]) if row else 0
        never = int(row["never"]) if row else 0
        n_connected = len(connected)
        return {
            "total": total,
            "connected": n_connected,
            "never": never,
            "offline": max(0, total - n_connected - never),
        }

    async def connector_status_counts(self) -> tuple[list[tuple[str, int]], int]:
        """(OCPP status, number of connectors) for every connector (not 0) that reported one,
        and the number of defined EVSEs that never reported a status."""
        rows = await self.store.read(
            "SELECT status, COUNT(*) AS n FROM connector_status WHERE connector_id > 0 "
            "GROUP BY status ORDER BY n DESC, status"
        )
        unreported = await self.store.read_one(
            "SELECT COUNT(*) AS n FROM evses e WHERE NOT EXISTS (SELECT 1 FROM connector_status "
            "c WHERE c.station_id = e.station_id AND c.connector_id = e.connector_id)"
        )
        return [(r["status"], int(r["n"])) for r in rows], int(unreported["n"] if unreported else 0)

    async def active_sessions(self) -> int:
        row = await self.store.read_one(ACTIVE_COUNT_SQL)
        return int(row["n"]) if row else 0

    async def energy_since(self, since: datetime) -> float:
        """Wh of the transactions that stopped since ``since``, plus what the active ones
        delivered so far (their latest energy register)."""
        done = await self.store.read_one(ENERGY_DONE_SQL, (to_db(since),))
        active = await self.store.read_one(ENERGY_ACTIVE_SQL)
        return float(done["wh"] if done else 0) + float(active["wh"] if active else 0)

    # ------------------------------------------------------------------ stations

    async def stations(
        self,
        search: str,
        state: str,
        sort: str,
        descending: bool,
        connected: list[str],
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        d = self.dialect
        clauses: list[str] = []
        params: list[Any] = []
        if search:
            searched = [
                "s.id",
                d.json_text("s.definition", "location", "name"),
                d.json_text("s.definition", "location", "city"),
                d.json_text("s.definition", "location", "id"),
                "s.vendor",
                "s.model",
            ]
            clauses.append("(" + " OR ".join(d.ilike(expr) for expr in searched) + ")")
            params += [like_pattern(search)] * len(searched)
        ids = json.dumps(connected)
        if state == "connected":
            clauses.append(f"s.id IN ({d.json_values()})")
            params.append(ids)
        elif state == "offline":
            clauses.append(f"s.id NOT IN ({d.json_values()}) AND s.last_seen_at IS NOT NULL")
            params.append(ids)
        elif state == "never":
            clauses.append(f"s.id NOT IN ({d.json_values()}) AND s.last_seen_at IS NULL")
            params.append(ids)
        if state == "retired":
            clauses.append("s.retired_at IS NOT NULL")
        elif state != "all":  # (retired stations apart: only "all" and "retired" show them)
            clauses.append("s.retired_at IS NULL")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        column = station_sort_column(d, sort)
        direction = "DESC" if descending else "ASC"
        rows = await self.store.read(
            "SELECT s.id, s.defined, s.vendor, s.model, s.firmware_version, s.last_seen_at, "
            "s.first_boot_at, s.config_status, s.retired_at, "
            f"{d.json_text('s.definition', 'location', 'name')} AS location_name, "
            f"{d.json_text('s.definition', 'location', 'city')} AS city, "
            f"{d.json_text('s.definition', 'location', 'time_zone')} AS time_zone, "
            f"{d.json_length('s.definition', 'evses')} AS evse_count, "
            f"{_configured(d, 'HeartbeatInterval')} AS cfg_heartbeat, "
            f"{_configured(d, 'MeterValueSampleInterval')} AS cfg_meter "
            f"FROM stations s {where} "
            f"ORDER BY ({column} IS NULL), {column} {direction}, s.id {direction} "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.store.read_one(f"SELECT COUNT(*) AS n FROM stations s {where}", params)
        for r in rows:
            seen = self.store.stations.last_seen(r["id"])
            if seen is not None:
                r["last_seen_at"] = to_db(seen)
        return rows, int(total["n"] if total else 0)

    async def station_sessions(self, station_id: str, limit: int) -> list[dict[str, Any]]:
        rows, _ = await self.sessions(SessionFilter(station=station_id), limit, 0, count=False)
        return rows

    async def station_commands(self, station_id: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.read(
            "SELECT id, action, request, outcome, response, origin, sent_at, finished_at "
            "FROM commands WHERE station_id = ? ORDER BY sent_at DESC, id DESC LIMIT ?",
            (station_id, limit),
        )
        for r in rows:
            r["request"] = json.loads(r["request"]) if r["request"] else None
            r["response"] = json.loads(r["response"]) if r["response"] else None
        return rows

    # ------------------------------------------------------------------ sessions

    async def sessions(
        self, f: SessionFilter, limit: int, offset: int, count: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        page_sql, params, count_sql, count_params = f.sql(self.dialect)
        rows = await self.store.read(page_sql, [*params, limit, offset])
        rows.sort(key=lambda r: (r["start_time"], r["id"]), reverse=True)  # newest first
        total = len(rows)
        if count:
            row = await self.store.read_one(count_sql, count_params)
            total = int(row["n"]) if row else 0
        active = [r["id"] for r in rows if r["stop_received_at"] is None]
        latest = await self.latest_energy(active)
        for r in rows:
            r["flags"] = json.loads(r["flags"]) if r["flags"] else []
            r["active"] = r["stop_received_at"] is None
            if r["meter_stop"] is not None:
                r["energy_wh"] = r["meter_stop"] - r["meter_start"]
            elif r["id"] in latest:
                r["energy_wh"] = max(0.0, latest[r["id"]] - r["meter_start"])
            else:
                r["energy_wh"] = None
        return rows, total

    async def latest_energy(self, transaction_ids: list[int]) -> dict[int, float]:
        """The latest energy register (Wh) of each transaction, in one query."""
        if not transaction_ids:
            return {}
        rows = await self.store.read(self._latest_energy_sql, (json.dumps(transaction_ids),))
        return {int(r["id"]): float(r["wh"]) for r in rows if r["wh"] is not None}

    # ------------------------------------------------------------------ id tags

    async def id_tags(
        self, prefix: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = "", []
        if prefix:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where, params = f"WHERE {self.dialect.ilike('id_tag')}", [escaped + "%"]
        rows = await self.store.read(
            f"SELECT * FROM id_tags {where} ORDER BY id_tag LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.store.read_one(f"SELECT COUNT(*) AS n FROM id_tags {where}", params)
        return rows, int(total["n"] if total else 0)


def _latest_energy(tx: str) -> str:
    """A subquery: the newest energy register value (Wh) of transaction ``tx``, found by
    walking that transaction's meter values backwards on their index."""
    return (
        "SELECT m.value FROM meter_values m WHERE m.transaction_id = "
        f"{tx} AND m.measurand = '{ENERGY_IMPORT_REGISTER}' AND m.phase IS NULL "
        "AND m.value IS NOT NULL ORDER BY m.timestamp DESC LIMIT 1"
    )


ACTIVE_COUNT_SQL = "SELECT COUNT(*) AS n FROM transactions t WHERE t.stop_received_at IS NULL"
ENERGY_DONE_SQL = (
    "SELECT COALESCE(SUM(t.meter_stop - t.meter_start), 0) AS wh FROM transactions t "
    "WHERE t.stop_time >= ? AND t.meter_stop >= t.meter_start"
)
ENERGY_ACTIVE_SQL = (
    "SELECT COALESCE(SUM(latest - meter_start), 0) AS wh FROM ("
    f"SELECT t.meter_start, ({_latest_energy('t.id')}) AS latest "
    "FROM transactions t WHERE t.stop_received_at IS NULL"
    ") AS a WHERE latest >= meter_start"
)


def latest_energy_sql(dialect: Dialect) -> str:
    """The latest energy register of each transaction of a JSON array of ids (one
    parameter)."""
    return (
        f"SELECT t.id, ({_latest_energy('t.id')}) AS wh FROM transactions t "
        f"WHERE t.id IN ({dialect.json_values(integer=True)})"
    )


LATEST_ENERGY_SQL = latest_energy_sql(SQLITE)
