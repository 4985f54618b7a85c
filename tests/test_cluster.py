"""Several csms processes on one PostgreSQL database (issue 14, csms.members): OCPP nodes
and delivery workers as real processes, stations as simulated chargers on real websockets,
the hub a real HTTP server.

- a command reaches a station through any node; a station that connects to another node
  replaces its old connection cluster-wide (and is not reported offline for it);
- ``kill -9`` of a node under load: its stations reconnect to another (the load balancer's
  job, played here by the test: it points them to the live node), and every transaction and
  meter value is stored exactly once;
- ``kill -9`` of the delivery worker that holds the lease: the standby takes over within
  10 s and the hub still gets every change, never a stale one;
- the PostgreSQL server crashes and comes back under load: the nodes recover by themselves
  and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from charger_sim import Behaviour, Station
from ocpi_bridge.transport import parse_ocpi_time
from tests import dbs
from tests.conftest import Api, station_body
from tests.daemon import Daemon
from tests.flaky_hub import FlakyHub
from tests.pg import PgServer
from tests.test_push_faults import register
from tests.test_push_strict import DAEMON_OCPI, evse_patches

pytestmark = pytest.mark.postgresql_only

NODE = "[id_tags]\naccept_unknown = true\n"
# per station: transactions, and MeterValues in each (two sampled values per message)
TRANSACTIONS = 6
METER_VALUES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(check: Callable[[], Any], seconds: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, f"condition not met in time: {what}"
        await asyncio.sleep(0.05)


def _node(workdir: Path, extra: str = "", role: str = "auto", port: int = 0) -> Daemon:
    daemon = Daemon(workdir, extra_config=NODE + extra, args=("--role", role))
    text = daemon.config.read_text().replace(
        "call_timeout = 5\n", "call_timeout = 5\naccept_unknown_stations = true\n"
    )
    if port:
        text = text.replace(
            '[http]\nhost = "127.0.0.1"\nport = 0', f'[http]\nhost = "127.0.0.1"\nport = {port}'
        )
    daemon.config.write_text(text)
    return daemon


def _worker(workdir: Path, extra: str) -> Daemon:
    return Daemon(
        workdir, extra_config=extra, args=("--role", "delivery"), ready="delivery process serving"
    )


def _station(station_id: str, url: str, connectors: int = 1) -> Station:
    return Station(
        station_id,
        url,
        connectors,
        behaviour=Behaviour(
            auto_heartbeat=False,
            auto_meter_values=False,
            auto_reconnect=True,
            reconnect_delay=0.2,
            retry_transaction_messages=True,
            step_delay=0.0,
        ),
        response_timeout=5.0,
        config={"TransactionMessageAttempts": "30", "TransactionMessageRetryInterval": "1"},
    )


async def _health(daemon: Daemon) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(daemon.http_url + "/healthz") as r:
        return dict(await r.json())


async def _db() -> asyncpg.Connection:
    return await asyncpg.connect(os.environ[dbs.URL_ENV])


async def _charge(st: Station, n_tx: int = TRANSACTIONS, pause: float = 0.02) -> None:
    """Transactions one after the other, each with its MeterValues (distinct readings);
    sent, or queued while the station is offline and sent once it is back."""
    energy = 0
    for _ in range(n_tx):
        await st.start_transaction(1, "TAG", meter_start=energy)
        for _ in range(METER_VALUES):
            energy += 100
            await st.meter_values(1, energy_wh=energy, power_w=7000)
            await asyncio.sleep(pause)
        energy += 100
        await st.stop_transaction(connector_id=1, meter_stop=energy)
        await asyncio.sleep(pause)


async def _everything_stored_once(stations: list[Station]) -> None:
    """Each station's transactions, all stopped, each with exactly its MeterValues."""
    for st in stations:
        assert st.stats.dropped == 0, (st.id, st.stats.last_errors[-3:])
    db = await _db()
    try:
        for st in stations:
            rows = await db.fetch(
                "SELECT t.id, t.meter_start, t.meter_stop, "
                "(SELECT COUNT(*) FROM meter_values m WHERE m.transaction_id = t.id "
                " AND m.source = 'MeterValues') AS samples "
                "FROM transactions t WHERE t.station_id = $1 ORDER BY t.meter_start",
                st.id,
            )
            assert len(rows) == TRANSACTIONS, (st.id, [dict(r) for r in rows])
            step = (METER_VALUES + 1) * 100
            for i, r in enumerate(rows):
                assert r["meter_start"] == i * step and r["meter_stop"] == (i + 1) * step, dict(r)
                assert r["samples"] == 2 * METER_VALUES, (st.id, dict(r))
    finally:
        await db.close()


async def _drained(stations: list[Station]) -> bool:
    return all(st.connected and not st.queued_messages for st in stations)


# ---------------------------------------------------------------------------- routing


async def test_commands_cross_nodes_and_a_station_moving_replaces_its_old_connection(
    tmp_path: Path,
) -> None:
    a, b = _node(tmp_path / "a"), _node(tmp_path / "b")
    await a.start()
    await b.start()
    st = _station("MOVER", a.ocpp_url)
    st.behaviour.auto_reconnect = False
    try:
        await st.connect()
        await st.boot()
        async with aiohttp.ClientSession() as s:
            api_b = Api(b.http_url, s)
            # the station is on A; B sends the command there and returns its answer
            status, body = await api_b.post(
                "/api/v1/stations/MOVER/commands/GetConfiguration", {"key": ["HeartbeatInterval"]}
            )
            assert status == 200, body
            assert body["response"]["configurationKey"][0]["key"] == "HeartbeatInterval"
            health = await _health(b)
            assert len(health["cluster"]["members"]) == 2 and health["stations_connected"] == 0

            # the station comes back through B (the balancer sent it there): A lets go
            again = _station("MOVER", b.ocpp_url)
            again.behaviour.auto_reconnect = False
            await again.connect()
            await _until(lambda: not st.connected, what="A closes the old connection")
            assert (await _health(a))["stations_connected"] == 0
            assert any(
                ln.get("event") == "station connected to another node: closing its connection here"
                for ln in a.lines
            )
            # and it is not reported offline for that: its last event says connected
            db = await _db()
            try:
                kinds = [
                    r["kind"]
                    for r in await db.fetch(
                        "SELECT kind FROM events WHERE station_id = 'MOVER' "
                        "AND kind IN ('StationConnected', 'StationDisconnected') ORDER BY tx, id"
                    )
                ]
                assert kinds == ["StationConnected", "StationConnected"], kinds
                holder = await db.fetchval(
                    "SELECT m.url FROM station_presence p JOIN cluster_members m "
                    "USING (member_id) WHERE p.station_id = 'MOVER'"
                )
                assert holder == b.http_url
            finally:
                await db.close()
            # a command through A now reaches it on B
            api_a = Api(a.http_url, s)
            status, body = await api_a.post("/api/v1/stations/MOVER/commands/ClearCache", {})
            assert (status, body["response"]) == (200, {"status": "Accepted"}), body
            await again.disconnect()
            status, body = await api_a.post("/api/v1/stations/MOVER/commands/ClearCache", {})
            assert (status, body["error"]) == (409, "station_offline"), body
    finally:
        await st.disconnect()
        for d in (a, b):
            assert await d.signal(signal.SIGTERM) == 0


async def test_a_station_retired_through_one_node_is_closed_on_the_node_holding_it(
    tmp_path: Path,
) -> None:
    a, b = _node(tmp_path / "a"), _node(tmp_path / "b")
    await a.start()
    await b.start()
    st = _station("OLDONE", a.ocpp_url)
    st.behaviour.auto_reconnect = False
    try:
        async with aiohttp.ClientSession() as s:
            api_b = Api(b.http_url, s)
            status, body = await api_b.put("/api/v1/stations/OLDONE", station_body("OLDONE", 1))
            assert status == 201, body
            await st.connect()
            await st.boot()
            # retired through B while A holds the connection: A closes it
            status, body = await api_b.post("/api/v1/stations/OLDONE/retire", {"reason": "gone"})
            assert status == 200, body
            await _until(lambda: not st.connected, what="A closes the retired station")
            assert any(
                ln.get("event") == "connection closed: the station is retired"
                and ln.get("station_id") == "OLDONE"
                for ln in a.lines
            )
            assert (await _health(a))["stations_connected"] == 0
    finally:
        await st.disconnect()
        for d in (a, b):
            assert await d.signal(signal.SIGTERM) == 0


# ---------------------------------------------------------------------------- faults


async def test_kill_9_of_a_node_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    a, b = _node(tmp_path / "a"), _node(tmp_path / "b")
    await a.start()
    await b.start()
    stations = [_station(f"K{i:02}", a.ocpp_url) for i in range(12)]
    try:
        for st in stations:
            await st.connect()
            await st.boot()
        load = [asyncio.create_task(_charge(st)) for st in stations]
        # killed mid-load: some messages are committed but never answered, some never sent
        db = await _db()
        try:
            await _until(
                lambda: db.fetchval("SELECT COUNT(*) > 20 FROM transactions"),
                what="the load has started",
            )
        finally:
            await db.close()
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        db = await _db()
        try:
            at_kill = await db.fetchval("SELECT COUNT(*) FROM transactions")
        finally:
            await db.close()
        assert at_kill < len(stations) * TRANSACTIONS  # (killed under load, not after it)
        for st in stations:  # (what a load balancer does once its health check fails)
            st.url = b.ocpp_url
        await asyncio.wait_for(asyncio.gather(*load), 120)
        await _until(lambda: _drained(stations), 60, "every queue delivered through B")
        await _everything_stored_once(stations)
        assert (await _health(b))["stations_connected"] == len(stations)
        assert all(st.stats.connects >= 2 for st in stations)  # (all of them moved to B)
    finally:
        for st in stations:
            await st.disconnect()
        assert await b.signal(signal.SIGTERM) == 0
        a.kill_if_running()


async def test_kill_9_of_the_delivering_worker_the_standby_takes_over(tmp_path: Path) -> None:
    port = _free_port()
    ocpi = DAEMON_OCPI.format(offline=60) + f'public_url = "http://127.0.0.1:{port}"\n'
    async with FlakyHub() as hub:
        node = _node(tmp_path / "node", ocpi, role="ocpp", port=port)
        await node.start()
        workers = [_worker(tmp_path / f"w{i}", ocpi) for i in (1, 2)]
        for w in workers:
            await w.start()
        try:
            await _until(
                lambda: sum(_delivering(w) for w in workers) == 1, what="one worker delivers"
            )
            active = next(w for w in workers if _delivering(w))
            standby = next(w for w in workers if w is not active)
            async with aiohttp.ClientSession() as s:
                api = Api(node.http_url, s)
                await register(hub, node.http_url, api)
                assert (await api.put("/api/v1/stations/W1", station_body("W1", 1)))[0] == 201
                st = _station("W1", node.ocpp_url)
                st.behaviour.auto_reconnect = False
                await st.connect()
                await st.boot_and_report()
                uid = "LOC-W1-01"
                await _until(lambda: _last(hub, uid) == "AVAILABLE", what="first PATCH")

                assert active.proc is not None
                active.proc.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await st.status(1, "Charging")
                await _until(lambda: _delivering(standby), 10, "the standby takes the lease")
                await _until(lambda: _last(hub, uid) == "CHARGING", 10, "the change delivered")
                took = time.monotonic() - killed
                await st.status(1, "Unavailable")
                await _until(lambda: _last(hub, uid) == "INOPERATIVE", 10, "and the next")
                assert took < 10, took
                assert hub.stale_writes() == []
                # the node's API asks the worker that now delivers
                status, body = await api.get("/api/v1/ocpi/pushes")
                assert status == 200, body
                await _worker_routes_need_the_cluster_secret(standby, s)
                await st.disconnect()
        finally:
            for d in (node, *workers):
                if d.proc is not None and d.proc.returncode is None:
                    assert await d.signal(signal.SIGTERM) == 0


async def _worker_routes_need_the_cluster_secret(worker: Daemon, s: aiohttp.ClientSession) -> None:
    """A worker started by hand serves its health to anyone and the rest to the cluster
    only; a topic it cannot be is refused clearly."""
    port = next(
        ln["internal_port"] for ln in worker.lines if ln.get("event") == "delivery process serving"
    )
    base = f"http://127.0.0.1:{port}"
    db = await _db()
    try:
        secret = await db.fetchval("SELECT secret FROM cluster_secret")
    finally:
        await db.close()
    async with s.get(base + "/healthz") as r:
        assert r.status == 200 and (await r.json())["delivering"] is True
    for headers in ({}, {"Authorization": "Bearer guessed"}, {"Authorization": secret}):
        async with s.get(base + "/internal/ocpi/pending", headers=headers) as r:
            assert r.status == 401, headers
        async with s.post(base + "/internal/v1/topics?topic=ocpi.peers", headers=headers) as r:
            assert r.status == 401, headers
    cluster = {"Authorization": f"Bearer {secret}"}
    async with s.get(base + "/internal/ocpi/pending", headers=cluster) as r:
        assert r.status == 200 and isinstance(await r.json(), list)
    for topic in ("", "x" * 101):
        async with s.post(base + f"/internal/v1/topics?topic={topic}", headers=cluster) as r:
            assert r.status == 400 and (await r.json())["error"] == "bad_topic"


def _delivering(worker: Daemon) -> bool:
    return any(ln.get("event") == "delivering" for ln in worker.lines) and (
        worker.proc is not None and worker.proc.returncode is None
    )


def _last(hub: FlakyHub, uid: str) -> str:
    patches = evse_patches(hub, uid)
    return patches[-1][0] if patches else ""


# R7: a short silence limit, so that the test takes seconds (MOBI.E's is 5 minutes)
R7_SILENCE = 6


@pytest.mark.parametrize("kill_worker", [False, True], ids=["node_dies", "node_and_worker_die"])
async def test_r7_fires_once_for_the_cluster_when_the_node_holding_the_station_dies(
    tmp_path: Path, kill_worker: bool
) -> None:
    """Issue 14: two OCPP nodes, two delivery workers (one holds the lease), one hub. A
    station on node A reports its EVSEs Available; A is killed (-9) and the station never
    comes back. After ``offline_after`` the hub gets exactly one UNKNOWN PATCH per EVSE:
    not none (nobody left to notice the silence), not two. Second variant: the worker that
    delivers is killed (-9) too, before the silence ends; the standby takes over and it
    still fires once."""
    port_a, port_b = _free_port(), _free_port()
    # (the balancer's URL, played here by B: the node that survives)
    ocpi = DAEMON_OCPI.format(offline=R7_SILENCE) + f'public_url = "http://127.0.0.1:{port_b}"\n'
    async with FlakyHub() as hub:
        a = _node(tmp_path / "a", ocpi, role="ocpp", port=port_a)
        b = _node(tmp_path / "b", ocpi, role="ocpp", port=port_b)
        workers = [_worker(tmp_path / f"w{i}", ocpi) for i in (1, 2)]
        st: Station | None = None
        try:
            for d in (a, b, *workers):
                await d.start()
            await _until(
                lambda: sum(_delivering(w) for w in workers) == 1, what="one worker delivers"
            )
            active = next(w for w in workers if _delivering(w))
            standby = next(w for w in workers if w is not active)
            uids = ["LOC-SILENT-01", "LOC-SILENT-02"]
            async with aiohttp.ClientSession() as s:
                api = Api(b.http_url, s)
                await register(hub, b.http_url, api)
                status, body = await api.put("/api/v1/stations/SILENT", station_body("SILENT", 2))
                assert status == 201, body
            st = _station("SILENT", a.ocpp_url, connectors=2)
            st.behaviour.auto_reconnect = False
            await st.connect()
            await st.boot_and_report()
            await _until(
                lambda: all(_last(hub, uid) == "AVAILABLE" for uid in uids),
                what="the EVSEs PATCHed AVAILABLE",
            )
            await _until(
                lambda: (
                    hub.locations["LOC-SILENT"]["last_updated"]
                    == max(lu for uid in uids for _, lu in evse_patches(hub, uid))
                ),
                what="the last frame's time PATCHed (R8)",
            )
            last_frame = parse_ocpi_time(hub.locations["LOC-SILENT"]["last_updated"])
            assert a.proc is not None
            a.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert await a.proc.wait() == -signal.SIGKILL
            await st.disconnect()  # (and it never comes back)
            if kill_worker:
                assert active.proc is not None
                active.proc.send_signal(signal.SIGKILL)
                assert await active.proc.wait() == -signal.SIGKILL
                await _until(lambda: _delivering(standby), 10, "the standby takes the lease")
                # the standby took over before the silence ended: R7 is its to fire
                assert _unknown_patches(hub, uids) == {uid: [] for uid in uids}
                assert time.monotonic() - killed < R7_SILENCE - 1, "too slow to mean anything"
            await _until(
                lambda: all(_unknown_patches(hub, uids).values()),
                R7_SILENCE + 15,
                "R7: the EVSEs PATCHed UNKNOWN",
            )
            # a second one would come now (a second worker's timer, a resynchronisation)
            await asyncio.sleep(5)
            found = _unknown_patches(hub, uids)
            assert {uid: len(found[uid]) for uid in uids} == dict.fromkeys(uids, 1), found
            assert not any(
                evse["status"] == "UNKNOWN"
                for r in hub.accepted()
                if r["method"] == "PUT" and isinstance(r["body"], dict)
                for evse in r["body"].get("evses", [])
            ), "UNKNOWN carried by a Location PUT as well"
            for uid in uids:  # (OCPI times are to the second)
                since = parse_ocpi_time(found[uid][0]) - last_frame
                assert abs(since.total_seconds() - R7_SILENCE) <= 1, (uid, since)
                assert hub.locations["LOC-SILENT"]["evses"][uids.index(uid)]["status"] == (
                    "UNKNOWN"
                )
            assert hub.stale_writes() == []
        finally:
            if st is not None:
                await st.disconnect()
            for d in (a, b, *workers):
                if d.proc is not None and d.proc.returncode is None:
                    assert await d.signal(signal.SIGTERM) == 0
                else:
                    d.kill_if_running()


async def test_a_standby_taking_over_knows_the_frames_that_came_while_it_waited(
    tmp_path: Path,
) -> None:
    """A standby learns each station's last frame when it takes the lease, not at its own
    start: a station that kept speaking while the standby waited longer than
    ``offline_after`` is not PATCHed UNKNOWN when the standby takes over (with MOBI.E's 5
    minutes, every station would be, after any takeover by a worker up for 5 minutes)."""
    ocpi = DAEMON_OCPI.format(offline=R7_SILENCE)
    async with FlakyHub() as hub:
        node = _node(tmp_path / "node", ocpi, role="ocpp")
        workers = [_worker(tmp_path / f"w{i}", ocpi) for i in (1, 2)]
        st: Station | None = None
        try:
            await node.start()
            async with aiohttp.ClientSession() as s:
                api = Api(node.http_url, s)
                await register(hub, node.http_url, api)
                status, body = await api.put("/api/v1/stations/TALKS", station_body("TALKS", 1))
                assert status == 201, body
            st = _station("TALKS", node.ocpp_url)
            await st.connect()
            await st.boot_and_report()
            for w in workers:
                await w.start()
            await _until(
                lambda: sum(_delivering(w) for w in workers) == 1, what="one worker delivers"
            )
            active = next(w for w in workers if _delivering(w))
            standby = next(w for w in workers if w is not active)
            uid = "LOC-TALKS-01"
            await _until(lambda: _last(hub, uid) == "AVAILABLE", what="the EVSE AVAILABLE")
            # the station speaks every second for longer than the silence limit
            waited = time.monotonic()
            while time.monotonic() - waited < R7_SILENCE + 2:
                assert await st.heartbeat() is not None
                await asyncio.sleep(1)
            assert active.proc is not None
            active.proc.send_signal(signal.SIGKILL)
            assert await active.proc.wait() == -signal.SIGKILL
            await _until(lambda: _delivering(standby), 10, "the standby takes the lease")
            for _ in range(4):  # it keeps speaking; a wrong silence timer fires meanwhile
                assert await st.heartbeat() is not None
                await asyncio.sleep(1)
            assert _unknown_patches(hub, [uid]) == {uid: []}
            assert _last(hub, uid) == "AVAILABLE"
            # and the standby's silence timer is right: silent now, UNKNOWN once, on time
            await st.disconnect()
            st = None
            await _until(
                lambda: _unknown_patches(hub, [uid])[uid], R7_SILENCE + 10, "R7 after silence"
            )
            assert len(_unknown_patches(hub, [uid])[uid]) == 1
        finally:
            if st is not None:
                await st.disconnect()
            for d in (node, *workers):
                if d.proc is not None and d.proc.returncode is None:
                    assert await d.signal(signal.SIGTERM) == 0
                else:
                    d.kill_if_running()


def _unknown_patches(hub: FlakyHub, uids: list[str]) -> dict[str, list[str]]:
    """Per EVSE uid, the ``last_updated`` of each UNKNOWN the hub accepted for it."""
    return {uid: [lu for st, lu in evse_patches(hub, uid) if st == "UNKNOWN"] for uid in uids}


async def test_nodes_ride_out_a_postgresql_crash_under_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await asyncio.to_thread(PgServer(local=True, durable=True).start)
    try:
        monkeypatch.setenv(dbs.URL_ENV, server.create_database("cluster"))
        a, b = _node(tmp_path / "a"), _node(tmp_path / "b")
        await a.start()
        await b.start()
        stations = [_station(f"P{i:02}", (a if i % 2 else b).ocpp_url) for i in range(8)]
        try:
            for st in stations:
                await st.connect()
                await st.boot()
            load = [asyncio.create_task(_charge(st, pause=0.05)) for st in stations]
            db = await _db()
            try:
                await _until(
                    lambda: db.fetchval("SELECT COUNT(*) > 8 FROM transactions"),
                    what="the load has started",
                )
            finally:
                await db.close()
            await asyncio.to_thread(server.halt)
            await asyncio.sleep(1.5)  # (refused meanwhile: the stations retry)
            await asyncio.to_thread(server.resume)
            await asyncio.wait_for(asyncio.gather(*load), 120)
            for node in (a, b):
                await _until(lambda node=node: _ok(node), 30, "the node is healthy again by itself")
            await _until(lambda: _drained(stations), 90, "every queue delivered")
            await _everything_stored_once(stations)
        finally:
            for st in stations:
                await st.disconnect()
            for d in (a, b):
                assert await d.signal(signal.SIGTERM) == 0
    finally:
        await asyncio.to_thread(server.stop)


async def _ok(daemon: Daemon) -> bool:
    try:
        return (await _health(daemon))["status"] == "ok"
    except (aiohttp.ClientError, json.JSONDecodeError):
        return False
