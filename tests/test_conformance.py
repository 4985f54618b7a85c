"""OCPP 1.6 conformance: the OCA test cases in which the central system is under test
(../shared/reference/ocpp16-conformance.md, Core), one test each, named after the case.

The simulator plays the charge point (as OCTT would) over real websockets against the real
server; what the central system answered and stored is checked through its API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system

CORE_KEYS = {
    "AuthorizeRemoteTxRequests",
    "ClockAlignedDataInterval",
    "ConnectionTimeOut",
    "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys",
    "HeartbeatInterval",
    "LocalAuthorizeOffline",
    "LocalPreAuthorize",
    "MeterValuesAlignedData",
    "MeterValuesSampledData",
    "MeterValueSampleInterval",
    "NumberOfConnectors",
    "ResetRetries",
    "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId",
    "StopTxnAlignedData",
    "StopTxnSampledData",
    "SupportedFeatureProfiles",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect",
}
VALID_TAG = "VALID-TAG"


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")
        await asyncio.sleep(0.02)


class Case:
    """One conformance case: the central system, the simulated station and helpers."""

    def __init__(self, csms: Running, station: Station) -> None:
        self.csms = csms
        self.st = station
        self.sid = station.id

    async def command(self, action: str, payload: dict[str, Any]) -> tuple[int, Any]:
        return await self.csms.api.post(f"/api/v1/stations/{self.sid}/commands/{action}", payload)

    async def command_ok(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, body = await self.command(action, payload)
        assert status == 200, body
        return body["response"]

    async def station(self) -> dict[str, Any]:
        return (await self.csms.api.get(f"/api/v1/stations/{self.sid}"))[1]

    async def connector_status(self, connector_id: int) -> str | None:
        for c in (await self.station())["connectors"]:
            if c["connector_id"] == connector_id:
                return str(c["status"])
        return None

    async def wait_status(self, connector_id: int, status: str) -> None:
        async def check() -> bool:
            return await self.connector_status(connector_id) == status

        await eventually(check)

    async def transactions(self, **query: str) -> list[dict[str, Any]]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        return (await self.csms.api.get(f"/api/v1/transactions?station={self.sid}&{qs}"))[1][
            "items"
        ]

    async def transaction(self, tx_id: int) -> dict[str, Any]:
        return (await self.csms.api.get(f"/api/v1/transactions/{tx_id}"))[1]

    async def wait_stopped(self, tx_id: int) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            tx = await self.transaction(tx_id)
            return tx if not tx["active"] else None

        return await eventually(check)

    async def booted_and_configured(self) -> None:
        """The reusable state 'Booted', and the post-boot configuration finished."""
        boot = await self.st.boot_and_report()
        assert boot["status"] == "Accepted"

        async def configured() -> bool:
            return (await self.station())["configuration"]["status"] != "unknown"

        await eventually(configured)

    async def charging(self, connector_id: int = 1, tag: str = VALID_TAG) -> int:
        """The reusable state 'Charging'."""
        answer = await self.st.start_charging(connector_id, tag)
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"
        await self.wait_status(connector_id, "Charging")
        return int(answer["transactionId"])


async def _case(
    csms: Running, sid: str, connectors: int = 2, **behaviour: Any
) -> AsyncIterator[Case]:
    await csms.define_station(sid, connectors)
    await csms.put_tag(VALID_TAG)
    behaviour.setdefault("auto_heartbeat", False)
    behaviour.setdefault("auto_meter_values", False)
    behaviour.setdefault("step_delay", 0.01)
    st = Station(sid, csms.ocpp_url, connectors, behaviour=Behaviour(**behaviour))
    await st.connect()
    try:
        yield Case(csms, st)
    finally:
        await st.disconnect()


@pytest.fixture
async def case(csms: Running, request: pytest.FixtureRequest) -> AsyncIterator[Case]:
    params = getattr(request, "param", {})
    async for c in _case(csms, "CONF-1", **params):
        yield c


def behaviour(**kw: Any) -> Any:
    return pytest.mark.parametrize("case", [kw], indirect=True)


# ---------------------------------------------------------------------------- boot


async def test_TC_001_CSMS_cold_boot(tmp_path: Path) -> None:
    system, session, csms = await start_system(tmp_path, ocpp__heartbeat_interval="1")
    try:
        async for case in _case(csms, "COLD", 2, auto_heartbeat=True):
            boot = await case.st.boot()
            assert boot["status"] == "Accepted" and boot["interval"] == 1
            for connector in (0, 1, 2):  # connector 0 included
                assert await case.st.status(connector, "Available") == {}
            for connector in (0, 1, 2):
                assert await case.connector_status(connector) == "Available"
            # heartbeats every `interval` s are answered with the current time
            await eventually(partial(_count, case.st, "Heartbeat", 2), timeout=6)
            _, metrics = await csms.api.get("/metrics")
            assert 'csms_ocpp_answer_seconds_count{action="Heartbeat"}' in metrics
            station = await case.station()
            assert station["connected"] and station["last_seen"]
    finally:
        await session.close()
        await system.stop()


async def _count(st: Station, action: str, n: int) -> bool:
    return sum(1 for a, _ in st.calls_sent if a == action) >= n and st.stats.errors == 0


# ---------------------------------------------------------------------------- sessions


async def test_TC_003_CSMS_charging_session_plug_in_first(case: Case) -> None:
    await case.booted_and_configured()
    assert await case.st.status(1, "Preparing") == {}
    auth = await case.st.authorize(VALID_TAG)
    assert auth["idTagInfo"]["status"] == "Accepted"
    start = await case.st.start_transaction(1, VALID_TAG)
    assert start is not None and start["idTagInfo"]["status"] == "Accepted"
    assert isinstance(start["transactionId"], int)
    await case.st.status(1, "Charging")
    await case.wait_status(1, "Charging")
    [tx] = await case.transactions(active="true")
    assert tx["id"] == start["transactionId"] and tx["id_tag"] == VALID_TAG


async def test_TC_004_1_CSMS_charging_session_identification_first(case: Case) -> None:
    await case.booted_and_configured()
    assert (await case.st.authorize(VALID_TAG))["idTagInfo"]["status"] == "Accepted"
    await case.st.status(1, "Preparing")
    start = await case.st.start_transaction(1, VALID_TAG)
    assert start is not None and start["idTagInfo"]["status"] == "Accepted"
    await case.st.status(1, "Charging")
    await case.wait_status(1, "Charging")


async def test_TC_004_2_CSMS_identification_first_connection_timeout(case: Case) -> None:
    await case.booted_and_configured()
    assert (await case.st.authorize(VALID_TAG))["idTagInfo"]["status"] == "Accepted"
    assert await case.st.status(1, "Preparing") == {}
    assert await case.st.status(1, "Available") == {}
    await case.wait_status(1, "Available")
    assert await case.transactions() == []


async def test_TC_005_1_CSMS_ev_side_disconnected(case: Case) -> None:
    await case.booted_and_configured()
    tx = await case.charging()
    await case.st.status(1, "SuspendedEV")
    stop = await case.st.stop_transaction(tx, reason="EVDisconnected")
    assert stop is not None
    await case.st.status(1, "Finishing")
    await case.st.status(1, "Available")
    stored = await case.wait_stopped(tx)
    assert stored["stop_reason"] == "EVDisconnected"
    await case.wait_status(1, "Available")


async def test_TC_007_CSMS_regular_start_with_cached_id(case: Case) -> None:
    await case.booted_and_configured()
    await case.st.status(1, "Preparing")
    start = await case.st.start_transaction(1, VALID_TAG)  # no Authorize before
    assert start is not None and start["idTagInfo"]["status"] == "Accepted"
    await case.st.status(1, "Charging")
    await case.wait_status(1, "Charging")


async def test_TC_061_CSMS_clear_authorization_data_in_cache(case: Case) -> None:
    await case.booted_and_configured()
    assert await case.command_ok("ClearCache", {}) == {"status": "Accepted"}
    assert case.st.calls_received[-1] == ("ClearCache", {})


# ---------------------------------------------------------------------------- remote start/stop


async def test_TC_010_CSMS_remote_start_cable_plugged_in_first(case: Case) -> None:
    await case.booted_and_configured()
    await case.st.status(1, "Preparing")
    answer = await case.command_ok("RemoteStartTransaction", {"connectorId": 1, "idTag": VALID_TAG})
    assert answer == {"status": "Accepted"}
    await case.wait_status(1, "Charging")
    [tx] = await eventually(lambda: case.transactions(active="true"))
    assert tx["connector_id"] == 1 and tx["id_tag_status"] == "Accepted"


async def test_TC_011_1_CSMS_remote_start_first(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("RemoteStartTransaction", {"idTag": VALID_TAG})
    assert answer == {"status": "Accepted"}
    await case.wait_status(1, "Charging")
    assert await eventually(lambda: case.transactions(active="true"))
    # the station authorized the remote start's tag first (AuthorizeRemoteTxRequests)
    assert ("Authorize", {"idTag": VALID_TAG}) in case.st.calls_sent


@behaviour(remote_start="accept_timeout")
async def test_TC_011_2_CSMS_remote_start_time_out(case: Case) -> None:
    case.st.config.set("ConnectionTimeOut", "1")
    await case.booted_and_configured()
    answer = await case.command_ok("RemoteStartTransaction", {"connectorId": 1, "idTag": VALID_TAG})
    assert answer == {"status": "Accepted"}
    await case.wait_status(1, "Preparing")
    await case.st.wait_idle(timeout=5)
    await case.wait_status(1, "Available")
    assert await case.transactions() == []


async def test_TC_012_CSMS_remote_stop_transaction(case: Case) -> None:
    await case.booted_and_configured()
    tx = await case.charging()
    answer = await case.command_ok("RemoteStopTransaction", {"transactionId": tx})
    assert answer == {"status": "Accepted"}
    stored = await case.wait_stopped(tx)
    assert stored["stop_reason"] == "Remote"
    await case.wait_status(1, "Available")
    statuses = [p["status"] for a, p in case.st.calls_sent if a == "StatusNotification"]
    assert statuses[-2:] == ["Finishing", "Available"]


@behaviour(remote_start="reject")
async def test_TC_026_CSMS_remote_start_rejected(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("RemoteStartTransaction", {"connectorId": 1, "idTag": VALID_TAG})
    assert answer == {"status": "Rejected"}
    assert await case.transactions() == []


async def test_TC_028_CSMS_remote_stop_rejected(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("RemoteStopTransaction", {"transactionId": 999999})
    assert answer == {"status": "Rejected"}


# ---------------------------------------------------------------------------- reset


@pytest.mark.parametrize("kind", ["Hard", "Soft"])
async def test_TC_013_and_TC_014_CSMS_hard_and_soft_reset(case: Case, kind: str) -> None:
    await case.booted_and_configured()
    first_boot = (await case.station())["boot"]["last_boot_at"]
    assert await case.command_ok("Reset", {"type": kind}) == {"status": "Accepted"}

    async def rebooted() -> bool:
        s = await case.station()
        return bool(s["connected"] and s["boot"]["last_boot_at"] != first_boot)

    await eventually(rebooted)
    for connector in (0, 1, 2):
        await case.wait_status(connector, "Available")
    boots = [a for a, _ in case.st.calls_sent if a == "BootNotification"]
    assert len(boots) == 2


# ---------------------------------------------------------------------------- unlock


@pytest.mark.parametrize(
    ("case", "expected"),
    [({"unlock": "Unlocked"}, "Unlocked"), ({"unlock": "NotSupported"}, "NotSupported")],
    indirect=["case"],
)
async def test_TC_017_1_and_TC_017_2_CSMS_unlock_connector_no_charging_session(
    case: Case, expected: str
) -> None:
    await case.booted_and_configured()
    assert await case.command_ok("UnlockConnector", {"connectorId": 1}) == {"status": expected}


async def test_TC_018_1_CSMS_unlock_connector_with_charging_session(case: Case) -> None:
    await case.booted_and_configured()
    tx = await case.charging()
    assert await case.command_ok("UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    stored = await case.wait_stopped(tx)
    assert stored["stop_reason"] == "UnlockCommand"
    await case.wait_status(1, "Available")


@behaviour(unlock="UnlockFailed")
async def test_TC_030_CSMS_unlock_connector_unlock_failure(case: Case) -> None:
    await case.booted_and_configured()
    assert await case.command_ok("UnlockConnector", {"connectorId": 1}) == {
        "status": "UnlockFailed"
    }


async def test_TC_031_CSMS_unlock_connector_unknown_connector(case: Case) -> None:
    await case.booted_and_configured()
    assert await case.command_ok("UnlockConnector", {"connectorId": 3}) == {
        "status": "NotSupported"
    }


# ---------------------------------------------------------------------------- configuration


async def test_TC_019_1_CSMS_retrieve_all_configuration_keys(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("GetConfiguration", {})
    keys = {k["key"] for k in answer["configurationKey"]}
    assert keys >= CORE_KEYS
    # the snapshot stored after the boot has them too
    snapshot = (await case.station())["configuration"]["snapshot"]
    assert {k["key"] for k in snapshot} >= CORE_KEYS


async def test_TC_019_2_CSMS_retrieve_specific_configuration_key(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
    [key] = answer["configurationKey"]
    assert key["key"] == "SupportedFeatureProfiles" and "Core" in key["value"]


async def test_TC_021_CSMS_change_set_configuration(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok(
        "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "60"}
    )
    assert answer == {"status": "Accepted"}
    assert case.st.config.get("MeterValueSampleInterval") == "60"


async def test_TC_040_1_CSMS_configuration_key_not_supported(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok("ChangeConfiguration", {"key": "NoSuchKey", "value": "1"})
    assert answer == {"status": "NotSupported"}


async def test_TC_040_2_CSMS_set_configuration_invalid_value(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok(
        "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "-1"}
    )
    assert answer == {"status": "Rejected"}


# ---------------------------------------------------------------------------- authorization


@pytest.mark.parametrize(
    ("tag_status", "extra", "expected"),
    [
        ("Invalid", {}, "Invalid"),  # TC_023_1
        ("Accepted", {"expiry_date": "2020-01-01T00:00:00Z"}, "Expired"),  # TC_023_2
        ("Blocked", {}, "Blocked"),  # TC_023_3
    ],
    ids=["TC_023_1_invalid", "TC_023_2_expired", "TC_023_3_blocked"],
)
async def test_TC_023_CSMS_start_charging_session_authorize_invalid_expired_blocked(
    case: Case, tag_status: str, extra: dict[str, Any], expected: str
) -> None:
    await case.csms.put_tag("BAD-TAG", tag_status, **extra)
    await case.booted_and_configured()
    await case.st.status(1, "Preparing")
    answer = await case.st.authorize("BAD-TAG")
    assert answer["idTagInfo"]["status"] == expected
    await case.st.status(1, "Available")
    assert await case.transactions() == []


async def test_TC_024_CSMS_start_charging_session_lock_failure(case: Case) -> None:
    await case.booted_and_configured()
    await case.st.status(1, "Preparing")
    assert await case.st.authorize(VALID_TAG)
    answer = await case.st.status(1, "Faulted", error_code="ConnectorLockFailure")
    assert answer == {}
    await case.wait_status(1, "Faulted")
    station = await case.station()
    [c1] = [c for c in station["connectors"] if c["connector_id"] == 1]
    assert c1["error_code"] == "ConnectorLockFailure"


# ------------------------------------------------------------------- power loss, offline


async def test_TC_032_1_CSMS_power_failure_boot_charging_point(case: Case) -> None:
    await case.booted_and_configured()
    tx = await case.charging(1)
    # the station loses power: it comes back, boots, reports Finishing on the busy connector
    await case.st.go_offline()
    await case.st.connect()
    assert (await case.st.boot())["status"] == "Accepted"
    await case.st.status(0, "Available")
    await case.st.status(1, "Finishing")
    await case.st.status(2, "Available")
    stop = await case.st.stop_transaction(tx, reason="PowerLoss")
    assert stop is not None
    stored = await case.wait_stopped(tx)
    assert stored["stop_reason"] == "PowerLoss"
    await case.wait_status(1, "Finishing")
    await case.wait_status(2, "Available")


async def test_TC_037_1_CSMS_offline_start_transaction_valid_idtag(case: Case) -> None:
    await case.booted_and_configured()
    await case.st.go_offline()
    assert await case.st.start_charging(1, VALID_TAG) is None  # queued while offline
    await asyncio.sleep(0.05)
    await case.st.go_online()
    [tx] = await eventually(lambda: case.transactions(active="true"))
    assert tx["id_tag_status"] == "Accepted"
    # the start carries the station's (older) time, not the time it arrived
    assert tx["start_time"] < tx["start_received_at"]
    await case.st.status(1, "Charging")
    await case.wait_status(1, "Charging")


async def test_TC_037_3_CSMS_offline_start_transaction_invalid_idtag(case: Case) -> None:
    await case.csms.put_tag("BLOCKED-TAG", "Blocked")
    await case.booted_and_configured()
    await case.st.go_offline()
    assert await case.st.start_charging(1, "BLOCKED-TAG") is None
    await case.st.go_online()
    [tx] = await eventually(lambda: case.transactions(active="false"))
    assert tx["id_tag_status"] == "Blocked"
    assert tx["stop_reason"] == "DeAuthorized"
    await case.wait_status(1, "Available")
    statuses = [p["status"] for a, p in case.st.calls_sent if a == "StatusNotification"]
    assert "Finishing" in statuses


async def test_TC_039_CSMS_offline_transaction(case: Case) -> None:
    await case.booted_and_configured()
    await case.st.go_offline()
    assert await case.st.start_charging(1, VALID_TAG) is None
    await case.st.meter_values(1, energy_wh=1500, power_w=7000)
    assert await case.st.stop_charging(1, reason="Local") is None
    await case.st.go_online()
    [tx] = await eventually(lambda: case.transactions(active="false"))
    assert tx["stop_reason"] == "Local" and tx["id_tag_status"] == "Accepted"
    full = await case.transaction(tx["id"])
    assert any(mv["measurand"] == "Power.Active.Import" for mv in full["meter_values"])


# ------------------------------------------------------------------- trigger, data transfer


async def test_TC_054_CSMS_trigger_message(case: Case) -> None:
    await case.booted_and_configured()
    before = len(case.st.calls_sent)
    for requested, connector in (
        ("MeterValues", 1),
        ("Heartbeat", None),
        ("StatusNotification", 1),
        ("DiagnosticsStatusNotification", None),
        ("FirmwareStatusNotification", None),
    ):
        payload: dict[str, Any] = {"requestedMessage": requested}
        if connector is not None:
            payload["connectorId"] = connector
        assert await case.command_ok("TriggerMessage", payload) == {"status": "Accepted"}

        async def sent(requested: str = requested) -> bool:
            return any(a == requested for a, _ in case.st.calls_sent[before:])

        await eventually(sent)
    await case.st.wait_idle()
    # every triggered message was answered (the simulator counts no error)
    assert case.st.stats.errors == 0


async def test_TC_055_CSMS_trigger_message_rejected(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.command_ok(
        "TriggerMessage", {"requestedMessage": "MeterValues", "connectorId": 3}
    )
    assert answer == {"status": "Rejected"}


async def test_TC_064_CSMS_data_transfer_to_central_system(case: Case) -> None:
    await case.booted_and_configured()
    answer = await case.st.data_transfer("com.unknown.vendor", "SomeMessage", "payload")
    assert answer["status"] in ("Rejected", "UnknownMessageId", "UnknownVendorId")
    assert answer["status"] == "UnknownVendorId"


# ---------------------------------------------------------------------------- transport


async def test_TC_088_CSMS_websocket_subprotocol(csms: Running) -> None:
    await csms.define_station("CP88")
    url = f"{csms.ocpp_url}/CP88"
    # OCPP-J 1.6, 3.1.2: the handshake completes without Sec-WebSocket-Protocol, then the
    # central system closes the connection immediately
    for offered in (["ocpp0.1"], None):
        async with connect(url, subprotocols=offered, open_timeout=5) as refused:  # type: ignore[arg-type]
            assert refused.subprotocol is None
            assert refused.response.headers.get("Sec-WebSocket-Protocol") is None
            await asyncio.wait_for(refused.wait_closed(), 5)
            assert refused.close_code == 1002
        assert not csms.system.registry.is_connected("CP88")
    async with connect(url, subprotocols=["ocpp0.1", "ocpp1.6"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp1.6"
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "ocpp1.6"
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None  # no compression
