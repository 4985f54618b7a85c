"""OCPI transport: envelope, times, tokens, headers, pagination, errors.

Everything here follows section 2 of OCPI 2.2.1 (see ../shared/reference): the response
envelope, `Authorization: Token ...` accepted raw or Base64-encoded, `X-Request-ID` and
`X-Correlation-ID`, routing headers on functional modules, and paginated lists with `Link`,
`X-Total-Count` and `X-Limit`.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from csms.ports import dumps, to_iso

# highest first: the handshake takes the first one both sides speak (2.1.1: ocpi_bridge.v211)
VERSIONS = ("2.2.1", "2.2", "2.1.1")
FUNCTIONAL_MODULES = frozenset(
    {"locations", "sessions", "cdrs", "tariffs", "tokens", "commands", "chargingprofiles"}
)

# OCPI status codes we use
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
NOT_ENOUGH_INFORMATION = 2002
UNKNOWN_LOCATION = 2003
UNKNOWN_TOKEN = 2004
SERVER_ERROR = 3000
UNABLE_TO_USE_CLIENT_API = 3001
UNSUPPORTED_VERSION = 3002
NO_MATCHING_ENDPOINTS = 3003


class OcpiError(Exception):
    """An OCPI-layer error: answered with an envelope carrying ``status_code``."""

    def __init__(self, status_code: int, message: str, http_status: int = 200) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.http_status = http_status


def ocpi_time(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`, the only shape we write."""
    text = to_iso(value)
    assert text is not None
    return text


_OCPI_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})?$"
)


def parse_ocpi_time(text: str) -> datetime:
    """An OCPI DateTime: with `Z` or without designator (both UTC), 0-6 fractional digits.
    An explicit offset is converted to UTC (OCPI forbids it; we are lenient and the caller
    may log). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError("a DateTime is a string")
    m = _OCPI_TIME.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an OCPI DateTime (YYYY-MM-DDTHH:MM:SSZ)")
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is after the year 9999 in UTC
        raise ValueError(f"{text!r} is out of range") from None


def envelope(
    data: Any = None,
    status_code: int = SUCCESS,
    message: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = data
    body["status_code"] = status_code
    if message:
        body["status_message"] = message
    body["timestamp"] = ocpi_time(now or datetime.now(UTC))
    return body


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def token_from_header(value: str | None) -> list[str]:
    """The candidate tokens in an `Authorization: Token ...` header: the raw text, and its
    Base64 decoding when it decodes to printable ASCII. Empty when the header is unusable."""
    if not value:
        return []
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "token" or not token.strip():
        return []
    token = token.strip()
    candidates = [token]
    try:
        decoded = base64.b64decode(token, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if decoded and decoded.isprintable() and decoded != token:
        candidates.append(decoded)
    return candidates


def authorization_header(token: str, use_base64: bool) -> str:
    if use_base64:
        return "Token " + base64.b64encode(token.encode()).decode()
    return "Token " + token


def new_request_ids() -> dict[str, str]:
    """Two different UUIDs, as MOBI.E asks."""
    return {"X-Request-ID": str(uuid.uuid4()), "X-Correlation-ID": str(uuid.uuid4())}


def paginate_headers(
    request: web.Request,
    public_url: str,
    total: int,
    offset: int,
    limit: int,
    max_limit: int,
    returned: int,
) -> dict[str, str]:
    """`X-Total-Count`, `X-Limit` and, when more remain, `Link` to the next page repeating
    the original filters with the new offset (an absolute URL under ``public_url``)."""
    headers = {"X-Total-Count": str(total), "X-Limit": str(max_limit)}
    next_offset = offset + returned
    if returned and next_offset < total:
        params = {k: v for k, v in request.query.items() if k != "offset"}
        params["offset"] = str(next_offset)
        params["limit"] = str(limit)
        headers["Link"] = (
            f'<{public_url.rstrip("/")}{request.path}?{urlencode(params)}>; rel="next"'
        )
    return headers


def join_url(base: str, *parts: str) -> str:
    """Join with exactly one slash, whatever the advertised URL ends with (with no parts, the
    URL stays exactly as advertised: some servers redirect the other form)."""
    if not parts:
        return base
    url = base.rstrip("/")
    for part in parts:
        url += "/" + str(part).strip("/")
    return url


@dataclass(frozen=True, slots=True)
class Page:
    """A paginated GET's window: offset, limit, and the last_updated range asked for."""

    offset: int
    limit: int
    date_from: datetime | None
    date_to: datetime | None
