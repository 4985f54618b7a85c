"""Who gets which push, what it carries, and what a peer lacks: the delivery policy, pure.

    rules.py (what is out of date) ──Effect──▶ here ──Mark──▶ outbox.py (per object, per peer,
    what is unacknowledged) ──Push──▶ here ──Send──▶ the shell (pusher.py: HTTP, SQLite)

Facts in, decisions out; no I/O, no clock of its own, no database. The shell reads the
facts (the registered peers as :class:`Recipient`, what each acknowledged as :class:`Acks`,
the current Location, Session or CDR, a transaction's token owner) and does what comes back:

- :func:`fan_out`: an effect of the rules becomes marks for every peer that receives the
  module, and only for those that may see the object (a hub sees every party's sessions and
  CDRs; an eMSP only its own parties'). A final Session is PUT, then its CDR POSTed once
  made (:func:`makes_cdr`, :func:`cdr_marks`), to each peer that may see it and has not
  acknowledged that CDR yet.
- :func:`dispatch`: the pushes that may start now, within each peer's limit of pushes in
  flight (:class:`InFlight`).
- ``*_send``: what a push carries and what to record as acknowledged when the peer says OK;
  None when it must not be sent (a status or time older than what the peer acknowledged, a
  CDR already POSTed).
- :func:`resync_location`, :func:`reconcile_sessions`, :func:`reconcile_cdrs`: at start-up,
  after missed events, or when a peer registers, the difference between the current state
  and what each peer acknowledged, as marks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .locations import ConnectorState, EvseState
from .outbox import FamilyKey, Outbox, Push
from .rules import (
    Effect,
    EvseChange,
    LocationFull,
    LocationTouch,
    Resync,
    SessionPush,
    needs_log,
    plan_resync,
)
from .transport import ocpi_time, parse_ocpi_time

# ---------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class Recipient:
    """A registered peer, as far as delivery cares."""

    id: int
    modules: frozenset[str]  # what it receives: a RECEIVER endpoint and the operator's yes
    is_hub: bool = False  # MOBI.E (the central hub): sees every party's sessions and CDRs
    parties: frozenset[tuple[str, str]] = frozenset()  # (country_code, party_id) granted
    hidden: frozenset[str] = frozenset()  # Location ids hidden from it (upper case)

    def receives(self, module: str) -> bool:
        return module in self.modules

    def sees(self, location_id: str | None) -> bool:
        """May it get this Location (None: not known yet, so not hidden)?"""
        return location_id is None or location_id.upper() not in self.hidden

    def may_see(self, owner: str | None) -> bool:
        """May it get a session or CDR of a token of ``owner`` ("CC/PID")?"""
        if self.is_hub:
            return True
        if owner is None:
            return False
        cc, _, pid = owner.partition("/")
        return (cc, pid) in self.parties


@dataclass
class Ack:
    """What a peer acknowledged of one object: ``state`` is a Location's ``last_updated``,
    an EVSE's or a Session's ``STATUS|last_updated``, or a CDR's "posted"."""

    state: str
    periods_sent: int = 0  # a Session's charging periods the peer has
    location_url: str | None = None  # where the peer keeps a CDR


AckKey = tuple[int, str, str]  # (peer id, kind: location | evse | session | cdr, object id)
AckRecord = tuple[str, str, Ack]  # (kind, object id, ack)


class Acks:
    """What each peer acknowledged, by object (the store keeps it durably)."""

    def __init__(self, known: dict[AckKey, Ack] | None = None) -> None:
        self.known: dict[AckKey, Ack] = dict(known or {})

    def get(self, peer_id: int, kind: str, object_id: str) -> Ack | None:
        return self.known.get((peer_id, kind, object_id))

    def record(self, peer_id: int, acks: Iterable[AckRecord]) -> None:
        for kind, object_id, ack in acks:
            self.known[(peer_id, kind, object_id)] = ack

    def has_location(self, peer_id: int, station_id: str) -> bool:
        return (peer_id, "location", station_id) in self.known

    def cdr_posted(self, peer_id: int, cdr_id: str) -> bool:
        return (peer_id, "cdr", cdr_id) in self.known

    def evse(self, peer_id: int, station_id: str, connector_id: int) -> tuple[str, datetime] | None:
        """The status and ``last_updated`` a peer acknowledged for an EVSE."""
        ack = self.get(peer_id, "evse", f"{station_id}/{connector_id}")
        if ack is None:
            return None
        status, _, at = ack.state.partition("|")
        try:
            return status, parse_ocpi_time(at)
        except ValueError:
            return None


def session_state(stopped: bool, accepted: bool, updated_at: datetime | None) -> str:
    """What a Session's acknowledged state must equal, from its transaction."""
    if not stopped:
        status = "ACTIVE"
    else:
        status = "COMPLETED" if accepted else "INVALID"
    return f"{status}|{ocpi_time(updated_at) if updated_at else ''}"


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """A transaction, for reconciling its Session."""

    transaction_id: int
    owner: str | None
    state: str  # session_state(...)
    stopped: bool


# ---------------------------------------------------------------------------- marks


@dataclass(frozen=True, slots=True)
class MarkLocation:
    """PUT the Location; ``first``: before its EVSE changes (the peer has no copy)."""

    key: FamilyKey
    first: bool = False


@dataclass(frozen=True, slots=True)
class MarkEvse:
    """PATCH this EVSE change, after the EVSE's earlier ones."""

    key: FamilyKey
    connector_id: int
    state: EvseState


@dataclass(frozen=True, slots=True)
class MarkTouch:
    """PATCH the Location's newest ``last_updated``; ``at``: the frame's time (None: no
    frame, a resynchronisation)."""

    key: FamilyKey
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MarkSession:
    """PUT ('start', 'final') or PATCH ('progress') the Session."""

    key: FamilyKey
    what: str


@dataclass(frozen=True, slots=True)
class MarkCdr:
    """POST the CDR, once the Session's own pushes are through."""

    key: FamilyKey


@dataclass(frozen=True, slots=True)
class MarkResync:
    """What a peer lacks of a Location, found by a resynchronisation."""

    key: FamilyKey
    plan: Resync


Mark = MarkLocation | MarkEvse | MarkTouch | MarkSession | MarkCdr | MarkResync


def apply(outbox: Outbox, marks: Iterable[Mark], now: datetime) -> None:
    """Make the marks in the outbox."""
    for m in marks:
        if isinstance(m, MarkLocation):
            outbox.location_full(m.key, now, m.first)
        elif isinstance(m, MarkEvse):
            outbox.evse(m.key, m.connector_id, m.state, now)
        elif isinstance(m, MarkTouch):
            outbox.touch(m.key, now, m.at)
        elif isinstance(m, MarkSession):
            outbox.session(m.key, m.what, now)
        elif isinstance(m, MarkCdr):
            outbox.cdr_only(m.key, now)
        else:
            outbox.resync(m.key, m.plan, now)


# ---------------------------------------------------------------------------- fan-out


def makes_cdr(effect: Effect) -> bool:
    """Is this the moment a session's CDR is made? When its final Session is pushed."""
    return isinstance(effect, SessionPush) and effect.what == "final"


def fan_out(
    effect: Effect,
    peers: Iterable[Recipient],
    acks: Acks,
    owner: str | None = None,
    location_id: str | None = None,
) -> list[Mark]:
    """The marks an effect of the rules makes, for every peer that may have them.

    ``owner``: for a SessionPush, the owner of the transaction's token; ``location_id``:
    for a Location's effects, its id (a peer it is hidden from gets none). Effects that are
    not pushes (a trigger, a return, a commissioning) make no mark; nor does the CDR of a
    final Session (see :func:`cdr_marks`)."""
    out: list[Mark] = []
    if isinstance(effect, LocationFull | EvseChange | LocationTouch):
        sid = effect.station_id
        for peer in peers:
            if not peer.receives("locations") or not peer.sees(location_id):
                continue
            key = FamilyKey(peer.id, "location", sid)
            if isinstance(effect, LocationFull):
                out.append(MarkLocation(key, not acks.has_location(peer.id, sid)))
            elif isinstance(effect, EvseChange):
                out.append(MarkEvse(key, effect.connector_id, effect.state))
            else:
                out.append(MarkTouch(key, effect.at))
    elif isinstance(effect, SessionPush):
        object_id = str(effect.transaction_id)
        for peer in peers:
            if peer.receives("sessions") and peer.may_see(owner):
                out.append(MarkSession(FamilyKey(peer.id, "session", object_id), effect.what))
    return out


def cdr_marks(
    effect: Effect, peers: Iterable[Recipient], acks: Acks, owner: str | None, cdr_id: str
) -> list[MarkCdr]:
    """Once the shell made the CDR (``cdr_id``) of a final Session (:func:`makes_cdr`): POST
    it to each peer that receives CDRs, may see the session's and has not acknowledged it.
    The outbox sends it after the Session's own pushes. Any other effect makes none."""
    if not makes_cdr(effect):
        return []
    assert isinstance(effect, SessionPush)
    object_id = str(effect.transaction_id)
    return [
        MarkCdr(FamilyKey(peer.id, "session", object_id))
        for peer in peers
        if peer.receives("cdrs") and peer.may_see(owner) and not acks.cdr_posted(peer.id, cdr_id)
    ]


# ---------------------------------------------------------------------------- dispatching


class InFlight:
    """Pushes in flight, per peer, within a limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count: dict[int, int] = {}

    def room(self, peer_id: int) -> int:
        """How many more pushes to this peer may be in flight now."""
        return self.limit - self.count.get(peer_id, 0)

    def started(self, peer_id: int) -> None:
        self.count[peer_id] = self.count.get(peer_id, 0) + 1

    def ended(self, peer_id: int) -> None:
        self.count[peer_id] = max(0, self.count.get(peer_id, 1) - 1)


@dataclass
class Dispatch:
    pushes: list[Push] = field(default_factory=list)  # to send now (each counted in flight)
    held: int = 0  # ready families the per-peer limit held back


def dispatch(outbox: Outbox, in_flight: InFlight, now: datetime) -> Dispatch:
    """The pushes that may start now, oldest family first, counted in flight (the shell
    calls ``in_flight.ended`` when each is over)."""
    out = Dispatch()
    for key in outbox.ready(now, in_flight.room):
        if in_flight.room(key.peer_id) <= 0:
            out.held += 1
            continue
        for push in outbox.take(key):
            in_flight.started(key.peer_id)
            out.pushes.append(push)
    return out


# ---------------------------------------------------------------------------- what a push carries


@dataclass
class Send:
    """What a push carries and, once the peer says OK, what it acknowledged."""

    body: Any
    acks: list[AckRecord]
    describe: str
    # a Location older than the peer's copy, sent with the peer's time: that time
    raised_to: str | None = None


def evse_state_text(status: str, last_updated: str) -> str:
    return f"{status}|{last_updated}"


def location_touch_send(
    acks: Acks, peer_id: int, station_id: str, last_updated: str
) -> Send | None:
    """R8: the Location's newest ``last_updated``; None when the peer has a newer one."""
    acked = acks.get(peer_id, "location", station_id)
    if acked is not None and last_updated < acked.state:
        return None
    return Send(
        {"last_updated": last_updated},
        [("location", station_id, Ack(last_updated))],
        "Location PATCH",
    )


def location_put_send(
    acks: Acks,
    peer_id: int,
    station_id: str,
    location: dict[str, Any],
    connectors: tuple[int, ...],
) -> Send:
    """The whole Location (``connectors``: its EVSEs' OCPP connector ids, in order). One
    older than the peer's copy (cannot happen while last-seen times are made durable before
    they leave; kept as the last guard: a peer refuses an object older than its copy) is
    sent with the peer's time."""
    acked = acks.get(peer_id, "location", station_id)
    raised_to = None
    if acked is not None and location["last_updated"] < acked.state:
        raised_to = acked.state
        location = {**location, "last_updated": acked.state}
    records: list[AckRecord] = [("location", station_id, Ack(location["last_updated"]))]
    records += [
        ("evse", f"{station_id}/{cid}", Ack(evse_state_text(evse["status"], evse["last_updated"])))
        for cid, evse in zip(connectors, location["evses"], strict=True)
    ]
    return Send(location, records, "Location PUT", raised_to)


def evse_patch_send(acks: Acks, push: Push) -> Send | None:
    """One EVSE status change, as it was when it happened (rule R6); None when the peer has
    a newer status already (this one would be stale). One that carries the Location's
    touches (``push.carries_touch``, rule R8) acknowledges the Location's time too: the
    peer bumps a Location's ``last_updated`` with its EVSEs' (OCPI 2.2.1, Locations)."""
    sid, cid, state = push.key.object_id, push.connector_id, push.state
    assert cid is not None and state is not None
    delivered = acks.evse(push.key.peer_id, sid, cid)
    if delivered is not None and state.since.replace(microsecond=0) < delivered[1]:
        return None
    body = {"status": state.status, "last_updated": ocpi_time(state.since)}
    records: list[AckRecord] = [
        ("evse", f"{sid}/{cid}", Ack(evse_state_text(state.status, body["last_updated"])))
    ]
    if push.carries_touch:
        acked = acks.get(push.key.peer_id, "location", sid)
        if acked is None or body["last_updated"] > acked.state:
            records.append(("location", sid, Ack(body["last_updated"])))
    return Send(body, records, f"EVSE PATCH {state.status}")


def session_put_send(session: dict[str, Any], body: dict[str, Any]) -> Send:
    """The whole Session (``body``: as the peer's version has it)."""
    state = f"{session['status']}|{session['last_updated']}"
    ack = Ack(state, periods_sent=len(session["charging_periods"]))
    return Send(body, [("session", session["id"], ack)], f"Session PUT {session['status']}")


def session_patch_send(acks: Acks, peer_id: int, session: dict[str, Any]) -> Send:
    """The Session's progress: its energy, its time and the charging periods the peer has
    not had."""
    periods = session["charging_periods"]
    sent = acks.get(peer_id, "session", session["id"])
    already = sent.periods_sent if sent else 0
    new = periods[already:]
    body: dict[str, Any] = {"kwh": session["kwh"], "last_updated": session["last_updated"]}
    if new:
        body["charging_periods"] = new
    state = f"{session['status']}|{session['last_updated']}"
    ack = Ack(state, periods_sent=already + len(new))
    return Send(body, [("session", session["id"], ack)], "Session PATCH")


def cdr_post_send(acks: Acks, peer_id: int, cdr_id: str, body: dict[str, Any]) -> Send | None:
    """The CDR (``body``: as the peer's version has it); None once the peer acknowledged it
    (a CDR is POSTed once: again only when a POST failed)."""
    if acks.cdr_posted(peer_id, cdr_id):
        return None
    return Send(body, [("cdr", cdr_id, Ack("posted"))], "CDR POST")


# ---------------------------------------------------------------------------- reconciling


def delivered_evses(
    acks: Acks, peer_id: int, station_id: str, connectors: tuple[int, ...]
) -> dict[int, tuple[str, datetime] | None]:
    return {cid: acks.evse(peer_id, station_id, cid) for cid in connectors}


def log_needed_after(
    acks: Acks, peer_id: int, station_id: str, current: dict[int, EvseState]
) -> datetime | None:
    """Does resynchronising a peer's copy of a Location need the station's log of
    StatusNotifications? Then from when (the oldest EVSE time the peer acknowledged); None:
    it does not (no copy at all, or every EVSE as the peer has it)."""
    delivered = delivered_evses(acks, peer_id, station_id, tuple(current))
    if not acks.has_location(peer_id, station_id) or not all(delivered.values()):
        return None
    if not needs_log(current, delivered):
        return None
    return min(d[1] for d in delivered.values() if d is not None)


def resync_location(
    acks: Acks,
    peer_id: int,
    station_id: str,
    connectors: tuple[int, ...],
    defined_at: datetime,
    location_updated: datetime,
    current: dict[int, EvseState],
    log: list[tuple[int, ConnectorState]],
    offline_after: timedelta,
    returned_at: datetime | None = None,
    removed: tuple[int, ...] = (),
) -> MarkResync:
    """What a peer lacks of a station's Location (rules.plan_resync decides, from what the
    peer acknowledged); ``log``: the station's StatusNotifications since
    :func:`log_needed_after` (empty when that is None); ``removed``: the connector ids of
    its EVSEs retired (not in ``connectors``), PUT again until the peer acknowledged each
    REMOVED."""
    loc_ack = acks.get(peer_id, "location", station_id)
    removed_unacked = any(
        (got := acks.evse(peer_id, station_id, cid)) is None or got[0] != "REMOVED"
        for cid in removed
    )
    plan = plan_resync(
        connectors,
        defined_at,
        location_updated,
        parse_ocpi_time(loc_ack.state) if loc_ack is not None else None,
        delivered_evses(acks, peer_id, station_id, connectors),
        current,
        log,
        offline_after,
        returned_at,
        removed_unacked,
    )
    return MarkResync(FamilyKey(peer_id, "location", station_id), plan)


def reconcile_sessions(
    peer: Recipient, acks: Acks, sessions: Iterable[SessionFacts]
) -> list[MarkSession]:
    """The Sessions a peer may see whose acknowledged state differs: PUT whole."""
    out = []
    for s in sessions:
        if not peer.may_see(s.owner):
            continue
        ack = acks.get(peer.id, "session", str(s.transaction_id))
        if ack is None or ack.state != s.state:
            key = FamilyKey(peer.id, "session", str(s.transaction_id))
            out.append(MarkSession(key, "final" if s.stopped else "start"))
    return out


def reconcile_cdrs(
    peer: Recipient, acks: Acks, cdrs: Iterable[tuple[str, str | None]]
) -> list[MarkCdr]:
    """The CDRs (id, token owner) a peer may see and has not acknowledged: POST them."""
    return [
        MarkCdr(FamilyKey(peer.id, "session", cdr_id))
        for cdr_id, owner in cdrs
        if peer.may_see(owner) and not acks.cdr_posted(peer.id, cdr_id)
    ]
