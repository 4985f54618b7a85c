"""The OCPI bridge: one object holding what the endpoints, the handshake and the pushes
share. Built on csms's port (:mod:`csms.ports`); csms knows nothing of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from csms.ports import CsmsPort, from_db

from .client import OcpiClient
from .commands import CommandService
from .commissioning import CommissioningNotices
from .compliance import ComplianceRecorder, limits_for
from .config import OcpiSettings
from .credentials import CredentialsService
from .deliveryview import LocalDelivery, RemoteDelivery
from .locations import LocationBuilder
from .peers import location_for
from .pusher import Pusher
from .realtime_auth import RealtimeAuth
from .sessions import SessionBuilder
from .store import OcpiStore, Peer
from .tariff_delivery import visible
from .tariff_push import TARIFFS_TOPIC, TariffPusher
from .tokens import OcpiTokenSource
from .traffic import PeerTraffic
from .transport import join_url, ocpi_time, parse_ocpi_time

if TYPE_CHECKING:
    from .transport import Page

log = structlog.get_logger("ocpi.bridge")

# role "ocpp": the stations' return times are read again at most this often (seconds)
RETURNS_FRESH = 1.0

# what every process hears when the peers change (csms.topics)
PEERS_TOPIC = "ocpi.peers"
# (identifier, role) of the modules we serve, as listed in our version details
MODULES: list[tuple[str, str]] = [
    ("credentials", "SENDER"),
    ("locations", "SENDER"),
    ("sessions", "SENDER"),
    ("cdrs", "SENDER"),
    ("tariffs", "SENDER"),
    ("tokens", "RECEIVER"),
    ("commands", "RECEIVER"),
]


class Bridge:
    def __init__(self, settings: OcpiSettings, csms: CsmsPort) -> None:
        self.settings = settings
        self.csms = csms
        self.clock = csms.clock
        self.store = OcpiStore(csms.db, csms.clock, csms.settings.mobie_mode)
        self.client = OcpiClient(
            settings.request_timeout, (settings.country_code, settings.party_id)
        )
        self.offline_after = timedelta(seconds=settings.offline_after)
        self.locations = LocationBuilder(settings, self.offline_after)
        self.sessions = SessionBuilder(settings, csms, self.store)
        self.credentials = CredentialsService(
            self.store, self.client, self.our_credentials, self._peers_changed
        )
        self.modules = list(MODULES)
        self.token_source = OcpiTokenSource(
            self.store,
            RealtimeAuth(self, settings.realtime_auth_timeout, settings.realtime_auth_cache),
        )
        # each peer's requests and pushes per hour (issue 19), written in batches
        self.traffic = PeerTraffic(csms.db, csms.clock)
        self._peers_by_token: dict[str, Peer] = {}
        # per station, its Location id and last_updated as last computed from the database
        # (see location_touch_of_station)
        self._touch_basis: dict[str, tuple[str, datetime]] = {}
        self.public_url = (settings.public_url or "").rstrip("/")
        # where csms runs this bridge: "all" (one process), "ocpp" (an OCPP node: endpoints,
        # commands, pages; the pushes are in the delivery process) or "delivery" (pushes,
        # R7's timers, notices, CDRs; no endpoints)
        self.role = csms.role
        self.notices = CommissioningNotices(
            csms,
            settings.business_name,
            settings.notices,
            csms.settings.data_dir,
        )
        self.pusher: Pusher | None = None
        self.tariff_pusher: TariffPusher | None = None  # (where the pusher is)
        self.delivery: LocalDelivery | RemoteDelivery
        # per station, when it spoke again after its last silence, as the pusher stored it
        # (role "ocpp": read from the database, see fresh_returns)
        self._returns: dict[str, datetime] = {}
        self._returns_at = -RETURNS_FRESH
        if self.role == "ocpp":
            self.delivery = RemoteDelivery(csms)
            self.locations.returned_at = self._returns.get
            self.compliance = ComplianceRecorder(
                csms.db, limits_for(settings.session_update_interval, settings.offline_after)
            )
        else:
            self.pusher = Pusher(self)
            self.delivery = LocalDelivery(self.pusher.pending_pushes, self.pusher.compliance.flush)
            self.locations.returned_at = self.pusher.rules.returned_at
            self.compliance = self.pusher.compliance
            self.pusher.on_commissioned = self.notices.on_commissioned
            self.tariff_pusher = TariffPusher(
                self, self.pusher.metrics, self.pusher.push_alerts.observe
            )
        self.commands = CommandService(self)
        self.token_source.grants = self.commands.grant_for
        csms.topics.subscribe(PEERS_TOPIC, self._peers_changed_here)
        self._notices_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self, public_url: str) -> None:
        self.public_url = (self.settings.public_url or public_url).rstrip("/")
        self.traffic.start()
        if self.role != "delivery":  # (the node's, before its delivery process starts)
            if self.settings.token_a:
                await self.store.add_token_a(self.settings.token_a)
            before = await self.store.tariffs()
            for tariff in self.settings.tariffs:
                await self.store.put_tariff(
                    tariff.id, tariff.model_dump(mode="json", exclude_none=True)
                )
            if self.role == "ocpp" and before != await self.store.tariffs():
                await self.tariffs_changed()  # (a delivery process already running)
        await self.reload_peers()
        if self.pusher is not None:
            await self.sessions.make_missing_cdrs(self.clock.now())
            await self.notices.reconcile(self.clock.now())
            self._notices_task = asyncio.create_task(self.notices.run(), name="ocpi-notices")
            await self.pusher.start()
            assert self.tariff_pusher is not None
            await self.tariff_pusher.start()
        if self.role != "delivery":
            await self.commands.start()
        log.info(
            "OCPI bridge ready",
            role=self.role,
            versions_url=self.versions_url,
            party=f"{self.settings.country_code}/{self.settings.party_id}",
            peers=len(self._peers_by_token),
        )

    async def stop(self) -> None:
        if self.role != "delivery":
            await self.commands.stop()
        if self.tariff_pusher is not None:
            await self.tariff_pusher.stop()
        if self.pusher is not None:
            await self.pusher.stop()
        if self._notices_task is not None:
            self._notices_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._notices_task
        await self.notices.close()
        await self.traffic.stop()
        await self.client.close()

    # ------------------------------------------------------------------ peers and tokens

    async def reload_peers(self) -> None:
        peers = await self.store.peers()
        self._peers_by_token = {
            p.token_in: p for p in peers if p.status == "registered" and p.token_in
        }

    async def _peers_changed(self) -> None:
        """A peer registered, renewed or left: every process of csms hears it (the nodes
        serve its new token, the delivery pushes it what it lacks), this one at once."""
        await self.csms.topics.publish(PEERS_TOPIC)

    async def peers_changed(self) -> None:
        """The operator changed a peer (policy, suspended, resumed, removed)."""
        await self._peers_changed()

    async def _peers_changed_here(self) -> None:
        await self.reload_peers()
        if self.pusher is not None and self.pusher.running:
            await self.pusher.reconcile()  # a new peer gets every Location (R1) and more
        if self.tariff_pusher is not None and self.tariff_pusher.running:
            await self.tariff_pusher.reconcile()  # and the tariffs it lacks, or no longer sees

    async def fresh_returns(self) -> None:
        """Role "ocpp": when each station spoke again after a silence (for its EVSEs'
        status times), as the delivery process stored it; read at most every
        RETURNS_FRESH seconds. Elsewhere the pusher's rules know it already."""
        if self.pusher is not None or time.monotonic() - self._returns_at < RETURNS_FRESH:
            return
        rows = await self.csms.db.read("SELECT station_id, returned_at FROM ocpi_station_returns")
        self._returns.clear()
        for r in rows:
            at = from_db(r["returned_at"])
            if at is not None:
                self._returns[r["station_id"]] = at
        self._returns_at = time.monotonic()

    def peer_by_token(self, token: str) -> Peer | None:
        return self._peers_by_token.get(token)

    def is_mobie(self, peer: Peer) -> bool:
        """Does MOBI.E's profile apply to what this peer gets? In MOBI.E mode, the hub is
        MOBI.E."""
        return peer.policy.mobie

    def registered_peers(self) -> list[Peer]:
        """The peers that call us and get pushes: registered and not suspended."""
        return [p for p in self._peers_by_token.values() if p.active]

    async def token_a_valid(self, token: str) -> bool:
        return await self.store.token_a_usable(token)

    # ------------------------------------------------------------------ our identity

    @property
    def versions_url(self) -> str:
        return join_url(self.public_url, "ocpi", "versions")

    def details_url(self, version: str) -> str:
        return join_url(self.public_url, "ocpi", version)

    def module_url(self, version: str, identifier: str) -> str:
        return join_url(self.public_url, "ocpi", version, identifier)

    def our_credentials(self, token: str) -> dict[str, Any]:
        s = self.settings
        business: dict[str, Any] = {"name": s.business_name}
        if s.website:
            business["website"] = s.website
        return {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": "CPO",
                    "business_details": business,
                    "party_id": s.party_id,
                    "country_code": s.country_code,
                }
            ],
        }

    # ------------------------------------------------------------------ locations

    async def all_locations(self, now: datetime | None = None) -> list[dict[str, Any]]:
        await self.fresh_returns()
        now = now or self.clock.now()
        stations = await self.csms.defined_stations()
        return [self.locations.location(s, now) for s in stations]

    async def list_locations(
        self, page: Page, peer: Peer | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of our Locations as ``peer`` sees them: without those hidden from it, with
        its own tariff ids (ocpi_bridge.peers)."""
        items = await self.all_locations()
        if peer is not None:
            items = [
                location_for(peer.policy, i) for i in items if peer.policy.sees_location(i["id"])
            ]
        items = _date_filter(items, page)
        return items[page.offset : page.offset + page.limit], len(items)

    async def location_of_station(
        self, station_id: str
    ) -> tuple[dict[str, Any], tuple[int, ...]] | None:
        """The current Location of a station, and the OCPP connector id of each EVSE."""
        await self.fresh_returns()
        station = await self.csms.defined_station(station_id)
        if station is None:
            self._touch_basis.pop(station_id, None)
            return None
        location = self.locations.location(station, self.clock.now())
        # (to the second, as OCPI writes it: the newest of two times cut to the second is the
        # newest of the two cut times, so a touch loses nothing)
        self._touch_basis[station_id] = (
            location["id"],
            parse_ocpi_time(location["last_updated"]),
        )
        return location, tuple(e["connector_id"] for e in station.evses)

    async def location_touch_of_station(self, station_id: str) -> tuple[str, str] | None:
        """A station's Location id and ``last_updated`` (for a rule-R8 touch).

        A touch follows every frame, so it is computed without the database when it can:
        ``last_updated`` is the newest of the definition time, the EVSEs' status times and
        the latest frame's arrival. Between two full computations (every Location PUT, and
        every redefinition, see :meth:`forget_station`), an EVSE's status time is a frame's
        arrival (a status, a return from silence: never later than the latest frame, which
        the store keeps in memory) or, for UNKNOWN, the end of a silence. So, unless the
        station is silent now, the newest of the last computation and the latest arrival is
        what the database would give.
        """
        basis = self._touch_basis.get(station_id)
        seen = self.csms.last_seen(station_id)
        # (a silent station's EVSEs turn UNKNOWN with a time of their own: asked then, as a
        # delayed touch may be, the database decides)
        if basis is not None and seen is not None and self.clock.now() - seen < self.offline_after:
            location_id, at = basis
            return location_id, ocpi_time(max(at, seen))
        station = await self.csms.defined_station(station_id)
        if station is None or station.definition is None:
            self._touch_basis.pop(station_id, None)
            return None
        location_id = station.definition["location"]["id"]
        at = self.locations.last_updated(station, self.clock.now())
        self._touch_basis[station_id] = (location_id, at)
        return location_id, ocpi_time(at)

    def forget_station(self, station_id: str) -> None:
        """The station was (re)defined: the next touch computes from the database."""
        self._touch_basis.pop(station_id, None)

    async def get_location(
        self, location_id: str, peer: Peer | None = None
    ) -> dict[str, Any] | None:
        """One Location as ``peer`` sees it; None when unknown or hidden from it."""
        if peer is not None and not peer.policy.sees_location(location_id):
            return None
        await self.fresh_returns()
        station = await self.csms.station_by_location(location_id)
        if station is None:
            return None
        location = self.locations.location(station, self.clock.now())
        return location_for(peer.policy, location) if peer is not None else location

    # ------------------------------------------------------------------ sessions and CDRs

    async def list_sessions(
        self, peer: Peer, page: Page, version: str
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.sessions.list_sessions(
            _owners(peer),
            page.date_from,
            page.date_to,
            page.offset,
            page.limit,
            version,
            self.is_mobie(peer),
        )

    async def list_cdrs(
        self, peer: Peer, page: Page, version: str
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.sessions.list_cdrs(
            _owners(peer),
            page.date_from,
            page.date_to,
            page.offset,
            page.limit,
            version,
            self.is_mobie(peer),
        )

    async def get_cdr(self, peer: Peer, cdr_id: str, version: str) -> dict[str, Any] | None:
        return await self.sessions.get_cdr(_owners(peer), cdr_id, version, self.is_mobie(peer))

    # ------------------------------------------------------------------ tariffs

    async def tariffs_changed(self) -> None:
        """Our tariffs changed (admin API, config): the delivery pushes them to the peers."""
        await self.csms.topics.publish(TARIFFS_TOPIC)

    async def list_tariffs(
        self, page: Page, peer: Peer | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of our tariffs as ``peer`` sees them: the public ones and its own
        replacements (ocpi_bridge.peers), as pushed to it (ocpi_bridge.tariff_push)."""
        rows = await self.store.tariffs()
        if peer is not None:
            policies = [p.policy for p in self._peers_by_token.values()]
            ids = set(visible(peer.policy, [r["id"] for r in rows], policies))
            rows = [r for r in rows if r["id"] in ids]
        items = [self.tariff_object(t) for t in rows]
        items = _date_filter(items, page)
        return items[page.offset : page.offset + page.limit], len(items)

    def tariff_object(self, row: dict[str, Any]) -> dict[str, Any]:
        from .pricing import TariffDef

        tariff = TariffDef.model_validate(row["body"])
        return tariff.to_ocpi(
            self.settings.country_code, self.settings.party_id, row["last_updated"]
        )


def _owners(peer: Peer) -> set[str] | None:
    """The token owners whose sessions and CDRs this peer may see; None = all (a hub)."""
    if peer.routes_all:
        return None
    return {f"{cc}/{pid}" for cc, pid in peer.parties}


def _date_filter(items: list[dict[str, Any]], page: Page) -> list[dict[str, Any]]:
    """date_from inclusive, date_to exclusive, on last_updated."""
    out = []
    for item in items:
        updated = parse_ocpi_time(item["last_updated"])
        if page.date_from is not None and updated < page.date_from:
            continue
        if page.date_to is not None and updated >= page.date_to:
            continue
        out.append(item)
    return out
