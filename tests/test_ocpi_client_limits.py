"""A peer cannot make us read an answer of any size: OcpiClient reads at most MAX_ANSWER
bytes (declared or streamed), then the call fails with a clear error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ocpi_bridge import client as client_module
from ocpi_bridge.client import OcpiCallFailed, OcpiClient


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    async def declared(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000, content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to check first
        await resp.prepare(request)
        for _ in range(50):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"status_code": 1000, "data": [], "timestamp": "x"})

    app = web.Application()
    app.router.add_get("/declared", declared)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/small", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_answer_too_long_fails_clearly(peer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "MAX_ANSWER", 4096)
    client = OcpiClient(5, ("PT", "CPO"), allow_private=True)
    try:
        for path in ("/declared", "/streamed"):
            with pytest.raises(OcpiCallFailed, match="more than 4096"):
                await client.request("GET", peer + path, "token")
        reply = await client.request("GET", peer + "/small", "token")
        assert reply.ok and reply.data == []
    finally:
        await client.close()
