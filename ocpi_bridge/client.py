"""Our calls to OCPI peers: the right token encoding, request ids, routing headers, and a
clear verdict (success = HTTP 2xx and OCPI status 1xxx)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from .transport import FUNCTIONAL_MODULES, authorization_header, new_request_ids

log = structlog.get_logger("ocpi.client")


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
        if isinstance(self.body, dict):
            return (
                f"HTTP {self.http_status}, OCPI {self.body.get('status_code')} "
                f"{self.body.get('status_message') or ''}".strip()
            )
        return f"HTTP {self.http_status}: {str(self.body)[:200]}"


class OcpiCallFailed(Exception):
    """The peer could not be reached, or answered something that is not OCPI."""


class OcpiClient:
    def __init__(
        self,
        timeout: float,
        our_party: tuple[str, str],
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.timeout = timeout
        self.our_country, self.our_party = our_party
        self._session = session
        self._own_session = session is None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # OCPI peers authenticate with tokens, never cookies: no jar to search per push
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

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
        """One OCPI request. Raises OcpiCallFailed when there is no HTTP answer."""
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
                data=None if body is None else json.dumps(body, separators=(",", ":")),
                headers=headers,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:
                raw = await resp.read()
                try:
                    # JSON is UTF-8 (RFC 8259); no charset sniffing of every answer
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                reply = OcpiReply(resp.status, parsed, dict(resp.headers))
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning(
                "OCPI call failed",
                **self._fields(method, url, headers, module),
                error=f"{type(e).__name__}: {e}",
            )
            raise OcpiCallFailed(f"{method} {url}: {type(e).__name__}: {e}") from e
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
