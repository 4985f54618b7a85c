"""TLS served by csms itself, and the TLS of its own calls.

Server side: one :class:`ServerTls` per process holds the SSL contexts of the listeners
that serve TLS (``ocpp.tls``: wss:// on the OCPP port, with the stations' CA for profile 3;
``http.tls``: https:// on the HTTP port). Both listeners accept plain TCP and run each
connection's TLS handshake themselves (:class:`TlsAcceptor`): every new connection gets the
context current at that moment, so that :meth:`ServerTls.reload` (SIGHUP) takes effect for
new handshakes while the connections already open keep theirs; and a handshake that fails
(an untrusted or expired client certificate, TLS below the minimum, plain HTTP on a TLS
port) is seen: logged, one bounded line per remote address at most a few times a minute,
and counted (``csms_tls_handshakes_failed{listener,reason}``).

Client side: :func:`client_context` is what csms's own calls verify their peers with
(OCPI peers, other nodes of a cluster): the system's CAs plus ``tls.ca_file``, TLS 1.2 at
least, host names checked. :func:`link_context` is the one for a URL: a node's own delivery
process reaches its node over the loopback interface, where the node's certificate (made
for its public name) is trusted as it is, without a host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
import weakref
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import structlog

from .config import Settings, TlsSettings

log = structlog.get_logger("csms.tls")

P = TypeVar("P", bound=asyncio.BaseProtocol)

# TLS 1.2: forward secrecy and AEAD only (TLS 1.3's suites are all modern)
CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
# The OCPP port adds, last, the two suites without forward secrecy that the OCPP 1.6
# security whitepaper has a central system support for chargers with RSA certificates
# (TLS_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_256_GCM_SHA384): chosen only when the
# server's key is RSA and the station offers nothing better
CIPHERS_OCPP_TLS12 = CIPHERS_TLS12 + ":AES128-GCM-SHA256:AES256-GCM-SHA384"
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
HANDSHAKE_TIMEOUT = 20.0
SHUTDOWN_TIMEOUT = 10.0
# handshakes in progress on one listener; past that, new connections are closed at once
MAX_HANDSHAKES = 1024
# failed handshakes logged per remote address per minute (all are counted)
LOG_PER_MINUTE = 3
LOG_MAX_ADDRESSES = 4096
# what a failed handshake is counted as (csms_tls_handshakes_failed's reason)
FAILURE_REASONS = (
    "cert_expired",
    "cert_not_yet_valid",
    "untrusted_ca",
    "cert_invalid",
    "protocol_version",
    "no_shared_cipher",
    "not_tls",
    "peer_refused",
    "timeout",
    "closed",
    "busy",
    "tls_error",
)


class TlsConfigError(Exception):
    """A TLS file cannot be used; the message names the setting."""


# ---------------------------------------------------------------------- contexts


def _readable(key: str, path: Path | None) -> Path:
    if path is None:
        raise TlsConfigError(f"{key}: not set")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise TlsConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    return path


def _encrypted(key: Path) -> bool:
    try:
        with key.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"ENCRYPTED" in head


def _ssl_reason(e: ssl.SSLError) -> str:
    return str(e.reason or e.library or "unreadable")[:100]


def _harden(ctx: ssl.SSLContext, min_version: str, ciphers: str = CIPHERS_TLS12) -> None:
    ctx.minimum_version = VERSIONS[min_version]
    ctx.set_ciphers(ciphers)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(tls: TlsSettings, *, station_ca: bool) -> ssl.SSLContext:
    """The context of a TLS listener; with ``station_ca`` (the OCPP port) it asks for a
    client certificate, verified against ``tls.station_ca_file`` when one is sent
    (profile 3), and lets stations without one in (profile 2). Raises TlsConfigError."""
    cert = _readable("tls.cert_file", tls.cert_file)
    key = _readable("tls.key_file", tls.key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, tls.min_version, CIPHERS_OCPP_TLS12 if station_ca else CIPHERS_TLS12)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    secret = tls.key_password.get_secret_value() if tls.key_password else ""

    def password() -> str:  # (never OpenSSL's prompt on a terminal)
        return secret

    try:
        ctx.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as e:
        reason = str(e.reason or "").upper()
        if "MISMATCH" in reason:
            raise TlsConfigError("tls.key_file: does not match tls.cert_file") from None
        if _encrypted(key):
            raise TlsConfigError(
                "tls.key_file: cannot decrypt the key (its passphrase is CSMS_TLS__KEY_PASSWORD)"
            ) from None
        raise TlsConfigError(
            "tls.cert_file / tls.key_file: not a PEM certificate chain and its key"
            f" ({_ssl_reason(e)})"
        ) from None
    if station_ca and tls.station_ca_file is not None:
        ca = _readable("tls.station_ca_file", tls.station_ca_file)
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as e:
            raise TlsConfigError(
                f"tls.station_ca_file: not PEM CA certificates ({_ssl_reason(e)})"
            ) from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def build_client_context(tls: TlsSettings | None) -> ssl.SSLContext:
    """Verification on, host names checked, TLS 1.2 at least, the system's CAs and
    ``tls.ca_file``. Raises TlsConfigError."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # (the default ciphers: a peer's choice)
    if tls is not None and tls.ca_file is not None:
        ca = _readable("tls.ca_file", tls.ca_file)
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as e:
            raise TlsConfigError(
                f"tls.ca_file: not PEM CA certificates ({_ssl_reason(e)})"
            ) from None
    return ctx


def _build_loopback_context(tls: TlsSettings) -> ssl.SSLContext:
    """Trusts the node's own certificate (and tls.ca_file) without a host name: for a URL
    on the loopback interface, where the certificate's public name cannot match."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # (the default ciphers: a peer's choice)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    for key, path in (("tls.cert_file", tls.cert_file), ("tls.ca_file", tls.ca_file)):
        if path is not None:
            try:
                ctx.load_verify_locations(cafile=str(_readable(key, path)))
            except ssl.SSLError as e:
                raise TlsConfigError(f"{key}: not PEM certificates ({_ssl_reason(e)})") from None
    return ctx


class _ClientTls:
    def __init__(self) -> None:
        self.tls: TlsSettings | None = None
        self.context: ssl.SSLContext = build_client_context(None)
        self.loopback: ssl.SSLContext | None = None

    def configure(self, tls: TlsSettings) -> None:
        context = build_client_context(tls)
        loopback = _build_loopback_context(tls) if tls.cert_file is not None else None
        self.tls, self.context, self.loopback = tls, context, loopback


_client = _ClientTls()


def configure_client(settings: Settings) -> None:
    """Read ``tls.ca_file`` (and the node's certificate, for loopback links) for this
    process's calls. Raises TlsConfigError."""
    _client.configure(settings.tls)


def reload_client() -> bool:
    """Re-read the client side's files (SIGHUP); on failure keep the old and log."""
    if _client.tls is None:
        return True
    try:
        _client.configure(_client.tls)
    except TlsConfigError as e:
        log.error("TLS files not reloaded: the old ones stay in use", error=str(e))
        return False
    return True


def client_context() -> ssl.SSLContext:
    """What csms's calls to other servers verify them with (OCPI peers, cluster nodes)."""
    return _client.context


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def link_context(url: str) -> ssl.SSLContext | bool:
    """The ``ssl=`` argument of an aiohttp request to a process of this csms: plain for
    http://; on the loopback interface the node's own certificate; else the client context."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return True  # (aiohttp's default; unused for http://)
    if _client.loopback is not None and _is_loopback(parts.hostname or ""):
        return _client.loopback
    return _client.context


# ---------------------------------------------------------------------- server


def failure_reason(exc: BaseException | None) -> str:
    """A failed handshake's reason, one of :data:`FAILURE_REASONS`."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return "cert_expired"
        if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return "cert_not_yet_valid"
        if code in (2, 18, 19, 20, 21, 27):  # no issuer, self-signed, untrusted
            return "untrusted_ca"
        return "cert_invalid"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason:
            return "protocol_version"
        if "NO_SHARED_CIPHER" in reason:
            return "no_shared_cipher"
        if "HTTP" in reason:
            return "not_tls"
        if "ALERT" in reason:
            return "peer_refused"
        if "CERTIFICATE" in reason:
            return "cert_invalid"
        return "tls_error"
    if isinstance(exc, _Busy):
        return "busy"
    if isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc):
        return "timeout"
    if exc is None or isinstance(exc, ConnectionError | EOFError):
        return "closed"
    return "tls_error"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed during the handshake"
    if isinstance(exc, _Busy):
        return f"more than {MAX_HANDSHAKES} handshakes in progress"
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"{exc.reason}: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError):
        text = str(exc.reason or exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text[:200]


class _LogBudget:
    """At most LOG_PER_MINUTE lines per remote address per minute, LOG_MAX_ADDRESSES
    addresses remembered (the oldest forgotten)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        start, n = self._seen.pop(address, (now, 0))
        if now - start >= 60:
            start, n = now, 0
        self._seen[address] = (start, n + 1)
        while len(self._seen) > LOG_MAX_ADDRESSES:
            self._seen.popitem(last=False)
        return n < LOG_PER_MINUTE


# every ServerTls of this process, for reload_all (SIGHUP)
_servers: weakref.WeakSet[ServerTls] = weakref.WeakSet()


def reload_all() -> None:
    """SIGHUP: re-read the TLS files of every listener of this process and of its calls."""
    for server in list(_servers):
        server.reload()
    reload_client()


class ServerTls:
    """The server contexts of this process's TLS listeners, reloadable (SIGHUP)."""

    def __init__(self, settings: Settings, failed: Any = None) -> None:
        self.settings = settings
        self.failed = failed  # csms_tls_handshakes_failed (labels listener, reason)
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.load()
        _servers.add(self)

    @property
    def enabled(self) -> bool:
        return bool(self.contexts)

    def load(self) -> None:
        """Build every listener's context from the files. Raises TlsConfigError."""
        s = self.settings
        contexts = {}
        if s.ocpp.tls:
            contexts["ocpp"] = server_context(s.tls, station_ca=True)
        if s.http.tls:
            contexts["http"] = server_context(s.tls, station_ca=False)
        self.contexts = contexts

    def reload(self) -> bool:
        """Re-read certificate, key and CAs: new handshakes use them, open connections
        keep theirs. Files that fail to load leave the old contexts in use (logged)."""
        if not self.enabled:
            return True
        try:
            self.load()
        except TlsConfigError as e:
            log.error("TLS files not reloaded: the old ones stay in use", error=str(e))
            return False
        log.info("TLS certificate, key and CAs reloaded", listeners=sorted(self.contexts))
        return True

    def acceptor(self, listener: str) -> TlsAcceptor | None:
        """The acceptor of a listener that serves TLS (None: it is plain)."""
        if listener not in self.contexts:
            return None
        return TlsAcceptor(self, listener)


class TlsAcceptor:
    """Runs the TLS handshake of each connection of one listener, with the context current
    when it arrives, then hands the decrypted stream to the listener's own protocol."""

    def __init__(self, owner: ServerTls, listener: str) -> None:
        self.owner = owner
        self.listener = listener
        self.handshaking = 0
        self._budget = _LogBudget()

    def wrap(self, factory: Callable[..., asyncio.BaseProtocol]) -> Callable[..., Any]:
        """A protocol factory whose protocols first do the TLS handshake."""

        def make(*args: Any, **kwargs: Any) -> asyncio.Protocol:
            return _TlsStart(self, factory(*args, **kwargs))

        return make

    def subclass(self, cls: type[P]) -> type[P]:
        """``cls`` (a protocol) whose first ``connection_made`` (the TCP connection) starts
        the TLS handshake; the second (the TLS connection, once established) is its own.
        For servers that must get their own protocol objects back from the factory."""
        acceptor = self

        class TlsFirst(cls):  # type: ignore[valid-type,misc]
            _csms_tls_started = False

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if self._csms_tls_started:
                    super().connection_made(transport)
                    return
                self._csms_tls_started = True
                acceptor.start(transport, self)

        TlsFirst.__name__ = TlsFirst.__qualname__ = f"Tls{cls.__name__}"
        return TlsFirst  # type: ignore[return-value]

    def start(self, transport: asyncio.BaseTransport, app: asyncio.BaseProtocol) -> None:
        """Run the TLS handshake of a new TCP connection; ``app`` gets ``connection_made``
        with the TLS transport once it succeeds (nothing if it fails: logged, counted)."""
        peer = transport.get_extra_info("peername")
        context = self.owner.contexts.get(self.listener)
        if self.handshaking >= MAX_HANDSHAKES or context is None:
            transport.abort()
            self.failed_handshake(peer, _Busy())
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        protocol = sslproto.SSLProtocol(
            loop,
            app,
            context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        self.handshaking += 1
        waiter.add_done_callback(lambda w: self._done(protocol, peer, w))
        # the TLS protocol takes the transport before any byte is read (this runs in the
        # transport's first callback; its reads start after)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def _done(self, protocol: sslproto.SSLProtocol, peer: Any, waiter: asyncio.Future[Any]) -> None:
        self.handshaking -= 1
        exc = waiter.exception() if not waiter.cancelled() else None
        if exc is None and protocol._extra.get("ssl_object") is not None:
            return  # (done: the listener's protocol has the connection)
        self.failed_handshake(peer, exc)

    def failed_handshake(self, peer: Any, exc: BaseException | None) -> None:
        reason = failure_reason(exc)
        if self.owner.failed is not None:
            self.owner.failed.labels(self.listener, reason).inc()
        host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        if not self._budget.allow(host):
            return
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else host
        emit = log.info if reason == "closed" else log.warning
        emit(
            "TLS handshake failed",
            listener=self.listener,
            remote=remote,
            reason=reason,
            error=_describe(exc),
        )


class _TlsStart(asyncio.Protocol):
    """A new TCP connection: hands its transport to a TLS protocol at once (before any
    byte is read) whose application protocol is the listener's own."""

    __slots__ = ("_acceptor", "_inner")

    def __init__(self, acceptor: TlsAcceptor, inner: asyncio.BaseProtocol) -> None:
        self._acceptor = acceptor
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner, self._inner = self._inner, None  # type: ignore[assignment]
        self._acceptor.start(transport, inner)

    def data_received(self, data: bytes) -> None:  # (never: the TLS protocol reads)
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class _Busy(Exception):
    """Too many handshakes in progress on the listener."""


def peer_certificate(transport: asyncio.BaseTransport | None) -> dict[str, Any] | None:
    """The verified client certificate of a TLS connection (as ``getpeercert()`` gives
    it), or None: plain, or no certificate sent."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    return cert or None


def is_tls(transport: asyncio.BaseTransport | None) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def subject_common_names(cert: dict[str, Any]) -> list[str]:
    """The subject's CN values of a ``getpeercert()`` dict."""
    names = []
    for rdn in cert.get("subject", ()):
        for attr in rdn:
            if isinstance(attr, tuple) and len(attr) == 2 and attr[0] == "commonName":
                names.append(str(attr[1]))
    return names
