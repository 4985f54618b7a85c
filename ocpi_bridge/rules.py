"""MOBI.E's push rules as a pure core: state, an event and `now` in; what must be pushed, and
when to wake up, out. No I/O, no clock of its own: a day of a station's life runs in
milliseconds in a test.

- **R1** a station defined by the operator: PUT its Location (EVSEs PLANNED until they
  report a status).
- **R6** every StatusNotification: PATCH that EVSE at once (connector 0: every EVSE).
- **R7** no frame at all for ``offline_after``: every EVSE of the station becomes UNKNOWN,
  PATCHed at once; when the station speaks again, its EVSEs are PATCHed back to their real
  status, and a TriggerMessage asks for the statuses we do not know.
- **R8** every frame: a Location PATCH whose ``last_updated`` is that frame's arrival time
  (the outbox lets one PATCH carry the newest time when frames come faster than PATCHes).
- **R5** a session: PUT when its transaction starts, PATCHed every ``session_interval``
  until it stops, then PUT complete and its CDR POSTed.
- **R2** a station's first accepted boot: the commissioning notice.

What a push carries is decided when it is sent, from the current state: the effects here
only say *what* is out of date.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from csms.events import (
    Event,
    StationBooted,
    StationDefined,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)


@dataclass(frozen=True, slots=True)
class LocationFull:
    """R1: PUT the whole Location."""

    station_id: str


@dataclass(frozen=True, slots=True)
class EvseStatus:
    """R6/R7: PATCH the status of these EVSEs (by OCPP connector id; None = all).

    ``cause`` and ``since`` say what made it out of date and when (a StatusNotification's
    arrival, the start of a silence, a return), for measuring the rule."""

    station_id: str
    connector_ids: tuple[int, ...] | None
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
    | EvseStatus
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
    known: set[int] = field(default_factory=set)  # connectors whose status we know
    connectors: tuple[int, ...] = ()  # its EVSEs, by OCPP connector id


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
        last_frame: datetime | None,
        known: set[int],
        now: datetime,
        returned_at: datetime | None = None,
    ) -> None:
        """A station as the store knows it, at start-up (``returned_at``: when it last spoke
        again after a silence, which the shell keeps durably)."""
        st = self.stations.setdefault(station_id, _Station())
        st.connectors = connectors
        st.known = set(known)
        st.last_frame = last_frame
        if returned_at is not None and (st.returned_at is None or returned_at > st.returned_at):
            st.returned_at = returned_at
        if last_frame is not None:
            st.unknown = now - last_frame >= self.offline_after
            if not st.unknown:
                heapq.heappush(self._silences, (last_frame + self.offline_after, station_id))

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
            if event.connector_id == 0:
                st.known.update(st.connectors)
                st.known.add(0)
                return [EvseStatus(event.station_id, None, "status", event.at)]
            st.known.add(event.connector_id)
            return [EvseStatus(event.station_id, (event.connector_id,), "status", event.at)]
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

    def set_connectors(self, station_id: str, connectors: tuple[int, ...]) -> None:
        """The EVSEs a station has (from its definition)."""
        self.stations.setdefault(station_id, _Station()).connectors = connectors

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
            effects.append(EvseStatus(station_id, None, "return", at))
            missing = tuple(c for c in st.connectors if c not in st.known)
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
            effects.append(EvseStatus(station_id, None, "silence", st.last_frame))
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
