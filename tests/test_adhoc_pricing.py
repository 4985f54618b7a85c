"""The OCPI bridge's side of ad hoc charging (ocpi_bridge.prices): which transactions are ad
hoc, their OCPI token (AD_HOC_USER, ours), the ad hoc tariff of a connector and the CDRs it
prices, the offer a driver is shown, the bill of a running or stopped transaction (equal to
its CDR's total_cost), money in cents, and who receives ad hoc Sessions and CDRs.

A real server on loopback, the simulator over real websockets; a transaction is made ad hoc
the way the adhoc extension does it: a csms token source answering owner "adhoc". The
amounts are worked out by hand in the comments."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.ports import IdTagInfo
from ocpi_bridge.bridge import Bridge
from ocpi_bridge.delivery import Recipient, fan_out
from ocpi_bridge.extension import OcpiExtension
from ocpi_bridge.prices import (
    AD_HOC_OWNER,
    Bill,
    Pricing,
    applicable_tariffs,
    is_ad_hoc,
    money_minor,
)
from ocpi_bridge.pricing import TariffDef
from ocpi_bridge.rules import SessionPush
from tests.conftest import Running, start_system
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing
from tests.test_exports import fetch, rows_of
from tests.test_web import VIEWER, WebClient, web_overrides

AD_HOC_TARIFF = {
    "currency": "EUR",
    "type": "AD_HOC_PAYMENT",
    "elements": [
        {
            "price_components": [
                {"type": "FLAT", "price": 1.0, "vat": 23, "step_size": 1},
                {"type": "ENERGY", "price": 0.4, "vat": 23, "step_size": 1},
                {"type": "TIME", "price": 1.2, "vat": 23, "step_size": 60},
            ]
        },
        {
            "price_components": [{"type": "PARKING_TIME", "price": 3.0, "step_size": 300}],
            "restrictions": {"start_time": "08:00", "end_time": "20:00", "min_duration": 3600},
        },
    ],
    "max_price": {"excl_vat": 50, "incl_vat": 61.5},
}
REGULAR_TARIFF = {
    "currency": "EUR",
    "type": "REGULAR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 23, "step_size": 1}]}
    ],
}
# 9 kWh in one hour, charging all along:
# ad hoc: FLAT 1.00 + ENERGY 9 x 0.40 = 3.60 + TIME 1 h x 1.20 = 1.20 -> 5.80;
#         incl. 23 %: 1.23 + 4.428 + 1.476 = 7.134 (PARKING_TIME: none, 0)
# regular: 9 x 0.25 = 2.25; incl. 2.7675
AD_HOC_TOTAL = {"excl_vat": 5.8, "incl_vat": 7.134}
REGULAR_TOTAL = {"excl_vat": 2.25, "incl_vat": 2.7675}


class AdHocTags:
    """A csms token source as the adhoc extension's: tags "AH-..." are paid ones."""

    name = "adhoc-test"

    def __init__(self, owner: str = AD_HOC_OWNER) -> None:
        self.owner = owner

    async def lookup(self, id_tag: str, station_id: str) -> IdTagInfo | None:
        if id_tag.startswith("AH-"):
            return IdTagInfo("Accepted", source=self.name, owner=self.owner)
        if id_tag.startswith("TERM-"):  # a station's own payment terminal
            return IdTagInfo("Accepted", source=self.name, owner="adhoc:terminal")
        return None


@dataclass
class World:
    cpo: Running
    bridge: Bridge
    pricing: Pricing
    station: Station
    start: datetime  # an hour ago, to the second

    def at(self, minutes: float) -> str:
        return (self.start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def bridge_of(cpo: Running) -> Bridge:
    [ext] = [e for e in cpo.system.extensions if isinstance(e, OcpiExtension)]
    assert ext.bridge is not None
    return ext.bridge


async def define(cpo: Running, station_id: str, tariffs: dict[int, list[str]]) -> None:
    """A station whose connector n references the tariffs ``tariffs[n]``."""
    await cpo.define_station(station_id, 2)
    body = (await cpo.api.get(f"/api/v1/stations/{station_id}"))[1]
    definition = {"location": body["location"], "evses": body["evses"]}
    for evse in definition["evses"]:
        evse["connectors"][0]["tariff_ids"] = tariffs.get(evse["connector_id"], [])
    status, answer = await cpo.api.put(f"/api/v1/stations/{station_id}", definition)
    assert status == 200, answer


async def setup_world(cpo: Running) -> World:
    cpo.system.port.add_token_source(AdHocTags())
    for tariff_id, body in (("T-REG", REGULAR_TARIFF), ("T-ADHOC", AD_HOC_TARIFF)):
        status, answer = await cpo.api.put(f"/api/v1/tariffs/{tariff_id}", body)
        assert status == 201, answer
    # connector 1 lists the ad hoc tariff first: a regular charge must skip it
    await define(cpo, "AH1", {1: ["T-ADHOC", "T-REG"], 2: ["T-REG"]})
    await cpo.put_tag("REG1")
    station = Station(
        "AH1",
        cpo.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01),
    )
    await station.connect()
    await station.boot_and_report()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    bridge = bridge_of(cpo)
    return World(cpo, bridge, Pricing(cpo.system.port), station, start)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    system, session, cpo = await start_system(tmp_path, ocpi={}, **web_overrides())
    w: World | None = None
    try:
        w = await setup_world(cpo)
        yield w
    finally:
        if w is not None:
            await w.station.disconnect()
        await session.close()
        await system.stop()


async def begin(w: World, connector: int, tag: str) -> int:
    answer = await w.station.start_transaction(connector, tag, meter_start=0, timestamp=w.at(0))
    assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
    tx = int(answer["transactionId"])
    for minute, wh in ((20, 3000), (40, 6000)):
        await w.station.meter_values(
            connector, tx, energy_wh=wh, power_w=9000, timestamp=w.at(minute)
        )
    return tx


async def finish(w: World, tx: int) -> None:
    await w.station.stop_transaction(tx, meter_stop=9000, reason="Local", timestamp=w.at(60))


async def charge(w: World, connector: int, tag: str) -> int:
    """One finished hour of charging, 9 kWh; the transaction id."""
    tx = await begin(w, connector, tag)
    await finish(w, tx)
    return tx


async def cdr_of(w: World, tx: int) -> dict[str, Any]:
    cdr = await w.bridge.sessions.make_cdr(tx, w.bridge.clock.now())
    assert cdr is not None
    return cdr


def row(page: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr[^>]*{attribute}="{re.escape(value)}".*?</tr>', page, re.S)
    assert found, f"no row {attribute}={value}"
    return found.group(0)


# ---------------------------------------------------------------------------- pure parts


def test_is_ad_hoc() -> None:
    assert is_ad_hoc("adhoc") and is_ad_hoc("adhoc:terminal") and is_ad_hoc("adhoc:")
    for owner in (None, "", "PT/EMS", "ADHOC", "adhocx", "adhoc/x", "xadhoc", " adhoc"):
        assert not is_ad_hoc(owner), owner


def test_money_minor_rounds_half_up_to_the_minor_unit() -> None:
    assert money_minor(Decimal("5.80"), "EUR") == 580
    assert money_minor(Decimal("7.134"), "EUR") == 713
    assert money_minor(Decimal("1.005"), "EUR") == 101  # half-up, not half-even (100)
    assert money_minor(Decimal("2.0049"), "EUR") == 200
    assert money_minor(Decimal("0.0050"), "EUR") == 1
    assert money_minor(Decimal("-1.005"), "EUR") == -101  # away from zero
    assert money_minor(Decimal(0), "EUR") == 0
    assert money_minor(3, "EUR") == 300
    assert money_minor(Decimal("1234.5"), "JPY") == 1235  # no minor unit
    assert money_minor(Decimal("1.0005"), "KWD") == 1001  # three decimals
    with pytest.raises(TypeError, match="Decimal"):
        money_minor(5.8, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        money_minor(True, "EUR")  # type: ignore[arg-type]
    for currency in ("eur", "EURO", "", "E1R"):
        with pytest.raises(ValueError, match="ISO 4217"):
            money_minor(Decimal(1), currency)
    for bad in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match="finite"):
            money_minor(Decimal(bad), "EUR")


def _row(tariff_id: str, kind: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": tariff_id, **REGULAR_TARIFF}
    if kind is None:
        del body["type"]
    else:
        body["type"] = kind
    return {"id": tariff_id, "body": body}


def test_applicable_tariffs() -> None:
    rows = [_row("R1", "REGULAR"), _row("A1", "AD_HOC_PAYMENT"), _row("N", None)]
    rows.append(_row("A2", "AD_HOC_PAYMENT"))

    def ids(found: list[dict[str, Any]]) -> list[str]:
        return [r["id"] for r in found]

    assert ids(applicable_tariffs(rows, ad_hoc=True)) == ["A1"]  # the first ad hoc one alone
    assert ids(applicable_tariffs(rows, ad_hoc=False)) == ["R1", "N"]  # the others, in order
    only_ad_hoc = [_row("A1", "AD_HOC_PAYMENT"), _row("A2", "AD_HOC_PAYMENT")]
    assert ids(applicable_tariffs(only_ad_hoc, ad_hoc=False)) == ["A1", "A2"]  # as before
    without = [_row("R1", "REGULAR")]
    assert ids(applicable_tariffs(without, ad_hoc=True)) == ["R1"]  # e.g. a payment terminal
    assert applicable_tariffs([], ad_hoc=True) == []


def test_ad_hoc_sessions_are_pushed_to_hubs_never_to_an_emsp() -> None:
    hub = Recipient(1, frozenset({"sessions", "cdrs"}), is_hub=True)
    emsp = Recipient(2, frozenset({"sessions", "cdrs"}), parties=frozenset({("PT", "EMS")}))
    push = SessionPush(7, "AH1", "start")
    for owner in ("adhoc", "adhoc:terminal"):
        assert hub.may_see(owner) and not emsp.may_see(owner)
        marks = fan_out(push, [hub, emsp], None, owner)  # type: ignore[arg-type]
        assert [m.key.peer_id for m in marks] == [1]  # type: ignore[attr-defined]
    # (an eMSP's own token still reaches it)
    marks = fan_out(push, [hub, emsp], None, "PT/EMS")  # type: ignore[arg-type]
    assert sorted(m.key.peer_id for m in marks) == [1, 2]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- offers


async def test_offer_of_a_connector_with_and_without_an_ad_hoc_tariff(world: World) -> None:
    offer = await world.pricing.ad_hoc_offer("AH1", 1)
    assert offer is not None
    assert (offer.station_id, offer.connector_id) == ("AH1", 1)
    assert (offer.evse_uid, offer.evse_id) == ("LOC-AH1-01", "PT*MOB*EAH1*1")
    loc = offer.location
    assert (loc.id, loc.name, loc.city, loc.postal_code, loc.country, loc.time_zone) == (
        "LOC-AH1",
        "Station AH1",
        "Lisboa",
        "1250-096",
        "PRT",
        "Europe/Lisbon",
    )
    assert loc.address == "Avenida da Liberdade 1"
    assert loc.coordinates.latitude == "38.716670" and loc.coordinates.longitude == "-9.141670"
    c = offer.connector
    assert (c.standard, c.format, c.power_type, c.max_electric_power) == (
        "IEC_62196_T2",
        "SOCKET",
        "AC_3_PHASE",
        22000,
    )
    assert offer.tariff_id == "T-ADHOC" and offer.currency == "EUR"
    assert offer.tariff == TariffDef.model_validate({"id": "T-ADHOC", **AD_HOC_TARIFF})
    shown = [
        (p.element, p.kind, p.price_excl_vat, p.vat_percent, p.price_incl_vat, p.step_size, p.unit)
        for p in offer.components
    ]
    D = Decimal
    assert shown == [
        (0, "FLAT", D("1.0"), D("23"), D("1.2300"), 1, "session"),
        (0, "ENERGY", D("0.4"), D("23"), D("0.4920"), 1, "kWh"),  # 0.4 x 1.23
        (0, "TIME", D("1.2"), D("23"), D("1.4760"), 60, "hour"),
        (1, "PARKING_TIME", D("3.0"), None, None, 300, "hour"),  # no VAT given: none shown
    ]
    # as a page prints them: no trailing zeros
    assert [str(p.price_excl_vat) for p in offer.components] == ["1", "0.4", "1.2", "3"]
    assert str(offer.components[0].vat_percent) == "23"
    assert [p.restrictions for p in offer.components[:3]] == [None, None, None]
    assert offer.components[3].restrictions == {
        "start_time": "08:00",
        "end_time": "20:00",
        "min_duration": 3600,
    }
    assert offer.min_price is None
    assert offer.max_price is not None
    assert (offer.max_price.excl_vat, offer.max_price.incl_vat) == (D("50"), D("61.5"))

    # connector 2 has only a regular tariff: no ad hoc there; nor on unknown places
    assert await world.pricing.ad_hoc_offer("AH1", 2) is None
    assert await world.pricing.ad_hoc_offer("AH1", 9) is None
    assert await world.pricing.ad_hoc_offer("NOPE", 1) is None


async def test_offer_by_evse_uid_and_a_retired_evse(world: World) -> None:
    offer = await world.pricing.offer_by_evse_uid("LOC-AH1-01")
    assert offer == await world.pricing.ad_hoc_offer("AH1", 1)
    assert await world.pricing.offer_by_evse_uid("loc-ah1-01") is None  # case-sensitive
    assert await world.pricing.offer_by_evse_uid("LOC-AH1-02") is None  # no ad hoc tariff
    assert await world.pricing.offer_by_evse_uid("LOC-AH1") is None
    assert await world.pricing.offer_by_evse_uid("") is None
    status, body = await world.cpo.api.post("/api/v1/stations/AH1/evses/LOC-AH1-01/retire")
    assert status == 200, body
    assert await world.pricing.offer_by_evse_uid("LOC-AH1-01") is None
    assert await world.pricing.ad_hoc_offer("AH1", 1) is None


# ---------------------------------------------------------------------------- CDRs and bills


async def test_ad_hoc_and_regular_cdrs_on_one_connector(world: World) -> None:
    ad_hoc = await charge(world, 1, "AH-0001")
    regular = await charge(world, 1, "REG1")

    cdr = await cdr_of(world, ad_hoc)
    assert cdr["cdr_token"] == {
        "country_code": "PT",
        "party_id": "CPO",
        "uid": "AH-0001",
        "type": "AD_HOC_USER",
        "contract_id": "AH-0001",
    }
    assert [t["id"] for t in cdr["tariffs"]] == ["T-ADHOC"]
    assert cdr["total_cost"] == AD_HOC_TOTAL
    assert cdr["total_fixed_cost"] == {"excl_vat": 1.0, "incl_vat": 1.23}
    assert cdr["total_energy_cost"] == {"excl_vat": 3.6, "incl_vat": 4.428}
    assert cdr["total_time_cost"] == {"excl_vat": 1.2, "incl_vat": 1.476}
    # no parking priced: nothing without VAT contributed, so its incl_vat is known (0)
    assert cdr["total_parking_cost"] == {"excl_vat": 0.0, "incl_vat": 0.0}

    reg = await cdr_of(world, regular)
    assert reg["cdr_token"]["type"] == "RFID" and reg["cdr_token"]["uid"] == "REG1"
    assert [t["id"] for t in reg["tariffs"]] == ["T-REG"]  # the ad hoc tariff is skipped
    assert reg["total_cost"] == REGULAR_TOTAL

    # the bill of a stopped ad hoc transaction is its CDR's total_cost
    bill = await world.pricing.bill(ad_hoc, world.bridge.clock.now())
    assert bill is not None
    assert float(bill.total_excl_vat) == cdr["total_cost"]["excl_vat"]
    assert bill.total_incl_vat is not None
    assert float(bill.total_incl_vat) == cdr["total_cost"]["incl_vat"]
    assert money_minor(bill.total_incl_vat, bill.currency) == 713
    # and a regular one's bill is its CDR's too (priced with the regular tariff)
    reg_bill = await world.pricing.bill(regular, world.bridge.clock.now())
    assert reg_bill is not None and reg_bill.tariff_id == "T-REG"
    assert float(reg_bill.total_excl_vat) == reg["total_cost"]["excl_vat"]


async def test_an_ad_hoc_charge_on_a_connector_without_an_ad_hoc_tariff(world: World) -> None:
    """A payment terminal's charge ("adhoc:terminal") where no ad hoc tariff is defined: its
    token is still AD_HOC_USER, and it is priced as any other charge there."""
    tx = await charge(world, 2, "TERM-77")
    cdr = await cdr_of(world, tx)
    assert cdr["cdr_token"]["type"] == "AD_HOC_USER" and cdr["cdr_token"]["uid"] == "TERM-77"
    assert [t["id"] for t in cdr["tariffs"]] == ["T-REG"]
    assert cdr["total_cost"] == REGULAR_TOTAL
    bill = await world.pricing.bill(tx, world.bridge.clock.now())
    assert bill is not None and float(bill.total_excl_vat) == 2.25


def _lines(bill: Bill) -> list[tuple[Any, ...]]:
    return [
        (
            line.kind,
            line.quantity,
            line.unit,
            line.amount_excl_vat,
            line.amount_incl_vat,
            line.unit_price_excl_vat,
        )
        for line in bill.lines
    ]


async def test_bill_of_a_running_then_stopped_transaction(world: World) -> None:
    D = Decimal
    tx = await begin(world, 1, "AH-0002")
    now = world.start + timedelta(minutes=50, seconds=30, microseconds=700)
    bill = await world.pricing.bill(tx, now)
    assert bill is not None
    # priced up to the last meter value (40 min, 6 kWh): FLAT 1.00; ENERGY 6 x 0.40 = 2.40;
    # TIME 40 min = 2400 s (whole minutes) x 1.20 / h = 0.80 -> 4.20; incl. 23 %: 5.166
    assert (bill.energy_wh, bill.duration_s) == (6000, 50 * 60 + 30)  # duration: to now
    assert bill.started_at == world.start and bill.ended_at is None
    assert bill.tariff_id == "T-ADHOC" and bill.currency == "EUR" and bill.notes == ()
    assert _lines(bill) == [
        ("FLAT", D(1), "session", D("1.0000"), D("1.2300"), D("1.0")),
        ("ENERGY", D("6.000"), "kWh", D("2.4000"), D("2.9520"), D("0.4")),
        ("TIME", D("0.6667"), "hour", D("0.8000"), D("0.9840"), D("1.2")),
        # no parking happened: nothing without VAT contributed, so incl_vat is known (0)
        ("PARKING_TIME", D("0.0000"), "hour", D("0.0000"), D("0.0000"), D("3.0")),
    ]
    assert (bill.total_excl_vat, bill.total_incl_vat) == (D("4.2000"), D("5.1660"))
    assert money_minor(bill.total_incl_vat, "EUR") == 517

    # the tariff the driver was shown (a snapshot) prices it when given
    shown = TariffDef.model_validate({"id": "T-REG", **REGULAR_TARIFF})
    with_shown = await world.pricing.bill(tx, now, tariff=shown)
    assert with_shown is not None and with_shown.tariff_id == "T-REG"
    assert _lines(with_shown) == [
        ("ENERGY", D("6.000"), "kWh", D("1.5000"), D("1.8450"), D("0.25"))
    ]

    await finish(world, tx)
    done = await world.pricing.bill(tx, now + timedelta(hours=5))  # now: no longer used
    assert done is not None
    assert (done.energy_wh, done.duration_s) == (9000, 3600)
    assert done.ended_at == world.start + timedelta(hours=1)
    cdr = await cdr_of(world, tx)
    assert cdr["total_cost"] == AD_HOC_TOTAL
    assert float(done.total_excl_vat) == cdr["total_cost"]["excl_vat"]
    assert done.total_incl_vat is not None
    assert float(done.total_incl_vat) == cdr["total_cost"]["incl_vat"]
    assert [(line.kind, line.quantity) for line in done.lines] == [
        ("FLAT", D(1)),
        ("ENERGY", D("9.000")),
        ("TIME", D("1.0000")),
        ("PARKING_TIME", D("0.0000")),
    ]


async def test_bill_clamped_by_max_price_and_unknown_transactions(world: World) -> None:
    # a tariff whose max_price is below the cost: the total is the bound, with a note
    capped = TariffDef.model_validate(
        {"id": "CAP", **REGULAR_TARIFF, "max_price": {"excl_vat": 2, "incl_vat": 2.46}}
    )
    tx = await charge(world, 1, "AH-0003")
    bill = await world.pricing.bill(tx, world.bridge.clock.now(), tariff=capped)
    assert bill is not None
    assert (bill.total_excl_vat, bill.total_incl_vat) == (Decimal("2.0000"), Decimal("2.4600"))
    assert bill.notes == ("total_cost set by max_price",)
    assert bill.lines[0].amount_excl_vat == Decimal("2.2500")  # the line keeps its cost
    assert await world.pricing.bill(999_999, world.bridge.clock.now()) is None


async def test_bill_without_any_tariff_is_none(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, ocpi={})
    try:
        w = await setup_world(cpo)
        try:
            await define(cpo, "AH1", {})  # no tariffs at all any more
            tx = await charge(w, 1, "AH-0004")
            assert await w.pricing.bill(tx, w.bridge.clock.now()) is None
            assert await w.pricing.ad_hoc_offer("AH1", 1) is None
        finally:
            await w.station.disconnect()
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------------- who sees it


async def test_sessions_of_ad_hoc_charges_by_owner(world: World) -> None:
    tx = await begin(world, 1, "AH-0005")
    builder = world.bridge.sessions
    items, total = await builder.list_sessions(None, None, None, 0, 10, "2.2.1")  # a hub
    assert total == 1 and items[0]["id"] == str(tx)
    assert items[0]["cdr_token"]["type"] == "AD_HOC_USER"
    assert items[0]["cdr_token"]["party_id"] == "CPO"
    assert items[0]["auth_method"] == "WHITELIST"
    items, _ = await builder.list_sessions(None, None, None, 0, 10, "2.2")  # an OCPI 2.2 hub
    assert items[0]["cdr_token"] == {
        "uid": "AH-0005",
        "type": "AD_HOC_USER",
        "contract_id": "AH-0005",
    }
    items, total = await builder.list_sessions({"PT/EMS"}, None, None, 0, 10, "2.2.1")
    assert (items, total) == ([], 0)  # an eMSP: not its token
    await finish(world, tx)
    await cdr_of(world, tx)
    cdrs, _ = await builder.list_cdrs(None, None, None, 0, 10, "2.2.1")
    assert [c["cdr_token"]["type"] for c in cdrs] == ["AD_HOC_USER"]
    assert (await builder.list_cdrs({"PT/EMS"}, None, None, 0, 10, "2.2.1")) == ([], 0)
    assert await builder.get_cdr({"PT/EMS"}, str(tx), "2.2.1") is None


async def test_the_operator_sees_ad_hoc_sessions_in_pages_and_exports(world: World) -> None:
    ad_hoc = await charge(world, 1, "AH-0006")
    regular = await charge(world, 1, "REG1")
    for tx in (ad_hoc, regular):
        await cdr_of(world, tx)
    cpo = world.cpo

    today = datetime.now(UTC).date()
    status, _, body = await fetch(
        cpo,
        f"/api/v1/exports/cdrs.csv?from={today - timedelta(days=1)}&to={today + timedelta(days=1)}",
    )
    assert status == 200, body[:300]
    by_id = {r["cdr_id"]: r for r in rows_of(body)}
    assert by_id[str(ad_hoc)]["token_type"] == "AD_HOC_USER"
    assert by_id[str(ad_hoc)]["token_party"] == "PT/CPO"
    assert by_id[str(ad_hoc)]["tariff_ids"] == "T-ADHOC"
    assert by_id[str(regular)]["token_type"] == "RFID"

    viewer = WebClient(cpo.http_url)
    try:
        assert (await viewer.login(VIEWER)).status == 303
        status, page = await viewer.get("/sessions")
        assert status == 200
        cell = row(page, "data-transaction", str(ad_hoc))
        assert "AD_HOC_USER" in cell and "AH-0006" in cell and "PT/CPO" in cell
        assert "AD_HOC_USER" not in row(page, "data-transaction", str(regular))
        status, page = await viewer.get(
            f"/compliance?view=sessions&from={today - timedelta(days=1)}&to={today}"
        )
        assert status == 200
        assert "AD_HOC_USER" in row(page, "data-transaction", str(ad_hoc))
        assert "AD_HOC_USER" not in row(page, "data-transaction", str(regular))
    finally:
        await viewer.close()


async def test_a_hub_receives_ad_hoc_sessions_and_cdrs_an_emsp_does_not(tmp_path: Path) -> None:
    """Real peers (extrawest-ocpi): MOBI.E as the hub, and an eMSP, both registered."""
    system, session, cpo = await start_system(tmp_path, ocpi={"session_update_interval": 1})
    w: World | None = None
    try:
        async with (
            EmspPeer(party_id="MOB", country_code="PT", role="HUB") as hub,
            EmspPeer(party_id="EMS", country_code="PT") as emsp,
        ):
            for peer in (hub, emsp):
                _, body = await cpo.api.post("/api/v1/ocpi/token-a", peer.grant)
                assert (await peer.register_with(body["versions_url"], body["token"]))["ok"]
            w = await setup_world(cpo)
            tx = await charge(w, 1, "AH-0007")

            async def cdr_pushed() -> list[dict[str, Any]]:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10
                while loop.time() < deadline:
                    found = [r for r in await hub.requests() if r["method"] == "POST"]
                    if found:
                        return found
                    await asyncio.sleep(0.05)
                raise AssertionError("the hub never received the CDR")

            [posted] = await cdr_pushed()
            assert posted["body"]["cdr_token"]["type"] == "AD_HOC_USER"
            assert posted["body"]["total_cost"] == AD_HOC_TOTAL
            session_puts = [
                r
                for r in await hub.requests()
                if r["method"] == "PUT" and "/sessions/" in r["path"]
            ]
            assert session_puts, "no Session PUT reached the hub"
            for r in session_puts:
                assert r["body"]["cdr_token"]["type"] == "AD_HOC_USER"
                assert r["body"]["cdr_token"]["uid"] == "AH-0007"
            # the hub pulls them too
            pulled = await hub.pull("sessions", date_from="2000-01-01T00:00:00Z")
            assert pulled["ok"] and not pulled["validation_errors"], pulled["validation_errors"]
            assert [(s["id"], s["cdr_token"]["type"]) for s in pulled["objects"]] == [
                (str(tx), "AD_HOC_USER")
            ]
            pulled = await hub.pull("cdrs")
            assert pulled["ok"] and not pulled["validation_errors"], pulled["validation_errors"]
            assert [c["cdr_token"]["type"] for c in pulled["objects"]] == ["AD_HOC_USER"]
            # the eMSP gets none of it, pushed or pulled
            pushed = [
                r
                for r in await emsp.requests()
                if r["method"] in ("PUT", "PATCH", "POST")
                and ("/sessions" in r["path"] or "/cdrs" in r["path"])
            ]
            assert pushed == []
            assert (await emsp.pull("sessions", date_from="2000-01-01T00:00:00Z"))["objects"] == []
            assert (await emsp.pull("cdrs"))["objects"] == []
    except PeerVenvMissing as e:
        pytest.fail(str(e))
    finally:
        if w is not None:
            await w.station.disconnect()
        await session.close()
        await system.stop()
