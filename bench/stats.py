"""Turning raw records into figures: percentiles, answer times per action, StatusNotification
to acknowledged EVSE PATCH, transaction consistency, Prometheus histogram deltas."""

from __future__ import annotations

import bisect
import calendar
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from . import model
from .loadgen import HIST_BUCKETS, hist_upper


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values: Iterable[float]) -> dict[str, Any]:
    """count, p50, p99, max of durations in seconds, given in milliseconds."""
    s = sorted(values)
    if not s:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {
        "count": len(s),
        "p50": round(percentile(s, 50) * 1000, 3),
        "p99": round(percentile(s, 99) * 1000, 3),
        "max": round(s[-1] * 1000, 3),
    }


# ---------------------------------------------------------------------- answer times


def answer_times(workers: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Per action and overall, for requests sent in [t0, t1)."""
    per: dict[str, list[float]] = defaultdict(list)
    for w in workers:
        for action, sent in w["sent"].items():
            rtt = w["rtt"][action]
            bucket = per[action]
            for t, r in zip(sent, rtt, strict=True):
                if t0 <= t < t1:
                    bucket.append(r)
    out = {a: summary_ms(v) for a, v in sorted(per.items()) if v}
    out["all"] = summary_ms(v for values in per.values() for v in values)
    return out


def count_calls(workers: list[dict[str, Any]], t0: float, t1: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in workers:
        for action, sent in w["sent"].items():
            n = sum(1 for t in sent if t0 <= t < t1)
            if n:
                counts[action] = counts.get(action, 0) + n
    return counts


def errors_in(workers: list[dict[str, Any]], t0: float, t1: float) -> list[tuple[Any, ...]]:
    return sorted(e for w in workers for e in w["errors"] if t0 <= e[0] < t1)


def error_summary(errors: list[tuple[Any, ...]]) -> dict[str, Any]:
    by_kind: dict[str, int] = defaultdict(int)
    for _, action, kind, _ in errors:
        by_kind[f"{action}:{kind}"] += 1
    return {
        "total": len(errors),
        "by_kind": dict(by_kind),
        "first": [
            {"time": e[0], "action": e[1], "kind": e[2], "detail": e[3]} for e in errors[:10]
        ],
    }


def hist_merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the workers' live snapshots: count, p50/p99 (bucket upper edges), max, errors."""
    hist = [0] * HIST_BUCKETS
    count = errors = 0
    largest = late = 0.0
    for s in snaps:
        for k, n in s["hist"].items():
            hist[int(k)] += n
        count += s["count"]
        errors += s["errors"]
        largest = max(largest, s["max"])
        late = max(late, s.get("late", 0.0))

    def q(p: float) -> float | None:
        if not count:
            return None
        need = math.ceil(p / 100.0 * count)
        run = 0
        for i, n in enumerate(hist):
            run += n
            if run >= need:
                return min(hist_upper(i), largest)
        return largest

    p50, p99 = q(50), q(99)
    return {
        "count": count,
        "errors": errors,
        "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
        "max_ms": round(largest * 1000, 3),
        "generator_lateness_max_s": round(late, 3),
    }


# ---------------------------------------------------------------------- status -> PATCH

_LU_CACHE: dict[str, int] = {}


def _lu_epoch(text: str) -> int:
    v = _LU_CACHE.get(text)
    if v is None:
        try:
            v = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            v = 0
        _LU_CACHE[text] = v
    return v


def status_to_patch(
    workers: list[dict[str, Any]],
    hub: dict[str, Any],
    t0: float,
    t1: float,
    connectors: int,
) -> dict[str, Any]:
    """The latencies of :func:`status_latencies`, summarised (count, p50, p99, max in ms)."""
    latencies, out = status_latencies(workers, hub, t0, t1, connectors)
    return summary_ms(latencies) | out


def status_to_patch_peers(
    workers: list[dict[str, Any]],
    hubs: dict[str, dict[str, Any]],
    t0: float,
    t1: float,
    connectors: int,
) -> dict[str, Any]:
    """``--peers``: :func:`status_to_patch` for each peer (by party id), the worst peer (the
    highest p99, then the most never pushed) and overall: every (StatusNotification, peer)
    pair, pooled (its counts are summed over the peers)."""
    per_peer: dict[str, dict[str, Any]] = {}
    pooled: list[float] = []
    totals = {"status_notifications": 0, "superseded": 0, "missing": 0}
    examples: list[dict[str, Any]] = []
    for name, hub in hubs.items():
        latencies, out = status_latencies(workers, hub, t0, t1, connectors)
        pooled.extend(latencies)
        per_peer[name] = summary_ms(latencies) | out
        for key in totals:
            totals[key] += out[key]
        examples.extend(dict(e, peer=name) for e in out["missing_examples"])
    worst = max(
        per_peer, key=lambda n: (per_peer[n]["p99"] or 0.0, per_peer[n]["missing"]), default=None
    )
    overall = summary_ms(pooled) | totals | {"missing_examples": examples[:5]}
    return {"overall": overall, "per_peer": per_peer, "worst_peer": worst}


def status_latencies(
    workers: list[dict[str, Any]],
    hub: dict[str, Any],
    t0: float,
    t1: float,
    connectors: int,
) -> tuple[list[float], dict[str, Any]]:
    """From each StatusNotification sent in [t0, t1) to the hub's acknowledgement of the EVSE
    update that carries it.

    The update that carries a StatusNotification is the first one the hub received after it
    was sent whose ``last_updated`` (the server's arrival time, to the second) is not older
    than its send time, and whose status is the one it reported (connector 0: any status, it
    touches every EVSE, and the latency is that of the last EVSE). When the station reported
    another status on the same connector before such an update arrived, the update carrying
    the newer state counts (pushes carry state, not history): that is "superseded". Nothing
    at all after it is "missing".
    """
    updates: dict[tuple[int, int], tuple[list[float], list[int], list[int]]] = {}
    order = sorted(range(len(hub["t"])), key=hub["t"].__getitem__)
    for i in order:
        key = (hub["station"][i], hub["conn"][i])
        ts, st, lu = updates.setdefault(key, ([], [], []))
        ts.append(hub["t"][i])
        st.append(hub["status"][i])
        lu.append(_lu_epoch(hub["last_updated"][i]))
    sns: dict[tuple[int, int], list[float]] = defaultdict(list)
    records = []
    for w in workers:
        t_arr, st_arr, c_arr, s_arr = w["sn"]
        for t, station, conn, status in zip(t_arr, st_arr, c_arr, s_arr, strict=True):
            targets = [conn] if conn else list(range(1, connectors + 1))
            for c in targets:
                sns[(station, c)].append(t)
            if t0 <= t < t1:
                records.append((t, station, conn, status))
    for v in sns.values():
        v.sort()
    ocpi_index = {s: i for i, s in enumerate(model.OCPI_STATUSES)}
    latencies: list[float] = []
    superseded = missing = 0
    missing_examples: list[dict[str, Any]] = []
    for t, station, conn, status in records:
        floor_t = int(t)
        want = None
        if conn:
            want = ocpi_index[model.OCPP_TO_OCPI[model.OCPP_STATUSES[status]]]
        worst = 0.0
        found_all = True
        was_superseded = False
        for c in [conn] if conn else range(1, connectors + 1):
            entry = updates.get((station, c))
            if entry is None:
                found_all = False
                break
            ts, st, lu = entry
            start = bisect.bisect_left(ts, t)
            hit = None
            any_hit = None
            for j in range(start, len(ts)):
                if lu[j] < floor_t:
                    continue
                if any_hit is None:
                    any_hit = j
                if want is None or st[j] == want:
                    hit = j
                    break
            if hit is None and any_hit is not None:
                # was a newer status reported on this EVSE before that update?
                later = sns[(station, c)]
                k = bisect.bisect_right(later, t)
                if k < len(later) and later[k] <= ts[any_hit]:
                    hit = any_hit
                    was_superseded = True
            if hit is None:
                found_all = False
                break
            worst = max(worst, ts[hit] - t)
        if not found_all:
            missing += 1
            if len(missing_examples) < 5:
                missing_examples.append(
                    {
                        "sent": t,
                        "station": model.station_id(station),
                        "connector": conn,
                        "status": model.OCPP_STATUSES[status],
                    }
                )
            continue
        if was_superseded:
            superseded += 1
        latencies.append(worst)
    return latencies, {
        "status_notifications": len(records),
        "superseded": superseded,
        "missing": missing,
        "missing_examples": missing_examples,
    }


# ---------------------------------------------------------------------- transactions


def transaction_check(
    workers: list[dict[str, Any]],
    db_rows: list[dict[str, Any]],
    anomalies: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every transaction the stations started exists once; every one they stopped is stopped
    once with their meter reading; nothing else is there."""
    by_id = {r["id"]: r for r in db_rows}
    seen_ids: set[int] = set()
    failed: list[str] = []
    started = stopped = running = 0
    for w in workers:
        for idx, conn, tx, meter_start, _start_ts, meter_stop, was_stopped in w["txs"]:
            started += 1
            sid = model.station_id(idx)
            if tx is None:
                failed.append(f"{sid}/{conn}: StartTransaction never answered")
                continue
            row = by_id.get(tx)
            if row is None:
                failed.append(f"{sid}/{conn}: transaction {tx} not in the database")
                continue
            if tx in seen_ids:
                failed.append(f"{sid}/{conn}: transaction id {tx} given twice")
            seen_ids.add(tx)
            if row["station_id"] != sid or row["connector_id"] != conn:
                failed.append(f"{sid}/{conn}: transaction {tx} belongs to another connector")
            if row["meter_start_wh"] != meter_start:
                failed.append(f"{sid}/{conn}: transaction {tx} meter_start differs")
            if was_stopped:
                stopped += 1
                if row["active"] or row["meter_stop_wh"] != meter_stop:
                    failed.append(f"{sid}/{conn}: transaction {tx} not stopped as sent")
            else:
                running += 1
                if not row["active"]:
                    failed.append(f"{sid}/{conn}: transaction {tx} stopped but never sent a stop")
    extra = [r["id"] for r in db_rows if r["id"] not in seen_ids]
    keys: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in db_rows:
        keys[(r["station_id"], r["connector_id"], r["meter_start_wh"], r["start_time"])] += 1
    duplicates = sum(n - 1 for n in keys.values() if n > 1) + len(extra)
    kinds: dict[str, int] = defaultdict(int)
    for a in anomalies:
        kinds[a["kind"]] += 1
    return {
        "started": started,
        "stopped": stopped,
        "still_running": running,
        "database_rows": len(db_rows),
        "failed": len(failed),
        "failed_examples": failed[:10],
        "duplicated": duplicates,
        "unknown_rows": extra[:10],
        "anomalies": dict(kinds),
    }


def compliance_delta(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The push-rule measurements made between two readings of the compliance report."""
    out = {}
    for rule, a in after.items():
        if not isinstance(a, dict):
            continue
        b = before.get(rule, {}) if isinstance(before.get(rule), dict) else {}
        out[rule] = {k: a.get(k, 0) - b.get(k, 0) for k in ("samples", "late", "failed_pushes")} | {
            "limit_seconds": a.get("limit_seconds")
        }
    return out


# ---------------------------------------------------------------------- Prometheus


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        if "{" in name_labels:
            name, _, rest = name_labels.partition("{")
            labels = []
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, _, v = part.partition("=")
                    labels.append((k.strip(), v.strip().strip('"')))
            key = (name, tuple(sorted(labels)))
        else:
            key = (name_labels, ())
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def merge_metrics(texts: Iterable[str]) -> str:
    """Several processes' /metrics as one (each series summed over them), in the text form
    :func:`parse_metrics` reads."""
    sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
    for text in texts:
        for key, value in parse_metrics(text).items():
            sums[key] += value
    lines = []
    for (name, labels), value in sums.items():
        inner = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.append(f"{name}{{{inner}}} {value!r}" if labels else f"{name} {value!r}")
    return "\n".join(lines) + "\n"


def server_side(before: str, after: str, seconds: float) -> dict[str, Any]:
    """What the server itself measured over the window: its answer-time histogram (p99 as a
    bucket bound), frames by action, commits and write jobs."""
    a, b = parse_metrics(before), parse_metrics(after)

    def delta(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return b.get(key, 0.0) - a.get(key, 0.0)

    buckets: dict[float, float] = defaultdict(float)
    frames: dict[str, float] = {}
    for key in b:
        name, labels = key
        d = dict(labels)
        if name == "csms_ocpp_answer_seconds_bucket":
            le = math.inf if d["le"] == "+Inf" else float(d["le"])
            buckets[le] += delta(key)
        elif name == "csms_ocpp_frames_received_total":
            n = delta(key)
            if n:
                frames[d["action"]] = n
    total = buckets.get(math.inf, 0.0)
    p99_bound = None
    within_20ms = None
    if total:
        for le in sorted(buckets):
            if buckets[le] >= 0.99 * total:
                p99_bound = le
                break
        within_20ms = round(buckets.get(0.02, 0.0) / total, 5)
    commits = delta(("csms_store_commits", ()))
    jobs = delta(("csms_store_write_jobs", ()))
    return {
        "answers": int(total),
        "answer_p99_at_most_s": p99_bound,
        "answered_within_20ms": within_20ms,
        "frames_received": frames,
        "commits_per_second": round(commits / seconds, 2) if seconds else None,
        "write_jobs_per_commit": round(jobs / commits, 2) if commits else None,
    }
