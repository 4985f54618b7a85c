"""Bulk commands (csms.bulk): the jobs, each station's item with its state and answer, and
the facts about the fleet a selection is resolved against."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count, json_or

# the fleet read to resolve a selection, at most (the stations beyond are not considered)
MAX_FLEET = 200_000
# items written per statement when a job is created
CHUNK = 500


class BulkRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def fleet(self) -> list[dict[str, Any]]:
        """What a selection is resolved against: every station's identity and boot facts."""
        return await self.db.read(
            "SELECT id, defined, location_id, vendor, model, firmware_version, "
            "security_profile, last_seen_at, retired_at FROM stations ORDER BY id LIMIT ?",
            (MAX_FLEET,),
        )

    async def create(
        self,
        action: str,
        payload: dict[str, Any],
        selection: dict[str, Any],
        concurrency: int,
        station_ids: Sequence[str],
        created_by: str,
    ) -> int:
        now = to_db(self.clock.now())

        async def job(db: Tx) -> int:
            cur = await db.execute(
                "INSERT INTO bulk_jobs (action, payload, selection, concurrency, total, state, "
                "created_by, created_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?) RETURNING id",
                (
                    action,
                    json.dumps(payload),
                    json.dumps(selection),
                    concurrency,
                    len(station_ids),
                    created_by,
                    now,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            job_id = int(row[0])
            rows = [(job_id, i, sid, now) for i, sid in enumerate(station_ids)]
            for start in range(0, len(rows), CHUNK):
                await db.executemany(
                    "INSERT INTO bulk_items (job_id, position, station_id, state, updated_at) "
                    "VALUES (?, ?, ?, 'pending', ?)",
                    rows[start : start + CHUNK],
                )
            return job_id

        return await self.db.write(job)

    async def get(self, job_id: int) -> dict[str, Any] | None:
        row = await self.db.read_one("SELECT * FROM bulk_jobs WHERE id = ?", (job_id,))
        if row is not None:
            row["payload"] = json_or(row["payload"], {})
            row["selection"] = json_or(row["selection"], {})
        return row

    async def page(
        self, limit: int, offset: int, state: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page, newest first, of the jobs (in that state, when given), and how many."""
        clause, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = await self.db.read(
            f"SELECT * FROM bulk_jobs {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM bulk_jobs {clause}", params)
        for r in rows:
            r["payload"] = json_or(r["payload"], {})
            r["selection"] = json_or(r["selection"], {})
        return rows, count(total)

    async def progress(self, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Per job, how many of its stations are in each state."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self.db.read(
            f"SELECT job_id, state, COUNT(*) AS n FROM bulk_items WHERE job_id IN ({marks}) "
            "GROUP BY job_id, state",
            list(job_ids),
        )
        out: dict[int, dict[str, int]] = {int(j): {} for j in job_ids}
        for r in rows:
            out[int(r["job_id"])][r["state"]] = int(r["n"])
        return out

    async def items(
        self, job_id: int, state: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        clause, params = ("AND state = ?", [state]) if state else ("", [])
        rows = await self.db.read(
            f"SELECT station_id, state, answer, updated_at FROM bulk_items WHERE job_id = ? "
            f"{clause} ORDER BY position LIMIT ? OFFSET ?",
            [job_id, *params, limit, offset],
        )
        total = await self.db.read_one(
            f"SELECT COUNT(*) AS n FROM bulk_items WHERE job_id = ? {clause}", [job_id, *params]
        )
        for r in rows:
            r["answer"] = json_or(r["answer"])
        return rows, count(total)

    async def pending(self, job_id: int, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT position, station_id FROM bulk_items WHERE job_id = ? AND state = 'pending' "
            "ORDER BY position LIMIT ?",
            (job_id, limit),
        )

    async def claim(self, job_id: int, position: int) -> bool:
        """pending -> sent, unless the job was cancelled meanwhile; whether it was taken."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE bulk_items SET state = 'sent', updated_at = ? "
                "WHERE job_id = ? AND position = ? AND state = 'pending' AND EXISTS "
                "(SELECT 1 FROM bulk_jobs WHERE id = ? AND state = 'running')",
                (now, job_id, position, job_id),
            )
            return cur.rowcount == 1

        return await self.db.write(job)

    async def finish_item(self, job_id: int, position: int, state: str, answer: Any) -> None:
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE bulk_items SET state = ?, answer = ?, updated_at = ? "
                "WHERE job_id = ? AND position = ?",
                (state, json.dumps(answer), now, job_id, position),
            )

        await self.db.write(job)

    async def finish_job(self, job_id: int) -> None:
        """running -> finished once nothing is pending or sent."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE bulk_jobs SET state = 'finished', finished_at = ? WHERE id = ? "
                "AND state = 'running' AND NOT EXISTS (SELECT 1 FROM bulk_items WHERE "
                "job_id = ? AND state IN ('pending', 'sent'))",
                (now, job_id, job_id),
            )

        await self.db.write(job)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a running job: its pending stations become cancelled. False: not running."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE bulk_jobs SET state = 'cancelled', finished_at = ? "
                "WHERE id = ? AND state = 'running'",
                (now, job_id),
            )
            if cur.rowcount != 1:
                return False
            await db.execute(
                "UPDATE bulk_items SET state = 'cancelled', updated_at = ? "
                "WHERE job_id = ? AND state = 'pending'",
                (now, job_id),
            )
            return True

        return await self.db.write(job)

    async def recover(self, at: datetime) -> list[int]:
        """After a restart: what was in flight is unknown; the running jobs' ids (to resume)."""
        now = to_db(at)

        async def job(db: Tx) -> list[int]:
            rows = await db.execute_fetchall("SELECT id FROM bulk_jobs WHERE state = 'running'")
            ids = [int(r[0]) for r in rows]
            for job_id in ids:
                await db.execute(
                    "UPDATE bulk_items SET state = 'unknown', answer = ?, updated_at = ? "
                    "WHERE job_id = ? AND state = 'sent'",
                    (json.dumps({"error": "unknown: csms restarted"}), now, job_id),
                )
            return ids

        return await self.db.write(job)
