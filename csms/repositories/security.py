"""The security extension's aggregate (csms.security): security events, certificate
requests and the station certificates csms signed, the GetLog / SignedUpdateFirmware
requests csms sent (with GetLog's upload token, as a hash) and the statuses stations
reported. Every per-station list is bounded: the oldest rows beyond a cap are deleted in
the job that adds one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..db import Database, Tx
from ..timeparse import to_db

EVENTS_KEPT = 1000
SIGN_REQUESTS_KEPT = 100
STATUSES_KEPT = 200
REQUESTS_KEPT = 200


async def _keep_newest(
    db: Tx, table: str, station_id: str, keep: int, kind: str | None = None
) -> None:
    """Delete a station's rows of ``table`` beyond the newest ``keep`` (of ``kind``)."""
    extra = " AND kind = ?" if kind is not None else ""
    params: list[Any] = [station_id] + ([kind] if kind is not None else [])
    cur = await db.execute(
        f"SELECT id FROM {table} WHERE station_id = ?{extra} ORDER BY id DESC LIMIT 1 OFFSET ?",
        [*params, keep],
    )
    row = await cur.fetchone()
    if row is not None:
        await db.execute(
            f"DELETE FROM {table} WHERE station_id = ?{extra} AND id <= ?", [*params, row[0]]
        )


class SecurityRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.events_kept = EVENTS_KEPT

    # ------------------------------------------------------------------ events

    async def add_event(
        self,
        station_id: str,
        kind: str,
        critical: bool,
        timestamp: datetime,
        timestamp_raw: str | None,
        tech_info: str | None,
        received_at: datetime,
    ) -> None:
        keep = self.events_kept

        async def job(db: Tx) -> None:
            await db.execute(
                "INSERT INTO security_events (station_id, type, critical, timestamp, "
                "timestamp_raw, tech_info, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    station_id,
                    kind,
                    int(critical),
                    to_db(timestamp),
                    timestamp_raw,
                    tech_info,
                    to_db(received_at),
                ),
            )
            await _keep_newest(db, "security_events", station_id, keep)

        await self.db.write(job)

    async def events(
        self, station_id: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a station's events, newest first, and how many there are."""
        total = await self.db.read_one(
            "SELECT COUNT(*) AS n FROM security_events WHERE station_id = ?", (station_id,)
        )
        rows = await self.db.read(
            "SELECT * FROM security_events WHERE station_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            (station_id, limit, offset),
        )
        return rows, int(total["n"]) if total else 0

    # ------------------------------------------------------------------ certificate requests

    async def add_sign_request(
        self,
        station_id: str,
        at: datetime,
        status: str,
        reason: str | None,
        csr: str | None,
        subject: str | None,
    ) -> int:
        """Record a SignCertificate and our answer; an accepted one (state ``signing``)
        replaces any request of the station still waiting. Returns its id."""
        now = to_db(at)
        accepted = status == "Accepted"

        async def job(db: Tx) -> int:
            if accepted:
                await db.execute(
                    "UPDATE sign_requests SET state = 'superseded', updated_at = ? "
                    "WHERE station_id = ? AND state IN ('signing', 'delivering')",
                    (now, station_id),
                )
            cur = await db.execute(
                "INSERT INTO sign_requests (station_id, received_at, status, reason, csr, "
                "subject, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    station_id,
                    now,
                    status,
                    reason,
                    csr if accepted else None,
                    subject,
                    "signing" if accepted else "rejected",
                    now,
                ),
            )
            row = await cur.fetchone()
            await _keep_newest(db, "sign_requests", station_id, SIGN_REQUESTS_KEPT)
            return int(row[0])

        return await self.db.write(job)

    async def sign_request(
        self, request_id: int, station_id: str | None = None
    ) -> dict[str, Any] | None:
        if station_id is None:
            return await self.db.read_one("SELECT * FROM sign_requests WHERE id = ?", (request_id,))
        return await self.db.read_one(
            "SELECT * FROM sign_requests WHERE id = ? AND station_id = ?",
            (request_id, station_id),
        )

    async def signed(
        self,
        request_id: int,
        station_id: str,
        chain: str,
        info: Any,
        source: str,
        at: datetime,
    ) -> bool:
        """The chain signed for a request (still ``signing``): the request moves to
        ``delivering`` and the certificate joins the inventory. False when a newer request
        replaced it meanwhile (nothing is kept)."""
        now = to_db(at)

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE sign_requests SET state = 'delivering', chain = ?, serial = ?, "
                "updated_at = ? WHERE id = ? AND state = 'signing'",
                (chain, info.serial, now, request_id),
            )
            if not cur.rowcount:
                return False
            await db.execute(
                "INSERT INTO station_certificates (serial, station_id, subject, issuer, "
                "not_before, not_after, fingerprint, source, sign_request_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING",
                (
                    info.serial,
                    station_id,
                    info.subject,
                    info.issuer,
                    to_db(info.not_before),
                    to_db(info.not_after),
                    info.fingerprint_sha256,
                    source,
                    request_id,
                    now,
                ),
            )
            return True

        return await self.db.write(job)

    async def set_sign_state(
        self,
        request_id: int,
        state: str,
        at: datetime,
        *,
        error: str | None = None,
        attempt: bool = False,
    ) -> None:
        now = to_db(at)

        async def job(db: Tx) -> None:
            await db.execute(
                "UPDATE sign_requests SET state = ?, last_error = COALESCE(?, last_error), "
                "attempts = attempts + ?, updated_at = ? WHERE id = ?",
                (state, error[:500] if error else None, 1 if attempt else 0, now, request_id),
            )

        await self.db.write(job)

    async def waiting(self, station_id: str | None = None) -> list[dict[str, Any]]:
        """Requests accepted but not yet signed or delivered: ``id``, ``station_id``."""
        sql = "SELECT id, station_id FROM sign_requests WHERE state IN ('signing', 'delivering')"
        if station_id is None:
            return await self.db.read(sql + " ORDER BY id")
        return await self.db.read(sql + " AND station_id = ? ORDER BY id", (station_id,))

    async def sign_requests(self, station_id: str, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT id, received_at, status, reason, subject, state, serial, attempts, "
            "last_error, updated_at FROM sign_requests WHERE station_id = ? "
            "ORDER BY id DESC LIMIT ?",
            (station_id, limit),
        )

    # ------------------------------------------------------------------ station certificates

    async def newest_expiry(self) -> list[dict[str, Any]]:
        """Per station, the expiry of its newest certificate (``station_id``, ``not_after``)."""
        return await self.db.read(
            "SELECT station_id, MAX(not_after) AS not_after FROM station_certificates "
            "GROUP BY station_id"
        )

    async def certificates(
        self, station_id: str | None, not_after_before: datetime | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Station certificates, soonest expiry first, filtered; and how many match."""
        where, params = [], []
        if station_id is not None:
            where.append("station_id = ?")
            params.append(station_id)
        if not_after_before is not None:
            where.append("not_after <= ?")
            params.append(to_db(not_after_before))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = await self.db.read_one(
            f"SELECT COUNT(*) AS n FROM station_certificates{clause}", params
        )
        rows = await self.db.read(
            f"SELECT * FROM station_certificates{clause} ORDER BY not_after, serial "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return rows, int(total["n"]) if total else 0

    async def certificates_of(self, station_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT serial, subject, issuer, not_before, not_after, fingerprint, source, "
            "created_at FROM station_certificates WHERE station_id = ? "
            "ORDER BY created_at DESC LIMIT ?",
            (station_id, limit),
        )

    # ------------------------------------------------------------------ requests, statuses

    async def add_request(
        self,
        station_id: str,
        kind: str,
        request_id: int,
        details: dict[str, Any],
        at: datetime,
        token_hash: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """A GetLog (kind ``log``, with its upload token's hash) or SignedUpdateFirmware
        (kind ``firmware``) csms sends."""
        now = to_db(at)

        async def job(db: Tx) -> None:
            await db.execute(
                "INSERT INTO security_requests (station_id, kind, request_id, token_hash, "
                "details, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    station_id,
                    kind,
                    request_id,
                    token_hash,
                    json.dumps(details),
                    now,
                    to_db(expires_at) if expires_at else None,
                ),
            )
            await _keep_newest(db, "security_requests", station_id, REQUESTS_KEPT, kind=kind)

        await self.db.write(job)

    async def upload_request(self, token_hash: str) -> dict[str, Any] | None:
        return await self.db.read_one(
            "SELECT * FROM security_requests WHERE token_hash = ? AND kind = 'log'",
            (token_hash,),
        )

    async def uploaded(self, row_id: int, file_name: str, size: int, at: datetime) -> bool:
        """The file of a GetLog arrived; False when another upload was first."""

        async def job(db: Tx) -> bool:
            cur = await db.execute(
                "UPDATE security_requests SET file_name = ?, file_size = ?, uploaded_at = ? "
                "WHERE id = ? AND uploaded_at IS NULL",
                (file_name, size, to_db(at), row_id),
            )
            return bool(cur.rowcount)

        return await self.db.write(job)

    async def add_status(
        self, station_id: str, kind: str, request_id: int | None, status: str, at: datetime
    ) -> None:
        """A LogStatusNotification (kind ``log``) or SignedFirmwareStatusNotification
        (``firmware``), linked to csms's request of that requestId."""
        now = to_db(at)

        async def job(db: Tx) -> None:
            await db.execute(
                "INSERT INTO security_statuses (station_id, kind, request_id, status, "
                "received_at) VALUES (?, ?, ?, ?, ?)",
                (station_id, kind, request_id, status, now),
            )
            await _keep_newest(db, "security_statuses", station_id, STATUSES_KEPT, kind=kind)
            if request_id is not None:
                await db.execute(
                    "UPDATE security_requests SET last_status = ?, last_status_at = ? "
                    "WHERE station_id = ? AND kind = ? AND request_id = ?",
                    (status, now, station_id, kind, request_id),
                )

        await self.db.write(job)

    async def requests(self, station_id: str, kind: str, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT request_id, details, created_at, file_name, file_size, uploaded_at, "
            "last_status, last_status_at FROM security_requests WHERE station_id = ? "
            "AND kind = ? ORDER BY id DESC LIMIT ?",
            (station_id, kind, limit),
        )

    async def statuses(self, station_id: str, kind: str, limit: int) -> list[dict[str, Any]]:
        return await self.db.read(
            "SELECT request_id, status, received_at FROM security_statuses "
            "WHERE station_id = ? AND kind = ? ORDER BY id DESC LIMIT ?",
            (station_id, kind, limit),
        )
