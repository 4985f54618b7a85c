"""The command port: the one way to send a request to a station.

Used by the operator API, the post-boot configuration and (later) the OCPI bridge. Every
request goes through the station's current connection (its single owner), with a timeout,
is logged and recorded; the caller gets the station's answer or one clear error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from . import ocppj
from .connection import ConnectionGone, StationCallError, StationConnection
from .handlers import Services
from .redact import redact_payload

log = structlog.get_logger("csms.commands")


class CommandError(Exception):
    http_status = 500
    code = "command_failed"


class UnknownAction(CommandError):
    http_status = 404
    code = "unknown_action"


class InvalidCommand(CommandError):
    http_status = 422
    code = "invalid_payload"


class StationOffline(CommandError):
    http_status = 409
    code = "station_offline"


class CommandTimeout(CommandError):
    http_status = 504
    code = "timeout"


class StationRejected(CommandError):
    """The station answered with a CallError."""

    http_status = 502
    code = "station_call_error"

    def __init__(self, error: StationCallError) -> None:
        super().__init__(f"the station answered with CallError {error.code}: {error.description}")
        self.error = error


class Router(Protocol):
    """Sends a command to the node that holds the station (raises StationOffline when
    none does)."""

    async def send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str = "internal",
        on_answer: Callable[[Any], None] | None = None,
    ) -> Any: ...


class ConnectionRegistry:
    """Station id -> its current connection. A newer connection replaces an older one."""

    def __init__(self) -> None:
        self._by_id: dict[str, StationConnection] = {}

    def register(self, conn: StationConnection) -> StationConnection | None:
        old = self._by_id.get(conn.station_id)
        self._by_id[conn.station_id] = conn
        return old

    def unregister(self, conn: StationConnection) -> bool:
        """Forget ``conn`` unless a newer connection has replaced it; True if it was current."""
        if self._by_id.get(conn.station_id) is conn:
            del self._by_id[conn.station_id]
            return True
        return False

    def get(self, station_id: str) -> StationConnection | None:
        return self._by_id.get(station_id)

    def is_connected(self, station_id: str) -> bool:
        return station_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[StationConnection]:
        return list(self._by_id.values())


class CommandPort:
    def __init__(self, services: Services, registry: ConnectionRegistry) -> None:
        self.services = services
        self.registry = registry
        # on PostgreSQL, the nodes' commands for stations another node holds (csms.members)
        self.router: Router | None = None

    async def send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str = "api",
        on_answer: Callable[[Any], None] | None = None,
        route: bool = True,
    ) -> Any:
        """Send ``action`` to the station and return its answer payload.

        Raises UnknownAction, InvalidCommand, StationOffline, CommandTimeout or
        StationRejected (each a CommandError with the HTTP status the API answers with).
        ``on_answer`` is called with the answer payload as soon as it arrives, before it is
        stored and this returns: a station often sends its next request (a StopTransaction
        after RemoteStopTransaction.conf) at once, and a caller that judges that request
        knows the answer came first.
        """
        if action not in ocppj.CS_ACTIONS:
            raise UnknownAction(
                f"{action!r} is not an OCPP 1.6 request to a charge point; "
                f"one of: {', '.join(sorted(ocppj.CS_ACTIONS))}"
            )
        try:
            ocppj.check_payload(ocppj.CALL, action, payload)
            ocppj.call_frame("check", action, payload)  # NaN or Infinity: not JSON
        except ocppj.OcppError as e:
            raise InvalidCommand(f"invalid {action} payload: {e.description}") from None
        except (ValueError, TypeError) as e:
            raise InvalidCommand(f"invalid {action} payload: {e}") from None
        s = self.services
        timeout = timeout if timeout is not None else s.settings.ocpp.call_timeout
        conn = self.registry.get(station_id)
        if conn is None and route and self.router is not None:
            # held by another node: sent there (and recorded there), when it is anywhere
            with contextlib.suppress(StationOffline):
                return await self.router.send(
                    station_id, action, payload, timeout=timeout, origin=origin, on_answer=on_answer
                )
        # what is kept of the request and its answer has secret values masked (csms.redact)
        command_id = await s.store.commands.started(
            station_id, action, redact_payload(action, payload), origin
        )
        bound = log.bind(station_id=station_id, action=action, command_id=command_id, origin=origin)
        if conn is None:
            await s.store.commands.finished(command_id, "offline", None)
            s.metrics.calls_sent.labels(action, "offline").inc()
            bound.info("command not sent: station offline")
            raise StationOffline(f"station {station_id} is not connected")
        try:
            answer = await conn.call(action, payload, timeout)
        except TimeoutError as e:
            outcome, result, error = "timeout", None, CommandTimeout(str(e))
        except ConnectionGone:
            outcome, result = "offline", None
            error = StationOffline(f"station {station_id} disconnected before answering")
        except StationCallError as e:
            outcome = "call_error"
            result = {"code": e.code, "description": e.description, "details": e.details}
            error = StationRejected(e)
        else:
            # a GetConfiguration answer that holds a secret (the station should not send
            # AuthorizationKey's value at all) is masked for every reader, caller included
            answer = redact_payload(action, answer)
            if on_answer is not None:
                on_answer(answer)
            await s.store.commands.finished(command_id, "ok", answer)
            s.metrics.calls_sent.labels(action, "ok").inc()
            bound.debug("command answered")
            return answer
        await s.store.commands.finished(command_id, outcome, result)
        s.metrics.calls_sent.labels(action, outcome).inc()
        bound.warning("command failed", outcome=outcome, error=str(error))
        raise error
