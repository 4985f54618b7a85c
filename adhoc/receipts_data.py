"""A receipt's stored body (JSON, written once with its number) and the Receipt it renders
as (:mod:`adhoc.receipts`). What the receipt says is fixed when it is issued: a later change
of the tariff, the operator's name or the Location does not rewrite an issued receipt."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from csms.ports import from_db, to_iso
from ocpi_bridge.prices import Bill

from .config import AdhocSettings
from .receipts import Receipt, ReceiptLine


def _d(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _vat_rate(p: dict[str, Any]) -> str | None:
    rates = {c.get("vat_percent") for c in p["place"].get("components") or []}
    if len(rates) == 1:
        (rate,) = rates
        return None if rate is None else str(rate)
    return None


def receipt_body(
    settings: AdhocSettings,
    p: dict[str, Any],
    bill: Bill,
    number: int,
    now: datetime,
    captured: int,
    method: str | None,
) -> dict[str, Any]:
    place = p["place"]
    started = bill.started_at
    ended = bill.ended_at or now
    notes = list(bill.notes)
    total = bill.total_incl_vat if bill.total_incl_vat is not None else bill.total_excl_vat
    if p["kind"] == "online" and int(p["hold_amount"]) < round(total * 100):
        notes.append("capped_at_hold")
    return {
        "number": f"{settings.receipt_prefix}-{number:06d}",
        "sequence": number,
        "issued_at": to_iso(now),
        "time_zone": place.get("time_zone") or "Europe/Lisbon",
        "language": p["language"],
        "operator_name": settings.operator_name,
        "operator_tax_id": settings.operator_tax_id,
        "operator_address": settings.operator_address,
        "location_name": place.get("location_name") or "",
        "location_address": place.get("address") or "",
        "evse_id": place.get("evse_id") or p["evse_uid"],
        "started_at": to_iso(started),
        "ended_at": to_iso(ended),
        "energy_wh": int(bill.energy_wh),
        "lines": [
            {
                "kind": line.kind,
                "quantity": _d(line.quantity),
                "amount_excl_vat": _d(line.amount_excl_vat),
                "amount_incl_vat": _d(line.amount_incl_vat),
                "unit_price_excl_vat": _d(line.unit_price_excl_vat),
            }
            for line in bill.lines
        ],
        "total_excl_vat": _d(bill.total_excl_vat),
        "total_incl_vat": _d(total),
        "vat_percent": _vat_rate(p),
        "currency": p["currency"],
        "amount_held": int(p["hold_amount"]),
        "amount_captured": captured,
        "payment_method": method,
        "payment_reference": (p.get("reference") or p["id"])[-12:],
        "transaction_id": p.get("transaction_id"),
        "notes": notes,
    }


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def to_receipt(body: dict[str, Any]) -> Receipt:
    """The stored body as the renderer's Receipt."""
    issued = from_db(body["issued_at"])
    started = from_db(body["started_at"])
    ended = from_db(body["ended_at"])
    assert issued is not None and started is not None and ended is not None
    return Receipt(
        number=body["number"],
        issued_at=issued,
        time_zone=body["time_zone"],
        language=body["language"],
        operator_name=body["operator_name"],
        operator_tax_id=body["operator_tax_id"],
        operator_address=body["operator_address"],
        location_name=body["location_name"],
        location_address=body["location_address"],
        evse_id=body["evse_id"],
        started_at=started,
        ended_at=ended,
        energy_wh=int(body["energy_wh"]),
        lines=tuple(
            ReceiptLine(
                kind=line["kind"],
                quantity=Decimal(line["quantity"]),
                amount_excl_vat=Decimal(line["amount_excl_vat"]),
                amount_incl_vat=_dec(line["amount_incl_vat"]),
                unit_price_excl_vat=_dec(line["unit_price_excl_vat"]),
            )
            for line in body["lines"]
        ),
        total_excl_vat=Decimal(body["total_excl_vat"]),
        total_incl_vat=Decimal(body["total_incl_vat"]),
        vat_percent=_dec(body["vat_percent"]),
        currency=body["currency"],
        amount_held=int(body["amount_held"]),
        amount_captured=int(body["amount_captured"]),
        payment_method=body["payment_method"],
        payment_reference=body["payment_reference"],
        notes=tuple(body.get("notes") or ()),
    )
