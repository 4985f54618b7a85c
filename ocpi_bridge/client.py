"""Our calls to OCPI peers: the right token encoding, request ids, routing headers, and a
clear verdict (success = HTTP 2xx and OCPI status 1xxx).

Every URL we call comes from a peer (its versions URL, the endpoints it advertises, a
command's response_url), so unless ``allow_private`` (``ocpi.allow_private_peer_addresses``)
is set, we refuse to call a loopback, private, link-local or otherwise non-public address:
the host of an IP-literal URL is checked before the call, and the connector checks every
address it is about to connect to (an IP literal, each address a name resolves to, the
target of each redirect): those it checked are those it uses, so there is no second
resolution to race with. What a peer answers is never echoed back whole: an answer
that is not an OCPI envelope is described by its HTTP status and content type only.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp
import structlog
from yarl import URL

from csms.ports import client_context

from .transport import FUNCTIONAL_MODULES, authorization_header, dumps, new_request_ids

log = structlog.get_logger("ocpi.client")
# the longest answer of a peer we read (the largest page of a pull is far smaller)
MAX_ANSWER = 16 * 1024 * 1024


@dataclass
class OcpiReply:
    http_status: int
    body: Any  # the parsed envelope, or the raw text when it was not JSON
    headers: dict[str, str]

    @property
    def status_code(self) -> int | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("status_code"), int):
            return int(self.body["status_code"])
        return None

    @property
    def ok(self) -> bool:
        code = self.status_code
        return 200 <= self.http_status < 300 and code is not None and 1000 <= code < 2000

    @property
    def data(self) -> Any:
        return self.body.get("data") if isinstance(self.body, dict) else None

    def describe(self) -> str:
        """The verdict in a few words: never the peer's body (its OCPI status message, cut
        short and made printable, when it answered an OCPI envelope)."""
        if isinstance(self.body, dict) and self.status_code is not None:
            message = self.body.get("status_message")
            text = _printable(message, 120) if isinstance(message, str) else ""
            return f"HTTP {self.http_status}, OCPI {self.status_code} {text}".strip()
        kind = _printable(self.headers.get("Content-Type", "no type").split(";")[0], 60)
        return f"HTTP {self.http_status}, not an OCPI answer ({kind})"


def _printable(text: str, limit: int) -> str:
    cut = "".join(c if c.isprintable() else " " for c in text[:limit])
    return cut + ("..." if len(text) > limit else "")


class OcpiCallFailed(Exception):
    """The peer could not be reached, or answered something that is not OCPI."""


class PrivateAddressRefused(OSError):
    """A peer's URL leads to an address that is not public, and that is not allowed."""


@lru_cache(maxsize=4096)
def is_public_address(address: str) -> bool:
    """A global unicast address (not loopback, private, link-local, CGNAT, multicast,
    reserved, unspecified, nor an IPv4-mapped form of one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal(host: str) -> str | None:
    """``host`` when it is an IP address (with or without brackets), else None."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        return None
    return bare


class PublicOnlyConnector(aiohttp.TCPConnector):
    """aiohttp's connector, refusing a host when any of the addresses it would connect to
    is not public: an IP literal, every address a name resolves to (one private address
    among public ones is enough: the connection could use it), and the same for every
    redirect. The addresses checked are the ones the connection then uses."""

    async def _resolve_host(self, host: str, port: int, *args: Any, **kw: Any) -> Any:
        results = await super()._resolve_host(host, port, *args, **kw)
        private = sorted({r["host"] for r in results if not is_public_address(r["host"])})
        if private:
            shown = host if _literal(host) else f"{host} ({', '.join(private)})"
            raise PrivateAddressRefused(
                f"{shown} is not a public address; set ocpi.allow_private_peer_addresses "
                "to allow it"
            )
        return results


class OcpiClient:
    def __init__(
        self,
        timeout: float,
        our_party: tuple[str, str],
        session: aiohttp.ClientSession | None = None,
        allow_private: bool = False,
    ) -> None:
        self.timeout = timeout
        self.our_country, self.our_party = our_party
        self._session = session
        self._own_session = session is None
        # ocpi.allow_private_peer_addresses (set by the extension before the first call)
        self.allow_private = allow_private

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None
            if not self.allow_private:
                connector = PublicOnlyConnector()
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # OCPI peers authenticate with tokens, never cookies: no jar to search per push
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=connector,
            )
        return self._session

    def check_target(self, url: str) -> None:
        """Refuse, before any connection, a URL that is not http(s) or whose host is a
        non-public IP literal (host names are checked when resolved). Raises
        OcpiCallFailed."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise OcpiCallFailed("not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise OcpiCallFailed(f"{parsed.scheme or 'no'} scheme: only http(s) URLs are called")
        if self.allow_private:
            return
        literal = _literal(parsed.host)
        if literal is not None and not is_public_address(literal):
            raise OcpiCallFailed(
                f"{literal} is not a public address; set ocpi.allow_private_peer_addresses "
                "to allow it"
            )

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        token: str,
        *,
        base64_token: bool = True,
        body: Any = None,
        module: str | None = None,
        to_party: tuple[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> OcpiReply:
        """One OCPI request. Raises OcpiCallFailed when there is no HTTP answer, or when the
        URL is refused (see :meth:`check_target`)."""
        self.check_target(url)
        headers = {
            "Authorization": authorization_header(token, base64_token),
            **new_request_ids(),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        if module in FUNCTIONAL_MODULES:
            headers["OCPI-from-country-code"] = self.our_country
            headers["OCPI-from-party-id"] = self.our_party
            if to_party is not None:
                headers["OCPI-to-country-code"], headers["OCPI-to-party-id"] = to_party
        session = await self._get_session()
        try:
            async with session.request(
                method,
                url,
                data=None if body is None else dumps(body, separators=(",", ":")),
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                # the peer's certificate verified (system CAs and tls.ca_file), TLS 1.2 at least
                ssl=client_context(),
            ) as resp:
                raw = await read_capped(resp, MAX_ANSWER)
                try:
                    # JSON is UTF-8 (RFC 8259); no charset sniffing of every answer
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                reply = OcpiReply(resp.status, parsed, dict(resp.headers))
        except (aiohttp.ClientError, TimeoutError, ValueError, AnswerTooBig) as e:
            refused = _refusal(e) or _tls_refusal(e, url.startswith("https:"))
            error = refused or f"{type(e).__name__}: {e}"
            log.warning(
                "OCPI call failed", **self._fields(method, url, headers, module), error=error
            )
            raise OcpiCallFailed(f"{method} {url}: {error}") from e
        # a refusal is worth a warning; a success is routine (the pusher logs what it pushed)
        (log.debug if reply.ok else log.warning)(
            "OCPI call", **self._fields(method, url, headers, module), result=reply.describe()
        )
        return reply

    @staticmethod
    def _fields(
        method: str, url: str, headers: dict[str, str], module: str | None
    ) -> dict[str, Any]:
        return {
            "method": method,
            "url": url,
            "request_id": headers["X-Request-ID"],
            "module": module,
        }


class AnswerTooBig(Exception):
    """A peer's answer longer than we read (a peer cannot make us hold gigabytes)."""


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body of an answer, unless it is longer than ``cap`` bytes: then AnswerTooBig,
    having read at most ``cap`` bytes and one chunk."""
    if resp.content_length is not None and resp.content_length > cap:
        raise AnswerTooBig(f"the answer is {resp.content_length} bytes, more than {cap}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise AnswerTooBig(f"the answer is more than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _tls_refusal(exc: BaseException, https: bool) -> str | None:
    """A clear text for a peer whose certificate did not verify or whose TLS is too old."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        detail = getattr(cert_error, "verify_message", None) or str(cert_error)
        return (
            f"TLS: the peer's certificate is not trusted ({detail}); csms trusts the system's "
            "CAs and tls.ca_file"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        reason = getattr(exc.os_error, "reason", None) or str(exc.os_error)
        return f"TLS: no secure connection with the peer ({reason}); TLS 1.2 at least"
    if (
        https
        and isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, ConnectionResetError | ConnectionAbortedError)
    ):
        return (
            "TLS: no secure connection with the peer (it closed the connection during the TLS "
            "handshake; it may not offer TLS 1.2 or newer)"
        )
    return None


def _refusal(exc: BaseException) -> str | None:
    """The text of a PrivateAddressRefused behind an aiohttp connection error."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, PrivateAddressRefused):
            return f"refused: {seen}"
        seen = seen.__cause__ or getattr(seen, "os_error", None)
    return None
