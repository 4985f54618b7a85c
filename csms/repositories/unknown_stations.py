"""Unknown stations: the charge point ids that tried to connect without being defined, one
row per id (attempts, first and last seen, last address), kept to a bounded number."""

from __future__ import annotations

from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count


class UnknownStationRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # ids kept at most (ocpp.max_unknown_stations, set by the application)
        self.cap = 1000
        # what was forgotten to stay under the cap, since start: ids and their attempts
        self.dropped_ids = 0
        self.dropped_attempts = 0

    async def record(self, station_id: str, remote: str | None) -> None:
        """Count a handshake of an id that is not defined. A new id beyond ``cap`` forgets
        the least recently seen ones, counted in ``dropped_ids`` and ``dropped_attempts``."""
        now = to_db(self.clock.now())
        cap = max(1, int(self.cap))

        async def job(db: Tx) -> tuple[int, int]:
            cur = await db.execute(
                "UPDATE unknown_stations SET last_seen_at = ?, attempts = attempts + 1, "
                "last_remote_address = ? WHERE charge_point_id = ?",
                (now, remote, station_id),
            )
            if cur.rowcount:
                return 0, 0
            await db.execute(
                "INSERT INTO unknown_stations VALUES (?, ?, ?, 1, ?)",
                (station_id, now, now, remote),
            )
            n = (await db.execute_fetchall("SELECT COUNT(*) FROM unknown_stations"))[0][0]
            if n <= cap:
                return 0, 0
            victims = await db.execute_fetchall(
                "SELECT charge_point_id, attempts FROM unknown_stations "
                "WHERE charge_point_id != ? ORDER BY last_seen_at, charge_point_id LIMIT ?",
                (station_id, n - cap),
            )
            await db.executemany(
                "DELETE FROM unknown_stations WHERE charge_point_id = ?",
                [(v[0],) for v in victims],
            )
            return len(victims), sum(int(v[1]) for v in victims)

        ids, attempts = await self.db.write(job)
        self.dropped_ids += ids
        self.dropped_attempts += attempts

    async def page(self, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The ids refused because they are not defined, most recently seen first, and how
        many there are."""
        where = """WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.id = u.charge_point_id
                                     AND s.defined = 1)"""
        rows = await self.db.read(
            f"""SELECT u.* FROM unknown_stations u {where}
                ORDER BY u.last_seen_at DESC, u.charge_point_id LIMIT ? OFFSET ?""",
            (limit, offset),
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM unknown_stations u {where}")
        return rows, count(total)
