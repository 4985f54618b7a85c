"""Availability of connectors over time (AFIR-style uptime): a pure core.

Facts in (a connector's status reports, its station's connects and disconnects, the
window, ``now``), decisions out (the timeline's segments, the availability figures). No
I/O: the web pages read the facts and draw what these functions return.

A moment of a connector is in exactly one state:

- ``offline``: its station was disconnected from csms (connection log), whatever the
  connector's last status said;
- else the state of the connector's last StatusNotification: ``available`` (Available),
  ``occupied`` (Preparing, Charging, SuspendedEV, SuspendedEVSE, Finishing, Reserved),
  ``faulted`` (Faulted), ``unavailable`` (Unavailable);
- ``unknown``: no data (nothing reported yet, history pruned, or after what was read).

Availability = time ``available`` or ``occupied`` / (period - time ``unknown``): a
connector in use is up; a Faulted, Unavailable or offline one is down; time without data
counts neither way. No data at all gives no percentage (None), never 0 % or 100 %.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

AVAILABLE = "available"
OCCUPIED = "occupied"
FAULTED = "faulted"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
UNKNOWN = "unknown"
STATES = (AVAILABLE, OCCUPIED, FAULTED, UNAVAILABLE, OFFLINE, UNKNOWN)
UP = frozenset({AVAILABLE, OCCUPIED})
DOWN = frozenset({FAULTED, UNAVAILABLE, OFFLINE})

_BY_STATUS = {
    "Available": AVAILABLE,
    "Preparing": OCCUPIED,
    "Charging": OCCUPIED,
    "SuspendedEV": OCCUPIED,
    "SuspendedEVSE": OCCUPIED,
    "Finishing": OCCUPIED,
    "Reserved": OCCUPIED,
    "Occupied": OCCUPIED,  # (OCPP 1.5's word, and OCPI's)
    "Faulted": FAULTED,
    "Unavailable": UNAVAILABLE,
}


def state_of(status: str | None) -> str:
    """The timeline state of an OCPP 1.6 connector status (``unknown`` for anything else)."""
    return _BY_STATUS.get(status or "", UNKNOWN)


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime
    end: datetime
    state: str

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass(frozen=True, slots=True)
class Availability:
    """Seconds per state over a period, and the availability percentage (None: no data)."""

    period_s: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def unknown_s(self) -> float:
        return self.seconds.get(UNKNOWN, 0.0)

    @property
    def known_s(self) -> float:
        return max(0.0, self.period_s - self.unknown_s)

    @property
    def up_s(self) -> float:
        return sum(self.seconds.get(s, 0.0) for s in UP)

    @property
    def percent(self) -> float | None:
        known = self.known_s
        if known <= 0:
            return None
        return max(0.0, min(100.0, 100.0 * self.up_s / known))

    def __add__(self, other: Availability) -> Availability:
        keys = set(self.seconds) | set(other.seconds)
        return Availability(
            self.period_s + other.period_s,
            {k: self.seconds.get(k, 0.0) + other.seconds.get(k, 0.0) for k in keys},
        )


def timeline(
    start: datetime,
    end: datetime,
    statuses: Iterable[tuple[datetime, str]],
    connections: Iterable[tuple[datetime, bool]] = (),
    *,
    known_until: datetime | None = None,
    connected_now: bool | None = None,
    last_seen: datetime | None = None,
) -> list[Segment]:
    """The states of one connector from ``start`` to ``end``, as adjacent segments.

    ``statuses``: (time, OCPP status) reports of the connector, ``connections``: (time,
    connected?) records of its station; both may start before ``start`` (the last one
    before it gives the state at ``start``) and are sorted here. No connection record
    before a moment: the connection is not known then, and the status alone decides.
    ``known_until``: no data after it (what was read stops there): ``unknown``.
    ``connected_now`` False while the last record says connected (csms stopped without
    recording the disconnect): offline from ``last_seen`` (the station's last frame), or
    from that record when there is no later frame.
    """
    if end <= start:
        return []
    status_changes = sorted(((t, s) for t, s in statuses if t < end), key=lambda x: x[0])
    conn_changes = sorted(((t, bool(c)) for t, c in connections if t < end), key=lambda x: x[0])
    if connected_now is False and conn_changes and conn_changes[-1][1]:
        since = conn_changes[-1][0]
        gone = max(since, last_seen) if last_seen is not None else since
        if gone < end:
            conn_changes.append((gone, False))
    limit = end if known_until is None else max(start, min(end, known_until))
    points = sorted(
        {start, limit}
        | {t for t, _ in status_changes if start < t < limit}
        | {t for t, _ in conn_changes if start < t < limit}
    )
    out: list[Segment] = []

    def add(a: datetime, b: datetime, state: str) -> None:
        if b <= a:
            return
        if out and out[-1].state == state and out[-1].end == a:
            out[-1] = Segment(out[-1].start, b, state)
        else:
            out.append(Segment(a, b, state))

    si = ci = 0
    status: str | None = None
    connected: bool | None = None
    for a, b in itertools.pairwise(points):
        while si < len(status_changes) and status_changes[si][0] <= a:
            status = status_changes[si][1]
            si += 1
        while ci < len(conn_changes) and conn_changes[ci][0] <= a:
            connected = conn_changes[ci][1]
            ci += 1
        add(a, b, OFFLINE if connected is False else state_of(status))
    add(limit, end, UNKNOWN)
    return out


def clip(segments: Iterable[Segment], start: datetime, end: datetime) -> list[Segment]:
    """The part of a timeline inside [start, end), with ``unknown`` where it has nothing."""
    out: list[Segment] = []
    cursor = start
    for s in segments:
        a, b = max(s.start, start), min(s.end, end)
        if b <= a:
            continue
        if a > cursor:
            out.append(Segment(cursor, a, UNKNOWN))
        out.append(Segment(a, b, s.state))
        cursor = b
    if cursor < end:
        out.append(Segment(cursor, end, UNKNOWN))
    return out


def availability(segments: Iterable[Segment], start: datetime, end: datetime) -> Availability:
    """Seconds per state and the availability of a timeline over [start, end)."""
    seconds: dict[str, float] = {}
    for s in clip(segments, start, end):
        seconds[s.state] = seconds.get(s.state, 0.0) + s.seconds
    return Availability(max(0.0, (end - start).total_seconds()), seconds)


def fleet(timelines: Iterable[Sequence[Segment]], start: datetime, end: datetime) -> Availability:
    """The connectors' availability together: every connector's seconds added up, so the
    percentage is the share of known connector-time that was up."""
    total = Availability(0.0, {})
    for segments in timelines:
        total = total + availability(segments, start, end)
    return total


def buckets(
    timelines: Sequence[Sequence[Segment]], end: datetime, width: timedelta, count: int
) -> list[tuple[datetime, datetime, Availability]]:
    """``count`` consecutive periods of ``width`` ending at ``end`` (oldest first), each
    with the fleet's availability over it (a chart's bars)."""
    count = max(0, min(count, 1000))
    out = []
    for i in range(count, 0, -1):
        a, b = end - i * width, end - (i - 1) * width
        out.append((a, b, fleet(timelines, a, b)))
    return out


def state_now(status: str | None, connected: bool | None) -> str:
    """A connector's state at this moment: offline when its station is not connected."""
    if connected is False:
        return OFFLINE
    return state_of(status)
