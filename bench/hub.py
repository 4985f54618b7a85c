"""A local OCPI 2.2.1 hub, MOBI.E's role: the Receiver of Locations, Sessions and CDRs.

``python -m bench.hub --port P --token-b TOKEN [--party-id MOB --role HUB]``. It serves its
versions and version details (for the CPO's credentials handshake), acknowledges every push
at once with OCPI status 1000, and records the arrival time (``time.time()``) of every EVSE
status it is given: each EVSE PATCH, and each EVSE inside a Location PUT. The harness
matches those with the load generator's StatusNotification send times. With ``--peers P``
the harness starts P of them, the first a HUB (MOBI.E), the others EMSPs (``--role EMSP``,
their own party ids), each given every Location and EVSE push.

Harness-only endpoints (no OCPI): ``GET /bench/stats`` (counts per kind of push) and
``POST /bench/dump`` with ``{"path": FILE}`` (writes the records as a pickle).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import time
from array import array
from collections import Counter
from typing import Any

from aiohttp import web

from . import model
from .procs import save_pickle

OCPI_STATUS = {s: i for i, s in enumerate(model.OCPI_STATUSES)}


class Hub:
    def __init__(self, token_b: str, party_id: str = "MOB", role: str = "HUB") -> None:
        self.token_b = token_b
        self.party_id = party_id
        self.role = role  # HUB (MOBI.E's), or EMSP: a further peer (``--peers``)
        self.accepted = {
            f"Token {token_b}",
            f"Token {base64.b64encode(token_b.encode()).decode()}",
        }
        self.base = ""
        self.counts: Counter[str] = Counter()
        self.unauthorized = 0
        # EVSE status records: arrival, station index, connector, OCPI status, last_updated,
        # and whether it came in a Location PUT (1) or an EVSE PATCH (0)
        self.t: array[float] = array("d")
        self.station: array[int] = array("l")
        self.conn: array[int] = array("b")
        self.status: array[int] = array("b")
        self.last_updated: list[str] = []
        self.put: array[int] = array("b")
        self.first_push = 0.0
        self.last_push = 0.0
        self._second = -1
        self._ok = b""

    # ------------------------------------------------------------------ envelope

    def ok_body(self) -> bytes:
        t = time.time()
        s = int(t)
        if s != self._second:
            self._second = s
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
            self._ok = (
                f'{{"status_code":1000,"status_message":"Success","timestamp":"{stamp}"}}'
            ).encode()
        return self._ok

    def ok(self, data: Any = None, status: int = 200) -> web.Response:
        if data is None:
            body = self.ok_body()
        else:
            body = json.dumps(
                {
                    "status_code": 1000,
                    "status_message": "Success",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "data": data,
                }
            ).encode()
        return web.Response(body=body, status=status, content_type="application/json")

    def credentials(self) -> dict[str, Any]:
        return {
            "token": self.token_b,
            "url": self.base + "/versions",
            "roles": [
                {
                    "role": self.role,
                    "business_details": {
                        "name": "Bench Hub (MOBI.E role)"
                        if self.role == "HUB"
                        else f"Bench peer {self.party_id}"
                    },
                    "party_id": self.party_id,
                    "country_code": "PT",
                }
            ],
        }

    # ------------------------------------------------------------------ handlers

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/bench/"):
            return await self.control(request)
        if request.headers.get("Authorization") not in self.accepted:
            self.unauthorized += 1
            return web.json_response({"status_code": 2000, "status_message": "no"}, status=401)
        if path == "/versions":
            return self.ok([{"version": "2.2.1", "url": self.base + "/2.2.1"}])
        if path == "/2.2.1":
            endpoints = [
                {
                    "identifier": "credentials",
                    "role": "SENDER",
                    "url": self.base + "/2.2.1/credentials",
                },
                {
                    "identifier": "locations",
                    "role": "RECEIVER",
                    "url": self.base + "/2.2.1/locations",
                },
                {
                    "identifier": "sessions",
                    "role": "RECEIVER",
                    "url": self.base + "/2.2.1/sessions",
                },
                {"identifier": "cdrs", "role": "RECEIVER", "url": self.base + "/2.2.1/cdrs"},
            ]
            return self.ok({"version": "2.2.1", "endpoints": endpoints})
        parts = path.split("/")  # '', '2.2.1', module, ...
        module = parts[2] if len(parts) > 2 else ""
        method = request.method
        body = await request.read()
        now = time.time()
        if not self.first_push:
            self.first_push = now
        self.last_push = now
        if module == "locations":
            ids = parts[5:]
            if len(ids) == 1:
                if method == "PUT":
                    self.counts["location_put"] += 1
                    self._location_put(json.loads(body), now)
                else:
                    self.counts["location_patch"] += 1
            elif len(ids) == 2:
                self.counts["evse_" + method.lower()] += 1
                self._evse(ids[1], json.loads(body), now)
            else:
                self.counts["connector_" + method.lower()] += 1
        elif module == "sessions":
            self.counts["session_" + method.lower()] += 1
        elif module == "cdrs" and method == "POST":
            self.counts["cdr_post"] += 1
            cdr_id = json.loads(body).get("id", "x")
            resp = self.ok(status=201)
            resp.headers["Location"] = f"{self.base}/2.2.1/cdrs/{cdr_id}"
            return resp
        else:
            self.counts["other"] += 1
        return self.ok()

    def _record(self, uid: str, status: str, last_updated: str, now: float, put: int) -> None:
        ids = model.parse_evse_uid(uid)
        if ids is None:
            return
        self.t.append(now)
        self.station.append(ids[0])
        self.conn.append(ids[1])
        self.status.append(OCPI_STATUS.get(status, -1))
        self.last_updated.append(last_updated)
        self.put.append(put)

    def _evse(self, uid: str, body: dict[str, Any], now: float) -> None:
        if "status" in body:
            self._record(uid, body["status"], body.get("last_updated", ""), now, 0)

    def _location_put(self, body: dict[str, Any], now: float) -> None:
        for evse in body.get("evses", ()):
            self._record(
                evse.get("uid", ""), evse.get("status", ""), evse.get("last_updated", ""), now, 1
            )

    async def control(self, request: web.Request) -> web.Response:
        if request.path == "/bench/stats":
            return web.json_response(
                {
                    "counts": dict(self.counts),
                    "pushes": sum(self.counts.values()),
                    "evse_records": len(self.t),
                    "unauthorized": self.unauthorized,
                    "first_push": self.first_push,
                    "last_push": self.last_push,
                }
            )
        if request.path == "/bench/dump" and request.method == "POST":
            target = (await request.json())["path"]
            save_pickle(
                target,
                {
                    "t": self.t,
                    "station": self.station,
                    "conn": self.conn,
                    "status": self.status,
                    "last_updated": self.last_updated,
                    "put": self.put,
                    "counts": dict(self.counts),
                },
            )
            return web.json_response({"records": len(self.t)})
        return web.json_response({"error": "unknown"}, status=404)


async def run(host: str, port: int, token_b: str, party_id: str, role: str) -> None:
    hub = Hub(token_b, party_id, role)
    server = web.Server(hub.handle, access_log=None)
    runner = web.ServerRunner(server, shutdown_timeout=1.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    actual = runner.addresses[0][1]
    hub.base = f"http://{host}:{actual}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        json.dumps({"event": "listening", "port": actual, "credentials": hub.credentials()}),
        flush=True,
    )
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-b", required=True)
    parser.add_argument("--party-id", default="MOB", help="its party id (country PT)")
    parser.add_argument("--role", choices=("HUB", "EMSP"), default="HUB")
    args = parser.parse_args()
    asyncio.run(run(args.host, args.port, args.token_b, args.party_id.upper(), args.role))


if __name__ == "__main__":
    main()
