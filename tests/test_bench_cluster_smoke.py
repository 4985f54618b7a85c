"""The benchmark harness's cluster options still work end to end, as tests/test_bench_smoke.py
checks the plain scenarios: a MOBI.E day with 20 stations for a few seconds, without the echo
run, and its JSON checked for what a broken option would change.

- ``--nodes 2`` (PostgreSQL only): two ``csms run --role ocpp`` nodes and one ``--role
  delivery`` worker on one database; every station connects, half on each node (station i on
  node i mod 2), and the worker delivers every push to the hub.
- ``--peers 3`` (SQLite, one run is enough): the hub and two EMSPs registered; each of them
  gets every Location and EVSE push, and each status reaches each of them.

No timing is asserted (nor "late" pushes): the machine is shared and the run is far too short
to mean anything. The work directory is kept under the test's ``tmp_path`` (``--keep``): its
logs (node0.log, delivery.log, hub.log...) explain a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import dbs, pg

ROOT = Path(__file__).resolve().parent.parent
STATIONS = 20
NODES = 2
PEERS = ("MOB", "EM1", "EM2")  # bench.runner.peer_party: MOBI.E's hub, then the EMSPs
RUN_TIMEOUT = 75.0  # the whole bench run; SIGINT then (it stops its processes), SIGKILL later

COMMON = [
    *("--scenario", "day", "--stations", str(STATIONS), "--connectors", "2"),
    *("--compression", "60", "--duration", "3", "--ramp-up", "0.5", "--settle", "0.5"),
    *("--warmup", "1", "--settle-timeout", "30", "--no-echo", "--quiet", "--keep"),
]


def run_bench(tmp_path: Path, *options: str, postgres_url: str | None = None) -> dict[str, Any]:
    """``python -m bench`` with ``options``; its JSON. ``postgres_url``: the admin URL of the
    PostgreSQL server the bench makes its database on (CSMS_TEST_POSTGRES_URL, as the bench
    reads it)."""
    out = tmp_path / "result.json"
    # conftest's CSMS_* (the test's own database) are not the bench's: only the server's URL
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSMS_")}
    if postgres_url:
        env[pg.URL_ENV] = postgres_url
    env["TMPDIR"] = str(tmp_path)  # the bench's work directory (--keep: its logs stay there)
    cmd = [sys.executable, "-m", "bench", *COMMON, *options, "--out", str(out)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the bench stops every process it started
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # its children get SIGTERM (PR_SET_PDEATHSIG)
            _, stderr = proc.communicate()
        pytest.fail(f"the bench ran longer than {RUN_TIMEOUT:g} s:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    return dict(json.loads(out.read_text()))


def check_day(r: dict[str, Any]) -> None:
    """What every day run must show, one csms process or several: every station connected,
    booted and configured, no error, every csms process stopped cleanly, the hub (MOBI.E)
    given every Location and the statuses, and no MOBI.E rule with a failed push."""
    assert r["scenario"] == "day" and r["stations"] == STATIONS
    assert r["setup"]["definitions"]["failed"] == 0, r["setup"]["definitions"]["failures"]
    ready = r["ready"]
    assert not ready["timed_out"], ready
    assert ready["connected"] == ready["booted"] == STATIONS, ready
    assert ready["configured"] == STATIONS, ready  # every station answered R3/R4 provisioning
    assert r["stations_connected"] == STATIONS

    assert r["server"]["exit_code"] == 0
    assert r["errors"]["total"] == 0, r["errors"]
    assert r["errors_whole_run"]["total"] == 0, r["errors_whole_run"]
    assert r["unexpected_frames"] == 0
    assert r["messages"]["station_requests"] > 0
    assert r["messages"]["by_action"].get("StatusNotification", 0) > 0, r["messages"]
    # what the server side counted (with --nodes: the nodes' /metrics summed)
    assert r["server_side"]["answers"] > 0, r["server_side"]

    hub = r["hub"]
    assert hub["unauthorized"] == 0, hub
    assert hub["counts"].get("location_put", 0) >= STATIONS, hub["counts"]  # R1
    assert hub["counts"].get("evse_patch", 0) > 0, hub["counts"]
    sp = r["status_to_patch_ms"]
    assert sp["status_notifications"] > 0, sp
    assert sp["missing"] == 0, sp["missing_examples"]  # every status of the window pushed
    assert r["push_backlog"]["end_failing"] == 0, r["push_backlog"]

    for span in ("compliance_window", "compliance_whole_run"):
        rules = r[span]
        assert "error" not in rules, rules
        failed = {name: v["failed_pushes"] for name, v in rules.items() if v["failed_pushes"]}
        assert not failed, (span, failed)
    whole = r["compliance_whole_run"]
    assert whole["R1"]["samples"] >= STATIONS, whole  # each Location's first push measured
    assert whole["R6"]["samples"] > 0 and whole["R8"]["samples"] > 0, whole


def check_nodes(r: dict[str, Any]) -> None:
    """``--nodes 2``: the day, on two OCPP nodes and a delivery worker, stations split."""
    check_day(r)
    assert r["database"]["engine"] == "postgresql" and r["database"]["postgresql_version"]
    assert r["nodes"] == NODES and r["delivery_worker"] is True and r["csms_role"] == "ocpp"
    assert r["server_config"]["nodes"] == NODES
    c = r["cluster"]
    # each node's own csms_stations_connected: station i on node i mod 2, so half on each,
    # when ready and still at the end
    half = [STATIONS // NODES] * NODES
    assert c["stations_per_node_ready"] == half, c
    assert c["stations_per_node_end"] == half, c
    # every process of the cluster stopped cleanly, the worker too
    assert c["exit_codes"] == {**{f"node{i}": 0 for i in range(NODES)}, "delivery": 0}, c
    # each node and the worker were measured as processes of their own
    assert sorted(r["per_node_cpu"]) == [f"node{i}" for i in range(NODES)], r["per_node_cpu"]
    assert "nodes_cpu" in r and "delivery_cpu" in r
    # one peer only: no per-peer figures
    assert r["peers"] == 1 and "status_to_patch_ms_per_peer" not in r


def check_peers(r: dict[str, Any]) -> None:
    """``--peers 3``: the day, every Location and EVSE push fanned out to each peer, and each
    status of the window acknowledged by each."""
    check_day(r)
    assert r["database"]["engine"] == "sqlite"
    assert r["peers"] == len(PEERS) and r["nodes"] == 1 and r["delivery_worker"] is False
    assert "cluster" not in r

    pushes = r["peers_pushes"]
    assert list(pushes) == list(PEERS), pushes  # the hub first
    assert pushes["MOB"] == r["hub"]["counts"]  # the hub's figures are the first peer's
    for party, counts in pushes.items():
        assert counts.get("location_put", 0) >= STATIONS, (party, counts)
        assert counts.get("evse_patch", 0) > 0, (party, counts)

    per_peer = r["status_to_patch_ms_per_peer"]
    assert list(per_peer) == list(PEERS), per_peer
    sent = per_peer["MOB"]["status_notifications"]
    assert sent > 0, per_peer
    for party, sp in per_peer.items():
        # the same statuses measured against each peer's records, and none missing there
        assert sp["status_notifications"] == sent, (party, sp)
        assert sp["missing"] == 0, (party, sp["missing_examples"])
    overall = r["status_to_patch_ms"]  # every (status, peer) pair, pooled
    assert overall["status_notifications"] == sent * len(PEERS), overall
    assert r["status_to_patch_ms_worst_peer"]["peer"] in PEERS


@pytest.mark.postgresql_only
@pytest.mark.timeout(120)
def test_bench_nodes_on_postgresql(tmp_path: Path) -> None:
    # the session's PostgreSQL server (or the one CSMS_TEST_POSTGRES_URL names): the bench
    # makes a database of its own there, rather than a server of its own
    url = dbs.server().admin_url
    r = run_bench(tmp_path, "--database", "postgresql", "--nodes", str(NODES), postgres_url=url)
    check_nodes(r)


@pytest.mark.sqlite_only
@pytest.mark.timeout(120)
def test_bench_peers(tmp_path: Path) -> None:
    r = run_bench(tmp_path, "--database", "sqlite", "--peers", str(len(PEERS)))
    check_peers(r)
