"""The CDRs the bridge made, as CSV for accounting (``/api/v1/exports/cdrs.csv`` and the web
interface's ``/exports/cdrs.csv``).

The same filters as csms's sessions export (csms.exports, through the port): the CDRs of
the sessions that *started* in ``[from, to)`` in the operator's time zone, of one station
and one token uid when given. So a month's sessions file and CDRs file cover the same
charging sessions (a session still running, or without a CDR yet, has no row here).

It reads by pages: a page of transactions from csms (a keyset read on their start time),
then the CDRs of that page and what the hub acknowledged of them (two searches on keys),
written before the next page is read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from csms.ports import (
    ExportError,
    ExportFilter,
    from_db,
    stream_csv,
)

if TYPE_CHECKING:
    from .bridge import Bridge
    from .store import Peer

PAGE_ROWS = 500

CDR_COLUMNS = (
    "cdr_id",
    "session_id",
    "start_time",
    "end_time",
    "station_id",
    "location_id",
    "evse_uid",
    "evse_id",
    "connector_id",
    "token_uid",
    "token_type",
    "contract_id",
    "token_party",
    "auth_method",
    "energy_kwh",
    "time_h",
    "parking_time_h",
    "currency",
    "total_cost_excl_vat",
    "total_cost_incl_vat",
    "energy_cost_excl_vat",
    "time_cost_excl_vat",
    "fixed_cost_excl_vat",
    "parking_cost_excl_vat",
    "tariff_ids",
    "cpo_party",
    "issued_at",
    "hub_acknowledged",
    "hub_acknowledged_at",
)


def hub_peer(bridge: Bridge) -> Peer | None:
    """The peer whose acknowledgements the web interface's lists and the CDR export show:
    the (first) registered hub, else the first peer that receives Locations."""
    peers = sorted(bridge.registered_peers(), key=lambda p: p.id)
    hubs = [p for p in peers if p.policy.mobie] or [p for p in peers if p.is_hub]
    receivers = [p for p in peers if p.endpoint("locations", "RECEIVER")]
    chosen = hubs or receivers or peers
    return chosen[0] if chosen else None


def _number(value: Any) -> Decimal | None:
    """A JSON number as an exact decimal (bools and text are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Decimal(str(value))


def _cost(cdr: dict[str, Any], name: str, part: str) -> Decimal | None:
    price = cdr.get(name)
    return _number(price.get(part)) if isinstance(price, dict) else None


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def cdr_row(
    cdr: dict[str, Any],
    station_id: str,
    issued_at: str,
    hub: bool,
    acked_at: str | None,
) -> list[Any]:
    """A stored CDR in the order of CDR_COLUMNS."""
    loc = cdr.get("cdr_location") or {}
    token = cdr.get("cdr_token") or {}
    token_party = "/".join(
        str(token[k]) for k in ("country_code", "party_id") if isinstance(token.get(k), str)
    )
    tariffs = [t.get("id") for t in cdr.get("tariffs") or [] if isinstance(t, dict)]
    return [
        cdr.get("id"),
        cdr.get("session_id"),
        _time(cdr.get("start_date_time")),
        _time(cdr.get("end_date_time")),
        station_id,
        loc.get("id"),
        loc.get("evse_uid"),
        loc.get("evse_id"),
        loc.get("connector_id"),
        token.get("uid"),
        token.get("type"),
        token.get("contract_id"),
        token_party,
        cdr.get("auth_method"),
        _number(cdr.get("total_energy")),
        _number(cdr.get("total_time")),
        _number(cdr.get("total_parking_time")),
        cdr.get("currency"),
        _cost(cdr, "total_cost", "excl_vat"),
        _cost(cdr, "total_cost", "incl_vat"),
        _cost(cdr, "total_energy_cost", "excl_vat"),
        _cost(cdr, "total_time_cost", "excl_vat"),
        _cost(cdr, "total_fixed_cost", "excl_vat"),
        _cost(cdr, "total_parking_cost", "excl_vat"),
        [t for t in tariffs if isinstance(t, str)],
        f"{cdr.get('country_code', '')}/{cdr.get('party_id', '')}",
        from_db(issued_at),
        (acked_at is not None) if hub else None,
        from_db(acked_at) if acked_at else None,
    ]


class CdrExport:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.csms = bridge.csms
        self.db = bridge.csms.db  # the bridge's own tables

    async def _pages(self, f: ExportFilter) -> AsyncIterator[list[list[Any]]]:
        d = self.db.dialect
        cdrs_sql = (
            "SELECT id, transaction_id, body, created_at FROM ocpi_cdrs "
            f"WHERE transaction_id IN ({d.json_values('?', integer=True)})"
        )
        acks_sql = (
            "SELECT object_id, acked_at FROM ocpi_push_acks WHERE peer_id = ? AND kind = 'cdr' "
            f"AND object_id IN ({d.json_values('?')})"
        )
        hub = hub_peer(self.bridge)
        after = None
        while True:
            txs = await self.csms.transactions_started(
                f.start,
                f.end,
                station_id=f.station,
                id_tag=f.token,
                after=after,
                limit=PAGE_ROWS,
            )
            ids = [tx.id for tx in txs if not tx.active]
            rows = await self.db.read(cdrs_sql, (json.dumps(ids),)) if ids else []
            by_tx = {int(r["transaction_id"]): r for r in rows}
            acks: dict[str, str] = {}
            if hub is not None and rows:
                cdr_ids = json.dumps([r["id"] for r in rows])
                for a in await self.db.read(acks_sql, (hub.id, cdr_ids)):
                    acks[a["object_id"]] = a["acked_at"]
            page = []
            for tx in txs:
                r = by_tx.get(tx.id)
                if r is None:
                    continue
                body = json.loads(r["body"])
                page.append(
                    cdr_row(
                        body, tx.station_id, r["created_at"], hub is not None, acks.get(r["id"])
                    )
                )
            yield page
            if len(txs) < PAGE_ROWS:
                return
            after = txs[-1]

    async def response(self, request: web.Request, f: ExportFilter) -> web.StreamResponse:
        """The CDRs of the filter's sessions as a streamed CSV; ExportError 404 for a station
        csms does not know (checked before anything is sent)."""
        if f.station is not None and await self.csms.station(f.station) is None:
            raise ExportError(404, "not_found", f"no station {f.station!r}", "station")
        return await stream_csv(request, f, "cdrs", CDR_COLUMNS, self._pages(f))
