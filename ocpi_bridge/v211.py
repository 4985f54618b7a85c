"""OCPI 2.1.1, for partners still on it: every conversion between our OCPI 2.2.1 objects and
2.1.1's, in pure functions (nothing here reads the database or the network).

Outgoing (what we serve and push), :func:`outgoing`:

- **Location**: ``type`` (2.1.1's LocationType) from 2.2.1's ``parking_type`` (UNKNOWN when
  none, OTHER for ALONG_MOTORWAY / ON_DRIVEWAY); no country_code, party_id, publish,
  publish_allowed_to, parking_type, state, nor extensions (MOBI.E's ``mobie_*``); facilities
  and capabilities limited to 2.1.1's enums.
- **Connector**: ``voltage`` / ``amperage`` (2.2.1's max_voltage / max_amperage), ``tariff_id``
  (the first of ``tariff_ids``; absent when there is none). AC_2_PHASE(_SPLIT) is written
  AC_1_PHASE; a connector whose standard 2.1.1 does not know (GB/T, NEMA, Pantograph...) is
  left out, and an EVSE left without connectors with it.
- **Session**: ``start_datetime``/``end_datetime``, ``auth_id`` (the token's contract id),
  ``location`` (the whole Location, reduced to the session's EVSE and connector: the caller
  passes the current Location), ``total_cost`` a number (excl. VAT), COMMAND authorizations
  as AUTH_REQUEST, a RESERVATION status as PENDING.
- **CDR**: ``stop_date_time``, ``auth_id``, ``location`` (as for a Session; when the caller
  has no Location, one made of the CDR's own ``cdr_location``), ``total_cost`` a number
  (excl. VAT), tariffs in 2.1.1 shape, at least one charging period. It also carries
  ``end_date_time`` (the same time): not a 2.1.1 field, but what some 2.1.1 implementations
  read (extrawest-ocpi among them); OCPI receivers ignore fields they do not know.
- **Tariff**: no country_code, party_id, type, min/max_price, validity dates; price
  components without ``vat`` (2.1.1 prices exclude VAT, as ours do); restrictions limited to
  2.1.1's (an element that applies only to reservations is left out; min/max_current, which
  2.1.1 cannot say, are dropped).
- Charging periods keep only the dimensions 2.1.1 knows; a period left empty is dropped.

Incoming: :func:`token_in` / :func:`token_patch_in` (2.1.1 Tokens carry ``auth_id`` and no
country_code/party_id: the URL's party gives them), :func:`command_in` (START_SESSION,
STOP_SESSION, UNLOCK_CONNECTOR, RESERVE_NOW bodies as our 2.2.1 handlers take them),
:func:`credentials_in`. Invalid input raises OcpiError 2001 naming the fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import CiString, Url, parse
from .transport import INVALID_PARAMETERS, OcpiError, ocpi_time, parse_ocpi_time

VERSION = "2.1.1"
# the modules of 2.1.1 (ModuleID)
MODULES = ("cdrs", "commands", "credentials", "locations", "sessions", "tariffs", "tokens")

LOCATION_FIELDS = (
    "id",
    "type",
    "name",
    "address",
    "city",
    "postal_code",
    "country",
    "coordinates",
    "related_locations",
    "evses",
    "directions",
    "operator",
    "suboperator",
    "owner",
    "facilities",
    "time_zone",
    "opening_times",
    "charging_when_closed",
    "images",
    "energy_mix",
    "last_updated",
)
EVSE_FIELDS = (
    "uid",
    "evse_id",
    "status",
    "status_schedule",
    "capabilities",
    "connectors",
    "floor_level",
    "coordinates",
    "physical_reference",
    "directions",
    "parking_restrictions",
    "images",
    "last_updated",
)
LOCATION_TYPES = {"ON_STREET", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "PARKING_LOT"}
FACILITIES = frozenset(
    {
        "HOTEL",
        "RESTAURANT",
        "CAFE",
        "MALL",
        "SUPERMARKET",
        "SPORT",
        "RECREATION_AREA",
        "NATURE",
        "MUSEUM",
        "BUS_STOP",
        "TAXI_STAND",
        "TRAIN_STATION",
        "AIRPORT",
        "CARPOOL_PARKING",
        "FUEL_STATION",
        "WIFI",
    }
)
CAPABILITIES = frozenset(
    {
        "CHARGING_PROFILE_CAPABLE",
        "CREDIT_CARD_PAYABLE",
        "REMOTE_START_STOP_CAPABLE",
        "RESERVABLE",
        "RFID_READER",
        "UNLOCK_CAPABLE",
    }
)
CONNECTOR_TYPES = frozenset(
    {
        "CHADEMO",
        *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKL"),
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
        "TESLA_R",
        "TESLA_S",
    }
)
POWER_TYPES = {
    "AC_1_PHASE": "AC_1_PHASE",
    "AC_2_PHASE": "AC_1_PHASE",
    "AC_2_PHASE_SPLIT": "AC_1_PHASE",
    "AC_3_PHASE": "AC_3_PHASE",
    "DC": "DC",
}
DIMENSIONS = frozenset({"ENERGY", "FLAT", "MAX_CURRENT", "MIN_CURRENT", "PARKING_TIME", "TIME"})
RESTRICTIONS = (
    "start_time",
    "end_time",
    "start_date",
    "end_date",
    "min_kwh",
    "max_kwh",
    "min_power",
    "max_power",
    "min_duration",
    "max_duration",
    "day_of_week",
)
SESSION_STATUSES = {"RESERVATION": "PENDING"}
# a 2.2.1 CommandResult -> 2.1.1's CommandResponseType (what it POSTs to response_url)
COMMAND_RESULTS = {
    "ACCEPTED": "ACCEPTED",
    "NOT_SUPPORTED": "NOT_SUPPORTED",
    "TIMEOUT": "TIMEOUT",
    "UNKNOWN_SESSION": "UNKNOWN_SESSION",
}
# an endpoint of a 2.1.1 peer has no role: what it is from our side (a CPO's view)
SENDER_MODULES = frozenset({"tokens"})


# ---------------------------------------------------------------------------- outgoing


def outgoing(
    kind: str, obj: dict[str, Any], *, location: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``obj`` (OCPI 2.2.1, of ``kind``: location, evse, connector, session, cdr, tariff,
    session_patch) as a 2.1.1 peer reads it. A session or CDR carries its Location in 2.1.1:
    pass the current one (ours, 2.2.1) as ``location``."""
    if kind == "location":
        return _location(obj)
    if kind == "evse":
        return _evse(obj) or _evse_without_connectors(obj)
    if kind == "connector":
        return _connector(obj) or _connector_fields(obj)
    if kind == "session":
        return _session(obj, location)
    if kind == "session_patch":
        return _session_patch(obj)
    if kind == "cdr":
        return _cdr(obj, location)
    if kind == "tariff":
        return _tariff(obj)
    raise ValueError(f"unknown kind {kind!r}")


def _pick(obj: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: obj[k] for k in fields if obj.get(k) is not None}


def location_type(parking_type: Any) -> str:
    """2.1.1's LocationType for a 2.2.1 ParkingType (None: UNKNOWN)."""
    if parking_type is None:
        return "UNKNOWN"
    return parking_type if parking_type in LOCATION_TYPES else "OTHER"


def _location(loc: dict[str, Any]) -> dict[str, Any]:
    out = _pick(loc, LOCATION_FIELDS)
    out["type"] = location_type(loc.get("parking_type"))
    out["evses"] = [e for e in (_evse(e) for e in loc.get("evses") or []) if e is not None]
    if "facilities" in out:
        out["facilities"] = [f for f in out["facilities"] if f in FACILITIES]
    return out


def _evse_without_connectors(evse: dict[str, Any]) -> dict[str, Any]:
    out = _pick(evse, EVSE_FIELDS)
    out["connectors"] = []
    return out


def _evse(evse: dict[str, Any]) -> dict[str, Any] | None:
    """None when 2.1.1 cannot describe any of its connectors."""
    out = _pick(evse, EVSE_FIELDS)
    out["connectors"] = [
        c for c in (_connector(c) for c in evse.get("connectors") or []) if c is not None
    ]
    if not out["connectors"]:
        return None
    if "capabilities" in out:
        out["capabilities"] = [c for c in out["capabilities"] if c in CAPABILITIES]
    if not out.get("status_schedule"):
        out.pop("status_schedule", None)
    return out


def _connector_fields(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: c[k]
        for k in ("id", "standard", "format", "terms_and_conditions", "last_updated")
        if c.get(k) is not None
    }
    if c.get("power_type") is not None:
        out["power_type"] = POWER_TYPES.get(c["power_type"], c["power_type"])
    for ours, theirs in (("max_voltage", "voltage"), ("max_amperage", "amperage")):
        if c.get(ours) is not None:
            out[theirs] = c[ours]
    if c.get("tariff_ids"):
        out["tariff_id"] = c["tariff_ids"][0]
    return out


def _connector(c: dict[str, Any]) -> dict[str, Any] | None:
    """None when 2.1.1 has no ConnectorType for its standard."""
    if c.get("standard") not in CONNECTOR_TYPES:
        return None
    return _connector_fields(c)


def _periods(periods: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for p in periods or []:
        dims = [
            {"type": d["type"], "volume": d["volume"]}
            for d in p.get("dimensions") or []
            if d.get("type") in DIMENSIONS
        ]
        if dims:
            out.append({"start_date_time": p["start_date_time"], "dimensions": dims})
    return out


def _cost(price: Any) -> Any:
    """A 2.2.1 Price -> 2.1.1's number (excl. VAT)."""
    if isinstance(price, dict):
        return price.get("excl_vat")
    return price


def _auth_id(token: dict[str, Any] | None) -> str | None:
    if not token:
        return None
    return token.get("contract_id") or token.get("uid")


def _auth_method(method: Any) -> Any:
    return "AUTH_REQUEST" if method == "COMMAND" else method


def _place_location(
    location: dict[str, Any] | None,
    location_id: str,
    evse_uid: str | None,
    connector_id: str | None,
    cdr_location: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The 2.1.1 Location of a session or CDR: ``location`` (2.2.1) reduced to the EVSE and
    connector used; what is missing from it is made of ``cdr_location`` (a CDR's own)."""
    if location is not None:
        base = _location({**location, "evses": []})
        evse = next(
            (
                e
                for e in location.get("evses") or []
                if evse_uid is not None and str(e.get("uid", "")).upper() == evse_uid.upper()
            ),
            None,
        )
    else:
        base = _pick(cdr_location or {}, ("name", "address", "city", "postal_code", "country"))
        base["id"] = location_id
        base["type"] = "UNKNOWN"
        if cdr_location and cdr_location.get("coordinates"):
            base["coordinates"] = cdr_location["coordinates"]
        evse = None
    out_evse: dict[str, Any] | None = None
    if evse is not None:
        connectors = [
            c
            for c in evse.get("connectors") or []
            if connector_id is not None and str(c.get("id", "")).upper() == connector_id.upper()
        ]
        out_evse = _evse({**evse, "connectors": connectors})
    if out_evse is None and evse_uid is not None:
        out_evse = _evse_stub(evse, evse_uid, connector_id, cdr_location)
    base["evses"] = [out_evse] if out_evse is not None else []
    return base


def _evse_stub(
    evse: dict[str, Any] | None,
    evse_uid: str,
    connector_id: str | None,
    cdr_location: dict[str, Any] | None,
) -> dict[str, Any]:
    """An EVSE we no longer have as it was (redefined since): what the CDR recorded."""
    cdr = cdr_location or {}
    out: dict[str, Any] = {"uid": evse_uid, "status": "UNKNOWN"}
    if evse is not None:
        out.update(_pick(evse, ("evse_id", "status", "last_updated")))
    elif cdr.get("evse_id"):
        out["evse_id"] = cdr["evse_id"]
    connector: dict[str, Any] = {}
    if connector_id is not None:
        connector["id"] = connector_id
    for ours, theirs in (
        ("connector_standard", "standard"),
        ("connector_format", "format"),
        ("connector_power_type", "power_type"),
    ):
        if cdr.get(ours) is not None:
            connector[theirs] = cdr[ours]
    if "power_type" in connector:
        connector["power_type"] = POWER_TYPES.get(connector["power_type"], "AC_1_PHASE")
    out["connectors"] = [connector] if connector else []
    return out


def _session(s: dict[str, Any], location: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": s["id"],
        "start_datetime": s["start_date_time"],
        "kwh": s["kwh"],
        "auth_id": _auth_id(s.get("cdr_token")),
        "auth_method": _auth_method(s.get("auth_method")),
        "location": _place_location(
            location, s["location_id"], s.get("evse_uid"), s.get("connector_id")
        ),
        "currency": s["currency"],
        "charging_periods": _periods(s.get("charging_periods")),
        "status": SESSION_STATUSES.get(s["status"], s["status"]),
        "last_updated": s["last_updated"],
    }
    if s.get("end_date_time"):
        out["end_datetime"] = s["end_date_time"]
    if s.get("meter_id"):
        out["meter_id"] = s["meter_id"]
    if s.get("total_cost") is not None:
        out["total_cost"] = _cost(s["total_cost"])
    return out


def _session_patch(body: dict[str, Any]) -> dict[str, Any]:
    """A Session PATCH body (some of a Session's fields) in 2.1.1's names."""
    out = dict(body)
    for ours, theirs in (("start_date_time", "start_datetime"), ("end_date_time", "end_datetime")):
        if ours in out:
            out[theirs] = out.pop(ours)
    if "charging_periods" in out:
        out["charging_periods"] = _periods(out["charging_periods"])
        if not out["charging_periods"]:
            del out["charging_periods"]
    if "total_cost" in out:
        out["total_cost"] = _cost(out["total_cost"])
    if "status" in out:
        out["status"] = SESSION_STATUSES.get(out["status"], out["status"])
    if "auth_method" in out:
        out["auth_method"] = _auth_method(out["auth_method"])
    if "cdr_token" in out:
        out["auth_id"] = _auth_id(out.pop("cdr_token"))
    for gone in ("country_code", "party_id", "location_id", "evse_uid", "connector_id"):
        out.pop(gone, None)
    out.pop("authorization_reference", None)
    return out


def _cdr(c: dict[str, Any], location: dict[str, Any] | None) -> dict[str, Any]:
    where = c.get("cdr_location") or {}
    periods = _periods(c.get("charging_periods")) or [
        {
            "start_date_time": c["start_date_time"],
            "dimensions": [{"type": "ENERGY", "volume": c.get("total_energy", 0)}],
        }
    ]
    out: dict[str, Any] = {
        "id": c["id"],
        "start_date_time": c["start_date_time"],
        "stop_date_time": c["end_date_time"],
        "end_date_time": c["end_date_time"],  # see the module's docstring
        "auth_id": _auth_id(c.get("cdr_token")),
        "auth_method": _auth_method(c.get("auth_method")),
        "location": _place_location(
            location,
            str(where.get("id", "")),
            where.get("evse_uid"),
            where.get("connector_id"),
            where,
        ),
        "currency": c["currency"],
        "tariffs": [_tariff(t) for t in c.get("tariffs") or []],
        "charging_periods": periods,
        "total_cost": _cost(c.get("total_cost")) or 0,
        "total_energy": c["total_energy"],
        "total_time": c["total_time"],
        "last_updated": c["last_updated"],
    }
    if c.get("total_parking_time") is not None:
        out["total_parking_time"] = c["total_parking_time"]
    if c.get("meter_id"):
        out["meter_id"] = c["meter_id"]
    if c.get("remark"):
        out["remark"] = c["remark"]
    return out


def _tariff(t: dict[str, Any]) -> dict[str, Any]:
    out = _pick(
        t, ("id", "currency", "tariff_alt_text", "tariff_alt_url", "energy_mix", "last_updated")
    )
    elements = []
    for element in t.get("elements") or []:
        restrictions = element.get("restrictions") or {}
        if restrictions.get("reservation"):
            continue  # 2.1.1 has no reservation pricing: such an element never applies
        out_element: dict[str, Any] = {
            "price_components": [
                {"type": p["type"], "price": p["price"], "step_size": p["step_size"]}
                for p in element.get("price_components") or []
            ]
        }
        kept = _pick(restrictions, RESTRICTIONS)
        if kept:
            out_element["restrictions"] = kept
        elements.append(out_element)
    out["elements"] = elements
    return out


def token_out(token: dict[str, Any]) -> dict[str, Any]:
    """One of our stored Tokens (2.2.1) as a 2.1.1 Token."""
    out = _pick(token, ("uid", "visual_number", "issuer", "valid", "whitelist", "language"))
    out["type"] = token["type"] if token.get("type") in ("RFID", "OTHER") else "OTHER"
    out["auth_id"] = token.get("contract_id") or token.get("uid")
    out["last_updated"] = token.get("last_updated")
    return out


def details(endpoints: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Our version details' endpoints as 2.1.1 lists them: no role, each module once, only
    2.1.1's modules."""
    out: list[dict[str, str]] = []
    for e in endpoints:
        if e["identifier"] in MODULES and all(o["identifier"] != e["identifier"] for o in out):
            out.append({"identifier": e["identifier"], "url": e["url"]})
    return out


def endpoint_role(identifier: str) -> str:
    """A 2.1.1 peer's endpoint has no role: the one it plays towards a CPO (its tokens are
    a Sender, the rest Receivers), so that ``Peer.endpoint(identifier, role)`` finds it."""
    return "SENDER" if identifier in SENDER_MODULES else "RECEIVER"


# ---------------------------------------------------------------------------- incoming


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Party = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{3}$")]
Country = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")]


class Token211(_Strict):
    """A 2.1.1 Token (PUT): no country_code/party_id (tolerated when they repeat the URL's)."""

    uid: CiString = Field(min_length=1, max_length=36)
    type: Literal["OTHER", "RFID"]
    auth_id: CiString = Field(min_length=1, max_length=36)
    visual_number: str | None = Field(None, max_length=64)
    issuer: str = Field(min_length=1, max_length=64)
    valid: bool
    whitelist: Literal["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"]
    language: str | None = Field(None, pattern=r"^[a-z]{2}$")
    last_updated: str = Field(max_length=40)
    country_code: Country | None = None
    party_id: Party | None = None


class TokenPatch211(_Strict):
    uid: CiString | None = Field(None, min_length=1, max_length=36)
    type: Literal["OTHER", "RFID"] | None = None
    auth_id: CiString | None = Field(None, min_length=1, max_length=36)
    visual_number: str | None = Field(None, max_length=64)
    issuer: str | None = Field(None, min_length=1, max_length=64)
    valid: bool | None = None
    whitelist: Literal["ALWAYS", "ALLOWED", "ALLOWED_OFFLINE", "NEVER"] | None = None
    language: str | None = Field(None, pattern=r"^[a-z]{2}$")
    last_updated: str = Field(max_length=40)
    country_code: Country | None = None
    party_id: Party | None = None


def _time(value: str, field: str) -> str:
    try:
        return ocpi_time(parse_ocpi_time(value))
    except ValueError as e:
        raise OcpiError(INVALID_PARAMETERS, f"{field}: {e}") from None


def _same_party(obj: dict[str, Any], country_code: str, party_id: str, where: str) -> None:
    for field, expected in (("country_code", country_code), ("party_id", party_id)):
        given = obj.get(field)
        if given is not None and str(given).upper() != expected.upper():
            raise OcpiError(
                INVALID_PARAMETERS, f"{where}{field}: {given!r} is not the party's {expected!r}"
            )


def token_in(body: Any, country_code: str, party_id: str) -> dict[str, Any]:
    """A 2.1.1 Token (PUT body) as our 2.2.1 Token: ``auth_id`` is its contract id, the
    party (the URL's, or the peer's) gives country_code and party_id."""
    token: Token211 = parse(Token211, body)
    data = token.model_dump(exclude_none=True)
    _same_party(data, country_code, party_id, "")
    out = {
        "country_code": country_code.upper(),
        "party_id": party_id.upper(),
        "uid": data["uid"],
        "type": data["type"],
        "contract_id": data["auth_id"],
        "issuer": data["issuer"],
        "valid": data["valid"],
        "whitelist": data["whitelist"],
        "last_updated": _time(data["last_updated"], "last_updated"),
    }
    for field in ("visual_number", "language"):
        if field in data:
            out[field] = data[field]
    return out


def token_patch_in(body: Any, country_code: str, party_id: str) -> dict[str, Any]:
    """A 2.1.1 Token PATCH as the changes to our 2.2.1 Token."""
    patch: TokenPatch211 = parse(TokenPatch211, body)
    data = patch.model_dump(exclude_none=True)
    _same_party(data, country_code, party_id, "")
    data.pop("country_code", None)
    data.pop("party_id", None)
    if "auth_id" in data:
        data["contract_id"] = data.pop("auth_id")
    data["last_updated"] = _time(data["last_updated"], "last_updated")
    return data


class StartSession211(_Strict):
    response_url: Url
    token: dict[str, Any]
    location_id: CiString = Field(min_length=1, max_length=39)
    evse_uid: CiString | None = Field(None, min_length=1, max_length=39)


class ReserveNow211(_Strict):
    response_url: Url
    token: dict[str, Any]
    expiry_date: str = Field(max_length=40)
    reservation_id: int = Field(ge=0, le=2**31 - 1)
    location_id: CiString = Field(min_length=1, max_length=39)
    evse_uid: CiString | None = Field(None, min_length=1, max_length=39)


def command_in(command: str, body: Any, country_code: str, party_id: str) -> Any:
    """A 2.1.1 command body as our 2.2.1 handlers take it (their own checks follow). The
    token of START_SESSION / RESERVE_NOW is 2.1.1's, of the requesting party."""
    if command == "START_SESSION":
        start: StartSession211 = parse(StartSession211, body)
        out = start.model_dump(exclude_none=True)
        out["token"] = _command_token(start.token, country_code, party_id)
        return out
    if command == "RESERVE_NOW":
        reserve: ReserveNow211 = parse(ReserveNow211, body)
        out = reserve.model_dump(exclude_none=True)
        out["token"] = _command_token(reserve.token, country_code, party_id)
        out["reservation_id"] = str(reserve.reservation_id)
        return out
    if command == "CANCEL_RESERVATION":
        raise OcpiError(2000, "CANCEL_RESERVATION is not an OCPI 2.1.1 command", http_status=404)
    return body  # STOP_SESSION, UNLOCK_CONNECTOR: the same in 2.1.1


def _command_token(token: Any, country_code: str, party_id: str) -> dict[str, Any]:
    try:
        return token_in(token, country_code, party_id)
    except OcpiError as e:
        raise OcpiError(e.status_code, f"token: {e.message}") from None


def command_response_out(response: dict[str, Any]) -> dict[str, Any]:
    """Our CommandResponse (2.2.1: result, timeout, message) as 2.1.1's: ``result`` only."""
    result = response.get("result")
    return {"result": result if result in COMMAND_RESULTS else "REJECTED"}


def command_result_out(result: dict[str, Any]) -> dict[str, Any]:
    """A 2.2.1 CommandResult as 2.1.1 POSTs it to ``response_url`` (a CommandResponse):
    what 2.1.1 cannot say (EVSE_OCCUPIED, FAILED...) is REJECTED."""
    return {"result": COMMAND_RESULTS.get(str(result.get("result")), "REJECTED")}


class _Business211(_Strict):
    name: str = Field(min_length=1, max_length=100)
    website: Url | None = None
    logo: dict[str, Any] | None = None


class Credentials211(_Strict):
    token: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[!-~]+$")]
    url: Url
    business_details: _Business211
    party_id: Party
    country_code: Country


def credentials_in(body: Any, role: str) -> dict[str, Any]:
    """2.1.1 Credentials (one party, no role) as 2.2.1's, with the role the operator granted
    (a 2.1.1 peer cannot claim one)."""
    creds: Credentials211 = parse(Credentials211, body)
    data = creds.model_dump(exclude_none=True)
    return {
        "token": data["token"],
        "url": data["url"],
        "roles": [
            {
                "role": role,
                "business_details": data["business_details"],
                "party_id": data["party_id"],
                "country_code": data["country_code"],
            }
        ],
    }


def credentials_out(ours: dict[str, Any]) -> dict[str, Any]:
    """Our 2.2.1 Credentials (the CPO role) as 2.1.1's."""
    role = next((r for r in ours["roles"] if r.get("role") == "CPO"), ours["roles"][0])
    return {
        "token": ours["token"],
        "url": ours["url"],
        "business_details": role["business_details"],
        "party_id": role["party_id"],
        "country_code": role["country_code"],
    }
