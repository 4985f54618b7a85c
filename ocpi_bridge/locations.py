"""OCPI Locations, EVSEs and Connectors, built from the operator's station definitions and
the stations' live state. One station is one Location and each OCPP connector one EVSE
(MOBI.E's model).

EVSE status (one pure function, :func:`evse_status`, used by GETs and pushes alike):
- PLANNED until the station first reports a status (rule R1);
- UNKNOWN when nothing at all has come from the station for ``offline_after`` (rule R7);
- otherwise the OCPP status of its connector, mapped as the reference's table says, with
  connector 0's Unavailable or Faulted applying to every EVSE of the station;
- REMOVED, before all of these, once the operator retired the EVSE (or its station): its
  ``removed_at`` in the definition, which is also its ``last_updated``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from csms.ports import StationSnapshot

from .config import OcpiSettings
from .transport import ocpi_time

OCPP_TO_OCPI = {
    "Available": "AVAILABLE",
    "Preparing": "CHARGING",
    "Charging": "CHARGING",
    "SuspendedEV": "CHARGING",
    "SuspendedEVSE": "CHARGING",
    "Finishing": "CHARGING",
    "Reserved": "RESERVED",
    "Unavailable": "INOPERATIVE",  # MOBI.E's "InMaintenance"
    "Faulted": "OUTOFORDER",
}
# MOBI.E's names for the statuses, for people reading the web interface
MOBIE_NAMES = {
    "PLANNED": "ToInstall",
    "AVAILABLE": "Idle",
    "CHARGING": "InUse",
    "INOPERATIVE": "InMaintenance",
    "OUTOFORDER": "OutOfService",
    "RESERVED": "Reserved",
    "UNKNOWN": "Unknown",
    "REMOVED": "EndOfLife",
}  # MOBI.E's profile (seed 001, table 7) names no other status (BLOCKED has no word)
STATION_WIDE = ("Unavailable", "Faulted")


@dataclass(frozen=True, slots=True)
class ConnectorState:
    status: str  # OCPP ChargePointStatus
    at: datetime  # when we received it


@dataclass(frozen=True, slots=True)
class EvseState:
    status: str  # OCPI
    since: datetime  # the EVSE's last_updated


def evse_status(
    own: ConnectorState | None,
    station_wide: ConnectorState | None,
    last_seen: datetime | None,
    defined_at: datetime,
    now: datetime,
    offline_after: timedelta,
    returned_at: datetime | None = None,
) -> EvseState:
    """The OCPI status of one EVSE and the time it took that status. ``returned_at``: when
    the station spoke again after a silence (its statuses are then at least that new)."""
    reported = [s for s in (own, station_wide) if s is not None]
    if not reported:
        return EvseState("PLANNED", defined_at)
    if last_seen is not None and now - last_seen >= offline_after:
        return EvseState("UNKNOWN", max(last_seen + offline_after, defined_at))
    if returned_at is not None:
        defined_at = max(defined_at, returned_at)
    if station_wide is not None and station_wide.status in STATION_WIDE:
        if own is None or station_wide.at >= own.at or own.status not in STATION_WIDE:
            return EvseState(OCPP_TO_OCPI[station_wide.status], max(station_wide.at, defined_at))
    chosen = own if own is not None else station_wide
    assert chosen is not None
    since = max(chosen.at, defined_at)
    if station_wide is not None:
        # a newer station-wide status (e.g. connector 0 clearing a fault) changed this EVSE
        # too: its own status is back since then, not since it was reported
        since = max(since, station_wide.at)
    return EvseState(OCPP_TO_OCPI.get(chosen.status, "UNKNOWN"), since)


def removed_at(evse: dict[str, Any]) -> datetime | None:
    """When the operator retired this EVSE of a station definition (None: in service)."""
    text = evse.get("removed_at")
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def active_connectors(station: StationSnapshot) -> tuple[int, ...]:
    """The OCPP connector ids of a station's EVSEs still in service (not retired): those
    whose statuses and silences the push rules follow."""
    return tuple(e["connector_id"] for e in station.evses if removed_at(e) is None)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class LocationBuilder:
    def __init__(
        self,
        settings: OcpiSettings,
        offline_after: timedelta,
        returned_at: Callable[[str], datetime | None] = lambda station_id: None,
    ) -> None:
        self.settings = settings
        self.offline_after = offline_after
        self.returned_at = returned_at

    def states(self, station: StationSnapshot, now: datetime) -> dict[int, EvseState]:
        """connector_id -> EvseState for each EVSE of a defined station."""
        defined_at = station.defined_at
        assert defined_at is not None
        last_seen = station.last_seen_at
        by_id = {
            c.connector_id: ConnectorState(c.status, c.received_at)  # type: ignore[arg-type]
            for c in station.connectors
        }
        out = {}
        for evse in station.evses:
            cid = evse["connector_id"]
            removed = removed_at(evse)
            if removed is not None:  # retired by the operator: REMOVED for good
                out[cid] = EvseState("REMOVED", max(removed, defined_at))
                continue
            out[cid] = evse_status(
                by_id.get(cid),
                by_id.get(0),
                last_seen,
                defined_at,
                now,
                self.offline_after,
                self.returned_at(station.id),
            )
        return out

    def location(self, station: StationSnapshot, now: datetime) -> dict[str, Any]:
        definition = station.definition
        assert definition is not None
        loc = definition["location"]
        defined_at = station.defined_at
        assert defined_at is not None
        states = self.states(station, now)
        evses = [self.evse(e, states[e["connector_id"]], defined_at) for e in definition["evses"]]
        last_updated = self._last_updated(station, states)
        s = self.settings
        return _clean(
            {
                "country_code": s.country_code,
                "party_id": s.party_id,
                "id": loc["id"],
                "publish": loc.get("publish", True),
                "name": loc.get("name"),
                "address": loc["address"],
                "city": loc["city"],
                "postal_code": loc.get("postal_code"),
                "state": loc.get("state"),
                "country": loc["country"],
                "coordinates": loc["coordinates"],
                "parking_type": loc.get("parking_type"),
                "evses": evses,
                "operator": _clean({"name": s.business_name, "website": s.website}),
                "time_zone": loc["time_zone"],
                "mobie_voltage_level": loc.get("mobie_voltage_level"),
                "last_updated": ocpi_time(last_updated),
            }
        )

    def last_updated(self, station: StationSnapshot, now: datetime) -> datetime:
        """The Location's ``last_updated`` alone (what a rule-R8 touch sends), as
        :meth:`location` computes it, without building the rest."""
        return self._last_updated(station, self.states(station, now))

    @staticmethod
    def _last_updated(station: StationSnapshot, states: dict[int, EvseState]) -> datetime:
        # MOBI.E: the newest of its EVSEs', and (rule R8) the arrival of the station's latest
        # frame, which every frame PATCHes into the Location
        defined_at = station.defined_at
        assert defined_at is not None
        last_seen = station.last_seen_at
        return max(
            [defined_at, *(s.since for s in states.values()), *([last_seen] if last_seen else [])]
        )

    def evse(self, evse: dict[str, Any], state: EvseState, defined_at: datetime) -> dict[str, Any]:
        return _clean(
            {
                "uid": evse["uid"],
                "evse_id": evse.get("evse_id"),
                "status": state.status,
                "capabilities": list(evse.get("capabilities") or []),
                "connectors": [self.connector(c, defined_at) for c in evse["connectors"]],
                "physical_reference": evse.get("physical_reference"),
                "floor_level": evse.get("floor_level"),
                "last_updated": ocpi_time(state.since),
            }
        )

    @staticmethod
    def connector(connector: dict[str, Any], defined_at: datetime) -> dict[str, Any]:
        return _clean(
            {
                "id": connector["id"],
                "standard": connector["standard"],
                "format": connector["format"],
                "power_type": connector["power_type"],
                "max_voltage": connector["max_voltage"],
                "max_amperage": connector["max_amperage"],
                "max_electric_power": connector.get("max_electric_power"),
                "tariff_ids": list(connector.get("tariff_ids") or []),
                "terms_and_conditions": connector.get("terms_and_conditions"),
                "last_updated": ocpi_time(defined_at),
            }
        )
