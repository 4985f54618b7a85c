"""Child processes and what /proc says about them.

Every process the harness starts is registered in one :class:`ProcessGroup`, which stops
them all (SIGTERM, then SIGKILL after a bounded wait) and reaps them, whatever happens: a
normal end, an error, or Ctrl-C. Children run in their own session (a Ctrl-C in the terminal
reaches only the harness, which then stops them in order) and get SIGTERM if the harness
dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pickle
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child, before exec: die with the harness."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def save_pickle(path: str | Path, obj: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_pickle(path: str | Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def open_log(path: Path) -> IO[Any]:
    return open(path, "ab")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: IO[Any] | None = None
    started: float = field(default_factory=time.time)
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class ProcessGroup:
    def __init__(self) -> None:
        self.children: list[Child] = []

    async def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: Path | None = None,
        stdin: bool = False,
        stdout: bool = False,
    ) -> Child:
        """Start ``argv``; stderr (and stdout unless piped) go to ``log_path``."""
        log = open_log(log_path) if log_path is not None else None
        sink: Any = log if log is not None else asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if stdout else sink,
            stderr=sink,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    async def stop(self, child: Child, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await asyncio.wait_for(child.proc.wait(), 10)
        code = child.proc.returncode
        child.exit_code = code
        if child.log is not None:
            child.log.close()
            child.log = None
        return code if code is not None else -1

    async def wait(self, child: Child, timeout: float) -> int | None:
        try:
            code = await asyncio.wait_for(child.proc.wait(), timeout)
        except TimeoutError:
            return None
        child.exit_code = code
        return code

    async def close_all(self) -> None:
        """Stop and reap every child still running (in reverse order of start)."""
        alive = [c for c in reversed(self.children) if c.alive]
        for child in alive:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in alive:
            try:
                await asyncio.wait_for(child.proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.proc.wait(), 5)
        for child in self.children:
            if child.log is not None:
                child.log.close()
                child.log = None


# ---------------------------------------------------------------------- /proc


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a server process and its children: PostgreSQL's
    postmaster, its backends (live ones read one by one, ended ones through its cutime and
    cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    user = (int(fields[11]) + int(fields[13])) / CLK_TCK
    system = (int(fields[12]) + int(fields[14])) / CLK_TCK
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            user += int(fields[11]) / CLK_TCK
            system += int(fields[12]) / CLK_TCK
    return user, system


# CpuMeter names measured as a process tree (a server and its children): PostgreSQL, and
# csms (its OCPP node and the delivery process it starts; with --nodes, every node and the
# delivery worker), the OCPP nodes together ("nodes") and each ("node0", "node1", ...)
TREES = frozenset({"database", "server", "nodes"})


def is_tree(name: str) -> bool:
    return name in TREES or (name.startswith("node") and name[4:].isdigit())


Pids = int | tuple[int, ...]


def _as_tuple(pids: Pids) -> tuple[int, ...]:
    return pids if isinstance(pids, tuple) else (pids,)


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (all its threads), in seconds."""
    user, system = cpu_times(pid)
    return user + system


def memory(pid: Pids) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in bytes; of several processes (``--nodes``: the OCPP
    nodes), the sums (the peaks of each, which need not have been at the same moment)."""
    out: dict[str, int] = {}
    for one in _as_tuple(pid):
        with open(f"/proc/{one}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = out.get(key, 0) + int(value.split()[0]) * 1024
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class CpuMeter:
    """CPU used by some processes (and the whole machine) between two readings."""

    def __init__(self, pids: dict[str, Pids]) -> None:
        # a name may stand for several processes (a tuple): their CPU is summed
        self.pids = pids
        self.t0 = 0.0
        self.start: dict[str, float] = {}
        self.machine0 = (0.0, 0.0)

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pids in self.pids.items():
            user = system = 0.0
            for pid in _as_tuple(pids):
                try:
                    u, s = tree_cpu_times(pid) if is_tree(name) else cpu_times(pid)
                except (FileNotFoundError, ProcessLookupError):
                    u = s = float("nan")
                user, system = user + u, system + s
            out[name] = user + system
            if name == "server":
                out["server_user"], out["server_system"] = user, system
        return out

    def begin(self) -> None:
        self.t0 = time.time()
        self.start = self._read()
        self.machine0 = machine_cpu()

    def end(self) -> dict[str, Any]:
        t1 = time.time()
        now = self._read()
        busy, total = machine_cpu()
        seconds = t1 - self.t0
        return {
            "start": self.t0,
            "end": t1,
            "seconds": seconds,
            "cpu_seconds": {k: now[k] - self.start.get(k, 0.0) for k in now},
            "machine_busy_seconds": busy - self.machine0[0],
            "machine_total_seconds": total - self.machine0[1],
        }
