"""The OCPI bridge's part of the operator web interface (a provider of :mod:`csms.web`).

What MOBI.E's viewers and the operator see of the hub link:

- dashboard: each peer (registered or not), its last acknowledged push, the pushes failing
  or waiting now, and the EVSEs by OCPI status in MOBI.E's words;
- stations list: each EVSE's OCPI status, MOBI.E's word for it, and whether the hub has it;
- station page: the Location as we push it and what the hub acknowledged of it, per EVSE,
  and what is pending for it;
- sessions list: what the hub acknowledged of each Session and its CDR, the OCPI token
  (an ad hoc session's is ours, of type AD_HOC_USER; the compliance page marks it too);
- ``/compliance``: per station and per session, over a chosen period, how the platform
  meets R1 and R3 to R8 (measured by :mod:`ocpi_bridge.compliance` on every acknowledged
  push, and by :mod:`csms.traffic` for the stations' own intervals);
- ``/hub``: the peers and what each was granted, what peers tried and were refused, the
  pushes not acknowledged yet, and (admins) a new token A with its role and parties;
- ``/peers`` and ``/peers/{id}`` (issue 19): each peer as the operator defines it (role,
  parties, policy: ocpi_bridge.peers), its state, failing pushes and traffic per hour
  (ocpi_bridge.traffic); for admins, its policy form, suspend, resume, remove (confirmed),
  and connecting a new peer (a token A with a policy, or registering with its token A).
  A viewer (MOBI.E's login) sees no addresses, hidden Locations, tariffs or refusals.

Every hook reads a few indexed rows for the ids it is given (a page of the list), or what
the delivery has pending (``bridge.delivery``: the pusher, here or in csms's delivery
process). Nothing here writes, except the token A forms, the peers' forms and the compliance
recorder's flush of its counters before it is read (as the API does).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from aiohttp import web

from csms.ports import (
    Dialect,
    ExportError,
    NavEntry,
    SessionFilter,
    StationSnapshot,
    WebRoute,
    WebUI,
    from_db,
    judge,
    parse_export_filter,
    query_string,
    to_db,
    web_fmt,
)

from .admin import (
    PEER_EVENTS,
    TRAFFIC_HOURS,
    find_peer,
    peer_id_of,
    peer_item,
    peer_security_events,
    remove_peer,
)
from .client import OcpiCallFailed
from .compliance import hour_of
from .credentials import new_token
from .deliveryview import PendingPush
from .exports import CdrExport, hub_peer
from .locations import MOBIE_NAMES
from .peers import CALLABLE, PUSHED, ROLE_RECEIVES, ROLE_USES, VERSIONS, PeerPolicy
from .prices import AD_HOC_TOKEN_TYPE, is_ad_hoc
from .store import GRANT_ROLES as ROLES
from .store import Grant, Peer
from .transport import OcpiError

if TYPE_CHECKING:
    from .bridge import Bridge

log = structlog.get_logger("ocpi.web")

TEMPLATES = Path(__file__).parent / "web_templates"

# the badge colours of the core's style sheet that fit each OCPI status
BADGE = {
    "AVAILABLE": "st-available",
    "CHARGING": "st-charging",
    "RESERVED": "st-reserved",
    "INOPERATIVE": "st-unavailable",
    "BLOCKED": "st-unavailable",
    "OUTOFORDER": "st-faulted",
}
RULES = ("R1", "R3", "R4", "R5", "R6", "R7", "R8")
PUSHED_RULES = ("R1", "R5", "R6", "R7", "R8")
MAX_PERIOD_DAYS = 31
DEFAULT_PERIOD_DAYS = 7
PENDING_SHOWN = 200
# what is pending is asked of the delivery at most this often (seconds)
PENDING_FRESH = 0.5
SECURITY_EVENTS_SHOWN = 20


def mobie_name(status: str | None) -> str | None:
    """MOBI.E's word for an OCPI EVSE status (None when its profile has none)."""
    return MOBIE_NAMES.get(status or "")


def badge_class(status: str | None) -> str:
    return BADGE.get(status or "", "st-unknown")


def _ack_state(state: str | None) -> tuple[str | None, str | None]:
    """(status, last_updated) of an acknowledged EVSE or Session state ``STATUS|time``."""
    if not state:
        return None, None
    status, _, updated = state.partition("|")
    return status or None, updated or None


def _family_view(p: PendingPush | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "since": p.dirty_since,
        "in_flight": p.in_flight,
        "attempts": p.attempts,
        "failing_since": p.failing_since,
        "next_attempt": p.next_attempt,
        "last_error": p.last_error,
    }


def _ids_json(ids: list[Any]) -> str:
    return json.dumps([str(i) for i in ids])


class OcpiWebProvider:
    """Registered on ``system.web`` by the OCPI extension's ``attach``."""

    name = "ocpi"
    title: ClassVar[dict[str, str]] = {"pt": "MOBI.E (OCPI)", "en": "MOBI.E (OCPI)"}
    templates = TEMPLATES

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.csms = bridge.csms
        self.store = bridge.csms.db  # the bridge's own tables
        self._pending_at: tuple[float, list[PendingPush], dict[Any, PendingPush]] | None = None
        self.messages = MESSAGES
        self.nav = [
            NavEntry("/compliance", {"pt": "Conformidade", "en": "Compliance"}),
            NavEntry("/hub", {"pt": "Ligação ao hub", "en": "Hub link"}),
            NavEntry("/peers", {"pt": "Partes OCPI", "en": "OCPI peers"}),
        ]
        # a button on csms's exports page (csms.web.pages), next to the sessions'
        self.exports = [
            ("/exports/cdrs.csv", {"pt": "Descarregar CDRs (CSV)", "en": "Download CDRs (CSV)"})
        ]

    @property
    def ui(self) -> WebUI:
        return self.csms.web

    def routes(self) -> list[WebRoute]:
        return [
            WebRoute("GET", "/compliance", self.compliance_page),
            WebRoute("GET", "/hub", self.hub_page),
            WebRoute("POST", "/hub/token-a", self.create_token_a, access="admin"),
            WebRoute("GET", "/peers", self.peers_page),
            WebRoute("POST", "/peers/token-a", self.peers_token_a, access="admin"),
            WebRoute("POST", "/peers/register", self.peers_register, access="admin"),
            WebRoute("GET", "/peers/{peer_id}", self.peer_page),
            WebRoute("POST", "/peers/{peer_id}/policy", self.peer_policy, access="admin"),
            WebRoute("POST", "/peers/{peer_id}/suspend", self.peer_suspend, access="admin"),
            WebRoute("POST", "/peers/{peer_id}/resume", self.peer_resume, access="admin"),
            WebRoute("POST", "/peers/{peer_id}/remove", self.peer_remove, access="admin"),
            WebRoute("GET", "/exports/cdrs.csv", self.export_cdrs),
        ]

    async def export_cdrs(self, request: web.Request) -> web.StreamResponse:
        """The CDRs as CSV (any logged-in user: read-only data); a bad filter shows the
        exports page again with the reason."""
        try:
            f = parse_export_filter(request.query, self.csms.settings.web.time_zone)
            return await CdrExport(self.bridge).response(request, f)
        except ExportError as e:
            return self.ui.exports_page(request, e.message, e.status)

    # ------------------------------------------------------------------ peers and acks

    def hub(self) -> Peer | None:
        """The peer whose acknowledgements the lists show (the exports' rule: one rule)."""
        return hub_peer(self.bridge)

    async def _acks(self, peer_id: int, kind: str, object_ids: list[str]) -> dict[str, dict]:
        """What ``peer_id`` acknowledged of these objects (one search on the primary key)."""
        if not object_ids:
            return {}
        sql = acks_sql(self.store.dialect)
        rows = await self.store.read(sql, (peer_id, kind, _ids_json(object_ids)))
        return {r["object_id"]: r for r in rows}

    async def _pending(self) -> list[PendingPush]:
        """What is pending, asked of the delivery at most once per PENDING_FRESH seconds
        (a page shows it for many objects)."""
        now = time.monotonic()
        if self._pending_at is None or now - self._pending_at[0] > PENDING_FRESH:
            pending = await self.bridge.delivery.pending()
            index = {(p.peer_id, p.kind, p.object_id): p for p in pending}
            self._pending_at = (now, pending, index)
        return self._pending_at[1]

    async def _family(self, peer_id: int, kind: str, object_id: str) -> dict[str, Any] | None:
        await self._pending()
        assert self._pending_at is not None
        return _family_view(self._pending_at[2].get((peer_id, kind, str(object_id))))

    async def _stations(self, ids: list[str]) -> dict[str, StationSnapshot]:
        """The stations with their connectors (last frame as csms knows it now)."""
        await self.bridge.fresh_returns()
        return await self.csms.stations(ids, connectors=True)

    def _evses(self, station: StationSnapshot, now: datetime) -> list[dict[str, Any]]:
        """Each EVSE of a defined station with its OCPI status, as a push would carry it."""
        states = self.bridge.locations.states(station, now)
        out = []
        for evse in station.evses:
            cid = evse["connector_id"]
            state = states[cid]
            out.append(
                {
                    "connector_id": cid,
                    "uid": evse["uid"],
                    "evse_id": evse.get("evse_id"),
                    "status": state.status,
                    "mobie": mobie_name(state.status),
                    "badge": badge_class(state.status),
                    "since": state.since,
                    "ack_key": f"{station.id}/{cid}",
                }
            )
        return out

    # ------------------------------------------------------------------ dashboard

    async def dashboard(self, request: web.Request) -> dict[str, Any]:
        pending = await self._pending()
        peers = await self.bridge.store.peers()
        created = {
            r["id"]: r
            for r in await self.store.read("SELECT id, created_at, updated_at FROM ocpi_peers")
        }
        rows = []
        for p in peers:
            mine = [f for f in pending if f.peer_id == p.id]
            failing = [f for f in mine if f.failing_since is not None]
            last = None
            if p.status == "registered":
                row = await self.store.read_one(LAST_ACK_SQL, (p.id,))
                last = row["at"] if row else None
            oldest_failing = min(failing, key=lambda f: f.failing_since) if failing else None
            rows.append(
                {
                    "id": p.id,
                    "status": p.status,
                    "roles": [
                        f"{r.get('role')} {r.get('country_code')}/{r.get('party_id')}"
                        for r in p.roles
                    ],
                    "name": next(
                        (r.get("business_details", {}).get("name") for r in p.roles), None
                    ),
                    "is_hub": p.is_hub,
                    "granted": " ".join(
                        [p.grant_role or "—", ", ".join(sorted(f"{c}/{i}" for c, i in p.parties))]
                    ).strip(),
                    "grant_source": p.grant_source,
                    "version": p.version,
                    "since": (created.get(p.id) or {}).get("created_at"),
                    "last_ack": last,
                    "backlog": len(mine),
                    "failing": len(failing),
                    "failing_since": oldest_failing.failing_since if oldest_failing else None,
                    "last_error": oldest_failing.last_error if oldest_failing else None,
                    "oldest_pending": min(
                        (f.dirty_since for f in mine if f.dirty_since), default=None
                    ),
                }
            )
        counts = await self._evse_counts()
        notices = await self.store.read_one(
            "SELECT COUNT(*) AS n FROM ocpi_notices WHERE delivered_at IS NULL"
        )
        return {
            "peers": rows,
            "registered": any(r["status"] == "registered" for r in rows),
            "evse_counts": counts,
            "notices_pending": int(notices["n"]) if notices else 0,
            "versions_url": self.bridge.versions_url,
            "party": f"{self.bridge.settings.country_code}/{self.bridge.settings.party_id}",
        }

    async def _evse_counts(self) -> list[dict[str, Any]]:
        """EVSEs by OCPI status as the hub should have them now (every defined station)."""
        now = self.bridge.clock.now()
        counts: dict[str, int] = {}
        for station in await self.csms.defined_stations():
            for state in self.bridge.locations.states(station, now).values():
                counts[state.status] = counts.get(state.status, 0) + 1
        order = {s: i for i, s in enumerate(MOBIE_NAMES)}
        return [
            {"status": s, "mobie": mobie_name(s), "badge": badge_class(s), "count": n}
            for s, n in sorted(counts.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
        ]

    # ------------------------------------------------------------------ stations list

    async def stations(self, request: web.Request, station_ids: list[str]) -> dict[str, Any]:
        stations = await self._stations(station_ids)
        defined = [sid for sid in station_ids if sid in stations and stations[sid].defined]
        now = self.bridge.clock.now()
        hub = self.hub()
        evses = {sid: self._evses(stations[sid], now) for sid in defined}
        acks: dict[str, dict] = {}
        if hub is not None:
            keys = [e["ack_key"] for sid in defined for e in evses[sid]]
            acks = await self._acks(hub.id, "evse", keys)
        out: dict[str, Any] = {}
        for sid in station_ids:
            if sid not in evses:
                out[sid] = {"defined": False}
                continue
            for e in evses[sid]:
                acked, _ = _ack_state((acks.get(e["ack_key"]) or {}).get("state"))
                e["hub_status"] = acked
            out[sid] = {
                "defined": True,
                "evses": evses[sid],
                "hub": hub is not None,
                "pending": await self._family(hub.id, "location", sid) if hub else None,
            }
        return out

    # ------------------------------------------------------------------ station page

    async def station(self, request: web.Request, station_id: str) -> dict[str, Any]:
        stations = await self._stations([station_id])
        station = stations.get(station_id)
        if station is None or not station.defined:
            return {"defined": False}
        now = self.bridge.clock.now()
        location = self.bridge.locations.location(station, now)
        evses = self._evses(station, now)
        peers = []
        for peer in sorted(self.bridge.registered_peers(), key=lambda p: p.id):
            if not peer.endpoint("locations", "RECEIVER"):
                continue
            loc_ack = (await self._acks(peer.id, "location", [station_id])).get(station_id)
            evse_acks = await self._acks(peer.id, "evse", [e["ack_key"] for e in evses])
            hub_evses = []
            for e in evses:
                ack = evse_acks.get(e["ack_key"])
                status, updated = _ack_state(ack["state"] if ack else None)
                hub_evses.append(
                    {
                        "uid": e["uid"],
                        "status": status,
                        "mobie": mobie_name(status),
                        "badge": badge_class(status),
                        "last_updated": updated,
                        "acked_at": ack["acked_at"] if ack else None,
                        "in_sync": status == e["status"],
                    }
                )
            peers.append(
                {
                    "id": peer.id,
                    "label": _peer_label(peer),
                    "location_last_updated": loc_ack["state"] if loc_ack else None,
                    "location_acked_at": loc_ack["acked_at"] if loc_ack else None,
                    "location_in_sync": bool(
                        loc_ack and loc_ack["state"] >= location["last_updated"]
                    ),
                    "evses": hub_evses,
                    "pending": await self._family(peer.id, "location", station_id),
                }
            )
        return {
            "defined": True,
            "station_id": station_id,
            "location": location,
            "location_json": json.dumps(location, indent=2, ensure_ascii=False),
            "evses": evses,
            "peers": peers,
            "tz": location.get("time_zone"),
        }

    # ------------------------------------------------------------------ sessions list

    async def sessions(self, request: web.Request, transaction_ids: list[int]) -> dict[int, Any]:
        if not transaction_ids:
            return {}
        hub = self.hub()
        keys = [str(tx) for tx in transaction_ids]
        session_acks: dict[str, dict] = {}
        cdr_acks: dict[str, dict] = {}
        if hub is not None:
            session_acks = await self._acks(hub.id, "session", keys)
            cdr_acks = await self._acks(hub.id, "cdr", keys)
        tokens = await self._tokens(transaction_ids)
        out: dict[int, Any] = {}
        for tx in transaction_ids:
            key = str(tx)
            sack = session_acks.get(key)
            status, _ = _ack_state(sack["state"] if sack else None)
            cack = cdr_acks.get(key)
            out[tx] = {
                "hub": hub is not None,
                "session_status": status,
                "session_acked_at": sack["acked_at"] if sack else None,
                "cdr_acked_at": cack["acked_at"] if cack else None,
                "pending": await self._family(hub.id, "session", key) if hub else None,
                "token": tokens.get(tx),
            }
        return out

    async def _tokens(self, transaction_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The OCPI token (contract id, issuer) of sessions started with an eMSP's token, and
        ours, of type AD_HOC_USER, of ad hoc sessions (paid on the spot)."""
        txs = await self.csms.transactions_by_id(transaction_ids)
        s = self.bridge.settings
        out: dict[int, dict[str, Any]] = {
            tx.id: {
                "id": tx.id,
                "uid": tx.id_tag,
                "contract_id": tx.id_tag,
                "country_code": s.country_code,
                "party_id": s.party_id,
                "type": AD_HOC_TOKEN_TYPE,
                "tag_owner": tx.tag_owner,
            }
            for tx in txs.values()
            if is_ad_hoc(tx.tag_owner)
        }
        started = {
            tx.id_tag
            for tx in txs.values()
            if tx.tag_owner is not None and not is_ad_hoc(tx.tag_owner)
        }
        if not started:
            return out
        tokens: dict[str, list[dict[str, Any]]] = {}
        for r in await self.store.read(
            tokens_sql(self.store.dialect),
            (json.dumps(sorted(started)),),
        ):
            tokens.setdefault(r["uid"].upper(), []).append(r)
        for tx in txs.values():
            if tx.tag_owner is None or tx.id in out:
                continue
            for r in tokens.get(tx.id_tag.upper(), []):
                if f"{r['country_code'].upper()}/{r['party_id'].upper()}" == tx.tag_owner:
                    out[tx.id] = {**r, "id": tx.id, "tag_owner": tx.tag_owner}
        return out

    # ------------------------------------------------------------------ compliance page

    def _period(self, request: web.Request) -> tuple[str, str, datetime, datetime, str]:
        """(from, to) as typed (local dates, inclusive), the UTC range, and an error."""
        tz = self.ui.settings.time_zone
        now = self.bridge.clock.now()
        today = now.astimezone(web_fmt.zone(tz)).date()
        default_from = (today - timedelta(days=DEFAULT_PERIOD_DAYS - 1)).isoformat()
        date_from = request.query.get("from", "").strip() or default_from
        date_to = request.query.get("to", "").strip() or today.isoformat()
        error = ""
        try:
            since = web_fmt.parse_local_date(date_from, tz)
            until = web_fmt.parse_local_date(date_to, tz, end=True)
            assert since is not None and until is not None
        except ValueError:
            error = self.ui.t("ocpi.bad_period")
            date_from, date_to = default_from, today.isoformat()
            since = web_fmt.parse_local_date(date_from, tz)
            until = web_fmt.parse_local_date(date_to, tz, end=True)
            assert since is not None and until is not None
        if until <= since:
            error = self.ui.t("ocpi.bad_period")
            since, until = until - timedelta(days=1), until
            date_from = date_to
        if until - since > timedelta(days=MAX_PERIOD_DAYS):
            error = self.ui.t("ocpi.period_too_long", days=MAX_PERIOD_DAYS)
            since = until - timedelta(days=MAX_PERIOD_DAYS)
            date_from = (since.astimezone(web_fmt.zone(tz)).date()).isoformat()
        return date_from, date_to, since, until, error

    async def _summary(self, since: datetime, until: datetime) -> dict[str, dict[str, Any]]:
        """Per rule, over the period: pushes measured, late, failed, the largest delay and how
        many stations or sessions had a late or failed push (a range of whole hours on the
        primary key, whose first column is the hour)."""
        await self.bridge.delivery.flush_compliance()
        rows = await self.store.read(SUMMARY_SQL, (hour_of(since), to_db(until)))
        limits = self.bridge.compliance.limits
        out = {}
        for rule in PUSHED_RULES:
            r = next((x for x in rows if x["rule"] == rule), None)
            out[rule] = {
                "samples": int(r["samples"]) if r else 0,
                "late": int(r["late"]) if r else 0,
                "failures": int(r["failures"]) if r else 0,
                "largest": r["largest"] if r and r["samples"] else None,
                "objects": int(r["objects"]) if r else 0,
                "limit": limits.get(rule),
            }
        return out

    async def _problem_stations(self, since: datetime, until: datetime) -> list[str]:
        rows = await self.store.read(PROBLEMS_SQL, (hour_of(since), to_db(until)))
        return [r["object_id"] for r in rows]

    async def _station_page(
        self, search: str, problems: list[str] | None, limit: int, offset: int
    ) -> tuple[list[str], int]:
        """A page of station ids, by id: all, those matching ``search`` (id or Location id),
        or only ``problems``."""
        if problems is not None:
            if search:
                needle = search.lower()
                problems = [p for p in problems if needle in p.lower()]
            return problems[offset : offset + limit], len(problems)
        return await self.csms.station_ids(search, limit, offset)

    async def _station_rows(
        self, ids: list[str], since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        stations = await self._stations(ids)
        report = await self.bridge.compliance.report(since, until, "station", ids)
        measured: dict[str, dict[str, dict[str, Any]]] = {}
        for item in report:
            measured.setdefault(item["id"], {})[item["rule"]] = item
        defined = [sid for sid in ids if sid in stations and stations[sid].defined]
        hub = self.hub()
        loc_acks = await self._acks(hub.id, "location", defined) if hub else {}
        now = self.bridge.clock.now()
        out = []
        for sid in ids:
            st = stations.get(sid)
            if st is None:
                continue
            definition = st.definition or {}
            tz = (definition.get("location") or {}).get("time_zone") or self.ui.settings.time_zone
            evses = self._evses(st, now) if st.defined else []
            silent = None
            last_seen = st.last_seen_at
            if last_seen is not None:
                silent = (now - last_seen).total_seconds()
            rules = measured.get(sid, {})
            ack = loc_acks.get(sid)
            out.append(
                {
                    "id": sid,
                    "defined": st.defined,
                    "tz": tz,
                    "connected": self.csms.is_connected(sid),
                    "last_seen": to_db(last_seen) if last_seen else None,
                    "silent_seconds": silent,
                    "evses": evses,
                    "verdicts": judge(st.config_snapshot, self.csms.traffic_measured(sid)),
                    "rules": rules,
                    "location_acked_at": ack["acked_at"] if ack else None,
                    "r1": self._r1(st, rules.get("R1"), ack),
                }
            )
        return out

    @staticmethod
    def _r1(
        station: StationSnapshot, measured: dict[str, Any] | None, ack: dict[str, Any] | None
    ) -> str:
        """R1 for a station: 'late' or 'ok' when its PLANNED Location PUT was measured in the
        period; otherwise 'on_hub' (the hub has its Location) or 'missing'."""
        if not station.defined:
            return "undefined"
        if measured and measured["samples"]:
            return "late" if measured["late"] or measured["failed_pushes"] else "ok"
        if measured and measured["failed_pushes"]:
            return "missing"
        return "on_hub" if ack else "missing"

    async def _session_rows(
        self, station: str, since: datetime, until: datetime, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        rows, total = await self.ui.queries.sessions(
            SessionFilter(station or None, since, until), limit, offset
        )
        ids = [str(r["id"]) for r in rows]
        report = await self.bridge.compliance.report(since, until, "session", ids)
        r5 = {item["id"]: item for item in report if item["rule"] == "R5"}
        hub = self.hub()
        session_acks = await self._acks(hub.id, "session", ids) if hub else {}
        cdr_acks = await self._acks(hub.id, "cdr", ids) if hub else {}
        limit_r5 = self.bridge.compliance.limits.get("R5", math.inf)
        now = self.bridge.clock.now()
        for r in rows:
            key = str(r["id"])
            m = r5.get(key)
            sack = session_acks.get(key)
            largest = m["largest_seconds"] if m else None
            # an active session's current silence is a gap too, still growing
            open_gap = None
            if r["active"] and sack is not None:
                acked = from_db(sack["acked_at"])
                if acked is not None:
                    open_gap = (now - acked).total_seconds()
            status, _ = _ack_state(sack["state"] if sack else None)
            r.update(
                {
                    "r5": m,
                    "largest_gap": largest,
                    "open_gap": open_gap,
                    "late_now": open_gap is not None and open_gap > limit_r5,
                    "session_status": status,
                    "session_acked_at": sack["acked_at"] if sack else None,
                    "cdr_acked_at": (cdr_acks.get(key) or {}).get("acked_at"),
                    "pending": await self._family(hub.id, "session", key) if hub else None,
                    "token_type": AD_HOC_TOKEN_TYPE if is_ad_hoc(r.get("tag_owner")) else None,
                }
            )
            start = web_fmt.as_datetime(r["start_time"])
            end = web_fmt.as_datetime(r["stop_time"]) if not r["active"] else now
            r["duration"] = (end - start).total_seconds() if start and end else None
        return rows, total

    async def compliance_page(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        view = "sessions" if q.get("view") == "sessions" else "stations"
        date_from, date_to, since, until, error = self._period(request)
        search = q.get("station", "").strip()[:255]
        only_problems = q.get("problems") == "1"
        size = self.ui.settings.page_size
        try:
            number = max(1, int(q.get("page", "1")))
        except ValueError:
            number = 1
        offset = (number - 1) * size
        summary = await self._summary(since, until)
        stations: list[dict[str, Any]] = []
        sessions: list[dict[str, Any]] = []
        if view == "stations":
            problems = await self._problem_stations(since, until) if only_problems else None
            ids, total = await self._station_page(search, problems, size, offset)
            stations = await self._station_rows(ids, since, until)
        else:
            sessions, total = await self._session_rows(search, since, until, size, offset)
        filters = [
            ("view", view),
            ("from", date_from),
            ("to", date_to),
            ("station", search),
            ("problems", "1" if only_problems else ""),
        ]
        s = self.bridge.settings
        return self.ui.render(
            request,
            "ocpi/compliance.html",
            {
                "title": self.ui.t("ocpi.compliance.title"),
                "view": view,
                "date_from": date_from,
                "date_to": date_to,
                "since": since,
                "until": min(until, self.bridge.clock.now()),
                "zone": self.ui.settings.time_zone,
                "station": search,
                "only_problems": only_problems,
                "error": error,
                "summary": summary,
                "stations": stations,
                "sessions": sessions,
                "hub": self.hub(),
                "offline_after": s.offline_after,
                "session_interval": s.session_update_interval,
                "page": {
                    "number": number,
                    "pages": max(1, math.ceil(total / size)),
                    "total": total,
                },
                "pager_query": query_string(filters),
                "view_query": query_string(filters[1:]),
            },
        )

    # ------------------------------------------------------------------ hub page

    async def hub_page(
        self,
        request: web.Request,
        token: str | None = None,
        error: str | None = None,
        grant: Grant | None = None,
    ) -> web.Response:
        data = await self.dashboard(request)
        events = await self.bridge.store.security_events(SECURITY_EVENTS_SHOWN)
        pending = sorted(
            await self._pending(),
            key=lambda f: (
                f.failing_since is None,
                f.dirty_since or datetime.max.replace(tzinfo=UTC),
            ),
        )
        labels = {p.id: _peer_label(p) for p in await self.bridge.store.peers()}
        data.update(
            {
                "title": self.ui.t("ocpi.hub.title"),
                "pending": [
                    {
                        "peer": labels.get(f.peer_id, str(f.peer_id)),
                        "kind": f.kind,
                        "object_id": f.object_id,
                        **(_family_view(f) or {}),
                    }
                    for f in pending[:PENDING_SHOWN]
                ],
                "pending_total": len(pending),
                "token_a": token,
                "token_a_grant": grant.describe() if grant else None,
                "token_a_error": error,
                "security_events": events,
                "tz": self.ui.settings.time_zone,
            }
        )
        status = 201 if token else 422 if error else 200
        return self.ui.render(request, "ocpi/hub.html", data, status=status)

    async def create_token_a(self, request: web.Request) -> web.StreamResponse:
        """A new token A granting a role for parties, with what to send MOBI.E to schedule
        the tests (annex I)."""
        form = await request.post()
        try:
            grant = Grant.make(form.get("role"), str(form.get("parties") or ""))
        except ValueError as e:
            return await self.hub_page(request, error=str(e))
        token = new_token()
        await self.bridge.store.add_token_a(token, grant.role, grant.party_texts())
        session = self.ui.session_of(request)
        log.info(
            "token A created from the web interface",
            user=session and session.user,
            granted=grant.describe(),
        )
        return await self.hub_page(request, token, grant=grant)

    # ------------------------------------------------------------------ peers (issue 19)

    async def _peer_rows(self) -> list[dict[str, Any]]:
        """Every peer as the Peers page lists it: its grant, policy, status, failing pushes
        now and the last 24 hours' traffic."""
        peers = await self.bridge.store.peers()
        since = self.bridge.clock.now() - timedelta(hours=TRAFFIC_HOURS)
        traffic = await self.bridge.traffic.summary(since)
        failing: dict[int, int] = {}
        for f in await self._pending():
            if f.failing_since is not None:
                failing[f.peer_id] = failing.get(f.peer_id, 0) + 1
        rows = []
        for p in peers:
            item = peer_item(p, traffic.get(p.id))
            item["failing"] = failing.get(p.id, 0)
            item["state"] = _peer_state(p)
            rows.append(item)
        return rows

    def _peers_context(self) -> dict[str, Any]:
        s = self.bridge.settings
        return {
            "title": self.ui.t("ocpi.peers.title"),
            "versions_url": self.bridge.versions_url,
            "party": f"{s.country_code}/{s.party_id}",
            "roles": ROLES,
            "callable": CALLABLE,
            "pushed": PUSHED,
            "versions": VERSIONS,
            "tz": self.ui.settings.time_zone,
            "form": {},
        }

    async def peers_page(
        self,
        request: web.Request,
        *,
        status: int = 200,
        **extra: Any,
    ) -> web.Response:
        """The peers: who they are, what they may use and receive, how their traffic goes;
        for admins, the forms connecting a new one."""
        data = self._peers_context()
        data.update(
            {
                "peers": await self._peer_rows(),
                "flash": self.ui.pop_flash(self.ui.session_of(request)),
                "mobie_mode": self.bridge.store.mobie_mode,
            }
        )
        data.update(extra)
        return self.ui.render(request, "ocpi/peers.html", data, status=status)

    async def peers_token_a(self, request: web.Request) -> web.StreamResponse:
        """A token A for a new peer, granting a role for parties with a policy; shown once,
        with our versions URL."""
        form = self.ui.form(request)
        try:
            texts = _form_texts(form, GRANT_FIELDS)
            grant = Grant.make(
                texts["role"],
                texts["parties"],
                _policy_form(form, texts, new=True),
                self.bridge.store.mobie_mode,
            )
        except ValueError as e:
            return await self.peers_page(request, status=422, token_error=str(e), form=_echo(form))
        token = new_token()
        await self.bridge.store.add_token_a(token, grant.role, grant.party_texts(), grant.policy)
        session = self.ui.session_of(request)
        log.info(
            "token A created from the peers page",
            user=session and session.user,
            granted=grant.describe(),
        )
        return await self.peers_page(
            request, status=201, token_a=token, token_a_grant=grant.describe()
        )

    async def peers_register(self, request: web.Request) -> web.StreamResponse:
        """We register with a peer that gave us its versions URL and a token A."""
        form = self.ui.form(request)
        try:
            texts = _form_texts(form, REGISTER_FIELDS)
            url, token = texts["versions_url"].strip(), texts["token"].strip()
            if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
                raise ValueError("versions_url: an http(s) URL is required")
            if not token or not all(33 <= ord(c) < 127 for c in token):
                raise ValueError("token: the peer's token A (printable characters, no spaces)")
            grant = Grant.make(
                texts["role"],
                texts["parties"],
                _policy_form(form, texts, new=True),
                self.bridge.store.mobie_mode,
            )
        except ValueError as e:
            return await self.peers_page(
                request, status=422, register_error=str(e), form=_echo(form)
            )
        try:
            peer = await self.bridge.credentials.register_with(url, token, grant)
        except OcpiError as e:
            error, status = f"OCPI {e.status_code}: {e.message}", 502
        except OcpiCallFailed as e:
            error, status = str(e), 502
        except ValueError as e:  # a granted party is already another peer's
            error, status = str(e), 409
        else:
            session = self.ui.session_of(request)
            log.info(
                "registered with a peer from the peers page",
                user=session and session.user,
                peer_id=peer.id,
                granted=grant.describe(),
            )
            if session is not None:
                self.ui.flash(session, {"ok": True, "message": self.ui.t("ocpi.peers.registered")})
            return _see_other(f"/peers/{peer.id}")
        return await self.peers_page(
            request, status=status, register_error=error[:300], form=_echo(form)
        )

    async def _peer_or_404(self, request: web.Request) -> Peer | web.Response:
        peer = await find_peer(self.bridge, peer_id_of(request))
        if peer is None:
            return self.ui.error(request, 404, "ocpi.peers.unknown")
        return peer

    async def peer_page(
        self, request: web.Request, *, status: int = 200, **extra: Any
    ) -> web.Response:
        """One peer: its policy (a form for admins), suspend, resume, remove, its traffic
        per hour, failing pushes, refusals and (a hub) the parties it connects. A viewer
        sees neither its addresses nor what the operator agreed with it (hidden Locations,
        tariffs) nor other parties' details."""
        found = await self._peer_or_404(request)
        if isinstance(found, web.Response):
            return found
        peer = found
        session = self.ui.session_of(request)
        admin = bool(session and session.is_admin)
        now = self.bridge.clock.now()
        since = now - timedelta(hours=TRAFFIC_HOURS)
        traffic = self.bridge.traffic
        item = peer_item(peer, (await traffic.summary(since)).get(peer.id))
        item["state"] = _peer_state(peer)
        pending = [f for f in await self._pending() if f.peer_id == peer.id]
        data = self._peers_context()
        data.update(
            {
                "title": self.ui.t("ocpi.peers.peer_title", name=peer.name),
                "peer": item,
                "hourly": list(reversed(await traffic.hourly(peer.id, since))),
                "failures": await traffic.failures(peer.id, since),
                "failing_now": sum(1 for f in pending if f.failing_since is not None),
                "backlog": len(pending),
                "events": await peer_security_events(self.bridge, peer.id, PEER_EVENTS)
                if admin
                else [],
                "clients": await self.bridge.store.client_info(hub_peer_id=peer.id, limit=500)
                if admin and peer.is_hub
                else [],
                "uses_allowed": [m for m in CALLABLE if m in ROLE_USES.get(item_role(peer), ())],
                "receives_allowed": [
                    m for m in PUSHED if m in ROLE_RECEIVES.get(item_role(peer), ())
                ],
                "policy_form": _policy_echo(peer.policy),
                "flash": self.ui.pop_flash(session),
            }
        )
        data.update(extra)
        return self.ui.render(request, "ocpi/peer.html", data, status=status)

    async def peer_policy(self, request: web.Request) -> web.StreamResponse:
        found = await self._peer_or_404(request)
        if isinstance(found, web.Response):
            return found
        peer = found
        form = self.ui.form(request)
        try:
            texts = _form_texts(form, POLICY_FIELDS)
            data = _policy_form(form, texts, new=False)
            policy = PeerPolicy.make(item_role(peer), data, base=peer.policy)
        except ValueError as e:
            return await self.peer_page(
                request, status=422, policy_error=str(e), policy_form=_echo(form)
            )
        await self.bridge.store.set_policy(peer.id, policy)
        await self.bridge.peers_changed()
        session = self.ui.session_of(request)
        log.info("peer policy changed from the web", user=session and session.user, peer_id=peer.id)
        if session is not None:
            self.ui.flash(session, {"ok": True, "message": self.ui.t("ocpi.peers.saved")})
        return _see_other(f"/peers/{peer.id}")

    async def peer_suspend(self, request: web.Request) -> web.StreamResponse:
        return await self._suspend(request, True)

    async def peer_resume(self, request: web.Request) -> web.StreamResponse:
        return await self._suspend(request, False)

    async def _suspend(self, request: web.Request, suspended: bool) -> web.StreamResponse:
        found = await self._peer_or_404(request)
        if isinstance(found, web.Response):
            return found
        peer = found
        session = self.ui.session_of(request)
        if peer.status != "registered":
            return await self.peer_page(
                request, status=409, action_error=self.ui.t("ocpi.peers.not_registered")
            )
        if (peer.suspended_at is not None) != suspended:
            await self.bridge.store.set_suspended(peer.id, suspended)
            await self.bridge.peers_changed()
            log.info(
                "peer suspended from the web" if suspended else "peer resumed from the web",
                user=session and session.user,
                peer_id=peer.id,
            )
        if session is not None:
            key = "ocpi.peers.suspended_done" if suspended else "ocpi.peers.resumed_done"
            self.ui.flash(session, {"ok": True, "message": self.ui.t(key)})
        return _see_other(f"/peers/{peer.id}")

    async def peer_remove(self, request: web.Request) -> web.StreamResponse:
        """Remove a peer, once the admin confirmed it (the confirmation box)."""
        found = await self._peer_or_404(request)
        if isinstance(found, web.Response):
            return found
        peer = found
        if peer.status != "registered":
            return await self.peer_page(
                request, status=409, action_error=self.ui.t("ocpi.peers.not_registered")
            )
        if self.ui.form(request).get("confirm") != "yes":
            return await self.peer_page(
                request, status=422, action_error=self.ui.t("ocpi.peers.confirm_needed")
            )
        result = await remove_peer(self.bridge, peer)
        session = self.ui.session_of(request)
        log.info("peer removed from the web", user=session and session.user, peer_id=peer.id)
        if session is not None:
            key = "ocpi.peers.removed_told" if result["peer_notified"] else "ocpi.peers.removed"
            self.ui.flash(
                session,
                {"ok": True, "message": self.ui.t(key, name=peer.name, answer=result["answer"])},
            )
        return _see_other("/peers")


# ---------------------------------------------------------------------- peers' forms

POLICY_FIELDS = {
    "name": 200,
    "hidden": 40_000,
    "tariffs": 20_000,
    "version": 10,
    "mobie": 5,
    "realtime_auth": 5,
}
GRANT_FIELDS = {"role": 10, "parties": 1000, **POLICY_FIELDS}
REGISTER_FIELDS = {"versions_url": 500, "token": 500, **GRANT_FIELDS}
MULTILINE = frozenset({"hidden", "tariffs", "parties"})
MAX_CHOICES = 20  # ticked modules in a form


def _form_texts(form: Mapping[str, Any], fields: dict[str, int]) -> dict[str, str]:
    """The text fields of a posted form, each checked: not longer than its limit, no control
    characters (line breaks only in the multi-line ones). ValueError names the field."""
    out: dict[str, str] = {}
    for name, limit in fields.items():
        value = form.get(name)
        text = value if isinstance(value, str) else ""
        if len(text) > limit:
            raise ValueError(f"{name}: at most {limit} characters")
        allowed = "\r\n\t" if name in MULTILINE else ""
        if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in text):
            raise ValueError(f"{name}: control characters are not allowed")
        out[name] = text
    return out


def _choices(form: Any, key: str) -> list[str]:
    values = [v for v in form.getall(key, []) if isinstance(v, str)]
    if len(values) > MAX_CHOICES:
        raise ValueError(f"{key}: at most {MAX_CHOICES} modules")
    return values


def _policy_form(form: Any, texts: dict[str, str], new: bool) -> dict[str, Any] | None:
    """A policy's fields from a form. ``new`` (a token A, a registration): what is left
    empty is the role's default (no module ticked: what the role allows; MOBI.E and
    real-time authorization: yes, no or the role's default). Otherwise (the policy form of
    a peer, which shows every field): the form is the whole policy."""
    data: dict[str, Any] = {}
    for key in ("name", "hidden", "tariffs"):
        if texts[key].strip() or not new:
            data[key] = texts[key]
    for key in ("uses", "receives"):
        values = _choices(form, key)
        if values or not new:
            data[key] = values
    for key in ("mobie", "realtime_auth"):
        value = texts[key]
        if new:
            if value in ("yes", "no"):
                data[key] = value == "yes"
            elif value:
                raise ValueError(f"{key}: yes, no, or the role's default")
        else:
            data[key] = value in ("yes", "on")
    if texts["version"] or not new:
        data["version"] = texts["version"] or None
    return data if data or not new else None


def _echo(form: Any) -> dict[str, Any]:
    """What a refused form had, to show it again (cut short)."""
    out: dict[str, Any] = {
        k: v[:2000] for k, v in form.items() if isinstance(v, str) and k not in ("csrf", "token")
    }
    for key in ("uses", "receives"):
        out[key] = [v for v in form.getall(key, []) if isinstance(v, str)][:MAX_CHOICES]
    return out


def _policy_echo(policy: PeerPolicy) -> dict[str, Any]:
    """A policy as its form shows it."""
    return {
        "name": policy.name,
        "uses": sorted(policy.uses),
        "receives": sorted(policy.receives),
        "mobie": "yes" if policy.mobie else "",
        "realtime_auth": "yes" if policy.realtime_auth else "",
        "hidden": "\n".join(sorted(policy.hidden)),
        "tariffs": "\n".join(f"{k}={v}" for k, v in sorted(policy.tariffs.items())),
        "version": policy.version or "",
    }


def _peer_state(peer: Peer) -> str:
    if peer.status != "registered":
        return "unregistered"
    return "suspended" if peer.suspended_at is not None else "active"


def item_role(peer: Peer) -> str:
    """The role a peer's policy is checked against (a peer without a grant: EMSP's)."""
    return peer.grant_role or "EMSP"


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# The provider's own reads (tests/test_web_ocpi_volume.py checks their plans at volume).
# What one peer acknowledged of some objects: a search on the primary key.
def acks_sql(d: Dialect) -> str:
    return (
        "SELECT object_id, state, acked_at FROM ocpi_push_acks WHERE peer_id = ? "
        f"AND kind = ? AND object_id IN ({d.json_values('?')})"
    )


# A peer's newest acknowledgement: reads that peer's rows through the primary key's first
# column (about 20 ms at 200,000 of them; no index of its own, which every push would pay).
LAST_ACK_SQL = "SELECT MAX(acked_at) AS at FROM ocpi_push_acks WHERE peer_id = ?"
# Per rule over whole hours: a range of the primary key, whose first column is the hour.
SUMMARY_SQL = (
    "SELECT rule, SUM(samples) AS samples, SUM(late) AS late, SUM(failures) AS failures, "
    "MAX(max_seconds) AS largest, COUNT(DISTINCT CASE WHEN late > 0 OR failures > 0 "
    "THEN object_kind || ':' || object_id END) AS objects "
    "FROM ocpi_compliance WHERE bucket >= ? AND bucket < ? GROUP BY rule"
)
PROBLEMS_SQL = (
    "SELECT DISTINCT object_id FROM ocpi_compliance WHERE bucket >= ? AND bucket < ? "
    "AND object_kind = 'station' AND (late > 0 OR failures > 0) ORDER BY object_id"
)


# The eMSP token each session was started with (uid index), for a page of sessions.
def tokens_sql(d: Dialect) -> str:
    return (
        f"SELECT uid, country_code, party_id, type, {d.json_text('body', 'contract_id')} "
        f"AS contract_id FROM ocpi_tokens WHERE uid IN ({d.json_values('?')})"
    )


# (as SQLite runs them: their plans are checked at volume)
ACKS_SQL = acks_sql(Dialect("sqlite"))
TOKENS_SQL = tokens_sql(Dialect("sqlite"))


def _peer_label(peer: Peer) -> str:
    role = peer.roles[0] if peer.roles else {}
    name = (role.get("business_details") or {}).get("name") or ""
    party = f"{role.get('country_code', '')}/{role.get('party_id', '')}"
    return (
        f"{name} ({role.get('role', '?')} {party})" if name else f"{role.get('role', '?')} {party}"
    )


# Every text of the provider's templates, in both languages (a test checks they match).
PT: dict[str, str] = {
    "ocpi.no_peer": (
        "Nenhum hub registado: a MOBI.E regista-se com o nosso URL de versões e um token A "
        "(ver Ligação ao hub)."
    ),
    "ocpi.peer": "Parte OCPI",
    "ocpi.peer_status.registered": "registada",
    "ocpi.peer_status.unregistered": "não registada",
    "ocpi.version": "Versão",
    "ocpi.registered_since": "Registada desde",
    "ocpi.last_ack": "Último envio confirmado",
    "ocpi.backlog": "Envios por confirmar",
    "ocpi.failing": "Envios a falhar",
    "ocpi.failing_since": "A falhar desde",
    "ocpi.last_error": "Último erro",
    "ocpi.oldest_pending": "Por confirmar desde",
    "ocpi.evses_by_status": "Pontos de carregamento (EVSE) por estado OCPI, como a MOBI.E os vê",
    "ocpi.ocpi_status": "Estado OCPI",
    "ocpi.mobie_word": "Nome MOBI.E",
    "ocpi.count": "Quantidade",
    "ocpi.no_mobie_word": "sem nome no perfil MOBI.E: estado OCPI",
    "ocpi.notices_pending": "E-mails de entrada em operação (R2) por entregar: {n}",
    "ocpi.links": "Detalhes",
    "ocpi.not_defined": "sem definição: não enviado ao hub",
    "ocpi.hub_has": "no hub: {status}",
    "ocpi.hub_missing": "ainda não está no hub",
    "ocpi.pending": "por enviar",
    "ocpi.in_flight": "a enviar ({kind})",
    "ocpi.failing_short": "a falhar desde {since}",
    "ocpi.attempts": "Tentativas",
    "ocpi.next_attempt": "Próxima tentativa",
    "ocpi.no_hub": "sem hub registado",
    "ocpi.station.location": "Location enviada ao hub",
    "ocpi.station.location_id": "Id da Location",
    "ocpi.station.last_updated": "last_updated atual",
    "ocpi.station.hub_copy": "O que {peer} confirmou",
    "ocpi.station.location_acked": "last_updated confirmado",
    "ocpi.station.acked_at": "Confirmado em",
    "ocpi.station.in_sync": "em dia",
    "ocpi.station.out_of_sync": "desatualizado: envio pendente",
    "ocpi.station.evse_uid": "UID do EVSE",
    "ocpi.station.connector": "Conector OCPP",
    "ocpi.station.now": "Estado atual",
    "ocpi.station.since": "Desde",
    "ocpi.station.hub_status": "Estado no hub",
    "ocpi.station.pending": "Envios pendentes desta Location",
    "ocpi.station.nothing_pending": "Nada por enviar: o hub tem o estado atual.",
    "ocpi.station.json": "A Location atual em JSON (como é enviada)",
    "ocpi.station.no_peer": "Nenhuma parte registada recebe Locations.",
    "ocpi.station.compliance": "Conformidade deste posto",
    "ocpi.session.put": "Sessão confirmada",
    "ocpi.session.cdr": "CDR confirmado",
    "ocpi.session.not_acked": "por confirmar",
    "ocpi.session.token": "Token OCPI",
    "ocpi.compliance.title": "Conformidade com as regras MOBI.E",
    "ocpi.compliance.intro": (
        "Como a plataforma cumpre as regras R1 e R3 a R8 do Procedimento MOBI.E 02/2023 no "
        "período escolhido: cada envio confirmado pelo hub é medido contra a sua regra."
    ),
    "ocpi.compliance.period": "Período {since} a {until}",
    "ocpi.compliance.stations": "Por posto",
    "ocpi.compliance.sessions": "Por sessão",
    "ocpi.compliance.only_problems": "Só com envios atrasados ou falhados",
    "ocpi.compliance.summary": "Resumo do período (todas as partes registadas)",
    "ocpi.compliance.pushes": "Envios medidos",
    "ocpi.compliance.late": "Atrasados",
    "ocpi.compliance.failed": "Falhados",
    "ocpi.compliance.largest": "Maior",
    "ocpi.compliance.average": "Média",
    "ocpi.compliance.limit": "Limite",
    "ocpi.compliance.objects": "Postos/sessões afetados",
    "ocpi.compliance.station_state": "Estado agora",
    "ocpi.compliance.silent": "sem mensagens há {duration}",
    "ocpi.compliance.none": "Nada neste período.",
    "ocpi.compliance.measured": "{n} medições",
    "ocpi.compliance.r3r4_note": (
        "R3 e R4: intervalos configurados (lidos do posto) e medidos no tráfego recente "
        "desde o último arranque do sistema central."
    ),
    "ocpi.compliance.r5_note": (
        "R5: maior intervalo entre atualizações da sessão confirmadas pelo hub; numa sessão "
        "em curso conta também o intervalo desde a última confirmação."
    ),
    "ocpi.compliance.open_gap": "há {duration} sem atualização",
    "ocpi.compliance.no_hub": (
        "Nenhum hub registado: nada é enviado, as regras R1 e R5 a R8 não se aplicam ainda."
    ),
    "ocpi.r1.ok": "PLANNED enviado a tempo",
    "ocpi.r1.late": "PLANNED atrasado ou falhado",
    "ocpi.r1.on_hub": "Location no hub",
    "ocpi.r1.missing": "Location não está no hub",
    "ocpi.r1.undefined": "posto sem definição",
    "ocpi.rule.R1": "R1: criar o posto na MOBI.E (Location com EVSE PLANNED)",
    "ocpi.rule.R3": "R3: MeterValues pelo menos a cada 5 minutos",
    "ocpi.rule.R4": "R4: Heartbeat a cada 2 minutos",
    "ocpi.rule.R5": "R5: atualização da sessão (PATCH) pelo menos a cada 5 minutos",
    "ocpi.rule.R6": "R6: estado do EVSE enviado em tempo real a cada StatusNotification",
    "ocpi.rule.R7": "R7: EVSE UNKNOWN após 5 minutos sem mensagens (tempo até UNKNOWN)",
    "ocpi.rule.R8": "R8: last_updated da Location a cada mensagem do posto",
    "ocpi.bad_period": "Período inválido: mostra-se o período por omissão.",
    "ocpi.period_too_long": "O período tem no máximo {days} dias: foi encurtado.",
    "ocpi.hub.title": "Ligação ao hub OCPI",
    "ocpi.hub.ours": "Os nossos dados para a MOBI.E (anexo I)",
    "ocpi.hub.versions_url": "URL de versões",
    "ocpi.hub.party": "País/party_id",
    "ocpi.hub.pending": "Envios por confirmar ({total})",
    "ocpi.hub.object": "Objeto",
    "ocpi.hub.token_a": "Novo token A",
    "ocpi.hub.token_a_help": (
        "Para marcar os testes, envie à MOBI.E o URL de versões, um token A e o party_id. "
        "Cada token A serve para um registo e concede um papel (MOBI.E: HUB) para as partes "
        "indicadas: um registo que reclame mais é recusado."
    ),
    "ocpi.hub.token_a_made": (
        "Token A criado. Envie-o à MOBI.E com o URL de versões e o party_id:"
    ),
    "ocpi.hub.shown": "mostrados os primeiros {n}",
    "ocpi.hub.role": "Papel",
    "ocpi.hub.parties": "Partes (ex.: PT/MOB)",
    "ocpi.hub.grants": "Concede: {grant}",
    "ocpi.granted": "Concedido",
    "ocpi.grant.legacy": "registada antes das concessões: mantém o que tinha (rever)",
    "ocpi.hub.security": "Recusas e alertas",
    "ocpi.hub.security_none": "Nenhuma parte tentou mais do que lhe foi concedido.",
    "ocpi.hub.event_at": "Quando",
    "ocpi.hub.event_kind": "O quê",
    "ocpi.hub.event_detail": "Detalhe",
    "ocpi.kind.location": "Location",
    "ocpi.kind.session": "Sessão/CDR",
}

EN: dict[str, str] = {
    "ocpi.no_peer": (
        "No hub registered: MOBI.E registers with our versions URL and a token A (see Hub link)."
    ),
    "ocpi.peer": "OCPI party",
    "ocpi.peer_status.registered": "registered",
    "ocpi.peer_status.unregistered": "unregistered",
    "ocpi.version": "Version",
    "ocpi.registered_since": "Registered since",
    "ocpi.last_ack": "Last acknowledged push",
    "ocpi.backlog": "Pushes not acknowledged",
    "ocpi.failing": "Pushes failing",
    "ocpi.failing_since": "Failing since",
    "ocpi.last_error": "Last error",
    "ocpi.oldest_pending": "Waiting since",
    "ocpi.evses_by_status": "Charging points (EVSEs) by OCPI status, as MOBI.E sees them",
    "ocpi.ocpi_status": "OCPI status",
    "ocpi.mobie_word": "MOBI.E name",
    "ocpi.count": "Count",
    "ocpi.no_mobie_word": "no name in MOBI.E's profile: OCPI status",
    "ocpi.notices_pending": "Commissioning e-mails (R2) not delivered: {n}",
    "ocpi.links": "Details",
    "ocpi.not_defined": "not defined: not sent to the hub",
    "ocpi.hub_has": "hub has: {status}",
    "ocpi.hub_missing": "not on the hub yet",
    "ocpi.pending": "to be sent",
    "ocpi.in_flight": "sending ({kind})",
    "ocpi.failing_short": "failing since {since}",
    "ocpi.attempts": "Attempts",
    "ocpi.next_attempt": "Next attempt",
    "ocpi.no_hub": "no hub registered",
    "ocpi.station.location": "Location sent to the hub",
    "ocpi.station.location_id": "Location id",
    "ocpi.station.last_updated": "Current last_updated",
    "ocpi.station.hub_copy": "What {peer} acknowledged",
    "ocpi.station.location_acked": "Acknowledged last_updated",
    "ocpi.station.acked_at": "Acknowledged at",
    "ocpi.station.in_sync": "up to date",
    "ocpi.station.out_of_sync": "out of date: a push is pending",
    "ocpi.station.evse_uid": "EVSE uid",
    "ocpi.station.connector": "OCPP connector",
    "ocpi.station.now": "Status now",
    "ocpi.station.since": "Since",
    "ocpi.station.hub_status": "Status on the hub",
    "ocpi.station.pending": "Pending pushes of this Location",
    "ocpi.station.nothing_pending": "Nothing to send: the hub has the current state.",
    "ocpi.station.json": "The current Location as JSON (as it is pushed)",
    "ocpi.station.no_peer": "No registered party receives Locations.",
    "ocpi.station.compliance": "This station's compliance",
    "ocpi.session.put": "Session acknowledged",
    "ocpi.session.cdr": "CDR acknowledged",
    "ocpi.session.not_acked": "not acknowledged",
    "ocpi.session.token": "OCPI token",
    "ocpi.compliance.title": "Compliance with MOBI.E's rules",
    "ocpi.compliance.intro": (
        "How the platform meets rules R1 and R3 to R8 of Procedimento MOBI.E 02/2023 over the "
        "chosen period: every push the hub acknowledges is measured against its rule."
    ),
    "ocpi.compliance.period": "Period {since} to {until}",
    "ocpi.compliance.stations": "Per station",
    "ocpi.compliance.sessions": "Per session",
    "ocpi.compliance.only_problems": "Only with late or failed pushes",
    "ocpi.compliance.summary": "Summary of the period (every registered party)",
    "ocpi.compliance.pushes": "Pushes measured",
    "ocpi.compliance.late": "Late",
    "ocpi.compliance.failed": "Failed",
    "ocpi.compliance.largest": "Largest",
    "ocpi.compliance.average": "Average",
    "ocpi.compliance.limit": "Limit",
    "ocpi.compliance.objects": "Stations/sessions affected",
    "ocpi.compliance.station_state": "State now",
    "ocpi.compliance.silent": "silent for {duration}",
    "ocpi.compliance.none": "Nothing in this period.",
    "ocpi.compliance.measured": "{n} measurements",
    "ocpi.compliance.r3r4_note": (
        "R3 and R4: intervals as configured (read from the station) and as measured from "
        "its recent traffic since the central system last started."
    ),
    "ocpi.compliance.r5_note": (
        "R5: the largest gap between session updates the hub acknowledged; for an active "
        "session the gap since the last acknowledgement counts too."
    ),
    "ocpi.compliance.open_gap": "no update for {duration}",
    "ocpi.compliance.no_hub": (
        "No hub registered: nothing is pushed, rules R1 and R5 to R8 do not apply yet."
    ),
    "ocpi.r1.ok": "PLANNED pushed in time",
    "ocpi.r1.late": "PLANNED late or failed",
    "ocpi.r1.on_hub": "Location on the hub",
    "ocpi.r1.missing": "Location not on the hub",
    "ocpi.r1.undefined": "station not defined",
    "ocpi.rule.R1": "R1: create the station on MOBI.E (Location with EVSEs PLANNED)",
    "ocpi.rule.R3": "R3: MeterValues at least every 5 minutes",
    "ocpi.rule.R4": "R4: Heartbeat every 2 minutes",
    "ocpi.rule.R5": "R5: Session update PATCH at least every 5 minutes",
    "ocpi.rule.R6": "R6: EVSE status pushed in real time on every StatusNotification",
    "ocpi.rule.R7": "R7: EVSEs UNKNOWN after 5 minutes of silence (time to UNKNOWN)",
    "ocpi.rule.R8": "R8: the Location's last_updated on every message from the station",
    "ocpi.bad_period": "Invalid period: the default period is shown.",
    "ocpi.period_too_long": "A period is at most {days} days: it was shortened.",
    "ocpi.hub.title": "OCPI hub link",
    "ocpi.hub.ours": "Our details for MOBI.E (annex I)",
    "ocpi.hub.versions_url": "Versions URL",
    "ocpi.hub.party": "Country/party_id",
    "ocpi.hub.pending": "Pushes not acknowledged ({total})",
    "ocpi.hub.object": "Object",
    "ocpi.hub.token_a": "New token A",
    "ocpi.hub.token_a_help": (
        "To schedule the tests, send MOBI.E the versions URL, a token A and the party_id. "
        "Each token A serves one registration, and grants a role (MOBI.E: HUB) for the "
        "parties given: a registration claiming more is refused."
    ),
    "ocpi.hub.token_a_made": (
        "Token A created. Send it to MOBI.E with the versions URL and party_id:"
    ),
    "ocpi.hub.shown": "the first {n} shown",
    "ocpi.hub.role": "Role",
    "ocpi.hub.parties": "Parties (e.g. PT/MOB)",
    "ocpi.hub.grants": "It grants: {grant}",
    "ocpi.granted": "Granted",
    "ocpi.grant.legacy": "registered before grants: keeps what it had (review it)",
    "ocpi.hub.security": "Refusals and alerts",
    "ocpi.hub.security_none": "No party has tried more than it was granted.",
    "ocpi.hub.event_at": "When",
    "ocpi.hub.event_kind": "What",
    "ocpi.hub.event_detail": "Detail",
    "ocpi.kind.location": "Location",
    "ocpi.kind.session": "Session/CDR",
}

# The peers pages (issue 19).
PEERS_PT: dict[str, str] = {
    "ocpi.peers.title": "Partes OCPI",
    "ocpi.peers.intro": (
        "Cada parte (a MOBI.E, um eMSP, outro hub): o papel e as partes que lhe concedemos, "
        "o que pode usar e receber, o seu tráfego. A ligação ao hub continua em"
    ),
    "ocpi.peers.name": "Nome",
    "ocpi.peers.parties": "Partes",
    "ocpi.peers.state": "Estado",
    "ocpi.peers.state.active": "ativa",
    "ocpi.peers.state.suspended": "suspensa",
    "ocpi.peers.state.unregistered": "removida",
    "ocpi.peers.uses": "Pode usar",
    "ocpi.peers.receives": "Recebe",
    "ocpi.peers.traffic_24h": "Últimas 24 h",
    "ocpi.peers.version_set": "fixada: {version}",
    "ocpi.peers.requests_short": "pedidos: {ok} ok, {refused} recusados, {failed} erros",
    "ocpi.peers.pushes_short": "envios: {ok} ok, {failed} falhados",
    "ocpi.peers.none": "Nenhuma parte registada.",
    "ocpi.peers.default_when_none": "(nenhum marcado: o que o papel permite)",
    "ocpi.peers.mobie": "Regras e perfil MOBI.E",
    "ocpi.peers.realtime_auth": "Autorização em tempo real",
    "ocpi.peers.role_default": "o do papel",
    "ocpi.peers.yes": "sim",
    "ocpi.peers.no": "não",
    "ocpi.peers.version_choice": "Versão OCPI",
    "ocpi.peers.version_auto": "a mais alta comum",
    "ocpi.peers.hidden": "Locations escondidas (ids)",
    "ocpi.peers.tariffs": "Tarifas substituídas (NOSSA=DELA)",
    "ocpi.peers.connect": "Ligar uma nova parte",
    "ocpi.peers.token_made": (
        "Token A criado (só é mostrado agora). Envie-o à parte com o nosso URL de versões:"
    ),
    "ocpi.peers.token_a": "Token A",
    "ocpi.peers.token_form": "A parte regista-se connosco: um token A",
    "ocpi.peers.token_help": (
        "O token A serve para um registo e concede o papel, as partes e a política "
        "escolhidos; um registo que reclame mais é recusado."
    ),
    "ocpi.peers.register_form": "Registamo-nos na parte: o URL de versões e o token A dela",
    "ocpi.peers.register_help": (
        "Chamamos as versões da parte com o token A dela e enviamos as nossas credenciais; "
        "ela fica com o papel, as partes e a política escolhidos."
    ),
    "ocpi.peers.their_versions_url": "URL de versões da parte",
    "ocpi.peers.their_token": "Token A da parte",
    "ocpi.peers.register": "Registar",
    "ocpi.peers.back": "← Partes OCPI",
    "ocpi.peers.peer_title": "Parte OCPI {name}",
    "ocpi.peers.suspended_since": "desde {since}",
    "ocpi.peers.claimed": "Credenciais dela",
    "ocpi.peers.endpoints": "Módulos dela",
    "ocpi.peers.actions": "Suspender ou remover",
    "ocpi.peers.suspend_help": (
        "Suspensa, a parte é recusada (HTTP 403) e não recebe nada até ser retomada."
    ),
    "ocpi.peers.suspend": "Suspender",
    "ocpi.peers.resume_help": "Retomada, recebe o que lhe faltou.",
    "ocpi.peers.resume": "Retomar",
    "ocpi.peers.remove_help": (
        "Remover: o token dela deixa de funcionar já e apagamos as nossas credenciais na "
        "parte (se responder)."
    ),
    "ocpi.peers.remove_confirm": "Confirmo que quero remover {name}",
    "ocpi.peers.remove": "Remover",
    "ocpi.peers.policy": "Política",
    "ocpi.peers.save": "Guardar",
    "ocpi.peers.hourly": "Tráfego por hora (últimas 24 h)",
    "ocpi.peers.hour": "Hora",
    "ocpi.peers.requests_ok": "Pedidos ok",
    "ocpi.peers.requests_refused": "Recusados (4xx)",
    "ocpi.peers.requests_failed": "Erros (5xx)",
    "ocpi.peers.pushes_ok": "Envios ok",
    "ocpi.peers.pushes_failed": "Envios falhados",
    "ocpi.peers.failures": "Envios falhados (últimas 24 h)",
    "ocpi.peers.no_failures": "Nenhum envio falhou.",
    "ocpi.peers.clients": "Partes ligadas através deste hub (hubclientinfo)",
    "ocpi.peers.no_clients": "O hub não enviou nenhuma.",
    "ocpi.peers.registered": "Registados na parte.",
    "ocpi.peers.unknown": "Não há essa parte OCPI.",
    "ocpi.peers.saved": "Política guardada: aplica-se já.",
    "ocpi.peers.not_registered": "Esta parte já não está registada.",
    "ocpi.peers.suspended_done": "Parte suspensa.",
    "ocpi.peers.resumed_done": "Parte retomada: recebe o que lhe faltou.",
    "ocpi.peers.confirm_needed": "Para remover, marque a confirmação.",
    "ocpi.peers.removed_told": "{name} removida; a parte confirmou ({answer}).",
    "ocpi.peers.removed": "{name} removida; a parte não confirmou: {answer}",
}

PEERS_EN: dict[str, str] = {
    "ocpi.peers.title": "OCPI peers",
    "ocpi.peers.intro": (
        "Each peer (MOBI.E, an eMSP, another hub): the role and parties we granted it, what "
        "it may use and receive, its traffic. The hub link is still at"
    ),
    "ocpi.peers.name": "Name",
    "ocpi.peers.parties": "Parties",
    "ocpi.peers.state": "State",
    "ocpi.peers.state.active": "active",
    "ocpi.peers.state.suspended": "suspended",
    "ocpi.peers.state.unregistered": "removed",
    "ocpi.peers.uses": "May use",
    "ocpi.peers.receives": "Receives",
    "ocpi.peers.traffic_24h": "Last 24 h",
    "ocpi.peers.version_set": "set: {version}",
    "ocpi.peers.requests_short": "requests: {ok} ok, {refused} refused, {failed} errors",
    "ocpi.peers.pushes_short": "pushes: {ok} ok, {failed} failed",
    "ocpi.peers.none": "No peer registered.",
    "ocpi.peers.default_when_none": "(none ticked: what the role allows)",
    "ocpi.peers.mobie": "MOBI.E's rules and profile",
    "ocpi.peers.realtime_auth": "Real-time authorization",
    "ocpi.peers.role_default": "the role's",
    "ocpi.peers.yes": "yes",
    "ocpi.peers.no": "no",
    "ocpi.peers.version_choice": "OCPI version",
    "ocpi.peers.version_auto": "the highest in common",
    "ocpi.peers.hidden": "Hidden Locations (ids)",
    "ocpi.peers.tariffs": "Tariffs replaced (OURS=THEIRS)",
    "ocpi.peers.connect": "Connect a new peer",
    "ocpi.peers.token_made": (
        "Token A created (shown only now). Send it to the peer with our versions URL:"
    ),
    "ocpi.peers.token_a": "Token A",
    "ocpi.peers.token_form": "The peer registers with us: a token A",
    "ocpi.peers.token_help": (
        "A token A serves one registration and grants the role, parties and policy chosen; "
        "a registration claiming more is refused."
    ),
    "ocpi.peers.register_form": "We register with the peer: its versions URL and token A",
    "ocpi.peers.register_help": (
        "We call the peer's versions with its token A and send our credentials; it gets "
        "the role, parties and policy chosen."
    ),
    "ocpi.peers.their_versions_url": "The peer's versions URL",
    "ocpi.peers.their_token": "The peer's token A",
    "ocpi.peers.register": "Register",
    "ocpi.peers.back": "← OCPI peers",
    "ocpi.peers.peer_title": "OCPI peer {name}",
    "ocpi.peers.suspended_since": "since {since}",
    "ocpi.peers.claimed": "Its credentials",
    "ocpi.peers.endpoints": "Its modules",
    "ocpi.peers.actions": "Suspend or remove",
    "ocpi.peers.suspend_help": (
        "Suspended, the peer is refused (HTTP 403) and receives nothing until resumed."
    ),
    "ocpi.peers.suspend": "Suspend",
    "ocpi.peers.resume_help": "Resumed, it receives what it missed.",
    "ocpi.peers.resume": "Resume",
    "ocpi.peers.remove_help": (
        "Remove: its token stops working at once and we delete our credentials at the peer "
        "(if it answers)."
    ),
    "ocpi.peers.remove_confirm": "I confirm I want to remove {name}",
    "ocpi.peers.remove": "Remove",
    "ocpi.peers.policy": "Policy",
    "ocpi.peers.save": "Save",
    "ocpi.peers.hourly": "Traffic per hour (last 24 h)",
    "ocpi.peers.hour": "Hour",
    "ocpi.peers.requests_ok": "Requests ok",
    "ocpi.peers.requests_refused": "Refused (4xx)",
    "ocpi.peers.requests_failed": "Errors (5xx)",
    "ocpi.peers.pushes_ok": "Pushes ok",
    "ocpi.peers.pushes_failed": "Pushes failed",
    "ocpi.peers.failures": "Failed pushes (last 24 h)",
    "ocpi.peers.no_failures": "No push failed.",
    "ocpi.peers.clients": "Parties connected through this hub (hubclientinfo)",
    "ocpi.peers.no_clients": "The hub has sent none.",
    "ocpi.peers.registered": "Registered with the peer.",
    "ocpi.peers.unknown": "There is no such OCPI peer.",
    "ocpi.peers.saved": "Policy saved: it applies at once.",
    "ocpi.peers.not_registered": "This peer is no longer registered.",
    "ocpi.peers.suspended_done": "Peer suspended.",
    "ocpi.peers.resumed_done": "Peer resumed: it receives what it missed.",
    "ocpi.peers.confirm_needed": "To remove it, tick the confirmation.",
    "ocpi.peers.removed_told": "{name} removed; the peer confirmed ({answer}).",
    "ocpi.peers.removed": "{name} removed; the peer did not confirm: {answer}",
}

PT.update(PEERS_PT)
EN.update(PEERS_EN)

MESSAGES: dict[str, dict[str, str]] = {"pt": PT, "en": EN}
