"""TLS served by csms itself: its settings and files, https:// on the HTTP port, failed
handshakes logged within bounds, and the reload on SIGHUP of a real ``csms run`` (with its
delivery process) that keeps connected stations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from websockets.asyncio.client import ClientConnection, connect

from csms.config import ConfigError, load_settings
from csms.tls import (
    LOG_PER_MINUTE,
    TlsConfigError,
    build_client_context,
    link_context,
    server_context,
)
from tests.certs import TestPki
from tests.conftest import ADMIN_PASSWORD, make_settings, start_system, station_body
from tests.daemon import Daemon


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def tls_env(pki: TestPki, **more: str) -> dict[str, str]:
    return {
        "ocpp__tls": "true",
        "http__tls": "true",
        "tls__cert_file": f'"{pki.server.cert}"',
        "tls__key_file": f'"{pki.server.key}"',
        "tls__station_ca_file": f'"{pki.ca.cert}"',
        **more,
    }


# ---------------------------------------------------------------------- settings and files


def test_tls_settings_name_the_key(tmp_path: Path, pki: TestPki) -> None:
    with pytest.raises(ConfigError, match=r"tls\.cert_file: required when ocpp\.tls is on"):
        load_settings(None, {"CSMS_OCPP__TLS": "true"})
    with pytest.raises(ConfigError, match=r"tls\.key_file: required when http\.tls is on"):
        load_settings(None, {"CSMS_HTTP__TLS": "true", "CSMS_TLS__CERT_FILE": '"/x.pem"'})
    with pytest.raises(ConfigError, match=r"tls\.min_version"):
        load_settings(None, {"CSMS_TLS__MIN_VERSION": '"1.1"'})
    with pytest.raises(ConfigError, match=r"ocpp\.trusted_proxies"):
        load_settings(None, {"CSMS_OCPP__TRUSTED_PROXIES": '["not an address"]'})
    config = tmp_path / "csms.toml"
    config.write_text('[tls]\nkey_password = "in the file"\n')
    with pytest.raises(ConfigError, match=r"tls\.key_password: .*environment only"):
        load_settings(config, {})
    settings = load_settings(None, {"CSMS_TLS__KEY_PASSWORD": "1234"})
    assert settings.tls.key_password is not None
    assert settings.tls.key_password.get_secret_value() == "1234"  # (text, not a number)
    assert "1234" not in repr(settings.tls)
    defaults = load_settings(None, {})
    assert defaults.ocpp.tls is False and defaults.http.tls is False
    assert defaults.ocpp.allow_unsecured is True and defaults.tls.min_version == "1.2"


def test_tls_files_refused_with_a_clear_error(tmp_path: Path, pki: TestPki) -> None:
    def settings(**env: str) -> Any:
        return make_settings(tmp_path, **tls_env(pki, **env)).tls

    with pytest.raises(TlsConfigError, match=r"tls\.key_file: cannot read"):
        server_context(settings(tls__key_file=f'"{tmp_path / "missing.key"}"'), station_ca=True)
    other = pki.server_certificate()
    with pytest.raises(TlsConfigError, match=r"tls\.key_file: does not match tls\.cert_file"):
        server_context(settings(tls__key_file=f'"{other.key}"'), station_ca=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError, match=r"tls\.cert_file / tls\.key_file"):
        server_context(settings(tls__cert_file=f'"{garbage}"'), station_ca=True)
    with pytest.raises(TlsConfigError, match=r"tls\.station_ca_file"):
        server_context(settings(tls__station_ca_file=f'"{garbage}"'), station_ca=True)
    with pytest.raises(TlsConfigError, match=r"tls\.ca_file"):
        build_client_context(settings(tls__ca_file=f'"{garbage}"'))
    # an encrypted key: its passphrase from CSMS_TLS__KEY_PASSWORD, never a prompt
    locked = pki.server_certificate(password=b"correct horse")
    env = {"tls__cert_file": f'"{locked.cert}"', "tls__key_file": f'"{locked.key}"'}
    with pytest.raises(TlsConfigError, match=r"cannot decrypt.*CSMS_TLS__KEY_PASSWORD"):
        server_context(settings(**env), station_ca=True)
    with pytest.raises(TlsConfigError, match=r"cannot decrypt"):
        server_context(settings(**env, tls__key_password="wrong"), station_ca=True)
    ctx = server_context(settings(**env, tls__key_password="correct horse"), station_ca=True)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL  # (profile 2 stations have no certificate)

    def forward_secret(c: dict[str, Any]) -> bool:
        return c["protocol"] == "TLSv1.3" or (
            "ECDHE" in c["name"] and ("GCM" in c["name"] or "CHACHA" in c["name"])
        )

    # the OCPP port: forward-secret AEAD, then only the whitepaper's two RSA suites
    rsa = {c["name"] for c in ctx.get_ciphers() if not forward_secret(c)}
    assert rsa == {"AES128-GCM-SHA256", "AES256-GCM-SHA384"}, rsa
    https = server_context(settings(**env, tls__key_password="correct horse"), station_ca=False)
    assert all(forward_secret(c) for c in https.get_ciphers())
    assert (stat := os.stat(locked.key)).st_mode & 0o077 == 0, oct(stat.st_mode)


async def test_start_refuses_unusable_files(tmp_path: Path, pki: TestPki) -> None:
    with pytest.raises(TlsConfigError, match=r"tls\.key_file"):
        await start_system(tmp_path, **tls_env(pki, tls__key_file=f'"{tmp_path / "nope"}"'))


def test_link_context_by_url(tmp_path: Path, pki: TestPki) -> None:
    from csms.tls import configure_client

    settings = make_settings(tmp_path, **tls_env(pki, tls__ca_file=f'"{pki.ca.cert}"'))
    configure_client(settings)
    try:
        loop_ctx = link_context("https://127.0.0.1:8080")
        assert isinstance(loop_ctx, ssl.SSLContext) and loop_ctx.check_hostname is False
        remote = link_context("https://node2.example.net:8080")
        assert isinstance(remote, ssl.SSLContext) and remote.check_hostname is True
        assert remote.verify_mode == ssl.CERT_REQUIRED
        assert remote.minimum_version == ssl.TLSVersion.TLSv1_2
        assert link_context("http://127.0.0.1:8080") is True
    finally:
        configure_client(make_settings(tmp_path))


# ---------------------------------------------------------------------- https


async def test_https_api_with_and_without_the_ca(tmp_path: Path, pki: TestPki) -> None:
    system, session, _ = await start_system(tmp_path, **tls_env(pki))
    await session.close()
    try:
        base = f"https://127.0.0.1:{system.http_port}"
        async with aiohttp.ClientSession() as s:
            auth = {"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)}
            async with s.get(
                f"{base}/api/v1/stations", headers=auth, ssl=pki.client_context()
            ) as r:
                assert r.status == 200
                assert (await r.json())["total"] == 0
            # the connection guard still sees each connection (over TLS)
            async with s.get(f"{base}/healthz", ssl=pki.client_context()) as r:
                assert r.status == 200
            # the web interface knows it is served over https: its cookies are Secure
            async with s.get(f"{base}/login", ssl=pki.client_context()) as r:
                assert r.status == 200
                cookies = r.headers.getall("Set-Cookie")
                assert cookies and all("Secure" in c for c in cookies), cookies
            # without the CA (the system's store only): refused by the client
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{base}/healthz")
        # plain HTTP on the TLS port: refused by the handshake (closed), counted
        reader, writer = await asyncio.open_connection("127.0.0.1", system.http_port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP")
        writer.close()
        for _ in range(50):
            counted = system.metrics.registry.get_sample_value(
                "csms_tls_handshakes_failed_total", {"listener": "http", "reason": "not_tls"}
            )
            if counted:
                break
            await asyncio.sleep(0.02)
        assert counted == 1
    finally:
        await system.stop()


async def test_failed_handshakes_are_logged_within_bounds(tmp_path: Path, pki: TestPki) -> None:
    system, session, _ = await start_system(tmp_path, **tls_env(pki))
    await session.close()
    stranger = pki.station("CP-X", other_ca=True)
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(LOG_PER_MINUTE + 5):
                with pytest.raises(Exception):  # noqa: B017 (whatever the client says)
                    ws = await connect(
                        f"wss://127.0.0.1:{system.ocpp_port}/ocpp/CP-X",
                        ssl=pki.client_context(stranger),
                        open_timeout=5,
                    )
                    await ws.close()
            for _ in range(50):
                counted = system.metrics.registry.get_sample_value(
                    "csms_tls_handshakes_failed_total",
                    {"listener": "ocpp", "reason": "untrusted_ca"},
                )
                if counted == LOG_PER_MINUTE + 5:
                    break
                await asyncio.sleep(0.02)
        assert counted == LOG_PER_MINUTE + 5
        lines = [e for e in logs if e["event"] == "TLS handshake failed"]
        assert len(lines) == LOG_PER_MINUTE
        line = lines[0]
        assert line["listener"] == "ocpp" and line["reason"] == "untrusted_ca"
        assert line["remote"].startswith("127.0.0.1:") and len(line["error"]) <= 200
        assert "CERTIFICATE_VERIFY_FAILED" in line["error"]
    finally:
        await system.stop()


# ---------------------------------------------------------------------- SIGHUP


def _install(source: Any, cert: Path, key: Path) -> None:
    """Replace the files as an operator's renewal would (write aside, then rename)."""
    for src, dst in ((source.cert, cert), (source.key, key)):
        tmp = dst.with_suffix(".new")
        tmp.write_bytes(Path(src).read_bytes())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dst)


def _served(ws: ClientConnection) -> bytes:
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return der


async def _wait_line(daemon: Daemon, event: str, after: int) -> dict[str, Any]:
    for _ in range(250):
        for line in daemon.lines[after:]:
            if line.get("event") == event:
                return line
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {event!r} line; last: {daemon.lines[-5:]}")


async def test_sighup_reloads_the_certificate_without_dropping_stations(
    tmp_path: Path, pki: TestPki
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    cert, key = tls_dir / "server.pem", tls_dir / "server.key"
    _install(pki.server, cert, key)
    work = tmp_path / "csms"
    work.mkdir()
    (work / "csms.toml").write_text(
        'data_dir = "data"\n'
        '[ocpp]\nhost = "127.0.0.1"\nport = 0\ncall_timeout = 5\ntls = true\n'
        '[http]\nhost = "127.0.0.1"\nport = 0\ntls = true\n'
        f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\nstation_ca_file = "{pki.ca.cert}"\n'
        '[logging]\nformat = "json"\nlevel = "info"\n'
        # an extension: `csms run` starts its delivery process too (SIGHUP must not kill it)
        '[ocpi]\nparty_id = "CPO"\nbusiness_name = "Operador de Teste"\n'
    )
    daemon = Daemon(work)
    await daemon.start()
    ctx = pki.client_context()
    base = f"https://127.0.0.1:{daemon.http_port}"
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)}
    async with aiohttp.ClientSession(headers=auth, connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        for sid in ("CP-OLD", "CP-NEW"):
            async with http.put(
                f"{base}/api/v1/stations/{sid}", json=station_body(sid, security_profile=3)
            ) as r:
                assert r.status == 201, await r.text()
        async with http.get(f"{base}/healthz") as r:
            before = (await r.json())["delivery"]

        async def connect_station(sid: str) -> ClientConnection:
            return await connect(
                f"wss://127.0.0.1:{daemon.ocpp_port}/ocpp/{sid}",
                ssl=pki.client_context(pki.station(sid)),
                subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                open_timeout=5,
            )

        async def heartbeat(ws: ClientConnection, n: int) -> None:
            await ws.send(json.dumps([2, f"hb-{n}", "Heartbeat", {}]))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[:2] == [3, f"hb-{n}"]

        old_ws = await connect_station("CP-OLD")
        await heartbeat(old_ws, 1)
        first = pki.server.certificate.public_bytes(Encoding.DER)
        assert _served(old_ws) == first

        async def server_expiry_days() -> float:
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            line = next(
                ln for ln in text.splitlines()
                if ln.startswith('csms_certificate_expiry_seconds{kind="server"}')
            )  # fmt: skip
            return float(line.rsplit(" ", 1)[1]) / 86400

        assert 363 < await server_expiry_days() < 365
        renewed = pki.server_certificate(days=31)
        second = renewed.certificate.public_bytes(Encoding.DER)
        _install(renewed, cert, key)
        mark = len(daemon.lines)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        await _wait_line(daemon, "TLS certificate, key and CAs reloaded", mark)
        new_ws = await connect_station("CP-NEW")
        assert _served(new_ws) == second
        await heartbeat(new_ws, 2)
        await new_ws.close()
        # the certificate inventory (/metrics, the API) follows the reload
        assert 29 < await server_expiry_days() < 31
        await heartbeat(old_ws, 3)  # (opened before the reload: still connected, answering)

        # files that fail to load: logged, the renewed certificate stays in use
        key.write_text("broken\n")
        mark = len(daemon.lines)
        daemon.proc.send_signal(signal.SIGHUP)
        line = await _wait_line(daemon, "TLS files not reloaded: the old ones stay in use", mark)
        assert "tls.cert_file / tls.key_file" in line["error"] and "broken" not in line["error"]
        again = await connect_station("CP-NEW")
        assert _served(again) == second
        await again.close()
        await heartbeat(old_ws, 4)
        await old_ws.close()

        async with http.get(f"{base}/healthz") as r:
            after = (await r.json())["delivery"]
        assert after["pid"] == before["pid"] and after["restarts"] == 0
        assert after["status"] == "ok", after
    assert await daemon.signal(signal.SIGTERM) == 0


# ---------------------------------------------------------------------- OCPI over https


async def test_ocpi_over_https_with_the_peer(tmp_path: Path, pki: TestPki) -> None:
    """csms (http.tls) and the independent peer (uvicorn with TLS) register and push over
    https, each verifying the other; a peer csms no longer trusts is refused, with the
    reason in the push log."""
    from csms.tls import reload_client
    from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

    trusted = tmp_path / "trusted-ca.pem"  # tls.ca_file: the test CA (the system's does not)
    trusted.write_bytes(pki.ca.cert.read_bytes())
    system, session, _ = await start_system(
        tmp_path, ocpi={}, **tls_env(pki, tls__ca_file=f'"{trusted}"')
    )
    await session.close()
    auth = {"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)}
    http = aiohttp.ClientSession(
        headers=auth, connector=aiohttp.TCPConnector(ssl=pki.client_context())
    )
    base = f"https://127.0.0.1:{system.http_port}"
    peer_cert = pki.server_certificate("peer")
    try:
        async with EmspPeer(
            party_id="MOB",
            country_code="PT",
            role="HUB",
            tls=(peer_cert.cert, peer_cert.key),
            ca_file=pki.ca.cert,
        ) as hub:
            assert hub.versions_url.startswith("https://")
            async with http.post(f"{base}/api/v1/ocpi/token-a", json=hub.grant) as r:
                body = await r.json()
            assert body["versions_url"].startswith("https://127.0.0.1:")
            assert (await hub.register_with(body["versions_url"], body["token"]))["ok"]
            async with http.put(
                f"{base}/api/v1/stations/OCPI-TLS", json=station_body("OCPI-TLS")
            ) as r:
                assert r.status == 201
            put = await hub.wait_for_request(
                # (recorded as it arrives; its response is added once answered)
                lambda q: q["method"] == "PUT" and "/locations/" in q["path"] and q["response"],
                timeout=10,
            )
            assert put["response"]["status"] in (200, 201)

            # the CA file now holds another CA (as if renewed wrongly), re-read as SIGHUP does
            trusted.write_bytes(pki.other_ca.cert.read_bytes())
            assert reload_client()
            async with http.put(
                f"{base}/api/v1/stations/OCPI-TLS",
                json=station_body("OCPI-TLS", connectors=1),
            ) as r:
                assert r.status == 200
            for _ in range(250):
                async with http.get(f"{base}/api/v1/ocpi/pushes") as r:
                    pushes = await r.json()
                errors = [i["last_error"] for i in pushes["items"] if i["last_error"]]
                if errors:
                    break
                await asyncio.sleep(0.02)
            assert errors and "TLS: the peer's certificate is not trusted" in errors[0], pushes
            assert "self-signed certificate in certificate chain" in errors[0]
    except PeerVenvMissing as e:
        pytest.fail(str(e))
    finally:
        await http.close()
        await system.stop()
        configure_client_default(tmp_path)


def configure_client_default(tmp_path: Path) -> None:
    """(The client side is per process: back to no tls.ca_file for the next tests.)"""
    from csms.tls import configure_client

    configure_client(make_settings(tmp_path))


def test_check_config_names_a_bad_tls_file(tmp_path: Path, pki: TestPki) -> None:
    import subprocess
    import sys

    other = pki.server_certificate()
    config = tmp_path / "csms.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[ocpp]\ntls = true\n'
        f'[tls]\ncert_file = "{pki.server.cert}"\nkey_file = "{other.key}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "csms.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "tls.key_file: does not match tls.cert_file" in done.stderr
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[ocpp]\ntls = true\n'
        f'[tls]\ncert_file = "{pki.server.cert}"\nkey_file = "{pki.server.key}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "csms.cli", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------- cluster


@pytest.mark.postgresql_only
async def test_cluster_nodes_call_each_other_over_https(tmp_path: Path, pki: TestPki) -> None:
    """Two OCPP nodes with http.tls: a command sent through B reaches the station on A over
    B's https call to A's internal route (advertised as https://), verified."""
    from tests.conftest import Api
    from tests.test_cluster import _node

    tls = (
        f'[tls]\ncert_file = "{pki.server.cert}"\nkey_file = "{pki.server.key}"\n'
        f'ca_file = "{pki.ca.cert}"\n'
    )
    nodes = []
    for name in ("a", "b"):
        node = _node(tmp_path / name, extra=tls)
        node.config.write_text(
            node.config.read_text().replace(
                '[http]\nhost = "127.0.0.1"\nport = 0\n',
                '[http]\nhost = "127.0.0.1"\nport = 0\ntls = true\n',
            )
        )
        nodes.append(node)
    a, b = nodes
    await a.start()
    await b.start()
    ws = None
    try:
        ws = await connect(f"{a.ocpp_url}/HOPPER", subprotocols=["ocpp1.6"], open_timeout=5)  # type: ignore[list-item]

        async def answer() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg[0] == 2:
                    await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))

        responder = asyncio.create_task(answer())
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=pki.client_context())
        ) as s:
            api_b = Api(f"https://127.0.0.1:{b.http_port}", s)
            for _ in range(100):  # (until B knows that A holds the station)
                status, body = await api_b.post("/api/v1/stations/HOPPER/commands/ClearCache", {})
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            assert (status, body["response"]) == (200, {"status": "Accepted"}), body
        responder.cancel()
        members = [ln for ln in a.lines + b.lines if ln.get("event") == "HTTP server listening"]
        assert all(ln["scheme"] == "https" for ln in members)
    finally:
        if ws is not None:
            await ws.close()
        for d in (a, b):
            assert await d.signal(signal.SIGTERM) == 0


async def test_the_connection_guard_works_over_tls(tmp_path: Path, pki: TestPki) -> None:
    """The HTTP port's per-address cap and header timeout see TLS connections too."""
    system, session, _ = await start_system(
        tmp_path,
        **tls_env(pki, http__max_connections_per_address="1", http__header_timeout="0.5"),
    )
    await session.close()
    ctx = pki.client_context()
    try:
        first = await asyncio.open_connection("127.0.0.1", system.http_port, ssl=ctx)
        second = await asyncio.open_connection("127.0.0.1", system.http_port, ssl=ctx)
        answer = await asyncio.wait_for(second[0].read(), 5)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        second[1].close()
        # the first sends half a request: closed by the header timeout
        first[1].write(b"GET /healthz HTTP/1.1\r\n")
        try:
            rest = await asyncio.wait_for(first[0].read(), 5)
        except (ConnectionError, ssl.SSLError):
            rest = b""
        assert rest == b""
        first[1].close()
        timed_out = system.metrics.registry.get_sample_value(
            "csms_http_connections_timed_out_total", {"reason": "header_timeout"}
        )
        assert timed_out == 1
    finally:
        await system.stop()


async def test_ocpi_client_refuses_a_peer_below_tls_1_2(tmp_path: Path, pki: TestPki) -> None:
    """A peer that speaks TLS 1.1 at most (if this OpenSSL still can) is refused by our
    OCPI client with a clear error; the same peer at TLS 1.2 is reached."""
    import warnings

    from csms.tls import configure_client
    from ocpi_bridge.client import OcpiCallFailed, OcpiClient

    def peer_context(old: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server.cert, pki.server.key)
        if old:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        return ctx

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"status_code": 1000, "data": [], "timestamp": "2026-01-01T00:00:00Z"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    configure_client(make_settings(tmp_path, tls__ca_file=f'"{pki.ca.cert}"'))
    client = OcpiClient(5.0, ("PT", "CPO"), allow_private=True)
    try:
        for old in (False, True):
            server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=peer_context(old))
            port = server.sockets[0].getsockname()[1]
            try:
                url = f"https://127.0.0.1:{port}/ocpi/versions"
                if not old:
                    reply = await client.request("GET", url, "token")
                    assert reply.http_status == 200
                    continue
                with pytest.raises(OcpiCallFailed) as info:
                    await client.request("GET", url, "token")
                assert "TLS: no secure connection with the peer" in str(info.value)
            finally:
                server.close()
                await server.wait_closed()
    finally:
        await client.close()
        configure_client_default(tmp_path)


@pytest.mark.postgresql_only
async def test_a_delivery_worker_serves_https_and_its_node_reaches_it(
    tmp_path: Path, pki: TestPki
) -> None:
    """On PostgreSQL a delivery worker of its own serves https like the nodes (http.tls);
    its node asks it for the pending pushes over https (its advertised URL), verified."""
    from tests.test_cluster import _delivering, _node, _until, _worker
    from tests.test_push_strict import DAEMON_OCPI

    tls = (
        f'[tls]\ncert_file = "{pki.server.cert}"\nkey_file = "{pki.server.key}"\n'
        f'ca_file = "{pki.ca.cert}"\n'
    )
    ocpi = DAEMON_OCPI.format(offline=60)
    node = _node(tmp_path / "node", ocpi + tls, role="ocpp")
    worker = _worker(tmp_path / "worker", ocpi + tls)
    for d in (node, worker):
        d.config.write_text(
            d.config.read_text().replace(
                '[http]\nhost = "127.0.0.1"\nport = 0\n',
                '[http]\nhost = "127.0.0.1"\nport = 0\ntls = true\n',
            )
        )
    await node.start()
    await worker.start()
    try:
        await _until(lambda: _delivering(worker), what="the worker delivers")
        port = next(
            int(ln["internal_port"])
            for ln in worker.lines
            if ln.get("event") == "delivery process serving"
        )
        ctx = pki.client_context()
        auth = {"Authorization": aiohttp.encode_basic_auth("admin", ADMIN_PASSWORD)}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            async with s.get(f"https://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200 and (await r.json())["delivering"] is True
            for _ in range(100):  # (until the node has learnt which worker delivers)
                mark = len(node.lines)
                async with s.get(
                    f"https://127.0.0.1:{node.http_port}/api/v1/ocpi/pushes", headers=auth
                ) as r:
                    assert r.status == 200
                events = [ln.get("event") for ln in node.lines[mark:]]
                assert "delivery process unreachable" not in events, node.lines[mark:]
                if "delivery process unavailable" not in events:
                    break
                await asyncio.sleep(0.1)
            assert "delivery process unavailable" not in events
        with pytest.raises(aiohttp.ClientError):  # (plain http on its port: refused)
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz"):
                pass
    finally:
        for d in (worker, node):
            assert await d.signal(signal.SIGTERM) == 0


async def test_the_ocpp_port_offers_the_whitepapers_rsa_suites_the_http_port_does_not(
    tmp_path: Path,
) -> None:
    """A charger with an RSA-only TLS 1.2 stack may offer nothing but TLS_RSA_WITH_AES_*_GCM
    (which the OCPP 1.6 security whitepaper has a central system support): the OCPP port
    takes it when the server's key is RSA; the HTTP port keeps forward secrecy only."""
    from csms import certtool

    rsa_dir = tmp_path / "rsa"
    certtool.init(rsa_dir, "O", ["localhost"], rsa_bits=2048)
    tls = make_settings(
        tmp_path,
        tls__cert_file=f'"{rsa_dir / certtool.SERVER_CERT}"',
        tls__key_file=f'"{rsa_dir / certtool.SERVER_KEY}"',
    ).tls

    async def handshake(server_ctx: ssl.SSLContext, suite: str) -> str | None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(rsa_dir / certtool.CA_CERT))
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        client.set_ciphers(suite)
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname="localhost"
            )
            cipher = writer.get_extra_info("cipher")[0]
            writer.close()
            return str(cipher)
        except (ssl.SSLError, ConnectionError):
            return None
        finally:
            server.close()
            await server.wait_closed()

    ocpp, http = server_context(tls, station_ca=True), server_context(tls, station_ca=False)
    assert await handshake(ocpp, "AES128-GCM-SHA256") == "AES128-GCM-SHA256"
    assert await handshake(ocpp, "AES256-GCM-SHA384") == "AES256-GCM-SHA384"
    assert await handshake(http, "AES128-GCM-SHA256") is None
    # a station offering both gets forward secrecy
    both = "AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    assert await handshake(ocpp, both) == "ECDHE-RSA-AES128-GCM-SHA256"
    # never CBC or anything weaker, on either port
    assert await handshake(ocpp, "AES128-SHA256:AES128-SHA") is None
