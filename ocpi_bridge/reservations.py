"""OCPI RESERVE_NOW and CANCEL_RESERVATION (CPO as Receiver) for peers other than MOBI.E
(MOBI.E's profile answers NOT_SUPPORTED: :meth:`CommandService.receive` keeps that).

A command is validated (2001 naming the field), answered at once with a CommandResponse
(:func:`reserve_response`, :func:`cancel_response`), recorded like every command (the
``ocpi_commands`` table: its CommandResult is decided, stored and delivered to the
``response_url`` by :class:`ocpi_bridge.commands.CommandService`), and only then acted on
through csms's port: ``reserve_now`` (csms allocates the OCPP reservationId and keeps the
reservation) or ``cancel_reservation``. The eMSP's ``reservation_id`` is mapped to csms's
(``ocpi_reservations``); a RESERVE_NOW with a reservation_id the party already used
replaces that reservation (OCPI 2.2.1: the old one is cancelled first).

The EVSE shows RESERVED because the station reports StatusNotification Reserved, pushed
like any status.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field

from csms.ports import ReservationRefused, to_db
from csms.ports import Tx as JobDb

from .command_rules import Decision, start_response
from .context import BridgeContext
from .schemas import CiString, Token, Url, parse
from .store import Peer
from .transport import UNKNOWN_LOCATION, parse_ocpi_time

log = structlog.get_logger("ocpi.reservations")

RESERVATION_COMMANDS = ("RESERVE_NOW", "CANCEL_RESERVATION")
MAX_HOLD = timedelta(days=7)  # as csms allows (csms.reservations.MAX_HOLD)


# ---------------------------------------------------------------------------- pure rules


def reserve_response(
    token_valid: bool, evse_exists: bool, station_online: bool, expiry_ok: bool
) -> Decision:
    """The CommandResponse of a RESERVE_NOW: START_SESSION's checks, then the expiry."""
    first = start_response(token_valid, evse_exists, station_online)
    if first.result != "ACCEPTED" or expiry_ok:
        return first
    return Decision("REJECTED", "The expiry_date must be in the future, within 7 days.")


def cancel_response(known: bool, held: bool, station_online: bool) -> Decision:
    """The CommandResponse of a CANCEL_RESERVATION."""
    if not known:
        return Decision("REJECTED", "The reservation is unknown.")
    if not held:
        return Decision("REJECTED", "The reservation is no longer held.")
    if not station_online:
        return Decision("REJECTED", "The requested charging station is currently offline.")
    return Decision("ACCEPTED")


def reservation_result(command: str, answer: str | None, timed_out: bool) -> Decision | None:
    """The CommandResult from the station's answer to ReserveNow / CancelReservation
    (``offline``, ``timeout`` or ``CallError:CODE`` when there was none). None while
    unknown."""
    if answer is None or answer == "timeout":
        return Decision("TIMEOUT") if timed_out or answer == "timeout" else None
    if answer == "Accepted":
        return Decision("ACCEPTED")
    if command == "RESERVE_NOW":
        if answer == "Occupied":
            return Decision("EVSE_OCCUPIED")
        if answer in ("Faulted", "Unavailable"):
            return Decision("EVSE_INOPERATIVE")
    if answer == "Rejected":
        return Decision("REJECTED")
    return Decision("FAILED")  # offline meanwhile, a CallError, an answer without status


# ---------------------------------------------------------------------------- bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ReserveNow(_Body):
    response_url: Url
    token: Token
    expiry_date: str = Field(max_length=40)
    reservation_id: CiString = Field(min_length=1, max_length=36)
    location_id: CiString = Field(min_length=1, max_length=36)
    evse_uid: CiString | None = Field(None, min_length=1, max_length=36)
    authorization_reference: CiString | None = Field(None, min_length=1, max_length=36)


class CancelReservation(_Body):
    response_url: Url
    reservation_id: CiString = Field(min_length=1, max_length=36)


# ---------------------------------------------------------------------------- shell


class CommandService(Protocol):
    """What this module uses of :class:`ocpi_bridge.commands.CommandService` (which holds
    it: no import back)."""

    bridge: BridgeContext
    clock: Any
    timeout: timedelta

    async def _place(self, location_id: str, evse_uid: str) -> tuple[Any, Any]: ...
    def _online(self, station_id: str) -> bool: ...
    async def _token_valid(self, token: Token, party: str) -> bool: ...
    def _response(self, decision: Decision) -> dict[str, Any]: ...
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> Any: ...
    async def _evaluate(self, command_id: str, now: datetime) -> None: ...
    async def _record(
        self,
        peer: Peer,
        party: str,
        command: str,
        body: Any,
        station_id: str | None,
        connector_id: int | None,
        decision: Decision,
        req: Any,
        transaction_id: int | None = None,
    ) -> str: ...


class ReservationCommands:
    """RESERVE_NOW and CANCEL_RESERVATION for the command service."""

    def __init__(self, service: CommandService) -> None:
        self.service = service

    async def receive(
        self, peer: Peer, party: str, command: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if command == "RESERVE_NOW":
            return await self._reserve(peer, party, body)
        return await self._cancel(peer, party, body)

    async def _reserve(self, peer: Peer, party: str, body: Any) -> tuple[int, dict[str, Any]]:
        s = self.service
        req: ReserveNow = parse(ReserveNow, body)
        now = s.clock.now()
        try:
            expiry: datetime | None = parse_ocpi_time(req.expiry_date)
        except ValueError:
            expiry = None
        expiry_ok = expiry is not None and now < expiry <= now + MAX_HOLD
        evse = None
        if req.evse_uid is not None:
            station, evse = await s._place(req.location_id, req.evse_uid)
        else:
            station = await s.bridge.csms.station_by_location(req.location_id)
        if station is None:
            decision = Decision("REJECTED", "The requested location is unknown.")
            await s._record(peer, party, "RESERVE_NOW", body, None, None, decision, req)
            return UNKNOWN_LOCATION, s._response(decision)
        decision = reserve_response(
            # (an OCPP idTag is at most 20 characters: a longer uid cannot be reserved for)
            len(req.token.uid) <= 20 and await s._token_valid(req.token, party),
            evse is not None,
            s._online(station.id),
            expiry_ok,
        )
        cid = int(evse["connector_id"]) if evse else None
        command_id = await s._record(
            peer, party, "RESERVE_NOW", body, station.id, cid, decision, req
        )
        if decision.result == "ACCEPTED":
            assert cid is not None and expiry is not None
            s._spawn(
                self._reserve_call(command_id, party, req, station.id, cid, expiry),
                f"command-{command_id}",
            )
        return 1000, s._response(decision)

    async def _reserve_call(
        self,
        command_id: str,
        party: str,
        req: ReserveNow,
        station_id: str,
        connector_id: int,
        expiry: datetime,
    ) -> None:
        s = self.service
        csms = s.bridge.csms
        key = (party, req.reservation_id.upper())
        old = await csms.db.read_one(
            "SELECT csms_reservation_id FROM ocpi_reservations WHERE party = ? "
            "AND reservation_id = ?",
            key,
        )
        timeout = s.timeout.total_seconds()
        by = f"ocpi:{party}"
        if old is not None and old["csms_reservation_id"] is not None:
            try:  # replaced: the old one goes first (nothing to do when no longer held)
                await csms.cancel_reservation(int(old["csms_reservation_id"]), by, timeout=timeout)
            except ReservationRefused:
                pass
        answer: str
        csms_id: int | None = None
        try:
            outcome = await csms.reserve_now(
                station_id,
                connector_id,
                req.token.uid,
                expiry,
                by,
                timeout=timeout,
            )
        except ReservationRefused as e:
            answer = f"refused:{e.code}"
        else:
            answer = outcome.answer
            csms_id = int(outcome.reservation["id"])
        await self._store(command_id, key, csms_id, station_id, connector_id, answer)
        await s._evaluate(command_id, s.clock.now())

    async def _store(
        self,
        command_id: str,
        key: tuple[str, str],
        csms_id: int | None,
        station_id: str | None,
        connector_id: int | None,
        answer: str,
    ) -> None:
        now = to_db(self.service.clock.now())

        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE ocpi_commands SET conf = ?, conf_at = ? WHERE id = ?",
                (answer, now, command_id),
            )
            if csms_id is None or station_id is None or connector_id is None:
                return
            await db.execute(
                """INSERT INTO ocpi_reservations (party, reservation_id, csms_reservation_id,
                       station_id, connector_id, command_id, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (party, reservation_id) DO UPDATE SET
                       csms_reservation_id = excluded.csms_reservation_id,
                       station_id = excluded.station_id,
                       connector_id = excluded.connector_id,
                       command_id = excluded.command_id, updated_at = excluded.updated_at""",
                (*key, csms_id, station_id, connector_id, command_id, now, now),
            )

        await self.service.bridge.csms.db.write(job)

    async def _cancel(self, peer: Peer, party: str, body: Any) -> tuple[int, dict[str, Any]]:
        s = self.service
        req: CancelReservation = parse(CancelReservation, body)
        key = (party, req.reservation_id.upper())
        row = await s.bridge.csms.db.read_one(
            "SELECT * FROM ocpi_reservations WHERE party = ? AND reservation_id = ?", key
        )
        held = False
        if row is not None and row["csms_reservation_id"] is not None:
            found = await s.bridge.csms.reservation(int(row["csms_reservation_id"]))
            held = found is not None and found["state"] in ("requested", "accepted")
        online = row is not None and s._online(row["station_id"])
        decision = cancel_response(row is not None, held, online)
        station_id = row["station_id"] if row else None
        cid = int(row["connector_id"]) if row else None
        command_id = await s._record(
            peer, party, "CANCEL_RESERVATION", body, station_id, cid, decision, req
        )
        if decision.result == "ACCEPTED":
            assert row is not None
            s._spawn(
                self._cancel_call(command_id, party, int(row["csms_reservation_id"])),
                f"command-{command_id}",
            )
        return 1000, s._response(decision)

    async def _cancel_call(self, command_id: str, party: str, csms_id: int) -> None:
        s = self.service
        try:
            outcome = await s.bridge.csms.cancel_reservation(
                csms_id, f"ocpi:{party}", timeout=s.timeout.total_seconds()
            )
            answer = outcome.answer
        except ReservationRefused as e:
            answer = f"refused:{e.code}"
        await self._store(command_id, ("", ""), None, None, None, answer)
        await s._evaluate(command_id, s.clock.now())


__all__ = [
    "RESERVATION_COMMANDS",
    "CancelReservation",
    "ReservationCommands",
    "ReserveNow",
    "cancel_response",
    "reservation_result",
    "reserve_response",
]
