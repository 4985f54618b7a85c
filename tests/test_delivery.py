"""The delivery policy (ocpi_bridge/delivery.py), pure: facts in, marks and pushes out; no
sockets, no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ocpi_bridge import delivery
from ocpi_bridge.delivery import (
    Ack,
    Acks,
    InFlight,
    MarkCdr,
    MarkEvse,
    MarkLocation,
    MarkSession,
    MarkTouch,
    Recipient,
    SessionFacts,
    session_state,
)
from ocpi_bridge.locations import ConnectorState, EvseState
from ocpi_bridge.outbox import FamilyKey, Outbox, Push
from ocpi_bridge.rules import (
    EvseChange,
    LocationFull,
    LocationTouch,
    Returned,
    SessionPush,
    TriggerStatus,
)
from ocpi_bridge.transport import ocpi_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)
OFFLINE = timedelta(seconds=300)
ALL = frozenset(("locations", "sessions", "cdrs"))
HUB = Recipient(1, ALL, is_hub=True)
EDP = Recipient(2, ALL, parties=frozenset({("PT", "EDP")}))
GLP = Recipient(3, ALL, parties=frozenset({("PT", "GLP")}))
NO_LOCATIONS = Recipient(4, frozenset(("sessions", "cdrs")), is_hub=True)


def at(seconds: int) -> datetime:
    return T0 + seconds * SEC


def text(seconds: int) -> str:
    return ocpi_time(at(seconds))


# ---------------------------------------------------------------------------- who may see


def test_a_hub_sees_every_party_an_emsp_only_its_own() -> None:
    assert HUB.may_see("PT/EDP") and HUB.may_see("ES/XYZ") and HUB.may_see(None)
    assert EDP.may_see("PT/EDP")
    assert not EDP.may_see("PT/GLP")
    assert not EDP.may_see(None)  # a session of an unknown token: the hub's only


# ---------------------------------------------------------------------------- fan-out


def test_a_location_effect_fans_out_to_every_peer_receiving_locations() -> None:
    acks = Acks({(EDP.id, "location", "CS1"): Ack(text(0))})
    peers = [HUB, EDP, NO_LOCATIONS]
    marks = delivery.fan_out(LocationFull("CS1"), peers, acks)
    # the hub has no copy: the PUT goes first; the eMSP has one; the third takes no Locations
    assert marks == [
        MarkLocation(FamilyKey(HUB.id, "location", "CS1"), first=True),
        MarkLocation(FamilyKey(EDP.id, "location", "CS1"), first=False),
    ]
    state = EvseState("AVAILABLE", at(5))
    change = EvseChange("CS1", 2, state)
    assert delivery.fan_out(change, peers, acks) == [
        MarkEvse(FamilyKey(HUB.id, "location", "CS1"), 2, state),
        MarkEvse(FamilyKey(EDP.id, "location", "CS1"), 2, state),
    ]
    assert delivery.fan_out(LocationTouch("CS1", at(6)), peers, acks) == [
        MarkTouch(FamilyKey(HUB.id, "location", "CS1"), at(6)),
        MarkTouch(FamilyKey(EDP.id, "location", "CS1"), at(6)),
    ]


def test_effects_that_are_not_pushes_make_no_mark() -> None:
    for effect in (Returned("CS1", at(0)), TriggerStatus("CS1", None)):
        assert delivery.fan_out(effect, [HUB, EDP], Acks()) == []


def test_a_session_goes_only_to_the_peers_that_may_see_it() -> None:
    start = SessionPush(7, "CS1", "start")
    marks = delivery.fan_out(start, [HUB, EDP, GLP], Acks(), owner="PT/EDP")
    assert marks == [
        MarkSession(FamilyKey(HUB.id, "session", "7"), "start"),
        MarkSession(FamilyKey(EDP.id, "session", "7"), "start"),
    ]
    # a token nobody granted: the hub's only
    marks = delivery.fan_out(start, [HUB, EDP, GLP], Acks(), owner=None)
    assert [m.key.peer_id for m in marks] == [HUB.id]


# ---------------------------------------------------------------------------- the CDR


def test_a_cdr_is_made_only_at_the_final_session() -> None:
    peers = [HUB, EDP]
    for what in ("start", "progress"):
        push = SessionPush(7, "CS1", what)
        assert not delivery.makes_cdr(push)
        assert delivery.cdr_marks(push, peers, Acks(), "PT/EDP", "7") == []
    assert not delivery.makes_cdr(LocationFull("CS1"))
    final = SessionPush(7, "CS1", "final")
    assert delivery.makes_cdr(final)
    assert delivery.cdr_marks(final, [HUB, EDP, GLP], Acks(), "PT/EDP", "7") == [
        MarkCdr(FamilyKey(HUB.id, "session", "7")),
        MarkCdr(FamilyKey(EDP.id, "session", "7")),
    ]


def test_a_cdr_a_peer_acknowledged_is_not_marked_again() -> None:
    acks = Acks({(HUB.id, "cdr", "7"): Ack("posted")})
    final = SessionPush(7, "CS1", "final")
    marks = delivery.cdr_marks(final, [HUB, EDP], acks, "PT/EDP", "7")
    assert marks == [MarkCdr(FamilyKey(EDP.id, "session", "7"))]


def test_the_cdr_leaves_only_after_the_final_session_is_through() -> None:
    outbox, now = Outbox(), at(0)
    final = SessionPush(7, "CS1", "final")
    delivery.apply(outbox, delivery.fan_out(final, [HUB], Acks(), "PT/EDP"), now)
    delivery.apply(outbox, delivery.cdr_marks(final, [HUB], Acks(), "PT/EDP", "7"), now)
    in_flight = InFlight(8)
    first = delivery.dispatch(outbox, in_flight, now).pushes
    assert [p.kind for p in first] == ["session_put"]
    assert delivery.dispatch(outbox, in_flight, now).pushes == []  # the CDR waits
    outbox.done(first[0], True, now + SEC)
    in_flight.ended(HUB.id)
    assert [p.kind for p in delivery.dispatch(outbox, in_flight, now + SEC).pushes] == ["cdr_post"]


# ---------------------------------------------------------------------------- dispatching


def test_dispatch_keeps_each_peer_within_its_limit_of_pushes_in_flight() -> None:
    outbox, now = Outbox(), at(0)
    for tx in (1, 2, 3):
        delivery.apply(outbox, [MarkSession(FamilyKey(HUB.id, "session", str(tx)), "start")], now)
    delivery.apply(outbox, [MarkSession(FamilyKey(EDP.id, "session", "9"), "start")], now)
    in_flight = InFlight(2)
    started = delivery.dispatch(outbox, in_flight, now)
    assert sorted((p.key.peer_id, p.key.object_id) for p in started.pushes) == [
        (HUB.id, "1"),
        (HUB.id, "2"),
        (EDP.id, "9"),
    ]
    assert in_flight.room(HUB.id) == 0 and in_flight.room(EDP.id) == 1
    assert delivery.dispatch(outbox, in_flight, now).pushes == []
    outbox.done(started.pushes[0], True, now)
    in_flight.ended(HUB.id)
    assert [p.key.object_id for p in delivery.dispatch(outbox, in_flight, now).pushes] == ["3"]


# ---------------------------------------------------------------------------- what a push carries


def test_a_stale_evse_change_is_not_sent() -> None:
    acks = Acks({(HUB.id, "evse", "CS1/1"): Ack(f"CHARGING|{text(60)}")})
    key = FamilyKey(HUB.id, "location", "CS1")
    older = Push(key, "evse_patch", 1, EvseState("AVAILABLE", at(30)))
    assert delivery.evse_patch_send(acks, older) is None
    # the same second is not older (OCPI times are to the second)
    same = Push(key, "evse_patch", 1, EvseState("AVAILABLE", at(60) + timedelta(milliseconds=400)))
    send = delivery.evse_patch_send(acks, same)
    assert send is not None
    assert send.body == {"status": "AVAILABLE", "last_updated": text(60)}
    assert [(k, o, a.state) for k, o, a in send.acks] == [
        ("evse", "CS1/1", f"AVAILABLE|{text(60)}")
    ]
    # another peer, which has nothing of that EVSE, gets it
    other = Push(FamilyKey(EDP.id, "location", "CS1"), "evse_patch", 1, older.state)
    assert delivery.evse_patch_send(acks, other) is not None


def test_a_stale_location_touch_is_not_sent_and_a_cdr_is_posted_once() -> None:
    acks = Acks({(HUB.id, "location", "CS1"): Ack(text(100)), (HUB.id, "cdr", "7"): Ack("posted")})
    assert delivery.location_touch_send(acks, HUB.id, "CS1", text(99)) is None
    send = delivery.location_touch_send(acks, HUB.id, "CS1", text(101))
    assert send is not None and send.body == {"last_updated": text(101)}
    assert delivery.cdr_post_send(acks, HUB.id, "7", {"id": "7"}) is None
    posted = delivery.cdr_post_send(acks, EDP.id, "7", {"id": "7"})
    assert posted is not None and posted.acks[0][:2] == ("cdr", "7")


def test_a_location_older_than_the_peers_copy_goes_with_the_peers_time() -> None:
    acks = Acks({(HUB.id, "location", "CS1"): Ack(text(100))})
    location = {
        "id": "LOC1",
        "last_updated": text(90),
        "evses": [{"status": "AVAILABLE", "last_updated": text(80)}],
    }
    send = delivery.location_put_send(acks, HUB.id, "CS1", location, (1,))
    assert send.raised_to == text(100)
    assert send.body["last_updated"] == text(100)
    assert [(k, o, a.state) for k, o, a in send.acks] == [
        ("location", "CS1", text(100)),
        ("evse", "CS1/1", f"AVAILABLE|{text(80)}"),
    ]
    assert delivery.location_put_send(Acks(), HUB.id, "CS1", location, (1,)).raised_to is None


def test_a_session_patch_carries_only_the_periods_the_peer_has_not_had() -> None:
    session = {
        "id": "7",
        "status": "ACTIVE",
        "last_updated": text(600),
        "kwh": 3.5,
        "charging_periods": [{"n": 1}, {"n": 2}, {"n": 3}],
    }
    put = delivery.session_put_send(session, {"whole": True})
    assert put.body == {"whole": True} and put.acks[0][2].periods_sent == 3
    acks = Acks({(HUB.id, "session", "7"): Ack(f"ACTIVE|{text(300)}", periods_sent=2)})
    patch = delivery.session_patch_send(acks, HUB.id, session)
    assert patch.body == {"kwh": 3.5, "last_updated": text(600), "charging_periods": [{"n": 3}]}
    assert patch.acks[0][2].periods_sent == 3
    assert patch.acks[0][2].state == f"ACTIVE|{text(600)}"


# ---------------------------------------------------------------------------- reconciling


def test_reconcile_pushes_the_sessions_that_differ_from_what_each_peer_acknowledged() -> None:
    done = session_state(True, True, at(900))
    assert done == f"COMPLETED|{text(900)}"
    assert session_state(True, False, at(900)).startswith("INVALID|")
    assert session_state(False, True, None) == "ACTIVE|"
    sessions = [
        SessionFacts(1, "PT/EDP", done, stopped=True),  # the hub has it
        SessionFacts(2, "PT/EDP", session_state(False, True, at(700)), stopped=False),
        SessionFacts(3, "PT/GLP", done, stopped=True),
    ]
    acks = Acks(
        {
            (HUB.id, "session", "1"): Ack(done),
            (HUB.id, "session", "2"): Ack(f"ACTIVE|{text(400)}"),  # older
        }
    )
    assert delivery.reconcile_sessions(HUB, acks, sessions) == [
        MarkSession(FamilyKey(HUB.id, "session", "2"), "start"),
        MarkSession(FamilyKey(HUB.id, "session", "3"), "final"),
    ]
    assert delivery.reconcile_sessions(EDP, acks, sessions) == [
        MarkSession(FamilyKey(EDP.id, "session", "1"), "final"),
        MarkSession(FamilyKey(EDP.id, "session", "2"), "start"),
    ]
    cdrs = [("1", "PT/EDP"), ("3", "PT/GLP")]
    acks.record(EDP.id, [("cdr", "1", Ack("posted"))])
    assert delivery.reconcile_cdrs(EDP, acks, cdrs) == []
    assert delivery.reconcile_cdrs(HUB, acks, cdrs) == [
        MarkCdr(FamilyKey(HUB.id, "session", "1")),
        MarkCdr(FamilyKey(HUB.id, "session", "3")),
    ]


def test_reconcile_a_location_against_what_the_peer_acknowledged() -> None:
    connectors = (1, 2)
    defined = at(0)
    current = {1: EvseState("AVAILABLE", at(10)), 2: EvseState("CHARGING", at(50))}

    def resync(acks: Acks, log: list[tuple[int, ConnectorState]]) -> delivery.MarkResync:
        return delivery.resync_location(
            acks, HUB.id, "CS1", connectors, defined, at(50), current, log, OFFLINE
        )

    # no copy at all: the whole Location, first; no log needed
    assert delivery.log_needed_after(Acks(), HUB.id, "CS1", current) is None
    mark = resync(Acks(), [])
    assert mark.key == FamilyKey(HUB.id, "location", "CS1")
    assert mark.plan.put_first and mark.plan.pushes == 1
    # the peer has everything as it is: nothing
    same = Acks(
        {
            (HUB.id, "location", "CS1"): Ack(text(50)),
            (HUB.id, "evse", "CS1/1"): Ack(f"AVAILABLE|{text(10)}"),
            (HUB.id, "evse", "CS1/2"): Ack(f"CHARGING|{text(50)}"),
        }
    )
    assert delivery.log_needed_after(same, HUB.id, "CS1", current) is None
    assert resync(same, []).plan.pushes == 0
    # EVSE 2 changed twice since what the peer has: both changes, in order, from the log
    behind = Acks(
        {
            (HUB.id, "location", "CS1"): Ack(text(10)),
            (HUB.id, "evse", "CS1/1"): Ack(f"AVAILABLE|{text(10)}"),
            (HUB.id, "evse", "CS1/2"): Ack(f"AVAILABLE|{text(10)}"),
        }
    )
    assert delivery.log_needed_after(behind, HUB.id, "CS1", current) == at(10)
    log = [
        (1, ConnectorState("Available", at(10))),
        (2, ConnectorState("Available", at(10))),
        (2, ConnectorState("Faulted", at(30))),
        (2, ConnectorState("Charging", at(50))),
    ]
    plan = resync(behind, log).plan
    assert not plan.put_first and not plan.put_after
    assert plan.changes == {2: [EvseState("OUTOFORDER", at(30)), EvseState("CHARGING", at(50))]}
    assert plan.touch  # and the Location's newer last_updated


def test_an_unreadable_acknowledged_evse_counts_as_none() -> None:
    acks = Acks({(HUB.id, "evse", "CS1/1"): Ack("AVAILABLE|yesterday")})
    assert acks.evse(HUB.id, "CS1", 1) is None
    assert acks.evse(HUB.id, "CS1", 2) is None
    acks.record(HUB.id, [("evse", "CS1/1", Ack(f"FAULTED|{text(5)}"))])
    assert acks.evse(HUB.id, "CS1", 1) == ("FAULTED", at(5))


def test_a_family_that_starts_two_pushes_can_fill_the_peers_limit() -> None:
    """An EVSE PATCH and a touch of one Location start together: the next family named
    ready is held back by the limit, not started beyond it."""
    outbox, now = Outbox(), at(0)
    a, b = FamilyKey(HUB.id, "location", "CS1"), FamilyKey(HUB.id, "location", "CS2")
    delivery.apply(outbox, [MarkEvse(a, 1, EvseState("AVAILABLE", now)), MarkTouch(a)], now)
    delivery.apply(outbox, [MarkTouch(b)], now)
    in_flight = InFlight(2)
    started = delivery.dispatch(outbox, in_flight, now)
    assert [p.kind for p in started.pushes] == ["evse_patch", "location_touch"]
    assert started.held == 1
    assert in_flight.room(HUB.id) == 0
