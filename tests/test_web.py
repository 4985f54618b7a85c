"""The web interface over plain HTTP: login, sessions, CSRF, roles, pages, the provider
seam, `csms user`, and the traffic measurements behind the R3/R4 verdicts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from charger_sim import Behaviour, Station
from csms import ocppj
from csms.app import CentralSystem
from csms.clock import FakeClock
from csms.passwords import hash_password
from csms.traffic import TrafficMonitor, judge
from csms.web import NavEntry, WebRoute
from csms.web.i18n import CATALOGUE
from tests.conftest import (
    _ADMIN_HASH,
    ADMIN_PASSWORD,
    Api,
    Running,
    make_settings,
    start_system,
    station_body,
)

VIEWER = ("mobie", "viewer-password-1")
ADMIN = ("operador", "admin-password-1")
_HASHES = {name: hash_password(pw, log2_n=10) for name, pw in (VIEWER, ADMIN)}
USERS_TOML = (
    f'[{{name = "{VIEWER[0]}", role = "viewer", password_hash = "{_HASHES[VIEWER[0]]}"}}, '
    f'{{name = "{ADMIN[0]}", role = "admin", password_hash = "{_HASHES[ADMIN[0]]}"}}]'
)
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def web_overrides(**extra: str) -> dict[str, str]:
    return {"WEB__USERS": USERS_TOML, "WEB__REFRESH_SECONDS": "0.5", **extra}


class WebClient:
    """A browser-like HTTP client: cookie jar, login form, the session's CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            text = await r.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return r.status, text

    async def post(
        self, path: str, data: dict[str, str], csrf: bool = True, **kw: Any
    ) -> tuple[int, str, dict[str, str]]:
        body = {"csrf": self.csrf, **data} if csrf else dict(data)
        async with self.http.post(self.base + path, data=body, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), dict(r.headers)

    async def login(
        self, user: tuple[str, str], headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        await self.get("/login")  # the login form's CSRF cookie and token
        async with self.http.post(
            self.base + "/login",
            data={"csrf": self.csrf, "username": user[0], "password": user[1], "next": "/"},
            allow_redirects=False,
            headers=headers or {},
        ) as r:
            await r.read()
        if r.status == 303:
            await self.get("/")  # the session's CSRF token
        return r


@pytest.fixture
async def site(tmp_path: Path) -> Any:
    system, session, running = await start_system(tmp_path, **web_overrides())
    clients: list[WebClient] = []

    def client() -> WebClient:
        c = WebClient(running.http_url)
        clients.append(c)
        return c

    try:
        yield running, client
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await system.stop()


async def logged_in(make: Any, user: tuple[str, str]) -> WebClient:
    c = make()
    r = await c.login(user)
    assert r.status == 303, r.status
    return c


# ---------------------------------------------------------------------- pages and roles

PAGES = ["/", "/stations", "/stations/PT-W-1", "/sessions", "/id-tags"]


async def test_pages_for_viewer_and_admin(site: Any) -> None:
    running, make = site
    await running.define_station("PT-W-1", 2)
    viewer, admin = await logged_in(make, VIEWER), await logged_in(make, ADMIN)
    for path in [*PAGES, "/live/dashboard", "/live/stations", "/live/stations/PT-W-1"]:
        for c in (viewer, admin):
            status, _ = await c.get(path)
            assert status == 200, path
    # admin-only pages and the forms are not for viewers
    for path in ("/stations/PT-W-1/edit", "/new-station"):
        assert (await viewer.get(path))[0] == 403
        assert (await admin.get(path))[0] == 200
    _, page = await viewer.get("/stations/PT-W-1")
    assert "/commands/Reset" not in page and 'id="commands"' not in page
    _, page = await admin.get("/stations/PT-W-1")
    assert "/commands/Reset" in page and "/commands/UnlockConnector" in page
    _, tags = await viewer.get("/id-tags")
    assert 'id="tag-form"' not in tags
    assert 'id="tag-form"' in (await admin.get("/id-tags"))[1]
    # not logged in: to the login page, or 401 for the live JSON
    anon = make()
    status, _ = await anon.get("/stations")
    assert status == 303
    assert (await anon.get("/live/dashboard"))[0] == 401
    assert (await anon.get("/static/app.js"))[0] == 200


async def test_viewer_cannot_post_to_any_admin_route(site: Any) -> None:
    running, make = site
    await running.define_station("PT-W-1", 1)
    system: CentralSystem = running.system
    viewer = await logged_in(make, VIEWER)
    forms = {
        "/id-tags": {"id_tag": "VIEWER-TAG", "status": "Accepted"},
        "/new-station": {"station_id": "PT-NEW", "definition": json.dumps(station_body("X"))},
        "/stations/{station_id}/edit": {"definition": json.dumps(station_body("PT-W-1"))},
        "/stations/{station_id}/commands/{action}": {"type": "Soft"},
    }
    routes = system.web.post_routes()
    assert {r.path for r in routes} >= set(forms) | {"/logout"}
    for route in routes:
        if route.path == "/logout":
            continue
        # (any other id in a provider's path: "1")
        ids = defaultdict(lambda: "1", station_id="PT-W-1", action="Reset")
        path = route.path.format_map(ids)
        status, text, _ = await viewer.post(path, forms.get(route.path, {}))
        assert status == 403, (path, status)
        assert "403" in text
        # also with every command, and without CSRF
        status, _, _ = await viewer.post(path, forms.get(route.path, {}), csrf=False)
        assert status == 403
    for action in ("RemoteStartTransaction", "UnlockConnector", "ChangeConfiguration"):
        status, _, _ = await viewer.post(f"/stations/PT-W-1/commands/{action}", {})
        assert status == 403
    # nothing changed
    assert await system.store.id_tags.get("VIEWER-TAG") is None
    assert await system.store.stations.auth("PT-NEW") is None
    rows, _ = await system.store.commands.page("PT-W-1", 10, 0)
    assert rows == []


async def test_csrf_missing_or_wrong_is_refused(site: Any) -> None:
    running, make = site
    admin = await logged_in(make, ADMIN)
    data = {"id_tag": "CSRF-TAG", "status": "Accepted"}
    status, _, _ = await admin.post("/id-tags", data, csrf=False)
    assert status == 403
    status, _, _ = await admin.post("/id-tags", {**data, "csrf": "not-the-token"}, csrf=False)
    assert status == 403
    other = await logged_in(make, ADMIN)  # another session's token is not this one's
    status, _, _ = await admin.post("/id-tags", {**data, "csrf": other.csrf}, csrf=False)
    assert status == 403
    assert await running.system.store.id_tags.get("CSRF-TAG") is None
    status, _, headers = await admin.post("/id-tags", data)
    assert status == 303 and headers["Location"].startswith("/id-tags")
    assert (await running.system.store.id_tags.get("CSRF-TAG"))["status"] == "Accepted"
    # logout is a form too
    status, _, _ = await admin.post("/logout", {}, csrf=False)
    assert status == 403


async def test_login_form_needs_its_csrf_token(site: Any) -> None:
    running, make = site
    c = make()
    # a cross-site form post: no login cookie
    async with aiohttp.ClientSession() as bare:
        async with bare.post(
            running.http_url + "/login",
            data={"csrf": "x", "username": ADMIN[0], "password": ADMIN[1]},
            allow_redirects=False,
        ) as r:
            assert r.status == 403
    await c.get("/login")
    status, _, _ = await c.post(
        "/login", {"csrf": "wrong", "username": ADMIN[0], "password": ADMIN[1]}, csrf=False
    )
    assert status == 403


async def test_session_cookie_flags(site: Any) -> None:
    _, make = site
    c = make()
    r = await c.login(ADMIN)
    cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("csms_session="))
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http
    # the header of an untrusted peer is ignored
    c2 = make()
    r = await c2.login(ADMIN, headers={"X-Forwarded-Proto": "https"})
    cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("csms_session="))
    assert "secure" not in cookie.lower()


async def test_secure_cookie_behind_a_trusted_proxy(tmp_path: Path) -> None:
    system, session, running = await start_system(
        tmp_path, **web_overrides(WEB__TRUSTED_PROXIES='["127.0.0.1/32"]')
    )
    c = WebClient(running.http_url)
    try:
        r = await c.login(
            ADMIN, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        )
        assert r.status == 303
        cookie = next(v for v in r.headers.getall("Set-Cookie") if v.startswith("csms_session="))
        parts = {p.strip().lower() for p in cookie.split(";")}
        assert {"secure", "httponly", "samesite=lax"} <= parts
        row = await system.store.read_one("SELECT remote_address FROM web_sessions")
        assert row == {"remote_address": "203.0.113.7"}  # the client, not the proxy
    finally:
        await c.close()
        await session.close()
        await system.stop()


async def test_logout_invalidates_the_session(site: Any) -> None:
    running, make = site
    c = await logged_in(make, VIEWER)
    cookie = c.http.cookie_jar.filter_cookies(URL(running.http_url))["csms_session"].value
    assert (await c.get("/stations"))[0] == 200
    status, _, headers = await c.post("/logout", {})
    assert status == 303 and headers["Location"] == "/login"
    assert await running.system.store.read("SELECT * FROM web_sessions") == []
    # the old cookie, replayed, opens nothing
    async with aiohttp.ClientSession() as other:
        async with other.get(
            running.http_url + "/stations",
            headers={"Cookie": f"csms_session={cookie}"},
            allow_redirects=False,
        ) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        async with other.get(
            running.http_url + "/live/dashboard", headers={"Cookie": f"csms_session={cookie}"}
        ) as r:
            assert r.status == 401


async def test_failed_logins_lock_out_user_and_address(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    system, session, running = await start_system(tmp_path, clock=clock, **web_overrides())
    c = WebClient(running.http_url)
    try:
        for _ in range(4):
            r = await c.login((VIEWER[0], "wrong"))
            assert r.status == 401
        r = await c.login((VIEWER[0], "wrong"))  # the 5th
        assert r.status == 429
        # now even the right password is refused, with a clear message
        await c.get("/login")
        async with c.http.post(
            c.base + "/login",
            data={"csrf": c.csrf, "username": VIEWER[0], "password": VIEWER[1]},
            allow_redirects=False,
        ) as r:
            text = await r.text()
            assert r.status == 429
            assert "Demasiadas tentativas" in text and "15 minutos" in text
        # this address is locked for other users too
        assert (await c.login(ADMIN)).status == 429
        await clock.advance(15 * 60 + 1)
        assert (await c.login(VIEWER)).status == 303
        # the wrong-password page says so, without telling which was wrong
        c2 = WebClient(running.http_url)
        await c2.get("/lang/en")
        await c2.get("/login")
        async with c2.http.post(
            c2.base + "/login",
            data={"csrf": c2.csrf, "username": "nobody", "password": "x"},
            allow_redirects=False,
        ) as r:
            assert r.status == 401
            assert "Wrong user name or password." in await r.text()
        await c2.close()
    finally:
        await c.close()
        await session.close()
        await system.stop()


async def test_sessions_expire_when_idle_and_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
    system, session, running = await start_system(tmp_path, clock=clock, **web_overrides())
    c = WebClient(running.http_url)
    try:
        await c.login(VIEWER)
        cookie = c.http.cookie_jar.filter_cookies(URL(running.http_url))["csms_session"].value
        await clock.advance(100 * 60)
        assert (await c.get("/"))[0] == 200  # still within 120 idle minutes; refreshed
        await session.close()
        await system.stop()
        # a restart keeps the session (only its digest is stored)
        system, session, running = await start_system(tmp_path, clock=clock, **web_overrides())
        rows = await system.store.read("SELECT id FROM web_sessions")
        assert len(rows) == 1 and cookie not in rows[0]["id"]
        headers = {"Cookie": f"csms_session={cookie}"}
        async with session.get(running.http_url + "/", headers=headers) as r:
            assert r.status == 200
        await clock.advance(121 * 60)
        async with session.get(running.http_url + "/", headers=headers, allow_redirects=False) as r:
            assert r.status == 303  # idle too long: back to the login page
    finally:
        await c.close()
        await session.close()
        await system.stop()


async def test_api_basic_auth_is_separate(site: Any) -> None:
    running, make = site
    admin = await logged_in(make, ADMIN)
    status, _ = await admin.get("/api/v1/stations")
    assert status == 401  # a web session is not API credentials
    status, body = await running.api.get("/api/v1/stations")
    assert status == 200 and body["items"] == []
    # and API credentials do not open the web interface
    async with aiohttp.ClientSession() as s:
        async with s.get(
            running.http_url + "/stations",
            headers={"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)},
            allow_redirects=False,
        ) as r:
            assert r.status == 303


# ---------------------------------------------------------------------- csms user


def _csms(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CSMS_ADMIN_PASSWORD", None)
    return subprocess.run(
        [sys.executable, "-m", "csms.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_user_cli_add_list_remove(tmp_path: Path) -> None:
    config = tmp_path / "csms.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[web]\nusers = {USERS_TOML}\n', encoding="utf-8"
    )
    added = _csms(
        "user", "add", "ana", "--role", "viewer", "--config", str(config), "--password-stdin",
        stdin="a-long-password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    again = _csms(
        "user", "add", "ana", "--role", "admin", "--config", str(config), "--password-stdin",
        stdin="another-password\n",
    )  # fmt: skip
    assert again.returncode == 1 and "exists" in again.stderr
    short = _csms(
        "user", "add", "rui", "--role", "viewer", "--config", str(config), "--password-stdin",
        stdin="short\n",
    )  # fmt: skip
    assert short.returncode == 1 and "8 characters" in short.stderr
    listed = _csms("user", "list", "--config", str(config))
    assert listed.returncode == 0
    assert "ana\tviewer\tdatabase" in listed.stdout
    assert f"{VIEWER[0]}\tviewer\tconfiguration" in listed.stdout
    assert _csms("user", "remove", VIEWER[0], "--config", str(config)).returncode == 1

    # the running system knows the user from the database
    system, session, running = await start_system(
        tmp_path, **web_overrides(DATA_DIR=f'"{tmp_path / "data"}"')
    )
    c = WebClient(running.http_url)
    try:
        r = await c.login(("ana", "a-long-password"))
        assert r.status == 303
        assert 'class="role role-viewer"' in (await c.get("/"))[1]
        removed = _csms("user", "remove", "ana", "--config", str(config))
        assert removed.returncode == 0, removed.stderr
        assert (await c.get("/"))[0] == 303  # its session ended with it
        assert (await WebClient(running.http_url).login(("ana", "a-long-password"))).status == 401
    finally:
        await c.close()
        await session.close()
        await system.stop()


def _prompted(config: Path, name: str, answers: list[str]) -> tuple[int, str]:
    """``csms user add NAME --role viewer`` on a terminal (a pseudo-terminal that is the
    process's controlling one, as getpass wants): answer each prompt in turn."""
    import fcntl
    import pty
    import select
    import termios

    master, slave = pty.openpty()

    def become_terminal_owner() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if k != "CSMS_ADMIN_PASSWORD"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "csms.cli",
            "user",
            "add",
            name,
            "--role",
            "viewer",
            "-c",
            str(config),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        preexec_fn=become_terminal_owner,
    )
    os.close(slave)
    seen, pending = "", list(answers)
    deadline = 30.0
    while True:
        ready, _, _ = select.select([master], [], [], deadline)
        if not ready:
            proc.kill()
            raise AssertionError(f"no prompt within {deadline} s: {seen!r}")
        try:
            chunk = os.read(master, 1024).decode(errors="replace")
        except OSError:  # the process ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        prompts = seen.count("Password:") + seen.count("Again:")
        if pending and prompts > len(answers) - len(pending):  # a new prompt: answer it
            os.write(master, (pending.pop(0) + "\n").encode())
    os.close(master)
    return proc.wait(timeout=30), seen


def test_user_add_asks_for_the_password_twice(tmp_path: Path) -> None:
    config = tmp_path / "csms.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    code, seen = _prompted(config, "mobie", ["secret-pass-1", "secret-pass-1"])
    assert code == 0, seen
    assert "Password:" in seen and "Again:" in seen and "secret-pass-1" not in seen  # no echo
    assert "user mobie (viewer) saved" in seen
    code, seen = _prompted(config, "rui", ["secret-pass-1", "another-pass-2"])
    assert code == 1 and "the passwords differ" in seen
    listed = _csms("user", "list", "--config", str(config))
    assert "mobie\tviewer\tdatabase" in listed.stdout and "rui" not in listed.stdout


# ---------------------------------------------------------------------- station pages


async def test_admin_command_and_station_page(site: Any) -> None:
    running, make = site
    await running.define_station("PT-W-1", 2)
    st = Station(
        "PT-W-1",
        running.ocpp_url,
        2,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False),
    )
    await st.connect()
    try:
        await st.boot_and_report()
        await st.heartbeat()
        await st.heartbeat()
        admin = await logged_in(make, ADMIN)
        status, _, headers = await admin.post(
            "/stations/PT-W-1/commands/UnlockConnector", {"connectorId": "1"}
        )
        assert status == 303 and headers["Location"].endswith("#command-result")
        status, page = await admin.get("/stations/PT-W-1")
        assert 'id="command-result"' in page and "Unlocked" in page
        # the flash is shown once
        assert 'id="command-result"' not in (await admin.get("/stations/PT-W-1"))[1]
        # a payload the schema refuses: the error is shown, nothing crashes
        await admin.post("/stations/PT-W-1/commands/ChangeAvailability", {"connectorId": "x"})
        _, page = await admin.get("/stations/PT-W-1")
        assert "connectorId: must be a whole number" in page
        await admin.post("/stations/PT-W-1/commands/Nonsense", {})
        status, _, _ = await admin.post("/stations/PT-W-1/commands/Nonsense", {})
        assert status == 404
        # the live part: statuses, frames with their raw text, R4 measured
        status, body = await admin.get("/live/stations/PT-W-1")
        html = json.loads(body)["html"]["station-live"]
        assert "BootNotification" in html and "Heartbeat" in html and "UnlockConnector" in html
        assert "[2,&#34;" in html or "[2,&quot;" in html or "[2," in html  # raw frames
        assert 'data-connector="1"' in html and "Available" in html
        frames = running.system.traffic.frames("PT-W-1")
        assert frames[0].direction in ("in", "out")
        assert any(f.kind == "CALLRESULT" and f.action == "UnlockConnector" for f in frames)
        measured = running.system.traffic.measured("PT-W-1")
        assert measured.heartbeat_samples == 1
        # the commands list shows what was sent from the web
        rows, _ = await running.system.store.commands.page("PT-W-1", 20, 0)
        assert any(r["origin"] == "web" and r["action"] == "UnlockConnector" for r in rows)
    finally:
        await st.disconnect()


async def test_station_definition_form(site: Any) -> None:
    running, make = site
    await running.define_station("PT-W-1", 1)
    admin = await logged_in(make, ADMIN)
    status, page = await admin.get("/stations/PT-W-1/edit")
    assert status == 200 and "LOC-PT-W-1" in page
    bad = station_body("PT-W-1", 1)
    bad["location"]["coordinates"]["latitude"] = "north"
    bad["evses"][0]["connectors"][0]["standard"] = "PLUG"
    status, page, _ = await admin.post("/stations/PT-W-1/edit", {"definition": json.dumps(bad)})
    assert status == 422
    assert "location.coordinates.latitude" in page and "evses.0.connectors.0.standard" in page
    status, page, _ = await admin.post("/stations/PT-W-1/edit", {"definition": "{not json"})
    assert status == 422 and "(json)" in page
    good = station_body("PT-W-1", 1)
    good["location"]["time_zone"] = "Atlantic/Azores"
    events = running.system.bus.subscribe("test")
    status, _, headers = await admin.post("/stations/PT-W-1/edit", {"definition": json.dumps(good)})
    assert status == 303 and headers["Location"] == "/stations/PT-W-1"
    event = await asyncio.wait_for(events.get(), 5)  # (once committed, from the outbox)
    assert type(event).__name__ == "StationDefined" and event.station_id == "PT-W-1"
    row = await running.system.store.stations.get("PT-W-1")
    assert row["definition"]["location"]["time_zone"] == "Atlantic/Azores"
    # a new station; its id must be new
    body = station_body("PT-W-2", 1)
    status, _, _ = await admin.post(
        "/new-station", {"station_id": "PT-W-2", "definition": json.dumps(body)}
    )
    assert status == 303
    status, page, _ = await admin.post(
        "/new-station", {"station_id": "PT-W-2", "definition": json.dumps(body)}
    )
    assert status == 409 and "exists already" in page
    # the Location id of another station is refused, as by the API
    other = station_body("PT-W-3", 1)
    other["location"]["id"] = "LOC-PT-W-2"
    status, page, _ = await admin.post(
        "/new-station", {"station_id": "PT-W-3", "definition": json.dumps(other)}
    )
    assert status == 409 and "LOC-PT-W-2" in page


async def test_id_tag_form(site: Any) -> None:
    running, make = site
    admin = await logged_in(make, ADMIN)
    status, _, _ = await admin.post(
        "/id-tags",
        {"id_tag": "TAG-1", "status": "Blocked", "expiry_date": "2026-07-01T12:00"},
    )
    assert status == 303
    row = await running.system.store.id_tags.get("TAG-1")
    # typed in Lisbon summer time (UTC+1), stored in UTC
    assert row["status"] == "Blocked" and row["expiry_date"].startswith("2026-07-01T11:00:00")
    status, page = await admin.get("/id-tags?edit=TAG-1")
    assert 'value="2026-07-01T12:00"' in page and "Cartão TAG-1 guardado." in page  # once
    assert "Cartão TAG-1 guardado." not in (await admin.get("/id-tags"))[1]
    status, page, _ = await admin.post(
        "/id-tags", {"id_tag": "X" * 21, "status": "Maybe", "expiry_date": "soon"}
    )
    assert status == 422
    assert "id_tag" in page and "status" in page and "expiry_date" in page
    viewer = await logged_in(make, VIEWER)
    _, page = await viewer.get("/id-tags?q=TAG")
    assert 'data-tag="TAG-1"' in page and "Blocked" in page


async def test_language_switch_and_local_times(site: Any) -> None:
    running, make = site
    body = station_body("PT-AZ", 1)
    body["location"]["time_zone"] = "Atlantic/Azores"
    await running.api.put("/api/v1/stations/PT-AZ", body)
    await running.put_tag("TAG-AZ")
    st = Station("PT-AZ", running.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False))
    await st.connect()
    try:
        await st.boot_and_report()
        viewer = await logged_in(make, VIEWER)
        _, page = await viewer.get("/stations/PT-AZ")
        assert "Posto PT-AZ" in page and 'lang="pt"' in page  # Portuguese by default
        assert re.search(r'<span class="tz">Açores UTC[+-]\d</span>', page)
        status, _ = await viewer.get("/lang/en?next=/stations/PT-AZ")
        assert status == 303
        _, page = await viewer.get("/stations/PT-AZ")
        assert "Station PT-AZ" in page and 'lang="en"' in page
        assert re.search(r'<span class="tz">Azores UTC[+-]\d</span>', page)
        await st.start_charging(1, "TAG-AZ")
        _, page = await viewer.get("/sessions?station=PT-AZ")
        assert re.search(r'data-transaction="\d+" class="active"', page)
        assert "Azores UTC" in page
        # an open redirect is not possible
        status, _ = await viewer.get("/lang/pt?next=//evil.example/")
        assert status == 303
    finally:
        await st.disconnect()


# ---------------------------------------------------------------------- provider seam


class FakeProvider:
    """What the OCPI bridge will register: every member of the seam."""

    name = "fakehub"
    title: ClassVar[dict[str, str]] = {"pt": "Hub falso", "en": "Fake hub"}
    messages: ClassVar[dict[str, dict[str, str]]] = {
        "pt": {"fakehub.hello": "Olá do hub"},
        "en": {"fakehub.hello": "Hello from hub"},
    }

    def __init__(self, templates: Path, web_ui: Any) -> None:
        self.templates = templates
        self.web_ui = web_ui
        self.calls: list[tuple[str, Any]] = []
        self.nav = [NavEntry("/fakehub", {"pt": "Conformidade", "en": "Compliance"})]

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/fakehub", self.page),
            WebRoute("GET", "/fakehub/admin", self.page, access="admin"),
            WebRoute("POST", "/fakehub/retry", self.retry),
        ]

    async def page(self, request: web.Request) -> web.StreamResponse:
        return self.web_ui.render(request, "fakehub/page.html", {"title": "Fake"})

    async def retry(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(("retry", dict(self.web_ui.form(request))))
        return web.Response(status=303, headers={"Location": "/fakehub"})

    async def dashboard(self, request: web.Request) -> dict[str, Any]:
        self.calls.append(("dashboard", None))
        return {"registered": True, "failing": 2}

    async def stations(self, request: web.Request, ids: list[str]) -> dict[str, Any]:
        self.calls.append(("stations", ids))
        return {sid: {"mobie": "1: Idle"} for sid in ids}

    async def station(self, request: web.Request, station_id: str) -> dict[str, Any]:
        return {"evses": {"1": "Idle"}}

    async def sessions(self, request: web.Request, ids: list[int]) -> dict[int, Any]:
        self.calls.append(("sessions", ids))
        return {tx: {"ack": f"ACK-{tx}"} for tx in ids}


async def test_provider_seam(tmp_path: Path) -> None:
    templates = tmp_path / "fake_templates"
    templates.mkdir()
    (templates / "page.html").write_text(
        '{% extends "layout.html" %}{% block content %}'
        '<h1 id="fake">{{ t("fakehub.hello") }}</h1>{% endblock %}'
    )
    (templates / "dashboard.html").write_text(
        '<section id="fake-panel">{{ provider.title }}: failing {{ data.failing }}</section>'
    )
    (templates / "sessions_cell.html").write_text(
        '<span class="ack">{{ data.ack }} for {{ session.station_id }}</span>'
    )

    class Ext:
        name = "fakehub"

        def attach(self, system: CentralSystem, config: Any) -> None:
            self.provider = FakeProvider(templates, system.web)
            system.web.add_provider(self.provider)

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

    ext = Ext()
    settings = make_settings(tmp_path, **web_overrides())
    system = CentralSystem(settings, admin_password_hash=_ADMIN_HASH, extensions=[(ext, None)])
    await system.start()
    session = aiohttp.ClientSession()
    running = Running(system, Api(f"http://127.0.0.1:{system.http_port}", session))
    viewer, admin = WebClient(running.http_url), WebClient(running.http_url)
    try:
        await running.define_station("PT-P-1", 1)
        await running.put_tag("TAG-P")
        st = Station("PT-P-1", running.ocpp_url, 1, behaviour=Behaviour(auto_heartbeat=False))
        await st.connect()
        await st.boot_and_report()
        answer = await st.start_charging(1, "TAG-P")
        tx = answer["transactionId"]
        await st.disconnect()
        await viewer.login(VIEWER)
        await admin.login(ADMIN)

        _, page = await viewer.get("/")
        assert 'id="fake-panel"' in page and "Hub falso: failing 2" in page
        assert 'href="/fakehub"' in page and "Conformidade" in page
        _, page = await viewer.get("/stations")
        assert "Hub falso" in page and "1: Idle" in page  # generic cell: keys and values
        _, page = await viewer.get("/stations/PT-P-1")
        assert "Idle" in page and "ext-fakehub" in page  # generic panel
        _, page = await viewer.get("/sessions")
        assert f"ACK-{tx} for PT-P-1" in page
        assert ("sessions", [tx]) in ext.provider.calls
        assert ("stations", ["PT-P-1"]) in ext.provider.calls
        status, page = await viewer.get("/fakehub")
        assert status == 200 and '<h1 id="fake">Olá do hub</h1>' in page
        assert 'href="/fakehub" class="active"' in page  # the shared layout and its nav
        assert (await viewer.get("/fakehub/admin"))[0] == 403
        assert (await admin.get("/fakehub/admin"))[0] == 200
        status, _, _ = await viewer.post("/fakehub/retry", {"x": "1"})
        assert status == 403 and ext.provider.calls.count(("retry", {"x": "1"})) == 0
        status, _, _ = await admin.post("/fakehub/retry", {"x": "1"}, csrf=False)
        assert status == 403
        status, _, _ = await admin.post("/fakehub/retry", {"x": "1"})
        assert status == 303 and ("retry", {"csrf": admin.csrf, "x": "1"}) in ext.provider.calls
        assert (await WebClient(running.http_url).get("/fakehub"))[0] == 303  # login first

        # a failing hook does not break the page
        async def broken(request: web.Request) -> dict[str, Any]:
            raise RuntimeError("hub down")

        ext.provider.dashboard = broken  # type: ignore[method-assign]
        status, page = await viewer.get("/")
        assert status == 200 and 'id="fake-panel"' not in page
    finally:
        for c in (viewer, admin):
            await c.close()
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- traffic (R3, R4)


def _at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def _call(action: str, payload: dict[str, Any], uid: str = "u") -> tuple[str, ocppj.Call]:
    return json.dumps([2, uid, action, payload]), ocppj.Call(uid, action, payload)


def test_traffic_measures_heartbeat_and_meter_value_intervals() -> None:
    t = TrafficMonitor()
    t.connected("S")
    for i, sec in enumerate((0, 120, 240, 370)):
        t.received("S", _at(sec), *_call("Heartbeat", {}, f"h{i}"))
    mv = {
        "connectorId": 1,
        "transactionId": 7,
        "meterValue": [{"timestamp": "x", "sampledValue": [{"value": "1"}]}],
    }
    for i, sec in enumerate((0, 60, 120, 400)):
        t.received("S", _at(sec), *_call("MeterValues", mv, f"m{i}"))
    clock_aligned = {
        **mv,
        "meterValue": [
            {"timestamp": "x", "sampledValue": [{"value": "1", "context": "Sample.Clock"}]}
        ],
    }
    t.received("S", _at(401), *_call("MeterValues", clock_aligned, "c"))  # not counted
    t.received("S", _at(402), *_call("MeterValues", {"connectorId": 1, "meterValue": []}, "n"))
    m = t.measured("S")
    assert m.heartbeat_samples == 3 and m.heartbeat_median == 120 and m.heartbeat_max == 130
    assert m.meter_samples == 3 and m.meter_median == 60 and m.meter_max == 280
    snapshot = [
        {"key": "HeartbeatInterval", "value": "120"},
        {"key": "MeterValueSampleInterval", "value": "60"},
    ]
    v = judge(snapshot, m)
    assert v["R4"].status == "ok" and v["R3"].status == "ok"
    # a reconnection restarts the intervals (a silence while offline is not one)
    t.connected("S")
    t.received("S", _at(5000), *_call("Heartbeat", {}, "h9"))
    assert t.measured("S").heartbeat_samples == 3


def test_verdicts() -> None:
    t = TrafficMonitor()
    assert judge(None, t.measured("none"))["R4"].status == "unknown"
    for sec in (0, 300, 600):
        t.received("S", _at(sec), *_call("Heartbeat", {}))
    slow = t.measured("S")
    v = judge([{"key": "HeartbeatInterval", "value": "120"}], slow)
    assert v["R4"].status == "fail" and ("measured_over_limit", 300.0) in v["R4"].reasons
    v = judge([{"key": "HeartbeatInterval", "value": "900"}], t.measured("none"))
    assert v["R4"].status == "fail" and ("configured_over_limit", 900) in v["R4"].reasons
    # lower than MOBI.E's interval is stricter, hence fine; within the tolerance too
    fast = TrafficMonitor()
    for sec in (0, 125, 250):
        fast.received("S", _at(sec), *_call("Heartbeat", {}))
    v = judge([{"key": "HeartbeatInterval", "value": "60"}], fast.measured("S"))
    assert v["R4"].status == "ok"
    v = judge([{"key": "MeterValueSampleInterval", "value": "0"}], fast.measured("S"))
    assert v["R3"].status == "fail"


def test_frame_ring_buffer_is_bounded() -> None:
    t = TrafficMonitor(frames_per_station=5, frame_max_chars=100, station_max_chars=300)
    for i in range(50):
        text, call = _call("DataTransfer", {"vendorId": "v", "data": "x" * 500}, f"id{i}")
        t.received("S", _at(i), text, call)
        answer = json.dumps([3, f"id{i}", {"status": "Accepted"}])
        t.sent("S", _at(i), answer, "CALLRESULT", f"id{i}", "DataTransfer")
    frames = t.frames("S")
    assert 1 <= len(frames) <= 5
    assert sum(len(f.text) for f in frames) <= 300
    assert frames[0].direction == "out" and frames[0].action == "DataTransfer"
    assert frames[0].kind == "CALLRESULT" and frames[0].unique_id == "id49"
    big = [f for f in frames if f.direction == "in"]
    assert all(f.truncated and len(f.text) == 100 for f in big)
    # our own calls and their answers are named too; invalid frames are kept
    t.sent(
        "S", _at(60), json.dumps([2, "ours", "Reset", {"type": "Soft"}]), "CALL", "ours", "Reset"
    )
    t.received("S", _at(61), '[3,"ours",{"status":"Accepted"}]', ocppj.CallResult("ours", {}))
    t.received("S", _at(62), "not json", None)
    newest = t.frames("S")[:3]
    assert [(f.direction, f.kind, f.action) for f in newest] == [
        ("in", "invalid", None),
        ("in", "CALLRESULT", "Reset"),
        ("out", "CALL", "Reset"),
    ]
    many = TrafficMonitor(max_stations=3)
    for n in range(10):
        many.received(f"S{n}", _at(n), "x", None)
    assert len(many) == 3 and many.frames("S0") == [] and many.frames("S9")


# ---------------------------------------------------------------------- catalogue


def test_catalogue_has_every_key_in_both_languages() -> None:
    assert set(CATALOGUE["pt"]) == set(CATALOGUE["en"])
    templates = Path(__file__).parent.parent / "csms" / "web" / "templates"
    used: set[str] = set()
    for path in templates.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*'([a-z0-9_.]+)'\s*[,)]""", path.read_text()))
    source = (Path(__file__).parent.parent / "csms" / "web").glob("*.py")
    for path in source:
        used |= set(re.findall(r"""\.t\(\s*"([a-z0-9_.]+)"\s*[,)]""", path.read_text()))
        used |= set(
            re.findall(r"""error\(\s*request,\s*\d+,\s*"([a-z0-9_.]+)\"""", path.read_text())
        )
    missing = sorted(k for k in used if k not in CATALOGUE["pt"])
    assert not missing, missing
    assert len(used) > 100
    # dynamic keys: every state, verdict, reason, role, command and error title
    for prefix, names in {
        "state.": ["all", "connected", "offline", "never", "active", "completed"],
        "verdict.": ["ok", "fail", "unknown"],
        "reason.": ["not_configured", "configured_over_limit", "not_measured"],
        "role.": ["admin", "viewer"],
        "config.": ["compliant", "non_compliant", "unknown"],
        "error.title.": ["400", "403", "404"],
        "frame.": ["in", "out"],
    }.items():
        for name in names:
            assert prefix + name in CATALOGUE["en"], prefix + name
    from csms.web.commands import COMMANDS

    assert all(f"cmd.{c.action}" in CATALOGUE["pt"] for c in COMMANDS)


async def test_web_can_be_disabled(tmp_path: Path) -> None:
    system, session, running = await start_system(tmp_path, WEB__ENABLED="false")
    try:
        async with session.get(running.http_url + "/login") as r:
            assert r.status == 404
        status, _ = await running.api.get("/api/v1/stations")
        assert status == 200
    finally:
        await session.close()
        await system.stop()
