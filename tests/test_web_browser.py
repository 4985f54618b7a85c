"""The web interface in a real browser: headless Debian Chromium (``/usr/bin/chromium``,
installed by ``make test``), driven by Playwright for Python, which never downloads a
browser here. The real central system runs on 127.0.0.1 with simulated stations.

Screenshots of the main pages are saved under ``tests/artifacts/web/`` (or
``$WEB_TEST_ARTIFACTS``; not ``CSMS_...``, which names configuration overrides); the path
is printed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register
from tests.test_web import ADMIN, VIEWER, web_overrides

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
ARTIFACTS = Path(os.environ.get("WEB_TEST_ARTIFACTS", Path(__file__).parent / "artifacts" / "web"))

playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing (make test installs Debian's chromium)", allow_module_level=True
    )
expect = playwright_api.expect
expect.set_options(timeout=WAIT_MS)


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
async def system(tmp_path: Path) -> AsyncIterator[Running]:
    sysm, session, running = await start_system(
        tmp_path,
        OCPP__HEARTBEAT_INTERVAL="2",
        OCPP__METER_VALUE_SAMPLE_INTERVAL="1",
        **web_overrides(),
    )
    try:
        yield running
    finally:
        await session.close()
        await sysm.stop()


async def new_page(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.set_default_navigation_timeout(WAIT_MS)
    return page


async def login(page: Any, base: str, user: tuple[str, str]) -> None:
    await page.goto(base + "/login")
    await page.fill('input[name="username"]', user[0])
    await page.fill('input[name="password"]', user[1])
    await page.click('form[action="/login"] button[type="submit"]')
    await page.wait_for_url(base + "/")


async def shot(page: Any, name: str) -> None:
    await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


async def station(running: Running, sid: str, connectors: int = 2) -> Station:
    await running.define_station(sid, connectors)
    st = Station(sid, running.ocpp_url, connectors, behaviour=Behaviour(step_delay=0.01))
    await st.connect()
    await st.boot_and_report()
    return st


async def test_wrong_password_then_locked_out(browser: Any, system: Running) -> None:
    page = await new_page(browser)
    base = system.http_url
    await page.goto(base + "/login")
    await shot(page, "login")
    for attempt in range(5):
        await page.fill('input[name="username"]', VIEWER[0])
        await page.fill('input[name="password"]', f"wrong-{attempt}")
        await page.click('form[action="/login"] button[type="submit"]')
        if attempt < 4:
            await expect(page.locator("#login-error")).to_have_text(
                "Utilizador ou palavra-passe errados."
            )
    await expect(page.locator("#login-error")).to_contain_text("Demasiadas tentativas")
    # the right password is refused too while locked
    await page.fill('input[name="password"]', VIEWER[1])
    await page.click('form[action="/login"] button[type="submit"]')
    await expect(page.locator("#login-error")).to_contain_text("15 minutos")
    assert page.url.startswith(base + "/login")
    await shot(page, "login-locked")


async def test_viewer_sees_a_status_change_live_and_cannot_command(
    browser: Any, system: Running
) -> None:
    st = await station(system, "PT-B-1")
    try:
        base = system.http_url
        page = await new_page(browser)
        await login(page, base, VIEWER)
        await expect(page.locator("#count-connected")).to_have_text("1")
        await expect(page.get_by_text("Postos ligados")).to_be_visible()  # Portuguese default
        await expect(
            page.locator('#evse-status-counts tr[data-status="Available"]')
        ).to_be_visible()

        dashboard = await page.context.new_page()
        await dashboard.goto(base + "/")
        await page.goto(base + "/stations/PT-B-1")
        status_cell = page.locator('#connector-statuses tr[data-connector="1"] td.status')
        await expect(status_cell).to_have_text("Available")
        # no reload: a marker set in the page survives the live update
        await page.evaluate("window.__still_here = true")
        await st.status(1, "Faulted", error_code="GroundFailure")
        await expect(status_cell).to_have_text("Faulted")
        assert await page.evaluate("window.__still_here === true")
        await expect(
            dashboard.locator('#evse-status-counts tr[data-status="Faulted"] td.num')
        ).to_have_text("1")
        await expect(page.locator("#frames")).to_contain_text("StatusNotification")
        await expect(page.locator("#frames")).to_contain_text("GroundFailure")  # the raw frame
        await expect(page.locator('#compliance tr[data-rule="R4"]')).to_contain_text("Cumpre")
        await shot(page, "station-viewer")
        await shot(dashboard, "dashboard")

        # no command forms for a viewer ...
        assert await page.locator("#commands").count() == 0
        assert await page.locator("form.command").count() == 0
        # ... and a forged POST with the viewer's own session and CSRF token is refused
        token = await page.input_value('form[action="/logout"] input[name="csrf"]')
        assert token
        answer = await page.request.post(
            base + "/stations/PT-B-1/commands/Reset",
            form={"csrf": token, "type": "Hard"},
            max_redirects=0,
        )
        assert answer.status == 403
        answer = await page.request.post(
            base + "/id-tags", form={"csrf": token, "id_tag": "X", "status": "Accepted"}
        )
        assert answer.status == 403
        assert not [a for a, _ in st.calls_received if a == "Reset"]
        await page.goto(base + "/stations")
        await expect(page.locator('#stations-rows tr[data-station="PT-B-1"]')).to_contain_text(
            "Faulted"
        )
        await st.status(1, "Available")
        await expect(page.locator('#stations-rows tr[data-station="PT-B-1"]')).to_contain_text(
            "1: Available"
        )
        await shot(page, "stations")
    finally:
        await st.disconnect()


async def test_viewer_sees_a_session_appear_and_complete(browser: Any, system: Running) -> None:
    await system.put_tag("TAG-B")
    st = await station(system, "PT-B-2")
    try:
        base = system.http_url
        page = await new_page(browser)
        await login(page, base, VIEWER)
        await page.goto(base + "/sessions")
        await expect(page.locator("#sessions-rows")).to_contain_text("Nenhuma sessão.")
        answer = await st.start_charging(1, "TAG-B")
        tx = answer["transactionId"]
        row = page.locator(f'#sessions-rows tr[data-transaction="{tx}"]')
        await expect(row).to_have_class("active")
        await expect(row.locator("td.tx-state")).to_contain_text("Em curso")
        await expect(page.locator("#sessions-pager")).to_have_text("1 no total")  # live too
        await expect(row).to_contain_text("TAG-B")
        await shot(page, "sessions-active")
        await st.stop_charging(1)
        await expect(row).to_have_class("completed")
        await expect(row.locator("td.tx-state")).to_contain_text("Terminada")
        await expect(row).to_contain_text("kWh")
        await page.goto(base + "/sessions?state=completed&station=PT-B-2")
        await expect(page.locator(f'#sessions-rows tr[data-transaction="{tx}"]')).to_be_visible()
        await shot(page, "sessions")
    finally:
        await st.disconnect()


async def test_admin_runs_commands_and_switches_language(browser: Any, system: Running) -> None:
    st = await station(system, "PT-B-3")
    try:
        base = system.http_url
        page = await new_page(browser)
        await login(page, base, ADMIN)
        await page.goto(base + "/stations/PT-B-3")
        unlock = page.locator('form.command[data-action="UnlockConnector"]')
        await unlock.locator('input[name="connectorId"]').fill("2")
        await unlock.locator('button[type="submit"]').click()
        result = page.locator("#command-result")
        await expect(result).to_contain_text("UnlockConnector")
        await expect(result).to_contain_text('"status": "Unlocked"')
        assert ("UnlockConnector", {"connectorId": 2}) in st.calls_received
        await shot(page, "station-admin-command")

        reset = page.locator('form.command[data-action="Reset"]')
        await reset.locator('select[name="type"]').select_option("Soft")
        await reset.locator('button[type="submit"]').click()
        await expect(result).to_contain_text("Reset")
        await expect(result).to_contain_text('"status": "Accepted"')
        await expect(page.locator("#recent-commands")).to_contain_text("Reset")

        # Portuguese to English, and back
        await page.goto(base + "/")
        await expect(page.get_by_text("Postos ligados")).to_be_visible()
        await page.click('a[data-lang="en"]')
        await expect(page.get_by_text("Stations connected")).to_be_visible()
        await expect(page.locator("nav.main")).to_contain_text("Sessions")
        await shot(page, "dashboard-en")
        await page.goto(base + "/id-tags")
        await page.fill('#tag-form input[name="id_tag"]', "ADMIN-TAG")
        await page.click('#tag-form button[type="submit"]')
        await expect(page.locator("#tag-result")).to_have_text("Id tag ADMIN-TAG saved.")
        await shot(page, "id-tags")
        await page.click('a[data-lang="pt"]')
        await expect(page.locator("h1")).to_have_text("Cartões (id tags)")
        # logging out ends the session
        await page.click('form[action="/logout"] button')
        await page.wait_for_url(base + "/login")
        await page.goto(base + "/stations")
        assert page.url.startswith(base + "/login")
    finally:
        await st.disconnect()


async def test_phone_sized_screen(browser: Any, system: Running) -> None:
    st = await station(system, "PT-B-4")
    try:
        context = await browser.new_context(viewport={"width": 390, "height": 844})
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await login(page, system.http_url, VIEWER)
        # the page itself does not scroll sideways; wide tables scroll in their own box
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
        await shot(page, "dashboard-phone")
        await page.goto(system.http_url + "/stations/PT-B-4")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await shot(page, "station-phone")
    finally:
        await st.disconnect()


@pytest.fixture
async def ocpi_system(tmp_path: Path) -> AsyncIterator[tuple[Running, FlakyHub]]:
    sysm, session, running = await start_system(
        tmp_path,
        ocpi={"offline_after": 120, "session_update_interval": 1, "push_timeout": 1},
        OCPP__HEARTBEAT_INTERVAL="2",
        OCPP__METER_VALUE_SAMPLE_INTERVAL="1",
        **web_overrides(),
    )
    try:
        async with FlakyHub() as hub:
            await register(hub, running.http_url, running.api)
            yield running, hub
    finally:
        await session.close()
        await sysm.stop()


async def test_mobie_viewer_reads_the_hub_link_and_the_compliance_page(
    browser: Any, ocpi_system: tuple[Running, FlakyHub]
) -> None:
    running, hub = ocpi_system
    await running.put_tag("TAG-M")
    st = await station(running, "PT-M-1")
    try:
        await eventually(lambda: "LOC-PT-M-1" in hub.locations)
        base = running.http_url
        page = await new_page(browser)
        await login(page, base, VIEWER)
        panel = page.locator("#ocpi-dashboard")
        await expect(panel.locator('tr[data-peer="1"]')).to_contain_text("registada")
        await expect(panel.locator('tr[data-ocpi-status="AVAILABLE"]')).to_contain_text("Idle")
        await shot(page, "dashboard-ocpi")

        # a session, followed live on the sessions page with what the hub acknowledged
        await page.goto(base + "/sessions")
        tx = (await st.start_charging(1, "TAG-M"))["transactionId"]
        row = page.locator(f'#sessions-rows tr[data-transaction="{tx}"]')
        await expect(row.locator(".ocpi-session")).to_contain_text("ACTIVE")
        await st.stop_charging(1)
        await expect(row.locator(".ocpi-session")).to_contain_text("COMPLETED")
        await expect(row.locator(".ocpi-cdr time")).to_be_visible()
        await shot(page, "sessions-ocpi")

        await page.goto(base + "/stations")
        cell = page.locator('#stations-rows tr[data-station="PT-M-1"] td.ext-ocpi')
        await expect(cell).to_contain_text("AVAILABLE")
        await expect(cell).to_contain_text("Idle")
        await shot(page, "stations-ocpi")
        await page.goto(base + "/stations/PT-M-1")
        await expect(page.locator("#ocpi-evses")).to_contain_text("LOC-PT-M-1-02")
        await expect(page.locator(".ocpi-hub-evses").first).to_contain_text("Idle")
        await shot(page, "station-ocpi")

        # the Compliance page, from the navigation bar
        await page.click('nav.main a[href="/compliance"]')
        await expect(page.locator("h1")).to_have_text("Conformidade com as regras MOBI.E")
        station_row = page.locator('#compliance-stations tr[data-station="PT-M-1"]')
        await expect(station_row.locator("td.state")).to_contain_text("Idle")

        # the rules' measurements reach the page when the recorder flushes (every 5 s):
        # a page rendered before that shows the Location only as on the hub
        async def r1_measured() -> bool:
            if "Cumpre" in await station_row.locator("td.r1").inner_text():
                return True
            await page.reload()
            return False

        await eventually(r1_measured, timeout=15)
        await expect(station_row.locator("td.r6")).to_contain_text("Cumpre")
        await expect(page.locator('#compliance-summary tr[data-rule="R6"]')).to_be_visible()
        await shot(page, "compliance")
        await page.click("#tab-sessions")
        await expect(
            page.locator(f'#compliance-sessions tr[data-transaction="{tx}"]')
        ).to_contain_text("COMPLETED")
        await shot(page, "compliance-sessions")
        await page.click('nav.main a[href="/hub"]')
        await expect(page.locator("#ocpi-peers")).to_contain_text("Flaky Hub")
        assert await page.locator("#token-a-form").count() == 0
        await shot(page, "hub")
        # the provider's form refuses a viewer, even with the viewer's own CSRF token
        token = await page.input_value('form[action="/logout"] input[name="csrf"]')
        answer = await page.request.post(base + "/hub/token-a", form={"csrf": token})
        assert answer.status == 403
        rows = await running.system.store.read("SELECT token FROM ocpi_tokens_a")
        assert all(r["token"] for r in rows) and len(rows) == 1  # only the one the hub used
    finally:
        await st.disconnect()
