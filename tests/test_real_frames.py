"""Replay every frame that real chargers sent (../shared/reference/ocpp-real-frames.jsonl,
copied to tests/data/) against the real server: a CallResult for every schema-valid call, the
right CallError for invalid ones, the connection alive, stored times timezone-aware."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from csms.ocppj import CALL, OcppError, check_payload
from tests.conftest import Running
from tests.raw_client import RawClient

FRAMES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "ocpp-real-frames.jsonl").read_text().splitlines()
    if line.strip()
]
CALLS = [f for f in FRAMES if f["frame"][0] == CALL]
RESULTS = [f for f in FRAMES if f["frame"][0] == 3]


def _expected_error(frame: list[Any]) -> str | None:
    try:
        check_payload(CALL, frame[2], frame[3])
    except OcppError as e:
        return e.code
    return None


@pytest.mark.parametrize("entry", CALLS, ids=[f"{f['frame'][2]}-{f['vendor'][:30]}" for f in CALLS])
async def test_real_call_frame(csms: Running, entry: dict[str, Any]) -> None:
    await csms.define_station("REAL1", connectors=3)
    client = await RawClient.open(f"{csms.ocpp_url}/REAL1")
    frame = entry["frame"]
    text = entry.get("raw") or json.dumps(frame)
    reply = await client.send_text(text)
    assert reply is not None, "every call must be answered"
    assert reply[1] == frame[1], "answered with the same unique id"
    expected_error = _expected_error(frame)
    if entry.get("schema_valid", True) and expected_error is None:
        assert reply[0] == 3, f"expected a CallResult, got {reply}"
        check_payload(3, frame[2], reply[2])  # our answer is schema-valid
    else:
        assert reply[0] == 4 and reply[2] == expected_error, reply
    # the connection is alive and still answers
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    await client.close()
    # every time stored is UTC text with a Z; the original text is kept when corrected
    for table, columns in (
        ("connector_status", ("timestamp", "received_at")),
        ("transactions", ("start_time", "stop_time")),
        ("meter_values", ("timestamp", "received_at")),
    ):
        for row in await csms.system.store.read(f"SELECT * FROM {table}"):
            for col in columns:
                if row[col] is not None:
                    assert row[col].endswith("Z") and len(row[col]) == 27, (table, col, row[col])
            raw_col = {"connector_status": "timestamp_raw", "meter_values": "timestamp_raw"}.get(
                table, "start_time_raw"
            )
            for ts in entry.get("non_rfc3339_timestamps", []):
                original = ts.split("=", 1)[1]
                assert row[raw_col] == original


async def test_every_frame_on_one_connection(csms: Running) -> None:
    """All the real frames in a row, as one very odd charger would send them."""
    await csms.define_station("REAL2", connectors=3)
    client = await RawClient.open(f"{csms.ocpp_url}/REAL2")
    for entry in CALLS:
        reply = await client.send_text(entry.get("raw") or json.dumps(entry["frame"]))
        assert reply is not None and reply[0] in (3, 4)
    assert (await client.ok("Heartbeat", {}))["currentTime"]
    # nothing was lost: every sampled value of every MeterValues and StopTransaction is stored
    sent = sum(
        len(mv["sampledValue"])
        for e in CALLS
        if e["frame"][2] in ("MeterValues", "StopTransaction")
        for mv in e["frame"][3].get("meterValue", e["frame"][3].get("transactionData", []))
    )
    stored = await csms.system.store.read("SELECT COUNT(*) AS n FROM meter_values")
    assert stored[0]["n"] == sent
    await client.close()


@pytest.mark.parametrize("entry", RESULTS, ids=[f["vendor"][:30] for f in RESULTS])
async def test_real_call_result_reaches_the_caller(csms: Running, entry: dict[str, Any]) -> None:
    """A station's CallResult (here, to GetConfiguration) is handed to the API caller."""
    await csms.define_station("REAL3")
    payload = entry["frame"][2]
    client = await RawClient.open(
        f"{csms.ocpp_url}/REAL3",
        answer=lambda action, p: payload if action == "GetConfiguration" else {},
    )
    status, body = await csms.api.post(
        "/api/v1/stations/REAL3/commands/GetConfiguration", {"key": ["MeterValuesSampledData"]}
    )
    assert status == 200 and body["response"] == payload
    await client.close()
