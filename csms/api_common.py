"""What every ``/api/v1`` handler shares, csms's and its services': paging, the list
answer, the JSON body, a use case's refusal as an error. (A module of its own: the
services that add routes, csms.stuck and the others, are imported by csms.api.)"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .http import MAX_OFFSET, ApiError, JsonBodyError, json_response, read_json
from .usecases import Refused

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def refusal(e: Refused) -> ApiError:
    """A use case's refusal as the API's error; fields only for invalid bodies (422)."""
    if e.status == 422 and e.fields:
        return ApiError(e.status, e.code, e.message, fields=e.fields)
    return ApiError(e.status, e.code, e.message)


async def json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        raise ApiError(400, "invalid_json", "a JSON body is required")
    try:
        return await read_json(request)
    except JsonBodyError as e:
        raise ApiError(400, "invalid_json", str(e)) from None


def paging(request: web.Request, default_limit: int = DEFAULT_LIMIT) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", default_limit))
        offset = int(request.query.get("offset", 0))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or not 0 <= offset <= MAX_OFFSET:
        raise ApiError(
            400, "invalid_query", f"limit must be 1..{MAX_LIMIT} and offset 0..{MAX_OFFSET}"
        )
    return limit, offset


def page_response(
    items: list[Any], total: int, limit: int, offset: int, **extra: Any
) -> web.Response:
    return json_response(
        {"items": items, "total": total, "limit": limit, "offset": offset, **extra},
        headers={"X-Total-Count": str(total)},
    )
