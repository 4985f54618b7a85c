"""The connection log: when each station connected to csms and when it disconnected.

What a station's status timeline needs to show it offline (csms/availability.py). A
connect or disconnect is written by the outbox with its StationConnected or
StationDisconnected event (csms.outbox: never awaited on the station's path), and kept
after the events are pruned. Reads are
bounded; rows are pruned after the status history's retention, keeping each station's
latest (its state before any window).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..timeparse import to_db

MAX_ROWS = 5_000  # rows read per station and window


class ConnectionLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def of_station(
        self, station_id: str, after: datetime, limit: int = MAX_ROWS
    ) -> tuple[list[tuple[datetime, bool]], bool]:
        """The station's connects and disconnects after ``after``, oldest first, led by its
        last record at or before ``after``; and whether ``limit`` cut the newest off."""
        since = to_db(after)
        before = await self.db.read(
            "SELECT connected, at FROM connection_log WHERE station_id = ? AND at <= ? "
            "ORDER BY at DESC, id DESC LIMIT 1",
            (station_id, since),
        )
        rows = await self.db.read(
            "SELECT connected, at FROM connection_log WHERE station_id = ? AND at > ? "
            "ORDER BY at, id LIMIT ?",
            (station_id, since, limit + 1),
        )
        cut = len(rows) > limit
        return [_fact(r) for r in [*before, *rows[:limit]]], cut

    async def of_stations(
        self, station_ids: list[str], after: datetime, limit: int = MAX_ROWS
    ) -> tuple[dict[str, list[tuple[datetime, bool]]], datetime | None]:
        """These stations' records after ``after`` (each led by its last one at or before
        it), and the time of the last row read when ``limit`` cut the newest off (else
        None). Up to 500 stations a call."""
        ids = list(station_ids)[:500]
        out: dict[str, list[tuple[datetime, bool]]] = {}
        if not ids:
            return out, None
        since = to_db(after)
        marks = ",".join("?" * len(ids))
        before = await self.db.read(
            "SELECT station_id, connected, at FROM connection_log WHERE id IN ("
            f"SELECT MAX(id) FROM connection_log WHERE station_id IN ({marks}) AND at <= ? "
            "GROUP BY station_id)",
            [*ids, since],
        )
        rows = await self.db.read(
            "SELECT station_id, connected, at FROM connection_log "
            f"WHERE station_id IN ({marks}) AND at > ? ORDER BY at, id LIMIT ?",
            [*ids, since, limit + 1],
        )
        cut_at = None
        if len(rows) > limit:
            rows = rows[:limit]
            cut_at = _fact(rows[-1])[0]
        for r in [*before, *rows]:
            out.setdefault(r["station_id"], []).append(_fact(r))
        return out, cut_at

    async def prune(self, before: datetime) -> int:
        """Forget records older than ``before``, keeping each station's latest."""

        async def job(db: Tx) -> int:
            cur = await db.execute(
                "DELETE FROM connection_log WHERE at < ? AND id NOT IN ("
                "SELECT MAX(id) FROM connection_log GROUP BY station_id)",
                (to_db(before),),
            )
            return cur.rowcount

        return await self.db.write(job)


def _fact(row: dict[str, Any]) -> tuple[datetime, bool]:
    return datetime.fromisoformat(row["at"]), bool(row["connected"])
