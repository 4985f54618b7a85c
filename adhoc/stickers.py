"""The EVSEs' QR code stickers: a QR code as inline SVG, and a printable A4 page of
stickers for one Location (one sticker per EVSE).

Pure: data in, text out. A sticker holds the QR code of the EVSE's public page, the EVSE id
in large type, the call to scan in both languages (the driver's may not be the
operator's), the connector and its power, the URL in small type and the operator's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .receipts import LANGUAGES, clean_text

__all__ = ["CONNECTORS", "MAX_STICKERS", "MAX_URL", "Sticker", "qr_svg", "sticker_sheet"]

TEMPLATES = Path(__file__).parent / "templates"

# longest URL put in a QR code: longer ones make codes too dense to scan from a sticker
MAX_URL = 512
# stickers on one sheet (a Location's EVSEs)
MAX_STICKERS = 500

# OCPI 2.2.1 ConnectorType values as drivers know them; anything else is printed as given
CONNECTORS: dict[str, dict[str, str]] = {
    "IEC_62196_T2": {"pt": "Tipo 2", "en": "Type 2"},
    "IEC_62196_T2_COMBO": {"pt": "CCS (Combo 2)", "en": "CCS (Combo 2)"},
    "IEC_62196_T1": {"pt": "Tipo 1", "en": "Type 1"},
    "IEC_62196_T1_COMBO": {"pt": "CCS (Combo 1)", "en": "CCS (Combo 1)"},
    "CHADEMO": {"pt": "CHAdeMO", "en": "CHAdeMO"},
    "DOMESTIC_F": {"pt": "Schuko", "en": "Schuko"},
    "IEC_62196_T3A": {"pt": "Tipo 3A", "en": "Type 3A"},
    "IEC_62196_T3C": {"pt": "Tipo 3C", "en": "Type 3C"},
    "TESLA_S": {"pt": "Tesla", "en": "Tesla"},
}

_TEXTS = {
    "pt": {
        "title": "Autocolantes QR",
        "connector": "Tomada",
        "none": "Este local não tem pontos de carregamento.",
        "help": "Imprima em A4 a 100 % (sem ajustar à página): cada autocolante tem 90 × 125 mm.",
    },
    "en": {
        "title": "QR stickers",
        "connector": "Connector",
        "none": "This location has no charging points.",
        "help": "Print on A4 at 100 % (no fit to page): each sticker is 90 × 125 mm.",
    },
}
# both, always: the one of the sheet's language first
_SCAN = {"pt": "Leia para carregar e pagar", "en": "Scan to charge and pay"}


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"the QR code's URL must be a str, not {type(url).__name__}")
    if len(url) > MAX_URL:
        raise ValueError(f"the QR code's URL is longer than {MAX_URL} characters ({len(url)})")
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url) or not url.isprintable():
        raise ValueError(f"the QR code's URL must be an http(s) URL without spaces: {url!r:.80}")
    return url


def qr_svg(url: str, *, scale: int = 8) -> str:
    """``url`` as a QR code (never a Micro QR: phones do not read those), error correction
    M or better, in inline SVG without an XML declaration: ``scale`` pixels per module,
    with a viewBox so that CSS may resize it, the quiet zone of 4 modules included, dark
    on white."""
    url = _check_url(url)
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 64:
        raise ValueError(f"scale must be an int within 1..64, got {scale!r:.20}")
    qr = segno.make_qr(url, error="m", boost_error=True)
    width, height = qr.symbol_size(scale=scale)
    svg = qr.svg_inline(scale=scale, dark="#000", light="#fff", svgclass="qr", lineclass=None)
    if not svg.startswith("<svg "):  # segno's shape, relied on below
        raise RuntimeError("segno's SVG changed shape")
    return (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="QR code" '
        f'shape-rendering="crispEdges" {svg[len("<svg ") :]}'
    )


@dataclass(frozen=True, slots=True)
class Sticker:
    """One EVSE's sticker."""

    evse_id: str  # e.g. PT*MOB*E00175*01
    url: str  # its public page (what the QR code opens)
    connector: str  # an OCPI ConnectorType (IEC_62196_T2...) or a name to print as given
    power_kw: float | None  # the most it delivers; None when unknown


@dataclass(frozen=True, slots=True)
class _StickerView:
    evse_id: str
    url: str
    qr: Markup
    connector: str
    power: str


def _power(kw: float, language: str) -> str:
    value = Decimal(repr(kw)).quantize(Decimal("0.1"), ROUND_HALF_UP).normalize()
    text = f"{value:f}"
    if language == "pt":
        text = text.replace(".", ",")
    return f"{text}\u00a0kW"


def _sticker_view(s: Sticker, language: str) -> _StickerView:
    if not isinstance(s, Sticker):
        raise TypeError(f"stickers must be Sticker objects, not {type(s).__name__}")
    for name in ("evse_id", "connector"):
        if not isinstance(getattr(s, name), str):
            raise TypeError(f"Sticker.{name} must be a str")
    power = ""
    if s.power_kw is not None:
        if isinstance(s.power_kw, bool) or not isinstance(s.power_kw, int | float):
            raise TypeError("Sticker.power_kw must be a number or None")
        if not 0 < s.power_kw < 10_000:
            raise ValueError(f"Sticker.power_kw must be within 0..10000 kW, got {s.power_kw}")
        power = _power(float(s.power_kw), language)
    connector = CONNECTORS.get(s.connector, {}).get(language) or clean_text(s.connector, 40)
    return _StickerView(
        evse_id=clean_text(s.evse_id, 48),
        url=s.url,
        qr=Markup(qr_svg(s.url)),
        connector=connector,
        power=power,
    )


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def sticker_sheet(
    location_name: str,
    location_address: str,
    stickers: list[Sticker],
    language: str,
    operator_name: str,
) -> str:
    """A complete printable HTML page (A4) of stickers for one Location: one per EVSE, in
    the order given, each with the QR code of its URL. Texts are cleaned, cut and escaped;
    a URL that is not http(s) or is longer than :data:`MAX_URL` is a ValueError."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r:.20}")
    for name, value in (
        ("location_name", location_name),
        ("location_address", location_address),
        ("operator_name", operator_name),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if len(stickers) > MAX_STICKERS:
        raise ValueError(f"at most {MAX_STICKERS} stickers on one sheet, got {len(stickers)}")
    views = [_sticker_view(s, language) for s in stickers]
    other = "en" if language == "pt" else "pt"
    return (
        _env()
        .get_template("stickers.html")
        .render(
            language=language,
            t=_TEXTS[language],
            scan=(_SCAN[language], _SCAN[other]),
            location_name=clean_text(location_name),
            location_address=clean_text(location_address),
            operator_name=clean_text(operator_name),
            stickers=views,
        )
    )
