"""The smart charging pages in a real browser (issue 18): headless Debian Chromium
(``/usr/bin/chromium``) driven by Playwright, which never downloads a browser here; the real
central system with smart charging on 127.0.0.1 and simulated stations. The browser set-up
(no download, bounded waits, screenshots) is tests/test_web_browser.py's.

An admin creates a site from the browser, watches a charging car's share and the site's
power drawn against its limit, sets a dynamic limit; then adds a charging profile on a
station's page and sees the composite schedule drawn, csms's and the station's, agreeing.
Screenshots are saved under ``tests/artifacts/web/`` (or ``$WEB_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.test_push_faults import eventually
from tests.test_web import ADMIN, web_overrides
from tests.test_web_browser import browser, expect, login, new_page, shot

__all__ = ["browser"]  # (the browser fixture, with its bounded launch)

SMART = {"check_seconds": 3600, "recompute_seconds": 0}


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[Running, Any]]:
    sysm, session, running = await start_system(
        tmp_path,
        smart=SMART,
        OCPP__HEARTBEAT_INTERVAL="5",
        OCPP__METER_VALUE_SAMPLE_INTERVAL="1",
        **web_overrides(),
    )
    service = next(e for e in sysm.extensions if e.name == "smart").service
    try:
        yield running, service
    finally:
        await session.close()
        await sysm.stop()


def amps(text: str | None) -> float:
    """A number as the Portuguese pages write it (``17,9``)."""
    return float((text or "").strip().replace(",", "."))


async def station(running: Running, service: Any, sid: str, connectors: int = 1) -> Station:
    """A defined, connected, booted simulated station whose configuration csms has read
    (what it supports for smart charging)."""
    await running.define_station(sid, connectors)
    st = Station(sid, running.ocpp_url, connectors, behaviour=Behaviour(step_delay=0.01))
    await st.connect()
    await st.boot_and_report()

    async def configuration_read() -> bool:
        snap = await service.port.station(sid)
        return bool(snap and snap.config_snapshot)

    await eventually(configuration_read)
    return st


async def test_admin_sets_up_a_site_and_a_profile(browser: Any, system: Any) -> None:
    running, service = system
    base = running.http_url
    st1 = await station(running, service, "PT-SB-1")
    st2 = await station(running, service, "PT-SB-2")
    try:
        page = await new_page(browser)
        await login(page, base, ADMIN)
        # the sites page from the navigation bar (Portuguese by default)
        await page.click('nav.main a[href="/smart/sites"]')
        await expect(page.locator("h1")).to_contain_text("Instalações")
        await expect(page.locator("#sites")).to_contain_text("Ainda não há instalações.")
        form = page.locator("#new-site")
        await form.locator('input[name="id"]').fill("PARQUE-1")
        await form.locator('input[name="name"]').fill("Parque da Avenida")
        await form.locator('input[name="limit"]').fill("32")
        await form.locator('select[name="stations"]').select_option(["PT-SB-1", "PT-SB-2"])
        await shot(page, "smart-new-site")
        await form.locator('button[type="submit"]').click()
        await page.wait_for_url(base + "/smart/sites/PARQUE-1")
        await expect(page.locator("#smart-flash")).to_contain_text("PARQUE-1")
        await expect(page.locator("#limit-a")).to_have_text("32,0 A")
        await expect(page.locator("#limit-kw")).to_have_text("22,1 kW")  # 32 A x 230 V x 3
        await expect(page.locator("#members-table tr[data-member]")).to_have_count(2)
        await expect(page.locator("#no-power")).to_be_visible()  # nothing measured yet
        # a car charges: its share, then its measured power against the limit
        await running.put_tag("TAG-SB")
        await st1.start_transaction(1, "TAG-SB")

        async def power_recorded() -> bool:
            rows = await service.store.power(
                "PARQUE-1", service.clock.now().replace(year=2000), service.clock.now()
            )
            return bool(rows)

        await eventually(power_recorded)
        await page.reload()
        share = page.locator('#allocations tr[data-evse="PT-SB-1:1"] td.share')
        await expect(share).to_have_text(re.compile(r"^\d+,\d$"))
        # (a car measured drawing less than the limit gets what it draws and some headroom)
        assert 6 <= amps(await share.text_content()) <= 32
        chart = page.locator("svg#site-power")
        await expect(chart).to_be_visible()
        await expect(chart.locator("path.power")).to_have_count(1)
        await expect(chart.locator("path.limit")).to_have_count(1)
        await expect(chart.locator("[data-legend]")).to_have_count(2)
        await shot(page, "smart-site")
        # a dynamic limit: in force, and the car's share follows
        limit_form = page.locator("#dynamic-limit-form")
        await limit_form.locator('input[name="limit"]').fill("20")
        await limit_form.locator('button[type="submit"]').click()
        await expect(page.locator("#smart-flash")).to_contain_text("Limite dinâmico definido")
        await expect(page.locator("#limit-a")).to_have_text("20,0 A")
        await expect(page.locator('#limit-parts dd[data-part="dynamic"]')).to_contain_text(
            "em vigor"
        )
        await expect(page.locator("#allocations")).to_be_visible()
        assert amps(await share.text_content()) <= 20
        held = st1.limit(1)  # what the station itself enforces now
        assert held is not None and held.amps <= 20.0, held
        await shot(page, "smart-site-dynamic-limit")
        # the station's profiles, from the site's members list
        await page.click(
            '#members-table tr[data-member="PT-SB-2"] a[href="/smart/stations/PT-SB-2"]'
        )
        await page.wait_for_url(base + "/smart/stations/PT-SB-2")
        # the site's own safe default is listed, not clearable by hand
        default_row = page.locator("#profiles tr[data-profile='899999']")
        await expect(default_row).to_contain_text("site:PARQUE-1")
        await expect(default_row.locator("button")).to_have_count(0)
        # refused before anything is sent: the service's words
        form = page.locator("#new-profile")
        await form.locator('select[name="purpose"]').select_option("ChargePointMaxProfile")
        await form.locator('input[name="stack_level"]').fill("99")
        await form.locator('select[name="connector_id"]').select_option("0")
        await form.locator('select[name="kind"]').select_option("Relative")
        await form.locator('input[name="periods"]').fill("0:16")
        await form.locator('button[type="submit"]').click()
        await expect(page.locator("#smart-problem")).to_contain_text("Stack level 99")
        await expect(form.locator('input[name="periods"]')).to_have_value("0:16")
        await shot(page, "smart-profile-refused")
        # accepted, and the composite drawn: csms's expectation and the station's agree
        await form.locator('input[name="stack_level"]').fill("0")
        await form.locator('button[type="submit"]').click()
        await expect(page.locator("#smart-flash")).to_contain_text("installed")
        await expect(page.locator("#composite-verdict")).to_have_attribute("data-verdict", "agree")
        composite = page.locator("svg#composite-chart")
        await expect(composite).to_be_visible()
        await expect(composite.locator("path.expected")).to_have_count(1)
        await expect(composite.locator("path.station")).to_have_count(1)
        await expect(page.locator("#profiles tr[data-profile='1']")).to_contain_text("installed")
        assert 1 in st2.charging_profiles
        await shot(page, "smart-station-composite")
        # cleared with its button
        await page.locator("#profiles tr[data-profile='1'] button").click()
        await expect(page.locator("#smart-flash")).to_contain_text("Accepted")
        await expect(page.locator("#profiles tr[data-profile='1']")).to_have_count(0)
        assert 1 not in st2.charging_profiles
    finally:
        await st1.disconnect()
        await st2.disconnect()
