"""The price at the station (issue 17): the OCPP 1.6 pricing extension's DataTransfer
messages (vendor id org.openchargealliance.costmsg). First the pure builders and the
display text of a price, then end to end: the real central system sends them through the
operator API's command route to simulated stations over real websockets."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adhoc.costmsg import (
    MAX_TEXT,
    SUPPORT_KEY,
    VENDOR_ID,
    PriceLine,
    final_cost,
    price_text,
    running_cost,
    set_user_price,
)
from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.test_push_faults import eventually

D = Decimal
AT = datetime(2027, 1, 4, 12, 30, 5, 250000, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------- builders


def test_set_user_price_exact_payload() -> None:
    assert VENDOR_ID == "org.openchargealliance.costmsg"
    payload = set_user_price("04ABBE2A266581", "0,35 EUR/kWh, IVA incl.")
    assert payload == {
        "vendorId": "org.openchargealliance.costmsg",
        "messageId": "SetUserPrice",
        "data": '{"idToken":"04ABBE2A266581","priceText":"0,35 EUR/kWh, IVA incl."}',
    }
    assert isinstance(payload["data"], str)  # OCPP 1.6: data is a string (JSON text)


def test_running_cost_exact_payload_decimals_and_utc_timestamp() -> None:
    lisbon_summer = timezone(timedelta(hours=1))
    payload = running_cost(
        12345,
        AT.astimezone(lisbon_summer),
        1234000,
        D("1.2300"),
        kwh_price=D("0.123"),
        hour_price=D("0"),
        flat_fee=D("1E+1"),
        price_text="0,12 EUR/kWh",
    )
    assert payload["vendorId"] == VENDOR_ID and payload["messageId"] == "RunningCost"
    assert payload["data"] == (
        '{"transactionId":12345,"timestamp":"2027-01-04T12:30:05Z","meterValue":1234000,'
        '"cost":1.23,"state":"Charging","chargingPrice":{"kWhPrice":0.123,"hourPrice":0.00,'
        '"flatFee":10.00},"priceText":"0,12 EUR/kWh"}'
    )
    data = json.loads(payload["data"], parse_float=Decimal)
    assert data["cost"] == D("1.23") and data["chargingPrice"]["kWhPrice"] == D("0.123")


def test_running_cost_minimal_idle_and_prices_left_out() -> None:
    payload = running_cost(7, AT, 0, D(0), state="Idle")
    assert json.loads(payload["data"]) == {
        "transactionId": 7,
        "timestamp": "2027-01-04T12:30:05Z",
        "meterValue": 0,
        "cost": 0,
        "state": "Idle",
        "chargingPrice": {},
    }
    assert '"cost":0.00' in payload["data"]  # a decimal keeps its point


def test_final_cost_exact_payload_with_and_without_qr_code() -> None:
    payload = final_cost(98765, D("3.31"), "Total 3,31 EUR", "https://cpo.example.pt/r/13546")
    assert payload == {
        "vendorId": VENDOR_ID,
        "messageId": "FinalCost",
        "data": '{"transactionId":98765,"cost":3.31,"priceText":"Total 3,31 EUR",'
        '"qrCodeText":"https://cpo.example.pt/r/13546"}',
    }
    plain = final_cost(1, D("0.1") + D("0.2"), "Total: 0,30 EUR\nObrigado")
    assert (
        plain["data"] == '{"transactionId":1,"cost":0.30,"priceText":"Total: 0,30 EUR\\nObrigado"}'
    )
    assert json.loads(plain["data"])["priceText"] == "Total: 0,30 EUR\nObrigado"


def test_amounts_have_at_most_4_decimals_rounded_half_up_never_floats() -> None:
    def cost_text(value: Any) -> str:
        data = final_cost(1, value, "x")["data"]
        return data.split('"cost":')[1].split(",")[0]

    assert cost_text(D("1.23455")) == "1.2346"
    assert cost_text(D("1.23445")) == "1.2345"
    assert cost_text(D("0.00004")) == "0.00"
    assert cost_text(D("1234.5")) == "1234.50"
    assert cost_text(5) == "5.00"  # an int is an amount too
    assert cost_text(D("999999.99994")) == "999999.9999"
    # non-ASCII text stays readable in the JSON text
    assert "€" in set_user_price("T", "0,35 €/kWh")["data"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: final_cost(1, 1.5, "x"), "cost must be a Decimal"),  # type: ignore[arg-type]
        (lambda: final_cost(1, True, "x"), "cost must be a Decimal"),  # type: ignore[arg-type]
        (lambda: final_cost(1, D("NaN"), "x"), "cost must be a finite number"),
        (lambda: final_cost(1, D("Infinity"), "x"), "cost must be a finite number"),
        (lambda: final_cost(1, D("-0.01"), "x"), "cost must not be negative"),
        (lambda: final_cost(1, D(10**6), "x"), "cost must be below"),
        (lambda: final_cost(True, D(1), "x"), "transaction_id must be an int"),  # type: ignore[arg-type]
        (lambda: final_cost("12", D(1), "x"), "transaction_id must be an int"),  # type: ignore[arg-type]
        (lambda: final_cost(2**31, D(1), "x"), "transaction_id must be between"),
        (lambda: final_cost(1, D(1), ""), "price_text must not be empty"),
        (lambda: final_cost(1, D(1), "  \n"), "price_text must not be empty"),
        (lambda: final_cost(1, D(1), "x" * (MAX_TEXT + 1)), "at most 255"),
        (lambda: final_cost(1, D(1), "a\x1bb"), "control character"),
        (lambda: final_cost(1, D(1), "price \u202e"), "control character"),  # bidi override
        (lambda: final_cost(1, D(1), "bad \ud800"), "control character"),  # lone surrogate
        (lambda: final_cost(1, D(1), "x", "ftp://x"), "http(s) URL"),
        (lambda: final_cost(1, D(1), "x", "https://a b"), "http(s) URL"),
        (lambda: final_cost(1, D(1), "x", "https://x/\n"), "control character"),
        (lambda: final_cost(1, D(1), "x", "https://" + "x" * 600), "at most 512"),
        (lambda: set_user_price("X" * 21, "x"), "id_tag is 21 characters long; at most 20"),
        (lambda: set_user_price("", "x"), "id_tag must not be empty"),
        (lambda: set_user_price("A\nB", "x"), "control character"),
        (lambda: set_user_price(None, "x"), "id_tag must be a str"),  # type: ignore[arg-type]
        (lambda: running_cost(1, AT.replace(tzinfo=None), 0, D(1)), "timezone-aware"),
        (lambda: running_cost(1, "2027-01-04", 0, D(1)), "at must be a datetime"),  # type: ignore[arg-type]
        (lambda: running_cost(1, AT, -1, D(1)), "meter_wh must be between 0"),
        (lambda: running_cost(1, AT, 1.5, D(1)), "meter_wh must be an int"),  # type: ignore[arg-type]
        (lambda: running_cost(1, AT, 0, D(1), state="Parked"), "state must be one of"),
        (lambda: running_cost(1, AT, 0, D(1), kwh_price=D(-1)), "kwh_price must not be"),
        (lambda: running_cost(1, AT, 0, D(1), hour_price=0.5), "hour_price must be a Decimal"),  # type: ignore[arg-type]
        (lambda: running_cost(1, AT, 0, D(1), flat_fee=D("sNaN")), "flat_fee must be a finite"),
        (lambda: running_cost(1, AT, 0, D(1), price_text=""), "price_text must not be empty"),
    ],
)
def test_builders_refuse_bad_input_with_a_clear_message(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# -------------------------------------------------------------------------- price text

ENERGY = PriceLine("ENERGY", D("0.2846"), D(23))


def test_price_text_portuguese_and_english_incl_vat() -> None:
    lines = [
        {"kind": "TIME", "price_excl_vat": D("2.4390"), "vat_percent": D(23)},
        ENERGY,
    ]
    # 0.2846 x 1.23 = 0.350058 -> 0.3501; 2.4390 x 1.23 = 2.99997/h (not exact per minute)
    # -> 3.0000 shown 3,00
    assert price_text(lines, "pt") == "0,3501 EUR/kWh + 3,00 EUR/h, IVA incl."
    assert price_text(lines, "en") == "EUR 0.3501/kWh + EUR 3.00/h incl. VAT"
    exact = [PriceLine("ENERGY", D("0.35"), D(0)), PriceLine("TIME", D(3), D(0))]
    assert price_text(exact, "pt") == "0,35 EUR/kWh + 0,05 EUR/min, IVA incl."
    assert price_text(exact, "EN") == "EUR 0.35/kWh + EUR 0.05/min incl. VAT"


def test_price_text_every_kind_in_order_free_parts_left_out() -> None:
    lines = [
        PriceLine("FLAT", D(1), D(23)),
        PriceLine("PARKING_TIME", D(6), D(0)),
        PriceLine("TIME", D(0), D(23)),  # free: not shown
        PriceLine("ENERGY", D("0.30"), D(23)),
    ]
    assert price_text(lines, "pt") == (
        "0,369 EUR/kWh + 0,10 EUR/min estacionamento + 1,23 EUR/sessão, IVA incl."
    )
    assert price_text(lines, "en") == (
        "EUR 0.369/kWh + EUR 0.10/min parking + EUR 1.23/session incl. VAT"
    )
    assert price_text([], "pt") == "Gratuito"
    assert price_text([PriceLine("ENERGY", D(0))], "en") == "Free"


def test_price_text_without_a_known_vat_says_so_and_shows_amounts_excl_vat() -> None:
    lines = [ENERGY, PriceLine("TIME", D("1.5"))]  # TIME's VAT unknown
    assert price_text(lines, "pt") == "0,2846 EUR/kWh + 0,025 EUR/min, IVA não incl."
    assert price_text(lines, "en") == "EUR 0.2846/kWh + EUR 0.025/min excl. VAT"
    assert price_text([ENERGY], "en", currency="CHF") == "CHF 0.3501/kWh incl. VAT"


def test_price_text_is_bounded_and_never_cut() -> None:
    big = [
        PriceLine("ENERGY", D("999999.9999"), D(23)),
        PriceLine("TIME", D("999999.9999"), D(23)),
        PriceLine("PARKING_TIME", D("999999.9999"), D(23)),
        PriceLine("FLAT", D("999999.9999"), D(23)),
    ]
    assert len(price_text(big, "pt")) <= MAX_TEXT  # the largest prices fit the default
    with pytest.raises(ValueError, match="at most 40"):
        price_text(big, "pt", max_length=40)
    assert price_text([ENERGY], "en", max_length=24) == "EUR 0.3501/kWh incl. VAT"


@pytest.mark.parametrize(
    ("lines", "language", "kw", "message"),
    [
        ([ENERGY], "fr", {}, "language must be one of"),
        ([ENERGY], None, {}, "language must be one of"),
        ([ENERGY], "pt", {"currency": "eur"}, "ISO 4217"),
        ([ENERGY], "pt", {"currency": "EURO"}, "ISO 4217"),
        ([ENERGY], "pt", {"max_length": 0}, "max_length must be a positive int"),
        ("ENERGY", "pt", {}, "lines must be a list"),
        ([ENERGY, ENERGY], "pt", {}, r"one component per kind.*ENERGY"),
        ([PriceLine("POWER", D(1))], "pt", {}, r"lines\[0\].kind must be one of"),
        ([{"kind": "ENERGY"}], "pt", {}, "needs kind and price_excl_vat"),
        ([{"kind": "ENERGY", "price_excl_vat": D(1), "vat": 23}], "pt", {}, "unknown fields"),
        ([{"kind": "ENERGY", "price_excl_vat": 0.35}], "pt", {}, "price_excl_vat must be a"),
        ([PriceLine("ENERGY", D(-1))], "pt", {}, "must not be negative"),
        ([PriceLine("ENERGY", D(1), D(101))], "pt", {}, "vat_percent must be at most 100"),
        ([PriceLine("ENERGY", D(1), D(-1))], "pt", {}, "vat_percent must not be negative"),
        ([42], "pt", {}, r"lines\[0\] must be a PriceLine or a mapping"),
    ],
)
def test_price_text_refuses_bad_input(lines: Any, language: Any, kw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        price_text(lines, language, **kw)


# ------------------------------------------------------------------- end to end (sim)

TAG = "TAG-PRICE"


async def send(csms: Running, station_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """DataTransfer through the operator API's command route; the station's answer."""
    status, body = await csms.api.post(
        f"/api/v1/stations/{station_id}/commands/DataTransfer", payload
    )
    assert status == 200, body
    return body["response"]


async def online(csms: Running, station_id: str, **kw: Any) -> Station:
    await csms.define_station(station_id, 1)
    st = Station(
        station_id,
        csms.ocpp_url,
        1,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
        **kw,
    )
    await st.connect()
    assert (await st.boot_and_report())["status"] == "Accepted"
    return st


@pytest.fixture
async def stations(csms: Running) -> AsyncIterator[tuple[Station, Station]]:
    await csms.put_tag(TAG)
    with_display = await online(csms, "PRICE-1", cost_display=True)
    without = await online(csms, "PLAIN-1")
    try:
        yield with_display, without
    finally:
        await with_display.disconnect()
        await without.disconnect()


async def test_station_shows_price_running_cost_and_final_cost(
    csms: Running, stations: tuple[Station, Station]
) -> None:
    st, _ = stations
    status, body = await csms.api.post(
        "/api/v1/stations/PRICE-1/commands/GetConfiguration", {"key": [SUPPORT_KEY]}
    )
    assert status == 200, body
    assert body["response"]["configurationKey"] == [
        {"key": SUPPORT_KEY, "readonly": True, "value": "true"}
    ]
    assert st.display is None and st.cost_messages == []

    text = price_text([PriceLine("ENERGY", D("0.2846"), D(23))], "pt")
    assert await send(csms, "PRICE-1", set_user_price(TAG, text)) == {"status": "Accepted"}
    assert st.display == "Price: 0,3501 EUR/kWh, IVA incl."

    answer = await st.start_charging(1, TAG)
    assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"
    tx = int(answer["transactionId"])
    at = datetime.now(UTC)
    meter = int(st.connectors[1].meter_wh)
    running = running_cost(tx, at, meter, D("1.23"), kwh_price=D("0.3501"), price_text=text)
    assert await send(csms, "PRICE-1", running) == {"status": "Accepted"}
    assert st.display == "Cost: 1.23 EUR | 0,3501 EUR/kWh, IVA incl."
    idle = running_cost(tx, at, meter, D("1.5"), state="Idle")
    assert await send(csms, "PRICE-1", idle) == {"status": "Accepted"}
    assert st.display == "Cost: 1.50 EUR (idle)"

    await st.stop_charging(1)
    url = "https://cpo.example.pt/r/PT-2027-000001"
    final = final_cost(tx, D("3.31"), "Total 3,31 EUR, 9,45 kWh", url)
    assert await send(csms, "PRICE-1", final) == {"status": "Accepted"}
    assert st.display == f"Total: 3.31 EUR | Total 3,31 EUR, 9,45 kWh | QR: {url}"

    assert [m.message_id for m in st.cost_messages] == [
        "SetUserPrice",
        "RunningCost",
        "RunningCost",
        "FinalCost",
    ]
    first, second, _, last = st.cost_messages
    assert first.data == {"idToken": TAG, "priceText": text}
    assert second.data["transactionId"] == tx and second.data["cost"] == D("1.23")
    assert second.data["timestamp"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert second.data["chargingPrice"] == {"kWhPrice": D("0.3501")}
    assert last.data["qrCodeText"] == url
    assert all(m.received_at.tzinfo is not None for m in st.cost_messages)
    assert first.received_at <= last.received_at <= datetime.now(UTC)


async def test_unknown_message_ids_and_bad_data_change_nothing(
    csms: Running, stations: tuple[Station, Station]
) -> None:
    st, _ = stations
    shown = set_user_price(TAG, "0,35 EUR/kWh")
    assert (await send(csms, "PRICE-1", shown))["status"] == "Accepted"
    kept = list(st.cost_messages)

    def costmsg(message_id: str | None, data: Any = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"vendorId": VENDOR_ID}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data if isinstance(data, str) else json.dumps(data)
        return payload

    good_final = {"transactionId": 1, "cost": 1.0, "priceText": "x"}
    for payload, expected in [
        (costmsg("ConnectorUnplugged", {"transactionId": 1}), "UnknownMessageId"),
        (costmsg(None, good_final), "UnknownMessageId"),
        (costmsg("finalcost", good_final), "UnknownMessageId"),
        (costmsg("FinalCost"), "Rejected"),  # no data
        (costmsg("FinalCost", "{not json"), "Rejected"),
        (costmsg("FinalCost", "[1, 2]"), "Rejected"),
        (costmsg("FinalCost", '{"transactionId": 1, "cost": NaN, "priceText": "x"}'), "Rejected"),
        (costmsg("FinalCost", "[" * 100_000), "Rejected"),  # too deep for the parser
        (costmsg("FinalCost", {**good_final, "cost": "1.00"}), "Rejected"),
        (costmsg("FinalCost", {**good_final, "cost": -1}), "Rejected"),
        (costmsg("FinalCost", {**good_final, "cost": 1e300}), "Rejected"),
        (costmsg("FinalCost", {**good_final, "transactionId": True}), "Rejected"),
        (costmsg("FinalCost", {"transactionId": 1, "cost": 1}), "Rejected"),
        (costmsg("FinalCost", {**good_final, "qrCodeText": 5}), "Rejected"),
        (costmsg("SetUserPrice", {"idToken": TAG}), "Rejected"),
        (costmsg("SetUserPrice", {"idToken": 1, "priceText": "x"}), "Rejected"),
        (costmsg("RunningCost", {"transactionId": 1}), "Rejected"),
    ]:
        assert await send(csms, "PRICE-1", payload) == {"status": expected}, payload
    running = json.loads(running_cost(1, AT, 5, D(1), kwh_price=D("0.3"))["data"])
    for field, value in [
        ("timestamp", "yesterday"),
        ("meterValue", 1.5),
        ("meterValue", -1),
        ("state", "Parked"),
        ("chargingPrice", 0.3),
    ]:
        bad = costmsg("RunningCost", {**running, field: value})
        assert await send(csms, "PRICE-1", bad) == {"status": "Rejected"}, (field, value)
    bad_price = costmsg("RunningCost", {**running, "chargingPrice": {"kWhPrice": "0.3"}})
    assert await send(csms, "PRICE-1", bad_price) == {"status": "Rejected"}
    assert st.cost_messages == kept and st.display == "Price: 0,35 EUR/kWh"
    # other vendors are answered as before (Behaviour.data_transfer)
    assert await send(csms, "PRICE-1", {"vendorId": "com.example"}) == {"status": "UnknownVendorId"}
    assert st.stats.errors == 0  # nothing went wrong inside the simulator


async def test_a_station_without_the_extension_answers_unknown_vendor_id(
    csms: Running, stations: tuple[Station, Station]
) -> None:
    _, plain = stations
    answer = await send(csms, "PLAIN-1", set_user_price(TAG, "0,35 EUR/kWh"))
    assert answer == {"status": "UnknownVendorId"}
    assert await send(csms, "PLAIN-1", final_cost(1, D(1), "x")) == {"status": "UnknownVendorId"}
    assert plain.display is None and plain.cost_messages == []
    status, body = await csms.api.post(
        "/api/v1/stations/PLAIN-1/commands/GetConfiguration", {"key": [SUPPORT_KEY]}
    )
    assert status == 200 and body["response"]["unknownKey"] == [SUPPORT_KEY]


async def test_the_station_keeps_the_last_100_messages(
    csms: Running, stations: tuple[Station, Station]
) -> None:
    st, _ = stations
    for n in range(105):
        payload = running_cost(7, AT, n, D(n))
        assert await send(csms, "PRICE-1", payload) == {"status": "Accepted"}
    assert len(st.cost_messages) == 100
    assert [m.data["meterValue"] for m in st.cost_messages] == list(range(5, 105))
    assert st.display == "Cost: 104.00 EUR"


async def test_cli_prints_what_the_display_shows(tmp_path: Path) -> None:
    system, session, csms = await start_system(tmp_path, ocpp__accept_unknown_stations="true")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "charger_sim",
        "--url",
        csms.ocpp_url,
        "--prefix",
        "CLI-",
        "--cost-display",
        "--duration",
        "30",
        "--json",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def connected() -> bool:
            status, body = await csms.api.get("/api/v1/stations/CLI-0001")
            return status == 200 and body["connected"] and body["boot_status"] == "Accepted"

        await eventually(connected, timeout=15)
        answer = await send(csms, "CLI-0001", set_user_price("T1", "0,35 EUR/kWh"))
        assert answer == {"status": "Accepted"}
        proc.send_signal(2)  # SIGINT: the run stops, the summary is printed
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await session.close()
        await system.stop()
    assert "[display CLI-0001] Price: 0,35 EUR/kWh" in err.decode()
    summary = json.loads(out)
    assert summary["displays"] == {"CLI-0001": "Price: 0,35 EUR/kWh"}
