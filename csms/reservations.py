"""Reservations (issue 16, item 4): ReserveNow and CancelReservation from the operator API,
the web interface and the OCPI bridge (through :class:`csms.ports.CsmsPort`).

csms allocates the reservationId (a row of ``reservations``, see
:mod:`csms.repositories.reservations`), sends ReserveNow, and keeps what the station
answered. A StartTransaction naming the reservation (its ``reservationId``) is never
refused: the reservation becomes ``used`` with the transaction's id (a subscriber to
TransactionStarted links them). A reservation past its expiry is ``expired`` by csms's
clock (no OCPP call: the station drops it by itself and reports Available).

The rules are pure functions (:func:`parse_reserve`, :func:`effective_state`,
:func:`state_after_answer`); :class:`ReservationService` does the I/O and
:class:`ReservationApi` serves ``/api/v1/stations/{id}/reservations`` and
``/api/v1/reservations``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from aiohttp import web

from .api_common import paging, refusal
from .clock import Clock
from .commands import CommandError, StationOffline, StationRejected
from .events import EventBus, Overflow, Subscription, TransactionStarted
from .http import INT64_MAX, ApiError, JsonBodyError, json_response, read_json
from .openapi import (
    INT,
    PAGING,
    STR,
    Param,
    fails,
    nullable,
    obj,
    ok,
    operation,
    page_of,
)
from .repositories.reservations import HELD, STATES, ReservationQuery, ReservationRepository
from .store import Store
from .timeparse import from_db, parse_api_time, to_ocpp
from .usecases import Refused

log = structlog.get_logger("csms.reservations")

# what the port's reservation calls raise when they refuse before any call
ReservationRefused = Refused

# how far ahead a reservation may expire
MAX_HOLD = timedelta(days=7)
ID_TOKEN_MAX = 20  # OCPP 1.6 IdToken: CiString20Type
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
# at most this long between two checks of expiries (the loop also wakes at the next one)
CHECK_EVERY = timedelta(seconds=60)


# ---------------------------------------------------------------------------- pure core


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    connector_id: int
    id_tag: str
    expiry: datetime
    parent_id_tag: str | None = None


def _field(name: str, message: str) -> Refused:
    return Refused(422, "invalid_body", f"{name}: {message}", [{"field": name, "message": message}])


def _id_token(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > ID_TOKEN_MAX:
        raise _field(name, f"a text of 1 to {ID_TOKEN_MAX} characters (OCPP IdToken)")
    if not value.isprintable():
        raise _field(name, "printable characters only")
    return value


def parse_reserve(body: Any, now: datetime) -> ReserveRequest:
    """A reservation request from a JSON body: ``connector_id`` (0 = any connector, if the
    station supports it), ``id_tag``, ``expiry_date`` (ISO 8601, in the future, at most
    seven days ahead), ``parent_id_tag`` (optional). Raises Refused (422, naming the field)."""
    if not isinstance(body, dict):
        raise Refused(422, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - {"connector_id", "id_tag", "expiry_date", "parent_id_tag"})
    if unknown:
        raise _field(unknown[0], "unknown field")
    cid = body.get("connector_id")
    if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid <= 1000:
        raise _field("connector_id", "a connector number (0 to 1000)")
    id_tag = _id_token(body, "id_tag", True)
    assert id_tag is not None
    parent = _id_token(body, "parent_id_tag", False)
    text = body.get("expiry_date")
    if not isinstance(text, str) or len(text) > 64:
        raise _field("expiry_date", "an ISO 8601 date-time")
    try:
        expiry = parse_api_time(text)
    except ValueError as e:
        raise _field("expiry_date", str(e)) from None
    if expiry <= now:
        raise _field("expiry_date", "must be in the future")
    if expiry - now > MAX_HOLD:
        raise _field("expiry_date", f"at most {MAX_HOLD.days} days ahead")
    return ReserveRequest(cid, id_tag, expiry, parent)


def effective_state(state: str, expiry: datetime, now: datetime) -> str:
    """A held reservation past its expiry is expired, whether or not that is stored yet."""
    if state in HELD and expiry <= now:
        return "expired"
    return state


def state_after_answer(answer: str) -> str:
    """The state a ReserveNow answer status leaves the reservation in."""
    return "accepted" if answer == "Accepted" else "rejected"


def view(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A reservation as the API and the web interface show it."""
    expiry = from_db(row["expiry_date"])
    assert expiry is not None
    return {
        "id": row["id"],
        "station_id": row["station_id"],
        "connector_id": row["connector_id"],
        "id_tag": row["id_tag"],
        "parent_id_tag": row["parent_id_tag"],
        "expiry_date": to_ocpp(expiry),
        "state": effective_state(row["state"], expiry, now),
        "station_answer": row["answer"],
        "requested_by": row["requested_by"],
        "cancelled_by": row["cancelled_by"],
        "transaction_id": row["transaction_id"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _iso(text: str | None) -> str | None:
    value = from_db(text)
    return to_ocpp(value) if value else None


# ---------------------------------------------------------------------------- shell


class Sender(Protocol):
    """The command port (csms.commands.CommandPort, or a delivery process's routed one)."""

    async def send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        *,
        timeout: float | None = None,
        origin: str = ...,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reserve or cancel came to: the reservation, and the station's answer (or
    ``offline`` / ``timeout`` / ``call_error``)."""

    reservation: dict[str, Any]
    answer: str


class ReservationService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        commands: Sender | None,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.commands = commands
        self.bus = bus
        self.repo = ReservationRepository(store.db)
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Link and expire what happened while stopped; then follow the starts."""
        if self.bus is not None:
            self._sub = self.bus.subscribe("reservations", kinds=(TransactionStarted,))
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="reservations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None and self.bus is not None:
            self.bus.unsubscribe(self._sub)
            self._sub = None

    async def refresh(self) -> None:
        now = self.clock.now()
        await self.repo.link_transactions(now)
        expired = await self.repo.expire(now)
        if expired:
            log.info("reservations expired", count=expired)

    async def _run(self) -> None:
        while True:
            try:
                await self._wait()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reservation upkeep failed")
                await asyncio.sleep(1.0)

    async def _wait(self) -> None:
        """Until a transaction starts or the next expiry (at most CHECK_EVERY)."""
        now = self.clock.now()
        row = await self.store.db.read_one(
            "SELECT MIN(expiry_date) AS at FROM reservations WHERE state IN "
            "('requested', 'accepted')"
        )
        wake = now + CHECK_EVERY
        nxt = from_db(row["at"]) if row and row["at"] else None
        if nxt is not None and nxt < wake:
            wake = nxt
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(self.clock.sleep_until(wake))]
        if self._sub is not None:
            waiters.append(asyncio.create_task(self._next_event(self._sub)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            for w in waiters:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w

    @staticmethod
    async def _next_event(sub: Subscription) -> None:
        item = await sub.get()
        if isinstance(item, Overflow):  # missed some: refresh re-reads everything anyway
            return
        # what else is queued: one refresh serves them all
        while sub.get_nowait() is not None:
            pass

    # ------------------------------------------------------------------ acting

    def _sender(self) -> Sender:
        if self.commands is None:
            raise RuntimeError("no command port")
        return self.commands

    async def reserve(
        self,
        station_id: str,
        req: ReserveRequest,
        requested_by: str,
        *,
        timeout: float | None = None,
    ) -> Outcome:
        """Store the reservation, send ReserveNow, keep the answer. The station must be
        known and not retired, the connector one of its EVSEs' (when it is defined).
        Raises Refused for those; offline and timeout are outcomes."""
        station = await self.store.stations.get(station_id)
        if station is None:
            raise Refused(404, "not_found", f"no station {station_id!r}")
        if station.get("retired_at") is not None:
            raise Refused(409, "retired", f"station {station_id!r} is retired")
        definition = station.get("definition") or {}
        if req.connector_id > 0 and station.get("defined"):
            usable = {
                int(e["connector_id"])
                for e in definition.get("evses") or []
                if not e.get("removed_at")
            }
            if req.connector_id not in usable:
                raise _field("connector_id", f"not a connector of station {station_id!r}")
        now = self.clock.now()
        rid = await self.repo.create(
            station_id,
            req.connector_id,
            req.id_tag,
            req.parent_id_tag,
            req.expiry,
            requested_by,
            now,
        )
        payload: dict[str, Any] = {
            "connectorId": req.connector_id,
            "expiryDate": to_ocpp(req.expiry),
            "idTag": req.id_tag,
            "reservationId": rid,
        }
        if req.parent_id_tag is not None:
            payload["parentIdTag"] = req.parent_id_tag
        answer = await self._send(station_id, "ReserveNow", payload, requested_by, timeout)
        now = self.clock.now()
        if answer in ("offline", "timeout"):
            if answer == "offline":  # never reached the station: it holds nothing
                await self.repo.answered(rid, "offline", now)
            else:
                await self.repo.note_answer(rid, answer, now)
        else:
            await self.repo.answered(rid, answer, now)
        row = await self.repo.get(rid)
        assert row is not None
        log.info(
            "reservation",
            reservation_id=rid,
            station_id=station_id,
            connector_id=req.connector_id,
            answer=answer,
            requested_by=requested_by,
        )
        return Outcome(view(row, self.clock.now()), answer)

    async def cancel(
        self, reservation_id: int, by: str, *, timeout: float | None = None
    ) -> Outcome:
        """Send CancelReservation for a held reservation. Raises Refused: 404 unknown,
        409 when no longer held (its state says why)."""
        await self.refresh()
        row = await self.repo.get(reservation_id)
        if row is None:
            raise Refused(404, "not_found", f"no reservation {reservation_id}")
        now = self.clock.now()
        current = view(row, now)
        if current["state"] not in HELD:
            raise Refused(
                409, "not_held", f"reservation {reservation_id} is {current['state']}, not held"
            )
        answer = await self._send(
            row["station_id"], "CancelReservation", {"reservationId": reservation_id}, by, timeout
        )
        if answer == "Accepted":
            await self.repo.cancelled(reservation_id, by, self.clock.now())
        log.info("reservation cancel", reservation_id=reservation_id, answer=answer, by=by)
        row = await self.repo.get(reservation_id)
        assert row is not None
        return Outcome(view(row, self.clock.now()), answer)

    async def _send(
        self,
        station_id: str,
        action: str,
        payload: dict[str, Any],
        by: str,
        timeout: float | None,
    ) -> str:
        try:
            answer = await self._sender().send(
                station_id, action, payload, timeout=timeout, origin=by[:100]
            )
        except StationOffline:
            return "offline"
        except StationRejected as e:
            return f"CallError:{e.error.code}"
        except CommandError as e:
            if e.code == "timeout":
                return "timeout"
            if e.code == "station_offline":
                return "offline"
            return "call_error"
        status = answer.get("status") if isinstance(answer, dict) else None
        return str(status) if status else "call_error"

    # ------------------------------------------------------------------ reads

    async def get(self, reservation_id: int) -> dict[str, Any] | None:
        row = await self.repo.get(reservation_id)
        return view(row, self.clock.now()) if row else None

    async def page(
        self, q: ReservationQuery, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        await self.refresh()
        rows, total = await self.repo.page(q, limit, offset)
        now = self.clock.now()
        return [view(r, now) for r in rows], total

    async def held_on(self, station_id: str, connector_ids: list[int]) -> list[dict[str, Any]]:
        now = self.clock.now()
        rows = await self.repo.held_on(station_id, connector_ids)
        return [v for v in (view(r, now) for r in rows) if v["state"] in HELD]


# ---------------------------------------------------------------------------- API

RESERVATION = obj(
    {
        "id": INT,
        "station_id": STR,
        "connector_id": INT,
        "id_tag": STR,
        "parent_id_tag": nullable(STR),
        "expiry_date": STR,
        "state": {"type": "string", "enum": list(STATES)},
        "station_answer": nullable(STR),
        "requested_by": STR,
        "cancelled_by": nullable(STR),
        "transaction_id": nullable(INT),
        "created_at": nullable(STR),
        "updated_at": nullable(STR),
    }
)
RESERVE_BODY = obj(
    {
        "connector_id": {"type": "integer", "minimum": 0, "maximum": 1000},
        "id_tag": {"type": "string", "minLength": 1, "maxLength": ID_TOKEN_MAX},
        "expiry_date": {"type": "string", "format": "date-time"},
        "parent_id_tag": {"type": "string", "minLength": 1, "maxLength": ID_TOKEN_MAX},
    },
    optional=("parent_id_tag",),
    extra=False,
)


def outcome_error(outcome: Outcome, action: str) -> ApiError | None:
    """The API's answer to an outcome that is not an accepted one (None: it is)."""
    answer, r = outcome.answer, outcome.reservation
    if answer == "Accepted":
        return None
    if answer == "offline":
        return ApiError(
            409,
            "station_offline",
            f"the station is not connected ({action} not sent)",
            reservation=r,
        )
    if answer == "timeout":
        return ApiError(
            504, "timeout", f"the station did not answer {action} in time", reservation=r
        )
    return ApiError(
        409, "station_refused", f"the station answered {action} with {answer}", reservation=r
    )


class ReservationApi:
    """The operator API's reservation routes (HTTP Basic, as the rest of /api/v1)."""

    def __init__(self, service: ReservationService, admin_user: str) -> None:
        self.service = service
        self.by = f"api:{admin_user}"

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1"
        return [
            web.post(f"{p}/stations/{{station_id}}/reservations", self.create),
            web.get(f"{p}/reservations", self.list),
            web.get(f"{p}/reservations/{{reservation_id}}", self.get),
            web.delete(f"{p}/reservations/{{reservation_id}}", self.delete),
        ]

    @staticmethod
    def _id(request: web.Request) -> int:
        text = request.match_info["reservation_id"]
        if not (text.isascii() and text.isdigit() and len(text) < 19):
            raise ApiError(404, "not_found", "a reservation id is a positive integer")
        value = int(text)
        if not 1 <= value <= INT64_MAX:
            raise ApiError(404, "not_found", f"no reservation {value}")
        return value

    @operation(
        "Reserve a connector (ReserveNow)",
        tag="reservations",
        description="csms allocates the reservationId and sends ReserveNow; the reservation "
        "is kept with the station's answer. A StartTransaction naming it makes it used.",
        body=RESERVE_BODY,
        responses={
            201: ok("the station accepted: the reservation", RESERVATION),
            409: fails("station offline or retired, or the station refused (its answer)"),
            504: fails("the station did not answer in time"),
        },
    )
    async def create(self, request: web.Request) -> web.Response:
        station_id = request.match_info["station_id"]
        if not request.can_read_body:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        try:
            body = await read_json(request)
        except JsonBodyError as e:
            raise ApiError(400, "invalid_json", str(e)) from None
        try:
            req = parse_reserve(body, self.service.clock.now())
            outcome = await self.service.reserve(station_id, req, self.by)
        except Refused as e:
            raise refusal(e) from None
        err = outcome_error(outcome, "ReserveNow")
        if err is not None:
            raise err
        return json_response(outcome.reservation, status=201)

    @operation(
        "List reservations, newest first",
        tag="reservations",
        query=(
            *PAGING,
            Param("station", description="one station's only"),
            Param("state", {"type": "string", "enum": list(STATES)}),
            Param("id_tag", description="one id tag's only (case-insensitive)"),
            Param("requested_by", description="api:USER, web:USER or ocpi:CC/PID"),
        ),
        responses={200: ok("a page of reservations", page_of(RESERVATION))},
    )
    async def list(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        q = request.query
        state = q.get("state")
        if state is not None and state not in STATES:
            raise ApiError(400, "invalid_query", f"state must be one of {', '.join(STATES)}")
        for name in ("station", "id_tag", "requested_by"):
            if len(q.get(name, "")) > 200:
                raise ApiError(400, "invalid_query", f"{name}: at most 200 characters")
        query = ReservationQuery(
            station_id=q.get("station") or None,
            state=state,
            id_tag=q.get("id_tag") or None,
            requested_by=q.get("requested_by") or None,
        )
        items, total = await self.service.page(query, limit, offset)
        return json_response(
            {"items": items, "total": total, "limit": limit, "offset": offset},
            headers={"X-Total-Count": str(total)},
        )

    @operation(
        "One reservation",
        tag="reservations",
        path={"reservation_id": {"type": "integer", "minimum": 1}},
        responses={200: ok("the reservation", RESERVATION)},
    )
    async def get(self, request: web.Request) -> web.Response:
        rid = self._id(request)
        found = await self.service.get(rid)
        if found is None:
            raise ApiError(404, "not_found", f"no reservation {rid}")
        return json_response(found)

    @operation(
        "Cancel a reservation (CancelReservation)",
        tag="reservations",
        path={"reservation_id": {"type": "integer", "minimum": 1}},
        responses={
            200: ok("the station accepted: the reservation, cancelled", RESERVATION),
            409: fails("not held any more, station offline, or the station refused"),
            504: fails("the station did not answer in time"),
        },
    )
    async def delete(self, request: web.Request) -> web.Response:
        rid = self._id(request)
        try:
            outcome = await self.service.cancel(rid, self.by)
        except Refused as e:
            raise refusal(e) from None
        err = outcome_error(outcome, "CancelReservation")
        if err is not None:
            raise err
        return json_response(outcome.reservation)
