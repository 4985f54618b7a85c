"""What each peer has not yet acknowledged, per object: a pure state machine.

Per peer, one *family* per Location (the Location, its EVSEs and its `last_updated` touches)
and one per Session (the Session and its CDR), holding what is out of date:
- a Location PUT, a Location touch (rule R8), a Session PUT or PATCH are flags: the push
  carries the current state, computed when it is sent, so it can never be stale;
- an EVSE's status changes are not: MOBI.E counts every StatusNotification (rule R6), so each
  EVSE keeps its changes in order, each with its own status and time, and they are PATCHed
  one after another; only consecutive changes to the same status merge (the newest time).
Within a family, pushes that write the same fields never run at once, so they cannot
overtake each other. (A touch may run beside an EVSE PATCH, which writes other fields, so
that neither waits for the other; never beside a Location PUT.) When a push fails, the
family is retried with exponential backoff and jitter: the same push again (the EVSE change
that failed stays first in its line), until it is acknowledged. A Location PUT goes before
the EVSE changes when the peer has no copy of the Location yet (``first``), after them
otherwise (so the peer never gets a status older than one it already has). CDRs are
immutable: a failed POST is retried as it is.

The delivery policy (delivery.py) marks and asks what may start; the shell (pusher.py)
sends and reports the outcome.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from .locations import EvseState
from .rules import Resync

FamilyKind = Literal["location", "session"]
PushKind = Literal[
    "location_put", "evse_patch", "location_touch", "session_put", "session_patch", "cdr_post"
]
# EVSE changes kept per EVSE while a peer cannot take them (a connector flapping through a
# long outage); beyond this the oldest are dropped, counted in Family.dropped
MAX_EVSE_BACKLOG = 1000


@dataclass(frozen=True, slots=True)
class FamilyKey:
    peer_id: int
    kind: FamilyKind
    object_id: str  # station id for a Location family, transaction id for a Session family


@dataclass(frozen=True, slots=True)
class Push:
    key: FamilyKey
    kind: PushKind
    connector_id: int | None = None  # for evse_patch
    state: EvseState | None = None  # for evse_patch: the change it carries
    first: bool = False  # for location_put: before the EVSE changes
    # for evse_patch: it also stands for the Location touches pending (rule R8): OCPI's
    # receiver sets the Location's last_updated from an EVSE PATCH's, which is as new as
    # the newest frame those touches were for
    carries_touch: bool = False


@dataclass
class Family:
    key: FamilyKey
    # Location family
    full: bool = False
    first: bool = False  # the PUT goes before the EVSE changes
    evses: dict[int, list[EvseState]] = field(default_factory=dict)  # changes, oldest first
    touch: bool = False
    # the newest frame time among the touches pending; None with touch set: a touch of no
    # known frame (a resynchronisation), which only a Location PATCH or PUT can carry
    touch_at: datetime | None = None
    dropped: int = 0  # EVSE changes dropped beyond MAX_EVSE_BACKLOG
    # Session family
    session_full: bool = False
    progress: bool = False
    cdr: bool = False  # sent only once the Session's own pushes are through
    # delivery: what is in flight, per lane ("main", and "touch" for Location touches)
    lanes: dict[str, Push] = field(default_factory=dict)
    dirty_since: datetime | None = None
    attempts: int = 0
    next_attempt: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None

    @property
    def in_flight(self) -> Push | None:
        return self.lanes.get("main") or self.lanes.get("touch")

    @property
    def dirty(self) -> bool:
        return (
            self.full
            or bool(self.evses)
            or self.touch
            or self.session_full
            or self.progress
            or self.cdr
        )


class Outbox:
    def __init__(
        self,
        backoff_base: timedelta = timedelta(seconds=1),
        backoff_max: timedelta = timedelta(seconds=60),
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng
        self.families: dict[FamilyKey, Family] = {}
        # Every dirty family that is not backing off, per peer, oldest first; families backing
        # off wait in a heap by next_attempt. So finding what may start costs what starts, not
        # the size of the backlog (10,000 Locations after a reconnect storm or a hub outage).
        self._due: dict[int, dict[FamilyKey, None]] = {}
        self._backoff: list[tuple[datetime, int, FamilyKey]] = []
        self._seq = itertools.count()

    def _family(self, key: FamilyKey, now: datetime) -> Family:
        fam = self.families.get(key)
        if fam is None:
            fam = self.families[key] = Family(key)
        if fam.dirty_since is None:
            fam.dirty_since = now
        if fam.next_attempt is None or fam.next_attempt <= now:
            self._due.setdefault(key.peer_id, {})[key] = None
        return fam

    # ------------------------------------------------------------------ marks

    def location_full(self, key: FamilyKey, now: datetime, first: bool = False) -> None:
        """PUT the Location; ``first``: before any EVSE change (the peer has no copy)."""
        fam = self._family(key, now)
        fam.full = True
        fam.first = fam.first or first

    def evse(self, key: FamilyKey, connector_id: int, state: EvseState, now: datetime) -> None:
        """An EVSE changed: PATCH it after its earlier changes."""
        fam = self._family(key, now)
        line = fam.evses.setdefault(connector_id, [])
        if line and line[-1].status == state.status:
            if state.since >= line[-1].since:
                line[-1] = state
            return
        line.append(state)
        if len(line) > MAX_EVSE_BACKLOG:
            del line[0]
            fam.dropped += 1

    def resync(self, key: FamilyKey, plan: Resync, now: datetime) -> None:
        """Mark what a resynchronisation found a peer lacks of a Location (rules.plan_resync).
        The EVSE changes waiting are replaced: the plan has them all, from csms's log."""
        fam = self.families.get(key)
        if fam is not None:
            fam.evses.clear()
        if plan.put_first:
            self.location_full(key, now, first=True)
        for cid, line in plan.changes.items():
            for state in line:
                self.evse(key, cid, state, now)
        if plan.put_after:
            self.location_full(key, now)
        if plan.touch:
            self.touch(key, now)

    def touch(self, key: FamilyKey, now: datetime, at: datetime | None = None) -> None:
        """PATCH the Location's newest last_updated (rule R8); ``at``: the frame's time."""
        fam = self._family(key, now)
        if at is None or (fam.touch and fam.touch_at is None):
            fam.touch_at = None
        elif not fam.touch or fam.touch_at is None or at > fam.touch_at:
            fam.touch_at = at
        fam.touch = True

    @staticmethod
    def _carried(fam: Family, state: EvseState) -> bool:
        """Does an EVSE PATCH of ``state`` carry the touches pending? Yes when its time is
        as new as their newest frame and no touch is in flight (an older touch could then
        reach the peer after it)."""
        return (
            fam.touch
            and fam.touch_at is not None
            and state.since >= fam.touch_at
            and "touch" not in fam.lanes
        )

    def session(self, key: FamilyKey, what: str, now: datetime) -> None:
        fam = self._family(key, now)
        if what == "progress":
            fam.progress = True
        else:  # start, final, or a resynchronisation: the whole Session
            fam.session_full = True

    def cdr_only(self, key: FamilyKey, now: datetime) -> None:
        """POST the CDR, once the Session's own pushes are through (marked once the CDR is
        made, and only where the peer has not acknowledged it: delivery.cdr_marks)."""
        self._family(key, now).cdr = True

    # ------------------------------------------------------------------ sending

    def ready(self, now: datetime, room: Callable[[int], int] | None = None) -> list[FamilyKey]:
        """The families that may start a push now, oldest first; with ``room``, at most
        ``room(peer_id)`` of each peer's (its free push slots)."""
        self._backoff_ended(now)
        out: list[FamilyKey] = []
        for peer_id, due in list(self._due.items()):
            left = room(peer_id) if room is not None else len(due)
            for key in list(due):
                if left <= 0:
                    break
                f = self.families.get(key)
                if f is None or not f.dirty:
                    del due[key]
                elif self._startable(f):
                    out.append(key)
                    left -= 1
            if not due:
                del self._due[peer_id]
        return out

    def _backoff_ended(self, now: datetime) -> None:
        heap = self._backoff
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            f = self.families.get(key)
            if f is not None and f.next_attempt == at and f.dirty:
                self._due.setdefault(key.peer_id, {})[key] = None

    @staticmethod
    def _put_now(f: Family) -> bool:
        return f.full and (f.first or not f.evses)

    @classmethod
    def _startable(cls, f: Family) -> bool:
        """Would take() start a push of this family now? (Kept in step with take().)"""
        main, touch = f.lanes.get("main"), f.lanes.get("touch")
        if f.key.kind == "session":
            return main is None
        if main is None and cls._put_now(f):
            return touch is None
        if main is None and f.evses:
            return True
        return (
            f.touch
            and touch is None
            and not f.full
            and (main is None or main.kind != "location_put")
        )

    def take(self, key: FamilyKey) -> list[Push]:
        """The pushes of a family that may start now; what they carry is cleared now (marks
        made while they are in flight set it again, and payloads other than EVSE changes are
        computed after this call, so nothing is lost)."""
        fam = self.families[key]
        out: list[Push] = []
        if key.kind == "location":
            main, touch = fam.lanes.get("main"), fam.lanes.get("touch")
            if main is None and self._put_now(fam):
                if touch is not None:
                    return out  # the PUT waits for the touch in flight
                out.append(self._start(fam, "main", Push(key, "location_put", first=fam.first)))
                fam.full = fam.first = False
                fam.touch, fam.touch_at = False, None  # a PUT carries the newest last_updated
                fam.evses.clear()  # and the EVSEs' current statuses (none older is sent after)
                return out
            if main is None and fam.evses:
                # the EVSE whose oldest change is the oldest goes first
                cid = min(fam.evses, key=lambda c: (fam.evses[c][0].since, c))
                line = fam.evses[cid]
                state = line.pop(0)
                if not line:
                    del fam.evses[cid]
                carries = self._carried(fam, state)
                if carries:
                    fam.touch, fam.touch_at = False, None
                push = Push(key, "evse_patch", cid, state, carries_touch=carries)
                out.append(self._start(fam, "main", push))
            main = fam.lanes.get("main")
            if (
                fam.touch
                and touch is None
                and not fam.full
                and (main is None or main.kind != "location_put")
            ):
                fam.touch, fam.touch_at = False, None
                out.append(self._start(fam, "touch", Push(key, "location_touch")))
            return out
        if fam.lanes.get("main") is not None:
            return out
        if fam.session_full:
            fam.session_full = fam.progress = False
            out.append(self._start(fam, "main", Push(key, "session_put")))
        elif fam.progress:
            fam.progress = False
            out.append(self._start(fam, "main", Push(key, "session_patch")))
        elif fam.cdr:
            fam.cdr = False
            out.append(self._start(fam, "main", Push(key, "cdr_post")))
        return out

    @staticmethod
    def _start(fam: Family, lane: str, push: Push) -> Push:
        fam.lanes[lane] = push
        return push

    def done(self, push: Push, ok: bool, now: datetime, error: str | None = None) -> None:
        fam = self.families[push.key]
        lane = "touch" if push.kind == "location_touch" else "main"
        fam.lanes.pop(lane, None)
        due = self._due.setdefault(push.key.peer_id, {})
        if ok:
            # a failure is always retried on the main lane (a whole PUT): a touch that
            # succeeds meanwhile does not cut its backoff short
            if lane == "main":
                fam.attempts = 0
                fam.next_attempt = None
                fam.failing_since = None
                fam.last_error = None
            if not fam.dirty and not fam.lanes:
                del self.families[push.key]  # nothing left to say: the next mark makes a new one
                due.pop(push.key, None)
            elif fam.dirty and (fam.next_attempt is None or fam.next_attempt <= now):
                due[push.key] = None
            return
        fam.attempts += 1
        fam.last_error = error
        if fam.failing_since is None:
            fam.failing_since = now
        delay = self.backoff_base.total_seconds() * 2 ** (fam.attempts - 1)
        jittered = delay * (0.5 + self.rng())  # 50 % to 150 %
        fam.next_attempt = now + timedelta(seconds=min(jittered, self.backoff_max.total_seconds()))
        # tried again: the same Location push (an EVSE change first in its line); a Session
        # whole (it is latest-state); a CDR as it is
        if push.kind == "cdr_post":
            fam.cdr = True
        elif push.kind == "location_put":
            fam.full = True
            fam.first = fam.first or push.first
        elif push.kind == "location_touch":
            fam.touch, fam.touch_at = True, None  # (its frame time is not known here)
        elif push.kind == "evse_patch":
            assert push.connector_id is not None and push.state is not None
            if push.carries_touch:  # the touches it stood for are owed again
                self.touch(push.key, now, push.state.since)
            line = fam.evses.setdefault(push.connector_id, [])
            if line and line[0].status == push.state.status:
                line[0] = max(line[0], push.state, key=lambda s: s.since)
            else:
                line.insert(0, push.state)
        else:
            fam.session_full = True
        due.pop(push.key, None)
        heapq.heappush(self._backoff, (fam.next_attempt, next(self._seq), push.key))

    def next_wakeup(self) -> datetime | None:
        """When the first family backing off may start again (None: none is)."""
        heap = self._backoff
        while heap:
            at, _, key = heap[0]
            f = self.families.get(key)
            if f is not None and f.next_attempt == at and f.dirty:
                # (ready() moves it to the due families at that time; if a lane is still busy
                # then, the push in flight wakes the shell when it ends)
                return at
            heapq.heappop(heap)  # stale: succeeded, or backing off anew since
        return None

    def pending(self) -> list[Family]:
        return [f for f in self.families.values() if f.dirty or f.in_flight is not None]
