"""A deliberately small OCPP-J client for frame-level tests: it sends exactly the text it is
given and shows exactly what comes back, so that tests do not depend on the simulator."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

Answer = Callable[[str, dict[str, Any]], dict[str, Any] | None]


def default_answer(action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Answer the central system's requests like an obliging station."""
    if action == "GetConfiguration":
        return {
            "configurationKey": [
                {"key": "HeartbeatInterval", "readonly": False, "value": "120"},
                {"key": "MeterValueSampleInterval", "readonly": False, "value": "60"},
            ]
        }
    if action in (
        "ChangeConfiguration",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "Reset",
        "ChangeAvailability",
        "ClearCache",
        "TriggerMessage",
    ):
        return {"status": "Accepted"}
    if action == "UnlockConnector":
        return {"status": "Unlocked"}
    if action == "DataTransfer":
        return {"status": "UnknownVendorId"}
    return {}


class RawClient:
    def __init__(self, ws: ClientConnection, answer: Answer = default_answer) -> None:
        self.ws = ws
        self.answer = answer
        self._ids = itertools.count(1)
        self.received_calls: list[tuple[str, dict[str, Any]]] = []
        self._replies: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, answer: Answer = default_answer, **kw: Any) -> RawClient:
        kw.setdefault("subprotocols", ["ocpp1.6"])
        ws = await connect(url, compression=None, open_timeout=5, **kw)
        return cls(ws, answer)

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if msg[0] == 2:
                    self.received_calls.append((msg[2], msg[3]))
                    reply = self.answer(msg[2], msg[3])
                    if reply is not None:
                        await self.ws.send(json.dumps([3, msg[1], reply]))
                else:
                    await self._replies.put(msg)
        except Exception:
            pass

    async def send_text(self, text: str, timeout: float = 3) -> list[Any] | None:
        """Send raw text; return the next answer frame, or None if none comes in time."""
        await self.ws.send(text)
        try:
            return await asyncio.wait_for(self._replies.get(), timeout)
        except TimeoutError:
            return None

    async def call(self, action: str, payload: dict[str, Any], timeout: float = 5) -> list[Any]:
        uid = f"m{next(self._ids)}"
        await self.ws.send(json.dumps([2, uid, action, payload]))
        reply = await asyncio.wait_for(self._replies.get(), timeout)
        assert reply[1] == uid, (reply, uid)
        return reply

    async def ok(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Call and insist on a CallResult; return its payload."""
        reply = await self.call(action, payload)
        assert reply[0] == 3, reply
        return reply[2]

    async def wait_call(self, action: str, timeout: float = 5) -> dict[str, Any]:
        async def poll() -> dict[str, Any]:
            while True:
                for a, p in self.received_calls:
                    if a == action:
                        return p
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(poll(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass
