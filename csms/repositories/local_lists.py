"""Local authorization lists (csms.local_lists): per station, whether csms manages its list,
the version and entries the station acknowledged, the lengths it reported and the last
sync's outcome. One row per station at most; no row means the configured default and
nothing acknowledged."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count

# the columns a sync may write (anything else is refused: the names go into SQL)
COLUMNS = frozenset(
    {
        "enabled",
        "state",
        "version_sent",
        "version_acked",
        "entries",
        "entries_count",
        "list_max",
        "send_max",
        "left_out",
        "full_wanted",
        "last_sync_at",
        "last_attempt_at",
        "last_error",
    }
)


class LocalListRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def get(self, station_id: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT * FROM local_lists WHERE station_id = ?", (station_id,)
        )

    async def of_stations(self, station_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of these stations (those that have one), by station id."""
        ids = sorted(set(station_ids))
        if not ids:
            return {}
        rows = await self.db.read(
            f"SELECT * FROM local_lists WHERE station_id IN ({self.db.dialect.json_values('?')})",
            (json.dumps(ids),),
        )
        return {r["station_id"]: r for r in rows}

    async def id_tags_that_may_charge(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` id tags, Accepted and not expired at ``now``, in id tag order."""
        return await self.db.read(
            "SELECT id_tag, status, expiry_date, parent_id_tag FROM id_tags "
            "WHERE status = 'Accepted' AND (expiry_date IS NULL OR expiry_date > ?) "
            "ORDER BY id_tag LIMIT ?",
            (to_db(now), limit),
        )

    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of stations in id order, each with its row's columns (NULL without one),
        and how many stations there are."""
        rows = await self.db.read(
            "SELECT s.id AS id, l.* FROM stations s LEFT JOIN local_lists l "
            "ON l.station_id = s.id ORDER BY s.id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = await self.db.read_one("SELECT COUNT(*) AS n FROM stations")
        return rows, count(total)

    async def update(self, station_id: str, default_enabled: bool, **fields: Any) -> None:
        """Set these columns of the station's row (created with the default when missing)."""
        unknown = set(fields) - COLUMNS
        if unknown:
            raise ValueError(f"not a column of local_lists: {sorted(unknown)}")
        now = to_db(self.clock.now())
        values = dict(fields)
        if "entries" in values and values["entries"] is not None:
            values["entries"] = json.dumps(values["entries"], separators=(",", ":"))
        for key in ("enabled", "full_wanted"):
            if key in values:
                values[key] = int(bool(values[key]))
        names = sorted(values)
        base = {"enabled": int(default_enabled), "state": "new"}
        insert_names = sorted(set(names) | set(base))
        insert_values = [values[n] if n in values else base[n] for n in insert_names]
        sets = ", ".join(f"{n} = excluded.{n}" for n in [*names, "updated_at"])

        async def job(db: Tx) -> None:
            await db.execute(
                f"INSERT INTO local_lists (station_id, {', '.join(insert_names)}, updated_at) "
                f"VALUES (?, {', '.join('?' for _ in insert_names)}, ?) "
                f"ON CONFLICT (station_id) DO UPDATE SET {sets}",
                [station_id, *insert_values, now],
            )

        await self.db.write(job)
