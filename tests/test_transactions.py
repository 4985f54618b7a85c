"""Transactions are never lost and never refused for a business reason."""

from __future__ import annotations

import asyncio
from typing import Any

from csms.events import TransactionStarted, TransactionStopped
from tests.conftest import Running
from tests.raw_client import RawClient

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


def start(tag: str = "TAG1", meter: int = 0, ts: str = "2026-01-01T10:00:00Z", c: int = 1) -> dict:
    return {"connectorId": c, "idTag": tag, "meterStart": meter, "timestamp": ts}


def stop(tx: int, meter: int, ts: str = "2026-01-01T11:00:00Z", **kw: Any) -> dict:
    return {"transactionId": tx, "meterStop": meter, "timestamp": ts, **kw}


async def _station(csms: Running, sid: str = "TX1") -> RawClient:
    await csms.define_station(sid)
    client = await RawClient.open(f"{csms.ocpp_url}/{sid}")
    await client.ok("BootNotification", BOOT)
    return client


async def test_replayed_start_gets_the_same_transaction_id(csms: Running) -> None:
    await csms.put_tag("TAG1")
    client = await _station(csms)
    first = await client.ok("StartTransaction", start())
    await client.close()
    # the station did not see the answer, reconnects and sends the same start again
    client = await RawClient.open(f"{csms.ocpp_url}/TX1")
    again = await client.ok("StartTransaction", start())
    assert again["transactionId"] == first["transactionId"]
    assert again["idTagInfo"]["status"] == "Accepted"
    # a different start (other meter value) is a different transaction
    other = await client.ok("StartTransaction", start(meter=5, c=2))
    assert other["transactionId"] != first["transactionId"]
    _, body = await csms.api.get("/api/v1/transactions?station=TX1")
    assert body["total"] == 2
    await client.close()


async def test_offline_start_with_unknown_tag_is_stored_flagged_and_answered_invalid(
    csms: Running,
) -> None:
    client = await _station(csms)
    ans = await client.ok("StartTransaction", start(tag="NOBODY", ts="2025-12-31T23:00:00Z"))
    assert ans["idTagInfo"]["status"] == "Invalid"
    tx = ans["transactionId"]
    # TC_037_3: the station then stops it, DeAuthorized
    assert await client.ok("StopTransaction", stop(tx, 10, reason="DeAuthorized")) == {}
    _, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert body["id_tag"] == "NOBODY" and body["id_tag_status"] == "Invalid"
    assert set(body["flags"]) == {"unknown_tag", "not_accepted"}
    assert (
        body["stop_reason"] == "DeAuthorized" and body["start_time"] == "2025-12-31T23:00:00.000Z"
    )
    await client.close()


async def test_stop_of_unknown_transaction_is_answered_and_kept(csms: Running) -> None:
    client = await _station(csms)
    payload = stop(
        987654,
        500,
        reason="Local",
        idTag="TAG9",
        transactionData=[{"timestamp": "2026-01-01T11:00:00Z", "sampledValue": [{"value": "500"}]}],
    )
    reply = await client.call("StopTransaction", payload)
    assert reply[0] == 3 and reply[2]["idTagInfo"]["status"] == "Invalid"
    _, body = await csms.api.get("/api/v1/anomalies?station=TX1")
    [anomaly] = body["items"]
    assert anomaly["kind"] == "stop_unknown_transaction" and anomaly["transaction_id"] == 987654
    assert anomaly["detail"] == payload
    rows = await csms.system.store.read("SELECT * FROM meter_values")
    assert len(rows) == 1 and rows[0]["reported_transaction_id"] == 987654
    await client.close()


async def test_replayed_stop_changes_nothing_and_meter_backwards_is_flagged(csms: Running) -> None:
    await csms.put_tag("TAG1")
    client = await _station(csms)
    tx = (await client.ok("StartTransaction", start(meter=5000)))["transactionId"]
    assert await client.ok("StopTransaction", stop(tx, 4000, reason="Local")) == {}
    assert await client.ok("StopTransaction", stop(tx, 4000, reason="Local")) == {}
    _, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert "meter_backwards" in body["flags"] and body["meter_stop_wh"] == 4000
    # a different second stop is kept as an anomaly, the first one stands
    assert await client.ok("StopTransaction", stop(tx, 9999)) == {}
    _, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert body["meter_stop_wh"] == 4000
    kinds = [a["kind"] for a in (await csms.api.get("/api/v1/anomalies"))[1]["items"]]
    assert kinds == ["second_stop"]
    await client.close()


async def test_a_meter_values_sent_again_is_stored_once(csms: Running) -> None:
    """Its answer was lost (a node died after the commit): the station sends it again."""
    await csms.put_tag("TAG1")
    client = await _station(csms)
    tx = (await client.ok("StartTransaction", start()))["transactionId"]

    def mv(value: str, ts: str = "2026-01-01T10:15:00Z") -> dict[str, Any]:
        sampled = [
            {"value": value, "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"},
        ]
        return {
            "connectorId": 1,
            "transactionId": tx,
            "meterValue": [{"timestamp": ts, "sampledValue": sampled}],
        }

    assert await client.ok("MeterValues", mv("1500")) == {}
    assert await client.ok("MeterValues", mv("1500")) == {}  # the same, again
    assert await client.ok("MeterValues", mv("1600")) == {}  # another reading, same time
    assert await client.ok("MeterValues", mv("1500", "2026-01-01T10:16:00Z")) == {}
    rows = await csms.system.store.read(
        "SELECT value_raw FROM meter_values WHERE transaction_id = ? ORDER BY id", (tx,)
    )
    assert [r["value_raw"] for r in rows] == ["1500", "7000", "1600", "7000", "1500", "7000"]
    await client.close()


async def test_stop_before_start_is_stored_and_flagged(csms: Running) -> None:
    await csms.put_tag("TAG1")
    client = await _station(csms)
    tx = (await client.ok("StartTransaction", start(ts="2026-01-01T10:00:00Z")))["transactionId"]
    await client.ok("StopTransaction", stop(tx, 10, ts="2026-01-01T09:00:00Z"))
    _, body = await csms.api.get(f"/api/v1/transactions/{tx}")
    assert "stop_before_start" in body["flags"] and body["active"] is False
    await client.close()


async def test_meter_values_of_unknown_transaction_are_stored_flagged(csms: Running) -> None:
    client = await _station(csms)
    reply = await client.ok(
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": 4242,
            "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [{"value": "1"}]}],
        },
    )
    assert reply == {}
    rows = await csms.system.store.read("SELECT * FROM meter_values")
    assert rows[0]["transaction_id"] is None and rows[0]["reported_transaction_id"] == 4242
    kinds = [a["kind"] for a in (await csms.api.get("/api/v1/anomalies"))[1]["items"]]
    assert kinds == ["meter_values_unknown_transaction"]
    await client.close()


async def test_events_follow_the_commit(csms: Running) -> None:
    sub = csms.system.bus.subscribe("test")
    await csms.put_tag("TAG1")
    client = await _station(csms)
    tx = (await client.ok("StartTransaction", start()))["transactionId"]
    await client.ok("StartTransaction", start())  # replay: no second event
    await client.ok("StopTransaction", stop(tx, 100, reason="EVDisconnected"))
    events: list[Any] = []
    # (published by the relay once committed: read until the stop, bounded)
    while not any(isinstance(e, TransactionStopped) for e in events):
        events.append(await asyncio.wait_for(sub.get(), 5))
    started = [e for e in events if isinstance(e, TransactionStarted)]
    stopped = [e for e in events if isinstance(e, TransactionStopped)]
    assert len(started) == 1 and started[0].transaction_id == tx
    assert len(stopped) == 1 and stopped[0].reason == "EVDisconnected"
    assert stopped[0].connector_id == 1 and stopped[0].meter_stop_wh == 100
    # the event is committed with the stop, in the outbox, after the start's
    rows = await csms.system.store.read("SELECT kind, body FROM events ORDER BY id")
    kinds = [r["kind"] for r in rows if r["kind"].startswith("Transaction")]
    assert kinds == ["TransactionStarted", "TransactionStopped"]
    assert (await csms.system.store.transactions.get(tx))["stop_reason"] == "EVDisconnected"
    await client.close()


async def test_id_tag_statuses_TC_023(csms: Running) -> None:
    await csms.put_tag("GOOD", parent_id_tag="FLEET")
    await csms.put_tag("BLOCKED", "Blocked")
    await csms.put_tag("OLD", "Accepted", expiry_date="2020-01-01T00:00:00Z")
    await csms.put_tag("LATER", "Accepted", expiry_date="2099-01-01T00:00:00Z")
    await csms.put_tag("BUSY", "ConcurrentTx")
    await csms.put_tag("gone", "Expired")
    client = await _station(csms)

    async def status(tag: str) -> dict[str, Any]:
        return (await client.ok("Authorize", {"idTag": tag}))["idTagInfo"]

    assert await status("GOOD") == {"status": "Accepted", "parentIdTag": "FLEET"}
    assert await status("good") == {"status": "Accepted", "parentIdTag": "FLEET"}  # CiString
    assert (await status("BLOCKED"))["status"] == "Blocked"
    assert (await status("OLD"))["status"] == "Expired"
    assert await status("LATER") == {"status": "Accepted", "expiryDate": "2099-01-01T00:00:00.000Z"}
    assert (await status("BUSY"))["status"] == "ConcurrentTx"
    assert (await status("GONE"))["status"] == "Expired"
    assert (await status("UNKNOWN"))["status"] == "Invalid"
    # StartTransaction answers the same statuses, and still starts (and stores) the transaction
    ans = await client.ok("StartTransaction", start(tag="BLOCKED"))
    assert ans["idTagInfo"]["status"] == "Blocked" and ans["transactionId"] > 0
    await client.close()


async def test_data_transfer_diagnostics_and_firmware_status(csms: Running) -> None:
    client = await _station(csms)
    reply = await client.ok(
        "DataTransfer", {"vendorId": "EV-BOX", "messageId": "x", "data": "1,2,3"}
    )
    assert reply == {"status": "UnknownVendorId"}
    assert await client.ok("DiagnosticsStatusNotification", {"status": "Uploaded"}) == {}
    assert await client.ok("FirmwareStatusNotification", {"status": "Installing"}) == {}
    _, body = await csms.api.get("/api/v1/stations/TX1")
    assert body["diagnostics_status"] == "Uploaded" and body["firmware_status"] == "Installing"
    rows = await csms.system.store.read("SELECT * FROM data_transfers")
    assert rows[0]["vendor_id"] == "EV-BOX" and rows[0]["data"] == "1,2,3"
    await client.close()


async def test_boot_pending_and_rejected_per_station(csms: Running) -> None:
    await csms.define_station("PEND", boot_status="Pending")
    await csms.define_station("REJ", boot_status="Rejected")
    for sid, expected in (("PEND", "Pending"), ("REJ", "Rejected")):
        client = await RawClient.open(f"{csms.ocpp_url}/{sid}")
        ans = await client.ok("BootNotification", BOOT)
        assert ans["status"] == expected and ans["interval"] == 60
        await client.close()
        _, body = await csms.api.get(f"/api/v1/stations/{sid}")
        assert body["boot"]["vendor"] == "V" and body["boot"]["first_boot_at"] is None
    # no configuration is pushed to a station that is not accepted
    assert (await csms.api.get("/api/v1/commands"))[1]["items"] == []


async def test_boot_is_stored_and_answered_with_the_heartbeat_interval(csms: Running) -> None:
    await csms.define_station("B1")
    client = await RawClient.open(f"{csms.ocpp_url}/B1")
    payload = {
        "chargePointVendor": "Wall Box Chargers",
        "chargePointModel": "PLP1-0-2-3",
        "chargePointSerialNumber": "386285",
        "firmwareVersion": "6.4.14",
        "iccid": "",
    }
    ans = await client.ok("BootNotification", payload)
    assert ans["status"] == "Accepted" and ans["interval"] == 120
    assert ans["currentTime"].endswith("Z")
    _, body = await csms.api.get("/api/v1/stations/B1")
    boot = body["boot"]
    assert (boot["vendor"], boot["model"], boot["serial_number"], boot["firmware_version"]) == (
        "Wall Box Chargers",
        "PLP1-0-2-3",
        "386285",
        "6.4.14",
    )
    assert boot["notification"] == payload and boot["first_boot_at"] == boot["last_boot_at"]
    await client.close()


async def test_a_failing_handler_answers_internal_error_and_the_loop_goes_on(
    csms: Running,
) -> None:
    client = await _station(csms)

    async def broken(conn: Any, payload: Any, received_at: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    async def wrong_answer(conn: Any, payload: Any, received_at: Any) -> dict[str, Any]:
        return {"currentTime": 42}  # not schema-valid: must not reach the station

    routes = csms.system.handlers._routes
    original = routes["Heartbeat"]
    routes["Heartbeat"] = broken
    reply = await client.call("Heartbeat", {})
    assert reply[0] == 4 and reply[2] == "InternalError"
    routes["Heartbeat"] = wrong_answer
    reply = await client.call("Heartbeat", {})
    assert reply[0] == 4 and reply[2] == "InternalError"
    routes["Heartbeat"] = original
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    await client.close()
