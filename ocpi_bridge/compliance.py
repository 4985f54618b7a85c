"""How well the platform keeps MOBI.E's push rules, measured on every push the hub
acknowledges: what MOBI.E looks at before cutting a link.

Per peer, per station (R1, R6, R7, R8) or session (R5), per hour, the recorder keeps the
number of measurements, their total and largest value in seconds, how many were late
(beyond the rule's limit) and how many pushes failed. The pusher reports each acknowledged
push with the time of what triggered it:

- R1: a Location PUT with every EVSE PLANNED: seconds from the station's definition;
- R5: seconds since the previous acknowledged push of the same Session (largest gap);
- R6: seconds from a StatusNotification's arrival to its EVSE PATCH being acknowledged;
- R7: seconds from a station's last frame to its EVSE PATCHed UNKNOWN being acknowledged;
- R8: seconds from a frame's arrival to the Location PATCH covering it being acknowledged.

Counters are aggregated in memory and written to the database every few seconds (one
row per hour, object and rule): a handful of writes, whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from csms.ports import ExtensionDb, to_db
from csms.ports import Tx as JobDb

RULES = ("R1", "R5", "R6", "R7", "R8")


@dataclass
class Bucket:
    samples: int = 0
    total: float = 0.0
    largest: float = 0.0
    late: int = 0
    failures: int = 0


Key = tuple[str, int, str, str, str]  # (hour, peer id, rule, object kind, object id)


def hour_of(at: datetime) -> str:
    return to_db(at.replace(minute=0, second=0, microsecond=0))


class ComplianceRecorder:
    def __init__(self, store: ExtensionDb, limits: dict[str, float]) -> None:
        """``limits``: seconds beyond which a measurement of each rule counts as late."""
        self.store = store
        self.limits = limits
        self._dirty: dict[Key, Bucket] = {}

    def sample(
        self, rule: str, peer_id: int, kind: str, object_id: str, seconds: float, at: datetime
    ) -> None:
        b = self._dirty.setdefault((hour_of(at), peer_id, rule, kind, object_id), Bucket())
        seconds = max(0.0, seconds)
        b.samples += 1
        b.total += seconds
        b.largest = max(b.largest, seconds)
        if seconds > self.limits.get(rule, float("inf")):
            b.late += 1

    def failure(self, rule: str, peer_id: int, kind: str, object_id: str, at: datetime) -> None:
        b = self._dirty.setdefault((hour_of(at), peer_id, rule, kind, object_id), Bucket())
        b.failures += 1

    async def flush(self) -> None:
        if not self._dirty:
            return
        pending, self._dirty = self._dirty, {}

        async def job(db: JobDb) -> None:
            await db.executemany(
                """INSERT INTO ocpi_compliance VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (bucket, peer_id, rule, object_kind, object_id) DO UPDATE SET
                       samples = ocpi_compliance.samples + excluded.samples,
                       total_seconds = ocpi_compliance.total_seconds + excluded.total_seconds,
                       max_seconds = CASE WHEN excluded.max_seconds > ocpi_compliance.max_seconds
                           THEN excluded.max_seconds ELSE ocpi_compliance.max_seconds END,
                       late = ocpi_compliance.late + excluded.late,
                       failures = ocpi_compliance.failures + excluded.failures""",
                [
                    (*key, b.samples, b.total, b.largest, b.late, b.failures)
                    for key, b in pending.items()
                ],
            )

        try:
            await self.store.write(job)
        except Exception:
            for key, b in pending.items():  # keep them for the next flush
                mine = self._dirty.setdefault(key, Bucket())
                mine.samples += b.samples
                mine.total += b.total
                mine.largest = max(mine.largest, b.largest)
                mine.late += b.late
                mine.failures += b.failures
            raise

    async def report(
        self,
        since: datetime,
        until: datetime,
        kind: str | None = None,
        object_ids: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Per object and rule over [since, until) (whole hours): samples, average, largest,
        late and failed pushes."""
        await self.flush()
        where = "bucket >= ? AND bucket < ?"
        params: list[Any] = [hour_of(since), to_db(until)]
        if kind is not None:
            where += " AND object_kind = ?"
            params.append(kind)
        ids = list(object_ids) if object_ids is not None else None
        if ids is not None:
            if not ids:
                return []
            where += f" AND object_id IN ({','.join('?' * len(ids))})"
            params += ids
        rows = await self.store.read(
            f"""SELECT object_kind, object_id, rule, SUM(samples) AS samples,
                       SUM(total_seconds) AS total, MAX(max_seconds) AS largest,
                       SUM(late) AS late, SUM(failures) AS failures
                FROM ocpi_compliance WHERE {where}
                GROUP BY object_kind, object_id, rule ORDER BY object_kind, object_id, rule""",
            params,
        )
        out = []
        for r in rows:
            samples = int(r["samples"])
            out.append(
                {
                    "kind": r["object_kind"],
                    "id": r["object_id"],
                    "rule": r["rule"],
                    "samples": samples,
                    "average_seconds": round(r["total"] / samples, 3) if samples else None,
                    "largest_seconds": round(r["largest"], 3) if samples else None,
                    "late": int(r["late"]),
                    "failed_pushes": int(r["failures"]),
                    "limit_seconds": self.limits.get(r["rule"]),
                }
            )
        return out


def limits_for(session_interval: float, offline_after: float) -> dict[str, float]:
    """When a measurement is late. R5: a gap longer than the interval (plus a few seconds of
    delivery); R6 and R8: more than a few seconds from the frame to the hub's
    acknowledgement ("at once", "one round-trip"); R7: UNKNOWN acknowledged more than a few
    seconds after the silence reached offline_after."""
    slack = timedelta(seconds=5).total_seconds()
    return {
        "R5": session_interval + slack,
        "R6": slack,
        "R7": offline_after + slack,
        "R8": slack,
    }
