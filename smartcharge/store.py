"""The smart charging tables (``smart_*``), through the port's ExtensionDb (portable SQL)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from csms.ports import ExtensionDb, Tx, to_db


def _row(r: dict[str, Any] | None, *json_cols: str) -> dict[str, Any] | None:
    if r is None:
        return None
    out = dict(r)
    for k in json_cols:
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k])
    return out


class SmartStore:
    def __init__(self, db: ExtensionDb) -> None:
        self.db = db

    # ------------------------------------------------------------------ profiles

    async def profiles(
        self, station_id: str | None = None, origin_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = [], []
        if station_id is not None:
            where.append("station_id = ?")
            params.append(station_id)
        if origin_prefix is not None:
            where.append("origin LIKE ? ESCAPE '\\'")
            params.append(origin_prefix.replace("%", "").replace("_", "\\_") + "%")
        sql = "SELECT * FROM smart_profiles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY station_id, connector_id, profile_id LIMIT 10000"
        rows = await self.db.read(sql, params)
        return [x for x in (_row(r, "body") for r in rows) if x is not None]

    async def profile(self, station_id: str, profile_id: int) -> dict[str, Any] | None:
        r = await self.db.read_one(
            "SELECT * FROM smart_profiles WHERE station_id = ? AND profile_id = ?",
            (station_id, profile_id),
        )
        return _row(r, "body")

    async def put_profile(
        self,
        station_id: str,
        connector_id: int,
        body: dict[str, Any],
        origin: str,
        now: datetime,
    ) -> None:
        """Keep a profile csms wants the station to hold (pending until it answers). A
        profile of the same id, or of the same purpose, stack level and connector, is
        replaced, as the station replaces it (OCPP 1.6, SetChargingProfile)."""

        async def job(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM smart_profiles WHERE station_id = ? AND (profile_id = ? OR "
                "(connector_id = ? AND purpose = ? AND stack_level = ?))",
                (station_id, body["id"], connector_id, body["purpose"], body["stack_level"]),
            )
            await tx.execute(
                "INSERT INTO smart_profiles (station_id, profile_id, connector_id, purpose, "
                "stack_level, transaction_id, origin, body, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    station_id,
                    body["id"],
                    connector_id,
                    body["purpose"],
                    body["stack_level"],
                    body.get("transaction_id"),
                    origin,
                    json.dumps(body),
                    to_db(now),
                    to_db(now),
                ),
            )

        await self.db.write(job)

    async def profile_answer(
        self, station_id: str, profile_id: int, state: str, error: str | None, now: datetime
    ) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "UPDATE smart_profiles SET state = ?, last_error = ?, sent_at = ?, "
                "updated_at = ? WHERE station_id = ? AND profile_id = ?",
                (state, error, to_db(now), to_db(now), station_id, profile_id),
            )

        await self.db.write(job)

    async def delete_profile(self, station_id: str, profile_id: int) -> bool:
        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                "DELETE FROM smart_profiles WHERE station_id = ? AND profile_id = ?",
                (station_id, profile_id),
            )
            return cur.rowcount > 0

        return await self.db.write(job)

    async def delete_tx_profiles(self, station_id: str, transaction_id: int) -> None:
        """A transaction ended: its TxProfiles ended with it (the station drops them)."""

        async def job(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM smart_profiles WHERE station_id = ? AND purpose = 'TxProfile' "
                "AND transaction_id = ?",
                (station_id, transaction_id),
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ sites

    async def sites(self) -> list[dict[str, Any]]:
        rows = await self.db.read("SELECT * FROM smart_sites ORDER BY id LIMIT 10000")
        return [x for x in (_row(r, "rules") for r in rows) if x is not None]

    async def site(self, site_id: str) -> dict[str, Any] | None:
        return _row(
            await self.db.read_one("SELECT * FROM smart_sites WHERE id = ?", (site_id,)), "rules"
        )

    async def put_site(
        self,
        site_id: str,
        name: str,
        rules: dict[str, Any],
        members: list[tuple[str, int]],
        now: datetime,
    ) -> tuple[bool, list[str]]:
        """Create or replace a site and its members; (created, stations taken from another
        site are refused: their ids, and nothing is written)."""

        async def job(tx: Tx) -> tuple[bool, list[str]]:
            ids = [m[0] for m in members]
            taken: list[str] = []
            if ids:
                marks = ", ".join("?" * len(ids))
                rows = await tx.execute_fetchall(
                    f"SELECT station_id FROM smart_site_members WHERE site_id <> ? "
                    f"AND station_id IN ({marks})",
                    (site_id, *ids),
                )
                taken = sorted(r["station_id"] for r in rows)
            if taken:
                return False, taken
            cur = await tx.execute(
                "UPDATE smart_sites SET name = ?, rules = ?, updated_at = ? WHERE id = ?",
                (name, json.dumps(rules), to_db(now), site_id),
            )
            created = cur.rowcount == 0
            if created:
                await tx.execute(
                    "INSERT INTO smart_sites (id, name, rules, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (site_id, name, json.dumps(rules), to_db(now), to_db(now)),
                )
            await tx.execute("DELETE FROM smart_site_members WHERE site_id = ?", (site_id,))
            for station_id, priority in members:
                await tx.execute(
                    "INSERT INTO smart_site_members (station_id, site_id, priority) "
                    "VALUES (?, ?, ?)",
                    (station_id, site_id, priority),
                )
            return created, []

        return await self.db.write(job)

    async def delete_site(self, site_id: str) -> bool:
        async def job(tx: Tx) -> bool:
            await tx.execute("DELETE FROM smart_site_members WHERE site_id = ?", (site_id,))
            await tx.execute("DELETE FROM smart_allocations WHERE site_id = ?", (site_id,))
            await tx.execute("DELETE FROM smart_site_power WHERE site_id = ?", (site_id,))
            cur = await tx.execute("DELETE FROM smart_sites WHERE id = ?", (site_id,))
            return cur.rowcount > 0

        return await self.db.write(job)

    async def set_dynamic_limit(
        self, site_id: str, limit: Decimal | None, until: datetime | None, now: datetime
    ) -> bool:
        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                "UPDATE smart_sites SET dynamic_limit = ?, dynamic_until = ?, updated_at = ? "
                "WHERE id = ?",
                (
                    None if limit is None else str(limit),
                    None if until is None else to_db(until),
                    to_db(now),
                    site_id,
                ),
            )
            return cur.rowcount > 0

        return await self.db.write(job)

    async def member(self, station_id: str) -> dict[str, Any] | None:
        """The site a station is in (site_id, priority), if any."""
        return await self.db.read_one(
            "SELECT site_id, priority FROM smart_site_members WHERE station_id = ?",
            (station_id,),
        )

    async def members(self, site_id: str | None = None) -> list[dict[str, Any]]:
        if site_id is None:
            return await self.db.read(
                "SELECT * FROM smart_site_members ORDER BY site_id, station_id LIMIT 100000"
            )
        return await self.db.read(
            "SELECT * FROM smart_site_members WHERE site_id = ? ORDER BY station_id LIMIT 100000",
            (site_id,),
        )

    # ------------------------------------------------------------------ allocations

    async def allocations(self, site_id: str) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT * FROM smart_allocations WHERE site_id = ? "
            "ORDER BY station_id, connector_id LIMIT 100000",
            (site_id,),
        )

    async def put_allocation(
        self,
        site_id: str,
        station_id: str,
        connector_id: int,
        transaction_id: int | None,
        limit_a: Decimal,
        state: str,
        now: datetime,
    ) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO smart_allocations (station_id, connector_id, site_id, "
                "transaction_id, limit_a, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (station_id, connector_id) DO UPDATE SET site_id = excluded.site_id, "
                "transaction_id = excluded.transaction_id, limit_a = excluded.limit_a, "
                "state = excluded.state, updated_at = excluded.updated_at",
                (
                    station_id,
                    connector_id,
                    site_id,
                    transaction_id,
                    str(limit_a),
                    state,
                    to_db(now),
                ),
            )

        await self.db.write(job)

    async def drop_allocation(self, station_id: str, connector_id: int) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "DELETE FROM smart_allocations WHERE station_id = ? AND connector_id = ?",
                (station_id, connector_id),
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ the power chart

    async def record_power(
        self,
        site_id: str,
        minute: datetime,
        station_id: str,
        connector_id: int,
        power_w: float,
        limit_a: Decimal | None,
    ) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO smart_site_power (site_id, minute, station_id, connector_id, "
                "power_w, limit_a) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (site_id, minute, station_id, connector_id) DO UPDATE SET "
                "power_w = CASE WHEN excluded.power_w > smart_site_power.power_w "
                "THEN excluded.power_w ELSE smart_site_power.power_w END, "
                "limit_a = excluded.limit_a",
                (
                    site_id,
                    to_db(minute),
                    station_id,
                    connector_id,
                    float(power_w),
                    None if limit_a is None else float(limit_a),
                ),
            )

        await self.db.write(job)

    async def power(self, site_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Per minute: the site's summed power (W) and its limit (A per phase)."""
        return await self.db.read(
            "SELECT minute, SUM(power_w) AS power_w, MAX(limit_a) AS limit_a, "
            "COUNT(*) AS evses FROM smart_site_power WHERE site_id = ? AND minute >= ? "
            "AND minute < ? GROUP BY minute ORDER BY minute LIMIT 20000",
            (site_id, to_db(since), to_db(until)),
        )

    async def prune_power(self, before: datetime) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute("DELETE FROM smart_site_power WHERE minute < ?", (to_db(before),))

        await self.db.write(job)

    # ------------------------------------------------------------------ session limits

    async def session_limit(self, transaction_id: int) -> dict[str, Any] | None:
        return _row(
            await self.db.read_one(
                "SELECT * FROM smart_session_limits WHERE transaction_id = ?", (transaction_id,)
            ),
            "schedule",
        )

    async def put_session_limit(
        self, transaction_id: int, origin: str, schedule: dict[str, Any], now: datetime
    ) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO smart_session_limits (transaction_id, origin, schedule, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (transaction_id) DO UPDATE SET "
                "origin = excluded.origin, schedule = excluded.schedule, "
                "created_at = excluded.created_at",
                (transaction_id, origin, json.dumps(schedule), to_db(now)),
            )

        await self.db.write(job)

    async def delete_session_limit(self, transaction_id: int) -> bool:
        async def job(tx: Tx) -> bool:
            cur = await tx.execute(
                "DELETE FROM smart_session_limits WHERE transaction_id = ?", (transaction_id,)
            )
            return cur.rowcount > 0

        return await self.db.write(job)
