"""OCPI 2.1.1 conversions (ocpi_bridge.v211, dispatched by ocpi_bridge.versions): pure tests,
including hostile input (wrong types, missing fields, too long ids: OCPI 2001, never a
crash)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from ocpi_bridge import v211, versions
from ocpi_bridge.transport import INVALID_PARAMETERS, OcpiError

T = "2026-03-01T10:00:00Z"


def connector(**kw: Any) -> dict[str, Any]:
    return {
        "id": "1",
        "standard": "IEC_62196_T2",
        "format": "SOCKET",
        "power_type": "AC_3_PHASE",
        "max_voltage": 230,
        "max_amperage": 32,
        "max_electric_power": 22000,
        "tariff_ids": ["T-A", "T-B"],
        "last_updated": T,
        **kw,
    }


def evse(uid: str = "E1", **kw: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "evse_id": f"PT*CPO*{uid}",
        "status": "AVAILABLE",
        "status_schedule": [],
        "capabilities": ["RFID_READER", "PED_TERMINAL", "REMOTE_START_STOP_CAPABLE"],
        "connectors": [connector(), connector(id="2", standard="IEC_62196_T2_COMBO")],
        "parking_restrictions": ["EV_ONLY"],
        "last_updated": T,
        **kw,
    }


def location(**kw: Any) -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "CPO",
        "id": "LOC1",
        "publish": True,
        "publish_allowed_to": [{"party_id": "EMS", "country_code": "PT"}],
        "name": "Somewhere",
        "address": "Rua 1",
        "city": "Lisboa",
        "postal_code": "1000-001",
        "state": "Lisboa",
        "country": "PRT",
        "coordinates": {"latitude": "38.7", "longitude": "-9.1"},
        "parking_type": "ALONG_MOTORWAY",
        "evses": [evse("E1"), evse("E2")],
        "facilities": ["HOTEL", "METRO_STATION", "WIFI"],
        "time_zone": "Europe/Lisbon",
        "mobie_voltage_level": "BTN",
        "last_updated": T,
        **kw,
    }


CDR_TOKEN = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "ABC123",
    "type": "RFID",
    "contract_id": "PT-EMS-C-1",
}


def session(**kw: Any) -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "CPO",
        "id": "77",
        "start_date_time": "2026-03-01T09:00:00Z",
        "end_date_time": T,
        "kwh": 9.0,
        "cdr_token": CDR_TOKEN,
        "auth_method": "COMMAND",
        "authorization_reference": "REF1",
        "location_id": "LOC1",
        "evse_uid": "E2",
        "connector_id": "2",
        "currency": "EUR",
        "charging_periods": [
            {
                "start_date_time": "2026-03-01T09:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 4.5}, {"type": "POWER", "volume": 7}],
            },
            {
                "start_date_time": "2026-03-01T09:30:00Z",
                "dimensions": [{"type": "POWER", "volume": 7}],
            },
        ],
        "total_cost": {"excl_vat": 2.25, "incl_vat": 2.77},
        "status": "COMPLETED",
        "last_updated": T,
        **kw,
    }


TARIFF = {
    "country_code": "PT",
    "party_id": "CPO",
    "id": "T-A",
    "currency": "EUR",
    "type": "REGULAR",
    "min_price": {"excl_vat": 1},
    "start_date_time": "2026-01-01T00:00:00Z",
    "elements": [
        {
            "price_components": [{"type": "ENERGY", "price": 0.25, "vat": 23, "step_size": 1}],
            "restrictions": {"min_current": 16, "start_time": "08:00", "day_of_week": ["MONDAY"]},
        },
        {
            "price_components": [{"type": "FLAT", "price": 1, "vat": 23, "step_size": 1}],
            "restrictions": {"reservation": "RESERVATION"},
        },
        {"price_components": [{"type": "TIME", "price": 2, "vat": 23, "step_size": 60}]},
    ],
    "last_updated": T,
}


def cdr(**kw: Any) -> dict[str, Any]:
    return {
        "country_code": "PT",
        "party_id": "CPO",
        "id": "77",
        "start_date_time": "2026-03-01T09:00:00Z",
        "end_date_time": T,
        "session_id": "77",
        "cdr_token": CDR_TOKEN,
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": "LOC1",
            "name": "Somewhere",
            "address": "Rua 1",
            "city": "Lisboa",
            "country": "PRT",
            "coordinates": {"latitude": "38.7", "longitude": "-9.1"},
            "evse_uid": "E1",
            "evse_id": "PT*CPO*E1",
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2",
            "connector_format": "SOCKET",
            "connector_power_type": "AC_2_PHASE",
            "mobie_voltage_level": "BTN",
        },
        "currency": "EUR",
        "tariffs": [TARIFF],
        "charging_periods": [
            {
                "start_date_time": "2026-03-01T09:00:00Z",
                "dimensions": [{"type": "MAX_POWER", "volume": 7}],
            }
        ],
        "total_cost": {"excl_vat": 2.25, "incl_vat": 2.77},
        "total_energy_cost": {"excl_vat": 2.25},
        "total_energy": 9.0,
        "total_time": 1.0,
        "total_parking_time": 0.0,
        "last_updated": T,
        **kw,
    }


TOKEN = {
    "uid": "ABC123",
    "type": "RFID",
    "auth_id": "PT-EMS-C-1",
    "visual_number": "0001",
    "issuer": "eMSP",
    "valid": True,
    "whitelist": "ALLOWED",
    "language": "pt",
    "last_updated": "2026-01-01T00:00:00.123Z",
}


def refused(call: Any, *needles: str) -> OcpiError:
    with pytest.raises(OcpiError) as e:
        call()
    assert e.value.status_code == INVALID_PARAMETERS, e.value.message
    for needle in needles:
        assert needle in e.value.message, (needle, e.value.message)
    return e.value


# ---------------------------------------------------------------------------- outgoing


def test_location_in_211_shape() -> None:
    ours = location()
    before = copy.deepcopy(ours)
    out = versions.outgoing("location", ours, "2.1.1")
    assert ours == before  # the input is not changed
    for gone in ("country_code", "party_id", "publish", "publish_allowed_to", "parking_type"):
        assert gone not in out
    assert "state" not in out and "mobie_voltage_level" not in out
    assert out["type"] == "OTHER"
    assert out["facilities"] == ["HOTEL", "WIFI"]
    e = out["evses"][0]
    assert e["capabilities"] == ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]
    assert "status_schedule" not in e and e["parking_restrictions"] == ["EV_ONLY"]
    c = e["connectors"][0]
    assert c == {
        "id": "1",
        "standard": "IEC_62196_T2",
        "format": "SOCKET",
        "power_type": "AC_3_PHASE",
        "voltage": 230,
        "amperage": 32,
        "tariff_id": "T-A",
        "last_updated": T,
    }


@pytest.mark.parametrize(
    ("parking_type", "expected"),
    [
        (None, "UNKNOWN"),
        ("ON_STREET", "ON_STREET"),
        ("PARKING_LOT", "PARKING_LOT"),
        ("UNDERGROUND_GARAGE", "UNDERGROUND_GARAGE"),
        ("PARKING_GARAGE", "PARKING_GARAGE"),
        ("ON_DRIVEWAY", "OTHER"),
        ("ALONG_MOTORWAY", "OTHER"),
    ],
)
def test_location_type(parking_type: str | None, expected: str) -> None:
    loc = location(parking_type=parking_type)
    assert v211.outgoing("location", loc)["type"] == expected


def test_connectors_2_1_1_cannot_describe_are_left_out() -> None:
    gbt = connector(id="9", standard="GBT_DC")
    only_gbt = evse("E9", connectors=[gbt])
    out = v211.outgoing("location", location(evses=[evse("E1"), only_gbt]))
    assert [e["uid"] for e in out["evses"]] == ["E1"]
    mixed = v211.outgoing("evse", evse("E3", connectors=[gbt, connector(power_type="AC_2_PHASE")]))
    assert [(c["id"], c["power_type"]) for c in mixed["connectors"]] == [("1", "AC_1_PHASE")]
    # asked for alone, such an EVSE or connector is still answered, as far as 2.1.1 goes
    assert v211.outgoing("evse", only_gbt)["connectors"] == []
    assert v211.outgoing("connector", gbt)["standard"] == "GBT_DC"
    no_tariff = v211.outgoing("connector", connector(tariff_ids=[]))
    assert "tariff_id" not in no_tariff and "tariff_ids" not in no_tariff


def test_session_carries_its_location_reduced_to_its_evse_and_connector() -> None:
    out = versions.outgoing("session", session(), "2.1.1", location=location())
    assert out["start_datetime"] == "2026-03-01T09:00:00Z" and out["end_datetime"] == T
    assert out["auth_id"] == "PT-EMS-C-1" and out["auth_method"] == "AUTH_REQUEST"
    assert out["total_cost"] == 2.25 and out["kwh"] == 9.0 and out["status"] == "COMPLETED"
    for gone in ("cdr_token", "location_id", "evse_uid", "connector_id", "country_code"):
        assert gone not in out
    assert "authorization_reference" not in out and "start_date_time" not in out
    loc = out["location"]
    assert loc["id"] == "LOC1" and loc["type"] == "OTHER" and loc["time_zone"] == "Europe/Lisbon"
    [e] = loc["evses"]
    assert e["uid"] == "E2" and [c["id"] for c in e["connectors"]] == ["2"]
    # only 2.1.1's dimensions; a period left empty is dropped
    assert out["charging_periods"] == [
        {
            "start_date_time": "2026-03-01T09:00:00Z",
            "dimensions": [{"type": "ENERGY", "volume": 4.5}],
        }
    ]
    active = v211.outgoing(
        "session",
        session(status="RESERVATION", end_date_time=None, total_cost=None, auth_method="WHITELIST"),
        location=location(),
    )
    assert active["status"] == "PENDING" and active["auth_method"] == "WHITELIST"
    assert "end_datetime" not in active and "total_cost" not in active


def test_session_without_its_location_still_names_it() -> None:
    out = v211.outgoing("session", session(), location=None)
    assert out["location"]["id"] == "LOC1" and out["location"]["type"] == "UNKNOWN"
    assert out["location"]["evses"][0]["uid"] == "E2"
    # an EVSE no longer in the Location: what the session knows of it
    moved = v211.outgoing("session", session(evse_uid="GONE"), location=location())
    assert moved["location"]["evses"][0]["uid"] == "GONE"


def test_session_patch_in_211_names() -> None:
    body = {
        "kwh": 3.0,
        "last_updated": T,
        "charging_periods": [
            {"start_date_time": T, "dimensions": [{"type": "POWER", "volume": 7}]},
            {"start_date_time": T, "dimensions": [{"type": "ENERGY", "volume": 1}]},
        ],
        "end_date_time": T,
        "total_cost": {"excl_vat": 1.0},
    }
    out = versions.outgoing("session_patch", body, "2.1.1")
    assert out == {
        "kwh": 3.0,
        "last_updated": T,
        "charging_periods": [
            {"start_date_time": T, "dimensions": [{"type": "ENERGY", "volume": 1}]}
        ],
        "end_datetime": T,
        "total_cost": 1.0,
    }
    only_power = {"kwh": 1, "last_updated": T, "charging_periods": body["charging_periods"][:1]}
    assert "charging_periods" not in v211.outgoing("session_patch", only_power)


def test_cdr_in_211_shape() -> None:
    out = versions.outgoing("cdr", cdr(), "2.1.1", location=location())
    assert out["stop_date_time"] == T and out["end_date_time"] == T
    assert out["auth_id"] == "PT-EMS-C-1" and out["auth_method"] == "WHITELIST"
    assert out["total_cost"] == 2.25 and out["total_energy"] == 9.0 and out["total_time"] == 1.0
    assert out["total_parking_time"] == 0.0
    for gone in ("cdr_token", "cdr_location", "session_id", "total_energy_cost", "party_id"):
        assert gone not in out
    [e] = out["location"]["evses"]
    assert e["uid"] == "E1" and [c["id"] for c in e["connectors"]] == ["1"]
    assert e["connectors"][0]["voltage"] == 230
    # no period 2.1.1 can say: one ENERGY period with the total
    assert out["charging_periods"] == [
        {
            "start_date_time": "2026-03-01T09:00:00Z",
            "dimensions": [{"type": "ENERGY", "volume": 9.0}],
        }
    ]
    [tariff] = out["tariffs"]
    assert "party_id" not in tariff and len(tariff["elements"]) == 2


def test_cdr_without_a_current_location_uses_its_own() -> None:
    out = v211.outgoing("cdr", cdr(), location=None)
    loc = out["location"]
    assert loc["id"] == "LOC1" and loc["type"] == "UNKNOWN" and loc["city"] == "Lisboa"
    assert "mobie_voltage_level" not in loc
    [e] = loc["evses"]
    assert e["uid"] == "E1" and e["evse_id"] == "PT*CPO*E1"
    assert e["connectors"] == [
        {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_1_PHASE"}
    ]


def test_tariff_in_211_shape() -> None:
    out = versions.outgoing("tariff", TARIFF, "2.1.1")
    for gone in ("country_code", "party_id", "type", "min_price", "start_date_time"):
        assert gone not in out
    assert out["id"] == "T-A" and out["currency"] == "EUR" and out["last_updated"] == T
    # the reservation element is gone; min_current (not in 2.1.1) is dropped; no vat
    assert out["elements"] == [
        {
            "price_components": [{"type": "ENERGY", "price": 0.25, "step_size": 1}],
            "restrictions": {"start_time": "08:00", "day_of_week": ["MONDAY"]},
        },
        {"price_components": [{"type": "TIME", "price": 2, "step_size": 60}]},
    ]


def test_other_versions_are_untouched_and_kinds_are_checked() -> None:
    for version in ("2.2.1", "2.2"):
        for kind, obj in (("location", location()), ("session", session()), ("cdr", cdr())):
            assert versions.outgoing(kind, obj, version) is obj
    with pytest.raises(ValueError):
        versions.outgoing("token", {}, "2.1.1")
    with pytest.raises(ValueError):
        v211.outgoing("nothing", {})
    assert versions.needs_location("session", "2.1.1") and versions.needs_location("cdr", "2.1.1")
    assert not versions.needs_location("session", "2.2.1")
    assert not versions.needs_location("location", "2.1.1")
    assert versions.location_id("cdr", cdr()) == "LOC1"
    assert versions.location_id("session", session()) == "LOC1"
    assert [versions.uses_base64(v) for v in ("2.2.1", "2.2", "2.1.1")] == [True, False, False]


def test_details_and_endpoint_roles() -> None:
    listed = [
        {"identifier": "credentials", "role": "SENDER", "url": "u/credentials"},
        {"identifier": "credentials", "role": "RECEIVER", "url": "u/credentials"},
        {"identifier": "locations", "role": "SENDER", "url": "u/locations"},
        {"identifier": "chargingprofiles", "role": "RECEIVER", "url": "u/cp"},
        {"identifier": "hubclientinfo", "role": "RECEIVER", "url": "u/hci"},
    ]
    assert versions.endpoints(listed, "2.1.1") == [
        {"identifier": "credentials", "url": "u/credentials"},
        {"identifier": "locations", "url": "u/locations"},
    ]
    assert versions.endpoints(listed, "2.2.1") is listed
    assert v211.endpoint_role("tokens") == "SENDER"
    assert {v211.endpoint_role(m) for m in ("locations", "sessions", "cdrs", "commands")} == {
        "RECEIVER"
    }


def test_token_out() -> None:
    stored = {
        "country_code": "PT",
        "party_id": "EMS",
        "uid": "U1",
        "type": "APP_USER",
        "contract_id": "C1",
        "issuer": "I",
        "valid": True,
        "whitelist": "NEVER",
        "group_id": "G",
        "energy_contract": {"supplier_name": "S"},
        "last_updated": T,
    }
    assert v211.token_out(stored) == {
        "uid": "U1",
        "type": "OTHER",
        "auth_id": "C1",
        "issuer": "I",
        "valid": True,
        "whitelist": "NEVER",
        "last_updated": T,
    }


# ---------------------------------------------------------------------------- incoming


def test_token_in() -> None:
    out = v211.token_in(TOKEN, "pt", "ems")
    assert out == {
        "country_code": "PT",
        "party_id": "EMS",
        "uid": "ABC123",
        "type": "RFID",
        "contract_id": "PT-EMS-C-1",
        "visual_number": "0001",
        "issuer": "eMSP",
        "valid": True,
        "whitelist": "ALLOWED",
        "language": "pt",
        "last_updated": "2026-01-01T00:00:00Z",
    }
    # a 2.2-style party that repeats the URL's is taken
    assert v211.token_in({**TOKEN, "country_code": "PT", "party_id": "EMS"}, "PT", "EMS")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TOKEN, "auth_id": 5}, "auth_id"),
        ({k: v for k, v in TOKEN.items() if k != "auth_id"}, "auth_id"),
        ({k: v for k, v in TOKEN.items() if k != "issuer"}, "issuer"),
        ({**TOKEN, "uid": "X" * 37}, "uid"),
        ({**TOKEN, "auth_id": "X" * 37}, "auth_id"),
        ({**TOKEN, "uid": ""}, "uid"),
        ({**TOKEN, "uid": "caf\u00e9"}, "uid"),
        ({**TOKEN, "valid": "yes"}, "valid"),
        ({**TOKEN, "type": "APP_USER"}, "type"),
        ({**TOKEN, "whitelist": "SOMETIMES"}, "whitelist"),
        ({**TOKEN, "contract_id": "C"}, "contract_id"),
        ({**TOKEN, "language": "PT"}, "language"),
        ({**TOKEN, "last_updated": "tomorrow"}, "last_updated"),
        ({**TOKEN, "last_updated": "9" * 5000}, "last_updated"),
        ({**TOKEN, "party_id": "OTH"}, "party_id"),
        ({**TOKEN, "country_code": "ES"}, "country_code"),
        ([TOKEN], "object"),
        (None, "object"),
    ],
)
def test_hostile_tokens_are_2001_naming_the_field(body: Any, field: str) -> None:
    refused(lambda: v211.token_in(body, "PT", "EMS"), field)


def test_token_patch_in() -> None:
    changes = v211.token_patch_in(
        {"auth_id": "C2", "valid": False, "last_updated": "2026-02-01T00:00:00Z"}, "PT", "EMS"
    )
    assert changes == {"contract_id": "C2", "valid": False, "last_updated": "2026-02-01T00:00:00Z"}
    refused(lambda: v211.token_patch_in({"valid": False}, "PT", "EMS"), "last_updated")
    refused(lambda: v211.token_patch_in({"valid": 0, "last_updated": T}, "PT", "EMS"), "valid")
    refused(
        lambda: v211.token_patch_in({"party_id": "OTH", "last_updated": T}, "PT", "EMS"),
        "party_id",
    )


START = {
    "response_url": "http://127.0.0.1:9/ocpi/emsp/2.1.1/commands/1",
    "token": TOKEN,
    "location_id": "LOC1",
    "evse_uid": "E1",
}


def test_commands_in() -> None:
    out = v211.command_in("START_SESSION", START, "PT", "EMS")
    assert out["token"]["contract_id"] == "PT-EMS-C-1" and out["token"]["party_id"] == "EMS"
    assert out["location_id"] == "LOC1" and out["evse_uid"] == "E1"
    reserve = {**START, "expiry_date": T, "reservation_id": 12}
    out = v211.command_in("RESERVE_NOW", reserve, "PT", "EMS")
    assert out["reservation_id"] == "12" and out["token"]["uid"] == "ABC123"
    stop = {"response_url": START["response_url"], "session_id": "77"}
    assert v211.command_in("STOP_SESSION", stop, "PT", "EMS") is stop
    with pytest.raises(OcpiError) as e:
        v211.command_in("CANCEL_RESERVATION", {"reservation_id": "1"}, "PT", "EMS")
    assert e.value.http_status == 404


@pytest.mark.parametrize(
    ("command", "body", "field"),
    [
        ("START_SESSION", {**START, "token": "ABC123"}, "token"),
        ("START_SESSION", {**START, "token": {**TOKEN, "auth_id": None}}, "token: "),
        ("START_SESSION", {**START, "token": {**TOKEN, "party_id": "OTH"}}, "party_id"),
        ("START_SESSION", {**START, "location_id": "L" * 40}, "location_id"),
        ("START_SESSION", {**START, "response_url": "ftp://x"}, "response_url"),
        ("START_SESSION", {**START, "authorization_reference": "R"}, "authorization_reference"),
        ("START_SESSION", [START], "object"),
        ("RESERVE_NOW", {**START, "expiry_date": T, "reservation_id": "12"}, "reservation_id"),
        ("RESERVE_NOW", {**START, "expiry_date": T, "reservation_id": True}, "reservation_id"),
        ("RESERVE_NOW", {**START, "expiry_date": T, "reservation_id": 2**40}, "reservation_id"),
        ("RESERVE_NOW", {**START, "reservation_id": 1}, "expiry_date"),
    ],
)
def test_hostile_commands_are_2001(command: str, body: Any, field: str) -> None:
    refused(lambda: v211.command_in(command, body, "PT", "EMS"), field)


def test_command_answers_in_211_shape() -> None:
    assert v211.command_response_out({"result": "ACCEPTED", "timeout": 30}) == {
        "result": "ACCEPTED"
    }
    message = [{"language": "en", "text": "x"}]
    answer = v211.command_response_out({"result": "UNKNOWN_SESSION", "message": message})
    assert answer == {"result": "UNKNOWN_SESSION"}
    results = {
        "ACCEPTED": "ACCEPTED",
        "TIMEOUT": "TIMEOUT",
        "NOT_SUPPORTED": "NOT_SUPPORTED",
        "REJECTED": "REJECTED",
        "EVSE_OCCUPIED": "REJECTED",
        "EVSE_INOPERATIVE": "REJECTED",
        "FAILED": "REJECTED",
        "CANCELED_RESERVATION": "REJECTED",
        "UNKNOWN_RESERVATION": "REJECTED",
    }
    for ours, theirs in results.items():
        got = v211.command_result_out({"result": ours, "message": message})
        assert got == {"result": theirs}, ours


CREDS = {
    "token": "tok-B",
    "url": "http://127.0.0.1:9/ocpi/versions",
    "business_details": {"name": "Old eMSP", "website": "https://example.org"},
    "party_id": "EMS",
    "country_code": "PT",
}


def test_credentials_both_ways() -> None:
    ours = v211.credentials_in(CREDS, "EMSP")
    assert ours == {
        "token": "tok-B",
        "url": CREDS["url"],
        "roles": [
            {
                "role": "EMSP",
                "business_details": CREDS["business_details"],
                "party_id": "EMS",
                "country_code": "PT",
            }
        ],
    }
    cpo = {
        "token": "tok-C",
        "url": "http://cpo/ocpi/versions",
        "roles": [
            {
                "role": "CPO",
                "business_details": {"name": "CPO"},
                "party_id": "CPO",
                "country_code": "PT",
            }
        ],
    }
    assert versions.credentials(cpo, "2.1.1") == {
        "token": "tok-C",
        "url": "http://cpo/ocpi/versions",
        "business_details": {"name": "CPO"},
        "party_id": "CPO",
        "country_code": "PT",
    }
    assert versions.credentials(cpo, "2.2.1") is cpo


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CREDS, "roles": []}, "roles"),  # 2.2.1's shape
        ({k: v for k, v in CREDS.items() if k != "party_id"}, "party_id"),
        ({**CREDS, "party_id": "TOOLONG"}, "party_id"),
        ({**CREDS, "token": "t" * 65}, "token"),
        ({**CREDS, "token": "has space"}, "token"),
        ({**CREDS, "url": 5}, "url"),
        ({**CREDS, "business_details": "x"}, "business_details"),
        ({**CREDS, "business_details": {"name": ""}}, "business_details.name"),
        ("credentials", "object"),
    ],
)
def test_hostile_credentials_are_2001(body: Any, field: str) -> None:
    refused(lambda: v211.credentials_in(body, "EMSP"), field)


def _junk(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False, 0, -1, 2**70, 1.5, float("inf")])
    if choice == 2:
        return "".join(rng.choice("aZ9-_ \u00e9\x00") for _ in range(rng.randrange(0, 80)))
    if choice == 3:
        return T
    if choice == 4:
        return rng.choice(["RFID", "OTHER", "ALLOWED", "PT", "EMS", "http://x/y"])
    if choice == 5:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = [*TOKEN, *START, *CREDS, "reservation_id", "expiry_date", "roles"]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(6))}


def test_random_hostile_bodies_only_ever_give_ocpi_errors() -> None:
    rng = random.Random(211)
    for _ in range(600):
        body = _junk(rng)
        if isinstance(body, dict) and rng.random() < 0.5:
            body = {**rng.choice([TOKEN, START, CREDS]), **body}
        calls: list[tuple[Any, tuple[Any, ...]]] = [
            (v211.token_in, (body, "PT", "EMS")),
            (v211.token_patch_in, (body, "PT", "EMS")),
            (v211.command_in, ("START_SESSION", body, "PT", "EMS")),
            (v211.command_in, ("RESERVE_NOW", body, "PT", "EMS")),
            (v211.credentials_in, (body, "EMSP")),
        ]
        for fn, args in calls:
            try:
                fn(*args)
            except OcpiError as e:
                assert e.status_code == INVALID_PARAMETERS and len(e.message) < 5000
