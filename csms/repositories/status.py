"""Connector status: each connector's latest StatusNotification, and the log of all of them
(what MOBI.E's rule R6 replays in order), pruned to a history window."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..events import Event
from ..outbox import with_events
from ..timeparse import ParsedTime, to_db


class StatusRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        station_id: str,
        payload: dict[str, Any],
        timestamp: ParsedTime,
        at: datetime,
        events: Callable[[None], Iterable[Event]] | None = None,
    ) -> None:
        """Store a StatusNotification: the connector's latest, and one more log entry."""

        async def job(db: Tx) -> None:
            await db.execute(
                """INSERT INTO connector_status (station_id, connector_id, status, error_code,
                       info, vendor_id, vendor_error_code, timestamp, timestamp_raw, received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (station_id, connector_id) DO UPDATE SET
                       status = excluded.status, error_code = excluded.error_code,
                       info = excluded.info, vendor_id = excluded.vendor_id,
                       vendor_error_code = excluded.vendor_error_code,
                       timestamp = excluded.timestamp, timestamp_raw = excluded.timestamp_raw,
                       received_at = excluded.received_at""",
                (
                    station_id,
                    payload["connectorId"],
                    payload["status"],
                    payload["errorCode"],
                    payload.get("info"),
                    payload.get("vendorId"),
                    payload.get("vendorErrorCode"),
                    to_db(timestamp.value),
                    timestamp.original,
                    to_db(at),
                ),
            )
            await db.execute(
                "INSERT INTO status_log (station_id, connector_id, status, error_code, "
                "received_at) VALUES (?, ?, ?, ?, ?)",
                (
                    station_id,
                    payload["connectorId"],
                    payload["status"],
                    payload["errorCode"],
                    to_db(at),
                ),
            )

        await self.db.write(with_events(job, events))

    async def of_stations(self, station_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Each station's connectors' latest status, by connector id."""
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in station_ids}
        if not station_ids:
            return out
        marks = ",".join("?" * len(station_ids))
        rows = await self.db.read(
            f"SELECT * FROM connector_status WHERE station_id IN ({marks}) "
            "ORDER BY station_id, connector_id",
            station_ids,
        )
        for r in rows:
            out[r["station_id"]].append(r)
        return out

    async def log_since(self, station_ids: list[str], after: datetime) -> list[dict[str, Any]]:
        """The StatusNotifications of these stations received after ``after``, in arrival
        order, each with the station's previous report of that connector before ``after``
        first (so the state at ``after`` is known)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(station_ids), 500):
            chunk = station_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out += await self.db.read(
                f"""SELECT station_id, connector_id, status, received_at FROM status_log
                    WHERE station_id IN ({marks}) AND (received_at > ? OR id IN (
                        SELECT MAX(id) FROM status_log WHERE station_id IN ({marks})
                        AND received_at <= ? GROUP BY station_id, connector_id))
                    ORDER BY station_id, id""",
                [*chunk, to_db(after), *chunk, to_db(after)],
            )
        return out

    async def prune_log(self, before: datetime) -> int:
        """Forget StatusNotifications received before ``before``, keeping each connector's
        latest."""

        async def job(db: Tx) -> int:
            cur = await db.execute(
                """DELETE FROM status_log WHERE received_at < ? AND id NOT IN (
                       SELECT MAX(id) FROM status_log GROUP BY station_id, connector_id)""",
                (to_db(before),),
            )
            return cur.rowcount

        return await self.db.write(job)
