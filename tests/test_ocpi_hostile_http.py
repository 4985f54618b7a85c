"""Issue 12, item 15, OCPI side: huge offsets, deep or non-finite bodies and huge session
ids are client errors in OCPI's envelope (status_code 2001), never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.conftest import Running
from tests.ocpi_peer.harness import EmspPeer
from tests.test_ocpi import cpo, peer, registered  # noqa: F401  (fixtures)


async def _token(peer: EmspPeer) -> str:  # noqa: F811
    state = await peer.state()
    return str(state["connections"][-1]["token_out"])


async def _call(
    cpo: Running,  # noqa: F811
    token: str,
    method: str,
    path: str,
    body: bytes | None = None,
) -> tuple[int, Any]:
    headers = {
        "Authorization": "Token " + base64.b64encode(token.encode()).decode(),
        "Content-Type": "application/json",
        "OCPI-from-country-code": "PT",
        "OCPI-from-party-id": "EMS",
        "OCPI-to-country-code": "PT",
        "OCPI-to-party-id": "CPO",
    }
    async with cpo.api.session.request(
        method, cpo.http_url + path, data=body, headers=headers
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_hostile_ocpi_requests_are_2001_not_500(cpo: Running, peer: EmspPeer) -> None:  # noqa: F811
    await registered(cpo, peer)
    token = await _token(peer)
    base = "/ocpi/2.2.1"
    for module in ("locations", "sessions", "cdrs", "tariffs"):
        for offset in ("99999999999999999999", "9223372036854775808", "1" * 5000):
            query = f"date_from=2000-01-01T00:00:00Z&offset={offset}"
            status, body = await _call(cpo, token, "GET", f"{base}/{module}?{query}")
            assert status in (200, 400), (module, offset[:30], status, body)
            assert body["status_code"] in (1000, 2001), (module, body)
    uid = f"{base}/tokens/PT/EMS/UID1"
    for text in (
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 500 + "1" + "}" * 500,
        '{"uid": "UID1", "x": NaN}',
        '{"uid": "UID1", "x": 1e999}',
        '{"uid": "UID1", "x": 99999999999999999999}',
        '{"uid": "\\ud800"}',
    ):
        for method in ("PUT", "PATCH"):
            status, body = await _call(cpo, token, method, uid, text.encode())
            # (a body that parses but is no Token is answered as any invalid Token: 2001)
            assert status in (200, 400) and body["status_code"] == 2001, (method, text[:30], body)
    for session_id in ("99999999999999999999", "\u00b2", "9223372036854775808"):
        status, body = await _call(
            cpo,
            token,
            "POST",
            f"{base}/commands/STOP_SESSION",
            json.dumps({"response_url": "http://127.0.0.1:9/r", "session_id": session_id}).encode(),
        )
        assert status < 500, (session_id, status, body)
        assert "status_code" in body
