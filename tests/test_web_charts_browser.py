"""The charts in a real browser (issue 16, item 11): headless Debian Chromium driven by
Playwright, as in tests/test_web_browser.py (whose fixtures this uses): the session's
power chart, the station's status timeline and the fleet's bars are drawn and visible
under the pages' Content-Security-Policy (no script, no inline style)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Running
from tests.test_web import VIEWER
from tests.test_web_browser import (  # noqa: F401  (browser and system are fixtures)
    browser,
    expect,
    login,
    new_page,
    shot,
    station,
    system,
)


async def test_the_charts_are_visible(browser: Any, system: Running) -> None:  # noqa: F811
    await system.put_tag("TAG1")
    st = await station(system, "PT-CHART", 1)
    try:
        begin = datetime.now(UTC) - timedelta(minutes=10)
        answer = await st.start_transaction(1, "TAG1", meter_start=0, timestamp=begin)
        assert answer is not None
        tx = answer["transactionId"]
        for i, watts in enumerate((7400, 11000, 3700), start=1):
            at = begin + timedelta(minutes=2 * i)
            await st.meter_values(1, energy_wh=1000.0 * i, power_w=watts, timestamp=at)
        page = await new_page(browser)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await login(page, system.http_url, VIEWER)
        await expect(page.locator("svg#chart-fleet")).to_be_visible()
        await shot(page, "dashboard-fleet")
        await page.goto(f"{system.http_url}/sessions/{tx}")
        power = page.locator("svg#chart-power")
        await expect(power).to_be_visible()
        line = power.locator("polyline.series")
        await expect(line).to_have_count(1)  # (with the simulator's own periodic values)
        assert int(await line.get_attribute("data-points") or 0) >= 3
        box = await power.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100
        await shot(page, "session-chart")
        await page.goto(f"{system.http_url}/stations/PT-CHART?days=1")
        timeline = page.locator("svg#chart-timeline")
        await expect(timeline).to_be_visible()
        await expect(timeline.locator("rect[data-legend]")).to_have_count(6)
        await expect(timeline.get_by_text("Conector 1")).to_be_visible()
        await page.click("#timeline-figures summary")  # the figures, for screen readers too
        await expect(page.locator('#timeline-table tr[data-connector="1"]')).to_be_visible()
        await shot(page, "station-timeline")
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        await st.disconnect()
