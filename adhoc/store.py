"""The ad hoc tables (``adhoc_*``), through the port's ExtensionDb: portable SQL, writes in
the writer's transaction. Every change of a payment's state is a compare-and-set on the
state it had, so two workers (two cluster nodes) never both act on one step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from csms.ports import ExtensionDb, Tx, to_db

from .core import FINAL, State


@dataclass(frozen=True, slots=True)
class Taken:
    """The EVSE is held by another payment (someone is paying or charging there)."""

    payment_id: str


FINAL_SQL = "('" + "','".join(sorted(FINAL)) + "')"


def _row(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = dict(r)
    for k in ("tariff", "place"):
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k])
    return out


class AdhocStore:
    def __init__(self, db: ExtensionDb) -> None:
        self.db = db

    # ------------------------------------------------------------------ payments

    async def create(self, row: dict[str, Any], now: datetime) -> Taken | None:
        """Insert a payment and claim its EVSE, or say who holds the EVSE. A claim whose
        payment ended is taken over."""
        values = dict(row)
        values["tariff"] = json.dumps(values["tariff"])
        values["place"] = json.dumps(values["place"])
        values.setdefault("created_at", to_db(now))
        values.setdefault("updated_at", to_db(now))
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))

        async def job(tx: Tx) -> Taken | None:
            cur = await tx.execute(
                "SELECT c.payment_id, p.state FROM adhoc_claims c "
                "LEFT JOIN adhoc_payments p ON p.id = c.payment_id "
                "WHERE c.station_id = ? AND c.connector_id = ?",
                (values["station_id"], values["connector_id"]),
            )
            held = await cur.fetchone()
            if held is not None:
                if held["state"] is not None and held["state"] not in FINAL:
                    return Taken(held["payment_id"])
                await tx.execute(
                    "DELETE FROM adhoc_claims WHERE station_id = ? AND connector_id = ?",
                    (values["station_id"], values["connector_id"]),
                )
            await tx.execute(
                f"INSERT INTO adhoc_payments ({cols}) VALUES ({marks})", tuple(values.values())
            )
            await tx.execute(
                "INSERT INTO adhoc_claims (station_id, connector_id, payment_id, created_at) "
                "VALUES (?, ?, ?, ?)",
                (values["station_id"], values["connector_id"], values["id"], to_db(now)),
            )
            return None

        return await self.db.write(job)

    async def get(self, payment_id: str) -> dict[str, Any] | None:
        return _row(
            await self.db.read_one("SELECT * FROM adhoc_payments WHERE id = ?", (payment_id,))
        )

    async def by_id_tag(self, id_tag: str) -> dict[str, Any] | None:
        return _row(
            await self.db.read_one("SELECT * FROM adhoc_payments WHERE id_tag = ?", (id_tag,))
        )

    async def by_transaction(self, transaction_id: int) -> dict[str, Any] | None:
        return _row(
            await self.db.read_one(
                "SELECT * FROM adhoc_payments WHERE transaction_id = ?", (transaction_id,)
            )
        )

    async def claim_of(self, station_id: str, connector_id: int) -> dict[str, Any] | None:
        """The open payment holding an EVSE, if any."""
        return _row(
            await self.db.read_one(
                "SELECT p.* FROM adhoc_claims c JOIN adhoc_payments p ON p.id = c.payment_id "
                f"WHERE c.station_id = ? AND c.connector_id = ? AND p.state NOT IN {FINAL_SQL}",
                (station_id, connector_id),
            )
        )

    async def due(self, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """Open payments whose next attempt is due (oldest change first)."""
        rows = await self.db.read(
            f"SELECT * FROM adhoc_payments WHERE state NOT IN {FINAL_SQL} "
            "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY updated_at LIMIT ?",
            (to_db(now), limit),
        )
        return [r for r in (_row(x) for x in rows) if r is not None]

    async def move(
        self, payment_id: str, from_state: State, to_state: State, now: datetime, **fields: Any
    ) -> bool:
        """Compare-and-set the state (and set ``fields``); False when it had moved on. A
        final state lets the EVSE go."""
        sets = {"state": str(to_state), "updated_at": to_db(now), **fields}
        if "attempts" not in fields:
            sets.update(attempts=0, next_try_at=None, last_error=None)
        assign = ", ".join(f"{k} = ?" for k in sets)

        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                f"UPDATE adhoc_payments SET {assign} WHERE id = ? AND state = ?",
                (*sets.values(), payment_id, str(from_state)),
            )
            if cur.rowcount != 1:
                return False
            if to_state in FINAL:
                await tx.execute("DELETE FROM adhoc_claims WHERE payment_id = ?", (payment_id,))
            return True

        return await self.db.write(job)

    async def note(self, payment_id: str, now: datetime, **fields: Any) -> None:
        """Set fields without a state change (costmsg times, a stop asked)."""
        sets = {"updated_at": to_db(now), **fields}
        assign = ", ".join(f"{k} = ?" for k in sets)

        async def job(tx: Tx) -> None:
            await tx.execute(
                f"UPDATE adhoc_payments SET {assign} WHERE id = ?", (*sets.values(), payment_id)
            )

        await self.db.write(job)

    async def failed_attempt(
        self, payment_id: str, attempts: int, error: str, retry_at: datetime
    ) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "UPDATE adhoc_payments SET attempts = ?, last_error = ?, next_try_at = ? "
                "WHERE id = ?",
                (attempts, error[:500], to_db(retry_at), payment_id),
            )

        await self.db.write(job)

    async def captured(
        self,
        payment_id: str,
        captured_amount: int,
        method: str | None,
        now: datetime,
        receipt: Any,
    ) -> int | None:
        """capturing -> captured (or released when nothing was due), and the receipt with
        the next number, in one commit. ``receipt(number) -> dict`` builds its body. The
        receipt's number, or None when the payment had moved on (another worker did it)."""

        async def job(tx: Tx) -> int | None:
            state = State.CAPTURED if captured_amount > 0 else State.RELEASED
            cur = await tx.execute(
                "UPDATE adhoc_payments SET state = ?, captured_amount = ?, "
                "method = COALESCE(?, method), "
                "reason = CASE WHEN ? > 0 THEN reason ELSE 'nothing_to_pay' END, "
                "finished_at = ?, updated_at = ?, attempts = 0, next_try_at = NULL, "
                "last_error = NULL "
                "WHERE id = ? AND state = ?",
                (
                    str(state),
                    captured_amount,
                    method,
                    captured_amount,
                    to_db(now),
                    to_db(now),
                    payment_id,
                    str(State.CAPTURING),
                ),
            )
            if cur.rowcount != 1:
                return None
            await tx.execute("DELETE FROM adhoc_claims WHERE payment_id = ?", (payment_id,))
            cur = await tx.execute(
                "UPDATE adhoc_counters SET value = value + 1 WHERE name = 'receipt' RETURNING value"
            )
            number = int((await cur.fetchone())[0])
            await tx.execute(
                "INSERT INTO adhoc_receipts (number, payment_id, issued_at, body) "
                "VALUES (?, ?, ?, ?)",
                (number, payment_id, to_db(now), json.dumps(receipt(number))),
            )
            return number

        return await self.db.write(job)

    async def terminal_payment(self, row: dict[str, Any], now: datetime) -> bool:
        """A terminal's transaction, once (keyed by its transaction id). True when new."""
        values = dict(row)
        values["tariff"] = json.dumps(values["tariff"])
        values["place"] = json.dumps(values["place"])
        values.setdefault("created_at", to_db(now))
        values.setdefault("updated_at", to_db(now))
        cols = ", ".join(values)
        marks = ", ".join("?" * len(values))

        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                "SELECT 1 FROM adhoc_payments WHERE transaction_id = ? OR id_tag = ?",
                (values["transaction_id"], values["id_tag"]),
            )
            if await cur.fetchone() is not None:
                return False
            await tx.execute(
                f"INSERT INTO adhoc_payments ({cols}) VALUES ({marks})", tuple(values.values())
            )
            return True

        return await self.db.write(job)

    # ------------------------------------------------------------------ receipts

    async def receipt_of(self, payment_id: str) -> dict[str, Any] | None:
        r = await self.db.read_one(
            "SELECT * FROM adhoc_receipts WHERE payment_id = ?", (payment_id,)
        )
        return _receipt(r)

    async def receipt(self, number: int) -> dict[str, Any] | None:
        r = await self.db.read_one("SELECT * FROM adhoc_receipts WHERE number = ?", (number,))
        return _receipt(r)

    async def receipts_to_mail(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.read(
            "SELECT r.*, p.email FROM adhoc_receipts r "
            "JOIN adhoc_payments p ON p.id = r.payment_id "
            "WHERE p.email IS NOT NULL AND r.emailed_at IS NULL AND r.email_error IS NULL "
            "ORDER BY r.number LIMIT ?",
            (limit,),
        )
        return [x for x in (_receipt(r) for r in rows) if x is not None]

    async def mailed(self, number: int, now: datetime, error: str | None) -> None:
        async def job(tx: Tx) -> None:
            if error is None:
                await tx.execute(
                    "UPDATE adhoc_receipts SET emailed_at = ? WHERE number = ?",
                    (to_db(now), number),
                )
            else:
                await tx.execute(
                    "UPDATE adhoc_receipts SET email_error = ? WHERE number = ?",
                    (error[:300], number),
                )

        await self.db.write(job)

    # ------------------------------------------------------------------ webhooks

    async def first_time(self, provider: str, event_id: str, now: datetime) -> bool:
        """Record a notification; False when it was seen before (a replay)."""

        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                "SELECT 1 FROM adhoc_webhook_events WHERE provider = ? AND event_id = ?",
                (provider, event_id),
            )
            if await cur.fetchone() is not None:
                return False
            await tx.execute(
                "INSERT INTO adhoc_webhook_events (provider, event_id, received_at) "
                "VALUES (?, ?, ?)",
                (provider, event_id, to_db(now)),
            )
            return True

        return await self.db.write(job)

    async def prune_events(self, before: datetime) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM adhoc_webhook_events WHERE received_at < ?", (to_db(before),)
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ operator lists

    async def payments(
        self, *, state: str | None, station_id: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = "1 = 1", []
        if state:
            where += " AND p.state = ?"
            params.append(state)
        if station_id:
            where += " AND p.station_id = ?"
            params.append(station_id)
        total = await self.db.read_one(
            f"SELECT COUNT(*) AS n FROM adhoc_payments p WHERE {where}", params
        )
        rows = await self.db.read(
            "SELECT p.*, r.number AS receipt_number FROM adhoc_payments p "
            f"LEFT JOIN adhoc_receipts r ON r.payment_id = p.id WHERE {where} "
            "ORDER BY p.created_at DESC, p.id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        found = [r for r in (_row(x) for x in rows) if r is not None]
        return found, int(total["n"] if total else 0)

    async def receipts(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        total = await self.db.read_one("SELECT COUNT(*) AS n FROM adhoc_receipts")
        rows = await self.db.read(
            "SELECT * FROM adhoc_receipts ORDER BY number DESC LIMIT ? OFFSET ?", (limit, offset)
        )
        return [r for r in (_receipt(x) for x in rows) if r is not None], int(
            total["n"] if total else 0
        )

    # ------------------------------------------------------------------ stations

    async def costmsg_stations(self) -> set[str]:
        rows = await self.db.read("SELECT station_id FROM adhoc_stations WHERE costmsg = 1")
        return {r["station_id"] for r in rows}

    async def set_costmsg(self, station_id: str, on: bool, now: datetime) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute("DELETE FROM adhoc_stations WHERE station_id = ?", (station_id,))
            await tx.execute(
                "INSERT INTO adhoc_stations (station_id, costmsg, updated_at) VALUES (?, ?, ?)",
                (station_id, 1 if on else 0, to_db(now)),
            )

        await self.db.write(job)


def _receipt(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = dict(r)
    out["body"] = json.loads(out["body"])
    return out
