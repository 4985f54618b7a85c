"""Smart charging's shell: it keeps the profiles csms wants each station to hold, sends and
re-applies them, and shares each site's connection among its transactions. The rules are
pure (:mod:`smartcharge.profiles`, :mod:`smartcharge.share`); this module does the I/O.

Profile ids: the operator's are 1..799999; csms's own are above (a site's TxProfile of a
connector is ``SITE_TX_BASE + connector``, its safe TxDefaultProfile ``SITE_DEFAULT_ID``), so
the two never replace each other on a station.

A site never exceeds its limit on purpose: its shares sum to at most the limit (decreases
are sent before increases), and every station of a site holds a TxDefaultProfile low enough
that all the site's EVSEs at that default stay within the limit, so a station that csms
cannot reach, or a transaction that starts before its share is sent, is safe too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import structlog
from pydantic import ValidationError

from csms.ports import (
    Background,
    CommandError,
    CsmsPort,
    MeterSample,
    Overflow,
    SessionSchedule,
    StationBooted,
    StationConnected,
    StationRejected,
    TransactionStarted,
    TransactionStopped,
    from_db,
    parse_api_time,
    to_iso,
)

from .config import SmartSettings
from .profiles import Capabilities, Profile, check, composite
from .share import (
    Demand,
    SiteRules,
    allocate,
    next_limit_change,
    safe_default_a,
    site_limit_a,
    worth_sending,
)
from .store import SmartStore

log = structlog.get_logger("smartcharge")

OPERATOR_MAX_ID = 799_999
SITE_DEFAULT_ID = 899_999
SITE_TX_BASE = 900_000
DEFAULT_MAX_A = Decimal("32")
ORIGIN = "smart"  # the origin of csms's smart charging calls in the command log


class Refused(Exception):
    """An operator's request that cannot be done: HTTP status, code and message."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class Sent:
    """What a station answered to a SetChargingProfile (or why it was not asked)."""

    state: str  # installed | rejected | failed | pending (not connected: sent later)
    detail: str | None = None


def _a(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_DOWN)


def _evse_max_a(station: Any, connector_id: int) -> Decimal:
    """An EVSE's largest current per phase, from its definition (32 A when not said)."""
    for evse in station.evses if station is not None else []:
        if evse.get("connector_id") != connector_id:
            continue
        for conn in evse.get("connectors") or []:
            amps = conn.get("max_amperage")
            if isinstance(amps, int | float) and not isinstance(amps, bool) and amps > 0:
                return Decimal(str(amps))
    return DEFAULT_MAX_A


def _evse_count(station: Any) -> int:
    if station is None:
        return 1
    defined = [e for e in station.evses if not e.get("removed_at")]
    if defined:
        return len(defined)
    return max(1, len([c for c in station.connectors if c.connector_id > 0]))


class SmartService:
    def __init__(self, port: CsmsPort, settings: SmartSettings) -> None:
        self.port = port
        self.settings = settings
        self.clock = port.clock
        self.store = SmartStore(port.db)
        self._tasks = Background("smartcharge")
        self._sub: Any = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._site_of: dict[str, tuple[str, int]] = {}  # station -> (site, priority)
        self._drawing: dict[tuple[str, int], Decimal] = {}  # measured A per phase
        self._last_recompute: dict[str, datetime] = {}
        self._reapplying: dict[str, asyncio.Task[Any]] = {}
        self._checker_wake = asyncio.Event()  # a site or its limit changed
        self._handling = 0  # events being handled now

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._load_members()
        self._sub = self.port.bus.subscribe(
            "smartcharge",
            kinds=(
                StationBooted,
                StationConnected,
                TransactionStarted,
                TransactionStopped,
                MeterSample,
            ),
        )
        self._tasks.spawn(self._events(), "smart-events")
        self._tasks.spawn(self._checker(), "smart-checker")

    async def stop(self) -> None:
        if self._sub is not None:
            self.port.bus.unsubscribe(self._sub)
        for task in list(self._reapplying.values()):
            task.cancel()
        await self._tasks.stop()

    def settled(self) -> bool:
        """Nothing in hand: no event waiting or being handled, no site being shared, no
        station's profiles being re-applied (a test steps its clock only then)."""
        return (
            self._handling == 0
            and (self._sub is None or self._sub._queue.empty())
            and not any(lock.locked() for lock in self._locks.values())
            and all(task.done() for task in self._reapplying.values())
        )

    async def _load_members(self) -> None:
        self._site_of = {
            m["station_id"]: (m["site_id"], int(m["priority"])) for m in await self.store.members()
        }

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ profiles

    async def capabilities(self, station_id: str) -> Capabilities:
        station = await self.port.station(station_id)
        keys: dict[str, str] = {}
        for item in (station.config_snapshot if station else None) or []:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                value = item.get("value")
                keys[item["key"]] = value if isinstance(value, str) else ""
        return Capabilities.from_configuration(keys)

    async def _installed(self, station_id: str) -> list[tuple[int, Profile]]:
        out = []
        for row in await self.store.profiles(station_id):
            if row["state"] in ("pending", "installed"):
                out.append((int(row["connector_id"]), Profile.model_validate(row["body"])))
        return out

    async def set_profile(
        self, station_id: str, connector_id: int, body: Any, origin: str = "operator"
    ) -> dict[str, Any]:
        """Check a profile against what the station says it supports, keep it, and send it
        when the station is connected (else at its next connection). Refused otherwise."""
        station = await self.port.station(station_id)
        if station is None:
            raise Refused(404, "not_found", f"unknown station {station_id}")
        if not isinstance(connector_id, int) or isinstance(connector_id, bool):
            raise Refused(422, "invalid_body", "connector_id: an integer")
        try:
            profile = Profile.model_validate(body)
        except ValidationError as e:
            raise Refused(
                422,
                "invalid_body",
                "not a valid charging profile",
                [
                    {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                    for err in e.errors(include_input=False)
                ][:20],
            ) from None
        if origin == "operator" and profile.id > OPERATOR_MAX_ID:
            raise Refused(
                422,
                "invalid_body",
                f"id: at most {OPERATOR_MAX_ID} (higher ids are csms's own)",
            )
        site = self._site_of.get(station_id)
        caps = await self.capabilities(station_id)
        level = self._level(caps)
        if (
            origin == "operator"
            and site is not None
            and profile.purpose in ("TxDefaultProfile", "TxProfile")
            and profile.stack_level >= level
        ):
            raise Refused(
                409,
                "site_managed",
                f"{station_id} is in site {site[0]}: its Tx and TxDefault profiles must stay "
                f"below stack level {level}, the site's own",
            )
        tx = (
            await self.port.active_transaction_on(station_id, connector_id)
            if connector_id > 0
            else None
        )
        if profile.purpose == "TxProfile" and tx is not None and profile.transaction_id is None:
            profile = profile.model_copy(update={"transaction_id": tx.id})
        problems = check(
            profile,
            connector_id,
            caps,
            await self._installed(station_id),
            tx.id if tx is not None else None,
        )
        if problems:
            raise Refused(
                422,
                "unsupported",
                f"{station_id} would reject this profile: " + "; ".join(problems),
                problems,
            )
        await self._put_and_send(station_id, connector_id, profile, origin)
        row = await self.store.profile(station_id, profile.id)
        assert row is not None
        return row

    async def _put_and_send(
        self, station_id: str, connector_id: int, profile: Profile, origin: str
    ) -> Sent:
        await self.store.put_profile(
            station_id, connector_id, profile.model_dump(mode="json"), origin, self.clock.now()
        )
        return await self._send(station_id, connector_id, profile)

    async def _send(self, station_id: str, connector_id: int, profile: Profile) -> Sent:
        if not self.port.is_connected(station_id):
            return Sent("pending", "not connected: sent when it connects")
        try:
            answer = await self.port.send_command(
                station_id,
                "SetChargingProfile",
                {"connectorId": connector_id, "csChargingProfiles": profile.to_ocpp()},
                timeout=self.settings.call_timeout,
                origin=ORIGIN,
            )
            status = answer.get("status") if isinstance(answer, dict) else None
            sent = Sent("installed") if status == "Accepted" else Sent("rejected", str(status))
        except StationRejected as e:
            sent = Sent("rejected", str(e)[:300])
        except CommandError as e:
            if getattr(e, "code", "") == "station_offline":
                return Sent("pending", "not connected: sent when it connects")
            sent = Sent("failed", str(e)[:300])
        await self.store.profile_answer(
            station_id, profile.id, sent.state, sent.detail, self.clock.now()
        )
        log.info(
            "charging profile sent",
            station_id=station_id,
            connector_id=connector_id,
            profile_id=profile.id,
            purpose=profile.purpose,
            state=sent.state,
            detail=sent.detail,
        )
        return sent

    async def clear_profile(self, station_id: str, profile_id: int) -> dict[str, Any]:
        row = await self.store.profile(station_id, profile_id)
        if row is None:
            raise Refused(404, "not_found", f"{station_id} has no profile {profile_id} of csms")
        if not row["origin"] == "operator":
            raise Refused(
                409, "site_managed", f"profile {profile_id} is {row['origin']}'s: change that"
            )
        return {"station": await self._clear(station_id, profile_id)}

    async def _clear(self, station_id: str, profile_id: int) -> str:
        """ClearChargingProfile; a station not connected gets it when it connects (the
        profile is kept as ``clearing`` until then)."""
        if not self.port.is_connected(station_id):
            await self.store.profile_answer(
                station_id, profile_id, "clearing", None, self.clock.now()
            )
            return "not connected: cleared when it connects"
        await self.store.delete_profile(station_id, profile_id)
        try:
            answer = await self.port.send_command(
                station_id,
                "ClearChargingProfile",
                {"id": profile_id},
                timeout=self.settings.call_timeout,
                origin=ORIGIN,
            )
            status = str(answer.get("status")) if isinstance(answer, dict) else "?"
        except CommandError as e:
            status = f"failed: {str(e)[:200]}"
        log.info("charging profile cleared", station_id=station_id, profile_id=profile_id)
        return status

    async def composite_schedule(
        self, station_id: str, connector_id: int, duration: int, unit: str
    ) -> dict[str, Any]:
        """What csms expects the station to apply (from the profiles it holds for it) next
        to what the station says (GetCompositeSchedule), and whether they agree."""
        station = await self.port.station(station_id)
        if station is None:
            raise Refused(404, "not_found", f"unknown station {station_id}")
        now = self.clock.now().replace(microsecond=0)
        tx = (
            await self.port.active_transaction_on(station_id, connector_id)
            if connector_id > 0
            else None
        )
        expected = composite(
            await self._installed(station_id),
            connector_id,
            now,
            duration,
            unit,  # type: ignore[arg-type]
            (tx.id, tx.start_time) if tx is not None else None,
        )
        out: dict[str, Any] = {
            "start": to_iso(now),
            "unit": unit,
            "expected": [
                {"start_period": o, "limit": None if v is None else float(v)} for o, v in expected
            ],
            "station": None,
            "matches": None,
        }
        if not self.port.is_connected(station_id):
            out["station_error"] = "not connected"
            return out
        try:
            answer = await self.port.send_command(
                station_id,
                "GetCompositeSchedule",
                {"connectorId": connector_id, "duration": duration, "chargingRateUnit": unit},
                timeout=self.settings.call_timeout,
                origin=ORIGIN,
            )
        except CommandError as e:
            out["station_error"] = str(e)[:300]
            return out
        out["station"] = answer
        out["matches"] = _agrees(expected, answer, unit, now)
        return out

    # ------------------------------------------------------------------ re-applying

    async def reapply(self, station_id: str) -> int:
        """After a boot or a reconnection: every profile csms keeps for the station again
        (a TxProfile only while its transaction runs), then its site's share. How many
        were sent."""
        async with self._lock(f"station:{station_id}"):
            sent = 0
            for row in await self.store.profiles(station_id):
                if row["state"] == "clearing":
                    await self._clear(station_id, int(row["profile_id"]))
                    continue
                profile = Profile.model_validate(row["body"])
                if profile.purpose == "TxProfile":
                    tx_id = row["transaction_id"]
                    tx = await self.port.transaction(int(tx_id)) if tx_id is not None else None
                    if tx is None or not tx.active:
                        await self.store.delete_profile(station_id, profile.id)
                        continue
                result = await self._send(station_id, int(row["connector_id"]), profile)
                if result.state == "pending":
                    break  # gone again
                sent += 1
        site = self._site_of.get(station_id)
        if site is not None:
            await self.recompute(site[0], "station back")
        if sent:
            log.info("charging profiles re-applied", station_id=station_id, profiles=sent)
        return sent

    # ------------------------------------------------------------------ sites

    async def put_site(self, site_id: str, body: Any) -> tuple[bool, dict[str, Any]]:
        if not isinstance(body, dict):
            raise Refused(422, "invalid_body", "a JSON object")
        unknown = set(body) - {"name", "rules", "members"}
        if unknown:
            raise Refused(422, "invalid_body", f"unknown fields: {', '.join(sorted(unknown))}")
        name = body.get("name", site_id)
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise Refused(422, "invalid_body", "name: 1 to 200 characters")
        try:
            rules = SiteRules.model_validate(body.get("rules"))
        except ValidationError as e:
            raise Refused(
                422,
                "invalid_body",
                "rules: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'rules'}: {err['msg']}"
                    for err in e.errors(include_input=False)
                )[:1000],
            ) from None
        raw_members = body.get("members", [])
        if not isinstance(raw_members, list) or len(raw_members) > 10000:
            raise Refused(422, "invalid_body", "members: a list (at most 10000)")
        members: list[tuple[str, int]] = []
        for m in raw_members:
            if isinstance(m, str):
                m = {"station_id": m}
            sid = m.get("station_id") if isinstance(m, dict) else None
            prio = m.get("priority", 0) if isinstance(m, dict) else None
            if not isinstance(sid, str) or not isinstance(prio, int) or isinstance(prio, bool):
                raise Refused(
                    422, "invalid_body", "members: station ids, or {station_id, priority}"
                )
            if not -100 <= prio <= 100:
                raise Refused(422, "invalid_body", "members: priority from -100 to 100")
            members.append((sid, prio))
        ids = [m[0] for m in members]
        if len(set(ids)) != len(ids):
            raise Refused(422, "invalid_body", "members: a station is listed twice")
        missing = [s for s in ids if await self.port.station(s) is None]
        if missing:
            raise Refused(422, "invalid_body", f"unknown stations: {', '.join(missing[:20])}")
        before = {s for s, (site, _) in self._site_of.items() if site == site_id}
        created, taken = await self.store.put_site(
            site_id, name, rules.model_dump(mode="json"), members, self.clock.now()
        )
        if taken:
            raise Refused(
                409, "in_another_site", f"already in another site: {', '.join(taken[:20])}"
            )
        await self._load_members()
        for gone in before - set(ids):
            await self._leave(gone)
        log.info("site saved", site_id=site_id, created=created, stations=len(ids))
        self._checker_wake.set()
        await self.recompute(site_id, "site changed")
        view = await self.site_view(site_id)
        assert view is not None
        return created, view

    async def _leave(self, station_id: str) -> None:
        """A station left its site: the site's profiles come off it."""
        for row in await self.store.profiles(station_id, origin_prefix="site:"):
            await self._clear(station_id, int(row["profile_id"]))
        for conn in range(0, 64):
            self._drawing.pop((station_id, conn), None)
        for row in await self.store.db.read(
            "SELECT connector_id FROM smart_allocations WHERE station_id = ?", (station_id,)
        ):
            await self.store.drop_allocation(station_id, int(row["connector_id"]))

    async def delete_site(self, site_id: str) -> None:
        site = await self.store.site(site_id)
        if site is None:
            raise Refused(404, "not_found", f"no site {site_id}")
        stations = [m["station_id"] for m in await self.store.members(site_id)]
        for station_id in stations:
            await self._leave(station_id)
        await self.store.delete_site(site_id)
        await self._load_members()
        log.info("site removed", site_id=site_id, stations=len(stations))

    async def set_dynamic_limit(
        self, site_id: str, limit: Decimal | None, until: datetime | None
    ) -> dict[str, Any]:
        if limit is not None and (not limit.is_finite() or not 0 <= limit <= 100000):
            raise Refused(422, "invalid_body", "limit: a number from 0 to 100000")
        if until is not None and until <= self.clock.now():
            raise Refused(422, "invalid_body", "until: a time to come")
        if not await self.store.set_dynamic_limit(site_id, limit, until, self.clock.now()):
            raise Refused(404, "not_found", f"no site {site_id}")
        log.info("site dynamic limit", site_id=site_id, limit=str(limit), until=str(until))
        self._checker_wake.set()
        await self.recompute(site_id, "limit changed")
        view = await self.site_view(site_id)
        assert view is not None
        return view

    def _dynamic(self, site: dict[str, Any], now: datetime) -> Decimal | None:
        if site.get("dynamic_limit") is None:
            return None
        until = site.get("dynamic_until")
        if until is not None:
            end = from_db(until)
            if end is not None and end <= now:
                return None
        return Decimal(str(site["dynamic_limit"]))

    async def site_view(self, site_id: str) -> dict[str, Any] | None:
        site = await self.store.site(site_id)
        if site is None:
            return None
        rules = SiteRules.model_validate(site["rules"])
        now = self.clock.now()
        limit = site_limit_a(rules, now, self._dynamic(site, now))
        members = await self.store.members(site_id)
        return {
            "id": site["id"],
            "name": site["name"],
            "rules": site["rules"],
            "dynamic_limit": site["dynamic_limit"],
            "dynamic_until": site["dynamic_until"],
            "limit_a": float(limit),
            "limit_kw": float(limit * rules.voltage * rules.phases / 1000),
            "members": [
                {"station_id": m["station_id"], "priority": int(m["priority"])} for m in members
            ],
            "allocations": [
                {
                    "station_id": a["station_id"],
                    "connector_id": int(a["connector_id"]),
                    "transaction_id": a["transaction_id"],
                    "limit_a": float(a["limit_a"]),
                    "state": a["state"],
                    "updated_at": a["updated_at"],
                    "drawing_a": _float(
                        self._drawing.get((a["station_id"], int(a["connector_id"])))
                    ),
                }
                for a in await self.store.allocations(site_id)
            ],
            "created_at": site["created_at"],
            "updated_at": site["updated_at"],
        }

    async def recompute(
        self, site_id: str, reason: str, force: frozenset[tuple[str, int]] = frozenset()
    ) -> dict[tuple[str, int], Decimal]:
        """Share the site's limit among its transactions now, and send what changed
        (decreases first; ``force``: those EVSEs' profiles whatever changed). The shares."""
        async with self._lock(f"site:{site_id}"):
            return await self._recompute(site_id, reason, force)

    async def _recompute(
        self, site_id: str, reason: str, force: frozenset[tuple[str, int]]
    ) -> dict[tuple[str, int], Decimal]:
        site = await self.store.site(site_id)
        if site is None:
            return {}
        now = self.clock.now()
        self._last_recompute[site_id] = now
        rules = SiteRules.model_validate(site["rules"])
        limit = site_limit_a(rules, now, self._dynamic(site, now))
        members = {m["station_id"]: int(m["priority"]) for m in await self.store.members(site_id)}
        stations = {sid: await self.port.station(sid) for sid in members}
        # the safe default first: what every station falls back to
        evses = sum(_evse_count(st) for st in stations.values())
        default = safe_default_a(limit, max(1, evses), rules.min_per_evse)
        for sid in members:
            await self._safe_default(site_id, sid, default, rules)
        txs = [t for t in await self.port.open_transactions() if t.station_id in members]
        demands = []
        by_key = {}
        for t in txs:
            key = (t.station_id, t.connector_id)
            by_key[key] = t
            demands.append(
                Demand(
                    key=key,
                    priority=members[t.station_id],
                    max_a=_evse_max_a(stations.get(t.station_id), t.connector_id),
                    drawing_a=self._drawing.get(key),
                    started_at=t.start_time,
                )
            )
        shares = allocate(limit, demands, rules.min_per_evse)
        previous = {
            (a["station_id"], int(a["connector_id"])): a
            for a in await self.store.allocations(site_id)
        }
        changes = []
        for key, share in shares.items():
            tx = by_key[key]
            prev = previous.get(key)
            old = (
                Decimal(str(prev["limit_a"]))
                if prev is not None and prev["transaction_id"] == tx.id and prev["state"] == "sent"
                else None
            )
            if (
                old is not None
                and key not in force
                and not worth_sending(old, share, self.settings.step_a)
            ):
                continue
            changes.append((share - (old if old is not None else default), key, share))
        changes.sort(key=lambda c: c[0])  # decreases first: never above the limit meanwhile
        for _, key, share in changes:
            tx = by_key[key]
            sent = await self._send_share(site_id, tx, share, rules)
            await self.store.put_allocation(
                site_id,
                key[0],
                key[1],
                tx.id,
                share,
                "sent" if sent.state == "installed" else sent.state,
                now,
            )
        for key in set(previous) - set(shares):
            await self.store.drop_allocation(*key)
        if changes:
            log.info(
                "site shared",
                site_id=site_id,
                reason=reason,
                limit_a=str(limit),
                transactions=len(shares),
                sent=len(changes),
            )
        return shares

    async def _safe_default(
        self, site_id: str, station_id: str, amps: Decimal, rules: SiteRules
    ) -> None:
        caps = await self.capabilities(station_id)
        unit, limit = self._unit_for(caps, amps, rules.voltage * rules.phases)
        profile = Profile.model_validate(
            {
                "id": SITE_DEFAULT_ID,
                "stack_level": self._level(caps),
                "purpose": "TxDefaultProfile",
                "kind": "Relative",
                "schedule": {
                    "charging_rate_unit": unit,
                    "periods": [{"start_period": 0, "limit": limit}],
                },
            }
        )
        row = await self.store.profile(station_id, SITE_DEFAULT_ID)
        if (
            row is not None
            and row["state"] == "installed"
            and row["body"] == profile.model_dump(mode="json")
        ):
            return
        await self._put_and_send(station_id, 0, profile, f"site:{site_id}")

    async def _send_share(self, site_id: str, tx: Any, amps: Decimal, rules: SiteRules) -> Sent:
        profile = await self._tx_profile(tx, amps, rules.voltage * rules.phases)
        assert profile is not None
        return await self._put_and_send(tx.station_id, tx.connector_id, profile, f"site:{site_id}")

    async def _tx_profile(
        self, tx: Any, share_a: Decimal | None, volts_phases: int = 230 * 3
    ) -> Profile | None:
        """The TxProfile of a transaction: its site's share (A per phase), and the limit a
        smart charging party set for the session, each period capped by the share. None:
        neither."""
        caps = await self.capabilities(tx.station_id)
        row = await self.store.session_limit(tx.id)
        if row is None and share_a is None:
            return None
        if row is None:
            assert share_a is not None
            unit, limit = self._unit_for(caps, share_a, volts_phases)
            schedule: dict[str, Any] = {
                "charging_rate_unit": unit,
                "periods": [{"start_period": 0, "limit": limit}],
            }
            kind, start = "Relative", None
        else:
            wanted = row["schedule"]
            unit = wanted["unit"] if wanted["unit"] in caps.units else min(caps.units or {"A"})
            factor = Decimal(1)
            if unit != wanted["unit"]:
                factor = Decimal(volts_phases) if unit == "W" else 1 / Decimal(volts_phases)
            cap = None
            if share_a is not None:
                cap = share_a * (volts_phases if unit == "W" else 1)
            periods = []
            for offset, value in wanted["periods"]:
                limit = Decimal(str(value)) * factor
                if cap is not None:
                    limit = min(limit, cap)
                q = Decimal("0.1") if unit == "A" else Decimal("1")
                periods.append(
                    {"start_period": int(offset), "limit": limit.quantize(q, ROUND_DOWN)}
                )
            schedule = {"charging_rate_unit": unit, "periods": periods}
            if wanted.get("min_rate") is not None:
                q = Decimal("0.1")
                schedule["min_charging_rate"] = (Decimal(wanted["min_rate"]) * factor).quantize(
                    q, ROUND_DOWN
                )
            if wanted.get("duration") is not None:
                schedule["duration"] = int(wanted["duration"])
            start = wanted.get("start") or row["created_at"]
            kind = "Absolute"
            schedule["start_schedule"] = _aware(start)
        return Profile.model_validate(
            {
                "id": SITE_TX_BASE + tx.connector_id,
                "stack_level": self._level(caps),
                "purpose": "TxProfile",
                "kind": kind,
                "transaction_id": tx.id,
                "schedule": schedule,
            }
        )

    def _level(self, caps: Capabilities) -> int:
        """The stack level of csms's own Tx and TxDefault profiles on a station: the
        configured one, or the highest the station takes."""
        return min(self.settings.site_stack_level, caps.max_stack_level)

    def _unit_for(
        self, caps: Capabilities, amps: Decimal, volts_phases: int
    ) -> tuple[str, Decimal]:
        if "A" in caps.units:
            return "A", _a(amps)
        return "W", (amps * volts_phases).quantize(Decimal("1"), ROUND_DOWN)

    # ------------------------------------------------------------------ session limits

    async def set_session_limit(
        self, transaction_id: int, schedule: SessionSchedule, origin: str
    ) -> str:
        """A smart charging party's limit for a running session (csms.ports.ChargingLimits):
        sent as its TxProfile, capped by the site's share. ACCEPTED, REJECTED or UNKNOWN."""
        tx = await self.port.transaction(transaction_id)
        if tx is None or not tx.active:
            return "UNKNOWN"
        if schedule.unit not in ("A", "W") or not schedule.periods:
            return "REJECTED"
        body = {
            "unit": schedule.unit,
            "periods": [[int(o), str(v)] for o, v in schedule.periods],
            "start": None if schedule.start is None else schedule.start.isoformat(),
            "duration": schedule.duration,
            "min_rate": None if schedule.min_rate is None else str(schedule.min_rate),
        }
        before = await self.store.session_limit(transaction_id)
        await self.store.put_session_limit(transaction_id, origin, body, self.clock.now())
        result = await self._apply_session(tx, "session limit set")
        if result != "ACCEPTED":  # the station refused it: it is not kept (nor re-sent)
            if before is None:
                await self.store.delete_session_limit(transaction_id)
            else:
                await self.store.put_session_limit(
                    transaction_id, before["origin"], before["schedule"], self.clock.now()
                )
        return result

    async def clear_session_limit(self, transaction_id: int, origin: str) -> str:
        tx = await self.port.transaction(transaction_id)
        if tx is None or not tx.active:
            return "UNKNOWN"
        await self.store.delete_session_limit(transaction_id)
        return await self._apply_session(tx, "session limit cleared")

    async def _apply_session(self, tx: Any, reason: str) -> str:
        key = (tx.station_id, tx.connector_id)
        site = self._site_of.get(tx.station_id)
        if site is not None:
            await self.recompute(site[0], reason, frozenset({key}))
            alloc = next(
                (
                    a
                    for a in await self.store.allocations(site[0])
                    if (a["station_id"], int(a["connector_id"])) == key
                ),
                None,
            )
            return "ACCEPTED" if alloc is not None and alloc["state"] == "sent" else "REJECTED"
        profile = await self._tx_profile(tx, None)
        if profile is None:  # cleared, and no site: nothing limits the session now
            if await self.store.profile(tx.station_id, SITE_TX_BASE + tx.connector_id):
                await self._clear(tx.station_id, SITE_TX_BASE + tx.connector_id)
            return "ACCEPTED"
        sent = await self._put_and_send(
            tx.station_id, tx.connector_id, profile, "session:" + str(tx.id)
        )
        return "ACCEPTED" if sent.state == "installed" else "REJECTED"

    async def session_schedule(self, transaction_id: int, duration: int) -> SessionSchedule | None:
        """What the station applies to a running session now (GetCompositeSchedule); None
        when the session is not running or the station does not say."""
        tx = await self.port.transaction(transaction_id)
        if tx is None or not tx.active or not self.port.is_connected(tx.station_id):
            return None
        try:
            answer = await self.port.send_command(
                tx.station_id,
                "GetCompositeSchedule",
                {"connectorId": tx.connector_id, "duration": int(duration)},
                timeout=self.settings.call_timeout,
                origin=ORIGIN,
            )
        except CommandError:
            return None
        if not isinstance(answer, dict) or answer.get("status") != "Accepted":
            return None
        sched = answer.get("chargingSchedule")
        if not isinstance(sched, dict) or not isinstance(sched.get("chargingSchedulePeriod"), list):
            return None
        try:
            periods = tuple(
                (int(p["startPeriod"]), Decimal(str(p["limit"])))
                for p in sched["chargingSchedulePeriod"]
            )
            start = answer.get("scheduleStart") or sched.get("startSchedule")
            if sched.get("chargingRateUnit") not in ("A", "W"):
                return None  # a schedule without its unit says nothing
            return SessionSchedule(
                unit=str(sched["chargingRateUnit"]),
                periods=periods,
                start=parse_api_time(start) if isinstance(start, str) else None,
                duration=int(sched["duration"]) if sched.get("duration") is not None else None,
            )
        except (KeyError, TypeError, ValueError, ArithmeticError):
            return None

    # ------------------------------------------------------------------ events

    async def _events(self) -> None:
        assert self._sub is not None
        async for event in self._sub:
            self._handling += 1
            try:
                await self._on(event)
            except Exception:
                log.exception("smart charging event not handled", event=type(event).__name__)
            finally:
                self._handling -= 1

    async def _on(self, event: Any) -> None:
        if isinstance(event, Overflow):
            for site in await self.store.sites():
                await self.recompute(site["id"], "resynchronised")
            return
        if isinstance(event, StationBooted | StationConnected):
            self._schedule_reapply(event.station_id)
            return
        site = self._site_of.get(event.station_id)
        if isinstance(event, TransactionStarted):
            if site is not None:
                await self.recompute(site[0], "transaction started")
            return
        if isinstance(event, TransactionStopped):
            await self.store.delete_tx_profiles(event.station_id, event.transaction_id)
            await self.store.delete_session_limit(event.transaction_id)
            self._drawing.pop((event.station_id, event.connector_id), None)
            if site is not None:
                await self.recompute(site[0], "transaction stopped")
            return
        if isinstance(event, MeterSample) and site is not None:
            await self._metered(site[0], event)

    def _schedule_reapply(self, station_id: str) -> None:
        running = self._reapplying.get(station_id)
        if running is not None and not running.done():
            return

        async def go() -> None:
            try:
                await self.reapply(station_id)
            except Exception:
                log.exception("charging profiles not re-applied", station_id=station_id)

        self._reapplying[station_id] = asyncio.get_running_loop().create_task(go())

    async def _metered(self, site_id: str, event: MeterSample) -> None:
        if event.power_w is None or event.connector_id <= 0:
            return
        site = await self.store.site(site_id)
        if site is None:
            return
        rules = SiteRules.model_validate(site["rules"])
        key = (event.station_id, event.connector_id)
        drawing = _a(Decimal(str(max(0.0, event.power_w))) / (rules.voltage * rules.phases))
        self._drawing[key] = drawing
        now = self.clock.now()
        limit = site_limit_a(rules, now, self._dynamic(site, now))
        minute = event.timestamp.replace(second=0, microsecond=0)
        await self.store.record_power(
            site_id, minute, event.station_id, event.connector_id, event.power_w, limit
        )
        # a car drawing clearly less than its share gives the rest to the others
        alloc = next(
            (
                a
                for a in await self.store.allocations(site_id)
                if (a["station_id"], int(a["connector_id"])) == key
            ),
            None,
        )
        if alloc is None:
            return
        share = Decimal(str(alloc["limit_a"]))
        last = self._last_recompute.get(site_id)
        due = last is None or (now - last).total_seconds() >= self.settings.recompute_seconds
        if due and drawing + self.settings.headroom_a < share:
            await self.recompute(site_id, "a car draws less than its share")

    async def _checker(self) -> None:
        """Every site every ``check_seconds``, and exactly when a site's limit changes by
        itself (a time-of-day window starts or ends, a dynamic limit expires)."""
        passes = 0
        while True:
            now = self.clock.now()
            wake = now + timedelta(seconds=self.settings.check_seconds)
            self._handling += 1
            try:
                for site in await self.store.sites():
                    await self.recompute(site["id"], "periodic check")
                    change = self._next_change(site, now)
                    if change is not None:
                        wake = min(wake, change)
                passes += 1
                if passes % 1440 == 1:
                    await self.store.prune_power(now - timedelta(days=self.settings.power_days))
            except Exception:
                log.exception("smart charging check failed")
            finally:
                self._handling -= 1
            self._checker_wake.clear()
            await self._sleep_or_wake(wake)

    async def _sleep_or_wake(self, when: datetime) -> None:
        """Until ``when`` on the injected clock, or until a site changed (its next limit
        change may be sooner)."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until(when))
        woken = asyncio.ensure_future(self._checker_wake.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()

    def _next_change(self, site: dict[str, Any], now: datetime) -> datetime | None:
        rules = SiteRules.model_validate(site["rules"])
        out = next_limit_change(rules, now)
        until = from_db(site["dynamic_until"]) if site.get("dynamic_until") else None
        if until is not None and until > now and (out is None or until < out):
            out = until
        return out


def _aware(text: str) -> datetime:
    """A time kept as ISO 8601 text (ours: a zone is always there)."""
    return parse_api_time(text)


def _float(v: Decimal | None) -> float | None:
    return None if v is None else float(v)


def _agrees(
    expected: list[tuple[int, Decimal | None]],
    answer: Any,
    unit: str,
    start: datetime | None = None,
) -> bool | None:
    """Whether the station's composite schedule says what csms expects: the same limits
    (within 0.1 A or 1 W) changing at the same moments (within 2 s, the station's start
    taken into account); None when it did not send one; False when it sent nonsense."""
    if not isinstance(answer, dict) or answer.get("status") != "Accepted":
        return None
    schedule = answer.get("chargingSchedule")
    if not isinstance(schedule, dict):
        return None
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list):
        return None
    shift = 0.0
    said = answer.get("scheduleStart") or schedule.get("startSchedule")
    try:
        if start is not None and isinstance(said, str):
            shift = (parse_api_time(said) - start).total_seconds()
        theirs = []
        for p in periods:
            offset, limit = p["startPeriod"], p["limit"]
            if isinstance(offset, bool) or not isinstance(offset, int | float):
                return False
            theirs.append((float(offset) + shift, Decimal(str(limit))))
    except (KeyError, TypeError, ValueError, ArithmeticError):
        return False
    ours = [(o, v) for o, v in expected if v is not None]
    if len(ours) != len(theirs) or not all(v.is_finite() for _, v in theirs):
        return False
    tolerance = Decimal("0.1") if unit == "A" else Decimal("1")
    return all(
        abs(o1 - o2) <= 2 and abs(v1 - v2) <= tolerance
        for (o1, v1), (o2, v2) in zip(ours, theirs, strict=True)
    )
