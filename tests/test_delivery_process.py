"""The OCPI delivery in a process of its own (issue 14): ``csms run`` starts it beside the
OCPP node, restarts it when it dies, and it stops when its node dies; commands cross from
it to the node that holds the station's websocket."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from csms.app import CentralSystem
from csms.cluster import Link, RemoteCommands, command_routes
from csms.commands import CommandError, StationOffline, UnknownAction
from csms.supervisor import DeliverySupervisor
from tests.conftest import _ADMIN_HASH, Api, Running, make_settings, station_body
from tests.daemon import Daemon
from tests.flaky_hub import FlakyHub
from tests.raw_client import RawClient
from tests.test_push_faults import eventually, register
from tests.test_push_strict import DAEMON_OCPI, evse_patches, sim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # (a zombie is dead too: its parent has not reaped it yet)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def _health(daemon: Daemon) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(daemon.http_url + "/healthz") as r:
        return dict(await r.json())


async def _metrics(daemon: Daemon) -> str:
    async with aiohttp.ClientSession() as s, s.get(daemon.http_url + "/metrics") as r:
        return await r.text()


async def test_pushes_come_from_a_child_process_and_survive_its_death(tmp_path: Path) -> None:
    async with FlakyHub() as hub:
        daemon = Daemon(tmp_path, extra_config=DAEMON_OCPI.format(offline=60))
        await daemon.start()
        try:
            assert daemon.proc is not None
            health = await _health(daemon)
            delivery = health["delivery"]
            assert health["status"] == "ok" and delivery["status"] == "ok"
            first = delivery["pid"]
            assert first != daemon.proc.pid and _alive(first)
            # its loopback port serves its node only: nothing without the start's secret
            started = [ln for ln in daemon.lines if ln.get("event") == "delivery process started"]
            internal = started[0]["internal_url"]
            async with aiohttp.ClientSession() as s:
                for path in ("/metrics", "/healthz", "/internal/ocpi/pending"):
                    for headers in ({}, {"Authorization": "Bearer guessed"}):
                        async with s.get(internal + path, headers=headers) as r:
                            assert r.status == 401, (path, headers)
                async with s.post(internal + "/internal/v1/topics?topic=ocpi.peers") as r:
                    assert r.status == 401
            async with aiohttp.ClientSession() as s:
                api = Api(daemon.http_url, s)
                await register(hub, daemon.http_url, api)
                assert (await api.put("/api/v1/stations/D1", station_body("D1", 1)))[0] == 201
                st = sim("D1", daemon.ocpp_url, 1)
                await st.connect()
                await st.boot_and_report()
                await eventually(lambda: _last(evse_patches(hub, "LOC-D1-01"))[0] == "AVAILABLE")
                # the node's /metrics carries the delivery process's figures
                text = await _metrics(daemon)
                assert "csms_delivery_events_relayed" in text and "ocpi_pushes_total" in text
                assert "csms_stations_connected" in text
                assert text.count("# TYPE ocpi_pushes_total counter") == 1  # (the child's)
                # the node's API asks the delivery process what is pending and measured
                hub.mode = "error500"
                await st.status(1, "Preparing")
                await eventually(lambda: _failing(api, "D1"))
                status, report = await api.get("/api/v1/ocpi/compliance")
                assert status == 200
                assert any(i["rule"] == "R6" and i["id"] == "D1" for i in report["items"])
                hub.mode = "ok"

                # killed, it is started again; what happened meanwhile still reaches the hub
                os.kill(first, signal.SIGKILL)
                await eventually(lambda: not _alive(first))
                await st.status(1, "Charging")
                await eventually(lambda: _restarted(daemon, first), timeout=20)
                await eventually(
                    lambda: _last(evse_patches(hub, "LOC-D1-01"))[0] == "CHARGING", timeout=20
                )
                health = await _health(daemon)
                assert health["delivery"]["restarts"] == 1
                assert any(
                    line.get("event") == "delivery process died: restarting it"
                    for line in daemon.lines
                )
                await st.disconnect()
            assert hub.stale_writes() == []
            second = (await _health(daemon))["delivery"]["pid"]
        finally:
            assert await daemon.signal(signal.SIGTERM) == 0
        # a clean stop stops the child too
        await eventually(lambda: not _alive(second))


async def _failing(api: Api, station: str) -> bool:
    status, body = await api.get("/api/v1/ocpi/pushes")
    return status == 200 and any(
        str(i["id"]).startswith(station) and i["failing_since"] for i in body["items"]
    )


def _last(patches: list[tuple[str, str]]) -> tuple[str, Any]:
    return (patches[-1][0], None) if patches else ("", None)


async def _restarted(daemon: Daemon, old: int) -> bool:
    delivery = (await _health(daemon)).get("delivery", {})
    return delivery.get("status") == "ok" and delivery.get("pid") not in (None, old)


async def test_the_delivery_process_stops_when_its_node_is_killed(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, extra_config=DAEMON_OCPI.format(offline=60))
    await daemon.start()
    child = (await _health(daemon))["delivery"]["pid"]
    assert _alive(child)
    assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL
    # no node, no pushes: an orphan would race the next start's delivery process
    await eventually(lambda: not _alive(child), timeout=10)
    # the next start has a delivery process of its own
    daemon = Daemon(tmp_path)
    await daemon.start()
    try:
        health = await _health(daemon)
        assert health["delivery"]["status"] == "ok" and health["delivery"]["pid"] != child
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0


async def test_without_an_extension_everything_stays_in_one_process(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)  # (no [ocpi])
    await daemon.start()
    try:
        assert "delivery" not in await _health(daemon)
        running = [line for line in daemon.lines if line.get("event") == "central system running"]
        assert running[0]["delivery"] == "in this process"
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0


# ---------------------------------------------------------------------------- commands


@pytest.fixture
async def node(csms: Running) -> Any:
    """The node's end of the commands of another process, on a loopback port of its own,
    over a running csms (its command port)."""
    app = web.Application()
    app.add_routes(command_routes(csms.system.commands, lambda: ["s3cret-of-this-start"]))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_command_reaches_the_station_through_its_node(csms: Running, node: str) -> None:
    await csms.define_station("RC1", 1)
    station = await RawClient.open(f"{csms.ocpp_url}/RC1")
    remote = RemoteCommands(Link(node, "s3cret-of-this-start"), 5.0)
    try:
        heard: list[Any] = []
        answer = await remote.send(
            "RC1",
            "TriggerMessage",
            {"requestedMessage": "StatusNotification", "connectorId": 1},
            origin="ocpi-r7",
            on_answer=heard.append,
        )
        assert answer == {"status": "Accepted"} and heard == [answer]
        assert station.received_calls == [
            ("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1})
        ]
        # the command is recorded by the node, with its origin
        rows = await csms.system.store.read("SELECT action, origin, outcome FROM commands")
        assert ("TriggerMessage", "ocpi-r7", "ok") in {tuple(r.values()) for r in rows}
        with pytest.raises(StationOffline):
            await remote.send("NOT-HERE", "Reset", {"type": "Soft"})
        with pytest.raises(UnknownAction):
            await remote.send("RC1", "MakeCoffee", {})
    finally:
        await remote.close()
        await station.close()


async def test_a_command_without_the_secret_is_refused(csms: Running, node: str) -> None:
    await csms.define_station("RC2", 1)
    station = await RawClient.open(f"{csms.ocpp_url}/RC2")
    remote = RemoteCommands(Link(node, "guessed"), 5.0)
    try:
        with pytest.raises(CommandError, match="HTTP 401"):
            await remote.send("RC2", "Reset", {"type": "Hard"})
        async with (
            aiohttp.ClientSession() as s,
            s.post(node + "/internal/v1/commands", json={"station_id": "RC2"}) as r,
        ):
            assert r.status == 401
        rows = await csms.system.store.read("SELECT action FROM commands")
        assert rows == []  # nothing reached the station
    finally:
        await remote.close()
        await station.close()


async def test_a_malformed_internal_command_gets_a_clear_400(csms: Running, node: str) -> None:
    """Even with the secret, what is not a command is refused and reaches no station."""
    headers = Link(node, "s3cret-of-this-start").headers
    bodies: list[Any] = [
        b"not json",
        b"[]",
        b'{"station_id": "RC3"}',
        b'{"station_id": 7, "action": "Reset", "payload": {}}',
        b'{"station_id": "RC3", "action": "Reset", "payload": "soft"}',
        b'{"station_id": "RC3", "action": "Reset", "payload": {}, "timeout": "soon"}',
    ]
    async with aiohttp.ClientSession() as s:
        for body in bodies:
            async with s.post(node + "/internal/v1/commands", data=body, headers=headers) as r:
                answer = await r.json()
                assert r.status == 400 and answer["error"] == "bad_request", (body, answer)
    assert await csms.system.store.read("SELECT action FROM commands") == []


@pytest.mark.sqlite_only  # (on PostgreSQL, every relay's position is in cluster_members)
async def test_events_are_pruned_only_as_far_as_the_delivery_process_has_read(
    tmp_path: Path,
) -> None:
    """The node prunes the outbox; a row the delivery process has not read yet stays, and
    while that process cannot tell how far it is, nothing is pruned."""
    supervisor = DeliverySupervisor(None, node_url="")
    system = CentralSystem(
        make_settings(tmp_path), admin_password_hash=_ADMIN_HASH, delivery=supervisor
    )
    system.relay.cursor = (0, 100)  # (the node's own relay passes over most kinds)
    assert await system._published() is None  # the delivery process is down

    async def health(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {supervisor.secret}"
        return web.json_response({"status": "ok", "events_relayed": 7, "cursor": [0, 40]})

    app = web.Application()
    app.router.add_get("/healthz", health)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        supervisor.link = Link(f"http://127.0.0.1:{runner.addresses[0][1]}", supervisor.secret)
        assert await system._published() == (0, 40)
        system.relay.cursor = (0, 30)
        assert await system._published() == (0, 30)
    finally:
        await runner.cleanup()
