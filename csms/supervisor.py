"""The OCPP node's child: it starts the delivery process (``csms run --role delivery``,
the same configuration), restarts it when it dies, and stops it on shutdown.

The child gets, in its environment, the node's loopback URL and a secret made for this
start (:mod:`csms.cluster`), and two pipes: one the node writes a byte to after each
commit (the child's relay wakes up; the pipe's end is also how the child notices that the
node is gone), one the child writes its internal port to once it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from pathlib import Path

import structlog

from .cluster import NODE_URL_ENV, READY_FD_ENV, SECRET_ENV, WAKE_FD_ENV, Link, WakeWriter

log = structlog.get_logger("csms.supervisor")

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# a child that dies again and again is restarted after 1, 2, 4 ... up to 30 s
RESTART_MAX = 30.0
# a child that ran this long before dying starts the backoff again from 1 s
STABLE_AFTER = 60.0


class DeliverySupervisor:
    def __init__(self, config: Path | None, node_url: str) -> None:
        self.config = config
        self.node_url = node_url
        self.secret = secrets.token_urlsafe(32)
        self.link: Link | None = None  # the child's internal routes, once it serves
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._wake: WakeWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def node_link(self) -> Link:
        """How the child reaches the node (and the secret the node checks)."""
        return Link(self.node_url, self.secret)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wake(self) -> None:
        """The node's commit hook: wake the child's relay."""
        if self._wake is not None:
            self._wake()

    async def start(self) -> None:
        """Start the child and return once it serves (or raise RuntimeError)."""
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="delivery-supervisor")

    async def _spawn(self) -> None:
        wake_r, wake_w = os.pipe()
        ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env.update(
            {
                SECRET_ENV: self.secret,
                NODE_URL_ENV: self.node_url,
                WAKE_FD_ENV: str(wake_r),
                READY_FD_ENV: str(ready_w),
            }
        )
        args = [sys.executable, "-m", "csms.cli", "run", "--role", "delivery"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args, env=env, pass_fds=(wake_r, ready_w)
            )
        finally:
            os.close(wake_r)
            os.close(ready_w)
        old, self._wake = self._wake, WakeWriter(wake_w)
        if old is not None:
            os.close(old.fd)
        try:
            line = await asyncio.wait_for(_read_line(ready_r), READY_TIMEOUT)
        finally:
            os.close(ready_r)
        if not line.strip().isdigit():
            raise RuntimeError("the delivery process did not start (see its log lines above)")
        self.link = Link(f"http://127.0.0.1:{int(line)}", self.secret)
        log.info("delivery process started", pid=self._proc.pid, internal_url=self.link.url)

    async def _watch(self) -> None:
        delay = 1.0
        while True:
            assert self._proc is not None
            started = asyncio.get_running_loop().time()
            code = await self._proc.wait()
            if self._stopping:
                return
            self.link = None
            log.error("delivery process died: restarting it", exit_code=code, after=delay)
            if asyncio.get_running_loop().time() - started >= STABLE_AFTER:
                delay = 1.0
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            try:
                await self._spawn()
                self.restarts += 1
            except (OSError, RuntimeError, TimeoutError) as e:
                log.error("delivery process could not be restarted", error=str(e))

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("delivery process did not stop: killed")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._wake is not None:
            os.close(self._wake.fd)
            self._wake = None


async def _read_line(fd: int) -> str:
    """One line from a pipe, without blocking the loop ("" when it closes first)."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data.extend(chunk)
        if (not chunk or b"\n" in data) and not done.done():
            done.set_result(data.decode(errors="replace"))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
