"""The run: the central system and its hub, the load generators, the scenario, then the same
connections and frames against the bare echo server, and every figure computed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from . import model, stats
from .procs import Child, CpuMeter, Pids, ProcessGroup, load_pickle, memory

ROOT = Path(__file__).resolve().parent.parent  # where `python -m bench.*` runs


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- load generators


class Workers:
    """The load generator processes of one phase (the stations split among them)."""

    def __init__(
        self,
        group: ProcessGroup,
        workdir: Path,
        label: str,
        args: argparse.Namespace,
        host: str,
        port: int,
        ports: list[int] | None = None,
    ) -> None:
        """``ports`` (``--nodes``): one per OCPP node, station i on node i mod N."""
        self.group = group
        self.workdir = workdir
        self.label = label
        self.args = args
        self.host = host
        self.port = port
        self.ports = ports
        self.children: list[Child] = []
        self.progress: list[dict[str, Any]] = []
        self.snaps: list[asyncio.Queue[dict[str, Any]]] = []
        self.done: list[asyncio.Event] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self, start_at: float, ramp_up: float) -> None:
        a = self.args
        n = a.workers
        for i in range(n):
            out = self.workdir / f"{self.label}-worker{i}.pickle"
            spec = {
                "host": self.host,
                "port": self.port,
                **({"ports": self.ports} if self.ports else {}),
                "path_prefix": "/ocpp",
                "stations": list(range(i, a.stations, n)),
                "total_stations": a.stations,
                "connectors": a.connectors,
                "compression": a.compression,
                "seed": a.seed,
                "tags": model.tag_count(a.stations),
                "call_timeout": a.call_timeout,
                "start_at": start_at,
                "boot_concurrency": max(1, a.boot_concurrency // n),
                # day and ramp: the sessions under way at boot start over one R5 interval
                "initial_spread": 0.0 if a.scenario == "storm" else model.SESSION_UPDATE_S,
                "ramp_up": ramp_up,
                "out": str(out),
            }
            spec_path = self.workdir / f"{self.label}-worker{i}.json"
            spec_path.write_text(json.dumps(spec))
            child = await self.group.start(
                f"{self.label}-worker{i}",
                [sys.executable, "-m", "bench.loadgen", str(spec_path)],
                cwd=ROOT,
                log_path=self.workdir / f"{self.label}-worker{i}.log",
                stdin=True,
                stdout=True,
            )
            self.children.append(child)
            self.progress.append({})
            self.snaps.append(asyncio.Queue())
            self.done.append(asyncio.Event())
            self._readers.append(asyncio.create_task(self._read(i, child)))

    async def _read(self, i: int, child: Child) -> None:
        assert child.proc.stdout is not None
        async for raw in child.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "progress":
                self.progress[i] = msg
            elif kind == "snap":
                self.snaps[i].put_nowait(msg)
            elif kind == "done":
                self.done[i].set()

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children}

    def totals(self) -> dict[str, int]:
        keys = ("connected", "booted", "provisioned", "calls_sent", "errors", "storm_done")
        out = {k: sum(int(p.get(k, 0)) for p in self.progress) for k in keys}
        out["storm_booted"] = sum(int(p.get("storm_booted", 0)) for p in self.progress)
        return out

    def alive(self) -> bool:
        return all(c.alive for c in self.children)

    async def send(self, cmd: dict[str, Any]) -> None:
        line = (json.dumps(cmd) + "\n").encode()
        for c in self.children:
            if c.alive and c.proc.stdin is not None:
                c.proc.stdin.write(line)
                with contextlib.suppress(ConnectionError):
                    await c.proc.stdin.drain()

    async def snap(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        await self.send({"cmd": "snap"})
        return [await asyncio.wait_for(q.get(), timeout) for q in self.snaps]

    async def stop(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """End the run; returns each worker's results."""
        await self.send({"cmd": "stop"})
        for i, c in enumerate(self.children):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done[i].wait(), timeout)
            code = await self.group.wait(c, 30)
            if code is None:
                await self.group.stop(c)
        for r in self._readers:
            r.cancel()
        results = []
        for i in range(len(self.children)):
            path = self.workdir / f"{self.label}-worker{i}.pickle"
            try:
                results.append(load_pickle(path))
            except FileNotFoundError:
                raise RuntimeError(
                    f"load generator {i} left no results; see {self.workdir}/{self.label}-"
                    f"worker{i}.log"
                ) from None
        return results


# ---------------------------------------------------------------------- helpers


def default_ramp_up(n: int) -> float:
    """Seconds over which the stations first connect: about 100 a second (and never more
    than --boot-concurrency of them booting at once)."""
    return max(2.0, n / 100.0)


async def wait_ready(
    workers: Workers,
    n: int,
    provisioned: bool,
    timeout: float,
    backlog: Any = None,
) -> dict[str, Any]:
    """Until every station is connected and booted (and, against csms, configured and the
    push backlog drained)."""
    started = time.time()
    last_log = 0.0
    timed_out = False
    while True:
        t = workers.totals()
        ready = (
            t["booted"] >= n and t["connected"] >= n and (not provisioned or t["provisioned"] >= n)
        )
        now = time.time()
        if now - last_log >= 5:
            last_log = now
            log(
                f"{workers.label}: connected {t['connected']}/{n}, booted {t['booted']}, "
                f"configured {t['provisioned']}, requests {t['calls_sent']}, errors {t['errors']}"
            )
        if ready:
            break
        if not workers.alive():
            raise RuntimeError(f"a load generator of {workers.label} exited; see its log")
        if now - started > timeout:
            timed_out = True
            break
        await asyncio.sleep(0.5)
    booted_at = time.time()
    drained = None
    if backlog is not None and not timed_out:
        remaining = max(10.0, timeout - (time.time() - started))
        waited, total = await backlog.wait_backlog(remaining, at_most=max(5, n // 100))
        drained = {"seconds": round(waited, 2), "backlog": total}
    t = workers.totals()
    return {
        "seconds": round(booted_at - started, 2),
        "connected": t["connected"],
        "booted": t["booted"],
        "configured": t["provisioned"],
        "timed_out": timed_out,
        "push_drain": drained,
    }


async def warm_up(args: argparse.Namespace, workers: Workers) -> None:
    """After the ramp-up: the settle pause, and in the day scenario the warm-up during which
    the sessions under way start (one R5 interval, 300 s / K, unless --warmup says)."""
    seconds = args.settle
    if args.scenario == "day":
        seconds += (
            args.warmup if args.warmup is not None else model.SESSION_UPDATE_S / args.compression
        )
    if seconds > 0:
        log(f"{workers.label}: warming up for {seconds:g} s")
        await asyncio.sleep(seconds)


class Sampler:
    """Push backlog and server memory every few seconds during a window."""

    def __init__(self, csms: Any, pid: Pids, workers: Workers, every: float = 5.0) -> None:
        self.csms = csms
        self.pid = pid
        self.workers = workers
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            sample: dict[str, Any] = {"t": round(time.time(), 3)}
            if self.csms is not None:
                with contextlib.suppress(Exception):
                    sample["backlog"], sample["failing"] = await self.csms.pushes()
            with contextlib.suppress(OSError):
                sample["rss"] = memory(self.pid).get("VmRSS")
            t = self.workers.totals()
            sample["connected"] = t["connected"]
            sample["errors"] = t["errors"]
            self.samples.append(sample)
            log(
                f"{self.workers.label}: backlog {sample.get('backlog', '-')}, "
                f"rss {sample.get('rss', 0) / 1e6:.0f} MB, connected {t['connected']}, "
                f"requests {t['calls_sent']}, errors {t['errors']}"
            )


class Profiler:
    """py-spy on the server for the window (``--profile``), summarised at the end."""

    def __init__(self, args: argparse.Namespace, workdir: Path, label: str, pid: Pids) -> None:
        self.exe = args.py_spy if args.profile else None
        self.only = args.profile_target
        self.gil = args.profile_gil
        self.label = label
        self.pid = pid[0] if isinstance(pid, tuple) else pid  # --nodes: node 0 only
        self.raw = workdir / f"{label}-profile.txt"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, seconds: float) -> None:
        if not self.exe or self.only not in ("both", self.label):
            return
        self.proc = await asyncio.create_subprocess_exec(
            self.exe,
            "record",
            "--pid",
            str(self.pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            *(["--gil"] if self.gil else []),
            "--output",
            str(self.raw),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def finish(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        from .profile import summarise

        try:
            summary = summarise(self.raw)
        except OSError as e:
            return {"error": str(e)}
        summary["raw"] = str(self.raw)
        return summary


# ---------------------------------------------------------------------- scenarios


async def play(
    args: argparse.Namespace,
    workers: Workers,
    server_pid: Pids,
    other_pids: dict[str, Pids],
    csms: Any,
    ramp_plan: list[float] | None = None,
    memory_pid: Pids | None = None,
) -> dict[str, Any]:
    """Run the scenario's measured part. ``csms`` is None against the echo server.
    ``server_pid``: every process of the server (their CPU summed); ``memory_pid``: those
    whose memory is sampled (default the same)."""
    label = workers.label
    memory_pid = server_pid if memory_pid is None else memory_pid
    pids = {"server": server_pid, **other_pids, **workers.pids}
    meter = CpuMeter(pids)
    out: dict[str, Any] = {}
    sampler = Sampler(csms, memory_pid, workers)
    profiler = Profiler(args, workers.workdir, label, server_pid)
    if args.scenario == "day":
        duration = args.duration if csms is not None else (args.echo_duration or args.duration)
        before = await csms.metrics_text() if csms is not None else ""
        rules_before = await csms.compliance() if csms is not None else {}
        sampler.start()
        meter.begin()
        await profiler.start(duration)
        await asyncio.sleep(duration)
        cpu = meter.end()
        await sampler.stop()
        out["window"] = cpu
        if csms is not None:
            out["compliance"] = stats.compliance_delta(rules_before, await csms.compliance())
    elif args.scenario == "storm":
        await asyncio.sleep(args.storm_warmup)
        at = time.time() + 1.0
        log(f"{label}: every connection drops now; reconnections over {args.storm_spread:g} s")
        await workers.send({"cmd": "storm", "at": at, "spread": args.storm_spread})
        before = await csms.metrics_text() if csms is not None else ""
        rules_before = await csms.compliance() if csms is not None else {}
        await asyncio.sleep(max(0.0, at - time.time()))
        sampler.start()
        meter.begin()
        await profiler.start(args.storm_spread + 10)
        deadline = at + args.storm_spread + args.storm_timeout
        all_done = None
        while time.time() < deadline:
            t = workers.totals()
            if t["storm_done"] >= args.stations and all_done is None:
                all_done = time.time()
                log(f"{label}: every station is back and delivered its queued messages")
            if all_done is not None and time.time() >= max(
                all_done + min(5.0, args.duration), at + args.duration
            ):
                break
            await asyncio.sleep(0.25)
        cpu = meter.end()
        await sampler.stop()
        out["window"] = cpu
        if csms is not None:
            out["compliance"] = stats.compliance_delta(rules_before, await csms.compliance())
        out["storm_at"] = at
        out["storm_all_done"] = all_done
    else:  # ramp
        before = ""
        steps = []
        k = args.compression
        plan = list(ramp_plan) if ramp_plan is not None else None
        warm = args.ramp_step * 0.25
        previous_rate = 0.0
        sampler.start()
        meter_all = CpuMeter(pids)
        meter_all.begin()
        await profiler.start(args.ramp_step * 100)
        while True:
            if plan is not None:
                if not plan:
                    break
                k = plan.pop(0)
            await workers.send({"cmd": "speed", "k": k})
            await asyncio.sleep(warm)
            await workers.snap()
            step_before = await csms.metrics_text() if csms is not None else ""
            meter.begin()
            await asyncio.sleep(args.ramp_step - warm)
            snaps = await workers.snap()
            cpu = meter.end()
            merged = stats.hist_merge(snaps)
            step: dict[str, Any] = {"k": k, "window": cpu, **merged}
            step["messages_per_second"] = round(merged["count"] / cpu["seconds"], 1)
            step["server_cpu_cores"] = round(cpu["cpu_seconds"]["server"] / cpu["seconds"], 3)
            step["server_us_per_message"] = (
                round(cpu["cpu_seconds"]["server"] / merged["count"] * 1e6, 1)
                if merged["count"]
                else None
            )
            if "database" in cpu["cpu_seconds"]:
                step["database_cpu_cores"] = round(
                    cpu["cpu_seconds"]["database"] / cpu["seconds"], 3
                )
            if csms is not None:
                step["backlog"], step["failing"] = await csms.pushes()
                step["server_side"] = stats.server_side(
                    step_before, await csms.metrics_text(), cpu["seconds"]
                )
                reasons = []
                if merged["p99_ms"] is not None and merged["p99_ms"] > args.ramp_p99_ms:
                    reasons.append(f"p99 {merged['p99_ms']:.0f} ms > {args.ramp_p99_ms:g} ms")
                if merged["errors"]:
                    reasons.append(f"{merged['errors']} errors")
                limit = args.ramp_backlog or max(50, args.stations // 10)
                if step["backlog"] > limit:
                    reasons.append(f"push backlog {step['backlog']} > {limit}")
                step["sustained"] = not reasons
                step["reasons"] = reasons
                log(
                    f"{label}: K={k:g}: {step['messages_per_second']:.0f} msg/s, p99 "
                    f"{merged['p99_ms']} ms, server {step['server_cpu_cores']:.2f} cores, "
                    f"backlog {step['backlog']}"
                    + (f" -> stop ({'; '.join(reasons)})" if reasons else "")
                )
                steps.append(step)
                if reasons:
                    break
                if step["messages_per_second"] < previous_rate * 1.1:
                    step["plateau"] = True
                    log(f"{label}: the rate stopped growing: the load generator is saturated")
                    break
                previous_rate = step["messages_per_second"]
                if k * args.ramp_factor > args.ramp_max_k:
                    break
                k *= args.ramp_factor
            else:
                log(
                    f"{label}: K={k:g}: {step['messages_per_second']:.0f} msg/s, "
                    f"{step['server_us_per_message']} us/msg"
                )
                steps.append(step)
        out["window"] = meter_all.end()
        await sampler.stop()
        out["steps"] = steps
    out["samples"] = sampler.samples
    out["profile"] = await profiler.finish()
    if csms is not None:
        after = await csms.metrics_text()
        out["server_side"] = stats.server_side(before, after, out["window"]["seconds"])
        out["backlog_end"] = await csms.pushes()
    with contextlib.suppress(OSError):
        out["memory_end"] = memory(memory_pid)
    return out


# ---------------------------------------------------------------------- phases


async def product_phase(
    args: argparse.Namespace, group: ProcessGroup, workdir: Path
) -> dict[str, Any]:

    res: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        database: tuple[str, int | None] | None = None
        if args.database == "postgresql":
            database = await stack.enter_async_context(_postgres(res))
        return await _product_phase(args, group, workdir, res, database)


@contextlib.asynccontextmanager
async def _postgres(res: dict[str, Any]) -> AsyncIterator[tuple[str, int | None]]:
    """A durable PostgreSQL server on this machine (or CSMS_TEST_POSTGRES_URL's) with a fresh
    database: (its URL, the postmaster's pid when the server is ours). The server is stopped
    and deleted after the phase."""
    import asyncpg

    from tests.pg import PgServer

    log("starting a PostgreSQL server (durable: fsync and synchronous commits on)")
    server = await asyncio.to_thread(PgServer(durable=True).start)
    name = f"csms_bench_{os.getpid()}"
    try:
        server.drop_database(name)
        url = server.create_database(name)
        conn = await asyncpg.connect(url)
        try:
            res["postgresql"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
        try:
            yield url, server.pid
        finally:
            server.drop_database(name)
    finally:
        await asyncio.to_thread(server.stop)


async def _product_phase(
    args: argparse.Namespace,
    group: ProcessGroup,
    workdir: Path,
    res: dict[str, Any],
    database: tuple[str, int | None] | None,
) -> dict[str, Any]:
    from .target import Cluster, Csms

    database_url, database_pid = database or (None, None)
    csms: Csms | Cluster
    if args.nodes:
        assert database_url is not None  # (refused on SQLite by the command line)
        csms = Cluster(group, workdir, args.compression, args.synchronous, database_url, args.nodes)
        log(f"starting {args.nodes} csms OCPP nodes and a delivery worker (logs in {workdir})")
    else:
        csms = Csms(group, workdir, args.compression, args.synchronous, database_url, args.role)
        log(f"starting csms (config {csms.config_path}, log {csms.log_path})")
    await csms.start()
    res["config"] = csms.settings
    hubs: list[tuple[str, Child, str]] = []  # (party id, process, URL), the HUB first
    try:
        for i in range(args.peers):
            party, role = peer_party(i), "HUB" if i == 0 else "EMSP"
            token_b = secrets.token_urlsafe(24)
            hub_child = await group.start(
                "hub" if i == 0 else f"hub-{party}",
                [
                    *[sys.executable, "-m", "bench.hub", "--port", "0", f"--token-b={token_b}"],
                    *(["--party-id", party, "--role", role] if i else []),
                ],
                cwd=ROOT,
                log_path=workdir / ("hub.log" if i == 0 else f"hub-{party}.log"),
                stdout=True,
            )
            assert hub_child.proc.stdout is not None
            line = await asyncio.wait_for(hub_child.proc.stdout.readline(), 30)
            hub_info = json.loads(line)
            hub_url = f"http://127.0.0.1:{hub_info['port']}"
            hubs.append((party, hub_child, hub_url))
            started = time.monotonic()
            await csms.register_hub(hub_info["credentials"])
            if i == 0:
                res["hub_registration_seconds"] = round(time.monotonic() - started, 3)
            log(f"peer {party} registered as {role} ({hub_url})")
        log(f"defining {args.stations} stations and their id tags")
        res["definitions"] = await csms.define(
            args.stations, args.connectors, model.tag_count(args.stations), args.api_concurrency
        )
        d = res["definitions"]
        log(f"defined in {d['seconds']} s ({d['requests_per_second']} requests/s)")
        if d["failed"]:
            raise RuntimeError(f"station definitions failed: {d['failures'][:3]}")
        waited, _ = await csms.wait_backlog(120 + args.stations / 20)
        res["initial_locations_push_seconds"] = round(waited, 2)
        res["memory_before_connections"] = memory(csms.pid)
        ramp_up = args.ramp_up if args.ramp_up is not None else default_ramp_up(args.stations)
        res["ramp_up_seconds"] = ramp_up
        if isinstance(csms, Cluster):  # station i on node i mod N, as a TCP load balancer
            ports: list[int] | None = csms.ocpp_ports
            port = ports[0]
        else:
            ports, port = None, csms.ocpp_port
        workers = Workers(group, workdir, "csms", args, "127.0.0.1", port, ports)
        await workers.start(time.time() + 0.5, ramp_up)
        try:
            res["ready"] = await wait_ready(
                workers, args.stations, True, ramp_up + args.settle_timeout, csms
            )
            log(f"ready: {res['ready']}")
            res["memory_ready"] = memory(csms.pid)
            await warm_up(args, workers)
            hub_pids = tuple(h[1].pid for h in hubs)
            others: dict[str, Pids] = {"hub": hub_pids if len(hub_pids) > 1 else hub_pids[0]}
            if database_pid is not None:
                others["database"] = database_pid
            server: Pids = csms.pid
            if isinstance(csms, Cluster):
                # server: every csms process (each node and the delivery worker, each with
                # its children); nodes: the OCPP nodes, together and one by one
                server = csms.pids
                others["nodes"] = csms.node_pids
                others.update({n.name: n.pid for n in csms.nodes})
                res["stations_per_node_ready"] = await csms.stations_per_node()
            delivery_pid = await csms.delivery_pid()
            if delivery_pid is not None:  # (inside "server" too: csms's process tree)
                others["delivery"] = delivery_pid
            res["play"] = await play(args, workers, server, others, csms, memory_pid=csms.pid)
            if isinstance(csms, Cluster):
                res["stations_per_node_end"] = await csms.stations_per_node()
                res["memory_delivery_end"] = memory(delivery_pid) if delivery_pid else None
        finally:
            res["workers"] = await workers.stop()
        # the last pushes of the window reach the hub, then its records are taken
        await csms.wait_backlog(30)
        res["compliance"] = await csms.compliance()
        res["memory_end"] = memory(csms.pid)
        if args.scenario == "storm" or args.check_transactions:
            rows = await csms.all_pages("/api/v1/transactions")
            _, anomalies = await csms.api("GET", "/api/v1/anomalies")
            items = anomalies.get("items", anomalies) if isinstance(anomalies, dict) else anomalies
            res["transactions"] = stats.transaction_check(res["workers"], rows, items or [])
        import aiohttp

        res["peers"] = []
        async with aiohttp.ClientSession() as s:
            for i, (party, _, url) in enumerate(hubs):
                dump = workdir / ("hub.pickle" if i == 0 else f"hub-{party}.pickle")
                async with s.get(url + "/bench/stats") as r:
                    hub_stats = await r.json()
                async with s.post(url + "/bench/dump", json={"path": str(dump)}) as r:
                    await r.json()
                peer = {"party_id": party, "stats": hub_stats, "records": load_pickle(dump)}
                res["peers"].append(peer)
        # the first peer (MOBI.E's hub) where a single hub's figures always were
        res["hub_stats"], res["hub"] = res["peers"][0]["stats"], res["peers"][0]["records"]
    finally:
        for i, (_, hub_child, _) in enumerate(hubs):
            code = await group.stop(hub_child)
            if i == 0:
                res["hub_exit_code"] = code
        res["csms_exit_code"] = await csms.stop()
        if isinstance(csms, Cluster):
            res["csms_exit_codes"] = csms.exit_codes
        log(f"csms stopped (exit code {res['csms_exit_code']})")
    return res


def peer_party(i: int) -> str:
    """The party id of peer ``i`` (``--peers``): MOB (MOBI.E's hub), then EM1, EM2, ..."""
    return "MOB" if i == 0 else f"EM{i}"


async def echo_phase(
    args: argparse.Namespace,
    group: ProcessGroup,
    workdir: Path,
    ramp_plan: list[float] | None,
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    child = await group.start(
        "echo",
        [sys.executable, "-m", "bench.echo", "--port", "0"],
        cwd=ROOT,
        log_path=workdir / "echo.log",
        stdout=True,
    )
    try:
        assert child.proc.stdout is not None
        # the port it bound (0 asked for any free one: no race with other processes)
        port = int(json.loads(await asyncio.wait_for(child.proc.stdout.readline(), 30))["port"])
        log("echo server up; the same stations and frames against it")
        ramp_up = args.ramp_up if args.ramp_up is not None else default_ramp_up(args.stations)
        workers = Workers(group, workdir, "echo", args, "127.0.0.1", port)
        await workers.start(time.time() + 0.5, ramp_up)
        try:
            res["ready"] = await wait_ready(
                workers, args.stations, False, ramp_up + args.settle_timeout
            )
            res["memory_ready"] = memory(child.pid)
            await warm_up(args, workers)
            res["play"] = await play(args, workers, child.pid, {}, None, ramp_plan)
        finally:
            res["workers"] = await workers.stop()
    finally:
        res["exit_code"] = await group.stop(child)
    return res


# ---------------------------------------------------------------------- the whole run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"csms-bench-{args.scenario}-"))
    log(f"work directory {workdir}")
    group = ProcessGroup()
    raw: dict[str, Any] = {"workdir": str(workdir)}
    try:
        raw["product"] = await product_phase(args, group, workdir)
        if not args.no_echo:
            plan = None
            if args.scenario == "ramp":
                plan = [s["k"] for s in raw["product"]["play"]["steps"]]
            raw["echo"] = await echo_phase(args, group, workdir, plan)
    finally:
        await group.close_all()
    from .report import build

    result = build(args, raw)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["workdir"] = str(workdir)
    return result


def nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v) for v in obj]
    return obj


def machine_fingerprint() -> dict[str, Any]:
    import platform
    import sqlite3
    from importlib import metadata

    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    versions = {}
    for dist in (
        "csms-mobie",
        "websockets",
        "aiohttp",
        "ocpp",
        "jsonschema",
        "aiosqlite",
        "structlog",
        "pydantic",
        "prometheus-client",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        import subprocess

        root = Path(__file__).resolve().parent.parent
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        git["dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "ram_bytes": mem_total,
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": versions,
        "git": git,
        "loadavg_at_start": [round(v, 2) for v in load],
    }
