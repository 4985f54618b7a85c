"""Wiring: one central system in one process, started and stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import os
import secrets
import signal
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from . import ocppj
from .alerts import AlertService
from .api import Api
from .authorization import Authorizer
from .bulk import BulkService
from .clock import Clock, SystemClock
from .cluster import (
    NODE_URL_ENV,
    READY_FD_ENV,
    SECRET_ENV,
    WAKE_FD_ENV,
    Link,
    command_routes,
    loopback_host,
)
from .commands import CommandPort, ConnectionRegistry
from .config import ConfigError, Settings
from .connection import StationConnection
from .db import DatabaseError
from .db.postgres import PostgresDatabase
from .diagnostics import DiagnosticsService
from .events import EventBus, StationDefined, Subscription
from .extensions import Extension
from .firmware import FirmwareService
from .firmware_web import FirmwareWebProvider
from .fleet_ops_web import FleetOpsWebProvider
from .handlers import OcppHandlers, Services
from .http import (
    ConnectionGuard,
    GuardedSite,
    HttpLimits,
    LoopErrorFilter,
    build_app,
    fd_limit,
    raise_fd_limit,
)
from .local_lists import LocalListService
from .local_lists_web import LocalListWebProvider
from .members import ClusterNode, default_url
from .metrics import Metrics
from .openapi import contract_routes, package_version
from .outbox import Cursor, EventRelay, latest_seen
from .passwords import hash_password, is_password_hash
from .ports import CsmsPort
from .provisioning import provision
from .repositories.alerts import AlertRepository
from .repositories.bulk import BulkRepository
from .reservations import ReservationApi, ReservationService
from .reservations_web import HoldsWebProvider
from .security import SecurityService
from .security_web import SecurityWebProvider
from .server import OcppServer
from .store import Store
from .stuck import StuckApi, StuckService
from .supervisor import DeliverySupervisor
from .tls import ServerTls, TlsConfigError, configure_client, reload_all
from .topics import Topics
from .web import WebUI
from .worker import run_delivery

log = structlog.get_logger("csms.app")

SEEN_FLUSH_SECONDS = 15.0
# every StatusNotification is kept this long (status_log), then pruned, hourly
STATUS_HISTORY = timedelta(days=35)
STATUS_PRUNE_EVERY = timedelta(hours=1)
# /healthz tries a real write at most this often (the answer in between is the last one)
WRITE_PROBE_INTERVAL = 2.0
WRITE_PROBE_TIMEOUT = 5.0


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line for the operator."""


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def prepare_data_dir(path: Path) -> None:
    """Make sure the data directory exists, is a directory we can write in, and is private
    (0700; an existing one readable by others is fixed). Raises DataDirError."""
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as e:
            raise DataDirError(
                f"data directory {path} does not exist and cannot be created: {_reason(e)}"
            ) from None
    if not path.is_dir():
        raise DataDirError(f"data directory {path} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".csms-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DataDirError(f"data directory {path} is not writable: {_reason(e)}") from None
    mode = path.stat().st_mode & 0o777
    if mode != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError as e:
            log.warning("cannot make the data directory private", path=str(path), error=str(e))
        else:
            if mode & 0o077:
                log.warning(
                    "the data directory was open to other users: now 0700",
                    path=str(path),
                    was=oct(mode),
                )


class CentralSystem:
    """The OCPP central system: store, event bus, websocket server, HTTP app.

    ``start()`` opens the store (applying migrations), then serves OCPP and HTTP;
    ``stop()`` closes the station connections, the HTTP server and the store, in that order.
    Extensions (the OCPI bridge) get ``port`` (:class:`csms.ports.CsmsPort`) between
    construction and ``start()``: events, queries, commands, routes, web providers.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        admin_password_hash: str | None = None,
        extensions: list[tuple[Extension, Any]] | None = None,
        delivery: DeliverySupervisor | None = None,
        delivery_elsewhere: bool = False,
    ) -> None:
        """``delivery``: the extensions' background work runs in that child process (this
        is then an OCPP node, role ``ocpp``); ``delivery_elsewhere``: in the delivery
        workers of a PostgreSQL cluster; without either, everything runs here."""
        self.settings = settings
        self.delivery = delivery
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.store = Store.for_settings(settings, self.clock)
        # the events as committed (csms.outbox), read back and published by the relay
        self.bus = EventBus()
        self.relay = EventRelay(self.store.db, self.bus)
        self.store.db.add_commit_hook(self.relay.wake)
        self.authorizer = Authorizer(self.store, self.clock, settings.id_tags.accept_unknown)
        self.services = Services(settings, self.store, self.clock, self.metrics, self.authorizer)
        self.registry = ConnectionRegistry()
        self.traffic = self.services.traffic
        self.commands = CommandPort(self.services, self.registry)
        self.handlers = OcppHandlers(self.services)
        self.ocpp_server = OcppServer(self.services, self.handlers, self.registry)
        if settings.ocpp.provision_on_boot:
            self.services.on_boot_accepted.append(self._provision)
        else:  # (local lists: after provisioning when there is one, csms.local_lists)
            self.services.on_boot_accepted.append(
                lambda c: self.local_lists.station_ready(c.station_id)
            )
        # signals for every process ("the OCPI peers changed"), csms.topics
        self.topics = Topics()
        if delivery is not None:
            self.topics.forward_to(lambda: delivery.link)
        # on PostgreSQL: one node of a cluster, maybe of many (csms.members)
        self.cluster: ClusterNode | None = None
        if isinstance(self.store.db, PostgresDatabase):
            # (a delivery process listens for itself)
            wake = [self.relay.wake]
            self.cluster = ClusterNode(
                self.store.db,
                self.clock,
                "ocpp" if delivery is not None or delivery_elsewhere else "all",
                url=self.advertise_url,
                relay_cursor=lambda: self.relay.cursor[0],
                wake=wake,
                close_replaced=self.ocpp_server.close_replaced,
                call_timeout=settings.ocpp.call_timeout,
                topics=self.topics,
            )
            self.commands.router = self.cluster.router
            self.ocpp_server.presence = self.cluster.presence
        self.api = Api(self.services, self.registry, self.commands)
        # the OCPP 1.6 security extension's messages, certificates and log uploads
        self.security = SecurityService(
            self.services,
            self.registry,
            self.commands,
            base_url=lambda: default_url(
                self.settings.http.host, self.http_port, tls=self.settings.http.tls
            ),
        )
        for action, handler in self.security.handlers().items():
            self.handlers.add_route(action, handler)
        self.services.command_preparers.update(self.security.preparers())
        self.services.on_boot_accepted.append(self.security.on_boot)
        # firmware campaigns and diagnostics (issue 16, items 2 and 3)
        base_url = self.security.base_url
        self.firmware = FirmwareService(self.services, self.registry, self.commands, base_url)
        self.diagnostics = DiagnosticsService(self.services, self.commands, base_url)
        for action, handler in {**self.firmware.handlers(), **self.diagnostics.handlers()}.items():
            self.handlers.add_route(action, handler)
        self.services.command_preparers.update(self.diagnostics.preparers())
        self.services.on_boot_accepted.append(self.firmware.on_boot)
        password_hash = admin_password_hash or settings.api.admin_password_hash
        if password_hash is None:
            raise ValueError("an admin password hash is needed (see resolve_admin_password)")
        # (also the web interface's first admin, when it has no user at all: csms.web.ui)
        self.admin_password_hash = password_hash
        self.http_guard = ConnectionGuard(HttpLimits.from_settings(settings), self.metrics.registry)
        self.http_app = build_app(
            self.api,
            settings.api.admin_user,
            password_hash,
            self.health,
            self.metrics.registry,
            self.http_guard,
            metrics_token=settings.metrics_token,
            more_metrics=self._delivery_metrics if delivery is not None else None,
        )
        self.http_app.add_routes(self.security.api_routes())
        # local authorization lists kept in sync (issue 16, item 1)
        self.local_lists = LocalListService(
            self.store, self.clock, settings, self.registry, self.commands, self.bus
        )
        self.http_app.add_routes(self.local_lists.api_routes())
        self.http_app.add_routes(self.firmware.api_routes() + self.diagnostics.api_routes())
        # reservations and stuck transactions (issue 16, items 4 and 6)
        self.reservations = ReservationService(self.store, self.clock, self.commands, self.bus)
        self.stuck = StuckService(self.store, self.clock, settings.ocpp.stuck_silence_hours)
        admin = settings.api.admin_user
        self.http_app.add_routes(ReservationApi(self.reservations, admin).routes())
        self.http_app.add_routes(StuckApi(self.stuck, admin).routes())
        # bulk commands and alerts (issue 16, items 5 and 10: csms.bulk, csms.alerts)
        self.bulk = BulkService(
            self.services, self.registry, self.commands, BulkRepository(self.store.db, self.clock)
        )
        self.alerts = AlertService(
            settings.alerts,
            AlertRepository(self.store.db, self.clock),
            self.clock,
            self.bus,
            self.registry,
            self.store.stations,
            self.metrics.registry,
        )
        self.http_app.add_routes(self.bulk.api_routes() + self.alerts.api_routes())
        # the API's contract, built from the routes at its first request (csms.openapi)
        self.http_app.add_routes(contract_routes(self.http_app, package_version()))
        if delivery is not None or self.cluster is not None:
            self.http_app.add_routes(command_routes(self.commands, self._internal_secrets))
        if delivery is not None:
            self.store.db.add_commit_hook(delivery.wake)
        self.web = WebUI(self)
        self.web.add_provider(SecurityWebProvider(self.web, self.security))
        self.web.add_provider(FirmwareWebProvider(self.web, self.firmware, self.diagnostics))
        self.web.add_provider(LocalListWebProvider(self.web, self.local_lists))
        self.web.add_provider(HoldsWebProvider(self.web, self.reservations, self.stuck))
        self.web.add_provider(FleetOpsWebProvider(self.web, self.bulk, self.alerts))
        if settings.web.enabled:
            self.web.mount(self.http_app)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.tls: ServerTls | None = None  # (read at start: ocpp.tls, http.tls, [tls])
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False
        self._probe: asyncio.Task[None] | None = None
        self._probe_done = -WRITE_PROBE_INTERVAL
        self.writer_state: dict[str, Any] = {
            "status": "unknown",
            "last_ok_at": None,
            "last_error": None,
            "last_error_at": None,
        }
        self.extensions = [ext for ext, _ in extensions or []]
        # what extensions get of csms: the port, never the system itself
        self.port = CsmsPort(
            self.store,
            self.clock,
            settings,
            bus=self.bus,
            commands=self.commands,
            registry=self.registry,
            traffic=self.traffic,
            http_app=self.http_app,
            web=self.web,
            token_sources=self.authorizer.add_source,
            metrics_registry=self.metrics.registry,
            http_port=lambda: self.http_port,
            role="ocpp" if delivery is not None or delivery_elsewhere else "all",
            topics=self.topics,
            delivery=self._delivery_link if delivery is not None or delivery_elsewhere else None,
            alerts=self.alerts.raise_alert,
            local_lists=self.local_lists,
        )
        for ext, config in extensions or []:
            ext.attach(self.port, config)

    def _internal_secrets(self) -> list[str]:
        """Who may call the node's internal routes: its delivery process, the cluster."""
        out = [self.delivery.secret] if self.delivery is not None else []
        if self.cluster is not None and self.started:
            out.append(self.cluster.secret)
        return out

    def _delivery_link(self) -> Link | None:
        """Where the delivery runs: on PostgreSQL, the process of the cluster that holds the
        lease (maybe this node's child); else this node's child."""
        if self.cluster is not None:
            return self.cluster.membership.active_delivery
        return self.delivery.link if self.delivery is not None else None

    def advertise_url(self) -> str | None:
        """How the other processes of a cluster reach this node's HTTP server."""
        if self.settings.cluster.advertise_url:
            return self.settings.cluster.advertise_url
        if self._runner is None:
            return None
        return default_url(self.settings.http.host, self.http_port, tls=self.settings.http.tls)

    def reload_files(self) -> None:
        """SIGHUP: re-read the TLS files here (new handshakes use them; open connections
        keep theirs; files that fail to load leave the old ones in use) and in the delivery
        process (its calls' CAs); and the CA that signs station certificates (csms.security)."""
        self.security.reload()
        if self.tls is None:
            return
        reload_all()
        pid = self.delivery.pid if self.delivery is not None else None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    def _provision(self, conn: StationConnection) -> None:
        async def then_local_list() -> None:
            try:
                await provision(conn, self.services, self.commands)
            finally:
                self.local_lists.station_ready(conn.station_id)

        conn.spawn(then_local_list(), "provisioning")

    @property
    def ocpp_port(self) -> int:
        return self.ocpp_server.port

    @property
    def http_port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        # TLS files first: a missing, unreadable or mismatched one is named at once
        self.tls = ServerTls(self.settings, self.metrics.tls_handshakes_failed)
        configure_client(self.settings)
        self.ocpp_server.tls = self.tls
        ocppj.prewarm_validators()
        prepare_data_dir(self.settings.data_dir)
        await self.store.open()
        # the newest committed frame of each station (the events are ahead of the
        # periodic write of last_seen_at), for R7's clock and R8's times after a restart
        for station_id, at in (await latest_seen(self.store.db)).items():
            self.store.stations.note_seen(station_id, at)
        h = self.settings.http
        self._runner = web.AppRunner(
            self.http_app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=h.idle_timeout,
            lingering_time=min(10.0, h.read_timeout),
        )
        await self._runner.setup()
        limit = fd_limit()
        cap = self.http_guard.fit_to_fd_limit(limit)
        self.ocpp_server.guard.fit_to_fd_limit(limit, cap)
        self._site = GuardedSite(
            self._runner, self.http_guard, h.host, h.port, tls=self.tls.acceptor("http")
        )
        await self._site.start()
        log.info(
            "HTTP server listening",
            host=h.host,
            port=self.http_port,
            scheme="https" if h.tls else "http",
            max_connections=cap,
            max_connections_per_address=h.max_connections_per_address,
            fd_limit=limit,
        )
        await self.relay.start()
        if self.cluster is not None:
            await self.cluster.start()
        # extensions start once the HTTP port is known, before stations are let in
        for ext in self.extensions:
            await ext.start()
        if self.delivery is not None:  # (before stations are let in)
            scheme = "https" if h.tls else "http"
            self.delivery.node_url = f"{scheme}://{loopback_host(h.host)}:{self.http_port}"
            await self.delivery.start()
        await self.security.start()
        await self.local_lists.start()
        await self.firmware.start()
        await self.reservations.start()
        await self.alerts.start()
        await self.ocpp_server.start()
        await self.bulk.start()  # (resumed once stations can connect)
        self._tasks.append(asyncio.create_task(self._flush_seen_loop(), name="flush-seen"))
        retired = self.bus.subscribe("close-retired", maxsize=1000, kinds=(StationDefined,))
        self._tasks.append(asyncio.create_task(self._close_retired(retired), name="close-retired"))
        self.started = True

    async def stop(self) -> None:
        log.info("shutting down")
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.delivery is not None:
            await self.delivery.stop()
        await self.bulk.stop()
        await self.ocpp_server.stop()
        await self.security.stop()
        await self.local_lists.stop()
        await self.firmware.stop()
        await self.reservations.stop()
        await self.alerts.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.relay.stop()
        for ext in reversed(self.extensions):
            try:
                await ext.stop()
            except Exception:
                log.exception("extension did not stop cleanly", extension=ext.name)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()
        self.started = False
        log.info("stopped")

    async def _close_retired(self, sub: Subscription) -> None:
        """Close the connection of a station retired on any node (its StationDefined comes
        through the outbox to every node; the one holding the connection closes it)."""
        try:
            while True:
                event = await sub.get()
                if isinstance(event, StationDefined):
                    held = [event.station_id]
                else:  # (Overflow: some were missed; look at every station held here)
                    held = [c.station_id for c in self.registry.all()]
                for station_id in held:
                    if not self.registry.is_connected(station_id):
                        continue
                    try:
                        row = await self.store.stations.get(station_id)
                    except DatabaseError:
                        log.warning("could not read a station's retirement", station_id=station_id)
                        continue
                    conn = self.registry.get(station_id)
                    if conn is not None and row is not None and row["retired_at"] is not None:
                        log.info("connection closed: the station is retired", station_id=station_id)
                        await conn.close(1008, "station retired")
        finally:
            self.bus.unsubscribe(sub)

    async def _flush_seen_loop(self) -> None:
        pruned_at = None
        while True:
            await asyncio.sleep(SEEN_FLUSH_SECONDS)
            try:
                await self.store.stations.flush_seen()
            except Exception:
                log.exception("could not store last-seen times")
            try:
                published = await self._published()
                if published is not None:
                    await self.store.outbox.prune(published)
            except Exception:
                log.exception("could not prune the published events")
            now = self.clock.now()
            if pruned_at is None or now - pruned_at >= STATUS_PRUNE_EVERY:
                pruned_at = now
                try:
                    n = await self.store.status.prune_log(now - STATUS_HISTORY)
                    if n:
                        log.info("status history pruned", rows=n, kept_days=STATUS_HISTORY.days)
                    await self.store.connections.prune(now - STATUS_HISTORY)
                except Exception:
                    log.exception("could not prune the status history")
            self.metrics.store_commits.set(self.store.commits)
            self.metrics.store_jobs.set(self.store.jobs)

    async def health(self) -> dict[str, object]:
        try:
            versions = await self.store.schema_versions()
            db = "ok"
        except Exception as e:
            versions, db = {}, f"error: {e}"
        writer = await self.writer_health() if self.started else dict(self.writer_state)
        ok = db == "ok" and self.started and writer["status"] == "ok"
        report: dict[str, object] = {
            "status": "ok" if ok else "unavailable",
            "database": db,
            "writer": writer,
            "schema_versions": versions,
            "stations_connected": len(self.registry),
        }
        if self.cluster is not None:
            report["cluster"] = await self.cluster.health()
        if self.delivery is not None:
            delivery = await self._delivery_health()
            report["delivery"] = delivery
            if delivery["status"] != "ok":
                report["status"] = "unavailable"
        return report

    async def _published(self) -> Cursor | None:
        """How far every reader has published: ours, and the delivery process's when there
        is one (None while it cannot say: nothing is pruned then, so that it never misses
        an event it had not read); on PostgreSQL, the slowest relay of the cluster."""
        if self.cluster is not None:
            oldest = await self.cluster.membership.oldest_cursor()
            return (oldest, 0) if oldest is not None else None
        if self.delivery is None:
            return self.relay.cursor
        cursor = (await self._delivery_health()).get("cursor")
        if not (isinstance(cursor, list) and len(cursor) == 2):
            return None
        return min(self.relay.cursor, (int(cursor[0]), int(cursor[1])))

    async def _delivery_health(self) -> dict[str, Any]:
        """The delivery process as its supervisor and its own health route see it."""
        assert self.delivery is not None
        d = self.delivery
        out: dict[str, Any] = {"status": "down", "pid": d.pid, "restarts": d.restarts}
        if d.link is not None:
            try:
                _, body = await d.link.request("GET", "/healthz", timeout=5)
                out.update(json.loads(body))
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                out["error"] = str(e)
        return out

    async def _delivery_metrics(self) -> bytes:
        """The delivery process's metrics, appended to ours (nothing while it is down)."""
        assert self.delivery is not None
        link = self.delivery.link
        if link is None:
            return b""
        try:
            status, body = await link.request("GET", "/metrics", timeout=5)
        except (aiohttp.ClientError, TimeoutError):
            return b""
        return body if status == 200 else b""

    async def writer_health(self) -> dict[str, Any]:
        """Whether the store can commit: a real write through the writer (group-committed
        with whatever else is waiting), at most every WRITE_PROBE_INTERVAL seconds. A full
        disk, a read-only or broken file or a stuck writer makes it ``failing``/``stuck``."""
        if self._probe is None or (
            self._probe.done() and time.monotonic() - self._probe_done >= WRITE_PROBE_INTERVAL
        ):
            self._probe = asyncio.create_task(self._probe_writer(), name="writer-probe")
        # once known to be stuck, answer at once rather than make every check wait again
        wait = 0.1 if self.writer_state["status"] == "stuck" else WRITE_PROBE_TIMEOUT
        try:
            await asyncio.wait_for(asyncio.shield(self._probe), wait)
        except TimeoutError:
            self.writer_state["status"] = "stuck"
            self.writer_state["last_error"] = f"no commit within {WRITE_PROBE_TIMEOUT:g} s"
        return dict(self.writer_state)

    async def _probe_writer(self) -> None:
        state = self.writer_state
        try:
            await self.store.db.probe()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if state["status"] != "failing":
                log.error("database writes fail", error=str(e))
            state["status"] = "failing"
            state["last_error"] = f"{type(e).__name__}: {e}"
            state["last_error_at"] = self.clock.now().isoformat()
        else:
            if state["status"] in ("failing", "stuck"):
                log.info("database writes work again")
            state["status"] = "ok"
            state["last_ok_at"] = self.clock.now().isoformat()
        finally:
            self._probe_done = time.monotonic()


def resolve_admin_password(settings: Settings, environ: dict[str, str] | None = None) -> str:
    """The API admin password hash: from ``CSMS_ADMIN_PASSWORD`` (clear, hashed now), the
    config (``api.admin_password_hash``), or, on a first start with neither, a random password
    generated once, whose hash is kept in the data directory and which is printed once."""
    env = os.environ if environ is None else environ
    if env.get("CSMS_ADMIN_PASSWORD"):
        return hash_password(env["CSMS_ADMIN_PASSWORD"])
    configured = settings.api.admin_password_hash
    if configured:
        if not is_password_hash(configured):
            raise ConfigError(
                "api.admin_password_hash: not a hash made by `csms hash-password` "
                "(to give a clear password, use the CSMS_ADMIN_PASSWORD environment variable)"
            )
        return configured
    path = settings.data_dir / "admin-password.hash"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    encoded = hash_password(password)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(encoded + "\n")
    path.chmod(0o600)
    log.warning(
        "no API admin password configured: generated one (shown only this once; its hash is "
        "kept in the data directory; set CSMS_ADMIN_PASSWORD or api.admin_password_hash to "
        "choose your own)",
        user=settings.api.admin_user,
        password=password,
        hash_file=str(path),
    )
    return encoded


def tune_gc() -> None:
    """Garbage collection for a long-running server: what start-up built (modules, schemas,
    validators, templates) is moved out of the collector's sight, and the young generation
    is collected every 50,000 allocations instead of 700. Under load the default collected
    several times per OCPP message and cost some 7 % of the CPU; reference counting still
    frees almost everything at once, the collector is only for cycles."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def run(
    settings: Settings,
    extensions: list[tuple[Extension, Any]] | None = None,
    role: str = "auto",
    config_path: Path | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly. Returns the exit code.

    ``role``: ``auto`` runs the OCPP node here and, when an extension is enabled, its
    delivery in a child process (:mod:`csms.supervisor`); ``all`` runs everything in this
    process; ``delivery`` is that child."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(LoopErrorFilter(loop.get_exception_handler()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP: re-read the TLS files (certificate, key, CAs) without dropping anyone
    reload: list[Any] = [reload_all]
    loop.add_signal_handler(signal.SIGHUP, lambda: reload[-1]())
    if role == "delivery":
        try:
            configure_client(settings)
        except TlsConfigError as e:
            log.error("could not start", error=str(e))
            return 2
        return await _run_delivery(settings, extensions or [], stop)
    if role == "all" and settings.database.url_is_postgres:
        # (its delivery would not take the cluster's lease: beside a delivery worker or a
        # second node it would push everything twice)
        log.error(
            "role all (everything in one process) is for SQLite; on PostgreSQL, `csms run` "
            "(role auto) starts a delivery process that takes the cluster's delivery lease, "
            "or run the roles ocpp and delivery"
        )
        return 2
    if role == "ocpp" and not settings.database.url_is_postgres:
        log.error(
            "role ocpp (an OCPP node whose delivery runs in separate workers) needs "
            "PostgreSQL (database.url); on SQLite, `csms run` starts its own delivery process"
        )
        return 2
    soft, hard = raise_fd_limit()
    log.info("file descriptor limit", soft=soft, hard=hard)
    enabled = any(config is not None for _, config in extensions or [])
    supervisor = None
    if role == "auto" and enabled:
        if config_path is None:
            raise ValueError("a delivery process needs the configuration file's path")
        supervisor = DeliverySupervisor(config_path, node_url="")
    system = CentralSystem(
        settings,
        admin_password_hash=resolve_admin_password(settings),
        extensions=extensions,
        delivery=supervisor,
        delivery_elsewhere=role == "ocpp" and enabled,
    )
    reload.append(system.reload_files)
    try:
        await system.start()
    except (DataDirError, TlsConfigError) as e:
        log.error("could not start", error=str(e))
        await system.stop()
        return 2
    except (OSError, sqlite3.Error, DatabaseError, RuntimeError, TimeoutError) as e:
        log.error("could not start", error=str(e))
        await system.stop()
        return 2 if isinstance(e, sqlite3.Error | PermissionError | DatabaseError) else 1
    tune_gc()
    log.info(
        "central system running",
        data_dir=str(settings.data_dir),
        delivery="child process" if supervisor is not None else "in this process",
    )
    await stop.wait()
    await system.stop()
    return 0


async def _run_delivery(
    settings: Settings, extensions: list[tuple[Extension, Any]], stop: asyncio.Event
) -> int:
    """The delivery process: started by an OCPP node's supervisor (which hands it, in the
    environment, the node's URL, a secret and two pipes), or, on PostgreSQL, by hand as a
    worker of the cluster."""
    if NODE_URL_ENV not in os.environ:
        if not settings.database.url_is_postgres:
            log.error(
                "on SQLite, the delivery process is started by `csms run` itself; a delivery "
                "worker of its own needs PostgreSQL (database.url)"
            )
            return 2
        return await run_delivery(settings, extensions, None, None, None, stop)
    try:
        node = Link(os.environ[NODE_URL_ENV], os.environ[SECRET_ENV])
        wake_fd, ready_fd = int(os.environ[WAKE_FD_ENV]), int(os.environ[READY_FD_ENV])
    except (KeyError, ValueError):
        log.error("the delivery process's environment from its node is incomplete")
        return 2
    for name in (SECRET_ENV, NODE_URL_ENV, WAKE_FD_ENV, READY_FD_ENV):
        os.environ.pop(name, None)  # (not inherited by anything this process starts)
    if settings.database.url_is_postgres:  # (the cluster's lease decides, not a file)
        return await run_delivery(settings, extensions, node, wake_fd, ready_fd, stop)
    with _single_delivery(settings.data_dir, stop) as acquired:
        if not await acquired:
            return 0
        return await run_delivery(settings, extensions, node, wake_fd, ready_fd, stop)


@contextlib.contextmanager
def _single_delivery(data_dir: Path, stop: asyncio.Event) -> Iterator[Awaitable[bool]]:
    """One delivery process per data directory: a lock on ``delivery.lock``, waited for
    while an older one (whose node died) notices and stops. The awaitable says whether it
    was taken (False: told to stop first)."""
    fd = os.open(data_dir / "delivery.lock", os.O_RDWR | os.O_CREAT, 0o600)

    async def acquire() -> bool:
        warned = False
        while not stop.is_set():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not warned:
                    log.warning("another delivery process is still running: waiting for it")
                    warned = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        return False

    try:
        yield acquire()
    finally:
        os.close(fd)
