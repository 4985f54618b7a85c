"""The durable store: SQLite through aiosqlite, WAL, versioned migrations, one writer.

Writes are *jobs* (an async function of the writer connection) handed to :meth:`Store.write`.
The writer runs every job waiting in its queue inside one transaction, each job in its own
savepoint, commits once, and only then tells each caller its result: a request is answered
only after what it says is committed, and under load many requests share one commit (group
commit), which is what makes ``synchronous = FULL`` affordable.

A whole batch runs in the writer's own thread in one hand-over: jobs keep aiosqlite's
coroutine API (``await db.execute(...)``), but the connection they get (:class:`JobDb`)
answers at once, so each job's coroutine runs to its end without suspending and the event
loop is not woken once per statement. (Through aiosqlite every statement was a round trip
between threads, five to ten per job: a large part of the server's CPU under load.) A job
must therefore await nothing but its connection.

Reads go through a second, read-only connection, which in WAL mode never waits for the
writer and sees only committed data.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from .clock import Clock
from .meter import Sample
from .timeparse import ParsedTime, from_db, to_db

log = structlog.get_logger("csms.store")

T = TypeVar("T")


class JobCursor:
    """The cursor a job's statement returns (aiosqlite's API, answered at once)."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def fetchone(self) -> sqlite3.Row | None:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[sqlite3.Row]:
        return self._cursor.fetchall()


class JobDb:
    """The writer connection as a job sees it: the subset of aiosqlite's API our jobs use,
    over the sqlite3 connection of the writer thread, never suspending."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> JobCursor:
        return JobCursor(self._conn.execute(sql, tuple(parameters)))

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> JobCursor:
        return JobCursor(self._conn.executemany(sql, seq))

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, tuple(parameters)).fetchall()

    async def execute_insert(self, sql: str, parameters: Iterable[Any] = ()) -> Any:
        self._conn.execute(sql, tuple(parameters))
        return self._conn.execute("SELECT last_insert_rowid()").fetchone()


Job = Callable[[JobDb], Awaitable[T]]


class JobSuspended(RuntimeError):
    """A job awaited something other than its database connection."""


def _drive(coro: Any) -> Any:
    """Run a job's coroutine to its end in this thread; it must not suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise JobSuspended("a store job may await only its database connection")


MAX_BATCH = 500


def _migrations(package: str) -> list[tuple[int, str, str]]:
    """The ``NNNN_name.sql`` files of a package, in order."""
    out = []
    for entry in resources.files(package).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements. Our migrations keep `--` and `;` out of string
    literals, so comments can be cut at `--` and statements at `;`."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
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

    def __init__(self, path: Path, clock: Clock, synchronous: str = "FULL") -> None:
        self.path = path
        self.clock = clock
        self.synchronous = synchronous
        self._w: sqlite3.Connection | None = None  # used in the writer thread only
        self._thread: ThreadPoolExecutor | None = None
        self._r: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[tuple[Job[Any], asyncio.Future[Any]] | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        # last_seen_at, the newest per station (memory), and which are not yet written
        self._seen: dict[str, datetime] = {}
        self._seen_dirty: set[str] = set()
        self._seen_flush: asyncio.Future[None] | None = None
        self._components: dict[str, str] = {"csms": "csms.migrations"}
        self.commits = 0
        self.jobs = 0

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        self._private_files()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        await self._in_writer(self._connect_writer)
        await self._migrate()
        self._r = await aiosqlite.connect(self.path, isolation_level=None)
        self._r.row_factory = sqlite3.Row
        await self._r.execute("PRAGMA query_only = ON")
        await self._r.execute("PRAGMA busy_timeout = 5000")
        self._writer_task = asyncio.create_task(self._writer(), name="store-writer")

    def _private_files(self) -> None:
        """The database holds secrets: its directory (when we make it) is 0700, the database
        and its -wal/-shm 0600 whatever the umask (SQLite gives -wal/-shm the database
        file's mode), and files an older version left readable to others are fixed."""
        import os

        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
            os.chmod(parent, 0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o777 != 0o600:
                try:
                    os.fchmod(fd, 0o600)
                except OSError as e:
                    log.warning(
                        "cannot make the database private", path=str(self.path), error=str(e)
                    )
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm", "-journal"):
            extra = self.path.with_name(self.path.name + suffix)
            try:
                if extra.stat().st_mode & 0o777 != 0o600:
                    os.chmod(extra, 0o600)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot make a database file private", path=str(extra), error=str(e))

    def _connect_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        self._w = conn

    def _close_writer(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        if self._writer_task is not None:
            await self.flush_seen()
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._r is not None:
            await self._r.close()
            self._r = None
        if self._thread is not None:
            await self._in_writer(self._close_writer)
            self._thread.shutdown()
            self._thread = None

    def add_migrations(self, component: str, package: str) -> None:
        """Let an extension (the OCPI bridge) version its own tables; call before open()."""
        self._components[component] = package

    async def _migrate(self) -> None:
        await self._in_writer(self._migrate_sync)

    def _migrate_sync(self) -> None:
        db = self._w
        assert db is not None
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
            "version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
            "PRIMARY KEY (component, version))"
        )
        for component, package in self._components.items():
            for version, name, script in _migrations(package):
                # decided under the write lock: another process may be migrating too
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute(
                    "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?",
                    (component, version),
                ).fetchall()
                if rows:
                    db.execute("ROLLBACK")
                    continue
                log.info("applying migration", component=component, migration=name)
                try:
                    for statement in _split_sql(script):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                        (component, version, name, to_db(self.clock.now())),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.read(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {r["component"]: int(r["v"]) for r in rows}

    # ------------------------------------------------------------------ writer

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` in the writer's transaction; return once it is committed."""
        if self._writer_task is None:
            raise RuntimeError("store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, fut))
        return await asyncio.shield(fut)

    async def _writer(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                outcomes = await self._in_writer(self._run_batch, [job for job, _ in batch])
            except Exception as e:  # the thread itself failed: nothing was committed
                log.exception("writer failed", jobs=len(batch))
                outcomes = [(False, e)] * len(batch)
            self._settle(batch, outcomes)

    def _run_batch(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        """In the writer thread: every job in its savepoint, one commit."""
        db = self._w
        assert db is not None
        view = JobDb(db)
        outcomes: list[tuple[bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for job in jobs:
                db.execute("SAVEPOINT job")
                try:
                    result = _drive(job(view))
                except Exception as e:  # one bad job must not spoil the batch
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    outcomes.append((False, e))
                else:
                    db.execute("RELEASE job")
                    outcomes.append((True, result))
            db.execute("COMMIT")
            self.commits += 1
            self.jobs += len(jobs)
        except Exception as e:
            log.exception("commit failed", jobs=len(jobs))
            if db.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(False, e)] * len(jobs)
        return outcomes

    @staticmethod
    def _settle(
        batch: list[tuple[Job[Any], asyncio.Future[Any]]], outcomes: list[tuple[bool, Any]]
    ) -> None:
        for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    # ------------------------------------------------------------------ reads

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        assert self._r is not None, "store is not open"
        rows = await self._r.execute_fetchall(sql, tuple(params))
        return [dict(r) for r in rows]

    async def read_one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        rows = await self.read(sql, params)
        return rows[0] if rows else None

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
                "INSERT OR IGNORE INTO stations (id, defined, created_at, updated_at) "
                "VALUES (?, 0, ?, ?)",
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
        row = await self.read_one(
            "SELECT id, location_id, defined, defined_at, last_seen_at, definition, "
            "(SELECT json_group_array(json_array(connector_id, status, received_at)) "
            " FROM connector_status c WHERE c.station_id = s.id) AS connectors "
            "FROM stations s WHERE id = ? AND defined = 1",
            (station_id,),
        )
        if row is None:
            return None
        connectors = sorted(
            (
                {"connector_id": c[0], "status": c[1], "received_at": c[2]}
                for c in json.loads(row.pop("connectors"))
            ),
            key=lambda c: c["connector_id"],
        )
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
        if not self._seen_dirty or self._writer_task is None:
            return
        dirty, self._seen_dirty = self._seen_dirty, set()
        pending = [(to_db(self._seen[sid]), sid) for sid in dirty]

        async def job(db: JobDb) -> None:
            await db.executemany(
                "UPDATE stations SET last_seen_at = ?1 WHERE id = ?2 "
                "AND (last_seen_at IS NULL OR last_seen_at < ?1)",
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
            row = await db.execute_insert(
                """INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status,
                       reservation_id, meter_start, start_time, start_time_raw,
                       start_received_at, start_key, flags, updated_at, tag_owner)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
            row = await db.execute_insert(
                "INSERT INTO commands (station_id, action, request, outcome, origin, sent_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)",
                (station_id, action, json.dumps(request), origin, now),
            )
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
        "SELECT COUNT(*) FROM (SELECT 1 FROM meter_values WHERE transaction_id = ? LIMIT ?)",
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
    cur = await db.execute(
        "UPDATE anomalies SET detail = json_set(detail, '$.dropped', "
        "json_extract(detail, '$.dropped') + ?), received_at = ? "
        "WHERE transaction_id = ? AND kind = 'meter_values_capped'",
        (dropped, received_at, transaction_id),
    )
    if not cur.rowcount:
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
