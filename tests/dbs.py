"""Which engine the suite runs on, and engine-neutral ways for tests to reach its data.

``CSMS_TEST_DATABASE=postgresql`` runs the suite on PostgreSQL (default ``sqlite``). There,
tests/conftest.py gives each test a fresh database and points ``CSMS_DATABASE__URL`` at it;
the helpers here follow that variable, so a test written against "the database under
``tmp_path``" runs on either engine unchanged.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from csms.clock import Clock
from csms.db.postgres import numbered
from csms.store import Store
from tests.pg import PgServer

ENGINE_ENV = "CSMS_TEST_DATABASE"
# read once, at import: tests/conftest.py then removes it from the environment (csms's own
# settings would take any CSMS_* variable for a key of theirs)
ENGINE = os.environ.get(ENGINE_ENV, "sqlite").strip().lower() or "sqlite"
if ENGINE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"CSMS_TEST_DATABASE must be sqlite or postgresql, not {ENGINE!r}")
POSTGRES = ENGINE == "postgresql"
URL_ENV = "CSMS_DATABASE__URL"

_server: PgServer | None = None
# unique per process: two pytest processes may share one server (CSMS_TEST_POSTGRES_URL)
_PREFIX = f"csms_t{os.getpid()}"
_TEMPLATE = f"{_PREFIX}_template"
_names = itertools.count(1)


def server() -> PgServer:
    """The session's PostgreSQL server, started (with its empty template) on first use."""
    global _server
    if _server is None:
        s = PgServer().start()
        try:
            s.drop_database(_TEMPLATE)
            # copying a small template is much faster than a database from template1, and
            # the template holds exactly what a fresh installation's database holds: nothing
            s.execute(
                f'CREATE DATABASE "{_TEMPLATE}" TEMPLATE template0 ENCODING UTF8 '
                "LC_COLLATE 'C' LC_CTYPE 'C' IS_TEMPLATE true"
            )
        except BaseException:
            s.stop()
            raise
        _server = s
    return _server


def stop_server() -> None:
    """At the end of the session: our template dropped (on a shared server), ours stopped."""
    global _server
    if _server is None:
        return
    s, _server = _server, None
    try:
        s.execute(f'ALTER DATABASE "{_TEMPLATE}" IS_TEMPLATE false')
        s.drop_database(_TEMPLATE)
    finally:
        s.stop()


def create_database() -> tuple[str, str]:
    """A fresh, empty PostgreSQL database: (name, url)."""
    s = server()
    name = f"{_PREFIX}_{next(_names)}"
    return name, s.create_database(name, template=_TEMPLATE)


def drop_database(name: str) -> None:
    if _server is not None:
        _server.drop_database(name)


@dataclass(frozen=True)
class DatabaseUnderTest:
    """Where a test's data lives: the SQLite file ``path``, or on PostgreSQL ``url``."""

    path: Path
    url: str | None = None

    @property
    def engine(self) -> str:
        return "postgresql" if self.url else "sqlite"

    def store(self, clock: Clock, synchronous: str = "NORMAL") -> Store:
        """A store on this database (not yet opened)."""
        return Store(self.path, clock, synchronous, url=self.url)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Direct]:
        """A connection of its own, beside any running store, for a test to look or to
        tamper (e.g. set a database back to an older schema); committed on success."""
        conn: Direct
        if self.url:
            pg = await asyncpg.connect(self.url)
            conn = _PgDirect(pg)
        else:
            conn = _SqliteDirect(sqlite3.connect(self.path))
        try:
            await conn.begin()
            yield conn
            await conn.commit()
        finally:
            await conn.close()


def database_at(path: Path) -> DatabaseUnderTest:
    """The test's database: the SQLite file at ``path``, or in PostgreSQL mode the test's own
    database (``CSMS_DATABASE__URL``, set by conftest for each test)."""
    if POSTGRES:
        url = os.environ.get(URL_ENV)
        if not url:
            raise RuntimeError(f"{URL_ENV} is not set: is tests/conftest.py loaded?")
        return DatabaseUnderTest(path, url)
    return DatabaseUnderTest(path)


@contextmanager
def own_database(path: Path) -> Iterator[DatabaseUnderTest]:
    """A database that outlives one test (a module's fixture): in PostgreSQL mode a new one,
    dropped at the end; in SQLite mode the file at ``path``."""
    if not POSTGRES:
        yield DatabaseUnderTest(path)
        return
    name, url = create_database()
    try:
        yield DatabaseUnderTest(path, url)
    finally:
        drop_database(name)


def store_for_test(
    tmp_path: Path, clock: Clock, synchronous: str = "NORMAL", name: str = "csms.sqlite3"
) -> Store:
    """A store on the test's database (``tmp_path / name`` on SQLite); not yet opened."""
    return database_at(tmp_path / name).store(clock, synchronous)


class Direct(ABC):
    """A plain connection, ``?`` placeholders on both engines; rows as tuples."""

    @abstractmethod
    async def begin(self) -> None:
        """Start the transaction the statements run in."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement, once per row."""

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def commit(self) -> None:
        """Commit what was done."""

    @abstractmethod
    async def close(self) -> None:
        """Close (what was not committed is lost)."""


class _SqliteDirect(Direct):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    async def begin(self) -> None:
        pass  # sqlite3 opens a transaction at the first write

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._c.execute(sql, tuple(params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._c.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._c.execute(sql, tuple(params)).fetchall()]

    async def commit(self) -> None:
        self._c.commit()

    async def close(self) -> None:
        self._c.close()


class _PgDirect(Direct):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn
        self._tx: Any = None

    async def begin(self) -> None:
        self._tx = self._c.transaction()
        await self._tx.start()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._c.execute(numbered(sql), *params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._c.executemany(numbered(sql), [tuple(r) for r in rows])

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self._c.fetch(numbered(sql), *params)]

    async def commit(self) -> None:
        if self._tx is None:
            return
        # rows a test inserted with explicit ids: let generated ids go on after them, as
        # SQLite's do
        for table, column in await self._c.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'"
        ):
            await self._c.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"MAX({column})) FROM {table} HAVING MAX({column}) IS NOT NULL"
            )
        await self._tx.commit()
        self._tx = None

    async def close(self) -> None:
        if self._tx is not None:
            await self._tx.rollback()
            self._tx = None
        await self._c.close()
