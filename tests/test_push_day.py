"""A whole day of several stations through the pure push core (PushRules, Outbox and the
delivery policy), driven by a discrete-event simulation of the shell (tests/push_sim.py) on
a virtual clock; each MOBI.E rule is checked by measuring the push timeline it produced.
Then small focused tests of the Outbox and of PushRules (the delivery policy's own are in
tests/test_delivery.py).

Tests named ``test_bug_*`` (and the day tests whose docstring says BUG) show a bug in the
code under test: they fail until it is fixed.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from csms.events import (
    StationBooted,
    StationDefined,
    StationSeen,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from ocpi_bridge.locations import ConnectorState, EvseState
from ocpi_bridge.outbox import MAX_EVSE_BACKLOG, FamilyKey, Outbox, Push
from ocpi_bridge.rules import (
    Commissioned,
    EvseChange,
    LocationFull,
    LocationTouch,
    PushRules,
    Resync,
    Returned,
    SessionPush,
    TriggerStatus,
    plan_resync,
)
from tests.push_sim import DayScript, Frame, Logged, PeerSpec, PushDay, Sent

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SEC = timedelta(seconds=1)
OFFLINE = timedelta(seconds=300)
INTERVAL = timedelta(seconds=300)
HUB, EMSP = 1, 2  # peer 1: MOBI.E (every session); peer 2: an EMSP (its own tokens' only)
RTT_MAX = {HUB: timedelta(milliseconds=200), EMSP: timedelta(milliseconds=50)}
CONNECTORS = (1, 2)
TOUCH_OR_PUT = ("location_touch", "location_put")
SESSION_KINDS = ("session_put", "session_patch", "cdr_post")


def t(hhmmss: str) -> datetime:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return T0 + timedelta(hours=h, minutes=m, seconds=s)


OUTAGE = (t("15:00:00"), t("15:12:00"))  # the hub fails every push
# the process stops 5 ms after a frame of S5 (its touches in flight), and starts 60 s later
RESTART = (t("11:58:12") + timedelta(milliseconds=5), timedelta(seconds=60))


# ---------------------------------------------------------------------------- the day


def day_script() -> list[Frame]:
    d = DayScript(T0)
    stations = [f"S{i}" for i in range(1, 6)]
    for i, sid in enumerate(stations):
        d.define(sid, t("00:00:00") + i * SEC, CONNECTORS)  # R1: PUT, PLANNED
    for i, sid in enumerate(stations):
        boot = t("00:10:00") + 7 * i * SEC
        # S4's firmware reports connector 1 only: connector 2 stays unknown until R7 asks
        everything = {0: "Available", 1: "Available", 2: "Available"}
        d.boot(sid, boot, {1: "Available"} if sid == "S4" else everything)
        d.heartbeats(sid, boot + (60 + 11 * i) * SEC, t("23:59:59"))
    # S1: two sessions, a station restart (boot again), a session through the hub's outage
    d.session("S1", 1, 1, t("07:00:00"), t("08:10:00"), "PT/MOB")
    d.session("S1", 2, 2, t("13:00:00"), t("14:20:00"), "PT/EDP")
    d.boot("S1", t("14:40:00"), {0: "Available", 1: "Available", 2: "Available"})
    d.session("S1", 3, 1, t("14:50:00"), t("15:40:00"), "PT/EDP")
    # S2: a connector's fault and its recovery
    d.session("S2", 4, 2, t("08:00:00"), t("09:00:00"), "PT/EDP")
    d.status("S2", t("09:30:00"), 1, "Faulted")
    d.status("S2", t("09:45:00"), 1, "Available")
    d.session("S2", 5, 1, t("17:00:00"), t("18:30:00"), "PT/MOB")
    # S3: a long silence; a session with half an hour without MeterValues; a session that
    # starts while the hub fails
    d.silence("S3", t("09:00:00"), t("09:08:00"))
    gap = (t("10:50:00"), t("11:20:00"))
    d.session("S3", 6, 1, t("10:20:00"), t("11:40:00"), "PT/MOB", meter_gap=gap)
    d.session("S3", 7, 2, t("15:05:00"), t("16:00:00"), "PT/EDP")
    # S4: a long silence, back with a connector whose status was never known
    d.silence("S4", t("08:30:00"), t("08:40:00"))
    d.session("S4", 8, 1, t("19:00:00"), t("20:00:00"), "PT/MOB")
    # S5: a short silence (one heartbeat missing: under offline_after); a session without
    # MeterValues across the core restart; a station-wide fault (connector 0), then recovery
    d.silence("S5", t("09:00:00"), t("09:02:00"))
    gap = (t("11:50:00"), t("12:20:00"))
    d.session("S5", 9, 1, t("11:30:00"), t("13:10:00"), "PT/EDP", meter_gap=gap)
    d.status("S5", t("16:00:00"), 0, "Faulted")
    d.status("S5", t("16:20:00"), 0, "Available")
    # rule R6 under pressure: S2 back with queued messages, Charging, Finishing and Available
    # within 60 ms; S4 faulted and recovered while the hub is down; S1 unavailable 2 ms
    # before the core stops (its PATCH's answer is lost), available again after the restart
    ms = timedelta(milliseconds=1)
    for i, status in enumerate(("Charging", "Finishing", "Available")):
        d.status("S2", t("12:30:00") + 30 * i * ms, 2, status)
    d.status("S4", t("15:03:00"), 2, "Faulted")
    d.status("S4", t("15:03:00") + 40 * ms, 2, "Available")
    d.status("S4", t("15:06:00"), 1, "Unavailable")
    d.status("S4", t("15:09:00"), 1, "Available")
    d.status("S1", RESTART[0] - 3 * ms, 2, "Unavailable")
    d.status("S1", t("12:05:00"), 2, "Available")
    return d.frames()


def run_day(seed: int = 7, concurrency: int = 8) -> PushDay:
    peers = {
        HUB: PeerSpec(
            rtt=lambda rng: timedelta(milliseconds=rng.uniform(10, 200)), outages=[OUTAGE]
        ),
        EMSP: PeerSpec(
            rtt=lambda rng: timedelta(milliseconds=50),
            is_hub=False,
            parties=frozenset({("PT", "EDP")}),
        ),
    }
    sim = PushDay(
        day_script(),
        peers,
        start=T0,
        offline_after=OFFLINE,
        session_interval=INTERVAL,
        concurrency=concurrency,
        seed=seed,
        restarts=(RESTART,),
    )
    # the frames stop just before midnight: run on until every station has gone UNKNOWN
    return sim.run(t("23:59:59") + 2 * OFFLINE)


_days: dict[tuple[int, int], PushDay] = {}


def a_day(seed: int = 7, concurrency: int = 8) -> PushDay:
    """Each day is simulated once per test session (a fraction of a second each)."""
    if (seed, concurrency) not in _days:
        _days[(seed, concurrency)] = run_day(seed, concurrency)
    return _days[(seed, concurrency)]


# ---------------------------------------------------------------------------- measuring


def first_after(pushes: list[Sent], seq: int, pred: Callable[[Sent], bool]) -> Sent:
    """The first push after the thing numbered ``seq`` (an event, a frame) that ``pred``
    accepts."""
    i = bisect.bisect_right(pushes, seq, key=lambda p: p.seq)
    return next(p for p in pushes[i:] if pred(p))


def sent_between(pushes: list[Sent], begin: datetime, end: datetime) -> list[Sent]:
    i = bisect.bisect_left(pushes, begin, key=lambda p: p.sent)
    j = bisect.bisect_right(pushes, end, key=lambda p: p.sent)
    return pushes[i:j]


def states_at(sim: PushDay, sid: str, at: datetime) -> dict[int, EvseState]:
    """A station's EVSE states after its last event at or before ``at``."""
    return next(e.evses for e in reversed(sim.events) if e.item.station_id == sid and e.at <= at)


def silence_said(sim: PushDay, sid: str, last: datetime) -> list[Logged]:
    """The rules' UNKNOWN changes for a station's silence after its frame at ``last``."""
    return [
        e
        for e in sim.effects
        if isinstance(e.item, EvseChange)
        and e.item.station_id == sid
        and e.item.cause == "silence"
        and last < e.at <= last + OFFLINE
    ]


def frames_by_station(sim: PushDay) -> dict[str, list[Logged]]:
    out: dict[str, list[Logged]] = defaultdict(list)
    for f in sim.frames:
        out[f.item.station_id].append(f)
    return out


def silences(sim: PushDay) -> list[tuple[str, datetime, datetime | None]]:
    """(station, last frame, first frame after) for every gap of offline_after or more
    (None: the day ended first); gaps across a core restart are left out."""
    out: list[tuple[str, datetime, datetime | None]] = []
    for sid, frames in frames_by_station(sim).items():
        times = [f.at for f in frames]
        for last, back in zip(times, [*times[1:], None], strict=True):
            end = back or sim.now
            if end - last >= OFFLINE and not any(a <= end and last < b for a, b in sim.downtimes):
                out.append((sid, last, back))
    return out


@functools.cache
def retry_windows(sim: PushDay, peer: int, obj: str) -> list[tuple[datetime, datetime]]:
    """From a family's first failed push to when it had nothing left to push (what it owed
    delivered)."""
    out = []
    clean = sim.clean.get((peer, obj), [])
    for p in sim.pushes(peer, obj):
        if p.ok is False and not (out and out[-1][0] <= p.sent <= out[-1][1]):
            i = bisect.bisect_left(clean, p.done)
            out.append((p.sent, clean[i] if i < len(clean) else sim.now))
    return out


def settled(sim: PushDay, peer: int, obj: str, begin: datetime, end: datetime) -> bool:
    """Our process was up, and the object's pushes to that peer were not being retried, at
    any time in [begin, end]."""
    spans = [*sim.downtimes, *retry_windows(sim, peer, obj)]
    return not any(a <= end and begin < b for a, b in spans)


def main_lane_busy(pushes: list[Sent], begin: datetime, end: datetime) -> bool:
    """The Location family's main lane (Location PUT, EVSE PATCH) was busy all through
    [begin, end): each push in it started when the one before it was answered."""
    at = begin
    for p in sent_between(pushes, begin - 10 * SEC, end):
        if p.kind == "location_touch" or p.done is None or p.done <= at:
            continue
        if p.sent > at:
            return False
        at = p.done
        if at >= end:
            return True
    return at >= end


def r5_gaps(sim: PushDay) -> list[tuple[int, int, Sent, Sent]]:
    """(peer, transaction, push, next push) for every two consecutive pushes of a session,
    from its start PUT to its final PUT."""
    out = []
    for peer in sim.peers:
        for tx in sim.world.txs:
            pushes = sim.pushes(peer, str(tx), ("session_put", "session_patch"))
            out += [(peer, tx, a, b) for a, b in itertools.pairwise(pushes)]
    return out


def r5_worst(sim: PushDay) -> timedelta:
    """The largest gap between two session pushes, but where the hub failed or our
    process was down."""
    return max(
        b.sent - a.sent
        for peer, tx, a, b in r5_gaps(sim)
        if settled(sim, peer, str(tx), a.sent, b.sent)
    )


def covers_r8(p: Sent) -> bool:
    """A Location touch or PUT, or an EVSE PATCH that stands for the touches (R8)."""
    return p.kind in TOUCH_OR_PUT or p.carries_touch


def r8_covers(sim: PushDay) -> list[tuple[Logged, int, Sent]]:
    """(frame, peer, the first Location touch or PUT sent after it) for every frame."""
    out = []
    for f in sim.frames:
        for peer in sim.peers:
            pushes = sim.pushes(peer, f.item.station_id)
            out.append((f, peer, first_after(pushes, f.seq, covers_r8)))
    return out


def older_last_updated(sim: PushDay) -> list[str]:
    """Every push that carried an older last_updated for an object than one sent before."""
    newest: dict[tuple[int, str], datetime] = {}
    out = []
    for p in sim.sent:
        carried: list[tuple[str, datetime]] = []
        if p.location is not None:
            carried.append((f"Location {p.obj}", p.location))
        carried += [(f"EVSE {p.obj}/{c}", e.since) for c, e in p.evses.items()]
        if p.session is not None:
            carried.append((f"Session {p.obj}", p.session[1]))
        for obj, value in carried:
            before = newest.get((p.peer, obj))
            if before is not None and value < before:
                out.append(
                    f"peer {p.peer}: {p.kind} of {obj} at {p.sent:%H:%M:%S.%f} carries "
                    f"{value:%H:%M:%S} after {before:%H:%M:%S} was sent"
                )
            newest[(p.peer, obj)] = max(value, before or value)
    return out


def hubs_hold_the_current_state(sim: PushDay) -> None:
    """Each hub's last acknowledged value of every object it may see is the current one."""
    assert sim.core is not None
    for peer, spec in sim.peers.items():
        hub = sim.hubs[peer]
        for sid in sim.world.stations:
            returned = sim.core.rules.returned_at(sid)
            evses = sim.world.evses(sid, sim.now, returned)
            for cid, state in evses.items():
                assert hub[("evse", f"{sid}/{cid}")] == state, (peer, sid, cid)
            # a Location's last_updated is the newest of its own and its EVSEs'
            shown = max([hub[("location", sid)], *(s.since for s in evses.values())])
            assert shown == sim.world.location_updated(sid, sim.now, returned), (peer, sid)
        for tx, row in sim.world.txs.items():
            if spec.sees(row.owner):
                assert hub[("session", str(tx))] == sim.world.session(tx), (peer, tx)
                assert hub[("cdr", str(tx))] == 1, (peer, tx)  # POSTed exactly once
            else:
                assert ("session", str(tx)) not in hub
    assert not any(f.dirty or f.in_flight for f in sim.core.outbox.families.values())


# ---------------------------------------------------------------------------- the day's tests


def test_day_script_has_what_the_rules_are_about() -> None:
    day = a_day()
    effects = [e.item for e in day.effects]
    events = [e.item for e in day.events]
    assert len(day.world.stations) == 5 and len(day.world.txs) == 9
    assert sum(isinstance(e, LocationFull) for e in effects) == 5  # R1 at the definitions
    assert sum(isinstance(e, Commissioned) for e in effects) == 5  # first boots only
    assert sum(isinstance(e, StationBooted) for e in events) == 6  # and S1's restart
    back = [sid for sid, _, b in silences(day) if b is not None]
    assert sorted(back) == ["S3", "S4"]  # long silences, back again
    gaps = [
        b.at - a.at
        for frames in frames_by_station(day).values()
        for a, b in itertools.pairwise(frames)
    ]
    assert any(timedelta(seconds=200) < g < OFFLINE for g in gaps)  # a short silence too
    assert day.lost_frames  # frames came while the process was down
    assert any(s.ok is None for s in day.sent)  # answers lost with it
    assert any(s.ok is False for s in day.sent)  # the hub's outage
    assert len(day.triggers) == 1
    assert len(day.frames) > 4000 and len(day.sent) > 8000


def test_day_r5_a_session_is_pushed_at_least_every_interval() -> None:
    day = a_day()
    checked = 0
    for peer, tx, a, b in r5_gaps(day):
        if not settled(day, peer, str(tx), a.sent, b.sent):
            continue  # the hub failing, or our process down: see the tests of those
        checked += 1
        assert b.sent - a.sent <= INTERVAL + RTT_MAX[peer], (peer, a, b)
    assert checked > 150
    # measured: PATCHes go out on the interval, to the push round-trip
    assert INTERVAL <= r5_worst(day) <= INTERVAL + RTT_MAX[HUB]


def test_day_r5_patches_continue_without_meter_values() -> None:
    day = a_day()
    # S3's session 6 has no MeterValues from 10:50 to 11:20: PATCHed every interval anyway
    patches = day.pushes(HUB, "6", ("session_patch",))
    during = [p for p in patches if t("10:50:00") <= p.sent < t("11:20:00")]
    assert len(during) == 6
    assert len({p.session for p in during}) == 1  # nothing new to say, said on time


def test_day_r5_final_put_then_cdr_after_the_stop() -> None:
    day = a_day()
    stops = {e.item.transaction_id: e for e in day.events if isinstance(e.item, TransactionStopped)}
    for peer, spec in day.peers.items():
        for tx, row in day.world.txs.items():
            pushes = day.pushes(peer, str(tx))
            if not spec.sees(row.owner):
                assert pushes == []
                continue
            ok = [p for p in pushes if p.ok]
            stop = stops[tx]
            assert ok[0].kind == "session_put" and ok[0].session[0] == "ACTIVE"
            after = [p for p in ok if p.seq > stop.seq]
            assert [p.kind for p in after[-2:]] == ["session_put", "cdr_post"], (peer, tx)
            final, cdr = after[-2:]
            assert final.session == ("COMPLETED", stop.at)
            assert cdr.sent >= final.done
            # nothing is PATCHed once the session is over
            assert not [p for p in pushes if p.kind == "session_patch" and p.seq > stop.seq]
            if settled(day, peer, str(tx), stop.at, cdr.done):
                # at once (or after the PATCH in flight), and the CDR right after
                assert final.sent - stop.at <= RTT_MAX[peer]
                assert cdr.sent == final.done


def test_day_r5_across_the_core_restart() -> None:
    """Regression (found by the day simulation):
    (rules.load_session / Pusher.reconcile): after a core restart, an active session
    whose state has not changed since its last acknowledged PATCH (here: no MeterValues for
    a while) is not PUT again, and ``load_session`` schedules its next PATCH a whole
    interval after the restart. The gap between two Session pushes grows to nearly two
    intervals (R5 allows one)."""
    day = a_day()
    stop, downtime = RESTART
    across = [
        (peer, tx, b.sent - a.sent)
        for peer, tx, a, b in r5_gaps(day)
        if a.sent < stop + downtime and b.sent > stop
    ]
    assert across  # session 9 (S5) runs through the restart, for both peers
    for peer, tx, gap in across:
        assert gap <= INTERVAL + downtime + RTT_MAX[peer], f"peer {peer}, session {tx}: {gap}"


def test_day_r6_every_status_change_is_patched_at_once() -> None:
    day = a_day()
    worst = timedelta(0)
    checked = 0
    for e in day.events:
        ev = e.item
        if not isinstance(ev, StatusChanged):
            continue
        affected = CONNECTORS if ev.connector_id == 0 else (ev.connector_id,)
        for peer in day.peers:
            pushes = day.pushes(peer, ev.station_id)
            for cid in affected:
                then = e.evses[cid]
                # the first push after it that carries this EVSE's status at this time (or a
                # repeat of the status, merged): the changes before it went first, in order
                cover = first_after(
                    pushes,
                    e.seq,
                    lambda p, cid=cid, then=then: (
                        p.kind != "location_touch"
                        and cid in p.evses
                        and p.evses[cid].status == then.status
                        and p.evses[cid].since >= then.since
                    ),
                )
                if not settled(day, peer, ev.station_id, ev.at, cover.sent):
                    continue
                checked += 1
                worst = max(worst, cover.sent - ev.at)
                # sent as soon as the EVSE lane was free: when the event came, or when the
                # pushes ahead of it in that lane were answered
                assert main_lane_busy(pushes, ev.at, cover.sent), (ev, cover)
    assert checked > 100
    # (S2's burst: three changes in 60 ms, the last waits for the two before it)
    assert worst <= (len(CONNECTORS) + 1) * RTT_MAX[HUB]


def test_day_r7_silence_to_unknown_is_exactly_offline_after() -> None:
    day = a_day()
    long_silences = silences(day)
    assert len(long_silences) == 2 + 5  # S3 and S4 in the day, every station at its end
    for sid, last, _back in long_silences:
        deadline = last + OFFLINE
        # the rules say it at the tick of the deadline, to the microsecond, for every EVSE
        # whose status was known
        said = silence_said(day, sid, last)
        before = states_at(day, sid, last)
        known = [c for c in CONNECTORS if before[c].status != "PLANNED"]
        assert [(e.at, e.item.connector_id) for e in said] == [(deadline, c) for c in known]
        for peer in day.peers:
            pushes = day.pushes(peer, sid)
            sends = []
            for cid in known:
                p = first_after(pushes, said[0].seq, lambda p, cid=cid: cid in p.evses)
                assert p.evses[cid] == EvseState("UNKNOWN", deadline)
                sends.append(p.sent)
            # the first EVSE at the deadline itself, the next one on its answer
            assert min(sends) == deadline
            assert max(sends) - deadline <= (len(known) - 1) * RTT_MAX[peer]


def test_day_r7_no_unknown_without_a_silence() -> None:
    day = a_day()
    deadlines = {(sid, last + OFFLINE) for sid, last, _ in silences(day)}
    for p in day.sent:
        for state in p.evses.values():
            if state.status == "UNKNOWN":
                assert (p.obj, state.since) in deadlines, p
    # S5's silence was shorter than offline_after: nothing UNKNOWN about it
    s5 = [p for p in day.pushes(HUB, "S5", ("evse_patch",)) if p.sent < t("10:00:00")]
    assert s5 and all(e.status != "UNKNOWN" for p in s5 for e in p.evses.values())


def test_day_r7_a_station_back_gets_its_real_statuses() -> None:
    day = a_day()
    back_again = [(sid, last, back) for sid, last, back in silences(day) if back is not None]
    for sid, last, back in back_again:
        frame = next(f for f in day.frames if f.item.station_id == sid and f.at == back)
        before = states_at(day, sid, last)
        for peer in day.peers:
            pushes = day.pushes(peer, sid)
            for cid in CONNECTORS:
                p = first_after(
                    pushes,
                    frame.seq,
                    lambda p, cid=cid: p.kind != "location_touch" and cid in p.evses,
                )
                if before[cid].status == "PLANNED":  # it never said: still PLANNED (see below)
                    assert p.evses[cid] == before[cid]
                    continue
                assert p.evses[cid].status == before[cid].status
                assert p.evses[cid].since >= back  # newer than the UNKNOWN it follows
                assert p.sent - back <= len(CONNECTORS) * RTT_MAX[peer]
    # S4's connector 2 never said its status: it is asked for on the station's return, and
    # the answer is PATCHed
    (trigger,) = day.triggers
    s4_back = next(back for sid, _, back in back_again if sid == "S4")
    assert trigger.at == s4_back and trigger.item == TriggerStatus("S4", (2,))
    answer = next(
        e
        for e in day.events
        if isinstance(e.item, StatusChanged) and e.item.station_id == "S4" and e.at > s4_back
    )
    assert answer.item.connector_id == 2
    for peer in day.peers:
        p = first_after(day.pushes(peer, "S4"), answer.seq, lambda p: 2 in p.evses)
        assert p.kind == "evse_patch" and p.evses[2] == EvseState("AVAILABLE", answer.at)
        assert p.sent == answer.at


def test_day_r8_every_frame_is_covered_by_a_location_touch() -> None:
    day = a_day()
    worst = timedelta(0)
    checked = 0
    for f, peer, cover in r8_covers(day):
        sid = f.item.station_id
        assert cover.location >= f.at, (f, cover)
        if not settled(day, peer, sid, f.at, cover.sent):
            continue
        checked += 1
        worst = max(worst, cover.sent - f.at)
        if cover.sent != f.at:
            # it waited for the touch (or the Location PUT) in flight when the frame came,
            # and went the moment that one was answered
            blocking = [
                p
                for p in sent_between(day.pushes(peer, sid), f.at - 10 * SEC, f.at)
                if p.kind in TOUCH_OR_PUT and p.done is not None and p.done > f.at
            ]
            assert [p.done for p in blocking] == [cover.sent], (f, cover, blocking)
    assert checked > 8000
    assert worst <= RTT_MAX[HUB]


def test_day_r8_evse_patches_carry_the_touches_of_status_frames() -> None:
    """Most StatusNotifications need no touch of their own: their EVSE PATCH stands for it
    (the frames it covers are checked above)."""
    day = a_day()
    carrying = [p for p in day.sent if p.carries_touch]
    assert carrying and all(p.kind == "evse_patch" for p in carrying)
    assert all(p.location == p.evses[p.connector_id].since for p in carrying)
    patches = [p for p in day.sent if p.kind == "evse_patch"]
    assert len(carrying) > len(patches) / 2


def test_day_r8_a_touch_carries_the_newest_frame() -> None:
    """What a touch carries is the station's newest frame when it is sent: frames that come
    faster than touches are answered share one."""
    day = a_day()
    seen = {sid: [f.at for f in frames] for sid, frames in frames_by_station(day).items()}
    touches = [p for p in day.sent if p.kind == "location_touch"]
    for p in touches:
        times = seen[p.obj]
        assert p.location == times[bisect.bisect_right(times, p.sent) - 1], p
    delivered = [p for p in touches if p.ok]
    assert len(delivered) < len(day.peers) * len(day.frames)


def test_day_failed_pushes_are_retried_as_they_were_with_backoff() -> None:
    day = a_day()
    failed = [p for p in day.sent if p.ok is False]
    assert failed and all(p.peer == HUB and OUTAGE[0] <= p.sent < OUTAGE[1] for p in failed)
    for f in failed:
        after = [p for p in day.pushes(f.peer, f.obj) if p.sent >= f.done]
        if f.kind == "cdr_post":
            assert after[0].kind == "cdr_post"
        elif f.kind in SESSION_KINDS:
            assert after[0].kind == "session_put", (f, after[0])  # latest-state: whole
        elif f.kind == "evse_patch":
            # the same change again (or merged with a repeat of its status), before any
            # newer change of that EVSE
            (cid, state), *_ = f.evses.items()
            again = next(p for p in after if p.kind != "location_touch" and cid in p.evses)
            assert again.kind == "evse_patch", (f, again)
            assert again.evses[cid].status == state.status and again.evses[cid].since >= state.since
        else:
            again = next(p for p in after if p.kind == f.kind)
            assert again.location >= f.location, (f, again)
    # retries are spaced by the backoff: never closer than half the base, never further
    # than the cap and its jitter
    for peer, obj in {(p.peer, p.obj) for p in failed}:
        tries = [p for p in day.pushes(peer, obj) if p.ok is False]
        for a, b in itertools.pairwise(tries):
            if b.sent > a.done:
                assert 0.5 * SEC <= b.sent - a.done <= 1.5 * day.backoff_max
        # once the hub is back, what the family owed is delivered within the longest
        # backoff and the round-trips of what it had queued
        queued = len([p for p in day.pushes(peer, obj) if p.sent >= OUTAGE[1]])
        end = retry_windows(day, peer, obj)[-1][1]
        assert end <= OUTAGE[1] + 1.5 * day.backoff_max + queued * RTT_MAX[HUB], (obj, end)


def test_day_peers_have_their_own_families() -> None:
    day = a_day()
    # while the hub failed, the EMSP was PATCHed as usual: no PUT, nothing failed
    during = [p for p in day.sent if p.peer == EMSP and OUTAGE[0] <= p.sent < OUTAGE[1]]
    assert during and all(p.ok for p in during)
    assert {p.kind for p in during} >= {"location_touch", "evse_patch", "session_patch"}
    assert "location_put" not in {p.kind for p in during}
    # the EMSP gets only its own tokens' sessions; every peer gets every Location
    emsp_sessions = {p.obj for p in day.sent if p.peer == EMSP and p.kind in SESSION_KINDS}
    assert emsp_sessions == {str(tx) for tx, r in day.world.txs.items() if r.owner == "PT/EDP"}
    hub_sessions = {p.obj for p in day.sent if p.peer == HUB and p.kind in SESSION_KINDS}
    assert hub_sessions == {str(tx) for tx in day.world.txs}


def test_day_core_restart_resynchronises_what_was_not_acknowledged() -> None:
    day = a_day()
    stop, downtime = RESTART
    start = stop + downtime
    # answers lost with the process: the hub took those touches, our store never knew
    lost = {(p.peer, p.obj) for p in day.sent if p.ok is None}
    assert lost == {(HUB, "S5"), (EMSP, "S5"), (HUB, "S1"), (EMSP, "S1")}
    first: dict[tuple[int, str], Sent] = {}
    for p in day.sent:
        if p.sent >= start:
            first.setdefault((p.peer, p.obj), p)
    for key in lost:
        # what the peer may lack, at once: the newest frame time, and S1's EVSE change
        # whose answer was lost (replayed from csms's log of StatusNotifications)
        assert first[key].kind in ("location_touch", "evse_patch") and first[key].sent == start
        if key[1] == "S1":
            (replayed,) = [p for p in day.pushes(*key, ("evse_patch",)) if p.sent == start]
            assert replayed.evses[2].status == "INOPERATIVE"
    # Locations the peers have are never pushed whole again (nothing was redefined)
    assert first[(HUB, "S2")].kind == "location_touch"
    assert not [p for p in day.sent if p.kind == "location_put" and p.sent >= start]


def expected_statuses(sim: PushDay, sid: str, cid: int) -> list[str]:
    """What an EVSE went through, from the frames alone: its state after each of the
    station's events (csms's evse_status, not the push rules), UNKNOWN in each silence of
    offline_after or more; consecutive repeats merged."""
    timeline = [(e.at, e.evses[cid].status) for e in sim.events if e.item.station_id == sid]
    for s_id, last, _back in silences(sim):
        if s_id == sid and states_at(sim, sid, last)[cid].status != "PLANNED":
            timeline.append((last + OFFLINE, "UNKNOWN"))
    timeline.sort(key=lambda x: x[0])
    return [status for status, _ in itertools.groupby(s for _, s in timeline)]


def test_day_every_status_change_reaches_every_peer_in_order() -> None:
    """Rule R6 counted: each EVSE's statuses as the frames made them (Charging, Finishing
    and Available within a minute; faults; silences; through the hub's outage and the core's
    restart) are the statuses each peer received, in the same order, none skipped (only
    repeats of one status merge); and every CDR reached each peer that may see it once."""
    day = a_day()
    for sid, st in day.world.stations.items():
        for cid in st.connectors:
            expected = expected_statuses(day, sid, cid)
            status_events = [
                e
                for e in day.events
                if isinstance(e.item, StatusChanged)
                and e.item.station_id == sid
                and e.item.connector_id in (0, cid)
            ]
            assert len(expected) > 1 and status_events
            for peer in day.peers:
                got = [s.status for s in day.received[(peer, sid, cid)]]
                merged = [status for status, _ in itertools.groupby(got)]
                assert merged == expected, (peer, sid, cid)
                # each StatusNotification's state was received, or a repeat of its status
                # that came after it
                received = day.received[(peer, sid, cid)]
                for e in status_events:
                    state = e.evses[cid]
                    assert any(
                        r.status == state.status and r.since >= state.since for r in received
                    ), (peer, e)
    for peer, spec in day.peers.items():
        posted = defaultdict(int)
        for p in day.sent:
            if p.peer == peer and p.kind == "cdr_post" and p.ok:
                posted[p.obj] += 1
        seen_by = {str(tx) for tx, row in day.world.txs.items() if spec.sees(row.owner)}
        assert set(posted) == seen_by and set(posted.values()) == {1}, (peer, posted)


def test_day_nothing_acknowledged_is_lost() -> None:
    """At the end of the day, after the hub's outage and the core's restart, each hub holds
    the current state of every object it may see."""
    hubs_hold_the_current_state(a_day())


def test_day_no_push_carries_an_older_last_updated() -> None:
    """BUG: some pushes carry an EVSE last_updated older than one sent before for the same
    EVSE. Two causes, each shown alone by test_bug_evse_last_updated_goes_back_when_the_
    station_fault_clears and test_core_restart_remembers_that_a_station_came_back."""
    assert older_last_updated(a_day()) == []


def test_day_the_outbox_never_asks_for_a_wakeup_it_cannot_use() -> None:
    day = a_day()
    assert day.spins == []
    assert day.held_by_limit == 0  # 8 pushes in flight per peer: never reached today


def test_day_with_two_pushes_in_flight_per_peer() -> None:
    """Another seed (round-trips, jitter) and a limit of two pushes in flight per peer, which
    the bursts after the outage and the restart reach: the rules still hold."""
    day = a_day(seed=2, concurrency=2)
    assert day.held_by_limit > 0
    assert r5_worst(day) <= INTERVAL + RTT_MAX[HUB]
    for sid, last, _ in silences(day):
        assert {e.at for e in silence_said(day, sid, last)} == {last + OFFLINE}
    for f, peer, cover in r8_covers(day):
        assert cover.location >= f.at
        if settled(day, peer, f.item.station_id, f.at, cover.sent):
            assert cover.sent - f.at <= RTT_MAX[HUB]
    hubs_hold_the_current_state(day)


# ---------------------------------------------------------------------------- focused: bugs


def small_day(
    script: Callable[[DayScript], None],
    until: str,
    restarts: tuple[tuple[datetime, timedelta], ...] = (),
) -> PushDay:
    d = DayScript(T0)
    d.define("A", T0, CONNECTORS)
    script(d)
    peers = {HUB: PeerSpec(rtt=lambda rng: timedelta(milliseconds=50))}
    return PushDay(d.frames(), peers, start=T0, restarts=restarts).run(t(until))


def test_evse_last_updated_does_not_go_back_when_the_station_fault_clears() -> None:
    """Regression (found by the day simulation):
    (ocpi_bridge.locations.evse_status): connector 0 Faulted makes every EVSE
    OUTOFORDER since the fault; when connector 0 is Available again, each EVSE takes its own
    connector's old status *with that status's old time*: the PATCH says AVAILABLE since
    00:01:02, older than the OUTOFORDER since 00:10:00 PATCHed before it (a receiver that
    orders by last_updated drops it, and the EVSE is shown out of order for good)."""

    def script(d: DayScript) -> None:
        d.boot("A", t("00:01:00"), {0: "Available", 1: "Available", 2: "Available"})
        d.heartbeats("A", t("00:02:00"), t("00:30:00"))
        d.status("A", t("00:10:00"), 0, "Faulted")
        d.status("A", t("00:20:00"), 0, "Available")

    sim = small_day(script, "00:30:00")
    patches = [p for p in sim.pushes(HUB, "A", ("evse_patch",)) if p.connector_id == 1]
    assert [p.evses[1].status for p in patches[-2:]] == ["OUTOFORDER", "AVAILABLE"]
    assert patches[-1].evses[1].since >= patches[-2].evses[1].since, patches[-2:]


def test_core_restart_remembers_that_a_station_came_back() -> None:
    """Regression (found by the day simulation):
    (PushRules.returned_at is only in memory; load_station does not restore it):
    after a silence, the station's EVSEs are PATCHed back as new as its return (here
    00:40:00). After a core restart the EVSE state is computed without it, so it
    differs from what was acknowledged; reconcile PUTs the Location whole, carrying each
    EVSE's last_updated from before the silence (00:01:0x): older than what the hub has."""

    def script(d: DayScript) -> None:
        d.boot("A", t("00:01:00"), {0: "Available", 1: "Available", 2: "Available"})
        d.heartbeats("A", t("00:02:00"), t("01:30:00"))
        d.silence("A", t("00:30:00"), t("00:40:00"))

    sim = small_day(script, "01:30:00", restarts=((t("01:01:00"), 10 * SEC),))
    assert older_last_updated(sim) == []
    puts = [p for p in sim.pushes(HUB, "A", ("location_put",)) if p.sent > t("01:01:00")]
    assert puts == [], "a Location PUT after the restart though nothing changed"


def test_session_patch_not_late_after_core_restart() -> None:
    """Regression (found by the day simulation):
    (PushRules.load_session): the docstring says an active session found at start-up
    "is PUT (reconciled) now", but reconcile PUTs it only when its state differs from the
    acknowledged one. Without MeterValues since its last PATCH, nothing is pushed at the
    restart and the next PATCH comes a whole interval after it: here 6 min 50 s after the
    previous one (R5: at most 5 min; the process was down 10 s)."""

    def script(d: DayScript) -> None:
        d.boot("A", t("00:01:00"), {0: "Available", 1: "Available", 2: "Available"})
        d.heartbeats("A", t("00:02:00"), t("01:30:00"))
        gap = (t("00:20:00"), t("00:50:00"))
        d.session("A", 1, 1, t("00:10:00"), t("01:00:00"), "PT/MOB", meter_gap=gap)

    sim = small_day(script, "01:30:00", restarts=((t("00:32:00"), 10 * SEC),))
    pushes = sim.pushes(HUB, "1", ("session_put", "session_patch"))
    gaps = [b.sent - a.sent for a, b in itertools.pairwise(pushes)]
    assert max(gaps) <= INTERVAL + 10 * SEC + RTT_MAX[HUB], max(gaps)


def test_outbox_ready_and_next_wakeup_never_name_a_family_that_cannot_start() -> None:
    """Regression (found by the day simulation):
    (Outbox._startable vs Outbox.take): an EVSE PATCH fails while the family's touch
    is in flight, and an EVSE is marked meanwhile. Its backoff passes, the touch has not
    answered yet: ``ready`` named the family and ``next_wakeup`` was in the past, yet ``take``
    gave nothing. The shell's dispatch loop then woke at once, again and again, until the
    touch answered (up to push_timeout): a busy loop."""
    ob = Outbox(rng=lambda: 0.5)
    key = FamilyKey(HUB, "location", "A")
    mark(ob, key, (1,), T0)
    ob.touch(key, T0)
    patch, touch = ob.take(key)
    assert (patch.kind, touch.kind) == ("evse_patch", "location_touch")
    mark(ob, key, (2,), T0)
    ob.done(patch, False, T0 + 0.1 * SEC)
    now = T0 + 3 * SEC  # past the backoff; the touch is still in flight
    taken = {k: ob.take(k) for k in ob.ready(now)}
    assert all(taken.values())
    wake = ob.next_wakeup()
    assert wake is None or wake > now
    assert kinds(taken[key]) == ["evse_patch:1"]  # the one that failed, first
    ob.done(touch, True, now)
    ob.done(taken[key][0], True, now)
    assert kinds(ob.take(key)) == ["evse_patch:2"]


# ---------------------------------------------------------------------------- focused: Outbox


def loc(peer: int = HUB, sid: str = "A") -> FamilyKey:
    return FamilyKey(peer, "location", sid)


def ses(peer: int = HUB, tx: str = "1") -> FamilyKey:
    return FamilyKey(peer, "session", tx)


def kinds(pushes: list[Push]) -> list[str]:
    return [p.kind if p.connector_id is None else f"{p.kind}:{p.connector_id}" for p in pushes]


def mark(
    ob: Outbox, key: FamilyKey, cids: tuple[int, ...], at: datetime, status: str = "AVAILABLE"
) -> None:
    """An EVSE change of each of these connectors, to ``status`` at ``at``."""
    for cid in cids:
        ob.evse(key, cid, EvseState(status, at), at)


def test_outbox_a_first_location_put_goes_first_and_covers_everything() -> None:
    ob = Outbox()
    mark(ob, loc(), (2, 1), T0)
    ob.touch(loc(), T0)
    ob.location_full(loc(), T0, first=True)  # the peer has no copy yet
    (put,) = ob.take(loc())
    assert put.kind == "location_put" and put.first
    assert ob.ready(T0) == []  # the PUT carries the EVSEs and the newest last_updated too
    ob.done(put, True, T0)
    assert ob.pending() == [] and ob.families == {}


def test_outbox_a_location_put_of_a_known_location_waits_for_the_evse_changes() -> None:
    """The peer has the Location: its EVSEs' changes go first, in order, then the PUT
    (which carries the current statuses: after it, nothing older may be sent)."""
    ob = Outbox()
    mark(ob, loc(), (1,), T0, "CHARGING")
    mark(ob, loc(), (1,), T0 + SEC, "AVAILABLE")
    ob.location_full(loc(), T0 + SEC)
    order = []
    while ob.ready(T0 + SEC):
        (p,) = ob.take(loc())
        order.append(f"{p.kind}:{p.state.status}" if p.state else p.kind)
        ob.done(p, True, T0 + SEC)
    assert order == ["evse_patch:CHARGING", "evse_patch:AVAILABLE", "location_put"]


def test_outbox_every_evse_change_in_order_only_repeats_merge() -> None:
    """Rule R6: Charging, Finishing (both CHARGING) and Available within milliseconds, while
    a PATCH of that EVSE is in flight: CHARGING (the newer time) then AVAILABLE."""
    ob = Outbox()
    mark(ob, loc(), (1,), T0, "AVAILABLE")
    (first,) = ob.take(loc())
    ms = timedelta(milliseconds=20)
    mark(ob, loc(), (1,), T0 + ms, "CHARGING")
    mark(ob, loc(), (1,), T0 + 2 * ms, "CHARGING")
    mark(ob, loc(), (1,), T0 + 3 * ms, "AVAILABLE")
    ob.done(first, True, T0 + 4 * ms)
    sent = []
    while ob.ready(T0 + 5 * ms):
        (p,) = ob.take(loc())
        sent.append(p.state)
        ob.done(p, True, T0 + 5 * ms)
    assert sent == [EvseState("CHARGING", T0 + 2 * ms), EvseState("AVAILABLE", T0 + 3 * ms)]


def test_outbox_evse_patches_in_connector_order_with_the_touch_beside_them() -> None:
    ob = Outbox()
    mark(ob, loc(), (2, 1), T0)
    ob.touch(loc(), T0)
    first = ob.take(loc())
    assert kinds(first) == ["evse_patch:1", "location_touch"]
    assert ob.ready(T0) == [] and ob.take(loc()) == []  # one push per lane
    ob.touch(loc(), T0)  # a frame while the touch is in flight
    ob.done(first[0], True, T0)
    assert kinds(ob.take(loc())) == ["evse_patch:2"]
    ob.done(first[1], True, T0)
    assert kinds(ob.take(loc())) == ["location_touch"]


def test_outbox_an_evse_patch_as_new_as_the_frames_carries_their_touch() -> None:
    """Rule R8 by an EVSE PATCH: the peer bumps the Location's last_updated with it, so the
    touch of the StatusNotification it reports (and of older frames) is not sent again."""
    ob = Outbox()
    ob.touch(loc(), T0, at=T0 - SEC)  # a heartbeat
    ob.touch(loc(), T0, at=T0)  # the StatusNotification...
    mark(ob, loc(), (1,), T0)  # ...and its EVSE change
    (patch,) = ob.take(loc())
    assert patch.kind == "evse_patch" and patch.carries_touch
    ob.done(patch, True, T0 + SEC)
    assert loc() not in ob.families  # nothing else owed
    # a failed one owes its touches again, carried by the same PATCH retried
    ob.touch(loc(), T0, at=T0 + 2 * SEC)
    mark(ob, loc(), (1,), T0 + 2 * SEC, "CHARGING")
    (patch,) = ob.take(loc())
    assert patch.carries_touch
    ob.done(patch, False, T0 + 2 * SEC)
    assert ob.families[loc()].touch
    (again,) = ob.take(loc())
    assert again.kind == "evse_patch" and again.carries_touch


def test_outbox_a_touch_newer_than_the_evse_change_is_sent_beside_it() -> None:
    ob = Outbox()
    mark(ob, loc(), (1,), T0)
    ob.touch(loc(), T0, at=T0 + SEC)  # a frame after the status
    assert kinds(ob.take(loc())) == ["evse_patch:1", "location_touch"]
    # a touch of no known frame (a resynchronisation) is never carried
    ob2 = Outbox()
    ob2.touch(loc(), T0)
    ob2.touch(loc(), T0, at=T0)
    mark(ob2, loc(), (1,), T0 + SEC)
    assert kinds(ob2.take(loc())) == ["evse_patch:1", "location_touch"]
    # nor beside a touch in flight, which could reach the peer after it
    ob3 = Outbox()
    ob3.touch(loc(), T0, at=T0)
    (touch,) = ob3.take(loc())
    ob3.touch(loc(), T0, at=T0 + SEC)
    mark(ob3, loc(), (1,), T0 + SEC)
    (patch,) = ob3.take(loc())
    assert patch.kind == "evse_patch" and not patch.carries_touch
    ob3.done(touch, True, T0 + SEC)
    assert kinds(ob3.take(loc())) == ["location_touch"]


def test_outbox_a_touch_never_runs_beside_a_location_put() -> None:
    ob = Outbox()
    ob.location_full(loc(), T0)
    (put,) = ob.take(loc())
    ob.touch(loc(), T0)
    mark(ob, loc(), (1,), T0)
    assert ob.ready(T0) == [] and ob.take(loc()) == []
    ob.done(put, True, T0)
    assert kinds(ob.take(loc())) == ["evse_patch:1", "location_touch"]
    # and a PUT waits for the touch in flight
    ob2 = Outbox()
    ob2.touch(loc(), T0)
    (touch,) = ob2.take(loc())
    ob2.location_full(loc(), T0)
    assert ob2.take(loc()) == []
    ob2.done(touch, True, T0)
    assert kinds(ob2.take(loc())) == ["location_put"]


def test_outbox_session_put_then_patches_then_cdr() -> None:
    ob = Outbox()
    ob.session(ses(), "start", T0)
    (put,) = ob.take(ses())
    ob.session(ses(), "progress", T0)
    assert ob.take(ses()) == []  # one at a time
    ob.done(put, True, T0)
    (patch,) = ob.take(ses())
    assert patch.kind == "session_patch"
    ob.session(ses(), "progress", T0)  # due again while in flight: then the stop comes
    ob.session(ses(), "final", T0)
    ob.cdr_only(ses(), T0)
    ob.done(patch, True, T0)
    order = []
    while ob.ready(T0):
        (p,) = ob.take(ses())
        order.append(p.kind)
        ob.done(p, True, T0)
    assert order == ["session_put", "cdr_post"]  # the PUT carries the progress too
    assert ob.families == {}


def test_outbox_a_final_session_alone_posts_no_cdr() -> None:
    """The CDR is marked once, by the shell, when it is made (a second mark while its POST
    was in flight posted it twice)."""
    ob = Outbox()
    ob.session(ses(), "final", T0)
    (put,) = ob.take(ses())
    ob.done(put, True, T0)
    assert ob.families == {}


def test_outbox_a_mark_made_in_flight_is_not_lost() -> None:
    ob = Outbox()
    mark(ob, loc(), (1,), T0)
    (p,) = ob.take(loc())
    mark(ob, loc(), (1,), T0 + SEC)  # a newer status while the PATCH is on its way
    ob.done(p, True, T0 + 2 * SEC)
    assert kinds(ob.take(loc())) == ["evse_patch:1"]


def test_outbox_after_a_failure_the_same_push_is_tried_again() -> None:
    ob = Outbox(rng=lambda: 0.0)
    mark(ob, loc(), (1,), T0, "CHARGING")
    (p,) = ob.take(loc())
    ob.done(p, False, T0, "502")
    mark(ob, loc(), (1,), T0 + 0.1 * SEC, "AVAILABLE")
    mark(ob, loc(), (2,), T0)
    assert ob.ready(T0 + 0.4 * SEC) == []  # backoff: 1 s x (0.5 + 0)
    assert ob.next_wakeup() == T0 + 0.5 * SEC
    (again,) = ob.take(loc())
    assert again.state == p.state  # the change that failed, before the newer ones
    ob2 = Outbox(rng=lambda: 0.0)
    ob2.session(ses(), "progress", T0)
    (p,) = ob2.take(ses())
    ob2.done(p, False, T0, "timeout")
    assert kinds(ob2.take(ses())) == ["session_put"]  # a Session: whole (latest state)
    fam = ob2.families[ses()]
    assert fam.attempts == 1 and fam.failing_since == T0 and fam.last_error == "timeout"


def test_outbox_a_failed_evse_change_merges_with_a_repeat_of_its_status() -> None:
    ob = Outbox(rng=lambda: 0.0)
    mark(ob, loc(), (1,), T0, "CHARGING")
    (p,) = ob.take(loc())
    mark(ob, loc(), (1,), T0 + SEC, "CHARGING")  # (Finishing: still CHARGING)
    ob.done(p, False, T0, "502")
    assert ob.families[loc()].evses[1] == [EvseState("CHARGING", T0 + SEC)]


def test_outbox_an_evse_backlog_is_bounded() -> None:
    ob = Outbox()
    for i in range(MAX_EVSE_BACKLOG + 10):
        mark(ob, loc(), (1,), T0 + i * SEC, "CHARGING" if i % 2 else "AVAILABLE")
    fam = ob.families[loc()]
    assert len(fam.evses[1]) == MAX_EVSE_BACKLOG and fam.dropped == 10
    assert fam.evses[1][0].since == T0 + 10 * SEC  # the oldest went


def test_outbox_a_cdr_is_retried_as_a_post() -> None:
    ob = Outbox(rng=lambda: 0.0)
    ob.session(ses(), "final", T0)
    ob.cdr_only(ses(), T0)
    (put,) = ob.take(ses())
    ob.done(put, True, T0)
    (post,) = ob.take(ses())
    assert post.kind == "cdr_post"
    ob.done(post, False, T0, "500")
    (again,) = ob.take(ses())
    assert again.kind == "cdr_post"  # the CDR as it is, not the Session
    ob.done(again, True, T0 + SEC)
    assert ob.families == {}


def test_outbox_peers_are_independent() -> None:
    ob = Outbox(rng=lambda: 0.0)
    for peer in (HUB, EMSP):
        mark(ob, loc(peer), (1,), T0)
    (hub_patch,) = ob.take(loc(HUB))
    (emsp_patch,) = ob.take(loc(EMSP))
    ob.done(hub_patch, False, T0)  # the hub fails
    ob.done(emsp_patch, True, T0)
    for peer in (HUB, EMSP):
        mark(ob, loc(peer), (2,), T0)
    assert ob.ready(T0) == [loc(EMSP)]  # the hub's family waits for its backoff
    assert kinds(ob.take(loc(EMSP))) == ["evse_patch:2"]  # the EMSP's is PATCHed as usual
    assert ob.families[loc(EMSP)].attempts == 0
    assert kinds(ob.take(loc(HUB))) == ["evse_patch:1"]


def test_outbox_backoff_grows_and_its_jitter_stays_within_bounds() -> None:
    base, cap = timedelta(seconds=1), timedelta(seconds=60)
    draws = [(lambda: 0.0, True), (lambda: 0.999999, True), (random.Random(5).random, False)]
    for draw, constant in draws:
        ob = Outbox(backoff_base=base, backoff_max=cap, rng=draw)
        mark(ob, loc(), (1,), T0)
        now = T0
        delays = []
        for attempt in range(1, 11):
            (p,) = ob.take(loc())
            ob.done(p, False, now)
            fam = ob.families[loc()]
            delay = fam.next_attempt - now
            nominal = min(cap, base * 2 ** (attempt - 1))
            assert 0.5 * nominal <= delay < 1.5 * nominal
            assert ob.next_wakeup() == fam.next_attempt
            assert ob.ready(fam.next_attempt - timedelta(microseconds=1)) == []
            assert ob.next_wakeup() == fam.next_attempt
            assert ob.ready(fam.next_attempt) == [loc()]
            assert ob.next_wakeup() is None  # due now: no later wake-up needed
            delays.append(delay)
            now = fam.next_attempt
        if constant:  # it doubles until the cap
            assert all(b == 2 * a for a, b in itertools.pairwise(delays[:6]))
            assert delays[-1] == delays[-2]
    # success forgets the failures
    (p,) = ob.take(loc())
    ob.done(p, True, now)
    assert ob.families == {}


# ---------------------------------------------------------------------------- focused: rules


def rules() -> PushRules:
    r = PushRules(OFFLINE, INTERVAL)
    r.set_connectors("A", CONNECTORS, T0)
    return r


def seen(r: PushRules, at: datetime) -> list:
    return r.handle(StationSeen("A", at, "Heartbeat"), at)


def report(r: PushRules, cid: int, status: str, at: datetime) -> list:
    seen(r, at)
    return r.handle(StatusChanged("A", cid, status, "NoError", None, at, at), at)


def unknown(sid: str, since: datetime, connectors: tuple[int, ...] = CONNECTORS) -> list:
    return [EvseChange(sid, c, EvseState("UNKNOWN", since), "silence") for c in connectors]


def test_rules_every_status_notification_is_a_change_with_its_own_time() -> None:
    r = rules()
    ms = timedelta(milliseconds=20)
    got = [
        *report(r, 1, "Charging", T0),
        *report(r, 1, "Finishing", T0 + ms),
        *report(r, 1, "Available", T0 + 2 * ms),
    ]
    assert got == [
        EvseChange("A", 1, EvseState("CHARGING", T0)),
        EvseChange("A", 1, EvseState("CHARGING", T0 + ms)),
        EvseChange("A", 1, EvseState("AVAILABLE", T0 + 2 * ms)),
    ]
    assert report(r, 3, "Available", T0) == []  # not an EVSE of the station


def test_rules_a_later_frame_moves_the_silence_deadline() -> None:
    r = rules()
    report(r, 0, "Available", T0)
    assert seen(r, T0) == [LocationTouch("A", T0)]
    assert r.next_wakeup() == T0 + OFFLINE
    seen(r, T0 + 100 * SEC)
    assert r.tick(T0 + OFFLINE) == []  # the old deadline: nothing
    assert r.next_wakeup() == T0 + 100 * SEC + OFFLINE
    assert r.tick(T0 + 100 * SEC + OFFLINE - timedelta(microseconds=1)) == []
    deadline = T0 + 100 * SEC + OFFLINE
    assert r.tick(deadline) == unknown("A", deadline)
    assert r.tick(T0 + 3600 * SEC) == []  # said once
    assert r.next_wakeup() is None


def test_rules_a_silent_station_that_never_reported_stays_planned() -> None:
    r = rules()
    seen(r, T0)
    assert r.tick(T0 + OFFLINE) == []  # nothing to say: its EVSEs are PLANNED


def test_rules_a_station_back_from_silence_is_patched_and_asked_for_what_is_unknown() -> None:
    r = rules()
    report(r, 1, "Available", T0)
    assert r.tick(T0 + OFFLINE) == unknown("A", T0 + OFFLINE, (1,))
    back = T0 + 2 * OFFLINE
    assert seen(r, back) == [
        LocationTouch("A", back),
        Returned("A", back),
        EvseChange("A", 1, EvseState("AVAILABLE", back), "return"),
        EvseChange("A", 2, EvseState("PLANNED", T0), "return"),
        TriggerStatus("A", (2,)),
    ]
    assert r.returned_at("A") == back
    assert seen(r, back + SEC) == [LocationTouch("A", back + SEC)]


def test_rules_connector_zero_reaches_every_evse() -> None:
    r = rules()
    assert report(r, 0, "Faulted", T0) == [
        EvseChange("A", 1, EvseState("OUTOFORDER", T0)),
        EvseChange("A", 2, EvseState("OUTOFORDER", T0)),
    ]
    assert report(r, 2, "Charging", T0 + SEC) == [
        EvseChange("A", 2, EvseState("OUTOFORDER", T0))  # the station's fault still holds
    ]
    assert report(r, 0, "Available", T0 + 2 * SEC) == [
        EvseChange("A", 1, EvseState("AVAILABLE", T0 + 2 * SEC)),
        EvseChange("A", 2, EvseState("CHARGING", T0 + 2 * SEC)),
    ]


def test_rules_definition_and_first_boot() -> None:
    r = rules()
    assert r.handle(StationDefined("A", T0, True), T0) == [LocationFull("A")]
    boot = StationBooted("A", T0, "Accepted", "V", "M", None, None, True)
    assert r.handle(boot, T0) == [Commissioned("A", T0)]
    again = StationBooted("A", T0, "Accepted", "V", "M", None, None, False)
    assert r.handle(again, T0) == []


def test_rules_a_session_is_patched_every_interval_until_it_stops() -> None:
    r = rules()
    start = TransactionStarted(7, "A", 1, "TAG", "Accepted", 0, T0, T0)
    assert r.handle(start, T0) == [SessionPush(7, "A", "start")]
    assert r.next_wakeup() == T0 + INTERVAL
    assert r.tick(T0 + INTERVAL - SEC) == []
    assert r.tick(T0 + INTERVAL) == [SessionPush(7, "A", "progress")]
    assert r.next_wakeup() == T0 + 2 * INTERVAL
    stop = TransactionStopped(7, "A", 1, 0, T0, None, T0)
    assert r.handle(stop, T0 + 400 * SEC) == [SessionPush(7, "A", "final")]
    assert r.tick(T0 + 10 * INTERVAL) == []
    assert r.next_wakeup() is None


def test_rules_catching_up_after_a_stall_does_not_burst() -> None:
    r = rules()
    r.handle(TransactionStarted(7, "A", 1, "TAG", "Accepted", 0, T0, T0), T0)
    late = T0 + 3 * INTERVAL + 10 * SEC  # three PATCHes overdue
    assert r.tick(late) == [SessionPush(7, "A", "progress")]  # one, not three
    assert r.next_wakeup() == late + INTERVAL
    assert r.tick(late + INTERVAL - SEC) == []


def test_rules_load_station_long_silent_is_unknown() -> None:
    r = PushRules(OFFLINE, INTERVAL)
    now = T0 + 3600 * SEC
    r.load_station("A", CONNECTORS, T0, {1: ConnectorState("Available", T0)}, T0, now)
    assert r.stations["A"].unknown
    assert r.evse_state("A", 1, now) == EvseState("UNKNOWN", T0 + OFFLINE)
    assert r.tick(now) == [] and r.next_wakeup() is None  # nothing more to say until it speaks
    assert seen(r, now + SEC) == [
        LocationTouch("A", now + SEC),
        Returned("A", now + SEC),
        EvseChange("A", 1, EvseState("AVAILABLE", now + SEC), "return"),
        EvseChange("A", 2, EvseState("PLANNED", T0), "return"),
        TriggerStatus("A", (2,)),
    ]


def test_rules_load_station_recently_seen_keeps_its_deadline() -> None:
    r = PushRules(OFFLINE, INTERVAL)
    now = T0 + 100 * SEC
    reports = {c: ConnectorState("Available", T0) for c in (0, 1, 2)}
    r.load_station("A", CONNECTORS, T0, reports, T0, now)
    assert not r.stations["A"].unknown
    assert r.next_wakeup() == T0 + OFFLINE
    assert r.tick(T0 + OFFLINE) == unknown("A", T0 + OFFLINE)
    r.load_station("B", CONNECTORS, T0, {}, None, now)  # never seen: no deadline
    assert r.next_wakeup() is None


def test_rules_a_loaded_session_is_patched_every_interval() -> None:
    r = PushRules(OFFLINE, INTERVAL)
    r.load_session(7, "A", T0)
    assert r.tick(T0 + INTERVAL) == [SessionPush(7, "A", "progress")]
    assert r.tick(T0 + 2 * INTERVAL) == [SessionPush(7, "A", "progress")]
    r.handle(TransactionStopped(7, "A", 1, 0, T0, None, T0), T0 + 2 * INTERVAL)
    assert r.tick(T0 + 3 * INTERVAL) == []


def test_outbox_ready_names_at_most_the_free_slots_of_each_peer_oldest_first() -> None:
    """After a reconnect storm thousands of families are due; ready() must hand out only
    what the per-peer limit lets start, in the order they became due, without walking the
    whole backlog each time."""
    ob = Outbox(rng=lambda: 0.5)
    for i in range(1000):
        mark(ob, loc(HUB, f"S{i:04d}"), (1,), T0 + i * SEC / 1000)
    mark(ob, loc(2, "OTHER"), (1,), T0)
    free = {HUB: 3, 2: 0}
    first = ob.ready(T0 + SEC, lambda peer: free[peer])
    assert first == [loc(HUB, "S0000"), loc(HUB, "S0001"), loc(HUB, "S0002")]
    pushes = [p for k in first for p in ob.take(k)]
    free = {HUB: 3, 2: 1}
    second = ob.ready(T0 + SEC, lambda peer: free[peer])
    assert second == [loc(HUB, "S0003"), loc(HUB, "S0004"), loc(HUB, "S0005"), loc(2, "OTHER")]
    for p in pushes:
        ob.done(p, True, T0 + SEC)
    assert loc(HUB, "S0000") not in ob.families  # acknowledged and clean: forgotten
    assert len(ob.ready(T0 + SEC)) == 998  # without a limit, every due family


# ---------------------------------------------------------------------------- focused: resync


D = {1: ("AVAILABLE", T0 + SEC), 2: ("AVAILABLE", T0 + SEC)}


def test_resync_replays_every_change_since_what_the_peer_acknowledged() -> None:
    """After a restart (or missed events): the StatusNotifications the peer has not had,
    from csms's log, in order; repeats merged; the current status only where it differs."""
    log = [
        (1, ConnectorState("Available", T0 + SEC)),  # acknowledged
        (1, ConnectorState("Charging", T0 + 10 * SEC)),
        (1, ConnectorState("Finishing", T0 + 20 * SEC)),
        (1, ConnectorState("Available", T0 + 20.05 * SEC)),
        (2, ConnectorState("Faulted", T0 + 30 * SEC)),
    ]
    current = {
        1: EvseState("AVAILABLE", T0 + 20.05 * SEC),
        2: EvseState("OUTOFORDER", T0 + 30 * SEC),
    }
    plan = plan_resync(CONNECTORS, T0, T0 + 30 * SEC, T0 + SEC, D, current, log, OFFLINE)
    assert plan.changes == {
        1: [EvseState("CHARGING", T0 + 20 * SEC), EvseState("AVAILABLE", T0 + 20.05 * SEC)],
        2: [EvseState("OUTOFORDER", T0 + 30 * SEC)],
    }
    assert not plan.put_first and not plan.put_after and plan.touch
    # silent since: the changes, then UNKNOWN
    current[1] = EvseState("UNKNOWN", T0 + 30 * SEC + OFFLINE)
    plan = plan_resync(CONNECTORS, T0, T0 + 30 * SEC, T0 + SEC, D, current, log, OFFLINE)
    assert [s.status for s in plan.changes[1]] == ["CHARGING", "AVAILABLE", "UNKNOWN"]


def test_resync_without_a_copy_is_a_put_and_unchanged_is_nothing() -> None:
    current = {c: EvseState("AVAILABLE", T0 + SEC) for c in CONNECTORS}
    plan = plan_resync(CONNECTORS, T0, T0 + SEC, None, D, current, [], OFFLINE)
    assert plan == Resync(put_first=True)
    plan = plan_resync(CONNECTORS, T0, T0 + SEC, T0 + SEC, D, current, [], OFFLINE)
    assert plan.pushes == 0
    plan = plan_resync(CONNECTORS, T0 + 5 * SEC, T0 + 5 * SEC, T0 + SEC, D, current, [], OFFLINE)
    assert plan.put_after and not plan.touch  # redefined since
