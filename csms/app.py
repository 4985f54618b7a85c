"""Wiring: one central system in one process, started and stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from . import ocppj
from .api import Api
from .authorization import Authorizer
from .clock import Clock, SystemClock
from .commands import CommandPort, ConnectionRegistry
from .config import Settings
from .connection import StationConnection
from .events import EventBus
from .extensions import Extension
from .handlers import OcppHandlers, Services
from .http import build_app
from .metrics import Metrics
from .passwords import hash_password, is_password_hash
from .provisioning import provision
from .server import OcppServer
from .store import Store
from .web import WebUI

log = structlog.get_logger("csms.app")

SEEN_FLUSH_SECONDS = 15.0
# every StatusNotification is kept this long (status_log), then pruned, hourly
STATUS_HISTORY = timedelta(days=35)
STATUS_PRUNE_EVERY = timedelta(hours=1)


class CentralSystem:
    """The OCPP central system: store, event bus, websocket server, HTTP app.

    ``start()`` opens the store (applying migrations), then serves OCPP and HTTP;
    ``stop()`` closes the station connections, the HTTP server and the store, in that order.
    Extensions (the OCPI bridge) subscribe to ``bus``, add routes to ``http_app``, add
    providers to the web interface (``web.add_provider``, see :mod:`csms.web`) and send
    OCPP requests through ``commands`` between construction and ``start()``.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        admin_password_hash: str | None = None,
        extensions: list[tuple[Extension, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.bus = EventBus()
        self.store = Store(settings.database_path, self.clock, settings.database.synchronous)
        self.authorizer = Authorizer(self.store, self.clock, settings.id_tags.accept_unknown)
        self.services = Services(
            settings, self.store, self.bus, self.clock, self.metrics, self.authorizer
        )
        self.registry = ConnectionRegistry()
        self.traffic = self.services.traffic
        self.commands = CommandPort(self.services, self.registry)
        self.handlers = OcppHandlers(self.services)
        self.ocpp_server = OcppServer(self.services, self.handlers, self.registry)
        if settings.ocpp.provision_on_boot:
            self.services.on_boot_accepted.append(self._provision)
        self.api = Api(self.services, self.registry, self.commands)
        password_hash = admin_password_hash or settings.api.admin_password_hash
        if password_hash is None:
            raise ValueError("an admin password hash is needed (see resolve_admin_password)")
        self.http_app = build_app(
            self.api, settings.api.admin_user, password_hash, self.health, self.metrics.registry
        )
        self.web = WebUI(self)
        if settings.web.enabled:
            self.web.mount(self.http_app)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = False
        self.extensions = [ext for ext, _ in extensions or []]
        for ext, config in extensions or []:
            ext.attach(self, config)

    def _provision(self, conn: StationConnection) -> None:
        conn.spawn(provision(conn, self.services, self.commands), "provisioning")

    @property
    def ocpp_port(self) -> int:
        return self.ocpp_server.port

    @property
    def http_port(self) -> int:
        assert self._runner is not None, "not started"
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        ocppj.prewarm_validators()
        await self.store.open()
        self._runner = web.AppRunner(self.http_app, access_log=None, handle_signals=False)
        await self._runner.setup()
        h = self.settings.http
        self._site = web.TCPSite(self._runner, h.host, h.port)
        await self._site.start()
        log.info("HTTP server listening", host=h.host, port=self.http_port)
        # extensions start once the HTTP port is known, before stations are let in
        for ext in self.extensions:
            await ext.start()
        await self.ocpp_server.start()
        self._tasks.append(asyncio.create_task(self._flush_seen_loop(), name="flush-seen"))
        self.started = True

    async def stop(self) -> None:
        log.info("shutting down")
        await self.ocpp_server.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
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

    async def _flush_seen_loop(self) -> None:
        pruned_at = None
        while True:
            await asyncio.sleep(SEEN_FLUSH_SECONDS)
            try:
                await self.store.flush_seen()
            except Exception:
                log.exception("could not store last-seen times")
            now = self.clock.now()
            if pruned_at is None or now - pruned_at >= STATUS_PRUNE_EVERY:
                pruned_at = now
                try:
                    n = await self.store.prune_status_log(now - STATUS_HISTORY)
                    if n:
                        log.info("status history pruned", rows=n, kept_days=STATUS_HISTORY.days)
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
        return {
            "status": "ok" if db == "ok" and self.started else "unavailable",
            "database": db,
            "schema_versions": versions,
            "stations_connected": len(self.registry),
        }


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
            from .config import ConfigError

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


async def run(settings: Settings, extensions: list[tuple[Extension, Any]] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down cleanly. Returns the exit code."""
    system = CentralSystem(
        settings,
        admin_password_hash=resolve_admin_password(settings),
        extensions=extensions,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await system.start()
    except OSError as e:
        log.error("could not start", error=str(e))
        await system.stop()
        return 1
    tune_gc()
    log.info("central system running", data_dir=str(settings.data_dir))
    await stop.wait()
    await system.stop()
    return 0
