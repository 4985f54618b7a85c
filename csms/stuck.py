"""Stuck transactions (issue 16, item 6): transactions still open on a station that has
since shown they are over, and an admin's manual close of one.

A transaction is *stuck* when, after its StartTransaction, its connector reported
Available or Preparing, or its station booted, or no meter/transaction message came for
``ocpp.stuck_silence_hours``. :func:`judge` decides that from the facts (pure);
:func:`close_values` decides what a manual close stores: the last energy register reading
(or meter_start) and the time of the evidence (the status or the boot; for a silence the
time of the last message; without evidence, now).

A manual close (:meth:`StuckService.close`) is written like a StopTransaction: one job,
stop_reason ``Manual``, flagged ``manual_close`` with who, when, why and the evidence,
and the same TransactionStopped event, so the OCPI bridge completes the Session and sends
its CDR. A real StopTransaction arriving later for it is stored as an anomaly
(``stop_after_manual_close``), and makes no second CDR.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from .api_common import paging, refusal
from .clock import Clock
from .events import TransactionStopped
from .http import INT64_MAX, ApiError, JsonBodyError, json_response, read_json
from .openapi import BOOL, INT, PAGING, STR, Param, fails, obj, ok, operation, page_of
from .repositories.stuck import CloseResult, StuckRepository
from .store import Store
from .timeparse import from_db, to_ocpp
from .usecases import Refused

log = structlog.get_logger("csms.stuck")

MAX_REASON = 200
SCAN_BATCH = 500
MAX_SCAN = 20_000  # open transactions judged for one list, at most
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


# ---------------------------------------------------------------------------- pure core


@dataclass(frozen=True, slots=True)
class Facts:
    """What csms knows of one open transaction."""

    transaction_id: int
    started_at: datetime  # when its StartTransaction arrived
    start_time: datetime  # the station's start time
    last_message_at: datetime  # its last meter or transaction message (arrival)
    status_after: str | None = None  # first Available/Preparing of its connector after it
    status_after_at: datetime | None = None
    booted_at: datetime | None = None  # the station's last boot


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: str  # connector_free | rebooted | silent
    at: datetime  # when it was seen (for silent: the last message)
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": to_ocpp(self.at), "detail": self.detail}


def judge(f: Facts, now: datetime, silence: timedelta) -> Evidence | None:
    """Why the transaction looks over, the earliest evidence first; None: it does not."""
    found: list[Evidence] = []
    if f.status_after is not None and f.status_after_at is not None:
        found.append(
            Evidence("connector_free", f.status_after_at, f"connector reported {f.status_after}")
        )
    if f.booted_at is not None and f.booted_at > f.started_at:
        found.append(Evidence("rebooted", f.booted_at, "station booted after the start"))
    if found:
        return min(found, key=lambda e: e.at)
    if now - f.last_message_at >= silence:
        hours = (now - f.last_message_at).total_seconds() / 3600
        return Evidence(
            "silent", f.last_message_at, f"no meter or transaction message for {hours:.1f} h"
        )
    return None


def close_values(
    meter_start: int,
    last_register_wh: float | None,
    start_time: datetime,
    evidence: Evidence | None,
    now: datetime,
) -> tuple[int, datetime]:
    """(meter_stop, stop_time) of a manual close: the last register reading, never below
    meter_start; the evidence's time (now without one), never before the start."""
    meter_stop = meter_start
    if last_register_wh is not None and math.isfinite(last_register_wh):
        meter_stop = max(meter_start, min(int(last_register_wh), INT64_MAX))
    stop_time = evidence.at if evidence is not None else now
    return meter_stop, max(stop_time, start_time)


def parse_close(body: Any) -> tuple[str, bool]:
    """``{"reason": TEXT, "force": BOOL}`` -> (reason, force); Refused (422) when invalid."""
    if not isinstance(body, dict) or set(body) - {"reason", "force"}:
        raise Refused(422, "invalid_body", 'the body is {"reason": TEXT, "force": BOOL}')
    reason, force = body.get("reason"), body.get("force", False)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise Refused(
            422,
            "invalid_body",
            f"reason is required: a text of 1 to {MAX_REASON} characters",
            [{"field": "reason", "message": f"a text of 1 to {MAX_REASON} characters"}],
        )
    if not isinstance(force, bool):
        raise Refused(
            422,
            "invalid_body",
            "force is true or false",
            [{"field": "force", "message": "true or false"}],
        )
    return reason.strip(), force


def facts_of(row: dict[str, Any]) -> Facts:
    started = from_db(row["start_received_at"])
    start_time = from_db(row["start_time"])
    assert started is not None and start_time is not None
    last = from_db(row["updated_at"]) or started
    return Facts(
        transaction_id=int(row["id"]),
        started_at=started,
        start_time=start_time,
        last_message_at=max(last, started),
        status_after=row["status_after"],
        status_after_at=from_db(row["status_after_at"]),
        booted_at=from_db(row["station_last_boot_at"]),
    )


def manual_close_view(row: dict[str, Any]) -> dict[str, Any] | None:
    """A transaction's manual close as the API shows it (None: not closed by hand)."""
    if not row.get("closed_at"):
        return None
    evidence = row.get("close_evidence")
    return {
        "closed_by": row["closed_by"],
        "closed_at": _iso(row["closed_at"]),
        "reason": row["close_reason"],
        "evidence": json.loads(evidence) if evidence else None,
    }


def _iso(text: str | None) -> str | None:
    value = from_db(text)
    return to_ocpp(value) if value else None


# ---------------------------------------------------------------------------- shell


class StuckService:
    def __init__(self, store: Store, clock: Clock, silence_hours: float) -> None:
        self.store = store
        self.clock = clock
        self.silence = timedelta(hours=silence_hours)
        self.repo = StuckRepository(store.db)

    async def stuck(
        self, station_id: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """A page of the stuck transactions (by id), how many in all, and whether the scan
        stopped at MAX_SCAN open transactions (then there may be more)."""
        now = self.clock.now()
        found: list[dict[str, Any]] = []
        after, scanned, truncated = 0, 0, False
        while True:
            rows = await self.repo.open_facts(after, SCAN_BATCH, station_id)
            for row in rows:
                evidence = judge(facts_of(row), now, self.silence)
                if evidence is not None:
                    found.append(self._item(row, evidence))
            scanned += len(rows)
            if len(rows) < SCAN_BATCH:
                break
            if scanned >= MAX_SCAN:
                truncated = True
                break
            after = int(rows[-1]["id"])
        page = found[offset : offset + limit]
        for item in page:  # the proposed close values, for the page only
            last = await self.repo.last_register(item["id"])
            meter_stop, stop_time = close_values(
                item["meter_start_wh"], last[0] if last else None, item["_start"], item["_ev"], now
            )
            item["proposed"] = {"meter_stop_wh": meter_stop, "stop_time": to_ocpp(stop_time)}
        for item in page:
            del item["_start"], item["_ev"]
        return page, len(found), truncated

    @staticmethod
    def _item(row: dict[str, Any], evidence: Evidence) -> dict[str, Any]:
        return {
            "id": int(row["id"]),
            "station_id": row["station_id"],
            "connector_id": row["connector_id"],
            "id_tag": row["id_tag"],
            "meter_start_wh": row["meter_start"],
            "start_time": _iso(row["start_time"]),
            "last_message_at": _iso(row["updated_at"]),
            "evidence": evidence.as_json(),
            "_start": from_db(row["start_time"]),
            "_ev": evidence,
        }

    async def evidence_for(
        self, transaction_id: int
    ) -> tuple[dict[str, Any] | None, Evidence | None]:
        """The open transaction's row (None: unknown or not open) and its evidence."""
        rows = await self.repo.open_facts(transaction_id - 1, 1)
        if not rows or int(rows[0]["id"]) != transaction_id:
            return None, None
        return rows[0], judge(facts_of(rows[0]), self.clock.now(), self.silence)

    async def close(
        self, transaction_id: int, reason: str, by: str, *, force: bool = False
    ) -> dict[str, Any]:
        """Close an open transaction by hand (Refused: 404 unknown, 409 not open, 409 not
        stuck unless ``force``). Returns what was stored."""
        row, evidence = await self.evidence_for(transaction_id)
        if row is None:
            known = await self.store.transactions.get(transaction_id)
            if known is None:
                raise Refused(404, "not_found", f"no transaction {transaction_id}")
            raise Refused(409, "not_open", f"transaction {transaction_id} is not open")
        if evidence is None and not force:
            raise Refused(
                409,
                "not_stuck",
                f"transaction {transaction_id} does not look stuck (no Available, reboot or "
                'silence since its start); send "force": true to close it anyway',
            )
        now = self.clock.now()
        last = await self.repo.last_register(transaction_id)
        start = from_db(row["start_time"])
        assert start is not None
        meter_stop, stop_time = close_values(
            int(row["meter_start"]), last[0] if last else None, start, evidence, now
        )
        detail = evidence.as_json() if evidence is not None else {"kind": "forced"}
        station_id = row["station_id"]

        def events(r: CloseResult) -> list[TransactionStopped]:
            if r.outcome != "closed" or r.connector_id is None:
                return []
            return [
                TransactionStopped(
                    transaction_id, station_id, r.connector_id, meter_stop, stop_time, "Manual", now
                )
            ]

        result = await self.repo.close(
            transaction_id, meter_stop, stop_time, by, reason, detail, now, events=events
        )
        if result.outcome != "closed":
            raise Refused(409, "not_open", f"transaction {transaction_id} is not open")
        log.warning(
            "transaction closed by hand",
            transaction_id=transaction_id,
            station_id=station_id,
            by=by,
            reason=reason,
            evidence=detail.get("kind"),
            meter_stop=meter_stop,
        )
        return {"meter_stop_wh": meter_stop, "stop_time": to_ocpp(stop_time), "evidence": detail}


# ---------------------------------------------------------------------------- API


STUCK = obj(
    {
        "id": INT,
        "station_id": STR,
        "connector_id": INT,
        "id_tag": STR,
        "meter_start_wh": INT,
        "start_time": STR,
        "last_message_at": STR,
        "evidence": obj({"kind": STR, "at": STR, "detail": STR}),
        "proposed": obj({"meter_stop_wh": INT, "stop_time": STR}),
    }
)
CLOSE_BODY = obj(
    {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON}, "force": BOOL},
    optional=("force",),
    extra=False,
)


class StuckApi:
    def __init__(self, service: StuckService, admin_user: str) -> None:
        self.service = service
        self.by = f"api:{admin_user}"

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1/transactions"
        return [
            web.get(f"{p}/stuck", self.list),
            web.post(f"{p}/{{transaction_id}}/close", self.close),
        ]

    @operation(
        "Stuck transactions: open, though the station has shown they are over",
        tag="transactions",
        description="Open transactions whose connector reported Available or Preparing after "
        "the start, whose station booted after it, or without a meter or transaction message "
        "for ocpp.stuck_silence_hours; with the evidence and the values a close would store.",
        query=(*PAGING, Param("station", description="one station's only")),
        responses={
            200: ok(
                "a page of stuck transactions",
                page_of(STUCK, truncated={"type": "boolean"}, silence_hours={"type": "number"}),
            )
        },
    )
    async def list(self, request: web.Request) -> web.Response:
        limit, offset = paging(request)
        station = request.query.get("station") or None
        if station is not None and len(station) > 200:
            raise ApiError(400, "invalid_query", "station: at most 200 characters")
        items, total, truncated = await self.service.stuck(station, limit, offset)
        return json_response(
            {
                "items": items,
                "total": total,
                "limit": limit,
                "offset": offset,
                "truncated": truncated,
                "silence_hours": self.service.silence.total_seconds() / 3600,
            },
            headers={"X-Total-Count": str(total)},
        )

    @operation(
        "Close a stuck transaction by hand",
        tag="transactions",
        description="meter_stop from the last energy register reading (or meter_start), stop "
        "time from the evidence; stop_reason Manual, flagged manual_close; the OCPI Session "
        "is completed and its CDR sent. force: true closes one without evidence (stop: now).",
        path={"transaction_id": {"type": "integer", "minimum": 1}},
        body=CLOSE_BODY,
        responses={
            200: ok("closed", obj({"id": INT, "manual_close": obj()})),
            409: fails("not open any more, or not stuck (without force)"),
        },
    )
    async def close(self, request: web.Request) -> web.Response:
        text = request.match_info["transaction_id"]
        if not (text.isascii() and text.isdigit() and len(text) < 19) or int(text) < 1:
            raise ApiError(404, "not_found", "a transaction id is a positive integer")
        if not request.can_read_body:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        try:
            body = await read_json(request)
        except JsonBodyError as e:
            raise ApiError(400, "invalid_json", str(e)) from None
        try:
            reason, force = parse_close(body)
            done = await self.service.close(int(text), reason, self.by, force=force)
        except Refused as e:
            raise refusal(e) from None
        row = await self.service.store.transactions.get(int(text))
        assert row is not None
        return json_response(
            {
                "id": int(text),
                "active": False,
                "stop_reason": row["stop_reason"],
                "flags": row["flags"],
                "manual_close": manual_close_view(row),
                **done,
            }
        )


__all__ = [
    "Evidence",
    "Facts",
    "StuckApi",
    "StuckService",
    "close_values",
    "judge",
    "manual_close_view",
    "parse_close",
]
