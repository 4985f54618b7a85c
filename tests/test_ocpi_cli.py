"""`csms ocpi token-a` and `csms ocpi register` against a running daemon and a real peer."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.daemon import Daemon
from tests.ocpi_peer.harness import EmspPeer, PeerVenvMissing

OCPI = (
    '[ocpi]\nparty_id = "CPO"\nbusiness_name = "Operador de Teste"\n'
    "allow_private_peer_addresses = true\n"  # the test peers listen on 127.0.0.1
)


async def _cli(workdir: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "csms.cli",
        "ocpi",
        *args,
        "--config",
        str(workdir / "csms.toml"),
        cwd=workdir,
        env=dict(os.environ, CSMS_ADMIN_PASSWORD=ADMIN_PASSWORD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_token_a_from_the_cli_lets_a_peer_register_with_the_running_daemon(
    tmp_path: Path,
) -> None:
    daemon = Daemon(tmp_path, extra_config=OCPI)
    await daemon.start()
    try:
        # the daemon was given port 0: tell the CLI where it listens
        (tmp_path / "csms.toml").write_text(
            (tmp_path / "csms.toml")
            .read_text()
            .replace("port = 0\n[logging]", f"port = {daemon.http_port}\n[logging]")
        )
        # a token A grants a role for parties: without them, nothing is made
        code, out, err = await _cli(tmp_path, "token-a")
        assert code == 2 and "--role" in err and "Token A" not in out
        code, out, err = await _cli(tmp_path, "token-a", "--role", "EMSP", "--party", "PT/XX")
        assert code == 2 and "PT/XX" in err
        code, out, err = await _cli(tmp_path, "token-a", "--role", "emsp", "--party", "PT/EMS")
        assert code == 0, err
        assert "It grants: EMSP PT/EMS" in out
        token = re.search(r"Token A:\s+(\S+)", out)
        versions = re.search(r"Version endpoint:\s+(\S+)", out)
        assert token and versions and "Party ID:         CPO" in out
        assert versions.group(1) == f"http://127.0.0.1:{daemon.http_port}/ocpi/versions"
        try:
            async with EmspPeer() as peer:
                result = await peer.register_with(versions.group(1), token.group(1))
                assert result["ok"], result
                # we register with a second peer through the CLI
                async with EmspPeer(party_id="EM2") as other:
                    code, out, err = await _cli(
                        tmp_path,
                        "register",
                        "--versions-url",
                        other.versions_url,
                        "--token",
                        other.token_a,
                        "--role",
                        "EMSP",
                        "--party",
                        "PT/EM2",
                    )
                    assert code == 0, (out, err)
                    assert '"status": "ok"' in out
                    assert (await other.pull("locations"))["ok"]
                code, out, err = await _cli(tmp_path, "peers")
                assert code == 0 and out.count('"registered"') == 2
        except PeerVenvMissing as e:
            pytest.fail(str(e))
    finally:
        assert await daemon.signal(signal.SIGTERM) == 0


async def test_cli_with_ocpi_disabled_or_daemon_down(tmp_path: Path) -> None:
    Daemon(tmp_path)  # writes a config without [ocpi]
    code, _, err = await _cli(tmp_path, "token-a", "--role", "HUB", "--party", "PT/MOB")
    assert code == 2 and "disabled" in err
    (tmp_path / "x").mkdir()
    Daemon(tmp_path / "x", extra_config=OCPI)  # writes a config with [ocpi]; not started
    code, _, err = await _cli(
        tmp_path / "x",
        "register",
        "--versions-url",
        "http://127.0.0.1:9/v",
        "--token",
        "t",
        "--role",
        "EMSP",
        "--party",
        "PT/EMS",
    )
    assert code == 1 and "cannot reach csms" in err
