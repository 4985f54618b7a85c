"""Reservations (issue 16, item 4) end to end over real sockets: the simulator as the
station, the operator API and web interface, the flaky OCPI hub as MOBI.E (which keeps
NOT_SUPPORTED) and a second one registered as an eMSP (which gets RESERVE_NOW and
CANCEL_RESERVATION for real: CommandResponse, then CommandResult at its response_url)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from csms.clock import FakeClock
from csms.reservations import (
    ReserveRequest,
    effective_state,
    parse_reserve,
    state_after_answer,
)
from csms.usecases import Refused
from ocpi_bridge.reservations import cancel_response, reservation_result, reserve_response
from tests.conftest import Running, start_system
from tests.flaky_hub import FlakyHub
from tests.test_push_faults import eventually, register

OCPI = {
    "offline_after": 30,
    "session_update_interval": 1,
    "push_timeout": 0.5,
    "retry_max_seconds": 1,
    "command_timeout": 3,
}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def sim(station_id: str, url: str) -> Station:
    return Station(
        station_id,
        url,
        2,
        behaviour=Behaviour(
            auto_heartbeat=False, auto_meter_values=False, auto_reconnect=False, step_delay=0.02
        ),
    )


# ---------------------------------------------------------------------------- pure rules


def test_parse_reserve() -> None:
    body = {"connector_id": 1, "id_tag": "TAG1", "expiry_date": "2026-05-01T12:30:00Z"}
    assert parse_reserve(body, NOW) == ReserveRequest(1, "TAG1", NOW + timedelta(minutes=30))
    with_parent = parse_reserve({**body, "parent_id_tag": "P"}, NOW)
    assert with_parent.parent_id_tag == "P"
    bad: list[tuple[Any, str]] = [
        ([], "(body)"),
        ({**body, "extra": 1}, "extra"),
        ({**body, "connector_id": True}, "connector_id"),
        ({**body, "connector_id": -1}, "connector_id"),
        ({**body, "connector_id": "1"}, "connector_id"),
        ({**body, "id_tag": ""}, "id_tag"),
        ({**body, "id_tag": "X" * 21}, "id_tag"),
        ({**body, "id_tag": "a\nb"}, "id_tag"),
        ({**body, "parent_id_tag": 5}, "parent_id_tag"),
        ({**body, "expiry_date": "soon"}, "expiry_date"),
        ({**body, "expiry_date": "2026-05-01T11:00:00Z"}, "expiry_date"),  # past
        ({**body, "expiry_date": "2026-05-09T12:00:00Z"}, "expiry_date"),  # > 7 days
        ({k: v for k, v in body.items() if k != "id_tag"}, "id_tag"),
    ]
    for value, field in bad:
        with pytest.raises(Refused) as e:
            parse_reserve(value, NOW)
        assert e.value.status == 422
        assert field == "(body)" or e.value.fields[0]["field"] == field, (value, e.value.fields)


def test_states() -> None:
    later = NOW + timedelta(minutes=1)
    assert effective_state("accepted", later, NOW) == "accepted"
    assert effective_state("accepted", NOW, NOW) == "expired"
    assert effective_state("requested", NOW, later) == "expired"
    assert effective_state("used", NOW, later) == "used"  # only held ones expire
    assert effective_state("cancelled", NOW, later) == "cancelled"
    assert state_after_answer("Accepted") == "accepted"
    for other in ("Faulted", "Occupied", "Rejected", "Unavailable", "offline"):
        assert state_after_answer(other) == "rejected"


def test_ocpi_rules() -> None:
    assert reserve_response(True, True, True, True).result == "ACCEPTED"
    assert reserve_response(True, True, False, True).message is not None
    assert reserve_response(False, True, True, True).result == "REJECTED"
    assert reserve_response(True, False, True, True).result == "REJECTED"
    assert reserve_response(True, True, True, False).result == "REJECTED"
    assert cancel_response(True, True, True).result == "ACCEPTED"
    assert cancel_response(False, False, True).message == "The reservation is unknown."
    assert cancel_response(True, False, True).result == "REJECTED"
    assert cancel_response(True, True, False).result == "REJECTED"
    r = "RESERVE_NOW"
    assert reservation_result(r, None, False) is None
    expected = {
        (r, None, True): "TIMEOUT",
        (r, "timeout", False): "TIMEOUT",
        (r, "Accepted", False): "ACCEPTED",
        (r, "Occupied", False): "EVSE_OCCUPIED",
        (r, "Faulted", False): "EVSE_INOPERATIVE",
        (r, "Unavailable", False): "EVSE_INOPERATIVE",
        (r, "Rejected", False): "REJECTED",
        (r, "CallError:NotImplemented", False): "FAILED",
        (r, "offline", False): "FAILED",
        ("CANCEL_RESERVATION", "Accepted", False): "ACCEPTED",
        ("CANCEL_RESERVATION", "Rejected", False): "REJECTED",
        ("CANCEL_RESERVATION", "Occupied", False): "FAILED",
    }
    for (command, answer, timed_out), result in expected.items():
        decision = reservation_result(command, answer, timed_out)
        assert decision is not None and decision.result == result, (command, answer)


# ---------------------------------------------------------------------------- API


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Running, FlakyHub, FakeClock]]:
    # csms's clock starts at the real time (the simulator reads expiries with its own)
    clock = FakeClock(datetime.now(UTC))
    system, session, cpo = await start_system(tmp_path, clock=clock, ocpi=OCPI)
    try:
        async with FlakyHub() as hub:
            await register(hub, cpo.http_url, cpo.api)
            await cpo.put_tag("TAG1")
            await cpo.put_tag("TAG2")
            yield cpo, hub, clock
    finally:
        await session.close()
        await system.stop()


async def cancels_sent(cpo: Running) -> int:
    _, page = await cpo.api.get("/api/v1/commands?limit=1000")
    return sum(1 for c in page["items"] if c["action"] == "CancelReservation")


def evse_status(hub: FlakyHub, location: str, n: int) -> str | None:
    evses = (hub.locations.get(location) or {}).get("evses") or []
    return evses[n - 1]["status"] if len(evses) >= n else None


async def test_reserve_use_cancel_expire_through_the_api(
    world: tuple[Running, FlakyHub, FakeClock],
) -> None:
    cpo, hub, clock = world
    await cpo.define_station("RS1", 2)
    st = sim("RS1", cpo.ocpp_url)
    expiry = ts(clock.now() + timedelta(minutes=30))
    body = {"connector_id": 1, "id_tag": "TAG1", "expiry_date": expiry}

    # offline: refused, nothing held
    status, refused = await cpo.api.post("/api/v1/stations/RS1/reservations", body)
    assert status == 409 and refused["error"] == "station_offline", refused
    assert refused["reservation"]["state"] == "rejected"

    await st.connect()
    try:
        await st.boot_and_report()
        await eventually(lambda: evse_status(hub, "LOC-RS1", 1) == "AVAILABLE")

        # hostile input: clear errors, nothing sent
        for path, bad, code in [
            ("/api/v1/stations/RS1/reservations", {**body, "connector_id": 9}, 422),
            ("/api/v1/stations/RS1/reservations", {**body, "expiry_date": "x"}, 422),
            ("/api/v1/stations/RS1/reservations", "[1]", 422),
            ("/api/v1/stations/NOPE/reservations", body, 404),
        ]:
            status, answer = await cpo.api.post(path, bad)
            assert status == code, (bad, answer)
            assert answer["status"] == "error" and answer["error"], answer
        status, answer = await cpo.api.request(
            "POST", "/api/v1/stations/RS1/reservations", data=b"{", auth=True
        )
        assert status == 400

        status, held = await cpo.api.post("/api/v1/stations/RS1/reservations", body)
        assert status == 201, held
        assert held["state"] == "accepted" and held["station_answer"] == "Accepted"
        assert held["requested_by"] == "api:admin" and held["expiry_date"][:19] == expiry[:19]
        rid = held["id"]
        # the station reports Reserved: csms shows it, the hub gets RESERVED
        await eventually(lambda: evse_status(hub, "LOC-RS1", 1) == "RESERVED")
        _, view = await cpo.api.get("/api/v1/stations/RS1")
        assert {c["connector_id"]: c["status"] for c in view["connectors"]}[1] == "Reserved"

        # another user's reservation of the same connector: the station refuses
        status, refused = await cpo.api.post(
            "/api/v1/stations/RS1/reservations", {**body, "id_tag": "TAG2"}
        )
        assert status == 409 and refused["error"] == "station_refused", refused
        assert refused["reservation"]["state"] == "rejected"
        assert refused["reservation"]["station_answer"] == "Occupied"

        # the reservation's user starts: StartTransaction names it, it is used
        answer = await st.start_charging(1, "TAG1")
        assert answer is not None
        tx = answer["transactionId"]

        async def used() -> bool:
            _, r = await cpo.api.get(f"/api/v1/reservations/{rid}")
            return r["state"] == "used" and r["transaction_id"] == tx

        await eventually(used)
        _, t = await cpo.api.get(f"/api/v1/transactions/{tx}")
        assert t["reservation_id"] == rid
        await st.stop_charging(1)

        # connector 2: reserved, then cancelled; Available again
        status, r2 = await cpo.api.post(
            "/api/v1/stations/RS1/reservations", {**body, "connector_id": 2, "id_tag": "TAG2"}
        )
        assert status == 201, r2
        await eventually(lambda: evse_status(hub, "LOC-RS1", 2) == "RESERVED")
        status, cancelled = await cpo.api.request("DELETE", f"/api/v1/reservations/{r2['id']}")
        assert status == 200 and cancelled["state"] == "cancelled", cancelled
        assert cancelled["cancelled_by"] == "api:admin"
        await eventually(lambda: evse_status(hub, "LOC-RS1", 2) == "AVAILABLE")
        status, again = await cpo.api.request("DELETE", f"/api/v1/reservations/{r2['id']}")
        assert status == 409 and again["error"] == "not_held"
        for bad_id in ("0", "x", "99999", "1" * 30):
            status, _ = await cpo.api.request("DELETE", f"/api/v1/reservations/{bad_id}")
            assert status == 404, bad_id

        # expiry by csms's clock: no OCPP call needed
        status, r3 = await cpo.api.post(
            "/api/v1/stations/RS1/reservations",
            {**body, "connector_id": 2, "expiry_date": ts(clock.now() + timedelta(minutes=5))},
        )
        assert status == 201, r3
        cancels = await cancels_sent(cpo)
        await clock.advance(6 * 60)

        async def expired() -> bool:
            _, page = await cpo.api.get("/api/v1/reservations?state=expired")
            return [r["id"] for r in page["items"]] == [r3["id"]]

        await eventually(expired)
        status, late = await cpo.api.request("DELETE", f"/api/v1/reservations/{r3['id']}")
        assert status == 409 and late["error"] == "not_held", late
        assert await cancels_sent(cpo) == cancels  # expiry sent nothing to the station
        # the station (its own clock) still holds it: a start naming it is not refused, and
        # uses it, expired or not
        answer = await st.start_charging(2, "TAG1")
        assert answer is not None and answer["idTagInfo"]["status"] == "Accepted"

        async def used_late() -> bool:
            _, r = await cpo.api.get(f"/api/v1/reservations/{r3['id']}")
            return r["state"] == "used" and r["transaction_id"] == answer["transactionId"]

        await eventually(used_late)
        await st.stop_charging(2)
    finally:
        await st.disconnect()

    # the list: filters and pages, bounded
    status, page = await cpo.api.get("/api/v1/reservations?station=RS1&limit=2")
    assert status == 200 and page["total"] == 5 and len(page["items"]) == 2
    assert page["items"][0]["id"] > page["items"][1]["id"]  # newest first
    _, page = await cpo.api.get("/api/v1/reservations?state=used")
    assert sorted(r["id"] for r in page["items"]) == [rid, r3["id"]]
    _, page = await cpo.api.get("/api/v1/reservations?id_tag=tag2&state=rejected")
    assert page["total"] == 1
    for query in ("state=bogus", "limit=0", "limit=5000", "offset=-1", "limit=x"):
        status, answer = await cpo.api.get(f"/api/v1/reservations?{query}")
        assert status == 400 and answer["error"] == "invalid_query", query
    status, _ = await cpo.api.get("/api/v1/reservations", auth=False)
    assert status == 401


# ---------------------------------------------------------------------------- OCPI


class Emsp(FlakyHub):
    """The flaky hub's receiver, registered as an eMSP (not MOBI.E)."""

    def credentials(self) -> dict[str, Any]:
        creds = super().credentials()
        creds["roles"][0]["role"] = "EMSP"
        creds["roles"][0]["business_details"] = {"name": "Test eMSP"}
        return creds


async def register_emsp(emsp: Emsp, cpo: Running) -> None:
    grant = {"role": "EMSP", "parties": [f"PT/{emsp.party_id}"]}
    status, body = await cpo.api.post("/api/v1/ocpi/token-a", grant)
    assert status == 201, body
    token = base64.b64encode(body["token"].encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            cpo.http_url + "/ocpi/2.2.1/credentials",
            json=emsp.credentials(),
            headers={"Authorization": f"Token {token}"},
        ) as r:
            answer = await r.json()
    assert answer["status_code"] == 1000, answer
    emsp.token_c = answer["data"]["token"]


async def ocpi(peer: FlakyHub, cpo: Running, method: str, path: str, body: Any) -> Any:
    assert peer.token_c is not None
    token = base64.b64encode(peer.token_c.encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method,
            cpo.http_url + "/ocpi/2.2.1/" + path,
            json=body,
            headers={"Authorization": f"Token {token}"},
        ) as r:
            return await r.json()


TOKEN = {
    "country_code": "PT",
    "party_id": "EMS",
    "uid": "04ABBE2A266581",
    "type": "RFID",
    "contract_id": "PT-EMS-C-12345678-X",
    "issuer": "Test eMSP",
    "valid": True,
    "whitelist": "ALWAYS",
    "last_updated": "2026-01-01T00:00:00Z",
}


def results(peer: FlakyHub, ref: str) -> list[Any]:
    return [
        r["body"]
        for r in peer.requests
        if r["method"] == "POST"
        and r["path"].startswith("/2.2.1/commands/")
        and r["path"].endswith(f"/{ref}")
    ]


async def test_ocpi_reserve_now_and_cancel_for_an_emsp_not_mobie(
    world: tuple[Running, FlakyHub, FakeClock],
) -> None:
    cpo, hub, clock = world
    await cpo.define_station("RS2", 2)
    st = sim("RS2", cpo.ocpp_url)
    async with Emsp(party_id="EMS") as emsp:
        await register_emsp(emsp, cpo)
        answer = await ocpi(emsp, cpo, "PUT", f"tokens/PT/EMS/{TOKEN['uid']}", TOKEN)
        assert answer["status_code"] == 1000, answer
        await st.connect()
        try:
            await st.boot_and_report()
            expiry = ts(clock.now() + timedelta(minutes=20))
            reserve = {
                "response_url": emsp.base + "/2.2.1/commands/RESERVE_NOW/r1",
                "token": TOKEN,
                "expiry_date": expiry,
                "reservation_id": "res-1",
                "location_id": "LOC-RS2",
                "evse_uid": "LOC-RS2-01",
            }
            # MOBI.E keeps its profile: not supported
            for command in ("RESERVE_NOW", "CANCEL_RESERVATION"):
                answer = await ocpi(hub, cpo, "POST", f"commands/{command}", reserve)
                assert answer["data"]["result"] == "NOT_SUPPORTED", answer

            # invalid: 2001 naming the field
            answer = await ocpi(
                emsp, cpo, "POST", "commands/RESERVE_NOW", {**reserve, "reservation_id": 5}
            )
            assert answer["status_code"] == 2001 and "reservation_id" in answer["status_message"]
            # unknown EVSE: REJECTED at once, nothing sent
            answer = await ocpi(
                emsp, cpo, "POST", "commands/RESERVE_NOW", {**reserve, "evse_uid": "NOPE"}
            )
            assert answer["data"]["result"] == "REJECTED", answer

            answer = await ocpi(emsp, cpo, "POST", "commands/RESERVE_NOW", reserve)
            assert answer["status_code"] == 1000 and answer["data"]["result"] == "ACCEPTED"
            await eventually(lambda: results(emsp, "r1") == [{"result": "ACCEPTED"}])
            _, page = await cpo.api.get("/api/v1/reservations?requested_by=ocpi:PT/EMS")
            assert page["total"] == 1, page
            held = page["items"][0]
            assert held["state"] == "accepted" and held["id_tag"] == TOKEN["uid"]
            assert held["connector_id"] == 1
            await eventually(lambda: evse_status(hub, "LOC-RS2", 1) == "RESERVED")

            # another reservation of the held EVSE: the station answers Occupied
            other = {
                **reserve,
                "reservation_id": "res-2",
                "response_url": emsp.base + "/2.2.1/commands/RESERVE_NOW/r0",
            }
            answer = await ocpi(emsp, cpo, "POST", "commands/RESERVE_NOW", other)
            assert answer["data"]["result"] == "ACCEPTED", answer
            await eventually(lambda: results(emsp, "r0") == [{"result": "EVSE_OCCUPIED"}])

            # the same reservation_id again replaces it (the old one is cancelled)
            replace = {
                **reserve,
                "response_url": emsp.base + "/2.2.1/commands/RESERVE_NOW/r2",
                "evse_uid": "LOC-RS2-02",
            }
            answer = await ocpi(emsp, cpo, "POST", "commands/RESERVE_NOW", replace)
            assert answer["data"]["result"] == "ACCEPTED", answer
            await eventually(lambda: results(emsp, "r2") == [{"result": "ACCEPTED"}])
            _, page = await cpo.api.get("/api/v1/reservations?requested_by=ocpi:PT/EMS")
            states = sorted((r["connector_id"], r["state"]) for r in page["items"])
            assert states == [(1, "cancelled"), (1, "rejected"), (2, "accepted")], page

            # another eMSP can neither cancel EMS's reservation nor reserve with its token
            async with Emsp(party_id="EM2") as em2:
                await register_emsp(em2, cpo)
                theirs = {
                    "response_url": em2.base + "/2.2.1/commands/CANCEL_RESERVATION/x1",
                    "reservation_id": "res-1",
                }
                answer = await ocpi(em2, cpo, "POST", "commands/CANCEL_RESERVATION", theirs)
                assert answer["data"]["result"] == "REJECTED", answer
                borrowed = {
                    **reserve,
                    "response_url": em2.base + "/2.2.1/commands/RESERVE_NOW/x2",
                    "reservation_id": "res-9",
                }
                answer = await ocpi(em2, cpo, "POST", "commands/RESERVE_NOW", borrowed)
                assert answer["data"]["result"] == "REJECTED", answer
            _, page = await cpo.api.get("/api/v1/reservations?state=accepted")
            assert [(r["connector_id"], r["requested_by"]) for r in page["items"]] == [
                (2, "ocpi:PT/EMS")
            ], page

            cancel = {
                "response_url": emsp.base + "/2.2.1/commands/CANCEL_RESERVATION/c1",
                "reservation_id": "RES-1",  # (a CiString)
            }
            answer = await ocpi(emsp, cpo, "POST", "commands/CANCEL_RESERVATION", cancel)
            assert answer["data"]["result"] == "ACCEPTED", answer
            await eventually(lambda: results(emsp, "c1") == [{"result": "ACCEPTED"}])
            await eventually(lambda: evse_status(hub, "LOC-RS2", 2) == "AVAILABLE")
            # cancelled: a second cancel is refused; an unknown one too
            for rid, ref in (("res-1", "c2"), ("other", "c3")):
                body = {**cancel, "reservation_id": rid}
                body["response_url"] = emsp.base + f"/2.2.1/commands/CANCEL_RESERVATION/{ref}"
                answer = await ocpi(emsp, cpo, "POST", "commands/CANCEL_RESERVATION", body)
                assert answer["data"]["result"] == "REJECTED", answer
            # the commands are listed with their results
            status, listed = await cpo.api.get("/api/v1/ocpi/commands")
            assert status == 200
            kinds = [c["command"] for c in listed["items"]]
            assert kinds.count("RESERVE_NOW") >= 3 and "CANCEL_RESERVATION" in kinds
        finally:
            await st.disconnect()


# ---------------------------------------------------------------------------- web


async def test_reserve_and_cancel_from_the_web_interface(tmp_path: Path) -> None:
    from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

    system, session, cpo = await start_system(tmp_path, **web_overrides())
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    st = sim("RW1", cpo.ocpp_url)
    try:
        assert (await admin.login(ADMIN)).status == 303
        assert (await viewer.login(VIEWER)).status == 303
        await cpo.define_station("RW1", 2)
        await cpo.put_tag("TAG1")
        await st.connect()
        await st.boot_and_report()
        form = {"connector_id": "2", "id_tag": "TAG1", "minutes": "30"}

        _, page = await viewer.get("/stations/RW1")
        assert 'id="reservations"' in page and 'id="reserve-form"' not in page
        status, _, _ = await viewer.post("/stations/RW1/reserve", form)
        assert status == 403
        assert (await cpo.api.get("/api/v1/reservations"))[1]["total"] == 0

        _, page = await admin.get("/stations/RW1")
        assert 'id="reserve-form"' in page
        status, _, headers = await admin.post("/stations/RW1/reserve", form)
        assert status == 303 and headers["Location"].endswith("#command-result")
        _, listed = await cpo.api.get("/api/v1/reservations")
        assert listed["total"] == 1 and listed["items"][0]["state"] == "accepted"
        r = listed["items"][0]
        assert r["requested_by"].startswith("web:") and r["connector_id"] == 2
        _, page = await admin.get("/stations/RW1")
        assert f'data-reservation="{r["id"]}"' in page

        # a bad form: the error shown, nothing stored
        await admin.post("/stations/RW1/reserve", {**form, "minutes": "0"})
        _, page = await admin.get("/stations/RW1")
        assert "expiry_date" in page
        assert (await cpo.api.get("/api/v1/reservations"))[1]["total"] == 1

        # the list, for everyone; cancel for admins only
        _, page = await viewer.get("/reservations")
        assert f'data-reservation="{r["id"]}"' in page and 'data-state="accepted"' in page
        status, _, _ = await viewer.post(f"/reservations/{r['id']}/cancel", {})
        assert status == 403
        status, _, headers = await admin.post(f"/reservations/{r['id']}/cancel", {"back": "list"})
        assert status == 303 and headers["Location"] == "/reservations"
        _, page = await admin.get("/reservations?state=cancelled")
        assert f'data-reservation="{r["id"]}"' in page
        _, page = await admin.get("/reservations?state=accepted")
        assert f'data-reservation="{r["id"]}"' not in page
        status, _, _ = await admin.post("/reservations/999/cancel", {})
        assert status == 404
    finally:
        await st.disconnect()
        await admin.close()
        await viewer.close()
        await session.close()
        await system.stop()
