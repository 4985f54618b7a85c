"""The web interface's charts: a session's page (power and energy over time), a station's
status timeline, the dashboard's fleet availability.

The shells: bounded reads here, decisions in :mod:`csms.availability`, drawing in
:mod:`csms.web.charts`. Reads are cut in SQL (a session's meter values are aggregated
into at most ``charts.MAX_POINTS`` buckets by the database, whatever their number); the
fleet's figures are computed at most once a minute and kept.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import availability as av
from ..meter import ENERGY_IMPORT_REGISTER, POWER_IMPORT
from ..timeparse import from_db, to_db
from . import charts, fmt
from .ui import WebRoute, current_language

if TYPE_CHECKING:
    from .ui import WebBase

DAY_CHOICES = (1, 7, 30)
DEFAULT_DAYS = 7
MAX_STATUS_ROWS = 20_000  # a station's status reports read for one timeline
FLEET_CHUNK = 200  # stations read and computed together for the fleet's figures
FLEET_CHUNK_ROWS = 50_000  # status reports (and connection records) read per chunk
MAX_FLEET_CONNECTORS = 50_000
MAX_CONNECTORS = 64  # bands on one station's timeline
FLEET_TTL = timedelta(seconds=60)  # how long the fleet's figures are kept
FLEET_DAYS = 7
TABLE_ROWS = 24  # rows of a chart's table of figures

SERIES_COUNT_SQL = (
    "SELECT COUNT(*) AS n FROM meter_values WHERE transaction_id = ? AND measurand = ? "
    "AND phase IS NULL AND value IS NOT NULL"
)
# consecutive values in buckets of ? (by time order), each bucket one row: its first and
# last time, mean and largest value; the database walks the transaction's index once
SERIES_SQL = (
    "SELECT MIN(s.timestamp) AS t0, MAX(s.timestamp) AS t1, AVG(s.value) AS mean, "
    "MAX(s.value) AS hi FROM (SELECT m.timestamp, m.value, "
    "ROW_NUMBER() OVER (ORDER BY m.timestamp, m.id) AS rn FROM meter_values m "
    "WHERE m.transaction_id = ? AND m.measurand = ? AND m.phase IS NULL "
    "AND m.value IS NOT NULL) s GROUP BY (s.rn - 1) / ? ORDER BY t0"
)

# a station's status reports after a time (oldest first), and each connector's last one at
# or before it; both on the station's index of the status log
STATION_STATUS_SQL = (
    "SELECT connector_id, status, received_at FROM status_log "
    "WHERE station_id = ? AND received_at > ? ORDER BY id LIMIT ?"
)
STATION_BEFORE_SQL = (
    "SELECT connector_id, status, received_at FROM status_log WHERE id IN ("
    "SELECT MAX(id) FROM status_log WHERE station_id = ? AND received_at <= ? "
    "GROUP BY connector_id)"
)


def parse_days(text: str | None) -> int:
    """The timeline's period: 1, 7 or 30 days (7 for anything else)."""
    try:
        days = int((text or "").strip())
    except ValueError:
        return DEFAULT_DAYS
    return days if days in DAY_CHOICES else DEFAULT_DAYS


def parse_transaction_id(text: str) -> int | None:
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


class ChartPages:
    def __init__(self, ui: WebBase) -> None:
        self.ui = ui
        self.system = ui.system
        self.store = ui.system.store
        self._fleet: tuple[datetime, dict[str, Any]] | None = None
        self._fleet_lock = asyncio.Lock()

    def routes(self) -> list[WebRoute]:
        return [WebRoute("GET", "/sessions/{transaction_id}", self.session)]

    # ------------------------------------------------------------------ a session's page

    async def series(
        self, transaction_id: int, measurand: str, how: str
    ) -> list[tuple[datetime, float]]:
        """A transaction's values of ``measurand`` (no phase), at most ``MAX_POINTS``:
        bucket means at the buckets' middle (``how="mean"``), or the largest value at the
        bucket's end (``"last"``, for a register)."""
        row = await self.store.read_one(SERIES_COUNT_SQL, (transaction_id, measurand))
        n = int(row["n"]) if row else 0
        if not n:
            return []
        step = max(1, math.ceil(n / charts.MAX_POINTS))
        rows = await self.store.read(SERIES_SQL, (transaction_id, measurand, step))
        out: list[tuple[datetime, float]] = []
        for r in rows:
            t0, t1 = from_db(r["t0"]), from_db(r["t1"])
            if t0 is None or t1 is None:
                continue
            if how == "last":
                out.append((t1, float(r["hi"])))
            else:
                out.append((t0 + (t1 - t0) / 2, float(r["mean"])))
        return out

    async def session(self, request: web.Request) -> web.StreamResponse:
        raw = request.match_info["transaction_id"]
        tx_id = parse_transaction_id(raw)
        tx = await self.store.transactions.get(tx_id) if tx_id is not None else None
        if tx is None or tx_id is None:
            return self.ui.error(request, 404, "chart.no_session", id=raw[:40])
        station = await self.store.stations.get(tx["station_id"])
        location = ((station or {}).get("definition") or {}).get("location") or {}
        tz = location.get("time_zone") or self.ui.settings.time_zone
        lang = current_language()
        t = self.ui.t
        start = fmt.as_datetime(tx["start_time"])
        stop = fmt.as_datetime(tx["stop_time"]) if tx["stop_received_at"] else None
        meter_start = float(tx["meter_start"] or 0)
        energy = await self.series(tx_id, ENERGY_IMPORT_REGISTER, "last")
        energy_kwh = [(at, max(0.0, wh - meter_start) / 1000) for at, wh in energy]
        if start is not None and (not energy_kwh or start < energy_kwh[0][0]):
            energy_kwh.insert(0, (start, 0.0))
        if stop is not None and tx["meter_stop"] is not None and energy_kwh:
            if stop > energy_kwh[-1][0]:
                energy_kwh.append((stop, max(0.0, float(tx["meter_stop"]) - meter_start) / 1000))
        power = [(at, w / 1000) for at, w in await self.series(tx_id, POWER_IMPORT, "mean")]
        measured = bool(power)
        if not measured:
            power = charts.power_from_energy([(at, kwh * 1000) for at, kwh in energy_kwh])
        has_values = bool(energy) or measured
        x_label = t("chart.time_axis", zone=fmt.zone_label(tz, lang, start))
        first = min((p[0] for p in [*power, *energy_kwh]), default=start)
        last = max((p[0] for p in [*power, *energy_kwh]), default=stop or start)
        peak = max((v for _, v in power), default=None)
        total = energy_kwh[-1][1] if energy_kwh else None
        power_svg = charts.line_chart(
            power,
            chart_id="chart-power",
            title=t("chart.power_title", id=tx_id),
            desc=t(
                "chart.power_desc",
                n=len(power),
                peak="—" if peak is None else fmt.number(peak, lang, 2),
            ),
            y_label=t("chart.kw"),
            x_label=x_label,
            tz_name=tz,
            lang=lang,
            start=first,
            end=last,
        )
        energy_svg = charts.line_chart(
            energy_kwh,
            chart_id="chart-energy",
            title=t("chart.energy_title", id=tx_id),
            desc=t(
                "chart.energy_desc",
                n=len(energy_kwh),
                total="—" if total is None else fmt.number(total, lang, 2),
            ),
            y_label=t("chart.kwh"),
            x_label=x_label,
            tz_name=tz,
            lang=lang,
            start=first,
            end=last,
        )
        return self.ui.render(
            request,
            "session.html",
            {
                "title": t("chart.session_title", id=tx_id),
                "tx": tx,
                "tz": tz,
                "active": tx["stop_received_at"] is None,
                "has_values": has_values,
                "measured": measured,
                "power_svg": power_svg,
                "energy_svg": energy_svg,
                "power_rows": charts.downsample(power, TABLE_ROWS, "mean"),
                "energy_rows": charts.downsample(energy_kwh, TABLE_ROWS, "last"),
                "peak": peak,
                "total": total,
                "points": {"power": len(power), "energy": len(energy_kwh)},
            },
        )

    # ------------------------------------------------------------------ a station's timeline

    async def _status_facts(
        self, station_id: str, start: datetime
    ) -> tuple[dict[int, list[tuple[datetime, str]]], datetime | None]:
        since = to_db(start)
        before = await self.store.read(STATION_BEFORE_SQL, (station_id, since))
        rows = await self.store.read(STATION_STATUS_SQL, (station_id, since, MAX_STATUS_ROWS + 1))
        cut_at = None
        if len(rows) > MAX_STATUS_ROWS:
            rows = rows[:MAX_STATUS_ROWS]
            cut_at = from_db(rows[-1]["received_at"])
        out: dict[int, list[tuple[datetime, str]]] = {}
        for r in [*before, *rows]:
            at = from_db(r["received_at"])
            if at is not None:
                out.setdefault(int(r["connector_id"]), []).append((at, r["status"]))
        return out, cut_at

    async def station_timeline(
        self, request: web.Request, row: dict[str, Any], tz: str, connected: bool
    ) -> dict[str, Any]:
        """The status timeline of a station's connectors over the chosen period."""
        sid = row["id"]
        days = parse_days(request.query.get("days"))
        now = self.ui.now()
        start = now - timedelta(days=days)
        statuses, status_cut = await self._status_facts(sid, start)
        connections, conn_cut = await self.store.connections.of_station(sid, start)
        known_until = status_cut
        if conn_cut and connections:
            known_until = min(known_until or now, connections[-1][0])
        definition = row.get("definition") or {}
        connector_ids = {c for c in statuses if c > 0}
        for e in definition.get("evses") or []:
            cid = e.get("connector_id") if isinstance(e, dict) else None
            if isinstance(cid, int) and cid > 0 and not e.get("removed_at"):
                connector_ids.add(cid)
        last_seen = fmt.as_datetime(row.get("last_seen_at"))
        t = self.ui.t
        lang = current_language()
        figures = []
        bands = []
        for cid in sorted(connector_ids)[:MAX_CONNECTORS]:
            segments = av.timeline(
                start,
                now,
                statuses.get(cid, []),
                connections,
                known_until=known_until,
                connected_now=connected,
                last_seen=last_seen,
            )
            a = av.availability(segments, start, now)
            label = t("chart.connector", id=cid)
            bands.append((label, segments, a.percent))
            figures.append(
                {
                    "connector": cid,
                    "label": label,
                    "percent": a.percent,
                    "seconds": {s: a.seconds.get(s, 0.0) for s in av.STATES},
                }
            )
        svg = charts.timeline_chart(
            bands,
            start,
            now,
            chart_id="chart-timeline",
            title=t("chart.timeline_title", station=sid, days=days),
            desc=t("chart.timeline_desc", days=days),
            x_label=t("chart.time_axis", zone=fmt.zone_label(tz, lang, now)),
            tz_name=tz,
            lang=lang,
            state_labels=self.state_labels(),
        )
        return {
            "days": days,
            "choices": DAY_CHOICES,
            "svg": svg,
            "figures": figures,
            "states": av.STATES,
            "known_until": known_until,
            "tz": tz,
        }

    def state_labels(self) -> dict[str, str]:
        return {s: self.ui.t(f"chart.state.{s}") for s in av.STATES}

    # ------------------------------------------------------------------ the fleet

    async def fleet(self) -> dict[str, Any]:
        """The dashboard's fleet availability (kept ``FLEET_TTL``, by the injected clock)."""
        async with self._fleet_lock:
            now = self.ui.now()
            cached = self._fleet
            if cached is not None and timedelta(0) <= now - cached[0] < FLEET_TTL:
                facts = cached[1]
            else:
                facts = await self._fleet_facts()
                self._fleet = (now, facts)
        lang = current_language()
        t = self.ui.t
        bars = [
            (b_end.astimezone(fmt.zone(facts["tz"])).strftime("%m-%d"), a.percent)
            for _, b_end, a in facts["days"]
        ]
        svg = charts.bar_chart(
            bars,
            chart_id="chart-fleet",
            title=t("chart.fleet_title"),
            desc=t("chart.fleet_desc", days=FLEET_DAYS),
            y_label=t("chart.availability"),
            lang=lang,
        )
        return {**facts, "svg": svg, "bars": bars}

    async def _fleet_facts(self) -> dict[str, Any]:
        """The fleet's figures, read and computed a chunk of stations at a time (memory
        and each read bounded; one busy station cuts only its own chunk's data)."""
        now = self.ui.now()
        start = now - timedelta(days=FLEET_DAYS)
        registry = self.system.registry
        connectors = await self.store.read(
            "SELECT c.station_id, c.connector_id, c.status, s.last_seen_at "
            "FROM connector_status c JOIN stations s ON s.id = c.station_id "
            "WHERE c.connector_id > 0 AND s.retired_at IS NULL "
            "ORDER BY c.station_id, c.connector_id LIMIT ?",
            (MAX_FLEET_CONNECTORS,),
        )
        now_counts = {s: 0 for s in av.STATES}
        by_station: dict[str, list[dict[str, Any]]] = {}
        for c in connectors:
            state = av.state_now(c["status"], registry.is_connected(c["station_id"]))
            now_counts[state] += 1
            by_station.setdefault(c["station_id"], []).append(c)
        up_now = now_counts[av.AVAILABLE] + now_counts[av.OCCUPIED]
        known_now = sum(now_counts.values()) - now_counts[av.UNKNOWN]
        width = timedelta(days=1)
        totals = [av.Availability(0.0, {}) for _ in range(FLEET_DAYS)]
        week = av.Availability(0.0, {})
        cut_anywhere = False
        station_ids = sorted(by_station)
        for i in range(0, len(station_ids), FLEET_CHUNK):
            chunk = station_ids[i : i + FLEET_CHUNK]
            statuses, status_cut = await self._chunk_statuses(chunk, start)
            connections, conn_cut = await self.store.connections.of_stations(
                chunk, start, FLEET_CHUNK_ROWS
            )
            known_until = status_cut
            if conn_cut is not None:
                known_until = min(known_until or now, conn_cut)
            cut_anywhere = cut_anywhere or known_until is not None
            timelines = [
                av.timeline(
                    start,
                    now,
                    statuses.get((sid, int(c["connector_id"])), []),
                    connections.get(sid, []),
                    known_until=known_until,
                    connected_now=registry.is_connected(sid),
                    last_seen=fmt.as_datetime(c["last_seen_at"]),
                )
                for sid in chunk
                for c in by_station[sid]
            ]
            days = av.buckets(timelines, now, width, FLEET_DAYS)
            totals = [t + a for t, (_, _, a) in zip(totals, days, strict=True)]
            week = week + av.fleet(timelines, start, now)
            await asyncio.sleep(0)  # (let the station traffic through between chunks)
        days = [
            (now - (FLEET_DAYS - k) * width, now - (FLEET_DAYS - k - 1) * width, totals[k])
            for k in range(FLEET_DAYS)
        ]
        return {
            "computed_at": now,
            "tz": self.ui.settings.time_zone,
            "connectors": len(connectors),
            "now_counts": now_counts,
            "up_now": up_now,
            "now_percent": 100.0 * up_now / known_now if known_now else None,
            "day_percent": totals[-1].percent,
            "week_percent": week.percent,
            "days": days,
            "cut": cut_anywhere,
        }

    async def _chunk_statuses(
        self, station_ids: list[str], start: datetime
    ) -> tuple[dict[tuple[str, int], list[tuple[datetime, str]]], datetime | None]:
        """These stations' status reports after ``start``, each connector's led by its last
        one at or before it; and the time where ``FLEET_CHUNK_ROWS`` cut them (else None)."""
        since = to_db(start)
        marks = ",".join("?" * len(station_ids))
        before = await self.store.read(
            "SELECT station_id, connector_id, status, received_at FROM status_log WHERE id IN ("
            f"SELECT MAX(id) FROM status_log WHERE station_id IN ({marks}) "
            "AND received_at <= ? GROUP BY station_id, connector_id)",
            [*station_ids, since],
        )
        rows = await self.store.read(
            "SELECT station_id, connector_id, status, received_at FROM status_log "
            f"WHERE station_id IN ({marks}) AND received_at > ? ORDER BY id LIMIT ?",
            [*station_ids, since, FLEET_CHUNK_ROWS + 1],
        )
        cut_at = None
        if len(rows) > FLEET_CHUNK_ROWS:
            rows = rows[:FLEET_CHUNK_ROWS]
            cut_at = from_db(rows[-1]["received_at"])
        out: dict[tuple[str, int], list[tuple[datetime, str]]] = {}
        for r in [*before, *rows]:
            at = from_db(r["received_at"])
            if at is not None:
                out.setdefault((r["station_id"], int(r["connector_id"])), []).append(
                    (at, r["status"])
                )
        return out, cut_at
