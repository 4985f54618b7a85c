"""What the bridge's background services share: tasks that stop with them, and a loop that
sleeps until the next due time or until woken."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from csms.ports import Clock, EventBus, Subscription


class BackgroundService:
    def __init__(self, clock: Clock, bus: EventBus) -> None:
        self.clock = clock
        self.bus = bus
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: list[asyncio.Task[Any]] = []
        self._sub: Subscription | None = None

    @property
    def running(self) -> bool:
        return bool(self._main)

    def wake(self) -> None:
        self._wake.set()

    def _run(self, *loops: tuple[Coroutine[Any, Any, Any], str]) -> None:
        self._main = [asyncio.create_task(coro, name=name) for coro, name in loops]

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Work that runs beside the loops and is cancelled with them."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in [*self._main, *self._tasks]:
            task.cancel()
        for task in [*self._main, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._main = []
        if self._sub is not None:
            self.bus.unsubscribe(self._sub)
            self._sub = None

    async def _sleep(self, until: datetime | None) -> None:
        """Until ``until`` (None: forever) or until woken, whichever comes first."""
        waiters = [asyncio.ensure_future(self._wake.wait())]
        if until is not None:
            waiters.append(asyncio.ensure_future(self.clock.sleep_until(until)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
