"""Stuck transactions (issue 16, item 6): the facts that say a transaction still open may
be over (a later StatusNotification Available/Preparing of its connector, a boot of its
station after its start, its last meter or transaction message), and an admin's manual
close of one, written like a StopTransaction (one job, with its TransactionStopped event)
and flagged ``manual_close`` with who, when, why and the evidence.

The judgement itself is pure: :mod:`csms.stuck`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..events import Event
from ..meter import ENERGY_IMPORT_REGISTER
from ..outbox import with_events
from ..timeparse import to_db

MANUAL_FLAG = "manual_close"
MANUAL_REASON = "Manual"  # the stop_reason of a manual close (not one of OCPP's)


@dataclass(frozen=True, slots=True)
class CloseResult:
    outcome: str  # closed | not_open | unknown
    connector_id: int | None = None


class StuckRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open_facts(
        self, after_id: int, limit: int, station_id: str | None = None
    ) -> list[dict[str, Any]]:
        """A page (by id, above ``after_id``) of the open transactions with, for each: the
        station's last boot, the first StatusNotification Available or Preparing of its
        connector received after its start (``status_after``, ``status_after_at``)."""
        where = "t.stop_received_at IS NULL AND t.id > ?"
        params: list[Any] = [after_id]
        if station_id is not None:
            where += " AND t.station_id = ?"
            params.append(station_id)
        first_free = (
            "SELECT {col} FROM status_log l WHERE l.station_id = t.station_id "
            "AND l.connector_id = t.connector_id AND l.status IN ('Available', 'Preparing') "
            "AND l.received_at > t.start_received_at ORDER BY l.id LIMIT 1"
        )
        rows = await self.db.read(
            f"""SELECT t.*, s.last_boot_at AS station_last_boot_at,
                   ({first_free.format(col="l.status")}) AS status_after,
                   ({first_free.format(col="l.received_at")}) AS status_after_at
                FROM transactions t LEFT JOIN stations s ON s.id = t.station_id
                WHERE {where} ORDER BY t.id LIMIT ?""",
            [*params, limit],
        )
        for r in rows:
            r["flags"] = json.loads(r["flags"]) if r["flags"] else []
        return rows

    async def last_register(self, transaction_id: int) -> tuple[float, str] | None:
        """The transaction's latest energy register reading in Wh, and its time."""
        row = await self.db.read_one(
            "SELECT value, timestamp FROM meter_values WHERE transaction_id = ? "
            "AND measurand = ? AND phase IS NULL AND value IS NOT NULL "
            "AND norm_unit = 'Wh' ORDER BY timestamp DESC, id DESC LIMIT 1",
            (transaction_id, ENERGY_IMPORT_REGISTER),
        )
        return (float(row["value"]), row["timestamp"]) if row else None

    async def close(
        self,
        transaction_id: int,
        meter_stop: int,
        stop_time: datetime,
        closed_by: str,
        reason: str,
        evidence: dict[str, Any] | None,
        now: datetime,
        events: Callable[[CloseResult], Iterable[Event]] | None = None,
    ) -> CloseResult:
        """Close an open transaction by hand: meter_stop, stop_time, stop_reason Manual,
        flagged, with who, when, why and the evidence; its event in the same commit."""
        t_now = to_db(now)

        async def job(db: Tx) -> CloseResult:
            rows = await db.execute_fetchall(
                "SELECT connector_id, stop_received_at, flags FROM transactions WHERE id = ?",
                (transaction_id,),
            )
            if not rows:
                return CloseResult("unknown")
            connector_id, stopped_at, flags_text = rows[0]
            if stopped_at is not None:
                return CloseResult("not_open", int(connector_id))
            flags = list(json.loads(flags_text)) if flags_text else []
            if MANUAL_FLAG not in flags:
                flags.append(MANUAL_FLAG)
            await db.execute(
                """UPDATE transactions SET meter_stop = ?, stop_time = ?, stop_reason = ?,
                       stop_received_at = ?, flags = ?, updated_at = ?, closed_by = ?,
                       closed_at = ?, close_reason = ?, close_evidence = ?
                   WHERE id = ? AND stop_received_at IS NULL""",
                (
                    meter_stop,
                    to_db(stop_time),
                    MANUAL_REASON,
                    t_now,
                    json.dumps(flags),
                    t_now,
                    closed_by,
                    t_now,
                    reason,
                    json.dumps(evidence) if evidence is not None else None,
                    transaction_id,
                ),
            )
            return CloseResult("closed", int(connector_id))

        return await self.db.write(with_events(job, events))
