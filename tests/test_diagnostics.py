"""Diagnostics end to end: GetDiagnostics from the API, the simulated station uploading its
file over HTTP to csms, DiagnosticsStatusNotification followed, the files listed and
downloaded; the upload URL under hostile use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from charger_sim import Behaviour, Station
from tests.conftest import Running, start_system
from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[Running, list[Station]]]:
    sys_, session, running = await start_system(
        tmp_path, FIRMWARE__MAX_DIAGNOSTICS_BYTES="2048", **web_overrides()
    )
    stations: list[Station] = []
    try:
        yield running, stations
    finally:
        for st in stations:
            await st.disconnect()
        await session.close()
        await sys_.stop()


async def station(running: Running, stations: list[Station], cp: str, **behaviour: Any) -> Station:
    await running.define_station(cp, 1)
    st = Station(
        cp, url=running.ocpp_url, connectors=1, behaviour=Behaviour(step_delay=0.01, **behaviour)
    )
    stations.append(st)
    await st.connect()
    await st.boot_and_report()
    return st


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {value!r}")
        await asyncio.sleep(0.05)


async def test_diagnostics_uploaded_listed_and_downloaded(system: Any) -> None:
    running, stations = system
    st = await station(running, stations, "DG-1")
    api = running.api
    status, answer = await api.post(
        "/api/v1/stations/DG-1/diagnostics",
        {"start_time": "2026-01-01T00:00:00Z", "stop_time": "2026-01-02T00:00:00+01:00"},
    )
    assert status == 200, answer
    assert answer["file_name"].startswith("diagnostics-DG-1-")
    sent = await st.wait_for_call("GetDiagnostics")
    assert "/uploads/diagnostics/" in sent["location"]
    assert sent["startTime"].startswith("2026-01-01T00:00:00")
    assert sent["stopTime"].startswith("2026-01-01T23:00:00")

    async def uploaded() -> Any:
        _, listed = await api.get("/api/v1/stations/DG-1/diagnostics")
        item = listed["items"][0]
        return item if item["last_status"] == "Uploaded" and item["file_name"] else None

    item = await eventually(uploaded)
    assert item["answer_file"] == answer["file_name"] and item["file_size"] > 0
    assert item["requested_by"] == "api"
    # the file is in the data directory, under the station, private
    files = list((running.system.settings.data_dir / "diagnostics").glob("*/*"))
    assert [f.name for f in files] == [item["file_name"]]
    assert files[0].stat().st_mode & 0o077 == 0
    async with api.session.get(
        f"{running.http_url}/api/v1/stations/DG-1/diagnostics/{item['file_name']}",
        headers=api.auth,
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Disposition"].startswith("attachment")
        assert (await r.read()).startswith(b"# diagnostics of DG-1")
    # the station's status is kept as before
    _, detail = await api.get("/api/v1/stations/DG-1")
    assert detail["diagnostics_status"] == "Uploaded"
    # the upload URL was for one file
    async with api.session.put(sent["location"], data=b"again") as r:
        assert r.status == 410


async def test_upload_url_under_hostile_use(system: Any) -> None:
    running, stations = system
    st = await station(running, stations, "DG-2")
    # the station answers, but does not upload: the test uses its URL
    st.on_call("GetDiagnostics", lambda payload: {"fileName": "dg.log"})
    api = running.api
    status, answer = await api.post("/api/v1/stations/DG-2/diagnostics")
    assert status == 200 and answer["file_name"] == "dg.log"
    location = (await st.wait_for_call("GetDiagnostics"))["location"]
    session = api.session
    async with session.put(location, data=b"x" * 5000) as r:
        assert r.status == 413
    async with session.put(location.rsplit("/", 1)[0] + "/" + "a" * 43, data=b"x") as r:
        assert r.status == 404
    async with session.put(location.rsplit("/", 1)[0] + "/../../etc", data=b"x") as r:
        assert r.status == 404
    assert not list((running.system.settings.data_dir / "diagnostics").glob("*/*"))
    # a multipart POST works too, with a hostile file name made safe
    form = aiohttp.FormData()
    form.add_field("file", b"log line\n", filename="../../evil.sh")
    async with session.post(location, data=form) as r:
        assert r.status == 201, await r.text()
        stored = (await r.json())["file"]
    assert "/" not in stored and stored.endswith("dg.log")
    async with session.post(location, data=b"second") as r:
        assert r.status == 410
    for bad in ("..%2F..%2Fetc%2Fpasswd", ".hidden", "nope.log"):
        status, body = await api.get(f"/api/v1/stations/DG-2/diagnostics/{bad}")
        assert status == 404 and "error" in body
    status, body = await api.get("/api/v1/stations/NOPE/diagnostics")
    assert status == 404
    status, body = await api.post("/api/v1/stations/DG-2/diagnostics", {"retries": "3"})
    assert status == 422 and "error" in body
    status, body = await api.post("/api/v1/stations/DG-2/diagnostics", {"start_time": "soon"})
    assert status == 422
    status, body = await api.post("/api/v1/stations/DG-2/diagnostics", [1])
    assert status == 400
    status, body = await api.get("/api/v1/stations/DG-2/diagnostics", auth=False)
    assert status == 401


async def test_upload_failed_and_offline(system: Any) -> None:
    running, stations = system
    await station(running, stations, "DG-3", diagnostics_upload="UploadFailed")
    status, _ = await running.api.post("/api/v1/stations/DG-3/diagnostics")
    assert status == 200

    async def failed() -> Any:
        _, listed = await running.api.get("/api/v1/stations/DG-3/diagnostics")
        return listed["items"][0]["last_status"] == "UploadFailed"

    await eventually(failed)
    await running.define_station("DG-4", 1)
    status, body = await running.api.post("/api/v1/stations/DG-4/diagnostics")
    assert status == 409 and body["error"] == "station_offline"


async def test_web_station_panel_requests_lists_and_downloads(system: Any) -> None:
    running, stations = system
    await station(running, stations, "DG-W")
    admin, viewer = WebClient(running.http_url), WebClient(running.http_url)
    try:
        await admin.login(ADMIN)
        await viewer.login(VIEWER)
        status, page = await admin.get("/stations/DG-W")
        assert status == 200 and 'id="diagnostics-request"' in page
        status, page = await viewer.get("/stations/DG-W")
        assert 'id="diagnostics-requests"' in page and 'id="diagnostics-request"' not in page
        status, _, _ = await viewer.post("/stations/DG-W/diagnostics", {})
        assert status == 403
        status, _, headers = await admin.post("/stations/DG-W/diagnostics", {})
        assert status == 303 and headers["Location"].endswith("#command-result")

        async def listed() -> Any:
            _, page = await admin.get("/stations/DG-W")
            return page if 'data-status="Uploaded"' in page else None

        page = await eventually(listed)
        _, items = await running.api.get("/api/v1/stations/DG-W/diagnostics")
        name = items["items"][0]["file_name"]
        assert f"/stations/DG-W/diagnostics/{name}" in page
        async with admin.http.get(f"{running.http_url}/stations/DG-W/diagnostics/{name}") as r:
            assert r.status == 200 and (await r.read()).startswith(b"# diagnostics of DG-W")
        async with viewer.http.get(
            f"{running.http_url}/stations/DG-W/diagnostics/{name}", allow_redirects=False
        ) as r:
            assert r.status == 403
        assert (await admin.get("/stations/DG-W/diagnostics/nope.log"))[0] == 404
        status, _, _ = await admin.post("/stations/NOPE/diagnostics", {})
        assert status == 404
    finally:
        await admin.close()
        await viewer.close()


async def test_old_requests_go_with_their_files(
    system: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csms.repositories.firmware as repo

    monkeypatch.setattr(repo, "DIAGNOSTICS_KEPT", 1)
    running, stations = system
    await station(running, stations, "DG-5")
    directory = running.system.settings.data_dir / "diagnostics"
    names = []
    for _ in range(2):
        status, _ = await running.api.post("/api/v1/stations/DG-5/diagnostics")
        assert status == 200

        async def uploaded() -> Any:
            _, listed = await running.api.get("/api/v1/stations/DG-5/diagnostics")
            item = listed["items"][0]
            return item["file_name"] if item["uploaded_at"] else None

        names.append(await eventually(uploaded))
    assert names[0] != names[1]
    assert [f.name for f in directory.glob("*/*")] == [names[1]]
    _, listed = await running.api.get("/api/v1/stations/DG-5/diagnostics")
    assert listed["total"] == 1
