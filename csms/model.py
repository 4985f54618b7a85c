"""The operator's definition of a station: one OCPI Location, one EVSE per OCPP connector
(MOBI.E's model). Field names, enums and lengths follow OCPI 2.2.1 so that the bridge can
publish exactly what the operator entered."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CiString = Annotated[str, Field(pattern=r"^[\x20-\x7e]*$")]

ParkingType = Literal[
    "ALONG_MOTORWAY",
    "PARKING_GARAGE",
    "PARKING_LOT",
    "ON_DRIVEWAY",
    "ON_STREET",
    "UNDERGROUND_GARAGE",
]
Capability = Literal[
    "CHARGING_PROFILE_CAPABLE",
    "CHARGING_PREFERENCES_CAPABLE",
    "CHIP_CARD_SUPPORT",
    "CONTACTLESS_CARD_SUPPORT",
    "CREDIT_CARD_PAYABLE",
    "DEBIT_CARD_PAYABLE",
    "PED_TERMINAL",
    "REMOTE_START_STOP_CAPABLE",
    "RESERVABLE",
    "RFID_READER",
    "START_SESSION_CONNECTOR_REQUIRED",
    "TOKEN_GROUP_CAPABLE",
    "UNLOCK_CAPABLE",
]
ConnectorType = Literal[
    "CHADEMO",
    "CHAOJI",
    "DOMESTIC_A",
    "DOMESTIC_B",
    "DOMESTIC_C",
    "DOMESTIC_D",
    "DOMESTIC_E",
    "DOMESTIC_F",
    "DOMESTIC_G",
    "DOMESTIC_H",
    "DOMESTIC_I",
    "DOMESTIC_J",
    "DOMESTIC_K",
    "DOMESTIC_L",
    "DOMESTIC_M",
    "DOMESTIC_N",
    "DOMESTIC_O",
    "GBT_AC",
    "GBT_DC",
    "IEC_60309_2_single_16",
    "IEC_60309_2_three_16",
    "IEC_60309_2_three_32",
    "IEC_60309_2_three_64",
    "IEC_62196_T1",
    "IEC_62196_T1_COMBO",
    "IEC_62196_T2",
    "IEC_62196_T2_COMBO",
    "IEC_62196_T3A",
    "IEC_62196_T3C",
    "NEMA_5_20",
    "NEMA_6_30",
    "NEMA_6_50",
    "NEMA_10_30",
    "NEMA_10_50",
    "NEMA_14_30",
    "NEMA_14_50",
    "PANTOGRAPH_BOTTOM_UP",
    "PANTOGRAPH_TOP_DOWN",
    "TESLA_R",
    "TESLA_S",
]
ConnectorFormat = Literal["SOCKET", "CABLE"]
PowerType = Literal["AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE", "DC"]
MobieVoltageLevel = Literal["BTN", "BTE", "MT"]
BootStatus = Literal["Accepted", "Pending", "Rejected"]

_LAT = re.compile(r"^-?[0-9]{1,2}\.[0-9]{5,7}$")
_LON = re.compile(r"^-?[0-9]{1,3}\.[0-9]{5,7}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _coordinate(value: object, pattern: re.Pattern[str], limit: float, what: str) -> str:
    """OCPI wants strings with 5 to 7 decimals; accept numbers too and format them."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number or a decimal string")
    if isinstance(value, int | float):
        text = f"{float(value):.6f}"
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"{what} must be a number or a decimal string")
    if not pattern.match(text):
        raise ValueError(f"{what} {value!r} must look like {pattern.pattern}")
    if abs(float(text)) > limit:
        raise ValueError(f"{what} {value!r} is out of range")
    return text


class GeoLocation(_Model):
    latitude: str
    longitude: str

    @field_validator("latitude", mode="before")
    @classmethod
    def _lat(cls, v: object) -> str:
        return _coordinate(v, _LAT, 90, "latitude")

    @field_validator("longitude", mode="before")
    @classmethod
    def _lon(cls, v: object) -> str:
        return _coordinate(v, _LON, 180, "longitude")


class LocationDef(_Model):
    id: CiString = Field(min_length=1, max_length=36)
    name: str | None = Field(None, max_length=255)
    address: str = Field(min_length=1, max_length=45)
    city: str = Field(min_length=1, max_length=45)
    postal_code: str | None = Field(None, max_length=10)
    state: str | None = Field(None, max_length=20)
    country: str = Field("PRT", pattern=r"^[A-Z]{3}$")
    coordinates: GeoLocation
    time_zone: str = Field("Europe/Lisbon", max_length=255)
    parking_type: ParkingType | None = None
    mobie_voltage_level: MobieVoltageLevel | None = None
    publish: bool = True

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class ConnectorDef(_Model):
    id: CiString = Field("1", min_length=1, max_length=36)
    standard: ConnectorType
    format: ConnectorFormat
    power_type: PowerType
    max_voltage: int = Field(gt=0)
    max_amperage: int = Field(gt=0)
    max_electric_power: int | None = Field(None, gt=0)
    tariff_ids: list[Annotated[CiString, Field(min_length=1, max_length=36)]] = []
    terms_and_conditions: str | None = Field(None, max_length=255)


class EvseDef(_Model):
    connector_id: int = Field(ge=1, description="the OCPP connectorId this EVSE is")
    uid: CiString = Field(min_length=1, max_length=36)
    evse_id: CiString | None = Field(None, max_length=48)
    capabilities: list[Capability] = []
    physical_reference: str | None = Field(None, max_length=16)
    floor_level: str | None = Field(None, max_length=4)
    connectors: list[ConnectorDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_connectors(self) -> EvseDef:
        ids = [c.id for c in self.connectors]
        if len(set(ids)) != len(ids):
            raise ValueError("connector ids must be unique within an EVSE")
        return self


class StationDef(_Model):
    """Body of ``PUT /api/v1/stations/{charge_point_id}``."""

    password: str | None = Field(
        None,
        min_length=8,
        max_length=64,
        description="HTTP Basic password (security profile 1); absent: keep, null: remove",
    )
    boot_status: BootStatus = "Accepted"
    security_profile: Literal[1, 2, 3] | None = Field(
        None,
        description="OCPP security profile: 1 Basic auth, 2 TLS + Basic auth, 3 TLS with a "
        "client certificate; absent: keep (1 for a new station)",
    )
    location: LocationDef
    evses: list[EvseDef] = Field(min_length=1)

    @field_validator("evses")
    @classmethod
    def _unique_evses(cls, evses: list[EvseDef]) -> list[EvseDef]:
        cids = [e.connector_id for e in evses]
        if len(set(cids)) != len(cids):
            raise ValueError("each connector_id may appear once")
        uids = [e.uid.upper() for e in evses]
        if len(set(uids)) != len(uids):
            raise ValueError("each uid may appear once")
        return evses

    def definition(self) -> dict[str, object]:
        """What is stored and published (no password, no boot policy)."""
        return self.model_dump(mode="json", exclude={"password", "boot_status", "security_profile"})


class IdTagDef(_Model):
    """Body of ``PUT /api/v1/id-tags/{id_tag}``."""

    status: Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"] = "Accepted"
    expiry_date: str | None = None
    parent_id_tag: str | None = Field(None, min_length=1, max_length=20)
