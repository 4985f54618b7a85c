"""The simulator CLI against the real central system: nothing lost, nothing duplicated."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.conftest import start_system


async def test_offline_scenario_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    system, session, csms = await start_system(
        tmp_path,
        ocpp__accept_unknown_stations="true",
        id_tags__accept_unknown="true",
        ocpp__meter_value_sample_interval="1",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "charger_sim",
            "--url",
            csms.ocpp_url,
            "--count",
            "3",
            "--connectors",
            "2",
            "--scenario",
            "offline",
            "--duration",
            "6",
            "--session-time",
            "1:2",
            "--idle-time",
            "0.2:0.5",
            "--offline-every",
            "1:2",
            "--offline-time",
            "0.5:1",
            "--seed",
            "7",
            "--json",
            "--quiet",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out)
        assert summary["errors"] == 0
        starts = summary["calls_sent"]["StartTransaction"]
        assert starts["sent"] == starts["answered"] and starts["call_errors"] == 0
        _, page = await csms.api.get("/api/v1/transactions?limit=1000")
        txs = page["items"]
        assert txs, "the scenario charged"
        # every StartTransaction the stations sent became exactly one transaction
        assert page["total"] == summary["transactions_started"], (summary, page["total"])
        stopped = [t for t in txs if not t["active"]]
        assert len(stopped) == summary["transactions_stopped"]
        assert all(t["meter_stop_wh"] >= t["meter_start_wh"] for t in stopped)
        anomalies = (await csms.api.get("/api/v1/anomalies"))[1]["items"]
        assert anomalies == []
        _, stations = await csms.api.get("/api/v1/stations")
        assert stations["total"] == 3
        assert {s["configuration"]["status"] for s in stations["items"]} == {"compliant"}
    finally:
        await session.close()
        await system.stop()
