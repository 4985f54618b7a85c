"""Rules R3 and R4: every accepted boot sets both intervals and reads them back."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Running
from tests.raw_client import RawClient, default_answer

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


async def _configuration(csms: Running, sid: str) -> dict[str, Any]:
    for _ in range(200):
        _, body = await csms.api.get(f"/api/v1/stations/{sid}")
        if body["configuration"]["status"] != "unknown":
            return body["configuration"]
        await asyncio.sleep(0.02)
    raise AssertionError("configuration never checked")


async def test_accepted_boot_sets_intervals_after_the_answer_and_stores_the_snapshot(
    csms: Running,
) -> None:
    await csms.define_station("P1")
    client = await RawClient.open(f"{csms.ocpp_url}/P1")
    ans = await client.ok("BootNotification", BOOT)
    assert ans["status"] == "Accepted"
    cfg = await _configuration(csms, "P1")
    assert cfg["status"] == "compliant" and cfg["reasons"] == []
    assert {k["key"] for k in cfg["snapshot"]} == {"HeartbeatInterval", "MeterValueSampleInterval"}
    assert client.received_calls == [
        ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "120"}),
        ("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "60"}),
        ("GetConfiguration", {}),
    ]
    _, page = await csms.api.get("/api/v1/commands?station=P1")
    assert {c["origin"] for c in page["items"]} == {"provisioning"}
    await client.close()


async def test_refusing_station_is_non_compliant_with_the_reason(csms: Running) -> None:
    await csms.define_station("P2")

    def answer(action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if action == "ChangeConfiguration" and payload["key"] == "MeterValueSampleInterval":
            return {"status": "Rejected"}
        if action == "GetConfiguration":
            return {
                "configurationKey": [
                    {"key": "HeartbeatInterval", "readonly": False, "value": "120"},
                    {"key": "MeterValueSampleInterval", "readonly": False, "value": "900"},
                ]
            }
        return default_answer(action, payload)

    client = await RawClient.open(f"{csms.ocpp_url}/P2", answer=answer)
    await client.ok("BootNotification", BOOT)
    cfg = await _configuration(csms, "P2")
    assert cfg["status"] == "non_compliant"
    assert "ChangeConfiguration MeterValueSampleInterval=60 answered Rejected" in cfg["reasons"]
    assert "MeterValueSampleInterval reads back 900, expected 60" in cfg["reasons"]
    await client.close()


async def test_silent_station_is_non_compliant_and_the_receive_loop_keeps_working(
    csms: Running,
) -> None:
    csms.system.settings.ocpp.call_timeout = 0.3
    await csms.define_station("P3")
    client = await RawClient.open(f"{csms.ocpp_url}/P3", answer=lambda a, p: None)
    await client.ok("BootNotification", BOOT)
    # while the central system waits for answers, the station's own requests are answered
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    cfg = await _configuration(csms, "P3")
    assert cfg["status"] == "non_compliant"
    assert any("GetConfiguration failed" in r for r in cfg["reasons"])
    await client.close()
