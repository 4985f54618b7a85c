"""Firmware campaigns: the pure core (plain unit tests), then end to end with simulated
stations over real websockets that really download the image from csms over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from csms.firmware import (
    Policy,
    StationFacts,
    after_boot,
    after_status,
    parse_policy,
    plan,
    window_open,
)
from tests.conftest import Running, start_system

LISBON = ZoneInfo("Europe/Lisbon")
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 13:00 in Lisbon (summer time)


# ---------------------------------------------------------------------- the core


def facts(sid: str, state: str = "pending", **kw: Any) -> StationFacts:
    return StationFacts(sid, state, **{"connected": True, **kw})


def test_window_in_local_time_and_over_midnight() -> None:
    day = Policy(window_start=time(13, 0), window_end=time(14, 0), zone=LISBON)
    assert window_open(day, NOW)  # 13:00 Lisbon
    assert not window_open(day, NOW - timedelta(minutes=1))
    assert not window_open(day, NOW + timedelta(hours=1))
    night = Policy(window_start=time(22, 0), window_end=time(6, 0), zone=LISBON)
    assert not window_open(night, NOW)
    assert window_open(night, datetime(2026, 7, 1, 21, 30, tzinfo=UTC))  # 22:30 Lisbon
    assert window_open(night, datetime(2026, 7, 2, 4, 0, tzinfo=UTC))  # 05:00 Lisbon
    assert not window_open(night, datetime(2026, 7, 2, 5, 0, tzinfo=UTC))  # 06:00 Lisbon
    # the Azores are an hour behind Lisbon (UTC+0 in summer)
    azores = ZoneInfo("Atlantic/Azores")
    assert window_open(Policy(window_start=time(12, 0), window_end=time(13, 0), zone=azores), NOW)
    assert not window_open(
        day := Policy(window_start=time(13, 0), window_end=time(14, 0), zone=azores), NOW
    )
    dated = Policy(not_before=NOW + timedelta(hours=1), not_after=NOW + timedelta(hours=2))
    assert not window_open(dated, NOW)
    assert window_open(dated, NOW + timedelta(hours=1))
    assert not window_open(dated, NOW + timedelta(hours=2))


def test_waves_fill_free_slots_first_attempts_first() -> None:
    policy = Policy(max_concurrent=2)
    stations = [
        facts("A", "downloading", attempts=1, sent_at=NOW),
        facts("B", "retry", attempts=1, next_attempt_at=NOW - timedelta(seconds=1)),
        facts("C"),
        facts("D"),
        facts("E", connected=False),
    ]
    d = plan(policy, "2.0", stations, NOW)
    assert d.send == ("C",)  # one slot free; a first attempt before B's retry
    assert not d.finished
    d = plan(Policy(max_concurrent=10), "2.0", stations, NOW)
    assert d.send == ("C", "D", "B")  # E is offline: it waits
    # a retry waits for its time
    later = [facts("B", "retry", attempts=1, next_attempt_at=NOW + timedelta(seconds=5))]
    assert plan(policy, "2.0", later, NOW).send == ()


def test_already_at_target_is_done_without_update() -> None:
    d = plan(Policy(), "2.0", [facts("A", version="2.0"), facts("B", version="1.0")], NOW)
    assert d.done == ("A",) and d.send == ("B",)


def test_timeouts_retry_then_fail() -> None:
    policy = Policy(max_attempts=2, station_timeout=timedelta(minutes=30))
    sent = NOW - timedelta(minutes=31)
    d = plan(policy, "2.0", [facts("A", "downloaded", attempts=1, sent_at=sent)], NOW)
    assert [(r.station_id, r.at) for r in d.retry] == [("A", NOW + policy.retry_after)]
    assert not d.finished
    d = plan(policy, "2.0", [facts("A", "installing", attempts=2, sent_at=sent)], NOW)
    assert d.failed and d.failed[0][0] == "A" and d.finished


def test_outside_window_nothing_sent_and_end_date_fails_the_rest() -> None:
    closed = Policy(window_start=time(2, 0), window_end=time(4, 0), zone=LISBON)
    assert plan(closed, "2.0", [facts("A")], NOW).send == ()
    ended = Policy(not_after=NOW - timedelta(seconds=1))
    d = plan(ended, "2.0", [facts("A"), facts("B", "done")], NOW)
    assert d.failed == (("A", "the campaign's end date passed"),) and d.finished
    assert plan(Policy(), "2.0", [facts("A", "done"), facts("B", "failed")], NOW).finished


def test_status_and_boot_steps() -> None:
    assert after_status("sent", False, "Downloading", "2.0").state == "downloading"
    assert after_status("downloading", False, "DownloadFailed", "2.0").error
    assert after_status("installing", False, "InstallationFailed", None).error
    assert after_status("installing", False, "Installed", "2.0").state == "installed"
    # no target version: Installed after a boot, or a boot after Installed, is done
    assert after_status("installing", True, "Installed", None).state == "done"
    assert after_boot("installed", "x", None).state == "done"
    step = after_boot("installing", "x", None)
    assert step.state == "installing" and step.rebooted
    # a target version: the boot decides
    assert after_boot("installing", "2.0", "2.0").state == "done"
    assert after_boot("installed", "1.0", "2.0").error
    assert after_boot("downloading", "1.0", "2.0").error is None  # (a reboot mid-download)
    assert after_boot("pending", "2.0", "2.0").state == "done"
    assert after_boot("failed", "2.0", "2.0").state == "failed"
    assert after_status("done", True, "Installed", None).state == "done"


def test_policy_from_api_checked() -> None:
    policy, cols = parse_policy(
        {"max_concurrent": 5, "retries": 1, "window": {"start": "22:00", "end": "06:00"}},
        "Europe/Lisbon",
    )
    assert policy.max_attempts == 2 and cols["window_start"] == "22:00"
    bad: list[dict[str, Any]] = [
        {"max_concurrent": 0},
        {"retries": "2"},
        {"retries": True},
        {"window": {"start": "25:00", "end": "06:00"}},
        {"window": {"start": "22:00"}},
        {"window": {"start": "22:00", "end": "06:00", "time_zone": "Mars/Olympus"}},
        {"window": "nights"},
        {"not_before": "yesterday"},
        {"not_before": "2026-07-02T00:00:00Z", "not_after": "2026-07-01T00:00:00Z"},
    ]
    for body in bad:
        with pytest.raises(ValueError):
            parse_policy(body, "Europe/Lisbon")


# ---------------------------------------------------------------------- end to end

IMAGE = b"simfw-version: 2.0.0\n" + b"\x00firmware bytes\xff" * 4096

Make = Callable[..., Awaitable[Running]]


@pytest.fixture
async def make_system(tmp_path: Path) -> AsyncIterator[tuple[Make, list[Station]]]:
    systems: list[Any] = []
    stations: list[Station] = []

    async def start(**overrides: str) -> Running:
        system, session, running = await start_system(
            tmp_path, FIRMWARE__SCHEDULER_SECONDS="0.05", **overrides
        )
        systems.append((system, session))
        return running

    try:
        yield start, stations
    finally:
        for st in stations:
            await st.disconnect()
        for system, session in reversed(systems):
            await session.close()
            if system.started:
                await system.stop()


async def station(
    running: Running, stations: list[Station], cp: str, connect: bool = True, **behaviour: Any
) -> Station:
    await running.define_station(cp, 1)
    st = Station(
        cp,
        url=running.ocpp_url,
        connectors=1,
        firmware_version="1.0.0",
        behaviour=Behaviour(step_delay=0.01, reboot_delay=0.05, **behaviour),
    )
    stations.append(st)
    if connect:
        await st.connect()
        await st.boot_and_report()
    return st


async def upload(running: Running, body: bytes, **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", body, filename="fw-2.0.0.bin", content_type="application/octet-stream")
    async with running.api.session.post(
        running.http_url + "/api/v1/firmware", data=form, headers=running.api.auth
    ) as r:
        return r.status, await r.json()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {value!r}")
        await asyncio.sleep(0.05)


async def campaign(running: Running, cid: int) -> dict[str, Any]:
    status, body = await running.api.get(f"/api/v1/firmware-campaigns/{cid}")
    assert status == 200, body
    return body


async def finished(running: Running, cid: int, timeout: float = 10.0) -> dict[str, Any]:
    async def check() -> Any:
        c = await campaign(running, cid)
        return c if c["state"] != "running" else None

    return await eventually(check, timeout)


async def test_campaign_in_waves_to_the_new_version(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    sts = [await station(running, stations, f"FW-{n}") for n in (1, 2, 3)]
    status, image = await upload(running, IMAGE, version="2.0.0")
    assert status == 201, image
    assert image["sha256"] == hashlib.sha256(IMAGE).hexdigest() and image["size"] == len(IMAGE)
    # the file is in the data directory, private
    stored = list((running.system.settings.data_dir / "firmware").iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == IMAGE
    assert stored[0].stat().st_mode & 0o077 == 0
    status, listed = await running.api.get("/api/v1/firmware")
    assert status == 200 and listed["items"][0]["id"] == image["id"]

    status, created = await running.api.post(
        "/api/v1/firmware-campaigns",
        {
            "firmware_id": image["id"],
            "stations": ["FW-1", "FW-2", "FW-3"],
            "max_concurrent": 2,
            "retries": 1,
            "retry_interval": 1,
        },
    )
    assert status == 201, created
    assert created["target_version"] == "2.0.0" and created["counts"] == {"pending": 3}
    done = await finished(running, created["id"])
    assert done["state"] == "finished"
    assert {s["state"] for s in done["stations"]} == {"done"}
    assert all(s["version_after"] == "2.0.0" and s["downloads"] == 1 for s in done["stations"])
    assert all(s["version_before"] == "1.0.0" and s["attempts"] == 1 for s in done["stations"])
    assert [st.firmware_version for st in sts] == ["2.0.0"] * 3
    # waves: the third station got its UpdateFirmware once one of the first two was done
    # (the stored times, to the microsecond)
    rows, _ = await running.system.firmware.repo.stations(created["id"])
    by_sent = sorted(rows, key=lambda s: s["sent_at"])
    assert by_sent[2]["sent_at"] > min(s["finished_at"] for s in by_sent[:2])
    assert by_sent[1]["sent_at"] < min(s["finished_at"] for s in by_sent[:2])
    # the station really followed the protocol: statuses, a reboot, the new version at boot
    assert sts[0].stats.received["UpdateFirmware"] == 1
    location = (await sts[0].wait_for_call("UpdateFirmware"))["location"]
    assert "/downloads/firmware/" in location
    # the token was for that attempt: the campaign is over, the URL is gone
    async with running.api.session.get(location) as r:
        assert r.status == 410
    async with running.api.session.get(location[:-3] + "abc") as r:
        assert r.status == 404
    status, versions = await running.api.get("/api/v1/firmware-versions")
    assert status == 200
    assert {"version": "2.0.0", "stations": 3} in versions["items"]
    status, page = await running.api.get("/api/v1/firmware-campaigns")
    assert page["items"][0]["counts"] == {"done": 3}
    async with running.api.session.get(running.http_url + "/metrics") as r:
        text = await r.text()
    assert 'csms_firmware_campaign_stations{state="done"}' in text


async def test_failures_are_retried_then_failed_and_cancel(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    bad = await station(running, stations, "FW-BAD", firmware_update="InstallationFailed")
    await station(running, stations, "FW-OFF", connect=False)
    status, image = await upload(running, IMAGE, version="2.0.0")
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns",
        {
            "firmware_id": image["id"],
            "stations": ["FW-BAD", "FW-OFF"],
            "retries": 1,
            "retry_interval": 1,
        },
    )
    assert status == 201, created
    cid = created["id"]

    async def bad_failed() -> Any:
        c = await campaign(running, cid)
        s = {x["station_id"]: x for x in c["stations"]}
        return s if s["FW-BAD"]["state"] == "failed" else None

    s = await eventually(bad_failed)
    assert s["FW-BAD"]["attempts"] == 2
    assert "InstallationFailed" in s["FW-BAD"]["error"]
    assert s["FW-BAD"]["last_status"] == "InstallationFailed"
    assert bad.firmware_version == "1.0.0"
    assert s["FW-OFF"]["state"] == "pending"  # offline: it waits
    # a station cannot be in two running campaigns
    status, busy = await running.api.post(
        "/api/v1/firmware-campaigns", {"firmware_id": image["id"], "stations": ["FW-OFF"]}
    )
    assert status == 409 and busy["error"] == "stations_busy" and "FW-OFF" in busy["message"]
    status, cancelled = await running.api.post(f"/api/v1/firmware-campaigns/{cid}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"
    assert {x["station_id"]: x["state"] for x in cancelled["stations"]} == {
        "FW-BAD": "failed",
        "FW-OFF": "cancelled",
    }
    status, again = await running.api.post(f"/api/v1/firmware-campaigns/{cid}/cancel")
    assert status == 409 and again["error"] == "not_running"


async def test_removing_an_image(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    await station(running, stations, "FW-RM", connect=False)
    status, image = await upload(running, IMAGE, version="2.0.0")
    directory = running.system.settings.data_dir / "firmware"
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns", {"firmware_id": image["id"], "stations": ["FW-RM"]}
    )
    api = running.api
    status, body = await api.request("DELETE", f"/api/v1/firmware/{image['id']}")
    assert status == 409 and body["error"] == "in_use" and len(list(directory.iterdir())) == 1
    await api.post(f"/api/v1/firmware-campaigns/{created['id']}/cancel")
    status, body = await api.request("DELETE", f"/api/v1/firmware/{image['id']}")
    assert status == 200 and body["source"] == "removed"
    assert list(directory.iterdir()) == []
    status, body = await api.post(
        "/api/v1/firmware-campaigns", {"firmware_id": image["id"], "stations": ["FW-RM"]}
    )
    assert status == 409 and "removed" in body["message"]
    for path in ("/api/v1/firmware/999", "/api/v1/firmware/x", "/api/v1/firmware/0"):
        status, body = await api.request("DELETE", path)
        assert status == 404 and body["error"] == "not_found"


async def test_download_failure_retried_with_a_new_token(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    st = await station(running, stations, "FW-DL")
    status, image = await upload(running, IMAGE, version="2.0.0")
    # the first attempt's download fails (the file is not there); the retry works
    stored = next((running.system.settings.data_dir / "firmware").iterdir())
    hidden = stored.with_name("hidden")
    stored.rename(hidden)
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns",
        {
            "firmware_id": image["id"],
            "stations": ["FW-DL"],
            "retries": 2,
            "retry_interval": 1,
            "download_retries": 0,
        },
    )
    assert status == 201, created
    first = (await st.wait_for_call("UpdateFirmware"))["location"]

    async def retrying() -> Any:
        c = await campaign(running, created["id"])
        return c["stations"][0]["state"] == "retry"

    await eventually(retrying)
    hidden.rename(stored)
    done = await finished(running, created["id"])
    assert done["stations"][0]["state"] == "done" and done["stations"][0]["attempts"] == 2
    second = (await st.wait_for_call("UpdateFirmware"))["location"]
    assert second != first


async def test_campaign_survives_a_restart(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    await running.define_station("FW-R", 1)
    status, image = await upload(running, IMAGE, version="2.0.0")
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns", {"firmware_id": image["id"], "stations": ["FW-R"]}
    )
    assert status == 201
    await running.system.stop()  # (the station was never connected: still pending)
    running = await start()
    st = await station(running, stations, "FW-R")
    done = await finished(running, created["id"])
    assert done["stations"][0]["state"] == "done" and st.firmware_version == "2.0.0"


async def test_a_station_updating_across_a_restart_is_done_at_its_boot(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    st = await station(running, stations, "FW-X")
    st.on_call("UpdateFirmware", lambda payload: {})  # (it installs while csms is away)
    status, image = await upload(running, IMAGE, version="2.0.0")
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns", {"firmware_id": image["id"], "stations": ["FW-X"]}
    )
    assert status == 201, created
    await st.wait_for_call("UpdateFirmware")
    await eventually(lambda: _has(lambda: _states(running, created["id"]), "FW-X", "sent"))
    await st.disconnect()
    await running.system.stop()
    running = await start()
    st.firmware_version = "2.0.0"
    st.url = running.ocpp_url
    await st.connect()
    await st.boot_and_report()
    done = await finished(running, created["id"])
    assert done["stations"][0]["state"] == "done"
    assert done["stations"][0]["version_after"] == "2.0.0"
    assert done["stations"][0]["attempts"] == 1


async def _states(running: Running, cid: int) -> dict[str, Any]:
    return {s["station_id"]: s for s in (await campaign(running, cid))["stations"]}


async def test_window_closed_keeps_stations_pending(make_system: Any) -> None:
    start, stations = make_system
    running = await start()
    await station(running, stations, "FW-W")
    status, image = await upload(running, IMAGE, version="2.0.0")
    now = datetime.now(LISBON)
    start_at = (now + timedelta(hours=2)).strftime("%H:%M")
    end_at = (now + timedelta(hours=3)).strftime("%H:%M")
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns",
        {
            "firmware_id": image["id"],
            "stations": ["FW-W"],
            "window": {"start": start_at, "end": end_at, "time_zone": "Europe/Lisbon"},
        },
    )
    assert status == 201, created
    for _ in range(3):
        await running.system.firmware.run_once()
    c = await campaign(running, created["id"])
    assert c["stations"][0]["state"] == "pending" and c["window"]["start"] == start_at


async def test_hostile_requests(make_system: Any) -> None:
    start, _ = make_system
    running = await start(FIRMWARE__MAX_FILE_BYTES="2048")
    await running.define_station("FW-H", 1)
    api = running.api
    status, body = await upload(running, b"x" * 5000)
    assert status == 413 and body["error"] == "too_large"
    assert not list((running.system.settings.data_dir / "firmware").glob("*"))
    status, body = await upload(running, b"")
    assert status == 400
    status, body = await upload(running, b"abc", version="v" * 60)
    assert status == 400
    status, body = await api.post("/api/v1/firmware", {"url": "file:///etc/passwd"})
    assert status == 400 and body["error"] == "invalid_firmware"
    status, body = await api.post("/api/v1/firmware", [1, 2])
    assert status == 400
    status, image = await api.post(
        "/api/v1/firmware", {"url": "https://fw.example.pt/2.0.bin", "version": "2.0"}
    )
    assert status == 201 and image["source"] == "url"
    cases = [
        ({"firmware_id": 999, "stations": ["FW-H"]}, 404),
        ({"firmware_id": image["id"], "stations": ["NOPE"]}, 404),
        ({"firmware_id": image["id"], "stations": []}, 400),
        ({"firmware_id": image["id"], "stations": "FW-H"}, 400),
        ({"firmware_id": image["id"], "stations": ["x" * 256]}, 400),
        ({"firmware_id": image["id"], "stations": ["a\x00b"]}, 400),
        ({"firmware_id": 2**70, "stations": ["FW-H"]}, 400),
        (
            {
                "firmware_id": image["id"],
                "stations": ["FW-H"],
                "not_after": "9999-12-31T23:59-23:59",
            },
            400,
        ),
        (
            {
                "firmware_id": image["id"],
                "stations": ["FW-H"],
                "window": {"start": "01:00", "end": "02:00", "time_zone": "Europe"},
            },
            400,
        ),
        ({"firmware_id": image["id"], "stations": ["FW-H"] * 10_001}, 400),
        ({"firmware_id": "1", "stations": ["FW-H"]}, 400),
        ({"firmware_id": image["id"], "stations": ["FW-H"], "max_concurrent": -1}, 400),
    ]
    for body, expected in cases:
        status, answer = await api.post("/api/v1/firmware-campaigns", body)
        assert status == expected, (body, answer)
        assert "error" in answer
    for path in ("/api/v1/firmware-campaigns/abc", "/api/v1/firmware-campaigns/99"):
        status, answer = await api.get(path)
        assert status == 404 and answer["error"] == "not_found"
    status, answer = await api.get("/api/v1/firmware-campaigns?state=weird")
    assert status == 400
    status, answer = await api.get("/api/v1/firmware?limit=0")
    assert status == 400
    status, answer = await api.get("/api/v1/firmware-versions", auth=False)
    assert status == 401
    async with api.session.get(running.http_url + "/downloads/firmware/short") as r:
        assert r.status == 404
    async with api.session.get(running.http_url + "/downloads/firmware/" + "a" * 43) as r:
        assert r.status == 404


async def test_web_firmware_page_upload_campaign_and_cancel(make_system: Any) -> None:
    from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

    start, stations = make_system
    running = await start(**web_overrides())
    await station(running, stations, "FW-WEB")
    await running.define_station("FW-WEB-OFF", 1)
    admin, viewer = WebClient(running.http_url), WebClient(running.http_url)
    try:
        await admin.login(ADMIN)
        await viewer.login(VIEWER)
        status, page = await admin.get("/firmware")
        assert status == 200 and 'id="firmware-versions"' in page and 'data-version="1.0.0"' in page
        csrf = admin.csrf
        # the streamed upload: the session's CSRF token first, then the file
        form = aiohttp.FormData()
        form.add_field("csrf", csrf)
        form.add_field("version", "2.0.0")
        form.add_field("file", IMAGE, filename="fw.bin")
        async with admin.http.post(
            running.http_url + "/uploads/firmware", data=form, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/firmware"
        status, page = await admin.get("/firmware")
        assert hashlib.sha256(IMAGE).hexdigest() in page
        # without the token, or as a viewer: refused, nothing stored
        for client, token in ((admin, "wrong"), (viewer, viewer.csrf)):
            form = aiohttp.FormData()
            form.add_field("csrf", token)
            form.add_field("file", b"evil", filename="x.bin")
            async with client.http.post(
                running.http_url + "/uploads/firmware", data=form, allow_redirects=False
            ) as r:
                assert r.status == 403
        assert len(list((running.system.settings.data_dir / "firmware").iterdir())) == 1
        status, images = await running.api.get("/api/v1/firmware")
        image_id = images["items"][0]["id"]
        # a viewer cannot start a campaign
        status, _, _ = await viewer.post(
            "/firmware/campaigns", {"firmware_id": str(image_id), "stations": "FW-WEB"}
        )
        assert status == 403
        status, _, headers = await admin.post(
            "/firmware/campaigns",
            {
                "firmware_id": str(image_id),
                "stations": "FW-WEB, FW-WEB-OFF",
                "max_concurrent": "1",
                "retries": "0",
            },
        )
        assert status == 303, headers
        campaign_url = headers["Location"]
        cid = int(campaign_url.rsplit("/", 1)[1])

        async def web_done() -> Any:
            _, page = await admin.get(campaign_url)
            return 'data-station="FW-WEB" data-state="done"' in page

        await eventually(web_done)
        status, page = await admin.get(campaign_url)
        assert 'data-station="FW-WEB-OFF" data-state="pending"' in page
        assert 'id="campaign-cancel"' in page
        status, _, headers = await admin.post(
            "/firmware/campaigns/cancel", {"campaign_id": str(cid)}
        )
        assert status == 303
        status, page = await admin.get(campaign_url)
        assert 'data-state="cancelled"' in page and 'id="campaign-cancel"' not in page
        status, page = await viewer.get(campaign_url)
        assert status == 200 and 'id="campaign-cancel"' not in page
        assert (await admin.get("/firmware/campaigns/999"))[0] == 404
        assert (await admin.get("/firmware/campaigns/x"))[0] == 404
        # a bad form is answered with its reason, nothing is created
        status, _, _ = await admin.post(
            "/firmware/campaigns", {"firmware_id": str(image_id), "stations": "NOPE"}
        )
        status, page = await admin.get("/firmware")
        assert "unknown stations: NOPE" in page
        _, listed = await running.api.get("/api/v1/firmware-campaigns")
        assert listed["total"] == 1
        # the image, its campaign over, can be removed from the page
        status, _, _ = await viewer.post("/firmware/images/remove", {"image_id": str(image_id)})
        assert status == 403
        status, _, _ = await admin.post("/firmware/images/remove", {"image_id": str(image_id)})
        assert status == 303
        status, page = await admin.get("/firmware")
        assert f'data-image="{image_id}" data-source="removed"' in page
        assert list((running.system.settings.data_dir / "firmware").iterdir()) == []
    finally:
        await admin.close()
        await viewer.close()


async def test_retries_and_timeouts_follow_the_injected_clock(make_system: Any) -> None:
    from csms.clock import FakeClock

    start, stations = make_system
    # (behind the real time: the simulator waits for retrieveDate by the real clock)
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=3))
    running = await start(clock=clock)
    failing = await station(running, stations, "FW-T1", firmware_update="InstallationFailed")
    silent = await station(running, stations, "FW-T2")
    # FW-T2 accepts UpdateFirmware and then does nothing at all
    silent.on_call("UpdateFirmware", lambda payload: {})
    status, image = await upload(running, IMAGE, version="2.0.0")
    status, created = await running.api.post(
        "/api/v1/firmware-campaigns",
        {
            "firmware_id": image["id"],
            "stations": ["FW-T1", "FW-T2"],
            "retries": 1,
            "retry_interval": 600,
            "station_timeout": 3600,
        },
    )
    assert status == 201, created
    cid = created["id"]

    async def states() -> dict[str, Any]:
        return {s["station_id"]: s for s in (await campaign(running, cid))["stations"]}

    async def state_is(sid: str, state: str) -> Any:
        return await eventually(lambda: _has(states, sid, state))

    await state_is("FW-T1", "retry")
    await state_is("FW-T2", "sent")
    # nothing more happens while the clock stands still
    for _ in range(3):
        await running.system.firmware.run_once()
    s = await states()
    assert s["FW-T1"]["state"] == "retry" and s["FW-T1"]["attempts"] == 1
    assert failing.stats.received["UpdateFirmware"] == 1
    await clock.advance(601)  # the retry is due
    await running.system.firmware.run_once()  # (the round at the new time)
    s = await state_is("FW-T1", "failed")
    assert s["FW-T1"]["attempts"] == 2 and failing.stats.received["UpdateFirmware"] == 2
    assert s["FW-T2"]["state"] == "sent"
    await clock.advance(3000)  # FW-T2: an hour since its UpdateFirmware
    await running.system.firmware.run_once()  # (the round at the new time)
    s = await state_is("FW-T2", "retry")
    assert "within 3600 s" in s["FW-T2"]["error"]
    await clock.advance(601)
    await running.system.firmware.run_once()  # (the round at the new time)
    await state_is("FW-T2", "sent")
    assert silent.stats.received["UpdateFirmware"] == 2
    await clock.advance(3601)
    await running.system.firmware.run_once()  # (the round at the new time)
    s = await state_is("FW-T2", "failed")
    assert (await campaign(running, cid))["state"] == "finished"


async def _has(states: Callable[[], Awaitable[dict[str, Any]]], sid: str, state: str) -> Any:
    s = await states()
    return s if s[sid]["state"] == state else None


async def test_a_slow_firmware_upload_is_held_to_a_rate_not_a_deadline(make_system: Any) -> None:
    start, _ = make_system
    running = await start(HTTP__READ_TIMEOUT="0.5")
    boundary = "fwboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n2.0.0\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="fw.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunks = [IMAGE[i : i + 16384] for i in range(0, len(IMAGE), 16384)]

    async def body() -> AsyncIterator[bytes]:
        yield head
        for chunk in chunks:  # (longer in all than read_timeout, progressing all along)
            await asyncio.sleep(0.2)
            yield chunk
        yield tail

    async with running.api.session.post(
        running.http_url + "/api/v1/firmware",
        data=body(),
        headers={**running.api.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["sha256"] == hashlib.sha256(IMAGE).hexdigest()
