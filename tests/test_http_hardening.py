"""Issue 12: the HTTP port and what it accepts, against the real server on loopback.

Idle and slow connections, connection caps, unknown-station and meter-value volumes,
file modes of the data, hostile query strings and bodies, command timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Running, start_system
from tests.raw_client import RawClient

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) until ``check()`` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server ends the connection (EOF or reset) within ``within`` seconds;
    whatever it sends first (a 503) is read and ignored."""
    deadline = time.monotonic() + within
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            data = await asyncio.wait_for(reader.read(65536), left)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def _open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


def _close_all(writers: list[asyncio.StreamWriter]) -> None:
    for w in writers:
        w.transport.abort()


# ---------------------------------------------------------------------- item 3


async def test_idle_and_slow_connections_are_closed_and_service_goes_on(tmp_path: Path) -> None:
    system, session, csms = await start_system(
        tmp_path,
        http__header_timeout="1",
        http__read_timeout="1",
        http__idle_timeout="3",
        http__max_connections="1000",
        http__max_connections_per_address="1000",
    )
    writers: list[asyncio.StreamWriter] = []
    try:
        port = system.http_port
        await csms.define_station("HARD1", 1)
        # a few hundred silent connections from one address
        idle = [await _open(port, "127.0.0.2") for _ in range(300)]
        writers += [w for _, w in idle]
        # a slowloris: headers one line at a time, never finished
        slow_r, slow_w = await _open(port, "127.0.0.3")
        writers.append(slow_w)
        slow_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            for i in range(40):
                await asyncio.sleep(0.2)
                if slow_w.is_closing():
                    return
                slow_w.write(b"X-%d: y\r\n" % i)

        trickler = asyncio.create_task(trickle())
        # a slow body: headers complete, the announced body never arrives
        body_r, body_w = await _open(port, "127.0.0.4")
        writers.append(body_w)
        auth = csms.api.auth["Authorization"].encode()
        body_w.write(
            b"PUT /api/v1/id-tags/SLOW HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + auth + b'\r\nContent-Length: 1000\r\n\r\n{"status": '
        )
        await asyncio.sleep(0.3)
        assert system.http_guard.open >= 302

        # the port still serves, and a station can still connect
        started = time.monotonic()
        async with session.get(csms.http_url + "/healthz") as resp:
            assert resp.status == 200, await resp.text()
        assert time.monotonic() - started < 1
        client = await RawClient.open(f"{csms.ocpp_url}/HARD1")
        await client.ok("BootNotification", BOOT)
        await client.close()

        # the slow ones are cut after header_timeout / read_timeout, not idle_timeout
        t0 = time.monotonic()
        assert await _closed_by_server(slow_r, 2.5)
        assert await _closed_by_server(body_r, 2.5)
        assert time.monotonic() - t0 < 2.5
        # the silent ones after idle_timeout
        results = await asyncio.gather(*(_closed_by_server(r, 5) for r, _ in idle))
        assert all(results), f"{results.count(False)} idle connections still open"
        await trickler
        for _ in range(20):
            if system.http_guard.open == 0:
                break
            await asyncio.sleep(0.05)
        assert system.http_guard.open == 0
        assert system.http_guard.closed.get("header_timeout", 0) >= 1
        assert system.http_guard.closed.get("read_timeout", 0) >= 1
        # and the API is as good as before
        status, body = await csms.api.get("/api/v1/stations")
        assert status == 200 and body["total"] == 1
    finally:
        _close_all(writers)
        await session.close()
        await system.stop()


async def test_connection_caps_per_address_and_in_all(tmp_path: Path) -> None:
    system, session, csms = await start_system(
        tmp_path,
        http__max_connections="150",
        http__max_connections_per_address="100",
    )
    writers: list[asyncio.StreamWriter] = []
    try:
        port = system.http_port
        await csms.define_station("CAP1", 1)
        base = system.http_guard.open  # the test's own API connection
        # 120 from one address: 100 held, 20 answered 503 and closed at once
        conns = [await _open(port, "127.0.0.2") for _ in range(120)]
        writers += [w for _, w in conns]
        guard = system.http_guard
        await _until(lambda: guard.refused.get("max_connections_per_address") == 20)
        # (refused ones are closed already: 2 s is for a busy machine to read the EOF; the
        # held ones stay open far longer, until the 10 s header timeout)
        closed = await asyncio.gather(*(_closed_by_server(r, 2.0) for r, _ in conns))
        assert closed.count(True) == 20
        # another address is not held back by the first one's cap, but by the total (150)
        more = [await _open(port, "127.0.0.3") for _ in range(60)]
        writers += [w for _, w in more]
        await _until(lambda: guard.refused.get("max_connections") == 10 + base)
        closed = await asyncio.gather(*(_closed_by_server(r, 2.0) for r, _ in more))
        assert closed.count(True) == 10 + base
        assert system.http_guard.open == 150
        assert system.http_guard.refused == {
            "max_connections_per_address": 20,
            "max_connections": 10 + base,
        }
        # the refusal is a JSON 503, and the OCPP port is untouched by the full HTTP port
        r, w = await _open(port, "127.0.0.4")
        writers.append(w)
        head = await asyncio.wait_for(r.read(), 2)
        assert head.startswith(b"HTTP/1.1 503")
        assert json.loads(head.split(b"\r\n\r\n", 1)[1])["error"] == "too_many_connections"
        client = await RawClient.open(f"{csms.ocpp_url}/CAP1")
        await client.ok("BootNotification", BOOT)
        await client.close()
        # freeing connections lets new ones in
        _close_all(writers)
        writers.clear()
        await asyncio.sleep(0.2)
        async with session.get(csms.http_url + "/healthz") as resp:
            assert resp.status == 200
        async with session.get(csms.http_url + "/metrics") as resp:
            text = await resp.text()
        refused = 11 + base
        assert (
            f'csms_http_connections_refused_total{{reason="max_connections"}} {refused}.0' in text
        )
    finally:
        _close_all(writers)
        await session.close()
        await system.stop()


async def test_http_cap_stays_well_below_the_fd_limit(tmp_path: Path) -> None:
    system, session, _ = await start_system(tmp_path, http__max_connections="1000000")
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert system.http_guard.max_connections <= soft // 4
    finally:
        await session.close()
        await system.stop()


def test_fd_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    from csms.http import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        new_soft, new_hard = raise_fd_limit()
        assert new_hard == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == new_soft
        assert new_soft == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_accept_errors_are_logged_at_a_bounded_rate() -> None:
    from csms.http import LoopErrorFilter, RateLimitedLog

    now = [0.0]
    passed: list[dict[str, Any]] = []
    lines: list[tuple[str, dict[str, Any]]] = []
    filt = LoopErrorFilter(lambda loop, ctx: passed.append(ctx), interval=60, clock=lambda: now[0])
    filt.limit = RateLimitedLog(60, clock=lambda: now[0])
    original = filt.limit.__call__

    def capture(key: str, emit: Any, event: str, **fields: Any) -> bool:
        return original(key, lambda e, **f: lines.append((e, f)), event, **fields)

    filt.limit = capture  # type: ignore[assignment]
    ctx = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(24, "Too many open files"),
    }
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3600):  # an hour of asyncio's one report a second
            filt(loop, ctx)
            now[0] += 1
        filt(loop, {"message": "something else"})
    finally:
        loop.close()
    assert len(lines) == 60  # one a minute, not one a second
    assert lines[1][1]["suppressed"] == 59
    assert passed == [{"message": "something else"}]


# ---------------------------------------------------------------------- item 10


async def _knock(url: str) -> None:
    with pytest.raises(InvalidStatus) as e:
        async with connect(url, subprotocols=["ocpp1.6"], open_timeout=5):  # type: ignore[list-item]
            pass
    assert e.value.response.status_code == 404


async def test_unknown_stations_are_capped_aggregated_and_paginated(tmp_path: Path) -> None:
    system, session, csms = await start_system(tmp_path, ocpp__max_unknown_stations="5")
    try:
        for i in range(12):
            await _knock(f"{csms.ocpp_url}/UNK{i:02d}")
        for _ in range(3):  # the newest one again: one row, three more attempts
            await _knock(f"{csms.ocpp_url}/UNK11")
        status, body = await csms.api.get("/api/v1/unknown-stations?limit=2")
        assert status == 200
        assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 0
        assert [i["charge_point_id"] for i in body["items"]] == ["UNK11", "UNK10"]
        assert body["items"][0]["attempts"] == 4
        assert body["items"][0]["last_remote_address"].startswith("127.0.0.1")
        assert body["items"][0]["first_seen_at"] <= body["items"][0]["last_seen_at"]
        assert body["forgotten"] == {"ids": 7, "attempts": 7}
        status, body = await csms.api.get("/api/v1/unknown-stations?limit=10&offset=3")
        assert [i["charge_point_id"] for i in body["items"]] == ["UNK08", "UNK07"]
        rows = await system.store.read("SELECT COUNT(*) AS n FROM unknown_stations")
        assert rows[0]["n"] == 5
        status, body = await csms.api.get("/api/v1/unknown-stations?limit=0")
        assert status == 400 and body["error"] == "invalid_query"
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- item 11


async def _transaction_with_values(
    csms: Running, station: str, frames: int, per: int, stop: bool = False
) -> int:
    await csms.define_station(station, 1)
    await csms.put_tag("TAGM")
    client = await RawClient.open(f"{csms.ocpp_url}/{station}")
    try:
        await client.ok("BootNotification", BOOT)
        start = await client.ok(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "TAGM",
                "meterStart": 0,
                "timestamp": "2026-01-01T10:00:00Z",
            },
        )
        tx = int(start["transactionId"])
        for f in range(frames):
            await client.ok(
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": tx,
                    "meterValue": [
                        {
                            "timestamp": f"2026-01-01T10:{f // 60:02d}:{f % 60:02d}Z",
                            "sampledValue": [
                                {"value": str(f * per + i), "unit": "Wh"} for i in range(per)
                            ],
                        }
                    ],
                },
            )
        if stop:
            await client.ok(
                "StopTransaction",
                {
                    "transactionId": tx,
                    "meterStop": 10**6,
                    "timestamp": "2026-01-01T12:00:00Z",
                    "transactionData": [
                        {
                            "timestamp": "2026-01-01T12:00:00Z",
                            "sampledValue": [{"value": "1000000", "context": "Transaction.End"}],
                        }
                    ],
                },
            )
    finally:
        await client.close()
    return tx


async def test_a_transaction_s_meter_values_come_a_page_at_a_time(csms: Running) -> None:
    tx = await _transaction_with_values(csms, "MV1", frames=25, per=100)  # 2,500 values
    status, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert status == 200
    assert len(body["meter_values"]) == 1000
    assert body["meter_values_total"] == 2500
    assert body["meter_values"][0]["value"] == "0"
    status, body = await csms.api.get(f"/api/v1/transactions/{tx}?limit=10&offset=2495")
    assert [v["value"] for v in body["meter_values"]] == [str(n) for n in range(2495, 2500)]
    status, body = await csms.api.get(f"/api/v1/transactions/{tx}/meter-values?offset=100")
    assert status == 200 and body["total"] == 2500 and body["limit"] == 100
    assert [v["value"] for v in body["items"]] == [str(n) for n in range(100, 200)]
    status, body = await csms.api.get(f"/api/v1/transactions/{tx}?limit=100000")
    assert status == 400 and body["error"] == "invalid_query"
    status, body = await csms.api.get("/api/v1/transactions/999/meter-values")
    assert status == 404 and body["error"] == "not_found"


async def test_meter_values_of_one_transaction_are_capped(tmp_path: Path) -> None:
    system, session, csms = await start_system(
        tmp_path, ocpp__max_meter_values_per_transaction="250"
    )
    try:
        # 400 values and a stop with one more: 250 stored, 151 counted, every frame answered
        tx = await _transaction_with_values(csms, "MVCAP", frames=4, per=100, stop=True)
        status, body = await csms.api.get(f"/api/v1/transactions/{tx}")
        assert status == 200
        assert body["meter_values_total"] == 250 and body["active"] is False
        assert body["flags"].count("meter_values_capped") == 1
        status, anomalies = await csms.api.get("/api/v1/anomalies?station=MVCAP")
        capped = [a for a in anomalies["items"] if a["kind"] == "meter_values_capped"]
        assert len(capped) == 1
        assert capped[0]["detail"] == {"cap": 250, "dropped": 151}
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- item 13


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.sqlite_only
async def test_data_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        system, session, csms = await start_system(tmp_path)
    finally:
        os.umask(old)
    try:
        await csms.put_tag("T1")
        data = tmp_path / "data"
        assert _mode(data) == 0o700
        for name in ("csms.sqlite3", "csms.sqlite3-wal", "csms.sqlite3-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        await session.close()
        await system.stop()


@pytest.mark.sqlite_only
async def test_an_existing_installation_s_modes_are_fixed_at_start(tmp_path: Path) -> None:
    system, session, _ = await start_system(tmp_path)
    await session.close()
    await system.stop()
    data = tmp_path / "data"
    data.chmod(0o755)
    for name in ("csms.sqlite3", "csms.sqlite3-wal", "csms.sqlite3-shm"):
        path = data / name
        if not path.exists():
            path.touch()
        path.chmod(0o644)
    system, session, csms = await start_system(tmp_path)
    try:
        await csms.put_tag("T2")
        assert _mode(data) == 0o700
        for name in ("csms.sqlite3", "csms.sqlite3-wal", "csms.sqlite3-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- item 15


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_huge_numbers_and_deep_bodies_are_client_errors(csms: Running) -> None:
    api = csms.api
    for path in (
        "/api/v1/stations?offset=99999999999999999999",
        "/api/v1/transactions?offset=9223372036854775808",
        "/api/v1/id-tags?offset=-1",
        "/api/v1/commands?limit=99999999999999999999999",
        "/api/v1/unknown-stations?offset=1e3",
    ):
        status, body = await api.get(path)
        assert status == 400, (path, status, body)
        assert body["status"] == "error" and body["error"] == "invalid_query"
    for tx in ("99999999999999999999", "9223372036854775808", "-99999999999999999999", "0"):
        status, body = await api.get(f"/api/v1/transactions/{tx}")
        assert status == 404 and body["error"] == "not_found", (tx, body)
    headers = {**api.auth, "Content-Type": "application/json"}
    bodies = [
        _nested(100_000),
        _nested(500),
        '{"status": ' * 5000 + "1" + "}" * 5000,
        '{"status": "Accepted", "parent_id_tag": 1e999}',
        '{"status": "Accepted", "x": NaN}',
        '{"status": "Accepted", "parent_id_tag": ' + "9" * 5000 + "}",
        '{"status": "Accepted", "parent_id_tag": 99999999999999999999}',
        '{"status": "Accepted", "parent_id_tag": "\\ud800"}',
    ]
    for text in bodies:
        for method, path in (
            ("PUT", "/api/v1/id-tags/DEEP"),
            ("PUT", "/api/v1/stations/DEEP"),
            ("POST", "/api/v1/stations/DEEP/commands/Reset"),
        ):
            async with api.session.request(
                method, api.base + path, data=text.encode(), headers=headers
            ) as resp:
                body = await resp.json()
                assert resp.status in (400, 404, 422), (path, text[:40], resp.status, body)
                assert body["status"] == "error", body
    async with api.session.put(
        api.base + "/api/v1/id-tags/BAD", data=b'{"status": "\xff"}', headers=headers
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    status, _ = await api.get("/healthz")
    assert status == 200


def test_loads_json_refuses_what_the_store_cannot_hold() -> None:
    from csms.http import loads_json

    assert loads_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for text in (_nested(65), "[1e400]", "[-Infinity]", '["\\udc00"]', "[9223372036854775808]"):
        with pytest.raises(json.JSONDecodeError):
            loads_json(text)
    assert loads_json(_nested(64)) == json.loads(_nested(64))


# ---------------------------------------------------------------------- item 16


async def test_command_timeout_is_validated(csms: Running) -> None:
    await csms.define_station("TMO1", 1)
    client = await RawClient.open(f"{csms.ocpp_url}/TMO1")
    try:
        await client.ok("BootNotification", BOOT)
        path = "/api/v1/stations/TMO1/commands/Reset"
        for bad in ("-1", "0", "nan", "NaN", "inf", "-inf", "1e999", "301", "abc", ""):
            status, body = await csms.api.post(f"{path}?timeout={bad}", {"type": "Soft"})
            assert status == 400, (bad, status, body)
            assert body["error"] == "invalid_query" and "timeout" in body["message"]
        # nothing was sent to the station for any of them
        assert [a for a, _ in client.received_calls if a == "Reset"] == []
        status, body = await csms.api.post(f"{path}?timeout=2.5", {"type": "Soft"})
        assert status == 200 and body["response"] == {"status": "Accepted"}
    finally:
        await client.close()


async def test_max_command_timeout_is_configurable(tmp_path: Path) -> None:
    system, session, csms = await start_system(tmp_path, api__max_command_timeout="10")
    try:
        await csms.define_station("TMO2", 1)
        status, body = await csms.api.post(
            "/api/v1/stations/TMO2/commands/Reset?timeout=11", {"type": "Soft"}
        )
        assert status == 400 and "at most 10" in body["message"]
    finally:
        await session.close()
        await system.stop()


# ---------------------------------------------------------------------- item 17
# (failing writes for real: tests/test_daemon.py)


async def test_a_failing_write_probe_is_not_repeated_for_every_request(csms: Running) -> None:
    calls = 0
    original = csms.system.store.write

    async def counting(job: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(job)

    csms.system.store.write = counting  # type: ignore[method-assign]
    for _ in range(20):
        async with csms.api.session.get(csms.http_url + "/healthz") as resp:
            assert resp.status == 200
    assert calls <= 1


async def test_the_api_survives_a_burst_of_aiohttp_clients(csms: Running) -> None:
    """Many clients at once from one address (the default caps) all get answers."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=60, force_close=True)
    ) as session:

        async def one() -> int:
            async with session.get(csms.http_url + "/healthz") as resp:
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(200)))
    assert set(statuses) == {200}
