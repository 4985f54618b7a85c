"""The delivery process (role ``delivery``): the extensions' background work (the OCPI
pushes, R7's timers, the commissioning notices) on a core of its own, beside an OCPP node.

It opens the same database, reads the committed events back from the outbox (woken through
a pipe by the node's commits, see :mod:`csms.cluster`), keeps the stations' last-seen
times from them, sends commands to stations through the node, and serves on a loopback
port, to its node only (the supervisor's secret): its metrics, its health and the
extensions' internal routes. It has no websocket, no operator API and no web interface.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from .clock import Clock, SystemClock
from .cluster import RELAY_POLL, Link, RemoteCommands, authorized, read_wakeups, refuse
from .config import Settings
from .events import Event, EventBus, StationSeen
from .extensions import Extension
from .http import json_response
from .metrics import metrics_handler
from .outbox import EventRelay, latest_seen
from .ports import CsmsPort
from .store import Store

log = structlog.get_logger("csms.worker")


def _internal_only(secret: str) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if not authorized(request, secret):
            return refuse(request)
        return await handler(request)

    return middleware


class DeliveryProcess:
    def __init__(
        self,
        settings: Settings,
        node: Link,
        extensions: list[tuple[Extension, Any]],
        wake_fd: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
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
        self.commands = RemoteCommands(node, settings.ocpp.call_timeout)
        self.http_app = web.Application(middlewares=[_internal_only(node.secret)])
        self.http_app.router.add_get("/metrics", metrics_handler(self.registry))
        self.http_app.router.add_get("/healthz", self._health)
        self._runner: web.AppRunner | None = None
        self._stop_wakeups: Any = None
        self.extensions = [ext for ext, _ in extensions]
        self.port = CsmsPort(
            self.store,
            self.clock,
            settings,
            bus=self.bus,
            commands=self.commands,
            http_app=self.http_app,
            metrics_registry=self.registry,
            # (the node's: what csms serves on, in the URLs an extension makes)
            http_port=lambda: int(urlsplit(node.url).port or 80),
            role="delivery",
        )
        for ext, config in extensions:
            ext.attach(self.port, config)

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
        return json_response(
            {"status": "ok", "events_relayed": self.relay.published, "cursor": self.relay.cursor}
        )

    async def start(self) -> None:
        await self.store.open()
        for station_id, at in (await latest_seen(self.store.db)).items():
            self.store.stations.note_seen(station_id, at)
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        await self.relay.start()
        if self.wake_fd is not None:
            self._stop_wakeups = read_wakeups(self.wake_fd, self.relay.wake, self._node_gone)
        for ext in self.extensions:
            await ext.start()
        log.info("delivery process running", internal_port=self.http_port, pid=os.getpid())

    async def stop(self) -> None:
        if self._stop_wakeups is not None:
            self._stop_wakeups()
        await self.relay.stop()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("extension did not stop cleanly", extension=ext.name)
        await self.commands.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()


async def run_delivery(
    settings: Settings,
    extensions: list[tuple[Extension, Any]],
    node: Link,
    wake_fd: int | None,
    ready_fd: int | None,
    stop: asyncio.Event,
) -> int:
    """Run the delivery process until ``stop``; tell the supervisor its internal port on
    ``ready_fd`` (one line) once it serves."""
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
    await stop.wait()
    await process.stop()
    log.info("delivery process stopped")
    return 0
