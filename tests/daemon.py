"""Run ``csms run`` as a real process, the way an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_PASSWORD

# every daemon started, so that conftest can kill those a failed test left running (they
# would hold the test's database, and on PostgreSQL retry it for ever once it is dropped)
STARTED: list[Daemon] = []


class Daemon:
    def __init__(
        self,
        workdir: Path,
        extra_config: str = "",
        args: tuple[str, ...] = (),
        ready: str = "central system running",
        admin_password: str | None = ADMIN_PASSWORD,
    ) -> None:
        """``args``: more of ``csms run``'s arguments (``--role``); ``ready``: the log
        event that says it serves; ``admin_password``: CSMS_ADMIN_PASSWORD (None: none, as
        on a first ``make run``)."""
        self.admin_password = admin_password
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.ready = ready
        self.config = workdir / "csms.toml"
        if not self.config.exists():
            self.config.write_text(
                'data_dir = "data"\n'
                '[ocpp]\nhost = "127.0.0.1"\nport = 0\ncall_timeout = 5\n'
                '[http]\nhost = "127.0.0.1"\nport = 0\n'
                '[logging]\nformat = "json"\nlevel = "info"\n' + extra_config
            )
        self.proc: asyncio.subprocess.Process | None = None
        self.ocpp_port = 0
        self.http_port = 0
        self.lines: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CSMS_ADMIN_PASSWORD"}
        if self.admin_password is not None:
            env["CSMS_ADMIN_PASSWORD"] = self.admin_password
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "csms.cli",
            "run",
            "--config",
            str(self.config),
            *self.args,
            cwd=self.workdir,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        STARTED.append(self)
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(ready))
        await asyncio.wait_for(ready, 20)

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": raw.decode(errors="replace").rstrip()}
            self.lines.append(line)
            if line.get("event") == "HTTP server listening":
                self.http_port = int(line["port"])
            if line.get("event") == "OCPP websocket server listening":
                self.ocpp_port = int(line["port"])
            if line.get("event") == self.ready and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(RuntimeError(f"csms exited: {self.lines[-5:]}"))

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.ocpp_port}/ocpp"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def kill_if_running(self) -> None:
        """SIGKILL, unless it has exited (from synchronous code: a fixture's teardown)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code
