"""Transactions and their meter values: StartTransaction, StopTransaction, MeterValues, and
the reads of the API, the web interface and the extensions' port.

A transaction message is stored in one job with what it says about other aggregates (its
anomalies), so one commit holds it all and the station is answered only after it. Nothing
is refused: an unknown transaction, a replay, a second stop or values beyond the cap are
stored, flagged and counted (see :mod:`csms.repositories.anomalies`). Every transaction row
read here has ``flags`` decoded (a list).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..events import Event
from ..meter import Sample
from ..outbox import with_events
from ..timeparse import ParsedTime, to_db
from . import anomalies
from .rows import count, json_or

# sampled values, at a time
Samples = list[tuple[ParsedTime, list[Sample]]]


@dataclass(frozen=True, slots=True)
class StartResult:
    transaction_id: int
    created: bool  # False when the same start was replayed


@dataclass(frozen=True, slots=True)
class StopResult:
    transaction_id: int | None  # None when the transaction is unknown to us
    connector_id: int | None
    outcome: str  # stopped | replayed | unknown_transaction
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MeterResult:
    transaction_id: int | None  # ours, when known
    unknown_transaction: bool


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["flags"] = json_or(r["flags"], [])
    return rows


class TransactionRepository:
    # sampled values kept per transaction (ocpp.max_meter_values_per_transaction, set by the
    # application); the excess is counted in one meter_values_capped anomaly and flagged
    max_meter_values_per_transaction: int = 100_000

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ writes

    async def start(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        id_tag_status: str,
        meter_start: int,
        start: ParsedTime,
        reservation_id: int | None,
        flags: list[str],
        at: datetime,
        tag_owner: str | None = None,
        repaired: dict[str, Any] | None = None,
        events: Callable[[StartResult], Iterable[Event]] | None = None,
    ) -> StartResult:
        """Store a StartTransaction; the same start replayed gets the same id. ``repaired``
        (what had to be clamped or replaced to store it) is kept as an anomaly."""
        raw_time = start.original or to_db(start.value)
        key = f"{station_id}|{connector_id}|{id_tag.upper()}|{meter_start}|{raw_time}"

        async def job(db: Tx) -> StartResult:
            rows = await db.execute_fetchall(
                "SELECT id FROM transactions WHERE start_key = ?", (key,)
            )
            if rows:
                return StartResult(int(rows[0][0]), created=False)
            cur = await db.execute(
                """INSERT INTO transactions (station_id, connector_id, id_tag, id_tag_status,
                       reservation_id, meter_start, start_time, start_time_raw,
                       start_received_at, start_key, flags, updated_at, tag_owner)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (
                    station_id,
                    connector_id,
                    id_tag,
                    id_tag_status,
                    reservation_id,
                    meter_start,
                    to_db(start.value),
                    start.original,
                    to_db(at),
                    key,
                    json.dumps(flags),
                    to_db(at),
                    tag_owner,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            if repaired is not None:
                await anomalies.record_repaired(db, station_id, int(row[0]), repaired, to_db(at))
            return StartResult(int(row[0]), created=True)

        return await self.db.write(with_events(job, events))

    async def stop(
        self,
        station_id: str,
        transaction_id: int,
        meter_stop: int,
        stop: ParsedTime,
        reason: str | None,
        id_tag: str | None,
        samples: Samples,
        payload: dict[str, Any],
        at: datetime,
        repaired: dict[str, Any] | None = None,
        events: Callable[[StopResult], Iterable[Event]] | None = None,
    ) -> StopResult:
        """Store a StopTransaction and its transactionData. Never refuses: a stop for a
        transaction we do not know is kept as an anomaly, a replayed stop changes nothing.
        ``repaired`` (what had to be clamped or replaced to store it) is kept as an anomaly
        and flags the transaction."""
        t_at = to_db(at)
        cap = self.max_meter_values_per_transaction

        async def job(db: Tx) -> StopResult:
            rows = await db.execute_fetchall(
                "SELECT connector_id, meter_start, start_time, stop_received_at, meter_stop, "
                "flags FROM transactions WHERE id = ? AND station_id = ?",
                (transaction_id, station_id),
            )
            if repaired is not None:
                known = transaction_id if rows else None
                await anomalies.record_repaired(db, station_id, known, repaired, t_at)
            if not rows:
                await anomalies.record(
                    db, station_id, "stop_unknown_transaction", transaction_id, payload, t_at
                )
                await _insert_samples(
                    db, station_id, 0, None, transaction_id, "StopTransaction", samples, t_at
                )
                return StopResult(None, None, "unknown_transaction", ("unknown_transaction",))
            connector_id, meter_start, start_time, stopped_at, old_stop, flags_text = rows[0]
            if stopped_at is not None:
                if "manual_close" in json.loads(flags_text):
                    # the station's own stop of one an admin closed (csms.stuck): kept,
                    # never a second stop (no event, no second CDR)
                    await anomalies.record(
                        db, station_id, "stop_after_manual_close", transaction_id, payload, t_at
                    )
                elif old_stop != meter_stop:
                    await anomalies.record(
                        db, station_id, "second_stop", transaction_id, payload, t_at
                    )
                return StopResult(transaction_id, connector_id, "replayed")
            flags = list(json.loads(flags_text))
            if repaired is not None:
                flags.extend(f for f in repaired.get("flags", ()) if f not in flags)
            if meter_stop < meter_start:
                flags.append("meter_backwards")
            if to_db(stop.value) < start_time:
                flags.append("stop_before_start")
            await db.execute(
                """UPDATE transactions SET meter_stop = ?, stop_time = ?, stop_time_raw = ?,
                       stop_reason = ?, stop_id_tag = ?, stop_received_at = ?, flags = ?,
                       updated_at = ?
                   WHERE id = ?""",
                (
                    meter_stop,
                    to_db(stop.value),
                    stop.original,
                    reason,
                    id_tag,
                    t_at,
                    json.dumps(flags),
                    t_at,
                    transaction_id,
                ),
            )
            samples_kept = await _cap_samples(db, station_id, transaction_id, samples, cap, t_at)
            await _insert_samples(
                db,
                station_id,
                connector_id,
                transaction_id,
                None,
                "StopTransaction",
                samples_kept,
                t_at,
            )
            if samples_kept is not samples:  # capped: flagged by _cap_samples
                flags = await _flags_of(db, transaction_id)
            return StopResult(transaction_id, connector_id, "stopped", tuple(flags))

        return await self.db.write(with_events(job, events))

    async def add_meter_values(
        self,
        station_id: str,
        connector_id: int,
        reported_transaction_id: int | None,
        samples: Samples,
        at: datetime,
        repaired: dict[str, Any] | None = None,
        events: Callable[[MeterResult], Iterable[Event]] | None = None,
    ) -> MeterResult:
        """Store a MeterValues; ``repaired`` (what had to be clamped or replaced to store
        it) is kept as an anomaly."""
        t_at = to_db(at)
        cap = self.max_meter_values_per_transaction

        async def job(db: Tx) -> MeterResult:
            ours: int | None = None
            unknown = False
            if reported_transaction_id is not None:
                rows = await db.execute_fetchall(
                    "SELECT id FROM transactions WHERE id = ? AND station_id = ?",
                    (reported_transaction_id, station_id),
                )
                if rows:
                    ours = reported_transaction_id
                    await db.execute(
                        "UPDATE transactions SET updated_at = ? WHERE id = ?", (t_at, ours)
                    )
                else:
                    unknown = True
                    await anomalies.record(
                        db,
                        station_id,
                        "meter_values_unknown_transaction",
                        reported_transaction_id,
                        {"connectorId": connector_id},
                        t_at,
                    )
            if ours is not None and await _replayed(db, ours, samples):
                # sent again (its answer was lost: a node died, a link broke): stored once
                return MeterResult(ours, unknown)
            kept = samples
            if ours is not None:
                kept = await _cap_samples(db, station_id, ours, samples, cap, t_at)
            await _insert_samples(
                db,
                station_id,
                connector_id,
                ours,
                reported_transaction_id if unknown else None,
                "MeterValues",
                kept,
                t_at,
            )
            if repaired is not None:
                await anomalies.record_repaired(db, station_id, ours, repaired, t_at)
            return MeterResult(ours, unknown)

        return await self.db.write(with_events(job, events))

    # ------------------------------------------------------------------ reads

    async def get(
        self, transaction_id: int, count_meter_values: bool = False
    ) -> dict[str, Any] | None:
        """One transaction; with ``count_meter_values``, also ``meter_values_count``."""
        if not -(1 << 63) <= transaction_id < (1 << 63):
            return None  # no database holds it: no such transaction
        row = await self.db.read_one("SELECT * FROM transactions WHERE id = ?", (transaction_id,))
        if row is not None:
            _decoded([row])
            if count_meter_values:
                n = await self.db.read_one(
                    "SELECT COUNT(*) AS n FROM meter_values WHERE transaction_id = ?",
                    (transaction_id,),
                )
                row["meter_values_count"] = count(n)
        return row

    async def by_ids(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """The transactions with these ids (those that exist)."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        return _decoded(
            await self.db.read(
                "SELECT * FROM transactions WHERE id IN "
                f"({self.db.dialect.json_values('?', integer=True)})",
                (json.dumps(wanted),),
            )
        )

    async def page(
        self,
        station_id: str | None,
        active: bool | None,
        since: datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page, newest first, of the transactions of a station (any when None), active
        or not (either when None), started at or after ``since``; and how many in all."""
        where, params = [], []
        if station_id is not None:
            where.append("station_id = ?")
            params.append(station_id)
        if active is not None:
            where.append("stop_received_at IS NULL" if active else "stop_received_at IS NOT NULL")
        if since is not None:
            where.append("start_time >= ?")
            params.append(to_db(since))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = await self.db.read(
            f"SELECT * FROM transactions {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n FROM transactions {clause}", params)
        return _decoded(rows), count(total)

    async def export_page(
        self,
        start_from: datetime,
        start_to: datetime,
        station_id: str | None,
        id_tag: str | None,
        after: tuple[str, int] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The next ``limit`` transactions (for an export) started in [start_from, start_to),
        of one station and one id tag (case-insensitive, as OCPP compares them) when given,
        in (start_time, id) order after the key ``after`` (the last row's; None: from the
        start). A keyset read: each page costs the same however far the export has got."""
        sql, params = export_sql(start_from, start_to, station_id, id_tag, after, limit)
        return _decoded(await self.db.read(sql, params))

    async def page_on_defined_stations(
        self,
        owners: set[str] | None,
        updated_from: datetime | None,
        updated_to: datetime | None,
        offset: int,
        limit: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page (by id) of the transactions on defined stations, updated in
        [updated_from, updated_to), whose token owner is one of ``owners`` (None: any);
        and how many in all."""
        clause = "WHERE 1 = 1"
        params: list[Any] = []
        if updated_from is not None:
            clause += " AND t.updated_at >= ?"
            params.append(to_db(updated_from))
        if updated_to is not None:
            clause += " AND t.updated_at < ?"
            params.append(to_db(updated_to))
        if owners is not None:
            clause += f" AND t.tag_owner IN ({self.db.dialect.json_values('?')})"
            params.append(json.dumps(sorted(owners)))
        where = (
            "FROM transactions t JOIN stations s ON s.id = t.station_id AND s.defined = 1 " + clause
        )
        total = await self.db.read_one(f"SELECT COUNT(*) AS n {where}", params)
        rows = await self.db.read(
            f"SELECT t.* {where} ORDER BY t.id LIMIT ? OFFSET ?", [*params, limit, offset]
        )
        return _decoded(rows), count(total)

    async def in_progress(self) -> list[dict[str, Any]]:
        """The transactions not stopped, by id."""
        return _decoded(
            await self.db.read(
                "SELECT * FROM transactions WHERE stop_received_at IS NULL ORDER BY id"
            )
        )

    async def updated_since(self, since: datetime) -> list[dict[str, Any]]:
        return _decoded(
            await self.db.read(
                "SELECT * FROM transactions WHERE updated_at >= ? ORDER BY id", (to_db(since),)
            )
        )

    async def stopped_ids(self, after_id: int, limit: int) -> list[int]:
        """Ids of finished transactions above ``after_id``, in order (a page of them)."""
        rows = await self.db.read(
            "SELECT id FROM transactions WHERE stop_received_at IS NOT NULL AND id > ? "
            "ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [int(r["id"]) for r in rows]

    async def active_on(self, station_id: str, connector_id: int) -> dict[str, Any] | None:
        """The connector's transaction in progress, the newest if several."""
        row = await self.db.read_one(
            "SELECT * FROM transactions WHERE station_id = ? AND connector_id = ? "
            "AND stop_received_at IS NULL ORDER BY id DESC LIMIT 1",
            (station_id, connector_id),
        )
        return _decoded([row])[0] if row else None

    async def last_stopped_on(self, station_id: str, connector_id: int) -> dict[str, Any] | None:
        """The connector's most recently ended transaction."""
        row = await self.db.read_one(
            "SELECT * FROM transactions WHERE station_id = ? AND connector_id = ? "
            "AND stop_received_at IS NOT NULL ORDER BY stop_time DESC LIMIT 1",
            (station_id, connector_id),
        )
        return _decoded([row])[0] if row else None

    async def first_started(
        self,
        station_id: str,
        connector_id: int,
        id_tag: str,
        received_from: datetime,
        received_to: datetime,
    ) -> dict[str, Any] | None:
        """The first transaction on that connector with that id tag (case-insensitive)
        whose StartTransaction arrived within [received_from, received_to]."""
        row = await self.db.read_one(
            "SELECT * FROM transactions WHERE station_id = ? AND connector_id = ? "
            "AND id_tag = ? COLLATE NOCASE AND start_received_at >= ? "
            "AND start_received_at <= ? ORDER BY id LIMIT 1",
            (station_id, connector_id, id_tag, to_db(received_from), to_db(received_to)),
        )
        return _decoded([row])[0] if row else None

    # ------------------------------------------------------------------ meter values

    async def meter_values_of(
        self, transaction_id: int, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]]:
        """A transaction's sampled values in time order; a page of them with ``limit``."""
        if limit is None:
            return await self.db.read(
                "SELECT * FROM meter_values WHERE transaction_id = ? ORDER BY timestamp, id",
                (transaction_id,),
            )
        return await self.db.read(
            "SELECT * FROM meter_values WHERE transaction_id = ? ORDER BY timestamp, id "
            "LIMIT ? OFFSET ?",
            (transaction_id, limit, offset),
        )

    async def meter_series(
        self, transaction_ids: Iterable[int], measurands: Iterable[str]
    ) -> list[dict[str, Any]]:
        """The numeric samples (transaction_id, timestamp, measurand, phase, value) of these
        measurands of these transactions, in arrival order."""
        ids = sorted({int(i) for i in transaction_ids})
        wanted = sorted(set(measurands))
        if not ids or not wanted:
            return []
        d = self.db.dialect
        return await self.db.read(
            "SELECT transaction_id, timestamp, measurand, phase, value FROM meter_values "
            f"WHERE transaction_id IN ({d.json_values('?', integer=True)}) "
            f"AND value IS NOT NULL AND measurand IN ({d.json_values('?')}) ORDER BY id",
            (json.dumps(ids), json.dumps(wanted)),
        )


def export_sql(
    start_from: datetime,
    start_to: datetime,
    station_id: str | None,
    id_tag: str | None,
    after: tuple[str, int] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The query of :meth:`TransactionRepository.export_page` (tests check its plan)."""
    where = ["start_time >= ?", "start_time < ?"]
    params: list[Any] = [to_db(start_from), to_db(start_to)]
    if station_id is not None:
        where.append("station_id = ?")
        params.append(station_id)
    if id_tag is not None:
        where.append("UPPER(id_tag) = UPPER(?)")
        params.append(id_tag)
    if after is not None:
        # the first condition is the index range (each page starts where the last ended,
        # on both engines); the second breaks ties of start time by id
        where.append("start_time >= ? AND (start_time > ? OR id > ?)")
        params.extend([after[0], after[0], after[1]])
    sql = f"SELECT * FROM transactions WHERE {' AND '.join(where)} ORDER BY start_time, id LIMIT ?"
    return sql, [*params, limit]


async def _replayed(db: Tx, transaction_id: int, samples: Samples) -> bool:
    """Is this MeterValues one already stored for the transaction (its first sampled value
    is there: same time, measurand and raw value)? A station sends a message again when its
    answer never came, though the first one may have been committed."""
    for ts, values in samples:
        for s in values:
            rows = await db.execute_fetchall(
                "SELECT 1 FROM meter_values WHERE transaction_id = ? AND timestamp = ? "
                "AND source = 'MeterValues' AND COALESCE(measurand, '') = ? AND value_raw = ? "
                "LIMIT 1",
                (transaction_id, to_db(ts.value), s.measurand or "", s.value_raw),
            )
            return bool(rows)
    return False


async def _cap_samples(
    db: Tx,
    station_id: str,
    transaction_id: int,
    samples: Samples,
    cap: int,
    received_at: str,
) -> Samples:
    """The samples that still fit under ``cap`` sampled values for the transaction. What
    does not fit is not stored: the frame is still answered, the transaction is flagged
    ``meter_values_capped`` once, and one anomaly per transaction counts the values left
    out (``detail.dropped``). The count reads at most ``cap`` index entries."""
    incoming = sum(len(values) for _, values in samples)
    if not incoming:
        return samples
    rows = await db.execute_fetchall(
        "SELECT COUNT(*) FROM "
        "(SELECT 1 FROM meter_values WHERE transaction_id = ? LIMIT ?) AS capped",
        (transaction_id, cap),
    )
    room = cap - int(rows[0][0])
    if incoming <= room:
        return samples
    kept: Samples = []
    for ts, values in samples:
        if room <= 0:
            break
        part = values[:room]
        kept.append((ts, part))
        room -= len(part)
    dropped = incoming - sum(len(values) for _, values in kept)
    if await anomalies.count_capped(db, station_id, transaction_id, cap, dropped, received_at):
        flags = await _flags_of(db, transaction_id)
        if "meter_values_capped" not in flags:
            await db.execute(
                "UPDATE transactions SET flags = ? WHERE id = ?",
                (json.dumps([*flags, "meter_values_capped"]), transaction_id),
            )
    return kept


async def _flags_of(db: Tx, transaction_id: int) -> list[str]:
    rows = await db.execute_fetchall(
        "SELECT flags FROM transactions WHERE id = ?", (transaction_id,)
    )
    return list(json.loads(rows[0][0])) if rows and rows[0][0] else []


async def _insert_samples(
    db: Tx,
    station_id: str,
    connector_id: int,
    transaction_id: int | None,
    reported_transaction_id: int | None,
    source: str,
    samples: Samples,
    received_at: str,
) -> None:
    rows = []
    for ts, values in samples:
        t, raw = to_db(ts.value), ts.original
        for s in values:
            rows.append(
                (
                    station_id,
                    connector_id,
                    transaction_id,
                    reported_transaction_id,
                    source,
                    t,
                    raw,
                    s.measurand,
                    s.phase,
                    s.unit,
                    s.context,
                    s.location,
                    s.format,
                    s.value_raw,
                    s.value,
                    s.norm_unit,
                    received_at,
                )
            )
    if rows:
        await db.executemany(
            """INSERT INTO meter_values (station_id, connector_id, transaction_id,
                   reported_transaction_id, source, timestamp, timestamp_raw, measurand, phase,
                   unit, context, location, format, value_raw, value, norm_unit, received_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            rows,
        )
