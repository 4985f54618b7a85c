"""The OCPP port against broken chargers and attackers (issue 11 item 7, issue 12 items 4, 7,
8, 9, 14, 22): over real websockets on 127.0.0.1, against the real central system."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from websockets.asyncio.client import connect

from csms import logs
from csms.metrics import Metrics, metrics_authorized, metrics_handler
from tests.conftest import Running, start_system
from tests.raw_client import RawClient, default_answer

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}
TS = "2026-01-01T10:00:00Z"


def _strict_json(text: str) -> Any:
    """Parse as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in JSON text")

    return json.loads(text, parse_constant=refuse)


@contextmanager
def captured_log() -> Iterator[io.StringIO]:
    """What the root handler writes (same formatter), while the block runs."""
    root = logging.getLogger()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


async def _alive(client: RawClient) -> None:
    """The connection is up and answers."""
    assert client.ws.close_code is None
    assert (await client.ok("Heartbeat", {}))["currentTime"]


# ---------------------------------------------------------------------- issue 11, item 7


async def test_hanging_up_during_our_call_leaves_no_loose_future(tmp_path: Path) -> None:
    """A station that closes while one of our requests is being sent: the request fails with
    ConnectionGone (409 for the API) and no future is left with an unretrieved exception."""
    loop = asyncio.get_running_loop()
    complaints: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: complaints.append(str(ctx.get("message"))))
    system, session, running = await start_system(tmp_path, ocpp__provision_on_boot="false")
    try:
        await running.define_station("HANG1")
        client = await RawClient.open(f"{running.ocpp_url}/HANG1", answer=lambda a, p: None)
        await client.ok("BootNotification", BOOT)
        # the station starts the closing handshake and then reads nothing more: csms's
        # connection is closing while our request is being sent
        client.ws.protocol.send_close(1000, "bye")
        client.ws.send_data()
        client.ws.transport.pause_reading()
        await asyncio.sleep(0.1)
        command = asyncio.create_task(
            running.api.post("/api/v1/stations/HANG1/commands/ClearCache", {})
        )
        await asyncio.sleep(0.2)
        client.ws.transport.abort()
        status, body = await asyncio.wait_for(command, 10)
        assert status == 409 and body["error"] == "station_offline", body
        await asyncio.sleep(0.05)
        gc.collect()
        await asyncio.sleep(0.05)
        assert not [c for c in complaints if "never retrieved" in c], complaints
    finally:
        await session.close()
        await system.stop()
        gc.collect()
        loop.set_exception_handler(previous)
    assert not [c for c in complaints if "never retrieved" in c], complaints


async def test_hanging_up_during_provisioning_leaves_no_loose_future(tmp_path: Path) -> None:
    """The post-boot ChangeConfiguration in flight (sent, being sent, or not answered) when
    the station hangs up, at several moments: nothing 'never retrieved'."""
    loop = asyncio.get_running_loop()
    complaints: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: complaints.append(str(ctx.get("message"))))
    system, session, running = await start_system(tmp_path)
    try:
        await running.define_station("HANG2")
        for delay in (0.0, 0.001, 0.005, 0.02, None):
            client = await RawClient.open(f"{running.ocpp_url}/HANG2", answer=lambda a, p: None)
            await client.ok("BootNotification", BOOT)
            if delay is None:
                await client.wait_call("ChangeConfiguration")
            else:
                await asyncio.sleep(delay)
            client.ws.protocol.send_close(1000, "bye")
            client.ws.send_data()
            client.ws.transport.pause_reading()
            await asyncio.sleep(0.05)
            client.ws.transport.abort()
            client._reader.cancel()
            for _ in range(100):
                if not running.system.registry.is_connected("HANG2"):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            gc.collect()
        await asyncio.sleep(0.05)
        gc.collect()
        assert not [c for c in complaints if "never retrieved" in c], complaints
    finally:
        await session.close()
        await system.stop()
        gc.collect()
        loop.set_exception_handler(previous)
    assert not [c for c in complaints if "never retrieved" in c], complaints


# ---------------------------------------------------------------------- issue 12, item 4


async def test_payloads_in_logs_are_truncated_and_warnings_rate_limited(csms: Running) -> None:
    """900 kB BootNotifications were logged whole (twice): now every field is bounded and
    one station's repeated warning is logged at most BURST times a window."""
    await csms.define_station("LOUD1")
    client = await RawClient.open(f"{csms.ocpp_url}/LOUD1", max_size=None)
    big = "x" * 200_000
    with captured_log() as out:
        for n in range(60):
            # schema-invalid (too long, and an unknown property): answered with a CallError
            reply = await client.call("BootNotification", {**BOOT, "chargePointModel": big, "n": n})
            assert reply[0] == 4
            # not JSON at all, with a readable id
            reply = await client.send_text(f'[2,"bad{n}","Heartbeat",{{"x":"{big}"')
            assert reply is not None and reply[0] == 4 and reply[1] == f"bad{n}"
    await _alive(client)
    await client.close()
    text = out.getvalue()
    # 120 frames of 200 kB: without limits that is 24 MB (48 MB logged twice)
    assert len(text) < 200_000, len(text)
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 3 * logs.MAX_FIELD_CHARS
    answered = [line for line in lines if "request answered with CallError" in line]
    malformed = [line for line in lines if "malformed call answered with CallError" in line]
    assert 1 <= len(answered) <= logs.BURST
    assert 1 <= len(malformed) <= logs.BURST
    assert "counted, not logged" in answered[-1]


def test_rate_limit_counts_what_it_left_out_and_is_bounded() -> None:
    now = [0.0]
    limit = logs.StationRateLimit(burst=3, window=10.0, max_keys=5, clock=lambda: now[0])

    def line(station: str | None, event: str = "e", level: str = "warning") -> bool:
        try:
            limit(None, level, {"event": event, "level": level, "station_id": station})
        except structlog.DropEvent:
            return False
        return True

    assert [line("A") for _ in range(5)] == [True, True, True, False, False]
    assert line("B") and line("A", "other event")
    assert all(line(None) for _ in range(10))  # no station: never limited
    assert all(line("A", level="info") for _ in range(10))  # only warnings and errors
    now[0] = 10.5
    d = {"event": "e", "level": "warning", "station_id": "A"}
    assert limit(None, "warning", d)["suppressed"] == 2
    for n in range(20):
        line(f"S{n}")
    assert len(limit._seen) <= 5


def test_clip_bounds_any_value() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    for value in (deep, "y" * 10**6, {"k": "z" * 10**5}, list(range(10**5)), 10**5000):
        clipped = logs.clip(value)
        assert len(str(clipped)) < 2 * logs.MAX_FIELD_CHARS
    small = {"connectorId": 1, "status": "Available"}
    assert logs.clip(small) is small
    assert logs.clip("caf\ud800") == "caf\\ud800"


# ---------------------------------------------------------------------- issue 12, item 7


async def test_secret_configuration_values_are_redacted_everywhere(csms: Running) -> None:
    """ChangeConfiguration AuthorizationKey: the station gets the value; the recent frames
    (web interface), /api/v1/commands and the log never show it."""
    secret = "0123456789abcdef-Very-Secret"
    received: list[dict[str, Any]] = []

    def answer(action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        received.append(payload)
        if action == "GetConfiguration":
            return {
                "configurationKey": [
                    {"key": "AuthorizationKey", "readonly": False, "value": secret},
                    {"key": "HeartbeatInterval", "readonly": False, "value": "120"},
                ]
            }
        return default_answer(action, payload)

    await csms.define_station("SECRET1")
    client = await RawClient.open(f"{csms.ocpp_url}/SECRET1", answer=answer)
    with captured_log() as out:
        status, body = await csms.api.post(
            "/api/v1/stations/SECRET1/commands/ChangeConfiguration",
            {"key": "AuthorizationKey", "value": secret},
        )
        assert status == 200, body
        status, body = await csms.api.post(
            "/api/v1/stations/SECRET1/commands/ChangeConfiguration",
            {"key": "CentralSystemPassword", "value": secret},
        )
        assert status == 200, body
        status, body = await csms.api.post("/api/v1/stations/SECRET1/commands/GetConfiguration", {})
        assert status == 200, body
    assert {"key": "AuthorizationKey", "value": secret} in received  # the station got it
    assert secret not in json.dumps(body)
    keys = {e["key"]: e["value"] for e in body["response"]["configurationKey"]}
    assert keys == {"AuthorizationKey": "***", "HeartbeatInterval": "120"}
    frames = csms.system.traffic.frames("SECRET1")
    assert any("AuthorizationKey" in f.text for f in frames)
    assert not [f.text for f in frames if secret in f.text]
    status, commands = await csms.api.get("/api/v1/commands?station=SECRET1")
    assert status == 200 and len(commands["items"]) == 3
    assert secret not in json.dumps(commands)
    assert commands["items"][-1]["request"] == {"key": "AuthorizationKey", "value": "***"}
    assert secret not in out.getvalue()
    await client.close()


# ---------------------------------------------------------------------- issue 12, item 8


async def test_deep_nesting_and_misshapen_meter_values_keep_the_connection(
    csms: Running,
) -> None:
    await csms.define_station("SHAPE1")
    client = await RawClient.open(f"{csms.ocpp_url}/SHAPE1")
    await client.ok("BootNotification", BOOT)
    frames = {
        "deep1": '[2,"deep1","Heartbeat",' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]",
        "deep2": '[2,"deep2","DataTransfer",{"vendorId":"v","data":'
        + "[" * 50_000
        + "]" * 50_000
        + "}]",
        "deep3": '[2,"deep3","Heartbeat",' + '{"a":' * 40 + "1" + "}" * 40 + "]",
        "deep4": "[" * 200_000,
        "mv1": json.dumps(
            [2, "mv1", "MeterValues", {"connectorId": 1, "transactionId": 1, "meterValue": 5}]
        ),
        "mv2": json.dumps(
            [
                2,
                "mv2",
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": 1,
                    "meterValue": [{"timestamp": TS, "sampledValue": 5}],
                },
            ]
        ),
        "mv3": json.dumps(
            [
                2,
                "mv3",
                "MeterValues",
                {"connectorId": 1, "transactionId": 1, "meterValue": [7, {"sampledValue": {}}]},
            ]
        ),
    }
    for uid, text in frames.items():
        reply = await client.send_text(text)
        if uid == "deep4":
            assert reply is None  # no id to answer with: logged, ignored
        else:
            assert reply is not None and reply[0] == 4 and reply[1] == uid, (uid, reply)
            assert reply[2] in ("FormationViolation", "TypeConstraintViolation"), reply
        await _alive(client)
    await client.close()


# ---------------------------------------------------------------------- issue 12, item 9


async def test_integers_beyond_64_bits_are_stored_flagged_or_precisely_refused(
    csms: Running,
) -> None:
    """Schema-valid frames that SQLite cannot hold as sent: transaction messages are never
    refused (clamped, flagged, the originals kept as an anomaly); a StatusNotification for
    a connector beyond 64 bits is a PropertyConstraintViolation. Never InternalError."""
    await csms.define_station("BIG1")
    await csms.put_tag("TAG1")
    client = await RawClient.open(f"{csms.ocpp_url}/BIG1")
    await client.ok("BootNotification", BOOT)
    huge = 2**63
    start = await client.call(
        "StartTransaction",
        {"connectorId": 1, "idTag": "TAG1", "meterStart": huge, "timestamp": TS},
    )
    assert start[0] == 3, start
    tx = start[2]["transactionId"]
    reply = await client.call(
        "MeterValues",
        {
            "connectorId": 2**70,
            "transactionId": -(2**64),
            "meterValue": [{"timestamp": TS, "sampledValue": [{"value": "10"}]}],
        },
    )
    assert reply[0] == 3, reply
    reply = await client.call(
        "StopTransaction", {"transactionId": tx, "meterStop": 10**30, "timestamp": TS}
    )
    assert reply[0] == 3, reply
    reply = await client.call(
        "StopTransaction", {"transactionId": 2**64 + 5, "meterStop": 1, "timestamp": TS}
    )
    assert reply[0] == 3, reply
    reply = await client.call(
        "StatusNotification",
        {"connectorId": huge, "status": "Available", "errorCode": "NoError"},
    )
    assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation", reply
    assert "connectorId" in reply[3]
    await _alive(client)
    status, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert status == 200
    assert "out_of_range" in body["flags"], body["flags"]
    status, anomalies = await csms.api.get("/api/v1/anomalies?station=BIG1")
    repaired = [a for a in anomalies["items"] if a["kind"] == "frame_repaired"]
    originals = [a["detail"]["out_of_range"] for a in repaired]
    assert {"meterStart": str(huge)} in originals
    assert {"connectorId": str(2**70), "transactionId": str(-(2**64))} in originals
    assert {"meterStop": str(10**30)} in originals
    assert {"transactionId": str(2**64 + 5)} in originals
    await client.close()


async def test_lone_surrogates_never_give_internal_error(csms: Running) -> None:
    await csms.define_station("UNI1")
    await csms.put_tag("TAG1")
    client = await RawClient.open(f"{csms.ocpp_url}/UNI1")
    frames = [
        r'[2,"u1","BootNotification",{"chargePointVendor":"\ud800","chargePointModel":"M"}]',
        r'[2,"u2","Authorize",{"idTag":"\udc00x"}]',
        r'[2,"u3","DataTransfer",{"vendorId":"v\ud83d","data":"\udfff"}]',
        r'[2,"u4","StatusNotification",{"connectorId":1,"status":"Available",'
        r'"errorCode":"NoError","info":"\ud800"}]',
        r'[2,"u5","StartTransaction",{"connectorId":1,"idTag":"TAG1\ud800",'
        r'"meterStart":0,"timestamp":"' + TS + '"}]',
        r'[2,"u6","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"'
        + TS
        + r'","sampledValue":[{"value":"1\udc00","unit":"Wh"}]}]}]',
        r'[2,"u7","Heartbeat",{"\ud800":1}]',
        r'[2,"u8\ud800","Heartbeat",{}]',
        r'[2,"u9","Heart\udbffbeat",{}]',
    ]
    for text in frames:
        reply = await client.send_text(text)
        assert reply is not None, text
        assert reply[0] == 3 or reply[2] != "InternalError", (text, reply)
    # a valid frame made of a pair is a real character, not a repair
    reply = await client.send_text(r'[2,"u10","Authorize",{"idTag":"\ud83d\ude00"}]')
    assert reply is not None and reply[0] == 3
    await _alive(client)
    _, body = await csms.api.get("/api/v1/transactions?station=UNI1")
    [tx] = body["items"]
    assert "invalid_unicode" in tx["flags"] and tx["id_tag"] == "TAG1\ufffd"
    # the frames show on the station page (ids with a lone surrogate too)
    for record in csms.system.traffic.frames("UNI1"):
        record.text.encode("utf-8")
        (record.unique_id or "").encode("utf-8")
    await client.close()


async def test_answer_carries_back_a_unique_id_with_a_lone_surrogate(csms: Running) -> None:
    await csms.define_station("UNI2")
    async with connect(f"{csms.ocpp_url}/UNI2", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        await ws.send(r'[2,"a\ud800","Heartbeat",{}]')
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply[0] == 3 and reply[1] == "a\ud800"
        await ws.send('[2,"ok","Heartbeat",{}]')
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))[1] == "ok"


# ---------------------------------------------------------------------- issue 12, item 14


async def test_infinity_and_nan_never_make_invalid_json(csms: Running) -> None:
    await csms.define_station("INF1")
    await csms.put_tag("TAG1")
    client = await RawClient.open(f"{csms.ocpp_url}/INF1")
    start = await client.ok(
        "StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": TS}
    )
    tx = start["transactionId"]
    values = ["Infinity", "-Infinity", "NaN", "1e999", "-1e400", "12.5"]
    await client.ok(
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": tx,
            "meterValue": [
                {"timestamp": TS, "sampledValue": [{"value": v, "unit": "Wh"} for v in values]}
            ],
        },
    )
    # NaN and Infinity literals are not JSON: a CallError, not a stored value
    reply = await client.send_text('[2,"nan1","DataTransfer",{"vendorId":"v","data":NaN}]')
    assert reply is not None and reply[0] == 4 and reply[2] == "FormationViolation"
    reply = await client.send_text('[2,"inf1","Heartbeat",{"x":1e400}]')
    assert reply is not None and reply[0] == 4 and reply[2] == "FormationViolation"
    await _alive(client)
    async with csms.api.session.get(
        f"{csms.http_url}/api/v1/transactions/{tx}", headers=csms.api.auth
    ) as resp:
        assert resp.status == 200
        body = _strict_json(await resp.text())
    stored = {mv["value"]: mv["normalised_value"] for mv in body["meter_values"]}
    assert stored == {v: (12.5 if v == "12.5" else None) for v in values}, stored
    await client.close()


async def test_a_non_finite_value_stored_earlier_still_gives_valid_json(csms: Running) -> None:
    """A database from before non-finite values were refused may hold them: the API still
    answers JSON (null where the number was)."""
    await csms.define_station("INF2")
    await csms.put_tag("TAG1")
    client = await RawClient.open(f"{csms.ocpp_url}/INF2")
    start = await client.ok(
        "StartTransaction", {"connectorId": 1, "idTag": "TAG1", "meterStart": 0, "timestamp": TS}
    )
    tx = start["transactionId"]
    meter = {"timestamp": TS, "sampledValue": [{"value": "5", "unit": "Wh"}]}
    await client.ok("MeterValues", {"connectorId": 1, "transactionId": tx, "meterValue": [meter]})
    await client.close()

    async def poison(db: Any) -> None:
        await db.execute(
            "UPDATE meter_values SET value = ? WHERE transaction_id = ?", (float("inf"), tx)
        )

    await csms.system.store.write(poison)
    for path in (f"/api/v1/transactions/{tx}", f"/api/v1/transactions/{tx}/meter-values"):
        async with csms.api.session.get(csms.http_url + path, headers=csms.api.auth) as resp:
            assert resp.status == 200, path
            body = _strict_json(await resp.text())
        values = body["meter_values"] if "meter_values" in body else body["items"]
        assert [mv["normalised_value"] for mv in values] == [None], path


def test_the_json_log_is_always_json() -> None:
    render = logs.json_renderer()
    event = {"event": "x", "power": float("nan"), "v": [float("inf"), {"w": -float("inf")}]}
    line = render(None, "info", dict(event))
    assert _strict_json(str(line)) == {
        "event": "x",
        "power": "NaN",
        "v": ["Infinity", {"w": "-Infinity"}],
    }
    assert _strict_json(str(render(None, "info", {"event": "s\ud800"})))["event"] == "s\ud800"


# ---------------------------------------------------------------------- issue 12, item 22


async def test_message_type_must_be_exactly_an_integer(csms: Running) -> None:
    await csms.define_station("TYPE1")
    client = await RawClient.open(f"{csms.ocpp_url}/TYPE1")
    for n, kind in enumerate(["2.0", '"2"', "true", "2e0", "5", "[2]", "null", "-2"]):
        uid = f"t{n}"
        reply = await client.send_text(f'[{kind},"{uid}","Heartbeat",{{}}]')
        assert reply is not None, kind
        assert reply[0] == 4 and reply[1] == uid and reply[2] == "FormationViolation", reply
    # answers (3 and 4) are never answered, whatever they hold
    assert await client.send_text('[3,"nobody",{}]', timeout=0.3) is None
    assert await client.send_text('[4,"nobody","GenericError","",{}]', timeout=0.3) is None
    await _alive(client)
    await client.close()


def test_metrics_token_check() -> None:
    import base64

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert metrics_authorized(None, None) and metrics_authorized("Bearer x", "")
    assert metrics_authorized("Bearer s3cret-token", "s3cret-token")
    assert metrics_authorized("bearer  s3cret-token ", "s3cret-token")
    assert metrics_authorized(basic("prometheus", "s3cret-token"), "s3cret-token")
    for header in (
        None,
        "",
        "Bearer wrong",
        "Bearer s3cret-token-longer",
        basic("s3cret-token", "x"),
        "Basic !!!",
        "Token s3cret-token",
    ):
        assert not metrics_authorized(header, "s3cret-token"), header


async def test_metrics_handler_with_a_token_over_http() -> None:
    metrics = Metrics()
    metrics.stations_connected.set(3)
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.registry, "s3cret-token"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/metrics"
            async with http.get(url) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert "csms_stations_connected" not in await resp.text()
            headers = {"Authorization": "Bearer s3cret-token"}
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200
                assert "csms_stations_connected 3.0" in await resp.text()
    finally:
        await runner.cleanup()


def _metrics_token_wired() -> bool:
    from csms.config import Settings

    return "metrics_token" in Settings.model_fields


@pytest.mark.skipif(
    not _metrics_token_wired(), reason="metrics_token not in the settings yet (csms/config.py)"
)
async def test_metrics_token_from_the_environment(tmp_path: Path) -> None:
    token = "s3cret-metrics-token"
    system, session, running = await start_system(tmp_path, metrics_token=f'"{token}"')
    try:
        async with session.get(f"{running.http_url}/metrics") as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{running.http_url}/metrics", headers=headers) as resp:
            assert resp.status == 200
    finally:
        await session.close()
        await system.stop()
