"""The smart charging web pages over plain HTTP, on the real system (issue 18): sites (list,
create, the limit now, the dynamic limit, members, the power chart against the limit) and a
station's charging profiles with the composite schedule; roles, CSRF, clear refusals.
The forms' parsing and the charts' drawing are driven directly too (pure functions)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from multidict import MultiDict

from charger_sim import Behaviour, Station
from smartcharge.share import SiteRules
from smartcharge.web import (
    ChartText,
    FormError,
    PowerPoint,
    limit_parts,
    parse_members_form,
    parse_periods,
    parse_profile_form,
    parse_site_form,
    power_chart,
    schedule_chart,
    station_periods,
    time_ticks,
)
from tests.conftest import Running, start_system
from tests.test_push_faults import eventually
from tests.test_web import ADMIN, VIEWER, WebClient, logged_in, web_overrides

SMART = {"check_seconds": 3600, "recompute_seconds": 0}
TEXT = ChartText("t", "d", "y", "x", ("power", "limit"))


@dataclass
class Web:
    running: Running
    system: Any
    service: Any
    make: Any


@pytest.fixture
async def smart_web(tmp_path: Path) -> AsyncIterator[Web]:
    system, session, running = await start_system(tmp_path, smart=SMART, **web_overrides())
    clients: list[WebClient] = []

    def make() -> WebClient:
        c = WebClient(running.http_url)
        clients.append(c)
        return c

    ext = next(e for e in system.extensions if e.name == "smart")
    try:
        yield Web(running, system, ext.service, make)
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await system.stop()


def site_form(**extra: str) -> dict[str, str]:
    return {
        "id": "CAR-PARK",
        "name": "Parque do Teste",
        "limit": "100",
        "unit": "A",
        "phases": "3",
        "voltage": "230",
        "min_per_evse": "6",
        "windows": "",
        "time_zone": "Europe/Lisbon",
        "stations_more": "",
        **extra,
    }


def problem(page: str) -> str:
    """The refusal's text shown on a page (unescaped), or '' when there is none."""
    found = re.search(r'id="smart-problem".*?</section>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", found.group(0))) if found else ""


# ---------------------------------------------------------------------- roles and CSRF


async def test_admins_only_and_csrf(smart_web: Web) -> None:
    w = smart_web
    await w.running.define_station("PT-SW-1", 1)
    viewer, admin = await logged_in(w.make, VIEWER), await logged_in(w.make, ADMIN)
    for path in ("/smart/sites", "/smart/stations/PT-SW-1"):
        assert (await viewer.get(path))[0] == 403, path
        assert (await admin.get(path))[0] == 200, path
    _, dash = await viewer.get("/")
    assert 'href="/smart/sites"' not in dash
    _, dash = await admin.get("/")
    assert 'href="/smart/sites"' in dash
    # every POST of ours is refused to a viewer (with its own valid token) and changes nothing
    posts = [r.path for r in w.system.web.post_routes() if r.path.startswith("/smart/")]
    assert len(posts) == 7, posts
    for path in posts:
        concrete = path.replace("{site_id}", "CAR-PARK").replace("{station_id}", "PT-SW-1")
        concrete = concrete.replace("{profile_id}", "1")
        status, _, _ = await viewer.post(concrete, site_form(stations_more="PT-SW-1"))
        assert status == 403, path
    assert await w.service.store.sites() == []
    # an admin without the token, or with a wrong one, is refused too
    status, _, _ = await admin.post("/smart/sites", site_form(), csrf=False)
    assert status == 403
    status, _, _ = await admin.post("/smart/sites", {**site_form(), "csrf": "forged"}, csrf=False)
    assert status == 403
    assert await w.service.store.sites() == []
    # the station page's panel is for admins
    _, page = await viewer.get("/stations/PT-SW-1")
    assert 'id="smart-profiles-link"' not in page
    _, page = await admin.get("/stations/PT-SW-1")
    assert 'id="smart-profiles-link"' in page and "Não pertence a nenhuma instalação." in page
    # in English too
    await admin.get("/lang/en?next=/smart/sites")
    _, page = await admin.get("/smart/sites")
    assert "No sites yet." in page and "Create the site" in page and ">Sites</a>" in page
    # not logged in: to the login page
    anon = w.make()
    status, _ = await anon.get("/smart/sites")
    assert status == 303


# ---------------------------------------------------------------------- sites


async def test_create_site_and_refusals(smart_web: Web) -> None:
    w = smart_web
    for sid in ("PT-SW-1", "PT-SW-2", "PT-SW-3"):
        await w.running.define_station(sid, 2)
    admin = await logged_in(w.make, ADMIN)
    _, page = await admin.get("/smart/sites")
    assert 'id="new-site"' in page and '<option value="PT-SW-2">' in page
    # created from the multi-select and the typed list
    form = MultiDict(site_form(stations_more="PT-SW-2"))
    form.add("stations", "PT-SW-1")
    form.add("csrf", admin.csrf)
    async with admin.http.post(admin.base + "/smart/sites", data=form, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/smart/sites/CAR-PARK"
    status, page = await admin.get("/smart/sites/CAR-PARK")
    assert status == 200
    assert "Parque do Teste" in page and "Site created" not in page
    assert re.search(r'id="smart-flash"[^>]*>[^<]*CAR-PARK', page)
    assert 'data-member="PT-SW-1"' in page and 'data-member="PT-SW-2"' in page
    assert 'href="/smart/stations/PT-SW-1"' in page  # the members link their profiles
    view = await w.service.site_view("CAR-PARK")
    assert [m["station_id"] for m in view["members"]] == ["PT-SW-1", "PT-SW-2"]
    # the list: limit now in A and kW (100 A x 230 V x 3 = 69 kW)
    _, page = await admin.get("/smart/sites")
    row = re.search(r'<tr data-site="CAR-PARK">.*?</tr>', page, re.S).group(0)
    assert "100,0" in row and "69,0" in row, row
    # refusals: clear messages, the form kept, nothing written
    cases = [
        (site_form(id="S2", limit="muito"), 422, "'muito' is not a number"),
        (site_form(id="S2", limit="1" * 3000), 422, "limit: at most 2000 characters"),
        (site_form(id="S2", limit="0"), 422, "limit"),
        (site_form(id="S2", stations_more="PT-NOPE"), 422, "unknown stations: PT-NOPE"),
        (site_form(id="S2", stations_more="PT-SW-1"), 409, "already in another site: PT-SW-1"),
        (site_form(id="S2", windows="8h-22h=50"), 422, "is not HH:MM-HH:MM=LIMIT"),
        (site_form(id="S2", windows="08:00-22:00=50, 21:00-23:00=40"), 422, "overlap"),
        (site_form(id="S2", unit="MW"), 422, "unit: A or kW"),
        (site_form(id="S2", time_zone="Mars/Olympus"), 422, "unknown time zone"),
        (site_form(id="bad id!"), 422, "id: 1 to 64"),
        (site_form(), 409, "a site CAR-PARK exists already"),
    ]
    for data, code, words in cases:
        status, page, _ = await admin.post("/smart/sites", data)
        assert status == code, (data, status)
        assert words in problem(page), (words, problem(page))
        assert 'id="new-site"' in page
    assert [s["id"] for s in await w.service.store.sites()] == ["CAR-PARK"]
    status, page, _ = await admin.post("/smart/sites", site_form(id="S2", name="Segundo <b>"))
    assert status == 303
    _, page = await admin.get("/smart/sites/S2")
    assert "Segundo &lt;b&gt;" in page and "Segundo <b>" not in page
    assert (await admin.get("/smart/sites/NOPE"))[0] == 404
    assert (await admin.get("/smart/sites/bad%20id"))[0] == 404
    assert (await admin.get("/smart/sites/CAR-PARK%0A"))[0] == 404  # the whole id, no new line


async def test_limit_now_dynamic_limit_members_rules(smart_web: Web) -> None:
    w = smart_web
    for sid in ("PT-SW-1", "PT-SW-2"):
        await w.running.define_station(sid, 1)
    admin = await logged_in(w.make, ADMIN)
    status, _, _ = await admin.post(
        "/smart/sites", site_form(stations_more="PT-SW-1, PT-SW-2", unit="kW", limit="69")
    )
    assert status == 303
    _, page = await admin.get("/smart/sites/CAR-PARK")
    assert re.search(r'data-part="base" data-in-force="1"', page)
    assert 'data-part="dynamic-none"' in page
    # a dynamic limit below the base: in force
    status, _, headers = await admin.post("/smart/sites/CAR-PARK/limit", {"limit": "23"})
    assert status == 303 and headers["Location"].endswith("#limit-now")
    _, page = await admin.get("/smart/sites/CAR-PARK")
    assert re.search(r'data-part="dynamic" data-in-force="1"', page)
    assert re.search(r'data-part="base">', page)
    assert re.search(r'id="limit-a">33,3 A', page), re.search(r'id="limit-a">[^<]*', page)
    view = await w.service.site_view("CAR-PARK")
    assert view["limit_a"] == pytest.approx(33.3)
    # refused: not a number, negative, an end in the past; the limit stays
    for data, words in (
        ({"limit": "x"}, "'x' is not a number"),
        ({"limit": "-5"}, "limit: a number from 0"),
        ({"limit": "5", "until": "2001-01-01T10:00"}, "until: a time in the future"),
        ({"limit": "5", "until": "amanhã"}, "is not a date and time"),
    ):
        status, page, _ = await admin.post("/smart/sites/CAR-PARK/limit", data)
        assert status == 422, data
        assert words in problem(page), (words, problem(page))
    assert (await w.service.site_view("CAR-PARK"))["limit_a"] == pytest.approx(33.3)
    # with an end, in the interface's zone
    until = (datetime.now(UTC) + timedelta(days=1)).astimezone().strftime("%Y-%m-%dT%H:%M")
    status, _, _ = await admin.post("/smart/sites/CAR-PARK/limit", {"limit": "46", "until": until})
    assert status == 303
    view = await w.service.site_view("CAR-PARK")
    assert view["dynamic_until"] is not None and view["limit_a"] == pytest.approx(66.6)
    # cleared
    status, _, _ = await admin.post("/smart/sites/CAR-PARK/limit", {"action": "clear"})
    assert status == 303
    view = await w.service.site_view("CAR-PARK")
    assert view["dynamic_limit"] is None and view["limit_a"] == pytest.approx(100.0)
    # members: a priority changed, one removed; a bad priority and an unknown station refused
    status, page, _ = await admin.post("/smart/sites/CAR-PARK/members", {"priority.PT-SW-1": "101"})
    assert status == 422 and "priority of PT-SW-1" in problem(page)
    status, page, _ = await admin.post("/smart/sites/CAR-PARK/members", {"add": "PT-NOPE"})
    assert status == 422 and "unknown stations: PT-NOPE" in problem(page)
    status, _, _ = await admin.post(
        "/smart/sites/CAR-PARK/members",
        {"priority.PT-SW-1": "5", "priority.PT-SW-2": "0", "remove.PT-SW-2": "1"},
    )
    assert status == 303
    view = await w.service.site_view("CAR-PARK")
    assert view["members"] == [{"station_id": "PT-SW-1", "priority": 5}]
    assert view["rules"]["unit"] == "kW"  # the rules are kept as they were
    # the rules changed (name too), the members kept
    status, _, _ = await admin.post(
        "/smart/sites/CAR-PARK/rules",
        site_form(name="Novo nome", limit="80", windows="22:00-07:00=100"),
    )
    assert status == 303
    view = await w.service.site_view("CAR-PARK")
    assert view["name"] == "Novo nome" and view["rules"]["unit"] == "A"
    assert view["members"] == [{"station_id": "PT-SW-1", "priority": 5}]
    status, page, _ = await admin.post("/smart/sites/CAR-PARK/rules", site_form(limit="-1"))
    assert status == 422 and "limit" in problem(page)
    # removing needs the box ticked
    status, page, _ = await admin.post("/smart/sites/CAR-PARK/delete", {})
    assert status == 422 and await w.service.store.site("CAR-PARK") is not None
    status, _, headers = await admin.post("/smart/sites/CAR-PARK/delete", {"confirm": "1"})
    assert status == 303 and headers["Location"] == "/smart/sites"
    assert await w.service.store.site("CAR-PARK") is None
    status, _, _ = await admin.post("/smart/sites/CAR-PARK/limit", {"limit": "1"})
    assert status == 404


async def test_power_chart_from_seeded_minutes(smart_web: Web) -> None:
    w = smart_web
    await w.running.define_station("PT-SW-1", 2)
    admin = await logged_in(w.make, ADMIN)
    status, _, _ = await admin.post("/smart/sites", site_form(stations_more="PT-SW-1"))
    assert status == 303
    _, page = await admin.get("/smart/sites/CAR-PARK")
    assert 'id="no-power"' in page and "<svg" not in page  # empty state
    now = w.service.clock.now().replace(second=0, microsecond=0)
    # 30 recent minutes of two EVSEs (summed per minute), the limit lowered halfway;
    # and 3 minutes 10 hours ago (in 24 h, not in 6 h)
    for i in range(1, 31):
        minute = now - timedelta(minutes=i)
        limit = Decimal(100) if i > 15 else Decimal(50)
        for conn in (1, 2):
            await w.service.store.record_power("CAR-PARK", minute, "PT-SW-1", conn, 5000.0, limit)
    for i in range(3):
        minute = now - timedelta(hours=10, minutes=i)
        await w.service.store.record_power("CAR-PARK", minute, "PT-SW-1", 1, 30000.0, Decimal(100))
    _, page = await admin.get("/smart/sites/CAR-PARK")
    svg = re.search(r'<svg[^>]*id="site-power".*?</svg>', page, re.S)
    assert svg is not None
    chart = svg.group(0)
    assert 'class="power" data-points="33"' in chart
    # the 10 h old minutes are a separate run: two runs in the line and in the area
    power = re.search(r'<path d="([^"]*)"[^>]*class="power"', chart).group(1)
    assert power.count("M") == 2
    assert 'class="limit" data-steps="3"' in chart  # 69 kW, then 34.5 kW; and the old run
    assert "<script" not in chart.lower() and "style=" not in chart
    assert "<title" in chart and "<desc" in chart and 'data-legend="' in chart
    # the time axis is in the interface's zone (Lisbon): local hours, not UTC's
    labels = re.findall(r">(\d\d:\d\d)</text>", chart)
    assert labels, chart[:500]
    # the peak (30 kW) and the limit in kW (100 A x 230 V x 3 phases)
    assert "30,0 kW" in page and "69,0 kW" in page
    _, page6 = await admin.get("/smart/sites/CAR-PARK?range=6h")
    assert 'class="power" data-points="30"' in page6
    _, page7 = await admin.get("/smart/sites/CAR-PARK?range=7d")
    assert 'class="power" data-points="33"' in page7
    _, junk = await admin.get("/smart/sites/CAR-PARK?range=1y")
    assert 'data-points="33"' in junk  # the default, 24 h
    assert '<strong aria-current="true">24h</strong>' in junk


# ---------------------------------------------------------------------- station profiles


async def test_station_profiles_composite_and_refusals(smart_web: Web) -> None:
    w = smart_web
    await w.running.define_station("PT-SW-1", 2)
    admin = await logged_in(w.make, ADMIN)
    # not connected: the profile is kept (pending), the composite says so
    status, _, headers = await admin.post(
        "/smart/stations/PT-SW-1/profiles",
        {
            "purpose": "ChargePointMaxProfile",
            "stack_level": "0",
            "connector_id": "0",
            "kind": "Relative",
            "unit": "A",
            "periods": "0:20",
        },
    )
    assert status == 303, headers
    assert headers["Location"] == "/smart/stations/PT-SW-1?connector=0&unit=A#composite"
    _, page = await admin.get("/smart/stations/PT-SW-1?connector=1&duration=3600&unit=A")
    assert re.search(r'data-profile="1" data-state="pending"', page)
    assert 'data-verdict="not-connected"' in page
    assert 'class="expected" data-periods="1"' in page and 'class="station"' not in page
    # connected: the pending profile reaches the station, and they agree
    st = Station("PT-SW-1", w.running.ocpp_url, 2, behaviour=Behaviour(auto_heartbeat=False))
    await st.connect()
    try:
        await st.boot_and_report()
        await eventually(lambda: 1 in st.charging_profiles)

        async def installed() -> bool:
            row = await w.service.store.profile("PT-SW-1", 1)
            return row is not None and row["state"] == "installed"

        await eventually(installed)

        async def configuration_read() -> bool:  # (what the station supports, after boot)
            station = await w.service.port.station("PT-SW-1")
            return bool(station.config_snapshot)

        await eventually(configuration_read)
        status, page, headers = await admin.post(
            "/smart/stations/PT-SW-1/profiles",
            {
                "purpose": "TxDefaultProfile",
                "stack_level": "1",
                "connector_id": "1",
                "kind": "Relative",
                "unit": "A",
                "periods": "0:16, 1800:10,5",
            },
        )
        assert status == 303, problem(page)
        assert 2 in st.charging_profiles
        _, page = await admin.get(
            headers["Location"].split("#")[0].replace("connector=1", "connector=1&duration=3600")
        )
        assert re.search(r'data-profile="2" data-state="installed"', page)
        assert "0 s: 16 A, 1800 s: 10.5 A" in page
        assert 'data-verdict="agree"' in page, re.search(r'id="composite-verdict"[^<]*', page)
        assert 'class="expected" data-periods="2"' in page
        assert 'class="station" data-periods="2"' in page
        # refusals shown as the service says them; nothing sent
        cases = [
            ({"periods": "0-16"}, 422, "is not START:LIMIT"),
            ({"periods": "100:16"}, 422, "the first period must start at 0 s"),
            ({"stack_level": "99"}, 422, "Stack level 99 is above the station's maximum"),
            ({"purpose": "TxProfile"}, 422, "needs a transaction in progress"),
            ({"kind": "Recurring"}, 422, "needs recurrency"),
            (
                {"connector_id": "0", "purpose": "ChargePointMaxProfile", "id": "900000"},
                422,
                "id: '900000' is not a whole number from 1 to 799999",
            ),
            ({"valid_from": "ontem"}, 422, "valid_from: 'ontem' is not a date and time"),
            ({"purpose": "Other"}, 422, "purpose"),
        ]
        for extra, code, words in cases:
            data = {
                "purpose": "TxDefaultProfile",
                "stack_level": "2",
                "connector_id": "1",
                "kind": "Relative",
                "unit": "A",
                "periods": "0:8",
                **extra,
            }
            status, page, _ = await admin.post("/smart/stations/PT-SW-1/profiles", data)
            assert status == code, (extra, status)
            assert words in problem(page), (words, problem(page))
            assert 'id="new-profile"' in page and html.escape(data["periods"]) in page
        assert set(st.charging_profiles) == {1, 2}
        # cleared: off the station and the page
        status, _, _ = await admin.post("/smart/stations/PT-SW-1/profiles/2/clear", {})
        assert status == 303
        assert 2 not in st.charging_profiles
        _, page = await admin.get("/smart/stations/PT-SW-1")
        assert 'data-profile="2"' not in page and "Accepted" in page  # the flash
        assert 'id="composite-verdict"' not in page  # no call to the station on a plain view
        status, page, _ = await admin.post("/smart/stations/PT-SW-1/profiles/2/clear", {})
        assert status == 404 and "no profile 2" in problem(page)
        # a bad query of the composite: a message, not a 500
        status, page = await admin.get("/smart/stations/PT-SW-1?connector=x")
        assert status == 200 and 'id="composite-problem"' in page
        # the station's own page links here (admins)
        _, page = await admin.get("/stations/PT-SW-1")
        assert 'id="smart-profiles-link"' in page
    finally:
        await st.disconnect()
    assert (await admin.get("/smart/stations/NOPE"))[0] == 404
    status, _, _ = await admin.post("/smart/stations/NOPE/profiles", {"periods": "0:1"})
    assert status == 404


# ---------------------------------------------------------------------- pure parts


def test_parse_periods() -> None:
    assert parse_periods("0:16, 3600:10") == [
        {"start_period": 0, "limit": Decimal(16)},
        {"start_period": 3600, "limit": Decimal(10)},
    ]
    # a decimal comma, and ; or new lines as separators
    assert parse_periods("0:16,5, 60:7.5;120:6\n180 : 0") == [
        {"start_period": 0, "limit": Decimal("16.5")},
        {"start_period": 60, "limit": Decimal("7.5")},
        {"start_period": 120, "limit": Decimal(6)},
        {"start_period": 180, "limit": Decimal(0)},
    ]
    for bad in ("", " , ", "0:", "a:1", "0:-1", "0:1e3", "0:16 A", "-5:3"):
        with pytest.raises(FormError) as e:
            parse_periods(bad)
        assert e.value.field == "periods"


def test_parse_forms() -> None:
    site_id, body = parse_site_form(
        MultiDict(site_form(limit="62,5", unit="kW", windows="22:00-07:00=80; 08:00-09:00=40")),
        "UTC",
    )
    assert site_id == "CAR-PARK"
    assert body["rules"]["limit"] == Decimal("62.5")
    assert body["rules"]["windows"] == [
        {"start": "22:00", "end": "07:00", "limit": Decimal(80)},
        {"start": "08:00", "end": "09:00", "limit": Decimal(40)},
    ]
    SiteRules.model_validate(body["rules"])  # what the form makes, the rules take
    members = parse_members_form(
        MultiDict({"priority.A": "3", "remove.B": "1", "add": "C, A ,B"}),
        [{"station_id": "A", "priority": 0}, {"station_id": "B", "priority": 1}],
    )
    assert members == [{"station_id": "A", "priority": 3}, {"station_id": "C", "priority": 0}]
    connector, profile = parse_profile_form(
        MultiDict(
            {
                "purpose": "TxDefaultProfile",
                "kind": "Absolute",
                "unit": "W",
                "periods": "0:11000",
                "connector_id": "2",
                "stack_level": "3",
                "start_schedule": "2026-07-01T00:00",
                "valid_to": "2026-07-02T00:00",
            }
        ),
        "Europe/Lisbon",
        7,
    )
    assert connector == 2 and profile["id"] == 7 and profile["stack_level"] == 3
    # Lisbon is UTC+1 in July
    assert profile["schedule"]["start_schedule"] == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    assert profile["valid_to"] == datetime(2026, 7, 1, 23, 0, tzinfo=UTC)
    assert "recurrency" not in profile and "valid_from" not in profile
    with pytest.raises(FormError, match="connector_id"):
        parse_profile_form(MultiDict({"connector_id": "101"}), "UTC", 1)
    with pytest.raises(FormError, match="stations"):
        parse_site_form(MultiDict(site_form(stations_more="ok, <script>")), "UTC")


def test_limit_parts() -> None:
    rules = SiteRules.model_validate(
        {
            "limit": 100,
            "unit": "A",
            "windows": [{"start": "18:00", "end": "22:00", "limit": 60}],
            "time_zone": "Europe/Lisbon",
        }
    )
    evening = datetime(2026, 7, 1, 18, 30, tzinfo=UTC)  # 19:30 in Lisbon
    parts = limit_parts(rules, evening, None, None)
    assert [(p.kind, p.amps, p.in_force) for p in parts] == [
        ("base", Decimal(100), False),
        ("window", Decimal(60), True),
    ]
    parts = limit_parts(rules, evening, Decimal(40), evening + timedelta(hours=1))
    assert [p.kind for p in parts if p.in_force] == ["dynamic"]
    # a dynamic limit that ended does not count; equal limits: the first is in force
    parts = limit_parts(rules, evening, Decimal(40), evening - timedelta(seconds=1))
    assert [p.kind for p in parts] == ["base", "window"]
    parts = limit_parts(rules, evening.replace(hour=8), Decimal(100), None)
    assert [(p.kind, p.in_force) for p in parts] == [("base", True), ("dynamic", False)]


def test_time_ticks_follow_the_zone() -> None:
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    ticks = time_ticks(start, start + timedelta(hours=24), "Europe/Lisbon")
    assert 3 <= len(ticks) <= 16
    assert all(start <= t <= start + timedelta(hours=24) for t, _ in ticks)
    # 12:00 UTC is 12:00 in Lisbon in winter; 3 h steps from local midnight
    assert [label for _, label in ticks][:3] == ["12:00", "15:00", "18:00"]
    # over 7 days: local midnights, across the change to summer time
    ticks = time_ticks(start, start + timedelta(days=7), "Europe/Lisbon")
    assert [label for _, label in ticks][:2] == ["29/03", "30/03"]
    assert ticks[1][0] == datetime(2026, 3, 29, 23, 0, tzinfo=UTC)  # midnight at UTC+1
    assert time_ticks(start, start, "UTC") == []


def test_station_periods_distrust_the_answer() -> None:
    start = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    good = {
        "status": "Accepted",
        "scheduleStart": "2026-07-01T12:00:02Z",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16},
                {"startPeriod": 60, "limit": 8.5},
            ],
        },
    }
    assert station_periods(good, start) == [(2, 16.0), (62, 8.5)]
    bad_answers: list[Any] = [
        None,
        "Accepted",
        {"status": "Rejected"},
        {**good, "chargingSchedule": []},
        {
            **good,
            "chargingSchedule": {"chargingSchedulePeriod": [{"startPeriod": "0", "limit": 1}]},
        },
        {**good, "chargingSchedule": {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": -1}]}},
        {
            **good,
            "chargingSchedule": {"chargingSchedulePeriod": [{"startPeriod": 0, "limit": True}]},
        },
        {
            **good,
            "chargingSchedule": {
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": float("nan")}]
            },
        },
        {**good, "scheduleStart": "yesterday"},
        {**good, "chargingSchedule": {"chargingSchedulePeriod": []}},
    ]
    for answer in bad_answers:
        assert station_periods(answer, start) is None, answer


def test_charts_draw_what_they_are_given() -> None:
    start = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    pts = [PowerPoint(start + timedelta(minutes=i), 10.0 + i, 69.0) for i in range(5)]
    chart = str(
        power_chart(
            pts,
            start,
            start + timedelta(hours=1),
            chart_id="c",
            text=TEXT,
            tz_name="UTC",
            lang="en",
        )
    )
    assert 'data-points="5"' in chart and 'data-steps="1"' in chart
    # 10,080 minutes are downsampled, each bucket at its peak: the peak stays visible
    week = [PowerPoint(start + timedelta(minutes=i), 1.0, 5.0) for i in range(7 * 1440)]
    week[5000] = PowerPoint(week[5000].minute, 99.0, 5.0)
    chart = str(
        power_chart(
            week,
            start,
            start + timedelta(days=7),
            chart_id="c",
            text=TEXT,
            tz_name="UTC",
            lang="en",
        )
    )
    n = int(re.search(r'data-points="(\d+)"', chart).group(1))
    assert n <= 1500
    ys = [
        float(v)
        for v in re.findall(
            r"L?[\d.]+ ([\d.]+)", re.search(r'd="([^"]*)"[^>]*class="power"', chart).group(1)
        )
    ]
    assert min(ys) < 150 < max(ys)  # the 99 kW peak is drawn, well above the 1 kW
    # a lone minute is a dot; the latest limit holds to the chart's end (now)
    end = start + timedelta(hours=1)
    lone = [PowerPoint(end - timedelta(minutes=1), 5.0, 20.0)]
    chart = str(power_chart(lone, start, end, chart_id="c", text=TEXT, tz_name="UTC", lang="en"))
    assert chart.count('class="power-dot"') == 1
    limit_path = re.search(r'<path d="([^"]*)"[^>]*class="limit"', chart).group(1)
    assert limit_path.endswith("H744")  # the plot's right edge: 760 - 16
    # text is escaped
    evil = ChartText("<script>", "&", "y", "x", ("<b>", "l"))
    chart = str(
        power_chart(
            pts,
            start,
            start + timedelta(hours=1),
            chart_id="c",
            text=evil,
            tz_name="UTC",
            lang="en",
        )
    )
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "<b>" not in chart
    # the composite: a None limit draws no step
    chart = str(
        schedule_chart(
            [(0, 16.0), (60, None), (120, 8.0)],
            None,
            start,
            300,
            unit="A",
            chart_id="s",
            text=TEXT,
            tz_name="UTC",
            lang="en",
        )
    )
    assert 'class="expected" data-periods="2"' in chart and 'class="station"' not in chart
