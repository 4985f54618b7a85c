"""A small central system for testing the simulator, independent of ``csms``.

Built on the ``ocpp`` library's server side: one ``ocpp.v16.ChargePoint`` with ``@on``
handlers per connection, served by ``websockets.asyncio.server.serve`` on 127.0.0.1 and a
free port. It records every call it receives, answers with configurable statuses, assigns
transaction ids, and lets a test send calls to a connected station.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Received:
    cp_id: str
    action: str
    payload: dict[str, Any]
    at: float


class PeerChargePoint(ChargePoint):
    """Central-system side of one station's connection."""

    def __init__(self, cp_id: str, ws: ServerConnection, peer: PeerCentralSystem):
        super().__init__(cp_id, ws, response_timeout=5)
        self.peer = peer
        self.ws = ws

    async def route_message(self, raw_msg: Any) -> None:
        with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
            frame = json.loads(raw_msg)
            if frame[0] == 2:
                self.peer._record(self.id, frame[2], frame[3])
            elif frame[0] in (3, 4):
                self.peer._answers.setdefault(self.id, {})[frame[1]] = frame
                self.peer._event.set()
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def peer_boot(self, **_: Any) -> Any:
        return call_result.BootNotification(
            current_time=_now(), interval=self.peer.heartbeat_interval, status=self.peer.boot_status
        )

    @on(Action.heartbeat)
    def peer_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)
    def peer_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def peer_authorize(self, id_tag: str, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": self.peer.tag_status(id_tag)})

    @on(Action.start_transaction)
    def peer_start(self, id_tag: str, **_: Any) -> Any:
        tx_id = next(self.peer._tx_ids)
        return call_result.StartTransaction(
            transaction_id=tx_id, id_tag_info={"status": self.peer.tag_status(id_tag)}
        )

    @on(Action.stop_transaction)
    async def peer_stop(self, **_: Any) -> Any:
        await asyncio.sleep(self.peer.delays.get("StopTransaction", 0))
        return call_result.StopTransaction(id_tag_info={"status": "Accepted"})

    @on(Action.meter_values)
    def peer_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def peer_data_transfer(self, **_: Any) -> Any:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    def peer_diagnostics_status(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def peer_firmware_status(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()


class PeerCentralSystem:
    """Test central system. Use as ``async with PeerCentralSystem() as cs:``.

    ``passwords``: when set, HTTP Basic is required and checked (``{cp_id: password}``).
    ``tag_statuses``: idTagInfo status per idTag (default Accepted).
    """

    def __init__(
        self,
        *,
        heartbeat_interval: int = 300,
        boot_status: str = "Accepted",
        passwords: dict[str, str] | None = None,
        tag_statuses: dict[str, str] | None = None,
        first_transaction_id: int = 100,
    ) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.boot_status = boot_status
        self.passwords = passwords
        self.tag_statuses = dict(tag_statuses or {})
        self.delays: dict[str, float] = {}  # seconds before answering (StopTransaction)
        self.received: list[Received] = []
        self.connections: dict[str, PeerChargePoint] = {}
        self.connect_counts: Counter[str] = Counter()
        self.usernames: dict[str, str | None] = {}
        self._tx_ids = itertools.count(first_transaction_id)
        self._consumed: set[int] = set()
        self._answers: dict[str, dict[str, list[Any]]] = {}
        self._event = asyncio.Event()
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def __aenter__(self) -> PeerCentralSystem:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6"],
            process_request=self._check_request,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 10)

    def tag_status(self, id_tag: str) -> str:
        return self.tag_statuses.get(id_tag, "Accepted")

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = unquote(request.path.rstrip("/").rsplit("/", 1)[-1])
        header = request.headers.get("Authorization")
        username = None
        password = None
        if header and header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode()
            username, _, password = decoded.partition(":")
        self.usernames[cp_id] = username
        if self.passwords is None:
            return None
        if username == cp_id and self.passwords.get(cp_id) == password:
            return None
        return Response(
            HTTPStatus.UNAUTHORIZED,
            "Unauthorized",
            Headers([("WWW-Authenticate", 'Basic realm="ocpp"')]),
            b"",
        )

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = unquote(ws.request.path.rstrip("/").rsplit("/", 1)[-1])
        cp = PeerChargePoint(cp_id, ws, self)
        self.connections[cp_id] = cp
        self.connect_counts[cp_id] += 1
        self._event.set()
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(cp_id) is cp:
                del self.connections[cp_id]
            self._event.set()

    def _record(self, cp_id: str, action: str, payload: dict[str, Any]) -> None:
        self.received.append(Received(cp_id, action, payload, time.monotonic()))
        self._event.set()

    # ------------------------------------------------------------------ test helpers

    def actions(self, cp_id: str | None = None) -> list[str]:
        return [r.action for r in self.received if cp_id is None or r.cp_id == cp_id]

    def payloads(self, action: str, cp_id: str | None = None) -> list[dict[str, Any]]:
        return [
            r.payload
            for r in self.received
            if r.action == action and (cp_id is None or r.cp_id == cp_id)
        ]

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true (re-checked on every event)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            self._event.clear()
            if predicate():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), min(remaining, 0.2))

    async def wait_for(
        self, action: str, cp_id: str | None = None, timeout: float = 5.0, **match: Any
    ) -> dict[str, Any]:
        """Oldest not yet consumed ``action`` (whose payload has the ``match`` items)."""
        found: dict[str, Any] = {}

        def check() -> bool:
            for index, rec in enumerate(self.received):
                if index in self._consumed or rec.action != action:
                    continue
                if cp_id is not None and rec.cp_id != cp_id:
                    continue
                if any(rec.payload.get(k) != v for k, v in match.items()):
                    continue
                self._consumed.add(index)
                found["payload"] = rec.payload
                return True
            return False

        await self.wait_until(check, timeout)
        return found["payload"]

    async def wait_connected(self, cp_id: str, count: int = 1, timeout: float = 5.0) -> None:
        await self.wait_until(
            lambda: self.connect_counts[cp_id] >= count and cp_id in self.connections, timeout
        )

    def answers(self, cp_id: str) -> dict[str, list[Any]]:
        """CALLRESULT/CALLERROR frames received from the station, by unique id."""
        return self._answers.get(cp_id, {})

    async def send_raw(self, cp_id: str, text: str) -> None:
        """Send a raw text frame to the station (answers: :meth:`answers`)."""
        await self.connections[cp_id].ws.send(text)

    async def call(
        self, cp_id: str, payload: Any, timeout: float = 5.0, validate: bool = True
    ) -> Any:
        """Send a call (``ocpp.v16.call.*``) to the station and return the answer dataclass;
        a CallError raises the library's OCPPError, no answer raises TimeoutError."""
        cp = self.connections[cp_id]
        cp._response_timeout = timeout
        return await cp.call(payload, suppress=False, skip_schema_validation=not validate)
