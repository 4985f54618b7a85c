"""What the endpoints and pages of the bridge see of the delivery (the pusher), wherever it
runs: in this process (csms role ``all``), or in csms's delivery process (role ``ocpp``),
reached through the port's ``delivery_link`` and the internal routes it serves there.

    OCPP node: admin API, web pages ──RemoteDelivery──▶ delivery process: internal_routes
                                                          (the pusher's own state)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
import structlog
from aiohttp import web

from csms.ports import CsmsPort, from_db, to_db

log = structlog.get_logger("ocpi.delivery")


@dataclass(frozen=True, slots=True)
class PendingPush:
    """One object that a peer has not acknowledged yet, as the pusher keeps it."""

    peer_id: int
    kind: str
    object_id: str
    dirty_since: datetime | None
    in_flight: str | None  # the kind of the push on its way, if one is
    attempts: int
    failing_since: datetime | None
    next_attempt: datetime | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("dirty_since", "failing_since", "next_attempt"):
            out[k] = to_db(out[k]) if out[k] is not None else None
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PendingPush:
        d = dict(d)
        for k in ("dirty_since", "failing_since", "next_attempt"):
            d[k] = from_db(d[k])
        return cls(**d)


class DeliveryView(Protocol):
    async def pending(self) -> list[PendingPush]:
        """What each peer has not acknowledged yet."""

    async def flush_compliance(self) -> None:
        """Store what the pusher measured of the rules so far (before a report)."""


class LocalDelivery:
    """The pusher in this process: what it has pending, its compliance recorder's flush,
    and what to do when peers change."""

    def __init__(
        self,
        pending: Callable[[], list[PendingPush]],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self._pending = pending
        self._flush = flush

    async def pending(self) -> list[PendingPush]:
        return self._pending()

    async def flush_compliance(self) -> None:
        await self._flush()

    def internal_routes(self) -> list[web.RouteDef]:
        """Served by the delivery process to its node (csms checks the secret)."""

        async def pending(request: web.Request) -> web.Response:
            return web.json_response([p.to_json() for p in await self.pending()])

        async def flush(request: web.Request) -> web.Response:
            await self.flush_compliance()
            return web.json_response({"status": "ok"})

        return [
            web.get("/internal/ocpi/pending", pending),
            web.post("/internal/ocpi/compliance/flush", flush),
        ]


class RemoteDelivery:
    """The delivery process's state, asked over loopback. While it is down (restarting),
    nothing is pending as far as this can tell, and a change of peers reaches it at its
    start (it reads the peers then)."""

    def __init__(self, csms: CsmsPort) -> None:
        self.csms = csms

    async def _call(self, method: str, path: str) -> Any:
        link = self.csms.delivery_link
        if link is None:
            log.warning("delivery process unavailable", path=path)
            return None
        try:
            status, body = await link.request(method, path)
            if status != 200:
                log.warning("delivery process refused", path=path, status=status)
                return None
            return json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("delivery process unreachable", path=path, error=str(e))
            return None

    async def pending(self) -> list[PendingPush]:
        items = await self._call("GET", "/internal/ocpi/pending")
        return [PendingPush.from_json(d) for d in items or []]

    async def flush_compliance(self) -> None:
        await self._call("POST", "/internal/ocpi/compliance/flush")
