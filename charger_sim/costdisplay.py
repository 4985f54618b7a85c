"""The station's display for the OCPP 1.6 pricing extension (vendor id
``org.openchargealliance.costmsg``, the OCA's "OCPP & California Pricing Requirements").

The central system sends DataTransfer.req with messageId ``SetUserPrice`` (the driver's
price, before the start), ``RunningCost`` (the cost so far) or ``FinalCost`` (the total);
``data`` is the JSON text of an object. A station that has the extension reports the
read-only configuration key ``CustomDisplayCostAndPrice`` = true and answers:

* ``Accepted``: a known messageId whose data has the required fields with their types;
* ``UnknownMessageId``: any other messageId (or none);
* ``Rejected``: data missing, not JSON text of an object, or a required field missing or
  of the wrong type.

The transactionId is not checked against the station's transactions: a RunningCost may
arrive right after StartTransaction.conf, before the station has read that answer, and a
FinalCost after the transaction has ended.

:func:`read` checks a message and returns its data (decimal numbers as ``Decimal``);
:func:`display_text` is what the simulated display shows for it. The messages carry no
currency; the simulated stations show euros.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

VENDOR_ID = "org.openchargealliance.costmsg"
SUPPORT_KEY = "CustomDisplayCostAndPrice"
SET_USER_PRICE = "SetUserPrice"
RUNNING_COST = "RunningCost"
FINAL_COST = "FinalCost"
MESSAGE_IDS = (SET_USER_PRICE, RUNNING_COST, FINAL_COST)
MAX_MESSAGES = 100  # a station keeps the last ones only
CURRENCY = "EUR"
_LIMIT = 10**12  # a decimal beyond this is nonsense (and 1E+999999 cannot be displayed)


class CostMessage(NamedTuple):
    """One message the station accepted: its messageId, its data and when it came."""

    message_id: str
    data: dict[str, Any]
    received_at: datetime


class BadCostMessage(ValueError):
    """The data of a known messageId is unusable (answered Rejected); says why."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _parse(data: object) -> dict[str, Any]:
    if not isinstance(data, str):
        raise BadCostMessage("data must be the JSON text of an object")
    try:
        value = json.loads(data, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadCostMessage(f"data is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadCostMessage("data must be a JSON object")
    return value


def _need(data: dict[str, Any], name: str, kind: str) -> Any:
    if name not in data:
        raise BadCostMessage(f"{name} is missing")
    return _check(data, name, kind)


def _check(data: dict[str, Any], name: str, kind: str) -> Any:
    value = data[name]
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "decimal":
        ok = isinstance(value, int | Decimal) and not isinstance(value, bool)
        ok = ok and abs(value) < _LIMIT
    elif kind == "string":
        ok = isinstance(value, str)
    elif kind == "object":
        ok = isinstance(value, dict)
    else:  # dateTime
        ok = isinstance(value, str) and _is_time(value)
    if not ok:
        raise BadCostMessage(
            f"{name} must be a {kind}" + (" below 10^12" if kind == "decimal" else "")
        )
    return value


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def read(message_id: str, data: object) -> dict[str, Any]:
    """The data of a SetUserPrice, RunningCost or FinalCost, checked (raises
    :class:`BadCostMessage`); unknown fields are kept and ignored."""
    fields = _parse(data)
    if message_id == SET_USER_PRICE:
        _need(fields, "idToken", "string")
        _need(fields, "priceText", "string")
    elif message_id == RUNNING_COST:
        _need(fields, "transactionId", "integer")
        _need(fields, "timestamp", "dateTime")
        if _need(fields, "meterValue", "integer") < 0:
            raise BadCostMessage("meterValue must not be negative")
        if _need(fields, "cost", "decimal") < 0:
            raise BadCostMessage("cost must not be negative")
        if _need(fields, "state", "string") not in ("Charging", "Idle"):
            raise BadCostMessage("state must be Charging or Idle")
        prices = _need(fields, "chargingPrice", "object")
        for name in ("kWhPrice", "hourPrice", "flatFee"):
            if name in prices:
                _check(prices, name, "decimal")
        if "priceText" in fields:
            _check(fields, "priceText", "string")
    elif message_id == FINAL_COST:
        _need(fields, "transactionId", "integer")
        if _need(fields, "cost", "decimal") < 0:
            raise BadCostMessage("cost must not be negative")
        _need(fields, "priceText", "string")
        if "qrCodeText" in fields:
            _check(fields, "qrCodeText", "string")
    else:
        raise ValueError(f"unknown messageId {message_id!r}")  # (the caller checks first)
    return fields


def _money(value: int | Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)} {CURRENCY}"


def display_text(message_id: str, data: dict[str, Any]) -> str:
    """What the display shows for a message :func:`read` accepted."""
    if message_id == SET_USER_PRICE:
        return f"Price: {data['priceText']}"
    if message_id == RUNNING_COST:
        text = f"Cost: {_money(data['cost'])}"
        if data["state"] == "Idle":
            text += " (idle)"
        if data.get("priceText"):
            text += f" | {data['priceText']}"
        return text
    text = f"Total: {_money(data['cost'])} | {data['priceText']}"
    if data.get("qrCodeText"):
        text += f" | QR: {data['qrCodeText']}"
    return text
