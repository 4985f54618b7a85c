"""The OCPP 1.6 security extension end to end: the simulator as the station, a real csms
(real websockets, HTTP and database), certificates made by tests.certs."""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from charger_sim import Station
from charger_sim.security import SecurityOptions
from csms import pki
from tests.certs import TestPki
from tests.conftest import Running, start_system
from tests.test_web import ADMIN, WebClient, web_overrides

ORG = "Operador de Teste Lda"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def pki_overrides(certs: TestPki, **extra: str) -> dict[str, str]:
    return {
        "PKI__ORGANIZATION": f'"{ORG}"',
        "PKI__CA_CERT_FILE": f'"{certs.ca.cert}"',
        "PKI__CA_KEY_FILE": f'"{certs.ca.key}"',
        **extra,
    }


System = tuple[Running, Callable[..., Awaitable[Station]]]


@pytest.fixture
async def make_system(
    tmp_path: Path, certs: TestPki
) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    """start(**overrides) -> (running csms, a factory of connected, booted stations)."""
    systems: list[Any] = []
    stations: list[Station] = []

    async def start(**overrides: str) -> System:
        system, session, running = await start_system(
            tmp_path, **{**pki_overrides(certs), **web_overrides(), **overrides}
        )
        systems.append((system, session))

        async def station(cp: str, **options: Any) -> Station:
            await running.define_station(cp, 1)
            st = Station(
                cp,
                url=running.ocpp_url,
                connectors=1,
                security=SecurityOptions(**{"organization": ORG, **options}),
            )
            stations.append(st)
            await st.connect()
            await st.boot_and_report()
            return st

        return running, station

    try:
        yield start
    finally:
        for st in stations:
            await st.disconnect()
        for system, session in systems:
            await session.close()
            await system.stop()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """``check()``'s first truthy value, polled for at most ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {value!r}")
        await asyncio.sleep(0.05)


async def metrics(running: Running) -> str:
    async with running.api.session.get(running.http_url + "/metrics") as r:
        return await r.text()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def command(running: Running, cp: str, action: str, body: dict[str, Any]) -> Any:
    status, answer = await running.api.post(f"/api/v1/stations/{cp}/commands/{action}", body)
    assert status == 200, answer
    return answer["response"]


# ---------------------------------------------------------------------- SignCertificate


async def test_sign_certificate_flow(make_system: Any, certs: TestPki) -> None:
    running, station = await make_system()
    st = await station("CP-SIGN-1")
    answer = await command(
        running,
        "CP-SIGN-1",
        "ExtendedTriggerMessage",
        {"requestedMessage": "SignChargePointCertificate"},
    )
    assert answer == {"status": "Accepted"}
    await eventually(lambda: _true(st.security.client_cert is not None))
    installed = x509.load_pem_x509_certificates(st.security.client_cert.read_bytes())  # type: ignore[union-attr]
    leaf = installed[0]
    leaf.verify_directly_issued_by(certs.ca.certificate)
    assert leaf.subject.rfc4514_string() == f"CN=CP-SIGN-1,O={ORG}"
    assert st.security.client_key is not None
    assert st.security.client_key.stat().st_mode & 0o777 == 0o600
    # the answer went before CertificateSigned: SignCertificate was answered Accepted
    sent = [a for a, _ in st.calls_sent]
    assert "SignCertificate" in sent
    assert [a for a, _ in st.calls_received].count("CertificateSigned") == 1

    async def delivered() -> Any:
        _, body = await running.api.get("/api/v1/stations/CP-SIGN-1/sign-requests")
        return body["items"] and body["items"][0]["state"] == "delivered" and body

    body = await eventually(delivered)
    request = body["items"][0]
    assert request["status"] == "Accepted" and request["serial"] == format(leaf.serial_number, "x")
    assert request["attempts"] == 1
    # in the inventory, and counted
    _, inv = await running.api.get("/api/v1/certificates?station=CP-SIGN-1")
    assert [c["serial"] for c in inv["items"]] == [request["serial"]]
    assert inv["items"][0]["station_id"] == "CP-SIGN-1"
    assert 364 < inv["items"][0]["expires_in_days"] <= 365
    text = await metrics(running)
    assert metric(text, "csms_sign_certificate_requests_total", status="Accepted") == 1
    assert metric(text, "csms_station_certificates_signed_total", outcome="delivered") == 1
    assert metric(text, "csms_certificates", kind="station") == 1
    seconds = metric(text, "csms_certificate_expiry_seconds", kind="station")
    assert seconds is not None and 364 * 86400 < seconds <= 365 * 86400
    # the operator can send it again
    status, again = await running.api.post(
        f"/api/v1/stations/CP-SIGN-1/sign-requests/{request['id']}/resend"
    )
    assert status == 200 and again["response"] == {"status": "Rejected"}  # (no pending key)


async def _true(value: bool) -> bool:
    return value


async def test_csr_with_the_wrong_organisation_is_rejected(make_system: Any) -> None:
    running, station = await make_system()
    st = await station("CP-SIGN-2", organization="Someone Else")
    answer = await st.security.sign_certificate()
    assert answer == {"status": "Rejected"}
    _, body = await running.api.get("/api/v1/stations/CP-SIGN-2/sign-requests")
    item = body["items"][0]
    assert item["status"] == "Rejected" and item["state"] == "rejected"
    assert "Someone Else" in item["reason"] and ORG in item["reason"]
    await asyncio.sleep(0.2)
    assert "CertificateSigned" not in [a for a, _ in st.calls_received]
    text = await metrics(running)
    assert metric(text, "csms_sign_certificate_requests_total", status="Rejected") == 1


async def test_without_a_ca_sign_certificate_is_rejected(make_system: Any) -> None:
    running, station = await make_system(PKI__CA_CERT_FILE='""', PKI__CA_KEY_FILE='""')
    st = await station("CP-SIGN-3")
    assert await st.security.sign_certificate() == {"status": "Rejected"}
    _, body = await running.api.get("/api/v1/stations/CP-SIGN-3/sign-requests")
    assert "no CA configured" in body["items"][0]["reason"]


async def test_pending_certificate_survives_a_restart(
    make_system: Any, certs: TestPki, tmp_path: Path
) -> None:
    # an external CA that takes its time: the station is gone when the chain is ready
    script = tmp_path / "sign.py"
    script.write_text(
        "import os, sys, time, datetime\n"
        "from cryptography import x509\n"
        "from cryptography.hazmat.primitives import hashes, serialization\n"
        "csr = x509.load_pem_x509_csr(sys.stdin.buffer.read())\n"
        "assert os.environ['CSMS_STATION_ID'] == 'CP-SIGN-4'\n"
        f"ca = x509.load_pem_x509_certificate(open({str(certs.ca.cert)!r}, 'rb').read())\n"
        f"key = open({str(certs.ca.key)!r}, 'rb').read()\n"
        "key = serialization.load_pem_private_key(key, None)\n"
        "now = datetime.datetime.now(datetime.timezone.utc)\n"
        "cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)\n"
        "    .public_key(csr.public_key()).serial_number(x509.random_serial_number())\n"
        "    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))\n"
        "    .sign(key, hashes.SHA256()))\n"
        "time.sleep(1)\n"
        "sys.stdout.buffer.write(cert.public_bytes(serialization.Encoding.PEM))\n"
        "sys.stdout.buffer.write(ca.public_bytes(serialization.Encoding.PEM))\n"
    )
    command_toml = f'["{sys.executable}", "{script}"]'
    running, station = await make_system(PKI__SIGN_COMMAND=command_toml)
    st = await station("CP-SIGN-4")
    assert await st.security.sign_certificate() == {"status": "Accepted"}
    await st.disconnect()

    async def waiting() -> Any:
        _, body = await running.api.get("/api/v1/stations/CP-SIGN-4/sign-requests")
        return body["items"][0]["state"] == "delivering" and body

    await eventually(waiting)
    await running.system.stop()
    # a new csms on the same data: the station's next boot gets its certificate
    running2, _ = await make_system(PKI__SIGN_COMMAND=command_toml)
    st.url = running2.ocpp_url
    await st.connect()
    await st.boot_and_report()
    await eventually(lambda: _true(st.security.client_cert is not None))
    _, inv = await running2.api.get("/api/v1/certificates?station=CP-SIGN-4")
    assert inv["items"][0]["source"] == "command"
    assert 29 < inv["items"][0]["expires_in_days"] <= 30


# ---------------------------------------------------------------------- events


async def test_security_events_stored_shown_and_counted(make_system: Any) -> None:
    running, station = await make_system()
    st = await station("CP-EV-1")
    await st.security.event("TamperDetectionActivated", "lid opened")
    await st.security.event("InvalidMessages", None)
    await st.security.event("VendorSpecificThing", "x" * 255)
    _, body = await running.api.get("/api/v1/stations/CP-EV-1/security-events")
    assert body["total"] == 3
    assert [e["type"] for e in body["items"]] == [
        "VendorSpecificThing",
        "InvalidMessages",
        "TamperDetectionActivated",
    ]
    assert [e["critical"] for e in body["items"]] == [False, False, True]
    assert body["items"][2]["tech_info"] == "lid opened"
    text = await metrics(running)
    assert (
        metric(text, "csms_security_events_total", type="TamperDetectionActivated", critical="true")
        == 1
    )
    assert metric(text, "csms_security_events_total", type="other", critical="false") == 1
    assert "VendorSpecificThing" not in text  # (the type label is bounded)
    # on the station's web page
    web_client = WebClient(running.http_url)
    try:
        r = await web_client.login(ADMIN)
        assert r.status == 303
        status, page = await web_client.get("/stations/CP-EV-1")
        assert status == 200
        assert 'data-type="TamperDetectionActivated"' in page and "lid opened" in page
        assert page.index("VendorSpecificThing") < page.index("TamperDetectionActivated")
    finally:
        await web_client.close()


async def test_security_events_are_bounded_per_station(make_system: Any) -> None:
    running, station = await make_system()
    st = await station("CP-EV-2")
    running.system.store.security.events_kept = 5  # (1,000 by default)
    for n in range(8):
        await st.security.event("InvalidMessages", f"n={n}")
    _, body = await running.api.get("/api/v1/stations/CP-EV-2/security-events?limit=2&offset=1")
    assert body["total"] == 5
    assert [e["tech_info"] for e in body["items"]] == ["n=6", "n=5"]


async def test_reset_sends_a_security_event(make_system: Any) -> None:
    running, station = await make_system()
    st = await station("CP-EV-3", send_events=True)
    assert await command(running, "CP-EV-3", "Reset", {"type": "Soft"}) == {"status": "Accepted"}

    async def stored() -> Any:
        _, body = await running.api.get("/api/v1/stations/CP-EV-3/security-events")
        return [e["type"] for e in body["items"]]

    async def reset_stored() -> Any:
        types = await stored()
        return "ResetOrReboot" in types and types

    # (newest first: the reset after the first boot's StartupOfTheDevice)
    assert await eventually(reset_stored) == ["ResetOrReboot", "StartupOfTheDevice"]
    assert st.booted


# ---------------------------------------------------------------------- GetLog


async def test_get_log_upload_and_download(make_system: Any) -> None:
    running, station = await make_system()
    st = await station("CP-LOG-1", log_size=20 * 1024 * 1024)  # tens of MB
    answer = await command(running, "CP-LOG-1", "GetLog", {"logType": "SecurityLog"})
    assert answer["status"] == "Accepted" and answer["filename"].startswith("securitylog-")
    sent = next(p for a, p in st.calls_received if a == "GetLog")
    url = sent["log"]["remoteLocation"]
    assert re.fullmatch(rf"{running.http_url}/uploads/logs/[A-Za-z0-9_-]{{43}}", url)

    async def uploaded() -> Any:
        _, body = await running.api.get("/api/v1/stations/CP-LOG-1/security-requests")
        latest = body["log"]["latest"]
        return latest and latest["status"] == "Uploaded" and body

    body = await eventually(uploaded, 20)
    assert [h["status"] for h in body["log"]["history"]] == ["Uploaded", "Uploading"]
    request = body["log"]["requests"][0]
    assert request["request_id"] == sent["requestId"] and request["last_status"] == "Uploaded"
    assert request["file_size"] == 20 * 1024 * 1024
    _, files = await running.api.get("/api/v1/stations/CP-LOG-1/logs")
    assert [f["name"] for f in files["items"]] == [request["file_name"]]
    name = request["file_name"]
    assert re.fullmatch(r"[0-9TZ]+-\d+-log\.log|[0-9TZ]+-\d+-SecurityLog\.log", name), name
    async with running.api.session.get(
        f"{running.http_url}/api/v1/stations/CP-LOG-1/logs/{name}", headers=running.api.auth
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        data = await r.read()
    stored = next((running.system.settings.data_dir / "logs").iterdir()) / name
    assert data == stored.read_bytes()
    assert data.startswith(b"# SecurityLog of CP-LOG-1")
    assert stored.stat().st_mode & 0o777 == 0o600
    # the token was for one upload
    async with running.api.session.put(url, data=b"again") as r:
        assert r.status == 410
    async with running.api.session.put(url[:-5] + "AAAAA", data=b"x") as r:
        assert r.status == 404
    # no listing without the admin's credentials; no escape from the directory
    status, _ = await running.api.get("/api/v1/stations/CP-LOG-1/logs", auth=False)
    assert status == 401
    status, _ = await running.api.get("/api/v1/stations/CP-LOG-1/logs/..%2F..%2Fcsms.sqlite3")
    assert status == 404
    # GetLog with its own URL is refused: csms gives it
    status, body = await running.api.post(
        "/api/v1/stations/CP-LOG-1/commands/GetLog",
        {"logType": "SecurityLog", "log": {"remoteLocation": "http://evil.example/"}},
    )
    assert status == 422 and "remoteLocation" in body["message"]


async def test_log_upload_beyond_the_limit_fails(make_system: Any) -> None:
    running, station = await make_system(PKI__MAX_LOG_UPLOAD_BYTES="4096")
    await station("CP-LOG-2", log_size=100_000)
    await command(running, "CP-LOG-2", "GetLog", {"logType": "DiagnosticsLog", "requestId": 7})

    async def failed() -> Any:
        _, body = await running.api.get("/api/v1/stations/CP-LOG-2/security-requests")
        latest = body["log"]["latest"]
        return latest and latest["status"] != "Uploading" and latest

    latest = await eventually(failed)
    assert latest == {**latest, "status": "UploadFailure", "request_id": 7}
    _, files = await running.api.get("/api/v1/stations/CP-LOG-2/logs")
    assert files["items"] == []
    leftovers = list((running.system.settings.data_dir / "logs").rglob("*"))
    assert all(p.is_dir() for p in leftovers), leftovers


# ---------------------------------------------------------------------- certificates


async def test_install_get_delete_certificates(make_system: Any, certs: TestPki) -> None:
    running, station = await make_system()
    st = await station("CP-CERT-1")
    cp = "CP-CERT-1"
    ca_pem = certs.ca.cert.read_text()
    body = {"certificateType": "CentralSystemRootCertificate"}
    assert await command(running, cp, "GetInstalledCertificateIds", body) == {"status": "NotFound"}
    answer = await command(running, cp, "InstallCertificate", {**body, "certificate": ca_pem})
    assert answer == {"status": "Accepted"}
    ids = await command(running, cp, "GetInstalledCertificateIds", body)
    assert ids["status"] == "Accepted"
    assert ids["certificateHashData"] == [pki.certificate_hash_data(certs.ca.certificate)]
    gone = await command(
        running, cp, "DeleteCertificate", {"certificateHashData": ids["certificateHashData"][0]}
    )
    assert gone == {"status": "Accepted"}
    assert await command(running, cp, "GetInstalledCertificateIds", body) == {"status": "NotFound"}
    again = await command(
        running, cp, "DeleteCertificate", {"certificateHashData": ids["certificateHashData"][0]}
    )
    assert again == {"status": "NotFound"}
    # the PEM is checked before anything is sent
    before = len(st.calls_received)
    for bad, why in (
        ("not a certificate", "no PEM certificate"),
        (certs.station("LEAF").cert.read_text(), "one certificate expected"),
        (certs.server.cert.read_text(), "one certificate expected"),
    ):
        status, err = await running.api.post(
            f"/api/v1/stations/{cp}/commands/InstallCertificate", {**body, "certificate": bad}
        )
        assert status == 422 and why in err["message"], err
    assert len(st.calls_received) == before


async def test_certificate_inventory(make_system: Any, certs: TestPki) -> None:
    running, station = await make_system()
    _, inv = await running.api.get("/api/v1/certificates")
    kinds = {c["kind"]: c for c in inv["csms"]}
    assert kinds["ca"]["serial"] == format(certs.ca.certificate.serial_number, "x")
    assert inv["items"] == [] and inv["total"] == 0 and inv["expiry_warning_days"] == 30
    text = await metrics(running)
    ca_seconds = metric(text, "csms_certificate_expiry_seconds", kind="ca")
    assert ca_seconds is not None and ca_seconds > 3000 * 86400
    assert metric(text, "csms_certificates_expiring", kind="ca") == 0
    assert metric(text, "csms_certificates", kind="station") == 0
    # a station certificate, then the filter
    st = await station("CP-INV-1")
    await command(
        running,
        "CP-INV-1",
        "ExtendedTriggerMessage",
        {"requestedMessage": "SignChargePointCertificate"},
    )
    await eventually(lambda: _true(st.security.client_cert is not None))
    _, soon = await running.api.get("/api/v1/certificates?expiring_within_days=30")
    assert soon["csms"] == [] and soon["items"] == []
    _, year = await running.api.get("/api/v1/certificates?expiring_within_days=366")
    assert [c["station_id"] for c in year["items"]] == ["CP-INV-1"]
    status, _ = await running.api.get("/api/v1/certificates?expiring_within_days=soon")
    assert status == 400
    # the admins' page
    web_client = WebClient(running.http_url)
    try:
        await web_client.login(ADMIN)
        status, page = await web_client.get("/certificates")
        assert status == 200 and 'data-kind="ca"' in page and "CP-INV-1" in page
    finally:
        await web_client.close()


# ---------------------------------------------------------------------- signed firmware


@pytest.fixture
async def firmware_server() -> AsyncIterator[tuple[str, bytes]]:
    image = b"firmware image " * 1000
    app = web.Application()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=image)

    app.router.add_get("/fw.bin", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/fw.bin", image
    finally:
        await runner.cleanup()


async def test_signed_update_firmware(
    make_system: Any, certs: TestPki, firmware_server: tuple[str, bytes]
) -> None:
    url, image = firmware_server
    running, station = await make_system()
    st = await station("CP-FW-1")
    cp = "CP-FW-1"
    signer = certs.station("firmware signer", other_ca=True)  # issued by the "manufacturer"
    signature = base64.b64encode(signer.private_key.sign(image, ec.ECDSA(hashes.SHA256()))).decode()
    firmware = {
        "location": url,
        "signingCertificate": signer.certificate.public_bytes(Encoding.PEM).decode(),
        "signature": signature,
    }
    # without the manufacturer's root installed, the station refuses the signing certificate
    answer = await command(running, cp, "SignedUpdateFirmware", {"firmware": firmware})
    assert answer == {"status": "InvalidCertificate"}
    await command(
        running,
        cp,
        "InstallCertificate",
        {
            "certificateType": "ManufacturerRootCertificate",
            "certificate": certs.other_ca.cert.read_text(),
        },
    )
    answer = await command(
        running, cp, "SignedUpdateFirmware", {"firmware": firmware, "requestId": 41}
    )
    assert answer == {"status": "Accepted"}

    async def done(request_id: int, last: str) -> Any:
        _, body = await running.api.get(f"/api/v1/stations/{cp}/security-requests")
        history = [
            h["status"] for h in body["firmware"]["history"] if h["request_id"] == request_id
        ]
        return history and history[0] == last and (history, body)

    history, body = await eventually(lambda: done(41, "Installed"))
    assert list(reversed(history)) == [
        "Downloading",
        "Downloaded",
        "SignatureVerified",
        "Installing",
        "Installed",
    ]
    req = next(r for r in body["firmware"]["requests"] if r["request_id"] == 41)
    assert req["last_status"] == "Installed" and req["details"] == {"location": url}
    # a signature that does not match: InvalidSignature, and the event
    bad = {**firmware, "signature": base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode()}
    await command(running, cp, "SignedUpdateFirmware", {"firmware": bad, "requestId": 42})
    history, _ = await eventually(lambda: done(42, "InvalidSignature"))
    assert list(reversed(history)) == ["Downloading", "Downloaded", "InvalidSignature"]

    async def event_types() -> Any:
        _, events = await running.api.get(f"/api/v1/stations/{cp}/security-events")
        types = [e["type"] for e in events["items"]]
        return "InvalidFirmwareSignature" in types and types

    types = await eventually(event_types)
    assert "InvalidFirmwareSigningCertificate" in types
    # what the operator gives is checked
    for broken, why in (
        ({**firmware, "signingCertificate": "junk"}, "signingCertificate"),
        ({**firmware, "signature": "not base64!"}, "signature"),
        ({**firmware, "location": "file:///etc/passwd"}, "location"),
    ):
        status, err = await running.api.post(
            f"/api/v1/stations/{cp}/commands/SignedUpdateFirmware", {"firmware": broken}
        )
        assert status == 422 and why in err["message"], err
    assert st.security.firmware_status == "Idle"


async def test_upload_endpoint_refuses_unknown_tokens(make_system: Any) -> None:
    running, _ = await make_system()
    async with aiohttp.ClientSession() as http:
        for token in ("x", "A" * 43, "../../etc", "A" * 500):
            async with http.put(f"{running.http_url}/uploads/logs/{token}", data=b"x") as r:
                assert r.status == 404, token


async def test_web_forms_for_admins(make_system: Any, certs: TestPki) -> None:
    running, station = await make_system()
    st = await station("CP-WEBSEC")
    admin = WebClient(running.http_url)
    try:
        await admin.login(ADMIN)
        status, page = await admin.get("/stations/CP-WEBSEC")
        assert status == 200 and 'data-action="InstallCertificate"' in page
        status, _, headers = await admin.post(
            "/stations/CP-WEBSEC/security/InstallCertificate",
            {
                "certificateType": "CentralSystemRootCertificate",
                "certificate": certs.ca.cert.read_text(),
            },
        )
        assert status == 303 and headers["Location"].endswith("#command-result")
        status, page = await admin.get("/stations/CP-WEBSEC")
        assert "InstallCertificate" in page and "Accepted" in page
        assert len(st.security.roots) == 1
        # a bad PEM never reaches the station; the page says why
        await admin.post(
            "/stations/CP-WEBSEC/security/InstallCertificate",
            {"certificateType": "CentralSystemRootCertificate", "certificate": "junk"},
        )
        _, page = await admin.get("/stations/CP-WEBSEC")
        assert "no PEM certificate" in page
        assert [a for a, _ in st.calls_received].count("InstallCertificate") == 1
        # GetLog from the page: the file is listed with a link for admins
        await admin.post("/stations/CP-WEBSEC/security/GetLog", {"logType": "DiagnosticsLog"})

        async def linked() -> Any:
            _, page = await admin.get("/stations/CP-WEBSEC")
            found = re.search(r'href="(/stations/CP-WEBSEC/logs/[^"]+)"', page)
            return found and found.group(1)

        link = await eventually(linked)
        async with admin.http.get(running.http_url + link) as r:
            assert r.status == 200 and (await r.read()).startswith(b"# DiagnosticsLog")
    finally:
        await admin.close()


def test_web_texts_in_both_languages() -> None:
    from csms.security_web import MESSAGES, TEMPLATES

    assert set(MESSAGES["pt"]) == set(MESSAGES["en"])
    used: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*'(sec\.[a-z0-9_.]+)'""", path.read_text()))
    assert used and used <= set(MESSAGES["en"]), used - set(MESSAGES["en"])


async def test_hostile_command_bodies_are_422(make_system: Any, certs: TestPki) -> None:
    running, station = await make_system()
    st = await station("CP-BAD")
    cert = certs.station("signer").certificate.public_bytes(Encoding.PEM).decode()
    fw = {"location": "http://x.example/fw", "signingCertificate": cert, "signature": "AAAA"}
    cases = [
        ("GetLog", {"logType": "Everything"}),
        ("GetLog", {"logType": "SecurityLog", "requestId": -1}),
        ("GetLog", {"logType": "SecurityLog", "requestId": True}),
        ("GetLog", {"logType": "SecurityLog", "log": []}),
        ("SignedUpdateFirmware", {"firmware": {**fw, "location": "http://["}}),
        ("SignedUpdateFirmware", {"firmware": {**fw, "location": 5}}),
        ("SignedUpdateFirmware", {"firmware": "x"}),
        ("SignedUpdateFirmware", {"firmware": {**fw, "retrieveDateTime": 3}}),
        ("InstallCertificate", {"certificateType": "CentralSystemRootCertificate"}),
        ("CertificateSigned", {"certificateChain": "-----BEGIN CERTIFICATE-----\nAA\n"}),
        ("CertificateSigned", {"certificateChain": ["x"]}),
        ("DeleteCertificate", {"certificateHashData": {"hashAlgorithm": "MD5"}}),
    ]
    for action, body in cases:
        status, err = await running.api.post(f"/api/v1/stations/CP-BAD/commands/{action}", body)
        assert status == 422 and err["error"] == "invalid_payload", (action, body, err)
    _, requests = await running.api.get("/api/v1/stations/CP-BAD/security-requests")
    assert requests["log"]["requests"] == [] and requests["firmware"]["requests"] == []
    received = [a for a, _ in st.calls_received]
    assert not {"GetLog", "SignedUpdateFirmware", "InstallCertificate"} & set(received)


async def test_uploads_streamed_chunked_and_multipart(make_system: Any) -> None:
    running, station = await make_system(PKI__MAX_LOG_UPLOAD_BYTES="100000")
    st = await station("CP-LOG-3")
    st.on_call("GetLog", lambda payload: {"status": "Accepted"})  # (we upload ourselves)

    async def get_log(request_id: int) -> str:
        await command(
            running, "CP-LOG-3", "GetLog", {"logType": "DiagnosticsLog", "requestId": request_id}
        )
        return next(p for a, p in reversed(st.calls_received) if a == "GetLog")["log"][
            "remoteLocation"
        ]

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"x" * 10_000

    url = await get_log(1)
    async with aiohttp.ClientSession() as http:
        # chunked, no Content-Length: cut off at the limit, nothing kept, the URL still valid
        async with http.put(url, data=chunks(20)) as r:
            assert r.status == 413
        logs = running.system.settings.data_dir / "logs"
        assert [p for p in logs.rglob("*") if p.is_file()] == []
        async with http.put(url, data=chunks(3)) as r:
            assert r.status == 201 and (await r.json())["size"] == 30_000
        # multipart POST (what many chargers send), its file name made safe
        url2 = await get_log(2)
        form = aiohttp.FormData()
        form.add_field("file", b"line\n" * 10, filename="../../etc/passwd diag.log")
        async with http.post(url2, data=form) as r:
            assert r.status == 201, await r.text()
            name = (await r.json())["file"]
    assert re.fullmatch(r"[0-9TZ]+-2-[A-Za-z0-9._-]+diag\.log", name), name
    assert "/" not in name and not name.startswith(".")
    _, files = await running.api.get("/api/v1/stations/CP-LOG-3/logs")
    assert len(files["items"]) == 2 and files["items"][0]["name"] == name


async def test_a_slow_upload_outlives_read_timeout_while_it_moves_a_stalled_one_does_not(
    make_system: Any,
) -> None:
    """http.read_timeout bounds a request's body; a log upload over a slow link may take
    longer, as long as at least UPLOAD_PROGRESS bytes arrive in every read_timeout."""
    from csms.http import UPLOAD_PROGRESS

    running, station = await make_system(HTTP__READ_TIMEOUT="0.5")
    st = await station("CP-LOG-SLOW")
    st.on_call("GetLog", lambda payload: {"status": "Accepted"})

    async def get_log(request_id: int) -> str:
        await command(
            running, "CP-LOG-SLOW", "GetLog", {"logType": "DiagnosticsLog", "requestId": request_id}
        )
        return next(p for a, p in reversed(st.calls_received) if a == "GetLog")["log"][
            "remoteLocation"
        ]

    async def trickle(n: int, pause: float, size: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"y" * size
            await asyncio.sleep(pause)

    async with aiohttp.ClientSession() as http:
        # 2 s in all (4x read_timeout), 4 KiB every 0.2 s: kept
        async with http.put(await get_log(1), data=trickle(10, 0.2, 4 * UPLOAD_PROGRESS)) as r:
            assert r.status == 201, await r.text()
            assert (await r.json())["size"] == 40 * UPLOAD_PROGRESS
    # the same trickle to any other path (the API, authenticated) is cut at read_timeout
    with pytest.raises(aiohttp.ClientError):
        async with running.api.session.put(
            running.http_url + "/api/v1/stations/CP-X",
            data=trickle(10, 0.2, 4 * UPLOAD_PROGRESS),
            headers=running.api.auth,
        ) as r:
            await r.read()
    async with aiohttp.ClientSession() as http:
        # an upload that stalls (less than UPLOAD_PROGRESS per read_timeout) is cut too
        with pytest.raises(aiohttp.ClientError):
            async with http.put(await get_log(2), data=trickle(10, 0.3, 10)) as r:
                await r.read()
    assert running.system.http_guard.closed.get("read_timeout", 0) >= 2
