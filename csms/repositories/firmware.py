"""Firmware images, firmware campaigns (and each station's progress) and GetDiagnostics
requests (csms.firmware, csms.diagnostics). Every list read is bounded by a limit; the
diagnostics requests of a station are capped (the oldest deleted in the job that adds one)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..timeparse import to_db
from .rows import count

DIAGNOSTICS_KEPT = 200
# states of a campaign's station that are over
TERMINAL = ("done", "failed", "cancelled")
# states of a station that has an UpdateFirmware out (counted against max_concurrent)
ACTIVE = ("sent", "downloading", "downloaded", "installing", "installed")

_STATION_FIELDS = frozenset(
    {
        "state",
        "error",
        "next_attempt_at",
        "finished_at",
        "last_status",
        "last_status_at",
        "version_after",
        "rebooted",
    }
)


def _db_value(value: Any) -> Any:
    return to_db(value) if isinstance(value, datetime) else value


def _in(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)  # (our own constants only)


class FirmwareRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ images

    async def add_image(
        self,
        name: str,
        version: str | None,
        file_name: str | None,
        url: str | None,
        size: int | None,
        sha256: str | None,
        at: datetime,
        by: str | None,
    ) -> int:
        async def job(db: Tx) -> int:
            cur = await db.execute(
                "INSERT INTO firmware_images (name, version, file_name, url, size, sha256, "
                "created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (name, version, file_name, url, size, sha256, to_db(at), by),
            )
            row = await cur.fetchone()
            return int(row[0])

        return await self.db.write(job)

    async def image(self, image_id: int) -> dict[str, Any] | None:
        return await self.db.read_one("SELECT * FROM firmware_images WHERE id = ?", (image_id,))

    async def images(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        total = await self.db.read_one("SELECT COUNT(*) AS n FROM firmware_images")
        rows = await self.db.read(
            "SELECT * FROM firmware_images ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        )
        return rows, count(total)

    async def remove_image(self, image_id: int) -> tuple[str, str | None]:
        """Forget an image's file or URL (the row stays: campaigns name it). Returns
        ("removed", its file name or None), ("busy", None) while a running campaign uses
        it, ("missing", None) when there is no such image."""

        async def job(db: Tx) -> tuple[str, str | None]:
            cur = await db.execute(
                "SELECT file_name FROM firmware_images WHERE id = ?", (image_id,)
            )
            row = await cur.fetchone()
            if row is None:
                return "missing", None
            cur = await db.execute(
                "SELECT 1 FROM firmware_campaigns WHERE image_id = ? AND state = 'running' LIMIT 1",
                (image_id,),
            )
            if await cur.fetchone() is not None:
                return "busy", None
            await db.execute(
                "UPDATE firmware_images SET file_name = NULL, url = NULL WHERE id = ?",
                (image_id,),
            )
            return "removed", row[0]

        return await self.db.write(job)

    # ------------------------------------------------------------------ campaigns

    async def create_campaign(
        self, fields: dict[str, Any], stations: list[tuple[str, str | None]], at: datetime
    ) -> int:
        """A running campaign for ``stations`` (id, firmware version now), all pending."""
        now = to_db(at)
        columns = list(fields)

        async def job(db: Tx) -> int:
            cur = await db.execute(
                f"INSERT INTO firmware_campaigns ({', '.join(columns)}, state, created_at, "
                f"updated_at) VALUES ({', '.join('?' for _ in columns)}, 'running', ?, ?) "
                "RETURNING id",
                [*(_db_value(fields[c]) for c in columns), now, now],
            )
            row = await cur.fetchone()
            cid = int(row[0])
            await db.executemany(
                "INSERT INTO firmware_campaign_stations (campaign_id, station_id, state, "
                "version_before, updated_at) VALUES (?, ?, 'pending', ?, ?)",
                [(cid, sid, version, now) for sid, version in stations],
            )
            return cid

        return await self.db.write(job)

    async def campaign(self, campaign_id: int) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT c.*, i.name AS image_name, i.version AS image_version, i.sha256 AS sha256, "
            "i.size AS size, i.url AS image_url, i.file_name AS image_file "
            "FROM firmware_campaigns c JOIN firmware_images i ON i.id = c.image_id "
            "WHERE c.id = ?",
            (campaign_id,),
        )

    async def campaigns(
        self, limit: int, offset: int, state: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = ("", []) if state is None else (" WHERE c.state = ?", [state])
        total = await self.db.read_one(
            f"SELECT COUNT(*) AS n FROM firmware_campaigns c{where}", params
        )
        rows = await self.db.read(
            "SELECT c.*, i.name AS image_name FROM firmware_campaigns c "
            f"JOIN firmware_images i ON i.id = c.image_id{where} ORDER BY c.id DESC "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return rows, count(total)

    async def running(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT * FROM firmware_campaigns WHERE state = 'running' ORDER BY id LIMIT ?",
            (limit,),
        )

    async def state_counts(self, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
        """Per campaign, how many of its stations are in each state."""
        if not campaign_ids:
            return {}
        marks = ", ".join("?" for _ in campaign_ids)
        rows = await self.db.read(
            "SELECT campaign_id, state, COUNT(*) AS n FROM firmware_campaign_stations "
            f"WHERE campaign_id IN ({marks}) GROUP BY campaign_id, state",
            campaign_ids,
        )
        out: dict[int, dict[str, int]] = {cid: {} for cid in campaign_ids}
        for r in rows:
            out[int(r["campaign_id"])][r["state"]] = int(r["n"])
        return out

    async def running_state_counts(self) -> dict[str, int]:
        rows = await self.db.read(
            "SELECT s.state, COUNT(*) AS n FROM firmware_campaign_stations s "
            "JOIN firmware_campaigns c ON c.id = s.campaign_id WHERE c.state = 'running' "
            "GROUP BY s.state"
        )
        return {r["state"]: int(r["n"]) for r in rows}

    async def stations(
        self, campaign_id: int, limit: int = 10_000, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        total = await self.db.read_one(
            "SELECT COUNT(*) AS n FROM firmware_campaign_stations WHERE campaign_id = ?",
            (campaign_id,),
        )
        rows = await self.db.read(
            "SELECT campaign_id, station_id, state, attempts, rebooted, version_before, "
            "version_after, last_status, last_status_at, sent_at, next_attempt_at, "
            "finished_at, error, downloads, updated_at FROM firmware_campaign_stations "
            "WHERE campaign_id = ? ORDER BY station_id LIMIT ? OFFSET ?",
            (campaign_id, limit, offset),
        )
        return rows, count(total)

    async def station(self, campaign_id: int, station_id: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT * FROM firmware_campaign_stations WHERE campaign_id = ? AND station_id = ?",
            (campaign_id, station_id),
        )

    async def set_campaign_state(self, campaign_id: int, state: str, at: datetime) -> bool:
        """A running campaign moves to ``state`` (finished, cancelled); its stations not over
        are cancelled with it. False when it was not running."""
        now = to_db(at)

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE firmware_campaigns SET state = ?, updated_at = ? "
                "WHERE id = ? AND state = 'running'",
                (state, now, campaign_id),
            )
            if not cur.rowcount:
                return False
            await db.execute(
                "UPDATE firmware_campaign_stations SET state = 'cancelled', finished_at = ?, "
                "updated_at = ? "
                f"WHERE campaign_id = ? AND state NOT IN ({_in(TERMINAL)})",
                (now, now, campaign_id),
            )
            return True

        return await self.db.write(job)

    # ------------------------------------------------------------------ campaign stations

    async def claim_send(
        self,
        campaign_id: int,
        station_id: str,
        token_hash: str | None,
        expires_at: datetime | None,
        at: datetime,
    ) -> bool:
        """A pending (or retry) station moves to ``sent``: one attempt more, a new download
        token. False when another node or round took it first."""
        now = to_db(at)

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE firmware_campaign_stations SET state = 'sent', attempts = attempts + 1, "
                "sent_at = ?, rebooted = 0, error = NULL, next_attempt_at = NULL, "
                "token_hash = ?, token_expires_at = ?, updated_at = ? "
                "WHERE campaign_id = ? AND station_id = ? AND state IN ('pending', 'retry')",
                (
                    now,
                    token_hash,
                    to_db(expires_at) if expires_at else None,
                    now,
                    campaign_id,
                    station_id,
                ),
            )
            return bool(cur.rowcount)

        return await self.db.write(job)

    async def update_station(
        self,
        campaign_id: int,
        station_id: str,
        at: datetime,
        expect: Iterable[str] | None = None,
        **fields: Any,
    ) -> bool:
        """Set ``fields`` (see _STATION_FIELDS) of a campaign's station, only while it is in
        one of ``expect`` (when given). False when it was not."""
        unknown = set(fields) - _STATION_FIELDS
        if unknown:
            raise ValueError(f"not a campaign station field: {sorted(unknown)}")
        sets = [f"{k} = ?" for k in fields]
        params: list[Any] = [_db_value(v) for v in fields.values()]
        sets.append("updated_at = ?")
        params.append(to_db(at))
        sql = (
            f"UPDATE firmware_campaign_stations SET {', '.join(sets)} "
            "WHERE campaign_id = ? AND station_id = ?"
        )
        params += [campaign_id, station_id]
        if expect is not None:
            states = list(expect)
            sql += f" AND state IN ({', '.join('?' for _ in states)})"
            params += states

        async def job(db: Tx) -> bool:
            cur = await db.execute(sql, params)
            return bool(cur.rowcount)

        return await self.db.write(job)

    async def open_for_station(self, station_id: str) -> list[dict[str, Any]]:
        """The station's places in running campaigns that are not over (newest first)."""
        return await self.db.read(
            "SELECT s.*, c.target_version FROM firmware_campaign_stations s "
            "JOIN firmware_campaigns c ON c.id = s.campaign_id "
            f"WHERE s.station_id = ? AND c.state = 'running' AND s.state NOT IN ({_in(TERMINAL)}) "
            "ORDER BY s.campaign_id DESC LIMIT 10",
            (station_id,),
        )

    async def busy(self, station_ids: list[str]) -> list[dict[str, Any]]:
        """Which of ``station_ids`` are in a running campaign and not over (at most 20)."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(station_ids), 500):
            chunk = station_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            out += await self.db.read(
                "SELECT s.station_id, s.campaign_id FROM firmware_campaign_stations s "
                "JOIN firmware_campaigns c ON c.id = s.campaign_id WHERE c.state = 'running' "
                f"AND s.state NOT IN ({_in(TERMINAL)}) AND s.station_id IN ({marks}) LIMIT 20",
                chunk,
            )
            if len(out) >= 20:
                break
        return out[:20]

    async def by_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT s.campaign_id, s.station_id, s.state, s.token_expires_at, "
            "i.file_name, i.name AS image_name FROM firmware_campaign_stations s "
            "JOIN firmware_campaigns c ON c.id = s.campaign_id "
            "JOIN firmware_images i ON i.id = c.image_id WHERE s.token_hash = ?",
            (token_hash,),
        )

    async def count_download(self, campaign_id: int, station_id: str) -> None:
        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE firmware_campaign_stations SET downloads = downloads + 1 "
                "WHERE campaign_id = ? AND station_id = ?",
                (campaign_id, station_id),
            )

        await self.db.write(job)

    # ------------------------------------------------------------------ the fleet

    async def station_versions(self, station_ids: list[str]) -> dict[str, str | None]:
        """The firmware version each station (that exists) last booted with."""
        out: dict[str, str | None] = {}
        for start in range(0, len(station_ids), 500):
            chunk = station_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in await self.db.read(
                f"SELECT id, firmware_version FROM stations WHERE id IN ({marks})", chunk
            ):
                out[r["id"]] = r["firmware_version"]
        return out

    async def versions(self, limit: int = 500) -> list[dict[str, Any]]:
        """Stations (not retired) per firmware version, most common first."""
        return await self.db.read(
            "SELECT firmware_version AS version, COUNT(*) AS stations FROM stations "
            "WHERE retired_at IS NULL GROUP BY firmware_version "
            "ORDER BY COUNT(*) DESC, firmware_version LIMIT ?",
            (limit,),
        )

    # ------------------------------------------------------------------ diagnostics

    async def add_diagnostics(
        self,
        station_id: str,
        token_hash: str,
        at: datetime,
        expires_at: datetime,
        start_time: str | None,
        stop_time: str | None,
        by: str | None,
    ) -> tuple[int, list[str]]:
        """A new request; and the files of the oldest requests beyond the cap, whose rows
        went (the caller deletes the files)."""

        async def job(db: Tx) -> tuple[int, list[str]]:
            cur = await db.execute(
                "INSERT INTO diagnostics_requests (station_id, token_hash, created_at, "
                "expires_at, start_time, stop_time, requested_by) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "RETURNING id",
                (station_id, token_hash, to_db(at), to_db(expires_at), start_time, stop_time, by),
            )
            row = await cur.fetchone()
            rid = int(row[0])
            cur = await db.execute(
                "SELECT id FROM diagnostics_requests WHERE station_id = ? ORDER BY id DESC "
                "LIMIT 1 OFFSET ?",
                (station_id, DIAGNOSTICS_KEPT),
            )
            old = await cur.fetchone()
            gone: list[str] = []
            if old is not None:
                cur = await db.execute(
                    "SELECT file_name FROM diagnostics_requests WHERE station_id = ? AND id <= ? "
                    "AND file_name IS NOT NULL",
                    (station_id, old[0]),
                )
                gone = [r[0] for r in await cur.fetchall()]
                await db.execute(
                    "DELETE FROM diagnostics_requests WHERE station_id = ? AND id <= ?",
                    (station_id, old[0]),
                )
            return rid, gone

        return await self.db.write(job)

    async def diagnostics_answered(self, request_id: int, file_name: str | None) -> None:
        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE diagnostics_requests SET answer_file = ? WHERE id = ?",
                (file_name, request_id),
            )

        await self.db.write(job)

    async def diagnostics_by_token(self, token_hash: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT * FROM diagnostics_requests WHERE token_hash = ?", (token_hash,)
        )

    async def diagnostics_uploaded(
        self, request_id: int, file_name: str, size: int, at: datetime
    ) -> bool:
        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE diagnostics_requests SET file_name = ?, file_size = ?, uploaded_at = ? "
                "WHERE id = ? AND uploaded_at IS NULL",
                (file_name, size, to_db(at), request_id),
            )
            return bool(cur.rowcount)

        return await self.db.write(job)

    async def diagnostics_status(self, station_id: str, status: str, at: datetime) -> None:
        """A DiagnosticsStatusNotification: for the station's newest request (1.6 has no id)."""

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE diagnostics_requests SET last_status = ?, last_status_at = ? "
                "WHERE id = (SELECT MAX(id) FROM diagnostics_requests WHERE station_id = ?)",
                (status, to_db(at), station_id),
            )

        await self.db.write(job)

    async def diagnostics(self, station_id: str, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT id, created_at, expires_at, start_time, stop_time, requested_by, "
            "answer_file, file_name, file_size, uploaded_at, last_status, last_status_at "
            "FROM diagnostics_requests WHERE station_id = ? ORDER BY id DESC LIMIT ?",
            (station_id, limit),
        )

    async def diagnostics_file(self, station_id: str, file_name: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT id, file_name, file_size FROM diagnostics_requests "
            "WHERE station_id = ? AND file_name = ?",
            (station_id, file_name),
        )
