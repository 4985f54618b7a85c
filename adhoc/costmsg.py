"""The price at the station: the OCPP 1.6 pricing extension's DataTransfer messages.

The Open Charge Alliance's application note "OCPP & California Pricing Requirements" adds
to OCPP 1.6 three DataTransfer.req messages from the central system, all with the vendor
id ``org.openchargealliance.costmsg``. Their ``data`` is a *string* in OCPP 1.6: the JSON
text of an object.

- ``SetUserPrice``, after the driver is identified and before the start:
  ``idToken`` (string), ``priceText`` (string), both required.
- ``RunningCost``, during the transaction: ``transactionId`` (integer), ``timestamp``
  (dateTime of the meter value the cost is based on), ``meterValue`` (integer, Wh),
  ``cost`` (decimal, the total so far), ``state`` ("Charging" or "Idle") and
  ``chargingPrice`` (object with optional ``kWhPrice``, ``hourPrice``, ``flatFee``), all
  required; optional ``idlePrice``, ``nextPeriod``, ``triggerMeterValue`` (not built
  here) and ``priceText``.
- ``FinalCost``, at the end: ``transactionId`` (integer), ``cost`` (decimal, the total)
  and ``priceText`` (string) required, ``qrCodeText`` (string, a URL shown as a QR code)
  optional.

A station says it supports them with the read-only configuration key
``CustomDisplayCostAndPrice`` = true (:data:`SUPPORT_KEY`); one without the extension
answers ``UnknownVendorId``.

Everything here is pure: builders that validate their input (``ValueError`` naming the
field and the rule) and return the DataTransfer.req payload, and :func:`price_text`, the
short text of a price for a station's display. Amounts are ``Decimal`` (an ``int`` is
accepted, a ``float`` never) and go on the wire as JSON numbers with at most 4 decimals,
rounded half-up, written from the decimal digits (never through a float).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = [
    "FINAL_COST",
    "MAX_TEXT",
    "RUNNING_COST",
    "SET_USER_PRICE",
    "SUPPORT_KEY",
    "VENDOR_ID",
    "PriceLine",
    "final_cost",
    "price_text",
    "running_cost",
    "set_user_price",
]

VENDOR_ID = "org.openchargealliance.costmsg"
SET_USER_PRICE = "SetUserPrice"
RUNNING_COST = "RunningCost"
FINAL_COST = "FinalCost"
SUPPORT_KEY = "CustomDisplayCostAndPrice"  # read-only boolean key of a station that can

MAX_TEXT = 255  # characters of a priceText (stations have small screens)
MAX_ID_TAG = 20  # OCPP 1.6 IdToken: CiString20
MAX_URL = 512  # qrCodeText: a URL a station can draw as a QR code
MAX_AMOUNT = Decimal(1_000_000)  # exclusive: no price or cost is that large
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # OCPP 1.6 integers (transactionId, meterValue)

STATES = ("Charging", "Idle")
KINDS = ("ENERGY", "TIME", "PARKING_TIME", "FLAT")  # also the order of a price text
LANGUAGES = ("pt", "en")

_Q4 = Decimal("0.0001")


# ------------------------------------------------------------------------------ checks


def _amount(value: object, what: str) -> Decimal:
    """A non-negative amount below :data:`MAX_AMOUNT`, rounded half-up to 4 decimals."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise ValueError(f"{what} must be a Decimal (or an int), not {type(value).__name__}")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{what} must be a finite number, not {number}")
    if number < 0:
        raise ValueError(f"{what} must not be negative ({number})")
    if number >= MAX_AMOUNT:
        raise ValueError(f"{what} must be below {MAX_AMOUNT} ({number})")
    return number.quantize(_Q4, rounding=ROUND_HALF_UP)


def _integer(value: object, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high} ({value})")
    return value


def _text(value: object, what: str, limit: int, *, lines: bool = True) -> str:
    """Displayable text: not blank, at most ``limit`` characters, no control or format
    characters (bidi overrides, zero-width ones; a line break is allowed where ``lines``),
    no lone surrogates."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long; at most {limit}")
    for char in value:
        if char == "\n" and lines:
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            raise ValueError(f"{what} must not contain the control character {char!r}")
    return value


def _time(value: object, what: str) -> str:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _url(value: object, what: str) -> str:
    text = _text(value, what, MAX_URL, lines=False)
    if not text.startswith(("https://", "http://")) or any(c.isspace() for c in text):
        raise ValueError(f"{what} must be an http(s) URL without spaces")
    return text


# -------------------------------------------------------------------------- JSON text


def _decimals(value: Decimal) -> str:
    """An amount (already at most 4 decimals) written with 2 decimals at least and no
    exponent: 0.35, 0.0615, 3.00, 100.00. On the wire too: a decimal field keeps its point
    (small JSON parsers on stations tell integers from decimals)."""
    cents = value.quantize(Decimal("0.01"))
    return format(cents if cents == value else value.normalize(), "f")


def _dumps(value: Any) -> str:
    """Compact JSON where Decimals are numbers written from their digits (``json`` would
    refuse them, and a float would bring its binary artefacts)."""
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Decimal):
        return _decimals(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str | bool):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} in costmsg data")  # (a bug of ours)


def _payload(message_id: str, data: Mapping[str, Any]) -> dict[str, str]:
    return {"vendorId": VENDOR_ID, "messageId": message_id, "data": _dumps(data)}


# --------------------------------------------------------------------------- builders


def set_user_price(id_tag: str, price_text: str) -> dict[str, str]:
    """SetUserPrice: the price this driver pays, shown after authorisation, before the
    start (``id_tag`` is the idTag the station authorised)."""
    data = {
        "idToken": _text(id_tag, "id_tag", MAX_ID_TAG, lines=False),
        "priceText": _text(price_text, "price_text", MAX_TEXT),
    }
    return _payload(SET_USER_PRICE, data)


def running_cost(
    transaction_id: int,
    at: datetime,
    meter_wh: int,
    cost: Decimal,
    *,
    state: str = "Charging",
    kwh_price: Decimal | None = None,
    hour_price: Decimal | None = None,
    flat_fee: Decimal | None = None,
    price_text: str | None = None,
) -> dict[str, str]:
    """RunningCost: the cost so far (VAT included, what the driver will pay) of the
    transaction up to the meter value read at ``at`` (``meter_wh``, the register in Wh),
    and the unit prices the station may use to count on between two of these messages
    (``kwh_price`` per kWh, ``hour_price`` per hour of charging, ``flat_fee`` once; the
    ones not given are left out, ``chargingPrice`` is then ``{}``)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, not {state!r}")
    prices = {
        "kWhPrice": kwh_price,
        "hourPrice": hour_price,
        "flatFee": flat_fee,
    }
    charging_price = {
        key: _amount(value, name)
        for (key, value), name in zip(
            prices.items(), ("kwh_price", "hour_price", "flat_fee"), strict=True
        )
        if value is not None
    }
    data: dict[str, Any] = {
        "transactionId": _integer(transaction_id, "transaction_id"),
        "timestamp": _time(at, "at"),
        "meterValue": _integer(meter_wh, "meter_wh", 0),
        "cost": _amount(cost, "cost"),
        "state": state,
        "chargingPrice": charging_price,
    }
    if price_text is not None:
        data["priceText"] = _text(price_text, "price_text", MAX_TEXT)
    return _payload(RUNNING_COST, data)


def final_cost(
    transaction_id: int, cost: Decimal, price_text: str, qr_code_text: str | None = None
) -> dict[str, str]:
    """FinalCost: the total the driver pays (VAT included), a text of it for the display
    and, optionally, a URL the station shows as a QR code (the receipt)."""
    data: dict[str, Any] = {
        "transactionId": _integer(transaction_id, "transaction_id"),
        "cost": _amount(cost, "cost"),
        "priceText": _text(price_text, "price_text", MAX_TEXT),
    }
    if qr_code_text is not None:
        data["qrCodeText"] = _url(qr_code_text, "qr_code_text")
    return _payload(FINAL_COST, data)


# ------------------------------------------------------------------------- price text


@dataclass(frozen=True, slots=True)
class PriceLine:
    """One price component, as in an OCPI tariff: ENERGY per kWh, TIME per hour of
    charging, PARKING_TIME per hour without charging, FLAT once per session; the price
    without VAT and the VAT rate in percent (None: not known)."""

    kind: str
    price_excl_vat: Decimal
    vat_percent: Decimal | None = None


def _line(item: object, index: int) -> PriceLine:
    names = ("kind", "price_excl_vat", "vat_percent")
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in names)
        if unknown:
            raise ValueError(f"lines[{index}] has unknown fields {unknown}")
        if "kind" not in item or "price_excl_vat" not in item:
            raise ValueError(f"lines[{index}] needs kind and price_excl_vat")
        values = [item.get(name) for name in names]
    elif all(hasattr(item, name) for name in names[:2]):
        values = [getattr(item, name, None) for name in names]
    else:
        raise ValueError(f"lines[{index}] must be a PriceLine or a mapping")
    kind, price, vat = values
    if kind not in KINDS:
        raise ValueError(f"lines[{index}].kind must be one of {KINDS}, not {kind!r}")
    price = _amount(price, f"lines[{index}].price_excl_vat")
    if vat is not None:
        vat = _amount(vat, f"lines[{index}].vat_percent")
        if vat > 100:
            raise ValueError(f"lines[{index}].vat_percent must be at most 100 ({vat})")
    return PriceLine(str(kind), price, vat)


def price_text(
    lines: Iterable[PriceLine | Mapping[str, Any]],
    language: str,
    *,
    currency: str = "EUR",
    max_length: int = MAX_TEXT,
) -> str:
    """A short text of a price for a station's display, in Portuguese or English.

    ``lines`` are the price components that apply now (one per kind at most: a display
    cannot show a tariff's restrictions), each a :class:`PriceLine` or a mapping with the
    same fields. When every component that costs something has a VAT rate, the amounts
    are shown VAT included (rounded half-up to 4 decimals), else all without VAT, and
    the text says which. TIME and PARKING_TIME are shown per minute when that price is
    exact in 4 decimals, else per hour. Free components are left out; nothing to pay
    reads "Gratuito" / "Free".

    >>> price_text([PriceLine("ENERGY", Decimal("0.2846"), Decimal(23))], "pt")
    '0,3501 EUR/kWh, IVA incl.'

    Raises ValueError for a bad component, language or currency, and for a text longer
    than ``max_length`` (never cut: a price is shown whole or not at all).
    """
    if not isinstance(language, str) or language.lower() not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    lang = language.lower()
    if not (
        isinstance(currency, str)
        and len(currency) == 3
        and currency.isascii()
        and currency.isalpha()
        and currency.isupper()
    ):
        raise ValueError(f"currency must be an ISO 4217 code such as EUR, not {currency!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, not {max_length!r}")
    if isinstance(lines, str | bytes | Mapping):
        raise ValueError("lines must be a list of price components")
    parsed = [_line(item, i) for i, item in enumerate(lines)]
    kinds = [p.kind for p in parsed]
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise ValueError(f"one component per kind (the ones that apply now): {repeated} repeat")
    paid = sorted((p for p in parsed if p.price_excl_vat > 0), key=lambda p: KINDS.index(p.kind))
    if not paid:
        return "Gratuito" if lang == "pt" else "Free"
    with_vat = all(p.vat_percent is not None for p in paid)
    parts = [_part(p, with_vat, lang, currency) for p in paid]
    if lang == "pt":
        text = " + ".join(parts) + (", IVA incl." if with_vat else ", IVA não incl.")
    else:
        text = " + ".join(parts) + (" incl. VAT" if with_vat else " excl. VAT")
    if len(text) > max_length:
        raise ValueError(f"the price text is {len(text)} characters long; at most {max_length}")
    return text


_UNITS = {
    "pt": {"ENERGY": "/kWh", "TIME": "", "PARKING_TIME": " estacionamento", "FLAT": "/sessão"},
    "en": {"ENERGY": "/kWh", "TIME": "", "PARKING_TIME": " parking", "FLAT": "/session"},
}


def _part(line: PriceLine, with_vat: bool, lang: str, currency: str) -> str:
    exact = line.price_excl_vat
    if with_vat and line.vat_percent is not None:
        exact = exact * (100 + line.vat_percent) / 100
    per = ""
    if line.kind in ("TIME", "PARKING_TIME"):
        minute = exact / 60
        if minute == minute.quantize(_Q4):
            exact, per = minute, "/min"
        else:
            per = "/h"
    amount = _decimals(exact.quantize(_Q4, rounding=ROUND_HALF_UP))
    if lang == "pt":
        amount = amount.replace(".", ",")
    unit = _UNITS[lang][line.kind]
    if line.kind in ("TIME", "PARKING_TIME"):
        unit = per + unit
    if lang == "pt":
        return f"{amount} {currency}{unit}"
    return f"{currency} {amount}{unit}"
