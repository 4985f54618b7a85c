"""csms's durable store: stations, connectors, id tags, transactions, meter values, commands.

The engines (SQLite by default, PostgreSQL when ``database.url`` names it) live in
:mod:`csms.db`: group commit, savepoint per job, committed reads. A request is answered only
after what it says is committed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from .clock import Clock
from .config import Settings
from .db import Database, Dialect, Job, JobSuspended, Tx, open_database
from .meter import Sample
from .timeparse import ParsedTime, from_db, to_db

log = structlog.get_logger("csms.store")

T = TypeVar("T")


# what a store job gets (kept under its old name for the store's own jobs)
JobDb = Tx
__all__ = ["JobDb", "JobSuspended", "Store"]


def _dict(row: Any | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


def _json(text: str | None, default: Any = None) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True, slots=True)
class StartResult:
    transaction_id: int
    created: bool  # False when the same start was replayed


@dataclass(frozen=True, slots=True)
class StopResult:
    transaction_id: int | None  # None when the transaction is unknown to us
    connector_id: int | None
    outcome: str  # stopped | replayed | unknown_transaction
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MeterResult:
    transaction_id: int | None  # ours, when known
    unknown_transaction: bool


# how long a write of last-seen times waits for more stations (Store.persist_seen)
SEEN_GATHER = 0.025


class Store:
    # sampled values kept per transaction (ocpp.max_meter_values_per_transaction, set by the
    # application); the excess is counted in one meter_values_capped anomaly and flagged
    max_meter_values_per_transaction: int = 100_000

    def __init__(
        self,
        path: Path,
        clock: Clock,
        synchronous: str = "FULL",
        url: str | None = None,
    ) -> None:
        """csms's data on SQLite at ``path`` (the default), or on the engine ``url`` names
        (``postgresql://...``)."""
        self.path = path
        self.clock = clock
        self.db: Database = open_database(url, path, synchronous)
        self.db.add_migrations("csms", "csms.migrations")
        # last_seen_at, the newest per station (memory), and which are not yet written
        self._seen: dict[str, datetime] = {}
        self._seen_dirty: set[str] = set()
        self._seen_flush: asyncio.Future[None] | None = None

    @classmethod
    def for_settings(cls, settings: Settings, clock: Clock) -> Store:
        """The store a configuration names (``database.url``, else the SQLite file)."""
        db = settings.database
        return cls(settings.database_path, clock, db.synchronous, url=db.url)

    @property
    def engine(self) -> str:
        return self.db.engine

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    @property
    def commits(self) -> int:
        return self.db.commits

    @property
    def jobs(self) -> int:
        return self.db.jobs

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        if self.db.is_open:
            await self.flush_seen()
        await self.db.close()

    def add_migrations(self, component: str, package: str) -> None:
        """Let an extension (the OCPI bridge) version its own tables; call before open()."""
        self.db.add_migrations(component, package)

    async def schema_versions(self) -> dict[str, int]:
        return await self.db.schema_versions()

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` in the writer's transaction; return once it is committed."""
        return await self.db.write(job)

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return await self.db.read(sql, params)

    async def read_one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        return await self.db.read_one(sql, params)

    # ------------------------------------------------------------------ stations

    async def put_station(
        self,
        station_id: str,
        location_id: str,
        definition: dict[str, Any],
        connector_uids: dict[int, str],
        password_hash: str | None,
        keep_password: bool,
        boot_status: str,
    ) -> bool:
        """Create or replace a station's definition. Returns True when it was created.

        Raises ValueError when the Location id or an EVSE uid belongs to another station.
        """
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> bool:
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
                "SELECT password_hash FROM stations WHERE id = ?", (station_id,)
            )
            created = not existing
            pw = existing[0][0] if (existing and keep_password) else password_hash
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
            await db.execute("DELETE FROM evses WHERE station_id = ?", (station_id,))
            await db.executemany(
                "INSERT INTO evses (uid, station_id, connector_id) VALUES (?, ?, ?)",
                [(uid, station_id, cid) for cid, uid in connector_uids.items()],
            )
            return created

        return await self.write(job)

    async def ensure_undefined_station(self, station_id: str) -> None:
        """Record a station that connected while ``accept_unknown_stations`` is on."""
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "INSERT INTO stations (id, defined, created_at, updated_at) "
                "VALUES (?, 0, ?, ?) ON CONFLICT DO NOTHING",
                (station_id, now, now),
            )

        await self.write(job)

    async def station_auth(self, station_id: str) -> dict[str, Any] | None:
        """What the websocket handshake needs: does it exist, and its password hash."""
        return await self.read_one(
            "SELECT id, password_hash FROM stations WHERE id = ?", (station_id,)
        )

    async def get_station(self, station_id: str) -> dict[str, Any] | None:
        row = await self.read_one("SELECT * FROM stations WHERE id = ?", (station_id,))
        return self._station_row(row) if row else None

    async def station_and_connectors(
        self, station_id: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A defined station's identity and definition (not its boot info nor configuration
        snapshot) and its connector statuses, in one read: what building its OCPI Location
        needs, once per push."""
        rows = await self.read(
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
        row["definition"] = _json(row["definition"])
        seen = self._seen.get(station_id)
        if seen is not None:
            row["last_seen_at"] = to_db(seen)
        return row, connectors

    async def list_stations(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        rows = await self.read(
            "SELECT * FROM stations ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
        )
        total = await self.read_one("SELECT COUNT(*) AS n FROM stations")
        return [self._station_row(r) for r in rows], int(total["n"] if total else 0)

    def _station_row(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        for key in ("definition", "boot_info", "config_snapshot"):
            row[key] = _json(row[key])
        row["config_reasons"] = _json(row["config_reasons"], [])
        seen = self._seen.get(row["id"])
        if seen is not None:
            row["last_seen_at"] = to_db(seen)
        return row

    async def connector_statuses(self, station_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {sid: [] for sid in station_ids}
        if not station_ids:
            return out
        marks = ",".join("?" * len(station_ids))
        rows = await self.read(
            f"SELECT * FROM connector_status WHERE station_id IN ({marks}) "
            "ORDER BY station_id, connector_id",
            station_ids,
        )
        for r in rows:
            out[r["station_id"]].append(r)
        return out

    async def record_boot(
        self, station_id: str, payload: dict[str, Any], at: datetime
    ) -> tuple[str, bool]:
        """Store a BootNotification. Returns the station's boot status setting (Accepted,
        Pending or Rejected) and whether this is its first accepted boot (commissioning)."""
        t = to_db(at)

        async def job(db: JobDb) -> tuple[str, bool]:
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

        return await self.write(job)

    async def record_status(
        self,
        station_id: str,
        payload: dict[str, Any],
        timestamp: ParsedTime,
        at: datetime,
    ) -> None:
        async def job(db: JobDb) -> None:
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

        await self.write(job)

    async def set_station_field(self, station_id: str, column: str, value: str | None) -> None:
        if column not in ("diagnostics_status", "firmware_status"):
            raise ValueError(column)
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                f"UPDATE stations SET {column} = ?, updated_at = ? WHERE id = ?",
                (value, now, station_id),
            )

        await self.write(job)

    async def save_configuration_check(
        self,
        station_id: str,
        compliant: bool,
        reasons: list[str],
        snapshot: list[dict[str, Any]] | None,
        at: datetime,
    ) -> None:
        async def job(db: JobDb) -> None:
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

        await self.write(job)

    # last_seen_at changes on every frame: kept in memory, written in batches, and written at
    # once before anything that carries it leaves (persist_seen), so that no push carries a
    # time that a crash would take back.

    def touch_seen(self, station_id: str, at: datetime) -> None:
        old = self._seen.get(station_id)
        if old is None or at > old:
            self._seen[station_id] = at
            self._seen_dirty.add(station_id)

    def last_seen(self, station_id: str) -> datetime | None:
        return self._seen.get(station_id)

    async def flush_seen(self) -> None:
        if not self._seen_dirty or not self.db.is_open:
            return
        dirty, self._seen_dirty = self._seen_dirty, set()
        pending = [(at, sid, at) for sid in dirty for at in (to_db(self._seen[sid]),)]

        async def job(db: JobDb) -> None:
            await db.executemany(
                "UPDATE stations SET last_seen_at = ? WHERE id = ? "
                "AND (last_seen_at IS NULL OR last_seen_at < ?)",
                pending,
            )

        try:
            await self.write(job)
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

    async def status_log_since(
        self, station_ids: list[str], after: datetime
    ) -> list[dict[str, Any]]:
        """The StatusNotifications of these stations received after ``after``, in arrival
        order, each with the station's previous report of that connector before ``after``
        first (so the state at ``after`` is known)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(station_ids), 500):
            chunk = station_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out += await self.read(
                f"""SELECT station_id, connector_id, status, received_at FROM status_log
                    WHERE station_id IN ({marks}) AND (received_at > ? OR id IN (
                        SELECT MAX(id) FROM status_log WHERE station_id IN ({marks})
                        AND received_at <= ? GROUP BY station_id, connector_id))
                    ORDER BY station_id, id""",
                [*chunk, to_db(after), *chunk, to_db(after)],
            )
        return out

    async def prune_status_log(self, before: datetime) -> int:
        """Forget StatusNotifications received before ``before``, keeping each connector's
        latest."""

        async def job(db: JobDb) -> int:
            cur = await db.execute(
                """DELETE FROM status_log WHERE received_at < ? AND id NOT IN (
                       SELECT MAX(id) FROM status_log GROUP BY station_id, connector_id)""",
                (to_db(before),),
            )
            return cur.rowcount

        return await self.write(job)

    # ------------------------------------------------------------------ unknown stations

    async def record_unknown_station(self, station_id: str, remote: str | None) -> None:
        """Count a handshake of an id that is not defined: one row per id (attempts, first
        and last seen, last address). At most ``max_unknown_stations`` ids are kept (set by
        the application from ``ocpp.max_unknown_stations``): a new id beyond that forgets
        the least recently seen ones, counted in ``unknown_stations_dropped`` (ids) and
        ``unknown_attempts_dropped`` (their attempts)."""
        now = to_db(self.clock.now())
        cap = max(1, int(getattr(self, "max_unknown_stations", 1000)))

        async def job(db: JobDb) -> tuple[int, int]:
            cur = await db.execute(
                "UPDATE unknown_stations SET last_seen_at = ?, attempts = attempts + 1, "
                "last_remote_address = ? WHERE charge_point_id = ?",
                (now, remote, station_id),
            )
            if cur.rowcount:
                return 0, 0
            await db.execute(
                "INSERT INTO unknown_stations VALUES (?, ?, ?, 1, ?)",
                (station_id, now, now, remote),
            )
            count = (await db.execute_fetchall("SELECT COUNT(*) FROM unknown_stations"))[0][0]
            if count <= cap:
                return 0, 0
            victims = await db.execute_fetchall(
                "SELECT charge_point_id, attempts FROM unknown_stations "
                "WHERE charge_point_id != ? ORDER BY last_seen_at, charge_point_id LIMIT ?",
                (station_id, count - cap),
            )
            await db.executemany(
                "DELETE FROM unknown_stations WHERE charge_point_id = ?",
                [(v[0],) for v in victims],
            )
            return len(victims), sum(int(v[1]) for v in victims)

        ids, attempts = await self.write(job)
        if ids:
            self.unknown_stations_dropped = getattr(self, "unknown_stations_dropped", 0) + ids
            self.unknown_attempts_dropped = getattr(self, "unknown_attempts_dropped", 0) + attempts

    async def list_unknown_stations(
        self, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """The ids refused because they are not defined, most recently seen first, and how
        many there are."""
        where = """WHERE NOT EXISTS (SELECT 1 FROM stations s WHERE s.id = u.charge_point_id
                                     AND s.defined = 1)"""
        rows = await self.read(
            f"""SELECT u.* FROM unknown_stations u {where}
                ORDER BY u.last_seen_at DESC, u.charge_point_id LIMIT ? OFFSET ?""",
            (limit, offset),
        )
        total = await self.read_one(f"SELECT COUNT(*) AS n FROM unknown_stations u {where}")
        return rows, int(total["n"] if total else 0)

    # ------------------------------------------------------------------ id tags

    async def put_id_tag(
        self, id_tag: str, status: str, expiry_date: datetime | None, parent_id_tag: str | None
    ) -> bool:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> bool:
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

        return await self.write(job)

    async def delete_id_tag(self, id_tag: str) -> bool:
        async def job(db: JobDb) -> bool:
            cur = await db.execute("DELETE FROM id_tags WHERE id_tag = ?", (id_tag,))
            return cur.rowcount > 0

        return await self.write(job)

    async def get_id_tag(self, id_tag: str) -> dict[str, Any] | None:
        return await self.read_one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,))

    async def list_id_tags(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        rows = await self.read(
            "SELECT * FROM id_tags ORDER BY id_tag LIMIT ? OFFSET ?", (limit, offset)
        )
        total = await self.read_one("SELECT COUNT(*) AS n FROM id_tags")
        return rows, int(total["n"] if total else 0)

    async def has_active_transaction(self, id_tag: str, exclude_station: str | None) -> bool:
        row = await self.read_one(
            "SELECT 1 FROM transactions WHERE id_tag = ? COLLATE NOCASE "
            "AND stop_received_at IS NULL AND station_id != ? LIMIT 1",
            (id_tag, exclude_station or ""),
        )
        return row is not None

    # ------------------------------------------------------------------ transactions

    async def start_transaction(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        id_tag_status: str,
        meter_start: int,
        start: ParsedTime,
        reservation_id: int | None,
        flags: list[str],
        at: datetime,
        tag_owner: str | None = None,
        repaired: dict[str, Any] | None = None,
    ) -> StartResult:
        """Store a StartTransaction; the same start replayed gets the same id. ``repaired``
        (what had to be clamped or replaced to store it) is kept as an anomaly."""
        raw_time = start.original or to_db(start.value)
        key = f"{station_id}|{connector_id}|{id_tag.upper()}|{meter_start}|{raw_time}"

        async def job(db: JobDb) -> StartResult:
            rows = await db.execute_fetchall(
                "SELECT id FROM transactions WHERE start_key = ?", (key,)
            )
            if rows:
                return StartResult(int(rows[0][0]), created=False)
            cur = await db.execute(
                """INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status,
                       reservation_id, meter_start, start_time, start_time_raw,
                       start_received_at, start_key, flags, updated_at, tag_owner)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (
                    station_id,
                    connector_id,
                    id_tag,
                    id_tag_status,
                    reservation_id,
                    meter_start,
                    to_db(start.value),
                    start.original,
                    to_db(at),
                    key,
                    json.dumps(flags),
                    to_db(at),
                    tag_owner,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            if repaired is not None:
                await _insert_repaired(db, station_id, int(row[0]), repaired, to_db(at))
            return StartResult(int(row[0]), created=True)

        return await self.write(job)

    async def stop_transaction(
        self,
        station_id: str,
        transaction_id: int,
        meter_stop: int,
        stop: ParsedTime,
        reason: str | None,
        id_tag: str | None,
        samples: list[tuple[ParsedTime, list[Sample]]],
        payload: dict[str, Any],
        at: datetime,
        repaired: dict[str, Any] | None = None,
    ) -> StopResult:
        """Store a StopTransaction and its transactionData. Never refuses: a stop for a
        transaction we do not know is kept as an anomaly, a replayed stop changes nothing.
        ``repaired`` (what had to be clamped or replaced to store it) is kept as an anomaly
        and flags the transaction."""
        t_at = to_db(at)

        async def job(db: JobDb) -> StopResult:
            rows = await db.execute_fetchall(
                "SELECT connector_id, meter_start, start_time, stop_received_at, meter_stop, "
                "flags FROM transactions WHERE id = ? AND station_id = ?",
                (transaction_id, station_id),
            )
            if repaired is not None:
                known = transaction_id if rows else None
                await _insert_repaired(db, station_id, known, repaired, t_at)
            if not rows:
                await db.execute(
                    "INSERT INTO anomalies (station_id, kind, transaction_id, detail, "
                    "received_at) VALUES (?, 'stop_unknown_transaction', ?, ?, ?)",
                    (station_id, transaction_id, json.dumps(payload), t_at),
                )
                await _insert_samples(
                    db, station_id, 0, None, transaction_id, "StopTransaction", samples, t_at
                )
                return StopResult(None, None, "unknown_transaction", ("unknown_transaction",))
            connector_id, meter_start, start_time, stopped_at, old_stop, flags_text = rows[0]
            if stopped_at is not None:
                if old_stop != meter_stop:
                    await db.execute(
                        "INSERT INTO anomalies (station_id, kind, transaction_id, detail, "
                        "received_at) VALUES (?, 'second_stop', ?, ?, ?)",
                        (station_id, transaction_id, json.dumps(payload), t_at),
                    )
                return StopResult(transaction_id, connector_id, "replayed")
            flags = list(json.loads(flags_text))
            if repaired is not None:
                flags.extend(f for f in repaired.get("flags", ()) if f not in flags)
            if meter_stop < meter_start:
                flags.append("meter_backwards")
            if to_db(stop.value) < start_time:
                flags.append("stop_before_start")
            await db.execute(
                """UPDATE transactions SET meter_stop = ?, stop_time = ?, stop_time_raw = ?,
                       stop_reason = ?, stop_id_tag = ?, stop_received_at = ?, flags = ?,
                       updated_at = ?
                   WHERE id = ?""",
                (
                    meter_stop,
                    to_db(stop.value),
                    stop.original,
                    reason,
                    id_tag,
                    t_at,
                    json.dumps(flags),
                    t_at,
                    transaction_id,
                ),
            )
            samples_kept = await _cap_samples(
                db, station_id, transaction_id, samples, self.max_meter_values_per_transaction, t_at
            )
            await _insert_samples(
                db,
                station_id,
                connector_id,
                transaction_id,
                None,
                "StopTransaction",
                samples_kept,
                t_at,
            )
            if samples_kept is not samples:  # capped: flagged by _cap_samples
                flags = await _flags_of(db, transaction_id)
            return StopResult(transaction_id, connector_id, "stopped", tuple(flags))

        return await self.write(job)

    async def add_meter_values(
        self,
        station_id: str,
        connector_id: int,
        reported_transaction_id: int | None,
        samples: list[tuple[ParsedTime, list[Sample]]],
        at: datetime,
        repaired: dict[str, Any] | None = None,
    ) -> MeterResult:
        """Store a MeterValues; ``repaired`` (what had to be clamped or replaced to store
        it) is kept as an anomaly."""
        t_at = to_db(at)

        async def job(db: JobDb) -> MeterResult:
            ours: int | None = None
            unknown = False
            if reported_transaction_id is not None:
                rows = await db.execute_fetchall(
                    "SELECT id FROM transactions WHERE id = ? AND station_id = ?",
                    (reported_transaction_id, station_id),
                )
                if rows:
                    ours = reported_transaction_id
                    await db.execute(
                        "UPDATE transactions SET updated_at = ? WHERE id = ?", (t_at, ours)
                    )
                else:
                    unknown = True
                    await db.execute(
                        "INSERT INTO anomalies (station_id, kind, transaction_id, detail, "
                        "received_at) VALUES (?, 'meter_values_unknown_transaction', ?, ?, ?)",
                        (
                            station_id,
                            reported_transaction_id,
                            json.dumps({"connectorId": connector_id}),
                            t_at,
                        ),
                    )
            kept = samples
            if ours is not None:
                kept = await _cap_samples(
                    db, station_id, ours, samples, self.max_meter_values_per_transaction, t_at
                )
            await _insert_samples(
                db,
                station_id,
                connector_id,
                ours,
                reported_transaction_id if unknown else None,
                "MeterValues",
                kept,
                t_at,
            )
            if repaired is not None:
                await _insert_repaired(db, station_id, ours, repaired, t_at)
            return MeterResult(ours, unknown)

        return await self.write(job)

    async def get_transaction(
        self, transaction_id: int, count_meter_values: bool = False
    ) -> dict[str, Any] | None:
        """One transaction; with ``count_meter_values``, also ``meter_values_count``."""
        if not -(1 << 63) <= transaction_id < (1 << 63):
            return None  # SQLite could not hold it: no such transaction
        row = await self.read_one("SELECT * FROM transactions WHERE id = ?", (transaction_id,))
        if row is not None:
            row["flags"] = _json(row["flags"], [])
            if count_meter_values:
                n = await self.read_one(
                    "SELECT COUNT(*) AS n FROM meter_values WHERE transaction_id = ?",
                    (transaction_id,),
                )
                row["meter_values_count"] = int(n["n"] if n else 0)
        return row

    async def list_transactions(
        self,
        station_id: str | None,
        active: bool | None,
        since: datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = [], []
        if station_id is not None:
            where.append("station_id = ?")
            params.append(station_id)
        if active is not None:
            where.append("stop_received_at IS NULL" if active else "stop_received_at IS NOT NULL")
        if since is not None:
            where.append("start_time >= ?")
            params.append(to_db(since))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self.read(
            f"SELECT * FROM transactions {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.read_one(f"SELECT COUNT(*) AS n FROM transactions {clause}", params)
        for r in rows:
            r["flags"] = _json(r["flags"], [])
        return rows, int(total["n"] if total else 0)

    async def meter_values_of(
        self, transaction_id: int, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """A transaction's sampled values in time order; a page of them with ``limit``."""
        if limit is None:
            return await self.read(
                "SELECT * FROM meter_values WHERE transaction_id = ? ORDER BY timestamp, id",
                (transaction_id,),
            )
        return await self.read(
            "SELECT * FROM meter_values WHERE transaction_id = ? ORDER BY timestamp, id "
            "LIMIT ? OFFSET ?",
            (transaction_id, limit, offset),
        )

    async def active_transaction_on(
        self, station_id: str, connector_id: int
    ) -> dict[str, Any] | None:
        return await self.read_one(
            "SELECT * FROM transactions WHERE station_id = ? AND connector_id = ? "
            "AND stop_received_at IS NULL ORDER BY id DESC LIMIT 1",
            (station_id, connector_id),
        )

    async def anomalies(self, station_id: str | None = None) -> list[dict[str, Any]]:
        if station_id is None:
            rows = await self.read("SELECT * FROM anomalies ORDER BY id")
        else:
            rows = await self.read(
                "SELECT * FROM anomalies WHERE station_id = ? ORDER BY id", (station_id,)
            )
        for r in rows:
            r["detail"] = _json(r["detail"])
        return rows

    # ------------------------------------------------------------------ misc records

    async def record_data_transfer(
        self, station_id: str, payload: dict[str, Any], answer: str, at: datetime
    ) -> None:
        async def job(db: JobDb) -> None:
            await db.execute(
                "INSERT INTO data_transfers (station_id, vendor_id, message_id, data, answer, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    station_id,
                    payload["vendorId"],
                    payload.get("messageId"),
                    payload.get("data"),
                    answer,
                    to_db(at),
                ),
            )

        await self.write(job)

    async def command_started(
        self, station_id: str, action: str, request: dict[str, Any], origin: str
    ) -> int:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> int:
            cur = await db.execute(
                "INSERT INTO commands (station_id, action, request, outcome, origin, sent_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?) RETURNING id",
                (station_id, action, json.dumps(request), origin, now),
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self.write(job)

    async def command_finished(self, command_id: int, outcome: str, response: Any) -> None:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE commands SET outcome = ?, response = ?, finished_at = ? WHERE id = ?",
                (outcome, json.dumps(response), now, command_id),
            )

        await self.write(job)

    async def list_commands(
        self, station_id: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        clause, params = ("WHERE station_id = ?", [station_id]) if station_id else ("", [])
        rows = await self.read(
            f"SELECT * FROM commands {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.read_one(f"SELECT COUNT(*) AS n FROM commands {clause}", params)
        for r in rows:
            r["request"] = _json(r["request"])
            r["response"] = _json(r["response"])
        return rows, int(total["n"] if total else 0)


async def _insert_repaired(
    db: JobDb,
    station_id: str,
    transaction_id: int | None,
    repaired: dict[str, Any],
    received_at: str,
) -> None:
    """What a transaction message held that could not be stored as sent (integers beyond
    SQLite's 64 bits, clamped; lone surrogates, replaced), with the originals."""
    await db.execute(
        "INSERT INTO anomalies (station_id, kind, transaction_id, detail, received_at) "
        "VALUES (?, 'frame_repaired', ?, ?, ?)",
        (station_id, transaction_id, json.dumps(repaired), received_at),
    )


async def _cap_samples(
    db: JobDb,
    station_id: str,
    transaction_id: int,
    samples: list[tuple[ParsedTime, list[Sample]]],
    cap: int,
    received_at: str,
) -> list[tuple[ParsedTime, list[Sample]]]:
    """The samples that still fit under ``cap`` sampled values for the transaction. What
    does not fit is not stored: the frame is still answered, the transaction is flagged
    ``meter_values_capped`` once, and one anomaly per transaction counts the values left
    out (``detail.dropped``). The count reads at most ``cap`` index entries."""
    incoming = sum(len(values) for _, values in samples)
    if not incoming:
        return samples
    rows = await db.execute_fetchall(
        "SELECT COUNT(*) FROM "
        "(SELECT 1 FROM meter_values WHERE transaction_id = ? LIMIT ?) AS capped",
        (transaction_id, cap),
    )
    room = cap - int(rows[0][0])
    if incoming <= room:
        return samples
    kept: list[tuple[ParsedTime, list[Sample]]] = []
    for ts, values in samples:
        if room <= 0:
            break
        part = values[:room]
        kept.append((ts, part))
        room -= len(part)
    dropped = incoming - sum(len(values) for _, values in kept)
    old = await db.execute_fetchall(
        "SELECT id, detail FROM anomalies "
        "WHERE transaction_id = ? AND kind = 'meter_values_capped'",
        (transaction_id,),
    )
    if old:
        detail = _json(old[0]["detail"], {})
        detail["dropped"] = int(detail.get("dropped", 0)) + dropped
        await db.execute(
            "UPDATE anomalies SET detail = ?, received_at = ? WHERE id = ?",
            (json.dumps(detail), received_at, old[0]["id"]),
        )
    else:
        await db.execute(
            "INSERT INTO anomalies (station_id, kind, transaction_id, detail, received_at) "
            "VALUES (?, 'meter_values_capped', ?, ?, ?)",
            (station_id, transaction_id, json.dumps({"cap": cap, "dropped": dropped}), received_at),
        )
        flags = await _flags_of(db, transaction_id)
        if "meter_values_capped" not in flags:
            await db.execute(
                "UPDATE transactions SET flags = ? WHERE id = ?",
                (json.dumps([*flags, "meter_values_capped"]), transaction_id),
            )
    return kept


async def _flags_of(db: JobDb, transaction_id: int) -> list[str]:
    rows = await db.execute_fetchall(
        "SELECT flags FROM transactions WHERE id = ?", (transaction_id,)
    )
    return list(json.loads(rows[0][0])) if rows and rows[0][0] else []


async def _insert_samples(
    db: JobDb,
    station_id: str,
    connector_id: int,
    transaction_id: int | None,
    reported_transaction_id: int | None,
    source: str,
    samples: list[tuple[ParsedTime, list[Sample]]],
    received_at: str,
) -> None:
    rows = []
    for ts, values in samples:
        t, raw = to_db(ts.value), ts.original
        for s in values:
            rows.append(
                (
                    station_id,
                    connector_id,
                    transaction_id,
                    reported_transaction_id,
                    source,
                    t,
                    raw,
                    s.measurand,
                    s.phase,
                    s.unit,
                    s.context,
                    s.location,
                    s.format,
                    s.value_raw,
                    s.value,
                    s.norm_unit,
                    received_at,
                )
            )
    if rows:
        await db.executemany(
            """INSERT INTO meter_values (station_id, connector_id, transaction_id,
                   reported_transaction_id, source, timestamp, timestamp_raw, measurand, phase,
                   unit, context, location, format, value_raw, value, norm_unit, received_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            rows,
        )


__all__ = ["MeterResult", "StartResult", "StopResult", "Store", "from_db", "to_db"]
