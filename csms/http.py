"""The HTTP side of the process: operator API, health and metrics, on one aiohttp app.

Other packages (the OCPI bridge, the web interface) add their routes to the same app
before it starts.

The port is guarded (:class:`ConnectionGuard`): a bounded number of connections in all and
per source address, and every connection must keep moving: a request's headers within
``header_timeout`` of its first byte, its body within ``read_timeout`` of its headers (a
file uploaded to ``/uploads/``, such as a station's log, may take longer as long as at least
:data:`UPLOAD_PROGRESS` bytes arrive in every ``read_timeout``), no connection idle
longer than ``idle_timeout`` between requests, no client that stops reading our answer for
longer than ``write_timeout``. Bodies are parsed by :func:`read_json`, which
refuses what the handlers could not hold (deep nesting, non-finite or 64-bit-overflowing
numbers, lone surrogates) as a client error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import resource
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
)

from .db import DatabaseUnavailable
from .guard import api_guard
from .logs import json_dumps
from .metrics import metrics_handler
from .openapi import PUBLIC_PATHS, query_middleware
from .passwords import parse_basic_auth

if TYPE_CHECKING:
    from .config import Settings
    from .tls import TlsAcceptor

log = structlog.get_logger("csms.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthCheck = Callable[[], Awaitable[dict[str, object]]]

# ---------------------------------------------------------------------- JSON bodies

MAX_JSON_DEPTH = 64
# the largest ?offset= a list accepts (SQLite's integers end at 2**63 - 1)
MAX_OFFSET = 1_000_000_000
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonBodyError(json.JSONDecodeError):
    """A request body that is not JSON we accept. A JSONDecodeError, so that code catching
    that (the OCPI server does) answers it as a client error; ``str()`` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "", 0)
        self.args = (reason,)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def _refuse_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not a JSON number")


def _check_value(value: Any, max_depth: int) -> None:
    """Walk a parsed body without recursion: depth, numbers, strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise JsonBodyError(f"nested deeper than {max_depth} levels")
            for key, sub in item.items():
                if _SURROGATE.search(key):
                    raise JsonBodyError("a key contains an unpaired surrogate (\\ud800-\\udfff)")
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise JsonBodyError(f"nested deeper than {max_depth} levels")
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                raise JsonBodyError("a string contains an unpaired surrogate (\\ud800-\\udfff)")
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise JsonBodyError("an integer is out of the 64-bit range")
        elif isinstance(item, float) and not math.isfinite(item):
            raise JsonBodyError("a number is out of range")


def loads_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body; raise :class:`JsonBodyError` (a ``json.JSONDecodeError``)
    for anything but plain JSON no deeper than ``max_depth``, with finite numbers, integers
    in the 64-bit range and valid Unicode."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except JsonBodyError:
        raise
    except RecursionError:
        raise JsonBodyError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise JsonBodyError(f"the body is not valid JSON: {e}") from None
    except (ValueError, TypeError) as e:  # UnicodeDecodeError, too many digits
        raise JsonBodyError(f"the body is not valid JSON: {e}") from None
    _check_value(value, max_depth)
    return value


async def read_json(request: web.Request, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's body as JSON (see :func:`loads_json`); any decoding problem, including
    bytes that are not UTF-8, is a :class:`JsonBodyError`."""
    raw = await request.read()
    try:
        text = raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError) as e:
        raise JsonBodyError(f"the body is not valid UTF-8 text: {e}") from None
    return loads_json(text, max_depth)


# ---------------------------------------------------------------------- rate-limited logs


class RateLimitedLog:
    """At most one line per ``interval`` seconds per key; what was left out is counted in
    the next line (``suppressed``)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, emit: Callable[..., Any], event: str, **fields: Any) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            fields["suppressed"] = suppressed
        emit(event, **fields)
        return True


ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"


class LoopErrorFilter:
    """An event loop exception handler that logs accept failures (EMFILE, ENFILE...) at
    most once a minute, with the count of those left out: asyncio reports one a second per
    listening socket for as long as descriptors are short, with a traceback each time."""

    def __init__(
        self,
        fallback: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], Any] | None = None,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fallback = fallback
        self.limit = RateLimitedLog(interval, clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message == ACCEPT_ERROR_MESSAGE:
            exc = context.get("exception")
            self.limit(
                "accept",
                log.error,
                "cannot accept connections",
                error=str(exc) if exc is not None else None,
                hint="out of file descriptors or memory; see the fd limit logged at start",
            )
            return
        if self.fallback is not None:
            self.fallback(loop, context)
        else:
            loop.default_exception_handler(context)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    for want in (target, 1 << 20, 65536):
        if want <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want, hard
        except (ValueError, OSError):
            continue
    return soft, hard


def fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


# ---------------------------------------------------------------------- connection guard

# uploads (stations' log files, over slow cellular links) are held to a rate, not a deadline
UPLOADS_PREFIX = "/uploads/"
# and so is a firmware file an admin uploads to the API (csms.firmware; unauthenticated
# requests are answered 401 before their body is read)
UPLOAD_PATHS = frozenset({"/api/v1/firmware"})
UPLOAD_PROGRESS = 1024


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0
    read_timeout: float = 30.0
    idle_timeout: float = 60.0
    write_timeout: float = 30.0
    max_connections: int = 512
    max_connections_per_address: int = 64
    # sources the per-address cap does not apply to (reverse proxies)
    exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        h = settings.http
        return cls(
            header_timeout=h.header_timeout,
            read_timeout=h.read_timeout,
            idle_timeout=h.idle_timeout,
            write_timeout=h.write_timeout,
            max_connections=h.max_connections,
            max_connections_per_address=h.max_connections_per_address,
            exempt=tuple(
                ipaddress.ip_network(p, strict=False) for p in settings.web.trusted_proxies
            ),
        )


def _address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if not peer:
        return "unknown"
    host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host


_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)


def dumps(obj: Any, **kw: Any) -> str:
    """JSON that any client can parse: NaN and the infinities (a meter value stored before
    they were refused, say) become null. What we answer and what we send to OCPI peers."""
    return json_dumps(obj, non_finite_as_text=False, **kw)


def json_response(data: Any, **kw: Any) -> web.Response:
    """web.json_response, with :func:`dumps`."""
    return web.json_response(data, dumps=dumps, **kw)


def _refusal(message: str) -> bytes:
    body = json.dumps(
        {"status": "error", "error": "too_many_connections", "message": message}
    ).encode()
    return _REFUSAL % (len(body), body)


class _Conn:
    __slots__ = ("active", "address", "header_timer", "transport", "write_timer")

    def __init__(self, transport: asyncio.Transport, address: str) -> None:
        self.transport = transport
        self.address = address
        self.active = False  # a request is in the app's hands
        self.header_timer: asyncio.TimerHandle | None = None
        self.write_timer: asyncio.TimerHandle | None = None

    def cancel_timers(self) -> None:
        for timer in (self.header_timer, self.write_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.write_timer = None


class ConnectionGuard:
    """Counts and times the connections of the HTTP port (see the module's docstring).

    ``protocol_factory`` wraps aiohttp's request handler: a connection over a cap is answered
    503 and closed at once, before aiohttp sees it; ``middleware`` tells the guard when a
    request's headers are complete and when the app is done with it."""

    def __init__(self, limits: HttpLimits, registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections
        self.open = 0
        self.per_address: dict[str, int] = {}
        self.conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.refused: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self._log = RateLimitedLog(10.0)
        self._exempt_cache: dict[str, bool] = {}
        self._g_open: Gauge | None = None
        self._c_refused: Counter | None = None
        self._c_closed: Counter | None = None
        if registry is not None:
            self._g_open = Gauge(
                "csms_http_connections_open", "open connections on the HTTP port", registry=registry
            )
            self._c_refused = Counter(
                "csms_http_connections_refused",
                "HTTP connections refused at once by a cap",
                ["reason"],
                registry=registry,
            )
            self._c_closed = Counter(
                "csms_http_connections_timed_out",
                "HTTP connections closed by a timeout",
                ["reason"],
                registry=registry,
            )

    def fit_to_fd_limit(self, limit: int) -> int:
        """Keep the HTTP port to a quarter of the file descriptors, so that a full HTTP port
        never leaves the OCPP listener, the database and the OCPI client without any."""
        allowed = max(16, limit // 4)
        if self.limits.max_connections > allowed:
            log.warning(
                "http.max_connections lowered to a quarter of the file descriptor limit",
                configured=self.limits.max_connections,
                used=allowed,
                fd_limit=limit,
            )
            self.max_connections = allowed
        else:
            self.max_connections = self.limits.max_connections
        return self.max_connections

    # -------------------------------------------------------------- admission

    def _is_exempt(self, address: str) -> bool:
        if not self.limits.exempt:
            return False
        known = self._exempt_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
                known = any(ip in net for net in self.limits.exempt)
            except ValueError:
                known = False
            if len(self._exempt_cache) > 4096:
                self._exempt_cache.clear()
            self._exempt_cache[address] = known
        return known

    def admit(self, transport: asyncio.Transport) -> _Conn | None:
        address = _address(transport)
        reason = None
        if self.open >= self.max_connections:
            reason = "max_connections"
        elif self.per_address.get(
            address, 0
        ) >= self.limits.max_connections_per_address and not self._is_exempt(address):
            reason = "max_connections_per_address"
        if reason is not None:
            self._count(self.refused, self._c_refused, reason)
            self._log(
                f"refused:{reason}",
                log.warning,
                "HTTP connection refused",
                reason=reason,
                remote=address,
                open=self.open,
            )
            try:
                transport.write(_refusal(f"too many connections ({reason}); try again later"))
            finally:
                transport.close()
            return None
        conn = _Conn(transport, address)
        self.conns[transport] = conn
        self.open += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        if self._g_open is not None:
            self._g_open.set(self.open)
        return conn

    def release(self, conn: _Conn) -> None:
        conn.cancel_timers()
        if self.conns.pop(conn.transport, None) is None:
            return
        self.open -= 1
        left = self.per_address.get(conn.address, 1) - 1
        if left > 0:
            self.per_address[conn.address] = left
        else:
            self.per_address.pop(conn.address, None)
        if self._g_open is not None:
            self._g_open.set(self.open)

    @staticmethod
    def _count(into: dict[str, int], counter: Counter | None, reason: str) -> None:
        into[reason] = into.get(reason, 0) + 1
        if counter is not None:
            counter.labels(reason).inc()

    # -------------------------------------------------------------- timers

    def _expire(self, conn: _Conn, reason: str) -> None:
        if conn.transport.is_closing():
            return
        self._count(self.closed, self._c_closed, reason)
        self._log(
            f"timeout:{reason}",
            log.warning,
            "HTTP connection closed: too slow",
            reason=reason,
            remote=conn.address,
        )
        conn.transport.abort()

    def request_bytes(self, conn: _Conn) -> None:
        """Bytes arrived: if no request is in the app's hands, they start one, whose headers
        must be complete within header_timeout."""
        if conn.active or conn.header_timer is not None:
            return
        conn.header_timer = asyncio.get_running_loop().call_later(
            self.limits.header_timeout, self._header_expired, conn
        )

    def _header_expired(self, conn: _Conn) -> None:
        conn.header_timer = None
        if not conn.active:
            self._expire(conn, "header_timeout")

    def writing_paused(self, conn: _Conn) -> None:
        if conn.write_timer is None:
            conn.write_timer = asyncio.get_running_loop().call_later(
                self.limits.write_timeout, self._write_expired, conn
            )

    def writing_resumed(self, conn: _Conn) -> None:
        if conn.write_timer is not None:
            conn.write_timer.cancel()
            conn.write_timer = None

    def _write_expired(self, conn: _Conn) -> None:
        conn.write_timer = None
        self._expire(conn, "write_timeout")

    def _read_expired(self, conn: _Conn, request: web.BaseRequest, timer: _BodyTimer) -> None:
        content = request.content
        if content.is_eof():
            return
        if timer.upload and content.total_bytes >= timer.seen + UPLOAD_PROGRESS:
            timer.seen = content.total_bytes
            timer.start()
            return
        self._expire(conn, "read_timeout")

    # -------------------------------------------------------------- aiohttp glue

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, server)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self.conns.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.active = True
        if conn.header_timer is not None:
            conn.header_timer.cancel()
            conn.header_timer = None
        read_timer = None
        if request.body_exists and not request.content.is_eof():
            read_timer = _BodyTimer(self, conn, request)
            read_timer.start()
        try:
            return await handler(request)
        finally:
            conn.active = False
            if read_timer is not None:
                read_timer.cancel()


class _BodyTimer:
    """The deadline of one request's body: ``read_timeout`` after its headers, renewed for an
    upload while it keeps arriving (:data:`UPLOAD_PROGRESS`)."""

    __slots__ = ("conn", "guard", "handle", "request", "seen", "upload")

    def __init__(self, guard: ConnectionGuard, conn: _Conn, request: web.BaseRequest) -> None:
        self.guard = guard
        self.conn = conn
        self.request = request
        self.upload = request.path.startswith(UPLOADS_PREFIX) or request.path in UPLOAD_PATHS
        self.seen = request.content.total_bytes
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.handle = asyncio.get_running_loop().call_later(
            self.guard.limits.read_timeout, self.guard._read_expired, self.conn, self.request, self
        )

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the guard: created only for admitted connections."""

    __slots__ = ("_conn", "_guard", "_inner", "_server")

    def __init__(self, guard: ConnectionGuard, server: web.Server) -> None:
        self._guard = guard
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._conn = self._guard.admit(transport)
        if self._conn is None:
            return
        self._inner = self._server()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._conn is None:
            return
        self._guard.request_bytes(self._conn)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._guard.release(self._conn)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._conn is not None:
            self._guard.writing_paused(self._conn)
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._conn is not None:
            self._guard.writing_resumed(self._conn)
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through a :class:`ConnectionGuard` (if any) and,
    with ``tls``, a TLS handshake first."""

    __slots__ = ("_guard", "_tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard | None,
        host: str,
        port: int,
        tls: TlsAcceptor | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=1024)
        self._guard = guard
        self._tls = tls  # https: each connection's TLS handshake first (csms.tls)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.BaseProtocol] = (
            self._guard.protocol_factory(server) if self._guard is not None else server
        )
        if self._tls is not None:
            factory = self._tls.wrap(factory)
        self._server = await asyncio.get_running_loop().create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets: Iterable[Any] = self._server.sockets or ()
        ports = [s.getsockname()[1] for s in sockets]
        self._bound_port = ports[0] if ports else self._port


# ---------------------------------------------------------------------- the app


def basic_auth_middleware(
    user: str, password_hash: str, prefix: str = "/api/"
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    guard = api_guard()  # guessing limits and bounded hash checks (csms.guard)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix) or request.path in PUBLIC_PATHS:
            return await handler(request)
        creds = parse_basic_auth(request.headers.get("Authorization"))
        verdict = await guard.check_basic(creds, user, password_hash, request.remote)
        if verdict.refused:
            log.warning(
                "API request refused: " + verdict.message, path=request.path, remote=request.remote
            )
            resp = error(verdict.http_status, verdict.code, verdict.message)
            resp.headers["Retry-After"] = str(verdict.retry_after)
            return resp
        if not verdict.ok:
            log.warning(
                "API request refused: credentials", path=request.path, remote=request.remote
            )
            resp = error(401, "unauthorized", "HTTP Basic credentials of the API admin required")
            resp.headers["WWW-Authenticate"] = 'Basic realm="csms", charset="UTF-8"'
            return resp
        return await handler(request)

    return middleware


class RouteSource(Protocol):
    """What the app serves under ``/api/``: the operator API (csms.api.Api)."""

    def routes(self) -> list[web.RouteDef]: ...


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """The API's error answer: ``{"status": "error", "error": CODE, "message": TEXT, ...}``."""
    body = {"status": "error", "error": code, "message": message, **extra}
    return json_response(body, status=status)


class ApiError(Exception):
    """Raised by a handler: answered with :func:`error` by :func:`errors_middleware`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.response = error(status, code, message, **extra)


_api_log = structlog.get_logger("csms.api")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ApiError and unexpected failures into the API's JSON error shape."""
    try:
        return await handler(request)
    except ApiError as e:
        return e.response
    except DatabaseUnavailable as e:
        _api_log.warning(
            "API request failed: database unavailable", path=request.path, error=str(e)
        )
        return error(503, "database_unavailable", "the database is unavailable; try again later")
    except ConnectionError:  # the client went away (or was cut off by a timeout)
        raise
    except web.HTTPException as e:
        if not request.path.startswith("/api/"):
            raise
        resp = error(e.status, e.reason.lower().replace(" ", "_"), e.reason)
        if "Allow" in e.headers:  # (a 405 names the methods the path has: RFC 9110)
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        _api_log.exception("API request failed", path=request.path, method=request.method)
        return error(500, "internal_error", "internal error; see the server log")


def build_app(
    api: RouteSource,
    admin_user: str,
    admin_password_hash: str,
    health: HealthCheck,
    registry_metrics: CollectorRegistry,
    guard: ConnectionGuard | None = None,
    metrics_token: str | None = None,
    more_metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> web.Application:
    middlewares: list[Any] = [
        errors_middleware,
        basic_auth_middleware(admin_user, admin_password_hash),
        query_middleware,  # (a described route takes only the query parameters it names)
    ]
    if guard is not None:
        middlewares.insert(0, guard.middleware)
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)

    async def healthz(request: web.Request) -> web.Response:
        report = await health()
        return json_response(report, status=200 if report.get("status") == "ok" else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(registry_metrics, metrics_token, more_metrics))
    app.add_routes(api.routes())
    return app
