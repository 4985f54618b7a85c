from datetime import UTC, datetime

from csms.events import EventBus, Overflow, StationSeen

T = datetime(2026, 1, 1, tzinfo=UTC)


async def test_fan_out_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe("a"), bus.subscribe("b")
    for i in range(3):
        bus.publish(StationSeen(f"S{i}", T, None))
    for sub in (a, b):
        assert [(await sub.get()).station_id for _ in range(3)] == ["S0", "S1", "S2"]


async def test_a_lagging_subscriber_gets_an_overflow_marker_and_others_are_unaffected() -> None:
    bus = EventBus()
    slow, fast = bus.subscribe("slow", maxsize=2), bus.subscribe("fast", maxsize=100)
    for i in range(5):
        bus.publish(StationSeen(f"S{i}", T, None))
    got = [await slow.get() for _ in range(3)]
    assert [g.station_id for g in got[:2]] == ["S0", "S1"]  # type: ignore[union-attr]
    assert got[2] == Overflow(3)
    assert slow.get_nowait() is None
    assert [(await fast.get()).station_id for _ in range(5)] == [f"S{i}" for i in range(5)]
    bus.publish(StationSeen("after", T, None))
    assert (await slow.get()).station_id == "after"  # type: ignore[union-attr]


async def test_a_subscriber_gets_only_the_kinds_it_asked_for() -> None:
    from csms.events import StationConnected

    bus = EventBus()
    few = bus.subscribe("few", kinds=(StationConnected,))
    bus.publish(StationSeen("S", T, None))
    bus.publish(StationConnected("S", T, None))
    assert isinstance(await few.get(), StationConnected)
    assert few.get_nowait() is None
