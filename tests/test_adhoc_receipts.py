"""Ad hoc charging's receipts (HTML, page, PDF, text, e-mail) and QR code stickers
(adhoc.receipts, adhoc.stickers): pure renderers, driven with whole receipts."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from decimal import Decimal as D
from html import unescape

import pytest
import segno

from adhoc.receipts import (
    MAX_LINES,
    MAX_NOTES,
    MAX_TEXT,
    Receipt,
    ReceiptLine,
    build_email,
    clean_text,
    format_money,
    render_html,
    render_page,
    render_pdf,
    render_text,
)
from adhoc.stickers import MAX_URL, Sticker, qr_svg, sticker_sheet

NBSP = "\u00a0"
SCRIPT = "<script>alert(1)</script>"


def make_receipt(**changes: object) -> Receipt:
    base = Receipt(
        number="AH-000123",
        issued_at=datetime(2026, 7, 1, 15, 0, 5, tzinfo=UTC),
        time_zone="Europe/Lisbon",
        language="pt",
        operator_name="Carregamentos Ção, Lda.",
        operator_tax_id="509999990",
        operator_address="Rua do Ouro 1, 1100-060 Lisboa",
        location_name="Parque das Nações",
        location_address="Avenida D. João II 2, 1990-095 Lisboa",
        evse_id="PT*MOB*E00175*01",
        started_at=datetime(2026, 7, 1, 13, 30, 0, tzinfo=UTC),
        ended_at=datetime(2026, 7, 1, 14, 45, 30, tzinfo=UTC),
        energy_wh=12345,
        lines=(
            ReceiptLine("FLAT", D(1), D("0.50"), D("0.615"), D("0.50")),
            ReceiptLine("ENERGY", D("12.345"), D("4.32075"), D("5.31"), D("0.35")),
            ReceiptLine("TIME", D("1.2583333"), D("1.26"), D("1.55"), None),
            ReceiptLine("PARKING_TIME", D("0.5"), D("1.00"), D("1.23"), D("2.0000")),
        ),
        total_excl_vat=D("7.08"),
        total_incl_vat=D("8.71"),
        vat_percent=D("23"),
        currency="EUR",
        amount_held=3000,
        amount_captured=871,
        payment_method="mb_way",
        payment_reference="pi_3AbcDEF",
        notes=("Nota de teste",),
    )
    return dataclasses.replace(base, **changes)


# every item of the receipt above, as each language prints it
ITEMS = {
    "pt": [
        "Recibo AH-000123",
        "Emitido em",
        "2026-07-01 16:00:05 Lisboa UTC+1",
        "Carregamentos Ção, Lda.",
        "NIF",
        "509999990",
        "Rua do Ouro 1, 1100-060 Lisboa",
        "Parque das Nações",
        "Avenida D. João II 2, 1990-095 Lisboa",
        "PT*MOB*E00175*01",
        "Início",
        "2026-07-01 14:30:00 Lisboa UTC+1",
        "2026-07-01 15:45:30 Lisboa UTC+1",
        "Duração",
        "1:15:30",
        f"12,345{NBSP}kWh",
        "Taxa de ativação",
        f"0,50{NBSP}€",
        f"0,35{NBSP}€/kWh",
        f"4,32{NBSP}€",
        "Tempo de carregamento",
        f"1,26{NBSP}€",
        "Tempo de estacionamento",
        "0:30:00",
        f"2,00{NBSP}€/h",
        f"1,00{NBSP}€",
        "Subtotal s/ IVA",
        f"7,08{NBSP}€",
        f"IVA (23{NBSP}%)",
        f"1,63{NBSP}€",
        "Total c/ IVA",
        f"8,71{NBSP}€",
        "Valor pré-autorizado",
        f"30,00{NBSP}€",
        "Valor cobrado",
        "Valor libertado",
        f"21,29{NBSP}€",
        "MB WAY",
        "pi_3AbcDEF",
        "Nota de teste",
    ],
    "en": [
        "Receipt AH-000123",
        "Issued",
        "2026-07-01 16:00:05 Lisbon UTC+1",
        "Carregamentos Ção, Lda.",
        "Tax number",
        "509999990",
        "Parque das Nações",
        "PT*MOB*E00175*01",
        "Start",
        "2026-07-01 14:30:00 Lisbon UTC+1",
        "2026-07-01 15:45:30 Lisbon UTC+1",
        "Duration",
        "1:15:30",
        f"12.345{NBSP}kWh",
        "Start fee",
        "€0.50",
        "€0.35/kWh",
        "€4.32",
        "Charging time",
        "€1.26",
        "Parking time",
        "0:30:00",
        "€2.00/h",
        "€1.00",
        "Subtotal excl. VAT",
        "€7.08",
        "VAT (23%)",
        "€1.63",
        "Total incl. VAT",
        "€8.71",
        "Amount held",
        "€30.00",
        "Amount charged",
        "Released",
        "€21.29",
        "MB WAY",
        "pi_3AbcDEF",
        "Nota de teste",
    ],
}


def html_text(html: str) -> str:
    """What a reader of the HTML sees, tags dropped and entities resolved."""
    return unescape(re.sub(r"<[^>]+>", " ", html))


# ---------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("amount", "pt", "en"),
    [
        (D("0.345"), f"0,35{NBSP}€", "€0.35"),
        (D("0.005"), f"0,01{NBSP}€", "€0.01"),  # half-up, not to even
        (D("0.0049"), f"0,00{NBSP}€", "€0.00"),
        (D("2.675"), f"2,68{NBSP}€", "€2.68"),
        (D("1234567.891"), f"1{NBSP}234{NBSP}567,89{NBSP}€", "€1,234,567.89"),
        (D("-3.5"), f"-3,50{NBSP}€", "-€3.50"),
        (D(12), f"12,00{NBSP}€", "€12.00"),
    ],
)
def test_money_is_rounded_half_up_to_cents(amount: D, pt: str, en: str) -> None:
    assert format_money(amount, "EUR", "pt") == pt
    assert format_money(amount, "EUR", "en") == en


def test_money_in_another_currency_is_written_by_its_code() -> None:
    assert format_money(D("1.5"), "USD", "pt") == f"1,50{NBSP}USD"
    assert format_money(D("1.5"), "USD", "en") == f"USD{NBSP}1.50"


def test_money_is_never_a_float() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        format_money(0.35, "EUR", "pt")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Decimal"):
        ReceiptLine("ENERGY", D(1), 0.35, None, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="total_incl_vat"):
        make_receipt(total_incl_vat=8.71)
    with pytest.raises(ValueError, match="finite"):
        make_receipt(total_excl_vat=D("NaN"))


def test_unit_prices_keep_up_to_four_decimals() -> None:
    lines = (
        ReceiptLine("ENERGY", D("10"), D("2.345"), None, D("0.2345")),
        ReceiptLine("TIME", D("2"), D("0.25"), None, D("0.12345")),
        ReceiptLine("PARKING_TIME", D("1"), D("0.10"), None, D("0.1")),
    )
    text = html_text(render_html(make_receipt(lines=lines)))
    assert f"0,2345{NBSP}€/kWh" in text
    assert f"0,1235{NBSP}€/h" in text  # half-up at the fourth decimal
    assert f"0,10{NBSP}€/h" in text  # at least two
    assert f"2,35{NBSP}€" in text  # the amount itself to cents (2.345 half-up)


# ---------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("language", ["pt", "en"])
def test_fragment_and_page_hold_every_item(language: str) -> None:
    receipt = make_receipt(language=language)
    fragment = render_html(receipt)
    assert fragment.startswith(f'<section class="receipt" lang="{language}">')
    assert fragment.rstrip().endswith("</section>")
    text = html_text(fragment)
    missing = [item for item in ITEMS[language] if item not in text]
    assert not missing
    # the price lines are a table: one row per line, with its quantity and amount
    rows = re.findall(r"<tbody>(.*?)</tbody>", fragment, re.S)[0].count("<tr>")
    assert rows == 4
    assert '<time datetime="2026-07-01T15:00:05Z">' in fragment

    page = render_page(receipt)
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert str(fragment) in page
    assert f'<html lang="{language}">' in page
    assert 'name="viewport"' in page
    assert "@media print" in page
    assert "<title>" + ("Recibo" if language == "pt" else "Receipt") + " AH-000123</title>" in page
    # standalone: nothing fetched from elsewhere
    for outside in ("<link", "<script", "src=", "@import", "url(", "http://", "https://"):
        assert outside not in page


def test_other_language_words_do_not_leak() -> None:
    pt = html_text(render_html(make_receipt(language="pt")))
    en = html_text(render_html(make_receipt(language="en")))
    assert "Receipt" not in pt and "VAT" not in pt and "€0" not in pt
    assert "Recibo" not in en and "IVA" not in en and f"{NBSP}€" not in en


def test_every_text_is_escaped() -> None:
    receipt = make_receipt(
        operator_name=SCRIPT,
        operator_tax_id='"><img src=x onerror=alert(1)>',
        operator_address=SCRIPT,
        location_name=SCRIPT,
        location_address=SCRIPT,
        evse_id=SCRIPT,
        payment_method=SCRIPT,
        payment_reference=SCRIPT,
        notes=(SCRIPT,),
    )
    for html in (render_html(receipt), render_page(receipt)):
        assert "<script" not in html
        assert "<img" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SCRIPT in html_text(render_html(receipt))  # shown as text, not dropped


def test_long_and_invisible_text_is_cut_and_cleaned() -> None:
    receipt = make_receipt(
        location_name="x" * 5000,
        operator_name="Ope\u202erador\nmau\t\x00 Lda.\u200b",
        notes=("y" * 300, " \n "),
    )
    text = html_text(render_html(receipt))
    assert "x" * (MAX_TEXT - 1) + "…" in text
    assert "x" * MAX_TEXT not in text
    assert "Operador mau Lda." in text  # no bidi override, no line break, no NUL
    assert "\u202e" not in text and "\x00" not in text and "\u200b" not in text
    assert "y" * (MAX_TEXT - 1) + "…" in text
    assert text.count("<li>") == 0 and render_html(receipt).count("<li>") == 1  # blank note gone
    assert clean_text("a" * 10, 5) == "aaaa…"
    assert clean_text("  a \r\n\u2028 b  ") == "a b"


def test_zones_are_named_with_their_offset() -> None:
    winter = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)
    azores = make_receipt(time_zone="Atlantic/Azores", issued_at=winter, language="pt")
    assert "2026-01-10 11:00:00 Açores UTC-1" in html_text(render_html(azores))
    azores = make_receipt(time_zone="Atlantic/Azores", issued_at=summer, language="en")
    assert "2026-07-10 12:00:00 Azores UTC+0" in html_text(render_html(azores))
    madeira = make_receipt(time_zone="Atlantic/Madeira", issued_at=summer)
    assert "2026-07-10 13:00:00 Madeira UTC+1" in html_text(render_html(madeira))


def test_duration_over_a_day_and_a_clock_going_backwards() -> None:
    start = datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    long = make_receipt(started_at=start, ended_at=datetime(2026, 7, 2, 12, 3, 4, tzinfo=UTC))
    assert "26:03:04" in html_text(render_html(long))
    backwards = make_receipt(started_at=start, ended_at=datetime(2026, 7, 1, 9, 0, tzinfo=UTC))
    assert "0:00:00" in html_text(render_html(backwards))


def test_nothing_to_pay_at_a_terminal_without_one_vat_rate() -> None:
    receipt = make_receipt(
        lines=(),
        total_excl_vat=D(0),
        total_incl_vat=D(0),
        vat_percent=None,
        amount_held=0,
        amount_captured=0,
        payment_method="terminal",
        payment_reference=None,
        notes=(),
    )
    fragment = render_html(receipt)
    text = html_text(fragment)
    assert "Nada a pagar." in text
    assert "Terminal de pagamento" in text
    assert "Valor pré-autorizado" not in text and "Valor libertado" not in text
    assert "IVA (" not in text and "IVA" in text
    assert "Referência" not in text and "Notas" not in text
    assert f"13,5{NBSP}%" in html_text(render_html(make_receipt(vat_percent=D("13.50"))))


def test_coded_notes_are_worded_in_the_receipts_language() -> None:
    notes = ("capped_at_hold", "total_cost set by max_price", "Outra nota")
    pt = html_text(render_html(make_receipt(notes=notes)))
    assert "O carregamento parou no valor pré-autorizado." in pt
    assert "O total é o preço máximo da tarifa." in pt
    assert "Outra nota" in pt and "capped_at_hold" not in pt
    en = render_text(make_receipt(notes=notes, language="en"))
    assert "- The charge stopped at the amount held." in en
    assert "- The total is the tariff's maximum price." in en


def test_an_unknown_payment_method_is_printed_as_given() -> None:
    text = html_text(render_html(make_receipt(payment_method="multibanco_ref", language="en")))
    assert "multibanco_ref" in text


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"language": "fr"}, ValueError, "language"),
        ({"time_zone": "Europe/Atlantis"}, ValueError, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, ValueError, "time_zone"),
        ({"time_zone": "Europe"}, ValueError, "time_zone"),  # a directory of zones
        ({"time_zone": ""}, ValueError, "time_zone"),
        ({"issued_at": datetime(2026, 7, 1, 15, 0)}, ValueError, "issued_at.*timezone"),
        ({"started_at": "2026-07-01"}, TypeError, "started_at"),
        ({"number": ""}, ValueError, "number"),
        ({"number": "AH-1\r\nBcc: x@y.pt"}, ValueError, "number"),
        ({"number": "N" * 65}, ValueError, "number"),
        ({"currency": "euro"}, ValueError, "currency"),
        ({"energy_wh": -1}, ValueError, "energy_wh"),
        ({"energy_wh": 1.5}, TypeError, "energy_wh"),
        ({"amount_held": True}, TypeError, "amount_held"),
        ({"vat_percent": D(123)}, ValueError, "vat_percent"),
        ({"total_excl_vat": D("1e12")}, ValueError, "total_excl_vat"),
        ({"lines": [ReceiptLine("FLAT", D(1), D(1), None, None)]}, TypeError, "lines"),
        ({"notes": ("a", 1)}, TypeError, "notes"),
        ({"location_name": None}, TypeError, "location_name"),
        ({"notes": ("n",) * (MAX_NOTES + 1)}, ValueError, "notes"),
        (
            {"lines": (ReceiptLine("FLAT", D(1), D(1), None, None),) * (MAX_LINES + 1)},
            ValueError,
            "lines",
        ),
    ],
)
def test_bad_receipts_are_refused_clearly(
    changes: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make_receipt(**changes)


def test_bad_lines_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="kind"):
        ReceiptLine("RESERVATION_TIME", D(1), D(1), None, None)
    with pytest.raises(ValueError, match="quantity"):
        ReceiptLine("ENERGY", D(-1), D(1), None, None)
    with pytest.raises(ValueError, match="finite"):
        ReceiptLine("ENERGY", D(1), D("Infinity"), None, None)


# ---------------------------------------------------------------------------- JSON


def test_json_round_trip() -> None:
    receipt = make_receipt(
        started_at=datetime(2026, 7, 1, 13, 30, 0, 123456, tzinfo=UTC),
        vat_percent=None,
        payment_reference=None,
    )
    data = json.loads(json.dumps(receipt.to_json()))
    assert data["issued_at"] == "2026-07-01T15:00:05Z"
    assert data["started_at"] == "2026-07-01T13:30:00.123456Z"
    assert data["total_incl_vat"] == "8.71"
    assert data["lines"][2] == {
        "kind": "TIME",
        "quantity": "1.2583333",
        "amount_excl_vat": "1.26",
        "amount_incl_vat": "1.55",
        "unit_price_excl_vat": None,
    }
    back = Receipt.from_json(data)
    assert back == receipt
    assert render_pdf(back) == render_pdf(receipt)
    data.pop("notes")
    data["from_a_newer_writer"] = 1
    assert Receipt.from_json(data).notes == ()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"number": None}, TypeError, "number"),
        ({"issued_at": "2026-07-01T15:00:05"}, ValueError, "issued_at has no time zone"),
        ({"issued_at": "yesterday"}, ValueError, "issued_at"),
        ({"issued_at": 1782918005}, ValueError, "issued_at"),
        ({"total_incl_vat": 8.71}, ValueError, "total_incl_vat must be a decimal string"),
        ({"total_incl_vat": "8,71"}, ValueError, "total_incl_vat is not a number"),
        ({"total_incl_vat": "9" * 100}, ValueError, "total_incl_vat"),
        ({"total_incl_vat": "NaN"}, ValueError, "finite"),
        ({"lines": {"kind": "FLAT"}}, ValueError, "lines"),
        ({"lines": [{"kind": "FLAT"}]}, ValueError, r"lines\[0\]\.quantity is missing"),
        ({"lines": ["FLAT"]}, ValueError, r"lines\[0\]"),
        ({"notes": "a note"}, ValueError, "notes"),
        ({"energy_wh": 1.0}, TypeError, "energy_wh"),
    ],
)
def test_json_refuses_bad_data_clearly(
    change: dict[str, object], error: type[Exception], match: str
) -> None:
    data = make_receipt().to_json()
    data.update(change)
    with pytest.raises(error, match=match):
        Receipt.from_json(data)


def test_json_refuses_missing_fields_and_non_objects() -> None:
    data = make_receipt().to_json()
    del data["operator_tax_id"]
    with pytest.raises(ValueError, match="operator_tax_id is missing"):
        Receipt.from_json(data)
    with pytest.raises(TypeError, match="mapping"):
        Receipt.from_json([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- text


def test_text_holds_every_item_unescaped() -> None:
    for language in ("pt", "en"):
        text = render_text(make_receipt(language=language, location_name=SCRIPT))
        wanted = [i.replace(NBSP, " ") for i in ITEMS[language] if i != "Parque das Nações"]
        assert not [item for item in wanted if item not in text]
        assert SCRIPT in text and "&lt;" not in text
        assert NBSP not in text
    text = render_text(make_receipt())
    assert "Energia: 12,345 kWh × 0,35 €/kWh = 4,32 €" in text
    assert "Tempo de carregamento: 1:15:30 = 1,26 €" in text
    assert "Total c/ IVA: 8,71 €" in text
    assert "- Nota de teste" in text


# ---------------------------------------------------------------------------- PDF


def pdf_strings(pdf: bytes) -> list[str]:
    """The text shown on an uncompressed fpdf2 page: its ``(...) Tj`` strings, decoded
    from the core fonts' WinAnsi (cp1252) encoding."""
    out = []
    for raw in re.findall(rb"\(((?:[^()\\]|\\.)*)\) ?Tj", pdf):
        text = re.sub(rb"\\(.)", rb"\1", raw)
        out.append(text.decode("cp1252"))
    return out


@pytest.mark.parametrize("language", ["pt", "en"])
def test_pdf_holds_every_item_on_one_a4_page(language: str) -> None:
    pdf = render_pdf(make_receipt(language=language), compress=False)
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert re.findall(rb"/Count (\d+)", pdf) == [b"1"]
    assert b"/MediaBox [0 0 595.28 841.89]" in pdf  # A4 in points
    assert b"/Title (AH-000123)" in pdf
    assert b"/Encoding /WinAnsiEncoding" in pdf
    # (wrapped values print their no-break spaces as spaces)
    shown = " ".join(pdf_strings(pdf)).replace(NBSP, " ")
    missing = [item for item in ITEMS[language] if item.replace(NBSP, " ") not in shown]
    assert not missing
    assert "€" in shown  # WinAnsi holds it; no font file needed


def test_pdf_is_byte_identical_and_dated_by_the_receipt() -> None:
    receipt = make_receipt()
    first = render_pdf(receipt)
    assert first.startswith(b"%PDF-")
    assert b"/FlateDecode" in first  # compressed by default
    assert render_pdf(receipt) == first
    assert b"/CreationDate (D:20260701150005Z)" in first
    later = render_pdf(make_receipt(issued_at=datetime(2026, 7, 2, 9, 0, tzinfo=UTC)))
    assert b"/CreationDate (D:20260702090000Z)" in later
    assert later != first


def test_pdf_keeps_the_worst_receipt_on_one_page() -> None:
    wide = "Ç" + "W" * 400  # the widest letter, cut to MAX_TEXT
    receipt = make_receipt(
        number="N" * 64,
        operator_name=wide,
        operator_tax_id=wide,
        operator_address=wide,
        location_name=wide,
        location_address=wide,
        evse_id=wide,
        payment_method=wide,
        payment_reference=wide,
        lines=(ReceiptLine("PARKING_TIME", D("99999.5"), D("999999.99"), None, D("9999.9999")),)
        * MAX_LINES,
        total_excl_vat=D("999999999.99"),
        total_incl_vat=D("999999999.99"),
        amount_held=10**11 - 1,
        amount_captured=10**11 - 1,
        notes=(wide,) * MAX_NOTES,
    )
    pdf = render_pdf(receipt, compress=False)
    assert re.findall(rb"/Count (\d+)", pdf) == [b"1"]
    shown = pdf_strings(pdf)
    assert shown.count("Tempo de estacionamento") == MAX_LINES
    assert "Recibo " + "N" * 64 in " ".join(shown).replace("N N", "NN")  # wrapped, all there
    # eight fields and the notes, each cut (…) and each there from its first letter
    assert sum(x.startswith("ÇWWW") for x in shown) == 8 + MAX_NOTES
    assert sum(x.endswith("W…") for x in shown) == 8 + MAX_NOTES


def test_pdf_prints_what_its_font_lacks_as_question_marks() -> None:
    pdf = render_pdf(make_receipt(location_name="Estação 東京 ✓ Ação"), compress=False)
    assert "Estação ?? ? Ação" in pdf_strings(pdf)


# ---------------------------------------------------------------------------- e-mail


def test_email_has_text_html_and_the_pdf() -> None:
    receipt = make_receipt(language="en", location_name=SCRIPT)
    msg = build_email(
        receipt,
        sender="Carregamentos <recibos@example.pt>",
        to="driver@example.com",
        site_url="https://charge.example.pt/r/abc?x=1&y=2",
    )
    assert msg["Subject"] == "Receipt AH-000123 · Carregamentos Ção, Lda."
    assert msg["To"] == "driver@example.com"
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert render_text(receipt) in text
    assert "View online: https://charge.example.pt/r/abc?x=1&y=2" in text
    assert str(render_html(receipt)).split("</table>")[0] in html
    assert '<a href="https://charge.example.pt/r/abc?x=1&amp;y=2">View online</a>' in html
    assert "<script" not in html
    attachments = list(msg.iter_attachments())
    assert len(attachments) == 1
    assert attachments[0].get_filename() == "AH-000123.pdf"
    assert attachments[0].get_content() == render_pdf(receipt)
    assert b"Subject: Receipt AH-000123" in msg.as_bytes()  # serialisable as is


def test_email_without_a_site_url_and_with_an_odd_number() -> None:
    msg = build_email(
        make_receipt(number="AH/../000124 x"),
        sender="r@example.pt",
        to="d@example.pt",
        site_url=None,
    )
    assert "Recibo AH/../000124 x" in msg["Subject"]
    (attachment,) = msg.iter_attachments()
    assert attachment.get_filename() == "AH_.._000124_x.pdf"
    assert "Ver online" not in msg.get_body(("plain",)).get_content()
    assert "Ver online" not in msg.get_body(("html",)).get_content()


@pytest.mark.parametrize(
    ("sender", "to", "site_url", "match"),
    [
        ("r@example.pt", "a@example.pt, b@example.pt", None, "to"),
        ("r@example.pt", "a@example.pt\r\nBcc: evil@example.com", None, "to"),
        ("r@example.pt", "not an address", None, "to"),
        ("r@example.pt", "", None, "to"),
        ("r@example.pt; x@y.pt", "a@example.pt", None, "sender"),
        ("r@example.pt", "a@example.pt", "javascript:alert(1)", "site_url"),
        ("r@example.pt", "a@example.pt", "https://x.pt/a b", "site_url"),
    ],
)
def test_email_refuses_hostile_addresses_and_links(
    sender: str, to: str, site_url: str | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_email(make_receipt(), sender=sender, to=to, site_url=site_url)


# ---------------------------------------------------------------------------- stickers

URL = "https://charge.example.pt/e/PT*MOB*E00175*01"


def svg_modules(svg: str) -> tuple[int, set[tuple[int, int]]]:
    """The dark modules (x, y) that segno's SVG path draws, and the symbol's width in
    modules (quiet zone included): the path is runs of ``h`` strokes joined by relative
    ``m`` moves, each stroke one module high centred on y + 0.5."""
    (box,) = re.findall(r'viewBox="0 0 (\d+) (\d+)"', svg)
    scale = int((re.findall(r'transform="scale\((\d+)\)"', svg) or ["1"])[0])
    (path,) = re.findall(r'<path stroke="#000" d="([^"]+)"', svg)
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for op, args in re.findall(r"([Mmh])([-\d. ]+)", path):
        nums = [float(n) for n in args.split()]
        if op == "M":
            x, y = nums
        elif op == "m":
            x, y = x + nums[0], y + nums[1]
        else:
            for i in range(int(nums[0])):
                dark.add((int(x) + i, int(y - 0.5)))
            x += nums[0]
    assert box[0] == box[1]
    return int(box[0]) // scale, dark


def format_error_level(matrix: list[list[bool]]) -> str:
    """The error correction level from a QR code's format information (ISO/IEC 18004,
    7.9): 15 bits beside the top-left finder, masked with 101010000010010."""
    cells = [(8, c) for c in (0, 1, 2, 3, 4, 5, 7, 8)] + [(r, 8) for r in (7, 5, 4, 3, 2, 1, 0)]
    bits = 0
    for r, c in cells:
        bits = (bits << 1) | int(matrix[r][c])
    bits ^= 0b101010000010010
    return {0b01: "L", 0b00: "M", 0b11: "Q", 0b10: "H"}[bits >> 13]


def test_qr_svg_draws_segnos_matrix_for_the_url() -> None:
    svg = qr_svg(URL, scale=5)
    assert svg.startswith("<svg ") and "<?xml" not in svg
    size, dark = svg_modules(svg)
    qr = segno.make_qr(URL, error="m")
    expected = {(x, y) for y, row in enumerate(qr.matrix) for x, v in enumerate(row) if v}
    border = 4
    assert size == len(qr.matrix) + 2 * border
    assert dark == {(x + border, y + border) for x, y in expected}
    assert f'width="{size * 5}"' in svg and f'height="{size * 5}"' in svg
    # read back from the drawing itself: a full QR code (not Micro), correction M or better
    n = size - 2 * border
    assert n >= 21 and (n - 17) % 4 == 0
    matrix = [[(x + border, y + border) in dark for x in range(n)] for y in range(n)]
    assert format_error_level(matrix) in ("M", "Q", "H")
    # and another URL draws another code
    assert svg_modules(qr_svg(URL + "2", scale=5))[1] != dark


def test_qr_svg_even_for_a_short_url_is_no_micro_qr() -> None:
    size, dark = svg_modules(qr_svg("http://a.pt", scale=1))
    assert size - 8 >= 21
    n = size - 8
    matrix = [[(x + 4, y + 4) in dark for x in range(n)] for y in range(n)]
    assert format_error_level(matrix) in ("M", "Q", "H")


@pytest.mark.parametrize(
    ("url", "scale", "error"),
    [
        ("javascript:alert(1)", 8, ValueError),
        ("https://x.pt/a b", 8, ValueError),
        ("https://x.pt/\n", 8, ValueError),
        ("ftp://x.pt/", 8, ValueError),
        ("https://x.pt/" + "a" * MAX_URL, 8, ValueError),
        (b"https://x.pt/", 8, TypeError),
        (URL, 0, ValueError),
        (URL, 65, ValueError),
        (URL, 2.5, ValueError),
    ],
)
def test_qr_svg_refuses_bad_input(url: object, scale: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        qr_svg(url, scale=scale)  # type: ignore[arg-type]


def stickers_of(page: str) -> list[str]:
    return re.findall(r'<article class="sticker".*?</article>', page, re.S)


def test_sheet_has_one_sticker_per_evse_in_order() -> None:
    items = [
        Sticker("PT*MOB*E00175*01", URL, "IEC_62196_T2", 22.0),
        Sticker("PT*MOB*E00175*02", URL[:-1] + "2", "IEC_62196_T2_COMBO", 150),
        Sticker("PT*MOB*E00175*03", URL[:-1] + "3", "Tomada doméstica", 7.4),
        Sticker("PT*MOB*E00175*04", URL[:-1] + "4", "CHADEMO", None),
    ]
    page = sticker_sheet("Parque das Nações", "Av. D. João II", items, "pt", "Operador, Lda.")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "@page { size: A4" in page and "@media print" in page
    found = stickers_of(page)
    assert len(found) == 4
    for sticker, html in zip(items, found, strict=True):
        assert f'<p class="evse">{sticker.evse_id}</p>' in html
        assert qr_svg(sticker.url) in html
        assert f'<p class="url">{sticker.url}</p>' in html
        assert "Leia para carregar e pagar" in html and "Scan to charge and pay" in html
        assert "Parque das Nações · Operador, Lda." in html
    assert f"Tomada: Tipo 2 · 22{NBSP}kW" in found[0]
    assert f"Tomada: CCS (Combo 2) · 150{NBSP}kW" in found[1]
    assert f"Tomada: Tomada doméstica · 7,4{NBSP}kW" in found[2]
    assert "Tomada: CHAdeMO</p>" in found[3]
    # the sheet's language first, the other one after
    assert found[0].index("Leia para") < found[0].index("Scan to")
    en = stickers_of(sticker_sheet("P", "A", items, "en", "O"))
    assert en[0].index("Scan to") < en[0].index("Leia para")
    assert f"Connector: Type 2 · 22{NBSP}kW" in en[0]
    assert f"7.4{NBSP}kW" in en[2]


def test_sheet_escapes_every_text() -> None:
    items = [Sticker(SCRIPT, "https://x.pt/e?a=1&b=<2>", SCRIPT, 11.0)]
    page = sticker_sheet(SCRIPT, SCRIPT, items, "en", '"><img src=x onerror=alert(1)>')
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    (html,) = stickers_of(page)
    assert "https://x.pt/e?a=1&amp;b=&lt;2&gt;" in html
    long = sticker_sheet("z" * 1000, "a", [], "pt", "o")
    assert "z" * (MAX_TEXT - 1) + "…" in long and "z" * MAX_TEXT not in long


def test_an_empty_sheet_says_so() -> None:
    page = sticker_sheet("Parque", "Rua", [], "en", "Op")
    assert not stickers_of(page)
    assert "This location has no charging points." in page


@pytest.mark.parametrize(
    ("stickers", "language", "error"),
    [
        ([Sticker("E1", "javascript:alert(1)", "IEC_62196_T2", 22.0)], "pt", ValueError),
        ([Sticker("E1", URL, "IEC_62196_T2", -3.0)], "pt", ValueError),
        ([Sticker("E1", URL, "IEC_62196_T2", float("nan"))], "pt", ValueError),
        ([Sticker("E1", URL, "IEC_62196_T2", "22")], "pt", TypeError),  # type: ignore[arg-type]
        ([("E1", URL, "T2", 22.0)], "pt", TypeError),
        ([], "es", ValueError),
    ],
)
def test_sheet_refuses_bad_input(
    stickers: list[Sticker], language: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        sticker_sheet("P", "A", stickers, language, "O")
