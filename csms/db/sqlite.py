"""SQLite, the embedded default: WAL, one writer thread, a read-only reader connection.

A whole batch of jobs runs in the writer's own thread in one hand-over: jobs keep the
coroutine API (``await tx.execute(...)``), but the connection they get (:class:`_SqliteTx`)
answers at once, so each job's coroutine runs to its end without suspending and the event loop
is not woken once per statement (through aiosqlite every statement was a round trip between
threads, five to ten per job: a large part of the server's CPU under load). A job must
therefore await nothing but its connection.

Reads go through a second, read-only connection, which in WAL mode never waits for the writer
and sees only committed data.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .base import Database, IntegrityError, Job, JobSuspended, Tx, log, migrations, split_sql

T = TypeVar("T")

# SQLite's own wait for a lock (each attempt), and how long a batch waits in all for the
# write lock another process holds (see _begin)
BUSY_TIMEOUT_MS = 5000
LOCK_WAIT = 30.0


class _SqliteCursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> sqlite3.Row | None:
        return self._cursor.fetchone()

    async def fetchall(self) -> list[sqlite3.Row]:
        return self._cursor.fetchall()


class _SqliteTx:
    """The writer connection as a job sees it, never suspending."""

    __slots__ = ("_conn",)
    engine = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _SqliteCursor:
        try:
            return _SqliteCursor(self._conn.execute(sql, tuple(parameters)))
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        try:
            self._conn.executemany(sql, seq)
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, tuple(parameters)).fetchall()
        except sqlite3.IntegrityError as e:
            raise IntegrityError(str(e)) from e


def _drive(coro: Any) -> Any:
    """Run a job's coroutine to its end in this thread; it must not suspend."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise JobSuspended("a store job may await only its database connection")


class SqliteDatabase(Database):
    engine = "sqlite"

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        super().__init__()
        self.path = path
        self.synchronous = synchronous
        self._w: sqlite3.Connection | None = None  # used in the writer thread only
        self._thread: ThreadPoolExecutor | None = None
        self._r: aiosqlite.Connection | None = None

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def _connect(self) -> None:
        self._private_files()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        await self._in_writer(self._connect_writer)

    async def _migrate(self) -> None:
        await self._in_writer(self._migrate_sync)
        self._r = await aiosqlite.connect(self.path, isolation_level=None)
        self._r.row_factory = sqlite3.Row
        await self._r.execute("PRAGMA query_only = ON")
        await self._r.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def _disconnect(self) -> None:
        if self._r is not None:
            await self._r.close()
            self._r = None
        if self._thread is not None:
            await self._in_writer(self._close_writer)
            self._thread.shutdown()
            self._thread = None

    def _private_files(self) -> None:
        """The database holds secrets: its directory (when we make it) is 0700, the database
        and its -wal/-shm 0600 whatever the umask (SQLite gives -wal/-shm the database
        file's mode), and files an older version left readable to others are fixed."""
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
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._w = conn

    def _close_writer(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._thread is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _migrate_sync(self) -> None:
        db = self._w
        assert db is not None
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
            "version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
            "PRIMARY KEY (component, version))"
        )
        for component, package in self._components.items():
            for version, name, script in migrations(package, self.engine):
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
                    for statement in split_sql(script):
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                        (component, version, name, _now_text()),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

    async def _run_batch(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        return await self._in_writer(self._run_batch_sync, jobs)

    def _run_batch_sync(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        """In the writer thread: every job in its savepoint, one commit."""
        db = self._w
        assert db is not None
        view = _SqliteTx(db)
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._begin(db)
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

    def _begin(self, db: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting up to LOCK_WAIT seconds for another process's writer
        (csms's delivery process writes the same file): SQLite's busy handler gives up
        after busy_timeout, and a writer that commits batch after batch can keep the other
        from its turn that long under load. Nothing has run yet, so trying again is safe."""
        deadline = time.monotonic() + LOCK_WAIT
        waited = False
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                if waited:
                    log.info("database lock obtained after waiting for another process")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.warning("database locked by another process: waiting", error=str(e))
                    waited = True
                time.sleep(0.005)

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        assert self._r is not None, "store is not open"
        rows = await self._r.execute_fetchall(sql, tuple(params))
        return [dict(r) for r in rows]

    @staticmethod
    async def _probe_job(tx: Tx) -> None:
        """The database header's user_version, rewritten unchanged."""
        rows = await tx.execute_fetchall("PRAGMA user_version")
        await tx.execute(f"PRAGMA user_version = {int(rows[0][0])}")


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
