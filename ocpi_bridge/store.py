"""The bridge's tables, through csms's store (same SQLite file, same group-commit writer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from csms.store import JobDb, Store
from csms.timeparse import from_db, to_db


@dataclass
class Peer:
    """A registered OCPI party (an eMSP, or a hub such as MOBI.E)."""

    id: int
    status: str
    token_in: str | None  # what it calls us with
    token_out: str  # what we call it with
    token_out_base64: bool
    versions_url: str
    version: str
    endpoints: list[dict[str, str]]
    roles: list[dict[str, Any]]
    initiated_by: str
    parties: set[tuple[str, str]] = field(default_factory=set)  # (country_code, party_id)

    @property
    def is_hub(self) -> bool:
        return any(r.get("role") == "HUB" for r in self.roles)

    def owns(self, country_code: str, party_id: str) -> bool:
        """May this peer act on objects of that party? A hub speaks for every party."""
        return self.is_hub or (country_code.upper(), party_id.upper()) in self.parties

    def endpoint(self, identifier: str, role: str | None = None) -> str | None:
        for e in self.endpoints:
            if e.get("identifier") == identifier and (role is None or e.get("role") == role):
                return e.get("url")
        return None

    @property
    def primary_party(self) -> tuple[str, str]:
        role = self.roles[0] if self.roles else {}
        return str(role.get("country_code", "")).upper(), str(role.get("party_id", "")).upper()


def _peer(row: dict[str, Any], parties: set[tuple[str, str]]) -> Peer:
    return Peer(
        id=row["id"],
        status=row["status"],
        token_in=row["token_in"],
        token_out=row["token_out"],
        token_out_base64=bool(row["token_out_base64"]),
        versions_url=row["versions_url"],
        version=row["version"],
        endpoints=json.loads(row["endpoints"]),
        roles=json.loads(row["roles"]),
        initiated_by=row["initiated_by"],
        parties=parties,
    )


def _parties(roles: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (str(r["country_code"]).upper(), str(r["party_id"]).upper(), str(r["role"])) for r in roles
    }


class OcpiStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = store.clock

    # ------------------------------------------------------------------ token A

    async def add_token_a(self, token: str) -> None:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "INSERT OR IGNORE INTO ocpi_tokens_a (token, created_at) VALUES (?, ?)",
                (token, now),
            )

        await self.store.write(job)

    async def token_a_usable(self, token: str) -> bool:
        row = await self.store.read_one(
            "SELECT used_at FROM ocpi_tokens_a WHERE token = ?", (token,)
        )
        return row is not None and row["used_at"] is None

    async def list_tokens_a(self) -> list[dict[str, Any]]:
        return await self.store.read("SELECT * FROM ocpi_tokens_a ORDER BY created_at")

    # ------------------------------------------------------------------ peers

    async def peers(self) -> list[Peer]:
        rows = await self.store.read("SELECT * FROM ocpi_peers ORDER BY id")
        parties = await self.store.read("SELECT * FROM ocpi_peer_parties")
        by_peer: dict[int, set[tuple[str, str]]] = {}
        for p in parties:
            by_peer.setdefault(p["peer_id"], set()).add(
                (p["country_code"].upper(), p["party_id"].upper())
            )
        return [_peer(r, by_peer.get(r["id"], set())) for r in rows]

    async def register_peer(
        self,
        *,
        token_a: str | None,
        token_in: str,
        token_out: str,
        token_out_base64: bool,
        versions_url: str,
        version: str,
        endpoints: list[dict[str, str]],
        roles: list[dict[str, Any]],
        initiated_by: str,
    ) -> int:
        """Store a new registration and, atomically, spend the token A it used.

        Raises ValueError when the token A was spent meanwhile, or when one of the roles is
        already registered by another peer.
        """
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> int:
            if token_a is not None:
                cur = await db.execute(
                    "UPDATE ocpi_tokens_a SET used_at = ? WHERE token = ? AND used_at IS NULL",
                    (now, token_a),
                )
                if cur.rowcount != 1:
                    raise ValueError("token A already used")
            row = await db.execute_insert(
                """INSERT INTO ocpi_peers (status, token_in, token_out, token_out_base64,
                       versions_url, version, endpoints, roles, initiated_by, created_at,
                       updated_at)
                   VALUES ('registered', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    token_in,
                    token_out,
                    int(token_out_base64),
                    versions_url,
                    version,
                    json.dumps(endpoints),
                    json.dumps(roles),
                    initiated_by,
                    now,
                    now,
                ),
            )
            assert row is not None
            peer_id = int(row[0])
            await _replace_parties(db, peer_id, roles)
            if token_a is not None:
                await db.execute(
                    "UPDATE ocpi_tokens_a SET used_by = ? WHERE token = ?", (peer_id, token_a)
                )
            return peer_id

        return await self.store.write(job)

    async def update_peer(
        self,
        peer_id: int,
        *,
        token_in: str,
        token_out: str,
        token_out_base64: bool,
        versions_url: str,
        version: str,
        endpoints: list[dict[str, str]],
        roles: list[dict[str, Any]],
    ) -> None:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                """UPDATE ocpi_peers SET token_in = ?, token_out = ?, token_out_base64 = ?,
                       versions_url = ?, version = ?, endpoints = ?, roles = ?, updated_at = ?
                   WHERE id = ?""",
                (
                    token_in,
                    token_out,
                    int(token_out_base64),
                    versions_url,
                    version,
                    json.dumps(endpoints),
                    json.dumps(roles),
                    now,
                    peer_id,
                ),
            )
            await _replace_parties(db, peer_id, roles)

        await self.store.write(job)

    async def unregister_peer(self, peer_id: int) -> None:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE ocpi_peers SET status = 'unregistered', token_in = NULL, updated_at = ? "
                "WHERE id = ?",
                (now, peer_id),
            )
            await db.execute("DELETE FROM ocpi_peer_parties WHERE peer_id = ?", (peer_id,))

        await self.store.write(job)

    # ------------------------------------------------------------------ tokens (eMSPs')

    async def put_token(self, token: dict[str, Any], peer_id: int) -> bool:
        async def job(db: JobDb) -> bool:
            key = (token["country_code"], token["party_id"], token["uid"], token["type"])
            rows = await db.execute_fetchall(
                "SELECT 1 FROM ocpi_tokens WHERE country_code = ? AND party_id = ? AND uid = ? "
                "AND type = ?",
                key,
            )
            await db.execute(
                """INSERT INTO ocpi_tokens (country_code, party_id, uid, type, body, valid,
                       whitelist, last_updated, peer_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (country_code, party_id, uid, type) DO UPDATE SET
                       body = excluded.body, valid = excluded.valid,
                       whitelist = excluded.whitelist, last_updated = excluded.last_updated,
                       peer_id = excluded.peer_id""",
                (
                    *key,
                    json.dumps(token),
                    int(token["valid"]),
                    token["whitelist"],
                    token["last_updated"],
                    peer_id,
                ),
            )
            return not rows

        return await self.store.write(job)

    async def get_token(
        self, country_code: str, party_id: str, uid: str, type_: str
    ) -> dict[str, Any] | None:
        row = await self.store.read_one(
            "SELECT body FROM ocpi_tokens WHERE country_code = ? AND party_id = ? AND uid = ? "
            "AND type = ?",
            (country_code, party_id, uid, type_),
        )
        return json.loads(row["body"]) if row else None

    async def tokens_by_uid(self, uid: str) -> list[dict[str, Any]]:
        rows = await self.store.read(
            "SELECT body FROM ocpi_tokens WHERE uid = ? ORDER BY last_updated DESC", (uid,)
        )
        return [json.loads(r["body"]) for r in rows]

    # ------------------------------------------------------------------ tariffs (ours)

    async def put_tariff(self, tariff_id: str, body: dict[str, Any]) -> bool:
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> bool:
            rows = await db.execute_fetchall(
                "SELECT body FROM ocpi_tariffs WHERE id = ?", (tariff_id,)
            )
            if rows and json.loads(rows[0][0]) == body:
                return False  # unchanged: keep its last_updated
            await db.execute(
                """INSERT INTO ocpi_tariffs (id, body, created_at, last_updated)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET body = excluded.body,
                       last_updated = excluded.last_updated""",
                (tariff_id, json.dumps(body), now, now),
            )
            return not rows

        return await self.store.write(job)

    async def delete_tariff(self, tariff_id: str) -> bool:
        async def job(db: JobDb) -> bool:
            cur = await db.execute("DELETE FROM ocpi_tariffs WHERE id = ?", (tariff_id,))
            return cur.rowcount > 0

        return await self.store.write(job)

    async def tariffs(self, ids: list[str] | None = None) -> list[dict[str, Any]]:
        if ids is None:
            rows = await self.store.read("SELECT * FROM ocpi_tariffs ORDER BY created_at, id")
        elif not ids:
            return []
        else:
            marks = ",".join("?" * len(ids))
            rows = await self.store.read(
                f"SELECT * FROM ocpi_tariffs WHERE id IN ({marks}) ORDER BY created_at, id", ids
            )
        return [
            {
                "id": r["id"],
                "body": json.loads(r["body"]),
                "last_updated": from_db(r["last_updated"]),
                "created_at": from_db(r["created_at"]),
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ CDRs

    async def insert_cdr(
        self,
        cdr_id: str,
        transaction_id: int,
        owner: str | None,
        body: dict[str, Any],
        created_at: datetime,
    ) -> bool:
        """Store a CDR once; a second one for the same transaction is ignored."""

        async def job(db: JobDb) -> bool:
            cur = await db.execute(
                "INSERT OR IGNORE INTO ocpi_cdrs (id, transaction_id, owner, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (cdr_id, transaction_id, owner, json.dumps(body), to_db(created_at)),
            )
            return cur.rowcount == 1

        return await self.store.write(job)

    async def stopped_transactions_without_cdr(self, limit: int = 500) -> list[int]:
        rows = await self.store.read(
            """SELECT t.id FROM transactions t
               LEFT JOIN ocpi_cdrs c ON c.transaction_id = t.id
               WHERE t.stop_received_at IS NOT NULL AND c.id IS NULL
               ORDER BY t.id LIMIT ?""",
            (limit,),
        )
        return [r["id"] for r in rows]


async def _replace_parties(db: JobDb, peer_id: int, roles: list[dict[str, Any]]) -> None:
    await db.execute("DELETE FROM ocpi_peer_parties WHERE peer_id = ?", (peer_id,))
    for cc, pid, role in _parties(roles):
        taken = await db.execute_fetchall(
            "SELECT peer_id FROM ocpi_peer_parties WHERE country_code = ? AND party_id = ? "
            "AND role = ?",
            (cc, pid, role),
        )
        if taken:
            raise ValueError(f"{role} {cc}/{pid} is already registered by another peer")
        await db.execute(
            "INSERT INTO ocpi_peer_parties VALUES (?, ?, ?, ?)", (peer_id, cc, pid, role)
        )
