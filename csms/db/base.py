"""What both engines share: the job interface, the group-commit writer queue, the dialect."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog

log = structlog.get_logger("csms.db")

T = TypeVar("T")

# jobs committed together at most
MAX_BATCH = 500


class DatabaseError(RuntimeError):
    """The database could not be opened, migrated or reached."""


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached right now (down, restarting, network): the
    request was not carried out; trying again later may succeed."""


class IntegrityError(DatabaseError):
    """A constraint refused a write (unique key, foreign key, not null)."""


class JobSuspended(RuntimeError):
    """A SQLite job awaited something other than its database connection."""


class TxCursor(Protocol):
    """What a statement run by a job returns."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any | None: ...

    async def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """The writer's connection as a job sees it. Rows support ``row["column"]``, ``row[0]``
    and ``dict(row)``. A SQLite job must await nothing but this connection."""

    engine: str

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> TxCursor: ...

    async def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None: ...

    async def execute_fetchall(self, sql: str, parameters: Iterable[Any] = ()) -> list[Any]: ...


Job = Callable[[Tx], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The few SQL fragments that differ between the engines."""

    engine: str  # "sqlite" | "postgresql"

    def json_text(self, expr: str, *path: str | int) -> str:
        """The text (or number, as text) at ``path`` inside the JSON text ``expr``."""
        if self.engine == "sqlite":
            return f"json_extract({expr}, '{_json_path(path)}')"
        keys = ",".join(str(p) for p in path)
        return f"(CAST({expr} AS jsonb) #>> '{{{keys}}}')"

    def json_length(self, expr: str, *path: str | int) -> str:
        """The length of the JSON array at ``path`` inside ``expr`` (NULL when absent)."""
        if self.engine == "sqlite":
            return f"json_array_length({expr}, '{_json_path(path)}')"
        keys = ",".join(str(p) for p in path)
        return f"jsonb_array_length(CAST({expr} AS jsonb) #> '{{{keys}}}')"

    def json_values(self, param: str = "?", *, integer: bool = False) -> str:
        """A subquery of the values of a JSON array passed as one text parameter:
        ``x IN (<json_values>)`` with ``json.dumps(list)``. No limit on the list's length."""
        if self.engine == "sqlite":
            return f"SELECT value FROM json_each({param})"
        value = "CAST(j.value AS BIGINT)" if integer else "j.value"
        return f"SELECT {value} FROM json_array_elements_text(CAST({param} AS json)) AS j(value)"

    def ilike(self, expr: str, param: str = "?") -> str:
        """Case-insensitive LIKE with ``\\`` as the escape character."""
        if self.engine == "sqlite":  # SQLite's LIKE ignores ASCII case already
            return f"{expr} LIKE {param} ESCAPE '\\'"
        return f"(CAST({expr} AS TEXT) COLLATE \"default\") ILIKE {param} ESCAPE '\\'"

    @property
    def greatest(self) -> str:
        """The name of the scalar maximum of two values (``MAX(a, b)`` in SQLite)."""
        return "MAX" if self.engine == "sqlite" else "GREATEST"


def _json_path(path: Sequence[str | int]) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def migrations(package: str, engine: str) -> list[tuple[int, str, str]]:
    """The ``NNNN_name.sql`` files of ``<package>.<engine>``, in order."""
    out = []
    for entry in resources.files(f"{package}.{engine}").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def split_sql(script: str) -> list[str]:
    """Split a migration into statements. Our migrations keep `--` and `;` out of string
    literals (and PostgreSQL's out of function bodies), so comments can be cut at `--` and
    statements at `;`."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def redact_url(url: str) -> str:
    """A database URL fit for logs and pages: its password replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    host = netloc[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Database(ABC):
    """One engine: a writer with group commit, committed reads, per-component migrations."""

    engine: str = ""

    def __init__(self) -> None:
        self.dialect = Dialect(self.engine)
        self._components: dict[str, str] = {}
        self._queue: asyncio.Queue[tuple[Job[Any], asyncio.Future[Any]] | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self.commits = 0
        self.jobs = 0
        self._batch_hooks: list[Callable[[], Job[Any] | None]] = []
        self._commit_hooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ life cycle

    def add_migrations(self, component: str, package: str) -> None:
        """Let a component version its own tables; call before open(). ``package`` holds
        one sub-package of ``NNNN_name.sql`` files per engine."""
        self._components[component] = package

    def add_batch_hook(self, hook: Callable[[], Job[Any] | None]) -> None:
        """``hook()`` is asked, as each batch forms, for a job to run first in it (None: none);
        what it returns commits with the batch (the outbox's staged events)."""
        self._batch_hooks.append(hook)

    def add_commit_hook(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs after each commit (the event relay's wake-up)."""
        self._commit_hooks.append(hook)

    @property
    def components(self) -> dict[str, str]:
        return dict(self._components)

    async def open(self) -> None:
        await self._connect()
        await self._migrate()
        self._writer_task = asyncio.create_task(self._writer(), name="store-writer")

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        await self._disconnect()

    @property
    def is_open(self) -> bool:
        return self._writer_task is not None

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _migrate(self) -> None: ...

    @abstractmethod
    async def _run_batch(self, jobs: list[Job[Any]]) -> list[tuple[bool, Any]]:
        """Every job in its savepoint, one commit; (ok, result or exception) per job."""

    @abstractmethod
    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]: ...

    async def read_one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        rows = await self.read(sql, params)
        return rows[0] if rows else None

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.read(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {r["component"]: int(r["v"]) for r in rows}

    async def probe(self) -> None:
        """A real but harmless write (the health check): raises when the writer cannot
        commit."""
        await self.write(self._probe_job)

    @staticmethod
    @abstractmethod
    async def _probe_job(tx: Tx) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data is, fit for logs (no password)."""

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
            first = [job for job in (hook() for hook in self._batch_hooks) if job is not None]
            try:
                outcomes = await self._run_batch([*first, *(job for job, _ in batch)])
            except Exception as e:  # the writer itself failed: nothing was committed
                log.exception("writer failed", jobs=len(batch))
                outcomes = [(False, e)] * (len(first) + len(batch))
            for ok, value in outcomes[: len(first)]:
                if not ok:
                    log.error("staged events not written", error=str(value))
            committed = any(ok for ok, _ in outcomes)
            outcomes = outcomes[len(first) :]
            if committed:
                for hook in self._commit_hooks:
                    hook()
            for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
