"""MOBI.E's push rules as a pure core: state, an event and `now` in; what must be pushed, and
when to wake up, out. No I/O, no clock of its own: a day of a station's life runs in
milliseconds in a test.

- **R1** a station defined by the operator: PUT its Location (EVSEs PLANNED until they
  report a status).
- **R6** every StatusNotification: PATCH that EVSE at once (connector 0: every EVSE). Each
  change is an :class:`EvseChange` carrying the status and time it gives the EVSE, computed
  here when the frame arrives, so that every change reaches the peer in order with its own
  ``last_updated``, however fast they come (the outbox merges only consecutive changes to the
  same OCPI status).
- **R7** no frame at all for ``offline_after``: every EVSE of the station becomes UNKNOWN,
  PATCHed at once; when the station speaks again, its EVSEs are PATCHed back to their real
  status, and a TriggerMessage asks for the statuses we do not know.
- **R8** every frame: a Location PATCH whose ``last_updated`` is that frame's arrival time
  (the outbox lets one PATCH carry the newest time when frames come faster than PATCHes).
- **R5** a session: PUT when its transaction starts, PATCHed every ``session_interval``
  until it stops, then PUT complete and its CDR POSTed.
- **R2** a station's first accepted boot: the commissioning notice.

Apart from EVSE statuses, what a push carries is decided when it is sent, from the current
state: the other effects only say *what* is out of date.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from csms.ports import (
    Event,
    StationBooted,
    StationDefined,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)

from .locations import ConnectorState, EvseState, evse_status


@dataclass(frozen=True, slots=True)
class LocationFull:
    """R1: PUT the whole Location."""

    station_id: str


@dataclass(frozen=True, slots=True)
class EvseChange:
    """R6/R7: this EVSE (by OCPP connector id) took this status at this time: PATCH it, after
    the EVSE's earlier changes.

    ``cause`` and ``since`` say what made it and when it became owed (a StatusNotification's
    arrival, the start of a silence, a return), for measuring the rule."""

    station_id: str
    connector_id: int
    state: EvseState
    cause: str = field(default="status", compare=False)
    since: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class LocationTouch:
    """R8: PATCH the Location's last_updated with a frame's arrival time."""

    station_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionPush:
    """R5: 'start' (PUT), 'progress' (PATCH), 'final' (PUT, then the CDR)."""

    transaction_id: int
    station_id: str
    what: str


@dataclass(frozen=True, slots=True)
class TriggerStatus:
    """R7: ask the station for the statuses of these connectors (None = all)."""

    station_id: str
    connector_ids: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Returned:
    """R7: the station spoke again after a silence (to be kept durably)."""

    station_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Commissioned:
    """R2: the station's first accepted boot."""

    station_id: str
    at: datetime


Effect = (
    LocationFull
    | EvseChange
    | LocationTouch
    | SessionPush
    | TriggerStatus
    | Returned
    | Commissioned
)


@dataclass
class _Station:
    last_frame: datetime | None = None
    unknown: bool = False  # its EVSEs are (being) pushed as UNKNOWN
    returned_at: datetime | None = None  # when it last spoke again after a silence
    connectors: tuple[int, ...] = ()  # its EVSEs, by OCPP connector id
    defined_at: datetime | None = None  # when its definition (Location) was last set
    reports: dict[int, ConnectorState] = field(default_factory=dict)  # latest, per connector


@dataclass
class _Session:
    station_id: str
    next_due: datetime


class PushRules:
    def __init__(self, offline_after: timedelta, session_interval: timedelta) -> None:
        self.offline_after = offline_after
        self.session_interval = session_interval
        self.stations: dict[str, _Station] = {}
        self.sessions: dict[int, _Session] = {}
        self._silences: list[tuple[datetime, str]] = []  # (deadline, station): lazy heap
        self._dues: list[tuple[datetime, int]] = []  # (due, transaction): lazy heap

    # ------------------------------------------------------------------ state at start-up

    def load_station(
        self,
        station_id: str,
        connectors: tuple[int, ...],
        defined_at: datetime,
        reports: dict[int, ConnectorState],
        last_frame: datetime | None,
        now: datetime,
        returned_at: datetime | None = None,
    ) -> None:
        """A station as the store knows it, at start-up: its EVSEs, when it was defined, the
        latest status of each connector, its latest frame, and (``returned_at``, which the
        shell keeps durably) when it last spoke again after a silence."""
        st = self.stations.setdefault(station_id, _Station())
        st.connectors = connectors
        st.defined_at = defined_at
        st.reports = dict(reports)
        if st.last_frame is None or (last_frame is not None and last_frame > st.last_frame):
            st.last_frame = last_frame
        if returned_at is not None and (st.returned_at is None or returned_at > st.returned_at):
            st.returned_at = returned_at
        if st.last_frame is not None:
            st.unknown = now - st.last_frame >= self.offline_after
            if not st.unknown:
                heapq.heappush(self._silences, (st.last_frame + self.offline_after, station_id))

    def load_session(self, transaction_id: int, station_id: str, now: datetime) -> None:
        """An active session found at start-up: PATCHed at once (its last push may be close
        to an interval old, or PUT whole if the peer's copy differs), then every interval."""
        self._schedule(transaction_id, station_id, now)

    # ------------------------------------------------------------------ events

    def handle(self, event: Event, now: datetime) -> list[Effect]:
        if isinstance(event, StationSeen):
            return self._seen(event.station_id, event.at)
        if isinstance(event, StatusChanged):
            st = self.stations.setdefault(event.station_id, _Station())
            cid = event.connector_id
            st.reports[cid] = ConnectorState(event.status, event.at)
            targets = st.connectors if cid == 0 else tuple(c for c in st.connectors if c == cid)
            return [
                EvseChange(event.station_id, c, self._state(st, c, event.at), "status", event.at)
                for c in targets
            ]
        if isinstance(event, StationDefined):
            return [LocationFull(event.station_id)]
        if isinstance(event, TransactionStarted):
            self._schedule(event.transaction_id, event.station_id, now + self.session_interval)
            return [SessionPush(event.transaction_id, event.station_id, "start")]
        if isinstance(event, TransactionStopped):
            self.sessions.pop(event.transaction_id, None)
            return [SessionPush(event.transaction_id, event.station_id, "final")]
        if isinstance(event, StationBooted) and event.first_boot:
            return [Commissioned(event.station_id, event.at)]
        return []

    def returned_at(self, station_id: str) -> datetime | None:
        """When the station spoke again after its last silence: its EVSEs' real statuses
        are as new as that (they follow an UNKNOWN)."""
        st = self.stations.get(station_id)
        return st.returned_at if st else None

    def set_connectors(
        self, station_id: str, connectors: tuple[int, ...], defined_at: datetime
    ) -> None:
        """The EVSEs a station has, from its definition, and when that was set."""
        st = self.stations.setdefault(station_id, _Station())
        st.connectors = connectors
        st.defined_at = defined_at

    def evse_state(self, station_id: str, connector_id: int, at: datetime) -> EvseState | None:
        """An EVSE's status and its time, as known here, at ``at``."""
        st = self.stations.get(station_id)
        if st is None or connector_id not in st.connectors:
            return None
        return self._state(st, connector_id, at)

    def _state(self, st: _Station, connector_id: int, at: datetime) -> EvseState:
        return evse_status(
            st.reports.get(connector_id),
            st.reports.get(0),
            st.last_frame,
            st.defined_at or at,
            at,
            self.offline_after,
            st.returned_at,
        )

    def _seen(self, station_id: str, at: datetime) -> list[Effect]:
        st = self.stations.setdefault(station_id, _Station())
        if st.last_frame is None or at > st.last_frame:
            st.last_frame = at
        heapq.heappush(self._silences, (at + self.offline_after, station_id))
        effects: list[Effect] = [LocationTouch(station_id, at)]
        if st.unknown:
            st.unknown = False
            st.returned_at = at
            effects.append(Returned(station_id, at))
            for c in st.connectors:
                effects.append(EvseChange(station_id, c, self._state(st, c, at), "return", at))
            known = set(st.connectors) if 0 in st.reports else set(st.reports)
            missing = tuple(c for c in st.connectors if c not in known)
            if missing:
                effects.append(TriggerStatus(station_id, missing))
        return effects

    def _schedule(self, transaction_id: int, station_id: str, due: datetime) -> None:
        self.sessions[transaction_id] = _Session(station_id, due)
        heapq.heappush(self._dues, (due, transaction_id))

    # ------------------------------------------------------------------ time

    def tick(self, now: datetime) -> list[Effect]:
        effects: list[Effect] = []
        while self._silences and self._silences[0][0] <= now:
            deadline, station_id = heapq.heappop(self._silences)
            st = self.stations.get(station_id)
            if st is None or st.unknown or st.last_frame is None:
                continue
            if st.last_frame + self.offline_after != deadline:
                continue  # a later frame moved this station's deadline
            st.unknown = True
            for c in st.connectors:
                state = self._state(st, c, deadline)
                if state.status == "UNKNOWN":  # (one that never reported stays PLANNED)
                    effects.append(EvseChange(station_id, c, state, "silence", st.last_frame))
        while self._dues and self._dues[0][0] <= now:
            due, tx = heapq.heappop(self._dues)
            session = self.sessions.get(tx)
            if session is None or session.next_due != due:
                continue
            effects.append(SessionPush(tx, session.station_id, "progress"))
            following = due + self.session_interval
            if following <= now:  # we were held up: do not fire a burst of catch-up PATCHes
                following = now + self.session_interval
            self._schedule(tx, session.station_id, following)
        return effects

    def next_wakeup(self) -> datetime | None:
        candidates = []
        if self._silences:
            candidates.append(self._silences[0][0])
        if self._dues:
            candidates.append(self._dues[0][0])
        return min(candidates) if candidates else None


def replay_changes(
    connectors: tuple[int, ...],
    defined_at: datetime,
    log: list[tuple[int, ConnectorState]],
    delivered: dict[int, tuple[str, datetime] | None],
    offline_after: timedelta,
    returned_at: datetime | None = None,
) -> dict[int, list[EvseState]]:
    """R6 after a restart or missed events: the EVSE status changes a peer has not had.

    ``log`` is the station's StatusNotifications in arrival order (connector id, report),
    starting with each connector's last report before the oldest delivery; ``delivered`` is,
    per EVSE, the status and ``last_updated`` the peer acknowledged (None: nothing). Each
    report makes a change of the EVSEs it concerns, as :meth:`PushRules.handle` does when
    it arrives; those newer than what was delivered are returned, in order, consecutive
    ones of the same status merged (the newest time kept). OCPI writes times to the second,
    so a change in the delivered second counts as new only with another status."""
    reports: dict[int, ConnectorState] = {}
    out: dict[int, list[EvseState]] = {c: [] for c in connectors}
    for cid, report in log:
        reports[cid] = report
        back = returned_at if returned_at is not None and returned_at <= report.at else None
        for c in connectors if cid == 0 else (cid,) if cid in connectors else ():
            state = evse_status(
                reports.get(c), reports.get(0), None, defined_at, report.at, offline_after, back
            )
            got = delivered.get(c)
            if got is not None:
                second = state.since.replace(microsecond=0)
                if second < got[1] or (second == got[1] and state.status == got[0]):
                    continue
            changes = out[c]
            if changes and changes[-1].status == state.status:
                changes[-1] = max(changes[-1], state, key=lambda s: s.since)
            else:
                changes.append(state)
    return out


@dataclass(frozen=True, slots=True)
class Resync:
    """What a peer lacks of one Location (see :func:`plan_resync`)."""

    put_first: bool = False  # the whole Location, before anything else (it has no copy)
    changes: dict[int, list[EvseState]] = field(default_factory=dict)  # then, in order
    put_after: bool = False  # the whole Location after the changes (redefined)
    touch: bool = False  # the newest last_updated (R8)

    @property
    def pushes(self) -> int:
        return (
            self.put_first
            + self.put_after
            + self.touch
            + sum(len(line) for line in self.changes.values())
        )


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def needs_log(
    current: dict[int, EvseState], delivered: dict[int, tuple[str, datetime] | None]
) -> bool:
    """Does a resynchronisation need the station's log of StatusNotifications? Only when an
    EVSE's current status differs from what the peer acknowledged (OCPI times: seconds)."""
    return any(
        got is None or (current[cid].status, _second(current[cid].since)) != got
        for cid, got in delivered.items()
    )


def plan_resync(
    connectors: tuple[int, ...],
    defined_at: datetime,
    location_updated: datetime,
    acked_location: datetime | None,
    delivered: dict[int, tuple[str, datetime] | None],
    current: dict[int, EvseState],
    log: list[tuple[int, ConnectorState]],
    offline_after: timedelta,
    returned_at: datetime | None = None,
    removed_unacked: bool = False,
) -> Resync:
    """At start-up, after missed events, or when a peer (re)registers: what one peer lacks of
    a station's Location, from what it acknowledged (``acked_location``: the Location's
    ``last_updated``; ``delivered``: per EVSE, the status and ``last_updated``; OCPI times,
    to the second).

    No copy at all: the whole Location. Otherwise every EVSE status change since the
    acknowledged one, in order (rule R6: none skipped, also after a restart, from ``log``, see
    :func:`replay_changes`), then the EVSE's current status where it still differs (a
    silence that began meanwhile: R7); the whole Location after them when it was redefined
    since, or when the peer lacks the REMOVED of an EVSE retired (``removed_unacked``; the
    retired EVSEs are not in ``connectors``: their REMOVED goes in that PUT); and its newest
    ``last_updated`` (R8)."""
    if acked_location is None or any(d is None for d in delivered.values()):
        return Resync(put_first=True)
    changes = (
        replay_changes(connectors, defined_at, log, delivered, offline_after, returned_at)
        if needs_log(current, delivered)
        else {}
    )
    out: dict[int, list[EvseState]] = {}
    for cid in connectors:
        line = list(changes.get(cid, []))
        got = delivered[cid]
        assert got is not None
        last = (line[-1].status, _second(line[-1].since)) if line else got
        now_state = current[cid]
        if (now_state.status, _second(now_state.since)) != last:
            line.append(now_state)
        if line:
            out[cid] = line
    redefined = _second(defined_at) > acked_location or removed_unacked
    return Resync(
        changes=out,
        put_after=redefined,
        touch=not redefined and _second(location_updated) > acked_location,
    )
