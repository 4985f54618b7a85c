"""Domain events and the in-process bus.

csms emits these after the state change they describe is committed. The bus is a fan-out to
bounded queues: publishing never blocks the OCPP side. A subscriber that falls so far behind
that its queue is full gets an :class:`Overflow` marker instead of the events it missed, and
must re-read the current state from the store (the OCPI bridge does: it pushes state, not
history). The interface is small so that a real broker can stand behind it later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from .meter import Sample

log = structlog.get_logger("csms.events")


@dataclass(frozen=True, slots=True)
class StationSeen:
    """Any frame arrived from the station (requests, answers, even invalid ones)."""

    station_id: str
    at: datetime
    action: str | None  # the action of a request, None for answers and invalid frames


@dataclass(frozen=True, slots=True)
class StationConnected:
    station_id: str
    at: datetime
    remote_address: str | None


@dataclass(frozen=True, slots=True)
class StationDisconnected:
    station_id: str
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class StationBooted:
    station_id: str
    at: datetime
    status: str  # Accepted, Pending or Rejected as we answered
    vendor: str
    model: str
    serial_number: str | None
    firmware_version: str | None
    first_boot: bool  # the station's first accepted boot ever (commissioning, rule R2)


@dataclass(frozen=True, slots=True)
class StationDefined:
    """The operator created or replaced a station (and its Location) through the API."""

    station_id: str
    at: datetime
    created: bool


@dataclass(frozen=True, slots=True)
class StatusChanged:
    station_id: str
    connector_id: int  # 0 = the whole station
    status: str
    error_code: str
    info: str | None
    timestamp: datetime  # the station's time (corrected)
    at: datetime  # arrival


@dataclass(frozen=True, slots=True)
class TransactionStarted:
    transaction_id: int
    station_id: str
    connector_id: int
    id_tag: str
    id_tag_status: str
    meter_start_wh: int
    start_time: datetime
    at: datetime
    tag_owner: str | None = None  # who owns the token, as its token source said


@dataclass(frozen=True, slots=True)
class MeterSample:
    station_id: str
    connector_id: int
    transaction_id: int | None  # ours, when the sample belongs to a known transaction
    timestamp: datetime
    energy_wh: float | None
    power_w: float | None
    samples: tuple[Sample, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class TransactionStopped:
    transaction_id: int
    station_id: str
    connector_id: int
    meter_stop_wh: int
    stop_time: datetime
    reason: str | None
    at: datetime


Event = (
    StationSeen
    | StationConnected
    | StationDisconnected
    | StationBooted
    | StationDefined
    | StatusChanged
    | TransactionStarted
    | MeterSample
    | TransactionStopped
)


@dataclass(frozen=True, slots=True)
class Overflow:
    """Events were dropped for this subscriber; it must resynchronise from the store."""

    dropped: int


@dataclass(eq=False)
class Subscription:
    name: str
    maxsize: int
    kinds: tuple[type, ...] | None = None  # only these event types (None: all)
    _queue: asyncio.Queue[Event | Overflow] = field(init=False)
    _dropped: int = 0
    _closed: bool = False

    def __post_init__(self) -> None:
        # one slot is kept for the Overflow marker
        self._queue = asyncio.Queue(self.maxsize + 1)

    def _offer(self, event: Event) -> None:
        if self._closed or (self.kinds is not None and not isinstance(event, self.kinds)):
            return
        if self._dropped or self._queue.qsize() >= self.maxsize:
            if self._dropped == 0:
                log.warning("event subscriber lagging, dropping events", subscriber=self.name)
            self._dropped += 1
            return
        self._queue.put_nowait(event)

    async def get(self) -> Event | Overflow:
        if self._dropped and self._queue.empty():
            dropped, self._dropped = self._dropped, 0
            return Overflow(dropped)
        return await self._queue.get()

    def get_nowait(self) -> Event | Overflow | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return Overflow(dropped)
        return None

    async def __aiter__(self) -> AsyncIterator[Event | Overflow]:
        while True:
            yield await self.get()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def subscribe(
        self, name: str, maxsize: int = 10_000, kinds: tuple[type, ...] | None = None
    ) -> Subscription:
        """A new subscriber's queue; ``kinds`` restricts it to those event types (a
        subscriber that needs few kinds is then not woken by every frame)."""
        sub = Subscription(name, maxsize, kinds)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub._closed = True
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def room(self) -> int:
        """How many events every subscriber can still take without dropping any (the
        relay publishes no more than that: what waits in the outbox is not lost)."""
        return min(
            (sub.maxsize - sub._queue.qsize() for sub in self._subscriptions if not sub._dropped),
            default=1 << 30,
        )

    def wanted(self) -> set[str] | None:
        """The names of the event types some subscriber takes (None: every type)."""
        names: set[str] = set()
        for sub in self._subscriptions:
            if sub.kinds is None:
                return None
            names.update(k.__name__ for k in sub.kinds)
        return names

    def publish(self, event: Event) -> None:
        for sub in self._subscriptions:
            sub._offer(event)
