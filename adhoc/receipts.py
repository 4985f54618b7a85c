"""Ad hoc charging receipts: one :class:`Receipt` in, the same itemised content out as an
HTML fragment, a standalone HTML page, a one-page A4 PDF, plain text and an e-mail.

Pure: no database, no network, no clock (the PDF's creation date is the receipt's
``issued_at``, so two renders of one receipt are byte-identical).

Texts come in Portuguese (``pt``) and English (``en``) from :data:`CATALOGUE`. Money is
formatted from :class:`~decimal.Decimal` only, rounded half-up to cents for display
(``0,35 €`` in Portuguese, ``€0.35`` in English); unit prices keep up to four decimals, as
tariffs publish them (``0,2345 €/kWh``). Times are shown in the Location's time zone with
the zone named. Every text that comes from outside (names, addresses, references, notes)
is cleaned of control and formatting characters (bidirectional overrides included), cut to
:data:`MAX_TEXT` characters and, in HTML, escaped.

The PDF uses the standard Helvetica font with the Windows-1252 encoding that PDF viewers
map for it (``WinAnsiEncoding``): it holds ``€`` and every Portuguese letter, and needs no
font file on the machine. Characters it lacks are printed as ``?``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import EmailMessage
from email.utils import getaddresses
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fpdf import FPDF
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

__all__ = [
    "CATALOGUE",
    "KINDS",
    "LANGUAGES",
    "MAX_LINES",
    "MAX_NOTES",
    "MAX_TEXT",
    "NOTE_TEXTS",
    "Receipt",
    "ReceiptLine",
    "build_email",
    "clean_text",
    "format_money",
    "render_html",
    "render_page",
    "render_pdf",
    "render_text",
]

TEMPLATES = Path(__file__).parent / "templates"

LANGUAGES = ("pt", "en")
# the OCPI tariff dimensions a price line may bill
KINDS = ("FLAT", "ENERGY", "TIME", "PARKING_TIME")
# longest text printed from a field (names, addresses, notes...): longer ones are cut (and
# shorter limits for the EVSE id, 48 as in OCPI, the tax number, 32, the payment method, 40,
# and its reference, 100)
MAX_TEXT = 200
# largest magnitude of a quantity or an amount
MAX_DECIMAL = Decimal(10) ** 9
# what one A4 page holds at worst (every text at MAX_TEXT): more is refused, not spilled
MAX_LINES = 12
MAX_NOTES = 6
_MAX_NUMBER = 64

CATALOGUE: dict[str, dict[str, str]] = {
    "pt": {
        "receipt": "Recibo",
        "issued": "Emitido em",
        "operator": "Operador",
        "tax_id": "NIF",
        "address": "Morada",
        "location": "Local",
        "evse": "Ponto de carregamento",
        "start": "Início",
        "end": "Fim",
        "duration": "Duração",
        "energy": "Energia",
        "item": "Descrição",
        "quantity": "Quantidade",
        "unit_price": "Preço unitário",
        "amount": "Valor s/ IVA",
        "no_lines": "Nada a pagar.",
        "subtotal": "Subtotal s/ IVA",
        "vat": "IVA",
        "total": "Total c/ IVA",
        "held": "Valor pré-autorizado",
        "captured": "Valor cobrado",
        "released": "Valor libertado",
        "method": "Meio de pagamento",
        "reference": "Referência do pagamento",
        "notes": "Notas",
        "view_online": "Ver online",
        "FLAT": "Taxa de ativação",
        "ENERGY": "Energia",
        "TIME": "Tempo de carregamento",
        "PARKING_TIME": "Tempo de estacionamento",
        "card": "Cartão",
        "mb_way": "MB WAY",
        "terminal": "Terminal de pagamento",
        "manual": "Manual",
        "greeting": "Obrigado por carregar connosco. Segue o seu recibo (também em PDF, em anexo).",
    },
    "en": {
        "receipt": "Receipt",
        "issued": "Issued",
        "operator": "Operator",
        "tax_id": "Tax number",
        "address": "Address",
        "location": "Location",
        "evse": "Charging point",
        "start": "Start",
        "end": "End",
        "duration": "Duration",
        "energy": "Energy",
        "item": "Item",
        "quantity": "Quantity",
        "unit_price": "Unit price",
        "amount": "Amount excl. VAT",
        "no_lines": "Nothing to pay.",
        "subtotal": "Subtotal excl. VAT",
        "vat": "VAT",
        "total": "Total incl. VAT",
        "held": "Amount held",
        "captured": "Amount charged",
        "released": "Released",
        "method": "Payment method",
        "reference": "Payment reference",
        "notes": "Notes",
        "view_online": "View online",
        "FLAT": "Start fee",
        "ENERGY": "Energy",
        "TIME": "Charging time",
        "PARKING_TIME": "Parking time",
        "card": "Card",
        "mb_way": "MB WAY",
        "terminal": "Payment terminal",
        "manual": "Manual",
        "greeting": "Thank you for charging with us. Here is your receipt (also attached as PDF).",
    },
}

# notes that come as codes (adhoc.receipts_data, ocpi_bridge's pricing): printed in the
# receipt's language; any other note is printed as given
NOTE_TEXTS: dict[str, dict[str, str]] = {
    "capped_at_hold": {
        "pt": "O carregamento parou no valor pré-autorizado.",
        "en": "The charge stopped at the amount held.",
    },
    "total_cost set by min_price": {
        "pt": "O total é o preço mínimo da tarifa.",
        "en": "The total is the tariff's minimum price.",
    },
    "total_cost set by max_price": {
        "pt": "O total é o preço máximo da tarifa.",
        "en": "The total is the tariff's maximum price.",
    },
}

ZONE_NAMES = {
    "Europe/Lisbon": {"pt": "Lisboa", "en": "Lisbon"},
    "Atlantic/Madeira": {"pt": "Madeira", "en": "Madeira"},
    "Atlantic/Azores": {"pt": "Açores", "en": "Azores"},
}

_CENT = Decimal("0.01")
_UNIT_PRICE_STEP = Decimal("0.0001")
_SPACE = "\u00a0"  # no-break space: "1 234,56 €" stays on one line


# ---------------------------------------------------------------------------- the data


def _decimal(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Decimal):
        raise TypeError(
            f"{owner}.{name} must be a Decimal (money is never a float), not {type(value).__name__}"
        )
    if not value.is_finite() or abs(value) >= MAX_DECIMAL:
        raise ValueError(f"{owner}.{name} must be a finite number below 10^9, not {value:.20}")


def _aware(owner: str, name: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{owner}.{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{owner}.{name} must be timezone-aware (UTC), got {value.isoformat()}")


def _text(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a str, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    """One price component of the charge (an OCPI tariff dimension)."""

    kind: str  # "FLAT" | "ENERGY" | "TIME" | "PARKING_TIME"
    quantity: Decimal  # billed quantity: kWh for ENERGY, hours for TIME/PARKING_TIME, 1 for FLAT
    amount_excl_vat: Decimal
    amount_incl_vat: Decimal | None  # None when the tariff gives no VAT for it
    # None when several prices applied (time-of-day): then the amount only is shown
    unit_price_excl_vat: Decimal | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"ReceiptLine.kind must be one of {', '.join(KINDS)}, not {self.kind!r:.40}"
            )
        _decimal("ReceiptLine", "quantity", self.quantity)
        if self.quantity < 0:
            raise ValueError(f"ReceiptLine.quantity must not be negative, got {self.quantity}")
        _decimal("ReceiptLine", "amount_excl_vat", self.amount_excl_vat)
        _decimal("ReceiptLine", "amount_incl_vat", self.amount_incl_vat, optional=True)
        _decimal("ReceiptLine", "unit_price_excl_vat", self.unit_price_excl_vat, optional=True)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Everything a receipt shows. Times are UTC and aware; they are shown in ``time_zone``.

    Construction checks types and values and raises :class:`TypeError` or
    :class:`ValueError` naming the field. Texts are kept as given: the renderers clean and
    cut them.
    """

    number: str  # e.g. "AH-000123" (allocated by the caller; printed as given)
    issued_at: datetime  # UTC, aware
    time_zone: str  # the Location's (Europe/Lisbon, Atlantic/Azores, Atlantic/Madeira)
    language: str  # "pt" | "en"
    operator_name: str
    operator_tax_id: str  # NIF
    operator_address: str
    location_name: str
    location_address: str  # street, postal code, city in one line
    evse_id: str  # e.g. PT*MOB*E00175*01
    started_at: datetime  # UTC
    ended_at: datetime  # UTC
    energy_wh: int
    lines: tuple[ReceiptLine, ...]
    total_excl_vat: Decimal
    total_incl_vat: Decimal
    vat_percent: Decimal | None  # one VAT rate when all lines share it, else None
    currency: str  # "EUR"
    amount_held: int  # minor units (cents) that were pre-authorised (0: nothing was held)
    amount_captured: int  # minor units actually charged
    payment_method: str | None  # "card", "mb_way", "terminal", "manual"...
    payment_reference: str | None  # short provider reference to quote to support
    notes: tuple[str, ...] = ()  # e.g. "the charge stopped at the amount held"

    def __post_init__(self) -> None:
        for name in (
            "number",
            "time_zone",
            "language",
            "operator_name",
            "operator_tax_id",
            "operator_address",
            "location_name",
            "location_address",
            "evse_id",
            "currency",
        ):
            _text("Receipt", name, getattr(self, name))
        _text("Receipt", "payment_method", self.payment_method, optional=True)
        _text("Receipt", "payment_reference", self.payment_reference, optional=True)
        number = self.number
        if not number or len(number) > _MAX_NUMBER or not number.isprintable():
            raise ValueError(
                f"Receipt.number must be 1 to {_MAX_NUMBER} printable characters, "
                f"got {number!r:.80}"
            )
        if self.language not in LANGUAGES:
            raise ValueError(
                f"Receipt.language must be one of {', '.join(LANGUAGES)}, not {self.language!r:.20}"
            )
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"Receipt.time_zone is not a known time zone: {self.time_zone!r:.60}"
            ) from None
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise ValueError(
                f"Receipt.currency must be an ISO 4217 code, not {self.currency!r:.20}"
            )
        for name in ("issued_at", "started_at", "ended_at"):
            _aware("Receipt", name, getattr(self, name))
        for name in ("energy_wh", "amount_held", "amount_captured"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Receipt.{name} must be an int, not {type(value).__name__}")
            if not 0 <= value < 10**11:
                raise ValueError(f"Receipt.{name} must be within 0..10^11, got {value}")
        _decimal("Receipt", "total_excl_vat", self.total_excl_vat)
        _decimal("Receipt", "total_incl_vat", self.total_incl_vat)
        _decimal("Receipt", "vat_percent", self.vat_percent, optional=True)
        if self.vat_percent is not None and not 0 <= self.vat_percent <= 100:
            raise ValueError(f"Receipt.vat_percent must be within 0..100, got {self.vat_percent}")
        if not isinstance(self.lines, tuple) or not all(
            isinstance(x, ReceiptLine) for x in self.lines
        ):
            raise TypeError("Receipt.lines must be a tuple of ReceiptLine")
        if len(self.lines) > MAX_LINES:
            raise ValueError(
                f"Receipt.lines: at most {MAX_LINES} price lines fit a receipt, "
                f"got {len(self.lines)}"
            )
        if not isinstance(self.notes, tuple) or not all(isinstance(x, str) for x in self.notes):
            raise TypeError("Receipt.notes must be a tuple of str")
        if len(self.notes) > MAX_NOTES:
            raise ValueError(
                f"Receipt.notes: at most {MAX_NOTES} notes fit a receipt, got {len(self.notes)}"
            )

    def to_json(self) -> dict[str, Any]:
        """The receipt as JSON-ready data (what a store keeps): amounts as decimal strings,
        times as ``YYYY-MM-DDTHH:MM:SSZ`` (microseconds kept when there are any).
        :meth:`from_json` reads it back equal."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "lines":
                value = [
                    {g.name: _json_value(getattr(line, g.name)) for g in fields(line)}
                    for line in value
                ]
            elif f.name == "notes":
                value = list(value)
            out[f.name] = _json_value(value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Receipt:
        """A receipt from :meth:`to_json`'s data. Missing or malformed values are a
        ValueError (or TypeError) naming the field; unknown keys are ignored (a newer
        writer's)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a receipt's data must be a mapping, not {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.name == "notes":
                    continue
                raise ValueError(f"receipt data: {f.name} is missing")
            value = data[f.name]
            if f.name == "lines":
                if not isinstance(value, list) or len(value) > MAX_LINES:
                    raise ValueError(
                        f"receipt data: lines must be a list of at most {MAX_LINES} lines"
                    )
                value = tuple(_line_from_json(i, x) for i, x in enumerate(value))
            elif f.name == "notes":
                if not isinstance(value, list):
                    raise ValueError("receipt data: notes must be a list")
                value = tuple(value)
            elif f.name in _DATETIMES:
                value = _datetime_from_json(f.name, value)
            elif f.name in _DECIMALS:
                value = _decimal_from_json(f.name, value)
            kwargs[f.name] = value
        return cls(**kwargs)


_DATETIMES = ("issued_at", "started_at", "ended_at")
_DECIMALS = (
    "total_excl_vat",
    "total_incl_vat",
    "vat_percent",
    "quantity",
    "amount_excl_vat",
    "amount_incl_vat",
    "unit_price_excl_vat",
)


def _json_value(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return text
    return value


def _datetime_from_json(name: str, value: object) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"receipt data: {name} must be an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"receipt data: {name} is not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"receipt data: {name} has no time zone: {value!r}")
    return parsed.astimezone(UTC)


def _decimal_from_json(name: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(
            f"receipt data: {name} must be a decimal string, not {type(value).__name__}"
        )
    if isinstance(value, str) and len(value) > 40:
        raise ValueError(f"receipt data: {name} is too long for a number")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"receipt data: {name} is not a number: {value!r}") from None


def _line_from_json(index: int, data: object) -> ReceiptLine:
    if not isinstance(data, Mapping):
        raise ValueError(f"receipt data: lines[{index}] must be an object")
    kwargs: dict[str, Any] = {}
    for f in fields(ReceiptLine):
        if f.name not in data:
            raise ValueError(f"receipt data: lines[{index}].{f.name} is missing")
        value = data[f.name]
        kwargs[f.name] = (
            _decimal_from_json(f"lines[{index}].{f.name}", value) if f.name in _DECIMALS else value
        )
    return ReceiptLine(**kwargs)


# ---------------------------------------------------------------------------- formats


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` on one line: control characters become spaces, invisible formatting
    characters (bidirectional overrides, zero-width...) go, runs of spaces become one, and
    the result is cut to ``limit`` characters (ending with ``…`` when cut)."""
    chars = []
    for ch in value:
        category = unicodedata.category(ch)
        if category in ("Cc", "Zl", "Zp"):
            chars.append(" ")
        elif category not in ("Cf", "Cs", "Co", "Cn"):
            chars.append(ch)
    text = " ".join("".join(chars).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _group(digits: str, sep: str) -> str:
    out = []
    while len(digits) > 3:
        out.append(digits[-3:])
        digits = digits[:-3]
    out.append(digits)
    return sep.join(reversed(out))


def _number(value: Decimal, language: str, decimals: int) -> str:
    """``value`` (already rounded to ``decimals``) with the language's separators."""
    text = f"{abs(value):.{decimals}f}"
    whole, _, frac = text.partition(".")
    if language == "pt":
        text = _group(whole, _SPACE) + ("," + frac if frac else "")
    else:
        text = _group(whole, ",") + ("." + frac if frac else "")
    return ("-" if value < 0 else "") + text


def _money_text(value: Decimal, currency: str, language: str, decimals: int) -> str:
    number = _number(value, language, decimals)
    sign, digits = ("-", number[1:]) if number.startswith("-") else ("", number)
    if language == "pt":
        return f"{number}{_SPACE}{'€' if currency == 'EUR' else currency}"
    if currency == "EUR":
        return f"{sign}€{digits}"
    return f"{sign}{currency}{_SPACE}{digits}"


def format_money(amount: Decimal, currency: str, language: str) -> str:
    """An amount rounded half-up to cents: ``1 234,57 €`` (pt) or ``€1,234.57`` (en); a
    currency other than EUR is written by its code."""
    _decimal("format_money", "amount", amount)
    return _money_text(amount.quantize(_CENT, ROUND_HALF_UP), currency, language, 2)


def _unit_price(amount: Decimal, currency: str, language: str) -> str:
    """A unit price: at least two decimals, up to four (tariffs publish 0.2345 €/kWh)."""
    q = amount.quantize(_UNIT_PRICE_STEP, ROUND_HALF_UP)
    decimals = 4
    while decimals > 2 and q == q.quantize(Decimal(1).scaleb(-(decimals - 1))):
        decimals -= 1
    return _money_text(q, currency, language, decimals)


def _minor(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


def _duration(seconds: int) -> str:
    seconds = max(seconds, 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


def _local(at: datetime, zone: str, language: str) -> str:
    local = at.astimezone(ZoneInfo(zone))
    label = ZONE_NAMES.get(zone, {}).get(language, zone)
    return f"{local:%Y-%m-%d %H:%M:%S} {label} {_offset(local.utcoffset())}"


def _percent(value: Decimal, language: str) -> str:
    text = f"{value.normalize():f}"
    if language == "pt":
        return text.replace(".", ",") + _SPACE + "%"
    return text + "%"


def _quantity(line: ReceiptLine, language: str) -> str:
    if line.kind == "ENERGY":
        return _number(line.quantity.quantize(Decimal("0.001"), ROUND_HALF_UP), language, 3) + (
            f"{_SPACE}kWh"
        )
    if line.kind in ("TIME", "PARKING_TIME"):
        seconds = int((line.quantity * 3600).to_integral_value(ROUND_HALF_UP))
        return _duration(seconds)
    if line.quantity == line.quantity.to_integral_value():
        return _number(line.quantity.to_integral_value(), language, 0)
    return _number(line.quantity.quantize(Decimal("0.001"), ROUND_HALF_UP), language, 3)


_METHODS = ("card", "mb_way", "terminal", "manual")
_PER = {"ENERGY": "/kWh", "TIME": "/h", "PARKING_TIME": "/h", "FLAT": ""}


# ---------------------------------------------------------------------------- the view


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    value: str
    css: str = ""


@dataclass(frozen=True, slots=True)
class _LineView:
    label: str
    quantity: str
    unit_price: str  # "" when none applies
    amount: str


@dataclass(frozen=True, slots=True)
class _View:
    """Every text of a receipt, cleaned and formatted: what all the renderers print."""

    language: str
    title: str
    number: str
    issued_label: str
    issued: str
    issued_utc: str
    operator: tuple[_Row, ...]
    session: tuple[_Row, ...]
    heads: tuple[str, str, str, str]
    lines: tuple[_LineView, ...]
    no_lines: str
    totals: tuple[_Row, ...]
    payment: tuple[_Row, ...]
    notes_label: str
    notes: tuple[str, ...]
    view_online: str


def _view(r: Receipt) -> _View:
    lang = r.language
    t = CATALOGUE[lang]

    def money(value: Decimal) -> str:
        return format_money(value, r.currency, lang)

    seconds = int((r.ended_at - r.started_at).total_seconds())
    energy = _number(
        (Decimal(r.energy_wh) / 1000).quantize(Decimal("0.001"), ROUND_HALF_UP), lang, 3
    )
    lines = tuple(
        _LineView(
            label=t[line.kind],
            quantity=_quantity(line, lang),
            unit_price=(
                ""
                if line.unit_price_excl_vat is None
                else _unit_price(line.unit_price_excl_vat, r.currency, lang) + _PER[line.kind]
            ),
            amount=money(line.amount_excl_vat),
        )
        for line in r.lines
    )
    vat_label = t["vat"]
    if r.vat_percent is not None:
        vat_label += f" ({_percent(r.vat_percent, lang)})"
    totals = (
        _Row(t["subtotal"], money(r.total_excl_vat), "subtotal"),
        _Row(vat_label, money(r.total_incl_vat - r.total_excl_vat), "vat"),
        _Row(t["total"], money(r.total_incl_vat), "total"),
    )
    payment: list[_Row] = []
    if r.amount_held > 0:
        payment.append(_Row(t["held"], money(_minor(r.amount_held)), "held"))
    payment.append(_Row(t["captured"], money(_minor(r.amount_captured)), "captured"))
    if r.amount_held > 0:
        released = max(r.amount_held - r.amount_captured, 0)
        payment.append(_Row(t["released"], money(_minor(released)), "released"))
    if r.payment_method:
        method = t.get(r.payment_method) if r.payment_method in _METHODS else None
        payment.append(_Row(t["method"], method or clean_text(r.payment_method, 40), "method"))
    if r.payment_reference:
        payment.append(_Row(t["reference"], clean_text(r.payment_reference, 100), "reference"))
    number = clean_text(r.number, _MAX_NUMBER)
    return _View(
        language=lang,
        title=f"{t['receipt']} {number}",
        number=number,
        issued_label=t["issued"],
        issued=_local(r.issued_at, r.time_zone, lang),
        issued_utc=r.issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        operator=(
            _Row(t["operator"], clean_text(r.operator_name), "operator"),
            _Row(t["tax_id"], clean_text(r.operator_tax_id, 32), "tax-id"),
            _Row(t["address"], clean_text(r.operator_address), "operator-address"),
        ),
        session=(
            _Row(t["location"], clean_text(r.location_name), "location"),
            _Row(t["address"], clean_text(r.location_address), "location-address"),
            _Row(t["evse"], clean_text(r.evse_id, 48), "evse"),
            _Row(t["start"], _local(r.started_at, r.time_zone, lang), "start"),
            _Row(t["end"], _local(r.ended_at, r.time_zone, lang), "end"),
            _Row(t["duration"], _duration(seconds), "duration"),
            _Row(t["energy"], f"{energy}{_SPACE}kWh", "energy"),
        ),
        heads=(t["item"], t["quantity"], t["unit_price"], t["amount"]),
        lines=lines,
        no_lines=t["no_lines"],
        totals=totals,
        payment=tuple(payment),
        notes_label=t["notes"],
        notes=tuple(
            clean_text(NOTE_TEXTS.get(n, {}).get(lang, n)) for n in r.notes if clean_text(n)
        ),
        view_online=t["view_online"],
    )


# ---------------------------------------------------------------------------- HTML


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _http_url(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value)
        or len(value) > 2000
        or not value.isprintable()
    ):
        raise ValueError(f"{name} must be an http(s) URL of at most 2000 characters")
    return value


def render_html(receipt: Receipt) -> Markup:
    """The receipt as an HTML fragment, ``<section class="receipt">``, for a page of the
    caller's (it is :class:`~markupsafe.Markup`, a ``str`` that Jinja2 inserts unescaped).
    Its parts have classes (``receipt-lines``, ``receipt-totals``, ``total``...) for the
    caller's CSS; :func:`render_page` shows one way to style them."""
    return Markup(
        _env()
        .get_template("receipt.html")
        .render(v=_view(receipt), page=False, link=None, intro=None)
    )


def _page(receipt: Receipt, link: str | None = None, intro: str | None = None) -> str:
    return (
        _env()
        .get_template("receipt.html")
        .render(v=_view(receipt), page=True, link=link, intro=intro)
    )


def render_page(receipt: Receipt) -> str:
    """A complete standalone HTML page holding :func:`render_html`'s fragment: inline CSS,
    no external resources, readable on a phone and printable."""
    return _page(receipt)


# ---------------------------------------------------------------------------- text


def render_text(receipt: Receipt) -> str:
    """The receipt as plain text (an e-mail's body), lines of at most ~80 characters
    apart from long names."""
    v = _view(receipt)

    def rows(items: tuple[_Row, ...]) -> list[str]:
        return [f"{row.label}: {row.value}" for row in items]

    out = [v.title, f"{v.issued_label}: {v.issued}", ""]
    out += [*rows(v.operator), "", *rows(v.session), ""]
    if v.lines:
        for line in v.lines:
            detail = line.quantity + (f" × {line.unit_price}" if line.unit_price else "")
            out.append(f"{line.label}: {detail} = {line.amount}")
    else:
        out.append(v.no_lines)
    out.append("")
    out += [*rows(v.totals), "", *rows(v.payment)]
    if v.notes:
        out += ["", f"{v.notes_label}:", *(f"- {n}" for n in v.notes)]
    return "\n".join(out).replace(_SPACE, " ") + "\n"


# ---------------------------------------------------------------------------- PDF

_PDF_ENCODING = "cp1252"  # the core fonts' WinAnsiEncoding: €, and Portuguese letters


def _pdf_text(value: str) -> str:
    return value.encode(_PDF_ENCODING, errors="replace").decode(_PDF_ENCODING)


def _pdf(v: _View, issued_at: datetime, author: str, compress: bool, size: float) -> FPDF:
    """The receipt laid out with ``size``-point text (the title is larger)."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.core_fonts_encoding = _PDF_ENCODING
    pdf.set_compression(compress)
    pdf.set_creation_date(issued_at.astimezone(UTC))
    pdf.set_title(_pdf_text(v.number))
    pdf.set_author(_pdf_text(author))
    pdf.set_subject(_pdf_text(v.title))
    pdf.set_creator("csms adhoc")
    pdf.set_producer("csms adhoc")
    pdf.set_lang("pt-PT" if v.language == "pt" else "en")
    pdf.set_margins(15, 12, 15)
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_page()
    width = pdf.epw
    label_w = 48.0
    lh = size * 0.55  # mm per line of text
    gap = lh * 0.4

    pdf.set_font("Helvetica", "B", size + 7)
    pdf.multi_cell(width, lh * 1.8, _pdf_text(v.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", size)
    pdf.cell(width, lh, _pdf_text(f"{v.issued_label}: {v.issued}"), new_x="LMARGIN", new_y="NEXT")

    def rows(items: tuple[_Row, ...], bold: tuple[str, ...] = ()) -> None:
        pdf.ln(gap)
        for row in items:
            pdf.set_font("Helvetica", "B" if row.css in bold else "", size)
            pdf.set_x(pdf.l_margin)
            pdf.cell(label_w, lh, _pdf_text(row.label))
            pdf.multi_cell(width - label_w, lh, _pdf_text(row.value), new_x="LMARGIN", new_y="NEXT")

    rows(v.operator)
    rows(v.session)

    pdf.ln(gap * 1.5)
    cols = (width - 105.0, 30.0, 35.0, 40.0)
    aligns = ("L", "R", "R", "R")
    pdf.set_font("Helvetica", "B", size)
    for text, w, align in zip(v.heads, cols, aligns, strict=True):
        pdf.cell(w, lh * 1.2, _pdf_text(text), border="B", align=align)
    pdf.ln(lh * 1.2)
    pdf.set_font("Helvetica", "", size)
    if not v.lines:
        pdf.cell(width, lh * 1.2, _pdf_text(v.no_lines), new_x="LMARGIN", new_y="NEXT")
    for line in v.lines:
        cells = (line.label, line.quantity, line.unit_price, line.amount)
        for text, w, align in zip(cells, cols, aligns, strict=True):
            pdf.cell(w, lh * 1.2, _pdf_text(text), align=align)
        pdf.ln(lh * 1.2)
    pdf.cell(width, 1, "", border="T", new_x="LMARGIN", new_y="NEXT")
    for row in v.totals:
        total = row.css == "total"
        pdf.set_font("Helvetica", "B" if total else "", size + 1 if total else size)
        pdf.cell(width - cols[3], lh * 1.2, _pdf_text(row.label), align="R")
        pdf.cell(cols[3], lh * 1.2, _pdf_text(row.value), align="R", new_x="LMARGIN", new_y="NEXT")

    rows(v.payment, bold=("captured",))
    if v.notes:
        pdf.ln(gap * 1.5)
        pdf.set_font("Helvetica", "B", size)
        pdf.cell(width, lh, _pdf_text(v.notes_label), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", size)
        for note in v.notes:
            pdf.multi_cell(width, lh, _pdf_text(f"- {note}"), new_x="LMARGIN", new_y="NEXT")
    return pdf


# text sizes tried in turn: the first whose layout holds on one page is kept
_PDF_SIZES = (9.0, 8.0, 7.0, 6.0)


def render_pdf(receipt: Receipt, *, compress: bool = True) -> bytes:
    """The receipt as a one-page A4 PDF (title: the receipt's number; creation date: its
    ``issued_at``, so the bytes depend on the receipt only). Long texts make the type
    smaller rather than spill onto a second page. ``compress=False`` leaves the page's
    content stream readable (tests, debugging)."""
    v = _view(receipt)
    author = clean_text(receipt.operator_name)
    for size in _PDF_SIZES:
        pdf = _pdf(v, receipt.issued_at, author, compress, size)
        if pdf.pages_count == 1:
            break
    return bytes(pdf.output())


# ---------------------------------------------------------------------------- e-mail


def _one_address(value: str, name: str) -> str:
    if not isinstance(value, str) or not value.isprintable() or len(value) > 320:
        raise ValueError(f"{name} must be one e-mail address on one line")
    pairs = getaddresses([value])
    if len(pairs) != 1 or not re.fullmatch(
        r"[^@\s<>,;:\"()\[\]]+@[^@\s<>,;:\"()\[\]]+\.[^@\s<>,;:\"()\[\]]+", pairs[0][1]
    ):
        raise ValueError(f"{name} must be exactly one e-mail address, got {value!r:.80}")
    return value


def _filename(number: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", number).strip("._") or "receipt") + ".pdf"


def build_email(receipt: Receipt, *, sender: str, to: str, site_url: str | None) -> EmailMessage:
    """The receipt as an e-mail: the subject names the receipt's number and the operator;
    a plain text body and an HTML alternative (the page), and the PDF attached as
    ``<number>.pdf``. ``site_url`` (http or https), when given, is where the receipt can be
    seen again; it is linked from both bodies. ``sender`` and ``to`` must be one address
    each (a display name is allowed): anything else is a ValueError, never a second
    recipient."""
    sender = _one_address(sender, "sender")
    to = _one_address(to, "to")
    link = _http_url(site_url, "site_url")
    t = CATALOGUE[receipt.language]
    v = _view(receipt)
    msg = EmailMessage()
    msg["Subject"] = f"{v.title} · {clean_text(receipt.operator_name, 80)}"
    msg["From"] = sender
    msg["To"] = to
    text = t["greeting"] + "\n\n" + render_text(receipt)
    if link:
        text += f"\n{t['view_online']}: {link}\n"
    msg.set_content(text)
    msg.add_alternative(_page(receipt, link, t["greeting"]), subtype="html")
    msg.add_attachment(
        render_pdf(receipt),
        maintype="application",
        subtype="pdf",
        filename=_filename(receipt.number),
    )
    return msg
