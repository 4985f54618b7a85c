"""Alerts (csms.alerts): each alert raised, its delivery per channel (state, attempts, next
retry, last error), and the open conditions that keep one alert per outage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..timeparse import from_db, to_db
from .rows import count, json_or


class AlertRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def raise_alert(
        self,
        kind: str,
        subject: str,
        details: dict[str, Any],
        channels: Sequence[str],
        *,
        open_key: str | None = None,
        close_key: str | None = None,
    ) -> int | None:
        """Store an alert and a pending delivery per channel; its id. ``open_key``: the
        condition it reports opens (None is returned, nothing stored, when it is already
        open: a duplicate). ``close_key``: the condition it reports ended (None when it was
        not open: nothing to report)."""
        now = self.clock.now()
        at = to_db(now)

        async def job(db: Tx) -> int | None:
            if close_key is not None:
                cur = await db.execute("DELETE FROM alert_conditions WHERE key = ?", (close_key,))
                if cur.rowcount != 1:
                    return None
            if open_key is not None:
                cur = await db.execute(
                    "INSERT INTO alert_conditions (key, kind, subject, opened_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                    (open_key, kind, subject, at),
                )
                if cur.rowcount != 1:
                    return None
            cur = await db.execute(
                "INSERT INTO alerts (kind, subject, created_at, details) VALUES (?, ?, ?, ?) "
                "RETURNING id",
                (kind, subject, at, json.dumps(details)),
            )
            row = await cur.fetchone()
            assert row is not None
            alert_id = int(row[0])
            if open_key is not None:
                await db.execute(
                    "UPDATE alert_conditions SET alert_id = ? WHERE key = ?", (alert_id, open_key)
                )
            for channel in channels:
                await db.execute(
                    "INSERT INTO alert_deliveries (alert_id, channel, state, next_attempt_at) "
                    "VALUES (?, ?, 'pending', ?)",
                    (alert_id, channel, at),
                )
            return alert_id

        return await self.db.write(job)

    async def open_conditions(self, kind: str, key: str | None = None) -> dict[str, dict[str, Any]]:
        """The open conditions of a kind (only ``key``'s, when given), by key."""
        clause, params = (" AND key = ?", [kind, key]) if key else ("", [kind])
        rows = await self.db.read(
            "SELECT key, subject, opened_at, alert_id FROM alert_conditions WHERE kind = ?"
            + clause,
            params,
        )
        return {r["key"]: r for r in rows}

    async def is_open(self, key: str) -> bool:
        row = await self.db.read_one("SELECT 1 AS x FROM alert_conditions WHERE key = ?", (key,))
        return row is not None

    async def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        at = to_db(now)
        return await self.db.read(
            "SELECT d.id, d.alert_id, d.channel, d.attempts, a.kind, a.subject, a.created_at, "
            "a.details FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.state = 'pending' AND d.next_attempt_at <= ? "
            "AND (d.lease_until IS NULL OR d.lease_until < ?) ORDER BY d.next_attempt_at, d.id "
            "LIMIT ?",
            (at, at, limit),
        )

    async def next_due(self) -> datetime | None:
        row = await self.db.read_one(
            "SELECT MIN(next_attempt_at) AS t FROM alert_deliveries WHERE state = 'pending'"
        )
        return from_db(row["t"]) if row and row["t"] else None

    async def lease(self, delivery_id: int, now: datetime, until: datetime) -> bool:
        """Hold a due delivery while it is tried (another worker leaves it alone)."""

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE alert_deliveries SET lease_until = ? WHERE id = ? AND state = 'pending' "
                "AND (lease_until IS NULL OR lease_until < ?)",
                (to_db(until), delivery_id, to_db(now)),
            )
            return cur.rowcount == 1

        return await self.db.write(job)

    async def attempted(
        self,
        delivery_id: int,
        state: str,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str | None,
    ) -> None:
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE alert_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                "lease_until = NULL, last_error = ?, delivered_at = ? WHERE id = ?",
                (
                    state,
                    attempts,
                    to_db(next_attempt_at) if next_attempt_at else None,
                    error,
                    now if state == "delivered" else None,
                    delivery_id,
                ),
            )

        await self.db.write(job)

    async def get(self, alert_id: int) -> dict[str, Any] | None:
        row = await self.db.read_one("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        if row is None:
            return None
        row["details"] = json_or(row["details"], {})
        row["deliveries"] = (await self.deliveries([alert_id]))[alert_id]
        return row

    async def deliveries(self, alert_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {int(a): [] for a in alert_ids}
        if not alert_ids:
            return out
        marks = ", ".join("?" for _ in alert_ids)
        rows = await self.db.read(
            "SELECT alert_id, channel, state, attempts, next_attempt_at, last_error, "
            f"delivered_at FROM alert_deliveries WHERE alert_id IN ({marks}) ORDER BY id",
            list(alert_ids),
        )
        for r in rows:
            out[int(r.pop("alert_id"))].append(r)
        return out

    async def page(
        self, kind: str | None, subject: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page, newest first, of the alerts (of a kind, about a subject, when given)."""
        where, params = [], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if subject:
            where.append("subject = ?")
            params.append(subject)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self.db.read(
            f"SELECT * FROM alerts {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM alerts {clause}", params)
        found = await self.deliveries([int(r["id"]) for r in rows])
        for r in rows:
            r["details"] = json_or(r["details"], {})
            r["deliveries"] = found[int(r["id"])]
        return rows, count(total)
