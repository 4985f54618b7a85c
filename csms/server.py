"""The OCPP websocket server: handshake policy and one connection owner per station.

URL ``ws://HOST:PORT{path_prefix}/{charge_point_id}``: exactly the prefix, a slash and one
segment, the id, URL-decoded (a query string is ignored). During the handshake we refuse,
before any websocket exists:
- any other path (HTTP 404): no empty segment, no ``.`` or ``..``, no further segment, no
  ``/`` or control character in the decoded id;
- an unknown charge point id (HTTP 404; recorded with time and remote address), unless
  ``accept_unknown_stations`` is on;
- a station arriving below its security profile (HTTP 403: plain ws for profile 2 or 3, or
  for profile 1 when ``ocpp.allow_unsecured`` is off; no client certificate for profile 3,
  or one whose subject CN is not the charge point id); while a raise is pending
  (``pending_security_profile``) the old and the new profile are both accepted, and the
  first connection at the new one makes it the station's profile;
- a station with a password whose Basic credentials are missing or wrong (HTTP 401,
  profiles 1 and 2; profile 3 ignores Basic credentials).

With ``ocpp.tls`` the listener serves wss:// (csms.tls runs each TLS handshake: a client
certificate that does not verify against ``tls.station_ca_file``, or TLS below the minimum,
never reaches this module).

A client that offers no ``ocpp1.6`` subprotocol gets what OCPP-J 1.6 (section 3.1.2) asks:
the handshake completes without a ``Sec-WebSocket-Protocol`` header, then we close the
connection at once (1002), before it is registered: it never displaces a station's
connection (conformance TC_088).
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from .guard import remote_host, station_handshake
from .handlers import OcppHandlers, Services
from .members import Presence
from .ocpp_guard import guard_from_settings
from .passwords import parse_basic_auth
from .tls import ServerTls, is_tls, peer_certificate, subject_common_names

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
        # the TLS contexts (ocpp.tls: wss://), set by the central system before start
        self.tls: ServerTls | None = None
        self._proxies = [
            ipaddress.ip_network(p, strict=False) for p in services.settings.ocpp.trusted_proxies
        ]
        # caps on connections before any websocket exists (csms.ocpp_guard)
        self.guard = guard_from_settings(services.settings, services.metrics.registry)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        cfg = self.services.settings.ocpp
        acceptor = self.tls.acceptor("ocpp") if self.tls is not None else None
        connection_class = self.guard.subclass(ServerConnection)
        if acceptor is not None:  # (our own TLS handshake first: csms.tls)
            connection_class = acceptor.subclass(connection_class)
        extra: dict[str, Any] = {"create_connection": connection_class}
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
            **extra,
        )
        log.info(
            "OCPP websocket server listening",
            host=cfg.host,
            port=self.port,
            scheme="wss" if acceptor is not None else "ws",
        )

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
        transport = Transport.of(connection, request, self._proxies)
        if station is None:
            if not cfg.accept_unknown_stations:
                await store.unknown_stations.record(cp_id, remote)
                metrics.handshakes_refused.labels("unknown_station").inc()
                log.warning("handshake refused: unknown station", station_id=cp_id, remote=remote)
                return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
            if not transport.tls and not cfg.allow_unsecured:  # (profile 1's rules)
                return self._below_profile(connection, cp_id, remote, 1, "unsecured")
            await store.stations.ensure_undefined(cp_id)
            log.info("unknown station accepted (accept_unknown_stations)", station_id=cp_id)
            profile = 1
        elif station["retired_at"] is not None:
            metrics.handshakes_refused.labels("retired").inc()
            log.warning(
                "handshake refused: the station is retired",
                station_id=cp_id,
                remote=remote,
                retired_at=station["retired_at"],
            )
            return connection.respond(HTTPStatus.GONE, "Charge point retired\n")
        else:
            current = int(station["security_profile"] or 1)
            pending = station["pending_security_profile"]
            accepted = sorted({current, pending or current}, reverse=True)
            met = [p for p in accepted if transport.meets(p, cp_id, cfg.allow_unsecured) is None]
            if not met:
                reason = transport.meets(accepted[-1], cp_id, cfg.allow_unsecured)
                assert reason is not None
                return self._below_profile(connection, cp_id, remote, accepted[-1], reason)
            profile = met[0]
            if profile < 3 and (station["password_hash"] or cfg.require_password or profile == 2):
                # guessing limits, rehash of old hashes, require_password: csms.guard
                creds = parse_basic_auth(request.headers.get("Authorization"))
                refusal = await station_handshake(
                    self.services, connection, cp_id, station["password_hash"], creds
                )
                if refusal is not None:
                    return refusal
            if pending is not None and profile == pending != current:
                if await store.stations.commit_security_profile(cp_id, profile):
                    log.info(
                        "security profile raised: the station connected at its new profile",
                        station_id=cp_id,
                        remote=remote,
                        old_profile=current,
                        security_profile=profile,
                    )
        connection.station_id = cp_id  # type: ignore[attr-defined]
        connection.csms_transport = (transport, profile)  # type: ignore[attr-defined]
        return None

    def _below_profile(
        self,
        connection: ServerConnection,
        cp_id: str,
        remote: str | None,
        profile: int,
        reason: str,
    ) -> Response:
        self.services.metrics.handshakes_refused.labels(reason).inc()
        log.warning(
            "handshake refused: below the station's security profile",
            station_id=cp_id,
            remote=remote,
            security_profile=profile,
            reason=reason,
        )
        return connection.respond(HTTPStatus.FORBIDDEN, REFUSALS[reason] + "\n")

    # ------------------------------------------------------------------ connection

    async def _handler(self, ws: ServerConnection) -> None:
        self.guard.established(ws)
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
        transport, conn.security_profile = ws.csms_transport  # type: ignore[attr-defined]
        conn.tls, conn.client_certificate = transport.tls, transport.certificate
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


# the body of a 403 (and its metrics reason): why the transport is below the profile
REFUSALS = {
    "unsecured": "Plain ws is not allowed: connect with wss (TLS)",
    "no_tls": "This station's security profile requires TLS (wss)",
    "proxy_tls": "Security profile 3 requires csms's own TLS (a client certificate)",
    "no_client_cert": "Security profile 3 requires a client certificate",
    "cert_cn_mismatch": "The client certificate's CN is not the charge point id",
}


class Transport:
    """How a station's connection arrived: over TLS (csms's own, or a trusted proxy's),
    with which verified client certificate."""

    __slots__ = ("certificate", "own_tls", "tls")

    def __init__(self, own_tls: bool, proxied_tls: bool, certificate: dict[str, Any] | None):
        self.own_tls = own_tls
        self.tls = own_tls or proxied_tls
        self.certificate = certificate

    @classmethod
    def of(
        cls,
        connection: ServerConnection,
        request: Request,
        proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> Transport:
        raw = connection.transport
        own = is_tls(raw)
        proxied = False
        if not own and proxies:
            proto = request.headers.get("X-Forwarded-Proto", "")
            host = remote_host(connection)
            if proto.rsplit(",", 1)[-1].strip().lower() == "https" and host is not None:
                try:
                    address = ipaddress.ip_address(host)
                except ValueError:
                    address = None
                proxied = address is not None and any(address in net for net in proxies)
        return cls(own, proxied, peer_certificate(raw) if own else None)

    def meets(self, profile: int, station_id: str, allow_unsecured: bool) -> str | None:
        """None when the connection meets ``profile``, else why not (a metrics reason)."""
        if profile <= 1:
            return None if (self.tls or allow_unsecured) else "unsecured"
        if not self.tls:
            return "no_tls"
        if profile == 2:
            return None
        if not self.own_tls:
            return "proxy_tls"
        if self.certificate is None:
            return "no_client_cert"
        if subject_common_names(self.certificate) != [station_id]:
            return "cert_cn_mismatch"
        return None


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
