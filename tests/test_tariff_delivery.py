"""The pure core of the tariffs push (ocpi_bridge.tariff_delivery): what each peer is owed,
and when a push may start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ocpi_bridge.peers import PeerPolicy
from ocpi_bridge.tariff_delivery import (
    DELETE,
    PUT,
    UNCONFIRMED,
    Owed,
    TariffFacts,
    TariffPeer,
    TariffQueue,
    gets_pushes,
    owed,
    tariff_state,
    visible,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STD = TariffFacts("STD", "2026-12-01T10:00:00Z", "aaaa")
A_STD = TariffFacts("A-STD", "2026-12-01T10:00:00Z", "bbbb")
B_STD = TariffFacts("B-STD", "2026-12-01T10:00:00Z", "cccc")
TARIFFS = [STD, A_STD, B_STD]


def peer(
    pid: int, tariffs: dict[str, str] | None = None, pushed: bool = True, version: str = "2.2.1"
) -> TariffPeer:
    return TariffPeer(pid, PeerPolicy(tariffs=tariffs or {}), version, pushed)


def acked(
    pid: int, *tariffs: TariffFacts, version: str = "2.2.1"
) -> dict[tuple[int, str], tuple[str, str]]:
    return {(pid, t.id.upper()): (t.id, tariff_state(t, version)) for t in tariffs}


def got(result: list[Owed]) -> list[tuple[int, str, str]]:
    return [(o.peer_id, o.method, o.tariff_id) for o in result]


# ---------------------------------------------------------------------------- who gets pushes


def test_who_gets_pushes() -> None:
    policy = PeerPolicy()
    assert gets_pushes(policy, True, "https://emsp.example/tariffs/")
    assert not gets_pushes(policy, False, "https://emsp.example/tariffs/")  # suspended
    assert not gets_pushes(policy, True, None)  # no tariffs Receiver
    no = PeerPolicy(receives=frozenset({"locations", "sessions", "cdrs"}))
    assert not gets_pushes(no, True, "https://emsp.example/tariffs/")
    # MOBI.E's profile: tariffs are not pushed to it by default (it pulls them); the
    # operator may add them (its phase 2)
    mobie = PeerPolicy.default("HUB", mobie_mode=True)
    assert mobie.mobie and not gets_pushes(mobie, True, "https://mobie.example/tariffs/")
    assert gets_pushes(PeerPolicy.make("HUB", {"receives": ["tariffs"]}, mobie), True, "u")


def test_facts_of_an_object_change_with_any_field() -> None:
    obj = {"id": "T1", "currency": "EUR", "last_updated": "2026-12-01T10:00:00Z", "elements": []}
    facts = TariffFacts.of(obj)
    assert (facts.id, facts.last_updated) == ("T1", "2026-12-01T10:00:00Z")
    assert TariffFacts.of(dict(reversed(list(obj.items())))) == facts  # key order: same
    assert TariffFacts.of({**obj, "currency": "USD"}).digest != facts.digest
    assert tariff_state(facts, "2.2.1") != tariff_state(facts, "2.1.1")
    assert tariff_state(facts, "2.2.1").startswith("2026-12-01T10:00:00Z|")


# ---------------------------------------------------------------------------- owed


def test_a_new_peer_is_owed_every_public_tariff_and_a_peer_not_pushed_nothing() -> None:
    peers = [peer(1), peer(2, pushed=False)]
    assert got(owed(peers, TARIFFS, {})) == [(1, PUT, "STD"), (1, PUT, "A-STD"), (1, PUT, "B-STD")]


def test_what_was_acknowledged_as_it_is_is_not_owed_again() -> None:
    assert owed([peer(1)], TARIFFS, acked(1, *TARIFFS)) == []
    # acknowledged under another case: the same tariff
    acks = {(1, "STD"): ("std", tariff_state(STD, "2.2.1"))}
    assert got(owed([peer(1)], [STD], acks)) == []


@pytest.mark.parametrize(
    "changed",
    [
        TariffFacts("STD", "2026-12-01T11:00:00Z", "aaaa"),  # a later change
        TariffFacts("STD", "2026-12-01T10:00:00Z", "ffff"),  # a change within the second
    ],
)
def test_a_changed_tariff_is_put_again(changed: TariffFacts) -> None:
    assert got(owed([peer(1)], [changed, A_STD], acked(1, STD, A_STD))) == [(1, PUT, "STD")]


def test_a_peer_on_another_version_is_pushed_again() -> None:
    acks = acked(1, STD, version="2.2.1")
    assert got(owed([peer(1, version="2.1.1")], [STD], acks)) == [(1, PUT, "STD")]


def test_a_deleted_tariff_is_deleted_where_it_was_acknowledged_or_maybe_held() -> None:
    acks = {**acked(1, STD, A_STD), (2, "A-STD"): ("A-STD", UNCONFIRMED)}
    result = owed([peer(1), peer(2)], [STD], acks)
    assert got(result) == [(1, DELETE, "A-STD"), (2, PUT, "STD"), (2, DELETE, "A-STD")]
    # an unconfirmed PUT of a tariff that still exists: PUT again
    assert got(owed([peer(2)], [A_STD], {(2, "A-STD"): ("A-STD", UNCONFIRMED)})) == [
        (2, PUT, "A-STD")
    ]


def test_replacements_are_private_to_their_peers() -> None:
    peers = [peer(1, {"STD": "A-STD"}), peer(2, {"STD": "B-STD"}), peer(3)]
    result = got(owed(peers, TARIFFS, {}))
    assert result == [
        (1, PUT, "STD"),
        (1, PUT, "A-STD"),
        (2, PUT, "STD"),
        (2, PUT, "B-STD"),
        (3, PUT, "STD"),
    ]


def test_a_replacement_of_a_peer_not_pushed_is_still_private() -> None:
    peers = [peer(1, {"STD": "A-STD"}, pushed=False), peer(3)]
    assert got(owed(peers, TARIFFS, {})) == [(3, PUT, "STD"), (3, PUT, "B-STD")]


def test_a_tariff_that_became_private_to_another_is_deleted_and_one_public_again_is_put() -> None:
    # before: 1 had A-STD as its price; 2 saw STD and B-STD. Now 2's price is A-STD.
    acks = {**acked(1, STD, A_STD), **acked(2, STD, B_STD)}
    peers = [peer(1), peer(2, {"STD": "A-STD"})]
    assert got(owed(peers, TARIFFS, acks)) == [
        (1, PUT, "B-STD"),
        (1, DELETE, "A-STD"),
        (2, PUT, "A-STD"),
    ]


def test_visible_is_what_the_pull_answers() -> None:
    policies = [PeerPolicy(tariffs={"STD": "A-STD"}), PeerPolicy(tariffs={"std": "b-std"})]
    ids = [t.id for t in TARIFFS]
    assert visible(policies[0], ids, policies) == ["STD", "A-STD"]
    assert visible(policies[1], ids, policies) == ["STD", "B-STD"]
    assert visible(PeerPolicy(), ids, policies) == ["STD"]


# ---------------------------------------------------------------------------- the queue


def queue(**kw: object) -> TariffQueue:
    return TariffQueue(rng=lambda: 0.5, **kw)  # type: ignore[arg-type]


def owing(*items: tuple[int, str, str]) -> list[Owed]:
    return [Owed(*i) for i in items]


def test_at_most_a_few_in_flight_per_peer_and_one_per_tariff() -> None:
    q = queue(per_peer=2)
    q.update(owing(*((1, PUT, f"T{i}") for i in range(5)), (2, PUT, "T0")), T0)
    started = q.ready(T0)
    assert [(j.peer_id, j.tariff_id) for j in started] == [(1, "T0"), (1, "T1"), (2, "T0")]
    assert q.ready(T0) == []  # peer 1 full, peer 2's one in flight
    q.done(started[0], True, T0)
    assert [j.tariff_id for j in q.ready(T0)] == ["T2"]
    # a change of T1 while its PUT is in flight: never a second PUT of it at once
    later = owing(*((1, PUT, f"T{i}") for i in range(1, 5)))
    q.update(later, T0)
    q.done(started[1], True, T0)
    q.update(later, T0)  # (the shell's, after each push: the old acknowledgement is owed)
    assert [j.tariff_id for j in q.ready(T0)] == ["T1"]


def test_a_failing_peer_backs_off_alone_and_is_retried() -> None:
    q = queue(per_peer=2, backoff_max=timedelta(seconds=8))
    q.update(owing((1, PUT, "T1"), (1, PUT, "T2"), (2, PUT, "T1")), T0)
    jobs = {(j.peer_id, j.tariff_id): j for j in q.ready(T0)}
    q.done(jobs[(1, "T1")], False, T0, "HTTP 500")
    q.done(jobs[(2, "T1")], True, T0)
    q.update(owing((1, PUT, "T1"), (1, PUT, "T2"), (2, PUT, "T3")), T0)
    # peer 2 goes on at once; peer 1 waits for its backoff (1 s at the first failure)
    [t3] = q.ready(T0)
    assert (t3.peer_id, t3.tariff_id) == (2, "T3")
    q.done(t3, True, T0)
    assert q.next_wakeup() == T0 + timedelta(seconds=1)
    assert q.failing_since(1) == T0
    # T2, in flight when T1 failed, fails too: the backoff grows, not before
    q.done(jobs[(1, "T2")], False, T0, "timeout")
    assert q.next_wakeup() == T0 + timedelta(seconds=2)
    assert q.ready(T0 + timedelta(seconds=1)) == []
    later = T0 + timedelta(seconds=2)
    retried = q.ready(later)
    assert [j.tariff_id for j in retried] == ["T1", "T2"]
    assert [j.last_error for j in retried] == ["HTTP 500", "timeout"]
    for j in retried:
        q.done(j, False, later, "down")
    waits = []
    for _ in range(6):  # 3rd and 4th failures: 4 s, then 8 s; then capped at backoff_max
        at = q.next_wakeup()
        assert at is not None
        waits.append((at - later).total_seconds())
        later = at
        for j in q.ready(later):
            q.done(j, False, later, "down")
    assert waits == [8.0] * 6  # (the later of the two failures' times is kept)
    # one success ends the backoff
    [first, second] = q.ready(later + timedelta(seconds=8))
    q.done(first, True, later)
    assert q.failing_since(1) is None
    assert q.next_wakeup() is None  # (second is in flight)
    q.done(second, True, later)
    assert q.pending() == []


def test_backoff_is_jittered_within_half_to_one_and_a_half() -> None:
    for r, expected in ((0.0, 0.5), (0.999, 1.499)):
        q = TariffQueue(rng=lambda r=r: r)
        q.update(owing((1, PUT, "T1")), T0)
        [job] = q.ready(T0)
        q.done(job, False, T0)
        at = q.next_wakeup()
        assert at is not None
        assert (at - T0).total_seconds() == pytest.approx(expected)


def test_what_is_no_longer_owed_is_dropped_and_a_new_method_starts_afresh() -> None:
    q = queue()
    q.update(owing((1, PUT, "T1"), (1, PUT, "T2")), T0)
    [j1, j2] = q.ready(T0)
    q.done(j1, False, T0, "down")
    # T1 deleted meanwhile: now a DELETE, tried with a fresh count; T2 no longer owed but
    # in flight: it stays until it ends
    q.update(owing((1, DELETE, "T1")), T0 + timedelta(seconds=5))
    pending = {j.tariff_id: j for j in q.pending()}
    assert set(pending) == {"T1", "T2"}
    assert (pending["T1"].method, pending["T1"].attempts) == (DELETE, 0)
    q.done(j2, True, T0)
    q.update(owing((1, DELETE, "T1")), T0 + timedelta(seconds=5))
    assert [j.tariff_id for j in q.pending()] == ["T1"]
    q.update([], T0 + timedelta(seconds=5))
    assert q.pending() == []
    assert q.next_wakeup() is None
