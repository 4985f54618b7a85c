"""The delivery process (role ``delivery``): the extensions' background work (the OCPI
pushes, R7's timers, the commissioning notices) on a core of its own, beside an OCPP node.

It opens the same database, reads the committed events back from the outbox (woken through
a pipe by the node's commits, see :mod:`csms.cluster`), keeps the stations' last-seen
times from them, sends commands to stations through the node, and serves on a loopback
port, to its node only (the supervisor's secret): its metrics, its health and the
extensions' internal routes. It has no websocket, no operator API and no web interface.

On PostgreSQL (:mod:`csms.members`) it is a member of the cluster: woken by every node's
commits (LISTEN), it delivers only while it holds the cluster's delivery lease and stands
by until then; it serves where the other machines reach it, to them too (the cluster's
secret). Started by hand (``csms run --role delivery``, no node of its own), it sends each
command to the node that holds the station, and serves on ``http.host``/``http.port``
(``/healthz`` and ``/metrics`` as a node does, the internal routes to the cluster).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from .clock import Clock, SystemClock
from .cluster import RELAY_POLL, Link, RemoteCommands, authorized, read_wakeups, refuse
from .config import Settings
from .db.postgres import PostgresDatabase
from .events import Event, EventBus, StationSeen
from .extensions import Extension
from .http import GuardedSite, json_response
from .members import (
    EVENTS_CHANNEL,
    DeliveryLease,
    Listener,
    Membership,
    RoutedCommands,
    default_url,
)
from .metrics import metrics_handler
from .outbox import EventRelay, latest_seen
from .ports import CsmsPort
from .store import Store
from .tls import ServerTls
from .topics import TOPICS_CHANNEL, Topics

log = structlog.get_logger("csms.worker")


OPEN_PATHS = frozenset({"/healthz", "/metrics"})


def _internal_only(secrets: Any, open_paths: frozenset[str] = frozenset()) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path not in open_paths and not any(
            authorized(request, secret) for secret in secrets()
        ):
            return refuse(request)
        return await handler(request)

    return middleware


class DeliveryProcess:
    """``node``: the OCPP node that started this process (None: started by hand, in a
    PostgreSQL cluster)."""

    def __init__(
        self,
        settings: Settings,
        node: Link | None,
        extensions: list[tuple[Extension, Any]],
        wake_fd: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        self.clock = clock or SystemClock()
        self.store = Store.for_settings(settings, self.clock)
        self.bus = EventBus()
        self.relay = EventRelay(self.store.db, self.bus, poll=RELAY_POLL, before=self._before)
        self.store.db.add_commit_hook(self.relay.wake)
        self.wake_fd = wake_fd
        self.on_node_gone: Any = None
        self.registry = CollectorRegistry()
        relayed = Gauge(
            "csms_delivery_events_relayed",
            "Events the delivery process has read from the outbox since it started",
            registry=self.registry,
        )
        relayed.set_function(lambda: self.relay.published)
        self.delivering = False
        active = Gauge(
            "csms_delivery_active",
            "1 while this process delivers (holds the delivery lease), 0 while it stands by",
            registry=self.registry,
        )
        active.set_function(lambda: 1 if self.delivering else 0)
        db = self.store.db
        self.topics = Topics()
        self.membership: Membership | None = None
        self.listener: Listener | None = None
        self.lease: DeliveryLease | None = None
        self.commands: RemoteCommands | RoutedCommands
        if isinstance(db, PostgresDatabase):
            self.membership = Membership(db, self.clock, "standby", self._advertise, self._cursor)
            self.topics.over_database(db)

            def reconnected() -> None:
                self.relay.wake()
                self.topics.refire()

            self.listener = Listener(
                db,
                {
                    EVENTS_CHANNEL: lambda _: self.relay.wake(),
                    TOPICS_CHANNEL: self.topics.notified,
                },
                on_reconnect=reconnected,
            )
            self.lease = DeliveryLease(db)
        if node is not None:
            self.commands = RemoteCommands(node, settings.ocpp.call_timeout)
        elif self.membership is not None:
            self.commands = RoutedCommands(self.membership, settings.ocpp.call_timeout)
        else:
            raise ValueError("a delivery process without its node needs PostgreSQL")
        open_paths = frozenset() if node is not None else OPEN_PATHS
        self.http_app = web.Application(middlewares=[_internal_only(self._secrets, open_paths)])
        token = settings.metrics_token if node is None else None
        self.http_app.router.add_get("/metrics", metrics_handler(self.registry, token))
        self.http_app.router.add_get("/healthz", self._health)
        self.http_app.add_routes([self.topics.route()])
        self._runner: web.AppRunner | None = None
        # a worker of its own (PostgreSQL) serves https like the nodes with http.tls; the
        # process beside its node listens on loopback, plain
        self.tls: ServerTls | None = None
        if node is None and settings.http.tls:
            failed = Counter(
                "csms_tls_handshakes_failed",
                "TLS handshakes that failed, by listener and reason (csms.tls)",
                ["listener", "reason"],
                registry=self.registry,
            )
            self.tls = ServerTls(settings, failed)
        self._stop_wakeups: Any = None
        self.extensions = [ext for ext, _ in extensions]
        # (the node's: what csms serves on, in the URLs an extension makes)
        node_port = int(urlsplit(node.url).port or 80) if node is not None else None
        self.port = CsmsPort(
            self.store,
            self.clock,
            settings,
            bus=self.bus,
            commands=self.commands,
            http_app=self.http_app,
            metrics_registry=self.registry,
            http_port=lambda: node_port if node_port is not None else settings.http.port,
            role="delivery",
            topics=self.topics,
        )
        for ext, config in extensions:
            ext.attach(self.port, config)

    def _secrets(self) -> list[str]:
        out = [self.node.secret] if self.node is not None else []
        if self.membership is not None and self.started:
            out.append(self.membership.secret)
        return out

    @property
    def started(self) -> bool:
        return self._runner is not None

    def _cursor(self) -> int | None:
        return self.relay.cursor[0] if self.delivering else None

    def _advertise(self) -> str | None:
        if self._runner is None:
            return None
        if self.node is None and self.settings.cluster.advertise_url:
            return self.settings.cluster.advertise_url
        return default_url(self._bind_host, self.http_port, tls=self.tls is not None)

    @property
    def _bind_host(self) -> str:
        """Loopback beside its node on SQLite; on PostgreSQL, where the other machines of
        the cluster reach it (the node's address)."""
        if self.node is not None and self.membership is None:
            return "127.0.0.1"
        return self.settings.http.host

    def _node_gone(self) -> None:
        log.warning("the OCPP node that started this delivery process is gone: stopping")
        if self.on_node_gone is not None:
            self.on_node_gone()

    def _before(self, event: Event) -> None:
        # the last frame of each station, for the extensions' reads: from the events, so
        # already committed (persist_seen has nothing to write, no lock to wait for)
        if isinstance(event, StationSeen):  # (committed: nothing to persist)
            self.store.stations.note_seen(event.station_id, event.at)

    @property
    def http_port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def _health(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "status": "ok",
            "delivering": self.delivering,
            "events_relayed": self.relay.published,
            "cursor": list(self.relay.cursor),
        }
        if self.membership is not None:
            body["member_id"] = self.membership.member_id
        return json_response(body)

    async def start(self) -> None:
        """Open the database and serve (health, metrics, internal routes); then
        :meth:`deliver`."""
        await self.store.open()
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        port = self.settings.http.port if self.node is None else 0
        acceptor = self.tls.acceptor("http") if self.tls is not None else None
        await GuardedSite(self._runner, None, self._bind_host, port, tls=acceptor).start()
        if self.wake_fd is not None:
            self._stop_wakeups = read_wakeups(self.wake_fd, self.relay.wake, self._node_gone)
        if self.membership is not None:
            await self.membership.start()
        log.info("delivery process serving", internal_port=self.http_port, pid=os.getpid())

    async def deliver(self, stop: asyncio.Event) -> bool:
        """Take the cluster's delivery lease (on PostgreSQL: wait for it), then read the
        events and start the extensions. False: told to stop first."""
        if self.lease is not None and not await self.lease.acquire(stop):
            return False
        if self.listener is not None:
            await self.listener.start()
        await self.relay.start()
        # each station's newest frame, read once the relay's cursor is set (what comes
        # after, it reads): a standby taking over knows only what it read at its own start,
        # and the extensions' silence timers (R7) run from these times
        for station_id, at in (await latest_seen(self.store.db)).items():
            self.store.stations.note_seen(station_id, at)
        for ext in self.extensions:
            await ext.start()
        self.delivering = True
        if self.membership is not None:
            self.membership.set_role("delivery")
        log.info("delivering", pid=os.getpid())
        return True

    async def stop(self) -> None:
        if self._stop_wakeups is not None:
            self._stop_wakeups()
        if self.listener is not None:
            await self.listener.stop()
        await self.relay.stop()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("extension did not stop cleanly", extension=ext.name)
        self.delivering = False
        if self.lease is not None:
            await self.lease.release()
        if self.membership is not None:
            await self.membership.stop()
        await self.commands.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()


async def run_delivery(
    settings: Settings,
    extensions: list[tuple[Extension, Any]],
    node: Link | None,
    wake_fd: int | None,
    ready_fd: int | None,
    stop: asyncio.Event,
) -> int:
    """Run the delivery process until ``stop``; tell the supervisor its internal port on
    ``ready_fd`` (one line) once it serves. Exits 1 when the delivery lease is lost with
    its connection (another process may hold it already): restarted, it waits again."""
    process = DeliveryProcess(settings, node, extensions, wake_fd)
    process.on_node_gone = stop.set
    try:
        await process.start()
    except Exception as e:
        log.error("delivery process could not start", error=str(e))
        await process.stop()
        return 1
    if ready_fd is not None:
        os.write(ready_fd, f"{process.http_port}\n".encode())
        os.close(ready_fd)
    code = 0
    try:
        if await process.deliver(stop):
            waiters = [asyncio.create_task(stop.wait())]
            if process.lease is not None:
                waiters.append(asyncio.create_task(process.lease.lost.wait()))
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
    except Exception as e:
        log.error("delivery process failed", error=str(e))
        code = 1
    if process.lease is not None and process.lease.lost.is_set():
        log.error("stopping: the delivery lease was lost (restarted, this process waits again)")
        code = 1
    await process.stop()
    log.info("delivery process stopped")
    return code
