"""The first five minutes: the admin password the first `csms run` (`make run`) prints
opens the operator API and the web interface alike, with no other command."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.daemon import Daemon
from tests.test_web import USERS_TOML, WebClient


def _generated_password(daemon: Daemon) -> str:
    line = next(ln for ln in daemon.lines if "generated one" in str(ln.get("event", "")))
    return str(line["password"])


async def test_the_printed_password_opens_the_api_and_the_web_interface(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "csms", admin_password=None)
    await daemon.start()
    password = _generated_password(daemon)
    assert any("the API admin is its first admin" in str(ln.get("event")) for ln in daemon.lines)
    base = f"http://127.0.0.1:{daemon.http_port}"
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": aiohttp.encode_basic_auth("admin", password)}
        async with http.get(base + "/api/v1/stations", headers=auth) as r:
            assert r.status == 200
    web = WebClient(base)
    try:
        r = await web.login(("admin", password))
        assert r.status == 303, r.status
        status, page = await web.get("/")
        assert status == 200 and "admin" in page
        assert (await web.login(("admin", "not-the-password"))).status != 303
    finally:
        await web.close()
    assert await daemon.signal(signal.SIGTERM) == 0

    # the next start: the same password, no second user, nothing made again
    again = Daemon(tmp_path / "csms", admin_password=None)
    await again.start()
    assert not any("generated one" in str(ln.get("event")) for ln in again.lines)
    assert not any("first admin" in str(ln.get("event")) for ln in again.lines)
    web = WebClient(f"http://127.0.0.1:{again.http_port}")
    try:
        assert (await web.login(("admin", password))).status == 303
    finally:
        await web.close()
    assert await again.signal(signal.SIGTERM) == 0


async def test_no_admin_is_made_when_the_interface_has_users(tmp_path: Path) -> None:
    users = USERS_TOML.replace("\n", " ")
    daemon = Daemon(tmp_path / "csms", extra_config=f"[web]\nusers = {users}\n")
    await daemon.start()
    assert not any("first admin" in str(ln.get("event")) for ln in daemon.lines)
    web = WebClient(f"http://127.0.0.1:{daemon.http_port}")
    try:
        from tests.conftest import ADMIN_PASSWORD

        assert (await web.login(("admin", ADMIN_PASSWORD))).status != 303
    finally:
        await web.close()
    assert await daemon.signal(signal.SIGTERM) == 0
