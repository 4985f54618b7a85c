"""Stations: their definitions (with the EVSE uids), boot information, configuration checks,
and the time each was last seen.

``last_seen_at`` changes on every frame: it is kept in memory (:meth:`touch_seen`),
written in batches (:meth:`flush_seen`), and written at once before anything that carries
it leaves (:meth:`persist_seen`), so that no push carries a time that a crash would take
back. Every station row read here carries the newest of the two.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..db import Database, Tx
from ..events import Event
from ..outbox import with_events
from ..timeparse import to_db
from .rows import count, json_or

# how long a write of last-seen times waits for more stations (persist_seen)
SEEN_GATHER = 0.025

# what the extensions' read model of a station holds (csms.ports.StationSnapshot)
SNAPSHOT_COLUMNS = (
    "id, location_id, defined, defined_at, last_seen_at, first_boot_at, definition, vendor, "
    "model, serial_number, firmware_version, boot_info, config_snapshot"
)


class StationRepository:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # last_seen_at, the newest per station (memory), and which are not yet written
        self._seen: dict[str, datetime] = {}
        self._seen_dirty: set[str] = set()
        self._seen_flush: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ definitions

    async def put(
        self,
        station_id: str,
        location_id: str,
        definition: dict[str, Any],
        connector_uids: dict[int, str],
        password_hash: str | None,
        keep_password: bool,
        boot_status: str,
        events: Callable[[bool], Iterable[Event]] | None = None,
        security_profile: int | None = None,
    ) -> bool:
        """Create or replace a station's definition. Returns True when it was created.

        ``security_profile``: set it (a change forgets a pending raise); None keeps the
        station's (1 for a new one).

        Raises ValueError when the Location id or an EVSE uid belongs to another station.
        """
        now = to_db(self.clock.now())

        async def job(db: Tx) -> bool:
            rows = await db.execute_fetchall(
                "SELECT id FROM stations WHERE location_id = ? COLLATE NOCASE AND id != ?",
                (location_id, station_id),
            )
            if rows:
                raise ValueError(f"location.id {location_id!r} is used by station {rows[0][0]}")
            for uid in connector_uids.values():
                rows = await db.execute_fetchall(
                    "SELECT station_id FROM evses WHERE uid = ? AND station_id != ?",
                    (uid, station_id),
                )
                if rows:
                    raise ValueError(f"evse uid {uid!r} is used by station {rows[0][0]}")
            existing = await db.execute_fetchall(
                "SELECT password_hash, security_profile, pending_security_profile "
                "FROM stations WHERE id = ?",
                (station_id,),
            )
            created = not existing
            pw = existing[0][0] if (existing and keep_password) else password_hash
            profile, pending = (existing[0][1] or 1, existing[0][2]) if existing else (1, None)
            if security_profile is not None and security_profile != profile:
                # set by the operator: a raise pending for the old profile is forgotten
                profile, pending = security_profile, None
            await db.execute(
                """INSERT INTO stations (id, defined, location_id, definition, password_hash,
                       boot_status, created_at, updated_at, defined_at)
                   VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET defined = 1,
                       location_id = excluded.location_id, definition = excluded.definition,
                       password_hash = excluded.password_hash,
                       boot_status = excluded.boot_status, updated_at = excluded.updated_at,
                       defined_at = excluded.defined_at""",
                (station_id, location_id, json.dumps(definition), pw, boot_status, now, now, now),
            )
            await db.execute(
                "UPDATE stations SET security_profile = ?, pending_security_profile = ? "
                "WHERE id = ?",
                (profile, pending, station_id),
            )
            await db.execute("DELETE FROM evses WHERE station_id = ?", (station_id,))
            await db.executemany(
                "INSERT INTO evses (uid, station_id, connector_id) VALUES (?, ?, ?)",
                [(uid, station_id, cid) for cid, uid in connector_uids.items()],
            )
            return created

        return await self.db.write(with_events(job, events))

    async def retire(
        self,
        station_id: str,
        connector_ids: tuple[int, ...] | None,
        reason: str | None,
        events: Callable[[dict[str, Any]], Iterable[Event]] | None = None,
    ) -> dict[str, Any]:
        """Retire EVSEs of a defined station (``connector_ids``; None: all of them, the
        station retired). Nothing changes while a transaction is open on one of them.

        Returns ``{"outcome": ..., "removed": [connector ids], "retired": bool, "open":
        [transaction ids]}``, the outcome one of ``done``, ``not_found`` (no such defined
        station), ``unknown_evse``, ``already`` (retired already), ``open_transaction``.
        An EVSE retired is marked in the definition (``removed_at``, what OCPI publishes as
        REMOVED); the station is retired (``retired_at``) when none of its EVSEs is left."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> dict[str, Any]:
            out: dict[str, Any] = {"outcome": "done", "removed": [], "retired": False, "open": []}
            rows = await db.execute_fetchall(
                "SELECT definition, retired_at FROM stations WHERE id = ? AND defined = 1",
                (station_id,),
            )
            if not rows or not rows[0][0]:
                return {**out, "outcome": "not_found"}
            if rows[0][1] is not None:
                return {**out, "outcome": "already", "retired": True}
            definition = json.loads(rows[0][0])
            evses = definition.get("evses") or []
            active = [e["connector_id"] for e in evses if not e.get("removed_at")]
            if connector_ids is None:
                targets = active
            else:
                known = {e["connector_id"] for e in evses}
                if any(c not in known for c in connector_ids):
                    return {**out, "outcome": "unknown_evse"}
                targets = [c for c in connector_ids if c in active]
                if not targets:
                    return {**out, "outcome": "already"}
            open_rows = await db.execute_fetchall(
                "SELECT id, connector_id FROM transactions "
                "WHERE station_id = ? AND stop_received_at IS NULL ORDER BY id LIMIT 100",
                (station_id,),
            )
            blocking = [r[0] for r in open_rows if connector_ids is None or r[1] in targets]
            if blocking:
                return {**out, "outcome": "open_transaction", "open": blocking}
            for e in evses:
                if e["connector_id"] in targets:
                    e["removed_at"] = now
            retired = all(e.get("removed_at") for e in evses)
            await db.execute(
                "UPDATE stations SET definition = ?, retired_at = ?, retired_reason = ?, "
                "updated_at = ? WHERE id = ?",
                (
                    json.dumps(definition),
                    now if retired else None,
                    reason if retired else None,
                    now,
                    station_id,
                ),
            )
            return {**out, "removed": sorted(targets), "retired": retired}

        return await self.db.write(with_events(job, events))

    async def ensure_undefined(self, station_id: str) -> None:
        """Record a station that connected while ``accept_unknown_stations`` is on."""
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                "INSERT INTO stations (id, defined, created_at, updated_at) "
                "VALUES (?, 0, ?, ?) ON CONFLICT DO NOTHING",
                (station_id, now, now),
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ what stations say

    async def record_boot(
        self,
        station_id: str,
        payload: dict[str, Any],
        at: datetime,
        events: Callable[[tuple[str, bool]], Iterable[Event]] | None = None,
    ) -> tuple[str, bool]:
        """Store a BootNotification. Returns the station's boot status setting (Accepted,
        Pending or Rejected) and whether this is its first accepted boot (commissioning)."""
        t = to_db(at)

        async def job(db: Tx) -> tuple[str, bool]:
            rows = await db.execute_fetchall(
                "SELECT boot_status, first_boot_at FROM stations WHERE id = ?", (station_id,)
            )
            status = rows[0][0] if rows else "Accepted"
            first = status == "Accepted" and (not rows or rows[0][1] is None)
            await db.execute(
                """UPDATE stations SET vendor = ?, model = ?, serial_number = ?,
                       firmware_version = ?, boot_info = ?, last_boot_at = ?,
                       first_boot_at = COALESCE(first_boot_at, ?), updated_at = ?
                   WHERE id = ?""",
                (
                    payload.get("chargePointVendor"),
                    payload.get("chargePointModel"),
                    payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
                    payload.get("firmwareVersion"),
                    json.dumps(payload),
                    t,
                    t if status == "Accepted" else None,
                    t,
                    station_id,
                ),
            )
            return status, first

        return await self.db.write(with_events(job, events))

    async def set_field(self, station_id: str, column: str, value: str | None) -> None:
        """Set the diagnostics or firmware status a station reported."""
        if column not in ("diagnostics_status", "firmware_status"):
            raise ValueError(column)
        now = to_db(self.clock.now())

        async def job(db: Tx) -> None:
            await db.execute(
                f"UPDATE stations SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, now, station_id),
            )

        await self.db.write(job)

    async def save_configuration_check(
        self,
        station_id: str,
        compliant: bool,
        reasons: list[str],
        snapshot: list[dict[str, Any]] | None,
        at: datetime,
    ) -> None:
        async def job(db: Tx) -> None:
            await db.execute(
                """UPDATE stations SET config_status = ?, config_reasons = ?,
                       config_snapshot = COALESCE(?, config_snapshot), config_checked_at = ?
                   WHERE id = ?""",
                (
                    "compliant" if compliant else "non_compliant",
                    json.dumps(reasons),
                    json.dumps(snapshot) if snapshot is not None else None,
                    to_db(at),
                    station_id,
                ),
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ last seen

    def touch_seen(self, station_id: str, at: datetime) -> None:
        old = self._seen.get(station_id)
        if old is None or at > old:
            self._seen[station_id] = at
            self._seen_dirty.add(station_id)

    def note_seen(self, station_id: str, at: datetime) -> None:
        """A last-seen time already committed elsewhere (a StationSeen event of the
        outbox): kept in memory, nothing to write."""
        old = self._seen.get(station_id)
        if old is None or at > old:
            self._seen[station_id] = at

    def last_seen(self, station_id: str) -> datetime | None:
        return self._seen.get(station_id)

    async def flush_seen(self) -> None:
        if not self._seen_dirty or not self.db.is_open:
            return
        dirty, self._seen_dirty = self._seen_dirty, set()
        pending = [(at, sid, at) for sid in dirty for at in (to_db(self._seen[sid]),)]

        async def job(db: Tx) -> None:
            await db.executemany(
                "UPDATE stations SET last_seen_at = ? WHERE id = ? "
                "AND (last_seen_at IS NULL OR last_seen_at < ?)",
                pending,
            )

        try:
            await self.db.write(job)
        except Exception:
            self._seen_dirty |= dirty  # kept for the next try
            raise

    async def persist_seen(self, station_id: str) -> None:
        """Return once the station's newest last-seen time is committed. The write waits
        SEEN_GATHER seconds for the stations that come meanwhile, so that one commit serves
        the frames of that moment (a commit per heartbeat cost a tenth of the CPU)."""
        while station_id in self._seen_dirty:
            if self._seen_flush is None or self._seen_flush.done():
                self._seen_flush = asyncio.ensure_future(self._gather_and_flush())
            await asyncio.shield(self._seen_flush)

    async def _gather_and_flush(self) -> None:
        await asyncio.sleep(SEEN_GATHER)
        await self.flush_seen()

    # ------------------------------------------------------------------ reads

    async def auth(self, station_id: str) -> dict[str, Any] | None:
        """What the websocket handshake needs: does it exist, its password hash, its
        security profile and the one it is being raised to (or None), and whether it is
        retired (``retired_at``)."""
        return await self.db.read_one(
            "SELECT id, password_hash, security_profile, pending_security_profile, "
            "retired_at FROM stations WHERE id = ?",
            (station_id,),
        )

    # ------------------------------------------------------------------ security profiles

    async def security_profile(self, station_id: str) -> int:
        """The station's OCPP security profile (1, 2 or 3); 1 for an unknown station."""
        row = await self.db.read_one(
            "SELECT security_profile FROM stations WHERE id = ?", (station_id,)
        )
        return int(row["security_profile"] or 1) if row else 1

    async def set_pending_security_profile(self, station_id: str, profile: int | None) -> bool:
        """Record (or, with None, cancel) a raise of the station's profile sent to it.
        Returns whether the station exists."""

        async def job(db: Tx) -> bool:
            rows = await db.execute_fetchall("SELECT id FROM stations WHERE id = ?", (station_id,))
            if not rows:
                return False
            await db.execute(
                "UPDATE stations SET pending_security_profile = ?, updated_at = ? WHERE id = ?",
                (profile, to_db(self.clock.now()), station_id),
            )
            return True

        return await self.db.write(job)

    async def commit_security_profile(self, station_id: str, profile: int) -> bool:
        """The station connected at its pending profile: make it its profile. Returns
        False when the pending profile changed meanwhile (nothing done)."""

        async def job(db: Tx) -> bool:
            rows = await db.execute_fetchall(
                "SELECT pending_security_profile FROM stations WHERE id = ?", (station_id,)
            )
            if not rows or rows[0][0] != profile:
                return False
            await db.execute(
                "UPDATE stations SET security_profile = ?, pending_security_profile = NULL, "
                "updated_at = ? WHERE id = ?",
                (profile, to_db(self.clock.now()), station_id),
            )
            return True

        return await self.db.write(job)

    async def get(self, station_id: str) -> dict[str, Any] | None:
        row = await self.db.read_one("SELECT * FROM stations WHERE id = ?", (station_id,))
        return self._full_row(row) if row else None

    async def page(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of stations in id order, and how many there are."""
        rows = await self.db.read(
            "SELECT * FROM stations ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
        total = await self.db.read_one("SELECT COUNT(*) AS n FROM stations")
        return [self._full_row(r) for r in rows], count(total)

    def _full_row(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        for key in ("definition", "boot_info", "config_snapshot"):
            row[key] = json_or(row[key])
        row["config_reasons"] = json_or(row["config_reasons"], [])
        seen = self._seen.get(row["id"])
        if seen is not None:
            row["last_seen_at"] = to_db(seen)
        return row

    async def with_connectors(
        self, station_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A defined station's identity and definition (not its boot info nor configuration
        snapshot) and its connector statuses, in one read: what building its OCPI Location
        needs, once per push."""
        rows = await self.db.read(
            "SELECT s.id, s.location_id, s.defined, s.defined_at, s.last_seen_at, s.definition, "
            "c.connector_id, c.status, c.received_at "
            "FROM stations s LEFT JOIN connector_status c ON c.station_id = s.id "
            "WHERE s.id = ? AND s.defined = 1 ORDER BY c.connector_id",
            (station_id,),
        )
        if not rows:
            return None
        connectors = [
            {
                "connector_id": r["connector_id"],
                "status": r["status"],
                "received_at": r["received_at"],
            }
            for r in rows
            if r["connector_id"] is not None
        ]
        row = {
            k: rows[0][k]
            for k in ("id", "location_id", "defined", "defined_at", "last_seen_at", "definition")
        }
        row["definition"] = json_or(row["definition"])
        seen = self._seen.get(station_id)
        if seen is not None:
            row["last_seen_at"] = to_db(seen)
        return row, connectors

    # the extensions' read model (SNAPSHOT_COLUMNS, as stored: the port decodes them)

    async def snapshot_rows_defined(self) -> list[dict[str, Any]]:
        """Every defined station, oldest first."""
        return await self.db.read(
            f"SELECT {SNAPSHOT_COLUMNS} FROM stations WHERE defined = 1 ORDER BY created_at, id"
        )

    async def snapshot_row(self, station_id: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            f"SELECT {SNAPSHOT_COLUMNS} FROM stations WHERE id = ?", (station_id,)
        )

    async def snapshot_rows(self, station_ids: Iterable[str]) -> list[dict[str, Any]]:
        """These stations (those that exist)."""
        ids = sorted(set(station_ids))
        if not ids:
            return []
        return await self.db.read(
            f"SELECT {SNAPSHOT_COLUMNS} FROM stations WHERE id IN "
            f"({self.db.dialect.json_values('?')})",
            (json.dumps(ids),),
        )

    async def snapshot_row_by_location(self, location_id: str) -> dict[str, Any] | None:
        """The defined station whose Location id this is (case-insensitive)."""
        return await self.db.read_one(
            f"SELECT {SNAPSHOT_COLUMNS} FROM stations "
            "WHERE location_id = ? COLLATE NOCASE AND defined = 1",
            (location_id,),
        )

    async def snapshot_rows_first_booted_since(self, since: datetime) -> list[dict[str, Any]]:
        """Stations whose first accepted boot is at or after ``since``, in that order."""
        return await self.db.read(
            f"SELECT {SNAPSHOT_COLUMNS} FROM stations "
            "WHERE first_boot_at IS NOT NULL AND first_boot_at >= ? ORDER BY first_boot_at",
            (to_db(since),),
        )

    async def ids(self, like: str | None, limit: int, offset: int) -> tuple[list[str], int]:
        """A page of station ids in id order, those whose id or Location id matches the
        LIKE pattern ``like`` (case-insensitive) when given; and how many in all."""
        where: str = ""
        params: list[Any] = []
        if like is not None:
            d = self.db.dialect
            where = f"WHERE {d.ilike('id')} OR {d.ilike('location_id')}"
            params = [like] * 2
        rows = await self.db.read(
            f"SELECT id FROM stations {where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM stations {where}", params)
        return [r["id"] for r in rows], count(total)
