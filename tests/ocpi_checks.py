"""Two independent checks of every OCPI object our CPO emits (GET responses and pushes).

Each public ``check_*`` function runs both models and raises one ``AssertionError`` listing every
problem found, each line naming the JSON path (``$.evses[0].connectors[1].standard``) and the model
that found it:

- ``[ocpi-types]``: the PyPI package ``ocpi-types`` (``ocpi_types.v2_2_1``), a second model of OCPI
  2.2.1 written by other people. Its ``from_dict`` validates with bare ``assert`` statements, so
  these checks refuse to run under ``python -O`` (``RuntimeError``). It rejects unknown enum
  values, missing required fields and wrong JSON types, accepts any timestamp and any length, and
  silently drops unknown fields; unknown or altered fields are found by comparing its
  ``to_dict()`` with the input minus nulls (the MOBI.E extension fields are set aside first).
- ``[strict]``: our own rules, written from the tables of
  ``/work/shared/reference/ocpi-2.2.1-cpo.md`` and ``/work/shared/mobie-rules.md``.

The strict rules follow the reference tables (types, cardinality, lengths, enums, the
2.2 / 2.2.1 differences of its section 14). Where they are **stricter than OCPI** (house style
or sanity rules), this is said here and in the docstring of the helper that applies them:

1. DateTime: exactly ``YYYY-MM-DDTHH:MM:SSZ`` (a real calendar date/time). OCPI also allows no
   ``Z`` and 1-3 fractional digits.
2. Numbers: at most 4 decimals (OCPI: "4 decimals unless stated otherwise"; we reject the float
   artefacts of ``0.1 + 0.2``), finite. Integer fields must be JSON integers (``16.0`` is refused).
3. Empty strings: refused for required string fields and for every CiString (ids).
4. ``country_code`` two ASCII letters and ``party_id`` three ASCII letters/digits (OCPI: CiString(2)
   and CiString(3) with ISO 3166-1 alpha-2 / eMI3 party meaning). ``country`` three uppercase
   letters (OCPI: alpha-3). ``currency`` three uppercase letters (OCPI: ISO 4217 string(3)).
   ``language`` two lowercase letters (OCPI: ISO 639-1 string(2)).
5. URL: absolute ``http``/``https`` URL with a host, printable ASCII (OCPI: string(255), absolute).
6. ``time_zone`` must be a name in the IANA database (``zoneinfo``).
7. GeoLocation: besides the regex, latitude within +-90 and longitude within +-180.
8. Time order: Location ``last_updated`` >= each EVSE's >= each of its Connectors' (OCPI asks
   parents to be bumped; MOBI.E: Location last_updated = newest of its EVSEs'); end times not
   before start times (Session, CDR, Tariff, StatusSchedule, ExceptionalPeriod, RegularHours);
   min <= max in TariffRestrictions.
9. Uniqueness: EVSE uids within a Location, Connector ids within an EVSE, version numbers in the
   version list, (identifier, role) in version details, (role, party_id, country_code) in
   Credentials roles.
10. Lower bounds: Session ``kwh`` >= 0, CommandResponse ``timeout`` >= 0, PriceComponent
    ``step_size`` >= 0, EnergySource ``percentage`` 0-100, Image width/height 0-99999 (int(5)).
11. Lengths use the released 2.2.1 tables, not the later errata (Location ``address`` 45,
    ``state`` 20, SignedValue ``plain_data`` 512).
12. Envelope ``status_code`` 1000-4999 (4 digits of a defined class); 4000 refused for 2.2.
13. Push URLs: segments must equal the body's ids exactly (OCPI compares CiStrings
    case-insensitively).
14. In a 2.2 object, fields that only exist in 2.2.1 (CdrToken ``country_code``/``party_id``,
    CdrLocation ``state``, CDR ``home_charging_compensation``) are unknown fields (reference
    section 14: "drop 2.2.1-only fields for a 2.2 peer").

Optional fields set to ``null`` are tolerated (both models accept them); required ones are not.
The MOBI.E extensions (``MOBIE_EXTENSIONS``) are allowed and validated when present but not
required; pass ``extensions={}`` for plain OCPI.
"""

from __future__ import annotations

import copy
import linecache
import math
import re
import traceback
import unicodedata
import zoneinfo
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ocpi_types import v2_2_1 as _ot

__all__ = [
    "MOBIE_EXTENSIONS",
    "check_cdr",
    "check_command_response",
    "check_command_result",
    "check_connector",
    "check_credentials",
    "check_envelope",
    "check_evse",
    "check_location",
    "check_patch",
    "check_push_url",
    "check_session",
    "check_tariff",
    "check_token",
    "check_version_details",
    "check_version_list",
    "ocpi_types_problems",
    "strict_problems",
    "validate_with_ocpi_types",
]

VERSIONS = ("2.2", "2.2.1")

#: Extension fields allowed on top of OCPI, per object (names as in the reference tables).
MOBIE_EXTENSIONS: Mapping[str, Collection[str]] = MappingProxyType(
    {
        "Location": ("mobie_voltage_level",),
        "CdrLocation": ("mobie_voltage_level",),
        "CDR": ("mobie_cdr_extension",),
    }
)

Ext = Mapping[str, Collection[str]]

MOBIE_VOLTAGE_LEVELS = frozenset({"BTN", "BTE", "MT"})

# --------------------------------------------------------------------------------------------
# Enums, exactly as in the reference (2.2.1); the 2.2 sets drop the 2.2.1-only values.


def _e(values: str) -> frozenset[str]:
    return frozenset(values.split())


_CONNECTOR_TYPES_22 = _e(
    "CHADEMO DOMESTIC_A DOMESTIC_B DOMESTIC_C DOMESTIC_D DOMESTIC_E DOMESTIC_F DOMESTIC_G "
    "DOMESTIC_H DOMESTIC_I DOMESTIC_J DOMESTIC_K DOMESTIC_L IEC_60309_2_single_16 "
    "IEC_60309_2_three_16 IEC_60309_2_three_32 IEC_60309_2_three_64 IEC_62196_T1 "
    "IEC_62196_T1_COMBO IEC_62196_T2 IEC_62196_T2_COMBO IEC_62196_T3A IEC_62196_T3C "
    "PANTOGRAPH_BOTTOM_UP PANTOGRAPH_TOP_DOWN TESLA_R TESLA_S"
)
_CONNECTOR_TYPES_221_ONLY = _e(
    "CHAOJI DOMESTIC_M DOMESTIC_N DOMESTIC_O GBT_AC GBT_DC NEMA_5_20 NEMA_6_30 NEMA_6_50 "
    "NEMA_10_30 NEMA_10_50 NEMA_14_30 NEMA_14_50"
)
_CAPABILITIES_22 = _e(
    "CHARGING_PROFILE_CAPABLE CHARGING_PREFERENCES_CAPABLE CHIP_CARD_SUPPORT "
    "CONTACTLESS_CARD_SUPPORT CREDIT_CARD_PAYABLE DEBIT_CARD_PAYABLE PED_TERMINAL "
    "REMOTE_START_STOP_CAPABLE RESERVABLE RFID_READER TOKEN_GROUP_CAPABLE UNLOCK_CAPABLE"
)
_POWER_TYPES_22 = _e("AC_1_PHASE AC_3_PHASE DC")

_ENUMS_COMMON: dict[str, frozenset[str]] = {
    "Role": _e("CPO EMSP HUB NAP NSP OTHER SCSP"),
    "InterfaceRole": _e("SENDER RECEIVER"),
    "ModuleID": _e(
        "cdrs chargingprofiles commands credentials hubclientinfo locations sessions tariffs tokens"
    ),
    "VersionNumber": _e("2.0 2.1 2.1.1 2.2 2.2.1"),
    "Status": _e(
        "AVAILABLE BLOCKED CHARGING INOPERATIVE OUTOFORDER PLANNED REMOVED RESERVED UNKNOWN"
    ),
    "ConnectorFormat": _e("SOCKET CABLE"),
    "ParkingType": _e(
        "ALONG_MOTORWAY PARKING_GARAGE PARKING_LOT ON_DRIVEWAY ON_STREET UNDERGROUND_GARAGE"
    ),
    "ParkingRestriction": _e("EV_ONLY PLUGGED DISABLED CUSTOMERS MOTORCYCLES"),
    "Facility": _e(
        "HOTEL RESTAURANT CAFE MALL SUPERMARKET SPORT RECREATION_AREA NATURE MUSEUM BIKE_SHARING "
        "BUS_STOP TAXI_STAND TRAM_STOP METRO_STATION TRAIN_STATION AIRPORT PARKING_LOT "
        "CARPOOL_PARKING FUEL_STATION WIFI"
    ),
    "ImageCategory": _e("CHARGER ENTRANCE LOCATION NETWORK OPERATOR OTHER OWNER"),
    "EnergySourceCategory": _e("NUCLEAR GENERAL_FOSSIL COAL GAS GENERAL_GREEN SOLAR WIND WATER"),
    "EnvironmentalImpactCategory": _e("NUCLEAR_WASTE CARBON_DIOXIDE"),
    "TokenType": _e("AD_HOC_USER APP_USER OTHER RFID"),
    "WhitelistType": _e("ALWAYS ALLOWED ALLOWED_OFFLINE NEVER"),
    "ProfileType": _e("CHEAP FAST GREEN REGULAR"),
    "SessionStatus": _e("ACTIVE COMPLETED INVALID PENDING RESERVATION"),
    "AuthMethod": _e("AUTH_REQUEST COMMAND WHITELIST"),
    "CdrDimensionType": _e(
        "CURRENT ENERGY ENERGY_EXPORT ENERGY_IMPORT MAX_CURRENT MIN_CURRENT MAX_POWER MIN_POWER "
        "PARKING_TIME POWER RESERVATION_TIME STATE_OF_CHARGE TIME"
    ),
    "TariffDimensionType": _e("ENERGY FLAT PARKING_TIME TIME"),
    "TariffType": _e("AD_HOC_PAYMENT PROFILE_CHEAP PROFILE_FAST PROFILE_GREEN REGULAR"),
    "DayOfWeek": _e("MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY"),
    "ReservationRestrictionType": _e("RESERVATION RESERVATION_EXPIRES"),
    "CommandResponseType": _e("NOT_SUPPORTED REJECTED ACCEPTED UNKNOWN_SESSION"),
    "CommandResultType": _e(
        "ACCEPTED CANCELED_RESERVATION EVSE_OCCUPIED EVSE_INOPERATIVE FAILED NOT_SUPPORTED "
        "REJECTED TIMEOUT UNKNOWN_RESERVATION"
    ),
    "MobieVoltageLevel": MOBIE_VOLTAGE_LEVELS,
}

_ENUMS: dict[str, dict[str, frozenset[str]]] = {
    "2.2.1": {
        **_ENUMS_COMMON,
        "ConnectorType": _CONNECTOR_TYPES_22 | _CONNECTOR_TYPES_221_ONLY,
        "Capability": _CAPABILITIES_22 | {"START_SESSION_CONNECTOR_REQUIRED"},
        "PowerType": _POWER_TYPES_22 | {"AC_2_PHASE", "AC_2_PHASE_SPLIT"},
    },
    "2.2": {
        **_ENUMS_COMMON,
        "ConnectorType": _CONNECTOR_TYPES_22,
        "Capability": _CAPABILITIES_22,
        "PowerType": _POWER_TYPES_22,
    },
}

# --------------------------------------------------------------------------------------------
# Field specifications


@dataclass(frozen=True)
class _F:
    """One field of an OCPI object: JSON type, cardinality (1 ? * +) and constraints."""

    type: str  # ci str dt url num int bool enum obj any
    card: str = "1"
    max_len: int | None = None
    ref: str | None = None  # enum name or object name
    regex: re.Pattern[str] | None = None
    what: str = ""  # human description of the regex
    lo: float | None = None
    hi: float | None = None
    check: Callable[[str], str | None] | None = None  # extra check on a string value


def _ci(n: int, card: str = "1", **kw: Any) -> _F:
    return _F("ci", card, max_len=n, **kw)


def _s(n: int, card: str = "1", **kw: Any) -> _F:
    return _F("str", card, max_len=n, **kw)


def _dt(card: str = "1") -> _F:
    return _F("dt", card, max_len=25)


def _url(card: str = "1") -> _F:
    return _F("url", card, max_len=255)


def _num(card: str = "1", lo: float | None = None, hi: float | None = None) -> _F:
    return _F("num", card, lo=lo, hi=hi)


def _int(card: str = "1", lo: float | None = None, hi: float | None = None) -> _F:
    return _F("int", card, lo=lo, hi=hi)


def _bool(card: str = "1") -> _F:
    return _F("bool", card)


def _enum(name: str, card: str = "1") -> _F:
    return _F("enum", card, ref=name)


def _obj(name: str, card: str = "1") -> _F:
    return _F("obj", card, ref=name)


_LAT_RE = re.compile(r"-?[0-9]{1,2}\.[0-9]{5,7}")
_LON_RE = re.compile(r"-?[0-9]{1,3}\.[0-9]{5,7}")
_HHMM_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DT_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_DT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _valid_date(value: str) -> str | None:
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return "not a real calendar date"
    return None


def _check_latitude(value: str) -> str | None:
    return None if -90 <= float(value) <= 90 else "latitude outside -90..90 [stricter than OCPI]"


def _check_longitude(value: str) -> str | None:
    return (
        None if -180 <= float(value) <= 180 else "longitude outside -180..180 [stricter than OCPI]"
    )


_TIME_ZONES: frozenset[str] = frozenset(zoneinfo.available_timezones())


def _check_time_zone(value: str) -> str | None:
    """IANA name, checked against ``zoneinfo`` [stricter than OCPI's prose]."""
    if _TIME_ZONES and value not in _TIME_ZONES:
        return f"{value!r} is not an IANA time zone name (e.g. 'Europe/Lisbon')"
    return None


def _check_credentials_token(value: str) -> str | None:
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        return "token must be printable non-whitespace ASCII (U+0021..U+007E)"
    return None


_COUNTRY_CODE = {"regex": re.compile(r"[A-Za-z]{2}"), "what": "two ASCII letters"}
_PARTY_ID = {"regex": re.compile(r"[A-Za-z0-9]{3}"), "what": "three ASCII letters or digits"}
_ALPHA3 = {"regex": re.compile(r"[A-Z]{3}"), "what": "ISO 3166-1 alpha-3, uppercase (e.g. PRT)"}
_CURRENCY = {"regex": re.compile(r"[A-Z]{3}"), "what": "ISO 4217, three uppercase letters"}
_LANGUAGE = {"regex": re.compile(r"[a-z]{2}"), "what": "ISO 639-1, two lowercase letters"}
_HHMM = {"regex": _HHMM_RE, "what": "local time HH:MM"}
_DATE = {"regex": _DATE_RE, "what": "local date YYYY-MM-DD", "check": _valid_date}


def _cc(card: str = "1") -> _F:
    return _ci(2, card, **_COUNTRY_CODE)


def _pid(card: str = "1") -> _F:
    return _ci(3, card, **_PARTY_ID)


_SCHEMAS_221: dict[str, dict[str, _F]] = {
    "DisplayText": {"language": _s(2, **_LANGUAGE), "text": _s(512)},
    "Price": {"excl_vat": _num(), "incl_vat": _num("?")},
    "GeoLocation": {
        "latitude": _s(10, regex=_LAT_RE, what=r"-?[0-9]{1,2}\.[0-9]{5,7}", check=_check_latitude),
        "longitude": _s(
            11, regex=_LON_RE, what=r"-?[0-9]{1,3}\.[0-9]{5,7}", check=_check_longitude
        ),
    },
    "AdditionalGeoLocation": {
        "latitude": _s(10, regex=_LAT_RE, what=r"-?[0-9]{1,2}\.[0-9]{5,7}", check=_check_latitude),
        "longitude": _s(
            11, regex=_LON_RE, what=r"-?[0-9]{1,3}\.[0-9]{5,7}", check=_check_longitude
        ),
        "name": _obj("DisplayText", "?"),
    },
    "Image": {
        "url": _url(),
        "thumbnail": _url("?"),
        "category": _enum("ImageCategory"),
        "type": _ci(4),
        "width": _int("?", 0, 99999),
        "height": _int("?", 0, 99999),
    },
    "BusinessDetails": {"name": _s(100), "website": _url("?"), "logo": _obj("Image", "?")},
    "Hours": {
        "twentyfourseven": _bool(),
        "regular_hours": _obj("RegularHours", "*"),
        "exceptional_openings": _obj("ExceptionalPeriod", "*"),
        "exceptional_closings": _obj("ExceptionalPeriod", "*"),
    },
    "RegularHours": {
        "weekday": _int("1", 1, 7),
        "period_begin": _s(5, **_HHMM),
        "period_end": _s(5, **_HHMM),
    },
    "ExceptionalPeriod": {"period_begin": _dt(), "period_end": _dt()},
    "StatusSchedule": {"period_begin": _dt(), "period_end": _dt("?"), "status": _enum("Status")},
    "PublishTokenType": {
        "uid": _ci(36, "?"),
        "type": _enum("TokenType", "?"),
        "visual_number": _s(64, "?"),
        "issuer": _s(64, "?"),
        "group_id": _ci(36, "?"),
    },
    "EnergyMix": {
        "is_green_energy": _bool(),
        "energy_sources": _obj("EnergySource", "*"),
        "environ_impact": _obj("EnvironmentalImpact", "*"),
        "supplier_name": _s(64, "?"),
        "energy_product_name": _s(64, "?"),
    },
    "EnergySource": {"source": _enum("EnergySourceCategory"), "percentage": _num("1", 0, 100)},
    "EnvironmentalImpact": {"category": _enum("EnvironmentalImpactCategory"), "amount": _num()},
    "Location": {
        "country_code": _cc(),
        "party_id": _pid(),
        "id": _ci(36),
        "publish": _bool(),
        "publish_allowed_to": _obj("PublishTokenType", "*"),
        "name": _s(255, "?"),
        "address": _s(45),
        "city": _s(45),
        "postal_code": _s(10, "?"),
        "state": _s(20, "?"),
        "country": _s(3, **_ALPHA3),
        "coordinates": _obj("GeoLocation"),
        "related_locations": _obj("AdditionalGeoLocation", "*"),
        "parking_type": _enum("ParkingType", "?"),
        "evses": _obj("EVSE", "*"),
        "directions": _obj("DisplayText", "*"),
        "operator": _obj("BusinessDetails", "?"),
        "suboperator": _obj("BusinessDetails", "?"),
        "owner": _obj("BusinessDetails", "?"),
        "facilities": _enum("Facility", "*"),
        "time_zone": _s(255, check=_check_time_zone),
        "opening_times": _obj("Hours", "?"),
        "charging_when_closed": _bool("?"),
        "images": _obj("Image", "*"),
        "energy_mix": _obj("EnergyMix", "?"),
        "last_updated": _dt(),
    },
    "EVSE": {
        "uid": _ci(36),
        "evse_id": _ci(48, "?"),
        "status": _enum("Status"),
        "status_schedule": _obj("StatusSchedule", "*"),
        "capabilities": _enum("Capability", "*"),
        "connectors": _obj("Connector", "+"),
        "floor_level": _s(4, "?"),
        "coordinates": _obj("GeoLocation", "?"),
        "physical_reference": _s(16, "?"),
        "directions": _obj("DisplayText", "*"),
        "parking_restrictions": _enum("ParkingRestriction", "*"),
        "images": _obj("Image", "*"),
        "last_updated": _dt(),
    },
    "Connector": {
        "id": _ci(36),
        "standard": _enum("ConnectorType"),
        "format": _enum("ConnectorFormat"),
        "power_type": _enum("PowerType"),
        "max_voltage": _int(),
        "max_amperage": _int(),
        "max_electric_power": _int("?"),
        "tariff_ids": _ci(36, "*"),
        "terms_and_conditions": _url("?"),
        "last_updated": _dt(),
    },
    "CdrToken": {
        "country_code": _cc(),
        "party_id": _pid(),
        "uid": _ci(36),
        "type": _enum("TokenType"),
        "contract_id": _ci(36),
    },
    "CdrDimension": {"type": _enum("CdrDimensionType"), "volume": _num()},
    "ChargingPeriod": {
        "start_date_time": _dt(),
        "dimensions": _obj("CdrDimension", "+"),
        "tariff_id": _ci(36, "?"),
    },
    "Session": {
        "country_code": _cc(),
        "party_id": _pid(),
        "id": _ci(36),
        "start_date_time": _dt(),
        "end_date_time": _dt("?"),
        "kwh": _num("1", lo=0),
        "cdr_token": _obj("CdrToken"),
        "auth_method": _enum("AuthMethod"),
        "authorization_reference": _ci(36, "?"),
        "location_id": _ci(36),
        "evse_uid": _ci(36),
        "connector_id": _ci(36),
        "meter_id": _s(255, "?"),
        "currency": _s(3, **_CURRENCY),
        "charging_periods": _obj("ChargingPeriod", "*"),
        "total_cost": _obj("Price", "?"),
        "status": _enum("SessionStatus"),
        "last_updated": _dt(),
    },
    "CdrLocation": {
        "id": _ci(36),
        "name": _s(255, "?"),
        "address": _s(45),
        "city": _s(45),
        "postal_code": _s(10, "?"),
        "state": _s(20, "?"),
        "country": _s(3, **_ALPHA3),
        "coordinates": _obj("GeoLocation"),
        "evse_uid": _ci(36),
        "evse_id": _ci(48),
        "connector_id": _ci(36),
        "connector_standard": _enum("ConnectorType"),
        "connector_format": _enum("ConnectorFormat"),
        "connector_power_type": _enum("PowerType"),
    },
    "SignedData": {
        "encoding_method": _ci(36),
        "encoding_method_version": _int("?"),
        "public_key": _s(512, "?"),
        "signed_values": _obj("SignedValue", "+"),
        "url": _s(512, "?"),
    },
    "SignedValue": {"nature": _ci(32), "plain_data": _s(512), "signed_data": _s(5000)},
    "CDR": {
        "country_code": _cc(),
        "party_id": _pid(),
        "id": _ci(39),
        "start_date_time": _dt(),
        "end_date_time": _dt(),
        "session_id": _ci(36, "?"),
        "cdr_token": _obj("CdrToken"),
        "auth_method": _enum("AuthMethod"),
        "authorization_reference": _ci(36, "?"),
        "cdr_location": _obj("CdrLocation"),
        "meter_id": _s(255, "?"),
        "currency": _s(3, **_CURRENCY),
        "tariffs": _obj("Tariff", "*"),
        "charging_periods": _obj("ChargingPeriod", "+"),
        "signed_data": _obj("SignedData", "?"),
        "total_cost": _obj("Price"),
        "total_fixed_cost": _obj("Price", "?"),
        "total_energy": _num(),
        "total_energy_cost": _obj("Price", "?"),
        "total_time": _num(),
        "total_time_cost": _obj("Price", "?"),
        "total_parking_time": _num("?"),
        "total_parking_cost": _obj("Price", "?"),
        "total_reservation_cost": _obj("Price", "?"),
        "remark": _s(255, "?"),
        "invoice_reference_id": _ci(39, "?"),
        "credit": _bool("?"),
        "credit_reference_id": _ci(39, "?"),
        "home_charging_compensation": _bool("?"),
        "last_updated": _dt(),
    },
    "Tariff": {
        "country_code": _cc(),
        "party_id": _pid(),
        "id": _ci(36),
        "currency": _s(3, **_CURRENCY),
        "type": _enum("TariffType", "?"),
        "tariff_alt_text": _obj("DisplayText", "*"),
        "tariff_alt_url": _url("?"),
        "min_price": _obj("Price", "?"),
        "max_price": _obj("Price", "?"),
        "elements": _obj("TariffElement", "+"),
        "start_date_time": _dt("?"),
        "end_date_time": _dt("?"),
        "energy_mix": _obj("EnergyMix", "?"),
        "last_updated": _dt(),
    },
    "TariffElement": {
        "price_components": _obj("PriceComponent", "+"),
        "restrictions": _obj("TariffRestrictions", "?"),
    },
    "PriceComponent": {
        "type": _enum("TariffDimensionType"),
        "price": _num(),
        "vat": _num("?"),
        "step_size": _int("1", lo=0),
    },
    "TariffRestrictions": {
        "start_time": _s(5, "?", **_HHMM),
        "end_time": _s(5, "?", **_HHMM),
        "start_date": _s(10, "?", **_DATE),
        "end_date": _s(10, "?", **_DATE),
        "min_kwh": _num("?"),
        "max_kwh": _num("?"),
        "min_current": _num("?"),
        "max_current": _num("?"),
        "min_power": _num("?"),
        "max_power": _num("?"),
        "min_duration": _int("?"),
        "max_duration": _int("?"),
        "day_of_week": _enum("DayOfWeek", "*"),
        "reservation": _enum("ReservationRestrictionType", "?"),
    },
    "Token": {
        "country_code": _cc(),
        "party_id": _pid(),
        "uid": _ci(36),
        "type": _enum("TokenType"),
        "contract_id": _ci(36),
        "visual_number": _s(64, "?"),
        "issuer": _s(64),
        "group_id": _ci(36, "?"),
        "valid": _bool(),
        "whitelist": _enum("WhitelistType"),
        "language": _s(2, "?", **_LANGUAGE),
        "default_profile_type": _enum("ProfileType", "?"),
        "energy_contract": _obj("EnergyContract", "?"),
        "last_updated": _dt(),
    },
    "EnergyContract": {"supplier_name": _s(64), "contract_id": _s(64, "?")},
    "Credentials": {
        "token": _s(64, check=_check_credentials_token),
        "url": _url(),
        "roles": _obj("CredentialsRole", "+"),
    },
    "CredentialsRole": {
        "role": _enum("Role"),
        "business_details": _obj("BusinessDetails"),
        "party_id": _pid(),
        "country_code": _cc(),
    },
    "Version": {"version": _enum("VersionNumber"), "url": _url()},
    "VersionDetails": {"version": _enum("VersionNumber"), "endpoints": _obj("Endpoint", "+")},
    "Endpoint": {"identifier": _enum("ModuleID"), "role": _enum("InterfaceRole"), "url": _url()},
    "CommandResponse": {
        "result": _enum("CommandResponseType"),
        "timeout": _int("1", lo=0),
        "message": _obj("DisplayText", "*"),
    },
    "CommandResult": {"result": _enum("CommandResultType"), "message": _obj("DisplayText", "*")},
    "Envelope": {
        "data": _F("any", "?"),
        "status_code": _int("1", 1000, 4999),
        "status_message": _F("str", "?"),
        "timestamp": _dt(),
    },
}


def _schemas_22() -> dict[str, dict[str, _F]]:
    """OCPI 2.2 as far as it differs from 2.2.1 for what a CPO emits (reference section 14)."""
    schemas = {name: dict(fields) for name, fields in _SCHEMAS_221.items()}
    del schemas["CdrToken"]["country_code"], schemas["CdrToken"]["party_id"]
    schemas["CdrLocation"]["postal_code"] = _s(10)
    del schemas["CdrLocation"]["state"]
    del schemas["CDR"]["home_charging_compensation"]
    schemas["SignedValue"]["signed_data"] = _ci(512)
    return schemas


_SCHEMAS = {"2.2.1": _SCHEMAS_221, "2.2": _schemas_22()}

_EXTENSION_FIELDS: dict[str, _F] = {
    "mobie_voltage_level": _enum("MobieVoltageLevel"),
    "mobie_cdr_extension": _F("any"),  # MOBI.E defines no structure we know of: any JSON object
}

# kind (public name) -> (our object name, ocpi-types class name)
_KINDS: dict[str, tuple[str, str]] = {
    "location": ("Location", "Location"),
    "evse": ("EVSE", "Evse"),
    "connector": ("Connector", "Connector"),
    "session": ("Session", "Session"),
    "cdr": ("CDR", "Cdr"),
    "tariff": ("Tariff", "Tariff"),
    "token": ("Token", "Token"),
    "credentials": ("Credentials", "Credentials"),
    "version": ("Version", "Version"),
    "version_details": ("VersionDetails", "VersionDetails"),
    "endpoint": ("Endpoint", "Endpoint"),
    "command_response": ("CommandResponse", "CommandResponse"),
    "command_result": ("CommandResult", "CommandResult"),
}

# --------------------------------------------------------------------------------------------
# The strict walker


@dataclass
class _Ctx:
    version: str
    extensions: Mapping[str, Collection[str]]
    problems: list[str] = field(default_factory=list)

    @property
    def schemas(self) -> dict[str, dict[str, _F]]:
        return _SCHEMAS[self.version]

    @property
    def enums(self) -> dict[str, frozenset[str]]:
        return _ENUMS[self.version]

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"[strict] {path}: {message}")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _got(value: Any) -> str:
    return "null" if value is None else f"{_json_type(value)} {_short(value)}"


def _datetime_problem(value: str) -> str | None:
    """House DateTime: exactly ``YYYY-MM-DDTHH:MM:SSZ`` [stricter than OCPI].

    OCPI 2.2.1 also accepts a missing ``Z`` and 1-3 fractional digits; offsets are never valid.
    """
    if _DT_RE.fullmatch(value):
        try:
            datetime.strptime(value, _DT_FORMAT)
        except ValueError:
            return f"{value!r} is not a real date/time (house format is YYYY-MM-DDTHH:MM:SSZ)"
        return None
    if re.search(r"[+-][0-9]{2}:?[0-9]{2}$", value):
        hint = "has a UTC offset (OCPI: '+00:00' is not UTC; write 'Z')"
    elif re.search(r"\.[0-9]+Z?$", value):
        hint = "has fractional seconds [stricter than OCPI]"
    elif re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}", value):
        hint = "lacks the 'Z' [stricter than OCPI]"
    else:
        hint = "is not an RFC 3339 UTC date-time"
    return f"{_short(value)} {hint}; house format is YYYY-MM-DDTHH:MM:SSZ"


def _parse_dt(value: Any) -> datetime | None:
    if isinstance(value, str) and _DT_RE.fullmatch(value):
        try:
            return datetime.strptime(value, _DT_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None
    return None


def _has_control(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


def _check_string(value: Any, spec: _F, path: str, ctx: _Ctx) -> None:
    """CiString: printable ASCII; string: no control characters; both at most n characters.

    Empty strings are refused for required fields and for every CiString [stricter than OCPI].
    """
    if not isinstance(value, str):
        ctx.add(path, f"expected a string, got {_got(value)}")
        return
    if spec.max_len is not None and len(value) > spec.max_len:
        kind = "CiString" if spec.type == "ci" else "string"
        ctx.add(path, f"{kind}({spec.max_len}) is {len(value)} characters long")
    if spec.type == "ci" and not all(0x20 <= ord(ch) <= 0x7E for ch in value):
        ctx.add(path, f"CiString must be printable ASCII only, got {_short(value)}")
    elif spec.type != "ci" and _has_control(value):
        ctx.add(path, f"string contains control characters: {_short(value)}")
    if value == "" and (spec.type == "ci" or spec.card in ("1", "+")):
        ctx.add(path, "empty string [stricter than OCPI]")
        return
    if spec.regex is not None and not spec.regex.fullmatch(value):
        ctx.add(path, f"{_short(value)} does not match {spec.what}")
        return
    if spec.check is not None:
        message = spec.check(value)
        if message:
            ctx.add(path, message)


def _check_url(value: Any, path: str, ctx: _Ctx) -> None:
    """URL: string(255), absolute http(s) URL with a host, printable ASCII [stricter than OCPI]."""
    if not isinstance(value, str):
        ctx.add(path, f"expected a URL string, got {_got(value)}")
        return
    if len(value) > 255:
        ctx.add(path, f"URL is {len(value)} characters long (max 255)")
    if not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        ctx.add(path, f"URL must be printable ASCII without spaces: {_short(value)}")
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        ctx.add(path, f"not an absolute http(s) URL: {_short(value)}")


def _check_number(value: Any, spec: _F, path: str, ctx: _Ctx) -> None:
    """Numbers are JSON numbers, finite, with at most 4 decimals [stricter than OCPI].

    Integer fields must be JSON integers (a float such as 16.0 is refused).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        ctx.add(
            path,
            f"expected a JSON {'integer' if spec.type == 'int' else 'number'}, got {_got(value)}",
        )
        return
    if spec.type == "int" and not isinstance(value, int):
        ctx.add(path, f"expected a JSON integer, got {value!r}")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            ctx.add(path, f"{value!r} is not a JSON number")
            return
        if round(value, 4) != value:
            ctx.add(path, f"{value!r} has more than 4 decimals [stricter than OCPI]")
    if spec.lo is not None and value < spec.lo:
        ctx.add(path, f"{value!r} is below the minimum {spec.lo:g}")
    if spec.hi is not None and value > spec.hi:
        ctx.add(path, f"{value!r} is above the maximum {spec.hi:g}")


def _check_enum(value: Any, spec: _F, path: str, ctx: _Ctx) -> None:
    assert spec.ref is not None
    allowed = ctx.enums[spec.ref]
    if not isinstance(value, str):
        ctx.add(path, f"expected a {spec.ref} string, got {_got(value)}")
        return
    if value in allowed:
        return
    message = f"{_short(value)} is not a valid {spec.ref}"
    if value in _ENUMS["2.2.1"].get(spec.ref, ()):
        message += f" in OCPI {ctx.version} (2.2.1-only value)"
    else:
        same_case = [a for a in allowed if a.upper() == value.upper()]
        if same_case:
            message += f" (enum values are case-sensitive: {same_case[0]!r})"
        elif len(allowed) <= 13:
            message += f" (allowed: {', '.join(sorted(allowed))})"
    ctx.add(path, message)


def _check_value(value: Any, spec: _F, path: str, ctx: _Ctx) -> None:
    if value is None:
        ctx.add(path, "null is not allowed here")
        return
    kind = spec.type
    if kind in ("ci", "str"):
        _check_string(value, spec, path, ctx)
    elif kind == "dt":
        if not isinstance(value, str):
            ctx.add(path, f"expected a DateTime string, got {_got(value)}")
        else:
            message = _datetime_problem(value)
            if message:
                ctx.add(path, message)
    elif kind == "url":
        _check_url(value, path, ctx)
    elif kind in ("num", "int"):
        _check_number(value, spec, path, ctx)
    elif kind == "bool":
        if not isinstance(value, bool):
            ctx.add(path, f"expected a JSON boolean, got {_got(value)}")
    elif kind == "enum":
        _check_enum(value, spec, path, ctx)
    elif kind == "obj":
        assert spec.ref is not None
        _check_object(value, spec.ref, path, ctx)
    elif kind != "any":  # pragma: no cover - programming error in the tables
        raise ValueError(f"unknown field type {kind}")


def _check_field(
    obj: dict[str, Any], name: str, spec: _F, path: str, ctx: _Ctx, partial: bool
) -> None:
    where = f"{path}.{name}"
    if name not in obj:
        if spec.card in ("1", "+") and not partial:
            ctx.add(where, "required field is missing")
        return
    value = obj[name]
    if value is None:
        if spec.card in ("1", "+"):
            ctx.add(where, "required field is null")
        return
    if spec.card in ("*", "+"):
        if not isinstance(value, list):
            ctx.add(where, f"expected an array, got {_got(value)}")
            return
        if spec.card == "+" and not value:
            ctx.add(where, "list with cardinality + must not be empty")
        for i, item in enumerate(value):
            _check_value(item, spec, f"{where}[{i}]", ctx)
    else:
        _check_value(value, spec, where, ctx)


def _check_object(obj: Any, name: str, path: str, ctx: _Ctx, partial: bool = False) -> None:
    if not isinstance(obj, dict):
        ctx.add(path, f"expected a JSON object ({name}), got {_got(obj)}")
        return
    schema = ctx.schemas[name]
    allowed_extra = set(ctx.extensions.get(name, ()))
    for key in obj:
        if key in schema:
            continue
        if key in allowed_extra:
            spec = _EXTENSION_FIELDS.get(key)
            if spec is not None and obj[key] is not None:
                _check_value(obj[key], spec, f"{path}.{key}", ctx)
                if key == "mobie_cdr_extension" and not isinstance(obj[key], dict):
                    ctx.add(f"{path}.{key}", f"expected a JSON object, got {_json_type(obj[key])}")
            continue
        if key in _SCHEMAS["2.2.1"].get(name, {}):
            ctx.add(f"{path}.{key}", f"unknown field in OCPI {ctx.version} {name} (2.2.1-only)")
        else:
            ctx.add(f"{path}.{key}", f"unknown field {key!r} in {name}")
    for field_name, spec in schema.items():
        _check_field(obj, field_name, spec, path, ctx, partial)
    rule = _RULES.get(name)
    if rule is not None:
        rule(obj, path, ctx)


# --------------------------------------------------------------------------------------------
# Cross-field rules (each copes with missing/invalid fields: PATCH bodies are partial)


def _not_before(obj: dict[str, Any], path: str, ctx: _Ctx, start: str, end: str) -> None:
    """``end`` not before ``start`` [stricter than OCPI, which does not say it]."""
    begin_at, end_at = _parse_dt(obj.get(start)), _parse_dt(obj.get(end))
    if begin_at and end_at and end_at < begin_at:
        ctx.add(f"{path}.{end}", f"{obj[end]} is before {start} {obj[start]}")


def _unique(items: Any, key: Callable[[Any], Any], path: str, what: str, ctx: _Ctx) -> None:
    if not isinstance(items, list):
        return
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        try:
            k = key(item)
            hash(k)
        except (AttributeError, TypeError):
            continue
        if k is None:
            continue
        if k in seen:
            ctx.add(f"{path}[{i}]", f"duplicate {what} {k!r} (same as [{seen[k]}])")
        else:
            seen[k] = i


def _ci_key(item: Any, name: str) -> Any:
    value = item.get(name)
    return value.upper() if isinstance(value, str) else None


def _children_not_newer(
    obj: dict[str, Any], path: str, ctx: _Ctx, children: str, id_field: str, parent: str
) -> None:
    """Parent ``last_updated`` >= every child's [house rule; OCPI: bump parents on change]."""
    mine = _parse_dt(obj.get("last_updated"))
    items = obj.get(children)
    if mine is None or not isinstance(items, list):
        return
    for i, child in enumerate(items):
        if not isinstance(child, dict):
            continue
        theirs = _parse_dt(child.get("last_updated"))
        if theirs is not None and theirs > mine:
            ctx.add(
                f"{path}.last_updated",
                f"{parent} last_updated {obj['last_updated']} is older than "
                f"{path}.{children}[{i}] ({child.get(id_field)!r}) last_updated "
                f"{child['last_updated']}",
            )


def _rule_location(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _children_not_newer(obj, path, ctx, "evses", "uid", "Location")
    _unique(obj.get("evses"), lambda e: _ci_key(e, "uid"), f"{path}.evses", "EVSE uid", ctx)
    if obj.get("publish") is True and obj.get("publish_allowed_to"):
        ctx.add(f"{path}.publish_allowed_to", "only allowed when publish is false")


def _rule_evse(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _children_not_newer(obj, path, ctx, "connectors", "id", "EVSE")
    _unique(
        obj.get("connectors"), lambda c: _ci_key(c, "id"), f"{path}.connectors", "Connector id", ctx
    )


def _rule_hours(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    regular = obj.get("regular_hours")
    if obj.get("twentyfourseven") is True and regular:
        ctx.add(f"{path}.regular_hours", "must be absent when twentyfourseven is true")
    if obj.get("twentyfourseven") is False and not regular:
        ctx.add(f"{path}.regular_hours", "needs at least one entry when twentyfourseven is false")


def _rule_regular_hours(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    begin, end = obj.get("period_begin"), obj.get("period_end")
    if isinstance(begin, str) and isinstance(end, str):
        if _HHMM_RE.fullmatch(begin) and _HHMM_RE.fullmatch(end) and end <= begin:
            ctx.add(f"{path}.period_end", f"{end} is not after period_begin {begin}")


def _rule_publish_token(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    if not any(obj.get(k) for k in ("uid", "visual_number", "group_id")):
        ctx.add(path, "needs at least one of uid, visual_number, group_id")
    if obj.get("uid") and not obj.get("type"):
        ctx.add(f"{path}.type", "required when uid is given")
    if obj.get("visual_number") and not obj.get("issuer"):
        ctx.add(f"{path}.issuer", "required when visual_number is given")


def _rule_cdr(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    _not_before(obj, path, ctx, "start_date_time", "end_date_time")
    if obj.get("credit") is True and not obj.get("credit_reference_id"):
        ctx.add(f"{path}.credit_reference_id", "required when credit is true")


def _rule_tariff_restrictions(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    """min_* <= max_* [stricter than OCPI]."""
    for what in ("kwh", "current", "power", "duration"):
        low, high = obj.get(f"min_{what}"), obj.get(f"max_{what}")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if numbers and low > high:
            ctx.add(f"{path}.max_{what}", f"{high} is below min_{what} {low}")


def _rule_credentials(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    def key(role: dict[str, Any]) -> tuple[Any, Any, Any]:
        return role.get("role"), _ci_key(role, "party_id"), _ci_key(role, "country_code")

    _unique(obj.get("roles"), key, f"{path}.roles", "(role, party_id, country_code)", ctx)


def _rule_version_details(obj: dict[str, Any], path: str, ctx: _Ctx) -> None:
    if "version" in obj and obj["version"] != ctx.version:
        ctx.add(f"{path}.version", f"{obj['version']!r} but these are the {ctx.version} details")
    _unique(
        obj.get("endpoints"),
        lambda e: (e.get("identifier"), e.get("role")),
        f"{path}.endpoints",
        "(identifier, role)",
        ctx,
    )


_RULES: dict[str, Callable[[dict[str, Any], str, _Ctx], None]] = {
    "Location": _rule_location,
    "EVSE": _rule_evse,
    "Hours": _rule_hours,
    "RegularHours": _rule_regular_hours,
    "ExceptionalPeriod": lambda o, p, c: _not_before(o, p, c, "period_begin", "period_end"),
    "StatusSchedule": lambda o, p, c: _not_before(o, p, c, "period_begin", "period_end"),
    "PublishTokenType": _rule_publish_token,
    "Session": lambda o, p, c: _not_before(o, p, c, "start_date_time", "end_date_time"),
    "CDR": _rule_cdr,
    "Tariff": lambda o, p, c: _not_before(o, p, c, "start_date_time", "end_date_time"),
    "TariffRestrictions": _rule_tariff_restrictions,
    "Credentials": _rule_credentials,
    "VersionDetails": _rule_version_details,
}


def _check_version_arg(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")


def strict_problems(
    kind: str,
    obj: Any,
    version: str = "2.2.1",
    *,
    extensions: Mapping[str, Collection[str]] = MOBIE_EXTENSIONS,
    path: str = "$",
    partial: bool = False,
) -> list[str]:
    """Our own rules only; returns the problems (``[strict] <path>: <message>``), raises nothing.

    ``kind``: one of ``location evse connector session cdr tariff token credentials version
    version_details endpoint command_response command_result`` or ``version_list``.
    ``partial``: a PATCH body (required fields may be missing at the top level).
    """
    _check_version_arg(version)
    ctx = _Ctx(version, extensions)
    if kind == "version_list":
        if not isinstance(obj, list):
            ctx.add(path, f"expected an array of Version, got {_json_type(obj)}")
        else:
            for i, item in enumerate(obj):
                _check_object(item, "Version", f"{path}[{i}]", ctx)
            _unique(obj, lambda v: v.get("version"), path, "version", ctx)
        return ctx.problems
    _check_object(obj, _KINDS[kind][0], path, ctx, partial=partial)
    return ctx.problems


# --------------------------------------------------------------------------------------------
# ocpi-types


def _require_asserts() -> None:
    """ocpi-types validates with bare ``assert``: refuse to run when they are compiled away."""
    if not __debug__:
        raise RuntimeError("OCPI checks refuse to run under python -O (ocpi-types uses assert)")
    try:
        _ot.from_str(1)
    except AssertionError:
        return
    raise RuntimeError("ocpi-types does not validate (its asserts are disabled): refusing to run")


_OT_FILE = _ot.__file__
_OT_REASONS = {
    "from_str": "expected a string",
    "from_int": "expected an integer",
    "from_float": "expected a number",
    "from_bool": "expected a boolean",
    "from_list": "expected an array",
    "from_none": "expected null",
    "from_dict": "expected an object",
}


def _ot_explain(exc: BaseException) -> tuple[str, str]:
    """Turn an ocpi-types exception into (relative JSON path, reason) from its traceback."""
    frames = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == _OT_FILE
    ]
    path = ""
    for i, (frame, lineno) in enumerate(frames):
        name = frame.f_code.co_name
        local = frame.f_locals
        if name == "from_dict" and i < len(frames) - 1:
            match = re.search(r'obj\.get\("([^"]+)"\)', linecache.getline(_OT_FILE, lineno))
            if match:
                path += "." + match.group(1)
        elif name == "from_dict":
            match = re.search(r'obj\.get\("([^"]+)"\)', linecache.getline(_OT_FILE, lineno))
            if match and not isinstance(exc, AssertionError):
                return path + "." + match.group(1), f"{type(exc).__name__}: {exc}"
            if match:
                return path + "." + match.group(1), "rejected"
            return path, f"expected an object, got {_json_type(local.get('obj'))}"
        elif name in ("<listcomp>", "from_list") and "y" in local:
            parent = frames[i - 1][0].f_locals.get("x") if name == "<listcomp>" else local["x"]
            if isinstance(parent, list):
                index = next((j for j, e in enumerate(parent) if e is local["y"]), None)
                path += f"[{index}]" if index is not None else "[?]"
        elif name == "from_union":
            value, alternatives = local.get("x"), local.get("fs") or []
            best: tuple[str, str] | None = None
            for alternative in alternatives:
                if alternative is _ot.from_none:
                    continue
                try:
                    alternative(value)
                except Exception as sub:
                    found = _ot_explain(sub)
                    if best is None or len(found[0]) > len(best[0]):
                        best = found
            if best is None:
                return path, f"no alternative accepted {_short(value)}"
            return path + best[0], best[1]
        if i == len(frames) - 1:
            if not isinstance(exc, AssertionError) or name not in _OT_REASONS:
                return path, f"{type(exc).__name__}: {exc}"
            value = local.get("x", local.get("obj"))
            return path, f"{_OT_REASONS[name]}, got {_got(value)}"
    return path, f"{type(exc).__name__}: {exc}"


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _strip_extensions(
    value: Any, name: str, schemas: dict[str, dict[str, _F]], ext: Mapping[str, Collection[str]]
) -> None:
    """Remove the allowed extension fields (in place) so ocpi-types compares plain OCPI."""
    if not isinstance(value, dict):
        return
    for key in ext.get(name, ()):
        value.pop(key, None)
    for key, spec in schemas.get(name, {}).items():
        if spec.type != "obj" or key not in value:
            continue
        assert spec.ref is not None
        items = value[key] if isinstance(value[key], list) else [value[key]]
        for item in items:
            _strip_extensions(item, spec.ref, schemas, ext)


def _diff(expected: Any, actual: Any, path: str, out: list[str]) -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                out.append(
                    f"[ocpi-types] {path}.{key}: field dropped by the ocpi-types model "
                    f"(unknown or misspelt field)"
                )
            else:
                _diff(expected[key], actual[key], f"{path}.{key}", out)
        for key in actual:
            if key not in expected:
                out.append(f"[ocpi-types] {path}.{key}: field added by the ocpi-types model")
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append(f"[ocpi-types] {path}: list length changed {len(expected)}->{len(actual)}")
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            _diff(e, a, f"{path}[{i}]", out)
        return
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        out.append(
            f"[ocpi-types] {path}: value altered by the round trip {_short(expected)} -> "
            f"{_short(actual)}"
        )


_PLACEHOLDERS_22 = {"country_code": "ZZ", "party_id": "ZZZ"}


def ocpi_types_problems(
    kind: str,
    obj: Any,
    version: str = "2.2.1",
    *,
    extensions: Mapping[str, Collection[str]] = MOBIE_EXTENSIONS,
    path: str = "$",
) -> list[str]:
    """Run ``ocpi_types.v2_2_1.<Class>.from_dict`` and the ``to_dict`` round trip.

    Returns ``[ocpi-types] <path>: <reason>`` lines. ocpi-types models 2.2.1 only: for
    ``version="2.2"`` a CdrToken without ``country_code``/``party_id`` gets placeholders before
    parsing, removed again before the comparison.
    """
    _check_version_arg(version)
    _require_asserts()
    if kind == "version_list":
        if not isinstance(obj, list):
            return [f"[ocpi-types] {path}: expected an array of Version"]
        problems: list[str] = []
        for i, item in enumerate(obj):
            problems += ocpi_types_problems(
                "version", item, version, extensions=extensions, path=f"{path}[{i}]"
            )
        return problems
    name, class_name = _KINDS[kind]
    model = getattr(_ot, class_name)
    prepared = copy.deepcopy(obj)
    _strip_extensions(prepared, name, _SCHEMAS[version], extensions)
    injected: list[str] = []
    token = prepared.get("cdr_token") if isinstance(prepared, dict) else None
    if version == "2.2" and kind in ("session", "cdr") and isinstance(token, dict):
        for key, placeholder in _PLACEHOLDERS_22.items():
            if key not in token:
                token[key] = placeholder
                injected.append(key)
    try:
        parsed = model.from_dict(prepared)
    except Exception as exc:
        where, reason = _ot_explain(exc)
        return [f"[ocpi-types] {path}{where}: {class_name}.from_dict: {reason}"]
    try:
        result = parsed.to_dict()
    except Exception as exc:  # pragma: no cover - from_dict accepted it
        return [f"[ocpi-types] {path}: {class_name}.to_dict failed: {type(exc).__name__} {exc}"]
    for key in injected:
        token.pop(key)
        result["cdr_token"].pop(key, None)
    out: list[str] = []
    _diff(_without_nulls(prepared), result, path, out)
    return out


def validate_with_ocpi_types(
    kind: str,
    obj: Any,
    version: str = "2.2.1",
    *,
    extensions: Mapping[str, Collection[str]] = MOBIE_EXTENSIONS,
) -> None:
    """Part (a) alone: raise ``AssertionError`` if ocpi-types rejects or alters ``obj``."""
    _raise(kind, ocpi_types_problems(kind, obj, version, extensions=extensions))


# --------------------------------------------------------------------------------------------
# Public checks


def _raise(what: str, problems: list[str]) -> None:
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise AssertionError(f"{len(problems)} OCPI problem(s) in {what}:\n{lines}")


def _both(
    kind: str,
    obj: Any,
    version: str,
    extensions: Mapping[str, Collection[str]],
    path: str = "$",
) -> list[str]:
    return strict_problems(kind, obj, version, extensions=extensions, path=path) + (
        ocpi_types_problems(kind, obj, version, extensions=extensions, path=path)
    )


def _check(kind: str, obj: Any, version: str, extensions: Mapping[str, Collection[str]]) -> None:
    _raise(_KINDS[kind][0] if kind in _KINDS else kind, _both(kind, obj, version, extensions))


def check_location(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A full Location (GET or PUT), with its EVSEs and Connectors."""
    _check("location", obj, version, extensions)


def check_evse(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A full EVSE (GET .../{location_id}/{evse_uid} or PUT of an EVSE)."""
    _check("evse", obj, version, extensions)


def check_connector(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """A full Connector."""
    _check("connector", obj, version, extensions)


def check_session(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A full Session; ``kwh`` >= 0; CdrToken without country_code/party_id only for 2.2."""
    _check("session", obj, version, extensions)


def check_cdr(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A CDR; for 2.2 CdrLocation.postal_code is required and 2.2.1-only fields are refused."""
    _check("cdr", obj, version, extensions)


def check_tariff(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A Tariff."""
    _check("tariff", obj, version, extensions)


def check_token(obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS) -> None:
    """A Token (as we return it on GET tokens)."""
    _check("token", obj, version, extensions)


def check_credentials(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """Credentials (token printable non-whitespace ASCII, max 64)."""
    _check("credentials", obj, version, extensions)


def check_version_list(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """The ``data`` of the versions endpoint: a list of Version, no duplicate version numbers."""
    _check("version_list", obj, version, extensions)


def check_version_details(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """Version details; ``obj["version"]`` must equal ``version`` [stricter than OCPI]."""
    _check("version_details", obj, version, extensions)


def check_command_response(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """The synchronous CommandResponse (``timeout`` >= 0 [stricter than OCPI])."""
    _check("command_response", obj, version, extensions)


def check_command_result(
    obj: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """The CommandResult POSTed to ``response_url``."""
    _check("command_result", obj, version, extensions)


def check_envelope(
    body: Any,
    list_expected: bool | None,
    *,
    kind: str | None = None,
    version: str = "2.2.1",
    extensions: Ext = MOBIE_EXTENSIONS,
) -> None:
    """Our response envelope: ``data``, ``status_code``, ``status_message``, ``timestamp``.

    ``list_expected``: True -> ``data`` must be an array; False -> an object; None -> anything
    (e.g. push responses, where ``data`` should be omitted). Only checked for 1xxx codes.
    ``kind``: also check ``data`` (each element of it, if a list) as that object kind.
    ``status_code`` must be 1000-4999 [stricter than OCPI's "4 digits"], 4000 not in 2.2.
    """
    _check_version_arg(version)
    ctx = _Ctx(version, extensions)
    _check_object(body, "Envelope", "$", ctx)
    problems = ctx.problems
    if isinstance(body, dict):
        code = body.get("status_code")
        if version == "2.2" and code == 4000:
            ctx.add("$.status_code", "4000 is new in OCPI 2.2.1")
        success = isinstance(code, int) and 1000 <= code <= 1999
        data = body.get("data")
        if success and list_expected is True and not isinstance(data, list):
            ctx.add("$.data", f"expected an array for a list endpoint, got {_json_type(data)}")
        if success and list_expected is False and not isinstance(data, dict):
            ctx.add("$.data", f"expected a single object, got {_json_type(data)}")
        if success and kind is not None and data is not None:
            if kind == "version_list" or not isinstance(data, list):
                problems += _both(kind, data, version, extensions, "$.data")
            else:
                for i, item in enumerate(data):
                    problems += _both(kind, item, version, extensions, f"$.data[{i}]")
    _raise("response envelope", problems)


_PATCH_MODULES = {
    "locations": "location",
    "location": "location",
    "evse": "evse",
    "evses": "evse",
    "connector": "connector",
    "connectors": "connector",
    "sessions": "session",
    "session": "session",
    "tokens": "token",
    "token": "token",
}


def check_patch(
    module: str, body: Any, version: str = "2.2.1", *, extensions: Ext = MOBIE_EXTENSIONS
) -> None:
    """A PATCH body for ``locations`` / ``evse`` / ``connector`` / ``sessions`` / ``tokens``.

    It must carry ``last_updated`` (house DateTime format) and only fields of that object, each
    valid by the same rules as a full object; required fields may be missing but not null.
    ocpi-types is not run (it has no partial models).
    """
    if module not in _PATCH_MODULES:
        raise ValueError(f"module must be one of {sorted(_PATCH_MODULES)}, not {module!r}")
    kind = _PATCH_MODULES[module]
    problems = strict_problems(kind, body, version, extensions=extensions, partial=True)
    if isinstance(body, dict) and "last_updated" not in body:
        problems.insert(0, "[strict] $.last_updated: every PATCH must contain last_updated")
    _raise(f"{_KINDS[kind][0]} PATCH", problems)


_PUSH_MODULES = ("locations", "sessions", "tokens", "tariffs", "cdrs")


def check_push_url(
    module: str,
    url_path: str,
    body: Any,
    our_country_code: str,
    our_party_id: str,
    *,
    endpoint_path: str | None = None,
    extensions: Ext = MOBIE_EXTENSIONS,
) -> None:
    """A push as the receiver sees it: URL ``{country_code}/{party_id}/{ids...}`` vs the body.

    ``url_path``: path (or full URL) of the request; the object segments start after
    ``endpoint_path`` if given, else after the last segment equal to ``module``.
    ``module``: ``locations`` (depth 3/4/5: Location id, EVSE uid, Connector id), ``sessions``
    (id), ``tariffs`` (id), ``tokens`` (uid, ``?type=`` vs body type, default RFID; the URL
    carries the eMSP's country/party, not ours), ``cdrs`` (no segments; body owner = us).
    Body fields are compared when present (PATCH bodies often omit them). Comparisons are exact
    [stricter than OCPI, which compares CiStrings case-insensitively]. For ``locations`` the URL
    depth says which object the body is: a field of another object (a Location PUT to an EVSE
    URL) is reported.
    """
    if module not in _PUSH_MODULES:
        raise ValueError(f"module must be one of {_PUSH_MODULES}, not {module!r}")
    problems: list[str] = []

    def add(where: str, message: str) -> None:
        problems.append(f"[strict] {where}: {message}")

    parts = urlsplit(url_path)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if endpoint_path is not None:
        prefix = [unquote(s) for s in urlsplit(endpoint_path).path.split("/") if s]
        if segments[: len(prefix)] != prefix:
            _raise("push URL", [f"[strict] url: {parts.path!r} is not under {endpoint_path!r}"])
        rest = segments[len(prefix) :]
    elif module in segments:
        rest = segments[len(segments) - segments[::-1].index(module) :]
    else:
        _raise("push URL", [f"[strict] url: no {module!r} segment in {parts.path!r}"])
        return
    body_obj = body if isinstance(body, dict) else {}

    def same(where: str, url_value: str, key: str) -> None:
        if key in body_obj and body_obj[key] != url_value:
            add(f"$.{key}", f"{body_obj[key]!r} but the URL {where} segment is {url_value!r}")

    if module == "cdrs":
        if rest:
            add("url", f"a CDR is POSTed to the cdrs endpoint itself, got extra segments {rest}")
        same("owner country_code", our_country_code, "country_code")
        same("owner party_id", our_party_id, "party_id")
        _raise("push URL", problems)
        return
    depth = {"locations": (3, 4, 5)}.get(module, (3,))
    if len(rest) not in depth:
        add(
            "url",
            f"{module} push needs {'/'.join(map(str, depth))} segments after the "
            f"endpoint ({{country_code}}/{{party_id}}/{{id}}...), got {rest}",
        )
        _raise("push URL", problems)
    country_code, party_id, *ids = rest
    if module != "tokens":
        if country_code != our_country_code:
            add("url", f"country_code segment {country_code!r} is not ours ({our_country_code!r})")
        if party_id != our_party_id:
            add("url", f"party_id segment {party_id!r} is not ours ({our_party_id!r})")
    if (module == "locations" and len(ids) == 1) or module in ("sessions", "tariffs", "tokens"):
        same("country_code", country_code, "country_code")
        same("party_id", party_id, "party_id")
    if module == "locations":
        key = {1: "id", 2: "uid", 3: "id"}[len(ids)]
        same(["location_id", "evse_uid", "connector_id"][len(ids) - 1], ids[-1], key)
        addressed = ["Location", "EVSE", "Connector"][len(ids) - 1]
        known = set(_SCHEMAS_221[addressed]) | set(extensions.get(addressed, ()))
        foreign = sorted(k for k in body_obj if k not in known)
        if foreign:
            add(
                "$",
                f"fields {foreign} are not {addressed} fields, but the URL "
                f"({len(rest)} segments) addresses {addressed} {ids[-1]!r}",
            )
    elif module == "tokens":
        same("token_uid", ids[0], "uid")
        query_type = parse_qs(parts.query).get("type", ["RFID"])[-1]
        if "type" in body_obj and body_obj["type"] != query_type:
            add(
                "$.type",
                f"{body_obj['type']!r} but the URL type is {query_type!r} (no ?type= means RFID)",
            )
    else:
        same(f"{module[:-1]}_id", ids[0], "id")
    _raise("push URL", problems)
