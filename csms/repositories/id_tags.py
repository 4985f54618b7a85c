"""Id tags: the local authorization list (status, expiry, parent)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count


class IdTagRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # told after every committed change (csms.local_lists reads the tags again)
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for hook in self.on_change:
            hook()

    async def put(
        self, id_tag: str, status: str, expiry_date: datetime | None, parent_id_tag: str | None
    ) -> bool:
        """Create or replace an id tag. Returns True when it was created."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> bool:
            rows = await db.execute_fetchall("SELECT 1 FROM id_tags WHERE id_tag = ?", (id_tag,))
            await db.execute(
                """INSERT INTO id_tags VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id_tag) DO UPDATE SET status = excluded.status,
                       expiry_date = excluded.expiry_date, parent_id_tag = excluded.parent_id_tag,
                       updated_at = excluded.updated_at""",
                (
                    id_tag,
                    status,
                    to_db(expiry_date) if expiry_date else None,
                    parent_id_tag,
                    now,
                    now,
                ),
            )
            return not rows

        created = await self.db.write(job)
        self._changed()
        return created

    async def delete(self, id_tag: str) -> bool:
        """Forget an id tag. Returns False when there was none."""

        async def job(db: Tx) -> bool:
            cur = await db.execute("DELETE FROM id_tags WHERE id_tag = ?", (id_tag,))
            return cur.rowcount > 0

        deleted = await self.db.write(job)
        if deleted:
            self._changed()
        return deleted

    async def get(self, id_tag: str) -> dict[str, Any] | None:
        return await self.db.read_one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,))

    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of id tags in order, and how many there are."""
        rows = await self.db.read(
            "SELECT * FROM id_tags ORDER BY id_tag LIMIT ? OFFSET ?", (limit, offset)
        )
        total = await self.db.read_one("SELECT COUNT(*) AS n FROM id_tags")
        return rows, count(total)
