"""PostgreSQL through asyncpg: one writer connection with group commit, a pool for reads.

The writer keeps SQLite's model (and its guarantees): jobs queue, a batch runs in one
transaction with a savepoint per job, one commit, then every caller is answered. Jobs really
await here. Reads come from a small pool and see only committed data.

SQL keeps SQLite's ``?`` placeholders; they are numbered (``$1, $2...``) once per statement
text. ``numeric`` results (``SUM``, ``AVG``) come back as ``int`` or ``float``, as SQLite gives
them, not as ``Decimal``. PostgreSQL's text cannot hold NUL (U+0000), which SQLite keeps:
a NUL in a string parameter (a hostile station's vendor id, say) is stored as U+FFFD, the
replacement character, on the way in, so such a frame is stored and answered as on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from .base import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    IntegrityError,
    Job,
    Tx,
    log,
    migrations,
    redact_url,
    split_sql,
)

# readers at most (the writer is one more connection)
READ_POOL_SIZE = 8
# the advisory lock that serialises migrations between processes ("csms" in ASCII)
MIGRATION_LOCK = 0x63736D73
_ROW_VERBS = ("SELECT", "WITH", "VALUES", "SHOW")

_numbered: dict[str, str] = {}


def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2...``, outside quotes and comments; cached."""
    out = _numbered.get(sql)
    if out is not None:
        return out
    parts: list[str] = []
    n = 0
    i = 0
    quote = ""
    while i < len(sql):
        c = sql[i]
        if quote:
            parts.append(c)
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            parts.append(c)
        elif c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            parts.append(sql[i:end])
            i = end
            continue
        elif c == "?":
            n += 1
            parts.append(f"${n}")
        else:
            parts.append(c)
        i += 1
    out = "".join(parts)
    if len(_numbered) < 10_000:
        _numbered[sql] = out
    return out


# what a lost or refused connection raises (the server down, restarting, or unreachable)
_GONE = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)


def _unavailable(e: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(f"PostgreSQL is unavailable: {type(e).__name__}: {e}")


def _args(parameters: Iterable[Any]) -> tuple[Any, ...]:
    """The parameters, with NUL in strings replaced (see the module's docstring)."""
    args = tuple(parameters)
    for a in args:
        if isinstance(a, str) and "\x00" in a:
            return tuple(x.replace("\x00", "\ufffd") if isinstance(x, str) else x for x in args)
    return args


def _returns_rows(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head in _ROW_VERBS or " RETURNING " in sql.upper().replace("\n", " ")


def _numeric(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=_numeric, schema="pg_catalog", format="text"
    )


class _PgCursor:
    __slots__ = ("_rowcount", "_rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self._rowcount = rowcount

    @property
    def rowcount(self) -> int:
        return self._rowcount

    async def fetchone(self) -> Any | None:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[Any]:
        return list(self._rows)


class _PgTx:
    __slots__ = ("_conn",)
    engine = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> _PgCursor:
        args = _args(parameters)
        try:
            if _returns_rows(sql):
                rows = await self._conn.fetch(numbered(sql), *args)
                return _PgCursor(rows, len(rows))
            status = await self._conn.execute(numbered(sql), *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e
        try:
            count = int(status.rsplit(" ", 1)[-1])
        except ValueError:
            count = -1
        return _PgCursor([], count)

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        rows = [_args(r) for r in seq]
        if not rows:
            return
        try:
            await self._conn.executemany(numbered(sql), rows)
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]:
        try:
            return await self._conn.fetch(numbered(sql), *_args(parameters))
        except asyncpg.IntegrityConstraintViolationError as e:
            raise IntegrityError(str(e)) from e


class PostgresDatabase(Database):
    engine = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._w: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._notify: str | None = None

    def notify_on_commit(self, channel: str) -> None:
        """``NOTIFY channel`` with every commit of this writer: the other processes'
        listeners (:meth:`dedicated`) learn that there is something new to read."""
        if not channel.isidentifier():
            raise ValueError(f"not a channel name: {channel!r}")
        self._notify = channel

    async def dedicated(self) -> asyncpg.Connection:
        """A connection of the caller's own (LISTEN, a session's advisory lock), outside
        the writer and the pool; the caller closes it. Raises DatabaseUnavailable."""
        try:
            return await self._new_connection()
        except _GONE as e:
            raise _unavailable(e) from e

    def describe(self) -> str:
        return redact_url(self.url)

    async def _connect(self) -> None:
        try:
            self._w = await self._new_connection()
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=READ_POOL_SIZE, init=_init_connection
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            await self._disconnect()
            raise DatabaseError(f"cannot reach PostgreSQL at {self.describe()}: {e}") from e

    async def _new_connection(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.url)
        await _init_connection(conn)
        return conn

    async def _disconnect(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._w is not None:
            await self._w.close()
            self._w = None

    async def _migrate(self) -> None:
        db = self._w
        assert db is not None
        # one process migrates at a time; the others wait, then find nothing to do
        await db.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, "
                "version INTEGER NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
                "PRIMARY KEY (component, version))"
            )
            for component, package in self._components.items():
                done = {
                    r["version"]
                    for r in await db.fetch(
                        "SELECT version FROM schema_migrations WHERE component = $1", component
                    )
                }
                for version, name, script in migrations(package, self.engine):
                    if version in done:
                        continue
                    log.info("applying migration", component=component, migration=name)
                    async with db.transaction():
                        for statement in split_sql(script):
                            await db.execute(statement)
                        await db.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2, $3, $4)",
                            component,
                            version,
                            name,
                            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        )
        finally:
            await db.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _run_batch(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        outcomes = await self._run_batch_on_writer(jobs)
        return [
            (ok, _unavailable(v) if not ok and isinstance(v, _GONE) else v) for ok, v in outcomes
        ]

    async def _run_batch_on_writer(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        if self._w is None or self._w.is_closed():
            try:
                self._w = await self._new_connection()
            except _GONE as e:
                log.warning("database unavailable", error=f"{type(e).__name__}: {e}")
                return [(False, e)] * len(jobs)
        db = self._w
        view = _PgTx(db)
        outcomes: list[tuple[bool, Any]] = []
        tr = db.transaction()
        try:
            await tr.start()
            for job in jobs:
                sp = db.transaction()
                await sp.start()
                try:
                    result = await job(view)
                except Exception as e:  # one bad job must not spoil the batch
                    await sp.rollback()
                    outcomes.append((False, e))
                else:
                    await sp.commit()
                    outcomes.append((True, result))
            if self._notify is not None:  # (sent by PostgreSQL at the commit, not before)
                await db.execute(f"NOTIFY {self._notify}")
            await tr.commit()
            self.commits += 1
            self.jobs += len(jobs)
        except Exception as e:
            log.exception("commit failed", jobs=len(jobs))
            try:
                if db.is_closed():
                    raise ConnectionError("the writer's connection is closed")
                await tr.rollback()
            except Exception:  # the connection is unusable: it is replaced at the next batch
                db.terminate()
                self._w = None
            outcomes = [(False, e)] * len(jobs)
        except asyncio.CancelledError:
            db.terminate()
            self._w = None
            raise
        return outcomes

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        assert self._pool is not None, "store is not open"
        try:
            rows = await self._pool.fetch(numbered(sql), *_args(params))
        except _GONE as e:
            raise _unavailable(e) from e
        return [dict(r) for r in rows]

    @staticmethod
    async def _probe_job(tx: Tx) -> None:
        """A transaction id assigned and committed: a real write to the WAL."""
        await tx.execute("SELECT txid_current()")
