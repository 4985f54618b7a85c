"""The Peers pages of the web interface (issue 19) over real HTTP: the real server with a
real hub registered (tests/flaky_hub.py). The admin makes a token A with a policy, edits a
peer's policy, suspends, resumes and removes it; MOBI.E's read-only login sees no other
party's secrets and is refused every change; hostile forms get a clear answer, never a 500."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ocpi_bridge.bridge import Bridge
from ocpi_bridge.store import token_digest
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides
from tests.test_web_ocpi import register, text_of

Pairs = list[tuple[str, str]]


@dataclass
class Site:
    running: Running
    hub: FlakyHub
    bridge: Bridge
    peer_id: int
    clients: list[WebClient]

    async def login(self, user: tuple[str, str]) -> WebClient:
        c = WebClient(self.running.http_url)
        self.clients.append(c)
        r = await c.login(user)
        assert r.status == 303, r.status
        return c

    async def hub_calls(self, module: str) -> int:
        """The hub calls one of our modules with its token C: the HTTP status."""
        assert self.hub.token_c is not None
        token = base64.b64encode(self.hub.token_c.encode()).decode()
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"{self.running.http_url}/ocpi/2.2.1/{module}",
                headers={"Authorization": f"Token {token}"},
            ) as r,
        ):
            return r.status


async def post(c: WebClient, path: str, pairs: Pairs, csrf: bool = True) -> tuple[int, str, str]:
    """A form with repeated fields (the ticked modules); (status, page, Location)."""
    data = ([("csrf", c.csrf)] if csrf else []) + pairs
    async with c.http.post(c.base + path, data=data, allow_redirects=False) as r:
        return r.status, await r.text(), r.headers.get("Location", "")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    system, session, running = await start_system(
        tmp_path, ocpi={"push_timeout": 0.5}, **web_overrides()
    )
    clients: list[WebClient] = []
    try:
        async with FlakyHub() as hub:
            await register(hub, running.http_url, running.api)
            bridge = system.extensions[0].bridge
            peer_id = (await bridge.store.peers())[0].id
            yield Site(running, hub, bridge, peer_id, clients)
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await system.stop()


async def test_the_peers_page_lists_each_peer_and_the_hub_page_links_to_it(site: Site) -> None:
    admin = await site.login(ADMIN)
    status, page = await admin.get("/peers")
    assert status == 200
    row = re.search(rf'<tr data-peer="{site.peer_id}" data-state="active">.*?</tr>', page, re.S)
    assert row, page
    text = text_of(row.group(0))
    assert "PT/MOB" in text and "HUB" in text and "2.2.1" in text and "locations" in text
    assert 'id="peers-token-form"' in page and 'id="peers-register-form"' in page
    assert "/ocpi/versions" in page
    _, hub_page = await admin.get("/hub")
    assert 'href="/peers" id="hub-peers-link"' in hub_page
    # both languages
    assert "Ligar uma nova parte" in page and "Connect a new peer" not in page
    admin.http.cookie_jar.update_cookies({"csms_lang": "en"})
    _, page = await admin.get("/peers")
    assert "Connect a new peer" in page and "Ligar uma nova parte" not in page


async def test_admin_makes_a_token_a_with_a_policy(site: Site) -> None:
    admin = await site.login(ADMIN)
    await admin.get("/peers")
    status, page, _ = await post(
        admin,
        "/peers/token-a",
        [
            ("role", "EMSP"),
            ("parties", "PT/EMS"),
            ("name", "eMSP Sul"),
            ("uses", "locations"),
            ("uses", "tokens"),
            ("realtime_auth", "no"),
            ("hidden", "LOC-X"),
            ("tariffs", "T1=T1-EMS"),
            ("version", "2.2.1"),
            ("mobie", ""),
        ],
    )
    assert status == 201, text_of(page)[:500]
    token = re.search(r'<pre class="answer" id="peers-token-a">([^<]+)</pre>', page)
    assert token and "/ocpi/versions" in page
    assert "EMSP PT/EMS (eMSP Sul)" in text_of(page)
    rows = await site.running.system.store.read(
        "SELECT role, parties, policy FROM ocpi_tokens_a WHERE token = ?",
        (token_digest(token.group(1)),),
    )
    policy = json.loads(rows[0]["policy"])
    assert rows[0]["role"] == "EMSP" and policy["name"] == "eMSP Sul"
    assert policy["uses"] == ["locations", "tokens"] and policy["realtime_auth"] is False
    assert policy["hidden"] == ["LOC-X"] and policy["tariffs"] == {"T1": "T1-EMS"}
    assert policy["version"] == "2.2.1"
    # nothing ticked, nothing chosen: the role's defaults
    status, page, _ = await post(admin, "/peers/token-a", [("role", "EMSP"), ("parties", "PT/EM2")])
    assert status == 201


async def test_hostile_forms_get_clear_errors(site: Site) -> None:
    admin = await site.login(ADMIN)
    await admin.get("/peers")
    before = await site.running.system.store.read("SELECT token FROM ocpi_tokens_a")
    cases: list[tuple[Pairs, str]] = [
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("name", "x" * 81)], "name"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("name", "x" * 5000)], "name"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("name", "a\x07b")], "control characters"),
        ([("role", "EMSP"), ("parties", "PT/EMS\x00")], "control characters"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("uses", "chargingprofiles")], "uses"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("uses", "hubclientinfo")], "uses"),
        ([("role", "SCSP"), ("parties", "PT/SC1"), ("receives", "cdrs")], "receives"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("mobie", "yes")], "mobie"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("mobie", "maybe")], "mobie"),
        ([("role", "EMSP"), ("parties", "<script>alert(1)</script>")], "parties"),
        ([("role", "ROOT"), ("parties", "PT/EMS")], "role"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("hidden", "LOC 1 <b>")], "hidden"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("tariffs", "T1")], "tariffs"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), ("version", "9.9")], "version"),
        ([("role", "EMSP"), ("parties", "PT/EMS"), *[("uses", "tokens")] * 30], "uses"),
    ]
    for pairs, words in cases:
        status, page, _ = await post(admin, "/peers/token-a", pairs)
        assert status == 422, (pairs[:3], status)
        error = re.search(r'id="peers-token-error"[^>]*>([^<]*)<', page)
        assert error and words in error.group(1), (pairs[:3], error and error.group(1))
        assert "<script>alert" not in page and 'id="peers-token-a"' not in page
    # without the form's CSRF token: refused, nothing made
    status, page, _ = await post(admin, "/peers/token-a", cases[0][0][:2], csrf=False)
    assert status == 403 and "403" in page
    assert await site.running.system.store.read("SELECT token FROM ocpi_tokens_a") == before
    # registering with a peer: a bad URL, a token with spaces, a peer that does not answer
    for pairs, code, words in (
        ([("versions_url", "ftp://x"), ("token", "abc")], 422, "versions_url"),
        ([("versions_url", "http://127.0.0.1:9/v"), ("token", "a b")], 422, "token"),
        ([("versions_url", "http://127.0.0.1:9/v"), ("token", "abc")], 502, "3001"),
    ):
        status, page, _ = await post(
            admin, "/peers/register", [*pairs, ("role", "EMSP"), ("parties", "PT/EM9")]
        )
        assert status == code, (pairs, status)
        error = re.search(r'id="peers-register-error"[^>]*>([^<]*)<', page)
        assert error and words in error.group(1), (pairs, error and error.group(1))
    for path in ("/peers/999", "/peers/abc", f"/peers/{'9' * 50}"):
        status, _ = await admin.get(path)
        assert status == 404, path
    status, _, _ = await post(admin, "/peers/999/suspend", [])
    assert status == 404


async def test_admin_edits_suspends_resumes_and_removes_a_peer(site: Site) -> None:
    admin = await site.login(ADMIN)
    pid, store = site.peer_id, site.bridge.store
    status, page = await admin.get(f"/peers/{pid}")
    assert status == 200 and 'id="peer-policy-form"' in page
    assert site.hub.base in page  # the admin sees its address
    policy: Pairs = [
        ("name", "MOBI.E Norte"),
        ("uses", "locations"),
        ("uses", "tokens"),
        ("receives", "locations"),
        ("mobie", "yes"),
        ("hidden", "LOC-1\nLOC-2"),
        ("tariffs", "T1=T1-MOB"),
        ("version", ""),
    ]
    status, _, where = await post(admin, f"/peers/{pid}/policy", policy)
    assert status == 303 and where == f"/peers/{pid}"
    peer = (await store.peers())[0]
    assert peer.name == "MOBI.E Norte" and peer.policy.uses == {"locations", "tokens"}
    assert peer.policy.receives == {"locations"} and peer.policy.mobie
    assert peer.policy.hidden == {"LOC-1", "LOC-2"} and dict(peer.policy.tariffs) == {
        "T1": "T1-MOB"
    }
    _, page = await admin.get(f"/peers/{pid}")
    assert 'id="peer-result"' in page and "MOBI.E Norte" in page
    await eventually(lambda: _status_is(site, "sessions", 403), 5)
    # a refused change keeps the policy and says why
    for bad, words in (
        ([("name", "x"), ("uses", "chargingprofiles")], "uses"),
        ([("name", "x"), ("hidden", "LOC'1--")], "hidden"),
        ([("name", "\x1b[31m")], "control characters"),
    ):
        status, page, _ = await post(admin, f"/peers/{pid}/policy", bad)
        assert status == 422
        error = re.search(r'id="peer-policy-error"[^>]*>([^<]*)<', page)
        assert error and words in error.group(1), error and error.group(1)
    assert (await store.peers())[0].name == "MOBI.E Norte"

    status, _, where = await post(admin, f"/peers/{pid}/suspend", [])
    assert status == 303
    assert (await store.peers())[0].suspended_at is not None
    await eventually(lambda: _status_is(site, "locations", 403), 5)
    _, page = await admin.get(f"/peers/{pid}")
    assert 'data-state="suspended"' in page and 'id="peer-resume-form"' in page
    _, page = await admin.get("/peers")
    assert f'data-peer="{pid}" data-state="suspended"' in page
    status, _, _ = await post(admin, f"/peers/{pid}/resume", [])
    assert status == 303 and (await store.peers())[0].active
    await eventually(lambda: _status_is(site, "locations", 200), 5)

    # removing needs the confirmation
    status, page, _ = await post(admin, f"/peers/{pid}/remove", [])
    assert status == 422 and 'id="peer-action-error"' in page
    assert (await store.peers())[0].active
    site.hub.requests.clear()
    status, _, where = await post(admin, f"/peers/{pid}/remove", [("confirm", "yes")])
    assert status == 303 and where == "/peers"
    assert (await store.peers())[0].status == "unregistered"
    assert [(r["method"], r["path"]) for r in site.hub.requests] == [
        ("DELETE", "/2.2.1/credentials")
    ]
    assert await site.hub_calls("locations") == 401
    _, page = await admin.get("/peers")
    assert 'id="peers-result"' in page and f'data-peer="{pid}" data-state="unregistered"' in page
    status, page, _ = await post(admin, f"/peers/{pid}/suspend", [])
    assert status == 409


async def _status_is(site: Site, module: str, status: int) -> bool:
    return await site.hub_calls(module) == status


async def test_the_read_only_login_sees_no_secrets_and_changes_nothing(site: Site) -> None:
    admin, viewer = await site.login(ADMIN), await site.login(VIEWER)
    pid = site.peer_id
    await post(
        admin,
        f"/peers/{pid}/policy",
        [("name", "Hub"), ("uses", "locations"), ("hidden", "LOC-HIDDEN"), ("tariffs", "A=B")],
    )
    status, page = await viewer.get("/peers")
    assert status == 200 and f'data-peer="{pid}"' in page
    assert 'id="peers-token-form"' not in page and 'id="peers-register-form"' not in page
    status, page = await viewer.get(f"/peers/{pid}")
    assert status == 200
    for secret in (site.hub.base, site.hub.token_b, str(site.hub.token_c), "LOC-HIDDEN", "A=B"):
        assert secret not in page, secret
    assert 'id="peer-policy-form"' not in page and 'id="peer-remove-form"' not in page
    before = await site.bridge.store.peers()
    for path in (
        f"/peers/{pid}/policy",
        f"/peers/{pid}/suspend",
        f"/peers/{pid}/resume",
        f"/peers/{pid}/remove",
        "/peers/token-a",
        "/peers/register",
    ):
        for csrf in (True, False):
            status, page, _ = await post(
                viewer, path, [("confirm", "yes"), ("name", "x"), ("role", "EMSP")], csrf=csrf
            )
            assert status == 403 and "403" in page, (path, csrf)
    after = await site.bridge.store.peers()
    assert [(p.status, p.suspended_at, p.policy) for p in after] == [
        (p.status, p.suspended_at, p.policy) for p in before
    ]


async def test_traffic_shows_on_the_pages(site: Site) -> None:
    traffic, pid = site.bridge.traffic, site.peer_id
    traffic.request(pid, "locations", 200)
    traffic.request(pid, "sessions", 403)
    traffic.push(pid, "evse", False, "HTTP 500 <b>boom</b>")
    admin = await site.login(ADMIN)
    _, page = await admin.get("/peers")
    row = re.search(rf'<tr data-peer="{pid}".*?</tr>', page, re.S)
    assert row
    cell = text_of(re.search(r'class="peer-traffic".*?</td>', row.group(0), re.S).group(0))
    assert re.search(r"[1-9]\d* (ok|refused|recusados)", cell), cell
    _, page = await admin.get(f"/peers/{pid}")
    failures = re.search(r'<table class="list" id="peer-failures">.*?</table>', page, re.S)
    assert failures and "evse" in failures.group(0)
    assert "&lt;b&gt;boom&lt;/b&gt;" in failures.group(0)  # escaped
    hourly = re.search(r'<table class="list" id="peer-hourly">.*?</table>', page, re.S)
    assert hourly and hourly.group(0).count("<tr data-hour=") in (24, 25)
