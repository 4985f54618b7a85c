"""OCPP 1.6 security profiles per station, against a real csms on loopback: wss:// served
by csms itself with certificates made here (tests/certs.py), real websockets, the refusals
with their reasons (HTTP status and the metrics label), and raising a station's profile."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from csms.app import CentralSystem
from tests.certs import TestPki
from tests.conftest import Api, Running, start_system

PASSWORD = "s3cret-password"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def tls_overrides(pki: TestPki, **more: str) -> dict[str, str]:
    return {
        "ocpp__tls": "true",
        "http__tls": "true",
        "tls__cert_file": f'"{pki.server.cert}"',
        "tls__key_file": f'"{pki.server.key}"',
        "tls__station_ca_file": f'"{pki.ca.cert}"',
        **more,
    }


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, pki: TestPki | None = None, station_ca: bool = True, **overrides: str
) -> AsyncIterator[Running]:
    """A csms; with ``pki``, serving wss:// and https:// with the test CA's certificate."""
    if pki is not None:
        overrides = tls_overrides(pki, **overrides)
        if not station_ca:
            del overrides["tls__station_ca_file"]
    system, session, run = await start_system(tmp_path, **overrides)
    if pki is not None:
        await session.close()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pki.client_context()))
        run.api = Api(f"https://127.0.0.1:{system.http_port}", session)
    try:
        yield run
    finally:
        await session.close()
        await system.stop()


def basic(station_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def url(system: CentralSystem, station_id: str, tls: bool) -> str:
    scheme = "wss" if tls else "ws"
    return f"{scheme}://127.0.0.1:{system.ocpp_port}/ocpp/{station_id}"


async def open_ws(
    system: CentralSystem,
    station_id: str,
    *,
    ctx: ssl.SSLContext | None = None,
    password: str | None = None,
    headers: dict[str, str] | None = None,
) -> ClientConnection:
    extra = dict(headers or {})
    if password is not None:
        extra.update(basic(station_id, password))
    return await connect(
        url(system, station_id, ctx is not None),
        ssl=ctx,
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=extra,
        open_timeout=5,
    )


async def refused(system: CentralSystem, station_id: str, **kw: Any) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        ws = await open_ws(system, station_id, **kw)
        await ws.close()
    response = info.value.response
    return response.status_code, response.body.decode()


async def heartbeat(ws: ClientConnection) -> None:
    await ws.send(json.dumps([2, "hb-1", "Heartbeat", {}]))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer[0] == 3 and answer[1] == "hb-1" and "currentTime" in answer[2]


def refused_count(system: CentralSystem, reason: str) -> float:
    value = system.metrics.registry.get_sample_value(
        "csms_ocpp_handshakes_refused_total", {"reason": reason}
    )
    return value or 0.0


def tls_failed(system: CentralSystem, reason: str, listener: str = "ocpp") -> float:
    value = system.metrics.registry.get_sample_value(
        "csms_tls_handshakes_failed_total", {"listener": listener, "reason": reason}
    )
    return value or 0.0


async def define(run: Running, station_id: str, profile: int, password: str | None) -> None:
    extra: dict[str, Any] = {"security_profile": profile}
    if password is not None:
        extra["password"] = password
    await run.define_station(station_id, **extra)


# ---------------------------------------------------------------------- profile 1


async def test_profile_1_plain_ws_accepted_and_refused_when_unsecured_is_off(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "a") as run:
        await define(run, "CP-P1", 1, PASSWORD)
        ws = await open_ws(run.system, "CP-P1", password=PASSWORD)
        await heartbeat(ws)
        conn = run.system.registry.get("CP-P1")
        assert conn is not None and conn.tls is False and conn.client_certificate is None
        await ws.close()
    async with running(tmp_path / "b", ocpp__allow_unsecured="false") as run:
        await define(run, "CP-P1", 1, PASSWORD)
        status, body = await refused(run.system, "CP-P1", password=PASSWORD)
        assert status == 403 and "wss" in body
        assert refused_count(run.system, "unsecured") == 1


async def test_unknown_station_keeps_profile_1_rules(tmp_path: Path) -> None:
    async with running(
        tmp_path, ocpp__accept_unknown_stations="true", ocpp__allow_unsecured="false"
    ) as run:
        status, _ = await refused(run.system, "CP-NEW")
        assert status == 403 and refused_count(run.system, "unsecured") == 1


# ---------------------------------------------------------------------- profile 2


async def test_profile_2_needs_tls_and_the_password(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path / "plain") as run:
        await define(run, "CP-P2", 2, PASSWORD)
        status, body = await refused(run.system, "CP-P2", password=PASSWORD)
        assert status == 403 and "TLS" in body
        assert refused_count(run.system, "no_tls") == 1
    async with running(tmp_path / "tls", pki) as run:
        await define(run, "CP-P2", 2, PASSWORD)
        ws = await open_ws(run.system, "CP-P2", ctx=pki.client_context(), password=PASSWORD)
        await heartbeat(ws)
        conn = run.system.registry.get("CP-P2")
        assert conn is not None and conn.tls and conn.security_profile == 2
        await ws.close()
        status, _ = await refused(
            run.system, "CP-P2", ctx=pki.client_context(), password="wrong-password"
        )
        assert status == 401 and refused_count(run.system, "unauthorized") == 1
        status, _ = await refused(run.system, "CP-P2", ctx=pki.client_context())
        assert status == 401 and refused_count(run.system, "unauthorized") == 2


async def test_profile_2_definition_needs_a_password(tmp_path: Path) -> None:
    async with running(tmp_path) as run:
        from tests.conftest import station_body

        status, body = await run.api.put(
            "/api/v1/stations/CP-NOPW", station_body("CP-NOPW", security_profile=2)
        )
        assert status == 422 and body["error"] == "password_required"
        status, body = await run.api.put(
            "/api/v1/stations/CP-NOPW", station_body("CP-NOPW", security_profile=4)
        )
        assert status == 422 and body["fields"][0]["field"] == "security_profile"
        # a profile given once stays when a later definition leaves it out
        await define(run, "CP-KEEP", 2, PASSWORD)
        status, body = await run.api.put("/api/v1/stations/CP-KEEP", station_body("CP-KEEP"))
        assert status == 200 and body["security_profile"] == 2
        assert body["pending_security_profile"] is None
        assert await run.system.store.stations.security_profile("CP-KEEP") == 2
        assert await run.system.store.stations.security_profile("CP-NONE") == 1


async def test_profile_2_through_a_trusted_tls_proxy(tmp_path: Path) -> None:
    async with running(tmp_path, ocpp__trusted_proxies='["127.0.0.1/32"]') as run:
        await define(run, "CP-PX", 2, PASSWORD)
        await define(run, "CP-PX3", 3, None)
        https = {"X-Forwarded-Proto": "https"}
        ws = await open_ws(run.system, "CP-PX", password=PASSWORD, headers=https)
        await heartbeat(ws)
        await ws.close()
        status, _ = await refused(run.system, "CP-PX", password=PASSWORD)
        assert status == 403 and refused_count(run.system, "no_tls") == 1
        # profile 3 needs csms's own TLS: csms must see the certificate
        status, body = await refused(run.system, "CP-PX3", headers=https)
        assert status == 403 and "own TLS" in body
        assert refused_count(run.system, "proxy_tls") == 1
    async with running(tmp_path / "untrusted") as run:  # (no trusted proxy: the header is ignored)
        await define(run, "CP-PX", 2, PASSWORD)
        status, _ = await refused(
            run.system, "CP-PX", password=PASSWORD, headers={"X-Forwarded-Proto": "https"}
        )
        assert status == 403 and refused_count(run.system, "no_tls") == 1


# ---------------------------------------------------------------------- profile 3


async def test_profile_3_client_certificates(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path, pki) as run:
        system = run.system
        await define(run, "CP-P3", 3, None)
        good = pki.station("CP-P3")
        ws = await open_ws(system, "CP-P3", ctx=pki.client_context(good))
        await heartbeat(ws)
        conn = system.registry.get("CP-P3")
        assert conn is not None and conn.tls and conn.security_profile == 3
        assert conn.client_certificate is not None
        assert ((("commonName", "CP-P3"),)) in conn.client_certificate["subject"]
        await ws.close()
        # Basic credentials, if sent, are ignored (even wrong ones)
        ws = await open_ws(system, "CP-P3", ctx=pki.client_context(good), password="whatever!")
        await heartbeat(ws)
        await ws.close()

        status, body = await refused(system, "CP-P3", ctx=pki.client_context())
        assert status == 403 and "client certificate" in body
        assert refused_count(system, "no_client_cert") == 1

        wrong = pki.station("CP-P3X")
        status, body = await refused(system, "CP-P3", ctx=pki.client_context(wrong))
        assert status == 403 and "CN" in body
        assert refused_count(system, "cert_cn_mismatch") == 1
        # a CN that only starts like the id is not the id
        prefix = pki.station("CP-P")
        status, _ = await refused(system, "CP-P3", ctx=pki.client_context(prefix))
        assert status == 403 and refused_count(system, "cert_cn_mismatch") == 2

        # refused by the TLS handshake itself: counted with the reason, never a 403
        for cert, reason in (
            (pki.station("CP-P3", expired=True), "cert_expired"),
            (pki.station("CP-P3", other_ca=True), "untrusted_ca"),
        ):
            with pytest.raises((OSError, ssl.SSLError, asyncio.TimeoutError, Exception)) as info:
                ws = await open_ws(system, "CP-P3", ctx=pki.client_context(cert))
                await ws.close()
            assert not isinstance(info.value, InvalidStatus)
            for _ in range(50):  # (the server counts once its side of the handshake ends)
                if tls_failed(system, reason) == 1:
                    break
                await asyncio.sleep(0.02)
            assert tls_failed(system, reason) == 1, reason
        # the listener still serves
        ws = await open_ws(system, "CP-P3", ctx=pki.client_context(good))
        await heartbeat(ws)
        await ws.close()


async def test_tls_below_1_2_is_refused(tmp_path: Path, pki: TestPki) -> None:
    """A TLS 1.1 client, if this OpenSSL can still offer TLS 1.1; otherwise a TLS 1.2 client
    against a server whose minimum is 1.3 (same code path: the version check)."""
    with warnings.catch_warnings():  # (TLS 1.0 and 1.1 are deprecated: that is the point)
        warnings.simplefilter("ignore", DeprecationWarning)
        old = pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.TLSv1
    can_offer_1_1 = True
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        can_offer_1_1 = False
    overrides = {} if can_offer_1_1 else {"tls__min_version": '"1.3"'}
    client = old if can_offer_1_1 else pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    async with running(tmp_path, pki, **overrides) as run:
        await define(run, "CP-OLD", 2, PASSWORD)
        with pytest.raises((ssl.SSLError, OSError)):
            ws = await open_ws(run.system, "CP-OLD", ctx=client, password=PASSWORD)
            await ws.close()
        for _ in range(50):
            if tls_failed(run.system, "protocol_version") == 1:
                break
            await asyncio.sleep(0.02)
        assert tls_failed(run.system, "protocol_version") == 1
        # the same on the HTTP port
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as s:
                await s.get(f"https://127.0.0.1:{run.system.http_port}/healthz", ssl=client)
        for _ in range(50):
            if tls_failed(run.system, "protocol_version", "http") == 1:
                break
            await asyncio.sleep(0.02)
        assert tls_failed(run.system, "protocol_version", "http") == 1


async def _raw_upgrade(
    host: str, port: int, path: str, ctx: ssl.SSLContext
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=None)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


def _frame(text: str) -> bytes:
    """A masked text frame (a client's), payload under 126 bytes."""
    data = text.encode()
    assert len(data) < 126
    mask = os.urandom(4)
    return (
        bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    )


async def test_an_independent_tls_client_with_a_client_certificate(
    tmp_path: Path, pki: TestPki
) -> None:
    """Not the websockets client: the standard library's TLS and the upgrade by hand."""
    async with running(tmp_path, pki) as run:
        await define(run, "CP-RAW", 3, None)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(pki.ca.cert))
        ctx.check_hostname = False  # (an IP address; the chain is still verified)
        cert = pki.station("CP-RAW")
        ctx.load_cert_chain(cert.cert, cert.key)
        head, reader, writer = await _raw_upgrade(
            "127.0.0.1", run.system.ocpp_port, "/ocpp/CP-RAW", ctx
        )
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"sec-websocket-protocol: ocpp1.6" in head.lower()
        writer.write(_frame('[2,"raw-1","Heartbeat",{}]'))
        await writer.drain()
        first = await asyncio.wait_for(reader.readexactly(2), 5)
        assert first[0] == 0x81 and first[1] < 126  # unmasked text frame from the server
        answer = json.loads(await reader.readexactly(first[1]))
        assert answer[0] == 3 and answer[1] == "raw-1"
        writer.close()
        # the same client without its certificate: 403
        ctx2 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx2.load_verify_locations(cafile=str(pki.ca.cert))
        ctx2.check_hostname = False
        head, _, writer = await _raw_upgrade(
            "127.0.0.1", run.system.ocpp_port, "/ocpp/CP-RAW", ctx2
        )
        assert head.startswith(b"HTTP/1.1 403"), head
        writer.close()


# ---------------------------------------------------------------------- raising a profile


class Responder:
    """A station's side of a connection: answers ChangeConfiguration with ``status``."""

    def __init__(self, ws: ClientConnection, status: str = "Accepted") -> None:
        self.ws = ws
        self.status = status
        self.asked: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg[0] == 2 and msg[2] == "ChangeConfiguration":
                    self.asked.append(msg[3])
                    await self.ws.send(json.dumps([3, msg[1], {"status": self.status}]))

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def test_raising_a_station_to_profile_3(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path, pki) as run:
        system, api = run.system, run.api
        await define(run, "CP-UP", 2, PASSWORD)
        path = "/api/v1/stations/CP-UP/security-profile"
        cert = pki.station("CP-UP")

        status, body = await api.post(path, {"profile": 3})
        assert status == 409 and body["error"] == "station_offline"
        assert (await api.get("/api/v1/stations/CP-UP"))[1]["pending_security_profile"] is None

        station = Responder(
            await open_ws(system, "CP-UP", ctx=pki.client_context(), password=PASSWORD)
        )
        status, body = await api.post(path, {"profile": 2})
        assert status == 409 and "already" in body["message"]
        status, body = await api.post(path, {"profile": "3"})
        assert status == 422

        station.status = "Rejected"
        status, body = await api.post(path, {"profile": 3})
        assert (
            status == 409 and body["error"] == "station_refused" and "Rejected" in body["message"]
        )
        assert (await api.get("/api/v1/stations/CP-UP"))[1]["pending_security_profile"] is None

        station.status = "Accepted"
        status, body = await api.post(path, {"profile": 3})
        assert status == 202, body
        assert body["security_profile"] == 2 and body["pending_security_profile"] == 3
        assert station.asked[-1] == {"key": "SecurityProfile", "value": "3"}
        await station.close()

        # while pending: the old profile still works (the station's fallback)...
        ws = await open_ws(system, "CP-UP", ctx=pki.client_context(), password=PASSWORD)
        await heartbeat(ws)
        await ws.close()
        assert await system.store.stations.security_profile("CP-UP") == 2
        # ... and the first connection at the new one makes it the station's profile
        ws = await open_ws(system, "CP-UP", ctx=pki.client_context(cert))
        await heartbeat(ws)
        await ws.close()
        _, view = await api.get("/api/v1/stations/CP-UP")
        assert view["security_profile"] == 3 and view["pending_security_profile"] is None
        # from then on, profile 2 is below the station's profile
        status, _ = await refused(system, "CP-UP", ctx=pki.client_context(), password=PASSWORD)
        assert status == 403 and refused_count(system, "no_client_cert") == 1


async def test_a_pending_raise_can_be_cancelled(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path, pki) as run:
        await define(run, "CP-C", 1, PASSWORD)
        path = "/api/v1/stations/CP-C/security-profile"
        station = Responder(
            await open_ws(run.system, "CP-C", ctx=pki.client_context(), password=PASSWORD)
        )
        status, body = await run.api.post(path, {"profile": 2})
        assert status == 202 and body["pending_security_profile"] == 2
        await station.close()
        status, body = await run.api.request("DELETE", path)
        assert status == 200 and body["pending_security_profile"] is None
        assert body["security_profile"] == 1
        status, _ = await run.api.request("DELETE", "/api/v1/stations/NOPE/security-profile")
        assert status == 404


async def test_raise_refused_without_tls(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path / "plain") as run:
        await define(run, "CP-R", 1, PASSWORD)
        status, body = await run.api.post("/api/v1/stations/CP-R/security-profile", {"profile": 2})
        assert status == 409 and "ocpp.tls" in body["message"]
    # TLS but no stations' CA: profile 2 possible, profile 3 not
    async with running(tmp_path / "noca", pki, station_ca=False) as run:
        await define(run, "CP-R", 1, PASSWORD)
        status, body = await run.api.post("/api/v1/stations/CP-R/security-profile", {"profile": 3})
        assert status == 409 and "tls.station_ca_file" in body["message"]


async def test_station_page_shows_and_raises_the_profile(tmp_path: Path) -> None:
    from tests.test_web import ADMIN, VIEWER, WebClient, web_overrides

    overrides = web_overrides(OCPP__TRUSTED_PROXIES='["127.0.0.1/32"]')
    system, session, run = await start_system(tmp_path, **overrides)
    clients: list[WebClient] = []
    try:
        await define(run, "CP-WEB", 1, PASSWORD)
        station = Responder(await open_ws(system, "CP-WEB", password=PASSWORD))
        admin = WebClient(run.http_url)
        clients.append(admin)
        assert (await admin.login(ADMIN)).status == 303
        status, page = await admin.get("/stations/CP-WEB")
        assert status == 200 and 'id="security-profile"' in page
        assert "<strong>1</strong>" in page and 'id="pending-profile"' not in page
        status, _, headers = await admin.post("/stations/CP-WEB/security-profile", {"profile": "2"})
        assert status == 303 and headers["Location"].endswith("#command-result")
        _, page = await admin.get("/stations/CP-WEB")
        assert 'id="pending-profile"' in page and station.asked[-1]["value"] == "2"
        # refused raises are shown with their reason
        await admin.post("/stations/CP-WEB/security-profile", {"profile": "3"})
        _, page = await admin.get("/stations/CP-WEB")
        assert "tls.station_ca_file" in page
        await admin.post("/stations/CP-WEB/security-profile", {"profile": "cancel"})
        _, page = await admin.get("/stations/CP-WEB")
        assert 'id="pending-profile"' not in page
        # a viewer sees the profile, without the form, and may not post it
        viewer = WebClient(run.http_url)
        clients.append(viewer)
        assert (await viewer.login(VIEWER)).status == 303
        _, page = await viewer.get("/stations/CP-WEB")
        assert 'id="security-profile"' in page and 'action="/stations/CP-WEB/security' not in page
        status, _, _ = await viewer.post("/stations/CP-WEB/security-profile", {"profile": "2"})
        assert status == 403
        await station.close()
    finally:
        for c in clients:
            await c.close()
        await session.close()
        await system.stop()


async def test_profile_3_needs_no_password_even_when_required(tmp_path: Path, pki: TestPki) -> None:
    async with running(tmp_path, pki, ocpp__require_password="true") as run:
        from tests.conftest import station_body

        status, body = await run.api.put("/api/v1/stations/CP-NOPW1", station_body("CP-NOPW1"))
        assert status == 422 and body["error"] == "password_required"
        status, body = await run.api.put(
            "/api/v1/stations/CP-CERT", station_body("CP-CERT", security_profile=3)
        )
        assert status == 201 and body["has_password"] is False
        ws = await open_ws(run.system, "CP-CERT", ctx=pki.client_context(pki.station("CP-CERT")))
        await heartbeat(ws)
        await ws.close()
