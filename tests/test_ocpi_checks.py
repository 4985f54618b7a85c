"""The OCPI checker must fail: realistic objects pass, and every single mutation is caught.

Each mutation case says which model must report it and at which JSON path: ``both`` (our
strict rules and ocpi-types), or ``strict`` (a rule ocpi-types does not have; the case also
asserts that ocpi-types stays silent, which documents where the two models differ).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from ocpi_types import v2_2_1

from tests import ocpi_checks as oc

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Realistic objects (MOBI.E style)

EMSP_TOKEN = {
    "country_code": "PT",
    "party_id": "EDP",
    "uid": "04A1B2C3D4E5F6",
    "type": "RFID",
    "contract_id": "PT-EDP-C-1234ABCD-J",
}


def connector(ts: str = "2024-05-01T09:00:00Z") -> dict[str, Any]:
    return {
        "id": "1",
        "standard": "IEC_62196_T2",
        "format": "SOCKET",
        "power_type": "AC_3_PHASE",
        "max_voltage": 230,
        "max_amperage": 32,
        "max_electric_power": 22080,
        "tariff_ids": ["TAR-AC-01"],
        "terms_and_conditions": "https://cpo.example.pt/terms",
        "last_updated": ts,
    }


def evse(uid: str = "LSB-00175-01", ts: str = "2024-05-01T09:00:00Z") -> dict[str, Any]:
    return {
        "uid": uid,
        "evse_id": "PT*MOB*E" + uid.replace("-", "*"),
        "status": "AVAILABLE",
        "capabilities": ["REMOTE_START_STOP_CAPABLE", "RFID_READER"],
        "connectors": [connector(ts)],
        "last_updated": ts,
    }


def location() -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "MOB",
        "id": "LSB-00175",
        "publish": True,
        "name": "Praça do Comércio",
        "address": "Praça do Comércio 1",
        "city": "Lisboa",
        "postal_code": "1100-148",
        "country": "PRT",
        "coordinates": {"latitude": "38.716670", "longitude": "-9.141670"},
        "parking_type": "ON_STREET",
        "evses": [
            evse("LSB-00175-01", "2024-05-01T09:00:00Z"),
            evse("LSB-00175-02", "2024-05-01T09:30:00Z"),
        ],
        "operator": {"name": "CPO Exemplo, Lda."},
        "time_zone": "Europe/Lisbon",
        "mobie_voltage_level": "BTN",
        "last_updated": "2024-05-01T09:30:00Z",
    }


def session() -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "MOB",
        "id": "8a1f3c2e-5b7d-4e09-9c1a-2f6b8d4e7a10",
        "start_date_time": "2024-05-01T10:00:00Z",
        "kwh": 3.25,
        "cdr_token": dict(EMSP_TOKEN),
        "auth_method": "WHITELIST",
        "location_id": "LSB-00175",
        "evse_uid": "LSB-00175-01",
        "connector_id": "1",
        "currency": "EUR",
        "charging_periods": [
            {
                "start_date_time": "2024-05-01T10:00:00Z",
                "dimensions": [
                    {"type": "ENERGY", "volume": 3.25},
                    {"type": "MAX_POWER", "volume": 11},
                ],
                "tariff_id": "TAR-AC-01",
            }
        ],
        "total_cost": {"excl_vat": 0.98, "incl_vat": 1.2},
        "status": "ACTIVE",
        "last_updated": "2024-05-01T10:15:00Z",
    }


def tariff() -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "MOB",
        "id": "TAR-AC-01",
        "currency": "EUR",
        "type": "REGULAR",
        "tariff_alt_text": [{"language": "pt", "text": "0,30 EUR/kWh; estacionamento 2 EUR/h"}],
        "elements": [
            {"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 23, "step_size": 1}]},
            {
                "price_components": [
                    {"type": "PARKING_TIME", "price": 2.0, "vat": 23, "step_size": 60}
                ],
                "restrictions": {
                    "start_time": "20:00",
                    "end_time": "08:00",
                    "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"],
                    "min_kwh": 0,
                    "max_kwh": 50,
                },
            },
        ],
        "last_updated": "2024-04-01T00:00:00Z",
    }


def cdr() -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "MOB",
        "id": "CDR-2024-000123",
        "start_date_time": "2024-05-01T10:00:00Z",
        "end_date_time": "2024-05-01T11:00:00Z",
        "session_id": "8a1f3c2e-5b7d-4e09-9c1a-2f6b8d4e7a10",
        "cdr_token": dict(EMSP_TOKEN),
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": "LSB-00175",
            "name": "Praça do Comércio",
            "address": "Praça do Comércio 1",
            "city": "Lisboa",
            "postal_code": "1100-148",
            "country": "PRT",
            "coordinates": {"latitude": "38.716670", "longitude": "-9.141670"},
            "evse_uid": "LSB-00175-01",
            "evse_id": "PT*MOB*ELSB*00175*01",
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2",
            "connector_format": "SOCKET",
            "connector_power_type": "AC_3_PHASE",
            "mobie_voltage_level": "BTN",
        },
        "currency": "EUR",
        "tariffs": [tariff()],
        "charging_periods": [
            {
                "start_date_time": "2024-05-01T10:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 10.5}, {"type": "TIME", "volume": 1}],
                "tariff_id": "TAR-AC-01",
            }
        ],
        "total_cost": {"excl_vat": 3.15, "incl_vat": 3.87},
        "total_fixed_cost": {"excl_vat": 0, "incl_vat": 0},
        "total_energy": 10.5,
        "total_energy_cost": {"excl_vat": 3.15, "incl_vat": 3.87},
        "total_time": 1.0,
        "total_time_cost": {"excl_vat": 0, "incl_vat": 0},
        "total_parking_time": 0,
        "total_parking_cost": {"excl_vat": 0},
        # MOBI.E's digest defines no structure for it: checked only as a JSON object
        "mobie_cdr_extension": {"opaque": "MOBI.E billing data"},
        "last_updated": "2024-05-01T11:00:05Z",
    }


def token() -> dict[str, Any]:
    return {
        **EMSP_TOKEN,
        "visual_number": "EDP 1234 ABCD",
        "issuer": "EDP Comercial",
        "group_id": "EDP-FLEET-7",
        "valid": True,
        "whitelist": "ALWAYS",
        "language": "pt",
        "last_updated": "2024-04-30T08:00:00Z",
    }


def credentials() -> dict[str, Any]:
    return {
        "token": "b3e1c7a2-9f4d-4c8e-a6b5-0d2f1e3c4b5a",
        "url": "https://cpo.example.pt/ocpi/versions",
        "roles": [
            {
                "role": "CPO",
                "business_details": {
                    "name": "CPO Exemplo, Lda.",
                    "website": "https://cpo.example.pt",
                },
                "party_id": "MOB",
                "country_code": "PT",
            }
        ],
    }


def version_list() -> list[dict[str, Any]]:
    return [
        {"version": "2.2", "url": "https://cpo.example.pt/ocpi/2.2"},
        {"version": "2.2.1", "url": "https://cpo.example.pt/ocpi/2.2.1"},
    ]


def version_details() -> dict[str, Any]:
    base = "https://cpo.example.pt/ocpi/cpo/2.2.1"
    modules = [
        ("credentials", "SENDER"),
        ("locations", "SENDER"),
        ("sessions", "SENDER"),
        ("cdrs", "SENDER"),
        ("tariffs", "SENDER"),
        ("tokens", "RECEIVER"),
        ("commands", "RECEIVER"),
    ]
    return {
        "version": "2.2.1",
        "endpoints": [{"identifier": m, "role": r, "url": f"{base}/{m}"} for m, r in modules],
    }


def command_response() -> dict[str, Any]:
    return {
        "result": "ACCEPTED",
        "timeout": 30,
        "message": [{"language": "en", "text": "Forwarded to the charging station"}],
    }


def command_result() -> dict[str, Any]:
    return {"result": "ACCEPTED", "message": [{"language": "en", "text": "Session started"}]}


def envelope(data: Any = None) -> dict[str, Any]:
    return {
        "data": [location()] if data is None else data,
        "status_code": 1000,
        "status_message": "Success",
        "timestamp": "2024-05-01T10:00:01Z",
    }


FIXTURES: dict[str, tuple[Callable[[], Any], Callable[..., None]]] = {
    "location": (location, oc.check_location),
    "evse": (evse, oc.check_evse),
    "connector": (connector, oc.check_connector),
    "session": (session, oc.check_session),
    "cdr": (cdr, oc.check_cdr),
    "tariff": (tariff, oc.check_tariff),
    "token": (token, oc.check_token),
    "credentials": (credentials, oc.check_credentials),
    "version_list": (version_list, oc.check_version_list),
    "version_details": (version_details, oc.check_version_details),
    "command_response": (command_response, oc.check_command_response),
    "command_result": (command_result, oc.check_command_result),
}

# --------------------------------------------------------------------------------------------
# Mutation helpers

DELETE = object()


def _keys(path: str) -> list[str | int]:
    keys: list[str | int] = []
    for part in path.split("."):
        name, *indexes = re.split(r"\[", part)
        if name:
            keys.append(name)
        keys += [int(i.rstrip("]")) for i in indexes]
    return keys


def mutated(obj: Any, path: str, value: Any) -> Any:
    """A deep copy of ``obj`` with ``path`` (``evses[0].connectors[0].standard``) set/deleted."""
    obj = copy.deepcopy(obj)
    *parents, last = _keys(path)
    target = obj
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return obj


def failure(check: Callable[..., None], obj: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(AssertionError) as info:
        check(obj, *args, **kw)
    return str(info.value)


@dataclass(frozen=True)
class M:
    """One mutation: set ``path`` to ``value``; expect ``src`` to report ``at``."""

    path: str
    value: Any
    src: str = "both"  # "both" or "strict"
    at: str | None = None  # JSON path expected in the message (default "$." + path)
    msg: str | None = None  # words expected in the [strict] message

    def where(self) -> str:
        return self.at if self.at is not None else "$." + self.path


LONG = "x" * 300
BAD_TIMES = {
    "offset": "2024-05-01T09:30:00+00:00",
    "no_z": "2024-05-01T09:30:00",
    "millis": "2024-05-01T09:30:00.123Z",
    "tenths": "2024-05-01T09:30:00.1Z",
    "space": "2024-05-01 09:30:00Z",
    "date_only": "2024-05-01",
    "bad_day": "2024-02-30T09:30:00Z",
    "lower_z": "2024-05-01t09:30:00z",
}

CASES: list[tuple[str, M]] = [
    # ---- Location: timestamps (ocpi-types accepts any string)
    *[("location", M("last_updated", v, "strict", msg="house format")) for v in BAD_TIMES.values()],
    ("location", M("evses[1].connectors[0].last_updated", BAD_TIMES["offset"], "strict")),
    ("location", M("last_updated", 1714555800, msg="expected a DateTime string")),
    # ---- lengths, characters, empties
    ("location", M("id", "L" * 37, "strict", msg="CiString(36)")),
    ("location", M("id", "LSB-00175\t", "strict", msg="printable ASCII")),
    ("location", M("id", "LSB-00175-é", "strict", msg="printable ASCII")),
    ("location", M("id", "", "strict", msg="empty")),
    ("location", M("name", LONG, "strict", msg="string(255)")),
    ("location", M("name", "Praça\ndo Comércio", "strict", msg="control")),
    ("location", M("address", "A" * 46, "strict", msg="string(45)")),
    ("location", M("city", "C" * 46, "strict")),
    ("location", M("postal_code", "1100-148 LISBOA", "strict", msg="string(10)")),
    ("location", M("state", "S" * 21, "strict", msg="string(20)")),
    ("location", M("time_zone", "Lisbon", "strict", msg="IANA")),
    ("location", M("time_zone", "Europe/Lisboa", "strict", msg="IANA")),
    ("location", M("evses[0].evse_id", "PT*MOB*E" + "1" * 41, "strict", msg="CiString(48)")),
    ("location", M("evses[0].physical_reference", "P" * 17, "strict", msg="string(16)")),
    ("location", M("evses[0].floor_level", "-1.5b", "strict", msg="string(4)")),
    (
        "location",
        M(
            "evses[0].connectors[0].tariff_ids",
            ["T" * 37],
            "strict",
            at="$.evses[0].connectors[0].tariff_ids[0]",
        ),
    ),
    ("location", M("operator.name", "N" * 101, "strict", msg="string(100)")),
    ("location", M("operator.website", "cpo.example.pt", "strict", msg="absolute")),
    ("location", M("operator.website", "https://cpo.example.pt/" + "p" * 240, "strict", msg="255")),
    ("location", M("evses[0].connectors[0].terms_and_conditions", "/terms", "strict")),
    (
        "location",
        M(
            "directions",
            [{"language": "por", "text": "Junto ao posto"}],
            "strict",
            at="$.directions[0].language",
        ),
    ),
    (
        "location",
        M(
            "directions",
            [{"language": "PT", "text": "Junto"}],
            "strict",
            at="$.directions[0].language",
        ),
    ),
    (
        "location",
        M(
            "directions",
            [{"language": "pt", "text": "t" * 513}],
            "strict",
            at="$.directions[0].text",
            msg="string(512)",
        ),
    ),
    ("location", M("directions", [{"language": "pt"}], at="$.directions[0].text")),
    (
        "location",
        M(
            "images",
            [{"url": "https://cpo.example.pt/a.jpeg", "category": "CHARGER", "type": "jpeg2"}],
            "strict",
            at="$.images[0].type",
            msg="CiString(4)",
        ),
    ),
    (
        "location",
        M(
            "images",
            [{"url": "https://cpo.example.pt/a.png", "category": "PHOTO", "type": "png"}],
            at="$.images[0].category",
        ),
    ),
    (
        "location",
        M(
            "images",
            [
                {
                    "url": "https://cpo.example.pt/a.png",
                    "category": "CHARGER",
                    "type": "png",
                    "width": 100000,
                }
            ],
            "strict",
            at="$.images[0].width",
        ),
    ),
    # ---- coordinates
    ("location", M("coordinates.latitude", "38.7166", "strict", msg="does not match")),
    ("location", M("coordinates.latitude", "38.71667012", "strict")),
    ("location", M("coordinates.latitude", "138.716670", "strict")),
    ("location", M("coordinates.latitude", "38,716670", "strict")),
    ("location", M("coordinates.latitude", "95.000000", "strict", msg="-90..90")),
    ("location", M("coordinates.longitude", "-9.1416", "strict")),
    ("location", M("coordinates.longitude", "-1009.141670", "strict")),
    ("location", M("coordinates.longitude", "-189.141670", "strict", msg="-180..180")),
    ("location", M("coordinates.latitude", 38.71667, msg="expected a string")),
    (
        "location",
        M("coordinates", {"lat": "38.716670", "lon": "-9.141670"}, at="$.coordinates.latitude"),
    ),
    # ---- country codes and party ids
    ("location", M("country", "PT", "strict", msg="alpha-3")),
    ("location", M("country", "prt", "strict", msg="alpha-3")),
    ("location", M("country_code", "PRT", "strict", msg="CiString(2)")),
    ("location", M("country_code", "P1", "strict", msg="two ASCII letters")),
    ("location", M("party_id", "MO", "strict", msg="three ASCII")),
    ("location", M("party_id", "MO-", "strict")),
    ("location", M("party_id", "MOBI", "strict")),
    # ---- enums (exact, case-sensitive)
    ("location", M("evses[0].status", "FREE", msg="not a valid Status")),
    ("location", M("evses[0].status", "available", msg="case-sensitive")),
    (
        "location",
        M("evses[0].connectors[0].standard", "IEC_60309_2_SINGLE_16", msg="case-sensitive"),
    ),
    ("location", M("evses[0].connectors[0].standard", "Type2", msg="not a valid ConnectorType")),
    ("location", M("evses[0].connectors[0].format", "PLUG")),
    ("location", M("evses[0].connectors[0].power_type", "AC_3_PHASES")),
    (
        "location",
        M("evses[0].capabilities", ["RFID_READER", "QR_CODE"], at="$.evses[0].capabilities[1]"),
    ),
    ("location", M("parking_type", "STREET")),
    ("location", M("facilities", ["WIFI", "POOL"], at="$.facilities[1]")),
    ("location", M("mobie_voltage_level", "AT", "strict", msg="MobieVoltageLevel")),
    # ---- required, null, types
    ("location", M("city", DELETE, msg="missing")),
    ("location", M("city", None, msg="null")),
    ("location", M("time_zone", DELETE)),
    ("location", M("coordinates", DELETE)),
    ("location", M("publish", "true", msg="boolean")),
    ("location", M("publish", None)),
    ("location", M("evses[0].uid", DELETE)),
    ("location", M("evses[0].connectors[0].max_voltage", "230", msg="integer")),
    ("location", M("evses[1].connectors[0].max_amperage", 32.0, msg="integer")),
    ("location", M("evses[1].connectors[0].max_amperage", True, msg="integer")),
    ("location", M("evses[0].connectors[0].max_electric_power", "22080")),
    ("location", M("evses[0].connectors[0].id", 1, msg="expected a string")),
    ("location", M("evses", {"uid": "LSB-00175-01"}, msg="expected an array")),
    ("location", M("evses[0].connectors", [], "strict", msg="must not be empty")),
    ("location", M("evses[0].connectors", None, msg="null")),
    # ---- unknown fields (ocpi-types drops them silently; the round trip shows it)
    ("location", M("foo", 1, msg="unknown field")),
    ("location", M("evses[0].mobie_voltage_level", "BTN", msg="unknown field")),
    ("location", M("evses[0].connectors[0].maxPower", 22080)),
    ("location", M("coordinates.altitude", "12.0")),
    ("location", M("floor", "-1")),
    # ---- cross-field rules
    ("location", M("last_updated", "2024-05-01T09:29:59Z", "strict", msg="older than $.evses[1]")),
    (
        "location",
        M(
            "evses[1].last_updated",
            "2024-05-01T08:00:00Z",
            "strict",
            at="$.evses[1].last_updated",
            msg="older than $.evses[1].connectors[0]",
        ),
    ),
    (
        "location",
        M("evses[1].uid", "lsb-00175-01", "strict", at="$.evses[1]", msg="duplicate EVSE uid"),
    ),
    (
        "location",
        M(
            "evses[0].connectors",
            [connector(), connector()],
            "strict",
            at="$.evses[0].connectors[1]",
            msg="duplicate",
        ),
    ),
    ("location", M("publish_allowed_to", [{"uid": "04A1B2C3", "type": "RFID"}], "strict")),
    (
        "location",
        M(
            "opening_times",
            {"twentyfourseven": False},
            "strict",
            at="$.opening_times.regular_hours",
        ),
    ),
    (
        "location",
        M(
            "opening_times",
            {
                "twentyfourseven": False,
                "regular_hours": [{"weekday": 8, "period_begin": "08:00", "period_end": "20:00"}],
            },
            "strict",
            at="$.opening_times.regular_hours[0].weekday",
        ),
    ),
    (
        "location",
        M(
            "opening_times",
            {
                "twentyfourseven": False,
                "regular_hours": [{"weekday": 1, "period_begin": "8:00", "period_end": "20:00"}],
            },
            "strict",
            at="$.opening_times.regular_hours[0].period_begin",
        ),
    ),
    (
        "location",
        M(
            "opening_times",
            {
                "twentyfourseven": False,
                "regular_hours": [{"weekday": 1, "period_begin": "20:00", "period_end": "08:00"}],
            },
            "strict",
            at="$.opening_times.regular_hours[0].period_end",
        ),
    ),
    (
        "location",
        M(
            "evses[0].status_schedule",
            [
                {
                    "period_begin": "2024-06-01T00:00:00Z",
                    "period_end": "2024-05-01T00:00:00Z",
                    "status": "INOPERATIVE",
                }
            ],
            "strict",
            at="$.evses[0].status_schedule[0].period_end",
        ),
    ),
    # ---- EVSE and Connector on their own
    ("evse", M("last_updated", "2024-05-01T09:00:00.000Z", "strict")),
    ("evse", M("status", "OCCUPIED")),
    ("evse", M("connectors", [], "strict")),
    ("evse", M("connectors", DELETE)),
    ("evse", M("uid", "U" * 37, "strict")),
    (
        "evse",
        M(
            "coordinates",
            {"latitude": "38.7", "longitude": "-9.141670"},
            "strict",
            at="$.coordinates.latitude",
        ),
    ),
    ("evse", M("parking_restrictions", ["EV_ONLY", "ELECTRIC"], at="$.parking_restrictions[1]")),
    (
        "evse",
        M("connectors[0].last_updated", "2024-05-01T09:00:01Z", "strict", at="$.last_updated"),
    ),
    ("connector", M("standard", "IEC_62196_t2", msg="case-sensitive")),
    ("connector", M("max_voltage", 230.5)),
    ("connector", M("max_voltage", DELETE)),
    ("connector", M("tariff_ids", "TAR-AC-01")),
    ("connector", M("tariff_ids", [""], "strict", at="$.tariff_ids[0]", msg="empty")),
    ("connector", M("last_updated", "2024-05-01T09:00:00", "strict", msg="lacks the 'Z'")),
    ("connector", M("voltage", 230)),
    # ---- Session
    ("session", M("kwh", -0.5, "strict", msg="below the minimum 0")),
    ("session", M("kwh", "3.25", msg="number")),
    ("session", M("kwh", 0.1 + 0.2, "strict", msg="4 decimals")),
    ("session", M("kwh", DELETE)),
    ("session", M("status", "RESERVED", msg="not a valid SessionStatus")),
    ("session", M("status", "active")),
    ("session", M("auth_method", "WHITELISTED")),
    ("session", M("currency", "eur", "strict", msg="ISO 4217")),
    ("session", M("currency", "EURO", "strict")),
    ("session", M("start_date_time", "2024-05-01T10:00:00.000Z", "strict")),
    ("session", M("end_date_time", "2024-05-01T09:00:00Z", "strict", msg="before start_date_time")),
    ("session", M("end_date_time", "2024-05-01T11:00:00+01:00", "strict", msg="offset")),
    ("session", M("cdr_token.country_code", DELETE, msg="missing")),
    ("session", M("cdr_token.party_id", None)),
    ("session", M("cdr_token.type", "CARD")),
    ("session", M("cdr_token.uid", "U" * 37, "strict")),
    ("session", M("cdr_token.contract_id", "C" * 37, "strict")),
    ("session", M("cdr_token", DELETE)),
    ("session", M("charging_periods[0].dimensions", [], "strict", msg="must not be empty")),
    ("session", M("charging_periods[0].dimensions[0].volume", "3.25")),
    ("session", M("charging_periods[0].dimensions[0].type", "KWH")),
    ("session", M("charging_periods[0].start_date_time", "2024-05-01T10:00Z", "strict")),
    ("session", M("charging_periods[0].tariff_id", "T" * 37, "strict")),
    ("session", M("total_cost.excl_vat", "0.98", msg="number")),
    ("session", M("total_cost.excl_vat", DELETE)),
    ("session", M("total_cost.incl_vat", "1.20")),
    ("session", M("total_cost.vat", 0.22)),
    ("session", M("location_id", "L" * 37, "strict")),
    ("session", M("meter_id", "M" * 256, "strict")),
    ("session", M("connector_id", DELETE)),
    ("session", M("sessionId", "x")),
    # ---- CDR
    ("cdr", M("id", "C" * 40, "strict", msg="CiString(39)")),
    ("cdr", M("end_date_time", DELETE)),
    ("cdr", M("end_date_time", "2024-05-01T09:59:59Z", "strict", msg="before")),
    ("cdr", M("charging_periods", [], "strict", msg="must not be empty")),
    ("cdr", M("charging_periods", DELETE)),
    ("cdr", M("charging_periods[0].dimensions[1].volume", None)),
    ("cdr", M("total_cost", DELETE)),
    ("cdr", M("total_cost.excl_vat", None)),
    ("cdr", M("total_cost.incl_vat", "3.87")),
    ("cdr", M("total_energy", "10.5")),
    ("cdr", M("total_energy", DELETE)),
    ("cdr", M("total_time", DELETE)),
    ("cdr", M("total_parking_time", "0")),
    ("cdr", M("total_energy_cost", {"incl_vat": 3.87}, at="$.total_energy_cost.excl_vat")),
    ("cdr", M("total_time_cost.excl_vat", 1.23456, "strict", msg="4 decimals")),
    ("cdr", M("cdr_location.coordinates.latitude", "38.716", "strict")),
    ("cdr", M("cdr_location.country", "PRT ", "strict")),
    ("cdr", M("cdr_location.evse_id", DELETE)),
    ("cdr", M("cdr_location.connector_standard", "T2")),
    ("cdr", M("cdr_location.connector_power_type", "AC")),
    ("cdr", M("cdr_location.mobie_voltage_level", "AT", "strict", msg="MobieVoltageLevel")),
    ("cdr", M("cdr_location.extra", 1)),
    ("cdr", M("cdr_token.country_code", DELETE)),
    ("cdr", M("credit", True, "strict", at="$.credit_reference_id", msg="required when credit")),
    ("cdr", M("credit", "false")),
    ("cdr", M("mobie_cdr_extension", "billing", "strict", msg="JSON object")),
    ("cdr", M("mobie_extension", {}, msg="unknown field")),
    ("cdr", M("tariffs[0].elements", [], "strict", at="$.tariffs[0].elements")),
    ("cdr", M("tariffs[0].currency", "€", "strict")),
    (
        "cdr",
        M(
            "signed_data",
            {"encoding_method": "OCMF", "signed_values": []},
            "strict",
            at="$.signed_data.signed_values",
        ),
    ),
    (
        "cdr",
        M(
            "signed_data",
            {
                "encoding_method": "OCMF",
                "signed_values": [{"nature": "Start", "plain_data": "p" * 513, "signed_data": "s"}],
            },
            "strict",
            at="$.signed_data.signed_values[0].plain_data",
        ),
    ),
    ("cdr", M("last_updated", "2024-05-01T11:00:05.5Z", "strict")),
    # ---- Tariff
    ("tariff", M("elements", [], "strict", msg="must not be empty")),
    ("tariff", M("elements", DELETE)),
    ("tariff", M("elements[0].price_components", [], "strict")),
    ("tariff", M("elements[0].price_components[0].step_size", 1.5, msg="integer")),
    ("tariff", M("elements[0].price_components[0].step_size", -1, "strict")),
    ("tariff", M("elements[0].price_components[0].price", "0.30")),
    ("tariff", M("elements[0].price_components[0].type", "KWH")),
    ("tariff", M("elements[1].restrictions.start_time", "25:00", "strict")),
    ("tariff", M("elements[1].restrictions.end_time", "8:00", "strict")),
    ("tariff", M("elements[1].restrictions.start_date", "2024-13-01", "strict")),
    ("tariff", M("elements[1].restrictions.start_date", "01-05-2024", "strict")),
    (
        "tariff",
        M(
            "elements[1].restrictions.day_of_week",
            ["MON"],
            at="$.elements[1].restrictions.day_of_week[0]",
        ),
    ),
    ("tariff", M("elements[1].restrictions.max_kwh", -1, "strict", msg="below min_kwh")),
    ("tariff", M("elements[1].restrictions.max_duration", 1.5)),
    ("tariff", M("type", "CHEAP")),
    ("tariff", M("currency", "EURO", "strict")),
    ("tariff", M("tariff_alt_url", "www.example.pt/tarifa", "strict")),
    (
        "tariff",
        M(
            "tariff_alt_text",
            [{"language": "pt", "text": "t" * 513}],
            "strict",
            at="$.tariff_alt_text[0].text",
        ),
    ),
    ("tariff", M("min_price", {"excl_vat": "1"}, at="$.min_price.excl_vat")),
    ("tariff", M("start_date_time", "2024-06-01T00:00:00.000Z", "strict")),
    ("tariff", M("end_date_time", "2024-06-01", "strict")),
    ("tariff", M("last_updated", None)),
    # ---- Token
    ("token", M("whitelist", "SOMETIMES")),
    ("token", M("valid", "true")),
    ("token", M("valid", DELETE)),
    ("token", M("uid", "U" * 37, "strict")),
    ("token", M("issuer", "I" * 65, "strict")),
    ("token", M("issuer", DELETE)),
    ("token", M("visual_number", "V" * 65, "strict")),
    ("token", M("type", DELETE)),
    ("token", M("type", "NFC")),
    ("token", M("language", "PT", "strict", msg="lowercase")),
    ("token", M("default_profile_type", "SLOW")),
    ("token", M("energy_contract", {"contract_id": "X"}, at="$.energy_contract.supplier_name")),
    ("token", M("last_updated", "2024-04-30T08:00:00+00:00", "strict")),
    ("token", M("auth_id", "x")),
    # ---- Credentials
    ("credentials", M("token", "token with spaces", "strict", msg="non-whitespace")),
    ("credentials", M("token", "t" * 65, "strict", msg="string(64)")),
    ("credentials", M("token", DELETE)),
    ("credentials", M("url", "/ocpi/versions", "strict", msg="absolute")),
    ("credentials", M("roles", [], "strict", msg="must not be empty")),
    ("credentials", M("roles[0].role", "CPOX")),
    ("credentials", M("roles[0].business_details.name", DELETE)),
    (
        "credentials",
        M(
            "roles[0].business_details.logo",
            {"url": "https://x.pt/l.png", "category": "OPERATOR"},
            at="$.roles[0].business_details.logo.type",
        ),
    ),
    ("credentials", M("roles[0].party_id", "MOBIE", "strict")),
    (
        "credentials",
        M("roles", [credentials()["roles"][0]] * 2, "strict", at="$.roles[1]", msg="duplicate"),
    ),
    ("credentials", M("version", "2.2.1")),
    # ---- Versions
    ("version_list", M("[0].version", "2.3", at="$[0].version")),
    ("version_list", M("[1].url", DELETE, at="$[1].url")),
    ("version_list", M("[1].url", "ocpi/2.2.1", "strict", at="$[1].url")),
    ("version_list", M("[1].version", "2.2", "strict", at="$[1]", msg="duplicate version")),
    ("version_list", M("[0].endpoints", [], at="$[0].endpoints")),
    ("version_details", M("endpoints", [], "strict", msg="must not be empty")),
    ("version_details", M("endpoints[1].identifier", "Locations", msg="case-sensitive")),
    ("version_details", M("endpoints[1].role", "SENDERS")),
    ("version_details", M("endpoints[1].url", "locations", "strict")),
    (
        "version_details",
        M(
            "endpoints[2]",
            {"identifier": "locations", "role": "SENDER", "url": "https://x.pt/l"},
            "strict",
            at="$.endpoints[2]",
            msg="duplicate",
        ),
    ),
    ("version_details", M("version", "2.2", "strict", msg="2.2.1 details")),
    ("version_details", M("version", 2.2)),
    # ---- Commands
    ("command_response", M("result", "OK")),
    ("command_response", M("result", "CANCELED_RESERVATION", msg="CommandResponseType")),
    ("command_response", M("timeout", "30")),
    ("command_response", M("timeout", 30.5)),
    ("command_response", M("timeout", -1, "strict")),
    ("command_response", M("timeout", DELETE)),
    ("command_response", M("message", [{"language": "en"}], at="$.message[0].text")),
    ("command_response", M("message", {"language": "en", "text": "x"}, msg="array")),
    ("command_result", M("result", "SUCCESS")),
    ("command_result", M("result", "UNKNOWN_SESSION", msg="CommandResultType")),
    (
        "command_result",
        M("message", [{"language": "english", "text": "ok"}], "strict", at="$.message[0].language"),
    ),
    ("command_result", M("timeout", 30)),
]


def _case_id(case: tuple[str, M]) -> str:
    kind, m = case
    value = "DELETE" if m.value is DELETE else repr(m.value)
    return f"{kind}:{m.path}={value[:30]}"


@pytest.mark.parametrize("kind", list(FIXTURES))
def test_valid_objects_pass(kind: str) -> None:
    make, check = FIXTURES[kind]
    check(make())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_single_mutation_is_caught(case: tuple[str, M]) -> None:
    kind, m = case
    make, check = FIXTURES[kind]
    obj = make()
    if m.path.startswith("["):  # a list at the top level
        index, rest = re.fullmatch(r"\[(\d+)\]\.?(.*)", m.path).groups()
        obj[int(index)] = mutated(obj[int(index)], rest, m.value)
    else:
        obj = mutated(obj, m.path, m.value)
    message = failure(check, obj)
    where = m.where()
    strict_lines = [ln for ln in message.splitlines() if ln.strip().startswith(f"[strict] {where}")]
    assert strict_lines, f"[strict] did not name {where}:\n{message}"
    if m.msg is not None:
        assert any(m.msg in ln for ln in strict_lines), f"expected {m.msg!r}:\n{message}"
    if m.src == "both":
        assert f"[ocpi-types] {where}" in message, f"ocpi-types did not name {where}:\n{message}"
    else:
        assert "[ocpi-types]" not in message, f"ocpi-types unexpectedly reported:\n{message}"


def test_all_problems_are_collected_and_raised_once() -> None:
    loc = mutated(location(), "city", None)
    loc = mutated(loc, "evses[0].status", "FREE")
    loc = mutated(loc, "evses[1].connectors[0].last_updated", "2024-05-01T09:30:00.000Z")
    loc = mutated(loc, "coordinates.longitude", "-9.14")
    message = failure(oc.check_location, loc)
    for where in (
        "$.city",
        "$.evses[0].status",
        "$.evses[1].connectors[0].last_updated",
        "$.coordinates.longitude",
    ):
        assert f"[strict] {where}" in message
    # ocpi-types stops at its first problem (fields in alphabetical order: city)
    assert "[ocpi-types] $.city: Location.from_dict: expected a string, got null" in message
    assert message.startswith("5 OCPI problem(s) in Location:"), message


def test_tariff_validity_period_order() -> None:
    valid = mutated(tariff(), "start_date_time", "2024-06-01T00:00:00Z")
    oc.check_tariff(mutated(valid, "end_date_time", "2025-01-01T00:00:00Z"))
    message = failure(oc.check_tariff, mutated(valid, "end_date_time", "2024-01-01T00:00:00Z"))
    assert "[strict] $.end_date_time: 2024-01-01T00:00:00Z is before start_date_time" in message


def test_mixed_case_connector_standards_are_valid() -> None:
    for standard in ("IEC_60309_2_single_16", "IEC_60309_2_three_64", "IEC_62196_T2_COMBO"):
        oc.check_connector(mutated(connector(), "standard", standard))


def test_hash_na_and_hours_variants_are_valid() -> None:
    oc.check_session(mutated(mutated(session(), "evse_uid", "#NA"), "connector_id", "#NA"))
    hours = {
        "twentyfourseven": False,
        "regular_hours": [{"weekday": 1, "period_begin": "08:00", "period_end": "20:00"}],
        "exceptional_closings": [
            {"period_begin": "2024-12-25T00:00:00Z", "period_end": "2024-12-26T00:00:00Z"}
        ],
    }
    oc.check_location(mutated(location(), "opening_times", hours))
    # optional fields set to null are tolerated by both models
    oc.check_location(mutated(location(), "postal_code", None))
    # the MOBI.E rule: Location last_updated may be newer than every EVSE's (R8 PATCHes)
    oc.check_location(mutated(location(), "last_updated", "2024-05-01T10:00:00Z"))


# --------------------------------------------------------------------------------------------
# 2.2 vs 2.2.1


def test_cdr_token_without_party_only_in_22() -> None:
    bare = mutated(
        mutated(session(), "cdr_token.country_code", DELETE), "cdr_token.party_id", DELETE
    )
    oc.check_session(bare, "2.2")
    message = failure(oc.check_session, bare, "2.2.1")
    assert "[strict] $.cdr_token.country_code: required field is missing" in message
    assert "[strict] $.cdr_token.party_id: required field is missing" in message
    assert "[ocpi-types] $.cdr_token." in message
    # the 2.2.1 fields are unknown to a 2.2 peer
    message = failure(oc.check_session, session(), "2.2")
    assert "[strict] $.cdr_token.country_code: unknown field in OCPI 2.2 CdrToken" in message
    assert "[ocpi-types]" not in message


def cdr_22() -> dict[str, Any]:
    record = cdr()
    for key in ("country_code", "party_id"):
        del record["cdr_token"][key]
    return record


def test_cdr_22_rules() -> None:
    oc.check_cdr(cdr_22(), "2.2")
    # postal_code: optional in 2.2.1, required in 2.2
    oc.check_cdr(mutated(cdr(), "cdr_location.postal_code", DELETE), "2.2.1")
    message = failure(oc.check_cdr, mutated(cdr_22(), "cdr_location.postal_code", DELETE), "2.2")
    assert "[strict] $.cdr_location.postal_code: required field is missing" in message
    # state and home_charging_compensation are 2.2.1-only
    oc.check_cdr(mutated(cdr(), "cdr_location.state", "Lisboa"), "2.2.1")
    message = failure(oc.check_cdr, mutated(cdr_22(), "cdr_location.state", "Lisboa"), "2.2")
    assert "[strict] $.cdr_location.state: unknown field in OCPI 2.2" in message
    oc.check_cdr(mutated(cdr(), "home_charging_compensation", False), "2.2.1")
    message = failure(oc.check_cdr, mutated(cdr_22(), "home_charging_compensation", False), "2.2")
    assert "[strict] $.home_charging_compensation: unknown field in OCPI 2.2" in message
    # signed_data: CiString(512) in 2.2, string(5000) in 2.2.1
    signed = {
        "encoding_method": "OCMF",
        "signed_values": [{"nature": "End", "plain_data": "OCMF|{}", "signed_data": "s" * 600}],
    }
    oc.check_cdr(mutated(cdr(), "signed_data", signed), "2.2.1")
    message = failure(oc.check_cdr, mutated(cdr_22(), "signed_data", signed), "2.2")
    assert "[strict] $.signed_data.signed_values[0].signed_data: CiString(512)" in message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("evses[0].connectors[0].power_type", "AC_2_PHASE"),
        ("evses[0].connectors[0].power_type", "AC_2_PHASE_SPLIT"),
        ("evses[0].connectors[0].standard", "CHAOJI"),
        ("evses[0].connectors[0].standard", "GBT_DC"),
        ("evses[0].connectors[0].standard", "NEMA_14_50"),
        ("evses[0].connectors[0].standard", "DOMESTIC_O"),
        ("evses[0].capabilities", ["START_SESSION_CONNECTOR_REQUIRED"]),
    ],
)
def test_221_only_enum_values(path: str, value: Any) -> None:
    loc = mutated(location(), path, value)
    oc.check_location(loc, "2.2.1")
    message = failure(oc.check_location, loc, "2.2")
    assert "2.2.1-only value" in message
    assert "[ocpi-types]" not in message  # ocpi-types only knows 2.2.1


def test_unknown_version_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        oc.check_location(location(), "2.1.1")


# --------------------------------------------------------------------------------------------
# Extensions


def test_mobie_extensions_are_allowed_only_where_mobie_puts_them() -> None:
    for level in ("BTN", "BTE", "MT"):
        oc.check_location(mutated(location(), "mobie_voltage_level", level))
    message = failure(oc.check_location, location(), extensions={})
    assert "[strict] $.mobie_voltage_level: unknown field" in message
    assert "[ocpi-types] $.mobie_voltage_level: field dropped" in message
    message = failure(oc.check_cdr, cdr(), extensions={})
    assert "[strict] $.mobie_cdr_extension: unknown field" in message
    assert "[strict] $.cdr_location.mobie_voltage_level: unknown field" in message
    # an EVSE may not carry it, and a Session may not carry the CDR extension
    message = failure(oc.check_session, mutated(session(), "mobie_cdr_extension", {}))
    assert "[strict] $.mobie_cdr_extension: unknown field" in message
    assert "[ocpi-types] $.mobie_cdr_extension: field dropped" in message
    # extensions are not required
    oc.check_location(mutated(location(), "mobie_voltage_level", DELETE))
    # a caller may allow its own
    oc.check_evse(mutated(evse(), "x_note", "ok"), extensions={"EVSE": ["x_note"]})


# --------------------------------------------------------------------------------------------
# ocpi-types on its own


def test_ocpi_types_names_deep_paths() -> None:
    loc = mutated(location(), "evses[1].connectors[0].format", "PLUG")
    message = failure(oc.validate_with_ocpi_types, "location", loc)
    assert "[ocpi-types] $.evses[1].connectors[0].format:" in message
    assert "[strict]" not in message
    assert oc.ocpi_types_problems("cdr", cdr()) == []
    problems = oc.ocpi_types_problems("cdr", mutated(cdr(), "tariffs[0].elements[1].x", 1))
    assert problems == [
        "[ocpi-types] $.tariffs[0].elements[1].x: field dropped by the ocpi-types model "
        "(unknown or misspelt field)"
    ]
    # ocpi-types accepts what only the strict rules refuse
    sloppy = mutated(location(), "last_updated", "yesterday")
    assert oc.ocpi_types_problems("location", sloppy) == []
    assert oc.strict_problems("location", sloppy)


def test_ocpi_types_enums_agree_with_our_tables() -> None:
    """Both models list the same 2.2.1 enum values (else one of them is wrong)."""
    names = {
        "Status": v2_2_1.Status,
        "Capability": v2_2_1.Capability,
        "ConnectorType": v2_2_1.ConnectorType,
        "ConnectorFormat": v2_2_1.ConnectorFormat,
        "PowerType": v2_2_1.PowerType,
        "ParkingType": v2_2_1.ParkingType,
        "ParkingRestriction": v2_2_1.ParkingRestriction,
        "Facility": v2_2_1.Facility,
        "ImageCategory": v2_2_1.ImageCategory,
        "EnergySourceCategory": v2_2_1.EnergySourceCategory,
        "EnvironmentalImpactCategory": v2_2_1.EnvironmentalImpactCategory,
        "TokenType": v2_2_1.TokenType,
        "WhitelistType": v2_2_1.WhitelistType,
        "ProfileType": v2_2_1.ProfileType,
        "SessionStatus": v2_2_1.SessionStatus,
        "AuthMethod": v2_2_1.AuthMethod,
        "CdrDimensionType": v2_2_1.CdrDimensionType,
        "TariffDimensionType": v2_2_1.TariffDimensionType,
        "TariffType": v2_2_1.TariffType,
        "DayOfWeek": v2_2_1.DayOfWeek,
        "ReservationRestrictionType": v2_2_1.ReservationRestrictionType,
        "CommandResponseType": v2_2_1.CommandResponseType,
        "CommandResultType": v2_2_1.CommandResultType,
        "Role": v2_2_1.Role,
        "InterfaceRole": v2_2_1.InterfaceRole,
        "ModuleID": v2_2_1.ModuleID,
        "VersionNumber": v2_2_1.VersionNumber,
    }
    ours = oc._ENUMS["2.2.1"]
    for name, enum in names.items():
        theirs: type[Enum] = enum
        assert {e.value for e in theirs} == set(ours[name]), name


def test_refuses_to_run_under_python_O() -> None:
    code = "from tests import ocpi_checks as oc; oc.check_command_result({'result': 'ACCEPTED'})"
    done = subprocess.run(
        [sys.executable, "-O", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "python -O" in done.stderr, done.stderr


# --------------------------------------------------------------------------------------------
# Envelope


def test_envelope_valid_variants() -> None:
    oc.check_envelope(envelope(), True, kind="location")
    oc.check_envelope(envelope(location()), False, kind="location")
    oc.check_envelope(envelope(version_list()), True, kind="version_list")
    push_reply = envelope()
    del push_reply["data"], push_reply["status_message"]
    oc.check_envelope(push_reply, None)
    error = {
        "status_code": 2001,
        "status_message": "Unknown EVSE",
        "timestamp": "2024-05-01T10:00:01Z",
    }
    oc.check_envelope(error, True)  # data is unspecified for non-success codes
    oc.check_envelope({**error, "status_code": 4000}, None)


@pytest.mark.parametrize(
    ("body", "list_expected", "where", "words"),
    [
        ({**envelope(), "status_code": "1000"}, True, "$.status_code", "integer"),
        ({**envelope(), "status_code": 100}, True, "$.status_code", "minimum"),
        ({**envelope(), "status_code": 10000}, True, "$.status_code", "maximum"),
        ({**envelope(), "status_code": 1000.0}, True, "$.status_code", "integer"),
        ({**envelope(), "timestamp": "2024-05-01T10:00:01+00:00"}, True, "$.timestamp", "offset"),
        ({**envelope(), "timestamp": "2024-05-01T10:00:01.250Z"}, True, "$.timestamp", "fraction"),
        ({k: v for k, v in envelope().items() if k != "timestamp"}, True, "$.timestamp", "missing"),
        ({**envelope(), "status_message": 5}, True, "$.status_message", "string"),
        ({**envelope(), "total": 1}, True, "$.total", "unknown field"),
        (envelope(location()), True, "$.data", "array"),
        (envelope(), False, "$.data", "single object"),
        ([envelope()], None, "$", "JSON object"),
    ],
)
def test_envelope_mutations(body: Any, list_expected: bool | None, where: str, words: str) -> None:
    message = failure(oc.check_envelope, body, list_expected)
    assert any(
        ln.strip().startswith(f"[strict] {where}") and words in ln for ln in message.splitlines()
    ), message


def test_envelope_checks_the_data_with_both_models() -> None:
    body = envelope([location(), mutated(location(), "evses[0].status", "FREE")])
    message = failure(oc.check_envelope, body, True, kind="location")
    assert "[strict] $.data[1].evses[0].status" in message
    assert "[ocpi-types] $.data[1].evses[0].status" in message
    body = envelope(mutated(token(), "last_updated", "2024-04-30T08:00:00"))
    message = failure(oc.check_envelope, body, False, kind="token")
    assert "[strict] $.data.last_updated" in message
    message = failure(oc.check_envelope, {**envelope(), "status_code": 4000}, None, version="2.2")
    assert "[strict] $.status_code: 4000 is new in OCPI 2.2.1" in message


# --------------------------------------------------------------------------------------------
# PATCH bodies

NOW = "2024-05-01T10:20:00Z"


@pytest.mark.parametrize(
    ("module", "body"),
    [
        ("locations", {"last_updated": NOW}),  # MOBI.E R8: station seen
        ("locations", {"name": "Novo nome", "last_updated": NOW}),
        ("evse", {"status": "CHARGING", "last_updated": NOW}),
        ("connector", {"tariff_ids": ["TAR-AC-02"], "last_updated": NOW}),
        (
            "sessions",
            {
                "kwh": 4.5,
                "charging_periods": [
                    {"start_date_time": NOW, "dimensions": [{"type": "ENERGY", "volume": 1.25}]}
                ],
                "total_cost": {"excl_vat": 1.35},
                "last_updated": NOW,
            },
        ),
        ("sessions", {"status": "COMPLETED", "end_date_time": NOW, "last_updated": NOW}),
        ("tokens", {"valid": False, "last_updated": NOW}),
    ],
)
def test_valid_patches(module: str, body: dict[str, Any]) -> None:
    oc.check_patch(module, body)


@pytest.mark.parametrize(
    ("module", "body", "where", "words"),
    [
        ("evse", {"status": "CHARGING"}, "$.last_updated", "every PATCH must contain"),
        ("tokens", {"valid": False}, "$.last_updated", "every PATCH"),
        ("evse", {"status": "CHARGING", "last_updated": None}, "$.last_updated", "null"),
        (
            "evse",
            {"status": "CHARGING", "last_updated": "2024-05-01T10:20:00"},
            "$.last_updated",
            "'Z'",
        ),
        ("evse", {"status": "Charging", "last_updated": NOW}, "$.status", "case-sensitive"),
        ("evse", {"status": None, "last_updated": NOW}, "$.status", "required field is null"),
        ("evse", {"connectors": [], "last_updated": NOW}, "$.connectors", "must not be empty"),
        ("evse", {"state": "CHARGING", "last_updated": NOW}, "$.state", "unknown field"),
        (
            "locations",
            {"mobie_voltage_level": "AT", "last_updated": NOW},
            "$.mobie_voltage_level",
            "MobieVoltageLevel",
        ),
        ("locations", {"name": "n" * 256, "last_updated": NOW}, "$.name", "string(255)"),
        ("locations", {"status": "AVAILABLE", "last_updated": NOW}, "$.status", "unknown field"),
        ("connector", {"tariff_ids": "TAR-AC-02", "last_updated": NOW}, "$.tariff_ids", "array"),
        ("sessions", {"kwh": "4.5", "last_updated": NOW}, "$.kwh", "number"),
        ("sessions", {"kwh": -1, "last_updated": NOW}, "$.kwh", "minimum"),
        (
            "sessions",
            {"charging_periods": [{"start_date_time": NOW, "dimensions": []}], "last_updated": NOW},
            "$.charging_periods[0].dimensions",
            "must not be empty",
        ),
        (
            "sessions",
            {
                "charging_periods": [{"dimensions": [{"type": "ENERGY", "volume": 1}]}],
                "last_updated": NOW,
            },
            "$.charging_periods[0].start_date_time",
            "missing",
        ),
        (
            "sessions",
            {"cdr_token": {"uid": "X"}, "last_updated": NOW},
            "$.cdr_token.type",
            "missing",
        ),
        (
            "sessions",
            {"start_date_time": "2024-05-01T10:30:00Z", "end_date_time": NOW, "last_updated": NOW},
            "$.end_date_time",
            "before",
        ),
        ("tokens", {"valid": "no", "last_updated": NOW}, "$.valid", "boolean"),
        ("tokens", {"whitelist": "NEVER!", "last_updated": NOW}, "$.whitelist", "WhitelistType"),
        ("tokens", ["valid", False], "$", "JSON object"),
    ],
)
def test_patch_mutations(module: str, body: Any, where: str, words: str) -> None:
    message = failure(lambda b: oc.check_patch(module, b), body)
    assert any(
        ln.strip().startswith(f"[strict] {where}") and words in ln for ln in message.splitlines()
    ), message


def test_patch_of_unknown_module_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        oc.check_patch("cdrs", {"last_updated": NOW})


# --------------------------------------------------------------------------------------------
# Push URLs

BASE = "/ocpi/emsp/2.2.1"


@pytest.mark.parametrize(
    ("module", "url", "body"),
    [
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00175", location()),
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-02", evse("LSB-00175-02")),
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-01/1", connector()),
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00175/", {"last_updated": NOW}),
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-01", {"status": "CHARGING"}),
        ("sessions", f"https://hub.example/{BASE}/sessions/PT/MOB/{session()['id']}", session()),
        ("tariffs", f"{BASE}/tariffs/PT/MOB/TAR-AC-01", tariff()),
        ("cdrs", f"{BASE}/cdrs", cdr()),
        ("cdrs", f"{BASE}/cdrs/", cdr()),
        ("tokens", "/ocpi/cpo/2.2.1/tokens/PT/EDP/04A1B2C3D4E5F6", token()),
        ("tokens", "/ocpi/cpo/2.2.1/tokens/PT/EDP/04A1B2C3D4E5F6?type=RFID", token()),
        (
            "tokens",
            "/ocpi/cpo/2.2.1/tokens/PT/EDP/APP-77?type=APP_USER",
            {**token(), "uid": "APP-77", "type": "APP_USER"},
        ),
        ("locations", f"{BASE}/locations/PT/MOB/LSB%2D00175", location()),
    ],
)
def test_valid_push_urls(module: str, url: str, body: Any) -> None:
    oc.check_push_url(module, url, body, "PT", "MOB")


def test_push_url_with_endpoint_path() -> None:
    oc.check_push_url(
        "locations", "/x/loc/PT/MOB/LSB-00175", location(), "PT", "MOB", endpoint_path="/x/loc"
    )


@pytest.mark.parametrize(
    ("module", "url", "body", "where", "words"),
    [
        ("locations", f"{BASE}/locations/PT/MOB/LSB-00176", location(), "$.id", "'LSB-00175'"),
        (
            "locations",
            f"{BASE}/locations/ES/MOB/LSB-00175",
            location(),
            "url",
            "country_code segment",
        ),
        ("locations", f"{BASE}/locations/ES/MOB/LSB-00175", location(), "$.country_code", "'PT'"),
        ("locations", f"{BASE}/locations/PT/EDP/LSB-00175", location(), "url", "party_id segment"),
        (
            "locations",
            f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-02",
            evse("LSB-00175-01"),
            "$.uid",
            "evse_uid",
        ),
        (
            "locations",
            f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-01/2",
            connector(),
            "$.id",
            "connector_id",
        ),
        ("locations", f"{BASE}/locations/PT/MOB/lsb-00175", location(), "$.id", "location_id"),
        ("locations", f"{BASE}/locations/PT/MOB", location(), "url", "segments"),
        ("locations", f"{BASE}/locations/PT/MOB/L/E/C/X", connector(), "url", "segments"),
        ("sessions", f"{BASE}/sessions/PT/MOB/other-session", session(), "$.id", "session_id"),
        ("sessions", f"{BASE}/sessions/PT/MOX/{session()['id']}", session(), "$.party_id", "'MOB'"),
        ("tariffs", f"{BASE}/tariffs/PT/MOB/TAR-AC-02", tariff(), "$.id", "'TAR-AC-01'"),
        ("cdrs", f"{BASE}/cdrs/CDR-2024-000123", cdr(), "url", "extra segments"),
        ("cdrs", f"{BASE}/cdrs", {**cdr(), "party_id": "EDP"}, "$.party_id", "owner"),
        ("tokens", "/ocpi/cpo/2.2.1/tokens/PT/EDP/04A1B2C3D4E5F7", token(), "$.uid", "token_uid"),
        ("tokens", "/ocpi/cpo/2.2.1/tokens/PT/GAL/04A1B2C3D4E5F6", token(), "$.party_id", "'EDP'"),
        (
            "tokens",
            "/ocpi/cpo/2.2.1/tokens/ES/EDP/04A1B2C3D4E5F6",
            token(),
            "$.country_code",
            "'PT'",
        ),
        (
            "tokens",
            "/ocpi/cpo/2.2.1/tokens/PT/EDP/04A1B2C3D4E5F6?type=APP_USER",
            token(),
            "$.type",
            "APP_USER",
        ),
        (
            "tokens",
            "/ocpi/cpo/2.2.1/tokens/PT/EDP/APP-77",
            {**token(), "uid": "APP-77", "type": "APP_USER"},
            "$.type",
            "means RFID",
        ),
        ("sessions", f"{BASE}/session/PT/MOB/x", session(), "url", "no 'sessions' segment"),
        (
            "locations",
            f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-01",
            {**location(), "id": "LSB-00175-01"},
            "$",
            "addresses EVSE 'LSB-00175-01'",
        ),
        (
            "locations",
            f"{BASE}/locations/PT/MOB/LSB-00175/LSB-00175-01/1",
            {"status": "CHARGING", "last_updated": NOW},
            "$",
            "['status'] are not Connector fields",
        ),
    ],
)
def test_push_url_mismatches(module: str, url: str, body: Any, where: str, words: str) -> None:
    message = failure(lambda b: oc.check_push_url(module, url, b, "PT", "MOB"), body)
    assert any(
        ln.strip().startswith(f"[strict] {where}") and words in ln for ln in message.splitlines()
    ), message
