"""Reservations (ReserveNow / CancelReservation, issue 16 item 4): csms allocates the
reservationId (the row's id), keeps each reservation's state, and links the transaction a
StartTransaction started on it (its ``reservationId``).

States: ``requested`` (sent; no answer, or none came) | ``accepted`` | ``rejected`` (the
station's answer in ``answer``) | ``cancelled`` | ``expired`` | ``used``. Expiry is csms's
clock's: :meth:`ReservationRepository.expire` turns every held reservation past its
expiry into ``expired`` (no OCPP call: the station drops it by itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count

# the states in which a station holds (or may hold) the reservation
HELD = ("requested", "accepted")
STATES = ("requested", "accepted", "rejected", "cancelled", "expired", "used")
# a start that names a reservation ended (expired, rejected) this long ago still uses it
LINK_WINDOW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ReservationQuery:
    """A list's filters (each None: any)."""

    station_id: str | None = None
    state: str | None = None
    id_tag: str | None = None
    requested_by: str | None = None


class ReservationRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ writes

    async def create(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        parent_id_tag: str | None,
        expiry: datetime,
        requested_by: str,
        now: datetime,
    ) -> int:
        """A new reservation, ``requested``; its id is the reservationId to send."""
        t = to_db(now)

        async def job(db: Tx) -> int:
            cur = await db.execute(
                """INSERT INTO reservations (station_id, connector_id, id_tag, parent_id_tag,
                       expiry_date, state, requested_by, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, 'requested', ?, ?, ?) RETURNING id""",
                (
                    station_id,
                    connector_id,
                    id_tag,
                    parent_id_tag,
                    to_db(expiry),
                    requested_by,
                    t,
                    t,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self.db.write(job)

    async def answered(self, reservation_id: int, answer: str, now: datetime) -> bool:
        """The station's answer to ReserveNow: ``Accepted`` holds it, anything else
        (Faulted, Occupied, Rejected, Unavailable, a CallError) rejects it. Only a
        reservation still ``requested`` changes (a fast start may have used it already)."""
        state = "accepted" if answer == "Accepted" else "rejected"

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE reservations SET state = ?, answer = ?, updated_at = ? "
                "WHERE id = ? AND state = 'requested'",
                (state, answer, to_db(now), reservation_id),
            )
            if cur.rowcount == 0:  # used or expired meanwhile: the answer is still kept
                await db.execute(
                    "UPDATE reservations SET answer = ? WHERE id = ? AND answer IS NULL",
                    (answer, reservation_id),
                )
            return cur.rowcount == 1

        return await self.db.write(job)

    async def note_answer(self, reservation_id: int, answer: str, now: datetime) -> None:
        """What came instead of an answer (``timeout``, ``offline``); the state stays."""

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE reservations SET answer = ?, updated_at = ? WHERE id = ?",
                (answer, to_db(now), reservation_id),
            )

        await self.db.write(job)

    async def cancelled(self, reservation_id: int, by: str, now: datetime) -> bool:
        """Mark a held reservation cancelled (the station accepted CancelReservation)."""

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE reservations SET state = 'cancelled', cancelled_by = ?, updated_at = ? "
                "WHERE id = ? AND state IN ('requested', 'accepted')",
                (by, to_db(now), reservation_id),
            )
            return cur.rowcount == 1

        return await self.db.write(job)

    async def expire(self, now: datetime) -> int:
        """Every held reservation whose expiry has passed becomes ``expired``; how many."""
        t = to_db(now)

        async def job(db: Tx) -> int:
            cur = await db.execute(
                "UPDATE reservations SET state = 'expired', updated_at = ? "
                "WHERE state IN ('requested', 'accepted') AND expiry_date <= ?",
                (t, t),
            )
            return max(0, cur.rowcount)

        return await self.db.write(job)

    async def link_transactions(self, now: datetime) -> int:
        """Reservations named by a StartTransaction's reservationId (on the same station)
        become ``used``, with that transaction's id. A start is never refused: one that
        names an expired reservation still uses it; a cancelled one stays cancelled. Only
        reservations held, or ended within LINK_WINDOW, are looked at (the index's range)."""
        t = to_db(now)
        since = to_db(now - LINK_WINDOW)

        async def job(db: Tx) -> int:
            cur = await db.execute(
                """UPDATE reservations SET state = 'used', updated_at = ?,
                       transaction_id = (SELECT MIN(t.id) FROM transactions t
                                         WHERE t.reservation_id = reservations.id
                                           AND t.station_id = reservations.station_id)
                   WHERE (state IN ('requested', 'accepted')
                          OR (state IN ('expired', 'rejected') AND expiry_date >= ?))
                     AND EXISTS (SELECT 1 FROM transactions t
                                 WHERE t.reservation_id = reservations.id
                                   AND t.station_id = reservations.station_id)""",
                (t, since),
            )
            return max(0, cur.rowcount)

        return await self.db.write(job)

    # ------------------------------------------------------------------ reads

    async def get(self, reservation_id: int) -> dict[str, Any] | None:
        if not 1 <= reservation_id < (1 << 63):
            return None
        return await self.db.read_one("SELECT * FROM reservations WHERE id = ?", (reservation_id,))

    async def page(
        self, q: ReservationQuery, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page, newest first, of the reservations matching ``q``; and how many in all."""
        where, params = [], []
        if q.station_id is not None:
            where.append("station_id = ?")
            params.append(q.station_id)
        if q.state is not None:
            where.append("state = ?")
            params.append(q.state)
        if q.id_tag is not None:
            where.append("UPPER(id_tag) = UPPER(?)")
            params.append(q.id_tag)
        if q.requested_by is not None:
            where.append("requested_by = ?")
            params.append(q.requested_by)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self.db.read(
            f"SELECT * FROM reservations {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM reservations {clause}", params)
        return rows, count(total)

    async def held_on(self, station_id: str, connector_ids: Iterable[int]) -> list[dict[str, Any]]:
        """The reservations held on these connectors of a station, by id."""
        ids = sorted({int(c) for c in connector_ids})
        if not ids:
            return []
        rows = await self.db.read(
            "SELECT * FROM reservations WHERE station_id = ? AND state IN ('requested', "
            "'accepted') ORDER BY id LIMIT 100",
            (station_id,),
        )
        return [r for r in rows if int(r["connector_id"]) in ids]
