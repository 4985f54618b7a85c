"""A simulated OCPP 1.6J charge point.

The station owns its state (connectors, configuration keys, meter registers, the queue of
transaction messages kept while offline) across connections; each websocket connection is
served by a :class:`charger_sim.link.Link`, an ``ocpp.v16.ChargePoint`` whose ``@on``
handlers answer the central system.

Outgoing calls do not use ``ChargePoint.call()``: it waits on one shared response queue until
``response_timeout`` even when the connection is already gone, drops answers it does not
expect, and needs a dataclass per payload. The station sends calls through
:meth:`Link.request`, which keeps one future per unique id (failed at once when the
connection closes), validates with the library's schemas and hands unexpected frames to
:meth:`Station.next_unmatched_frame`. ``Station.call()`` still accepts the library's
``ocpp.v16.call`` dataclasses.

Conventions
-----------
* Payloads are camelCase dicts, exactly as on the wire, both ways.
* Helpers raise :class:`NotConnectedError` when there is no connection, except for transaction
  messages (StartTransaction, StopTransaction, MeterValues of a transaction): those are queued
  and the helper returns ``None``. Queued messages are delivered in order by one sender task
  as soon as the station is online again; a queued StopTransaction/MeterValues that belongs to
  a transaction whose StartTransaction was queued too gets the transactionId the central
  system assigns when that StartTransaction is answered.
* A CALLERROR answer raises :class:`CallErrorReceived`; no answer within ``response_timeout``
  raises ``TimeoutError``; a schema-invalid answer raises :class:`InvalidResponseError`.
* Message helpers send one message and update the local state; the ``*_charging`` flows and the
  reactions to central-system calls add the status notifications and the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import structlog
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.v16 import call_result as v16_call_result
from websockets.asyncio.client import connect as ws_connect
from websockets.headers import build_authorization_basic

from charger_sim import costdisplay, smart, transfers
from charger_sim.behaviour import Behaviour
from charger_sim.config import ConfigurationStore
from charger_sim.errors import (
    IGNORE,
    CallErrorReceived,
    CallErrorReply,
    InvalidResponseError,
    NotConnectedError,
    SimulatorError,
    SubprotocolError,
)
from charger_sim.link import Link
from charger_sim.security import SecurityOptions, SecurityState
from charger_sim.timeutil import as_timestamp, seconds_until

log = structlog.get_logger("charger_sim")

CallHandler = Callable[[dict[str, Any]], Any]
"""``on_call`` handler: ``fn(payload) -> dict | None | Station.IGNORE | Station.CALL_ERROR(...)``,
sync or async."""

_LONG_WAIT = 60.0  # re-check period of loops that have nothing to do


class _UnresolvedTransaction(SimulatorError):
    """A queued message refers to a transaction whose StartTransaction never got an id."""


@dataclass
class ConnectorState:
    """What the station knows about one connector (connector 0 is the station itself).

    ``transaction_id`` is the id the central system assigned (None while the
    StartTransaction is queued or unanswered); ``meter_wh`` is the energy register, which grows
    by ``power_w`` while a transaction is active. ``power_w`` follows min(``wanted_w`` (None:
    ``Behaviour.charge_power_w``), the charging profiles' limit) with the behaviour's ramp;
    ``held`` withholds power (an invalid idTag kept going); ``suspended``: the station
    reported SuspendedEVSE because its limit is below the car's minimum.
    """

    connector_id: int
    status: str = "Available"
    error_code: str = "NoError"
    transaction_id: int | None = None
    id_tag: str | None = None
    meter_wh: float = 0.0
    power_w: float = 0.0
    availability: str = "Operative"
    reservation: dict[str, Any] | None = None
    tx_ref: int | None = field(default=None, repr=False)
    pending_availability: str | None = field(default=None, repr=False)
    claimed: bool = field(default=False, repr=False)
    wanted_w: float | None = None
    held: bool = False
    suspended: bool = field(default=False, repr=False)
    tx_started_at: datetime | None = field(default=None, repr=False)
    next_sample_at: datetime | None = field(default=None, repr=False)
    meter_task: asyncio.Task[None] | None = field(default=None, repr=False)
    meter_waker: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    flow_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def in_transaction(self) -> bool:
        """A transaction is active locally (its StartTransaction may still be queued)."""
        return self.tx_ref is not None


@dataclass
class StationStats:
    """Counters for the CLI's progress and summary (and for tests)."""

    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    call_errors: Counter[str] = field(default_factory=Counter)
    timeouts: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    queued: int = 0
    dropped: int = 0
    tx_started: int = 0
    tx_stopped: int = 0
    connects: int = 0
    connect_failures: int = 0
    unexpected_disconnects: int = 0
    errors: int = 0
    last_errors: list[str] = field(default_factory=list)

    def record_error(self, text: str) -> None:
        self.errors += 1
        self.last_errors.append(text)
        del self.last_errors[:-20]


@dataclass
class _TxItem:
    action: str
    payload: dict[str, Any]
    tx_ref: int | None
    future: asyncio.Future[Any]
    detached: bool = False
    attempts: int = 0


class Station:
    """A simulated OCPP 1.6J charge point (see the module docstring for conventions).

    ``Station(id, url, connectors, password=..., vendor=..., model=..., serial_number=...,
    firmware_version=..., behaviour=Behaviour(...), response_timeout=10)``.

    ``config`` overrides initial configuration key values; ``subprotocols`` are offered in the
    handshake (``require_subprotocol``: fail when the server selects none);
    ``connect_kwargs`` go to ``websockets.asyncio.client.connect`` (e.g. ``ssl``, ``proxy``;
    the default is no proxy); ``max_queue`` caps the offline queue (the oldest MeterValues are
    dropped first, Start/StopTransaction never); ``cost_display`` gives the station the
    pricing extension (see below).

    ``clock`` (a callable returning an aware datetime) gives the station its time: meter
    integration, the timestamps it sends, profile validity. Without it the station lives in
    real time and its loops sleep. With it (e.g. :class:`charger_sim.smart.SimClock`), time
    only moves when the test moves it: the periodic MeterValues loops do not run, and
    :meth:`catch_up` (or :meth:`advance` for a SimClock) does what they would have done for
    the elapsed time, in time order and with the clock's timestamps, so a simulated day
    takes seconds.

    Public state: ``connectors`` (``{0..N: ConnectorState}``), ``config``
    (:class:`ConfigurationStore`), ``calls_received`` (``[(action, payload)]`` from the central
    system, in order), ``calls_sent`` (``[(action, payload)]`` sent), ``stats``,
    ``boot_status``, ``local_auth_list``, ``local_list_version``, ``charging_profiles``,
    ``firmware_status``, ``diagnostics_status``, ``display`` (the text its display shows,
    None until the central system sent one) and ``cost_messages`` (the last 100
    :class:`~charger_sim.costdisplay.CostMessage` accepted, oldest first); ``on_display``,
    when set, is called with the station and the new text each time the display changes.

    Answers to the central system (``on_call`` overrides any of them; :class:`Behaviour`
    chooses the outcome where noted; the follow-up runs after the answer is sent and
    :meth:`wait_idle` waits for it):

    * ChangeConfiguration: unknown key NotSupported, read-only key or invalid value
      (non-integer or negative interval, bad boolean, unknown measurand) Rejected, else
      Accepted; HeartbeatInterval and MeterValueSampleInterval restart the running loops.
    * GetConfiguration: all keys without ``key``, else the known ones plus ``unknownKey``.
    * RemoteStartTransaction / RemoteStopTransaction / UnlockConnector / Reset /
      TriggerMessage / DataTransfer: see :class:`Behaviour`.
    * ChangeAvailability: Rejected for an unknown connector, Scheduled when an affected
      connector has a transaction (applied when it ends), else Accepted; then
      StatusNotification Unavailable/Available for the affected idle connectors (0 too for
      connectorId 0).
    * ClearCache: Accepted. GetLocalListVersion / SendLocalList (Full, Differential,
      VersionMismatch for an old differential version, Failed beyond SendLocalListMaxLength
      entries or a list beyond LocalAuthListMaxLength, NotSupported and version -1 when
      LocalAuthListEnabled is false). ReserveNow (Accepted + Reserved
      status and expiry, Occupied, Faulted, Unavailable, Rejected for an unknown connector
      or connector 0) / CancelReservation (Accepted or Rejected). SetChargingProfile /
      ClearChargingProfile / GetCompositeSchedule: see "Smart charging" below.
      GetDiagnostics (file name, then Uploading, a generated file really
      uploaded with HTTP PUT, Uploaded/UploadFailed) / UpdateFirmware (Downloading, the image
      really downloaded with HTTP GET, Downloaded, Installing, reboot with the new version,
      Installed, or a failure): see :mod:`charger_sim.transfers`.
    * The pricing extension (DataTransfer with vendorId ``org.openchargealliance.costmsg``:
      SetUserPrice, RunningCost, FinalCost), only with ``cost_display=True`` (the read-only
      key CustomDisplayCostAndPrice is then true): Accepted and shown, UnknownMessageId,
      or Rejected for unusable data; see :mod:`charger_sim.costdisplay`. Without it, that
      vendorId is answered like any other (``Behaviour.data_transfer``).
    * The security extension (CertificateSigned, InstallCertificate,
      GetInstalledCertificateIds, DeleteCertificate, ExtendedTriggerMessage, GetLog,
      SignedUpdateFirmware, ChangeConfiguration SecurityProfile): see
      :mod:`charger_sim.security` (``security=SecurityOptions(...)``).
    * Smart charging (:mod:`charger_sim.smart` holds the rules): SetChargingProfile is
      Rejected for an unknown connector, a unit not in
      ChargingScheduleAllowedChargingRateUnit, a stack level above
      ChargeProfileMaxStackLevel, more periods than ChargingScheduleMaxPeriods, one profile
      too many for MaxChargingProfilesInstalled (a profile with the same id, or the same
      purpose, stack level and connector, replaces the old one), a ChargePointMaxProfile off
      connector 0, a TxProfile without a transaction (or for another transactionId), and a
      profile that makes no sense (periods out of order, ...); else Accepted and obeyed at
      once: each connector's power follows min(wanted, limit) with ``Behaviour``'s ramp, an
      offer below ``min_current_a`` suspends it (StatusNotification SuspendedEVSE, then
      Charging again), and MeterValues add Current.Offered while a profile applies (and
      Current.Import per phase when MeterValuesSampledData asks for it). TxProfiles end
      with their transaction; a hard reboot drops all profiles unless
      ``Behaviour.keep_profiles``. ClearChargingProfile: Accepted or Unknown.
      GetCompositeSchedule: the real composite of the connector (0: the station's
      ChargePointMaxProfile) in the unit asked (default: A when allowed), the rated current
      where nothing limits; Rejected for an unknown connector or a duration below 1.
      ``limit_a(connector_id)`` / ``limit_w(connector_id)`` read the limit now.
    * Other 1.6 actions (requests a charge point sends): CALLERROR NotImplemented; actions
      not in 1.6: NotSupported; schema-invalid requests: the library's code, with 1.6's
      spelling ``FormationViolation``.
    """

    IGNORE = IGNORE
    CALL_ERROR = CallErrorReply

    def __init__(
        self,
        charge_point_id: str,
        url: str,
        connectors: int = 1,
        *,
        password: str | None = None,
        vendor: str = "SimVendor",
        model: str = "SimModel-2",
        serial_number: str | None = None,
        firmware_version: str | None = "1.0.0",
        behaviour: Behaviour | None = None,
        response_timeout: float = 10.0,
        config: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = ("ocpp1.6",),
        require_subprotocol: bool = True,
        connect_kwargs: Mapping[str, Any] | None = None,
        max_queue: int = 1000,
        security: SecurityOptions | None = None,
        cost_display: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if connectors < 1:
            raise ValueError("a station needs at least one connector")
        self.id = charge_point_id
        self.url = url
        self.password = password
        self.vendor = vendor
        self.model = model
        self.serial_number = serial_number
        self.firmware_version = firmware_version
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self.response_timeout = response_timeout
        self.subprotocols = list(subprotocols)
        self.require_subprotocol = require_subprotocol
        self.connect_kwargs = dict(connect_kwargs or {})
        self.max_queue = max_queue

        self.config = ConfigurationStore(connectors, config)
        if cost_display:
            self.config.set(costdisplay.SUPPORT_KEY, True, readonly=True)
        if self.behaviour.authorize_remote_tx is not None:
            self.config.set("AuthorizeRemoteTxRequests", self.behaviour.authorize_remote_tx)
        self.connectors: dict[int, ConnectorState] = {
            n: ConnectorState(n) for n in range(connectors + 1)
        }
        self.calls_received: list[tuple[str, dict[str, Any]]] = []
        self.calls_sent: list[tuple[str, dict[str, Any]]] = []
        self.stats = StationStats()
        self.boot_status: str | None = None
        self.last_boot_response: dict[str, Any] | None = None
        self.subprotocol: str | None = None
        self.local_auth_list: dict[str, dict[str, Any]] = {}
        self.local_list_version = 0
        self.auth_cache: dict[str, dict[str, Any]] = {}
        self._clock: Callable[[], datetime] = clock or _wall_clock
        self.simulated_time = clock is not None
        self.charging_profiles: dict[int, dict[str, Any]] = {}
        self._parsed: dict[int, smart.Profile] = {}
        # replaced or cleared profiles, with when: they still rule the time before that
        # (a station catching up with an injected clock integrates that time later)
        self._retired: list[tuple[smart.Profile, datetime]] = []
        self._meter_at = self.now()
        self._limits_lock = asyncio.Lock()
        self._limit_waker = asyncio.Event()
        self._limit_task: asyncio.Task[None] | None = None
        self.firmware_status = "Idle"
        self.diagnostics_status = "Idle"
        # the pricing extension (charger_sim.costdisplay): what the display shows
        self.display: str | None = None
        self.cost_messages: list[costdisplay.CostMessage] = []
        self.on_display: Callable[[Station, str], None] | None = None
        # security profile, certificates and the security extension (charger_sim.security)
        self.security = SecurityState(self, security)

        self._link: Link | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._followups: set[asyncio.Task[Any]] = set()
        self._overrides: dict[str, CallHandler] = {}
        self._consumed: set[int] = set()
        self._call_event = asyncio.Event()
        self._unmatched: asyncio.Queue[Any] = asyncio.Queue()
        self._hb_wakers: set[asyncio.Event] = set()
        self._boot_event = asyncio.Event()
        self._ever_booted = False
        self._tx_queue: list[_TxItem] = []
        self._tx_gate = False
        self._tx_wakeup = asyncio.Event()
        self._tx_progress = asyncio.Event()
        self._tx_ids: dict[int, int | None] = {}
        self._sender_task: asyncio.Task[None] | None = None
        self._delivering: _TxItem | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._next_ref = 0
        self._closing = False
        self._offline = False
        self.log = log.bind(station=charge_point_id)

    # ------------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        """A websocket is open."""
        return self._link is not None and not self._link.closed

    @property
    def link(self) -> Link | None:
        """The ``ocpp.v16.ChargePoint`` serving the current connection, if any."""
        return self._link

    @property
    def number_of_connectors(self) -> int:
        return len(self.connectors) - 1

    @property
    def heartbeat_interval(self) -> int:
        """The interval the heartbeat loop uses (configuration key HeartbeatInterval)."""
        return self.config.get_int("HeartbeatInterval")

    @property
    def booted(self) -> bool:
        """The last BootNotification was Accepted."""
        return self.boot_status == "Accepted"

    @property
    def queued_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Transaction messages waiting for delivery, oldest first."""
        return [(item.action, dict(item.payload)) for item in self._tx_queue]

    @property
    def active_transactions(self) -> int:
        return sum(1 for conn in self.connectors.values() if conn.in_transaction)

    # ------------------------------------------------------------------ time & smart charging

    def now(self) -> datetime:
        """The station's time: its clock's (aware) datetime."""
        moment = self._clock()
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise SimulatorError(f"{self.id}: the clock must return an aware datetime")
        return moment

    @property
    def _profiles(self) -> dict[int, smart.Profile]:
        """The installed profiles, parsed. ``charging_profiles`` (by id: the
        csChargingProfiles object as received, snake_case, plus ``connector_id``) is the
        source: a test that edits it (``clear()`` as a lost memory) is obeyed."""
        parsed: dict[int, smart.Profile] = {}
        for pid, raw in self.charging_profiles.items():
            known = self._parsed.get(pid)
            if known is None or known.raw is not raw:
                try:
                    connector_id = int(raw.get("connector_id", 0))
                    fresh = smart.parse_profile(raw, connector_id, self._meter_at)
                except (smart.ProfileError, TypeError, ValueError, AttributeError):
                    continue  # (a test put something unusable there: ignored)
                known = dataclasses.replace(fresh, raw=raw)
            parsed[pid] = known
        self._parsed = parsed
        return parsed

    @property
    def capabilities(self) -> smart.Capabilities:
        """What the smart charging configuration keys allow (read at each use)."""
        return smart.Capabilities.from_config(self.config.get)

    def limit(self, connector_id: int, at: datetime | None = None) -> smart.Limit | None:
        """The limit of a connector (0: the station's ChargePointMaxProfile) at ``at``
        (default now) from the installed profiles, as OCPP 1.6 3.13 composes them; None when
        no profile limits it. (The station's sharing of its maximum among connectors is not
        included: see ``offered_a``.)"""
        conn = self._connector(connector_id)
        moment = self.now() if at is None else at
        profiles = self._visible(moment)
        voltage = self.behaviour.voltage
        return smart.connector_limit(profiles, connector_id, moment, self._tx_of(conn), voltage)

    def limit_a(self, connector_id: int) -> float | None:
        """The connector's limit now, in A per phase (None: no profile limits it)."""
        limit = self.limit(connector_id)
        return None if limit is None else limit.amps

    def limit_w(self, connector_id: int) -> float | None:
        """The connector's limit now, in W (None: no profile limits it)."""
        limit = self.limit(connector_id)
        return None if limit is None else limit.watts

    def offered_a(self, connector_id: int) -> float | None:
        """What the station offers a charging connector now, in A per phase: its limit,
        lowered to its share of the station maximum (what MeterValues report as
        Current.Offered); None when nothing limits it or it has no transaction."""
        cap = self._caps(self.now()).get(connector_id)
        return None if cap is None or cap.limit is None else cap.limit.amps

    def install_profile(self, connector_id: int, raw: Mapping[str, Any]) -> str | None:
        """Install a charging profile as SetChargingProfile does; return why it is rejected
        (None: installed, replacing the ones with its id or its purpose, stack level and
        connector). Call :meth:`catch_up`/the central system's flow for the statuses."""
        if not 0 <= connector_id <= self.number_of_connectors:
            return f"no connector {connector_id}"
        now = self.now()
        try:
            profile = smart.parse_profile(raw, connector_id, now)
        except smart.ProfileError as exc:
            return str(exc)
        conn = self.connectors[connector_id]
        tx = (True, conn.transaction_id) if connector_id > 0 and conn.in_transaction else None
        caps = self.capabilities
        why = smart.refusal(profile, self._profiles, caps, self.number_of_connectors, tx)
        if why is not None:
            return why
        for pid in smart.replaced_by(self._profiles, profile):
            self._retire(pid, now)
        self.charging_profiles[profile.id] = profile.raw
        self._parsed[profile.id] = profile
        return None

    def clear_profiles(
        self,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> int:
        """Remove the profiles that match every criterion given (ClearChargingProfile);
        return how many."""
        now = self.now()
        removed = 0
        for pid, profile in list(self._profiles.items()):
            if profile_id is not None and pid != profile_id:
                continue
            if connector_id is not None and profile.connector_id != connector_id:
                continue
            if purpose is not None and profile.purpose != purpose:
                continue
            if stack_level is not None and profile.stack_level != stack_level:
                continue
            self._retire(pid, now)
            removed += 1
        return removed

    def composite_schedule(
        self, connector_id: int, duration: int, unit: str | None = None
    ) -> dict[str, Any] | None:
        """GetCompositeSchedule's answer (snake_case fields) from now for ``duration``
        seconds, in ``unit`` (default: A when allowed, else W); None when it is Rejected
        (unknown connector, duration below 1, unit not A/W)."""
        if not 0 <= connector_id <= self.number_of_connectors or duration < 1:
            return None
        unit = unit or self.capabilities.preferred_unit
        if unit not in ("A", "W"):
            return None
        now = self.now()
        periods = smart.composite(
            list(self._profiles.values()),
            connector_id,
            now,
            duration,
            unit,
            self._tx_of(self.connectors[connector_id]),
            self.behaviour.voltage,
            self.behaviour.max_current_a,
        )
        start = as_timestamp(now)
        return {
            "status": "Accepted",
            "connector_id": connector_id,
            "schedule_start": start,
            "charging_schedule": {
                "duration": duration,
                "start_schedule": start,
                "charging_rate_unit": unit,
                "charging_schedule_period": [
                    {"start_period": offset, "limit": limit} for offset, limit in periods
                ],
            },
        }

    async def advance(self, seconds: float) -> None:
        """Move the station's :class:`~charger_sim.smart.SimClock` forward and
        :meth:`catch_up`. (A clock shared by several stations moves for all: catch each of
        them up.)"""
        clock = self._clock
        if not isinstance(clock, smart.SimClock):
            raise SimulatorError(
                f"{self.id}: advance() needs Station(clock=SimClock(...)); "
                "with another clock, move it and call catch_up()"
            )
        clock.advance(seconds)
        await self.catch_up()

    async def catch_up(self) -> None:
        """Live the time between the last catch-up and the clock's now, in time order: the
        meters integrate (power following the limits with the ramp), SuspendedEVSE /
        Charging are reported when a limit crosses the car's minimum, and each connector
        with a transaction sends its periodic MeterValues every MeterValueSampleInterval
        (with those instants as timestamps). Only needed with an injected clock (in real
        time the loops do it)."""
        until = self.now()
        while True:
            at = self._meter_at
            events = [until]
            for conn in self._real_connectors():
                due = conn.next_sample_at
                if conn.in_transaction and due is not None and due < until:
                    events.append(due)
            if self._profiles or self._retired:
                change = self._next_limit_change(at)
                if change is not None and change < until:
                    events.append(change)
            moment = max(min(events), at)
            await self._apply_limits(moment)
            for conn in self._real_connectors():
                due = conn.next_sample_at
                if not conn.in_transaction or due is None or due > moment:
                    continue
                interval = self.config.get_int("MeterValueSampleInterval")
                ok = interval > 0 and self.behaviour.auto_meter_values
                conn.next_sample_at = moment + timedelta(seconds=interval) if ok else None
                try:
                    await self.meter_values(conn.connector_id, timestamp=moment)
                except (SimulatorError, TimeoutError) as exc:
                    self.log.warning("meter values failed", error=repr(exc))
            if moment >= until:
                return

    def _retire(self, profile_id: int, at: datetime) -> None:
        profile = self._profiles.get(profile_id)
        del self.charging_profiles[profile_id]
        if profile is not None and at > self._meter_at:
            self._retired.append((profile, at))

    def _visible(self, at: datetime) -> list[smart.Profile]:
        """The profiles in force at ``at``: received by then, not yet replaced or cleared."""
        current = [p for p in self._profiles.values() if p.received_at <= at]
        return current + [p for p, gone in self._retired if p.received_at <= at < gone]

    def _tx_of(self, conn: ConnectorState) -> smart.Tx | None:
        if not conn.in_transaction or conn.tx_started_at is None:
            return None
        return smart.Tx(conn.transaction_id, conn.tx_started_at)

    def _wanted(self, conn: ConnectorState) -> float:
        return self.behaviour.charge_power_w if conn.wanted_w is None else max(0.0, conn.wanted_w)

    def _caps(self, at: datetime) -> dict[int, smart.Cap]:
        demands = [
            smart.Demand(
                conn.connector_id,
                smart.Tx(conn.transaction_id, conn.tx_started_at or at),
                self._wanted(conn),
                conn.held,
            )
            for conn in self._real_connectors()
            if conn.in_transaction
        ]
        behaviour = self.behaviour
        profiles = self._visible(at)
        return smart.station_caps(profiles, at, demands, behaviour.voltage, behaviour.min_current_a)

    def _next_limit_change(self, after: datetime) -> datetime | None:
        starts = {
            conn.connector_id: conn.tx_started_at
            for conn in self._real_connectors()
            if conn.in_transaction and conn.tx_started_at is not None
        }
        best: datetime | None = None
        edges = [p.received_at for p in self._profiles.values()]
        edges += [m for p, gone in self._retired for m in (p.received_at, gone)]
        for edge in edges:
            if edge > after and (best is None or edge < best):
                best = edge
        everything = list(self._profiles.values()) + [p for p, _ in self._retired]
        for profile in everything:
            relative: list[datetime | None] = [None]
            if profile.kind == "Relative" and profile.purpose != "ChargePointMaxProfile":
                relative = [
                    start for cid, start in starts.items() if profile.connector_id in (0, cid)
                ] or [None]
            for start in relative:
                change = smart.next_change(profile, after, start)
                if change is not None and (best is None or change < best):
                    best = change
        return best

    def _integrate(self, until: datetime) -> None:
        """Advance every connector's power and energy register up to ``until``, in steps
        that end where a profile's limit may change (the power ramps within a step)."""
        at = self._meter_at
        rate = self.behaviour.ramp_w_per_s
        while at < until:
            step_end = until
            if self._profiles or self._retired:
                change = self._next_limit_change(at)
                if change is not None and change < until:
                    step_end = change
            seconds = (step_end - at).total_seconds()
            for cid, cap in self._caps(at).items():
                conn = self.connectors[cid]
                energy, conn.power_w = smart.ramp(conn.power_w, cap.target_w, rate, seconds)
                conn.meter_wh += energy
            at = step_end
        self._meter_at = at
        if self._retired:
            self._retired = [(p, gone) for p, gone in self._retired if gone > at]
        for cid, cap in self._caps(at).items():  # (a car follows a lower offer at once)
            conn = self.connectors[cid]
            conn.power_w = min(conn.power_w, cap.target_w)

    async def _apply_limits(self, at: datetime) -> None:
        """Integrate up to ``at`` and report the connectors whose limit crossed the car's
        minimum: SuspendedEVSE, and Charging again when it allows charging."""
        async with self._limits_lock:
            self._integrate(at)
            caps = self._caps(max(at, self._meter_at))
            changes: list[tuple[ConnectorState, str]] = []
            for conn in self._real_connectors():
                cap = caps.get(conn.connector_id)
                if cap is None or conn.held or conn.flow_lock.locked():
                    continue
                if cap.suspended and conn.status == "Charging":
                    conn.suspended = True
                    changes.append((conn, "SuspendedEVSE"))
                elif not cap.suspended and conn.suspended:
                    conn.suspended = False
                    if conn.status == "SuspendedEVSE":
                        changes.append((conn, "Charging"))
            for conn, status in changes:
                await self._status_quietly(conn, status, timestamp=at)

    async def _limits_changed(self) -> None:
        """After a profile was installed or cleared: apply it at once (statuses), and let
        the real-time loop wait for the next change. With an injected clock, a station
        that has not caught up yet applies it when :meth:`catch_up` reaches the instant it
        arrived (so the MeterValues of the time before still follow the old limits)."""
        await self._apply_limits(self._meter_at if self.simulated_time else self.now())
        self._wake_limits()

    def _wake_limits(self) -> None:
        """Real time only: (re)start the loop that reports suspensions when a schedule
        reaches a new period."""
        if self.simulated_time or not self._profiles or not self.connected or self._closing:
            return
        if self._limit_task is None or self._limit_task.done():
            self._limit_task = self._spawn(self._limit_loop(), "limits")
        self._limit_waker.set()

    async def _limit_loop(self) -> None:
        while True:
            self._limit_waker.clear()
            now = self.now()
            await self._apply_limits(now)
            change = self._next_limit_change(now) if self.active_transactions else None
            wait = _LONG_WAIT
            if change is not None:
                wait = min(_LONG_WAIT, max(0.0, (change - self.now()).total_seconds()) + 0.001)
            await _wait_event(self._limit_waker, wait)

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        """Open the websocket to ``url/<urlquoted id>`` and start receiving.

        Offers ``ocpp1.6`` with compression off, and HTTP Basic credentials (user = charge
        point id) when ``password`` is set. A refused handshake raises
        ``websockets.exceptions.InvalidStatus`` (the HTTP status is
        ``exc.response.status_code``); an unreachable server raises ``OSError``; a handshake
        that does not finish within ``response_timeout`` raises ``TimeoutError``. Queued
        transaction messages are delivered at once (use :meth:`go_online` to boot first).
        """
        if self.connected:
            return
        self._offline = False
        await self._open_link()
        self._open_tx_gate()

    async def disconnect(self) -> None:
        """Close the websocket cleanly and cancel every background task of the station.

        Local state (connectors, transactions, queue) is kept; :meth:`connect` can be called
        again. No automatic reconnection follows.
        """
        self._closing = True
        try:
            link = self._link
            if link is not None:
                link.intentional = True
                await self._close_link(link, clean=True)
            await self._cancel_tasks()
            self._park_queue()
        finally:
            self._closing = False
            self._link = None
            self._tx_gate = False

    async def go_offline(self, *, clean: bool = False, mid_call: bool = False) -> None:
        """Lose the connection, as on a network failure (TCP dropped without a close frame;
        ``clean=True`` sends a close frame instead).

        By default the drop waits (up to ``response_timeout``) for a call in flight to be
        answered, so nothing is half-delivered. ``mid_call=True`` drops at once: a
        transaction message whose answer is lost is sent again after reconnecting (the
        central system then sees it twice, as with real chargers).

        Until :meth:`go_online`, transaction messages are queued and other messages raise
        :class:`NotConnectedError`; transactions and their meter loops keep running.
        """
        self._offline = True
        link = self._link
        if link is None:
            return
        link.intentional = True
        locked = False
        if not mid_call:
            try:
                await asyncio.wait_for(link._call_lock.acquire(), self.response_timeout)
                locked = True
            except TimeoutError:
                pass
        try:
            await self._close_link(link, clean=clean)
        finally:
            if locked:
                link._call_lock.release()

    async def go_online(
        self, *, boot: bool = True, report_status: bool = True, timeout: float | None = None
    ) -> None:
        """Reconnect, optionally boot (retrying while Pending/Rejected), deliver the queue in
        order, then report every connector's status.

        Returns once the queue is empty or ``timeout`` (default: about ``response_timeout``
        per queued message, at least 30 s) has passed. Raises like :meth:`connect`, and
        :class:`SimulatorError` when the boot is never accepted.
        """
        if not self.connected:
            self._offline = False
            await self._open_link()
        if boot:
            resp = await self._boot_until_accepted()
            if resp.get("status") != "Accepted":
                raise SimulatorError(f"{self.id}: BootNotification not accepted: {resp}")
        elif self._ever_booted:
            self._ensure_heartbeat()
        self._open_tx_gate()
        if timeout is None:
            timeout = max(30.0, self.response_timeout * (len(self._tx_queue) + 1))
        if not await self._wait_queue_drained(timeout):
            self.log.warning("queue not drained after reconnect", left=len(self._tx_queue))
        if report_status and self.connected:
            await self.report_statuses()

    async def _open_link(self) -> None:
        base = self.security.url(self.url)
        url = f"{base.rstrip('/')}/{quote(self.id, safe='')}"
        headers: dict[str, str] = {}
        if self.password is not None and self.security.sends_password():
            headers["Authorization"] = build_authorization_basic(self.id, self.password)
        options: dict[str, Any] = {
            "subprotocols": self.subprotocols or None,
            "compression": None,
            "additional_headers": headers,
            "open_timeout": self.response_timeout,
            "close_timeout": 5,
            "proxy": None,
        }
        context = self.security.ssl_context(url)
        if context is not None:
            options["ssl"] = context
        options.update(self.connect_kwargs)
        try:
            ws = await ws_connect(url, **options)
        except Exception as exc:
            self.stats.connect_failures += 1
            self.stats.record_error(f"connect failed: {exc!r}")
            raise
        if self.require_subprotocol and self.subprotocols and ws.subprotocol is None:
            await ws.close()
            self.stats.connect_failures += 1
            self.stats.record_error("server selected no subprotocol")
            raise SubprotocolError(f"{self.id}: server selected none of {self.subprotocols}")
        self.subprotocol = ws.subprotocol
        link = Link(self, ws)
        self._link = link
        self.stats.connects += 1
        link.rx_task = self._spawn(self._receive_loop(link), "receive")
        self.log.info("connected", url=url, subprotocol=ws.subprotocol)

    async def _receive_loop(self, link: Link) -> None:
        try:
            await link.start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ConnectionClosed, or a transport error
            if not link.intentional:
                self.log.info("connection ended", reason=repr(exc))
        finally:
            self._on_link_closed(link)

    def _on_link_closed(self, link: Link) -> None:
        if link.closed:
            return
        link.closed = True
        link.fail_pending()
        if self._link is link:
            self._link = None
            self._tx_gate = False
            self._park_queue()
        for waker in self._hb_wakers:
            waker.set()
        self._tx_progress.set()
        if link.intentional or self._closing:
            return
        code = link.ws.close_code
        self.stats.unexpected_disconnects += 1
        self.stats.record_error(f"connection closed unexpectedly (code {code})")
        self.log.warning("connection lost", close_code=code)
        if self.behaviour.auto_reconnect and not self._offline:
            self._start_reconnect()

    async def _close_link(self, link: Link, *, clean: bool) -> None:
        if clean:
            try:
                await asyncio.wait_for(link.ws.close(), timeout=5)
            except Exception:
                link.ws.transport.abort()
        else:
            link.ws.transport.abort()
        rx = link.rx_task
        if rx is not None and rx is not asyncio.current_task() and not rx.done():
            await asyncio.wait({rx}, timeout=5)
        self._on_link_closed(link)

    def _start_reconnect(self) -> None:
        if self._reconnect_task is not None and not self._reconnect_task.done():
            return
        self._reconnect_task = self._spawn(self._reconnect_loop(), "reconnect")

    async def _reconnect_loop(self) -> None:
        delay = max(0.05, self.behaviour.reconnect_delay)
        while not self.connected and not self._closing and not self._offline:
            await asyncio.sleep(delay)
            try:
                await self.go_online(boot=self.behaviour.boot_on_reconnect)
                return
            except (OSError, TimeoutError, SimulatorError) as exc:
                self.log.info("reconnect failed", error=repr(exc), retry_in=delay)
            except Exception as exc:  # InvalidHandshake and friends
                self.log.info("reconnect failed", error=repr(exc), retry_in=delay)
            delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ boot & status

    async def boot(self) -> dict[str, Any]:
        """Send BootNotification; return the answer. When Accepted, the heartbeat interval
        becomes the answer's ``interval`` (unless ``Behaviour.heartbeat_interval`` is set) and
        the heartbeat loop runs."""
        payload: dict[str, Any] = {"chargePointVendor": self.vendor, "chargePointModel": self.model}
        if self.serial_number:
            payload["chargePointSerialNumber"] = self.serial_number
        if self.firmware_version:
            payload["firmwareVersion"] = self.firmware_version
        resp = await self._request("BootNotification", payload)
        self.last_boot_response = resp
        self.boot_status = resp.get("status")
        if self.boot_status == "Accepted":
            if not self._ever_booted and self.security.options.send_events:
                self._spawn(self.security.event("StartupOfTheDevice"), "security-event")
            self._ever_booted = True
            interval = self.behaviour.heartbeat_interval
            if interval is None:
                interval = resp.get("interval")
            if isinstance(interval, int) and interval > 0:
                self.config.set("HeartbeatInterval", interval)
            self._on_config_changed("HeartbeatInterval")
            self._ensure_heartbeat()
            self._boot_event.set()
        return resp

    async def boot_and_report(self, *, retry: bool = False) -> dict[str, Any]:
        """Boot, then (if Accepted) StatusNotification for connector 0 and every connector
        with their current status (Available at first). With ``retry``, a Pending/Rejected
        boot is repeated after the central system's interval (see Behaviour.boot_retries).
        Returns the last BootNotification answer."""
        resp = await (self._boot_until_accepted() if retry else self.boot())
        if resp.get("status") == "Accepted":
            await self.report_statuses()
        return resp

    async def _boot_until_accepted(self) -> dict[str, Any]:
        attempts = max(1, self.behaviour.boot_retries)
        resp: dict[str, Any] = {}
        for attempt in range(attempts):
            self._boot_event.clear()
            resp = await self.boot()
            if resp.get("status") == "Accepted" or attempt == attempts - 1:
                break
            interval = resp.get("interval") or 5
            wait = min(float(interval), self.behaviour.max_boot_wait)
            # A BootNotification triggered by the central system may be accepted meanwhile.
            if await _wait_event(self._boot_event, wait) and self.last_boot_response:
                return self.last_boot_response
        return resp

    async def report_statuses(self) -> None:
        """StatusNotification for connector 0 and every connector, with the current status."""
        for connector_id in sorted(self.connectors):
            conn = self.connectors[connector_id]
            await self.status(connector_id, conn.status, error_code=conn.error_code)

    async def status(
        self,
        connector_id: int,
        status: str,
        error_code: str = "NoError",
        info: str | None = None,
        timestamp: str | datetime | None = None,
        *,
        vendor_id: str | None = None,
        vendor_error_code: str | None = None,
    ) -> dict[str, Any]:
        """Send StatusNotification; the connector's local status is updated first (also when
        offline, where the message itself is not queued and NotConnectedError is raised)."""
        conn = self.connectors.get(connector_id)
        if conn is not None:
            conn.status = status
            conn.error_code = error_code
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "errorCode": error_code,
            "status": status,
            "timestamp": as_timestamp(timestamp if timestamp is not None else self.now()),
        }
        if info is not None:
            payload["info"] = info
        if vendor_id is not None:
            payload["vendorId"] = vendor_id
        if vendor_error_code is not None:
            payload["vendorErrorCode"] = vendor_error_code
        return await self._request("StatusNotification", payload)

    async def heartbeat(self) -> dict[str, Any]:
        """Send Heartbeat; return the answer (``currentTime``)."""
        return await self._request("Heartbeat", {})

    async def authorize(self, id_tag: str) -> dict[str, Any]:
        """Send Authorize; return the answer (``idTagInfo``), also kept in the auth cache."""
        resp = await self._request("Authorize", {"idTag": id_tag})
        info = resp.get("idTagInfo")
        if isinstance(info, dict):
            self.auth_cache[id_tag] = info
        return resp

    def offline_authorized(self, id_tag: str) -> bool:
        """Whether the station lets ``id_tag`` start while it cannot reach the central
        system, as a charger does: from its local authorization list (LocalAuthorizeOffline
        and LocalAuthListEnabled; the entry Accepted and not expired), else, for a tag the
        list does not hold, AllowOfflineTxForUnknownId. (The authorization cache is not
        consulted.)"""
        cfg = self.config
        if cfg.get_bool("LocalAuthorizeOffline", True) and cfg.get_bool(
            "LocalAuthListEnabled", True
        ):
            info = next(
                (v for k, v in self.local_auth_list.items() if k.lower() == id_tag.lower()), None
            )
            if info is not None:
                if info.get("status") != "Accepted":
                    return False
                expiry = info.get("expiryDate")
                if isinstance(expiry, str):
                    try:
                        at = datetime.fromisoformat(expiry.replace("Z", "+00:00"))
                    except ValueError:
                        return False
                    if at.tzinfo is None or at <= datetime.now(UTC):
                        return False
                return True
        return cfg.get_bool("AllowOfflineTxForUnknownId", True)

    async def data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> dict[str, Any]:
        """Send DataTransfer; return the answer."""
        payload: dict[str, Any] = {"vendorId": vendor_id}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data
        return await self._request("DataTransfer", payload)

    async def diagnostics_status_notification(self, status: str) -> dict[str, Any]:
        """Send DiagnosticsStatusNotification (Idle, Uploading, Uploaded, UploadFailed)."""
        return await self._request("DiagnosticsStatusNotification", {"status": status})

    async def firmware_status_notification(self, status: str) -> dict[str, Any]:
        """Send FirmwareStatusNotification (Idle, Downloading, Downloaded, Installing, ...)."""
        return await self._request("FirmwareStatusNotification", {"status": status})

    # ------------------------------------------------------------------ transactions

    async def start_transaction(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int | None = None,
        timestamp: str | datetime | None = None,
        reservation_id: int | None = None,
    ) -> dict[str, Any] | None:
        """Start a transaction locally and send StartTransaction.

        ``meter_start`` defaults to the connector's register (and sets it when given). The
        reservation held on the connector for this idTag is used when ``reservation_id`` is
        not given. Returns the answer (its ``transactionId`` is remembered on the connector),
        or None when queued offline. Periodic MeterValues start (Behaviour.auto_meter_values).
        """
        conn = self._connector(connector_id, allow_zero=False)
        now = self.now()
        self._integrate(now)
        if conn.in_transaction:
            self.log.warning("start replaces an active transaction", connector=connector_id)
            self._end_local_transaction(conn)
        if meter_start is not None:
            conn.meter_wh = float(meter_start)
        reservation = conn.reservation
        if reservation_id is None and reservation and reservation.get("idTag") == id_tag:
            reservation_id = reservation.get("reservationId")
        if reservation and reservation.get("reservationId") == reservation_id:
            conn.reservation = None
        self._next_ref += 1
        ref = self._next_ref
        conn.tx_ref = ref
        conn.transaction_id = None
        conn.id_tag = id_tag
        conn.tx_started_at = now
        conn.held = conn.suspended = False
        cap = self._caps(now).get(connector_id)  # (a car starts at its target power)
        conn.power_w = 0.0 if cap is None else cap.target_w
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "idTag": id_tag,
            "meterStart": math.floor(conn.meter_wh),
            "timestamp": as_timestamp(timestamp if timestamp is not None else now),
        }
        if reservation_id is not None:
            payload["reservationId"] = reservation_id
        self.stats.tx_started += 1
        self._start_meter_loop(conn)
        self._wake_limits()
        return await self._submit_tx("StartTransaction", payload, ref)

    async def meter_values(
        self,
        connector_id: int,
        transaction_id: int | None = None,
        energy_wh: float | None = None,
        power_w: float | None = None,
        extra_sampled: Sequence[dict[str, Any]] | None = None,
        timestamp: str | datetime | None = None,
        *,
        context: str = "Sample.Periodic",
    ) -> dict[str, Any] | None:
        """Send MeterValues: Energy.Active.Import.Register (whole Wh, like meterStart/meterStop)
        and Power.Active.Import (W).

        Values default to the connector's register (advanced by power × elapsed time) and
        current power; ``energy_wh`` sets the register. While a profile limits the connector,
        Current.Offered (A) is added, and Current.Import per phase (L1-L3) when the key
        MeterValuesSampledData lists it. ``extra_sampled`` sampledValue dicts are appended
        as-is. A datetime ``timestamp`` (not after the clock's now) is also the instant the
        readings are taken at. With an active transaction (or an explicit ``transaction_id``) the
        message is a transaction message: queued offline (returns None), and its
        transactionId is filled in at delivery. Connector 0 reports the sum of connectors.
        """
        conn = self._connector(connector_id)
        now = self.now()
        at = now
        if isinstance(timestamp, datetime):
            moment = timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=UTC)
            at = min(moment, now)
        energy, power = self._readings(conn, energy_wh, at)
        if power_w is not None:
            power = power_w
        sampled: list[dict[str, Any]] = [
            {
                "value": str(math.floor(energy)),
                "context": context,
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
            },
            {
                "value": _number(power),
                "context": context,
                "measurand": "Power.Active.Import",
                "unit": "W",
            },
        ]
        sampled.extend(self._current_readings(conn, power, at, context))
        sampled.extend(extra_sampled or [])
        stamp = as_timestamp(timestamp if timestamp is not None else at)
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "meterValue": [{"timestamp": stamp, "sampledValue": sampled}],
        }
        if transaction_id is not None:
            payload["transactionId"] = transaction_id
            return await self._submit_tx("MeterValues", payload, None)
        if conn.tx_ref is not None:
            return await self._submit_tx("MeterValues", payload, conn.tx_ref)
        return await self._request("MeterValues", payload)

    async def stop_transaction(
        self,
        transaction_id: int | None = None,
        meter_stop: int | None = None,
        reason: str | None = "Local",
        id_tag: str | None = None,
        transaction_data: Sequence[dict[str, Any]] | None = None,
        timestamp: str | datetime | None = None,
        connector_id: int | None = None,
    ) -> dict[str, Any] | None:
        """End a transaction locally and send StopTransaction.

        The transaction is the one on ``connector_id``, else the one with ``transaction_id``,
        else the first active one. A ``transaction_id`` unknown locally is sent as given (with
        ``meter_stop`` or 0), so the central system's handling of unknown ids can be tested.
        ``meter_stop`` defaults to the connector's register; ``reason=None`` omits the field.
        Returns the answer, or None when queued offline.
        """
        conn: ConnectorState | None = None
        if connector_id is not None:
            conn = self._connector(connector_id, allow_zero=False)
            if not conn.in_transaction:
                conn = None
        elif transaction_id is not None:
            conn = self._connector_by_transaction(transaction_id)
        else:
            conn = next((c for c in self._real_connectors() if c.in_transaction), None)
        if conn is None and transaction_id is None:
            raise ValueError(f"{self.id}: no active transaction to stop")
        now = self.now()
        payload: dict[str, Any] = {
            "timestamp": as_timestamp(timestamp if timestamp is not None else now)
        }
        ref: int | None = None
        if conn is not None:
            self._integrate(now)
            if meter_stop is not None:
                conn.meter_wh = float(meter_stop)
            payload["meterStop"] = math.floor(conn.meter_wh)
            if transaction_id is None:
                ref = conn.tx_ref
            self._end_local_transaction(conn)
            self.stats.tx_stopped += 1
        else:
            payload["meterStop"] = int(meter_stop or 0)
        if transaction_id is not None:
            payload["transactionId"] = transaction_id
        if reason:
            payload["reason"] = reason
        if id_tag is not None:
            payload["idTag"] = id_tag
        if transaction_data:
            payload["transactionData"] = list(transaction_data)
        return await self._submit_tx("StopTransaction", payload, ref)

    # ------------------------------------------------------------------ flows

    async def start_charging(
        self,
        connector_id: int,
        id_tag: str,
        *,
        authorize: bool = True,
        reservation_id: int | None = None,
    ) -> dict[str, Any] | None:
        """A whole session start: StatusNotification Preparing (unless already), Authorize
        (skipped when ``authorize`` is false or the station is offline), StartTransaction,
        StatusNotification Charging.

        An Authorize that is not Accepted ends with Available and returns None; offline,
        a tag :meth:`offline_authorized` refuses does too (local list, unknown ids). A
        StartTransaction answered with a non-Accepted idTagInfo is stopped with reason
        DeAuthorized (Finishing, Available) when StopTransactionOnInvalidId is true, else the
        connector goes SuspendedEVSE. Returns the StartTransaction answer (None when queued
        offline or not started). Statuses are skipped while offline.
        """
        conn = self._connector(connector_id, allow_zero=False)
        async with conn.flow_lock:
            return await self._start_charging_locked(conn, id_tag, authorize, reservation_id)

    async def stop_charging(
        self,
        connector_id: int,
        reason: str = "Local",
        *,
        id_tag: str | None = None,
        finishing_first: bool = False,
    ) -> dict[str, Any] | None:
        """A whole session end: StopTransaction, StatusNotification Finishing, then Available
        (Unavailable if a ChangeAvailability was scheduled). ``finishing_first`` sends
        Finishing before StopTransaction. Returns the StopTransaction answer (None when
        queued or when no transaction is active)."""
        conn = self._connector(connector_id, allow_zero=False)
        async with conn.flow_lock:
            return await self._stop_charging_locked(conn, reason, id_tag, finishing_first)

    async def _start_charging_locked(
        self, conn: ConnectorState, id_tag: str, authorize: bool, reservation_id: int | None
    ) -> dict[str, Any] | None:
        if conn.status != "Preparing":
            await self._status_quietly(conn, "Preparing")
        auth: dict[str, Any] | None = None
        if authorize and self.connected:
            try:
                auth = await self.authorize(id_tag)
            except NotConnectedError:
                auth = None  # went offline meanwhile: authorize locally
            if auth is not None and _tag_status(auth) != "Accepted":
                await self._status_quietly(conn, self._idle_status(conn))
                return None
        if authorize and auth is None and not self.offline_authorized(id_tag):
            await self._status_quietly(conn, self._idle_status(conn))
            return None
        try:
            resp = await self.start_transaction(
                conn.connector_id, id_tag, reservation_id=reservation_id
            )
        except Exception:
            if conn.in_transaction:
                self._end_local_transaction(conn)
            await self._status_quietly(conn, self._idle_status(conn))
            raise
        if resp is not None and _tag_status(resp) != "Accepted":
            if self.config.get_bool("StopTransactionOnInvalidId", True):
                await self._stop_charging_locked(conn, "DeAuthorized", None, False)
            else:
                self._integrate(self.now())
                conn.held = True  # the station withholds power from now on
                conn.power_w = 0.0
                await self._status_quietly(conn, "SuspendedEVSE")
            return resp
        cap = self._caps(self.now()).get(conn.connector_id)
        conn.suspended = cap is not None and cap.suspended
        await self._status_quietly(conn, "SuspendedEVSE" if conn.suspended else "Charging")
        return resp

    async def _stop_charging_locked(
        self, conn: ConnectorState, reason: str, id_tag: str | None, finishing_first: bool
    ) -> dict[str, Any] | None:
        if not conn.in_transaction:
            return None
        if finishing_first:
            await self._status_quietly(conn, "Finishing")
        try:
            resp = await self.stop_transaction(
                connector_id=conn.connector_id, reason=reason, id_tag=id_tag
            )
        finally:
            if not finishing_first:
                await self._status_quietly(conn, "Finishing")
            await self._status_quietly(conn, self._idle_status(conn))
        return resp

    def _idle_status(self, conn: ConnectorState) -> str:
        if conn.pending_availability is not None:
            conn.availability = conn.pending_availability
            conn.pending_availability = None
        if conn.availability == "Inoperative":
            return "Unavailable"
        if conn.reservation is not None:
            return "Reserved"
        return "Available"

    async def _status_quietly(
        self,
        conn: ConnectorState,
        status: str,
        error_code: str = "NoError",
        *,
        timestamp: datetime | None = None,
    ) -> None:
        """Set the status locally and report it when online; failures are logged."""
        conn.status = status
        conn.error_code = error_code
        if not self.connected:
            return
        try:
            await self.status(conn.connector_id, status, error_code=error_code, timestamp=timestamp)
        except (SimulatorError, TimeoutError) as exc:
            self.log.warning("status not delivered", status=status, error=repr(exc))

    # ------------------------------------------------------------------ raw access

    async def call_raw_action(
        self, action: str, payload: dict[str, Any], *, validate: bool = False
    ) -> dict[str, Any]:
        """Send any action with the payload as-is (not validated unless ``validate``), return
        the answer payload. No local state changes, never queued."""
        return await self._request(action, payload, validate=validate)

    async def call(self, payload: Any, *, validate: bool = True) -> Any:
        """Send an ``ocpp.v16.call.<Action>`` dataclass; return the matching
        ``ocpp.v16.call_result`` dataclass. No local state changes, never queued."""
        action = type(payload).__name__
        body = snake_to_camel_case(remove_nones(serialize_as_dict(payload)))
        answer = await self._request(action, body, validate=validate)
        result_class = getattr(v16_call_result, action)
        return result_class(**camel_to_snake_case(answer))

    async def send_text(self, text: str) -> None:
        """Send a raw text frame (no validation). Answers to calls in it, and anything else the
        central system sends that is neither a call nor the answer to a pending call, are read
        with :meth:`next_unmatched_frame`."""
        link = self._require_link("raw frame")
        await link.ws.send(text)

    async def next_unmatched_frame(self, timeout: float = 5.0) -> Any:
        """Next frame from the central system that answered no pending call: the decoded JSON
        (e.g. ``[3, "id", {...}]`` or ``[4, "id", "FormationViolation", "...", {}]``), or the
        raw text when it is not JSON. Raises TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(self._unmatched.get(), timeout)

    def _push_unmatched(self, frame: Any) -> None:
        while self._unmatched.qsize() >= 1000:
            self._unmatched.get_nowait()
        self._unmatched.put_nowait(frame)

    # ------------------------------------------------------------------ calls from the CS

    def on_call(self, action: str, fn: CallHandler | None) -> None:
        """Override how the station answers ``action`` (``fn=None`` removes the override).

        ``fn(payload)`` (sync or async; payload camelCase) returns:

        * a dict: sent as the CALLRESULT payload as-is (not validated); the station does
          nothing else;
        * ``Station.IGNORE``: no answer at all;
        * ``Station.CALL_ERROR(code, description, details)``: a CALLERROR;
        * ``None``: the default handling (answer and automatic actions) goes on.

        An exception raised by ``fn`` is answered with CALLERROR InternalError.
        """
        if fn is None:
            self._overrides.pop(action, None)
        else:
            self._overrides[action] = fn

    async def wait_for_call(self, action: str, timeout: float = 5.0) -> dict[str, Any]:
        """Return the payload of the oldest not yet consumed ``action`` received from the
        central system (waiting for one up to ``timeout`` seconds, then TimeoutError); it
        is consumed, so the next wait returns the next one."""
        deadline = time.monotonic() + timeout
        while True:
            self._call_event.clear()
            for index, (name, payload) in enumerate(self.calls_received):
                if name == action and index not in self._consumed:
                    self._consumed.add(index)
                    return payload
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await _wait_event(self._call_event, remaining):
                raise TimeoutError(f"{self.id}: no {action} received within {timeout}s")

    def _record_call(self, action: str, payload: dict[str, Any]) -> None:
        self.calls_received.append((action, payload))
        self.stats.received[action] += 1
        self._call_event.set()

    def _cost_message(self, vendor_id: str, message_id: str | None, data: Any) -> str | None:
        """A DataTransfer of the pricing extension: its status; None when it is not one
        (another vendorId, or this station has no cost display)."""
        if vendor_id != costdisplay.VENDOR_ID:
            return None
        if not self.config.get_bool(costdisplay.SUPPORT_KEY):
            return None
        if message_id not in costdisplay.MESSAGE_IDS:
            self.log.info("cost message unknown", message_id=str(message_id)[:50])
            return "UnknownMessageId"
        try:
            fields = costdisplay.read(message_id, data)
        except costdisplay.BadCostMessage as exc:
            self.log.warning("cost message rejected", message_id=message_id, reason=str(exc))
            return "Rejected"
        text = costdisplay.display_text(message_id, fields)
        self.cost_messages.append(costdisplay.CostMessage(message_id, fields, datetime.now(UTC)))
        del self.cost_messages[: -costdisplay.MAX_MESSAGES]
        self.display = text
        self.log.info("display", message_id=message_id, text=text)
        if self.on_display is not None:
            try:
                self.on_display(self, text)
            except Exception as exc:
                self.log.error("on_display failed", error=repr(exc))
        return "Accepted"

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the reactions to central-system calls (remote start flows, resets,
        triggered messages, ...) have finished and, when online, the queue is empty.
        Raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        current = asyncio.current_task()
        while True:
            pending = [t for t in self._followups if t is not current and not t.done()]
            if not pending and not (self._tx_queue and self._tx_online()):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.id}: still busy after {timeout}s")
            if pending:
                await asyncio.wait(pending, timeout=min(remaining, 0.25))
            else:
                self._tx_progress.clear()
                await _wait_event(self._tx_progress, min(remaining, 0.25))

    # ------------------------------------------------------------------ request plumbing

    async def _request(
        self, action: str, payload: dict[str, Any], *, validate: bool = True
    ) -> dict[str, Any]:
        link = self._require_link(action)
        return await link.request(action, payload, validate=validate, timeout=self.response_timeout)

    def _require_link(self, what: str) -> Link:
        link = self._link
        if link is None or link.closed:
            raise NotConnectedError(f"{self.id}: not connected, {what} not sent")
        return link

    def _tx_online(self) -> bool:
        return self._tx_gate and self.connected

    def _open_tx_gate(self) -> None:
        self._tx_gate = True
        self._tx_wakeup.set()
        if self._tx_queue:
            self._ensure_sender()
        self._resume_meter_loops()

    async def _submit_tx(
        self, action: str, payload: dict[str, Any], ref: int | None
    ) -> dict[str, Any] | None:
        """Queue a transaction message; wait for its answer when online."""
        item = _TxItem(action, payload, ref, asyncio.get_running_loop().create_future())
        self._tx_queue.append(item)
        self._trim_queue()
        self._tx_progress.set()
        self._ensure_sender()
        self._tx_wakeup.set()
        if not self._tx_online():
            self._detach(item)
            self.stats.queued += 1
            self.log.info("queued", action=action, queue=len(self._tx_queue))
            return None
        position = len(self._tx_queue)
        limit = max(30.0, self.response_timeout * (position + 2))
        try:
            result = await asyncio.wait_for(asyncio.shield(item.future), limit)
        except TimeoutError:
            self._detach(item)
            return None
        except asyncio.CancelledError:
            self._detach(item)
            raise
        if isinstance(result, BaseException):
            raise result
        return result

    @staticmethod
    def _detach(item: _TxItem) -> None:
        item.detached = True
        if not item.future.done():
            item.future.set_result(None)

    def _park_queue(self) -> None:
        """The connection is gone: callers waiting for queued messages get None. The message
        being delivered is left to the sender (its answer may have arrived already)."""
        for item in self._tx_queue:
            if item is not self._delivering:
                self._detach(item)

    def _trim_queue(self) -> None:
        excess = len(self._tx_queue) - self.max_queue
        if excess <= 0:
            return
        for item in list(self._tx_queue):
            if excess <= 0:
                break
            if item.action == "MeterValues" and not item.future.done():
                continue  # someone waits for it
            if item.action == "MeterValues":
                self._tx_queue.remove(item)
                self.stats.dropped += 1
                excess -= 1

    def _ensure_sender(self) -> None:
        if self._sender_task is None or self._sender_task.done():
            self._sender_task = self._spawn(self._sender_loop(), "tx-sender")

    async def _sender_loop(self) -> None:
        """Deliver queued transaction messages, one at a time, oldest first."""
        while True:
            if not (self._tx_queue and self._tx_online()):
                self._tx_wakeup.clear()
                if not (self._tx_queue and self._tx_online()):
                    await _wait_event(self._tx_wakeup, _LONG_WAIT)
                continue
            item = self._tx_queue[0]
            self._delivering = item
            try:
                answer = await self._deliver(item)
            except NotConnectedError:
                self._detach(item)  # stays queued; its caller gets None
                if self._tx_online():  # should not happen; avoid spinning
                    await asyncio.sleep(0.1)
                continue
            except Exception as exc:
                if await self._delivery_failed(item, exc):
                    continue
            else:
                self._finish_item(item, answer)
            finally:
                self._delivering = None

    async def _delivery_failed(self, item: _TxItem, exc: Exception) -> bool:
        """Handle a failed delivery; True when the item stays queued for a retry."""
        retryable = isinstance(exc, TimeoutError | CallErrorReceived | InvalidResponseError)
        if (item.detached or self.behaviour.retry_transaction_messages) and retryable:
            item.attempts += 1
            if item.attempts < max(1, self.config.get_int("TransactionMessageAttempts", 3)):
                interval = self.config.get_int("TransactionMessageRetryInterval", 10)
                await asyncio.sleep(min(float(interval * item.attempts), 60.0))
                return True
        if item in self._tx_queue:
            self._tx_queue.remove(item)
        self._tx_progress.set()
        if item.action == "StartTransaction" and item.tx_ref is not None:
            self._tx_ids[item.tx_ref] = None
        if item.detached:
            self.stats.dropped += 1
            self.stats.record_error(f"{item.action} dropped: {exc!r}")
            self.log.error("queued message dropped", action=item.action, error=repr(exc))
        elif not item.future.done():
            item.future.set_result(exc)
        return False

    def _finish_item(self, item: _TxItem, answer: dict[str, Any]) -> None:
        if item in self._tx_queue:
            self._tx_queue.remove(item)
        self._tx_progress.set()
        if not item.future.done():
            item.future.set_result(answer)

    async def _deliver(self, item: _TxItem) -> dict[str, Any]:
        payload = item.payload
        if item.tx_ref is not None and item.action != "StartTransaction":
            transaction_id = self._tx_ids.get(item.tx_ref)
            if transaction_id is None:
                raise _UnresolvedTransaction(
                    f"{item.action}: its StartTransaction got no transactionId"
                )
            payload = {**payload, "transactionId": transaction_id}
        answer = await self._request(item.action, payload)
        if item.action == "StartTransaction" and item.tx_ref is not None:
            self._start_answered(item, answer)
        elif item.action == "StopTransaction" and item.tx_ref is not None:
            self._tx_ids.pop(item.tx_ref, None)
        return answer

    def _start_answered(self, item: _TxItem, answer: dict[str, Any]) -> None:
        ref = item.tx_ref
        assert ref is not None
        transaction_id = answer.get("transactionId")
        self._tx_ids[ref] = transaction_id if isinstance(transaction_id, int) else None
        conn = next((c for c in self._real_connectors() if c.tx_ref == ref), None)
        if conn is None:
            return
        conn.transaction_id = self._tx_ids[ref]
        if (
            item.detached
            and _tag_status(answer) != "Accepted"
            and self.config.get_bool("StopTransactionOnInvalidId", True)
        ):
            self._spawn(self._deauthorize(conn, ref), "deauthorize", followup=True)

    async def _deauthorize(self, conn: ConnectorState, ref: int) -> None:
        """A queued StartTransaction was answered with an invalid idTag (TC_037_3)."""
        async with conn.flow_lock:
            if conn.tx_ref == ref:
                await self._stop_charging_locked(conn, "DeAuthorized", None, False)

    async def _wait_queue_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._tx_queue and self._tx_online():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._tx_progress.clear()
            if self._tx_queue and self._tx_online():
                await _wait_event(self._tx_progress, remaining)
        return not self._tx_queue

    # ------------------------------------------------------------------ loops

    def _ensure_heartbeat(self) -> None:
        link = self._link
        if link is None or link.closed or not self.behaviour.auto_heartbeat:
            return
        if link.heartbeat_task is None or link.heartbeat_task.done():
            link.heartbeat_task = self._spawn(self._heartbeat_loop(link), "heartbeat")

    async def _heartbeat_loop(self, link: Link) -> None:
        waker = asyncio.Event()
        self._hb_wakers.add(waker)
        try:
            while not link.closed:
                waker.clear()
                interval = self.config.get_int("HeartbeatInterval")
                if interval <= 0 or not self.behaviour.auto_heartbeat:
                    await _wait_event(waker, _LONG_WAIT)
                    continue
                if await _wait_event(waker, interval) or link.closed:
                    continue  # interval changed (restart the period) or connection gone
                try:
                    await self.heartbeat()
                except (SimulatorError, TimeoutError) as exc:
                    if not link.closed:  # a closing connection is not worth a warning
                        self.log.warning("heartbeat failed", error=repr(exc))
        finally:
            self._hb_wakers.discard(waker)

    def _start_meter_loop(self, conn: ConnectorState) -> None:
        if not self.behaviour.auto_meter_values or conn.tx_ref is None:
            return
        if self.simulated_time:  # (catch_up() sends them)
            interval = self.config.get_int("MeterValueSampleInterval")
            due = self.now() + timedelta(seconds=interval) if interval > 0 else None
            conn.next_sample_at = due
            return
        conn.meter_waker.set()  # a loop of an earlier transaction ends
        conn.meter_waker = asyncio.Event()
        conn.meter_task = self._spawn(
            self._meter_loop(conn, conn.tx_ref, conn.meter_waker), f"meter-{conn.connector_id}"
        )

    def _resume_meter_loops(self) -> None:
        self._wake_limits()
        if self.simulated_time:
            return
        for conn in self._real_connectors():
            if conn.in_transaction and (conn.meter_task is None or conn.meter_task.done()):
                self._start_meter_loop(conn)

    async def _meter_loop(self, conn: ConnectorState, ref: int, waker: asyncio.Event) -> None:
        while conn.tx_ref == ref:
            waker.clear()
            interval = self.config.get_int("MeterValueSampleInterval")
            if interval <= 0 or not self.behaviour.auto_meter_values:
                await _wait_event(waker, _LONG_WAIT)
                continue
            if await _wait_event(waker, interval) or conn.tx_ref != ref:
                continue
            try:
                await self.meter_values(conn.connector_id)
            except (SimulatorError, TimeoutError) as exc:
                self.log.warning("meter values failed", error=repr(exc))

    def _on_config_changed(self, key: str) -> None:
        if key == "HeartbeatInterval":
            for waker in self._hb_wakers:
                waker.set()
            self._ensure_heartbeat()
        elif key == "MeterValueSampleInterval":
            for conn in self._real_connectors():
                conn.meter_waker.set()
                if self.simulated_time and conn.in_transaction:
                    self._start_meter_loop(conn)  # (the period restarts, as in real time)

    # ------------------------------------------------------------------ helpers

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, *, followup: bool = False
    ) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id}:{name}")
        self._tasks.add(task)
        if followup:
            self._followups.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._followups.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stats.record_error(f"{task.get_name()}: {exc!r}")
            self.log.error("background task failed", task=task.get_name(), error=repr(exc))

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current and not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _connector(self, connector_id: int, *, allow_zero: bool = True) -> ConnectorState:
        conn = self.connectors.get(connector_id)
        if conn is None or (connector_id == 0 and not allow_zero):
            raise ValueError(f"{self.id}: no connector {connector_id}")
        return conn

    def _real_connectors(self) -> list[ConnectorState]:
        return [conn for cid, conn in sorted(self.connectors.items()) if cid > 0]

    def _connector_by_transaction(self, transaction_id: Any) -> ConnectorState | None:
        for conn in self._real_connectors():
            if conn.in_transaction and conn.transaction_id == transaction_id:
                return conn
        return None

    def _end_local_transaction(self, conn: ConnectorState) -> None:
        self._integrate(self.now())
        conn.tx_ref = None
        conn.transaction_id = None
        conn.id_tag = None
        conn.power_w = 0.0
        conn.held = conn.suspended = False
        conn.tx_started_at = conn.next_sample_at = None
        for pid, profile in list(self._profiles.items()):  # (OCPP: a TxProfile ends with it)
            if profile.purpose == "TxProfile" and profile.connector_id == conn.connector_id:
                del self.charging_profiles[pid]
        conn.meter_waker.set()
        self._wake_limits()

    def _readings(
        self, conn: ConnectorState, energy_wh: float | None, at: datetime
    ) -> tuple[float, float]:
        self._integrate(at)
        if conn.connector_id == 0:
            energy = sum(other.meter_wh for other in self._real_connectors())
            power = sum(other.power_w for other in self._real_connectors())
            return (energy if energy_wh is None else float(energy_wh)), power
        if energy_wh is not None:
            conn.meter_wh = float(energy_wh)
        return conn.meter_wh, (conn.power_w if conn.in_transaction else 0.0)

    def _current_readings(
        self, conn: ConnectorState, power_w: float, at: datetime, context: str
    ) -> list[dict[str, Any]]:
        """Current.Offered while a profile limits the connector (a real charger samples
        what it offers the car), and Current.Import per phase when configured."""
        if conn.connector_id == 0 or not conn.in_transaction:
            return []
        out: list[dict[str, Any]] = []
        cap = self._caps(at).get(conn.connector_id)
        if cap is not None and cap.limit is not None:
            offered = 0.0 if cap.suspended else cap.limit.amps
            out.append(
                {
                    "value": _number(offered),
                    "context": context,
                    "measurand": "Current.Offered",
                    "unit": "A",
                }
            )
        measurands = (self.config.get("MeterValuesSampledData") or "").split(",")
        if "Current.Import" in (m.strip() for m in measurands):
            amps = power_w / (self.behaviour.voltage * smart.DEFAULT_PHASES)
            for phase in ("L1", "L2", "L3"):
                out.append(
                    {
                        "value": _number(amps),
                        "context": context,
                        "measurand": "Current.Import",
                        "phase": phase,
                        "unit": "A",
                    }
                )
        return out

    def _pick_remote_connector(self, connector_id: int | None, id_tag: str) -> int | None:
        """Connector for a RemoteStartTransaction, or None when none is usable."""

        def usable(conn: ConnectorState) -> bool:
            if conn.in_transaction or conn.claimed or conn.availability != "Operative":
                return False
            if conn.status == "Reserved":
                return bool(conn.reservation) and conn.reservation.get("idTag") == id_tag
            return conn.status in ("Available", "Preparing")

        if connector_id is not None:
            conn = self.connectors.get(connector_id)
            ok = connector_id > 0 and conn is not None and usable(conn)
            return connector_id if ok else None
        candidates = [conn for conn in self._real_connectors() if usable(conn)]
        for wanted in ("Preparing", "Reserved", "Available"):
            for conn in candidates:
                if conn.status == wanted:
                    return conn.connector_id
        return None

    def _reservation_holder(self, reservation_id: int) -> ConnectorState | None:
        for conn in self.connectors.values():
            if conn.reservation and conn.reservation.get("reservationId") == reservation_id:
                return conn
        return None

    # ------------------------------------------------------------------ reactions

    async def _remote_start_flow(self, connector_id: int, id_tag: str, timeout_only: bool) -> None:
        conn = self.connectors[connector_id]
        try:
            async with conn.flow_lock:
                if timeout_only:
                    if conn.status != "Preparing":
                        await self._status_quietly(conn, "Preparing")
                    wait = self.config.get_int("ConnectionTimeOut", 60)
                    await asyncio.sleep(min(float(wait), 3600.0))
                    await self._status_quietly(conn, self._idle_status(conn))
                    return
                authorize = self.config.get_bool("AuthorizeRemoteTxRequests", True)
                await self._start_charging_locked(conn, id_tag, authorize, None)
        finally:
            conn.claimed = False

    async def _remote_stop_flow(self, connector_id: int) -> None:
        await self.stop_charging(connector_id, self.behaviour.remote_stop_reason)

    async def _unlock_flow(self, connector_id: int) -> None:
        await self.stop_charging(connector_id, "UnlockCommand", finishing_first=True)

    async def reconnect_now(self) -> None:
        """Close the connection and open a new one at once (boot, statuses): what a
        security profile change does. Raises when the new connection fails."""
        link = self._link
        if link is not None:
            link.intentional = True
            await self._close_link(link, clean=True)
        await self.go_online(boot=True, report_status=True)

    async def _extended_trigger_flow(self, requested: str, connector_id: int | None) -> None:
        sec = self.security
        if requested == "SignChargePointCertificate":
            await sec.sign_certificate()
        elif requested == "LogStatusNotification":
            request_id = sec.log_request_id if sec.log_status != "Idle" else None
            await sec.log_status_notification(sec.log_status, request_id)
        elif requested == "FirmwareStatusNotification":
            request_id = sec.firmware_request_id if sec.firmware_status != "Idle" else None
            await sec.firmware_status_notification(sec.firmware_status, request_id)
        else:
            await self._trigger_flow(requested, connector_id)

    async def _reset_flow(self, kind: str) -> None:
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for conn in self._real_connectors():
            if conn.in_transaction:
                try:
                    await self.stop_transaction(connector_id=conn.connector_id, reason=reason)
                except (SimulatorError, TimeoutError) as exc:
                    self.log.warning("stop before reset failed", error=repr(exc))
        for conn in self.connectors.values():
            conn.reservation = None
            conn.status = self._idle_status(conn)
            conn.error_code = "NoError"
        if kind == "Hard":
            self._lose_profiles()
        await self._reboot()
        await self.security.optional_event("ResetOrReboot", f"{kind} reset")

    async def _reboot(self) -> None:
        """Close the websocket, wait ``reboot_delay``, reconnect, boot and report statuses."""
        link = self._link
        if link is not None:
            link.intentional = True
            await self._close_link(link, clean=True)
        self.boot_status = None
        await asyncio.sleep(self.behaviour.reboot_delay)
        delay = max(0.05, self.behaviour.reconnect_delay)
        for _ in range(5):
            try:
                await self.go_online(boot=True, report_status=True)
                return
            except Exception as exc:
                self.log.warning("reconnect after reboot failed", error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        self.stats.record_error("could not reconnect after reboot")
        if self.behaviour.auto_reconnect:
            self._start_reconnect()

    def _lose_profiles(self) -> None:
        """A hard reboot: profiles kept in RAM are gone (unless Behaviour.keep_profiles);
        a soft reset keeps them, and csms re-applies them after the boot anyway."""
        if not self.behaviour.keep_profiles:
            self._integrate(self.now())
            self.charging_profiles.clear()

    async def _availability_flow(self, targets: list[int]) -> None:
        for connector_id in targets:
            conn = self.connectors[connector_id]
            if conn.in_transaction:
                continue
            if conn.availability == "Inoperative":
                status = "Unavailable"
            elif conn.status == "Unavailable":
                status = self._idle_status(conn)
            else:
                status = conn.status
            await self._status_quietly(conn, status, conn.error_code)

    async def _trigger_flow(self, requested: str, connector_id: int | None) -> None:
        if requested == "BootNotification":
            await self.boot()
        elif requested == "Heartbeat":
            await self.heartbeat()
        elif requested == "StatusNotification":
            targets = [connector_id] if connector_id is not None else sorted(self.connectors)
            for target in targets:
                conn = self.connectors[target]
                await self.status(target, conn.status, error_code=conn.error_code)
        elif requested == "MeterValues":
            targets = (
                [connector_id]
                if connector_id is not None
                else [c.connector_id for c in self._real_connectors()]
            )
            for target in targets:
                await self.meter_values(target, context="Trigger")
        elif requested == "DiagnosticsStatusNotification":
            await self.diagnostics_status_notification(self.diagnostics_status)
        elif requested == "FirmwareStatusNotification":
            await self.firmware_status_notification(self.firmware_status)

    async def _firmware_flow(
        self,
        retrieve_date: str,
        location: str | None = None,
        retries: int | None = None,
        retry_interval: int | None = None,
    ) -> None:
        wait = seconds_until(retrieve_date)
        if wait is not None and wait > 0:
            await asyncio.sleep(min(wait, 60.0))
        outcome = self.behaviour.firmware_update
        await self._firmware_step("Downloading")
        image: bytes | None = b""
        if outcome != "DownloadFailed" and location is not None:
            # (charger_sim.transfers: a real HTTP(S) download, with the retries asked for)
            image = await transfers.download(self, location, retries, retry_interval)
        if outcome == "DownloadFailed" or image is None:
            await self._firmware_step("DownloadFailed")
            self.firmware_status = "Idle"
            return
        for step in ("Downloaded", "Installing"):
            await self._firmware_step(step)
        if outcome == "InstallationFailed":
            await self._firmware_step("InstallationFailed")
        elif outcome == "Installed":
            new_version = transfers.version_in(image) or self.behaviour.firmware_version_after
            if new_version:
                self.firmware_version = new_version
            for conn in self._real_connectors():
                if conn.in_transaction:
                    with contextlib.suppress(SimulatorError, TimeoutError):
                        await self.stop_transaction(connector_id=conn.connector_id, reason="Reboot")
                conn.status = self._idle_status(conn)
            self._lose_profiles()
            await self._reboot()
            await self._firmware_step("Installed")
        self.firmware_status = "Idle"

    async def _firmware_step(self, status: str) -> None:
        self.firmware_status = status
        if self.connected:
            try:
                await self.firmware_status_notification(status)
            except (SimulatorError, TimeoutError) as exc:
                self.log.warning("firmware status not delivered", error=repr(exc))
        await asyncio.sleep(self.behaviour.step_delay)

    async def _diagnostics_flow(
        self,
        location: str | None = None,
        file_name: str = "diagnostics.log",
        retries: int | None = None,
        retry_interval: int | None = None,
    ) -> None:
        outcome = self.behaviour.diagnostics_upload
        for status in ("Uploading", outcome):
            if status == "Uploaded" and location is not None:
                # (charger_sim.transfers: a real HTTP(S) PUT, with the retries asked for)
                body = transfers.diagnostics_text(self)
                ok = await transfers.upload(
                    self, location, file_name, body, retries, retry_interval
                )
                status = "Uploaded" if ok else "UploadFailed"
            self.diagnostics_status = status
            if self.connected:
                try:
                    await self.diagnostics_status_notification(status)
                except (SimulatorError, TimeoutError) as exc:
                    self.log.warning("diagnostics status not delivered", error=repr(exc))
            await asyncio.sleep(self.behaviour.step_delay)
        self.diagnostics_status = "Idle"

    async def _reservation_flow(self, connector_id: int, reservation_id: int) -> None:
        conn = self.connectors[connector_id]
        if conn.reservation is None or conn.reservation.get("reservationId") != reservation_id:
            return
        if not conn.in_transaction:
            await self._status_quietly(conn, "Reserved")
        wait = seconds_until(conn.reservation.get("expiryDate"))
        if wait is not None:  # the expiry timer is not a follow-up wait_idle() waits for
            self._spawn(self._reservation_expiry(conn, reservation_id, wait), "reservation")

    async def _reservation_expiry(
        self, conn: ConnectorState, reservation_id: int, wait: float
    ) -> None:
        await asyncio.sleep(max(0.0, wait))
        if conn.reservation and conn.reservation.get("reservationId") == reservation_id:
            conn.reservation = None
            if not conn.in_transaction:
                await self._status_quietly(conn, self._idle_status(conn))

    async def _cancel_reservation_flow(self, connector_id: int) -> None:
        conn = self.connectors[connector_id]
        if not conn.in_transaction:
            await self._status_quietly(conn, self._idle_status(conn))


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _tag_status(answer: Mapping[str, Any]) -> str | None:
    info = answer.get("idTagInfo")
    return info.get("status") if isinstance(info, dict) else None


def _number(value: float) -> str:
    rounded = round(value, 1)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.1f}"


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for the event at most ``timeout`` seconds; True when it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
