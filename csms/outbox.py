"""csms's transactional outbox: every domain event is a row of ``events``, committed with
the state change it describes, and read back in commit order by a relay that publishes it.

    handler ──write job + its events (one commit)──▶ events table ──relay──▶ EventBus

- A frame that changes state (a status, a transaction, a boot) hands its events to the
  repository's write job (:func:`with_events`): they are inserted in the same savepoint, so
  the events exist exactly when the state does, and a station is answered only after both
  are committed.
- An event without a write of its own (a frame seen, a connection opened or closed) is
  *staged* (:meth:`EventOutbox.stage`) and inserted at the head of the writer's next batch,
  before the jobs that follow it; when no write comes within ``FLUSH_DELAY``, the outbox
  makes one.
- :class:`EventRelay` reads the rows after each commit (in-process, woken by the writer;
  another process polls) and publishes them on the bus, in id order. Ids are assigned in
  commit order by the one writer of a database.

Rows are kept ``RETENTION`` and never pruned past what the relay has published; a consumer
that falls behind gets the bus's :class:`csms.events.Overflow` and resynchronises from the
state, as it always could.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from .db import Database, Job, Tx
from .events import (
    Event,
    EventBus,
    MeterSample,
    StationBooted,
    StationConnected,
    StationDefined,
    StationDisconnected,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from .meter import Sample
from .timeparse import from_db, to_db

log = structlog.get_logger("csms.outbox")

T = TypeVar("T")
# how far a relay has read: (transaction, id). On SQLite, one writer gives ids in commit
# order and the transaction is always 0; on PostgreSQL, several writers do not, and a row is
# read once every transaction older than its own has ended (see EventRelay).
Cursor = tuple[int, int]

# how long a staged event waits for a write to ride along with before one is made for it
FLUSH_DELAY = 0.01
# how long published events are kept (a consumer further behind resynchronises)
RETENTION = timedelta(minutes=10)
# rows a relay reads at once
RELAY_BATCH = 2000
# how often a relay looks again when a subscriber's queue is full (seconds)
ROOM_WAIT = 0.005

EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        StationSeen,
        StationConnected,
        StationDisconnected,
        StationBooted,
        StationDefined,
        StatusChanged,
        TransactionStarted,
        MeterSample,
        TransactionStopped,
    )
}
_TIME_FIELDS = frozenset({"at", "timestamp", "start_time", "stop_time"})
_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))

INSERT = "INSERT INTO events (kind, station_id, body, created_at) VALUES (?, ?, ?, ?)"
# connects and disconnects also go to the connection log, which keeps them for the status
# timelines long after the events are pruned (csms.repositories.connections)
INSERT_CONNECTION = "INSERT INTO connection_log (station_id, connected, at) VALUES (?, ?, ?)"


# ---------------------------------------------------------------------------- codec


def encode(event: Event) -> tuple[str, str | None, str, str]:
    """An event as an ``events`` row: (kind, station_id, body, created_at)."""
    body: dict[str, Any] = {}
    for f in fields(event):  # type: ignore[arg-type]
        value = getattr(event, f.name)
        if f.name in _TIME_FIELDS:
            value = to_db(value)
        elif f.name == "samples":
            value = [[getattr(s, n) for n in _SAMPLE_FIELDS] for s in value]
        body[f.name] = value
    return (
        type(event).__name__,
        getattr(event, "station_id", None),
        json.dumps(body, separators=(",", ":")),
        to_db(event.at),
    )


def decode(kind: str, body: str) -> Event:
    """The event an ``events`` row holds. Raises ValueError for a kind this csms does not
    know (a row written by a newer version)."""
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    data = json.loads(body)
    for name in _TIME_FIELDS.intersection(data):
        data[name] = from_db(data[name])
    if "samples" in data:
        data["samples"] = tuple(Sample(*s) for s in data["samples"])
    return cls(**data)  # type: ignore[no-any-return]


def with_events(job: Job[T], events: Callable[[T], Iterable[Event]] | None) -> Job[T]:
    """``job``, then the events it caused (from its result), in the same savepoint."""
    if events is None:
        return job

    async def both(tx: Tx) -> T:
        result = await job(tx)
        rows = [encode(e) for e in events(result)]
        if rows:
            await tx.executemany(INSERT, rows)
        return result

    return both


# ---------------------------------------------------------------------------- writing


class EventOutbox:
    """The events that have no write of their own, inserted with the writer's next batch
    (ahead of its jobs), and the pruning of published rows."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._staged: list[tuple[str, str | None, str, str]] = []
        self._connections: list[tuple[str, int, str]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._marks: deque[tuple[float, int]] = deque()  # (monotonic time, max id then)
        db.add_batch_hook(self._take)

    def stage(self, event: Event) -> None:
        """Record ``event`` with the next commit (within ``FLUSH_DELAY``)."""
        self._staged.append(encode(event))
        if isinstance(event, StationConnected | StationDisconnected):
            connected = 1 if isinstance(event, StationConnected) else 0
            self._connections.append((event.station_id, connected, to_db(event.at)))
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(FLUSH_DELAY, self._flush_now)

    def _flush_now(self) -> None:
        self._flush = None
        if self._staged and self.db.is_open:
            task = asyncio.ensure_future(self.db.write(_nothing))
            task.add_done_callback(_quiet)

    async def flush(self) -> None:
        """Write what is staged now (before the database closes)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._staged:
            await self.db.write(_nothing)

    def _take(self) -> Job[None] | None:
        """The writer's batch hook: a job inserting what is staged, or None."""
        if not self._staged:
            return None
        rows, self._staged = self._staged, []
        connections, self._connections = self._connections, []

        async def insert(tx: Tx) -> None:
            await tx.executemany(INSERT, rows)
            if connections:
                await tx.executemany(INSERT_CONNECTION, connections)

        return insert

    async def prune(self, published: Cursor) -> int:
        """Delete rows older than ``RETENTION`` that every relay has published (before
        ``published``). Call it regularly: it marks the newest id at each call and deletes up
        to the newest mark older than the retention."""
        row = await self.db.read_one("SELECT MAX(id) AS m FROM events")
        now = time.monotonic()
        self._marks.append((now, int(row["m"] or 0) if row else 0))
        horizon = 0
        while self._marks and now - self._marks[0][0] >= RETENTION.total_seconds():
            horizon = self._marks.popleft()[1]
        tx, upto = published
        if self.db.engine == "postgresql":
            # (ids are not in commit order there: a row is behind every relay by its tx)
            sql, params = "DELETE FROM events WHERE id <= ? AND tx < ?", (horizon, tx)
            if horizon <= 0 or tx <= 0:
                return 0
        else:
            upto = min(horizon, upto)
            sql, params = "DELETE FROM events WHERE id <= ?", (upto,)
            if upto <= 0:
                return 0

        async def job(tx_: Tx) -> int:
            cur = await tx_.execute(sql, params)
            return int(cur.rowcount or 0)

        return await self.db.write(job)


async def latest_seen(db: Database) -> dict[str, datetime]:
    """Each station's newest committed frame among the kept events: newer than the
    ``stations.last_seen_at`` that is written every few seconds."""
    rows = await db.read(
        "SELECT station_id, MAX(created_at) AS at FROM events "
        "WHERE kind = 'StationSeen' GROUP BY station_id"
    )
    out = {}
    for r in rows:
        at = from_db(r["at"])
        if r["station_id"] is not None and at is not None:
            out[r["station_id"]] = at
    return out


async def _nothing(tx: Tx) -> None:
    """A write for the staged events to ride along with."""


def _quiet(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("staged events not written", error=str(task.exception()))


# ---------------------------------------------------------------------------- reading


class EventRelay:
    """Publishes the committed events on ``bus``, in id order, from where the table ended
    when it started. Woken by :meth:`wake` (the writer's commit hook in csms's process);
    ``poll`` seconds bound the wait when the writer is in another process."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        poll: float | None = None,
        before: Callable[[Event], None] | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.poll = poll
        self.before = before  # sees each event before the bus does
        self.cursor: Cursor = (0, 0)
        self.published = 0
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.cursor = await self._horizon()
        self._task = asyncio.create_task(self._run(), name="event-relay")

    async def _horizon(self) -> Cursor:
        """Below this, no row can appear any more: on SQLite, the newest id (one writer,
        ids in commit order); on PostgreSQL, the oldest transaction still running (every
        row of an older one is committed or never will be)."""
        if self.db.engine == "postgresql":
            row = await self.db.read_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x"
            )
            return (int(row["x"]) if row else 0, 0)
        row = await self.db.read_one("SELECT MAX(id) AS m FROM events")
        return (0, int(row["m"] or 0) if row else 0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._woken.set()

    async def _run(self) -> None:
        while True:
            if self.poll is None:
                await self._woken.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), self.poll)
            self._woken.clear()
            try:
                while await self._step():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database is away: try again at the next wake
                log.warning("events not read", error=str(e))
                await asyncio.sleep(0.5)
                self._woken.set()

    async def _room(self) -> int:
        """Wait until every subscriber can take some events; how many (the events wait
        in the table meanwhile, instead of overflowing a subscriber's queue)."""
        # (a look every few ms while a consumer drains its queue: the queues' get() is the
        # hot path of every consumer, and stays free of any signalling for this)
        while (room := self.bus.room()) <= 0:  # noqa: ASYNC110
            await asyncio.sleep(ROOM_WAIT)
        return min(room, RELAY_BATCH)

    async def _step(self) -> bool:
        """Publish the next rows, of the kinds someone subscribed to (an OCPP node whose
        pushes are in another process reads only what its commands follow); True when
        there may be more."""
        limit = await self._room()
        wanted = self.bus.wanted()
        kinds = sorted(wanted) if wanted is not None else None
        if kinds == []:
            self.cursor = max(self.cursor, await self._horizon())
            return False
        only = f" AND kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
        # (SQLite, every kind: each committed row is readable in id order, no bound needed;
        # this runs after every commit of a process that delivers itself)
        sqlite_all = self.db.engine != "postgresql" and kinds is None
        horizon = self.cursor if sqlite_all else await self._horizon()
        if self.db.engine == "postgresql":
            rows = await self.db.read(
                "SELECT tx, id, kind, body FROM events WHERE (tx, id) > (?, ?) AND tx < ?"
                f"{only} ORDER BY tx, id LIMIT ?",
                (*self.cursor, horizon[0], *(kinds or ()), limit),
            )
        else:
            bound = "" if sqlite_all else f" AND id <= {int(horizon[1])}"
            rows = await self.db.read(
                f"SELECT 0 AS tx, id, kind, body FROM events WHERE id > ?{bound}{only} "
                "ORDER BY id LIMIT ?",
                (self.cursor[1], *(kinds or ()), limit),
            )
        for r in rows:
            self.cursor = (int(r["tx"]), int(r["id"]))
            try:
                event = decode(r["kind"], r["body"])
            except (ValueError, TypeError) as e:
                log.error("event row not understood, skipped", id=r["id"], error=str(e))
                continue
            if self.before is not None:
                self.before(event)
            self.bus.publish(event)
            self.published += 1
        if len(rows) < limit:  # (every row before the horizon is read: pass over the rest)
            self.cursor = max(self.cursor, horizon)
        return len(rows) == limit
