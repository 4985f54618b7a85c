"""OCPI commands (START_SESSION, STOP_SESSION, UNLOCK_CONNECTOR) end to end, one test per row
of MOBI.E's tables 16 to 22 (/work/shared/mobie-commands.md).

Everything runs over real sockets on 127.0.0.1: the independent eMSP peer (extrawest-ocpi, in
its own venv) registers with our CPO and POSTs the command with a ``response_url`` pointing
back at itself; a simulated OCPP 1.6 station (charger_sim) answers the way the row needs;
the CommandResult arrives at the peer. Every CommandResponse and CommandResult is checked
with tests/ocpi_checks.py and compared exactly (result, timeout, message).

``command_timeout`` is 2 s so that the rows that wait for a timeout finish fast. Each test
has its own central system (and database); the peers' processes are shared by the module
(they register again with every new central system, and act through that newest
registration), which keeps the file within about a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import pytest_asyncio

from charger_sim import Behaviour, Station
from tests import ocpi_checks as checks
from tests.conftest import Running, start_system, station_body
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = 2  # ocpi.command_timeout, seconds
WAIT = TIMEOUT + 6.0  # upper bound for any CommandResult to arrive
STATION = "CMD1"
LOCATION = "LOC-CMD1"
EVSE1 = "LOC-CMD1-01"
TOKEN: dict[str, Any] = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "04ABBE2A266581",
    "type": "RFID",
    "contract_id": "PT-EMS-C-12345678-X",
    "visual_number": "1234-5678",
    "issuer": "Test eMSP",
    "valid": True,
    "whitelist": "ALWAYS",
    "last_updated": "2026-01-01T00:00:00Z",
}
# another user of the same eMSP
OTHER_USER = {**TOKEN, "uid": "04FFEE0011223344", "contract_id": "PT-EMS-C-87654321-Y"}

# MOBI.E's messages, as they wrote them
START_OFFLINE = "The requested charging station is currently offline."
TOKEN_INVALID = "The requested token is invalid."
NO_EVSE = "The requested EVSE UID does not exist in the location."
NO_ACK = "WARNING! Original ack not received."
NOT_STARTED = "The charging station has not confirmed that it started the transaction."
USER_OCCUPIED = "The current user has an active transaction on the EVSE."
INOPERATIVE = "The requested EVSE is out of service."
OCCUPIED = "The EVSE is currently occupied."
SESSION_OFFLINE = "The requested session is currently offline."
NOT_OWNED = "The requested session is not owned by the requesting party."
NOT_ACTIVE = "The requested session is no longer active."
NOT_STOPPED = "The charging station has not confirmed that it stopped the transaction."
STOP_REJECTED = "The charging station has rejected the request."
UNLOCK_OFFLINE = "Impossible to perform the requested command as the charging station is offline."
ENDED_AT = "Warning: the charging session had ended at {}"
NO_PARTY_SESSION = "There is no valid session owned by the EMSP on the charging station"


def text(message: str) -> list[dict[str, str]]:
    return [{"language": "en", "text": message}]


def response(result: str, message: str | None = None) -> dict[str, Any]:
    """The CommandResponse we expect, exactly."""
    expected: dict[str, Any] = {"result": result, "timeout": TIMEOUT}
    if message is not None:
        expected["message"] = text(message)
    return expected


def outcome(result: str, message: str | None = None) -> dict[str, Any]:
    """The CommandResult we expect, exactly."""
    expected: dict[str, Any] = {"result": result}
    if message is not None:
        expected["message"] = text(message)
    return expected


def ocpi_ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def sim(**kw: Any) -> Behaviour:
    return Behaviour(auto_heartbeat=False, auto_meter_values=False, step_delay=0.01, **kw)


async def token_a(cpo: Running, grant: dict[str, Any]) -> tuple[str, str]:
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    return body["versions_url"], body["token"]


async def register(cpo: Running, peer: EmspPeer) -> None:
    versions_url, a = await token_a(cpo, peer.grant)
    result = await peer.register_with(versions_url, a)
    assert result["ok"], result


async def send(
    peer: EmspPeer, command: str, body: dict[str, Any], **kw: Any
) -> tuple[dict[str, Any], str]:
    """POST a command from the peer; returns (checked CommandResponse, the peer's uid)."""
    started = asyncio.get_running_loop().time()
    sent = await peer.send_command(command, body, **kw)
    SENT_AT[sent["uid"]] = started
    answer = sent["exchange"]["response"]
    assert answer["status"] == 200, answer
    envelope = answer["json"]
    checks.check_envelope(envelope, False, kind="command_response")
    assert envelope["status_code"] == 1000, envelope
    data = envelope["data"]
    checks.check_command_response(data)
    assert not sent["validation"], sent["validation"]  # the library's model agrees too
    return data, sent["uid"]


async def send_raw(
    peer: EmspPeer, command: str, body: dict[str, Any], **kw: Any
) -> tuple[int, dict[str, Any]]:
    """POST a command without the peer's own validation; returns (HTTP status, envelope)."""
    sent = await peer.send_command(command, body, validate=False, **kw)
    answer = sent["exchange"]["response"]
    return answer["status"], answer["json"]


SENT_AT: dict[str, float] = {}  # the peer's command uid -> when the test sent it (loop time)


async def result_of(
    peer: EmspPeer, uid: str, *, timed_out: bool | None = None, timeout: float = WAIT
) -> dict[str, Any]:
    """The CommandResult POSTed to the command's response_url (as sent, checked).
    ``timed_out``: the row's "timeout passed" column; True: it came no sooner than the
    command's timeout; False: well before it."""
    entry = await peer.wait_for_command_result(uid, timeout=timeout)
    raw = entry["raw"]
    checks.check_command_result(raw)
    if timed_out is not None:
        elapsed = asyncio.get_running_loop().time() - SENT_AT[uid]
        assert (elapsed >= TIMEOUT) if timed_out else (elapsed < TIMEOUT), (raw, elapsed)
    return raw


async def results(peer: EmspPeer, uid: str) -> list[dict[str, Any]]:
    return [r["raw"] for r in (await peer.command_results())[uid]["results"]]


def calls(st: Station, action: str) -> list[dict[str, Any]]:
    """The payloads of ``action`` the station received from the central system."""
    return [payload for name, payload in st.calls_received if name == action]


async def eventually(
    probe: Callable[[], Any], what: str, timeout: float = 5.0, interval: float = 0.05
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


async def transactions(cpo: Running, **query: str) -> list[dict[str, Any]]:
    status, body = await cpo.api.get("/api/v1/transactions", params=query)
    assert status == 200, body
    return body["items"]


async def admin_commands(cpo: Running) -> list[dict[str, Any]]:
    status, body = await cpo.api.get("/api/v1/ocpi/commands")
    assert status == 200, body
    return body["items"]


async def station_call_ended(cpo: Running, action: str, outcome: str) -> dict[str, Any]:
    """Wait for csms's log of calls to stations to show the OCPI command's ``action``
    finished with ``outcome`` (ok, timeout, ...)."""

    async def probe() -> dict[str, Any] | None:
        status, body = await cpo.api.get("/api/v1/commands")
        assert status == 200, body
        for item in body["items"]:
            if item["action"] == action and item["origin"].startswith("ocpi:"):
                return item if item["outcome"] == outcome else None
        return None

    return await eventually(probe, f"{action} ended with {outcome}", timeout=WAIT)


async def offline(cpo: Running, st: Station) -> None:
    """Disconnect the simulator and wait until the central system has seen it go."""
    await st.disconnect()

    async def gone() -> bool:
        return not (await cpo.api.get(f"/api/v1/stations/{st.id}"))[1]["connected"]

    await eventually(gone, f"{st.id} seen offline")


def start_body(token: dict[str, Any] | None = None, evse: str = EVSE1, **kw: Any) -> dict[str, Any]:
    return {"token": token or TOKEN, "location_id": LOCATION, "evse_uid": evse, **kw}


def unlock_body(evse: str = EVSE1) -> dict[str, Any]:
    return {"location_id": LOCATION, "evse_uid": evse, "connector_id": "1"}


class Scene:
    """A central system with the OCPI bridge, the peer (PT/EMS) registered with it, station
    CMD1 (2 connectors) defined and TOKEN and OTHER_USER pushed by the peer."""

    def __init__(self, cpo: Running, peer: EmspPeer) -> None:
        self.cpo = cpo
        self.peer = peer
        self.stations: list[Station] = []

    async def station(
        self, station_id: str = STATION, connectors: int = 2, **behaviour: Any
    ) -> Station:
        st = Station(station_id, self.cpo.ocpp_url, connectors, behaviour=sim(**behaviour))
        self.stations.append(st)
        await st.connect()
        await st.boot_and_report()
        return st

    async def close(self) -> None:
        for st in self.stations:
            with contextlib.suppress(Exception):
                if st.connected:
                    await st.wait_idle(timeout=3)
            with contextlib.suppress(Exception):
                await st.disconnect()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ems() -> AsyncIterator[EmspPeer]:
    """The eMSP PT/EMS."""
    try:
        async with EmspPeer(party_id="EMS", country_code="PT") as peer:
            yield peer
    except PeerVenvMissing as e:
        pytest.fail(str(e))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def oth() -> AsyncIterator[EmspPeer]:
    """Another eMSP, PT/OTH."""
    try:
        async with EmspPeer(party_id="OTH", country_code="PT") as peer:
            yield peer
    except PeerVenvMissing as e:
        pytest.fail(str(e))


@pytest_asyncio.fixture(loop_scope="module")
async def scene(tmp_path: Path, ems: EmspPeer) -> AsyncIterator[Scene]:
    system, session, cpo = await start_system(tmp_path, ocpi={"command_timeout": TIMEOUT})
    scene = Scene(cpo, ems)
    try:
        await register(cpo, ems)
        await cpo.define_station(STATION)
        for token in (TOKEN, OTHER_USER):
            assert (await ems.push_token(token))["ok"]
        yield scene
    finally:
        await scene.close()
        await session.close()
        await system.stop()


async def charging(st: Station, tag: str, connector: int = 1) -> int:
    """An active transaction started at the station (as if the user swiped the card)."""
    answer = await st.start_charging(connector, tag)
    assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
    return int(answer["transactionId"])


async def finished(st: Station, tag: str, stopped: datetime, connector: int = 1) -> int:
    """A finished one-hour transaction of ``tag`` that stopped at ``stopped``."""
    answer = await st.start_transaction(connector, tag, timestamp=stopped - timedelta(hours=1))
    assert answer is not None and answer["idTagInfo"]["status"] == "Accepted", answer
    tx = int(answer["transactionId"])
    await st.stop_transaction(tx, reason="Local", timestamp=stopped)
    return tx


# =============================================================== table 16: START_SESSION response


async def test_table16_row1_start_accepted(scene: Scene) -> None:
    await scene.station()
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")


async def test_table16_row2_station_offline_whatever_the_token_and_evse(scene: Scene) -> None:
    st = await scene.station()
    await offline(scene.cpo, st)
    unknown = {**TOKEN, "uid": "NEVERPUSHED"}
    for body in (start_body(), start_body(unknown), start_body(evse="LOC-CMD1-99")):
        answer, uid = await send(scene.peer, "START_SESSION", body)
        assert answer == response("REJECTED", START_OFFLINE), body
    assert calls(st, "RemoteStartTransaction") == []
    assert await results(scene.peer, uid) == []  # a refused command has no CommandResult


async def test_table16_row3_token_invalid_whatever_the_evse(scene: Scene) -> None:
    st = await scene.station()
    unknown = {**TOKEN, "uid": "NEVERPUSHED"}
    for body in (start_body(unknown), start_body(unknown, evse="LOC-CMD1-99")):
        answer, _ = await send(scene.peer, "START_SESSION", body)
        assert answer == response("REJECTED", TOKEN_INVALID), body
    assert calls(st, "RemoteStartTransaction") == []


async def test_table16_row4_evse_not_in_the_location(scene: Scene) -> None:
    st = await scene.station()
    answer, _ = await send(scene.peer, "START_SESSION", start_body(evse="LOC-CMD1-99"))
    assert answer == response("REJECTED", NO_EVSE)
    assert calls(st, "RemoteStartTransaction") == []


# ================================================================ table 17: START_SESSION result


async def test_table17_row1_start_accepted_after_start_transaction(scene: Scene) -> None:
    st = await scene.station(remote_start="accept")
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("ACCEPTED")
    [tx] = await transactions(scene.cpo)
    assert tx["active"] and tx["id_tag"] == TOKEN["uid"] and tx["tag_owner"] == "PT/EMS"
    [cmd] = await admin_commands(scene.cpo)
    assert cmd["station_answer"] == "Accepted" and cmd["transaction_id"] == tx["id"]
    # ACCEPTED only once the StartTransaction.req had arrived
    assert cmd["decided_at"] >= tx["start_received_at"][:19] + "Z"
    assert calls(st, "RemoteStartTransaction") == [{"connectorId": 1, "idTag": TOKEN["uid"]}]


async def test_table17_row2_start_accepted_with_lost_ack_warning(scene: Scene) -> None:
    await scene.station(remote_start="lost_conf")
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("ACCEPTED", NO_ACK)
    [tx] = await transactions(scene.cpo)
    assert tx["active"]
    # the RemoteStart call then times out without changing the result, sent once
    await station_call_ended(scene.cpo, "RemoteStartTransaction", "timeout")
    await asyncio.sleep(0.2)
    assert await results(scene.peer, uid) == [outcome("ACCEPTED", NO_ACK)]
    [cmd] = await admin_commands(scene.cpo)
    assert cmd["station_answer"] is None and cmd["transaction_id"] == tx["id"]


async def test_table17_row3_accepted_but_no_transaction_fails_at_timeout(scene: Scene) -> None:
    await scene.station(remote_start="accept_no_tx")
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=True) == outcome("FAILED", NOT_STARTED)
    assert await transactions(scene.cpo) == []


async def test_table17_row4_rejected_user_already_charging_on_the_evse(scene: Scene) -> None:
    st = await scene.station(remote_start="accept")
    await charging(st, TOKEN["uid"])
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")  # the EVSE's status is not considered
    assert await result_of(scene.peer, uid, timed_out=False) == outcome(
        "EVSE_OCCUPIED", USER_OCCUPIED
    )
    [cmd] = await admin_commands(scene.cpo)
    assert cmd["station_answer"] == "Rejected"


async def test_table17_row5_rejected_evse_out_of_service(scene: Scene) -> None:
    st = await scene.station(remote_start="accept")
    await st.status(1, "Faulted", error_code="GroundFailure")
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")  # the EVSE's status is not considered
    assert await result_of(scene.peer, uid, timed_out=False) == outcome(
        "EVSE_INOPERATIVE", INOPERATIVE
    )


async def test_table17_row6_rejected_another_user_charging_on_the_evse(scene: Scene) -> None:
    st = await scene.station(remote_start="accept")
    await charging(st, OTHER_USER["uid"])
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("EVSE_OCCUPIED", OCCUPIED)


async def test_table17_row7_no_answer_no_transaction_timeout(scene: Scene) -> None:
    await scene.station(remote_start="ignore")
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=True) == outcome("TIMEOUT")
    assert await transactions(scene.cpo) == []


async def test_table17_rejected_matching_no_row_is_rejected(scene: Scene) -> None:
    await scene.station(remote_start="reject")  # a free, working EVSE
    answer, uid = await send(scene.peer, "START_SESSION", start_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("REJECTED")


# ================================================================ table 18: STOP_SESSION response


async def test_table18_row1_stop_accepted(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    pulled = await scene.peer.pull("sessions", date_from="2000-01-01T00:00:00Z")
    [session] = pulled["objects"]
    assert session["id"] == str(tx) and session["status"] == "ACTIVE"
    uid = await stop_after_the_answer(scene, st, session["id"])
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
    assert calls(st, "RemoteStopTransaction") == [{"transactionId": tx}]


async def test_table18_row2_station_offline(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    await offline(scene.cpo, st)
    answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("REJECTED", SESSION_OFFLINE)


async def stop_by_another_party(
    scene: Scene, oth: EmspPeer, *, stop_it: bool, station_online: bool = True
) -> dict[str, Any]:
    """A session of PT/EMS's user; PT/OTH (a second eMSP, registered too) asks to stop it."""
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    if stop_it:
        await st.stop_charging(1)
    if not station_online:
        await offline(scene.cpo, st)
    await register(scene.cpo, oth)
    answer, _ = await send(oth, "STOP_SESSION", {"session_id": str(tx)})
    assert calls(st, "RemoteStopTransaction") == []
    [row] = await transactions(scene.cpo)
    assert row["active"] is not stop_it
    return answer


async def test_table18_row3_active_session_of_another_party(scene: Scene, oth: EmspPeer) -> None:
    answer = await stop_by_another_party(scene, oth, stop_it=False)
    assert answer == response("REJECTED", NOT_OWNED)


async def test_table18_row3_active_session_of_another_party_station_offline(
    scene: Scene, oth: EmspPeer
) -> None:
    answer = await stop_by_another_party(scene, oth, stop_it=False, station_online=False)
    assert answer == response("REJECTED", NOT_OWNED)


async def test_table18_row4_session_no_longer_active(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    await st.stop_charging(1)
    answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("REJECTED", NOT_ACTIVE)
    await offline(scene.cpo, st)  # station online: *
    answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("REJECTED", NOT_ACTIVE)


async def test_table18_row5_finished_session_of_another_party(scene: Scene, oth: EmspPeer) -> None:
    answer = await stop_by_another_party(scene, oth, stop_it=True)
    assert answer == response("REJECTED", NOT_OWNED)


async def test_table18_row6_unknown_session(scene: Scene) -> None:
    st = await scene.station()
    for session_id in ("424242", "NOT-A-SESSION"):
        answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": session_id})
        assert answer == response("UNKNOWN_SESSION"), session_id
    await offline(scene.cpo, st)  # station online: *
    answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": "424242"})
    assert answer == response("UNKNOWN_SESSION")


async def test_stop_session_station_not_remote_capable_is_not_supported(scene: Scene) -> None:
    body = station_body(STATION)
    for evse in body["evses"]:
        evse["capabilities"] = ["RFID_READER"]
    status, answer = await scene.cpo.api.put(f"/api/v1/stations/{STATION}", body)
    assert status == 200, answer
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    answer, _ = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("NOT_SUPPORTED")
    assert calls(st, "RemoteStopTransaction") == []


# ================================================================= table 19: STOP_SESSION result


async def stop_scene(scene: Scene, **behaviour: Any) -> tuple[Station, int, str]:
    st = await scene.station(**behaviour)
    tx = await charging(st, TOKEN["uid"])
    answer, uid = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("ACCEPTED")
    return st, tx, uid


async def stopped_reason(scene: Scene, tx: int) -> str | None:
    status, body = await scene.cpo.api.get(f"/api/v1/transactions/{tx}")
    assert status == 200, body
    assert not body["active"]
    return body["stop_reason"]


async def stored_answer(cpo: Running, command: str) -> dict[str, Any]:
    """The newest ``command`` in the operator API, once the station's answer is stored."""

    async def probe() -> dict[str, Any] | None:
        for item in await admin_commands(cpo):
            if item["command"] == command:
                return item if item["station_answer"] else None
        return None

    return await eventually(probe, f"the station's answer to {command} stored")


async def stop_after_the_answer(
    scene: Scene, st: Station, session_id: str, reason: str = "Remote"
) -> str:
    """STOP_SESSION to a station that answers Accepted and stops the transaction a moment
    later (once the central system has stored its answer), as real chargers do; returns
    the peer's uid of the command."""
    st.on_call("RemoteStopTransaction", lambda payload: {"status": "Accepted"})
    answer, uid = await send(scene.peer, "STOP_SESSION", {"session_id": session_id})
    assert answer == response("ACCEPTED")
    await stored_answer(scene.cpo, "STOP_SESSION")
    await st.stop_charging(1, reason)
    return uid


async def test_table19_row1_stopped_remotely(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    uid = await stop_after_the_answer(scene, st, str(tx), "Remote")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("ACCEPTED")
    assert await stopped_reason(scene, tx) == "Remote"


async def test_table19_row2_stopped_with_another_reason(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    uid = await stop_after_the_answer(scene, st, str(tx), "EVDisconnected")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome(
        "ACCEPTED", "EVDisconnected"
    )
    assert await stopped_reason(scene, tx) == "EVDisconnected"


async def test_table19_rows1_2_stop_right_after_the_answer_is_not_reported_as_ack_lost(
    scene: Scene,
) -> None:
    """Regression (was a bug).
    a station that answers RemoteStopTransaction.conf Accepted and sends its
    StopTransaction.req right after it (charger_sim's normal behaviour; many chargers do
    the same) usually gets the CommandResult ACCEPTED "WARNING! Original ack not received.
    <reason>" (table 19, row 3) instead of row 1 (ACCEPTED, no message) or row 2 (ACCEPTED,
    the reason). The answer did arrive first, and is stored (station_answer "Accepted"),
    but CommandService._call writes it only after csms's CommandPort.send has returned
    (itself after a store write), while the TransactionStopped event is evaluated meanwhile
    and finds ``conf`` still NULL. A race, so four stops in a row."""
    st = await scene.station(remote_stop="accept")
    got, expected = [], []
    for reason in ("Remote", "EVDisconnected", "Remote", "EVDisconnected"):
        st.behaviour.remote_stop_reason = reason
        tx = await charging(st, TOKEN["uid"])
        answer, uid = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
        assert answer == response("ACCEPTED")
        got.append(await result_of(scene.peer, uid, timed_out=False))
        expected.append(outcome("ACCEPTED", None if reason == "Remote" else reason))
        assert await stopped_reason(scene, tx) == reason
        await st.wait_idle()

    async def all_answers() -> list[str | None] | None:
        answers = [row["station_answer"] for row in await admin_commands(scene.cpo)]
        return answers if all(answers) else None

    assert await eventually(all_answers, "answers stored") == ["Accepted"] * 4  # all received
    assert got == expected


async def test_table19_row3_stopped_with_lost_ack_warning_and_reason(scene: Scene) -> None:
    _, tx, uid = await stop_scene(scene, remote_stop="lost_conf", remote_stop_reason="Remote")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome(
        "ACCEPTED", f"{NO_ACK} Remote"
    )
    assert await stopped_reason(scene, tx) == "Remote"


async def test_table19_row4_accepted_but_not_stopped_fails_at_timeout(scene: Scene) -> None:
    st = await scene.station()
    tx = await charging(st, TOKEN["uid"])
    # the station says Accepted, then never sends StopTransaction
    st.on_call("RemoteStopTransaction", lambda payload: {"status": "Accepted"})
    answer, uid = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx)})
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid, timed_out=True) == outcome("FAILED", NOT_STOPPED)
    [still] = await transactions(scene.cpo, active="true")
    assert still["id"] == tx


async def test_table19_row5_rejected_by_the_station(scene: Scene) -> None:
    _, tx, uid = await stop_scene(scene, remote_stop="reject")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("FAILED", STOP_REJECTED)
    [still] = await transactions(scene.cpo, active="true")
    assert still["id"] == tx


async def test_table19_row6_no_answer_no_stop_timeout(scene: Scene) -> None:
    _, tx, uid = await stop_scene(scene, remote_stop="ignore")
    assert await result_of(scene.peer, uid, timed_out=True) == outcome("TIMEOUT")
    [still] = await transactions(scene.cpo, active="true")
    assert still["id"] == tx


# ============================================================ table 21: UNLOCK_CONNECTOR response


async def test_table21_row1_party_user_charging_unlock_accepted(scene: Scene) -> None:
    st = await scene.station()
    await charging(st, TOKEN["uid"])
    answer, uid = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
    assert calls(st, "UnlockConnector") == [{"connectorId": 1}]


async def test_table21_row2_party_user_charging_station_offline(scene: Scene) -> None:
    st = await scene.station()
    await charging(st, TOKEN["uid"])
    await offline(scene.cpo, st)
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", UNLOCK_OFFLINE)


async def test_table21_row3_party_session_ended_recently_accepted_with_warning(
    scene: Scene,
) -> None:
    st = await scene.station()
    stopped = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    await finished(st, TOKEN["uid"], stopped)
    answer, uid = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("ACCEPTED", ENDED_AT.format(ocpi_ts(stopped)))
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")


async def test_table21_row4_party_session_ended_recently_station_offline(scene: Scene) -> None:
    st = await scene.station()
    stopped = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=23)
    await finished(st, TOKEN["uid"], stopped)
    await offline(scene.cpo, st)
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    warning = ENDED_AT.format(ocpi_ts(stopped))
    assert answer == response("REJECTED", f"{UNLOCK_OFFLINE} {warning}")


async def test_table21_row5_no_session_of_the_party(scene: Scene) -> None:
    st = await scene.station()
    # nothing ever happened on connector 1
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", NO_PARTY_SESSION)
    # the party's last session ended more than 24 h ago
    await finished(st, TOKEN["uid"], datetime.now(UTC) - timedelta(hours=25))
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", NO_PARTY_SESSION)
    # a local (non-OCPI) user's session is active on it
    await scene.cpo.put_tag("LOCALTAG")
    await charging(st, "LOCALTAG")
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", NO_PARTY_SESSION)
    # the station offline: *
    await offline(scene.cpo, st)
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", NO_PARTY_SESSION)
    assert calls(st, "UnlockConnector") == []


async def test_table21_row5_last_user_of_another_party(scene: Scene) -> None:
    st = await scene.station()
    await scene.cpo.put_tag("LOCALTAG")
    await finished(st, "LOCALTAG", datetime.now(UTC) - timedelta(minutes=10))
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("REJECTED", NO_PARTY_SESSION)


async def test_table21_row5_another_user_charging_after_the_partys_session(
    scene: Scene,
) -> None:
    """Regression (was a bug).
    the party's user finished on connector 1 an hour ago, and a local user is now
    charging there. Table 21: there is no active session of the party's user, and the
    connector's last user is not the party's (it is the one charging now), so: REJECTED
    "There is no valid session owned by the EMSP on the charging station". commands.py
    only looks at the last *finished* transaction when someone else is charging, answers
    ACCEPTED "Warning: the charging session had ended at ..." and sends UnlockConnector,
    which ends the other user's session."""
    st = await scene.station()
    await finished(st, TOKEN["uid"], datetime.now(UTC) - timedelta(hours=1))
    await scene.cpo.put_tag("LOCALTAG")
    local = await charging(st, "LOCALTAG")
    answer, _ = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    await asyncio.sleep(0.3)  # let what the command triggers play out before judging
    await st.wait_idle()
    unlocks = calls(st, "UnlockConnector")
    active = [t["id"] for t in await transactions(scene.cpo, active="true")]
    assert answer == response("REJECTED", NO_PARTY_SESSION)
    assert unlocks == [] and active == [local]


# ============================================================== table 22: UNLOCK_CONNECTOR result


async def unlock_scene(scene: Scene, unlock: str) -> tuple[Station, str]:
    st = await scene.station(unlock=unlock)
    await charging(st, TOKEN["uid"])
    answer, uid = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert answer == response("ACCEPTED")
    return st, uid


async def test_table22_row1_unlocked(scene: Scene) -> None:
    _, uid = await unlock_scene(scene, "Unlocked")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("ACCEPTED")
    [cmd] = await admin_commands(scene.cpo)
    assert cmd["station_answer"] == "Unlocked"


async def test_table22_row2_unlock_failed(scene: Scene) -> None:
    _, uid = await unlock_scene(scene, "UnlockFailed")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("FAILED")


async def test_table22_row3_unlock_not_supported(scene: Scene) -> None:
    _, uid = await unlock_scene(scene, "NotSupported")
    assert await result_of(scene.peer, uid, timed_out=False) == outcome("NOT_SUPPORTED")


async def test_table22_row4_no_answer_timeout(scene: Scene) -> None:
    _, uid = await unlock_scene(scene, "ignore")
    assert await result_of(scene.peer, uid, timed_out=True) == outcome("TIMEOUT")


# ================================================================================ the rest


async def test_unknown_command_is_404(scene: Scene) -> None:
    status, envelope = await send_raw(scene.peer, "BOIL_THE_KETTLE", {})
    assert status == 404
    checks.check_envelope(envelope, None)
    assert envelope["status_code"] == 2000 and "BOIL_THE_KETTLE" in envelope["status_message"]


async def test_reserve_now_is_answered_to_an_emsp(scene: Scene) -> None:
    """This peer is an eMSP, not MOBI.E: RESERVE_NOW is handled (issue 16, item 4; MOBI.E
    keeps NOT_SUPPORTED, and the whole flow is in tests/test_reservations.py)."""
    body = {
        "token": TOKEN,
        "expiry_date": "2030-01-01T00:00:00Z",
        "reservation_id": "R1",
        "location_id": LOCATION,
        "evse_uid": EVSE1,
    }
    answer, _ = await send(scene.peer, "RESERVE_NOW", body)
    assert answer == response("REJECTED", START_OFFLINE)  # (no station connected)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.pop("evse_uid"), "evse_uid"),
        (lambda b: b.update(token={**TOKEN, "whitelist": "SOMETIMES"}), "token.whitelist"),
        (lambda b: b.update(response_url="not a url"), "response_url"),
    ],
    ids=["missing_evse_uid", "token_bad_whitelist", "response_url_not_a_url"],
)
async def test_malformed_start_session_is_2001_naming_the_field(
    scene: Scene, change: Callable[[dict[str, Any]], Any], field: str
) -> None:
    st = await scene.station()
    body = start_body()
    change(body)
    status, envelope = await send_raw(scene.peer, "START_SESSION", body)
    checks.check_envelope(envelope, None)
    assert envelope["status_code"] == 2001, envelope
    assert field in envelope["status_message"], envelope
    assert status in (200, 400)
    assert "data" not in envelope or envelope["data"] is None
    assert await admin_commands(scene.cpo) == []
    assert calls(st, "RemoteStartTransaction") == []


async def test_token_of_another_party_is_invalid(scene: Scene, oth: EmspPeer) -> None:
    st = await scene.station()
    theirs = {**TOKEN, "party_id": "OTH", "uid": "0A0B0C0D", "contract_id": "PT-OTH-C-1"}
    await register(scene.cpo, oth)
    assert (await oth.push_token(theirs))["ok"]
    answer, _ = await send(scene.peer, "START_SESSION", start_body(theirs))
    assert answer == response("REJECTED", TOKEN_INVALID)
    # nor may EMS claim to be OTH in the routing headers
    headers = {"OCPI-from-party-id": "OTH"}
    _, envelope = await send_raw(scene.peer, "START_SESSION", start_body(theirs), headers=headers)
    assert envelope["status_code"] == 2001 and "OTH" in envelope["status_message"], envelope
    # the owner may use it
    answer, uid = await send(oth, "START_SESSION", start_body(theirs))
    assert answer == response("ACCEPTED")
    assert await result_of(oth, uid) == outcome("ACCEPTED")
    [tx] = await transactions(scene.cpo)
    assert tx["tag_owner"] == "PT/OTH"
    assert calls(st, "RemoteStartTransaction") == [{"connectorId": 1, "idTag": theirs["uid"]}]


@pytest.mark.parametrize(
    "change",
    [
        {"contract_id": "PT-EMS-C-00000000-Z"},
        {"whitelist": "ALLOWED"},
        {"visual_number": "9999-0000"},
        {"valid": False},
        {"language": "pt"},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_rfid_token_differing_from_the_stored_one_is_rejected(
    scene: Scene, change: dict[str, Any]
) -> None:
    st = await scene.station()
    answer, _ = await send(scene.peer, "START_SESSION", start_body({**TOKEN, **change}))
    assert answer == response("REJECTED", TOKEN_INVALID)
    assert calls(st, "RemoteStartTransaction") == []


async def test_token_cistrings_in_another_case_are_the_same_token(scene: Scene) -> None:
    """Regression (was a bug).
    OCPI's CiStrings are case-insensitive, and the CPO treats them so elsewhere
    (an OCPP Authorize of the uid in lower case is Accepted; a token PUT compares the URL's
    segments with the body's case-insensitively; this very check compares country_code and
    party_id case-insensitively). But CommandService._token_valid looks the token up by its
    uid case-sensitively and compares the RFID token's CiString properties (contract_id)
    case-sensitively: the stored token sent with its uid or contract_id in lower case (as
    extrawest-ocpi's own client sends CiStrings) is REJECTED "The requested token is
    invalid." although it is the stored token, unchanged."""
    await scene.station()
    evse2 = "LOC-CMD1-02"
    party = {**TOKEN, "country_code": "pt", "party_id": "ems"}
    answer, _ = await send(scene.peer, "START_SESSION", start_body(party))
    assert answer == response("ACCEPTED")
    answers = []
    for changed in ({"uid": TOKEN["uid"].lower()}, {"contract_id": TOKEN["contract_id"].lower()}):
        body = start_body({**TOKEN, **changed}, evse=evse2)
        answers.append((await send(scene.peer, "START_SESSION", body))[0])
    assert answers == [response("ACCEPTED")] * 2


async def test_stored_token_no_longer_valid_is_rejected(scene: Scene) -> None:
    await scene.station()
    blocked = {**TOKEN, "valid": False, "last_updated": "2026-02-01T00:00:00Z"}
    assert (await scene.peer.push_token(blocked))["ok"]
    answer, _ = await send(scene.peer, "START_SESSION", start_body(blocked))
    assert answer == response("REJECTED", TOKEN_INVALID)


async def test_app_user_token_pushed_seconds_before_starts(scene: Scene) -> None:
    """An APP_USER token (whitelist NEVER: the eMSP authorizes it itself) created just
    before the command; only RFID tokens must match the stored one field by field."""
    await scene.station()
    app = {**TOKEN, "uid": "APP-USER-1", "type": "APP_USER", "whitelist": "NEVER"}
    assert (await scene.peer.push_token(app))["ok"]
    answer, uid = await send(scene.peer, "START_SESSION", start_body(app))
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
    [tx] = await transactions(scene.cpo)
    assert tx["id_tag"] == "APP-USER-1" and tx["id_tag_status"] == "Accepted"


async def test_started_session_and_cdr_carry_the_authorization_reference(scene: Scene) -> None:
    st = await scene.station()
    reference = str(uuid.uuid4())
    answer, uid = await send(
        scene.peer, "START_SESSION", start_body(authorization_reference=reference)
    )
    assert answer == response("ACCEPTED")
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
    [tx] = await transactions(scene.cpo)
    pulled = await scene.peer.pull("sessions", date_from="2000-01-01T00:00:00Z")
    assert pulled["ok"] and not pulled["validation_errors"], pulled["validation_errors"]
    [session] = pulled["objects"]
    checks.check_session(session)
    assert session["id"] == str(tx["id"]) and session["status"] == "ACTIVE"
    assert session["auth_method"] == "COMMAND"
    assert session["authorization_reference"] == reference
    # stopped by a STOP_SESSION; the CDR carries it too
    uid = await stop_after_the_answer(scene, st, session["id"])
    assert await result_of(scene.peer, uid) == outcome("ACCEPTED")

    async def cdr() -> Any:
        objects = (await scene.peer.pull("cdrs"))["objects"]
        return objects[0] if objects else None

    found = await eventually(cdr, "the CDR")
    checks.check_cdr(found)
    assert found["session_id"] == str(tx["id"])
    assert found["auth_method"] == "COMMAND"
    assert found["authorization_reference"] == reference
    pulled = await scene.peer.pull("sessions", date_from="2000-01-01T00:00:00Z")
    [session] = pulled["objects"]
    assert session["status"] == "COMPLETED" and session["auth_method"] == "COMMAND"
    assert session["authorization_reference"] == reference
    assert st.active_transactions == 0


async def test_towards_mobie_a_commanded_session_and_its_cdr_are_whitelist(scene: Scene) -> None:
    """MOBI.E's profile (seed 001, Sessions and CDRs tables) fixes auth_method WHITELIST: in
    MOBI.E mode the hub gets the command's session as WHITELIST, with the command's
    authorization_reference; the eMSP that sent the command still sees COMMAND."""
    from tests.flaky_hub import FlakyHub
    from tests.test_push_faults import eventually as until
    from tests.test_push_faults import register as register_hub

    async with FlakyHub() as hub:
        await register_hub(hub, scene.cpo.http_url, scene.cpo.api)
        st = await scene.station()
        reference = str(uuid.uuid4())
        answer, uid = await send(
            scene.peer, "START_SESSION", start_body(authorization_reference=reference)
        )
        assert answer == response("ACCEPTED")
        assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
        [tx] = await transactions(scene.cpo)
        sid = str(tx["id"])
        await until(lambda: sid in hub.sessions)
        assert hub.sessions[sid]["auth_method"] == "WHITELIST"
        assert hub.sessions[sid]["authorization_reference"] == reference
        uid = await stop_after_the_answer(scene, st, sid)
        assert await result_of(scene.peer, uid) == outcome("ACCEPTED")
        await until(lambda: sid in hub.cdrs)
        assert hub.cdrs[sid]["auth_method"] == "WHITELIST"
        assert hub.cdrs[sid]["authorization_reference"] == reference
        assert hub.sessions[sid]["auth_method"] == "WHITELIST"
        [session] = (await scene.peer.pull("sessions", date_from="2000-01-01T00:00:00Z"))["objects"]
        assert session["auth_method"] == "COMMAND"


async def test_session_started_at_the_station_is_whitelist(scene: Scene) -> None:
    st = await scene.station()
    await charging(st, TOKEN["uid"])
    [session] = (await scene.peer.pull("sessions", date_from="2000-01-01T00:00:00Z"))["objects"]
    assert session["auth_method"] == "WHITELIST" and "authorization_reference" not in session


async def test_admin_api_lists_commands_with_response_answer_and_result(scene: Scene) -> None:
    st = await scene.station(unlock="UnlockFailed")
    start, start_uid = await send(scene.peer, "START_SESSION", start_body())
    assert await result_of(scene.peer, start_uid) == outcome("ACCEPTED")
    unlock, unlock_uid = await send(scene.peer, "UNLOCK_CONNECTOR", unlock_body())
    assert await result_of(scene.peer, unlock_uid) == outcome("FAILED")
    [tx] = await transactions(scene.cpo)
    stop_uid = await stop_after_the_answer(scene, st, str(tx["id"]))
    assert await result_of(scene.peer, stop_uid) == outcome("ACCEPTED")
    refused, _ = await send(scene.peer, "STOP_SESSION", {"session_id": str(tx["id"])})
    assert refused == response("REJECTED", NOT_ACTIVE)

    async def all_delivered() -> Any:
        items = await admin_commands(scene.cpo)
        return items if all(i["delivered_at"] for i in items[1:]) else None

    items = await eventually(all_delivered, "results delivered")
    by_command = [(i["command"], i["station_answer"]) for i in items]
    assert by_command == [  # newest first
        ("STOP_SESSION", None),
        ("STOP_SESSION", "Accepted"),
        ("UNLOCK_CONNECTOR", "UnlockFailed"),
        ("START_SESSION", "Accepted"),
    ]
    refused_row, stop_row, unlock_row, start_row = items
    assert start_row["response"] == start == response("ACCEPTED")
    assert start_row["result"] == outcome("ACCEPTED")
    assert start_row["request"]["token"]["uid"] == TOKEN["uid"]
    assert start_row["party"] == "PT/EMS" and start_row["station_id"] == STATION
    assert start_row["transaction_id"] == tx["id"] and start_row["connector_id"] == 1
    assert unlock_row["response"] == unlock and unlock_row["result"] == outcome("FAILED")
    assert stop_row["response"] == response("ACCEPTED")
    assert stop_row["result"] == outcome("ACCEPTED")
    assert stop_row["transaction_id"] == tx["id"]
    for row in (start_row, unlock_row, stop_row):
        assert row["delivery_attempts"] == 1 and row["last_error"] is None
        assert row["decided_at"] and row["delivered_at"]
    assert refused_row["response"] == refused and refused_row["result"] is None
    assert refused_row["delivered_at"] is None and refused_row["delivery_attempts"] == 0
    assert st.connectors[1].status == "Available"


async def test_result_is_retried_until_the_response_url_takes_it(scene: Scene) -> None:
    received: list[tuple[dict[str, Any], dict[str, str]]] = []

    async def command_result(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append((await request.json(), dict(request.headers)))
        if len(received) <= 2:
            return aiohttp.web.json_response({"oops": True}, status=500)
        return aiohttp.web.json_response(
            {"status_code": 1000, "timestamp": ocpi_ts(datetime.now(UTC))}
        )

    app = aiohttp.web.Application()
    app.router.add_post("/results/{uid}", command_result)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await scene.station(remote_start="reject")
        url = f"http://127.0.0.1:{port}/results/r1"
        answer, _ = await send(scene.peer, "START_SESSION", start_body(response_url=url))
        assert answer == response("ACCEPTED")

        async def three() -> bool:
            return len(received) >= 3

        await eventually(three, "three delivery attempts", timeout=10)
        await asyncio.sleep(0.3)
        assert len(received) == 3  # delivered: no more attempts
        for body, headers in received:
            assert body == outcome("REJECTED")
            checks.check_command_result(body)
            assert headers["Authorization"].startswith("Token ")
            assert headers["OCPI-from-party-id"] == "CPO"
            assert headers["OCPI-to-party-id"] == "EMS"
        [cmd] = await admin_commands(scene.cpo)
        assert cmd["delivery_attempts"] == 3 and cmd["delivered_at"] and cmd["last_error"] is None
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_start_session_survives_a_restart(tmp_path: Path, ems: EmspPeer) -> None:
    """The process stops after the command is ACCEPTED and the station answered, before the
    transaction starts; a new process on the same data directory still decides the result
    (when the station, reconnected, starts the transaction) and delivers it."""
    ports = {"ocpp__port": str(free_port()), "http__port": str(free_port())}
    ocpi = {"command_timeout": 10}  # the restart must fit in the command's timeout
    system, session, cpo = await start_system(tmp_path, ocpi=ocpi, **ports)
    behaviour = sim(remote_start="accept_no_tx", auto_reconnect=True, reconnect_delay=0.1)
    st = Station(STATION, cpo.ocpp_url, 2, behaviour=behaviour)
    try:
        await register(cpo, ems)
        await cpo.define_station(STATION)
        assert (await ems.push_token(TOKEN))["ok"]
        await st.connect()
        await st.boot_and_report()
        answer, uid = await send(ems, "START_SESSION", start_body())
        assert answer == {"result": "ACCEPTED", "timeout": 10}

        async def answered() -> bool:
            items = await admin_commands(cpo)
            return bool(items) and items[0]["station_answer"] == "Accepted"

        await eventually(answered, "the station's answer stored")
        await session.close()
        await system.stop()
        system, session, cpo = await start_system(tmp_path, ocpi=ocpi, **ports)

        async def reconnected() -> bool:
            _, station = await cpo.api.get(f"/api/v1/stations/{STATION}")
            return st.stats.connects == 2 and st.connected and station["connected"]

        await eventually(reconnected, "the station reconnected", timeout=8)
        assert await results(ems, uid) == []  # not decided yet
        await charging(st, TOKEN["uid"])  # the remote start's grant survived too
        assert await result_of(ems, uid) == outcome("ACCEPTED")
        [tx] = await transactions(cpo)
        assert tx["tag_owner"] == "PT/EMS" and tx["id_tag"] == TOKEN["uid"]

        async def delivered() -> dict[str, Any] | None:
            # the peer has the result before our record of its acknowledgement is committed
            [cmd] = await admin_commands(cpo)
            return cmd if cmd["delivered_at"] else None

        cmd = await eventually(delivered, "the delivery recorded")
        assert cmd["transaction_id"] == tx["id"]
        assert cmd["delivery_attempts"] == 1
    finally:
        await st.disconnect()
        await session.close()
        await system.stop()
