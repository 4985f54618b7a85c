"""Our prices as other extensions read them: the ad hoc offer of a connector and the bill of
a transaction, priced by the CDRs' engine (:mod:`ocpi_bridge.pricing`) on the CDRs' inputs.

Other extensions (the ad hoc payments of :mod:`adhoc`) never read the bridge's tables: they
build a :class:`Pricing` over csms's port and ask it. It needs nothing of the ``[ocpi]``
settings: the prices and their currency come from the tariff, the place from the station's
definition, the energy from the transaction's meter values. So ``Pricing(port)`` is enough;
the bridge may pass its settings, which change nothing here. The tariffs live in the
bridge's own tables: ad hoc charging needs the OCPI bridge attached (its migrations ran).

Ad hoc transactions are those whose token owner (``IdTagInfo.owner``, kept on the
transaction as ``tag_owner``) is :data:`AD_HOC_OWNER` or starts with ``"adhoc:"`` (a
station's own payment terminal: ``"adhoc:terminal"``). Their OCPI token is ours, of type
``AD_HOC_USER``, and no eMSP sees them (they are no eMSP's token).

Which tariff prices a transaction (:func:`applicable_tariffs`): of the connector's
``tariff_ids``, in that order, an ad hoc transaction takes the first whose ``type`` is
``AD_HOC_PAYMENT``; any other transaction the first that is not (the first of all when every
one is). The same choice makes the CDR (``sessions.SessionBuilder.make_cdr``) and
:meth:`Pricing.bill`, on the same cleaned meter series (:func:`transaction_points`), so a
stopped transaction's bill is its CDR's ``total_cost``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from csms.ports import (
    ENERGY_IMPORT_REGISTER,
    POWER_IMPORT,
    CsmsPort,
    StationSnapshot,
    TransactionView,
)

from .charging import MeterPoint, SessionPoint, session_points, totals
from .locations import removed_at
from .pricing import (
    Costs,
    Price,
    TariffDef,
    TariffDimensionType,
    TariffElement,
    TariffType,
    price_session,
)
from .store import OcpiStore

if TYPE_CHECKING:
    from .config import OcpiSettings

__all__ = [
    "AD_HOC_OWNER",
    "AD_HOC_TOKEN_TYPE",
    "Bill",
    "BillLine",
    "GeoPoint",
    "Money",
    "Offer",
    "OfferConnector",
    "OfferLocation",
    "PriceShown",
    "Pricing",
    "applicable_tariffs",
    "connector_place",
    "connector_tariff_rows",
    "is_ad_hoc",
    "meter_points",
    "money_minor",
    "transaction_points",
]

AD_HOC_OWNER = "adhoc"
AD_HOC_TOKEN_TYPE = "AD_HOC_USER"  # OCPI 2.2.1 TokenType, as MOBI.E's profile names it

_Q4 = Decimal("0.0001")
_D = TariffDimensionType
_UNITS = {_D.FLAT: "session", _D.ENERGY: "kWh", _D.TIME: "hour", _D.PARKING_TIME: "hour"}
_KINDS = (_D.FLAT, _D.ENERGY, _D.TIME, _D.PARKING_TIME)
_COST_FIELDS = {
    _D.FLAT: "total_fixed_cost",
    _D.ENERGY: "total_energy_cost",
    _D.TIME: "total_time_cost",
    _D.PARKING_TIME: "total_parking_cost",
}
# ISO 4217 currencies whose minor unit is not the cent (the others have 2 decimals)
_NO_DECIMALS = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_THREE_DECIMALS = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_CURRENCY = re.compile(r"[A-Z]{3}")


def is_ad_hoc(tag_owner: str | None) -> bool:
    """Whether a transaction with this token owner is ad hoc (paid on the spot)."""
    return isinstance(tag_owner, str) and (
        tag_owner == AD_HOC_OWNER or tag_owner.startswith(AD_HOC_OWNER + ":")
    )


def money_minor(amount: Decimal, currency: str) -> int:
    """``amount`` in the currency's minor unit (EUR: cents), rounded half-up (away from zero
    on a tie). Raises ValueError for a currency that is not 3 uppercase letters or an amount
    that is not a finite number, TypeError for a float (binary floats are not money)."""
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency must be an ISO 4217 code (3 capital letters), not {currency!r}")
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"amount must be a finite number, not {value}")
    places = 0 if currency in _NO_DECIMALS else 3 if currency in _THREE_DECIMALS else 2
    return int(value.scaleb(places).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _dec(value: float | int) -> Decimal:
    """The exact decimal of what a number prints as, without trailing zeros or exponent:
    0.1 is 0.1, 23.0 is 23, 100.0 is 100 (so a page shows "23%", not "23.0%")."""
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if d == d.to_integral_value():
        return d.quantize(Decimal(1))
    return d.normalize()


def _q4(value: Decimal) -> Decimal:
    return value.quantize(_Q4, rounding=ROUND_HALF_UP)


# ---------------------------------------------------------------------------- shared inputs
# (what the CDRs and the bills are made of: SessionBuilder uses these too)


async def meter_points(port: CsmsPort, tx_ids: list[int]) -> dict[int, list[MeterPoint]]:
    """The energy register and power of these transactions' meter values, one point per
    meter value (timestamp), in arrival order: a late sample with an older time is then
    dropped by the cleaning, instead of changing periods already sent. Energy: the register
    without phase, else the first phase's; power: without phase, else the phases' sum."""
    if not tx_ids:
        return {}
    rows = await port.meter_series(tx_ids, (ENERGY_IMPORT_REGISTER, POWER_IMPORT))
    grouped: dict[tuple[int, datetime], dict[str, Any]] = {}
    for r in rows:
        g = grouped.setdefault(
            (r.transaction_id, r.timestamp),
            {"energy": None, "energy_phase": None, "power": None, "power_phases": []},
        )
        if r.measurand == ENERGY_IMPORT_REGISTER:
            if r.phase is None:
                g["energy"] = r.value
            elif g["energy_phase"] is None:
                g["energy_phase"] = r.value
        elif r.phase is None:
            g["power"] = r.value
        elif r.phase in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N"):
            g["power_phases"].append(r.value)
    out: dict[int, list[MeterPoint]] = defaultdict(list)
    for (tx_id, when), g in grouped.items():
        energy = g["energy"] if g["energy"] is not None else g["energy_phase"]
        power = g["power"] if g["power"] is not None else (sum(g["power_phases"]) or None)
        out[tx_id].append(MeterPoint(when, energy, power))
    return out


def session_inputs(tx: TransactionView, points: list[MeterPoint]) -> dict[str, Any]:
    """The arguments of charging.session_points / session_kwh for a transaction."""
    return {
        "meter_start_wh": tx.meter_start,
        "start_time": tx.start_time,
        "points": points,
        "meter_stop_wh": tx.meter_stop,
        "stop_time": tx.stop_time,
    }


def transaction_points(tx: TransactionView, points: list[MeterPoint]) -> list[SessionPoint]:
    """The cleaned series of a transaction (``charging.session_points``): to its stop when
    it stopped, to its last kept meter value while it runs."""
    return session_points(**session_inputs(tx, points))


def connector_place(
    station: StationSnapshot | None, connector_id: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(location, evse, connector) definitions of a station's OCPP connector (retired or
    not); None when the station has no definition or no such EVSE."""
    definition = station.definition if station is not None else None
    if not definition:
        return None
    for evse in definition["evses"]:
        if evse["connector_id"] == connector_id:
            return definition["location"], evse, evse["connectors"][0]
    return None


async def connector_tariff_rows(store: OcpiStore, connector: Mapping[str, Any]) -> list[dict]:
    """The stored tariffs a connector definition references, in its ``tariff_ids`` order
    (ids it names that do not exist are left out)."""
    ids = [t for t in connector.get("tariff_ids") or [] if isinstance(t, str)]
    rows = await store.tariffs(list(dict.fromkeys(ids)))
    order = {tariff_id: i for i, tariff_id in reversed(list(enumerate(ids)))}
    return sorted(rows, key=lambda r: order.get(r["id"], len(ids)))


def _is_ad_hoc_tariff(row: Mapping[str, Any]) -> bool:
    return row["body"].get("type") == TariffType.AD_HOC_PAYMENT.value


def applicable_tariffs(rows: Sequence[dict], ad_hoc: bool) -> list[dict]:
    """The tariffs of a connector (rows in its order) that concern a transaction; the first
    prices it, all are the CDR's ``tariffs``. Ad hoc: the first AD_HOC_PAYMENT one alone
    (none: as any other transaction, e.g. a payment terminal's charge on a connector without
    an ad hoc tariff); otherwise those that are not AD_HOC_PAYMENT, or all when every one is."""
    if ad_hoc:
        for row in rows:
            if _is_ad_hoc_tariff(row):
                return [row]
    regular = [r for r in rows if not _is_ad_hoc_tariff(r)]
    return regular or list(rows)


# ---------------------------------------------------------------------------- read models


class GeoPoint(NamedTuple):
    latitude: str  # as OCPI writes them, e.g. "38.716670"
    longitude: str


@dataclass(frozen=True, slots=True)
class OfferLocation:
    id: str
    name: str | None
    address: str
    city: str
    postal_code: str | None
    country: str  # ISO 3166-1 alpha-3
    time_zone: str
    coordinates: GeoPoint


@dataclass(frozen=True, slots=True)
class OfferConnector:
    id: str
    standard: str
    format: str
    power_type: str
    max_voltage: int
    max_amperage: int
    max_electric_power: int  # W: as defined, else voltage x amperage (x 3 for AC_3_PHASE)


@dataclass(frozen=True, slots=True)
class Money:
    excl_vat: Decimal
    incl_vat: Decimal | None


@dataclass(frozen=True, slots=True)
class PriceShown:
    """One price component of one tariff element, for display. ``price_incl_vat`` only when
    the component has a VAT (4 decimals, half-up); ``restrictions`` summarises the element's
    restrictions (only those set), None when it has none."""

    element: int  # its element's index in the tariff (the first that matches applies)
    kind: str  # FLAT, ENERGY, TIME or PARKING_TIME
    price_excl_vat: Decimal
    vat_percent: Decimal | None
    price_incl_vat: Decimal | None
    step_size: int  # Wh for ENERGY, seconds for TIME and PARKING_TIME
    unit: str  # "session", "kWh" or "hour"
    restrictions: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Offer:
    """What a driver is offered at a connector before paying: where, what, and the ad hoc
    tariff in full."""

    station_id: str
    connector_id: int  # OCPP connectorId
    location: OfferLocation
    evse_uid: str
    evse_id: str  # the EVSE's printed id (its uid when it has none)
    connector: OfferConnector
    tariff_id: str
    tariff: TariffDef
    currency: str
    components: tuple[PriceShown, ...]
    min_price: Money | None
    max_price: Money | None


@dataclass(frozen=True, slots=True)
class BillLine:
    """What one dimension of the tariff cost. ``quantity``: what was billed, after the step
    size: kWh (to the Wh) for ENERGY, hours (4 decimals) for TIME and PARKING_TIME, 1 or 0
    for FLAT (0: no start fee was charged). ``unit_price_excl_vat``: the price per unit when
    one price applies to the dimension (every component of it in the tariff has the same
    price), else None."""

    kind: str
    quantity: Decimal
    unit: str
    amount_excl_vat: Decimal
    amount_incl_vat: Decimal | None
    unit_price_excl_vat: Decimal | None


@dataclass(frozen=True, slots=True)
class Bill:
    """The cost of a transaction so far (running: up to its last meter value) or in full
    (stopped), as its CDR computes it; money to 4 decimals as the engine rounds. ``lines``:
    one per dimension the tariff has, in the order FLAT, ENERGY, TIME, PARKING_TIME.
    ``notes``: when min_price or max_price set the total."""

    transaction_id: int
    tariff_id: str
    energy_wh: int
    duration_s: int
    started_at: datetime
    ended_at: datetime | None
    lines: tuple[BillLine, ...]
    total_excl_vat: Decimal
    total_incl_vat: Decimal | None
    currency: str
    notes: tuple[str, ...]


def _money(price: Price | None) -> Money | None:
    if price is None:
        return None
    incl = None if price.incl_vat is None else _dec(price.incl_vat)
    return Money(_dec(price.excl_vat), incl)


def _restrictions(element: TariffElement) -> dict[str, Any] | None:
    r = element.restrictions
    if r is None:
        return None
    names = (
        "start_time",
        "end_time",
        "start_date",
        "end_date",
        "day_of_week",
        "min_kwh",
        "max_kwh",
        "min_power",
        "max_power",
        "min_duration",
        "max_duration",
    )
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(r, name)
        if value is None:
            continue
        if name == "day_of_week":
            value = tuple(str(d) for d in value)
        elif isinstance(value, float):
            value = _dec(value)
        out[name] = value
    return out or None


def shown_components(tariff: TariffDef) -> tuple[PriceShown, ...]:
    """Every price component of the tariff's elements that price charging (reservation
    elements are left out), in tariff order."""
    out: list[PriceShown] = []
    for index, element in enumerate(tariff.elements):
        if element.restrictions is not None and element.restrictions.reservation is not None:
            continue
        summary = _restrictions(element)
        for c in element.price_components:
            price = _dec(c.price)
            vat = None if c.vat is None else _dec(c.vat)
            out.append(
                PriceShown(
                    element=index,
                    kind=str(c.type),
                    price_excl_vat=price,
                    vat_percent=vat,
                    price_incl_vat=None if vat is None else _q4(price * (1 + vat / 100)),
                    step_size=c.step_size,
                    unit=_UNITS[c.type],
                    restrictions=summary,
                )
            )
    return tuple(out)


def _max_power_w(connector: Mapping[str, Any]) -> int:
    if connector.get("max_electric_power"):
        return int(connector["max_electric_power"])
    # OCPI: max_voltage of AC_3_PHASE is line to neutral
    phases = 3 if connector.get("power_type") == "AC_3_PHASE" else 1
    return phases * int(connector["max_voltage"]) * int(connector["max_amperage"])


def _unit_price(tariff: TariffDef, kind: TariffDimensionType) -> Decimal | None:
    prices = {
        _dec(c.price)
        for e in tariff.elements
        if e.restrictions is None or e.restrictions.reservation is None
        for c in e.price_components
        if c.type == kind
    }
    return prices.pop() if len(prices) == 1 else None


def _lines(tariff: TariffDef, costs: Costs) -> tuple[BillLine, ...]:
    quantities = {
        _D.ENERGY: (_dec(costs.billed_energy_wh) / 1000).quantize(Decimal("0.001")),
        _D.TIME: _q4(_dec(costs.billed_time_s) / 3600),
        _D.PARKING_TIME: _q4(_dec(costs.billed_parking_s) / 3600),
    }
    out: list[BillLine] = []
    for kind in _KINDS:
        part = getattr(costs, _COST_FIELDS[kind])
        if part is None:  # the tariff has no component of this dimension
            continue
        excl = _q4(_dec(part["excl_vat"]))
        incl = _q4(_dec(part["incl_vat"])) if "incl_vat" in part else None
        unit_price = _unit_price(tariff, kind)
        if kind == _D.FLAT:
            quantity = Decimal(1 if excl > 0 else 0)
        else:
            quantity = quantities[kind]
        out.append(BillLine(str(kind), quantity, _UNITS[kind], excl, incl, unit_price))
    return tuple(out)


# ---------------------------------------------------------------------------- the interface


class Pricing:
    """Tariffs and prices for other extensions, over csms's port alone (see the module
    docstring); ``settings`` (the bridge's) is optional and not needed."""

    def __init__(self, port: CsmsPort, settings: OcpiSettings | None = None) -> None:
        self.port = port
        self.settings = settings
        self.tariffs = OcpiStore(port.db, port.clock)

    async def _tariff_rows(self, connector: Mapping[str, Any]) -> list[dict]:
        return await connector_tariff_rows(self.tariffs, connector)

    async def ad_hoc_tariff(self, connector: Mapping[str, Any]) -> TariffDef | None:
        """A connector definition's ad hoc tariff: the first of its tariffs whose type is
        AD_HOC_PAYMENT; None: ad hoc charging is not offered there."""
        for row in await self._tariff_rows(connector):
            if _is_ad_hoc_tariff(row):
                return TariffDef.model_validate(row["body"])
        return None

    async def _offer(self, station: StationSnapshot, evse: dict[str, Any]) -> Offer | None:
        definition = station.definition
        if not station.defined or not definition or removed_at(evse) is not None:
            return None
        connector = evse["connectors"][0]
        tariff = await self.ad_hoc_tariff(connector)
        if tariff is None:
            return None
        loc = definition["location"]
        coordinates = loc["coordinates"]
        return Offer(
            station_id=station.id,
            connector_id=int(evse["connector_id"]),
            location=OfferLocation(
                id=loc["id"],
                name=loc.get("name"),
                address=loc["address"],
                city=loc["city"],
                postal_code=loc.get("postal_code"),
                country=loc["country"],
                time_zone=loc["time_zone"],
                coordinates=GeoPoint(coordinates["latitude"], coordinates["longitude"]),
            ),
            evse_uid=evse["uid"],
            evse_id=evse.get("evse_id") or evse["uid"],
            connector=OfferConnector(
                id=str(connector["id"]),
                standard=connector["standard"],
                format=connector["format"],
                power_type=connector["power_type"],
                max_voltage=int(connector["max_voltage"]),
                max_amperage=int(connector["max_amperage"]),
                max_electric_power=_max_power_w(connector),
            ),
            tariff_id=tariff.id,
            tariff=tariff,
            currency=tariff.currency,
            components=shown_components(tariff),
            min_price=_money(tariff.min_price),
            max_price=_money(tariff.max_price),
        )

    async def ad_hoc_offer(self, station_id: str, connector_id: int) -> Offer | None:
        """The ad hoc offer of a station's OCPP connector; None when the station is unknown
        or undefined, the connector unknown or retired, or it has no AD_HOC_PAYMENT tariff."""
        station = await self.port.station(station_id)
        if station is None:
            return None
        for evse in station.evses:
            if evse.get("connector_id") == connector_id:
                return await self._offer(station, evse)
        return None

    async def offer_by_evse_uid(self, evse_uid: str) -> Offer | None:
        """The ad hoc offer of the EVSE with this OCPI uid (exact, case-sensitive match),
        among the defined stations' EVSEs in service; None as for :meth:`ad_hoc_offer`."""
        if not isinstance(evse_uid, str) or not evse_uid:
            return None
        for station in await self.port.defined_stations():
            for evse in station.evses:
                if evse.get("uid") == evse_uid and removed_at(evse) is None:
                    return await self._offer(station, evse)
        return None

    async def bill(
        self, transaction_id: int, now: datetime, tariff: TariffDef | None = None
    ) -> Bill | None:
        """The cost of a transaction so far (running: priced up to its last meter value;
        ``now`` only gives a running session's duration) or in full (stopped), exactly as
        its CDR computes it. ``tariff``: price with it (the tariff the driver was shown);
        None: the tariff its CDR takes (an ad hoc transaction: the connector's ad hoc
        tariff). None when the transaction is unknown, its station has no definition of its
        connector, or there is no tariff."""
        tx = await self.port.transaction(transaction_id)
        if tx is None:
            return None
        place = connector_place(await self.port.station(tx.station_id), tx.connector_id)
        if place is None:
            return None
        location, _, connector = place
        if tariff is None:
            rows = applicable_tariffs(await self._tariff_rows(connector), is_ad_hoc(tx.tag_owner))
            if not rows:
                return None
            tariff = TariffDef.model_validate(rows[0]["body"])
        points = (await meter_points(self.port, [tx.id])).get(tx.id, [])
        cleaned = transaction_points(tx, points)
        costs = price_session(tariff, cleaned, location["time_zone"])
        start = tx.start_time.replace(microsecond=0)
        ended_at: datetime | None = None
        if tx.stop_time is not None and tx.stop_received_at is not None:
            ended_at = max(tx.stop_time, tx.start_time)
            duration = int((cleaned[-1].time - cleaned[0].time).total_seconds())
        else:
            duration = max(0, int((now.replace(microsecond=0) - start).total_seconds()))
        energy_wh = int(
            (_dec(totals(cleaned).total_energy) * 1000).quantize(Decimal(1), ROUND_HALF_UP)
        )
        total = costs.total_cost
        return Bill(
            transaction_id=tx.id,
            tariff_id=tariff.id,
            energy_wh=energy_wh,
            duration_s=duration,
            started_at=tx.start_time,
            ended_at=ended_at,
            lines=_lines(tariff, costs),
            total_excl_vat=_q4(_dec(total["excl_vat"])),
            total_incl_vat=_q4(_dec(total["incl_vat"])) if "incl_vat" in total else None,
            currency=tariff.currency,
            notes=costs.notes,
        )
