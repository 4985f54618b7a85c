"""Each OCPI peer's traffic and failures, per hour (issue 19: the operator sees them on the
Peers pages and in the API).

Two things are counted, per peer, per hour bucket (UTC) and per module or push kind:

- requests the peer made to us (:meth:`PeerTraffic.request`): ``ok`` (HTTP below 400),
  ``refused`` (4xx: a refusal, its fault or its powers) and ``failed`` (5xx: ours);
- pushes we sent it (:meth:`PeerTraffic.push`): ``ok`` or ``failed``, with the last error
  text (cut short, printable: never a whole answer of the peer).

Counting is a few dictionary updates in memory; the counters are written every few seconds
(and at stop) in one transaction that adds them to the stored rows, so the OCPP and OCPI
paths never wait for the database. Rows older than :data:`KEEP_DAYS` are deleted (at most
once an hour), and what a hostile peer can grow is bounded: a module or kind outside the
known names counts as ``other``, and the buffer holds at most :data:`MAX_KEYS` keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from csms.ports import Clock, ExtensionDb, from_db, to_db
from csms.ports import Tx as JobDb

from .peers import CALLABLE

log = structlog.get_logger("ocpi.traffic")

KEEP_DAYS = 14
FLUSH_SECONDS = 5.0
MAX_KEYS = 5000  # distinct (hour, peer, direction, module) kept between two flushes
MAX_ERROR = 200
IN, OUT = "in", "out"
# what a request's module or a push's kind may be called in the table
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
KNOWN_MODULES = frozenset({"versions", "details", "credentials", *CALLABLE})


@dataclass
class Counts:
    ok: int = 0
    refused: int = 0
    failed: int = 0
    last_error: str | None = None
    last_error_at: str | None = None

    def add(self, other: Counts) -> None:
        self.ok += other.ok
        self.refused += other.refused
        self.failed += other.failed
        if other.last_error is not None:
            self.last_error, self.last_error_at = other.last_error, other.last_error_at


Key = tuple[str, int, str, str]  # (hour, peer id, direction, module or kind)


def hour_of(at: datetime) -> str:
    return to_db(at.replace(minute=0, second=0, microsecond=0))


def module_name(value: str | None) -> str:
    """A module name or push kind as stored: lower-case, known shape, else ``other``."""
    name = (value or "").strip().lower()
    return name if _NAME.match(name) else "other"


def error_text(error: str | None) -> str | None:
    """An error as stored and shown: printable, one line, at most MAX_ERROR characters."""
    if error is None:
        return None
    text = "".join(c if c.isprintable() else " " for c in str(error))
    text = " ".join(text.split())
    return text[: MAX_ERROR - 1] + "…" if len(text) > MAX_ERROR else text


class PeerTraffic:
    """Counters of requests received and pushes sent, per peer and hour, written in
    batches. One per process (the nodes count requests, the delivery counts pushes); the
    stored rows add up what every process wrote."""

    def __init__(
        self,
        db: ExtensionDb,
        clock: Clock,
        flush_seconds: float = FLUSH_SECONDS,
        keep_days: int = KEEP_DAYS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.flush_seconds = flush_seconds
        self.keep = timedelta(days=keep_days)
        self._dirty: dict[Key, Counts] = {}
        self.dropped = 0  # counts not kept because the buffer was full
        self._dropped_told = 0
        self._task: asyncio.Task[None] | None = None
        self._pruned_hour: str | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ recording

    def _counts(self, peer_id: int, direction: str, name: str) -> Counts | None:
        key = (hour_of(self.clock.now()), peer_id, direction, name)
        counts = self._dirty.get(key)
        if counts is None:
            if len(self._dirty) >= MAX_KEYS:
                self.dropped += 1
                return None
            counts = self._dirty[key] = Counts()
        return counts

    def request(self, peer_id: int | None, module: str | None, http_status: int) -> None:
        """A request ``peer_id`` made to one of our modules, answered with ``http_status``
        (below 400: ok; 4xx: refused; 5xx: failed). A caller we do not know is not a peer:
        not counted here (security events and logs have it)."""
        if peer_id is None:
            return
        name = module_name(module)
        if name not in KNOWN_MODULES:
            name = "other"
        counts = self._counts(peer_id, IN, name)
        if counts is None:
            return
        if http_status >= 500:
            counts.failed += 1
        elif http_status >= 400:
            counts.refused += 1
        else:
            counts.ok += 1

    def push(self, peer_id: int, kind: str, ok: bool, error: str | None = None) -> None:
        """A push of ``kind`` (location, evse, session, cdr, tariff...) sent to ``peer_id``:
        acknowledged or failed, with why."""
        counts = self._counts(peer_id, OUT, module_name(kind))
        if counts is None:
            return
        if ok:
            counts.ok += 1
            return
        counts.failed += 1
        counts.last_error = error_text(error) or "failed"
        counts.last_error_at = to_db(self.clock.now())

    # ------------------------------------------------------------------ writing

    async def flush(self) -> None:
        """Add what was counted since the last flush to the stored rows (one transaction),
        and delete the rows older than the kept history (at most once an hour)."""
        async with self._lock:
            pending, self._dirty = self._dirty, {}
            if self.dropped > self._dropped_told:
                log.warning(
                    "peer traffic: counts dropped, too many distinct keys between two flushes",
                    dropped=self.dropped - self._dropped_told,
                )
                self._dropped_told = self.dropped
            hour = hour_of(self.clock.now())
            prune = self._pruned_hour != hour
            if not pending and not prune:
                return
            oldest = hour_of(self.clock.now() - self.keep)

            async def job(db: JobDb) -> None:
                if pending:
                    await db.executemany(
                        """INSERT INTO ocpi_peer_traffic (bucket, peer_id, direction, module,
                               ok, refused, failed, last_error, last_error_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                           ON CONFLICT (bucket, peer_id, direction, module) DO UPDATE SET
                               ok = ocpi_peer_traffic.ok + excluded.ok,
                               refused = ocpi_peer_traffic.refused + excluded.refused,
                               failed = ocpi_peer_traffic.failed + excluded.failed,
                               last_error = COALESCE(excluded.last_error,
                                   ocpi_peer_traffic.last_error),
                               last_error_at = COALESCE(excluded.last_error_at,
                                   ocpi_peer_traffic.last_error_at)""",
                        [
                            (*key, c.ok, c.refused, c.failed, c.last_error, c.last_error_at)
                            for key, c in pending.items()
                        ],
                    )
                if prune:
                    await db.execute("DELETE FROM ocpi_peer_traffic WHERE bucket < ?", (oldest,))

            try:
                await self.db.write(job)
            except Exception:
                for key, c in pending.items():  # kept for the next flush
                    self._dirty.setdefault(key, Counts()).add(c)
                raise
            if prune:
                self._pruned_hour = hour

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("peer traffic not written; kept for the next flush")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ocpi-peer-traffic")

    async def stop(self) -> None:
        """Stop flushing; what is counted is written once more."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("peer traffic not written at stop")

    # ------------------------------------------------------------------ reading

    async def summary(self, since: datetime) -> dict[int, dict[str, Any]]:
        """Per peer since ``since`` (whole hours): requests ok, refused and failed, pushes
        ok and failed, and its last push error."""
        await self.flush()
        rows = await self.db.read(
            "SELECT peer_id, direction, SUM(ok) AS ok, SUM(refused) AS refused, "
            "SUM(failed) AS failed FROM ocpi_peer_traffic WHERE bucket >= ? "
            "GROUP BY peer_id, direction",
            (hour_of(since),),
        )
        out: dict[int, dict[str, Any]] = {}
        for r in rows:
            view = out.setdefault(int(r["peer_id"]), _empty())
            if r["direction"] == IN:
                view["requests"] = {
                    "ok": int(r["ok"]),
                    "refused": int(r["refused"]),
                    "failed": int(r["failed"]),
                }
            else:
                view["pushes"] = {"ok": int(r["ok"]), "failed": int(r["failed"])}
        errors = await self.db.read(
            "SELECT peer_id, module, last_error, last_error_at FROM ocpi_peer_traffic "
            "WHERE bucket >= ? AND direction = ? AND last_error IS NOT NULL",
            (hour_of(since), OUT),
        )
        for e in errors:
            view = out.setdefault(int(e["peer_id"]), _empty())
            last = view["last_error"]
            if last is None or str(e["last_error_at"]) > last["at"]:
                view["last_error"] = {
                    "kind": e["module"],
                    "error": e["last_error"],
                    "at": str(e["last_error_at"]),
                }
        return out

    async def hourly(self, peer_id: int, since: datetime) -> list[dict[str, Any]]:
        """One peer's traffic per hour since ``since``, oldest first: every hour of the
        period, those without traffic with zeros."""
        await self.flush()
        rows = await self.db.read(
            "SELECT bucket, direction, SUM(ok) AS ok, SUM(refused) AS refused, "
            "SUM(failed) AS failed FROM ocpi_peer_traffic WHERE peer_id = ? AND bucket >= ? "
            "GROUP BY bucket, direction",
            (peer_id, hour_of(since)),
        )
        by_hour: dict[str, dict[str, int]] = {}
        for r in rows:
            h = by_hour.setdefault(str(r["bucket"]), _hour_zero())
            if r["direction"] == IN:
                h["requests_ok"] += int(r["ok"])
                h["requests_refused"] += int(r["refused"])
                h["requests_failed"] += int(r["failed"])
            else:
                h["pushes_ok"] += int(r["ok"])
                h["pushes_failed"] += int(r["failed"])
        out = []
        at = since.replace(minute=0, second=0, microsecond=0)
        now = self.clock.now()
        while at <= now:
            key = hour_of(at)
            out.append({"hour": key, **by_hour.get(key, _hour_zero())})
            at += timedelta(hours=1)
        return out

    async def failures(
        self, peer_id: int, since: datetime, limit: int = 50
    ) -> list[dict[str, Any]]:
        """One peer's failing pushes since ``since``, newest first: per hour and kind, how
        many failed and the last error."""
        await self.flush()
        rows = await self.db.read(
            "SELECT bucket, module, failed, last_error, last_error_at FROM ocpi_peer_traffic "
            "WHERE peer_id = ? AND direction = ? AND bucket >= ? AND failed > 0 "
            "ORDER BY bucket DESC, module LIMIT ?",
            (peer_id, OUT, hour_of(since), limit),
        )
        return [
            {
                "hour": str(r["bucket"]),
                "kind": r["module"],
                "failed": int(r["failed"]),
                "last_error": r["last_error"],
                "last_error_at": from_db(r["last_error_at"]) if r["last_error_at"] else None,
            }
            for r in rows
        ]


def _empty() -> dict[str, Any]:
    return {
        "requests": {"ok": 0, "refused": 0, "failed": 0},
        "pushes": {"ok": 0, "failed": 0},
        "last_error": None,
    }


def _hour_zero() -> dict[str, int]:
    return {
        "requests_ok": 0,
        "requests_refused": 0,
        "requests_failed": 0,
        "pushes_ok": 0,
        "pushes_failed": 0,
    }
