"""csms's durable store: the database's life cycle and its one writer, and a repository per
aggregate (:mod:`csms.repositories`): ``stations``, ``status``, ``transactions`` (with meter
values), ``anomalies``, ``id_tags``, ``unknown_stations``, ``commands``, ``data_transfers``.

Callers use the repositories directly (``store.transactions.start(...)``). The engines
(SQLite by default, PostgreSQL when ``database.url`` names it) live in :mod:`csms.db`: group
commit, savepoint per job, committed reads. A request is answered only after what it says is
committed. ``write``/``read`` stay here for what is not an aggregate of csms (an extension's
own tables through :class:`csms.ports.ExtensionDb`, the web interface's users and views).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from .clock import Clock
from .config import Settings
from .db import Database, Dialect, Job, JobSuspended, Tx, open_database
from .outbox import EventOutbox
from .repositories import (
    AnomalyRepository,
    CommandRepository,
    DataTransferRepository,
    IdTagRepository,
    SecurityRepository,
    StationRepository,
    StatusRepository,
    TransactionRepository,
    UnknownStationRepository,
)
from .repositories.connections import ConnectionLog

T = TypeVar("T")

# what a write job gets, under the name the web modules, the guard and tests import
JobDb = Tx


class Store:
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
        self.stations = StationRepository(self.db, clock)
        self.status = StatusRepository(self.db)
        self.transactions = TransactionRepository(self.db)
        self.anomalies = AnomalyRepository(self.db)
        self.id_tags = IdTagRepository(self.db, clock)
        self.unknown_stations = UnknownStationRepository(self.db, clock)
        self.commands = CommandRepository(self.db, clock)
        self.data_transfers = DataTransferRepository(self.db)
        # the security extension: events, certificate requests and certificates, logs
        self.security = SecurityRepository(self.db)
        # every domain event, committed with its state change (see csms.outbox)
        self.outbox = EventOutbox(self.db)
        # when stations connected and disconnected (their status timelines' offline time)
        self.connections = ConnectionLog(self.db)

    @classmethod
    def for_settings(cls, settings: Settings, clock: Clock) -> Store:
        """The store a configuration names (``database.url``, else the SQLite file), with
        the limits of ``settings.ocpp``."""
        db = settings.database
        store = cls(settings.database_path, clock, db.synchronous, url=db.url)
        store.unknown_stations.cap = settings.ocpp.max_unknown_stations
        store.transactions.max_meter_values_per_transaction = (
            settings.ocpp.max_meter_values_per_transaction
        )
        return store

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
        """Write the last-seen times and the staged events still in memory, then close the
        database."""
        if self.db.is_open:
            await self.stations.flush_seen()
            await self.outbox.flush()
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


__all__ = ["JobDb", "JobSuspended", "Store"]
