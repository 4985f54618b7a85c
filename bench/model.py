"""What the benchmark's stations are: ids, OCPI Locations and EVSEs, id tags, and MOBI.E's
timing (in simulated seconds; the compression factor K runs it K times faster)."""

from __future__ import annotations

from typing import Any

# MOBI.E's intervals (seconds of real time at K = 1)
HEARTBEAT_S = 120.0  # R4
METER_INTERVAL_S = 60.0  # R3
SESSION_UPDATE_S = 300.0  # R5
OFFLINE_AFTER_S = 300.0  # R7

# A connector's life: idle, plugged (Preparing), charging, finishing. Sessions last 20 to 60
# minutes and idle periods 40 to 120: on average a third of the connectors are charging.
SESSION_MIN_S, SESSION_MAX_S = 20 * 60.0, 60 * 60.0
IDLE_MIN_S, IDLE_MAX_S = 40 * 60.0, 120 * 60.0
PLUG_TO_START_S = (5.0, 30.0)  # Preparing, then the card is presented
FINISH_TO_UNPLUG_S = (10.0, 120.0)  # Finishing, then Available
CHARGING_SHARE = (SESSION_MIN_S + SESSION_MAX_S) / (
    SESSION_MIN_S + SESSION_MAX_S + IDLE_MIN_S + IDLE_MAX_S
)
POWERS_W = (7400, 11000, 22000)

TARIFF_ID = "BENCH-AC"
OCPP_STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEV",
    "SuspendedEVSE",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)
OCPP_TO_OCPI = {
    "Available": "AVAILABLE",
    "Preparing": "CHARGING",
    "Charging": "CHARGING",
    "SuspendedEV": "CHARGING",
    "SuspendedEVSE": "CHARGING",
    "Finishing": "CHARGING",
    "Reserved": "RESERVED",
    "Unavailable": "INOPERATIVE",
    "Faulted": "OUTOFORDER",
}
OCPI_STATUSES = (
    "AVAILABLE",
    "CHARGING",
    "RESERVED",
    "INOPERATIVE",
    "OUTOFORDER",
    "UNKNOWN",
    "PLANNED",
    "BLOCKED",
    "REMOVED",
)
STATION_ACTIONS = (
    "BootNotification",
    "Heartbeat",
    "StatusNotification",
    "Authorize",
    "StartTransaction",
    "StopTransaction",
    "MeterValues",
)


def station_id(idx: int) -> str:
    return f"BENCH-{idx:05d}"


def location_id(idx: int) -> str:
    return f"BL{idx:05d}"


def evse_uid(idx: int, connector: int) -> str:
    return f"BL{idx:05d}-{connector}"


def parse_evse_uid(uid: str) -> tuple[int, int] | None:
    """(station index, connector id) of one of our EVSE uids."""
    if not uid.startswith("BL"):
        return None
    head, _, tail = uid.partition("-")
    try:
        return int(head[2:]), int(tail)
    except ValueError:
        return None


def parse_location_id(loc: str) -> int | None:
    if not loc.startswith("BL"):
        return None
    try:
        return int(loc[2:])
    except ValueError:
        return None


def tag_id(n: int) -> str:
    return f"BT{n:06d}"


def tag_count(stations: int) -> int:
    """Drivers' cards: one for every two stations (at least ten)."""
    return max(10, stations // 2)


def station_body(idx: int, connectors: int) -> dict[str, Any]:
    """The operator's definition of one station: one Location, one EVSE per connector."""
    loc = location_id(idx)
    # spread over mainland Portugal, deterministic
    lat = 37.0 + (idx * 7919 % 4000) / 1000.0
    lon = -9.4 + (idx * 104729 % 2800) / 1000.0
    return {
        "location": {
            "id": loc,
            "name": f"Bench station {idx}",
            "address": f"Rua do Banco de Ensaio {idx}",
            "city": "Lisboa",
            "postal_code": "1000-001",
            "country": "PRT",
            "coordinates": {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"},
            "time_zone": "Europe/Lisbon",
            "parking_type": "ON_STREET",
            "mobie_voltage_level": "BTN",
        },
        "evses": [
            {
                "connector_id": c,
                "uid": evse_uid(idx, c),
                "evse_id": f"PT*CPO*E{idx:05d}*{c}",
                "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2",
                        "format": "SOCKET",
                        "power_type": "AC_3_PHASE",
                        "max_voltage": 230,
                        "max_amperage": 32,
                        "max_electric_power": 22000,
                        "tariff_ids": [TARIFF_ID],
                    }
                ],
            }
            for c in range(1, connectors + 1)
        ],
    }


def compressed(seconds: float, k: float, floor: int = 1) -> int:
    """A configuration interval divided by K, as the whole seconds the product takes."""
    return max(floor, round(seconds / k))
