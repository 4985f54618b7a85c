"""The OCPP websocket server: handshake policy and one connection owner per station.

URL ``ws://HOST:PORT{path_prefix}/{charge_point_id}``: exactly the prefix, a slash and one
segment, the id, URL-decoded (a query string is ignored). During the handshake we refuse,
before any websocket exists:
- any other path (HTTP 404): no empty segment, no ``.`` or ``..``, no further segment, no
  ``/`` or control character in the decoded id;
- an unknown charge point id (HTTP 404; recorded with time and remote address), unless
  ``accept_unknown_stations`` is on;
- a station with a password whose Basic credentials are missing or wrong (HTTP 401,
  OCPP security profile 1).

A client that offers no ``ocpp1.6`` subprotocol gets what OCPP-J 1.6 (section 3.1.2) asks:
the handshake completes without a ``Sec-WebSocket-Protocol`` header, then we close the
connection at once (1002), before it is registered: it never displaces a station's
connection (conformance TC_088).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .commands import ConnectionRegistry
from .connection import StationConnection
from .events import StationConnected, StationDisconnected
from .guard import station_handshake
from .handlers import OcppHandlers, Services
from .members import Presence
from .passwords import parse_basic_auth

log = structlog.get_logger("csms.server")

SUBPROTOCOL = Subprotocol("ocpp1.6")


def charge_point_id_from_path(path: str, prefix: str) -> str | None:
    """The URL-decoded id when the path is exactly ``prefix + "/" + id``, else None."""
    path = path.split("?", 1)[0]
    if not path.startswith(prefix + "/"):
        return None
    segment = path[len(prefix) + 1 :]
    if not segment or "/" in segment:
        return None
    cp_id = unquote(segment)
    if (
        len(cp_id) > 255
        or cp_id in (".", "..")
        or "/" in cp_id
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in cp_id)
    ):
        return None
    return cp_id


class OcppServer:
    def __init__(
        self, services: Services, handlers: OcppHandlers, registry: ConnectionRegistry
    ) -> None:
        self.services = services
        self.handlers = handlers
        self.registry = registry
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # on PostgreSQL: which stations this node holds, for the cluster (csms.members)
        self.presence: Presence | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        cfg = self.services.settings.ocpp
        self._server = await serve(
            self._handler,
            cfg.host,
            cfg.port,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=cfg.ping_interval or None,
            ping_timeout=cfg.ping_timeout or None,
            max_size=cfg.max_message_size,
        )
        log.info("OCPP websocket server listening", host=cfg.host, port=self.port)

    async def stop(self) -> None:
        """Stop accepting, close every station connection (going away) and wait for them."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    # ------------------------------------------------------------------ handshake

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """ocpp1.6 when offered; otherwise none: the handshake completes without the header
        and :meth:`_handler` closes the connection at once (OCPP-J 1.6, 3.1.2)."""
        if SUBPROTOCOL in offered:
            return SUBPROTOCOL
        connection.offered_subprotocols = list(offered)  # type: ignore[attr-defined]
        return None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        cfg = self.services.settings.ocpp
        store = self.services.store
        metrics = self.services.metrics
        remote = _remote(connection)
        cp_id = charge_point_id_from_path(request.path, cfg.path_prefix)
        if cp_id is None:
            metrics.handshakes_refused.labels("bad_path").inc()
            log.warning("handshake refused: path", path=request.path, remote=remote)
            return connection.respond(HTTPStatus.NOT_FOUND, "Not an OCPP endpoint\n")
        station = await store.stations.auth(cp_id)
        if station is None:
            if not cfg.accept_unknown_stations:
                await store.unknown_stations.record(cp_id, remote)
                metrics.handshakes_refused.labels("unknown_station").inc()
                log.warning("handshake refused: unknown station", station_id=cp_id, remote=remote)
                return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
            await store.stations.ensure_undefined(cp_id)
            log.info("unknown station accepted (accept_unknown_stations)", station_id=cp_id)
        elif station["password_hash"] or cfg.require_password:
            # guessing limits, rehash of old hashes, require_password: csms.guard
            creds = parse_basic_auth(request.headers.get("Authorization"))
            refusal = await station_handshake(
                self.services, connection, cp_id, station["password_hash"], creds
            )
            if refusal is not None:
                return refusal
        connection.station_id = cp_id  # type: ignore[attr-defined]
        return None

    # ------------------------------------------------------------------ connection

    async def _handler(self, ws: ServerConnection) -> None:
        cp_id: str = ws.station_id  # type: ignore[attr-defined]  # set by the handshake
        s = self.services
        remote = _remote(ws)
        if ws.subprotocol != SUBPROTOCOL:
            # never registered: it must not displace the station's real connection
            s.metrics.handshakes_refused.labels("subprotocol").inc()
            log.warning(
                "connection closed: ocpp1.6 subprotocol not offered",
                station_id=cp_id,
                remote=remote,
                offered=getattr(ws, "offered_subprotocols", [])[:10],
            )
            await ws.close(1002, "OCPP 1.6J needs the ocpp1.6 subprotocol")
            return
        structlog.contextvars.bind_contextvars(station_id=cp_id)
        conn = StationConnection(cp_id, ws, self.handlers, remote)
        old = self.registry.register(conn)
        s.metrics.stations_connected.set(len(self.registry))
        if old is not None:
            log.info("new connection replaces the previous one", remote=remote)
            task = asyncio.create_task(old.close(1000, "replaced by a newer connection"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        s.store.outbox.stage(StationConnected(cp_id, s.clock.now(), remote))
        if self.presence is not None:
            self.presence.connected(cp_id, conn.opened_wall)
        log.info("station connected", remote=remote, subprotocol=ws.subprotocol)
        try:
            await conn.serve()
        finally:
            current = self.registry.unregister(conn)
            s.metrics.stations_connected.set(len(self.registry))
            reason = _close_reason(ws)
            if conn.replaced_elsewhere:  # (the station is connected: to another node)
                log.info("station disconnected: connected to another node", reason=reason)
            else:
                log.info("station disconnected", reason=reason, replaced=not current)
            if current and not conn.replaced_elsewhere:
                s.store.outbox.stage(StationDisconnected(cp_id, s.clock.now(), reason))
                if self.presence is not None:
                    self.presence.disconnected(cp_id)

    def close_replaced(self, station_id: str, opened_at: float) -> None:
        """Another node announced a connection of ``station_id`` opened at ``opened_at``:
        close ours when it is older (the station has left it)."""
        conn = self.registry.get(station_id)
        if conn is None or conn.opened_wall >= opened_at or conn.replaced_elsewhere:
            return
        conn.replaced_elsewhere = True
        log.info(
            "station connected to another node: closing its connection here", station_id=station_id
        )
        task = asyncio.create_task(conn.close(1000, "replaced by a newer connection"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _remote(connection: ServerConnection) -> str | None:
    try:
        addr: Any = connection.remote_address
    except Exception:
        return None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr) if addr else None


def _close_reason(ws: ServerConnection) -> str:
    rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
    if rcvd is not None:
        return f"closed by station ({rcvd.code} {rcvd.reason})".strip()
    if sent is not None:
        return f"closed by us ({sent.code} {sent.reason})".strip()
    return "connection lost"
