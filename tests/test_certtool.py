"""``csms pki``: the CA, server and station certificates an operator makes for TLS, checked
by a real TLS handshake on loopback (the server certificate verified by the CA, the station's
certificate verified by the server as a client certificate)."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from csms.cli import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def _mutual_tls(pki: Path, client_cert: Path, client_key: Path) -> dict:
    """A real TLS handshake on 127.0.0.1: the server presents server.pem and requires a
    client certificate from the CA; the client trusts only ca.pem. The server's view of the
    client certificate is returned."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    server_ctx.load_verify_locations(pki / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen: asyncio.Future[dict] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(writer.get_extra_info("ssl_object").getpeercert())
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    client_ctx.load_cert_chain(client_cert, client_key)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        assert await asyncio.wait_for(reader.read(2), 5) == b"ok"
        writer.close()
        return await asyncio.wait_for(seen, 5)
    finally:
        server.close()
        await server.wait_closed()


async def test_init_makes_a_ca_a_server_and_station_certificates_that_real_tls_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(pki), "--organization", "Exemplo CPO",
                 "--host", "localhost", "--host", "127.0.0.1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "[tls]" in out and f'station_ca_file = "{pki.resolve() / "ca.pem"}"' in out
    assert 'organization = "Exemplo CPO"' in out
    assert "BEGIN" not in out  # no key material printed
    assert _mode(pki) == 0o700
    assert _mode(pki / "ca.key") == 0o600 and _mode(pki / "server.key") == 0o600
    assert main(["pki", "station-cert", "--dir", str(pki), "--id", "CP-1"]) == 0
    station = pki / "stations"
    assert _mode(station / "CP-1.key") == 0o600
    assert _cn(station / "CP-1.pem") == "CP-1"
    peer = await _mutual_tls(pki, station / "CP-1.pem", station / "CP-1.key")
    subject = dict(item[0] for item in peer["subject"])
    assert subject == {"organizationName": "Exemplo CPO", "commonName": "CP-1"}


async def test_a_renewed_server_certificate_keeps_the_ca_and_an_rsa_key_when_asked(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    assert (
        main(["pki", "init", "--dir", str(pki), "--organization", "O", "--host", "localhost"]) == 0
    )
    ca_before = (pki / "ca.pem").read_bytes()
    old = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    assert main(["pki", "server-cert", "--dir", str(pki), "--host", "localhost", "--rsa"]) == 0
    new = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    assert (pki / "ca.pem").read_bytes() == ca_before
    assert new.serial_number != old.serial_number
    assert new.public_key().key_size == 2048  # type: ignore[union-attr]
    assert main(["pki", "station-cert", "--dir", str(pki), "--id", "CP 2/x", "--out",
                 str(tmp_path / "st")]) == 0  # fmt: skip
    # an id that is not a safe file name is written under a safe one, the CN stays exact
    assert _cn(tmp_path / "st" / "CP_2_x.pem") == "CP 2/x"
    await _mutual_tls(pki, tmp_path / "st" / "CP_2_x.pem", tmp_path / "st" / "CP_2_x.key")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["init", "--organization", "O"], "--host"),
        (["init", "--organization", "O", "--host", "bad host!"], "not a DNS name"),
        (["init", "--organization", "", "--host", "a"], "--organization"),
        (["init", "--organization", "O", "--host", "a", "--rsa", "1024"], "--rsa"),
        (["init", "--organization", "O", "--host", "a", "--days", "0"], "--days"),
        (["server-cert", "--host", "a"], "no CA here"),
        (["station-cert", "--id", "CP-1"], "no CA here"),
    ],
)
def test_bad_input_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["pki", argv[0], "--dir", str(tmp_path / "pki"), *argv[1:]]) == 2
    assert message in capsys.readouterr().err


def test_an_existing_ca_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(pki), "--organization", "O", "--host", "a"]) == 0
    key = (pki / "ca.key").read_bytes()
    assert main(["pki", "init", "--dir", str(pki), "--organization", "O", "--host", "a"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (pki / "ca.key").read_bytes() == key
