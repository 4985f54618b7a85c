"""An operator alert when the pushes to a peer keep failing (issue 16, item 10).

Pure rule (:func:`push_outcome`): each push's outcome against the peer's state says when
to raise ``push_failing`` (failing continuously for at least ``alerts.push_failing_minutes``
and ``alerts.push_failing_attempts`` pushes in a row) and ``push_recovered`` (the first
success after it). The shell (:class:`PushAlerts`) keeps the state per peer and raises the
alerts through csms's port (``CsmsPort.raise_alert``), which stores them for csms's alert
worker; the condition is kept there, so an outage is alerted once even across restarts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from csms.ports import CsmsPort

log = structlog.get_logger("ocpi.push_alerts")


@dataclass(frozen=True, slots=True)
class PushHealth:
    """A peer's pushes as the rule sees them: failing since when, how many failures in a
    row, whether it was alerted, and whether an older outage may still be open (after a
    start, until the first success has closed it)."""

    failing_since: datetime | None = None
    failures: int = 0
    alerted: bool = False
    maybe_open: bool = True


def push_outcome(
    state: PushHealth, ok: bool, now: datetime, minutes: float, attempts: int
) -> tuple[PushHealth, str | None]:
    """A push's outcome: the peer's new state and "raise", "recover" or None."""
    if ok:
        recover = state.alerted or state.maybe_open
        return PushHealth(maybe_open=False), ("recover" if recover else None)
    since = state.failing_since or now
    state = replace(state, failing_since=since, failures=state.failures + 1)
    if (
        not state.alerted
        and state.failures >= attempts
        and now - since >= timedelta(minutes=minutes)
    ):
        return replace(state, alerted=True), "raise"
    return state, None


class PushAlerts:
    def __init__(self, csms: CsmsPort) -> None:
        self.csms = csms
        self.state: dict[int, PushHealth] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def observe(self, peer_id: int, ok: bool, now: datetime, error: str | None) -> None:
        """One push's outcome (called by the pusher as each push ends)."""
        try:
            rules = self.csms.settings.alerts
        except RuntimeError:  # (a port without settings: a unit test's)
            return
        old = self.state.get(peer_id, PushHealth())
        new, action = push_outcome(
            old, ok, now, rules.push_failing_minutes, rules.push_failing_attempts
        )
        self.state[peer_id] = new
        if action is None:
            return
        key = f"push_failing:{peer_id}"
        subject = f"peer:{peer_id}"
        if action == "raise":
            details = {
                "peer_id": peer_id,
                "failing_since": new.failing_since.isoformat() if new.failing_since else None,
                "failures": new.failures,
                "last_error": (error or "")[:300],
            }
            call = self.csms.raise_alert("push_failing", subject, details, open_key=key)
        else:
            details = {"peer_id": peer_id}
            call = self.csms.raise_alert("push_recovered", subject, details, close_key=key)
        task = asyncio.create_task(self._raise(call), name="ocpi-push-alert")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _raise(call: Any) -> None:
        try:
            await call
        except Exception:
            log.exception("could not raise a push alert")

    async def stop(self) -> None:
        for task in list(self._tasks):
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, Exception):
                pass
