"""The operator API: its shapes, its errors and its commands."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.conftest import Running, station_body
from tests.raw_client import RawClient

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


async def test_credentials_are_required(csms: Running) -> None:
    status, body = await csms.api.get("/api/v1/stations", auth=False)
    assert status == 401 and body["error"] == "unauthorized"
    async with csms.api.session.get(
        csms.http_url + "/api/v1/stations",
        headers={"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()},
    ) as resp:
        assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"]
    # health and metrics are open (for load balancers and Prometheus)
    async with csms.api.session.get(csms.http_url + "/healthz") as resp:
        assert resp.status == 200


async def test_station_put_get_list_shapes(csms: Running) -> None:
    status, body = await csms.api.put("/api/v1/stations/CP-1", station_body("CP-1", 2))
    assert status == 201
    assert body["id"] == "CP-1" and body["location"]["id"] == "LOC-CP-1"
    assert body["location"]["mobie_voltage_level"] == "BTN"
    assert [e["uid"] for e in body["evses"]] == ["LOC-CP-1-01", "LOC-CP-1-02"]
    assert body["connected"] is False and body["connectors"] == []
    assert body["configuration"]["status"] == "unknown"
    # replacing answers 200
    status, _ = await csms.api.put("/api/v1/stations/CP-1", station_body("CP-1", 1))
    assert status == 200
    _, body = await csms.api.get("/api/v1/stations/CP-1")
    assert len(body["evses"]) == 1
    for i in range(3):
        await csms.api.put(f"/api/v1/stations/X{i}", station_body(f"X{i}", 1))
    status, page = await csms.api.get("/api/v1/stations?limit=2&offset=1")
    assert status == 200 and page["total"] == 4 and [s["id"] for s in page["items"]] == ["X0", "X1"]
    assert (await csms.api.get("/api/v1/stations/NOPE"))[0] == 404


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["location"].pop("city"), "location.city"),
        (
            lambda b: b["location"]["coordinates"].update(latitude="north"),
            "location.coordinates.latitude",
        ),
        (
            lambda b: b["location"].update(mobie_voltage_level="HIGH"),
            "location.mobie_voltage_level",
        ),
        (lambda b: b["location"].update(time_zone="Europe/Atlantis"), "location.time_zone"),
        (lambda b: b["location"].update(address="x" * 46), "location.address"),
        (
            lambda b: b["evses"][0]["connectors"][0].update(standard="SCHUKO"),
            "evses.0.connectors.0.standard",
        ),
        (lambda b: b["evses"][0].update(connector_id=0), "evses.0.connector_id"),
        (lambda b: b["evses"][1].update(uid=b["evses"][0]["uid"]), "evses"),
        (lambda b: b.update(colour="red"), "colour"),
        (lambda b: b.update(password="short"), "password"),
    ],
)
async def test_invalid_station_bodies_name_the_field(csms: Running, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    body = station_body("BAD", 2)
    mutate(body)
    status, answer = await csms.api.put("/api/v1/stations/BAD", body)
    assert status == 422, answer
    assert answer["error"] == "invalid_body"
    assert field in [f["field"] for f in answer["fields"]], answer["fields"]
    assert (await csms.api.get("/api/v1/stations/BAD"))[0] == 404  # nothing stored


async def test_not_json_and_conflicts(csms: Running) -> None:
    async with csms.api.session.put(
        csms.http_url + "/api/v1/stations/A", data=b"{nope", headers=csms.api.auth
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    await csms.api.put("/api/v1/stations/A", station_body("A", 1))
    other = station_body("B", 1)
    other["location"]["id"] = "LOC-A"
    status, body = await csms.api.put("/api/v1/stations/B", other)
    assert status == 409 and "LOC-A" in body["message"]
    other = station_body("B", 1)
    other["evses"][0]["uid"] = "loc-a-01"  # uids are case-insensitive
    status, body = await csms.api.put("/api/v1/stations/B", other)
    assert status == 409 and "uid" in body["message"]


async def test_id_tags(csms: Running) -> None:
    status, body = await csms.api.put(
        "/api/v1/id-tags/04ABBE2A266581",
        {"status": "Accepted", "expiry_date": "2030-01-01T00:00:00+01:00", "parent_id_tag": "P"},
    )
    assert status == 201
    assert body == {
        "id_tag": "04ABBE2A266581",
        "status": "Accepted",
        "expiry_date": "2029-12-31T23:00:00.000Z",
        "parent_id_tag": "P",
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert (await csms.api.put("/api/v1/id-tags/04ABBE2A266581", {"status": "Blocked"}))[0] == 200
    assert (await csms.api.put("/api/v1/id-tags/X", {"status": "Maybe"}))[0] == 422
    status, body = await csms.api.put("/api/v1/id-tags/X", {"expiry_date": "tomorrow"})
    assert status == 422 and body["fields"][0]["field"] == "expiry_date"
    assert (await csms.api.put("/api/v1/id-tags/" + "T" * 21, {}))[0] == 422
    _, page = await csms.api.get("/api/v1/id-tags")
    assert page["total"] == 1 and page["items"][0]["status"] == "Blocked"
    assert (await csms.api.request("DELETE", "/api/v1/id-tags/04abbe2a266581"))[0] == 204
    assert (await csms.api.get("/api/v1/id-tags/04ABBE2A266581"))[0] == 404


async def test_transactions_filters_and_meter_values(csms: Running) -> None:
    await csms.define_station("T1")
    await csms.define_station("T2")
    await csms.put_tag("TAG")
    c1 = await RawClient.open(f"{csms.ocpp_url}/T1")
    c2 = await RawClient.open(f"{csms.ocpp_url}/T2")
    s = {"connectorId": 1, "idTag": "TAG", "meterStart": 0}
    a = (await c1.ok("StartTransaction", {**s, "timestamp": "2026-01-01T10:00:00Z"}))[
        "transactionId"
    ]
    await c2.ok("StartTransaction", {**s, "timestamp": "2026-01-02T10:00:00Z"})
    await c1.ok(
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": a,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T10:01:00Z",
                    "sampledValue": [{"value": "1.5", "unit": "kWh", "context": "Sample.Periodic"}],
                }
            ],
        },
    )
    await c1.ok(
        "StopTransaction",
        {"transactionId": a, "meterStop": 2000, "timestamp": "2026-01-01T11:00:00Z"},
    )
    get = csms.api.get
    assert (await get("/api/v1/transactions"))[1]["total"] == 2
    assert [
        t["station_id"] for t in (await get("/api/v1/transactions?active=true"))[1]["items"]
    ] == ["T2"]
    assert [t["id"] for t in (await get("/api/v1/transactions?station=T1"))[1]["items"]] == [a]
    assert (await get("/api/v1/transactions?since=2026-01-02T00:00:00Z"))[1]["total"] == 1
    assert (await get("/api/v1/transactions?since=yesterday"))[0] == 400
    assert (await get("/api/v1/transactions?active=perhaps"))[0] == 400
    assert (await get("/api/v1/transactions?limit=0"))[0] == 400
    _, tx = await get(f"/api/v1/transactions/{a}")
    assert tx["energy_wh"] == 2000
    [mv] = tx["meter_values"]
    assert mv["value"] == "1.5" and mv["unit"] == "kWh"
    assert mv["normalised_value"] == 1500.0 and mv["normalised_unit"] == "Wh"
    assert (await get("/api/v1/transactions/999"))[0] == 404
    await c1.close()
    await c2.close()


async def test_commands_answers_and_errors(csms: Running) -> None:
    await csms.define_station("C1")
    post = csms.api.post
    # offline
    status, body = await post("/api/v1/stations/C1/commands/Reset", {"type": "Soft"})
    assert status == 409 and body["error"] == "station_offline"
    # unknown station, unknown action, invalid payload
    assert (await post("/api/v1/stations/NOPE/commands/Reset", {"type": "Soft"}))[0] == 404
    status, body = await post("/api/v1/stations/C1/commands/Explode", {})
    assert status == 404 and body["error"] == "unknown_action"
    status, body = await post("/api/v1/stations/C1/commands/Reset", {"type": "Gentle"})
    assert status == 422 and "Gentle" in body["message"]

    def answer(action: str, payload: dict) -> dict | None:  # type: ignore[type-arg]
        if action == "Reset":
            return {"status": "Accepted"}
        if action == "UnlockConnector":
            return None  # never answers
        return {}

    client = await RawClient.open(f"{csms.ocpp_url}/C1", answer=answer)
    status, body = await post("/api/v1/stations/C1/commands/Reset", {"type": "Soft"})
    assert (status, body) == (200, {"status": "ok", "response": {"status": "Accepted"}})
    assert client.received_calls[-1] == ("Reset", {"type": "Soft"})
    # timeout
    status, body = await post(
        "/api/v1/stations/C1/commands/UnlockConnector?timeout=0.3", {"connectorId": 1}
    )
    assert status == 504 and body["error"] == "timeout"
    await client.close()

    # a station answering with a CallError
    import json

    client = await RawClient.open(f"{csms.ocpp_url}/C1", answer=lambda a, p: None)
    client._reader.cancel()

    async def reader() -> None:
        async for text in client.ws:
            msg = json.loads(text)
            if msg[0] == 2:
                await client.ws.send(json.dumps([4, msg[1], "NotSupported", "not here", {}]))

    task = asyncio.create_task(reader())
    status, body = await post("/api/v1/stations/C1/commands/ClearCache", {})
    assert status == 502 and body["error"] == "station_call_error"
    assert body["call_error"] == {"code": "NotSupported", "description": "not here", "details": {}}
    task.cancel()
    await client.ws.close()
    # every command is recorded with its outcome
    _, page = await csms.api.get("/api/v1/commands?station=C1")
    outcomes = [(c["action"], c["outcome"]) for c in page["items"]]
    assert outcomes == [
        ("ClearCache", "call_error"),
        ("UnlockConnector", "timeout"),
        ("Reset", "ok"),
        ("Reset", "offline"),
    ]
