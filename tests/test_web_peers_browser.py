"""Issue 19 done from the web interface, in a real browser: next to a hub (tests/flaky_hub.py,
registered as MOBI.E is), an admin connects a second eMSP. From the Peers page the admin
makes its token A with a role, parties and a name; the real test peer (extrawest-ocpi,
tests/ocpi_peer/harness.py) registers with our versions URL and that token; the Peers page
then shows it active, with its name, next to the hub, and its own page shows its policy.
The browser set-up (Debian Chromium, no download, bounded waits, screenshots) is
tests/test_web_browser.py's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing
from tests.test_web import ADMIN, web_overrides
from tests.test_web_browser import browser, expect, login, new_page, shot
from tests.test_web_ocpi import register

__all__ = ["browser"]  # (the browser fixture, with its bounded launch)


@pytest.fixture
async def two_peers(tmp_path: Path) -> AsyncIterator[tuple[Running, FlakyHub, EmspPeer]]:
    system, session, running = await start_system(
        tmp_path, ocpi={"push_timeout": 1}, **web_overrides()
    )
    try:
        async with FlakyHub() as hub:
            await register(hub, running.http_url, running.api)
            try:
                async with EmspPeer(party_id="EMS", country_code="PT") as emsp:
                    yield running, hub, emsp
            except PeerVenvMissing as e:
                pytest.fail(str(e))
    finally:
        await session.close()
        await system.stop()


async def test_admin_connects_a_second_emsp_next_to_the_hub(
    browser: Any, two_peers: tuple[Running, FlakyHub, EmspPeer]
) -> None:
    running, _hub, emsp = two_peers
    base = running.http_url
    page = await new_page(browser)
    await login(page, base, ADMIN)
    await page.goto(base + "/peers")
    hub_row = page.locator('#peers-table tr[data-state="active"]')
    await expect(hub_row).to_have_count(1)  # the hub, alone

    form = page.locator("#peers-token-form")
    await form.locator('select[name="role"]').select_option("EMSP")
    await form.locator('input[name="parties"]').fill("PT/EMS")
    await form.locator('input[name="name"]').fill("eMSP Dois")
    await form.locator('input[name="uses"][value="locations"]').check()
    await form.locator('input[name="uses"][value="tokens"]').check()
    await form.locator('input[name="uses"][value="sessions"]').check()
    await form.locator('input[name="uses"][value="cdrs"]').check()
    await form.locator("#peers-token-submit").click()
    await expect(page.locator("#peers-token-result")).to_be_visible()
    token_a = (await page.locator("#peers-token-a").inner_text()).strip()
    versions_url = (await page.locator("#peers-versions-url").inner_text()).strip()
    assert versions_url == base + "/ocpi/versions" and len(token_a) >= 32
    await shot(page, "peers-token-a")

    # the eMSP registers with what the page showed
    result = await emsp.register_with(versions_url, token_a)
    assert result["ok"] and result["version"] == "2.2.1", result

    await page.goto(base + "/peers")
    rows = page.locator('#peers-table tr[data-state="active"]')
    await expect(rows).to_have_count(2)
    new_row = page.locator("#peers-table tr", has_text="eMSP Dois")
    await expect(new_row).to_have_attribute("data-state", "active")
    await expect(new_row).to_contain_text("PT/EMS")
    await expect(new_row).to_contain_text("EMSP")
    await expect(new_row.locator(".peer-state")).to_have_text("ativa")
    await shot(page, "peers-list")

    await new_row.locator("a.peer-name").click()
    await expect(page.locator("#peer-title")).to_have_text("eMSP Dois")
    await expect(page.locator("#peer-facts")).to_have_attribute("data-state", "active")
    await expect(page.locator("#peer-facts")).to_contain_text("cdrs, locations, sessions, tokens")
    await expect(page.locator("#peer-hourly tbody tr").first).to_be_visible()
    await shot(page, "peer-page")

    # the eMSP uses what it was given (our Locations, through its token C); its page counts it
    pulled = await emsp.pull("locations")
    assert pulled["ok"], pulled
    await page.reload()
    this_hour = page.locator("#peer-hourly tbody tr").first.locator("td").nth(1)
    await expect(this_hour).not_to_have_text("0")
