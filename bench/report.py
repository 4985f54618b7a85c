"""The figures of a run (one JSON document) and the table printed at the end."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Any

from . import stats
from .runner import machine_fingerprint, nan_to_none

GB = 1_000_000_000
KB = 1_000

# the targets, for a 2-core machine with the load generator on it
TARGET_CPU_PERCENT = 25.0
TARGET_PEAK_RSS = 1 * GB
TARGET_RSS_PER_STATION = 50 * KB
TARGET_P99_ANSWER_MS = 20.0
TARGET_P99_PATCH_MS = 50.0
TARGET_ECHO_RATIO = 5.0
TARGET_STORM_BOOT_S = 60.0
TARGET_STORM_P99_MS = 1000.0
TARGET_RAMP_RATE = 1500.0
TARGET_RAMP_P99_MS = 100.0


def _rate(n: float, seconds: float) -> float | None:
    return round(n / seconds, 2) if seconds else None


def _cpu_block(window: dict[str, Any], who: str, messages: int, nproc: int) -> dict[str, Any]:
    seconds = window["seconds"]
    cpu = window["cpu_seconds"].get(who, float("nan"))
    cores = cpu / seconds if seconds else float("nan")
    return {
        "cpu_seconds": round(cpu, 3),
        "user_seconds": round(window["cpu_seconds"].get(f"{who}_user", float("nan")), 3),
        "system_seconds": round(window["cpu_seconds"].get(f"{who}_system", float("nan")), 3),
        "cpu_cores": round(cores, 4),
        "cpu_percent_of_machine": round(100 * cores / nproc, 2),
        "us_per_message": round(cpu / messages * 1e6, 1) if messages else None,
    }


def _workers_cpu(window: dict[str, Any]) -> float:
    seconds = window["seconds"]
    total = sum(v for k, v in window["cpu_seconds"].items() if "worker" in k)
    return round(total / seconds, 3) if seconds else 0.0


def _storm(workers: list[dict[str, Any]], at: float, n: int) -> dict[str, Any]:
    recs = [r for w in workers for r in w["storm"]]
    booted = [r for r in recs if r[4]]
    done = [r for r in recs if r[5]]
    out: dict[str, Any] = {
        "stations_dropped": len(recs),
        "booted_again": len(booted),
        "queues_delivered": len(done),
        "drop_to_all_booted_s": round(max(r[4] for r in booted) - at, 3)
        if booted and len(booted) == n
        else None,
        "drop_to_all_delivered_s": round(max(r[5] for r in done) - at, 3)
        if done and len(done) == n
        else None,
        "last_reconnect_due_s": round(max(r[2] for r in recs) - at, 3) if recs else None,
        "reconnect_to_booted_ms": stats.summary_ms(r[4] - r[2] for r in booted),
        "handshake_to_booted_ms": stats.summary_ms(r[4] - r[3] for r in booted),
    }
    return out


def _phase_figures(
    phase: dict[str, Any], args: argparse.Namespace, nproc: int, with_hub: bool
) -> dict[str, Any]:
    play = phase["play"]
    window = play["window"]
    t0, t1, seconds = window["start"], window["end"], window["seconds"]
    workers = phase["workers"]
    calls = stats.count_calls(workers, t0, t1)
    total = sum(calls.values())
    out: dict[str, Any] = {
        "window": {"start": t0, "end": t1, "seconds": round(seconds, 2)},
        "messages": {
            "station_requests": total,
            "per_second": _rate(total, seconds),
            "by_action": calls,
        },
        "server": _cpu_block(window, "server", total, nproc),
        "answer_ms": stats.answer_times(workers, t0, t1),
        "errors": stats.error_summary(stats.errors_in(workers, t0, t1)),
        "errors_whole_run": stats.error_summary(stats.errors_in(workers, 0, float("inf"))),
        "load_generator_cpu_cores": _workers_cpu(window),
        "machine_busy_percent": round(
            100 * window["machine_busy_seconds"] / window["machine_total_seconds"], 1
        )
        if window["machine_total_seconds"]
        else None,
        "ready": phase["ready"],
        "stations_requests_from_server": _merge_counts(w["server_calls"] for w in workers),
        "unexpected_frames": sum(w["unexpected"] for w in workers),
    }
    if with_hub:
        out["hub_cpu_cores"] = round(window["cpu_seconds"].get("hub", 0.0) / seconds, 3)
    if "database" in window["cpu_seconds"]:
        # PostgreSQL's own processes: work the SQLite engine does inside the server process
        out["database_cpu"] = _cpu_block(window, "database", total, nproc)
    if "delivery" in window["cpu_seconds"]:
        # csms's delivery process (part of the server's figures: its process tree; with
        # --nodes, the delivery worker, one of the server's processes)
        out["delivery_cpu"] = _cpu_block(window, "delivery", total, nproc)
    if "nodes" in window["cpu_seconds"]:
        # --nodes: the OCPP nodes together (part of the server's figures), and each
        out["nodes_cpu"] = _cpu_block(window, "nodes", total, nproc)
        names = sorted(
            (k for k in window["cpu_seconds"] if k.startswith("node") and k[4:].isdigit()),
            key=lambda k: int(k[4:]),
        )
        out["per_node_cpu"] = {k: _cpu_block(window, k, total, nproc) for k in names}
    return out


def _merge_counts(dicts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _target(name: str, target: str, value: Any, ok: bool | None, note: str = "") -> dict[str, Any]:
    return {"name": name, "target": target, "value": value, "pass": ok, "note": note}


def build(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    nproc = os.cpu_count() or 1
    n = args.stations
    p = raw["product"]
    play = p["play"]
    fig = _phase_figures(p, args, nproc, with_hub=True)
    t0, t1 = fig["window"]["start"], fig["window"]["end"]
    samples = play.get("samples", [])
    peak = p["memory_end"].get("VmHWM", 0)
    before = p["memory_before_connections"].get("VmRSS", 0)
    fig["server"].update(
        {
            "peak_rss_bytes": peak,
            "rss_end_bytes": p["memory_end"].get("VmRSS"),
            "rss_before_connections_bytes": before,
            "rss_per_station_bytes": round(peak / n) if n else None,
            "marginal_rss_per_station_bytes": round((peak - before) / n) if n else None,
            "exit_code": p.get("csms_exit_code"),
        }
    )
    if "server_side" in play:
        fig["server_side"] = play["server_side"]
    backlog_end = play.get("backlog_end", (-1, -1))
    backlogs = [s["backlog"] for s in samples if "backlog" in s]
    fig["push_backlog"] = {
        "end_total": backlog_end[0],
        "end_failing": backlog_end[1],
        "max_total": max(backlogs) if backlogs else None,
        "samples": [[s["t"], s.get("backlog"), s.get("failing")] for s in samples],
    }
    peers = p.get("peers") or []
    if len(peers) > 1:
        # --peers: per peer, the worst, and overall (every status and peer, pooled)
        sp = stats.status_to_patch_peers(
            p["workers"], {q["party_id"]: q["records"] for q in peers}, t0, t1, args.connectors
        )
        fig["status_to_patch_ms"] = sp["overall"]
        fig["status_to_patch_ms_per_peer"] = sp["per_peer"]
        worst = sp["worst_peer"]
        fig["status_to_patch_ms_worst_peer"] = {"peer": worst, **sp["per_peer"][worst]}
        fig["peers_pushes"] = {q["party_id"]: q["stats"].get("counts", {}) for q in peers}
    else:
        fig["status_to_patch_ms"] = stats.status_to_patch(
            p["workers"], p["hub"], t0, t1, args.connectors
        )
    fig["hub"] = p.get("hub_stats", {})
    fig["compliance_window"] = play.get("compliance", {})
    fig["compliance_whole_run"] = p.get("compliance", {})
    connected_end = samples[-1]["connected"] if samples else p["ready"]["connected"]
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "stations": n,
        "connectors": args.connectors,
        "compression": args.compression,
        "duration_s": args.duration,
        "workers": args.workers,
        "seed": args.seed,
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_fingerprint(),
        "database": {"engine": args.database, "postgresql_version": p.get("postgresql")},
        "csms_role": "ocpp" if args.nodes else args.role,
        # --nodes: N OCPP nodes and a delivery worker (1: one csms run, with --role)
        "nodes": args.nodes or 1,
        "delivery_worker": bool(args.nodes),
        "peers": args.peers,
        "server_config": p["config"],
        "setup": {
            "definitions": p["definitions"],
            "hub_registration_seconds": p["hub_registration_seconds"],
            "initial_locations_push_seconds": p["initial_locations_push_seconds"],
            "ramp_up_seconds": p["ramp_up_seconds"],
        },
        "stations_connected": connected_end,
        **fig,
    }
    if args.nodes:
        result["cluster"] = {
            "stations_per_node_ready": p.get("stations_per_node_ready"),
            "stations_per_node_end": p.get("stations_per_node_end"),
            "exit_codes": p.get("csms_exit_codes"),
            "delivery_worker_memory_end": p.get("memory_delivery_end"),
            "memory": "server peak RSS: the OCPP nodes' peaks summed (without the worker)",
        }
    if play.get("profile"):
        result["profile"] = play["profile"]
    if "transactions" in p:
        result["transactions"] = p["transactions"]
    if args.scenario == "storm":
        result["storm"] = _storm(p["workers"], play["storm_at"], n)
        result["storm"]["spread_s"] = args.storm_spread
    if args.scenario == "ramp":
        steps = play["steps"]
        result["ramp"] = {"steps": [_step_view(s) for s in steps]}
        good = [s for s in steps if s.get("sustained")]
        best = max(good, key=lambda s: s["messages_per_second"]) if good else None
        result["ramp"]["sustained_messages_per_second"] = (
            best["messages_per_second"] if best else None
        )
        result["ramp"]["sustained_k"] = best["k"] if best else None
        result["ramp"]["stopped_because"] = steps[-1].get("reasons") if steps else None
        result["ramp"]["generator_saturated"] = bool(steps and steps[-1].get("plateau"))
    if "echo" in raw:
        e = raw["echo"]
        efig = _phase_figures(e, args, nproc, with_hub=False)
        echo: dict[str, Any] = {
            "window": efig["window"],
            "messages": efig["messages"],
            "server": efig["server"],
            "answer_ms": efig["answer_ms"],
            "errors": efig["errors"],
            "load_generator_cpu_cores": efig["load_generator_cpu_cores"],
            "peak_rss_bytes": e["play"].get("memory_end", {}).get("VmHWM"),
            "exit_code": e.get("exit_code"),
        }
        ours, theirs = fig["server"]["us_per_message"], efig["server"]["us_per_message"]
        echo["cpu_per_message_ratio"] = round(ours / theirs, 2) if ours and theirs else None
        if "database_cpu" in fig and ours and theirs:
            both = ours + (fig["database_cpu"]["us_per_message"] or 0.0)
            echo["cpu_per_message_ratio_with_database"] = round(both / theirs, 2)
        if args.scenario == "ramp":
            esteps = e["play"]["steps"]
            echo["steps"] = [_step_view(s) for s in esteps]
            ratios = []
            for ps, es in zip(result["ramp"]["steps"], echo["steps"], strict=False):
                if ps["server_us_per_message"] and es["server_us_per_message"]:
                    ratios.append(
                        round(ps["server_us_per_message"] / es["server_us_per_message"], 2)
                    )
                else:
                    ratios.append(None)
            echo["ratio_per_step"] = ratios
            if result["ramp"]["sustained_k"] is not None:
                i = next(
                    i
                    for i, s in enumerate(result["ramp"]["steps"])
                    if s["k"] == result["ramp"]["sustained_k"]
                )
                if i < len(ratios) and ratios[i] is not None:
                    echo["cpu_per_message_ratio"] = ratios[i]
                    # on the same basis: the sustained step's ratio, with PostgreSQL's CPU
                    # added in the proportion it had to ours over the run (it is not
                    # measured per step); the run's own ratio with it was a different basis
                    if "database_cpu" in fig and ours and theirs:
                        both = ours + (fig["database_cpu"]["us_per_message"] or 0.0)
                        echo["cpu_per_message_ratio_with_database"] = round(
                            ratios[i] * both / ours, 2
                        )
        if args.scenario == "storm":
            echo["storm"] = _storm(e["workers"], e["play"]["storm_at"], n)
        if e["play"].get("profile"):
            echo["profile"] = e["play"]["profile"]
        result["echo"] = echo
    result["targets"] = targets(args, result)
    result["all_targets_met"] = all(t["pass"] for t in result["targets"] if t["pass"] is not None)
    return nan_to_none(result)


def _step_view(s: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "k",
        "messages_per_second",
        "count",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "errors",
        "server_cpu_cores",
        "server_us_per_message",
        "database_cpu_cores",
        "backlog",
        "failing",
        "sustained",
        "reasons",
        "generator_lateness_max_s",
    )
    out = {k: s[k] for k in keep if k in s}
    w = s["window"]
    out["load_generator_cpu_cores"] = _workers_cpu(w)
    if "hub" in w["cpu_seconds"]:
        out["hub_cpu_cores"] = round(w["cpu_seconds"]["hub"] / w["seconds"], 3)
    if "server_side" in s:
        out["server_answer_p99_at_most_s"] = s["server_side"]["answer_p99_at_most_s"]
    return out


def targets(args: argparse.Namespace, r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    ratio = r.get("echo", {}).get("cpu_per_message_ratio")
    ratio_target = _target(
        "CPU per message vs bare echo",
        f"<= {TARGET_ECHO_RATIO:g}x",
        ratio,
        (ratio <= TARGET_ECHO_RATIO) if ratio is not None else None,
    )
    if args.scenario == "day":
        note = "" if args.stations == 10_000 else "the issue sets these for N = 10,000"
        s = r["server"]
        out.append(
            _target(
                "server CPU (% of machine)",
                f"<= {TARGET_CPU_PERCENT:g} %",
                s["cpu_percent_of_machine"],
                s["cpu_percent_of_machine"] <= TARGET_CPU_PERCENT,
                note,
            )
        )
        out.append(
            _target(
                "peak RSS", "<= 1 GB", s["peak_rss_bytes"], s["peak_rss_bytes"] <= TARGET_PEAK_RSS
            )
        )
        m = s["marginal_rss_per_station_bytes"]
        out.append(
            _target(
                "RSS per station (peak - before connections) / N",
                "<= 50 KB",
                m,
                m is not None and m <= TARGET_RSS_PER_STATION,
            )
        )
        p99 = r["answer_ms"]["all"]["p99"]
        out.append(
            _target(
                "p99 answer",
                f"<= {TARGET_P99_ANSWER_MS:g} ms",
                p99,
                p99 is not None and p99 <= TARGET_P99_ANSWER_MS,
            )
        )
        sp = r["status_to_patch_ms"]
        # --peers: every peer must have it in time, so the worst peer's figure counts
        worst = r.get("status_to_patch_ms_worst_peer")
        missing = sp["missing"]
        notes = [f"{missing} never pushed"] if missing else []
        if worst:
            sp = worst
            notes.append(f"worst of {r['peers']} peers: {worst['peer']}")
        out.append(
            _target(
                "p99 StatusNotification -> acknowledged EVSE PATCH",
                f"<= {TARGET_P99_PATCH_MS:g} ms",
                sp["p99"],
                sp["p99"] is not None and sp["p99"] <= TARGET_P99_PATCH_MS and not missing,
                "; ".join(notes),
            )
        )
        errors = r["errors"]["total"]
        out.append(_target("errors in the window", "0", errors, errors == 0))
        rules = r.get("compliance_window", {})
        late = sum(v.get("late", 0) + v.get("failed_pushes", 0) for v in rules.values())
        out.append(
            _target(
                "MOBI.E push rules: late or failed pushes",
                "0",
                late,
                late == 0 and r["push_backlog"]["end_failing"] == 0,
                "in the window (the whole run is in the JSON)",
            )
        )
        out.append(ratio_target)
    elif args.scenario == "storm":
        st = r["storm"]
        t = st["drop_to_all_booted_s"]
        limit = max(TARGET_STORM_BOOT_S, args.storm_spread) + 1.0
        out.append(
            _target(
                "all booted after the drop",
                f"<= {limit:g} s (reconnections over {args.storm_spread:g} s)",
                t,
                t is not None and t <= limit,
            )
        )
        tx = r.get("transactions", {})
        bad = tx.get("failed", 0)
        dup = tx.get("duplicated", 0) + tx.get("anomalies", {}).get("second_stop", 0)
        out.append(_target("failed transactions", "0", bad, bad == 0))
        out.append(_target("duplicated transactions", "0", dup, dup == 0))
        p99 = r["answer_ms"]["all"]["p99"]
        out.append(
            _target(
                "p99 answer during the storm",
                f"<= {TARGET_STORM_P99_MS:g} ms",
                p99,
                p99 is not None and p99 <= TARGET_STORM_P99_MS,
            )
        )
        out.append(ratio_target)
    else:
        rate = r["ramp"]["sustained_messages_per_second"]
        out.append(
            _target(
                f"sustained rate with p99 <= {TARGET_RAMP_P99_MS:g} ms",
                f">= {TARGET_RAMP_RATE:g} msg/s",
                rate,
                rate is not None and rate >= TARGET_RAMP_RATE,
                "load generator saturated first" if r["ramp"]["generator_saturated"] else "",
            )
        )
        out.append(ratio_target)
    return out


# ---------------------------------------------------------------------- the table


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        text = f"{v:,.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:,.1f}"
    elif isinstance(v, int):
        text = f"{v:,}"
    else:
        text = str(v)
    return f"{text} {unit}".rstrip()


def _mb(v: Any) -> str:
    return "-" if v is None else f"{v / 1e6:,.1f} MB"


def table(r: dict[str, Any]) -> str:
    lines: list[str] = []

    def row(label: str, value: str) -> None:
        lines.append(f"  {label:<46} {value}")

    m = r["machine"]
    lines.append(
        f"csms benchmark: {r['scenario']}, {r['stations']:,} stations x {r['connectors']} "
        f"connectors, K = {r['compression']:g}, {r['date']}"
    )
    lines.append(
        f"machine: {m['nproc']} cores ({m['cpu_model']}), {m['ram_bytes'] / 1e9:.1f} GB RAM, "
        f"Python {m['python']}, websockets {m['versions'].get('websockets')}, "
        f"SQLite {m['sqlite']}"
    )
    db = r.get("database", {"engine": "sqlite"})
    lines.append(
        "database: "
        + (
            f"PostgreSQL {db.get('postgresql_version')} on this machine (fsync on)"
            if db["engine"] == "postgresql"
            else "SQLite, embedded"
        )
    )
    if r.get("delivery_worker"):
        c = r.get("cluster", {})
        lines.append(
            f"csms: {r['nodes']} OCPP nodes (csms run --role ocpp) and a delivery worker "
            f"(--role delivery); stations per node at the end: {c.get('stations_per_node_end')}"
        )
    if r.get("peers", 1) > 1:
        lines.append(
            f"OCPI peers: {r['peers']} ({', '.join(r.get('peers_pushes') or {})}), every "
            "Location and EVSE push to each"
        )
    lines.append(f"command: {r['command']}")
    lines.append("")
    lines.append("Setup")
    d = r["setup"]["definitions"]
    row(
        "stations + id tags defined through the API",
        f"{d['requests']:,} PUTs in {d['seconds']} s ({d['requests_per_second']} /s, "
        f"{d['concurrency']} at once)",
    )
    row(
        "initial Location PUTs acknowledged after",
        f"{r['setup']['initial_locations_push_seconds']} s",
    )
    rd = r["ready"]
    row(
        "connected, booted and configured",
        f"{rd['booted']:,}/{r['stations']:,} in {rd['seconds']} s"
        + (" (TIMED OUT)" if rd["timed_out"] else ""),
    )
    lines.append("")
    w = r["window"]
    lines.append(f"Measured window: {w['seconds']} s")
    row("stations connected", _fmt(r["stations_connected"]))
    msg = r["messages"]
    row(
        "OCPP requests from stations",
        f"{_fmt(msg['station_requests'])} ({_fmt(msg['per_second'])} /s)",
    )
    s = r["server"]
    row(
        "server CPU",
        f"{_fmt(s['cpu_cores'])} cores = {_fmt(s['cpu_percent_of_machine'])} % of machine "
        f"(user {_fmt(s['user_seconds'])} s, system {_fmt(s['system_seconds'])} s), "
        f"{_fmt(s['us_per_message'])} us/message",
    )
    d = r.get("nodes_cpu")
    if d:
        row(
            f"  of which the {r['nodes']} OCPP nodes",
            f"{_fmt(d['cpu_cores'])} cores, {_fmt(d['us_per_message'])} us/message ("
            + ", ".join(
                f"{k} {_fmt(v['cpu_cores'])}" for k, v in (r.get("per_node_cpu") or {}).items()
            )
            + ")",
        )
    d = r.get("delivery_cpu")
    if d:
        row(
            "  of which the delivery worker"
            if r.get("delivery_worker")
            else "  of which the delivery process",
            f"{_fmt(d['cpu_cores'])} cores, {_fmt(d['us_per_message'])} us/message",
        )
    d = r.get("database_cpu")
    if d:
        row(
            "database server CPU (PostgreSQL's processes)",
            f"{_fmt(d['cpu_cores'])} cores, {_fmt(d['us_per_message'])} us/message",
        )
    row(
        "server peak RSS",
        f"{_mb(s['peak_rss_bytes'])} ({_fmt(s['rss_per_station_bytes'])} B/station; "
        f"{_fmt(s['marginal_rss_per_station_bytes'])} B/station above the idle server)",
    )
    row(
        "load generator / hub CPU",
        f"{_fmt(r['load_generator_cpu_cores'])} / {_fmt(r.get('hub_cpu_cores'))} cores "
        f"(machine busy {_fmt(r['machine_busy_percent'])} %)",
    )
    lines.append("")
    lines.append(
        "Answer time (send -> CallResult), ms              count      p50      p99      max"
    )
    for action, a in r["answer_ms"].items():
        if a["count"]:
            lines.append(
                f"  {action:<44} {a['count']:>8,} {_fmt(a['p50']):>8} {_fmt(a['p99']):>8} "
                f"{_fmt(a['max']):>8}"
            )
    sp = r["status_to_patch_ms"]
    lines.append(
        f"  {'StatusNotification -> acked EVSE PATCH':<44} {sp['count']:>8,} {_fmt(sp['p50']):>8} "
        f"{_fmt(sp['p99']):>8} {_fmt(sp['max']):>8}"
    )
    row("  (superseded by a newer status / never pushed)", f"{sp['superseded']} / {sp['missing']}")
    for peer, q in (r.get("status_to_patch_ms_per_peer") or {}).items():
        worst = " (worst)" if peer == r["status_to_patch_ms_worst_peer"]["peer"] else ""
        lines.append(
            f"  {'  peer ' + peer + worst:<44} {q['count']:>8,} {_fmt(q['p50']):>8} "
            f"{_fmt(q['p99']):>8} {_fmt(q['max']):>8}"
        )
    pb = r["push_backlog"]
    row(
        "push backlog at end (failing) / max sampled",
        f"{pb['end_total']} ({pb['end_failing']}) / {_fmt(pb['max_total'])}",
    )
    hub = r.get("hub", {}).get("counts", {})
    if hub:
        row(
            "pushes acknowledged by the hub (whole run)",
            ", ".join(f"{k} {v:,}" for k, v in sorted(hub.items())),
        )
    for peer, counts in list((r.get("peers_pushes") or {}).items())[1:]:
        row(
            f"... by peer {peer} (EMSP)",
            ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())),
        )
    rules = r.get("compliance_window", {})
    if rules:
        row(
            "MOBI.E rules in the window: samples/late/failed",
            "; ".join(
                f"{k} {v['samples']:,}/{v['late']}/{v['failed_pushes']}"
                for k, v in sorted(rules.items())
            ),
        )
    rules = r.get("compliance_whole_run", {})
    if rules:
        row(
            "... whole run: samples/late/failed (largest s)",
            "; ".join(
                f"{k} {v['samples']:,}/{v['late']}/{v['failed_pushes']} "
                f"({v['largest_seconds']:.2f})"
                for k, v in sorted(rules.items())
            ),
        )
    e = r["errors"]
    row("errors in the window", f"{e['total']} {e['by_kind'] or ''}".strip())
    ew = r["errors_whole_run"]
    if ew["total"] != e["total"]:
        row("errors over the whole run", f"{ew['total']} {ew['by_kind']}")
    if "transactions" in r:
        t = r["transactions"]
        row(
            "transactions: started / stopped / running",
            f"{t['started']:,} / {t['stopped']:,} / {t['still_running']:,} "
            f"({t['database_rows']:,} rows)",
        )
        row(
            "transactions: failed / duplicated",
            f"{t['failed']} / {t['duplicated']} {t['anomalies'] or ''}",
        )
    if "storm" in r:
        st = r["storm"]
        lines.append("")
        lines.append(f"Reconnect storm (reconnections over {st['spread_s']:g} s)")
        row(
            "drop -> all booted / all queues delivered",
            f"{_fmt(st['drop_to_all_booted_s'])} s / {_fmt(st['drop_to_all_delivered_s'])} s",
        )
        rb = st["reconnect_to_booted_ms"]
        row(
            "reconnect due -> booted p50/p99/max",
            f"{_fmt(rb['p50'])} / {_fmt(rb['p99'])} / {_fmt(rb['max'])} ms",
        )
    if "ramp" in r:
        lines.append("")
        lines.append(
            "Ramp            K    msg/s   p50 ms   p99 ms   cores  us/msg  backlog  echo us/msg"
        )
        esteps = r.get("echo", {}).get("steps", [])
        for i, st in enumerate(r["ramp"]["steps"]):
            eu = esteps[i]["server_us_per_message"] if i < len(esteps) else None
            mark = "" if st.get("sustained") else "  x " + "; ".join(st.get("reasons") or [])
            lines.append(
                f"  {st['k']:>15g} {st['messages_per_second']:>8,.0f} {_fmt(st['p50_ms']):>8} "
                f"{_fmt(st['p99_ms']):>8} {st['server_cpu_cores']:>7.2f} "
                f"{_fmt(st['server_us_per_message']):>7} {_fmt(st.get('backlog')):>8} "
                f"{_fmt(eu):>12}{mark}"
            )
        row(
            "sustained",
            f"{_fmt(r['ramp']['sustained_messages_per_second'])} msg/s "
            f"at K = {_fmt(r['ramp']['sustained_k'])}",
        )
    if "echo" in r:
        ec = r["echo"]
        lines.append("")
        lines.append("Bare websockets echo, same stations and frames")
        row(
            "requests / CPU",
            f"{_fmt(ec['messages']['station_requests'])} in {ec['window']['seconds']} s, "
            f"{_fmt(ec['server']['cpu_cores'])} cores, "
            f"{_fmt(ec['server']['us_per_message'])} us/message",
        )
        row(
            "answer p50 / p99",
            f"{_fmt(ec['answer_ms']['all']['p50'])} / {_fmt(ec['answer_ms']['all']['p99'])} ms",
        )
        row("our CPU per message / echo's", f"{_fmt(ec['cpu_per_message_ratio'])} x")
        if ec.get("cpu_per_message_ratio_with_database") is not None:
            row(
                "... with PostgreSQL's CPU added to ours",
                f"{_fmt(ec['cpu_per_message_ratio_with_database'])} x",
            )
    prof = r.get("profile")
    if prof and prof.get("samples"):
        lines.append("")
        lines.append(
            f"Server profile (py-spy: {prof['busy_samples']:,} busy samples of "
            f"{prof['samples']:,}, % of busy; raw: {prof['raw']})"
        )
        for kind in ("self", "total"):
            lines.append(f"  top by {kind}:")
            for f in prof[kind][:12]:
                lines.append(f"    {f['percent']:5.1f} %  {f['function']}")
    lines.append("")
    lines.append("Targets (issue 7)")
    for t in r["targets"]:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[t["pass"]]
        value = t["value"]
        if isinstance(value, int) and value > 10_000_000:
            value = _mb(value)
        note = f"  ({t['note']})" if t["note"] else ""
        lines.append(f"  [{mark}] {t['name']:<52} {t['target']:<14} got {_fmt(value)}{note}")
    return "\n".join(lines)
