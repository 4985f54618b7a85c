"""The OCPI bridge's part of the web interface over real HTTP: a real hub peer registered
with us (tests/flaky_hub.py, which can be told to fail), a simulated station over real
websockets, and the pages MOBI.E's viewer and the operator read: dashboard, stations,
station, sessions, the Compliance page and the hub page."""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from csms.web.i18n import CATALOGUE
from ocpi_bridge.store import token_digest
from ocpi_bridge.web import EN, PT, mobie_name
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

OCPI = {
    "offline_after": 2,
    "session_update_interval": 1,
    "push_timeout": 0.5,
    "retry_max_seconds": 1,
}


async def register(hub: FlakyHub, http_url: str, api: Any) -> None:
    """The hub registers with us, as MOBI.E does: with a token A we made, granting HUB."""
    _, body = await api.post(
        "/api/v1/ocpi/token-a", {"role": "HUB", "parties": [f"PT/{hub.party_id}"]}
    )
    token = base64.b64encode(body["token"].encode()).decode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            http_url + "/ocpi/2.2.1/credentials",
            json=hub.credentials(),
            headers={"Authorization": f"Token {token}"},
        ) as r,
    ):
        answer = await r.json()
    assert answer["status_code"] == 1000, answer
    hub.token_c = answer["data"]["token"]


@dataclass
class Site:
    running: Running
    hub: FlakyHub
    clients: list[WebClient]

    async def login(self, user: tuple[str, str]) -> WebClient:
        c = WebClient(self.running.http_url)
        self.clients.append(c)
        r = await c.login(user)
        assert r.status == 303, r.status
        return c


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    system, session, running = await start_system(tmp_path, ocpi=OCPI, **web_overrides())
    clients: list[WebClient] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, running.http_url, running.api)
            yield Site(running, hub, clients)
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await system.stop()


def sim(station_id: str, url: str) -> Station:
    return Station(
        station_id,
        url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.02),
    )


def text_of(html: str) -> str:
    """The page's text, tags removed and spaces squeezed (to read it as a person does)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def row(html: str, attribute: str, value: str) -> str:
    """The markup of the table row with ``attribute="value"``."""
    found = re.search(rf'<tr[^>]*{attribute}="{re.escape(value)}".*?</tr>', html, re.S)
    assert found, f'no row {attribute}="{value}"'
    return found.group(0)


def test_mobie_names_are_the_profile_ones() -> None:
    # seed 001, table 7: the eight statuses MOBI.E names
    assert mobie_name("AVAILABLE") == "Idle" and mobie_name("CHARGING") == "InUse"
    assert mobie_name("PLANNED") == "ToInstall" and mobie_name("UNKNOWN") == "Unknown"
    assert mobie_name("INOPERATIVE") == "InMaintenance"
    assert mobie_name("OUTOFORDER") == "OutOfService" and mobie_name("REMOVED") == "EndOfLife"
    assert mobie_name("RESERVED") == "Reserved"
    assert mobie_name("BLOCKED") is None  # OCPI has it, MOBI.E's profile does not name it
    assert set(PT) == set(EN)


def test_every_text_of_the_provider_is_in_both_languages() -> None:
    root = Path(__file__).parent.parent / "ocpi_bridge"
    used: set[str] = set()
    for path in (root / "web_templates").glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*'([a-z0-9_.]+)'\s*[,)]""", path.read_text()))
    used |= set(re.findall(r"""\.t\(\s*"([a-z0-9_.]+)"\s*[,)]""", (root / "web.py").read_text()))
    known = set(PT) | set(CATALOGUE["pt"])
    assert len([k for k in used if k.startswith("ocpi.")]) > 60
    assert not sorted(used - known)
    for status in ("registered", "unregistered"):
        assert f"ocpi.peer_status.{status}" in PT
    for r1 in ("ok", "late", "on_hub", "missing", "undefined"):
        assert f"ocpi.r1.{r1}" in PT
    for rule in ("R1", "R3", "R4", "R5", "R6", "R7", "R8"):
        assert f"ocpi.rule.{rule}" in EN


async def test_hub_link_stations_sessions_and_compliance(site: Site) -> None:
    running, hub = site.running, site.hub
    await running.define_station("W1", 2)
    await running.put_tag("TAG-W")
    await eventually(lambda: "LOC-W1" in hub.locations)
    assert {e["status"] for e in hub.locations["LOC-W1"]["evses"]} == {"PLANNED"}
    viewer = await site.login(VIEWER)

    # before the station speaks: PLANNED, MOBI.E's ToInstall
    _, page = await viewer.get("/stations")
    cell = row(page, "data-station", "W1")
    assert 'data-ocpi-status="PLANNED"' in cell and "ToInstall" in cell

    st = sim("W1", running.ocpp_url)
    await st.connect()
    try:
        await st.boot_and_report()
        await eventually(
            lambda: (
                [e["status"] for e in hub.locations["LOC-W1"]["evses"]]
                == ["AVAILABLE", "AVAILABLE"]
            )
        )
        answer = await st.start_charging(1, "TAG-W")
        tx = answer["transactionId"]
        await st.meter_values(1, tx, energy_wh=1500, power_w=7000)
        await eventually(lambda: hub.sessions.get(str(tx), {}).get("status") == "ACTIVE")
        await eventually(
            lambda: hub.locations["LOC-W1"]["evses"][0]["status"] == "CHARGING", timeout=5
        )

        # dashboard: the hub registered, its last acknowledged push, EVSEs in MOBI.E's words
        status, page = await viewer.get("/")
        assert status == 200 and 'id="ocpi-dashboard"' in page
        peer = row(page, "data-peer", "1")
        assert "registada" in peer and "Flaky Hub" in peer
        last_ack = re.search(r'class="last-ack">(.*?)</td>', peer, re.S)
        assert last_ack and "<time" in last_ack.group(1)
        counts = text_of(row(page, "data-ocpi-status", "CHARGING"))
        assert "InUse" in counts and counts.strip().endswith("1")
        assert "Idle" in text_of(row(page, "data-ocpi-status", "AVAILABLE"))
        _, live = await viewer.get("/live/dashboard")
        assert 'id="ocpi-dashboard"' in json.loads(live)["html"]["live-dashboard"]

        # stations list: each EVSE's OCPI status and MOBI.E's word
        _, page = await viewer.get("/stations")
        cell = row(page, "data-station", "W1")
        assert 'data-ocpi-status="CHARGING"' in cell and "InUse" in cell
        assert 'data-ocpi-status="AVAILABLE"' in cell and "Idle" in cell

        # station page: the Location as the hub acknowledged it, EVSE by EVSE
        _, page = await viewer.get("/stations/W1")
        assert 'id="ocpi-station"' in page and "LOC-W1-01" in page and "LOC-W1-02" in page
        hub_rows = re.search(r'class="list ocpi-hub-evses".*?</table>', page, re.S)
        assert hub_rows and "CHARGING" in hub_rows.group(0) and "InUse" in hub_rows.group(0)
        assert "em dia" in hub_rows.group(0)
        assert "&#34;mobie_voltage_level&#34;: &#34;BTN&#34;" in page  # the Location's JSON

        await st.stop_charging(1)
        await eventually(lambda: str(tx) in hub.cdrs)

        # sessions list: what the hub acknowledged, Session and CDR
        async def acknowledged() -> bool:
            _, page = await viewer.get("/sessions")
            cell = row(page, "data-transaction", str(tx))
            return (
                "COMPLETED" in cell
                and 'class="ocpi-cdr"' in cell
                and "<time"
                in (
                    re.search(r'class="ocpi-cdr">(.*?)</div>', cell, re.S).group(1)  # type: ignore[union-attr]
                )
            )

        await eventually(acknowledged)

        # the Compliance page, in Portuguese for MOBI.E's viewer
        status, page = await viewer.get("/compliance")
        assert status == 200 and "Conformidade com as regras MOBI.E" in page
        assert 'href="/compliance" class="active"' in page
        period = re.search(r'<p id="compliance-period">(.*?)</p>', page, re.S)
        assert period and period.group(1).startswith("Período <time") and "&lt;" not in page
        r = row(page, "data-station", "W1")
        assert 'data-r1="ok"' in r  # PLANNED pushed and acknowledged in time
        r6 = re.search(r'<td class="r6">(.*?)</td>', r, re.S)
        assert r6 and "Cumpre" in r6.group(1) and "medições" in r6.group(1)
        r8 = re.search(r'<td class="r8">(.*?)</td>', r, re.S)
        assert r8 and "Cumpre" in r8.group(1)
        assert "InUse" not in r and "Idle" in r  # its EVSEs now
        summary = row(page, "data-rule", "R6")
        assert int(re.findall(r'class="num">([\d\u202f]+)</td>', summary)[0]) >= 3
        status, page = await viewer.get("/compliance?view=sessions")
        assert status == 200
        r = row(page, "data-transaction", str(tx))
        r5 = re.search(r'<td class="r5">(.*?)</td>', r, re.S)
        assert r5 and "medições" in r5.group(1)
        assert "COMPLETED" in r and "<time" in re.search(
            r'class="cdr-ack">(.*?)</td>', r, re.S
        ).group(1)  # type: ignore[union-attr]
        # a station filter, and English
        await viewer.get("/lang/en")
        _, page = await viewer.get(
            "/compliance?view=sessions&station=W1&from=2000-01-01&to=2000-01-02"
        )
        assert "Compliance with MOBI.E&#39;s rules" in page and "Nothing in this period." in page
        _, page = await viewer.get("/compliance?station=W1&from=2000-01-01&to=2000-01-02")
        r6 = re.search(r'<td class="r6">(.*?)</td>', row(page, "data-station", "W1"), re.S)
        assert r6 and "measurements" not in r6.group(1)  # nothing measured back then
        _, page = await viewer.get("/compliance?from=2026-01-01&to=2026-12-31")
        assert "A period is at most 31 days" in page
        _, page = await viewer.get("/compliance?from=yesterday")
        assert "Invalid period" in page

        # the hub fails: the failing pushes show, and the Compliance page counts them
        hub.mode = "error500"
        await st.status(2, "Faulted", error_code="GroundFailure")

        async def failing_shown() -> bool:
            _, page = await viewer.get("/")
            cell = re.search(r'class="num failing">(.*?)</td>', page, re.S)
            return bool(cell and "v-fail" in cell.group(1))

        await eventually(failing_shown)
        _, page = await viewer.get("/stations/W1")
        assert "failing since <time" in page and "out of date: a push is pending" in page
        _, page = await viewer.get("/hub")
        assert 'data-object="location:W1"' in page and "HTTP 500" in page

        async def failed_counted() -> bool:
            _, page = await viewer.get("/compliance?problems=1")
            return 'data-station="W1"' in page and 'class="failed"' in page

        await eventually(failed_counted)
        hub.mode = "ok"
        await eventually(
            lambda: hub.locations["LOC-W1"]["evses"][1]["status"] == "OUTOFORDER", timeout=5
        )
        _, page = await viewer.get("/stations")
        assert "OutOfService" in row(page, "data-station", "W1")

        # R7: the station goes silent; its EVSEs become UNKNOWN on the hub, and the time it
        # took is measured
        await eventually(
            lambda: {e["status"] for e in hub.locations["LOC-W1"]["evses"]} == {"UNKNOWN"},
            timeout=8,
        )

        async def r7_measured() -> bool:
            _, page = await viewer.get("/compliance?station=W1")
            r7 = re.search(r'<td class="r7">(.*?)</td>', row(page, "data-station", "W1"), re.S)
            return bool(r7 and "measurements" in r7.group(1))

        await eventually(r7_measured)
        _, page = await viewer.get("/stations")
        assert 'data-ocpi-status="UNKNOWN"' in row(page, "data-station", "W1")
    finally:
        await st.disconnect()


async def test_viewer_is_refused_every_post_and_admin_makes_a_token_a(site: Site) -> None:
    running = site.running
    system = running.system
    viewer, admin = await site.login(VIEWER), await site.login(ADMIN)
    routes = system.web.post_routes()
    assert "/hub/token-a" in {r.path for r in routes}  # the provider's own form
    before = await system.store.read("SELECT token FROM ocpi_tokens_a")
    for route in routes:
        if route.path == "/logout":
            continue
        path = route.path.format_map(defaultdict(lambda: "1", station_id="W1", action="Reset"))
        for with_csrf in (True, False):
            status, text, _ = await viewer.post(path, {}, csrf=with_csrf)
            assert status == 403 and "403" in text, (path, status)
    assert await system.store.read("SELECT token FROM ocpi_tokens_a") == before
    _, page = await viewer.get("/hub")
    assert 'id="token-a-form"' not in page and "/ocpi/versions" in page

    _, page = await admin.get("/hub")
    assert 'id="token-a-form"' in page
    grant = {"role": "EMSP", "parties": "PT/EMS, pt/em2"}
    status, _, _ = await admin.post("/hub/token-a", grant, csrf=False)
    assert status == 403
    # a token A grants a role for parties: none given, none made
    status, page, _ = await admin.post("/hub/token-a", {"role": "EMSP"})
    assert status == 422 and 'id="token-a-error"' in page and 'id="token-a"' not in page
    assert await system.store.read("SELECT token FROM ocpi_tokens_a") == before
    status, page, _ = await admin.post("/hub/token-a", grant)
    assert status == 201
    token = re.search(r'<pre class="answer" id="token-a">([^<]+)</pre>', page)
    assert token and "EMSP PT/EMS, PT/EM2" in text_of(page)
    # kept as its digest, with its grant
    assert (
        await system.store.read(
            "SELECT token FROM ocpi_tokens_a WHERE token = ?", (token.group(1),)
        )
        == []
    )
    rows = await system.store.read(
        "SELECT used_at, role, parties FROM ocpi_tokens_a WHERE token = ?",
        (token_digest(token.group(1)),),
    )
    assert rows == [{"used_at": None, "role": "EMSP", "parties": '["PT/EMS", "PT/EM2"]'}]
