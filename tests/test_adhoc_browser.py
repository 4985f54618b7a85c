"""Ad hoc charging from a phone, in a real browser (issue 17): headless Debian Chromium
(``/usr/bin/chromium``) driven by Playwright for Python (no browser download), with a
phone's screen, touch and language. The driver pays with the ``stripe`` provider against
the local Stripe stand-in (tests/stripe_standin.py: its hosted page has "Pay" and
"Decline" buttons and it sends signed webhooks to csms), and charges at a simulated
station. Everything listens on 127.0.0.1; every wait is bounded.

What is asserted is what the driver sees (texts and visible elements), plus what the
provider was asked to capture. No page may report a Content Security Policy violation.

Two tests guard against bugs this test found: a decimal point in Portuguese pages, and a
live cost rounded by the page's script differently from what is captured.

Screenshots go under ``tests/artifacts/web/`` (or ``$WEB_TEST_ARTIFACTS``); the plain-HTTP
flows and the failure paths are in tests/test_adhoc.py."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from adhoc.providers.stripe import SECRET_KEY_ENV, WEBHOOK_SECRET_ENV
from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system, station_body
from tests.stripe_standin import StripeStandin
from tests.test_web import ADMIN, web_overrides

CHROMIUM = os.environ.get("WEB_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000  # every wait is bounded
# a state change reaches the page by its poll (every 3 s), then a reload
STATE_WAIT_MS = 20_000
ARTIFACTS = Path(os.environ.get("WEB_TEST_ARTIFACTS", Path(__file__).parent / "artifacts" / "web"))

playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing (make test installs Debian's chromium)", allow_module_level=True
    )
expect = playwright_api.expect
expect.set_options(timeout=WAIT_MS)

# a phone: a 390 x 844 CSS-pixel screen at 3x, touch, a mobile browser's user agent
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "screen": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36"
    ),
}

AD_HOC = {
    "currency": "EUR",
    "type": "AD_HOC_PAYMENT",
    "elements": [
        {
            "price_components": [
                {"type": "FLAT", "price": 1.0, "vat": 23, "step_size": 1},
                {"type": "ENERGY", "price": 0.3, "vat": 23, "step_size": 1},
            ]
        }
    ],
}
REGULAR = {
    "currency": "EUR",
    "elements": [{"price_components": [{"type": "ENERGY", "price": 0.2, "step_size": 1}]}],
}
STATION = "AHB1"
LOCATION = f"LOC-{STATION}"
EVSE = f"{LOCATION}-01"
EVSE_ID = f"PT*MOB*E{STATION}*1"


@dataclass
class Site:
    cpo: Running
    station: Station
    standin: StripeStandin

    @property
    def base(self) -> str:
        return self.cpo.http_url


@dataclass
class Phone:
    """A browser context with a phone's screen; what its pages reported as errors."""

    context: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def page(self) -> Any:
        page = await self.context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.set_default_navigation_timeout(WAIT_MS)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        return page

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    # launch() gives every browser a fresh, temporary user-data-dir of its own
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, headless=True, timeout=30_000
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def standin() -> AsyncIterator[StripeStandin]:
    s = StripeStandin()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def site(
    tmp_path: Path, standin: StripeStandin, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Site]:
    monkeypatch.setenv(SECRET_KEY_ENV, standin.secret_key)
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, standin.webhook_secret)
    system, session, cpo = await start_system(
        tmp_path,
        ocpi={},
        adhoc={
            "provider": "stripe",
            "stripe": {"api_base": standin.url},
            "poll_interval": 0.2,
            "public_rate_limit": 100000,
        },
        **web_overrides(),
    )
    st: Station | None = None
    try:
        standin.webhook_url = f"{cpo.http_url}/charge/webhooks/stripe"
        assert (await cpo.api.put("/api/v1/tariffs/ADHOC", AD_HOC))[0] == 201
        assert (await cpo.api.put("/api/v1/tariffs/REG", REGULAR))[0] == 201
        body = station_body(STATION, 2)
        for evse in body["evses"]:
            evse["connectors"][0]["tariff_ids"] = ["REG", "ADHOC"]
        status, answer = await cpo.api.put(f"/api/v1/stations/{STATION}", body)
        assert status in (200, 201), answer
        st = Station(
            STATION,
            cpo.ocpp_url,
            2,
            behaviour=Behaviour(
                auto_heartbeat=False,
                auto_meter_values=False,
                charge_power_w=0.0,
                step_delay=0.02,
            ),
        )
        await st.connect()
        await st.boot_and_report()
        yield Site(cpo, st, standin)
    finally:
        if st is not None:
            await st.disconnect()
        await session.close()
        await system.stop()


async def phone(browser: Any, locale: str) -> Phone:
    context = await browser.new_context(locale=locale, **PHONE)
    return Phone(context)


async def shot(page: Any, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    path = ARTIFACTS / f"adhoc-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


async def no_sideways_scroll(page: Any) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["viewport"]["width"], width


async def sticker_url(browser: Any, base: str) -> str:
    """The operator prints the Location's stickers: the URL under the EVSE's QR code."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.goto(base + "/login")
        await page.fill('input[name="username"]', ADMIN[0])
        await page.fill('input[name="password"]', ADMIN[1])
        await page.click('form[action="/login"] button[type="submit"]')
        await page.wait_for_url(base + "/")
        await page.goto(f"{base}/adhoc/stickers/{LOCATION}")
        sticker = page.locator(f'article.sticker[data-evse="{EVSE_ID}"]')
        await expect(sticker.locator("svg")).to_be_visible()
        return (await sticker.locator(".url").inner_text()).strip()
    finally:
        await context.close()


# ---------------------------------------------------------------------------- the happy path


async def test_driver_scans_pays_charges_and_gets_a_receipt_on_a_phone(
    browser: Any, site: Site
) -> None:
    base, st, standin = site.base, site.station, site.standin
    url = await sticker_url(browser, base)
    assert url == f"{base}/charge/{EVSE}"  # the QR code opens the EVSE's own page

    driver = await phone(browser, "pt-PT")  # Portuguese from the phone's language
    page = await driver.page()
    await page.goto(url)
    await expect(page.locator("#evse-id")).to_have_text(EVSE_ID)
    await expect(page.get_by_text(f"Station {STATION}")).to_be_visible()  # the Location
    await expect(page.get_by_text("Avenida da Liberdade 1")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("Livre")
    # the ad hoc tariff in full: energy and start fee, with and without VAT
    energy = page.locator('#price tr.component[data-kind="ENERGY"]')
    await expect(energy).to_contain_text("Energia")
    await expect(energy).to_contain_text("0,369 €")
    await expect(energy).to_contain_text("/kWh")
    await expect(energy).to_contain_text("com IVA (23%)")
    await expect(energy).to_contain_text("0,30 € sem IVA")
    fee = page.locator('#price tr.component[data-kind="FLAT"]')
    await expect(fee).to_contain_text("Taxa de ativação")
    await expect(fee).to_contain_text("1,23 €")
    await expect(fee).to_contain_text("1,00 € sem IVA")
    await expect(page.locator("#price")).not_to_contain_text("0,20")  # not the regular one
    await expect(page.locator("#hold")).to_contain_text("Será cativado 30,00 €")
    await no_sideways_scroll(page)
    await shot(page, "phone-evse")

    # the driver types an e-mail for the receipt and pays: Stripe's page asks for the hold
    await page.locator("#email").fill("condutora@example.pt")
    await page.locator("#pay").tap()
    await page.wait_for_url(re.compile(re.escape(standin.url) + r"/pay/cs_test_\w+$"))
    await expect(page.locator("h1")).to_have_text("Hold 30.00 EUR")
    [session] = standin.sessions.values()
    assert session["customer_email"] == "condutora@example.pt"
    assert session["locale"] == "pt"
    await shot(page, "phone-stripe")
    await page.get_by_role("button", name="Pay").tap()

    # back on csms: the page follows the payment by itself until the charge runs
    await page.wait_for_url(re.compile(re.escape(base) + r"/charge/s/[\w-]+\?paid=1$"))
    session_url = page.url.split("?")[0]
    state = page.locator("#state")
    await expect(state).to_have_text("A carregar", timeout=STATE_WAIT_MS)
    await expect(page.locator("#stop")).to_be_visible()
    await expect(page.locator("#energy")).to_have_text("0,00")
    await expect(page.locator("#cost")).to_have_text("1,23 €")  # the start fee
    conn = st.connectors[1]
    assert conn.transaction_id is not None

    # the station reports energy: the page shows it and the cost so far, live (no reload)
    await page.evaluate("window.__still_here = true")
    await asyncio.sleep(1.1)  # (a sample in the start's second is the start's)
    await st.meter_values(1, energy_wh=conn.meter_wh + 5000, power_w=7400)
    await expect(page.locator("#energy")).to_have_text("5,00", timeout=STATE_WAIT_MS)
    # 1.00 + 5 kWh x 0.30 = 2.50 excl. VAT; x 1.23 = 3.075 -> 3,08 €
    await expect(page.locator("#cost")).to_have_text("3,08 €")
    assert await page.evaluate("window.__still_here === true")
    await no_sideways_scroll(page)
    await shot(page, "phone-charging")

    # the driver closes the tab; the EVSE's page (the QR code again) leads back to the charge
    await page.close()
    page = await driver.page()
    await page.goto(url)
    back = page.locator("#back")
    await expect(back).to_have_text("Voltar ao seu carregamento")
    await expect(page.locator("#pay")).to_have_count(0)
    await back.tap()
    await page.wait_for_url(session_url)
    state = page.locator("#state")
    await expect(state).to_have_text("A carregar")
    await expect(page.locator("#energy")).to_have_text("5,00")
    await expect(page.locator("#cost")).to_have_text("3,08 €")

    # stop: the page turns to the receipt
    await page.locator("#stop").tap()
    await expect(state).to_have_text("Carregamento terminado. Obrigado!", timeout=STATE_WAIT_MS)
    await expect(page.locator("#stop")).to_have_count(0)
    await expect(page.locator("#charged")).to_have_text("3,08 €")
    receipt = page.locator("#receipt")
    for text in ("AH-000001", "Operador de Teste Lda", "PT509999990", EVSE_ID, "5,000 kWh"):
        await expect(receipt).to_contain_text(text)
    lines = receipt.locator("tbody tr")  # one line per price component, excl. VAT
    await expect(lines).to_have_count(2)
    await expect(lines.nth(0)).to_contain_text("Taxa de ativação")
    await expect(lines.nth(0)).to_contain_text("1,00 €")
    await expect(lines.nth(1)).to_contain_text("Energia")
    await expect(lines.nth(1)).to_contain_text("5,000 kWh")
    await expect(lines.nth(1)).to_contain_text("0,30 €/kWh")
    await expect(lines.nth(1)).to_contain_text("1,50 €")
    totals = receipt.locator("tfoot tr")
    await expect(totals).to_have_count(3)
    await expect(totals.nth(0)).to_contain_text("2,50 €")  # excl. VAT
    await expect(totals.nth(1)).to_contain_text("IVA (23 %)")
    await expect(totals.nth(1)).to_contain_text("0,58 €")
    await expect(totals.nth(2)).to_contain_text("3,08 €")  # incl. VAT
    await expect(receipt).to_contain_text("26,92 €")  # released
    pdf_link = page.locator("#receipt-pdf")
    await expect(pdf_link).to_be_visible()
    await no_sideways_scroll(page)
    await shot(page, "phone-receipt")
    href = await pdf_link.get_attribute("href")
    assert href is not None
    answer = await driver.context.request.get(base + href)  # the phone's cookies
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/pdf"
    assert (await answer.body()).startswith(b"%PDF")

    # exactly the final amount was captured, once
    await standin.drain()
    assert standin.captures == [(session["payment_intent"], 308)]

    # the link still shows the receipt later; the EVSE is free for the next driver
    await page.close()
    page = await driver.page()
    await page.goto(session_url)
    await expect(page.locator("#receipt")).to_contain_text("AH-000001")
    await page.goto(url)
    await expect(page.locator("#status")).to_have_text("Livre")
    await expect(page.locator("#pay")).to_be_visible()
    await expect(page.locator("#back")).to_have_count(0)

    assert driver.csp_violations() == [], driver.console_errors
    assert driver.page_errors == []
    # (the listener does hear a violation: an inline script without the nonce is refused)
    async with page.expect_console_message(
        lambda m: m.type == "error" and "Content Security Policy" in m.text
    ):
        await page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__injected = 1'; document.body.appendChild(s); }"
        )
    assert len(driver.csp_violations()) == 1
    assert await page.evaluate("window.__injected === undefined")
    assert len(standin.captures) == 1
    await driver.context.close()


# ---------------------------------------------------------------------------- a declined card


async def test_declined_card_then_the_hold_ends_and_the_evse_is_free(
    browser: Any, site: Site
) -> None:
    base, standin = site.base, site.standin
    url = f"{base}/charge/{EVSE}"
    driver = await phone(browser, "en-GB")
    page = await driver.page()
    await page.goto(url)
    await expect(page.locator("#status")).to_have_text("Free")
    await expect(page.locator("#hold")).to_contain_text("€30.00 will be held")
    await page.locator("#pay").tap()
    await page.wait_for_url(re.compile(re.escape(standin.url) + r"/pay/cs_test_\w+$"))
    session_id = page.url.rsplit("/", 1)[1]

    # the card is declined; the driver gives up and goes back to csms
    standin.decline_next()
    await page.get_by_role("button", name="Pay").tap()
    await expect(page.get_by_text("Your card was declined.")).to_be_visible()
    await shot(page, "phone-declined")
    await page.get_by_role("button", name="Decline").tap()
    await page.wait_for_url(re.compile(re.escape(base) + r"/charge/s/[\w-]+\?cancelled=1$"))
    session_url = page.url.split("?")[0]
    await expect(page.get_by_text("Payment cancelled.")).to_be_visible()
    state = page.locator("#state")
    await expect(state).to_have_text("Waiting for the payment to be confirmed…")
    await expect(page.locator("#stop")).to_have_count(0)
    await shot(page, "phone-cancelled")

    # meanwhile another driver sees the EVSE taken, and nothing of the first one's payment
    other = await phone(browser, "en-GB")
    other_page = await other.page()
    await other_page.goto(url)
    await expect(other_page.locator("#status")).to_have_text(
        "Another driver is paying at this charger"
    )
    await expect(other_page.locator("#pay")).to_have_count(0)
    await expect(other_page.locator("#back")).to_have_count(0)

    # Stripe ends the checkout session (as at its expiry): the page says the hold is over
    standin.expire_session(session_id)
    await expect(state).to_have_text("The amount held was released.", timeout=STATE_WAIT_MS)
    await expect(page.locator("#reason")).to_have_text("The payment was not accepted.")
    await shot(page, "phone-released")

    # the EVSE is free again, for both drivers; nothing was captured
    await page.goto(url)
    await expect(page.locator("#status")).to_have_text("Free")
    await expect(page.locator("#pay")).to_be_visible()
    await expect(page.locator("#back")).to_have_count(0)
    await other_page.reload()
    await expect(other_page.locator("#status")).to_have_text("Free")
    await expect(other_page.locator("#pay")).to_be_visible()
    await page.goto(session_url)  # the link still tells what happened
    await expect(page.locator("#reason")).to_have_text("The payment was not accepted.")

    await standin.drain()
    assert standin.captures == []
    for d in (driver, other):
        assert d.csp_violations() == [], d.console_errors
        assert d.page_errors == []
        await d.context.close()


# ---------------------------------------------------------------------------- no JavaScript


async def reload_until(page: Any, text: str, selector: str = "#state") -> None:
    """Without JavaScript the page does not follow the charge: the driver reloads it (for
    at most STATE_WAIT_MS)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STATE_WAIT_MS / 1000
    seen = ""
    while loop.time() < deadline:
        await page.reload()
        seen = await page.locator(selector).inner_text()
        if seen.strip() == text:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{selector} still says {seen!r}, not {text!r}")


async def test_without_javascript_and_the_figures_in_portuguese(browser: Any, site: Site) -> None:
    """A phone with JavaScript off can still pay, follow (by reloading), stop and get the
    receipt: every figure the page shows is then rendered by csms, in the driver's
    language."""
    base, st, standin = site.base, site.station, site.standin
    context = await browser.new_context(locale="pt-PT", java_script_enabled=False, **PHONE)
    driver = Phone(context)
    page = await driver.page()
    await page.goto(f"{base}/charge/{EVSE}")
    await expect(page.locator("#status")).to_have_text("Livre")
    power = (await page.locator("tr", has_text="Potência").locator("td.num").inner_text()).strip()
    await page.locator("#pay").tap()
    await page.wait_for_url(re.compile(re.escape(standin.url) + r"/pay/cs_test_\w+$"))
    await page.get_by_role("button", name="Pay").tap()
    await page.wait_for_url(re.compile(re.escape(base) + r"/charge/s/[\w-]+\?paid=1$"))
    await reload_until(page, "A carregar")
    conn = st.connectors[1]
    await asyncio.sleep(1.1)  # (a sample in the start's second is the start's)
    await st.meter_values(1, energy_wh=conn.meter_wh + 5000, power_w=7400)
    await reload_until(page, "3,08 €", "#cost")
    energy = (await page.locator("#energy").inner_text()).strip()
    async with page.expect_navigation():
        await page.locator("#stop").tap()
    await reload_until(page, "Carregamento terminado. Obrigado!")
    await expect(page.locator("#receipt")).to_contain_text("AH-000001")
    await expect(page.locator("#charged")).to_have_text("3,08 €")
    final_energy = (await page.locator("#energy").inner_text()).strip()
    await shot(page, "phone-no-js-receipt")
    await standin.drain()
    assert [amount for _, amount in standin.captures] == [308]
    assert driver.page_errors == []
    await context.close()

    assert (power, energy, final_energy) == ("22,0 kW", "5,00", "5,00")


# ---------------------------------------------------------------------------- the cost, live


async def test_the_live_cost_is_what_is_charged(browser: Any, site: Site) -> None:
    """The cost the page's script shows while charging is the cost csms computes (and
    captures), to the cent, also for a total whose third decimal is a 5 (2.065 -> 2.07)."""
    base, st, standin = site.base, site.station, site.standin
    driver = await phone(browser, "en-GB")
    page = await driver.page()
    await page.goto(f"{base}/charge/{EVSE}")
    await page.locator("#pay").tap()
    await page.wait_for_url(re.compile(re.escape(standin.url) + r"/pay/cs_test_\w+$"))
    await page.get_by_role("button", name="Pay").tap()
    await page.wait_for_url(re.compile(re.escape(base) + r"/charge/s/[\w-]+\?paid=1$"))
    await expect(page.locator("#state")).to_have_text("Charging", timeout=STATE_WAIT_MS)
    # the script rewrites the figures in place: a mark shows when it did
    await page.evaluate("document.getElementById('cost').textContent = '-'")
    conn = st.connectors[1]
    await asyncio.sleep(1.1)  # (a sample in the start's second is the start's)
    # 1.00 + 2.263 kWh x 0.30 = 1.6789 excl. VAT; x 1.23 = 2.065047 -> 2.0650 -> €2.07
    await st.meter_values(1, energy_wh=conn.meter_wh + 2263, power_w=7400)
    await expect(page.locator("#energy")).to_have_text("2.26", timeout=STATE_WAIT_MS)
    await page.wait_for_function(
        "document.getElementById('cost').textContent !== '-'", timeout=WAIT_MS
    )
    by_script = (await page.locator("#cost").inner_text()).strip()
    await page.reload()
    by_csms = (await page.locator("#cost").inner_text()).strip()  # before the first poll
    async with page.expect_navigation():
        await page.locator("#stop").tap()
    await expect(page.locator("#state")).to_have_text(
        "Charge finished. Thank you!", timeout=STATE_WAIT_MS
    )
    charged = (await page.locator("#charged").inner_text()).strip()
    await standin.drain()
    assert [amount for _, amount in standin.captures] == [207]
    assert driver.csp_violations() == [], driver.console_errors
    assert driver.page_errors == []
    await driver.context.close()

    assert (by_csms, charged, by_script) == ("€2.07", "€2.07", "€2.07")
