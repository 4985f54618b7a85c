"""The bridge's tables, through its database handle from csms's port (same database, same
group-commit writer)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from csms.ports import Clock, ExtensionDb, from_db, to_db
from csms.ports import Tx as JobDb

from .peers import PeerPolicy

log = structlog.get_logger("ocpi.store")

GRANT_ROLES = ("HUB", "EMSP", "SCSP")  # SCSP: a smart charging party (chargingprofiles)
DIGEST_PREFIX = "sha256:"
_PARTY = re.compile(r"^([A-Za-z]{2})[/*-]?([A-Za-z0-9]{3})$")
# security events kept for the hub-link page (the newest; a hostile peer cannot grow it)
SECURITY_EVENTS_KEPT = 1000


def token_digest(token: str) -> str:
    """What we store of a token we check (a token A, a peer's token_in): its SHA-256.

    Our tokens are 256-bit random strings (:func:`credentials.new_token`), so a fast digest
    is enough: nobody can guess one from its hash, and there is nothing to stretch (a slow
    password hash would only slow every OCPI request). Lookups are by digest."""
    return DIGEST_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_party(text: str) -> tuple[str, str]:
    """``PT/ABC`` (also ``PT*ABC``, ``PT-ABC`` or ``PTABC``) as (``PT``, ``ABC``); ValueError
    otherwise."""
    m = _PARTY.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a party: country code and party id, e.g. PT/ABC")
    return m.group(1).upper(), m.group(2).upper()


@dataclass(frozen=True)
class Grant:
    """What the operator lets a peer be: one role (HUB, EMSP or SCSP) for these parties."""

    role: str
    parties: tuple[tuple[str, str], ...]
    # what else the operator decided (ocpi_bridge.peers); None: the role's defaults
    policy: PeerPolicy | None = None

    @classmethod
    def make(cls, role: Any, parties: Any, policy: Any = None, mobie_mode: bool = False) -> Grant:
        """From user input (CLI, API, web form); ValueError names what is wrong.
        ``policy``: a mapping of :class:`PeerPolicy` fields, over the role's defaults (in
        MOBI.E mode a HUB's are MOBI.E's); None: the role's defaults, decided at use."""
        if not isinstance(role, str) or role.strip().upper() not in GRANT_ROLES:
            raise ValueError(f"role: one of {', '.join(GRANT_ROLES)}")
        if isinstance(parties, str):
            parties = [p for p in re.split(r"[\s,;]+", parties) if p]
        if not isinstance(parties, list | tuple) or not parties:
            raise ValueError("parties: at least one party, e.g. PT/ABC")
        if len(parties) > 50:
            raise ValueError("parties: at most 50")
        out: list[tuple[str, str]] = []
        for p in parties:
            try:
                party = parse_party(p)
            except ValueError as e:
                raise ValueError(f"parties: {e}") from None
            if party not in out:
                out.append(party)
        role = role.strip().upper()
        base = PeerPolicy.default(role, mobie_mode)
        made = PeerPolicy.make(role, policy, base=base) if policy is not None else None
        return cls(role, tuple(out), made)

    @property
    def allowed(self) -> set[tuple[str, str, str]]:
        """The (country_code, party_id, role) a peer with this grant may claim."""
        return {(c, p, self.role) for c, p in self.parties}

    def describe(self) -> str:
        name = f" ({self.policy.name})" if self.policy and self.policy.name else ""
        return f"{self.role} {', '.join(f'{c}/{p}' for c, p in self.parties)}{name}"

    def party_texts(self) -> list[str]:
        return [f"{c}/{p}" for c, p in self.parties]


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
    # (country_code, party_id): granted by the operator (ocpi_peer_parties), never taken
    # from the peer's credentials
    parties: set[tuple[str, str]] = field(default_factory=set)
    grant_role: str | None = None  # HUB | EMSP | SCSP; None: no grant (no hub powers)
    grant_source: str | None = None  # token_a | operator | legacy
    # (country_code, party_id, role) as granted: what its credentials may claim
    allowed: set[tuple[str, str, str]] = field(default_factory=set)
    policy: PeerPolicy = field(default_factory=PeerPolicy)  # the operator's decisions
    suspended_at: datetime | None = None  # suspended by the operator: refused, pushed nothing

    @property
    def name(self) -> str:
        """What the operator calls it, else its first party and role."""
        if self.policy.name:
            return self.policy.name
        cc, pid = self.primary_party
        return f"{cc}/{pid} {self.grant_role or ''}".strip() if cc else f"peer {self.id}"

    @property
    def active(self) -> bool:
        """Registered and not suspended: it may call us and gets pushes."""
        return self.status == "registered" and self.suspended_at is None

    @property
    def is_hub(self) -> bool:
        """A hub (MOBI.E) sees every party's sessions and CDRs: only when the operator
        granted HUB, whatever the peer's credentials say."""
        return self.grant_role == "HUB"

    @property
    def routes_all(self) -> bool:
        """MOBI.E, the central hub (a HUB the operator made MOBI.E): it sees every party's
        sessions and CDRs and speaks for every party. Any other hub routes for the parties
        the operator granted it, like an eMSP."""
        return self.is_hub and self.policy.mobie

    def owns(self, country_code: str, party_id: str) -> bool:
        """May this peer act on objects of that party?"""
        return self.routes_all or (country_code.upper(), party_id.upper()) in self.parties

    def endpoint(self, identifier: str, role: str | None = None) -> str | None:
        for e in self.endpoints:
            if e.get("identifier") == identifier and (role is None or e.get("role") == role):
                return e.get("url")
        return None

    @property
    def primary_party(self) -> tuple[str, str]:
        """The party we address it as: its first role, when that is one it was granted."""
        for role in self.roles:
            party = (
                str(role.get("country_code", "")).upper(),
                str(role.get("party_id", "")).upper(),
            )
            if party in self.parties:
                return party
        if self.parties:
            return sorted(self.parties)[0]
        return "", ""


def _peer(
    row: dict[str, Any],
    allowed: set[tuple[str, str, str]],
    grant: dict[str, Any] | None = None,
    mobie_mode: bool = False,
) -> Peer:
    role = grant["role"] if grant else None
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
        parties={(cc, pid) for cc, pid, _ in allowed},
        allowed=allowed,
        grant_role=role,
        grant_source=grant["source"] if grant else None,
        policy=PeerPolicy.from_json(grant.get("policy") if grant else None, role, mobie_mode),
        suspended_at=from_db(grant.get("suspended_at")) if grant else None,
    )


def excess_claims(roles: list[dict[str, Any]], allowed: set[tuple[str, str, str]]) -> list[str]:
    """What ``roles`` (a peer's CredentialsRoles) claim beyond ``allowed``, as
    ``ROLE CC/PID`` texts (empty when nothing)."""
    out = []
    for r in roles:
        claim = (
            str(r.get("country_code", "")).upper(),
            str(r.get("party_id", "")).upper(),
            str(r.get("role", "")).upper(),
        )
        if claim not in allowed:
            out.append(f"{claim[2]} {claim[0]}/{claim[1]}")
    return out


class UidTaken(Exception):
    """A token's uid is already held by another party."""

    def __init__(self, holders: list[str]) -> None:
        super().__init__(", ".join(holders))
        self.holders = holders


class OcpiStore:
    def __init__(self, store: ExtensionDb, clock: Clock, mobie_mode: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.mobie_mode = mobie_mode  # a HUB without a stored policy is MOBI.E

    # ------------------------------------------------------------------ token A

    async def add_token_a(
        self,
        token: str,
        role: str | None = None,
        parties: list[str] | None = None,
        policy: PeerPolicy | None = None,
    ) -> None:
        """Store a token A (its digest) with its grant. Without a grant (``role`` None) an
        existing row is left as it is; with one, an unused row gets the new grant."""
        now = to_db(self.clock.now())
        digest = token_digest(token)
        grant = json.dumps(parties) if parties is not None else None

        async def job(db: JobDb) -> None:
            if role is None:
                await db.execute(
                    "INSERT INTO ocpi_tokens_a (token, created_at) VALUES (?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (digest, now),
                )
                return
            await db.execute(
                """INSERT INTO ocpi_tokens_a (token, created_at, role, parties, policy)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (token) DO UPDATE SET role = excluded.role,
                       parties = excluded.parties, policy = excluded.policy
                   WHERE ocpi_tokens_a.used_at IS NULL""",
                (digest, now, role, grant, policy.to_json() if policy else None),
            )

        await self.store.write(job)

    async def token_a_usable(self, token: str) -> bool:
        row = await self.store.read_one(
            "SELECT used_at FROM ocpi_tokens_a WHERE token = ?", (token_digest(token),)
        )
        return row is not None and row["used_at"] is None

    async def token_a_grant(self, token: str) -> Grant | None:
        """The grant of an unused token A; None when it has none (made before grants)."""
        row = await self.store.read_one(
            "SELECT role, parties, policy FROM ocpi_tokens_a WHERE token = ? AND used_at IS NULL",
            (token_digest(token),),
        )
        if row is None or not row["role"] or not row["parties"]:
            return None
        try:
            policy = json.loads(row["policy"]) if row["policy"] else None
            return Grant.make(row["role"], json.loads(row["parties"]), policy)
        except ValueError:
            return None

    async def list_tokens_a(self) -> list[dict[str, Any]]:
        return await self.store.read("SELECT * FROM ocpi_tokens_a ORDER BY created_at")

    async def digest_clear_tokens(self) -> int:
        """Replace every token we check that is still stored in clear (tokens A, peers'
        token_in: databases made before issue 12) by its digest. Returns how many."""

        async def job(db: JobDb) -> int:
            changed = 0
            prefix = (len(DIGEST_PREFIX), DIGEST_PREFIX)
            rows = await db.execute_fetchall(
                "SELECT token FROM ocpi_tokens_a WHERE substr(token, 1, ?) <> ?", prefix
            )
            for (token,) in rows:
                taken = await db.execute_fetchall(
                    "SELECT 1 FROM ocpi_tokens_a WHERE token = ?", (token_digest(token),)
                )
                if taken:  # a duplicate of a digest already there
                    await db.execute("DELETE FROM ocpi_tokens_a WHERE token = ?", (token,))
                else:
                    await db.execute(
                        "UPDATE ocpi_tokens_a SET token = ? WHERE token = ?",
                        (token_digest(token), token),
                    )
                changed += 1
            rows = await db.execute_fetchall(
                "SELECT id, token_in FROM ocpi_peers WHERE token_in IS NOT NULL "
                "AND substr(token_in, 1, ?) <> ?",
                prefix,
            )
            for peer_id, token in rows:
                await db.execute(
                    "UPDATE ocpi_peers SET token_in = ? WHERE id = ?",
                    (token_digest(token), peer_id),
                )
                changed += 1
            return changed

        changed = await self.store.write(job)
        if changed:
            log.info("OCPI tokens stored in clear replaced by their digests", count=changed)
        return changed

    # ------------------------------------------------------------------ peers

    async def peers(self) -> list[Peer]:
        rows = await self.store.read("SELECT * FROM ocpi_peers ORDER BY id")
        parties = await self.store.read("SELECT * FROM ocpi_peer_parties")
        grants = {g["peer_id"]: g for g in await self.store.read("SELECT * FROM ocpi_peer_grants")}
        by_peer: dict[int, set[tuple[str, str, str]]] = {}
        for p in parties:
            by_peer.setdefault(p["peer_id"], set()).add(
                (p["country_code"].upper(), p["party_id"].upper(), str(p["role"]).upper())
            )
        return [
            _peer(r, by_peer.get(r["id"], set()), grants.get(r["id"]), self.mobie_mode)
            for r in rows
        ]

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
        grant: Grant,
        grant_source: str,
    ) -> int:
        """Store a new registration with the powers ``grant`` gives it and, atomically,
        spend the token A it used. ``token_in`` is kept as its digest.

        Raises ValueError when the token A was spent meanwhile, or when one of the granted
        parties is already registered by another peer in that role.
        """
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> int:
            if token_a is not None:
                cur = await db.execute(
                    "UPDATE ocpi_tokens_a SET used_at = ? WHERE token = ? AND used_at IS NULL",
                    (now, token_digest(token_a)),
                )
                if cur.rowcount != 1:
                    raise ValueError("token A already used")
            cur = await db.execute(
                """INSERT INTO ocpi_peers (status, token_in, token_out, token_out_base64,
                       versions_url, version, endpoints, roles, initiated_by, created_at,
                       updated_at)
                   VALUES ('registered', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (
                    token_digest(token_in),
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
            row = await cur.fetchone()
            assert row is not None
            peer_id = int(row[0])
            policy = grant.policy.to_json() if grant.policy else None
            await db.execute(
                "INSERT INTO ocpi_peer_grants (peer_id, role, source, granted_at, policy) "
                "VALUES (?, ?, ?, ?, ?)",
                (peer_id, grant.role, grant_source, now, policy),
            )
            await _grant_parties(db, peer_id, grant)
            if token_a is not None:
                await db.execute(
                    "UPDATE ocpi_tokens_a SET used_by = ? WHERE token = ?",
                    (peer_id, token_digest(token_a)),
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
        """A renewal: new tokens, endpoints and credentials. Its powers (grant and parties)
        stay what the operator granted."""
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                """UPDATE ocpi_peers SET token_in = ?, token_out = ?, token_out_base64 = ?,
                       versions_url = ?, version = ?, endpoints = ?, roles = ?, updated_at = ?
                   WHERE id = ?""",
                (
                    token_digest(token_in),
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

        await self.store.write(job)

    async def set_policy(self, peer_id: int, policy: PeerPolicy) -> bool:
        """The operator changed what a peer may do; False when there is no such peer."""

        async def job(db: JobDb) -> bool:
            cur = await db.execute(
                "UPDATE ocpi_peer_grants SET policy = ? WHERE peer_id = ?",
                (policy.to_json(), peer_id),
            )
            return bool(cur.rowcount)

        return await self.store.write(job)

    async def set_suspended(self, peer_id: int, suspended: bool) -> bool:
        """Suspend (or resume) a peer; False when there is no such peer."""
        at = to_db(self.clock.now()) if suspended else None

        async def job(db: JobDb) -> bool:
            cur = await db.execute(
                "UPDATE ocpi_peer_grants SET suspended_at = ? WHERE peer_id = ?", (at, peer_id)
            )
            return bool(cur.rowcount)

        return await self.store.write(job)

    # ------------------------------------------------------------------ hubclientinfo

    async def put_client_info(self, hub_peer_id: int, info: dict[str, str]) -> bool:
        """A hub's ClientInfo (upper-case party); True when it was new."""
        now = to_db(self.clock.now())
        key = (hub_peer_id, info["country_code"].upper(), info["party_id"].upper(), info["role"])

        async def job(db: JobDb) -> bool:
            cur = await db.execute(
                "SELECT 1 FROM ocpi_hub_client_info WHERE hub_peer_id = ? AND country_code = ? "
                "AND party_id = ? AND role = ?",
                key,
            )
            existed = await cur.fetchone() is not None
            await db.execute(
                """INSERT INTO ocpi_hub_client_info (hub_peer_id, country_code, party_id, role,
                       status, last_updated, received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (hub_peer_id, country_code, party_id, role) DO UPDATE SET
                       status = excluded.status, last_updated = excluded.last_updated,
                       received_at = excluded.received_at""",
                (*key, info["status"], info["last_updated"], now),
            )
            return not existed

        return await self.store.write(job)

    async def client_info(
        self,
        hub_peer_id: int | None = None,
        country_code: str | None = None,
        party_id: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        where, args = ["1 = 1"], []
        if hub_peer_id is not None:
            where.append("hub_peer_id = ?")
            args.append(hub_peer_id)
        if country_code is not None and party_id is not None:
            where.append("country_code = ? AND party_id = ?")
            args += [country_code.upper(), party_id.upper()]
        return await self.store.read(
            f"SELECT * FROM ocpi_hub_client_info WHERE {' AND '.join(where)} "
            "ORDER BY country_code, party_id, role LIMIT ?",
            (*args, limit),
        )

    # ------------------------------------------------------------------ security events

    async def security_event(self, kind: str, detail: str, peer_id: int | None = None) -> None:
        """Something a peer tried that was refused or is suspicious (never a secret)."""
        now = to_db(self.clock.now())

        async def job(db: JobDb) -> None:
            cur = await db.execute(
                "INSERT INTO ocpi_security_events (at, kind, peer_id, detail) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (now, kind, peer_id, detail[:500]),
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) > SECURITY_EVENTS_KEPT:
                await db.execute(
                    "DELETE FROM ocpi_security_events WHERE id <= ?",
                    (int(row[0]) - SECURITY_EVENTS_KEPT,),
                )

        await self.store.write(job)

    async def security_events(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.read(
            "SELECT * FROM ocpi_security_events ORDER BY id DESC LIMIT ?", (limit,)
        )

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
        """Store an eMSP's token (True when it is new). Raises :class:`UidTaken` when
        another party already holds that uid: the OCPP idTag is the uid, and the party that
        holds it receives the sessions and CDRs of that card, so it is never re-owned
        silently (checked in the same transaction as the write)."""

        async def job(db: JobDb) -> bool:
            key = (token["country_code"], token["party_id"], token["uid"], token["type"])
            others = await db.execute_fetchall(
                "SELECT DISTINCT country_code, party_id FROM ocpi_tokens WHERE uid = ? "
                "AND NOT (country_code = ? AND party_id = ?)",
                (token["uid"], token["country_code"], token["party_id"]),
            )
            if others:
                raise UidTaken([f"{str(r[0]).upper()}/{str(r[1]).upper()}" for r in others])
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

    async def offline_tokens(
        self, whitelists: tuple[str, ...], types: tuple[str, ...], limit: int
    ) -> list[dict[str, Any]]:
        """At most ``limit`` valid tokens of these whitelist values and types, in the order
        of ``whitelists`` then by uid; never a uid several parties hold (csms's local lists,
        ocpi_bridge.tokens.offline_entry)."""
        order = " ".join(f"WHEN ? THEN {i}" for i in range(len(whitelists)))
        marks = ", ".join("?" for _ in whitelists)
        kinds = ", ".join("?" for _ in types)
        rows = await self.store.read(
            f"SELECT body FROM ocpi_tokens WHERE valid <> 0 AND whitelist IN ({marks}) "
            f"AND type IN ({kinds}) AND uid NOT IN (SELECT uid FROM ocpi_tokens GROUP BY uid "
            "HAVING COUNT(DISTINCT country_code || '/' || party_id) > 1) "
            f"ORDER BY CASE whitelist {order} END, uid LIMIT ?",
            (*whitelists, *types, *whitelists, limit),
        )
        return [json.loads(r["body"]) for r in rows]

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
                "INSERT INTO ocpi_cdrs (id, transaction_id, owner, body, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (cdr_id, transaction_id, owner, json.dumps(body), to_db(created_at)),
            )
            return cur.rowcount == 1

        return await self.store.write(job)

    async def transactions_with_cdr(self, transaction_ids: list[int]) -> set[int]:
        """Those of these transactions that have a CDR."""
        if not transaction_ids:
            return set()
        rows = await self.store.read(
            "SELECT transaction_id FROM ocpi_cdrs WHERE transaction_id IN "
            f"({self.store.dialect.json_values('?', integer=True)})",
            (json.dumps(transaction_ids),),
        )
        return {int(r["transaction_id"]) for r in rows}

    # ------------------------------------------------------------------ real-time authorizations

    async def record_authorization(
        self, station_id: str, record: dict[str, Any], gap: timedelta
    ) -> bool:
        """Keep a card accepted by real-time authorization (ocpi_bridge.realtime_auth.
        authorization_record). Within ``gap`` of the newest row of that station and id tag,
        that row is kept (the same answer) or changed (another), never a second row. True
        when something was written."""
        now = self.clock.now()
        values = tuple(record[k] for k in _AUTH_FIELDS)

        async def job(db: JobDb) -> bool:
            rows = await db.execute_fetchall(
                f"SELECT id, authorized_at, {', '.join(_AUTH_FIELDS[1:])} "
                "FROM ocpi_authorizations WHERE station_id = ? AND id_tag = ? "
                "ORDER BY authorized_at DESC, id DESC LIMIT 1",
                (station_id, record["id_tag"]),
            )
            newest = rows[0] if rows else None
            if newest is not None and (from_db(newest[1]) or now) > now - gap:
                if tuple(newest[2:]) == values[1:]:
                    return False
                sets = ", ".join(f"{k} = ?" for k in _AUTH_FIELDS[1:])
                await db.execute(
                    f"UPDATE ocpi_authorizations SET {sets}, authorized_at = ? WHERE id = ?",
                    (*values[1:], to_db(now), newest[0]),
                )
                return True
            await db.execute(
                f"INSERT INTO ocpi_authorizations (station_id, {', '.join(_AUTH_FIELDS)}, "
                f"authorized_at) VALUES (?, {', '.join('?' * len(_AUTH_FIELDS))}, ?)",
                (station_id, *values, to_db(now)),
            )
            return True

        return await self.store.write(job)

    async def authorizations(
        self, station_ids: set[str], id_tags: set[str], since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """The kept authorizations at these stations of these id tags (upper-case) made
        between ``since`` and ``until`` (inclusive), newest first."""
        if not station_ids or not id_tags:
            return []
        values = self.store.dialect.json_values
        return await self.store.read(
            f"SELECT * FROM ocpi_authorizations WHERE station_id IN ({values('?')}) "
            f"AND id_tag IN ({values('?')}) AND authorized_at >= ? AND authorized_at <= ? "
            "ORDER BY authorized_at DESC, id DESC",
            (
                json.dumps(sorted(station_ids)),
                json.dumps(sorted(t.upper() for t in id_tags)),
                to_db(since),
                to_db(until),
            ),
        )

    async def prune_authorizations(self, before: datetime) -> int:
        """Delete the authorizations kept from before ``before``; how many."""

        async def job(db: JobDb) -> int:
            cur = await db.execute(
                "DELETE FROM ocpi_authorizations WHERE authorized_at < ?", (to_db(before),)
            )
            return max(cur.rowcount, 0)

        return await self.store.write(job)


# ocpi_authorizations' columns a record gives (after station_id), in this order
_AUTH_FIELDS = (
    "id_tag",
    "owner",
    "country_code",
    "party_id",
    "uid",
    "type",
    "contract_id",
    "authorization_reference",
    "peer_id",
)


async def _grant_parties(db: JobDb, peer_id: int, grant: Grant) -> None:
    for cc, pid in grant.parties:
        taken = await db.execute_fetchall(
            "SELECT peer_id FROM ocpi_peer_parties WHERE country_code = ? AND party_id = ? "
            "AND role = ?",
            (cc, pid, grant.role),
        )
        if taken:
            raise ValueError(f"{grant.role} {cc}/{pid} is already registered by another peer")
        await db.execute(
            "INSERT INTO ocpi_peer_parties VALUES (?, ?, ?, ?)", (peer_id, cc, pid, grant.role)
        )
