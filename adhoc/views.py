"""What the driver is shown of an offer (the OCPI bridge's :class:`~ocpi_bridge.prices.Offer`):
plain values for the pages and for the payment's record (``place``), restrictions in words."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ocpi_bridge.prices import Offer, PriceShown

_DAYS = {
    "MONDAY": ("seg", "Mon"),
    "TUESDAY": ("ter", "Tue"),
    "WEDNESDAY": ("qua", "Wed"),
    "THURSDAY": ("qui", "Thu"),
    "FRIDAY": ("sex", "Fri"),
    "SATURDAY": ("sáb", "Sat"),
    "SUNDAY": ("dom", "Sun"),
}


def _num(value: Any) -> str:
    d = Decimal(str(value)).normalize()
    return f"{d:f}"


def restriction_text(r: dict[str, Any] | None) -> dict[str, str] | None:
    """A tariff element's restrictions in a few words, in Portuguese and English."""
    if not r:
        return None
    pt: list[str] = []
    en: list[str] = []
    if "start_time" in r or "end_time" in r:
        span = f"{r.get('start_time', '00:00')}–{r.get('end_time', '24:00')}"
        pt.append(span)
        en.append(span)
    if r.get("day_of_week"):
        days = [_DAYS.get(d, (d, d)) for d in r["day_of_week"]]
        pt.append(", ".join(d[0] for d in days))
        en.append(", ".join(d[1] for d in days))
    if "start_date" in r or "end_date" in r:
        span = f"{r.get('start_date', '…')} – {r.get('end_date', '…')}"
        pt.append(span)
        en.append(span)
    for key, unit in (("kwh", "kWh"), ("power", "kW")):
        low, high = r.get(f"min_{key}"), r.get(f"max_{key}")
        if low is not None or high is not None:
            pt.append(f"{_num(low or 0)}–{_num(high) if high is not None else '…'} {unit}")
            en.append(f"{_num(low or 0)}–{_num(high) if high is not None else '…'} {unit}")
    low, high = r.get("min_duration"), r.get("max_duration")
    if low is not None or high is not None:
        a = f"{int(low or 0) // 60}"
        b = f"{int(high) // 60}" if high is not None else "…"
        pt.append(f"{a}–{b} min de carregamento")
        en.append(f"{a}–{b} min of charging")
    return {"pt": "; ".join(pt), "en": "; ".join(en)}


def component(c: PriceShown) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "price_excl_vat": str(c.price_excl_vat),
        "vat_percent": None if c.vat_percent is None else _num(c.vat_percent),
        "price_incl_vat": None if c.price_incl_vat is None else str(c.price_incl_vat),
        "unit": c.unit,
        "step_size": c.step_size,
        "restriction_text": restriction_text(c.restrictions),
    }


def offer_view(offer: Offer) -> dict[str, Any]:
    """The offer as the pages show it and the payment keeps it (JSON values)."""
    loc, conn = offer.location, offer.connector
    address = ", ".join(x for x in (loc.address, loc.postal_code, loc.city) if x)

    def bound(m: Any) -> str | None:
        if m is None:
            return None
        return str(m.incl_vat if m.incl_vat is not None else m.excl_vat)

    return {
        "station_id": offer.station_id,
        "connector_id": offer.connector_id,
        "location_id": loc.id,
        "location_name": loc.name or loc.id,
        "address": address,
        "time_zone": loc.time_zone,
        "evse_uid": offer.evse_uid,
        "evse_id": offer.evse_id,
        "connector": f"{conn.standard.replace('_', ' ')} ({conn.format.lower()})",
        "power_kw": round(conn.max_electric_power / 1000, 1),
        "currency": offer.currency,
        "tariff_id": offer.tariff_id,
        "components": [component(c) for c in offer.components],
        "min_price": bound(offer.min_price),
        "max_price": bound(offer.max_price),
    }
