"""Bulk commands (issue 16, item 5): one OCPP command to a selection of stations, with
bounded concurrency, progress and each station's result; through the API, over real
sockets with the simulator, across a restart; the pure selection rules; the web page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charger_sim import Behaviour, Station
from csms.app import CentralSystem
from csms.bulk import (
    Selection,
    SelectionError,
    StationFacts,
    outcome_of,
    parse_selection,
    select,
)
from csms.clock import FakeClock
from tests.conftest import _ADMIN_HASH, Api, Running, make_settings, start_system
from tests.test_push_faults import eventually
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRIGGER = {"requestedMessage": "Heartbeat"}


# ---------------------------------------------------------------------- pure rules


def facts(sid: str, **kw: Any) -> StationFacts:
    base: dict[str, Any] = {
        "location_id": f"LOC-{sid}",
        "vendor": "SimVendor",
        "model": "M1",
        "firmware_version": "1.0.0",
        "security_profile": 1,
        "connected": True,
        "last_seen": NOW,
        "retired": False,
    }
    return StationFacts(sid, **{**base, **kw})


FLEET = [
    facts("A"),
    facts("B", firmware_version="2.0.0", vendor="Other"),
    facts("C", connected=False, last_seen=NOW - timedelta(hours=2)),
    facts("D", connected=False, last_seen=NOW - timedelta(minutes=10), security_profile=2),
    facts("E", retired=True),
    facts("F", connected=False, last_seen=None),
]


def test_selection_filters() -> None:
    def ids(raw: dict[str, Any]) -> list[str]:
        return select(FLEET, parse_selection(raw), NOW)[0]

    assert ids({"all": True}) == ["A", "B", "C", "D", "F"]  # never a retired station
    assert ids({"filter": {"firmware_version": "1.0.0"}}) == ["A", "C", "D", "F"]
    assert ids({"filter": {"vendor": "other"}}) == ["B"]  # vendor and model: any case
    assert ids({"filter": {"connected": True}}) == ["A", "B"]
    # offline for more than an hour: not connected, and not seen for an hour (or never)
    assert ids({"filter": {"offline_minutes": 60}}) == ["C", "F"]
    assert ids({"filter": {"offline_minutes": 5}}) == ["C", "D", "F"]
    assert ids({"filter": {"security_profile": 2}}) == ["D"]
    assert ids({"location": "loc-c"}) == ["C"]
    # a list keeps its order; filters narrow it; unknown ids are named
    chosen, missing = select(
        FLEET, parse_selection({"stations": ["D", "A", "ZZ", "E"], "filter": {}}), NOW
    )
    assert chosen == ["D", "A"] and missing == ["ZZ"]
    chosen, _ = select(
        FLEET, parse_selection({"stations": ["D", "A"], "filter": {"connected": False}}), NOW
    )
    assert chosen == ["D"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (None, "selection"),
        ({}, "selection"),
        ({"filter": {}}, "selection"),  # nothing chosen: every station needs "all"
        ({"station": ["A"]}, "selection.station"),
        ({"stations": []}, "selection.stations"),
        ({"stations": "A"}, "selection.stations"),
        ({"stations": ["A", 3]}, "selection.stations[1]"),
        ({"stations": ["x" * 65]}, "selection.stations[0]"),
        ({"stations": ["A"] * 10_001}, "selection.stations"),
        ({"location": ""}, "selection.location"),
        ({"all": "yes"}, "selection.all"),
        ({"filter": {"firmware": "1"}}, "selection.filter.firmware"),
        ({"filter": {"connected": "true"}}, "selection.filter.connected"),
        ({"filter": {"offline_minutes": 0}}, "selection.filter.offline_minutes"),
        ({"filter": {"offline_minutes": float("nan")}}, "selection.filter.offline_minutes"),
        ({"filter": {"offline_minutes": True}}, "selection.filter.offline_minutes"),
        ({"filter": {"security_profile": 4}}, "selection.filter.security_profile"),
    ],
)
def test_selection_refusals(raw: Any, field: str) -> None:
    with pytest.raises(SelectionError) as e:
        parse_selection(raw)
    assert e.value.field == field


def test_a_list_is_deduplicated() -> None:
    assert parse_selection({"stations": ["A", "B", "A"]}) == Selection(stations=("A", "B"))


def test_outcome_of_an_answer() -> None:
    assert outcome_of({"status": "Accepted"}) == "accepted"
    assert outcome_of({"status": "Unlocked"}) == "accepted"
    assert outcome_of({"status": "Rejected"}) == "rejected"
    assert outcome_of({"status": "NotSupported"}) == "rejected"
    assert outcome_of({"configurationKey": []}) == "accepted"  # no status: answered


# ---------------------------------------------------------------------- end to end


def sim(station_id: str, url: str, **kw: Any) -> Station:
    return Station(
        station_id,
        url,
        1,
        behaviour=Behaviour(auto_heartbeat=False, auto_meter_values=False, **kw),
    )


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Running, dict[str, Station]]]:
    system, session, cpo = await start_system(tmp_path, OCPP__CALL_TIMEOUT="0.5")
    stations: dict[str, Station] = {}
    try:
        for sid in ("B1", "B2", "B3", "B4"):
            await cpo.define_station(sid, 1)
        for sid, kw in (("B1", {}), ("B2", {"trigger": "Rejected"}), ("B3", {})):
            st = sim(sid, cpo.ocpp_url, **kw)
            await st.connect()
            await st.boot_and_report()
            stations[sid] = st
        stations["B3"].on_call("TriggerMessage", lambda p: Station.IGNORE)  # never answers
        yield cpo, stations
    finally:
        for st in stations.values():
            await st.disconnect()
        await session.close()
        await system.stop()


async def finished(api: Api, job_id: int) -> dict[str, Any]:
    async def done() -> bool:
        _, job = await api.get(f"/api/v1/bulk-commands/{job_id}")
        return job["state"] != "running"

    await eventually(done, timeout=15)
    _, job = await api.get(f"/api/v1/bulk-commands/{job_id}")
    return job


async def test_bulk_command_end_to_end(fleet: tuple[Running, dict[str, Station]]) -> None:
    cpo, stations = fleet
    api = cpo.api
    body = {
        "action": "TriggerMessage",
        "payload": TRIGGER,
        "selection": {"stations": ["B1", "B2", "B3", "B4"]},
        "concurrency": 2,
    }
    # a dry run: what it would reach, nothing sent
    status, preview = await api.post("/api/v1/bulk-commands", {**body, "dry_run": True})
    assert status == 200, preview
    assert preview == {"dry_run": True, "count": 4, "first": ["B1", "B2", "B3", "B4"]}
    status, preview = await api.post(
        "/api/v1/bulk-commands",
        {**body, "selection": {"filter": {"connected": True}}, "dry_run": True},
    )
    assert preview["count"] == 3 and preview["first"] == ["B1", "B2", "B3"]
    assert all(a != "TriggerMessage" for st in stations.values() for a, _ in st.calls_received)

    status, job = await api.post("/api/v1/bulk-commands", body)
    assert status == 201, job
    assert job["total"] == 4 and job["concurrency"] == 2 and job["created_by"] == "api"
    job = await finished(api, job["id"])
    assert job["state"] == "finished" and job["done"] == 4 and job["percent"] == 100.0
    progress = {k: v for k, v in job["progress"].items() if v}
    assert progress == {"accepted": 1, "rejected": 1, "timeout": 1, "offline": 1}
    results = {i["station_id"]: i for i in job["stations"]["items"]}
    assert results["B1"]["state"] == "accepted"
    assert results["B1"]["answer"] == {"status": "Accepted"}
    assert results["B2"]["answer"] == {"status": "Rejected"}
    assert results["B3"]["state"] == "timeout" and "error" in results["B3"]["answer"]
    assert results["B4"]["state"] == "offline"
    # the very path of a single command: the command log, with the job as its origin
    _, log = await api.get("/api/v1/commands?station=B1")
    assert [(c["action"], c["origin"]) for c in log["items"]][:1] == [
        ("TriggerMessage", f"bulk:{job['id']}")
    ]
    assert ("TriggerMessage", TRIGGER) in stations["B1"].calls_received
    # per-station results: paginated and filtered
    _, page = await api.get(f"/api/v1/bulk-commands/{job['id']}?limit=1&offset=1")
    assert page["stations"]["total"] == 4
    assert [i["station_id"] for i in page["stations"]["items"]] == ["B2"]
    _, page = await api.get(f"/api/v1/bulk-commands/{job['id']}?state=offline")
    assert [i["station_id"] for i in page["stations"]["items"]] == ["B4"]
    # the list of jobs
    status, jobs = await api.get("/api/v1/bulk-commands?limit=10")
    assert status == 200 and jobs["total"] == 1 and jobs["items"][0]["id"] == job["id"]
    # a finished job cannot be cancelled
    status, err = await api.post(f"/api/v1/bulk-commands/{job['id']}/cancel")
    assert status == 409 and err["error"] == "not_running"


async def test_bulk_refusals(fleet: tuple[Running, dict[str, Station]]) -> None:
    cpo, _ = fleet
    api = cpo.api
    ok = {"action": "TriggerMessage", "payload": TRIGGER, "selection": {"all": True}}
    cases: list[tuple[Any, int, str]] = [
        ({**ok, "action": "Explode"}, 404, "unknown_action"),
        ({**ok, "action": "BootNotification"}, 404, "unknown_action"),  # not to a station
        ({**ok, "payload": {"requestedMessage": "Nope"}}, 422, "invalid_payload"),
        ({**ok, "payload": [1]}, 422, "invalid_payload"),
        ({**ok, "concurrency": 51}, 422, "invalid_body"),
        ({**ok, "concurrency": 0}, 422, "invalid_body"),
        ({**ok, "concurrency": True}, 422, "invalid_body"),
        ({**ok, "selection": {"stations": ["B1", "NOPE"]}}, 422, "unknown_stations"),
        ({**ok, "selection": {}}, 422, "invalid_selection"),
        ({**ok, "selection": {"location": "LOC-NONE"}}, 422, "empty_selection"),
        ({**ok, "extra": 1}, 422, "invalid_body"),
        ({**ok, "dry_run": "yes"}, 422, "invalid_body"),
        ([ok], 422, "invalid_body"),
    ]
    for body, status, code in cases:
        got, answer = await api.post("/api/v1/bulk-commands", body)
        assert (got, answer["error"]) == (status, code), (body, answer)
    async with api.session.post(
        api.base + "/api/v1/bulk-commands", data=b"{not json", headers=api.auth
    ) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_json"
    for path in ("/api/v1/bulk-commands/999", "/api/v1/bulk-commands/abc"):
        got, answer = await api.get(path)
        assert got == 404 and answer["error"] == "not_found"
    got, _ = await api.post("/api/v1/bulk-commands/999/cancel")
    assert got == 404
    got, _ = await api.get("/api/v1/bulk-commands?limit=100000")
    assert got == 400
    got, _ = await api.get("/api/v1/bulk-commands", auth=False)
    assert got == 401
    status, jobs = await api.get("/api/v1/bulk-commands")
    assert jobs["total"] == 0  # nothing was stored by a refusal


async def test_cancel_stops_the_pending_stations(
    fleet: tuple[Running, dict[str, Station]],
) -> None:
    cpo, stations = fleet
    api = cpo.api
    # B3 never answers (0.5 s each), one at a time: cancelled while the first waits
    body = {
        "action": "TriggerMessage",
        "payload": TRIGGER,
        "selection": {"stations": ["B3", "B1", "B2"]},
        "concurrency": 1,
    }
    status, job = await api.post("/api/v1/bulk-commands", body)
    assert status == 201
    status, cancelled = await api.post(f"/api/v1/bulk-commands/{job['id']}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"
    job = await finished(api, job["id"])
    await cpo.system.bulk.wait(job["id"])
    _, job = await api.get(f"/api/v1/bulk-commands/{job['id']}")
    states = {i["station_id"]: i["state"] for i in job["stations"]["items"]}
    assert states["B1"] == states["B2"] == "cancelled"
    assert states["B3"] in ("timeout", "cancelled")  # (in flight, or not yet claimed)
    assert all(a != "TriggerMessage" for a, _ in stations["B1"].calls_received)


async def start(tmp_path: Path, clock: FakeClock | None = None) -> tuple[CentralSystem, Running]:
    settings = make_settings(tmp_path, OCPP__CALL_TIMEOUT="30")
    system = CentralSystem(settings, clock=clock, admin_password_hash=_ADMIN_HASH)
    await system.start()
    import aiohttp

    session = aiohttp.ClientSession()
    return system, Running(system, Api(f"http://127.0.0.1:{system.http_port}", session))


async def test_a_restarted_csms_resumes_a_job(tmp_path: Path) -> None:
    system, cpo = await start(tmp_path)
    stations: list[Station] = []
    try:
        for sid in ("R1", "R2", "R3"):
            await cpo.define_station(sid, 1)
            st = sim(sid, cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            stations.append(st)

        async def provisioned() -> bool:  # (the post-boot configuration calls are done)
            _, view = await cpo.api.get("/api/v1/stations/R1")
            return view["configuration"]["status"] != "unknown"

        await eventually(provisioned)
        stations[0].on_call("TriggerMessage", lambda p: Station.IGNORE)
        body = {
            "action": "TriggerMessage",
            "payload": TRIGGER,
            "selection": {"stations": ["R1", "R2", "R3"]},
            "concurrency": 1,
        }
        status, job = await cpo.api.post("/api/v1/bulk-commands", body)
        assert status == 201
        job_id = job["id"]

        async def in_flight() -> bool:
            _, j = await cpo.api.get(f"/api/v1/bulk-commands/{job_id}")
            return j["progress"]["sent"] == 1

        await eventually(in_flight)
    finally:
        await cpo.api.session.close()
        await system.stop()  # R1's command in flight, R2 and R3 pending
        for st in stations:
            await st.disconnect()

    clock = FakeClock(datetime.now(UTC))
    system, cpo = await start(tmp_path, clock)
    try:
        _, job = await cpo.api.get(f"/api/v1/bulk-commands/{job_id}")
        states = {i["station_id"]: i for i in job["stations"]["items"]}
        assert states["R1"]["state"] == "unknown"
        assert states["R1"]["answer"] == {"error": "unknown: csms restarted"}
        assert states["R2"]["state"] == states["R3"]["state"] == "pending"
        assert job["state"] == "running"
        # the stations come back; the job resumes once their time to reconnect has passed
        again = []
        for sid in ("R2", "R3"):
            st = sim(sid, cpo.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            again.append(st)
        await clock.advance(cpo.system.bulk.resume_after)
        job = await finished(cpo.api, job_id)
        states = {i["station_id"]: i["state"] for i in job["stations"]["items"]}
        assert states == {"R1": "unknown", "R2": "accepted", "R3": "accepted"}
        assert job["state"] == "finished"
        for st in again:
            assert ("TriggerMessage", TRIGGER) in st.calls_received
            await st.disconnect()
    finally:
        await cpo.api.session.close()
        await system.stop()


# ---------------------------------------------------------------------- the web page


async def test_bulk_web_page(tmp_path: Path) -> None:
    system, session, cpo = await start_system(tmp_path, **web_overrides())
    admin, viewer = WebClient(cpo.http_url), WebClient(cpo.http_url)
    st = sim("W1", "")
    try:
        await cpo.define_station("W1", 1)
        await cpo.define_station("W2", 1)
        st = sim("W1", cpo.ocpp_url)
        await st.connect()
        await st.boot_and_report()
        assert (await admin.login(ADMIN)).status == 303
        assert (await viewer.login(VIEWER)).status == 303
        assert (await viewer.get("/bulk"))[0] == 403
        status, page = await admin.get("/bulk")
        assert status == 200 and 'id="bulk-form"' in page
        form = {
            "action": "TriggerMessage",
            "payload": '{"requestedMessage": "Heartbeat"}',
            "stations": "",
            "connected": "yes",
            "concurrency": "5",
        }
        status, page, _ = await admin.post("/bulk/preview", form)
        assert status == 200 and 'id="bulk-preview"' in page
        assert 'data-station="W1"' in page and 'data-station="W2"' not in page
        status, page, _ = await admin.post("/bulk", {**form, "payload": "{bad"})
        assert status == 422 and "not valid JSON" in page
        status, _, _ = await admin.post("/bulk", form, csrf=False)
        assert status == 403
        status, _, headers = await admin.post("/bulk", form)
        assert status == 303
        job_path = headers["Location"]
        job_id = int(job_path.rsplit("/", 1)[1])
        await cpo.system.bulk.wait(job_id)
        status, page = await admin.get(job_path)
        assert status == 200 and 'data-station="W1" data-state="accepted"' in page
        assert "web:operador" in page
        async with admin.http.get(f"{cpo.http_url}/live/bulk/{job_id}") as r:
            live = await r.json()
        assert 'data-state="finished"' in live["html"]["bulk-live"]
        assert (await viewer.get(f"/live/bulk/{job_id}"))[0] == 403
        assert (await admin.get("/bulk/12345"))[0] == 404
        status, _, headers = await admin.post(f"/bulk/{job_id}/cancel", {})
        assert status == 303
        _, page = await admin.get(job_path)
        assert 'id="bulk-flash"' in page
        _, listing = await admin.get("/bulk")
        assert f'data-job="{job_id}"' in listing
    finally:
        await st.disconnect()
        await admin.close()
        await viewer.close()
        await session.close()
        await system.stop()


async def test_concurrency_is_bounded(fleet: tuple[Running, dict[str, Station]]) -> None:
    """At most ``concurrency`` commands of a job are in flight at once."""
    cpo, stations = fleet
    in_flight, most = 0, 0

    async def handler(_: dict[str, Any]) -> dict[str, Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.1)  # (held a moment: the others would overlap it)
        finally:
            in_flight -= 1
        return {"status": "Accepted"}

    for sid in ("B1", "B2", "B3"):
        stations[sid].on_call("TriggerMessage", handler)
    body = {
        "action": "TriggerMessage",
        "payload": TRIGGER,
        "selection": {"stations": ["B1", "B2", "B3"]},
        "concurrency": 2,
    }
    status, job = await cpo.api.post("/api/v1/bulk-commands", body)
    assert status == 201
    job = await finished(cpo.api, job["id"])
    assert job["progress"]["accepted"] == 3
    assert most == 2
