"""A discrete-event simulation of the push shell around the pure core (PushRules, Outbox and
the delivery policy).

No asyncio, no sockets, no sleeping: a virtual clock (a datetime) jumps from one scheduled
thing to the next. The things are: a station's frame arriving (a scripted day), a hub's
answer to a push (after a simulated round-trip), the core's own wake-ups (`next_wakeup` of
the rules and of the outbox), and a stop and start of the core process.

Like `ocpi_bridge.pusher.Pusher`, it only supplies facts and does what the core decides; the
policy is the real one, called here as the pusher calls it:
- each event goes to ``rules.handle(event, now)`` at its arrival, and its effects become
  outbox marks through ``delivery.fan_out`` and ``delivery.apply`` (which peers get what,
  the CDR made at a final Session: ``delivery.makes_cdr`` and ``cdr_marks``);
- a dispatch runs after every event and answer and at every wake-up: ``rules.tick(now)``,
  then ``delivery.dispatch`` (the pushes that may start, within a per-peer limit of pushes
  in flight, ``delivery.InFlight``);
- what a push carries and what it records as acknowledged are ``delivery``'s ``*_send``
  decisions, from the current state the simulated store holds (the EVSE status from
  ``ocpi_bridge.locations.evse_status``, the Location's ``last_updated`` as
  ``LocationBuilder.location``); a push they refuse (older than what the peer acknowledged,
  a CDR already POSTed) is not sent; what a push carried is recorded as acknowledged
  (``delivery.Acks``) when the hub answers OK;
- a core restart throws away the rules, the outbox and the pushes in flight (and their
  answers) and builds new ones from the stored state with ``delivery.resync_location``,
  ``reconcile_sessions`` and ``reconcile_cdrs``, as ``Pusher.reconcile`` does (the stored
  state includes the log of StatusNotifications).

Everything it did is kept for the tests to measure: the frames and events, the effects of
the rules, and every push (sent, answered, kind, object, carried value).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from csms.events import (
    Event,
    MeterSample,
    StationBooted,
    StationDefined,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from ocpi_bridge import delivery
from ocpi_bridge.delivery import AckRecord, Acks, InFlight, Recipient, SessionFacts, session_state
from ocpi_bridge.locations import ConnectorState, EvseState, evse_status
from ocpi_bridge.outbox import FamilyKey, Outbox, Push
from ocpi_bridge.rules import (
    Commissioned,
    Effect,
    PushRules,
    Returned,
    SessionPush,
    TriggerStatus,
)
from ocpi_bridge.transport import ocpi_time

ACTIONS = {
    "boot": "BootNotification",
    "heartbeat": "Heartbeat",
    "status": "StatusNotification",
    "start": "StartTransaction",
    "meter": "MeterValues",
    "stop": "StopTransaction",
}
# frames a station sends again or that change nothing we keep: losing them is harmless
LOSSY = ("heartbeat", "meter")


# ---------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Frame:
    """One OCPP message from a station (or, kind 'define', the operator defining it)."""

    at: datetime
    station_id: str
    kind: str  # define | boot | heartbeat | status | start | meter | stop
    connector_id: int | None = None
    status: str | None = None
    tx: int | None = None
    owner: str | None = None
    connectors: tuple[int, ...] = ()


class DayScript:
    """A day of several stations, written as a few calls; frames in silences are dropped."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._frames: list[Frame] = []
        self._silences: list[tuple[str, datetime, datetime]] = []

    def t(self, hhmmss: str) -> datetime:
        h, m, s = (int(x) for x in hhmmss.split(":"))
        return self.start + timedelta(hours=h, minutes=m, seconds=s)

    def add(self, frame: Frame) -> None:
        self._frames.append(frame)

    def define(self, sid: str, at: datetime, connectors: tuple[int, ...]) -> None:
        self.add(Frame(at, sid, "define", connectors=connectors))

    def boot(self, sid: str, at: datetime, statuses: dict[int, str]) -> None:
        """A BootNotification, then one StatusNotification a second for each connector."""
        self.add(Frame(at, sid, "boot"))
        for i, (cid, status) in enumerate(sorted(statuses.items()), start=1):
            self.status(sid, at + timedelta(seconds=i), cid, status)

    def status(self, sid: str, at: datetime, cid: int, status: str) -> None:
        self.add(Frame(at, sid, "status", connector_id=cid, status=status))

    def heartbeats(self, sid: str, first: datetime, end: datetime, every: int = 120) -> None:
        at = first
        while at < end:
            self.add(Frame(at, sid, "heartbeat"))
            at += timedelta(seconds=every)

    def session(
        self,
        sid: str,
        tx: int,
        cid: int,
        begin: datetime,
        end: datetime,
        owner: str,
        meter_every: int = 60,
        meter_gap: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Preparing, StartTransaction, Charging, MeterValues every ``meter_every`` s (none in
        ``meter_gap``), StopTransaction at ``end``, Finishing, Available."""
        sec = timedelta(seconds=1)
        self.status(sid, begin, cid, "Preparing")
        self.add(Frame(begin + 20 * sec, sid, "start", connector_id=cid, tx=tx, owner=owner))
        self.status(sid, begin + 25 * sec, cid, "Charging")
        at = begin + 20 * sec + meter_every * sec
        while at < end:
            if meter_gap is None or not meter_gap[0] <= at < meter_gap[1]:
                self.add(Frame(at, sid, "meter", connector_id=cid, tx=tx))
            at += meter_every * sec
        self.add(Frame(end, sid, "stop", connector_id=cid, tx=tx))
        self.status(sid, end + 2 * sec, cid, "Finishing")
        self.status(sid, end + 60 * sec, cid, "Available")

    def silence(self, sid: str, begin: datetime, end: datetime) -> None:
        """Nothing at all from the station in [begin, end)."""
        self._silences.append((sid, begin, end))

    def frames(self) -> list[Frame]:
        out = []
        for f in self._frames:
            muted = any(s == f.station_id and a <= f.at < b for s, a, b in self._silences)
            if muted:
                if f.kind not in LOSSY:
                    raise ValueError(f"a {f.kind} frame of {f.station_id} is in a silence")
                continue
            out.append(f)
        out.sort(key=lambda f: f.at)  # stable: frames at the same time keep their order
        return out


# ---------------------------------------------------------------------------- the store


@dataclass
class StationRow:
    connectors: tuple[int, ...]
    updated_at: datetime  # the definition's time (stations.defined_at)
    last_seen: datetime | None = None
    first_boot_at: datetime | None = None
    statuses: dict[int, ConnectorState] = field(default_factory=dict)
    log: list[tuple[int, ConnectorState]] = field(default_factory=list)  # csms's status_log


@dataclass
class TxRow:
    station_id: str
    connector_id: int
    owner: str
    updated_at: datetime
    stopped: bool = False
    cdr: bool = False  # made at the final SessionPush (delivery.makes_cdr)

    def facts(self, tx: int) -> SessionFacts:
        """What reconciling its Session reads (its token was accepted)."""
        state = session_state(self.stopped, True, self.updated_at)
        return SessionFacts(tx, self.owner, state, self.stopped)


class World:
    """What the database holds: the state every push is computed from."""

    def __init__(self, offline_after: timedelta) -> None:
        self.offline_after = offline_after
        self.stations: dict[str, StationRow] = {}
        self.returns: dict[str, datetime] = {}  # the store's ocpi_station_returns
        self.txs: dict[int, TxRow] = {}

    def evse(self, sid: str, cid: int, now: datetime, returned_at: datetime | None) -> EvseState:
        st = self.stations[sid]
        return evse_status(
            st.statuses.get(cid),
            st.statuses.get(0),
            st.last_seen,
            st.updated_at,
            now,
            self.offline_after,
            returned_at,
        )

    def evses(self, sid: str, now: datetime, returned_at: datetime | None) -> dict[int, EvseState]:
        return {c: self.evse(sid, c, now, returned_at) for c in self.stations[sid].connectors}

    def location_updated(self, sid: str, now: datetime, returned_at: datetime | None) -> datetime:
        """As LocationBuilder.location: the newest of the definition, the EVSEs and the
        station's latest frame."""
        st = self.stations[sid]
        times = [st.updated_at, *(e.since for e in self.evses(sid, now, returned_at).values())]
        if st.last_seen is not None:
            times.append(st.last_seen)
        return max(times)

    def session(self, tx: int) -> tuple[str, datetime]:
        row = self.txs[tx]
        return ("COMPLETED" if row.stopped else "ACTIVE", row.updated_at)

    def session_object(self, tx: int) -> dict[str, Any]:
        """The Session as the store would build it (what the policy reads of it)."""
        status, updated = self.session(tx)
        return {
            "id": str(tx),
            "status": status,
            "last_updated": ocpi_time(updated),
            "kwh": 0.0,
            "charging_periods": [],
        }

    def location_object(
        self, sid: str, now: datetime, returned_at: datetime | None
    ) -> dict[str, Any]:
        """The Location as LocationBuilder would build it (what the policy reads of it)."""
        evses = self.evses(sid, now, returned_at)
        return {
            "id": sid,
            "last_updated": ocpi_time(self.location_updated(sid, now, returned_at)),
            "evses": [
                {"status": e.status, "last_updated": ocpi_time(e.since)} for e in evses.values()
            ],
        }


# ---------------------------------------------------------------------------- the record


@dataclass
class Sent:
    """One push, as sent; ``ok`` None: its answer was lost in a core restart."""

    seq: int
    gen: int  # which run of the core sent it
    peer: int
    kind: str
    obj: str  # station id, or transaction id
    connector_id: int | None
    sent: datetime
    location: datetime | None = None  # the Location's last_updated it carries
    # an EVSE PATCH standing for the Location's touches (the hub bumps the Location's
    # last_updated with the EVSE's, as OCPI has it)
    carries_touch: bool = False
    evses: dict[int, EvseState] = field(default_factory=dict)  # the EVSE states it carries
    session: tuple[str, datetime] | None = None
    done: datetime | None = None
    ok: bool | None = None
    acks: list[AckRecord] = field(default_factory=list)  # what an OK acknowledges (delivery)


@dataclass
class Logged:
    seq: int
    at: datetime
    gen: int
    item: Any  # a Frame, an Event, or an Effect
    # for an event: the station's EVSE states once it is stored and handled
    evses: dict[int, EvseState] = field(default_factory=dict)


@dataclass
class PeerSpec:
    rtt: Callable[[random.Random], timedelta]
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)  # pushes fail
    # whose sessions it may get: every party's (a hub), or its granted parties' only
    is_hub: bool = True
    parties: frozenset[tuple[str, str]] = frozenset()

    def down(self, at: datetime) -> bool:
        return any(a <= at < b for a, b in self.outages)

    def recipient(self, peer_id: int) -> Recipient:
        """The peer as the delivery policy takes it (it receives every module)."""
        modules = frozenset(("locations", "sessions", "cdrs"))
        return Recipient(peer_id, modules, self.is_hub, self.parties)

    def sees(self, owner: str) -> bool:
        return self.recipient(0).may_see(owner)


class Core:
    """One run of the pure core, as a process holds it."""

    def __init__(self, sim: PushDay) -> None:
        self.rules = PushRules(sim.offline_after, sim.session_interval)
        self.outbox = Outbox(backoff_max=sim.backoff_max, rng=sim.rng.random)
        self.in_flight = InFlight(sim.concurrency)


# ---------------------------------------------------------------------------- the simulation


class PushDay:
    def __init__(
        self,
        frames: list[Frame],
        peers: dict[int, PeerSpec],
        *,
        start: datetime,
        offline_after: timedelta = timedelta(seconds=300),
        session_interval: timedelta = timedelta(seconds=300),
        concurrency: int = 8,
        backoff_max: timedelta = timedelta(seconds=60),
        seed: int = 1,
        restarts: tuple[tuple[datetime, timedelta], ...] = (),
        trigger_answer_after: timedelta = timedelta(seconds=1),
        actual_status: Callable[[str, int], str] = lambda sid, cid: "Available",
    ) -> None:
        self.peers = peers
        self.offline_after = offline_after
        self.session_interval = session_interval
        self.concurrency = concurrency
        self.backoff_max = backoff_max
        self.rng = random.Random(seed)
        self.trigger_answer_after = trigger_answer_after
        self.actual_status = actual_status  # what a station answers to a TriggerMessage
        self.now = start
        self.world = World(offline_after)
        self.core: Core | None = None
        self.gen = 0
        self.downtimes: list[tuple[datetime, datetime]] = []
        # the store's acknowledged state (ocpi_push_acks), and each hub's state
        self.acks = Acks()
        self.hubs: dict[int, dict[tuple[str, str], Any]] = {p: {} for p in peers}
        # the record
        self.frames: list[Logged] = []  # frames that arrived (item: Frame)
        self.lost_frames: list[Frame] = []  # frames sent while the process was down
        self.events: list[Logged] = []
        self.effects: list[Logged] = []
        self.sent: list[Sent] = []
        self.triggers: list[Logged] = []
        self.skipped: list[Push] = []  # pushes not sent: the peer had newer (or the CDR)
        # every EVSE state each peer took, in the order it took them: (peer, station, EVSE)
        self.received: dict[tuple[int, str, int], list[EvseState]] = defaultdict(list)
        # when each family had nothing left to push (peer, object) -> times
        self.clean: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        self.held_by_limit = 0  # ready families the per-peer limit held back
        # instants when the outbox asked to be woken at once yet nothing could start (the
        # shell's dispatch loop would spin there), with the families it called ready
        self.spins: list[tuple[datetime, list[FamilyKey]]] = []
        self._seq = itertools.count()
        self._queue: list[tuple[datetime, int, Callable[[Any], None], Any]] = []
        self._stuck_at: datetime | None = None
        self._index: dict[tuple[int, str], list[Sent]] = {}
        self._index_size = -1
        self._at(start, self._start_core, None)
        for f in frames:
            self._at(f.at, self._frame, f)
        for stop, downtime in restarts:
            self._at(stop, self._stop_core, None)
            self._at(stop + downtime, self._start_core, None)
            self.downtimes.append((stop, stop + downtime))

    # ------------------------------------------------------------------ the loop

    def _at(self, when: datetime, action: Callable[[Any], None], payload: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action, payload))

    def _wakeup(self) -> datetime | None:
        """The core's next wake-up, as the shell computes it (never before now)."""
        if self.core is None:
            return None
        rules, outbox = self.core.rules.next_wakeup(), self.core.outbox.next_wakeup()
        if outbox is not None and outbox <= self.now and self._stuck_at == self.now:
            outbox = None  # due, yet nothing could start: the shell would loop here at once
        times = [t for t in (rules, outbox) if t is not None]
        return max(min(times), self.now) if times else None

    def run(self, until: datetime) -> PushDay:
        while True:
            wake = self._wakeup()
            item = self._queue[0][0] if self._queue else None
            candidates = [t for t in (wake, item) if t is not None]
            if not candidates or min(candidates) > until:
                break
            when = min(candidates)
            if when > self.now:
                self._stuck_at = None
            self.now = when
            if item == when:
                _, _, action, payload = heapq.heappop(self._queue)
                action(payload)
            if self.core is None or self._dispatch():
                continue
            due = self.core.outbox.next_wakeup()
            if due is not None and due <= self.now and self._stuck_at != self.now:
                self.spins.append((self.now, self.core.outbox.ready(self.now)))
                self._stuck_at = self.now
        self.now = max(self.now, until)
        return self

    # ------------------------------------------------------------------ the core's life

    def _start_core(self, _: Any) -> None:
        self.gen += 1
        self.core = Core(self)
        self._reconcile()

    def _stop_core(self, _: Any) -> None:
        self.core = None
        self.gen += 1  # answers to pushes in flight now reach nobody

    def _reconcile(self) -> None:
        """As Pusher.reconcile: load the rules from the store; mark what each peer lacks."""
        assert self.core is not None
        rules, outbox, now, w = self.core.rules, self.core.outbox, self.now, self.world
        for sid, st in w.stations.items():
            rules.load_station(
                sid,
                st.connectors,
                st.updated_at,
                st.statuses,
                st.last_seen,
                now,
                w.returns.get(sid),
            )
            for peer in self.peers:
                self._resync_location(peer, sid)
        for tx, row in w.txs.items():
            if not row.stopped:
                rules.load_session(tx, row.station_id, now)
        sessions = [row.facts(tx) for tx, row in w.txs.items()]
        for peer in self._recipients():
            delivery.apply(outbox, delivery.reconcile_sessions(peer, self.acks, sessions), now)
        cdrs = [(str(tx), row.owner) for tx, row in w.txs.items() if row.cdr]
        for peer in self._recipients():
            delivery.apply(outbox, delivery.reconcile_cdrs(peer, self.acks, cdrs), now)

    def _recipients(self) -> list[Recipient]:
        return [spec.recipient(peer) for peer, spec in self.peers.items()]

    def _resync_location(self, peer: int, sid: str) -> None:
        """As Pusher._resync_location: what the peer lacks of a Location, by the policy (the
        store's log of StatusNotifications is read only when it asks for it)."""
        assert self.core is not None
        rules, now, st = self.core.rules, self.now, self.world.stations[sid]
        returned = rules.returned_at(sid)
        current = {cid: rules.evse_state(sid, cid, now) for cid in st.connectors}
        after = delivery.log_needed_after(self.acks, peer, sid, current)  # type: ignore[arg-type]
        mark = delivery.resync_location(
            self.acks,
            peer,
            sid,
            st.connectors,
            st.updated_at,
            self.world.location_updated(sid, now, returned),
            current,  # type: ignore[arg-type]
            st.log if after is not None else [],  # (csms's log since then: all of it here)
            self.offline_after,
            returned,
        )
        delivery.apply(self.core.outbox, [mark], now)

    # ------------------------------------------------------------------ frames and events

    def _frame(self, f: Frame) -> None:
        if self.core is None:  # the process is down: nobody receives it
            if f.kind not in LOSSY:
                raise ValueError(f"the script sends a {f.kind} frame while the core is down")
            self.lost_frames.append(f)
            return
        now, w = self.now, self.world
        if f.kind == "define":
            w.stations[f.station_id] = StationRow(f.connectors, now)
            self.core.rules.set_connectors(f.station_id, f.connectors, now)  # _refresh_station
            self._event(StationDefined(f.station_id, now, True))
            return
        st = w.stations[f.station_id]
        self.frames.append(Logged(next(self._seq), now, self.gen, f))
        st.last_seen = now  # store.touch_seen, before anything is published
        self._event(StationSeen(f.station_id, now, ACTIONS[f.kind]))
        if f.kind == "boot":
            first = st.first_boot_at is None
            st.first_boot_at = st.first_boot_at or now
            self._event(StationBooted(f.station_id, now, "Accepted", "V", "M", None, None, first))
        elif f.kind == "status":
            assert f.connector_id is not None and f.status is not None
            st.statuses[f.connector_id] = ConnectorState(f.status, now)
            st.log.append((f.connector_id, st.statuses[f.connector_id]))
            self._event(
                StatusChanged(f.station_id, f.connector_id, f.status, "NoError", None, now, now)
            )
        elif f.kind == "start":
            assert f.tx is not None and f.connector_id is not None and f.owner is not None
            w.txs[f.tx] = TxRow(f.station_id, f.connector_id, f.owner, now)
            self._event(
                TransactionStarted(
                    f.tx, f.station_id, f.connector_id, "TAG", "Accepted", 0, now, now, f.owner
                )
            )
        elif f.kind == "meter":
            assert f.tx is not None and f.connector_id is not None
            w.txs[f.tx].updated_at = now
            self._event(
                MeterSample(f.station_id, f.connector_id, f.tx, now, 1000.0, 7400.0, (), now)
            )
        elif f.kind == "stop":
            assert f.tx is not None and f.connector_id is not None
            row = w.txs[f.tx]
            row.updated_at, row.stopped = now, True
            self._event(TransactionStopped(f.tx, f.station_id, f.connector_id, 0, now, None, now))

    def _event(self, event: Event) -> None:
        assert self.core is not None
        logged = Logged(next(self._seq), self.now, self.gen, event)
        self.events.append(logged)
        self._apply(self.core.rules.handle(event, self.now))
        sid = event.station_id
        logged.evses = self.world.evses(sid, self.now, self.core.rules.returned_at(sid))

    def _apply(self, effects: list[Effect]) -> None:
        """As Pusher._apply: the policy marks what each peer gets (delivery.fan_out); the
        effects that are not pushes are done here."""
        assert self.core is not None
        outbox, now = self.core.outbox, self.now
        for effect in effects:
            self.effects.append(Logged(next(self._seq), now, self.gen, effect))
            owner = None
            if isinstance(effect, SessionPush):
                owner = self.world.txs[effect.transaction_id].owner
            peers = self._recipients()
            delivery.apply(outbox, delivery.fan_out(effect, peers, self.acks, owner), now)
            if delivery.makes_cdr(effect):
                assert isinstance(effect, SessionPush)
                tx = effect.transaction_id
                self.world.txs[tx].cdr = True  # the store makes it
                cdrs = delivery.cdr_marks(effect, peers, self.acks, owner, str(tx))
                delivery.apply(outbox, cdrs, now)
            elif isinstance(effect, TriggerStatus):
                self.triggers.append(Logged(next(self._seq), now, self.gen, effect))
                sid = effect.station_id
                for cid in effect.connector_ids or self.world.stations[sid].connectors:
                    answer = Frame(
                        now + self.trigger_answer_after,
                        sid,
                        "status",
                        connector_id=cid,
                        status=self.actual_status(sid, cid),
                    )
                    self._at(answer.at, self._frame, answer)
            elif isinstance(effect, Returned):
                self.world.returns[effect.station_id] = effect.at  # kept durably, as the shell does
            elif isinstance(effect, Commissioned):
                pass  # R2: an e-mail, not a push

    # ------------------------------------------------------------------ pushes

    def _dispatch(self) -> bool:
        """As Pusher._dispatch (delivery.dispatch); True when it did something."""
        if self.core is None:
            return False
        effects = self.core.rules.tick(self.now)
        self._apply(effects)
        started = delivery.dispatch(self.core.outbox, self.core.in_flight, self.now)
        self.held_by_limit += started.held
        for push in started.pushes:
            self._send(push)
        return bool(effects) or bool(started.pushes)

    def _send(self, push: Push) -> None:
        """As Pusher._prepare and _send: the policy says what the push carries (and what an
        OK acknowledges), or that it is not sent; the record keeps the store's values."""
        assert self.core is not None
        now, w, key, acks = self.now, self.world, push.key, self.acks
        sid, peer = key.object_id, key.peer_id
        rec = Sent(next(self._seq), self.gen, peer, push.kind, sid, None, now)
        send: delivery.Send | None
        if key.kind == "location":
            returned = self.core.rules.returned_at(sid)
            if push.kind == "location_put":
                location = w.location_object(sid, now, returned)
                connectors = w.stations[sid].connectors
                send = delivery.location_put_send(acks, peer, sid, location, connectors)
                rec.location = w.location_updated(sid, now, returned)
                rec.evses = w.evses(sid, now, returned)
            elif push.kind == "location_touch":
                updated = w.location_updated(sid, now, returned)
                send = delivery.location_touch_send(acks, peer, sid, ocpi_time(updated))
                rec.location = updated
            else:
                assert push.connector_id is not None and push.state is not None
                send = delivery.evse_patch_send(acks, push)
                rec.connector_id = push.connector_id
                rec.evses = {push.connector_id: push.state}
                if push.carries_touch:
                    rec.carries_touch = True
                    rec.location = push.state.since
        elif push.kind == "cdr_post":
            send = delivery.cdr_post_send(acks, peer, sid, {"id": sid})
        else:
            session = w.session_object(int(sid))
            if push.kind == "session_put":
                send = delivery.session_put_send(session, session)
            else:
                send = delivery.session_patch_send(acks, peer, session)
            rec.session = w.session(int(sid))
        if send is None:  # older than the peer's, or a CDR POSTed once: not sent
            self.skipped.append(push)
            self.core.outbox.done(push, True, now)
            self.core.in_flight.ended(peer)
            return
        rec.acks = send.acks
        self.sent.append(rec)
        spec = self.peers[peer]
        ok = not spec.down(now)
        self._at(now + spec.rtt(self.rng), self._answer, (rec, push, ok))

    def _answer(self, payload: tuple[Sent, Push, bool]) -> None:
        rec, push, ok = payload
        if ok:
            self._hub_applies(rec)
        if rec.gen != self.gen or self.core is None:
            return  # the process that sent it is gone: the answer reaches nobody
        rec.done, rec.ok = self.now, ok
        if ok:
            self._record(rec)
        self.core.outbox.done(push, ok, self.now, None if ok else "hub failed")
        self.core.in_flight.ended(rec.peer)
        if push.key not in self.core.outbox.families:
            self.clean[(rec.peer, rec.obj)].append(self.now)

    def _hub_applies(self, rec: Sent) -> None:
        hub = self.hubs[rec.peer]
        if rec.location is not None:
            hub[("location", rec.obj)] = rec.location
        for cid, state in rec.evses.items():
            hub[("evse", f"{rec.obj}/{cid}")] = state
            self.received[(rec.peer, rec.obj, cid)].append(state)
        if rec.session is not None:
            hub[("session", rec.obj)] = rec.session
        if rec.kind == "cdr_post":
            hub[("cdr", rec.obj)] = hub.get(("cdr", rec.obj), 0) + 1

    def _record(self, rec: Sent) -> None:
        """As Pusher._record: what the peer acknowledged, by object."""
        self.acks.record(rec.peer, rec.acks)

    # ------------------------------------------------------------------ for the tests

    def up(self, peer: int, begin: datetime, end: datetime) -> bool:
        """Neither the peer nor our process was down at any time in [begin, end]."""
        spans = [*self.peers[peer].outages, *self.downtimes]
        return not any(a <= end and begin < b for a, b in spans)

    def pushes(self, peer: int, obj: str, kinds: tuple[str, ...] | None = None) -> list[Sent]:
        """The pushes of one object (a station's Location family, or a transaction's) to
        one peer, in the order they were sent."""
        if self._index_size != len(self.sent):
            self._index = defaultdict(list)
            for s in self.sent:
                self._index[(s.peer, s.obj)].append(s)
            self._index_size = len(self.sent)
        found = self._index.get((peer, obj), [])
        return found if kinds is None else [s for s in found if s.kind in kinds]
