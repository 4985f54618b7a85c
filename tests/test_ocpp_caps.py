"""Caps on the OCPP port's connections before any websocket exists (csms.ocpp_guard), over
real sockets: idle connections from one address, handshakes in all, open connections in
all, over plain TCP and over TLS. A refused connection gets 503 with Retry-After, is
counted, and leaves room for a real station once the others are gone."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from csms.app import CentralSystem
from csms.ocpp_guard import OcppConnectionGuard
from tests.certs import TestPki
from tests.conftest import start_system
from tests.test_tls import tls_env


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def _refused(system: CentralSystem, reason: str) -> float:
    value = system.metrics.registry.get_sample_value(
        "csms_ocpp_connections_refused_total", {"reason": reason}
    )
    return value or 0.0


async def _eventually(check: object, what: str) -> None:
    for _ in range(200):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not in time: {what}")


async def test_idle_connections_from_one_address_are_capped(tmp_path: Path) -> None:
    system, session, cpo = await start_system(
        tmp_path,
        ocpp__max_handshakes_per_address="3",
        ocpp__handshake_cap_exempt="[]",
        ocpp__accept_unknown_stations="true",
    )
    idle = []
    try:
        for _ in range(3):  # connected, saying nothing: handshakes in progress
            idle.append(await asyncio.open_connection("127.0.0.1", system.ocpp_port))
        guard = system.ocpp_server.guard
        await _eventually(lambda: len(guard.handshaking) == 3, "three handshakes counted")
        reader, writer = await asyncio.open_connection("127.0.0.1", system.ocpp_port)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 10" in answer
        assert _refused(system, "max_handshakes_per_address") == 1
        # a station's websocket client is refused alike, and said why
        with pytest.raises(InvalidStatus) as e:
            await connect(cpo.ocpp_url + "/CAP1", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
        assert e.value.response.status_code == 503
        # once the idle ones are gone, the station gets in
        for _, w in idle:
            w.close()
        idle.clear()
        await _eventually(lambda: not guard.handshaking and guard.open == 0, "released")
        async with connect(cpo.ocpp_url + "/CAP1", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            await _eventually(lambda: system.registry.is_connected("CAP1"), "connected")
            # an established websocket is no longer a handshake: it does not count there
            assert guard.open == 1 and not guard.handshaking
    finally:
        for _, w in idle:
            w.close()
        await session.close()
        await system.stop()


async def test_open_connections_are_capped_in_all(tmp_path: Path) -> None:
    system, session, cpo = await start_system(
        tmp_path, ocpp__max_connections="2", ocpp__accept_unknown_stations="true"
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            for sid in ("ALL1", "ALL2"):
                await stack.enter_async_context(
                    connect(f"{cpo.ocpp_url}/{sid}", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
                )
            with pytest.raises(InvalidStatus) as e:
                await connect(cpo.ocpp_url + "/ALL3", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            assert e.value.response.status_code == 503
            assert _refused(system, "max_connections") == 1
        # both closed: room again
        guard = system.ocpp_server.guard
        await _eventually(lambda: guard.open == 0, "released")
        async with connect(cpo.ocpp_url + "/ALL3", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            await _eventually(lambda: system.registry.is_connected("ALL3"), "connected")
    finally:
        await session.close()
        await system.stop()


async def test_the_caps_apply_over_tls(tmp_path: Path, pki: TestPki) -> None:
    system, session, _ = await start_system(
        tmp_path,
        **tls_env(pki, ocpp__max_handshakes_per_address="1", ocpp__handshake_cap_exempt="[]"),
    )
    await session.close()
    ctx = pki.client_context()
    try:
        first = await asyncio.open_connection("127.0.0.1", system.ocpp_port, ssl=ctx)
        second = await asyncio.open_connection("127.0.0.1", system.ocpp_port, ssl=ctx)
        answer = await asyncio.wait_for(second[0].read(), 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        second[1].close()
        first[1].close()
        guard = system.ocpp_server.guard
        await _eventually(lambda: guard.open == 0 and not guard.handshaking, "released")
        assert _refused(system, "max_handshakes_per_address") == 1
    finally:
        await system.stop()


def test_a_trusted_proxy_is_not_capped_per_address_and_fd_limits_lower_the_cap() -> None:
    import ipaddress

    guard = OcppConnectionGuard(
        100, 100, 1, exempt=[ipaddress.ip_network("10.0.0.0/8")], registry=None
    )

    class T:
        def __init__(self, host: str) -> None:
            self.host = host
            self.closed = False

        def get_extra_info(self, name: str) -> object:
            return (self.host, 1234) if name == "peername" else None

        def close(self) -> None:
            self.closed = True

    proxy = [object(), object()]
    assert all(guard.admit(p, T("10.1.2.3")) for p in proxy)  # type: ignore[arg-type]
    outsider = [object(), object()]
    assert guard.admit(outsider[0], T("203.0.113.9"))  # type: ignore[arg-type]
    late = T("203.0.113.9")
    assert not guard.admit(outsider[1], late)  # type: ignore[arg-type]
    assert late.closed
    guard.established(outsider[0])  # its handshake done: room for the next one
    assert guard.admit(outsider[1], T("203.0.113.9"))  # type: ignore[arg-type]
    assert guard.fit_to_fd_limit(1024, 256) == 100
    assert guard.fit_to_fd_limit(400, 100) == 44
