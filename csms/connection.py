"""One connected station: its receive loop and the requests we send it.

Each websocket has exactly one :class:`StationConnection`, the single owner of that socket:
incoming requests are handled one after another (a charge point waits for each answer), and
answers to our own requests are matched to their callers by unique id. Nothing a frame or a
handler does can end the loop; only the socket closing does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import ocppj
from .events import StationSeen
from .redact import redact_payload

if TYPE_CHECKING:
    from .clock import Clock
    from .metrics import Metrics
    from .store import Store
    from .traffic import TrafficMonitor

log = structlog.get_logger("csms.connection")


class ConnectionServices(Protocol):
    """What a connection uses of the shared services (csms.handlers.Services)."""

    clock: Clock
    store: Store
    metrics: Metrics
    traffic: TrafficMonitor


class RequestHandler(Protocol):
    """Who answers a station's requests (csms.handlers.OcppHandlers). A protocol, so that
    the handlers may know connections without connections knowing the handlers."""

    @property
    def services(self) -> ConnectionServices: ...

    async def handle(
        self,
        conn: StationConnection,
        action: str,
        payload: dict[str, Any],
        received_at: datetime,
    ) -> dict[str, Any]: ...


# never refused for what they contain (README): stored, flagged and answered
TRANSACTION_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})


class StationCallError(Exception):
    """The station answered our request with a CallError."""

    def __init__(self, code: str, description: str, details: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class ConnectionGone(Exception):
    """The connection closed before the station answered."""


class StationConnection:
    def __init__(
        self,
        station_id: str,
        ws: ServerConnection,
        handlers: RequestHandler,
        remote_address: str | None,
    ) -> None:
        self.station_id = station_id
        self.ws = ws
        self.handlers = handlers
        self.remote_address = remote_address
        self.services = handlers.services
        self.connected_at = self.services.clock.now()
        # when it opened, as every machine of a cluster compares (wall clock), and whether a
        # newer connection of the station on another node replaced it (csms.members)
        self.opened_wall = time.time()
        self.replaced_elsewhere = False
        # how it connected (csms.server's handshake): over TLS (csms's own or a trusted
        # proxy's), the verified client certificate (as ssl's getpeercert() gives it) or
        # None, and the security profile it was let in at
        self.tls = False
        self.client_certificate: dict[str, Any] | None = None
        self.security_profile = 1
        self.booted = False
        self._pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._call_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._after_answer: list[Callable[[], None]] = []
        self._closed = False
        # the request being handled, for its notes (out_of_range, invalid_unicode)
        self.frame: ocppj.Call | None = None
        self.traffic = self.services.traffic  # what the web interface shows of the station

    # ------------------------------------------------------------------ receive loop

    async def serve(self) -> None:
        """Handle frames until the socket closes. Nothing a frame does ends the loop."""
        self.traffic.connected(self.station_id)
        try:
            async for message in self.ws:
                try:
                    await self._receive(message)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug of ours: log it, keep the connection
                    log.exception("frame could not be processed", frame=message)
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            for _, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionGone("connection closed"))
            for task in list(self._tasks):
                task.cancel()

    async def _receive(self, message: str | bytes) -> None:
        received_at = self.services.clock.now()
        self.services.store.stations.touch_seen(self.station_id, received_at)
        try:
            frame = ocppj.parse_frame(message)
        except ocppj.FrameError as e:
            self._observe(received_at, message, None, "invalid", None)
            await self._answer_invalid(e, message)
            return
        if isinstance(frame, ocppj.Call):
            action = frame.action if frame.action in ocppj.CP_ACTIONS else "other"
            self._observe(received_at, message, frame, action, frame.action)
            await self._handle_call(frame, received_at)
        else:
            kind = "CallResult" if isinstance(frame, ocppj.CallResult) else "CallError"
            self._observe(received_at, message, frame, kind, None)
            self._resolve(frame)

    def _observe(
        self,
        received_at: datetime,
        message: str | bytes,
        frame: ocppj.Frame | None,
        label: str,
        action: str | None,
    ) -> None:
        """What watches the traffic (recent frames, metrics, the seen event): it must never
        keep a frame from being answered."""
        try:
            self.traffic.received(self.station_id, received_at, message, frame)
        except Exception:
            log.exception("traffic monitor failed on a frame", frame=message)
        self.services.metrics.frames_received.labels(label).inc()
        self.services.store.outbox.stage(StationSeen(self.station_id, received_at, action))

    async def _answer_invalid(self, e: ocppj.FrameError, message: str | bytes) -> None:
        if e.unique_id is None:
            log.warning("unanswerable frame ignored", error=e.error.description, frame=message)
            return
        log.warning(
            "malformed call answered with CallError",
            message_id=e.unique_id,
            code=e.error.code,
            error=e.error.description,
            frame=message,
        )
        self.services.metrics.call_errors_sent.labels("invalid", e.error.code).inc()
        await self._send(ocppj.error_frame(e.unique_id, e.error), "CALLERROR", e.unique_id, None)

    async def _handle_call(self, call: ocppj.Call, received_at: datetime) -> None:
        started = time.perf_counter()
        metrics = self.services.metrics
        action_label = call.action if call.action in ocppj.CP_ACTIONS else "other"
        with structlog.contextvars.bound_contextvars(message_id=call.unique_id, action=call.action):
            try:
                ocppj.check_incoming_action(call.action)
                ocppj.check_payload(ocppj.CALL, call.action, call.payload)
                if call.out_of_range or call.invalid_unicode:
                    self._frame_notes(call)
                self.frame = call
                response = await self.handlers.handle(self, call.action, call.payload, received_at)
                try:
                    ocppj.check_payload(ocppj.CALLRESULT, call.action, response)
                except ocppj.OcppError as e:  # our bug, not the station's
                    log.error("our answer is not schema-valid", error=str(e), answer=response)
                    raise ocppj.InternalErr("the central system produced an invalid answer") from e
                frame, kind = ocppj.result_frame(call.unique_id, response), "CALLRESULT"
            except ocppj.OcppError as e:
                log.warning(
                    "request answered with CallError",
                    code=e.code,
                    error=e.description,
                    payload=redact_payload(call.action, call.payload),
                )
                metrics.call_errors_sent.labels(action_label, e.code).inc()
                frame, kind = ocppj.error_frame(call.unique_id, e), "CALLERROR"
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handler failed", payload=redact_payload(call.action, call.payload))
                err = ocppj.InternalErr("the central system could not process this request")
                metrics.call_errors_sent.labels(action_label, err.code).inc()
                frame, kind = ocppj.error_frame(call.unique_id, err), "CALLERROR"
                self._after_answer.clear()
            finally:
                self.frame = None
            await self._send(frame, kind, call.unique_id, call.action)
            metrics.answer_seconds.labels(action_label).observe(time.perf_counter() - started)
        # outside the message's log context: work started here is not part of that message
        hooks, self._after_answer = self._after_answer, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("after-answer hook failed")

    def _frame_notes(self, call: ocppj.Call) -> None:
        """A schema-valid request with what SQLite cannot hold (an integer beyond 64 bits) or
        a lone surrogate in a string. Transaction messages are never refused: the handler
        stores them clamped/repaired and flags them (``self.frame`` carries the notes). A
        StatusNotification whose connectorId is beyond 64 bits names no connector of any
        station: PropertyConstraintViolation."""
        if call.invalid_unicode:
            log.warning(
                "lone surrogates replaced by U+FFFD", fields=list(call.invalid_unicode)[:20]
            )
        if call.out_of_range:
            fields = dict(call.out_of_range[:20])
            if call.action not in TRANSACTION_ACTIONS:
                raise ocppj.PropertyConstraintViolation(
                    "integer beyond the 64 bits this central system stores at " + ", ".join(fields),
                    {"fields": list(fields)},
                )
            log.warning("integers beyond 64 bits stored clamped and flagged", fields=fields)

    async def _send(self, frame: str, kind: str, unique_id: str, action: str | None) -> None:
        """Send our answer (``kind`` CALLRESULT or CALLERROR) to the station's request."""
        try:
            self.traffic.sent(
                self.station_id, self.services.clock.now(), frame, kind, unique_id, action
            )
        except Exception:
            log.exception("traffic monitor failed on our answer")
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            log.info("answer not sent: connection closed")

    def after_answer(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once the answer to the current request has been sent."""
        self._after_answer.append(hook)

    def _resolve(self, frame: ocppj.CallResult | ocppj.CallError) -> None:
        entry = self._pending.get(frame.unique_id)
        if entry is None:
            log.warning(
                "answer to an unknown or expired request ignored", message_id=frame.unique_id
            )
            return
        _, fut = entry
        if fut.done():
            return
        if isinstance(frame, ocppj.CallError):
            fut.set_exception(StationCallError(frame.code, frame.description, frame.details))
        else:
            fut.set_result(frame.payload)

    # ------------------------------------------------------------------ our requests

    async def call(self, action: str, payload: dict[str, Any], timeout: float) -> Any:
        """Send a request and return the station's answer payload.

        Requests go one at a time (OCPP-J allows one outstanding call per direction).
        Raises TimeoutError, StationCallError or ConnectionGone.
        """
        if self._closed:
            raise ConnectionGone("connection closed")
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._call_lock.acquire(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the station was busy with another request for {timeout:g} s"
            ) from None
        try:
            unique_id = str(uuid.uuid4())
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[unique_id] = (action, fut)
            try:
                with structlog.contextvars.bound_contextvars(message_id=unique_id, action=action):
                    log.info("request sent", payload=redact_payload(action, payload))
                    text = ocppj.call_frame(unique_id, action, payload)
                    now = self.services.clock.now()
                    self.traffic.sent(self.station_id, now, text, "CALL", unique_id, action)
                    try:
                        await self.ws.send(text)
                    except ConnectionClosed:
                        raise ConnectionGone("connection closed") from None
                    remaining = max(0.0, deadline - time.monotonic())
                    try:
                        result = await asyncio.wait_for(fut, remaining)
                    except TimeoutError:
                        log.warning("no answer", timeout=timeout)
                        raise TimeoutError(f"no answer within {timeout:g} s") from None
                    except StationCallError as e:
                        log.warning("answered with CallError", code=e.code, error=e.description)
                        raise
                    log.info("answer received", payload=redact_payload(action, result))
            finally:
                self._pending.pop(unique_id, None)
                # the connection may have closed (its end sets ConnectionGone on every
                # pending future) while we were not awaiting this one (sending, or cancelled):
                # take the exception, so that no future is left unretrieved
                if fut.done() and not fut.cancelled():
                    fut.exception()
                else:
                    fut.cancel()
        finally:
            self._call_lock.release()
        try:
            ocppj.check_payload(ocppj.CALLRESULT, action, result)
        except ocppj.OcppError as e:
            log.warning("station answered with an invalid payload", action=action, error=str(e))
        return result

    # ------------------------------------------------------------------ tasks and closing

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run background work tied to this connection (cancelled when it closes)."""
        task = asyncio.create_task(coro, name=f"{self.station_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", task=task.get_name(), exc_info=task.exception())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self.ws.close(code, reason)
        except Exception:  # already gone
            pass

    @property
    def closed(self) -> bool:
        return self._closed
