"""OCPI commands (CPO as Receiver) with MOBI.E's semantics: START_SESSION, STOP_SESSION and
UNLOCK_CONNECTOR. RESERVE_NOW and CANCEL_RESERVATION: NOT_SUPPORTED for MOBI.E, handled
for other peers by :mod:`ocpi_bridge.reservations` (their results decided and delivered
here like the others').

A command is validated (2001 naming the field), answered at once with the CommandResponse
of MOBI.E's tables (command_rules.py), and only then acted on through csms's command port
(RemoteStartTransaction, RemoteStopTransaction, UnlockConnector). Its CommandResult is
decided from what actually happens on the OCPP side (a START_SESSION is ACCEPTED only once
the StartTransaction.req has arrived) and POSTed to its ``response_url``, retried with
backoff until the peer acknowledges it. Commands are stored: one waiting for its outcome
when the process restarts is resumed, and its result still delivered.

The outcome is always *evaluated* from the store (the command's row, the transactions,
the EVSE status), when something may have changed it: the station's answer, a transaction
starting or stopping on that station, the deadline. Missing an event therefore cannot lose
a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from csms.ports import (
    CommandError,
    Overflow,
    StationRejected,
    StationSnapshot,
    TransactionStarted,
    TransactionStopped,
    from_db,
    to_db,
)
from csms.ports import Tx as JobDb

from . import command_rules as rules
from . import v211
from .client import OcpiCallFailed
from .locations import removed_at
from .reservations import RESERVATION_COMMANDS, ReservationCommands, reservation_result
from .schemas import CiString, Token, Url, parse
from .service import BackgroundService
from .store import Peer
from .transport import UNKNOWN_LOCATION, OcpiError, ocpi_time

if TYPE_CHECKING:
    from .context import BridgeContext

log = structlog.get_logger("ocpi.commands")

SUPPORTED = ("START_SESSION", "STOP_SESSION", "UNLOCK_CONNECTOR")
OCPI_COMMANDS = (*SUPPORTED, "RESERVE_NOW", "CANCEL_RESERVATION")
GRANT_FOR = timedelta(minutes=15)  # a remote start's token is accepted locally this long
DELIVERY_GIVES_UP = timedelta(hours=24)
ANSWER_GRACE = 2.0  # at most, seconds a start/stop waits for the station's answer in flight


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartSession(_Body):
    response_url: Url
    token: Token
    location_id: CiString = Field(min_length=1, max_length=36)
    evse_uid: CiString = Field(min_length=1, max_length=36)  # MOBI.E makes it mandatory
    connector_id: CiString | None = Field(None, min_length=1, max_length=36)
    authorization_reference: CiString | None = Field(None, min_length=1, max_length=36)


class StopSession(_Body):
    response_url: Url
    session_id: CiString = Field(min_length=1, max_length=36)


class UnlockConnector(_Body):
    response_url: Url
    location_id: CiString = Field(min_length=1, max_length=36)
    evse_uid: CiString = Field(min_length=1, max_length=36)
    connector_id: CiString = Field(min_length=1, max_length=36)


@dataclass
class Grant:
    """A remote start's token: accepted locally at that station for a while (OCPI: never
    real-time authorize the token of a command)."""

    owner: str
    until: datetime


class CommandService(BackgroundService):
    def __init__(self, bridge: BridgeContext) -> None:
        super().__init__(bridge.clock, bridge.csms.bus)
        self.bridge = bridge
        self.timeout = timedelta(seconds=bridge.settings.command_timeout)
        self.grants: dict[tuple[str, str], Grant] = {}
        self._delivering: set[str] = set()
        self._calls: dict[str, asyncio.Event] = {}  # OCPP requests of commands in flight
        # their answers heard but not yet stored (status; None: an answer without one)
        self._answers: dict[str, str | None] = {}
        # RESERVE_NOW / CANCEL_RESERVATION, for peers other than MOBI.E (reservations.py)
        self.reservations = ReservationCommands(self)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._sub = self.bus.subscribe(
            "ocpi-commands", kinds=(TransactionStarted, TransactionStopped)
        )
        now = self.clock.now()
        for row in await self._open_commands():
            if row["command"] == "START_SESSION" and row["decided_at"] is None:
                self.grants[(row["station_id"], row["id_tag"].upper())] = Grant(
                    row["party"],
                    from_db(row["created_at"]) + GRANT_FOR,  # type: ignore[operator]
                )
        resumed = await self._evaluate_all(now)
        if resumed:
            log.info("commands resumed after a restart", commands=resumed)
        self._run(
            (self._consume(), "ocpi-commands-events"), (self._timers(), "ocpi-commands-timers")
        )

    # ------------------------------------------------------------------ receiving

    async def receive(
        self, peer: Peer, party: tuple[str, str], command: str, body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Validate and answer a command; returns (OCPI status code, CommandResponse)."""
        if command not in OCPI_COMMANDS:
            raise OcpiError(2000, f"unknown command {command!r}", http_status=404)
        if command in RESERVATION_COMMANDS and not self.bridge.is_mobie(peer):
            return await self.reservations.receive(
                peer, f"{party[0]}/{party[1]}".upper(), command, body
            )
        if command not in SUPPORTED:  # (MOBI.E's profile: no reservations)
            response = {"result": "NOT_SUPPORTED", "timeout": self._timeout_s()}
            return 1000, response
        handler = {
            "START_SESSION": self._start,
            "STOP_SESSION": self._stop,
            "UNLOCK_CONNECTOR": self._unlock,
        }[command]
        return await handler(peer, f"{party[0]}/{party[1]}".upper(), body)

    def _timeout_s(self) -> int:
        return int(self.timeout.total_seconds())

    def _response(self, decision: rules.Decision) -> dict[str, Any]:
        response: dict[str, Any] = {"result": decision.result, "timeout": self._timeout_s()}
        if decision.message:
            response["message"] = decision.display()
        return response

    async def _place(
        self, location_id: str, evse_uid: str
    ) -> tuple[StationSnapshot | None, dict[str, Any] | None]:
        """(station, EVSE definition) of a Location and EVSE uid; None where unknown."""
        station = await self.bridge.csms.station_by_location(location_id)
        if station is None:
            return None, None
        evse = next(
            (
                e
                for e in station.evses
                if e["uid"].upper() == evse_uid.upper() and removed_at(e) is None
            ),
            None,
        )  # (a retired EVSE, REMOVED, takes no command)
        return station, evse

    def _online(self, station_id: str) -> bool:
        return self.bridge.csms.is_connected(station_id)

    async def _start(self, peer: Peer, party: str, body: Any) -> tuple[int, dict[str, Any]]:
        req: StartSession = parse(StartSession, body)
        station, evse = await self._place(req.location_id, req.evse_uid)
        if station is None:
            decision = rules.Decision("REJECTED", "The requested location is unknown.")
            await self._record(peer, party, "START_SESSION", body, None, None, decision, req)
            return UNKNOWN_LOCATION, self._response(decision)
        online = self._online(station.id)
        token_ok = await self._token_valid(req.token, party)
        decision = rules.start_response(token_ok, evse is not None, online)
        cid = evse["connector_id"] if evse else None
        command_id = await self._record(
            peer, party, "START_SESSION", body, station.id, cid, decision, req
        )
        if decision.result == "ACCEPTED":
            assert cid is not None
            uid = req.token.uid
            self.grants[(station.id, uid.upper())] = Grant(party, self.clock.now() + GRANT_FOR)
            payload = {"connectorId": cid, "idTag": uid}
            self._spawn(
                self._call(command_id, station.id, "RemoteStartTransaction", payload),
                f"command-{command_id}",
            )
        return 1000, self._response(decision)

    async def _token_valid(self, token: Token, party: str) -> bool:
        """Known to us, of the requesting party, valid; an RFID token must equal the stored
        one in every property (a command is not a way to change a token)."""
        if f"{token.country_code}/{token.party_id}".upper() != party:
            return False
        stored = await self.bridge.store.get_token(
            token.country_code.upper(), token.party_id.upper(), token.uid, token.type
        )
        if stored is None or not stored.get("valid"):
            return False
        if token.type == "RFID":
            given = token.model_dump(mode="json", exclude_none=True)
            ignore = {"last_updated", "country_code", "party_id"}
            a = {k: _ci(k, v) for k, v in given.items() if k not in ignore}
            b = {k: _ci(k, v) for k, v in stored.items() if k not in ignore}
            return a == b
        return True

    async def _stop(self, peer: Peer, party: str, body: Any) -> tuple[int, dict[str, Any]]:
        req: StopSession = parse(StopSession, body)
        tx = station = None
        sid = req.session_id  # ours are transaction ids: ASCII digits that fit in 64 bits
        if sid.isascii() and sid.isdigit() and len(sid) < 19:
            tx = await self.bridge.csms.transaction(int(req.session_id))
            station = await self.bridge.csms.station(tx.station_id) if tx else None
        if tx is None or station is None or not station.defined:
            decision = rules.stop_response(False, False, False, False)
            await self._record(peer, party, "STOP_SESSION", body, None, None, decision, req)
            return 1000, self._response(decision)
        evse = next((e for e in station.evses if e["connector_id"] == tx.connector_id), {})
        capable = "REMOTE_START_STOP_CAPABLE" in (evse.get("capabilities") or [])
        decision = rules.stop_response(
            True,
            tx.stop_received_at is None,
            (tx.tag_owner or "").upper() == party,
            self._online(tx.station_id),
            capable,
        )
        command_id = await self._record(
            peer,
            party,
            "STOP_SESSION",
            body,
            tx.station_id,
            tx.connector_id,
            decision,
            req,
            transaction_id=tx.id,
        )
        if decision.result == "ACCEPTED":
            self._spawn(
                self._call(
                    command_id,
                    tx.station_id,
                    "RemoteStopTransaction",
                    {"transactionId": tx.id},
                ),
                f"command-{command_id}",
            )
        return 1000, self._response(decision)

    async def _unlock(self, peer: Peer, party: str, body: Any) -> tuple[int, dict[str, Any]]:
        req: UnlockConnector = parse(UnlockConnector, body)
        station, evse = await self._place(req.location_id, req.evse_uid)
        connector_ok = evse is not None and any(
            c["id"].upper() == req.connector_id.upper() for c in evse["connectors"]
        )
        if station is None or evse is None or not connector_ok:
            decision = rules.Decision(
                "REJECTED", "The requested location, EVSE or connector is unknown."
            )
            await self._record(peer, party, "UNLOCK_CONNECTOR", body, None, None, decision, req)
            return UNKNOWN_LOCATION, self._response(decision)
        cid = evse["connector_id"]
        active = await self.bridge.csms.active_transaction_on(station.id, cid)
        party_active = active is not None and (active.tag_owner or "").upper() == party
        ended_at = None
        if active is None:  # someone else charging there now is the connector's last user
            last = await self.bridge.csms.last_stopped_transaction_on(station.id, cid)
            if last is not None and (last.tag_owner or "").upper() == party:
                stopped = last.stop_time
                if stopped is not None and self.clock.now() - stopped < timedelta(hours=24):
                    ended_at = ocpi_time(stopped)
        decision = rules.unlock_response(party_active, ended_at, self._online(station.id))
        command_id = await self._record(
            peer, party, "UNLOCK_CONNECTOR", body, station.id, cid, decision, req
        )
        if decision.result == "ACCEPTED":
            self._spawn(
                self._call(command_id, station.id, "UnlockConnector", {"connectorId": cid}),
                f"command-{command_id}",
            )
        return 1000, self._response(decision)

    async def _record(
        self,
        peer: Peer,
        party: str,
        command: str,
        body: Any,
        station_id: str | None,
        connector_id: int | None,
        decision: rules.Decision,
        req: Any,
        transaction_id: int | None = None,
    ) -> str:
        command_id = str(uuid.uuid4())
        now = self.clock.now()
        accepted = decision.result == "ACCEPTED"
        id_tag = req.token.uid if isinstance(req, StartSession) else None
        reference = req.authorization_reference if isinstance(req, StartSession) else None
        row = (
            command_id,
            peer.id,
            party,
            command,
            json.dumps(body),
            req.response_url,
            station_id,
            connector_id,
            id_tag,
            transaction_id,
            reference,
            json.dumps(self._response(decision)),
            to_db(now + self.timeout) if accepted else None,
            None if accepted else to_db(now),  # a refused command has no result to deliver
            to_db(now),
        )

        async def job(db: JobDb) -> None:
            await db.execute(
                """INSERT INTO ocpi_commands (id, peer_id, party, command, request, response_url,
                       station_id, connector_id, id_tag, transaction_id,
                       authorization_reference, response, deadline, decided_at, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                row,
            )

        await self.bridge.csms.db.write(job)
        log.info(
            "command received",
            command_id=command_id,
            command=command,
            party=party,
            station_id=station_id,
            connector_id=connector_id,
            response=decision.result,
            message=decision.message,
        )
        if accepted:
            self._wake.set()
        return command_id

    # ------------------------------------------------------------------ acting on the station

    async def _call(self, command_id: str, station_id: str, action: str, payload: dict) -> None:
        conf: str | None
        answered = self._calls[command_id] = asyncio.Event()

        def heard(answer: Any) -> None:
            # the answer is known before it is stored: a Start/StopTransaction that the
            # station sends right after it is judged with it (see _evaluate)
            self._answers[command_id] = _status(answer)
            answered.set()

        try:
            answer = await self.bridge.csms.send_command(
                station_id,
                action,
                payload,
                timeout=self.timeout.total_seconds(),
                origin=f"ocpi:{command_id}",
                on_answer=heard,
            )
            conf = _status(answer)
        except StationRejected as e:
            conf = f"CallError:{e.error.code}"
        except CommandError as e:  # offline or no answer: no confirmation
            log.info("no confirmation from the station", command_id=command_id, error=str(e))
            conf = None
        if conf is not None:
            now = to_db(self.clock.now())

            async def job(db: JobDb) -> None:
                await db.execute(
                    "UPDATE ocpi_commands SET conf = ?, conf_at = ? WHERE id = ?",
                    (conf, now, command_id),
                )

            await self.bridge.csms.db.write(job)
        answered.set()
        self._calls.pop(command_id, None)
        self._answers.pop(command_id, None)
        await self._evaluate(command_id, self.clock.now())

    # ------------------------------------------------------------------ deciding

    async def _open_commands(self) -> list[dict[str, Any]]:
        return await self.bridge.csms.db.read(
            "SELECT * FROM ocpi_commands WHERE decided_at IS NULL "
            "OR (result IS NOT NULL AND delivered_at IS NULL AND next_delivery_at IS NOT NULL) "
            "ORDER BY created_at"
        )

    async def _evaluate_all(self, now: datetime, station_id: str | None = None) -> int:
        rows = await self.bridge.csms.db.read(
            "SELECT id, station_id FROM ocpi_commands WHERE decided_at IS NULL"
        )
        count = 0
        for row in rows:
            if station_id is None or row["station_id"] == station_id:
                await self._evaluate(row["id"], now)
                count += 1
        return count

    async def _conf(self, command_id: str) -> str | None:
        """The station's answer to the command's OCPP request: heard (not yet stored), or
        stored; None when there is none. An answer still on the wire gets a moment before
        it is deemed lost."""
        heard = self._answers.get(command_id)
        if heard is not None:
            return heard
        answered = self._calls.get(command_id)
        if answered is not None and not answered.is_set():
            with contextlib.suppress(TimeoutError):
                grace = min(ANSWER_GRACE, self.timeout.total_seconds() / 10)
                await asyncio.wait_for(answered.wait(), grace)
            heard = self._answers.get(command_id)
            if heard is not None:
                return heard
        row = await self.bridge.csms.db.read_one(
            "SELECT conf FROM ocpi_commands WHERE id = ?", (command_id,)
        )
        return row["conf"] if row else None

    async def _evaluate(self, command_id: str, now: datetime) -> None:
        """Decide the CommandResult if the facts now allow it; store it and deliver it."""
        store = self.bridge.csms.db
        cmd = await store.read_one("SELECT * FROM ocpi_commands WHERE id = ?", (command_id,))
        if cmd is None or cmd["decided_at"] is not None:
            return
        deadline = from_db(cmd["deadline"])
        timed_out = deadline is not None and now >= deadline
        decision: rules.Decision | None
        transaction_id = cmd["transaction_id"]
        # the station's facts first, then its answer: a station answers before it starts or
        # stops, so a start or stop seen here has its answer already heard (_conf)
        if cmd["command"] == "START_SESSION":
            created, deadline_at = from_db(cmd["created_at"]), from_db(cmd["deadline"])
            assert created is not None and deadline_at is not None
            started = await self.bridge.csms.first_transaction_started(
                cmd["station_id"], cmd["connector_id"], cmd["id_tag"], created, deadline_at
            )
            conf = _as_table_answer(await self._conf(command_id))
            facts: dict[str, bool] = {}
            if started is None and conf is not None and conf != "Accepted":
                facts = await self._evse_facts(cmd)
            decision = rules.start_result(
                conf, started is not None, timed_out, **facts, start_remark=None
            )
            if started is not None:
                transaction_id = started.id
        elif cmd["command"] == "STOP_SESSION":
            tx = await self.bridge.csms.transaction(cmd["transaction_id"])
            stopped = tx is not None and tx.stop_received_at is not None
            conf = _as_table_answer(await self._conf(command_id))
            decision = rules.stop_result(conf, stopped, tx.stop_reason if tx else None, timed_out)
        elif cmd["command"] in RESERVATION_COMMANDS:
            decision = reservation_result(cmd["command"], cmd["conf"], timed_out)
        else:
            raw = await self._conf(command_id)
            decision = rules.unlock_result(raw or None, timed_out)
            if raw and raw.startswith("CallError:"):
                decision = rules.Decision("FAILED")
        if decision is None:
            return
        result: dict[str, Any] = {"result": decision.result}
        if decision.message:
            result["message"] = decision.display()
        decided = to_db(now)

        async def job(db: JobDb) -> bool:
            cur = await db.execute(
                "UPDATE ocpi_commands SET result = ?, decided_at = ?, transaction_id = ?, "
                "next_delivery_at = ? WHERE id = ? AND decided_at IS NULL",
                (json.dumps(result), decided, transaction_id, decided, command_id),
            )
            return cur.rowcount == 1

        if not await store.write(job):
            return  # decided meanwhile
        if cmd["command"] == "START_SESSION" and decision.result != "ACCEPTED":
            self.grants.pop((cmd["station_id"], (cmd["id_tag"] or "").upper()), None)
        log.info(
            "command result decided",
            command_id=command_id,
            command=cmd["command"],
            result=decision.result,
            message=decision.message,
            transaction_id=transaction_id,
        )
        self._spawn(self._deliver(command_id), f"deliver-{command_id}")

    async def _evse_facts(self, cmd: dict[str, Any]) -> dict[str, bool]:
        """Table 17's columns for a refused remote start: who is on the EVSE, is it usable."""
        active = await self.bridge.csms.active_transaction_on(
            cmd["station_id"], cmd["connector_id"]
        )
        user = active is not None and active.id_tag.upper() == (cmd["id_tag"] or "").upper()
        other = active is not None and not user
        found = await self.bridge.location_of_station(cmd["station_id"])
        out_of_service = False
        if found is not None:
            location, connectors = found
            if cmd["connector_id"] in connectors:
                status = location["evses"][connectors.index(cmd["connector_id"])]["status"]
                out_of_service = status in ("OUTOFORDER", "INOPERATIVE")
        return {
            "user_active_on_evse": user,
            "other_active_on_evse": other,
            "evse_out_of_service": out_of_service,
        }

    # ------------------------------------------------------------------ delivering results

    async def _deliver(self, command_id: str) -> None:
        if command_id in self._delivering:
            return
        self._delivering.add(command_id)
        try:
            await self._deliver_once(command_id)
        finally:
            self._delivering.discard(command_id)

    async def _deliver_once(self, command_id: str) -> None:
        store = self.bridge.csms.db
        cmd = await store.read_one("SELECT * FROM ocpi_commands WHERE id = ?", (command_id,))
        if cmd is None or cmd["result"] is None or cmd["delivered_at"] is not None:
            return
        peer = await self._peer(cmd["peer_id"])
        now = self.clock.now()
        ok, error = False, None
        if peer is None:
            error = "the peer is no longer registered"
        else:
            cc, _, pid = cmd["party"].partition("/")
            result = json.loads(cmd["result"])
            if peer.version == v211.VERSION:  # 2.1.1: a CommandResponse, result only
                result = v211.command_result_out(result)
            try:
                reply = await self.bridge.client.request(
                    "POST",
                    cmd["response_url"],
                    peer.token_out,
                    base64_token=peer.token_out_base64,
                    body=result,
                    module="commands",
                    to_party=(cc, pid),
                    timeout=self.bridge.settings.push_timeout,
                )
                ok = reply.ok
                error = None if ok else reply.describe()
            except OcpiCallFailed as e:
                error = str(e)
        attempts = cmd["delivery_attempts"] + 1
        created = from_db(cmd["created_at"])
        assert created is not None
        next_at: datetime | None = None
        if not ok and now - created < DELIVERY_GIVES_UP:
            delay = min(60.0, 2.0 ** (attempts - 1)) * (0.5 + random.random())
            next_at = now + timedelta(seconds=min(delay, 60.0))

        async def job(db: JobDb) -> None:
            await db.execute(
                "UPDATE ocpi_commands SET delivered_at = ?, delivery_attempts = ?, "
                "next_delivery_at = ?, last_error = ? WHERE id = ?",
                (
                    to_db(now) if ok else None,
                    attempts,
                    to_db(next_at) if next_at else None,
                    error,
                    command_id,
                ),
            )

        await store.write(job)
        if ok:
            log.info("command result delivered", command_id=command_id, attempts=attempts)
        elif next_at is None:
            log.error("command result undeliverable: giving up", command_id=command_id, error=error)
        else:
            log.warning(
                "command result not delivered, will retry",
                command_id=command_id,
                attempts=attempts,
                error=error,
            )
            self._wake.set()

    async def _peer(self, peer_id: int) -> Peer | None:
        return next((p for p in self.bridge.registered_peers() if p.id == peer_id), None)

    # ------------------------------------------------------------------ events and timers

    async def _consume(self) -> None:
        assert self._sub is not None
        while True:
            item = await self._sub.get()
            now = self.clock.now()
            try:
                if isinstance(item, Overflow):
                    await self._evaluate_all(now)
                elif isinstance(item, TransactionStarted | TransactionStopped):
                    await self._evaluate_all(now, item.station_id)
            except Exception:
                log.exception("command evaluation failed")

    async def _timers(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            wake_at: datetime | None = None
            try:
                store = self.bridge.csms.db
                for row in await store.read(
                    "SELECT id, deadline FROM ocpi_commands WHERE decided_at IS NULL "
                    "AND deadline IS NOT NULL"
                ):
                    deadline = from_db(row["deadline"])
                    assert deadline is not None
                    if deadline <= now:
                        await self._evaluate(row["id"], now)
                    elif wake_at is None or deadline < wake_at:
                        wake_at = deadline
                for row in await store.read(
                    "SELECT id, next_delivery_at FROM ocpi_commands WHERE delivered_at IS NULL "
                    "AND next_delivery_at IS NOT NULL"
                ):
                    due = from_db(row["next_delivery_at"])
                    assert due is not None
                    if due <= now:
                        self._spawn(self._deliver(row["id"]), f"deliver-{row['id']}")
                    elif wake_at is None or due < wake_at:
                        wake_at = due
                for key, grant in list(self.grants.items()):
                    if grant.until <= now:
                        del self.grants[key]
            except Exception:
                log.exception("command timers failed")
            await self._sleep(wake_at)

    # ------------------------------------------------------------------ for others

    def grant_for(self, station_id: str, id_tag: str) -> Grant | None:
        grant = self.grants.get((station_id, id_tag.upper()))
        if grant is None or grant.until <= self.clock.now():
            return None
        return grant

    async def list(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        store = self.bridge.csms.db
        rows = await store.read(
            "SELECT * FROM ocpi_commands ORDER BY created_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = await store.read_one("SELECT COUNT(*) AS n FROM ocpi_commands")
        items = []
        for r in rows:
            items.append(
                {
                    "id": r["id"],
                    "command": r["command"],
                    "party": r["party"],
                    "peer_id": r["peer_id"],
                    "station_id": r["station_id"],
                    "connector_id": r["connector_id"],
                    "transaction_id": r["transaction_id"],
                    "request": json.loads(r["request"]),
                    "response": json.loads(r["response"]),
                    "station_answer": r["conf"],
                    "result": json.loads(r["result"]) if r["result"] else None,
                    "created_at": _iso(r["created_at"]),
                    "decided_at": _iso(r["decided_at"]),
                    "delivered_at": _iso(r["delivered_at"]),
                    "delivery_attempts": r["delivery_attempts"],
                    "last_error": r["last_error"],
                }
            )
        return items, int(total["n"]) if total else 0


CISTRING_FIELDS = frozenset({"uid", "contract_id", "group_id"})


def _ci(field: str, value: Any) -> Any:
    """CiStrings compare case-insensitively."""
    return value.upper() if field in CISTRING_FIELDS and isinstance(value, str) else value


def _iso(text: str | None) -> str | None:
    value = from_db(text)
    return ocpi_time(value) if value else None


def _status(answer: Any) -> str | None:
    """The ``status`` of a station's answer (None: an answer without one)."""
    return str(answer.get("status")) if isinstance(answer, dict) else None


def _as_table_answer(conf: str | None) -> str | None:
    """A CallError answer refuses, in MOBI.E's tables' terms."""
    return "Rejected" if conf is not None and conf.startswith("CallError:") else conf
