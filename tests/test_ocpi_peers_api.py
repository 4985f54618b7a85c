"""Peers as the operator defines them (issue 19), through the operator API, against the
real server and a real hub peer on 127.0.0.1 (tests/flaky_hub.py): a token A carrying a
policy, the peer's policy changed, the peer suspended, resumed and removed (its token stops
working, our credentials are deleted at the peer); unknown ids, another role's modules and
malformed bodies answered with clear errors. And the per-peer traffic counters
(ocpi_bridge.traffic) on their own, with an injected clock."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from csms.clock import FakeClock
from ocpi_bridge.bridge import Bridge
from ocpi_bridge.traffic import MAX_ERROR, MAX_KEYS, PeerTraffic, error_text, module_name
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually

P = "/api/v1/ocpi/peers"


@dataclass
class Setup:
    running: Running
    hub: FlakyHub
    bridge: Bridge
    peer_id: int

    async def ocpi(self, path: str, token: str | None = None) -> tuple[int, Any]:
        """The hub calls one of our OCPI modules with its token C."""
        token = token if token is not None else self.hub.token_c
        assert token is not None
        header = base64.b64encode(token.encode()).decode()
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                self.running.http_url + path,
                headers={
                    "Authorization": f"Token {header}",
                    "X-Request-ID": "r1",
                    "X-Correlation-ID": "c1",
                    "OCPI-from-country-code": "PT",
                    "OCPI-from-party-id": self.hub.party_id,
                    "OCPI-to-country-code": "PT",
                    "OCPI-to-party-id": "CPO",
                },
            ) as r,
        ):
            return r.status, await r.json(content_type=None)


async def _register(hub: FlakyHub, running: Running, body: dict[str, Any]) -> dict[str, Any]:
    status, made = await running.api.post("/api/v1/ocpi/token-a", body)
    assert status == 201, made
    token = base64.b64encode(made["token"].encode()).decode()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            running.http_url + "/ocpi/2.2.1/credentials",
            json=hub.credentials(),
            headers={"Authorization": f"Token {token}"},
        ) as r,
    ):
        answer = await r.json()
    assert answer["status_code"] == 1000, answer
    hub.token_c = answer["data"]["token"]
    return made


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    system, session, running = await start_system(tmp_path, ocpi={"push_timeout": 0.5})
    try:
        async with FlakyHub() as hub:
            made = await _register(
                hub,
                running,
                {
                    "role": "HUB",
                    "parties": ["PT/MOB"],
                    "policy": {"name": "Hub Norte", "hidden": ["LOC-SECRET"], "mobie": True},
                },
            )
            assert made["granted"]["policy"]["name"] == "Hub Norte"
            bridge = system.extensions[0].bridge
            peers = await bridge.store.peers()
            yield Setup(running, hub, bridge, peers[0].id)
    finally:
        await session.close()
        await system.stop()


async def test_a_peer_is_listed_with_the_policy_of_its_token_a(setup: Setup) -> None:
    api = setup.running.api
    status, body = await api.get(P)
    assert status == 200 and body["total"] == 1
    item = body["items"][0]
    assert item["id"] == setup.peer_id and item["name"] == "Hub Norte"
    assert item["active"] is True and item["suspended_at"] is None
    assert item["granted"] == {"role": "HUB", "parties": ["PT/MOB"], "source": "token_a"}
    policy = item["policy"]
    assert policy["mobie"] is True and policy["hidden"] == ["LOC-SECRET"]
    assert "locations" in policy["uses"] and "chargingprofiles" not in policy["uses"]
    assert set(item["traffic_24h"]) == {"requests", "pushes", "last_error"}
    # never a token, in any form
    text = str(body)
    assert setup.hub.token_b not in text and str(setup.hub.token_c) not in text
    status, one = await api.get(f"{P}/{setup.peer_id}")
    assert status == 200 and one["name"] == "Hub Norte"
    assert len(one["traffic_hourly"]) in (24, 25)
    assert one["failing_pushes"] == [] and one["hub_client_info"] == []
    assert setup.hub.token_b not in str(one)


async def test_unknown_ids_and_bad_queries(setup: Setup) -> None:
    api = setup.running.api
    for path in (f"{P}/999", f"{P}/abc", f"{P}/-1", f"{P}/{'9' * 40}"):
        status, body = await api.get(path)
        assert status == 404 and body["error"] == "not_found", (path, body)
    for method, suffix in (("POST", "/suspend"), ("POST", "/resume"), ("DELETE", "")):
        status, body = await api.request(method, f"{P}/999{suffix}")
        assert status == 404, (method, suffix, body)
    status, body = await api.request("PATCH", f"{P}/999", {"name": "x"})
    assert status == 404
    status, body = await api.get(f"{P}?peer=1")
    assert status == 400 and body["error"] == "invalid_query"
    status, body = await api.get(f"{P}/{setup.peer_id}?verbose=1")
    assert status == 400


async def test_patch_changes_the_policy_and_refuses_what_the_role_may_not_have(
    setup: Setup,
) -> None:
    api, pid = setup.running.api, setup.peer_id
    status, body = await api.request(
        "PATCH", f"{P}/{pid}", {"name": "MOBI.E", "uses": ["locations", "tokens"]}
    )
    assert status == 200, body
    assert body["name"] == "MOBI.E" and body["policy"]["uses"] == ["locations", "tokens"]
    assert body["policy"]["hidden"] == ["LOC-SECRET"]  # the others stay

    # applied at once: the hub may no longer call sessions
    async def sessions_closed() -> bool:
        status, answer = await setup.ocpi("/ocpi/2.2.1/sessions")
        return status == 403 and answer["status_code"] == 2000

    await eventually(sessions_closed, 5)
    status, answer = await setup.ocpi("/ocpi/2.2.1/locations")
    assert status == 200, answer

    cases = [
        ({"uses": ["chargingprofiles"]}, "uses"),  # SCSP's, not a hub's
        ({"receives": ["tokens"]}, "receives"),
        ({"name": "x" * 81}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"hidden": ["LOC 1"]}, "hidden"),
        ({"tariffs": {"A": "A"}}, "tariffs"),
        ({"version": "9.9"}, "version"),
        ({"mobie": "yes"}, "mobie"),
        ({"colour": "red"}, "colour"),
        ([1, 2], "(body)"),
    ]
    for patch, field in cases:
        status, body = await api.request("PATCH", f"{P}/{pid}", patch)
        assert status == 422, (patch, body)
        assert body["fields"][0]["field"] == field, (patch, body)
    async with (
        aiohttp.ClientSession() as s,
        s.patch(setup.running.http_url + f"{P}/{pid}", data=b"{not json", headers=api.auth) as r,
    ):
        assert r.status == 400
    _, body = await api.get(f"{P}/{pid}")
    assert body["name"] == "MOBI.E"  # nothing refused was kept


async def test_suspend_resume_and_remove(setup: Setup) -> None:
    api, pid, hub = setup.running.api, setup.peer_id, setup.hub
    status, body = await api.post(f"{P}/{pid}/suspend")
    assert status == 200 and body["active"] is False and body["suspended_at"]

    async def refused() -> bool:
        status, _ = await setup.ocpi("/ocpi/2.2.1/locations")
        return status == 403

    await eventually(refused, 5)
    status, again = await api.post(f"{P}/{pid}/suspend")  # twice: the same
    assert status == 200 and again["suspended_at"] == body["suspended_at"]
    _, listed = await api.get(P)
    assert listed["items"][0]["active"] is False

    status, body = await api.post(f"{P}/{pid}/resume")
    assert status == 200 and body["active"] is True and body["suspended_at"] is None

    async def served() -> bool:
        status, _ = await setup.ocpi("/ocpi/2.2.1/locations")
        return status == 200

    await eventually(served, 5)

    hub.requests.clear()
    status, body = await api.request("DELETE", f"{P}/{pid}")
    assert status == 200, body
    assert body["status"] == "unregistered" and body["peer_notified"] is True
    # OCPI's way to end a registration: our credentials deleted at the peer, with its token
    assert [(r["method"], r["path"]) for r in hub.requests] == [("DELETE", "/2.2.1/credentials")]
    status, _ = await setup.ocpi("/ocpi/2.2.1/locations")
    assert status == 401  # its token no longer works
    for method, suffix in (("DELETE", ""), ("POST", "/suspend"), ("POST", "/resume")):
        status, body = await api.request(method, f"{P}/{pid}{suffix}")
        assert status == 409 and body["error"] == "conflict", (method, suffix)
    _, listed = await api.get(P)
    assert listed["items"][0]["status"] == "unregistered"


async def test_removing_a_peer_that_does_not_answer_still_removes_it(setup: Setup) -> None:
    setup.hub.mode = "error500"
    status, body = await setup.running.api.request("DELETE", f"{P}/{setup.peer_id}")
    assert status == 200 and body["peer_notified"] is False and "500" in body["answer"]
    status, _ = await setup.ocpi("/ocpi/2.2.1/locations")
    assert status == 401


async def test_token_a_and_register_take_a_policy(setup: Setup) -> None:
    api = setup.running.api
    status, body = await api.post(
        "/api/v1/ocpi/token-a",
        {"role": "EMSP", "parties": ["PT/EMS"], "policy": {"name": "eMSP Sul"}},
    )
    assert status == 201
    policy = body["granted"]["policy"]
    assert policy["name"] == "eMSP Sul" and policy["realtime_auth"] is True
    assert "hubclientinfo" not in policy["uses"]
    status, body = await api.post("/api/v1/ocpi/token-a", {"role": "EMSP", "parties": ["PT/EM2"]})
    assert status == 201 and body["granted"]["policy"]["mobie"] is False
    bad = [
        ({"role": "EMSP", "parties": ["PT/EMS"], "policy": {"uses": ["hubclientinfo"]}}, "uses"),
        ({"role": "EMSP", "parties": ["PT/EMS"], "policy": {"mobie": True}}, "mobie"),
        ({"role": "SCSP", "parties": ["PT/SC1"], "policy": {"receives": ["cdrs"]}}, "receives"),
        ({"role": "EMSP", "parties": ["PT/EMS"], "policy": "all"}, "policy"),
    ]
    for request, field in bad:
        status, body = await api.post("/api/v1/ocpi/token-a", request)
        assert status == 422, (request, body)
        assert body["fields"][0]["field"] == f"policy.{field}" or (
            field == "policy" and body["fields"][0]["field"].startswith("policy")
        ), body
    status, body = await api.post(
        "/api/v1/ocpi/register",
        {
            "versions_url": "http://127.0.0.1:9/versions",
            "token": "abc",
            "role": "EMSP",
            "parties": ["PT/EMS"],
            "policy": {"uses": ["chargingprofiles"]},
        },
    )
    assert status == 422 and body["fields"][0]["field"] == "policy.uses"


async def test_requests_and_pushes_are_counted_per_peer(setup: Setup) -> None:
    """End to end: the hub's own requests (the server counts them) and our pushes to it (the
    pusher counts them), as the API shows them."""
    api, pid, hub = setup.running.api, setup.peer_id, setup.hub
    status, _ = await setup.ocpi("/ocpi/2.2.1/locations")
    assert status == 200
    await api.request("PATCH", f"{P}/{pid}", {"uses": ["locations"]})

    async def refused() -> bool:
        return (await setup.ocpi("/ocpi/2.2.1/sessions"))[0] == 403

    await eventually(refused, 5)
    hub.mode = "error500"
    await setup.running.define_station("TR1", 1)

    async def counted() -> dict[str, Any] | None:
        _, body = await api.get(f"{P}/{pid}")
        t = body["traffic_24h"]
        if t["pushes"]["failed"] and t["requests"]["refused"]:
            return body
        return None

    await eventually(counted, 10)
    body = await counted()
    assert body is not None
    t = body["traffic_24h"]
    assert t["requests"]["ok"] >= 1 and t["requests"]["failed"] == 0
    assert t["last_error"] is not None and "500" in t["last_error"]["error"]
    assert body["failing_pushes"] and "500" in body["failing_pushes"][0]["last_error"]
    assert body["failing_pushes_now"] >= 1 and body["pending_pushes"] >= 1
    hourly = body["traffic_hourly"]
    assert sum(h["requests_refused"] for h in hourly) == t["requests"]["refused"]
    assert sum(h["pushes_failed"] for h in hourly) == t["pushes"]["failed"]
    _, listed = await api.get(P)
    assert listed["items"][0]["traffic_24h"] == t and listed["items"][0]["failing_pushes_now"] >= 1
    rows = await setup.bridge.csms.db.read(
        "SELECT direction, module FROM ocpi_peer_traffic WHERE peer_id = ?", (pid,)
    )
    kinds = {(r["direction"], r["module"]) for r in rows}
    assert {("in", "locations"), ("in", "sessions")} <= kinds


# ---------------------------------------------------------------------- the counters


@pytest.fixture
async def counters(tmp_path: Path) -> AsyncIterator[tuple[PeerTraffic, FakeClock]]:
    system, session, _running = await start_system(tmp_path, ocpi={})
    clock = FakeClock(datetime(2026, 12, 6, 10, 30, tzinfo=UTC))
    try:
        yield PeerTraffic(system.extensions[0].bridge.csms.db, clock), clock
    finally:
        await session.close()
        await system.stop()


async def test_counters_per_peer_and_hour(counters: tuple[PeerTraffic, FakeClock]) -> None:
    traffic, clock = counters
    start = clock.now()
    for status in (200, 201, 404, 403, 500):
        traffic.request(1, "locations", status)
    traffic.request(2, "tokens", 200)
    traffic.request(None, "locations", 200)  # not a peer: not counted here
    traffic.push(1, "evse", True)
    traffic.push(1, "evse", False, "HTTP 502\nBad\x00Gateway")
    await traffic.flush()
    await clock.advance(3600)
    traffic.request(1, "locations", 200)
    traffic.push(1, "session", False, None)
    summary = await traffic.summary(start - timedelta(hours=1))
    assert summary[1]["requests"] == {"ok": 3, "refused": 2, "failed": 1}
    assert summary[1]["pushes"] == {"ok": 1, "failed": 2}
    assert summary[1]["last_error"]["kind"] == "session"
    assert summary[2]["requests"] == {"ok": 1, "refused": 0, "failed": 0}
    assert set(summary) == {1, 2}
    hourly = await traffic.hourly(1, start)
    assert [h["requests_ok"] for h in hourly] == [2, 1]
    assert [h["pushes_failed"] for h in hourly] == [1, 1]
    failures = await traffic.failures(1, start)
    assert [(f["kind"], f["failed"]) for f in failures] == [("session", 1), ("evse", 1)]
    assert failures[0]["last_error"] == "failed"
    assert failures[1]["last_error"] == "HTTP 502 Bad Gateway"  # printable, one line
    # flushed twice into one row: the counts add up
    traffic.request(1, "locations", 200)
    await traffic.flush()
    hourly = await traffic.hourly(1, start)
    assert [h["requests_ok"] for h in hourly] == [2, 2]


async def test_counters_are_bounded_and_pruned(counters: tuple[PeerTraffic, FakeClock]) -> None:
    traffic, clock = counters
    start = clock.now()
    traffic.request(1, "../../etc/passwd", 200)  # a module no one has: "other"
    traffic.request(1, "Locations", 200)
    traffic.push(1, "x" * 500, False, "e" * 10_000)
    await traffic.flush()
    rows = await traffic.db.read("SELECT module, last_error FROM ocpi_peer_traffic ORDER BY module")
    assert [r["module"] for r in rows] == ["locations", "other", "other"]
    assert max(len(r["last_error"] or "") for r in rows) == MAX_ERROR
    assert module_name("a\nb") == "other" and error_text("ok") == "ok"
    for peer in range(MAX_KEYS + 10):
        traffic.request(peer, "locations", 200)
    assert traffic.dropped == 10
    await traffic.flush()
    # 15 days later the old rows are gone
    await clock.advance(15 * 24 * 3600)
    traffic.push(1, "cdr", True)
    await traffic.flush()
    rows = await traffic.db.read("SELECT bucket FROM ocpi_peer_traffic")
    assert len(rows) == 1
    assert await traffic.hourly(1, start) != []


async def test_stop_writes_what_was_counted(counters: tuple[PeerTraffic, FakeClock]) -> None:
    traffic, _ = counters
    traffic.start()
    traffic.push(7, "tariff", True)
    await traffic.stop()
    rows = await traffic.db.read("SELECT peer_id, ok FROM ocpi_peer_traffic")
    assert rows == [{"peer_id": 7, "ok": 1}]
