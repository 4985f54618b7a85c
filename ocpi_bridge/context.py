"""What the bridge's services (pusher, commands) need of the bridge that owns them.

A protocol, so that they depend on this small surface rather than import the bridge, which
builds them: the bridge satisfies it, a test may hand in anything that does.
"""

from __future__ import annotations

from typing import Any, Protocol

from csms.ports import Clock, CsmsPort

from .client import OcpiClient
from .commissioning import CommissioningNotices
from .config import OcpiSettings
from .locations import LocationBuilder
from .sessions import SessionBuilder
from .store import OcpiStore, Peer
from .traffic import PeerTraffic


class BridgeContext(Protocol):
    settings: OcpiSettings
    csms: CsmsPort
    clock: Clock
    store: OcpiStore
    client: OcpiClient
    locations: LocationBuilder
    sessions: SessionBuilder
    notices: CommissioningNotices
    traffic: PeerTraffic

    def is_mobie(self, peer: Peer) -> bool: ...

    def tariff_object(self, row: dict[str, Any]) -> dict[str, Any]: ...

    def registered_peers(self) -> list[Peer]: ...

    def forget_station(self, station_id: str) -> None: ...

    async def location_of_station(
        self, station_id: str
    ) -> tuple[dict[str, Any], tuple[int, ...]] | None: ...

    async def location_touch_of_station(self, station_id: str) -> tuple[str, str] | None: ...
