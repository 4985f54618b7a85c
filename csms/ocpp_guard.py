"""Caps on the OCPP port's connections, before any websocket exists.

A TCP connection to the OCPP port costs a file descriptor and memory from the moment it is
accepted, long before the handshake says which station it is. Without a cap, anyone who can
reach the port can hold thousands of idle connections (each ends only at the handshake
timeout) and leave nothing for real stations, the database or the OCPI client. So:

- ``ocpp.max_connections``: open connections in all (lowered, at start, to what the file
  descriptor limit leaves after the HTTP port's share);
- ``ocpp.max_handshakes``: connections still in their opening handshake (accepted, no
  websocket yet), in all;
- ``ocpp.max_handshakes_per_address``: the same from one address, except from
  ``ocpp.handshake_cap_exempt`` (by default loopback: this machine's own processes) and
  ``ocpp.trusted_proxies`` (a reverse proxy carries everyone's).

A connection over a cap gets ``503 Service Unavailable`` with ``Retry-After`` (a charger
retries, as after any failed connection) and is closed at once; each refusal is counted
(``csms_ocpp_connections_refused{reason}``) and logged at most once per interval per reason.
With ``ocpp.tls`` the caps apply once the TLS handshake is done (TLS handshakes in progress
have their own cap and timeout: csms.tls), and the refusal is sent over TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from .http import RateLimitedLog

log = structlog.get_logger("csms.server")

P = TypeVar("P", bound=asyncio.BaseProtocol)

RETRY_AFTER = 10
REFUSAL = (
    "HTTP/1.1 503 Service Unavailable\r\n"
    f"Retry-After: {RETRY_AFTER}\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 34\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Too many connections; try later.\r\n"
).encode()
# reserved for everything that is not a connection of the two ports (database, files, peers)
FD_RESERVE = 256

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "?"


class OcppConnectionGuard:
    """Counts the OCPP port's connections and refuses those over a cap (module docstring)."""

    def __init__(
        self,
        max_connections: int,
        max_handshakes: int,
        max_handshakes_per_address: int,
        exempt: Sequence[Network] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.configured_max = max_connections
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.max_per_address = max_handshakes_per_address
        self.exempt = tuple(exempt)
        self.open = 0
        self.handshaking: dict[int, str] = {}  # id(protocol) -> its address
        self.per_address: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._log = RateLimitedLog(10.0)
        self._exempt_cache: dict[str, bool] = {}
        self._c_refused: Counter | None = None
        self._g_open: Gauge | None = None
        self._g_handshaking: Gauge | None = None
        if registry is not None:
            self._c_refused = Counter(
                "csms_ocpp_connections_refused",
                "OCPP port connections refused at once by a cap",
                ["reason"],
                registry=registry,
            )
            self._g_open = Gauge(
                "csms_ocpp_connections_open",
                "open connections on the OCPP port (websockets and handshakes)",
                registry=registry,
            )
            self._g_handshaking = Gauge(
                "csms_ocpp_handshakes_in_progress",
                "OCPP port connections still in their opening handshake",
                registry=registry,
            )

    def fit_to_fd_limit(self, fd_limit: int, http_share: int) -> int:
        """Lower ``max_connections`` to what the file descriptor limit leaves after the HTTP
        port's share and a reserve; returns the cap in force."""
        allowed = max(16, fd_limit - http_share - FD_RESERVE)
        self.max_connections = min(self.configured_max, allowed)
        if self.max_connections < self.configured_max:
            log.warning(
                "ocpp.max_connections lowered to what the file descriptor limit leaves",
                configured=self.configured_max,
                used=self.max_connections,
                fd_limit=fd_limit,
            )
        return self.max_connections

    def _is_exempt(self, address: str) -> bool:
        if not self.exempt:
            return False
        known = self._exempt_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
                known = any(ip in net for net in self.exempt)
            except ValueError:
                known = False
            if len(self._exempt_cache) > 4096:
                self._exempt_cache.clear()
            self._exempt_cache[address] = known
        return known

    # ------------------------------------------------------------------ the counts

    def admit(self, protocol: object, transport: asyncio.BaseTransport) -> bool:
        """A new connection: True when it may go on (counted until :meth:`release`)."""
        address = _address(transport)
        reason = None
        if self.open >= self.max_connections:
            reason = "max_connections"
        elif len(self.handshaking) >= self.max_handshakes:
            reason = "max_handshakes"
        elif self.per_address.get(address, 0) >= self.max_per_address and not self._is_exempt(
            address
        ):
            reason = "max_handshakes_per_address"
        if reason is not None:
            self.refused[reason] = self.refused.get(reason, 0) + 1
            if self._c_refused is not None:
                self._c_refused.labels(reason).inc()
            self._log(
                f"refused:{reason}",
                log.warning,
                "OCPP connection refused",
                reason=reason,
                remote=address,
                open=self.open,
                handshaking=len(self.handshaking),
            )
            try:
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(REFUSAL)
            finally:
                transport.close()
            return False
        self.open += 1
        self.handshaking[id(protocol)] = address
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self._gauges()
        return True

    def established(self, protocol: object) -> None:
        """Its opening handshake is done: it no longer counts as a handshake."""
        address = self.handshaking.pop(id(protocol), None)
        if address is not None:
            self._forget(address)
            self._gauges()

    def release(self, protocol: object) -> None:
        """The connection is closed."""
        self.open = max(0, self.open - 1)
        self.established(protocol)
        self._gauges()

    def _forget(self, address: str) -> None:
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    def _gauges(self) -> None:
        if self._g_open is not None:
            self._g_open.set(self.open)
        if self._g_handshaking is not None:
            self._g_handshaking.set(len(self.handshaking))

    # ------------------------------------------------------------------ the protocol

    def subclass(self, cls: type[P]) -> type[P]:
        """``cls`` (websockets' server connection) counted by this guard: its first
        ``connection_made`` is admitted or refused here; a refused one never reaches ``cls``."""
        guard = self

        class Guarded(cls):  # type: ignore[valid-type,misc]
            _csms_admitted: bool | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self._csms_admitted is None:
                    self._csms_admitted = guard.admit(self, transport)
                    if not self._csms_admitted:
                        return
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                if not self._csms_admitted:
                    return  # (refused: it never started)
                self._csms_admitted = False
                guard.release(self)
                super().connection_lost(exc)

        Guarded.__name__ = Guarded.__qualname__ = f"Guarded{cls.__name__}"
        return Guarded  # type: ignore[return-value]


def guard_from_settings(settings: Any, registry: CollectorRegistry | None) -> OcppConnectionGuard:
    cfg = settings.ocpp
    exempt = [
        ipaddress.ip_network(p, strict=False)
        for p in [*cfg.handshake_cap_exempt, *cfg.trusted_proxies]
    ]
    return OcppConnectionGuard(
        cfg.max_connections,
        cfg.max_handshakes,
        cfg.max_handshakes_per_address,
        exempt,
        registry,
    )
