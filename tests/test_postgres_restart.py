"""csms on PostgreSQL when the database server goes away and comes back (a crash of the
server: `pg_ctl stop -m immediate`): nothing is answered as stored that was not committed,
/healthz says unavailable meanwhile, and csms recovers by itself, without a restart, with
everything it had acknowledged still there. The server is the test's own, so that stopping
it touches no other test, and durable (fsync, synchronous commits) as in production: the
suite's fast server would lose the last commits in such a crash."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from csms.app import WRITE_PROBE_INTERVAL
from tests.conftest import start_system
from tests.pg import PgServer
from tests.raw_client import RawClient

pytestmark = pytest.mark.postgresql_only

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


def _start(connector: int, ts: str) -> dict[str, object]:
    return {"connectorId": connector, "idTag": "TAG1", "meterStart": 0, "timestamp": ts}


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_csms_rides_out_a_postgresql_crash_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    server = await asyncio.to_thread(PgServer(local=True, durable=True).start)
    try:
        url = server.create_database("restart")
        system, session, csms = await start_system(tmp_path, database__url=json.dumps(url))
        try:
            await csms.define_station("R1")
            await csms.put_tag("TAG1")
            client = await RawClient.open(f"{csms.ocpp_url}/R1")
            await client.ok("BootNotification", BOOT)
            first = await client.ok("StartTransaction", _start(1, "2026-12-01T10:00:00Z"))
            assert first["idTagInfo"]["status"] == "Accepted"

            await asyncio.to_thread(server.halt)
            # a write is refused, promptly and clearly: never answered as if it were stored
            status, body = await csms.api.put("/api/v1/id-tags/TAG2", {"status": "Accepted"})
            assert (status, body["error"]) == (503, "database_unavailable"), body
            status, body = await csms.api.get("/api/v1/transactions")
            assert (status, body["error"]) == (503, "database_unavailable"), body
            reply = await client.call("Heartbeat", {}, timeout=10)
            lost = await client.call(
                "StartTransaction", _start(2, "2026-12-01T10:05:00Z"), timeout=10
            )
            assert lost[0] == 4, lost  # a CallError: the station keeps it and sends it again
            await asyncio.sleep(WRITE_PROBE_INTERVAL + 0.2)
            status, health = await csms.api.get("/healthz", auth=False)
            assert status == 503 and health["status"] == "unavailable", health

            await asyncio.to_thread(server.resume)

            async def healthy() -> bool:
                status, _ = await csms.api.get("/healthz", auth=False)
                return status == 200

            await _until(healthy)
            again = await client.ok("StartTransaction", _start(2, "2026-12-01T10:05:00Z"))
            assert again["transactionId"] > first["transactionId"]
            status, _ = await csms.api.put("/api/v1/id-tags/TAG2", {"status": "Accepted"})
            assert status == 201
            _, page = await csms.api.get("/api/v1/transactions?limit=10")
            ids = sorted(t["id"] for t in page["items"])
            assert ids == [first["transactionId"], again["transactionId"]]
            assert reply[0] in (3, 4)  # a heartbeat during the outage: answered either way
            await client.close()
        finally:
            await session.close()
            await system.stop()
    finally:
        await asyncio.to_thread(server.stop)
