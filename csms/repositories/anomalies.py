"""Anomalies: what a station sent that could not be stored as a plain fact (a stop of an
unknown transaction, a second stop, a repaired frame, values beyond the cap...).

Anomalies are written inside the job of the message that caused them (a transaction's
start, stop or meter values), in the same commit: the functions of a :class:`Tx` below are
for those jobs. :class:`AnomalyRepository` reads them.
"""

from __future__ import annotations

import json
from typing import Any

from ..db import Database, Tx
from .rows import count, json_or


async def record(
    db: Tx,
    station_id: str,
    kind: str,
    transaction_id: int | None,
    detail: Any,
    received_at: str,
) -> None:
    """Keep one anomaly (``detail`` as JSON), in the job's transaction."""
    await db.execute(
        "INSERT INTO anomalies (station_id, kind, transaction_id, detail, received_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (station_id, kind, transaction_id, json.dumps(detail), received_at),
    )


async def record_repaired(
    db: Tx,
    station_id: str,
    transaction_id: int | None,
    repaired: dict[str, Any],
    received_at: str,
) -> None:
    """What a transaction message held that could not be stored as sent (integers beyond
    SQLite's 64 bits, clamped; lone surrogates, replaced), with the originals."""
    await record(db, station_id, "frame_repaired", transaction_id, repaired, received_at)


async def count_capped(
    db: Tx, station_id: str, transaction_id: int, cap: int, dropped: int, received_at: str
) -> bool:
    """Add ``dropped`` sampled values to the transaction's one ``meter_values_capped``
    anomaly (``detail.dropped``). Returns True when that anomaly is new."""
    old = await db.execute_fetchall(
        "SELECT id, detail FROM anomalies "
        "WHERE transaction_id = ? AND kind = 'meter_values_capped'",
        (transaction_id,),
    )
    if old:
        detail = json_or(old[0]["detail"], {})
        detail["dropped"] = int(detail.get("dropped", 0)) + dropped
        await db.execute(
            "UPDATE anomalies SET detail = ?, received_at = ? WHERE id = ?",
            (json.dumps(detail), received_at, old[0]["id"]),
        )
        return False
    detail = {"cap": cap, "dropped": dropped}
    await record(db, station_id, "meter_values_capped", transaction_id, detail, received_at)
    return True


class AnomalyRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self, station_id: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the anomalies (of one station when given), oldest first, ``detail``
        decoded, and how many there are."""
        clause, params = ("WHERE station_id = ?", [station_id]) if station_id else ("", [])
        rows = await self.db.read(
            f"SELECT * FROM anomalies {clause} ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM anomalies {clause}", params)
        for r in rows:
            r["detail"] = json_or(r["detail"])
        return rows, count(total)
