"""Several processes on one PostgreSQL database: OCPP nodes behind a load balancer and
delivery workers, on one machine or many.

    node A ──┐                       ┌── delivery worker (holds the lease: pushes, R7)
    node B ──┼── PostgreSQL ─────────┼── delivery worker (standby)
    node C ──┘  events (outbox), cluster_members, station_presence, NOTIFY

- **Members.** Each process has a row in ``cluster_members`` (its role, the URL of its
  internal routes, how far its event relay has read), refreshed every ``HEARTBEAT``
  seconds; a row not refreshed for ``MEMBER_TIMEOUT`` is a dead process's.
- **Wake-ups.** Every commit NOTIFYs ``csms_events``; each process LISTENs, so its relay
  reads at once what another node committed (:class:`Listener`).
- **Presence.** A node records which stations it holds (``station_presence``, written with
  its next commit) and NOTIFYs ``csms_presence``: a node still holding an older connection of
  that station closes it (:class:`Presence`). A command for a station held elsewhere is sent
  to that node's internal route (:class:`RoutedCommands`), authenticated by the cluster's
  secret (``cluster_secret``, made by the first process to start).
- **One delivery.** The pushes and R7's timers run in one process at a time: the one that
  holds a session-level advisory lock (:class:`DeliveryLease`). The others wait; when the
  holder dies, even by ``kill -9``, PostgreSQL drops its connection and its lock, and a
  waiting worker takes over within ``LEASE_POLL`` seconds, resynchronising every peer
  from the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from .clock import Clock
from .cluster import Link, RemoteCommands
from .commands import StationOffline
from .db import Job, Tx
from .db.postgres import PostgresDatabase
from .timeparse import to_db
from .topics import TOPICS_CHANNEL, Topics

log = structlog.get_logger("csms.members")

EVENTS_CHANNEL = "csms_events"
PRESENCE_CHANNEL = "csms_presence"
HEARTBEAT = 2.0
MEMBER_TIMEOUT = timedelta(seconds=10)
# the delivery lease: a session-level advisory lock ("csmd" in ASCII)
DELIVERY_LOCK = 0x63736D64
LEASE_POLL = 1.0
# a listening or lease connection is checked this often (a restarted server, a cut link)
CHECK_EVERY = 2.0
CHECK_TIMEOUT = 5.0


def default_url(host: str, port: int, *, tls: bool = False) -> str:
    """How the other machines reach a server listening on ``host``: that address, or this
    machine's name when it listens on every address; https when it serves TLS."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"


class Membership:
    """This process's row in ``cluster_members`` and what it learns from the others'."""

    def __init__(
        self,
        db: PostgresDatabase,
        clock: Clock,
        role: str,
        url: Callable[[], str | None],
        cursor: Callable[[], int | None],
    ) -> None:
        self.db = db
        self.clock = clock
        self.role = role
        self.url = url
        self.cursor = cursor
        self.member_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.active_delivery: Link | None = None  # the lease holder's internal routes
        self._secret: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def secret(self) -> str:
        assert self._secret is not None, "not started"
        return self._secret

    async def start(self) -> None:
        async def secret(tx: Tx) -> str:
            await tx.execute(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, ?) ON CONFLICT DO NOTHING",
                (secrets.token_urlsafe(32),),
            )
            row = await (await tx.execute("SELECT secret FROM cluster_secret")).fetchone()
            return str(row[0])

        self._secret = await self.db.write(secret)
        await self._beat()
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")
        log.info("joined the cluster", member_id=self.member_id, role=self.role, url=self.url())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        member = self.member_id

        async def leave(tx: Tx) -> None:
            await tx.execute("DELETE FROM station_presence WHERE member_id = ?", (member,))
            await tx.execute("DELETE FROM cluster_members WHERE member_id = ?", (member,))

        try:
            await self.db.write(leave)
        except Exception as e:  # the database is away: the row simply goes stale
            log.warning("could not leave the cluster cleanly", error=str(e))

    def set_role(self, role: str) -> None:
        """A delivery worker's: ``delivery`` once it holds the lease, ``standby`` before."""
        self.role = role

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("cluster heartbeat not written", error=str(e))

    async def _beat(self) -> None:
        now = to_db(self.clock.now())
        row = (
            self.member_id,
            self.role,
            self.url(),
            socket.gethostname(),
            os.getpid(),
            now,
            now,
            self.cursor(),
        )

        async def beat(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO cluster_members (member_id, role, url, host, pid, started_at, "
                "seen_at, cursor_tx) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (member_id) "
                "DO UPDATE SET role = excluded.role, url = excluded.url, "
                "seen_at = excluded.seen_at, cursor_tx = excluded.cursor_tx",
                row,
            )

        await self.db.write(beat)
        active = await self.db.read_one(
            "SELECT url FROM cluster_members WHERE role = 'delivery' AND seen_at > ? "
            "AND url IS NOT NULL ORDER BY seen_at DESC LIMIT 1",
            (self._alive_since(),),
        )
        self.active_delivery = Link(active["url"], self.secret) if active else None

    def _alive_since(self) -> str:
        return to_db(self.clock.now() - MEMBER_TIMEOUT)

    async def members(self) -> list[dict[str, Any]]:
        """Every process seen lately (for health and the operator)."""
        return await self.db.read(
            "SELECT member_id, role, url, host, pid, started_at, seen_at FROM cluster_members "
            "WHERE seen_at > ? ORDER BY started_at",
            (self._alive_since(),),
        )

    async def oldest_cursor(self) -> int | None:
        """How far the slowest live relay has read (events behind it may be pruned)."""
        row = await self.db.read_one(
            "SELECT MIN(cursor_tx) AS c, COUNT(cursor_tx) AS n FROM cluster_members "
            "WHERE seen_at > ?",
            (self._alive_since(),),
        )
        return int(row["c"]) if row and row["n"] else None

    async def locate(self, station_id: str) -> tuple[str, str] | None:
        """(member id, URL) of the live node that holds the station's websocket."""
        row = await self.db.read_one(
            "SELECT m.member_id, m.url FROM station_presence p JOIN cluster_members m "
            "ON m.member_id = p.member_id WHERE p.station_id = ? AND m.seen_at > ? "
            "AND m.url IS NOT NULL",
            (station_id, self._alive_since()),
        )
        return (row["member_id"], row["url"]) if row else None


class Listener:
    """LISTEN on channels over a connection of its own, reconnecting (every
    ``CHECK_EVERY`` seconds) when it is lost; ``on_reconnect`` runs after each reconnection
    (what was notified meanwhile is lost: read again)."""

    def __init__(
        self,
        db: PostgresDatabase,
        channels: dict[str, Callable[[str], None]],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.channels = channels
        self.on_reconnect = on_reconnect
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        first, lost = True, False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self.db.dedicated()
                for channel, callback in self.channels.items():
                    await conn.add_listener(channel, _payload(callback))
                if lost:
                    log.info("listening again", channels=sorted(self.channels))
                if not first and self.on_reconnect is not None:
                    self.on_reconnect()
                first, lost = False, False
                while True:
                    await asyncio.sleep(CHECK_EVERY)
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), CHECK_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not lost:
                    log.warning("lost the listening connection", error=str(e))
                lost = True
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(CHECK_EVERY)


def _payload(callback: Callable[[str], None]) -> Callable[..., None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            callback(payload)
        except Exception:
            log.exception("notification not handled")

    return on_notify


class Presence:
    """Which stations this node holds, in ``station_presence`` (written with the next
    commit), and the replacement of a station's connection cluster-wide."""

    def __init__(
        self,
        db: PostgresDatabase,
        membership: Membership,
        close_replaced: Callable[[str, float], None],
    ) -> None:
        self.db = db
        self.membership = membership
        self.close_replaced = close_replaced  # (station id, when the newer one opened)
        self._staged: dict[str, float | None] = {}  # station -> opened at (None: gone)
        db.add_batch_hook(self._take)

    def connected(self, station_id: str, opened_at: float) -> None:
        self._staged[station_id] = opened_at

    def disconnected(self, station_id: str) -> None:
        self._staged[station_id] = None

    def _take(self) -> Job[None] | None:
        if not self._staged:
            return None
        staged, self._staged = self._staged, {}
        member = self.membership.member_id
        up = [(sid, at) for sid, at in staged.items() if at is not None]
        down = [sid for sid, at in staged.items() if at is None]

        async def write(tx: Tx) -> None:
            if up:
                await tx.executemany(
                    "INSERT INTO station_presence (station_id, member_id, connected_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (station_id) DO UPDATE SET "
                    "member_id = excluded.member_id, connected_at = excluded.connected_at",
                    [(sid, member, repr(at)) for sid, at in up],
                )
                await tx.execute(
                    "SELECT pg_notify(?, x) FROM unnest(CAST(? AS TEXT[])) AS x",
                    (PRESENCE_CHANNEL, [f"{member} {at!r} {sid}" for sid, at in up]),
                )
            if down:
                await tx.execute(
                    "DELETE FROM station_presence WHERE member_id = ? "
                    "AND station_id = ANY(CAST(? AS TEXT[]))",
                    (member, down),
                )

        return write

    def notified(self, payload: str) -> None:
        """A node announced a station's new connection: close ours if it is older."""
        try:
            member, at, station_id = payload.split(" ", 2)
            opened_at = float(at)
        except ValueError:
            log.warning("presence notification not understood", payload=payload[:200])
            return
        if member != self.membership.member_id:
            self.close_replaced(station_id, opened_at)


class RoutedCommands:
    """Commands for stations whose websocket another node holds: sent to that node's
    internal route (which runs them there, and never routes them further)."""

    def __init__(self, membership: Membership, default_timeout: float) -> None:
        self.membership = membership
        self.default_timeout = default_timeout
        self._remotes: dict[str, RemoteCommands] = {}

    async def close(self) -> None:
        for remote in self._remotes.values():
            await remote.close()
        self._remotes.clear()

    async def send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str = "internal",
        on_answer: Callable[[Any], None] | None = None,
    ) -> Any:
        where = await self.membership.locate(station_id)
        if where is None or where[0] == self.membership.member_id:
            raise StationOffline(f"station {station_id} is not connected")
        url = where[1]
        remote = self._remotes.get(url)
        if remote is None:
            link = Link(url, self.membership.secret)
            remote = self._remotes[url] = RemoteCommands(link, self.default_timeout, routed=True)
        return await remote.send(
            station_id, action, payload, timeout=timeout, origin=origin, on_answer=on_answer
        )


class DeliveryLease:
    """The right to deliver, for one process of the cluster at a time: a session-level
    advisory lock held on a connection of its own. ``lost`` is set when that connection
    fails (the lock is gone with it: another process may hold it already)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait for the lease (False: told to stop first)."""
        waiting = False
        while not stop.is_set():
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self.db.dedicated()
                if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", DELIVERY_LOCK):
                    self._task = asyncio.create_task(self._watch(), name="delivery-lease")
                    return True
                if not waiting:
                    log.info("another process delivers: standing by until it stops")
                    waiting = True
            except Exception as e:
                log.warning("delivery lease not taken", error=str(e))
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEASE_POLL)
        return False

    async def _watch(self) -> None:
        assert self._conn is not None
        try:
            while True:
                await asyncio.sleep(CHECK_EVERY)
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), CHECK_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("delivery lease lost with its connection", error=str(e))
            self.lost.set()

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), CHECK_TIMEOUT)
            self._conn.terminate()
            self._conn = None


def now_wall() -> float:
    """A connection's opening time as every machine compares them."""
    return time.time()


class ClusterNode:
    """What an OCPP node on PostgreSQL does for the cluster: its membership, the wake-ups
    of its relay by the others' commits, the presence of its stations, the routing of
    commands to the others'."""

    def __init__(
        self,
        db: PostgresDatabase,
        clock: Clock,
        role: str,
        url: Callable[[], str | None],
        relay_cursor: Callable[[], int | None],
        wake: list[Callable[[], None]],
        close_replaced: Callable[[str, float], None],
        call_timeout: float,
        topics: Topics,
    ) -> None:
        self.membership = Membership(db, clock, role, url, relay_cursor)
        topics.over_database(db)
        self.presence = Presence(db, self.membership, close_replaced)
        self.router = RoutedCommands(self.membership, call_timeout)
        db.notify_on_commit(EVENTS_CHANNEL)

        def woken(_payload: str) -> None:
            for w in wake:
                w()

        def reconnected() -> None:
            woken("")
            topics.refire()

        self.listener = Listener(
            db,
            {
                EVENTS_CHANNEL: woken,
                PRESENCE_CHANNEL: self.presence.notified,
                TOPICS_CHANNEL: topics.notified,
            },
            on_reconnect=reconnected,
        )

    @property
    def secret(self) -> str:
        return self.membership.secret

    async def start(self) -> None:
        await self.membership.start()
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        await self.router.close()
        await self.membership.stop()

    async def health(self) -> dict[str, Any]:
        try:
            members = await self.membership.members()
        except Exception as e:
            return {"member_id": self.membership.member_id, "error": str(e)}
        return {
            "member_id": self.membership.member_id,
            "members": [
                {"member_id": m["member_id"], "role": m["role"], "seen_at": m["seen_at"]}
                for m in members
            ],
        }
