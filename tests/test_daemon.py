"""The central system run as a daemon: durability across kill -9, clean SIGTERM, health and
metrics endpoints, structured logs bound to the station and message id."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Api, station_body
from tests.daemon import Daemon
from tests.raw_client import RawClient


async def test_answered_stop_survives_kill_9(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        api = Api(daemon.http_url, session)
        assert (await api.put("/api/v1/stations/DUR1", station_body("DUR1", 1)))[0] == 201
        assert (await api.put("/api/v1/id-tags/TAG1", {"status": "Accepted"}))[0] == 201
        client = await RawClient.open(f"{daemon.ocpp_url}/DUR1")
        await client.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        start = await client.ok(
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "TAG1",
                "meterStart": 1000,
                "timestamp": "2026-01-01T10:00:00Z",
            },
        )
        tx = start["transactionId"]
        for i in range(1, 4):
            await client.ok(
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": tx,
                    "meterValue": [
                        {
                            "timestamp": f"2026-01-01T10:0{i}:00Z",
                            "sampledValue": [
                                {"value": str(1000 + i * 100), "unit": "Wh"},
                                {"value": "6.0", "measurand": "Power.Active.Import", "unit": "kW"},
                            ],
                        }
                    ],
                },
            )
        await client.ok(
            "StopTransaction",
            {
                "transactionId": tx,
                "meterStop": 1400,
                "timestamp": "2026-01-01T10:04:00Z",
                "reason": "Local",
                "transactionData": [
                    {
                        "timestamp": "2026-01-01T10:04:00Z",
                        "sampledValue": [
                            {"value": "1400", "context": "Transaction.End", "unit": "Wh"}
                        ],
                    }
                ],
            },
        )
        # the answer has arrived: kill at once, no chance to flush anything
        assert await daemon.signal(signal.SIGKILL) == -signal.SIGKILL
        await client.close()

    daemon = Daemon(tmp_path)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        api = Api(daemon.http_url, session)
        status, body = await api.get(f"/api/v1/transactions/{tx}")
        assert status == 200
        assert body["active"] is False
        assert body["meter_start_wh"] == 1000 and body["meter_stop_wh"] == 1400
        assert body["stop_reason"] == "Local"
        values = body["meter_values"]
        assert len(values) == 7  # 3 x (energy + power) + the Transaction.End reading
        assert [v["value"] for v in values if v["measurand"] == "Power.Active.Import"] == [
            "6.0"
        ] * 3
        assert {
            v["normalised_value"] for v in values if v["measurand"] == "Power.Active.Import"
        } == {6000.0}
    assert await daemon.signal(signal.SIGTERM) == 0


async def test_sigterm_closes_connections_and_exits_0(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        api = Api(daemon.http_url, session)
        await api.put("/api/v1/stations/T1", station_body("T1", 1))
        client = await RawClient.open(f"{daemon.ocpp_url}/T1")
        await client.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})

        async with session.get(daemon.http_url + "/healthz") as resp:
            health = await resp.json()
            assert resp.status == 200 and health["status"] == "ok"
            assert health["stations_connected"] == 1 and health["database"] == "ok"
        async with session.get(daemon.http_url + "/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200 and resp.content_type.startswith("text/plain")
        assert "csms_stations_connected 1.0" in text
        assert 'csms_ocpp_frames_received_total{action="BootNotification"} 1.0' in text
        assert 'csms_ocpp_answer_seconds_count{action="BootNotification"} 1.0' in text
        assert "csms_ocpp_call_errors_sent_total" in text

        assert await daemon.signal(signal.SIGTERM) == 0
        await client.ws.wait_closed()
        assert client.ws.close_code == 1001  # going away
        await client.close()
    events = [line.get("event") for line in daemon.lines]
    assert "shutting down" in events and events[-1] == "stopped"
    # every line is JSON, and the lines about the station carry its id and the message id
    boot_lines = [line for line in daemon.lines if line.get("event") == "boot"]
    assert boot_lines and boot_lines[0]["station_id"] == "T1"
    assert boot_lines[0]["message_id"] == "m1"
    assert all("timestamp" in line and "level" in line for line in daemon.lines)


async def test_generated_admin_password_is_printed_once_and_kept(tmp_path: Path) -> None:
    import asyncio
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CSMS_ADMIN_PASSWORD"}
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'data_dir = "data"\n[ocpp]\nhost="127.0.0.1"\nport=0\n[http]\nhost="127.0.0.1"\nport=0\n'
        '[logging]\nformat="json"\n'
    )
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "csms.cli",
            "run",
            "--config",
            str(cfg),
            cwd=tmp_path,
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        lines = []
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode())
            if "central system running" in lines[-1]:
                break
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
        assert proc.returncode == 0
        generated = [line for line in lines if "generated one" in line]
        if _ == 0:
            assert len(generated) == 1 and '"password"' in generated[0]
        else:
            assert generated == []
    assert (tmp_path / "data" / "admin-password.hash").read_text().startswith("$argon2id$")


@pytest.mark.sqlite_only
async def test_healthz_says_unavailable_while_writes_fail(tmp_path: Path) -> None:
    """Issue 12, item 17: the files may not grow (RLIMIT_FSIZE of the running daemon, what a
    full disk does to SQLite's WAL): writes fail for real, and /healthz says so."""
    import asyncio
    import resource

    from csms.app import WRITE_PROBE_INTERVAL

    daemon = Daemon(tmp_path)
    await daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(daemon.http_url, session)
            status, health = await api.get("/healthz", auth=False)
            assert status == 200 and health["writer"]["status"] == "ok"

            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            status, body = await api.put("/api/v1/id-tags/FULL1", {"status": "Accepted"})
            assert status == 500 and body["error"] == "internal_error"
            await asyncio.sleep(WRITE_PROBE_INTERVAL + 0.1)
            status, health = await api.get("/healthz", auth=False)
            assert status == 503, health
            assert health["status"] == "unavailable"
            assert health["writer"]["status"] == "failing"
            assert "disk I/O error" in health["writer"]["last_error"]
            assert health["writer"]["last_error_at"] is not None

            resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
            await asyncio.sleep(WRITE_PROBE_INTERVAL + 0.1)
            status, health = await api.get("/healthz", auth=False)
            assert status == 200 and health["writer"]["status"] == "ok"
            status, _ = await api.put("/api/v1/id-tags/FULL2", {"status": "Accepted"})
            assert status == 201
    finally:
        if daemon.proc.returncode is None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
    assert await daemon.signal(signal.SIGTERM) == 0
    assert any(line.get("event") == "database writes fail" for line in daemon.lines)


async def _run_csms(tmp_path: Path, data_dir: str, *args: str) -> tuple[int, str]:
    import asyncio
    import os
    import sys

    from tests.conftest import ADMIN_PASSWORD

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'data_dir = "{data_dir}"\n[ocpp]\nhost="127.0.0.1"\nport=0\n'
        '[http]\nhost="127.0.0.1"\nport=0\n[logging]\nformat="json"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "csms.cli",
        "run",
        "--config",
        str(cfg),
        *args,
        cwd=tmp_path,
        env=dict(os.environ, CSMS_ADMIN_PASSWORD=ADMIN_PASSWORD),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_missing_or_read_only_data_dir_is_one_clear_line_and_exit_2(
    tmp_path: Path,
) -> None:
    """Issue 12, item 18, through the real `csms run`."""
    import os

    root = os.geteuid() == 0
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # missing, and its parent does not let us make it (root may write anywhere but /proc)
        missing = "/proc/csms-test/data" if root else str(locked / "data")
        code, err = await _run_csms(tmp_path, missing)
        assert code == 2, err
        assert err.strip().splitlines() == [
            f"csms: data directory {missing} does not exist and cannot be created: "
            + ("No such file or directory" if root else "Permission denied")
        ]
        # there, but read-only
        read_only = "/sys/kernel" if root else str(locked)
        code, err = await _run_csms(tmp_path, read_only)
        assert code == 2, err
        assert err.strip().splitlines() == [
            f"csms: data directory {read_only} is not writable: Permission denied"
        ]
        assert "Traceback" not in err
    finally:
        locked.chmod(0o700)


@pytest.mark.sqlite_only
async def test_a_read_only_database_file_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "csms.sqlite3").touch(mode=0o400)
    code, err = await _run_csms(tmp_path, str(data))
    assert code == 2, err
    assert err.strip().splitlines() == [f"csms: database {data / 'csms.sqlite3'} is not writable"]


async def test_an_unreachable_postgresql_is_one_clear_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """database.url names a server nobody listens on: the daemon says so, without the
    password, and exits 2 (the PostgreSQL twin of the unwritable database file)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("CSMS_DATABASE__URL", f"postgresql://csms:s3cret@127.0.0.1:{port}/csms")
    code, err = await _run_csms(tmp_path, str(tmp_path / "data"))
    assert code == 2, err
    assert "cannot reach PostgreSQL" in err and f"127.0.0.1:{port}" in err, err
    assert "s3cret" not in err and "Traceback" not in err, err


async def test_a_role_for_the_other_engine_is_refused_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--role all` on PostgreSQL would deliver beside the cluster's delivery worker (its
    delivery takes no lease): refused, before anything connects; `--role ocpp` on SQLite has
    no delivery at all: refused too."""
    monkeypatch.setenv("CSMS_DATABASE__URL", "postgresql://csms@127.0.0.1:1/csms")
    code, err = await _run_csms(tmp_path, str(tmp_path / "data"), "--role", "all")
    assert code == 2, err
    assert "role all (everything in one process) is for SQLite" in err, err
    assert "cannot reach PostgreSQL" not in err and "Traceback" not in err, err
    monkeypatch.delenv("CSMS_DATABASE__URL")
    code, err = await _run_csms(tmp_path, str(tmp_path / "data"), "--role", "ocpp")
    assert code == 2, err
    assert "role ocpp" in err and "needs PostgreSQL" in err and "Traceback" not in err, err


async def test_running_out_of_descriptors_is_logged_once_not_every_second(tmp_path: Path) -> None:
    """Issue 12, item 3: when accept() fails for want of descriptors (here the running
    daemon's limit is lowered to what it has open), asyncio reports it every second per
    listener, with a traceback; the daemon logs it once a minute. Afterwards HTTP and OCPP
    serve as before."""
    import asyncio
    import os
    import resource

    daemon = Daemon(tmp_path)
    await daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    writers: list[asyncio.StreamWriter] = []
    async with aiohttp.ClientSession() as session:
        api = Api(daemon.http_url, session)
        assert (await api.put("/api/v1/stations/FD1", station_body("FD1", 1)))[0] == 201
        try:
            in_use = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
            for _ in range(30):
                _, w = await asyncio.open_connection("127.0.0.1", daemon.http_port)
                writers.append(w)
            await asyncio.sleep(3.5)  # asyncio retries accept() every second
        finally:
            for w in writers:
                w.transport.abort()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        await asyncio.sleep(1.2)
        status, _ = await api.get("/healthz", auth=False)
        assert status == 200
        client = await RawClient.open(f"{daemon.ocpp_url}/FD1")
        await client.ok("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
        await client.close()
    assert await daemon.signal(signal.SIGTERM) == 0
    events = [line.get("event", "") for line in daemon.lines]
    assert events.count("cannot accept connections") == 1
    assert not any("out of system resource" in e for e in events)
    assert any(e == "file descriptor limit" for e in events)
