"""A small OCPI 2.2.1 hub (receiver of Locations, Sessions and CDRs) that can be told to
fail: answer HTTP 500, answer an OCPI error, or not answer at all. It keeps objects as a
receiver must (PUT replaces, PATCH merges, a Session PATCH appends charging_periods) and
records every request, so tests can compare what it ends with to our current state.

The independent peer (extrawest-ocpi) cannot be made to fail on demand; this one can.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


class FlakyHub:
    def __init__(self, party_id: str = "MOB") -> None:
        self.party_id = party_id
        self.mode = "ok"  # ok | error500 | ocpi_error | hang
        self.delay = 0.0  # seconds before each answer (a slow hub)
        self.token_b = "hub-token-" + uuid.uuid4().hex
        self.token_c: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.locations: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.cdrs: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def __aenter__(self) -> FlakyHub:
        app = web.Application()
        app.router.add_get("/versions", self._versions)
        app.router.add_get("/2.2.1", self._details)
        app.router.add_route("*", "/2.2.1/{module}/{tail:.*}", self._receive)
        app.router.add_route("*", "/2.2.1/{module}", self._receive)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    # ------------------------------------------------------------------ OCPI plumbing

    @staticmethod
    def _ok(
        data: Any = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"status_code": 1000, "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if data is not None:
            body["data"] = data
        return web.json_response(body, status=status, headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expected = {self.token_b, base64.b64encode(self.token_b.encode()).decode()}
        return header.startswith("Token ") and header[6:] in expected

    async def _versions(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status_code": 2000}, status=401)
        return self._ok([{"version": "2.2.1", "url": self.base + "/2.2.1"}])

    async def _details(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"status_code": 2000}, status=401)
        endpoints = [
            {
                "identifier": "credentials",
                "role": "SENDER",
                "url": self.base + "/2.2.1/credentials",
            },
            {"identifier": "locations", "role": "RECEIVER", "url": self.base + "/2.2.1/locations"},
            {"identifier": "sessions", "role": "RECEIVER", "url": self.base + "/2.2.1/sessions"},
            {"identifier": "cdrs", "role": "RECEIVER", "url": self.base + "/2.2.1/cdrs"},
        ]
        return self._ok({"version": "2.2.1", "endpoints": endpoints})

    def credentials(self) -> dict[str, Any]:
        return {
            "token": self.token_b,
            "url": self.base + "/versions",
            "roles": [
                {
                    "role": "HUB",
                    "business_details": {"name": "Flaky Hub"},
                    "party_id": self.party_id,
                    "country_code": "PT",
                }
            ],
        }

    # ------------------------------------------------------------------ receivers

    async def _receive(self, request: web.Request) -> web.Response:
        body = None
        if request.can_read_body:
            try:  # as RFC 8259 has it: NaN and Infinity are not JSON
                body = json.loads(await request.text(), parse_constant=_not_json)
            except ValueError as e:
                self.requests.append(
                    {
                        "time": datetime.now(UTC),
                        "method": request.method,
                        "path": request.path,
                        "body": None,
                        "accepted": False,
                        "error": str(e),
                    }
                )
                return web.json_response({"status_code": 2001}, status=400)
        entry = {
            "time": datetime.now(UTC),
            "method": request.method,
            "path": request.path,
            "body": body,
            "accepted": False,
        }
        self.requests.append(entry)
        if not self._authorized(request):
            return web.json_response({"status_code": 2000}, status=401)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "error500":
            return web.Response(status=500, text="internal error")
        if self.mode == "ocpi_error":
            return web.json_response({"status_code": 3000, "timestamp": "2026-01-01T00:00:00Z"})
        entry["accepted"] = True
        module = request.match_info["module"]
        parts = [p for p in request.match_info.get("tail", "").split("/") if p]
        if module == "cdrs" and request.method == "POST":
            self.cdrs[body["id"]] = body
            return self._ok(
                status=201, headers={"Location": f"{self.base}/2.2.1/cdrs/{body['id']}"}
            )
        if module == "locations":
            self._location(request.method, parts[2:], body)
        elif module == "sessions":
            self._session(request.method, parts[2], body)
        return self._ok()

    def _location(self, method: str, ids: list[str], body: dict[str, Any]) -> None:
        if len(ids) == 1:
            if method == "PUT":
                self.locations[ids[0]] = copy.deepcopy(body)
            else:
                self.locations[ids[0]].update(body)
            return
        location = self.locations[ids[0]]
        evse = next(e for e in location["evses"] if e["uid"] == ids[1])
        if method == "PUT":
            evse.clear()
            evse.update(copy.deepcopy(body))
        else:
            evse.update(body)
        # as OCPI's receiver does: a change of an EVSE is a change of its Location
        lu = body.get("last_updated")
        if isinstance(lu, str) and lu > str(location.get("last_updated", "")):
            location["last_updated"] = lu

    def _session(self, method: str, sid: str, body: dict[str, Any]) -> None:
        if method == "PUT":
            self.sessions[sid] = copy.deepcopy(body)
            return
        stored = self.sessions[sid]
        periods = body.pop("charging_periods", None) or []
        stored.update(body)
        stored.setdefault("charging_periods", []).extend(periods)

    # ------------------------------------------------------------------ checks

    def accepted(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["accepted"]]

    def stale_writes(self) -> list[str]:
        """Accepted writes that carried an older last_updated than an earlier one for the
        same object (a stale PATCH arriving after a newer one)."""
        newest: dict[str, str] = {}
        stale = []
        for r in self.accepted():
            if r["method"] == "POST" or not isinstance(r["body"], dict):
                continue
            lu = r["body"].get("last_updated")
            if lu is None:
                continue
            if lu < newest.get(r["path"], ""):
                stale.append(f"{r['method']} {r['path']} {lu} < {newest[r['path']]}")
            newest[r["path"]] = max(lu, newest.get(r["path"], ""))
        return stale


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
