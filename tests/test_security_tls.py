"""Security profiles 2 and 3 with the simulator as the station, against csms serving wss://
itself: the station gets its certificate signed by csms over profile 2, then is raised to
profile 3 (the operator's API) and reconnects with that certificate; and the station's
fallback when its certificate is not accepted."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from charger_sim import Station
from charger_sim.security import SecurityOptions
from tests.certs import TestPki
from tests.conftest import Running, start_system

ORG = "Operador de Teste Lda"
PASSWORD = "s3cret-password"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_csms(tmp_path: Path, certs: TestPki) -> AsyncIterator[Running]:
    # the simplest setup: one CA signs the stations' certificates (pki) and is the CA
    # csms checks them against at the handshake (tls.station_ca_file)
    system, session, running = await start_system(
        tmp_path,
        ocpp__tls="true",
        tls__cert_file=f'"{certs.server.cert}"',
        tls__key_file=f'"{certs.server.key}"',
        tls__station_ca_file=f'"{certs.ca.cert}"',
        pki__organization=f'"{ORG}"',
        pki__ca_cert_file=f'"{certs.ca.cert}"',
        pki__ca_key_file=f'"{certs.ca.key}"',
    )
    try:
        yield running
    finally:
        await session.close()
        await system.stop()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 8.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {value!r}")
        await asyncio.sleep(0.05)


async def profile_2_station(running: Running, certs: TestPki, cp: str, **options: Any) -> Station:
    status, body = await running.api.put(
        f"/api/v1/stations/{cp}",
        {**_body(running, cp), "security_profile": 2, "password": PASSWORD},
    )
    assert status in (200, 201), body
    st = Station(
        cp,
        url=f"wss://127.0.0.1:{running.system.ocpp_port}/ocpp",
        connectors=1,
        password=PASSWORD,
        security=SecurityOptions(profile=2, ca_file=certs.ca.cert, organization=ORG, **options),
    )
    await st.connect()
    await st.boot_and_report()
    conn = running.system.registry.get(cp)
    assert conn is not None and conn.tls and conn.security_profile == 2
    return st


def _body(running: Running, cp: str) -> dict[str, Any]:
    from tests.conftest import station_body

    return station_body(cp, 1)


async def events(running: Running, cp: str) -> list[str]:
    _, body = await running.api.get(f"/api/v1/stations/{cp}/security-events")
    return [e["type"] for e in body["items"]]


async def test_sign_over_profile_2_then_raise_to_profile_3(
    tls_csms: Running, certs: TestPki
) -> None:
    running = tls_csms
    cp = "CP-TLS-1"
    st = await profile_2_station(running, certs, cp)
    try:
        # without its own certificate, the station refuses profile 3
        status, body = await running.api.post(
            f"/api/v1/stations/{cp}/security-profile", {"profile": 3}
        )
        assert status == 409 and body["error"] == "station_refused", body
        # a lower profile is refused by the station
        status, body = await running.api.post(
            f"/api/v1/stations/{cp}/commands/ChangeConfiguration",
            {"key": "SecurityProfile", "value": "1"},
        )
        assert status == 200 and body["response"] == {"status": "Rejected"}
        # the station's CSR, signed by csms's CA, over profile 2
        status, body = await running.api.post(
            f"/api/v1/stations/{cp}/commands/ExtendedTriggerMessage",
            {"requestedMessage": "SignChargePointCertificate"},
        )
        assert status == 200 and body["response"] == {"status": "Accepted"}

        async def installed() -> bool:
            return st.security.client_cert is not None

        await eventually(installed)
        # the operator raises the station to profile 3: it reconnects with its certificate
        status, body = await running.api.post(
            f"/api/v1/stations/{cp}/security-profile", {"profile": 3}
        )
        assert status == 202, body

        async def at_3() -> Any:
            conn = running.system.registry.get(cp)
            _, view = await running.api.get(f"/api/v1/stations/{cp}")
            return (
                conn is not None
                and conn.security_profile == 3
                and view["security_profile"] == 3
                and st.connected
                # (the simulator records the key once its reconnection returned)
                and st.config.get("SecurityProfile") == "3"
                and conn
            )

        conn = await eventually(at_3)
        assert conn.client_certificate is not None
        assert (("commonName", cp),) in conn.client_certificate["subject"]
        assert st.security.profile == 3 and st.config.get("SecurityProfile") == "3"
        assert st.security.fallbacks == 0

        async def reconfigured() -> Any:
            return "ReconfigurationOfSecurityParameters" in await events(running, cp)

        await eventually(reconfigured)
        # the inventory knows csms's server certificate, the station CA and the new one
        _, inv = await running.api.get("/api/v1/certificates")
        kinds = {c["kind"]: c for c in inv["csms"]}
        assert kinds["server"]["serial"] == format(certs.server.certificate.serial_number, "x")
        assert kinds["station_ca"]["subject"] == certs.ca.certificate.subject.rfc4514_string()
        assert [c["station_id"] for c in inv["items"]] == [cp]
        metrics = running.system.metrics.registry
        server_left = metrics.get_sample_value(
            "csms_certificate_expiry_seconds", {"kind": "server"}
        )
        assert server_left is not None and 360 * 86400 < server_left < 366 * 86400
        # from now on, Basic auth over TLS (profile 2) is below the station's profile
        st.security.profile = 2
        with pytest.raises(InvalidStatus) as refused:
            await st.reconnect_now()
        assert refused.value.response.status_code == 403
    finally:
        await st.disconnect()


async def test_profile_3_fallback_when_the_certificate_is_not_accepted(
    tls_csms: Running, certs: TestPki
) -> None:
    running = tls_csms
    cp = "CP-TLS-2"
    untrusted = certs.station(cp, other_ca=True)  # a certificate csms does not trust
    st = await profile_2_station(
        running, certs, cp, client_cert=untrusted.cert, client_key=untrusted.key
    )
    try:
        status, body = await running.api.post(
            f"/api/v1/stations/{cp}/security-profile", {"profile": 3}
        )
        assert status == 202, body

        async def fell_back() -> Any:
            return (
                st.security.fallbacks == 1
                and st.connected
                and "FailedToAuthenticateAtCentralSystem" in await events(running, cp)
            )

        await eventually(fell_back)
        # back at profile 2, which it keeps
        assert st.security.profile == 2 and st.config.get("SecurityProfile") == "2"
        conn = running.system.registry.get(cp)
        assert conn is not None and conn.security_profile == 2
        _, view = await running.api.get(f"/api/v1/stations/{cp}")
        assert view["security_profile"] == 2
        assert "ReconfigurationOfSecurityParameters" not in await events(running, cp)
    finally:
        await st.disconnect()


async def test_simulator_cli_profile_2_with_a_certificate_request(
    tls_csms: Running, certs: TestPki
) -> None:
    running = tls_csms
    cp = "SIM-0001"
    status, body = await running.api.put(
        f"/api/v1/stations/{cp}",
        {**_body(running, cp), "security_profile": 2, "password": PASSWORD},
    )
    assert status in (200, 201), body
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "charger_sim",
        "--url",
        f"ws://127.0.0.1:{running.system.ocpp_port}/ocpp",  # (made wss:// at profile 2)
        "--password",
        PASSWORD,
        "--security-profile",
        "2",
        "--ca-file",
        str(certs.ca.cert),
        "--organization",
        ORG,
        "--sign-certificate",
        "--duration",
        "2",
        "--json",
        "--quiet",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out)["errors"] == 0
    _, requests = await running.api.get(f"/api/v1/stations/{cp}/sign-requests")
    assert requests["items"][0]["status"] == "Accepted"
    # profile 3 without a certificate is refused by the CLI itself
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "charger_sim",
        "--security-profile",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"needs --client-cert" in err
