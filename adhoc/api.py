"""The operator's API of ad hoc charging (``/api/v1/adhoc/...``, the API's password):
payments (held, captured, released: the refunds of a hold), receipts (JSON, HTML, PDF),
and the stations that show the price on their display."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from csms.ports import ApiError, api_contract, api_paging, dumps, to_iso

from .core import State
from .receipts import render_page, render_pdf
from .receipts_data import to_receipt
from .service import AdhocService

C = api_contract
operation = C.operation

PAYMENT = C.obj(
    {
        "id": C.STR,
        "kind": C.STR,
        "station_id": C.STR,
        "connector_id": C.INT,
        "evse_uid": C.STR,
        "provider": C.STR,
        "reference": C.nullable(C.STR),
        "state": C.STR,
        "reason": C.nullable(C.STR),
        "currency": C.STR,
        "hold_amount": C.INT,
        "final_amount": C.nullable(C.INT),
        "captured_amount": C.nullable(C.INT),
        "released_amount": C.nullable(C.INT),
        "transaction_id": C.nullable(C.INT),
        "tariff_id": C.STR,
        "email_given": C.BOOL,
        "receipt_number": C.nullable(C.INT),
        "created_at": C.STR,
        "updated_at": C.STR,
        "last_error": C.nullable(C.STR),
    }
)
RECEIPT = C.obj(
    {
        "number": C.INT,
        "payment_id": C.STR,
        "issued_at": C.STR,
        "body": C.obj(),
        "emailed_at": C.nullable(C.STR),
        "email_error": C.nullable(C.STR),
    }
)
STATES = sorted(str(s) for s in State)


def payment_json(p: dict[str, Any]) -> dict[str, Any]:
    """A payment as the operator sees it (the driver's e-mail and tag are not listed)."""
    captured = p.get("captured_amount")
    released = None
    if p["state"] == State.RELEASED:
        released = int(p["hold_amount"])
    elif p["state"] == State.CAPTURED and captured is not None and p["kind"] == "online":
        released = int(p["hold_amount"]) - int(captured)
    return {
        "id": p["id"],
        "kind": p["kind"],
        "station_id": p["station_id"],
        "connector_id": int(p["connector_id"]),
        "evse_uid": p["evse_uid"],
        "provider": p["provider"],
        "reference": p["reference"],
        "state": p["state"],
        "reason": p["reason"],
        "currency": p["currency"],
        "hold_amount": int(p["hold_amount"]),
        "final_amount": p["final_amount"],
        "captured_amount": captured,
        "released_amount": released,
        "transaction_id": p["transaction_id"],
        "tariff_id": p["tariff_id"],
        "email_given": bool(p.get("email")),
        "receipt_number": p.get("receipt_number"),
        "created_at": to_iso(_t(p["created_at"])),
        "updated_at": to_iso(_t(p["updated_at"])),
        "last_error": p["last_error"],
    }


def _t(text: str | None) -> Any:
    from csms.ports import from_db

    return from_db(text)


class AdhocApi:
    def __init__(self, service: AdhocService) -> None:
        self.service = service

    def routes(self) -> list[web.RouteDef]:
        p = "/api/v1/adhoc"
        return [
            web.get(f"{p}/payments", self.payments),
            web.get(f"{p}/payments/{{payment_id}}", self.payment),
            web.get(f"{p}/receipts", self.receipts),
            web.get(f"{p}/receipts/{{number}}", self.receipt),
            web.get(f"{p}/receipts/{{number}}/pdf", self.receipt_pdf),
            web.get(f"{p}/receipts/{{number}}/html", self.receipt_html),
            web.get(f"{p}/stations", self.stations),
            web.put(f"{p}/stations/{{station_id}}", self.put_station),
        ]

    @operation(
        "Ad hoc payments, newest first",
        tag="adhoc",
        description="held, captured and released amounts in minor units (cents); released "
        "is what went back to the driver of a hold",
        query=(
            *C.PAGING,
            C.Param("state", {"type": "string", "enum": STATES}, "only payments in this state"),
            C.Param("station", description="one station's only"),
        ),
        responses={
            200: C.ok("a page of payments", C.page_of(PAYMENT)),
            400: C.fails("a bad query parameter"),
        },
    )
    async def payments(self, request: web.Request) -> web.Response:
        limit, offset = api_paging(request)
        state = request.query.get("state")
        if state is not None and state not in STATES:
            raise ApiError(400, "invalid_query", f"state is one of {', '.join(STATES)}")
        station = request.query.get("station")
        if station is not None and len(station) > 64:
            raise ApiError(400, "invalid_query", "station is at most 64 characters")
        rows, total = await self.service.store.payments(
            state=state, station_id=station, limit=limit, offset=offset
        )
        items = [payment_json(r) for r in rows]
        body = {"items": items, "total": total, "limit": limit, "offset": offset}
        return web.json_response(body, dumps=dumps)

    @operation(
        "One ad hoc payment",
        tag="adhoc",
        responses={200: C.ok("the payment", PAYMENT), 404: C.fails("no such payment")},
    )
    async def payment(self, request: web.Request) -> web.Response:
        pid = request.match_info["payment_id"]
        p = await self.service.store.get(pid) if len(pid) <= 64 else None
        if p is None:
            raise ApiError(404, "not_found", "no such payment")
        receipt = await self.service.store.receipt_of(pid)
        p["receipt_number"] = receipt["number"] if receipt else None
        return web.json_response(payment_json(p), dumps=dumps)

    @operation(
        "Receipts, newest first",
        tag="adhoc",
        query=C.PAGING,
        responses={
            200: C.ok("a page of receipts", C.page_of(RECEIPT)),
            400: C.fails("a bad query parameter"),
        },
    )
    async def receipts(self, request: web.Request) -> web.Response:
        limit, offset = api_paging(request)
        rows, total = await self.service.store.receipts(limit=limit, offset=offset)
        items = [_receipt_json(r) for r in rows]
        body = {"items": items, "total": total, "limit": limit, "offset": offset}
        return web.json_response(body, dumps=dumps)

    async def _receipt(self, request: web.Request) -> dict[str, Any]:
        text = request.match_info["number"]
        if not text.isdigit() or len(text) > 12:
            raise ApiError(404, "not_found", "no such receipt")
        r = await self.service.store.receipt(int(text))
        if r is None:
            raise ApiError(404, "not_found", "no such receipt")
        return r

    @operation(
        "One receipt (its stored content)",
        tag="adhoc",
        path={"number": {"type": "integer", "minimum": 1}},
        responses={200: C.ok("the receipt", RECEIPT), 404: C.fails("no such receipt")},
    )
    async def receipt(self, request: web.Request) -> web.Response:
        return web.json_response(_receipt_json(await self._receipt(request)), dumps=dumps)

    @operation(
        "One receipt as PDF",
        tag="adhoc",
        path={"number": {"type": "integer", "minimum": 1}},
        responses={
            200: C.file_answer("the PDF", "application/pdf"),
            404: C.fails("no such receipt"),
        },
    )
    async def receipt_pdf(self, request: web.Request) -> web.Response:
        r = await self._receipt(request)
        return web.Response(body=render_pdf(to_receipt(r["body"])), content_type="application/pdf")

    @operation(
        "One receipt as an HTML page",
        tag="adhoc",
        path={"number": {"type": "integer", "minimum": 1}},
        responses={200: C.file_answer("the page", "text/html"), 404: C.fails("no such receipt")},
    )
    async def receipt_html(self, request: web.Request) -> web.Response:
        r = await self._receipt(request)
        return web.Response(
            text=render_page(to_receipt(r["body"])), content_type="text/html", charset="utf-8"
        )

    @operation(
        "Stations that show the price on their display (costmsg)",
        tag="adhoc",
        responses={200: C.ok("their ids", C.obj({"costmsg": C.array(C.STR)}))},
    )
    async def stations(self, request: web.Request) -> web.Response:
        ids = sorted(await self.service.store.costmsg_stations())
        return web.json_response({"costmsg": ids})

    @operation(
        "Turn the price display (costmsg DataTransfer) on or off for a station",
        tag="adhoc",
        body=C.obj({"costmsg": C.BOOL}, extra=False),
        responses={
            200: C.ok("the station's choice", C.obj({"station_id": C.STR, "costmsg": C.BOOL})),
            404: C.fails("no such station"),
            422: C.fails('the body is not {"costmsg": true|false}'),
        },
    )
    async def put_station(self, request: web.Request) -> web.Response:
        sid = request.match_info["station_id"]
        if len(sid) > 64 or await self.service.port.station(sid) is None:
            raise ApiError(404, "not_found", "no such station")
        try:
            body = await request.json()
        except Exception:
            body = None
        if (
            not isinstance(body, dict)
            or set(body) != {"costmsg"}
            or not isinstance(body["costmsg"], bool)
        ):
            raise ApiError(422, "invalid_body", 'the body is {"costmsg": true} or false')
        await self.service.set_costmsg(sid, body["costmsg"])
        return web.json_response({"station_id": sid, "costmsg": body["costmsg"]})


def _receipt_json(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": int(r["number"]),
        "payment_id": r["payment_id"],
        "issued_at": to_iso(_t(r["issued_at"])),
        "body": r["body"],
        "emailed_at": to_iso(_t(r.get("emailed_at"))),
        "email_error": r.get("email_error"),
    }
