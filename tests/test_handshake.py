"""The websocket handshake: subprotocol, unknown stations, Basic auth, replacement."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Running, start_system
from tests.raw_client import RawClient

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _status_of_refusal(url: str, **kw: object) -> int:
    with pytest.raises(InvalidStatus) as e:
        async with connect(url, open_timeout=5, **kw):  # type: ignore[arg-type]
            pass
    return e.value.response.status_code


async def test_unknown_station_is_refused_with_404_recorded_and_listed(csms: Running) -> None:
    url = f"{csms.ocpp_url}/GHOST%2001"
    assert await _status_of_refusal(url, subprotocols=["ocpp1.6"]) == 404
    assert await _status_of_refusal(url, subprotocols=["ocpp1.6"]) == 404
    status, body = await csms.api.get("/api/v1/unknown-stations")
    assert status == 200
    [entry] = body["items"]
    assert entry["charge_point_id"] == "GHOST 01"  # URL-decoded
    assert entry["attempts"] == 2
    assert entry["last_remote_address"].startswith("127.0.0.1:")
    assert entry["first_seen_at"].endswith("Z")
    # one call adds it; then it connects and is no longer listed as unknown
    await csms.define_station("GHOST 01")
    client = await RawClient.open(url)
    assert (await client.ok("BootNotification", BOOT))["status"] == "Accepted"
    await client.close()
    assert (await csms.api.get("/api/v1/unknown-stations"))[1]["items"] == []


async def test_paths_outside_the_prefix_are_refused(csms: Running) -> None:
    await csms.define_station("CP1")
    base = f"ws://127.0.0.1:{csms.system.ocpp_port}"
    assert await _status_of_refusal(f"{base}/CP1", subprotocols=["ocpp1.6"]) == 404
    assert await _status_of_refusal(f"{base}/other/CP1", subprotocols=["ocpp1.6"]) == 404
    # the id is the one segment after the prefix, a query string is ignored
    client = await RawClient.open(f"{base}/ocpp/CP1?foo=bar")
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    await client.close()


async def test_only_the_exact_path_form_connects(csms: Running) -> None:
    """Issue 12, item 19: ``/ocpp/x/../ST-1`` and ``/ocpp//ST-1`` connected as ST-1. Only
    prefix + "/" + one segment is a station's URL."""
    await csms.define_station("ST-1")
    base = f"ws://127.0.0.1:{csms.system.ocpp_port}"
    for path in (
        "/ocpp/x/../ST-1",
        "/ocpp//ST-1",
        "/ocpp/./ST-1",
        "/ocpp/site-a/ST-1",
        "/ocpp/ST-1/",
        "/ocpp/ST-1//",
        "/ocpp/x%2F..%2FST-1",
        "/ocpp/%2E%2E",
        "/ocpp/.",
        "/ocpp/",
        "/ocppST-1",
        "/ocpp/ST-1%0A",
    ):
        # websockets' client would normalise nothing: the path is sent as written
        status = await _status_of_refusal(base + path, subprotocols=["ocpp1.6"])
        assert status == 404, path
    assert not csms.system.registry.is_connected("ST-1")
    refused = csms.system.metrics.handshakes_refused.labels("bad_path")._value.get()
    assert refused == 12
    client = await RawClient.open(f"{base}/ocpp/ST-1")
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    await client.close()


async def test_unsupported_subprotocol_completes_then_closes_and_never_displaces(
    csms: Running,
) -> None:
    """Issue 11, item 6 (OCPP-J 1.6, 3.1.2; TC_088): a client offering no ocpp1.6 gets a
    completed handshake without Sec-WebSocket-Protocol, then the connection is closed at
    once; it is never registered, so the station's real connection stays."""
    await csms.define_station("CP88B")
    url = f"{csms.ocpp_url}/CP88B"
    real = await RawClient.open(url)
    await real.ok("Heartbeat", {})
    for offered in (["ocpp0.1"], ["ocpp2.0.1", "ocpp1.5"], None):
        async with connect(url, subprotocols=offered, open_timeout=5) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol is None
            assert "Sec-WebSocket-Protocol" not in ws.response.headers
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1002
    refused = csms.system.metrics.handshakes_refused.labels("subprotocol")._value.get()
    assert refused == 3
    # the real station is still the registered connection, and answers commands
    assert csms.system.registry.get("CP88B") is not None
    assert csms.system.registry.get("CP88B").ws.subprotocol == "ocpp1.6"
    status, body = await csms.api.post("/api/v1/stations/CP88B/commands/ClearCache", {})
    assert status == 200 and body["response"] == {"status": "Accepted"}
    assert real.ws.close_code is None
    assert (await csms.api.get("/api/v1/stations/CP88B"))[1]["connected"] is True
    await real.close()


async def test_accept_unknown_stations(tmp_path: Path) -> None:
    system, session, running = await start_system(tmp_path, ocpp__accept_unknown_stations="true")
    try:
        client = await RawClient.open(f"{running.ocpp_url}/NEWCOMER")
        assert (await client.ok("BootNotification", BOOT))["status"] == "Accepted"
        await client.close()
        status, body = await running.api.get("/api/v1/stations/NEWCOMER")
        assert status == 200 and body["defined"] is False and body["boot"]["vendor"] == "V"
    finally:
        await session.close()
        await system.stop()


async def test_basic_auth_security_profile_1(csms: Running) -> None:
    await csms.define_station("SEC1", password="s3cret-password")
    url = f"{csms.ocpp_url}/SEC1"
    proto = {"subprotocols": ["ocpp1.6"]}
    assert await _status_of_refusal(url, **proto) == 401
    assert (
        await _status_of_refusal(url, additional_headers=_basic("SEC1", "wrong-password"), **proto)
        == 401
    )
    assert (
        await _status_of_refusal(
            url, additional_headers=_basic("OTHER", "s3cret-password"), **proto
        )
        == 401
    )
    client = await RawClient.open(url, additional_headers=_basic("SEC1", "s3cret-password"))
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    await client.close()
    # the password is stored hashed, never in clear
    rows = await csms.system.store.read("SELECT password_hash FROM stations WHERE id = 'SEC1'")
    assert rows[0]["password_hash"].startswith("$argon2id$")
    assert "s3cret" not in rows[0]["password_hash"]
    # replacing the definition without "password" keeps it; null removes it
    body = (await csms.api.get("/api/v1/stations/SEC1"))[1]
    assert body["has_password"] is True
    await csms.define_station("SEC1")
    assert (await csms.api.get("/api/v1/stations/SEC1"))[1]["has_password"] is True
    await csms.define_station("SEC1", password=None)
    assert (await csms.api.get("/api/v1/stations/SEC1"))[1]["has_password"] is False
    client = await RawClient.open(url)
    await client.close()


async def test_new_connection_replaces_the_old_one_and_commands_go_to_the_newest(
    csms: Running,
) -> None:
    await csms.define_station("CP1")
    url = f"{csms.ocpp_url}/CP1"
    answered_by: list[str] = []

    def answer_as(name: str):  # type: ignore[no-untyped-def]
        def answer(action: str, payload: dict) -> dict:  # type: ignore[type-arg]
            answered_by.append(name)
            return {"status": "Accepted"}

        return answer

    first = await RawClient.open(url, answer=answer_as("first"))
    await first.ok("Heartbeat", {})
    second = await RawClient.open(url, answer=answer_as("second"))
    await second.ok("Heartbeat", {})
    await asyncio.wait_for(first.ws.wait_closed(), 5)
    assert first.ws.close_code == 1000
    status, body = await csms.api.post("/api/v1/stations/CP1/commands/ClearCache", {})
    assert status == 200 and body == {"status": "ok", "response": {"status": "Accepted"}}
    assert answered_by == ["second"]
    status, body = await csms.api.get("/api/v1/stations/CP1")
    assert body["connected"] is True
    await second.close()
    await asyncio.sleep(0.1)
    assert (await csms.api.get("/api/v1/stations/CP1"))[1]["connected"] is False
