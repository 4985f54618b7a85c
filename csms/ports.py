"""The one port csms offers its extensions (the OCPI bridge): what they may read, hear and do.

An extension imports this module and no other of csms. It gets, from :class:`CsmsPort`:

- frozen read models of csms's data (:class:`StationSnapshot`, :class:`TransactionView`,
  :class:`MeterReading`, :class:`StatusLogEntry`), from one query method per need; csms's
  tables stay csms's, so their shape can change without an extension noticing (the SQL is
  in csms's repositories, :mod:`csms.repositories`; this module only builds the models);
- the event bus (``bus``: subscribe/unsubscribe) and the event classes, re-exported;
- the command port (``send_command``), the clock, the settings, the HTTP app, the web
  interface's provider registry and the token sources of the authorizer;
- its own tables through :class:`ExtensionDb` (same database and group-commit writer, its
  own migrations), for which it writes portable SQL (see :mod:`csms.db`).

The helpers an extension legitimately shares with csms (time formats, the JSON writer, the
API's error type, the web interface's pieces) are re-exported at the end, each on purpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from aiohttp import web as aiohttp_web
from prometheus_client import CollectorRegistry

from . import openapi as api_contract  # extensions describe their /api/v1 routes with it
from .alerts import KINDS, bounded_details, channels_of
from .api_common import DEFAULT_LIMIT, MAX_LIMIT
from .api_common import paging as api_paging
from .authorization import IdTagInfo, TokenSource
from .clock import Clock, SystemClock
from .cluster import Link, RemoteCommands, loopback_host
from .commands import CommandError, CommandPort, ConnectionRegistry, StationRejected
from .config import ConfigError, Settings
from .db import Dialect, Job, Tx
from .events import (
    Event,
    EventBus,
    MeterSample,
    Overflow,
    StationBooted,
    StationConnected,
    StationDefined,
    StationDisconnected,
    StationSeen,
    StatusChanged,
    Subscription,
    TransactionStarted,
    TransactionStopped,
)
from .exports import ExportError, ExportFilter, stream_csv
from .exports import kwh as export_kwh
from .exports import parse_filter as parse_export_filter
from .http import ApiError, dumps
from .local_lists import Entry as LocalListEntry
from .local_lists import LocalListService, OfflineListSource
from .members import RoutedCommands
from .meter import ENERGY_IMPORT_REGISTER, POWER_IMPORT
from .repositories.alerts import AlertRepository
from .repositories.rows import json_or
from .reservations import Outcome as ReservationOutcome
from .reservations import ReservationRefused, ReservationService, ReserveRequest
from .store import Store
from .tasks import Background
from .timeparse import from_db, parse_api_time, to_db, to_iso, to_ocpp
from .tls import TlsConfigError, client_context, configure_client, link_context
from .topics import Topics
from .traffic import Measured, TrafficMonitor, judge
from .web import NavEntry, WebRoute, WebUI
from .web import fmt as web_fmt
from .web.auth import Proxies
from .web.queries import SessionFilter, like_pattern
from .web.ui import query_string

T = TypeVar("T")

__all__ = [  # noqa: RUF022 (grouped by purpose, not sorted)
    # --- the port and its read models
    "CsmsPort",  # what csms hands each extension at attach()
    "Link",  # how an OCPP node reaches its delivery process (port.delivery_link)
    "loopback_host",  # a listening host as this machine's processes write it in a URL
    "Topics",  # signals for every process (port.topics): "reload what changed"
    "ExtensionDb",  # an extension's own tables: read, write, migrations, dialect
    "standalone_db",  # the same, opened without a running csms (command-line tools)
    "StationSnapshot",  # a station: identity, definition, boot info, connector states
    "ConnectorStatus",  # a connector's latest StatusNotification
    "TransactionView",  # a transaction, every column an extension may read
    "MeterReading",  # one sampled value of a transaction
    "StatusLogEntry",  # one StatusNotification of the history (status_log_since)
    "Tx",  # what a write job gets: the writer's connection (execute, fetch...)
    "Dialect",  # the SQL that differs between SQLite and PostgreSQL
    # --- events (the bus and what it carries)
    "EventBus",
    "Subscription",
    "Event",
    "Overflow",  # a subscriber fell behind: events were dropped, resynchronise
    "StationSeen",
    "StationConnected",
    "StationDisconnected",
    "StationBooted",
    "StationDefined",
    "StatusChanged",
    "TransactionStarted",
    "MeterSample",
    "TransactionStopped",
    # --- commands to stations
    "CommandError",  # a command could not be sent or was not answered
    "StationRejected",  # the station answered with a CallError
    # --- reservations (reserve_now, cancel_reservation)
    "ReservationOutcome",  # the reservation (as the API shows it) and the station's answer
    "ReservationRefused",  # refused before any call (.status, .code, .message)
    # --- charging limits of a session (smart charging offers them, the OCPI bridge uses them)
    "ChargingLimits",  # the protocol: set, clear and read a session's limit
    "SessionSchedule",  # a session's charging schedule, unit A or W
    # --- background tasks of an extension's service (started, logged, cancelled at stop)
    "Background",
    # --- clock and configuration
    "Clock",
    "SystemClock",  # the real clock (a command-line tool's)
    "Settings",
    "ConfigError",  # raised by an extension validating its configuration section
    # --- shared helpers
    "from_db",  # stored time text -> datetime
    "to_db",  # datetime -> stored time text (compares as text on both engines)
    "to_iso",  # datetime -> ISO-8601 to the second, as APIs write it
    "to_ocpp",  # datetime -> OCPP's time format
    "parse_api_time",  # an API query's time -> datetime (ValueError when malformed)
    "dumps",  # the one JSON writer for what csms and its extensions send
    "client_context",  # the SSL context of calls to other servers (OCPI peers): verified
    "link_context",  # the ssl= of a call to a process of this csms (by its URL)
    "configure_client",  # read tls.ca_file for a command-line tool's calls
    "TlsConfigError",  # a TLS file that cannot be used (the message names the setting)
    "ApiError",  # an operator API error answer, raised by an extension's API handlers
    "api_paging",  # an API request's ?limit= and ?offset=, checked (ApiError 400)
    "api_contract",  # csms.openapi: describe an extension's /api/v1 handlers (operation)
    "DEFAULT_LIMIT",  # the operator API's page size, by default
    "MAX_LIMIT",  # and at most
    "IdTagInfo",  # what a token source answers for an id tag
    "TokenSource",  # the protocol of a token source (add_token_source)
    "LocalListEntry",  # an entry of the stations' local lists (add_offline_list_source)
    "OfflineListSource",  # what add_offline_list_source takes: async (limit) -> entries
    "ENERGY_IMPORT_REGISTER",  # the measurand of the energy register
    "POWER_IMPORT",  # the measurand of the active power imported
    "Measured",  # what the traffic monitor measured of a station
    "judge",  # MOBI.E's verdicts on a station's configuration and measured traffic
    "WebUI",  # the web interface (port.web): add_provider, t (messages), settings, queries
    "NavEntry",  # a web interface navigation entry of a provider
    "WebRoute",  # a web interface route of a provider
    "Proxies",  # trusted reverse proxies (web.trusted_proxies): a request's client address
    "web_fmt",  # the web interface's formatting (times, zones, local dates)
    "query_string",  # the web interface's query string builder
    "SessionFilter",  # the web interface's filter of a session list
    "like_pattern",  # a search text as a LIKE pattern (escaped, with \\)
    # --- CSV exports for accounting (csms.exports): filter, cells, streamed response
    "ExportFilter",  # an export's range (UTC), station, token, zone and CSV dialect
    "ExportError",  # an export refused (status, code, message, field)
    "parse_export_filter",  # a request's query -> ExportFilter (ExportError when invalid)
    "stream_csv",  # a header and pages of rows as a streamed CSV download
    "export_kwh",  # Wh -> exact kWh for a cell
]


def _time(text: str | None) -> datetime | None:
    return from_db(text)


def _must_time(text: str) -> datetime:
    value = from_db(text)
    assert value is not None
    return value


# ---------------------------------------------------------------------------- read models


@dataclass(frozen=True, slots=True)
class SessionSchedule:
    """A limit over time for one session (OCPI's ChargingProfile, OCPP's schedule):
    ``periods`` are (seconds from ``start``, limit in ``unit``); ``start`` None: from now
    (a set) or the session's start (a read)."""

    unit: str  # "A" (per phase) or "W"
    periods: tuple[tuple[int, Decimal], ...]
    start: datetime | None = None
    duration: int | None = None
    min_rate: Decimal | None = None


class ChargingLimits(Protocol):
    """What an extension that manages charging limits (smartcharge) offers others: a
    session's limit set by a smart charging party, never above what the site allows.
    Results are OCPI's words: ACCEPTED, REJECTED, UNKNOWN (no such running session)."""

    async def set_session_limit(
        self, transaction_id: int, schedule: SessionSchedule, origin: str
    ) -> str: ...

    async def clear_session_limit(self, transaction_id: int, origin: str) -> str: ...

    async def session_schedule(
        self, transaction_id: int, duration: int
    ) -> SessionSchedule | None: ...


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    connector_id: int
    status: str
    error_code: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StationSnapshot:
    """A station as csms knows it now; ``last_seen_at`` includes the latest frame's arrival
    (kept in memory between writes). ``connectors`` only when the query says so."""

    id: str
    location_id: str | None
    defined: bool
    defined_at: datetime | None
    last_seen_at: datetime | None
    first_boot_at: datetime | None
    definition: dict[str, Any] | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    boot_info: dict[str, Any]
    config_snapshot: list[dict[str, Any]] | None
    connectors: tuple[ConnectorStatus, ...] = ()

    @property
    def evses(self) -> list[dict[str, Any]]:
        """The EVSEs of its definition (none when undefined); one the operator retired
        carries ``removed_at`` (csms's database time text), and stays listed."""
        return list((self.definition or {}).get("evses") or [])


@dataclass(frozen=True, slots=True)
class TransactionView:
    id: int
    station_id: str
    connector_id: int
    id_tag: str
    id_tag_status: str
    tag_owner: str | None  # "CC/PID" of the eMSP whose token started it, if any
    reservation_id: int | None
    meter_start: int
    start_time: datetime
    start_received_at: datetime
    meter_stop: int | None
    stop_time: datetime | None
    stop_reason: str | None
    stop_id_tag: str | None
    stop_received_at: datetime | None
    updated_at: datetime
    flags: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.stop_received_at is None


@dataclass(frozen=True, slots=True)
class MeterReading:
    transaction_id: int
    timestamp: datetime
    measurand: str
    phase: str | None
    value: float


@dataclass(frozen=True, slots=True)
class StatusLogEntry:
    station_id: str
    connector_id: int
    status: str
    received_at: datetime


def _connector(r: dict[str, Any]) -> ConnectorStatus:
    return ConnectorStatus(
        int(r["connector_id"]), r["status"], r.get("error_code"), _must_time(r["received_at"])
    )


def _transaction(r: dict[str, Any]) -> TransactionView:
    return TransactionView(
        id=int(r["id"]),
        station_id=r["station_id"],
        connector_id=int(r["connector_id"]),
        id_tag=r["id_tag"],
        id_tag_status=r["id_tag_status"],
        tag_owner=r["tag_owner"],
        reservation_id=r["reservation_id"],
        meter_start=r["meter_start"],
        start_time=_must_time(r["start_time"]),
        start_received_at=_must_time(r["start_received_at"]),
        meter_stop=r["meter_stop"],
        stop_time=_time(r["stop_time"]),
        stop_reason=r["stop_reason"],
        stop_id_tag=r["stop_id_tag"],
        stop_received_at=_time(r["stop_received_at"]),
        updated_at=_must_time(r["updated_at"] or r["stop_received_at"] or r["start_received_at"]),
        flags=tuple(r["flags"]),
    )


# ---------------------------------------------------------------------------- own tables


class ExtensionDb:
    """An extension's access to its own tables in csms's database: committed reads, writes
    through the group-commit writer (a job of a :class:`Tx`), and its migrations."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def dialect(self) -> Dialect:
        return self._store.dialect

    def add_migrations(self, component: str, package: str) -> None:
        """Version the extension's tables (``<package>.sqlite``/``.postgresql``); before
        the database opens."""
        self._store.add_migrations(component, package)

    async def read(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return await self._store.read(sql, params)

    async def read_one(self, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        return await self._store.read_one(sql, params)

    async def write(self, job: Job[T]) -> T:
        """Run ``job`` in the writer's transaction; return once it is committed."""
        return await self._store.write(job)


@contextlib.asynccontextmanager
async def standalone_db(
    settings: Settings, component: str, package: str
) -> AsyncIterator[ExtensionDb]:
    """The extension's tables without a running csms (a command-line tool): the database
    the configuration names, migrated, closed on exit."""
    store = Store.for_settings(settings, SystemClock())
    store.add_migrations(component, package)
    await store.open()
    try:
        yield ExtensionDb(store)
    finally:
        await store.close()


# ---------------------------------------------------------------------------- the port


class CsmsPort:
    """What csms hands an extension. Built by csms (:mod:`csms.app`); a test can build one
    over a store alone, then only the queries, ``db`` and ``clock`` are there.

    ``role`` says which process the extension is in: ``all`` (everything in one process),
    ``ocpp`` (an OCPP node: stations, API, web, its HTTP endpoints; background delivery is in
    another process, reached through ``delivery_link``) or ``delivery`` (the delivery
    process: events from the outbox, commands through the node, ``http_app`` only for
    internal routes on loopback, no web interface and no token sources).
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings | None = None,
        *,
        bus: EventBus | None = None,
        commands: CommandPort | RemoteCommands | RoutedCommands | None = None,
        registry: ConnectionRegistry | None = None,
        traffic: TrafficMonitor | None = None,
        http_app: aiohttp_web.Application | None = None,
        web: WebUI | None = None,
        token_sources: Callable[[TokenSource], None] | None = None,
        metrics_registry: CollectorRegistry | None = None,
        http_port: Callable[[], int] | None = None,
        role: str = "all",
        topics: Topics | None = None,
        delivery: Callable[[], Link | None] | None = None,
        alerts: Callable[..., Awaitable[int | None]] | None = None,
        local_lists: LocalListService | None = None,
    ) -> None:
        self._store = store
        self._local_lists = local_lists  # (csms.local_lists, in an OCPP node)
        self._alerts = alerts  # (csms.alerts.AlertService.raise_alert, where it runs)
        self._topics = topics
        self.role = role
        self._delivery = delivery
        self.clock = clock
        self.db = ExtensionDb(store)
        self._settings = settings
        self._bus = bus
        self._commands = commands
        self._registry = registry
        self._traffic = traffic
        self._http_app = http_app
        self._web = web
        self._token_sources = token_sources
        self._metrics_registry = metrics_registry
        self._http_port = http_port
        self._charging_limits: ChargingLimits | None = None

    @property
    def delivery_link(self) -> Link | None:
        """In an OCPP node whose delivery runs in another process (role ``ocpp``): how to
        reach that process's internal routes (see :mod:`csms.cluster`); None otherwise or
        while it is not up."""
        return self._delivery() if self._delivery is not None else None

    @staticmethod
    def _need(value: T | None, what: str) -> T:
        if value is None:
            raise RuntimeError(f"this port has no {what} (built over a store alone)")
        return value

    # ------------------------------------------------------------------ what csms offers

    @property
    def settings(self) -> Settings:
        return self._need(self._settings, "settings")

    @property
    def bus(self) -> EventBus:
        return self._need(self._bus, "event bus")

    @property
    def topics(self) -> Topics:
        """Signals for every process of the installation (:mod:`csms.topics`): publish
        what changed in the database so that the others read it again."""
        return self._need(self._topics, "topics")

    @property
    def http_app(self) -> aiohttp_web.Application:
        """csms's HTTP application, to add routes and sub-applications to."""
        return self._need(self._http_app, "HTTP app")

    @property
    def web(self) -> WebUI:
        """The web interface: ``add_provider``, ``t`` (messages), ``settings``."""
        return self._need(self._web, "web interface")

    @property
    def metrics_registry(self) -> CollectorRegistry:
        return self._need(self._metrics_registry, "metrics registry")

    @property
    def http_port(self) -> int:
        """The HTTP port csms listens on (known once it started)."""
        return self._need(self._http_port, "HTTP server")()

    def provide_charging_limits(self, limits: ChargingLimits) -> None:
        """Offer ``limits`` to the other extensions (smart charging does, at attach)."""
        self._charging_limits = limits

    @property
    def charging_limits(self) -> ChargingLimits | None:
        """The session limits an extension offers (None: none does; look it up when
        needed, not at attach: extensions attach in turn)."""
        return self._charging_limits

    def add_token_source(self, source: TokenSource) -> None:
        """Let the authorizer also ask ``source`` about id tags it does not know."""
        self._need(self._token_sources, "authorizer")(source)

    def add_offline_list_source(self, name: str, source: OfflineListSource) -> None:
        """Add ``source``'s entries (tokens that may charge offline) to the local
        authorization lists csms keeps on the stations (csms.local_lists). ``source(limit)``
        returns at most ``limit`` entries, the preferred first (kept when room is short)."""
        self._need(self._local_lists, "local lists").add_source(name, source)

    def offline_list_changed(self) -> None:
        """Tell csms that an offline list source's entries changed (a token invalidated):
        it reads them again at once and updates the connected stations that need it (a
        port without local lists, built over a store alone, ignores it)."""
        if self._local_lists is not None:
            self._local_lists.changed()

    async def send_command(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str,
        on_answer: Callable[[Any], None] | None = None,
    ) -> Any:
        """Send an OCPP call to a connected station; its answer payload, or CommandError.
        ``on_answer`` hears the answer the moment it arrives, before it is stored (see
        :meth:`csms.commands.CommandPort.send`)."""
        commands = self._need(self._commands, "command port")
        return await commands.send(
            station_id, action, payload, timeout=timeout, origin=origin, on_answer=on_answer
        )

    def is_connected(self, station_id: str) -> bool:
        return self._need(self._registry, "connection registry").is_connected(station_id)

    async def raise_alert(
        self,
        kind: str,
        subject: str,
        details: dict[str, Any],
        *,
        open_key: str | None = None,
        close_key: str | None = None,
    ) -> int | None:
        """Raise an operator alert (:mod:`csms.alerts`; kinds ``push_failing`` and
        ``push_recovered`` are the extensions'): stored, then delivered by csms's alert
        worker (webhooks, e-mail). ``open_key``: the condition it reports starts (a second
        alert while it is open is a duplicate: None); ``close_key``: it ended (None when it
        was not open). The alert's id, or None."""
        if kind not in KINDS:
            raise ValueError(f"alert kind is one of {', '.join(KINDS)}")
        if self._alerts is not None:
            return await self._alerts(
                kind, subject, details, open_key=open_key, close_key=close_key
            )
        # (a process without the alert worker, the delivery process: stored for csms's)
        repo = AlertRepository(self._store.db, self.clock)
        channels = channels_of(self.settings.alerts)
        return await repo.raise_alert(
            kind,
            subject[:200],
            bounded_details(details),
            channels,
            open_key=open_key,
            close_key=close_key,
        )

    def traffic_measured(self, station_id: str) -> Measured:
        return self._need(self._traffic, "traffic monitor").measured(station_id)

    # ------------------------------------------------------------------ reservations

    def _reservations(self) -> ReservationService:
        return ReservationService(self._store, self.clock, self._need(self._commands, "commands"))

    async def reserve_now(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        expiry: datetime,
        requested_by: str,
        *,
        parent_id_tag: str | None = None,
        timeout: float | None = None,
    ) -> ReservationOutcome:
        """Reserve a connector (csms allocates the reservationId, sends ReserveNow, keeps
        the answer: ``answer`` is its status, or offline / timeout / CallError:CODE).
        Raises ReservationRefused (unknown or retired station, not its connector)."""
        req = ReserveRequest(connector_id, id_tag, expiry, parent_id_tag)
        return await self._reservations().reserve(station_id, req, requested_by, timeout=timeout)

    async def cancel_reservation(
        self, reservation_id: int, by: str, *, timeout: float | None = None
    ) -> ReservationOutcome:
        """CancelReservation of a held reservation. Raises ReservationRefused (404 unknown,
        409 no longer held)."""
        return await self._reservations().cancel(reservation_id, by, timeout=timeout)

    async def reservation(self, reservation_id: int) -> dict[str, Any] | None:
        """A reservation as the operator API shows it (its ``state`` as of now)."""
        return await ReservationService(self._store, self.clock, None).get(reservation_id)

    # ------------------------------------------------------------------ stations

    def last_seen(self, station_id: str) -> datetime | None:
        """The latest frame's arrival as kept in memory (None: none since start)."""
        return self._store.stations.last_seen(station_id)

    async def persist_seen(self, station_id: str) -> None:
        """Return once the station's latest frame time is committed (before it leaves)."""
        await self._store.stations.persist_seen(station_id)

    def _station(
        self, r: dict[str, Any], connectors: Iterable[ConnectorStatus] = ()
    ) -> StationSnapshot:
        seen = self._store.stations.last_seen(r["id"])
        return StationSnapshot(
            id=r["id"],
            location_id=r["location_id"],
            defined=bool(r["defined"]),
            defined_at=_time(r["defined_at"]),
            last_seen_at=seen if seen is not None else _time(r["last_seen_at"]),
            first_boot_at=_time(r["first_boot_at"]),
            definition=json_or(r["definition"]),
            vendor=r["vendor"],
            model=r["model"],
            serial_number=r["serial_number"],
            firmware_version=r["firmware_version"],
            boot_info=json_or(r["boot_info"], {}),
            config_snapshot=json_or(r["config_snapshot"]),
            connectors=tuple(connectors),
        )

    async def _with_connectors(self, rows: list[dict[str, Any]]) -> list[StationSnapshot]:
        statuses = await self._store.status.of_stations([r["id"] for r in rows])
        return [self._station(r, map(_connector, statuses[r["id"]])) for r in rows]

    async def defined_stations(self) -> list[StationSnapshot]:
        """Every defined station with its connectors, oldest first."""
        return await self._with_connectors(await self._store.stations.snapshot_rows_defined())

    async def station(self, station_id: str) -> StationSnapshot | None:
        """One station, defined or not, with its connectors."""
        row = await self._store.stations.snapshot_row(station_id)
        return (await self._with_connectors([row]))[0] if row else None

    async def defined_station(self, station_id: str) -> StationSnapshot | None:
        """A defined station and its connectors, in one read (once per Location push)."""
        found = await self._store.stations.with_connectors(station_id)
        if found is None:
            return None
        # (the store's light read: identity and definition, none of the boot info)
        row, connectors = found
        seen = self._store.stations.last_seen(station_id)
        return StationSnapshot(
            id=row["id"],
            location_id=row["location_id"],
            defined=bool(row["defined"]),
            defined_at=_time(row["defined_at"]),
            last_seen_at=seen if seen is not None else _time(row["last_seen_at"]),
            first_boot_at=None,
            definition=row["definition"],
            vendor=None,
            model=None,
            serial_number=None,
            firmware_version=None,
            boot_info={},
            config_snapshot=None,
            connectors=tuple(_connector(c) for c in connectors),
        )

    async def stations(
        self, station_ids: Iterable[str], *, connectors: bool = False
    ) -> dict[str, StationSnapshot]:
        """These stations (those that exist), by id; with their connectors if asked."""
        rows = await self._store.stations.snapshot_rows(station_ids)
        found = await self._with_connectors(rows) if connectors else map(self._station, rows)
        return {s.id: s for s in found}

    async def station_by_location(self, location_id: str) -> StationSnapshot | None:
        """The defined station whose Location id this is (case-insensitive)."""
        row = await self._store.stations.snapshot_row_by_location(location_id)
        return (await self._with_connectors([row]))[0] if row else None

    async def station_ids(self, search: str, limit: int, offset: int) -> tuple[list[str], int]:
        """A page of station ids in id order, those whose id or Location id contains
        ``search`` (case-insensitive) when given; and how many in all."""
        like = like_pattern(search) if search else None
        return await self._store.stations.ids(like, limit, offset)

    async def stations_first_booted_since(self, since: datetime) -> list[StationSnapshot]:
        """Stations whose first accepted boot is at or after ``since``, in that order."""
        rows = await self._store.stations.snapshot_rows_first_booted_since(since)
        return [self._station(r) for r in rows]

    async def status_log_since(
        self, station_ids: list[str], after: datetime
    ) -> list[StatusLogEntry]:
        """The StatusNotifications received after ``after``, each connector's previous one
        first (see :meth:`csms.repositories.status.StatusRepository.log_since`)."""
        rows = await self._store.status.log_since(station_ids, after)
        return [
            StatusLogEntry(
                r["station_id"], int(r["connector_id"]), r["status"], _must_time(r["received_at"])
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ transactions

    async def transaction(self, transaction_id: int) -> TransactionView | None:
        row = await self._store.transactions.get(transaction_id)
        return _transaction(row) if row else None

    async def transactions_by_id(self, ids: Iterable[int]) -> dict[int, TransactionView]:
        rows = await self._store.transactions.by_ids(ids)
        return {int(r["id"]): _transaction(r) for r in rows}

    async def transactions(
        self,
        *,
        owners: set[str] | None,
        updated_from: datetime | None,
        updated_to: datetime | None,
        offset: int,
        limit: int,
    ) -> tuple[list[TransactionView], int]:
        """A page (by id) of the transactions on defined stations, updated in
        [updated_from, updated_to), whose token owner is one of ``owners`` (None: any);
        and how many in all."""
        rows, total = await self._store.transactions.page_on_defined_stations(
            owners, updated_from, updated_to, offset, limit
        )
        return [_transaction(r) for r in rows], total

    async def transactions_started(
        self,
        start_from: datetime,
        start_to: datetime,
        *,
        station_id: str | None,
        id_tag: str | None,
        after: TransactionView | None,
        limit: int,
    ) -> list[TransactionView]:
        """The next ``limit`` transactions started in [start_from, start_to), of a station
        and an id tag (case-insensitive) when given, in start time order after ``after``
        (the previous page's last; None: from the start). A keyset read, for exports."""
        key = None
        if after is not None:
            key = (to_db(after.start_time), after.id)
        rows = await self._store.transactions.export_page(
            start_from, start_to, station_id, id_tag, key, limit
        )
        return [_transaction(r) for r in rows]

    async def open_transactions(self) -> list[TransactionView]:
        rows = await self._store.transactions.in_progress()
        return [_transaction(r) for r in rows]

    async def transactions_updated_since(self, since: datetime) -> list[TransactionView]:
        rows = await self._store.transactions.updated_since(since)
        return [_transaction(r) for r in rows]

    async def stopped_transaction_ids(self, after_id: int, limit: int) -> list[int]:
        """Ids of finished transactions above ``after_id``, in order (a page of them)."""
        return await self._store.transactions.stopped_ids(after_id, limit)

    async def active_transaction_on(
        self, station_id: str, connector_id: int
    ) -> TransactionView | None:
        row = await self._store.transactions.active_on(station_id, connector_id)
        return _transaction(row) if row else None

    async def last_stopped_transaction_on(
        self, station_id: str, connector_id: int
    ) -> TransactionView | None:
        """The connector's most recently ended transaction."""
        row = await self._store.transactions.last_stopped_on(station_id, connector_id)
        return _transaction(row) if row else None

    async def first_transaction_started(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        received_from: datetime,
        received_to: datetime,
    ) -> TransactionView | None:
        """The first transaction on that connector with that id tag (case-insensitive)
        whose StartTransaction arrived within [received_from, received_to]."""
        row = await self._store.transactions.first_started(
            station_id, connector_id, id_tag, received_from, received_to
        )
        return _transaction(row) if row else None

    async def meter_series(
        self, transaction_ids: list[int], measurands: Iterable[str]
    ) -> list[MeterReading]:
        """The numeric samples of these measurands of these transactions, in arrival order."""
        rows = await self._store.transactions.meter_series(transaction_ids, measurands)
        return [
            MeterReading(
                int(r["transaction_id"]),
                _must_time(r["timestamp"]),
                r["measurand"],
                r["phase"],
                float(r["value"]),
            )
            for r in rows
        ]
