"""Commands: the OCPP calls csms sent to stations (who asked, the request, the outcome and
the answer), written when sent and again when finished."""

from __future__ import annotations

import json
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count, json_or


class CommandRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def started(
        self, station_id: str, action: str, request: dict[str, Any], origin: str
    ) -> int:
        """Record a call being sent (outcome ``pending``); its id."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> int:
            cur = await db.execute(
                "INSERT INTO commands (station_id, action, request, outcome, origin, sent_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?) RETURNING id",
                (station_id, action, json.dumps(request), origin, now),
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self.db.write(job)

    async def finished(self, command_id: int, outcome: str, response: Any) -> None:
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE commands SET outcome = ?, response = ?, finished_at = ? WHERE id = ?",
                (outcome, json.dumps(response), now, command_id),
            )

        await self.db.write(job)

    async def page(
        self, station_id: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page, newest first, of the commands (to one station when given), and how many."""
        clause, params = ("WHERE station_id = ?", [station_id]) if station_id else ("", [])
        rows = await self.db.read(
            f"SELECT * FROM commands {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM commands {clause}", params)
        for r in rows:
            r["request"] = json_or(r["request"])
            r["response"] = json_or(r["response"])
        return rows, count(total)
