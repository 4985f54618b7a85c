"""The HTTP side of the process: operator API, health and metrics, on one aiohttp app.

Other packages (the OCPI bridge, the web interface) add their routes to the same app
before it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .api import Api, error, errors_middleware
from .passwords import VerifiedCache, parse_basic_auth

log = structlog.get_logger("csms.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthCheck = Callable[[], Awaitable[dict[str, object]]]


def basic_auth_middleware(
    user: str, password_hash: str, prefix: str = "/api/"
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    cache = VerifiedCache(size=64)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefix):
            return await handler(request)
        creds = parse_basic_auth(request.headers.get("Authorization"))
        ok = (
            creds is not None
            and creds[0] == user
            and await asyncio.to_thread(cache.verify, creds[1], password_hash)
        )
        if not ok:
            log.warning(
                "API request refused: credentials", path=request.path, remote=request.remote
            )
            resp = error(401, "unauthorized", "HTTP Basic credentials of the API admin required")
            resp.headers["WWW-Authenticate"] = 'Basic realm="csms", charset="UTF-8"'
            return resp
        return await handler(request)

    return middleware


def build_app(
    api: Api,
    admin_user: str,
    admin_password_hash: str,
    health: HealthCheck,
    registry_metrics: CollectorRegistry,
) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, basic_auth_middleware(admin_user, admin_password_hash)],
        client_max_size=1 << 20,
    )

    async def healthz(request: web.Request) -> web.Response:
        report = await health()
        return web.json_response(report, status=200 if report.get("status") == "ok" else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry_metrics)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(api.routes())
    return app
