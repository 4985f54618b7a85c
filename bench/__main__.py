"""``python -m bench``: run one benchmark scenario and report it.

Examples::

    python -m bench --scenario day --stations 1000 --duration 60
    python -m bench --scenario day --stations 10000 --duration 180 --workers 2
    python -m bench --scenario storm --stations 10000 --duration 120 --workers 2
    python -m bench --scenario ramp --stations 1000 --compression 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from .report import table
from .runner import log, run

RESULTS = Path(__file__).resolve().parent / "results"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the csms central system (OCPP 1.6J + OCPI for MOBI.E).",
    )
    p.add_argument("--scenario", choices=("day", "storm", "ramp"), default="day")
    p.add_argument("--stations", type=int, default=1000, help="N stations (default 1000)")
    p.add_argument("--connectors", type=int, default=2, help="connectors (EVSEs) per station")
    p.add_argument(
        "--compression",
        type=float,
        default=1.0,
        help="K: MOBI.E's day runs K times faster (ramp: the first K; default 1)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds measured after the ramp-up (storm: at least this long after the drop)",
    )
    p.add_argument(
        "--out", type=Path, help="JSON file (default bench/results/<scenario>-<N>-<time>.json)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="load generator processes (default: 1 up to 5,000 stations, else 2)",
    )
    p.add_argument("--no-echo", action="store_true", help="skip the bare websockets echo run")
    p.add_argument(
        "--echo-duration",
        type=float,
        default=0.0,
        help="seconds measured against the echo server (day; default: --duration)",
    )
    p.add_argument(
        "--ramp-up",
        type=float,
        default=None,
        help="seconds over which the stations first connect (default N/100, at least 2)",
    )
    p.add_argument(
        "--boot-concurrency",
        type=int,
        default=100,
        help="stations connecting and booting at once during the ramp-up (default 100)",
    )
    p.add_argument("--settle", type=float, default=3.0, help="pause after the ramp-up (s)")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="day: seconds after the ramp-up before measuring, while the sessions under way "
        "start at random moments (default 300/K: one R5 interval, so that Session updates "
        "are spread as in a real day)",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=300.0,
        help="longest wait for every station to boot and be configured after the ramp-up",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--call-timeout", type=float, default=30.0, help="stations' answer timeout (s)")
    p.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="database.synchronous of the server (default FULL, the product's default)",
    )
    p.add_argument(
        "--role",
        choices=("auto", "all"),
        default="auto",
        help="csms run --role: auto (default: the OCPP node and its delivery process, two "
        "processes) or all (one process, as before issue 14)",
    )
    p.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="csms's engine: its embedded SQLite (default), or a PostgreSQL server the bench "
        "starts on this machine (Debian's, durable: fsync and synchronous commits on), or the "
        "one CSMS_TEST_POSTGRES_URL names",
    )
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        metavar="N",
        help="PostgreSQL only: N OCPP nodes (csms run --role ocpp) and one delivery worker "
        "(--role delivery) instead of one csms run; the stations spread over the nodes "
        "(station i on node i mod N)",
    )
    p.add_argument(
        "--peers",
        type=int,
        default=1,
        metavar="P",
        help="OCPI peers (default 1: the hub, as MOBI.E); P > 1: the hub and P - 1 EMSPs, "
        "each given every Location and EVSE push",
    )
    p.add_argument("--api-concurrency", type=int, default=32, help="definition PUTs at once")
    p.add_argument("--check-transactions", action="store_true", help="also in the day scenario")
    p.add_argument("--storm-spread", type=float, default=60.0, help="reconnections within (s)")
    p.add_argument("--storm-warmup", type=float, default=20.0, help="steady state before the drop")
    p.add_argument("--storm-timeout", type=float, default=180.0, help="longest wait after it")
    p.add_argument("--ramp-step", type=float, default=20.0, help="seconds per ramp step")
    p.add_argument("--ramp-factor", type=float, default=2.0, help="K multiplier per step")
    p.add_argument("--ramp-max-k", type=float, default=4096.0)
    p.add_argument("--ramp-p99-ms", type=float, default=100.0, help="p99 answer limit (ms)")
    p.add_argument(
        "--ramp-backlog",
        type=float,
        default=None,
        help="largest push backlog at the end of a sustained step (default max(50, N/10))",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the server with py-spy during the window (keeps the work directory)",
    )
    p.add_argument(
        "--profile-target",
        choices=("csms", "echo", "both"),
        default="csms",
        help="which server --profile records",
    )
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only the thread holding the GIL (Python work, without waits)",
    )
    p.add_argument(
        "--py-spy",
        default=os.environ.get("PY_SPY") or shutil.which("py-spy"),
        help="the py-spy executable (default: $PY_SPY or on PATH)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, database)")
    p.add_argument("--quiet", action="store_true", help="no table on stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.stations < 1 or args.connectors < 1 or args.compression <= 0:
        print("stations, connectors and compression must be positive", file=sys.stderr)
        return 2
    if args.nodes is not None:
        if args.database != "postgresql":
            print(
                "--nodes needs --database postgresql: OCPP nodes and a delivery worker of "
                "their own share a PostgreSQL database (on SQLite, csms runs as one node "
                "with its own delivery process)",
                file=sys.stderr,
            )
            return 2
        if args.nodes < 1:
            print("--nodes must be at least 1", file=sys.stderr)
            return 2
        if args.role != "auto":
            print(
                "--nodes runs --role ocpp nodes and a delivery worker: no --role", file=sys.stderr
            )
            return 2
    if args.role == "all" and args.database == "postgresql":
        print("--role all is for SQLite (csms refuses it on PostgreSQL)", file=sys.stderr)
        return 2
    if args.peers < 1:
        print("--peers must be at least 1", file=sys.stderr)
        return 2
    if args.profile:
        if not args.py_spy:
            print("--profile needs py-spy (pip install py-spy; or --py-spy PATH)", file=sys.stderr)
            return 2
        args.keep = True
    if not args.workers:
        args.workers = 1 if args.stations <= 5000 else 2
    args.workers = max(1, min(args.workers, args.stations))
    # every station is a socket in the server and in a load generator
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.stations + 1024
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
        if hard < need:
            log(f"warning: only {hard} file descriptors per process; {need} are needed")
    try:
        result = asyncio.run(run(args))
    except KeyboardInterrupt:
        log("interrupted; every process was stopped")
        return 130
    out = args.out
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"{args.scenario}-{args.stations}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.quiet:
        print(table(result))
    log(f"results written to {out}")
    ok = result["server"].get("exit_code") == 0
    if not ok:
        log("csms did not exit cleanly (exit code != 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
