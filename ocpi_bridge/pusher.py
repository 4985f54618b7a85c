"""The I/O shell of the push rules: events in from csms's bus, pushes out to the peers.

    csms event ──▶ PushRules (pure: what is out of date, when) ──▶ delivery.fan_out (pure:
    which peer gets what) ──▶ Outbox (pure: per object, per peer, what is unacknowledged)
    ──▶ delivery.*_send (pure: what a push carries) ──▶ send (HTTP) ──▶ acknowledged state

Nothing here waits on the OCPP side, and nothing on the OCPP side waits for a push: the bus
never blocks, and each peer has its own bounded number of pushes in flight. What a peer has
acknowledged is stored; at start-up, when events were missed, or when a peer registers,
the current state is compared with it (delivery.resync_location, reconcile_sessions,
reconcile_cdrs) and whatever differs is pushed whole.

The policy is in the pure cores (rules.py, outbox.py, delivery.py); this shell reads the
facts they take (peers, transactions, Locations, Sessions, CDRs, the log of
StatusNotifications), does the HTTP and the writes, and measures the rules (compliance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from csms.ports import (
    CommandError,
    Event,
    Overflow,
    StationDefined,
    StationSnapshot,
    TransactionStarted,
    TransactionView,
    from_db,
    to_db,
)
from csms.ports import Tx as JobDb

from . import delivery, versions
from .client import OcpiCallFailed
from .compliance import ComplianceRecorder, limits_for
from .delivery import (
    Ack,
    AckRecord,
    Acks,
    FamilyKey,
    InFlight,
    MarkEvse,
    MarkLocation,
    MarkTouch,
    Recipient,
    Send,
    SessionFacts,
    session_state,
)
from .deliveryview import PendingPush
from .locations import ConnectorState, active_connectors, removed_at
from .outbox import Outbox, Push
from .peers import location_for
from .push_alerts import PushAlerts
from .rules import (
    Commissioned,
    Effect,
    EvseChange,
    LocationTouch,
    PushRules,
    Returned,
    SessionPush,
    TriggerStatus,
)
from .service import BackgroundService
from .sessions import for_peer
from .store import Peer
from .transport import join_url, parse_ocpi_time

if TYPE_CHECKING:
    from .context import BridgeContext

log = structlog.get_logger("ocpi.push")
MODULES = ("locations", "sessions", "cdrs")  # what a peer may receive pushes of


@dataclass
class Prepared:
    method: str
    url: str
    module: str
    send: Send  # what it carries, what to record on success
    # what this push makes up for, for measuring the rules: (rule, object, since)
    covers: list[tuple[str, tuple[Any, ...], datetime]] = field(default_factory=list)


class PushMetrics:
    def __init__(self, registry: Any) -> None:
        self.pushes = Counter(
            "ocpi_pushes",
            "OCPI pushes, by kind and outcome",
            ["kind", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "ocpi_push_seconds",
            "Time a push took, request to answer",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.pending = Gauge(
            "ocpi_push_pending", "Objects with something unacknowledged", registry=registry
        )
        self.failing = Gauge(
            "ocpi_push_failing", "Objects whose last push failed", registry=registry
        )


class Pusher(BackgroundService):
    def __init__(self, bridge: BridgeContext) -> None:
        super().__init__(bridge.clock, bridge.csms.bus)
        self.bridge = bridge
        s = bridge.settings
        self.rules = PushRules(
            timedelta(seconds=s.offline_after), timedelta(seconds=s.session_update_interval)
        )
        self.outbox = Outbox(backoff_max=timedelta(seconds=s.retry_max_seconds))
        self.metrics = PushMetrics(bridge.csms.metrics_registry)
        # counted when scraped: counting costs the backlog's size, too much for every push
        self.metrics.pending.set_function(lambda: len(self.outbox.pending()))
        self.metrics.failing.set_function(
            lambda: sum(1 for f in self.outbox.pending() if f.failing_since)
        )
        self.acks = Acks()
        self._owners: dict[int, str | None] = {}  # transaction -> token owner
        # per defined station: its Location id and each EVSE's uid, by OCPP connector id
        self._places: dict[str, tuple[str, dict[int, str]]] = {}
        self._recipients_of: tuple[Any, ...] | None = None  # the peers they were made of
        self._recipients_made: list[Recipient] = []
        self._measured: set[int] = set()  # the peers whose pushes MOBI.E's rules measure
        self._reading: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # see _shared
        self._views: dict[int, frozenset[tuple[str, str]]] = {}  # see reconcile
        self._in_flight = InFlight(s.push_concurrency)
        # for measuring the rules (compliance.py): since when each thing is owed to a peer
        self.compliance = ComplianceRecorder(
            bridge.csms.db, limits_for(s.session_update_interval, s.offline_after)
        )
        self._owed: dict[tuple[Any, ...], datetime] = {}  # (rule, peer, station[, conn])
        self._session_acked: dict[tuple[int, str], datetime] = {}
        # acknowledged, for the next write: the newest per object (bounded by the objects,
        # however long the database refuses)
        self._ack_rows: dict[tuple[int, str, str], tuple[Any, ...]] = {}
        self._ack_write: asyncio.Future[None] | None = None
        self._next_flush = self.clock.now()
        self.on_commissioned: Any = None  # async callable(Commissioned), set by the bridge
        # an operator alert when a peer's pushes keep failing (ocpi_bridge.push_alerts)
        self.push_alerts = PushAlerts(bridge.csms)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._sub = self.bus.subscribe("ocpi-push", maxsize=50_000)
        await self._load_acks()
        await self.reconcile()
        self._run((self._consume(), "ocpi-push-events"), (self._dispatch(), "ocpi-push-dispatch"))

    async def stop(self) -> None:
        await super().stop()
        await self.push_alerts.stop()
        await self.compliance.flush()
        for _ in range(2):  # what is waiting; then what a failed write left, once more
            write = self._flush_acks()
            if write is None:
                break
            with contextlib.suppress(Exception):  # (logged where it failed)
                await write

    # ------------------------------------------------------------------ acknowledged state

    async def _load_acks(self) -> None:
        rows = await self.bridge.csms.db.read("SELECT * FROM ocpi_push_acks")
        self.acks = Acks(
            {
                (r["peer_id"], r["kind"], r["object_id"]): Ack(
                    r["state"], r["periods_sent"], r["location_url"]
                )
                for r in rows
            }
        )

    def _keep(self, peer_id: int, acks: list[AckRecord]) -> None:
        """Keep what a peer acknowledged: here at once (what the next pushes decide from),
        in the database with the next write, which the answers read meanwhile share.

        The push's slot is free as soon as the peer answered: it does not wait for that
        commit (in a reconnect storm, the slots waited on the writer more than on the
        peer). A crash between the answer and the commit loses no more than before: the
        object is pushed again at start-up, where it differs, as after any crash."""
        now = to_db(self.clock.now())
        self.acks.record(peer_id, acks)
        for kind, oid, a in acks:
            self._ack_rows[(peer_id, kind, oid)] = (a.state, a.periods_sent, a.location_url, now)
        self._flush_acks()

    def _flush_acks(self) -> asyncio.Future[None] | None:
        """The write of the acknowledgements waiting (started if none is); None: none wait."""
        if self._ack_write is None and self._ack_rows:
            self._ack_write = asyncio.ensure_future(self._write_acks())
            self._ack_write.add_done_callback(_retrieved)
        return self._ack_write

    async def _write_acks(self) -> None:
        await asyncio.sleep(0)  # the answers already read join this write
        rows, self._ack_rows = self._ack_rows, {}

        async def job(db: JobDb) -> None:
            await db.executemany(
                """INSERT INTO ocpi_push_acks (peer_id, kind, object_id, state, periods_sent,
                       location_url, acked_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (peer_id, kind, object_id) DO UPDATE SET state = excluded.state,
                       periods_sent = excluded.periods_sent,
                       location_url = COALESCE(excluded.location_url, ocpi_push_acks.location_url),
                       acked_at = excluded.acked_at""",
                [(*key, *row) for key, row in rows.items()],
            )

        try:
            await self.bridge.csms.db.write(job)
        except BaseException as e:
            # kept for the next write (the dispatcher tries again every few seconds)
            for key, row in rows.items():  # (a newer acknowledgement meanwhile wins)
                self._ack_rows.setdefault(key, row)
            self._ack_write = None
            if isinstance(e, Exception):
                log.warning("acknowledgements not written yet", count=len(rows), error=str(e))
            raise
        self._ack_write = None
        self._flush_acks()  # what was answered while this one was written

    # ------------------------------------------------------------------ who gets what

    def _recipients(self) -> list[Recipient]:
        """The active peers, as the delivery policy takes them (made again only when the
        peers change: this runs for every event)."""
        peers = self.bridge.registered_peers()
        key = tuple((id(p), p.policy) for p in peers)
        if self._recipients_of != key:
            self._recipients_of = key
            self._measured = {p.id for p in peers if p.policy.mobie}
            self._recipients_made = [
                Recipient(
                    p.id,
                    frozenset(
                        m
                        for m in MODULES
                        if p.endpoint(m, "RECEIVER") is not None and m in p.policy.receives
                    ),
                    p.routes_all,
                    frozenset(p.parties),
                    frozenset(h.upper() for h in p.policy.hidden),
                )
                for p in peers
            ]
        return self._recipients_made

    async def _owner(self, transaction_id: int) -> str | None:
        if transaction_id not in self._owners:
            tx = await self.bridge.csms.transaction(transaction_id)
            self._owners[transaction_id] = tx.tag_owner if tx else None
        return self._owners[transaction_id]

    # ------------------------------------------------------------------ events

    async def _consume(self) -> None:
        assert self._sub is not None
        while True:
            item = await self._sub.get()
            try:
                if isinstance(item, Overflow):
                    log.warning("push events were dropped: resynchronising", dropped=item.dropped)
                    await self.reconcile()
                    await self.bridge.notices.reconcile(self.clock.now())
                    continue
                await self.handle(item)
            except Exception:
                log.exception("push rules failed on an event", event=type(item).__name__)

    async def handle(self, event: Event) -> None:
        now = self.clock.now()
        if isinstance(event, StationDefined):
            self.bridge.forget_station(event.station_id)
            await self._refresh_station(event.station_id, now)
        if isinstance(event, TransactionStarted):
            self._owners[event.transaction_id] = event.tag_owner
        await self._apply(self.rules.handle(event, now), now)
        self._wake.set()

    async def _refresh_station(self, station_id: str, now: datetime) -> None:
        row = await self.bridge.csms.station(station_id)
        if row and row.definition and row.defined:
            connectors = self._learn_place(row)
            defined_at = row.defined_at
            assert defined_at is not None
            self.rules.set_connectors(station_id, connectors, defined_at)
        else:
            self._places.pop(station_id, None)

    def _learn_place(self, station: StationSnapshot) -> tuple[int, ...]:
        """Keep where a station's EVSEs are (what an EVSE PATCH's address needs); return
        its EVSEs' connector ids. A retired EVSE is left out of both: its REMOVED goes in
        the Location's PUT, and nothing of it is PATCHed after (no status, no silence)."""
        definition = station.definition
        assert definition is not None
        active = set(active_connectors(station))
        uids = {
            e["connector_id"]: e["uid"] for e in definition["evses"] if e["connector_id"] in active
        }
        self._places[station.id] = (definition["location"]["id"], uids)
        return tuple(uids)

    async def _apply(self, effects: list[Effect], now: datetime) -> None:
        """Mark what the effects make out of date (delivery.fan_out decides for whom), and
        do the effects that are not pushes."""
        for effect in effects:
            owner = None
            if isinstance(effect, SessionPush):
                owner = await self._owner(effect.transaction_id)
            place = self._places.get(getattr(effect, "station_id", ""))
            location_id = place[0] if place is not None else None
            marks = delivery.fan_out(effect, self._recipients(), self.acks, owner, location_id)
            delivery.apply(self.outbox, marks, now)
            for mark in marks:
                if isinstance(mark, MarkEvse):
                    assert isinstance(effect, EvseChange)
                    self._owe_status(mark.key.peer_id, effect, now)
                elif isinstance(mark, MarkTouch):
                    assert isinstance(effect, LocationTouch)
                    self._owe(("R8", mark.key.peer_id, effect.station_id), effect.at)
            # (what writes is not awaited here: the events behind it would wait for each
            # commit in turn, a minute in a reconnect storm of 10,000 stations; beside the
            # loop, the writes of many are committed together)
            if delivery.makes_cdr(effect):
                assert isinstance(effect, SessionPush)
                self._spawn(self._cdr(effect, owner, now), f"cdr-{effect.transaction_id}")
            elif isinstance(effect, Returned):
                self._spawn(
                    self._store_return(effect.station_id, effect.at),
                    f"return-{effect.station_id}",
                )
            elif isinstance(effect, TriggerStatus):
                self._spawn(self._trigger(effect), f"trigger-{effect.station_id}")
            elif isinstance(effect, Commissioned) and self.on_commissioned is not None:
                self._spawn(self.on_commissioned(effect), f"commissioned-{effect.station_id}")

    # ------------------------------------------------------------------ measuring the rules

    def _owe(self, key: tuple[Any, ...], since: datetime) -> None:
        """Something is owed to a peer since ``since`` (the earliest such time is kept)."""
        if key not in self._owed or since < self._owed[key]:
            self._owed[key] = since

    def _owe_status(self, peer_id: int, effect: EvseChange, now: datetime) -> None:
        since = effect.since or now
        if effect.cause == "silence":
            self._owe(("R7", peer_id, effect.station_id), since)
        elif effect.cause == "status":
            self._owe(("R6", peer_id, effect.station_id, effect.connector_id), since)

    def _take(self, prepared: Prepared, *keys: tuple[Any, ...]) -> None:
        """This push makes up for what was owed under these keys."""
        for key in keys:
            since = self._owed.pop(key, None)
            if since is not None:
                prepared.covers.append((key[0], key, since))

    def _measure(
        self, peer_id: int, push: Push, prepared: Prepared, ok: bool, now: datetime
    ) -> None:
        if peer_id not in self._measured:
            return  # MOBI.E's rules are measured for MOBI.E (the compliance page is its view)
        kind = "session" if push.key.kind == "session" else "station"
        obj = push.key.object_id
        if not ok:
            for _, key, since in prepared.covers:
                self._owe(key, since)  # still owed
            rule = {"location": "R8", "session": "R5"}[push.key.kind]
            if push.kind == "evse_patch":
                rule = "R6"
            self.compliance.failure(rule, peer_id, kind, obj, now)
            return
        for rule, _, since in prepared.covers:
            self.compliance.sample(rule, peer_id, kind, obj, (now - since).total_seconds(), now)
        if push.key.kind == "session" and push.kind != "cdr_post":
            last = self._session_acked.get((peer_id, obj))
            if last is not None:
                self.compliance.sample("R5", peer_id, kind, obj, (now - last).total_seconds(), now)
            self._session_acked[(peer_id, obj)] = now

    async def _cdr(self, effect: SessionPush, owner: str | None, now: datetime) -> None:
        """The CDR of a session that ended, made and stored, then marked for its peers."""
        try:
            cdr = await self.bridge.sessions.make_cdr(effect.transaction_id, now)
        except Exception:
            log.exception("CDR not made", transaction_id=effect.transaction_id)
            return
        if cdr is not None:
            cdrs = delivery.cdr_marks(effect, self._recipients(), self.acks, owner, cdr["id"])
            delivery.apply(self.outbox, cdrs, now)
            self._wake.set()

    async def _store_return(self, station_id: str, at: datetime) -> None:
        async def job(db: JobDb) -> None:
            await db.execute(
                "INSERT INTO ocpi_station_returns VALUES (?, ?) ON CONFLICT (station_id) "
                "DO UPDATE SET returned_at = excluded.returned_at",
                (station_id, to_db(at)),
            )

        try:
            await self.bridge.csms.db.write(job)
        except Exception:
            log.exception("return from silence not stored", station_id=station_id)

    async def _trigger(self, effect: TriggerStatus) -> None:
        """R7: a station back from silence; ask for the statuses we do not know."""
        for cid in effect.connector_ids or (None,):
            payload: dict[str, Any] = {"requestedMessage": "StatusNotification"}
            if cid is not None:
                payload["connectorId"] = cid
            try:
                await self.bridge.csms.send_command(
                    effect.station_id, "TriggerMessage", payload, origin="ocpi-r7"
                )
            except CommandError as e:
                log.warning("status trigger failed", station_id=effect.station_id, error=str(e))

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self) -> None:
        """Compare what each peer acknowledged with the current state; push what differs,
        whole. Runs at start-up, after missed events, and when a peer registers."""
        now = self.clock.now()
        store = self.bridge.csms.db
        stations = await self.bridge.csms.defined_stations()
        recipients = self._recipients()
        location_peers = [p for p in recipients if p.receives("locations")]
        # a peer whose tariff replacements changed gets its Locations again (their
        # connectors' tariff_ids are its own; the Locations' times did not change)
        views = {p.id: frozenset(p.policy.tariffs.items()) for p in self.bridge.registered_peers()}
        new_view = {pid for pid, view in views.items() if self._views.get(pid, view) != view}
        self._views = views
        returns = {
            r["station_id"]: from_db(r["returned_at"])
            for r in await store.read("SELECT * FROM ocpi_station_returns")
        }
        marked = 0
        for station in stations:
            sid = station.id
            connectors = self._learn_place(station)
            defined_at = station.defined_at
            assert defined_at is not None
            reports = {
                c.connector_id: ConnectorState(c.status, c.received_at)  # type: ignore[arg-type]
                for c in station.connectors
            }
            self.rules.load_station(
                sid,
                connectors,
                defined_at,
                reports,
                station.last_seen_at,
                now,
                returns.get(sid),
            )
            if not location_peers:
                continue
            location = self.bridge.locations.location(station, now)
            for peer in location_peers:
                if peer.sees(location["id"]):
                    marked += await self._resync_location(peer, station, connectors, location, now)
                    if peer.id in new_view:
                        key = FamilyKey(peer.id, "location", sid)
                        delivery.apply(self.outbox, [MarkLocation(key)], now)
                        marked += 1
        session_peers = [p for p in recipients if p.receives("sessions")]
        cdr_peers = [p for p in recipients if p.receives("cdrs")]
        for tx in await self.bridge.csms.open_transactions():
            self.rules.load_session(tx.id, tx.station_id, now)
        for peer in session_peers:
            since = from_db(await self._peer_since(peer.id))
            assert since is not None
            sessions = [
                SessionFacts(
                    tx.id, tx.tag_owner, _session_state(tx), tx.stop_received_at is not None
                )
                for tx in await self.bridge.csms.transactions_updated_since(since)
            ]
            marks = delivery.reconcile_sessions(peer, self.acks, sessions)
            delivery.apply(self.outbox, marks, now)
            marked += len(marks)
        if cdr_peers:
            await self.bridge.sessions.make_missing_cdrs(now)
        for peer in cdr_peers:
            rows = await store.read(
                "SELECT id, owner FROM ocpi_cdrs WHERE created_at >= ?",
                (await self._peer_since(peer.id),),
            )
            cdrs = [(row["id"], row["owner"]) for row in rows]
            cdr_marks = delivery.reconcile_cdrs(peer, self.acks, cdrs)
            delivery.apply(self.outbox, cdr_marks, now)
            marked += len(cdr_marks)
        if marked:
            log.info("resynchronising peers: objects to push", objects=marked)
        self._wake.set()

    async def _resync_location(
        self,
        peer: Recipient,
        station: StationSnapshot,
        connectors: tuple[int, ...],
        location: dict[str, Any],
        now: datetime,
    ) -> int:
        """Mark what a peer lacks of a Location (delivery.resync_location decides) and return
        how many pushes that makes; the station's log of StatusNotifications is read only
        when an EVSE differs from what the peer acknowledged."""
        sid = station.id
        current = {}
        for cid in connectors:
            state = self.rules.evse_state(sid, cid, now)
            assert state is not None
            current[cid] = state
        defined_at = station.defined_at
        assert defined_at is not None
        reports: list[tuple[int, ConnectorState]] = []
        after = delivery.log_needed_after(self.acks, peer.id, sid, current)
        if after is not None:
            rows = await self.bridge.csms.status_log_since([sid], after)
            reports = [
                (r.connector_id, ConnectorState(r.status, r.received_at))  # type: ignore[arg-type]
                for r in rows
            ]
        mark = delivery.resync_location(
            self.acks,
            peer.id,
            sid,
            connectors,
            defined_at,
            parse_ocpi_time(location["last_updated"]),
            current,
            reports,
            self.rules.offline_after,
            self.rules.returned_at(sid),
            tuple(e["connector_id"] for e in station.evses if removed_at(e) is not None),
        )
        delivery.apply(self.outbox, [mark], now)
        return mark.plan.pushes

    async def _peer_since(self, peer_id: int) -> str:
        """A peer gets pushes of what changed since it registered; history it can pull."""
        row = await self.bridge.csms.db.read_one(
            "SELECT created_at FROM ocpi_peers WHERE id = ?", (peer_id,)
        )
        return row["created_at"] if row else to_db(self.clock.now())

    # ------------------------------------------------------------------ dispatching

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            try:
                await self._apply(self.rules.tick(now), now)
                for push in delivery.dispatch(self.outbox, self._in_flight, now).pushes:
                    self._spawn(self._send(push), f"push-{push.kind}")
                if now >= self._next_flush:
                    self._next_flush = now + timedelta(seconds=5)
                    self._spawn(self.compliance.flush(), "compliance-flush")
                    self._flush_acks()  # (those a failed write left)
            except Exception:
                log.exception("push dispatch failed")
            # A time already due (it fell due while this round ran) makes the next round start
            # at once: a due deadline always fires. That cannot spin: each round takes every
            # due deadline and backoff end. (A family held back by the per-peer limit is not
            # among these times: a finishing push wakes us for it.)
            times = [t for t in (self.rules.next_wakeup(), self.outbox.next_wakeup()) if t]
            await self._sleep(min(times) if times else None)

    async def _send(self, push: Push) -> None:
        peer_id = push.key.peer_id
        peer = next((p for p in self.bridge.registered_peers() if p.id == peer_id), None)
        started = time.perf_counter()
        ok, error, what = False, None, push.kind
        prepared: Prepared | None = None
        try:
            if peer is None:  # unregistered meanwhile: nothing to deliver to
                ok = True
                return
            prepared = await self._prepare(peer, push)
            if prepared is None:
                ok = True  # the object is gone (or not pushable): nothing to deliver
                return
            what = prepared.send.describe
            reply = await self.bridge.client.request(
                prepared.method,
                prepared.url,
                peer.token_out,
                base64_token=peer.token_out_base64,
                body=prepared.send.body,
                module=prepared.module,
                to_party=peer.primary_party,
                timeout=self.bridge.settings.push_timeout,
            )
            ok = reply.ok
            self._measure(peer_id, push, prepared, ok, self.clock.now())
            if ok:
                if push.kind == "cdr_post":
                    location_url = reply.headers.get("Location")
                    prepared.send.acks[0][2].location_url = location_url
                self._keep(peer_id, prepared.send.acks)
            else:
                error = reply.describe()
        except OcpiCallFailed as e:
            error = str(e)
            if prepared is not None:
                self._measure(peer_id, push, prepared, False, self.clock.now())
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("push failed", push=push.kind, object=push.key.object_id)
            error = f"{type(e).__name__}: {e}"
        finally:
            elapsed = time.perf_counter() - started
            self.outbox.done(push, ok, self.clock.now(), error)
            self.push_alerts.observe(peer_id, ok, self.clock.now(), error)
            if prepared is not None or error is not None:  # (not: nothing to deliver)
                self.bridge.traffic.push(peer_id, push.kind, ok, error)
            self._in_flight.ended(peer_id)
            self.metrics.pushes.labels(push.kind, "ok" if ok else "failed").inc()
            self.metrics.seconds.labels(push.kind).observe(elapsed)
            # a Location PUT, Session PUT or CDR POST is news; the PATCHes that follow every
            # frame (R6, R8) and every few minutes of a session (R5) are routine
            routine = push.kind in ("location_touch", "evse_patch", "session_patch")
            (log.warning if not ok else log.debug if routine else log.info)(
                "push",
                peer_id=peer_id,
                push=what,
                object=push.key.object_id,
                ms=round(elapsed * 1000, 1),
                outcome="delivered" if ok else "failed",
                error=error,
            )
            self._wake.set()

    # ------------------------------------------------------------------ payloads

    async def _prepare(self, peer: Peer, push: Push) -> Prepared | None:
        """Read what a push carries (delivery's ``*_send`` decide its payload and what is
        acknowledged by it, or that it is not sent); None: nothing to deliver."""
        s = self.bridge.settings
        if push.kind == "evse_patch":
            return self._evse_patch(peer, push)
        if push.key.kind == "location":
            sid = push.key.object_id
            # the station's latest frame time is in what these carry (rule R8): made durable
            # first, so that after a crash nothing older than what the peer has is pushed
            await self.bridge.csms.persist_seen(sid)
        if push.kind == "location_touch":
            touch = await self.bridge.location_touch_of_station(sid)
            if touch is None:
                return None
            location_id, last_updated = touch
            if not peer.policy.sees_location(location_id):
                return None
            send = delivery.location_touch_send(self.acks, peer.id, sid, last_updated)
            if send is None:
                return None  # the peer has a newer time already
            base = peer.endpoint("locations", "RECEIVER")
            assert base is not None
            url = join_url(base, s.country_code, s.party_id, location_id)
            prepared = Prepared("PATCH", url, "locations", send)
            self._take(prepared, ("R8", peer.id, sid))
            return prepared
        if push.kind == "location_put":
            found = await self._shared(("location", sid), self.bridge.location_of_station, sid)
            if found is None:
                return None
            location, connectors = found
            if not peer.policy.sees_location(location["id"]):
                return None  # hidden from it since this was marked
            location = location_for(peer.policy, location)
            send = delivery.location_put_send(self.acks, peer.id, sid, location, connectors)
            send.body = versions.outgoing("location", send.body, peer.version)
            if send.raised_to is not None:
                log.warning(
                    "Location older than the peer's copy: sent with the peer's time",
                    station_id=sid,
                    ours=location["last_updated"],
                    peers=send.raised_to,
                )
            base = peer.endpoint("locations", "RECEIVER")
            assert base is not None
            url = join_url(base, s.country_code, s.party_id, location["id"])
            pid = peer.id
            prepared = Prepared("PUT", url, "locations", send)
            self._take(
                prepared,
                ("R8", pid, sid),
                ("R7", pid, sid),
                *(("R6", pid, sid, cid) for cid in connectors),
            )
            planned = all(e["status"] == "PLANNED" for e in location["evses"])
            if planned or not self.acks.has_location(pid, sid):
                # R1: the Location of a station defined while the peer was registered, PUT
                # while it has reported nothing yet or for the first time (its statuses may
                # have come before the PUT went out); not a new peer's catching up
                defined = await self.bridge.csms.station(sid)
                since = defined.defined_at if defined else None
                registered = from_db(await self._peer_since(pid))
                if since is not None and (registered is None or since >= registered):
                    prepared.covers.append(("R1", ("R1", pid, sid), since))
            return prepared
        tx_id = int(push.key.object_id)
        mobie = self.bridge.is_mobie(peer)
        if push.kind == "cdr_post":
            cdr = await self._shared(
                ("cdr", tx_id), self.bridge.sessions.make_cdr, tx_id, self.clock.now()
            )
            base = peer.endpoint("cdrs", "RECEIVER")
            if cdr is None or base is None:
                return None
            body = for_peer(cdr, peer.version, mobie)
            if versions.needs_location("cdr", peer.version):  # 2.1.1: with its Location
                place = await self.bridge.get_location(versions.location_id("cdr", cdr) or "")
                place = location_for(peer.policy, place) if place else None
                body = versions.outgoing("cdr", body, peer.version, location=place)
            send = delivery.cdr_post_send(self.acks, peer.id, cdr["id"], body)
            return Prepared("POST", base, "cdrs", send) if send is not None else None
        session = await self._shared(("session", tx_id), self.bridge.sessions.session, tx_id)
        base = peer.endpoint("sessions", "RECEIVER")
        if session is None or base is None:
            return None
        url = join_url(base, s.country_code, s.party_id, session["id"])
        if push.kind == "session_put":
            body = for_peer(session, peer.version, mobie)
            if versions.needs_location("session", peer.version):  # 2.1.1: with its Location
                place = await self.bridge.get_location(session["location_id"])
                place = location_for(peer.policy, place) if place else None
                body = versions.outgoing("session", body, peer.version, location=place)
            return Prepared("PUT", url, "sessions", delivery.session_put_send(session, body))
        send = delivery.session_patch_send(self.acks, peer.id, session)
        send.body = versions.outgoing("session_patch", send.body, peer.version)
        return Prepared("PATCH", url, "sessions", send)

    async def _shared(
        self, key: tuple[Any, ...], read: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        """One read for the pushes of one object to several peers prepared together: a
        change fans out to N peers in one dispatch round, and costs one read, not N. (What
        is read is shared, never changed: each peer's body is made from it as a copy.)"""
        future = self._reading.get(key)
        if future is None:
            future = asyncio.ensure_future(read(*args))
            self._reading[key] = future
            future.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(future)

    def _evse_patch(self, peer: Peer, push: Push) -> Prepared | None:
        """One EVSE status change, as it was when it happened (rule R6)."""
        sid, cid, state = push.key.object_id, push.connector_id, push.state
        assert cid is not None and state is not None
        place = self._places.get(sid)
        if place is None or cid not in place[1]:
            return None  # no longer defined, or no longer an EVSE of the station
        send = delivery.evse_patch_send(self.acks, push)
        if send is None:
            return None  # the peer has a newer status already: this one would be stale
        location_id, uids = place
        if not peer.policy.sees_location(location_id):
            return None
        base = peer.endpoint("locations", "RECEIVER")
        assert base is not None
        s = self.bridge.settings
        url = join_url(base, s.country_code, s.party_id, location_id, uids[cid])
        prepared = Prepared("PATCH", url, "locations", send)
        key = ("R6", peer.id, sid, cid)
        self._take(prepared, key)
        if push.carries_touch:  # it stands for the Location's touches too (rule R8)
            self._take(prepared, ("R8", peer.id, sid))
        if state.status == "UNKNOWN":
            self._take(prepared, ("R7", peer.id, sid))
        # the EVSE's next change waiting behind this one is owed since its own time (each
        # change is measured, also those held up by a hub outage)
        family = self.outbox.families.get(push.key)
        line = family.evses.get(cid) if family is not None else None
        if line:
            self._owe(key, line[0].since)
        return prepared

    # ------------------------------------------------------------------ for the API

    def pending_pushes(self) -> list[PendingPush]:
        """What each peer has not acknowledged yet (for the admin API and the web pages)."""
        return [
            PendingPush(
                fam.key.peer_id,
                fam.key.kind,
                str(fam.key.object_id),
                fam.dirty_since,
                fam.in_flight.kind if fam.in_flight else None,
                fam.attempts,
                fam.failing_since,
                fam.next_attempt,
                fam.last_error,
            )
            for fam in self.outbox.pending()
        ]


def _retrieved(write: asyncio.Future[None]) -> None:
    """(A failed write of acknowledgements is logged where it failed.)"""
    if not write.cancelled():
        write.exception()


def _session_state(row: TransactionView) -> str:
    """What a Session's acknowledged state must equal, from its transaction."""
    return session_state(
        row.stop_received_at is not None, row.id_tag_status == "Accepted", row.updated_at
    )
